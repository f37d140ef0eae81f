//! Trained models on disk, so that a run's models can be looked at again (the explorer, a later
//! probe) without training them anew.
//!
//! A checkpoint is two files with one stem: `<stem>.bpk`, the parameters in Burn 0.22's burnpack
//! record format (`Module::into_record`), and `<stem>.json`, the [`ModelSpec`] needed to build
//! the same architecture before the parameters are loaded into it. Constants that are not
//! parameters (sinusoidal and rotary tables) are rebuilt from the spec.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::Device;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};

use crate::lab::model::{ModelConfig, TinyTransformer};
use crate::lab::tasks::{Task, TaskConfig};

/// What it takes to rebuild a trained model's architecture: its config, and the sizes its task
/// gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub model: ModelConfig,
    pub vocab: usize,
    pub classes: usize,
    /// Longest sequence the model was built for (its positional tables' length).
    pub max_len: usize,
    /// Positions read for the answer, at the end of each sequence.
    pub n_out: usize,
    /// The task it was trained on, so that examples can be drawn again.
    pub task: TaskConfig,
    /// The seed the model was initialised and trained with.
    pub seed: u64,
}

impl ModelSpec {
    /// The spec of `model` trained on `task` with `seed`.
    pub fn new(model: &ModelConfig, task: &Task, seed: u64) -> Self {
        Self {
            model: model.clone(),
            vocab: task.vocab(),
            classes: task.classes(),
            max_len: task.seq_len(),
            n_out: task.n_out(),
            task: task.config().clone(),
            seed,
        }
    }
}

/// A checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} is not a model spec: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error("{path} does not fit the model its spec describes: {reason}")]
    Record { path: PathBuf, reason: String },
    #[error("cannot serialise the model: {0}")]
    Serialise(String),
}

/// The two files of a checkpoint, as bytes: (`.bpk` parameters, `.json` spec).
pub fn to_bytes(
    model: &TinyTransformer,
    spec: &ModelSpec,
) -> Result<(Vec<u8>, Vec<u8>), CheckpointError> {
    let record = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| CheckpointError::Serialise(e.to_string()))?;
    let spec = serde_json::to_vec_pretty(spec).expect("a model spec serialises");
    Ok((record.to_vec(), spec))
}

/// Loads the checkpoint `<stem>.bpk` + `<stem>.json` (give the path without its extension) onto
/// `device`: the architecture is built from the spec, then the parameters are loaded into it.
pub fn load(stem: &Path, device: &Device) -> Result<(TinyTransformer, ModelSpec), CheckpointError> {
    let json = stem.with_extension("json");
    let text = std::fs::read_to_string(&json).map_err(|e| CheckpointError::Read {
        path: json.clone(),
        reason: e.to_string(),
    })?;
    let spec: ModelSpec = serde_json::from_str(&text).map_err(|e| CheckpointError::Spec {
        path: json.clone(),
        reason: e.to_string(),
    })?;
    let bpk = stem.with_extension("bpk");
    let record = ModuleRecord::load(&bpk).map_err(|e| CheckpointError::Read {
        path: bpk.clone(),
        reason: e.to_string(),
    })?;
    let fresh = spec
        .model
        .init(spec.vocab, spec.classes, spec.max_len, spec.seed, device)
        .map_err(|e| CheckpointError::Spec {
            path: json,
            reason: e.to_string(),
        })?;
    let model = fresh
        .try_load_record(record)
        .map_err(|e| CheckpointError::Record {
            path: bpk,
            reason: e.to_string(),
        })?;
    Ok((model, spec))
}
