//! Floats that survive a JSON file exactly, NaN and infinities included: what a stored training
//! run needs so that a merge of shards computes the same numbers as one unsharded run.
//!
//! JSON has no NaN or infinity (serde_json writes them as `null` and cannot read them back), and
//! serde_json's default number parser may miss the last bit. So each value is written as Rust's
//! shortest round-trip text (`{:?}`: `0.1`, `1e-5`, `NaN`, `inf`), and read back with
//! `str::parse`, which rounds correctly. Use as `#[serde(with = "crate::util::exact")]` on an
//! `f64` field, or `crate::util::exact::vec` on a `Vec<f64>`.

use serde::{Deserialize, Deserializer, Serializer};

/// Writes `value` as its shortest round-trip text.
pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{value:?}"))
}

/// Reads a value written by [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

fn parse(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .map_err(|e| format!("'{text}' is not a number: {e}"))
}

/// The same for a `Vec<f64>`.
pub mod vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(|v| format!("{v:?}")))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|t| super::parse(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "super")]
        one: f64,
        #[serde(with = "super::vec")]
        many: Vec<f64>,
    }

    #[test]
    fn every_bit_and_every_non_finite_value_comes_back() {
        let awkward = [
            0.1,
            1.0 / 3.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            -0.0,
            1e-5,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f32::MAX as f64,
            0.300_000_000_000_000_04,
        ];
        let sample = Sample {
            one: f64::NAN,
            many: awkward.to_vec(),
        };
        let json = serde_json::to_string(&sample).unwrap();
        let back: Sample = serde_json::from_str(&json).unwrap();
        assert!(back.one.is_nan());
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.many), bits(&sample.many), "{json}");
    }

    #[test]
    fn a_value_that_is_not_a_number_is_an_error_naming_it() {
        let err = serde_json::from_str::<Sample>(r#"{"one":"ten","many":[]}"#).unwrap_err();
        assert!(err.to_string().contains("'ten' is not a number"), "{err}");
    }
}
