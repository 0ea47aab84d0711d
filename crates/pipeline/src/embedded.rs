//! The embedded engine behind the generation seam: our candle model on its own thread
//! (`copilot_engine::Engine`), with the KV cache reused between keystrokes.
//!
//! A prompt's text pieces are tokenized one by one and the special ids spliced in between, so
//! user text that contains `<fim_middle>` stays text.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use copilot_engine::{
    Engine, EngineError, GenerateParams, GenerateRequest, LoadStage, Lora, Model, ModelSpec,
    Tokenizer,
};
use copilot_fim::{Prompt, Template};

use crate::model::{BoxFuture, Generated, Job, LanguageModel, ModelInfo};
use crate::{LoadEvent, PipelineError};

/// Reads a PEFT adapter directory into the engine's [`Lora`] for `model` (on the model
/// thread). Supplied by whoever builds the embedded model, so the pipeline does not depend on
/// the fine-tuning crate.
pub type AdapterReader = fn(&Path, &Model) -> Result<Lora, String>;

/// Prompt tokens of the speed measurement at load.
pub const CALIBRATION_TOKENS: usize = 256;

/// Texts up to this many bytes have their counts remembered.
const MEMO_MAX_TEXT: usize = 512;
/// Remembered counts before the memo starts over.
const MEMO_ENTRIES: usize = 50_000;

/// Our engine, as a [`LanguageModel`]. Cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    engine: Engine,
    info: ModelInfo,
    /// The family's FIM template, found from the tokenizer (None: it has no FIM tokens).
    template: Option<&'static Template>,
    read_adapter: Option<AdapterReader>,
    /// Names of the adapters registered with the engine.
    adapters: Arc<Mutex<HashSet<String>>>,
    /// Token counts of short texts: the budgets count a document line by line, and between
    /// two keystrokes only the cursor's line changes (a 480-line file took ~40 ms of
    /// tokenizer calls per request before, more than the model's step).
    counts: Arc<Mutex<HashMap<Box<str>, u32>>>,
    /// Measured at load.
    speed: Option<crate::Speed>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("description", &self.info.description)
            .finish_non_exhaustive()
    }
}

impl Embedded {
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
        on_event(LoadEvent::Loading {
            what: "measuring its speed".into(),
        });
        let mut model = Self::new(engine);
        model.speed = model.measure_speed(CALIBRATION_TOKENS);
        if let Some(s) = model.speed {
            tracing::info!(
                prefill_tokens_per_s = s.prefill_tokens_per_s.round(),
                decode_ms_per_token = s.decode_ms_per_token,
                "measured the model's speed"
            );
        }
        on_event(LoadEvent::Ready {
            description: model.engine.description().to_string(),
        });
        Ok(model)
    }

    /// Prefill a synthetic prompt of about `tokens` tokens from an empty cache, then decode
    /// 8 greedy tokens; blocking (at load, before any request).
    fn measure_speed(&self, tokens: usize) -> Option<crate::Speed> {
        let tok = self.engine.tokenizer();
        let mut ids = Vec::new();
        let mut i = 0;
        while ids.len() < tokens && i < 10_000 {
            let line =
                format!("def step_{i}(value, scale={i}):\n    return value * scale + {i}\n\n");
            ids.extend(tok.encode_text(&line).ok()?);
            i += 1;
        }
        ids.truncate(tokens.min(self.info.window / 2).max(1));
        // A first small pass: buffers allocated, kernels and pages warm.
        let warm = GenerateRequest::new(
            ids[..ids.len().min(16)].to_vec(),
            GenerateParams {
                max_new_tokens: 1,
                ..GenerateParams::default()
            },
        );
        self.engine.generate_blocking(warm).ok()?;
        // Then from an empty cache: the prompt starts differently.
        ids[0] = self.engine.tokenizer().specials().eos;
        let g = self
            .engine
            .generate_blocking(GenerateRequest::new(
                ids,
                GenerateParams {
                    max_new_tokens: 8,
                    temperature: 0.0,
                    ..GenerateParams::default()
                },
            ))
            .ok()?;
        let computed = g.prompt_tokens - g.reused_tokens;
        (g.prefill_ms > 0.0).then(|| crate::Speed {
            prefill_tokens_per_s: computed as f64 * 1000.0 / g.prefill_ms,
            decode_ms_per_token: if g.tokens.is_empty() {
                0.0
            } else {
                g.decode_ms / g.tokens.len() as f64
            },
        })
    }

    pub fn new(engine: Engine) -> Self {
        let tok = engine.tokenizer().clone();
        // The family's FIM format, from the strings its tokenizer has (never ids).
        let template = Template::detect(|s| tok.token_id(s).is_some());
        tracing::debug!(
            template = template.map_or("none", |t| t.name),
            "FIM template from the tokenizer"
        );
        let info = ModelInfo {
            description: engine.description().to_string(),
            window: engine.config().n_positions,
            fim: template.is_some(),
        };
        Self {
            engine,
            info,
            template,
            read_adapter: None,
            adapters: Arc::default(),
            counts: Arc::default(),
            speed: None,
        }
    }

    /// Let [`LanguageModel::load_adapter`] read PEFT directories with `read`.
    pub fn with_adapter_reader(mut self, read: AdapterReader) -> Self {
        self.read_adapter = Some(read);
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        self.engine.tokenizer()
    }

    /// The prompt's ids: text pieces tokenized one by one, special ids spliced in, cut at
    /// the front to leave `max_new` positions of the window for generating.
    pub fn encode(&self, prompt: &Prompt, max_new: usize) -> Result<Vec<u32>, PipelineError> {
        let tok = self.engine.tokenizer();
        // Special pieces by the family's strings, looked up in the vocabulary.
        let ids = prompt.encode(
            |t| tok.encode_text(t),
            |s| {
                tok.token_id(s)
                    .ok_or_else(|| EngineError::Tokenizer(format!("no `{s}` token")))
            },
        )?;
        Ok(self.fit(ids, max_new))
    }

    /// A prompt's ids as the model runs them: never empty, and cut at the front to leave
    /// `max_new` positions of the window.
    fn fit(&self, mut ids: Vec<u32>, max_new: usize) -> Vec<u32> {
        if ids.is_empty() {
            // An empty document in left-to-right mode: start from end-of-text, as the model
            // saw at the start of every training document.
            ids.push(self.engine.tokenizer().specials().eos);
        }
        let window = self.info.window;
        if ids.len() + max_new > window {
            // The budget counts text pieces one by one; merged tokens at piece edges can
            // differ by a few. Keep the end (nearest the cursor in every layout's last piece).
            let keep = window.saturating_sub(max_new).max(1);
            ids.drain(..ids.len() - keep);
        }
        ids
    }

    /// Ids the model can read: its embedding's rows that the tokenizer also knows.
    fn ids_below(&self) -> usize {
        self.engine
            .config()
            .vocab_size
            .min(self.engine.tokenizer().vocab_size())
    }

    /// A prompt given as ids: checked against the vocabulary, cut at the front as
    /// [`Embedded::encode`] cuts.
    fn given_ids(&self, ids: Vec<u32>, max_new: usize) -> Result<Vec<u32>, PipelineError> {
        let n = self.ids_below();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= n) {
            return Err(PipelineError::Engine(format!(
                "token id {bad} is outside the vocabulary (ids below {n})"
            )));
        }
        Ok(self.fit(ids, max_new))
    }

    fn request(&self, job: Job) -> Result<GenerateRequest, PipelineError> {
        let s = job.sampling;
        let ids = match job.ids {
            Some(ids) => self.given_ids(ids, s.max_new_tokens)?,
            None => self.encode(&job.prompt, s.max_new_tokens)?,
        };
        let mut req = GenerateRequest::new(
            ids,
            GenerateParams {
                max_new_tokens: s.max_new_tokens,
                temperature: s.temperature,
                top_p: s.top_p,
                top_k: s.top_k,
                seed: s.seed,
                stop_strings: s.stop_strings,
                soft_budget: s.soft_budget,
                hard_budget: None,
            },
        );
        req.cancel = job.cancel;
        req.adapter = job.adapter;
        req.stop = job.stop;
        req.on_text = job.on_text;
        Ok(req)
    }
}

