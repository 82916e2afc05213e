//! AutoAttack, standard version (Croce & Hein, ICML 2020): APGD-CE, APGD-T, FAB-T and Square
//! in this order, each only on the points that every earlier component left correctly
//! classified. A point is robust only if no component broke it; the robust accuracy after
//! each component is reported as a stage.

use super::util::{correct, to_bools};
use super::{Attack, Outcome, SubsetTracker};
use crate::models::Classifier;
use burn::prelude::*;

pub struct AutoAttack {
    pub components: Vec<Box<dyn Attack>>,
}

impl Attack for AutoAttack {
    fn label(&self) -> String {
        "AA".into()
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "version": "standard",
            "components": self
                .components
                .iter()
                .map(|c| serde_json::json!({"name": c.label(), "settings": c.settings()}))
                .collect::<Vec<_>>(),
        })
    }

    fn run(&self, model: &dyn Classifier, x: Tensor<4>, y: Tensor<1, Int>, ids: &[u64]) -> Outcome {
        let b = x.dims()[0];
        let mut tracker = SubsetTracker::new(x.clone(), b);
        // Points misclassified without attack are not attacked.
        let clean = to_bools(correct(model, x, y.clone()));
        for (i, ok) in clean.iter().enumerate() {
            tracker.fooled[i] = !ok;
        }
        let mut stages = Vec::with_capacity(self.components.len());
        for component in &self.components {
            tracker.attack(&y, ids, |xs, ys, _idx, ids_sub| {
                let adv = component.run(model, xs, ys.clone(), ids_sub).adv;
                // Judge every component on its returned points, not on its own claims.
                let broken = correct(model, adv.clone(), ys).bool_not();
                (adv, broken)
            });
            let robust: Vec<bool> = tracker.fooled.iter().map(|f| !f).collect();
            stages.push((component.label(), robust));
        }
        Outcome {
            adv: tracker.adv,
            stages,
        }
    }
}
