//! Natural training: CE(S(x), y), batch mean.

use super::{train_forward, Method, MethodConfig, StepInput, StepOutput};
use crate::attacks::losses::cross_entropy;
use crate::models::Model;

pub struct Natural;

impl Method for Natural {
    fn config(&self) -> Option<&MethodConfig> {
        None
    }

    fn step(&self, student: &Model, _teacher: Option<&Model>, input: &StepInput) -> StepOutput {
        let logits = train_forward(student, input.x.clone());
        let loss = cross_entropy(logits.clone(), input.y.clone().autodiff()).mean();
        StepOutput { loss, logits }
    }
}
