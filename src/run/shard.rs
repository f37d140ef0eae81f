//! Sweeps split over processes that never talk: a cluster's job array (Slurm's `--array`, a
//! Kubernetes indexed Job) or a plain shell loop runs `--shard I/N` N times, and a merge turns
//! what they stored into the run folder one unsharded run would have written.
//!
//! The unit of work is one training run: one (configuration, seed) pair, as every experiment
//! asks for it through [`Units::train`]. An experiment asks for its units in the same order
//! every time, so the k-th unit is the same everywhere and shard I of N trains the units with
//! k mod N = I ([`Shard::owns`]). The units of other shards get a stand-in (one real step) so
//! that the experiment's code runs unchanged; what it computes from stand-ins is thrown away, and
//! a shard writes only its own units:
//!
//! ```text
//! results/<experiment>/<sweep-id>/shard-I-of-N/
//!     shard.json            status, the units stored, the unit count
//!     config.toml           the resolved config, identical in every shard
//!     units/000007.bpk      unit 7's trained parameters (see crate::lab::checkpoint)
//!     units/000007.json     its model spec
//!     units/000007.run.json its training records, bit-exact (see crate::util::exact)
//! ```
//!
//! The merge runs the experiment once more, reading every unit back instead of training it
//! ([`Units::Merge`]): the analysis is the same code on the same numbers, so the metrics, plots
//! and verdicts are those of one unsharded run. A shard that stopped (a pre-empted job) is
//! resumed by running it again: the units it stored are read back, not retrained.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::lab::checkpoint::{self, ModelSpec};
use crate::lab::tasks::Task;
use crate::lab::train::{Divergence, StepRecord, TrainConfig, TrainError, TrainJob, TrainRun};
use crate::output::report::{RunStatus, WriteError, write_atomic};
use crate::util::rng::stable_hash;

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// Shard counts above this are refused: a typo, not a cluster.
pub const MAX_SHARDS: usize = 10_000;

