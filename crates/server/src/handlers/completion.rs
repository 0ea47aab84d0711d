//! `textDocument/completion` as a fallback for clients without inline completion (Helix,
//! eglot): each choice is an item whose text edit replaces the word before the cursor with
//! that word plus the completion, and whose `filterText` starts with the word, so the
//! client's filter keeps it while the user types on. The list is marked incomplete so the
//! client asks again after the next keystroke. Each item carries the `copilot-lsp.accepted`
//! command with its event id, which clients run after applying it (see `outcome.rs`).

use tower_lsp_server::jsonrpc::Result;
use tower_lsp_server::ls_types::{
    CompletionItem, CompletionItemKind, CompletionList, CompletionParams, CompletionResponse,
    CompletionTextEdit, CompletionTriggerKind, Documentation, InsertTextFormat, MarkupContent,
    MarkupKind, Range, TextEdit,
};

use super::{outcome, Stamped};
use crate::scheduler::{Outcome, Scheduler, Trigger};

/// Longest label shown in a completion menu.
const LABEL_CHARS: usize = 60;

pub async fn handle(
    scheduler: &Scheduler,
    p: Stamped<CompletionParams>,
) -> Result<Option<CompletionResponse>> {
    let arrival = p.arrival.unwrap_or_else(|| scheduler.session.current_seq());
    let params = p.params;
    let trigger = match params.context.as_ref().map(|c| c.trigger_kind) {
        Some(CompletionTriggerKind::INVOKED) => Trigger::Invoked,
        _ => Trigger::Automatic,
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
            .enumerate()
            .map(|(i, (text, id))| CompletionItem {
                command: id.as_deref().map(outcome::command),
                ..item(&place, &text, i)
            })
            .collect(),
        Outcome::Empty(why) => {
            tracing::debug!(?why, "completion: empty");
            Vec::new()
        }
    };
    Ok(Some(CompletionResponse::List(CompletionList {
        is_incomplete: true,
        items,
    })))
}

fn item(snapshot: &crate::session::LspPlace, text: &str, rank: usize) -> CompletionItem {
    let word = &snapshot.word_prefix;
    let first_line = text.lines().next().unwrap_or("");
    let mut label: String = format!("{word}{first_line}");
    if label.chars().count() > LABEL_CHARS {
        label = label.chars().take(LABEL_CHARS).collect::<String>() + "…";
    }
    if text.contains('\n') {
        label.push_str(" …");
    }
    CompletionItem {
        label,
        kind: Some(CompletionItemKind::TEXT),
        detail: Some("copilot-lsp".into()),
        documentation: Some(Documentation::MarkupContent(MarkupContent {
            kind: MarkupKind::Markdown,
            value: format!("```\n{word}{text}\n```"),
        })),
        filter_text: Some(format!("{word}{first_line}")),
        sort_text: Some(format!("0000{rank}")),
        preselect: Some(rank == 0),
        insert_text_format: Some(InsertTextFormat::PLAIN_TEXT),
        text_edit: Some(CompletionTextEdit::Edit(TextEdit {
            range: Range::new(snapshot.word_start, snapshot.position),
            new_text: format!("{word}{text}"),
        })),
        ..CompletionItem::default()
    }
}
