//! The attention block: multi-head scaled dot-product attention that returns its weights.
//!
//! Attention(Q, K, V) = softmax(Q·Kᵀ / (s·τ)) · V (Vaswani et al. 2017, "Attention Is All You
//! Need", eq. 1), with Q = X·W_Q, K = C·W_K, V = C·W_V, where C = X for self-attention and the
//! other sequence for cross-attention; s is the [`ScoreScale`] (√d_k by default) and τ the
//! temperature. Heads are concatenated and projected by W_O (§3.2.2).
//!
//! Every knob a pitfall needs is here: the scale, the softmax axis, the temperature, the masks,
//! the projections themselves and the positional encoding. Beyond the seeds, `qk_norm`
//! normalises each head's q and k before the dot product (Dehghani et al. 2023; Wortsman et al.
//! 2023), which bounds the logits whatever the weights grow to, and `ssmax` multiplies each
//! query's scores by s·ln n, n the keys it sees (Nakanishi 2025, [`ssmax`]), `softmax =
//! off-by-one` lets a query spend less than its unit of weight (Miller 2023,
//! [`SoftmaxKind::OffByOne`]) and `gate` scales each head's output by a sigmoid of the query's
//! input (Qiu et al. 2025, [`gate`]): the two proposed cures for attention sinks. `kernel =
//! linear` replaces the softmax with linear attention's feature map and running sums
//! (Katharopoulos et al. 2020, [`kernel`]). The same code runs on every Burn [`Device`], with or
//! without autodiff.
//!
//! Where the math is the textbook's (row softmax, no dropout, ALiBi only under a causal mask,
//! where its bias becomes two more columns of q and k), steps 2–4 of the
//! forward pass run as one fused op ([`fused`]) that never holds the [n_q, n_k] weights; the
//! weights are recomputed when someone asks for them. [`AttentionPath::Decomposed`] turns it off.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::attention::{MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::block::fused;
use crate::block::gate::{self, GateKind};
use crate::block::kernel::{self, Kernel};
use crate::block::linear;
use crate::block::mask::{Window, attention_mask};
use crate::block::positional::{Positional, PositionalKind, alibi_columns};
use crate::block::scale::ScoreScale;
use crate::block::softmax::{SoftmaxAxis, SoftmaxKind, masked_softmax};
use crate::block::ssmax;
use crate::util::rng::HostRng;

/// Builds an [`Attention`] block with [`AttentionConfig::init`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Width of the input (and of the output, when there is an output projection).
    pub d_model: usize,
    /// Number of heads.
    pub n_heads: usize,
    /// Width of each head's queries and keys. Default: d_model / n_heads.
    #[config(default = "None")]
    pub d_k: Option<usize>,
    /// Width of each head's values. Default: d_k.
    #[config(default = "None")]
    pub d_v: Option<usize>,
    /// Learned Q, K, V projections. `false` means Q = K = V = X (split into heads) and no output
    /// projection: the "raw embeddings" case. Default: true.
    #[config(default = true)]
    pub projections: bool,
    /// The output projection W_O (only with `projections`). Default: true.
    #[config(default = true)]
    pub output_projection: bool,
    /// Biases on the projections (Q = X·W_Q + b_Q, …). Default: false, as in the paper's formulas.
    #[config(default = false)]
    pub bias: bool,
    /// What the scores are divided by. Default: √d_k.
    #[config(default = "ScoreScale::SqrtDk")]
    pub scale: ScoreScale,
    /// Which axis the softmax normalises. Default: row (over keys).
    #[config(default = "SoftmaxAxis::Row")]
    pub softmax_axis: SoftmaxAxis,
    /// What each row is normalised by: Σ exp (standard) or 1 + Σ exp (off-by-one, row softmax
    /// only). Default: standard.
    #[config(default = "SoftmaxKind::Standard")]
    pub softmax: SoftmaxKind,
    /// A sigmoid gate per head on the attention output, σ(x·w_h + b_h) (see [`gate`]).
    /// Default: none.
    #[config(default = "GateKind::None")]
    pub gate: GateKind,
    /// What turns q and k into weights: the softmax, or linear attention's φ(q)·φ(k) with
    /// φ = elu + 1, computed by running sums (see [`kernel`]). Linear takes no scale,
    /// temperature, softmax option, dropout, SSMax or ALiBi. Default: softmax.
    #[config(default = "Kernel::Softmax")]
    pub kernel: Kernel,
    /// Softmax temperature τ: the scaled scores are divided by it. Default: 1.0.
    #[config(default = 1.0)]
    pub temperature: f64,
    /// Hide each query's future keys (j > i). Default: false.
    #[config(default = false)]
    pub causal: bool,
    /// Dropout on the attention weights, after the softmax (active only on an autodiff device).
    /// Default: 0.0.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Positional encoding applied by the block. Default: none.
    #[config(default = "PositionalKind::None")]
    pub positional: PositionalKind,
    /// QK-norm: RMS-normalise each head's q and k over d_k, with a learned gain g (one per
    /// coordinate, shared by the heads, initialised to 1): q̂ = g_q ⊙ q / rms(q). Then
    /// |q̂·k̂| ≤ max_t |g_q,t·g_k,t| · d_k, so the logits stay below that / (s·τ) whatever the
    /// projections grow to. RMSNorm rather than the papers' LayerNorm: with no centring and no
    /// bias the bound is exact, and the centring adds nothing to it. Default: off.
    #[config(default = false)]
    pub qk_norm: bool,
    /// Scalable-Softmax: each query's scores are multiplied by s_h·ln n, n the keys it sees
    /// (i + 1 under the causal mask), s_h learned per head from [`ssmax::S_INIT`]; see
    /// [`ssmax`]. Row softmax only. Default: off.
    #[config(default = false)]
    pub ssmax: bool,
    /// Longest sequence the positional encoding covers. Default: 512.
    #[config(default = 512)]
    pub max_len: usize,
    /// Seed of the host RNG that draws the initial weights, so that the same seed gives the same
    /// block on every backend. Default: 0.
    #[config(default = 0)]
    pub seed: u64,
    /// How the scores become the context: the fused op where it applies, or always step by step.
    /// Default: fused.
    #[config(default = "AttentionPath::Fused")]
    pub path: AttentionPath,
}

