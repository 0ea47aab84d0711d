//! The completion pipeline: document text and cursor -> FIM prompt ids -> engine -> cleaned
//! completion. Shared by the CLI, the server, evaluation and the benchmark so that they can
//! never disagree on the prompt format or the cleaning rules.
//!
//! The model is anything behind the generation seam ([`LanguageModel`], `model.rs`): the
//! embedded engine (`embedded.rs`) or a remote one; prompt building, the completion cache,
//! post-processing and compute-ahead are this crate's, the same for every engine.
//!
//! Knows `copilot-fim` and `copilot-engine`; knows nothing of LSP, JSON or editors.

pub mod cache;
pub mod embedded;
pub mod model;

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache::CompletionCache;

use copilot_engine::{Engine, EngineError};
use copilot_fim::{
    Budget, CursorContext, Layout, LayoutChoice, PostOptions, Prompt, PromptInput, Shape, Template,
    TokenCounter,
};

pub use copilot_engine::{CancelToken, DTypeSpec, DeviceSpec, ModelSpec, StopReason};
pub use embedded::Embedded;
pub use model::{BoxFuture, Generated, Job, LanguageModel, ModelInfo, Sampling, TextFn};

/// Which FIM layout to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FimChoice {
    Psm,
    Spm,
    /// Left-to-right: prefix only.
    Off,
    /// SPM (the cache-friendly layout; see `copilot_fim::choose_layout`), or left-to-right
    /// when the code after the cursor is blank.
    #[default]
    Auto,
}

impl std::str::FromStr for FimChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "psm" => Ok(Self::Psm),
            "spm" => Ok(Self::Spm),
            "off" | "none" | "l2r" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown FIM mode `{other}` (expected psm, spm, off or auto)"
            )),
        }
    }
}

impl FimChoice {
    fn layout_choice(self) -> LayoutChoice {
        match self {
            Self::Psm => LayoutChoice::Psm,
            Self::Spm => LayoutChoice::Spm,
            Self::Off => LayoutChoice::LeftToRight,
            Self::Auto => LayoutChoice::Auto,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CompletionOptions {
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: Option<usize>,
    pub max_tokens: usize,
    pub seed: u64,
    pub fim: FimChoice,
    pub prefix_tokens: usize,
    pub suffix_tokens: usize,
    /// false: return the model's raw text (debugging, evaluation).
    pub postprocess: bool,
    /// Soft decoding budget: once spent, stop at the next newline.
    pub time_budget: Option<Duration>,
    /// Serve repeated and typed-through requests from the completion cache, and compute
    /// ahead the completion that follows accepting one (async path only).
    pub cache: bool,
}

impl CompletionOptions {
    /// A key for everything in the options that shapes the answer.
    fn variant(
        &self,
        adapter: &Option<String>,
        snippets: &[copilot_fim::Snippet],
        stop: &[String],
    ) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{self:?}").hash(&mut h);
        adapter.hash(&mut h);
        snippets.hash(&mut h);
        stop.hash(&mut h);
        h.finish()
    }
}

/// Where a streaming front-end takes a completion's text as it becomes final: called with
/// each new piece. The pieces of a completion that succeeds add up to its `text`; one that
/// is cancelled or fails may have sent a start of it.
#[derive(Clone)]
pub struct TextSink(Arc<dyn Fn(&str) + Send + Sync>);

impl TextSink {
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for TextSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TextSink")
    }
}

/// What a front-end may add to a request beyond the document and the settings: its own stop
/// strings (the OpenAI and llama-server `stop` field) and a sink for streaming.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// The raw output is cut before the first of these (before post-processing).
    pub stop: Vec<String>,
    pub on_text: Option<TextSink>,
}

/// What a stream has sent of one completion, shared by the decode loop's callback and the
/// pipeline that sends the rest at the end.
#[derive(Clone)]
struct Sent {
    sink: TextSink,
    text: Arc<Mutex<String>>,
}

impl Sent {
    fn new(sink: TextSink) -> Self {
        Self {
            sink,
            text: Arc::default(),
        }
    }

