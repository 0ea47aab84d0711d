//! Test support: a scripted model behind the pipeline's generation seam (its text tells
//! which prompt, seed and snippets it got; a gate can hold each token), the API around it,
//! and small HTTP helpers.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use copilot_http::{Api, Config};
use copilot_pipeline::{
    BoxFuture, CompletionOptions, Generated, Job, LanguageModel, LoadEvent, ModelInfo,
    PipelineError, StopReason,
};
use copilot_service::{EngineSpec, Loader, Service};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tower::ServiceExt;

/// What the scripted model did.
#[derive(Default)]
pub struct Script {
    /// Held before each token when set: the test hands out permits.
    pub gate: Option<Arc<Semaphore>>,
    /// Generations started.
    pub started: AtomicUsize,
    /// Tokens produced, over all generations.
    pub tokens: AtomicUsize,
    /// How the generations ended.
    pub ends: Mutex<Vec<StopReason>>,
    /// Prefixes of the prompts generated for, in order.
    pub prefixes: Mutex<Vec<String>>,
    /// Each generation's cancel flag (what the embedded engine's decode loop checks).
    pub cancels: Mutex<Vec<copilot_pipeline::CancelToken>>,
    /// Held by `load` until given a permit, when set.
    pub load_gate: Option<Arc<Semaphore>>,
}

/// The scripted answer: the cursor line before the cursor (or `ids:` and the ids of a
/// token-id prompt), the seed, how many snippets, then a fixed tail of lines, one character
/// per token.
pub fn scripted_text(job: &Job) -> String {
    let ids = job.ids.as_ref().map(|ids| {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        format!("ids:{}", ids.join(","))
    });
    let line = ids
        .as_deref()
        .unwrap_or_else(|| job.prompt.prefix.rsplit('\n').next().unwrap_or(""));
    format!(
        "<{line}|{}|{}>\nalpha\nbeta\ngamma\ndelta\n",
        job.sampling.seed,
        job.snippets.len()
    )
}

struct Model {
    script: Arc<Script>,
    info: ModelInfo,
}

impl LanguageModel for Model {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn count_tokens(&self, text: &str) -> usize {
        text.chars().count()
    }

    /// One token per character, its code: consistent with `count_tokens`.
    fn tokenize(&self, text: &str) -> Option<Vec<u32>> {
        Some(text.chars().map(u32::from).collect())
    }

    /// Token ids are character codes.
    fn vocab_size(&self) -> Option<usize> {
        Some(0x11_0000)
    }

    fn generate(&self, mut job: Job) -> BoxFuture<Result<Generated, PipelineError>> {
        let script = self.script.clone();
        Box::pin(async move {
            script.cancels.lock().unwrap().push(job.cancel.clone());
            script.started.fetch_add(1, Ordering::SeqCst);
            script
                .prefixes
                .lock()
                .unwrap()
                .push(job.prompt.prefix.clone());
            let full: Vec<char> = scripted_text(&job).chars().collect();
            let mut text = String::new();
            let mut reason = StopReason::EndOfText;
            for (i, c) in full.iter().enumerate() {
                if let Some(gate) = &script.gate {
                    gate.acquire().await.unwrap().forget();
                }
                if job.cancel.is_cancelled() {
                    reason = StopReason::Cancelled;
                    break;
                }
                if i == job.sampling.max_new_tokens {
                    reason = StopReason::MaxTokens;
                    break;
                }
                text.push(*c);
                script.tokens.fetch_add(1, Ordering::SeqCst);
                if let Some(stop) = job
                    .sampling
                    .stop_strings
                    .iter()
                    .find_map(|s| text.find(s.as_str()))
                {
                    text.truncate(stop);
                    reason = StopReason::StopString;
                    break;
                }
                if job.stop.as_mut().is_some_and(|f| f(&text)) {
                    reason = StopReason::StopRule;
                    break;
                }
                if let Some(f) = job.on_text.as_mut() {
                    f(&text);
                }
                tokio::task::yield_now().await;
            }
            script.ends.lock().unwrap().push(reason);
            Ok(Generated {
                generated_tokens: text.chars().count(),
                text,
                stop_reason: Some(reason),
                prompt_tokens: job.prompt.prefix.chars().count()
                    + job.prompt.suffix.chars().count(),
                reused_tokens: 0,
                prefill_ms: 1.0,
                decode_ms: 2.0,
            })
        })
    }
}

pub struct ScriptedLoader(pub Arc<Script>);

impl Loader for ScriptedLoader {
    fn load(
        &self,
        _spec: EngineSpec,
        events: mpsc::UnboundedSender<LoadEvent>,
    ) -> BoxFuture<Result<Arc<dyn LanguageModel>, String>> {
        let script = self.0.clone();
        Box::pin(async move {
            let _ = events.send(LoadEvent::Downloading {
                file: "model.safetensors".into(),
            });
            if let Some(gate) = &script.load_gate {
                gate.acquire().await.unwrap().forget();
            }
            Ok(Arc::new(Model {
                script,
                info: ModelInfo {
                    description: "scripted".into(),
                    window: 4096,
                    fim: true,
                },
            }) as Arc<dyn LanguageModel>)
        })
    }
}

pub fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        api_key: None,
        body_limit: 64 << 10,
        model_id: "scripted".into(),
        defaults: CompletionOptions {
            cache: false,
            ..Default::default()
        },
        adapters: Default::default(),
    }
}

pub fn engine() -> EngineSpec {
    EngineSpec::Embedded(copilot_engine::ModelSpec::default())
}

/// The API over the scripted model, loading started.
pub fn api(script: Arc<Script>, config: Config) -> Api {
    let (service, _notices) = Service::new(Arc::new(ScriptedLoader(script)));
    let api = Api::new(service, config);
    api.load(engine());
    api
}

/// Wait (real time, at most 10 s) until `f` holds.
pub async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

pub async fn ready(api: &Api) {
    let service = api.service().clone();
    until("the model", move || service.host.state().label() == "ready").await;
}

pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `data:` payloads of a server-sent event stream.
    pub fn events(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

pub async fn send(api: &Api, req: Request<Body>) -> Answer {
    let res = api.router().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub async fn post(api: &Api, path: &str, body: &str) -> Answer {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(api, req).await
}

pub async fn get(api: &Api, path: &str) -> Answer {
    send(api, Request::get(path).body(Body::empty()).unwrap()).await
}
