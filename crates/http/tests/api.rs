//! The HTTP API against a scripted model: OpenAI's and llama-server's shapes, streaming,
//! field errors, the body limit, the API key, `/health` while loading, and a client that
//! hangs up (real sockets).

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use copilot_http::Config;
use copilot_pipeline::StopReason;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

#[tokio::test]
async fn completions_answer_in_openai_shape() {
    let script = Arc::new(Script::default());
    let api = api(script.clone(), config());
    ready(&api).await;
    let a = post(
        &api,
        "/v1/completions",
        r#"{"model": "x", "prompt": "def f():\n    ret", "suffix": "\n", "max_tokens": 16,
            "temperature": 0, "seed": 7, "postprocess": false}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "scripted");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    // 16 characters of the scripted answer: cut by max_tokens.
    let want: String = "<    ret|7|0>\nalpha\nbeta".chars().take(16).collect();
    assert_eq!(choices[0]["text"], want);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["logprobs"], Value::Null);
    assert_eq!(choices[0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens"].as_u64().unwrap() + 16
    );
    // Post-processing on (the default): the scripted lines after the first are another
    // scope; the first line alone is the answer, and the model stopped once it was final.
    let a = post(
        &api,
        "/v1/completions",
        r#"{"model": "x", "prompt": "x = ", "max_tokens": 64, "temperature": 0, "seed": 7}"#,
    )
    .await;
    let v = a.json();
    assert_eq!(v["choices"][0]["text"], "<x = |7|0>");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        *script.ends.lock().unwrap().last().unwrap(),
        StopReason::StopRule
    );
    // A stop string cuts the raw text before it.
    let a = post(
        &api,
        "/v1/completions",
        r#"{"model": "x", "prompt": "x = ", "stop": ["|"], "temperature": 0, "postprocess": false}"#,
    )
    .await;
    assert_eq!(a.json()["choices"][0]["text"], "<x = ");
}

