//! `counting`: what a row softmax cannot count, and the beginning-of-sequence token that lets it.
//!
//! On `count` (how many times does the queried symbol occur?) the query should attend to the c
//! matching tokens. A row softmax gives each of them 1/c: the context it reads is the mean of c
//! identical values, the same for c = 1 and c = 4, so the count is normalised away. A column
//! softmax does not normalise over keys and a whole-matrix softmax not per query, so the total
//! weight on the matches can grow with c. The known fix keeps the row softmax and adds a token
//! every query may attend to (a BOS; the "attention sink" of Xiao et al. 2023): attending equally
//! to the c matches and the BOS leaves 1/(c+1) on the BOS, and its share of the context encodes c.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::block::softmax::SoftmaxAxis;
use crate::lab::evaluate::eval_batch;
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{Spread, argmax_rows, head_matrix, to_host};
use crate::lab::model::ModelConfig;
use crate::lab::tasks::{Batch, Task, TaskConfig, TaskKind};
use crate::lab::train::TrainConfig;
use crate::output::plot::Heatmap;
use crate::output::report::{MetricRow, Table, Verdict};
use crate::run::config::{
    Invalid, RunConfig, Validate, at_least, experiment_config, non_empty, validate_in,
};
use crate::run::experiment::{Experiment, Notebook, RunError};
use crate::run::training::{Variant, compare};
use crate::util::rng::HostRng;

/// `configs/counting.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountingConfig {
    #[serde(default)]
    pub run: RunConfig,
    /// Must be `count`.
    pub task: TaskConfig,
    /// The model; `softmax_axis` and `bos` are set by the experiment, so they must be absent.
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Held-out sequences the accuracies are judged on.
    pub eval_size: usize,
    /// Counts c whose answer query's weights are drawn.
    pub heatmap_counts: Vec<usize>,
}

/// The four variants: (label, softmax axis, BOS).
pub const VARIANTS: [(&str, SoftmaxAxis, bool); 4] = [
    ("row", SoftmaxAxis::Row, false),
    ("column", SoftmaxAxis::Column, false),
    ("whole", SoftmaxAxis::Whole, false),
    ("row + BOS", SoftmaxAxis::Row, true),
];

impl CountingConfig {
    fn model_with(&self, axis: SoftmaxAxis, bos: bool) -> ModelConfig {
        ModelConfig {
            softmax_axis: axis,
            bos,
            ..self.model.clone()
        }
    }
}

impl Validate for CountingConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.run.validate()?;
        validate_in("task", &self.task)?;
        if self.task.kind != TaskKind::Count {
            return Err(Invalid::new(
                "task.kind",
                format!("must be \"count\", got \"{}\"", self.task.kind),
            ));
        }
        if self.model.softmax_axis != SoftmaxAxis::Row || self.model.bos {
            return Err(Invalid::new(
                if self.model.bos {
                    "model.bos"
                } else {
                    "model.softmax_axis"
                },
                "is set by the experiment (it compares row, column, whole and row + BOS); leave it out",
            ));
        }
        validate_in("train", &self.train)?;
        for (_, axis, bos) in VARIANTS {
            validate_in("model", &self.model_with(axis, bos))?;
        }
        at_least("eval_size", self.eval_size, 1)?;
        non_empty("heatmap_counts", &self.heatmap_counts)?;
        if let Some(c) = self.heatmap_counts.iter().find(|&&c| c > self.task.length) {
            return Err(Invalid::new(
                "heatmap_counts",
                format!(
                    "{c} is more than the {} symbols a sequence has",
                    self.task.length
                ),
            ));
        }
        Ok(())
    }
}

experiment_config!(CountingConfig);

/// BOS's recovery counts as "most of the gap" from this fraction on.
pub const MOST: f64 = 0.5;

/// Held-out accuracy of one variant, and per true count c.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOut {
    pub label: String,
    pub accuracy: Spread,
    /// (c, accuracy over seeds on the held-out sequences whose answer is c, how many there are).
    pub by_count: Vec<(usize, f64, usize)>,
}

