//! Shutdown, exit codes, a model that cannot load, and no process left behind.

use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{caps, inline_params, texts, Lsp};
use crate::fixtures::tiny;

#[test]
fn shutdown_then_exit_exits_0_and_exit_alone_exits_1() {
    let model = tiny();
    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.initialize(json!({"model": model.dir}), caps(&[]), None);
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));

    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.initialize(json!({"model": model.dir}), caps(&[]), None);
    lsp.notify("exit", Value::Null);
    let status = lsp
        .wait_exit(Duration::from_secs(10))
        .expect("exit without shutdown");
    assert_eq!(status.code(), Some(1));

    // After shutdown, requests are refused; exit still ends the process.
    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.initialize(json!({"model": model.dir}), caps(&[]), None);
    lsp.call("shutdown", Value::Null);
    let r = lsp.call("copilot/debugStats", Value::Null);
    assert!(r.get("error").is_some(), "{r}");
    lsp.notify("exit", Value::Null);
    assert_eq!(
        lsp.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );

    // The editor dies: stdin closes, the server exits (1) instead of lingering.
    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.initialize(json!({"model": model.dir}), caps(&[]), None);
    lsp.close_stdin();
    let status = lsp
        .wait_exit(Duration::from_secs(10))
        .expect("exit on closed stdin");
    assert_eq!(status.code(), Some(1));

    // Exit before initialize.
    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.notify("exit", Value::Null);
    assert_eq!(
        lsp.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(1)
    );
}

#[test]
fn exit_with_a_generation_in_flight_leaves_nothing_running() {
    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.initialize(
        json!({"model": tiny().dir, "debounceMs": 0, "postprocess": false, "maxTokens": 2048, "temperature": 1.0}),
        caps(&[]),
        None,
    );
    lsp.wait_model();
    let uri = "file:///tmp/harness/exit.py";
    lsp.open(uri, "def f(x):\n    return");
    let _id = lsp.request(
        "textDocument/inlineCompletion",
        inline_params(uri, 1, 10, 1),
    );
    lsp.call("shutdown", Value::Null);
    lsp.notify("exit", Value::Null);
    // The process ends (every thread with it) promptly, model thread included.
    let status = lsp
        .wait_exit(Duration::from_secs(10))
        .expect("the process lingered after exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_model_that_cannot_load_is_reported_once_and_the_server_stays_up() {
    let mut lsp = Lsp::spawn(&["--stdio"]);
    lsp.initialize(
        json!({"model": "/nonexistent/copilot-lsp-model", "offline": true, "debounceMs": 0}),
        caps(&["utf-16"]),
        None,
    );
    assert_eq!(lsp.wait_model(), "failed");
    let uri = "file:///tmp/harness/nomodel.py";
    lsp.open(uri, "print(1)\n");
    for _ in 0..3 {
        let r = lsp.call("textDocument/inlineCompletion", inline_params(uri, 0, 8, 2));
        assert!(texts(&r).is_empty(), "{r}");
    }
    let m = lsp.wait_for("showMessage", |m| m["method"] == "window/showMessage");
    assert_eq!(m["params"]["type"], 1, "{m}");
    assert!(m["params"]["message"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/copilot-lsp-model"));
    // A bad setting is reported too, with the key's name; the server still answers.
    lsp.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"topP": 7, "colour": "blue"}}),
    );
    let m = lsp.wait_for("settings message", |m| {
        m["method"] == "window/showMessage"
            && m["params"]["message"].as_str().unwrap().contains("topP")
    });
    assert!(
        m["params"]["message"]
            .as_str()
            .unwrap()
            .contains("`colour`"),
        "{m}"
    );
    let load_failures = lsp
        .unasked("window/showMessage")
        .iter()
        .filter(|m| {
            m["params"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot load")
        })
        .count();
    assert_eq!(load_failures, 1);
    assert_eq!(lsp.stats()["model"], "failed");
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}
