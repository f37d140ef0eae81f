//! A sweep split over shards, run as separate processes the way a job array runs them, merges
//! into what one unsharded run writes; a merge with a shard missing, doubled or of another
//! config is refused with nothing written.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use attention_lab::lab::checkpoint;
use attention_lab::lab::tasks::Task;
use attention_lab::util::rng::HostRng;

use crate::common::*;

const NAME: &str = "dk_vs_dmodel";
const CONFIG: &str = "tests/configs/dk_vs_dmodel.toml";

fn sorted_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every file under `dir` (relative path, bytes), sorted.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for (rel, bytes) in files(from) {
        let path = to.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// `NAME` as shard `shard` of the sweep `lr-sweep` under `out`, with `extra` flags.
fn shard_command(out: &Path, shard: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(binary(NAME));
    command
        .args(["--config", CONFIG, "--out", out.to_str().unwrap()])
        .args(["--sweep-id", "lr-sweep", "--shard", shard])
        .args(extra);
    command
}

/// `reproduce --merge dir` must fail with exit 2 saying `needle`, and write nothing in `dir`.
fn merge_refused(dir: &Path, needle: &str) {
    let before = files(dir);
    let index = dir.parent().unwrap().parent().unwrap().join("index.html");
    let had_index = index.exists();
    let result = run("reproduce", &["--merge", dir.to_str().unwrap()]);
    let message = stderr(&result);
    assert_eq!(result.status.code(), Some(2), "{message}");
    assert!(message.contains(needle), "expected {needle:?} in {message}");
    assert_eq!(message.lines().count(), 1, "one line expected: {message}");
    assert!(
        files(dir) == before,
        "a refused merge changed {}",
        dir.display()
    );
    assert_eq!(index.exists(), had_index, "a refused merge wrote an index");
}

#[test]
fn three_shard_processes_merge_into_what_one_run_writes() {
    let root = scratch("shards");
    let whole = root.join("whole");
    let result = run(
        NAME,
        &["--config", CONFIG, "--out", whole.to_str().unwrap()],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    let one = run_dir(&whole, NAME);

    let sharded = root.join("sharded");
    let spawn = |shard: usize| {
        let mut command = if shard == 2 {
            // As Slurm numbers `sbatch --array=1-3`: the third task has id 3.
            let mut command = shard_command(&sharded, "auto", &[]);
            command
                .env("SLURM_ARRAY_TASK_ID", "3")
                .env("SLURM_ARRAY_TASK_MIN", "1")
                .env("SLURM_ARRAY_TASK_COUNT", "3");
            command
        } else {
            shard_command(&sharded, &format!("{shard}/3"), &[])
        };
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // All three at once, as separate processes that never talk.
    let children: Vec<_> = (0..3).map(spawn).collect();
    for (shard, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "shard {shard}: {}", stderr(&out));
        assert!(
            stdout.contains("training runs are stored here"),
            "shard {shard}: {stdout}"
        );
        // Verdicts computed from other shards' stand-ins would be wrong: a shard prints none.
        assert!(!stdout.contains("CONFIRMED"), "shard {shard}: {stdout}");
    }
    let sweep = sharded.join(NAME).join("lr-sweep");
    let mut stored = Vec::new();
    for shard in 0..3 {
        let manifest = json(&sweep.join(format!("shard-{shard}-of-3/shard.json")));
        assert_eq!(manifest["status"], "complete");
        assert_eq!(
            manifest["units_total"], 8,
            "2 head counts × 2 scales × 2 seeds"
        );
        let units: Vec<u64> = serde_json::from_value(manifest["units"].clone()).unwrap();
        assert!(!units.is_empty(), "shard {shard} trained nothing");
        stored.extend(units);
    }
    stored.sort();
    assert_eq!(
        stored,
        (0..8).collect::<Vec<u64>>(),
        "each unit in one shard"
    );

    // A shard run again (a re-queued job) reads its units back instead of training them.
    let again = shard_command(&sharded, "1/3", &[]).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("(0 trained now, 3 read back"), "{stdout}");

    // A shard of the sweep run with another config is refused, and so are merge options that
    // the shards fixed.
    let other_config = shard_command(&sharded, "1/3", &["--set", "train.lr=0.003"])
        .output()
        .unwrap();
    exited_2_saying(&other_config, "this shard was started with another config");
    let seeded = run(
        "reproduce",
        &["--merge", sweep.to_str().unwrap(), "--seed", "5"],
    );
    exited_2_saying(&seeded, "do not apply to a merge");
    assert!(!sweep.join("summary.json").exists() && !sharded.join("index.html").exists());

    // Refusals, on copies of the sweep so that the real one stays whole.
    let broken = root.join("broken").join(NAME);
    let missing = broken.join("missing");
    copy_dir(&sweep, &missing);
    std::fs::remove_dir_all(missing.join("shard-1-of-3")).unwrap();
    merge_refused(&missing, "shard-1-of-3 is missing");
    let doubled = broken.join("doubled");
    copy_dir(&sweep, &doubled);
    std::fs::remove_dir_all(doubled.join("shard-2-of-3")).unwrap();
    copy_dir(&sweep.join("shard-0-of-3"), &doubled.join("shard-2-of-3"));
    merge_refused(&doubled, "shard-2-of-3 holds the manifest of shard 0/3");
    let mixed = broken.join("mixed");
    copy_dir(&sweep, &mixed);
    copy_dir(&sweep.join("shard-0-of-3"), &mixed.join("shard-0-of-2"));
    merge_refused(&mixed, "disagree on the number of shards");
    let unfinished = broken.join("unfinished");
    copy_dir(&sweep, &unfinished);
    let manifest = unfinished.join("shard-0-of-3/shard.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"complete\"", "\"interrupted\"")).unwrap();
    merge_refused(&unfinished, "shard-0-of-3 is interrupted");
    let other = broken.join("other-config");
    copy_dir(&sweep, &other);
    let config = other.join("shard-2-of-3/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("lr = 0.002", "lr = 0.003")).unwrap();
    merge_refused(&other, "shard-2-of-3/config.toml differs");
    let garbled = broken.join("garbled");
    copy_dir(&sweep, &garbled);
    std::fs::write(garbled.join("shard-1-of-3/shard.json"), "{ not json").unwrap();
    merge_refused(&garbled, "not a shard manifest");
    let twice = run(
        "reproduce",
        &[
            "--merge",
            sweep.to_str().unwrap(),
            "--merge",
            sweep.to_str().unwrap(),
        ],
    );
    exited_2_saying(&twice, "given twice");
    let lost = broken.join("lost-unit");
    copy_dir(&sweep, &lost);
    std::fs::remove_file(lost.join("shard-1-of-3/units/000004.run.json")).unwrap();
    merge_refused(&lost, "000004.run.json is missing");

    let merged = run("reproduce", &["--merge", sweep.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&merged.stdout);
    assert!(merged.status.success(), "{}\n{stdout}", stderr(&merged));
    assert!(stdout.contains("CONFIRMED"), "{stdout}");

    // The same measurements, verdicts, plots and models as the unsharded run.
    assert_eq!(
        sorted_lines(&sweep.join("metrics.csv")),
        sorted_lines(&one.join("metrics.csv"))
    );
    let (a, b) = (
        json(&one.join("summary.json")),
        json(&sweep.join("summary.json")),
    );
    assert_eq!(b["status"], "complete");
    assert_eq!(a["verdicts"], b["verdicts"]);
    assert_eq!(a["results"], b["results"]);
    assert_eq!(a["findings"], b["findings"]);
    assert_eq!(b["sweep"]["shards"], 3);
    // Plots and model specs byte for byte; parameters by value, since a `.bpk` also holds each
    // parameter's id, which Burn draws afresh in every process.
    let outputs = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        files(dir)
            .into_iter()
            .filter(|(p, _)| {
                p.extension().is_some_and(|e| e == "svg" || e == "json")
                    && !p.to_string_lossy().starts_with("shard-")
                    && *p != Path::new("summary.json")
            })
            .collect()
    };
    let (whole_outputs, merged_outputs) = (outputs(&one), outputs(&sweep));
    let names = |o: &[(PathBuf, Vec<u8>)]| o.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&whole_outputs), names(&merged_outputs));
    for ((path, a), (_, b)) in whole_outputs.iter().zip(&merged_outputs) {
        assert!(a == b, "{} differs", path.display());
    }
    let specs: Vec<&PathBuf> = whole_outputs
        .iter()
        .map(|f| &f.0)
        .filter(|p| p.starts_with("models"))
        .collect();
    assert_eq!(specs.len(), 8, "one model per unit");
    let device = burn::prelude::Device::flex();
    for spec in specs {
        let stem = spec.with_extension("");
        let (a, spec) = checkpoint::load(&one.join(&stem), &device).unwrap();
        let (b, _) = checkpoint::load(&sweep.join(&stem), &device).unwrap();
        let task = Task::new(spec.task.clone()).unwrap();
        let batch = task.held_out_batch(16, &mut HostRng::new(3));
        let logits = |m: &attention_lab::lab::model::TinyTransformer| {
            values(m.forward(batch.tokens(&device), task.n_out()).logits)
        };
        assert_eq!(logits(&a), logits(&b), "{} differs", stem.display());
    }
    assert!(sharded.join("index.html").is_file());

    // A merged sweep is neither merged again nor added to.
    merge_refused(&sweep, "already merged");
    let late = shard_command(&sharded, "0/3", &[]).output().unwrap();
    exited_2_saying(&late, "already merged");
}

