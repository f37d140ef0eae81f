//! Small pieces every layer shares: the backend switch ([`device`]), the host RNG that makes a
//! seed mean the same weights on every backend ([`rng`]), the binaries' error ending and name
//! matching ([`cli`]), and the counting allocator behind host-memory measurements ([`memory`]).
//!
//! May use: nothing else in the crate.

pub mod cli;
pub mod device;
pub mod memory;
pub mod rng;
