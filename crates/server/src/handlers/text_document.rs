//! `textDocument/didOpen`, `didChange`, `didClose`: applied by the gate in arrival order
//! (see `gate.rs`), synchronously. Each also cancels the document's running completion,
//! whose answer would now be for an outdated version. After the gate, the handlers warm the
//! model where a request will probably come: the last request's place in a document opened
//! or focused again, the end of a large paste.

use serde::Deserialize;
use serde_json::Value;
use tower_lsp_server::ls_types::{
    DidChangeTextDocumentParams, DidCloseTextDocumentParams, DidOpenTextDocumentParams,
};

use crate::session::{Changed, Session};

pub fn apply(session: &Session, method: &str, params: Option<&Value>, seq: u64) {
    let Some(params) = params else {
        tracing::warn!("{method} without params, ignored");
        return;
    };
    let outcome = match method {
        "textDocument/didOpen" => DidOpenTextDocumentParams::deserialize(params).map(|p| {
            let d = p.text_document;
            session.report(session.open(d.uri, &d.text, d.version, d.language_id, seq));
        }),
        "textDocument/didChange" => DidChangeTextDocumentParams::deserialize(params).map(|p| {
            let uri = p.text_document.uri;
            match session.change(&uri, &p.content_changes, p.text_document.version, seq) {
                Changed::Applied(notices) => session.report(notices),
                Changed::NotOpen => tracing::warn!(
                    uri = uri.as_str(),
                    "didChange for a document that is not open"
                ),
            }
        }),
        "textDocument/didClose" => DidCloseTextDocumentParams::deserialize(params)
            .map(|p| session.close(&p.text_document.uri)),
        _ => Ok(()),
    };
    if let Err(e) = outcome {
        tracing::warn!("invalid {method} params, ignored: {e}");
    }
}

/// Copilot's `textDocument/didFocus` params.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentFocus {
    pub text_document: tower_lsp_server::ls_types::TextDocumentIdentifier,
}

/// Inserted text at least this large is a paste worth warming for.
const PASTE_BYTES: usize = 256;
const PASTE_LINES: usize = 4;
/// The pause after a paste before warming (typing on sends a request anyway).
const PASTE_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

/// A document opened (or focused): warm the model where its last request was.
pub fn warm_opened(scheduler: &crate::scheduler::Scheduler, uri: tower_lsp_server::ls_types::Uri) {
    scheduler.warm(uri, None);
}

/// After a large paste and a pause, warm the model at the paste's end: the cursor is there.
pub fn warm_after_paste(scheduler: &crate::scheduler::Scheduler, p: &DidChangeTextDocumentParams) {
    let Some(change) = p.content_changes.last() else {
        return;
    };
    let Some(range) = change.range else {
        return;
    };
    let lines = change.text.matches('\n').count();
    if change.text.len() < PASTE_BYTES && lines < PASTE_LINES {
        return;
    }
    let uri = p.text_document.uri.clone();
    let Some((end, version)) = scheduler
        .session
        .after_insert(&uri, range.start, &change.text)
    else {
        return;
    };
    scheduler.session.remember_cursor(&uri, end);
    let scheduler = scheduler.clone();
    tokio::spawn(async move {
        tokio::time::sleep(PASTE_PAUSE).await;
        if scheduler.session.version(&uri) == Some(version) {
            scheduler.warm(uri, Some(end));
        }
    });
}
