//! `attention_sinks`: a head with nothing to read parks its weight on the first token, and what
//! the two proposed cures do about it.
//!
//! A row softmax must spend a query's whole unit of weight. Trained transformers spend what they
//! do not need on the first token, whatever it is: the attention sink (Xiao et al. 2023,
//! "Efficient Streaming Language Models with Attention Sinks"). Guo et al. 2024 ("Active-Dormant
//! Attention Heads") get sinks in 1–3-layer models trained on their Bigram-Backcopy task
//! (`bigram-backcopy`, see [`crate::lab::tasks`]), where a head is needed after a trigger token
//! (to copy the token before it) and has nothing to do elsewhere. Sinks come with small value
//! vectors at the sink ("value-state drains") and, in large models, a few huge residual
//! activations (Sun et al. 2024, "Massive Activations in Large Language Models").
//!
//! Three variants of a small causal model are trained: the standard softmax, the off-by-one
//! softmax (Miller 2023: 1 + Σ exp in the denominator, so a query may attend to nothing) and a
//! sigmoid gate per head on the attention output (Qiu et al. 2025, G1, head-wise). Each is
//! measured on held-out sequences:
//! - per head, the mean weight on position 0 (Gu et al. 2024's α₀, "When Attention Sink Emerges
//!   in Language Models") and whether it passes ε, their sink threshold; and over training;
//! - per head, ‖v₀‖ against the mean ‖v_j‖ of the other positions;
//! - per layer, the largest |activation| of the residual stream against the median, and which
//!   position holds it;
//! - StreamingLLM's experiment at toy scale: the loss of the queries past a rolling cache of W
//!   keys, when the cache evicts the first token and when it keeps it.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use crate::block::gate::GateKind;
use crate::block::mask::Window;
use crate::block::softmax::{SoftmaxAxis, SoftmaxKind};
use crate::lab::evaluate::{SeedRuns, eval_batch, example_batch};
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{Spread, first_key_weight_per_head, head_matrix, to_host};
use crate::lab::model::{ModelConfig, ModelOutput};
use crate::lab::tasks::{Batch, TRIGGER_P, TRIGGERS, Task, TaskConfig, TaskKind};
use crate::lab::train::TrainConfig;
use crate::output::plot::{Heatmap, LineChart};
use crate::output::report::{MetricRow, Table, Verdict, per_head_text};
use crate::run::config::{
    Invalid, RunConfig, Validate, at_least, experiment_config, positive, validate_in,
};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::run::training::train_seeds;

/// `configs/attention_sinks.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    #[serde(default)]
    pub run: RunConfig,
    /// Must be `bigram-backcopy`.
    pub task: TaskConfig,
    /// The model: causal, with the row softmax; `softmax` and `gate` are set by the experiment.
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Held-out sequences every number is measured on.
    pub eval_size: usize,
    /// W: the rolling cache's size in the eviction test, at least 2 (the backcopy reads one token
    /// back) and below the sequence length.
    pub window: usize,
    /// ε: a head is a sink head when its mean weight on position 0 passes this (Gu et al. 2024
    /// use 0.3).
    pub sink_threshold: f64,
}

/// The variants: (label, softmax, gate).
pub const VARIANTS: [(&str, SoftmaxKind, GateKind); 3] = [
    ("standard", SoftmaxKind::Standard, GateKind::None),
    ("off-by-one", SoftmaxKind::OffByOne, GateKind::None),
    ("gated", SoftmaxKind::Standard, GateKind::HeadOutput),
];

/// An eviction penalty (nats) below this is no penalty: 1 % of ln 2.
pub const NO_PENALTY: f64 = 0.007;

impl SinksConfig {
    fn model_with(&self, softmax: SoftmaxKind, gate: GateKind) -> ModelConfig {
        ModelConfig {
            softmax,
            gate,
            ..self.model.clone()
        }
    }
}

