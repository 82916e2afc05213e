//! Model weights on disk: safetensors files whose metadata records the [`ModelSpec`], so that
//! a checkpoint always rebuilds the model it came from and a checkpoint for another model is a
//! clear error, never a silently wrong network. Writes are atomic (temporary file, rename).

use super::{Model, ModelSpec, UnknownModel};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

const SPEC_KEY: &str = "rslad.spec";

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: file not found")]
    Missing { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{path}: not an rslad checkpoint (no '{SPEC_KEY}' metadata). \
         Bring PyTorch or foreign weights in with `rslad import`."
    )]
    NoSpec { path: PathBuf },
    #[error("{path}: checkpoint is for {found}, but {expected} was asked for")]
    WrongModel {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path}: tensors do not fit {model}:\n{details}")]
    Mismatch {
        path: PathBuf,
        model: String,
        details: String,
    },
    #[error(transparent)]
    UnknownModel(#[from] UnknownModel),
    #[error("{path}: cannot write: {detail}")]
    Write { path: PathBuf, detail: String },
}

fn describe(spec: &ModelSpec) -> String {
    format!(
        "{} ({} input, {} classes)",
        spec.name, spec.input, spec.num_classes
    )
}

/// Header of a safetensors file: tensor name → (dtype, shape), and the metadata map.
pub(crate) struct Header {
    pub tensors: BTreeMap<String, (String, Vec<usize>)>,
    pub metadata: HashMap<String, String>,
}

