//! `length_generalization`: train on lengths up to L, test on longer ones, per positional encoding.
//!
//! `cargo run --release --bin length_generalization -- [--config configs/length_generalization.toml]
//! [--backend flex] [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::length_generalization::LengthGeneralization;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<LengthGeneralization>()
}
