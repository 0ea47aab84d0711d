//! The generation seam: what the pipeline needs from a model, whichever engine runs it (as
//! text-generation-inference's `trait Backend` separates its router from its engines).
//!
//! The pipeline owns everything around a generation (prompt building and budgets, context
//! snippets, the completion cache, post-processing, compute-ahead); a [`LanguageModel`]
//! only counts tokens, says what its window and FIM support are, and generates for a built
//! [`copilot_fim::Prompt`] with stop strings, the early-stop rule, time budgets and
//! cancellation. The embedded engine implements it (`embedded.rs`); so do the remote engines
//! (crate `copilot-remote`) and the test doubles of the server and the HTTP front-end.
//!
//! Knows no LSP, no HTTP, no JSON.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use copilot_fim::{Prompt, Snippet};

pub use copilot_engine::{CancelToken, StopFn, StopReason, TextFn};

use crate::PipelineError;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a model says about itself, once, when it is ready.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// One line naming the model (and where and how it runs), for progress and logs.
    pub description: String,
    /// Positions the model attends to: prompt and generated tokens together.
    pub window: usize,
    /// Whether the model has FIM tokens; without them every prompt is left-to-right.
    pub fim: bool,
}

/// How to sample and when to stop: everything but the prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
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
}

/// One generation to run.
pub struct Job {
    /// The prompt as the pipeline built it (pieces, layout, the kept prefix and suffix).
    pub prompt: Prompt,
    /// The context snippets the prompt renders, for engines that take them apart
    /// (llama-server's `input_extra`).
    pub snippets: Vec<Snippet>,
    pub sampling: Sampling,
    /// The early-stop rule, called with the text so far after each token.
    pub stop: Option<StopFn>,
    /// Told the raw text so far after each token that decoding goes on from (streaming);
    /// an engine that cannot stream never calls it, and the pipeline sends the whole
    /// answer at the end.
    pub on_text: Option<TextFn>,
    /// Set when the requester gives up: the engine stops within one token.
    pub cancel: CancelToken,
    /// The adapter to apply, by the name it was loaded under (`None`: the base model).
    pub adapter: Option<String>,
    /// A prompt given as the model's token ids (an API client's): the engine runs these
    /// instead of `prompt` (then empty), cut at the front to the window like any prompt.
    pub ids: Option<Vec<u32>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("layout", &self.prompt.layout)
            .field("sampling", &self.sampling)
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

/// What came back from a generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generated {
    pub text: String,
    pub generated_tokens: usize,
    pub stop_reason: Option<StopReason>,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from a cache (the engine's, or a remote
    /// server's own when it reports it).
    pub reused_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// Something that can generate: the one seam between the pipeline and every engine.
pub trait LanguageModel: Send + Sync + 'static {
    fn info(&self) -> &ModelInfo;

    /// Tokens `text` takes, for the prompt budgets (an estimate where the engine has no
    /// tokenizer at hand: say so once in the log).
    fn count_tokens(&self, text: &str) -> usize;

    /// `text`'s token ids in the model's vocabulary (special-token strings in it stay
    /// text), where the engine has its tokenizer at hand; `None` otherwise.
    fn tokenize(&self, text: &str) -> Option<Vec<u32>> {
        let _ = text;
        None
    }

    /// The ids a token-id prompt ([`Job::ids`]) may hold, `0..n`, where the engine knows
    /// its vocabulary; `None` otherwise.
    fn vocab_size(&self) -> Option<usize> {
        None
    }

    /// The model family's FIM format (`copilot_fim::Template`): which strings its FIM and
    /// repository tokens are, which layouts it was trained with. The embedded engine finds
    /// it from the tokenizer's special tokens; by default StarCoder's when `info().fim`.
    fn template(&self) -> Option<&'static copilot_fim::Template> {
        self.info().fim.then_some(&copilot_fim::STARCODER)
    }

    /// Generate for `job`. Must stop within one token once `job.cancel` is set or the future
    /// is dropped, and then answer with `stop_reason: Some(StopReason::Cancelled)` or
    /// [`PipelineError::Cancelled`] if still awaited.
    fn generate(&self, job: Job) -> BoxFuture<Result<Generated, PipelineError>>;

    /// [`LanguageModel::generate`] from a thread with no async runtime (CLI, evaluation).
    fn generate_blocking(&self, job: Job) -> Result<Generated, PipelineError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PipelineError::Engine(format!("cannot start a runtime: {e}")))?;
        rt.block_on(self.generate(job))
    }

    /// Compute the prompt's keys and values ahead of a request that will probably come (a
    /// document opened or focused, a large paste), so that request finds them cached. No
    /// token is generated. Stops within a prefill chunk once `job.cancel` is set. Engines
    /// without a cache of their own to warm do nothing.
    fn warm(&self, job: Job) -> BoxFuture<Result<(), PipelineError>> {
        let _ = job;
        Box::pin(async { Ok(()) })
    }

    /// The speed the model measured at load, if it did (the pipeline refines it from every
    /// generation either way).
    fn speed(&self) -> Option<crate::Speed> {
        None
    }

    /// Load the PEFT adapter in `dir` under `name` (once; later calls return at once).
    fn load_adapter(&self, name: &str, dir: &Path) -> BoxFuture<Result<(), PipelineError>> {
        let _ = (name, dir);
        Box::pin(async { Err(PipelineError::Unsupported("LoRA adapters")) })
    }
}
