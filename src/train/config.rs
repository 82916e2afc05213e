//! The run configuration: one validated value built from defaults, an optional TOML file and
//! command-line flags (flags win), recorded as `config.toml` in the run directory.

use crate::data::DatasetKind;
use crate::methods::{AttackBn, BnPasses, KlReduction, MethodConfig};
use crate::models::Arch;
use crate::units::Fraction;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The settings that differ between two records of the same kind, as `key: old -> new` (nested
/// keys dotted, an absent key `unset`), leaving out the keys in `places` at any depth: they
/// name where things are, not what is computed. One wording for a changed run and a changed
/// experiment cell.
pub fn setting_changes<T: serde::Serialize>(old: &T, new: &T, places: &[&str]) -> Vec<String> {
    use serde_json::Value;
    fn flat(prefix: &str, v: Value, places: &[&str], into: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m.into_iter().filter(|(k, _)| !places.contains(&k.as_str())) {
                    flat(&format!("{prefix}{k}."), v, places, into);
                }
            }
            Value::Null => {}
            other => {
                into.insert(prefix.trim_end_matches('.').to_string(), other.to_string());
            }
        }
    }
    let entries = |t: &T| {
        let mut m = BTreeMap::new();
        flat(
            "",
            serde_json::to_value(t).expect("settings serialise"),
            places,
            &mut m,
        );
        m
    };
    let (a, b) = (entries(old), entries(new));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let value = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or("unset".into());
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {} -> {}", value(&a, k), value(&b, k)))
        .collect()
}

/// Everything needed to repeat a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub dataset: DatasetKind,
    pub data_dir: Option<PathBuf>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// Recorded by its canonical name (a name `Arch` parses, as in earlier configs).
    pub model: Arch,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Epochs (counted from 0) at whose start the learning rate is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    pub gamma: f64,
    pub seed: u64,
    pub augment: bool,
    pub teacher: Option<PathBuf>,
    pub teacher_model: Option<String>,
    /// Size of the fixed test slice (its first examples) for the per-epoch robust accuracy.
    pub monitor_examples: usize,
    pub eval_batch_size: usize,
    pub out: PathBuf,
    /// Written by rslad: the backend and device that ran.
    pub backend: String,
    pub rslad_version: String,
    pub method: MethodConfig,
}

/// Why a run configuration was refused. Messages name settings by their key (as a TOML file
/// spells them); the command line adds the flag ([`ConfigError::key`]).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no {key} given ({hint})")]
    Missing {
        key: &'static str,
        hint: &'static str,
    },
    #[error("{key} {value} must be {want}")]
    Invalid {
        key: &'static str,
        value: String,
        want: String,
    },
    #[error("{key}: {source}")]
    Quantity {
        key: &'static str,
        source: crate::units::UnitsError,
    },
    #[error("{key} is 0; it must be at least 1{why}")]
    Zero { key: &'static str, why: String },
    #[error("{key} is 0: no images would be used; leave it out to use all of them")]
    NoImages { key: &'static str },
    #[error("{key} is not a hyperparameter of method {method}")]
    NotAParam { key: String, method: String },
    #[error(transparent)]
    UnknownMethod(#[from] crate::methods::UnknownMethod),
    #[error(transparent)]
    Dataset(#[from] crate::data::DataError),
    #[error("model: {0}")]
    ModelSize(String),
    #[error(
        "method {method} distills a teacher: set teacher (--teacher FILE, an rslad checkpoint; \
         `rslad import` converts PyTorch ones) and teacher_model (--teacher-model NAME)"
    )]
    NoTeacher { method: String },
    #[error("method {method} learns from no teacher: leave teacher (--teacher) out")]
    UnusedTeacher { method: String },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{source}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Toml {
        path: Option<PathBuf>,
        source: toml::de::Error,
    },
}

impl ConfigError {
    /// The setting the error is about, if it is one setting.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            ConfigError::Missing { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::Quantity { key, .. }
            | ConfigError::Zero { key, .. }
            | ConfigError::NoImages { key } => Some(key),
            ConfigError::UnknownMethod(_) => Some("method"),
            ConfigError::Dataset(_) => Some("dataset"),
            ConfigError::ModelSize(_) => Some("model"),
            ConfigError::NoTeacher { .. } | ConfigError::UnusedTeacher { .. } => Some("teacher"),
            ConfigError::Read { .. } | ConfigError::Toml { .. } | ConfigError::NotAParam { .. } => {
                None
            }
        }
    }
}

/// For callers that still report errors as text.
impl From<ConfigError> for String {
    fn from(e: ConfigError) -> String {
        e.to_string()
    }
}

/// Where a setting may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// What an experiment's grid sets for each cell (method, model, seed, teacher, run
    /// directory, KL reduction): flags and a TOML file only.
    Grid,
    /// One value for a whole run or experiment (flags, a TOML file, an experiment's top).
    Cell,
    /// Also per method in an experiment (`[methods.trades] epochs = 100`): the baselines'
    /// official codes train on their own schedules and hyperparameters.
    Method,
}

