//! What turns queries and keys into weights: the softmax of their dot products, or linear
//! attention's feature map.
//!
//! Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs", eq. 4–6) replaces
//! exp(q_i·k_j / s) with φ(q_i)·φ(k_j), φ(x) = elu(x) + 1 > 0, so that
//!
//!   out_i = φ(q_i)ᵀ S_i / φ(q_i)·z_i,   S_i = Σ_{j ≤ i} φ(k_j) v_jᵀ  [d_k × d_v],   z_i = Σ_{j ≤ i} φ(k_j).
//!
//! Under a causal mask S_i and z_i are running sums: the model reads the whole past through a
//! d_k × d_v state, an RNN, with no n × n matrix anywhere. That state is what Zoology (Arora et
//! al. 2023) finds too small for associative recall. Without a causal mask the sums run over
//! every key.
//!
//! The running sums are taken a chunk of [`CHUNK`] positions at a time (the chunkwise form of
//! Yang et al. 2024, "Gated Linear Attention Transformers"): the state before each chunk is a
//! cumulative sum of the chunks' φ(k)ᵀv, and inside a chunk the few terms are summed directly.
//! Every op is a composed tensor op, so autodiff and every backend come for free.
//!
//! The weights φ(q_i)·φ(k_j) / φ(q_i)·z_i are not held by the forward pass; [`weights`] computes
//! them directly, O(n²), for traces and probes.

use burn::prelude::*;
use burn::tensor::activation::elu;
use serde::{Deserialize, Serialize};

use crate::util::cli::named_enum;

/// How a block weighs its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kernel {
    /// softmax(q·kᵀ / (s·τ)), with every option of the block.
    #[default]
    Softmax,
    /// φ(q)·φ(k)ᵀ normalised per query, φ = elu + 1 (Katharopoulos et al. 2020). φ is applied
    /// to q and k themselves, so there is no scale or temperature, and rows are the only axis.
    Linear,
}

named_enum!(Kernel, "kernel", { Softmax => "softmax", Linear => "linear" });

/// Positions whose running sums are taken together.
pub const CHUNK: usize = 16;

/// A row with no visible key divides 0 by this instead of by 0, so it stays zeros.
const EMPTY_ROW: f64 = 1e-30;

/// φ(x) = elu(x) + 1, positive everywhere.
pub fn feature_map<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    elu(x, 1.0).add_scalar(1.0)
}

/// φ(k) with padded keys' rows zeroed, so they add nothing to any sum.
fn keys(k: Tensor<4>, key_padding: Option<Tensor<2, Bool>>) -> Tensor<4> {
    let [batch, heads, n_k, d_k] = k.dims();
    let phi_k = feature_map(k); // [batch, heads, n_k, d_k]
    match key_padding {
        Some(pad) => phi_k.mask_fill(
            pad.reshape([batch, 1, n_k, 1]) // [batch, 1, n_k, 1]
                .expand([batch, heads, n_k, d_k]), // [batch, heads, n_k, d_k]
            0.0,
        ),
        None => phi_k,
    }
}

