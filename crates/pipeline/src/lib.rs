//! The completion pipeline: document text and cursor -> FIM prompt ids -> engine -> cleaned
//! completion. Shared by the CLI, the server, evaluation and the benchmark so that they can
//! never disagree on the prompt format or the cleaning rules.
//!
//! Knows `copilot-fim` and `copilot-engine`; knows nothing of LSP, JSON or editors.
//!
//! NOTE: interface stub; the implementation lands with the engine.

use std::time::Duration;

pub use copilot_engine::{CancelToken, DTypeSpec, DeviceSpec, ModelSpec};

/// Which FIM layout to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FimChoice {
    Psm,
    Spm,
    /// Left-to-right: prefix only.
    Off,
    /// The pipeline's measured default (PSM, or left-to-right when the suffix is blank).
    #[default]
    Auto,
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
            time_budget: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CompletionRequest {
    /// The whole document.
    pub text: String,
    /// Byte offset of the cursor in `text` (clamped to a char boundary by the pipeline).
    pub cursor: usize,
    /// Path shown to the model as a header, if any.
    pub path: Option<String>,
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

/// A loaded model plus its tokenizer, behind the model thread. Cheap to clone.
#[derive(Clone)]
pub struct Completer {
    _private: (),
}

impl Completer {
    /// Resolve, load and start the model thread. Blocking: call from a blocking context.
    pub fn load(_spec: &ModelSpec, _on_event: &dyn Fn(LoadEvent)) -> Result<Self, PipelineError> {
        Err(PipelineError::Engine("not implemented yet".into()))
    }

    /// Complete at the request's cursor. Stops within one token once `cancel` is set or the
    /// future is dropped.
    pub async fn complete(
        &self,
        _req: CompletionRequest,
        _cancel: CancelToken,
    ) -> Result<Completion, PipelineError> {
        Err(PipelineError::Engine("not implemented yet".into()))
    }
}
