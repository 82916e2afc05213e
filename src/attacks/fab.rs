//! Targeted FAB under L-inf (Croce & Hein, "Minimally distorted adversarial examples with a
//! fast adaptive boundary attack", ICML 2020; auto-attack `fab_base.py`): repeatedly project
//! onto the linearised decision hyperplane between the true class and a target, mixing the
//! projections of the current iterate and of the clean point (α ≤ α_max), overshooting by η,
//! and stepping back towards x by β after each success. Success only within ε.

use super::losses::pick;
use super::observe::Event;
use super::registry::{AttackEntry, Input, OptionDefault, OptionKind, OptionSpec};
use super::rng::{draw, example_rng, Noise};
use super::util::{input_grad, to_f32s, to_i64s};
use super::{Attack, Outcome, SubsetTracker};
use crate::models::Classifier;
use burn::prelude::*;

pub const FAB_T: AttackEntry = AttackEntry {
    names: &["fab-t"],
    help: "FAB-T: targeted fast adaptive boundary attack, 100 iterations, 9 target classes",
    input: Input::Options(&[
        OptionSpec {
            key: "steps",
            kind: OptionKind::Count,
            default: OptionDefault::Value("100"),
            help: "iterations",
            requires: None,
        },
        OptionSpec {
            key: "targets",
            kind: OptionKind::Count,
            default: OptionDefault::Value("9"),
            help: "target classes (the most likely other classes)",
            requires: None,
        },
        super::registry::RESTARTS,
    ]),
    min_classes: 2,
    build: |o, _| {
        let mut a = Fab::standard(o.eps(), o.seed());
        if let Some(v) = o.count("steps") {
            a.iterations = v;
        }
        if let Some(v) = o.count("targets") {
            a.target_classes = v;
        }
        if let Some(v) = o.count("restarts") {
            a.restarts = v;
        }
        Ok(vec![Box::new(a)])
    },
};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Fab {
    #[serde(skip)]
    pub label: String,
    pub eps: f64,
    pub iterations: usize,
    pub restarts: usize,
    pub target_classes: usize,
    pub alpha_max: f64,
    pub eta: f64,
    pub beta: f64,
    pub seed: u64,
    /// Most rows (example × target class) stacked into one batch: targets beyond it run in
    /// later rounds, on the examples still robust (1: one target at a time, as the reference).
    #[serde(skip)]
    pub stack_rows: usize,
}

impl Fab {
    pub fn new(label: &str, eps: f64, seed: u64) -> Self {
        Fab {
            label: label.to_string(),
            eps,
            iterations: 100,
            restarts: 1,
            target_classes: 9,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
            seed,
            stack_rows: super::util::MAX_STACKED_ROWS,
        }
    }

    /// The targeted version as AutoAttack runs it, labelled FAB-T.
    pub fn standard(eps: f64, seed: u64) -> Self {
        Fab::new("FAB-T", eps, seed)
    }

