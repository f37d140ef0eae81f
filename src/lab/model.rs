//! A tiny transformer: token embedding, positional encoding, L blocks, a classifier head.
//!
//! h₀ = E[tokens] + PE, then for each block h ← h + Attn(LN(h)) and h ← h + MLP(LN(h))
//! (pre-norm, Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture"), and
//! logits = LN(h)·W_head at the last `n_out` positions. [`NormPlacement::Post`] gives the
//! original Transformer's h ← LN(h + Attn(h)), h ← LN(h + MLP(h)) and logits = h·W_head. The attention options of
//! [`AttentionConfig`] pass straight through, so every pitfall can be trained.

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::block::attention::{
    Attention, AttentionConfig, AttentionConfigError, AttentionInput, AttentionOutput,
    AttentionPath, uniform_linear,
};
use crate::block::gate::GateKind;
use crate::block::gelu::gelu;
use crate::block::kernel::Kernel;
use crate::block::layer_norm;
use crate::block::linear;
use crate::block::mask::Window;
use crate::block::positional::{Positional, PositionalKind};
use crate::block::scale::ScoreScale;
use crate::block::softmax::{SoftmaxAxis, SoftmaxKind};
use crate::lab::tasks::{Batch, Task};
use crate::util::limits::{MAX_LAYERS, MAX_POSITIONS};
use crate::util::rng::HostRng;

/// The model's shape and its attention options, as written in a config's `[model]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub d_model: usize,
    pub n_heads: usize,
    /// Per-head width of queries and keys. Default: d_model / n_heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_k: Option<usize>,
    /// Number of blocks. Default: 1.
    #[serde(default = "one")]
    pub n_layers: usize,
    /// Hidden width of the MLP; 0 leaves the MLP out. Default: 4·d_model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_ff: Option<usize>,
    /// Default: √d_k.
    #[serde(default)]
    pub scale: ScoreScale,
    /// Default: row.
    #[serde(default)]
    pub softmax_axis: SoftmaxAxis,
    /// `"standard"` or `"off-by-one"` (softmax1: 1 + Σ exp in each row's denominator, see
    /// [`SoftmaxKind`]). Default: standard.
    #[serde(default, skip_serializing_if = "is_standard")]
    pub softmax: SoftmaxKind,
    /// `"none"` or `"head-output"`: a sigmoid gate per head on the attention output (see
    /// [`crate::block::gate`]). Default: none.
    #[serde(default, skip_serializing_if = "is_ungated")]
    pub gate: GateKind,
    /// `"softmax"` or `"linear"`: linear attention's φ(q)·φ(k), φ = elu + 1, by running sums
    /// (see [`crate::block::kernel`]). Default: softmax.
    #[serde(default, skip_serializing_if = "is_softmax")]
    pub kernel: Kernel,
    /// Default: 1.0.
    #[serde(default = "unit")]
    pub temperature: f64,
    /// Default: false.
    #[serde(default)]
    pub causal: bool,
    /// Default: none.
    #[serde(default)]
    pub positional: PositionalKind,
    /// Learned Q/K/V/O projections; false gives Q = K = V = LN(h). Default: true.
    #[serde(default = "yes")]
    pub projections: bool,
    /// QK-norm in every block (see [`AttentionConfig::qk_norm`]). Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub qk_norm: bool,
    /// Scalable-Softmax in every block (see [`AttentionConfig::ssmax`]): each query's scores
    /// times s·ln n, n the keys it sees. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ssmax: bool,
    /// µP relative to a model of this width (see [`crate::lab::mup`]): W_Q and the readout start
    /// at zero, and training scales the Adam rates of the width × width matrices and of the
    /// readout by base / d_model. Needs `scale = "dk"` and projections. Default: off (standard
    /// parametrisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mup_base_width: Option<usize>,
    /// A learned beginning-of-sequence vector before the tokens, at position 0, that every
    /// query may attend to (a causal mask never hides it). Weight a row softmax leaves there is
    /// weight it need not spread over the tokens, so a query can attend to c matches and the BOS
    /// and read c from the BOS's share, 1/(c+1). Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bos: bool,
    /// Where each block's layer norms sit. Default: pre.
    #[serde(default, skip_serializing_if = "NormPlacement::is_pre")]
    pub norm: NormPlacement,
    /// Positions the model has room for (its learned or sinusoidal table, rotary, ALiBi).
    /// Default: the task's sequence length. More lets it run on sequences longer than it trained
    /// on; a learned table's rows past the training length get no gradient and keep their
    /// initial draws.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
    /// `"fused"`: softmax(scores)·V as one op where the math allows (see
    /// [`AttentionPath`]); `"decomposed"`: step by step everywhere, to compare. The results are
    /// the same to float rounding. Default: fused.
    #[serde(default, skip_serializing_if = "is_fused")]
    pub attention_path: AttentionPath,
}

