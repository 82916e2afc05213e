//! The experiment file and the grid of cells it describes.

use crate::data::{self, DatasetKind};
use crate::methods::UnknownMethod;
use crate::train::config::{ConfigError, Scope, SETTINGS};
use crate::train::TrainOverrides;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The most points a robust-accuracy-against-eps sweep may have: each is a PGD evaluation.
const MAX_SWEEP: usize = 1000;

/// A model to train (or a checkpoint to use) for the teacher or the surrogate.
/// Unknown keys are an error that names them (the settings layer refuses them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRun {
    pub model: String,
    #[serde(default = "default_teacher_method")]
    pub method: String,
    /// Use this rslad checkpoint instead of training.
    pub checkpoint: Option<PathBuf>,
    /// Its own settings, merged last (`epochs`, `lr`, `milestones`, `train_limit`: a teacher
    /// trained longer than the students needs its own schedule).
    #[serde(flatten)]
    pub train: TrainOverrides,
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

/// Per-method settings (`[methods.ard] temperature = 30`), schedule included: the
/// baselines' official codes train on their own schedules (`[methods.trades] epochs = 100`,
/// `milestones = [74, 89, 99]`). A layer of the one settings struct, merged over the
/// experiment's values; only settings of [`Scope::Method`] may be given here.
pub type MethodSettings = TrainOverrides;

/// Why an experiment file or its grid was refused. Messages name the file's keys.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error(transparent)]
    Dataset(#[from] data::DataError),
    #[error("eps: {0}")]
    Eps(#[from] crate::units::UnitsError),
    #[error("{key} = 0 in the experiment file: it must be at least 1")]
    Zero { key: &'static str },
    #[error("cell {index} ({name}): {source}")]
    Cell {
        index: usize,
        name: String,
        source: Box<ConfigError>,
    },
    #[error("cell {index} ({name}): {source}")]
    CellModel {
        index: usize,
        name: String,
        source: crate::models::UnknownModel,
    },
    #[error("cell {index} ({name}): {source}")]
    CellMethod {
        index: usize,
        name: String,
        source: UnknownMethod,
    },
    #[error(
        "unknown method '{given}' in [[student]]; known: {}",
        crate::methods::known_methods()
    )]
    StudentMethod { given: String },
    #[error("'{given}' in [[student]]: a KL reduction applies to {readers} only")]
    ReductionNotRead { given: String, readers: String },
    #[error("'{given}' in [[student]]: {reason}")]
    BadReduction { given: String, reason: String },
    #[error("[methods.{method}]: {source}")]
    MethodTable {
        method: String,
        source: UnknownMethod,
    },
    #[error(
        "[methods.{method}] sets {key}, which is one value for a whole cell: give it at the top \
         of the file (or in [teacher], [surrogate], [[student]])"
    )]
    NotPerMethod { method: String, key: &'static str },
    #[error(
        "{key} is set for each cell by the grid ([teacher], [surrogate], [[student]], seeds): \
         remove it from the top of the experiment file"
    )]
    SetByGrid { key: &'static str },
    #[error("seeds = [] lists no seed: give at least one (leave seeds out for seed 0)")]
    NoSeeds,
    #[error("[[student]] model '{model}' has methods = []: list at least one method")]
    NoMethods { model: String },
    #[error("eps_sweep = 1: a sweep over [0, 2 eps] needs at least 2 points (0 turns it off)")]
    OnePointSweep,
    #[error("eps_sweep = {points}: at most {MAX_SWEEP} points (a typo?)")]
    LongSweep { points: usize },
    #[error(
        "square_queries = {queries}: at most {} (a typo?): Square's reference budget is 5000",
        crate::attacks::MAX_COUNT
    )]
    TooManyQueries { queries: usize },
    #[error("blackbox_seeds has seed {seed}, which is not in seeds {seeds:?}")]
    BlackboxSeed { seed: u64, seeds: Vec<u64> },
    #[error(
        "cell {index}: its name {name} would not be a plain folder name (a '/' in a model, \
         method or KL reduction?)"
    )]
    CellName { index: usize, name: String },
    #[error(
        "cells {first} and {second} are both {name}: a seed, a method or a model (under two \
         spellings) is listed twice"
    )]
    Duplicate {
        first: usize,
        second: usize,
        name: String,
    },
}

