//! Fashion-MNIST in the IDX format: a big-endian u32 magic (0x803 for u8 images of rank 3,
//! 0x801 for u8 labels of rank 1), one big-endian u32 per dimension, then the bytes.
//! Files may be gzipped (`*.gz`, as Debian ships them) or plain.

use super::{read_file, DataError, Dataset, DatasetKind, Split};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

pub(super) fn load_fashion_mnist(
    dir: &Path,
    split: Split,
    limit: usize,
) -> Result<Dataset, DataError> {
    let (images_name, labels_name) = match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    };
    let kind = DatasetKind::FashionMnist;
    let shape = kind.shape();
    let images_path = find(dir, images_name)?;
    let labels_path = find(dir, labels_name)?;

    let (dims, images) = read_idx(&images_path, IMAGES_MAGIC, 3)?;
    if dims[1] != shape.height || dims[2] != shape.width {
        return Err(DataError::Format {
            path: images_path,
            expected: "Fashion-MNIST image",
            detail: format!(
                "images are {}×{}, expected {}×{}",
                dims[1], dims[2], shape.height, shape.width
            ),
        });
    }
    let (label_dims, labels) = read_idx(&labels_path, LABELS_MAGIC, 1)?;
    if dims[0] != label_dims[0] {
        return Err(DataError::CountMismatch {
            images: images_path,
            n_images: dims[0],
            labels: labels_path,
            n_labels: label_dims[0],
        });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= 10) {
        return Err(DataError::LabelOutOfRange {
            path: labels_path,
            index,
            label,
            classes: 10,
        });
    }
    let n = dims[0].min(limit);
    let mut dataset = Dataset {
        kind,
        shape,
        num_classes: kind.num_classes(),
        images,
        labels,
    };
    dataset = dataset.truncate(n);
    Ok(dataset)
}

/// `name.gz` if present, else `name`.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    Err(DataError::Missing {
        path: gz,
        hint: String::new(),
    })
}

/// Reads an IDX file of unsigned bytes with `rank` dimensions; returns the dimensions and data.
fn read_idx(path: &Path, magic: u32, rank: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let raw = read_file(path)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::Truncated {
                path: path.to_path_buf(),
                detail: format!("gzip stream is damaged or cut short: {e}"),
            })?;
        out
    } else {
        raw
    };
    let header = 4 + 4 * rank;
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes, shorter than the {header}-byte IDX header",
                bytes.len()
            ),
        });
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let found = word(0);
    if found != magic {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            expected: if magic == IMAGES_MAGIC {
                "IDX image (magic 0x00000803)"
            } else {
                "IDX label (magic 0x00000801)"
            },
            detail: format!("magic number is 0x{found:08x}"),
        });
    }
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes, shorter than the {header}-byte IDX header",
                bytes.len()
            ),
        });
    }
    let dims: Vec<usize> = (0..rank).map(|d| word(4 + 4 * d) as usize).collect();
    let expected: usize = dims.iter().product();
    let data = &bytes[header..];
    if data.len() < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "header announces {dims:?} = {expected} bytes of data, file holds {}",
                data.len()
            ),
        });
    }
    if data.len() > expected {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            expected: "IDX",
            detail: format!(
                "{} bytes of data after the header, but its dimensions {dims:?} need {expected}",
                data.len()
            ),
        });
    }
    Ok((dims, data.to_vec()))
}
