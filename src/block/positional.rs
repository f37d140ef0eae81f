//! Positional encodings: what lets attention tell "the cat sat" from "sat cat the".
//!
//! Self-attention without them is permutation-equivariant: f(P·x) = P·f(x). Each kind below
//! breaks that symmetry in its own way:
//! - **Sinusoidal** (Vaswani et al. 2017, §3.5): x + PE with PE(pos, 2i) = sin(pos / 10000^(2i/d)),
//!   PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).
//! - **Learned** (Gehring et al. 2017; GPT): x + E[pos], a trained table of max_len × d_model.
//! - **Rotary** (Su et al. 2021, RoFormer): q and k are rotated by an angle proportional to their
//!   position, so q_i·k_j depends on i − j. Applied inside the attention block, to q and k only.
//! - **ALiBi** (Press et al. 2022, "Train Short, Test Long"): no embedding at all; head h adds
//!   −m_h·|i − j| to the scaled score of query i and key j, with the geometric slopes m_h of the
//!   paper (1/2, 1/4, …, 1/256 for 8 heads). Applied inside the attention block.

use burn::module::{Module, Param};
use burn::nn::{
    PositionalEncoding, PositionalEncodingConfig, RotaryEncoding, RotaryEncodingConfig,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::util::cli::named_enum;
use crate::util::rng::HostRng;

/// Which positional encoding a block or model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PositionalKind {
    /// No position information: attention treats its input as a set. The default.
    #[default]
    None,
    /// Fixed sinusoids added to the input; needs an even d_model.
    Sinusoidal,
    /// A learned table added to the input.
    Learned,
    /// Rotations of q and k inside attention; needs an even d_k.
    Rotary,
    /// Linear biases on the scores inside attention, one slope per head.
    Alibi,
}

named_enum!(PositionalKind, "positional encoding", {
    None => "none",
    Sinusoidal => "sinusoidal",
    Learned => "learned",
    Rotary => "rotary",
    Alibi => "alibi",
});

/// The positional encoding of one block or model. At most one of its parts is present.
#[derive(Module, Debug)]
pub struct Positional {
    sinusoidal: Option<PositionalEncoding>,
    /// `[max_len, d_model]`, trained with the rest of the model.
    learned: Option<Param<Tensor<2>>>,
    rotary: Option<RotaryEncoding>,
    /// ALiBi: biases computed from the positions when asked (see [`Positional::bias`]).
    alibi: bool,
    max_len: usize,
}

impl Positional {
    /// Builds the encoding for inputs of width `d_model` whose heads have width `d_k`.
    /// Callers validate evenness first (see `AttentionConfig::validate`).
    pub fn new(
        kind: PositionalKind,
        d_model: usize,
        d_k: usize,
        max_len: usize,
        rng: &mut HostRng,
        device: &Device,
    ) -> Self {
        let sinusoidal = (kind == PositionalKind::Sinusoidal).then(|| {
            PositionalEncodingConfig::new(d_model)
                .with_max_sequence_size(max_len)
                .with_max_timescale(max_len.max(10_000))
                .init(device)
        });
        // N(0, 1), like Burn's `Embedding` default, so positions start at the scale of tokens.
        let learned = (kind == PositionalKind::Learned)
            .then(|| Param::from_tensor(rng.normal_tensor([max_len, d_model], 1.0, device)));
        let rotary = (kind == PositionalKind::Rotary)
            .then(|| RotaryEncodingConfig::new(max_len, d_k).init(device));
        Self {
            sinusoidal,
            learned,
            rotary,
            alibi: kind == PositionalKind::Alibi,
            max_len,
        }
    }

    /// True when the encoding adds and rotates nothing.
    pub fn is_none(&self) -> bool {
        self.sinusoidal.is_none() && self.learned.is_none() && self.rotary.is_none() && !self.alibi
    }

    /// ALiBi's biases, `[1, heads, n_q, n_k]`: −m_h·|i − j| for query i and key j (ALiBi kind
    /// only). Added to the scaled scores, so the temperature does not scale them.
    pub fn bias(
        &self,
        n_heads: usize,
        n_q: usize,
        n_k: usize,
        device: &Device,
    ) -> Option<Tensor<4>> {
        if !self.alibi {
            return None;
        }
        let data: Vec<f32> = alibi_slopes(n_heads)
            .into_iter()
            .flat_map(|m| {
                (0..n_q).flat_map(move |i| {
                    (0..n_k).map(move |j| -(m * (i as f64 - j as f64).abs()) as f32)
                })
            })
            .collect();
        Some(Tensor::from_data(
            TensorData::new(data, [1, n_heads, n_q, n_k]),
            device,
        ))
    }

