//! copilot-lsp talking to copilot-lsp: an editor server whose engine is `llama.cpp`,
//! pointed at our own `serve --http` (llama-server's `/props`, `/tokenize` and `/infill`), or
//! `openai` (`/v1/models`, and `/v1/completions` with our prompt as token ids), answers what
//! an editor server with the embedded engine answers, cursor for cursor.
//! Needs `COPILOT_LSP_SHARED` (the pico model, so that completions are not empty); prints
//! `SKIPPED` without.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{caps, inline_params, texts, Lsp, BIN};
use crate::fixtures::pico;

/// Sources and the text each cursor follows (ASCII: UTF-16 columns are byte columns).
const CASES: [(&str, &[&str]); 2] = [
    (
        "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        return f.read()\n\n\ndef main():\n    cfg = read_config(os.environ[\"CONFIG\"])\n    print(cfg)\n",
        &["with open(", "return f.", "cfg = read_", "print("],
    ),
    (
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        self.items.append(item)\n\n    def pop(self):\n        return self.items.pop()\n",
        &["self.items = ", "def pop(self):\n", "return self.items."],
    ),
];

struct HttpServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl HttpServer {
    fn start(model: &Path) -> HttpServer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("http.log");
        let child = Command::new(BIN)
            .args(["serve", "--http", "127.0.0.1:0", "--model"])
            .arg(model)
            .arg("--log-file")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start copilot-lsp serve --http");
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = loop {
            assert!(
                Instant::now() < deadline,
                "the HTTP server never said where it listens"
            );
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(at) = text.find("listening on http://") {
                let rest = &text[at + "listening on ".len()..];
                break rest.split_whitespace().next().unwrap().to_string();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let server = HttpServer {
            child,
            url,
            _dir: dir,
        };
        while !server.healthy() {
            assert!(Instant::now() < deadline, "the model did not load in 120 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `GET /health` answers 200.
    fn healthy(&self) -> bool {
        crate::llama_server::http(&self.url, "GET", "/health", None).0 == 200
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn editor(options: serde_json::Value) -> Lsp {
    let mut common = json!({
        "temperature": 0, "debounceMs": 0, "timeBudgetMs": 60000, "cache": false,
        "prefixTokens": 512, "suffixTokens": 128, "maxTokens": 24,
        "context": {"openFiles": false, "imports": false, "index": false},
    });
    for (k, v) in options.as_object().unwrap() {
        common[k] = v.clone();
    }
    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.initialize(common, caps(&["utf-16"]), None);
    assert_eq!(lsp.wait_model(), "ready", "{}", lsp.log_tail());
    lsp
}

fn position(text: &str, at: usize) -> (u32, u32) {
    let before = &text[..at];
    let line = before.matches('\n').count();
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1);
    (line as u32, col as u32)
}

/// Ask both editor servers at every cursor of [`CASES`]; `(compared, non-empty)`.
fn compare(remote: &mut Lsp, embedded: &mut Lsp) -> (usize, usize) {
    let (mut compared, mut non_empty) = (0, 0);
    for (i, (text, marks)) in CASES.iter().enumerate() {
        let uri = format!("file:///tmp/harness/loop{i}.py");
        remote.open(&uri, text);
        embedded.open(&uri, text);
        for m in marks.iter() {
            let at = text.find(m).unwrap() + m.len();
            let (line, col) = position(text, at);
            let got = texts(&remote.call(
                "textDocument/inlineCompletion",
                inline_params(&uri, line, col, 1),
            ));
            let want = texts(&embedded.call(
                "textDocument/inlineCompletion",
                inline_params(&uri, line, col, 1),
            ));
            assert_eq!(got, want, "after {m:?} in case {i}: {}", remote.log_tail());
            compared += 1;
            non_empty += usize::from(want.iter().any(|t| !t.trim().is_empty()));
        }
    }
    eprintln!("{compared} cursors compared, {non_empty} with a non-empty answer");
    assert!(non_empty >= 3, "too few answers to compare: {non_empty}");
    (compared, non_empty)
}

#[test]
fn an_editor_server_on_our_http_server_answers_as_the_embedded_engine() {
    let Some(model) = pico("an_editor_server_on_our_http_server_answers_as_the_embedded_engine")
    else {
        return;
    };
    let http = HttpServer::start(&model.dir);
    let mut remote = editor(json!({"engine": "llama.cpp", "endpoint": http.url}));
    let mut embedded = editor(json!({"model": model.dir}));
    compare(&mut remote, &mut embedded);
}

/// The `openai` engine with the model's tokenizer sends our own FIM prompt as token ids to
/// `/v1/completions`, which runs them as given: the same prompt as the embedded engine's,
/// so the same completions.
#[test]
fn an_openai_engine_on_our_http_server_answers_as_the_embedded_engine() {
    let Some(model) = pico("an_openai_engine_on_our_http_server_answers_as_the_embedded_engine")
    else {
        return;
    };
    let http = HttpServer::start(&model.dir);
    let tokenizer = model.dir.join("tokenizer.json");
    let mut remote = editor(json!({
        "engine": "openai", "endpoint": http.url, "tokenizer": tokenizer,
    }));
    let mut embedded = editor(json!({"model": model.dir}));
    let (compared, _) = compare(&mut remote, &mut embedded);
    // Every answer was the HTTP server's: it ran a generation per cursor (some ended by
    // the client, whose early-stop rule closes the stream once the answer is final).
    let (status, body) = crate::llama_server::http(&http.url, "GET", "/stats", None);
    assert_eq!(status, 200, "{body}");
    let generations = body["requests"]["generations"].as_u64().unwrap_or(0);
    assert!(generations >= compared as u64, "{body}");
    assert_eq!(body["requests"]["failed"], 0, "{body}");
}
