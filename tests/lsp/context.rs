//! Context from other files through the real protocol (issue 12): a completion in one open
//! file carries a snippet from another open file, and stops carrying it once that file is
//! closed or no longer matches; `copilot/debugContext` shows what the prompt gets.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{caps, file_uri, inline_params, Lsp};
use crate::fixtures::tiny;

const OTHER: &str = "def inventory_total(inventory_items):\n    return sum(inventory_items)\n";
const MAIN: &str =
    "def report(inventory_items):\n    total = inventory_total(inventory_items)\n    ";

fn context_at(lsp: &mut Lsp, uri: &str, line: u32, character: u32) -> Vec<Value> {
    let r = lsp.call(
        "copilot/debugContext",
        json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}),
    );
    r["result"].as_array().cloned().unwrap_or_default()
}

/// Poll until the context at the cursor satisfies `pred` (document events reach the
/// gatherers a few milliseconds after the gate applies them).
fn wait_context(
    lsp: &mut Lsp,
    uri: &str,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = context_at(lsp, uri, 2, 4);
        if pred(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: context stayed {got:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn from_other(snippets: &[Value]) -> bool {
    snippets
        .iter()
        .any(|s| s["source"] == "open" && s["path"] == "other.py")
}

#[test]
fn a_completion_carries_another_open_files_snippet_until_it_closes_or_stops_matching() {
    let model = tiny();
    // Nothing on disk: what the completion sees of other.py comes from the open document.
    let ws = tempfile::tempdir().unwrap();
    let (main, other) = (
        file_uri(&ws.path().join("main.py")),
        file_uri(&ws.path().join("other.py")),
    );
    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.initialize(
        json!({"model": model.dir, "temperature": 0, "debounceMs": 0, "maxTokens": 4}),
        caps(&["utf-16"]),
        Some(ws.path()),
    );
    assert_eq!(lsp.wait_model(), "ready", "{}", lsp.log_tail());
    lsp.open(&main, MAIN);
    lsp.open(&other, OTHER);

    let got = wait_context(&mut lsp, &main, "other.py open", from_other);
    let snippet = got.iter().find(|s| s["path"] == "other.py").unwrap();
    assert!(
        OTHER.contains(snippet["text"].as_str().unwrap().trim()),
        "the snippet is other.py's text: {snippet}"
    );
    assert!(snippet["tokens"].as_u64().unwrap() > 0);

    // The completion's prompt carries it: more prompt tokens than without it.
    let prompt_tokens = |lsp: &mut Lsp| {
        let before = lsp.stats()["promptTokens"].as_u64().unwrap();
        let r = lsp.call(
            "textDocument/inlineCompletion",
            inline_params(&main, 2, 4, 1),
        );
        assert!(r.get("error").is_none(), "{r}");
        lsp.stats()["promptTokens"].as_u64().unwrap() - before
    };
    let with = prompt_tokens(&mut lsp);

    lsp.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": other}}),
    );
    wait_context(&mut lsp, &main, "other.py closed", |s| !from_other(s));
    let without = prompt_tokens(&mut lsp);
    assert!(
        with > without,
        "the prompt with the snippet ({with} tokens) is longer than without ({without})"
    );

    // Reopened, it is back; once its text no longer matches, it is gone.
    lsp.open(&other, OTHER);
    wait_context(&mut lsp, &main, "other.py reopened", from_other);
    lsp.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": other, "version": 2},
               "contentChanges": [{"text": "import sys\nprint(sys.argv)\n"}]}),
    );
    wait_context(&mut lsp, &main, "other.py rewritten", |s| !from_other(s));
    assert!(lsp.shutdown_and_exit().success());
}
