//! The attack registry: names and options such as `pgd-sat:step=0.01` into configured attacks.

use super::*;

/// The paper's white-box set (Tables 2 and 3).
pub const PAPER: &[&str] = &["fgsm", "pgd-sat", "pgd-trades", "cw", "aa"];

/// Step size of PGD_TRADES relative to ε: 0.003 at ε = 8/255 (TRADES' `pgd_attack_cifar10.py`).
pub const TRADES_STEP_RATIO: f64 = 0.003 / (8.0 / 255.0);

/// Parses a comma-separated list such as `fgsm,pgd-sat,aa` or `paper`. An attack can take
/// options after colons: `pgd:steps=50:step=0.002:restarts=5:loss=cw:start=none`.
pub fn parse_list(list: &str, ctx: &AttackContext) -> Result<Vec<Box<dyn Attack>>, AttackError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item {
            "none" | "clean" => {}
            "paper" => {
                for name in PAPER {
                    out.extend(parse_one(name, ctx)?);
                }
            }
            _ => out.extend(parse_one(item, ctx)?),
        }
    }
    // The same attack twice only doubles the cost (and its column appears twice).
    for (i, a) in out.iter().enumerate() {
        if out[..i]
            .iter()
            .any(|b| b.label() == a.label() && b.settings() == a.settings())
        {
            return Err(AttackError::BadOption {
                attack: a.label(),
                detail: format!("listed twice in '{list}' with the same settings; list it once"),
            });
        }
    }
    Ok(out)
}

fn pgd_preset(name: &str, eps: f64, seed: u64) -> Option<Pgd> {
    let (label, steps, step_size, start, loss) = match name {
        "fgsm" => ("FGSM", 1, eps, Start::None, PgdLoss::CrossEntropy),
        "pgd" => ("PGD", 20, eps / 4.0, Start::Uniform, PgdLoss::CrossEntropy),
        "pgd-sat" => (
            "PGD_SAT",
            20,
            eps / 4.0,
            Start::Uniform,
            PgdLoss::CrossEntropy,
        ),
        // The current TRADES script starts at x + U(−ε, ε), not clipped before the first step
        // (docs/spec/attacks.md, PGD_TRADES); `start=none` gives the early script's zero start.
        "pgd-trades" => (
            "PGD_TRADES",
            20,
            eps * TRADES_STEP_RATIO,
            Start::Uniform,
            PgdLoss::CrossEntropy,
        ),
        "cw" => (
            "CW",
            20,
            eps / 4.0,
            Start::Uniform,
            PgdLoss::Margin { kappa: 50.0 },
        ),
        _ => return None,
    };
    Some(Pgd {
        label: label.to_string(),
        eps,
        step_size,
        steps,
        start,
        clip_start: name != "pgd-trades",
        loss,
        restarts: 1,
        seed,
    })
}

