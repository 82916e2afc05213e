//! Weights in and out: import PyTorch checkpoints (TRADES, RobustBench, the RSLAD code's
//! students) into rslad models, and export rslad checkpoints with the PyTorch reference
//! definitions' key names.
//!
//! Import reads a `.pt`/`.pth` only after checking its pickle names nothing but what a state
//! dict needs (nothing in it is ever executed), maps every key through the layout, and checks
//! every name and shape: missing, unexpected or mis-shaped tensors are listed in one error.

pub mod layouts;
pub mod pickle_scan;

use crate::io::write_atomic;
use crate::models::{Model, ModelSpec, WeightsError};
use burn::prelude::*;
use burn::store::pytorch_reader::{DType as PtType, PytorchReader};
use burn::store::{ModuleSnapshot, SafetensorsStore};
pub use layouts::{default_layout, Layout, Transform, UnknownLayout};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error("{path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{path}: unsafe pickle: {detail}")]
    Unsafe { path: PathBuf, detail: String },
    #[error("{path} does not fit {model} in the {layout} layout:\n{details}")]
    Mismatch {
        path: PathBuf,
        model: String,
        layout: Layout,
        details: String,
    },
    #[error(transparent)]
    Model(#[from] crate::models::UnknownModel),
    #[error(
        "the {layout} layout does not describe {model}{}",
        fitting.map(|l| format!(" (use --layout {l})")).unwrap_or_default()
    )]
    LayoutDoesNotFit {
        layout: Layout,
        model: String,
        /// The layout that does (named on import).
        fitting: Option<Layout>,
    },
    #[error("{name}: {detail}")]
    Tensor { name: String, detail: String },
    #[error("loading failed: {0}")]
    Load(String),
    #[error("{0}")]
    Serialize(#[from] safetensors::SafeTensorError),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{model} cannot be exported to ONNX by burn-onnx: {detail}")]
    Onnx { model: String, detail: String },
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

fn tensor_err<E: std::fmt::Display>(name: &str) -> impl FnOnce(E) -> InteropError + '_ {
    move |e| InteropError::Tensor {
        name: name.to_string(),
        detail: e.to_string(),
    }
}

/// A tensor read from a foreign file, as f32 (or `None` for integer tensors).
pub struct SourceTensor {
    pub shape: Vec<usize>,
    pub data: Option<Vec<f32>>,
}

/// What an import did besides loading weights.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub loaded: usize,
    /// Keys present in the file and deliberately not used (with the reason).
    pub ignored: Vec<String>,
    pub notes: Vec<String>,
}

