//! A grid of runs from one TOML file: the teacher (trained first unless a checkpoint is given),
//! an optional black-box surrogate, and every student × method × seed, each trained and then
//! evaluated (white-box on the best and the last checkpoint, black-box and an ε sweep on the
//! best; `eval_last` and `blackbox_seeds` trim that for many seeds). Every cell resumes:
//! training from its run directory, evaluations by their results files, so a killed experiment
//! loses at most the epoch in progress of one run.

use crate::attacks::{self, AttackContext};
use crate::data::{self, DatasetKind, Split};
use crate::eval::{self, EvalConfig, EvalResults};
use crate::models::load_model;
use crate::train::{self, Observer, TrainOverrides};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A number or a fraction such as "8/255".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    Number(f64),
    Text(String),
}

impl Quantity {
    pub fn as_string(&self) -> String {
        match self {
            Quantity::Number(v) => v.to_string(),
            Quantity::Text(s) => s.clone(),
        }
    }
}

/// A model to train (or a checkpoint to use) for the teacher or the surrogate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRun {
    pub model: String,
    #[serde(default = "default_teacher_method")]
    pub method: String,
    /// Use this rslad checkpoint instead of training.
    pub checkpoint: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub train_limit: Option<usize>,
    /// Its own schedule (a teacher trained longer than the students needs its own milestones).
    pub lr: Option<f64>,
    pub milestones: Option<Vec<usize>>,
}

fn default_teacher_method() -> String {
    "sat".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Students {
    pub model: String,
    /// Method names, optionally with a KL reduction: `rslad`, `rslad:batchmean`, `ard:official`.
    pub methods: Vec<String>,
}

/// Per-method hyperparameters (`[methods.ard] temperature = 30`), schedule included: the
/// baselines' official codes train on their own schedules (`[methods.trades] epochs = 100`,
/// `milestones = [74, 89, 99]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSettings {
    pub beta: Option<f64>,
    pub alpha: Option<f64>,
    pub temperature: Option<f64>,
    pub attack_bn: Option<String>,
    pub bn_passes: Option<String>,
    pub iad_begin: Option<usize>,
    pub epochs: Option<usize>,
    /// Epochs (counted from 0) at whose start the learning rate drops; given with `epochs`
    /// when the experiment's own milestones do not fit the method's schedule.
    pub milestones: Option<Vec<usize>>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
}

/// The experiment file. Unknown keys are an error that names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub dataset: String,
    pub data_dir: Option<PathBuf>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub epochs: Option<usize>,
    /// L-inf radius on the [0,1] scale: a number or "8/255".
    pub eps: Option<Quantity>,
    #[serde(default)]
    pub seeds: Vec<u64>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub milestones: Option<Vec<usize>>,
    pub gamma: Option<f64>,
    pub augment: Option<bool>,
    pub attack_steps: Option<usize>,
    pub attack_step_size: Option<Quantity>,
    pub monitor_examples: Option<usize>,
    /// White-box attack list for the tables (default "paper").
    pub attacks: Option<String>,
    /// Test images attacked (the first N; default 1000).
    pub eval_examples: Option<usize>,
    pub eval_batch_size: Option<usize>,
    /// Points of the robust-accuracy-against-ε sweep over [0, 2ε] (default 9; 0 turns it off).
    pub eps_sweep: Option<usize>,
    /// Square's query budget in the black-box table (default 5000).
    pub square_queries: Option<usize>,
    /// Also attack the last checkpoint (default true; the paper reports best and last).
    pub eval_last: Option<bool>,
    /// Student seeds whose best checkpoint gets the black-box table (default: every seed).
    /// The teacher, with one seed, always gets it.
    pub blackbox_seeds: Option<Vec<u64>>,
    pub teacher: ModelRun,
    pub surrogate: Option<ModelRun>,
    #[serde(default)]
    pub student: Vec<Students>,
    #[serde(default)]
    pub methods: BTreeMap<String, MethodSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Teacher,
    Surrogate,
    Student,
}

/// One unit of work: a training run (or a given checkpoint) and its evaluations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub index: usize,
    pub name: String,
    pub role: Role,
    pub model: String,
    pub method: String,
    pub seed: u64,
    /// A given checkpoint (no training).
    pub checkpoint: Option<PathBuf>,
    pub train: TrainOverrides,
}

impl ExperimentConfig {
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn kind(&self) -> Result<DatasetKind, String> {
        self.dataset
            .parse()
            .map_err(|e: data::DataError| e.to_string())
    }

