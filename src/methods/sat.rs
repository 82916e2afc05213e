//! SAT, PGD adversarial training (Madry et al. 2018). Inner: maximise CE(S(x'), y) from
//! x + U(−ε, ε) clipped to [0,1], 10 steps of ε/4. Outer: CE(S(x'), y), batch mean.

use super::MethodEntry;
use super::{ce_inner, ce_mean, train_forward, Inner, Method, MethodConfig, StepInput, StepOutput};
use crate::models::Model;
use burn::prelude::*;

pub struct Sat(pub MethodConfig);

pub const ENTRY: MethodEntry = MethodEntry {
    name: "sat",
    robust: true,
    needs_teacher: false,
    reads: &[],
    params: &[],
    defaults: super::no_defaults,
    kl_scale: super::unscaled,
    build: |config| Box::new(Sat(config)),
};

impl Method for Sat {
    fn config(&self) -> &MethodConfig {
        &self.0
    }

    fn inner<'a>(&self, _student: &Model, input: &'a StepInput) -> Option<Inner<'a>> {
        Some(ce_inner(input, true))
    }

    fn outer(
        &self,
        student: &Model,
        _teacher: Option<&Model>,
        input: &StepInput,
        x_adv: Option<Tensor<4>>,
    ) -> StepOutput {
        let logits = train_forward(student, x_adv.expect("SAT attacks"));
        StepOutput {
            loss: ce_mean(logits.clone(), &input.y),
            logits,
        }
    }
}
