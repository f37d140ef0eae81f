//! The demonstrations: each one measures a claim and tests it against its own data. The
//! binaries in `experiments/` only hand their command line to [`crate::runner`].

pub mod causal_mask;
pub mod complexity;
pub mod dk_vs_dmodel;
pub mod no_projections;
pub mod permutation;
pub mod scaling;
pub mod softmax_axis;
pub mod sweep;
pub mod temperature;

use std::path::Path;

use indicatif::ProgressBar;

use crate::config::{ConfigError, load};
use crate::runner::{self, Experiment, ExperimentArgs, LabError, RunOutcome};

/// One experiment as a value: its names, a config check and a way to run it.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Binary, config and results-folder name.
    pub name: &'static str,
    /// The claim in one line.
    pub title: &'static str,
    /// Loads and validates a config file for this experiment (with `--set` overrides).
    pub check: fn(&Path, &[String]) -> Result<(), ConfigError>,
    /// Loads a config and says how many units of progress its run will report.
    pub work: fn(&Path, &[String]) -> Result<u64, ConfigError>,
    /// Runs it as its binary does.
    pub run: fn(&ExperimentArgs) -> Result<RunOutcome, LabError>,
    /// Runs it on a progress bar shared with other runs, without printing the outcome.
    pub run_on: fn(&ExperimentArgs, &ProgressBar) -> Result<RunOutcome, LabError>,
}

const fn entry<E: Experiment>() -> Entry {
    Entry {
        name: E::NAME,
        title: E::TITLE,
        check: check::<E>,
        work: work::<E>,
        run: runner::run::<E>,
        run_on: run_on::<E>,
    }
}

fn check<E: Experiment>(path: &Path, overrides: &[String]) -> Result<(), ConfigError> {
    work::<E>(path, overrides).map(|_| ())
}

fn work<E: Experiment>(path: &Path, overrides: &[String]) -> Result<u64, ConfigError> {
    load::<E::Config>(path, overrides).map(|l| E::work(&l.config))
}

fn run_on<E: Experiment>(
    args: &ExperimentArgs,
    progress: &ProgressBar,
) -> Result<RunOutcome, LabError> {
    let loaded = runner::load_config::<E>(args)?;
    runner::run_loaded::<E>(&loaded, &args.run.out, progress)
}

/// Every experiment, in the order `reproduce` runs them.
pub const ALL: [Entry; 8] = [
    entry::<scaling::Scaling>(),
    entry::<dk_vs_dmodel::DkVsDModel>(),
    entry::<permutation::Permutation>(),
    entry::<softmax_axis::SoftmaxAxisExperiment>(),
    entry::<no_projections::NoProjections>(),
    entry::<causal_mask::CausalMask>(),
    entry::<temperature::Temperature>(),
    entry::<complexity::Complexity>(),
];

/// The experiment called `name` (`_` and `-` alike, any case).
pub fn find(name: &str) -> Option<Entry> {
    let wanted = crate::cli::normalize_name(name);
    ALL.iter()
        .copied()
        .find(|e| crate::cli::normalize_name(e.name) == wanted)
}
