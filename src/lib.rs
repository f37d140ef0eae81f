//! attention-lab: every claim people make about self-attention, as an experiment you can run and
//! measure.
//!
//! The centre is [`attention::Attention`], one training-capable block written once against Burn's
//! runtime [`burn::prelude::Device`], so the same code runs on flex, ndarray, wgpu and CUDA. Around
//! it: the backend switch, the seed pages' worked example, and a benchmark.

pub mod attention;
pub mod bench;
pub mod cli;
pub mod device;
pub mod mask;
pub mod positional;
pub mod rng;
pub mod scale;
pub mod softmax;
pub mod trace;