/// For callers that still report errors as text.
impl From<GridError> for String {
    fn from(e: GridError) -> String {
        e.to_string()
    }
}

/// The experiment file. Unknown keys are an error that names them (the settings layer
/// refuses any key that is neither the experiment's nor a setting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentConfig {
    /// Also the evaluations' dataset, so a key of the file itself rather than of `train`.
    pub dataset: String,
    pub data_dir: Option<PathBuf>,
    /// Student seeds (default `[0]`).
    pub seeds: Option<Vec<u64>>,
    /// White-box attack list for the tables (default "paper").
    pub attacks: Option<String>,
    /// Test images attacked (the first N; default 1000).
    pub eval_examples: Option<usize>,
    /// Also the evaluations' batch size.
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
    /// The training settings every cell starts from (`epochs`, `eps = "8/255"`, `lr`, ...),
    /// written at the top of the file: the experiment's layer of the one settings struct.
    /// The grid sets each cell's method, model, seed, teacher and KL reduction, so those are
    /// refused here.
    #[serde(flatten)]
    pub train: TrainOverrides,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Teacher,
    Surrogate,
    Student,
}

/// As the experiment file and the cell records spell it.
impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Teacher => "teacher",
            Role::Surrogate => "surrogate",
            Role::Student => "student",
        })
    }
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

impl Cell {
    /// The cell's run configuration, its settings resolved and checked.
    pub fn train_config(&self) -> Result<crate::train::TrainConfig, GridError> {
        self.train
            .clone()
            .resolve()
            .map_err(|source| GridError::Cell {
                index: self.index,
                name: self.name.clone(),
                source: Box::new(source),
            })
    }
}

