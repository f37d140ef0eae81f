//! The explorer's JSON API as plain functions from request bytes to answers, so that the server
//! is only transport and the tests can call the same code.
//!
//! A request is `trace --input`'s object (`tokens`, `x`, `w_q`, `w_k`, `w_v`) plus `options`.
//! Without `x`, the tokens get seeded word embeddings of width `options.d_model`. The answer is
//! `trace --json`'s object, computed by [`trace::run`]: one code path for both.

use serde_json::{Map, Value, json};

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
    /// For `/api/shuffle`: token i of the shuffled input is token `permutation[i]`.
    pub permutation: Option<Vec<usize>>,
}

const OPTIONS: [&str; 17] = [
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
    let permutation = permutation(&options, n)?;
    Ok(Request {
        input,
        options: options_out,
        query,
        permutation,
    })
}

/// A JSON object: a request body, or its `options`.
type Object = Map<String, Value>;

/// The body as a JSON object, and its `options` object (empty when absent), every option name
/// known.
fn body_object(body: &[u8]) -> Result<(Object, Object), BadRequest> {
    if body.len() > MAX_BODY {
        return Err(bad(format!(
            "body: {} bytes is over the {MAX_BODY}-byte (1 MiB) limit",
            body.len()
        )));
    }
    let Value::Object(mut object) = body_json(body)? else {
        return Err(bad(
            "body: expected a JSON object {\"tokens\", \"x\"?, \"w_q\"?, \"w_k\"?, \"w_v\"?, \"options\"?}",
        ));
    };
    let options = match object.remove("options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad("options: expected an object")),
    };
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
    })
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

/// `POST /api/attention`: `trace --json`'s answer for the request, plus the neuron view of
/// `options.query` when given.
pub fn attention(request: &Request, device: &burn::prelude::Device) -> Result<Value, BadRequest> {
    let result = trace::run(&request.input, &request.options, device)?;
    Ok(answer(&result, request.query))
}

fn answer(result: &TraceResult, query: Option<usize>) -> Value {
    let mut value = result.to_json();
    if let Some(query) = query {
        value["neuron"] = json!(
            result
                .heads
                .iter()
                .map(|h| h.neuron(query))
                .collect::<Vec<_>>()
        );
    }
    value
}

/// `POST /api/shuffle`: the request as given and with its tokens permuted (by
/// `options.permutation`, or a seeded one that moves every token it can), and how far the
/// outputs moved from following their tokens: `max_delta` = max |f(P·x)[i] − f(x)[P(i)]|.
pub fn shuffle(request: &Request, device: &burn::prelude::Device) -> Result<Value, BadRequest> {
    let n = request.input.x.rows;
    let permutation = match &request.permutation {
        Some(p) => p.clone(),
        None => {
            let mut p = HostRng::new(request.options.seed ^ 0x5eed).permutation(n);
            if n > 1 && p.iter().enumerate().all(|(i, &v)| i == v) {
                p.rotate_left(1);
            }
            p
        }
    };
    let shuffled =
        trace::permuted(&request.input, &permutation).map_err(|e| bad(format!("options.{e}")))?;
    let before = trace::run(&request.input, &request.options, device)?;
    let after = trace::run(&shuffled, &request.options, device)?;
    let max_delta = trace::equivariance_gap(&before, &after, &permutation);
    Ok(json!({
        "permutation": permutation,
        "before": answer(&before, None),
        "after": answer(&after, request.query),
        "max_delta": max_delta,
        "tolerance": EQUIVARIANCE_TOLERANCE,
        "equivariant": f64::from(max_delta) <= EQUIVARIANCE_TOLERANCE,
    }))
}

/// `POST /api/model` with `{"model": name, "seed"?: n}`: one example of that model's task and
/// its attention (see [`TrainedModel::example`]).
pub fn model(
    body: &[u8],
    trained: &Trained,
    device: &burn::prelude::Device,
) -> Result<Value, BadRequest> {
    if body.len() > MAX_BODY {
        return Err(bad(format!(
            "body: {} bytes is over the {MAX_BODY}-byte (1 MiB) limit",
            body.len()
        )));
    }
    let value = body_json(body)?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("body: expected {\"model\": name, \"seed\"?: n}"))?;
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
    let name = object
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("model: expected the name of one of the run's models"))?;
    let model: &TrainedModel = trained.find(name).ok_or_else(|| {
        bad(format!(
            "model: no model named '{}' in {}",
            trace::label(name),
            trained.run.display()
        ))
    })?;
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
