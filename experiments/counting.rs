//! `counting`: row, column and whole-matrix softmax on `count`, and the row softmax with a BOS.
//!
//! `cargo run --release --bin counting -- [--config configs/counting.toml] [--backend flex]
//! [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::counting::Counting;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<Counting>()
}
