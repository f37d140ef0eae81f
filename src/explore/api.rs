//! The explorer's JSON API as plain functions from request bytes to answers, so that the server
//! is only transport and the tests can call the same code.
//!
//! A request is `trace --input`'s object (`tokens`, `x`, `w_q`, `w_k`, `w_v`) plus `options`.
//! Without `x`, the tokens get seeded word embeddings of width `options.d_model`. The answer is
//! `trace --json`'s object, computed by [`trace::run`]: one code path for both.

use serde_json::{Map, Value, json};

use crate::block::attention::AttentionPath;
use crate::block::gate::GateKind;
use crate::block::kernel::Kernel;
use crate::block::positional::PositionalKind;
use crate::block::scale::ScoreScale;
use crate::block::softmax::{SoftmaxAxis, SoftmaxKind};
use crate::explore::trained::{Trained, TrainedModel};
use crate::lab::trace::{self, TraceInput, TraceOptions, TraceResult};
use crate::util::rng::HostRng;

/// Most tokens one request may hold: the page shows every number of an n × n matrix.
pub const MAX_TOKENS: usize = 64;
/// Largest request body.
pub const MAX_BODY: usize = 1 << 20;
/// Widest embedding and widest projection (n_heads·d_k): every weight goes back in the answer.
pub const MAX_WIDTH: usize = 256;
/// Width of the seeded word embeddings when a request gives neither `x` nor `options.d_model`.
pub const DEFAULT_D_MODEL: usize = 8;

/// Largest output change still read as "moved with its token": f32 rounding of sums of a few
/// dozen terms of size ~1 stays below 1e-6, and a positional encoding moves outputs by ~1e-1.
pub const EQUIVARIANCE_TOLERANCE: f64 = 1e-5;

/// A request the API refuses: HTTP 400 with `{"error": message}`. The message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest(message.into())
}

impl From<trace::TraceError> for BadRequest {
    fn from(e: trace::TraceError) -> Self {
        bad(e.to_string())
    }
}

/// One parsed request: what to trace and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub input: TraceInput,
    pub options: TraceOptions,
    /// The query whose neuron view is wanted.
    pub query: Option<usize>,
    /// Queries whose weights are summed (a shift-click selection), in the order given.
    pub queries: Option<Vec<usize>>,
    /// For `/api/shuffle`: token i of the shuffled input is token `permutation[i]`.
    pub permutation: Option<Vec<usize>>,
    /// For `/api/shuffle` without a permutation: the seed its permutation is drawn from.
    pub shuffle_seed: Option<u64>,
    /// Knob-named fields found at the top level (`trace --json` writes them there): each must
    /// agree with what the block ran with, or the request is refused (see [`check_top_level`]).
    pub top_level: Map<String, Value>,
}

/// The fields of `trace --json`'s answer that name a knob. At the top level of a request they
/// are what a previous answer said; the knobs themselves are set under `options`.
const KNOB_FIELDS: [&str; 17] = [
    "d_model",
    "n_heads",
    "d_k",
    "d_v",
    "scale",
    "scale_rule",
    "temperature",
    "softmax_axis",
    "causal",
    "positional",
    "projections",
    "qk_norm",
    "ssmax",
    "softmax",
    "gate",
    "kernel",
    "path",
];

const OPTIONS: [&str; 20] = [
    "path",
    "queries",
    "shuffle_seed",
    "kernel",
    "causal",
    "scale",
    "softmax_axis",
    "softmax",
    "gate",
    "temperature",
    "positional",
    "n_heads",
    "d_model",
    "d_k",
    "projections",
    "qk_norm",
    "ssmax",
    "seed",
    "query",
    "permutation",
];

/// Parses a request body; `seed` is the server's default seed. Checked in the order a reader
/// would: the body, the option names, the input, then each option.
pub fn parse(body: &[u8], seed: u64) -> Result<Request, BadRequest> {
    let (object, options) = body_object(body)?;
    let top_level: Map<String, Value> = object
        .iter()
        .filter(|(k, _)| KNOB_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let seed = seed_option(&options, seed)?;
    let d_model = count(&options, "d_model", 1, MAX_WIDTH)?;
    let input = if object.get("x").is_none_or(Value::is_null) {
        words_input(object, d_model, seed)?
    } else {
        matrix_input(object, d_model)?
    };
    let options_out = trace_options(&options, seed)?;
    let n = input.x.rows;
    let query = count(&options, "query", 0, n.saturating_sub(1))?;
    let queries = queries(&options, n)?;
    let permutation = permutation(&options, n)?;
    let shuffle_seed = match options.get("shuffle_seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            bad(format!(
                "options.shuffle_seed: expected a whole number ≥ 0, got {v}"
            ))
        })?),
    };
    Ok(Request {
        input,
        options: options_out,
        query,
        queries,
        permutation,
        shuffle_seed,
        top_level,
    })
}

