//! The seed pages' step-by-step walkthrough: X, Q, K, V, Q·Kᵀ, the scaling, the softmax and
//! weights·V, printed as tables with the tokens on rows and columns.
//!
//! The default input is the worked example of the seed page "Self-Attention" (tokens "I", "love",
//! "cats" with 3×4 embeddings). Users can trace their own matrices from a JSON file.
//!
//! Three rooms: [`input`] reads what to trace (strict JSON, or the seed page's example), this
//! file computes it with the real block ([`run`]: every head's q, k, v, scores, weights and
//! output), and [`render`] shows it (JSON for `--json` and the explorer, text tables).

use burn::prelude::*;
use serde_json::{Value, json};

use crate::block::attention::{
    AttentionConfig, AttentionConfigError, AttentionInput, AttentionOutput, AttentionPath,
    seeded_linear,
};
use crate::block::gate::GateKind;
use crate::block::kernel::{self, Kernel};
use crate::block::positional::PositionalKind;
use crate::block::scale::ScoreScale;
use crate::block::softmax::{SoftmaxAxis, SoftmaxKind};
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{self, head_rows, to_host};
use crate::util::rng::{HostRng, stable_hash};

pub mod input;
pub mod render;

pub use input::{load_input, parse_input, parse_json, seed_page_example};
pub use render::{MAX_LABEL, label};

/// A dense row-major matrix read from the input file.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn from_rows(rows: &[&[f32]]) -> Self {
        Self {
            rows: rows.len(),
            cols: rows.first().map_or(0, |r| r.len()),
            data: rows.iter().flat_map(|r| r.iter().copied()).collect(),
        }
    }

    fn shape(&self) -> String {
        format!("{} × {}", self.rows, self.cols)
    }

    /// The matrix as rows of numbers.
    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        metrics::rows(&self.data, self.cols)
    }
}

/// What `trace` runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceInput {
    pub tokens: Vec<String>,
    /// `n × d_model`, one row per token.
    pub x: Matrix,
    /// `(W_Q, W_K, W_V)`: `d_model × d_k`, `d_model × d_k`, `d_model × d_v`. Drawn from the seed
    /// when absent.
    pub weights: Option<(Matrix, Matrix, Matrix)>,
}

/// How to run the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOptions {
    pub causal: bool,
    pub scale: ScoreScale,
    pub softmax_axis: SoftmaxAxis,
    pub temperature: f64,
    /// Seed for W_Q, W_K, W_V when the input has none.
    pub seed: u64,
    /// Width of each head's seeded W_Q, W_K (and W_V); default d_model / n_heads.
    pub d_k: Option<usize>,
    pub n_heads: usize,
    pub positional: PositionalKind,
    /// Off: Q = K = V = X, split into heads (the `no_projections` pitfall).
    pub projections: bool,
    /// QK-norm (gains at 1): q and k are shown after it.
    pub qk_norm: bool,
    /// Scalable-Softmax (s at its initial value): q is shown after its factor s·ln n.
    pub ssmax: bool,
    /// Standard or off-by-one (1 + Σ exp in each row's denominator: rows sum to less than 1).
    pub softmax: SoftmaxKind,
    /// A seeded sigmoid gate per head on its output (see [`crate::block::gate`]).
    pub gate: GateKind,
    /// Softmax, or linear attention: φ(q)·φ(k), φ = elu + 1, normalised per row; the scores
    /// shown are then φ(q)·φ(k) (see [`crate::block::kernel`]).
    pub kernel: Kernel,
    /// The fused op where it applies (its own weights shown, read off the kernel), or the
    /// decomposed steps.
    pub path: AttentionPath,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            causal: false,
            scale: ScoreScale::SqrtDk,
            softmax_axis: SoftmaxAxis::Row,
            temperature: 1.0,
            seed: 0,
            d_k: None,
            n_heads: 1,
            positional: PositionalKind::None,
            projections: true,
            qk_norm: false,
            ssmax: false,
            softmax: SoftmaxKind::Standard,
            gate: GateKind::None,
            kernel: Kernel::Softmax,
            path: AttentionPath::Fused,
        }
    }
}

