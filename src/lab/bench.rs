//! The speed benchmark: forward+backward time and peak memory of the block on its fused path,
//! on its decomposed path and as burn-nn's `MultiHeadAttention`, on the same device, in the same
//! run; optionally paired with a PyTorch peer; and ms per Adam step of the tiny transformer.
//! It measures and returns rows; the `bench` binary shows them as tables (`run/bench.rs`).
//!
//! All three block variants get the same weights, biases on, dropout 0 and no mask, so they do the
//! same arithmetic; any gap is in how the attention is computed.

use std::time::{Duration, Instant};

use burn::nn::attention::MhaInput;
use burn::prelude::*;

use crate::block::attention::{AttentionConfig, AttentionPath};
use crate::block::flash;
use crate::lab::footprint::{self, Footprint};
use crate::lab::model::ModelConfig;
use crate::lab::tasks::{Task, TaskConfig, TaskError, TaskKind};
use crate::lab::timing::{median, time_iters};
use crate::lab::train::{TrainConfig, TrainError, train};
use crate::util::memory::peak_during;
use crate::util::rng::HostRng;

/// Which code the timed ops run on this CPU: `gemm`'s kernels for flex's matmuls (chosen by
/// `gemm` per process: its AVX-512 ones where the CPU has AVX-512F, since our dependency enables
/// `x86-v4`, else AVX2 + FMA, else its portable ones), the fused kernel's level
/// ([`flash::Simd::detected`]: its own tile products at AVX-512, gemm's below, and its
/// element-wise loops), and whether malloc keeps freed memory
/// ([`crate::util::memory::keeps_freed_memory`]). Timings hold only for machines on the same
/// paths.
pub fn code_paths() -> String {
    // gemm decides by the CPU alone; ATTENTION_LAB_SIMD caps only the kernel's own loops.
    let gemm = match flash::Simd::available().into_iter().max() {
        Some(flash::Simd::Avx512) => "AVX-512",
        Some(flash::Simd::Avx2) => "AVX2 + FMA",
        _ => "portable",
    };
    let level = flash::Simd::detected();
    let products = if level == flash::Simd::Avx512 {
        "its own AVX-512 tile products".to_string()
    } else {
        format!("gemm's {gemm} tile products")
    };
    let malloc = if crate::util::memory::keeps_freed_memory() {
        "keeps freed memory"
    } else {
        "glibc's defaults or another allocator"
    };
    format!(
        "flex's matmuls on gemm's {gemm} kernels; the fused kernel with {products} and its \
         exponentials, maxima and dS at {level}; malloc: {malloc}"
    )
}

/// A PyTorch peer's times at one n (its own medians), in ms per forward+backward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerTimes {
    pub eager_ms: f64,
    pub sdpa_ms: f64,
}

/// One line of the benchmark table.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    pub n: usize,
    /// Milliseconds per forward+backward of the block on its fused path.
    pub fused_ms: f64,
    /// The same on its decomposed path.
    pub decomposed_ms: f64,
    /// The same for burn-nn's `MultiHeadAttention`.
    pub burn_ms: f64,
    /// Peak host bytes of one forward+backward (`None` off the host heap: a GPU backend).
    pub fused_bytes: Option<usize>,
    pub decomposed_bytes: Option<usize>,
    pub burn_bytes: Option<usize>,
    /// The PyTorch peer, median over its runs, when one was given.
    pub peer: Option<PeerTimes>,
}

impl BenchRow {
    /// fused / decomposed: below 1 means the fused path is faster.
    pub fn fused_vs_decomposed(&self) -> f64 {
        self.fused_ms / self.decomposed_ms
    }

    /// fused / burn-nn.
    pub fn fused_vs_burn(&self) -> f64 {
        self.fused_ms / self.burn_ms
    }

