//! Square attack under L-inf (Andriushchenko et al., ECCV 2020; auto-attack `square.py`):
//! score-based random search with no gradients. Start from vertical stripes of ±ε; each query
//! sets a random square window to ±ε per channel and keeps the change only if the margin loss
//! z_y − max_{i≠y} z_i decreases (or the point becomes misclassified). The window's area is a
//! fraction p of the image, halved on the reference schedule.
//!
//! Windows and signs are drawn per example (as in the original algorithm), so a result does
//! not depend on which other examples share the batch.

use super::observe::Event;
use super::registry::{AttackEntry, Input, OptionDefault, OptionKind, OptionSpec};
use super::rng::example_rng;
use super::util::{to_f32s, to_i64s};
use super::{Attack, Outcome};
use crate::models::Classifier;
use burn::prelude::*;
use rand::Rng;

pub const SQUARE: AttackEntry = AttackEntry {
    names: &["square"],
    help: "Square: score-based random search, no gradients (p-schedule rescaled to the queries)",
    input: Input::Options(&[
        OptionSpec {
            key: "queries",
            kind: OptionKind::Count,
            default: OptionDefault::Value("5000"),
            help: "model queries per example",
            requires: None,
        },
        super::registry::RESTARTS,
    ]),
    min_classes: 2,
    build: |o, _| {
        let mut a = Square::new("Square", o.eps(), o.seed());
        if let Some(v) = o.count("queries") {
            a.queries = v;
        }
        if let Some(v) = o.count("restarts") {
            a.restarts = v;
        }
        Ok(vec![Box::new(a)])
    },
};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Square {
    #[serde(skip)]
    pub label: String,
    pub eps: f64,
    pub queries: usize,
    pub p_init: f64,
    pub restarts: usize,
    pub seed: u64,
    /// Rescale the p-schedule (defined for 10,000 queries) to `queries`: the class default of
    /// the reference `SquareAttack` (`resc_schedule=True`). AutoAttack's composer turns it off
    /// (docs/spec/attacks.md, Square).
    pub rescale_schedule: bool,
}

impl Square {
    pub fn new(label: &str, eps: f64, seed: u64) -> Self {
        Square {
            label: label.to_string(),
            eps,
            queries: 5000,
            p_init: 0.8,
            restarts: 1,
            seed,
            rescale_schedule: true,
        }
    }

    /// Fraction of the image a window covers at iteration `it`: p_init halved at iterations
    /// 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query schedule, rescaled to
    /// `queries` when `rescale_schedule` is set. Unscaled and past 10,000 iterations the
    /// reference falls back to p_init, and so does this.
    pub fn p_selection(&self, it: usize) -> f64 {
        let it = if self.rescale_schedule {
            (it as f64 / self.queries as f64 * 10000.0) as usize
        } else {
            it
        };
        let halvings = match it {
            0..=10 => 0,
            11..=50 => 1,
            51..=200 => 2,
            201..=500 => 3,
            501..=1000 => 4,
            1001..=2000 => 5,
            2001..=4000 => 6,
            4001..=6000 => 7,
            6001..=8000 => 8,
            8001..=10000 => 9,
            _ => 0,
        };
        self.p_init / f64::powi(2.0, halvings)
    }

