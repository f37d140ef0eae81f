//! Shared helpers: running one test body on every device, reading tensors back, and running the
//! binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use attention_lab::util::device::BackendKind;
use burn::prelude::*;

/// Which wgpu adapter the wgpu tests use: `wgpu-cpu` (a software adapter such as Mesa's
/// llvmpipe) unless `ATTENTION_LAB_TEST_WGPU=wgpu` asks for the best adapter, e.g. a real GPU.
pub fn wgpu_kind() -> BackendKind {
    match std::env::var("ATTENTION_LAB_TEST_WGPU").as_deref() {
        Ok("wgpu") => BackendKind::Wgpu,
        _ => BackendKind::WgpuCpu,
    }
}

/// The device for `kind`, or `None` (with the reason printed) when this machine lacks it and
/// nothing requires it. flex and ndarray are built in, so a failed probe of either is a failure,
/// never a skip; a missing wgpu adapter fails when `ATTENTION_LAB_REQUIRE_WGPU=1` (as in CI), a
/// missing CUDA device when `ATTENTION_LAB_REQUIRE_CUDA=1`.
pub fn device_or_skip(kind: BackendKind) -> Option<Device> {
    match kind.device() {
        Ok(device) => Some(device),
        Err(e) => {
            assert!(!required(kind), "{kind} is required here, but {e}");
            eprintln!("skipped on {kind}: {e}");
            None
        }
    }
}

/// Whether a test on `kind` must run rather than skip.
pub fn required(kind: BackendKind) -> bool {
    let env = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    match kind {
        BackendKind::Flex | BackendKind::Ndarray => true,
        BackendKind::Wgpu | BackendKind::WgpuCpu => env("ATTENTION_LAB_REQUIRE_WGPU"),
        BackendKind::Cuda => env("ATTENTION_LAB_REQUIRE_CUDA"),
        // The remote tests start their own server and check it themselves.
        BackendKind::Remote => false,
    }
}

/// Every device this machine offers for the cross-device tests: flex, ndarray and wgpu.
pub fn available_devices() -> Vec<(BackendKind, Device)> {
    [BackendKind::Flex, BackendKind::Ndarray, wgpu_kind()]
        .into_iter()
        .filter_map(|kind| device_or_skip(kind).map(|d| (kind, d)))
        .collect()
}

/// `device_test!(name, |device| { ... })` makes `name::flex`, `name::ndarray` and `name::wgpu`
/// (and `name::cuda` with the `cuda` feature), each running the same body on its device,
/// as candle's `test_device!` does.
macro_rules! device_test {
    ($name:ident, |$device:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($device: burn::prelude::Device) $body

            #[test]
            fn flex() {
                if let Some(d) = $crate::common::device_or_skip(attention_lab::util::device::BackendKind::Flex) {
                    body(d)
                }
            }

            #[test]
            fn ndarray() {
                if let Some(d) = $crate::common::device_or_skip(attention_lab::util::device::BackendKind::Ndarray) {
                    body(d)
                }
            }

            #[test]
            fn wgpu() {
                if let Some(d) = $crate::common::device_or_skip($crate::common::wgpu_kind()) {
                    body(d)
                }
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                if let Some(d) = $crate::common::device_or_skip(attention_lab::util::device::BackendKind::Cuda) {
                    body(d)
                }
            }
        }
    };
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("f32 tensor")
}

/// max |a − b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Sums of `[batch, heads, n_q, n_k]` weights over keys, one per (batch, head, query).
pub fn row_sums(weights: &[f32], n_k: usize) -> Vec<f32> {
    weights.chunks(n_k).map(|r| r.iter().sum()).collect()
}

/// Sums over queries, one per (batch, head, key).
pub fn column_sums(weights: &[f32], n_q: usize, n_k: usize) -> Vec<f32> {
    weights
        .chunks(n_q * n_k)
        .flat_map(|head| (0..n_k).map(move |j| (0..n_q).map(|i| head[i * n_k + j]).sum()))
        .collect()
}

pub fn binary(name: &str) -> &'static str {
    match name {
        "scaling" => env!("CARGO_BIN_EXE_scaling"),
        "dk_vs_dmodel" => env!("CARGO_BIN_EXE_dk_vs_dmodel"),
        "permutation" => env!("CARGO_BIN_EXE_permutation"),
        "softmax_axis" => env!("CARGO_BIN_EXE_softmax_axis"),
        "no_projections" => env!("CARGO_BIN_EXE_no_projections"),
        "causal_mask" => env!("CARGO_BIN_EXE_causal_mask"),
        "temperature" => env!("CARGO_BIN_EXE_temperature"),
        "logit_growth" => env!("CARGO_BIN_EXE_logit_growth"),
        "mup_coord" => env!("CARGO_BIN_EXE_mup_coord"),
        "counting" => env!("CARGO_BIN_EXE_counting"),
        "length_generalization" => env!("CARGO_BIN_EXE_length_generalization"),
        "attention_sinks" => env!("CARGO_BIN_EXE_attention_sinks"),
        "induction_heads" => env!("CARGO_BIN_EXE_induction_heads"),
        "mqar" => env!("CARGO_BIN_EXE_mqar"),
        "complexity" => env!("CARGO_BIN_EXE_complexity"),
        "reproduce" => env!("CARGO_BIN_EXE_reproduce"),
        "trace" => env!("CARGO_BIN_EXE_trace"),
        "bench" => env!("CARGO_BIN_EXE_bench"),
        "export_models" => env!("CARGO_BIN_EXE_export_models"),
        other => panic!("no binary for {other}"),
    }
}

pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name))
        .args(args)
        .output()
        .expect("run the experiment binary")
}

/// A fresh folder for one test's results, never shared with another call.
pub fn scratch(test: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("attention-lab-{test}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The single run folder under `out/<name>/`.
pub fn run_dir(out: &Path, name: &str) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(out.join(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "expected one run folder, found {runs:?}");
    runs[0].clone()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `output` must have ended with exit code 2, saying `needle` on stderr.
pub fn exited_2_saying(output: &Output, needle: &str) {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains(needle), "expected {needle:?} in {message}");
}

/// `args` on `name` must fail with exit code 2, say `needle`, and create nothing under --out.
pub fn refused(name: &str, args: &[&str], needle: &str) {
    let out = scratch(&format!("bad-{name}-{}", needle.len()));
    let results = out.join("results");
    let mut all = vec!["--out", results.to_str().unwrap()];
    all.extend_from_slice(args);
    let result = run(name, &all);
    assert_eq!(
        result.status.code(),
        Some(2),
        "{args:?}: {}",
        stderr(&result)
    );
    let message = stderr(&result);
    assert!(message.starts_with("error: "), "{message}");
    assert!(
        message.contains(needle),
        "{args:?}: expected {needle:?} in {message}"
    );
    assert_eq!(message.lines().count(), 1, "one line expected: {message}");
    assert!(!results.exists(), "{args:?} created {}", results.display());
}

/// Every run folder under `out` (the `<experiment>/<id>` folders).
pub fn run_folders(out: &Path) -> Vec<PathBuf> {
    let Ok(experiments) = std::fs::read_dir(out) else {
        return Vec::new();
    };
    experiments
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Every markdown file the repository publishes: the README and everything under `docs/`.
pub fn documents() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut docs = vec![PathBuf::from("README.md")];
    walk(Path::new("docs"), &mut docs);
    docs.sort();
    docs
}
