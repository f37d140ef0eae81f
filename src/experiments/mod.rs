//! The demonstrations: each one measures a claim and tests it against its own data. The
//! binaries in `experiments/` only hand their command line to [`crate::runner`].

pub mod dk_vs_dmodel;
pub mod scaling;
pub mod sweep;

use std::path::Path;

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
    /// Runs it as its binary does.
    pub run: fn(&ExperimentArgs) -> Result<RunOutcome, LabError>,
}

const fn entry<E: Experiment>() -> Entry {
    Entry {
        name: E::NAME,
        title: E::TITLE,
        check: check::<E>,
        run: runner::run::<E>,
    }
}

fn check<E: Experiment>(path: &Path, overrides: &[String]) -> Result<(), ConfigError> {
    load::<E::Config>(path, overrides).map(|_| ())
}

/// Every experiment, in the order `reproduce` runs them.
pub const ALL: [Entry; 2] = [
    entry::<scaling::Scaling>(),
    entry::<dk_vs_dmodel::DkVsDModel>(),
];

/// The experiment called `name` (`_` and `-` alike, any case).
pub fn find(name: &str) -> Option<Entry> {
    let wanted = crate::cli::normalize_name(name);
    ALL.iter()
        .copied()
        .find(|e| crate::cli::normalize_name(e.name) == wanted)
}
