//! The remote engines against scripted servers on 127.0.0.1 (`copilot_remote::fake`): what
//! each API is sent, how streams are read, the stop rules and cancellation closing the
//! connection, every class of fault with its backoff, and the API key never leaking.
//! Real time, short timeouts; nothing here asserts a duration beyond "well before".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use copilot_fim::{build_prompt, Budget, Layout, PromptInput, TokenCounter};
use copilot_pipeline::{
    CancelToken, Completer, CompletionOptions, CompletionRequest, Embedded, FimChoice, Job,
    LanguageModel, PipelineError, Sampling, StopReason,
};
use copilot_remote::fake::{dead_port, FakeServer, Reply, Seen};
use copilot_remote::openai::PromptBody;
use copilot_remote::{EngineKind, Remote, RemoteSpec, TemplateChoice, Timeouts};
use serde_json::{json, Value};

const MS: Duration = Duration::from_millis(1);

fn spec(kind: EngineKind, url: &str) -> RemoteSpec {
    RemoteSpec {
        kind,
        endpoint: url.to_string(),
        model: None,
        api_key_env: None,
        template: TemplateChoice::Auto,
        tokenizer: None,
        timeouts: Timeouts {
            connect: 500 * MS,
            response: 400 * MS,
            idle: 400 * MS,
        },
    }
}

async fn connect(spec: RemoteSpec) -> Remote {
    Remote::connect(spec, &|_| {}).await.expect("connect")
}

fn infill_events(pieces: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = pieces
        .iter()
        .map(|p| json!({"content": p, "stop": false}).to_string())
        .collect();
    v.push(
        json!({"content": "", "stop": true, "stop_type": "limit", "tokens_evaluated": 12,
               "timings": {"prompt_n": 2, "cache_n": 10, "prompt_ms": 1.25,
                           "predicted_n": pieces.len(), "predicted_ms": 9.5}})
        .to_string(),
    );
    v
}

fn openai_events(pieces: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = pieces
        .iter()
        .map(|p| json!({"choices": [{"text": p, "index": 0, "finish_reason": null}]}).to_string())
        .collect();
    v.push(
        json!({"choices": [{"text": "", "index": 0, "finish_reason": "length"}],
                  "usage": {"prompt_tokens": 7, "completion_tokens": pieces.len()}})
        .to_string(),
    );
    v.push("[DONE]".to_string());
    v
}

