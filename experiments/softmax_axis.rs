//! `softmax_axis`: the softmax must normalise each query's row. Measures row and column sums for
//! each axis, then trains with each.
//!
//! `cargo run --release --bin softmax_axis -- [--config configs/softmax_axis.toml] [--backend flex]
//! [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::softmax_axis::SoftmaxAxisExperiment;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<SoftmaxAxisExperiment>()
}
