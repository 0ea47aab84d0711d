//! Debugging aids, not part of any editor integration:
//! - `copilot/debugDocument {uri}`: the text, version and line count the server holds
//!   (the harness checks it equals the client's after random edits);
//! - `copilot/debugStats`: request counters and the model's state (tests, benchmarks).

use serde::Deserialize;
use serde_json::{json, Value};
use tower_lsp_server::jsonrpc::Result;
use tower_lsp_server::ls_types::Uri;

use crate::scheduler::Scheduler;

#[derive(Debug, Deserialize)]
pub struct DocumentParams {
    pub uri: Uri,
}

pub async fn document(scheduler: &Scheduler, p: DocumentParams) -> Result<Value> {
    let session = &scheduler.session;
    let encoding = session.encoding().as_str();
    Ok(session
        .with_document(&p.uri, |d| {
            json!({
                "uri": p.uri.as_str(),
                "version": d.version(),
                "languageId": d.language_id(),
                "lineCount": d.line_count(),
                "encoding": encoding,
                "text": d.text(),
            })
        })
        .unwrap_or(Value::Null))
}

pub async fn stats(scheduler: &Scheduler) -> Result<Value> {
    let service = &scheduler.service;
    let mut v = serde_json::to_value(service.stats.snapshot()).unwrap_or(Value::Null);
    v["model"] = Value::from(service.host.state().label());
    v["liveTasks"] = Value::from(service.tasks.live_count());
    Ok(v)
}
