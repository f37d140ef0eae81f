//! The seed pages' step-by-step walkthrough: X, Q, K, V, Q·Kᵀ, the scaling, the softmax and
//! weights·V, printed as tables with the tokens on rows and columns.
//!
//! The default input is the worked example of the seed page "Self-Attention" (tokens "I", "love",
//! "cats" with 3×4 embeddings). Users can trace their own matrices from a JSON file.

use std::fmt::Write as _;
use std::path::Path;

use burn::prelude::*;
use serde_json::{Map, Value, json};

use crate::block::attention::{
    AttentionConfig, AttentionConfigError, AttentionInput, seeded_linear,
};
use crate::block::positional::PositionalKind;
use crate::block::scale::ScoreScale;
use crate::block::softmax::SoftmaxAxis;
use crate::lab::footprint::{self, Footprint};
use crate::lab::metrics::{self, head_rows, to_host};
use crate::util::rng::{HostRng, stable_hash};

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

/// The worked example of the seed page: three tokens with 4-dimensional embeddings.
pub fn seed_page_example() -> TraceInput {
    TraceInput {
        tokens: vec!["I".into(), "love".into(), "cats".into()],
        x: Matrix::from_rows(&[
            &[-1.00, 0.74, 0.37, -0.98],
            &[-0.34, -0.63, -0.87, 0.06],
            &[0.83, 0.02, 0.14, 0.47],
        ]),
        weights: None,
    }
}

pub fn load_input(path: &Path) -> Result<TraceInput, TraceError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| TraceError::Read {
        path: shown.clone(),
        error,
    })?;
    parse_input(&parse_json(&text).map_err(|error| TraceError::Json { path: shown, error })?)
}

/// Parses JSON as the TOML loader reads TOML: a leading byte-order mark is skipped, and a key
/// given twice in one object is an error (serde_json would silently keep the last).
pub fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let strict: Strict = serde_json::from_str(text)?;
    Ok(strict.0)
}

