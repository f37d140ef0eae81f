//! Scalable-Softmax (SSMax): the scores of a query that sees n keys are multiplied by s·ln n
//! before the softmax, with s learned per head.
//!
//! SSMax(z)_j = n^{s·z_j} / Σ_t n^{s·z_t} = softmax((s·ln n)·z)_j (Nakanishi 2025,
//! "Scalable-Softmax Is Superior for Attention", eq. 2). With a plain softmax the largest weight
//! of a row shrinks as n grows, however the scores are spread ("attention fading"): a query that
//! learned to pick one key among 16 spreads more of its weight over 48. The factor ln n grows
//! with n just fast enough to offset that (Chiang & Cholak 2022, "Overcoming a Theoretical
//! Limitation of Self-Attention", scaled the logits by log n for the same reason).
//!
//! n is the number of keys the query sees: i + 1 under the causal mask, the keys that are not
//! padding otherwise. The factor is a per-row scale of q, so it composes with √d_k and the
//! temperature and the fused op takes it unchanged. It multiplies q·kᵀ only: an additive bias
//! (ALiBi's distance penalty) is added after it, unscaled.

use burn::module::Param;
use burn::prelude::*;

use crate::block::mask::{Window, attention_mask};

/// s at initialisation, every head: the value of the paper's Figure 1. Then s·ln n is 1 at
/// n ≈ 10, and a head starts close to a plain softmax at the lengths toy tasks train on.
pub const S_INIT: f64 = 0.43;

/// s, one per head, `[heads]`, at [`S_INIT`].
pub fn init_s(n_heads: usize, device: &Device) -> Param<Tensor<1>> {
    Param::from_tensor(Tensor::full([n_heads], S_INIT, device))
}

/// `[batch or 1, 1, n_q, 1]`: how many keys each query sees, never below 1 (a fully masked row
/// outputs 0 whatever its factor, and ln 1 = 0 keeps its q finite).
pub fn visible_keys(
    batch: usize,
    n_q: usize,
    n_k: usize,
    causal: bool,
    key_padding: Option<Tensor<2, Bool>>,
    window: Option<Window>,
    device: &Device,
) -> Tensor<4> {
    match (key_padding, window) {
        // Counted from the mask itself: what the softmax hides is what n leaves out.
        (padding, window) if padding.is_some() || window.is_some() => {
            let mask = attention_mask(batch, n_q, n_k, causal, padding, window, device)
                .expect("a padding mask or a window was given"); // [batch, 1, n_q, n_k]
            mask.bool_not()
                .float()
                .sum_dim(3) // [batch, 1, n_q, 1]
                .clamp_min(1.0)
        }
        _ if causal => {
            // Query i sees keys 0..=i, and no more than there are.
            let counts: Vec<f32> = (0..n_q).map(|i| (i + 1).min(n_k).max(1) as f32).collect();
            Tensor::<1>::from_floats(counts.as_slice(), device).reshape([1, 1, n_q, 1]) // [1, 1, n_q, 1]
        }
        _ => Tensor::full([1, 1, n_q, 1], n_k.max(1) as f32, device), // [1, 1, n_q, 1]
    }
}

/// q with each row scaled by s_h·ln n_i: `q [batch, heads, n_q, d_k]`, `s [heads]`,
/// `n [batch or 1, 1, n_q, 1]` from [`visible_keys`].
pub fn scale_queries(q: Tensor<4>, s: Tensor<1>, n: Tensor<4>) -> Tensor<4> {
    let heads = s.dims()[0];
    let s = s.reshape([1, heads, 1, 1]); // [1, heads, 1, 1]
    let factor = n.log() * s; // [batch or 1, heads, n_q, 1]
    q * factor // [batch, heads, n_q, d_k]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn counts_follow_the_masks() {
        let device = Device::flex();
        assert_eq!(
            values(visible_keys(1, 4, 4, true, None, None, &device)),
            [1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(
            values(visible_keys(1, 3, 5, false, None, None, &device)),
            [5.0; 3]
        );
        // Two sequences, the second with its last two keys padded.
        let padding = crate::block::mask::padding_mask(&[4, 2], 4, &device);
        assert_eq!(
            values(visible_keys(
                2,
                4,
                4,
                true,
                Some(padding.clone()),
                None,
                &device
            )),
            [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 2.0, 2.0]
        );
        assert_eq!(
            values(visible_keys(2, 2, 4, false, Some(padding), None, &device)),
            [4.0, 4.0, 2.0, 2.0]
        );
    }

    #[test]
    fn rows_scale_by_s_ln_n() {
        let device = Device::flex();
        let q = Tensor::<4>::ones([1, 2, 3, 1], &device);
        let s = Tensor::<1>::from_floats([1.0, 2.0], &device);
        let scaled = values(scale_queries(
            q,
            s,
            visible_keys(1, 3, 3, true, None, None, &device),
        ));
        let ln = |n: f32| n.ln();
        let expected = [0.0, ln(2.0), ln(3.0), 0.0, 2.0 * ln(2.0), 2.0 * ln(3.0)];
        for (a, b) in scaled.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{scaled:?} vs {expected:?}");
        }
    }
}
