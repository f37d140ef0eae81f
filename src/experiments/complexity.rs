//! `complexity`: attention costs O(n²·d) time and O(n² + n·d) memory.
//!
//! The scores Q·Kᵀ are an n × n matrix per head: computing them and the weighted sum W·V takes
//! 2·2·n²·d flops, and holding them n² numbers. The projections X·W_Q, X·W_K, X·W_V and the output
//! W_O take 4·2·n·d² flops, so the n² term overtakes them at n = 2d (Vaswani et al. 2017, Table 1).
//! Fused "flash" kernels (Dao et al. 2022) never hold the n × n matrix, so their memory is O(n·d):
//! the block's fused path is measured next to its decomposed path, which holds it.

use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::block::attention::{AttentionConfig, AttentionPath};
use crate::block::softmax::{SoftmaxAxis, SoftmaxKind, masked_softmax};
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::log_log_slope;
use crate::lab::model::ModelConfig;
use crate::lab::timing::{median, mib, time_iters, to_mib};
use crate::output::plot::LineChart;
use crate::output::report::{MetricRow, Table, Verdict};
use crate::run::config::{
    Invalid, RunConfig, Validate, at_least, at_most, experiment_config, increasing, non_empty,
};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::util::device::BackendKind;
use crate::util::interrupt;
use crate::util::memory::peak_during;
use crate::util::rng::HostRng;

/// `configs/complexity.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplexityConfig {
    #[serde(default)]
    pub run: RunConfig,
    /// Sequence lengths n, ascending.
    pub sizes: Vec<usize>,
    pub d_model: usize,
    pub n_heads: usize,
    pub batch: usize,
    /// Slopes are fitted over n ≥ this.
    pub fit_from: usize,
    /// Timed repetitions per measurement (after one warm-up); the median is kept.
    pub repeats: usize,
}

impl Validate for ComplexityConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        non_empty("sizes", &self.sizes)?;
        increasing("sizes", &self.sizes)?;
        for &n in &self.sizes {
            at_least("sizes", n, 2)?;
        }
        at_least("batch", self.batch, 1)?;
        at_least("repeats", self.repeats, 1)?;
        at_most(
            "repeats",
            self.repeats,
            10_000,
            "the median settles long before",
        )?;
        let fitted = self.sizes.iter().filter(|&&n| n >= self.fit_from).count();
        if fitted < 2 {
            return Err(Invalid::new(
                "fit_from",
                format!(
                    "leaves {fitted} size(s) to fit a slope to; at least 2 of {:?} must be ≥ {}",
                    self.sizes, self.fit_from
                ),
            ));
        }
        Validate::validate(&ModelConfig::new(self.d_model, self.n_heads))
    }
}

experiment_config!(ComplexityConfig);

/// Everything measured at one n. Times in milliseconds, memory in bytes (`None` where the
/// backend keeps tensors outside the host heap).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub n: usize,
    /// The block's forward pass, decomposed: projections, scores, softmax, weighted sum, W_O.
    pub forward_ms: f64,
    /// Forward and backward through the decomposed block.
    pub train_ms: f64,
    /// The four projections alone (the n·d² term).
    pub projections_ms: f64,
    /// Scores, softmax and weighted sum alone (the n²·d term).
    pub core_ms: f64,
    /// Forward and backward through the block on its fused path (the same weights and input).
    pub fused_ms: f64,
    pub forward_bytes: Option<usize>,
    pub train_bytes: Option<usize>,
    pub fused_bytes: Option<usize>,
}

