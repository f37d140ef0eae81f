//! `mqar`: softmax and linear attention on multi-query associative recall over widths × pairs.
//!
//! `cargo run --release --bin mqar -- [--config configs/mqar.toml]
//! [--backend flex] [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::mqar::Mqar;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<Mqar>()
}
