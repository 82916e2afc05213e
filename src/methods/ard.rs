//! ARD (Goldblum et al. AAAI 2020; goldblum/AdversariallyRobustDistillation). Inner: maximise
//! CE(S(x'), y) summed, from x + U(−ε, ε) (not clipped), student in training mode.
//! Outer: α·τ²·KL(softmax(T(x)/τ) ‖ softmax(S(x')/τ)) + (1−α)·CE(S(x), y), the KL reduced as
//! PyTorch's default `KLDivLoss()` (mean over all B·C elements) unless `batchmean` is asked for.

use super::kl::kl_div;
use super::{
    inner_attack, teacher_logits, train_forward, Method, MethodConfig, StepInput, StepOutput,
};
use crate::attacks::losses::cross_entropy;
use crate::attacks::pgd::Start;
use crate::models::Model;

pub struct Ard(pub MethodConfig);

impl Method for Ard {
    fn config(&self) -> Option<&MethodConfig> {
        Some(&self.0)
    }

    fn step(&self, student: &Model, teacher: Option<&Model>, input: &StepInput) -> StepOutput {
        let c = &self.0;
        let teacher = teacher.expect("ARD needs a teacher");
        let t = teacher_logits(teacher, input.x.clone());
        let y = input.y.clone();
        let x_adv = inner_attack(student, c, input, Start::Uniform, false, &|z| {
            cross_entropy(z, y.clone())
        });
        let adv_logits = train_forward(student, x_adv);
        let tau = c.temperature;
        let mut loss =
            kl_div(t, adv_logits.clone(), tau, c.kl_reduction).mul_scalar(c.alpha * tau * tau);
        // With α = 1 the CE term has weight 0: the clean pass is skipped.
        if c.alpha < 1.0 {
            let clean = train_forward(student, input.x.clone());
            loss = loss
                + cross_entropy(clean, input.y.clone().autodiff())
                    .mean()
                    .mul_scalar(1.0 - c.alpha);
        }
        StepOutput {
            loss,
            logits: adv_logits,
        }
    }
}
