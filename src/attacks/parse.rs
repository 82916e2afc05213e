//! Attack lists such as `fgsm,pgd-sat:step=0.01,aa` into configured attacks: each item is looked
//! up in the [registry](super::registry), its options are read by the entry's schema, and the
//! entry's constructor builds it.

use super::registry::{
    self, Input, OptionKind, OptionSpec, COMMON_OPTIONS, NO_ATTACK_WORDS, PAPER, PAPER_WORD,
};
use super::{Attack, AttackContext, AttackError};
use std::cell::RefCell;

/// Parses a comma-separated list such as `fgsm,pgd-sat,aa` or `paper`. An attack can take
/// options after colons: `pgd:steps=50:step=0.002:restarts=5:loss=cw:start=none`.
pub fn parse_list(list: &str, ctx: &AttackContext) -> Result<Vec<Box<dyn Attack>>, AttackError> {
    let mut out = Vec::new();
    if list.split(',').all(|s| s.trim().is_empty()) {
        return Err(AttackError::EmptyList(list.to_string()));
    }
    for item in items(list)
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        if item == PAPER_WORD {
            for name in PAPER {
                out.extend(parse_one(name, ctx)?);
            }
        } else if !NO_ATTACK_WORDS.contains(&item) {
            out.extend(parse_one(item, ctx)?);
        }
    }
    // The same attack twice only doubles the cost (and its column appears twice), also under
    // two names (`pgd` and `pgd:steps=20`); two attacks under one label would share a column
    // in every table and results file.
    for (i, a) in out.iter().enumerate() {
        if let Some(b) = out[..i].iter().find(|b| same_attack(&***b, &**a)) {
            let names = if b.label() == a.label() {
                a.label()
            } else {
                format!("{} and {}", b.label(), a.label())
            };
            return Err(AttackError::BadOption {
                attack: a.label(),
                detail: format!(
                    "{names}: one attack with the same settings listed twice in '{list}'; \
                     list it once"
                ),
            });
        }
        if out[..i].iter().any(|b| b.label() == a.label()) {
            return Err(AttackError::SameLabel {
                list: list.to_string(),
                label: a.label(),
            });
        }
    }
    Ok(out)
}

/// The list's items: split at commas, except inside the path of an attack that takes one
/// (`transfer:runs/a,b/final.safetensors`), where the pieces are joined back when together
/// they name an existing file and the first alone does not.
fn items(list: &str) -> Vec<String> {
    let pieces: Vec<&str> = list.split(',').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < pieces.len() {
        let mut item = pieces[i].to_string();
        i += 1;
        let takes_path = item.split_once(':').is_some_and(|(name, _)| {
            registry::lookup(&name.trim().to_ascii_lowercase())
                .is_some_and(|e| matches!(e.input, Input::Path))
        });
        let path_of = |item: &str| std::path::PathBuf::from(item.split_once(':').unwrap().1.trim());
        if takes_path && !path_of(&item).is_file() {
            let mut joined = item.clone();
            for (k, piece) in pieces[i..].iter().enumerate() {
                joined = format!("{joined},{piece}");
                if path_of(&joined).is_file() {
                    item = joined;
                    i += k + 1;
                    break;
                }
            }
        }
        out.push(item);
    }
    out
}

/// Whether two attacks compute the same thing: every setting equal but the column label.
fn same_attack(a: &dyn Attack, b: &dyn Attack) -> bool {
    let unlabelled = |x: &dyn Attack| {
        let mut s = x.settings();
        if let Some(map) = s.as_object_mut() {
            map.remove("label");
        }
        s
    };
    unlabelled(a) == unlabelled(b)
}