impl Validate for SinksConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        validate_in("task", &self.task)?;
        if self.task.kind != TaskKind::BigramBackcopy {
            return Err(Invalid::new(
                "task.kind",
                format!("must be \"bigram-backcopy\", got \"{}\"", self.task.kind),
            ));
        }
        if self.model.softmax != SoftmaxKind::Standard || self.model.gate != GateKind::None {
            return Err(Invalid::new(
                if self.model.gate != GateKind::None {
                    "model.gate"
                } else {
                    "model.softmax"
                },
                "is set by the experiment (it compares standard, off-by-one and gated); leave it out",
            ));
        }
        if !self.model.causal {
            return Err(Invalid::new(
                "model.causal",
                "must be true: a sink is where a causal query parks its weight, and the eviction test is a rolling cache",
            ));
        }
        if self.model.softmax_axis != SoftmaxAxis::Row {
            return Err(Invalid::new(
                "model.softmax_axis",
                "must be \"row\": the off-by-one softmax is a row softmax",
            ));
        }
        if self.model.bos {
            return Err(Invalid::new(
                "model.bos",
                "must be false: the task starts with its own <s> token",
            ));
        }
        validate_in("train", &self.train)?;
        for (_, softmax, gate) in VARIANTS {
            validate_in("model", &self.model_with(softmax, gate))?;
        }
        at_least("eval_size", self.eval_size, 1)?;
        at_least("window", self.window, 2)?;
        if self.window >= self.task.length {
            return Err(Invalid::new(
                "window",
                format!(
                    "must be below the sequence length {}, or nothing is evicted",
                    self.task.length
                ),
            ));
        }
        positive("sink_threshold", self.sink_threshold)?;
        if self.sink_threshold >= 1.0 {
            return Err(Invalid::new("sink_threshold", "must be below 1"));
        }
        Ok(())
    }
}

experiment_config!(SinksConfig);

/// Everything measured on one trained model.
#[derive(Debug, Clone, Serialize)]
pub struct SeedMeasure {
    pub seed: u64,
    /// Per layer, per head: mean weight on position 0 (α₀).
    pub first_key: Vec<Vec<f64>>,
    /// Per layer, per head: ‖v₀‖ / mean ‖v_j‖ over j ≥ 1.
    pub value_ratio: Vec<Vec<f64>>,
    /// Per layer, per head: the mean gate over the trigger positions and over the others.
    pub gate: Option<Vec<Vec<(f64, f64)>>>,
    /// Per layer, per head: the mean weight left unspent (off-by-one).
    pub unspent: Vec<Vec<f64>>,
    /// Per layer: the largest |activation| of the residual stream after it over its median.
    pub massive_ratio: Vec<f64>,
    /// Per layer: the share of sequences whose largest |activation| sits at position 0.
    pub massive_at_first: Vec<f64>,
    /// Per layer, per position: the largest |activation| there, mean over sequences.
    pub by_position: Vec<Vec<f64>>,
    /// Held-out loss over every position.
    pub loss: f64,
    /// Accuracy at the backcopy positions (the token after a trigger).
    pub backcopy_accuracy: f64,
    /// Loss of the queries at positions ≥ W: full attention, a cache of W evicting position 0,
    /// a cache of W that keeps it.
    pub full_tail: f64,
    pub evict: f64,
    pub keep: f64,
}

impl SeedMeasure {
    fn largest_first_key(&self) -> f64 {
        self.first_key.iter().flatten().copied().fold(0.0, f64::max)
    }

    fn sink_rate(&self, eps: f64) -> f64 {
        let all: Vec<f64> = self.first_key.iter().flatten().copied().collect();
        all.iter().filter(|&&a| a > eps).count() as f64 / all.len().max(1) as f64
    }

    fn penalty(&self) -> f64 {
        self.evict - self.keep
    }
}

/// One variant over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct VariantMeasure {
    pub label: String,
    pub seeds: Vec<SeedMeasure>,
}

impl VariantMeasure {
    fn spread(&self, value: impl Fn(&SeedMeasure) -> f64) -> Spread {
        Spread::of(&self.seeds.iter().map(value).collect::<Vec<_>>())
    }
}

/// The experiment.
pub struct AttentionSinks;

