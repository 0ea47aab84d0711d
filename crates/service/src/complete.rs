//! The serving core's verb: one completion request's way to the model and back. Supersede
//! the older request for the same key, debounce, wait for the model, snapshot the text,
//! resolve the workspace's adapter, generate (racing cancellation), and drop the result if
//! the document changed meanwhile.
//!
//! Cancellation is checked at every hand-off and reaches the decode loop through the
//! engine's cancel flag; the caller's future being dropped (`$/cancelRequest`, a client that
//! hung up) cancels too. The front-end supplies the document through [`CompletionSource`]
//! and turns the [`Outcome`] into its protocol's answer.

use std::time::{Duration, Instant};

use copilot_pipeline::{
    Completer, Completion, CompletionOptions, CompletionRequest, Extras, PipelineError,
};

use crate::adapters::Resolution;
use crate::cancel::Cancel;
use crate::debounce::{debounce, Debounced, Hint};
use crate::stats::Ended;
use crate::{Level, ModelState, Notice, Service};

/// How the client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Explicitly (a key binding): several choices may come back.
    Invoked,
    /// While typing: one choice.
    Automatic,
}

/// Why a request gets no completion from its document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The document is not open.
    NoDocument,
    /// The position's line is past the end of the document.
    OutOfRange,
    /// The document changed after the request arrived.
    Stale,
}

/// What the model needs from a document at the request's cursor, copied out of the
/// front-end's document store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub text: String,
    /// Byte offset of the cursor in `text`.
    pub cursor: usize,
    /// The file's path as shown to the model (relative to its workspace), when known.
    pub path: Option<String>,
    /// The file's absolute path, when it is a file: selects its workspace (adapter).
    pub file: Option<String>,
}

/// Settings a request runs with (the front-end resolves them from its configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct RequestSettings {
    pub completion: CompletionOptions,
    /// A fixed debounce; `None`: adaptive (`debounce::Adaptive`), none when invoked.
    pub debounce: Option<Duration>,
    /// Choices for an explicitly invoked request (1 at temperature 0).
    pub choices: usize,
    /// Show the model the file's path.
    pub path_header: bool,
    /// The user set no prompt budgets: size them so a cold completion takes about
    /// [`COLD_TARGET`] on this machine (see `pipeline::Speed::budgets`).
    pub auto_budget: bool,
}

/// What a cold completion should take at most, when the budgets are the machine's.
pub const COLD_TARGET: Duration = Duration::from_millis(1500);

/// What computing the suffix again may take at a keystroke, for a family trained with PSM
/// only (the suffix sits behind the prefix's changing end, so its keys and values are
/// computed again at every key), when the budgets are the machine's.
pub const PSM_SUFFIX_TARGET: Duration = Duration::from_millis(100);

/// The smallest suffix budget [`PSM_SUFFIX_TARGET`] leaves: the rest of the block.
const PSM_SUFFIX_MIN: usize = 32;

/// A PSM-only family's suffix budget: `suffix`, or what prefill computes in
/// [`PSM_SUFFIX_TARGET`] at `prefill_tokens_per_s` if less, never under [`PSM_SUFFIX_MIN`].
fn psm_suffix_budget(suffix: usize, prefill_tokens_per_s: f64) -> usize {
    let per_key = (prefill_tokens_per_s * PSM_SUFFIX_TARGET.as_secs_f64()) as usize;
    suffix.min(per_key.max(PSM_SUFFIX_MIN))
}

