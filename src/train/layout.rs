//! The names of every file rslad writes into a run directory, an experiment cell and an
//! experiment folder, in one place: the trainer, the experiment runner and the report read and
//! write them through [`RunLayout`], never through string literals of their own.
//!
//! A cell directory is a run directory (the cell's training writes there) plus the cell's
//! evaluation files; an experiment folder holds `experiment.toml` and `cells/`.

use std::path::{Path, PathBuf};

/// The evaluation files of a cell (`rslad eval --json` output format, [`crate::eval::EvalResults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalFile {
    /// White-box attacks on the best checkpoint.
    Best,
    /// White-box attacks on the last checkpoint.
    Last,
    /// Transfer and Square attacks on the best checkpoint.
    BlackBoxBest,
}

impl EvalFile {
    pub const ALL: [EvalFile; 3] = [EvalFile::Best, EvalFile::Last, EvalFile::BlackBoxBest];

    pub fn file_name(self) -> &'static str {
        match self {
            EvalFile::Best => "eval-best.json",
            EvalFile::Last => "eval-last.json",
            EvalFile::BlackBoxBest => "blackbox-best.json",
        }
    }

    /// Which checkpoint the file evaluates: "best" or "last".
    pub fn checkpoint(self) -> &'static str {
        match self {
            EvalFile::Last => "last",
            EvalFile::Best | EvalFile::BlackBoxBest => "best",
        }
    }

    pub fn black_box(self) -> bool {
        self == EvalFile::BlackBoxBest
    }
}

/// A directory of rslad's files: a run, a cell or an experiment (the methods name which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    root: PathBuf,
}

impl RunLayout {
    const CONFIG: &'static str = "config.toml";
    const STATE: &'static str = "state.json";
    const METRICS: &'static str = "metrics.jsonl";
    const BEST: &'static str = "best.safetensors";
    const LAST: &'static str = "last.safetensors";
    const LOCK: &'static str = "run.lock";
    const CELL_LOCK: &'static str = "cell.lock";
    /// The committed checkpoints, named relative to the run directory in `state.json`.
    pub const CKPT: &'static str = "ckpt";
    const SWEEP: &'static str = "sweep.json";
    const CELL_RECORD: &'static str = "cell.json";
    const PARTS: &'static str = "parts";
    const EXPERIMENT: &'static str = "experiment.toml";
    const CELLS: &'static str = "cells";

