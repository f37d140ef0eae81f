//! Training one configuration over several seeds, the way every training experiment does it:
//! records every probe into the lab's metrics, reports a diverged run as a finding, and
//! summarises curves over seeds.

use burn::module::Module;
use burn::prelude::*;

use crate::lab::checkpoint::ModelSpec;
use crate::lab::metrics::{Spread, first_step_reaching, head_matrix};
use crate::lab::model::{ModelConfig, TinyTransformer};
use crate::lab::tasks::{Batch, Task};
use crate::lab::train::{StepRecord, TrainConfig, TrainRun, train_on};
use crate::output::plot::{Heatmap, LineChart};
use crate::output::report::{MetricRow, Table};
use crate::run::runner::{Lab, LabError};
use crate::run::shard::{Unit, UnitKey};
use crate::util::rng::HostRng;

/// The runs of one configuration, one per seed.
#[derive(Debug, Clone)]
pub struct SeedRuns {
    pub runs: Vec<TrainRun>,
}

impl SeedRuns {
    /// (step, mean over seeds of `value`) at each recorded step that every run reached, ready
    /// to plot.
    pub fn mean_series(&self, value: impl Fn(&StepRecord) -> f64) -> Vec<(f64, f64)> {
        let shortest = self.runs.iter().map(|r| r.records.len()).min().unwrap_or(0);
        (0..shortest)
            .map(|i| {
                let step = self.runs[0].records[i].step;
                let mean = self.runs.iter().map(|r| value(&r.records[i])).sum::<f64>()
                    / self.runs.len() as f64;
                (step as f64, mean)
            })
            .collect()
    }

    /// Spread over seeds of `value` averaged over each run's last `k` records.
    pub fn final_spread(&self, k: usize, value: impl Fn(&StepRecord) -> f64 + Copy) -> Spread {
        self.spread_at(usize::MAX, k, value)
    }

    /// Spread over seeds of the mean of `value` over the `k` records up to `step`.
    pub fn spread_at(
        &self,
        step: usize,
        k: usize,
        value: impl Fn(&StepRecord) -> f64 + Copy,
    ) -> Spread {
        let values: Vec<f64> = self
            .runs
            .iter()
            .map(|r| r.window_mean(step, k, value))
            .collect();
        Spread::of(&values)
    }

    /// For each seed, the first step whose accuracy, smoothed over `k` records, reaches
    /// `threshold`; `None` for a seed that never does.
    pub fn steps_to_accuracy(&self, threshold: f64, k: usize) -> Vec<Option<usize>> {
        self.runs
            .iter()
            .map(|r| {
                let acc = r.series(|rec| rec.accuracy);
                let smoothed: Vec<(usize, f64)> = (0..acc.len())
                    .map(|i| {
                        let w = &acc[i.saturating_sub(k - 1)..=i];
                        (
                            acc[i].0,
                            w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
                        )
                    })
                    .collect();
                first_step_reaching(&smoothed, threshold)
            })
            .collect()
    }

    /// Spread over seeds of the (loss, accuracy) on the held-out `batch`.
    pub fn held_out(&self, task: &Task, batch: &Batch, device: &Device) -> (Spread, Spread) {
        let (losses, accuracies): (Vec<f64>, Vec<f64>) = self
            .runs
            .iter()
            .map(|r| {
                (
                    held_out_loss(r, task, batch, device),
                    held_out_accuracy(r, task, batch, device),
                )
            })
            .unzip();
        (Spread::of(&losses), Spread::of(&accuracies))
    }

    /// Whether any seed stopped early.
    pub fn diverged(&self) -> bool {
        self.runs.iter().any(|r| r.divergence.is_some())
    }
}

/// "412" or "never" for each seed's steps-to-threshold, and the mean over seeds with a run that
/// never got there counted at `cap` (the step budget), so the mean is a lower bound then.
pub fn describe_steps(steps: &[Option<usize>], cap: usize) -> (String, f64) {
    let text = steps
        .iter()
        .map(|s| s.map_or("never".to_string(), |v| v.to_string()))
        .collect::<Vec<_>>()
        .join("/");
    let mean =
        steps.iter().map(|s| s.unwrap_or(cap) as f64).sum::<f64>() / steps.len().max(1) as f64;
    (text, mean)
}

