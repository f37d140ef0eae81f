//! `permutation`: without positional encodings, self-attention cannot tell word order. Measures
//! permutation equivariance per encoding and mask, trains order and order-free tasks, probes
//! causal models for position, and runs the seed pages' cat sentence.
//!
//! `cargo run --release --bin permutation -- [--config configs/permutation.toml] [--backend flex]
//! [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::permutation::Permutation;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<Permutation>()
}
