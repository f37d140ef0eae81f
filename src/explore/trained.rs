//! The explorer's "trained model" mode: the models an experiment run saved under `models/`,
//! and their attention, layer by layer and head by head, on fresh examples of their task.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::{Value, json};

use crate::lab::checkpoint::{self, CheckpointError, ModelSpec};
use crate::lab::metrics::{argmax_rows, first_key_weight_per_head, head_rows, to_host};
use crate::lab::model::TinyTransformer;
use crate::lab::tasks::{Task, TaskError};
use crate::util::rng::HostRng;

/// Most models loaded from one run: a sweep with many seeds and widths stays browsable.
pub const MAX_MODELS: usize = 200;

/// Why a run folder's models cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum TrainedError {
    #[error(
        "{dir} has no models/ folder: run an experiment that trains (e.g. scaling) and pass its run folder, results/<experiment>/<run-id>"
    )]
    NoModels { dir: PathBuf },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the task in the spec of {stem} is not valid: {source}")]
    Task { stem: String, source: TaskError },
}

/// One loaded model.
pub struct TrainedModel {
    /// The checkpoint's file stem, e.g. `recall-sqrt-dk-seed0`.
    pub name: String,
    pub model: TinyTransformer,
    pub spec: ModelSpec,
    task: Task,
}

/// The trained models of one run folder.
pub struct Trained {
    pub run: PathBuf,
    pub models: Vec<TrainedModel>,
    /// Checkpoints past [`MAX_MODELS`], left out (the first ones by name are loaded).
    pub skipped: usize,
}

impl Trained {
    /// Loads every `models/<stem>.bpk` + `.json` of the run folder `run` onto `device`, in name
    /// order (at most [`MAX_MODELS`]).
    pub fn load(run: &Path, device: &Device) -> Result<Self, TrainedError> {
        let folder = run.join("models");
        if !folder.is_dir() {
            return Err(TrainedError::NoModels {
                dir: run.to_path_buf(),
            });
        }
        let stems = checkpoint::stems(&folder)?;
        if stems.is_empty() {
            return Err(TrainedError::NoModels {
                dir: run.to_path_buf(),
            });
        }
        let models = stems
            .iter()
            .take(MAX_MODELS)
            .map(|stem| {
                let (model, spec) = checkpoint::load(stem, device)?;
                let name = stem
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let task = Task::new(spec.task.clone()).map_err(|source| TrainedError::Task {
                    stem: name.clone(),
                    source,
                })?;
                Ok(TrainedModel {
                    name,
                    model,
                    spec,
                    task,
                })
            })
            .collect::<Result<Vec<_>, TrainedError>>()?;
        Ok(Self {
            run: run.to_path_buf(),
            skipped: stems.len() - models.len(),
            models,
        })
    }

