//! One evaluation of a checkpoint file, as `rslad eval` and an experiment cell both run it: the
//! model must fit the dataset (checked on the recorded spec, before the model is built), the
//! test set is cut to the requested examples and shard, the attacks are parsed for the model,
//! and the results record the checkpoint with its SHA-256 (so shards and reuse can be checked).

use super::{evaluate, EvalConfig, EvalResults, Progress};
use crate::attacks::{self, Attack, AttackContext, AttackError};
use crate::data::{self, DataError, Dataset, DatasetKind, Split};
use crate::models::{load_model, peek_spec, Model, ModelSpec, WeightsError};
use burn::prelude::Device;
use std::path::PathBuf;

/// Piece `index` of `count` of the test set (`K/N`, K from 0), for cluster array jobs; the
/// report merges the pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("a shard is K/N with whole numbers, e.g. 0/4")]
    Form,
    #[error("K must be in 0..N")]
    Range,
}

impl std::str::FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Self, ShardError> {
        let (k, n) = s.split_once('/').ok_or(ShardError::Form)?;
        let whole = |t: &str| t.trim().parse::<usize>().map_err(|_| ShardError::Form);
        let (index, count) = (whole(k)?, whole(n)?);
        if count == 0 || index >= count {
            return Err(ShardError::Range);
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The examples `[start, end)` of this piece of `len`: consecutive pieces, sizes within one.
    pub fn range(&self, len: usize) -> (usize, usize) {
        (
            self.index * len / self.count,
            (self.index + 1) * len / self.count,
        )
    }
}

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// An rslad checkpoint (.safetensors).
    pub checkpoint: PathBuf,
    pub dataset: DatasetKind,
    pub data_dir: Option<PathBuf>,
    /// The attack list (`attacks::parse_list` syntax).
    pub attacks: String,
    /// L-inf radius on the [0,1] scale.
    pub eps: f64,
    /// The first N test images (all when `None`).
    pub n_examples: Option<usize>,
    pub shard: Option<Shard>,
    pub batch_size: usize,
    pub seed: u64,
    /// Run the gradient-masking checks (when there is an attack to check).
    pub sanity_checks: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Attack(#[from] AttackError),
    #[error(
        "{}: the checkpoint is a {} for {} images with {} classes; {dataset} has {} with {}",
        path.display(), found.name, found.input, found.num_classes,
        dataset.shape(), dataset.num_classes()
    )]
    WrongDataset {
        path: PathBuf,
        found: Box<ModelSpec>,
        dataset: DatasetKind,
    },
    #[error("the evaluation batch size is 0; it must be at least 1")]
    ZeroBatchSize,
    #[error("{}: cannot hash the checkpoint: {source}", path.display())]
    Hash {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A checkpoint loaded and checked, its examples and attacks ready: what a caller may show
/// before the (long) run.
pub struct PreparedEval {
    request: EvalRequest,
    model: Model,
    data_sha256: String,
    data: Dataset,
    first_id: usize,
    test_len: usize,
    attacks: Vec<Box<dyn Attack>>,
}

/// Loads and checks everything [`PreparedEval::run`] needs; nothing is attacked yet.
pub fn prepare(request: EvalRequest, device: &Device) -> Result<PreparedEval, EvalError> {
    if request.batch_size == 0 {
        return Err(EvalError::ZeroBatchSize);
    }
    let path = &request.checkpoint;
    // The recorded spec is checked against the dataset before the model is built.
    let spec = peek_spec(path)?;
    let kind = request.dataset;
    if spec.input != kind.shape() || spec.num_classes != kind.num_classes() {
        return Err(EvalError::WrongDataset {
            path: path.clone(),
            found: Box::new(spec),
            dataset: kind,
        });
    }
    let model = load_model(path, device, Some(&spec))?;
    let test = data::load(
        kind,
        request.data_dir.as_deref(),
        Split::Test,
        request.n_examples,
    )?;
    let test_len = test.len();
    let data_sha256 = test.sha256();
    let (first_id, data) = match request.shard {
        Some(shard) => {
            let (a, b) = shard.range(test_len);
            (a, test.slice(a, b))
        }
        None => (0, test),
    };
    let ctx = AttackContext {
        eps: request.eps,
        seed: request.seed,
        device,
        target: &model.spec,
    };
    let attacks = attacks::parse_list(&request.attacks, &ctx)?;
    Ok(PreparedEval {
        request,
        model,
        data_sha256,
        data,
        first_id,
        test_len,
        attacks,
    })
}

impl PreparedEval {
    /// The model as its checkpoint records it.
    pub fn spec(&self) -> &ModelSpec {
        &self.model.spec
    }

    /// Examples this evaluation attacks (those of its shard).
    pub fn examples(&self) -> usize {
        self.data.len()
    }

    /// Examples of the test set before sharding.
    pub fn test_len(&self) -> usize {
        self.test_len
    }

    pub fn request(&self) -> &EvalRequest {
        &self.request
    }

    /// Attacks the examples and records the checkpoint with its hash.
    pub fn run(
        self,
        device: &Device,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<EvalResults, EvalError> {
        let cfg = EvalConfig {
            eps: self.request.eps,
            batch_size: self.request.batch_size,
            seed: self.request.seed,
            sanity_checks: self.request.sanity_checks && !self.attacks.is_empty(),
        };
        let mut results = evaluate(
            &self.model,
            self.data,
            self.first_id as u64,
            &self.attacks,
            &cfg,
            device,
            progress,
        );
        let path = &self.request.checkpoint;
        results.shard = self.request.shard.map(|s| super::ShardRecord {
            index: s.index,
            count: s.count,
            test_examples: self.test_len,
        });
        results.data_sha256 = Some(self.data_sha256);
        results.checkpoint = Some(path.display().to_string());
        results.checkpoint_sha256 =
            Some(
                crate::io::sha256_file(path).map_err(|source| EvalError::Hash {
                    path: path.clone(),
                    source,
                })?,
            );
        Ok(results)
    }
}

/// [`prepare`] then [`PreparedEval::run`].
pub fn evaluate_checkpoint(
    request: EvalRequest,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvalResults, EvalError> {
    prepare(request, device)?.run(device, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_cover_the_test_set() {
        let s: Shard = "1/4".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 4 });
        assert_eq!(s.to_string(), "1/4");
        assert_eq!("4".parse::<Shard>(), Err(ShardError::Form));
        assert_eq!("a/4".parse::<Shard>(), Err(ShardError::Form));
        assert_eq!("4/4".parse::<Shard>(), Err(ShardError::Range));
        assert_eq!("0/0".parse::<Shard>(), Err(ShardError::Range));
        // Pieces are consecutive and cover every example once, also with more pieces than
        // examples.
        for (len, count) in [(10, 3), (3, 4), (0, 2)] {
            let mut next = 0;
            for index in 0..count {
                let (a, b) = Shard { index, count }.range(len);
                assert_eq!(a, next);
                assert!(b >= a && b - a <= len.div_ceil(count));
                next = b;
            }
            assert_eq!(next, len);
        }
    }
}