/// `[batch, heads, n_q, d_v]`: linear attention of `q [batch, heads, n_q, d_k]` over
/// `k [batch, heads, n_k, d_k]` and `v [batch, heads, n_k, d_v]`; `key_padding [batch, n_k]` is
/// true where a key is padding. Under `causal`, n_q = n_k and query i sees keys j ≤ i.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    key_padding: Option<Tensor<2, Bool>>,
    causal: bool,
) -> Tensor<4> {
    let phi_q = feature_map(q); // [batch, heads, n_q, d_k]
    let phi_k = keys(k, key_padding); // [batch, heads, n_k, d_k]
    if !causal {
        let state = phi_k.clone().swap_dims(2, 3).matmul(v); // [batch, heads, d_k, d_v]
        let z = phi_k.sum_dim(2); // [batch, heads, 1, d_k]
        let numerator = phi_q.clone().matmul(state); // [batch, heads, n_q, d_v]
        let denominator = (phi_q * z).sum_dim(3); // [batch, heads, n_q, 1]
        return numerator / denominator.clamp_min(EMPTY_ROW);
    }
    let [batch, heads, n, d_k] = phi_q.dims();
    assert_eq!(
        phi_k.dims()[2],
        n,
        "causal linear attention needs as many keys as queries"
    );
    let d_v = v.dims()[3];
    let chunks = n.div_ceil(CHUNK);
    let padded = chunks * CHUNK;
    // Zero rows past the end: φ(k) = 0 and v = 0 add nothing, and the extra queries are cut off.
    let pad = |t: Tensor<4>, width: usize| {
        if padded == n {
            return t;
        }
        let zeros = Tensor::<4>::zeros([batch, heads, padded - n, width], &t.device());
        Tensor::cat(vec![t, zeros], 2) // [batch, heads, padded, width]
    };
    let in_chunks =
        |t: Tensor<4>, width: usize| pad(t, width).reshape([batch, heads, chunks, CHUNK, width]);
    let phi_q = in_chunks(phi_q, d_k); // [batch, heads, chunks, C, d_k]
    let phi_k = in_chunks(phi_k, d_k); // [batch, heads, chunks, C, d_k]
    let v = in_chunks(v, d_v); // [batch, heads, chunks, C, d_v]

    // The state before each chunk: the running sum of the earlier chunks' φ(k)ᵀv and φ(k).
    let chunk_state = phi_k.clone().swap_dims(3, 4).matmul(v.clone()); // [batch, heads, chunks, d_k, d_v]
    let state_before = chunk_state.clone().cumsum(2) - chunk_state; // [batch, heads, chunks, d_k, d_v]
    let chunk_z = phi_k.clone().sum_dim(3); // [batch, heads, chunks, 1, d_k]
    let z_before = chunk_z.clone().cumsum(2) - chunk_z; // [batch, heads, chunks, 1, d_k]

    // Inside a chunk: φ(q_i)·φ(k_j) for j ≤ i, directly.
    let device = phi_q.device();
    let lower = Tensor::<2>::ones([CHUNK, CHUNK], &device)
        .tril(0)
        .reshape([1, 1, 1, CHUNK, CHUNK]); // [1, 1, 1, C, C]
    let within = phi_q.clone().matmul(phi_k.swap_dims(3, 4)) * lower; // [batch, heads, chunks, C, C]

    let numerator = phi_q.clone().matmul(state_before) + within.clone().matmul(v); // [batch, heads, chunks, C, d_v]
    let denominator = (phi_q * z_before).sum_dim(4) + within.sum_dim(4); // [batch, heads, chunks, C, 1]
    (numerator / denominator.clamp_min(EMPTY_ROW))
        .reshape([batch, heads, padded, d_v]) // [batch, heads, padded, d_v]
        .slice([0..batch, 0..heads, 0..n, 0..d_v]) // [batch, heads, n, d_v]
}

/// `[batch, heads, n_q, n_k]`: the weights linear attention gives each key,
/// φ(q_i)·φ(k_j) / Σ_{visible j'} φ(q_i)·φ(k_j'), zero where `mask [batch or 1, 1, n_q, n_k]` is
/// true, and all zero in a row with no visible key.
pub fn weights(q: Tensor<4>, k: Tensor<4>, mask: Option<Tensor<4, Bool>>) -> Tensor<4> {
    let products = feature_map(q).matmul(feature_map(k).swap_dims(2, 3)); // [batch, heads, n_q, n_k]
    let products = match mask {
        Some(mask) => {
            let shape = products.dims();
            products.mask_fill(mask.expand(shape), 0.0) // [batch, heads, n_q, n_k]
        }
        None => products,
    };
    let sums = products.clone().sum_dim(3).clamp_min(EMPTY_ROW); // [batch, heads, n_q, 1]
    products / sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_an_unknown_one_lists_the_choices() {
        for kernel in Kernel::ALL {
            assert_eq!(kernel.name().parse::<Kernel>().unwrap(), kernel);
        }
        let err = "cosine".parse::<Kernel>().unwrap_err().to_string();
        assert!(err.contains("softmax") && err.contains("linear"), "{err}");
    }
}
