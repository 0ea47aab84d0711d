//! Hostile input through the real binary: the exact messages an adversarial client sent
//! (issue 15), each of which used to kill, hang or desynchronise the server, and the bounds
//! on what a client can make it hold.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{caps, inline_params, texts, Lsp};
use crate::fixtures::{models, tiny, Model};

const INVOKED: u32 = 1;
const AUTOMATIC: u32 = 2;

fn frame(body: &str) -> Vec<u8> {
    format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// A server on `model` with raw, short completions and no debounce, unless `options` say.
fn start(model: &Model, options: Value) -> Lsp {
    let mut lsp = Lsp::spawn(&["--stdio"]);
    let mut opts = json!({"model": model.dir, "debounceMs": 0, "postprocess": false,
                          "maxTokens": 4, "offline": true});
    for (k, v) in options.as_object().unwrap() {
        opts[k] = v.clone();
    }
    lsp.initialize(opts, caps(&["utf-16"]), None);
    assert_eq!(lsp.wait_model(), "ready", "{}", lsp.log_tail());
    lsp
}

/// Settings for generations that take long: many tokens, sampled, no time budget.
fn long_generations() -> Value {
    json!({"maxTokens": 2048, "temperature": 1.0, "timeBudgetMs": 60000, "choices": 1})
}

fn insert(uri: &str, version: i32, line: u32, character: u32, text: &str) -> Value {
    json!({"textDocument": {"uri": uri, "version": version},
           "contentChanges": [{"range": {"start": {"line": line, "character": character},
                                         "end": {"line": line, "character": character}},
                               "text": text}]})
}

#[test]
fn request_ids_that_are_floats_or_past_i64_are_answered_as_sent() {
    let mut lsp = start(&tiny(), json!({}));
    // Each of these used to end the server (exit 1).
    for id in ["1.0", "9223372036854775808", "3000000000", "-7.5", "1e3"] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"copilot/debugStats"}}"#);
        lsp.raw(&frame(&body));
        let r = lsp.response_with_raw_id(id);
        assert!(r["result"]["requests"].is_u64(), "{id}: {r}");
    }
    // `$/cancelRequest` by such an id reaches its request (tower-lsp-server's own cancel
    // takes only i32 ids).
    lsp.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"debounceMs": 10000}}),
    );
    let uri = "file:///tmp/harness/ids.py";
    lsp.open(uri, "x = 1\n");
    let id = "3000000001";
    let req = json!({"jsonrpc": "2.0", "id": 3_000_000_001u64,
                     "method": "textDocument/inlineCompletion",
                     "params": inline_params(uri, 0, 5, AUTOMATIC)});
    lsp.raw(&frame(&req.to_string()));
    lsp.notify("$/cancelRequest", json!({"id": 3_000_000_001u64}));
    let r = lsp.response_with_raw_id(id);
    assert_eq!(r["error"]["code"], -32800, "{r}");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn a_bad_frame_costs_only_itself_and_edits_after_it_land() {
    let mut lsp = start(&tiny(), json!({}));
    let uri = "file:///tmp/harness/frames.py";
    lsp.open(uri, "");
    let stats =
        |id: u32| json!({"jsonrpc": "2.0", "id": id, "method": "copilot/debugStats"}).to_string();
    let cases: Vec<(&str, String)> = vec![
        (
            "Content-Length too short",
            format!("Content-Length: 10\r\n\r\n{}", stats(901)),
        ),
        (
            "Content-Length missing",
            format!("Content-Type: application/json\r\n\r\n{}", stats(902)),
        ),
        (
            "Content-Length absurd",
            format!("Content-Length: 1000000000000\r\n\r\n{}", stats(903)),
        ),
        (
            "Content-Length not a number",
            format!("Content-Length: ten\r\n\r\n{}", stats(905)),
        ),
        (
            "an HTTP request",
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        ),
        (
            "Content-Length too long",
            format!("Content-Length: 5000\r\n\r\n{}", stats(904)),
        ),
    ];
    let mut text = String::new();
    for (i, (what, bad)) in cases.iter().enumerate() {
        // The bad frame, then an edit and a request, in one write.
        let edit = i.to_string();
        let change = Lsp::notification_bytes(
            "textDocument/didChange",
            insert(uri, i as i32 + 1, 0, text.len() as u32, &edit),
        );
        text.push_str(&edit);
        let (id, req) = lsp.request_bytes("copilot/debugStats", Value::Null);
        lsp.raw(&[bad.as_bytes(), &change, &req].concat());
        let r = lsp
            .try_response(id, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{what}: no answer after it\n{}", lsp.log_tail()));
        assert!(r["result"].is_object(), "{what}: {r}");
        assert_eq!(lsp.document(uri)["text"], text.as_str(), "{what}");
    }
    // A length too long ends at the next header: that message was whole, and is answered.
    assert!(lsp.response(904)["result"].is_object());
    // One parse error for each of the others (the too-short one's leftover is not answered
    // twice).
    let deadline = Instant::now() + Duration::from_secs(10);
    while lsp.null_id_count() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lsp.null_id_count(), 5);
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

/// Peak resident memory of a process, in bytes (Linux).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn a_100_mb_header_line_is_not_buffered() {
    let mut lsp = start(&tiny(), json!({}));
    let Some(before) = peak_rss(lsp.pid()) else {
        eprintln!("SKIPPED a_100_mb_header_line_is_not_buffered: no /proc");
        return;
    };
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        lsp.raw(&chunk);
    }
    lsp.raw(b"\r\n");
    assert!(lsp.stats()["requests"].is_u64());
    let e = lsp.null_id_response();
    assert_eq!(e["error"]["code"], -32700, "{e}");
    let after = peak_rss(lsp.pid()).unwrap();
    assert!(
        after < before + (16 << 20),
        "peak RSS grew by {} MB",
        (after - before) >> 20
    );
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn a_message_above_the_size_limit_is_refused_and_skipped() {
    let mut lsp = start(&tiny(), json!({}));
    let text = "x".repeat(64 << 20);
    let open = json!({"jsonrpc": "2.0", "method": "textDocument/didOpen",
                      "params": {"textDocument": {"uri": "file:///tmp/harness/huge.py",
                                                  "languageId": "python", "version": 0,
                                                  "text": text}}});
    lsp.raw(&frame(&open.to_string()));
    let e = lsp.null_id_response();
    assert_eq!(e["error"]["code"], -32700, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("above the limit"), "{message}");
    assert_eq!(lsp.stats()["documents"], 0);
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn an_invalid_setting_keeps_the_model_in_force() {
    let mut lsp = start(&tiny(), json!({"device": "cpu"}));
    let uri = "file:///tmp/harness/settings.py";
    lsp.open(uri, "def f(x):\n    return");
    let complete = |lsp: &mut Lsp| {
        texts(&lsp.call(
            "textDocument/inlineCompletion",
            inline_params(uri, 1, 10, INVOKED),
        ))
    };
    let want = complete(&mut lsp);
    assert!(!want.is_empty(), "the raw completion should not be empty");
    for (settings, key) in [
        (json!({"model": ""}), "model"),
        (json!({"device": "tpu"}), "device"),
        (json!({"model": "   ", "dtype": "int3"}), "dtype"),
    ] {
        lsp.notify(
            "workspace/didChangeConfiguration",
            json!({ "settings": settings }),
        );
        lsp.wait_for("the settings error", |m| {
            m["method"] == "window/showMessage"
                && m["params"]["message"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("`{key}`")))
        });
        assert_eq!(
            lsp.stats()["model"],
            "ready",
            "{settings}: the model was reloaded"
        );
        assert_eq!(complete(&mut lsp), want, "{settings}");
    }
    // One model load in all, and never the built-in default.
    let begins = lsp
        .unasked("$/progress")
        .iter()
        .filter(|m| m["params"]["value"]["kind"] == "begin")
        .count();
    assert_eq!(begins, 1);
    assert!(
        !lsp.log().contains("tiny_starcoder_py"),
        "{}",
        lsp.log_tail()
    );
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

fn open_many(lsp: &Lsp, n: usize, prefix: &str) -> Vec<String> {
    let uris: Vec<String> = (0..n)
        .map(|i| format!("file:///tmp/harness/{prefix}{i}.py"))
        .collect();
    let bytes: Vec<u8> = uris
        .iter()
        .flat_map(|u| {
            Lsp::notification_bytes(
                "textDocument/didOpen",
                json!({"textDocument": {"uri": u, "languageId": "python", "version": 0,
                                        "text": "def f(x):\n    return"}}),
            )
        })
        .collect();
    lsp.raw(&bytes);
    uris
}

#[test]
fn cancelled_requests_never_reach_the_model() {
    // A long debounce: every request is still waiting when its cancel arrives.
    let mut opts = long_generations();
    opts["debounceMs"] = json!(3000);
    let mut lsp = start(&tiny(), opts);
    let uris = open_many(&lsp, 150, "cancelled");
    // 150 completions in one write, then 150 cancels in another, then a cheap request.
    let mut requests = Vec::new();
    let mut ids = Vec::new();
    for u in &uris {
        let (id, b) = lsp.request_bytes(
            "textDocument/inlineCompletion",
            inline_params(u, 1, 10, AUTOMATIC),
        );
        ids.push(id);
        requests.extend(b);
    }
    lsp.raw(&requests);
    let cancels: Vec<u8> = ids
        .iter()
        .flat_map(|id| Lsp::notification_bytes("$/cancelRequest", json!({ "id": id })))
        .collect();
    lsp.raw(&cancels);
    for id in ids {
        let r = lsp.response(id);
        assert_eq!(r["error"]["code"], -32800, "{r}");
    }
    let s = lsp.stats();
    assert_eq!(
        s["generations"], 0,
        "a cancelled request reached the model: {s}"
    );
    assert_eq!(s["cancelledWaiting"], 150, "{s}");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn two_hundred_concurrent_completions_never_hold_up_a_cheap_request() {
    let mut lsp = start(&tiny(), long_generations());
    let uris = open_many(&lsp, 200, "flood");
    let mut requests = Vec::new();
    let mut ids = Vec::new();
    for u in &uris {
        let (id, b) = lsp.request_bytes(
            "textDocument/inlineCompletion",
            inline_params(u, 1, 10, AUTOMATIC),
        );
        ids.push(id);
        requests.extend(b);
    }
    let (stats_id, stats) = lsp.request_bytes("copilot/debugStats", Value::Null);
    requests.extend(stats);
    lsp.raw(&requests);
    // The cheap request is answered while the model still has the flood in hand: it waited
    // for no completion (it used to wait for dozens of them, 20 s).
    let s = lsp.response(stats_id)["result"].clone();
    assert!(s["completed"].as_u64().unwrap() <= 1, "{s}");
    // Every completion is answered, none twice; the oldest waiting were shed for newer ones.
    for &id in &ids {
        let r = lsp.response(id);
        assert!(r.get("error").is_none(), "{r}");
    }
    lsp.poll();
    let s = lsp.stats();
    assert_eq!(s["requests"], 200, "{s}");
    assert!(s["shed"].as_u64().unwrap() >= 150, "{s}");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn completions_past_the_in_flight_bound_are_refused_at_once() {
    // A long debounce holds every request in flight; distinct documents, so none supersedes
    // another.
    let mut opts = long_generations();
    opts["debounceMs"] = json!(10000);
    let mut lsp = start(&tiny(), opts);
    let uris = open_many(&lsp, 300, "inflight");
    let mut requests = Vec::new();
    let mut ids = Vec::new();
    for u in &uris {
        let (id, b) = lsp.request_bytes(
            "textDocument/inlineCompletion",
            inline_params(u, 1, 10, AUTOMATIC),
        );
        ids.push(id);
        requests.extend(b);
    }
    lsp.raw(&requests);
    // The 44 past the bound of 256 are answered at once, with a clear error.
    for &id in &ids[256..] {
        let r = lsp.response(id);
        assert_eq!(r["error"]["code"], -32803, "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("256 completion requests are in flight"),
            "{message}"
        );
    }
    // Cheap requests are not counted, and the ones in flight are still there to cancel.
    assert_eq!(lsp.stats()["liveTasks"], 256);
    for &id in &ids[..256] {
        lsp.notify("$/cancelRequest", json!({ "id": id }));
    }
    for &id in &ids[..256] {
        assert_eq!(lsp.response(id)["error"]["code"], -32800);
    }
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn a_lone_surrogate_is_one_replacement_character_and_edits_stay_in_sync() {
    let mut lsp = start(&tiny(), json!({}));
    let uri = "file:///tmp/harness/surrogate.js";
    lsp.open(uri, "ab\n");
    // The exact bytes a JavaScript client sends for a lone high surrogate typed at column 1.
    let change = r#"{"jsonrpc":"2.0","method":"textDocument/didChange","params":{"textDocument":{"uri":"URI","version":1},"contentChanges":[{"range":{"start":{"line":0,"character":1},"end":{"line":0,"character":1}},"text":"\ud83d"}]}}"#;
    lsp.raw(&frame(&change.replace("URI", uri)));
    // The next edit, at UTF-16 column 2 (after that one unit), lands where the client meant.
    lsp.notify("textDocument/didChange", insert(uri, 2, 0, 2, "X"));
    // A lone low surrogate, and a valid pair, at the end of the line.
    let change = r#"{"jsonrpc":"2.0","method":"textDocument/didChange","params":{"textDocument":{"uri":"URI","version":3},"contentChanges":[{"range":{"start":{"line":0,"character":4},"end":{"line":0,"character":4}},"text":"\ude00|\ud83d\ude00"}]}}"#;
    lsp.raw(&frame(&change.replace("URI", uri)));
    lsp.notify("textDocument/didChange", insert(uri, 4, 0, 8, "!"));
    assert_eq!(lsp.document(uri)["text"], "a\u{FFFD}Xb\u{FFFD}|😀!\n");
    assert_eq!(lsp.null_id_count(), 0, "an edit was answered with an error");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn a_dollar_request_is_answered_method_not_found() {
    let mut lsp = start(&tiny(), json!({}));
    let id = lsp.request("$/foo", json!({}));
    let r = lsp
        .try_response(id, Duration::from_secs(20))
        .expect("a `$/` request was never answered");
    assert_eq!(r["error"]["code"], -32601, "{r}");
    // `$/` notifications may be ignored.
    lsp.notify("$/bar", json!({}));
    assert!(lsp.stats()["requests"].is_u64());
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn error_messages_name_no_internal_type() {
    let mut lsp = start(&tiny(), json!({}));
    for (method, params) in [
        ("textDocument/inlineCompletion", json!(5)),
        ("textDocument/inlineCompletion", json!([])),
        ("textDocument/completion", json!("x")),
        ("copilot/debugDocument", json!(5)),
    ] {
        let r = lsp.call(method, params.clone());
        assert_eq!(r["error"]["code"], -32602, "{method} {params}: {r}");
        let message = r["error"]["message"].as_str().unwrap();
        for internal in ["Stamped", "DocumentParams", "struct"] {
            assert!(!message.contains(internal), "{method} {params}: {message}");
        }
    }
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let mut lsp = Lsp::spawn_with(&["--stdio"], &[], false);
    lsp.initialize(
        json!({"model": tiny().dir, "topP": 7}),
        caps(&["utf-16"]),
        None,
    );
    lsp.wait_model();
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
    let log = lsp.log_bytes();
    assert!(
        String::from_utf8_lossy(&log).contains("settings"),
        "nothing was logged"
    );
    assert!(!log.contains(&0x1b), "ANSI escapes in the log");
}

#[test]
fn no_backtrace_reaches_a_message_to_the_user() {
    // A GGUF file with a bad magic: candle's reader fails with an error that captures a
    // backtrace under RUST_BACKTRACE=1 and prints it in its message.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("broken.gguf");
    std::fs::write(&model, b"XXXXjunkjunkjunkjunkjunk").unwrap();
    let mut lsp = Lsp::spawn_with(&["--stdio"], &[("RUST_BACKTRACE", "1")], true);
    lsp.initialize(
        json!({"model": model, "offline": true}),
        caps(&["utf-16"]),
        None,
    );
    assert_eq!(lsp.wait_model(), "failed");
    let m = lsp.wait_for("the load error", |m| m["method"] == "window/showMessage");
    let text = m["params"]["message"].as_str().unwrap();
    assert!(text.contains("unknown magic"), "{text}");
    for frame in ["   0: ", "candle_core::", "backtrace", "error.rs:"] {
        assert!(!text.contains(frame), "a backtrace in the message: {text}");
    }
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn stdin_closed_during_a_long_completion_exits_promptly() {
    for model in models("stdin_closed_during_a_long_completion_exits_promptly") {
        let mut opts = long_generations();
        opts["choices"] = json!(8);
        let mut lsp = start(&model, opts);
        let uri = "file:///tmp/harness/close.py";
        lsp.open(uri, "def f(x):\n    return");
        let id = lsp.request(
            "textDocument/inlineCompletion",
            inline_params(uri, 1, 10, INVOKED),
        );
        let t0 = Instant::now();
        while lsp.stats()["generating"] != 1 {
            if lsp.try_response(id, Duration::ZERO).is_some() {
                eprintln!("{} model: finished before stdin closed", model.name);
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30));
        }
        lsp.close_stdin();
        let t = Instant::now();
        let status = lsp.wait_exit(Duration::from_secs(3)).unwrap_or_else(|| {
            panic!("{} model: still running 3 s after stdin closed", model.name)
        });
        assert_eq!(status.code(), Some(1));
        eprintln!(
            "{} model: exited {:.0} ms after stdin closed",
            model.name,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}

#[test]
fn no_completion_holds_a_replacement_character() {
    // Emoji around the cursor, and the cursor inside a surrogate pair: small models write
    // bytes that are not UTF-8 there (pico did at every length from 1 token).
    let text = "😀😀😀😀😀😀😀😀\ns = '😀'\n";
    for model in models("no_completion_holds_a_replacement_character") {
        let mut lsp = start(&model, json!({"temperature": 1.0, "cache": false}));
        let uri = "file:///tmp/harness/emoji.py";
        lsp.open(uri, text);
        let mut seen = 0;
        for max_tokens in [1, 2, 3, 8, 16] {
            for seed in 0..4 {
                lsp.notify(
                    "workspace/didChangeConfiguration",
                    json!({"settings": {"maxTokens": max_tokens, "seed": seed,
                                        "temperature": if seed == 0 { 0.0 } else { 1.0 }}}),
                );
                for (line, col) in [(0, 2), (0, 3), (0, 7), (1, 6)] {
                    let r = lsp.call(
                        "textDocument/inlineCompletion",
                        inline_params(uri, line, col, AUTOMATIC),
                    );
                    for t in texts(&r) {
                        seen += 1;
                        assert!(
                            !t.contains('\u{FFFD}'),
                            "{} model, {max_tokens} tokens, seed {seed}, at {line}:{col}: {t:?}",
                            model.name
                        );
                    }
                }
            }
        }
        assert!(seen > 0, "{} model: no completion at all", model.name);
        assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
    }
}

#[test]
fn documents_past_the_bounds_are_refused_clearly_and_come_back() {
    let mut lsp = start(&tiny(), json!({}));
    // Over the per-document bound: not kept, completions empty, the user told once.
    let uri = "file:///tmp/harness/big.py";
    let big = "#".repeat((32 << 20) + 1);
    lsp.open(uri, &big);
    let r = lsp.call(
        "textDocument/inlineCompletion",
        inline_params(uri, 0, 3, AUTOMATIC),
    );
    assert!(texts(&r).is_empty(), "{r}");
    let m = lsp.wait_for("the size warning", |m| {
        m["method"] == "window/showMessage"
            && m["params"]["message"]
                .as_str()
                .is_some_and(|t| t.contains("32 MiB"))
    });
    assert_eq!(m["params"]["type"], 2, "{m}");
    assert_eq!(lsp.document(uri), Value::Null);
    // A full-text change that fits brings it back, and edits apply again.
    lsp.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 1}, "contentChanges": [{"text": "x = 1\n"}]}),
    );
    lsp.notify("textDocument/didChange", insert(uri, 2, 0, 5, "2"));
    assert_eq!(lsp.document(uri)["text"], "x = 12\n");
    drop(big);

    // Past the most documents: the least recently changed is closed, the newest kept.
    let uris = open_many(&lsp, 1000, "many");
    assert_eq!(lsp.stats()["documents"], 1000);
    assert_eq!(lsp.document(uri), Value::Null, "the oldest was kept");
    assert_eq!(lsp.document(&uris[999])["text"], "def f(x):\n    return");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn a_short_soak_loses_nothing_and_keeps_every_document_in_sync() {
    // `copilot-lsp bench --scenario soak` at a small scale (BENCHMARKS.md has the full run).
    let report = copilot_bench::soak::run(&copilot_bench::soak::SoakOptions {
        server: crate::client::BIN.into(),
        model: tiny().dir.display().to_string(),
        messages: 3000,
        documents: 20,
        outstanding: 16,
        seed: 7,
    })
    .unwrap();
    eprintln!("{}", report.table());
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.duplicated, 0);
    assert_eq!(report.errors, 0);
    assert_eq!(report.diverged_documents, 0);
    assert_eq!(report.exit_code, Some(0));
    assert!(report.completions.samples > 100, "{report:?}");
    assert_eq!(report.samples.len(), 2);
}