/// Where a block normalises its residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormPlacement {
    /// Before each sublayer, inside its branch, with one more norm before the head.
    #[default]
    Pre,
    /// After each residual sum (Vaswani et al. 2017, §3.1), none before the head.
    Post,
}

impl NormPlacement {
    fn is_pre(&self) -> bool {
        *self == NormPlacement::Pre
    }
}

fn is_standard(kind: &SoftmaxKind) -> bool {
    *kind == SoftmaxKind::Standard
}

fn is_softmax(kernel: &Kernel) -> bool {
    *kernel == Kernel::Softmax
}

fn is_ungated(gate: &GateKind) -> bool {
    *gate == GateKind::None
}

fn is_fused(path: &AttentionPath) -> bool {
    *path == AttentionPath::Fused
}

fn one() -> usize {
    1
}
fn unit() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl ModelConfig {
    pub fn new(d_model: usize, n_heads: usize) -> Self {
        Self {
            d_model,
            n_heads,
            d_k: None,
            n_layers: 1,
            d_ff: None,
            scale: ScoreScale::SqrtDk,
            softmax_axis: SoftmaxAxis::Row,
            softmax: SoftmaxKind::Standard,
            gate: GateKind::None,
            kernel: Kernel::Softmax,
            temperature: 1.0,
            causal: false,
            positional: PositionalKind::None,
            projections: true,
            qk_norm: false,
            ssmax: false,
            mup_base_width: None,
            bos: false,
            norm: NormPlacement::Pre,
            max_len: None,
            attention_path: AttentionPath::Fused,
        }
    }

    /// The MLP's hidden width after defaults.
    pub fn hidden(&self) -> usize {
        self.d_ff.unwrap_or(4 * self.d_model)
    }

    /// The attention block of layer `layer`. Absolute encodings are added once, at the embedding;
    /// rotary and ALiBi act inside every block.
    pub fn attention(&self, max_len: usize, seed: u64) -> AttentionConfig {
        let positional = match self.positional {
            PositionalKind::Rotary => PositionalKind::Rotary,
            PositionalKind::Alibi => PositionalKind::Alibi,
            _ => PositionalKind::None,
        };
        AttentionConfig::new(self.d_model, self.n_heads)
            .with_d_k(self.d_k)
            .with_projections(self.projections)
            .with_scale(self.scale)
            .with_softmax_axis(self.softmax_axis)
            .with_softmax(self.softmax)
            .with_gate(self.gate)
            .with_kernel(self.kernel)
            .with_temperature(self.temperature)
            .with_causal(self.causal)
            .with_positional(positional)
            .with_qk_norm(self.qk_norm)
            .with_ssmax(self.ssmax)
            .with_path(self.attention_path)
            .with_max_len(max_len)
            .with_seed(seed)
    }

    /// Checks the sizes and the attention options.
    pub fn validate(&self) -> Result<(), AttentionConfigError> {
        if self.n_layers == 0 {
            return Err(AttentionConfigError::Zero { field: "n_layers" });
        }
        if self.n_layers > MAX_LAYERS {
            return Err(AttentionConfigError::TooMany {
                field: "n_layers",
                max: MAX_LAYERS,
                value: self.n_layers,
                why: "a tiny transformer for toy tasks, not a language model",
            });
        }
        if self.positional == PositionalKind::Sinusoidal && self.d_model % 2 == 1 {
            return Err(AttentionConfigError::Odd {
                kind: self.positional,
                field: "d_model",
                value: self.d_model,
            });
        }
        match self.max_len {
            Some(0) => return Err(AttentionConfigError::Zero { field: "max_len" }),
            Some(n) if n > MAX_POSITIONS => {
                return Err(AttentionConfigError::TooMany {
                    field: "max_len",
                    max: MAX_POSITIONS,
                    value: n,
                    why: "the positional tables are allocated up front",
                });
            }
            _ => {}
        }
        if let Some(base) = self.mup_base_width {
            if base == 0 {
                return Err(AttentionConfigError::Zero {
                    field: "mup_base_width",
                });
            }
            if self.scale != ScoreScale::Dk {
                return Err(AttentionConfigError::Conflict {
                    field: "mup_base_width",
                    why: "µP (mup_base_width) divides the scores by d_k: set scale = \"dk\"",
                });
            }
            if !self.projections {
                return Err(AttentionConfigError::Conflict {
                    field: "mup_base_width",
                    why: "µP (mup_base_width) starts W_Q at zero and scales the projections' rates: it needs projections = true",
                });
            }
        }
        self.attention(1, 0).validate()
    }

    /// Positions the model is built for, given a task of `tokens` tokens: `max_len` when it is
    /// longer, and one more with the BOS.
    pub fn positions(&self, tokens: usize) -> usize {
        tokens.max(self.max_len.unwrap_or(0)) + usize::from(self.bos)
    }

    /// [`Self::init`] for `task`: its vocabulary and classes, with room for its sequences. The
    /// model training on `task` alone starts from, for the same `seed`.
    pub fn init_for(
        &self,
        task: &Task,
        seed: u64,
        device: &Device,
    ) -> Result<TinyTransformer, AttentionConfigError> {
        self.init(task.vocab(), task.classes(), task.seq_len(), seed, device)
    }

    /// Builds the model for a vocabulary of `vocab` tokens and `classes` outputs, on sequences of
    /// at most `max_len` tokens, with weights drawn from a host RNG seeded with `seed`.
    pub fn init(
        &self,
        vocab: usize,
        classes: usize,
        max_len: usize,
        seed: u64,
        device: &Device,
    ) -> Result<TinyTransformer, AttentionConfigError> {
        self.validate()?;
        let d_model = self.d_model;
        let mut rng = HostRng::new(seed);
        // N(0, 1) token embeddings, like Burn's `Embedding` default.
        let embedding = Embedding {
            weight: Param::from_tensor(rng.normal_tensor([vocab, d_model], 1.0, device)),
        };
        let absolute = match self.positional {
            PositionalKind::Rotary => PositionalKind::None,
            kind => kind,
        };
        let max_len = self.positions(max_len);
        let positional = Positional::new(absolute, d_model, d_model, max_len, &mut rng, device);
        let linear =
            |d_in, d_out, rng: &mut HostRng| uniform_linear(d_in, d_out, true, rng, device);
        let mut blocks = Vec::with_capacity(self.n_layers);
        for _ in 0..self.n_layers {
            let attention = self.attention(max_len, rng.next_u64()).init(device)?;
            let mlp = (self.hidden() > 0).then(|| Mlp {
                up: linear(d_model, self.hidden(), &mut rng),
                down: linear(self.hidden(), d_model, &mut rng),
            });
            blocks.push(Block {
                norm_attention: norm(d_model, device),
                attention,
                norm_mlp: norm(d_model, device),
                mlp,
            });
        }
        let mut head = linear(d_model, classes, &mut rng);
        if self.mup_base_width.is_some() {
            // µP's zero starts (Yang et al. 2022, Tensor Programs V, §D.2): with W_Q = 0 the
            // logits start at 0 at every width, and with a zero readout the output's size after
            // a step does not depend on the width either.
            for block in &mut blocks {
                if let Some(query) = block.attention.query.take() {
                    block.attention.query = Some(zeroed(query));
                }
            }
            head = zeroed(head);
        }
        // Drawn last, so a model without it keeps every other weight it had before.
        let bos = self
            .bos
            .then(|| Param::from_tensor(rng.normal_tensor([1, 1, d_model], 1.0, device)));
        Ok(TinyTransformer {
            embedding,
            bos,
            positional,
            blocks,
            norm: norm(d_model, device),
            head,
            placement: self.norm,
        })
    }
}

