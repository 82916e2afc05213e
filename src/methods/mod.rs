//! Training objectives (docs/spec/methods.md). A [`Method`] builds its adversarial inputs for a
//! batch (its inner maximisation) and returns the outer loss to minimise. Methods use the
//! attack engine and never touch the optimizer, files or the command line.

pub mod ard;
pub mod iad;
pub mod kl;
pub mod natural;
#[cfg(test)]
pub mod probe;
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

/// The methods: adding one is its file (with its [`MethodEntry`]) and a line here. Every
/// list of method names, teacher rule and "unknown method" message is derived from it.
pub const METHODS: &[&MethodEntry] = &[
    &natural::ENTRY,
    &sat::ENTRY,
    &trades::ENTRY,
    &ard::ENTRY,
    &iad::ENTRY,
    &rslad::ENTRY,
    // A method that exists for the registry's own tests: one file, one hyperparameter.
    #[cfg(test)]
    &probe::ENTRY,
];

/// What the trainer, the command line, the TOML config and experiments know of a method;
/// each method file exports its own as `ENTRY`.
#[derive(Debug)]
pub struct MethodEntry {
    pub name: &'static str,
    /// Trains against an inner attack (every method but natural training).
    pub robust: bool,
    /// Distills a teacher: it needs `teacher` and `teacher_model`, and an experiment gives it
    /// the experiment's teacher.
    pub needs_teacher: bool,
    /// The method settings it reads (keys of the train settings, `TrainOverrides`) beyond the
    /// inner attack's: `kl_reduction` here allows an experiment's `NAME:batchmean`;
    /// `bn_passes` says the official code runs extra student passes; `iad_begin` that the
    /// introspection start epoch must come before the last epoch.
    pub reads: &'static [&'static str],
    /// Hyperparameters of its own: each is a setting (flag, TOML key, experiment
    /// `[methods.NAME]` key) and is recorded in `config.toml` under `[method.params]`.
    pub params: &'static [Param],
    /// Its spec defaults where they differ from the common ones of
    /// [`MethodConfig::defaults`] (docs/spec/methods.md).
    pub defaults: fn(&mut MethodConfig, DatasetKind, usize),
    /// The factor on its KL terms for a dataset and reduction (1 for most methods).
    pub kl_scale: fn(DatasetKind, KlReduction) -> f64,
    pub build: fn(MethodConfig) -> Box<dyn Method>,
}

impl MethodEntry {
    /// Whether the method reads the setting `key` (one of its own hyperparameters included).
    pub fn reads(&self, key: &str) -> bool {
        self.reads.contains(&key) || self.param(key).is_some()
    }

    /// Whether a run of this method can be changed by the setting `key`: the inner attack's
    /// settings only where it trains against one, the teacher only where it distills one, the
    /// methods' hyperparameters only where it [`reads`](Self::reads) them, every other setting
    /// (schedule, data, model) always.
    pub fn uses(&self, key: &str) -> bool {
        const ATTACK: [&str; 4] = ["eps", "attack_steps", "attack_step_size", "attack_bn"];
        const HYPER: [&str; 6] = [
            "beta",
            "alpha",
            "temperature",
            "kl_reduction",
            "bn_passes",
            "iad_begin",
        ];
        if ATTACK.contains(&key) {
            self.robust
        } else if key == "teacher" || key == "teacher_model" {
            self.needs_teacher
        } else if HYPER.contains(&key) || params().iter().any(|p| p.key == key) {
            self.reads(key)
        } else {
            true
        }
    }

    pub fn param(&self, key: &str) -> Option<&'static Param> {
        self.params.iter().find(|p| p.key == key)
    }
}

/// A method's own hyperparameter (a number). Adding one to a method is a line in its
/// [`MethodEntry::params`]; the method reads it with [`MethodConfig::param`].
#[derive(Debug)]
pub struct Param {
    /// Its key in files and settings; the flag is the key with `-` for `_`.
    pub key: &'static str,
    pub help: &'static str,
    pub default: f64,
    /// Whether a value is allowed, and the message's "must be ..." when it is not.
    pub valid: fn(f64) -> bool,
    pub want: &'static str,
}

