//! The command line: parses flags (clap lives here and nowhere else), builds the library's
//! values, runs them and prints for people.

pub mod alloc;
mod bench;
mod eval;
mod experiment;
mod interop;
mod models;
mod output;
mod progress;
mod report;
mod train;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The exit statuses (main.rs implements them; the README repeats them).
const EXIT_STATUS: &str = "Exit status:
  0  success
  1  usage or input error: a bad flag, file, setting or data set, or a run that cannot go on
     as asked (a diverged training); the message says what to fix
  2  internal error: a bug in rslad (it stopped on a failed internal check); please report it";

#[derive(Parser)]
#[command(
    name = "rslad",
    about = "Robust soft-label adversarial distillation: train small robust classifiers and evaluate them honestly",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (natural, SAT, TRADES, ARD, IAD or RSLAD); resumable.
    Train(Box<train::TrainArgs>),
    /// Evaluate a checkpoint: clean accuracy and robust accuracy under attacks.
    Eval(eval::EvalArgs),
    /// List the models with their parameter counts for CIFAR-10.
    Models,
    /// Import a PyTorch checkpoint (TRADES, RobustBench, RSLAD code) as an rslad checkpoint.
    Import(interop::ImportArgs),
    /// Export an rslad checkpoint for PyTorch (safetensors with the reference keys).
    Export(interop::ExportArgs),
    /// Run a grid of trainings and evaluations from a TOML file (resumable, shardable).
    Experiment(experiment::ExperimentArgs),
    /// Tables (Markdown, CSV, JSON) and plots from experiment folders; merges eval shards.
    Report(report::ReportArgs),
    /// Speed table: training steps, attack step, eval forward (PyTorch beside it if present).
    Bench(bench::BenchArgs),
}

pub fn run() -> anyhow::Result<()> {
    let version = format!(
        "{} (backend: {})",
        env!("CARGO_PKG_VERSION"),
        rslad::backend::describe()
    );
    let version: &'static str = Box::leak(version.into_boxed_str());
    // A usage error is returned, not exited on, so its status is rslad's (1), not clap's (2).
    let matches = Cli::command().version(version).try_get_matches()?;
    let cli = Cli::from_arg_matches(&matches)?;
    // RSLAD_DEVICE and the GPU are checked before any work, so a bad choice is an error, not a
    // panic; `report` only reads files and works without a device.
    if !matches!(cli.command, Command::Report(_)) {
        rslad::backend::check().map_err(anyhow::Error::msg)?;
    }
    match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Models => models::run(),
        Command::Import(args) => interop::run_import(args),
        Command::Export(args) => interop::run_export(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Report(args) => report::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// Parses `args` as the command line would be (for the exit-status tests).
#[cfg(test)]
pub fn parse_for_test(args: &[&str]) -> anyhow::Result<()> {
    let matches = Cli::command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)?;
    Ok(())
}
