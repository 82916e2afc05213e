//! Output paths a command may write: an earlier output of the same kind, never one of the
//! command's own inputs or a file of another kind (a slip of the shell's completion would
//! destroy a checkpoint, a data file or a run's state).

use anyhow::bail;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// What an existing file at the output path must already be to be replaced.
#[derive(Clone, Copy)]
pub enum Kind {
    /// An `rslad eval` results file (or merged shards).
    EvalResults,
    /// An `rslad bench --json` table (a JSON object with `rows`).
    BenchJson,
    /// A safetensors file.
    Safetensors,
    /// A file named `.onnx`.
    Onnx,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::EvalResults => "an rslad results file",
            Kind::BenchJson => "an rslad bench file",
            Kind::Safetensors => "a safetensors file",
            Kind::Onnx => "an .onnx file",
        }
    }

    fn holds(self, path: &Path) -> bool {
        let json = |p: &Path| std::fs::read(p).ok();
        match self {
            Kind::EvalResults => json(path)
                .is_some_and(|b| serde_json::from_slice::<rslad::eval::EvalResults>(&b).is_ok()),
            Kind::BenchJson => json(path).is_some_and(|b| {
                serde_json::from_slice::<serde_json::Value>(&b)
                    .is_ok_and(|v| v.get("rows").is_some())
            }),
            Kind::Safetensors => safetensors_header(path),
            Kind::Onnx => path.extension().is_some_and(|e| e == "onnx"),
        }
    }
}

/// Whether `path` starts with a safetensors header (its length, then a JSON object).
fn safetensors_header(path: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return false;
    }
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return false;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).is_ok()
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&header).is_ok()
}

/// `path` as it will name a file once its missing folders are created, absolute: a folder
/// that does not exist yet followed by `..` is no folder at all (`new/../ckpt` is `ckpt`),
/// which the file system cannot say before `new` is made; the part that exists is resolved
/// (links and `..` included) by the file system.
fn as_written(path: &Path) -> PathBuf {
    let mut lexical = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir if !lexical.as_os_str().is_empty() && !lexical.exists() => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    for existing in lexical.ancestors() {
        let real = if existing.as_os_str().is_empty() {
            Path::new(".").canonicalize()
        } else {
            existing.canonicalize()
        };
        if let (Ok(real), Ok(rest)) = (real, lexical.strip_prefix(existing)) {
            // `join("")` would add a trailing `/`, which no file matches.
            return if rest.as_os_str().is_empty() {
                real
            } else {
                real.join(rest)
            };
        }
    }
    lexical
}

/// The training run `path` (absolute, [`as_written`]) lies in: its folder, or the folder
/// above, holds the run's `state.json` or an experiment cell's `cell.json`. Training writes
/// its checkpoints there and in its `ckpt/`.
fn run_of(path: &Path) -> Option<PathBuf> {
    path.ancestors().skip(1).take(2).find_map(|dir| {
        // rslad's own files, not any `state.json`.
        let run = rslad::train::RunDir::new(dir)
            .read_state()
            .is_ok_and(|s| s.is_some());
        let cell = std::fs::read(rslad::train::RunLayout::new(dir).cell_record())
            .ok()
            .and_then(|b| serde_json::from_slice::<rslad::experiment::CellRecord>(&b).ok())
            .is_some();
        (run || cell).then(|| dir.to_path_buf())
    })
}

/// Refuses `out` (given as `flag`) when it is a directory, one of `inputs`, a lock file, a
/// checkpoint of a training run, or an existing file that is not of `kind`.
pub fn check(flag: &str, out: &Path, inputs: &[&Path], kind: Kind) -> anyhow::Result<()> {
    let shown = out.display();
    let out = &as_written(out);
    if out.is_dir() {
        bail!("{flag} {shown}: is a directory; give a file's path");
    }
    if let Some(input) = inputs.iter().find(|i| rslad::io::same_file(out, i)) {
        bail!(
            "{flag} {shown}: is an input of this command ({}); give another path",
            input.display()
        );
    }
    // A lock file is empty, and a second process would be let in once it is replaced.
    if out.extension().is_some_and(|e| e == "lock") && out.exists() {
        bail!("{flag} {shown}: is a lock file; give another path");
    }
    if let Some(run) = run_of(out).filter(|_| matches!(kind, Kind::Safetensors)) {
        // Training writes best, last and everything in its folders (`ckpt/`); any other
        // file beside them (an export next to the checkpoints) is the user's.
        let layout = rslad::train::RunLayout::new(&run);
        let in_subfolder = out.parent() != Some(run.as_path());
        if in_subfolder || *out == layout.best() || *out == layout.last() {
            bail!(
                "{flag} {shown}: is a checkpoint of the training run {}; give another path",
                run.display()
            );
        }
    }
    // An empty file (`mktemp`, `touch`) holds nothing to lose.
    let empty = out.metadata().is_ok_and(|m| m.len() == 0);
    if out.exists() && !empty && !kind.holds(out) {
        bail!(
            "{flag} {shown}: exists and is not {}; refusing to overwrite it (remove it first if \
             it is meant to go)",
            kind.name()
        );
    }
    Ok(())
}
