//! The `copilot-lsp` command line, run as a user runs it: `complete` end to end on the tiny
//! random checkpoint (always) and on the pico model against transformers' greedy output (when
//! `COPILOT_LSP_SHARED` is set), and the errors a user can provoke.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_copilot-lsp"));
    c.env_remove("COPILOT_LSP_LOG").env("HF_HUB_OFFLINE", "1");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("spawn copilot-lsp")
}

/// Run a command that must succeed and print JSON.
fn run_json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tiny_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["gen-checkpoint", "--out", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn complete_prints_json_with_counts_and_timings() {
    let model = tiny_model();
    let src = tempfile::tempdir().unwrap();
    let f = write(
        src.path(),
        "a.py",
        b"def add(a, b):\n    return \n\nprint(add(1, 2))\n",
    );
    let loc = format!("{}:2:12", f.display());
    let m = model.path().to_str().unwrap();
    let opts = [
        "--model",
        m,
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        "--raw",
    ];
    let v = run_json(&[&["complete", loc.as_str()][..], &opts, &["--json"]].concat());
    assert_eq!(
        v["layout"], "Spm",
        "auto is SPM when code follows the cursor"
    );
    assert!(v["prompt_tokens"].as_u64().unwrap() > 10);
    assert!(v["generated_tokens"].as_u64().unwrap() <= 8);
    assert!(v["prefill_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["completion"], v["raw"], "--raw skips post-processing");
    // Deterministic at temperature 0: the same again, and from stdin (`-` as FILE).
    let again = run(&[&["complete", loc.as_str()][..], &opts].concat());
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        v["completion"].as_str().unwrap()
    );
    let mut child = bin()
        .args([&["complete", "-:2:12"][..], &opts].concat())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&std::fs::read(&f).unwrap()).unwrap();
    }
    let piped = child.wait_with_output().unwrap();
    assert!(piped.status.success());
    assert_eq!(
        String::from_utf8(piped.stdout).unwrap(),
        v["completion"].as_str().unwrap()
    );
}

#[test]
fn user_errors_are_one_line_and_non_zero() {
    let model = tiny_model();
    let m = model.path().to_str().unwrap();
    let src = tempfile::tempdir().unwrap();
    let f = write(src.path(), "a.py", b"x = 1\n");
    let bad = write(src.path(), "b.py", b"x = '\xff'\n");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![format!("{}:9:1", f.display()), "--model".into(), m.into()],
            "past the end",
        ),
        (
            vec![format!("{}:1:99", f.display()), "--model".into(), m.into()],
            "past the end",
        ),
        (
            vec![format!("{}:1:1", bad.display()), "--model".into(), m.into()],
            "UTF-8",
        ),
        (
            vec![
                format!("{}:1:1", src.path().join("nope.py").display()),
                "--model".into(),
                m.into(),
            ],
            "cannot read",
        ),
        (
            vec![
                format!("{}:1:1", f.display()),
                "--model".into(),
                src.path().to_str().unwrap().into(),
            ],
            "config.json",
        ),
        (
            vec![
                format!("{}:1:1", f.display()),
                "--model".into(),
                "/no/such/dir".into(),
            ],
            "no such directory",
        ),
        (
            vec![format!("{}:1", f.display()), "--model".into(), m.into()],
            "FILE:LINE:COL",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["complete".to_string()];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = run(&refs);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} succeeded");
        assert!(err.contains(want), "{all:?}: {err}");
        assert!(!err.contains("panicked"), "{all:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{all:?}: {err}");
    }
}

