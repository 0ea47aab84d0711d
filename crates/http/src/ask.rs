//! One request's way through the serving core, the same for both APIs: the whole document
//! arrives with the request, so it is its own [`CompletionSource`] (no debounce: the client
//! chose when to ask); each request is its own key, so requests never supersede each other
//! and queue on the model thread in arrival order.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use copilot_fim::Snippet;
use copilot_pipeline::{Completer, Completion, CompletionOptions, Extras, TextSink};
use copilot_service::{
    CompletionSource, ModelState, Outcome, RequestSettings, Service, Skip, Snapshot, Trigger, Why,
};

use crate::error::ApiError;
use crate::State;

/// What a request asks for, parsed and validated.
#[derive(Clone, Debug)]
pub struct Ask {
    /// The code before the cursor.
    pub prefix: String,
    /// The code after it.
    pub suffix: String,
    pub options: CompletionOptions,
    /// Choices wanted.
    pub n: usize,
    pub stop: Vec<String>,
    pub snippets: Vec<Snippet>,
    /// A named adapter's directory.
    pub adapter: Option<PathBuf>,
    /// A prompt of the model's token ids, run as given (`prefix` and `suffix` are empty).
    pub ids: Option<Vec<u32>>,
}

struct Source {
    ask: Ask,
    sinks: Vec<Option<TextSink>>,
}

impl CompletionSource for Source {
    type Extra = ();

    fn check(&self) -> Result<(), Skip> {
        Ok(())
    }

    fn snapshot(&self) -> Result<(Snapshot, ()), Skip> {
        let snapshot = Snapshot {
            text: format!("{}{}", self.ask.prefix, self.ask.suffix),
            cursor: self.ask.prefix.len(),
            path: None,
            file: None,
        };
        Ok((snapshot, ()))
    }

    fn settings(&self) -> RequestSettings {
        RequestSettings {
            completion: self.ask.options.clone(),
            // An API request is asked for: never delayed.
            debounce: Some(Duration::ZERO),
            choices: self.ask.n,
            path_header: false,
            // An API client's budgets are the server's configured ones, as the CLI's are:
            // the same request gives the same prompt on every machine.
            auto_budget: false,
        }
    }

    fn extras(&self, choice: usize) -> Extras {
        Extras {
            stop: self.ask.stop.clone(),
            on_text: self.sinks.get(choice).cloned().flatten(),
        }
    }

    fn snippets(&self) -> Vec<Snippet> {
        self.ask.snippets.clone()
    }

    fn adapter(&self) -> Option<PathBuf> {
        self.ask.adapter.clone()
    }

    fn ids(&self) -> Option<Vec<u32>> {
        self.ask.ids.clone()
    }
}

/// Counts the request as abandoned by its client unless it finished: dropped with the
/// handler's future (non-streaming) or with the response body (streaming).
pub struct Watch {
    service: Arc<Service>,
    finished: bool,
}

impl Watch {
    pub fn new(service: &Arc<Service>) -> Self {
        Self {
            service: service.clone(),
            finished: false,
        }
    }

    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!("the client went away: its request is cancelled");
            self.service.stats.client_gone();
        }
    }
}

/// The loaded model, or llama-server's 503 while it loads (or after it failed to).
pub(crate) fn loaded(state: &State) -> Result<Completer, ApiError> {
    match state.service.host.state() {
        ModelState::Ready(c) => Ok(c),
        ModelState::Idle | ModelState::Loading => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Loading model",
        )),
        ModelState::Failed(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the model failed to load: {e}"),
        )),
    }
}

/// The model must be loaded before a request is taken (llama-server answers 503 too), and
/// a named adapter loaded before its request, so that a broken one is an error, not a
/// silent fallback to the base model.
pub async fn ready(state: &State, ask: &Ask) -> Result<(), ApiError> {
    let completer = loaded(state)?;
    if let Some(dir) = &ask.adapter {
        completer
            .load_adapter(&dir.display().to_string(), dir)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("adapter {} cannot be used: {e}", dir.display()),
                )
            })?;
    }
    Ok(())
}

/// Token-id prompts hold only ids of the model's vocabulary, where the model knows it.
pub fn check_ids(state: &State, asks: &[Ask]) -> Result<(), ApiError> {
    let Some(n) = loaded(state)?.model().vocab_size() else {
        return Ok(());
    };
    let bad = asks
        .iter()
        .filter_map(|a| a.ids.as_deref())
        .flatten()
        .find(|&&id| id as usize >= n);
    match bad {
        Some(id) => Err(ApiError::field(
            "prompt",
            format!("token id {id} is outside the model's vocabulary (ids below {n})"),
        )),
        None => Ok(()),
    }
}

/// Run `ask` to its `n` completions (greedy decoding gives one answer however often asked:
/// it is repeated), sending text to `sinks[i]` as choice `i` becomes final.
pub async fn answer(
    state: &State,
    ask: Ask,
    sinks: Vec<Option<TextSink>>,
) -> Result<Vec<Completion>, ApiError> {
    let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let n = ask.n;
    let trigger = if n > 1 {
        Trigger::Invoked
    } else {
        Trigger::Automatic
    };
    let source = Source { ask, sinks };
    let outcome = state
        .service
        .complete(format!("http-{seq}"), seq, trigger, source)
        .await;
    match outcome {
        Outcome::Choices { mut runs, .. } if !runs.is_empty() => {
            while runs.len() < n {
                runs.push(runs[runs.len() % runs.len().max(1)].clone());
            }
            runs.truncate(n);
            Ok(runs)
        }
        Outcome::Choices { .. } => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model gave no answer",
        )),
        Outcome::Empty(Why::ModelUnavailable) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model is not available (see /health)",
        )),
        Outcome::Empty(Why::Cancelled) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cancelled: the server is stopping",
        )),
        Outcome::Empty(Why::Failed) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model failed on this request (the server's log says why)",
        )),
        Outcome::Empty(Why::Skipped(s)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("request skipped: {s:?}"),
        )),
    }
}

/// OpenAI's `finish_reason` and llama-server's `stop_type` from the pipeline's stop reason.
pub fn hit_limit(c: &Completion) -> bool {
    matches!(c.stats.stop_reason.as_str(), "MaxTokens" | "Window")
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
