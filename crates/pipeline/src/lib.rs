//! The completion pipeline: document text and cursor -> FIM prompt ids -> engine -> cleaned
//! completion. Shared by the CLI, the server, evaluation and the benchmark so that they can
//! never disagree on the prompt format or the cleaning rules.
//!
//! Knows `copilot-fim` and `copilot-engine`; knows nothing of LSP, JSON or editors.

pub mod cache;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache::CompletionCache;

use copilot_engine::{
    Engine, EngineError, GenerateParams, GenerateRequest, Generation, LoadStage, StopReason,
    Tokenizer,
};
use copilot_fim::{
    Budget, CursorContext, Layout, LayoutChoice, PostOptions, PromptInput, Shape, Template,
    TokenCounter,
};

pub use copilot_engine::{CancelToken, DTypeSpec, DeviceSpec, ModelSpec};

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
    fn variant(&self, adapter: &Option<String>, snippets: &[copilot_fim::Snippet]) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{self:?}").hash(&mut h);
        adapter.hash(&mut h);
        snippets.hash(&mut h);
        h.finish()
    }
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
}

impl From<EngineError> for PipelineError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e.to_string())
    }
}

/// Counts tokens with the model's tokenizer, for the prompt budgets, remembering the
/// counts of short texts: the budgets count a document line by line, and between two
/// keystrokes only the cursor's line changes (a 480-line file took ~40 ms of tokenizer calls
/// per request before, more than the model's step).
struct TokenizerCounter<'a> {
    tok: &'a Tokenizer,
    memo: &'a Mutex<HashMap<Box<str>, u32>>,
}

/// Texts up to this many bytes have their counts remembered.
const MEMO_MAX_TEXT: usize = 512;
/// Remembered counts before the memo starts over.
const MEMO_ENTRIES: usize = 50_000;

impl TokenCounter for TokenizerCounter<'_> {
    fn count(&self, text: &str) -> usize {
        let compute = || {
            self.tok
                .encode_text(text)
                .map_or(text.len() / 3 + 1, |ids| ids.len())
        };
        if text.len() > MEMO_MAX_TEXT {
            return compute();
        }
        if let Some(&n) = self.memo.lock().expect("memo lock").get(text) {
            return n as usize;
        }
        let n = compute();
        let mut memo = self.memo.lock().expect("memo lock");
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(text.into(), n as u32);
        n
    }
}

/// A prompt ready for the engine, and what post-processing needs to know.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub ids: Vec<u32>,
    pub layout: Layout,
    pub shape: Shape,
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

/// A loaded model behind its thread, with the prompt and cleaning rules around it.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Completer {
    engine: Engine,
    cache: Arc<Mutex<CompletionCache>>,
    /// The computation ahead in flight, if any: every new request cancels it.
    ahead: Arc<Mutex<Option<CancelToken>>>,
    /// Names of the adapters registered with the engine.
    adapters: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Token counts of lines, for the prompt budgets.
    counts: Arc<Mutex<HashMap<Box<str>, u32>>>,
    /// The model family's FIM format, found from its tokenizer's special tokens; None when
    /// it has no FIM tokens (then every prompt is left-to-right, with one warning).
    template: Option<&'static Template>,
    warned_no_fim: Arc<std::sync::atomic::AtomicBool>,
}

/// Default soft decoding budget.
pub const DEFAULT_TIME_BUDGET_MS: u64 = 250;

/// Completions remembered (llama.vim keeps 250).
const CACHE_ENTRIES: usize = 256;

impl Completer {
    /// Resolve, load and start the model thread. Blocking: call from a blocking context.
    pub fn load(spec: &ModelSpec, on_event: &dyn Fn(LoadEvent)) -> Result<Self, PipelineError> {
        let engine = copilot_engine::load(spec, &mut |stage| match stage {
            LoadStage::Fetching(file) => on_event(LoadEvent::Downloading {
                file: file.to_string(),
            }),
            LoadStage::Loading(what) => on_event(LoadEvent::Loading {
                what: what.to_string(),
            }),
        })?;
        on_event(LoadEvent::Ready {
            description: engine.description().to_string(),
        });
        Ok(Self::from_engine(engine))
    }

