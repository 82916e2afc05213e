//! The experiment file and the grid of cells it describes.

use crate::data::{self, DatasetKind};
use crate::train::TrainOverrides;
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
            None => crate::train::RunLayout::new(out)
                .cell(&format!(
                    "teacher-{}-{}",
                    self.teacher.model, self.teacher.method
                ))
                .best(),
        }
    }

    pub(crate) fn surrogate_checkpoint(&self, out: &Path) -> Option<PathBuf> {
        self.surrogate.as_ref().map(|s| match &s.checkpoint {
            Some(p) => p.clone(),
            None => crate::train::RunLayout::new(out)
                .cell(&format!("surrogate-{}-{}", s.model, s.method))
                .best(),
        })
    }
}

/// Where a cell keeps its files.
pub fn cell_dir(out: &Path, cell: &Cell) -> PathBuf {
    cell_layout(out, cell).root().to_path_buf()
}

/// The files of a cell.
pub fn cell_layout(out: &Path, cell: &Cell) -> crate::train::RunLayout {
    crate::train::RunLayout::new(out).cell(&cell.name)
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
    std::fs::read_to_string(cell_layout(out, cell).cell_record())
        .ok()
        .and_then(|t| serde_json::from_str::<CellRecord>(&t).ok())
        .is_some_and(|r| r.finished)
}
