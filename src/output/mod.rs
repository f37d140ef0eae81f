//! What is written for people: run folders, `metrics.csv`, `summary.json` and `report.md`
//! ([`report`]), SVG charts ([`plot`]), the index over many runs ([`index`]), and the
//! published results over several base seeds ([`published`]). It knows files
//! and numbers, not what produced them.
//!
//! May use: util.

pub mod index;
pub mod plot;
pub mod published;
pub mod report;
