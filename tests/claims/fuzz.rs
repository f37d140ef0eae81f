//! Fuzz-style checks of the binaries' contract: random configs built from the real schema (every
//! key of the reduced configs, set to edge values) and random `trace` inputs, run through the
//! binaries themselves. The property: exit 0, or 2 with one line; never a panic, an abort or a
//! hang; and every run folder left behind says how it ended.
//!
//! The cases use a fixed seed so that CI sees the same ones every time; the inputs that found
//! bugs while this was written are kept in `REGRESSIONS` and run every time.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use attention_lab::experiments::ALL;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use crate::common::{binary, run_folders, scratch};

/// Longest any one case may run before it counts as a hang.
const HANG: Duration = Duration::from_secs(120);

/// Runs `name` with `args`, killing it after [`HANG`].
fn run_bounded(name: &str, args: &[String]) -> Output {
    let mut command = Command::new(binary(name));
    command.args(args);
    bounded(command, HANG, &format!("{name} {args:?}"))
}

/// Runs `command` with its stderr read as it comes (a child that writes more than a pipe holds
/// would otherwise block on the full pipe and read as a hang), killing it after `limit`.
fn bounded(mut command: Command, limit: Duration, what: &str) -> Output {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut stderr = Vec::new();
        let _ = std::io::Read::read_to_end(&mut pipe, &mut stderr);
        stderr
    });
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = reader.join().expect("the stderr reader");
            return Output {
                status,
                stdout: Vec::new(),
                stderr,
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = reader.join().unwrap_or_default();
            panic!(
                "{what} ran for over {limit:?}; its stderr so far: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_child_that_writes_a_lot_to_stderr_is_no_hang() {
    // 4 MiB, far past a pipe's 64 KiB: with the pipe left unread the child blocks on it.
    let mut command = Command::new("sh");
    command.args(["-c", "head -c 4194304 /dev/zero | tr '\\0' e >&2"]);
    let out = bounded(command, Duration::from_secs(20), "a loud child");
    assert!(out.status.success());
    assert_eq!(out.stderr.len(), 4 << 20);
}

/// The contract every binary keeps, whatever its input.
fn keeps_the_contract(name: &str, args: &[String], result: &Output, out: Option<&Path>) {
    let stderr = String::from_utf8_lossy(&result.stderr);
    let code = result.status.code();
    assert!(
        matches!(code, Some(0 | 2)),
        "{name} {args:?} exited {:?}: {stderr}",
        result.status
    );
    assert!(
        !stderr.contains("panicked"),
        "{name} {args:?} panicked: {stderr}"
    );
    if code == Some(2) {
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{name} {args:?}: {stderr}");
    }
    for dir in out.map(run_folders).unwrap_or_default() {
        let summary = std::fs::read_to_string(dir.join("summary.json"))
            .unwrap_or_else(|_| panic!("{name} {args:?} left {} without a summary", dir.display()));
        let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
        let status = summary["status"].as_str().unwrap_or("");
        match (code, status) {
            (Some(0), "complete") | (Some(2), "failed") => {}
            _ => panic!(
                "{name} {args:?} exited {code:?} leaving {} with status {status:?}",
                dir.display()
            ),
        }
    }
}

/// Every leaf key of a TOML table, as dotted paths with their values.
fn leaves(table: &toml::Table, prefix: &str, into: &mut Vec<(String, toml::Value)>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(t) => leaves(t, &path, into),
            _ => into.push((path, value.clone())),
        }
    }
}