impl Experiment for AttentionSinks {
    const NAME: &'static str = "attention_sinks";
    const TITLE: &'static str = "heads with nothing to read park their weight on the first token; off-by-one and gates let them rest";
    const CLAIM: &'static str = "A row softmax must spend each query's whole unit of weight, so \
        a head with nothing to read for a query parks it on the first token: an attention sink \
        (Xiao et al. 2023). On Guo et al.'s Bigram-Backcopy task a small causal transformer \
        needs a head only after a trigger token, and sinks form with the standard softmax; a \
        rolling cache that evicts the first token then raises the loss, and keeping it restores \
        the loss (StreamingLLM). The off-by-one softmax (Miller 2023) and a sigmoid gate per \
        head (Qiu et al. 2025) each let a head rest without a sink: each should remove the sink \
        and the eviction penalty at no cost in held-out loss. Three variants are trained at \
        several seeds and measured on held-out sequences.";
    type Config = SinksConfig;

    fn footprint(config: &SinksConfig) -> Footprint {
        let batch = config.train.batch_size.max(config.eval_size);
        footprint::training_on(
            &config.model_with(SoftmaxKind::Standard, GateKind::HeadOutput),
            &config.task,
            batch,
        )
    }

    fn work(config: &SinksConfig) -> u64 {
        (VARIANTS.len() * config.run.seeds * config.train.steps) as u64
    }

    fn run(config: &SinksConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        let task = Task::new(config.task.clone())?;
        let seeds = config.run.seed_list();
        let batch = eval_batch(&task, config.eval_size, config.run.seed);
        let mut trained = Vec::with_capacity(VARIANTS.len());
        let mut measured = Vec::with_capacity(VARIANTS.len());
        for (label, softmax, gate) in VARIANTS {
            let model = config.model_with(softmax, gate);
            let runs = train_seeds(
                notebook,
                "sinks",
                label,
                &model,
                &task,
                &config.train,
                &seeds,
            )?;
            let seeds_measured: Vec<SeedMeasure> = runs
                .runs
                .iter()
                .zip(&seeds)
                .map(|(run, &seed)| {
                    let model = run.model.valid();
                    measure(config, &task, &batch, seed, &model, &notebook.device)
                })
                .collect();
            let variant = VariantMeasure {
                label: label.to_string(),
                seeds: seeds_measured,
            };
            record(&variant, notebook);
            notebook.say(format!(
                "{label}: largest α₀ {}, eviction penalty {} nats, held-out loss {}",
                variant.spread(SeedMeasure::largest_first_key),
                variant.spread(SeedMeasure::penalty),
                variant.spread(|s| s.loss)
            ));
            trained.push(runs);
            measured.push(variant);
        }
        tables(config, &task, &measured, notebook);
        plots(config, &task, &trained, &measured, notebook)?;
        judge(config, &measured, notebook);
        notebook.summarize("variants", &measured);
        notebook.summarize("optimal_loss", optimal_loss(&task));
        Ok(())
    }
}

/// The expected loss per position of a model that knows the task's rule and table: ln(V − 3)
/// for x₁ (uniform over the non-triggers), 0 after a trigger, and the table's entropy after any
/// other token. Position t holds a trigger with probability f_t: f₁ = 0 (x₁ is never one), and
/// f_{t+1} = p·(1 − f_t), as a trigger follows a non-trigger with probability p and never follows
/// a trigger.
pub fn optimal_loss(task: &Task) -> f64 {
    let (m, a) = (task.length(), task.config().symbols);
    let bigram: f64 = [TRIGGER_P, 0.45, 0.25, 0.10]
        .iter()
        .map(|p| -p * p.ln())
        .sum();
    let mut total = ((a - TRIGGERS) as f64).ln();
    let mut trigger = 0.0;
    for _ in 1..m {
        total += (1.0 - trigger) * bigram;
        trigger = TRIGGER_P * (1.0 - trigger);
    }
    total / m as f64
}