/// A JSON object: a request body, or its `options`.
type Object = Map<String, Value>;

/// The body as a JSON object, and its `options` object (empty when absent), every option name
/// known.
fn body_object(body: &[u8]) -> Result<(Object, Object), BadRequest> {
    let mut object = json_object(
        body,
        "{\"tokens\", \"x\"?, \"w_q\"?, \"w_k\"?, \"w_v\"?, \"options\"?}",
    )?;
    // What only the explorer's answers carry: read back and ignored, as trace --input ignores
    // trace --json's outputs.
    for field in ["neuron", "neurons", "selection", "paths"] {
        object.remove(field);
    }
    let options = match object.remove("options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad("options: expected an object")),
    };
    // An option's name at the top level that no answer carries there: say where it goes.
    if let Some(misplaced) = object
        .keys()
        .find(|k| OPTIONS.contains(&k.as_str()) && !KNOB_FIELDS.contains(&k.as_str()))
    {
        return Err(misplaced_knob(misplaced, &object[misplaced.as_str()]));
    }
    if let Some(unknown) = options.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        return Err(bad(format!(
            "options.{}: unknown option; expected one of {}",
            trace::label(unknown),
            OPTIONS.join(", ")
        )));
    }
    Ok((object, options))
}

/// Words alone: each embedded from the seed ([`trace::embed_words`]) at `d_model`.
fn words_input(
    mut object: Map<String, Value>,
    d_model: Option<usize>,
    seed: u64,
) -> Result<TraceInput, BadRequest> {
    let tokens = match object.get("tokens") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.as_str()
                    .map(String::from)
                    .ok_or_else(|| bad(format!("tokens[{i}]: expected a string (a word), got {t}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(bad(format!(
                "tokens: expected an array of words, got {other}"
            )));
        }
        None => {
            return Err(bad(
                "tokens: missing; give the words (and x, or options.d_model for seeded embeddings)",
            ));
        }
    };
    if tokens.is_empty() {
        return Err(bad("tokens: empty; give at least one word"));
    }
    if tokens.len() > MAX_TOKENS {
        return Err(too_many_tokens(tokens.len()));
    }
    let embedded = trace::embed_words(&tokens, d_model.unwrap_or(DEFAULT_D_MODEL), seed);
    object.insert("x".into(), json!(embedded.x.to_rows()));
    Ok(trace::parse_input(&Value::Object(object))?)
}

/// The user's own `x` (and projections), read as `trace --input` reads them, within the
/// explorer's limits and agreeing with `options.d_model` when given.
fn matrix_input(
    object: Map<String, Value>,
    d_model: Option<usize>,
) -> Result<TraceInput, BadRequest> {
    if let Some(Value::Array(rows)) = object.get("x")
        && rows.len() > MAX_TOKENS
    {
        return Err(too_many_tokens(rows.len()));
    }
    let input = trace::parse_input(&Value::Object(object))?;
    if let Some(d) = d_model
        && d != input.x.cols
    {
        return Err(bad(format!(
            "options.d_model: {d} disagrees with x, whose rows have d_model = {}",
            input.x.cols
        )));
    }
    if input.x.cols > MAX_WIDTH {
        return Err(bad(format!(
            "x: rows of {} numbers are wider than the explorer's d_model ≤ {MAX_WIDTH}",
            input.x.cols
        )));
    }
    Ok(input)
}

fn too_many_tokens(n: usize) -> BadRequest {
    bad(format!(
        "tokens: {n} tokens is more than the explorer's {MAX_TOKENS}"
    ))
}

/// The trace's options: the block's switches, each read by its own reader.
fn trace_options(options: &Map<String, Value>, seed: u64) -> Result<TraceOptions, BadRequest> {
    let temperature = temperature(options)?;
    let scale = scale(options)?;
    let n_heads = count(options, "n_heads", 1, MAX_WIDTH)?.unwrap_or(1);
    let d_k = count(options, "d_k", 1, MAX_WIDTH)?;
    if let Some(d_k) = d_k
        && d_k * n_heads > MAX_WIDTH
    {
        return Err(bad(format!(
            "options.d_k: n_heads·d_k = {n_heads}·{d_k} is wider than the explorer's {MAX_WIDTH}"
        )));
    }
    Ok(TraceOptions {
        causal: flag(options, "causal", false)?,
        scale,
        softmax_axis: named::<SoftmaxAxis>(options, "softmax_axis")?.unwrap_or_default(),
        temperature,
        seed,
        d_k,
        n_heads,
        positional: named::<PositionalKind>(options, "positional")?.unwrap_or_default(),
        projections: flag(options, "projections", true)?,
        qk_norm: flag(options, "qk_norm", false)?,
        ssmax: flag(options, "ssmax", false)?,
        softmax: named::<SoftmaxKind>(options, "softmax")?.unwrap_or_default(),
        gate: named::<GateKind>(options, "gate")?.unwrap_or_default(),
        kernel: named::<Kernel>(options, "kernel")?.unwrap_or_default(),
        path: path(options)?,
    })
}