    /// Margins of the given host images (one forward pass).
    fn margins(
        &self,
        model: &dyn Classifier,
        images: Vec<f32>,
        shape: [usize; 4],
        labels: &[i64],
        device: &Device,
    ) -> Vec<f32> {
        let z = model.logits(Tensor::from_data(TensorData::new(images, shape), device));
        let classes = z.dims()[1];
        let z = to_f32s(z);
        labels
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                let row = &z[i * classes..(i + 1) * classes];
                let other = row
                    .iter()
                    .enumerate()
                    .filter(|(c, _)| *c as i64 != y)
                    .fold(f32::NEG_INFINITY, |m, (_, v)| m.max(*v));
                row[y as usize] - other
            })
            .collect()
    }

    fn single_run(
        &self,
        model: &dyn Classifier,
        x: &Tensor<4>,
        y: &Tensor<1, Int>,
        ids: &[u64],
        restart: u64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Vec<f32> {
        let device = x.device();
        let [b, c, h, w] = x.dims();
        let n = c * h * w;
        let eps = self.eps as f32;
        let x0 = to_f32s(x.clone());
        let labels = to_i64s(y.clone());
        let mut rngs: Vec<_> = ids
            .iter()
            .map(|&id| example_rng(self.seed, restart, id))
            .collect();
        // Vertical stripes: one sign per (channel, column).
        let mut best = x0.clone();
        for (i, rng) in rngs.iter_mut().enumerate().take(b) {
            for ch in 0..c {
                for col in 0..w {
                    let s = if rng.random_bool(0.5) { eps } else { -eps };
                    for row in 0..h {
                        let k = i * n + (ch * h + row) * w + col;
                        best[k] = (x0[k] + s).clamp(0.0, 1.0);
                    }
                }
            }
        }
        let mut margin = self.margins(model, best.clone(), [b, c, h, w], &labels, &device);
        let mut loss = margin.clone();
        let mut cand = vec![0f32; n];
        let report = super::observe::every(self.queries);
        for it in 0..self.queries {
            // One query per image still robust, all in one forward pass.
            let active: Vec<usize> = (0..b).filter(|&i| margin[i] > 0.0).collect();
            if active.is_empty() {
                break;
            }
            if it % report == 0 {
                progress(it, active.len());
            }
            let p = self.p_selection(it);
            let s = ((p * (h * w) as f64).sqrt().round() as usize).clamp(1, h.min(w));
            let mut batch = Vec::with_capacity(active.len() * n);
            for &i in &active {
                let rng = &mut rngs[i];
                let vh = if h > s {
                    rng.random_range(0..(h - s) as u64) as usize
                } else {
                    0
                };
                let vw = if w > s {
                    rng.random_range(0..(w - s) as u64) as usize
                } else {
                    0
                };
                cand.copy_from_slice(&best[i * n..(i + 1) * n]);
                for ch in 0..c {
                    let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                    for row in vh..vh + s {
                        for col in vw..vw + s {
                            let j = (ch * h + row) * w + col;
                            let orig = x0[i * n + j];
                            // best + 2ε·sign, projected onto the ball and [0,1].
                            let v = (cand[j] + 2.0 * eps * sign).clamp(orig - eps, orig + eps);
                            cand[j] = v.clamp(0.0, 1.0);
                        }
                    }
                }
                batch.extend_from_slice(&cand);
            }
            let sub_labels: Vec<i64> = active.iter().map(|&i| labels[i]).collect();
            let new_margin = self.margins(
                model,
                batch.clone(),
                [active.len(), c, h, w],
                &sub_labels,
                &device,
            );
            for (slot, &i) in active.iter().enumerate() {
                let m = new_margin[slot];
                let improved = m < loss[i];
                if improved {
                    loss[i] = m;
                }
                if improved || m <= 0.0 {
                    margin[i] = m;
                    best[i * n..(i + 1) * n].copy_from_slice(&batch[slot * n..(slot + 1) * n]);
                }
            }
        }
        best
    }
}

impl Attack for Square {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("settings serialise")
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
        let b = x.dims()[0];
        let mut tracker = super::SubsetTracker::new(x.clone(), b);
        let restarts = self.restarts.max(1);
        let label = self.label.clone();
        for restart in 0..restarts {
            tracker.attack(&y, ids, |xs, ys, _idx, ids_sub| {
                let mut progress = |done: usize, robust: usize| {
                    observer(&Event::Step {
                        component: &label,
                        done: restart * self.queries + done,
                        total: restarts * self.queries,
                        robust,
                    })
                };
                let adv = self.single_run(model, &xs, &ys, ids_sub, restart as u64, &mut progress);
                let adv = Tensor::<4>::from_data(TensorData::new(adv, xs.dims()), &xs.device());
                let ok = super::util::correct(model, adv.clone(), ys).bool_not();
                (adv, ok)
            });
        }
        Outcome::plain(tracker.adv)
    }

    /// Query-based: it sees only the model's outputs.
    fn is_black_box(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Iterations (from 0) at which p first drops below its previous value.
    fn halvings(sq: &Square) -> Vec<usize> {
        (1..sq.queries)
            .filter(|&it| sq.p_selection(it) < sq.p_selection(it - 1))
            .collect()
    }

    /// Standalone Square rescales the 10,000-query schedule to its budget; inside AutoAttack
    /// (5000 queries) the halvings happen at the unscaled iterations (docs/spec/attacks.md).
    #[test]
    fn schedules_rescaled_and_unscaled() {
        let mut sq = Square::new("Square", 0.1, 0);
        assert!(sq.rescale_schedule);
        // Rescaled to 5000 queries: iteration i is read as 2i.
        assert_eq!(
            halvings(&sq),
            vec![6, 26, 101, 251, 501, 1001, 2001, 3001, 4001]
        );
        assert_eq!(sq.p_selection(0), 0.8);
        assert_eq!(sq.p_selection(4999), 0.8 / 512.0);
        sq.rescale_schedule = false;
        assert_eq!(halvings(&sq), vec![11, 51, 201, 501, 1001, 2001, 4001]);
        assert_eq!(sq.p_selection(10), 0.8);
        assert_eq!(sq.p_selection(11), 0.4);
        assert_eq!(sq.p_selection(4999), 0.8 / 128.0);
        // Unscaled with a budget past the schedule: the reference's fallback to p_init.
        sq.queries = 12000;
        assert_eq!(sq.p_selection(10000), 0.8 / 512.0);
        assert_eq!(sq.p_selection(10001), 0.8);
    }
}
