//! Decoding: prefill with KV-cache reuse (longest common token prefix with the previous
//! prompt), then sample token by token until end-of-text, a stop string, a caller's stop rule,
//! the token limit, a time budget or cancellation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_transformers::generation::{LogitsProcessor, Sampling};

use crate::cancel::CancelToken;
use crate::error::Result;
use crate::merged::{MergedCopies, Switched};
use crate::model::{KvCache, Logits, Lora, Model};
use crate::tokenizer::{Tokenizer, Utf8Decoder};

/// Tokens computed per forward call during prefill: bounds the attention scratch memory and
/// lets cancellation land between chunks.
pub const PREFILL_CHUNK: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    /// 0 (or below 1e-7): greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: Option<usize>,
    pub seed: u64,
    /// Generation stops when the text contains one of these; it is cut before it.
    pub stop_strings: Vec<String>,
    /// After this much decoding time, stop at the next newline (keeping complete lines).
    pub soft_budget: Option<Duration>,
    /// After this much decoding time, stop whatever the text.
    pub hard_budget: Option<Duration>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 0.95,
            top_k: None,
            seed: 42,
            stop_strings: Vec::new(),
            soft_budget: None,
            hard_budget: None,
        }
    }
}

/// A caller's stop rule, called with the text generated so far after each token.
pub type StopFn = Box<dyn FnMut(&str) -> bool + Send>;

/// A caller's view of the text as it comes (streaming), called with the text generated so
/// far after each token that decoding goes on from: every stop check has passed, so no later
/// step cuts into it except a stop string that its end could begin.
pub type TextFn = Box<dyn FnMut(&str) + Send>;

pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub stop: Option<StopFn>,
    /// Told the text so far after each token (streaming front-ends).
    pub on_text: Option<TextFn>,
    pub cancel: CancelToken,
    /// Adapter name, if the engine has adapters registered (see [`crate::Engine::add_adapter`]).
    pub adapter: Option<String>,
}