/// A layer norm's weights (γ = 1, β = 0) with the ε [`layer_norm::forward`] computes with.
fn norm(d_model: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d_model)
        .with_epsilon(layer_norm::EPSILON)
        .init(device)
}

/// `linear` with its weight and bias set to zero.
fn zeroed(linear: Linear) -> Linear {
    let zero = |p: Param<Tensor<2>>| Param::from_tensor(p.val().zeros_like());
    Linear {
        weight: zero(linear.weight),
        bias: linear
            .bias
            .map(|b| Param::from_tensor(b.val().zeros_like())),
    }
}

/// The position-wise MLP: down(GELU(up(x))).
#[derive(Module, Debug)]
pub struct Mlp {
    pub up: Linear,
    pub down: Linear,
}

/// One pre-norm block.
#[derive(Module, Debug)]
pub struct Block {
    pub norm_attention: LayerNorm,
    pub attention: Attention,
    pub norm_mlp: LayerNorm,
    pub mlp: Option<Mlp>,
}

/// Embedding, positional encoding, blocks, final norm and classifier head.
#[derive(Module, Debug)]
pub struct TinyTransformer {
    pub embedding: Embedding,
    /// The BOS vector, `[1, 1, d_model]`; `None` without `bos`.
    pub bos: Option<Param<Tensor<3>>>,
    pub positional: Positional,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    pub head: Linear,
    #[module(skip)]
    pub placement: NormPlacement,
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// `[batch·n_out, classes]`: the logits at the last `n_out` positions, flattened in the
    /// order of [`crate::lab::tasks::Batch::targets`].
    pub logits: Tensor<2>,
    /// `[batch, positions, d_model]`: the residual stream after the last block (before the norm);
    /// positions = seq_len, plus 1 in front with the BOS.
    pub hidden: Tensor<3>,
    /// `[batch, positions, d_model]` per block: the residual stream after it, first block first
    /// (the last is `hidden`).
    pub residuals: Vec<Tensor<3>>,
    /// Each block's attention output, first block first (with the BOS its key and query 0).
    pub attention: Vec<AttentionOutput>,
}