/// The front-end's side of a request: its document and settings, asked for at the moment
/// they are needed (both may change while the request waits).
pub trait CompletionSource: Send {
    /// What the front-end keeps of its own with the snapshot (LSP positions).
    type Extra: Send;
    /// Whether the document is still as it was when the request arrived.
    fn check(&self) -> Result<(), Skip>;
    /// Copy out the document at the request's cursor, if still current.
    fn snapshot(&self) -> Result<(Snapshot, Self::Extra), Skip>;
    /// The settings in force now.
    fn settings(&self) -> RequestSettings;
    /// What the cursor's place says, for the adaptive debounce (cheap: no text copied).
    fn hint(&self) -> Hint {
        Hint::default()
    }
    /// Stop strings and a streaming sink for choice `choice` (front-ends holding the whole
    /// request: the HTTP API).
    fn extras(&self, choice: usize) -> Extras {
        let _ = choice;
        Extras::default()
    }
    /// Code from other files to show the model (llama-server's `input_extra`).
    fn snippets(&self) -> Vec<copilot_fim::Snippet> {
        Vec::new()
    }
    /// An adapter directory the request itself names, instead of its workspace's (the HTTP
    /// API's `adapter`, one of the server's named adapters).
    fn adapter(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// A prompt the request gives as the model's token ids (the HTTP API's token-id
    /// `prompt`): run as is instead of one built from the snapshot.
    fn ids(&self) -> Option<Vec<u32>> {
        None
    }
}

/// What the front-end turns into a response.
#[derive(Debug)]
pub enum Outcome<E> {
    /// Distinct, non-empty completions at `snapshot`'s cursor (maybe none), and the id each
    /// has in the event log (None when not logged: events off, a file outside the
    /// workspace folders). The front-end hands the ids to its client, which reports back
    /// what became of the suggestion ([`crate::Outcomes`]).
    Choices {
        snapshot: Snapshot,
        extra: E,
        texts: Vec<String>,
        ids: Vec<Option<String>>,
        /// Every generation's completion in order, empty and repeated ones too, with its
        /// figures (the HTTP API answers one choice per generation).
        runs: Vec<Completion>,
    },
    /// No answer worth sending: the front-end replies with an empty result.
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
    /// A remote engine's fault, by class.
    Fault {
        kind: &'static str,
        message: String,
    },
}

impl Service {
    /// Complete for the request `key` (a document: a newer request for the same key
    /// supersedes this one) that arrived as message `arrival`.
    pub async fn complete<S: CompletionSource>(
        &self,
        key: String,
        arrival: u64,
        trigger: Trigger,
        source: S,
    ) -> Outcome<S::Extra> {
        let arrived = Instant::now();
        let mut trace = self.stats.trace();
        let doc = key.clone();
        let ticket = self.tasks.begin(key, arrival);
        let cancel = ticket.cancel_handle();
        let settings = source.settings();

        if let Err(skip) = source.check() {
            return skipped(&mut trace, skip);
        }
        let delay = match (settings.debounce, trigger) {
            (Some(fixed), _) => fixed,
            (None, Trigger::Invoked) => Duration::ZERO,
            (None, Trigger::Automatic) => self
                .debouncer
                .delay(tokio::time::Instant::now(), source.hint()),
        };
        if debounce(delay, cancel).await == Debounced::Cancelled {
            return Outcome::Empty(Why::Cancelled);
        }
        let Some(completer) = self.host.ready(cancel).await else {
            if cancel.is_cancelled() {
                return Outcome::Empty(Why::Cancelled);
            }
            trace.end(Ended::Skipped);
            return Outcome::Empty(Why::ModelUnavailable);
        };
        // One request computes at a time; under a flood the longest-waiting are shed, before
        // they have built a prompt.
        let Some(_turn) = self.turns.take(cancel).await else {
            return Outcome::Empty(Why::Cancelled);
        };
        // Settings may have changed while waiting for the model.
        let settings = source.settings();
        let (snapshot, extra) = match source.snapshot() {
            Ok(s) => s,
            Err(skip) => return skipped(&mut trace, skip),
        };
        let budgeted = self.budgeted(&completer, &settings);
        let opts = &budgeted;
        let n = match trigger {
            // Greedy decoding gives one answer however often it is asked.
            Trigger::Invoked if opts.temperature > 0.0 => settings.choices.max(1),
            _ => 1,
        };
        let adapter = match source.adapter() {
            Some(dir) => self.named_adapter(&completer, &dir).await,
            None => self.adapter(&completer, snapshot.file.as_deref()).await,
        };
        // The request's own snippets (HTTP's `input_extra`), then the workspace's context.
        let gathering = Instant::now();
        let mut snippets = source.snippets();
        snippets.extend(copilot_context::to_fim(
            &self.gather(&completer, &snapshot, opts).await,
        ));
        if snapshot.file.is_some() {
            self.stats
                .record_context(gathering.elapsed().as_secs_f64() * 1000.0);
        }
        let mut texts: Vec<String> = Vec::new();
        let mut runs: Vec<Completion> = Vec::new();
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
                ids: source.ids(),
                snippets: snippets.clone(),
                options,
            };
            trace.start_generating();
            let started_ms = arrived.elapsed().as_secs_f64() * 1000.0;
            match run(completer.clone(), req, source.extras(i), cancel).await {
                Ok(c) => {
                    tracing::debug!(
                        started_ms,
                        answered_ms = arrived.elapsed().as_secs_f64() * 1000.0,
                        prompt_tokens = c.stats.prompt_tokens,
                        reused = c.stats.reused_tokens,
                        generated = c.stats.generated_tokens,
                        prefill_ms = c.stats.prefill_ms,
                        decode_ms = c.stats.decode_ms,
                        cache_hit = c.stats.cache_hit,
                        "completion"
                    );
                    self.stats.record(&c.stats);
                    if !c.stats.cache_hit {
                        self.debouncer.observe(Duration::from_secs_f64(
                            (c.stats.prefill_ms + c.stats.decode_ms) / 1000.0,
                        ));
                    }
                    if !c.text.is_empty() && !texts.contains(&c.text) {
                        texts.push(c.text.clone());
                    }
                    runs.push(c);
                }
                Err(RunError::Cancelled) => return Outcome::Empty(Why::Cancelled),
                Err(RunError::Failed(e)) => {
                    trace.end(Ended::Failed);
                    self.notify(Notice {
                        level: Level::Error,
                        kind: format!("model-failed:{e}"),
                        message: format!("copilot-lsp: {e}"),
                    });
                    return Outcome::Empty(Why::Failed);
                }
                Err(RunError::Fault { kind, message }) => {
                    // One message per class of fault, however the details vary.
                    trace.end(Ended::Failed);
                    self.notify(Notice {
                        level: Level::Error,
                        kind: format!("engine-fault:{kind}"),
                        message: format!("copilot-lsp: {message}"),
                    });
                    return Outcome::Empty(Why::Failed);
                }
            }
        }
        // Registered before the last check: an edit from then on moves the suggestions'
        // anchors; one before it makes the check fail and the suggestions are forgotten.
        let ids = self.outcomes.offer(
            &crate::outcomes::Offer {
                key: &doc,
                snapshot: &snapshot,
                model: completer.description(),
                adapter: adapter.as_deref(),
                latency_ms: arrived.elapsed().as_secs_f64() * 1000.0,
                trigger,
                budget: (opts.prefix_tokens, opts.suffix_tokens),
                counter: completer.model().clone(),
            },
            &texts,
        );
        // Never answer for a version that is no longer the client's.
        if let Err(skip) = source.check() {
            self.outcomes.discard(&ids);
            return skipped(&mut trace, skip);
        }
        if cancel.is_cancelled() {
            self.outcomes.discard(&ids);
            return Outcome::Empty(Why::Cancelled);
        }
        self.outcomes.sent(&ids);
        trace.end(Ended::Completed);
        Outcome::Choices {
            snapshot,
            extra,
            texts,
            ids,
            runs,
        }
    }

    /// The adapter in `dir`, which the request named, loaded; `None` (the base model, with a
    /// notice) when it cannot be used.
    async fn named_adapter(&self, completer: &Completer, dir: &std::path::Path) -> Option<String> {
        let name = dir.display().to_string();
        match completer.load_adapter(&name, dir).await {
            Ok(()) => Some(name),
            Err(e) => {
                self.notify(Notice {
                    level: Level::Warning,
                    kind: format!("adapter-failed:{name}"),
                    message: format!("copilot-lsp: adapter {name} not used: {e}"),
                });
                None
            }
        }
    }

    /// The completion options with budgets that fit the machine, when the user set none.
    fn budgeted(&self, completer: &Completer, settings: &RequestSettings) -> CompletionOptions {
        let mut opts = settings.completion.clone();
        if settings.auto_budget {
            if let Some(speed) = completer.speed() {
                let (p, mut s) = speed.budgets(&opts, COLD_TARGET);
                let psm_only = completer
                    .template()
                    .is_some_and(|t| !t.supports(copilot_fim::Layout::Spm));
                if psm_only {
                    s = psm_suffix_budget(s, speed.prefill_tokens_per_s);
                }
                // Said when it changes by a tenth or more, not at every drift of the speed.
                let mut last = self.budget_said.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|(lp, _)| p.abs_diff(lp) * 10 > lp.max(1)) {
                    *last = Some((p, s));
                    tracing::info!(
                        prefix_tokens = p,
                        suffix_tokens = s,
                        prefill_tokens_per_s = speed.prefill_tokens_per_s.round(),
                        "prompt budgets sized for a cold completion near {} ms",
                        COLD_TARGET.as_millis()
                    );
                }
                opts.prefix_tokens = p;
                opts.suffix_tokens = s;
            }
        }
        opts
    }

    /// Warm the model for a request that will probably come at `source`'s cursor (a
    /// document opened or focused, a large paste): the same prompt the request would have,
    /// prefilled at low priority. Nothing happens before the model is ready.
    pub async fn warm<S: CompletionSource>(&self, source: S) {
        let ModelState::Ready(completer) = self.host.state() else {
            return;
        };
        let settings = source.settings();
        let Ok((snapshot, _)) = source.snapshot() else {
            return;
        };
        let opts = self.budgeted(&completer, &settings);
        let adapter = self.adapter(&completer, snapshot.file.as_deref()).await;
        let snippets = copilot_context::to_fim(&self.gather(&completer, &snapshot, &opts).await);
        completer.warm(CompletionRequest {
            text: snapshot.text,
            cursor: snapshot.cursor,
            path: if settings.path_header {
                snapshot.path
            } else {
                None
            },
            adapter,
            ids: None,
            snippets,
            options: opts,
        });
    }

    /// The context snippets for a snapshot (none for a document that is not a file).
    pub async fn gather(
        &self,
        completer: &Completer,
        snapshot: &Snapshot,
        opts: &CompletionOptions,
    ) -> Vec<copilot_context::ContextSnippet> {
        let Some(file) = &snapshot.file else {
            return Vec::new();
        };
        // The room the prompt builder will have (a small window scales the budgets down),
        // so that the context chosen is the context that fits.
        let window = completer.model().info().window;
        let max_new = opts.max_tokens.min(window / 2).max(1);
        let room = window.saturating_sub(max_new + 3);
        let budget = copilot_context::PromptBudget {
            prefix_tokens: opts.prefix_tokens.min(room),
            suffix_tokens: opts.suffix_tokens.min(room),
        };
        self.context
            .snippets(
                std::path::Path::new(file),
                &snapshot.text,
                snapshot.cursor,
                budget,
                completer.model().clone(),
            )
            .await
    }

    /// The adapter of the file's workspace, loaded, by name; `None` for the base model (also
    /// when the adapter cannot be used: never another repository's adapter).
    async fn adapter(&self, completer: &Completer, file: Option<&str>) -> Option<String> {
        let (root, resolution) = self.adapters.for_file(file?).await?;
        let dir = match resolution {
            Resolution::Base => return None,
            Resolution::Refused(why) => {
                self.notify(Notice {
                    level: Level::Warning,
                    kind: format!("adapter-refused:{root}"),
                    message: format!("copilot-lsp: {why}"),
                });
                return None;
            }
            Resolution::Adapter(dir) => dir,
        };
        let name = dir.display().to_string();
        match completer.load_adapter(&name, &dir).await {
            Ok(()) => Some(name),
            Err(e) => {
                self.notify(Notice {
                    level: Level::Warning,
                    kind: format!("adapter-failed:{name}"),
                    message: format!("copilot-lsp: adapter {name} not used: {e}"),
                });
                None
            }
        }
    }
}

