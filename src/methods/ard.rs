//! ARD (Goldblum et al. AAAI 2020; goldblum/AdversariallyRobustDistillation). Inner: maximise
//! CE(S(x'), y) summed, from x + U(−ε, ε) (not clipped), student in training mode.
//! Outer: α·τ²·KL(softmax(T(x)/τ) ‖ softmax(S(x')/τ)) + (1−α)·CE(S(x), y), the KL reduced as
//! PyTorch's default `KLDivLoss()` (mean over all B·C elements) unless `batchmean` is asked for.

use super::kl::{kl_div, KlReduction};
use super::AttackBn;
use super::MethodEntry;
use super::{
    ce_inner, ce_mean, train_forward, BnPasses, Inner, Method, MethodConfig, StepInput, StepOutput,
};
use crate::data::DatasetKind;
use crate::models::Model;
use burn::prelude::*;

pub struct Ard(pub MethodConfig);

pub const ENTRY: MethodEntry = MethodEntry {
    name: "ard",
    robust: true,
    needs_teacher: true,
    reads: &["alpha", "temperature", "kl_reduction", "bn_passes"],
    params: &[],
    defaults,
    kl_scale: super::unscaled,
    build: |config| Box::new(Ard(config)),
};

/// ARD's inner attack keeps BatchNorm in training mode and its τ is 30 (docs/spec/methods.md).
fn defaults(c: &mut MethodConfig, _: DatasetKind, _: usize) {
    c.attack_bn = AttackBn::Train;
    c.temperature = 30.0;
}

/// α·τ²·KL(T(x)/τ ‖ S(x')/τ) + (1−α)·CE(S(x), y); `clean` is needed only when α < 1.
pub fn outer_loss(
    teacher: Tensor<2>,
    adv: Tensor<2>,
    clean: Option<Tensor<2>>,
    y: &Tensor<1, Int>,
    alpha: f64,
    tau: f64,
    reduction: KlReduction,
) -> Tensor<1> {
    let kl = kl_div(teacher, adv, tau, reduction).mul_scalar(alpha * tau * tau);
    match clean {
        Some(c) if alpha < 1.0 => kl + ce_mean(c, y).mul_scalar(1.0 - alpha),
        _ => kl,
    }
}

impl Method for Ard {
    fn config(&self) -> &MethodConfig {
        &self.0
    }

    fn inner<'a>(&self, _student: &Model, input: &'a StepInput) -> Option<Inner<'a>> {
        Some(ce_inner(input, false))
    }

    fn outer(
        &self,
        student: &Model,
        _teacher: Option<&Model>,
        input: &StepInput,
        x_adv: Option<Tensor<4>>,
    ) -> StepOutput {
        let c = &self.0;
        let t = input
            .teacher_logits
            .clone()
            .expect("ARD needs teacher logits");
        let adv = train_forward(student, x_adv.expect("ARD attacks"));
        // The official step runs the student on the clean batch after the adversarial one even
        // at α = 1, where the CE term has weight 0: the pass still moves BatchNorm's running
        // statistics. `minimal` skips it there.
        let clean = (c.alpha < 1.0 || c.bn_passes == BnPasses::Official)
            .then(|| train_forward(student, input.x.clone()));
        StepOutput {
            loss: outer_loss(
                t,
                adv.clone(),
                clean,
                &input.y,
                c.alpha,
                c.temperature,
                c.kl_reduction,
            ),
            logits: adv,
        }
    }
}
