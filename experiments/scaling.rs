//! `scaling`: why attention divides by √d_k. Measures logit variance, saturation and gradient
//! norms over d_k at initialisation, then trains with and without the scale.
//!
//! `cargo run --release --bin scaling -- [--config configs/scaling.toml] [--backend flex]
//! [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::cli::finish;
use attention_lab::experiments::scaling::Scaling;
use attention_lab::runner::{self, ExperimentArgs};
use clap::Parser;

/// Without 1/√d_k the softmax saturates and its gradients vanish: measured, plotted, judged.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: ExperimentArgs,
}

fn main() -> ExitCode {
    finish(run())
}

fn run() -> anyhow::Result<()> {
    runner::run::<Scaling>(&Args::parse().common)?;
    Ok(())
}
