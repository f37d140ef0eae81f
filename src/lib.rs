//! attention-lab: every claim people make about self-attention, as an experiment you can run and
//! measure.
//!
//! The centre is [`attention::Attention`], one training-capable block written once against Burn's
//! runtime [`burn::prelude::Device`], so the same code runs on flex, ndarray, wgpu and CUDA. Around
//! it: the backend switch, the seed pages' worked example, a benchmark, and the lab: synthetic
//! tasks, a tiny transformer, a training loop with probes, TOML configs, result writers, and the
//! experiments that test each claim.

pub mod attention;
pub mod bench;
pub mod cli;
pub mod config;
pub mod device;
pub mod experiments;
pub mod index;
pub mod mask;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod positional;
pub mod report;
pub mod reproduce;
pub mod rng;
pub mod runner;
pub mod scale;
pub mod softmax;
pub mod tasks;
pub mod trace;
pub mod train;
