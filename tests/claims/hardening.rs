//! The edges: whatever the input, a binary ends with exit 0, or 2 and one line (130 when
//! interrupted), never a panic or an abort, and never leaves a run folder that looks finished
//! when it is not. One test per class of input that used to go wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attention_lab::experiments::temperature::Temperature;
use attention_lab::lab::footprint::Footprint;
use attention_lab::run::config::{ExperimentConfig, Invalid, RunConfig, Validate};
use attention_lab::run::experiment::{Experiment, Notebook, RunError};
use attention_lab::run::registry::entry;
use attention_lab::run::reproduce::{ReproduceArgs, ReproduceError, run as reproduce};
use attention_lab::run::runner::RunOptions;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{binary, exited_2_saying, refused, run, run_dir, run_folders, scratch, stderr};

/// `summary.json` of a run folder.
fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn inputs_that_used_to_panic_now_run_or_say_why() {
    // A 2-wide model: the cat-sentence table indexed three dimensions.
    let out = scratch("narrow");
    let result = run(
        "permutation",
        &[
            "--config",
            "tests/configs/permutation.toml",
            "--set",
            "model.d_model=2",
            "--set",
            "model.n_heads=1",
            "--set",
            "model.d_ff=8",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(summary(&run_dir(&out, "permutation"))["status"], "complete");

    // A token a million characters long: the table width overflowed the formatter.
    let dir = scratch("long-token");
    let input = dir.join("long.json");
    let token = "a".repeat(1_000_000);
    let json = serde_json::json!({"tokens": [token, "b"], "x": [[1, 2], [3, 4]]});
    std::fs::write(&input, json.to_string()).unwrap();
    let result = run("trace", &["--input", input.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let text = String::from_utf8_lossy(&result.stdout);
    assert!(
        text.lines().all(|l| l.chars().count() < 200),
        "a line too long"
    );
    assert!(text.contains("aaaaaaaaaaaaaaaaaaaaaaa…"), "{text}");

    // A Duration too long to exist.
    let result = run("bench", &["--seconds", "1e20"]);
    assert_eq!(result.status.code(), Some(2), "{}", stderr(&result));
    assert!(stderr(&result).contains("--seconds must be a positive number of at most 3600"));
}

#[test]
fn bad_bench_peers_and_attention_paths_are_one_line_and_exit_2() {
    let bench = |args: &[&str], needle: &str| exited_2_saying(&run("bench", args), needle);
    bench(&["--peer-runs", "0"], "--peer-runs must be at least 1");
    bench(&["--train-steps", "5"], "--train-steps must be at least 10");
    // A peer that fails, and one that prints something else than three numbers.
    let quick = ["--sizes", "8", "--seconds", "0.01"];
    bench(
        &[&quick[..], &["--peer", "false"]].concat(),
        "peer `false 8` failed",
    );
    bench(
        &[&quick[..], &["--peer", "echo nothing"]].concat(),
        "expected 3 numbers",
    );
    refused(
        "dk_vs_dmodel",
        &[
            "--config",
            "tests/configs/dk_vs_dmodel.toml",
            "--set",
            "model.attention_path=flash",
        ],
        "model.attention_path",
    );
}

/// An experiment that panics part-way, after measuring something.
struct Crashes;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CrashesConfig {
    #[serde(default)]
    run: RunConfig,
}

impl Validate for CrashesConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()
    }
}

impl ExperimentConfig for CrashesConfig {
    fn run(&self) -> &RunConfig {
        &self.run
    }
}

impl Experiment for Crashes {
    const NAME: &'static str = "crashes";
    const TITLE: &'static str = "a bug";
    const CLAIM: &'static str = "none";
    type Config = CrashesConfig;

    fn work(_: &CrashesConfig) -> u64 {
        1
    }

    fn footprint(_: &CrashesConfig) -> Footprint {
        Footprint::none()
    }

    fn run(_: &CrashesConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        notebook.metric(attention_lab::output::report::MetricRow::new(
            "part", "cfg", "before", 1.0,
        ));
        let empty: Vec<u8> = Vec::new();
        let index = std::hint::black_box(5);
        let _ = empty[index];
        Ok(())
    }
}

#[test]
fn a_panic_is_a_failed_run_that_keeps_its_measurements_and_reproduce_goes_on() {
    let dir = scratch("crash");
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(configs.join("crashes.toml"), "").unwrap();
    std::fs::copy(
        "tests/configs/temperature.toml",
        configs.join("temperature.toml"),
    )
    .unwrap();
    let out = dir.join("results");
    let args = ReproduceArgs {
        names: Vec::new(),
        configs: configs.clone(),
        run: RunOptions {
            out: out.clone(),
            ..RunOptions::default()
        },
        list: false,
        merge: Vec::new(),
        publish: None,
        seeds: Vec::new(),
        readme: None,
        jobs: None,
    };
    let all = [entry::<Crashes>(), entry::<Temperature>()];
    let err = reproduce(&args, &all).unwrap_err();
    assert!(
        matches!(err, ReproduceError::Failed { ref failed, total: 2 } if failed.len() == 1),
        "{err}"
    );
    let crashed = run_dir(&out, "crashes");
    let s = summary(&crashed);
    assert_eq!(s["status"], "failed");
    let error = s["error"].as_str().unwrap();
    assert!(
        error.contains("panicked at tests/claims/hardening.rs")
            && error.contains("index out of bounds"),
        "{error}"
    );
    let metrics = std::fs::read_to_string(crashed.join("metrics.csv")).unwrap();
    assert!(metrics.contains("before"), "{metrics}");
    assert!(
        std::fs::read_to_string(crashed.join("report.md"))
            .unwrap()
            .contains("This run is failed")
    );
    // The experiment after it ran, and the index shows both.
    assert_eq!(summary(&run_dir(&out, "temperature"))["status"], "complete");
    let index = std::fs::read_to_string(out.join("index.md")).unwrap();
    assert!(index.contains("| `crashes` | FAILED |"), "{index}");
    assert!(index.contains("report.md)"), "{index}");

    // Only failures: the last index stays.
    let before = std::fs::read_to_string(out.join("index.html")).unwrap();
    let err = reproduce(&args, &all[..1]).unwrap_err();
    assert!(matches!(err, ReproduceError::AllFailed { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("index.html")).unwrap(),
        before
    );
}

#[test]
fn sizes_beyond_the_machine_or_the_caps_are_refused_before_anything_is_written() {
    fn with(set: &str) -> [&str; 4] {
        ["--config", "tests/configs/scaling.toml", "--set", set]
    }
    refused(
        "scaling",
        &with("model.d_model=1000000"),
        "needs an estimated",
    );
    refused(
        "scaling",
        &with("train.batch_size=100000000"),
        "or pass --force",
    );
    refused(
        "scaling",
        &with("run.seeds=1000000000000"),
        "run.seeds: must be at most 1000",
    );
    refused(
        "scaling",
        &with("train.steps=1000000000000"),
        "train.steps: must be at most",
    );
    refused(
        "scaling",
        &with("model.n_layers=100000"),
        "model.n_layers: n_layers must be at most 256",
    );
    refused(
        "complexity",
        &[
            "--config",
            "tests/configs/complexity.toml",
            "--set",
            "sizes=[256, 512, 1000000]",
        ],
        "needs an estimated",
    );
    let result = run("bench", &["--sizes", "100000"]);
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains("needs an estimated"),
        "{}",
        stderr(&result)
    );
    let result = run("trace", &["--d-k", "100000000000"]);
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains("needs an estimated"),
        "{}",
        stderr(&result)
    );
    // Forced past the estimate, a size that overflows is still one line, not a panic.
    let result = run("trace", &["--d-k", "10000000000000000000", "--force"]);
    assert_eq!(result.status.code(), Some(2), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("address space"),
        "{}",
        stderr(&result)
    );
    let result = run(
        "reproduce",
        &[
            "--configs",
            "tests/configs",
            "--out",
            scratch("big").join("r").to_str().unwrap(),
            "--force",
            "--list",
        ],
    );
    assert_eq!(
        result.status.code(),
        Some(0),
        "--force is a flag of reproduce"
    );
}

/// Starts a long training run whose steps take a while (1,000 heads), waits until its folder says
/// `running`, sends `signals` (one `kill` each, 50 ms apart, so that a second one lands while
/// the first is still being handled), and returns the exit code, stderr and the run folder.
fn interrupted_by(signals: &[&str]) -> (Option<i32>, String, PathBuf) {
    let out = scratch("interrupt");
    let mut child = Command::new(binary("scaling"))
        .args([
            "--config",
            "tests/configs/scaling.toml",
            "--set",
            "train.steps=1000000",
            "--set",
            "model.n_heads=1000",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let dir = loop {
        let running = run_folders(&out).into_iter().find(|d| {
            std::fs::read_to_string(d.join("summary.json")).is_ok_and(|s| s.contains("\"running\""))
        });
        if let Some(dir) = running {
            break dir;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    for (i, signal) in signals.iter().enumerate() {
        let sent = Command::new("kill")
            .args([*signal, &child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        // A later signal may find the process already gone, which is a clean stop too.
        assert!(sent.success() || i > 0, "kill {signal} failed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(waited.elapsed() < Duration::from_secs(60), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut message = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut message).unwrap();
    (status.code(), message, dir)
}

#[test]
fn ctrl_c_stops_a_run_at_the_next_step_and_says_interrupted() {
    let (code, message, dir) = interrupted_by(&["-INT"]);
    assert_eq!(code, Some(130), "{message}");
    assert!(message.contains("interrupted"), "{message}");
    let s = summary(&dir);
    assert_eq!(s["status"], "interrupted", "{s}");
    assert!(dir.join("metrics.csv").is_file() && dir.join("report.md").is_file());
}

#[test]
fn sigterm_twice_is_one_request_to_stop() {
    // `timeout` sends SIGTERM to the process and again to its group: one request, not two.
    let (code, message, dir) = interrupted_by(&["-TERM", "-TERM"]);
    assert_eq!(code, Some(130), "{message}");
    assert_eq!(summary(&dir)["status"], "interrupted");
}

#[test]
fn numbers_that_used_to_give_wrong_results_with_exit_0() {
    // The scale and the temperature are each fine; their product underflows.
    let result = run("trace", &["--scale", "1e-300", "--temperature", "1e-300"]);
    assert_eq!(result.status.code(), Some(2), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("1e-300 × 1e-300"),
        "{}",
        stderr(&result)
    );
    // A value f32 cannot hold.
    let dir = scratch("f32");
    let input = dir.join("big.json");
    std::fs::write(&input, r#"{"x": [[1e39, 2]]}"#).unwrap();
    let result = run("trace", &["--input", input.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(2));
    assert!(stderr(&result).contains("x[0][0] = 1e+39 is beyond f32's range"));
    // A sweep read by its ends, given backwards.
    refused(
        "scaling",
        &[
            "--config",
            "tests/configs/scaling.toml",
            "--set",
            "init.d_k=[512, 8]",
        ],
        "init.d_k: must be in increasing order",
    );
    // NaN evidence is a failed measurement, not a refutation.
    let out = scratch("nan");
    let result = run(
        "temperature",
        &[
            "--config",
            "tests/configs/temperature.toml",
            "--set",
            "logits.std=1e300",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let s = summary(&run_dir(&out, "temperature"));
    let verdicts = s["verdicts"].as_array().unwrap();
    assert!(
        verdicts.iter().all(|v| v["verdict"] == "INCONCLUSIVE"),
        "{verdicts:?}"
    );
    assert!(String::from_utf8_lossy(&result.stdout).contains("INCONCLUSIVE"));
}

#[test]
fn trace_files_read_back_and_are_never_overwritten() {
    let dir = scratch("trace-files");
    let (first, second) = (dir.join("a.json"), dir.join("b.json"));
    let result = run("trace", &["--json", first.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(0));
    let result = run(
        "trace",
        &[
            "--input",
            first.to_str().unwrap(),
            "--json",
            second.to_str().unwrap(),
        ],
    );
    assert_eq!(
        result.status.code(),
        Some(0),
        "its own output reads back: {}",
        stderr(&result)
    );
    let read =
        |p: &Path| serde_json::from_str::<Value>(&std::fs::read_to_string(p).unwrap()).unwrap();
    assert_eq!(read(&first), read(&second));

    let before = std::fs::read_to_string(&first).unwrap();
    let same = dir.join(".").join("a.json");
    let result = run(
        "trace",
        &[
            "--input",
            first.to_str().unwrap(),
            "--json",
            same.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains("is the --input file"),
        "{}",
        stderr(&result)
    );
    assert_eq!(std::fs::read_to_string(&first).unwrap(), before);

    let duplicate = dir.join("dup.json");
    std::fs::write(&duplicate, r#"{"x": [[1, 2]], "x": [[3, 4]]}"#).unwrap();
    let result = run("trace", &["--input", duplicate.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains("duplicate key 'x'"),
        "{}",
        stderr(&result)
    );

    let bom = dir.join("bom.json");
    std::fs::write(&bom, "\u{feff}{\"x\": [[1, 2]]}").unwrap();
    let result = run("trace", &["--input", bom.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
}

#[test]
fn reproduce_checks_the_backend_once_and_keeps_the_last_index() {
    let out = scratch("backend").join("results");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("index.html"), "the last good index").unwrap();
    let result = run(
        "reproduce",
        &[
            "--configs",
            "tests/configs",
            "--backend",
            "cuda",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(2), "{}", stderr(&result));
    let message = stderr(&result);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("cuda"), "{message}");
    assert_eq!(
        std::fs::read_to_string(out.join("index.html")).unwrap(),
        "the last good index"
    );
    assert!(run_folders(&out).is_empty(), "{:?}", run_folders(&out));
}

#[test]
fn smaller_edges() {
    // An unknown table is named as such, not as the table before it.
    refused(
        "temperature",
        &[
            "--config",
            "tests/configs/temperature.toml",
            "--set",
            "train.steps=0",
        ],
        "(key train): unknown field `train`",
    );
    // A seed the TOML file accepts, the command line accepts too.
    let out = scratch("seed");
    let result = run(
        "temperature",
        &[
            "--config",
            "tests/configs/temperature.toml",
            "--seed",
            "18446744073709551615",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let config = std::fs::read_to_string(run_dir(&out, "temperature").join("config.toml")).unwrap();
    assert!(config.contains("seed = 18446744073709551615"), "{config}");
    // --out inside a run folder would nest runs.
    let inside = run_dir(&out, "temperature").join("more");
    let result = run(
        "temperature",
        &[
            "--config",
            "tests/configs/temperature.toml",
            "--out",
            inside.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(2), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("lies inside the run folder"),
        "{}",
        stderr(&result)
    );
    assert!(!inside.exists());
    // A key the task would ignore.
    refused(
        "softmax_axis",
        &[
            "--config",
            "tests/configs/softmax_axis.toml",
            "--set",
            "task.kind=count",
            "--set",
            "task.keys=8",
        ],
        "task.keys: only the recall tasks use keys",
    );
}

#[test]
fn every_finished_run_says_complete() {
    let out = scratch("complete");
    let result = run(
        "temperature",
        &[
            "--config",
            "tests/configs/temperature.toml",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(0));
    let s = summary(&run_dir(&out, "temperature"));
    assert_eq!(s["status"], "complete");
}
