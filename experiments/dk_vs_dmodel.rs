//! `dk_vs_dmodel`: multi-head attention scales by √d_k, not √d_model. Sweeps the number of heads
//! at a fixed d_model and compares both scales at initialisation and in training.
//!
//! `cargo run --release --bin dk_vs_dmodel -- [--config configs/dk_vs_dmodel.toml]
//! [--backend flex] [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::dk_vs_dmodel::DkVsDModel;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<DkVsDModel>()
}
