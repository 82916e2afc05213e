//! Evaluation attacks under the L-inf threat model (docs/spec/attacks.md).
//!
//! An [`Attack`] is a value configured once and run on batches: given a classifier, images in
//! [0,1] and labels, it returns adversarial images within the ε-ball and [0,1]. Callers pass an
//! eval-mode (`valid()`) model: BatchNorm then uses its running statistics and no weight
//! gradient is computed. `pgd.rs` is the one iterative engine; each attack's file holds its
//! registry entry, `registry.rs` lists them, and `parse.rs` turns lists such as `pgd-sat,aa`
//! into configured attacks.

pub mod apgd;
pub mod autoattack;
pub mod fab;
pub mod losses;
pub mod observe;
mod parse;
pub mod pgd;
pub mod registry;
pub mod rng;
pub mod square;
pub mod transfer;
pub mod util;

use crate::models::{Classifier, ModelSpec};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use std::path::PathBuf;

pub use parse::{parse_list, AttackOptions, MAX_COUNT};
pub use pgd::{Pgd, Preset, TRADES_STEP_RATIO};
pub use registry::PAPER;

/// What an attack returns: adversarial images (row i for example i) and, for composite attacks,
/// per-example robustness after each component (`stages`, cumulative).
pub struct Outcome {
    pub adv: Tensor<4>,
    pub stages: Vec<(String, Vec<bool>)>,
}

impl Outcome {
    pub fn plain(adv: Tensor<4>) -> Self {
        Outcome {
            adv,
            stages: Vec::new(),
        }
    }
}

pub trait Attack: Send + Sync {
    /// Column label in tables ("PGD_SAT", "AA", ...).
    fn label(&self) -> String;

    /// Every setting, for the results file.
    fn settings(&self) -> serde_json::Value;

    /// Adversarial versions of `x` (labels `y`; `ids` are the examples' dataset indices, which
    /// seed their random starts). `|adv − x|_∞ ≤ ε` and `adv ∈ [0,1]`.
    fn run(&self, model: &dyn Classifier, x: Tensor<4>, y: Tensor<1, Int>, ids: &[u64]) -> Outcome;

    /// [`Attack::run`], reporting progress to `observer` (the long attacks report every few
    /// iterations; the others run as `run`).
    fn run_observed(
        &self,
        model: &dyn Classifier,
        x: Tensor<4>,
        y: Tensor<1, Int>,
        ids: &[u64],
        observer: &mut dyn FnMut(&observe::Event),
    ) -> Outcome {
        let _ = observer;
        self.run(model, x, y, ids)
    }

    /// True for attacks that do not use the target's gradients (for the sanity checks).
    fn is_black_box(&self) -> bool {
        false
    }

    /// The model a transfer attack crafts its points on (checked for NaN logits by the
    /// evaluation, as the target is).
    fn surrogate(&self) -> Option<&dyn Classifier> {
        None
    }
}

/// Keeps the adversarial points found so far and runs further attempts only on the examples
/// not fooled yet (restarts, target classes, AutoAttack components).
pub(crate) struct SubsetTracker {
    x: Tensor<4>,
    pub adv: Tensor<4>,
    pub fooled: Vec<bool>,
}

impl SubsetTracker {
    pub fn new(x: Tensor<4>, b: usize) -> Self {
        SubsetTracker {
            adv: x.clone(),
            x,
            fooled: vec![false; b],
        }
    }

    /// Runs `attempt(x_sub, y_sub, index_sub, ids_sub) -> (adv_sub, fooled_sub)` on the
    /// examples not fooled yet and keeps the points it fooled.
    pub fn attack(
        &mut self,
        y: &Tensor<1, Int>,
        ids: &[u64],
        attempt: impl FnOnce(
            Tensor<4>,
            Tensor<1, Int>,
            Tensor<1, Int>,
            &[u64],
        ) -> (Tensor<4>, Tensor<1, Bool>),
    ) {
        let active: Vec<usize> = (0..self.fooled.len())
            .filter(|&i| !self.fooled[i])
            .collect();
        if active.is_empty() {
            return;
        }
        let device = self.x.device();
        let idx = util::index_tensor(&active, &device);
        let (xs, ys) = if active.len() == self.fooled.len() {
            (self.x.clone(), y.clone())
        } else {
            (
                self.x.clone().select(0, idx.clone()),
                y.clone().select(0, idx.clone()),
            )
        };
        let ids_sub: Vec<u64> = active.iter().map(|&i| ids[i]).collect();
        let (cand, ok) = attempt(xs, ys, idx, &ids_sub);
        let ok = util::to_bools(ok);
        let hit_local: Vec<usize> = (0..active.len()).filter(|&j| ok[j]).collect();
        if hit_local.is_empty() {
            return;
        }
        let hit_global: Vec<usize> = hit_local.iter().map(|&j| active[j]).collect();
        let values = cand.select(0, util::index_tensor(&hit_local, &device));
        self.adv = self.adv.clone().select_assign(
            0,
            util::index_tensor(&hit_global, &device),
            values,
            IndexingUpdateOp::Assign,
        );
        for i in hit_global {
            self.fooled[i] = true;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    #[error("unknown attack '{0}'. Known: {known}", known = registry::known_names())]
    Unknown(String),
    #[error("attack '{attack}': {detail}")]
    BadOption { attack: String, detail: String },
    #[error("transfer surrogate {path}: {detail}")]
    Surrogate { path: PathBuf, detail: String },
    #[error("the attack list '{0}' names no attack; give 'none' for clean accuracy only")]
    EmptyList(String),
    #[error(
        "two attacks in '{list}' are both labelled {label} (with other settings): their columns \
         could not be told apart; evaluate them in separate runs"
    )]
    SameLabel { list: String, label: String },
}

/// What the registry needs to configure attacks.
pub struct AttackContext<'a> {
    /// L-inf radius on the [0,1] scale.
    pub eps: f64,
    pub seed: u64,
    pub device: &'a Device,
    /// The evaluated model (a transfer surrogate must fit its input and classes).
    pub target: &'a ModelSpec,
}