/// One setting as the table below defines it: its TOML key (the flag is the key with `-`
/// for `_`), its help line and where it may be given.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub help: &'static str,
    pub scope: Scope,
    /// See [`SettingValue::SYNTAX`].
    pub syntax: bool,
}

impl Setting {
    /// The flag that gives it: `--eval-batch-size` for `eval_batch_size`.
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }
}

/// A setting's value as a flag spells it (a TOML file spells it the same through serde).
pub trait SettingValue: Sized + Clone + Send + Sync + 'static {
    /// Whether a bad spelling is a usage error of the command line (a number, a flag's
    /// syntax) rather than a value the configuration refuses (a name from a closed set).
    const SYNTAX: bool = true;
    fn from_text(text: &str) -> Result<Self, String>;
}

macro_rules! setting_value_from_str {
    ($syntax:literal: $($t:ty),*) => {$(
        impl SettingValue for $t {
            const SYNTAX: bool = $syntax;
            fn from_text(text: &str) -> Result<Self, String> {
                text.trim().parse::<$t>().map_err(|e| e.to_string())
            }
        }
    )*};
}
setting_value_from_str!(true: usize, u64, f64, bool);
setting_value_from_str!(false: Arch, AttackBn, KlReduction, BnPasses);

impl SettingValue for String {
    const SYNTAX: bool = false;
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
}

impl SettingValue for PathBuf {
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
}

impl SettingValue for Fraction {
    const SYNTAX: bool = false;
    /// Kept as given; parsed (and checked) when the configuration is resolved.
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(Fraction::from(text))
    }
}

/// Milestones: `215,260,285`, or `none` (or nothing) for a constant rate.
impl SettingValue for Vec<usize> {
    fn from_text(text: &str) -> Result<Self, String> {
        if text.trim() == "none" || text.trim().is_empty() {
            return Ok(Vec::new());
        }
        text.split(',')
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("milestone '{v}' is not an epoch number"))
            })
            .collect()
    }
}

/// Defines every setting once (doc = help line, key, type, scope) and generates from that
/// table the settings struct, [`SETTINGS`], the merge of two layers and the parsing of flag
/// text: a setting cannot have a key without a flag or be left out of the merge.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $key:ident: $ty:ty, $scope:ident; )+) => {
        /// Settings given by flags, a TOML file or an experiment; anything left out takes its
        /// default. Each source is a layer of this one struct, combined by
        /// [`TrainOverrides::merged`]; the table in src/train/config.rs defines every field,
        /// and the methods' own hyperparameters ([`crate::methods::Param`]) are `params`.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct TrainOverrides {
            $( $(#[doc = $doc])+ pub $key: Option<$ty>, )+
            /// The methods' own hyperparameters, by key (each a registered
            /// [`crate::methods::Param`]); a file spells them as top-level keys.
            pub params: BTreeMap<String, f64>,
        }

        /// Every setting, in the order of [`TrainOverrides`]' fields.
        pub const SETTINGS: &[Setting] = &[
            $( Setting {
                key: stringify!($key),
                help: concat!($($doc),+),
                scope: Scope::$scope,
                syntax: <$ty as SettingValue>::SYNTAX,
            }, )+
        ];

        const KEYS: &[&str] = &[$( stringify!($key) ),+];

        impl TrainOverrides {
            /// `self` with every setting that `newer` gives replaced.
            pub fn merged(mut self, newer: TrainOverrides) -> Self {
                $( if newer.$key.is_some() { self.$key = newer.$key; } )+
                self.params.extend(newer.params);
                self
            }

            /// `self` without `key` (a setting or a method parameter): it takes its default.
            pub fn without(mut self, key: &str) -> Self {
                match key {
                    $( stringify!($key) => self.$key = None, )+
                    _ => {
                        self.params.remove(key);
                    }
                }
                self
            }

            /// The keys of the settings this layer gives.
            pub fn given(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $( if self.$key.is_some() { keys.push(stringify!($key)); } )+
                keys.extend(param_keys(&self.params));
                keys
            }

            /// Sets `key` from its text as a flag spells it.
            pub fn set_text(&mut self, key: &str, text: &str) -> Result<(), String> {
                match key {
                    $( stringify!($key) => self.$key = Some(<$ty as SettingValue>::from_text(text)?), )+
                    _ => match crate::methods::params().into_iter().find(|p| p.key == key) {
                        Some(p) => {
                            self.params.insert(p.key.to_string(), f64::from_text(text)?);
                        }
                        None => return Err(format!("unknown setting '{key}'")),
                    },
                }
                Ok(())
            }
        }

        /// Written as the derived form would be (`null` in JSON for a setting not given,
        /// nothing in TOML), each method hyperparameter as a key of its own.
        impl serde::Serialize for TrainOverrides {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let params = param_keys(&self.params);
                let mut st = s.serialize_struct("TrainOverrides", KEYS.len() + params.len())?;
                $( st.serialize_field(stringify!($key), &self.$key)?; )+
                for key in params {
                    st.serialize_field(key, &self.params[key])?;
                }
                st.end()
            }
        }

        /// Reads every setting of the table and every registered method hyperparameter; any
        /// other key is an error that names it.
        impl<'de> serde::Deserialize<'de> for TrainOverrides {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl<'de> serde::de::Visitor<'de> for Visitor {
                    type Value = TrainOverrides;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a table of training settings")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<TrainOverrides, A::Error> {
                        let mut o = TrainOverrides::default();
                        while let Some(SettingKey(key)) = map.next_key::<SettingKey>()? {
                            match key.as_str() {
                                $( stringify!($key) => o.$key = map.next_value()?, )+
                                _ => {
                                    let v: f64 = map.next_value()?;
                                    o.params.insert(key, v);
                                }
                            }
                        }
                        Ok(o)
                    }
                }
                d.deserialize_map(Visitor)
            }
        }
    };
}

