//! Outcome events end to end in-process: the real server and pipeline over in-memory pipes,
//! the scripted model, tokio's paused clock (so the 30 s and 2 min retention checks take no
//! time), and the event log read back from a temporary data directory.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use copilot_events::{How, Read, RejectReason, Retained, Suggestion};
use copilot_server::ServeOptions;
use serde_json::{json, Value};
use support::{Client, Script};
use tokio::time::sleep;

const URI: &str = "file:///proj/main.py";
const AUTOMATIC: u32 = 2;

fn quick() -> Value {
    json!({"model": "/models/scripted", "debounceMs": 0, "temperature": 0})
}

fn start(data: &Path) -> Client {
    Client::start_with(
        Script::default(),
        ServeOptions {
            data_dir: Some(data.to_path_buf()),
            ..ServeOptions::default()
        },
    )
}

/// Everything the log holds for the test workspace, once the writer has caught up.
async fn log(c: &mut Client, data: &Path) -> Read {
    let r = c.call("copilot/debugEvents", Value::Null).await;
    assert_eq!(r["result"]["flushed"], true, "{r}");
    copilot_events::read_workspace(data, Path::new("/proj")).unwrap()
}

async fn suggestions(c: &mut Client, data: &Path) -> Vec<Suggestion> {
    let read = log(c, data).await;
    assert_eq!(read.corrupt_lines, 0);
    copilot_events::fold(&read.events).0
}

async fn insert(c: &Client, version: i32, line: u32, character: u32, text: &str) {
    replace(c, version, (line, character), (line, character), text).await;
}

async fn replace(c: &Client, version: i32, from: (u32, u32), to: (u32, u32), text: &str) {
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": version},
               "contentChanges": [{"range": {"start": {"line": from.0, "character": from.1},
                                             "end": {"line": to.0, "character": to.1}},
                                   "text": text}]}),
    )
    .await;
}

/// The first item of an inline completion answer.
fn first_item(resp: &Value) -> Value {
    resp["result"]["items"][0].clone()
}

