//! LoRA adapters per workspace through the real protocol: one base model in memory, each
//! repository's completions computed with its own adapter (named by the repository's
//! `.copilot-lsp/adapter` or the `adapters` setting), and never with another's.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::json;

use crate::client::{caps, file_uri, inline_params, texts, Lsp};
use crate::fixtures::{cli_complete, cli_location, position, tiny, Enc};

const SOURCE: &str =
    "def total(items):\n    s = 0\n    for i in items:\n        s += i\n    return s\n";

/// A PEFT adapter for the tiny model (n_embd 64, multi-query: c_attn out 96) with large
/// deltas on every attention projection, so that its completions differ from the base's.
fn write_adapter(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let (r, e, out) = (4usize, 64usize, 96usize);
    let mut t = HashMap::new();
    for layer in 0..2 {
        let k = format!("base_model.model.transformer.h.{layer}.attn.c_attn");
        let a: Vec<f32> = (0..r * e)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.3)
            .collect();
        let b: Vec<f32> = (0..out * r)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.3)
            .collect();
        t.insert(
            format!("{k}.lora_A.weight"),
            Tensor::from_vec(a, (r, e), &Device::Cpu).unwrap(),
        );
        t.insert(
            format!("{k}.lora_B.weight"),
            Tensor::from_vec(b, (out, r), &Device::Cpu).unwrap(),
        );
    }
    candle_core::safetensors::save(&t, dir.join("adapter_model.safetensors")).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        json!({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 8,
               "lora_dropout": 0.0, "target_modules": ["c_attn"], "fan_in_fan_out": false,
               "bias": "none", "use_rslora": false, "rank_pattern": {}, "alpha_pattern": {},
               "base_model_name_or_path": null})
        .to_string(),
    )
    .unwrap();
}

#[test]
fn each_workspace_is_served_by_its_own_adapter_and_never_another() {
    let model = tiny();
    let tmp = tempfile::tempdir().unwrap();
    let (with, without) = (tmp.path().join("with"), tmp.path().join("without"));
    for d in [&with, &without] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("main.py"), SOURCE).unwrap();
    }
    write_adapter(&with.join("lora"));
    std::fs::create_dir_all(with.join(".copilot-lsp")).unwrap();
    std::fs::write(with.join(".copilot-lsp/adapter"), "lora\n").unwrap();

    let at = SOURCE.find("return s").unwrap() + "return ".len();
    let (line, col) = cli_location(SOURCE, at);
    let base = cli_complete(&model, &without, "main.py", line, col, &["--raw"]);

    let mut lsp = Lsp::spawn(&["--stdio"]);
    let folders: Vec<_> = [&with, &without]
        .iter()
        .map(|d| json!({"uri": file_uri(d), "name": d.file_name().unwrap().to_str()}))
        .collect();
    let r = lsp.call(
        "initialize",
        json!({"processId": null, "capabilities": caps(&["utf-16"]),
               "workspaceFolders": folders,
               "initializationOptions": {"model": model.dir, "temperature": 0,
                                         "debounceMs": 0, "postprocess": false,
                                         "timeBudgetMs": 60000}}),
    );
    assert!(r.get("error").is_none(), "{r}");
    lsp.notify("initialized", json!({}));
    assert_eq!(lsp.wait_model(), "ready", "{}", lsp.log_tail());

    let (l, c) = position(SOURCE, at, Enc::Utf16);
    let mut complete = |dir: &Path| {
        let uri = file_uri(&dir.join("main.py"));
        lsp.open(&uri, SOURCE);
        texts(&lsp.call(
            "textDocument/inlineCompletion",
            inline_params(&uri, l, c, 1),
        ))
    };
    let plain = complete(&without);
    let adapted = complete(&with);
    let plain_again = complete(&without);
    assert_eq!(
        plain,
        vec![base.clone()],
        "the workspace without adapter gets the base model"
    );
    assert_eq!(
        plain_again, plain,
        "the adapter never leaks into the other workspace"
    );
    assert_eq!(adapted.len(), 1);
    assert_ne!(adapted[0], base, "the adapter changes the completion");
}

