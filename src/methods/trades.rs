//! TRADES (Zhang et al. 2019; yaodongyu/TRADES trades.py). Inner: maximise
//! Σ KL(softmax(S(x)) ‖ softmax(S(x'))) from x + 0.001·N(0, I), student in eval mode.
//! Outer: CE(S(x), y) + β·(1/B)·Σ_batch Σ_classes KL(softmax(S(x)) ‖ softmax(S(x'))), both
//! student passes in training mode with gradients through both. The official step runs the
//! student on x, x' and x again (`bn_passes = official`).

use super::kl::kl_both;
use super::MethodEntry;
use super::{
    ce_mean, teacher_logits, train_forward, BnPasses, Inner, Method, MethodConfig, StepInput,
    StepOutput,
};
use crate::attacks::losses::kl_from;
use crate::attacks::pgd::Start;
use crate::models::Model;
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::softmax;

pub struct Trades(pub MethodConfig);

pub const ENTRY: MethodEntry = MethodEntry {
    name: "trades",
    robust: true,
    needs_teacher: false,
    reads: &["beta", "bn_passes"],
    params: &[],
    defaults: super::no_defaults,
    kl_scale: super::unscaled,
    build: |config| Box::new(Trades(config)),
};

/// CE(clean, y) + β·batch-mean KL(softmax(clean) ‖ softmax(adv)).
pub fn outer_loss(clean: Tensor<2>, adv: Tensor<2>, y: &Tensor<1, Int>, beta: f64) -> Tensor<1> {
    ce_mean(clean.clone(), y) + kl_both(clean, adv).mean().mul_scalar(beta)
}

impl Method for Trades {
    fn config(&self) -> &MethodConfig {
        &self.0
    }

    fn inner<'a>(&self, student: &Model, input: &'a StepInput) -> Option<Inner<'a>> {
        // The target of the inner KL: the eval-mode student on clean x, a constant.
        let p_clean = softmax(teacher_logits(&student.valid(), input.x.clone()), 1);
        Some(Inner {
            objective: Box::new(move |z| kl_from(p_clean.clone(), z)),
            start: Start::Gaussian { std: 0.001 },
            clip_start: false,
        })
    }

    fn outer(
        &self,
        student: &Model,
        _teacher: Option<&Model>,
        input: &StepInput,
        x_adv: Option<Tensor<4>>,
    ) -> StepOutput {
        let clean = train_forward(student, input.x.clone());
        let adv = train_forward(student, x_adv.expect("TRADES attacks"));
        if self.0.bn_passes == BnPasses::Official {
            // trades.py runs the clean batch again for the KL target, after x'. In training
            // mode it gives the same logits as the first pass (same weights, same batch
            // statistics), so the first serves; the pass still updates BatchNorm's running
            // statistics, as in the official step.
            let _ = train_forward(student, input.x.clone());
        }
        StepOutput {
            loss: outer_loss(clean.clone(), adv, &input.y, self.0.beta),
            logits: clean,
        }
    }
}
