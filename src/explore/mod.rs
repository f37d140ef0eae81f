//! The attention explorer: a local web page over the real block. Every number the page shows is
//! computed by [`crate::block`] on the backend the server was started with; the page only draws.
//!
//! - [`api`]: the JSON API's requests and answers, as plain functions (no HTTP), sharing `trace`'s
//!   code path;
//! - [`trained`]: a run folder's trained models, and their attention on examples of their task;
//! - [`page`]: the page itself (maud, with its script and style embedded in the binary);
//! - [`server`]: the HTTP server (axum on tokio) that ties them together.
//!
//! May use: lab, block, util.

pub mod api;
pub mod page;
pub mod server;
pub mod trained;