    /// ALiBi's slopes m_h for `n_heads` heads (ALiBi kind only).
    pub fn slopes(&self, n_heads: usize) -> Option<Vec<f64>> {
        self.alibi.then(|| alibi_slopes(n_heads))
    }

    /// Adds absolute positions to `x: [batch, n, d_model]` (sinusoidal and learned kinds).
    ///
    /// # Panics
    /// When n exceeds `max_len` for a kind that has a table.
    pub fn add(&self, x: Tensor<3>) -> Tensor<3> {
        let [_, n, d_model] = x.dims();
        if let Some(pe) = &self.sinusoidal {
            self.check_len(n);
            return pe.forward(x);
        }
        if let Some(table) = &self.learned {
            self.check_len(n);
            let rows = table.val().slice([0..n, 0..d_model]); // [n, d_model]
            return x + rows.unsqueeze::<3>(); // [batch, n, d_model]
        }
        x
    }

    /// Rotates `t: [batch, heads, n, d_k]` by its positions (rotary kind only).
    pub fn rotate(&self, t: Tensor<4>) -> Tensor<4> {
        match &self.rotary {
            Some(rope) => {
                self.check_len(t.dims()[2]);
                rope.forward(t)
            }
            None => t,
        }
    }

    fn check_len(&self, n: usize) {
        assert!(
            n <= self.max_len,
            "sequence length {n} exceeds the positional encoding's max_len {}",
            self.max_len
        );
    }
}

/// q `[batch, heads, n_q, d_k]` and k `[batch, heads, n_k, d_k]` with two more columns each, so
/// that c·q'·k'ᵀ = c·q·kᵀ − m_h·(i − j): ALiBi's bias inside the dot product, for an op that takes
/// no bias (the fused one). Row i of q gains (m_h/c, −(m_h/c)·(i − o)) and row j of k gains
/// (j − o, 1); the offset o = (n_k − 1)/2 keeps both terms small, so that f32 loses little when
/// they cancel. Under a causal mask every visible key has j ≤ i, where −m_h·(i − j) is ALiBi's
/// −m_h·|i − j|; without one it is not, so only a causal block may use this.
pub fn alibi_columns(
    q: Tensor<4>,
    k: Tensor<4>,
    slopes: &[f64],
    scale: f64,
) -> (Tensor<4>, Tensor<4>) {
    let [batch, heads, n_q, _] = q.dims();
    let n_k = k.dims()[2];
    let device = q.device();
    let offset = (n_k as f64 - 1.0) / 2.0;
    let q_extra: Vec<f32> = slopes
        .iter()
        .flat_map(|&m| {
            let a = m / scale;
            (0..n_q).flat_map(move |i| [a as f32, (-a * (i as f64 - offset)) as f32])
        })
        .collect();
    let k_extra: Vec<f32> = (0..heads)
        .flat_map(|_| (0..n_k).flat_map(|j| [(j as f64 - offset) as f32, 1.0]))
        .collect();
    let q_extra = Tensor::<4>::from_data(TensorData::new(q_extra, [1, heads, n_q, 2]), &device)
        .expand([batch, heads, n_q, 2]); // [batch, heads, n_q, 2]
    let k_extra = Tensor::<4>::from_data(TensorData::new(k_extra, [1, heads, n_k, 2]), &device)
        .expand([batch, heads, n_k, 2]); // [batch, heads, n_k, 2]
    (
        Tensor::cat(vec![q, q_extra], 3), // [batch, heads, n_q, d_k + 2]
        Tensor::cat(vec![k, k_extra], 3), // [batch, heads, n_k, d_k + 2]
    )
}

