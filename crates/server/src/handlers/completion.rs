//! `textDocument/completion` as a fallback for clients without inline completion (Helix,
//! eglot): each choice is an item whose text edit replaces the word before the cursor with
//! that word plus the completion, and whose `filterText` starts with the word, so the
//! client's filter keeps it while the user types on. The list is marked incomplete so the
//! client asks again after the next keystroke. The label is the suggestion on one line, its
//! line breaks shown as `⏎`, so a menu shows even a suggestion that starts on the next line.
//! Each item carries the `copilot-lsp.accepted` command with its event id, which clients run
//! after applying it (see `outcome.rs`).
//!
//! Checked in the real Helix (`editors/helix/test/helix_e2e.py`).

use tower_lsp_server::jsonrpc::Result;
use tower_lsp_server::ls_types::{
    CompletionItem, CompletionItemKind, CompletionList, CompletionParams, CompletionResponse,
    CompletionTextEdit, Documentation, InsertTextFormat, MarkupContent, MarkupKind, Range,
    TextEdit,
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
    // One choice whatever the trigger kind: Helix sends `Invoked` for its automatic requests
    // too (after `completion-trigger-len` word characters), so the kind cannot tell Ctrl-x
    // from typing, and n choices are n generations before the menu shows anything (Helix
    // 25.07, pico, temperature 0.2: the menu after 2.33 s instead of 0.29 s).
    let tdp = params.text_document_position;
    let items = match scheduler
        .complete(
            tdp.text_document.uri,
            tdp.position,
            arrival,
            Trigger::Automatic,
        )
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

/// The menu's line for `word` (before the cursor) followed by `text`: the first line, then
/// each further non-blank line without its indentation after a `⏎`, at most [`LABEL_CHARS`]
/// characters. Helix and eglot show labels on one line: with only the first line, a
/// suggestion starting on the next line was labelled `…` alone (seen in Helix).
fn label(word: &str, text: &str) -> String {
    let full = format!("{word}{text}");
    let mut lines = full.lines();
    let mut label = lines.next().unwrap_or("").trim_end().to_string();
    for line in lines.map(str::trim).filter(|l| !l.is_empty()) {
        if !label.is_empty() {
            label.push(' ');
        }
        label.push_str("⏎ ");
        label.push_str(line);
    }
    if label.chars().count() > LABEL_CHARS {
        label = label.chars().take(LABEL_CHARS).collect::<String>() + "…";
    }
    label
}

fn item(snapshot: &crate::session::LspPlace, text: &str, rank: usize) -> CompletionItem {
    let word = &snapshot.word_prefix;
    let first_line = text.lines().next().unwrap_or("");
    CompletionItem {
        label: label(word, text),
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

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_show_the_suggestion_on_one_line() {
        let long = "x".repeat(70);
        let cases: &[(&str, &str, &str)] = &[
            // (word before the cursor, suggestion, label)
            ("ma", "king the module.", "making the module."),
            ("", "main()", "main()"),
            ("0", "\n    return None", "0 ⏎ return None"),
            ("", "\n    return None", "⏎ return None"),
            ("", "if x:\n\n        y()\r\n    z", "if x: ⏎ y() ⏎ z"),
            ("", "a  \n\t\n", "a"),
            ("", "", ""),
            ("é", "🐍\n  ü", "é🐍 ⏎ ü"),
            ("", &long, &format!("{}…", &long[..60])),
        ];
        for (word, text, want) in cases {
            assert_eq!(&label(word, text), want, "word {word:?}, text {text:?}");
        }
    }
}
