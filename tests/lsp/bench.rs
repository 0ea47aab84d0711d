//! Keystroke-to-answer latency through the real protocol. A benchmark, not a test: it runs
//! only with `COPILOT_LSP_BENCH=1`, best in release:
//!
//! ```text
//! COPILOT_LSP_BENCH=1 COPILOT_LSP_SHARED=/path/to/shared \
//!   cargo test --release -p copilot-lsp --test lsp bench -- --nocapture
//! ```
//!
//! Models: the pico model (with `COPILOT_LSP_SHARED`) and a tiny_starcoder_py-shaped random
//! checkpoint (`COPILOT_LSP_BENCH_MODEL=DIR`, else made with `gen-checkpoint --shape
//! tiny_starcoder_py`, using pico's tokenizer when available). For each model the editor
//! types `COPILOT_LSP_BENCH_KEYS` characters (default 40) into a Python file, one
//! `didChange` plus `inlineCompletion` per keystroke (as VS Code and Neovim do), waiting for
//! each answer: latency is from writing the keystroke to reading its answer, with the
//! server's default settings (debounce included).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{caps, file_uri, inline_params, texts, Lsp, BIN};
use crate::fixtures::{pico, position, Enc, Model};

const PREFIX: &str = "import json\nimport os\n\n\nclass Config:\n    \"\"\"Settings read from a JSON file.\"\"\"\n\n    def __init__(self, path):\n        self.path = path\n        self.values = {}\n\n    def load(self):\n        with open(self.path) as f:\n            self.values = json.load(f)\n        return self\n\n    def get(self, key, default=None):\n";
const SUFFIX: &str = "\n\n\ndef main():\n    cfg = Config(os.environ[\"CONFIG\"]).load()\n    print(cfg.get(\"name\"))\n";
const TYPED: &str =
    "        value = self.values.get(key)\n        if value is None:\n            return default\n";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn shaped_checkpoint(keep: &mut Vec<tempfile::TempDir>) -> Model {
    if let Some(dir) = std::env::var_os("COPILOT_LSP_BENCH_MODEL") {
        return Model {
            name: "tiny_starcoder_py-shaped",
            dir: PathBuf::from(dir),
        };
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["gen-checkpoint", "--shape", "tiny_starcoder_py", "--out"])
        .arg(dir.path());
    if let Some(p) = std::env::var_os("COPILOT_LSP_SHARED") {
        let tok = PathBuf::from(p).join("models/pico-starcoder/tokenizer.json");
        if tok.exists() {
            cmd.arg("--tokenizer").arg(tok);
        }
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Model {
        name: "tiny_starcoder_py-shaped",
        dir: dir.path().to_path_buf(),
    };
    keep.push(dir);
    m
}

#[test]
fn bench_keystroke_to_answer_latency() {
    if std::env::var_os("COPILOT_LSP_BENCH").is_none() {
        eprintln!("SKIPPED bench_keystroke_to_answer_latency: set COPILOT_LSP_BENCH=1 to run it");
        return;
    }
    let keys: usize = std::env::var("COPILOT_LSP_BENCH_KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(40);
    let mut keep = Vec::new();
    let mut models: Vec<Model> = pico("bench_keystroke_to_answer_latency")
        .into_iter()
        .collect();
    models.push(shaped_checkpoint(&mut keep));
    for model in models {
        let dir = tempfile::tempdir().unwrap();
        let uri = file_uri(&dir.path().join("config.py"));
        let mut lsp = Lsp::spawn(&["--stdio"]);
        lsp.initialize(
            json!({"model": model.dir}),
            caps(&["utf-16"]),
            Some(dir.path()),
        );
        let t = Instant::now();
        assert_eq!(lsp.wait_model(), "ready", "{}", lsp.log_tail());
        let load = t.elapsed();
        let mut text = format!("{PREFIX}{SUFFIX}");
        lsp.open(&uri, &text);
        let mut cursor = PREFIX.len();
        let mut latencies = Vec::new();
        let mut empty = 0;
        for (i, ch) in TYPED.chars().cycle().take(keys).enumerate() {
            let (l, c) = position(&text, cursor, Enc::Utf16);
            text.insert(cursor, ch);
            cursor += ch.len_utf8();
            let change = json!({"range": {"start": {"line": l, "character": c}, "end": {"line": l, "character": c}},
                                "text": ch.to_string()});
            let mut bytes = Lsp::notification_bytes(
                "textDocument/didChange",
                json!({"textDocument": {"uri": uri, "version": i + 1}, "contentChanges": [change]}),
            );
            let (l, c) = position(&text, cursor, Enc::Utf16);
            let (id, req) = lsp.request_bytes(
                "textDocument/inlineCompletion",
                inline_params(&uri, l, c, 2),
            );
            bytes.extend(req);
            let t = Instant::now();
            lsp.raw(&bytes);
            let r = lsp.response(id);
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            if texts(&r).is_empty() {
                empty += 1;
            }
            // A short pause, as between keystrokes of a thinking typist.
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!(
            "BENCH {}: load {:.0} ms; keystroke-to-answer over {} keystrokes: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} empty answers); stats {}",
            model.name,
            load.as_secs_f64() * 1e3,
            sorted.len(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.95),
            sorted.last().unwrap(),
            empty,
            lsp.stats()
        );
        assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
    }
}
