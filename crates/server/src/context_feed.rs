//! Document events for the context gatherers, kept off the gate's path: the gate records
//! each document's latest state (a rope clone costs O(1)) and the line of its last edit; a
//! task hands the states to the serving core's context on a blocking thread, so a burst of
//! keystrokes is one update and the gate never waits for the gatherers' tokenizing.
//!
//! The current document's own text reaches the gatherers with each request, so the delay
//! here only ever concerns the *other* documents' view.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use copilot_service::Service;
use ropey::Rope;
use tokio::sync::Notify;

/// How long the feed waits after an event for more to coalesce.
const COALESCE: Duration = Duration::from_millis(25);

/// Documents above this size are left out of the open-files view (their text is not copied
/// at every keystroke).
pub const MAX_CONTEXT_DOC_BYTES: usize = 2 << 20;

#[derive(Debug)]
enum State {
    /// Opened (or reopened) since the last update, with its latest text.
    Opened(Rope),
    /// Changed, with its latest text and the line of the last edit.
    Changed(Rope, Option<usize>),
    Closed,
}

#[derive(Debug, Default)]
struct Pending {
    docs: HashMap<PathBuf, State>,
    saved: Vec<PathBuf>,
}

#[derive(Debug, Default)]
pub struct ContextFeed {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl ContextFeed {
    fn with(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        self.wake.notify_one();
    }

    pub fn open(&self, path: PathBuf, text: &Rope) {
        self.with(|p| {
            p.docs.insert(path, State::Opened(text.clone()));
        });
    }

    pub fn change(&self, path: PathBuf, text: &Rope, line: Option<usize>) {
        self.with(|p| {
            let state = match p.docs.remove(&path) {
                // Not yet told it was open: it still is an open, with the new text.
                Some(State::Opened(_)) => State::Opened(text.clone()),
                _ => State::Changed(text.clone(), line),
            };
            p.docs.insert(path, state);
        });
    }

    pub fn close(&self, path: PathBuf) {
        self.with(|p| {
            p.docs.insert(path, State::Closed);
        });
    }

    pub fn save(&self, path: PathBuf) {
        self.with(|p| p.saved.push(path));
    }

    /// Hand the pending states to `service`'s context until the service goes away.
    pub async fn run(self: Arc<Self>, service: std::sync::Weak<Service>) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(COALESCE).await;
            let batch =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            let Some(service) = service.upgrade() else {
                return;
            };
            let applied = tokio::task::spawn_blocking(move || apply(&service, batch)).await;
            if let Err(e) = applied {
                tracing::warn!("updating the context failed: {e}");
            }
        }
    }
}

fn apply(service: &Service, batch: Pending) {
    let ctx = &service.context;
    for (path, state) in batch.docs {
        match state {
            State::Closed => ctx.did_close(&path),
            State::Opened(text) | State::Changed(text, _)
                if text.len_bytes() > MAX_CONTEXT_DOC_BYTES =>
            {
                tracing::debug!(path = %path.display(), "too large for the open-files context");
                ctx.did_close(&path);
            }
            State::Opened(text) => ctx.did_open(&path, &text.to_string()),
            State::Changed(text, line) => ctx.did_change(&path, &text.to_string(), line),
        }
    }
    for path in batch.saved {
        ctx.did_save(&path);
    }
}