/// How the block computes softmax(scores)·V.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionPath {
    /// One fused op, with its own backward, wherever it computes the same thing as the steps:
    /// a row softmax, no dropout, and ALiBi only under a causal mask. Elsewhere the block takes
    /// the steps.
    #[default]
    Fused,
    /// Scores, mask, softmax, dropout and the weighted sum as separate tensor ops, each kept for
    /// the backward: [n_q, n_k] memory per head.
    Decomposed,
}

/// Why a configuration cannot build a block.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttentionConfigError {
    #[error("{field} must be at least 1, got 0")]
    Zero { field: &'static str },
    #[error("d_model = {d_model} is not divisible by n_heads = {n_heads}")]
    HeadsDoNotDivide { d_model: usize, n_heads: usize },
    #[error(
        "without projections Q = K = V = X, so d_k and d_v must equal d_model / n_heads = {expected}; got d_k = {d_k}, d_v = {d_v}"
    )]
    RawWidths {
        expected: usize,
        d_k: usize,
        d_v: usize,
    },
    #[error("temperature must be a positive finite number, got {0}")]
    Temperature(f64),
    #[error("the scale's divisor must be a positive finite number, got {0}")]
    Scale(f64),
    #[error(
        "the scores are divided by the scale's divisor × temperature = {divisor:e} × {temperature:e} = {:e}, which must lie in f32's normal range (about 1.2e-38 to 3.4e38)",
        divisor * temperature
    )]
    Divisor { divisor: f64, temperature: f64 },
    #[error("dropout must be in [0, 1), got {0}")]
    Dropout(f64),
    #[error("{field} must be at most {max} ({why}), got {value}")]
    TooMany {
        field: &'static str,
        max: usize,
        value: usize,
        why: &'static str,
    },
    /// Two settings that cannot go together; `why` names both.
    #[error("{why}")]
    Conflict {
        field: &'static str,
        why: &'static str,
    },
    #[error("{kind} positional encoding needs an even {field}, got {value}")]
    Odd {
        kind: PositionalKind,
        field: &'static str,
        value: usize,
    },
}

impl AttentionConfig {
    /// d_k after defaults: d_model / n_heads unless set.
    pub fn head_dim(&self) -> usize {
        self.d_k.unwrap_or(self.d_model / self.n_heads.max(1))
    }

    /// d_v after defaults: d_k unless set.
    pub fn value_dim(&self) -> usize {
        self.d_v.unwrap_or_else(|| self.head_dim())
    }

