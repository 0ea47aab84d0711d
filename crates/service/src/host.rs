//! Model lifecycle: load in the background, publish the state, hand the ready pipeline to
//! requests, reload when the engine settings change.
//!
//! A load that fails or panics leaves the state `Failed`: requests then answer empty and the
//! server stays up. A newer load supersedes an older one still running. Each load's progress
//! goes to whoever asked for it ([`LoadReport`]): the LSP front-end renders it as
//! `$/progress`, the HTTP one as `/health`. Knows no protocol.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use copilot_pipeline::{Completer, LoadEvent};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cancel::Cancel;
use crate::loader::{EngineSpec, Loader};

#[derive(Clone)]
pub enum ModelState {
    /// No load asked for yet (before `initialize`).
    Idle,
    Loading,
    Ready(Completer),
    Failed(String),
}

impl std::fmt::Debug for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Idle => f.write_str("Idle"),
            Self::Loading => f.write_str("Loading"),
            Self::Ready(c) => write!(f, "Ready({})", c.description()),
            Self::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

impl ModelState {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Loading => "loading",
            Self::Ready(_) => "ready",
            Self::Failed(_) => "failed",
        }
    }
}

/// One load's progress, for the front-end that asked for it: the events as they come, then
/// the outcome (the model's description, or why it failed).
#[derive(Debug)]
pub struct LoadReport {
    /// What is being loaded, for messages.
    pub model: String,
    pub events: mpsc::UnboundedReceiver<LoadEvent>,
    pub done: oneshot::Receiver<Result<String, String>>,
}

pub struct ModelHost {
    loader: Arc<dyn Loader>,
    state: watch::Sender<ModelState>,
    /// The spec asked for last, and its load's number.
    wanted: Mutex<Option<(EngineSpec, u64)>>,
    loads: AtomicU64,
}

impl std::fmt::Debug for ModelHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHost")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl ModelHost {
    pub fn new(loader: Arc<dyn Loader>) -> Self {
        Self {
            loader,
            state: watch::Sender::new(ModelState::Idle),
            wanted: Mutex::new(None),
            loads: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> ModelState {
        self.state.borrow().clone()
    }

    /// Watch the state change (the HTTP front-end's `/health`).
    pub fn subscribe(&self) -> watch::Receiver<ModelState> {
        self.state.subscribe()
    }

    /// Load `spec` in the background unless it is already loaded or loading. Returns the
    /// new load's progress, or `None` when there is nothing new to load. Needs a tokio
    /// runtime.
    pub fn ensure(self: &Arc<Self>, spec: EngineSpec) -> Option<LoadReport> {
        let n = {
            let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
            if wanted.as_ref().is_some_and(|(s, _)| *s == spec) {
                return None;
            }
            let n = self.loads.fetch_add(1, Ordering::SeqCst) + 1;
            *wanted = Some((spec.clone(), n));
            n
        };
        self.state.send_replace(ModelState::Loading);
        tracing::info!(engine = %spec, "loading model");
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let report = LoadReport {
            model: spec.name(),
            events: rx,
            done: done_rx,
        };
        let host = self.clone();
        let load = self.loader.load(spec, tx);
        tokio::spawn(async move {
            // A task of its own, so that a panicking loader is caught here.
            let outcome = match tokio::spawn(load).await {
                Ok(r) => r,
                Err(e) if e.is_panic() => Err(format!(
                    "the model loader panicked: {}",
                    crate::panic_message(e.into_panic().as_ref())
                )),
                Err(e) => Err(format!("the model loader was stopped: {e}")),
            };
            let current = host
                .wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|(_, m)| *m == n);
            if !current {
                tracing::info!("a newer model load superseded this one");
                let _ = done_tx.send(Err("superseded by a newer model setting".into()));
                return;
            }
            match outcome {
                Ok(model) => {
                    let completer = Completer::new(model);
                    let desc = completer.description().to_string();
                    host.state.send_replace(ModelState::Ready(completer));
                    let _ = done_tx.send(Ok(desc));
                }
                Err(e) => {
                    host.state.send_replace(ModelState::Failed(e.clone()));
                    let _ = done_tx.send(Err(e));
                }
            }
        });
        Some(report)
    }

    /// Wait until the model is ready. `None` if it failed to load or `cancel` fired first.
    pub async fn ready(&self, cancel: &Cancel) -> Option<Completer> {
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                ModelState::Ready(c) => return Some(c.clone()),
                ModelState::Failed(_) => return None,
                ModelState::Idle | ModelState::Loading => {}
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return None,
                changed = rx.changed() => if changed.is_err() { return None },
            }
        }
    }
}
