//! Completions through the real protocol: parity with `copilot-lsp complete`, a burst of
//! edits where only the last request is computed, and `$/cancelRequest` mid-generation.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{caps, file_uri, inline_params, texts, Lsp};
use crate::fixtures::{cli_complete, cli_location, models, position, Enc, Model};

const INVOKED: u32 = 1;
const AUTOMATIC: u32 = 2;

const SOURCE: &str = "import os\n\n\ndef read_config(path):\n    \"\"\"Read the configuration file: données.\"\"\"\n    with open(path) as f:\n        return f.read()\n\n\ndef main():\n    cfg = read_config(os.environ[\"CONFIG\"])\n    print(cfg)\n";

/// A project folder with `main.py` (the CLI reads the file; the server gets the folder as its
/// root). Neither shows the model a path header by default.
fn project(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.py"), text).unwrap();
    dir
}

fn start(model: &Model, root: &Path, options: Value) -> Lsp {
    let mut lsp = Lsp::spawn(&["--stdio"]);
    // No decoding budget: the CLI has none, and parity must not depend on the machine's speed.
    let mut opts =
        json!({"model": model.dir, "temperature": 0, "debounceMs": 0, "timeBudgetMs": 60000});
    for (k, v) in options.as_object().unwrap() {
        opts[k] = v.clone();
    }
    lsp.initialize(opts, caps(&["utf-16"]), Some(root));
    assert_eq!(lsp.wait_model(), "ready", "{}", lsp.log_tail());
    lsp
}

#[test]
fn inline_completion_at_temperature_0_equals_copilot_lsp_complete() {
    for model in models("inline_completion_at_temperature_0_equals_copilot_lsp_complete") {
        let dir = project(SOURCE);
        let uri = file_uri(&dir.path().join("main.py"));
        // Mid-file (after the non-ASCII docstring: FIM with a suffix) and at the very end
        // (nothing after the cursor).
        let cursors = [SOURCE.find("f.read()").unwrap() + 2, SOURCE.len()];
        // Parity must be checked on real text at least once. (At the end of the file the
        // random tiny model writes only bytes that are not UTF-8, which are dropped.)
        let mut raw_non_empty = 0;
        for postprocess in [false, true] {
            for &at in &cursors {
                let (line, col) = cli_location(SOURCE, at);
                let extra: &[&str] = if postprocess { &[] } else { &["--raw"] };
                let want = cli_complete(&model, dir.path(), "main.py", line, col, extra);
                // A fresh server per case: the KV cache then starts empty, as in the CLI.
                // The CLI's fixed budgets: left unset, the server sizes them to the
                // machine's measured speed.
                let mut lsp = start(
                    &model,
                    dir.path(),
                    json!({"postprocess": postprocess, "prefixTokens": 1536, "suffixTokens": 512}),
                );
                lsp.open(&uri, SOURCE);
                let (l, c) = position(SOURCE, at, Enc::Utf16);
                let r = lsp.call(
                    "textDocument/inlineCompletion",
                    inline_params(&uri, l, c, INVOKED),
                );
                let got = texts(&r);
                let case = format!(
                    "{} model, postprocess {postprocess}, cursor {line}:{col}",
                    model.name
                );
                if want.is_empty() {
                    assert!(got.is_empty(), "{case}: server {got:?}, CLI nothing");
                } else {
                    assert_eq!(got, vec![want.clone()], "{case}");
                    let item = &r["result"]["items"][0];
                    assert_eq!(item["range"]["start"], json!({"line": l, "character": c}));
                    assert_eq!(
                        item["range"]["end"], item["range"]["start"],
                        "one-line range"
                    );
                }
                if !postprocess && !want.is_empty() {
                    raw_non_empty += 1;
                }
                assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
            }
        }
        assert!(
            raw_non_empty > 0,
            "{} model: every raw completion was empty",
            model.name
        );
    }
}

