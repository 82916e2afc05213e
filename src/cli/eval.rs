//! `rslad eval`.

use super::progress::EvalReporter;
use anyhow::{bail, Context};
use clap::Args;
use rslad::attacks::{self, AttackContext};
use rslad::data::{self, Split};
use rslad::eval::{self, EvalConfig, EvalResults};
use rslad::models::{load_model, peek_spec};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// An rslad checkpoint (.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// fashion-mnist, cifar10 or cifar100.
    #[arg(long)]
    dataset: String,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(
        long,
        default_value = "paper",
        help = attacks::registry::help_short(),
        long_help = attacks::registry::help_long()
    )]
    attacks: String,
    /// L-inf radius on the [0,1] scale: 8/255 or 0.0314 (default: 8/255 CIFAR, 0.1 Fashion-MNIST).
    #[arg(long)]
    eps: Option<String>,
    /// Evaluate the first N test images (default: all).
    #[arg(long)]
    n_examples: Option<usize>,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the results (with per-example outcomes) here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Evaluate only piece K of N (K from 0), for cluster array jobs; `rslad report` merges.
    #[arg(long)]
    shard: Option<String>,
    /// Skip the large-eps gradient-masking check.
    #[arg(long)]
    no_sanity: bool,
}

fn parse_shard(s: &str) -> anyhow::Result<(usize, usize)> {
    let (k, n) = s.split_once('/').context("--shard takes K/N, e.g. 0/4")?;
    let (k, n): (usize, usize) = (k.trim().parse()?, n.trim().parse()?);
    if n == 0 || k >= n {
        bail!("--shard {s}: K must be in 0..N");
    }
    Ok((k, n))
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let device = rslad::backend::default_device();
    let kind: data::DatasetKind = args.dataset.parse()?;
    let eps = match &args.eps {
        Some(e) => rslad::units::parse_eps(e).map_err(anyhow::Error::msg)?,
        None => kind.default_eps(),
    };
    if let Some(p) = args.json.as_ref().filter(|p| p.is_dir()) {
        bail!(
            "--json {}: is a directory; give the results file's path",
            p.display()
        );
    }
    if args.batch_size == 0 {
        bail!("--batch-size 0: the batch size must be at least 1");
    }
    if args.n_examples == Some(0) {
        bail!("--n-examples 0 evaluates nothing; give at least 1 (or leave it out for all)");
    }
    // The recorded spec is checked against the dataset before the model is built.
    let spec = peek_spec(&args.checkpoint)?;
    if spec.input != kind.shape() || spec.num_classes != kind.num_classes() {
        bail!(
            "{}: the checkpoint is a {} for {}x{}x{} images with {} classes; {} has {}x{}x{} with {}",
            args.checkpoint.display(),
            spec.name,
            spec.input.channels,
            spec.input.height,
            spec.input.width,
            spec.num_classes,
            kind,
            kind.shape().channels,
            kind.shape().height,
            kind.shape().width,
            kind.num_classes()
        );
    }
    let model = load_model(&args.checkpoint, &device, Some(&spec))?;
    let test = data::load(kind, args.data_dir.as_deref(), Split::Test, args.n_examples)?;
    let test_len = test.len();
    let (first, data) = match &args.shard {
        Some(s) => {
            let (k, n) = parse_shard(s)?;
            let len = test.len();
            let (a, b) = (k * len / n, (k + 1) * len / n);
            (a, test.slice(a, b))
        }
        None => (0, test),
    };
    let ctx = AttackContext {
        eps,
        seed: args.seed,
        device: &device,
        target: &model.spec,
    };
    let attack_list = attacks::parse_list(&args.attacks, &ctx)?;
    if data.is_empty() {
        // More shards than examples: an explicit empty result, which `rslad report` merges.
        eprintln!(
            "shard {} holds no examples (the {} test images are split {} ways); writing an empty result",
            args.shard.as_deref().unwrap_or("?"),
            test_len,
            args.shard.as_deref().and_then(|s| s.split_once('/')).map_or("", |p| p.1)
        );
    }
    let cfg = EvalConfig {
        eps,
        batch_size: args.batch_size,
        seed: args.seed,
        sanity_checks: !args.no_sanity && !attack_list.is_empty(),
    };
    eprintln!(
        "evaluating {} ({}) on {} test images of {} at eps = {eps:.4} on {}",
        args.checkpoint.display(),
        model.spec.name,
        data.len(),
        kind,
        rslad::backend::describe()
    );
    let mut reporter = EvalReporter::new();
    let mut results = eval::evaluate(
        &model,
        data,
        first as u64,
        &attack_list,
        &cfg,
        &device,
        &mut |p| reporter.update(&p),
    );
    results.checkpoint = Some(args.checkpoint.display().to_string());
    results.checkpoint_sha256 = Some(rslad::io::sha256_file(&args.checkpoint)?);
    if results.example_ids.is_empty() {
        println!("no examples in this shard: nothing to report");
    } else {
        print_table(&results);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results)?;
        rslad::io::write_atomic(path, text.as_bytes())
            .with_context(|| format!("{}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

pub fn print_table(r: &EvalResults) {
    let mut head = vec!["Clean".to_string()];
    let mut row = vec![format!("{:.2}", 100.0 * r.clean_accuracy)];
    for a in &r.attacks {
        head.push(a.name.clone());
        row.push(format!("{:.2}", 100.0 * a.robust_accuracy));
    }
    let widths: Vec<usize> = head
        .iter()
        .zip(&row)
        .map(|(h, v)| h.len().max(v.len()))
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    println!(
        "{} on {} ({} examples, eps {:.4}), accuracy in %:",
        r.model.name,
        r.dataset,
        r.example_ids.len(),
        r.eps
    );
    println!("| {} |", line(&head));
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    println!("| {} |", line(&row));
    for a in &r.attacks {
        if !a.stages.is_empty() {
            let stages: Vec<String> = a
                .stages
                .iter()
                .map(|s| format!("{} {:.2}", s.name, 100.0 * s.robust_accuracy))
                .collect();
            println!("{} after each component: {}", a.name, stages.join(", "));
        }
    }
    for w in &r.warnings {
        println!("WARNING: {w}");
    }
}