/// Reads and checks the header without loading the tensors (and checks the file is not cut
/// short).
pub(crate) fn read_header(path: &Path) -> Result<Header, WeightsError> {
    let corrupt = |detail: String| WeightsError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    if path.is_dir() {
        return Err(corrupt(
            "is a directory; give the checkpoint file (.safetensors) inside it".into(),
        ));
    }
    let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => WeightsError::Missing {
            path: path.to_path_buf(),
        },
        _ => WeightsError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let file_len = file
        .metadata()
        .map_err(|e| WeightsError::Io {
            path: path.to_path_buf(),
            source: e,
        })?
        .len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| corrupt("shorter than the 8-byte header length".into()))?;
    // torch.save writes a zip archive (`PK\x03\x04`) or, before PyTorch 1.6, a pickle
    // (`\x80` and the protocol): the file is named wrong, not damaged.
    if len_bytes.starts_with(b"PK\x03\x04")
        || (len_bytes[0] == 0x80 && (2..=5).contains(&len_bytes[1]))
    {
        return Err(corrupt(
            "it is a PyTorch file (torch.save), not safetensors; bring it in with `rslad import \
             --from FILE --model MODEL --dataset DATASET --out NEW.safetensors`"
                .into(),
        ));
    }
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(corrupt(format!(
            "header length {header_len} does not fit in a {file_len}-byte file"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| corrupt(format!("cannot read header: {e}")))?;
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("header is not JSON: {e}")))?;
    let mut tensors = BTreeMap::new();
    let mut metadata = HashMap::new();
    let mut data_end = 0u64;
    for (name, value) in json {
        if name == "__metadata__" {
            if let Some(map) = value.as_object() {
                for (k, v) in map {
                    let text = v
                        .as_str()
                        .ok_or_else(|| corrupt(format!("metadata {k} is {v}, not a string")))?;
                    metadata.insert(k.clone(), text.to_string());
                }
            }
            continue;
        }
        let dtype = value["dtype"].as_str().unwrap_or("?").to_string();
        let shape: Vec<usize> = value["shape"]
            .as_array()
            .ok_or_else(|| corrupt(format!("tensor {name} has no shape")))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| {
                        corrupt(format!(
                            "tensor {name} has dimension {d}, not a size (0 or more)"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let offset = |i: usize| {
            value["data_offsets"][i]
                .as_u64()
                .ok_or_else(|| corrupt(format!("tensor {name} has no data offsets")))
        };
        let (start, end) = (offset(0)?, offset(1)?);
        // The declared shape must be backed by the bytes it claims: the file's size then
        // bounds everything built from its header.
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        let bytes = elements.and_then(|n| dtype_size(&dtype).and_then(|b| n.checked_mul(b)));
        match bytes {
            Some(b) if end.checked_sub(start) == Some(b) => {}
            Some(b) => {
                return Err(corrupt(format!(
                    "tensor {name} ({dtype} {shape:?}) needs {b} bytes, its offsets \
                     [{start}, {end}] hold {}",
                    end as i128 - start as i128
                )))
            }
            None if elements.is_none() => {
                return Err(corrupt(format!(
                    "tensor {name} has shape {shape:?}, too large to exist"
                )))
            }
            None => {} // a dtype rslad does not read: reported by the tensor comparison
        }
        data_end = data_end.max(end);
        tensors.insert(name, (dtype, shape));
    }
    // Checked: offsets near u64::MAX must not wrap round to a small total.
    match 8u64
        .checked_add(header_len)
        .and_then(|n| n.checked_add(data_end))
    {
        Some(need) if need <= file_len => {}
        need => {
            return Err(corrupt(format!(
                "truncated: tensors need {} bytes, the file has {file_len}",
                need.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
            )))
        }
    }
    Ok(Header { tensors, metadata })
}

/// Bytes per element of a safetensors dtype.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// The spec recorded in an rslad checkpoint, checked against the file (see [`spec_of`]).
pub fn peek_spec(path: &Path) -> Result<ModelSpec, WeightsError> {
    let header = read_header(path)?;
    spec_of(path, &header)
}

/// Largest input side, channel count and class count a checkpoint may declare: far beyond
/// any dataset rslad reads, far below what would exhaust memory when the model is built.
const MAX_SIDE: usize = 4096;
const MAX_CHANNELS: usize = 64;
const MAX_CLASSES: usize = 100_000;

/// The recorded spec, checked before anything is built from it: a known model, a sane input
/// and class count, and no more parameters than the file's tensors hold (a header cannot make
/// rslad allocate more than the file's own size, give or take the model's constant factor).
fn spec_of(path: &Path, header: &Header) -> Result<ModelSpec, WeightsError> {
    let bad = |detail: String| WeightsError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("bad {SPEC_KEY} metadata: {detail}"),
    };
    let raw = header
        .metadata
        .get(SPEC_KEY)
        .ok_or_else(|| WeightsError::NoSpec {
            path: path.to_path_buf(),
        })?;
    let spec: ModelSpec = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
    let arch = spec.arch().map_err(|e| bad(e.to_string()))?;
    let s = spec.input;
    if !(1..=MAX_SIDE).contains(&s.height) || !(1..=MAX_SIDE).contains(&s.width) {
        return Err(bad(format!(
            "input height x width {}x{} is outside 1..={MAX_SIDE}",
            s.height, s.width
        )));
    }
    if !(1..=MAX_CHANNELS).contains(&s.channels) {
        return Err(bad(format!(
            "{} input channels is outside 1..={MAX_CHANNELS}",
            s.channels
        )));
    }
    if !(1..=MAX_CLASSES).contains(&spec.num_classes) {
        return Err(bad(format!(
            "{} classes is outside 1..={MAX_CLASSES}",
            spec.num_classes
        )));
    }
    let in_file: u128 = header
        .tensors
        .values()
        .map(|(_, shape)| shape.iter().map(|&d| d as u128).product::<u128>())
        .sum();
    let least = super::least_parameters(arch, &spec);
    if least > in_file {
        return Err(bad(format!(
            "{} needs at least {least} parameters, but the file's tensors hold {in_file} values",
            describe(&spec)
        )));
    }
    spec.check_size().map_err(bad)?;
    Ok(spec)
}

/// Names and shapes of every tensor a model saves.
pub(crate) fn model_tensors(model: &Model) -> BTreeMap<String, Vec<usize>> {
    model
        .collect(None, None, true)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect()
}

/// Lists what differs between a file's tensors and a model's, or `None` if they agree.
pub(crate) fn compare_tensors(
    file: &BTreeMap<String, (String, Vec<usize>)>,
    model: &BTreeMap<String, Vec<usize>>,
) -> Option<String> {
    let mut lines = Vec::new();
    for (name, shape) in model {
        match file.get(name) {
            None => lines.push(format!("  missing: {name} {shape:?}")),
            Some((_, s)) if s != shape => lines.push(format!(
                "  wrong shape: {name} is {s:?} in the file, {shape:?} in the model"
            )),
            Some((dtype, _)) if dtype != "F32" => {
                lines.push(format!("  wrong dtype: {name} is {dtype}, expected F32"))
            }
            _ => {}
        }
    }
    for name in file.keys() {
        if !model.contains_key(name) {
            lines.push(format!("  unexpected: {name}"));
        }
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// A checkpoint's spec (`found`, from [`peek_spec`]) is for the `expected` model: same
/// architecture, input shape and classes.
pub fn check_expected(
    path: &Path,
    found: &ModelSpec,
    expected: &ModelSpec,
) -> Result<(), WeightsError> {
    let same_arch = expected.arch().ok() == found.arch().ok();
    if !same_arch || expected.input != found.input || expected.num_classes != found.num_classes {
        return Err(WeightsError::WrongModel {
            path: path.to_path_buf(),
            found: describe(found),
            expected: describe(expected),
        });
    }
    Ok(())
}

/// Loads an rslad checkpoint onto `device`. With `expected`, the checkpoint must be for that
/// model (same architecture, input shape and classes).
pub fn load_model(
    path: &Path,
    device: &Device,
    expected: Option<&ModelSpec>,
) -> Result<Model, WeightsError> {
    let header = read_header(path)?;
    let spec = spec_of(path, &header)?;
    if let Some(expected) = expected {
        check_expected(path, &spec, expected)?;
    }
    let mut model = spec.build(device).map_err(|e| WeightsError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if let Some(details) = compare_tensors(&header.tensors, &model_tensors(&model)) {
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            model: describe(&spec),
            details,
        });
    }
    let mut store = SafetensorsStore::from_file(path).skip_enum_variants(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| WeightsError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            model: describe(&spec),
            details: format!(
                "  errors: {:?}\n  missing: {:?}\n  unused: {:?}",
                result.errors, result.missing, result.unused
            ),
        });
    }
    // Damaged weights would score 0% everywhere (or fail training later with a misleading
    // hint): refuse them here, where the file is known.
    if let Some(damage) = damaged_tensor(&model) {
        return Err(WeightsError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{damage}: the weights are damaged (a diverged run?)"),
        });
    }
    Ok(model)
}