    pub fn eps(&self) -> Result<f64, String> {
        match &self.eps {
            Some(q) => crate::units::parse_eps(&q.as_string()),
            None => Ok(self.kind()?.default_eps()),
        }
    }

    /// Checks the evaluation settings and every cell's training settings before any cell
    /// runs, so a bad value fails at once rather than after hours of training.
    pub fn validate(&self, cells: &[Cell]) -> Result<(), String> {
        for (key, value) in [
            ("eval_batch_size", self.eval_batch_size),
            ("eval_examples", self.eval_examples),
            ("square_queries", self.square_queries),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "{key} = 0 in the experiment file: it must be at least 1"
                ));
            }
        }
        self.eps()?;
        for cell in cells.iter().filter(|c| c.checkpoint.is_none()) {
            cell.train
                .clone()
                .resolve()
                .map_err(|e| format!("cell {} ({}): {e}", cell.index, cell.name))?;
        }
        Ok(())
    }

    fn base(&self, out: &Path) -> TrainOverrides {
        TrainOverrides {
            dataset: Some(self.dataset.clone()),
            data_dir: self.data_dir.clone(),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            milestones: self.milestones.clone(),
            gamma: self.gamma,
            augment: self.augment,
            eps: self.eps.as_ref().map(Quantity::as_string),
            attack_steps: self.attack_steps,
            attack_step_size: self.attack_step_size.as_ref().map(Quantity::as_string),
            monitor_examples: self.monitor_examples,
            eval_batch_size: self.eval_batch_size,
            out: Some(out.to_path_buf()),
            ..Default::default()
        }
    }

    /// Every cell, in the order they must run (surrogate and teacher first).
    pub fn cells(&self, out: &Path) -> Result<Vec<Cell>, String> {
        let seeds = if self.seeds.is_empty() {
            vec![0]
        } else {
            self.seeds.clone()
        };
        let mut cells = Vec::new();
        let add = |cells: &mut Vec<Cell>,
                   name: String,
                   role,
                   model: &str,
                   method: &str,
                   seed,
                   checkpoint: Option<PathBuf>,
                   train: TrainOverrides| {
            let index = cells.len();
            cells.push(Cell {
                index,
                name,
                role,
                model: model.to_string(),
                method: method.to_string(),
                seed,
                checkpoint,
                train,
            });
        };
        // The surrogate first: every other cell's black-box evaluation uses it.
        for (role, run) in [
            (Role::Surrogate, self.surrogate.as_ref()),
            (Role::Teacher, Some(&self.teacher)),
        ] {
            let Some(run) = run else { continue };
            let name = format!(
                "{}-{}-{}",
                if role == Role::Teacher {
                    "teacher"
                } else {
                    "surrogate"
                },
                run.model,
                run.method
            );
            let mut t = self.base(&out.join("cells").join(&name));
            t.model = Some(run.model.clone());
            t.method = Some(run.method.clone());
            t.seed = Some(seeds[0]);
            self.apply_method_settings(&run.method, &mut t);
            // The role's own keys win over `[methods.<its method>]`: a SAT teacher is not a SAT
            // student.
            t.epochs = run.epochs.or(t.epochs);
            t.train_limit = run.train_limit.or(t.train_limit);
            t.lr = run.lr.or(t.lr);
            t.milestones = run.milestones.clone().or(t.milestones.take());
            add(
                &mut cells,
                name,
                role,
                &run.model,
                &run.method,
                seeds[0],
                run.checkpoint.clone(),
                t,
            );
        }
        if let Some(b) = &self.blackbox_seeds {
            if let Some(s) = b.iter().find(|s| !seeds.contains(s)) {
                return Err(format!(
                    "blackbox_seeds has seed {s}, which is not in seeds {seeds:?}"
                ));
            }
        }
        let teacher_ckpt = self.teacher_checkpoint(out);
        for s in &self.student {
            for m in &s.methods {
                let (method, reduction) = match m.split_once(':') {
                    Some((a, b)) => (a.to_string(), Some(b.to_string())),
                    None => (m.clone(), None),
                };
                if !crate::methods::METHODS.contains(&method.as_str()) {
                    return Err(format!(
                        "unknown method '{m}' in [[student]]; known: {}",
                        crate::methods::METHODS.join(", ")
                    ));
                }
                if let Some(r) = &reduction {
                    // Only ARD and RSLAD read the reduction: `iad:batchmean` would silently
                    // train plain IAD under another name.
                    if !matches!(method.as_str(), "ard" | "rslad") {
                        return Err(format!(
                            "'{m}' in [[student]]: a KL reduction applies to ard and rslad only"
                        ));
                    }
                    r.parse::<crate::methods::KlReduction>()
                        .map_err(|e| format!("'{m}' in [[student]]: {e}"))?;
                }
                for &seed in &seeds {
                    let tag = match &reduction {
                        Some(r) => format!("{method}-{r}"),
                        None => method.clone(),
                    };
                    let name = format!("{}-{tag}-s{seed}", s.model);
                    let mut t = self.base(&out.join("cells").join(&name));
                    t.model = Some(s.model.clone());
                    t.method = Some(method.clone());
                    t.seed = Some(seed);
                    t.kl_reduction = reduction.clone();
                    if matches!(method.as_str(), "ard" | "iad" | "rslad") {
                        t.teacher = Some(teacher_ckpt.clone());
                        t.teacher_model = Some(self.teacher.model.clone());
                    }
                    self.apply_method_settings(&method, &mut t);
                    add(
                        &mut cells,
                        name,
                        Role::Student,
                        &s.model,
                        &method,
                        seed,
                        None,
                        t,
                    );
                }
            }
        }
        // Cell names become folder names: each must be a plain, distinct name.
        for (i, c) in cells.iter().enumerate() {
            if c.name.contains(['/', '\\']) {
                return Err(format!(
                    "cell {}: its name {} would not be a plain folder name (a '/' in a model, \
                     method or KL reduction?)",
                    c.index, c.name
                ));
            }
            c.model
                .parse::<crate::models::Arch>()
                .map_err(|e| format!("cell {} ({}): {e}", c.index, c.name))?;
            if !crate::methods::METHODS.contains(&c.method.as_str()) {
                return Err(format!(
                    "cell {} ({}): unknown method '{}'; known: {}",
                    c.index,
                    c.name,
                    c.method,
                    crate::methods::METHODS.join(", ")
                ));
            }
            if let Some(other) = cells[..i].iter().find(|o| o.name == c.name) {
                return Err(format!(
                    "cells {} and {} are both {}: a seed or a method is listed twice",
                    other.index, c.index, c.name
                ));
            }
        }
        Ok(cells)
    }

    fn apply_method_settings(&self, method: &str, t: &mut TrainOverrides) {
        if let Some(s) = self.methods.get(method) {
            t.beta = s.beta.or(t.beta);
            t.alpha = s.alpha.or(t.alpha);
            t.temperature = s.temperature.or(t.temperature);
            t.attack_bn = s.attack_bn.clone().or(t.attack_bn.take());
            t.bn_passes = s.bn_passes.clone().or(t.bn_passes.take());
            t.iad_begin = s.iad_begin.or(t.iad_begin);
            t.epochs = s.epochs.or(t.epochs);
            t.milestones = s.milestones.clone().or(t.milestones.take());
            t.batch_size = s.batch_size.or(t.batch_size);
            t.lr = s.lr.or(t.lr);
        }
    }

    /// The teacher's checkpoint: the given one, or the best of its training run.
    pub fn teacher_checkpoint(&self, out: &Path) -> PathBuf {
        match &self.teacher.checkpoint {
            Some(p) => p.clone(),
            None => out
                .join("cells")
                .join(format!(
                    "teacher-{}-{}",
                    self.teacher.model, self.teacher.method
                ))
                .join("best.safetensors"),
        }
    }

    fn surrogate_checkpoint(&self, out: &Path) -> Option<PathBuf> {
        self.surrogate.as_ref().map(|s| match &s.checkpoint {
            Some(p) => p.clone(),
            None => out
                .join("cells")
                .join(format!("surrogate-{}-{}", s.model, s.method))
                .join("best.safetensors"),
        })
    }
}

