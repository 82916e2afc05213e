//! The one iterative sign-gradient engine (Madry et al. 2018, PGD under L-inf):
//! x'_{k+1} = Π(x'_k + step · sign(∇_{x'} L(f(x'_k)))), Π = clip to the ε-ball around the clean
//! x, then to [0,1]. FGSM, PGD_SAT, PGD_TRADES, CW-inf and every training method's inner
//! maximisation are configurations of it.

use super::losses;
use super::parse::AttackOptions;
use super::registry::{AttackEntry, Input, OptionDefault, OptionKind, OptionSpec};
use super::rng::{noise, Noise};
use super::util::{choose_rows, correct, input_grad, Ball};
use super::{Attack, AttackError, Outcome};
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

/// The PGD configurations known by name (docs/spec/attacks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// One step of ε from the clean point.
    Fgsm,
    /// Madry's PGD-20, step ε/4, uniform start (`pgd`; its label names its steps once changed).
    Pgd,
    /// PGD_SAT: as `Pgd`, under its own label.
    Sat,
    /// PGD_TRADES: 20 steps of 0.003 at ε = 8/255, start x + U(−ε, ε) not clipped before the
    /// first step.
    Trades,
    /// CW-inf: the margin loss with κ = 50, 20 steps of ε/4.
    Cw,
}

/// Step size of PGD_TRADES relative to ε: 0.003 at ε = 8/255 (TRADES' `pgd_attack_cifar10.py`).
pub const TRADES_STEP_RATIO: f64 = 0.003 / (8.0 / 255.0);

impl Pgd {
    /// The preset at radius `eps`, one run (no restarts).
    pub fn preset(preset: Preset, eps: f64, seed: u64) -> Pgd {
        let (label, steps, step_size, start, loss) = match preset {
            Preset::Fgsm => ("FGSM", 1, eps, Start::None, PgdLoss::CrossEntropy),
            Preset::Pgd => ("PGD", 20, eps / 4.0, Start::Uniform, PgdLoss::CrossEntropy),
            Preset::Sat => (
                "PGD_SAT",
                20,
                eps / 4.0,
                Start::Uniform,
                PgdLoss::CrossEntropy,
            ),
            // The current TRADES script starts at x + U(−ε, ε), not clipped before the first
            // step (docs/spec/attacks.md, PGD_TRADES); `start=none` gives the early script's zero
            // start.
            Preset::Trades => (
                "PGD_TRADES",
                20,
                eps * TRADES_STEP_RATIO,
                Start::Uniform,
                PgdLoss::CrossEntropy,
            ),
            Preset::Cw => (
                "CW",
                20,
                eps / 4.0,
                Start::Uniform,
                PgdLoss::Margin { kappa: 50.0 },
            ),
        };
        Pgd {
            label: label.to_string(),
            eps,
            step_size,
            steps,
            start,
            clip_start: preset != Preset::Trades,
            loss,
            restarts: 1,
            seed,
        }
    }

    /// The preset with the options of an attack list applied.
    fn from_options(
        preset: Preset,
        o: &AttackOptions,
    ) -> Result<Vec<Box<dyn Attack>>, AttackError> {
        let mut p = Pgd::preset(preset, o.eps(), o.seed());
        if let Some(v) = o.count("steps") {
            p.steps = v;
        }
        if let Some(v) = o.number("step") {
            p.step_size = v;
        }
        if let Some(v) = o.count("restarts") {
            p.restarts = v;
        }
        if let Some(v) = o.word("start") {
            p.start = match v {
                "none" => Start::None,
                "uniform" => Start::Uniform,
                _ => Start::Gaussian { std: 0.001 },
            }
        }
        if let Some(v) = o.word("loss") {
            p.loss = match v {
                "ce" => PgdLoss::CrossEntropy,
                "dlr" => PgdLoss::Dlr,
                _ => {
                    let kappa = o.number("kappa").unwrap_or(50.0);
                    // Below 0 the clamped margin is flat before the example is misclassified:
                    // the attack would stop short of the boundary it is meant to cross.
                    if kappa < 0.0 {
                        return Err(o.bad(format!(
                            "kappa={kappa} must be at least 0 (the margin loss would stop \
                             before the class changes)"
                        )));
                    }
                    PgdLoss::Margin { kappa }
                }
            }
        }
        if preset == Preset::Pgd && o.any_given() {
            p.label = format!("PGD-{}", p.steps);
        }
        Ok(vec![Box::new(p)])
    }
}

