//! How experiments are run: what an experiment sees ([`experiment`]: the trait, the notebook it
//! measures into, its error), strict TOML configs ([`config`]), the runner every experiment shares
//! ([`runner`]), training over seeds the way every training experiment does it ([`training`]),
//! experiments as values ([`registry`]) and many of them in one job ([`reproduce`]), a sweep split
//! over processes and merged again ([`shard`]), and the benchmark's tables ([`bench`]). It runs
//! any experiment it is handed and names none of them.
//!
//! May use: output, lab, block, util.

pub mod bench;
pub mod config;
pub mod experiment;
pub mod registry;
pub mod reproduce;
pub mod runner;
pub mod shard;
pub mod training;