/// A settings key, read as an identifier so that an unknown one is refused where it stands
/// (a TOML error then points at the key).
struct SettingKey(String);

impl<'de> serde::Deserialize<'de> for SettingKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SettingKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a setting's key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<SettingKey, E> {
                let known =
                    KEYS.contains(&key) || crate::methods::params().iter().any(|p| p.key == key);
                if known {
                    Ok(SettingKey(key.to_string()))
                } else {
                    Err(E::unknown_field(key, KEYS))
                }
            }
        }
        d.deserialize_identifier(Visitor)
    }
}

/// The registered method hyperparameters among `params`, as their `'static` keys.
fn param_keys(params: &BTreeMap<String, f64>) -> Vec<&'static str> {
    crate::methods::params()
        .into_iter()
        .map(|p| p.key)
        .filter(|k| params.contains_key(*k))
        .collect()
}

settings! {
    /// Training method (default natural).
    method: String, Grid;
    /// fashion-mnist, cifar10 or cifar100.
    dataset: String, Cell;
    /// Folder with the dataset's files (default: the dataset's usual place).
    data_dir: PathBuf, Cell;
    /// Use only the first N training images.
    train_limit: usize, Cell;
    /// Use only the first N test images.
    test_limit: usize, Cell;
    /// Model name (see `rslad models`; default cnn-small on Fashion-MNIST, resnet18 on CIFAR).
    model: Arch, Grid;
    /// Epochs (default 10 on Fashion-MNIST, 300 on CIFAR).
    epochs: usize, Method;
    /// Training batch size (default 128).
    batch_size: usize, Method;
    /// Learning rate (default 0.1).
    lr: f64, Method;
    /// SGD momentum (default 0.9).
    momentum: f64, Method;
    /// Weight decay (default 2e-4).
    weight_decay: f64, Method;
    /// Epochs (from 0) where the learning rate is multiplied by gamma, e.g. 215,260,285, or
    /// `none` for a constant rate.
    milestones: Vec<usize>, Method;
    /// Factor on the learning rate at each milestone (default 0.1).
    gamma: f64, Method;
    /// Seed of the initialisation, shuffling and attacks (default 0).
    seed: u64, Grid;
    /// Random crop and flip (default: on for CIFAR, off for Fashion-MNIST).
    augment: bool, Method;
    /// Teacher checkpoint for ard, iad and rslad.
    teacher: PathBuf, Grid;
    /// The teacher's model name (checked against the checkpoint).
    teacher_model: String, Grid;
    /// Test images used for the per-epoch PGD-20 accuracy (the first N; default 1000).
    monitor_examples: usize, Cell;
    /// Batch size of the evaluations (default 256).
    eval_batch_size: usize, Cell;
    /// Run directory.
    out: PathBuf, Grid;
    /// L-inf radius of the inner attack on the [0,1] scale: 0.1 or 8/255.
    eps: Fraction, Cell;
    /// Steps of the inner attack (default 10).
    attack_steps: usize, Method;
    /// Step of the inner attack: 0.025 or 2/255 (default eps/4).
    attack_step_size: Fraction, Method;
    /// BatchNorm mode of the student during the inner attack: train or eval.
    attack_bn: AttackBn, Method;
    /// TRADES: robust-loss weight; IAD: trust exponent.
    beta: f64, Method;
    /// ARD/IAD: weight of the distillation terms.
    alpha: f64, Method;
    /// ARD/IAD: distillation temperature.
    temperature: f64, Method;
    /// ARD/RSLAD KL reduction: official (mean over B·C) or batchmean.
    kl_reduction: KlReduction, Grid;
    /// Student passes per step: official (every pass the method's official code runs, each
    /// updating BatchNorm statistics) or minimal (only those whose output enters the loss).
    bn_passes: BnPasses, Method;
    /// IAD: first epoch (from 0) with the introspection term.
    iad_begin: usize, Method;
}