    /// Targeted FAB on stacked rows: row r attacks example `owner[r]` (clean point `x0`,
    /// label `labels`) towards class `targets[r]`, starting from `starts[r]`. An example
    /// succeeds as soon as one of its rows is misclassified within ε (the smallest such point,
    /// which the reference returns, is then within ε as well), and all its rows leave the
    /// batch; the other rows go on as they would alone. Each iteration's forward pass at the
    /// new iterates also gives the gradient of the next iteration, so only rows that step back
    /// towards x need a second pass. Returns, per example, its adversarial point or `None`.
    #[allow(clippy::too_many_arguments)]
    fn run_rows(
        &self,
        model: &dyn Classifier,
        x0: &[f32],
        labels: &[i64],
        shape: [usize; 3],
        mut owner: Vec<usize>,
        mut targets: Vec<i64>,
        mut x1: Vec<f32>,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Vec<Option<Vec<f32>>> {
        let [c, h, w] = shape;
        let n = c * h * w;
        let examples = x0.len() / n;
        let mut settled: Vec<Option<Vec<f32>>> = vec![None; examples];
        let eps = self.eps as f32;
        let eta = self.eta as f32;
        let report = super::observe::every(self.iterations);
        // Gradient of f_t − f_y and its value at the given rows, and the predicted class.
        let linearise = |x1: &[f32], owner: &[usize], targets: &[i64]| {
            let m = owner.len();
            let ys: Vec<i64> = owner.iter().map(|&e| labels[e]).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(ys, [m]), device);
            let t = Tensor::<1, Int>::from_data(TensorData::new(targets.to_vec(), [m]), device);
            let objective = |z: Tensor<2>| pick(z.clone(), t.clone()) - pick(z, y.clone());
            let xt = Tensor::<4>::from_data(TensorData::new(x1.to_vec(), [m, c, h, w]), device);
            let (g, df, logits) = input_grad(model, xt, &objective);
            (
                to_f32s(g),
                to_f32s(df),
                to_i64s(logits.argmax(1).reshape([m])),
            )
        };
        let (mut g, mut df, _) = linearise(&x1, &owner, &targets);
        let (mut d1, mut d2) = (vec![0f32; n], vec![0f32; n]);
        for it in 0..self.iterations {
            // Linearise f_t − f_y around x1: df + g·(z − x1) = 0  ⇔  g·z = g·x1 − df.
            for (i, &e) in owner.iter().enumerate() {
                let r = i * n..(i + 1) * n;
                let p = &x0[e * n..(e + 1) * n];
                let w = &g[r.clone()];
                let plane = dot(w, &x1[r.clone()]) - df[i];
                project_linf(&x1[r.clone()], w, plane, &mut d1);
                project_linf(p, w, plane, &mut d2);
                let a1 = linf_norm(&d1).max(1e-8);
                let a2 = linf_norm(&d2).max(1e-8);
                let alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max as f32);
                for (j, k) in r.enumerate() {
                    let from_x1 = x1[k] + eta * d1[j];
                    let from_x0 = p[j] + eta * d2[j];
                    x1[k] = (from_x1 * (1.0 - alpha) + from_x0 * alpha).clamp(0.0, 1.0);
                }
            }
            let (g_new, df_new, pred) = linearise(&x1, &owner, &targets);
            (g, df) = (g_new, df_new);
            let mut back = Vec::new();
            for (i, &e) in owner.iter().enumerate() {
                if pred[i] == labels[e] || settled[e].is_some() {
                    continue;
                }
                let r = i * n..(i + 1) * n;
                let p = &x0[e * n..(e + 1) * n];
                let dist = x1[r.clone()]
                    .iter()
                    .zip(p)
                    .fold(0f32, |a, (u, v)| a.max((u - v).abs()));
                if dist <= eps {
                    settled[e] = Some(x1[r].to_vec());
                } else {
                    // Step back towards x to look for a closer boundary point.
                    for (k, v) in r.zip(p) {
                        x1[k] = v + (x1[k] - v) * self.beta as f32;
                    }
                    back.push(i);
                }
            }
            // Drop the rows of examples that succeeded.
            let keep: Vec<usize> = (0..owner.len())
                .filter(|&i| settled[owner[i]].is_none())
                .collect();
            if keep.is_empty() {
                break;
            }
            if keep.len() < owner.len() {
                let rows = |v: &[f32], width: usize| -> Vec<f32> {
                    keep.iter()
                        .flat_map(|&i| v[i * width..(i + 1) * width].iter().copied())
                        .collect()
                };
                x1 = rows(&x1, n);
                g = rows(&g, n);
                df = rows(&df, 1);
                let slot: Vec<Option<usize>> = {
                    let mut s = vec![None; owner.len()];
                    for (new, &old) in keep.iter().enumerate() {
                        s[old] = Some(new);
                    }
                    s
                };
                back = back.iter().filter_map(|&i| slot[i]).collect();
                owner = keep.iter().map(|&i| owner[i]).collect();
                targets = keep.iter().map(|&i| targets[i]).collect();
            }
            // Rows that stepped back need the gradient at their new point.
            if !back.is_empty() && it + 1 < self.iterations {
                let xs: Vec<f32> = back
                    .iter()
                    .flat_map(|&i| x1[i * n..(i + 1) * n].iter().copied())
                    .collect();
                let os: Vec<usize> = back.iter().map(|&i| owner[i]).collect();
                let ts: Vec<i64> = back.iter().map(|&i| targets[i]).collect();
                let (gb, dfb, _) = linearise(&xs, &os, &ts);
                for (slot, &i) in back.iter().enumerate() {
                    g[i * n..(i + 1) * n].copy_from_slice(&gb[slot * n..(slot + 1) * n]);
                    df[i] = dfb[slot];
                }
            }
            if (it + 1) % report == 0 {
                progress(it + 1, settled.iter().filter(|a| a.is_none()).count());
            }
        }
        settled
    }

    /// One restart on the examples not fooled yet: every target class stacked into one batch
    /// (up to `stack_rows` rows; further targets in later rounds on what is still robust).
    #[allow(clippy::too_many_arguments)]
    fn run_restart(
        &self,
        model: &dyn Classifier,
        xs: &Tensor<4>,
        ys: &Tensor<1, Int>,
        order: &[i64],
        classes: usize,
        restart: usize,
        ids: &[u64],
        observer: &mut dyn FnMut(&Event),
    ) -> (Tensor<4>, Tensor<1, Bool>) {
        let device = xs.device();
        let [b, c, h, w] = xs.dims();
        let n = c * h * w;
        let x0 = to_f32s(xs.clone());
        let labels = to_i64s(ys.clone());
        let ranks: Vec<usize> = (1..=self.target_classes.min(classes - 1)).collect();
        let per_round = (self.stack_rows / b.max(1)).clamp(1, ranks.len().max(1));
        let total = ranks.len() * self.iterations;
        let label = self.label.clone();
        let mut settled: Vec<Option<Vec<f32>>> = vec![None; b];
        for (round_no, round) in ranks.chunks(per_round).enumerate() {
            let active: Vec<usize> = (0..b).filter(|&e| settled[e].is_none()).collect();
            if active.is_empty() {
                break;
            }
            let x0_a: Vec<f32> = active
                .iter()
                .flat_map(|&e| x0[e * n..(e + 1) * n].iter().copied())
                .collect();
            let labels_a: Vec<i64> = active.iter().map(|&e| labels[e]).collect();
            let (mut owner, mut targets, mut starts) = (Vec::new(), Vec::new(), Vec::new());
            for &k in round {
                let purpose = (k * 1000 + restart) as u64;
                for (slot, &e) in active.iter().enumerate() {
                    owner.push(slot);
                    // Target k is the class with the (k+1)-th highest clean logit.
                    targets.push(order[e * classes + k]);
                    let p = &x0[e * n..(e + 1) * n];
                    if restart > 0 {
                        let mut rng = example_rng(self.seed, purpose, ids[e]);
                        let t: Vec<f32> = (0..n)
                            .map(|_| draw(&mut rng, Noise::Uniform(-1.0, 1.0)))
                            .collect();
                        let m = t.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
                        starts.extend(
                            p.iter()
                                .zip(&t)
                                .map(|(v, t)| (v + self.eps as f32 * 0.5 * t / m).clamp(0.0, 1.0)),
                        );
                    } else {
                        starts.extend_from_slice(p);
                    }
                }
            }
            let done_before = round_no * per_round * self.iterations;
            let width = round.len();
            let found = self.run_rows(
                model,
                &x0_a,
                &labels_a,
                [c, h, w],
                owner,
                targets,
                starts,
                &device,
                &mut |done, robust| {
                    observer(&Event::Step {
                        component: &label,
                        done: done_before + done * width,
                        total,
                        robust,
                    })
                },
            );
            for (slot, adv) in found.into_iter().enumerate() {
                if adv.is_some() {
                    settled[active[slot]] = adv;
                }
            }
        }
        super::util::settled_batch(&settled, &x0, [b, c, h, w], &device)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn linf_norm(a: &[f32]) -> f32 {
    a.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// The smallest-L∞ step `d` with `t + d ∈ [0,1]^n` that reaches the hyperplane `w·z = plane`
/// (the exact solution of the box-constrained problem FAB's `projection_linf` solves). Every
/// coordinate moves against the sign of its weight by `min(λ, room)`, λ the smallest value that
/// closes the gap; if even moving to the box boundary does not close it, the full move.
pub fn project_linf(t: &[f32], w: &[f32], plane: f32, d: &mut [f32]) {
    let gap = dot(w, t) - plane;
    let orient = if gap >= 0.0 { 1.0 } else { -1.0 };
    let gap = gap * orient;
    // (room to the box boundary in the moving direction, |w|, direction)
    let mut coords: Vec<(f32, f32, usize)> = Vec::with_capacity(t.len());
    for i in 0..t.len() {
        d[i] = 0.0;
        let wi = w[i] * orient;
        if wi != 0.0 {
            let room = if wi < 0.0 { 1.0 - t[i] } else { t[i] };
            coords.push((room, wi.abs(), i));
        }
    }
    let dir = |i: usize| if w[i] * orient < 0.0 { 1.0 } else { -1.0 };
    coords.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f32 = coords.iter().map(|c| c.0 * c.1).sum();
    let lambda = if total <= gap {
        f32::INFINITY
    } else {
        let mut moved = 0f32; // Σ |w| · room over fully moved coordinates
        let mut rest: f32 = coords.iter().map(|c| c.1).sum();
        let mut lam = f32::INFINITY;
        for &(room, aw, _) in &coords {
            if moved + room * rest >= gap {
                lam = ((gap - moved) / rest).max(0.0);
                break;
            }
            moved += room * aw;
            rest -= aw;
        }
        lam
    };
    for &(room, _, i) in &coords {
        d[i] = dir(i) * room.min(lambda);
    }
}

impl Attack for Fab {
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
        let order = model.logits(x.clone()).detach().argsort_descending(1);
        let classes = order.dims()[1];
        let order: Vec<i64> = order
            .into_data()
            .try_into_vec_as::<i64>()
            .expect("int tensor");
        let mut tracker = SubsetTracker::new(x.clone(), b);
        for restart in 0..self.restarts {
            tracker.attack(&y, ids, |xs, ys, idx, ids_sub| {
                let sub_order: Vec<i64> = to_i64s(idx)
                    .iter()
                    .flat_map(|&e| order[e as usize * classes..(e as usize + 1) * classes].to_vec())
                    .collect();
                self.run_restart(
                    model, &xs, &ys, &sub_order, classes, restart, ids_sub, observer,
                )
            });
        }
        Outcome::plain(tracker.adv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The projection reaches the hyperplane inside the box, and no smaller L∞ step does
    /// (checked against a bisection on λ).
    #[test]
    fn linf_projection_is_exact_and_minimal() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for case in 0..200 {
            let n = 1 + case % 17;
            let t: Vec<f32> = (0..n).map(|_| rng.random()).collect();
            let w: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 5 == 4 {
                        0.0
                    } else {
                        rng.random::<f32>() * 2.0 - 1.0
                    }
                })
                .collect();
            let plane = dot(&w, &t) + (rng.random::<f32>() - 0.5) * 0.5;
            let mut d = vec![0f32; n];
            project_linf(&t, &w, plane, &mut d);
            for i in 0..n {
                assert!(t[i] + d[i] >= -1e-6 && t[i] + d[i] <= 1.0 + 1e-6);
                if w[i] == 0.0 {
                    assert_eq!(d[i], 0.0);
                }
            }
            let moved: Vec<f32> = t.iter().zip(&d).map(|(a, b)| a + b).collect();
            let gap0 = (dot(&w, &t) - plane).abs();
            let gap1 = (dot(&w, &moved) - plane).abs();
            // Either the plane is reached or every coordinate is at its bound.
            let full = d
                .iter()
                .zip(&w)
                .all(|(di, wi)| *wi == 0.0 || di.abs() > 0.0);
            assert!(
                gap1 < 1e-4 || (full && gap1 <= gap0),
                "case {case}: gap {gap1}"
            );
            if gap1 < 1e-4 {
                // Bisection: the smallest λ with Σ|w| min(λ, room) ≥ gap.
                let orient = if dot(&w, &t) - plane >= 0.0 {
                    1.0
                } else {
                    -1.0
                };
                let reach = |lam: f32| -> f32 {
                    (0..n)
                        .map(|i| {
                            let wi = w[i] * orient;
                            let room = if wi < 0.0 { 1.0 - t[i] } else { t[i] };
                            wi.abs() * room.min(lam)
                        })
                        .sum()
                };
                let (mut lo, mut hi) = (0f32, 1f32);
                for _ in 0..60 {
                    let mid = 0.5 * (lo + hi);
                    if reach(mid) >= gap0 {
                        hi = mid
                    } else {
                        lo = mid
                    }
                }
                assert!(
                    (linf_norm(&d) - hi).abs() < 1e-4,
                    "case {case}: {} vs {hi}",
                    linf_norm(&d)
                );
            }
        }
    }
}
