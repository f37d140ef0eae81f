//! `scaling`: why attention divides by √d_k.
//!
//! With q, k ~ N(0, 1) in d_k dimensions, Var(q·k) = d_k (Vaswani et al. 2017, footnote 4). Left
//! unscaled, the logits grow with d_k, the softmax saturates to one-hot, and the gradient through
//! it, whose Jacobian is diag(p) − p·pᵀ, vanishes. Dividing by √d_k keeps the logits at unit
//! variance for every d_k.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::block::scale::ScoreScale;
use crate::lab::evaluate::{HELD_OUT, describe_steps, eval_batch};
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{
    self, Spread, entropy_per_head, max_weight_per_head, norm, softmax_jacobian_norm, to_host,
};
use crate::lab::model::ModelConfig;
use crate::lab::tasks::{Task, TaskConfig};
use crate::lab::train::TrainConfig;
use crate::output::plot::LineChart;
use crate::output::report::{MetricRow, Table, Verdict};
use crate::run::config::{
    Invalid, RunConfig, Validate, at_least, experiment_config, increasing, non_empty, validate_in,
    within_steps,
};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::run::training::train_seeds;
use crate::util::rng::HostRng;

/// `configs/scaling.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingConfig {
    #[serde(default)]
    pub run: RunConfig,
    /// Part A: measurements at initialisation.
    pub init: InitSweep,
    /// Part B: which (d_k, scale) pairs are trained.
    pub sweep: TrainSweep,
    pub task: TaskConfig,
    /// The model; its `d_k` and `scale` are set by the sweep.
    pub model: ModelConfig,
    pub train: TrainConfig,
}

/// Part A's grid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSweep {
    pub d_k: Vec<usize>,
    pub scales: Vec<ScoreScale>,
    /// Tokens per sequence (queries = keys = n).
    pub n_tokens: usize,
    /// Sequences drawn per d_k.
    pub batch: usize,
}

/// Part B's grid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSweep {
    pub d_k: Vec<usize>,
    pub scales: Vec<ScoreScale>,
    /// The step at which losses are compared. Default: the last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_at: Option<usize>,
}

impl Validate for ScalingConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        non_empty("init.d_k", &self.init.d_k)?;
        increasing("init.d_k", &self.init.d_k)?;
        non_empty("init.scales", &self.init.scales)?;
        for &d_k in &self.init.d_k {
            at_least("init.d_k", d_k, 1)?;
        }
        at_least("init.n_tokens", self.init.n_tokens, 2)?;
        at_least("init.batch", self.init.batch, 1)?;
        non_empty("sweep.d_k", &self.sweep.d_k)?;
        increasing("sweep.d_k", &self.sweep.d_k)?;
        non_empty("sweep.scales", &self.sweep.scales)?;
        within_steps("sweep.compare_at", self.sweep.compare_at, self.train.steps)?;
        validate_in("task", &self.task)?;
        validate_in("train", &self.train)?;
        for &d_k in &self.sweep.d_k {
            at_least("sweep.d_k", d_k, 1)?;
            for &scale in &self.sweep.scales {
                validate_in("model", &self.model_for(d_k, scale))?;
            }
        }
        Ok(())
    }
}

experiment_config!(ScalingConfig);

impl ScalingConfig {
    fn model_for(&self, d_k: usize, scale: ScoreScale) -> ModelConfig {
        ModelConfig {
            d_k: Some(d_k),
            scale,
            ..self.model.clone()
        }
    }
}

/// Part A at one (d_k, scale).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InitPoint {
    pub d_k: usize,
    /// Var(q·k) / d_k, before any scaling: ≈ 1 when the entries are N(0, 1).
    pub qk_var_over_dk: f64,
    /// Var of the logits the softmax sees, q·k / s.
    pub logit_var: f64,
    /// Mean largest weight of a row.
    pub max_weight: f64,
    /// Mean row entropy, nats.
    pub entropy: f64,
    /// ‖∂L/∂z‖_F with the logits z = q·kᵀ/s as a leaf, for the fixed loss
    /// L = Σ (softmax(z)·v) ⊙ g. A few rows with near-ties keep it up even when most are saturated.
    pub grad_logits: f64,
    /// The median over query rows of ‖∂L/∂z_i‖: what a typical query receives.
    pub grad_logits_row: f64,
    /// ‖∂L/∂q‖ for the same loss, through the scaling.
    pub grad_q: f64,
}