    /// Send what `now` (a prefix of the answer) adds to what was sent.
    fn extend_to(&self, now: &str) {
        let mut sent = self.text.lock().expect("sent lock");
        if now.len() > sent.len() && now.starts_with(sent.as_str()) {
            (self.sink.0)(&now[sent.len()..]);
            sent.clear();
            sent.push_str(now);
        }
    }

    /// The answer is `text`: send the rest of it.
    fn finish(&self, text: &str) {
        let sent = self.text.lock().expect("sent lock").clone();
        if !text.starts_with(&sent) {
            // `settled` promises a prefix of the answer; seeing this is a bug there.
            tracing::error!(
                sent,
                answer = text,
                "streamed text is not a prefix of the answer"
            );
            return;
        }
        self.extend_to(text);
    }
}

/// The end of `text` that could begin one of the `stop` strings (held back from a stream:
/// the next token may complete it, and the answer is cut before it).
fn stop_prefix_len(text: &str, stop: &[String]) -> usize {
    stop.iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| {
            s.char_indices()
                .skip(1)
                .map(|(i, _)| i)
                .filter(|&i| text.ends_with(&s[..i]))
        })
        .max()
        .unwrap_or(0)
}

impl Default for CompletionOptions {
    fn default() -> Self {
        Self {
            temperature: 0.2,
            top_p: 0.95,
            top_k: None,
            max_tokens: 64,
            seed: 42,
            fim: FimChoice::Auto,
            prefix_tokens: 1536,
            suffix_tokens: 512,
            postprocess: true,
            // A first answer soon beats a long one later (llama.vim caps at 250 ms too).
            time_budget: Some(Duration::from_millis(DEFAULT_TIME_BUDGET_MS)),
            cache: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CompletionRequest {
    /// The whole document.
    pub text: String,
    /// Byte offset of the cursor in `text` (moved back to a char boundary if inside one,
    /// clamped to the end).
    pub cursor: usize,
    /// Path shown to the model as a header, if any.
    pub path: Option<String>,
    /// LoRA adapter registered with the engine under this name (None: the base model).
    pub adapter: Option<String>,
    /// Code from other files (the context crate's choice), most relevant first; rendered
    /// before the prefix while the prompt budget has room.
    pub snippets: Vec<copilot_fim::Snippet>,
    pub options: CompletionOptions,
    /// A prompt given as the model's token ids (the HTTP API's token-id `prompt`): run as
    /// is instead of the prompt built from `text` (then empty), never answered from or kept
    /// in the completion cache. Post-processing needs the cursor's text, so callers turn
    /// `options.postprocess` off.
    pub ids: Option<Vec<u32>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV came from the cache instead of being computed.
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub stop_reason: String,
    pub layout: String,
    /// Answered from the completion cache (exactly or by typing through), without the model.
    pub cache_hit: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// Text to insert at the cursor (after post-processing); may be empty.
    pub text: String,
    /// What the model produced, before post-processing.
    pub raw: String,
    pub stats: Stats,
}

/// Progress while a model is fetched and loaded.
#[derive(Clone, Debug, PartialEq)]
pub enum LoadEvent {
    Downloading { file: String },
    Loading { what: String },
    Ready { description: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Engine(String),
    #[error("this engine does not support {0}")]
    Unsupported(&'static str),
    /// A remote engine could not answer. `kind` is the class of fault (`refused`,
    /// `timeout`, `server-error`...): one message per class reaches the user, not one per
    /// keystroke; `message` says what happened.
    #[error("{message}")]
    Fault { kind: &'static str, message: String },
}

impl From<EngineError> for PipelineError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e.to_string())
    }
}

/// Whether a request is answered from and kept in the completion cache: a prompt given as
/// ids has no text to key it by.
fn uses_cache(req: &CompletionRequest) -> bool {
    req.options.cache && req.ids.is_none()
}

/// Counts tokens for the prompt budgets through the model.
struct ModelCounter<'a>(&'a dyn LanguageModel);

impl TokenCounter for ModelCounter<'_> {
    fn count(&self, text: &str) -> usize {
        self.0.count_tokens(text)
    }
}

/// A prompt ready for the model, and what post-processing needs to know.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The built prompt; `prompt.snippets` are the indices in the request's `snippets` of
    /// those it holds, in prompt order.
    pub prompt: Prompt,
    pub layout: Layout,
    pub shape: Shape,
    /// Tokens the model may generate (the option, within half the window).
    pub max_new: usize,
    text: Arc<str>,
    cursor: usize,
}

