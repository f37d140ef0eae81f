//! `complexity`: time and peak memory of the block over the sequence length n, with log–log
//! slopes, the n² vs n·d² crossover, and Burn's fused attention op for comparison.
//!
//! `cargo run --release --bin complexity -- [--config configs/complexity.toml] [--backend flex]
//! [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::complexity::Complexity;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<Complexity>()
}