/// `options.path`: `"fused"` (the default) or `"decomposed"`.
fn path(options: &Map<String, Value>) -> Result<AttentionPath, BadRequest> {
    match options.get("path") {
        None | Some(Value::Null) => Ok(AttentionPath::Fused),
        Some(Value::String(s)) if s == "fused" => Ok(AttentionPath::Fused),
        Some(Value::String(s)) if s == "decomposed" => Ok(AttentionPath::Decomposed),
        Some(v) => Err(bad(format!(
            "options.path: expected \"fused\" or \"decomposed\", got {v}"
        ))),
    }
}

/// `options.queries`: distinct token indices below `n`, at least one, if present.
fn queries(options: &Map<String, Value>, n: usize) -> Result<Option<Vec<usize>>, BadRequest> {
    let Some(list) = options.get("queries").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let wrong = || {
        bad(format!(
            "options.queries: expected distinct token indices 0 … {}, at least one, got {list}",
            n.saturating_sub(1)
        ))
    };
    let items = list
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(wrong)?;
    let mut chosen = Vec::with_capacity(items.len());
    for item in items {
        match item.as_u64() {
            Some(i) if i < n as u64 && !chosen.contains(&(i as usize)) => chosen.push(i as usize),
            _ => return Err(wrong()),
        }
    }
    Ok(Some(chosen))
}

fn misplaced_knob(name: &str, value: &Value) -> BadRequest {
    bad(format!(
        "{}: a knob, set under options: {{\"options\": {{\"{0}\": {}}}}}; the top level holds the input (tokens, x, w_q, w_k, w_v) and what an answer said",
        trace::label(name),
        trace::label(&value.to_string())
    ))
}

/// Refuses a knob-named field at the top level that disagrees with what the block ran with
/// (`answer`, `trace --json`'s object): the user meant to set it, and it was not applied there.
/// A field that agrees (an answer sent back as a request) is accepted.
pub fn check_top_level(request: &Request, answer: &Value) -> Result<(), BadRequest> {
    // Numbers compare by value: `2` and `2.0` are the same temperature.
    let same = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    };
    for (name, given) in &request.top_level {
        if !answer.get(name).is_some_and(|used| same(used, given)) {
            let used = answer.get(name).cloned().unwrap_or(Value::Null);
            let given = trace::label(&given.to_string());
            let fix = if OPTIONS.contains(&name.as_str()) {
                format!("knobs are set under options: {{\"options\": {{\"{name}\": {given}}}}}")
            } else {
                format!(
                    "{name} is not a knob but what the options give (set scale or d_k under options)"
                )
            };
            return Err(bad(format!(
                "{name}: {given} at the top level is not applied there (the block ran with {used}); {fix}"
            )));
        }
    }
    Ok(())
}

/// `options.seed`, or the server's `default`.
fn seed_option(options: &Map<String, Value>, default: u64) -> Result<u64, BadRequest> {
    match options.get("seed") {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().ok_or_else(|| {
            bad(format!(
                "options.seed: expected a whole number ≥ 0, got {v}"
            ))
        }),
    }
}

/// `options.temperature`: a positive number, 1 when absent.
fn temperature(options: &Map<String, Value>) -> Result<f64, BadRequest> {
    match options.get("temperature") {
        None | Some(Value::Null) => Ok(1.0),
        Some(v) => match v.as_f64() {
            Some(t) if t.is_finite() && t > 0.0 => Ok(t),
            _ => Err(bad(format!(
                "options.temperature: must be a positive number, got {v}"
            ))),
        },
    }
}

/// `options.scale`: a rule's name or a fixed divisor, 1/√d_k when absent.
fn scale(options: &Map<String, Value>) -> Result<ScoreScale, BadRequest> {
    match options.get("scale") {
        None | Some(Value::Null) => Ok(ScoreScale::SqrtDk),
        Some(Value::Number(n)) => n
            .to_string()
            .parse()
            .map_err(|e| bad(format!("options.scale: {e}"))),
        Some(Value::String(s)) => s.parse().map_err(|e| bad(format!("options.scale: {e}"))),
        Some(v) => Err(bad(format!(
            "options.scale: expected a name or a number, got {v}"
        ))),
    }
}