impl Shard {
    /// `I/N` (0 ≤ I < N), or `auto` for Slurm's job-array variables (see [`Shard::from_env`]).
    pub fn parse(text: &str) -> Result<Self, ShardError> {
        if text.trim().eq_ignore_ascii_case("auto") {
            return Self::from_env(|name| std::env::var(name).ok());
        }
        let bad = |reason: &str| ShardError::Arg {
            given: text.to_string(),
            reason: reason.to_string(),
        };
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| bad("expected I/N, such as 0/4 (0-based), or auto"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| bad("I must be a whole number, 0-based"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| bad("N must be a whole number"))?;
        Self::checked(index, count).map_err(|reason| bad(&reason))
    }

    /// From Slurm's job-array variables: `SLURM_ARRAY_TASK_COUNT` shards, and this task's place
    /// among them, (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN`) / `SLURM_ARRAY_TASK_STEP`, so
    /// that `--array=1-4` and `--array=0-6:2` work as well as `--array=0-3`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, ShardError> {
        let read = |name: &str, default: Option<usize>| -> Result<usize, ShardError> {
            match var(name) {
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| ShardError::Slurm(format!("{name}={v:?} is not a whole number"))),
                None => default.ok_or_else(|| {
                    ShardError::Slurm(format!(
                        "{name} is not set: --shard auto works inside a Slurm job array \
                         (sbatch --array); elsewhere give --shard I/N"
                    ))
                }),
            }
        };
        let id = read("SLURM_ARRAY_TASK_ID", None)?;
        let count = read("SLURM_ARRAY_TASK_COUNT", None)?;
        let min = read("SLURM_ARRAY_TASK_MIN", Some(0))?;
        let step = read("SLURM_ARRAY_TASK_STEP", Some(1))?.max(1);
        if id < min || (id - min) % step != 0 {
            return Err(ShardError::Slurm(format!(
                "SLURM_ARRAY_TASK_ID={id} is not in the array {min}, {}, … (step {step})",
                min + step
            )));
        }
        Self::checked((id - min) / step, count).map_err(ShardError::Slurm)
    }

    fn checked(index: usize, count: usize) -> Result<Self, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!("N = {count}: expected 1 to {MAX_SHARDS} shards"));
        }
        if index >= count {
            return Err(format!(
                "I = {index} is not below N = {count} (shards are numbered 0 to {})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// Whether this shard trains unit `unit`.
    pub fn owns(&self, unit: usize) -> bool {
        unit % self.count == self.index
    }

    /// `shard-I-of-N`.
    pub fn folder(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }

    /// The shard a folder name such as `shard-2-of-8` names, if it names one.
    pub fn from_folder(name: &str) -> Option<Self> {
        let (i, n) = name.strip_prefix("shard-")?.split_once("-of-")?;
        let shard = Self::checked(i.parse().ok()?, n.parse().ok()?).ok()?;
        // `shard-01-of-3` would be a second name for shard 1.
        (shard.folder() == name).then_some(shard)
    }
}

/// Checks a sweep id: it becomes a folder name that every shard must spell the same way.
pub fn check_sweep_id(id: &str) -> Result<(), ShardError> {
    let bad = |reason: &str| ShardError::SweepId {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    if id.is_empty() || id.len() > 100 {
        return Err(bad("expected 1 to 100 characters"));
    }
    if id.starts_with('.') || id.starts_with('-') {
        return Err(bad("it may not start with '.' or '-'"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(&format!(
            "'{c}' is not allowed: use letters, digits, '.', '_' and '-'"
        )));
    }
    if id.starts_with("shard-") {
        return Err(bad(
            "it may not start with 'shard-', which names a shard's folder",
        ));
    }
    Ok(())
}

/// A sharded run or a merge could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("--shard {given}: {reason}")]
    Arg { given: String, reason: String },
    #[error("--shard auto: {0}")]
    Slurm(String),
    #[error("--sweep-id {id:?}: {reason}")]
    SweepId { id: String, reason: String },
    #[error(
        "--shard needs --sweep-id NAME, the same name for every shard, so that they write to one sweep folder"
    )]
    NeedsSweepId,
    #[error("--sweep-id only applies with --shard I/N")]
    SweepIdAlone,
    #[error("{}: {reason}", dir.display())]
    Sweep { dir: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Unit { path: PathBuf, reason: String },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// `shard.json`: what a shard did, for the merge and for a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub experiment: String,
    pub sweep_id: String,
    pub shard: usize,
    pub shards: usize,
    pub status: RunStatus,
    pub backend: String,
    pub started: String,
    /// The units the experiment asked for in all (known once the shard is complete).
    pub units_total: usize,
    /// This shard's units on disk.
    pub units: Vec<usize>,
    /// Of those, how many this attempt trained (the rest were read back from an earlier one).
    pub trained: usize,
    pub wall_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Manifest {
    /// Reads `<shard folder>/shard.json`.
    pub fn read(folder: &Path) -> Result<Self, ShardError> {
        let path = folder.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| ShardError::Unit {
            path: path.clone(),
            reason: format!("cannot read it: {e}"),
        })?;
        serde_json::from_str(&text).map_err(|e| ShardError::Unit {
            path,
            reason: format!("not a shard manifest: {e}"),
        })
    }

    /// Writes `<shard folder>/shard.json` atomically.
    pub fn write(&self, folder: &Path) -> Result<(), ShardError> {
        let json = serde_json::to_vec_pretty(self).expect("a manifest serialises");
        write_atomic(&folder.join(MANIFEST), &json)?;
        Ok(())
    }
}

/// A shard folder's manifest file.
pub const MANIFEST: &str = "shard.json";

/// What identifies a unit, so that a stored one is never read back as another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitKey {
    pub part: String,
    pub label: String,
    pub seed: u64,
    /// A hash of everything that shapes the run (model, task, training config): a shard run
    /// with another config, or another version of the code, does not match.
    pub fingerprint: String,
}

impl UnitKey {
    /// The key of `part`/`label`/`seed`, with `shape` describing everything else that decides the
    /// run.
    pub fn new(part: &str, label: &str, seed: u64, shape: &str) -> Self {
        Self {
            part: part.into(),
            label: label.into(),
            seed,
            fingerprint: format!("{:016x}", stable_hash(shape.bytes())),
        }
    }

    /// The key of `job` trained as `part`/`label`.
    pub fn of(part: &str, label: &str, job: &TrainJob<'_>) -> Self {
        // Everything that decides a run besides its names and seed.
        let shape = format!("{:?}|{:?}|{:?}", job.model, job.tasks, job.config);
        Self::new(part, label, job.seed, &shape)
    }
}

impl std::fmt::Display for UnitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} seed {} ({})",
            self.part, self.label, self.seed, self.fingerprint
        )
    }
}

