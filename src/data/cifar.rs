//! CIFAR-10 and CIFAR-100, binary version: fixed-size records of label byte(s) then 3,072 pixel
//! bytes (1,024 red, 1,024 green, 1,024 blue, each 32×32 row-major).

use super::{read_file, DataError, Dataset, DatasetKind, Split};
use std::path::Path;

const PIXELS: usize = 3 * 32 * 32;

/// Records per file in the official release; other counts are accepted (tests use small files).
const RECORDS_PER_FILE: usize = 10_000;

/// The other CIFAR, when `dir` holds its files and none of `kind`'s: a dataset named wrong.
fn other_cifar(kind: DatasetKind, dir: &Path) -> Option<DatasetKind> {
    let (other, its_file, own) = match kind {
        DatasetKind::Cifar10 => (DatasetKind::Cifar100, "train.bin", "test_batch.bin"),
        _ => (DatasetKind::Cifar10, "data_batch_1.bin", "test.bin"),
    };
    (dir.join(its_file).is_file() && !dir.join(own).is_file()).then_some(other)
}

pub(super) fn load(
    kind: DatasetKind,
    dir: &Path,
    split: Split,
    limit: usize,
) -> Result<Dataset, DataError> {
    let files: Vec<&str> = match (kind, split) {
        (DatasetKind::Cifar10, Split::Train) => vec![
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
        ],
        (DatasetKind::Cifar10, Split::Test) => vec!["test_batch.bin"],
        (DatasetKind::Cifar100, Split::Train) => vec!["train.bin"],
        (DatasetKind::Cifar100, Split::Test) => vec!["test.bin"],
        (DatasetKind::FashionMnist, _) => unreachable!("not a CIFAR dataset"),
    };
    // CIFAR-100 records carry a coarse label (0–19) before the fine one (0–99).
    let label_bytes = if kind == DatasetKind::Cifar100 { 2 } else { 1 };
    let record = label_bytes + PIXELS;
    let classes = kind.num_classes();

    // Every file must exist, even when `limit` would be met early: a half-present dataset is an
    // installation error the user wants to hear about now.
    for file in &files {
        let path = dir.join(file);
        if path.is_dir() {
            return Err(DataError::Format {
                path,
                expected: "CIFAR binary",
                detail: "it is a directory; the .bin file itself must be at this path".into(),
            });
        }
        if !path.is_file() {
            let hint = match other_cifar(kind, dir) {
                Some(other) => format!(
                    "The folder holds {other}'s files: give --dataset {} (or the config's \
                     dataset).",
                    other.name()
                ),
                None => super::nearby(dir, file),
            };
            return Err(DataError::Missing { path, hint });
        }
    }

    let mut images = Vec::new();
    let mut labels = Vec::new();
    for file in files {
        if labels.len() >= limit {
            break;
        }
        let path = dir.join(file);
        let bytes = read_file(&path)?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(DataError::Truncated {
                path,
                detail: format!(
                    "{} bytes is not a whole number of {record}-byte records \
                     (a full file has {} bytes)",
                    bytes.len(),
                    record * RECORDS_PER_FILE
                ),
            });
        }
        let count = bytes.len() / record;
        if count != RECORDS_PER_FILE {
            tracing::warn!(
                "{}: {count} records (the official file has {RECORDS_PER_FILE})",
                path.display()
            );
        }
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            if label_bytes == 2 && rec[0] >= 20 {
                return Err(DataError::LabelOutOfRange {
                    path,
                    index: i,
                    label: rec[0],
                    classes: 20,
                });
            }
            let label = rec[label_bytes - 1];
            if label as usize >= classes {
                return Err(DataError::LabelOutOfRange {
                    path,
                    index: i,
                    label,
                    classes,
                });
            }
            labels.push(label);
            images.extend_from_slice(&rec[label_bytes..]);
        }
    }
    Ok(Dataset {
        kind,
        shape: kind.shape(),
        num_classes: classes,
        images,
        labels,
    })
}
