//! The attack registry. Each attack's entry (its names, options, one-line help and constructor)
//! sits in the attack's own file; [`ATTACKS`] lists them all. The parser, the unknown-attack
//! error, `rslad eval --help` and the README check are derived from this list, so adding an
//! attack is one new file and one line here (docs/spec/attacks.md names the attacks).

use super::parse::AttackOptions;
use super::{apgd, autoattack, fab, pgd, square, transfer, Attack, AttackContext, AttackError};

/// Every attack known by name, in the order help lists them.
pub const ATTACKS: &[AttackEntry] = &[
    pgd::FGSM,
    pgd::PGD,
    pgd::PGD_SAT,
    pgd::PGD_TRADES,
    pgd::CW,
    apgd::APGD_CE,
    apgd::APGD_DLR,
    apgd::APGD_T,
    fab::FAB_T,
    square::SQUARE,
    autoattack::AA,
    transfer::TRANSFER,
    transfer::TRANSFER_PGD,
    transfer::TRANSFER_CW,
];

/// The paper's white-box set (Tables 2 and 3).
pub const PAPER: &[&str] = &["fgsm", "pgd-sat", "pgd-trades", "cw", "aa"];

/// The list word that stands for [`PAPER`].
pub const PAPER_WORD: &str = "paper";

/// List words that add no attack (clean accuracy only).
pub const NO_ATTACK_WORDS: &[&str] = &["none", "clean"];

/// Options every attack that takes options accepts, parsed before its own.
pub const COMMON_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "eps",
        kind: OptionKind::Eps,
        default: OptionDefault::Evaluation,
        help: "L-inf radius on the [0,1] scale (8/255 or 0.0314); it must be the evaluation's \
               (--eps), at which every point is judged and recorded",
        requires: None,
    },
    OptionSpec {
        key: "seed",
        kind: OptionKind::Whole,
        default: OptionDefault::Evaluation,
        help: "seed of the random starts and searches",
        requires: None,
    },
];

/// Builds the configured attacks of one list item (`transfer:PATH` gives two columns).
pub type Build = fn(&AttackOptions, &AttackContext) -> Result<Vec<Box<dyn Attack>>, AttackError>;

/// One attack as the registry knows it.
pub struct AttackEntry {
    /// Names it is listed under (lower case); the first is the one shown.
    pub names: &'static [&'static str],
    /// One line for `rslad eval --help`.
    pub help: &'static str,
    /// What follows the name's colon.
    pub input: Input,
    /// Fewest classes the model must have (the DLR losses need a 3rd or 4th largest logit).
    pub min_classes: usize,
    pub build: Build,
}

/// What follows `name:` in an attack list.
pub enum Input {
    /// `key=value` options separated by colons: [`COMMON_OPTIONS`], then these.
    Options(&'static [OptionSpec]),
    /// A file path (everything after the first colon); no options.
    Path,
}

/// `restarts=N`, the same for every attack that restarts from fresh random points.
pub const RESTARTS: OptionSpec = OptionSpec {
    key: "restarts",
    kind: OptionKind::Count,
    default: OptionDefault::Value("1"),
    help: "runs from fresh random starts on the points still robust",
    requires: None,
};

/// One `key=value` option of an attack.
pub struct OptionSpec {
    pub key: &'static str,
    pub kind: OptionKind,
    /// The value the attack uses when the option is not given.
    pub default: OptionDefault,
    pub help: &'static str,
    /// `(key, value)`: the option takes effect only when that option is given with that value;
    /// given without it, the option is refused (it would do nothing).
    pub requires: Option<(&'static str, &'static str)>,
}

/// How an option's value is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionKind {
    /// An ε: decimal or fraction within [0, 1].
    Eps,
    /// A step size: a positive decimal or fraction (zero or a negative step leaves the clean
    /// point or descends the loss, and the column would report clean accuracy as robust).
    Step,
    /// A finite decimal or fraction.
    Number,
    /// A count of iterations, restarts, target classes or queries: at least 1 (0 runs no
    /// attack and reports clean accuracy under the attack's name).
    Count,
    /// A whole number, 0 included.
    Whole,
    /// One of these words.
    Choice(&'static [&'static str]),
}

