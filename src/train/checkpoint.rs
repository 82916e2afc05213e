//! The run directory and resume state.
//!
//! `state.json` is the single commit point: it is written (atomically) only after the files it
//! names are complete, and it names the weights and optimizer state of the last finished
//! epoch, the best checkpoint so far and the metrics history. Everything else a user reads
//! (`last.safetensors`, `best.safetensors`, `metrics.jsonl`) is derived from it, and rewritten
//! from it on resume, so a run killed at any moment resumes from its last finished epoch.

use super::layout::RunLayout;
use super::sgd::Sgd;
use crate::io::{copy_atomic, write_atomic};
use crate::models::{load_model, save_model, Model, ModelSpec, WeightsError};
use burn::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    /// Counted from 1.
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    /// Accuracy on the inputs of the method's main loss term (adversarial for SAT, ARD, IAD,
    /// RSLAD; clean for natural and TRADES).
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    /// PGD-20 accuracy on the monitor slice (robust methods only).
    pub robust_accuracy: Option<f64>,
    pub monitor_clean_accuracy: Option<f64>,
    pub seconds: f64,
    pub images_per_second: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BestRecord {
    /// Counted from 1.
    pub epoch: usize,
    /// The selection metric: robust accuracy for robust methods, clean accuracy otherwise.
    pub metric: f64,
    pub file: String,
}

/// The resume state (`state.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    pub epochs_done: usize,
    pub weights: String,
    pub optimizer: String,
    pub best: Option<BestRecord>,
    /// All randomness is a function of (seed, epoch, batch): this is the RNG state.
    pub seed: u64,
    pub next_epoch: usize,
    pub metrics: Vec<EpochMetrics>,
    /// The teacher's name, file, SHA-256 and monitor numbers.
    pub teacher: Option<serde_json::Value>,
    /// The settings (`config.toml`'s text) the epochs were trained with: a state resumes only
    /// under the same ones, even where `config.toml` is gone. `None` in older states.
    #[serde(default)]
    pub settings: Option<String>,
    /// The SHA-256 of the training and test images the epochs saw: a state resumes only on
    /// the same images. `None` in older states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataRecord>,
}

/// Which images a run trained on and chose its best checkpoint on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataRecord {
    pub train_sha256: String,
    pub test_sha256: String,
}

