//! Targeted FAB under L-inf (Croce & Hein, "Minimally distorted adversarial examples with a
//! fast adaptive boundary attack", ICML 2020; auto-attack `fab_base.py`): repeatedly project
//! onto the linearised decision hyperplane between the true class and a target, mixing the
//! projections of the current iterate and of the clean point (α ≤ α_max), overshooting by η,
//! and stepping back towards x by β after each success. Success only within ε.

use super::losses::pick;
use super::rng::{draw, example_rng, Noise};
use super::util::{input_grad, predict, to_f32s, to_i64s};
use super::{Attack, Outcome, SubsetTracker};
use crate::models::Classifier;
use burn::prelude::*;

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
        }
    }

    /// One targeted run; returns the smallest adversarial point found per example and whether
    /// it lies within ε.
    #[allow(clippy::too_many_arguments)]
    fn single_run(
        &self,
        model: &dyn Classifier,
        x: &Tensor<4>,
        y: &Tensor<1, Int>,
        target: &Tensor<1, Int>,
        ids: &[u64],
        random_start: bool,
        purpose: u64,
    ) -> (Tensor<4>, Tensor<1, Bool>) {
        let device = x.device();
        let shape = x.dims();
        let (b, n) = (shape[0], shape[1] * shape[2] * shape[3]);
        let x0 = to_f32s(x.clone());
        let labels = to_i64s(y.clone());
        let mut x1 = x0.clone();
        if random_start {
            for (i, &id) in ids.iter().enumerate() {
                let mut rng = example_rng(self.seed, purpose, id);
                let t: Vec<f32> = (0..n)
                    .map(|_| draw(&mut rng, Noise::Uniform(-1.0, 1.0)))
                    .collect();
                let m = t.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
                for j in 0..n {
                    x1[i * n + j] =
                        (x0[i * n + j] + self.eps as f32 * 0.5 * t[j] / m).clamp(0.0, 1.0);
                }
            }
        }
        let mut adv = x0.clone();
        let mut best = vec![f32::INFINITY; b];
        let to_tensor =
            |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), shape), &device);
        let (mut d1, mut d2) = (vec![0f32; n], vec![0f32; n]);
        for _ in 0..self.iterations {
            // Linearise f_t − f_y around x1: df + g·(z − x1) = 0  ⇔  g·z = g·x1 − df.
            let objective = |z: Tensor<2>| pick(z.clone(), target.clone()) - pick(z, y.clone());
            let (g, df, _) = input_grad(model, to_tensor(&x1), &objective);
            let g = to_f32s(g);
            let df = to_f32s(df);
            for (i, &dfi) in df.iter().enumerate().take(b) {
                let r = i * n..(i + 1) * n;
                let w = &g[r.clone()];
                let plane = dot(w, &x1[r.clone()]) - dfi;
                project_linf(&x1[r.clone()], w, plane, &mut d1);
                project_linf(&x0[r.clone()], w, plane, &mut d2);
                let a1 = linf_norm(&d1).max(1e-8);
                let a2 = linf_norm(&d2).max(1e-8);
                let alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max as f32);
                let eta = self.eta as f32;
                for (j, k) in r.enumerate() {
                    let from_x1 = x1[k] + eta * d1[j];
                    let from_x0 = x0[k] + eta * d2[j];
                    x1[k] = (from_x1 * (1.0 - alpha) + from_x0 * alpha).clamp(0.0, 1.0);
                }
            }
            let pred = to_i64s(predict(model, to_tensor(&x1)));
            for i in 0..b {
                if pred[i] == labels[i] {
                    continue;
                }
                let r = i * n..(i + 1) * n;
                let dist = x1[r.clone()]
                    .iter()
                    .zip(&x0[r.clone()])
                    .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
                if dist < best[i] {
                    best[i] = dist;
                    adv[r.clone()].copy_from_slice(&x1[r.clone()]);
                }
                // Step back towards x to look for a closer boundary point.
                for k in r {
                    x1[k] = x0[k] + (x1[k] - x0[k]) * self.beta as f32;
                }
            }
        }
        let ok: Vec<bool> = best.iter().map(|&d| d <= self.eps as f32).collect();
        let ok = Tensor::<1, Bool>::from_data(TensorData::new(ok, [b]), &device);
        (to_tensor(&adv), ok)
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
        let b = x.dims()[0];
        let order = model.logits(x.clone()).detach().argsort_descending(1);
        let classes = order.dims()[1];
        let mut tracker = SubsetTracker::new(x.clone(), b);
        for k in 1..=self.target_classes.min(classes - 1) {
            for restart in 0..self.restarts {
                let purpose = (k * 1000 + restart) as u64;
                tracker.attack(&y, ids, |xs, ys, idx, ids_sub| {
                    let o = order.clone().select(0, idx);
                    let m = o.dims()[0];
                    let target = o.slice([0..m, k..k + 1]).reshape([m]);
                    self.single_run(model, &xs, &ys, &target, ids_sub, restart > 0, purpose)
                });
            }
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
