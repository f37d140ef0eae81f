//! The softmax over attention scores, on the right axis or, for demonstrations, the wrong ones.
//!
//! `weights[i, j] = exp(s[i, j]) / Σ_j' exp(s[i, j'])`: each query's row is a distribution over
//! keys (Vaswani et al. 2017, eq. 1). `Column` normalises over queries instead, and `Whole` over
//! every (query, key) pair of a head; both are pitfalls the seed pages warn about.
//!
//! [`SoftmaxKind::OffByOne`] is softmax1 (Miller 2023, "Attention Is Off By One"):
//! `weights[i, j] = exp(s[i, j]) / (1 + Σ_j' exp(s[i, j']))`, as if every row had one more key of
//! score 0 and value 0. A query may then spend less than its unit of weight, down to nothing,
//! rather than park the rest on a sink; `1 − Σ_j weights[i, j]` is the weight it left unspent.

use burn::prelude::*;
use burn::tensor::activation::{quiet_softmax, softmax};
use serde::{Deserialize, Serialize};

use crate::util::cli::named_enum;

/// Which entries of a head's `[n_q, n_k]` score matrix one softmax normalises together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SoftmaxAxis {
    /// Over keys, for each query: rows sum to 1. Correct, and the default.
    #[default]
    Row,
    /// Over queries, for each key: columns sum to 1. A pitfall.
    Column,
    /// Over the whole matrix of each head: all n_q·n_k weights sum to 1. A pitfall.
    Whole,
}

/// What a row's weights are normalised by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SoftmaxKind {
    /// exp(s_ij) / Σ_j' exp(s_ij'): every row sums to 1. The default.
    #[default]
    Standard,
    /// exp(s_ij) / (1 + Σ_j' exp(s_ij')): a row sums to less than 1 (softmax1, Miller 2023).
    /// Row softmax only.
    OffByOne,
}

named_enum!(SoftmaxKind, "softmax", { Standard => "standard", OffByOne => "off-by-one" });

/// A finite stand-in for −∞: exp(−1e30 − max) underflows to exactly 0 in f32, while a row whose
/// entries are all masked stays finite (−1e30 − (−1e30) = 0) instead of becoming NaN.
const MASKED_LOGIT: f32 = -1.0e30;

/// Softmax of `scores: [batch, heads, n_q, n_k]` along `axis`, where `mask` (true = masked, and
/// broadcastable to the scores) gets exactly zero weight. A fully masked row (or column) gets all
/// zeros, never NaN. `kind` = off-by-one needs `axis` = row.
///
/// # Panics
/// With off-by-one on another axis, which [`crate::block::attention::AttentionConfig`] refuses.
pub fn masked_softmax(
    scores: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
    axis: SoftmaxAxis,
    kind: SoftmaxKind,
) -> Tensor<4> {
    assert!(
        kind == SoftmaxKind::Standard || axis == SoftmaxAxis::Row,
        "the off-by-one softmax normalises rows only"
    );
    let [batch, heads, n_q, n_k] = scores.dims();
    let filled = match &mask {
        Some(mask) => scores.mask_fill(mask.clone(), MASKED_LOGIT),
        None => scores,
    };
    let weights = match axis {
        SoftmaxAxis::Row if kind == SoftmaxKind::OffByOne => quiet_softmax(filled, 3),
        SoftmaxAxis::Row => softmax(filled, 3),
        SoftmaxAxis::Column => softmax(filled, 2),
        SoftmaxAxis::Whole => {
            softmax(filled.reshape([batch, heads, 1, n_q * n_k]), 3) // [batch, heads, 1, n_q·n_k]
                .reshape([batch, heads, n_q, n_k])
        } // [batch, heads, n_q, n_k]
    };
    match mask {
        // Only a fully masked row still has weight on masked entries (a uniform 1/n_k); zero it.
        Some(mask) => weights.mask_fill(mask, 0.0),
        None => weights,
    }
}

named_enum!(SoftmaxAxis, "softmax axis", { Row => "row", Column => "column", Whole => "whole" });

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn row_softmax_by_hand() {
        let device = Device::flex();
        // One head, 2×2 scores [[1, 0], [0, 0]]:
        // row 0: e^1/(e^1+e^0) = 0.7311, e^0/(e^1+e^0) = 0.2689; row 1: 0.5, 0.5.
        let s = Tensor::<4>::from_floats([[[[1.0, 0.0], [0.0, 0.0]]]], &device);
        let w = values(masked_softmax(
            s.clone(),
            None,
            SoftmaxAxis::Row,
            SoftmaxKind::Standard,
        ));
        for (got, want) in w.iter().zip([0.731_058_6, 0.268_941_4, 0.5, 0.5]) {
            assert!((got - want).abs() < 1e-6, "{w:?}");
        }
        // Columns: col 0 is [1, 0] → 0.7311, 0.2689; col 1 is [0, 0] → 0.5, 0.5.
        let w = values(masked_softmax(
            s.clone(),
            None,
            SoftmaxAxis::Column,
            SoftmaxKind::Standard,
        ));
        for (got, want) in w.iter().zip([0.731_058_6, 0.5, 0.268_941_4, 0.5]) {
            assert!((got - want).abs() < 1e-6, "{w:?}");
        }
        // Whole: e^1/(e^1+3) = 0.4754, the rest e^0/(e^1+3) = 0.1748.
        let w = values(masked_softmax(
            s,
            None,
            SoftmaxAxis::Whole,
            SoftmaxKind::Standard,
        ));
        for (got, want) in w
            .iter()
            .zip([0.475_367_2, 0.174_877_6, 0.174_877_6, 0.174_877_6])
        {
            assert!((got - want).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn fully_masked_row_is_zero_not_nan() {
        let device = Device::flex();
        let s = Tensor::<4>::from_floats([[[[3.0, 1.0], [2.0, 5.0]]]], &device);
        let mask = Tensor::<4, Bool>::from_data([[[[false, true], [true, true]]]], &device);
        let w = values(masked_softmax(
            s,
            Some(mask),
            SoftmaxAxis::Row,
            SoftmaxKind::Standard,
        ));
        assert_eq!(w, vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn off_by_one_by_hand() {
        let device = Device::flex();
        // Row [ln 1, ln 2] = [0, 0.6931]: e^s = [1, 2], so weights [1, 2] / (1 + 3) = [0.25, 0.5],
        // a quarter left unspent. A fully masked row stays zeros.
        let s = Tensor::<4>::from_floats([[[[0.0, 2f32.ln()], [1.0, 1.0]]]], &device);
        let mask = Tensor::<4, Bool>::from_data([[[[false, false], [true, true]]]], &device);
        let w = values(masked_softmax(
            s,
            Some(mask),
            SoftmaxAxis::Row,
            SoftmaxKind::OffByOne,
        ));
        for (got, want) in w.iter().zip([0.25, 0.5, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn parses_names() {
        assert_eq!("Column".parse::<SoftmaxAxis>(), Ok(SoftmaxAxis::Column));
        assert!("diagonal".parse::<SoftmaxAxis>().is_err());
    }
}