#[test]
fn bad_shard_options_are_refused_before_anything_runs() {
    let config = ["--config", CONFIG];
    let with = |extra: &[&'static str]| [&config[..], extra].concat();
    refused(
        NAME,
        &with(&["--shard", "3/3", "--sweep-id", "s"]),
        "I = 3 is not below N = 3",
    );
    refused(
        NAME,
        &with(&["--shard", "1:3", "--sweep-id", "s"]),
        "expected I/N",
    );
    refused(NAME, &with(&["--shard", "0/3"]), "--shard needs --sweep-id");
    refused(
        NAME,
        &with(&["--sweep-id", "s"]),
        "--sweep-id only applies with --shard",
    );
    refused(
        NAME,
        &with(&["--shard", "0/2", "--sweep-id", "../up"]),
        "--sweep-id \"../up\"",
    );
    // Only where no Slurm job is around this test.
    if std::env::var("SLURM_ARRAY_TASK_ID").is_err() {
        refused(
            NAME,
            &with(&["--shard", "auto", "--sweep-id", "s"]),
            "SLURM_ARRAY_TASK_ID is not set",
        );
    }
    let nowhere = scratch("merge-nowhere").join("nothing-here");
    let result = run("reproduce", &["--merge", nowhere.to_str().unwrap()]);
    exited_2_saying(&result, "cannot read it");
    let empty = scratch("merge-empty");
    merge_refused(&empty, "no shard folders");
    let result = run(
        "reproduce",
        &["--merge", empty.to_str().unwrap(), "scaling"],
    );
    assert_eq!(
        result.status.code(),
        Some(2),
        "--merge with names is a usage error"
    );
}

/// A stand-in for Slurm's `sbatch`: runs an array's tasks at once, as separate processes with
/// Slurm's variables set, and a dependent job after them; prints a job id.
const FAKE_SBATCH: &str = r#"#!/bin/sh
array=""; wrap=""
while [ $# -gt 0 ]; do
  case "$1" in
    --array=*) array="${1#--array=}" ;;
    --wrap) shift; wrap="$1" ;;
  esac
  shift