/// One item: `name`, `name:key=value:...` or `name:PATH`.
fn parse_one(item: &str, ctx: &AttackContext) -> Result<Vec<Box<dyn Attack>>, AttackError> {
    let (name, rest) = item.split_once(':').unwrap_or((item, ""));
    let name = name.to_ascii_lowercase();
    let entry = registry::lookup(&name).ok_or_else(|| AttackError::Unknown(item.to_string()))?;
    if ctx.target.num_classes < entry.min_classes {
        return Err(AttackError::BadOption {
            attack: name,
            detail: format!(
                "needs at least {} classes; the model has {}",
                entry.min_classes, ctx.target.num_classes
            ),
        });
    }
    let mut opts = AttackOptions {
        attack: name,
        eps: ctx.eps,
        seed: ctx.seed,
        path: String::new(),
        given: Vec::new(),
        values: Vec::new(),
        used: RefCell::default(),
    };
    match entry.input {
        Input::Path => opts.path = rest.to_string(),
        Input::Options(own) => opts.read(rest, own)?,
    }
    // A targeted attack has classes − 1 classes to aim at; more would be cut silently while
    // the results file recorded the number asked for.
    if let Some(n) = opts.raw("targets").and_then(|v| v.parse::<usize>().ok()) {
        let most = ctx.target.num_classes.saturating_sub(1);
        if n > most {
            return Err(opts.bad(format!(
                "targets={n}, but the model has {} classes: at most {most} other classes to \
                 target",
                ctx.target.num_classes
            )));
        }
    }
    // Every point is judged inside the evaluation's ε-ball and the results file records that
    // one ε: an attack at another ε would be clipped to it, or would measure another threat
    // model under its heading.
    if (opts.eps - ctx.eps).abs() > 1e-9 {
        return Err(opts.bad(format!(
            "eps={} differs from the evaluation's eps {}: results are judged and recorded at \
             one eps; give it with --eps (or the config's eps) instead",
            opts.eps, ctx.eps
        )));
    }
    let attacks = (entry.build)(&opts, ctx)?;
    opts.check_used(entry.options())?;
    Ok(attacks)
}

/// The largest step, restart, target or query count an attack list may give: 100x the
/// largest any reference setting uses (Square's 5000 queries), far below where the attacks'
/// arithmetic on counts could overflow.
pub const MAX_COUNT: u64 = 1_000_000;

/// A parsed option value.
enum Value {
    Number(f64),
    Whole(u64),
    Word(String),
}

/// The options of one list item, read by the entry's schema; the constructor takes what it
/// needs, and an option it did not take is refused (it would do nothing).
pub struct AttackOptions {
    attack: String,
    eps: f64,
    seed: u64,
    path: String,
    /// `key=value` pairs as given.
    given: Vec<(String, String)>,
    values: Vec<(&'static str, Value)>,
    used: RefCell<Vec<String>>,
}

impl AttackOptions {
    /// Reads `key=value` pairs separated by colons: each key once, each known to the schema,
    /// each value of its kind.
    fn read(&mut self, rest: &str, own: &'static [OptionSpec]) -> Result<(), AttackError> {
        for part in rest.split(':').filter(|s| !s.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| self.bad(format!("option '{part}' is not key=value")))?;
            let key = k.trim().to_string();
            if self.given.iter().any(|(seen, _)| *seen == key) {
                return Err(self.bad(format!("option '{key}' is given twice; give it once")));
            }
            self.given.push((key, v.trim().to_string()));
        }
        for spec in COMMON_OPTIONS.iter().chain(own) {
            let Some(raw) = self.raw(spec.key) else {
                continue;
            };
            let value = self.value(spec, raw)?;
            match (spec.key, &value) {
                ("eps", Value::Number(eps)) => self.eps = *eps,
                ("seed", Value::Whole(seed)) => self.seed = *seed,
                _ => {}
            }
            self.values.push((spec.key, value));
        }
        if let Some((key, _)) = self
            .given
            .iter()
            .find(|(k, _)| !COMMON_OPTIONS.iter().chain(own).any(|s| s.key == k))
        {
            let keys: Vec<&str> = COMMON_OPTIONS.iter().chain(own).map(|s| s.key).collect();
            return Err(self.bad(format!(
                "unknown option '{key}'; it takes {}",
                keys.join(", ")
            )));
        }
        self.used.borrow_mut().extend(["eps".into(), "seed".into()]);
        Ok(())
    }