/// A llama-server: `/props`, `/tokenize` (one token per 2 bytes), and `/infill` as `infill`.
fn llama_server(infill: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeServer {
    FakeServer::start(move |req| match req.path.as_str() {
        "/props" => Reply::Json(
            json!({"default_generation_settings": {"n_ctx": 1024}, "model_path": "/m/pico.gguf"})
                .to_string(),
        ),
        "/tokenize" => {
            let n = req.json()["content"]
                .as_str()
                .unwrap_or("")
                .len()
                .div_ceil(2);
            Reply::Json(json!({"tokens": vec![1; n]}).to_string())
        }
        "/infill" => infill(req),
        _ => Reply::Status(404, r#"{"error":"no such path"}"#.into()),
    })
}

fn request(text: &str, cursor: usize) -> CompletionRequest {
    CompletionRequest {
        text: text.to_string(),
        cursor,
        path: None,
        adapter: None,
        ids: None,
        snippets: Vec::new(),
        options: CompletionOptions {
            temperature: 0.0,
            max_tokens: 16,
            postprocess: false,
            time_budget: None,
            cache: false,
            ..CompletionOptions::default()
        },
    }
}

/// A job with a plain PSM prompt of `prefix`/`suffix`.
fn job(prefix: &str, suffix: &str) -> Job {
    let prompt = build_prompt(
        &PromptInput {
            prefix,
            suffix,
            ..PromptInput::default()
        },
        &copilot_fim::STARCODER,
        Layout::Psm,
        &Budget::default(),
        &copilot_fim::CharCounter,
    );
    Job {
        prompt,
        snippets: Vec::new(),
        sampling: Sampling {
            max_new_tokens: 200,
            temperature: 0.0,
            top_p: 1.0,
            top_k: None,
            seed: 1,
            stop_strings: Vec::new(),
            soft_budget: None,
        },
        stop: None,
        on_text: None,
        ids: None,
        cancel: CancelToken::new(),
        adapter: None,
    }
}

#[tokio::test]
async fn llama_cpp_through_the_pipeline() {
    let server = llama_server(|_| Reply::sse(&infill_events(&["ret", "urn x", "\n"]), MS));
    let remote = connect(spec(EngineKind::LlamaCpp, &server.url())).await;
    assert_eq!(remote.info().window, 1024, "from /props");
    assert!(
        remote.info().description.contains("pico.gguf"),
        "{}",
        remote.info().description
    );
    let completer = Completer::new(Arc::new(remote.clone()));
    let text = "def f(x):\n    \n\nprint(f(1))\n";
    let cursor = text.find("\n\nprint").unwrap();
    let out = completer
        .complete(request(text, cursor), CancelToken::new())
        .await
        .unwrap();
    assert_eq!(out.raw, "return x\n");
    assert_eq!(out.stats.prompt_tokens, 12);
    assert_eq!(out.stats.reused_tokens, 10);
    assert_eq!(out.stats.generated_tokens, 3);
    assert_eq!((out.stats.prefill_ms, out.stats.decode_ms), (1.25, 9.5));
    assert_eq!(out.stats.stop_reason, "MaxTokens");

    let infill = server.seen_at("/infill");
    assert_eq!(infill.len(), 1);
    let b = infill[0].json();
    assert_eq!(b["input_prefix"], &text[..cursor]);
    assert_eq!(b["input_suffix"], &text[cursor..]);
    assert_eq!(b["input_extra"], json!([]));
    assert_eq!(b["n_predict"], 16);
    assert_eq!(b["temperature"], 0.0);
    assert_eq!(
        (b["cache_prompt"].clone(), b["stream"].clone()),
        (json!(true), json!(true))
    );
    // The budgets asked /tokenize, line by line, and remember what they learnt.
    let asked = server.seen_at("/tokenize").len();
    assert!(asked >= 3, "{asked}");
    assert_eq!(remote.count_tokens("print(f(1))\n"), 6);
    assert_eq!(server.seen_at("/tokenize").len(), asked, "from the memo");
    assert_eq!(remote.count_tokens("a fresh line\n"), 7);
    assert_eq!(server.seen_at("/tokenize").len(), asked + 1);
}

#[tokio::test]
async fn connections_are_reused() {
    let server = llama_server(|_| Reply::sse(&infill_events(&["a"]), Duration::ZERO));
    let remote = connect(spec(EngineKind::LlamaCpp, &server.url())).await;
    for _ in 0..3 {
        remote.generate(job("x", "y")).await.unwrap();
    }
    let conns: Vec<usize> = server.seen_at("/infill").iter().map(|s| s.conn).collect();
    assert_eq!(conns.len(), 3);
    assert!(conns.windows(2).all(|w| w[0] == w[1]), "{conns:?}");
}

#[tokio::test]
async fn a_connection_closed_before_any_answer_is_asked_again_once() {
    // The pooled connection is closed unanswered on the second completion, as
    // llama-server's were between typing pauses.
    let n = std::sync::atomic::AtomicUsize::new(0);
    let server = llama_server(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 1 {
            Reply::Close
        } else {
            Reply::sse(&infill_events(&["a"]), Duration::ZERO)
        }
    });
    let remote = connect(spec(EngineKind::LlamaCpp, &server.url())).await;
    for _ in 0..3 {
        let g = remote.generate(job("x", "y")).await.unwrap();
        assert_eq!(g.text, "a");
    }
    let conns: Vec<usize> = server.seen_at("/infill").iter().map(|s| s.conn).collect();
    assert_eq!(
        conns.len(),
        4,
        "three completions, one asked again: {conns:?}"
    );
    assert_ne!(conns[1], conns[2], "asked again on a new connection");
    // A server that closes every connection unanswered is a fault, asked twice, not more.
    let closing = llama_server(|s| {
        if s.path == "/infill" {
            Reply::Close
        } else {
            Reply::Json("{}".into())
        }
    });
    let remote = connect(spec(EngineKind::LlamaCpp, &closing.url())).await;
    assert!(remote.generate(job("x", "y")).await.is_err());
    assert_eq!(closing.seen_at("/infill").len(), 2);
}

#[tokio::test]
async fn openai_gets_our_prompt_as_the_embedded_engines_ids() {
    let dir = tempfile::tempdir().unwrap();
    copilot_engine::testkit::write_tiny_checkpoint(dir.path(), true, 0).unwrap();
    let server = FakeServer::start(|req| match req.path.as_str() {
        "/v1/models" => Reply::Json(
            json!({"data": [{"id": "bigcode/tiny_starcoder_py", "max_model_len": 512}]})
                .to_string(),
        ),
        "/v1/completions" => Reply::sse(&openai_events(&["1", "2"]), MS),
        _ => Reply::Status(404, "{}".into()),
    });
    let mut s = spec(EngineKind::OpenAi, &server.url());
    s.tokenizer = Some(dir.path().join("tokenizer.json").display().to_string());
    let remote = connect(s).await;
    assert_eq!(remote.info().window, 512);
    assert_eq!(
        remote.family(),
        copilot_remote::Family::StarCoder,
        "from the model's name"
    );
    // Loading is blocking (it reads the weights and times a calibration pass on the model
    // thread): off the runtime, as the service's loader does it.
    let model = dir.path().display().to_string();
    let embedded = tokio::task::spawn_blocking(move || {
        Embedded::load(
            &copilot_pipeline::ModelSpec {
                model,
                ..Default::default()
            },
            &|_| {},
        )
    })
    .await
    .unwrap()
    .unwrap();

    // User text holding control-token strings stays text in both.
    let text = "s = '<fim_middle>'\ndef f():\n    return <|endoftext|>\n";
    let cursor = text.find("return").unwrap();
    let completer = Completer::new(Arc::new(remote.clone()));
    let mut req = request(text, cursor);
    req.options.fim = FimChoice::Spm;
    let out = completer
        .complete(req.clone(), CancelToken::new())
        .await
        .unwrap();
    assert_eq!(out.raw, "12");
    assert_eq!(out.stats.prompt_tokens, 7);

    let sent = server.seen_at("/v1/completions")[0].json();
    let prepared = Completer::new(Arc::new(embedded.clone())).prepare(&req);
    let want = embedded.encode(&prepared.prompt, prepared.max_new).unwrap();
    let got: Vec<u32> = serde_json::from_value(sent["prompt"].clone()).unwrap();
    assert_eq!(got, want);
    assert_eq!(sent["model"], "bigcode/tiny_starcoder_py");
    assert_eq!(sent["max_tokens"], 16);
    assert_eq!(sent["stream"], true);
    assert!(sent["stop"].as_array().unwrap().len() <= 4);
    assert_eq!(
        remote.openai_prompt(&prepared.prompt, prepared.max_new),
        PromptBody::Ids(want)
    );
    // Both count the same.
    for t in ["def f():\n", "s = '<fim_middle>'\n"] {
        assert_eq!(remote.count_tokens(t), embedded.count_tokens(t), "{t}");
    }
}

#[tokio::test]
async fn openai_without_a_tokenizer_sends_text_in_the_family_template() {
    let server = FakeServer::start(|req| match req.path.as_str() {
        "/v1/models" => {
            Reply::Json(json!({"data": [{"id": "Qwen/Qwen2.5-Coder-1.5B"}]}).to_string())
        }
        _ => Reply::sse(&openai_events(&["y"]), MS),
    });
    let remote = connect(spec(EngineKind::OpenAi, &server.url())).await;
    assert_eq!(remote.family(), copilot_remote::Family::Qwen);
    assert_eq!(
        remote.info().window,
        copilot_remote::engine::FALLBACK_WINDOW
    );
    let g = remote.generate(job("a = ", "\nb = 2\n")).await.unwrap();
    assert_eq!(g.text, "y");
    let sent = server.seen_at("/v1/completions")[0].json();
    assert_eq!(
        sent["prompt"],
        "<|fim_prefix|>a = <|fim_suffix|>\nb = 2\n<|fim_middle|>"
    );
    assert_eq!(
        sent["stop"],
        json!(["<|endoftext|>", "<|file_sep|>", "<|fim_pad|>", "<|im_end|>"])
    );
    // An estimate counts without asking anyone.
    let before = server.seen().len();
    assert_eq!(remote.count_tokens("123456789"), 3);
    assert_eq!(server.seen().len(), before);
}

#[tokio::test]
async fn ollama_streams_json_lines_and_auto_uses_the_model_template() {
    let server = FakeServer::start(|req| match req.path.as_str() {
        "/api/show" => Reply::Json(
            json!({"model_info": {"qwen2.context_length": 32768},
                   "capabilities": ["completion", "insert"]})
            .to_string(),
        ),
        "/api/generate" if req.json().get("prompt").is_none() => {
            Reply::Json(json!({"done": true, "response": ""}).to_string())
        }
        "/api/generate" => Reply::ndjson(
            &[
                json!({"response": "4", "done": false}).to_string(),
                json!({"response": "2", "done": false}).to_string(),
                json!({"response": "", "done": true, "done_reason": "stop",
                       "prompt_eval_count": 9, "prompt_eval_duration": 2_000_000u64,
                       "eval_count": 2, "eval_duration": 5_000_000u64})
                .to_string(),
            ],
            MS,
        ),
        _ => Reply::Status(404, "{}".into()),
    });
    let mut s = spec(EngineKind::Ollama, &server.url());
    s.model = Some("qwen2.5-coder:1.5b".into());
    let remote = connect(s).await;
    assert_eq!(remote.info().window, 4096, "capped");
    let g = remote.generate(job("x = ", "\n")).await.unwrap();
    assert_eq!(g.text, "42");
    assert_eq!(g.stop_reason, Some(StopReason::EndOfText));
    assert_eq!((g.prompt_tokens, g.prefill_ms, g.decode_ms), (9, 2.0, 5.0));
    // The model was loaded ahead (an empty prompt), then asked with its template's suffix.
    assert!(server.wait_until(Duration::from_secs(2), |s| s
        .iter()
        .any(|r| r.path == "/api/generate" && r.json().get("prompt").is_none())));
    let sent: Vec<Value> = server
        .seen_at("/api/generate")
        .iter()
        .map(Seen::json)
        .filter(|b| b.get("prompt").is_some())
        .collect();
    assert_eq!(sent[0]["prompt"], "x = ");
    assert_eq!(sent[0]["suffix"], "\n");
    assert_eq!(sent[0]["raw"], false);
    assert_eq!(sent[0]["model"], "qwen2.5-coder:1.5b");
    assert_eq!(sent[0]["options"]["num_ctx"], 4096);
    assert_eq!(sent[0]["options"]["num_predict"], 200);
}

/// A stream of `n` pieces `piece`, `gap` apart, that the client should not read to the end.
fn long_stream(piece: &str, n: usize, gap: Duration) -> Reply {
    let events: Vec<String> = (0..n)
        .map(|_| json!({"content": piece, "stop": false}).to_string())
        .collect();
    Reply::sse(&events, gap)
}

// Multi-threaded: the connection's task runs while the test blocks on the fake server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_rule_ends_the_stream_and_closes_the_connection() {
    let server = llama_server(|_| long_stream("x\n", 200, 5 * MS));
    let remote = connect(spec(EngineKind::LlamaCpp, &server.url())).await;
    let mut j = job("a", "b");
    j.stop = Some(Box::new(|t: &str| t.matches('\n').count() >= 3));
    let g = remote.generate(j).await.unwrap();
    assert_eq!(g.text, "x\nx\nx\n");
    assert_eq!(g.stop_reason, Some(StopReason::StopRule));
    assert!(server.wait_until(Duration::from_secs(2), |s| s.iter().any(|r| r.hung_up)));
    let infill = &server.seen_at("/infill")[0];
    assert!(infill.chunks_sent < 50, "{}", infill.chunks_sent);
}

