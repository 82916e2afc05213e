//! IAD-I (Zhu et al. 2021, "Reliable adversarial distillation with unreliable teachers";
//! ZFancy/IAD IAD-I.py). Inner: as ARD. With a_i = P_T(x'_i)[y_i]^β (a constant), the outer
//! loss from epoch `iad_begin` on is
//! α·τ²·(1/B)·Σ_i KL_i(softmax(T(x)/τ) ‖ softmax(S(x')/τ))
//! + α·(1/B)·Σ_i (1 − a_i)·KL_i(softmax(S(x)) ‖ softmax(S(x')))   (gradients through both sides)
//! + (1 − α)·CE(S(x), y); before it, the first and last terms only.
//!
//! Student passes per step in the official code (`bn_passes = official`): the attack's, then
//! x', then x, and from `iad_begin` on x again.

use super::kl::{kl_both, kl_div, KlReduction};
use super::AttackBn;
use super::MethodEntry;
use super::{
    ce_inner, ce_mean, teacher_logits, train_forward, BnPasses, Inner, Method, MethodConfig,
    StepInput, StepOutput,
};
use crate::attacks::losses::pick;
use crate::data::DatasetKind;
use crate::models::Model;
use burn::prelude::*;
use burn::tensor::activation::softmax;

pub struct Iad(pub MethodConfig);

pub const ENTRY: MethodEntry = MethodEntry {
    name: "iad",
    robust: true,
    needs_teacher: true,
    reads: &["beta", "alpha", "temperature", "iad_begin", "bn_passes"],
    params: &[],
    defaults,
    kl_scale: super::unscaled,
    build: |config| Box::new(Iad(config)),
};

/// IAD's inner attack keeps BatchNorm in training mode and its trust exponent β is 0.1
/// (docs/spec/methods.md).
fn defaults(c: &mut MethodConfig, _: DatasetKind, _: usize) {
    c.attack_bn = AttackBn::Train;
    c.beta = 0.1;
}

/// The IAD-I loss. `trust` = a_i = P_T(x')[y]^β per example (a constant), given only from
/// `iad_begin` on; `clean` is needed when `trust` is given or α < 1.
pub fn outer_loss(
    teacher: Tensor<2>,
    adv: Tensor<2>,
    clean: Option<Tensor<2>>,
    trust: Option<Tensor<1>>,
    y: &Tensor<1, Int>,
    alpha: f64,
    tau: f64,
) -> Tensor<1> {
    let mut loss =
        kl_div(teacher, adv.clone(), tau, KlReduction::Batchmean).mul_scalar(alpha * tau * tau);
    if let (Some(c), Some(a)) = (clean.clone(), trust) {
        let distrust = a.neg().add_scalar(1.0).detach().autodiff();
        loss = loss + (kl_both(c, adv) * distrust).mean().mul_scalar(alpha);
    }
    match clean {
        Some(c) if alpha < 1.0 => loss + ce_mean(c, y).mul_scalar(1.0 - alpha),
        _ => loss,
    }
}

impl Method for Iad {
    fn config(&self) -> &MethodConfig {
        &self.0
    }

    fn inner<'a>(&self, _student: &Model, input: &'a StepInput) -> Option<Inner<'a>> {
        Some(ce_inner(input, false))
    }

    fn outer(
        &self,
        student: &Model,
        teacher: Option<&Model>,
        input: &StepInput,
        x_adv: Option<Tensor<4>>,
    ) -> StepOutput {
        let c = &self.0;
        let t = input
            .teacher_logits
            .clone()
            .expect("IAD needs teacher logits");
        let x_adv = x_adv.expect("IAD attacks");
        let adv = train_forward(student, x_adv.clone());
        let introspect = input.epoch >= c.iad_begin;
        let trust = introspect.then(|| {
            let teacher = teacher.expect("IAD needs its teacher on x'");
            pick(softmax(teacher_logits(teacher, x_adv), 1), input.y.clone()).powf_scalar(c.beta)
        });
        let official = c.bn_passes == BnPasses::Official;
        let clean = (introspect || c.alpha < 1.0 || official)
            .then(|| train_forward(student, input.x.clone()));
        if introspect && official {
            // IAD-I.py runs the student on the clean batch a second time for the introspection
            // target. In training mode that pass gives the same logits (same weights, same
            // batch statistics), so the first serves as the target; the pass itself still
            // updates BatchNorm's running statistics, as in the official step.
            let _ = train_forward(student, input.x.clone());
        }
        StepOutput {
            loss: outer_loss(
                t,
                adv.clone(),
                clean,
                trust,
                &input.y,
                c.alpha,
                c.temperature,
            ),
            logits: adv,
        }
    }
}