/// Run one generation on its own task (so a panic is caught), racing `cancel`. Dropping this
/// future aborts the task and sets the engine's flag (the ticket's drop does), so the decode
/// loop stops within one token.
async fn run(
    completer: Completer,
    req: CompletionRequest,
    extras: Extras,
    cancel: &Cancel,
) -> Result<Completion, RunError> {
    let token = cancel.token();
    let mut task = AbortOnDrop(tokio::spawn(async move {
        completer.complete_with(req, token, extras).await
    }));
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(RunError::Cancelled),
        joined = &mut task.0 => match joined {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(PipelineError::Cancelled)) => Err(RunError::Cancelled),
            Ok(Err(PipelineError::Fault { kind, message })) => Err(RunError::Fault { kind, message }),
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
fn skipped<E>(trace: &mut crate::stats::Trace<'_>, skip: Skip) -> Outcome<E> {
    trace.end(if skip == Skip::Stale {
        Ended::Stale
    } else {
        Ended::Skipped
    });
    Outcome::Empty(Why::Skipped(skip))
}

/// A front-end holding its own copy of everything: the HTTP API, the tests.
#[derive(Clone, Debug)]
pub struct Fixed {
    pub snapshot: Snapshot,
    pub settings: RequestSettings,
}

impl CompletionSource for Fixed {
    type Extra = ();
    fn check(&self) -> Result<(), Skip> {
        Ok(())
    }
    fn snapshot(&self) -> Result<(Snapshot, ()), Skip> {
        Ok((self.snapshot.clone(), ()))
    }
    fn settings(&self) -> RequestSettings {
        self.settings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_psm_only_suffix_fits_a_keystroke() {
        // Qwen2.5-Coder-0.5B q8_0 here: ~400 tokens/s, so 40 tokens in 100 ms.
        assert_eq!(psm_suffix_budget(128, 400.0), 40);
        // A fast model keeps the budget it had.
        assert_eq!(psm_suffix_budget(128, 5000.0), 128);
        // A slow one keeps the rest of the block at least; a smaller budget stays.
        assert_eq!(psm_suffix_budget(128, 50.0), PSM_SUFFIX_MIN);
        assert_eq!(psm_suffix_budget(10, 50.0), 10);
    }
}