#[tokio::test]
async fn stop_strings_and_the_time_budget_apply_to_the_stream() {
    let server = llama_server(|_| long_stream("ab\n", 200, 10 * MS));
    let remote = connect(spec(EngineKind::LlamaCpp, &server.url())).await;
    let mut j = job("a", "b");
    j.sampling.stop_strings = vec!["b\nab\nab".into()];
    let g = remote.generate(j).await.unwrap();
    assert_eq!(
        (g.text.as_str(), g.stop_reason),
        ("a", Some(StopReason::StopString))
    );
    let sent = server.seen_at("/infill")[0].json();
    assert_eq!(sent["stop"], json!(["b\nab\nab"]), "the server stops too");

    let mut j = job("a", "b");
    j.sampling.soft_budget = Some(60 * MS);
    let started = Instant::now();
    let g = remote.generate(j).await.unwrap();
    assert_eq!(g.stop_reason, Some(StopReason::Budget));
    assert!(
        g.text.ends_with('\n') && g.text.len() % 3 == 0,
        "{:?}",
        g.text
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "well before 200 pieces"
    );
    assert_eq!(server.seen_at("/infill")[1].json()["t_max_predict_ms"], 60);
}

// Multi-threaded: the connection's task runs while the test blocks on the fake server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_closes_its_connection() {
    let server = llama_server(|_| long_stream("x", 400, 5 * MS));
    let remote = connect(spec(EngineKind::LlamaCpp, &server.url())).await;
    // The flag.
    let j = job("a", "b");
    let cancel = j.cancel.clone();
    let t = tokio::spawn(remote.generate(j));
    tokio::time::sleep(50 * MS).await;
    cancel.cancel();
    let r = t.await.unwrap();
    assert!(matches!(r, Err(PipelineError::Cancelled)), "{r:?}");
    assert!(server.wait_until(Duration::from_secs(2), |s| s.iter().any(|r| r.hung_up)));
    // The future dropped.
    let t = tokio::spawn(remote.generate(job("a", "b")));
    tokio::time::sleep(50 * MS).await;
    t.abort();
    assert!(server.wait_until(Duration::from_secs(2), |s| {
        s.iter()
            .filter(|r| r.path == "/infill" && r.hung_up)
            .count()
            == 2
    }));
    for r in server.seen_at("/infill") {
        assert!(r.chunks_sent < 100, "{}", r.chunks_sent);
    }
}

