//! Training objectives (docs/spec/methods.md). A [`Method`] builds its adversarial inputs for a
//! batch (its inner maximisation) and returns the outer loss to minimise. Methods use the
//! attack engine and never touch the optimizer, files or the command line.

pub mod ard;
pub mod iad;
pub mod kl;
pub mod natural;
pub mod rslad;
pub mod sat;
pub mod trades;

use crate::attacks::pgd::{ascend, start_point, Start};
use crate::attacks::util::Ball;
use crate::data::DatasetKind;
use crate::models::{Classifier, Model};
use burn::module::Module;
use burn::prelude::*;
pub use kl::KlReduction;

/// The methods by name: adding one is a file and a line here.
pub const METHODS: &[&str] = &["natural", "sat", "trades", "ard", "iad", "rslad"];

pub fn build(config: &MethodConfig) -> Result<Box<dyn Method>, String> {
    let m: Box<dyn Method> = match config.name.as_str() {
        "natural" => Box::new(natural::Natural(config.clone())),
        "sat" => Box::new(sat::Sat(config.clone())),
        "trades" => Box::new(trades::Trades(config.clone())),
        "ard" => Box::new(ard::Ard(config.clone())),
        "iad" => Box::new(iad::Iad(config.clone())),
        "rslad" => Box::new(rslad::Rslad(config.clone())),
        other => {
            return Err(format!(
                "unknown method '{other}'; known: {}",
                METHODS.join(", ")
            ))
        }
    };
    Ok(m)
}

/// BatchNorm mode of the student during the inner attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttackBn {
    /// Batch statistics, running statistics updated (ARD's and IAD's official code).
    Train,
    /// Running statistics (a `valid()` snapshot); the training module is left untouched.
    Eval,
}

impl std::str::FromStr for AttackBn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(AttackBn::Train),
            "eval" => Ok(AttackBn::Eval),
            _ => Err(format!("attack BN mode '{s}' is not train or eval")),
        }
    }
}

/// Which student forward passes in training mode a step runs, each one updating the BatchNorm
/// running statistics the evaluated model keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnPasses {
    /// Every pass the official code runs, used or not: ARD's clean pass even at α = 1, IAD's
    /// clean pass (and a second one in the introspection phase), TRADES' clean batch twice
    /// (docs/spec/methods.md).
    Official,
    /// Only the passes whose output enters the loss (rslad before 2026-11-28).
    Minimal,
}

impl BnPasses {
    /// What a recorded config without the key ran: configs written before the option existed.
    fn recorded_before_the_option() -> Self {
        BnPasses::Minimal
    }
}

impl std::str::FromStr for BnPasses {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "official" => Ok(BnPasses::Official),
            "minimal" => Ok(BnPasses::Minimal),
            _ => Err(format!("BatchNorm passes '{s}' is not official or minimal")),
        }
    }
}

fn one() -> f64 {
    1.0
}

/// The factor on RSLAD's two KL terms. The official CIFAR-100 scripts multiply each
/// element-mean KL by 10 (`resnet18_rslad_cifar100.py`: "to keep consistent with CIFAR-10"),
/// undoing the extra 1/10 of a mean over C = 100 classes instead of 10; the batch-mean KL has
/// no 1/C and needs no factor (docs/spec/methods.md, RSLAD).
pub fn rslad_kl_scale(name: &str, dataset: DatasetKind, reduction: KlReduction) -> f64 {
    if name == "rslad" && dataset == DatasetKind::Cifar100 && reduction == KlReduction::Official {
        10.0
    } else {
        1.0
    }
}

/// Every hyperparameter of every method; each method reads the ones it uses. Defaults follow
/// the spec (see [`MethodConfig::defaults`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    pub name: String,
    /// L-inf radius of the inner attack, [0,1] pixel scale.
    pub eps: f64,
    pub attack_steps: usize,
    pub attack_step_size: f64,
    pub attack_bn: AttackBn,
    /// TRADES: weight of the robust KL (β = 6). IAD: exponent of the teacher's trust (β = 0.1).
    pub beta: f64,
    /// ARD / IAD: weight of the distillation terms against CE (α = 1).
    pub alpha: f64,
    /// ARD (τ = 30) / IAD (τ = 1).
    pub temperature: f64,
    /// ARD / RSLAD: reduction of the KL terms.
    pub kl_reduction: KlReduction,
    /// RSLAD: factor on both KL terms (10 on CIFAR-100 with the official reduction, see
    /// [`rslad_kl_scale`]); 1 in configs written before it was recorded.
    #[serde(default = "one")]
    pub kl_scale: f64,
    /// Student passes per step (see [`BnPasses`]).
    #[serde(default = "BnPasses::recorded_before_the_option")]
    pub bn_passes: BnPasses,
    /// IAD: first epoch (from 0) with the introspection term.
    pub iad_begin: usize,
}