/// Measures one n. `device` is plain, `autodiff` the same device with autodiff.
pub fn measure(
    config: &ComplexityConfig,
    n: usize,
    device: &Device,
    autodiff: &Device,
    host_memory: bool,
) -> Result<Point, RunError> {
    let (b, d, h) = (config.batch, config.d_model, config.n_heads);
    let d_k = d / h;
    let decomposed = AttentionConfig::new(d, h)
        .with_seed(config.run.seed)
        .with_path(AttentionPath::Decomposed);
    let block = decomposed.init(device)?;
    let trainable = decomposed.init(autodiff)?;
    let fused_block = decomposed
        .clone()
        .with_path(AttentionPath::Fused)
        .init(autodiff)?;
    let mut rng = HostRng::new(config.run.seed ^ n as u64);
    let x = rng.normal_tensor([b, n, d], 1.0, device); // [b, n, d_model]
    let x_train = Tensor::<3>::from_data(x.clone().into_data(), autodiff); // [b, n, d_model]
    let q = rng.normal_tensor([b, h, n, d_k], 1.0, device); // [b, heads, n, d_k]
    let k = rng.normal_tensor([b, h, n, d_k], 1.0, device); // [b, heads, n, d_k]
    let v = rng.normal_tensor([b, h, n, d_k], 1.0, device); // [b, heads, n, d_k]
    let scale = (d_k as f64).sqrt();
    let heads = Tensor::<3>::zeros([b, n, h * d_k], device); // [b, n, heads·d_k]

    let forward = || {
        let _ = block.forward(x.clone()).context;
    };
    let train = || {
        let out = trainable.forward(x_train.clone()).context;
        let _ = out.powf_scalar(2.0).mean().backward();
    };
    let projections = || {
        for w in [&block.query, &block.key, &block.value]
            .into_iter()
            .flatten()
        {
            let _ = w.forward(x.clone()); // [b, n, heads·d_k]
        }
        if let Some(w_o) = &block.output {
            let _ = w_o.forward(heads.clone()); // [b, n, d_model]
        }
    };
    let core = || {
        let scores = q
            .clone()
            .matmul(k.clone().swap_dims(2, 3))
            .div_scalar(scale); // [b, heads, n, n]
        let _ =
            masked_softmax(scores, None, SoftmaxAxis::Row, SoftmaxKind::Standard).matmul(v.clone()); // [b, heads, n, d_k]
    };
    let fused = || {
        let out = fused_block.forward(x_train.clone()).context;
        let _ = out.powf_scalar(2.0).mean().backward();
    };
    let time = |step: &dyn Fn(), on: &Device| {
        time_iters(on, &step, 1); // warm-up
        median(
            (0..config.repeats)
                .map(|_| time_iters(on, &step, 1))
                .collect(),
        )
    };
    let bytes = |step: &dyn Fn(), on: &Device| {
        host_memory.then(|| {
            peak_during(|| {
                step();
                on.sync().expect("device sync");
            })
            .1
        })
    };
    Ok(Point {
        n,
        forward_ms: time(&forward, device),
        train_ms: time(&train, autodiff),
        projections_ms: time(&projections, device),
        core_ms: time(&core, device),
        fused_ms: time(&fused, autodiff),
        forward_bytes: bytes(&forward, device),
        train_bytes: bytes(&train, autodiff),
        fused_bytes: bytes(&fused, autodiff),
    })
}

/// The n at which `above` first exceeds `below`, interpolated on log–log axes between the two
/// sizes that bracket the crossing; `None` if it never does (or already does at the first n).
pub fn crossover(points: &[(f64, f64, f64)]) -> Option<f64> {
    points.windows(2).find_map(|w| {
        let ((n0, a0, b0), (n1, a1, b1)) = (w[0], w[1]);
        let (g0, g1) = ((a0 / b0).ln(), (a1 / b1).ln());
        (g0 <= 0.0 && g1 > 0.0).then(|| (n0.ln() + (n1.ln() - n0.ln()) * (-g0) / (g1 - g0)).exp())
    })
}

/// The experiment.
pub struct Complexity;

impl Experiment for Complexity {
    const NAME: &'static str = "complexity";
    const TIMED: bool = true;
    const TITLE: &'static str = "attention costs O(n²·d) time and O(n² + n·d) memory";
    const CLAIM: &'static str = "The seed lesson claims that self-attention takes O(n²·d) time and \
        O(n² + n·d) memory in the sequence length n. This measures the block's forward and \
        forward+backward time and its peak memory over n at a fixed d, fits the log–log slope \
        over the large-n range (2 means quadratic), finds where the n² part (scores, softmax, \
        weighted sum) overtakes the n·d² projections (expected near n = 2d), and measures the \
        block's fused path (FlashAttention: the n × n matrix is never held) next to its \
        decomposed path: its memory should grow as n, its time still as n².";
    type Config = ComplexityConfig;

    fn footprint(config: &ComplexityConfig) -> Footprint {
        let largest = config.sizes.iter().copied().max().unwrap_or(0);
        footprint::block(
            "the largest n",
            config.d_model,
            config.n_heads,
            config.batch,
            largest,
        )
    }

    fn work(config: &ComplexityConfig) -> u64 {
        config.sizes.iter().map(|&n| (n as u64).pow(2)).sum::<u64>() / 1024
    }