/// An option's default, as help shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionDefault {
    /// The evaluation's own setting (its ε or seed).
    Evaluation,
    /// This value, as written in an attack list.
    Value(&'static str),
    /// ε times this ratio; the text shows it.
    EpsTimes(f64, &'static str),
}

impl OptionKind {
    /// The placeholder help shows after `key=`.
    pub fn placeholder(&self) -> String {
        match self {
            OptionKind::Eps | OptionKind::Step | OptionKind::Number => "X".into(),
            OptionKind::Count | OptionKind::Whole => "N".into(),
            OptionKind::Choice(words) => words.join("|"),
        }
    }
}

impl OptionDefault {
    /// The default of option `key` as help shows it.
    pub fn shown(&self, key: &str) -> String {
        match self {
            OptionDefault::Evaluation => format!("the evaluation's {key}"),
            OptionDefault::Value(v) => v.to_string(),
            OptionDefault::EpsTimes(_, text) => text.to_string(),
        }
    }
}

impl AttackEntry {
    /// The first name, with `:PATH` for attacks that take a file.
    pub fn usage(&self) -> String {
        match self.input {
            Input::Options(_) => self.names[0].to_string(),
            Input::Path => format!("{}:PATH", self.names[0]),
        }
    }

    /// The options it accepts (the common ones first); none for a path.
    pub fn options(&self) -> impl Iterator<Item = &'static OptionSpec> {
        let own: &'static [OptionSpec] = match self.input {
            Input::Options(own) => own,
            Input::Path => &[],
        };
        let common: &'static [OptionSpec] = match self.input {
            Input::Options(_) => COMMON_OPTIONS,
            Input::Path => &[],
        };
        common.iter().chain(own)
    }
}

/// The entry registered under `name` (lower case).
pub fn lookup(name: &str) -> Option<&'static AttackEntry> {
    ATTACKS.iter().find(|e| e.names.contains(&name))
}

