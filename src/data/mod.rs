//! Datasets as raw bytes: images (N × C × H × W, u8) and labels, read from the standard files.
//!
//! Pixels stay `u8` until a batch is built; the loader turns them into f32 in [0,1]. There is no
//! mean/std normalisation here: a model that needs one carries it (see `models`).

mod cifar;
mod error;
mod idx;
mod loader;

pub use error::DataError;
pub use loader::{Augment, Batch, BatchIter, LoaderConfig};

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The datasets rslad reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    FashionMnist,
    Cifar10,
    Cifar100,
}

/// Which half of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Channels, height and width of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// `CxHxW`, as messages name an input.
impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

impl ImageShape {
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 3] = [
        DatasetKind::FashionMnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
        }
    }

    pub fn shape(self) -> ImageShape {
        match self {
            DatasetKind::FashionMnist => ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => ImageShape {
                channels: 3,
                height: 32,
                width: 32,
            },
        }
    }

    pub fn num_classes(self) -> usize {
        match self {
            DatasetKind::FashionMnist | DatasetKind::Cifar10 => 10,
            DatasetKind::Cifar100 => 100,
        }
    }

    /// The directory read when the user names none (Debian's package for Fashion-MNIST; the
    /// usual extraction folder name for CIFAR).
    pub fn default_dir(self) -> PathBuf {
        match self {
            DatasetKind::FashionMnist => PathBuf::from("/usr/share/datasets/fashion-mnist"),
            DatasetKind::Cifar10 => PathBuf::from("data/cifar-10-batches-bin"),
            DatasetKind::Cifar100 => PathBuf::from("data/cifar-100-binary"),
        }
    }

    /// The usual L-inf budget on the [0,1] pixel scale: 8/255 for CIFAR, 0.1 for Fashion-MNIST.
    pub fn default_eps(self) -> f64 {
        match self {
            DatasetKind::FashionMnist => 0.1,
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => 8.0 / 255.0,
        }
    }

    /// Training augmentation of every reference code: crop with 4-pixel zero padding and a
    /// horizontal flip for CIFAR, none for Fashion-MNIST.
    pub fn default_augment(self) -> Augment {
        match self {
            DatasetKind::FashionMnist => Augment::NONE,
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Augment {
                crop_padding: 4,
                horizontal_flip: true,
            },
        }
    }

    /// How to get the files, for "file not found" errors.
    pub fn how_to_get(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => {
                "Install it with `sudo apt-get install -y dataset-fashion-mnist` (files land in \
                 /usr/share/datasets/fashion-mnist) or pass --data-dir to a folder holding the \
                 four IDX files (gzipped or not)."
            }
            DatasetKind::Cifar10 => {
                "Download the binary version (cifar-10-binary.tar.gz) from \
                 https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass --data-dir \
                 path/to/cifar-10-batches-bin."
            }
            DatasetKind::Cifar100 => {
                "Download the binary version (cifar-100-binary.tar.gz) from \
                 https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass --data-dir \
                 path/to/cifar-100-binary."
            }
        }
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "fashion-mnist" | "fashionmnist" | "fmnist" => Ok(DatasetKind::FashionMnist),
            "cifar10" | "cifar-10" => Ok(DatasetKind::Cifar10),
            "cifar100" | "cifar-100" => Ok(DatasetKind::Cifar100),
            _ => Err(DataError::UnknownDataset(s.to_string())),
        }
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Images and labels of one split, in file order.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub kind: DatasetKind,
    pub shape: ImageShape,
    pub num_classes: usize,
    /// `len() * shape.len()` bytes, each image C × H × W in row-major order.
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Dataset {
    /// SHA-256 of the images and labels: which examples an evaluation's ids name (a data
    /// folder replaced by another holds other images under the same ids).
    pub fn sha256(&self) -> String {
        crate::io::sha256_bytes(&[&self.images, &self.labels])
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.shape.len();
        &self.images[index * n..(index + 1) * n]
    }

    /// The first `n` examples (all of them if `n` is larger).
    pub fn truncate(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.images.truncate(n * self.shape.len());
        self
    }

    /// Examples `start..end` as a new dataset (for sharded evaluation and held-out slices).
    pub fn slice(&self, start: usize, end: usize) -> Self {
        let end = end.min(self.len());
        let start = start.min(end);
        let n = self.shape.len();
        Dataset {
            kind: self.kind,
            shape: self.shape,
            num_classes: self.num_classes,
            images: self.images[start * n..end * n].to_vec(),
            labels: self.labels[start..end].to_vec(),
        }
    }
}

/// Reads `split` of `kind` from `dir` (the dataset's default folder when `None`), keeping the
/// first `limit` examples when given. Broken files give a [`DataError`] that names them.
pub fn load(
    kind: DatasetKind,
    dir: Option<&Path>,
    split: Split,
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    let default_dir = kind.default_dir();
    let dir = dir.unwrap_or(&default_dir);
    let limit = limit.unwrap_or(usize::MAX);
    let dataset = match kind {
        DatasetKind::FashionMnist => idx::load_fashion_mnist(dir, split, limit),
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => cifar::load(kind, dir, split, limit),
    }
    .map_err(|e| match e {
        DataError::Missing { path, hint } if hint.is_empty() => DataError::Missing {
            path,
            hint: if dir.exists() {
                kind.how_to_get().to_string()
            } else {
                format!(
                    "The folder {} does not exist. {}",
                    dir.display(),
                    kind.how_to_get()
                )
            },
        },
        other => other,
    })?;
    if dataset.is_empty() {
        return Err(DataError::Empty {
            dir: dir.to_path_buf(),
            split: format!("{split:?}").to_lowercase(),
            detail: if limit == 0 {
                "is limited to 0 images".into()
            } else {
                "holds no images".into()
            },
        });
    }
    Ok(dataset.truncate(limit))
}

/// Where the file most likely is when it is not in `dir`: a folder inside `dir` holds it (the
/// archive was extracted into `dir`, which is then one level too high). Empty when none does.
fn nearby(dir: &Path, file: &str) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    let mut inside: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|sub| sub.join(file).is_file())
        .collect();
    inside.sort();
    match inside.first() {
        Some(sub) => format!(
            "It is in {}: pass that folder as --data-dir (or the config's data_dir).",
            sub.display()
        ),
        None => String::new(),
    }
}

/// Reads a whole file, mapping "not found" to [`DataError::Missing`].
fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}
