//! A check of a PyTorch pickle before anything reads it: every class or function the pickle
//! names (GLOBAL, STACK_GLOBAL, INST) must be one a state dict needs. A pickle that would call
//! anything else when unpickled (`os.system`, `builtins.eval`, a module's class, ...) is refused
//! with its name. Nothing is ever executed: this walks the opcodes only.

/// Callables a saved state dict legitimately names.
fn allowed(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("collections", "OrderedDict")
            | ("torch._utils", "_rebuild_tensor")
            | ("torch._utils", "_rebuild_tensor_v2")
            | ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state")
            | ("torch._tensor", "_rebuild_from_type_v2")
            | ("torch", "Tensor")
            | ("torch.nn.parameter", "Parameter")
            | ("torch", "device")
            | ("torch", "Size")
            | (
                "builtins" | "__builtin__",
                "set" | "frozenset" | "dict" | "list" | "tuple"
            )
            | ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar")
            | ("numpy", "dtype")
            | ("_codecs", "encode")
    ) || (module == "torch" && (name.ends_with("Storage") || is_torch_dtype(name)))
        || (module == "torch.storage" && name == "UntypedStorage")
}

fn is_torch_dtype(name: &str) -> bool {
    matches!(
        name,
        "float32"
            | "float"
            | "float64"
            | "double"
            | "float16"
            | "half"
            | "bfloat16"
            | "int64"
            | "long"
            | "int32"
            | "int"
            | "int16"
            | "int8"
            | "uint8"
            | "bool"
    )
}

#[derive(Debug, PartialEq)]
pub enum ScanError {
    /// The pickle names a callable outside the allow-list.
    Forbidden(String),
    Malformed(String),
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::Forbidden(name) => write!(
                f,
                "the pickle asks to call `{name}`, which a state dict never needs; refusing it \
                 (nothing was executed). Save the weights with `torch.save(model.state_dict(), …)`"
            ),
            ScanError::Malformed(d) => write!(f, "not a valid pickle: {d}"),
        }
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ScanError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                ScanError::Malformed(format!("cut short at byte {} (needs {n} more)", self.pos))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, ScanError> {
        let b = self.take(n)?;
        let mut v = 0u64;
        for (i, &x) in b.iter().enumerate() {
            v |= (x as u64) << (8 * i);
        }
        Ok(v)
    }

    fn line(&mut self) -> Result<&'a [u8], ScanError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| ScanError::Malformed("unterminated text argument".into()))?;
        let s = &rest[..n];
        self.pos += n + 1;
        Ok(s)
    }
}