/// A run directory's reading and committing; its file names are [`RunLayout`]'s.
pub struct RunDir {
    pub root: PathBuf,
    pub layout: RunLayout,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl RunDir {
    pub fn new(root: &Path) -> Self {
        RunDir {
            root: root.to_path_buf(),
            layout: RunLayout::new(root),
        }
    }

    /// A file named relative to the run directory (as `state.json` names them).
    pub fn path(&self, name: &str) -> PathBuf {
        self.layout.path(name)
    }

    pub fn config_path(&self) -> PathBuf {
        self.layout.config()
    }

    /// Writes `text` to `path` atomically.
    pub fn write_text(&self, path: &Path, text: &str) -> Result<(), CheckpointError> {
        write_atomic(path, text.as_bytes()).map_err(io_err(path))
    }

    pub fn read_state(&self) -> Result<Option<RunState>, CheckpointError> {
        let p = self.layout.state();
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                let state: RunState =
                    serde_json::from_str(&text).map_err(|e| CheckpointError::Corrupt {
                        path: p.clone(),
                        detail: e.to_string(),
                    })?;
                let mut names = vec![("weights", &state.weights), ("optimizer", &state.optimizer)];
                if let Some(b) = &state.best {
                    names.push(("best.file", &b.file));
                }
                for (field, name) in names {
                    self.check_name(&p, field, name)?;
                }
                check_consistent(&state).map_err(|detail| CheckpointError::Corrupt {
                    path: p.clone(),
                    detail: format!(
                        "{detail}: the file was edited or damaged; restore it or start the run \
                         over in another run directory (out)"
                    ),
                })?;
                Ok(Some(state))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Every file the committed state names exists: checked before anything not named is
    /// removed, so a damaged `state.json` never costs the checkpoints that are there.
    pub fn check_committed_files(&self, state: &RunState) -> Result<(), CheckpointError> {
        let mut names = vec![&state.weights, &state.optimizer];
        if let Some(b) = &state.best {
            names.push(&b.file);
        }
        for name in names.into_iter().filter(|n| !n.is_empty()) {
            let p = self.path(name);
            if !p.is_file() {
                return Err(CheckpointError::Corrupt {
                    path: self.layout.state(),
                    detail: format!(
                        "names {}, which is missing: the run directory is incomplete (copied \
                         in part?); nothing was removed",
                        p.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// A file name recorded in `state.json` must be a plain name in the run directory or its
    /// `ckpt/` (what [`Self::commit_epoch`] writes): an absolute path, `..` or a link would make
    /// a resume delete or copy files outside the run directory.
    fn check_name(&self, state: &Path, field: &str, name: &str) -> Result<(), CheckpointError> {
        if name.is_empty() && field != "best.file" {
            return Ok(()); // nothing committed yet
        }
        let plain =
            |n: &str| !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\\', '\0']);
        let ok = match RunLayout::in_ckpt(name) {
            Some(rest) => plain(rest),
            None => plain(name),
        };
        let corrupt = |why: &str| CheckpointError::Corrupt {
            path: state.to_path_buf(),
            detail: format!(
                "{field} \"{name}\" {why}; a state.json names only files inside the run \
                 directory (or its ckpt/). Remove the run directory's state.json to start over"
            ),
        };
        if !ok {
            return Err(corrupt("is not a plain file name"));
        }
        if let Ok(meta) = std::fs::symlink_metadata(self.path(name)) {
            if meta.file_type().is_symlink() {
                return Err(corrupt("is a symbolic link"));
            }
        }
        Ok(())
    }

    /// Writes the files of a finished epoch, then commits them with `state.json`, then derives
    /// the user-facing files.
    pub fn commit_epoch(
        &self,
        model: &Model,
        sgd: &Sgd,
        state: &mut RunState,
        new_best: Option<f64>,
    ) -> Result<(), CheckpointError> {
        let epoch = state.epochs_done;
        let weights = RunLayout::epoch_weights(epoch);
        let optimizer = RunLayout::epoch_optimizer(epoch);
        save_model(
            model,
            &self.path(&weights),
            &[("rslad.epoch", epoch.to_string())],
        )?;
        save_velocity(sgd, &self.path(&optimizer))?;
        let previous = (
            state.weights.clone(),
            state.optimizer.clone(),
            state.best.clone(),
        );
        if let Some(metric) = new_best {
            let file = RunLayout::best_of_epoch(epoch);
            copy_atomic(&self.path(&weights), &self.path(&file))
                .map_err(io_err(&self.path(&file)))?;
            state.best = Some(BestRecord {
                epoch,
                metric,
                file,
            });
        }
        state.weights = weights;
        state.optimizer = optimizer;
        let json = serde_json::to_string_pretty(state).expect("state serialises");
        self.write_text(&self.layout.state(), &json)?;
        // Committed: the previous epoch's files are no longer referenced.
        for old in [previous.0, previous.1] {
            if !old.is_empty() && old != state.weights && old != state.optimizer {
                let _ = std::fs::remove_file(self.path(&old));
            }
        }
        if let (Some(old), Some(new)) = (previous.2, &state.best) {
            if old.file != new.file {
                let _ = std::fs::remove_file(self.path(&old.file));
            }
        }
        self.derive_user_files(state)
    }

    /// `last.safetensors`, `best.safetensors` and `metrics.jsonl` from the committed state.
    pub fn derive_user_files(&self, state: &RunState) -> Result<(), CheckpointError> {
        if !state.weights.is_empty() {
            self.copy_committed(&state.weights, &self.layout.last())?;
        }
        if let Some(best) = &state.best {
            self.copy_committed(&best.file, &self.layout.best())?;
        }
        let mut lines = String::new();
        for m in &state.metrics {
            lines.push_str(&serde_json::to_string(m).expect("metrics serialise"));
            lines.push('\n');
        }
        self.write_text(&self.layout.metrics(), &lines)
    }

    /// Copies a committed file onto a user-facing name; an error names the file that could
    /// not be read, or the one that could not be written.
    fn copy_committed(&self, from: &str, to: &Path) -> Result<(), CheckpointError> {
        let from = self.path(from);
        let bytes = std::fs::read(&from).map_err(io_err(&from))?;
        write_atomic(to, &bytes).map_err(io_err(to))
    }

    /// Removes checkpoint files no committed state refers to (left by a crash mid-epoch), and
    /// the temporary files of atomic writes a kill interrupted.
    pub fn remove_stale(&self, state: Option<&RunState>) {
        crate::io::remove_temp_files(&self.root);
        let keep: Vec<String> = state
            .map(|s| {
                let mut v = vec![s.weights.clone(), s.optimizer.clone()];
                if let Some(b) = &s.best {
                    v.push(b.file.clone());
                }
                v
            })
            .unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(self.layout.ckpt_dir()) {
            for e in entries.flatten() {
                let rel = format!("{}/{}", RunLayout::CKPT, e.file_name().to_string_lossy());
                if !keep.contains(&rel) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// The model (on `device`'s autodiff device) and optimizer of the committed state.
    pub fn load_state_tensors(
        &self,
        state: &RunState,
        spec: &ModelSpec,
        device: &Device,
        sgd: &mut Sgd,
    ) -> Result<Model, CheckpointError> {
        // Built on the autodiff device, so the loaded weights are trainable parameters.
        let model = load_model(
            &self.path(&state.weights),
            &device.clone().autodiff(),
            Some(spec),
        )?;
        sgd.velocity = load_velocity(
            &self.path(&state.optimizer),
            &device.clone().without_autodiff(),
            &super::sgd::parameter_sizes(&model),
        )?;
        Ok(model)
    }
}

fn save_velocity(sgd: &Sgd, path: &Path) -> Result<(), CheckpointError> {
    let host: Vec<(String, Vec<u8>, usize)> = sgd
        .velocity
        .iter()
        .map(|(k, v)| {
            let data: Vec<f32> = v.to_data().try_into_vec_as().expect("f32 velocity");
            let n = data.len();
            (
                k.clone(),
                data.iter().flat_map(|f| f.to_le_bytes()).collect(),
                n,
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = host
        .iter()
        .map(|(k, bytes, n)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, vec![*n], bytes).expect("valid view"),
            )
        })
        .collect();
    let mut meta = HashMap::new();
    meta.insert("momentum".to_string(), sgd.momentum.to_string());
    meta.insert("weight_decay".to_string(), sgd.weight_decay.to_string());
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    write_atomic(path, &crate::models::in_key_order(bytes)).map_err(io_err(path))
}

/// Reads the optimizer state; every tensor must be the F32 velocity of one of the model's
/// parameters (`sizes`, by path), with its element count.
fn load_velocity(
    path: &Path,
    device: &Device,
    sizes: &BTreeMap<String, usize>,
) -> Result<BTreeMap<String, Tensor<1>>, CheckpointError> {
    let corrupt = |detail: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("not this run's optimizer state: {detail}"),
    };
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let expected = sizes
            .get(&name)
            .ok_or_else(|| corrupt(format!("{name} is no parameter of the model")))?;
        let n: usize = view.shape().iter().product();
        if view.dtype() != Dtype::F32 || n != *expected || view.shape().len() != 1 {
            return Err(corrupt(format!(
                "{name} is {:?} {:?}, the parameter has {expected} F32 values",
                view.dtype(),
                view.shape()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let n = data.len();
        out.insert(name, Tensor::from_data(TensorData::new(data, [n]), device));
    }
    Ok(out)
}

/// The counters and the history of a state agree with one another.
fn check_consistent(s: &RunState) -> Result<(), String> {
    if s.metrics.len() != s.epochs_done {
        return Err(format!(
            "epochs_done is {} but the history has {} epochs",
            s.epochs_done,
            s.metrics.len()
        ));
    }
    if s.next_epoch != s.epochs_done {
        return Err(format!(
            "next_epoch {} differs from epochs_done {}",
            s.next_epoch, s.epochs_done
        ));
    }
    if let Some((i, m)) = s.metrics.iter().enumerate().find(|(i, m)| m.epoch != i + 1) {
        return Err(format!("history entry {} is for epoch {}", i + 1, m.epoch));
    }
    if s.epochs_done > 0 && (s.weights.is_empty() || s.optimizer.is_empty()) {
        return Err(format!(
            "{} epochs are done but no weights or optimizer state are named",
            s.epochs_done
        ));
    }
    if let Some(b) = &s.best {
        if b.epoch == 0 || b.epoch > s.epochs_done {
            return Err(format!(
                "the best epoch {} is not among the {} done",
                b.epoch, s.epochs_done
            ));
        }
    }
    Ok(())
}