fn read_err(path: &Path, detail: impl std::fmt::Display) -> InteropError {
    InteropError::Read {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Largest pickle rslad reads from a `.pt` archive. A state dict's pickle holds only names,
/// shapes and storage keys (a few hundred KiB for the largest model); a bigger one is a
/// decompression bomb or not a state dict.
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// Checks every pickle in a `.pt` file (zip or legacy stream) before it is read.
fn check_pickles(path: &Path) -> Result<(), InteropError> {
    let unsafe_err = |e: pickle_scan::ScanError| InteropError::Unsafe {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let mut magic = [0u8; 2];
    let is_zip = file.read_exact(&mut magic).is_ok() && &magic == b"PK";
    if is_zip {
        let mut zip = zip::ZipArchive::new(file).map_err(|e| {
            read_err(
                path,
                format!("not a readable zip archive (truncated?): {e}"),
            )
        })?;
        let names: Vec<String> = zip
            .file_names()
            .filter_map(|n| n.ok().map(|c| c.to_string()))
            .collect();
        let pickles: Vec<&String> = names.iter().filter(|n| n.ends_with(".pkl")).collect();
        if pickles.is_empty() {
            return Err(read_err(
                path,
                "zip archive without a data.pkl: not a torch.save file",
            ));
        }
        for name in pickles {
            let entry = zip.by_name(name).map_err(|e| read_err(path, e))?;
            let declared = entry.size();
            if declared > MAX_PICKLE_BYTES {
                return Err(read_err(
                    path,
                    format!(
                        "{name} declares {declared} bytes uncompressed, more than the \
                         {MAX_PICKLE_BYTES} a state dict's pickle can need: not a state dict \
                         (or a decompression bomb)"
                    ),
                ));
            }
            // Never more than declared: a stream that expands further is refused unread.
            let mut data = Vec::with_capacity(declared as usize);
            entry
                .take(declared + 1)
                .read_to_end(&mut data)
                .map_err(|e| {
                    let why = if e.kind() == std::io::ErrorKind::OutOfMemory {
                        "out of memory"
                    } else {
                        "truncated or damaged archive?"
                    };
                    read_err(path, format!("{name}: {e} ({why})"))
                })?;
            if data.len() as u64 > declared {
                return Err(read_err(
                    path,
                    format!(
                        "{name} expands beyond the {declared} bytes its archive entry declares \
                         (a damaged archive or a decompression bomb)"
                    ),
                ));
            }
            pickle_scan::scan(&data).map_err(unsafe_err)?;
        }
        return Ok(());
    }
    let bytes = std::fs::read(path).map_err(|e| read_err(path, e))?;
    // A pickle stream starts with its protocol (0x80, then 2..=5).
    let pickle_start =
        bytes.first() == Some(&0x80) && bytes.get(1).is_some_and(|p| (2..=5).contains(p));
    if !bytes.is_empty() && !pickle_start {
        return Err(read_err(
            path,
            "not a PyTorch checkpoint: neither a torch.save zip archive nor a pickle stream \
             (give a .pt/.pth written by torch.save, or a .safetensors file)",
        ));
    }
    // Legacy stream: magic, protocol, system info, the object, the storage keys.
    let mut pos = 0;
    for _ in 0..5 {
        if pos >= bytes.len() {
            return Err(read_err(
                path,
                if pos == 0 {
                    "file ends inside its pickles (truncated?)"
                } else {
                    "a pickle, but not one torch.save wrote (a legacy torch.save file holds five \
                     pickles; this one ends after fewer): truncated, or another kind of file"
                },
            ));
        }
        pos += pickle_scan::scan(&bytes[pos..]).map_err(unsafe_err)?;
    }
    Ok(())
}

fn to_f32(dtype: PtType, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        PtType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        PtType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        PtType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        PtType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Reads every tensor of a PyTorch (`.pt`, `.pth`) or safetensors file.
pub fn read_source(path: &Path) -> Result<BTreeMap<String, SourceTensor>, InteropError> {
    if path.is_dir() {
        return Err(read_err(
            path,
            "is a directory; give the checkpoint file inside it",
        ));
    }
    if !path.is_file() {
        return Err(read_err(path, "file not found"));
    }
    let mut out = BTreeMap::new();
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if is_safetensors {
        let bytes = std::fs::read(path).map_err(|e| read_err(path, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| read_err(path, format!("not a valid safetensors file: {e}")))?;
        // rslad's own checkpoints need no import (and their keys fit no PyTorch layout).
        if crate::models::peek_spec(path).is_ok() {
            return Err(read_err(
                path,
                "is already an rslad checkpoint: use it as it is (rslad export turns it into \
                 PyTorch's layout)",
            ));
        }
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                Dtype::F32 => Some(PtType::F32),
                Dtype::F64 => Some(PtType::F64),
                Dtype::F16 => Some(PtType::F16),
                Dtype::BF16 => Some(PtType::BF16),
                _ => None,
            };
            let data = dtype.and_then(|d| to_f32(d, view.data()));
            out.insert(
                name,
                SourceTensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        return Ok(out);
    }
    check_pickles(path)?;
    let reader = PytorchReader::new(path).map_err(|e| read_err(path, e))?;
    for (name, t) in reader.tensors() {
        let bytes = t.read().map_err(|e| {
            read_err(
                path,
                format!("tensor {name}: {e} (storage too short or file truncated)"),
            )
        })?;
        out.insert(
            name.clone(),
            SourceTensor {
                shape: t.shape().to_vec(),
                data: to_f32(t.dtype(), &bytes),
            },
        );
    }
    Ok(out)
}

/// Strips what wrappers add to keys: `state_dict.`/`model.` top-level entries and the
/// `module.` prefix of `nn.DataParallel`.
fn strip_wrappers(key: &str) -> String {
    let mut k = key;
    loop {
        let before = k;
        for prefix in ["state_dict.", "model_state_dict.", "model.", "module."] {
            if let Some(rest) = k.strip_prefix(prefix) {
                k = rest;
            }
        }
        if k == before {
            return k.to_string();
        }
    }
}

fn transform_shape(shape: &[usize], t: Transform) -> Vec<usize> {
    match t {
        Transform::None => shape.to_vec(),
        Transform::Transpose => vec![shape[1], shape[0]],
        Transform::ChannelView => vec![1, shape[0], 1, 1],
    }
}

/// `data` laid out as in rslad (`to_burn`) or as in PyTorch.
fn convert(data: &[f32], rslad_shape: &[usize], t: Transform, to_burn: bool) -> Vec<f32> {
    match t {
        Transform::Transpose => {
            // rslad [in, out] ↔ PyTorch [out, in].
            let (rows, cols) = if to_burn {
                (rslad_shape[1], rslad_shape[0])
            } else {
                (rslad_shape[0], rslad_shape[1])
            };
            let mut out = vec![0f32; data.len()];
            for r in 0..rows {
                for c in 0..cols {
                    out[c * rows + r] = data[r * cols + c];
                }
            }
            out
        }
        _ => data.to_vec(),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// Imports a PyTorch or safetensors state dict into a freshly built `spec` model.
pub fn import(
    path: &Path,
    spec: &ModelSpec,
    layout: Option<Layout>,
    device: &Device,
) -> Result<(Model, ImportReport), InteropError> {
    let arch = spec.arch()?;
    let layout = layout.unwrap_or_else(|| default_layout(arch));
    if !layouts::fits(layout, arch) {
        return Err(InteropError::LayoutDoesNotFit {
            layout,
            model: spec.name.clone(),
            fitting: Some(default_layout(arch)),
        });
    }
    let source = read_source(path)?;
    let mut source: HashMap<String, SourceTensor> = source
        .into_iter()
        .map(|(k, v)| (strip_wrappers(&k), v))
        .collect();
    let mut model = spec.build(device)?;
    let mut report = ImportReport::default();
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    let mut converted: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in model.collect(None, None, true) {
        let shape = t.shape.to_vec();
        let (key, transform) = layouts::to_torch(&t.name, layout);
        let expected = transform_shape(&shape, transform);
        match source.remove(&key) {
            None if layout == Layout::RobustBench && matches!(key.as_str(), "mean" | "std") => {
                // Some RobustBench definitions keep mean/std as plain attributes, not buffers.
                let bytes = t.to_bytes().map_err(tensor_err(&t.name))?.to_vec();
                let values: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                report.notes.push(format!(
                    "`{key}` is not in the checkpoint: kept the model's {key} {values:?} (the dataset's statistics)"
                ));
                converted.push((t.name.clone(), shape, bytes));
            }
            None => missing.push(format!("  missing: {key} {expected:?} (rslad {})", t.name)),
            Some(s)
                if s.shape.iter().product::<usize>() != expected.iter().product::<usize>()
                    || (s.shape != expected && transform != Transform::ChannelView) =>
            {
                wrong.push(format!(
                    "  wrong shape: {key} is {:?} in the file, {expected:?} expected",
                    s.shape
                ))
            }
            Some(s) => match s.data {
                None => wrong.push(format!("  wrong dtype: {key} is not a float tensor")),
                // A NaN or infinite weight gives NaN logits on every input: no model to attack.
                Some(d) if d.iter().any(|v| !v.is_finite()) => {
                    wrong.push(format!("  not finite: {key} holds a NaN or an infinity"))
                }
                Some(d) => converted.push((
                    t.name.clone(),
                    shape.clone(),
                    f32_bytes(&convert(&d, &shape, transform, true)),
                )),
            },
        }
    }
    let mut unexpected = Vec::new();
    let mut leftovers: Vec<String> = source.keys().cloned().collect();
    leftovers.sort();
    for key in leftovers {
        if layouts::ignorable(&key, layout) {
            report.ignored.push(key);
        } else {
            unexpected.push(format!("  unexpected: {key} {:?}", source[&key].shape));
        }
    }
    if !(missing.is_empty() && wrong.is_empty() && unexpected.is_empty()) {
        let details = [missing, wrong, unexpected].concat().join("\n");
        return Err(InteropError::Mismatch {
            path: path.to_path_buf(),
            model: spec.name.clone(),
            layout,
            details,
        });
    }
    let views: Vec<(String, TensorView)> = converted
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("consistent view"),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None)?;
    let mut store = SafetensorsStore::from_bytes(Some(bytes)).skip_enum_variants(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| InteropError::Load(e.to_string()))?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(InteropError::Load(format!(
            "errors {:?}, missing {:?}, unused {:?}",
            result.errors, result.missing, result.unused
        )));
    }
    report.loaded = converted.len();
    if report.ignored.iter().any(|k| k.starts_with("sub_block1.")) {
        report.notes.push("ignored the TRADES definition's `sub_block1.*` (built in __init__, never used in forward)".into());
    }
    Ok((model, report))
}

/// A safetensors entry: dtype, shape, little-endian bytes.
type RawTensor = (Dtype, Vec<usize>, Vec<u8>);

/// Writes `model`'s weights as a safetensors file with the PyTorch reference definition's
/// keys and layouts, ready for `load_state_dict(strict=True)`: BatchNorm step counters are
/// added, and for the TRADES WRN its unused `sub_block1` group (a copy of `block1`).
pub fn export_torch(
    model: &Model,
    path: &Path,
    layout: Option<Layout>,
) -> Result<Layout, InteropError> {
    let arch = model.spec.arch()?;
    let layout = layout.unwrap_or_else(|| default_layout(arch));
    if !layouts::fits(layout, arch) {
        return Err(InteropError::LayoutDoesNotFit {
            layout,
            model: model.spec.name.clone(),
            fitting: None,
        });
    }
    let mut tensors: BTreeMap<String, RawTensor> = BTreeMap::new();
    for t in burn::module::Module::valid(model).collect(None, None, true) {
        let shape = t.shape.to_vec();
        let (key, transform) = layouts::to_torch(&t.name, layout);
        let bytes = t.to_bytes().map_err(tensor_err(&t.name))?;
        let data: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let out = convert(&data, &shape, transform, false);
        if key.ends_with("running_var") {
            let counter = key.replace("running_var", "num_batches_tracked");
            tensors.insert(counter, (Dtype::I64, vec![], 0i64.to_le_bytes().to_vec()));
        }
        tensors.insert(
            key,
            (
                Dtype::F32,
                transform_shape(&shape, transform),
                f32_bytes(&out),
            ),
        );
    }
    if layout == Layout::Trades {
        let copies: Vec<(String, RawTensor)> = tensors
            .iter()
            .filter(|(k, _)| k.starts_with("block1."))
            .map(|(k, v)| (format!("sub_{k}"), v.clone()))
            .collect();
        tensors.extend(copies);
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, (dt, s, b))| {
            (
                k.clone(),
                TensorView::new(*dt, s.clone(), b).expect("consistent view"),
            )
        })
        .collect();
    let mut meta = HashMap::new();
    meta.insert("rslad.model".to_string(), model.spec.name.clone());
    meta.insert("rslad.layout".to_string(), layout.to_string());
    let bytes = crate::models::in_key_order(safetensors::serialize(views, Some(meta))?);
    write_atomic(path, &bytes).map_err(|source| InteropError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(layout)
}

/// Writes `model` (in eval mode: BatchNorm on running statistics) as an ONNX graph with its
/// weights embedded, input `images` of shape [batch, C, H, W] in [0,1] (batch dynamic; the
/// normalisation is inside the graph) and output `logits` [batch, classes]. The graph comes from
/// burn-onnx's experimental capture of one forward pass at batch 1 and one at batch 2.
#[cfg(feature = "onnx")]
pub fn export_onnx(model: &Model, path: &Path) -> Result<(), InteropError> {
    use burn_onnx::export::{AxisSpec, InputSpec, OnnxExporter};
    let spec = &model.spec;
    // The run's device (RSLAD_DEVICE), not burn's default, which prefers a GPU backend.
    let device = crate::backend::default_device();
    let eval = burn::module::Module::valid(model);
    let i = spec.input;
    let shape = |b: usize| [b, i.channels, i.height, i.width];
    let specs = [InputSpec::new([
        AxisSpec::dynamic("batch"),
        AxisSpec::Static,
        AxisSpec::Static,
        AxisSpec::Static,
    ])];
    let onnx = OnnxExporter::new()
        .export_dynamic(
            &eval,
            Tensor::<4>::zeros(shape(1), &device),
            Tensor::<4>::zeros(shape(2), &device),
            &specs,
            |m: &Model, x: Tensor<4>| m.forward(x),
        )
        .map_err(|e| InteropError::Onnx {
            model: spec.name.clone(),
            detail: e.to_string(),
        })?;
    write_atomic(path, onnx.as_bytes()).map_err(|source| InteropError::Write {
        path: path.to_path_buf(),
        source,
    })
}