    fn run(config: &ComplexityConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        let kind = config.run.backend_kind().unwrap_or_default();
        let host_memory = matches!(kind, BackendKind::Flex | BackendKind::Ndarray);
        let mut points = Vec::with_capacity(config.sizes.len());
        for &n in &config.sizes {
            // No training loop here to notice Ctrl-C, so each size checks.
            interrupt::check()?;
            notebook.status(format!("n = {n}"));
            let started = Instant::now();
            let p = measure(config, n, &notebook.device, &notebook.autodiff, host_memory)?;
            notebook.say(format!(
                "n = {n}: forward {:.3} ms, forward+backward {:.3} ms, fused forward+backward {:.3} ms ({:.1} s)",
                p.forward_ms,
                p.train_ms,
                p.fused_ms,
                started.elapsed().as_secs_f64()
            ));
            record(notebook, config, &p);
            notebook.advance((n as u64).pow(2) / 1024);
            points.push(p);
        }
        if !host_memory {
            notebook.finding(format!(
                "memory is not measured on {kind}: its tensors live in device memory, which the host allocator cannot see"
            ));
        }
        report(config, &points, notebook)
    }
}

fn record(notebook: &mut Notebook, config: &ComplexityConfig, p: &Point) {
    let label = format!("n={}", p.n);
    let mut row = |metric: &str, value: f64| {
        notebook.metric(MetricRow::new("cost", &label, metric, value).seed(config.run.seed));
    };
    row("forward_ms", p.forward_ms);
    row("train_ms", p.train_ms);
    row("projections_ms", p.projections_ms);
    row("core_ms", p.core_ms);
    row("fused_ms", p.fused_ms);
    for (metric, bytes) in [
        ("forward_bytes", p.forward_bytes),
        ("train_bytes", p.train_bytes),
        ("fused_bytes", p.fused_bytes),
    ] {
        if let Some(bytes) = bytes {
            row(metric, bytes as f64);
        }
    }
}

/// The log–log slopes of every measured quantity over n ≥ `fit_from`, by name, so that no verdict
/// picks its number by position. Times are always measured; memory only on a host backend.
#[derive(Debug, Clone, Copy)]
struct Slopes {
    forward_time: f64,
    train_time: f64,
    fused_time: f64,
    core_time: f64,
    projections_time: f64,
    forward_memory: Option<f64>,
    train_memory: Option<f64>,
    fused_memory: Option<f64>,
}

impl Slopes {
    /// The slopes over `large`, the points the fit uses.
    fn fit(large: &[&Point]) -> Self {
        let slope = |f: &dyn Fn(&Point) -> Option<f64>| {
            let pts: Option<Vec<(f64, f64)>> = large
                .iter()
                .map(|p| f(p).map(|y| (p.n as f64, y)))
                .collect();
            pts.map(|pts| log_log_slope(&pts))
        };
        let time =
            |f: fn(&Point) -> f64| slope(&|p| Some(f(p))).expect("times are always measured");
        let bytes = |f: fn(&Point) -> Option<usize>| slope(&|p| f(p).map(|b| b as f64));
        Self {
            forward_time: time(|p| p.forward_ms),
            train_time: time(|p| p.train_ms),
            fused_time: time(|p| p.fused_ms),
            core_time: time(|p| p.core_ms),
            projections_time: time(|p| p.projections_ms),
            forward_memory: bytes(|p| p.forward_bytes),
            train_memory: bytes(|p| p.train_bytes),
            fused_memory: bytes(|p| p.fused_bytes),
        }
    }

    /// Each slope with its name in the report, in the table's order.
    fn named(&self) -> [(&'static str, Option<f64>); 8] {
        [
            ("forward time", Some(self.forward_time)),
            ("forward+backward time", Some(self.train_time)),
            ("fused forward+backward time", Some(self.fused_time)),
            ("scores+softmax+sum time", Some(self.core_time)),
            ("projections time", Some(self.projections_time)),
            ("forward memory", self.forward_memory),
            ("forward+backward memory", self.train_memory),
            ("fused forward+backward memory", self.fused_memory),
        ]
    }
}

/// What the report is drawn from: the points, the ones the slopes are fitted over, the slopes,
/// and where the n² part first takes longer than the projections.
struct Fit<'a> {
    points: &'a [Point],
    large: Vec<&'a Point>,
    slopes: Slopes,
    crossover: Option<f64>,
}