/// `units/<unit>.run.json`: a training run's records, exact.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRun {
    unit: usize,
    key: UnitKey,
    #[serde(with = "crate::util::exact")]
    seconds: f64,
    divergence: Option<Divergence>,
    records: Vec<StepRecord>,
}

/// What to do for the next unit an experiment asks for.
enum Unit {
    /// Train it here.
    Train,
    /// Read back from a shard.
    Stored(Box<TrainRun>),
    /// Another shard trains it: stand in for it.
    Elsewhere,
}

/// Which units this process trains, and where they are kept.
#[derive(Debug, Default)]
pub enum Units {
    /// Every unit is trained here: an ordinary run.
    #[default]
    All,
    /// Shard `shard`'s units are trained (or read back, on a resumed shard) and stored in
    /// `folder`.
    Shard {
        shard: Shard,
        folder: PathBuf,
        next: usize,
        stored: Vec<usize>,
        trained: usize,
    },
    /// Every unit is read back from a sweep's shards (see [`open_sweep`]).
    Merge {
        units: BTreeMap<usize, PathBuf>,
        next: usize,
    },
}

impl Units {
    /// Shard `shard`'s units, stored in (and on a resumed shard, read back from) `folder`.
    pub fn shard(shard: Shard, folder: PathBuf) -> Self {
        Self::Shard {
            shard,
            folder,
            next: 0,
            stored: Vec::new(),
            trained: 0,
        }
    }

    /// One training run as the sweep has it: read back from a shard, stood in for when another
    /// shard trains it, or trained here (and stored, on a shard). `advance` hears of every step
    /// the run was asked for, whichever way it went, so that a progress bar ends full.
    pub fn train<E>(
        &mut self,
        key: &UnitKey,
        job: &TrainJob<'_>,
        device: &Device,
        advance: &dyn Fn(u64),
    ) -> Result<TrainRun, E>
    where
        E: From<ShardError> + From<TrainError>,
    {
        let steps = job.config.steps as u64;
        match self.begin(key, device)? {
            (_, Unit::Stored(run)) => {
                advance(steps);
                Ok(*run)
            }
            (_, Unit::Elsewhere) => {
                advance(steps);
                Ok(stand_in(job, device)?)
            }
            (unit, Unit::Train) => {
                let mut done = 0u64;
                let run = job.run(device, &mut |_| {
                    done += 1;
                    advance(1);
                })?;
                // A run that stopped early still owes the bar its remaining steps.
                advance(steps - done);
                self.keep(unit, key, &unit_spec(job), &run)?;
                Ok(run)
            }
        }
    }

    /// Numbers the next unit, `key`, and says what to do for it. A stored unit is read onto
    /// `device` (the autodiff device, where a freshly trained model would be).
    fn begin(&mut self, key: &UnitKey, device: &Device) -> Result<(usize, Unit), ShardError> {
        match self {
            Self::All => Ok((0, Unit::Train)),
            Self::Shard {
                shard,
                folder,
                next,
                stored,
                ..
            } => {
                let unit = *next;
                *next += 1;
                if !shard.owns(unit) {
                    return Ok((unit, Unit::Elsewhere));
                }
                let stem = unit_stem(folder, unit);
                if !stem.with_extension("run.json").is_file() {
                    return Ok((unit, Unit::Train));
                }
                let run = read_unit(&stem, unit, key, device)?;
                stored.push(unit);
                Ok((unit, Unit::Stored(Box::new(run))))
            }
            Self::Merge { units, next } => {
                let unit = *next;
                *next += 1;
                let stem = units.get(&unit).ok_or_else(|| ShardError::Unit {
                    path: PathBuf::from(format!("unit {unit}")),
                    reason: format!(
                        "the experiment asks for unit {unit} ({key}), which no shard holds: \
                         the shards were run with another config or version"
                    ),
                })?;
                Ok((
                    unit,
                    Unit::Stored(Box::new(read_unit(stem, unit, key, device)?)),
                ))
            }
        }
    }

