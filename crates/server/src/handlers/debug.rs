//! Debugging aids, not part of any editor integration:
//! - `copilot/debugDocument {uri}`: the text, version and line count the server holds
//!   (the harness checks it equals the client's after random edits);
//! - `copilot/debugStats`: request counters and the model's state (tests, benchmarks);
//! - `copilot/debugContext {textDocument, position}`: the context snippets a completion there
//!   would show the model, in prompt order (`source`, `path`, `text`, `tokens`);
//! - `copilot/debugEvents`: waits until the event log has written what it was sent, and
//!   says where it writes (`dataDir`), whether events are on and whether logging failed.

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
    let service = &scheduler.service;
    let mut v = serde_json::to_value(service.stats.snapshot()).unwrap_or(Value::Null);
    v["model"] = Value::from(service.host.state().label());
    v["liveTasks"] = Value::from(service.tasks.live_count());
    v["shed"] = Value::from(service.turns.shed());
    let (documents, bytes) = scheduler.session.document_totals();
    v["documents"] = Value::from(documents);
    v["documentBytes"] = Value::from(bytes);
    Ok(v)
}

pub async fn events(scheduler: &Scheduler) -> Result<Value> {
    let outcomes = scheduler.service.outcomes.clone();
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = outcomes.log().flush(std::time::Duration::from_secs(10));
        (outcomes, flushed)
    })
    .await;
    let Ok((outcomes, flushed)) = flushed else {
        return Err(tower_lsp_server::jsonrpc::Error::internal_error());
    };
    let log = outcomes.log();
    Ok(json!({
        "enabled": outcomes.is_enabled(),
        "dataDir": log.dir().map(|d| d.display().to_string()),
        "failed": log.is_failed(),
        "dropped": log.dropped(),
        "flushed": flushed,
    }))
}

pub async fn context(
    scheduler: &Scheduler,
    p: tower_lsp_server::ls_types::TextDocumentPositionParams,
) -> Result<Value> {
    let copilot_service::ModelState::Ready(completer) = scheduler.service.host.state() else {
        return Err(tower_lsp_server::jsonrpc::Error::invalid_request());
    };
    let session = &scheduler.session;
    let Ok((snapshot, _)) = session.snapshot(&p.text_document.uri, p.position, u64::MAX) else {
        return Ok(Value::Null);
    };
    let opts = session.settings().completion;
    let got = scheduler.service.gather(&completer, &snapshot, &opts).await;
    Ok(Value::Array(
        got.iter()
            .map(|s| {
                json!({"source": s.source.as_str(), "path": s.path, "text": s.text,
                       "tokens": s.tokens})
            })
            .collect(),
    ))
}
