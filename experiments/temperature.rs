//! `temperature`: entropy and largest weight of softmax(z/τ) over τ, and one sentence's
//! attention at a few temperatures.
//!
//! `cargo run --release --bin temperature -- [--config configs/temperature.toml] [--backend flex]
//! [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::temperature::Temperature;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<Temperature>()
}
