//! Atomic file writes: a temporary sibling, flushed, then renamed over the target, so a crash
//! leaves either the old file or the new one, never half of one.
//!
//! The temporary file is created exclusively (`O_CREAT | O_EXCL`): a file or symbolic link
//! planted at its name is never followed or written through.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes the temporary files of one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether `name` is one of [`write_atomic`]'s temporary files (`.NAME.PID[-N].tmp`), which a
/// killed process may leave behind.
pub fn is_temp_name(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    match inner.rsplit_once('.') {
        Some((target, tag)) => {
            !target.is_empty()
                && !tag.is_empty()
                && tag.chars().all(|c| c.is_ascii_digit() || c == '-')
        }
        None => false,
    }
}

/// Removes the temporary files a killed writer left in `dir` (not recursive).
pub fn remove_temp_files(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let is_file = e.file_type().map(|t| !t.is_dir()).unwrap_or(false);
            if is_file && is_temp_name(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let (tmp, mut f) = create_temp(dir, &name.to_string_lossy())?;
    // A file replaced keeps its permission bits (a 0600 checkpoint stays 0600).
    if let Ok(old) = std::fs::metadata(path) {
        let _ = f.set_permissions(old.permissions());
    }
    let written = f.write_all(bytes).and_then(|_| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new temporary file next to the target, created exclusively; a name already taken (a
/// leftover or a planted link) is skipped, never opened.
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let pid = std::process::id();
    let mut last = None;
    for _ in 0..64 {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = if n == 0 {
            dir.join(format!(".{name}.{pid}.tmp"))
        } else {
            dir.join(format!(".{name}.{pid}-{n}.tmp"))
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}

/// Copies `from` onto `to` atomically.
pub fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(from)?;
    write_atomic(to, &bytes)
}

/// Whether `a` and `b` name the same existing file (through links, `..` or another
/// spelling): an output given as one of its own inputs would destroy it.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// An exclusive advisory lock on `path` (created if missing), held until the returned file is
/// dropped or the process ends, a crash included; `None` while another process holds it.
pub fn try_lock(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        // Some shared file systems (Lustre without `flock`, NFS without a lock daemon) have no
        // locks: the work goes on unguarded rather than not at all.
        Err(std::fs::TryLockError::Error(e)) if locks_unsupported(&e) => {
            tracing::warn!(
                "{}: this file system does not support file locks ({e}); going on without one",
                path.display()
            );
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// [`try_lock`], trying again for up to `patience` while another process holds the lock: a
/// process that only probes it (`rslad experiment --list-cells`) holds it for an instant.
pub fn lock_within(
    path: &Path,
    patience: std::time::Duration,
) -> std::io::Result<Option<std::fs::File>> {
    let until = std::time::Instant::now() + patience;
    loop {
        match try_lock(path)? {
            None if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            held => return Ok(held),
        }
    }
}

/// ENOSYS, ENOLCK, EOPNOTSUPP (Linux numbers) or an unsupported operation.
fn locks_unsupported(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported || matches!(e.raw_os_error(), Some(38 | 37 | 95))
}

/// [`sha256_file`], computed once per process for a file whose length and modification time
/// stay the same (a teacher or surrogate is asked for once per cell of an experiment).
pub fn sha256_file_memo(path: &Path) -> std::io::Result<String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Memo = HashMap<std::path::PathBuf, (u64, std::time::SystemTime, String)>;
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    let meta = std::fs::metadata(path)?;
    let stamp = (meta.len(), meta.modified()?);
    let memo = MEMO.get_or_init(Default::default);
    if let Some((len, time, hash)) = memo.lock().expect("memo lock").get(path) {
        if (*len, *time) == stamp {
            return Ok(hash.clone());
        }
    }
    let hash = sha256_file(path)?;
    memo.lock()
        .expect("memo lock")
        .insert(path.to_path_buf(), (stamp.0, stamp.1, hash.clone()));
    Ok(hash)
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of byte slices taken one after the other, hex.
pub fn sha256_bytes(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p);
    }
    hex(&hasher.finalize())
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `path` as one shell word, for commands printed for the user to paste: as is when it holds
/// only characters no shell treats specially, else in single quotes (spaces, `$`, quotes).
pub fn shell_word(path: &Path) -> String {
    let s = path.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c);
    // A leading `-` would be read as an option, a leading `=` is expanded by zsh.
    let prefix = if s.starts_with('-') { "./" } else { "" };
    if s.chars().all(plain) && !s.is_empty() && !s.starts_with('=') {
        format!("{prefix}{s}")
    } else {
        format!("{prefix}'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;
    use std::path::Path;

    #[test]
    fn shell_words_paste_back_as_the_same_path() {
        assert_eq!(shell_word(Path::new("runs/exp-1")), "runs/exp-1");
        assert_eq!(shell_word(Path::new("my runs/a")), "'my runs/a'");
        assert_eq!(shell_word(Path::new("it's $HOME")), r"'it'\''s $HOME'");
        assert_eq!(shell_word(Path::new("")), "''");
        assert_eq!(shell_word(Path::new("-run")), "./-run");
        assert_eq!(shell_word(Path::new("=x")), "'=x'");
    }
}
