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
    #[arg(long, conflicts_with_all = ["cell", "jobs"])]
    list_cells: bool,
    /// Run only this cell: its number or its name from --list-cells (a name stays with its cell
    /// when seeds or methods are added to the grid). Cells run in the order docs/cluster.md
    /// gives: the surrogate, then the teacher, then the students.
    #[arg(
        long,
        conflicts_with = "jobs",
        value_name = "N|NAME",
        allow_hyphen_values = true
    )]
    cell: Option<String>,
    /// Run N cells at once, each in its own process with an equal share of the CPU threads
    /// (the surrogate, then the teacher, then the students); each cell's output goes to
    /// OUT/logs/.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: u32,
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
    for note in cfg.unused_settings(&cells) {
        eprintln!("note: {note}");
    }
    let only = match &args.cell {
        Some(key) => Some(experiment::find_cell(&cells, key).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let device = rslad::backend::default_device();
    if args.list_cells {
        // A cluster lists the cells first: a bad file fails here, not in every array job. A
        // given checkpoint may still be on its way (copied in before the jobs start).
        match experiment::check(&cfg, &out, &cells, &device) {
            Err(e @ experiment::ExperimentError::MissingCheckpoint { .. }) => {
                eprintln!("warning: {e}; the cells that need it will fail until it is there")
            }
            other => other.map_err(anyhow::Error::msg)?,
        }
        for c in &cells {
            let status = match experiment::cell_state(&cfg, &out, c) {
                experiment::CellState::ToDo => match experiment::progress(&out, c) {
                    Some(p) => format!("to do ({p})"),
                    None => "to do".to_string(),
                },
                experiment::CellState::Finished => "finished".to_string(),
                experiment::CellState::Changed(what) => {
                    format!("finished with other settings ({what})")
                }
                experiment::CellState::Stale => {
                    "finished; black-box to craft again (the surrogate changed)".to_string()
                }
            };
            println!("{}\t{}\t{:?}\t{}", c.index, c.name, c.role, status);
        }
        return Ok(());
    }
    eprintln!(
        "experiment {}: {} cells, output {}",
        args.config.display(),
        cells.len(),
        out.display()
    );
    if args.jobs > 1 && args.cell.is_none() {
        let cells = experiment::prepare(&cfg, &out, None, &device).map_err(anyhow::Error::msg)?;
        in_parallel(&args, &cfg, &out, &cells, args.jobs as usize)?;
    } else {
        experiment::run(&cfg, &out, only, &device, &mut TrainProgress::new())
            .map_err(anyhow::Error::msg)?;
    }
    if args.cell.is_none() {
        eprintln!(
            "all cells finished; tables with: rslad report {}",
            rslad::io::shell_word(&out)
        );
    }
    Ok(())
}

/// Runs the unfinished cells `jobs` at a time, each as `rslad experiment --cell N` in a child
/// process: the surrogate first (the teacher's black-box tables are crafted on its final
/// weights), then the teacher (every student needs both), then the students. A failed cell is
/// reported with its log and does not stop the others of its phase.
fn in_parallel(
    args: &ExperimentArgs,
    cfg: &experiment::ExperimentConfig,
    out: &std::path::Path,
    cells: &[experiment::Cell],
    jobs: usize,
) -> anyhow::Result<()> {
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / jobs).max(1).to_string();
    let todo = |role: experiment::Role| -> Vec<&experiment::Cell> {
        cells
            .iter()
            .filter(|c| c.role == role)
            .filter(|c| !experiment::is_finished(cfg, out, c))
            .collect()
    };
    eprintln!(
        "{jobs} cells at a time, {threads} threads each; logs in {}",
        logs.display()
    );
    let mut failed = Vec::new();
    let phases = [
        ("surrogate", experiment::Role::Surrogate),
        ("teacher", experiment::Role::Teacher),
        ("students", experiment::Role::Student),
    ];
    for (phase, role) in phases {
        let queue = todo(role);
        if queue.is_empty() {
            continue;
        }
        eprintln!("{phase}: {} cells", queue.len());
        let mut queue = queue.into_iter();
        let mut running: Vec<(
            &experiment::Cell,
            std::process::Child,
            PathBuf,
            std::time::Instant,
        )> = Vec::new();
        loop {
            while running.len() < jobs {
                let Some(cell) = queue.next() else { break };
                let log_path = logs.join(format!("{}.log", cell.name));
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)?;
                let child = std::process::Command::new(std::env::current_exe()?)
                    .arg("experiment")
                    .arg("--config")
                    .arg(&args.config)
                    .arg("--out")
                    .arg(out)
                    .arg("--cell")
                    .arg(cell.index.to_string())
                    .envs([
                        ("OMP_NUM_THREADS", &threads),
                        ("MKL_NUM_THREADS", &threads),
                        ("RAYON_NUM_THREADS", &threads),
                    ])
                    .stdin(std::process::Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()?;
                eprintln!("cell {} ({}) started", cell.index, cell.name);
                running.push((cell, child, log_path, std::time::Instant::now()));
            }
            if running.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut i = 0;
            while i < running.len() {
                let Some(status) = running[i].1.try_wait()? else {
                    i += 1;
                    continue;
                };
                let (cell, _, log_path, t0) = running.swap_remove(i);
                let minutes = t0.elapsed().as_secs_f64() / 60.0;
                if status.success() {
                    eprintln!(
                        "cell {} ({}) finished in {minutes:.1} min",
                        cell.index, cell.name
                    );
                } else {
                    eprintln!(
                        "cell {} ({}) failed ({status}) after {minutes:.1} min; see {}",
                        cell.index,
                        cell.name,
                        log_path.display()
                    );
                    failed.push(format!("{} ({})", cell.index, cell.name));
                }
            }
        }
        // Each phase needs the one before.
        if !failed.is_empty() {
            break;
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "cells failed: {}; the others are kept, a rerun continues them",
            failed.join(", ")
        );
    }
    Ok(())
}