/// Measures Part A at one point: q, k, v, g ~ N(0, 1), drawn on the host from `seed` so that
/// every backend sees the same numbers. `device` must have autodiff.
pub fn measure_init(
    d_k: usize,
    scale: ScoreScale,
    n: usize,
    batch: usize,
    seed: u64,
    device: &Device,
) -> InitPoint {
    let d_v = 16;
    let mut rng = HostRng::new(seed ^ (d_k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let q = rng.normal_tensor([batch, n, d_k], 1.0, device);
    let k = rng.normal_tensor([batch, n, d_k], 1.0, device);
    let v = rng.normal_tensor([batch, n, d_v], 1.0, device);
    let g = rng.normal_tensor([batch, n, d_v], 1.0, device);
    let divisor = scale.divisor(d_k, d_k);
    // The fixed downstream loss: what a layer after attention would send back.
    let loss = |z: Tensor<3>| (softmax(z, 2).matmul(v.clone()) * g.clone()).sum();

    let scores = q.clone().matmul(k.clone().swap_dims(1, 2)).inner(); // [batch, n_q, n_k]
    let logits = scores.clone().div_scalar(divisor); // [batch, n_q, n_k]
    let weights = softmax(logits.clone(), 2).unsqueeze_dim::<4>(1); // [batch, 1, n_q, n_k]

    let leaf = Tensor::from_data(logits.clone().into_data(), device).require_grad();
    let grad_logits = loss(leaf.clone()).backward();
    let grad = leaf.grad(&grad_logits).expect("the leaf has a gradient"); // [batch, n_q, n_k]
    let mut rows = to_host(grad.clone().powf_scalar(2.0).sum_dim(2).sqrt()); // [batch·n_q]
    rows.sort_by(f32::total_cmp);
    let grad_logits_row = f64::from(rows[rows.len() / 2]);
    let grad_logits = norm(grad);

    let q_leaf = q.require_grad();
    let through_q = loss(q_leaf.clone().matmul(k.swap_dims(1, 2)).div_scalar(divisor)).backward();
    let grad_q = norm(q_leaf.grad(&through_q).expect("q has a gradient"));

    let var = |t: Tensor<3>| metrics::std(t).powi(2);
    InitPoint {
        d_k,
        qk_var_over_dk: var(scores) / d_k as f64,
        logit_var: var(logits),
        max_weight: max_weight_per_head(weights.clone())[0],
        entropy: entropy_per_head(weights)[0],
        grad_logits,
        grad_logits_row,
        grad_q,
    }
}

/// One row of the seed pages' saturation table: a score row before and after ÷ √64.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SaturationRow {
    pub label: String,
    pub logits: Vec<f64>,
    pub weights: Vec<f64>,
    pub jacobian_norm: f64,
}

/// The seed pages' example, [30, 25, −10, 5], unscaled and divided by √64 = 8, computed here.
pub fn saturation_table() -> Vec<SaturationRow> {
    let scores = [30.0, 25.0, -10.0, 5.0];
    [("unscaled", 1.0), ("÷ √64 = 8", 8.0)]
        .into_iter()
        .map(|(label, s)| {
            let logits: Vec<f64> = scores.iter().map(|x| x / s).collect();
            let weights = metrics::softmax(&logits);
            SaturationRow {
                label: label.to_string(),
                jacobian_norm: softmax_jacobian_norm(&weights),
                logits,
                weights,
            }
        })
        .collect()
}

/// What the seed page `002_…` prints for the scaled row, to be checked against the computation.
pub const SEED_PAGE_SCALED_ROW: [f64; 4] = [0.42, 0.32, 0.04, 0.22];

/// The experiment.
pub struct Scaling;

impl Experiment for Scaling {
    const NAME: &'static str = "scaling";
    const TITLE: &'static str = "without 1/√d_k the softmax saturates and its gradients vanish";
    const CLAIM: &'static str = "The seed lesson claims that q·k has variance d_k when q and k have \
        N(0, 1) entries, so unscaled logits grow with d_k, the softmax saturates and gradients \
        vanish, while dividing by √d_k keeps the logits at unit variance. Part A measures this at \
        initialisation over d_k; Part B trains a one-layer transformer (Adam) on one-token-per-pair \
        associative recall with and without the scale.";
    type Config = ScalingConfig;

    fn footprint(config: &ScalingConfig) -> Footprint {
        let init = &config.init;
        let part_a = init
            .d_k
            .iter()
            .map(|&d_k| footprint::block("Part A", d_k, 1, init.batch, init.n_tokens));
        let part_b = config.sweep.d_k.iter().map(|&d_k| {
            footprint::training_on(
                &config.model_for(d_k, ScoreScale::SqrtDk),
                &config.task,
                config.train.batch_size,
            )
        });
        Footprint::largest(part_a.chain(part_b))
    }

    fn work(config: &ScalingConfig) -> u64 {
        let init = config.init.d_k.len() * config.init.scales.len();
        let train = config.sweep.d_k.len()
            * config.sweep.scales.len()
            * config.run.seeds
            * config.train.steps;
        (init + train) as u64
    }

    fn run(config: &ScalingConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        part_a(config, notebook)?;
        saturation(notebook);
        part_b(config, notebook)
    }
}

/// Part A: the logits and their gradients at initialisation per (scale, d_k); show, summarise,
/// judge.
fn part_a(config: &ScalingConfig, notebook: &mut Notebook) -> Result<(), RunError> {
    let by_scale = measure_init_sweep(config, notebook);
    show_init(config, &by_scale, notebook)?;
    notebook.summarize(
        "init",
        by_scale
            .iter()
            .map(|(s, p)| (s.to_string(), p))
            .collect::<std::collections::BTreeMap<_, _>>(),
    );
    init_verdicts(&by_scale, notebook);
    Ok(())
}

fn measure_init_sweep(
    config: &ScalingConfig,
    notebook: &mut Notebook,
) -> Vec<(ScoreScale, Vec<InitPoint>)> {
    let init = &config.init;
    let mut by_scale: Vec<(ScoreScale, Vec<InitPoint>)> = Vec::new();
    for &scale in &init.scales {
        let mut points = Vec::new();
        for &d_k in &init.d_k {
            notebook.status(format!("init: d_k={d_k} scale={scale}"));
            let p = measure_init(
                d_k,
                scale,
                init.n_tokens,
                init.batch,
                config.run.seed,
                &notebook.autodiff,
            );
            let label = format!("d_k={d_k} scale={scale}");
            for (metric, value) in [
                ("qk_var_over_dk", p.qk_var_over_dk),
                ("logit_var", p.logit_var),
                ("max_weight", p.max_weight),
                ("entropy", p.entropy),
                ("grad_norm.logits", p.grad_logits),
                ("grad_norm.logits_row_median", p.grad_logits_row),
                ("grad_norm.q", p.grad_q),
            ] {
                notebook
                    .metric(MetricRow::new("init", &label, metric, value).seed(config.run.seed));
            }
            notebook.advance(1);
            points.push(p);
        }
        by_scale.push((scale, points));
    }
    by_scale
}

/// Part A's table, and the gradients and the entropy against d_k.
fn show_init(
    config: &ScalingConfig,
    by_scale: &[(ScoreScale, Vec<InitPoint>)],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let init = &config.init;
    let mut table = Table::new(
        "Part A: at initialisation (q, k ~ N(0, 1))",
        &[
            "scale",
            "d_k",
            "Var(q·k)/d_k",
            "Var(logits)",
            "max weight",
            "entropy (nats)",
            "median row ‖∂L/∂z_i‖",
            "‖∂L/∂z‖_F",
            "‖∂L/∂q‖_F",
        ],
    );
    for (scale, points) in by_scale {
        for p in points {
            table.row(vec![
                scale.to_string(),
                p.d_k.to_string(),
                format!("{:.3}", p.qk_var_over_dk),
                format!("{:.3}", p.logit_var),
                format!("{:.3}", p.max_weight),
                format!("{:.3}", p.entropy),
                format!("{:.3e}", p.grad_logits_row),
                format!("{:.3e}", p.grad_logits),
                format!("{:.3e}", p.grad_q),
            ]);
        }
    }
    notebook.table(table);
    let line = |f: fn(&InitPoint) -> f64| {
        move |points: &[InitPoint]| {
            points
                .iter()
                .map(|p| (p.d_k as f64, f(p)))
                .collect::<Vec<_>>()
        }
    };
    let mut grads = LineChart::new(
        "Gradient w.r.t. the logits at initialisation",
        "d_k",
        "gradient norm",
    )
    .log_x()
    .log_y();
    let mut grads_q = LineChart::new("‖∂L/∂q‖ at initialisation", "d_k", "gradient norm")
        .log_x()
        .log_y();
    let mut entropy = LineChart::new(
        "Attention entropy at initialisation",
        "d_k",
        "mean row entropy (nats)",
    )
    .log_x();
    for (scale, points) in by_scale {
        grads = grads.line(
            format!("{scale}: median row ‖∂L/∂z_i‖"),
            line(|p| p.grad_logits_row)(points),
        );
        grads = grads.line(
            format!("{scale}: ‖∂L/∂z‖_F, all rows"),
            line(|p| p.grad_logits)(points),
        );
        grads_q = grads_q.line(format!("scale {scale}"), line(|p| p.grad_q)(points));
        entropy = entropy.line(format!("scale {scale}"), line(|p| p.entropy)(points));
    }
    let dks: Vec<f64> = init.d_k.iter().map(|&d| d as f64).collect();
    let uniform = (init.n_tokens as f64).ln();
    entropy = entropy.reference(
        format!("uniform, ln {}", init.n_tokens),
        dks.iter().map(|&d| (d, uniform)).collect(),
    );
    notebook.plot(
        "grad_vs_dk",
        "Gradient w.r.t. the logits vs d_k",
        grads.to_svg(),
    )?;
    notebook.plot("grad_q_vs_dk", "Gradient w.r.t. q vs d_k", grads_q.to_svg())?;
    notebook.plot("entropy_vs_dk", "Entropy vs d_k", entropy.to_svg())?;
    Ok(())
}

/// The two Part A verdicts, when the sweep has the scales they compare.
fn init_verdicts(by_scale: &[(ScoreScale, Vec<InitPoint>)], notebook: &mut Notebook) {
    let find = |s: ScoreScale| by_scale.iter().find(|(x, _)| *x == s).map(|(_, p)| p);
    let (Some(none), Some(scaled)) = (find(ScoreScale::None), find(ScoreScale::SqrtDk)) else {
        notebook.finding("the init sweep needs both `none` and `sqrt-dk` scales for its verdicts");
        return;
    };
    let range = |f: &dyn Fn(&InitPoint) -> f64, ps: &[InitPoint]| {
        let v: Vec<f64> = ps.iter().map(f).collect();
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (lo, hi) = range(&|p| p.logit_var / p.d_k as f64, none);
    let (slo, shi) = range(&|p| p.logit_var, scaled);
    let tracks = lo > 0.8 && hi < 1.25;
    notebook.verdict(Verdict::new(
        "unscaled logit variance tracks d_k; scaled stays near 1",
        tracks && slo > 0.8 && shi < 1.25,
        format!(
            "unscaled Var(logits)/d_k = {lo:.3}–{hi:.3} over d_k {}–{}; scaled Var(logits) = {slo:.3}–{shi:.3}",
            none[0].d_k,
            none[none.len() - 1].d_k
        ),
    ));

    // Judged on the typical query (the median row): the Frobenius norm over all rows is held up
    // by the few rows whose top two logits happen to be close, and falls far more slowly.
    let (first, last) = (&none[0], &none[none.len() - 1]);
    let fall = first.grad_logits_row / last.grad_logits_row.max(f64::MIN_POSITIVE);
    let fall_all = first.grad_logits / last.grad_logits.max(f64::MIN_POSITIVE);
    let (glo, ghi) = range(&|p| p.grad_logits_row, scaled);
    let spread = ghi / glo.max(f64::MIN_POSITIVE);
    notebook.verdict(Verdict::new(
        "the unscaled logit-gradient norm collapses as d_k grows, while the scaled one stays flat",
        fall >= 10.0 && spread <= 2.0,
        format!(
            "a typical query's (median row) unscaled ‖∂L/∂z_i‖ falls {} from d_k={} to d_k={}; scaled stays within {spread:.2}×; the Frobenius norm over all rows falls only {}",
            times(fall), first.d_k, last.d_k, times(fall_all)
        ),
    ));
}

/// "3,400×", "2.3×".
fn times(ratio: f64) -> String {
    if ratio >= 100.0 {
        let digits = format!("{:.0}", ratio);
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{grouped}×")
    } else {
        format!("{ratio:.2}×")
    }
}

/// The seed pages' saturation example: show, judge (against the page's printed row), summarise.
fn saturation(notebook: &mut Notebook) {
    let rows = saturation_table();
    show_saturation(&rows, notebook);
    judge_saturation(&rows, notebook);
    notebook.summarize("saturation", &rows);
}

/// `[0.631, 0.337, …]` with `p` decimals.
fn numbers(v: &[f64], p: usize) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|x| format!("{x:.p$}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn show_saturation(rows: &[SaturationRow], notebook: &mut Notebook) {
    let mut table = Table::new(
        "The seed lesson's saturation example: softmax([30, 25, −10, 5])",
        &[
            "scores",
            "logits",
            "softmax (3 d.p.)",
            "entropy (nats)",
            "‖J‖_F",
        ],
    );
    for r in rows {
        table.row(vec![
            r.label.clone(),
            numbers(&r.logits, 3),
            numbers(&r.weights, 3),
            format!("{:.3}", metrics::entropy(&r.weights)),
            format!("{:.3e}", r.jacobian_norm),
        ]);
    }
    notebook.table(table);
}

/// A finding where the seed page's printed scaled row is not what it computes to.
fn judge_saturation(rows: &[SaturationRow], notebook: &mut Notebook) {
    let scaled = &rows[1].weights;
    let off = scaled
        .iter()
        .zip(SEED_PAGE_SCALED_ROW)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    if off > 0.01 {
        notebook.finding(format!(
            "the seed lesson's page \"Self-Attention\" prints softmax([3.75, 3.125, −1.25, 0.625]) = {}, but it computes to {} (largest difference {off:.3}); the unscaled row {} matches the page",
            numbers(&SEED_PAGE_SCALED_ROW, 2),
            numbers(scaled, 3),
            numbers(&rows[0].weights, 3)
        ));
    }
}

/// One trained (d_k, scale) over seeds: its numbers and its curves (means over seeds).
struct TrainPoint {
    d_k: usize,
    scale: ScoreScale,
    label: String,
    loss_at: Spread,
    accuracy: Spread,
    entropy: Spread,
    logit_std: Spread,
    /// Steps to 90 % per seed ("412/never/388") and their mean (never = the budget).
    to90: String,
    to90_mean: f64,
    diverged: bool,
    /// Loss, accuracy, ‖∇W_Q‖, ‖∇W_K‖ and logit std against the step, in that order.
    curves: [Vec<(f64, f64)>; 5],
}

/// The step the losses are compared at.
fn compare_step(config: &ScalingConfig) -> usize {
    let steps = config.train.steps;
    config.sweep.compare_at.unwrap_or(steps - 1).min(steps - 1)
}

/// Records averaged for the numbers read at a step.
const WINDOW: usize = 5;

/// Part B: training per (d_k, scale); show, summarise, judge.
fn part_b(config: &ScalingConfig, notebook: &mut Notebook) -> Result<(), RunError> {
    let points = measure_training(config, notebook)?;
    show_training(config, &points, notebook)?;
    notebook.summarize("held_out_sequences", HELD_OUT);
    notebook.summarize(
        "train",
        points
            .iter()
            .map(|p| {
                serde_json::json!({
                    "d_k": p.d_k, "scale": p.scale.to_string(), "loss_at_compare": p.loss_at,
                    "final_accuracy": p.accuracy, "steps_to_90": p.to90, "steps_to_90_mean": p.to90_mean,
                    "final_entropy": p.entropy, "final_logit_std": p.logit_std, "diverged": p.diverged,
                })
            })
            .collect::<Vec<_>>(),
    );
    notebook.summarize("compare_step", compare_step(config));
    judge_training(config, &points, notebook);
    Ok(())
}

fn measure_training(
    config: &ScalingConfig,
    notebook: &mut Notebook,
) -> Result<Vec<TrainPoint>, RunError> {
    let task = Task::new(config.task.clone())?;
    let held_out = eval_batch(&task, HELD_OUT, config.run.seed);
    let seeds = config.run.seed_list();
    let steps = config.train.steps;
    let compare = compare_step(config);
    let mut points = Vec::new();
    for &d_k in &config.sweep.d_k {
        for &scale in &config.sweep.scales {
            let label = format!("d_k={d_k} scale={scale}");
            let runs = train_seeds(
                notebook,
                "train",
                &label,
                &config.model_for(d_k, scale),
                &task,
                &config.train,
                &seeds,
            )?;
            let loss_at = runs.spread_at(compare, WINDOW, |r| r.loss);
            let (_, accuracy) = runs.held_out(&task, &held_out, &notebook.device);
            let entropy = runs.final_spread(WINDOW, |r| r.mean_entropy());
            let logit_std = runs.final_spread(WINDOW, |r| r.mean_logit_std());
            let (to90, to90_mean) = describe_steps(&runs.steps_to_accuracy(0.9, 3), steps);
            notebook.say(format!(
                "{label}: loss@{compare} {loss_at}, held-out accuracy {accuracy}, steps to 90 % {to90}, logit std {logit_std}"
            ));
            points.push(TrainPoint {
                d_k,
                scale,
                loss_at,
                accuracy,
                entropy,
                logit_std,
                to90,
                to90_mean,
                diverged: runs.diverged(),
                curves: [
                    runs.mean_series(|r| r.loss),
                    runs.mean_series(|r| r.accuracy),
                    runs.mean_series(|r| r.grad_norm("W_Q")),
                    runs.mean_series(|r| r.grad_norm("W_K")),
                    runs.mean_series(|r| r.mean_logit_std()),
                ],
                label,
            });
        }
    }
    Ok(points)
}

/// Part B's table, and loss, accuracy, gradients and logit std against the step.
fn show_training(
    config: &ScalingConfig,
    points: &[TrainPoint],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let compare = compare_step(config);
    let mut table = Table::new(
        format!(
            "Part B: training, {} on `{}`, Adam lr {} ({} seeds)",
            "1-layer transformer", config.task.kind, config.train.lr, config.run.seeds
        ),
        &[
            "d_k",
            "scale",
            &format!("loss @ step {compare}"),
            "final accuracy (held out)",
            "steps to 90 %",
            "final entropy",
            "final logit std",
        ],
    );
    let mut charts = vec![
        LineChart::new("Training loss (mean over seeds)", "step", "loss"),
        LineChart::new("Training accuracy (mean over seeds)", "step", "accuracy"),
        LineChart::new("‖∇W_Q‖ (mean over seeds)", "step", "gradient norm").log_y(),
        LineChart::new("‖∇W_K‖ (mean over seeds)", "step", "gradient norm").log_y(),
        LineChart::new(
            "Logit std during training (mean over seeds)",
            "step",
            "std of q·k/s",
        )
        .log_y(),
    ];
    for p in points {
        table.row(vec![
            p.d_k.to_string(),
            p.scale.to_string(),
            format!("{}", p.loss_at),
            format!("{}", p.accuracy),
            p.to90.clone(),
            format!("{}", p.entropy),
            format!("{}", p.logit_std),
        ]);
        charts = charts
            .into_iter()
            .zip(&p.curves)
            .map(|(chart, curve)| chart.line(&p.label, curve.clone()))
            .collect();
    }
    notebook.table(table);
    let files = [
        ("loss_vs_step", "Loss vs step"),
        ("accuracy_vs_step", "Accuracy vs step"),
        ("grad_wq_vs_step", "‖∇W_Q‖ vs step"),
        ("grad_wk_vs_step", "‖∇W_K‖ vs step"),
        ("logit_std_vs_step", "Logit std vs step"),
    ];
    for (chart, (file, title)) in charts.into_iter().zip(files) {
        notebook.plot(file, title, chart.to_svg())?;
    }
    Ok(())
}

/// At the largest d_k, scaled training reaches a lower loss than unscaled at the same step.
fn judge_training(config: &ScalingConfig, points: &[TrainPoint], notebook: &mut Notebook) {
    let compare = compare_step(config);
    let largest = *config.sweep.d_k.iter().max().expect("validated non-empty");
    let at = |s: ScoreScale| {
        points
            .iter()
            .find(|p| p.d_k == largest && p.scale == s)
            .map(|p| p.loss_at)
    };
    match (at(ScoreScale::None), at(ScoreScale::SqrtDk)) {
        (Some(none), Some(scaled)) => notebook.verdict(Verdict::new(
            format!("at the largest d_k ({largest}), scaled training reaches a lower loss than unscaled at the same step"),
            scaled.mean < none.mean,
            format!(
                "loss at step {compare} (mean of the last {WINDOW} records, over {} seeds): sqrt-dk {scaled}, none {none}; seeds: sqrt-dk {:.3}–{:.3}, none {:.3}–{:.3}",
                config.run.seeds, scaled.min, scaled.max, none.min, none.max
            ),
        )),
        _ => notebook.finding("the training sweep needs both `none` and `sqrt-dk` for its verdict"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation_rows_are_computed() {
        let rows = saturation_table();
        // e^0 / (e^0 + e^-5 + e^-40 + e^-25) = 0.9933
        assert!((rows[0].weights[0] - 0.9933).abs() < 1e-4);
        // logits ÷ 8 = [3.75, 3.125, −1.25, 0.625]; e^3.75 / Σ = 0.631
        assert!(
            (rows[1].weights[0] - 0.631).abs() < 1e-3,
            "{:?}",
            rows[1].weights
        );
        assert!(rows[0].jacobian_norm < rows[1].jacobian_norm);
    }

    #[test]
    fn unscaled_variance_is_d_k() {
        let device = Device::flex().autodiff();
        let p = measure_init(64, ScoreScale::None, 16, 8, 0, &device);
        assert!((p.qk_var_over_dk - 1.0).abs() < 0.15, "{p:?}");
        assert!((p.logit_var / 64.0 - 1.0).abs() < 0.15, "{p:?}");
        let s = measure_init(64, ScoreScale::SqrtDk, 16, 8, 0, &device);
        assert!((s.logit_var - 1.0).abs() < 0.15, "{s:?}");
        assert!(s.grad_logits > p.grad_logits, "{s:?} {p:?}");
    }
}
