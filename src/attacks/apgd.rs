//! Auto-PGD under L-inf (Croce & Hein, ICML 2020; fra31/auto-attack `autopgd_base.py`):
//! step size 2ε halved per example at checkpoints where progress stalled, momentum 0.75,
//! restart from the best point after each halving. Untargeted (CE or DLR loss) or targeted
//! on the DLR-targeted loss against the k classes with the highest clean logits.

use super::losses;
use super::observe::Event;
use super::parse::AttackOptions;
use super::registry::{AttackEntry, Input, OptionDefault, OptionKind, OptionSpec};
use super::rng::{noise, Noise};
use super::util::{
    choose, choose_rows, index_tensor, input_grad, linf, rows, to_bools, to_f32s, to_i64s, Ball,
};
use super::{Attack, AttackError, Outcome, SubsetTracker};
use crate::models::Classifier;
use burn::prelude::*;

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "steps",
        kind: OptionKind::Count,
        default: OptionDefault::Value("100"),
        help: "iterations",
        requires: None,
    },
    super::registry::RESTARTS,
    OptionSpec {
        key: "targets",
        kind: OptionKind::Count,
        default: OptionDefault::Value("9"),
        help: "target classes of the targeted loss (no effect on the untargeted ones)",
        requires: None,
    },
];

pub const APGD_CE: AttackEntry = AttackEntry {
    names: &["apgd-ce"],
    help: "APGD-CE: Auto-PGD on cross-entropy, 100 iterations (AutoAttack's first component)",
    input: Input::Options(OPTIONS),
    min_classes: 2,
    build: |o, _| Apgd::from_options(ApgdLoss::Ce, o),
};

pub const APGD_DLR: AttackEntry = AttackEntry {
    names: &["apgd-dlr"],
    help: "APGD-DLR: Auto-PGD on the untargeted DLR loss, 100 iterations",
    input: Input::Options(OPTIONS),
    min_classes: 3,
    build: |o, _| Apgd::from_options(ApgdLoss::Dlr, o),
};