/// Settings from a TOML file's text. A run's recorded `config.toml` (every setting resolved,
/// the method's in a `[method]` table, and what rslad wrote: `out`, `backend`,
/// `rslad_version`, and `kl_scale`, which follows from the dataset and the KL reduction)
/// repeats that run: its method table is read as top-level settings, rslad's records are
/// dropped (a new run names its own directory), and so is every value that is what the other
/// settings give by default (the schedule of its epoch count, a step size of its ε), so that
/// it follows them when a flag changes them, as in a new run.
fn settings_from(text: &str) -> Result<TrainOverrides, toml::de::Error> {
    let mut table: toml::Table = text.parse()?;
    let Some(toml::Value::Table(method)) = table.remove("method") else {
        return toml::from_str(text);
    };
    for (key, value) in method {
        match (key.as_str(), value) {
            ("kl_scale", _) => {}
            ("name", v) => drop(table.insert("method".into(), v)),
            ("params", toml::Value::Table(params)) => table.extend(params),
            (_, v) => drop(table.insert(key, v)),
        }
    }
    for written in ["out", "backend", "rslad_version"] {
        table.remove(written);
    }
    let recorded: TrainOverrides = table.try_into()?;
    Ok(defaults_left_out(recorded))
}

/// `recorded` without the values that resolving without them gives anyway.
fn defaults_left_out(recorded: TrainOverrides) -> TrainOverrides {
    // Resolving needs a run directory; the recorded one was dropped.
    let resolve = |o: &TrainOverrides| {
        let mut o = o.clone();
        o.out.get_or_insert_with(|| PathBuf::from("."));
        o.resolve().ok().map(|mut c| {
            c.backend.clear();
            c
        })
    };
    let Some(full) = resolve(&recorded) else {
        return recorded;
    };
    let mut kept = recorded.clone();
    for key in recorded.given() {
        let without = kept.clone().without(key);
        if resolve(&without).as_ref() == Some(&full) {
            kept = without;
        }
    }
    kept
}

impl TrainOverrides {
    /// Reads a TOML file; unknown keys are an error naming them.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        settings_from(&text).map_err(|source| ConfigError::Toml {
            path: Some(path.to_path_buf()),
            source,
        })
    }

    /// Reads TOML text (a config file's content).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        settings_from(text).map_err(|source| ConfigError::Toml { path: None, source })
    }

    /// Fills in defaults and checks every value.
    pub fn resolve(self) -> Result<TrainConfig, ConfigError> {
        let dataset: DatasetKind = self
            .dataset
            .as_deref()
            .ok_or(ConfigError::Missing {
                key: "dataset",
                hint: "fashion-mnist, cifar10 or cifar100",
            })?
            .parse()?;
        let method = self.method.unwrap_or_else(|| "natural".into());
        crate::methods::lookup(&method)?;
        let cpu_scale = dataset == DatasetKind::FashionMnist;
        let epochs = self.epochs.unwrap_or(if cpu_scale { 10 } else { 300 });
        if epochs == 0 {
            return Err(ConfigError::Zero {
                key: "epochs",
                why: String::new(),
            });
        }
        let arch = self.model.unwrap_or(if cpu_scale {
            Arch::CnnSmall
        } else {
            Arch::ResNet(18)
        });
        let mut m = MethodConfig::defaults(&method, dataset, epochs);
        if let Some(e) = &self.eps {
            m.eps = crate::units::parse_eps(e.as_str())
                .map_err(|source| ConfigError::Quantity { key: "eps", source })?;
            m.attack_step_size = m.eps / 4.0;
        }
        if let Some(s) = &self.attack_step_size {
            m.attack_step_size = crate::units::parse_fraction(s.as_str()).map_err(|source| {
                ConfigError::Quantity {
                    key: "attack_step_size",
                    source,
                }
            })?;
        }
        if let Some(v) = self.attack_steps {
            m.attack_steps = v;
        }
        if let Some(v) = self.attack_bn {
            m.attack_bn = v;
        }
        if let Some(v) = self.beta {
            m.beta = v;
        }
        if let Some(v) = self.alpha {
            m.alpha = v;
        }
        if let Some(v) = self.temperature {
            m.temperature = v;
        }
        if let Some(v) = self.kl_reduction {
            m.kl_reduction = v;
        }
        m.kl_scale = crate::methods::kl_scale(&method, dataset, m.kl_reduction);
        if let Some(v) = self.bn_passes {
            m.bn_passes = v;
        }
        if let Some(v) = self.iad_begin {
            m.iad_begin = v;
        }
        // The method's own hyperparameters; those of other methods are not its settings
        // (an experiment's values reach every cell).
        for (key, value) in m.params.iter_mut() {
            if let Some(v) = self.params.get(key) {
                *value = *v;
            }
        }
        if self.teacher.is_none() && m.needs_teacher() {
            return Err(ConfigError::NoTeacher { method });
        }
        // A teacher given to a method that ignores it would be recorded as if it mattered
        // (checked for new runs only: a recorded run that carries one still resumes).
        if self.teacher.is_some() && !m.needs_teacher() {
            return Err(ConfigError::UnusedTeacher { method });
        }
        let config = TrainConfig {
            dataset,
            data_dir: self.data_dir,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            model: arch,
            epochs,
            batch_size: self.batch_size.unwrap_or(128),
            lr: self.lr.unwrap_or(0.1),
            momentum: self.momentum.unwrap_or(0.9),
            weight_decay: self.weight_decay.unwrap_or(2e-4),
            milestones: self
                .milestones
                .unwrap_or_else(|| default_milestones(epochs)),
            gamma: self.gamma.unwrap_or(0.1),
            seed: self.seed.unwrap_or(0),
            augment: self.augment.unwrap_or(!dataset.default_augment().is_none()),
            teacher: self.teacher,
            teacher_model: self.teacher_model,
            monitor_examples: self.monitor_examples.unwrap_or(1000),
            eval_batch_size: self.eval_batch_size.unwrap_or(256),
            out: self.out.ok_or(ConfigError::Missing {
                key: "out",
                hint: "the run directory",
            })?,
            backend: crate::backend::describe(),
            rslad_version: env!("CARGO_PKG_VERSION").to_string(),
            method: m,
        };
        config.validate()?;
        Ok(config)
    }
}

