//! What is written for people: run folders, `metrics.csv`, `summary.json` and `report.md`
//! ([`report`]), SVG charts ([`plot`]), and the index over many runs ([`index`]). It knows files
//! and numbers, not what produced them.
//!
//! May use: util.

pub mod index;
pub mod plot;
pub mod report;
