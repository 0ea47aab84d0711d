//! [`Remote`]: a remote engine behind the pipeline's generation seam. Connects (learning the
//! window and the model's name from the server when it answers), counts tokens, streams a
//! generation under the job's stop rules, budget and cancellation, and keeps the engine's
//! health: faults by class, backoff, one probe at a time.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use copilot_pipeline::{
    BoxFuture, CancelToken, Generated, Job, LanguageModel, LoadEvent, ModelInfo, PipelineError,
    StopReason,
};
use reqwest::Method;
use serde_json::Value;

use crate::backoff::{Admit, Backoff, Fault, FaultKind};
use crate::http::Http;
use crate::openai::PromptBody;
use crate::spec::{EngineKind, RemoteSpec, TemplateChoice};
use crate::stream::{Decoder, Event, Final, Lines, Sse, Step};
use crate::template::{self, Family, Part};
use crate::tokens::{Counter, LocalTokenizer, ServerCounter, Source};
use crate::{llama, ollama, openai, RemoteError};

/// Reads one event of an engine's answer.
type ParseStep = fn(&Value) -> Result<Step, Fault>;

/// The window assumed until a server says its own.
pub const FALLBACK_WINDOW: usize = 2048;
/// How often a waiting request looks at its cancel flag (well under one token's time).
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(5);
/// Pieces beyond the token limit after which a stream is cut (a server ignoring it).
const PIECES_GRACE: usize = 8;
/// How long the end of a finished answer's body is waited for (it follows the last event).
const DRAIN: std::time::Duration = std::time::Duration::from_millis(50);

/// A remote engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Remote {
    inner: Arc<Inner>,
}

/// What the server said about itself.
#[derive(Clone, Debug)]
struct Probed {
    info: ModelInfo,
    /// The model's name as the server knows it (for requests and template detection).
    model: Option<String>,
}

struct Inner {
    spec: RemoteSpec,
    /// "llama.cpp at http://…", for messages.
    label: String,
    http: Http,
    counter: Counter,
    /// For ids in OpenAI prompts, when every control token of the family is in it.
    ids: Option<Arc<LocalTokenizer>>,
    fallback: ModelInfo,
    probed: OnceLock<Probed>,
    backoff: Mutex<Backoff>,
    /// The runtime of blocking callers (the CLI): its connections stay alive between calls.
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("engine", &self.label)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// Connect to the engine `spec` names: read the key and the tokenizer, ask the server
    /// for its window and model. A server that does not answer yet is no error: requests
    /// retry it (with backoff), and answer empty meanwhile.
    pub async fn connect(
        spec: RemoteSpec,
        on_event: &(dyn Fn(LoadEvent) + Send + Sync),
    ) -> Result<Remote, RemoteError> {
        let label = format!("{} at {}", spec.kind.as_str(), spec.endpoint);
        on_event(LoadEvent::Loading {
            what: label.clone(),
        });
        let http = Http::new(&spec)?;
        let local = match spec.tokenizer.clone() {
            None => None,
            Some(src) => {
                on_event(LoadEvent::Loading {
                    what: format!("tokenizer {src}"),
                });
                let t = tokio::task::spawn_blocking(move || LocalTokenizer::load(&src))
                    .await
                    .map_err(|e| {
                        RemoteError::Setup(format!("the tokenizer loader failed: {e}"))
                    })??;
                Some(Arc::new(t))
            }
        };
        let source = match (&local, spec.kind) {
            (Some(t), _) => Source::Local(t.clone()),
            (None, EngineKind::LlamaCpp) => {
                let http = Http::new(&spec)?;
                Source::Server(ServerCounter::start(Arc::new(move |text: String| {
                    let http = http.clone();
                    Box::pin(async move {
                        let body = llama::tokenize_body(&text);
                        let v = http
                            .json(Method::POST, llama::TOKENIZE, Some(&body))
                            .await
                            .ok()?;
                        llama::token_count(&v)
                    })
                }))?)
            }
            (None, _) => Source::Estimate,
        };
        let mut inner = Inner {
            label: label.clone(),
            counter: Counter::new(source, label.clone()),
            ids: None,
            fallback: ModelInfo {
                description: label.clone(),
                window: FALLBACK_WINDOW,
                fim: true,
            },
            probed: OnceLock::new(),
            backoff: Mutex::default(),
            runtime: OnceLock::new(),
            http,
            spec,
        };
        match inner.probe().await {
            Ok(p) => {
                let _ = inner.probed.set(p);
            }
            Err(f) => {
                tracing::warn!(engine = %inner.label, kind = f.kind.as_str(), "{f}; retrying as requests come");
                inner.lock_backoff().failed(f, Instant::now());
            }
        }
        if let Some(t) = local {
            if inner.spec.kind == EngineKind::OpenAi {
                inner.ids = inner.ids_tokenizer(t);
            }
        }
        let inner = Arc::new(inner);
        if inner.spec.kind == EngineKind::Ollama {
            inner.preload();
        }
        let remote = Remote { inner };
        on_event(LoadEvent::Ready {
            description: remote.info().description.clone(),
        });
        Ok(remote)
    }

