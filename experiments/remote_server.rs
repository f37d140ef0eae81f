//! `remote_server`: host one of this machine's backends for `--backend remote` clients.

use std::net::TcpListener;
use std::process::ExitCode;

use anyhow::Context;
use attention_lab::util::cli::finish;
use attention_lab::util::device::{self, BackendKind, REMOTE_TOKEN_VAR};
use clap::Parser;

/// Serve a local backend over WebSocket; clients set BURN_REMOTE_ADDRESS=ws://HOST:PORT and the
/// same ATTENTION_LAB_REMOTE_TOKEN, and pass --backend remote. Build with --features
/// remote-server. WebSocket is unencrypted: use it on a trusted network or through an SSH tunnel.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The local backend to host: flex, ndarray, wgpu, wgpu-cpu, cuda.
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Address to listen on. Any address but a loopback one needs a token.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// The token clients must present [default: $ATTENTION_LAB_REMOTE_TOKEN]. Prefer the
    /// variable: a flag is visible to every user of the machine in `ps`.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Check the command and exit: parse it and the listen address; nothing listens.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    finish(run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    let token = args.token.or_else(device::remote_token);
    if args.check {
        let address: std::net::SocketAddr = args
            .listen
            .parse()
            .with_context(|| format!("--listen {}: not an address:port", args.listen))?;
        device::check_exposure(address, token.as_deref()).map_err(anyhow::Error::msg)?;
        println!(
            "remote_server: {} on {address} checked; nothing listens",
            args.backend
        );
        return Ok(());
    }
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    device::check_exposure(address, token.as_deref()).map_err(anyhow::Error::msg)?;
    println!(
        "serving {} on ws://{address} ({}; Ctrl-C stops)",
        args.backend,
        if token.is_some() {
            format!("clients must present the token, which they read from {REMOTE_TOKEN_VAR}")
        } else {
            "no token: only this machine can connect".to_string()
        }
    );
    device::serve(args.backend, listener, token.as_deref()).map_err(anyhow::Error::msg)
}
