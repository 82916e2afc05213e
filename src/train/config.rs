//! The run configuration: one validated value built from defaults, an optional TOML file and
//! command-line flags (flags win), recorded as `config.toml` in the run directory.

use crate::data::DatasetKind;
use crate::methods::{AttackBn, BnPasses, KlReduction, MethodConfig};
use crate::models::Arch;
use std::path::PathBuf;

/// Everything needed to repeat a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub dataset: DatasetKind,
    pub data_dir: Option<PathBuf>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub model: String,
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

/// Settings given by a TOML file or flags; anything left out takes its default.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOverrides {
    pub method: Option<String>,
    pub dataset: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub model: Option<String>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub milestones: Option<Vec<usize>>,
    pub gamma: Option<f64>,
    pub seed: Option<u64>,
    pub augment: Option<bool>,
    pub teacher: Option<PathBuf>,
    pub teacher_model: Option<String>,
    pub monitor_examples: Option<usize>,
    pub eval_batch_size: Option<usize>,
    pub out: Option<PathBuf>,
    /// `0.1` or `8/255`.
    pub eps: Option<String>,
    pub attack_steps: Option<usize>,
    /// `0.025` or `2/255`.
    pub attack_step_size: Option<String>,
    pub attack_bn: Option<String>,
    pub beta: Option<f64>,
    pub alpha: Option<f64>,
    pub temperature: Option<f64>,
    pub kl_reduction: Option<String>,
    /// `official` or `minimal` (see [`BnPasses`]).
    pub bn_passes: Option<String>,
    pub iad_begin: Option<usize>,
}

macro_rules! take_newer {
    ($base:ident, $new:ident, $($f:ident),*) => { $( if $new.$f.is_some() { $base.$f = $new.$f; } )* };
}

impl TrainOverrides {
    /// Reads a TOML file; unknown keys are an error naming them.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `self` with every setting that `newer` gives replaced.
    pub fn merged(mut self, newer: TrainOverrides) -> Self {
        take_newer!(
            self,
            newer,
            method,
            dataset,
            data_dir,
            train_limit,
            test_limit,
            model,
            epochs,
            batch_size,
            lr,
            momentum,
            weight_decay,
            milestones,
            gamma,
            seed,
            augment,
            teacher,
            teacher_model,
            monitor_examples,
            eval_batch_size,
            out,
            eps,
            attack_steps,
            attack_step_size,
            attack_bn,
            beta,
            alpha,
            temperature,
            kl_reduction,
            bn_passes,
            iad_begin
        );
        self
    }

    /// Fills in defaults and checks every value.
    pub fn resolve(self) -> Result<TrainConfig, String> {
        let dataset: DatasetKind = self
            .dataset
            .as_deref()
            .ok_or("no dataset given (--dataset fashion-mnist|cifar10|cifar100)")?
            .parse()
            .map_err(|e: crate::data::DataError| e.to_string())?;
        let method = self.method.unwrap_or_else(|| "natural".into());
        if !crate::methods::METHODS.contains(&method.as_str()) {
            return Err(format!(
                "unknown method '{method}'; known: {}",
                crate::methods::METHODS.join(", ")
            ));
        }
        let cpu_scale = dataset == DatasetKind::FashionMnist;
        let epochs = self.epochs.unwrap_or(if cpu_scale { 10 } else { 300 });
        if epochs == 0 {
            return Err("--epochs must be at least 1".into());
        }
        let model = self
            .model
            .unwrap_or_else(|| if cpu_scale { "cnn-small" } else { "resnet18" }.into());
        let arch: Arch = model
            .parse()
            .map_err(|e: crate::models::UnknownModel| e.to_string())?;
        let mut m = MethodConfig::defaults(&method, dataset, epochs);
        if let Some(e) = &self.eps {
            m.eps = crate::units::parse_eps(e)?;
            m.attack_step_size = m.eps / 4.0;
        }
        if let Some(s) = &self.attack_step_size {
            m.attack_step_size = crate::units::parse_fraction(s)?;
        }
        if let Some(v) = self.attack_steps {
            m.attack_steps = v;
        }
        if let Some(v) = &self.attack_bn {
            m.attack_bn = v.parse::<AttackBn>()?;
        }
        if let Some(v) = self.beta {
            m.beta = v;
        }
        if let Some(v) = self.alpha {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("--alpha {v} is outside [0, 1]"));
            }
            m.alpha = v;
        }
        if let Some(v) = self.temperature {
            if v <= 0.0 {
                return Err(format!("--temperature {v} must be positive"));
            }
            m.temperature = v;
        }
        if let Some(v) = &self.kl_reduction {
            m.kl_reduction = v.parse::<KlReduction>()?;
        }
        m.kl_scale = crate::methods::rslad_kl_scale(&method, dataset, m.kl_reduction);
        if let Some(v) = &self.bn_passes {
            m.bn_passes = v
                .parse::<BnPasses>()
                .map_err(|e| format!("--bn-passes (bn_passes in a config file): {e}"))?;
        }
        if let Some(v) = self.iad_begin {
            m.iad_begin = v;
        }
        let batch_size = self.batch_size.unwrap_or(128);
        if batch_size == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        let lr = self.lr.unwrap_or(0.1);
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(format!("--lr {lr} must be positive"));
        }
        let milestones = self
            .milestones
            .unwrap_or_else(|| default_milestones(epochs));
        if self.teacher.is_none() && m.needs_teacher() {
            return Err(format!(
                "method {method} distills a teacher: pass --teacher FILE (an rslad checkpoint; \
                 `rslad import` converts PyTorch ones) and --teacher-model NAME"
            ));
        }
        let config = TrainConfig {
            dataset,
            data_dir: self.data_dir,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            model: arch.to_string(),
            epochs,
            batch_size,
            lr,
            momentum: self.momentum.unwrap_or(0.9),
            weight_decay: self.weight_decay.unwrap_or(2e-4),
            milestones,
            gamma: self.gamma.unwrap_or(0.1),
            seed: self.seed.unwrap_or(0),
            augment: self.augment.unwrap_or(!dataset.default_augment().is_none()),
            teacher: self.teacher,
            teacher_model: self.teacher_model,
            monitor_examples: self.monitor_examples.unwrap_or(1000),
            eval_batch_size: self.eval_batch_size.unwrap_or(256),
            out: self.out.ok_or("no run directory given (--out DIR)")?,
            backend: crate::backend::describe(),
            rslad_version: env!("CARGO_PKG_VERSION").to_string(),
            method: m,
        };
        config.validate()?;
        Ok(config)
    }
}