/// One trained variant of a comparison, summarised over seeds.
#[derive(Debug, Clone)]
pub struct Variant {
    pub label: String,
    pub runs: SeedRuns,
    /// Loss and accuracy on [`HELD_OUT`] held-out sequences at the end of training.
    pub loss: Spread,
    pub accuracy: Spread,
    /// Loss and accuracy over each seed's last training records.
    pub train_loss: Spread,
    pub train_accuracy: Spread,
    /// Steps to 90 % accuracy per seed ("412/never/388") and their mean (a never counts as the
    /// step budget).
    pub to90: String,
    pub to90_mean: f64,
}

/// Records averaged for "final" numbers.
pub const FINAL_WINDOW: usize = 5;

/// Trains each (label, model) on `task` over `seeds`, and reports them side by side: a line per
/// variant, a table (final loss, final accuracy, steps to 90 %), and loss and accuracy curves
/// written as `<part>_loss_vs_step.svg` and `<part>_accuracy_vs_step.svg`.
pub fn compare(
    lab: &mut Lab,
    part: &str,
    title: &str,
    variants: &[(String, ModelConfig)],
    task: &Task,
    config: &TrainConfig,
    seeds: &[u64],
) -> Result<Vec<Variant>, LabError> {
    let mut table = Table::new(
        format!(
            "{title}: `{}`, Adam lr {}, {} steps, {} seed{}; final numbers on {HELD_OUT} held-out sequences",
            task.kind(),
            config.lr,
            config.steps,
            seeds.len(),
            if seeds.len() == 1 { "" } else { "s" }
        ),
        &[
            "variant",
            "final loss (held out)",
            "final accuracy (held out)",
            "training loss / accuracy (last records)",
            "steps to 90 % (training)",
        ],
    );
    let mut loss_chart = LineChart::new(format!("{title}: loss (mean over seeds)"), "step", "loss");
    let mut acc_chart = LineChart::new(
        format!("{title}: accuracy (mean over seeds)"),
        "step",
        "accuracy",
    );
    let mut out = Vec::with_capacity(variants.len());
    let held_out = eval_batch(task, HELD_OUT, seeds.first().copied().unwrap_or(0));
    for (label, model) in variants {
        let runs = train_seeds(lab, part, label, model, task, config, seeds)?;
        let train_loss = runs.final_spread(FINAL_WINDOW, |r| r.loss);
        let train_accuracy = runs.final_spread(FINAL_WINDOW, |r| r.accuracy);
        let (loss, accuracy) = runs.held_out(task, &held_out, &lab.device);
        let (to90, to90_mean) = describe_steps(&runs.steps_to_accuracy(0.9, 3), config.steps);
        lab.say(format!(
            "{label}: held-out loss {loss}, held-out accuracy {accuracy}, steps to 90 % {to90}"
        ));
        table.row(vec![
            label.clone(),
            format!("{loss}"),
            format!("{accuracy}"),
            format!("{train_loss} / {train_accuracy}"),
            to90.clone(),
        ]);
        loss_chart = loss_chart.line(label, runs.mean_series(|r| r.loss));
        acc_chart = acc_chart.line(label, runs.mean_series(|r| r.accuracy));
        out.push(Variant {
            label: label.clone(),
            runs,
            loss,
            accuracy,
            train_loss,
            train_accuracy,
            to90,
            to90_mean,
        });
    }
    lab.table(table);
    lab.plot(
        &format!("{part}_loss_vs_step"),
        &format!("{title}: loss vs step"),
        loss_chart.to_svg(),
    )?;
    lab.plot(
        &format!("{part}_accuracy_vs_step"),
        &format!("{title}: accuracy vs step"),
        acc_chart.to_svg(),
    )?;
    lab.summarize(
        part,
        out.iter()
            .map(|v| {
                serde_json::json!({
                    "variant": v.label, "final_loss": v.loss, "final_accuracy": v.accuracy,
                    "train_loss": v.train_loss, "train_accuracy": v.train_accuracy,
                    "held_out_sequences": HELD_OUT,
                    "steps_to_90": v.to90, "steps_to_90_mean": v.to90_mean,
                    "diverged": v.runs.diverged(),
                })
            })
            .collect::<Vec<_>>(),
    );
    Ok(out)
}

/// One held-out sequence to draw every variant's weights on, the same for all of them.
pub fn example_batch(task: &Task, seed: u64) -> Batch {
    task.held_out_batch(1, &mut HostRng::new(seed ^ 0xE8A4_F1E0))
}

/// `size` held-out sequences to measure every trained variant on, the same for all of them and
/// for the same `seed`: drawn from their own stream, from the split training never draws from
/// ([`Task::held_out_batch`]).
pub fn eval_batch(task: &Task, size: usize, seed: u64) -> Batch {
    task.held_out_batch(size, &mut HostRng::new(seed ^ 0x0E7A_1BA7))
}