fn parse_one(item: &str, ctx: &AttackContext) -> Result<Vec<Box<dyn Attack>>, AttackError> {
    let (name, rest) = item.split_once(':').unwrap_or((item, ""));
    let name = name.to_ascii_lowercase();
    if let Some(kind) = name.strip_prefix("transfer") {
        return transfer(kind, rest, ctx);
    }
    let opts = Options::parse(&name, rest)?;
    let needed = match name.as_str() {
        "apgd-dlr" => 3,
        "apgd-t" | "aa" | "autoattack" => 4,
        _ => 2,
    };
    if ctx.target.num_classes < needed {
        return Err(AttackError::BadOption {
            attack: name.clone(),
            detail: format!(
                "its DLR loss needs at least {needed} classes; the model has {}",
                ctx.target.num_classes
            ),
        });
    }
    let (eps, seed) = (
        opts.float("eps")?.unwrap_or(ctx.eps),
        opts.uint("seed")?.unwrap_or(ctx.seed),
    );
    let attack: Box<dyn Attack> = if let Some(mut p) = pgd_preset(&name, eps, seed) {
        if let Some(v) = opts.uint("steps")? {
            p.steps = v as usize;
        }
        if let Some(v) = opts.float("step")? {
            p.step_size = v;
        }
        if let Some(v) = opts.uint("restarts")? {
            p.restarts = v as usize;
        }
        if let Some(v) = opts.get("start") {
            p.start = match v {
                "none" => Start::None,
                "uniform" => Start::Uniform,
                "gaussian" => Start::Gaussian { std: 0.001 },
                other => {
                    return Err(
                        opts.bad(format!("start '{other}' is not none, uniform or gaussian"))
                    )
                }
            }
        }
        if let Some(v) = opts.get("loss") {
            p.loss = match v {
                "ce" => PgdLoss::CrossEntropy,
                "cw" | "margin" => PgdLoss::Margin {
                    kappa: opts.float("kappa")?.unwrap_or(50.0),
                },
                "dlr" => PgdLoss::Dlr,
                other => return Err(opts.bad(format!("loss '{other}' is not ce, cw or dlr"))),
            }
        }
        if name == "pgd" && !opts.is_empty() {
            p.label = format!("PGD-{}", p.steps);
        }
        Box::new(p)
    } else {
        match name.as_str() {
            "apgd-ce" | "apgd-dlr" | "apgd-t" => {
                let (label, loss) = match name.as_str() {
                    "apgd-ce" => ("APGD-CE", apgd::ApgdLoss::Ce),
                    "apgd-dlr" => ("APGD-DLR", apgd::ApgdLoss::Dlr),
                    _ => ("APGD-T", apgd::ApgdLoss::DlrTargeted),
                };
                let mut a = apgd::Apgd::new(label, eps, loss, seed);
                if let Some(v) = opts.uint("steps")? {
                    a.iterations = v as usize;
                }
                if let Some(v) = opts.uint("restarts")? {
                    a.restarts = v as usize;
                }
                if let Some(v) = opts.uint("targets")? {
                    a.target_classes = v as usize;
                }
                Box::new(a)
            }
            "fab-t" => {
                let mut a = fab::Fab::new("FAB-T", eps, seed);
                if let Some(v) = opts.uint("steps")? {
                    a.iterations = v as usize;
                }
                if let Some(v) = opts.uint("targets")? {
                    a.target_classes = v as usize;
                }
                if let Some(v) = opts.uint("restarts")? {
                    a.restarts = v as usize;
                }
                Box::new(a)
            }
            "square" => {
                let mut a = square::Square::new("Square", eps, seed);
                if let Some(v) = opts.uint("queries")? {
                    a.queries = v as usize;
                }
                if let Some(v) = opts.uint("restarts")? {
                    a.restarts = v as usize;
                }
                Box::new(a)
            }
            "aa" | "autoattack" => {
                // `steps` and `queries` shorten the standard version (tests, quick looks).
                let steps = opts
                    .uint("steps")?
                    .map(|v| format!(":steps={v}"))
                    .unwrap_or_default();
                let mut components = Vec::new();
                for c in ["apgd-ce", "apgd-t", "fab-t"] {
                    components.extend(parse_one(
                        &format!("{c}:eps={eps}:seed={seed}{steps}"),
                        ctx,
                    )?);
                }
                // The official composer builds Square with `resc_schedule=False`: its p-schedule
                // is not rescaled to the query budget (docs/spec/attacks.md, Square).
                let mut square = square::Square::new("Square", eps, seed);
                square.rescale_schedule = false;
                if let Some(v) = opts.uint("queries")? {
                    square.queries = v as usize;
                }
                components.push(Box::new(square));
                Box::new(autoattack::AutoAttack { components })
            }
            _ => return Err(AttackError::Unknown(item.to_string())),
        }
    };
    opts.check_used()?;
    Ok(vec![attack])
}