impl GenerateRequest {
    pub fn new(prompt: Vec<u32>, params: GenerateParams) -> Self {
        Self {
            prompt,
            params,
            stop: None,
            on_text: None,
            cancel: CancelToken::new(),
            adapter: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndOfText,
    StopString,
    StopRule,
    MaxTokens,
    Budget,
    Cancelled,
    /// The model's window is full.
    Window,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub stop_reason: StopReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the cache.
    pub reused_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

impl Generation {
    /// Decode speed in tokens per second (0 when nothing was decoded).
    pub fn decode_tokens_per_s(&self) -> f64 {
        if self.decode_ms > 0.0 {
            self.tokens.len() as f64 * 1000.0 / self.decode_ms
        } else {
            0.0
        }
    }
}

/// The model with its caches and tokenizer: what the model thread owns.
pub struct Generator {
    pub model: Model,
    pub tokenizer: Arc<Tokenizer>,
    /// One KV cache per adapter (None = base), so one repository's adapter never leaks into
    /// another's completion through cached keys and values.
    caches: HashMap<Option<String>, KvCache>,
    adapters: HashMap<String, Arc<Lora>>,
    /// Keep at most this many caches besides the base one.
    max_caches: usize,
    /// Adapters served merged, within a memory budget ([`Self::set_merge_budget`]).
    merged: MergedCopies,
}

impl Generator {
    pub fn new(model: Model, tokenizer: Arc<Tokenizer>) -> Self {
        Self {
            model,
            tokenizer,
            caches: HashMap::new(),
            adapters: HashMap::new(),
            max_caches: 4,
            merged: MergedCopies::default(),
        }
    }

    /// Memory for merged copies of adapters (0, the default here: every adapter unmerged).
    /// Within it, an adapter's first use starts merging it in the background; it is served
    /// unmerged until its copy is ready, merged after, and the least recently used copy is
    /// dropped to make room for another.
    pub fn set_merge_budget(&mut self, bytes: usize) {
        let switched = self.merged.set_budget(bytes);
        self.reset_switched(switched);
    }

    /// The merged copies: budget, bytes held, adapters served merged (most recent first).
    pub fn merged_copies(&self) -> &MergedCopies {
        &self.merged
    }

    /// Merge `name` now if the budget allows, and wait for it (benchmarks and evaluation
    /// measure the steady state). Returns whether it is served merged.
    pub fn merge_now(&mut self, name: &str) -> Result<bool> {
        let lora = self
            .adapter(name)
            .ok_or_else(|| crate::EngineError::Other(format!("unknown adapter `{name}`")))?;
        let switched = self.merged.wait();
        self.reset_switched(switched);
        let (copy, switched) = self.merged.serve(name, &self.model, &lora);
        self.reset_switched(switched);
        if copy.is_some() {
            return Ok(true);
        }
        let switched = self.merged.wait();
        self.reset_switched(switched);
        Ok(self.merged.names().iter().any(|n| n == name))
    }

    /// Adapters now served by other weights than those that filled their caches.
    fn reset_switched(&mut self, switched: Switched) {
        for name in switched.0 {
            self.caches.remove(&Some(name));
        }
    }

    /// Register (or replace) an adapter; its pairs are prepared for inference once here
    /// ([`crate::low_rank::prepare`]).
    pub fn add_adapter(&mut self, name: String, lora: Lora) {
        self.merged.forget(&name);
        self.caches.remove(&Some(name.clone()));
        self.adapters
            .insert(name, Arc::new(crate::low_rank::prepare(&lora)));
    }

    pub fn remove_adapter(&mut self, name: &str) {
        self.merged.forget(name);
        self.caches.remove(&Some(name.to_string()));
        self.adapters.remove(name);
    }

    pub fn adapter(&self, name: &str) -> Option<Arc<Lora>> {
        self.adapters.get(name).cloned()
    }

    /// Drop every cache (after an error or a panic, when their state is unknown).
    pub fn reset_caches(&mut self) {
        self.caches.clear();
    }

    fn cache_for(&mut self, adapter: &Option<String>) -> &mut KvCache {
        if !self.caches.contains_key(adapter) && self.caches.len() > self.max_caches {
            self.caches.retain(|k, _| k.is_none());
        }
        self.caches.entry(adapter.clone()).or_default()
    }

    /// Run one request. `abandoned` is polled between tokens: true when nobody waits for the
    /// answer any more (the requester dropped it).
    pub fn generate(
        &mut self,
        req: &mut GenerateRequest,
        abandoned: &dyn Fn() -> bool,
    ) -> Result<Generation> {
        let mut lora =
            match &req.adapter {
                None => None,
                Some(name) => Some(self.adapter(name).ok_or_else(|| {
                    crate::EngineError::Other(format!("unknown adapter `{name}`"))
                })?),
            };
        let adapter = req.adapter.clone();
        // A merged copy serves its adapter when there is one (it needs no delta); the base
        // and the unmerged delta otherwise.
        let copy = match (&adapter, &lora) {
            (Some(name), Some(l)) => {
                let (copy, switched) = self.merged.serve(name, &self.model, l);
                self.reset_switched(switched);
                copy
            }
            _ => {
                let switched = self.merged.poll();
                self.reset_switched(switched);
                None
            }
        };
        if copy.is_some() {
            lora = None;
        }
        let window = self.model.config().n_positions;
        if req.prompt.is_empty() {
            return Err(crate::EngineError::Other("empty prompt".into()));
        }
        if req.prompt.len() >= window {
            return Err(crate::EngineError::ContextTooLong {
                len: req.prompt.len(),
                window,
            });
        }
        let stopped = |req: &GenerateRequest| req.cancel.is_cancelled() || abandoned();
        let t0 = Instant::now();
        let prompt = req.prompt.clone();
        let tokenizer = self.tokenizer.clone();
        // Temporarily take the cache out so the model can be borrowed alongside it.
        let mut cache = std::mem::take(self.cache_for(&adapter));
        let model: &Model = copy.as_deref().unwrap_or(&self.model);
        // Keep the longest common prefix; at least one token must be computed to get logits.
        let reused = cache.common_prefix(&prompt).min(prompt.len() - 1);
        cache.truncate(reused);
        let mut logits = None;
        let mut pos = reused;
        let mut cancelled = false;
        while pos < prompt.len() {
            if stopped(req) {
                cancelled = true;
                break;
            }
            let end = (pos + PREFILL_CHUNK).min(prompt.len());
            let res =
                model.forward_cached(&prompt[pos..end], &mut cache, Logits::Last, lora.as_deref());
            match res {
                Ok(l) => logits = Some(l),
                Err(e) => {
                    cache.reset();
                    *self.cache_for(&adapter) = cache;
                    return Err(e);
                }
            }
            pos = end;
        }
        let prefill_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let mut gen = Generation {
            text: String::new(),
            tokens: Vec::new(),
            stop_reason: StopReason::Cancelled,
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            prefill_ms,
            decode_ms: 0.0,
        };
        if cancelled {
            *self.cache_for(&adapter) = cache;
            return Ok(gen);
        }
        let result = self.decode(
            model,
            req,
            &mut cache,
            logits.expect("prefill ran"),
            &mut gen,
            lora.as_deref(),
            &tokenizer,
            &stopped,
        );
        if result.is_err() {
            cache.reset();
        }
        *self.cache_for(&adapter) = cache;
        result.map(|()| gen)
    }

    #[allow(clippy::too_many_arguments)]
    fn decode(
        &self,
        model: &Model,
        req: &mut GenerateRequest,
        cache: &mut KvCache,
        mut logits: candle_core::Tensor,
        gen: &mut Generation,
        lora: Option<&Lora>,
        tokenizer: &Tokenizer,
        stopped: &dyn Fn(&GenerateRequest) -> bool,
    ) -> Result<()> {
        let p = &req.params;
        let window = model.config().n_positions;
        let sampling = if p.temperature < 1e-7 {
            Sampling::ArgMax
        } else {
            match (p.top_k, p.top_p > 0.0 && p.top_p < 1.0) {
                (Some(k), true) => Sampling::TopKThenTopP {
                    k,
                    p: p.top_p,
                    temperature: p.temperature,
                },
                (Some(k), false) => Sampling::TopK {
                    k,
                    temperature: p.temperature,
                },
                (None, true) => Sampling::TopP {
                    p: p.top_p,
                    temperature: p.temperature,
                },
                (None, false) => Sampling::All {
                    temperature: p.temperature,
                },
            }
        };
        let mut sampler = LogitsProcessor::from_sampling(p.seed, sampling);
        let eos = tokenizer.specials().eos;
        let mut utf8 = Utf8Decoder::new();
        let t0 = Instant::now();
        let mut soft_mark: Option<usize> = None;
        gen.stop_reason = StopReason::MaxTokens;
        for _ in 0..p.max_new_tokens {
            if stopped(req) {
                gen.stop_reason = StopReason::Cancelled;
                break;
            }
            let next = sampler.sample(&logits)?;
            // End of text, or any other control token (`<fim_prefix>`, `<filename>`...): none
            // of them belongs in code, and a model that writes one has left the middle.
            if next == eos || tokenizer.is_special(next) {
                gen.stop_reason = StopReason::EndOfText;
                break;
            }
            gen.tokens.push(next);
            // Bytes that are not UTF-8 are dropped, never turned into U+FFFD.
            gen.text
                .push_str(&utf8.push_valid(tokenizer.token_bytes(next)));
            if let Some((at, _)) = p
                .stop_strings
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| gen.text.find(s.as_str()).map(|i| (i, s)))
                .min_by_key(|(i, _)| *i)
            {
                gen.text.truncate(at);
                gen.stop_reason = StopReason::StopString;
                break;
            }
            if let Some(stop) = req.stop.as_mut() {
                if stop(&gen.text) {
                    gen.stop_reason = StopReason::StopRule;
                    break;
                }
            }
            let elapsed = t0.elapsed();
            if p.hard_budget.is_some_and(|b| elapsed >= b) {
                gen.stop_reason = StopReason::Budget;
                break;
            }
            if p.soft_budget.is_some_and(|b| elapsed >= b) {
                let mark = *soft_mark.get_or_insert(gen.text.len());
                if let Some(nl) = gen.text[mark..].find('\n') {
                    gen.text.truncate(mark + nl + 1);
                    gen.stop_reason = StopReason::Budget;
                    break;
                }
            }
            if cache.len() + 1 >= window {
                gen.stop_reason = StopReason::Window;
                break;
            }
            if let Some(on_text) = req.on_text.as_mut() {
                on_text(&gen.text);
            }
            logits = model.forward_cached(&[next], cache, Logits::Last, lora)?;
        }
        // A character still unfinished when decoding stopped is not text: dropped (it used to
        // become U+FFFD in the completion).
        gen.decode_ms = t0.elapsed().as_secs_f64() * 1000.0;
        Ok(())
    }
}
