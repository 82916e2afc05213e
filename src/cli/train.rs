//! `rslad train`.

use super::progress::TrainProgress;
use anyhow::{bail, Context};
use clap::{Arg, ArgMatches, Args, FromArgMatches};
use rslad::methods::Param;
use rslad::train::config::{ConfigError, Setting, SETTINGS};
use rslad::train::{self, TrainConfig, TrainOverrides};
use std::path::PathBuf;

/// `rslad train`'s flags: one per setting of [`SETTINGS`] (generated, so none can be
/// missing), plus `--config` and `--resume`.
#[derive(Debug, Default)]
pub struct TrainArgs {
    /// The flags' settings, as text: parsed by [`TrainArgs::settings`], so a value a setting
    /// refuses is an input error naming its flag (a number's syntax is clap's to check).
    given: Vec<(&'static str, String)>,
    /// `--config` (its help is the flag's).
    config: Option<PathBuf>,
    /// `--resume` (its help is the flag's).
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
    let help = match s.key {
        // The registry, not the table, knows the methods.
        "method" => format!(
            "{} Known: {}.",
            s.help.trim(),
            rslad::methods::known_methods()
        ),
        _ => s.help.trim().to_string(),
    };
    let arg = Arg::new(s.key)
        .long(long)
        .value_name(&*Box::leak(s.key.to_uppercase().into_boxed_str()))
        .help(help);
    if !s.syntax {
        // A name from a closed set is checked with the configuration: a refused value, not
        // a usage error.
        return arg;
    }
    arg.value_parser(move |text: &str| {
        TrainOverrides::default()
            .set_text(s.key, text)
            .map(|()| text.to_string())
    })
}

/// A method's own hyperparameter's flag (see [`rslad::methods::Param`]).
fn param_arg(p: &'static Param) -> Arg {
    let long: &'static str = Box::leak(p.key.replace('_', "-").into_boxed_str());
    let help = format!(
        "{} Method {} only (default {}).",
        p.help.trim(),
        rslad::methods::methods_with_param(p.key).join(", "),
        p.default
    );
    Arg::new(p.key)
        .long(long)
        .value_name(&*Box::leak(p.key.to_uppercase().into_boxed_str()))
        .help(help)
        .value_parser(move |text: &str| {
            TrainOverrides::default()
                .set_text(p.key, text)
                .map(|()| text.to_string())
        })
}

/// Every flag's id: the settings' keys, then the methods' own hyperparameters'.
fn setting_ids() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .map(|s| s.key)
        .chain(rslad::methods::params().into_iter().map(|p| p.key))
}

