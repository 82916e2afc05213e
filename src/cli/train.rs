//! `rslad train`.

use super::progress::TrainProgress;
use anyhow::{bail, Context};
use clap::{Arg, ArgMatches, Args, FromArgMatches};
use rslad::train::config::{ConfigError, Setting, SETTINGS};
use rslad::train::{self, TrainConfig, TrainOverrides};
use std::path::PathBuf;

/// `rslad train`'s flags: one per setting of [`SETTINGS`] (generated, so none can be
/// missing), plus `--config` and `--resume`.
#[derive(Debug, Default)]
pub struct TrainArgs {
    settings: TrainOverrides,
    /// TOML file with any of these settings (flags override it).
    config: Option<PathBuf>,
    /// Continue the run in this directory where it stopped.
    resume: Option<PathBuf>,
}

/// A setting's flag: `--eval-batch-size` for `eval_batch_size`, its value checked as the
/// setting's type parses it.
fn setting_arg(s: &'static Setting) -> Arg {
    // clap keeps `&'static str` names; the few flag names live as long as the process.
    let long: &'static str = Box::leak(
        s.flag()
            .trim_start_matches('-')
            .to_string()
            .into_boxed_str(),
    );
    Arg::new(s.key)
        .long(long)
        .help(s.help.trim())
        .value_parser(move |text: &str| {
            TrainOverrides::default()
                .set_text(s.key, text)
                .map(|()| text.to_string())
        })
}

impl Args for TrainArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.args(SETTINGS.iter().map(setting_arg))
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("TOML file with any of these settings (flags override it)."),
            )
            .arg(
                Arg::new("resume")
                    .long("resume")
                    .value_name("DIR")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Continue the run in this directory where it stopped."),
            )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for TrainArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = TrainArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for s in SETTINGS {
            if let Some(text) = matches.get_one::<String>(s.key) {
                self.settings
                    .set_text(s.key, text)
                    .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))?;
            }
        }
        if let Some(p) = matches.get_one::<PathBuf>("config") {
            self.config = Some(p.clone());
        }
        if let Some(p) = matches.get_one::<PathBuf>("resume") {
            self.resume = Some(p.clone());
        }
        Ok(())
    }
}

/// A library error with the flag of the setting it names: `--epochs (epochs): epochs is 0…`.
fn with_flag(e: ConfigError) -> anyhow::Error {
    match e.key().and_then(|k| SETTINGS.iter().find(|s| s.key == k)) {
        Some(s) => anyhow::anyhow!("{} ({}): {e}", s.flag(), s.key),
        None => anyhow::Error::new(e),
    }
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
        let mut extra = args.settings.clone();
        let epochs = extra.epochs.take();
        if !extra.given().is_empty() || args.config.is_some() {
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
                "{}: {}; fix the recorded value (or, for --epochs, the flag)",
                path.display(),
                with_flag(e)
            )
        })?;
        return Ok(cfg);
    }
    let base = match &args.config {
        Some(p) => TrainOverrides::from_toml_file(p)?,
        None => TrainOverrides::default(),
    };
    base.merged(args.settings.clone())
        .resolve()
        .map_err(with_flag)
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
