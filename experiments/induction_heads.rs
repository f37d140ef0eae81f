//! `induction_heads`: 1- and 2-layer attention-only models on repeated segments: the induction-head phase change.
//!
//! `cargo run --release --bin induction_heads -- [--config configs/induction_heads.toml]
//! [--backend flex] [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::induction_heads::InductionHeads;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<InductionHeads>()
}
