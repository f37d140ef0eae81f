//! Measuring trained models: the held-out sequences every experiment judges them on (drawn from
//! the split training never sees, [`Task::held_out_batch`]), their loss, accuracy and attention
//! weights there, and the runs of one configuration over seeds ([`SeedRuns`]) summarised as
//! spreads, curves and steps to a threshold.

use burn::prelude::*;

use crate::lab::metrics::{Spread, first_step_reaching};
use crate::lab::model::TinyTransformer;
use crate::lab::tasks::{Batch, Task};
use crate::lab::train::{StepRecord, TrainRun, accuracy, cross_entropy};
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
        .infer(batch, task, device)
        .attention
        .swap_remove(0)
        .weights()
}

/// Accuracy of a trained model on `batch`: held-out sequences, unlike the training records.
pub fn held_out_accuracy(run: &TrainRun, task: &Task, batch: &Batch, device: &Device) -> f64 {
    let logits = held_out_logits(&run.model, task, batch, device); // [batch·n_out, classes]
    accuracy(logits, batch.targets(device))
}

/// The accuracy of a trained model on `batch` and how sharply its answers attend, from one
/// forward pass: the largest weight of each answer row (the last `n_out` queries), averaged over
/// the sequences, the heads and the layers. A row that spreads its weight evenly over n keys
/// scores 1/n, one that puts it all on one key scores 1: the quantity whose decay with n
/// Nakanishi 2025 calls attention fading.
pub fn held_out_accuracy_and_focus(
    run: &TrainRun,
    task: &Task,
    batch: &Batch,
    device: &Device,
) -> (f64, f64) {
    let out = run.model.infer(batch, task, device);
    let n_out = task.n_out();
    let focus: Vec<f64> = out
        .attention
        .iter()
        .map(|layer| {
            let weights = layer.weights(); // [batch, heads, n, n]
            let [b, h, n, _] = weights.dims();
            let answers = weights.slice([0..b, 0..h, n - n_out..n, 0..n]); // [batch, heads, n_out, n]
            f64::from(answers.max_dim(3).mean().into_scalar::<f32>())
        })
        .collect();
    let accuracy = accuracy(out.logits, batch.targets(device));
    (
        accuracy,
        focus.iter().sum::<f64>() / focus.len().max(1) as f64,
    )
}

/// Cross-entropy of a trained model on `batch`, held out like [`held_out_accuracy`]'s.
pub fn held_out_loss(run: &TrainRun, task: &Task, batch: &Batch, device: &Device) -> f64 {
    model_loss(&run.model, task, batch, device)
}

/// Cross-entropy of any `model` (trained or not) on `batch`.
pub fn model_loss(model: &TinyTransformer, task: &Task, batch: &Batch, device: &Device) -> f64 {
    let logits = held_out_logits(model, task, batch, device); // [batch·n_out, classes]
    f64::from(cross_entropy(logits, batch.targets(device)).into_scalar::<f32>())
}

/// `[batch·n_out, classes]`: the logits of `model` on `batch`, without autodiff.
fn held_out_logits(
    model: &TinyTransformer,
    task: &Task,
    batch: &Batch,
    device: &Device,
) -> Tensor<2> {
    model.infer(batch, task, device).logits
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