impl Prepared {
    fn context(&self) -> CursorContext<'_> {
        CursorContext {
            prefix: &self.text[..self.cursor],
            suffix: &self.text[self.cursor..],
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A model behind the generation seam, with the prompt and cleaning rules around it.
/// Cheap to clone.
#[derive(Clone)]
pub struct Completer {
    model: Arc<dyn LanguageModel>,
    /// The embedded engine, when that is the model (fine-tuning, evaluation and the
    /// benchmark reach into it).
    engine: Option<Engine>,
    cache: Arc<Mutex<CompletionCache>>,
    /// The computation ahead in flight, if any: every new request cancels it.
    ahead: Arc<Mutex<Option<CancelToken>>>,
    /// Whether the one warning about a model without FIM tokens was given.
    warned_no_fim: Arc<AtomicBool>,
    /// The model's speed, as it measured itself at load, refined by every generation.
    speed: Arc<Mutex<Option<Speed>>>,
}

impl std::fmt::Debug for Completer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completer")
            .field("model", &self.model.info().description)
            .finish_non_exhaustive()
    }
}

/// The model's measured speed on this machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Speed {
    /// Prompt tokens computed per second (from an empty or mostly unrelated cache).
    pub prefill_tokens_per_s: f64,
    pub decode_ms_per_token: f64,
}

impl Speed {
    /// Fold in what one generation showed (prefills under 64 computed tokens and decodes
    /// under 4 tokens say little and are left out).
    fn observe(old: Option<Speed>, g: &Generated) -> Option<Speed> {
        let computed = g.prompt_tokens.saturating_sub(g.reused_tokens);
        let prefill =
            (computed >= 64 && g.prefill_ms > 0.0).then(|| computed as f64 * 1000.0 / g.prefill_ms);
        let decode = (g.generated_tokens >= 4).then(|| g.decode_ms / g.generated_tokens as f64);
        let mix = |old: f64, new: Option<f64>| new.map_or(old, |n| 0.7 * old + 0.3 * n);
        match old {
            Some(o) => Some(Speed {
                prefill_tokens_per_s: mix(o.prefill_tokens_per_s, prefill),
                decode_ms_per_token: mix(o.decode_ms_per_token, decode),
            }),
            None => Some(Speed {
                prefill_tokens_per_s: prefill?,
                decode_ms_per_token: decode.unwrap_or(0.0),
            }),
        }
    }

    /// Prompt budgets (prefix, suffix) for which a cold completion with `opts` takes
    /// about `target`: what prefill can compute in the time decoding leaves, split 3:1 as
    /// the defaults are, never above `opts`' own budgets nor below 256 tokens in all.
    pub fn budgets(&self, opts: &CompletionOptions, target: Duration) -> (usize, usize) {
        let decode_ms = (opts.max_tokens as f64 * self.decode_ms_per_token).min(
            opts.time_budget
                .map_or(f64::MAX, |b| b.as_secs_f64() * 1000.0)
                + 10.0 * self.decode_ms_per_token,
        );
        let prefill_ms = (target.as_secs_f64() * 1000.0 - decode_ms).max(0.0);
        let total = (prefill_ms / 1000.0 * self.prefill_tokens_per_s) as usize;
        let want = opts.prefix_tokens + opts.suffix_tokens;
        if total >= want {
            return (opts.prefix_tokens, opts.suffix_tokens);
        }
        let total = total.max(256);
        let prefix = total * opts.prefix_tokens / want.max(1);
        (prefix, total - prefix)
    }
}

/// Default soft decoding budget.
pub const DEFAULT_TIME_BUDGET_MS: u64 = 250;

/// Completions remembered (llama.vim keeps 250).
const CACHE_ENTRIES: usize = 256;