/// `options.permutation`: token indices below `n`, if present.
fn permutation(options: &Map<String, Value>, n: usize) -> Result<Option<Vec<usize>>, BadRequest> {
    match options.get("permutation") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| {
                p.as_u64()
                    .filter(|&p| p < n as u64)
                    .map(|p| p as usize)
                    .ok_or_else(|| {
                        bad(format!(
                            "options.permutation: entries must be token indices 0 … {}, got {p}",
                            n - 1
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(v) => Err(bad(format!(
            "options.permutation: expected an array of indices, got {v}"
        ))),
    }
}

/// A request body that must be a JSON object (`expected` says which fields), at most
/// [`MAX_BODY`] bytes.
fn json_object(body: &[u8], expected: &str) -> Result<Object, BadRequest> {
    if body.len() > MAX_BODY {
        return Err(bad(format!(
            "body: {} bytes is over the {MAX_BODY}-byte (1 MiB) limit",
            body.len()
        )));
    }
    match body_json(body)? {
        Value::Object(object) => Ok(object),
        _ => Err(bad(format!("body: expected a JSON object {expected}"))),
    }
}

/// The model `name` of the run, or a 400 naming the run folder.
fn find_model<'a>(trained: &'a Trained, name: &Value) -> Result<&'a TrainedModel, BadRequest> {
    let name = name
        .as_str()
        .ok_or_else(|| bad("model: expected the name of one of the run's models"))?;
    trained.find(name).ok_or_else(|| {
        bad(format!(
            "model: no model named '{}' in {}",
            trace::label(name),
            trained.run.display()
        ))
    })
}

/// A request body as JSON, read as `trace --input` reads its file (duplicate keys refused).
fn body_json(body: &[u8]) -> Result<Value, BadRequest> {
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("body: not UTF-8 ({e})")))?;
    trace::parse_json(text).map_err(|e| bad(format!("body: not valid JSON ({e})")))
}

/// `options[name]` as a whole number in `min ..= max`, if present.
fn count(
    options: &Map<String, Value>,
    name: &str,
    min: usize,
    max: usize,
) -> Result<Option<usize>, BadRequest> {
    match options.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min as u64..=max as u64).contains(&n) => Ok(Some(n as usize)),
            _ => Err(bad(format!(
                "options.{name}: expected a whole number from {min} to {max}, got {v}"
            ))),
        },
    }
}

fn flag(options: &Map<String, Value>, name: &str, default: bool) -> Result<bool, BadRequest> {
    match options.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(format!(
            "options.{name}: expected true or false, got {v}"
        ))),
    }
}

fn named<T: std::str::FromStr>(
    options: &Map<String, Value>,
    name: &str,
) -> Result<Option<T>, BadRequest>
where
    T::Err: std::fmt::Display,
{
    match options.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|e| bad(format!("options.{name}: {e}"))),
        Some(v) => Err(bad(format!("options.{name}: expected a name, got {v}"))),
    }
}

/// `POST /api/attention`: `trace --json`'s answer for the request, plus
/// - `neuron`: the neuron view of `options.query` in every head, when given;
/// - `selection`: for `options.queries`, each head's weights summed over those queries;
/// - `paths`: the same request on the other path (fused ↔ decomposed), and the largest
///   differences between the two paths' weights and contexts.
pub fn attention(request: &Request, device: &burn::prelude::Device) -> Result<Value, BadRequest> {
    Ok(traced_attention(request, device)?.0)
}