/// Edge values for integers, floats, strings and anything at all.
const INTEGERS: [&str; 12] = [
    "0",
    "1",
    "2",
    "3",
    "4",
    "7",
    "16",
    "-1",
    "1000000000000",
    "9223372036854775807",
    "18446744073709551615",
    "-9223372036854775808",
];
const FLOATS: [&str; 10] = [
    "0.0", "-1.0", "1e-300", "1e300", "nan", "inf", "-inf", "0.5", "-0.0", "1e-40",
];
const STRINGS: [&str; 12] = [
    "\"\"",
    "\"sqrt-dk\"",
    "\"none\"",
    "\"row\"",
    "\"column\"",
    "\"rotary\"",
    "\"count\"",
    "\"majority\"",
    "\"ndarray\"",
    "\"cuda\"",
    "\"tpu\"",
    "\"x x x x x x x x x x\"",
];
const ANYTHING: [&str; 8] = [
    "true",
    "[]",
    "{}",
    "{ x = 1 }",
    "\"3\"",
    "[[1]]",
    "2",
    "-2.5",
];

/// An edge value for a key whose reduced config holds `original`: mostly of the same type,
/// sometimes of any type. Lists get reversed, emptied, shortened or an edge element.
fn edge(original: &toml::Value, pick: usize, any_type: bool) -> String {
    if any_type {
        return ANYTHING[pick % ANYTHING.len()].to_string();
    }
    match original {
        toml::Value::Integer(_) => INTEGERS[pick % INTEGERS.len()].to_string(),
        toml::Value::Float(_) => FLOATS[pick % FLOATS.len()].to_string(),
        toml::Value::String(_) => STRINGS[pick % STRINGS.len()].to_string(),
        toml::Value::Boolean(b) => (!b).to_string(),
        toml::Value::Array(items) => {
            let mut items: Vec<String> = items.iter().map(|v| v.to_string()).collect();
            match pick % 5 {
                0 => items.reverse(),
                1 => items.clear(),
                2 => items.truncate(1),
                3 => {
                    if let Some(first) = items.first().cloned() {
                        items.push(first);
                    }
                }
                _ => match original.as_array().and_then(|a| a.first()) {
                    Some(first) => *items.last_mut().unwrap() = edge(first, pick / 5, false),
                    None => items.push("0".into()),
                },
            }
            format!("[{}]", items.join(", "))
        }
        _ => ANYTHING[pick % ANYTHING.len()].to_string(),
    }
}

/// Keys that are not in any config, to check they are refused rather than ignored.
const STRANGERS: [&str; 3] = ["model.d_modle", "nope", "run.backend.deep"];

/// (experiment, the --set arguments) from the reduced configs' own keys and values.
fn toml_case() -> impl Strategy<Value = (usize, Vec<String>)> {
    let pick = (any::<prop::sample::Index>(), 0..1000usize, 0..20u8);
    (0..ALL.len(), prop::collection::vec(pick, 1..=2)).prop_map(|(e, picks)| {
        let text = std::fs::read_to_string(format!("tests/configs/{}.toml", ALL[e].name)).unwrap();
        let mut all = Vec::new();
        leaves(&text.parse::<toml::Table>().unwrap(), "", &mut all);
        all.push(("run.backend".into(), "flex".into()));
        all.push(("run.seeds".into(), 1.into()));
        let sets = picks
            .into_iter()
            .map(|(key, value, twist)| match twist {
                0 => format!("{}={}", STRANGERS[value % STRANGERS.len()], value),
                1 | 2 => {
                    let (key, original) = key.get(&all);
                    format!("{key}={}", edge(original, value, true))
                }
                _ => {
                    let (key, original) = key.get(&all);
                    format!("{key}={}", edge(original, value, false))
                }
            })
            .collect();
        (e, sets)
    })
}

/// One config case through its binary.
fn check_toml_case(experiment: usize, sets: &[String]) {
    let name = ALL[experiment].name;
    let out = scratch(&format!("fuzz-{name}"));
    let mut args = vec![
        "--config".to_string(),
        format!("tests/configs/{name}.toml"),
        "--out".into(),
        out.to_str().unwrap().into(),
    ];
    for set in sets {
        args.push("--set".into());
        args.push(set.clone());
    }
    let result = run_bounded(name, &args);
    keeps_the_contract(name, &args, &result, Some(&out));
    let _ = std::fs::remove_dir_all(&out);
}