/// One trained model on the held-out `batch`: with full attention, then under a rolling cache of
/// W keys with and without position 0.
fn measure(
    config: &SinksConfig,
    task: &Task,
    batch: &Batch,
    seed: u64,
    model: &crate::lab::model::TinyTransformer,
    device: &Device,
) -> SeedMeasure {
    let n = task.seq_len();
    let tokens = batch.tokens(device);
    let out = model.forward(tokens.clone(), task.n_out());
    let first_key = out
        .attention
        .iter()
        .map(|a| first_key_weight_per_head(a.weights()))
        .collect();
    let value_ratio = out
        .attention
        .iter()
        .map(|a| value_ratio(a.v.clone()))
        .collect();
    let unspent = out
        .attention
        .iter()
        .map(|a| {
            let [b, h, n_q] = a.unspent().dims();
            to_host(
                a.unspent()
                    .swap_dims(0, 1) // [heads, batch, n_q]
                    .reshape([h, b * n_q]) // [heads, batch·n_q]
                    .mean_dim(1), // [heads, 1]
            )
            .into_iter()
            .map(f64::from)
            .collect()
        })
        .collect();
    let triggers: Vec<bool> = batch
        .tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| i % n > 0 && (t as usize) < TRIGGERS)
        .collect();
    let gate = out.attention[0].gate.as_ref().map(|_| {
        out.attention
            .iter()
            .map(|a| gate_means(a.gate.clone().expect("every block is gated"), &triggers))
            .collect()
    });
    let (mut massive_ratio, mut massive_at_first, mut by_position) = (vec![], vec![], vec![]);
    for h in &out.residuals {
        let (ratio, at_first, profile) = activations(h.clone());
        massive_ratio.push(ratio);
        massive_at_first.push(at_first);
        by_position.push(profile);
    }
    let losses = position_losses(&out, batch, task);
    let loss = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
    let predictions = argmax(&out, task);
    let (mut right, mut asked) = (0usize, 0usize);
    for (i, &is_trigger) in triggers.iter().enumerate() {
        if is_trigger {
            asked += 1;
            right += usize::from(predictions[i] == batch.targets[i] as usize);
        }
    }
    let tail = |losses: &[f64]| {
        let picked: Vec<f64> = losses
            .iter()
            .enumerate()
            .filter(|(i, _)| i % n >= config.window)
            .map(|(_, l)| *l)
            .collect();
        picked.iter().sum::<f64>() / picked.len().max(1) as f64
    };
    let windowed = |keep_first| {
        let window = Window {
            size: config.window,
            keep_first,
        };
        let out = model.forward_windowed(tokens.clone(), task.n_out(), Some(window));
        tail(&position_losses(&out, batch, task))
    };
    SeedMeasure {
        seed,
        first_key,
        value_ratio,
        gate,
        unspent,
        massive_ratio,
        massive_at_first,
        by_position,
        loss,
        backcopy_accuracy: right as f64 / asked.max(1) as f64,
        full_tail: tail(&losses),
        evict: windowed(0),
        keep: windowed(1),
    }
}

/// Per head: ‖v₀‖ over the mean ‖v_j‖ of the other positions, for `v [batch, heads, n, d_v]`.
fn value_ratio(v: Tensor<4>) -> Vec<f64> {
    let [b, h, n, _] = v.dims();
    let norms = v.powi_scalar(2).sum_dim(3).sqrt(); // [batch, heads, n, 1]
    let norms = to_host(norms.swap_dims(0, 1).reshape([h, b, n])); // [heads, batch, n]
    (0..h)
        .map(|head| {
            let (mut first, mut rest) = (0.0, 0.0);
            for seq in 0..b {
                let row = &norms[(head * b + seq) * n..(head * b + seq + 1) * n];
                first += f64::from(row[0]);
                rest += row[1..].iter().map(|&x| f64::from(x)).sum::<f64>() / (n - 1).max(1) as f64;
            }
            first / rest.max(f64::MIN_POSITIVE)
        })
        .collect()
}

/// Per head: (mean gate at the trigger positions, mean gate elsewhere), for
/// `gate [batch, n, heads]` and `triggers` flattened like the batch's tokens.
fn gate_means(gate: Tensor<3>, triggers: &[bool]) -> Vec<(f64, f64)> {
    let heads = gate.dims()[2];
    let values = to_host(gate); // [batch·n, heads]
    (0..heads)
        .map(|head| {
            let (mut on, mut n_on, mut off, mut n_off) = (0.0, 0usize, 0.0, 0usize);
            for (i, &is_trigger) in triggers.iter().enumerate() {
                let g = f64::from(values[i * heads + head]);
                if is_trigger {
                    (on, n_on) = (on + g, n_on + 1);
                } else {
                    (off, n_off) = (off + g, n_off + 1);
                }
            }
            (on / n_on.max(1) as f64, off / n_off.max(1) as f64)
        })
        .collect()
}