/// Accuracy over seeds on `batch`, and pooled per true count.
fn held_out(variant: &Variant, task: &Task, batch: &Batch, device: &Device) -> HeldOut {
    let mut hits = vec![(0usize, 0usize); task.classes()];
    let mut per_seed = Vec::new();
    for run in &variant.runs.runs {
        let logits = run.model.infer(batch, task, device).logits; // [batch, classes]
        let predictions = argmax_rows(&to_host(logits), task.classes());
        let mut right = 0;
        for (&p, &t) in predictions.iter().zip(&batch.targets) {
            let slot = &mut hits[t as usize];
            let hit = usize::from(p == t as usize);
            (slot.0, slot.1, right) = (slot.0 + hit, slot.1 + 1, right + hit);
        }
        per_seed.push(right as f64 / predictions.len().max(1) as f64);
    }
    let seeds = variant.runs.runs.len().max(1);
    HeldOut {
        label: variant.label.clone(),
        accuracy: Spread::of(&per_seed),
        by_count: hits
            .into_iter()
            .enumerate()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(c, (right, n))| (c, right as f64 / n as f64, n / seeds))
            .collect(),
    }
}

/// The experiment.
pub struct Counting;

impl Experiment for Counting {
    const NAME: &'static str = "counting";
    const TITLE: &'static str =
        "a row softmax normalises the count away; a BOS token gives it back";
    const CLAIM: &'static str = "On `count` (how many times does the queried symbol occur?) a row \
        softmax gives each of the c matching keys 1/c, so the context is the same whatever c is: \
        it counts worse than a column softmax, which is not normalised over keys. Adding a \
        beginning-of-sequence token that every query may attend to recovers most of the gap: \
        attending equally to the matches and the BOS leaves 1/(c+1) on the BOS. A one-layer \
        transformer (Adam) is trained with the row, column and whole-matrix softmax and with the \
        row softmax plus a BOS, and judged on held-out sequences.";
    type Config = CountingConfig;

    fn footprint(config: &CountingConfig) -> Footprint {
        let batch = config.train.batch_size.max(config.eval_size);
        footprint::training_on(
            &config.model_with(SoftmaxAxis::Row, true),
            &config.task,
            batch,
        )
    }

    fn work(config: &CountingConfig) -> u64 {
        (VARIANTS.len() * config.run.seeds * config.train.steps) as u64
    }

    fn run(config: &CountingConfig, notebook: &mut Notebook) -> Result<(), RunError> {
        let task = Task::new(config.task.clone())?;
        let seeds = config.run.seed_list();
        let models: Vec<(String, ModelConfig)> = VARIANTS
            .iter()
            .map(|&(label, axis, bos)| (label.to_string(), config.model_with(axis, bos)))
            .collect();
        let variants = compare(
            notebook,
            "count",
            "Counting",
            &models,
            &task,
            &config.train,
            &seeds,
        )?;

        let held = measure_held_out(config, &task, &variants, notebook);
        show(config, &task, &variants, &held, notebook)?;
        judge(&held, notebook);
        notebook.summarize("held_out", &held);
        notebook.summarize("eval_size", config.eval_size);
        Ok(())
    }
}

/// Every variant on a fixed held-out batch from its own stream, never trained on: overall and
/// by the true count.
fn measure_held_out(
    config: &CountingConfig,
    task: &Task,
    variants: &[Variant],
    notebook: &mut Notebook,
) -> Vec<HeldOut> {
    let batch = eval_batch(task, config.eval_size, config.run.seed);
    let held: Vec<HeldOut> = variants
        .iter()
        .map(|v| held_out(v, task, &batch, &notebook.device))
        .collect();
    for h in &held {
        notebook.metric(MetricRow::new(
            "held_out",
            &h.label,
            "accuracy",
            h.accuracy.mean,
        ));
        for (c, acc, _) in &h.by_count {
            notebook.metric(MetricRow::new(
                "held_out",
                &h.label,
                &format!("accuracy.c{c}"),
                *acc,
            ));
        }
    }
    held
}

