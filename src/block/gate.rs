//! A sigmoid gate on each head's output, computed from the query's own input.
//!
//! Y'_h = Y_h · σ(x·w_h + b_h), with Y_h = softmax(q_h·k_hᵀ/√d_k)·V_h the head's output for the
//! query whose input is x (Qiu et al. 2025, "Gated Attention for Large Language Models:
//! Non-linearity, Sparsity, and Attention-Sink-Free", the gate after the attention output, their
//! G1). This is their head-wise form, one scalar per head and query, read before the heads are
//! concatenated and projected by W_O. Their best variant gates each of the d_v coordinates
//! separately; the scalar form is the one whose value a person can read per head.
//!
//! Why it removes sinks: a head that has nothing to add for a query can close its gate instead of
//! parking its unit of weight on a key whose value is near zero.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::util::cli::named_enum;

/// Whether each head's output is gated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GateKind {
    /// No gate. The default.
    #[default]
    None,
    /// σ(x·w_h + b_h) per head and query, on the head's output before W_O (Qiu et al. 2025, G1).
    HeadOutput,
}

named_enum!(GateKind, "gate", { None => "none", HeadOutput => "head-output" });

/// The heads' outputs times their gates: `heads [batch, n_q, n_heads·d_v]`,
/// `gate [batch, n_q, n_heads]` (values in (0, 1)).
pub fn apply(heads: Tensor<3>, gate: Tensor<3>) -> Tensor<3> {
    let [batch, n_q, width] = heads.dims();
    let n_heads = gate.dims()[2];
    let d_v = width / n_heads;
    let gated = heads.reshape([batch, n_q, n_heads, d_v]) // [batch, n_q, heads, d_v]
        * gate.unsqueeze_dim::<4>(3); // [batch, n_q, heads, 1]
    gated.reshape([batch, n_q, width]) // [batch, n_q, heads·d_v]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_head_is_scaled_by_its_own_gate() {
        let device = Device::flex();
        // One query, two heads of width 2: [1, 2 | 3, 4] gated by [0.5, 0.25].
        let heads = Tensor::<3>::from_floats([[[1.0, 2.0, 3.0, 4.0]]], &device);
        let gate = Tensor::<3>::from_floats([[[0.5, 0.25]]], &device);
        let out: Vec<f32> = apply(heads, gate).into_data().try_into_vec().unwrap();
        assert_eq!(out, vec![0.5, 1.0, 0.75, 1.0]);
    }

    #[test]
    fn parses_names() {
        assert_eq!("head-output".parse::<GateKind>(), Ok(GateKind::HeadOutput));
        assert!("elementwise".parse::<GateKind>().is_err());
    }
}
