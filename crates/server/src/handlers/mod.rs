//! One file per LSP method (ruff_server style). Handlers translate between LSP types and the
//! scheduler; the document notifications are applied by the gate, not here.

pub mod completion;
pub mod configuration;
pub mod debug;
pub mod initialize;
pub mod inline_completion;
pub mod outcome;
pub mod text_document;
pub mod workspace;

use serde::Deserialize;

/// A request's params with the arrival number the gate stamped on them.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object of request params")]
pub struct Stamped<P> {
    #[serde(flatten)]
    pub params: P,
    #[serde(rename = "$copilotArrival", default)]
    pub arrival: Option<u64>,
}
