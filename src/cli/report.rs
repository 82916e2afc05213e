//! `rslad report`: tables and plots from experiment folders, or the merge of eval shards.

use anyhow::{bail, Context};
use clap::Args;
use rslad::report;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Experiment folders, or the JSON shards of one `rslad eval --shard` run (to merge).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Where report.md, results.json, results.csv and the plots go (default: the first
    /// folder). A folder holding a file of those names must hold an rslad report, whose files
    /// (and plots of models this report lacks) are replaced; any other is refused. For shards,
    /// the merged JSON file.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let json_inputs = args
        .inputs
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .count();
    if json_inputs == args.inputs.len() {
        let shards = args
            .inputs
            .iter()
            .map(|p| -> anyhow::Result<_> {
                let text = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not an rslad eval result", p.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(out) = &args.out {
            let inputs: Vec<&std::path::Path> = args.inputs.iter().map(|p| p.as_path()).collect();
            super::output::check("--out", out, &inputs, super::output::Kind::EvalResults)?;
        }
        let merged = rslad::eval::merge_shards(shards)?;
        super::eval::print_table(&merged);
        if let Some(out) = &args.out {
            rslad::io::write_atomic(out, serde_json::to_string_pretty(&merged)?.as_bytes())?;
            eprintln!("merged results written to {}", out.display());
        }
        return Ok(());
    }
    if json_inputs > 0 {
        bail!("give either experiment folders or eval JSON shards, not both");
    }
    let rep = report::collect(&args.inputs)?;
    if rep.white_box.is_empty() {
        bail!(
            "no finished cells with results under {:?}{}",
            args.inputs,
            rep.warnings
                .iter()
                .map(|w| format!("\n  {w}"))
                .collect::<String>()
        );
    }
    let out = args.out.clone().unwrap_or_else(|| args.inputs[0].clone());
    if out.exists() && !out.is_dir() {
        bail!(
            "--out {}: is a file; the report is a folder (report.md, results.json, results.csv \
             and the plots): give a folder's path",
            out.display()
        );
    }
    let files = report::write(&rep, &out)?;
    print!("{}", report::markdown(&rep));
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
