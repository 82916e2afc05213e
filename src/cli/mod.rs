//! The command line: parses flags (clap lives here and nowhere else), builds the library's
//! values, runs them and prints for people.

mod eval;
mod models;
mod progress;
mod train;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rslad",
    about = "Robust soft-label adversarial distillation: train small robust classifiers and evaluate them honestly"
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
}

pub fn run() -> anyhow::Result<()> {
    let version = format!(
        "{} (backend: {})",
        env!("CARGO_PKG_VERSION"),
        rslad::backend::describe()
    );
    let version: &'static str = Box::leak(version.into_boxed_str());
    let matches = Cli::command().version(version).get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Models => models::run(),
    }
}