/// A cloned repository is untrusted (issue 15, item 3): symlinks to `/dev/stdin` and
/// `/dev/zero` where the server reads its adapter file and git remote must not hang or bloat
/// a completion, and an adapter path that climbs out of the workspace is refused, said once,
/// and the base model serves.
#[cfg(unix)]
#[test]
fn hostile_repositories_never_hang_bloat_or_escape() {
    use std::os::unix::fs::symlink;
    let model = tiny();
    let tmp = tempfile::tempdir().unwrap();
    let (stdin, zero, escape) = (
        tmp.path().join("stdin"),
        tmp.path().join("zero"),
        tmp.path().join("escape"),
    );
    for d in [&stdin, &zero, &escape] {
        std::fs::create_dir_all(d.join(".copilot-lsp")).unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::write(d.join("main.py"), SOURCE).unwrap();
    }
    symlink("/dev/stdin", stdin.join(".copilot-lsp/adapter")).unwrap();
    symlink("/dev/stdin", stdin.join(".git/config")).unwrap();
    symlink("/dev/zero", zero.join(".copilot-lsp/adapter")).unwrap();
    symlink("/dev/zero", zero.join(".git/config")).unwrap();
    // An adapter that exists, outside the workspace.
    write_adapter(&tmp.path().join("elsewhere"));
    std::fs::write(escape.join(".copilot-lsp/adapter"), "../elsewhere\n").unwrap();

    let at = SOURCE.find("return s").unwrap() + "return ".len();
    let (line, col) = cli_location(SOURCE, at);
    let base = cli_complete(&model, &escape, "main.py", line, col, &["--raw"]);

    let mut lsp = Lsp::spawn(&["--stdio"]);
    let folders: Vec<_> = [&stdin, &zero, &escape]
        .iter()
        .map(|d| json!({"uri": file_uri(d), "name": d.file_name().unwrap().to_str()}))
        .collect();
    let r = lsp.call(
        "initialize",
        json!({"processId": null, "capabilities": caps(&["utf-16"]),
               "workspaceFolders": folders,
               "initializationOptions": {"model": model.dir, "temperature": 0,
                                         "debounceMs": 0, "postprocess": false,
                                         "timeBudgetMs": 60000}}),
    );
    assert!(r.get("error").is_none(), "{r}");
    lsp.notify("initialized", json!({}));
    assert_eq!(lsp.wait_model(), "ready", "{}", lsp.log_tail());

    let (l, c) = position(SOURCE, at, Enc::Utf16);
    for dir in [&stdin, &zero, &escape, &escape] {
        let uri = file_uri(&dir.join("main.py"));
        lsp.open(&uri, SOURCE);
        let got = texts(&lsp.call(
            "textDocument/inlineCompletion",
            inline_params(&uri, l, c, 1),
        ));
        assert_eq!(
            got,
            vec![base.clone()],
            "{}: the base model serves",
            dir.display()
        );
        // Still in sync: the document reads back as sent.
        assert_eq!(lsp.document(&uri)["text"], SOURCE);
    }
    let told = |m: &serde_json::Value| {
        m["method"] == "window/showMessage"
            && m["params"]["message"]
                .as_str()
                .is_some_and(|t| t.contains("outside the workspace"))
    };
    lsp.wait_for("the refusal", told);
    lsp.stats(); // a round trip: anything sent before it has arrived
    let refusals: Vec<_> = lsp
        .unasked("window/showMessage")
        .into_iter()
        .filter(|m| {
            m["params"]["message"]
                .as_str()
                .is_some_and(|t| t.contains("outside the workspace"))
        })
        .collect();
    assert_eq!(
        refusals.len(),
        1,
        "told once: {refusals:?}\n{}",
        lsp.log_tail()
    );
}