/// Why an input cannot be traced. Each message names the field and the expected versus actual
/// shape.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    // The cause is in the message, so it is not also a `source`: anyhow's `{:#}` would print
    // it twice.
    #[error("cannot read input file '{path}': {error}")]
    Read { path: String, error: std::io::Error },
    #[error("input file '{path}' is not valid JSON: {error}")]
    Json {
        path: String,
        error: serde_json::Error,
    },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Config(#[from] AttentionConfigError),
}

fn bad(message: String) -> TraceError {
    TraceError::Input(message)
}

/// The memory a trace of `input` will take: the n × n scores and weights, and the n × d and
/// d_model × d_k matrices, each a few times (host copies for the tables and the JSON).
pub fn footprint(input: &TraceInput, options: &TraceOptions) -> Footprint {
    let (n, d_model) = (input.x.rows as f64, input.x.cols as f64);
    let heads = options.n_heads.max(1) as f64;
    let (d_k, d_v) = match &input.weights {
        Some((w_q, _, w_v)) => (w_q.cols as f64 / heads, w_v.cols as f64 / heads),
        None => {
            let d_k = options.d_k.map_or(d_model / heads, |d| d as f64);
            (d_k, d_k)
        }
    };
    let elements = heads * (n * n * 4.0 + n * (2.0 * d_k + 2.0 * d_v))
        + n * d_model
        + d_model * heads * (2.0 * d_k + d_v);
    footprint::floats(
        &format!(
            "a trace of n = {n}, d_model = {d_model}, {heads} head(s) of d_k = {d_k}, d_v = {d_v}"
        ),
        elements,
    )
}

/// Tokens with seeded embeddings: each distinct word gets its own `d_model` numbers drawn from
/// N(0, 1), fixed by the word and `seed`, so the same word is the same vector wherever it sits
/// (the seed page's "each word is a vector", without a trained table).
pub fn embed_words(tokens: &[String], d_model: usize, seed: u64) -> TraceInput {
    let data = tokens
        .iter()
        .flat_map(|word| {
            // A stable hash of the word, mixed with the seed: a stable per-word stream.
            let hash = stable_hash(word.bytes());
            HostRng::new(hash ^ seed.rotate_left(32)).normal_vec(d_model, 1.0)
        })
        .collect();
    TraceInput {
        tokens: tokens.to_vec(),
        x: Matrix {
            rows: tokens.len(),
            cols: d_model,
            data,
        },
        weights: None,
    }
}

/// One head's intermediates, as plain rows of numbers (tokens on rows).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadTrace {
    /// `n × d_k`, after any rotary encoding.
    pub q: Vec<Vec<f32>>,
    pub k: Vec<Vec<f32>>,
    /// `n × d_v`.
    pub v: Vec<Vec<f32>>,
    /// Q·Kᵀ before scaling: `n × n`, rows are queries, columns keys.
    pub scores: Vec<Vec<f32>>,
    /// After scaling and masking; `None` where masked.
    pub scaled: Vec<Vec<Option<f32>>>,
    pub weights: Vec<Vec<f32>>,
    /// weights·V (times the gate, with one): `n × d_v`.
    pub output: Vec<Vec<f32>>,
    /// The gate σ(x_i·w_h + b_h) per query; `None` without a gate.
    pub gate: Option<Vec<f32>>,
}

impl HeadTrace {
    /// Σ_j weights[i][j] per query i: all 1 under the row softmax, not under the pitfalls.
    pub fn row_sums(&self) -> Vec<f32> {
        self.weights.iter().map(|r| r.iter().sum()).collect()
    }

