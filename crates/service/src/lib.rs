//! The serving core that every front-end shares (the LSP server, the HTTP API): the model
//! host, cancellation, debounce, request counters, per-workspace adapters, and the one verb
//! [`Service::complete`]. Messages for the user leave as [`Notice`]s on a channel that the
//! front-end renders (`window/showMessage`, a log line).
//!
//! Code map:
//! - `complete`: a request's way through debounce, the model and back ([`CompletionSource`]
//!   is the front-end's document).
//! - `host`, `loader`: which engine, loading it in the background, its state.
//! - `cancel`, `debounce`: the two small mechanisms requests are built from.
//! - `adapters`: which LoRA adapter serves a workspace; repository files read as untrusted.
//! - `context`: each workspace's context (`copilot-context`), fed document events, indexed
//!   in the background, asked for snippets at each completion.
//! - `stats`: request counters.
//! - `outcomes`: what became of each suggestion (shown, accepted, typed through, rejected,
//!   kept), written to the workspace's event log (`copilot-events`) off the request path.
//! - `turns`: one completion on the model at a time, the oldest waiting shed under a flood.
//!
//! **Invariant:** knows no protocol: no LSP types, no HTTP, no JSON.

pub mod adapters;
pub mod cancel;
pub mod complete;
pub mod context;
pub mod debounce;
pub mod host;
pub mod loader;
pub mod outcomes;
pub mod stats;
pub mod turns;

use std::sync::Arc;

use tokio::sync::mpsc;

pub use complete::{
    CompletionSource, Fixed, Outcome, RequestSettings, Skip, Snapshot, Trigger, Why, COLD_TARGET,
};
pub use context::IndexReport;
pub use debounce::Hint;
pub use host::{LoadReport, ModelHost, ModelState};
pub use loader::{EngineLoader, EngineSpec, Loader};
pub use outcomes::{CharEdit, DocumentText, DocumentTexts, Outcomes, Refused};
pub use stats::{Stats, StatsSnapshot};

/// How serious a [`Notice`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Info,
}

/// A message for the user. The service sends each `kind` once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub level: Level,
    /// What kind of problem: one message per kind reaches the user.
    pub kind: String,
    pub message: String,
}

/// The serving core. One per server process, shared by its front-ends' handlers.
#[derive(Debug)]
pub struct Service {
    pub host: Arc<ModelHost>,
    /// One live completion per key (a document).
    pub tasks: cancel::LatestWins<String>,
    /// Turns on the model: one request computes, a few wait, the oldest shed.
    pub turns: turns::Turns,
    pub stats: Stats,
    pub adapters: adapters::Adapters,
    /// Each workspace's context (open files, imports, index).
    pub context: context::Contexts,
    /// What became of the suggestions answered (the event log).
    pub outcomes: Arc<Outcomes>,
    /// The typing rhythm and answer times, for the adaptive debounce.
    pub debouncer: debounce::Adaptive,
    /// The machine-fitted budgets last logged.
    budget_said: std::sync::Mutex<Option<(usize, usize)>>,
    notices: mpsc::UnboundedSender<Notice>,
    /// Kinds of notice already given: each reaches the user (and the log's warning level)
    /// once.
    noticed: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Service {
    /// A service loading models with `loader`, and the channel its notices arrive on. Events
    /// go to the user's data directory (`$XDG_DATA_HOME/copilot-lsp`).
    pub fn new(loader: Arc<dyn Loader>) -> (Arc<Self>, mpsc::UnboundedReceiver<Notice>) {
        Self::with_events(
            loader,
            copilot_events::paths::data_dir(),
            outcomes::Timing::default(),
        )
    }

    /// The same with events under `data_dir` (none: not logged, said once) and `timing`.
    pub fn with_events(
        loader: Arc<dyn Loader>,
        data_dir: Option<std::path::PathBuf>,
        timing: outcomes::Timing,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Notice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let warn = tx.clone();
        // Called once, from the writer thread, when logging stops.
        let log = copilot_events::Log::new(data_dir, move |message| {
            tracing::warn!("{message}");
            let _ = warn.send(Notice {
                level: Level::Warning,
                kind: "events-unwritable".into(),
                message,
            });
        });
        let service = Arc::new(Self {
            host: Arc::new(ModelHost::new(loader)),
            tasks: cancel::LatestWins::new(),
            turns: turns::Turns::default(),
            stats: Stats::default(),
            adapters: adapters::Adapters::default(),
            context: context::Contexts::default(),
            outcomes: Outcomes::new(log, timing),
            debouncer: debounce::Adaptive::default(),
            budget_said: Default::default(),
            notices: tx,
            noticed: Default::default(),
        });
        (service, rx)
    }

    /// Tell the user something (through whichever front-end listens), once per kind.
    pub fn notify(&self, notice: Notice) {
        let first = self
            .noticed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(notice.kind.clone());
        if !first {
            tracing::debug!("{} (already said)", notice.message);
            return;
        }
        match notice.level {
            Level::Error => tracing::error!("{}", notice.message),
            Level::Warning => tracing::warn!("{}", notice.message),
            Level::Info => tracing::info!("{}", notice.message),
        }
        let _ = self.notices.send(notice);
    }
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
