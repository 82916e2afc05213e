//! IAD-I (Zhu et al. 2021, "Reliable adversarial distillation with unreliable teachers";
//! ZFancy/IAD IAD-I.py). Inner: as ARD. With a_i = P_T(x'_i)[y_i]^β (a constant), the outer
//! loss from epoch `iad_begin` on is
//! α·τ²·(1/B)·Σ_i KL_i(softmax(T(x)/τ) ‖ softmax(S(x')/τ))
//! + α·(1/B)·Σ_i (1 − a_i)·KL_i(softmax(S(x)) ‖ softmax(S(x')))   (gradients through both sides)
//! + (1 − α)·CE(S(x), y); before it, the first and last terms only.

use super::kl::{kl_both, kl_div, KlReduction};
use super::{
    inner_attack, teacher_logits, train_forward, Method, MethodConfig, StepInput, StepOutput,
};
use crate::attacks::losses::{cross_entropy, pick};
use crate::attacks::pgd::Start;
use crate::models::Model;
use burn::tensor::activation::softmax;

pub struct Iad(pub MethodConfig);

impl Method for Iad {
    fn config(&self) -> Option<&MethodConfig> {
        Some(&self.0)
    }

    fn step(&self, student: &Model, teacher: Option<&Model>, input: &StepInput) -> StepOutput {
        let c = &self.0;
        let teacher = teacher.expect("IAD needs a teacher");
        let t_clean = teacher_logits(teacher, input.x.clone());
        let y = input.y.clone();
        let x_adv = inner_attack(student, c, input, Start::Uniform, false, &|z| {
            cross_entropy(z, y.clone())
        });
        let adv_logits = train_forward(student, x_adv.clone());
        let tau = c.temperature;
        let mut loss = kl_div(t_clean, adv_logits.clone(), tau, KlReduction::Batchmean)
            .mul_scalar(c.alpha * tau * tau);
        let introspect = input.epoch >= c.iad_begin;
        if introspect || c.alpha < 1.0 {
            let clean_logits = train_forward(student, input.x.clone());
            if introspect {
                let p_true = pick(softmax(teacher_logits(teacher, x_adv), 1), input.y.clone());
                let distrust = p_true
                    .powf_scalar(c.beta)
                    .neg()
                    .add_scalar(1.0)
                    .detach()
                    .autodiff();
                let term = (kl_both(clean_logits.clone(), adv_logits.clone()) * distrust).mean();
                loss = loss + term.mul_scalar(c.alpha);
            }
            if c.alpha < 1.0 {
                loss = loss
                    + cross_entropy(clean_logits, input.y.clone().autodiff())
                        .mean()
                        .mul_scalar(1.0 - c.alpha);
            }
        }
        StepOutput {
            loss,
            logits: adv_logits,
        }
    }
}
