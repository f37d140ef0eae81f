//! `reproduce`: the main job. Runs every experiment with its config in `configs/` (or the ones
//! named) on one progress bar, prints a table of claims and verdicts, and writes
//! `results/index.md` and a self-contained `results/index.html`.
//!
//! `cargo run --release --bin reproduce -- [EXPERIMENT…] [--configs configs] [--backend flex]
//! [--seed N] [--out results] [--list]`

use std::process::ExitCode;

use attention_lab::experiments::ALL;
use attention_lab::run::reproduce::{ReproduceArgs, run};
use attention_lab::util::cli::finish;
use clap::Parser;

fn main() -> ExitCode {
    let args = ReproduceArgs::parse();
    finish(run(&args, ALL).map(|_| ()))
}
