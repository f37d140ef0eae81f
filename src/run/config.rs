//! Experiment configs: one TOML file per experiment, read strictly, overridden from the command
//! line, and validated with errors that name the file, the key and the reason.
//!
//! Every experiment's config has a `[run]` table ([`RunConfig`]); the rest is its own. Unknown
//! keys are refused (`deny_unknown_fields`) with a did-you-mean. `--set key.path=value` edits the
//! parsed table before it is read, so an override is checked exactly like the file.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::block::attention::AttentionConfigError;
use crate::lab::model::ModelConfig;
use crate::lab::tasks::{TaskConfig, TaskError};
use crate::lab::train::TrainConfig;
use crate::util::device::BackendKind;
use crate::util::limits::{self, MAX_SEEDS, MAX_STEPS};

/// The `[run]` table every experiment shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Backend name (flex, ndarray, wgpu, wgpu-cpu, cuda, remote). Default: flex.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Base seed; repeat r uses seed + r. Default: 0.
    #[serde(default, deserialize_with = "any_u64")]
    pub seed: u64,
    /// Independent repeats of every trained configuration. Default: 1.
    #[serde(default = "one")]
    pub seeds: usize,
}

/// A `u64` written as a number or as a string of digits. TOML's integers stop at i64::MAX, so
/// `--set run.seed=18446744073709551615` (and `--seed`) reach the config as a string, while the
/// same number written in the file is read as a number.
fn any_u64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct Seed;
    impl serde::de::Visitor<'_> for Seed {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a whole number from 0 to {}", u64::MAX)
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
            text.trim()
                .parse()
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(text), &self))
        }
    }
    deserializer.deserialize_any(Seed)
}

fn default_backend() -> String {
    BackendKind::default().name().to_string()
}
fn one() -> usize {
    1
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            backend: default_backend(),
            seed: 0,
            seeds: 1,
        }
    }
}

impl RunConfig {
    /// The seeds of every repeat: seed, seed + 1, ….
    pub fn seed_list(&self) -> Vec<u64> {
        (0..self.seeds as u64)
            .map(|r| self.seed.wrapping_add(r))
            .collect()
    }

    pub fn backend_kind(&self) -> Result<BackendKind, Invalid> {
        BackendKind::from_str(&self.backend).map_err(|e| Invalid::new("run.backend", e))
    }
}

impl Validate for RunConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.backend_kind()?;
        at_least("run.seeds", self.seeds, 1)?;
        at_most(
            "run.seeds",
            self.seeds,
            MAX_SEEDS,
            "more seeds than that is a typo, not a study",
        )
    }
}

/// One invalid value: the key (dotted path) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, reason: impl ToString) -> Self {
        Self {
            key: key.into(),
            reason: reason.to_string(),
        }
    }

    /// Prefixes the key with the table it sits in, e.g. `model` + `d_model`.
    pub fn within(mut self, table: &str) -> Self {
        self.key = format!("{table}.{}", self.key);
        self
    }
}

/// A config that can check its own values.
pub trait Validate {
    fn validate(&self) -> Result<(), Invalid>;
}

/// `value`'s own check, with its keys prefixed by the table it sits in (`model` + `d_model`).
pub fn validate_in(table: &str, value: &impl Validate) -> Result<(), Invalid> {
    value.validate().map_err(|e| e.within(table))
}

/// An experiment's whole config.
pub trait ExperimentConfig: Validate + Serialize + DeserializeOwned + Clone {
    fn run(&self) -> &RunConfig;
}

/// `experiment_config!(MyConfig)`: [`ExperimentConfig`] for a config whose `[run]` table is its
/// field `run`, as every experiment's is.
macro_rules! experiment_config {
    ($config:ty) => {
        impl $crate::run::config::ExperimentConfig for $config {
            fn run(&self) -> &$crate::run::config::RunConfig {
                &self.run
            }
        }
    };
}
pub(crate) use experiment_config;

/// `value ≥ min`, or an error naming `key`.
pub fn at_least(key: &str, value: usize, min: usize) -> Result<(), Invalid> {
    if value < min {
        return Err(Invalid::new(
            key,
            format!("must be at least {min}, got {value}"),
        ));
    }
    Ok(())
}

/// `value ≤ max`, or an error naming `key` and why the cap is there.
pub fn at_most(key: &str, value: usize, max: usize, why: &str) -> Result<(), Invalid> {
    limits::at_most(value, max, why).map_err(|reason| Invalid::new(key, reason))
}

/// A list in strictly increasing order (the verdicts read its ends as smallest and largest), or
/// an error naming `key`.
pub fn increasing<T: PartialOrd + std::fmt::Debug>(key: &str, list: &[T]) -> Result<(), Invalid> {
    let rising = |w: &[T]| w[0].partial_cmp(&w[1]) == Some(std::cmp::Ordering::Less);
    if let Some(i) = list.windows(2).position(|w| !rising(w)) {
        return Err(Invalid::new(
            key,
            format!(
                "must be in increasing order without repeats (the verdicts compare its first and last), got {:?} before {:?}",
                list[i],
                list[i + 1]
            ),
        ));
    }
    Ok(())
}