    /// [`Remote::connect`] from a thread with no runtime (the CLI): the engine keeps the
    /// runtime, so its connections live on between blocking calls.
    pub fn connect_blocking(
        spec: RemoteSpec,
        on_event: &(dyn Fn(LoadEvent) + Send + Sync),
    ) -> Result<Remote, RemoteError> {
        // One worker: the connections' tasks run between calls too, so a stream dropped by
        // a stop or a cancellation is closed at once (the server stops generating).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("copilot-remote")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Setup(format!("cannot start a runtime: {e}")))?;
        let remote = rt.block_on(Self::connect(spec, on_event))?;
        let _ = remote.inner.runtime.set(rt);
        Ok(remote)
    }

    pub fn spec(&self) -> &RemoteSpec {
        &self.inner.spec
    }

    /// The FIM family prompts are rendered in (OpenAI-compatible servers, raw Ollama).
    pub fn family(&self) -> Family {
        self.inner.family()
    }

    /// The prompt an OpenAI-compatible server receives for `prompt`: ids when a tokenizer
    /// is at hand, else text.
    pub fn openai_prompt(&self, prompt: &copilot_fim::Prompt, max_new: usize) -> PromptBody {
        self.inner.openai_prompt(prompt, max_new)
    }
}

impl Inner {
    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn info(&self) -> &ModelInfo {
        self.probed.get().map_or(&self.fallback, |p| &p.info)
    }

    fn model(&self) -> Option<&str> {
        self.spec
            .model
            .as_deref()
            .or_else(|| self.probed.get().and_then(|p| p.model.as_deref()))
    }

    fn family(&self) -> Family {
        match self.spec.template {
            TemplateChoice::Family(f) => f,
            TemplateChoice::Auto => self
                .model()
                .and_then(Family::detect)
                .unwrap_or(Family::StarCoder),
        }
    }

    /// The tokenizer for ids, if the family's control tokens are single tokens of it.
    fn ids_tokenizer(&self, t: Arc<LocalTokenizer>) -> Option<Arc<LocalTokenizer>> {
        let family = self.family();
        let tk = family.tokens();
        let missing: Vec<&str> = [tk.prefix, tk.suffix, tk.middle, tk.eos]
            .into_iter()
            .filter(|s| !s.is_empty() && t.token_id(s).is_none())
            .collect();
        if missing.is_empty() {
            return Some(t);
        }
        tracing::info!(
            engine = %self.label,
            "the tokenizer lacks {} of the {} template: prompts go as text",
            missing.join(" "),
            family.name()
        );
        None
    }

    /// Ask the server for its window and model.
    async fn probe(&self) -> Result<Probed, Fault> {
        let (window, model, fim) = match self.spec.kind {
            EngineKind::LlamaCpp => {
                let v = self.http.json(Method::GET, llama::PROPS, None).await;
                let (ctx, path) = v.as_ref().map(llama::props).unwrap_or_default();
                self.tolerate(v)?;
                let name = path.map(|p| {
                    std::path::Path::new(&p)
                        .file_name()
                        .map_or(p.clone(), |f| f.to_string_lossy().into_owned())
                });
                (ctx, name, true)
            }
            EngineKind::Ollama => {
                let model = self.spec.model.clone().unwrap_or_default();
                let body = serde_json::json!({ "model": model });
                let v = self
                    .http
                    .json(Method::POST, ollama::SHOW, Some(&body))
                    .await;
                let (ctx, fim) = v.as_ref().map(ollama::show).unwrap_or((None, true));
                self.tolerate(v)?;
                let ctx = Some(ctx.unwrap_or(ollama::MAX_NUM_CTX).min(ollama::MAX_NUM_CTX));
                // With `auto` FIM is the model template's; a named template is ours.
                let fim = fim || self.spec.template != TemplateChoice::Auto;
                (ctx, Some(model), fim)
            }
            EngineKind::OpenAi => {
                let v = self.http.json(Method::GET, openai::MODELS, None).await;
                let found = v
                    .as_ref()
                    .ok()
                    .and_then(|v| openai::models(v, self.spec.model.as_deref()));
                self.tolerate(v)?;
                match found {
                    Some((id, w)) => (w, Some(id), true),
                    None => (None, self.spec.model.clone(), true),
                }
            }
        };
        let window = window.filter(|&w| w > 0).unwrap_or_else(|| {
            tracing::info!(engine = %self.label, "the server does not say its window: {FALLBACK_WINDOW} assumed");
            FALLBACK_WINDOW
        });
        let mut description = self.label.clone();
        if let Some(m) = self.spec.model.as_deref().or(model.as_deref()) {
            description.push_str(&format!(" ({m}, window {window})"));
        }
        Ok(Probed {
            info: ModelInfo {
                description,
                window,
                fim,
            },
            model,
        })
    }