impl<'a> Fit<'a> {
    fn new(config: &ComplexityConfig, points: &'a [Point]) -> Self {
        let large: Vec<&Point> = points.iter().filter(|p| p.n >= config.fit_from).collect();
        let slopes = Slopes::fit(&large);
        let crossover = crossover(
            &points
                .iter()
                .map(|p| (p.n as f64, p.core_ms, p.projections_ms))
                .collect::<Vec<_>>(),
        );
        Self {
            points,
            large,
            slopes,
            crossover,
        }
    }

    fn last(&self) -> &'a Point {
        &self.points[self.points.len() - 1]
    }
}

/// Show, judge, summarise.
fn report(
    config: &ComplexityConfig,
    points: &[Point],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let fit = Fit::new(config, points);
    show(config, &fit, notebook)?;
    judge(config, &fit, notebook);
    summarise(config, &fit, notebook);
    Ok(())
}

/// The times and memory per n, the slopes, and both against n on log–log axes.
fn show(config: &ComplexityConfig, fit: &Fit, notebook: &mut Notebook) -> Result<(), RunError> {
    let (d, points) = (config.d_model, fit.points);
    let mut table = Table::new(
        format!(
            "Time (ms, median of {}) and peak memory (MiB) per n; d_model = {d}, {} head(s), batch {}",
            config.repeats, config.n_heads, config.batch
        ),
        &[
            "n",
            "forward",
            "forward+backward",
            "projections (n·d²)",
            "scores+softmax+sum (n²·d)",
            "fused forward+backward",
            "memory, forward",
            "memory, forward+backward",
            "memory, fused forward+backward",
        ],
    );
    for p in points {
        table.row(vec![
            p.n.to_string(),
            format!("{:.3}", p.forward_ms),
            format!("{:.3}", p.train_ms),
            format!("{:.3}", p.projections_ms),
            format!("{:.3}", p.core_ms),
            format!("{:.3}", p.fused_ms),
            mib(p.forward_bytes, 2),
            mib(p.train_bytes, 2),
            mib(p.fused_bytes, 2),
        ]);
    }
    notebook.table(table);

    let mut slope_table = Table::new(
        format!(
            "Log–log slopes over n ≥ {} (2 = quadratic, 1 = linear)",
            config.fit_from
        ),
        &["quantity", "slope"],
    );
    for (name, s) in fit.slopes.named() {
        slope_table.row(vec![
            name.to_string(),
            s.map_or("not measured".into(), |s| format!("{s:.2}")),
        ]);
    }
    notebook.table(slope_table);

    let ns: Vec<f64> = points.iter().map(|p| p.n as f64).collect();
    // An n² line through the largest measurement, for the eye.
    let quadratic = |y_last: f64| {
        let n_last = ns[ns.len() - 1];
        ns.iter()
            .map(|&n| (n, y_last * (n / n_last).powi(2)))
            .collect::<Vec<_>>()
    };
    let series = |f: fn(&Point) -> f64| {
        points
            .iter()
            .map(|p| (p.n as f64, f(p)))
            .collect::<Vec<_>>()
    };
    let last = fit.last();
    notebook.plot(
        "time_vs_n",
        "Time vs n (log–log)",
        LineChart::new(format!("Time per call, d_model = {d}"), "n", "ms")
            .log_x()
            .log_y()
            .line("forward+backward", series(|p| p.train_ms))
            .line("forward", series(|p| p.forward_ms))
            .line("fused forward+backward", series(|p| p.fused_ms))
            .line("scores+softmax+sum", series(|p| p.core_ms))
            .line("projections", series(|p| p.projections_ms))
            .reference("∝ n²", quadratic(last.train_ms))
            .to_svg(),
    )?;
    if let (Some(_), Some(train_last)) = (last.forward_bytes, last.train_bytes) {
        let bytes = |f: fn(&Point) -> Option<usize>| {
            points
                .iter()
                .filter_map(|p| f(p).map(|b| (p.n as f64, to_mib(b))))
                .collect::<Vec<_>>()
        };
        notebook.plot(
            "memory_vs_n",
            "Peak memory vs n (log–log)",
            LineChart::new(
                format!("Peak host memory per call, d_model = {d}"),
                "n",
                "MiB",
            )
            .log_x()
            .log_y()
            .line("forward+backward", bytes(|p| p.train_bytes))
            .line("forward", bytes(|p| p.forward_bytes))
            .line("fused forward+backward", bytes(|p| p.fused_bytes))
            .reference("∝ n²", quadratic(to_mib(train_last)))
            .to_svg(),
        )?;
    }
    Ok(())
}

