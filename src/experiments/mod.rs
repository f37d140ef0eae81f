//! The demonstrations: each one measures a claim and tests it against its own data. The
//! binaries in `experiments/` only hand their command line to [`crate::run::runner`]; [`ALL`]
//! lists them for `reproduce`.
//!
//! May use: run, output, lab, block, util.

pub mod attention_sinks;
pub mod causal_mask;
pub mod complexity;
pub mod counting;
pub mod dk_vs_dmodel;
pub mod induction_heads;
pub mod length_generalization;
pub mod logit_growth;
pub mod mqar;
pub mod mup_coord;
pub mod no_projections;
pub mod permutation;
pub mod scaling;
pub mod softmax_axis;
pub mod temperature;

use crate::run::registry::{Entry, entry};

/// Every experiment, in the order `reproduce` runs them.
pub const ALL: &[Entry] = &[
    entry::<scaling::Scaling>(),
    entry::<dk_vs_dmodel::DkVsDModel>(),
    entry::<permutation::Permutation>(),
    entry::<softmax_axis::SoftmaxAxisExperiment>(),
    entry::<no_projections::NoProjections>(),
    entry::<causal_mask::CausalMask>(),
    entry::<temperature::Temperature>(),
    entry::<logit_growth::LogitGrowth>(),
    entry::<mup_coord::MupCoord>(),
    entry::<counting::Counting>(),
    entry::<length_generalization::LengthGeneralization>(),
    entry::<attention_sinks::AttentionSinks>(),
    entry::<induction_heads::InductionHeads>(),
    entry::<mqar::Mqar>(),
    entry::<complexity::Complexity>(),
];

/// The experiment called `name` (`_` and `-` alike, any case).
pub fn find(name: &str) -> Option<Entry> {
    crate::run::registry::find(ALL, name)
}