/// Held-out sequences every training comparison judges its final numbers on: the standard error
/// of an accuracy over them is at most 0.5/√1024 ≈ 0.016.
pub const HELD_OUT: usize = 1024;

/// The first block's attention weights of a trained model on `batch`: `[batch, heads, n, n]`.
pub fn trained_weights(run: &TrainRun, task: &Task, batch: &Batch, device: &Device) -> Tensor<4> {
    run.model
        .valid()
        .forward(batch.tokens(device), task.n_out())
        .attention
        .swap_remove(0)
        .weights()
}

/// Accuracy of a trained model on `batch`: held-out sequences, unlike the training records.
pub fn held_out_accuracy(run: &TrainRun, task: &Task, batch: &Batch, device: &Device) -> f64 {
    let logits = held_out_logits(&run.model, task, batch, device); // [batch·n_out, classes]
    crate::lab::train::accuracy(logits, batch.targets(device))
}

/// Cross-entropy of a trained model on `batch`, held out like [`held_out_accuracy`]'s.
pub fn held_out_loss(run: &TrainRun, task: &Task, batch: &Batch, device: &Device) -> f64 {
    model_loss(&run.model, task, batch, device)
}

/// Cross-entropy of any `model` (trained or not) on `batch`.
pub fn model_loss(model: &TinyTransformer, task: &Task, batch: &Batch, device: &Device) -> f64 {
    let logits = held_out_logits(model, task, batch, device); // [batch·n_out, classes]
    f64::from(crate::lab::train::cross_entropy(logits, batch.targets(device)).into_scalar::<f32>())
}

/// `[batch·n_out, classes]`: the logits of `model` on `batch`, without autodiff.
fn held_out_logits(
    model: &TinyTransformer,
    task: &Task,
    batch: &Batch,
    device: &Device,
) -> Tensor<2> {
    model
        .valid()
        .forward(batch.tokens(device), task.n_out())
        .logits
}

/// Head 0 of the first sequence of `weights`, queries on rows.
pub fn weights_heatmap(title: impl Into<String>, weights: Tensor<4>) -> Heatmap {
    Heatmap::new(
        title,
        "query position",
        "key position",
        head_matrix(weights, 0, 0),
    )
}

/// Trains `model` on `task` once per seed, recording every probe under `part`/`label`, and
/// advancing the progress bar one unit per step; keeps every seed's model for the run folder.
pub fn train_seeds(
    lab: &mut Lab,
    part: &str,
    label: &str,
    model: &ModelConfig,
    task: &Task,
    config: &TrainConfig,
    seeds: &[u64],
) -> Result<SeedRuns, LabError> {
    let runs = run_seeds(
        lab,
        part,
        label,
        model,
        std::slice::from_ref(task),
        config,
        seeds,
    )?;
    keep_models(lab, part, label, model, task, seeds, &runs)?;
    Ok(runs)
}

/// [`train_seeds`] without keeping the models (for sweeps too large to save every point of), on
/// one task or a mixture of them (see [`crate::lab::train::train_on`]).
pub fn run_seeds(
    lab: &mut Lab,
    part: &str,
    label: &str,
    model: &ModelConfig,
    tasks: &[Task],
    config: &TrainConfig,
    seeds: &[u64],
) -> Result<SeedRuns, LabError> {
    let mut runs = Vec::with_capacity(seeds.len());
    // Everything that decides a run besides its names and seed, for the shards' unit keys.
    let shape = format!("{model:?}|{tasks:?}|{config:?}");
    for &seed in seeds {
        lab.status(format!("{part}: {label} seed {seed}"));
        let device = lab.autodiff.clone();
        let key = UnitKey::new(part, label, seed, &shape);
        let run = match lab.units.begin(&key, &device)? {
            (_, Unit::Stored(run)) => {
                lab.advance(config.steps as u64);
                *run
            }
            (_, Unit::Elsewhere) => {
                lab.advance(config.steps as u64);
                stand_in(model, tasks, config, seed, &device)?
            }
            (unit, Unit::Train) => {
                let mut done = 0u64;
                let run = {
                    let lab_ref = &*lab;
                    train_on(model, tasks, config, seed, &device, &mut |_| {
                        done += 1;
                        lab_ref.advance(1);
                    })?
                };
                // A run that stopped early still owes the bar its remaining steps.
                lab.advance(config.steps as u64 - done);
                lab.units
                    .keep(unit, &key, &unit_spec(model, tasks, seed), &run)?;
                run
            }
        };
        record(lab, part, label, seed, &run);
        if let Some(d) = &run.divergence {
            lab.finding(format!(
                "{label}, seed {seed}: {d}; the records up to it are kept"
            ));
        }
        runs.push(run);
    }
    Ok(SeedRuns { runs })
}

