//! `logit_growth`: attention-logit growth at high learning rates, with and without QK-norm.
//!
//! `cargo run --release --bin logit_growth -- [--config configs/logit_growth.toml] [--backend flex]
//! [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::logit_growth::LogitGrowth;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<LogitGrowth>()
}
