//! `dk_vs_dmodel`: in multi-head attention the scale is √d_k with d_k = d_model / h.
//!
//! Dividing by √d_model instead divides the logits by √h more than needed: their std falls to
//! 1/√h of the √d_k logits, and the softmax flattens towards uniform (Vaswani et al. 2017, §3.2.2).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::block::attention::AttentionConfig;
use crate::block::scale::ScoreScale;
use crate::lab::evaluate::{HELD_OUT, describe_steps, eval_batch};
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{Spread, entropy_per_head, std, to_host};
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

/// `configs/dk_vs_dmodel.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkVsDModelConfig {
    #[serde(default)]
    pub run: RunConfig,
    pub sweep: HeadSweep,
    /// Measurements at initialisation.
    pub init: InitSample,
    pub task: TaskConfig,
    /// The model; its `n_heads` and `scale` are set by the sweep, `d_k` follows d_model / h.
    pub model: ModelConfig,
    pub train: TrainConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSweep {
    pub n_heads: Vec<usize>,
    pub scales: Vec<ScoreScale>,
    /// Steps at which "learns slower" is judged: the loss there. Default: a quarter of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_step: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSample {
    /// Tokens per sequence.
    pub n_tokens: usize,
    /// Sequences, with x ~ N(0, 1) (the scale of a LayerNorm output).
    pub batch: usize,
}

impl Validate for DkVsDModelConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        non_empty("sweep.n_heads", &self.sweep.n_heads)?;
        increasing("sweep.n_heads", &self.sweep.n_heads)?;
        non_empty("sweep.scales", &self.sweep.scales)?;
        within_steps("sweep.early_step", self.sweep.early_step, self.train.steps)?;
        at_least("init.n_tokens", self.init.n_tokens, 2)?;
        at_least("init.batch", self.init.batch, 1)?;
        validate_in("task", &self.task)?;
        validate_in("train", &self.train)?;
        if self.model.d_k.is_some() {
            return Err(Invalid::new(
                "model.d_k",
                "is set by the sweep (d_model / n_heads); remove it",
            ));
        }
        for &h in &self.sweep.n_heads {
            at_least("sweep.n_heads", h, 1)?;
            for &scale in &self.sweep.scales {
                Validate::validate(&self.model_for(h, scale)).map_err(|e| {
                    Invalid::new(
                        format!("sweep.n_heads = {h} with model.{}", e.key),
                        e.reason,
                    )
                })?;
            }
        }
        Ok(())
    }
}

experiment_config!(DkVsDModelConfig);

impl DkVsDModelConfig {
    fn model_for(&self, n_heads: usize, scale: ScoreScale) -> ModelConfig {
        ModelConfig {
            n_heads,
            scale,
            ..self.model.clone()
        }
    }
}

/// At initialisation, for one (h, scale): the block's logits and how flat its weights are.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadPoint {
    pub n_heads: usize,
    pub d_k: usize,
    pub logit_std: f64,
    /// Mean row entropy / ln n_k: 1 is uniform.
    pub normalized_entropy: f64,
    /// `[batch, heads, n, n]` weights, flattened, for the h = 1 sanity check.
    #[serde(skip)]
    pub weights: Vec<f32>,
}