    fn raw(&self, key: &str) -> Option<String> {
        self.given
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn value(&self, spec: &OptionSpec, v: String) -> Result<Value, AttackError> {
        let key = spec.key;
        Ok(match spec.kind {
            OptionKind::Eps | OptionKind::Step | OptionKind::Number => {
                let parsed = if spec.kind == OptionKind::Eps {
                    crate::units::parse_eps(&v)
                } else {
                    crate::units::parse_fraction(&v)
                };
                let value = parsed.map_err(|e| self.bad(format!("{key}: {e}")))?;
                if spec.kind == OptionKind::Step && value <= 0.0 {
                    return Err(self.bad(format!("{key}={v} must be positive (e.g. {key}=2/255)")));
                }
                Value::Number(value)
            }
            OptionKind::Count | OptionKind::Whole => {
                let n = v.parse::<u64>().map_err(|e| {
                    use std::num::IntErrorKind::PosOverflow;
                    self.bad(if *e.kind() == PosOverflow {
                        format!("{key}={v} is too large")
                    } else {
                        format!("{key}={v} is not a whole number")
                    })
                })?;
                if n == 0 && spec.kind == OptionKind::Count {
                    return Err(self.bad(format!("{key}=0 would run no attack; give at least 1")));
                }
                if spec.kind == OptionKind::Count && n > MAX_COUNT {
                    return Err(self.bad(format!(
                        "{key}={v} is beyond {MAX_COUNT} (a typo?): no attack needs that many"
                    )));
                }
                Value::Whole(n)
            }
            OptionKind::Choice(words) => {
                if !words.contains(&v.as_str()) {
                    return Err(self.bad(format!("{key} '{v}' is not {}", or_list(words))));
                }
                Value::Word(v)
            }
        })
    }

    fn get(&self, key: &str) -> Option<&Value> {
        let v = self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
        if v.is_some() {
            self.used.borrow_mut().push(key.to_string());
        }
        v
    }

    /// The attack's ε: its `eps` option, else the evaluation's.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The attack's seed: its `seed` option, else the evaluation's.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// What follows the colon of an attack that takes a path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The name as given (lower case).
    pub fn attack(&self) -> &str {
        &self.attack
    }

    /// True when an option besides `eps` and `seed` was given.
    pub fn any_given(&self) -> bool {
        self.given.iter().any(|(k, _)| k != "eps" && k != "seed")
    }

    /// A `Count` or `Whole` option, when given.
    pub fn count(&self, key: &str) -> Option<usize> {
        match self.get(key)? {
            Value::Whole(n) => Some(*n as usize),
            _ => panic!("attack option {key} is not a count in the registry"),
        }
    }

    /// A number option (`Eps`, `Step`, `Number`), when given.
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Value::Number(x) => Some(*x),
            _ => panic!("attack option {key} is not a number in the registry"),
        }
    }

    /// A `Choice` option, when given.
    pub fn word(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Word(w) => Some(w),
            _ => panic!("attack option {key} is not a choice in the registry"),
        }
    }

    /// An error about this attack's options.
    pub fn bad(&self, detail: String) -> AttackError {
        AttackError::BadOption {
            attack: self.attack.clone(),
            detail,
        }
    }

    /// Refuses options the constructor did not take: they would do nothing.
    fn check_used(
        &self,
        specs: impl Iterator<Item = &'static OptionSpec>,
    ) -> Result<(), AttackError> {
        let specs: Vec<&OptionSpec> = specs.collect();
        let used = self.used.borrow();
        for (k, _) in &self.given {
            if used.contains(k) {
                continue;
            }
            let detail = match specs.iter().find(|s| s.key == k).and_then(|s| s.requires) {
                Some((key, value)) => format!(
                    "option '{k}' takes effect only with {key}={value}; add {key}={value} or \
                     leave {k} out"
                ),
                None => format!("option '{k}' does nothing here; leave it out"),
            };
            return Err(self.bad(detail));
        }
        Ok(())
    }
}

/// `a, b or c`.
fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