fn fault_kind(r: Result<copilot_pipeline::Generated, PipelineError>) -> (&'static str, String) {
    match r {
        Err(PipelineError::Fault { kind, message }) => (kind, message),
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[tokio::test]
async fn every_fault_has_its_class() {
    // Nothing listening.
    let url = format!("http://127.0.0.1:{}", dead_port());
    let remote = connect(spec(EngineKind::LlamaCpp, &url)).await;
    let (kind, message) = fault_kind(remote.generate(job("a", "b")).await);
    assert_eq!(kind, "refused", "{message}");
    assert!(message.contains(&url), "{message}");

    // A name that does not resolve.
    let remote = connect(spec(EngineKind::OpenAi, "http://no-such-host.invalid:8000")).await;
    let (kind, message) = fault_kind(remote.generate(job("a", "b")).await);
    assert!(kind == "dns" || kind == "timeout", "{kind}: {message}");

    let cases: Vec<(&str, Reply)> = vec![
        (
            "server-error",
            Reply::Status(500, r#"{"error":{"message":"kaput"}}"#.into()),
        ),
        (
            "unavailable",
            Reply::Status(503, r#"{"error":{"message":"Loading model"}}"#.into()),
        ),
        ("not-found", Reply::Status(404, "{}".into())),
        (
            "rejected",
            Reply::Status(400, r#"{"error":"n_predict too big"}"#.into()),
        ),
        ("timeout", Reply::Silence),
        (
            "broken-stream",
            Reply::Stream {
                content_type: "text/event-stream",
                chunks: vec![format!(
                    "data: {}\n\n",
                    json!({"content": "a", "stop": false})
                )],
                gap: MS,
                cut: true,
            },
        ),
        (
            "malformed",
            Reply::Stream {
                content_type: "text/event-stream",
                chunks: vec!["<html>busy</html>\n\n".into()],
                gap: MS,
                cut: false,
            },
        ),
        ("malformed", Reply::sse(&["{not json".to_string()], MS)),
        (
            "broken-stream",
            Reply::sse(&[json!({"content": "a", "stop": false}).to_string()], MS),
        ),
    ];
    for (want, reply) in cases {
        let reply = Arc::new(reply);
        let r = reply.clone();
        let server = llama_server(move |_| (*r).clone());
        let remote = connect(spec(EngineKind::LlamaCpp, &server.url())).await;
        let started = Instant::now();
        let (kind, message) = fault_kind(remote.generate(job("a", "b")).await);
        assert_eq!(kind, want, "{reply:?}: {message}");
        assert!(started.elapsed() < Duration::from_secs(3), "{want}");
        if want == "server-error" {
            assert!(message.contains("kaput"), "{message}");
        }
    }
}

#[tokio::test]
async fn a_failing_engine_is_left_alone_then_probed_then_trusted_again() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = failing.clone();
    let server = llama_server(move |_| {
        if f.load(Ordering::SeqCst) {
            Reply::Status(500, "{}".into())
        } else {
            Reply::sse(&infill_events(&["ok"]), MS)
        }
    });
    let remote = connect(spec(EngineKind::LlamaCpp, &server.url())).await;
    assert_eq!(
        fault_kind(remote.generate(job("a", "b")).await).0,
        "server-error"
    );
    // Backing off: answered at once with the same class, the server not asked.
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(
            fault_kind(remote.generate(job("a", "b")).await).0,
            "server-error"
        );
        assert!(started.elapsed() < 50 * MS);
    }
    assert_eq!(server.seen_at("/infill").len(), 1);
    // Counting does not ask a failing server either.
    let before = server.seen_at("/tokenize").len();
    remote.count_tokens("never asked\n");
    assert_eq!(server.seen_at("/tokenize").len(), before);

    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(copilot_remote::backoff::FIRST_DELAY + 50 * MS).await;
    let g = remote.generate(job("a", "b")).await.unwrap();
    assert_eq!(g.text, "ok");
    assert_eq!(server.seen_at("/infill").len(), 2);
    remote.generate(job("a", "b")).await.unwrap();
    assert_eq!(server.seen_at("/infill").len(), 3);
}

#[tokio::test]
async fn an_engine_down_at_start_is_no_load_failure() {
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}");
    let remote = connect(spec(EngineKind::OpenAi, &url)).await;
    assert_eq!(
        remote.info().window,
        copilot_remote::engine::FALLBACK_WINDOW
    );
    let started = Instant::now();
    assert_eq!(
        fault_kind(remote.generate(job("a", "b")).await).0,
        "refused"
    );
    assert!(started.elapsed() < 100 * MS, "answered from the backoff");
}

/// Log lines written while a test runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_api_key_is_sent_and_never_logged_or_echoed() {
    const KEY: &str = "sk-test-7f3a9c";
    std::env::set_var("COPILOT_REMOTE_TEST_KEY", KEY);
    let logs = Captured::default();
    let w = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || w.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A server that echoes the Authorization header in its errors.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = FakeServer::start(move |req| {
        c.fetch_add(1, Ordering::SeqCst);
        let auth = req.header("authorization").unwrap_or("").to_string();
        match req.path.as_str() {
            "/v1/models" => Reply::Json(json!({"data": [{"id": "m"}]}).to_string()),
            _ => Reply::Status(
                401,
                json!({"error": format!("bad key: {auth}")}).to_string(),
            ),
        }
    });
    let mut s = spec(EngineKind::OpenAi, &server.url());
    s.api_key_env = Some("COPILOT_REMOTE_TEST_KEY".into());
    let remote = rt.block_on(connect(s));
    let (kind, message) = fault_kind(rt.block_on(remote.generate(job("a", "b"))));
    assert_eq!(kind, "auth");
    let seen = server.seen_at("/v1/completions");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(message.contains("bad key: Bearer ***"), "{message}");
    assert!(!message.contains(KEY), "{message}");
    assert!(!format!("{remote:?}").contains(KEY));
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(!logged.is_empty());
    assert!(!logged.contains(KEY), "the key was logged:\n{logged}");

    // A variable that is not set is a setup error naming the variable.
    let mut s = spec(EngineKind::OpenAi, &server.url());
    s.api_key_env = Some("COPILOT_REMOTE_TEST_UNSET".into());
    let e = rt.block_on(Remote::connect(s, &|_| {})).unwrap_err();
    assert!(e.to_string().contains("COPILOT_REMOTE_TEST_UNSET"), "{e}");
}

#[test]
fn the_blocking_path_keeps_its_connections() {
    let server = llama_server(|_| Reply::sse(&infill_events(&["a", "b"]), MS));
    let remote =
        Remote::connect_blocking(spec(EngineKind::LlamaCpp, &server.url()), &|_| {}).unwrap();
    let completer = Completer::new(Arc::new(remote));
    for _ in 0..2 {
        let out = completer
            .complete_blocking(request("x = \n", 4), CancelToken::new())
            .unwrap();
        assert_eq!(out.raw, "ab");
    }
    let conns: Vec<usize> = server.seen_at("/infill").iter().map(|s| s.conn).collect();
    assert_eq!(conns[0], conns[1]);
}

/// The counter the budgets use agrees with `/tokenize` for texts it has seen.
#[test]
fn counting_is_the_servers() {
    struct Via<'a>(&'a Remote);
    impl TokenCounter for Via<'_> {
        fn count(&self, t: &str) -> usize {
            self.0.count_tokens(t)
        }
    }
    let server = llama_server(|_| Reply::Status(500, "{}".into()));
    let remote =
        Remote::connect_blocking(spec(EngineKind::LlamaCpp, &server.url()), &|_| {}).unwrap();
    assert_eq!(Via(&remote).count("abcd"), 2);
    assert_eq!(Via(&remote).count("abcde"), 3);
}