/// Measures one attention block (same seed for both scales, so the same W_Q, W_K) on
/// x ~ N(0, 1).
pub fn measure_heads(
    d_model: usize,
    n_heads: usize,
    scale: ScoreScale,
    n: usize,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<HeadPoint, RunError> {
    let block = AttentionConfig::new(d_model, n_heads)
        .with_scale(scale)
        .with_seed(seed)
        .init(device)?;
    let x = HostRng::new(seed ^ 0x5EED).normal_tensor([batch, n, d_model], 1.0, device);
    let out = block.forward(x);
    let logits = out.raw_scores().div_scalar(out.divisor()); // [batch, heads, n, n]
    let entropy = entropy_per_head(out.weights());
    Ok(HeadPoint {
        n_heads,
        d_k: block.d_k,
        logit_std: std(logits),
        normalized_entropy: entropy.iter().sum::<f64>() / entropy.len() as f64 / (n as f64).ln(),
        weights: to_host(out.weights()),
    })
}

/// The experiment.
pub struct DkVsDModel;

impl Experiment for DkVsDModel {
    const NAME: &'static str = "dk_vs_dmodel";
    const TITLE: &'static str = "multi-head attention scales by √d_k, not √d_model";
    const CLAIM: &'static str = "The seed lesson claims that with h heads the scale is √d_k, d_k = \
        d_model / h, and that dividing by √d_model over-scales by √h and flattens attention. With \
        d_model fixed, the experiment sweeps h and compares both scales: at initialisation (logit \
        std, entropy relative to uniform) and when training a one-layer transformer (Adam) on a \
        task that needs sharp attention.";
    type Config = DkVsDModelConfig;

    fn footprint(config: &DkVsDModelConfig) -> Footprint {
        let init = &config.init;
        Footprint::largest(config.sweep.n_heads.iter().flat_map(|&h| {
            let model = ModelConfig {
                n_heads: h,
                ..config.model.clone()
            };
            [
                footprint::block("init", config.model.d_model, h, init.batch, init.n_tokens),
                footprint::training_on(&model, &config.task, config.train.batch_size),
            ]
        }))
    }

    fn work(config: &DkVsDModelConfig) -> u64 {
        let points = config.sweep.n_heads.len() * config.sweep.scales.len();
        (points * (1 + config.run.seeds * config.train.steps)) as u64
    }

    fn run(config: &DkVsDModelConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        let init = measure_init(config, notebook)?;
        let (trained, rows) = measure_training(config, notebook)?;
        show(config, &init, &trained, &rows, notebook)?;
        judge(config, &init, &trained, notebook);
        summarise(config, &init, &rows, notebook);
        Ok(())
    }
}

type ByHeads<T> = Vec<(usize, Vec<(ScoreScale, T)>)>;

/// Per (h, scale): the logit std and entropy of an untrained block.
fn measure_init(
    config: &DkVsDModelConfig,
    notebook: &mut Notebook,
) -> Result<ByHeads<HeadPoint>, RunError> {
    let d_model = config.model.d_model;
    let mut all = Vec::new();
    for &h in &config.sweep.n_heads {
        let mut row = Vec::new();
        for &scale in &config.sweep.scales {
            notebook.status(format!("init: heads={h} scale={scale}"));
            let p = measure_heads(
                d_model,
                h,
                scale,
                config.init.n_tokens,
                config.init.batch,
                config.run.seed,
                &notebook.device,
            )?;
            let label = format!("heads={h} scale={scale}");
            notebook.metric(
                MetricRow::new("init", &label, "logit_std", p.logit_std).seed(config.run.seed),
            );
            notebook.metric(
                MetricRow::new("init", &label, "normalized_entropy", p.normalized_entropy)
                    .seed(config.run.seed),
            );
            notebook.advance(1);
            row.push((scale, p));
        }
        all.push((h, row));
    }
    Ok(all)
}

/// Per (h, scale): final accuracy, loss at the early step, steps to 90 % (mean, never = budget).
#[derive(Debug, Clone, Copy)]
struct Trained {
    accuracy: Spread,
    early_loss: Spread,
    steps_to_90: f64,
}

/// One trained (h, scale) as the table and the summary show it.
struct TrainRow {
    h: usize,
    scale: ScoreScale,
    trained: Trained,
    /// Steps to 90 % per seed ("412/never/388").
    to90: String,
    /// The mean training loss per step, kept at the most heads for the loss chart.
    loss: Option<Vec<(f64, f64)>>,
}

/// The step the early loss is read at.
fn early_step(config: &DkVsDModelConfig) -> usize {
    let steps = config.train.steps;
    config.sweep.early_step.unwrap_or(steps / 4).min(steps - 1)
}

/// Trains every (h, scale) over the seeds and measures it on held-out sequences.
fn measure_training(
    config: &DkVsDModelConfig,
    notebook: &mut Notebook,
) -> Result<(ByHeads<Trained>, Vec<TrainRow>), RunError> {
    let task = Task::new(config.task.clone())?;
    let held_out = eval_batch(&task, HELD_OUT, config.run.seed);
    let seeds = config.run.seed_list();
    let steps = config.train.steps;
    let early = early_step(config);
    let window = 5;
    let most_heads = *config
        .sweep
        .n_heads
        .iter()
        .max()
        .expect("validated non-empty");
    let mut all: ByHeads<Trained> = Vec::new();
    let mut rows = Vec::new();
    for &h in &config.sweep.n_heads {
        let mut row = Vec::new();
        for &scale in &config.sweep.scales {
            let label = format!("heads={h} scale={scale}");
            let runs = train_seeds(
                notebook,
                "train",
                &label,
                &config.model_for(h, scale),
                &task,
                &config.train,
                &seeds,
            )?;
            let (_, accuracy) = runs.held_out(&task, &held_out, &notebook.device);
            let early_loss = runs.spread_at(early, window, |r| r.loss);
            let (to90, to90_mean) = describe_steps(&runs.steps_to_accuracy(0.9, 3), steps);
            notebook.say(format!("{label}: loss@{early} {early_loss}, held-out accuracy {accuracy}, steps to 90 % {to90}"));
            let trained = Trained {
                accuracy,
                early_loss,
                steps_to_90: to90_mean,
            };
            rows.push(TrainRow {
                h,
                scale,
                trained,
                to90,
                loss: (h == most_heads).then(|| runs.mean_series(|r| r.loss)),
            });
            row.push((scale, trained));
        }
        all.push((h, row));
    }
    Ok((all, rows))
}

/// The tables at initialisation and after training, the entropy and accuracy against the
/// heads, and the loss curves at the most heads.
fn show(
    config: &DkVsDModelConfig,
    init: &ByHeads<HeadPoint>,
    trained: &ByHeads<Trained>,
    rows: &[TrainRow],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let d_model = config.model.d_model;
    let mut table = Table::new(
        format!(
            "At initialisation (d_model = {d_model}, n = {} tokens)",
            config.init.n_tokens
        ),
        &["heads", "d_k", "scale", "logit std", "entropy / ln n"],
    );
    for (h, row) in init {
        for (scale, p) in row {
            table.row(vec![
                h.to_string(),
                p.d_k.to_string(),
                scale.to_string(),
                format!("{:.4}", p.logit_std),
                format!("{:.4}", p.normalized_entropy),
            ]);
        }
    }
    notebook.table(table);
    let mut chart = LineChart::new(
        "Attention entropy at initialisation (1 = uniform)",
        "heads",
        "entropy / ln n",
    )
    .log_x();
    for &scale in &config.sweep.scales {
        let points = over_heads(init, scale, |p| p.normalized_entropy);
        chart = chart.line(format!("scale {scale}"), points);
    }
    notebook.plot(
        "entropy_vs_heads",
        "Normalised entropy vs heads",
        chart.to_svg(),
    )?;

    let early = early_step(config);
    let mut table = Table::new(
        format!(
            "Training: 1-layer transformer on `{}`, Adam lr {}, {} steps ({} seeds)",
            config.task.kind, config.train.lr, config.train.steps, config.run.seeds
        ),
        &[
            "heads",
            "scale",
            &format!("loss @ step {early}"),
            "final accuracy (held out)",
            "steps to 90 %",
        ],
    );
    let mut loss_chart = LineChart::new("Training loss (mean over seeds)", "step", "loss");
    for r in rows {
        table.row(vec![
            r.h.to_string(),
            r.scale.to_string(),
            format!("{}", r.trained.early_loss),
            format!("{}", r.trained.accuracy),
            r.to90.clone(),
        ]);
        if let Some(loss) = &r.loss {
            loss_chart = loss_chart.line(format!("heads={} scale={}", r.h, r.scale), loss.clone());
        }
    }
    let mut acc_chart = LineChart::new(
        "Final accuracy vs heads (mean over seeds)",
        "heads",
        "accuracy",
    )
    .log_x();
    for &scale in &config.sweep.scales {
        let points = over_heads(trained, scale, |t| t.accuracy.mean);
        acc_chart = acc_chart.line(format!("scale {scale}"), points);
    }
    notebook.table(table);
    notebook.plot(
        "accuracy_vs_heads",
        "Final accuracy vs heads",
        acc_chart.to_svg(),
    )?;
    notebook.plot(
        "loss_vs_step",
        "Loss vs step at the most heads",
        loss_chart.to_svg(),
    )
}

/// The points at initialisation, the training rows and the early step, for `summary.json`.
fn summarise(
    config: &DkVsDModelConfig,
    init: &ByHeads<HeadPoint>,
    rows: &[TrainRow],
    notebook: &mut Notebook,
) {
    notebook.summarize("init", init.iter().map(|(h, r)| serde_json::json!({"n_heads": h, "points": r.iter().map(|(s, p)| serde_json::json!({"scale": s.to_string(), "point": p})).collect::<Vec<_>>()})).collect::<Vec<_>>());
    notebook.summarize("held_out_sequences", HELD_OUT);
    notebook.summarize(
        "train",
        rows.iter()
            .map(|r| serde_json::json!({"n_heads": r.h, "scale": r.scale.to_string(), "final_accuracy": r.trained.accuracy, "early_loss": r.trained.early_loss, "steps_to_90": r.to90, "steps_to_90_mean": r.trained.steps_to_90}))
            .collect::<Vec<_>>(),
    );
    notebook.summarize("early_step", early_step(config));
}

/// (h, value) for one scale across the swept head counts, ready to plot.
fn over_heads<T>(
    all: &ByHeads<T>,
    scale: ScoreScale,
    value: impl Fn(&T) -> f64,
) -> Vec<(f64, f64)> {
    all.iter()
        .filter_map(|(h, row)| {
            row.iter()
                .find(|(s, _)| *s == scale)
                .map(|(_, t)| (*h as f64, value(t)))
        })
        .collect()
}

fn pick<T: Copy>(row: &[(ScoreScale, T)], scale: ScoreScale) -> Option<T> {
    row.iter().find(|(s, _)| *s == scale).map(|(_, t)| *t)
}

/// √d_k against √d_model at initialisation and after training.
fn judge(
    config: &DkVsDModelConfig,
    init: &ByHeads<HeadPoint>,
    trained: &ByHeads<Trained>,
    notebook: &mut Notebook,
) {
    let both = config.sweep.scales.contains(&ScoreScale::SqrtDk)
        && config.sweep.scales.contains(&ScoreScale::SqrtDModel);
    if !both {
        notebook.finding("the sweep needs both `sqrt-dk` and `sqrt-dmodel` for its verdicts");
        return;
    }
    fn pair(row: &[(ScoreScale, HeadPoint)]) -> (&HeadPoint, &HeadPoint) {
        let find = |scale| {
            row.iter()
                .find(|(s, _)| *s == scale)
                .map(|(_, p)| p)
                .expect("both scales swept")
        };
        (find(ScoreScale::SqrtDk), find(ScoreScale::SqrtDModel))
    }

    // Sanity: h = 1 makes d_k = d_model, so both scales are the same computation.
    if let Some((_, row)) = init.iter().find(|(h, _)| *h == 1) {
        let (dk, dm) = pair(row);
        let diff = dk
            .weights
            .iter()
            .zip(&dm.weights)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        notebook.verdict(Verdict::new(
            "sanity: with one head the two scales are identical",
            diff == 0.0 && dk.logit_std == dm.logit_std,
            format!(
                "max |Δ weight| = {diff:e}, logit std {:.4} vs {:.4}",
                dk.logit_std, dm.logit_std
            ),
        ));
    }

    // Logit std ratio should be 1/√h at every h.
    let mut worst: f64 = 0.0;
    let mut ratios = Vec::new();
    for (h, row) in init {
        let (dk, dm) = pair(row);
        let ratio = dm.logit_std / dk.logit_std;
        let expected = 1.0 / (*h as f64).sqrt();
        worst = worst.max((ratio / expected - 1.0).abs());
        ratios.push(format!("h={h}: {ratio:.3} (1/√h = {expected:.3})"));
    }
    notebook.verdict(Verdict::new(
        "√d_model's logit std is 1/√h of √d_k's",
        worst < 0.02,
        format!(
            "std ratio √d_model/√d_k: {}; worst relative deviation {:.2e}",
            ratios.join(", "),
            worst
        ),
    ));

    // Entropy closer to uniform for h > 1.
    let flatter: Vec<String> = init
        .iter()
        .filter(|(h, _)| *h > 1)
        .map(|(h, row)| {
            let (dk, dm) = pair(row);
            format!(
                "h={h}: {:.3} vs {:.3}",
                dm.normalized_entropy, dk.normalized_entropy
            )
        })
        .collect();
    let all_flatter = init.iter().filter(|(h, _)| *h > 1).all(|(_, row)| {
        let (dk, dm) = pair(row);
        dm.normalized_entropy > dk.normalized_entropy
    });
    notebook.verdict(Verdict::new(
        "√d_model's attention is closer to uniform (entropy / ln n nearer 1) for h > 1",
        all_flatter && !flatter.is_empty(),
        format!("entropy / ln n, √d_model vs √d_k: {}", flatter.join(", ")),
    ));

    // Training at h ≥ 4: lower accuracy, or slower learning (higher early loss or more steps to 90 %).
    let mut evidence = Vec::new();
    let mut all_worse = true;
    let mut any = false;
    for (h, row) in trained.iter().filter(|(h, _)| *h >= 4) {
        let (Some(dk), Some(dm)) = (
            pick(row, ScoreScale::SqrtDk),
            pick(row, ScoreScale::SqrtDModel),
        ) else {
            continue;
        };
        any = true;
        // A difference counts only when it clears the seed-to-seed noise.
        let pooled = |a: Spread, b: Spread| ((a.std.powi(2) + b.std.powi(2)) / 2.0).sqrt();
        let worse =
            dm.accuracy.mean < dk.accuracy.mean - pooled(dm.accuracy, dk.accuracy).max(0.01);
        let slower = dm.early_loss.mean - dk.early_loss.mean
            > 2.0 * pooled(dm.early_loss, dk.early_loss)
            || dm.steps_to_90 > 1.1 * dk.steps_to_90;
        all_worse &= worse || slower;
        let how = match (worse, slower) {
            (true, true) => "worse and slower",
            (true, false) => "worse",
            (false, true) => "slower",
            (false, false) => "no difference beyond seed noise",
        };
        evidence.push(format!(
            "h={h} ({how}): final accuracy {:.3} vs {:.3}, early loss {} vs {}, mean steps to 90 % {:.0} vs {:.0}",
            dm.accuracy.mean, dk.accuracy.mean, dm.early_loss, dk.early_loss, dm.steps_to_90, dk.steps_to_90
        ));
    }
    if any {
        notebook.verdict(Verdict::new(
            "at h ≥ 4, √d_model learns worse or slower than √d_k (Adam; a gap counts when it exceeds the seed spread)",
            all_worse,
            format!("√d_model vs √d_k (means over seeds): {}", evidence.join("; ")),
        ));
    } else {
        notebook.finding("no swept head count is ≥ 4, so the training verdict was not tested");
    }
}