    /// Checks every field; `init` calls it.
    pub fn validate(&self) -> Result<(), AttentionConfigError> {
        use AttentionConfigError as E;
        for (field, value) in [
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("max_len", self.max_len),
        ] {
            if value == 0 {
                return Err(E::Zero { field });
            }
        }
        // Heads must tile d_model when d_k is derived from it, and when X itself is split.
        // Checked before d_k's own zero, so that n_heads > d_model is blamed on n_heads (which
        // was set) rather than on a derived d_k of 0 (which was not).
        let heads_tile_input = self.d_k.is_none() || !self.projections;
        if heads_tile_input && !self.d_model.is_multiple_of(self.n_heads) {
            return Err(E::HeadsDoNotDivide {
                d_model: self.d_model,
                n_heads: self.n_heads,
            });
        }
        for (field, value) in [("d_k", self.head_dim()), ("d_v", self.value_dim())] {
            if value == 0 {
                return Err(E::Zero { field });
            }
        }
        if !self.projections {
            let expected = self.d_model / self.n_heads;
            if self.head_dim() != expected || self.value_dim() != expected {
                return Err(E::RawWidths {
                    expected,
                    d_k: self.head_dim(),
                    d_v: self.value_dim(),
                });
            }
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(E::Temperature(self.temperature));
        }
        let divisor = self.scale.divisor(self.head_dim(), self.d_model);
        if !(divisor.is_finite() && divisor > 0.0) {
            return Err(E::Scale(divisor));
        }
        // Each is checked alone above; their product is what the f32 scores are divided by, and
        // 1e-300 × 1e-300 underflows to 0 (then inf and NaN weights).
        let product = divisor * self.temperature;
        if !(product > 0.0 && (product as f32).is_normal()) {
            return Err(E::Divisor {
                divisor,
                temperature: self.temperature,
            });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(E::Dropout(self.dropout));
        }
        if self.softmax == SoftmaxKind::OffByOne && self.softmax_axis != SoftmaxAxis::Row {
            return Err(E::Conflict {
                field: "softmax",
                why: "the off-by-one softmax adds 1 to each query's row sum: it needs softmax_axis = \"row\"",
            });
        }
        if self.ssmax && self.softmax_axis != SoftmaxAxis::Row {
            return Err(E::Conflict {
                field: "ssmax",
                why: "ssmax scales each query's row by the log of the keys it sees: it needs softmax_axis = \"row\"",
            });
        }
        if self.kernel == Kernel::Linear {
            let conflict = if self.softmax_axis != SoftmaxAxis::Row {
                Some(
                    "linear attention normalises each query's row: it needs softmax_axis = \"row\"",
                )
            } else if self.softmax != SoftmaxKind::Standard {
                Some(
                    "linear attention has no softmax to take off by one: it needs softmax = \"standard\"",
                )
            } else if self.ssmax {
                Some("linear attention has no scores for ssmax to scale: it cannot take ssmax")
            } else if self.scale != ScoreScale::SqrtDk || self.temperature != 1.0 {
                Some(
                    "linear attention applies φ = elu + 1 to q and k themselves: it takes no scale or temperature",
                )
            } else if self.dropout != 0.0 {
                Some(
                    "linear attention never holds the weights for dropout to act on: it needs dropout = 0",
                )
            } else if self.positional == PositionalKind::Alibi {
                Some(
                    "ALiBi adds a bias to the scores before a softmax: linear attention cannot take it",
                )
            } else {
                None
            };
            if let Some(why) = conflict {
                return Err(E::Conflict {
                    field: "kernel",
                    why,
                });
            }
        }
        let odd = |field, value: usize| E::Odd {
            kind: self.positional,
            field,
            value,
        };
        match self.positional {
            PositionalKind::Sinusoidal if self.d_model % 2 == 1 => {
                Err(odd("d_model", self.d_model))
            }
            PositionalKind::Rotary if self.head_dim() % 2 == 1 => Err(odd("d_k", self.head_dim())),
            _ => Ok(()),
        }
    }

    /// Builds the block on `device`, drawing weights from a host RNG seeded with `seed`: each
    /// projection W ~ U(−1/√fan_in, 1/√fan_in), Burn's default Linear initialisation.
    pub fn init(&self, device: &Device) -> Result<Attention, AttentionConfigError> {
        self.validate()?;
        let (d_model, n_heads) = (self.d_model, self.n_heads);
        let (d_k, d_v) = (self.head_dim(), self.value_dim());
        let mut rng = HostRng::new(self.seed);
        let mut linear =
            |d_in: usize, d_out: usize| uniform_linear(d_in, d_out, self.bias, &mut rng, device);
        let (query, key, value, output) = if self.projections {
            let query = linear(d_model, n_heads * d_k);
            let key = linear(d_model, n_heads * d_k);
            let value = linear(d_model, n_heads * d_v);
            let output = self
                .output_projection
                .then(|| linear(n_heads * d_v, d_model));
            (Some(query), Some(key), Some(value), output)
        } else {
            (None, None, None, None)
        };
        let positional = Positional::new(
            self.positional,
            d_model,
            d_k,
            self.max_len,
            &mut rng,
            device,
        );
        // Drawn after every other weight, so a block without a gate keeps the weights it had.
        let gate = (self.gate == GateKind::HeadOutput)
            .then(|| uniform_linear(d_model, n_heads, true, &mut rng, device));
        // The ε of an RMSNorm over d_k: small against the unit mean square it normalises to.
        let norm = || {
            self.qk_norm
                .then(|| RmsNormConfig::new(d_k).with_epsilon(1e-6).init(device))
        };
        Ok(Attention {
            query,
            key,
            value,
            output,
            dropout: DropoutConfig::new(self.dropout).init(),
            positional,
            q_norm: norm(),
            k_norm: norm(),
            ssmax: self.ssmax.then(|| ssmax::init_s(n_heads, device)),
            gate,
            d_model,
            n_heads,
            d_k,
            d_v,
            divisor: self.scale.divisor(d_k, d_model) * self.temperature,
            softmax_axis: self.softmax_axis,
            softmax: self.softmax,
            kernel: self.kernel,
            causal: self.causal,
            path: self.path,
        })
    }
}