    /// A probe's answer: a fault of the engine's reachability fails the probe; any other
    /// (a server without that path) leaves the defaults.
    fn tolerate(&self, v: Result<Value, Fault>) -> Result<(), Fault> {
        match v {
            Ok(_) => Ok(()),
            Err(f)
                if matches!(
                    f.kind,
                    FaultKind::Refused
                        | FaultKind::Dns
                        | FaultKind::Unreachable
                        | FaultKind::Timeout
                        | FaultKind::Unavailable
                        | FaultKind::Auth
                ) =>
            {
                Err(f)
            }
            Err(f) => {
                tracing::info!(engine = %self.label, "{f}: defaults assumed");
                Ok(())
            }
        }
    }

    /// Load an Ollama model in the background, so the first completion does not wait for it.
    fn preload(self: &Arc<Self>) {
        let (Some(model), Ok(rt)) = (
            self.spec.model.clone(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let mut spec = self.spec.clone();
        spec.timeouts.response = std::time::Duration::from_secs(120);
        let Ok(http) = Http::new(&spec) else { return };
        rt.spawn(async move {
            let body = ollama::preload_body(&model);
            if let Err(f) = http.json(Method::POST, ollama::GENERATE, Some(&body)).await {
                tracing::debug!("preloading {model}: {f}");
            }
        });
    }

    fn openai_prompt(&self, prompt: &copilot_fim::Prompt, max_new: usize) -> PromptBody {
        let family = self.family();
        let parts = template::render(prompt, family);
        let Some(t) = &self.ids else {
            return PromptBody::Text(template::to_text(&parts));
        };
        let mut ids = Vec::new();
        for part in &parts {
            match part {
                Part::Control(s) => match t.token_id(s) {
                    Some(id) => ids.push(id),
                    None => return PromptBody::Text(template::to_text(&parts)),
                },
                Part::Text(s) => match t.encode_text(s) {
                    Ok(v) => ids.extend(v),
                    Err(_) => return PromptBody::Text(template::to_text(&parts)),
                },
            }
        }
        if ids.is_empty() {
            // An empty document, left to right: start from end-of-text, as the embedded
            // engine does.
            ids.extend(t.token_id(family.tokens().eos));
        }
        let window = self.info().window;
        if ids.len() + max_new > window {
            // As the embedded engine: keep the end, nearest the cursor.
            let keep = window.saturating_sub(max_new).max(1);
            ids.drain(..ids.len() - keep);
        }
        PromptBody::Ids(ids)
    }

    /// The stop strings a job runs with: its own, then the family's control tokens (for
    /// the servers that render our prompt's format).
    fn stops(&self, job: &Job) -> Vec<String> {
        let mut stops = job.sampling.stop_strings.clone();
        if self.spec.kind != EngineKind::LlamaCpp {
            for s in self.family().tokens().stops {
                if !stops.iter().any(|x| x == s) {
                    stops.push(s.to_string());
                }
            }
        }
        stops
    }

    fn error(&self, fault: &Fault) -> PipelineError {
        let hint = match fault.kind {
            FaultKind::Refused
            | FaultKind::Dns
            | FaultKind::Unreachable
            | FaultKind::Timeout
            | FaultKind::Unavailable => "; completions resume when it answers",
            FaultKind::Auth => "; check the key in the variable `apiKeyEnv` names",
            FaultKind::NotFound => "; check `endpoint`, `engine` and `remoteModel`",
            _ => "",
        };
        PipelineError::Fault {
            kind: fault.kind.as_str(),
            message: format!("{}: {}{hint}", self.label, fault.detail),
        }
    }

    async fn generate(self: Arc<Self>, job: Job) -> Result<Generated, PipelineError> {
        let cancel = job.cancel.clone();
        if cancel.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }
        if job.ids.is_some() && self.spec.kind != EngineKind::OpenAi {
            // `/infill` and Ollama's `/api/generate` take text only.
            return Err(PipelineError::Unsupported(
                "prompts given as token ids (the `openai` engine does)",
            ));
        }
        let probe = match self.lock_backoff().admit(Instant::now()) {
            Admit::Wait(fault, _) => return Err(self.error(&fault)),
            Admit::Go { probe } => probe,
        };
        // A probe cancelled or dropped midway lets the next request probe.
        let mut guard = ProbeGuard {
            inner: &self,
            armed: probe,
        };
        let result = tokio::select! {
            biased;
            () = cancelled(&cancel) => return Err(PipelineError::Cancelled),
            r = self.run(job, &cancel) => r,
        };
        guard.armed = false;
        match result {
            Ok(Some(g)) => {
                if self.lock_backoff().succeeded() {
                    tracing::info!(engine = %self.label, "the engine answers again");
                }
                Ok(g)
            }
            Ok(None) => {
                self.lock_backoff().abandoned();
                Err(PipelineError::Cancelled)
            }
            Err(fault) => {
                let wait = self.lock_backoff().failed(fault.clone(), Instant::now());
                tracing::debug!(
                    engine = %self.label,
                    kind = fault.kind.as_str(),
                    retry_ms = wait.as_millis() as u64,
                    "{fault}"
                );
                Err(self.error(&fault))
            }
        }
    }

    /// One generation. `Ok(None)`: cancelled.
    async fn run(&self, job: Job, cancel: &CancelToken) -> Result<Option<Generated>, Fault> {
        if self.probed.get().is_none() {
            let p = self.probe().await?;
            let _ = self.probed.set(p);
        }
        let stops = self.stops(&job);
        let max_new = job.sampling.max_new_tokens;
        let (path, body, sse, parse): (&str, Value, bool, ParseStep) = match self.spec.kind {
            EngineKind::LlamaCpp => (
                llama::INFILL,
                llama::infill_body(&job, &stops),
                true,
                llama::parse,
            ),
            EngineKind::Ollama => {
                let raw = match self.spec.template {
                    TemplateChoice::Auto => None,
                    TemplateChoice::Family(f) => Some(f),
                };
                let model = self.model().unwrap_or_default();
                let body = ollama::generate_body(&job, model, raw, &stops, self.info().window);
                (ollama::GENERATE, body, false, ollama::parse)
            }
            EngineKind::OpenAi => {
                let prompt = match &job.ids {
                    Some(ids) => PromptBody::Ids(ids.clone()),
                    None => self.openai_prompt(&job.prompt, max_new),
                };
                let body = openai::completions_body(&job, self.model(), &prompt, &stops);
                (openai::COMPLETIONS, body, true, openai::parse)
            }
        };
        let started = Instant::now();
        let mut resp = self.http.send(Method::POST, path, Some(&body)).await?;
        let json_answer = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"));
        let mut dec = Decoder::new(stops, job.stop, job.sampling.soft_budget);
        // A front-end streaming the answer (HTTP) sees the text as each piece passes the
        // stop checks, as from the embedded engine.
        let mut on_text = job.on_text;
        let mut lines = Lines::default();
        let mut events = Sse::default();
        let mut info = Final::default();
        let mut batch = Vec::new();
        // A whole JSON body (a server ignoring `stream`) is one event.
        let mut whole = Vec::new();
        let mut server_done = false;
        let done = loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let Some(chunk) = self.http.chunk(&mut resp, path).await? else {
                break false;
            };
            if json_answer {
                whole.extend_from_slice(&chunk);
                continue;
            }
            lines.push(&chunk, &mut batch)?;
            let mut stopped = None;
            for line in batch.drain(..) {
                let event = if sse {
                    events.line(&line)?
                } else {
                    (!line.trim().is_empty()).then_some(Event::Data(line))
                };
                let Some(event) = event else { continue };
                let step = self.step(event, parse)?;
                info.merge(step.info);
                if let Some(why) = dec.push(&step.text, Instant::now()) {
                    stopped = Some(why);
                    break;
                }
                if let Some(f) = on_text.as_mut() {
                    f(&dec.text);
                }
                if step.done {
                    stopped = Some(info.stop.unwrap_or(StopReason::EndOfText));
                    server_done = true;
                    break;
                }
                if dec.pieces > max_new + PIECES_GRACE {
                    stopped = Some(StopReason::MaxTokens);
                    break;
                }
            }
            if let Some(why) = stopped {
                info.stop = Some(why);
                if server_done {
                    // The answer is over: read the body's end, so the connection goes back
                    // to the pool (a body dropped unread closes it).
                    let _ = tokio::time::timeout(DRAIN, async {
                        while let Ok(Some(_)) = resp.chunk().await {}
                    })
                    .await;
                }
                // Otherwise dropping the response closes the connection: the server stops
                // generating.
                break true;
            }
        };
        let done = done || {
            // The end of the stream: what is left unterminated, then whether the answer was
            // complete.
            let mut rest: Vec<Event> = Vec::new();
            if json_answer {
                rest.push(Event::Data(String::from_utf8_lossy(&whole).into_owned()));
            } else if let Some(line) = lines.finish()? {
                if sse {
                    rest.extend(events.line(&line)?);
                } else {
                    rest.push(Event::Data(line));
                }
            }
            if sse {
                rest.extend(events.finish());
            }
            let mut complete = false;
            for event in rest {
                let step = self.step(event, parse)?;
                info.merge(step.info);
                if let Some(why) = dec.push(&step.text, Instant::now()) {
                    info.stop = Some(why);
                    complete = true;
                    break;
                }
                complete |= step.done;
            }
            // OpenAI servers that end without `[DONE]` still say why the choice finished.
            complete || info.stop.is_some()
        };
        if !done {
            return Err(Fault::new(
                FaultKind::BrokenStream,
                format!("the stream from {path} ended before the answer did"),
            ));
        }
        let first = dec.first_piece().unwrap_or_else(Instant::now);
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
        Ok(Some(Generated {
            generated_tokens: info.generated_tokens.unwrap_or(dec.pieces),
            stop_reason: Some(info.stop.unwrap_or(StopReason::EndOfText)),
            prompt_tokens: info.prompt_tokens.unwrap_or(0),
            reused_tokens: info.cached_tokens.unwrap_or(0),
            prefill_ms: info.prefill_ms.unwrap_or_else(|| ms(started, first)),
            decode_ms: info.decode_ms.unwrap_or_else(|| ms(first, Instant::now())),
            text: dec.text,
        }))
    }