/// A positive finite number, or an error naming `key`.
pub fn positive(key: &str, value: f64) -> Result<(), Invalid> {
    if !(value.is_finite() && value > 0.0) {
        return Err(Invalid::new(
            key,
            format!("must be a positive number, got {value}"),
        ));
    }
    Ok(())
}

/// A step inside a run of `steps` steps (0-based), or an error naming `key`.
pub fn within_steps(key: &str, step: Option<usize>, steps: usize) -> Result<(), Invalid> {
    match step {
        Some(step) if step >= steps => Err(Invalid::new(
            key,
            format!(
                "step {step} is past the last step, {} (train.steps = {steps})",
                steps.saturating_sub(1)
            ),
        )),
        _ => Ok(()),
    }
}

/// A non-empty list, or an error naming `key`.
pub fn non_empty<T>(key: &str, list: &[T]) -> Result<(), Invalid> {
    if list.is_empty() {
        return Err(Invalid::new(
            key,
            "the list is empty; give at least one value",
        ));
    }
    Ok(())
}

impl Validate for TrainConfig {
    fn validate(&self) -> Result<(), Invalid> {
        at_least("steps", self.steps, 1)?;
        at_most("steps", self.steps, MAX_STEPS, "years of training on a CPU")?;
        at_least("batch_size", self.batch_size, 1)?;
        positive("lr", self.lr)?;
        positive("adam_epsilon", self.adam_epsilon)?;
        // Burn's Adam holds ε as f32: below its normal range it would round to 0.
        if self.adam_epsilon < 1e-30 {
            return Err(Invalid::new(
                "adam_epsilon",
                format!("{:e} is below 1e-30, where f32 loses it", self.adam_epsilon),
            ));
        }
        if self.warmup_steps > self.steps {
            return Err(Invalid::new(
                "warmup_steps",
                format!("{} is more than steps = {}", self.warmup_steps, self.steps),
            ));
        }
        if !(self.weight_decay.is_finite() && (0.0..1.0).contains(&self.weight_decay)) {
            return Err(Invalid::new(
                "weight_decay",
                format!("must be in [0, 1), got {}", self.weight_decay),
            ));
        }
        at_least("log_every", self.log_every, 1)
    }
}

impl Validate for TaskConfig {
    fn validate(&self) -> Result<(), Invalid> {
        TaskConfig::validate(self).map_err(|e| {
            let key = match &e {
                TaskError::TooSmall { field, .. } | TaskError::TooFewDistinct { field, .. } => {
                    field
                }
                TaskError::TooFewKeys { .. } | TaskError::UnusedKeys { .. } => "keys",
                TaskError::UnknownKind(_) => "kind",
            };
            Invalid::new(key, e)
        })
    }
}

impl Validate for ModelConfig {
    fn validate(&self) -> Result<(), Invalid> {
        ModelConfig::validate(self).map_err(|e| {
            use AttentionConfigError as E;
            let key = match &e {
                E::Zero { field } => field,
                E::HeadsDoNotDivide { .. } => "n_heads",
                E::RawWidths { .. } => "d_k",
                E::Temperature(_) => "temperature",
                E::Scale(_) => "scale",
                E::Divisor { .. } => "temperature",
                E::Dropout(_) => "dropout",
                E::Odd { .. } => "positional",
                E::TooMany { field, .. } | E::Conflict { field, .. } => field,
            };
            Invalid::new(key, e)
        })
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is in the message, so it is not also a `source`: anyhow's `{:#}` would print
    // it twice.
    #[error("cannot read config {path}: {error}{hint}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
        /// Where a relative path was looked for.
        hint: String,
    },
    #[error("failed to parse {path}{place}: {message}")]
    Parse {
        path: PathBuf,
        /// ` (line N, key a.b)` where known.
        place: String,
        message: String,
    },
    #[error("bad --set '{arg}': {reason}")]
    Override { arg: String, reason: String },
    #[error("invalid config {path}: {invalid}")]
    Invalid { path: PathBuf, invalid: Invalid },
}

/// A config as loaded: the typed value and the resolved TOML (defaults and overrides applied).
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub config: T,
    pub path: PathBuf,
    /// What `config.toml` in the results folder holds: enough to repeat the run exactly.
    pub resolved: String,
}

