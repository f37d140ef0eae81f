//! `bench`: forward+backward time and memory of the block, fused and decomposed, against burn-nn's
//! MultiHeadAttention and optionally PyTorch; and ms per training step of the tiny transformer.

use std::process::ExitCode;
use std::time::Duration;

use attention_lab::lab::bench::{self, BenchSetup};
use attention_lab::output::report::{utc_stamp, write_atomic};
use attention_lab::run::bench::{BenchPage, block_table, train_table};
use attention_lab::util::cli::finish;
use attention_lab::util::device::BackendKind;
use attention_lab::util::limits::{check_memory, human_bytes};
use attention_lab::util::provenance::Provenance;
use clap::Parser;

/// Time the block's fused and decomposed paths against burn-nn's MultiHeadAttention (b = 4,
/// d_model = 64, one head, forward+backward) with peak memory per n, and print the ratios. Same
/// device, same run, same weights.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda (feature `cuda`), remote (feature `remote`).
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Sequence lengths to time.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "16,64,128,512,1024,2048,4096"
    )]
    sizes: Vec<usize>,
    /// Seconds spent timing each implementation at each length (at most an hour).
    #[arg(long, default_value_t = 1.5)]
    seconds: f64,
    /// A PyTorch peer to pair with, run between our timings at each n as `sh -c "PEER n"`; it must
    /// print `n eager_ms sdpa_ms`, e.g. `--peer "python3 peers/attention.py"`.
    #[arg(long)]
    peer: Option<String>,
    /// Runs of the peer per n (our timing is split into as many slices around them).
    #[arg(long, default_value_t = 3)]
    peer_runs: usize,
    /// Also time Adam steps of the tiny transformer at the shapes of dk_vs_dmodel and scaling.
    #[arg(long)]
    train: bool,
    /// Adam steps per training case (the first fifth is warm-up).
    #[arg(long, default_value_t = 200)]
    train_steps: usize,
    /// The training peer, run as `sh -c "PEER d_model h"`; it must print `h ms_per_step`, e.g.
    /// `--train-peer "python3 peers/train.py"`.
    #[arg(long)]
    train_peer: Option<String>,
    /// Run even when the estimated memory exceeds what the machine has available.
    #[arg(long)]
    force: bool,
    /// Also write the tables, with the commit, CPU and command, as a markdown page to FILE
    /// (docs/results/bench.md is the recorded one the docs cite).
    #[arg(long, value_name = "FILE")]
    markdown: Option<std::path::PathBuf>,
    /// Check the command and exit: parse and validate it, estimate the memory; nothing is
    /// timed, no peer is started.
    #[arg(long)]
    check: bool,
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
    anyhow::ensure!(args.peer_runs >= 1, "--peer-runs must be at least 1");
    anyhow::ensure!(
        args.train_steps >= 10,
        "--train-steps must be at least 10 (the first fifth is warm-up), got {}",
        args.train_steps
    );
    if let Some(path) = &args.markdown {
        // Found out now, not after minutes of timing.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        anyhow::ensure!(
            dir.is_none_or(|d| d.is_dir()),
            "--markdown {}: its folder does not exist",
            path.display()
        );
    }
    let setup = BenchSetup {
        sizes: args.sizes,
        budget: Duration::try_from_secs_f64(args.seconds)?,
        peer_runs: args.peer_runs,
        ..BenchSetup::default()
    };
    let needs = setup.footprint();
    check_memory(needs.bytes, &needs.what, args.force)?;
    if args.check {
        println!(
            "bench: sizes {:?} on {} checked, estimated peak {}; nothing was timed",
            setup.sizes,
            args.backend,
            human_bytes(needs.bytes)
        );
        return Ok(());
    }
    let device = args.backend.device()?;
    let provenance = Provenance::here();
    // gemm and the fused kernel's loops are flex's; other backends run their own code.
    let paths = match args.backend {
        BackendKind::Flex => bench::code_paths(),
        other => format!(
            "{other}'s own kernels: neither gemm nor the fused kernel's CPU loops run on it"
        ),
    };
    // The machine first: every number below holds for this CPU and these code paths only.
    println!(
        "CPU: {} ({} threads); SIMD it offers: {}\ncode paths: {paths}\n",
        provenance.cpu,
        provenance.threads,
        provenance.simd_line()
    );
    let host_memory = matches!(args.backend, BackendKind::Flex | BackendKind::Ndarray);
    println!(
        "forward+backward, batch {}, d_model {}, {} head(s), backend {}{}:",
        setup.batch,
        setup.d_model,
        setup.n_heads,
        args.backend,
        args.peer
            .as_ref()
            .map_or(String::new(), |p| format!(", peer `{p}`"))
    );
    let mut peer = args.peer.as_deref().map(bench::command_peer);
    let peer = peer
        .as_mut()
        .map(|p| p as &mut dyn FnMut(usize) -> Result<bench::PeerTimes, bench::BenchError>);
    let rows = bench::run(&setup, &device, host_memory, peer, |r| {
        let torch = r.peer.map_or(String::new(), |p| {
            format!(
                ", torch eager {:.3} ms, SDPA {:.3} ms",
                p.eager_ms, p.sdpa_ms
            )
        });
        println!(
            "  n = {:5}: fused {:9.3} ms, decomposed {:9.3} ms, burn-nn {:9.3} ms{torch}",
            r.n, r.fused_ms, r.decomposed_ms, r.burn_ms
        );
    })?;
    let table = block_table(&rows);
    let mut lines = bench::worst_lines(&rows);
    if !host_memory {
        lines.push(format!(
            "peak memory is not measured on {}: its tensors live in device memory",
            args.backend
        ));
    }
    println!("\n{}", table.to_markdown());
    for line in &lines {
        println!("{line}");
    }
    let mut tables = vec![(table, lines)];

    if args.train {
        println!(
            "\nms per Adam step of the tiny transformer, batch 32, backend {}:",
            args.backend
        );
        let cases = bench::train_cases(args.train_steps);
        let rows = bench::time_cases(cases, &device.autodiff(), args.train_peer.as_deref(), |r| {
            println!(
                "  {}: fused {:.3} ms, decomposed {:.3} ms",
                r.label, r.fused_ms, r.decomposed_ms
            );
        })?;
        let table = train_table(&rows);
        let lines: Vec<String> = bench::worst_train_line(&rows).into_iter().collect();
        println!("\n{}", table.to_markdown());
        for line in &lines {
            println!("{line}");
        }
        tables.push((table, lines));
    }
    if let Some(path) = &args.markdown {
        let command = std::iter::once("cargo run --release --bin bench --".to_string())
            .chain(std::env::args().skip(1).map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    a
                }
            }))
            .collect::<Vec<_>>()
            .join(" ");
        let page = BenchPage {
            provenance: &provenance,
            stamp: &utc_stamp(std::time::SystemTime::now()),
            command: &command,
            backend: &args.backend.to_string(),
            paths: &paths,
            peers: [args.peer.as_deref(), args.train_peer.as_deref()],
            tables,
        };
        write_atomic(path, page.to_markdown().as_bytes())?;
        println!("\nwritten: {}", path.display());
    }
    Ok(())
}
