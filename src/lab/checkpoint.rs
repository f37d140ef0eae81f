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
    /// The commit of the code that trained it ([`crate::util::provenance::commit_once`]);
    /// absent in checkpoints saved before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
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
            commit: Some(crate::util::provenance::commit_once().to_string()),
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
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// The checkpoints in `folder` (a run's `models/`): the stems of its `.json` specs, in name
/// order.
pub fn stems(folder: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let read = |e: std::io::Error| CheckpointError::Read {
        path: folder.to_path_buf(),
        reason: e.to_string(),
    };
    let mut stems: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(read)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.with_extension(""))
        .collect();
    stems.sort();
    Ok(stems)
}

/// Exports every checkpoint of the run folder `run` (or of its `models/` folder given directly)
/// with [`export_safetensors`]; the paths written, in name order.
pub fn export_run(run: &Path, device: &Device) -> Result<Vec<PathBuf>, CheckpointError> {
    run_stems(run)?
        .iter()
        .map(|stem| export_safetensors(stem, device))
        .collect()
}

/// The checkpoints of the run folder `run` (or of its `models/` folder given directly); an
/// error naming the folder when it has none.
pub fn run_stems(run: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let folder = if run.join("models").is_dir() {
        run.join("models")
    } else {
        run.to_path_buf()
    };
    let stems = stems(&folder)?;
    if stems.is_empty() {
        return Err(CheckpointError::Read {
            path: folder,
            reason: "no trained models (models/<name>.json and .bpk): run an experiment that saves them, e.g. scaling, and pass its run folder".into(),
        });
    }
    Ok(stems)
}

/// Metadata key prefix of an exported model's fields.
pub const METADATA_PREFIX: &str = "attention_lab.";

/// Writes the checkpoint `stem` as `<stem>.safetensors`: every parameter under its module path
/// (`layers.0.attention.query.weight`, …) as little-endian f32, and in the header's
/// `__metadata__`, beside burn-store's own fields, `attention_lab.spec` (the [`ModelSpec`] as
/// JSON: architecture, task, seed), `attention_lab.seed`, `attention_lab.commit` (the code that
/// trained it) and `attention_lab.exported_by`. Burn's linear layers store their weight as
/// `[d_in, d_out]` (y = x·W), the transpose of PyTorch's `nn.Linear`. Returns the path written.
pub fn export_safetensors(stem: &Path, device: &Device) -> Result<PathBuf, CheckpointError> {
    use burn::store::{ModuleSnapshot, SafetensorsStore};

    let (model, spec) = load(stem, device)?;
    let path = stem.with_extension("safetensors");
    let spec_json = serde_json::to_string(&spec).expect("a model spec serialises");
    let commit = spec
        .commit
        .clone()
        .unwrap_or_else(|| "unknown (saved before checkpoints recorded their commit)".into());
    let exported_by = format!(
        "{} {} at {}",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        crate::util::provenance::commit_once()
    );
    let mut store = SafetensorsStore::from_file(&path)
        .metadata(format!("{METADATA_PREFIX}spec"), spec_json)
        .metadata(format!("{METADATA_PREFIX}seed"), spec.seed.to_string())
        .metadata(format!("{METADATA_PREFIX}commit"), commit)
        .metadata(format!("{METADATA_PREFIX}exported_by"), exported_by)
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| CheckpointError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    Ok(path)
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
