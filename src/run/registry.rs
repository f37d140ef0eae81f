//! Experiments as values: an [`Entry`] holds one experiment's names, its config check and the
//! ways to run it, so that `reproduce` can run any list of them without naming a single one.
//! The list itself (`experiments::ALL`) lives with the experiments, one layer up.

use std::path::Path;

use indicatif::ProgressBar;

use crate::output::report::RunOutcome;
use crate::run::config::{ConfigError, load};
use crate::run::experiment::{Experiment, RunError};
use crate::run::runner::{self, ExperimentArgs, Plan, RunOptions};
use crate::run::shard::Sweep;

/// One experiment as a value: its names, a config check and a way to run it.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Binary, config and results-folder name.
    pub name: &'static str,
    /// The claim in one line.
    pub title: &'static str,
    /// [`Experiment::TIMED`]: it runs alone.
    pub timed: bool,
    /// Loads and validates a config file for this experiment (with `--set` overrides) and says
    /// what its run will ask for: progress units, backend, memory.
    pub plan: fn(&Path, &[String]) -> Result<Plan, ConfigError>,
    /// Runs it as its binary does.
    pub run: fn(&ExperimentArgs) -> Result<RunOutcome, RunError>,
    /// Runs it on a progress bar shared with other runs, without printing the outcome.
    pub run_on: fn(&ExperimentArgs, &ProgressBar) -> Result<RunOutcome, RunError>,
    /// Merges a checked sweep of its shards into one run folder (see [`runner::merge`]).
    pub merge: fn(&Sweep, &RunOptions, &ProgressBar) -> Result<RunOutcome, RunError>,
}

/// The entry of experiment `E`.
pub const fn entry<E: Experiment>() -> Entry {
    Entry {
        name: E::NAME,
        title: E::TITLE,
        timed: E::TIMED,
        plan: plan::<E>,
        run: runner::run::<E>,
        run_on: run_on::<E>,
        merge: runner::merge::<E>,
    }
}

fn plan<E: Experiment>(path: &Path, overrides: &[String]) -> Result<Plan, ConfigError> {
    runner::plan::<E>(&load::<E::Config>(path, overrides)?)
}

fn run_on<E: Experiment>(
    args: &ExperimentArgs,
    progress: &ProgressBar,
) -> Result<RunOutcome, RunError> {
    let loaded = runner::load_config::<E>(args)?;
    runner::run_loaded::<E>(&loaded, &args.run, progress)
}

/// The entry in `all` called `name` (`_` and `-` alike, any case).
pub fn find(all: &[Entry], name: &str) -> Option<Entry> {
    let wanted = crate::util::cli::normalize_name(name);
    all.iter()
        .copied()
        .find(|e| crate::util::cli::normalize_name(e.name) == wanted)
}
