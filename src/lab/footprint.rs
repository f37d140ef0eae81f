//! How much memory a piece of work will need, estimated before it runs, so that a config that
//! cannot fit is refused with a number instead of ending in a failed allocation (an abort) or a
//! machine that swaps for an hour.
//!
//! The estimate counts the tensors by shape, in `f64` so that no size can overflow: it is an
//! upper-bound model of what Burn keeps alive, not a measurement. `tests/footprint.rs` holds it
//! against the counting allocator's measured peak on flex.

use std::fmt;

use crate::block::attention::AttentionConfig;
use crate::lab::model::ModelConfig;
use crate::lab::tasks::{Task, TaskConfig};
use crate::util::limits::human_bytes;

/// Bytes of one `f32`.
const F32: f64 = 4.0;

/// Copies of the `[batch, heads, n_q, n_k]` tensors alive at the peak of a forward+backward on the
/// decomposed path: scores, scaled and masked scores, weights, and their gradients on the way
/// back. The fused path holds fewer (none on flex, a few transient ones on the other backends),
/// so this bounds it too; the estimate does not know the backend, so it does not count on that.
const SCORE_COPIES: f64 = 8.0;

/// Copies of each `[batch, n, width]` activation alive at the peak (the value, its normalised or
/// projected forms, and the gradient).
const ROW_COPIES: f64 = 6.0;

/// Copies of every parameter a training step holds: the weight, its gradient, Adam's two moments,
/// and the update in flight.
const PARAM_COPIES: f64 = 6.0;

/// A memory estimate and the piece of work it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// Estimated peak bytes.
    pub bytes: f64,
    /// What the estimate is for, e.g. `training d_model = 64, n = 17, batch 32`.
    pub what: String,
}

impl Footprint {
    pub fn new(bytes: f64, what: impl Into<String>) -> Self {
        Self {
            bytes,
            what: what.into(),
        }
    }

    /// Nothing worth counting.
    pub fn none() -> Self {
        Self::new(0.0, "nothing")
    }

    /// The larger of two estimates: a run's peak is its largest piece.
    pub fn max(self, other: Self) -> Self {
        if other.bytes > self.bytes {
            other
        } else {
            self
        }
    }

    /// The largest of many.
    pub fn largest(all: impl IntoIterator<Item = Self>) -> Self {
        all.into_iter().fold(Self::none(), Self::max)
    }
}

impl fmt::Display for Footprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} for {}", human_bytes(self.bytes), self.what)
    }
}

/// One attention block on `[batch, n_q, d_model]` queries and `n_k` keys; `backward` when its
/// gradients are taken too.
pub fn attention(
    config: &AttentionConfig,
    batch: usize,
    n_q: usize,
    n_k: usize,
    backward: bool,
) -> f64 {
    let (b, h) = (batch as f64, config.n_heads as f64);
    let (d_model, d_k, d_v) = (
        config.d_model as f64,
        config.head_dim() as f64,
        config.value_dim() as f64,
    );
    let (n_q, n_k) = (n_q as f64, n_k as f64);
    let copies = if backward { 1.0 } else { 0.5 };
    let scores = b * h * n_q * n_k * SCORE_COPIES * copies; // [batch, heads, n_q, n_k]
    let rows = b * (n_q + n_k) * (d_model + h * (2.0 * d_k + d_v)) * ROW_COPIES * copies;
    let params = d_model * h * (2.0 * d_k + 2.0 * d_v) * if backward { PARAM_COPIES } else { 1.0 };
    F32 * (scores + rows + params)
}

/// One training step of the tiny transformer on `batch` sequences of `n` tokens (the peak of a
/// whole run: parameters, gradients, Adam's state, and every layer's activations).
pub fn training(
    model: &ModelConfig,
    vocab: usize,
    classes: usize,
    n: usize,
    batch: usize,
) -> Footprint {
    let attention_config = model.attention(n, 0);
    let (d_model, d_ff, layers) = (
        model.d_model as f64,
        model.hidden() as f64,
        model.n_layers as f64,
    );
    let (b, n_f) = (batch as f64, n as f64);
    let per_layer = attention(&attention_config, batch, n, n, true)
        + F32 * b * n_f * (2.0 * d_ff + d_model) * ROW_COPIES
        + F32 * 2.0 * d_model * d_ff * PARAM_COPIES;
    let outside = F32
        * ((vocab as f64 + n_f + classes as f64) * d_model * PARAM_COPIES
            + b * n_f * (d_model + classes as f64) * ROW_COPIES);
    Footprint::new(
        layers * per_layer + outside,
        format!(
            "training d_model = {}, {} layer(s), {} head(s), n = {n}, batch {batch}",
            model.d_model, model.n_layers, model.n_heads
        ),
    )
}

/// Training `model` on `task` with batches of `batch` sequences (nothing when the task's sizes
/// are invalid: validation reports that on its own).
pub fn training_on(model: &ModelConfig, task: &TaskConfig, batch: usize) -> Footprint {
    match Task::new(task.clone()) {
        Ok(task) => training(model, task.vocab(), task.classes(), task.seq_len(), batch),
        Err(_) => Footprint::none(),
    }
}

/// An untrained block of width `d_model` with `n_heads` heads on `batch` sequences of `n`
/// tokens, through forward and backward; `label` says which part of an experiment.
pub fn block(label: &str, d_model: usize, n_heads: usize, batch: usize, n: usize) -> Footprint {
    let config = AttentionConfig::new(d_model, n_heads.max(1));
    Footprint::new(
        attention(&config, batch, n, n, true),
        format!("{label}: d_model = {d_model}, {n_heads} head(s), n = {n}, batch {batch}"),
    )
}

/// `elements` numbers of `f32`, a few times over (inputs, results, temporaries).
pub fn floats(label: &str, elements: f64) -> Footprint {
    Footprint::new(F32 * elements * ROW_COPIES, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_grows_as_n_squared_and_never_overflows() {
        let config = AttentionConfig::new(64, 4);
        let small = attention(&config, 1, 1024, 1024, true);
        let large = attention(&config, 1, 4096, 4096, true);
        // Dominated by the n² scores at this size.
        assert!(
            large / small > 12.0 && large / small < 16.5,
            "{}",
            large / small
        );
        let absurd = attention(&config, usize::MAX, usize::MAX, usize::MAX, true);
        assert!(absurd.is_finite() && absurd > 1e50, "{absurd}");
    }

    #[test]
    fn the_largest_piece_wins() {
        let all = [
            Footprint::new(1.0, "a"),
            Footprint::new(3.0, "b"),
            Footprint::new(2.0, "c"),
        ];
        assert_eq!(Footprint::largest(all).what, "b");
    }
}
