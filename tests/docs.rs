//! The documentation quotes the code's own output and files: these tests keep the quotes true.

use std::path::Path;
use std::process::Command;

fn repo(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// docs/cluster.md shows the first cells of `--list-cells` for the CIFAR-10 grid; an array job
/// built from those indices and names must address the cells the code runs.
#[test]
fn cluster_doc_lists_the_cells_the_code_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_rslad"))
        .args([
            "experiment",
            "--config",
            &format!(
                "{}/experiments/cifar10-paper.toml",
                env!("CARGO_MANIFEST_DIR")
            ),
            "--out",
            std::env::temp_dir()
                .join(format!("rslad-docs-c10-{}", std::process::id()))
                .to_str()
                .unwrap(),
            "--list-cells",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<(String, String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect();
    let doc = repo("docs/cluster.md");
    let quoted: Vec<Vec<&str>> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 3 && f[0].parse::<usize>().is_ok())
        .collect();
    assert!(quoted.len() >= 3, "docs/cluster.md quotes no cells");
    for q in &quoted {
        let i: usize = q[0].parse().unwrap();
        let (index, name, role) = &listed[i];
        assert_eq!(
            (index.as_str(), name.as_str(), role.as_str()),
            (q[0], q[1], q[2]),
            "docs/cluster.md quotes cell {i} differently from --list-cells"
        );
    }
    // The array ranges in the sbatch comments: students start after the surrogate and teacher
    // and end at the last cell.
    let last = listed.len() - 1;
    assert!(
        doc.contains(&format!("--array=2-{last}")),
        "docs/cluster.md's student array must be 2-{last}"
    );
}

/// Doc comments and docs cite the spec by a path inside the repository (docs/spec/), never by
/// a path that only exists beside a checkout.
#[test]
fn spec_citations_point_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bad = Vec::new();
    let mut stack = vec![
        root.join("src"),
        root.join("tests"),
        root.join("docs"),
        root.join("experiments"),
        root.join("bench"),
        root.join("scripts"),
    ];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("spec") && !path.ends_with("__pycache__") {
                    stack.push(path);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for (n, line) in text.lines().enumerate() {
                let mut rest = line;
                while let Some(at) = rest.find("spec/") {
                    let cited = &rest[at..];
                    let file: String = cited
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
                        .collect();
                    let file = file.trim_end_matches('.');
                    let inside = rest[..at].ends_with("docs/");
                    if file.ends_with(".md") && (!inside || !root.join("docs").join(file).is_file())
                    {
                        bad.push(format!("{}:{}: {file}", path.display(), n + 1));
                    }
                    rest = &rest[at + 5..];
                }
            }
        }
    }
    assert!(bad.is_empty(), "cite docs/spec/...: {bad:#?}");
    for f in [
        "methods.md",
        "attacks.md",
        "models.md",
        "data.md",
        "results.md",
    ] {
        assert!(root.join("docs/spec").join(f).is_file(), "docs/spec/{f}");
    }
}

/// docs/architecture.md's module table is the rule for imports: every `crate::NAME` path in a
/// module's files must name the module itself or one the table allows, and every module of
/// src/lib.rs has a row.
#[test]
fn modules_import_only_what_docs_architecture_allows() {
    let doc = repo("docs/architecture.md");
    let table: std::collections::BTreeMap<String, Vec<String>> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| module | may import |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cols: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let allowed = cols[1]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            (cols[0].to_string(), allowed)
        })
        .collect();
    let lib = repo("src/lib.rs");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(modules.len() >= 10, "src/lib.rs: {modules:?}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for m in &modules {
        let allowed = table
            .get(*m)
            .unwrap_or_else(|| panic!("docs/architecture.md has no row for module {m}"));
        let mut files = Vec::new();
        let single = root.join(format!("{m}.rs"));
        if single.is_file() {
            files.push(single);
        }
        let mut stack = vec![root.join(m)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        assert!(!files.is_empty(), "module {m} has no files");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (at, _) in text.match_indices("crate::") {
                let name: String = text[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != *m && !allowed.contains(&name) {
                    bad.push(format!("{}: crate::{name}", f.display()));
                }
            }
        }
    }
    bad.sort();
    bad.dedup();
    assert!(
        bad.is_empty(),
        "imports docs/architecture.md does not allow: {bad:#?}"
    );
}
