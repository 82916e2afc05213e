//! rslad: Robust Soft Label Adversarial Distillation (Zi et al., ICCV 2021), the methods it is
//! compared with, and the attacks that judge them, on burn.
//!
//! Data flows one way: [`data`] → [`models`] → ([`attacks`], [`methods`]) → [`train`] /
//! [`eval`] → [`report`]. Only the `rslad` binary's `cli` module talks to people.

pub mod attacks;
pub mod backend;
pub mod bench;
pub mod data;
pub mod eval;
pub mod experiment;
pub mod interop;
pub mod io;
pub mod methods;
pub mod models;
pub mod report;
pub mod train;
pub mod units;
