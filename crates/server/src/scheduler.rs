//! One completion request's way to the model and back: supersede the older request for the
//! document, debounce, wait for the model, snapshot the text, generate (racing
//! cancellation), and drop the result if the document changed meanwhile.
//!
//! Cancellation is checked at every hand-off and reaches the decode loop through the
//! engine's cancel flag; the handler future being dropped (`$/cancelRequest`) cancels too.

use std::sync::Arc;

use copilot_pipeline::{Completion, CompletionRequest, PipelineError};
use tower_lsp_server::ls_types::{MessageType, Position, Uri};

use crate::backend::Backend;
use crate::cancel::Cancel;
use crate::debounce::{debounce, Debounced};
use crate::model::ModelHost;
use crate::notify::Notifier;
use crate::session::{Session, Skip, Snapshot};
use crate::stats::Ended;

/// How the client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Explicitly (a key binding): several choices may come back.
    Invoked,
    /// While typing: one choice.
    Automatic,
}

/// What the handler turns into a response.
#[derive(Debug)]
pub enum Outcome {
    /// Distinct, non-empty completions at `snapshot`'s cursor (maybe none).
    Choices {
        snapshot: Snapshot,
        texts: Vec<String>,
    },
    /// No answer worth sending: the handler replies with an empty result.
    Empty(Why),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    Skipped(Skip),
    /// A newer request, an edit or shutdown cancelled it.
    Cancelled,
    ModelUnavailable,
    Failed,
}

enum RunError {
    Cancelled,
    Failed(String),
}

/// Everything a request needs, cheap to clone into a handler.
#[derive(Clone, Debug)]
pub struct Scheduler {
    pub session: Arc<Session>,
    pub model: Arc<ModelHost>,
    pub notifier: Arc<Notifier>,
}

impl Scheduler {
    /// Complete at `pos` in `uri` for a request that arrived as message `arrival`.
    pub async fn complete(
        &self,
        uri: Uri,
        pos: Position,
        arrival: u64,
        trigger: Trigger,
    ) -> Outcome {
        let session = &self.session;
        let arrived = std::time::Instant::now();
        let mut trace = session.stats.trace();
        let ticket = session.tasks.begin(uri.clone(), arrival);
        let cancel = ticket.cancel_handle();
        let settings = session.settings();

        if let Err(skip) = session.check(&uri, arrival) {
            return skipped(&mut trace, skip);
        }
        if debounce(settings.debounce, cancel).await == Debounced::Cancelled {
            return Outcome::Empty(Why::Cancelled);
        }
        let Some(backend) = self.model.ready(cancel).await else {
            if cancel.is_cancelled() {
                return Outcome::Empty(Why::Cancelled);
            }
            trace.end(Ended::Skipped);
            return Outcome::Empty(Why::ModelUnavailable);
        };
        // One request computes at a time; under a flood the longest-waiting are shed.
        let Some(_turn) = session.turns.take(cancel).await else {
            return Outcome::Empty(Why::Cancelled);
        };
        // Settings may have changed while waiting for the model.
        let settings = session.settings();
        let snapshot = match session.snapshot(&uri, pos, arrival) {
            Ok(s) => s,
            Err(skip) => {
                return skipped(&mut trace, skip);
            }
        };
        let opts = &settings.completion;
        let n = match trigger {
            // Greedy decoding gives one answer however often it is asked.
            Trigger::Invoked if opts.temperature > 0.0 => settings.choices,
            _ => 1,
        };
        // The workspace's adapter, if it has one; the base model otherwise (also when the
        // adapter cannot be loaded: never another repository's adapter).
        let adapter = match session.adapter_dir(&uri, &settings.adapters) {
            None => None,
            Some(dir) => {
                let name = dir.display().to_string();
                match backend.load_adapter(name.clone(), dir).await {
                    Ok(()) => Some(name),
                    Err(e) => {
                        tracing::warn!(adapter = %name, "adapter not used: {e}");
                        None
                    }
                }
            }
        };
        let mut texts: Vec<String> = Vec::new();
        for i in 0..n {
            if cancel.is_cancelled() {
                return Outcome::Empty(Why::Cancelled);
            }
            let mut options = opts.clone();
            options.seed = options.seed.wrapping_add(i as u64);
            let req = CompletionRequest {
                text: snapshot.text.clone(),
                cursor: snapshot.cursor,
                path: if settings.path_header {
                    snapshot.path.clone()
                } else {
                    None
                },
                adapter: adapter.clone(),
                snippets: Vec::new(),
                options,
            };
            trace.start_generating();
            let started_ms = arrived.elapsed().as_secs_f64() * 1000.0;
            match run(backend.clone(), req, cancel).await {
                Ok(c) => {
                    tracing::debug!(
                        started_ms,
                        answered_ms = arrived.elapsed().as_secs_f64() * 1000.0,
                        prompt_tokens = c.stats.prompt_tokens,
                        reused = c.stats.reused_tokens,
                        generated = c.stats.generated_tokens,
                        prefill_ms = c.stats.prefill_ms,
                        decode_ms = c.stats.decode_ms,
                        "completion"
                    );
                    if !c.text.is_empty() && !texts.contains(&c.text) {
                        texts.push(c.text);
                    }
                }
                Err(RunError::Cancelled) => return Outcome::Empty(Why::Cancelled),
                Err(RunError::Failed(e)) => {
                    trace.end(Ended::Failed);
                    self.notifier
                        .show_once(MessageType::ERROR, format!("copilot-lsp: {e}"))
                        .await;
                    return Outcome::Empty(Why::Failed);
                }
            }
        }
        // Never answer for a version that is no longer the client's.
        if let Err(skip) = session.check(&uri, arrival) {
            return skipped(&mut trace, skip);
        }
        if cancel.is_cancelled() {
            return Outcome::Empty(Why::Cancelled);
        }
        trace.end(Ended::Completed);
        Outcome::Choices { snapshot, texts }
    }
}

/// Run one generation on its own task (so a panic is caught), racing `cancel`. Dropping this
/// future aborts the task and sets the engine's flag (the ticket's drop does), so the decode
/// loop stops within one token.
async fn run(
    backend: Arc<dyn Backend>,
    req: CompletionRequest,
    cancel: &Cancel,
) -> Result<Completion, RunError> {
    let mut task = AbortOnDrop(tokio::spawn(backend.complete(req, cancel.token())));
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(RunError::Cancelled),
        joined = &mut task.0 => match joined {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(PipelineError::Cancelled)) => Err(RunError::Cancelled),
            Ok(Err(e)) => Err(RunError::Failed(format!("the model failed: {e}"))),
            Err(e) if e.is_panic() => Err(RunError::Failed(format!(
                "the model worker panicked: {}",
                crate::panic_message(e.into_panic().as_ref())
            ))),
            Err(e) => Err(RunError::Failed(format!("the model worker stopped: {e}"))),
        },
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A request not computed because its document is gone or changed: counted, answered empty.
fn skipped(trace: &mut crate::stats::Trace<'_>, skip: Skip) -> Outcome {
    trace.end(if skip == Skip::Stale {
        Ended::Stale
    } else {
        Ended::Skipped
    });
    Outcome::Empty(Why::Skipped(skip))
}
