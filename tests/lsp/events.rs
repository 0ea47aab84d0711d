//! The event log through the real binary: an inline completion item carries the
//! `copilot-lsp.accepted` command, running it is recorded, and `copilot-lsp stats` reads it
//! back from the data directory (`XDG_DATA_HOME` pointed at a temporary folder); a corrupt
//! line is skipped and counted; `copilot-lsp events --clear` deletes the log.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::client::{caps, file_uri, inline_params, Lsp, BIN};
use crate::fixtures::models;

const INVOKED: u32 = 1;

fn cli(data: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .env("XDG_DATA_HOME", data)
        .args(args)
        .output()
        .expect("run copilot-lsp");
    assert!(
        out.status.success(),
        "copilot-lsp {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn stats(data: &Path, workspace: &Path) -> Value {
    let ws = workspace.to_str().unwrap();
    serde_json::from_str(&cli(data, &["stats", "--workspace", ws, "--json"])).unwrap()
}

#[test]
fn an_accepted_item_is_counted_by_copilot_lsp_stats() {
    for model in models("an_accepted_item_is_counted_by_copilot_lsp_stats") {
        let data = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        let text = "def add(a, b):\n    return ";
        std::fs::write(project.path().join("m.py"), text).unwrap();
        let uri = file_uri(&project.path().join("m.py"));
        let mut lsp = Lsp::spawn_env(&["--stdio"], &[("XDG_DATA_HOME", data.path())]);
        // Raw output: never empty, even from the random-weight model.
        let init = lsp.initialize(
            json!({"model": model.dir, "temperature": 0, "debounceMs": 0,
                   "postprocess": false, "maxTokens": 8, "timeBudgetMs": 60000}),
            caps(&["utf-16"]),
            Some(project.path()),
        );
        assert_eq!(
            init["result"]["capabilities"]["executeCommandProvider"]["commands"],
            json!(["copilot-lsp.accepted"])
        );
        assert_eq!(lsp.wait_model(), "ready", "{}", lsp.log_tail());
        lsp.open(&uri, text);
        let r = lsp.call(
            "textDocument/inlineCompletion",
            inline_params(&uri, 1, 11, INVOKED),
        );
        let item = r["result"]["items"][0].clone();
        let command = &item["command"];
        assert_eq!(command["command"], "copilot-lsp.accepted", "{r}");
        let id = command["arguments"][0].as_str().unwrap().to_string();
        let r = lsp.call(
            "workspace/executeCommand",
            json!({"command": "copilot-lsp.accepted", "arguments": [id]}),
        );
        assert!(r.get("error").is_none(), "{r}");
        assert_eq!(lsp.shutdown_and_exit().code(), Some(0));

        let s = stats(data.path(), project.path());
        assert!(s["shown"].as_u64().unwrap() >= 1, "{s}");
        assert_eq!(s["accepted"], 1, "{s}");
        assert_eq!(s["acceptance_rate"], 1.0, "{s}");
        assert_eq!(s["corrupt_lines"], 0, "{s}");
        assert!(s["latency_ms_p50"].as_f64().unwrap() > 0.0, "{s}");
        assert_eq!(s["by_day"].as_array().unwrap().len(), 1, "{s}");
        // The log is private, and a corrupt line in it is skipped and counted.
        let files = s["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{s}");
        let file = Path::new(files[0].as_str().unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut log = std::fs::read(file).unwrap();
        log.extend(b"{\"v\":1,\"t\":1,\"id\":\n");
        std::fs::write(file, log).unwrap();
        let s = stats(data.path(), project.path());
        assert_eq!(s["corrupt_lines"], 1, "{s}");
        assert_eq!(s["accepted"], 1, "{s}");
        let table = cli(
            data.path(),
            &["stats", "--workspace", project.path().to_str().unwrap()],
        );
        assert!(
            table.contains("accepted") && table.contains("1 corrupt"),
            "{table}"
        );
        // Cleared: nothing left to count.
        let ws = project.path().to_str().unwrap();
        assert!(cli(data.path(), &["events", "--workspace", ws]).contains(".jsonl"));
        let out = cli(data.path(), &["events", "--clear", "--workspace", ws]);
        assert!(out.starts_with("deleted "), "{out}");
        assert_eq!(stats(data.path(), project.path())["shown"], 0);
    }
}