    /// fused / PyTorch eager and fused / PyTorch SDPA.
    pub fn fused_vs_peer(&self) -> Option<(f64, f64)> {
        self.peer
            .map(|p| (self.fused_ms / p.eager_ms, self.fused_ms / p.sdpa_ms))
    }

    /// Decomposed peak memory over fused peak memory.
    pub fn memory_saving(&self) -> Option<f64> {
        match (self.decomposed_bytes, self.fused_bytes) {
            (Some(d), Some(f)) if f > 0 => Some(d as f64 / f as f64),
            _ => None,
        }
    }
}

/// Iterations of one path timed back to back in its turn, after one untimed iteration.
///
/// The PyTorch peer times each of its paths back to back after a warm-up; switching paths on
/// every iteration, as `bench` did before, timed only the first iteration after a switch, which
/// is the slowest: at n = 512 on 2 cores the fused block took about 11 ms right after a
/// decomposed step and under 7 ms from its third iteration on, while at n = 128 the order made
/// no difference. So both sides are now timed the same way: warm, back to back, medians.
pub const BURST: usize = 3;

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSetup {
    pub batch: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub sizes: Vec<usize>,
    /// Time spent measuring each implementation at each size (after warm-up).
    pub budget: Duration,
    /// Fewest timed iterations, however long they take.
    pub min_iters: usize,
    /// Runs of the peer per size, alternated with slices of our own timing.
    pub peer_runs: usize,
}

impl BenchSetup {
    /// The memory of the largest size: the three variants' graphs are not alive at once, so the
    /// decomposed one (the largest) bounds it, twice for safety.
    pub fn footprint(&self) -> Footprint {
        let largest = self.sizes.iter().copied().max().unwrap_or(0);
        let one = footprint::block(
            "the largest size",
            self.d_model,
            self.n_heads,
            self.batch,
            largest,
        );
        Footprint::new(2.0 * one.bytes, one.what)
    }
}

impl Default for BenchSetup {
    fn default() -> Self {
        Self {
            batch: 4,
            d_model: 64,
            n_heads: 1,
            sizes: vec![16, 64, 128, 512, 1024, 2048, 4096],
            budget: Duration::from_millis(1500),
            min_iters: 5,
            peer_runs: 3,
        }
    }
}

/// Why the benchmark stopped: a peer that failed or printed something else, or a training case
/// that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("peer `{line}` could not start: {error}")]
    PeerStart { line: String, error: std::io::Error },
    #[error("peer `{line}` failed ({status}): {last}")]
    PeerFailed {
        line: String,
        status: std::process::ExitStatus,
        last: String,
    },
    #[error("peer `{peer}` printed `{line}`, expected {want} numbers")]
    PeerOutput {
        peer: String,
        line: String,
        want: usize,
    },
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// A peer at one n: its times, or why it failed.
pub type Peer<'a> = &'a mut dyn FnMut(usize) -> Result<PeerTimes, BenchError>;

