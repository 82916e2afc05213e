//! Training: the epoch loop, the learning-rate schedule, per-epoch evaluation, checkpoints and
//! resume. Knows methods only through the [`crate::methods::Method`] trait.

pub mod checkpoint;
pub mod config;
pub mod layout;
pub mod sgd;

pub use checkpoint::{DataRecord, EpochMetrics, RunDir, RunState};
pub use config::{ConfigError, TrainConfig, TrainOverrides};
pub use layout::RunLayout;

use crate::attacks::{self, Pgd, Preset};
use crate::data::{self, Augment, BatchIter, Dataset, LoaderConfig, Split};
use crate::eval::{self, EvalConfig};
use crate::methods::{self, StepInput};
use crate::models::{load_model, Model, ModelSpec};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("teacher {path}: {detail}")]
    Teacher { path: String, detail: String },
    #[error(transparent)]
    Config(Box<ConfigError>),
    #[error(transparent)]
    Method(#[from] methods::UnknownMethod),
    #[error("{}: {source}", path.display())]
    RecordedConfig {
        path: std::path::PathBuf,
        #[source]
        source: Box<ConfigError>,
    },
    #[error(
        "{} holds a run with other settings ({}); continue it with its own settings \
         (`rslad train --resume {}`, with its config.toml as the run wrote it) or choose \
         another run directory (out)",
        out.display(),
        changed.join(", "),
        crate::io::shell_word(out)
    )]
    OtherRun {
        out: std::path::PathBuf,
        changed: Vec<String>,
    },
    #[error(
        "{} has already trained {done} epochs, more than the {epochs} asked for: ask for at \
         least {done} to continue it, or start over in another run directory (out)",
        out.display()
    )]
    MoreEpochs {
        out: std::path::PathBuf,
        done: usize,
        epochs: usize,
    },
    #[error(
        "{} holds a run that learned from other teacher weights than those now in {}; \
         restore that teacher, or start the run over in another run directory (out)",
        out.display(),
        teacher.display()
    )]
    TeacherChanged {
        out: std::path::PathBuf,
        teacher: std::path::PathBuf,
    },
    #[error(
        "the loss became {value} at epoch {epoch}, batch {batch}: training diverged. The run \
         directory keeps the last finished epoch; lower the learning rate (lr) or check the data \
         and the teacher"
    )]
    NonFinite {
        epoch: usize,
        batch: usize,
        value: f32,
    },
    #[error(
        "the weights became unusable in epoch {epoch} ({damage}): training diverged and the \
         epoch was not committed. The run directory keeps the last finished epoch; lower the \
         learning rate (lr) or check momentum, weight_decay and the data"
    )]
    NonFiniteWeights { epoch: usize, damage: String },
    #[error(
        "the model's logits on the test images became NaN or infinite in epoch {epoch}: \
         training diverged and the epoch was not committed. The run directory keeps the last \
         finished epoch; lower the learning rate (lr) or check momentum, weight_decay and the \
         data"
    )]
    NonFiniteLogits { epoch: usize },
    #[error(
        "{} holds a run whose state.json is missing ({} there): it cannot be resumed, and \
         starting over would overwrite it. Restore state.json, or move the directory away to \
         start over",
        out.display(),
        found.join(", ")
    )]
    StateMissing {
        out: std::path::PathBuf,
        found: Vec<String>,
    },
    #[error(
        "{} is in use by another rslad process (its lock file {} is held); wait for it to \
         finish or stop it",
        out.display(),
        lock.display()
    )]
    InUse {
        out: std::path::PathBuf,
        lock: std::path::PathBuf,
    },
    #[error(
        "{} holds a run that {} other {which} data (images or labels) than {} holds now: put \
         the files the run used back there, or start over in another run directory (out)",
        out.display(),
        if *which == "test" { "chose its best checkpoint on" } else { "trained on" },
        data_dir.display()
    )]
    DataChanged {
        out: std::path::PathBuf,
        which: &'static str,
        data_dir: std::path::PathBuf,
    },
    #[error(
        "{} is there and is not a run configuration rslad wrote: the run would replace it with \
         its own; choose another run directory (out), or move the file away",
        path.display()
    )]
    NotARunConfig { path: std::path::PathBuf },
    #[error("no run directory given (out is empty)")]
    NoOut,
    #[error("{}: the run directory (out) is a file, not a directory", out.display())]
    OutNotADirectory { out: std::path::PathBuf },
}