/// RSLAD's 215/260/285 of 300 epochs, scaled to `epochs`.
pub fn default_milestones(epochs: usize) -> Vec<usize> {
    if epochs == 300 {
        return vec![215, 260, 285];
    }
    [215.0 / 300.0, 260.0 / 300.0, 285.0 / 300.0]
        .iter()
        .map(|f| (f * epochs as f64).round() as usize)
        .collect()
}

impl TrainConfig {
    /// Learning rate of `epoch` (from 0): `lr · γ^(milestones ≤ epoch)`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let passed = self.milestones.iter().filter(|&&m| m <= epoch).count();
        self.lr * self.gamma.powi(passed as i32)
    }

    /// Checks every value, as given on the command line, in a TOML file or recorded in a run
    /// directory's `config.toml` (a resumed run is checked like a new one).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least_one = |key: &'static str, v: usize, why: &str| {
            if v == 0 {
                Err(ConfigError::Zero {
                    key,
                    why: why.to_string(),
                })
            } else {
                Ok(())
            }
        };
        at_least_one("epochs", self.epochs, "")?;
        at_least_one("batch_size", self.batch_size, "")?;
        at_least_one("eval_batch_size", self.eval_batch_size, "")?;
        for (key, limit) in [
            ("train_limit", self.train_limit),
            ("test_limit", self.test_limit),
        ] {
            if limit == Some(0) {
                return Err(ConfigError::NoImages { key });
            }
        }
        if self.method.is_robust() {
            at_least_one(
                "monitor_examples",
                self.monitor_examples,
                " (the per-epoch robust accuracy needs test images)",
            )?;
        }
        crate::models::ModelSpec::for_dataset(self.model, self.dataset)
            .check_size()
            .map_err(|e| ConfigError::ModelSize(e.to_string()))?;
        let entry = self.method.entry()?;
        let finite = |key: &'static str, v: f64, ok: bool, want: &str| {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key,
                    value: v.to_string(),
                    want: want.to_string(),
                })
            }
        };
        finite("lr", self.lr, self.lr > 0.0, "positive")?;
        finite(
            "momentum",
            self.momentum,
            (0.0..1.0).contains(&self.momentum),
            "in [0, 1) (0.9 in the paper)",
        )?;
        finite(
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "0 or positive (2e-4 in the paper)",
        )?;
        finite(
            "gamma",
            self.gamma,
            self.gamma > 0.0,
            "positive (the learning rate is multiplied by it at each milestone; 0.1 in the paper)",
        )?;
        if self.augment && self.dataset.default_augment().is_none() {
            return Err(ConfigError::Invalid {
                key: "augment",
                value: "true".into(),
                want: format!(
                    "false for {}: rslad's augmentation (4-pixel crop, flip) is CIFAR's, and \
                     this dataset trains without it",
                    self.dataset
                ),
            });
        }
        if self.milestones.windows(2).any(|w| w[0] > w[1]) {
            return Err(ConfigError::Invalid {
                key: "milestones",
                value: format!("{:?}", self.milestones),
                want: "in increasing order (epochs counted from 0)".into(),
            });
        }
        let m = &self.method;
        finite(
            "eps",
            m.eps,
            (0.0..=1.0).contains(&m.eps),
            "in [0, 1]: eps is on the [0,1] pixel scale (8/255 ≈ 0.0314)",
        )?;
        if m.is_robust() {
            finite(
                "eps",
                m.eps,
                m.eps > 0.0,
                "positive for a robust method (eps 0 is natural training)",
            )?;
            at_least_one(
                "attack_steps",
                m.attack_steps,
                &format!(" (method {} trains against an attack)", m.name),
            )?;
            if m.attack_steps as u64 > crate::attacks::MAX_COUNT {
                return Err(ConfigError::Invalid {
                    key: "attack_steps",
                    value: m.attack_steps.to_string(),
                    want: format!(
                        "at most {} (a typo?): no attack needs that many",
                        crate::attacks::MAX_COUNT
                    ),
                });
            }
            finite(
                "attack_step_size",
                m.attack_step_size,
                m.attack_step_size > 0.0,
                "positive (a negative step descends the loss)",
            )?;
        }
        finite("beta", m.beta, m.beta >= 0.0, "0 or positive")?;
        finite(
            "alpha",
            m.alpha,
            (0.0..=1.0).contains(&m.alpha),
            "in [0, 1]",
        )?;
        finite(
            "temperature",
            m.temperature,
            m.temperature > 0.0,
            "positive",
        )?;
        for p in entry.params {
            let v = *m.params.get(p.key).ok_or(ConfigError::Missing {
                key: p.key,
                hint: "a hyperparameter of the method",
            })?;
            finite(p.key, v, (p.valid)(v), p.want)?;
        }
        if let Some(key) = m.params.keys().find(|k| entry.param(k).is_none()) {
            return Err(ConfigError::NotAParam {
                key: key.clone(),
                method: m.name.clone(),
            });
        }
        if entry.reads("iad_begin") && m.iad_begin >= self.epochs {
            return Err(ConfigError::Invalid {
                key: "iad_begin",
                value: m.iad_begin.to_string(),
                want: format!(
                    "before the last epoch ({} epochs, counted from 0): the introspection term \
                     would never start",
                    self.epochs
                ),
            });
        }
        if m.needs_teacher() && self.teacher.is_none() {
            return Err(ConfigError::NoTeacher {
                method: m.name.clone(),
            });
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Toml { path: None, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A default the help text states ("(default 0.1)") is the one `resolve` applies: the two
    /// are written apart, so this keeps them one fact (Fashion-MNIST, natural training).
    #[test]
    fn help_defaults_are_the_applied_defaults() {
        let cfg = TrainOverrides {
            dataset: Some("fashion-mnist".into()),
            out: Some("unused".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let recorded: toml::Table = toml::from_str(&cfg.to_toml()).unwrap();
        let method = recorded["method"].as_table().unwrap();
        let mut checked = 0;
        for s in SETTINGS {
            let Some(stated) = s.help.split("(default ").nth(1) else {
                continue;
            };
            let stated = stated.split([')', ' ', ',']).next().unwrap();
            let value = match (recorded.get(s.key), s.key) {
                (_, "method") => method["name"].clone(),
                (Some(v), _) => v.clone(),
                (None, _) => match method.get(s.key) {
                    Some(v) => v.clone(),
                    None => continue,
                },
            };
            let same = match (&value, stated.parse::<f64>()) {
                (toml::Value::Integer(i), Ok(x)) => *i as f64 == x,
                (toml::Value::Float(f), Ok(x)) => *f == x,
                (toml::Value::String(t), _) => t == stated,
                _ => continue,
            };
            assert!(
                same,
                "{}: the help says {stated}, resolve gives {value}",
                s.key
            );
            checked += 1;
        }
        assert!(
            checked >= 10,
            "only {checked} stated defaults were compared"
        );
    }

    /// Changes are named by dotted key with both values; places and equal values are not.
    #[test]
    fn setting_changes_name_each_changed_key() {
        let old = serde_json::json!({"epochs": 6, "out": "a", "method": {"beta": 6.0, "tau": 1.0},
                                     "seed": null});
        let new = serde_json::json!({"epochs": 18, "out": "b", "method": {"beta": 6.0},
                                     "seed": 3});
        assert_eq!(
            setting_changes(&old, &new, &["out"]),
            [
                "epochs: 6 -> 18",
                "method.tau: 1.0 -> unset",
                "seed: unset -> 3"
            ]
        );
        assert!(setting_changes(&old, &old, &[]).is_empty());
    }

    fn base() -> TrainOverrides {
        TrainOverrides {
            dataset: Some("fashion-mnist".into()),
            out: Some("/tmp/x".into()),
            ..Default::default()
        }
    }

    /// A run's recorded config.toml, given as `--config`, repeats the run in a new directory;
    /// what follows from other settings by default follows a flag that changes them.
    #[test]
    fn a_recorded_config_repeats_its_run() {
        let mut o = base();
        o.method = Some("iad".into());
        o.teacher = Some("/tmp/teacher.safetensors".into());
        o.beta = Some(3.0);
        o.epochs = Some(40);
        let first = o.clone().resolve().unwrap();
        let read = TrainOverrides::from_toml_str(&first.to_toml()).unwrap();
        assert_eq!(read.out, None);
        let resolve = |layers: &[TrainOverrides]| {
            let mut merged = layers
                .iter()
                .cloned()
                .fold(TrainOverrides::default(), |a, b| a.merged(b));
            merged.out = first.out.clone().into();
            let mut c = merged.resolve().unwrap();
            c.backend.clear();
            c
        };
        let mut want = first.clone();
        want.backend.clear();
        assert_eq!(resolve(std::slice::from_ref(&read)), want);
        // Ten epochs instead of forty: the schedule and IAD's start follow, as in a new run;
        // the step size follows a new eps, and the explicit beta stays.
        let flags = TrainOverrides {
            epochs: Some(10),
            eps: Some(Fraction("0.2".into())),
            ..Default::default()
        };
        let mut fresh = o;
        fresh.epochs = Some(10);
        fresh.eps = Some(Fraction("0.2".into()));
        assert_eq!(resolve(&[read, flags]), resolve(&[fresh]));
    }

    /// Every setting a method's registry entry says it reads is a setting of this table.
    #[test]
    fn every_key_a_method_reads_is_a_setting() {
        for m in crate::methods::METHODS {
            for key in m.reads {
                assert!(
                    SETTINGS.iter().any(|s| s.key == *key),
                    "{}: {key} is not a setting",
                    m.name
                );
            }
        }
    }

    #[test]
    fn schedule_matches_the_official_code() {
        let mut o = base();
        o.epochs = Some(300);
        let c = o.resolve().unwrap();
        assert_eq!(c.milestones, vec![215, 260, 285]);
        // Epochs 1..=215 of the official loop (0..=214 here) run at 0.1.
        assert_eq!(c.lr_at(214), 0.1);
        assert!((c.lr_at(215) - 0.01).abs() < 1e-12);
        assert!((c.lr_at(299) - 1e-4).abs() < 1e-12);
    }

    /// Every setting reaches the resolved configuration: a value other than the default
    /// changes it (a setting the table defines but `resolve` forgets would be ignored).
    #[test]
    fn every_setting_takes_effect() {
        let resolved = |o: TrainOverrides| {
            let mut c = o.resolve().ok()?;
            c.backend.clear();
            Some(c)
        };
        let plain = resolved(base()).unwrap();
        let candidates = [
            "2",
            "0.5",
            "0.05",
            "true",
            "false",
            "cnn-large",
            "train",
            "minimal",
            "batchmean",
            "1,2",
            "sat",
            "cifar10",
            "/tmp/other",
        ];
        // Augmentation exists for CIFAR only: `augment` is tried on a CIFAR base as well.
        let mut cifar = TrainOverrides::default();
        cifar.set_text("dataset", "cifar10").unwrap();
        let cifar = base().merged(cifar);
        let cifar_plain = resolved(cifar.clone()).unwrap();
        // The teacher is a setting of the methods that distill one.
        let mut distill = TrainOverrides::default();
        distill.set_text("method", "rslad").unwrap();
        distill.set_text("teacher", "/tmp/teacher").unwrap();
        let distill = base().merged(distill);
        let distill_plain = resolved(distill.clone()).unwrap();
        for s in SETTINGS {
            let changes = candidates.iter().any(|v| {
                let mut o = TrainOverrides::default();
                o.set_text(s.key, v).is_ok()
                    && (resolved(base().merged(o.clone())).is_some_and(|c| c != plain)
                        || resolved(cifar.clone().merged(o.clone()))
                            .is_some_and(|c| c != cifar_plain)
                        || resolved(distill.clone().merged(o)).is_some_and(|c| c != distill_plain))
            });
            assert!(changes, "{} never changes the resolved config", s.key);
        }
    }

    #[test]
    fn flags_override_file_and_bad_values_are_errors() {
        let file: TrainOverrides = toml::from_str(
            "dataset = 'cifar10'\nlr = 0.05\nepochs = 3\nmethod = 'trades'\neps = '8/255'",
        )
        .unwrap();
        let flags = TrainOverrides {
            lr: Some(0.2),
            out: Some("/tmp/y".into()),
            ..Default::default()
        };
        let c = file.merged(flags).resolve().unwrap();
        assert_eq!(c.lr, 0.2);
        assert_eq!(c.epochs, 3);
        assert_eq!(c.method.beta, 6.0);
        assert!((c.method.attack_step_size - 2.0 / 255.0).abs() < 1e-12);
        assert!(c.augment, "CIFAR augments by default");
        let round: TrainConfig = TrainConfig::from_toml(&c.to_toml()).unwrap();
        assert_eq!(round, c);
        assert!(toml::from_str::<TrainOverrides>("learning_rate = 1").is_err());
        let mut o = base();
        o.method = Some("rslad".into());
        assert!(o.resolve().unwrap_err().to_string().contains("--teacher"));
        let mut o = base();
        o.eps = Some("8".into());
        assert!(o.resolve().is_err());
        // A model name is checked as the file (or flag) is read.
        assert!(TrainOverrides::from_toml_str("model = 'vgg'")
            .unwrap_err()
            .to_string()
            .contains("unknown model"));
    }
}

/// A method's own hyperparameter, end to end, with the test-only `probe` method (one file
/// and one registry line, src/methods/probe.rs).
#[cfg(test)]
mod method_params {
    use super::*;

    fn probe(extra: &str) -> Result<TrainConfig, ConfigError> {
        TrainOverrides::from_toml_str(&format!(
            "method = 'probe'\ndataset = 'fashion-mnist'\nout = '/tmp/unused'\n{extra}"
        ))?
        .resolve()
    }

    #[test]
    fn a_method_hyperparameter_is_a_setting_with_a_default_and_a_check() {
        assert_eq!(probe("").unwrap().method.param("probe_scale"), 0.5);
        assert_eq!(
            probe("probe_scale = 2.0")
                .unwrap()
                .method
                .param("probe_scale"),
            2.0
        );
        let e = probe("probe_scale = -1.0").unwrap_err();
        assert_eq!(e.key(), Some("probe_scale"), "{e}");
        assert!(e.to_string().contains("must be positive"), "{e}");
        let e = probe("probe_scal = 1.0").unwrap_err().to_string();
        assert!(e.contains("probe_scal"), "{e}");
        // The flag's path: text parsed as the setting's type.
        let mut o = TrainOverrides::default();
        o.set_text("probe_scale", "3").unwrap();
        assert_eq!(o.params.get("probe_scale"), Some(&3.0));
        assert_eq!(o.given(), ["probe_scale"]);
        assert!(o.set_text("probe_scale", "x").is_err());
        // Another method ignores it, as natural training ignores beta.
        let mut natural = TrainOverrides::from_toml_str(
            "dataset = 'fashion-mnist'\nout = '/tmp/unused'\nprobe_scale = 2.0",
        )
        .unwrap();
        assert!(natural.clone().resolve().unwrap().method.params.is_empty());
        natural.params.clear();
        assert_eq!(natural.given(), ["dataset", "out"]);
    }

    /// Recorded as `[method.params]`; a config of a method without hyperparameters of its
    /// own is written as before, and a recorded one missing a value is refused.
    #[test]
    fn method_hyperparameters_are_recorded_and_read_back() {
        let c = probe("probe_scale = 2.0").unwrap();
        let text = c.to_toml();
        assert!(
            text.contains("[method.params]\nprobe_scale = 2.0"),
            "{text}"
        );
        assert_eq!(TrainConfig::from_toml(&text).unwrap(), c);
        let bare = text.replace("[method.params]\nprobe_scale = 2.0", "");
        let e = TrainConfig::from_toml(&bare)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key(), Some("probe_scale"), "{e}");
        let sat = TrainOverrides::from_toml_str(
            "method = 'sat'\ndataset = 'fashion-mnist'\nout = '/tmp/unused'",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert!(!sat.to_toml().contains("params"));
        let mut wrong = sat.clone();
        wrong.method.params.insert("probe_scale".into(), 1.0);
        assert!(matches!(
            wrong.validate(),
            Err(ConfigError::NotAParam { .. })
        ));
    }

    /// A cell's settings (cell.json) read as written, `null`s of settings not given included.
    #[test]
    fn settings_round_trip_through_json_and_read_old_records() {
        let mut o = TrainOverrides::from_toml_str(
            "method = 'probe'\nmodel = 'resnet-18'\neps = '8/255'\nattack_bn = 'train'",
        )
        .unwrap();
        o.params.insert("probe_scale".into(), 1.5);
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains(r#""model":"resnet18""#), "{json}");
        assert!(json.contains(r#""data_dir":null"#), "{json}");
        assert_eq!(serde_json::from_str::<TrainOverrides>(&json).unwrap(), o);
        let old = r#"{"method":"rslad","dataset":"cifar10","data_dir":null,"model":"resnet18",
            "eps":"8/255","attack_bn":null,"kl_reduction":"batchmean","milestones":[1,2]}"#;
        let o: TrainOverrides = serde_json::from_str(old).unwrap();
        assert_eq!(o.kl_reduction, Some(KlReduction::Batchmean));
        assert_eq!(o.eps, Some("8/255".into()));
        assert_eq!(o.milestones, Some(vec![1, 2]));
    }
}
