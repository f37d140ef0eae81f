//! `scaling`: why attention divides by √d_k. Measures logit variance, saturation and gradient
//! norms over d_k at initialisation, then trains with and without the scale.
//!
//! `cargo run --release --bin scaling -- [--config configs/scaling.toml] [--backend flex]
//! [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::scaling::Scaling;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<Scaling>()
}