/// `transfer:PATH` (PGD_SAT-style PGD-20 and CW-inf), `transfer-pgd:PATH`, `transfer-cw:PATH`.
fn transfer(
    kind: &str,
    path: &str,
    ctx: &AttackContext,
) -> Result<Vec<Box<dyn Attack>>, AttackError> {
    if path.is_empty() {
        return Err(AttackError::BadOption {
            attack: format!("transfer{kind}"),
            detail: "needs a surrogate checkpoint: transfer:PATH".into(),
        });
    }
    let inner: Vec<&str> = match kind {
        "" => vec!["pgd-sat", "cw"],
        "-pgd" => vec!["pgd-sat"],
        "-cw" => vec!["cw"],
        _ => return Err(AttackError::Unknown(format!("transfer{kind}"))),
    };
    let path = PathBuf::from(path);
    let surrogate_err = |e: crate::models::WeightsError| {
        let text = e.to_string();
        let prefix = format!("{}: ", path.display());
        AttackError::Surrogate {
            path: path.clone(),
            detail: text.strip_prefix(&prefix).unwrap_or(&text).to_string(),
        }
    };
    // The recorded spec must fit the target before the surrogate is built.
    let spec = crate::models::peek_spec(&path).map_err(surrogate_err)?;
    if spec.input != ctx.target.input || spec.num_classes != ctx.target.num_classes {
        return Err(AttackError::Surrogate {
            path,
            detail: format!(
                "the surrogate takes {:?} with {} classes, the target {:?} with {}",
                spec.input, spec.num_classes, ctx.target.input, ctx.target.num_classes
            ),
        });
    }
    let mut out: Vec<Box<dyn Attack>> = Vec::new();
    for name in inner {
        let surrogate = load_model(&path, ctx.device, Some(&spec)).map_err(surrogate_err)?;
        let inner = pgd_preset(name, ctx.eps, ctx.seed).expect("preset exists");
        let label = if name == "cw" {
            "Transfer-CW"
        } else {
            "Transfer-PGD"
        };
        out.push(Box::new(transfer::Transfer {
            label: label.into(),
            surrogate_path: path.clone(),
            surrogate: burn::module::Module::valid(&surrogate),
            inner: Box::new(inner),
        }));
    }
    Ok(out)
}

/// `key=value` options of one attack; every option must be used.
struct Options {
    attack: String,
    pairs: Vec<(String, String)>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Options {
    fn parse(attack: &str, rest: &str) -> Result<Self, AttackError> {
        let mut pairs = Vec::new();
        for part in rest.split(':').filter(|s| !s.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| AttackError::BadOption {
                attack: attack.to_string(),
                detail: format!("option '{part}' is not key=value"),
            })?;
            let key = k.trim().to_string();
            if pairs.iter().any(|(seen, _)| *seen == key) {
                return Err(AttackError::BadOption {
                    attack: attack.to_string(),
                    detail: format!("option '{key}' is given twice; give it once"),
                });
            }
            pairs.push((key, v.trim().to_string()));
        }
        Ok(Options {
            attack: attack.to_string(),
            pairs,
            used: Default::default(),
        })
    }

    fn is_empty(&self) -> bool {
        self.pairs.iter().all(|(k, _)| k == "eps" || k == "seed")
    }

    fn get(&self, key: &str) -> Option<&str> {
        let v = self
            .pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str());
        if v.is_some() {
            self.used.borrow_mut().push(key.to_string());
        }
        v
    }

    fn bad(&self, detail: String) -> AttackError {
        AttackError::BadOption {
            attack: self.attack.clone(),
            detail,
        }
    }

    /// A number or fraction. `eps` is parsed as `--eps` is (within [0, 1]); a `step` must be
    /// positive (zero or a negative step leaves the clean point or descends the loss, and the
    /// column would report clean accuracy as robust).
    fn float(&self, key: &str) -> Result<Option<f64>, AttackError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let parsed = if key == "eps" {
            crate::units::parse_eps(v)
        } else {
            crate::units::parse_fraction(v)
        };
        let value = parsed.map_err(|e| self.bad(format!("{key}: {e}")))?;
        if key == "step" && value <= 0.0 {
            return Err(self.bad(format!("step={v} must be positive (e.g. step=2/255)")));
        }
        Ok(Some(value))
    }

    /// A whole number; counts of iterations, restarts, target classes and queries must be at
    /// least 1 (0 runs no attack and reports clean accuracy under the attack's name).
    fn uint(&self, key: &str) -> Result<Option<u64>, AttackError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = v
            .parse::<u64>()
            .map_err(|_| self.bad(format!("{key}={v} is not a whole number")))?;
        if n == 0 && matches!(key, "steps" | "restarts" | "targets" | "queries") {
            return Err(self.bad(format!("{key}=0 would run no attack; give at least 1")));
        }
        Ok(Some(n))
    }

    fn check_used(&self) -> Result<(), AttackError> {
        let used = self.used.borrow();
        for (k, _) in &self.pairs {
            if !used.contains(k) {
                return Err(self.bad(format!("unknown option '{k}'")));
            }
        }
        Ok(())
    }
}
