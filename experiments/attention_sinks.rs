//! `attention_sinks`: standard, off-by-one and gated attention on Bigram-Backcopy: sinks, drains, eviction.
//!
//! `cargo run --release --bin attention_sinks -- [--config configs/attention_sinks.toml]
//! [--backend flex] [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::attention_sinks::AttentionSinks;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<AttentionSinks>()
}
