//! `causal_mask`: with the mask, position i cannot see the future. Computes the block's
//! Jacobian with and without the mask, then trains next-token prediction with and without it
//! and generates from both.
//!
//! `cargo run --release --bin causal_mask -- [--config configs/causal_mask.toml] [--backend flex]
//! [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::causal_mask::CausalMask;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<CausalMask>()
}
