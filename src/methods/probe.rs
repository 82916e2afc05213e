//! A method that exists for the registry's tests, and shows what adding one takes: this file
//! (with its hyperparameter in `ENTRY.params`) and a line in [`super::METHODS`]. It is SAT
//! with the outer loss scaled by `probe_scale`.

use super::{ce_inner, ce_mean, train_forward, Inner, Method, MethodConfig, MethodEntry, Param};
use super::{StepInput, StepOutput};
use crate::models::Model;
use burn::prelude::*;

pub struct Probe(pub MethodConfig);

pub const ENTRY: MethodEntry = MethodEntry {
    name: "probe",
    robust: true,
    needs_teacher: false,
    reads: &[],
    params: &[Param {
        key: "probe_scale",
        help: "Factor on the outer loss.",
        default: 0.5,
        valid: |v| v > 0.0,
        want: "positive",
    }],
    defaults: super::no_defaults,
    kl_scale: super::unscaled,
    build: |config| Box::new(Probe(config)),
};

impl Method for Probe {
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
        let logits = train_forward(student, x_adv.expect("the probe attacks"));
        StepOutput {
            loss: ce_mean(logits.clone(), &input.y).mul_scalar(self.0.param("probe_scale")),
            logits,
        }
    }
}