    /// Σ_i weights[i][j] per key j: all 1 under the column softmax.
    pub fn column_sums(&self) -> Vec<f32> {
        let n = self.weights.first().map_or(0, Vec::len);
        (0..n)
            .map(|j| self.weights.iter().map(|r| r[j]).sum())
            .collect()
    }

    /// Entropy in nats of each query's weights, H = −Σ_j p_j ln p_j with p the row divided by
    /// its sum (so that a pitfall's unnormalised row still reads as where the query looks):
    /// 0 when it looks at one key, ln n when it looks at all n equally.
    pub fn entropy(&self) -> Vec<f32> {
        self.weights
            .iter()
            .map(|r| {
                let sum: f64 = r.iter().map(|&w| w as f64).sum();
                if sum > 0.0 {
                    let p: Vec<f64> = r.iter().map(|&w| w as f64 / sum).collect();
                    metrics::entropy(&p) as f32
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The entropy's ceiling for each query, ln(keys it sees): ln n without a mask, ln(i + 1)
    /// for query i under the causal mask (0 for the first query, which sees only itself).
    pub fn entropy_max(&self) -> Vec<f32> {
        self.scaled
            .iter()
            .map(|row| {
                let seen = row.iter().filter(|s| s.is_some()).count();
                if seen > 0 { (seen as f32).ln() } else { 0.0 }
            })
            .collect()
    }

    /// Per query, whether its weights miss summing to 1 by more than `tolerance`: never under
    /// the row softmax (up to rounding), often under the column and whole-matrix pitfalls, and
    /// by design under the off-by-one softmax.
    pub fn row_sum_off(&self, tolerance: f32) -> Vec<bool> {
        self.row_sums()
            .iter()
            .map(|s| (s - 1.0).abs() > tolerance)
            .collect()
    }
}

/// Largest |Σ_j w_ij − 1| still read as a row that sums to 1: f32 sums of up to 64 weights are
/// off by ~1e-6, while a pitfall's rows miss by ~1e-1.
pub const ROW_SUM_TOLERANCE: f32 = 1e-3;

/// How each weight of a head is made from its scaled score: `weight = numerator / normaliser`.
/// The softmax's is exp(s − m) over Σ exp(s − m) of the group it normalises (the row, the
/// key's column, or the whole matrix), m the group's largest score, which changes no weight;
/// the off-by-one softmax adds exp(−m) for its 1, m then at least 0 (Miller 2023). Linear
/// attention's is φ(q)·φ(k) over its row's sum. Masked entries have numerator 0.
fn numerators(scaled: &[Vec<Option<f32>>], options: &TraceOptions) -> Numerators {
    let n_q = scaled.len();
    let n_k = scaled.first().map_or(0, Vec::len);
    let value = |i: usize, j: usize| scaled[i][j].map(f64::from);
    // The group (i, j) is normalised with, as a key: rows, columns or one group.
    let group = |i: usize, j: usize| match options.softmax_axis {
        _ if options.kernel == Kernel::Linear => i,
        SoftmaxAxis::Row => i,
        SoftmaxAxis::Column => j,
        SoftmaxAxis::Whole => 0,
    };
    let groups = n_q.max(n_k).max(1);
    let linear = options.kernel == Kernel::Linear;
    let off_by_one = options.softmax == SoftmaxKind::OffByOne;
    let mut shift = vec![f64::NEG_INFINITY; groups];
    for i in 0..n_q {
        for j in 0..n_k {
            if let Some(s) = value(i, j) {
                let g = group(i, j);
                shift[g] = shift[g].max(s);
            }
        }
    }
    for m in &mut shift {
        *m = match (linear, off_by_one) {
            (true, _) => 0.0,
            (false, true) => m.max(0.0),
            (false, false) if m.is_finite() => *m,
            _ => 0.0,
        };
    }
    let mut sums = vec![0.0; groups];
    if off_by_one && !linear {
        for (sum, m) in sums.iter_mut().zip(&shift) {
            *sum = (-m).exp();
        }
    }
    let numerator: Vec<Vec<f64>> = (0..n_q)
        .map(|i| {
            (0..n_k)
                .map(|j| match value(i, j) {
                    Some(s) if linear => s,
                    Some(s) => (s - shift[group(i, j)]).exp(),
                    None => 0.0,
                })
                .collect()
        })
        .collect();
    for i in 0..n_q {
        for j in 0..n_k {
            sums[group(i, j)] += numerator[i][j];
        }
    }
    let per_entry = |of: &[f64]| -> Vec<Vec<f64>> {
        (0..n_q)
            .map(|i| (0..n_k).map(|j| of[group(i, j)]).collect())
            .collect()
    };
    Numerators {
        numerator,
        normaliser: per_entry(&sums),
        shift: per_entry(&shift),
    }
}

/// [`numerators`]' answer, entry by entry (`[query][key]`): weight = numerator / normaliser.
struct Numerators {
    numerator: Vec<Vec<f64>>,
    normaliser: Vec<Vec<f64>>,
    /// The m subtracted before the exponential (0 under linear attention).
    shift: Vec<Vec<f64>>,
}

/// Every intermediate of one trace, as plain rows of numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceResult {
    pub tokens: Vec<String>,
    pub d_k: usize,
    pub d_v: usize,
    /// The factor the scores were divided by: the scale's divisor times the temperature.
    pub scale: f64,
    pub options: TraceOptions,
    /// The input embeddings, before any positional encoding.
    pub x: Vec<Vec<f32>>,
    /// X after an additive positional encoding (sinusoidal or learned), as the block's own
    /// encoding made it: what W_Q, W_K and W_V multiply. `None` when nothing is added to X
    /// (no encoding, or rotary and ALiBi, which act on q, k and the scores).
    pub x_positional: Option<Vec<Vec<f32>>>,
    /// Whether the fused op computed the output (and the weights shown are its own).
    pub fused: bool,
    /// The projections used, drawn or given: `d_model × n_heads·d_k` (twice) and
    /// `d_model × n_heads·d_v`, head h in columns h·d … (h+1)·d; `None` without projections.
    pub w_q: Option<Vec<Vec<f32>>>,
    pub w_k: Option<Vec<Vec<f32>>>,
    pub w_v: Option<Vec<Vec<f32>>>,
    pub heads: Vec<HeadTrace>,
    /// The heads' outputs side by side: `n × n_heads·d_v` (no output projection).
    pub output: Vec<Vec<f32>>,
}

impl TraceResult {
    /// bertviz's neuron view of head `head` for `query`, carried on to the weights: for every
    /// key j, q ⊙ k_j element by element, their sum q·k_j, the scaled score s, then the
    /// softmax's numerator exp(s − m) and the normaliser it is divided by (see [`numerators`]),
    /// and the weight the block computed.
    pub fn neuron(&self, head: usize, query: usize) -> Value {
        let h = &self.heads[head];
        let q = &h.q[query];
        let Numerators {
            numerator,
            normaliser,
            shift,
        } = numerators(&h.scaled, &self.options);
        let keys: Vec<Value> =
            h.k.iter()
                .enumerate()
                .map(|(j, k)| {
                    let product: Vec<f32> = q.iter().zip(k).map(|(a, b)| a * b).collect();
                    json!({
                        "k": k,
                        "product": product,
                        "dot": h.scores[query][j],
                        "scaled": h.scaled[query][j],
                        "shift": shift[query][j],
                        "numerator": numerator[query][j],
                        "normaliser": normaliser[query][j],
                        "weight": h.weights[query][j],
                    })
                })
                .collect();
        json!({"query": query, "q": q, "keys": keys})
    }

    /// The weights' formula with this trace's numbers, one line: what the views show.
    pub fn formula(&self) -> String {
        let o = &self.options;
        let mask = if o.causal { ", causal mask" } else { "" };
        if o.kernel == Kernel::Linear {
            return format!(
                "weights_ij = φ(q_i)·φ(k_j) / Σ_j φ(q_i)·φ(k_j), φ = elu + 1{mask}; context = weights·V"
            );
        }
        let softmax = match (o.softmax, o.softmax_axis) {
            (SoftmaxKind::OffByOne, _) => "softmax₁ over each row".to_string(),
            (_, axis) => format!("softmax over {}", axis_words(axis)),
        };
        let alibi = if o.positional == PositionalKind::Alibi {
            " − m_h·|i − j|"
        } else {
            ""
        };
        format!(
            "weights = {softmax} of (Q·Kᵀ / {:.4}{alibi}{mask}); context = weights·V",
            self.scale
        )
    }
}

fn axis_words(axis: SoftmaxAxis) -> &'static str {
    match axis {
        SoftmaxAxis::Row => "each row (keys)",
        SoftmaxAxis::Column => "each column (queries)",
        SoftmaxAxis::Whole => "the whole matrix",
    }
}

/// The projections of a trace, as given or drawn: `(W_Q, W_K, W_V)`, `None` without projections.
type Projections = Option<(Matrix, Matrix, Matrix)>;

/// Checks the given projections against the options, or draws them from the seed.
fn projections(input: &TraceInput, options: &TraceOptions) -> Result<Projections, TraceError> {
    let (d_model, n_heads) = (input.x.cols, options.n_heads);
    if n_heads == 0 {
        return Err(AttentionConfigError::Zero { field: "n_heads" }.into());
    }
    if !options.projections {
        if input.weights.is_some() {
            return Err(bad(
                "w_q, w_k and w_v were given but projections are off: give no weights, or turn projections on".into(),
            ));
        }
        if d_model % n_heads != 0 {
            // Without projections each head takes d_model / n_heads columns of X itself.
            return Err(AttentionConfigError::HeadsDoNotDivide { d_model, n_heads }.into());
        }
        return Ok(None);
    }
    if let Some((w_q, w_k, w_v)) = &input.weights {
        for (name, w) in [("w_q", w_q), ("w_k", w_k), ("w_v", w_v)] {
            if w.cols % n_heads != 0 {
                return Err(bad(format!(
                    "{name} has {} columns, which {n_heads} heads cannot share: expected d_model × (n_heads·d)",
                    w.cols
                )));
            }
        }
        return Ok(input.weights.clone());
    }
    let d_k = match options.d_k {
        Some(0) => return Err(bad("--d-k must be at least 1".into())),
        Some(d_k) => d_k,
        None if d_model % n_heads != 0 => {
            return Err(AttentionConfigError::HeadsDoNotDivide { d_model, n_heads }.into());
        }
        None => d_model / n_heads,
    };
    // Only reachable past the memory check with --force; then say so, not panic.
    let count = d_model
        .checked_mul(d_k)
        .and_then(|c| c.checked_mul(n_heads))
        .ok_or_else(|| {
            bad(format!(
                "d_model × n_heads·d_k = {d_model} × {n_heads}·{d_k} weights do not fit in this machine's address space"
            ))
        })?;
    let mut rng = HostRng::new(options.seed);
    let mut draw = || Matrix {
        rows: d_model,
        cols: n_heads * d_k,
        data: rng.normal_vec(count, 1.0),
    };
    Ok(Some((draw(), draw(), draw())))
}

/// Runs the attention block on the input, with no output projection, on `device`: every head's
/// intermediates, as the block computed them.
pub fn run(
    input: &TraceInput,
    options: &TraceOptions,
    device: &Device,
) -> Result<TraceResult, TraceError> {
    let (n, d_model, n_heads) = (input.x.rows, input.x.cols, options.n_heads);
    let weights = projections(input, options)?;
    let (d_k, d_v) = match &weights {
        Some((w_q, _, w_v)) => (w_q.cols / n_heads, w_v.cols / n_heads),
        None => (d_model / n_heads, d_model / n_heads),
    };
    let mut block = AttentionConfig::new(d_model, n_heads)
        .with_d_k(Some(d_k))
        .with_d_v(Some(d_v))
        .with_projections(options.projections)
        .with_output_projection(false)
        .with_scale(options.scale)
        .with_softmax_axis(options.softmax_axis)
        .with_temperature(options.temperature)
        .with_causal(options.causal)
        .with_positional(options.positional)
        .with_qk_norm(options.qk_norm)
        .with_ssmax(options.ssmax)
        .with_softmax(options.softmax)
        .with_gate(options.gate)
        .with_kernel(options.kernel)
        .with_path(options.path)
        .with_max_len(n.max(1))
        .with_seed(options.seed)
        .init(device)?;
    if let Some((w_q, w_k, w_v)) = &weights {
        let linear = |w: &Matrix| seeded_linear(w.data.clone(), None, w.rows, w.cols, device);
        block.query = Some(linear(w_q));
        block.key = Some(linear(w_k));
        block.value = Some(linear(w_v));
    }

    let x = Tensor::<3>::from_data(
        TensorData::new(input.x.data.clone(), [1, n, d_model]),
        device,
    );
    let x_positional = matches!(
        options.positional,
        PositionalKind::Sinusoidal | PositionalKind::Learned
    )
    .then(|| metrics::rows(&to_host(block.positional.add(x.clone())), d_model));
    let trace = block.forward_traced(AttentionInput::self_attn(x));
    let fused = trace.output.fused();
    let output = metrics::rows(&to_host(trace.heads), n_heads * d_v);
    let parts = [
        head_rows(trace.output.q.clone()),
        head_rows(trace.output.k.clone()),
        head_rows(trace.output.v.clone()),
        head_rows(kernel_scores(&trace.output, false)),
        head_rows(kernel_scores(&trace.output, true)),
        // The fused op's own weights, read off the kernel, where it ran.
        head_rows(if fused {
            trace.output.kernel_weights()
        } else {
            trace.output.weights()
        }),
    ];
    let gates: Vec<Option<Vec<f32>>> = match trace.output.gate.clone() {
        // [1, n, heads] → per head, one value per query
        Some(gate) => {
            let values = to_host(gate);
            (0..n_heads)
                .map(|h| Some((0..n).map(|i| values[i * n_heads + h]).collect()))
                .collect()
        }
        None => vec![None; n_heads],
    };
    let [q, k, v, scores, scaled, weights_of] = parts.map(Vec::into_iter);
    let heads = q
        .zip(k)
        .zip(v)
        .zip(scores)
        .zip(scaled)
        .zip(weights_of)
        .enumerate()
        .map(
            |(h, (((((q, k), v), scores), scaled), weights))| HeadTrace {
                q,
                k,
                v,
                scores,
                scaled: scaled
                    .into_iter()
                    .map(|r| r.into_iter().map(|s| s.is_finite().then_some(s)).collect())
                    .collect(),
                weights,
                output: output
                    .iter()
                    .map(|r| r[h * d_v..(h + 1) * d_v].to_vec())
                    .collect(),
                gate: gates[h].clone(),
            },
        )
        .collect();
    Ok(TraceResult {
        tokens: input.tokens.clone(),
        d_k,
        d_v,
        scale: block.divisor,
        options: options.clone(),
        x: input.x.to_rows(),
        x_positional,
        fused,
        w_q: weights.as_ref().map(|w| w.0.to_rows()),
        w_k: weights.as_ref().map(|w| w.1.to_rows()),
        w_v: weights.as_ref().map(|w| w.2.to_rows()),
        heads,
        output,
    })
}

/// `[batch, heads, n_q, n_k]`: what the weights are normalised from, before (`masked` false) and
/// after the masks (masked entries −∞): q·kᵀ and its scaled logits under the softmax; φ(q)·φ(k)
/// under linear attention, which has no scale.
fn kernel_scores(output: &AttentionOutput, masked: bool) -> Tensor<4> {
    match (output.kernel(), masked) {
        (Kernel::Softmax, false) => output.raw_scores(),
        (Kernel::Softmax, true) => output.scores(),
        (Kernel::Linear, _) => {
            let products = kernel::feature_map(output.q.clone())
                .matmul(kernel::feature_map(output.k.clone()).swap_dims(2, 3)); // [batch, heads, n_q, n_k]
            match output.mask().filter(|_| masked) {
                Some(mask) => {
                    let shape = products.dims();
                    products.mask_fill(mask.expand(shape), f32::NEG_INFINITY)
                }
                None => products,
            }
        }
    }
}

/// `input` with its tokens (and their embeddings) reordered: token i of the result is token
/// `permutation[i]` of `input`. The projections stay as they are.
pub fn permuted(input: &TraceInput, permutation: &[usize]) -> Result<TraceInput, TraceError> {
    let n = input.x.rows;
    let mut seen = vec![false; n];
    if permutation.len() != n
        || permutation
            .iter()
            .any(|&p| p >= n || std::mem::replace(&mut seen[p], true))
    {
        return Err(bad(format!(
            "permutation must hold each of 0 … {} once, got {permutation:?}",
            n.saturating_sub(1)
        )));
    }
    let d = input.x.cols;
    Ok(TraceInput {
        tokens: permutation
            .iter()
            .map(|&p| input.tokens[p].clone())
            .collect(),
        x: Matrix {
            rows: n,
            cols: d,
            data: permutation
                .iter()
                .flat_map(|&p| input.x.data[p * d..(p + 1) * d].iter().copied())
                .collect(),
        },
        weights: input.weights.clone(),
    })
}

/// Permutation equivariance, measured: max over i of |f(P·x)[i] − f(x)[permutation[i]]|, on the
/// block's output. Zero (to rounding) when the block cannot tell order: no positional encoding
/// and no causal mask.
pub fn equivariance_gap(before: &TraceResult, after: &TraceResult, permutation: &[usize]) -> f32 {
    permutation
        .iter()
        .enumerate()
        .flat_map(|(i, &p)| {
            after.output[i]
                .iter()
                .zip(&before.output[p])
                .map(|(a, b)| (a - b).abs())
        })
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_head_is_the_single_head_trace_of_its_columns() {
        let device = Device::flex();
        let input = embed_words(&["a".into(), "b".into(), "a".into(), "c".into()], 6, 1);
        let options = TraceOptions {
            n_heads: 3,
            causal: true,
            ..TraceOptions::default()
        };
        let all = run(&input, &options, &device).unwrap();
        assert_eq!((all.d_k, all.heads.len()), (2, 3));
        // The same word is the same vector.
        assert_eq!(all.x[0], all.x[2]);
        assert_ne!(all.x[0], all.x[1]);
        let columns = |w: &Option<Vec<Vec<f32>>>, h: usize| Matrix {
            rows: 6,
            cols: 2,
            data: w
                .as_ref()
                .unwrap()
                .iter()
                .flat_map(|r| r[2 * h..2 * h + 2].to_vec())
                .collect(),
        };
        for (h, head) in all.heads.iter().enumerate() {
            let single = TraceInput {
                weights: Some((
                    columns(&all.w_q, h),
                    columns(&all.w_k, h),
                    columns(&all.w_v, h),
                )),
                ..input.clone()
            };
            let one = TraceOptions {
                n_heads: 1,
                ..options.clone()
            };
            let alone = run(&single, &one, &device).unwrap();
            assert_eq!(alone.heads[0], *head, "head {h}");
        }
    }

    #[test]
    fn seed_page_example_rows_sum_to_one() {
        let result = run(
            &seed_page_example(),
            &TraceOptions::default(),
            &Device::flex(),
        )
        .unwrap();
        assert_eq!(result.d_k, 4);
        assert_eq!(result.scale, 2.0); // √4
        for row in &result.heads[0].weights {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