impl TinyTransformer {
    /// Runs `batch` of `task` without autodiff, for measuring rather than training: the model
    /// as trained may still sit on the autodiff device, and a measurement wants no graph.
    pub fn infer(&self, batch: &Batch, task: &Task, device: &Device) -> ModelOutput {
        self.valid().forward(batch.tokens(device), task.n_out())
    }

    /// Runs `tokens: [batch, seq_len]` and reads the last `n_out` positions.
    pub fn forward(&self, tokens: Tensor<2, Int>, n_out: usize) -> ModelOutput {
        let x = self.embedding.forward(tokens); // [batch, n, d_model]
        self.forward_embedded(x, n_out)
    }

    /// [`Self::forward`] with every block's attention limited to a sliding `window` (a rolling KV
    /// cache, see [`Window`]), positions counted with the BOS when there is one. The blocks take
    /// the decomposed path under it: this is for evaluation.
    pub fn forward_windowed(
        &self,
        tokens: Tensor<2, Int>,
        n_out: usize,
        window: Option<Window>,
    ) -> ModelOutput {
        let x = self.embedding.forward(tokens); // [batch, n, d_model]
        self.run(x, n_out, window)
    }

    /// Runs from embeddings `x: [batch, seq_len, d_model]`, before the positional encoding.
    pub fn forward_embedded(&self, x: Tensor<3>, n_out: usize) -> ModelOutput {
        self.run(x, n_out, None)
    }