/// The options of every PGD preset; only the defaults differ.
const fn options(
    steps: &'static str,
    step: OptionDefault,
    start: &'static str,
    loss: &'static str,
) -> [OptionSpec; 6] {
    [
        OptionSpec {
            key: "steps",
            kind: OptionKind::Count,
            default: OptionDefault::Value(steps),
            help: "iterations",
            requires: None,
        },
        OptionSpec {
            key: "step",
            kind: OptionKind::Step,
            default: step,
            help: "step size",
            requires: None,
        },
        super::registry::RESTARTS,
        OptionSpec {
            key: "start",
            kind: OptionKind::Choice(&["none", "uniform", "gaussian"]),
            default: OptionDefault::Value(start),
            help: "start: x, x + U(-eps, eps), or x + 0.001 N(0, I)",
            requires: None,
        },
        OptionSpec {
            key: "loss",
            kind: OptionKind::Choice(&["ce", "cw", "margin", "dlr"]),
            default: OptionDefault::Value(loss),
            help: "cross-entropy, CW margin (cw = margin), or DLR",
            requires: None,
        },
        OptionSpec {
            key: "kappa",
            kind: OptionKind::Number,
            default: OptionDefault::Value("50"),
            help: "the CW margin's confidence",
            requires: Some(("loss", "cw")),
        },
    ]
}

const EPS_4: OptionDefault = OptionDefault::EpsTimes(0.25, "eps/4");
const FGSM_OPTIONS: [OptionSpec; 6] =
    options("1", OptionDefault::EpsTimes(1.0, "eps"), "none", "ce");
const PGD_OPTIONS: [OptionSpec; 6] = options("20", EPS_4, "uniform", "ce");
const TRADES_OPTIONS: [OptionSpec; 6] = options(
    "20",
    OptionDefault::EpsTimes(TRADES_STEP_RATIO, "0.003 at eps=8/255"),
    "uniform",
    "ce",
);
const CW_OPTIONS: [OptionSpec; 6] = options("20", EPS_4, "uniform", "cw");

pub const FGSM: AttackEntry = AttackEntry {
    names: &["fgsm"],
    help: "FGSM: one signed-gradient step of eps from the clean point",
    input: Input::Options(&FGSM_OPTIONS),
    min_classes: 2,
    build: |o, _| Pgd::from_options(Preset::Fgsm, o),
};

pub const PGD: AttackEntry = AttackEntry {
    names: &["pgd"],
    help: "PGD-20 on cross-entropy, uniform start; labelled PGD-<steps> once an option is given",
    input: Input::Options(&PGD_OPTIONS),
    min_classes: 2,
    build: |o, _| Pgd::from_options(Preset::Pgd, o),
};

pub const PGD_SAT: AttackEntry = AttackEntry {
    names: &["pgd-sat"],
    help: "PGD_SAT (Madry et al.): 20 steps of eps/4 on cross-entropy, uniform start",
    input: Input::Options(&PGD_OPTIONS),
    min_classes: 2,
    build: |o, _| Pgd::from_options(Preset::Sat, o),
};

pub const PGD_TRADES: AttackEntry = AttackEntry {
    names: &["pgd-trades"],
    help: "PGD_TRADES: 20 steps of 0.003 at 8/255, start x + U(-eps, eps) not clipped to \
           [0,1] (start=none: the early script's zero start)",
    input: Input::Options(&TRADES_OPTIONS),
    min_classes: 2,
    build: |o, _| Pgd::from_options(Preset::Trades, o),
};

pub const CW: AttackEntry = AttackEntry {
    names: &["cw"],
    help: "CW-inf: PGD-20 of eps/4 on the CW margin loss with kappa = 50",
    input: Input::Options(&CW_OPTIONS),
    min_classes: 2,
    build: |o, _| Pgd::from_options(Preset::Cw, o),
};

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
