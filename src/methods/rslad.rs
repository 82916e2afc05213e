//! RSLAD (Zi et al. ICCV 2021; zibojia/RSLAD rslad_loss.py). The student learns only from the
//! teacher's soft labels on clean images, T(x), computed once per batch without a graph.
//! Inner: maximise Σ KL(softmax(T(x)) ‖ softmax(S(x'))) from x + 0.001·N(0, I), student in
//! eval mode. Outer (Eq. 4 as in the code): 5/6·KL(S(x'), T(x)) + 1/6·KL(S(x), T(x)), both
//! student passes in training mode. No hard label enters the loss.

use super::kl::rslad_kl;
use super::{
    inner_attack, teacher_logits, train_forward, Method, MethodConfig, StepInput, StepOutput,
};
use crate::attacks::losses::kl_from;
use crate::attacks::pgd::Start;
use crate::models::Model;
use burn::tensor::activation::softmax;

pub struct Rslad(pub MethodConfig);

impl Method for Rslad {
    fn config(&self) -> Option<&MethodConfig> {
        Some(&self.0)
    }

    fn step(&self, student: &Model, teacher: Option<&Model>, input: &StepInput) -> StepOutput {
        let c = &self.0;
        let teacher = teacher.expect("RSLAD needs a teacher");
        let t = teacher_logits(teacher, input.x.clone());
        let p_teacher = softmax(t.clone(), 1);
        let x_adv = inner_attack(
            student,
            c,
            input,
            Start::Gaussian { std: 0.001 },
            false,
            &|z| kl_from(p_teacher.clone(), z),
        );
        let adv_logits = train_forward(student, x_adv);
        let clean_logits = train_forward(student, input.x.clone());
        let loss = rslad_kl(t.clone(), adv_logits.clone(), c.kl_reduction).mul_scalar(5.0 / 6.0)
            + rslad_kl(t, clean_logits, c.kl_reduction).mul_scalar(1.0 / 6.0);
        StepOutput {
            loss,
            logits: adv_logits,
        }
    }
}
