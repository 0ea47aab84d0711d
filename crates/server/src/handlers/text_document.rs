//! `textDocument/didOpen`, `didChange`, `didClose`: applied by the gate in arrival order
//! (see `gate.rs`), synchronously. Each also cancels the document's running completion,
//! whose answer would now be for an outdated version.

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
