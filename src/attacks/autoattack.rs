//! AutoAttack, standard version (Croce & Hein, ICML 2020): APGD-CE, APGD-T, FAB-T and Square
//! in this order, each only on the points that every earlier component left correctly
//! classified. A point is robust only if no component broke it; the robust accuracy after
//! each component is reported as a stage.

use super::apgd::{Apgd, ApgdLoss};
use super::fab::Fab;
use super::observe::Event;
use super::registry::{AttackEntry, Input, OptionDefault, OptionKind, OptionSpec};
use super::square::Square;
use super::util::{correct, to_bools};
use super::{Attack, Outcome, SubsetTracker};
use crate::models::Classifier;
use burn::prelude::*;
use std::time::Instant;

pub const AA: AttackEntry = AttackEntry {
    names: &["aa", "autoattack"],
    help: "AutoAttack, standard version: APGD-CE, APGD-T, FAB-T, Square, each on the points \
           still robust; robust accuracy after each (its Square keeps the unscaled p-schedule, \
           as the official composer)",
    input: Input::Options(&[
        OptionSpec {
            key: "steps",
            kind: OptionKind::Count,
            default: OptionDefault::Value("100"),
            help: "iterations of APGD-CE, APGD-T and FAB-T (fewer: a quick look)",
            requires: None,
        },
        OptionSpec {
            key: "queries",
            kind: OptionKind::Count,
            default: OptionDefault::Value("5000"),
            help: "queries of Square",
            requires: None,
        },
    ]),
    min_classes: 4,
    build: |o, _| {
        let aa = AutoAttack::standard(o.eps(), o.seed(), o.count("steps"), o.count("queries"));
        Ok(vec![Box::new(aa)])
    },
};

pub struct AutoAttack {
    pub components: Vec<Box<dyn Attack>>,
}

/// What one component did inside an AutoAttack run (for `rslad bench`).
#[derive(Debug, Clone)]
pub struct ComponentRun {
    pub label: String,
    /// Points it attacked: those every earlier component left correctly classified.
    pub attacked: usize,
    pub seconds: f64,
    /// Per example: robust after this component (cumulative).
    pub robust: Vec<bool>,
}

impl AutoAttack {
    /// The standard version at radius `eps`; `iterations` (APGD and FAB) and `queries`
    /// (Square) shorten it for tests and quick looks.
    pub fn standard(
        eps: f64,
        seed: u64,
        iterations: Option<usize>,
        queries: Option<usize>,
    ) -> Self {
        let mut apgd_ce = Apgd::standard(ApgdLoss::Ce, eps, seed);
        let mut apgd_t = Apgd::standard(ApgdLoss::DlrTargeted, eps, seed);
        let mut fab_t = Fab::standard(eps, seed);
        if let Some(n) = iterations {
            apgd_ce.iterations = n;
            apgd_t.iterations = n;
            fab_t.iterations = n;
        }
        // The official composer builds Square with `resc_schedule=False`: its p-schedule is
        // not rescaled to the query budget (docs/spec/attacks.md, Square).
        let mut square = Square::new("Square", eps, seed);
        square.rescale_schedule = false;
        if let Some(q) = queries {
            square.queries = q;
        }
        AutoAttack {
            components: vec![
                Box::new(apgd_ce),
                Box::new(apgd_t),
                Box::new(fab_t),
                Box::new(square),
            ],
        }
    }

    /// Runs the components in order, each on the points still robust, and times each.
    pub fn run_components(
        &self,
        model: &dyn Classifier,
        x: Tensor<4>,
        y: Tensor<1, Int>,
        ids: &[u64],
        observer: &mut dyn FnMut(&Event),
    ) -> (Tensor<4>, Vec<ComponentRun>) {
        let b = x.dims()[0];
        let mut tracker = SubsetTracker::new(x.clone(), b);
        // Points misclassified without attack are not attacked.
        let clean = to_bools(correct(model, x, y.clone()));
        for (i, ok) in clean.iter().enumerate() {
            tracker.fooled[i] = !ok;
        }
        let mut runs = Vec::with_capacity(self.components.len());
        for component in &self.components {
            let label = component.label();
            let attacked = tracker.fooled.iter().filter(|f| !**f).count();
            observer(&Event::Start {
                component: &label,
                attacked,
            });
            let t0 = Instant::now();
            tracker.attack(&y, ids, |xs, ys, _idx, ids_sub| {
                let adv = component
                    .run_observed(model, xs, ys.clone(), ids_sub, observer)
                    .adv;
                // Judge every component on its returned points, not on its own claims.
                let broken = correct(model, adv.clone(), ys).bool_not();
                (adv, broken)
            });
            let seconds = t0.elapsed().as_secs_f64();
            let robust: Vec<bool> = tracker.fooled.iter().map(|f| !f).collect();
            observer(&Event::End {
                component: &label,
                robust: robust.iter().filter(|r| **r).count(),
            });
            runs.push(ComponentRun {
                label,
                attacked,
                seconds,
                robust,
            });
        }
        (tracker.adv, runs)
    }
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
        self.run_observed(model, x, y, ids, &mut super::observe::ignore)
    }

    fn run_observed(
        &self,
        model: &dyn Classifier,
        x: Tensor<4>,
        y: Tensor<1, Int>,
        ids: &[u64],
        observer: &mut dyn FnMut(&Event),
    ) -> Outcome {
        let (adv, runs) = self.run_components(model, x, y, ids, observer);
        Outcome {
            adv,
            stages: runs.into_iter().map(|r| (r.label, r.robust)).collect(),
        }
    }
}