/// The first tensor of `model` (parameters and BatchNorm statistics) that no trained network
/// holds: a NaN or an infinity anywhere, or a negative BatchNorm running variance (its square
/// root is taken). `None` when every tensor is sound.
pub fn damaged_tensor(model: &Model) -> Option<String> {
    model.collect(None, None, true).into_iter().find_map(|t| {
        let bytes = t.to_bytes().ok()?;
        let values = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        let variance = t.name.ends_with("running_var");
        let mut found = None;
        for v in values {
            if !v.is_finite() {
                found = Some(format!("{} holds a NaN or an infinity", t.name));
                break;
            }
            if variance && v < 0.0 {
                found = Some(format!("{} holds a negative variance ({v})", t.name));
                break;
            }
        }
        found
    })
}

/// Saves `model` atomically, with its spec and `extra` metadata. The same weights and
/// metadata always give the same bytes, so a checkpoint's SHA-256 (which results and
/// students record) names what it holds.
pub fn save_model(
    model: &Model,
    path: &Path,
    extra: &[(&str, String)],
) -> Result<(), WeightsError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| WeightsError::Io {
            path: parent.to_path_buf(),
            source: e,
        })?;
    }
    let write_err = |detail: String| WeightsError::Write {
        path: path.to_path_buf(),
        detail,
    };
    let mut store = SafetensorsStore::from_bytes(None)
        .skip_enum_variants(true)
        .metadata(
            SPEC_KEY,
            serde_json::to_string(&model.spec).expect("spec serialises"),
        );
    for (k, v) in extra {
        store = store.metadata(*k, v.clone());
    }
    model
        .save_into(&mut store)
        .map_err(|e| write_err(e.to_string()))?;
    let bytes = store.get_bytes().map_err(|e| write_err(e.to_string()))?;
    drop(store);
    let bytes = in_key_order(bytes);
    crate::io::write_atomic(path, &bytes).map_err(|e| WeightsError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// A safetensors file (as `safetensors::serialize` writes it) with its header's keys in
/// order: the writer lists the metadata in a hash map's order, which differs from one save to
/// the next, and a file's SHA-256 should name what it holds. The header keeps its length (the
/// same keys and values), so it is rewritten in place and no data offset moves; bytes that are
/// not a safetensors file are returned as they are.
pub(crate) fn in_key_order(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(n) = bytes
        .get(..8)
        .map(|n| u64::from_le_bytes(n.try_into().expect("8 bytes")) as usize)
    else {
        return bytes;
    };
    let Some(header) = 8usize.checked_add(n).and_then(|end| bytes.get(8..end)) else {
        return bytes;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let mut text = serde_json::to_vec(&sorted(value)).expect("a parsed header serialises");
    if text.len() <= n {
        // The writer pads with spaces to a multiple of 8; so does this.
        text.resize(n, b' ');
        bytes[8..8 + n].copy_from_slice(&text);
    }
    bytes
}

/// `value` with every object's keys in order, whatever map serde_json is built with.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let ordered: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::Value::Object(ordered.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}