/// A `Linear` drawn on the host: W ~ U(−1/√d_in, 1/√d_in), then b from the same range when
/// `bias` (Burn's default initialisation, but identical on every backend for one `rng`).
pub fn uniform_linear(
    d_in: usize,
    d_out: usize,
    bias: bool,
    rng: &mut HostRng,
    device: &Device,
) -> Linear {
    let bound = 1.0 / (d_in as f64).sqrt();
    let weight = rng.uniform_vec(d_in * d_out, bound);
    let bias = bias.then(|| rng.uniform_vec(d_out, bound));
    seeded_linear(weight, bias, d_in, d_out, device)
}

/// A `Linear` with the given row-major weight `[d_in, d_out]` (y = x·W + b).
pub fn seeded_linear(
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Linear {
    Linear {
        weight: Param::from_data(TensorData::new(weight, [d_in, d_out]), device),
        bias: bias.map(|b| Param::from_data(TensorData::new(b, [d_out]), device)),
    }
}

/// Multi-head attention that returns its weights. Build it with [`AttentionConfig::init`].
#[derive(Module, Debug)]
pub struct Attention {
    /// W_Q: `[d_model, n_heads·d_k]`; `None` without projections.
    pub query: Option<Linear>,
    /// W_K: `[d_model, n_heads·d_k]`.
    pub key: Option<Linear>,
    /// W_V: `[d_model, n_heads·d_v]`.
    pub value: Option<Linear>,
    /// W_O: `[n_heads·d_v, d_model]`.
    pub output: Option<Linear>,
    pub dropout: Dropout,
    pub positional: Positional,
    /// QK-norm's normalisations of q and k over d_k; `None` without `qk_norm`.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    /// SSMax's s, `[heads]`; `None` without `ssmax`.
    pub ssmax: Option<Param<Tensor<1>>>,
    /// The gate's w and b: `[d_model, n_heads]`; `None` without a gate.
    pub gate: Option<Linear>,
    pub d_model: usize,
    pub n_heads: usize,
    pub d_k: usize,
    pub d_v: usize,
    /// Scale divisor times temperature: the scores are divided by this.
    pub divisor: f64,
    #[module(skip)]
    pub softmax_axis: SoftmaxAxis,
    #[module(skip)]
    pub softmax: SoftmaxKind,
    #[module(skip)]
    pub kernel: Kernel,
    pub causal: bool,
    #[module(skip)]
    pub path: AttentionPath,
}

/// What one forward pass returns.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// `[batch, n_q, d_model]` (or `[batch, n_q, n_heads·d_v]` without an output projection).
    pub context: Tensor<3>,
    /// `[batch, heads, n_q, n_k]`: the weights the decomposed path computed (after dropout, when
    /// training); `None` after the fused op, which recomputes them on request.
    weights: Option<Tensor<4>>,
    /// `[batch, heads, n_q, d_k]`, after any rotary encoding and SSMax's factor.
    pub q: Tensor<4>,
    /// `[batch, heads, n_k, d_k]`, after any rotary encoding.
    pub k: Tensor<4>,
    /// `[batch, heads, n_k, d_v]`.
    pub v: Tensor<4>,
    /// `[batch, n_q, heads]`: each head's gate for each query, in (0, 1); `None` without a gate.
    pub gate: Option<Tensor<3>>,
    softmax: SoftmaxKind,
    kernel: Kernel,
    causal: bool,
    /// `[batch, n_k]`, true where a key is padding.
    key_padding: Option<Tensor<2, Bool>>,
    window: Option<Window>,
    /// ALiBi's `[1, heads, n_q, n_k]` biases, added after scaling.
    bias: Option<Tensor<4>>,
    /// ALiBi's slopes when the fused op computed this output, the bias as two more q and k
    /// columns ([`alibi_columns`]).
    alibi: Option<Vec<f64>>,
    divisor: f64,
}

impl AttentionOutput {
    /// `[batch, heads, n_q, n_k]`: the attention weights, after the softmax (and after dropout
    /// when training on the decomposed path). After the fused op they are recomputed from q and k
    /// (one matmul and a softmax, the forward's own operations); they still carry gradients to
    /// q and k on an autodiff device.
    /// Linear attention's are φ(q_i)·φ(k_j) normalised per row ([`kernel::weights`]).
    pub fn weights(&self) -> Tensor<4> {
        match (&self.weights, self.kernel) {
            (Some(weights), _) => weights.clone(),
            (None, Kernel::Softmax) => {
                masked_softmax(self.scores(), self.mask(), SoftmaxAxis::Row, self.softmax)
            }
            (None, Kernel::Linear) => kernel::weights(self.q.clone(), self.k.clone(), self.mask()),
        }
    }

