//! attention-lab: every claim people make about self-attention, as an experiment you can run and
//! measure.
//!
//! The centre is [`Attention`], one training-capable block written once against Burn's runtime
//! [`burn::prelude::Device`], so the same code runs on flex, ndarray, wgpu and CUDA. Around it,
//! in layers that each use only the ones listed after them:
//!
//! - [`experiments`]: the demonstrations, one claim each;
//! - [`explore`]: the explorer, a local web page and JSON API over the block;
//! - [`run`]: configs, the shared runner, `reproduce`;
//! - [`output`]: run folders, reports, plots, the index;
//! - [`lab`]: tasks, the tiny transformer, training with probes, metrics, `trace`, `bench`;
//! - [`block`]: the attention block and its parts;
//! - [`util`]: the backend switch, the host RNG, the CLI ending, the counting allocator.
//!
//! `tests/claims/layout.rs` reads every `crate::` path and keeps it that way.

pub mod block;
pub mod experiments;
pub mod explore;
pub mod lab;
pub mod output;
pub mod run;
pub mod util;

pub use block::attention::{
    Attention, AttentionConfig, AttentionConfigError, AttentionInput, AttentionOutput,
};
pub use block::positional::PositionalKind;
pub use block::scale::ScoreScale;
pub use block::softmax::SoftmaxAxis;
pub use util::device::{BackendError, BackendKind};