/// ALiBi's per-head slopes (Press et al. 2022, their reference code): for a power of two H,
/// m_h = 2^(−8h/H), h = 1 … H; otherwise the slopes of the largest power of two below H, then
/// every other slope of twice that, until there are H.
pub fn alibi_slopes(n_heads: usize) -> Vec<f64> {
    let powers = |n: usize| -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (1..=n).map(|h| start.powi(h as i32)).collect()
    };
    if n_heads == 0 {
        return Vec::new();
    }
    if n_heads.is_power_of_two() {
        return powers(n_heads);
    }
    let below = 1 << n_heads.ilog2();
    let mut slopes = powers(below);
    slopes.extend(
        alibi_slopes(2 * below)
            .into_iter()
            .step_by(2)
            .take(n_heads - below),
    );
    slopes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_follow_the_paper() {
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        assert!(close(
            &alibi_slopes(8),
            &[
                0.5,
                0.25,
                0.125,
                0.0625,
                1.0 / 32.0,
                1.0 / 64.0,
                1.0 / 128.0,
                1.0 / 256.0
            ]
        ));
        assert!(close(&alibi_slopes(2), &[1.0 / 16.0, 1.0 / 256.0]));
        // 3 heads: the 2-head slopes, then the first of every other 4-head slope.
        assert!(close(&alibi_slopes(3), &[1.0 / 16.0, 1.0 / 256.0, 0.25]));
        assert_eq!(alibi_slopes(6).len(), 6);
    }

    #[test]
    fn alibi_bias_is_minus_slope_times_distance() {
        let device = Device::flex();
        let pe = Positional::new(
            PositionalKind::Alibi,
            4,
            2,
            8,
            &mut HostRng::new(0),
            &device,
        );
        // Nothing is added to the embeddings.
        let x = HostRng::new(1).normal_tensor([1, 3, 4], 1.0, &device);
        assert_eq!(pe.add(x.clone()).into_data(), x.into_data());
        let bias = pe.bias(2, 3, 3, &device).unwrap();
        assert_eq!(bias.dims(), [1, 2, 3, 3]);
        let got = bias.into_data().try_into_vec::<f32>().unwrap();
        // Head 0, m = 1/16: row 2 is [−2/16, −1/16, 0]; head 1, m = 1/256: row 0 is [0, −1/256, −2/256].
        assert_eq!(&got[6..9], &[-0.125, -0.0625, 0.0]);
        assert_eq!(&got[9..12], &[0.0, -1.0 / 256.0, -2.0 / 256.0]);
        assert!(
            Positional::new(
                PositionalKind::Rotary,
                4,
                2,
                8,
                &mut HostRng::new(0),
                &device
            )
            .bias(2, 3, 3, &device)
            .is_none()
        );
    }

    #[test]
    fn sinusoids_follow_the_formula() {
        let device = Device::flex();
        let pe = Positional::new(
            PositionalKind::Sinusoidal,
            4,
            4,
            8,
            &mut HostRng::new(0),
            &device,
        );
        let x = Tensor::<3>::zeros([1, 3, 4], &device);
        let got = pe.add(x).into_data().try_into_vec::<f32>().unwrap();
        // pos 2: [sin(2), cos(2), sin(2/100), cos(2/100)], since 10000^(2/4) = 100.
        let want = [2f32.sin(), 2f32.cos(), 0.02f32.sin(), 0.02f32.cos()];
        for (g, w) in got[8..12].iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?}");
        }
    }

    #[test]
    fn none_is_the_identity() {
        let device = Device::flex();
        let pe = Positional::new(PositionalKind::None, 4, 2, 8, &mut HostRng::new(0), &device);
        let x = HostRng::new(1).normal_tensor([2, 3, 4], 1.0, &device);
        let y = pe.add(x.clone());
        assert_eq!(x.into_data(), y.into_data());
    }

    #[test]
    fn no_encoding_has_no_length_limit() {
        let device = Device::flex();
        let pe = Positional::new(PositionalKind::None, 2, 2, 4, &mut HostRng::new(0), &device);
        let x = Tensor::<3>::zeros([1, 9, 2], &device);
        assert_eq!(pe.add(x).dims(), [1, 9, 2]);
    }

    #[test]
    fn parses_names() {
        assert_eq!(
            "rotary".parse::<PositionalKind>(),
            Ok(PositionalKind::Rotary)
        );
        assert_eq!("alibi".parse::<PositionalKind>(), Ok(PositionalKind::Alibi));
        assert!("alibi2".parse::<PositionalKind>().is_err());
    }
}
