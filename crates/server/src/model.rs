//! Model lifecycle: load in the background (with progress), publish the state, hand the
//! ready backend to requests, reload when the model settings change.
//!
//! A load that fails or panics leaves the state `Failed`: requests then answer empty and the
//! server stays up. A newer load supersedes an older one still running.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use copilot_engine::ModelSpec;
use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{Backend, Loader};
use crate::cancel::Cancel;
use crate::notify::Notifier;

#[derive(Clone)]
pub enum ModelState {
    /// No load asked for yet (before `initialize`).
    Idle,
    Loading,
    Ready(Arc<dyn Backend>),
    Failed(String),
}

impl std::fmt::Debug for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Idle => f.write_str("Idle"),
            Self::Loading => f.write_str("Loading"),
            Self::Ready(b) => write!(f, "Ready({})", b.description()),
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

pub struct ModelHost {
    loader: Arc<dyn Loader>,
    state: watch::Sender<ModelState>,
    /// The spec asked for last, and its load's number.
    wanted: Mutex<Option<(ModelSpec, u64)>>,
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

    /// Load `spec` in the background unless it is already loaded or loading.
    pub fn ensure(self: &Arc<Self>, spec: ModelSpec, notifier: Arc<Notifier>) {
        let n = {
            let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
            if wanted.as_ref().is_some_and(|(s, _)| *s == spec) {
                return;
            }
            let n = self.loads.fetch_add(1, Ordering::SeqCst) + 1;
            *wanted = Some((spec.clone(), n));
            n
        };
        self.state.send_replace(ModelState::Loading);
        tracing::info!(model = %spec.model, device = %spec.device, dtype = %spec.dtype, "loading model");
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn({
            let notifier = notifier.clone();
            let model = spec.model.clone();
            async move { notifier.report_load(model, rx, done_rx).await }
        });
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
                Ok(backend) => {
                    let desc = backend.description();
                    host.state.send_replace(ModelState::Ready(backend));
                    let _ = done_tx.send(Ok(desc));
                }
                Err(e) => {
                    host.state.send_replace(ModelState::Failed(e.clone()));
                    let _ = done_tx.send(Err(e));
                }
            }
        });
    }

    /// Wait until the model is ready. `None` if it failed to load or `cancel` fired first.
    pub async fn ready(&self, cancel: &Cancel) -> Option<Arc<dyn Backend>> {
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                ModelState::Ready(b) => return Some(b.clone()),
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
