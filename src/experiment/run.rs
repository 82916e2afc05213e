//! Running cells: training, then the evaluations each cell's results files record.

use super::config::*;
use crate::attacks::transfer::SURROGATE_SHA256;
use crate::data::DatasetKind;
use crate::eval::{self, EvalError, EvalRequest, EvalResults, Shard};
use crate::train::layout::{EvalFile, RunLayout, Sweep, SweepPoint};
use crate::train::{self, Observer, TrainError};
use std::path::{Path, PathBuf};

/// Why an experiment stopped. A training or evaluation error keeps its source.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The experiment file or a cell's settings.
    #[error(transparent)]
    Config(#[from] GridError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: the {role} checkpoint given in the experiment file is missing",
        path.display()
    )]
    MissingCheckpoint { path: PathBuf, role: Role },
    #[error("the {role} checkpoint given in the experiment file: {source}")]
    GivenCheckpoint {
        role: Role,
        #[source]
        source: crate::models::WeightsError,
    },
    #[error(
        "cell {cell} needs the teacher {}, which has not finished: run the teacher cell first \
         (`rslad experiment --list-cells` shows where it stands)",
        teacher.display()
    )]
    TeacherNotTrained { cell: String, teacher: PathBuf },
    #[error(
        "cell {cell} needs the teacher's weights {}, which are not there although its cell has \
         finished (a copy without *.safetensors?): copy them back, or move the teacher's \
         cell folder aside to train it again",
        teacher.display()
    )]
    TeacherWeightsMissing { cell: String, teacher: PathBuf },
    #[error(
        "cell {cell}: its black-box tables are crafted on the surrogate, and cell {surrogate} \
         has not finished: run it first (this cell's training is kept, a rerun continues)"
    )]
    SurrogateNotTrained { cell: String, surrogate: String },
    #[error(
        "cell {cell}: {} holds its training under other settings than the experiment file \
         gives now ({}); restore those settings, or move the folder aside to train the cell \
         again",
        folder.display(),
        changed.join(", ")
    )]
    CellOtherRun {
        cell: String,
        folder: PathBuf,
        changed: Vec<String>,
    },
    #[error("cell {cell}: {source}")]
    Train {
        cell: String,
        #[source]
        source: TrainError,
    },
    #[error("cell {cell}: {source}")]
    Eval {
        cell: String,
        #[source]
        source: EvalError,
    },
    #[error("cell {cell}: the evaluation parts in {} do not merge: {source}", dir.display())]
    Parts {
        cell: String,
        dir: PathBuf,
        #[source]
        source: Box<eval::MergeError>,
    },
    #[error(
        "cell {cell} finished with other settings than the experiment file's ({what}); its \
         results belong to those settings: restore them, or move {} out of the experiment \
         folder (with the students that learned from it, if it is the teacher) to run it again",
        dir.display()
    )]
    Changed {
        cell: String,
        dir: PathBuf,
        what: String,
    },
    #[error("attacks = \"{list}\" in the experiment file: {source}")]
    Attacks {
        list: String,
        #[source]
        source: crate::attacks::AttackError,
    },
    #[error(
        "cell {cell} is being run by another rslad process (it holds {}); wait for it to \
         finish or stop it",
        lock.display()
    )]
    InUse { cell: String, lock: PathBuf },
    #[error(
        "{} holds cells evaluated with other evaluation settings ({}); they would not be \
         evaluated again: restore the settings, or run the changed experiment into another \
         folder (--out)",
        out.display(),
        changes.join(", ")
    )]
    EvaluationChanged { out: PathBuf, changes: Vec<String> },
    #[error(
        "{}: the surrogate's path holds a comma, which an attack list cannot carry; choose an \
         output folder (--out) or surrogate checkpoint path without one",
        path.display()
    )]
    CommaInPath { path: PathBuf },
    #[error(
        "{} holds other {which} data (images or labels) than cell {cell} {}: point data_dir \
         back at the folder the experiment used, or run it over in another output folder (--out)",
        dir.display(),
        if *which == "test" { "was evaluated on" } else { "was trained on" }
    )]
    OtherImages {
        which: &'static str,
        cell: String,
        dir: PathBuf,
    },
    #[error(
        "there is no cell {index}: the experiment has cells 0 to {} (`--list-cells` lists them)",
        count.saturating_sub(1)
    )]
    NoSuchCell { index: String, count: usize },
    #[error(
        "there is no cell named '{name}'{}: `--list-cells` lists the cells, with their numbers \
         and names",
        similar.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default()
    )]
    NoCellNamed {
        name: String,
        similar: Option<String>,
    },
    #[error("the experiment settings cannot be recorded as TOML: {0}")]
    Record(#[from] toml::ser::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExperimentError + '_ {
    move |source| ExperimentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), ExperimentError> {
    let text = serde_json::to_string_pretty(value).expect("results serialise");
    crate::io::write_atomic(path, text.as_bytes()).map_err(io_err(path))
}

/// The checkpoints a cell evaluates.
struct Checkpoints {
    best: PathBuf,
    last: PathBuf,
}

/// One results file of a cell: which checkpoint, under which attacks.
struct EvalJob {
    file: EvalFile,
    checkpoint: PathBuf,
    attacks: String,
    /// SHA-256 of the surrogate the transfer attacks craft on (black-box only).
    surrogate: Option<String>,
}

