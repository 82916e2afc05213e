//! `rslad eval`.

use super::progress::EvalReporter;
use anyhow::{bail, Context};
use clap::Args;
use rslad::data;
use rslad::eval::{self, EvalRequest, EvalResults, Shard};
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
        help = rslad::attacks::registry::help_short(),
        long_help = rslad::attacks::registry::help_long()
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
    /// Skip the gradient-masking checks that run extra attacks (an iterative attack that
    /// breaks nothing FGSM breaks; PGD at eps 0.5).
    #[arg(long)]
    no_sanity: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let device = rslad::backend::default_device();
    let kind: data::DatasetKind = args.dataset.parse()?;
    let eps = match &args.eps {
        Some(e) => rslad::units::parse_eps(e).map_err(anyhow::Error::msg)?,
        None => kind.default_eps(),
    };
    if let Some(p) = &args.json {
        let inputs = [args.checkpoint.as_path()];
        super::output::check("--json", p, &inputs, super::output::Kind::EvalResults)?;
    }
    if args.batch_size == 0 {
        bail!("--batch-size 0: the batch size must be at least 1");
    }
    if args.n_examples == Some(0) {
        bail!("--n-examples 0 evaluates nothing; give at least 1 (or leave it out for all)");
    }
    let shard: Option<Shard> = match &args.shard {
        Some(s) => Some(s.parse().with_context(|| format!("--shard {s}"))?),
        None => None,
    };
    let request = EvalRequest {
        checkpoint: args.checkpoint.clone(),
        dataset: kind,
        data_dir: args.data_dir.clone(),
        attacks: args.attacks.clone(),
        eps,
        n_examples: args.n_examples,
        shard,
        batch_size: args.batch_size,
        seed: args.seed,
        sanity_checks: !args.no_sanity,
    };
    let prepared = eval::prepare(request, &device)?;
    if let (Some(shard), 0) = (shard, prepared.examples()) {
        // More shards than examples: an explicit empty result, which `rslad report` merges.
        eprintln!(
            "shard {shard} holds no examples (the {} test images are split {} ways); writing an empty result",
            prepared.test_len(),
            shard.count
        );
    }
    if let Some(n) = args.n_examples.filter(|&n| n > prepared.test_len()) {
        eprintln!(
            "note: the test set has {} images, fewer than --n-examples {n}: evaluating those {}",
            prepared.test_len(),
            prepared.test_len()
        );
    }
    eprintln!(
        "evaluating {} ({}) on {} test images of {} at eps = {eps:.4} on {}",
        args.checkpoint.display(),
        prepared.spec().name,
        prepared.examples(),
        kind,
        rslad::backend::describe()
    );
    let mut reporter = EvalReporter::new();
    let results = prepared.run(&device, &mut |p| reporter.update(&p))?;
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