#[test]
fn twenty_rapid_edits_only_the_last_request_is_computed() {
    for model in models("twenty_rapid_edits_only_the_last_request_is_computed") {
        let dir = project("");
        let uri = file_uri(&dir.path().join("main.py"));
        // Default debounce (50 ms), raw output so the answer is not empty.
        let mut lsp = start(
            &model,
            dir.path(),
            json!({"debounceMs": 50, "postprocess": false, "maxTokens": 16}),
        );
        lsp.open(&uri, "");
        let typed = "def fib(n):\n    if n < 2:";
        let mut text = String::new();
        let mut burst = Vec::new();
        let mut ids = Vec::new();
        for (i, ch) in typed.chars().take(20).enumerate() {
            let (l, c) = position(&text, text.len(), Enc::Utf16);
            text.push(ch);
            let change = json!({"range": {"start": {"line": l, "character": c},
                                          "end": {"line": l, "character": c}},
                                "text": ch.to_string()});
            burst.extend(Lsp::notification_bytes(
                "textDocument/didChange",
                json!({"textDocument": {"uri": uri, "version": i + 1}, "contentChanges": [change]}),
            ));
            let (l, c) = position(&text, text.len(), Enc::Utf16);
            let (id, bytes) = lsp.request_bytes(
                "textDocument/inlineCompletion",
                inline_params(&uri, l, c, AUTOMATIC),
            );
            burst.extend(bytes);
            ids.push(id);
        }
        // One write: the pairs arrive as fast as a pipe can carry them.
        lsp.raw(&burst);
        let answers: Vec<Value> = ids.iter().map(|&id| lsp.response(id)).collect();
        for (i, r) in answers[..19].iter().enumerate() {
            let cancelled = r["error"]["code"] == -32800;
            assert!(
                cancelled || texts(r).is_empty(),
                "{} model: request {} answered for an outdated version: {r}",
                model.name,
                i + 1
            );
        }
        assert_eq!(lsp.document(&uri)["text"], text.as_str());
        std::fs::write(dir.path().join("main.py"), &text).unwrap();
        let (line, col) = crate::fixtures::cli_location(&text, text.len());
        let want = cli_complete(
            &model,
            dir.path(),
            "main.py",
            line,
            col,
            &["--raw", "--max-tokens", "16"],
        );
        assert_eq!(
            texts(&answers[19]),
            vec![want],
            "{} model: the last answer",
            model.name
        );
        let s = lsp.stats();
        assert_eq!(s["completed"], 1, "{s}");
        assert_eq!(
            s["generations"], 1,
            "only the last request reached the model: {s}"
        );
        assert_eq!(s["requests"], 20, "{s}");
        assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
    }
}

#[test]
fn cancel_request_mid_generation_answers_request_cancelled_promptly() {
    for model in models("cancel_request_mid_generation_answers_request_cancelled_promptly") {
        let dir = project(SOURCE);
        let uri = file_uri(&dir.path().join("main.py"));
        // Long raw generations at a high temperature (no early end of text).
        let mut lsp = start(
            &model,
            dir.path(),
            json!({"postprocess": false, "maxTokens": 2048, "temperature": 1.0, "choices": 1}),
        );
        lsp.open(&uri, SOURCE);
        let (l, c) = position(SOURCE, SOURCE.len(), Enc::Utf16);
        let mut caught = false;
        for attempt in 0..10 {
            let id = lsp.request(
                "textDocument/inlineCompletion",
                inline_params(&uri, l, c, INVOKED),
            );
            // Wait until the model is generating for it, then cancel.
            let mut generating = false;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if lsp.stats()["generating"] == 1 {
                    generating = true;
                    break;
                }
                if let Some(r) = lsp.try_response(id, Duration::ZERO) {
                    eprintln!(
                        "{} model, attempt {attempt}: finished before it could be cancelled: {}",
                        model.name, &r["result"]
                    );
                    break;
                }
            }
            if !generating {
                continue;
            }
            let before = lsp.stats();
            let t = Instant::now();
            lsp.notify("$/cancelRequest", json!({"id": id}));
            let r = lsp.response(id);
            let took = t.elapsed();
            if r.get("result").is_some() {
                eprintln!(
                    "{} model, attempt {attempt}: finished as the cancel arrived",
                    model.name
                );
                continue;
            }
            assert_eq!(r["error"]["code"], -32800, "{r}");
            assert!(took < Duration::from_secs(2), "cancellation took {took:?}");
            // The model stopped: the next request is answered, and nothing is generating.
            let after = lsp.stats();
            assert_eq!(
                after["cancelledGenerating"].as_u64().unwrap(),
                before["cancelledGenerating"].as_u64().unwrap() + 1,
                "{after}"
            );
            let t = Instant::now();
            let next = lsp.call(
                "textDocument/inlineCompletion",
                inline_params(&uri, 0, 0, AUTOMATIC),
            );
            assert!(next.get("error").is_none(), "{next}");
            eprintln!(
                "{} model: RequestCancelled {:.1} ms after $/cancelRequest; next answer in {:.1} ms",
                model.name,
                took.as_secs_f64() * 1e3,
                t.elapsed().as_secs_f64() * 1e3
            );
            caught = true;
            break;
        }
        if !caught {
            // The model is too fast to catch mid-generation here: cancel while debouncing.
            eprintln!(
                "{} model: never caught generating; cancelling during the debounce instead",
                model.name
            );
            lsp.notify(
                "workspace/didChangeConfiguration",
                json!({"settings": {"debounceMs": 10000}}),
            );
            let id = lsp.request(
                "textDocument/inlineCompletion",
                inline_params(&uri, l, c, INVOKED),
            );
            std::thread::sleep(Duration::from_millis(50));
            let t = Instant::now();
            lsp.notify("$/cancelRequest", json!({"id": id}));
            let r = lsp.response(id);
            assert_eq!(r["error"]["code"], -32800, "{r}");
            assert!(t.elapsed() < Duration::from_secs(2));
        }
        assert_eq!(lsp.stats()["generating"], 0);
        assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
    }
}