/// [`attention`]'s answer and the trace it was read from.
fn traced_attention(
    request: &Request,
    device: &burn::prelude::Device,
) -> Result<(Value, TraceResult), BadRequest> {
    let result = trace::run(&request.input, &request.options, device)?;
    let mut value = answer(&result, request.query);
    check_top_level(request, &value)?;
    if let Some(queries) = &request.queries {
        value["selection"] = json!({
            "queries": queries,
            "heads": result.heads.iter().map(|h| {
                (0..result.tokens.len())
                    .map(|j| queries.iter().map(|&i| h.weights[i][j]).sum::<f32>())
                    .collect::<Vec<f32>>()
            }).collect::<Vec<_>>(),
        });
    }
    let other = TraceOptions {
        path: match request.options.path {
            AttentionPath::Fused => AttentionPath::Decomposed,
            AttentionPath::Decomposed => AttentionPath::Fused,
        },
        ..request.options.clone()
    };
    let twin = trace::run(&request.input, &other, device)?;
    let (fused, decomposed) = match request.options.path {
        AttentionPath::Fused => (&result, &twin),
        AttentionPath::Decomposed => (&twin, &result),
    };
    let gap = |of: fn(&trace::HeadTrace) -> &Vec<Vec<f32>>| {
        fused
            .heads
            .iter()
            .zip(&decomposed.heads)
            .flat_map(|(a, b)| of(a).iter().flatten().zip(of(b).iter().flatten()))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    value["paths"] = json!({
        "fused_ran": fused.fused,
        "weights_max_diff": gap(|h| &h.weights),
        "context_max_diff": gap(|h| &h.output),
    });
    Ok((value, result))
}

fn answer(result: &TraceResult, query: Option<usize>) -> Value {
    let mut value = result.to_json();
    if let Some(query) = query {
        value["neuron"] = json!(
            (0..result.heads.len())
                .map(|h| result.neuron(h, query))
                .collect::<Vec<_>>()
        );
    }
    value
}

/// `POST /api/shuffle`: the request as given and with its tokens permuted, and how far the
/// outputs moved from following their tokens: `max_delta` = max |f(P·x)[i] − f(x)[P(i)]|.
///
/// The permutation is `options.permutation`, or drawn from `options.shuffle_seed` (default: the
/// request's seed), which the answer returns so that a shuffle can be repeated; a drawn one
/// moves some token whenever n > 1. `aligned` is the shuffled run's output put back in the
/// original order (row i is f(P·x) at the position token i moved to), beside `row_delta`, each
/// row's max |Δ| from f(x)[i].
pub fn shuffle(request: &Request, device: &burn::prelude::Device) -> Result<Value, BadRequest> {
    let n = request.input.x.rows;
    let shuffle_seed = match &request.permutation {
        Some(_) => None,
        None => Some(request.shuffle_seed.unwrap_or(request.options.seed)),
    };
    let permutation = match (&request.permutation, shuffle_seed) {
        (Some(p), _) => p.clone(),
        (None, seed) => {
            let mut p = HostRng::new(seed.unwrap_or_default() ^ 0x5eed).permutation(n);
            if n > 1 && p.iter().enumerate().all(|(i, &v)| i == v) {
                p.rotate_left(1);
            }
            p
        }
    };
    let shuffled =
        trace::permuted(&request.input, &permutation).map_err(|e| bad(format!("options.{e}")))?;
    let before = trace::run(&request.input, &request.options, device)?;
    check_top_level(request, &before.to_json())?;
    let after = trace::run(&shuffled, &request.options, device)?;
    let max_delta = trace::equivariance_gap(&before, &after, &permutation);
    let mut aligned = vec![Vec::new(); n];
    for (i, &p) in permutation.iter().enumerate() {
        aligned[p] = after.output[i].clone();
    }
    let row_delta: Vec<f32> = aligned
        .iter()
        .zip(&before.output)
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        })
        .collect();
    Ok(json!({
        "permutation": permutation,
        "shuffle_seed": shuffle_seed,
        "aligned": aligned,
        "row_delta": row_delta,
        "before": answer(&before, None),
        "after": answer(&after, request.query),
        "max_delta": max_delta,
        "tolerance": EQUIVARIANCE_TOLERANCE,
        "equivariant": f64::from(max_delta) <= EQUIVARIANCE_TOLERANCE,
    }))
}

/// Most controls a snapshot carries back to the page.
const MAX_CONTROLS: usize = 64;

