//! The exit statuses `rslad --help` and the README document: 0 success, 1 usage or input
//! error, 2 internal error.

mod common;

use common::rslad;

#[test]
fn help_documents_the_exit_statuses() {
    let (code, out, err) = rslad(&["--help"]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "Exit status",
        "1  usage or input error",
        "2  internal error",
    ] {
        assert!(out.contains(line), "--help lacks '{line}':\n{out}");
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains("### Exit status") && readme.contains("`2` on an internal error"),
        "the README documents the exit statuses"
    );
}

/// A bad flag is a usage error (clap's own status would be 2, the internal-error status).
#[test]
fn bad_flags_exit_with_1() {
    for args in [
        &["train", "--no-such-flag"][..],
        &["eval", "--dataset", "fashion-mnist"][..],
        &["no-such-command"][..],
        &[][..],
    ] {
        let (code, _, err) = rslad(args);
        assert_eq!(code, 1, "rslad {args:?}:\n{err}");
        assert!(!err.contains("panicked"), "rslad {args:?}:\n{err}");
    }
}

/// A missing or malformed input file is an input error.
#[test]
fn bad_files_exit_with_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    let (code, _, err) = rslad(&[
        "eval",
        "--checkpoint",
        missing.to_str().unwrap(),
        "--dataset",
        "fashion-mnist",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing.safetensors"), "{err}");
    let garbage = dir.path().join("shard.json");
    std::fs::write(&garbage, "{").unwrap();
    let (code, _, err) = rslad(&["report", garbage.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("shard.json"), "{err}");
}
