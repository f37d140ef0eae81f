//! The claims of attention-lab, written as assertions. Each claim body runs on every device the
//! machine has (see `common`), so one test module yields `::flex`, `::ndarray` and `::wgpu` tests.

#[macro_use]
mod common;

mod block_ops;
mod bos;
mod build_features;
mod cross_backend;
mod doc_commands;
mod doc_numbers;
mod experiments_cli;
mod explore_api;
mod explore_browser;
mod fused;
mod fuzz;
mod hardening;
mod invariants;
mod lab;
mod layout;
mod linear;
mod parity;
mod properties;
mod qk_norm;
#[cfg(feature = "remote-server")]
mod remote;
mod safetensors;
mod shard;
mod sinks;
mod ssmax;
mod trace_cli;
mod training;