    fn step(&self, event: Event, parse: fn(&Value) -> Result<Step, Fault>) -> Result<Step, Fault> {
        match event {
            Event::Error(e) => Err(Fault::new(
                FaultKind::ServerError,
                format!(
                    "the server reported an error: {}",
                    self.http.scrub(&crate::http::error_text(e.as_bytes()))
                ),
            )),
            Event::Data(d) if d.trim() == "[DONE]" => Ok(Step {
                done: true,
                ..Step::default()
            }),
            Event::Data(d) => {
                let v: Value = serde_json::from_str(&d).map_err(|_| {
                    let sample: String = d.chars().take(80).collect();
                    Fault::new(
                        FaultKind::Malformed,
                        format!("an event that is not JSON: `{}`", self.http.scrub(&sample)),
                    )
                })?;
                parse(&v).map_err(|f| Fault::new(f.kind, self.http.scrub(&f.detail)))
            }
        }
    }
}

/// Clears the probing mark when a probe ends without an outcome.
struct ProbeGuard<'a> {
    inner: &'a Inner,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.lock_backoff().abandoned();
        }
    }
}

/// Resolves once `token` is cancelled.
async fn cancelled(token: &CancelToken) {
    while !token.is_cancelled() {
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

impl LanguageModel for Remote {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    fn count_tokens(&self, text: &str) -> usize {
        let reachable = self.inner.lock_backoff().healthy();
        self.inner.counter.count(text, reachable)
    }

    fn generate(&self, job: Job) -> BoxFuture<Result<Generated, PipelineError>> {
        Box::pin(self.inner.clone().generate(job))
    }

    fn generate_blocking(&self, job: Job) -> Result<Generated, PipelineError> {
        let fut = self.inner.clone().generate(job);
        match self.inner.runtime.get() {
            Some(rt) => rt.block_on(fut),
            None => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| PipelineError::Engine(format!("cannot start a runtime: {e}")))?
                .block_on(fut),
        }
    }
}
