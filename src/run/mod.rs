//! How experiments are run: strict TOML configs ([`config`]), the runner every experiment shares
//! ([`runner`]), experiments as values ([`registry`]) and many of them in one job
//! ([`reproduce`]), and a sweep split over processes and merged again ([`shard`]). It runs any
//! experiment it is handed and names none of them.
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
