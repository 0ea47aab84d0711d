//! The server end to end in-process: real protocol over in-memory pipes, a scripted model,
//! tokio's paused clock (so "5 s of loading" takes no time and timings are exact).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{inline_params, texts, Client, LoadBehavior, Script};
use tokio::time::{sleep, Instant};

const URI: &str = "file:///proj/main.py";
const INVOKED: u32 = 1;
const AUTOMATIC: u32 = 2;

fn quick() -> Value {
    json!({"model": "/models/scripted", "debounceMs": 0, "temperature": 0})
}

#[tokio::test(start_paused = true)]
async fn initialize_answers_at_once_and_requests_wait_for_the_model() {
    let mut c = Client::start(Script {
        load_delay: Duration::from_secs(5),
        ..Script::default()
    });
    let t0 = Instant::now();
    let init = c.initialize(quick()).await;
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "initialize waited for the model"
    );
    let caps = &init["result"]["capabilities"];
    assert_eq!(caps["inlineCompletionProvider"], true);
    assert_eq!(caps["positionEncoding"], "utf-16");
    assert_eq!(caps["textDocumentSync"]["change"], 2);
    assert!(caps.get("completionProvider").is_none(), "{caps}");
    assert_eq!(init["result"]["serverInfo"]["name"], "copilot-lsp");

    c.open(URI, "def f():\n    return 1\n").await;
    let r = c.inline(URI, 1, 10, AUTOMATIC).await;
    assert!(t0.elapsed() >= Duration::from_secs(5));
    assert_eq!(texts(&r), vec!["<    return|42>"]);

    // Work-done progress: a token created, then begin, reports, end.
    c.wait_for("$/progress", |m| m["params"]["value"]["kind"] == "end")
        .await;
    assert_eq!(c.messages("window/workDoneProgress/create").len(), 1);
    let kinds: Vec<String> = c
        .messages("$/progress")
        .iter()
        .map(|m| m["params"]["value"]["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["begin", "report", "report", "end"]);
    let msgs: Vec<String> = c
        .messages("$/progress")
        .iter()
        .filter_map(|m| m["params"]["value"]["message"].as_str().map(String::from))
        .collect();
    assert!(msgs[1].starts_with("downloading"), "{msgs:?}");
    assert!(msgs[2].starts_with("loading"), "{msgs:?}");
    assert!(msgs[3].contains("ready"), "{msgs:?}");
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_model_that_cannot_load_is_reported_once_and_requests_answer_empty() {
    let mut c = Client::start(Script {
        load: LoadBehavior::Fail("no such file: config.json".into()),
        ..Script::default()
    });
    c.initialize(quick()).await;
    c.open(URI, "x = 1\n").await;
    for _ in 0..3 {
        let r = c.inline(URI, 0, 5, AUTOMATIC).await;
        assert!(r.get("error").is_none(), "{r}");
        assert!(texts(&r).is_empty());
    }
    // A settings change that does not touch the model does not reload or re-report.
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"maxTokens": 8}}),
    )
    .await;
    c.stats().await;
    sleep(Duration::from_secs(1)).await;
    let shown = c.messages("window/showMessage");
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["params"]["type"], 1);
    let text = shown[0]["params"]["message"].as_str().unwrap();
    assert!(
        text.contains("cannot load model `/models/scripted`"),
        "{text}"
    );
    assert!(text.contains("no such file: config.json"), "{text}");
    assert_eq!(c.script.loads(), 1);
    assert_eq!(c.stats().await["model"], "failed");
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_loader_is_caught_and_reported() {
    let mut c = Client::start(Script {
        load: LoadBehavior::Panic,
        ..Script::default()
    });
    c.initialize(quick()).await;
    c.open(URI, "x = 1\n").await;
    assert!(texts(&c.inline(URI, 0, 5, AUTOMATIC).await).is_empty());
    let m = c.wait_for("window/showMessage", |_| true).await;
    let text = m["params"]["message"].as_str().unwrap();
    assert!(
        text.contains("panicked") && text.contains("scripted loader panic"),
        "{text}"
    );
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_or_failing_worker_is_reported_and_the_server_goes_on() {
    let mut c = Client::start(Script::default());
    c.initialize(quick()).await;
    c.open(URI, "PANIC = 1\n").await;
    let r = c.inline(URI, 0, 9, AUTOMATIC).await;
    assert!(r.get("error").is_none(), "{r}");
    assert!(texts(&r).is_empty());
    let m = c.wait_for("window/showMessage", |_| true).await;
    assert!(m["params"]["message"]
        .as_str()
        .unwrap()
        .contains("scripted worker panic"));

    c.replace(URI, 1, "FAIL = 1\n").await;
    assert!(texts(&c.inline(URI, 0, 8, AUTOMATIC).await).is_empty());
    c.wait_for("window/showMessage", |m| {
        m["params"]["message"]
            .as_str()
            .unwrap()
            .contains("scripted engine failure")
    })
    .await;

    c.replace(URI, 2, "ok = 1\n").await;
    assert_eq!(
        texts(&c.inline(URI, 0, 6, AUTOMATIC).await),
        ["<ok = 1|42>"]
    );
    let s = c.stats().await;
    assert_eq!(s["failed"], 2, "{s}");
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn debounce_lets_only_the_last_of_a_burst_reach_the_model() {
    let mut c = Client::start(Script::default());
    c.initialize(json!({"model": "/m", "debounceMs": 50, "temperature": 0}))
        .await;
    c.open(URI, "").await;
    c.stats().await; // the model is loaded before the burst
    sleep(Duration::from_secs(1)).await;
    let mut pending = Vec::new();
    let mut text = String::new();
    for i in 1..=10 {
        text.push('a');
        c.replace(URI, i, &text).await;
        pending.push(
            c.send(
                "textDocument/inlineCompletion",
                inline_params(URI, 0, i as u32, AUTOMATIC),
            )
            .await
            .1,
        );
        sleep(Duration::from_millis(10)).await;
    }
    let mut answers = Vec::new();
    for rx in pending {
        answers.push(texts(&rx.await.unwrap()));
    }
    for a in &answers[..9] {
        assert!(a.is_empty(), "{answers:?}");
    }
    assert_eq!(answers[9], ["<aaaaaaaaaa|42>"]);
    assert_eq!(c.script.calls(), 1);
    let s = c.stats().await;
    assert_eq!(s["completed"], 1, "{s}");
    assert_eq!(s["cancelledWaiting"], 9, "{s}");
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_newer_request_cancels_the_one_generating_within_one_token() {
    let mut c = Client::start(Script {
        tokens: 100,
        ..Script::default()
    });
    c.initialize(quick()).await;
    c.open(URI, "abc").await;
    c.stats().await;
    sleep(Duration::from_secs(1)).await;
    let (_, first) = c
        .send(
            "textDocument/inlineCompletion",
            inline_params(URI, 0, 3, AUTOMATIC),
        )
        .await;
    sleep(Duration::from_millis(105)).await;
    assert_eq!(c.stats().await["generating"], 1);
    let t = Instant::now();
    let (_, second) = c
        .send(
            "textDocument/inlineCompletion",
            inline_params(URI, 0, 2, AUTOMATIC),
        )
        .await;
    assert!(texts(&first.await.unwrap()).is_empty());
    assert_eq!(
        t.elapsed(),
        Duration::ZERO,
        "the older request was not dropped at once"
    );
    assert_eq!(texts(&second.await.unwrap()), ["<ab|42>"]);
    assert_eq!(c.script.cancelled(), 1);
    let noticed = c.script.cancel_times.lock().unwrap()[0];
    assert!(
        noticed - t <= Duration::from_millis(10),
        "{:?}",
        noticed - t
    );
    let s = c.stats().await;
    assert_eq!(s["cancelledGenerating"], 1, "{s}");
    assert_eq!(s["completed"], 1, "{s}");
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn cancel_request_mid_generation_answers_request_cancelled_and_stops_the_model() {
    let mut c = Client::start(Script {
        tokens: 1000,
        ..Script::default()
    });
    c.initialize(quick()).await;
    c.open(URI, "abc").await;
    c.stats().await;
    sleep(Duration::from_secs(1)).await;
    let (id, rx) = c
        .send(
            "textDocument/inlineCompletion",
            inline_params(URI, 0, 3, INVOKED),
        )
        .await;
    sleep(Duration::from_millis(205)).await;
    let t = Instant::now();
    c.notify("$/cancelRequest", json!({"id": id})).await;
    let r = rx.await.unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert_eq!(r["error"]["code"], -32800, "{r}");
    sleep(Duration::from_millis(50)).await;
    assert_eq!(c.script.cancelled(), 1);
    assert_eq!(c.script.finished(), 0);
    let noticed = c.script.cancel_times.lock().unwrap()[0];
    assert!(noticed - t <= Duration::from_millis(10));
    let s = c.stats().await;
    assert_eq!(s["cancelledGenerating"], 1, "{s}");
    assert_eq!(s["generating"], 0, "{s}");
    assert_eq!(s["liveTasks"], 0, "{s}");
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_result_for_an_outdated_version_is_never_sent() {
    let mut c = Client::start(Script {
        tokens: 50,
        ..Script::default()
    });
    c.initialize(quick()).await;
    c.open(URI, "abc").await;
    c.stats().await;
    sleep(Duration::from_secs(1)).await;

    // An edit while the model runs: the answer is dropped (and the generation cancelled).
    let (_, rx) = c
        .send(
            "textDocument/inlineCompletion",
            inline_params(URI, 0, 3, AUTOMATIC),
        )
        .await;
    sleep(Duration::from_millis(100)).await;
    c.replace(URI, 1, "abcd").await;
    assert!(texts(&rx.await.unwrap()).is_empty());

    // An edit right behind its request, in the same burst: the request is outdated before
    // the framework even starts it, whatever order it polls them in.
    let calls = c.script.calls();
    let req = json!({"jsonrpc": "2.0", "id": 999, "method": "textDocument/inlineCompletion",
                     "params": inline_params(URI, 0, 4, AUTOMATIC)});
    let change = json!({"jsonrpc": "2.0", "method": "textDocument/didChange",
                        "params": {"textDocument": {"uri": URI, "version": 2},
                                   "contentChanges": [{"text": "zzzz"}]}});
    let mut burst = Vec::new();
    for m in [req, change] {
        let body = m.to_string();
        burst.extend(format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes());
    }
    c.raw(&burst).await;
    let r = c.wait_for_response(999).await;
    assert!(texts(&r).is_empty(), "{r}");
    assert_eq!(
        c.script.calls(),
        calls,
        "an outdated request reached the model"
    );
    let s = c.stats().await;
    assert_eq!(
        s["stale"].as_u64().unwrap() + s["cancelledGenerating"].as_u64().unwrap(),
        2,
        "{s}"
    );
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn unknown_documents_far_positions_bad_json_and_unknown_methods() {
    let mut c = Client::start(Script::default());
    c.initialize(quick()).await;
    c.open(URI, "ab\ncd").await;
    let r = c.inline("file:///proj/nope.py", 0, 0, AUTOMATIC).await;
    assert!(texts(&r).is_empty(), "{r}");
    let r = c.inline(URI, 100_000, 7, AUTOMATIC).await;
    assert!(texts(&r).is_empty(), "{r}");
    // A character past the end of the line is clamped to it.
    let r = c.inline(URI, 0, 4_000_000, AUTOMATIC).await;
    assert_eq!(texts(&r), ["<ab|42>"]);
    assert_eq!(
        r["result"]["items"][0]["range"]["start"],
        json!({"line": 0, "character": 2})
    );
    // Malformed JSON gets a parse error; the server carries on.
    c.raw(b"Content-Length: 9\r\n\r\n{not json").await;
    let err = c.wait_for_response_null_id().await;
    assert_eq!(err["error"]["code"], -32700, "{err}");
    let r = c.call("copilot/noSuchMethod", json!({})).await;
    assert_eq!(r["error"]["code"], -32601, "{r}");
    let r = c
        .call("textDocument/inlineCompletion", json!({"bogus": true}))
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = c.call("textDocument/inlineCompletion", json!([1, 2])).await;
    assert!(r.get("error").is_some(), "{r}");
    let r = c.inline(URI, 1, 1, AUTOMATIC).await;
    assert_eq!(texts(&r), ["<c|42>"]);
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn invoked_may_return_several_choices_automatic_one() {
    let mut c = Client::start(Script::default());
    c.initialize(json!({"model": "/m", "debounceMs": 0, "temperature": 0.8, "choices": 3}))
        .await;
    c.open(URI, "x").await;
    assert_eq!(
        texts(&c.inline(URI, 0, 1, INVOKED).await),
        ["<x|42>", "<x|43>", "<x|44>"]
    );
    assert_eq!(texts(&c.inline(URI, 0, 1, AUTOMATIC).await), ["<x|42>"]);
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"temperature": 0}}),
    )
    .await;
    assert_eq!(texts(&c.inline(URI, 0, 1, INVOKED).await), ["<x|42>"]);
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn completion_fallback_for_clients_without_inline_completion() {
    // Helix-like: no inlineCompletion capability.
    let mut c = Client::start(Script::default());
    let init = c
        .initialize_with(
            quick(),
            json!({"general": {"positionEncodings": ["utf-8"]}}),
        )
        .await;
    let caps = &init["result"]["capabilities"];
    assert_eq!(caps["positionEncoding"], "utf-8");
    assert!(caps["completionProvider"].is_object(), "{caps}");
    c.open(URI, "é = foo").await;
    let r = c
        .call(
            "textDocument/completion",
            json!({"textDocument": {"uri": URI}, "position": {"line": 0, "character": 8},
                   "context": {"triggerKind": 1}}),
        )
        .await;
    let list = &r["result"];
    assert_eq!(list["isIncomplete"], true, "{r}");
    let item = &list["items"][0];
    assert_eq!(item["filterText"], "foo<é = foo|42>");
    assert_eq!(item["textEdit"]["newText"], "foo<é = foo|42>");
    assert_eq!(
        item["textEdit"]["range"],
        json!({"start": {"line": 0, "character": 5}, "end": {"line": 0, "character": 8}})
    );
    assert_eq!(c.shutdown_and_exit().await, 0);

    // An inline-capable client gets no completion provider unless it asks for one.
    let mut c = Client::start(Script::default());
    let init = c.initialize(quick()).await;
    assert!(init["result"]["capabilities"]
        .get("completionProvider")
        .is_none());
    assert_eq!(c.shutdown_and_exit().await, 0);
    let mut c = Client::start(Script::default());
    let mut opts = quick();
    opts["completionFallback"] = json!(true);
    let init = c.initialize(opts).await;
    assert!(init["result"]["capabilities"]["completionProvider"].is_object());
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn completion_fallback_generates_one_choice_whatever_the_trigger_kind() {
    // Helix sends `Invoked` for its automatic requests too: several choices would be several
    // generations before its menu shows anything.
    let mut c = Client::start(Script::default());
    c.initialize_with(
        json!({"model": "/m", "debounceMs": 0, "temperature": 0.8, "choices": 3}),
        json!({"general": {"positionEncodings": ["utf-8"]}}),
    )
    .await;
    c.open(URI, "x").await;
    for kind in [1, 2, 3] {
        let r = c
            .call(
                "textDocument/completion",
                json!({"textDocument": {"uri": URI}, "position": {"line": 0, "character": 1},
                       "context": {"triggerKind": kind}}),
            )
            .await;
        let items = r["result"]["items"].as_array().unwrap();
        let texts: Vec<&str> = items
            .iter()
            .map(|i| i["textEdit"]["newText"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["x<x|42>"], "triggerKind {kind}: {r}");
    }
    // The inline path still offers several choices when invoked.
    assert_eq!(
        c.inline(URI, 0, 1, INVOKED).await["result"]["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn configuration_is_validated_and_a_new_model_is_loaded() {
    let mut c = Client::start(Script::default());
    c.initialize(json!({"model": "/m1", "debounceMs": 0, "temprature": 1}))
        .await;
    let warn = c.wait_for("window/showMessage", |_| true).await;
    assert_eq!(warn["params"]["type"], 2, "{warn}");
    assert!(warn["params"]["message"]
        .as_str()
        .unwrap()
        .contains("`temprature`"));
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"copilot-lsp": {"model": "/m2", "maxTokens": "many", "fimMode": "xyz"}}}),
    )
    .await;
    let err = c
        .wait_for("window/showMessage", |m| m["params"]["type"] == 1)
        .await;
    let text = err["params"]["message"].as_str().unwrap();
    assert!(
        text.contains("`maxTokens`") && text.contains("`fimMode`"),
        "{text}"
    );
    c.open(URI, "y").await;
    assert_eq!(texts(&c.inline(URI, 0, 1, AUTOMATIC).await), ["<y|42>"]);
    assert_eq!(c.script.loads(), 2);
    let specs = c.script.specs.lock().unwrap().clone();
    assert_eq!(specs[0].model, "/m1");
    assert_eq!(specs[1].model, "/m2");
    assert_eq!(c.shutdown_and_exit().await, 0);
}

#[tokio::test(start_paused = true)]
async fn edits_land_in_order_and_encodings_are_honoured() {
    for (enc, col_after_emoji) in [("utf-16", 3), ("utf-8", 5), ("utf-32", 2)] {
        let mut c = Client::start(Script::default());
        let init = c
            .initialize_with(
                quick(),
                json!({"general": {"positionEncodings": [enc]},
                                             "textDocument": {"inlineCompletion": {}}}),
            )
            .await;
        assert_eq!(init["result"]["capabilities"]["positionEncoding"], enc);
        c.open(URI, "a😀\r\nb").await;
        // 200 single-character inserts after the emoji, sent without waiting.
        for i in 0..200u32 {
            c.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": URI, "version": i + 1},
                       "contentChanges": [{"range": {"start": {"line": 0, "character": col_after_emoji + i},
                                                     "end": {"line": 0, "character": col_after_emoji + i}},
                                           "text": "x"}]}),
            )
            .await;
        }
        let d = c.call("copilot/debugDocument", json!({"uri": URI})).await;
        let want = format!("a😀{}\r\nb", "x".repeat(200));
        assert_eq!(d["result"]["text"], want, "{enc}");
        assert_eq!(d["result"]["version"], 200);
        assert_eq!(d["result"]["lineCount"], 2);
        assert_eq!(c.shutdown_and_exit().await, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn exit_codes() {
    let mut c = Client::start(Script::default());
    c.initialize(quick()).await;
    assert_eq!(c.shutdown_and_exit().await, 0);

    let mut c = Client::start(Script::default());
    c.initialize(quick()).await;
    c.notify("exit", Value::Null).await;
    assert_eq!(c.exit_code().await, 1);

    // Exit with a request still waiting for the model: it does not hold the server up.
    let mut c = Client::start(Script {
        load_delay: Duration::from_secs(3600),
        ..Script::default()
    });
    c.initialize(quick()).await;
    c.open(URI, "x").await;
    let _pending = c
        .send(
            "textDocument/inlineCompletion",
            inline_params(URI, 0, 1, AUTOMATIC),
        )
        .await;
    c.call("shutdown", Value::Null).await;
    c.notify("exit", Value::Null).await;
    assert_eq!(c.exit_code().await, 0);

    // The client goes away without a word.
    let mut c = Client::start(Script::default());
    c.initialize(quick()).await;
    c.close_input().await;
    assert_eq!(c.exit_code().await, 1);
}

/// 150 completions for 150 documents, then their cancels: none reaches the model, and a
/// cheap request sent after them is answered at once (it used to wait behind the framework's
/// 64 handler slots).
#[tokio::test(start_paused = true)]
async fn cancelled_completions_never_reach_the_model_and_never_block_reading() {
    let mut c = Client::start(Script {
        tokens: 1000,
        token_delay: Duration::from_millis(10),
        ..Script::default()
    });
    c.initialize(json!({"model": "/models/scripted", "debounceMs": 500}))
        .await;
    c.stats().await;
    let mut pending = Vec::new();
    for i in 0..150 {
        let uri = format!("file:///proj/m{i}.py");
        c.open(&uri, "x = 1\n").await;
        pending.push(
            c.send(
                "textDocument/inlineCompletion",
                inline_params(&uri, 0, 5, AUTOMATIC),
            )
            .await,
        );
    }
    for (id, _) in &pending {
        c.notify("$/cancelRequest", json!({ "id": id })).await;
    }
    let t0 = Instant::now();
    let s = c.stats().await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "the cheap request waited");
    assert_eq!(s["requests"], 150, "{s}");
    for (_, rx) in pending {
        let r = rx.await.unwrap();
        assert_eq!(r["error"]["code"], -32800, "{r}");
    }
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "a cancelled request was answered late"
    );
    assert_eq!(c.script.calls(), 0, "a cancelled request reached the model");
    assert_eq!(c.shutdown_and_exit().await, 0);
}

/// 200 concurrent completions for 200 documents with a slow model: a cheap request is
/// answered at once, one request computes at a time, and the oldest waiting are shed.
#[tokio::test(start_paused = true)]
async fn a_flood_of_completions_sheds_the_oldest_and_never_holds_up_a_cheap_request() {
    let mut c = Client::start(Script {
        tokens: 100,
        token_delay: Duration::from_millis(10),
        ..Script::default()
    });
    c.initialize(quick()).await;
    c.stats().await;
    let mut pending = Vec::new();
    for i in 0..200 {
        let uri = format!("file:///proj/f{i}.py");
        c.open(&uri, "x = 1\n").await;
        pending.push(
            c.send(
                "textDocument/inlineCompletion",
                inline_params(&uri, 0, 5, AUTOMATIC),
            )
            .await,
        );
    }
    let t0 = Instant::now();
    let s = c.stats().await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "the cheap request waited");
    assert_eq!(s["completed"], 0, "{s}");
    let mut answered = 0;
    for (_, rx) in pending {
        let r = rx.await.unwrap();
        assert!(r.get("error").is_none(), "{r}");
        if !texts(&r).is_empty() {
            answered += 1;
        }
    }
    let s = c.stats().await;
    // One computing, eight waiting: the rest were shed as newer requests came.
    assert_eq!(s["shed"], 200 - 1 - 8, "{s}");
    assert_eq!(answered, 9, "{s}");
    assert_eq!(c.script.calls(), 9);
    // Served one at a time: the model's load (100 ms), then nine generations of 1 s each.
    assert_eq!(t0.elapsed(), Duration::from_millis(9100));
    assert_eq!(c.shutdown_and_exit().await, 0);
}

/// The client dies during a long generation: the server stops within a token, not when the
/// generation would have ended.
#[tokio::test(start_paused = true)]
async fn closed_input_during_a_long_generation_stops_the_server_at_once() {
    let mut c = Client::start(Script {
        tokens: 10_000,
        token_delay: Duration::from_millis(10),
        ..Script::default()
    });
    c.initialize(quick()).await;
    c.open(URI, "x = 1\n").await;
    let _pending = c
        .send(
            "textDocument/inlineCompletion",
            inline_params(URI, 0, 5, INVOKED),
        )
        .await;
    while c.stats().await["generating"] != 1 {
        sleep(Duration::from_millis(10)).await;
    }
    let t0 = Instant::now();
    c.close_input().await;
    assert_eq!(c.exit_code().await, 1);
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(c.script.cancelled(), 1);
}