/// The `text` of each choice of a completions answer, in order.
fn choice_texts(v: &serde_json::Value) -> Vec<&str> {
    v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn token_id_prompts_run_as_given_with_the_raw_text_back() {
    let script = Arc::new(Script::default());
    let api = api(script.clone(), config());
    ready(&api).await;
    let a = post(
        &api,
        "/v1/completions",
        r#"{"model": "x", "prompt": [97, 40], "temperature": 0, "seed": 5, "max_tokens": 64}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    // The model got the ids, no prompt of ours, and the text came back raw (the
    // post-processing rules would keep the first line only).
    assert_eq!(
        v["choices"][0]["text"],
        "<ids:97,40|5|0>\nalpha\nbeta\ngamma\ndelta\n"
    );
    assert_eq!(script.prefixes.lock().unwrap().last().unwrap(), "");
    // Several prompts of ids, one answer set each.
    let a = post(
        &api,
        "/v1/completions",
        r#"{"prompt": [[1], [2, 3]], "temperature": 0, "seed": 5, "max_tokens": 9}"#,
    )
    .await;
    let v = a.json();
    let texts = choice_texts(&v);
    assert_eq!(texts, ["<ids:1|5|", "<ids:2,3|"]);
}

#[tokio::test]
async fn several_prompts_and_choices() {
    let script = Arc::new(Script::default());
    let api = api(script, config());
    ready(&api).await;
    let a = post(
        &api,
        "/v1/completions",
        r#"{"model": "x", "prompt": ["a", "b"], "n": 2, "temperature": 0.5, "seed": 3,
            "max_tokens": 8}"#,
    )
    .await;
    let v = a.json();
    let texts = choice_texts(&v);
    // Each prompt's choices come from seeds 3 and 4, indexed across prompts.
    assert_eq!(texts, ["<a|3|0>", "<a|4|0>", "<b|3|0>", "<b|4|0>"]);
    let indexes: Vec<u64> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    // Greedy: one generation, repeated n times.
    let a = post(
        &api,
        "/v1/completions",
        r#"{"model": "x", "prompt": "a", "n": 3, "temperature": 0, "seed": 3, "max_tokens": 8}"#,
    )
    .await;
    let v = a.json();
    assert_eq!(v["choices"].as_array().unwrap().len(), 3);
    assert_eq!(v["choices"][2]["text"], "<a|3|0>");
    assert_eq!(v["choices"][2]["index"], 2);
}

#[tokio::test]
async fn streams_end_with_done_and_add_up_to_the_answer() {
    let script = Arc::new(Script::default());
    let api = api(script, config());
    ready(&api).await;
    let body = r#"{"model": "x", "prompt": "def f():\n    ", "max_tokens": 30, "temperature": 0,
                   "postprocess": false, "stream": true, "stream_options": {"include_usage": true}}"#;
    let a = post(&api, "/v1/completions", body).await;
    assert_eq!(a.status, StatusCode::OK);
    let events = a.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 30);
    let text: String = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap().iter())
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    let plain = post(
        &api,
        "/v1/completions",
        &body.replace("\"stream\": true", "\"stream\": false"),
    )
    .await;
    assert_eq!(text, plain.json()["choices"][0]["text"].as_str().unwrap());
    // Raw text streams as it comes: a chunk per token, then the finish.
    assert_eq!(chunks.len(), 30 + 2);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let finish: Vec<&Value> = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap().iter())
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("length")]);

    // Post-processed: only settled lines stream before the end; the pieces still add up.
    let body = r#"{"model": "x", "prompt": "def f():\n    ", "suffix": "\n", "max_tokens": 60,
                   "temperature": 0, "stream": true}"#;
    let a = post(&api, "/v1/completions", body).await;
    let text: String = a.events()[..a.events().len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let plain = post(
        &api,
        "/v1/completions",
        &body.replace("\"stream\": true", "\"stream\": false"),
    )
    .await;
    assert_eq!(text, plain.json()["choices"][0]["text"].as_str().unwrap());
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let script = Arc::new(Script::default());
    let api = api(script.clone(), config());
    ready(&api).await;
    let cases = [
        ("{", None, "invalid JSON"),
        ("[1]", None, "must be a JSON object"),
        (r#"{"model": "x"}"#, Some("prompt"), "`prompt` is required"),
        (r#"{"prompt": []}"#, Some("prompt"), "must not be empty"),
        (r#"{"prompt": [1, -2]}"#, Some("prompt"), "integers from 0"),
        (
            r#"{"prompt": [1, "a"]}"#,
            Some("prompt"),
            "must be a string",
        ),
        (
            r#"{"prompt": [[1], []]}"#,
            Some("prompt"),
            "non-empty array",
        ),
        (
            r#"{"prompt": [1114112]}"#,
            Some("prompt"),
            "outside the model's vocabulary",
        ),
        (
            r#"{"prompt": [1, 2], "suffix": "x"}"#,
            Some("suffix"),
            "needs a text `prompt`",
        ),
        (
            r#"{"prompt": [1, 2], "postprocess": true}"#,
            Some("postprocess"),
            "needs a text `prompt`",
        ),
        (
            r#"{"prompt": "a", "max_tokens": "16"}"#,
            Some("max_tokens"),
            "`max_tokens` must be an integer",
        ),
        (
            r#"{"prompt": "a", "max_tokens": 0}"#,
            Some("max_tokens"),
            "got 0",
        ),
        (
            r#"{"prompt": "a", "temperature": 7}"#,
            Some("temperature"),
            "from 0 to 2",
        ),
        (r#"{"prompt": "a", "top_p": 0}"#, Some("top_p"), "above 0"),
        (
            r#"{"prompt": "a", "stop": ["1", "2", "3", "4", "5"]}"#,
            Some("stop"),
            "at most 4",
        ),
        (r#"{"prompt": "a", "n": 100}"#, Some("n"), "from 1 to 16"),
        (
            r#"{"prompt": "a", "stream": "yes"}"#,
            Some("stream"),
            "true or false",
        ),
        (
            r#"{"prompt": "a", "suffix": 3}"#,
            Some("suffix"),
            "a string",
        ),
        (
            r#"{"prompt": "a", "echo": true}"#,
            Some("echo"),
            "not supported",
        ),
        (
            r#"{"prompt": "a", "logprobs": 2}"#,
            Some("logprobs"),
            "not supported",
        ),
        (
            r#"{"prompt": "a", "presence_penalty": 1}"#,
            Some("presence_penalty"),
            "not supported",
        ),
        (
            r#"{"prompt": "a", "adapter": "nope"}"#,
            Some("adapter"),
            "unknown adapter `nope`",
        ),
        (
            r#"{"prompt": "a", "postprocess": 1}"#,
            Some("postprocess"),
            "true or false",
        ),
    ];
    for (body, param, message) in cases {
        let a = post(&api, "/v1/completions", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        let e = &a.json()["error"];
        assert_eq!(e["param"].as_str(), param, "{body}");
        assert!(
            e["message"].as_str().unwrap().contains(message),
            "{body}: {e}"
        );
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["code"], 400);
    }
    let infill_cases = [
        (r#"{"input_prefix": 1}"#, "input_prefix"),
        (r#"{"prompt": ["a"]}"#, "prompt"),
        (r#"{"input_extra": [{"text": 1}]}"#, "input_extra"),
        (r#"{"n_predict": -2}"#, "n_predict"),
        (r#"{"t_max_predict_ms": "x"}"#, "t_max_predict_ms"),
        (r#"{"response_fields": [1]}"#, "response_fields"),
    ];
    for (body, param) in infill_cases {
        let a = post(&api, "/infill", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.json()["error"]["param"], param, "{body}");
    }
    // None of them reached the model.
    assert_eq!(script.started.load(Ordering::SeqCst), 0);
    let a = get(&api, "/nope").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let script = Arc::new(Script::default());
    let api = api(
        script.clone(),
        Config {
            body_limit: 1000,
            ..config()
        },
    );
    ready(&api).await;
    let big = format!(r#"{{"prompt": "{}"}}"#, "x".repeat(2000));
    let a = post(&api, "/v1/completions", &big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1000 bytes"));
    // Without a declared length (chunked), the limit holds while reading.
    let chunks: Vec<Result<String, std::io::Error>> =
        vec![Ok(big[..900].to_string()), Ok(big[900..].to_string())];
    let req = Request::post("/infill")
        .body(Body::from_stream(futures_util_stream(chunks)))
        .unwrap();
    let a = send(&api, req).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(script.started.load(Ordering::SeqCst), 0);
    // Under the limit: fine.
    let a = post(
        &api,
        "/v1/completions",
        r#"{"prompt": "x", "max_tokens": 2}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
}

/// A stream of body chunks without a length.
fn futures_util_stream(
    items: Vec<Result<String, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<String, std::io::Error>> {
    struct Iter(std::vec::IntoIter<Result<String, std::io::Error>>);
    impl futures_core::Stream for Iter {
        type Item = Result<String, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}

#[tokio::test]
async fn the_api_key_guards_everything_but_health() {
    let script = Arc::new(Script::default());
    let api = api(
        script,
        Config {
            api_key: Some("s3cret".into()),
            ..config()
        },
    );
    ready(&api).await;
    let body = r#"{"prompt": "x", "max_tokens": 2}"#;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("s3cret"),
    ] {
        let mut req = Request::post("/v1/completions");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let a = send(&api, req.body(Body::from(body)).unwrap()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(a.json()["error"]["type"], "authentication_error");
    }
    for path in ["/infill", "/v1/models", "/stats"] {
        assert_eq!(
            get(&api, path).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let ok = Request::post("/v1/completions")
        .header("authorization", "Bearer s3cret")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&api, ok).await.status, StatusCode::OK);
    assert_eq!(get(&api, "/health").await.status, StatusCode::OK);

    // Off loopback, a key is required.
    let public = Config {
        addr: "0.0.0.0:8080".parse().unwrap(),
        ..config()
    };
    assert!(public
        .check()
        .unwrap_err()
        .to_string()
        .contains("--api-key"));
    assert!(Config {
        api_key: Some("k".into()),
        ..public.clone()
    }
    .check()
    .is_ok());
    assert!(Config {
        api_key: Some(" ".into()),
        ..public
    }
    .check()
    .is_err());
    assert!(config().check().is_ok());
}

#[tokio::test]
async fn health_is_503_with_progress_while_loading() {
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        load_gate: Some(gate.clone()),
        ..Default::default()
    });
    let api = api(script, config());
    let health = || get(&api, "/health");
    let mut a = health().await;
    for _ in 0..100 {
        if a.json()["progress"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        a = health().await;
    }
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["error"]["message"], "Loading model");
    assert_eq!(a.json()["progress"], "downloading model.safetensors");
    // Requests meanwhile get llama-server's 503 at once instead of waiting.
    let r = post(&api, "/infill", r#"{"input_prefix": "x"}"#).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        get(&api, "/props").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    gate.add_permits(1);
    ready(&api).await;
    // llama-server's window and tokenizer, as its clients size their prompts with.
    let props = get(&api, "/props").await;
    assert_eq!(props.status, StatusCode::OK, "{}", props.body);
    assert_eq!(props.json()["default_generation_settings"]["n_ctx"], 4096);
    let t = post(&api, "/tokenize", r#"{"content": "a b c"}"#).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.body);
    assert_eq!(t.json(), json!({"tokens": [97, 32, 98, 32, 99]}));
    let t = post(&api, "/tokenize", r#"{"text": "a"}"#).await;
    assert_eq!(t.status, StatusCode::BAD_REQUEST);
    assert_eq!(t.json()["error"]["param"], "content");
    let a = health().await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({"status": "ok"}));
    let m = get(&api, "/v1/models").await.json();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "scripted");
    assert_eq!(m["data"][0]["object"], "model");
    // The window, where vLLM and llama-server give theirs.
    assert_eq!(m["data"][0]["max_model_len"], 4096);
    assert_eq!(m["data"][0]["meta"]["n_ctx_train"], 4096);
}

#[tokio::test]
async fn infill_answers_in_llama_server_shape() {
    let script = Arc::new(Script::default());
    let api = api(script.clone(), config());
    ready(&api).await;
    // What llama.vim sends (autoload/llama.vim, `llama#fim`).
    let request = json!({
        "id_slot": 0,
        "input_prefix": "def f():\n",
        "input_suffix": "\n    return x\n",
        "input_extra": [{"filename": "a.py", "text": "def a():\n    pass\n"}],
        "prompt": "    re",
        "n_predict": 128,
        "stop": [],
        "n_indent": 4,
        "top_k": 40,
        "top_p": 0.90,
        "samplers": ["top_k", "top_p", "infill"],
        "stream": false,
        "cache_prompt": true,
        "t_max_prompt_ms": 500,
        "t_max_predict_ms": 1000,
        "postprocess": false,
        "response_fields": [
            "content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms",
            "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
            "timings/predicted_per_token_ms", "timings/predicted_per_second", "truncated",
            "tokens_cached"
        ],
    });
    let a = post(&api, "/infill", &request.to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    // `prompt` continues the prefix; the extra chunk reached the model as a snippet.
    assert!(
        v["content"]
            .as_str()
            .unwrap()
            .starts_with("<    re|42|1>\nalpha"),
        "{v}"
    );
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 11, "{keys:?}");
    assert_eq!(
        v["timings/predicted_n"].as_u64().unwrap(),
        v["content"].as_str().unwrap().chars().count() as u64
    );
    assert_eq!(v["truncated"], false);
    assert_eq!(v["tokens_cached"], 0);

    // Without response_fields: the whole object.
    let mut whole = request.clone();
    whole.as_object_mut().unwrap().remove("response_fields");
    let v = post(&api, "/infill", &whole.to_string()).await.json();
    for key in [
        "content",
        "stop",
        "tokens_predicted",
        "tokens_evaluated",
        "tokens_cached",
        "timings",
        "stop_type",
        "model",
        "generation_settings",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert_eq!(v["stop"], true);
    assert_eq!(v["stop_type"], "eos");

    // n_predict 0 (llama.vim's warm-up): an empty answer, the model untouched.
    let started = script.started.load(Ordering::SeqCst);
    let v = post(
        &api,
        "/infill",
        r#"{"input_prefix": "", "input_suffix": "", "n_predict": 0, "response_fields": [""]}"#,
    )
    .await;
    assert_eq!(v.status, StatusCode::OK);
    assert_eq!(script.started.load(Ordering::SeqCst), started);

    // Streaming: content pieces, then the final object; no [DONE].
    let mut streaming = whole.clone();
    streaming["stream"] = json!(true);
    let a = post(&api, "/infill", &streaming.to_string()).await;
    let events: Vec<Value> = a
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["stop"], true);
    assert!(events[..events.len() - 1]
        .iter()
        .all(|e| e["stop"] == false));
    let text: String = events
        .iter()
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    let plain = post(&api, "/infill", &whole.to_string()).await.json();
    assert_eq!(text, plain["content"].as_str().unwrap());
}

/// A raw HTTP/1.1 request on a real socket (the disconnect tests need to hang up).
async fn open(addr: std::net::SocketAddr, path: &str, body: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_cancels_its_generation() {
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        ..Default::default()
    });
    let api = api(script.clone(), config());
    ready(&api).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = api.clone();
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
    let stats = || api.service().stats.snapshot();

    // Streaming: three tokens arrive, then the client hangs up while the model holds the
    // fourth. The request is cancelled without another token being written.
    let body = r#"{"prompt": "x", "max_tokens": 1000, "temperature": 0, "postprocess": false, "stream": true}"#;
    let mut s = open(addr, "/v1/completions", body).await;
    gate.add_permits(3);
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while got.matches("\"text\":").count() < 3 {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("text/event-stream"));
    drop(s);
    until("the disconnect", || stats().disconnected == 1).await;
    let cancel = script.cancels.lock().unwrap()[0].clone();
    assert!(cancel.is_cancelled(), "the decode loop's flag is set");
    gate.add_permits(100);
    until("the cancelled count", || stats().cancelled_generating == 1).await;
    assert_eq!(script.tokens.load(Ordering::SeqCst), 3);

    // Not streaming: the client hangs up while its answer is being generated.
    gate.forget_permits(10_000); // hold the model at its first token
    let s = open(
        addr,
        "/infill",
        r#"{"input_prefix": "y", "n_predict": 1000, "postprocess": false}"#,
    )
    .await;
    until("the second generation", || {
        script.started.load(Ordering::SeqCst) == 2
    })
    .await;
    drop(s);
    until("the second disconnect", || stats().disconnected == 2).await;
    assert!(script.cancels.lock().unwrap()[1].is_cancelled());
    until("the second cancelled count", || {
        stats().cancelled_generating == 2
    })
    .await;
    assert_eq!(stats().completed, 0);
}