/// What can be checked before any cell runs: the attack list parses for every model of the
/// grid, and the checkpoints the file gives exist.
fn check_before_running(
    cfg: &ExperimentConfig,
    cells: &[Cell],
    device: &burn::prelude::Device,
) -> Result<(), ExperimentError> {
    let kind = cfg.kind().map_err(ExperimentError::Config)?;
    let eps = cfg.eps().map_err(ExperimentError::Config)?;
    let list = cfg.attack_list();
    let mut checked = Vec::new();
    for cell in cells {
        if let Some(p) = &cell.checkpoint {
            if !p.is_file() {
                return Err(ExperimentError::MissingCheckpoint {
                    path: p.clone(),
                    role: cell.role,
                });
            }
            // Another model's weights would be evaluated and reported under this cell's model.
            let given = |source| ExperimentError::GivenCheckpoint {
                role: cell.role,
                source,
            };
            let arch = cell
                .model
                .parse::<crate::models::Arch>()
                .map_err(|e| given(e.into()))?;
            let expected = crate::models::ModelSpec::for_dataset(arch, kind);
            let found = crate::models::peek_spec(p).map_err(given)?;
            crate::models::check_expected(p, &found, &expected).map_err(given)?;
        }
        let Some(arch) = cell.train.model.filter(|a| !checked.contains(a)) else {
            continue;
        };
        checked.push(arch);
        let spec = crate::models::ModelSpec::for_dataset(arch, kind);
        let ctx = crate::attacks::AttackContext {
            eps,
            seed: cell.seed,
            device,
            target: &spec,
        };
        crate::attacks::parse_list(&list, &ctx).map_err(|source| ExperimentError::Attacks {
            list: list.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The evaluation settings finished cells were evaluated with (recorded in `experiment.toml`)
/// must still be the file's: a changed attack list, image count or sweep would not reach
/// those cells, and the report would mix both under one heading.
fn refuse_changed_evaluation(
    cfg: &ExperimentConfig,
    out: &Path,
    cells: &[Cell],
) -> Result<(), ExperimentError> {
    let path = RunLayout::new(out).experiment_config();
    let Ok(old) = ExperimentConfig::from_file(&path) else {
        return Ok(());
    };
    // The values in effect, defaults included (an omitted key and its default are one
    // setting); Square's budget matters only where a surrogate makes black-box tables.
    let words = |c: &ExperimentConfig| {
        [
            ("attacks", c.attack_list()),
            ("eval_examples", c.eval_count().to_string()),
            (
                "square_queries",
                match c.surrogate {
                    Some(_) => c.square_budget().to_string(),
                    None => String::new(),
                },
            ),
            ("eps_sweep", c.sweep_count().to_string()),
        ]
    };
    let changes: Vec<String> = words(&old)
        .into_iter()
        .zip(words(cfg))
        .filter(|(a, b)| a.1 != b.1)
        .map(|((key, a), (_, b))| format!("{key}: {a} -> {b}"))
        .collect();
    // The surrogate is never evaluated: its being finished binds no evaluation setting.
    let finished = cells
        .iter()
        .filter(|c| c.role != Role::Surrogate)
        .any(|c| read_record(out, c).is_some_and(|r| r.finished));
    if changes.is_empty() || !finished {
        return Ok(());
    }
    Err(ExperimentError::EvaluationChanged {
        out: out.to_path_buf(),
        changes,
    })
}

/// A cell finished with other settings is an error, never silently reused or retrained.
fn refuse_changed(cfg: &ExperimentConfig, out: &Path, cell: &Cell) -> Result<(), ExperimentError> {
    match cell_state(cfg, out, cell) {
        CellState::Changed(what) => Err(ExperimentError::Changed {
            cell: cell.name.clone(),
            dir: cell_dir(out, cell),
            what,
        }),
        _ => Ok(()),
    }
}

/// Runs one cell to the end (resuming whatever it had done).
pub fn run_cell(
    cfg: &ExperimentConfig,
    out: &Path,
    cell: &Cell,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<(), ExperimentError> {
    let layout = cell_layout(out, cell);
    std::fs::create_dir_all(layout.root()).map_err(io_err(layout.root()))?;
    // Two processes on one cell (an array job started twice) would evaluate it twice over.
    let lock = layout.cell_lock();
    let _held = crate::io::lock_within(&lock, std::time::Duration::from_secs(2))
        .map_err(io_err(&lock))?
        .ok_or_else(|| ExperimentError::InUse {
            cell: cell.name.clone(),
            lock: lock.clone(),
        })?;
    let eps = cfg.eps().map_err(ExperimentError::Config)?;
    let kind = cfg.kind().map_err(ExperimentError::Config)?;
    if cell.train.teacher.is_some() {
        check_finished(cfg, out, cell, Role::Teacher)?;
    }
    let checkpoints = train_or_take(cell, &layout, device, observer)?;
    for job in eval_jobs(cfg, out, cell, &checkpoints) {
        let path = layout.eval(job.file);
        if of_these_weights(&path, &job.checkpoint, job.surrogate.as_deref()) {
            continue;
        }
        if job.file == EvalFile::BlackBoxBest {
            check_finished(cfg, out, cell, Role::Surrogate)?;
        }
        let r = match same_weights_result(&layout, job.file, &job.checkpoint) {
            Some(r) => {
                observer.message(&format!(
                    "{}: {} holds the best checkpoint's weights: its results are the same",
                    cell.name,
                    job.checkpoint.display()
                ));
                r
            }
            None => {
                observer.message(&format!(
                    "{}: evaluating {} with {}",
                    cell.name,
                    job.checkpoint.display(),
                    job.attacks
                ));
                evaluate_in_parts(cfg, cell, &layout, &job, kind, eps, device, observer)?
            }
        };
        write_json(&path, &r)?;
    }
    remove_parts(&layout)?;
    sweep(
        cfg,
        cell,
        &layout,
        &checkpoints.best,
        kind,
        eps,
        device,
        observer,
    )?;
    let record = CellRecord {
        cell: cell.clone(),
        // Canonical, as results files name it (`fmnist` is `fashion-mnist`).
        dataset: kind.name().to_string(),
        eps,
        finished: true,
    };
    write_json(&layout.cell_record(), &record)
}

/// The cell's checkpoints: the one the experiment file gives, or its training's (run, or
/// resumed, to the end here).
fn train_or_take(
    cell: &Cell,
    layout: &RunLayout,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<Checkpoints, ExperimentError> {
    if let Some(p) = &cell.checkpoint {
        if !p.is_file() {
            return Err(ExperimentError::MissingCheckpoint {
                path: p.clone(),
                role: cell.role,
            });
        }
        return Ok(checkpoints_of(cell, layout));
    }
    if let Some(teacher) = &cell.train.teacher {
        // The teacher's cell has finished (`check_finished`, before this).
        if !teacher.is_file() {
            return Err(ExperimentError::TeacherWeightsMissing {
                cell: cell.name.clone(),
                teacher: teacher.clone(),
            });
        }
    }
    let tc = cell.train_config()?;
    train::run(&tc, device, observer).map_err(|source| match source {
        // `rslad train --resume` is no advice for a cell.
        TrainError::OtherRun { changed, .. } => ExperimentError::CellOtherRun {
            cell: cell.name.clone(),
            folder: layout.root().to_path_buf(),
            changed,
        },
        TrainError::DataChanged {
            which, data_dir, ..
        } => ExperimentError::CellOtherRun {
            cell: cell.name.clone(),
            folder: layout.root().to_path_buf(),
            changed: vec![format!("the {which} data in {}", data_dir.display())],
        },
        TrainError::MoreEpochs { done, epochs, .. } => ExperimentError::CellOtherRun {
            cell: cell.name.clone(),
            folder: layout.root().to_path_buf(),
            changed: vec![format!("epochs: {done} trained -> {epochs}")],
        },
        source => ExperimentError::Train {
            cell: cell.name.clone(),
            source,
        },
    })?;
    Ok(checkpoints_of(cell, layout))
}

/// The checkpoints a cell evaluates: the one the experiment file gives, or its training's.
fn checkpoints_of(cell: &Cell, layout: &RunLayout) -> Checkpoints {
    match &cell.checkpoint {
        Some(p) => Checkpoints {
            best: p.clone(),
            last: p.clone(),
        },
        None => Checkpoints {
            best: layout.best(),
            last: layout.last(),
        },
    }
}

/// The results files a cell writes: white-box on the best and (when trained here and asked
/// for) the last checkpoint, black-box on the best when there is a surrogate (and the seed is
/// among `blackbox_seeds`). The surrogate only crafts transfer attacks: it gets no tables.
fn eval_jobs(
    cfg: &ExperimentConfig,
    out: &Path,
    cell: &Cell,
    checkpoints: &Checkpoints,
) -> Vec<EvalJob> {
    if cell.role == Role::Surrogate {
        return Vec::new();
    }
    let attacks = cfg.attack_list();
    let mut v = vec![EvalJob {
        file: EvalFile::Best,
        checkpoint: checkpoints.best.clone(),
        attacks: attacks.clone(),
        surrogate: None,
    }];
    if cell.checkpoint.is_none() && cfg.eval_last.unwrap_or(true) {
        v.push(EvalJob {
            file: EvalFile::Last,
            checkpoint: checkpoints.last.clone(),
            attacks,
            surrogate: None,
        });
    }
    let blackbox = cell.role != Role::Student
        || cfg
            .blackbox_seeds
            .as_ref()
            .is_none_or(|b| b.contains(&cell.seed));
    if let (Some(s), true) = (cfg.surrogate_checkpoint(out), blackbox) {
        let q = cfg.square_budget();
        v.push(EvalJob {
            file: EvalFile::BlackBoxBest,
            checkpoint: checkpoints.best.clone(),
            attacks: format!("transfer:{},square:queries={q}", s.display()),
            surrogate: crate::io::sha256_file_memo(&s).ok(),
        });
    }
    v
}

/// Robust accuracy against ε (PGD, SAT preset, on at most 500 examples) from 0 to 2ε on the
/// best checkpoint, unless `sweep.json` is there already.
#[allow(clippy::too_many_arguments)]
fn sweep(
    cfg: &ExperimentConfig,
    cell: &Cell,
    layout: &RunLayout,
    best: &Path,
    kind: DatasetKind,
    eps: f64,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<(), ExperimentError> {
    if sweep_done(cfg, cell, layout) {
        return Ok(());
    }
    let (points, path) = (sweep_points(cfg, cell), layout.sweep());
    observer.message(&format!("{}: robust accuracy against eps", cell.name));
    let n = cfg.eval_count();
    let mut sweep: Sweep = Vec::new();
    for k in 0..points {
        let e = 2.0 * eps * k as f64 / (points - 1) as f64;
        let request = eval_request(best, kind, cfg, e, "pgd-sat", n.min(500), None);
        let r = eval::evaluate_checkpoint(request, device, &mut |_| {}).map_err(|source| {
            ExperimentError::Eval {
                cell: cell.name.clone(),
                source,
            }
        })?;
        sweep.push(SweepPoint {
            eps: e,
            robust_accuracy: r.attacks[0].robust_accuracy,
            clean_accuracy: r.clean_accuracy,
        });
    }
    write_json(&path, &sweep)
}

/// Points of the cell's robust-accuracy-against-eps sweep (the surrogate gets none).
fn sweep_points(cfg: &ExperimentConfig, cell: &Cell) -> usize {
    if cell.role == Role::Surrogate {
        0
    } else {
        cfg.sweep_count()
    }
}

/// Whether the cell owes no sweep, or its sweep file reads as all its points (a damaged one,
/// or one of another setting, is computed again).
fn sweep_done(cfg: &ExperimentConfig, cell: &Cell, layout: &RunLayout) -> bool {
    let points = sweep_points(cfg, cell);
    points <= 1
        || std::fs::read_to_string(layout.sweep())
            .ok()
            .and_then(|t| serde_json::from_str::<Sweep>(&t).ok())
            .is_some_and(|s| s.len() == points)
}

fn read_results(path: &Path) -> Option<EvalResults> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Whether `results` exists and was computed on the weights now in `ckpt` and, for black-box
/// results, crafted on the surrogate weights whose hash is `surrogate` (a retrained cell's or
/// surrogate's old results are computed again, not reused).
fn of_these_weights(results: &Path, ckpt: &Path, surrogate: Option<&str>) -> bool {
    read_results(results).is_some_and(|r| of_weights(&r, ckpt) && !other_surrogate(&r, surrogate))
}

/// Whether `r` was computed on the weights now in `ckpt` (by the hash it recorded). Weights
/// removed since (results shared without them, or deleted to save room) contradict nothing:
/// the results stand as recorded.
fn of_weights(r: &EvalResults, ckpt: &Path) -> bool {
    match crate::io::sha256_file_memo(ckpt) {
        Ok(h) => r.checkpoint_sha256.as_deref() == Some(h.as_str()),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Whether `r`, the results `file` of the cell in `cell_dir`, were computed on other weights
/// than the cell's checkpoint holds now (retrained, trained on, or replaced since): they are
/// not the cell's results any more.
pub(crate) fn results_of_other_weights(
    cell_dir: &Path,
    cell: &Cell,
    file: EvalFile,
    r: &EvalResults,
) -> bool {
    // A given checkpoint's path is recorded as written, relative to where the experiment
    // ran: only the cell's own weights are looked at.
    if cell.checkpoint.is_some() {
        return false;
    }
    let c = checkpoints_of(cell, &RunLayout::new(cell_dir));
    let ckpt = match file {
        EvalFile::Last => c.last,
        EvalFile::Best | EvalFile::BlackBoxBest => c.best,
    };
    // Weights that cannot be read contradict nothing.
    crate::io::sha256_file_memo(&ckpt)
        .is_ok_and(|h| r.checkpoint_sha256.as_deref() != Some(h.as_str()))
}

/// The surrogate hashes the transfer attacks of `r` recorded.
fn recorded_surrogates(r: &EvalResults) -> Vec<&str> {
    r.attacks
        .iter()
        .filter_map(|a| a.settings.get(SURROGATE_SHA256)?.as_str())
        .collect()
}

/// Whether `r` records a surrogate other than `surrogate`. Results written before surrogates
/// were hashed record none and are kept: their surrogate is not known to have changed.
fn other_surrogate(r: &EvalResults, surrogate: Option<&str>) -> bool {
    surrogate.is_some_and(|h| recorded_surrogates(r).iter().any(|&s| s != h))
}

/// Whether the finished `cell`'s black-box results were crafted on other weights than the
/// experiment's surrogate has now.
pub(crate) fn blackbox_stale(cfg: &ExperimentConfig, out: &Path, cell: &Cell) -> bool {
    // The surrogate is hashed only for results that recorded one.
    let Some(r) = read_results(&cell_layout(out, cell).eval(EvalFile::BlackBoxBest))
        .filter(|r| !recorded_surrogates(r).is_empty())
    else {
        return false;
    };
    cfg.surrogate_checkpoint(out)
        .and_then(|s| crate::io::sha256_file_memo(&s).ok())
        .is_some_and(|hash| other_surrogate(&r, Some(&hash)))
}

/// Whether every results file the finished `cell` owes is there and readable: a deleted or
/// damaged one (or one a newly listed black-box seed asks for) makes the cell run again, which
/// evaluates only what is missing.
pub(crate) fn results_intact(cfg: &ExperimentConfig, out: &Path, cell: &Cell) -> bool {
    let layout = cell_layout(out, cell);
    // Results of other weights (a file written over by hand, or by `rslad eval --json`) are
    // not this cell's.
    let of_these = |job: &EvalJob| {
        read_results(&layout.eval(job.file)).is_some_and(|r| of_weights(&r, &job.checkpoint))
    };
    sweep_done(cfg, cell, &layout)
        && eval_jobs(cfg, out, cell, &checkpoints_of(cell, &layout))
            .iter()
            .all(of_these)
}

/// Students distill the teacher's final weights and transfer attacks craft on the
/// surrogate's: a teacher or surrogate cell still training (run by another process) has only
/// an earlier epoch's best checkpoint, or none. A given checkpoint is final.
fn check_finished(
    cfg: &ExperimentConfig,
    out: &Path,
    cell: &Cell,
    role: Role,
) -> Result<(), ExperimentError> {
    let cells = cfg.cells(out)?;
    match cells.iter().find(|c| c.role == role) {
        Some(s) if s.checkpoint.is_none() && !is_finished(cfg, out, s) => match role {
            Role::Surrogate => Err(ExperimentError::SurrogateNotTrained {
                cell: cell.name.clone(),
                surrogate: format!("{} ({})", s.index, s.name),
            }),
            _ => Err(ExperimentError::TeacherNotTrained {
                cell: cell.name.clone(),
                teacher: cell_dir(out, s),
            }),
        },
        _ => Ok(()),
    }
}

/// Whether the finished `cell` learned from other teacher weights than its teacher file holds
/// now (its results would be a stranger's).
pub(crate) fn teacher_replaced(out: &Path, cell: &Cell) -> bool {
    let Some(teacher) = &cell.train.teacher else {
        return false;
    };
    let Ok(Some(state)) = crate::train::RunDir::new(&cell_dir(out, cell)).read_state() else {
        return false;
    };
    crate::train::teacher_changed(&state, teacher)
}

/// The last checkpoint is often the best one (the final epoch has the lowest learning rate).
/// Evaluation is seeded and deterministic, so the same weights get the best checkpoint's
/// results, relabelled, instead of a second run of every attack.
fn same_weights_result(layout: &RunLayout, file: EvalFile, ckpt: &Path) -> Option<EvalResults> {
    if file != EvalFile::Last {
        return None;
    }
    let mut r = read_results(&layout.eval(EvalFile::Best))?;
    // The results belong to the weights whose hash they recorded.
    let hash = crate::io::sha256_file(ckpt).ok()?;
    if r.checkpoint_sha256.as_deref() != Some(hash.as_str()) {
        return None;
    }
    r.checkpoint = Some(ckpt.display().to_string());
    Some(r)
}

/// One results file of a cell, evaluated one batch of examples at a time: each part is written
/// when it is finished and a resumed cell skips the parts it finds, so a killed run loses at
/// most one batch of attacks (AutoAttack on one batch of a robust model runs for most of an
/// hour on a CPU). The parts merge into exactly the unsplit result: attack noise is drawn per
/// example id and rows never interact (`attacks/rng.rs`).
#[allow(clippy::too_many_arguments)]
fn evaluate_in_parts(
    cfg: &ExperimentConfig,
    cell: &Cell,
    layout: &RunLayout,
    job: &EvalJob,
    kind: DatasetKind,
    eps: f64,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<EvalResults, ExperimentError> {
    let eval_err = |source| ExperimentError::Eval {
        cell: cell.name.clone(),
        source,
    };
    // The parts are named by their share of the images that exist: a test set smaller than
    // eval_examples is evaluated whole (as `rslad eval` does), and its parts still resume.
    let wanted = cfg.eval_count();
    let test = crate::data::load(
        kind,
        cfg.data_dir.as_deref(),
        crate::data::Split::Test,
        Some(wanted),
    )
    .map_err(|e| eval_err(EvalError::Data(e)))?;
    let (n, data) = (test.len(), test.sha256());
    if n < wanted {
        observer.message(&format!(
            "{}: the test set has {n} images, fewer than eval_examples = {wanted}: evaluating \
             those {n}",
            cell.name
        ));
    }
    let batch = cfg.eval_batch_size.unwrap_or(EVAL_BATCH_SIZE).max(1);
    let count = n.div_ceil(batch).max(1);
    let hash = crate::io::sha256_file(&job.checkpoint).map_err(io_err(&job.checkpoint))?;
    let dir = layout.parts();
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut parts: Vec<EvalResults> = Vec::with_capacity(count);
    for index in 0..count {
        let path = layout.eval_part(job.file, &parts_key(&job.attacks), index, count);
        let shard = Shard { index, count };
        let done = finished_part(&path, &hash, job.surrogate.as_deref(), eps, shard, n)
            .filter(|p| p.data_sha256.as_ref().is_none_or(|h| *h == data));
        if let Some(done) = done {
            parts.push(done);
            continue;
        }
        // Progress counts the examples of the earlier parts as done.
        let start = shard.range(n).0;
        let mut before = std::collections::HashMap::<String, usize>::new();
        for a in parts.iter().flat_map(|p| &p.attacks) {
            *before.entry(a.name.clone()).or_default() += a.robust.matches('1').count();
        }
        let request = eval_request(
            &job.checkpoint,
            kind,
            cfg,
            eps,
            &job.attacks,
            n,
            Some(shard),
        );
        let part = eval::evaluate_checkpoint(request, device, &mut |p| {
            let shifted = eval::Progress {
                done: start + p.done,
                total: n,
                robust: before.get(p.attack).copied().unwrap_or(0) + p.robust,
                ..p
            };
            match &shifted.stage {
                Some(_) => observer.eval_stage(&shifted),
                None => observer.eval_progress(shifted.attack, shifted.done, n, shifted.robust),
            }
        })
        .map_err(eval_err)?;
        write_json(&path, &part)?;
        parts.push(part);
    }
    eval::merge_shards(parts).map_err(|source| ExperimentError::Parts {
        cell: cell.name.clone(),
        dir,
        source: Box::new(source),
    })
}

/// The name of an attack list in its evaluation parts' file names (the first 8 hex digits of
/// its SHA-256): parts left by a run with other attacks are not reused.
pub fn parts_key(attacks: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(attacks.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The part at `path` when it was finished for these weights (`hash`), surrogate, ε and
/// examples; a part left by other weights or settings is not reused. A black-box part must
/// record its surrogate (an unhashed one would not merge with the parts written now).
fn finished_part(
    path: &Path,
    hash: &str,
    surrogate: Option<&str>,
    eps: f64,
    shard: Shard,
    n: usize,
) -> Option<EvalResults> {
    let r = read_results(path)?;
    let (a, b) = shard.range(n);
    let ids: Vec<u64> = (a as u64..b as u64).collect();
    let crafted_here = surrogate.is_none()
        || (!recorded_surrogates(&r).is_empty() && !other_surrogate(&r, surrogate));
    (r.checkpoint_sha256.as_deref() == Some(hash)
        && r.eps == eps
        && r.example_ids == ids
        && crafted_here)
        .then_some(r)
}

/// The parts directory once every results file of the cell is written.
fn remove_parts(layout: &RunLayout) -> Result<(), ExperimentError> {
    let dir = layout.parts();
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&dir)(e)),
        _ => Ok(()),
    }
}

/// The evaluation batch size when the experiment file gives none.
const EVAL_BATCH_SIZE: usize = 256;

/// The first `n` test images of `ckpt` (or `shard` of them) under `list` at `eps`, with the
/// experiment's data and batch size, seed 0 and no sanity checks.
#[allow(clippy::too_many_arguments)]
fn eval_request(
    ckpt: &Path,
    kind: DatasetKind,
    cfg: &ExperimentConfig,
    eps: f64,
    list: &str,
    n: usize,
    shard: Option<Shard>,
) -> EvalRequest {
    EvalRequest {
        checkpoint: ckpt.to_path_buf(),
        dataset: kind,
        data_dir: cfg.data_dir.clone(),
        attacks: list.to_string(),
        eps,
        n_examples: Some(n),
        shard,
        batch_size: cfg.eval_batch_size.unwrap_or(EVAL_BATCH_SIZE),
        seed: 0,
        sanity_checks: false,
    }
}

/// Everything about the experiment file that can be checked before a cell runs: settings,
/// the attack list, the given checkpoints, and that finished cells were evaluated with these
/// evaluation settings on these test images (`--list-cells` checks these too).
pub fn check(
    cfg: &ExperimentConfig,
    out: &Path,
    cells: &[Cell],
    device: &burn::prelude::Device,
) -> Result<(), ExperimentError> {
    cfg.validate(cells).map_err(ExperimentError::Config)?;
    // The transfer attacks name the surrogate inside an attack list, whose items a comma
    // separates.
    if let Some(s) = cfg.surrogate_checkpoint(out) {
        if s.to_string_lossy().contains(',') {
            return Err(ExperimentError::CommaInPath { path: s });
        }
    }
    refuse_changed_evaluation(cfg, out, cells)?;
    refuse_other_test_images(cfg, out, cells)?;
    refuse_other_training_images(out, cells)?;
    check_before_running(cfg, cells, device)
}

/// Finished cells were evaluated on the test images `data_dir` held then (their results
/// record the images' hash): a folder that now holds other images would put new cells'
/// results on other images beside theirs. A folder that cannot be read is the run's error
/// to give, when a cell reads it.
fn refuse_other_test_images(
    cfg: &ExperimentConfig,
    out: &Path,
    cells: &[Cell],
) -> Result<(), ExperimentError> {
    // Finished cells' results only (a killed cell's may be of earlier settings), and only
    // those of this dataset and image count: another dataset or count is a changed setting,
    // named as such by `refuse_changed` and `refuse_changed_evaluation`.
    let recorded: Vec<(&Cell, EvalResults)> = cells
        .iter()
        .filter(|c| read_record(out, c).is_some_and(|r| r.finished))
        .filter_map(|c| Some((c, read_results(&cell_layout(out, c).eval(EvalFile::Best))?)))
        .filter(|(_, r)| r.data_sha256.is_some())
        .collect();
    if recorded.is_empty() {
        return Ok(());
    }
    let Ok(kind) = cfg.kind() else {
        return Ok(());
    };
    let split = crate::data::Split::Test;
    let Ok(test) = crate::data::load(kind, cfg.data_dir.as_deref(), split, Some(cfg.eval_count()))
    else {
        return Ok(());
    };
    let now = test.sha256();
    let same_setting = |r: &EvalResults| {
        r.dataset.parse::<DatasetKind>().ok() == Some(kind) && r.example_ids.len() == test.len()
    };
    let other = recorded
        .iter()
        .find(|(_, r)| same_setting(r) && r.data_sha256.as_deref() != Some(now.as_str()));
    match other {
        Some((cell, _)) => Err(ExperimentError::OtherImages {
            which: "test",
            cell: cell.name.clone(),
            dir: cfg.data_dir.clone().unwrap_or_else(|| kind.default_dir()),
        }),
        None => Ok(()),
    }
}

/// Finished cells were trained on the training images `data_dir` held then (their run states
/// record the images' hash, since the hashes were recorded): new cells trained on other images
/// would sit beside them as if they were comparable. Checked only while a cell is left to do,
/// and against the cells finished under the file's settings now (another image count or
/// dataset is a changed setting, named as such). A folder that cannot be read is the run's
/// error to give.
fn refuse_other_training_images(out: &Path, cells: &[Cell]) -> Result<(), ExperimentError> {
    let records: Vec<Option<CellRecord>> = cells
        .iter()
        .map(|c| read_record(out, c).filter(|r| r.finished))
        .collect();
    if records.iter().all(Option::is_some) {
        return Ok(());
    }
    // The hash of the images now there, per (folder, image count).
    let mut now: std::collections::HashMap<(Option<PathBuf>, Option<usize>), Option<String>> =
        Default::default();
    for (cell, record) in cells.iter().zip(&records) {
        if !record.as_ref().is_some_and(|r| same_settings(r, cell)) {
            continue;
        }
        let layout = cell_layout(out, cell);
        let Ok(state) = crate::train::RunDir::new(layout.root()).read_state() else {
            continue;
        };
        let Some(recorded) = state.and_then(|s| s.data) else {
            continue;
        };
        let Ok(tc) = cell.train_config() else {
            continue;
        };
        let key = (tc.data_dir.clone(), tc.train_limit);
        let hash = now.entry(key).or_insert_with(|| {
            crate::data::load(
                tc.dataset,
                tc.data_dir.as_deref(),
                crate::data::Split::Train,
                tc.train_limit,
            )
            .ok()
            .map(|d| d.sha256())
        });
        if hash.as_ref().is_some_and(|h| *h != recorded.train_sha256) {
            return Err(ExperimentError::OtherImages {
                which: "training",
                cell: cell.name.clone(),
                dir: tc.data_dir.unwrap_or_else(|| tc.dataset.default_dir()),
            });
        }
    }
    Ok(())
}

/// The index of the cell `key` names: its number from `--list-cells`, or its name. Names stay
/// with their cells when the grid grows (another seed or method renumbers the cells after it),
/// so a queued job that names its cell still runs that cell.
pub fn find_cell(cells: &[Cell], key: &str) -> Result<usize, ExperimentError> {
    let key = key.trim();
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_digit()) {
        return match key.parse::<usize>().ok().filter(|i| *i < cells.len()) {
            Some(index) => Ok(index),
            None => Err(ExperimentError::NoSuchCell {
                index: key.to_string(),
                count: cells.len(),
            }),
        };
    }
    if let Some(c) = cells.iter().find(|c| c.name == key) {
        return Ok(c.index);
    }
    // A name typed in another case, or a prefix that only one cell has.
    let lower = key.to_lowercase();
    let similar = cells
        .iter()
        .find(|c| c.name.to_lowercase() == lower)
        .or_else(|| {
            let mut starting = cells.iter().filter(|c| c.name.starts_with(key));
            match (starting.next(), starting.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        })
        .map(|c| c.name.clone());
    Err(ExperimentError::NoCellNamed {
        name: key.to_string(),
        similar,
    })
}

/// The cells of the experiment, once everything that can be checked before a cell runs is
/// checked (settings, a changed finished cell — every cell, or only `only` —, the attack list,
/// given checkpoints), and the experiment's settings are recorded in `out`.
pub fn prepare(
    cfg: &ExperimentConfig,
    out: &Path,
    only: Option<usize>,
    device: &burn::prelude::Device,
) -> Result<Vec<Cell>, ExperimentError> {
    let cells = cfg.cells(out).map_err(ExperimentError::Config)?;
    check(cfg, out, &cells, device)?;
    let only = match only {
        Some(i) => Some(cells.get(i).ok_or(ExperimentError::NoSuchCell {
            index: i.to_string(),
            count: cells.len(),
        })?),
        None => None,
    };
    // Checked before anything is written or run: a changed teacher would make its students'
    // hours worthless, and a typo in the attacks or a missing given checkpoint would surface
    // only after hours of training.
    for cell in only.map_or(&cells[..], std::slice::from_ref) {
        refuse_changed(cfg, out, cell)?;
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let recorded = toml::to_string(cfg)?;
    let path = RunLayout::new(out).experiment_config();
    // Another process running cells of this folder under other settings keeps the record of
    // its own (this run would be refused at its first busy cell, after rewriting it).
    if std::fs::read_to_string(&path).is_ok_and(|t| t != recorded) {
        if let Some((cell, lock)) = busy_cell(out, &cells) {
            return Err(ExperimentError::InUse { cell, lock });
        }
    }
    crate::io::write_atomic(&path, recorded.as_bytes()).map_err(io_err(&path))?;
    Ok(cells)
}

/// Whether another process holds the lock of `cell` (is running it).
fn is_busy(out: &Path, cell: &Cell) -> bool {
    let lock = cell_layout(out, cell).cell_lock();
    lock.exists() && matches!(crate::io::try_lock(&lock), Ok(None))
}

/// A cell of `out` whose lock another process holds, with the lock's path.
fn busy_cell(out: &Path, cells: &[Cell]) -> Option<(String, PathBuf)> {
    cells
        .iter()
        .find(|c| is_busy(out, c))
        .map(|c| (c.name.clone(), cell_layout(out, c).cell_lock()))
}

/// How far an unfinished cell has come, in words ("running; trained 3 of 18 epochs"), for
/// `--list-cells`; `None` when nothing of it is done and no process runs it.
pub fn progress(out: &Path, cell: &Cell) -> Option<String> {
    let done = match &cell.checkpoint {
        Some(_) => None,
        None => train::RunDir::new(cell_layout(out, cell).root())
            .read_state()
            .ok()
            .flatten()
            .map(|s| s.epochs_done),
    };
    let trained = match (done, cell.train_config().ok().map(|t| t.epochs)) {
        (Some(d), Some(e)) if d == e => Some("trained; evaluation left".to_string()),
        (Some(d), Some(e)) if d > e => Some(format!(
            "trained {d} epochs, more than the {e} the experiment file gives"
        )),
        (Some(d), Some(e)) if d > 0 => Some(format!("trained {d} of {e} epochs")),
        _ => None,
    };
    match (is_busy(out, cell), trained) {
        (true, Some(t)) => Some(format!("running; {t}")),
        (true, None) => Some("running".into()),
        (false, t) => t,
    }
}

/// Runs every unfinished cell (or only `only`), in order.
pub fn run(
    cfg: &ExperimentConfig,
    out: &Path,
    only: Option<usize>,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<(), ExperimentError> {
    let cells = prepare(cfg, out, only, device)?;
    if let Some(cell) = only.map(|i| &cells[i]) {
        if is_finished(cfg, out, cell) {
            observer.message(&format!("cell {} ({}) is finished", cell.index, cell.name));
            return Ok(());
        }
        return run_cell(cfg, out, cell, device, observer);
    }
    for cell in &cells {
        if is_finished(cfg, out, cell) {
            observer.message(&format!(
                "cell {} ({}) is finished, skipped",
                cell.index, cell.name
            ));
            continue;
        }
        // The number `--cell` and `--list-cells` use (from 0), then the place in the grid.
        observer.message(&format!(
            "cell {} ({}), {} of {}",
            cell.index,
            cell.name,
            cell.index + 1,
            cells.len()
        ));
        run_cell(cfg, out, cell, device, observer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last checkpoint reuses the best one's results only when its bytes are the same.
    #[test]
    fn last_checkpoint_reuses_results_only_for_identical_weights() {
        let dir = std::env::temp_dir().join(format!("rslad-same-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let layout = RunLayout::new(&dir);
        let (best, last) = (layout.best(), layout.last());
        std::fs::write(&best, b"weights").unwrap();
        std::fs::write(&last, b"weights").unwrap();
        let r = EvalResults {
            model: crate::models::ModelSpec::for_dataset(
                "cnn-small".parse().unwrap(),
                DatasetKind::FashionMnist,
            ),
            checkpoint: Some(best.display().to_string()),
            checkpoint_sha256: crate::io::sha256_file(&best).ok(),
            dataset: "fashion-mnist".into(),
            eps: 0.1,
            seed: 0,
            backend: "flex".into(),
            example_ids: vec![0, 1],
            clean_accuracy: 0.5,
            clean: "10".into(),
            attacks: Vec::new(),
            warnings: Vec::new(),
            seconds: 1.0,
            shard: None,
            data_sha256: None,
        };
        std::fs::write(
            layout.eval(EvalFile::Best),
            serde_json::to_string(&r).unwrap(),
        )
        .unwrap();
        let copy = same_weights_result(&layout, EvalFile::Last, &last).unwrap();
        assert_eq!(copy.checkpoint, Some(last.display().to_string()));
        assert_eq!(copy.clean, r.clean);
        assert!(same_weights_result(&layout, EvalFile::BlackBoxBest, &last).is_none());
        std::fs::write(&last, b"other weights").unwrap();
        assert!(same_weights_result(&layout, EvalFile::Last, &last).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A cell whose training fails stops the experiment with the training error as its
    /// source (typed, not flattened to text), and the message names the cell.
    #[test]
    fn training_errors_keep_their_source() {
        let out = std::env::temp_dir().join(format!("rslad-exp-source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let missing = out.join("no-data");
        let text = format!(
            "dataset = \"fashion-mnist\"\ndata_dir = \"{}\"\nepochs = 1\n\
             [teacher]\nmodel = \"cnn-small\"\nmethod = \"sat\"\n\
             [[student]]\nmodel = \"cnn-small\"\nmethods = [\"natural\"]\n",
            missing.display()
        );
        let cfg: ExperimentConfig = toml::from_str(&text).unwrap();
        crate::backend::init();
        let device = crate::backend::default_device();
        let err = run(&cfg, &out, Some(0), &device, &mut crate::train::Silent).unwrap_err();
        let ExperimentError::Train { cell, source } = &err else {
            panic!("not a training error: {err}");
        };
        assert!(cell.starts_with("teacher"), "{cell}");
        assert!(matches!(source, TrainError::Data(_)), "{source}");
        let inner = std::error::Error::source(&err).expect("the training error is the source");
        assert!(inner.downcast_ref::<TrainError>().is_some());
        assert!(err.to_string().contains("no-data"), "{err}");
        std::fs::remove_dir_all(&out).unwrap();
    }

    /// The paper experiments train each baseline on its official code's schedule and batch
    /// size and RSLAD (with natural and SAT) on RSLAD's 300 epochs (docs/spec/methods.md).
    #[test]
    fn paper_experiments_give_each_baseline_its_official_schedule() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
        for (file, ard_batch) in [("cifar10-paper.toml", 128), ("cifar100-paper.toml", 256)] {
            let cfg = ExperimentConfig::from_file(&root.join(file)).unwrap();
            let cells = cfg.cells(Path::new("/tmp/unused")).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for cell in cells.iter().filter(|c| c.role == Role::Student) {
                let t = cell.train.clone().resolve().unwrap();
                let want: (usize, Vec<usize>, usize) = match cell.method.as_str() {
                    "trades" => (76, vec![74, 89, 99], 128),
                    "ard" => (200, vec![100, 150], ard_batch),
                    "iad" => (200, vec![100, 150], 128),
                    _ => (300, vec![215, 260, 285], 128),
                };
                assert_eq!(
                    (t.epochs, t.milestones.clone(), t.batch_size),
                    want,
                    "{file} {}",
                    cell.name
                );
                assert_eq!(t.method.bn_passes, crate::methods::BnPasses::Official);
                if cell.method == "iad" {
                    assert_eq!(t.method.iad_begin, 60, "IAD's introspection from epoch 60");
                }
                if cell.method == "rslad" {
                    let scale = if file.starts_with("cifar100") {
                        10.0
                    } else {
                        1.0
                    };
                    assert_eq!(t.method.kl_scale, scale, "{file}");
                }
                seen.insert(cell.method.clone());
            }
            assert_eq!(seen.len(), 6, "{file}: every method has a cell");
        }
    }
}
