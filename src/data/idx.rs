//! Fashion-MNIST in the IDX format: a big-endian u32 magic (0x803 for u8 images of rank 3,
//! 0x801 for u8 labels of rank 1), one big-endian u32 per dimension, then the bytes.
//! Files may be gzipped (`*.gz`, as Debian ships them) or plain.

use super::{DataError, Dataset, DatasetKind, Split};
use flate2::bufread::GzDecoder;
use std::io::{BufRead, Read};
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
    let (images_path, dims, images) =
        read_named(dir, images_name, IMAGES_MAGIC, &[shape.height, shape.width])?;
    let (labels_path, label_dims, labels) = read_named(dir, labels_name, LABELS_MAGIC, &[])?;
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

/// The IDX file `name` in `dir` (gzipped or plain): its path, dimensions and bytes. Where
/// both forms are there (`gunzip -k` keeps both) they must hold the same data: otherwise which
/// one is read would decide what the run trains on, unseen.
fn read_named(
    dir: &Path,
    name: &str,
    magic: u32,
    inner: &[usize],
) -> Result<(PathBuf, Vec<usize>, Vec<u8>), DataError> {
    let path = find(dir, name)?;
    let (dims, bytes) = read_idx(&path, magic, inner)?;
    let plain = dir.join(name);
    if path != plain && plain.is_file() {
        let same = read_idx(&plain, magic, inner).is_ok_and(|(d, b)| d == dims && b == bytes);
        if !same {
            return Err(DataError::TwoVersions { gz: path, plain });
        }
    }
    Ok((path, dims, bytes))
}

/// `name.gz` if present, else `name`.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{name}.gz"));
    let plain = dir.join(name);
    for p in [&gz, &plain] {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    for p in [&gz, &plain] {
        if p.is_dir() {
            return Err(DataError::Format {
                path: p.clone(),
                expected: "IDX",
                detail: "it is a directory; the IDX file itself must be at this path".into(),
            });
        }
    }
    let hint = [format!("{name}.gz"), name.to_string()]
        .iter()
        .map(|file| super::nearby(dir, file))
        .find(|hint| !hint.is_empty())
        .unwrap_or_default();
    Err(DataError::Missing { path: gz, hint })
}

/// The gzip members of a file read as one stream, as `gzip -d` reads them (pigz, bgzip and
/// `cat a.gz b.gz` write several). Zero bytes after the last member are padding some tools
/// add (gzip ignores them with a warning); any other byte there is an error.
struct GzMembers<R: BufRead> {
    member: Option<GzDecoder<R>>,
    /// For the padding warning.
    path: PathBuf,
}

impl<R: BufRead> GzMembers<R> {
    fn new(input: R, path: &Path) -> Self {
        GzMembers {
            member: Some(GzDecoder::new(input)),
            path: path.to_path_buf(),
        }
    }
}

impl<R: BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(member) = self.member.as_mut() else {
                return Ok(0);
            };
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The member ended; its decoder has taken exactly its bytes from the input.
            let mut input = self.member.take().expect("checked above").into_inner();
            let rest = input.fill_buf()?;
            if rest.is_empty() {
                return Ok(0);
            }
            if rest[0] != 0 {
                self.member = Some(GzDecoder::new(input));
                continue;
            }
            loop {
                let rest = input.fill_buf()?;
                if rest.is_empty() {
                    tracing::warn!(
                        "{}: zero bytes after the last gzip member ignored (padding)",
                        self.path.display()
                    );
                    return Ok(0);
                }
                if rest.iter().any(|&b| b != 0) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "bytes that are neither gzip nor zero padding follow the last member",
                    ));
                }
                let len = rest.len();
                input.consume(len);
            }
        }
    }
}

/// Largest number of records an IDX file may announce: 14x Fashion-MNIST's 70 000 (and above
/// EMNIST's largest split), and a bound on what a header, or a gzip stream that expands to
/// match it, can make rslad allocate (784 MB of 28x28 images).
const MAX_RECORDS: usize = 1_000_000;

/// Reads an IDX file of unsigned bytes with `rank` dimensions; returns the dimensions and data.
/// `record_dims` are the dimensions after the first that the caller accepts (28×28 images, or
/// none for labels); they are checked, with the total size, before the data is read, and no
/// more than the announced size is ever read (a gzip stream can expand without bound).
fn read_idx(
    path: &Path,
    magic: u32,
    record_dims: &[usize],
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let rank = 1 + record_dims.len();
    let io = |e: std::io::Error| DataError::io(path, e);
    let file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut sniff = std::io::BufReader::new(file);
    let gz = std::io::BufRead::fill_buf(&mut sniff)
        .map_err(io)?
        .starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gz {
        Box::new(GzMembers::new(sniff, path))
    } else {
        Box::new(sniff)
    };
    let damaged = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::OutOfMemory {
            DataError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        } else if gz {
            DataError::Truncated {
                path: path.to_path_buf(),
                detail: format!("gzip stream is damaged or cut short: {e}"),
            }
        } else {
            DataError::io(path, e)
        }
    };
    let header = 4 + 4 * rank;
    let mut head = Vec::with_capacity(header);
    reader
        .by_ref()
        .take(header as u64)
        .read_to_end(&mut head)
        .map_err(damaged)?;
    if head.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes, shorter than the {header}-byte IDX header",
                head.len()
            ),
        });
    }
    let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
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
    if head.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes, shorter than the {header}-byte IDX header",
                head.len()
            ),
        });
    }
    let dims: Vec<usize> = (0..rank).map(|d| word(4 + 4 * d) as usize).collect();
    if dims[1..] != *record_dims {
        let side = |d: &[usize]| {
            d.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("×")
        };
        return Err(DataError::Format {
            path: path.to_path_buf(),
            expected: "Fashion-MNIST image",
            detail: format!(
                "images are {}, expected {}",
                side(&dims[1..]),
                side(record_dims)
            ),
        });
    }
    if dims[0] > MAX_RECORDS {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            expected: "Fashion-MNIST IDX",
            detail: format!(
                "the header announces {} records, more than the {MAX_RECORDS} rslad accepts \
                 (a damaged header?)",
                dims[0]
            ),
        });
    }
    let expected: usize = dims.iter().product();
    // Memory follows the bytes that are there, not the header's promise: a plain file is
    // measured first, a gzip stream's buffer grows as it expands.
    if !gz && file_len < (header + expected) as u64 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "header announces {dims:?} = {expected} bytes of data, file holds {}",
                file_len.saturating_sub(header as u64)
            ),
        });
    }
    let mut data = Vec::with_capacity(if gz { expected.min(1 << 26) } else { expected });
    reader
        .by_ref()
        .take(expected as u64)
        .read_to_end(&mut data)
        .map_err(damaged)?;
    if data.len() < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "header announces {dims:?} = {expected} bytes of data, file holds {}",
                data.len()
            ),
        });
    }
    // Anything after the announced data (more data, or bytes that are not gzip after the
    // last gzip member) means the file is not what its header says.
    let more = |detail: String| DataError::Format {
        path: path.to_path_buf(),
        expected: "IDX",
        detail,
    };
    match reader.read(&mut [0u8; 1]) {
        Ok(0) => Ok((dims, data)),
        Ok(_) => Err(more(format!(
            "more data after the header than its dimensions {dims:?} need ({expected} bytes)"
        ))),
        Err(e) if gz && e.kind() != std::io::ErrorKind::OutOfMemory => Err(more(format!(
            "after the data its header announces, the gzip stream is damaged or followed by \
             bytes that are not gzip ({e})"
        ))),
        Err(e) => Err(DataError::io(path, e)),
    }
}