/// A JSON value whose objects have no repeated key.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key '{key}': give each field once"
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Reads `{"tokens"?, "x", "w_q"?, "w_k"?, "w_v"?}` and checks every shape.
pub fn parse_input(value: &Value) -> Result<TraceInput, TraceError> {
    const FIELDS: [&str; 5] = ["tokens", "x", "w_q", "w_k", "w_v"];
    // What `--json` writes beside the inputs: read back and ignored, so that its file repeats
    // the run (the options come from the command line, as the first time).
    const OUTPUTS: [&str; 20] = [
        "qk_norm",
        "d_model",
        "n_heads",
        "d_v",
        "positional",
        "projections",
        "heads",
        "d_k",
        "scale",
        "scale_rule",
        "temperature",
        "softmax_axis",
        "causal",
        "q",
        "k",
        "v",
        "scores",
        "scaled",
        "weights",
        "output",
    ];
    let object = value.as_object().ok_or_else(|| {
        bad(format!(
            "the input must be a JSON object with the fields {}, got {}",
            FIELDS.join(", "),
            kind_of(value)
        ))
    })?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !FIELDS.contains(&k.as_str()) && !OUTPUTS.contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unknown field '{}': expected {} (or the output fields of trace --json, which are ignored)",
            label(unknown),
            FIELDS.join(", ")
        )));
    }
    let x = matrix(object, "x")?
        .ok_or_else(|| bad("missing field 'x': expected n × d_model numbers".into()))?;
    if x.rows == 0 || x.cols == 0 {
        return Err(bad(format!(
            "x is empty: expected n × d_model with n, d_model ≥ 1, got {}",
            x.shape()
        )));
    }
    let tokens = match object.get("tokens") {
        None | Some(Value::Null) => (0..x.rows).map(|i| format!("t{i}")).collect(),
        Some(Value::Array(items)) => {
            let names = items
                .iter()
                .enumerate()
                .map(|(i, t)| match t {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(bad(format!(
                        "tokens[{i}] must be a string, got {}",
                        kind_of(other)
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if names.len() != x.rows {
                return Err(bad(format!(
                    "tokens has {} names but x has {} rows: expected one name per row",
                    names.len(),
                    x.rows
                )));
            }
            names
        }
        Some(other) => {
            return Err(bad(format!(
                "tokens must be an array of strings, got {}",
                kind_of(other)
            )));
        }
    };
    let w_q = matrix(object, "w_q")?;
    let w_k = matrix(object, "w_k")?;
    let w_v = matrix(object, "w_v")?;
    let weights = match (w_q, w_k, w_v) {
        (None, None, None) => None,
        (Some(w_q), Some(w_k), Some(w_v)) => {
            for (name, w) in [("w_q", &w_q), ("w_k", &w_k), ("w_v", &w_v)] {
                if w.rows != x.cols {
                    return Err(bad(format!(
                        "{name} has {} rows but x has d_model = {} columns: expected {} × d, got {}",
                        w.rows,
                        x.cols,
                        x.cols,
                        w.shape()
                    )));
                }
                if w.cols == 0 {
                    return Err(bad(format!(
                        "{name} has no columns: expected {} × d with d ≥ 1",
                        x.cols
                    )));
                }
            }
            if w_q.cols != w_k.cols {
                return Err(bad(format!(
                    "w_q and w_k must have the same width d_k: w_q is {}, w_k is {}",
                    w_q.shape(),
                    w_k.shape()
                )));
            }
            Some((w_q, w_k, w_v))
        }
        (q, k, v) => {
            let missing: Vec<&str> = [
                ("w_q", q.is_none()),
                ("w_k", k.is_none()),
                ("w_v", v.is_none()),
            ]
            .into_iter()
            .filter_map(|(n, m)| m.then_some(n))
            .collect();
            return Err(bad(format!(
                "w_q, w_k and w_v go together: {} missing (give all three, or none to draw them from --seed)",
                missing.join(" and ")
            )));
        }
    };
    Ok(TraceInput { tokens, x, weights })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads `object[name]` as an array of equally long arrays of numbers.
fn matrix(object: &Map<String, Value>, name: &str) -> Result<Option<Matrix>, TraceError> {
    let rows = match object.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(rows)) => rows,
        Some(other) => {
            return Err(bad(format!(
                "{name} must be an array of rows of numbers, got {}",
                kind_of(other)
            )));
        }
    };
    let mut data = Vec::new();
    let mut cols = None;
    for (i, row) in rows.iter().enumerate() {
        let row = row.as_array().ok_or_else(|| {
            bad(format!(
                "{name}[{i}] must be a row (an array of numbers), got {}",
                kind_of(row)
            ))
        })?;
        match cols {
            None => cols = Some(row.len()),
            Some(c) if c != row.len() => {
                return Err(bad(format!(
                    "{name} is ragged: row 0 has {c} numbers but row {i} has {}; expected every row to have {c}",
                    row.len()
                )));
            }
            Some(_) => {}
        }
        for (j, entry) in row.iter().enumerate() {
            let v = entry.as_f64().ok_or_else(|| {
                bad(format!(
                    "{name}[{i}][{j}] must be a number, got {} ({entry})",
                    kind_of(entry)
                ))
            })?;
            let single = v as f32;
            if !single.is_finite() {
                return Err(bad(format!(
                    "{name}[{i}][{j}] = {entry} is beyond f32's range (about ±3.4e38): the block computes in f32"
                )));
            }
            data.push(single);
        }
    }
    Ok(Some(Matrix {
        rows: rows.len(),
        cols: cols.unwrap_or(0),
        data,
    }))
}

/// Whether two paths name one file: the same canonical path when both exist, else the same
/// path as written (relative to the working directory).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => {
            let cwd = std::env::current_dir().unwrap_or_default();
            cwd.join(a) == cwd.join(b)
        }
    }
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
    /// weights·V: `n × d_v`.
    pub output: Vec<Vec<f32>>,
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

    /// bertviz's neuron view for `query`: for every key j, q ⊙ k_j element by element, their
    /// sum q·k_j, the scaled score and the weight.
    pub fn neuron(&self, query: usize) -> Value {
        let q = &self.q[query];
        let keys: Vec<Value> = self
            .k
            .iter()
            .enumerate()
            .map(|(j, k)| {
                let product: Vec<f32> = q.iter().zip(k).map(|(a, b)| a * b).collect();
                json!({
                    "k": k,
                    "product": product,
                    "dot": self.scores[query][j],
                    "scaled": self.scaled[query][j],
                    "weight": self.weights[query][j],
                })
            })
            .collect();
        json!({"query": query, "q": q, "keys": keys})
    }

    fn to_json(&self) -> Value {
        json!({
            "q": self.q,
            "k": self.k,
            "v": self.v,
            "scores": self.scores,
            "scaled": self.scaled,
            "weights": self.weights,
            "output": self.output,
            "row_sums": self.row_sums(),
            "column_sums": self.column_sums(),
            "entropy": self.entropy(),
        })
    }
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
    /// The projections used, drawn or given: `d_model × n_heads·d_k` (twice) and
    /// `d_model × n_heads·d_v`, head h in columns h·d … (h+1)·d; `None` without projections.
    pub w_q: Option<Vec<Vec<f32>>>,
    pub w_k: Option<Vec<Vec<f32>>>,
    pub w_v: Option<Vec<Vec<f32>>>,
    pub heads: Vec<HeadTrace>,
    /// The heads' outputs side by side: `n × n_heads·d_v` (no output projection).
    pub output: Vec<Vec<f32>>,
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
    let trace = block.forward_traced(AttentionInput::self_attn(x));
    let output = metrics::rows(&to_host(trace.heads), n_heads * d_v);
    let parts = [
        head_rows(trace.output.q.clone()),
        head_rows(trace.output.k.clone()),
        head_rows(trace.v),
        head_rows(trace.output.raw_scores()),
        head_rows(trace.output.scores()),
        head_rows(trace.output.weights()),
    ];
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
        w_q: weights.as_ref().map(|w| w.0.to_rows()),
        w_k: weights.as_ref().map(|w| w.1.to_rows()),
        w_v: weights.as_ref().map(|w| w.2.to_rows()),
        heads,
        output,
    })
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