    /// What turned q and k into these weights.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// `[batch, heads, n_q]`: the weight each query left unspent, 1 − Σ_j weights[i, j]. 0 for a
    /// standard softmax, up to 1 for the off-by-one softmax (and 1 for a query that sees no key).
    pub fn unspent(&self) -> Tensor<3> {
        let [batch, heads, n_q, _] = self.q.dims();
        self.weights()
            .sum_dim(3) // [batch, heads, n_q, 1]
            .reshape([batch, heads, n_q]) // [batch, heads, n_q]
            .neg()
            .add_scalar(1.0)
    }

    /// The normalisation the softmax used.
    pub fn softmax(&self) -> SoftmaxKind {
        self.softmax
    }

    /// `[batch, heads, n_q, n_k]`: the weights as the fused kernel itself computes them, read off
    /// its own output with the identity for values: with V = I (n_k × n_k), O = P·I = P, every
    /// mask and the kernel's tiling, rescaling and normalisation included. Where the decomposed
    /// path ran, its weights. [`Self::weights`] recomputes them with Burn's softmax instead, so a
    /// claim about the kernel's weights is tested through this.
    pub fn kernel_weights(&self) -> Tensor<4> {
        if self.weights.is_some() || self.kernel == Kernel::Linear {
            return self.weights();
        }
        let [batch, heads, _, _] = self.q.dims();
        let n_k = self.k.dims()[2];
        let identity = Tensor::<2>::eye(n_k, &self.q.device())
            .reshape([1, 1, n_k, n_k]) // [1, 1, n_k, n_k]
            .expand([batch, heads, n_k, n_k]); // [batch, heads, n_k, n_k]
        let (q, k) = match &self.alibi {
            Some(slopes) => {
                alibi_columns(self.q.clone(), self.k.clone(), slopes, 1.0 / self.divisor)
            } // [batch, heads, n, d_k + 2]
            None => (self.q.clone(), self.k.clone()),
        };
        fused::attention(
            q,
            k,
            identity,
            self.key_padding.clone(),
            1.0 / self.divisor,
            self.causal,
            self.softmax == SoftmaxKind::OffByOne,
        ) // [batch, heads, n_q, n_k]
    }

    /// Whether the fused op computed this output.
    pub fn fused(&self) -> bool {
        self.weights.is_none() && self.kernel == Kernel::Softmax
    }

    /// `[batch, 1, n_q, n_k]`, true where a key is hidden from a query; `None` when none is.
    pub fn mask(&self) -> Option<Tensor<4, Bool>> {
        let [batch, _, n_q, _] = self.q.dims();
        let n_k = self.k.dims()[2];
        let device = self.q.device();
        attention_mask(
            batch,
            n_q,
            n_k,
            self.causal,
            self.key_padding.clone(),
            self.window,
            &device,
        )
    }

    /// `[batch, heads, n_q, n_k]`: the scaled, masked logits fed to the softmax, q·kᵀ / (s·τ)
    /// (+ ALiBi's biases), with masked entries −∞.
    ///
    /// Recomputed from q and k on request (one matmul, same operations as the forward pass).
    /// Keeping the logits alive through every forward pass would stop the backend from running
    /// the softmax in place: that measured 3–13 % slower than burn-nn at n ≥ 128 on flex here.
    pub fn scores(&self) -> Tensor<4> {
        let scaled = self.raw_scores().div_scalar(self.divisor);
        let scaled = match &self.bias {
            Some(bias) => scaled + bias.clone(), // [batch, heads, n_q, n_k]
            None => scaled,
        };
        match self.mask() {
            Some(mask) => scaled.mask_fill(mask, f32::NEG_INFINITY),
            None => scaled,
        }
    }

    /// `[batch, heads, n_q, n_k]`: q·kᵀ before scaling and masking.
    pub fn raw_scores(&self) -> Tensor<4> {
        self.q.clone().matmul(self.k.clone().swap_dims(2, 3)) // [batch, heads, n_q, n_k]
    }

    /// The factor the scores are divided by: the scale's divisor times the temperature.
    pub fn divisor(&self) -> f64 {
        self.divisor
    }
}

/// A forward pass with the intermediate steps the output does not carry.
#[derive(Debug, Clone)]
pub struct AttentionTrace {
    /// `[batch, n_q, n_heads·d_v]`: the heads' contexts concatenated (and gated), before W_O.
    pub heads: Tensor<3>,
    pub output: AttentionOutput,
}