    /// What the page lists: each model's name, task and shape.
    pub fn summary(&self) -> Value {
        json!({
            "run": self.run.display().to_string(),
            "skipped": self.skipped,
            "models": self.models.iter().map(|m| json!({
                "name": m.name,
                "task": m.spec.task.kind.name(),
                "n_layers": m.spec.model.n_layers,
                "n_heads": m.spec.model.n_heads,
                "d_model": m.spec.model.d_model,
                "positional": m.spec.model.positional.name(),
                "seed": m.spec.seed,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn find(&self, name: &str) -> Option<&TrainedModel> {
        self.models.iter().find(|m| m.name == name)
    }
}

impl TrainedModel {
    /// One example of the model's task drawn with `seed`, and what the model made of it: the
    /// tokens, the answer positions (the last `n_out`), the targets and predictions there, and
    /// every layer's attention weights per head (`layers[l][h][query][key]`). Beside them, for
    /// attention sinks: each head's mean weight on position 0 over the queries after it
    /// (`first_key[l][h]`), the weight each query left unspent (`unspent[l][h][query]`, 0 but
    /// under the off-by-one softmax) and each head's gate per query (`gates[l][h][query]`, `null`
    /// without a gate). `rollout[query][key]` is the attention rollout across the layers
    /// ([`rollout`]).
    pub fn example(&self, seed: u64, device: &Device) -> Value {
        let batch = self.task.held_out_batch(1, &mut HostRng::new(seed));
        let (n, n_out) = (batch.seq_len, batch.n_out);
        let out = self.model.forward(batch.tokens(device), n_out);
        let classes = self.task.classes();
        let logits = to_host(out.logits); // [n_out·classes]
        let predictions = argmax_rows(&logits, classes);
        let first_key: Vec<Vec<f64>> = out
            .attention
            .iter()
            .map(|a| first_key_weight_per_head(a.weights()))
            .collect();
        let gates: Vec<Option<Vec<Vec<f32>>>> = out
            .attention
            .iter()
            .map(|a| {
                a.gate.clone().map(|g| {
                    // [1, n, heads] → per head, one value per query
                    let [_, n, heads] = g.dims();
                    let values = to_host(g);
                    (0..heads)
                        .map(|h| (0..n).map(|i| values[i * heads + h]).collect())
                        .collect()
                })
            })
            .collect();
        let layers: Vec<Vec<Vec<Vec<f32>>>> = out
            .attention
            .into_iter()
            .map(|a| head_rows(a.weights()))
            .collect();
        let unspent: Vec<Vec<Vec<f32>>> = layers
            .iter()
            .map(|heads| {
                heads
                    .iter()
                    .map(|rows| rows.iter().map(|r| 1.0 - r.iter().sum::<f32>()).collect())
                    .collect()
            })
            .collect();
        let rollout = rollout(&layers);
        let targets: Vec<usize> = batch.targets.iter().map(|&t| t as usize).collect();
        // With a BOS the weights have one more key and query, in front.
        let offset = usize::from(self.spec.model.bos);
        let bos = self.spec.model.bos.then(|| "BOS".to_string()).into_iter();
        json!({
            "model": self.name,
            "task": self.spec.task.kind.name(),
            "seed": seed,
            "tokens": bos.chain(batch.tokens.iter().map(|&t| self.task.token_name(t as usize))).collect::<Vec<_>>(),
            "answer_positions": (offset + n - n_out..offset + n).collect::<Vec<_>>(),
            "targets": targets.iter().map(|&c| self.task.class_name(c)).collect::<Vec<_>>(),
            "predictions": predictions.iter().map(|&c| self.task.class_name(c)).collect::<Vec<_>>(),
            "correct": predictions.iter().zip(&targets).filter(|(p, t)| p == t).count(),
            "layers": layers,
            "rollout": rollout,
            "first_key": first_key,
            "unspent": unspent,
            "gates": gates,
        })
    }
}

/// Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): each
/// layer's weights averaged over its heads, the residual stream added as A = 0.5·W + 0.5·I with
/// each row renormalised to sum to 1, and the layers multiplied, last first:
/// R = A_L · … · A_1. `rollout[i][j]` is how much of input token j reaches position i at the
/// top, if attention and the residual were all that mixed tokens. `layers[l][h][query][key]`.
pub fn rollout(layers: &[Vec<Vec<Vec<f32>>>]) -> Vec<Vec<f64>> {
    let n = layers
        .first()
        .and_then(|heads| heads.first())
        .map_or(0, Vec::len);
    let mut r: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for heads in layers {
        let h = heads.len().max(1) as f64;
        let a: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let row: Vec<f64> = (0..n)
                    .map(|j| {
                        let mean = heads.iter().map(|w| f64::from(w[i][j])).sum::<f64>() / h;
                        0.5 * mean + if i == j { 0.5 } else { 0.0 }
                    })
                    .collect();
                let sum: f64 = row.iter().sum();
                row.iter().map(|v| v / sum).collect()
            })
            .collect();
        r = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| (0..n).map(|m| a[i][m] * r[m][j]).sum())
                    .collect()
            })
            .collect();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_by_hand() {
        // One layer, one head, every query on key 0 of 2: A = [[1, 0], [0.5, 0.5]] after the
        // residual, and that is the rollout.
        let one = vec![vec![vec![vec![1.0, 0.0], vec![1.0, 0.0]]]];
        assert_eq!(rollout(&one), vec![vec![1.0, 0.0], vec![0.5, 0.5]]);
        // Two such layers: A·A = [[1, 0], [0.75, 0.25]].
        let two = vec![one[0].clone(), one[0].clone()];
        assert_eq!(rollout(&two), vec![vec![1.0, 0.0], vec![0.75, 0.25]]);
        // Heads are averaged: one head on key 0 and one on key 1 are uniform, A = [[.75, .25],
        // [.25, .75]].
        let heads = vec![vec![
            vec![vec![1.0, 0.0], vec![1.0, 0.0]],
            vec![vec![0.0, 1.0], vec![0.0, 1.0]],
        ]];
        assert_eq!(rollout(&heads), vec![vec![0.75, 0.25], vec![0.25, 0.75]]);
        // Every row of a rollout sums to 1, even from rows that did not (off-by-one).
        let unspent = vec![vec![vec![0.2, 0.0], vec![0.3, 0.3]]];
        for row in rollout(&[unspent.clone(), unspent]) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{row:?}");
        }
    }
}
