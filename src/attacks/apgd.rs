//! Auto-PGD under L-inf (Croce & Hein, ICML 2020; fra31/auto-attack `autopgd_base.py`):
//! step size 2ε halved per example at checkpoints where progress stalled, momentum 0.75,
//! restart from the best point after each halving. Untargeted (CE or DLR loss) or targeted
//! on the DLR-targeted loss against the k classes with the highest clean logits.

use super::losses;
use super::rng::{noise, Noise};
use super::util::{choose, choose_rows, input_grad, linf, rows, Ball};
use super::{Attack, Outcome, SubsetTracker};
use crate::models::Classifier;
use burn::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApgdLoss {
    Ce,
    Dlr,
    /// DLR-targeted, run once per target class.
    DlrTargeted,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Apgd {
    #[serde(skip)]
    pub label: String,
    pub eps: f64,
    pub iterations: usize,
    pub restarts: usize,
    pub loss: ApgdLoss,
    /// Target classes for the targeted loss (the 2nd..(k+1)-th highest clean logits).
    pub target_classes: usize,
    /// ρ: halve the step when the loss rose in fewer than this share of the steps.
    pub rho: f64,
    pub seed: u64,
}

impl Apgd {
    pub fn new(label: &str, eps: f64, loss: ApgdLoss, seed: u64) -> Self {
        Apgd {
            label: label.to_string(),
            eps,
            iterations: 100,
            restarts: 1,
            loss,
            target_classes: 9,
            rho: 0.75,
            seed,
        }
    }

    /// Iterations at which the step size is reconsidered: w_j = first at 0.22·N, then gaps
    /// shrinking by 0.03·N down to 0.06·N (the reference's integer arithmetic).
    pub fn checkpoints(n: usize) -> Vec<usize> {
        let first = ((0.22 * n as f64) as usize).max(1);
        let min_gap = ((0.06 * n as f64) as usize).max(1);
        let decr = ((0.03 * n as f64) as usize).max(1);
        let mut out = Vec::new();
        let mut k = first;
        let mut since = 0;
        for i in 0..n {
            since += 1;
            if since == k {
                out.push(i);
                since = 0;
                k = k.saturating_sub(decr).max(min_gap);
            }
        }
        out
    }

    /// One APGD run on every example of the batch; returns (found_adv, is_adversarial).
    fn single_run(
        &self,
        model: &dyn Classifier,
        x: &Tensor<4>,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
        ids: &[u64],
        purpose: u64,
    ) -> (Tensor<4>, Tensor<1, Bool>) {
        let device = x.device();
        let b = x.dims()[0];
        let eps = self.eps;
        let ball = Ball::new(x, eps);
        let loss_fn = |z: Tensor<2>| match (self.loss, target) {
            (ApgdLoss::Ce, _) => losses::cross_entropy(z, y.clone()),
            (ApgdLoss::Dlr, _) => losses::dlr(z, y.clone()),
            (ApgdLoss::DlrTargeted, Some(t)) => losses::dlr_targeted(z, y.clone(), t.clone()),
            (ApgdLoss::DlrTargeted, None) => unreachable!("targeted APGD needs targets"),
        };

        // x0 = x + ε·t/‖t‖∞, t ~ U(−1,1), clipped to [0,1].
        let t = noise(
            self.seed,
            purpose,
            ids,
            x.dims(),
            Noise::Uniform(-1.0, 1.0),
            &device,
        );
        let t_max = linf(t.clone(), t.zeros_like());
        let mut x_adv =
            (x.clone() + t.mul_scalar(eps) / rows(t_max.add_scalar(1e-12), x)).clamp(0.0, 1.0);

        let (mut grad, mut loss, logits) = input_grad(model, x_adv.clone(), &loss_fn);
        let mut fooled = logits.argmax(1).reshape([b]).not_equal(y.clone());
        let mut x_best_adv = x_adv.clone();
        let mut x_best = x_adv.clone();
        let mut grad_best = grad.clone();
        let mut loss_best = loss.clone();

        let mut step = Tensor::<1>::full([b], 2.0 * eps, &device);
        let mut x_old = x_adv.clone();
        let checkpoints = Self::checkpoints(self.iterations);
        let mut next_check = 0usize;
        let mut last_check = 0usize;
        // Count of steps since the last checkpoint at which the loss increased.
        let mut increases = Tensor::<1>::zeros([b], &device);
        // `loss_steps[-1]` in the reference is still zero when the first window starts.
        let mut prev_loss = Tensor::<1>::zeros([b], &device);
        let mut loss_best_last_check = loss_best.clone();
        let mut reduced_last_check = Tensor::<1, Bool>::full([b], true, &device);

        for i in 0..self.iterations {
            // Gradient step with momentum α = 0.75 (none on the first step).
            let a = if i > 0 { 0.75 } else { 1.0 };
            let momentum = x_adv.clone() - x_old;
            x_old = x_adv.clone();
            let z = ball.project(x_adv.clone() + rows(step.clone(), x) * grad.sign());
            x_adv = ball.project(
                x_adv.clone() + (z - x_adv.clone()).mul_scalar(a) + momentum.mul_scalar(1.0 - a),
            );

            let (g, l, logits) = input_grad(model, x_adv.clone(), &loss_fn);
            grad = g;
            let wrong = logits.argmax(1).reshape([b]).not_equal(y.clone());
            x_best_adv = choose_rows(wrong.clone(), x_adv.clone(), x_best_adv);
            fooled = fooled.bool_or(wrong);

            increases = increases + l.clone().greater(prev_loss.clone()).float();
            prev_loss = l.clone();
            loss = l;
            let improved = loss.clone().greater(loss_best.clone());
            x_best = choose_rows(improved.clone(), x_adv.clone(), x_best);
            grad_best = choose_rows(improved.clone(), grad.clone(), grad_best);
            loss_best = choose(improved, loss.clone(), loss_best);

            if next_check < checkpoints.len() && i == checkpoints[next_check] {
                let window = (i + 1 - last_check) as f64;
                // (1) the loss rose in at most ρ of the steps of the window, or
                let oscillating = increases.clone().lower_equal_elem(window * self.rho);
                // (2) no halving last time and no progress of the best loss since.
                let stalled = reduced_last_check.clone().bool_not().bool_and(
                    loss_best_last_check
                        .clone()
                        .greater_equal(loss_best.clone()),
                );
                let halve = oscillating.bool_or(stalled);
                reduced_last_check = halve.clone();
                loss_best_last_check = loss_best.clone();
                step = choose(halve.clone(), step.clone().div_scalar(2.0), step);
                x_adv = choose_rows(halve.clone(), x_best.clone(), x_adv);
                grad = choose_rows(halve, grad_best.clone(), grad);
                increases = increases.zeros_like();
                last_check = i + 1;
                next_check += 1;
            }
        }
        (x_best_adv, fooled)
    }
}

impl Attack for Apgd {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("settings serialise")
    }

    fn run(&self, model: &dyn Classifier, x: Tensor<4>, y: Tensor<1, Int>, ids: &[u64]) -> Outcome {
        let b = x.dims()[0];
        // Target k is the class with the (k+1)-th highest clean logit.
        let order = (self.loss == ApgdLoss::DlrTargeted)
            .then(|| model.logits(x.clone()).detach().argsort_descending(1));
        let runs: Vec<Option<usize>> = match &order {
            Some(o) => (1..=self.target_classes.min(o.dims()[1] - 1))
                .map(Some)
                .collect(),
            None => vec![None],
        };
        let mut tracker = SubsetTracker::new(x.clone(), b);
        for (ti, k) in runs.into_iter().enumerate() {
            for restart in 0..self.restarts {
                let purpose = (ti * 1000 + restart) as u64;
                tracker.attack(&y, ids, |xs, ys, idx, ids_sub| {
                    let target = k.map(|k| {
                        let o = order
                            .as_ref()
                            .expect("targets")
                            .clone()
                            .select(0, idx.clone());
                        let n = o.dims()[0];
                        o.slice([0..n, k..k + 1]).reshape([n])
                    });
                    self.single_run(model, &xs, &ys, target.as_ref(), ids_sub, purpose)
                });
            }
        }
        Outcome::plain(tracker.adv)
    }
}

#[cfg(test)]
mod tests {
    use super::Apgd;

    #[test]
    fn checkpoints_follow_the_reference_schedule() {
        // p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), N = 100.
        let w = Apgd::checkpoints(100);
        assert_eq!(&w[..5], &[21, 40, 56, 69, 79]);
        assert!(w.windows(2).all(|p| p[1] - p[0] >= 6));
    }
}
