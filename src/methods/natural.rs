//! Natural training: CE(S(x), y), batch mean.

use super::MethodEntry;
use super::{ce_mean, train_forward, Inner, Method, MethodConfig, StepInput, StepOutput};
use crate::models::Model;
use burn::prelude::*;

pub struct Natural(pub MethodConfig);

pub const ENTRY: MethodEntry = MethodEntry {
    name: "natural",
    robust: false,
    needs_teacher: false,
    reads: &[],
    params: &[],
    defaults: super::no_defaults,
    kl_scale: super::unscaled,
    build: |config| Box::new(Natural(config)),
};

impl Method for Natural {
    fn config(&self) -> &MethodConfig {
        &self.0
    }

    fn inner<'a>(&self, _student: &Model, _input: &'a StepInput) -> Option<Inner<'a>> {
        None
    }

    fn outer(
        &self,
        student: &Model,
        _teacher: Option<&Model>,
        input: &StepInput,
        _x_adv: Option<Tensor<4>>,
    ) -> StepOutput {
        let logits = train_forward(student, input.x.clone());
        StepOutput {
            loss: ce_mean(logits.clone(), &input.y),
            logits,
        }
    }
}
