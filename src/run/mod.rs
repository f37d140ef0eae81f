//! How experiments are run: strict TOML configs ([`config`]), the runner every experiment shares
//! ([`runner`]), experiments as values ([`registry`]) and many of them in one job
//! ([`reproduce`]). It runs any experiment it is handed and names none of them.
//!
//! May use: output, lab, block, util.

pub mod config;
pub mod registry;
pub mod reproduce;
pub mod runner;