impl TraceResult {
    /// The inputs (`tokens`, `x`, `w_q`, `w_k`, `w_v`: a run can be repeated with `--input`),
    /// the options that shaped the run, `d_k`, `d_v` and `scale`, and under `heads` each head's
    /// q, k, v, scores, scaled, weights, output, row_sums, column_sums and entropy; `output` is
    /// the heads' outputs side by side.
    pub fn to_json(&self) -> Value {
        let o = &self.options;
        json!({
            "tokens": self.tokens,
            "d_model": self.x.first().map_or(0, Vec::len),
            "n_heads": o.n_heads,
            "d_k": self.d_k,
            "d_v": self.d_v,
            "scale": self.scale,
            "scale_rule": o.scale.to_string(),
            "temperature": o.temperature,
            "softmax_axis": o.softmax_axis.name(),
            "causal": o.causal,
            "positional": o.positional.name(),
            "projections": o.projections,
            "qk_norm": o.qk_norm,
            "x": self.x,
            "w_q": self.w_q,
            "w_k": self.w_k,
            "w_v": self.w_v,
            "heads": self.heads.iter().map(HeadTrace::to_json).collect::<Vec<_>>(),
            "output": self.output,
        })
    }

    /// The walkthrough as labelled tables, head after head.
    pub fn render(&self) -> String {
        let o = &self.options;
        let cols =
            |n: usize, p: &str| -> Vec<String> { (0..n).map(|i| format!("{p}{i}")).collect() };
        let mut out = String::new();
        let d_model = self.x.first().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "Self-attention, step by step: n = {} tokens, d_model = {d_model}, d_k = {}, d_v = {}, {}",
            self.tokens.len(),
            self.d_k,
            self.d_v,
            if o.n_heads == 1 {
                "one head".to_string()
            } else {
                format!("{} heads", o.n_heads)
            }
        );
        let _ = writeln!(
            out,
            "scale = {} ({}{}), softmax over {}, {}, positional encoding: {}{}\n",
            fmt_num(self.scale as f32),
            o.scale,
            if o.temperature == 1.0 {
                String::new()
            } else {
                format!(" × temperature {}", o.temperature)
            },
            match o.softmax_axis {
                SoftmaxAxis::Row => "each row (keys)",
                SoftmaxAxis::Column => "each column (queries) — a pitfall",
                SoftmaxAxis::Whole => "the whole matrix — a pitfall",
            },
            if o.causal { "causal mask" } else { "no mask" },
            o.positional,
            match (o.projections, o.qk_norm) {
                (true, false) => "",
                (false, false) => ", no projections (Q = K = V = X)",
                (true, true) => ", QK-norm (Q and K shown after it)",
                (false, true) =>
                    ", no projections (Q = K = V = X), QK-norm (Q and K shown after it)",
            }
        );
        let some = |rows: &[Vec<f32>]| -> Vec<Vec<Option<f32>>> {
            rows.iter()
                .map(|r| r.iter().map(|&v| Some(v)).collect())
                .collect()
        };
        table(
            &mut out,
            "1. X (token embeddings)",
            &self.tokens,
            &cols(d_model, "x"),
            &some(&self.x),
        );
        for (h, head) in self.heads.iter().enumerate() {
            let tag = if o.n_heads == 1 {
                String::new()
            } else {
                format!("head {h}: ")
            };
            let (wq, wk, wv) = if o.projections {
                ("X·W_Q", "X·W_K", "X·W_V")
            } else {
                ("X", "X", "X")
            };
            for (title, prefix, rows) in [
                (format!("2. {tag}Q = {wq}"), "q", &head.q),
                (format!("3. {tag}K = {wk}"), "k", &head.k),
                (format!("4. {tag}V = {wv}"), "v", &head.v),
            ] {
                let width = rows.first().map_or(0, Vec::len);
                table(
                    &mut out,
                    &title,
                    &self.tokens,
                    &cols(width, prefix),
                    &some(rows),
                );
            }
            table(
                &mut out,
                &format!("5. {tag}Q·Kᵀ (scores; rows are queries, columns keys)"),
                &self.tokens,
                &self.tokens,
                &some(&head.scores),
            );
            let step6 = format!(
                "6. {tag}÷ {} ({}{}){}{}",
                fmt_num(self.scale as f32),
                o.scale,
                if o.temperature == 1.0 { "" } else { " × τ" },
                if o.positional == PositionalKind::Alibi {
                    ", + ALiBi's −m_h·|i − j|"
                } else {
                    ""
                },
                if o.causal {
                    ", future keys masked (−∞)"
                } else {
                    ""
                }
            );
            table(&mut out, &step6, &self.tokens, &self.tokens, &head.scaled);
            let step7 = format!("7. {tag}softmax over {} (weights)", o.softmax_axis.name());
            table(
                &mut out,
                &step7,
                &self.tokens,
                &self.tokens,
                &some(&head.weights),
            );
            let (which, sums) = match o.softmax_axis {
                SoftmaxAxis::Column => ("column", head.column_sums()),
                _ => ("row", head.row_sums()),
            };
            let sums: Vec<String> = sums.into_iter().map(fmt_num).collect();
            let _ = writeln!(out, "   {which} sums: {}", sums.join(", "));
            let entropy: Vec<String> = head.entropy().into_iter().map(fmt_num).collect();
            let _ = writeln!(out, "   row entropy (nats): {}\n", entropy.join(", "));
            table(
                &mut out,
                &format!("8. {tag}weights·V (output)"),
                &self.tokens,
                &cols(self.d_v, "o"),
                &some(&head.output),
            );
        }
        out
    }
}

