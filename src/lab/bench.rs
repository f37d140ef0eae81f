//! The speed benchmark: forward+backward time of our block against burn-nn's
//! `MultiHeadAttention`, on the same device, in the same run.
//!
//! Both get the same weights, biases on, dropout 0 and no mask, so they do the same arithmetic;
//! any gap is overhead in how the block is written.

use std::time::{Duration, Instant};

use burn::nn::attention::MhaInput;
use burn::prelude::*;

use crate::block::attention::AttentionConfig;
use crate::lab::footprint::{self, Footprint};
use crate::util::rng::HostRng;

/// One line of the benchmark table.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    pub n: usize,
    /// Milliseconds per forward+backward of our block.
    pub ours_ms: f64,
    /// The same for burn-nn's `MultiHeadAttention`.
    pub burn_ms: f64,
}

impl BenchRow {
    /// ours / burn: below 1 means our block is faster.
    pub fn ratio(&self) -> f64 {
        self.ours_ms / self.burn_ms
    }
}

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
}

impl BenchSetup {
    /// The memory of the largest size: our block and burn-nn's side by side, each through
    /// forward and backward.
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
            sizes: vec![16, 64, 128, 512, 1024],
            budget: Duration::from_millis(1500),
            min_iters: 5,
        }
    }
}

/// Runs the benchmark on `device` (autodiff is added if missing), calling `progress` after each
/// size.
pub fn run(
    setup: &BenchSetup,
    device: &Device,
    mut progress: impl FnMut(&BenchRow),
) -> Vec<BenchRow> {
    let device = device.clone().autodiff();
    let ours = AttentionConfig::new(setup.d_model, setup.n_heads)
        .with_bias(true)
        .init(&device)
        .expect("benchmark config is valid");
    let theirs = ours
        .burn_nn_twin()
        .expect("the benchmark block is plain multi-head attention");

    let mut rng = HostRng::new(1);
    let mut rows = Vec::new();
    for &n in &setup.sizes {
        let x = rng.normal_tensor([setup.batch, n, setup.d_model], 1.0, &device);
        let ours_step = || {
            let out = ours.forward(x.clone());
            let _grads = out.context.powf_scalar(2.0).mean().backward();
        };
        let theirs_step = || {
            let out = theirs.forward(MhaInput::self_attn(x.clone()));
            let _grads = out.context.powf_scalar(2.0).mean().backward();
        };
        // Alternate the two, and which goes first, so drift in machine load falls on both alike.
        let (mut ours_t, mut theirs_t) = (Vec::new(), Vec::new());
        time_iters(&device, &ours_step, 3);
        time_iters(&device, &theirs_step, 3);
        let started = Instant::now();
        while ours_t.len() < setup.min_iters || started.elapsed() < setup.budget * 2 {
            if ours_t.len() % 2 == 0 {
                ours_t.push(time_iters(&device, &ours_step, 1));
                theirs_t.push(time_iters(&device, &theirs_step, 1));
            } else {
                theirs_t.push(time_iters(&device, &theirs_step, 1));
                ours_t.push(time_iters(&device, &ours_step, 1));
            }
        }
        let row = BenchRow {
            n,
            ours_ms: median(ours_t),
            burn_ms: median(theirs_t),
        };
        progress(&row);
        rows.push(row);
    }
    rows
}

/// Milliseconds per iteration of `step`, waiting for the device to finish.
pub fn time_iters(device: &Device, step: &impl Fn(), iters: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        step();
    }
    device.sync().expect("device sync");
    start.elapsed().as_secs_f64() * 1e3 / iters as f64
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    }
}

/// The table as markdown.
pub fn table(rows: &[BenchRow]) -> String {
    let mut out =
        String::from("| n | ours ms | burn-nn MHA ms | ours / burn |\n|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:.2} |\n",
            r.n,
            r.ours_ms,
            r.burn_ms,
            r.ratio()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