impl Completer {
    /// Resolve and load the embedded model and start its thread. Blocking: call from a
    /// blocking context.
    pub fn load(spec: &ModelSpec, on_event: &dyn Fn(LoadEvent)) -> Result<Self, PipelineError> {
        Ok(Self::embedded(Embedded::load(spec, on_event)?))
    }

    /// Around the embedded engine.
    pub fn embedded(model: Embedded) -> Self {
        let engine = model.engine().clone();
        let mut c = Self::new(Arc::new(model));
        c.engine = Some(engine);
        c
    }

    pub fn from_engine(engine: Engine) -> Self {
        Self::embedded(Embedded::new(engine))
    }

    /// Around any model behind the generation seam.
    pub fn new(model: Arc<dyn LanguageModel>) -> Self {
        Self {
            engine: None,
            cache: Arc::new(Mutex::new(CompletionCache::new(CACHE_ENTRIES))),
            ahead: Arc::default(),
            warned_no_fim: Arc::default(),
            speed: Arc::new(Mutex::new(model.speed())),
            model,
        }
    }

    /// The model's measured speed, once known.
    pub fn speed(&self) -> Option<Speed> {
        *self.speed.lock().expect("speed lock")
    }

    fn observe(&self, g: &Generated) {
        let mut s = self.speed.lock().expect("speed lock");
        *s = Speed::observe(*s, g);
    }

    pub fn model(&self) -> &Arc<dyn LanguageModel> {
        &self.model
    }

