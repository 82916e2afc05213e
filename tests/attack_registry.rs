//! The attack registry reaches every place that lists attacks (issue 14): the README's attack
//! list and `rslad eval --help` are checked against it, so a new attack cannot be left out.

use rslad::attacks::registry::{AttackEntry, ATTACKS, COMMON_OPTIONS, NO_ATTACK_WORDS, PAPER_WORD};
use std::process::Command;

/// The README paragraph that lists the attack names.
fn readme_attack_list() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let start = readme
        .find("Attack names")
        .expect("README.md has an 'Attack names' paragraph");
    let rest = &readme[start..];
    rest[..rest.find("\n\n").unwrap_or(rest.len())].to_string()
}

#[test]
fn readme_lists_every_registered_attack() {
    let list = readme_attack_list();
    let names = ATTACKS.iter().flat_map(|e| e.names.iter().copied());
    let words = [PAPER_WORD]
        .into_iter()
        .chain(NO_ATTACK_WORDS.iter().copied());
    let missing: Vec<&str> = names
        .chain(words)
        .filter(|n| !list.contains(&format!("`{n}`")) && !list.contains(&format!("`{n}:")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's attack list (the 'Attack names' paragraph) lacks {missing:?}"
    );
}

fn help(flag: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rslad"))
        .args(["eval", flag])
        .output()
        .unwrap();
    assert!(out.status.success(), "rslad eval {flag} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The part of the long help between `entry`'s line and the next attack's.
fn section<'a>(help: &'a str, entry: &AttackEntry, next: Option<&AttackEntry>) -> &'a str {
    let start = help
        .find(entry.help)
        .unwrap_or_else(|| panic!("--help lacks the help of {}:\n{help}", entry.names[0]));
    let rest = &help[start..];
    let end = next.and_then(|n| rest.find(n.help)).unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn eval_help_shows_every_attack_with_its_help_and_options() {
    let long = help("--help");
    for (i, entry) in ATTACKS.iter().enumerate() {
        assert!(long.contains(&entry.usage()), "{}", entry.usage());
        let own = section(&long, entry, ATTACKS.get(i + 1));
        let common = |key: &str| COMMON_OPTIONS.iter().any(|c| c.key == key);
        for o in entry.options().filter(|o| !common(o.key)) {
            let key = format!("{}={}", o.key, o.kind.placeholder());
            assert!(own.contains(&key), "{}: --help lacks {key}", entry.names[0]);
        }
    }
    for o in COMMON_OPTIONS {
        assert!(long.contains(&format!("{}={}", o.key, o.kind.placeholder())));
    }
    let short = help("-h");
    for entry in ATTACKS {
        assert!(short.contains(&entry.usage()), "-h lacks {}", entry.usage());
    }
}
