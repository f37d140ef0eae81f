//! Burn's remote backend runs the block and the experiments: a server on loopback hosts flex,
//! behind a token. The right token gives the same numbers as flex directly; a wrong or missing
//! one, or a server that stops mid-run, ends the client with one line and exit code 2, never a
//! hang. Built only with `--features remote-server`.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use attention_lab::block::attention::AttentionConfig;
use attention_lab::util::device::{self, BackendKind, REMOTE_TOKEN_VAR};
use attention_lab::util::rng::HostRng;

use crate::common::*;

const TOKEN: &str = "correct-horse-battery-staple";

/// How long a client may take to give up on a refused or vanished server.
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn block_runs_through_a_loopback_server_with_a_token() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("ws://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || device::serve(BackendKind::Flex, listener, Some(TOKEN)));

    let remote = device::remote_device_with(&address, Some(TOKEN)).unwrap();
    let local = BackendKind::Flex.device().unwrap();
    let config = AttentionConfig::new(16, 4).with_causal(true).with_seed(50);
    let run = |device| {
        let x = HostRng::new(51).normal_tensor([2, 5, 16], 1.0, device);
        values(config.init(device).unwrap().forward(x).context)
    };
    let diff = max_abs_diff(&run(&remote), &run(&local));
    assert!(diff < 1e-6, "remote differs from flex by {diff}");

    let wrong = device::remote_device_with(&address, Some("not-the-token")).unwrap_err();
    assert!(wrong.to_string().contains("is not the server's"), "{wrong}");
    let none = device::remote_device_with(&address, None).unwrap_err();
    assert!(none.to_string().contains("requires a token"), "{none}");
}

/// A `remote_server` process hosting flex on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(token: Option<&str>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_remote_server"));
        command
            .args([
                "--backend",
                "flex",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env_remove(REMOTE_TOKEN_VAR)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(token) = token {
            command.env(REMOTE_TOKEN_VAR, token);
        }
        let child = command.spawn().unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < DEADLINE, "remote_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            address: format!("ws://127.0.0.1:{port}"),
        }
    }

    /// An experiment binary pointed at this server, presenting `token`.
    fn client(&self, name: &str, token: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new(binary(name));
        command
            .args(args)
            .args(["--backend", "remote"])
            .env("BURN_REMOTE_ADDRESS", &self.address)
            .env_remove(REMOTE_TOKEN_VAR);
        if let Some(token) = token {
            command.env(REMOTE_TOKEN_VAR, token);
        }
        command
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child`, failing the test (and killing it) if it takes longer than [`DEADLINE`].
fn wait_bounded(mut child: Child, what: &str) -> Output {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{what} hung for more than {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric_values(dir: &Path) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut rows: Vec<(String, f64)> = text
        .lines()
        .skip(1)
        .map(|line| {
            let (key, value) = line.rsplit_once(',').unwrap();
            (key.to_string(), value.parse().unwrap())
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[test]
fn an_experiment_through_a_token_server_measures_what_flex_measures() {
    let server = Server::start(Some(TOKEN));
    let out = scratch("remote-token");
    let (remote, local) = (out.join("remote"), out.join("flex"));
    let config = ["--config", "tests/configs/temperature.toml", "--out"];
    let through = server
        .client(
            "temperature",
            Some(TOKEN),
            &[&config[..], &[remote.to_str().unwrap()]].concat(),
        )
        .output()
        .unwrap();
    assert!(through.status.success(), "{}", stderr(&through));
    let direct = run(
        "temperature",
        &[&config[..], &[local.to_str().unwrap()]].concat(),
    );
    assert!(direct.status.success(), "{}", stderr(&direct));
    let (a, b) = (
        metric_values(&run_dir(&remote, "temperature")),
        metric_values(&run_dir(&local, "temperature")),
    );
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    for ((key, x), (_, y)) in a.iter().zip(&b) {
        let close =
            (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1e-6) || (x.is_nan() && y.is_nan());
        assert!(close, "{key}: remote {x}, flex {y}");
    }
}

#[test]
fn a_wrong_or_missing_token_is_one_line_and_exit_2() {
    let server = Server::start(Some(TOKEN));
    for (token, needle) in [
        (Some("guess"), "is not the server's"),
        (
            None,
            "requires a token, and ATTENTION_LAB_REMOTE_TOKEN is not set",
        ),
    ] {
        let out = scratch("remote-refused");
        let results = out.join("results");
        let child = server
            .client(
                "temperature",
                token,
                &[
                    "--config",
                    "tests/configs/temperature.toml",
                    "--out",
                    results.to_str().unwrap(),
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let result = wait_bounded(child, "a refused client");
        let message = stderr(&result);
        assert_eq!(result.status.code(), Some(2), "{message}");
        assert!(message.contains(needle), "expected {needle:?} in {message}");
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            !results.exists(),
            "a refused client wrote {}",
            results.display()
        );
    }
}

#[test]
fn a_server_without_a_token_listens_only_on_loopback() {
    let result = Command::new(env!("CARGO_BIN_EXE_remote_server"))
        .args(["--listen", "0.0.0.0:0"])
        .env_remove(REMOTE_TOKEN_VAR)
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(2));
    let message = stderr(&result);
    assert!(
        message.contains("refusing to serve on 0.0.0.0"),
        "{message}"
    );
    assert!(message.contains(REMOTE_TOKEN_VAR), "{message}");
    let empty = Command::new(env!("CARGO_BIN_EXE_remote_server"))
        .args(["--listen", "127.0.0.1:0", "--token", ""])
        .output()
        .unwrap();
    exited_2_saying(&empty, "the token is empty");
}

#[test]
fn a_server_that_stops_mid_run_ends_the_client_and_keeps_its_records() {
    let mut server = Server::start(Some(TOKEN));
    let out = scratch("remote-stops");
    let mut child = server
        .client(
            "dk_vs_dmodel",
            Some(TOKEN),
            &[
                "--config",
                "tests/configs/dk_vs_dmodel.toml",
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first configuration's seeds are trained once its line is printed: then the server goes.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let started = Instant::now();
    while !seen.contains("held-out accuracy") {
        assert!(
            started.elapsed() < 10 * DEADLINE,
            "no configuration finished: {seen}"
        );
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("the client ended before the server stopped: {seen}");
        }
        seen.push_str(&line);
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let stopped = Instant::now();
    let result = wait_bounded(child, "the client of a stopped server");
    let message = stderr(&result);
    assert_eq!(result.status.code(), Some(2), "{message}");
    assert!(message.contains("lost the remote backend"), "{message}");
    eprintln!(
        "the client gave up {:?} after the server stopped",
        stopped.elapsed()
    );
    let dir = run_dir(&out, "dk_vs_dmodel");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "failed");
    let losses = metric_values(&dir)
        .iter()
        .filter(|(key, _)| key.ends_with(",loss"))
        .count();
    assert!(
        losses > 0,
        "the records measured before the server stopped are gone"
    );
}
