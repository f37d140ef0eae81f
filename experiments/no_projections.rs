//! `no_projections`: without Q/K/V projections each token attends mostly to itself. Measures the
//! diagonal mass over d_model with raw embeddings and random projections, then trains with and
//! without projections.
//!
//! `cargo run --release --bin no_projections -- [--config configs/no_projections.toml]
//! [--backend flex] [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::no_projections::NoProjections;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<NoProjections>()
}