/// For the residual stream `h [batch, n, d_model]`: the largest |activation| over the median
/// |activation|, the share of sequences whose largest sits at position 0, and per position the
/// largest |activation| there, mean over sequences.
fn activations(h: Tensor<3>) -> (f64, f64, Vec<f64>) {
    let [b, n, d] = h.dims();
    let values: Vec<f32> = to_host(h.abs());
    let mut sorted = values.clone();
    sorted.sort_by(f32::total_cmp);
    let median = f64::from(sorted[sorted.len() / 2]);
    let largest = f64::from(*sorted.last().expect("a non-empty stream"));
    let mut profile = vec![0.0; n];
    let mut at_first = 0usize;
    for seq in 0..b {
        let mut best = (0usize, f32::MIN);
        for (pos, slot) in profile.iter_mut().enumerate() {
            let row = &values[(seq * n + pos) * d..(seq * n + pos + 1) * d];
            let top = row.iter().copied().fold(0.0, f32::max);
            *slot += f64::from(top) / b as f64;
            if top > best.1 {
                best = (pos, top);
            }
        }
        at_first += usize::from(best.0 == 0);
    }
    (
        largest / median.max(f64::MIN_POSITIVE),
        at_first as f64 / b as f64,
        profile,
    )
}

/// The cross-entropy at every position, flattened like the batch's targets.
fn position_losses(out: &ModelOutput, batch: &Batch, task: &Task) -> Vec<f64> {
    let classes = task.classes();
    let log_p = to_host(log_softmax(out.logits.clone(), 1)); // [batch·n_out, classes]
    batch
        .targets
        .iter()
        .enumerate()
        .map(|(i, &t)| -f64::from(log_p[i * classes + t as usize]))
        .collect()
}

fn argmax(out: &ModelOutput, task: &Task) -> Vec<usize> {
    crate::lab::metrics::argmax_rows(&to_host(out.logits.clone()), task.classes())
}

/// Every measured number as metric rows.
fn record(variant: &VariantMeasure, notebook: &mut Notebook) {
    let label = &variant.label;
    for s in &variant.seeds {
        let row = |metric: &str, value: f64| {
            MetricRow::new("held_out", label, metric, value).seed(s.seed)
        };
        for (layer, heads) in s.first_key.iter().enumerate() {
            for (head, a) in heads.iter().enumerate() {
                notebook.metric(row("first_key_weight", *a).layer(Some(layer)).head(head));
                notebook.metric(
                    row("value_norm_ratio", s.value_ratio[layer][head])
                        .layer(Some(layer))
                        .head(head),
                );
                notebook.metric(
                    row("unspent_weight", s.unspent[layer][head])
                        .layer(Some(layer))
                        .head(head),
                );
                if let Some(gate) = &s.gate {
                    let (on, off) = gate[layer][head];
                    notebook.metric(row("gate_at_triggers", on).layer(Some(layer)).head(head));
                    notebook.metric(row("gate_elsewhere", off).layer(Some(layer)).head(head));
                }
            }
            notebook.metric(row("massive_ratio", s.massive_ratio[layer]).layer(Some(layer)));
            notebook.metric(row("massive_at_first", s.massive_at_first[layer]).layer(Some(layer)));
        }
        for (metric, value) in [
            ("loss", s.loss),
            ("backcopy_accuracy", s.backcopy_accuracy),
            ("tail_loss_full", s.full_tail),
            ("tail_loss_evict_first", s.evict),
            ("tail_loss_keep_first", s.keep),
        ] {
            notebook.metric(row(metric, value));
        }
    }
}