    fn run(&self, x: Tensor<3>, n_out: usize, window: Option<Window>) -> ModelOutput {
        let [batch, _, d_model] = x.dims();
        let x = match &self.bos {
            Some(bos) => Tensor::cat(vec![bos.val().expand([batch, 1, d_model]), x], 1), // [batch, 1 + n, d_model]
            None => x,
        };
        let n = x.dims()[1];
        let mut h = self.positional.add(x); // [batch, n, d_model]
        let mut attention = Vec::with_capacity(self.blocks.len());
        let mut residuals = Vec::with_capacity(self.blocks.len());
        let attend = |block: &Block, x: Tensor<3>| {
            block
                .attention
                .forward_input(AttentionInput::self_attn(x).window(window))
        };
        let pre = self.placement == NormPlacement::Pre;
        for block in &self.blocks {
            let out = if pre {
                let out = attend(block, layer_norm::forward(&block.norm_attention, h.clone()));
                h = h + out.context.clone(); // [batch, n, d_model]
                out
            } else {
                let out = attend(block, h.clone());
                h = layer_norm::forward(&block.norm_attention, h + out.context.clone()); // [batch, n, d_model]
                out
            };
            if let Some(mlp) = &block.mlp {
                if pre {
                    let x = layer_norm::forward(&block.norm_mlp, h.clone()); // [batch, n, d_model]
                    let up = linear::forward(&mlp.up, x); // [batch, n, d_ff]
                    h = h + linear::forward(&mlp.down, gelu(up)); // [batch, n, d_model]
                } else {
                    let up = linear::forward(&mlp.up, h.clone()); // [batch, n, d_ff]
                    h = layer_norm::forward(
                        &block.norm_mlp,
                        h + linear::forward(&mlp.down, gelu(up)),
                    ); // [batch, n, d_model]
                }
            }
            attention.push(out);
            residuals.push(h.clone());
        }
        let last = h.clone().slice([0..batch, n - n_out..n, 0..d_model]); // [batch, n_out, d_model]
        let last = if pre {
            layer_norm::forward(&self.norm, last)
        } else {
            last
        };
        let read = last.reshape([batch * n_out, d_model]); // [batch·n_out, d_model]
        ModelOutput {
            logits: linear::forward(&self.head, read), // [batch·n_out, classes]
            hidden: h,
            residuals,
            attention,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::tasks::{Task, TaskConfig, TaskKind};

    #[test]
    fn shapes_follow_the_task() {
        let device = Device::flex();
        let task = Task::new(TaskConfig::new(TaskKind::Reverse, 4, 6)).unwrap();
        let mut config = ModelConfig::new(16, 2);
        config.n_layers = 2;
        config.positional = PositionalKind::Rotary;
        let model = config.init_for(&task, 0, &device).unwrap();
        let batch = task.batch(3, &mut HostRng::new(1));
        let out = model.forward(batch.tokens(&device), task.n_out());
        assert_eq!(out.logits.dims(), [3 * 4, 6]);
        assert_eq!(out.attention.len(), 2);
        assert_eq!(out.attention[0].weights().dims(), [3, 2, 8, 8]);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let err = ModelConfig::new(10, 3).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "d_model = 10 is not divisible by n_heads = 3"
        );
        let mut config = ModelConfig::new(8, 2);
        config.n_layers = 0;
        assert!(config.validate().is_err());
    }
}