impl From<ConfigError> for TrainError {
    fn from(e: ConfigError) -> Self {
        TrainError::Config(Box::new(e))
    }
}

/// What the loop reports while it runs (the CLI draws progress bars from it).
pub trait Observer {
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    fn batch(&mut self, _done: usize, _loss: f64, _accuracy: f64, _images_per_second: f64) {}
    fn evaluating(&mut self, _what: &str) {}
    fn epoch_end(&mut self, _metrics: &EpochMetrics) {}
    fn message(&mut self, _text: &str) {}
    /// Progress of an evaluation attack: examples done of total, robust so far.
    fn eval_progress(&mut self, _attack: &str, _done: usize, _total: usize, _robust: usize) {}
    /// Inside a batch of a long evaluation attack (`progress.stage` is set): the component
    /// running, points still robust, work done.
    fn eval_stage(&mut self, _progress: &crate::eval::Progress) {}
}

/// An observer that reports nothing.
pub struct Silent;
impl Observer for Silent {}

/// Seed of one batch's randomness (attack starts).
fn batch_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((epoch as u64) << 32)
        .wrapping_add(batch as u64)
}

/// PGD-20 robust accuracy and clean accuracy of `model` on the monitor slice: the RSLAD code's
/// selector (step 0.003 at ε = 8/255, uniform start, CE).
pub fn monitor(
    model: &Model,
    data: &Arc<Dataset>,
    eps: f64,
    seed: u64,
    batch_size: usize,
    device: &Device,
) -> (f64, f64) {
    if eps <= 0.0 {
        // No threat: robust accuracy is clean accuracy (and a zero step is no attack option).
        let (clean, _) = eval::clean_pass(&model.valid(), data, batch_size, device);
        let acc = clean.iter().filter(|&&b| b).count() as f64 / clean.len().max(1) as f64;
        return (acc, acc);
    }
    // PGD_SAT-style PGD-20 with PGD_TRADES' step 0.003 at 8/255.
    let attack = Pgd {
        step_size: eps * attacks::TRADES_STEP_RATIO,
        ..Pgd::preset(Preset::Sat, eps, seed)
    };
    let cfg = EvalConfig {
        eps,
        batch_size,
        seed,
        sanity_checks: false,
    };
    let valid = model.valid();
    let (clean, _) = eval::clean_pass(&valid, data, batch_size, device);
    let ids: Vec<u64> = (0..data.len() as u64).collect();
    let mut sink = Vec::new();
    let (robust, _) = eval::run_attack(
        &valid,
        &attack,
        data,
        &ids,
        &clean,
        &cfg,
        device,
        &mut sink,
        &mut |_| {},
    );
    let share = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len().max(1) as f64;
    (share(&clean), share(&robust))
}

/// Loads and checks the teacher: it must fit the dataset, and `teacher_model` when given.
pub fn load_teacher(cfg: &TrainConfig, device: &Device) -> Result<Option<Model>, TrainError> {
    let Some(path) = &cfg.teacher else {
        return Ok(None);
    };
    let err = |detail: String| TrainError::Teacher {
        path: path.display().to_string(),
        detail,
    };
    let expected = match &cfg.teacher_model {
        Some(name) => Some(ModelSpec::for_dataset(
            name.parse()
                .map_err(|e: crate::models::UnknownModel| err(e.to_string()))?,
            cfg.dataset,
        )),
        None => None,
    };
    // The recorded spec must fit the dataset before the teacher is built.
    // A weights error names the file itself; the message names it once.
    let file_err = |e: crate::models::WeightsError| {
        let text = e.to_string();
        let prefix = format!("{}: ", path.display());
        err(text.strip_prefix(&prefix).unwrap_or(&text).to_string())
    };
    let found = crate::models::peek_spec(path).map_err(file_err)?;
    if let Some(expected) = &expected {
        crate::models::check_expected(path, &found, expected).map_err(file_err)?;
    }
    let want = ModelSpec::for_dataset(cfg.model, cfg.dataset);
    if found.input != want.input || found.num_classes != want.num_classes {
        return Err(err(format!(
            "it takes {} images with {} classes, but {} has {} with {}",
            found.input, found.num_classes, cfg.dataset, want.input, want.num_classes
        )));
    }
    let teacher =
        load_model(path, device, Some(expected.as_ref().unwrap_or(&found))).map_err(file_err)?;
    // Eval mode, plain device: no gradients, running statistics.
    Ok(Some(teacher.valid()))
}

