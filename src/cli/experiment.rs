//! `rslad experiment`.

use super::progress::TrainProgress;
use clap::Args;
use rslad::experiment::{self, ExperimentConfig};
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
            let status = match experiment::cell_state(&out, c) {
                experiment::CellState::ToDo => "to do".to_string(),
                experiment::CellState::Finished => "finished".to_string(),
                experiment::CellState::Changed(what) => {
                    format!("finished with other settings ({what})")
                }
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
