//! The scaling rule: what the scores q·kᵀ are divided by before the softmax.
//!
//! With q, k ~ N(0, 1) in d_k dimensions, Var(q·k) = d_k (Vaswani et al. 2017, footnote 4), so
//! dividing by √d_k keeps the logits at unit variance whatever the head size.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::util::cli::{UnknownName, normalize_name};

/// What the scores are divided by.
///
/// In configs it is written as its name (`"none"`, `"sqrt-dk"`, `"sqrt-dmodel"`, `"dk"`) or as a
/// positive number for a fixed divisor, the same spellings `--scale` takes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ScoreScale {
    /// No scaling: logits have variance d_k at initialisation.
    None,
    /// √d_k, the per-head dimension (the paper's rule). The default.
    #[default]
    SqrtDk,
    /// √d_model: the pitfall. Over-scales by √n_heads and flattens attention.
    SqrtDModel,
    /// d_k, as in μP (Yang et al. 2022, "Tensor Programs V").
    Dk,
    /// A fixed divisor.
    Fixed(f64),
}

impl ScoreScale {
    /// The number the scores are divided by.
    pub fn divisor(self, d_k: usize, d_model: usize) -> f64 {
        match self {
            ScoreScale::None => 1.0,
            ScoreScale::SqrtDk => (d_k as f64).sqrt(),
            ScoreScale::SqrtDModel => (d_model as f64).sqrt(),
            ScoreScale::Dk => d_k as f64,
            ScoreScale::Fixed(divisor) => divisor,
        }
    }
}

impl FromStr for ScoreScale {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match normalize_name(s).as_str() {
            "none" => Ok(ScoreScale::None),
            "sqrt-dk" => Ok(ScoreScale::SqrtDk),
            "sqrt-dmodel" | "sqrt-d-model" => Ok(ScoreScale::SqrtDModel),
            "dk" | "d-k" => Ok(ScoreScale::Dk),
            other => match other.parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => Ok(ScoreScale::Fixed(v)),
                _ => Err(UnknownName {
                    what: "scale",
                    given: s.to_string(),
                    expected: vec!["none", "sqrt-dk", "sqrt-dmodel", "dk", "a positive number"],
                }),
            },
        }
    }
}

impl fmt::Display for ScoreScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScoreScale::None => f.write_str("none"),
            ScoreScale::SqrtDk => f.write_str("sqrt-dk"),
            ScoreScale::SqrtDModel => f.write_str("sqrt-dmodel"),
            ScoreScale::Dk => f.write_str("dk"),
            ScoreScale::Fixed(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for ScoreScale {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ScoreScale::Fixed(v) => serializer.serialize_f64(*v),
            named => serializer.collect_str(named),
        }
    }
}

impl<'de> Deserialize<'de> for ScoreScale {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ScoreScale;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("none, sqrt-dk, sqrt-dmodel, dk or a positive number")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<ScoreScale, E> {
                s.parse().map_err(E::custom)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScoreScale, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScoreScale, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScoreScale, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisors() {
        // d_model = 64 split into 4 heads: d_k = 16.
        assert_eq!(ScoreScale::None.divisor(16, 64), 1.0);
        assert_eq!(ScoreScale::SqrtDk.divisor(16, 64), 4.0);
        assert_eq!(ScoreScale::SqrtDModel.divisor(16, 64), 8.0);
        assert_eq!(ScoreScale::Dk.divisor(16, 64), 16.0);
        assert_eq!(ScoreScale::Fixed(2.5).divisor(16, 64), 2.5);
    }

    #[test]
    fn parses_and_round_trips() {
        for s in [
            ScoreScale::None,
            ScoreScale::SqrtDk,
            ScoreScale::SqrtDModel,
            ScoreScale::Dk,
            ScoreScale::Fixed(3.0),
        ] {
            assert_eq!(s.to_string().parse::<ScoreScale>(), Ok(s));
        }
        assert!("0".parse::<ScoreScale>().is_err());
        assert!("-2".parse::<ScoreScale>().is_err());
        assert!("sqrt-dq".parse::<ScoreScale>().is_err());
    }

    #[test]
    fn configs_spell_scales_like_the_command_line() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct T {
            scales: Vec<ScoreScale>,
        }
        let t: T = toml::from_str(r#"scales = ["sqrt-dmodel", "none", 8, 2.5]"#).unwrap();
        assert_eq!(
            t.scales,
            [
                ScoreScale::SqrtDModel,
                ScoreScale::None,
                ScoreScale::Fixed(8.0),
                ScoreScale::Fixed(2.5)
            ]
        );
        assert_eq!(
            toml::to_string(&t).unwrap(),
            "scales = [\"sqrt-dmodel\", \"none\", 8.0, 2.5]\n"
        );
        let err = toml::from_str::<T>(r#"scales = ["sqrt-dq"]"#).unwrap_err();
        assert!(err.message().contains("unknown scale 'sqrt-dq'"), "{err}");
    }
}