/// Where a cell keeps its files.
pub fn cell_dir(out: &Path, cell: &Cell) -> PathBuf {
    out.join("cells").join(&cell.name)
}

/// A cell's record for the report (written when the cell is finished).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellRecord {
    pub cell: Cell,
    pub dataset: String,
    pub eps: f64,
    pub finished: bool,
}

/// Whether a cell has nothing left to do.
pub fn is_finished(out: &Path, cell: &Cell) -> bool {
    let dir = cell_dir(out, cell);
    std::fs::read_to_string(dir.join("cell.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<CellRecord>(&t).ok())
        .is_some_and(|r| r.finished)
}

/// Runs one cell to the end (resuming whatever it had done).
pub fn run_cell(
    cfg: &ExperimentConfig,
    out: &Path,
    cell: &Cell,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<(), String> {
    let dir = cell_dir(out, cell);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let eps = cfg.eps()?;
    let kind = cfg.kind()?;
    let best = match &cell.checkpoint {
        Some(p) => {
            if !p.is_file() {
                return Err(format!(
                    "{}: the {:?} checkpoint given in the experiment file is missing",
                    p.display(),
                    cell.role
                ));
            }
            p.clone()
        }
        None => {
            if let Some(teacher) = &cell.train.teacher {
                if !teacher.is_file() {
                    return Err(format!(
                        "cell {} needs the teacher {}, which is not trained yet: run the teacher cell first",
                        cell.name,
                        teacher.display()
                    ));
                }
            }
            let tc = cell.train.clone().resolve()?;
            train::run(&tc, device, observer).map_err(|e| e.to_string())?;
            dir.join("best.safetensors")
        }
    };
    let last = if cell.checkpoint.is_some() {
        best.clone()
    } else {
        dir.join("last.safetensors")
    };
    let attacks = cfg.attacks.clone().unwrap_or_else(|| "paper".into());
    let n = cfg.eval_examples.unwrap_or(1000);
    // The surrogate only crafts transfer attacks: it gets no tables of its own.
    let evals: Vec<(&str, &PathBuf, String)> = if cell.role == Role::Surrogate {
        Vec::new()
    } else {
        let mut v = vec![("eval-best.json", &best, attacks.clone())];
        if cell.checkpoint.is_none() && cfg.eval_last.unwrap_or(true) {
            v.push(("eval-last.json", &last, attacks.clone()));
        }
        let blackbox = cell.role != Role::Student
            || cfg
                .blackbox_seeds
                .as_ref()
                .is_none_or(|b| b.contains(&cell.seed));
        if let (Some(s), true) = (cfg.surrogate_checkpoint(out), blackbox) {
            let q = cfg.square_queries.unwrap_or(5000);
            v.push((
                "blackbox-best.json",
                &best,
                format!("transfer:{},square:queries={q}", s.display()),
            ));
        }
        v
    };
    for (file, ckpt, list) in evals {
        let path = dir.join(file);
        if path.is_file() {
            continue;
        }
        let r = match same_weights_result(&dir, file, ckpt) {
            Some(r) => {
                observer.message(&format!(
                    "{}: {} holds the best checkpoint's weights: its results are the same",
                    cell.name,
                    ckpt.display()
                ));
                r
            }
            None => {
                observer.message(&format!(
                    "{}: evaluating {} with {list}",
                    cell.name,
                    ckpt.display()
                ));
                evaluate_file(ckpt, kind, cfg, eps, &list, n, device, observer)?
            }
        };
        crate::io::write_atomic(
            &path,
            serde_json::to_string_pretty(&r)
                .expect("results serialise")
                .as_bytes(),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let points = if cell.role == Role::Surrogate {
        0
    } else {
        cfg.eps_sweep.unwrap_or(9)
    };
    let sweep_path = dir.join("sweep.json");
    if points > 1 && !sweep_path.is_file() {
        observer.message(&format!("{}: robust accuracy against eps", cell.name));
        let mut sweep = Vec::new();
        for k in 0..points {
            let e = 2.0 * eps * k as f64 / (points - 1) as f64;
            let r = evaluate_file(
                &best,
                kind,
                cfg,
                e,
                "pgd-sat",
                n.min(500),
                device,
                &mut crate::train::Silent,
            )?;
            sweep.push(serde_json::json!({"eps": e, "robust_accuracy": r.attacks[0].robust_accuracy, "clean_accuracy": r.clean_accuracy}));
        }
        crate::io::write_atomic(
            &sweep_path,
            serde_json::to_string_pretty(&sweep)
                .expect("json")
                .as_bytes(),
        )
        .map_err(|e| format!("{}: {e}", sweep_path.display()))?;
    }
    let record = CellRecord {
        cell: cell.clone(),
        dataset: cfg.dataset.clone(),
        eps,
        finished: true,
    };
    crate::io::write_atomic(
        &dir.join("cell.json"),
        serde_json::to_string_pretty(&record)
            .expect("json")
            .as_bytes(),
    )
    .map_err(|e| e.to_string())
}

/// The last checkpoint is often the best one (the final epoch has the lowest learning rate).
/// Evaluation is seeded and deterministic, so the same weights get the best checkpoint's
/// results, relabelled, instead of a second run of every attack.
fn same_weights_result(dir: &Path, file: &str, ckpt: &Path) -> Option<EvalResults> {
    if file != "eval-last.json" {
        return None;
    }
    let mut r: EvalResults =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval-best.json")).ok()?).ok()?;
    // The results belong to the weights whose hash they recorded.
    let hash = crate::io::sha256_file(ckpt).ok()?;
    if r.checkpoint_sha256.as_deref() != Some(hash.as_str()) {
        return None;
    }
    r.checkpoint = Some(ckpt.display().to_string());
    Some(r)
}

#[allow(clippy::too_many_arguments)]
fn evaluate_file(
    ckpt: &Path,
    kind: DatasetKind,
    cfg: &ExperimentConfig,
    eps: f64,
    list: &str,
    n: usize,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<EvalResults, String> {
    let spec = crate::models::peek_spec(ckpt).map_err(|e| e.to_string())?;
    if spec.input != kind.shape() || spec.num_classes != kind.num_classes() {
        return Err(format!(
            "{}: the checkpoint is a {} for {:?} with {} classes, not for {kind}",
            ckpt.display(),
            spec.name,
            spec.input,
            spec.num_classes
        ));
    }
    let model = load_model(ckpt, device, Some(&spec)).map_err(|e| e.to_string())?;
    let test = data::load(kind, cfg.data_dir.as_deref(), Split::Test, Some(n))
        .map_err(|e| e.to_string())?;
    let ctx = AttackContext {
        eps,
        seed: 0,
        device,
        target: &model.spec,
    };
    let attacks = attacks::parse_list(list, &ctx).map_err(|e| e.to_string())?;
    let ecfg = EvalConfig {
        eps,
        batch_size: cfg.eval_batch_size.unwrap_or(256),
        seed: 0,
        sanity_checks: false,
    };
    let mut r = eval::evaluate(
        &model,
        test,
        0,
        &attacks,
        &ecfg,
        device,
        &mut |p| match &p.stage {
            Some(_) => observer.eval_stage(&p),
            None => observer.eval_progress(p.attack, p.done, p.total, p.robust),
        },
    );
    r.checkpoint = Some(ckpt.display().to_string());
    r.checkpoint_sha256 = crate::io::sha256_file(ckpt).ok();
    Ok(r)
}

/// Runs every unfinished cell (or only `only`), in order.
pub fn run(
    cfg: &ExperimentConfig,
    out: &Path,
    only: Option<usize>,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<(), String> {
    let cells = cfg.cells(out)?;
    cfg.validate(&cells)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let recorded = toml::to_string(cfg).map_err(|e| e.to_string())?;
    crate::io::write_atomic(&out.join("experiment.toml"), recorded.as_bytes())
        .map_err(|e| e.to_string())?;
    if let Some(i) = only {
        let cell = cells
            .get(i)
            .ok_or_else(|| format!("--cell {i}: the experiment has cells 0..{}", cells.len()))?;
        if is_finished(out, cell) {
            observer.message(&format!("cell {i} ({}) is finished", cell.name));
            return Ok(());
        }
        return run_cell(cfg, out, cell, device, observer);
    }
    for cell in &cells {
        if is_finished(out, cell) {
            observer.message(&format!(
                "cell {} ({}) is finished, skipped",
                cell.index, cell.name
            ));
            continue;
        }
        observer.message(&format!(
            "cell {}/{}: {}",
            cell.index + 1,
            cells.len(),
            cell.name
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
        let (best, last) = (dir.join("best.safetensors"), dir.join("last.safetensors"));
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
        };
        std::fs::write(
            dir.join("eval-best.json"),
            serde_json::to_string(&r).unwrap(),
        )
        .unwrap();
        let copy = same_weights_result(&dir, "eval-last.json", &last).unwrap();
        assert_eq!(copy.checkpoint, Some(last.display().to_string()));
        assert_eq!(copy.clean, r.clean);
        assert!(same_weights_result(&dir, "blackbox-best.json", &last).is_none());
        std::fs::write(&last, b"other weights").unwrap();
        assert!(same_weights_result(&dir, "eval-last.json", &last).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The paper experiments train each baseline on its official code's schedule and batch
    /// size and RSLAD (with natural and SAT) on RSLAD's 300 epochs (spec/methods.md).
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