    pub fn from_engine(engine: Engine) -> Self {
        let tok = engine.tokenizer().clone();
        let template = Template::detect(|s| tok.token_id(s).is_some());
        tracing::debug!(
            template = template.map_or("none", |t| t.name),
            "FIM template from the tokenizer"
        );
        Self {
            engine,
            cache: Arc::new(Mutex::new(CompletionCache::new(CACHE_ENTRIES))),
            ahead: Arc::default(),
            adapters: Arc::default(),
            counts: Arc::default(),
            template,
            warned_no_fim: Arc::default(),
        }
    }

    /// The model family's FIM template (None: the tokenizer has no FIM tokens).
    pub fn template(&self) -> Option<&'static Template> {
        self.template
    }

    /// The layout for this cursor in the model's family format; left-to-right, with one
    /// warning, when the tokenizer has no FIM tokens.
    fn layout(&self, choice: LayoutChoice, suffix: &str) -> (&'static Template, Layout) {
        match self.template {
            Some(t) => (t, t.choose_layout(choice, suffix)),
            None => {
                let fim = copilot_fim::choose_layout(choice, suffix) != Layout::LeftToRight;
                if fim
                    && !self
                        .warned_no_fim
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        "the model's tokenizer has no FIM tokens: completing left to right \
                         (the code after the cursor is not shown to the model)"
                    );
                }
                (&copilot_fim::STARCODER, Layout::LeftToRight)
            }
        }
    }

    /// Make sure an adapter is registered under `name`, building it with `build` (on the
    /// model thread, given the base model) the first time. The base weights stay shared.
    pub async fn ensure_adapter(
        &self,
        name: &str,
        build: impl FnOnce(&copilot_engine::Model) -> Result<copilot_engine::Lora, String>
            + Send
            + 'static,
    ) -> Result<(), PipelineError> {
        if self.adapters.lock().expect("adapters lock").contains(name) {
            return Ok(());
        }
        self.cancel_ahead();
        let key = name.to_string();
        self.engine
            .run(move |g| {
                let lora = build(&g.model)?;
                g.add_adapter(key, lora);
                Ok::<(), String>(())
            })
            .await?
            .map_err(PipelineError::Engine)?;
        self.adapters
            .lock()
            .expect("adapters lock")
            .insert(name.to_string());
        Ok(())
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Build the prompt ids for a request (no model work).
    pub fn prepare(&self, req: &CompletionRequest) -> Result<Prepared, PipelineError> {
        let tok = self.engine.tokenizer();
        let window = self.engine.config().n_positions;
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
            &TokenizerCounter {
                tok,
                memo: &self.counts,
            },
        );
        let specials = tok.specials();
        let mut ids = prompt.encode(
            |t| tok.encode_text(t),
            |s| {
                tok.token_id(s)
                    .ok_or_else(|| EngineError::Tokenizer(format!("no `{s}` token")))
            },
        )?;
        if ids.is_empty() {
            // An empty document in left-to-right mode: start from end-of-text, as the model
            // saw at the start of every training document.
            ids.push(specials.eos);
        }
        if ids.len() + max_new > window {
            // The budget counts text pieces one by one; merged tokens at piece edges can
            // differ by a few. Keep the end (nearest the cursor in every layout's last piece).
            let keep = window.saturating_sub(max_new).max(1);
            ids.drain(..ids.len() - keep);
        }
        let shape = copilot_fim::shape(&CursorContext { prefix, suffix });
        Ok(Prepared {
            ids,
            layout,
            shape,
            text: text.clone(),
            cursor,
        })
    }

    fn request(
        &self,
        p: &Prepared,
        opts: &CompletionOptions,
        adapter: Option<String>,
        cancel: CancelToken,
    ) -> GenerateRequest {
        let window = self.engine.config().n_positions;
        let mut req = GenerateRequest::new(
            p.ids.clone(),
            GenerateParams {
                max_new_tokens: opts.max_tokens.min(window / 2).max(1),
                temperature: opts.temperature,
                top_p: opts.top_p,
                top_k: opts.top_k,
                seed: opts.seed,
                stop_strings: Vec::new(),
                soft_budget: opts.time_budget,
                hard_budget: None,
            },
        );
        req.cancel = cancel;
        req.adapter = adapter;
        if opts.postprocess {
            // Stop decoding as soon as post-processing would cut anyway.
            let p = p.clone();
            req.stop = Some(Box::new(move |generated: &str| {
                copilot_fim::should_stop(&p.context(), p.shape, generated)
            }));
        }
        req
    }

    fn finish(
        &self,
        p: &Prepared,
        opts: &CompletionOptions,
        gen: Generation,
    ) -> Result<Completion, PipelineError> {
        if gen.stop_reason == StopReason::Cancelled {
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
                generated_tokens: gen.tokens.len(),
                prefill_ms: gen.prefill_ms,
                decode_ms: gen.decode_ms,
                stop_reason: format!("{:?}", gen.stop_reason),
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
        self.cancel_ahead();
        if let Some(hit) = self.cached(&req) {
            return Ok(hit);
        }
        let p = self.prepare(&req)?;
        let gen = self
            .engine
            .generate(self.request(&p, &req.options, req.adapter.clone(), cancel))
            .await?;
        let out = self.finish(&p, &req.options, gen)?;
        self.remember(&req, &p, &out);
        if req.options.cache && !out.text.is_empty() {
            self.compute_ahead(&req, &p, &out.text);
        }
        Ok(out)
    }

    fn cancel_ahead(&self) {
        if let Some(c) = self.ahead.lock().expect("ahead lock").take() {
            c.cancel();
        }
    }

    fn cached(&self, req: &CompletionRequest) -> Option<Completion> {
        if !req.options.cache {
            return None;
        }
        let cursor = floor_char_boundary(&req.text, req.cursor);
        let (prefix, suffix) = req.text.split_at(cursor);
        let variant = req.options.variant(&req.adapter, &req.snippets);
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

    fn remember(&self, req: &CompletionRequest, p: &Prepared, out: &Completion) {
        if req.options.cache && !out.text.is_empty() {
            let ctx = p.context();
            self.cache.lock().expect("cache lock").insert(
                req.options.variant(&req.adapter, &req.snippets),
                ctx.prefix,
                ctx.suffix,
                &out.text,
            );
        }
    }

    /// Compute, on the model thread when it is idle, the completion after accepting `shown`,
    /// and keep it in the cache. Needs a tokio runtime (the server's); skipped without one.
    fn compute_ahead(&self, req: &CompletionRequest, p: &Prepared, shown: &str) {
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
        rt.spawn(async move {
            let Ok(p) = this.prepare(&next) else { return };
            let gen = this
                .engine
                .generate(this.request(&p, &next.options, next.adapter.clone(), cancel))
                .await;
            if let Ok(out) = gen
                .map_err(PipelineError::from)
                .and_then(|g| this.finish(&p, &next.options, g))
            {
                this.remember(&next, &p, &out);
                tracing::debug!(chars = out.text.len(), "computed ahead");
            }
        });
    }

    /// Blocking version of [`Completer::complete`] (CLI, evaluation; not from async code).
    pub fn complete_blocking(
        &self,
        req: CompletionRequest,
        cancel: CancelToken,
    ) -> Result<Completion, PipelineError> {
        let p = self.prepare(&req)?;
        let gen = self.engine.generate_blocking(self.request(
            &p,
            &req.options,
            req.adapter.clone(),
            cancel,
        ))?;
        self.finish(&p, &req.options, gen)
    }
}