done
if [ -n "$array" ]; then
  lo=${array%-*}; hi=${array#*-}; i=$lo; pids=""
  while [ "$i" -le "$hi" ]; do
    SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_MIN=$lo SLURM_ARRAY_TASK_COUNT=$((hi - lo + 1)) \
      sh -c "$wrap" >>"$FAKE_SLURM_LOG" 2>&1 &
    pids="$pids $!"
    i=$((i + 1))
  done
  for p in $pids; do wait "$p" || exit 1; done
else
  sh -c "$wrap" >>"$FAKE_SLURM_LOG" 2>&1 || exit 1
fi
echo 4242
"#;

#[test]
fn the_slurm_script_runs_an_array_then_its_merge() {
    let root = scratch("slurm");
    let sbatch = root.join("sbatch");
    std::fs::write(&sbatch, FAKE_SBATCH).unwrap();
    let log = root.join("slurm.log");
    let bin = Path::new(binary("temperature")).parent().unwrap();
    let results = root.join("results");
    let script = |args: &[&str]| {
        Command::new("bash")
            .arg("scripts/slurm-sweep.sh")
            .args(args)
            .env("SBATCH", format!("sh {}", sbatch.display()))
            .env("BIN", bin)
            .env("RESULTS", &results)
            .env("SWEEP_ID", "nightly")
            .env("FAKE_SLURM_LOG", &log)
            .output()
            .unwrap()
    };
    let out = script(&[
        "temperature",
        "2",
        "--config",
        "tests/configs/temperature.toml",
    ]);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "{}\n{logged}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sweep nightly: array job 4242 (2 shards)"),
        "{stdout}"
    );
    let sweep = results.join("temperature/nightly");
    for shard in ["shard-0-of-2", "shard-1-of-2"] {
        assert_eq!(
            json(&sweep.join(shard).join("shard.json"))["status"],
            "complete"
        );
    }
    assert_eq!(
        json(&sweep.join("summary.json"))["status"],
        "complete",
        "{logged}"
    );
    assert!(results.join("index.html").is_file());

    let bad = script(&["temperature", "zero"]);
    exited_2_saying(&bad, "SHARDS must be a whole number");
}