/// A setting as both the flag and the TOML key spell it: `--eval-batch-size (eval_batch_size)`.
fn setting(key: &str) -> String {
    format!("--{} ({key})", key.replace('_', "-"))
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
    pub fn validate(&self) -> Result<(), String> {
        let at_least_one = |key: &str, v: usize| {
            if v == 0 {
                Err(format!("{} is 0; it must be at least 1", setting(key)))
            } else {
                Ok(())
            }
        };
        at_least_one("epochs", self.epochs)?;
        at_least_one("batch_size", self.batch_size)?;
        at_least_one("eval_batch_size", self.eval_batch_size)?;
        for (key, limit) in [
            ("train_limit", self.train_limit),
            ("test_limit", self.test_limit),
        ] {
            if limit == Some(0) {
                return Err(format!(
                    "{} is 0: no images would be used; leave it out to use all of them",
                    setting(key)
                ));
            }
        }
        if self.method.is_robust() {
            at_least_one("monitor_examples", self.monitor_examples)
                .map_err(|e| format!("{e} (the per-epoch robust accuracy needs test images)"))?;
        }
        let arch = self
            .model
            .parse::<Arch>()
            .map_err(|e| format!("model: {e}"))?;
        crate::models::ModelSpec::for_dataset(arch, self.dataset)
            .check_size()
            .map_err(|e| format!("{}: {e}", setting("model")))?;
        if !crate::methods::METHODS.contains(&self.method.name.as_str()) {
            return Err(format!(
                "unknown method '{}'; known: {}",
                self.method.name,
                crate::methods::METHODS.join(", ")
            ));
        }
        let finite = |key: &str, v: f64, ok: bool, want: &str| {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(format!("{} {v} must be {want}", setting(key)))
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
        if self.milestones.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!(
                "{} {:?} must be in increasing order (epochs counted from 0)",
                setting("milestones"),
                self.milestones
            ));
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
            at_least_one("attack_steps", m.attack_steps)
                .map_err(|e| format!("{e} (method {} trains against an attack)", m.name))?;
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
        if m.name == "iad" && m.iad_begin >= self.epochs {
            return Err(format!(
                "{} {} is not before the last epoch ({} epochs, counted from 0): IAD's \
                 introspection term would never start",
                setting("iad_begin"),
                m.iad_begin,
                self.epochs
            ));
        }
        if m.needs_teacher() && self.teacher.is_none() {
            return Err(format!(
                "method {} distills a teacher: pass --teacher FILE and --teacher-model NAME",
                m.name
            ));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> TrainOverrides {
        TrainOverrides {
            dataset: Some("fashion-mnist".into()),
            out: Some("/tmp/x".into()),
            ..Default::default()
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
        assert!(o.resolve().unwrap_err().contains("--teacher"));
        let mut o = base();
        o.eps = Some("8".into());
        assert!(o.resolve().is_err());
        let mut o = base();
        o.model = Some("vgg".into());
        assert!(o.resolve().unwrap_err().contains("unknown model"));
    }
}
