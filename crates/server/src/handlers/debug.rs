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
#[serde(expecting = "an object with a document `uri`")]
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
    let mut v = scheduler.session.stats.snapshot();
    v["model"] = Value::from(scheduler.model.state().label());
    v["liveTasks"] = Value::from(scheduler.session.tasks.live_count());
    v["shed"] = Value::from(scheduler.session.turns.shed());
    let (documents, bytes) = scheduler.session.document_totals();
    v["documents"] = Value::from(documents);
    v["documentBytes"] = Value::from(bytes);
    Ok(v)
}
