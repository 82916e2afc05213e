//! SAT, PGD adversarial training (Madry et al. 2018). Inner: maximise CE(S(x'), y) from
//! x + U(−ε, ε) clipped to [0,1], 10 steps of ε/4. Outer: CE(S(x'), y), batch mean.

use super::{inner_attack, train_forward, Method, MethodConfig, StepInput, StepOutput};
use crate::attacks::losses::cross_entropy;
use crate::attacks::pgd::Start;
use crate::models::Model;

pub struct Sat(pub MethodConfig);

impl Method for Sat {
    fn config(&self) -> Option<&MethodConfig> {
        Some(&self.0)
    }

    fn step(&self, student: &Model, _teacher: Option<&Model>, input: &StepInput) -> StepOutput {
        let y = input.y.clone();
        let x_adv = inner_attack(student, &self.0, input, Start::Uniform, true, &|z| {
            cross_entropy(z, y.clone())
        });
        let logits = train_forward(student, x_adv);
        let loss = cross_entropy(logits.clone(), input.y.clone().autodiff()).mean();
        StepOutput { loss, logits }
    }
}
