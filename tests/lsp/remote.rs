//! Remote engines through the real binary, against scripted servers on 127.0.0.1
//! (`copilot_remote::fake`): a completion from llama-server's `/infill`; and the faults (engine
//! down at start, killed mid-stream, a 500, one that never answers, one that streams
//! garbage): the server keeps answering, one message per class of fault, no panic, and
//! completions come back once the engine does.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use copilot_remote::fake::{dead_port, FakeServer, Reply};
use serde_json::json;

use crate::client::{caps, inline_params, texts, Lsp};

const URI: &str = "file:///tmp/harness/remote.py";
const TEXT: &str = "def add(a, b):\n    return \n\nprint(add(1, 2))\n";

fn infill(pieces: &[&str]) -> Reply {
    let mut events: Vec<String> = pieces
        .iter()
        .map(|p| json!({"content": p, "stop": false}).to_string())
        .collect();
    events.push(json!({"content": "", "stop": true, "stop_type": "eos"}).to_string());
    Reply::sse(&events, Duration::from_millis(1))
}

/// A llama-server whose `/infill` answers as `reply` says (`/props` and `/tokenize` work).
fn llama(reply: impl Fn() -> Reply + Send + Sync + 'static) -> FakeServer {
    FakeServer::start(move |req| match req.path.as_str() {
        "/props" => {
            Reply::Json(json!({"default_generation_settings": {"n_ctx": 2048}}).to_string())
        }
        "/tokenize" => Reply::Json(json!({"tokens": [1, 2, 3]}).to_string()),
        _ => reply(),
    })
}

fn start(endpoint: &str) -> Lsp {
    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.initialize(
        json!({"engine": "llama.cpp", "endpoint": endpoint, "debounceMs": 0,
               "temperature": 0, "postprocess": false, "cache": false}),
        caps(&["utf-16"]),
        None,
    );
    // A remote engine is ready at once, answering or not.
    assert_eq!(lsp.wait_model(), "ready", "{}", lsp.log_tail());
    lsp.open(URI, TEXT);
    lsp
}

/// An automatic request at the end of `return `: its texts, and how long it took.
fn complete(lsp: &mut Lsp) -> (Vec<String>, Duration) {
    let t = Instant::now();
    let r = lsp.call(
        "textDocument/inlineCompletion",
        inline_params(URI, 1, 11, 2),
    );
    (texts(&r), t.elapsed())
}

/// The messages shown about the engine.
fn engine_messages(lsp: &mut Lsp) -> Vec<String> {
    lsp.unasked("window/showMessage")
        .iter()
        .map(|m| m["params"]["message"].as_str().unwrap_or("").to_string())
        .filter(|m| m.contains("llama.cpp at"))
        .collect()
}

/// Requests during a fault: each answered empty, once more after the backoff; one message
/// naming `detail`; the server alive and well.
fn assert_fault_is_contained(lsp: &mut Lsp, detail: &str) {
    for round in 0..2 {
        for _ in 0..3 {
            let (got, _) = complete(lsp);
            assert!(got.is_empty(), "{got:?}");
        }
        if round == 0 {
            // Past the first backoff: the engine is tried again.
            std::thread::sleep(Duration::from_millis(700));
        }
    }
    let m = lsp.wait_for("a message about the engine", |m| {
        m["method"] == "window/showMessage"
            && m["params"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("llama.cpp at")
    });
    assert_eq!(m["params"]["type"], 1, "{m}");
    let messages = engine_messages(lsp);
    assert_eq!(
        messages.len(),
        1,
        "one message per class of fault: {messages:?}"
    );
    assert!(messages[0].contains(detail), "{messages:?}");
    let stats = lsp.stats();
    assert_eq!(stats["model"], "ready", "{stats}");
    assert!(!lsp.log_text().contains("panicked"), "{}", lsp.log_tail());
}

#[test]
fn a_completion_from_llama_server() {
    let server = llama(|| infill(&["a ", "+ b"]));
    let mut lsp = start(&server.url());
    let (got, _) = complete(&mut lsp);
    assert_eq!(got, vec!["a + b".to_string()]);
    let sent = server.seen_at("/infill")[0].json();
    assert_eq!(sent["input_prefix"], "def add(a, b):\n    return ");
    assert_eq!(sent["input_suffix"], "\n\nprint(add(1, 2))\n");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn an_engine_down_at_start() {
    let url = format!("http://127.0.0.1:{}", dead_port());
    let mut lsp = start(&url);
    let t = Instant::now();
    assert_fault_is_contained(&mut lsp, "connection refused");
    // Nothing waited on the dead engine (700 ms of that is the test's own pause).
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn an_engine_killed_mid_stream() {
    let server = llama(|| Reply::Stream {
        content_type: "text/event-stream",
        chunks: vec![format!(
            "data: {}\n\n",
            json!({"content": "a", "stop": false})
        )],
        gap: Duration::from_millis(1),
        cut: true,
    });
    let mut lsp = start(&server.url());
    assert_fault_is_contained(&mut lsp, "broke");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn an_engine_that_answers_500() {
    let server = llama(|| Reply::Status(500, r#"{"error":{"message":"out of memory"}}"#.into()));
    let mut lsp = start(&server.url());
    assert_fault_is_contained(&mut lsp, "HTTP 500");
    let m = engine_messages(&mut lsp);
    assert!(m[0].contains("out of memory"), "{m:?}");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn an_engine_that_never_answers() {
    let server = llama(|| Reply::Silence);
    let mut lsp = start(&server.url());
    // The first request waits for the response timeout; the ones after it answer at once.
    let (_, first) = complete(&mut lsp);
    let (_, second) = complete(&mut lsp);
    assert!(second < first, "{second:?} after {first:?}");
    assert!(second < Duration::from_secs(1), "{second:?}");
    assert_fault_is_contained(&mut lsp, "no answer");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn an_engine_that_streams_garbage() {
    let server = llama(|| Reply::Stream {
        content_type: "text/event-stream",
        chunks: vec!["\u{1}\u{2}garbage\n\n".into(), "<html>502</html>\n".into()],
        gap: Duration::from_millis(1),
        cut: false,
    });
    let mut lsp = start(&server.url());
    assert_fault_is_contained(&mut lsp, "not a server-sent event");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn two_kinds_of_fault_two_messages_then_completions_again() {
    let mode = Arc::new(AtomicU8::new(0));
    let m = mode.clone();
    let server = llama(move || match m.load(Ordering::SeqCst) {
        0 => Reply::Status(500, "{}".into()),
        1 => Reply::Status(401, r#"{"error":"no key"}"#.into()),
        _ => infill(&["a + b"]),
    });
    let mut lsp = start(&server.url());
    let wait_backoff = || std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..3 {
        complete(&mut lsp);
    }
    mode.store(1, Ordering::SeqCst);
    wait_backoff();
    for _ in 0..3 {
        complete(&mut lsp);
    }
    lsp.wait_for("the second message", |m| {
        m["params"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("401")
    });
    let messages = engine_messages(&mut lsp);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("HTTP 500") && messages[1].contains("apiKeyEnv"));
    mode.store(2, Ordering::SeqCst);
    let back = Instant::now();
    let mut got = Vec::new();
    while got.is_empty() && back.elapsed() < Duration::from_secs(40) {
        wait_backoff();
        got = complete(&mut lsp).0;
    }
    assert_eq!(got, vec!["a + b".to_string()]);
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}