    /// The embedded engine, if that is what runs the model.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// The model family's FIM template (None: the model has no FIM tokens).
    pub fn template(&self) -> Option<&'static Template> {
        if self.model.info().fim {
            self.model.template()
        } else {
            None
        }
    }

    /// One line naming the model.
    pub fn description(&self) -> &str {
        &self.model.info().description
    }

    /// Make sure the adapter in `dir` is loaded under `name` (the base weights stay shared).
    pub async fn load_adapter(
        &self,
        name: &str,
        dir: &std::path::Path,
    ) -> Result<(), PipelineError> {
        let load = self.model.load_adapter(name, dir);
        self.cancel_ahead();
        load.await
    }

    /// The layout for this cursor in the model family's format; left-to-right, with one
    /// warning, when the model has no FIM tokens.
    fn layout(&self, choice: LayoutChoice, suffix: &str) -> (&'static Template, Layout) {
        match self.template() {
            Some(t) => (t, t.choose_layout(choice, suffix)),
            None => {
                let fim = copilot_fim::choose_layout(choice, suffix) != Layout::LeftToRight;
                if fim && !self.warned_no_fim.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the model's tokenizer has no FIM tokens: completing left to right \
                         (the code after the cursor is not shown to the model)"
                    );
                }
                (&copilot_fim::STARCODER, Layout::LeftToRight)
            }
        }
    }

    /// Counts tokens as the prompt budgets do (for the context crate's snippet budget).
    pub fn token_counter(&self) -> impl TokenCounter + '_ {
        ModelCounter(&*self.model)
    }

    /// Build the prompt for a request (no model work).
    pub fn prepare(&self, req: &CompletionRequest) -> Prepared {
        let info = self.model.info();
        let window = info.window;
        let opts = &req.options;
        let cursor = floor_char_boundary(&req.text, req.cursor);
        let text: Arc<str> = Arc::from(req.text.as_str());
        let (prefix, suffix) = text.split_at(cursor);
        let (template, layout) = self.layout(opts.fim.layout_choice(), suffix);
        let max_new = opts.max_tokens.min(window / 2).max(1);
        let budget = Budget {
            prefix_tokens: opts.prefix_tokens,
            suffix_tokens: opts.suffix_tokens,
            window,
            max_new_tokens: max_new,
        };
        let input = PromptInput {
            prefix,
            suffix,
            path: req.path.as_deref(),
            snippets: &req.snippets,
        };
        let prompt = copilot_fim::build_prompt(
            &input,
            template,
            layout,
            &budget,
            &ModelCounter(&*self.model),
        );
        let shape = copilot_fim::shape(&CursorContext { prefix, suffix });
        Prepared {
            prompt,
            layout,
            shape,
            max_new,
            text: text.clone(),
            cursor,
        }
    }

    fn job(
        &self,
        p: &Prepared,
        req: &CompletionRequest,
        cancel: CancelToken,
        stop_strings: &[String],
        sent: Option<&Sent>,
    ) -> Job {
        let opts = &req.options;
        // What a stream may send of the raw text so far: with post-processing, the lines
        // that no later output can change (`copilot_fim::settled`: whole lines, and single
        // lines only once final); without, the raw text but for an end that could begin a
        // stop string.
        let on_text = sent.map(|sent| {
            let (sent, p, post) = (sent.clone(), p.clone(), opts.postprocess);
            let stops = stop_strings.to_vec();
            Box::new(move |raw: &str| {
                let raw = &raw[..raw.len() - stop_prefix_len(raw, &stops)];
                if post {
                    sent.extend_to(&copilot_fim::settled(&p.context(), p.shape, raw));
                } else {
                    sent.extend_to(raw);
                }
            }) as TextFn
        });
        let stop: Option<copilot_engine::StopFn> = opts.postprocess.then(|| {
            // Stop decoding as soon as post-processing would cut anyway.
            let p = p.clone();
            Box::new(move |generated: &str| {
                copilot_fim::should_stop(&p.context(), p.shape, generated)
            }) as copilot_engine::StopFn
        });
        Job {
            prompt: p.prompt.clone(),
            snippets: req.snippets.clone(),
            sampling: Sampling {
                max_new_tokens: p.max_new,
                temperature: opts.temperature,
                top_p: opts.top_p,
                top_k: opts.top_k,
                seed: opts.seed,
                stop_strings: stop_strings.to_vec(),
                soft_budget: opts.time_budget,
            },
            stop,
            on_text,
            cancel,
            adapter: req.adapter.clone(),
            ids: req.ids.clone(),
        }
    }

    fn finish(
        &self,
        p: &Prepared,
        opts: &CompletionOptions,
        gen: Generated,
    ) -> Result<Completion, PipelineError> {
        if gen.stop_reason == Some(StopReason::Cancelled) {
            return Err(PipelineError::Cancelled);
        }
        let text = if opts.postprocess {
            copilot_fim::postprocess(
                &gen.text,
                &p.context(),
                &PostOptions {
                    shape: Some(p.shape),
                },
            )
        } else {
            gen.text.clone()
        };
        Ok(Completion {
            text,
            stats: Stats {
                prompt_tokens: gen.prompt_tokens,
                reused_tokens: gen.reused_tokens,
                generated_tokens: gen.generated_tokens,
                prefill_ms: gen.prefill_ms,
                decode_ms: gen.decode_ms,
                stop_reason: gen
                    .stop_reason
                    .map_or_else(|| "Unknown".to_string(), |r| format!("{r:?}")),
                layout: format!("{:?}", p.layout),
                cache_hit: false,
            },
            raw: gen.text,
        })
    }

    /// Complete at the request's cursor. Stops within one token once `cancel` is set or the
    /// future is dropped. With `options.cache`, a repeated or typed-through request is
    /// answered from the cache, and after a model answer the completion that follows
    /// accepting it is computed ahead in the background (cancelled by any new request).
    pub async fn complete(
        &self,
        req: CompletionRequest,
        cancel: CancelToken,
    ) -> Result<Completion, PipelineError> {
        self.complete_with(req, cancel, Extras::default()).await
    }

    /// [`Completer::complete`] with a front-end's stop strings, streaming the text to
    /// `extras.on_text` as it becomes final (a cache hit sends it whole).
    pub async fn complete_with(
        &self,
        req: CompletionRequest,
        cancel: CancelToken,
        extras: Extras,
    ) -> Result<Completion, PipelineError> {
        self.cancel_ahead();
        let sent = extras.on_text.map(Sent::new);
        if let Some(hit) = self.cached(&req, &extras.stop) {
            if let Some(sent) = &sent {
                sent.finish(&hit.text);
            }
            return Ok(hit);
        }
        let p = self.prepare(&req);
        let job = self.job(&p, &req, cancel, &extras.stop, sent.as_ref());
        let gen = self.model.generate(job).await?;
        self.observe(&gen);
        let out = self.finish(&p, &req.options, gen)?;
        if let Some(sent) = &sent {
            sent.finish(&out.text);
        }
        self.remember(&req, &p, &out, &extras.stop);
        if uses_cache(&req) && !out.text.is_empty() {
            self.compute_ahead(&req, &p, &out.text, &extras.stop);
        }
        Ok(out)
    }

    fn cancel_ahead(&self) {
        if let Some(c) = self.ahead.lock().expect("ahead lock").take() {
            c.cancel();
        }
    }

    fn cached(&self, req: &CompletionRequest, stop: &[String]) -> Option<Completion> {
        if !uses_cache(req) {
            return None;
        }
        let cursor = floor_char_boundary(&req.text, req.cursor);
        let (prefix, suffix) = req.text.split_at(cursor);
        let variant = req.options.variant(&req.adapter, &req.snippets, stop);
        let hit = self
            .cache
            .lock()
            .expect("cache lock")
            .get(variant, prefix, suffix)?;
        Some(Completion {
            raw: hit.text.clone(),
            text: hit.text,
            stats: Stats {
                cache_hit: true,
                stop_reason: "Cache".into(),
                ..Stats::default()
            },
        })
    }

    fn remember(&self, req: &CompletionRequest, p: &Prepared, out: &Completion, stop: &[String]) {
        if uses_cache(req) && !out.text.is_empty() {
            let ctx = p.context();
            self.cache.lock().expect("cache lock").insert(
                req.options.variant(&req.adapter, &req.snippets, stop),
                ctx.prefix,
                ctx.suffix,
                &out.text,
            );
        }
    }

    /// Compute, on the model thread when it is idle, the completion after accepting `shown`,
    /// and keep it in the cache. Needs a tokio runtime (the server's); skipped without one.
    fn compute_ahead(&self, req: &CompletionRequest, p: &Prepared, shown: &str, stop: &[String]) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ctx = p.context();
        let mut next = req.clone();
        next.text = format!("{}{shown}{}", ctx.prefix, ctx.suffix);
        next.cursor = ctx.prefix.len() + shown.len();
        let cancel = CancelToken::new();
        *self.ahead.lock().expect("ahead lock") = Some(cancel.clone());
        let this = self.clone();
        let stop = stop.to_vec();
        rt.spawn(async move {
            let p = this.prepare(&next);
            let gen = this
                .model
                .generate(this.job(&p, &next, cancel, &stop, None))
                .await;
            if let Ok(out) = gen.and_then(|g| this.finish(&p, &next.options, g)) {
                this.remember(&next, &p, &out, &stop);
                tracing::debug!(chars = out.text.len(), "computed ahead");
            }
        });
    }

    /// Warm the model for a request that will probably come (see
    /// [`LanguageModel::warm`]): in the background, at low priority (it takes the slot of the
    /// computation ahead, so any real request cancels it). Needs a tokio runtime.
    pub fn warm(&self, req: CompletionRequest) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cancel = CancelToken::new();
        if let Some(old) = self
            .ahead
            .lock()
            .expect("ahead lock")
            .replace(cancel.clone())
        {
            old.cancel();
        }
        let this = self.clone();
        rt.spawn(async move {
            let p = this.prepare(&req);
            if let Err(e) = this.model.warm(this.job(&p, &req, cancel, &[], None)).await {
                tracing::debug!("warming failed: {e}");
            }
        });
    }

    /// Blocking version of [`Completer::complete`] (CLI, evaluation; not from async code):
    /// no completion cache, nothing computed ahead.
    pub fn complete_blocking(
        &self,
        req: CompletionRequest,
        cancel: CancelToken,
    ) -> Result<Completion, PipelineError> {
        let p = self.prepare(&req);
        let gen = self
            .model
            .generate_blocking(self.job(&p, &req, cancel, &[], None))?;
        self.finish(&p, &req.options, gen)
    }
}