impl Args for TrainArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.args(SETTINGS.iter().map(setting_arg))
            .args(rslad::methods::params().into_iter().map(param_arg))
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
                    .help(
                        "Continue the run in this directory where it stopped, with its recorded \
                         settings. Only --epochs (to extend it), --data-dir and --teacher (moved \
                         files; their SHA-256 must match the run's record) may be given with it.",
                    ),
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
        for key in setting_ids() {
            if let Some(text) = matches.get_one::<String>(key) {
                self.given.push((key, text.clone()));
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

impl TrainArgs {
    /// The settings the flags give.
    fn settings(&self) -> anyhow::Result<TrainOverrides> {
        let mut settings = TrainOverrides::default();
        for (key, text) in &self.given {
            settings
                .set_text(key, text)
                .map_err(|e| anyhow::anyhow!("--{}: {e}", key.replace('_', "-")))?;
        }
        Ok(settings)
    }
}

/// A library error with the flag of the setting it names: `--epochs (epochs): epochs is 0…`.
fn with_flag(e: ConfigError) -> anyhow::Error {
    match e.key().and_then(|k| setting_ids().find(|id| *id == k)) {
        Some(key) => anyhow::anyhow!("--{} ({key}): {e}", key.replace('_', "-")),
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
        let mut extra = args.settings()?;
        let epochs = extra.epochs.take();
        // Places, not settings: the run checks that they hold the images and teacher it
        // recorded (a path relative to another working directory, or a moved folder).
        let (data_dir, teacher) = (extra.data_dir.take(), extra.teacher.take());
        if !extra.given().is_empty() || args.config.is_some() {
            bail!(
                "--resume continues a run with its recorded config.toml; only --epochs, \
                 --data-dir and --teacher may be given with it"
            );
        }
        // Recorded as absolute paths: the run then resumes from any working directory.
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        if let Some(d) = data_dir {
            cfg.data_dir = Some(absolute(d));
        }
        if let Some(t) = teacher {
            cfg.teacher = Some(absolute(t));
        }
        if let Some(e) = epochs {
            // Fewer epochs than are done would train nothing and record a run it is not.
            let done = rslad::train::RunDir::new(dir)
                .read_state()?
                .map_or(0, |s| s.epochs_done);
            if e < done {
                bail!(
                    "--epochs {e}: {} has already finished {done} epochs; give at least {done} \
                     to continue it",
                    dir.display()
                );
            }
            if e != cfg.epochs {
                // The schedule was resolved when the run started; it does not stretch.
                eprintln!(
                    "note: the run continues to {e} epochs on its recorded schedule (lr {} x{} \
                     after epochs {:?}, set for {} epochs)",
                    cfg.lr, cfg.gamma, cfg.milestones, cfg.epochs
                );
            }
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
    let flags = args.settings()?;
    let merged = base.merged(flags);
    // The default schedule is the spec's, scaled to the epochs; only given milestones get a note.
    let milestones_given = merged.milestones.is_some();
    let cfg = merged.resolve().map_err(|e| {
        // A value from the --config file is named there, not as a flag the user never typed.
        let by_flag = e
            .key()
            .is_some_and(|k| args.given.iter().any(|(g, _)| *g == k));
        match (&args.config, by_flag) {
            (Some(file), false) => anyhow::anyhow!("{}: {e}", file.display()),
            _ => with_flag(e),
        }
    })?;
    if let Some(note) = unused_flags(&cfg, args) {
        eprintln!("{note}");
    }
    let unreached: Vec<usize> = cfg
        .milestones
        .iter()
        .copied()
        .filter(|m| *m >= cfg.epochs)
        .collect();
    if milestones_given && !unreached.is_empty() {
        eprintln!(
            "note: milestones {unreached:?} are at or after the last epoch ({} epochs, counted \
             from 0): the learning rate is never multiplied by gamma there",
            cfg.epochs
        );
    }
    // A teacher given by flag is the user's choice, not the recorded run's.
    let teacher_flag = args.given.iter().any(|(k, _)| *k == "teacher");
    if let Some(run) = args.config.as_deref().and_then(recorded_run) {
        if !teacher_flag {
            same_teacher(&cfg, &run)?;
        }
    }
    Ok(cfg)
}

/// A note naming the flags given that the method never reads: the inner attack's settings for
/// a method without one, and another method's hyperparameters (`--beta` for SAT). They are
/// still recorded in `config.toml`, so the note is the only sign that they did nothing.
fn unused_flags(cfg: &TrainConfig, args: &TrainArgs) -> Option<String> {
    let m = &cfg.method;
    let entry = m.entry().ok()?;
    let unused: Vec<String> = args
        .given
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !entry.uses(k))
        .map(|k| format!("--{}", k.replace('_', "-")))
        .collect();
    (!unused.is_empty()).then(|| {
        format!(
            "note: method {} does not read {}: {} nothing in this run{}",
            m.name,
            unused.join(", "),
            if unused.len() == 1 {
                "it changes"
            } else {
                "they change"
            },
            if m.is_robust() {
                ""
            } else {
                " (it trains without an attack and picks its best checkpoint on clean accuracy)"
            }
        )
    })
}

/// The run directory whose `config.toml` `path` is (its `state.json` beside it), if any.
fn recorded_run(path: &std::path::Path) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let state = dir.join("state.json");
    (path.file_name()? == "config.toml" && state.is_file()).then(|| dir.to_path_buf())
}

/// A run repeated from its `config.toml` learns from the teacher the run learned from: the
/// recorded path is relative to where that run started, and the file there may since hold
/// other weights.
fn same_teacher(cfg: &TrainConfig, run: &std::path::Path) -> anyhow::Result<()> {
    let Some(teacher) = &cfg.teacher else {
        return Ok(());
    };
    if !teacher.is_file() {
        bail!(
            "teacher {}: file not found (the path is as {} recorded it, relative to the folder \
             that run was started in); give the teacher with --teacher",
            teacher.display(),
            run.join("config.toml").display()
        );
    }
    let state = rslad::train::RunDir::new(run).read_state()?;
    if state.is_some_and(|s| rslad::train::teacher_changed(&s, teacher)) {
        bail!(
            "teacher {}: other weights than the teacher the run in {} learned from (their \
             SHA-256 differs); give that teacher with --teacher",
            teacher.display(),
            run.display()
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use rslad::experiment::ExperimentConfig;
    use std::path::Path;

    /// `rslad train ARGS` as the command line parses it.
    fn parse(args: &[&str]) -> Result<TrainArgs, clap::Error> {
        let cmd = TrainArgs::augment_args(clap::Command::new("train"));
        let matches =
            cmd.try_get_matches_from(std::iter::once("train").chain(args.iter().copied()))?;
        TrainArgs::from_arg_matches(&matches)
    }

    /// A value each setting's type accepts, found by trying a few.
    fn sample(key: &str) -> &'static str {
        ["1", "true", "cnn-small", "train", "official", "1,2"]
            .into_iter()
            .find(|v| TrainOverrides::default().set_text(key, v).is_ok())
            .unwrap_or_else(|| panic!("no sample value for {key}"))
    }

    /// Every setting has a flag and a TOML key, and both layers and their merge carry it.
    #[test]
    fn every_setting_has_a_flag_and_a_toml_key() {
        let mut flags = Vec::new();
        let mut all = TrainOverrides::default();
        for s in SETTINGS {
            flags.push(s.flag());
            flags.push(sample(s.key).to_string());
            all.set_text(s.key, sample(s.key)).unwrap();
        }
        let keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        assert_eq!(all.given(), keys, "every field is a setting of the table");
        let args = parse(&flags.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(args.settings().unwrap(), all, "each flag sets its setting");
        let text = toml::to_string(&all).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        for key in &keys {
            assert!(table.contains_key(*key), "{key} has no TOML key in\n{text}");
        }
        assert_eq!(TrainOverrides::from_toml_str(&text).unwrap(), all);
        assert_eq!(TrainOverrides::default().merged(all.clone()), all);
        assert_eq!(all.clone().merged(TrainOverrides::default()), all);
        let bad = parse(&["--attack-bn", "sideways"]).unwrap().settings();
        let e = bad.unwrap_err().to_string();
        assert!(
            e.contains("--attack-bn") && e.contains("not train or eval"),
            "{e}"
        );
        assert!(
            parse(&["--epochs", "x"]).is_err(),
            "a number's syntax is clap's"
        );
    }

    /// Every registered method is reachable from the command line, a TOML config and an
    /// experiment file; a distillation method gets the experiment's teacher.
    #[test]
    fn every_method_is_reachable_from_flags_file_and_experiment() {
        let names: Vec<&str> = rslad::methods::METHODS.iter().map(|m| m.name).collect();
        let students = names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let experiment: ExperimentConfig = toml::from_str(&format!(
            "dataset = 'fashion-mnist'\n[teacher]\nmodel = 'cnn-small'\n\
             [[student]]\nmodel = 'cnn-small'\nmethods = [{students}]\n"
        ))
        .unwrap();
        let cells = experiment.cells(Path::new("/tmp/unused")).unwrap();
        for entry in rslad::methods::METHODS {
            let name = entry.name;
            let mut flags = vec![
                "--method",
                name,
                "--dataset",
                "fashion-mnist",
                "--out",
                "/tmp/unused",
            ];
            if entry.needs_teacher {
                flags.extend(["--teacher", "t.safetensors"]);
            }
            let from_flags = resolve(&parse(&flags).unwrap()).unwrap();
            assert_eq!(from_flags.method.name, name);
            let teacher = if entry.needs_teacher {
                "teacher = 't'\n"
            } else {
                ""
            };
            let file = format!(
                "method = '{name}'\ndataset = 'fashion-mnist'\nout = '/tmp/unused'\n{teacher}"
            );
            let from_file = TrainOverrides::from_toml_str(&file)
                .unwrap()
                .resolve()
                .unwrap();
            assert_eq!(from_file.method.name, name);
            let cell = cells
                .iter()
                .find(|c| c.method == name)
                .unwrap_or_else(|| panic!("no cell for {name}"));
            assert_eq!(cell.train.teacher.is_some(), entry.needs_teacher, "{name}");
            let resolved = cell.train.clone().resolve().unwrap();
            assert_eq!(resolved.method.name, name);
            assert_eq!(resolved.method, from_flags.method, "{name}: same defaults");
        }
    }
}