impl MethodConfig {
    /// The spec's values for `name` on `dataset`, trained for `epochs` epochs.
    pub fn defaults(name: &str, dataset: DatasetKind, epochs: usize) -> Self {
        let eps = dataset.default_eps();
        MethodConfig {
            name: name.to_string(),
            eps,
            attack_steps: 10,
            // 2/255 at ε = 8/255; ε/4 = 0.025 at Fashion-MNIST's ε = 0.1.
            attack_step_size: eps / 4.0,
            attack_bn: if matches!(name, "ard" | "iad") {
                AttackBn::Train
            } else {
                AttackBn::Eval
            },
            beta: if name == "iad" { 0.1 } else { 6.0 },
            alpha: 1.0,
            temperature: if name == "ard" { 30.0 } else { 1.0 },
            kl_reduction: KlReduction::Official,
            kl_scale: rslad_kl_scale(name, dataset, KlReduction::Official),
            bn_passes: BnPasses::Official,
            // 60 of IAD's 200 epochs; scaled for shorter runs.
            iad_begin: if epochs >= 200 {
                60
            } else {
                (epochs as f64 * 0.3).round() as usize
            },
        }
    }

    pub fn needs_teacher(&self) -> bool {
        matches!(self.name.as_str(), "ard" | "iad" | "rslad")
    }

    pub fn is_robust(&self) -> bool {
        self.name != "natural"
    }
}

/// One training batch as a method sees it. `x` lives on the plain (non-autodiff) device.
pub struct StepInput<'a> {
    pub x: Tensor<4>,
    pub y: Tensor<1, Int>,
    /// Dataset indices of the batch's examples (seed their random starts).
    pub ids: &'a [u64],
    /// Epoch, counted from 0.
    pub epoch: usize,
    /// Seed for this batch's randomness.
    pub seed: u64,
    /// T(x): the teacher's logits on the clean batch, computed once per batch without a
    /// graph (distillation methods only).
    pub teacher_logits: Option<Tensor<2>>,
}

pub struct StepOutput {
    /// The scalar outer loss, with a graph to the student's weights.
    pub loss: Tensor<1>,
    /// Student logits on the inputs it is trained on (for the training accuracy).
    pub logits: Tensor<2>,
}

/// A method's inner maximisation: the per-example objective it ascends and where it starts.
pub struct Inner<'a> {
    pub objective: Box<dyn Fn(Tensor<2>) -> Tensor<1> + 'a>,
    pub start: Start,
    /// Clip the start to [0,1] (SAT); the TRADES, ARD, IAD and RSLAD codes do not.
    pub clip_start: bool,
}

pub trait Method: Send {
    fn config(&self) -> &MethodConfig;

    /// The inner maximisation of this batch, or `None` (natural training).
    fn inner<'a>(&self, student: &Model, input: &'a StepInput) -> Option<Inner<'a>>;

    /// The outer loss given the adversarial inputs. `student` is the training module
    /// (autodiff, training mode); `teacher` is an eval-mode model without gradients.
    fn outer(
        &self,
        student: &Model,
        teacher: Option<&Model>,
        input: &StepInput,
        x_adv: Option<Tensor<4>>,
    ) -> StepOutput;
}

/// One training step of `method`: inner maximisation, then the outer loss.
pub fn step(
    method: &dyn Method,
    student: &Model,
    teacher: Option<&Model>,
    input: &StepInput,
) -> StepOutput {
    let x_adv = method
        .inner(student, input)
        .map(|inner| run_inner(student, method.config(), input, &inner));
    method.outer(student, teacher, input, x_adv)
}

/// The student's forward pass in training mode (BatchNorm on batch statistics).
pub fn train_forward(student: &Model, x: Tensor<4>) -> Tensor<2> {
    student.forward(x.autodiff())
}

/// Teacher logits without a graph (the teacher is an eval-mode snapshot on the plain device).
pub fn teacher_logits(teacher: &Model, x: Tensor<4>) -> Tensor<2> {
    teacher.logits(x.without_autodiff()).detach()
}

/// Runs an inner maximisation: `attack_steps` sign-gradient steps of `attack_step_size`,
/// projected onto the ε-ball and [0,1], with the student's BatchNorm as `attack_bn` says. The
/// training module itself stays in training mode.
pub fn run_inner(
    student: &Model,
    cfg: &MethodConfig,
    input: &StepInput,
    inner: &Inner,
) -> Tensor<4> {
    let x = input.x.clone();
    let ball = Ball::new(&x, cfg.eps);
    let x0 = start_point(
        &x,
        inner.start,
        cfg.eps,
        input.seed,
        0,
        input.ids,
        inner.clip_start,
    );
    let loss = &*inner.objective;
    let adv = match cfg.attack_bn {
        AttackBn::Eval => ascend(
            &student.valid(),
            &ball,
            x0,
            cfg.attack_step_size,
            cfg.attack_steps,
            loss,
        ),
        // Batch statistics, running statistics updated, no weight gradients.
        AttackBn::Train => ascend(
            &student.clone().no_grad(),
            &ball,
            x0,
            cfg.attack_step_size,
            cfg.attack_steps,
            loss,
        ),
    };
    adv.detach().without_autodiff()
}

/// The inner maximisation of SAT, ARD and IAD: CE(S(x'), y) from x + U(−ε, ε), clipped to
/// [0,1] first only in SAT's code.
pub fn ce_inner<'a>(input: &'a StepInput, clip_start: bool) -> Inner<'a> {
    Inner {
        objective: Box::new(move |z| crate::attacks::losses::cross_entropy(z, input.y.clone())),
        start: Start::Uniform,
        clip_start,
    }
}

/// Cross-entropy, batch mean, on the autodiff device.
pub fn ce_mean(z: Tensor<2>, y: &Tensor<1, Int>) -> Tensor<1> {
    crate::attacks::losses::cross_entropy(z, y.clone().autodiff()).mean()
}
