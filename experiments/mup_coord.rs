//! `mup_coord`: µP's coordinate check and learning-rate transfer across widths, against the
//! standard parametrisation.
//!
//! `cargo run --release --bin mup_coord -- [--config configs/mup_coord.toml] [--backend flex]
//! [--seed N] [--out results] [--set key=value]…`

use std::process::ExitCode;

use attention_lab::experiments::mup_coord::MupCoord;

fn main() -> ExitCode {
    attention_lab::run::runner::main::<MupCoord>()
}
