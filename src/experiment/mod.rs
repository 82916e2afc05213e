//! A grid of runs from one TOML file: the teacher (trained first unless a checkpoint is given),
//! an optional black-box surrogate, and every student × method × seed, each trained and then
//! evaluated (white-box on the best and the last checkpoint, black-box and an ε sweep on the
//! best; `eval_last` and `blackbox_seeds` trim that for many seeds). Every cell resumes:
//! training from its run directory, evaluations by their results files, so a killed experiment
//! loses at most the epoch in progress of one run.

mod config;
mod run;

pub use config::*;
pub use run::*;