/// The inputs of one forward pass.
#[derive(Debug, Clone)]
pub struct AttentionInput {
    /// Queries come from x: `[batch, n_q, d_model]`.
    pub x: Tensor<3>,
    /// Keys and values come from here: `[batch, n_k, d_model]`; `None` means x (self-attention).
    pub context: Option<Tensor<3>>,
    /// `[batch, n_k]`, true where a key is padding.
    pub key_padding: Option<Tensor<2, Bool>>,
    /// A sliding window over self-attention's keys (a rolling KV cache, see [`Window`]), on top of
    /// the block's own masks. The block takes the decomposed path under it.
    pub window: Option<Window>,
}

impl AttentionInput {
    pub fn self_attn(x: Tensor<3>) -> Self {
        Self {
            x,
            context: None,
            key_padding: None,
            window: None,
        }
    }

    pub fn cross(x: Tensor<3>, context: Tensor<3>) -> Self {
        Self {
            x,
            context: Some(context),
            key_padding: None,
            window: None,
        }
    }

    pub fn key_padding(mut self, mask: Tensor<2, Bool>) -> Self {
        self.key_padding = Some(mask);
        self
    }

    pub fn window(mut self, window: Option<Window>) -> Self {
        self.window = window;
        self
    }
}

impl Attention {
    /// Self-attention: queries, keys and values all come from `x: [batch, n, d_model]`.
    pub fn forward(&self, x: Tensor<3>) -> AttentionOutput {
        self.forward_input(AttentionInput::self_attn(x))
    }

    /// Cross-attention: queries from `x: [batch, n_q, d_model]`, keys and values from
    /// `context: [batch, n_k, d_model]`.
    pub fn forward_cross(&self, x: Tensor<3>, context: Tensor<3>) -> AttentionOutput {
        self.forward_input(AttentionInput::cross(x, context))
    }

    /// The forward pass with any inputs: self- or cross-attention, with or without padding.
    ///
    /// # Panics
    /// When the inputs' widths are not d_model, their batches differ, or a sequence is longer
    /// than the positional encoding's `max_len`.
    pub fn forward_input(&self, input: AttentionInput) -> AttentionOutput {
        self.forward_traced(input).output
    }

    /// The forward pass, keeping the values and the concatenated heads too.
    pub fn forward_traced(&self, input: AttentionInput) -> AttentionTrace {
        let [batch, n_q, d_model] = input.x.dims();
        let device = input.x.device();
        assert_eq!(
            d_model, self.d_model,
            "x has width {d_model}, expected d_model = {}",
            self.d_model
        );
        let x = self.positional.add(input.x); // [batch, n_q, d_model]
        let context = match input.context {
            Some(c) => self.positional.add(c), // [batch, n_k, d_model]
            None => x.clone(),
        };
        let [batch_c, n_k, d_model_c] = context.dims();
        assert_eq!(
            (batch_c, d_model_c),
            (batch, self.d_model),
            "context must be [batch = {batch}, n_k, d_model = {}]",
            self.d_model
        );

        // The gate reads the query's own input, before it is projected (Qiu et al.'s G1).
        let gate = self.gate_of(&x); // [batch, n_q, heads]

        // 1. Project and split into heads.
        let q = self.heads_of(x, &self.query, self.d_k); // [batch, heads, n_q, d_k]
        let k = self.heads_of(context.clone(), &self.key, self.d_k); // [batch, heads, n_k, d_k]
        let v = self.heads_of(context, &self.value, self.d_v); // [batch, heads, n_k, d_v]
        let q = match &self.q_norm {
            Some(norm) => norm.forward(q), // [batch, heads, n_q, d_k]
            None => q,
        };
        let k = match &self.k_norm {
            Some(norm) => norm.forward(k), // [batch, heads, n_k, d_k]
            None => k,
        };
        let q = self.positional.rotate(q);
        let k = self.positional.rotate(k);
        // SSMax: row i of q times s_h·ln n_i, which the fused op takes as it is.
        let q = match &self.ssmax {
            Some(s) => {
                let n = ssmax::visible_keys(
                    batch,
                    n_q,
                    n_k,
                    self.causal,
                    input.key_padding.clone(),
                    input.window,
                    &device,
                ); // [batch or 1, 1, n_q, 1]
                ssmax::scale_queries(q, s.val(), n) // [batch, heads, n_q, d_k]
            }
            None => q,
        };

        if self.kernel == Kernel::Linear {
            assert!(
                input.window.is_none(),
                "linear attention reads the past through running sums: it has no window"
            );
            // 2–4: φ(q)ᵀ S_i / φ(q)·z_i by running sums, never the [n_q, n_k] weights.
            let heads = kernel::attention(
                q.clone(),
                k.clone(),
                v.clone(),
                input.key_padding.clone(),
                self.causal,
            ) // [batch, heads, n_q, d_v]
            .swap_dims(1, 2) // [batch, n_q, heads, d_v]
            .reshape([batch, n_q, self.n_heads * self.d_v]); // [batch, n_q, heads·d_v]
            let masks = (input.key_padding, None);
            return self.finish(heads, gate, v, None, q, k, masks, None, None);
        }

        let bias = self.positional.bias(self.n_heads, n_q, n_k, &device);
        // Under a causal mask ALiBi's bias is bilinear in the positions, so the fused op takes
        // it as two more columns of q and k.
        let alibi = self
            .causal
            .then(|| self.positional.slopes(self.n_heads))
            .flatten();
        if input.window.is_none() && self.takes_fused_path(bias.is_some() && alibi.is_none()) {
            // 2–4 in one op: softmax(q·kᵀ / (s·τ) + ALiBi, masked)·v, with its own backward.
            let (q_in, k_in) = match &alibi {
                Some(slopes) => alibi_columns(q.clone(), k.clone(), slopes, 1.0 / self.divisor), // [batch, heads, n, d_k + 2]
                None => (q.clone(), k.clone()),
            };
            let heads = fused::attention(
                q_in,
                k_in,
                v.clone(),
                input.key_padding.clone(),
                1.0 / self.divisor,
                self.causal,
                self.softmax == SoftmaxKind::OffByOne,
            ) // [batch, heads, n_q, d_v]
            .swap_dims(1, 2) // [batch, n_q, heads, d_v]
            .reshape([batch, n_q, self.n_heads * self.d_v]); // [batch, n_q, heads·d_v]
            let masks = (input.key_padding, None);
            return self.finish(heads, gate, v, None, q, k, masks, bias, alibi);
        }

        // 2. Scores, scaled: q·kᵀ / (s·τ), plus ALiBi's distance penalty.
        let scaled = q
            .clone()
            .matmul(k.clone().swap_dims(2, 3)) // [batch, heads, n_q, n_k]
            .div_scalar(self.divisor);
        let scaled = match &bias {
            Some(bias) => scaled + bias.clone(), // [batch, heads, n_q, n_k]
            None => scaled,
        };

        // 3. Mask, softmax on the chosen axis, dropout on the weights.
        let mask = attention_mask(
            batch,
            n_q,
            n_k,
            self.causal,
            input.key_padding.clone(),
            input.window,
            &device,
        );
        let weights = masked_softmax(scaled, mask, self.softmax_axis, self.softmax);
        let weights = self.dropout.forward(weights);

        // 4. Weighted sum of values, heads concatenated (and gated), then W_O.
        let heads = weights
            .clone()
            .matmul(v.clone()) // [batch, heads, n_q, d_v]
            .swap_dims(1, 2) // [batch, n_q, heads, d_v]
            .reshape([batch, n_q, self.n_heads * self.d_v]); // [batch, n_q, heads·d_v]
        let masks = (input.key_padding, input.window);
        self.finish(heads, gate, v, Some(weights), q, k, masks, bias, None)
    }

