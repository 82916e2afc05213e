//! `rslad experiment` and `rslad report`.

use super::progress::TrainProgress;
use anyhow::{bail, Context};
use clap::Args;
use rslad::experiment::{self, ExperimentConfig};
use rslad::report;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// The grid, as TOML (see experiments/).
    #[arg(long)]
    config: PathBuf,
    /// Output folder (default: runs/<config name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the cells (for a cluster array job) and stop.
    #[arg(long)]
    list_cells: bool,
    /// Run only cell N (from --list-cells); the teacher cell must finish before students.
    #[arg(long)]
    cell: Option<usize>,
}

pub fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    let cfg = ExperimentConfig::from_file(&args.config)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(
            args.config
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "experiment".into()),
        )
    });
    let cells = cfg.cells(&out)?;
    if args.list_cells {
        for c in &cells {
            let status = if experiment::is_finished(&out, c) {
                "finished"
            } else {
                "to do"
            };
            println!("{}\t{}\t{:?}\t{}", c.index, c.name, c.role, status);
        }
        return Ok(());
    }
    let device = rslad::backend::default_device();
    eprintln!(
        "experiment {}: {} cells, output {}",
        args.config.display(),
        cells.len(),
        out.display()
    );
    experiment::run(&cfg, &out, args.cell, &device, &mut TrainProgress::new())
        .map_err(anyhow::Error::msg)?;
    if args.cell.is_none() {
        eprintln!(
            "all cells finished; tables with: rslad report {}",
            out.display()
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Experiment folders, or the JSON shards of one `rslad eval --shard` run (to merge).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Where report.md, results.json, results.csv and the plots go (default: the first
    /// folder); for shards, the merged JSON file.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run_report(args: ReportArgs) -> anyhow::Result<()> {
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
        let merged = report::merge_shards(shards).map_err(anyhow::Error::msg)?;
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
    let rep = report::collect(&args.inputs).map_err(anyhow::Error::msg)?;
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
    let files = report::write(&rep, &out).map_err(anyhow::Error::msg)?;
    print!("{}", report::markdown(&rep));
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