/// The held-out table, and the answer query's weights per count.
fn show(
    config: &CountingConfig,
    task: &Task,
    variants: &[Variant],
    held: &[HeldOut],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let mut table = Table::new(
        format!(
            "Held-out accuracy on {} sequences, mean over {} seed(s), overall and by the true count c",
            config.eval_size, config.run.seeds
        ),
        &["variant", "accuracy", "by count (c: accuracy, sequences)"],
    );
    for h in held {
        table.row(vec![
            h.label.clone(),
            format!("{}", h.accuracy),
            h.by_count
                .iter()
                .map(|(c, a, n)| format!("{c}: {a:.2} ({n})"))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    notebook.table(table);
    heatmaps(config, task, variants, notebook)
}

/// The row softmax counts worse than the column one; a BOS token recovers most of the gap.
fn judge(held: &[HeldOut], notebook: &mut Notebook) {
    let find = |label: &str| {
        held.iter()
            .find(|h| h.label == label)
            .expect("every variant")
    };
    let (row, column, bos) = (find("row"), find("column"), find("row + BOS"));
    notebook.verdict(Verdict::new(
        "the plain row softmax counts worse than the column softmax (held out)",
        row.accuracy.clearly_below(&column.accuracy),
        format!(
            "held-out accuracy: row {}, column {}, whole {} (margin ±{:.3})",
            row.accuracy,
            column.accuracy,
            find("whole").accuracy,
            row.accuracy.margin_against(&column.accuracy)
        ),
    ));
    let gap = column.accuracy.mean - row.accuracy.mean;
    let recovered = (bos.accuracy.mean - row.accuracy.mean) / gap;
    notebook.verdict(Verdict::new(
        format!("a BOS token recovers most (≥ {MOST:.0}%) of the row softmax's gap to the column softmax", MOST = MOST * 100.0),
        gap > 0.0 && recovered >= MOST,
        if gap > 0.0 {
            format!(
                "row + BOS {} against row {} and column {}: {:.0}% of the gap",
                bos.accuracy,
                row.accuracy,
                column.accuracy,
                100.0 * recovered
            )
        } else {
            format!(
                "there is no gap to recover: row {} is not below column {}",
                row.accuracy, column.accuracy
            )
        },
    ));
}

/// For each c in `heatmap_counts`, one held-out sequence whose answer is c, and the answer
/// query's weights in every variant (first seed, head 0): rows are variants, columns the keys.
fn heatmaps(
    config: &CountingConfig,
    task: &Task,
    variants: &[Variant],
    notebook: &mut Notebook,
) -> Result<(), RunError> {
    let device = notebook.device.clone();
    let mut rng = HostRng::new(config.run.seed ^ 0xC0C0_A7E5);
    for &c in &config.heatmap_counts {
        // Half the queries ask for a present symbol, so every c ≤ length turns up; the bound
        // only stops a pathological task from looping.
        let Some(example) = (0..10_000)
            .map(|_| task.held_out_batch(1, &mut rng))
            .find(|b| b.targets[0] as usize == c)
        else {
            notebook.finding(format!(
                "no sequence with count {c} turned up in 10,000 draws; its heatmap is left out"
            ));
            continue;
        };
        let mut keys = vec!["BOS".to_string()];
        keys.extend(example.tokens.iter().map(|&t| task.token_name(t as usize)));
        let mut rows = Vec::new();
        for v in variants {
            let Some(run) = v.runs.runs.first() else {
                continue;
            };
            let weights = run
                .model
                .infer(&example, task, &device)
                .attention
                .swap_remove(0)
                .weights(); // [1, heads, positions, positions]
            let matrix = head_matrix(weights, 0, 0);
            let mut answer = matrix.last().cloned().unwrap_or_default();
            if run.model.bos.is_none() {
                // No BOS key: nothing can sit there.
                answer.insert(0, 0.0);
            }
            rows.push(answer);
        }
        let heatmap = Heatmap::new(
            format!("The answer query's weights, count {c} (BOS column: only the BOS model has that key)"),
            "variant",
            "key",
            rows,
        )
        .names(variants.iter().map(|v| v.label.clone()).collect(), keys);
        notebook.plot(
            &format!("answer_weights_c{c}"),
            &format!("Answer query's weights for count {c}"),
            heatmap.to_svg(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_experiment_sets_the_axis_and_the_bos() {
        let config: CountingConfig =
            toml::from_str(&std::fs::read_to_string("configs/counting.toml").unwrap()).unwrap();
        config.validate().unwrap();
        let mut bad = config.clone();
        bad.model.bos = true;
        assert_eq!(bad.validate().unwrap_err().key, "model.bos");
        let mut bad = config.clone();
        bad.task.kind = TaskKind::Majority;
        assert_eq!(bad.validate().unwrap_err().key, "task.kind");
        let mut bad = config;
        bad.heatmap_counts = vec![99];
        assert_eq!(bad.validate().unwrap_err().key, "heatmap_counts");
    }
}
