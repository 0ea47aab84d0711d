//! Remote engines behind the pipeline's generation seam ([`copilot_pipeline::LanguageModel`]):
//! llama.cpp's `llama-server` (`/infill`), Ollama (`/api/generate`) and OpenAI-compatible
//! servers (`/v1/completions`: vLLM, TGI, LM Studio, llama-server, Ollama's `/v1`).
//!
//! The pipeline builds the prompt, keeps the completion cache and post-processes, as for
//! the embedded engine; a [`Remote`] only counts tokens and streams one generation, with the
//! job's stop rule, time budget and cancellation applied to the stream (a stopped or
//! cancelled generation closes its connection, so the server stops too). Faults come back
//! as [`copilot_pipeline::PipelineError::Fault`] with their class, for one message per
//! class; a failing engine is retried with backoff, and requests answer at once meanwhile.
//!
//! Code map:
//! - `spec`: the settings (`engine`, `endpoint`, `remoteModel`, `apiKeyEnv`, `template`,
//!   `tokenizer`) parsed and checked.
//! - `engine`: [`Remote`], connecting, probing, the streaming loop.
//! - `llama`, `ollama`, `openai`: each API's request bodies and answers (pure).
//! - `template`: the FIM families' token strings and prompt rendering (pure).
//! - `stream`: lines, server-sent events, and the stop rules over text pieces (pure).
//! - `backoff`: fault classes and when to try again (pure).
//! - `tokens`: local tokenizer, the server's `/tokenize`, the estimate.
//! - `http`: the reqwest client (rustls), the key, timeouts, errors into faults.
//! - `fake`: a scripted server on 127.0.0.1 for tests (here and in the LSP harness).
//!
//! Knows HTTP and the servers' JSON; knows no LSP and no editor. The API key is read from
//! the environment variable the settings name, sent as a bearer token, and never logged,
//! echoed or put in a message.

pub mod backoff;
pub mod engine;
pub mod fake;
pub mod http;
pub mod llama;
pub mod ollama;
pub mod openai;
pub mod spec;
pub mod stream;
pub mod template;
pub mod tokens;

pub use backoff::{Fault, FaultKind};
pub use engine::Remote;
pub use spec::{
    check_endpoint, default_endpoint, EngineChoice, EngineKind, RemoteArgs, RemoteSpec,
    SpecProblem, TemplateChoice, Timeouts,
};
pub use template::Family;

/// Why a remote engine cannot be set up (its faults while serving are [`Fault`]s).
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Setup(String),
    #[error("tokenizer {tokenizer}: {message}")]
    Tokenizer { tokenizer: String, message: String },
}

#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use copilot_fim::{build_prompt, Budget, CharCounter, Layout, PromptInput, Snippet};
    use copilot_pipeline::{CancelToken, Job, Sampling};

    /// A job for a `$0`-marked fixture, SPM, greedy, 16 tokens, a 250 ms budget.
    pub fn job(fixture: &str, path: Option<&str>, snippets: Vec<Snippet>) -> Job {
        let (prefix, suffix) = fixture.split_once("$0").expect("a $0 cursor");
        let prompt = build_prompt(
            &PromptInput {
                prefix,
                suffix,
                path,
                snippets: &snippets,
            },
            &copilot_fim::STARCODER,
            Layout::Spm,
            &Budget::default(),
            &CharCounter,
        );
        Job {
            prompt,
            snippets,
            sampling: Sampling {
                max_new_tokens: 16,
                temperature: 0.0,
                top_p: 0.95,
                top_k: None,
                seed: 7,
                stop_strings: Vec::new(),
                soft_budget: Some(Duration::from_millis(250)),
            },
            stop: None,
            on_text: None,
            ids: None,
            cancel: CancelToken::new(),
            adapter: None,
        }
    }
}