/// Scans one pickle starting at `data[0]`; returns the number of bytes it spans.
pub fn scan(data: &[u8]) -> Result<usize, ScanError> {
    let mut c = Cursor { data, pos: 0 };
    // The last two values pushed, when they were strings (for STACK_GLOBAL).
    let mut recent: [Option<String>; 2] = [None, None];
    let mut memo: std::collections::HashMap<u64, String> = Default::default();
    let mut last_string: Option<String> = None;
    let push = |recent: &mut [Option<String>; 2], v: Option<String>| {
        recent[0] = recent[1].take();
        recent[1] = v;
    };
    loop {
        let op = c.take(1)?[0];
        let mut pushed: Option<Option<String>> = Some(None);
        match op {
            b'.' => return Ok(c.pos),
            // No argument.
            b'(' | b'0' | b'1' | b'2' | b'N' | b'Q' | b'R' | b'a' | b'b' | b'd' | b'}' | b'e'
            | b'l' | b']' | b'o' | b's' | b't' | b')' | b'u' | 0x81 | 0x85 | 0x86 | 0x87 | 0x88
            | 0x89 | 0x8f | 0x90 | 0x91 | 0x92 | 0x97 | 0x98 => {}
            0x94 => {
                // MEMOIZE: the memo index is the count of memo entries so far.
                if let Some(s) = &last_string {
                    memo.insert(memo.len() as u64, s.clone());
                } else {
                    memo.insert(memo.len() as u64, String::new());
                }
                pushed = None;
            }
            b'F' | b'I' | b'L' | b'P' | b'S' => {
                c.line()?;
            }
            b'V' => {
                let s = String::from_utf8_lossy(c.line()?).to_string();
                last_string = Some(s.clone());
                pushed = Some(Some(s));
            }
            b'c' | b'i' => {
                let module = String::from_utf8_lossy(c.line()?).to_string();
                let name = String::from_utf8_lossy(c.line()?).to_string();
                if !allowed(&module, &name) {
                    return Err(ScanError::Forbidden(format!("{module}.{name}")));
                }
            }
            0x93 => {
                // STACK_GLOBAL: module and name are the two values pushed last.
                match (&recent[0], &recent[1]) {
                    (Some(m), Some(n)) if allowed(m, n) => {}
                    (Some(m), Some(n)) => return Err(ScanError::Forbidden(format!("{m}.{n}"))),
                    _ => {
                        return Err(ScanError::Forbidden(
                            "a callable whose name is computed at load time".into(),
                        ))
                    }
                }
            }
            b'g' => {
                let idx: u64 = String::from_utf8_lossy(c.line()?)
                    .trim()
                    .parse()
                    .unwrap_or(u64::MAX);
                pushed = Some(memo.get(&idx).cloned());
            }
            b'h' => {
                let idx = c.uint(1)?;
                pushed = Some(memo.get(&idx).cloned());
            }
            b'j' => {
                let idx = c.uint(4)?;
                pushed = Some(memo.get(&idx).cloned());
            }
            b'p' => {
                let idx: u64 = String::from_utf8_lossy(c.line()?)
                    .trim()
                    .parse()
                    .unwrap_or(u64::MAX);
                memo.insert(idx, last_string.clone().unwrap_or_default());
                pushed = None;
            }
            b'q' => {
                let idx = c.uint(1)?;
                memo.insert(idx, last_string.clone().unwrap_or_default());
                pushed = None;
            }
            b'r' => {
                let idx = c.uint(4)?;
                memo.insert(idx, last_string.clone().unwrap_or_default());
                pushed = None;
            }
            b'K' | 0x82 => {
                c.take(1)?;
                if op == 0x82 {
                    return Err(ScanError::Forbidden(
                        "an extension-registry callable (EXT1)".into(),
                    ));
                }
            }
            b'M' | 0x83 => {
                c.take(2)?;
                if op == 0x83 {
                    return Err(ScanError::Forbidden(
                        "an extension-registry callable (EXT2)".into(),
                    ));
                }
            }
            b'J' | 0x84 => {
                c.take(4)?;
                if op == 0x84 {
                    return Err(ScanError::Forbidden(
                        "an extension-registry callable (EXT4)".into(),
                    ));
                }
            }
            b'G' => {
                c.take(8)?;
            }
            0x80 => {
                c.take(1)?;
                pushed = None;
            }
            0x95 => {
                c.take(8)?;
                pushed = None;
            }
            b'T' | b'B' | 0x8b => {
                let n = c.uint(4)? as usize;
                c.take(n)?;
            }
            b'U' | b'C' | 0x8a => {
                let n = c.uint(1)? as usize;
                c.take(n)?;
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => c.uint(4)?,
                    0x8c => c.uint(1)?,
                    _ => c.uint(8)?,
                } as usize;
                let s = String::from_utf8_lossy(c.take(n)?).to_string();
                last_string = Some(s.clone());
                pushed = Some(Some(s));
            }
            0x8e | 0x96 => {
                let n = c.uint(8)? as usize;
                c.take(n)?;
            }
            other => {
                return Err(ScanError::Malformed(format!(
                    "unknown opcode 0x{other:02x} at byte {}",
                    c.pos - 1
                )))
            }
        }
        if !matches!(op, b'V' | b'X' | 0x8c | 0x8d) && pushed.is_some() {
            last_string = None;
        }
        if let Some(v) = pushed {
            push(&mut recent, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_state_dict_pickles_and_refuses_calls() {
        // protocol 2: GLOBAL collections.OrderedDict, EMPTY_TUPLE, REDUCE, STOP
        let ok = b"\x80\x02ccollections\nOrderedDict\nq\x00)R.";
        assert_eq!(scan(ok).unwrap(), ok.len());
        let evil = b"\x80\x02cposix\nsystem\nX\x06\x00\x00\x00id -un\x85R.";
        assert!(matches!(scan(evil), Err(ScanError::Forbidden(n)) if n == "posix.system"));
        // protocol 4 STACK_GLOBAL with memoized strings
        let evil4 = b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x8c\x011\x85R.";
        assert!(matches!(scan(evil4), Err(ScanError::Forbidden(n)) if n == "builtins.eval"));
        let ok4 = b"\x80\x04\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93)R.";
        assert!(scan(ok4).is_ok());
        assert!(matches!(
            scan(b"\x80\x02ccoll"),
            Err(ScanError::Malformed(_))
        ));
    }
}
