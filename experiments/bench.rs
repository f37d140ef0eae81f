//! `bench`: forward+backward time of our attention block vs burn-nn's MultiHeadAttention.

use std::process::ExitCode;
use std::time::Duration;

use attention_lab::lab::bench::{self, BenchSetup};
use attention_lab::util::cli::finish;
use attention_lab::util::device::BackendKind;
use attention_lab::util::limits::check_memory;
use clap::Parser;

/// Time our block against burn-nn's MultiHeadAttention (b = 4, d_model = 64, one head) and print
/// the ratio. Same device, same run, same weights.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda (feature `cuda`), remote (feature `remote`).
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Sequence lengths to time.
    #[arg(long, value_delimiter = ',', default_value = "16,64,128,512,1024")]
    sizes: Vec<usize>,
    /// Seconds spent timing each implementation at each length (at most an hour).
    #[arg(long, default_value_t = 1.5)]
    seconds: f64,
    /// Run even when the estimated memory exceeds what the machine has available.
    #[arg(long)]
    force: bool,
}

/// The longest `--seconds` taken: one implementation at one size for an hour is already a
/// benchmark nobody waits for, and past about 1.8e19 s a Duration overflows.
const MAX_SECONDS: f64 = 3600.0;

fn main() -> ExitCode {
    finish(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.sizes.contains(&0),
        "--sizes: every length must be at least 1"
    );
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= MAX_SECONDS,
        "--seconds must be a positive number of at most {MAX_SECONDS}, got {}",
        args.seconds
    );
    let setup = BenchSetup {
        sizes: args.sizes,
        budget: Duration::try_from_secs_f64(args.seconds)?,
        ..BenchSetup::default()
    };
    let needs = setup.footprint();
    check_memory(needs.bytes, &needs.what, args.force)?;
    let device = args.backend.device()?;
    println!(
        "forward+backward, batch {}, d_model {}, {} head(s), backend {}:",
        setup.batch, setup.d_model, setup.n_heads, args.backend
    );
    let rows = bench::run(&setup, &device, |r| {
        println!(
            "  n = {:5}: ours {:9.3} ms, burn-nn {:9.3} ms, ratio {:.2}",
            r.n,
            r.ours_ms,
            r.burn_ms,
            r.ratio()
        );
    });
    println!("\n{}", bench::table(&rows));
    let worst = rows.iter().map(|r| r.ratio()).fold(0.0, f64::max);
    let verdict = if worst <= 1.05 {
        "NOT SLOWER"
    } else {
        "SLOWER"
    };
    println!(
        "{verdict}: worst ours/burn ratio {worst:.2} (≤ 1.05 counts as not slower, to allow timing noise)"
    );
    Ok(())
}