/// `POST /api/export` with `{"request": an /api/attention body, "controls": {id: value},
/// "shuffle_seed"?: n, "model"?: name, "example_seed"?: n}`: everything a standalone page needs
/// to show those inputs and knobs without a server, computed here by the block:
/// - `attention`: the answer, with `neurons[query]` (every head's neuron view) for every query,
///   so that clicking a token needs no server;
/// - `shuffle`: the shuffle the page would draw next, from `shuffle_seed`;
/// - `example`: the trained model's example, when `model` names one;
/// - `request` and `controls` as the page sent them, so that it shows the same controls;
/// - `info` (the server's, its trained models narrowed to the one shown), and `provenance`.
pub fn snapshot(
    body: &[u8],
    seed: u64,
    mut info: Value,
    trained: Option<&Trained>,
    device: &burn::prelude::Device,
) -> Result<Value, BadRequest> {
    let object = json_object(
        body,
        "{\"request\", \"controls\", \"shuffle_seed\"?, \"model\"?, \"example_seed\"?}",
    )?;
    const FIELDS: [&str; 5] = [
        "request",
        "controls",
        "shuffle_seed",
        "model",
        "example_seed",
    ];
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "{}: unknown field; expected {}",
            trace::label(unknown),
            FIELDS.join(", ")
        )));
    }
    let request_value = object
        .get("request")
        .filter(|r| r.is_object())
        .ok_or_else(|| bad("request: expected the /api/attention request of the view"))?;
    let mut request = parse(request_value.to_string().as_bytes(), seed)?;
    let controls = match object.get("controls") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(c))
            if c.len() <= MAX_CONTROLS
                && c.values()
                    .all(|v| v.is_string() || v.is_boolean() || v.is_number()) =>
        {
            Value::Object(c.clone())
        }
        Some(v) => {
            return Err(bad(format!(
                "controls: expected up to {MAX_CONTROLS} control ids with a string, number or true/false each, got {}",
                trace::label(&v.to_string())
            )));
        }
    };
    let whole_number = |name: &str| -> Result<Option<u64>, BadRequest> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(format!("{name}: expected a whole number ≥ 0, got {v}"))),
        }
    };
    request.shuffle_seed = whole_number("shuffle_seed")?;
    let example_seed = whole_number("example_seed")?.unwrap_or(0);
    request.queries = None;
    // The view's answer (top-level knobs checked there), and every query's neuron view.
    let (mut shown, result) = traced_attention(&request, device)?;
    shown["neurons"] = json!(
        (0..result.tokens.len())
            .map(|q| (0..result.heads.len())
                .map(|h| result.neuron(h, q))
                .collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    let shuffled = shuffle(&request, device)?;
    let example = match object.get("model") {
        None | Some(Value::Null) => Value::Null,
        Some(name) => {
            let trained = trained.ok_or_else(|| {
                bad("model: no trained models here; start explore with --run results/<experiment>/<run-id>")
            })?;
            let model = find_model(trained, name)?;
            if let Some(models) = info["trained"]["models"].as_array_mut() {
                models.retain(|m| m["name"] == *name);
            }
            model.example(example_seed, device)
        }
    };
    if example.is_null() {
        info["trained"] = Value::Null;
    }
    let provenance = crate::util::provenance::Provenance::here();
    Ok(json!({
        "info": info,
        "request": request_value,
        "controls": controls,
        "attention": shown,
        "shuffle": shuffled,
        "example": example,
        "example_seed": example_seed,
        "provenance": {
            "commit": provenance.commit,
            "cpu": provenance.cpu,
            "crate": concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")),
        },
    }))
}

/// `POST /api/model` with `{"model": name, "seed"?: n}`: one example of that model's task and
/// its attention (see [`TrainedModel::example`]).
pub fn model(
    body: &[u8],
    trained: &Trained,
    device: &burn::prelude::Device,
) -> Result<Value, BadRequest> {
    let object = json_object(body, "{\"model\": name, \"seed\"?: n}")?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !["model", "seed"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "{}: unknown field; expected model and seed",
            trace::label(unknown)
        )));
    }
    let seed = match object.get("seed") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad(format!("seed: expected a whole number ≥ 0, got {v}")))?,
    };
    let model = find_model(trained, object.get("model").unwrap_or(&Value::Null))?;
    Ok(model.example(seed, device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::Device;

    fn refused(body: &str) -> String {
        parse(body.as_bytes(), 0).unwrap_err().0
    }

    #[test]
    fn bad_requests_name_their_field() {
        for (body, field) in [
            (r#"{"x": [[1, 2], [3]]}"#, "x is ragged"),
            (
                r#"{"tokens": ["a"], "options": {"temperature": 0}}"#,
                "options.temperature",
            ),
            (
                r#"{"tokens": ["a"], "options": {"colour": 1}}"#,
                "options.colour",
            ),
            (
                r#"{"tokens": ["a"], "options": {"softmax_axis": "diagonal"}}"#,
                "options.softmax_axis",
            ),
            (r#"{"tokens": ["a", 3]}"#, "tokens[1]"),
            (r#"[1]"#, "body"),
        ] {
            let error = refused(body);
            assert!(error.contains(field), "{body}: {error}");
        }
        let long = format!(r#"{{"tokens": {:?}}}"#, vec!["w"; 65]);
        assert!(refused(&long).starts_with("tokens: 65 tokens"));
    }

    #[test]
    fn shuffling_without_position_moves_outputs_with_their_tokens() {
        let device = Device::flex();
        let body = |positional: &str| {
            format!(
                r#"{{"tokens": ["the", "cat", "sat", "on", "the", "mat"], "options": {{"positional": "{positional}", "d_model": 8, "n_heads": 2}}}}"#
            )
        };
        let gap = |positional: &str| {
            let request = parse(body(positional).as_bytes(), 3).unwrap();
            shuffle(&request, &device).unwrap()["max_delta"]
                .as_f64()
                .unwrap()
        };
        assert!(gap("none") < 1e-5, "{}", gap("none"));
        assert!(gap("sinusoidal") > 1e-3, "{}", gap("sinusoidal"));
    }

    fn answered(body: &str) -> Value {
        attention(&parse(body.as_bytes(), 0).unwrap(), &Device::flex()).unwrap()
    }

    #[test]
    fn a_knob_at_the_top_level_is_applied_under_options_or_refused() {
        let device = Device::flex();
        for (body, field) in [
            (
                r#"{"tokens": ["a", "b"], "temperature": -1}"#,
                "temperature: -1 at the top level",
            ),
            (
                r#"{"tokens": ["a", "b"], "causal": true}"#,
                "causal: true at the top level",
            ),
            (
                r#"{"tokens": ["a", "b"], "seed": 3}"#,
                "seed: a knob, set under options",
            ),
            (
                r#"{"tokens": ["a", "b"], "d_v": 99}"#,
                "d_v: 99 at the top level is not applied there (the block ran with 8); d_v is not a knob",
            ),
            (
                r#"{"tokens": ["a", "b"], "query": 1}"#,
                "query: a knob, set under options",
            ),
        ] {
            let refused = parse(body.as_bytes(), 0)
                .and_then(|r| attention(&r, &device))
                .unwrap_err()
                .0;
            assert!(refused.starts_with(field), "{body}: {refused}");
            assert!(refused.contains("options"), "{body}: {refused}");
        }
        // A top-level knob that agrees with what ran is no loss: 1 is the temperature used.
        answered(r#"{"tokens": ["a", "b"], "temperature": 1, "causal": false}"#);
        // An answer sent back as a request agrees with itself, knobs and all.
        let first = answered(
            r#"{"tokens": ["a", "b", "c"], "options": {"causal": true, "temperature": 2}}"#,
        );
        let mut again = first.clone();
        again["options"] = json!({"causal": true, "temperature": 2});
        let second = answered(&again.to_string());
        assert_eq!(second["heads"], first["heads"]);
        // And without its options it is refused, naming the first knob that would be lost.
        let mut bare = first.clone();
        bare.as_object_mut().unwrap().remove("neuron");
        let refused = parse(bare.to_string().as_bytes(), 0)
            .and_then(|r| attention(&r, &device))
            .unwrap_err()
            .0;
        assert!(
            refused.contains("at the top level is not applied"),
            "{refused}"
        );
    }

    #[test]
    fn the_entropy_ceiling_counts_the_keys_each_query_sees() {
        let causal = answered(r#"{"tokens": ["a", "b", "c", "d"], "options": {"causal": true}}"#);
        let open = answered(r#"{"tokens": ["a", "b", "c", "d"]}"#);
        let ceiling = |v: &Value| -> Vec<f64> {
            v["heads"][0]["entropy_max"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_f64().unwrap())
                .collect()
        };
        for (i, e) in ceiling(&causal).iter().enumerate() {
            assert!((e - ((i + 1) as f64).ln()).abs() < 1e-6, "query {i}: {e}");
        }
        assert!(ceiling(&open).iter().all(|e| (e - 4f64.ln()).abs() < 1e-6));
        for (i, (h, max)) in causal["heads"][0]["entropy"]
            .as_array()
            .unwrap()
            .iter()
            .zip(ceiling(&causal))
            .enumerate()
        {
            assert!(h.as_f64().unwrap() <= max + 1e-6, "query {i}");
        }
    }

    /// The neuron view carries each weight to the end: numerator / normaliser is the weight
    /// the block computed, for every normalisation the block has.
    #[test]
    fn the_neuron_view_divides_to_the_blocks_weights() {
        for options in [
            r#"{}"#,
            r#"{"causal": true}"#,
            r#"{"softmax_axis": "column", "causal": true}"#,
            r#"{"softmax_axis": "whole"}"#,
            r#"{"softmax": "off-by-one", "causal": true}"#,
            r#"{"kernel": "linear", "causal": true}"#,
            r#"{"positional": "alibi", "n_heads": 2, "temperature": 0.3}"#,
        ] {
            for query in 0..5 {
                let body = format!(
                    r#"{{"tokens": ["the", "cat", "sat", "on", "mat"], "options": {{"query": {query}, "d_model": 8, {}}}}}"#,
                    options.trim_matches(|c| c == '{' || c == '}')
                )
                .replace(", }", "}");
                let answer = answered(&body);
                for (h, neuron) in answer["neuron"].as_array().unwrap().iter().enumerate() {
                    for (j, key) in neuron["keys"].as_array().unwrap().iter().enumerate() {
                        let (num, z, w) = (
                            key["numerator"].as_f64().unwrap(),
                            key["normaliser"].as_f64().unwrap(),
                            key["weight"].as_f64().unwrap(),
                        );
                        let ratio = if z > 0.0 { num / z } else { 0.0 };
                        assert!(
                            (ratio - w).abs() < 1e-5,
                            "{options} head {h} query {query} key {j}: {num} / {z} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_shuffle_is_repeated_from_its_seed_and_aligned_with_its_tokens() {
        let device = Device::flex();
        let body = |seed: u64| {
            format!(
                r#"{{"tokens": ["a", "b", "c", "d", "e"], "options": {{"shuffle_seed": {seed}}}}}"#
            )
        };
        let run = |seed| shuffle(&parse(body(seed).as_bytes(), 0).unwrap(), &device).unwrap();
        let (first, again, other) = (run(4), run(4), run(5));
        assert_eq!(first["shuffle_seed"], 4);
        assert_eq!(first["permutation"], again["permutation"]);
        assert_ne!(first["permutation"], other["permutation"]);
        // Without position or mask the aligned rows are the rows before, to rounding.
        let before = first["before"]["output"].as_array().unwrap();
        let aligned = first["aligned"].as_array().unwrap();
        for (i, (a, b)) in aligned.iter().zip(before).enumerate() {
            for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
                assert!(
                    (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5,
                    "row {i}"
                );
            }
            assert!(first["row_delta"][i].as_f64().unwrap() < 1e-5);
        }
        // A permutation given is used as it is, and no seed is claimed for it.
        let given = r#"{"tokens": ["a", "b", "c"], "options": {"permutation": [2, 0, 1]}}"#;
        let s = shuffle(&parse(given.as_bytes(), 0).unwrap(), &device).unwrap();
        assert_eq!(
            (s["permutation"].clone(), s["shuffle_seed"].clone()),
            (json!([2, 0, 1]), Value::Null)
        );
    }

    #[test]
    fn a_selection_sums_its_queries_and_the_paths_agree() {
        let answer = answered(
            r#"{"tokens": ["a", "b", "c", "d"], "options": {"queries": [3, 1], "n_heads": 2, "causal": true}}"#,
        );
        for (h, summed) in answer["selection"]["heads"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let weights = &answer["heads"][h]["weights"];
            for (j, s) in summed.as_array().unwrap().iter().enumerate() {
                let want = weights[3][j].as_f64().unwrap() + weights[1][j].as_f64().unwrap();
                assert!((s.as_f64().unwrap() - want).abs() < 1e-6);
            }
        }
        assert_eq!(answer["paths"]["fused_ran"], true);
        for gap in ["weights_max_diff", "context_max_diff"] {
            let g = answer["paths"][gap].as_f64().unwrap();
            assert!(g < 1e-5, "{gap} {g}");
        }
        let column = answered(r#"{"tokens": ["a", "b"], "options": {"softmax_axis": "column"}}"#);
        assert_eq!(
            column["paths"]["fused_ran"], false,
            "the fused op has no column softmax"
        );
        for body in [
            r#"{"tokens": ["a"], "options": {"queries": []}}"#,
            r#"{"tokens": ["a", "b"], "options": {"queries": [1, 1]}}"#,
            r#"{"tokens": ["a"], "options": {"path": "tiled"}}"#,
        ] {
            assert!(refused(body).starts_with("options."), "{body}");
        }
    }

    /// Random requests built from the real option names and edge values: each is answered or
    /// refused with a message, never a panic (the server would turn one into a 500).
    #[test]
    fn random_requests_are_answered_or_refused_never_a_panic() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed, TestRunner};

        let edge = prop_oneof![
            Just(json!(null)),
            Just(json!(0)),
            Just(json!(1)),
            Just(json!(2)),
            Just(json!(3)),
            Just(json!(-1)),
            Just(json!(0.5)),
            Just(json!(1e300)),
            Just(json!(u64::MAX)),
            Just(json!(true)),
            Just(json!("row")),
            Just(json!("column")),
            Just(json!("rotary")),
            Just(json!("sinusoidal")),
            Just(json!("learned")),
            Just(json!("sqrt-dmodel")),
            Just(json!("")),
            Just(json!([1, 0])),
            Just(json!([0, 0])),
            Just(json!({})),
        ];
        let options =
            proptest::collection::btree_map(proptest::sample::select(OPTIONS.to_vec()), edge, 0..6);
        let words = proptest::collection::vec("[a-c]{1,3}", 0..5);
        let mut runner = TestRunner::new(Config {
            cases: 1024,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(0xE7_910E),
            ..Config::default()
        });
        let device = Device::flex();
        runner
            .run(&(words, options), |(words, options)| {
                let body = json!({"tokens": words, "options": options}).to_string();
                let answered = crate::util::guard::catch(|| {
                    parse(body.as_bytes(), 0)
                        .and_then(|request| {
                            attention(&request, &device)?;
                            shuffle(&request, &device)
                        })
                        .map(|_| ())
                });
                match answered {
                    Ok(Ok(())) => {}
                    Ok(Err(BadRequest(message))) => prop_assert!(!message.is_empty()),
                    Err(panic) => prop_assert!(false, "{body}: {panic}"),
                }
                Ok(())
            })
            .unwrap();
    }
}