pub const APGD_T: AttackEntry = AttackEntry {
    names: &["apgd-t"],
    help: "APGD-T: Auto-PGD on the targeted DLR loss against the 9 most likely other classes",
    input: Input::Options(OPTIONS),
    min_classes: 4,
    build: |o, _| Apgd::from_options(ApgdLoss::DlrTargeted, o),
};

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
    /// Most rows (example × target class) stacked into one batch: targets beyond it run in
    /// later rounds, on the examples still robust (1: one target at a time, as the reference).
    #[serde(skip)]
    pub stack_rows: usize,
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
            stack_rows: super::util::MAX_STACKED_ROWS,
        }
    }

    /// The standard configuration of `loss` (as AutoAttack runs it), labelled by its loss.
    pub fn standard(loss: ApgdLoss, eps: f64, seed: u64) -> Self {
        let label = match loss {
            ApgdLoss::Ce => "APGD-CE",
            ApgdLoss::Dlr => "APGD-DLR",
            ApgdLoss::DlrTargeted => "APGD-T",
        };
        Apgd::new(label, eps, loss, seed)
    }

    fn from_options(
        loss: ApgdLoss,
        o: &AttackOptions,
    ) -> Result<Vec<Box<dyn Attack>>, AttackError> {
        let mut a = Apgd::standard(loss, o.eps(), o.seed());
        if let Some(v) = o.count("steps") {
            a.iterations = v;
        }
        if let Some(v) = o.count("restarts") {
            a.restarts = v;
        }
        if let Some(v) = o.count("targets") {
            a.target_classes = v;
        }
        Ok(vec![Box::new(a)])
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

    fn loss_of(
        &self,
        z: Tensor<2>,
        y: &Tensor<1, Int>,
        target: Option<&Tensor<1, Int>>,
    ) -> Tensor<1> {
        match (self.loss, target) {
            (ApgdLoss::Ce, _) => losses::cross_entropy(z, y.clone()),
            (ApgdLoss::Dlr, _) => losses::dlr(z, y.clone()),
            (ApgdLoss::DlrTargeted, Some(t)) => losses::dlr_targeted(z, y.clone(), t.clone()),
            (ApgdLoss::DlrTargeted, None) => unreachable!("targeted APGD needs targets"),
        }
    }

    /// One APGD run on stacked rows: row r attacks example `owner[r]` (with target `target[r]`
    /// for the targeted loss) from `x[r] + ε·t[r]/‖t[r]‖∞`. Rows do not interact (eval-mode
    /// model, per-row step sizes), so an example is settled by the first adversarial point any
    /// of its rows finds, and all its rows then leave the batch while the others go on exactly
    /// as they would alone. Returns, per example, that adversarial point (`[C·H·W]`) or `None`.
    #[allow(clippy::too_many_arguments)]
    fn run_rows(
        &self,
        model: &dyn Classifier,
        x: Tensor<4>,
        y: Tensor<1, Int>,
        target: Option<Tensor<1, Int>>,
        t: Tensor<4>,
        mut owner: Vec<usize>,
        examples: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Vec<Option<Vec<f32>>> {
        let device = x.device();
        let eps = self.eps;
        let mut settled: Vec<Option<Vec<f32>>> = vec![None; examples];
        let b = x.dims()[0];
        let t_max = linf(t.clone(), t.zeros_like());
        let x_adv =
            (x.clone() + t.mul_scalar(eps) / rows(t_max.add_scalar(1e-12), &x)).clamp(0.0, 1.0);
        let (grad, loss, logits) = input_grad(model, x_adv.clone(), &|z| {
            self.loss_of(z, &y, target.as_ref())
        });
        let wrong = logits.argmax(1).reshape([b]).not_equal(y.clone());
        let mut s = Rows {
            ball: Ball::new(&x, eps),
            x,
            y,
            target,
            x_old: x_adv.clone(),
            x_best: x_adv.clone(),
            grad_best: grad.clone(),
            loss_best: loss,
            x_adv,
            grad,
            step: Tensor::<1>::full([b], 2.0 * eps, &device),
            // Count of steps since the last checkpoint at which the loss increased.
            increases: Tensor::<1>::zeros([b], &device),
            // `loss_steps[-1]` in the reference is still zero when the first window starts.
            prev_loss: Tensor::<1>::zeros([b], &device),
            loss_best_last_check: Tensor::<1>::zeros([b], &device),
            reduced_last_check: Tensor::<1, Bool>::full([b], true, &device),
        };
        s.loss_best_last_check = s.loss_best.clone();
        let found = settle(&s.x_adv, wrong, &owner, &mut settled);
        match s.keep(found, &mut owner, &settled) {
            Some(rest) => s = rest,
            None => return settled,
        }

        let checkpoints = Self::checkpoints(self.iterations);
        let mut next_check = 0usize;
        let mut last_check = 0usize;
        let report = super::observe::every(self.iterations);
        for i in 0..self.iterations {
            let b = s.x.dims()[0];
            // Gradient step with momentum α = 0.75 (none on the first step).
            let a = if i > 0 { 0.75 } else { 1.0 };
            let momentum = s.x_adv.clone() - s.x_old;
            s.x_old = s.x_adv.clone();
            let z = s
                .ball
                .project(s.x_adv.clone() + rows(s.step.clone(), &s.x) * s.grad.sign());
            s.x_adv = s.ball.project(
                s.x_adv.clone()
                    + (z - s.x_adv.clone()).mul_scalar(a)
                    + momentum.mul_scalar(1.0 - a),
            );

            let (g, l, logits) = input_grad(model, s.x_adv.clone(), &|z| {
                self.loss_of(z, &s.y, s.target.as_ref())
            });
            s.grad = g;
            let wrong = logits.argmax(1).reshape([b]).not_equal(s.y.clone());
            let found = settle(&s.x_adv, wrong, &owner, &mut settled);

            s.increases = s.increases + l.clone().greater(s.prev_loss.clone()).float();
            s.prev_loss = l.clone();
            let improved = l.clone().greater(s.loss_best.clone());
            s.x_best = choose_rows(improved.clone(), s.x_adv.clone(), s.x_best);
            s.grad_best = choose_rows(improved.clone(), s.grad.clone(), s.grad_best);
            s.loss_best = choose(improved, l, s.loss_best);

            if next_check < checkpoints.len() && i == checkpoints[next_check] {
                let window = (i + 1 - last_check) as f64;
                // (1) the loss rose in at most ρ of the steps of the window, or
                let oscillating = s.increases.clone().lower_equal_elem(window * self.rho);
                // (2) no halving last time and no progress of the best loss since.
                let stalled = s.reduced_last_check.clone().bool_not().bool_and(
                    s.loss_best_last_check
                        .clone()
                        .greater_equal(s.loss_best.clone()),
                );
                let halve = oscillating.bool_or(stalled);
                s.reduced_last_check = halve.clone();
                s.loss_best_last_check = s.loss_best.clone();
                s.step = choose(halve.clone(), s.step.clone().div_scalar(2.0), s.step);
                s.x_adv = choose_rows(halve.clone(), s.x_best.clone(), s.x_adv);
                s.grad = choose_rows(halve, s.grad_best.clone(), s.grad);
                s.increases = s.increases.zeros_like();
                last_check = i + 1;
                next_check += 1;
            }
            match s.keep(found, &mut owner, &settled) {
                Some(rest) => s = rest,
                None => break,
            }
            if (i + 1) % report == 0 {
                progress(i + 1, settled.iter().filter(|a| a.is_none()).count());
            }
        }
        settled
    }

    /// Runs on the examples not settled yet, all target classes stacked into one batch (up to
    /// `stack_rows` rows; more targets go in later rounds on what is still robust).
    #[allow(clippy::too_many_arguments)]
    fn run_restart(
        &self,
        model: &dyn Classifier,
        xs: &Tensor<4>,
        ys: &Tensor<1, Int>,
        order: Option<&[i64]>,
        classes: usize,
        targets: &[usize],
        restart: usize,
        ids: &[u64],
        observer: &mut dyn FnMut(&Event),
    ) -> (Tensor<4>, Tensor<1, Bool>) {
        let device = xs.device();
        let [b, c, h, w] = xs.dims();
        let mut settled: Vec<Option<Vec<f32>>> = vec![None; b];
        let groups = targets.len().max(1);
        let per_round = (self.stack_rows / b.max(1)).clamp(1, groups);
        let total = groups * self.iterations;
        let label = self.label.clone();
        let mut first = 0;
        while first < groups {
            let active: Vec<usize> = (0..b).filter(|&e| settled[e].is_none()).collect();
            if active.is_empty() {
                break;
            }
            let round: Vec<usize> = (first..(first + per_round).min(groups)).collect();
            let idx = index_tensor(&active, &device);
            let (x_a, y_a) = (xs.clone().select(0, idx.clone()), ys.clone().select(0, idx));
            let ids_a: Vec<u64> = active.iter().map(|&e| ids[e]).collect();
            let mut owner = Vec::with_capacity(round.len() * active.len());
            let mut xs_r = Vec::with_capacity(round.len());
            let mut ys_r = Vec::with_capacity(round.len());
            let mut ts = Vec::with_capacity(round.len());
            let mut noise_r = Vec::with_capacity(round.len());
            for &g in &round {
                // Target k is the class with the (k+1)-th highest clean logit.
                if let Some(o) = order {
                    let k = targets[g];
                    let t: Vec<i64> = active.iter().map(|&e| o[e * classes + k]).collect();
                    ts.push(Tensor::<1, Int>::from_data(
                        TensorData::new(t, [active.len()]),
                        &device,
                    ));
                }
                let purpose = (g * 1000 + restart) as u64;
                noise_r.push(noise(
                    self.seed,
                    purpose,
                    &ids_a,
                    x_a.dims(),
                    Noise::Uniform(-1.0, 1.0),
                    &device,
                ));
                xs_r.push(x_a.clone());
                ys_r.push(y_a.clone());
                owner.extend(0..active.len());
            }
            let target = (!ts.is_empty()).then(|| Tensor::cat(ts, 0));
            let done_before = first * self.iterations;
            let width = round.len();
            let found = self.run_rows(
                model,
                Tensor::cat(xs_r, 0),
                Tensor::cat(ys_r, 0),
                target,
                Tensor::cat(noise_r, 0),
                owner,
                active.len(),
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
            first += round.len();
        }
        let x_host = to_f32s(xs.clone());
        super::util::settled_batch(&settled, &x_host, [b, c, h, w], &device)
    }
}

/// Per-row state of an APGD run.
struct Rows {
    x: Tensor<4>,
    ball: Ball,
    y: Tensor<1, Int>,
    target: Option<Tensor<1, Int>>,
    x_adv: Tensor<4>,
    x_old: Tensor<4>,
    grad: Tensor<4>,
    x_best: Tensor<4>,
    grad_best: Tensor<4>,
    loss_best: Tensor<1>,
    step: Tensor<1>,
    increases: Tensor<1>,
    prev_loss: Tensor<1>,
    loss_best_last_check: Tensor<1>,
    reduced_last_check: Tensor<1, Bool>,
}

impl Rows {
    /// Drops the rows of settled examples (after `found` new ones); `None` when none is left.
    fn keep(
        self,
        found: bool,
        owner: &mut Vec<usize>,
        settled: &[Option<Vec<f32>>],
    ) -> Option<Self> {
        if !found {
            return Some(self);
        }
        let keep: Vec<usize> = (0..owner.len())
            .filter(|&r| settled[owner[r]].is_none())
            .collect();
        if keep.is_empty() {
            return None;
        }
        *owner = keep.iter().map(|&r| owner[r]).collect();
        let idx = index_tensor(&keep, &self.x.device());
        let sel4 = |t: Tensor<4>| t.select(0, idx.clone());
        let sel1 = |t: Tensor<1>| t.select(0, idx.clone());
        Some(Rows {
            ball: self.ball.select(idx.clone()),
            x: sel4(self.x),
            y: self.y.select(0, idx.clone()),
            target: self.target.map(|t| t.select(0, idx.clone())),
            x_adv: sel4(self.x_adv),
            x_old: sel4(self.x_old),
            grad: sel4(self.grad),
            x_best: sel4(self.x_best),
            grad_best: sel4(self.grad_best),
            loss_best: sel1(self.loss_best),
            step: sel1(self.step),
            increases: sel1(self.increases),
            prev_loss: sel1(self.prev_loss),
            loss_best_last_check: sel1(self.loss_best_last_check),
            reduced_last_check: self.reduced_last_check.select(0, idx),
        })
    }
}

/// Records the first adversarial point of each example among the rows misclassified now
/// (lower rows, i.e. earlier targets, first); true if any example was newly settled.
fn settle(
    x_adv: &Tensor<4>,
    wrong: Tensor<1, Bool>,
    owner: &[usize],
    settled: &mut [Option<Vec<f32>>],
) -> bool {
    let wrong = to_bools(wrong);
    let mut newly: Vec<usize> = Vec::new();
    let mut taken = vec![false; settled.len()];
    for (r, &bad) in wrong.iter().enumerate() {
        let e = owner[r];
        if bad && settled[e].is_none() && !taken[e] {
            taken[e] = true;
            newly.push(r);
        }
    }
    if newly.is_empty() {
        return false;
    }
    let n: usize = x_adv.dims()[1..].iter().product();
    let points = to_f32s(
        x_adv
            .clone()
            .select(0, index_tensor(&newly, &x_adv.device())),
    );
    for (slot, &r) in newly.iter().enumerate() {
        settled[owner[r]] = Some(points[slot * n..(slot + 1) * n].to_vec());
    }
    true
}

impl Attack for Apgd {
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
        // Target k is the class with the (k+1)-th highest clean logit.
        let (order, classes) = if self.loss == ApgdLoss::DlrTargeted {
            let o = model.logits(x.clone()).detach().argsort_descending(1);
            let classes = o.dims()[1];
            (
                Some(o.into_data().try_into_vec_as::<i64>().expect("int tensor")),
                classes,
            )
        } else {
            (None, 0)
        };
        let targets: Vec<usize> = match &order {
            Some(_) => (1..=self.target_classes.min(classes - 1)).collect(),
            None => Vec::new(),
        };
        let mut tracker = SubsetTracker::new(x.clone(), b);
        for restart in 0..self.restarts {
            tracker.attack(&y, ids, |xs, ys, idx, ids_sub| {
                let sub_order = order.as_ref().map(|o| {
                    to_i64s(idx)
                        .iter()
                        .flat_map(|&e| o[e as usize * classes..(e as usize + 1) * classes].to_vec())
                        .collect::<Vec<i64>>()
                });
                self.run_restart(
                    model,
                    &xs,
                    &ys,
                    sub_order.as_deref(),
                    classes,
                    &targets,
                    restart,
                    ids_sub,
                    observer,
                )
            });
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
