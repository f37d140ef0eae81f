//! What trains and measures the block: synthetic [`tasks`], the tiny transformer ([`model`]) and
//! µP's learning rates ([`mup`]), the training loop with its probes ([`train`]), trained models
//! on disk ([`checkpoint`]) and on held-out sequences ([`evaluate`]), the measurements
//! ([`metrics`]), the memory estimate ([`footprint`]), the step-by-step walkthrough ([`trace`]),
//! the speed benchmark ([`bench`]) and the timing both it and `complexity` use ([`timing`]).
//!
//! May use: block, util.

pub mod bench;
pub mod checkpoint;
pub mod evaluate;
pub mod footprint;
pub mod metrics;
pub mod model;
pub mod mup;
pub mod tasks;
pub mod timing;
pub mod trace;
pub mod train;