/// Quadratic time on both paths, linear memory on the fused one, quadratic on the decomposed
/// one, and where the n² part overtakes the projections.
fn judge(config: &ComplexityConfig, fit: &Fit, notebook: &mut Notebook) {
    let (slopes, last, first_large) = (&fit.slopes, fit.last(), fit.large[0]);
    // Quadratic means the fitted exponent is nearer 2 than 1 or 3: what separates O(n²) from
    // O(n) and O(n³). Caches make the large-n slope of a CPU wander a little above 2.
    let quadratic = |slope: f64| (1.5..2.5).contains(&slope);
    let time_slope = slopes.train_time;
    notebook.verdict(Verdict::new(
        "time grows quadratically in n at large n",
        quadratic(time_slope),
        format!(
            "forward+backward slope {time_slope:.2} over n = {}…{} (quadratic = nearer 2 than 1 or 3); forward {:.2}",
            first_large.n, last.n, slopes.forward_time
        ),
    ));
    let fused_time = slopes.fused_time;
    notebook.verdict(Verdict::new(
        "fused path: time grows quadratically in n at large n",
        quadratic(fused_time),
        format!(
            "fused forward+backward slope {fused_time:.2} over n = {}…{}: it still computes every score, it only does not keep them",
            first_large.n, last.n
        ),
    ));
    if let (Some(fused), Some(decomposed)) = (slopes.fused_memory, slopes.train_memory) {
        // Linear means nearer 1 than 2: what tells O(n·d) from O(n²).
        notebook.verdict(Verdict::new(
            "fused path: memory grows linearly in n",
            fused < 1.5,
            format!(
                "fused forward+backward peak-memory slope {fused:.2} (linear = nearer 1 than 2), against {decomposed:.2} for the decomposed path; at n = {}: {} MiB fused, {} MiB decomposed",
                last.n,
                mib(last.fused_bytes, 2),
                mib(last.train_bytes, 2)
            ),
        ));
    }
    if let Some(memory_slope) = slopes.train_memory {
        notebook.verdict(Verdict::new(
            "memory grows quadratically in n at large n",
            quadratic(memory_slope),
            format!(
                "forward+backward peak-memory slope {memory_slope:.2} (quadratic = nearer 2 than 1 or 3); {:.1} bytes per score entry at n = {}",
                last.train_bytes.unwrap_or(0) as f64
                    / (config.batch * config.n_heads * last.n * last.n) as f64,
                last.n
            ),
        ));
    }
    let (cross, expected) = (fit.crossover, crossover_estimate(config));
    let first = &fit.points[0];
    notebook.verdict(Verdict::new(
        format!("the n² part overtakes the projections near n = 2·d_model = {expected}"),
        cross.is_some_and(|c| c / expected > 0.25 && c / expected < 4.0),
        match cross {
            Some(c) => format!(
                "scores+softmax+sum first takes longer than the projections at n ≈ {c:.0} (interpolated), {:.2}× the flop-count estimate 2d = {expected} (near = within 4×)",
                c / expected
            ),
            None => format!(
                "no crossing inside n = {}…{}: the n² part is {} throughout",
                first.n,
                last.n,
                if first.core_ms > first.projections_ms { "slower" } else { "faster" }
            ),
        },
    ));
}

/// The flop-count estimate of the crossover, n = 2d (see the module's comment).
fn crossover_estimate(config: &ComplexityConfig) -> f64 {
    2.0 * config.d_model as f64
}

/// The points, the slopes by name and the crossover, for `summary.json`.
fn summarise(config: &ComplexityConfig, fit: &Fit, notebook: &mut Notebook) {
    notebook.summarize("points", fit.points);
    notebook.summarize(
        "slopes",
        fit.slopes
            .named()
            .iter()
            .map(|(n, s)| (n.to_string(), *s))
            .collect::<std::collections::BTreeMap<_, _>>(),
    );
    notebook.summarize(
        "crossover",
        serde_json::json!({"measured": fit.crossover, "flop_count": crossover_estimate(config)}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossover_interpolates_on_log_axes() {
        // a/b goes 0.5 → 2 between n = 100 and 400: equal at the geometric midpoint, 200.
        let c = crossover(&[(100.0, 1.0, 2.0), (400.0, 4.0, 2.0)]).unwrap();
        assert!((c - 200.0).abs() < 1e-9, "{c}");
        assert_eq!(crossover(&[(1.0, 3.0, 2.0), (2.0, 4.0, 2.0)]), None);
    }
}
