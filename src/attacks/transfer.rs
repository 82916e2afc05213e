//! Black-box transfer attack: adversarial examples crafted with a white-box attack on a
//! surrogate model (the paper: an adversarially trained ResNet-50), then shown to the target.

use super::{Attack, Outcome};
use crate::models::{Classifier, Model};
use burn::prelude::*;
use std::path::PathBuf;

pub struct Transfer {
    pub label: String,
    pub surrogate_path: PathBuf,
    /// The surrogate in eval mode.
    pub surrogate: Model,
    pub inner: Box<dyn Attack>,
}

impl Attack for Transfer {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "surrogate": self.surrogate_path.display().to_string(),
            "surrogate_model": self.surrogate.spec.name,
            "crafted_with": self.inner.label(),
            "inner": self.inner.settings(),
        })
    }

    /// The target model is not queried: points are crafted on the surrogate only.
    fn run(
        &self,
        _target: &dyn Classifier,
        x: Tensor<4>,
        y: Tensor<1, Int>,
        ids: &[u64],
    ) -> Outcome {
        Outcome::plain(self.inner.run(&self.surrogate, x, y, ids).adv)
    }

    fn is_black_box(&self) -> bool {
        true
    }

    fn surrogate(&self) -> Option<&dyn Classifier> {
        Some(&self.surrogate)
    }
}