/// A run directory holding another run's state is never overwritten: the same settings
/// resume it, different ones (or other teacher weights) are an error. The settings are those
/// `state.json` recorded; `config.toml` stands in for states written before they were.
fn check_same_run(dir: &RunDir, cfg: &TrainConfig) -> Result<(), TrainError> {
    let Some(state) = dir.read_state()? else {
        // Nothing was committed there yet, unless the files derived from a committed state
        // are there without it (state.json deleted or lost): never train over those.
        let layout = &dir.layout;
        let found: Vec<String> = [layout.metrics(), layout.last(), layout.best()]
            .iter()
            .filter(|p| p.exists())
            .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .collect();
        if !found.is_empty() {
            return Err(TrainError::StateMissing {
                out: cfg.out.clone(),
                found,
            });
        }
        // A run killed before its first epoch leaves the config.toml it wrote; any other file
        // of that name is somebody's, which the run would replace.
        let config = dir.config_path();
        if config.symlink_metadata().is_ok() {
            let ours = std::fs::read_to_string(&config)
                .ok()
                .and_then(|text| TrainConfig::from_toml(&text).ok())
                .is_some_and(|c| !c.rslad_version.is_empty());
            if !ours {
                return Err(TrainError::NotARunConfig { path: config });
            }
        }
        return Ok(());
    };
    let (text, path) = match &state.settings {
        Some(text) => (text.clone(), dir.layout.state()),
        None => match std::fs::read_to_string(dir.config_path()) {
            Ok(text) => (text, dir.config_path()),
            Err(_) => return Ok(()),
        },
    };
    let old = TrainConfig::from_toml(&text).map_err(|source| TrainError::RecordedConfig {
        path,
        source: Box::new(source),
    })?;
    // The epoch count may grow (a longer run continues a shorter one); IAD's start epoch is
    // derived from it; it and the BatchNorm passes matter only to the methods that read them
    // (`MethodConfig::comparable`). The data folder and the teacher's file are places, where
    // the state recorded the hashes of what they hold (checked by `check_same_data` and
    // `teacher_changed`): a moved folder, or a path relative to another working directory,
    // is the same run.
    let data_checked = state.data.is_some();
    let teacher_checked = state
        .teacher
        .as_ref()
        .is_some_and(|t| t.get(TEACHER_SHA256).is_some_and(|h| h.is_string()));
    let comparable = |c: &TrainConfig| {
        let mut c = TrainConfig {
            epochs: 0,
            backend: String::new(),
            out: Default::default(),
            ..c.clone()
        };
        c.method = c.method.comparable();
        if data_checked {
            c.data_dir = None;
        }
        if teacher_checked {
            c.teacher = c.teacher.as_ref().map(|_| Default::default());
        }
        c
    };
    let (old, new) = (comparable(&old), comparable(cfg));
    if old != new {
        return Err(TrainError::OtherRun {
            out: cfg.out.clone(),
            changed: config::setting_changes(&old, &new, &[]),
        });
    }
    // Its weights are those of a longer run: recording them as a shorter one's would be false.
    if state.epochs_done > cfg.epochs {
        return Err(TrainError::MoreEpochs {
            out: cfg.out.clone(),
            done: state.epochs_done,
            epochs: cfg.epochs,
        });
    }
    if let Some(teacher) = &cfg.teacher {
        if teacher_changed(&state, teacher) {
            return Err(TrainError::TeacherChanged {
                out: cfg.out.clone(),
                teacher: teacher.clone(),
            });
        }
    }
    Ok(())
}

/// Whether the teacher file at `path` holds other weights than the ones `state` learned from
/// (states written before the teacher's hash was recorded are taken at their word).
pub fn teacher_changed(state: &RunState, path: &std::path::Path) -> bool {
    let recorded = state
        .teacher
        .as_ref()
        .and_then(|t| t.get(TEACHER_SHA256)?.as_str());
    recorded.is_some_and(|h| crate::io::sha256_file_memo(path).is_ok_and(|now| now != h))
}

/// The key of the teacher checkpoint's SHA-256 in `state.json`'s teacher record.
const TEACHER_SHA256: &str = "sha256";

