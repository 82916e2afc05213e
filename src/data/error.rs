//! Errors of the data readers: each names the file, what is wrong, and how to fix it.

use std::path::PathBuf;

/// A dataset could not be read. Every variant names the offending file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: file not found. {hint}")]
    Missing { path: PathBuf, hint: String },

    #[error(
        "{gz} and {plain} are both there and hold different data: rslad would read one and \
         ignore the other; remove or rename the one that is out of date"
    )]
    TwoVersions { gz: PathBuf, plain: PathBuf },

    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },

    #[error("{path}: not the expected file ({expected}): {detail}")]
    Format {
        path: PathBuf,
        expected: &'static str,
        detail: String,
    },

    #[error("{path}: record {index} has label {label}, but the dataset has {classes} classes")]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
    },

    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },

    #[error("{dir}: the {split} split {detail}; an empty dataset has no accuracy to report")]
    Empty {
        dir: PathBuf,
        split: String,
        detail: String,
    },

    #[error("unknown dataset '{0}': expected one of fashion-mnist, cifar10, cifar100")]
    UnknownDataset(String),
}

impl DataError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
                hint: String::new(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}