#[test]
fn every_experiment_sharded_by_reproduce_merges_to_its_unsharded_run() {
    let root = scratch("shard-all");
    let (whole, sharded) = (root.join("whole"), root.join("sharded"));
    let configs = ["--configs", "tests/configs"];
    let result = run(
        "reproduce",
        &[&configs[..], &["--out", whole.to_str().unwrap()]].concat(),
    );
    assert!(result.status.success(), "{}", stderr(&result));
    let spawn = |shard: &str| {
        Command::new(binary("reproduce"))
            .args(configs)
            .args([
                "--out",
                sharded.to_str().unwrap(),
                "--sweep-id",
                "all",
                "--shard",
                shard,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let shards = [spawn("0/2"), spawn("1/2")];
    for child in shards {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A sharded reproduce writes no index: it has no verdicts yet.
    assert!(!sharded.join("index.html").exists());
    let experiments: Vec<String> = std::fs::read_dir(&sharded)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        experiments.len(),
        attention_lab::experiments::ALL.len(),
        "{experiments:?}"
    );
    let mut merge: Vec<String> = Vec::new();
    for e in &experiments {
        merge.push("--merge".into());
        merge.push(sharded.join(e).join("all").to_string_lossy().into_owned());
    }
    let merge: Vec<&str> = merge.iter().map(String::as_str).collect();
    let result = run("reproduce", &merge);
    assert!(result.status.success(), "{}", stderr(&result));
    assert!(sharded.join("index.html").is_file());
    for e in &experiments {
        let one = run_dir(&whole, e);
        let merged = sharded.join(e).join("all");
        let (a, b) = (
            json(&one.join("summary.json")),
            json(&merged.join("summary.json")),
        );
        let claims = |s: &serde_json::Value| {
            s["verdicts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["claim"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(claims(&a), claims(&b), "{e}");
        if e == "complexity" {
            // Timings, taken again by the merge: no training run to read back.
            continue;
        }
        assert_eq!(a["verdicts"], b["verdicts"], "{e}");
        assert_eq!(
            sorted_lines(&one.join("metrics.csv")),
            sorted_lines(&merged.join("metrics.csv")),
            "{e}"
        );
    }
}