fn generated(g: copilot_engine::Generation) -> Generated {
    Generated {
        generated_tokens: g.tokens.len(),
        stop_reason: Some(g.stop_reason),
        prompt_tokens: g.prompt_tokens,
        reused_tokens: g.reused_tokens,
        prefill_ms: g.prefill_ms,
        decode_ms: g.decode_ms,
        text: g.text,
    }
}

impl LanguageModel for Embedded {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn template(&self) -> Option<&'static Template> {
        self.template
    }

    fn tokenize(&self, text: &str) -> Option<Vec<u32>> {
        self.engine.tokenizer().encode_text(text).ok()
    }

    fn vocab_size(&self) -> Option<usize> {
        Some(self.ids_below())
    }

    fn count_tokens(&self, text: &str) -> usize {
        let compute = || {
            self.engine
                .tokenizer()
                .encode_text(text)
                .map_or(text.len() / 3 + 1, |ids| ids.len())
        };
        if text.len() > MEMO_MAX_TEXT {
            return compute();
        }
        if let Some(&n) = self.counts.lock().expect("memo lock").get(text) {
            return n as usize;
        }
        let n = compute();
        let mut memo = self.counts.lock().expect("memo lock");
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(text.into(), n as u32);
        n
    }

    fn generate(&self, job: Job) -> BoxFuture<Result<Generated, PipelineError>> {
        let req = self.request(job);
        let engine = self.engine.clone();
        Box::pin(async move { Ok(generated(engine.generate(req?).await?)) })
    }

    fn speed(&self) -> Option<crate::Speed> {
        self.speed
    }

    fn warm(&self, job: Job) -> BoxFuture<Result<(), PipelineError>> {
        // The same ids the request will have (cut for its `max_new_tokens`), prefilled only.
        let req = self.request(job).map(|mut r| {
            r.params.max_new_tokens = 0;
            r
        });
        let engine = self.engine.clone();
        Box::pin(async move {
            let g = engine.generate(req?).await?;
            tracing::debug!(
                prompt = g.prompt_tokens,
                reused = g.reused_tokens,
                ms = g.prefill_ms,
                stopped = ?g.stop_reason,
                "warmed"
            );
            Ok(())
        })
    }

    fn generate_blocking(&self, job: Job) -> Result<Generated, PipelineError> {
        Ok(generated(
            self.engine.generate_blocking(self.request(job)?)?,
        ))
    }

    fn load_adapter(&self, name: &str, dir: &Path) -> BoxFuture<Result<(), PipelineError>> {
        let this = self.clone();
        let (name, dir) = (name.to_string(), dir.to_path_buf());
        Box::pin(async move {
            if this.adapters.lock().expect("adapters lock").contains(&name) {
                return Ok(());
            }
            let Some(read) = this.read_adapter else {
                return Err(PipelineError::Unsupported("LoRA adapters"));
            };
            let key = name.clone();
            this.engine
                .run(move |g| {
                    let lora = read(&dir, &g.model)?;
                    g.add_adapter(key, lora);
                    Ok::<(), String>(())
                })
                .await?
                .map_err(PipelineError::Engine)?;
            this.adapters.lock().expect("adapters lock").insert(name);
            Ok(())
        })
    }
}