/// Every method's own hyperparameter, each key once (methods may share a key).
pub fn params() -> Vec<&'static Param> {
    let mut all: Vec<&'static Param> = Vec::new();
    for p in METHODS.iter().flat_map(|m| m.params) {
        if all.iter().all(|q| q.key != p.key) {
            all.push(p);
        }
    }
    all
}

/// The methods that have the hyperparameter `key`, for help lines.
pub fn methods_with_param(key: &str) -> Vec<&'static str> {
    METHODS
        .iter()
        .filter(|m| m.param(key).is_some())
        .map(|m| m.name)
        .collect()
}

/// A method name not in [`METHODS`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown method '{name}'; known: {}", known_methods())]
pub struct UnknownMethod {
    pub name: String,
}

/// The registered names, comma-separated, for messages and help.
pub fn known_methods() -> String {
    METHODS
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The registry entry of `name`.
pub fn lookup(name: &str) -> Result<&'static MethodEntry, UnknownMethod> {
    METHODS
        .iter()
        .copied()
        .find(|m| m.name == name)
        .ok_or_else(|| UnknownMethod {
            name: name.to_string(),
        })
}

/// Defaults every method keeps unless its entry changes them.
fn no_defaults(_: &mut MethodConfig, _: DatasetKind, _: usize) {}

/// No factor on the KL terms.
fn unscaled(_: DatasetKind, _: KlReduction) -> f64 {
    1.0
}

pub fn build(config: &MethodConfig) -> Result<Box<dyn Method>, UnknownMethod> {
    let entry = lookup(&config.name)?;
    Ok((entry.build)(config.clone()))
}

/// BatchNorm mode of the student during the inner attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl std::fmt::Display for AttackBn {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            AttackBn::Train => "train",
            AttackBn::Eval => "eval",
        })
    }
}

crate::units::serde_as_text!(AttackBn);

/// Which student forward passes in training mode a step runs, each one updating the BatchNorm
/// running statistics the evaluated model keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl std::fmt::Display for BnPasses {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            BnPasses::Official => "official",
            BnPasses::Minimal => "minimal",
        })
    }
}

crate::units::serde_as_text!(BnPasses);

fn one() -> f64 {
    1.0
}

/// The factor on the KL terms of method `name` (RSLAD's ×10 on CIFAR-100 with the official
/// reduction, [`rslad::kl_scale`]; 1 for the others and for unknown names).
pub fn kl_scale(name: &str, dataset: DatasetKind, reduction: KlReduction) -> f64 {
    lookup(name).map_or(1.0, |m| (m.kl_scale)(dataset, reduction))
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
    /// [`kl_scale`]); 1 in configs written before it was recorded.
    #[serde(default = "one")]
    pub kl_scale: f64,
    /// Student passes per step (see [`BnPasses`]).
    #[serde(default = "BnPasses::recorded_before_the_option")]
    pub bn_passes: BnPasses,
    /// IAD: first epoch (from 0) with the introspection term.
    pub iad_begin: usize,
    /// The method's own hyperparameters ([`MethodEntry::params`]); absent, not empty, for the
    /// methods that have none, so their recorded configs read as before.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, f64>,
}

impl MethodConfig {
    /// The spec's values for `name` on `dataset`, trained for `epochs` epochs: the common
    /// ones, then the method's own ([`MethodEntry::defaults`]).
    pub fn defaults(name: &str, dataset: DatasetKind, epochs: usize) -> Self {
        let eps = dataset.default_eps();
        let mut config = MethodConfig {
            name: name.to_string(),
            eps,
            attack_steps: 10,
            // 2/255 at ε = 8/255; ε/4 = 0.025 at Fashion-MNIST's ε = 0.1.
            attack_step_size: eps / 4.0,
            attack_bn: AttackBn::Eval,
            beta: 6.0,
            alpha: 1.0,
            temperature: 1.0,
            kl_reduction: KlReduction::Official,
            kl_scale: kl_scale(name, dataset, KlReduction::Official),
            bn_passes: BnPasses::Official,
            // 60 of IAD's 200 epochs; scaled for shorter runs.
            iad_begin: if epochs >= 200 {
                60
            } else {
                (epochs as f64 * 0.3).round() as usize
            },
            params: Default::default(),
        };
        if let Ok(entry) = lookup(name) {
            for p in entry.params {
                config.params.insert(p.key.to_string(), p.default);
            }
            (entry.defaults)(&mut config, dataset, epochs);
        }
        config
    }