    /// Stores unit `unit`, just trained, if this process is a shard; a no-op otherwise.
    fn keep(
        &mut self,
        unit: usize,
        key: &UnitKey,
        spec: &ModelSpec,
        run: &TrainRun,
    ) -> Result<(), ShardError> {
        let Self::Shard {
            folder,
            stored,
            trained,
            ..
        } = self
        else {
            return Ok(());
        };
        let stem = unit_stem(folder, unit);
        let units = folder.join("units");
        std::fs::create_dir_all(&units).map_err(|e| WriteError {
            path: units.clone(),
            reason: e.to_string(),
        })?;
        let (record, spec) =
            checkpoint::to_bytes(&run.model, spec).map_err(|e| ShardError::Unit {
                path: stem.clone(),
                reason: e.to_string(),
            })?;
        write_atomic(&stem.with_extension("bpk"), &record)?;
        write_atomic(&stem.with_extension("json"), &spec)?;
        let stored_run = StoredRun {
            unit,
            key: key.clone(),
            seconds: run.seconds,
            divergence: run.divergence.clone(),
            records: run.records.clone(),
        };
        let json = serde_json::to_vec(&stored_run).expect("a stored run serialises");
        // Last: a unit counts as stored once its records are there, so a shard killed halfway
        // through writing one trains it again on resuming.
        write_atomic(&stem.with_extension("run.json"), &json)?;
        stored.push(unit);
        *trained += 1;
        Ok(())
    }

    /// How many units the experiment asked for so far.
    pub fn asked(&self) -> usize {
        match self {
            Self::All => 0,
            Self::Shard { next, .. } | Self::Merge { next, .. } => *next,
        }
    }
}

/// What a shard puts in place of a training run another shard trains (see
/// [`crate::run::shard`]): one real step, so that every number is finite and of the right shape,
/// its record repeated at every step the full run would record, and the model after that step.
/// Nothing computed from it is kept.
fn stand_in(job: &TrainJob<'_>, device: &Device) -> Result<TrainRun, TrainError> {
    let config = job.config;
    let one_step = TrainConfig {
        steps: 1,
        ..config.clone()
    };
    let mut run = TrainJob {
        config: &one_step,
        ..*job
    }
    .run(device, &mut |_| {})?;
    if let Some(first) = run.records.first().cloned() {
        let every = config.log_every.max(1);
        run.records = (0..config.steps)
            .filter(|s| s.is_multiple_of(every) || s + 1 == config.steps)
            .map(|step| StepRecord {
                step,
                ..first.clone()
            })
            .collect();
    }
    Ok(run)
}

/// The spec a unit's model is stored with: built for the longest of `tasks`.
fn unit_spec(job: &TrainJob<'_>) -> ModelSpec {
    let longest = job.tasks.iter().map(Task::seq_len).max().unwrap_or(0);
    let mut spec = ModelSpec::new(job.model, &job.tasks[0], job.seed);
    spec.max_len = longest;
    spec
}

/// `<folder>/units/000007`, a unit's file stem.
fn unit_stem(folder: &Path, unit: usize) -> PathBuf {
    folder.join("units").join(format!("{unit:06}"))
}

