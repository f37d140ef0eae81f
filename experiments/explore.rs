//! `explore`: the attention explorer, a local web page over the real block.

use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use attention_lab::explore::server::{self, Explorer};
use attention_lab::explore::trained::Trained;
use attention_lab::util::cli::finish;
use attention_lab::util::device::BackendKind;
use clap::Parser;

/// Serve the attention explorer: type a sentence, click a token, flip the pitfalls, and see what
/// the block computes, step by step. Every number comes from the block on --backend.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; anything but loopback lets other machines in (a warning says so).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on; 0 picks a free one (the URL printed says which).
    #[arg(long, default_value_t = 7878)]
    port: u16,
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda (feature `cuda`), remote (feature `remote`).
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Default seed for the word embeddings and the projections (the page can change it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A run folder with trained models (results/<experiment>/<run-id>, with models/ inside):
    /// shows their attention on examples of their task.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Check the command and exit: parse it and, with --run, read the run folder's models on
    /// flex; no backend is started, nothing listens.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    finish(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.check {
        let models = match &args.run {
            Some(run) => Trained::load(run, &BackendKind::Flex.device()?)?
                .models
                .len(),
            None => 0,
        };
        println!(
            "explore: {}:{} on {} checked ({models} trained model(s)); nothing listens",
            args.host, args.port, args.backend
        );
        return Ok(());
    }
    let device = args.backend.device()?;
    let trained = args
        .run
        .as_deref()
        .map(|run| Trained::load(run, &device))
        .transpose()?;
    if !args.host.is_loopback() {
        eprintln!(
            "warning: listening on {}, not loopback: other machines can reach the explorer (it has no authentication)",
            args.host
        );
    }
    let listener = TcpListener::bind((args.host, args.port))
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    if let Some(trained) = &trained {
        println!(
            "loaded {} trained model(s) from {}{}",
            trained.models.len(),
            trained.run.display(),
            if trained.skipped > 0 {
                format!(
                    " (the first {} by name; {} more left out)",
                    trained.models.len(),
                    trained.skipped
                )
            } else {
                String::new()
            }
        );
    }
    println!(
        "attention explorer on {}: http://{address}/  (Ctrl-C stops it)",
        args.backend.name()
    );
    let explorer = Explorer::new(device, args.backend, args.seed, trained);
    server::serve_until_signal(listener, explorer).context("the server stopped")?;
    println!("stopped");
    Ok(())
}