/// `complete --temperature 0 --raw` on the pico model prints exactly transformers' greedy
/// continuation for the same PSM, SPM and left-to-right prompts (`reference.json`).
#[test]
fn pico_complete_matches_transformers_greedy() {
    let Some(shared) = std::env::var_os("COPILOT_LSP_SHARED") else {
        eprintln!(
            "SKIPPED pico_complete_matches_transformers_greedy: COPILOT_LSP_SHARED is not set"
        );
        return;
    };
    let pico = Path::new(&shared).join("models/pico-starcoder");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pico.join("reference.json")).unwrap())
            .unwrap();
    let src = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in reference["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        // Recover the document and cursor from the FIM layout transformers was given.
        let (fim, prefix, suffix) =
            if let Some(rest) = prompt.strip_prefix("<fim_prefix><fim_suffix>") {
                let (s, p) = rest.split_once("<fim_middle>").unwrap();
                ("spm", p, s)
            } else if let Some(rest) = prompt.strip_prefix("<fim_prefix>") {
                let (p, rest) = rest.split_once("<fim_suffix>").unwrap();
                let s = rest.strip_suffix("<fim_middle>").unwrap();
                ("psm", p, s)
            } else {
                ("off", prompt, "")
            };
        let text = format!("{prefix}{suffix}");
        let f = write(src.path(), &format!("case{checked}.py"), text.as_bytes());
        let line = prefix.matches('\n').count() + 1;
        let col = prefix.rsplit('\n').next().unwrap().chars().count() + 1;
        let v = run_json(&[
            "complete",
            &format!("{}:{line}:{col}", f.display()),
            "--model",
            pico.to_str().unwrap(),
            "--temperature",
            "0",
            "--raw",
            "--max-tokens",
            "24",
            "--fim",
            fim,
            "--json",
        ]);
        assert_eq!(
            v["prompt_tokens"].as_u64().unwrap() as usize,
            case["prompt_ids"].as_array().unwrap().len(),
            "prompt assembly of {prompt:?}"
        );
        assert_eq!(
            v["completion"], case["greedy_text"],
            "greedy text of {prompt:?}"
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// The rotary families through the command line: a tiny checkpoint of each, written as
/// GGUF by `to-gguf`, completes the same from the directory and from the file, with the
/// family's FIM layout.
#[test]
fn every_family_completes_from_its_directory_and_its_gguf() {
    let src = tempfile::tempdir().unwrap();
    let f = write(
        src.path(),
        "a.py",
        b"def add(a, b):\n    return \n\nprint(add(1, 2))\n",
    );
    let loc = format!("{}:2:12", f.display());
    for (shape, layout) in [
        ("tiny-qwen2", "Psm"),
        ("tiny-llama", "Psm"),
        ("tiny-starcoder2", "Spm"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(&[
            "gen-checkpoint",
            "--shape",
            shape,
            "--out",
            dir.path().to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let gguf = dir.path().join("m.gguf");
        let out = run(&[
            "to-gguf",
            "--model",
            dir.path().to_str().unwrap(),
            "--out",
            gguf.to_str().unwrap(),
            "--type",
            "f32",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let complete = |model: &str| {
            run_json(&[
                "complete",
                loc.as_str(),
                "--model",
                model,
                "--temperature",
                "0",
                "--max-tokens",
                "8",
                "--raw",
                "--json",
            ])
        };
        let a = complete(dir.path().to_str().unwrap());
        let b = complete(gguf.to_str().unwrap());
        assert_eq!(a["layout"], layout, "{shape}");
        assert_eq!(a["completion"], b["completion"], "{shape}");
        assert_eq!(a["prompt_tokens"], b["prompt_tokens"], "{shape}");
    }
}

#[test]
fn complete_lists_the_context_it_put_in_the_prompt() {
    let model = tiny_model();
    let ws = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ws.path().join("pkg")).unwrap();
    write(
        ws.path(),
        "pkg/util.py",
        b"def helper_fn(x):\n    \"\"\"Help.\"\"\"\n    return x * 2\n",
    );
    let f = write(
        ws.path(),
        "app.py",
        b"from pkg.util import helper_fn\n\ny = helper_fn(\n",
    );
    let loc = format!("{}:3:15", f.display());
    let m = model.path().to_str().unwrap();
    let w = ws.path().to_str().unwrap();
    let base = [
        "complete",
        &loc,
        "--model",
        m,
        "--temperature",
        "0",
        "--max-tokens",
        "2",
        "--json",
        "--workspace",
        w,
    ];
    let v = run_json(&base);
    let context = v["context"].as_array().unwrap();
    assert!(!context.is_empty(), "{v}");
    let first = context.last().unwrap();
    assert_eq!(
        first["source"], "imports",
        "the most relevant sits last, nearest the code"
    );
    assert_eq!(first["path"], "pkg/util.py");
    assert_eq!(
        first["text"],
        "def helper_fn(x):\n    \"\"\"Help.\"\"\"\n    ..."
    );
    assert!(first["tokens"].as_u64().unwrap() > 0);
    let mut none = base.to_vec();
    none.extend(["--context", "none"]);
    let v = run_json(&none);
    assert_eq!(v["context"], serde_json::json!([]));
    assert!(v["prompt_tokens"].as_u64() < run_json(&base)["prompt_tokens"].as_u64());
}
