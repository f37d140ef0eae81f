//! A trace's input: the seed page's worked example, or the user's own tokens, embeddings and
//! projections read from strict JSON (a repeated key or a ragged matrix is an error naming
//! where, never a silent guess).

use std::path::Path;

use serde_json::{Map, Value};

use super::render::label;
use super::{Matrix, TraceError, TraceInput, bad};

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
    const OUTPUTS: [&str; 29] = [
        "path",
        "fused",
        "formula",
        "row_sum_tolerance",
        "x_positional",
        "kernel",
        "qk_norm",
        "ssmax",
        "softmax",
        "gate",
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
