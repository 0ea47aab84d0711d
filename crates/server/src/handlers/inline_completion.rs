//! `textDocument/inlineCompletion` (LSP 3.18): ghost text at the cursor. Invoked may return
//! several choices, Automatic one; each item has `insertText` and an empty one-line `range`
//! at the cursor, and the `copilot-lsp.accepted` command with its event id (see
//! `outcome.rs`). Anything short of a fresh answer is an empty list, never an error.

use tower_lsp_server::jsonrpc::Result;
use tower_lsp_server::ls_types::{
    InlineCompletionItem, InlineCompletionList, InlineCompletionParams, InlineCompletionResponse,
    InlineCompletionTriggerKind, InsertTextFormat, Range,
};

use super::{outcome, Stamped};
use crate::scheduler::{Outcome, Scheduler, Trigger};

pub async fn handle(
    scheduler: &Scheduler,
    p: Stamped<InlineCompletionParams>,
) -> Result<Option<InlineCompletionResponse>> {
    let arrival = p.arrival.unwrap_or_else(|| scheduler.session.current_seq());
    let params = p.params;
    let trigger = if params.context.trigger_kind == InlineCompletionTriggerKind::INVOKED {
        Trigger::Invoked
    } else {
        Trigger::Automatic
    };
    let tdp = params.text_document_position;
    let items = match scheduler
        .complete(tdp.text_document.uri, tdp.position, arrival, trigger)
        .await
    {
        Outcome::Choices {
            place, texts, ids, ..
        } => texts
            .into_iter()
            .zip(ids)
            .map(|(text, id)| InlineCompletionItem {
                insert_text: text,
                filter_text: None,
                range: Some(Range::new(place.position, place.position)),
                command: id.as_deref().map(outcome::command),
                insert_text_format: Some(InsertTextFormat::PLAIN_TEXT),
            })
            .collect(),
        Outcome::Empty(why) => {
            tracing::debug!(?why, "inline completion: empty");
            Vec::new()
        }
    };
    Ok(Some(InlineCompletionResponse::List(InlineCompletionList {
        items,
    })))
}