    /// `[batch, n_q, heads]`: σ(x·w_h + b_h) for each query's input `x [batch, n_q, d_model]`;
    /// `None` without a gate.
    fn gate_of(&self, x: &Tensor<3>) -> Option<Tensor<3>> {
        let w = self.gate.as_ref()?;
        Some(burn::tensor::activation::sigmoid(linear::forward(
            w,
            x.clone(),
        ))) // [batch, n_q, heads]
    }

    /// Whether the fused op computes what the steps would: a row softmax, no dropout, no
    /// additive bias it cannot take (ALiBi without a causal mask), and the fused path not
    /// turned off.
    pub fn takes_fused_path(&self, has_bias: bool) -> bool {
        self.path == AttentionPath::Fused
            && self.softmax_axis == SoftmaxAxis::Row
            && self.dropout.prob == 0.0
            && !has_bias
    }

    /// Step 5: the gate on each head, W_O over the concatenated heads, and the output.
    #[allow(clippy::too_many_arguments)] // the pieces of an output, named
    fn finish(
        &self,
        heads: Tensor<3>,
        gate: Option<Tensor<3>>,
        v: Tensor<4>,
        weights: Option<Tensor<4>>,
        q: Tensor<4>,
        k: Tensor<4>,
        (key_padding, window): (Option<Tensor<2, Bool>>, Option<Window>),
        bias: Option<Tensor<4>>,
        alibi: Option<Vec<f64>>,
    ) -> AttentionTrace {
        let heads = match &gate {
            Some(gate) => gate::apply(heads, gate.clone()), // [batch, n_q, heads·d_v]
            None => heads,
        };
        let context = match &self.output {
            Some(w_o) => linear::forward(w_o, heads.clone()), // [batch, n_q, d_model]
            None => heads.clone(),
        };
        AttentionTrace {
            heads,
            output: AttentionOutput {
                context,
                weights,
                q,
                k,
                v,
                gate,
                softmax: self.softmax,
                kernel: self.kernel,
                causal: self.causal,
                key_padding,
                window,
                bias,
                alibi,
                divisor: self.divisor,
            },
        }
    }

