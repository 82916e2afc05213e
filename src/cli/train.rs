//! `rslad train`.

use super::progress::TrainProgress;
use anyhow::{bail, Context};
use clap::Args;
use rslad::train::{self, TrainConfig, TrainOverrides};
use std::path::PathBuf;

#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// natural, sat, trades, ard, iad or rslad.
    #[arg(long)]
    method: Option<String>,
    /// fashion-mnist, cifar10 or cifar100.
    #[arg(long)]
    dataset: Option<String>,
    /// Folder with the dataset's files (default: the dataset's usual place).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Model name (see `rslad models`).
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    momentum: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Epochs (from 0) where the learning rate is multiplied by --gamma, e.g. 215,260,285, or
    /// `none` for a constant rate.
    #[arg(long, value_parser = parse_milestones)]
    milestones: Option<Milestones>,
    #[arg(long)]
    gamma: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Run directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// TOML file with any of these settings (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in this directory where it stopped.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Use only the first N training images.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Teacher checkpoint for ard, iad and rslad.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// The teacher's model name (checked against the checkpoint).
    #[arg(long)]
    teacher_model: Option<String>,
    /// L-inf radius of the inner attack on the [0,1] scale: 0.1 or 8/255.
    #[arg(long)]
    eps: Option<String>,
    #[arg(long)]
    attack_steps: Option<usize>,
    /// Step of the inner attack: 0.025 or 2/255.
    #[arg(long)]
    attack_step_size: Option<String>,
    /// BatchNorm mode of the student during the inner attack: train or eval.
    #[arg(long)]
    attack_bn: Option<String>,
    /// TRADES: robust-loss weight; IAD: trust exponent.
    #[arg(long)]
    beta: Option<f64>,
    /// ARD/IAD: weight of the distillation terms.
    #[arg(long)]
    alpha: Option<f64>,
    /// ARD/IAD: distillation temperature.
    #[arg(long)]
    temperature: Option<f64>,
    /// ARD/RSLAD KL reduction: official (mean over B·C) or batchmean.
    #[arg(long)]
    kl_reduction: Option<String>,
    /// Student passes per step: official (every pass the method's official code runs, each
    /// updating BatchNorm statistics) or minimal (only those whose output enters the loss).
    #[arg(long)]
    bn_passes: Option<String>,
    /// IAD: first epoch (from 0) with the introspection term.
    #[arg(long)]
    iad_begin: Option<usize>,
    /// Test images used for the per-epoch PGD-20 accuracy (the first N).
    #[arg(long)]
    monitor_examples: Option<usize>,
    #[arg(long)]
    eval_batch_size: Option<usize>,
    /// Random crop and flip (default: on for CIFAR, off for Fashion-MNIST).
    #[arg(long)]
    augment: Option<bool>,
}

impl TrainArgs {
    fn overrides(&self) -> TrainOverrides {
        TrainOverrides {
            method: self.method.clone(),
            dataset: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            model: self.model.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            milestones: self.milestones.clone().map(|m| m.0),
            gamma: self.gamma,
            seed: self.seed,
            augment: self.augment,
            teacher: self.teacher.clone(),
            teacher_model: self.teacher_model.clone(),
            monitor_examples: self.monitor_examples,
            eval_batch_size: self.eval_batch_size,
            out: self.out.clone(),
            eps: self.eps.clone(),
            attack_steps: self.attack_steps,
            attack_step_size: self.attack_step_size.clone(),
            attack_bn: self.attack_bn.clone(),
            beta: self.beta,
            alpha: self.alpha,
            temperature: self.temperature,
            kl_reduction: self.kl_reduction.clone(),
            bn_passes: self.bn_passes.clone(),
            iad_begin: self.iad_begin,
        }
    }
}

#[derive(Debug, Clone)]
struct Milestones(Vec<usize>);

fn parse_milestones(s: &str) -> Result<Milestones, String> {
    if s.trim() == "none" || s.trim().is_empty() {
        return Ok(Milestones(Vec::new()));
    }
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("milestone '{v}' is not an epoch number"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Milestones)
}

fn resolve(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    if let Some(dir) = &args.resume {
        let path = dir.join("config.toml");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot resume: no run configuration there",
                path.display()
            )
        })?;
        let mut cfg = TrainConfig::from_toml(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut extra = args.overrides();
        let epochs = extra.epochs.take();
        if serde_json::to_value(&extra)? != serde_json::to_value(TrainOverrides::default())?
            || args.config.is_some()
        {
            bail!("--resume continues a run with its recorded config.toml; only --epochs may be given with it");
        }
        if let Some(e) = epochs {
            cfg.epochs = e;
        }
        let now = rslad::backend::describe();
        if cfg.backend != now {
            eprintln!("note: the run was started on {}, it continues on {now}; results will not be bit-identical", cfg.backend);
        }
        cfg.out = dir.clone();
        // The recorded file may have been edited or copied from elsewhere: it is checked as a
        // new configuration would be.
        cfg.validate().map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}; fix the recorded value (or, for --epochs, the flag)",
                path.display()
            )
        })?;
        return Ok(cfg);
    }
    let base = match &args.config {
        Some(p) => TrainOverrides::from_toml_file(p).map_err(anyhow::Error::msg)?,
        None => TrainOverrides::default(),
    };
    base.merged(args.overrides())
        .resolve()
        .map_err(anyhow::Error::msg)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let cfg = resolve(&args)?;
    let device = rslad::backend::default_device();
    eprintln!(
        "training {} with {} on {} ({} epochs, batch {}, lr {}) on {}; run directory {}",
        cfg.model,
        cfg.method.name,
        cfg.dataset,
        cfg.epochs,
        cfg.batch_size,
        cfg.lr,
        cfg.backend,
        cfg.out.display()
    );
    let state = train::run(&cfg, &device, &mut TrainProgress::new())?;
    if let Some(best) = &state.best {
        eprintln!(
            "done: best epoch {} ({} {:.2}%), {}",
            best.epoch,
            if cfg.method.is_robust() {
                "PGD-20"
            } else {
                "test accuracy"
            },
            100.0 * best.metric,
            cfg.out.join("best.safetensors").display()
        );
    }
    println!("{}", cfg.out.display());
    Ok(())
}