/// The names an attack list accepts, for the unknown-attack error.
pub fn known_names() -> String {
    let words = [NO_ATTACK_WORDS[0], PAPER_WORD].map(String::from);
    let attacks = ATTACKS.iter().map(AttackEntry::usage);
    words
        .into_iter()
        .chain(attacks)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short help for an attack list (`rslad eval -h`).
pub fn help_short() -> String {
    format!(
        "Comma-separated attacks, options after colons (pgd:steps=50:step=2/255): {} \
         (--help lists each attack and its options)",
        known_names()
    )
}

/// The full help for an attack list (`rslad eval --help`): each keyword and attack with its
/// one-line help and its options with their defaults.
pub fn help_long() -> String {
    let mut out = String::from(
        "Comma-separated attacks, each with options after colons, e.g. \
         pgd:steps=50:step=2/255:restarts=5.\nEach option is given once; an attack listed \
         twice with the same settings is refused.\n\nLists:\n",
    );
    out += &row(
        2,
        PAPER_WORD,
        &format!(
            "{}: the paper's white-box set (Tables 2 and 3)",
            PAPER.join(",")
        ),
    );
    out += &row(
        2,
        &NO_ATTACK_WORDS.join(", "),
        "no attack: clean accuracy only",
    );
    out += "\nEvery attack with options also takes:\n";
    for o in COMMON_OPTIONS {
        out += &option_row(2, o);
    }
    out += "\nAttacks:\n";
    for entry in ATTACKS {
        let names = match entry.names {
            [_, aliases @ ..] if !aliases.is_empty() => {
                format!("{} ({})", entry.usage(), aliases.join(", "))
            }
            _ => entry.usage(),
        };
        out += &row(2, &names, entry.help);
        if let Input::Options(own) = entry.input {
            for o in own {
                out += &option_row(6, o);
            }
        }
    }
    out.trim_end().to_string()
}

/// `left` indented by `indent` spaces, `right` in the help column.
fn row(indent: usize, left: &str, right: &str) -> String {
    let width = 34 - indent;
    format!("{:indent$}{left:<width$} {right}\n", "")
}

fn option_row(indent: usize, o: &OptionSpec) -> String {
    let mut help = format!("{} [default: {}]", o.help, o.default.shown(o.key));
    if let Some((key, value)) = o.requires {
        help += &format!(" (only with {key}={value})");
    }
    row(
        indent,
        &format!("{}={}", o.key, o.kind.placeholder()),
        &help,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Arch, ModelSpec};

    fn names() -> Vec<&'static str> {
        ATTACKS
            .iter()
            .flat_map(|e| e.names.iter().copied())
            .collect()
    }

    #[test]
    fn names_and_keys_are_unique_and_lower_case() {
        let all = names();
        let keywords: Vec<&str> = [PAPER_WORD]
            .iter()
            .chain(NO_ATTACK_WORDS)
            .copied()
            .collect();
        for (i, n) in all.iter().enumerate() {
            assert_eq!(*n, n.to_ascii_lowercase(), "{n}");
            assert!(!all[..i].contains(n), "{n} registered twice");
            assert!(!keywords.contains(n), "{n} is also a list keyword");
            assert!(!n.contains(':') && !n.contains(','), "{n}");
        }
        for entry in ATTACKS {
            assert!(!entry.help.is_empty(), "{} has no help", entry.names[0]);
            let keys: Vec<&str> = entry.options().map(|o| o.key).collect();
            for (i, k) in keys.iter().enumerate() {
                assert!(
                    !keys[..i].contains(k),
                    "{}: option {k} twice",
                    entry.names[0]
                );
            }
            for o in entry.options() {
                if let Some((key, value)) = o.requires {
                    let Some(other) = entry.options().find(|p| p.key == key) else {
                        panic!("{}: {} requires the unknown {key}", entry.names[0], o.key);
                    };
                    assert!(
                        matches!(other.kind, OptionKind::Choice(w) if w.contains(&value)),
                        "{}: {} requires {key}={value}",
                        entry.names[0],
                        o.key
                    );
                }
            }
        }
        for name in PAPER {
            assert!(lookup(name).is_some(), "paper lists the unknown {name}");
        }
    }

    #[test]
    fn unknown_attack_error_and_help_list_every_attack() {
        let unknown = AttackError::Unknown("nope".into()).to_string();
        let long = help_long();
        let short = help_short();
        for entry in ATTACKS {
            assert!(unknown.contains(&entry.usage()), "{unknown}");
            assert!(short.contains(&entry.usage()), "{short}");
            assert!(long.contains(entry.help), "{} help missing", entry.names[0]);
            for n in entry.names {
                assert!(long.contains(n), "{n} missing from help");
            }
            for o in entry.options() {
                assert!(
                    long.contains(&format!("{}={}", o.key, o.kind.placeholder())),
                    "{}: {}",
                    entry.names[0],
                    o.key
                );
            }
        }
        for word in [PAPER_WORD].iter().chain(NO_ATTACK_WORDS) {
            assert!(long.contains(word), "{word} missing from help");
        }
        assert!(unknown.contains(PAPER_WORD) && unknown.contains(NO_ATTACK_WORDS[0]));
    }

    fn sample(kind: OptionKind) -> Vec<&'static str> {
        match kind {
            // The only ε an attack may be given is the evaluation's (the context's 8/255).
            OptionKind::Eps => vec!["8/255", "0.0313725490196"],
            OptionKind::Step => vec!["0.01", "2/255"],
            OptionKind::Number => vec!["3", "0.5"],
            OptionKind::Count => vec!["2"],
            OptionKind::Whole => vec!["0", "7"],
            OptionKind::Choice(words) => words.to_vec(),
        }
    }

    fn with_context<T>(f: impl FnOnce(&AttackContext) -> T) -> T {
        let device = crate::backend::default_device();
        let spec = ModelSpec::for_dataset(Arch::CnnSmall, crate::data::DatasetKind::FashionMnist);
        f(&AttackContext {
            eps: 8.0 / 255.0,
            seed: 3,
            device: &device,
            target: &spec,
        })
    }

    /// Every declared option is read by the constructor: each sample value is accepted (an
    /// option the constructor ignored would be refused as doing nothing).
    #[test]
    fn every_option_is_accepted_and_used() {
        with_context(|ctx| {
            for entry in ATTACKS {
                for o in entry.options() {
                    let prefix = match o.requires {
                        Some((k, v)) => format!("{}:{k}={v}", entry.names[0]),
                        None => entry.names[0].to_string(),
                    };
                    for value in sample(o.kind) {
                        let item = format!("{prefix}:{}={value}", o.key);
                        let parsed = super::super::parse_list(&item, ctx);
                        assert!(parsed.is_ok(), "{item}: {}", parsed.err().unwrap());
                    }
                }
            }
        });
    }

    /// The typed constructors that internal users call (training monitor, sanity checks,
    /// bench) build exactly what the names built before them.
    #[test]
    fn typed_constructors_match_their_names() {
        use super::super::apgd::{Apgd, ApgdLoss};
        use super::super::autoattack::AutoAttack;
        use super::super::pgd::{Pgd, Preset, TRADES_STEP_RATIO};
        with_context(|ctx| {
            let parsed = |item: &str, eps: f64| {
                let at = AttackContext { eps, ..*ctx };
                let v = super::super::parse_list(item, &at).unwrap();
                assert_eq!(v.len(), 1, "{item}");
                (v[0].label(), v[0].settings())
            };
            let typed = |a: &dyn Attack| (a.label(), a.settings());
            let (eps, seed) = (ctx.eps, ctx.seed);
            for (preset, name) in [
                (Preset::Fgsm, "fgsm"),
                (Preset::Pgd, "pgd"),
                (Preset::Sat, "pgd-sat"),
                (Preset::Trades, "pgd-trades"),
                (Preset::Cw, "cw"),
            ] {
                assert_eq!(typed(&Pgd::preset(preset, eps, seed)), parsed(name, eps));
            }
            // The training monitor was `pgd-sat:step={eps * TRADES_STEP_RATIO}`.
            for eps in [0.1, 8.0 / 255.0, 0.3, 1e-7] {
                let step = eps * TRADES_STEP_RATIO;
                let monitor = Pgd {
                    step_size: step,
                    ..Pgd::preset(Preset::Sat, eps, seed)
                };
                assert_eq!(
                    typed(&monitor),
                    parsed(&format!("pgd-sat:step={step}"), eps)
                );
            }
            for (loss, name) in [
                (ApgdLoss::Ce, "apgd-ce"),
                (ApgdLoss::Dlr, "apgd-dlr"),
                (ApgdLoss::DlrTargeted, "apgd-t"),
            ] {
                assert_eq!(typed(&Apgd::standard(loss, eps, seed)), parsed(name, eps));
            }
            assert_eq!(
                typed(&AutoAttack::standard(eps, seed, None, None)),
                parsed("aa", eps)
            );
            assert_eq!(
                typed(&AutoAttack::standard(eps, seed, Some(5), Some(20))),
                parsed("aa:steps=5:queries=20", eps)
            );
        });
    }

    /// The defaults help shows are those the constructors use: giving an option its shown
    /// default changes no setting.
    #[test]
    fn shown_defaults_are_the_constructors_defaults() {
        with_context(|ctx| {
            let settings = |item: &str| -> Vec<serde_json::Value> {
                super::super::parse_list(item, ctx)
                    .unwrap_or_else(|e| panic!("{item}: {e}"))
                    .iter()
                    .map(|a| a.settings())
                    .collect()
            };
            for entry in ATTACKS {
                for o in entry.options() {
                    let value = match o.default {
                        OptionDefault::Evaluation => match o.key {
                            "eps" => format!("{}", ctx.eps),
                            _ => format!("{}", ctx.seed),
                        },
                        OptionDefault::Value(v) => v.to_string(),
                        OptionDefault::EpsTimes(ratio, _) => format!("{}", ctx.eps * ratio),
                    };
                    let base = match o.requires {
                        Some((k, v)) => format!("{}:{k}={v}", entry.names[0]),
                        None => entry.names[0].to_string(),
                    };
                    assert_eq!(
                        settings(&base),
                        settings(&format!("{base}:{}={value}", o.key)),
                        "{}: {}={value}",
                        entry.names[0],
                        o.key
                    );
                }
            }
        });
    }
}