/// Runs the benchmark on `device` (autodiff is added if missing), calling `progress` after each
/// size. `host_memory` says whether the device's tensors live on the host heap, where the peak
/// can be counted.
pub fn run(
    setup: &BenchSetup,
    device: &Device,
    host_memory: bool,
    mut peer: Option<Peer>,
    mut progress: impl FnMut(&BenchRow),
) -> Result<Vec<BenchRow>, BenchError> {
    let device = device.clone().autodiff();
    let config = AttentionConfig::new(setup.d_model, setup.n_heads).with_bias(true);
    let fused = config
        .clone()
        .with_path(AttentionPath::Fused)
        .init(&device)
        .expect("benchmark config is valid");
    let decomposed = config
        .with_path(AttentionPath::Decomposed)
        .init(&device)
        .expect("benchmark config is valid");
    let theirs = decomposed
        .burn_nn_twin()
        .expect("the benchmark block is plain multi-head attention");

    let mut rng = HostRng::new(1);
    let mut rows = Vec::new();
    for &n in &setup.sizes {
        let x = rng.normal_tensor([setup.batch, n, setup.d_model], 1.0, &device);
        let fused_step = || {
            let out = fused.forward(x.clone());
            let _grads = out.context.powf_scalar(2.0).mean().backward();
        };
        let decomposed_step = || {
            let out = decomposed.forward(x.clone());
            let _grads = out.context.powf_scalar(2.0).mean().backward();
        };
        let theirs_step = || {
            let out = theirs.forward(MhaInput::self_attn(x.clone()));
            let _grads = out.context.powf_scalar(2.0).mean().backward();
        };
        let steps: [&dyn Fn(); 3] = [&fused_step, &decomposed_step, &theirs_step];
        for step in steps {
            time_iters(&device, &step, 2); // warm-up
        }
        // Rotate which goes first, so drift in machine load falls on all alike; hand the peer
        // the machine between slices, so that it sees the same drift. Each turn is one untimed
        // iteration, then `BURST` timed back to back, the way the peer times each of its paths
        // after its warm-up (see `BURST`).
        let mut times: [Vec<f64>; 3] = Default::default();
        let mut peer_times = Vec::new();
        let slices = if peer.is_some() { setup.peer_runs } else { 1 };
        for slice in 0..slices {
            let started = Instant::now();
            let mut round = 0;
            while times[0].len() < setup.min_iters * (slice + 1) / slices
                || started.elapsed() < setup.budget * 3 / slices as u32
            {
                for i in 0..3 {
                    let which = (i + round) % 3;
                    time_iters(&device, &steps[which], 1);
                    for _ in 0..BURST {
                        times[which].push(time_iters(&device, &steps[which], 1));
                    }
                }
                round += 1;
            }
            if let Some(peer) = peer.as_mut() {
                peer_times.push(peer(n)?);
            }
        }
        let bytes = |step: &dyn Fn()| {
            host_memory.then(|| {
                peak_during(|| {
                    step();
                    device.sync().expect("device sync");
                })
                .1
            })
        };
        let [fused_t, decomposed_t, burn_t] = times;
        let row = BenchRow {
            n,
            fused_ms: median(fused_t),
            decomposed_ms: median(decomposed_t),
            burn_ms: median(burn_t),
            fused_bytes: bytes(&fused_step),
            decomposed_bytes: bytes(&decomposed_step),
            burn_bytes: bytes(&theirs_step),
            peer: (!peer_times.is_empty()).then(|| PeerTimes {
                eager_ms: median(peer_times.iter().map(|p| p.eager_ms).collect()),
                sdpa_ms: median(peer_times.iter().map(|p| p.sdpa_ms).collect()),
            }),
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The worst (largest) of `ratios` with the n it occurred at.
pub fn worst(rows: &[BenchRow], ratio: impl Fn(&BenchRow) -> Option<f64>) -> Option<(f64, usize)> {
    rows.iter()
        .filter_map(|r| ratio(r).map(|x| (x, r.n)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// The worst-ratio lines under the block table: one per comparison, each with its n.
pub fn worst_lines(rows: &[BenchRow]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = |what: &str, w: Option<(f64, usize)>, target: &str| {
        if let Some((x, n)) = w {
            lines.push(format!("worst {what}: {x:.2} at n = {n} ({target})"));
        }
    };
    line(
        "fused / decomposed",
        worst(rows, |r| Some(r.fused_vs_decomposed())),
        "below 1 = fused faster",
    );
    line(
        "fused / burn-nn",
        worst(rows, |r| Some(r.fused_vs_burn())),
        "below 1 = fused faster",
    );
    line(
        "fused / torch eager",
        worst(rows, |r| r.fused_vs_peer().map(|p| p.0)),
        "target ≤ 1 at every n",
    );
    line(
        "fused / torch SDPA at n ≥ 512",
        worst(rows, |r| {
            r.fused_vs_peer().filter(|_| r.n >= 512).map(|p| p.1)
        }),
        "target ≤ 1",
    );
    // Memory: the smallest saving is the worst one.
    if let Some((saving, n)) = rows
        .iter()
        .filter_map(|r| r.memory_saving().map(|s| (s, r.n)))
        .filter(|&(_, n)| n >= 1024)
        .min_by(|a, b| a.0.total_cmp(&b.0))
    {
        lines.push(format!(
            "smallest memory saving at n ≥ 1024: decomposed / fused = {saving:.1}× at n = {n} (target ≥ 8× at n = 4096)"
        ));
    }
    lines
}

/// One training-step case: a model and task at an experiment's shapes.
#[derive(Debug, Clone)]
pub struct TrainCase {
    pub label: String,
    pub model: ModelConfig,
    pub task: TaskConfig,
    pub train: TrainConfig,
    /// The arguments that make the PyTorch peer train the same shapes, when it can.
    pub peer_args: Option<Vec<String>>,
}

/// The shapes of `configs/dk_vs_dmodel.toml` (h = 1, 4, 16) and `configs/scaling.toml`
/// (d_k = 16, 256, one head), `steps` Adam steps each, recording every 5th step as they do.
pub fn train_cases(steps: usize) -> Vec<TrainCase> {
    let mut train = TrainConfig::new(steps, 32, 1e-3);
    train.log_every = 5;
    let recall = |length, keys| TaskConfig {
        keys: Some(keys),
        ..TaskConfig::new(TaskKind::Recall, length, 8)
    };
    let mut cases = Vec::new();
    for h in [1, 4, 16] {
        let model = ModelConfig {
            d_ff: Some(128),
            ..ModelConfig::new(128, h)
        };
        cases.push(TrainCase {
            label: format!("dk_vs_dmodel h = {h} (d_model 128, d_k {})", 128 / h),
            model,
            task: recall(8, 16),
            train: train.clone(),
            peer_args: Some(vec!["128".into(), h.to_string()]),
        });
    }
    for d_k in [16, 256] {
        let model = ModelConfig {
            d_k: Some(d_k),
            d_ff: Some(64),
            ..ModelConfig::new(32, 1)
        };
        cases.push(TrainCase {
            label: format!("scaling d_k = {d_k} (d_model 32, one head)"),
            model,
            task: recall(6, 12),
            train: train.clone(),
            // The peer sets d_k = d_model / h and d_ff = d_model: it has no such shape.
            peer_args: None,
        });
    }
    cases
}

/// One line of the training table: ms per Adam step on each path, and the peer's.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRow {
    pub label: String,
    pub fused_ms: f64,
    pub decomposed_ms: f64,
    pub peer_ms: Option<f64>,
}

/// ms per step of `case` on `device` with `path`: the time between the first recorded step
/// (past the warm-up) and the last, over the steps between.
pub fn time_training(
    case: &TrainCase,
    path: AttentionPath,
    device: &Device,
) -> Result<f64, BenchError> {
    let model = ModelConfig {
        attention_path: path,
        ..case.model.clone()
    };
    let task = Task::new(case.task.clone())?;
    let warm_up = case.train.steps / 5;
    let mut started = None;
    let mut last = None;
    train(&model, &task, &case.train, 0, device, &mut |step| {
        if step + 1 == warm_up.max(1) {
            started = Some(Instant::now());
        } else if started.is_some() {
            last = Some((step, Instant::now()));
        }
    })?;
    device.sync().expect("device sync");
    let (Some(start), Some((end_step, end))) = (started, last) else {
        return Ok(f64::NAN);
    };
    Ok((end - start).as_secs_f64() * 1e3 / (end_step + 1 - warm_up.max(1)) as f64)
}

/// Times every case on both paths, and the training peer where it has the case's shapes,
/// calling `progress` after each case.
pub fn time_cases(
    cases: Vec<TrainCase>,
    device: &Device,
    peer: Option<&str>,
    mut progress: impl FnMut(&TrainRow),
) -> Result<Vec<TrainRow>, BenchError> {
    let mut rows = Vec::with_capacity(cases.len());
    for case in cases {
        let fused_ms = time_training(&case, AttentionPath::Fused, device)?;
        let decomposed_ms = time_training(&case, AttentionPath::Decomposed, device)?;
        let peer_ms = match (peer, &case.peer_args) {
            (Some(peer), Some(peer_args)) => Some(train_peer(peer, peer_args)?),
            _ => None,
        };
        let row = TrainRow {
            label: case.label,
            fused_ms,
            decomposed_ms,
            peer_ms,
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// The worst fused / peer ratio per training step, with its case.
pub fn worst_train_line(rows: &[TrainRow]) -> Option<String> {
    rows.iter()
        .filter_map(|r| r.peer_ms.map(|p| (r.fused_ms / p, &r.label)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(ratio, label)| {
            format!("worst fused / torch per step: {ratio:.2} at {label} (target ≤ 1)")
        })
}

/// Runs `command` (through `sh -c`) with `args` appended and returns its standard output's lines.
fn run_peer(command: &str, args: &[String]) -> Result<Vec<String>, BenchError> {
    let line = format!("{command} {}", args.join(" "));
    let out = match std::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .output()
    {
        Ok(out) => out,
        Err(error) => return Err(BenchError::PeerStart { line, error }),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("").to_string();
        return Err(BenchError::PeerFailed {
            line,
            status: out.status,
            last,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Numbers of a whitespace-separated line, or why not.
fn numbers(line: &str, want: usize, peer: &str) -> Result<Vec<f64>, BenchError> {
    let xs: Result<Vec<f64>, _> = line.split_whitespace().map(str::parse).collect();
    match xs {
        Ok(xs) if xs.len() == want => Ok(xs),
        _ => Err(BenchError::PeerOutput {
            peer: peer.into(),
            line: line.into(),
            want,
        }),
    }
}

/// A block peer: `command n` must print `n eager_ms sdpa_ms` (as `torch_attention.py` does).
pub fn command_peer(command: &str) -> impl FnMut(usize) -> Result<PeerTimes, BenchError> + '_ {
    move |n| {
        let lines = run_peer(command, &[n.to_string()])?;
        let last = lines.last().map(String::as_str).unwrap_or("");
        let xs = numbers(last, 3, command)?;
        Ok(PeerTimes {
            eager_ms: xs[1],
            sdpa_ms: xs[2],
        })
    }
}

/// A training peer: `command d_model h` must print `h ms_per_step` (as `torch_train.py` does).
pub fn train_peer(command: &str, args: &[String]) -> Result<f64, BenchError> {
    let lines = run_peer(command, args)?;
    let last = lines.last().map(String::as_str).unwrap_or("");
    Ok(numbers(last, 2, command)?[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_lines_name_the_n() {
        let row = |n, fused_ms, peer| BenchRow {
            n,
            fused_ms,
            decomposed_ms: 2.0,
            burn_ms: 2.0,
            fused_bytes: Some(100),
            decomposed_bytes: Some(1000),
            burn_bytes: Some(1000),
            peer,
        };
        let peer = Some(PeerTimes {
            eager_ms: 1.0,
            sdpa_ms: 0.5,
        });
        let rows = [row(16, 1.5, peer), row(1024, 1.0, peer)];
        let lines = worst_lines(&rows).join("\n");
        assert!(
            lines.contains("worst fused / torch eager: 1.50 at n = 16"),
            "{lines}"
        );
        assert!(
            lines.contains("worst fused / torch SDPA at n ≥ 512: 2.00 at n = 1024"),
            "{lines}"
        );
        assert!(lines.contains("10.0× at n = 1024"), "{lines}");
    }
}