/// The config cases that found bugs while this suite was written.
const REGRESSIONS: [(&str, &[&str]); 3] = [
    (
        "permutation",
        &["model.d_model=2", "model.n_heads=1", "model.d_ff=8"],
    ),
    ("scaling", &["init.d_k=[512, 8]"]),
    ("temperature", &["logits.std=1e300"]),
];

#[test]
fn found_bugs_stay_fixed() {
    for (name, sets) in REGRESSIONS {
        let experiment = ALL.iter().position(|e| e.name == name).unwrap();
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        check_toml_case(experiment, &sets);
    }
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5EED_A77E),
        // A failing case is printed whole; shrinking re-runs experiments and can take minutes.
        max_shrink_iters: 16,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn random_configs_end_cleanly((experiment, sets) in toml_case()) {
        check_toml_case(experiment, &sets);
    }
}

/// A JSON number at the edges of f32 and f64.
fn number() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        (-3.0f64..3.0).prop_map(serde_json::Value::from),
        Just(serde_json::json!(1e39)),
        Just(serde_json::json!(-1e308)),
        Just(serde_json::json!(1e-45)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!("1")),
        Just(serde_json::Value::Null),
    ]
}

/// A matrix of 0 to 3 rows of 0 to 4 numbers, sometimes ragged.
fn matrix() -> impl Strategy<Value = serde_json::Value> {
    prop::collection::vec(prop::collection::vec(number(), 0..4), 0..4)
        .prop_map(|rows| serde_json::json!(rows))
}

/// A trace input from the real fields, each present or not, plus the odd stranger.
fn trace_input() -> impl Strategy<Value = String> {
    (
        prop::option::of(matrix()),
        prop::option::of(prop::collection::vec("[a-z]{0,3}", 0..4)),
        prop::option::of((matrix(), matrix(), matrix())),
        0..6u8,
    )
        .prop_map(|(x, tokens, weights, twist)| {
            let mut object = serde_json::Map::new();
            if let Some(x) = x {
                object.insert("x".into(), x);
            }
            if let Some(tokens) = tokens {
                object.insert("tokens".into(), serde_json::json!(tokens));
            }
            if let Some((q, k, v)) = weights {
                object.insert("w_q".into(), q);
                object.insert("w_k".into(), k);
                object.insert("w_v".into(), v);
            }
            let text = serde_json::Value::Object(object).to_string();
            match twist {
                0 => format!("\u{feff}{text}"),
                1 => text.replacen('{', "{\"x\": [[1]], ", 1),
                2 => text.replacen('{', "{\"stranger\": 1, ", 1),
                3 => text[..text.len() / 2].to_string(),
                _ => text,
            }
        })
}

/// Options of `trace`, edges included.
fn trace_options() -> impl Strategy<Value = Vec<String>> {
    (
        prop::sample::select(vec![
            "sqrt-dk", "none", "dk", "1e-30", "0", "-2", "nan", "1e300",
        ]),
        prop::sample::select(vec!["row", "column", "whole", "diagonal"]),
        prop::sample::select(vec!["1", "1e-300", "0", "-1", "inf", "3"]),
        prop::option::of(prop::sample::select(vec!["0", "1", "3", "100000000000"])),
        any::<bool>(),
    )
        .prop_map(|(scale, axis, temperature, d_k, causal)| {
            let mut args: Vec<String> = vec![
                "--scale".into(),
                scale.into(),
                "--softmax-axis".into(),
                axis.into(),
                "--temperature".into(),
                temperature.into(),
            ];
            if let Some(d_k) = d_k {
                args.extend(["--d-k".to_string(), d_k.to_string()]);
            }
            if causal {
                args.push("--causal".into());
            }
            args
        })
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn random_trace_inputs_end_cleanly(input in trace_input(), options in trace_options()) {
        let dir = scratch("fuzz-trace");
        let path = dir.join("input.json");
        std::fs::write(&path, &input).unwrap();
        let mut args = vec!["--input".to_string(), path.to_str().unwrap().into()];
        args.extend(options);
        let result = run_bounded("trace", &args);
        keeps_the_contract("trace", &args, &result, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