    pub fn new(root: &Path) -> Self {
        RunLayout {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file named relative to the directory (as `state.json` names its checkpoints).
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    // A run directory (`rslad train --out`).

    /// The resolved training settings.
    pub fn config(&self) -> PathBuf {
        self.path(Self::CONFIG)
    }

    /// The resume state, the run's single commit point.
    pub fn state(&self) -> PathBuf {
        self.path(Self::STATE)
    }

    pub fn metrics(&self) -> PathBuf {
        self.path(Self::METRICS)
    }

    pub fn best(&self) -> PathBuf {
        self.path(Self::BEST)
    }

    pub fn last(&self) -> PathBuf {
        self.path(Self::LAST)
    }

    /// Held (an advisory lock) by the process working in the directory.
    pub fn lock(&self) -> PathBuf {
        self.path(Self::LOCK)
    }

    /// Held by the process running an experiment cell (its training holds [`Self::lock`]
    /// as well, a separate file).
    pub fn cell_lock(&self) -> PathBuf {
        self.path(Self::CELL_LOCK)
    }

    pub fn ckpt_dir(&self) -> PathBuf {
        self.path(Self::CKPT)
    }

    /// `state.json`'s name of an epoch's weights (relative to the run directory).
    pub fn epoch_weights(epoch: usize) -> String {
        format!("{}/epoch-{epoch:04}.safetensors", Self::CKPT)
    }

    /// `state.json`'s name of an epoch's optimizer state.
    pub fn epoch_optimizer(epoch: usize) -> String {
        format!("{}/epoch-{epoch:04}.optim.safetensors", Self::CKPT)
    }

    /// `state.json`'s name of the best checkpoint, taken at `epoch`.
    pub fn best_of_epoch(epoch: usize) -> String {
        format!("{}/best-epoch-{epoch:04}.safetensors", Self::CKPT)
    }

    /// `name` relative to the run directory when it is a file in `ckpt/`.
    pub fn in_ckpt(name: &str) -> Option<&str> {
        name.strip_prefix(Self::CKPT)?.strip_prefix('/')
    }

    // A cell directory (a run directory plus its evaluations).

    pub fn eval(&self, file: EvalFile) -> PathBuf {
        self.path(file.file_name())
    }

    /// The finished parts of evaluations still running (removed once merged).
    pub fn parts(&self) -> PathBuf {
        self.path(Self::PARTS)
    }

    /// Part `index` of `count` of an evaluation file (an [`crate::eval::EvalResults`] of
    /// those examples); `key` names the attack list, so that a part made under another list is
    /// never taken for one of this list.
    pub fn eval_part(&self, file: EvalFile, key: &str, index: usize, count: usize) -> PathBuf {
        let stem = file.file_name().trim_end_matches(".json");
        self.parts()
            .join(format!("{stem}.{key}.part-{index}-of-{count}.json"))
    }

    /// Robust accuracy against ε ([`Sweep`]).
    pub fn sweep(&self) -> PathBuf {
        self.path(Self::SWEEP)
    }

    /// The cell's record, written when the cell is finished.
    pub fn cell_record(&self) -> PathBuf {
        self.path(Self::CELL_RECORD)
    }

    // An experiment folder.

    /// The experiment's settings as run.
    pub fn experiment_config(&self) -> PathBuf {
        self.path(Self::EXPERIMENT)
    }

    pub fn cells(&self) -> PathBuf {
        self.path(Self::CELLS)
    }

    /// The directory of the cell called `name`.
    pub fn cell(&self, name: &str) -> RunLayout {
        RunLayout::new(&self.cells().join(name))
    }
}

/// One point of a cell's robustness-against-ε curve (`sweep.json` is a list of them): PGD
/// (SAT preset) on the best checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepPoint {
    pub eps: f64,
    pub robust_accuracy: f64,
    pub clean_accuracy: f64,
}

/// The contents of `sweep.json`.
pub type Sweep = Vec<SweepPoint>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are the ones files already on disk use (runs and experiments written before
    /// this type must still resume and report).
    #[test]
    fn names_are_the_established_ones() {
        let run = RunLayout::new(Path::new("r"));
        let name = |p: PathBuf| p.strip_prefix("r").unwrap().display().to_string();
        assert_eq!(name(run.config()), "config.toml");
        assert_eq!(name(run.state()), "state.json");
        assert_eq!(name(run.metrics()), "metrics.jsonl");
        assert_eq!(name(run.best()), "best.safetensors");
        assert_eq!(name(run.last()), "last.safetensors");
        assert_eq!(name(run.sweep()), "sweep.json");
        assert_eq!(name(run.cell_record()), "cell.json");
        assert_eq!(name(run.experiment_config()), "experiment.toml");
        assert_eq!(name(run.cell("c").best()), "cells/c/best.safetensors");
        assert_eq!(
            name(run.eval_part(EvalFile::BlackBoxBest, "k", 2, 4)),
            "parts/blackbox-best.k.part-2-of-4.json"
        );
        let evals: Vec<&str> = EvalFile::ALL.iter().map(|f| f.file_name()).collect();
        assert_eq!(
            evals,
            ["eval-best.json", "eval-last.json", "blackbox-best.json"]
        );
        assert_eq!(RunLayout::epoch_weights(3), "ckpt/epoch-0003.safetensors");
        assert_eq!(
            RunLayout::epoch_optimizer(12),
            "ckpt/epoch-0012.optim.safetensors"
        );
        assert_eq!(
            RunLayout::best_of_epoch(7),
            "ckpt/best-epoch-0007.safetensors"
        );
        assert_eq!(RunLayout::in_ckpt("ckpt/a"), Some("a"));
        assert_eq!(RunLayout::in_ckpt("ckptx/a"), None);
    }

    /// A sweep written by the untyped writer before this type reads as the typed one.
    #[test]
    fn sweep_reads_the_established_format() {
        let old = r#"[{"eps": 0.0, "robust_accuracy": 0.8, "clean_accuracy": 0.8},
                      {"eps": 0.05, "robust_accuracy": 0.4, "clean_accuracy": 0.8}]"#;
        let s: Sweep = serde_json::from_str(old).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].eps, 0.05);
        assert_eq!(s[1].robust_accuracy, 0.4);
        let again: Sweep = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }
}
