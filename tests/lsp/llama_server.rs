//! Against a real llama.cpp `llama-server` running the pico model (written as GGUF by our
//! own writer): we are a faithful client of `/infill`; through `/v1/completions` with the
//! `starcoder` template the server gets the embedded engine's very prompt ids; a cancelled
//! stream stops the server's generation. Needs `COPILOT_LSP_SHARED` (the pico model) and
//! `COPILOT_LSP_LLAMA_SERVER` (the binary: `.ci/run` sets it when
//! `/work/shared/tools/build-llama-server.sh` has cached one); prints `SKIPPED` without.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use copilot_pipeline::{
    CancelToken, Completer, CompletionOptions, CompletionRequest, LanguageModel,
};
use copilot_remote::openai::PromptBody;
use serde_json::{json, Value};

use crate::fixtures::{cli_complete, cli_location, pico, Model};

/// Sources and cursors: mid-line, line ends, inside blocks, at the end of a file.
const SOURCES: [(&str, &[&str]); 3] = [
    (
        "import os\n\n\ndef read_config(path):\n    \"\"\"Read the configuration file.\"\"\"\n    with open(path) as f:\n        return f.read()\n\n\ndef main():\n    cfg = read_config(os.environ[\"CONFIG\"])\n    print(cfg)\n",
        &["with open(", "return f.", "def main():\n", "cfg = read_", "print(", "\n    print(cfg)\n"],
    ),
    (
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        self.items.append(item)\n\n    def pop(self):\n        return self.items.pop()\n\n    def __len__(self):\n        return len(self.items)\n",
        &["self.items = ", "def pop(self):\n", "return self.items.", "def __len__"],
    ),
    (
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\nfor i in range(10):\n    print(fib(i))\n",
        &["if n < ", "return fib(", "for i in ", "print(fib(i))\n"],
    ),
];

const MAX_TOKENS: usize = 24;

fn llama_bin(test: &str) -> Option<PathBuf> {
    match std::env::var_os("COPILOT_LSP_LLAMA_SERVER") {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        Some(p) => panic!(
            "COPILOT_LSP_LLAMA_SERVER={} is not a file",
            p.to_string_lossy()
        ),
        None => {
            eprintln!(
                "SKIPPED {test}: COPILOT_LSP_LLAMA_SERVER is not set (build it with \
                 /work/shared/tools/build-llama-server.sh)"
            );
            None
        }
    }
}

/// The pico checkpoint as an f32 GGUF with its tokenizer inside, by our writer.
fn pico_gguf(model: &Model, dir: &Path) -> PathBuf {
    f32_gguf(&model.dir, &dir.join("pico-f32.gguf"))
}

/// A hub-format checkpoint directory written as an f32 GGUF at `path` by our writer.
fn f32_gguf(src: &Path, path: &Path) -> PathBuf {
    let cfg_path = src.join("config.json");
    let cfg =
        copilot_engine::Config::from_json(&std::fs::read_to_string(&cfg_path).unwrap(), &cfg_path)
            .unwrap();
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let tok: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    copilot_engine::gguf::write(
        path,
        &cfg,
        &tensors,
        candle_core::quantized::GgmlDType::F32,
        Some(&tok),
    )
    .unwrap();
    path.to_path_buf()
}

/// One plain HTTP/1.1 exchange (`Connection: close`): status and JSON body.
/// One HTTP request on its own connection: the status and the JSON body (`Null` if none).
pub(crate) fn http(url: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let host = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).expect("connect to the HTTP server");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(rest).unwrap_or(Value::Null))
}

struct LlamaServer {
    child: Child,
    url: String,
    log: PathBuf,
}