    /// The registry entry of this method.
    pub fn entry(&self) -> Result<&'static MethodEntry, UnknownMethod> {
        lookup(&self.name)
    }

    pub fn needs_teacher(&self) -> bool {
        self.entry().is_ok_and(|m| m.needs_teacher)
    }

    pub fn is_robust(&self) -> bool {
        self.entry().map_or(self.name != "natural", |m| m.robust)
    }

    /// The value of the method's own hyperparameter `key` (resolved configs hold every one
    /// of the method's [`MethodEntry::params`]).
    pub fn param(&self, key: &str) -> f64 {
        *self
            .params
            .get(key)
            .unwrap_or_else(|| panic!("method {} has no hyperparameter {key}", self.name))
    }

    /// Whether the method reads the setting `key` (see [`MethodEntry::reads`]).
    pub fn reads(&self, key: &str) -> bool {
        self.entry().is_ok_and(|m| m.reads(key))
    }

    /// This config with the settings that cannot change what the method trains set to fixed
    /// values: the introspection start (derived from the epoch count) for a method that does
    /// not read it, and the BatchNorm passes for one whose official code runs no extra pass
    /// (runs recorded before the option read as `minimal`). Two runs of the same method are
    /// the same run when these agree.
    pub fn comparable(&self) -> Self {
        let mut c = self.clone();
        if !self.reads("iad_begin") {
            c.iad_begin = 0;
        }
        if !self.reads("bn_passes") {
            c.bn_passes = BnPasses::Official;
        }
        c
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are unique and each entry builds its own method (that every key a method reads
    /// is a setting is checked where the settings live, `train::config`).
    #[test]
    fn registry_entries_are_consistent() {
        for (i, m) in METHODS.iter().enumerate() {
            assert!(
                METHODS[..i].iter().all(|o| o.name != m.name),
                "{} twice",
                m.name
            );
            assert_eq!(lookup(m.name).unwrap().name, m.name);
            let c = MethodConfig::defaults(m.name, DatasetKind::FashionMnist, 10);
            assert_eq!(build(&c).unwrap().config().name, m.name);
        }
        let e = lookup("magic").unwrap_err().to_string();
        assert!(e.contains("magic") && e.contains("rslad"), "{e}");
        assert!(build(&MethodConfig::defaults("magic", DatasetKind::Cifar10, 1)).is_err());
    }

    /// The defaults each entry sets are the spec's (docs/spec/methods.md).
    #[test]
    fn entries_keep_the_spec_defaults() {
        let d = |name| MethodConfig::defaults(name, DatasetKind::Cifar100, 200);
        assert_eq!(d("ard").attack_bn, AttackBn::Train);
        assert_eq!(d("ard").temperature, 30.0);
        assert_eq!((d("iad").beta, d("iad").attack_bn), (0.1, AttackBn::Train));
        assert_eq!(d("iad").iad_begin, 60);
        assert_eq!(
            (d("trades").beta, d("trades").attack_bn),
            (6.0, AttackBn::Eval)
        );
        assert_eq!(d("rslad").kl_scale, 10.0);
        assert_eq!(
            kl_scale("rslad", DatasetKind::Cifar100, KlReduction::Batchmean),
            1.0
        );
        assert_eq!(d("ard").kl_scale, 1.0);
        let needs: Vec<&str> = METHODS
            .iter()
            .filter(|m| m.needs_teacher)
            .map(|m| m.name)
            .collect();
        assert_eq!(needs, ["ard", "iad", "rslad"]);
        assert!(!d("natural").is_robust() && d("sat").is_robust());
    }
}