/// Trains as `cfg` says, resuming from the run directory's committed state if there is one.
pub fn run(
    cfg: &TrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<RunState, TrainError> {
    let run = prepare(cfg, device)?;
    for note in notes(cfg, &run) {
        observer.message(&note);
    }
    let mut sgd = sgd::Sgd::new(cfg.momentum, cfg.weight_decay);
    let (mut model, mut state) = resume_or_start(cfg, &run, &mut sgd, device, observer)?;
    for epoch in state.epochs_done..cfg.epochs {
        let t0 = Instant::now();
        let (trained, totals) =
            train_epoch(cfg, &run, model, &mut sgd, epoch, t0, device, observer)?;
        model = trained;
        evaluate_and_commit(
            cfg, &run, &model, &sgd, &mut state, epoch, &totals, t0, device, observer,
        )?;
    }
    Ok(state)
}

/// Settings that are valid but do less than they say: an image limit above the images there.
fn notes(cfg: &TrainConfig, run: &Prepared) -> Vec<String> {
    let mut notes = Vec::new();
    for (key, limit, have, what) in [
        ("train_limit", cfg.train_limit, run.train.len(), "training"),
        ("test_limit", cfg.test_limit, run.test.len(), "test"),
    ] {
        if limit.is_some_and(|l| l > have) {
            notes.push(format!(
                "note: {key} {} is more than the {have} {what} images there; the run uses all {have}",
                limit.unwrap_or_default()
            ));
        }
    }
    notes
}

/// What every epoch of a run uses: its directory, data, method and teacher.
struct Prepared {
    dir: RunDir,
    /// Held until the run ends (see [`lock_run`]).
    _lock: std::fs::File,
    train: Arc<Dataset>,
    test: Arc<Dataset>,
    /// The test slice PGD-20 monitors each epoch (and the best checkpoint is chosen on).
    monitor_set: Arc<Dataset>,
    method: Box<dyn methods::Method>,
    teacher: Option<Model>,
    spec: ModelSpec,
    /// The hashes of `train` and `test`, recorded in a new run's state.
    data: DataRecord,
}

/// The run directory's lock, held for the whole run: a second process training into the same
/// directory would delete the first one's checkpoints as stale.
fn lock_run(dir: &RunDir, cfg: &TrainConfig) -> Result<std::fs::File, TrainError> {
    let path = dir.layout.lock();
    match crate::io::try_lock(&path) {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(TrainError::InUse {
            out: cfg.out.clone(),
            lock: path,
        }),
        Err(e) => Err(checkpoint::CheckpointError::Io { path, source: e }.into()),
    }
}

/// Checks the settings against the run directory (a different run there is an error), records
/// them, and loads the data, the method and the teacher.
fn prepare(cfg: &TrainConfig, device: &Device) -> Result<Prepared, TrainError> {
    cfg.validate()?;
    if cfg.out.as_os_str().is_empty() {
        return Err(TrainError::NoOut);
    }
    if cfg.out.exists() && !cfg.out.is_dir() {
        return Err(TrainError::OutNotADirectory {
            out: cfg.out.clone(),
        });
    }
    let dir = RunDir::new(&cfg.out);
    std::fs::create_dir_all(&cfg.out).map_err(|e| checkpoint::CheckpointError::Io {
        path: cfg.out.clone(),
        source: e,
    })?;
    let lock = lock_run(&dir, cfg)?;
    check_same_run(&dir, cfg)?;

    let train = Arc::new(data::load(
        cfg.dataset,
        cfg.data_dir.as_deref(),
        Split::Train,
        cfg.train_limit,
    )?);
    let test = Arc::new(data::load(
        cfg.dataset,
        cfg.data_dir.as_deref(),
        Split::Test,
        cfg.test_limit,
    )?);
    let data = DataRecord {
        train_sha256: train.sha256(),
        test_sha256: test.sha256(),
    };
    check_same_data(&dir, cfg, &data)?;
    let monitor_set = Arc::new(test.slice(0, cfg.monitor_examples));
    let method = methods::build(&cfg.method)?;
    let teacher = if cfg.method.needs_teacher() {
        let t = load_teacher(cfg, device)?;
        if t.is_none() {
            return Err(ConfigError::NoTeacher {
                method: cfg.method.name.clone(),
            }
            .into());
        }
        t
    } else {
        None
    };
    let spec = ModelSpec::for_dataset(cfg.model, cfg.dataset);
    // Recorded once everything the run reads is there and is the run's: a refused attempt
    // (other images, a missing teacher) leaves the run's own record.
    dir.write_text(&dir.config_path(), &cfg.to_toml())?;
    Ok(Prepared {
        dir,
        _lock: lock,
        train,
        test,
        monitor_set,
        method,
        teacher,
        spec,
        data,
    })
}

/// A committed state continues only on the images its epochs saw (states written before the
/// images' hashes were recorded are taken at their word).
fn check_same_data(dir: &RunDir, cfg: &TrainConfig, now: &DataRecord) -> Result<(), TrainError> {
    let Some(recorded) = dir.read_state()?.and_then(|s| s.data) else {
        return Ok(());
    };
    let which = if recorded.train_sha256 != now.train_sha256 {
        "training"
    } else if recorded.test_sha256 != now.test_sha256 {
        "test"
    } else {
        return Ok(());
    };
    Err(TrainError::DataChanged {
        out: cfg.out.clone(),
        which,
        data_dir: cfg
            .data_dir
            .clone()
            .unwrap_or_else(|| cfg.dataset.default_dir()),
    })
}

/// The model and state of the last committed epoch, or a fresh model (seeded by the run's
/// seed) and state with the teacher's monitor numbers.
fn resume_or_start(
    cfg: &TrainConfig,
    run: &Prepared,
    sgd: &mut sgd::Sgd,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(Model, RunState), TrainError> {
    let dir = &run.dir;
    let ad = device.clone().autodiff();
    let previous = dir.read_state()?;
    if let Some(state) = &previous {
        dir.check_committed_files(state)?;
    }
    dir.remove_stale(previous.as_ref());
    if let Some(state) = previous.filter(|s| s.epochs_done > 0) {
        let model = dir.load_state_tensors(&state, &run.spec, device, sgd)?;
        dir.derive_user_files(&state)?;
        observer.message(&format!("resuming after epoch {}", state.epochs_done));
        // Checked equal (`check_same_run`) but for the epoch count, which may have grown.
        let state = RunState {
            settings: Some(cfg.to_toml()),
            ..state
        };
        return Ok((model, state));
    }
    device.seed(cfg.seed);
    let model = run.spec.build(&ad).expect("validated model name");
    let mut state = RunState {
        epochs_done: 0,
        weights: String::new(),
        optimizer: String::new(),
        best: None,
        seed: cfg.seed,
        next_epoch: 0,
        metrics: Vec::new(),
        teacher: None,
        settings: Some(cfg.to_toml()),
        data: Some(run.data.clone()),
    };
    if let Some(t) = &run.teacher {
        observer.evaluating("teacher");
        let (clean, robust) = monitor(
            t,
            &run.monitor_set,
            cfg.method.eps,
            cfg.seed,
            cfg.eval_batch_size,
            device,
        );
        observer.message(&format!(
            "teacher {}: clean {:.2}%, PGD-20 {:.2}% on {} test images",
            t.spec.name,
            100.0 * clean,
            100.0 * robust,
            run.monitor_set.len()
        ));
        state.teacher = Some(serde_json::json!({
            "model": t.spec.name,
            "checkpoint": cfg.teacher.as_ref().map(|p| p.display().to_string()),
            TEACHER_SHA256: cfg.teacher.as_ref().and_then(|p| crate::io::sha256_file_memo(p).ok()),
            "monitor_clean_accuracy": clean,
            "monitor_robust_accuracy": robust,
        }));
    }
    Ok((model, state))
}

/// Sums over one epoch's training batches.
struct EpochTotals {
    loss_sum: f64,
    correct: usize,
    seen: usize,
    train_seconds: f64,
}

/// One pass over the training set: a method step and an SGD step per batch (`t0`: the
/// epoch's start, for its speed).
#[allow(clippy::too_many_arguments)]
fn train_epoch(
    cfg: &TrainConfig,
    run: &Prepared,
    mut model: Model,
    sgd: &mut sgd::Sgd,
    epoch: usize,
    t0: Instant,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(Model, EpochTotals), TrainError> {
    let lr = cfg.lr_at(epoch);
    let augment = if cfg.augment {
        cfg.dataset.default_augment()
    } else {
        Augment::NONE
    };
    let loader = BatchIter::new(
        run.train.clone(),
        LoaderConfig {
            batch_size: cfg.batch_size,
            shuffle: true,
            augment,
            seed: cfg.seed,
            epoch,
        },
    );
    observer.epoch_start(epoch, cfg.epochs, loader.num_batches);
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
    for (bi, batch) in loader.enumerate() {
        let (x, y) = batch.to_tensors(run.train.shape, device);
        let ids: Vec<u64> = batch.indices.iter().map(|&i| i as u64).collect();
        let teacher_logits = run
            .teacher
            .as_ref()
            .map(|t| methods::teacher_logits(t, x.clone()));
        let input = StepInput {
            x,
            y: y.clone(),
            ids: &ids,
            epoch,
            seed: batch_seed(cfg.seed, epoch, bi),
            teacher_logits,
        };
        let out = methods::step(run.method.as_ref(), &model, run.teacher.as_ref(), &input);
        let loss_value = out.loss.clone().into_scalar::<f32>();
        if !loss_value.is_finite() {
            return Err(TrainError::NonFinite {
                epoch: epoch + 1,
                batch: bi + 1,
                value: loss_value,
            });
        }
        let n = batch.len();
        let pred = out
            .logits
            .detach()
            .without_autodiff()
            .argmax(1)
            .reshape([n]);
        correct += pred.equal(y).int().sum().into_scalar::<i64>() as usize;
        seen += n;
        loss_sum += loss_value as f64 * n as f64;
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = sgd.step(lr, model, grads);
        observer.batch(
            bi + 1,
            loss_sum / seen as f64,
            correct as f64 / seen as f64,
            seen as f64 / t0.elapsed().as_secs_f64(),
        );
    }
    let totals = EpochTotals {
        loss_sum,
        correct,
        seen,
        train_seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((model, totals))
}

/// Clean test accuracy and (robust methods) the PGD-20 monitor after an epoch, then the
/// epoch's commit: weights, optimizer, best checkpoint and metrics.
#[allow(clippy::too_many_arguments)]
fn evaluate_and_commit(
    cfg: &TrainConfig,
    run: &Prepared,
    model: &Model,
    sgd: &sgd::Sgd,
    state: &mut RunState,
    epoch: usize,
    totals: &EpochTotals,
    t0: Instant,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(), TrainError> {
    observer.evaluating("test");
    let valid = model.valid();
    let (clean_flags, non_finite) =
        eval::clean_pass(&valid, &run.test, cfg.eval_batch_size, device);
    // Weights can stay finite while every logit overflows (a huge learning rate): such an
    // epoch is diverged too, and is not committed.
    if non_finite {
        return Err(TrainError::NonFiniteLogits { epoch: epoch + 1 });
    }
    let test_accuracy =
        clean_flags.iter().filter(|&&b| b).count() as f64 / clean_flags.len().max(1) as f64;
    let (robust_accuracy, monitor_clean) = if cfg.method.is_robust() {
        observer.evaluating("PGD-20");
        let (c, r) = monitor(
            &valid,
            &run.monitor_set,
            cfg.method.eps,
            cfg.seed,
            cfg.eval_batch_size,
            device,
        );
        (Some(r), Some(c))
    } else {
        (None, None)
    };
    let seen = totals.seen;
    let metrics = EpochMetrics {
        epoch: epoch + 1,
        lr: cfg.lr_at(epoch),
        train_loss: totals.loss_sum / seen.max(1) as f64,
        train_accuracy: totals.correct as f64 / seen.max(1) as f64,
        test_accuracy,
        robust_accuracy,
        monitor_clean_accuracy: monitor_clean,
        seconds: t0.elapsed().as_secs_f64(),
        images_per_second: seen as f64 / totals.train_seconds,
    };
    let metric = robust_accuracy.unwrap_or(test_accuracy);
    let new_best = match &state.best {
        Some(b) if b.metric >= metric => None,
        _ => Some(metric),
    };
    // A step can leave non-finite weights without a non-finite loss (the last batch of an
    // epoch): such weights are never committed as a finished epoch.
    if let Some(damage) = crate::models::damaged_tensor(&valid) {
        return Err(TrainError::NonFiniteWeights {
            epoch: epoch + 1,
            damage,
        });
    }
    state.metrics.push(metrics.clone());
    state.epochs_done = epoch + 1;
    state.next_epoch = epoch + 1;
    run.dir.commit_epoch(&valid, sgd, state, new_best)?;
    observer.epoch_end(&metrics);
    Ok(())
}
