//! Whatever a client sends, the server answers with an error or an empty result and keeps
//! answering.

use serde_json::json;

use crate::client::{caps, inline_params, texts, Lsp};
use crate::fixtures::tiny;

#[test]
fn malformed_json_unknown_methods_unopened_documents_and_far_positions() {
    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.initialize(
        json!({"model": tiny().dir, "debounceMs": 0, "postprocess": false, "maxTokens": 4}),
        caps(&["utf-16"]),
        None,
    );
    lsp.wait_model();
    let uri = "file:///tmp/harness/robust.py";
    lsp.open(uri, "x = 1\ny = 2\n");

    // Malformed JSON: a parse error with a null id, then business as usual.
    let bad = "{\"jsonrpc\":";
    lsp.raw(format!("Content-Length: {}\r\n\r\n{bad}", bad.len()).as_bytes());
    let e = lsp.null_id_response();
    assert_eq!(e["error"]["code"], -32700, "{e}");
    // Valid JSON that is no JSON-RPC message; garbage between messages; a bad header.
    lsp.raw(b"Content-Length: 7\r\n\r\n[1,2,3]");
    assert_eq!(lsp.null_id_response()["error"]["code"], -32600);
    lsp.raw(b"this is not a header\r\n");
    assert_eq!(lsp.null_id_response()["error"]["code"], -32700);
    let ok = json!({"jsonrpc": "2.0", "id": 9001, "method": "copilot/debugStats"}).to_string();
    lsp.raw(
        format!(
            "Content-Length: {}\r\nContent-Type: application/json\r\n\r\n{ok}",
            ok.len()
        )
        .as_bytes(),
    );
    assert!(lsp.response(9001).get("result").is_some());

    let r = lsp.call("no/suchMethod", json!({}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    lsp.notify("no/suchNotification", json!({}));
    let r = lsp.call("textDocument/inlineCompletion", json!({"textDocument": 5}));
    assert_eq!(r["error"]["code"], -32602, "{r}");

    // An unopened document, a line far past the end: empty answers.
    let r = lsp.call(
        "textDocument/inlineCompletion",
        inline_params("file:///nope.py", 0, 0, 1),
    );
    assert!(texts(&r).is_empty(), "{r}");
    let r = lsp.call(
        "textDocument/inlineCompletion",
        inline_params(uri, 4_000_000, 4_000_000, 1),
    );
    assert!(texts(&r).is_empty(), "{r}");
    // A character far past the end of a line is clamped: an answer at the line's end.
    let r = lsp.call(
        "textDocument/inlineCompletion",
        inline_params(uri, 0, 4_000_000, 1),
    );
    assert!(r.get("error").is_none(), "{r}");
    if let Some(item) = r["result"]["items"].get(0) {
        assert_eq!(item["range"]["start"], json!({"line": 0, "character": 5}));
    }
    // Edits to unopened documents, a change with bad params: ignored.
    lsp.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": "file:///nope.py", "version": 3}, "contentChanges": [{"text": "z"}]}),
    );
    lsp.notify("textDocument/didChange", json!({"bogus": true}));
    assert_eq!(lsp.document(uri)["text"], "x = 1\ny = 2\n");
    // A second initialize is refused; the server still works.
    let r = lsp.call("initialize", json!({"capabilities": {}}));
    assert!(r.get("error").is_some(), "{r}");
    assert!(lsp.stats()["requests"].as_u64().unwrap() >= 3);
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}