fn tables(config: &SinksConfig, task: &Task, measured: &[VariantMeasure], notebook: &mut Notebook) {
    let mut table = Table::new(
        format!(
            "Held-out loss and the eviction test on {} sequences of {} tokens, mean ± std over {} seed(s); the task's optimal loss is {:.3}",
            config.eval_size,
            task.seq_len(),
            config.run.seeds,
            optimal_loss(task)
        ),
        &[
            "variant",
            "held-out loss",
            "backcopy accuracy",
            &format!("loss at positions ≥ {}: full", config.window),
            &format!("cache of {} evicting position 0", config.window),
            &format!("cache of {} keeping it", config.window),
            "eviction penalty (nats)",
        ],
    );
    for v in measured {
        table.row(vec![
            v.label.clone(),
            format!("{}", v.spread(|s| s.loss)),
            format!("{}", v.spread(|s| s.backcopy_accuracy)),
            format!("{}", v.spread(|s| s.full_tail)),
            format!("{}", v.spread(|s| s.evict)),
            format!("{}", v.spread(|s| s.keep)),
            format!("{}", v.spread(SeedMeasure::penalty)),
        ]);
    }
    notebook.table(table);

    let mut heads = Table::new(
        format!(
            "Per head, first seed: mean weight on position 0 (α₀; a sink head passes ε = {}), ‖v₀‖ / mean ‖v_j‖, weight left unspent, and the gate at trigger / other positions",
            config.sink_threshold
        ),
        &[
            "variant",
            "α₀ per head",
            "sink rate (mean over seeds)",
            "‖v₀‖ / mean ‖v_j‖",
            "unspent weight",
            "gate (triggers / others)",
            // No `|` in a header: it would split the Markdown table's column.
            "largest activation magnitude / median, per layer (share of sequences with it at position 0)",
        ],
    );
    for v in measured {
        let s = &v.seeds[0];
        let gate = s.gate.as_ref().map_or("-".to_string(), |g| {
            g.iter()
                .enumerate()
                .map(|(l, heads)| {
                    let cells: Vec<String> = heads
                        .iter()
                        .map(|(a, b)| format!("{a:.2}/{b:.2}"))
                        .collect();
                    format!("L{l}: {}", cells.join(" "))
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        let massive = s
            .massive_ratio
            .iter()
            .zip(&s.massive_at_first)
            .enumerate()
            .map(|(l, (r, f))| format!("L{l}: {r:.1} ({f:.2})"))
            .collect::<Vec<_>>()
            .join("; ");
        heads.row(vec![
            v.label.clone(),
            per_head_text(&s.first_key, 0),
            format!("{}", v.spread(|s| s.sink_rate(config.sink_threshold))),
            per_head_text(&s.value_ratio, 0),
            per_head_text(&s.unspent, 0),
            gate,
            massive,
        ]);
    }
    notebook.table(heads);
}

fn plots(
    config: &SinksConfig,
    task: &Task,
    trained: &[SeedRuns],
    measured: &[VariantMeasure],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let mut over_steps = LineChart::new(
        "Largest mean weight on position 0 among the heads, during training (mean over seeds)",
        "step",
        "α₀ of the sinkiest head",
    );
    for (runs, v) in trained.iter().zip(measured) {
        over_steps = over_steps.line(
            &v.label,
            runs.mean_series(|r| r.heads.iter().map(|h| h.first_key).fold(0.0, f64::max)),
        );
    }
    let steps = config.train.steps as f64;
    over_steps = over_steps.reference(
        format!("ε = {}", config.sink_threshold),
        vec![(0.0, config.sink_threshold), (steps, config.sink_threshold)],
    );
    notebook.plot(
        "first_key_weight_vs_step",
        "Mass on position 0 over training",
        over_steps.to_svg(),
    )?;

    let last = config.model.n_layers - 1;
    let mut profile = LineChart::new(
        format!(
            "Largest |activation| of the residual stream after layer {}, by position (first seed, mean over held-out sequences)",
            last + 1
        ),
        "position",
        "largest |activation|",
    );
    for v in measured {
        let points = v.seeds[0].by_position[last]
            .iter()
            .enumerate()
            .map(|(i, a)| (i as f64, *a))
            .collect();
        profile = profile.line(&v.label, points);
    }
    notebook.plot(
        "activation_by_position",
        "Activations' magnitude by position",
        profile.to_svg(),
    )?;

    // Each variant's sinkiest head on one held-out sequence, first seed.
    let example = example_batch(task, config.run.seed);
    let names: Vec<String> = example
        .tokens
        .iter()
        .map(|&t| task.token_name(t as usize))
        .collect();
    for (runs, v) in trained.iter().zip(measured) {
        let s = &v.seeds[0];
        let (layer, head, a) = s
            .first_key
            .iter()
            .enumerate()
            .flat_map(|(l, heads)| heads.iter().enumerate().map(move |(h, a)| (l, h, *a)))
            .fold(
                (0, 0, f64::MIN),
                |best, x| if x.2 > best.2 { x } else { best },
            );
        let model = runs.runs[0].model.valid();
        let out = model.forward(example.tokens(&notebook.device), task.n_out());
        let weights = out.attention[layer].weights();
        let map = Heatmap::new(
            format!(
                "{}: layer {}, head {} (α₀ = {a:.2} on held-out sequences), first seed",
                v.label,
                layer + 1,
                head + 1
            ),
            "query",
            "key",
            head_matrix(weights, 0, head),
        )
        .names(names.clone(), names.clone());
        notebook.plot(
            &format!("sink_head_{}", v.label),
            &format!("{}: the head with the most weight on position 0", v.label),
            map.to_svg(),
        )?;
    }
    Ok(())
}

fn judge(config: &SinksConfig, measured: &[VariantMeasure], notebook: &mut Notebook) {
    let eps = config.sink_threshold;
    let standard = &measured[0];
    // A row spread evenly over its i + 1 keys puts 1/(i + 1) on key 0: the mean over the queries
    // 1 … n − 1 is what α₀ would be without a sink.
    let n = standard.seeds[0].by_position[0].len();
    let uniform = (1..n).map(|i| 1.0 / (i + 1) as f64).sum::<f64>() / (n - 1).max(1) as f64;
    let largest = |v: &VariantMeasure| {
        v.seeds
            .iter()
            .map(|s| format!("{:.2}", s.largest_first_key()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let every_seed_sinks = standard.seeds.iter().all(|s| s.largest_first_key() > eps);
    notebook.verdict(Verdict::new(
        "sinks form with the standard softmax: in every seed some head puts more than ε of its weight on position 0",
        every_seed_sinks,
        format!(
            "largest α₀ per seed {} against ε = {eps} (a head spread evenly over the keys it sees would give {uniform:.2}); sink rate {}",
            largest(standard),
            standard.spread(|s| s.sink_rate(eps))
        ),
    ));

    let penalty = standard.spread(SeedMeasure::penalty);
    let raises = standard.seeds.iter().all(|s| s.penalty() > NO_PENALTY);
    notebook.verdict(Verdict::new(
        format!(
            "evicting position 0 from a rolling cache of {} raises the standard model's loss; keeping it restores it",
            config.window
        ),
        raises,
        format!(
            "loss at positions ≥ {}: evicting {} vs keeping {} (full attention {}); penalty {penalty} nats, per seed {}; more than {NO_PENALTY} in every seed counts",
            config.window,
            standard.spread(|s| s.evict),
            standard.spread(|s| s.keep),
            standard.spread(|s| s.full_tail),
            standard
                .seeds
                .iter()
                .map(|s| format!("{:.3}", s.penalty()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));

    let base_loss = standard.spread(|s| s.loss);
    for fix in &measured[1..] {
        let label = &fix.label;
        let no_sink = fix.seeds.iter().all(|s| s.largest_first_key() <= eps);
        let claim = format!("{label} removes the sink: no head in any seed passes ε on position 0");
        let evidence = format!(
            "largest α₀ per seed {} (standard: {}), ε = {eps}",
            largest(fix),
            largest(standard)
        );
        notebook.verdict(if every_seed_sinks {
            Verdict::new(claim, no_sink, evidence)
        } else {
            Verdict::inconclusive(
                claim,
                format!("{evidence}: the standard model did not form a sink in every seed, so there was none to remove"),
            )
        });
        let fix_penalty = fix.spread(SeedMeasure::penalty);
        let claim = format!("{label} removes the eviction penalty");
        let evidence = format!(
            "penalty {fix_penalty} nats (standard: {penalty}); at most {NO_PENALTY} in every seed counts"
        );
        let removed = fix.seeds.iter().all(|s| s.penalty() <= NO_PENALTY);
        notebook.verdict(if raises {
            Verdict::new(claim, removed, evidence)
        } else {
            Verdict::inconclusive(
                claim,
                format!("{evidence}: evicting position 0 did not raise the standard model's loss, so there was no penalty to remove"),
            )
        });
        let loss = fix.spread(|s| s.loss);
        notebook.verdict(Verdict::new(
            format!("{label} costs no held-out loss"),
            !base_loss.clearly_below(&loss),
            format!(
                "held-out loss {loss} vs standard {base_loss}; a cost counts when it exceeds twice the standard error of the difference, {:.3}",
                base_loss.margin_against(&loss)
            ),
        ));
    }
}