    /// burn-nn's `MultiHeadAttention` with this block's weights, for parity checks and the
    /// benchmark; `None` unless the block computes exactly what it does: all four projections,
    /// n_heads·d_k = d_model, d_v = d_k, √d_k scaling at τ = 1, row softmax, no positional
    /// encoding. Dropout is carried over; masks are passed at call time, as burn-nn takes them.
    pub fn burn_nn_twin(&self) -> Option<MultiHeadAttention> {
        let (query, key, value, output) = (
            self.query.clone()?,
            self.key.clone()?,
            self.value.clone()?,
            self.output.clone()?,
        );
        let same_math = self.n_heads * self.d_k == self.d_model
            && self.d_v == self.d_k
            && self.divisor == ScoreScale::SqrtDk.divisor(self.d_k, self.d_model)
            && self.softmax_axis == SoftmaxAxis::Row
            && self.positional.is_none()
            && self.q_norm.is_none()
            && self.ssmax.is_none()
            && self.softmax == SoftmaxKind::Standard
            && self.kernel == Kernel::Softmax
            && self.gate.is_none();
        if !same_math {
            return None;
        }
        let device = query.weight.val().device();
        let mut mha = MultiHeadAttentionConfig::new(self.d_model, self.n_heads)
            .with_dropout(self.dropout.prob)
            .init(&device);
        (mha.query, mha.key, mha.value, mha.output) = (query, key, value, output);
        Some(mha)
    }

    /// `[batch, n, d_model]` → `[batch, heads, n, width]`, through `projection` when there is one.
    fn heads_of(&self, x: Tensor<3>, projection: &Option<Linear>, width: usize) -> Tensor<4> {
        let [batch, n, _] = x.dims();
        let projected = match projection {
            Some(w) => linear::forward(w, x), // [batch, n, heads·width]
            None => x,
        };
        projected
            .reshape([batch, n, self.n_heads, width]) // [batch, n, heads, width]
            .swap_dims(1, 2) // [batch, heads, n, width]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let err = AttentionConfig::new(10, 3).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "d_model = 10 is not divisible by n_heads = 3"
        );
        let err = AttentionConfig::new(8, 0).validate().unwrap_err();
        assert_eq!(err.to_string(), "n_heads must be at least 1, got 0");
        let err = AttentionConfig::new(8, 2)
            .with_temperature(0.0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("temperature"), "{err}");
        let err = AttentionConfig::new(6, 2)
            .with_positional(PositionalKind::Rotary)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("even d_k, got 3"), "{err}");
        let err = AttentionConfig::new(8, 2)
            .with_projections(false)
            .with_d_k(Some(3))
            .validate()
            .unwrap_err();
        assert!(
            matches!(err, AttentionConfigError::RawWidths { .. }),
            "{err}"
        );
        // An explicit d_k lifts the divisibility rule: heads need not tile d_model.
        assert!(
            AttentionConfig::new(10, 3)
                .with_d_k(Some(4))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn shapes() {
        let device = Device::flex();
        let block = AttentionConfig::new(8, 2).init(&device).unwrap();
        let x = HostRng::new(0).normal_tensor([3, 5, 8], 1.0, &device);
        let out = block.forward(x);
        assert_eq!(out.context.dims(), [3, 5, 8]);
        assert_eq!(out.weights().dims(), [3, 2, 5, 5]);
        assert_eq!(out.scores().dims(), [3, 2, 5, 5]);
    }

    #[test]
    fn burn_nn_twin_only_for_the_same_math() {
        let device = Device::flex();
        let twin = |c: AttentionConfig| c.init(&device).unwrap().burn_nn_twin().is_some();
        assert!(twin(AttentionConfig::new(8, 2)));
        assert!(!twin(
            AttentionConfig::new(8, 2).with_scale(ScoreScale::SqrtDModel)
        ));
        assert!(!twin(AttentionConfig::new(8, 2).with_temperature(2.0)));
        assert!(!twin(
            AttentionConfig::new(8, 2).with_softmax_axis(SoftmaxAxis::Column)
        ));
        assert!(!twin(
            AttentionConfig::new(8, 2).with_positional(PositionalKind::Rotary)
        ));
        assert!(!twin(AttentionConfig::new(8, 2).with_projections(false)));
        assert!(!twin(AttentionConfig::new(8, 2).with_d_k(Some(3))));
    }

    #[test]
    fn same_seed_same_weights() {
        let device = Device::flex();
        let a = AttentionConfig::new(8, 2)
            .with_seed(5)
            .init(&device)
            .unwrap();
        let b = AttentionConfig::new(8, 2)
            .with_seed(5)
            .init(&device)
            .unwrap();
        let w = |m: &Attention| m.query.as_ref().unwrap().weight.val().into_data();
        assert_eq!(w(&a), w(&b));
    }
}