/// What a shard puts in place of a training run another shard trains (see
/// [`crate::run::shard`]): one real step, so that every number is finite and of the right shape,
/// its record repeated at every step the full run would record, and the model after that step.
/// Nothing computed from it is kept.
fn stand_in(
    model: &ModelConfig,
    tasks: &[Task],
    config: &TrainConfig,
    seed: u64,
    device: &Device,
) -> Result<TrainRun, LabError> {
    let one_step = TrainConfig {
        steps: 1,
        ..config.clone()
    };
    let mut run = train_on(model, tasks, &one_step, seed, device, &mut |_| {})?;
    if let Some(first) = run.records.first().cloned() {
        let every = config.log_every.max(1);
        run.records = (0..config.steps)
            .filter(|s| s.is_multiple_of(every) || s + 1 == config.steps)
            .map(|step| StepRecord {
                step,
                ..first.clone()
            })
            .collect();
    }
    Ok(run)
}

/// The spec a unit's model is stored with: built for the longest of `tasks`.
fn unit_spec(model: &ModelConfig, tasks: &[Task], seed: u64) -> ModelSpec {
    let longest = tasks.iter().map(Task::seq_len).max().unwrap_or(0);
    let mut spec = ModelSpec::new(model, &tasks[0], seed);
    spec.max_len = longest;
    spec
}

/// Keeps each seed's trained model as `models/<part>-<label>-seed<seed>`.
pub fn keep_models(
    lab: &mut Lab,
    part: &str,
    label: &str,
    model: &ModelConfig,
    task: &Task,
    seeds: &[u64],
    runs: &SeedRuns,
) -> Result<(), LabError> {
    for (&seed, run) in seeds.iter().zip(&runs.runs) {
        lab.keep_model(
            &format!("{part}-{label}-seed{seed}"),
            &run.model,
            &ModelSpec::new(model, task, seed),
        )?;
    }
    Ok(())
}

/// Every probe of a run as metric rows.
fn record(lab: &mut Lab, part: &str, label: &str, seed: u64, run: &TrainRun) {
    for r in &run.records {
        let row = |metric: &str, value: f64| {
            MetricRow::new(part, label, metric, value)
                .seed(seed)
                .step(r.step)
        };
        lab.metric(row("loss", r.loss));
        lab.metric(row("accuracy", r.accuracy));
        for g in &r.grads {
            lab.metric(row(&format!("grad_norm.{}", g.name), g.norm).layer(g.layer));
        }
        for h in &r.heads {
            lab.metric(row("entropy", h.entropy).layer(Some(h.layer)).head(h.head));
            lab.metric(
                row("max_weight", h.max_weight)
                    .layer(Some(h.layer))
                    .head(h.head),
            );
        }
        for (layer, s) in r.logit_std.iter().enumerate() {
            lab.metric(row("logit_std", *s).layer(Some(layer)));
        }
        for (layer, m) in r.max_logit.iter().enumerate() {
            lab.metric(row("max_logit", *m).layer(Some(layer)));
        }
        let (readout, layers) = r.output_abs.split_last().unzip();
        for (layer, m) in layers.unwrap_or_default().iter().enumerate() {
            lab.metric(row("attention_out_abs", *m).layer(Some(layer)));
        }
        if let Some(readout) = readout {
            lab.metric(row("readout_abs", *readout));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::tasks::{TaskConfig, TaskKind};

    /// Every sequence an experiment evaluates or shows a model on comes from the held-out split.
    #[test]
    fn evaluation_and_example_sequences_are_held_out() {
        for kind in [TaskKind::Recall, TaskKind::Copy, TaskKind::Count] {
            let task = Task::new(TaskConfig::new(kind, 6, 8)).unwrap();
            for batch in [eval_batch(&task, 64, 3), example_batch(&task, 3)] {
                for row in batch.tokens.chunks(batch.seq_len) {
                    let tokens: Vec<usize> = row.iter().map(|&t| t as usize).collect();
                    assert!(
                        Task::is_held_out(&tokens),
                        "{kind}: {tokens:?} is a training draw"
                    );
                }
            }
        }
    }
}
