//! `remote_server`: host one of this machine's backends for `--backend remote` clients.

use std::net::TcpListener;
use std::process::ExitCode;

use anyhow::Context;
use attention_lab::util::cli::finish;
use attention_lab::util::device::{self, BackendKind};
use clap::Parser;

/// Serve a local backend over WebSocket; clients set BURN_REMOTE_ADDRESS=ws://HOST:PORT and pass
/// --backend remote. Build with --features remote-server.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The local backend to host: flex, ndarray, wgpu, wgpu-cpu, cuda.
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
}

fn main() -> ExitCode {
    finish(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "serving {} on ws://{} (Ctrl-C stops)",
        args.backend,
        listener.local_addr()?
    );
    device::serve(args.backend, listener).map_err(anyhow::Error::msg)
}