impl ExperimentConfig {
    pub fn from_file(path: &Path) -> Result<Self, GridError> {
        let text = std::fs::read_to_string(path).map_err(|source| GridError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| GridError::Toml {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn kind(&self) -> Result<DatasetKind, GridError> {
        Ok(self.dataset.parse()?)
    }

    /// The white-box attack list, `paper` unless the file gives one.
    pub fn attack_list(&self) -> String {
        self.attacks.clone().unwrap_or_else(|| "paper".into())
    }

    /// Test images attacked: the first `eval_examples`, 1000 unless the file says.
    pub fn eval_count(&self) -> usize {
        self.eval_examples.unwrap_or(1000)
    }

    /// Square's query budget in the black-box table, 5000 unless the file says.
    pub fn square_budget(&self) -> usize {
        self.square_queries.unwrap_or(5000)
    }

    /// Points of the robust-accuracy-against-eps sweep, 9 unless the file says.
    pub fn sweep_count(&self) -> usize {
        self.eps_sweep.unwrap_or(9)
    }

    pub fn eps(&self) -> Result<f64, GridError> {
        match &self.train.eps {
            Some(q) => Ok(crate::units::parse_eps(q.as_str())?),
            None => Ok(self.kind()?.default_eps()),
        }
    }

    /// Checks the evaluation settings and every cell's training settings before any cell
    /// runs, so a bad value fails at once rather than after hours of training.
    pub fn validate(&self, cells: &[Cell]) -> Result<(), GridError> {
        for (key, value) in [
            ("eval_batch_size", self.eval_batch_size),
            ("eval_examples", self.eval_examples),
            ("square_queries", self.square_queries),
        ] {
            if value == Some(0) {
                return Err(GridError::Zero { key });
            }
        }
        self.eps()?;
        for cell in cells.iter().filter(|c| c.checkpoint.is_none()) {
            cell.train_config()?;
        }
        Ok(())
    }

    /// A cell's settings before its role's and method's: the experiment's layer.
    fn base(&self, out: &Path) -> TrainOverrides {
        self.train.clone().merged(TrainOverrides {
            dataset: Some(self.dataset.clone()),
            data_dir: self.data_dir.clone(),
            eval_batch_size: self.eval_batch_size,
            out: Some(out.to_path_buf()),
            ..Default::default()
        })
    }

    /// Every cell, in the order they must run (surrogate and teacher first).
    pub fn cells(&self, out: &Path) -> Result<Vec<Cell>, GridError> {
        self.check_method_tables()?;
        let seeds = match &self.seeds {
            None => vec![0],
            Some(s) if s.is_empty() => return Err(GridError::NoSeeds),
            Some(s) => s.clone(),
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
            // An unknown model is named with its cell below.
            t.model = run.model.parse().ok();
            t.method = Some(run.method.clone());
            t.seed = Some(seeds[0]);
            let t = self.with_method_settings(&run.method, t);
            // The role's own keys win over `[methods.<its method>]`: a SAT teacher is not a SAT
            // student.
            let t = t.merged(run.train.clone());
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
            let known: std::collections::HashSet<_> = seeds.iter().collect();
            if let Some(&seed) = b.iter().find(|s| !known.contains(s)) {
                return Err(GridError::BlackboxSeed { seed, seeds });
            }
        }
        match self.eps_sweep {
            Some(1) => return Err(GridError::OnePointSweep),
            Some(n) if n > MAX_SWEEP => return Err(GridError::LongSweep { points: n }),
            _ => {}
        }
        if let Some(q) = self
            .square_queries
            .filter(|&q| q as u64 > crate::attacks::MAX_COUNT)
        {
            return Err(GridError::TooManyQueries { queries: q });
        }
        let teacher_ckpt = self.teacher_checkpoint(out);
        for s in &self.student {
            if s.methods.is_empty() {
                return Err(GridError::NoMethods {
                    model: s.model.clone(),
                });
            }
            for m in &s.methods {
                let (method, reduction) = match m.split_once(':') {
                    Some((a, b)) => (a.to_string(), Some(b.to_string())),
                    None => (m.clone(), None),
                };
                let entry = crate::methods::lookup(&method)
                    .map_err(|_| GridError::StudentMethod { given: m.clone() })?;
                if let Some(r) = &reduction {
                    // Only a method that reads the reduction may carry one: `iad:batchmean`
                    // would silently train plain IAD under another name.
                    if !entry.reads("kl_reduction") {
                        return Err(GridError::ReductionNotRead {
                            given: m.clone(),
                            readers: crate::methods::METHODS
                                .iter()
                                .filter(|e| e.reads("kl_reduction"))
                                .map(|e| e.name)
                                .collect::<Vec<_>>()
                                .join(" and "),
                        });
                    }
                    r.parse::<crate::methods::KlReduction>().map_err(|reason| {
                        GridError::BadReduction {
                            given: m.clone(),
                            reason,
                        }
                    })?;
                }
                for &seed in &seeds {
                    let tag = match &reduction {
                        Some(r) => format!("{method}-{r}"),
                        None => method.clone(),
                    };
                    let name = format!("{}-{tag}-s{seed}", s.model);
                    let mut t = self.base(&out.join("cells").join(&name));
                    t.model = s.model.parse().ok();
                    t.method = Some(method.clone());
                    t.seed = Some(seed);
                    t.kl_reduction = reduction.as_deref().map(|r| {
                        r.parse()
                            .expect("the reduction was checked before the seeds")
                    });
                    if entry.needs_teacher {
                        t.teacher = Some(teacher_ckpt.clone());
                        t.teacher_model = Some(self.teacher.model.clone());
                    }
                    let t = self.with_method_settings(&method, t);
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
        let mut seen = std::collections::HashMap::new();
        for c in &cells {
            if c.name.contains(['/', '\\']) {
                return Err(GridError::CellName {
                    index: c.index,
                    name: c.name.clone(),
                });
            }
            c.model
                .parse::<crate::models::Arch>()
                .map_err(|source| GridError::CellModel {
                    index: c.index,
                    name: c.name.clone(),
                    source,
                })?;
            crate::methods::lookup(&c.method).map_err(|source| GridError::CellMethod {
                index: c.index,
                name: c.name.clone(),
                source,
            })?;
            // Also under another spelling of the model (`CNN-Small`, `cnn-small`): one model
            // trained twice would be two rows of the report.
            let canonical = c.name.replacen(&c.model, &canonical_model(&c.model), 1);
            if let Some(first) = seen.insert(canonical, c.index) {
                return Err(GridError::Duplicate {
                    first,
                    second: c.index,
                    name: c.name.clone(),
                });
            }
        }
        Ok(cells)
    }

    /// The top of the file gives no setting the grid sets for each cell; each
    /// `[methods.NAME]` names a registered method and gives only per-method settings.
    fn check_method_tables(&self) -> Result<(), GridError> {
        let roles = [Some(&self.teacher), self.surrogate.as_ref()];
        let layers =
            std::iter::once(&self.train).chain(roles.into_iter().flatten().map(|r| &r.train));
        for key in layers.flat_map(TrainOverrides::given) {
            if SETTINGS
                .iter()
                .any(|s| s.key == key && s.scope == Scope::Grid)
            {
                return Err(GridError::SetByGrid { key });
            }
        }
        for (method, settings) in &self.methods {
            crate::methods::lookup(method).map_err(|source| GridError::MethodTable {
                method: method.clone(),
                source,
            })?;
            for key in settings.given() {
                // A method's own hyperparameters are per-method settings.
                let scope = match SETTINGS.iter().find(|s| s.key == key) {
                    Some(s) => Some(s.scope),
                    None => crate::methods::params()
                        .iter()
                        .any(|p| p.key == key)
                        .then_some(Scope::Method),
                };
                if scope != Some(Scope::Method) {
                    return Err(GridError::NotPerMethod {
                        method: method.clone(),
                        key,
                    });
                }
            }
        }
        Ok(())
    }

    /// Settings of the file that change no cell: a `[methods.NAME]` table of a method no
    /// cell trains, and a key of one that its method does not read (`temperature` for
    /// TRADES). Valid, so not refused; said, so not mistaken for part of the setup.
    pub fn unused_settings(&self, cells: &[Cell]) -> Vec<String> {
        let mut notes = Vec::new();
        for (method, settings) in &self.methods {
            if !cells.iter().any(|c| c.method == *method) {
                notes.push(format!(
                    "[methods.{method}]: no cell of the grid trains {method}; its settings \
                     change nothing"
                ));
                continue;
            }
            let Ok(entry) = crate::methods::lookup(method) else {
                continue;
            };
            let unused: Vec<&str> = settings
                .given()
                .into_iter()
                .filter(|k| !entry.uses(k))
                .collect();
            if !unused.is_empty() {
                notes.push(format!(
                    "[methods.{method}] sets {}, which {method} does not read: {} nothing",
                    unused.join(", "),
                    if unused.len() == 1 {
                        "it changes"
                    } else {
                        "they change"
                    }
                ));
            }
        }
        notes
    }

    /// `t` with `[methods.<method>]` merged over it (the method's settings win).
    fn with_method_settings(&self, method: &str, t: TrainOverrides) -> TrainOverrides {
        match self.methods.get(method) {
            Some(s) => t.merged(s.clone()),
            None => t,
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

/// A dataset's name as results files give it (`fmnist` is `fashion-mnist`); an unknown name
/// as it is.
pub fn canonical_dataset(name: &str) -> String {
    name.parse::<DatasetKind>()
        .map_or_else(|_| name.to_string(), |k| k.name().to_string())
}

/// A model's name as rslad spells it (`CNN-Small` is `cnn-small`); an unknown name as it is.
pub fn canonical_model(name: &str) -> String {
    name.parse::<crate::models::Arch>()
        .map_or_else(|_| name.to_string(), |a| a.to_string())
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

/// The cell's record, when it is there and reads.
pub(crate) fn read_record(out: &Path, cell: &Cell) -> Option<CellRecord> {
    let text = std::fs::read_to_string(cell_layout(out, cell).cell_record()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether a cell has nothing left to do.
pub fn is_finished(cfg: &ExperimentConfig, out: &Path, cell: &Cell) -> bool {
    cell_state(cfg, out, cell) == CellState::Finished
}

/// Where a cell stands, from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellState {
    ToDo,
    Finished,
    /// Finished with other settings than the experiment file's now (the differences in
    /// words): its results belong to those settings, so it is neither reused nor retrained.
    Changed(String),
    /// Finished, but its black-box results were crafted on other surrogate weights than the
    /// surrogate's now: they are crafted again.
    Stale,
}

/// Settings that name where things are, not what is computed: a moved run or data folder is
/// the same cell.
const PLACES: &[&str] = &["index", "out", "teacher", "data_dir", "checkpoint"];

/// What differs between two cells' settings, places aside, and the keys in `also` (the
/// report leaves out the seed and names of cells it averages).
pub(crate) fn cell_changes(old: &Cell, new: &Cell, also: &[&str]) -> Vec<String> {
    let ignored: Vec<&str> = PLACES.iter().chain(also).copied().collect();
    crate::train::config::setting_changes(old, new, &ignored)
}

/// Whether `record` was written under `cell`'s settings now (places aside).
pub(crate) fn same_settings(record: &CellRecord, cell: &Cell) -> bool {
    cell_changes(&record.cell, cell, &[]).is_empty()
}

/// Where `cell` stands in `out`: to do, finished, finished with other settings, or finished
/// with black-box results of another surrogate.
pub fn cell_state(cfg: &ExperimentConfig, out: &Path, cell: &Cell) -> CellState {
    match read_record(out, cell) {
        Some(r) if r.finished => {
            let diff = cell_changes(&r.cell, cell, &[]);
            if !diff.is_empty() {
                CellState::Changed(diff.join(", "))
            } else if super::run::teacher_replaced(out, cell) {
                CellState::Changed("the teacher's weights (not those it learned from)".into())
            } else if !super::run::results_intact(cfg, out, cell) {
                CellState::ToDo
            } else if super::run::blackbox_stale(cfg, out, cell) {
                CellState::Stale
            } else {
                CellState::Finished
            }
        }
        _ => CellState::ToDo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "dataset = 'fashion-mnist'\nepochs = 6\n[teacher]\nmodel = 'cnn-small'\n\
                        [[student]]\nmodel = 'cnn-small'\nmethods = ['trades', 'rslad']\n";

    fn cells(extra: &str) -> Result<Vec<Cell>, GridError> {
        let cfg: ExperimentConfig = toml::from_str(&format!("{BASE}{extra}")).unwrap();
        cfg.cells(Path::new("/tmp/unused"))
    }

    /// `[methods.NAME]` is a layer of the settings: any per-method setting is merged over the
    /// experiment's values for that method's cells only.
    #[test]
    fn method_tables_are_a_settings_layer() {
        let cells = cells("[methods.trades]\nmomentum = 0.8\nbeta = 3.0\n").unwrap();
        let trades = cells.iter().find(|c| c.method == "trades").unwrap();
        let rslad = cells.iter().find(|c| c.method == "rslad").unwrap();
        assert_eq!(
            (trades.train.momentum, trades.train.beta),
            (Some(0.8), Some(3.0))
        );
        assert_eq!((rslad.train.momentum, rslad.train.beta), (None, None));
        assert_eq!(trades.train.epochs, Some(6));
        let t = trades.train.clone().resolve().unwrap();
        assert_eq!((t.momentum, t.method.beta), (0.8, 3.0));
    }

    /// `--cell` takes a number or a name; a name keeps its cell when a seed is added in front
    /// of it, and a near miss is named back.
    #[test]
    fn a_cell_is_found_by_number_or_name() {
        use crate::experiment::{find_cell, ExperimentError};
        let one = cells("").unwrap();
        let two: ExperimentConfig = toml::from_str(&format!("seeds = [0, 1]\n{BASE}")).unwrap();
        let two = two.cells(Path::new("/tmp/unused")).unwrap();
        let name = "cnn-small-rslad-s0";
        let (i1, i2) = (
            find_cell(&one, name).unwrap(),
            find_cell(&two, name).unwrap(),
        );
        assert_eq!((one[i1].name.as_str(), two[i2].name.as_str()), (name, name));
        assert_ne!(i1, i2, "the added seed renumbers the cells after it");
        assert_eq!(find_cell(&one, &i1.to_string()).unwrap(), i1);
        assert!(matches!(
            find_cell(&one, "99"),
            Err(ExperimentError::NoSuchCell { ref index, .. }) if index == "99"
        ));
        assert!(matches!(
            find_cell(&one, "99999999999999999999999"),
            Err(ExperimentError::NoSuchCell { .. })
        ));
        assert_eq!(find_cell(&one, &format!(" {name} ")).unwrap(), i1);
        match find_cell(&one, "CNN-small-RSLAD-s0") {
            Err(ExperimentError::NoCellNamed { similar, .. }) => {
                assert_eq!(similar.as_deref(), Some(name))
            }
            other => panic!("{other:?}"),
        }
        match find_cell(&two, "cnn-small-") {
            Err(ExperimentError::NoCellNamed { similar, .. }) => assert_eq!(similar, None),
            other => panic!("{other:?}"),
        }
    }

    /// A method table no cell uses, and a key its method does not read, are named.
    #[test]
    fn settings_that_change_no_cell_are_named() {
        let cfg: ExperimentConfig = toml::from_str(&format!(
            "{BASE}[methods.iad]\nbeta = 1.0\n[methods.trades]\ntemperature = 3.0\nbeta = 3.0\n\
             [methods.rslad]\nepochs = 4\n"
        ))
        .unwrap();
        let notes = cfg.unused_settings(&cfg.cells(Path::new("/tmp/unused")).unwrap());
        assert_eq!(
            notes,
            [
                "[methods.iad]: no cell of the grid trains iad; its settings change nothing",
                "[methods.trades] sets temperature, which trades does not read: it changes nothing",
            ]
        );
    }

    /// A typo in a method table's name, or a setting that is one value per cell, is refused
    /// instead of silently ignored.
    #[test]
    fn method_tables_name_known_methods_and_per_method_settings() {
        let e = cells("[methods.trade]\nbeta = 3.0\n").unwrap_err();
        assert!(matches!(e, GridError::MethodTable { .. }), "{e}");
        assert!(e.to_string().contains("unknown method 'trade'"), "{e}");
        let e = cells("[methods.trades]\nseed = 3\n").unwrap_err();
        assert!(
            matches!(e, GridError::NotPerMethod { key: "seed", .. }),
            "{e}"
        );
    }
}

#[cfg(test)]
mod method_params {
    use super::*;

    /// `[methods.probe] probe_scale = 3.0` reaches the probe's cells only.
    #[test]
    fn a_method_hyperparameter_is_set_per_method() {
        let cfg: ExperimentConfig = toml::from_str(
            "dataset = 'fashion-mnist'\n[teacher]\nmodel = 'cnn-small'\n\
             [[student]]\nmodel = 'cnn-small'\nmethods = ['probe', 'sat']\n\
             [methods.probe]\nprobe_scale = 3.0\n",
        )
        .unwrap();
        let cells = cfg.cells(Path::new("/tmp/unused")).unwrap();
        let resolved = |m: &str| {
            let c = cells.iter().find(|c| c.method == m).unwrap();
            c.train.clone().resolve().unwrap().method
        };
        assert_eq!(resolved("probe").param("probe_scale"), 3.0);
        assert!(resolved("sat").params.is_empty());
    }
}

#[cfg(test)]
mod layers {
    use super::*;

    const FILE: &str = "dataset = 'fashion-mnist'\nepochs = 4\neps = '8/255'\nbeta = 3.0\n\
                        [teacher]\nmodel = 'cnn-small'\nmethod = 'trades'\nlr = 0.02\n\
                        [[student]]\nmodel = 'cnn-small'\nmethods = ['trades', 'rslad']\n\
                        [methods.trades]\nbeta = 5.0\n";

    /// The top of the file, `[methods.NAME]` and the role's own table are layers of the one
    /// settings struct, merged in that order; any setting may be given at the top.
    #[test]
    fn the_top_of_the_file_is_the_first_settings_layer() {
        let cfg: ExperimentConfig = toml::from_str(FILE).unwrap();
        assert_eq!(cfg.train.epochs, Some(4));
        assert!((cfg.eps().unwrap() - 8.0 / 255.0).abs() < 1e-12);
        let cells = cfg.cells(Path::new("/tmp/unused")).unwrap();
        let cell = |name: &str| {
            let c = cells.iter().find(|c| c.name == name).unwrap();
            c.train.clone().resolve().unwrap()
        };
        let teacher = cell("teacher-cnn-small-trades");
        assert_eq!((teacher.lr, teacher.method.beta), (0.02, 5.0));
        let trades = cell("cnn-small-trades-s0");
        assert_eq!(
            (trades.lr, trades.method.beta, trades.epochs),
            (0.1, 5.0, 4)
        );
        let rslad = cell("cnn-small-rslad-s0");
        assert_eq!(rslad.method.beta, 3.0);
        assert!((rslad.method.eps - 8.0 / 255.0).abs() < 1e-12);
    }

    /// What the grid sets for each cell is refused at the top and in a role's table; an
    /// unknown key anywhere is named.
    #[test]
    fn grid_settings_and_unknown_keys_are_refused() {
        for (layer, extra) in [
            ("top", FILE.replace("beta = 3.0\n", "seed = 2\n")),
            ("teacher", FILE.replace("lr = 0.02\n", "seed = 2\n")),
            (
                "top",
                FILE.replace("beta = 3.0\n", "kl_reduction = 'batchmean'\n"),
            ),
        ] {
            let cfg: ExperimentConfig = toml::from_str(&extra).unwrap();
            let e = cfg.cells(Path::new("/tmp/unused")).unwrap_err();
            assert!(matches!(e, GridError::SetByGrid { .. }), "{layer}: {e}");
        }
        for bad in [
            FILE.replace("beta = 3.0\n", "learning_rate = 1\n"),
            FILE.replace("lr = 0.02\n", "size = 3\n"),
        ] {
            let e = toml::from_str::<ExperimentConfig>(&bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("learning_rate") || e.contains("size"), "{e}");
        }
    }

    /// `experiment.toml`, as the run records it, reads back the same.
    #[test]
    fn the_recorded_experiment_reads_back() {
        let cfg: ExperimentConfig = toml::from_str(FILE).unwrap();
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(
            toml::from_str::<ExperimentConfig>(&text).unwrap(),
            cfg,
            "{text}"
        );
        for file in [
            "cifar10-paper.toml",
            "fashion-mnist.toml",
            "fashion-mnist-claim.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("experiments")
                .join(file);
            let cfg = ExperimentConfig::from_file(&path).unwrap();
            let text = toml::to_string(&cfg).unwrap();
            assert_eq!(
                toml::from_str::<ExperimentConfig>(&text).unwrap(),
                cfg,
                "{file}"
            );
        }
    }
}