/// Reads `path`, applies `overrides` (`key.path=value`, value in TOML syntax; a bare word is a
/// string), and validates.
pub fn load<T: ExperimentConfig>(
    path: &Path,
    overrides: &[String],
) -> Result<Loaded<T>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        hint: match std::env::current_dir() {
            Ok(cwd) if path.is_relative() => format!(
                " (looked in {}; run from the repository root or pass --config)",
                cwd.display()
            ),
            _ => String::new(),
        },
        error,
    })?;
    let parse_error = |text: &str, e: toml::de::Error, with_lines: bool| {
        let place = e
            .span()
            .map(|span| place_of(text, span.start, with_lines))
            .unwrap_or_default();
        ConfigError::Parse {
            path: path.to_path_buf(),
            place,
            message: with_suggestion(e.message()),
        }
    };
    // The file alone first, so that its own errors carry its own line numbers.
    let mut config: T = toml::from_str(&text).map_err(|e| parse_error(&text, e, true))?;
    if !overrides.is_empty() {
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| parse_error(&text, e, true))?;
        for arg in overrides {
            apply_override(&mut table, arg)?;
        }
        let edited = toml::to_string(&table).expect("a TOML table serialises");
        config = toml::from_str(&edited).map_err(|e| {
            let mut err = parse_error(&edited, e, false);
            if let ConfigError::Parse { path, .. } = &mut err {
                *path = PathBuf::from(format!("{} (with --set)", path.display()));
            }
            err
        })?;
    }
    config.validate().map_err(|invalid| ConfigError::Invalid {
        path: path.to_path_buf(),
        invalid,
    })?;
    let resolved = toml::to_string(&config).expect("a config serialises");
    Ok(Loaded {
        config,
        path: path.to_path_buf(),
        resolved,
    })
}

/// Sets `key.path = value` in `table`, creating missing tables on the path (a table the config
/// does not know is then refused by name, like a misspelt key in the file).
pub fn apply_override(table: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::Override {
        arg: arg.to_string(),
        reason,
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE, e.g. train.steps=100".into()))?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(bad(format!("'{key}' is not a key path")));
    }
    let value = parse_value(raw.trim());
    let (last, tables) = path.split_last().expect("split yields at least one part");
    let mut here = table;
    for (depth, part) in tables.iter().enumerate() {
        let slot = here
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        here = match slot {
            toml::Value::Table(t) => t,
            _ => {
                let walked = path[..=depth].join(".");
                return Err(bad(format!("'{walked}' is a value, not a table")));
            }
        };
    }
    here.insert(last.to_string(), value);
    Ok(())
}

/// A TOML value (`3`, `1e-3`, `true`, `[8, 16]`, `"x"`), or a bare word read as a string.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// ` (line N, key table.key)` for a byte offset in `text`.
fn place_of(text: &str, offset: usize, with_lines: bool) -> String {
    let before = &text[..offset.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = if key.starts_with('[') {
        // The error is about a table header itself (an unknown table): name that table, not
        // the one before it.
        key.trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string()
    } else {
        match (table, key.is_empty()) {
            (Some(t), false) => format!("{t}.{key}"),
            (None, false) => key.to_string(),
            (Some(t), true) => t,
            (None, true) => String::new(),
        }
    };
    let mut parts = Vec::new();
    if with_lines {
        parts.push(format!("line {line_no}"));
    }
    if !key.is_empty() {
        parts.push(format!("key {key}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// Adds "did you mean `x`?" to serde's unknown-field message when a known field is close.
fn with_suggestion(message: &str) -> String {
    let message = message.trim().to_string();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message;
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match known.iter().map(|k| (edit_distance(unknown, k), *k)).min() {
        Some((d, k)) if d <= 2.max(unknown.len() / 3) => format!("{message}; did you mean `{k}`?"),
        _ => message,
    }
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[serde(default)]
        run: RunConfig,
        model: DemoModel,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DemoModel {
        d_model: usize,
        lr: f64,
    }

    impl Validate for Demo {
        fn validate(&self) -> Result<(), Invalid> {
            self.run.validate()?;
            positive("model.lr", self.model.lr)
        }
    }

    impl ExperimentConfig for Demo {
        fn run(&self) -> &RunConfig {
            &self.run
        }
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("attention-lab-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn unknown_keys_get_a_suggestion_and_a_place() {
        let path = write("typo", "[model]\nd_modle = 4\nlr = 0.1\n");
        let err = load::<Demo>(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("unknown field `d_modle`"), "{err}");
        assert!(err.contains("did you mean `d_model`?"), "{err}");
        assert!(err.contains("line 2, key model.d_modle"), "{err}");
    }

    #[test]
    fn overrides_are_checked_like_the_file() {
        let path = write("good", "[model]\nd_model = 4\nlr = 0.1\n");
        let loaded = load::<Demo>(
            &path,
            &["model.d_model=8".into(), "run.backend=ndarray".into()],
        );
        let loaded = loaded.unwrap();
        assert_eq!(loaded.config.model.d_model, 8);
        assert!(
            loaded.resolved.contains("backend = \"ndarray\""),
            "{}",
            loaded.resolved
        );
        let err = load::<Demo>(&path, &["model.lr=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.lr: must be a positive number, got -1"),
            "{err}"
        );
        let err = load::<Demo>(&path, &["run.backend=tpu".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("run.backend"), "{err}");
        let err = load::<Demo>(&path, &["nope.x=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `nope`"), "{err}");
        let err = load::<Demo>(&path, &["model.lr.x=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'model.lr' is a value, not a table"), "{err}");
        let err = load::<Demo>(&path, &["model.d_modle=1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("did you mean `d_model`?") && err.contains("with --set"),
            "{err}"
        );
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("d_modle", "d_model"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            parse_value("[8, 16]"),
            toml::Value::Array(vec![8.into(), 16.into()])
        );
        assert_eq!(parse_value("flex"), toml::Value::String("flex".into()));
    }
}
