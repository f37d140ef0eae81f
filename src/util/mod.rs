//! Small pieces every layer shares: the backend switch ([`device`]), the host RNG that makes a
//! seed mean the same weights on every backend ([`rng`]), the binaries' error ending and name
//! matching ([`cli`]), the counting allocator behind host-memory measurements ([`memory`]), and
//! what keeps a run whole at the edges: Ctrl-C as a request ([`interrupt`]), a panic as an error
//! ([`guard`]), and the machine's memory and the caps on absurd values ([`limits`]); floats that
//! survive a JSON file bit for bit ([`exact`]); the commit, CPU and toolchain a result came from
//! ([`provenance`]); the cores as a budget that every training run in the process shares
//! ([`cores`]).
//!
//! May use: nothing else in the crate.

pub mod cli;
pub mod cores;
pub mod device;
pub mod exact;
pub mod guard;
pub mod interrupt;
pub mod limits;
pub mod memory;
pub mod provenance;
pub mod rng;