fn id(item: &Value) -> String {
    assert_eq!(item["command"]["command"], "copilot-lsp.accepted", "{item}");
    item["command"]["arguments"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {item}"))
        .to_string()
}

async fn accept(c: &mut Client, id: &str) -> Value {
    c.call(
        "workspace/executeCommand",
        json!({"command": "copilot-lsp.accepted", "arguments": [id]}),
    )
    .await
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    (tmp, data)
}

#[tokio::test(start_paused = true)]
async fn shown_accepted_and_kept_at_30_s_and_2_min() {
    let (_tmp, data) = data_dir();
    let mut c = start(&data);
    let init = c.initialize(quick()).await;
    assert_eq!(
        init["result"]["capabilities"]["executeCommandProvider"]["commands"],
        json!(["copilot-lsp.accepted"])
    );
    c.open(URI, "def f():\n    return \n").await;
    let item = first_item(&c.inline(URI, 1, 11, AUTOMATIC).await);
    let text = item["insertText"].as_str().unwrap().to_string();
    assert_eq!(text, "<    return |42>");
    let id = id(&item);
    c.notify("textDocument/didShowCompletion", json!({"item": item}))
        .await;
    // The client inserts it, then runs the command.
    insert(&c, 1, 1, 11, &text).await;
    assert_eq!(accept(&mut c, &id).await["result"], Value::Null);

    sleep(Duration::from_secs(31)).await;
    let s = suggestions(&mut c, &data).await;
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(s[0].complete);
    assert_eq!(s[0].how, Some(How::Command));
    assert_eq!(s[0].retained(30), Some(Retained::Kept));
    assert_eq!(s[0].retained(120), None);
    // Edits elsewhere move the text; a small edit inside it keeps it "kept".
    insert(&c, 2, 0, 0, "import os\n").await;
    insert(&c, 3, 2, 12, "x").await;
    sleep(Duration::from_secs(90)).await;
    let s = suggestions(&mut c, &data).await;
    let r = &s[0].retention[&120];
    assert_eq!(r.state, Retained::Kept);
    assert!((r.similarity - 16.0 / 17.0).abs() < 1e-9, "{r:?}");
    let shown = &s[0].shown;
    assert_eq!(shown.path, "main.py");
    assert_eq!((shown.line, shown.column), (1, 11));
    assert_eq!(shown.model, "scripted");
    assert_eq!(shown.suggestion, text);
    let ctx = s[0].context.as_ref().unwrap();
    assert_eq!(ctx.prefix, "def f():\n    return ");
    assert_eq!(ctx.suffix, "\n");
    // Accepting it again records nothing new.
    let before = log(&mut c, &data).await.events.len();
    accept(&mut c, &id).await;
    assert_eq!(log(&mut c, &data).await.events.len(), before);
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn accepted_then_deleted_is_not_kept() {
    let (_tmp, data) = data_dir();
    let mut c = start(&data);
    c.initialize(quick()).await;
    c.open(URI, "x = ").await;
    let item = first_item(&c.inline(URI, 0, 4, AUTOMATIC).await);
    let text = item["insertText"].as_str().unwrap().to_string();
    let n = text.chars().count() as u32;
    insert(&c, 1, 0, 4, &text).await;
    accept(&mut c, &id(&item)).await;
    // The user deletes it again (and types something else after the deletion point).
    replace(&c, 2, (0, 4), (0, 4 + n), "").await;
    insert(&c, 3, 0, 4, "1").await;
    sleep(Duration::from_secs(121)).await;
    let s = suggestions(&mut c, &data).await;
    assert_eq!(s[0].retained(30), Some(Retained::Deleted));
    assert_eq!(s[0].retained(120), Some(Retained::Deleted));
    assert!(s[0].complete, "still an accept");
    let report =
        copilot_events::stats::report("/proj".into(), &log(&mut c, &data).await, None, u64::MAX);
    assert_eq!(report.total.accepted, 1);
    assert_eq!(report.total.kept_30s, 0);
    assert_eq!(report.total.deleted_120s, 1);
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn partial_accepts_count_characters_in_the_negotiated_units() {
    // '😀' is 2 UTF-16 units and 4 UTF-8 bytes: 5 units of "<😀ab|42>" are "<😀ab" in
    // UTF-16 and "<😀" in UTF-8.
    for (enc, cursor, want) in [("utf-16", 4, 4), ("utf-8", 6, 2), ("utf-32", 3, 5)] {
        let (_tmp, data) = data_dir();
        let mut c = start(&data);
        c.initialize_with(
            quick(),
            json!({"general": {"positionEncodings": [enc]},
                   "textDocument": {"inlineCompletion": {}}}),
        )
        .await;
        c.open(URI, "😀ab").await;
        let item = first_item(&c.inline(URI, 0, cursor, AUTOMATIC).await);
        assert_eq!(item["insertText"], "<😀ab|42>", "{enc}");
        c.notify(
            "textDocument/didPartiallyAcceptCompletion",
            json!({"item": item, "acceptedLength": 5}),
        )
        .await;
        let s = suggestions(&mut c, &data).await;
        assert_eq!(s[0].accepted_chars, want, "{enc}");
        assert_eq!(s[0].how, Some(How::Partial));
        assert!(!s[0].complete && s[0].is_partially_accepted());
        // A length past the suggestion is all of it, no more.
        c.notify(
            "textDocument/didPartiallyAcceptCompletion",
            json!({"item": item, "acceptedLength": 1000}),
        )
        .await;
        let s = suggestions(&mut c, &data).await;
        assert_eq!(s[0].accepted_chars, 8, "{enc}");
        assert!(s[0].complete);
        assert_eq!(c.shutdown_and_exit().await, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn typing_through_a_suggestion_counts_as_accepted() {
    let (_tmp, data) = data_dir();
    let mut c = start(&data);
    c.initialize(json!({"model": "/m", "debounceMs": 0, "temperature": 0, "cache": true}))
        .await;
    c.open(URI, "x = ").await;
    let first = first_item(&c.inline(URI, 0, 4, AUTOMATIC).await);
    let text = first["insertText"].as_str().unwrap().to_string();
    assert_eq!(text, "<x = |42>");
    let mut ids = vec![id(&first)];
    // The user types what the ghost text says, a request at each keystroke: the completion
    // cache answers with the rest, each an alias of the first suggestion.
    for (i, ch) in text.chars().enumerate() {
        insert(&c, i as i32 + 1, 0, 4 + i as u32, &ch.to_string()).await;
        let r = c.inline(URI, 0, 5 + i as u32, AUTOMATIC).await;
        let rest: String = text.chars().skip(i + 1).collect();
        if rest.is_empty() {
            // Typed it all: a new suggestion for what follows.
            let item = first_item(&r);
            assert_ne!(item["insertText"], "", "{r}");
            ids.push(id(&item));
        } else {
            let item = first_item(&r);
            assert_eq!(item["insertText"], rest.as_str(), "{r}");
            ids.push(id(&item));
        }
    }
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "every answer has its own id");
    // Settled when the next suggestion replaced it (after the grace period).
    sleep(Duration::from_secs(3)).await;
    let s = suggestions(&mut c, &data).await;
    assert_eq!(
        s.len(),
        2,
        "the continuations are not new suggestions: {s:?}"
    );
    assert_eq!(s[0].shown.suggestion, text);
    assert_eq!(s[0].how, Some(How::Typed));
    assert!(s[0].complete);
    assert_eq!(s[0].accepted_chars, 9);
    assert!(s[1].accepted_chars == 0 && s[1].rejected.is_none());
    // The accepted text is then checked like any other.
    sleep(Duration::from_secs(30)).await;
    let s = suggestions(&mut c, &data).await;
    assert_eq!(s[0].retained(30), Some(Retained::Kept));
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn typed_over_or_left_alone_counts_as_rejected_after_a_delay() {
    let (_tmp, data) = data_dir();
    let mut c = start(&data);
    c.initialize(quick()).await;
    c.open(URI, "y").await;
    let a = first_item(&c.inline(URI, 0, 1, AUTOMATIC).await);
    // Typed over: something else than the suggestion, and a new request.
    insert(&c, 1, 0, 1, "z").await;
    c.inline(URI, 0, 2, AUTOMATIC).await;
    sleep(Duration::from_millis(500)).await;
    let s = suggestions(&mut c, &data).await;
    assert_eq!(s[0].rejected, None, "not before the grace period");
    sleep(Duration::from_secs(2)).await;
    let s = suggestions(&mut c, &data).await;
    assert_eq!(s[0].rejected, Some(RejectReason::Superseded));
    // The second, left alone, times out.
    assert_eq!(s[1].rejected, None);
    sleep(Duration::from_secs(30)).await;
    let s = suggestions(&mut c, &data).await;
    assert_eq!(s[1].rejected, Some(RejectReason::Timeout));
    // A settled suggestion's id is stale: accepting it records nothing.
    let n = log(&mut c, &data).await.events.len();
    assert_eq!(accept(&mut c, &id(&a)).await["result"], Value::Null);
    assert_eq!(log(&mut c, &data).await.events.len(), n);
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn the_completion_fallback_item_carries_the_command_and_is_tracked() {
    let (_tmp, data) = data_dir();
    let mut c = start(&data);
    c.initialize_with(
        quick(),
        json!({"general": {"positionEncodings": ["utf-8"]}}),
    )
    .await;
    c.open(URI, "v = foo").await;
    let r = c
        .call(
            "textDocument/completion",
            json!({"textDocument": {"uri": URI}, "position": {"line": 0, "character": 7},
                   "context": {"triggerKind": 1}}),
        )
        .await;
    let item = r["result"]["items"][0].clone();
    let id = id(&item);
    // Helix and eglot apply the edit (the word, replaced by the word and the completion),
    // then run the command.
    let edit = &item["textEdit"];
    assert_eq!(edit["newText"], "foo<v = foo|42>");
    replace(&c, 1, (0, 4), (0, 7), edit["newText"].as_str().unwrap()).await;
    accept(&mut c, &id).await;
    sleep(Duration::from_secs(31)).await;
    let s = suggestions(&mut c, &data).await;
    assert_eq!(s[0].shown.suggestion, "<v = foo|42>");
    assert!(s[0].complete);
    assert_eq!(s[0].retention[&30].similarity, 1.0);
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn events_off_writes_nothing() {
    let (_tmp, data) = data_dir();
    let mut c = start(&data);
    let mut opts = quick();
    opts["events"] = json!(false);
    c.initialize(opts).await;
    c.open(URI, "x").await;
    let r = c.inline(URI, 0, 1, AUTOMATIC).await;
    let item = first_item(&r);
    assert_eq!(item["insertText"], "<x|42>");
    assert!(item.get("command").is_none(), "{item}");
    c.notify("textDocument/didShowCompletion", json!({"item": item}))
        .await;
    let r = c.call("copilot/debugEvents", Value::Null).await;
    assert_eq!(r["result"]["enabled"], false, "{r}");
    sleep(Duration::from_secs(200)).await;
    c.call("copilot/debugEvents", Value::Null).await;
    assert!(
        !data.exists(),
        "{:?}",
        std::fs::read_dir(&data).map(|d| d.count())
    );
    // Turned on later: logged from then on.
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"events": true}}),
    )
    .await;
    let item = first_item(&c.inline(URI, 0, 1, AUTOMATIC).await);
    id(&item);
    assert_eq!(suggestions(&mut c, &data).await.len(), 1);
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn an_unwritable_directory_warns_once_and_completions_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    // A regular file where a folder should be: unwritable even for root.
    std::fs::write(tmp.path().join("file"), "x").unwrap();
    let mut c = start(&tmp.path().join("file").join("data"));
    c.initialize(quick()).await;
    c.open(URI, "a").await;
    for i in 0..3 {
        let item = first_item(&c.inline(URI, 0, 1, AUTOMATIC).await);
        assert_eq!(item["insertText"], "<a|42>", "request {i}");
        accept(&mut c, &id(&item)).await;
        c.call("copilot/debugEvents", Value::Null).await;
    }
    let r = c.call("copilot/debugEvents", Value::Null).await;
    assert_eq!(r["result"]["failed"], true, "{r}");
    sleep(Duration::from_secs(1)).await;
    c.stats().await;
    let warnings: Vec<Value> = c
        .messages("window/showMessage")
        .into_iter()
        .filter(|m| {
            m["params"]["message"]
                .as_str()
                .unwrap()
                .contains("not logged")
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["params"]["type"], 2);
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn bad_outcome_input_is_refused_or_ignored_and_the_server_goes_on() {
    let (_tmp, data) = data_dir();
    let mut c = start(&data);
    c.initialize(quick()).await;
    c.open(URI, "q").await;
    let item = first_item(&c.inline(URI, 0, 1, AUTOMATIC).await);
    let good = id(&item);
    let exec =
        |command: &str, arguments: Value| json!({"command": command, "arguments": arguments});
    let r = c
        .call(
            "workspace/executeCommand",
            exec("copilot-lsp.nope", json!([good])),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    for args in [json!([]), json!([42]), json!([{"di": good}])] {
        let r = c
            .call(
                "workspace/executeCommand",
                exec("copilot-lsp.accepted", args),
            )
            .await;
        assert_eq!(r["error"]["code"], -32602, "{r}");
    }
    let r = c
        .call(
            "workspace/executeCommand",
            json!({"command": "copilot-lsp.accepted"}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    // Unknown ids: another session's, made up, out of range.
    for unknown in ["nope", "00000000-1", &format!("{good}9999"), ""] {
        let r = accept(&mut c, unknown).await;
        assert_eq!(r["result"], Value::Null, "{r}");
        assert!(r.get("error").is_none(), "{r}");
    }
    // Notifications with the wrong shape are ignored.
    for p in [
        json!({}),
        json!({"item": {}}),
        json!({"item": item.clone()}),
        json!({"item": item.clone(), "acceptedLength": -1}),
        json!({"item": item.clone(), "acceptedLength": "5"}),
        json!([1, 2]),
    ] {
        c.notify("textDocument/didPartiallyAcceptCompletion", p.clone())
            .await;
        c.notify("textDocument/didShowCompletion", p).await;
    }
    let s = suggestions(&mut c, &data).await;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].accepted_chars, 0, "{s:?}");
    // The one good accept still works, and so do completions.
    accept(&mut c, &good).await;
    assert!(suggestions(&mut c, &data).await[0].complete);
    let item = first_item(&c.inline(URI, 0, 1, AUTOMATIC).await);
    assert_eq!(item["insertText"], "<q|42>");
    assert_eq!(c.shutdown_and_exit().await, 0);
}