impl LlamaServer {
    fn start(bin: &Path, gguf: &Path, dir: &Path) -> LlamaServer {
        let port = copilot_remote::fake::dead_port();
        let log = dir.join("llama-server.log");
        let child = Command::new(bin)
            .arg("-m")
            .arg(gguf)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-c", "1024", "-np", "1", "-t", "2", "--metrics"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn llama-server");
        let server = LlamaServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if TcpStream::connect(server.url.trim_start_matches("http://")).is_ok()
                && http(&server.url, "GET", "/health", None).0 == 200
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "llama-server did not start:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Tokens llama-server has generated since it started (`/metrics`).
    fn predicted_total(&self) -> f64 {
        let host = self.url.trim_start_matches("http://");
        let mut s = TcpStream::connect(host).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.lines()
            .find(|l| l.starts_with("llamacpp:tokens_predicted_total"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no tokens_predicted_total in /metrics:\n{out}"))
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every (file, cursor) case, with the file written into `dir`.
fn cases(dir: &Path) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    for (i, (text, marks)) in SOURCES.iter().enumerate() {
        let name = format!("case{i}.py");
        std::fs::write(dir.join(&name), text).unwrap();
        for m in marks.iter() {
            let at = text.find(m).expect("mark in source") + m.len();
            out.push((name.clone(), text.to_string(), at));
        }
    }
    out
}

#[test]
fn against_a_real_llama_server() {
    let test = "against_a_real_llama_server";
    let Some(model) = pico(test) else { return };
    let Some(bin) = llama_bin(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let gguf = pico_gguf(&model, dir.path());
    let server = LlamaServer::start(&bin, &gguf, dir.path());
    let url = server.url.clone();
    let cases = cases(dir.path());
    assert!(cases.len() >= 10);
    let max = MAX_TOKENS.to_string();

    // 1. `complete --engine llama.cpp --raw` prints what /infill answers for the same
    //    prefix and suffix (PSM keeps the suffix even where it is blank).
    let mut same_as_embedded = 0;
    for (file, text, at) in &cases {
        let (line, col) = cli_location(text, *at);
        let ours = cli_complete(
            &model,
            dir.path(),
            file,
            line,
            col,
            &[
                "--raw",
                "--fim",
                "psm",
                "--context",
                "none",
                "--max-tokens",
                &max,
                "--engine",
                "llama.cpp",
                "--endpoint",
                &url,
            ],
        );
        let (status, theirs) = http(
            &url,
            "POST",
            "/infill",
            Some(
                &json!({"input_prefix": &text[..*at], "input_suffix": &text[*at..],
                         "n_predict": MAX_TOKENS, "temperature": 0, "cache_prompt": true}),
            ),
        );
        assert_eq!(status, 200, "{theirs}");
        assert_eq!(
            ours,
            theirs["content"].as_str().unwrap(),
            "{file} at {line}:{col}"
        );
        let embedded = cli_complete(
            &model,
            dir.path(),
            file,
            line,
            col,
            &[
                "--raw",
                "--fim",
                "psm",
                "--context",
                "none",
                "--max-tokens",
                &max,
            ],
        );
        same_as_embedded += usize::from(embedded == ours);
    }
    eprintln!(
        "llama.cpp's /infill equals the embedded engine on {same_as_embedded} of {} prompts",
        cases.len()
    );

    // 2. Through /v1/completions with the starcoder template and the pico tokenizer: the
    //    embedded engine's ids, and llama-server's own answer for those ids.
    let tokenizer = model.dir.join("tokenizer.json");
    let tokenizer = tokenizer.to_str().unwrap();
    let spec = copilot_remote::RemoteArgs {
        engine: Some("openai"),
        endpoint: Some(&url),
        template: Some("starcoder"),
        tokenizer: Some(tokenizer),
        ..Default::default()
    }
    .resolve()
    .0
    .unwrap();
    let remote = copilot_remote::Remote::connect_blocking(spec, &|_| {}).unwrap();
    let remote_completer = Completer::new(Arc::new(remote.clone()));
    let embedded = Completer::load(
        &copilot_pipeline::ModelSpec {
            model: model.dir.display().to_string(),
            device: copilot_pipeline::DeviceSpec::Cpu,
            ..Default::default()
        },
        &|_| {},
    )
    .unwrap();
    assert_eq!(remote.info().window, embedded.model().info().window);
    let mut text_mode_same = 0;
    for (file, text, at) in &cases {
        let req = CompletionRequest {
            text: text.clone(),
            cursor: *at,
            path: None,
            adapter: None,
            ids: None,
            snippets: Vec::new(),
            options: CompletionOptions {
                temperature: 0.0,
                max_tokens: MAX_TOKENS,
                postprocess: false,
                time_budget: None,
                cache: false,
                ..CompletionOptions::default()
            },
        };
        let p = embedded.prepare(&req);
        let want = copilot_pipeline::Embedded::new(embedded.engine().unwrap().clone())
            .encode(&p.prompt, p.max_new)
            .unwrap();
        let pr = remote_completer.prepare(&req);
        assert_eq!(pr.prompt, p.prompt, "{file}: the same prompt");
        assert_eq!(
            remote.openai_prompt(&pr.prompt, pr.max_new),
            PromptBody::Ids(want.clone()),
            "{file}"
        );
        let (line, col) = cli_location(text, *at);
        let ours: Value = serde_json::from_str(&cli_complete(
            &model,
            dir.path(),
            file,
            line,
            col,
            &[
                "--raw",
                "--json",
                "--context",
                "none",
                "--max-tokens",
                &max,
                "--engine",
                "openai",
                "--endpoint",
                &url,
                "--template",
                "starcoder",
                "--tokenizer",
                tokenizer,
            ],
        ))
        .unwrap();
        let (status, theirs) = http(
            &url,
            "POST",
            "/v1/completions",
            Some(&json!({"prompt": want, "max_tokens": MAX_TOKENS, "temperature": 0})),
        );
        assert_eq!(status, 200, "{theirs}");
        assert_eq!(
            ours["prompt_tokens"].as_u64(),
            Some(want.len() as u64),
            "{file} at {line}:{col}: the server counted our prompt as the embedded ids"
        );
        assert_eq!(
            theirs["usage"]["prompt_tokens"].as_u64(),
            Some(want.len() as u64)
        );
        assert_eq!(
            ours["raw"], theirs["choices"][0]["text"],
            "{file} at {line}:{col}"
        );
        // Without a tokenizer the prompt goes as text, the server tokenizing it whole.
        let text_prompt = copilot_remote::template::to_text(&copilot_remote::template::render(
            &p.prompt,
            copilot_remote::Family::StarCoder,
        ));
        let (_, t) = http(
            &url,
            "POST",
            "/tokenize",
            Some(&json!({"content": text_prompt, "add_special": false, "parse_special": true})),
        );
        let ids: Vec<u32> = serde_json::from_value(t["tokens"].clone()).unwrap_or_default();
        text_mode_same += usize::from(ids == want);
    }
    eprintln!(
        "as text, llama-server tokenizes our prompt to the embedded ids on {text_mode_same} of {} prompts",
        cases.len()
    );

    // 3. A stream cut off by the client: the server stops generating.
    let before = server.predicted_total();
    let (file_text, at) = (&cases[0].1, cases[0].2);
    let mut job_req = CompletionRequest {
        text: file_text.clone(),
        cursor: at,
        path: None,
        adapter: None,
        ids: None,
        snippets: Vec::new(),
        options: CompletionOptions {
            temperature: 1.0,
            max_tokens: 512,
            postprocess: false,
            time_budget: None,
            cache: false,
            ..CompletionOptions::default()
        },
    };
    job_req.options.seed = 3;
    let cancel = CancelToken::new();
    let c = cancel.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        c.cancel();
    });
    let r = remote_completer.complete_blocking(job_req, cancel);
    stopper.join().unwrap();
    assert!(
        matches!(r, Err(copilot_pipeline::PipelineError::Cancelled)),
        "{r:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = server.predicted_total();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.predicted_total(),
        after,
        "still generating after the client left"
    );
    eprintln!(
        "cancelled after 150 ms: llama-server generated {} tokens of the 512 asked",
        after - before
    );
    assert!(after - before < 512.0, "{}", server.log_text());
}

/// The transformers-made checkpoint of every new family (the engine's fixtures: Qwen2 tied
/// and untied with GQA, Llama with linear RoPE scaling, StarCoder2), written as f32 GGUF by
/// our writer: llama.cpp loads each file and, greedy, continues each prompt with the very
/// tokens the embedded engine gives for the same file.
#[test]
fn llama_cpp_runs_our_gguf_of_every_family_with_our_greedy_tokens() {
    let test = "llama_cpp_runs_our_gguf_of_every_family_with_our_greedy_tokens";
    let Some(bin) = llama_bin(test) else {
        return;
    };
    const NEW_TOKENS: usize = 12;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/families");
    let prompts = [
        "def total(xs):\n    s = 0\n    for x in xs:\n",
        "import os\n\nclass Config:\n    def __init__(self, path):\n        self.",
        "x = [1, 2, 3]\nprint(",
    ];
    let (mut compared, mut same) = (0, 0);
    for name in [
        "qwen2-tied",
        "qwen2-untied-kv4",
        "llama-linear-rope",
        "starcoder2-window",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let gguf = f32_gguf(
            &fixtures.join(name),
            &dir.path().join(format!("{name}.gguf")),
        );
        let engine = copilot_engine::load(
            &copilot_engine::ModelSpec {
                model: gguf.display().to_string(),
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap();
        let server = LlamaServer::start(&bin, &gguf, dir.path());
        // StarCoder2's sliding window: llama.cpp reads none for `starcoder2` (its hparams
        // loader takes the norm epsilon only) and attends to every key, so prompt and
        // continuation stay within the window here; the engine's own tests check the
        // window against transformers.
        let window = engine.config().window().unwrap_or(usize::MAX);
        for text in prompts {
            let mut ids = engine.tokenizer().encode_text(text).unwrap();
            ids.truncate(window.saturating_sub(NEW_TOKENS).max(1));
            let ours = engine
                .generate_blocking(copilot_engine::GenerateRequest::new(
                    ids.clone(),
                    copilot_engine::GenerateParams {
                        max_new_tokens: NEW_TOKENS,
                        temperature: 0.0,
                        ..Default::default()
                    },
                ))
                .unwrap()
                .tokens;
            let (status, v) = http(
                &server.url,
                "POST",
                "/completion",
                Some(&json!({
                    "prompt": ids, "n_predict": NEW_TOKENS, "temperature": 0, "top_k": 1,
                    "return_tokens": true, "cache_prompt": false,
                })),
            );
            assert_eq!(status, 200, "{name}: {v}\n{}", server.log_text());
            let theirs: Vec<u32> = v["tokens"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no tokens in {v}"))
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            // Either may end early on an end-of-generation token the other does not treat
            // as one (llama.cpp stops on a family's FIM tokens): compare what both made.
            let n = ours.len().min(theirs.len());
            assert!(
                n > 0,
                "{name} {text:?}: ours {ours:?}, llama.cpp {theirs:?}"
            );
            assert_eq!(
                ours[..n],
                theirs[..n],
                "{name} {text:?}: the embedded engine and llama.cpp differ"
            );
            compared += 1;
            same += usize::from(ours == theirs);
        }
    }
    eprintln!("{compared} continuations compared, {same} identical to the last token");
}
