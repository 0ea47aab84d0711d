//! Handshake, capabilities and position-encoding negotiation.

use serde_json::json;

use crate::client::{caps, Lsp};
use crate::fixtures::tiny;

#[test]
fn handshake_capabilities_and_load_progress() {
    let model = tiny();
    let mut lsp = Lsp::spawn(&["--stdio"]);
    let init = lsp.initialize(
        json!({"model": model.dir, "debounceMs": 0}),
        caps(&["utf-16"]),
        None,
    );
    let result = &init["result"];
    assert_eq!(result["serverInfo"]["name"], "copilot-lsp");
    let c = &result["capabilities"];
    assert_eq!(c["inlineCompletionProvider"], true, "{c}");
    assert_eq!(c["positionEncoding"], "utf-16");
    assert_eq!(c["textDocumentSync"]["openClose"], true);
    assert_eq!(c["textDocumentSync"]["change"], 2, "incremental sync");
    assert!(
        c.get("completionProvider").is_none(),
        "inline-capable clients get no fallback: {c}"
    );
    assert_eq!(lsp.wait_model(), "ready");

    // Work-done progress: the server asked for a token, then began and ended.
    lsp.wait_for("$/progress end", |m| {
        m["method"] == "$/progress" && m["params"]["value"]["kind"] == "end"
    });
    assert_eq!(lsp.unasked("window/workDoneProgress/create").len(), 1);
    let progress = lsp.unasked("$/progress");
    assert_eq!(progress[0]["params"]["value"]["kind"], "begin");
    let end = &progress.last().unwrap()["params"]["value"];
    assert!(end["message"].as_str().unwrap().contains("ready"), "{end}");
    assert!(lsp.unasked("window/showMessage").is_empty());
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn position_encodings_are_negotiated_and_echoed() {
    let model = tiny();
    let cases: &[(&[&str], &str)] = &[
        (&[], "utf-16"),
        (&["utf-16"], "utf-16"),
        (&["utf-8"], "utf-8"),
        (&["utf-32", "utf-16"], "utf-32"),
        (&["utf-8", "utf-16"], "utf-8"),
        (&["latin-1"], "utf-16"),
    ];
    for (offered, want) in cases {
        // `copilot-lsp` without arguments serves stdio too.
        let mut lsp = Lsp::spawn(&[]);
        let init = lsp.initialize(json!({"model": model.dir}), caps(offered), None);
        assert_eq!(
            init["result"]["capabilities"]["positionEncoding"], *want,
            "{offered:?}"
        );
        assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
    }
    // A client that sends no `general` section at all.
    let mut lsp = Lsp::spawn(&["--stdio"]);
    let init = lsp.initialize(json!({"model": model.dir}), json!({}), None);
    assert_eq!(init["result"]["capabilities"]["positionEncoding"], "utf-16");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn clients_without_inline_completion_get_completion_items() {
    let model = tiny();
    let mut lsp = Lsp::spawn(&["--stdio"]);
    // Helix-like: no inlineCompletion capability, no progress, no encodings list.
    let init = lsp.initialize(
        json!({"model": model.dir, "debounceMs": 0, "temperature": 0, "postprocess": false, "maxTokens": 8}),
        json!({"textDocument": {"completion": {}}}),
        None,
    );
    let c = &init["result"]["capabilities"];
    assert!(c["completionProvider"].is_object(), "{c}");
    let uri = "file:///tmp/harness/fallback.py";
    lsp.open(uri, "def main():\n    valu");
    let r = lsp.call(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": {"line": 1, "character": 8},
               "context": {"triggerKind": 1}}),
    );
    assert!(r.get("error").is_none(), "{r}");
    let list = &r["result"];
    assert_eq!(list["isIncomplete"], true);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{r}");
    let item = &items[0];
    let edit = &item["textEdit"];
    assert_eq!(
        edit["range"],
        json!({"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 8}})
    );
    let new_text = edit["newText"].as_str().unwrap();
    assert!(
        new_text.starts_with("valu") && new_text.len() > 4,
        "{new_text:?}"
    );
    assert!(item["filterText"].as_str().unwrap().starts_with("valu"));
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}
