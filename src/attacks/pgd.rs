//! The one iterative sign-gradient engine (Madry et al. 2018, PGD under L-inf):
//! x'_{k+1} = Π(x'_k + step · sign(∇_{x'} L(f(x'_k)))), Π = clip to the ε-ball around the clean
//! x, then to [0,1]. FGSM, PGD_SAT, PGD_TRADES, CW-inf and every training method's inner
//! maximisation are configurations of it.

use super::losses;
use super::rng::{noise, Noise};
use super::util::{choose_rows, correct, input_grad, Ball};
use super::{Attack, Outcome};
use crate::models::Classifier;
use burn::prelude::*;

/// Where the iterate starts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Start {
    /// x' = x.
    None,
    /// x' = x + U(−ε, ε).
    Uniform,
    /// x' = x + std · N(0, I) (TRADES, RSLAD: std = 0.001).
    Gaussian { std: f64 },
}

/// The loss the iterate ascends.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum PgdLoss {
    CrossEntropy,
    /// CW-inf: −max(z_y − max_{i≠y} z_i + κ, 0).
    Margin {
        kappa: f64,
    },
    Dlr,
}

impl PgdLoss {
    pub fn per_example(&self, z: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
        match *self {
            PgdLoss::CrossEntropy => losses::cross_entropy(z, y),
            PgdLoss::Margin { kappa } => losses::cw_margin(z, y, kappa),
            PgdLoss::Dlr => losses::dlr(z, y),
        }
    }
}

/// Runs `steps` projected sign-gradient steps from `start` and returns the last iterate.
/// `start` must already lie in the ball (or, for the official codes that do not clip it, be
/// the raw start: the first projection happens after the first step, as in those codes).
pub fn ascend(
    model: &dyn Classifier,
    ball: &Ball,
    start: Tensor<4>,
    step_size: f64,
    steps: usize,
    loss: &dyn Fn(Tensor<2>) -> Tensor<1>,
) -> Tensor<4> {
    let mut x_adv = start;
    for _ in 0..steps {
        let (g, _, _) = input_grad(model, x_adv.clone(), loss);
        x_adv = ball.project(x_adv + g.sign().mul_scalar(step_size));
    }
    x_adv
}

/// The starting point `x + noise`, drawn per example; clipped to [0,1] when `clip` is set.
pub fn start_point(
    x: &Tensor<4>,
    start: Start,
    eps: f64,
    seed: u64,
    purpose: u64,
    ids: &[u64],
    clip: bool,
) -> Tensor<4> {
    let kind = match start {
        Start::None => return x.clone(),
        Start::Uniform => Noise::Uniform(-eps as f32, eps as f32),
        Start::Gaussian { std } => Noise::Gaussian(std as f32),
    };
    let x0 = x.clone() + noise(seed, purpose, ids, x.dims(), kind, &x.device());
    if clip {
        x0.clamp(0.0, 1.0)
    } else {
        x0
    }
}

/// PGD with restarts as an evaluation attack.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pgd {
    #[serde(skip)]
    pub label: String,
    /// L-inf radius on the [0,1] pixel scale.
    pub eps: f64,
    pub step_size: f64,
    pub steps: usize,
    pub start: Start,
    /// Clip the random start to [0,1] before the first step (Madry's PGD); TRADES'
    /// `pgd_attack_cifar10.py` does not, so its first gradient may be taken outside [0,1].
    pub clip_start: bool,
    pub loss: PgdLoss,
    /// Extra runs from fresh random starts on the points that survived the previous ones.
    pub restarts: usize,
    pub seed: u64,
}

impl Attack for Pgd {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("settings serialise")
    }

    fn run(&self, model: &dyn Classifier, x: Tensor<4>, y: Tensor<1, Int>, ids: &[u64]) -> Outcome {
        let ball = Ball::new(&x, self.eps);
        let loss = |z: Tensor<2>| self.loss.per_example(z, y.clone());
        let mut best = None::<(Tensor<4>, Tensor<1, Bool>)>;
        for restart in 0..self.restarts.max(1) {
            let x0 = start_point(
                &x,
                self.start,
                self.eps,
                self.seed,
                restart as u64,
                ids,
                self.clip_start,
            );
            let x_adv = ascend(model, &ball, x0, self.step_size, self.steps, &loss);
            let robust = correct(model, x_adv.clone(), y.clone());
            best = Some(match best {
                None => (x_adv, robust),
                // Keep an earlier restart's adversarial point where it already broke the model.
                Some((prev, prev_robust)) => {
                    let adv = choose_rows(prev_robust.clone(), x_adv, prev);
                    let still = prev_robust.bool_and(robust);
                    (adv, still)
                }
            });
            if self.start == Start::None {
                break; // deterministic: a restart would repeat the same run
            }
        }
        Outcome::plain(best.expect("at least one run").0)
    }
}
