//! TRADES (Zhang et al. 2019; yaodongyu/TRADES trades.py). Inner: maximise
//! Σ KL(softmax(S(x)) ‖ softmax(S(x'))) from x + 0.001·N(0, I), student in eval mode.
//! Outer: CE(S(x), y) + β·(1/B)·Σ_batch Σ_classes KL(softmax(S(x)) ‖ softmax(S(x'))), both
//! student passes in training mode with gradients through both.

use super::kl::kl_both;
use super::{
    inner_attack, teacher_logits, train_forward, Method, MethodConfig, StepInput, StepOutput,
};
use crate::attacks::losses::{cross_entropy, kl_from};
use crate::attacks::pgd::Start;
use crate::models::Model;
use burn::module::Module;
use burn::tensor::activation::softmax;

pub struct Trades(pub MethodConfig);

impl Method for Trades {
    fn config(&self) -> Option<&MethodConfig> {
        Some(&self.0)
    }

    fn step(&self, student: &Model, _teacher: Option<&Model>, input: &StepInput) -> StepOutput {
        // The target of the inner KL: the eval-mode student on clean x, a constant.
        let p_clean = softmax(teacher_logits(&student.valid(), input.x.clone()), 1);
        let x_adv = inner_attack(
            student,
            &self.0,
            input,
            Start::Gaussian { std: 0.001 },
            false,
            &|z| kl_from(p_clean.clone(), z),
        );
        let clean_logits = train_forward(student, input.x.clone());
        let adv_logits = train_forward(student, x_adv);
        let natural = cross_entropy(clean_logits.clone(), input.y.clone().autodiff()).mean();
        let robust = kl_both(clean_logits.clone(), adv_logits).mean();
        StepOutput {
            loss: natural + robust.mul_scalar(self.0.beta),
            logits: clean_logits,
        }
    }
}