/// Reads unit `unit` from `stem`, checking that it is the unit `key` the experiment asks for.
fn read_unit(
    stem: &Path,
    unit: usize,
    key: &UnitKey,
    device: &Device,
) -> Result<TrainRun, ShardError> {
    let path = stem.with_extension("run.json");
    let bad = |reason: String| ShardError::Unit {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let stored: StoredRun =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a stored unit: {e}")))?;
    if stored.unit != unit || stored.key != *key {
        return Err(bad(format!(
            "holds unit {} = {}, but the experiment asks for unit {unit} = {key}: the shards \
             were run with another config or another version of attention-lab; use a new \
             --sweep-id",
            stored.unit, stored.key
        )));
    }
    let (model, _) = checkpoint::load(stem, device).map_err(|e| bad(e.to_string()))?;
    Ok(TrainRun {
        records: stored.records,
        divergence: stored.divergence,
        seconds: stored.seconds,
        model,
    })
}

/// A sweep folder checked for merging: every shard there, complete, on one config.
#[derive(Debug)]
pub struct Sweep {
    pub dir: PathBuf,
    pub sweep_id: String,
    pub experiment: String,
    pub shards: usize,
    /// `config.toml` of shard 0 (all are identical).
    pub config: PathBuf,
    pub backend: String,
    /// Each shard's wall time, in shard order.
    pub wall_seconds: Vec<f64>,
    /// Every unit's stem, by unit number.
    pub units: BTreeMap<usize, PathBuf>,
}

/// Checks the sweep folder `dir` before anything is written: its shards must be exactly
/// `shard-0-of-N` … `shard-(N−1)-of-N`, each complete, all of one experiment and one config,
/// together holding every unit once. The error names the first shard that is missing, doubled,
/// unfinished or different.
pub fn open_sweep(dir: &Path) -> Result<Sweep, ShardError> {
    let bad = |reason: String| ShardError::Sweep {
        dir: dir.to_path_buf(),
        reason,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut folders = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && name.starts_with("shard-") {
            let shard = Shard::from_folder(&name).ok_or_else(|| {
                bad(format!(
                    "{name} is not a shard folder name (shard-I-of-N); move it out of the sweep"
                ))
            })?;
            folders.push((shard, entry.path()));
        }
    }
    folders.sort_by_key(|(s, _)| (s.count, s.index));
    let Some((first, _)) = folders.first() else {
        return Err(bad(
            "no shard folders (shard-I-of-N) here; give results/<experiment>/<sweep-id>".into(),
        ));
    };
    let count = first.count;
    if let Some((other, _)) = folders.iter().find(|(s, _)| s.count != count) {
        return Err(bad(format!(
            "{} and {} disagree on the number of shards; a sweep has one N",
            first.folder(),
            other.folder()
        )));
    }
    if dir.join("summary.json").is_file() {
        return Err(bad(
            "already merged (it holds summary.json); delete the merged files (everything but the \
             shard folders) to merge again"
                .into(),
        ));
    }
    for index in 0..count {
        if !folders.iter().any(|(s, _)| s.index == index) {
            let missing = Shard { index, count }.folder();
            return Err(bad(format!(
                "{missing} is missing: run it with --shard {index}/{count} and the same \
                 --sweep-id before merging"
            )));
        }
    }
    let mut sweep: Option<Sweep> = None;
    let mut config_text = String::new();
    let mut units_total = 0;
    for (shard, folder) in &folders {
        let name = shard.folder();
        let manifest = Manifest::read(folder)?;
        if (manifest.shard, manifest.shards) != (shard.index, shard.count) {
            return Err(bad(format!(
                "{name} holds the manifest of shard {}/{} (a copied folder?): shard {} would \
                 be there twice",
                manifest.shard, manifest.shards, manifest.shard
            )));
        }
        if manifest.status != RunStatus::Complete {
            return Err(bad(format!(
                "{name} is {}{}: run it again with --shard {}/{} (it resumes) before merging",
                manifest.status,
                manifest
                    .error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                shard.index,
                shard.count
            )));
        }
        let config_path = folder.join("config.toml");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| bad(format!("cannot read {name}/config.toml: {e}")))?;
        match &mut sweep {
            None => {
                config_text = text;
                units_total = manifest.units_total;
                sweep = Some(Sweep {
                    dir: dir.to_path_buf(),
                    sweep_id: manifest.sweep_id.clone(),
                    experiment: manifest.experiment.clone(),
                    shards: count,
                    config: config_path,
                    backend: manifest.backend.clone(),
                    wall_seconds: Vec::new(),
                    units: BTreeMap::new(),
                });
            }
            Some(s) => {
                if manifest.experiment != s.experiment || manifest.sweep_id != s.sweep_id {
                    return Err(bad(format!(
                        "{name} belongs to {}/{}, shard 0 to {}/{}",
                        manifest.experiment, manifest.sweep_id, s.experiment, s.sweep_id
                    )));
                }
                if text != config_text {
                    return Err(bad(format!(
                        "{name}/config.toml differs from shard-0-of-{count}/config.toml: the \
                         shards ran different configs"
                    )));
                }
                if manifest.units_total != units_total {
                    return Err(bad(format!(
                        "{name} counted {} units, shard 0 {units_total}: the shards ran \
                         different versions of attention-lab",
                        manifest.units_total
                    )));
                }
            }
        }
        let s = sweep.as_mut().expect("set above");
        s.wall_seconds.push(manifest.wall_seconds);
        for &unit in &manifest.units {
            if !shard.owns(unit) || unit >= units_total {
                return Err(bad(format!(
                    "{name} lists unit {unit}, which is not one of its units"
                )));
            }
            let stem = unit_stem(folder, unit);
            if !stem.with_extension("run.json").is_file() {
                return Err(bad(format!(
                    "{name} lists unit {unit}, but {} is missing",
                    stem.with_extension("run.json").display()
                )));
            }
            if s.units.insert(unit, stem).is_some() {
                return Err(bad(format!("{name} lists unit {unit} twice")));
            }
        }
    }
    let sweep = sweep.expect("at least one shard");
    if let Some(missing) = (0..units_total).find(|u| !sweep.units.contains_key(u)) {
        let owner = Shard {
            index: missing % count,
            count,
        };
        return Err(bad(format!(
            "unit {missing} is missing from {}: run that shard again before merging",
            owner.folder()
        )));
    }
    Ok(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_own_every_unit_once() {
        assert_eq!(Shard::parse("2/5").unwrap(), Shard { index: 2, count: 5 });
        for bad in ["5/5", "1", "-1/3", "a/3", "0/0", "1/2/3", "0/100000"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for unit in 0..20 {
            assert_eq!(shards.iter().filter(|s| s.owns(unit)).count(), 1);
        }
        assert_eq!(
            Shard::from_folder("shard-2-of-8"),
            Some(Shard { index: 2, count: 8 })
        );
        for bad in [
            "shard-02-of-8",
            "shard-8-of-8",
            "shard-x-of-8",
            "shard-1-of-",
        ] {
            assert_eq!(Shard::from_folder(bad), None, "{bad}");
        }
    }

    #[test]
    fn slurm_arrays_map_to_shards_whatever_their_numbering() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        }
        let plain = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(
            Shard::from_env(env(&plain)).unwrap(),
            Shard { index: 2, count: 4 }
        );
        let from_one = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ];
        assert_eq!(
            Shard::from_env(env(&from_one)).unwrap(),
            Shard { index: 3, count: 4 }
        );
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "6"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert_eq!(
            Shard::from_env(env(&stepped)).unwrap(),
            Shard { index: 3, count: 4 }
        );
        let outside = Shard::from_env(env(&[])).unwrap_err().to_string();
        assert!(
            outside.contains("SLURM_ARRAY_TASK_ID is not set"),
            "{outside}"
        );
        let beyond = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert!(Shard::from_env(env(&beyond)).is_err());
        let garbled = [
            ("SLURM_ARRAY_TASK_ID", "two"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        let garbled = Shard::from_env(env(&garbled)).unwrap_err().to_string();
        assert!(
            garbled.contains("\"two\" is not a whole number"),
            "{garbled}"
        );
    }

    #[test]
    fn sweep_ids_are_safe_folder_names() {
        for good in ["lr-sweep", "2026.11.24_a", "x"] {
            check_sweep_id(good).unwrap();
        }
        for bad in [
            "",
            "..",
            "../up",
            "a/b",
            "a b",
            "-flag",
            "shard-0-of-2",
            ".hidden",
        ] {
            assert!(check_sweep_id(bad).is_err(), "{bad:?}");
        }
    }
}