/// Longest token name shown in a table; longer names are cut with `…`.
pub const MAX_LABEL: usize = 24;

/// `name` cut to [`MAX_LABEL`] characters for display.
pub fn label(name: &str) -> String {
    if name.chars().count() <= MAX_LABEL {
        name.to_string()
    } else {
        let cut: String = name.chars().take(MAX_LABEL - 1).collect();
        format!("{cut}…")
    }
}

fn fmt_num(v: f32) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.4}")
    }
}

fn table(
    out: &mut String,
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<Option<f32>>],
) {
    let cells: Vec<Vec<String>> = values
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| v.map_or("−∞".to_string(), fmt_num))
                .collect()
        })
        .collect();
    let rows: Vec<String> = rows.iter().map(|r| label(r)).collect();
    let cols: Vec<String> = cols.iter().map(|c| label(c)).collect();
    let label_w = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0);
    let cell_w = cells
        .iter()
        .flatten()
        .chain(&cols)
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(1)
        .max(7);
    let _ = writeln!(out, "{title}");
    let _ = write!(out, "  {:label_w$}", "");
    for c in &cols {
        let _ = write!(out, " {c:>cell_w$}");
    }
    let _ = writeln!(out);
    for (name, row) in rows.iter().zip(&cells) {
        let _ = write!(out, "  {name:<label_w$}");
        for c in row {
            let _ = write!(out, " {c:>cell_w$}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_ragged_and_mismatched_input() {
        let err = parse_input(&json!({"x": [[1, 2], [3]]}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x is ragged") && err.contains("row 1 has 1"),
            "{err}"
        );
        let err = parse_input(&json!({"x": [[1, 2]], "w_q": [[1]], "w_k": [[1]], "w_v": [[1]]}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("w_q has 1 rows but x has d_model = 2"),
            "{err}"
        );
        let err = parse_input(&json!({"x": [[1, "a"]]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x[0][1] must be a number"), "{err}");
    }

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
