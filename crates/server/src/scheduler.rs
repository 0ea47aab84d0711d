//! The LSP side of a completion request: the document and position it names, handed to the
//! serving core ([`copilot_service::Service::complete`]) as a [`CompletionSource`], with the
//! LSP positions the answer needs kept beside the snapshot.

use std::sync::Arc;

use copilot_service::{CompletionSource, Hint, RequestSettings, Service, Skip, Snapshot};
use tower_lsp_server::ls_types::{Position, Uri};

use crate::notify::Notifier;
use crate::session::{LspPlace, Session};

pub use copilot_service::{Trigger, Why};

/// What the handler turns into a response.
#[derive(Debug)]
pub enum Outcome {
    /// Distinct, non-empty completions at `place` (maybe none), with their event ids.
    Choices {
        snapshot: Snapshot,
        place: LspPlace,
        texts: Vec<String>,
        ids: Vec<Option<String>>,
    },
    /// No answer worth sending: the handler replies with an empty result.
    Empty(Why),
}

/// Everything a request needs, cheap to clone into a handler.
#[derive(Clone, Debug)]
pub struct Scheduler {
    pub session: Arc<Session>,
    pub service: Arc<Service>,
    pub notifier: Arc<Notifier>,
}

/// One request's document, read from the session when the core asks.
struct Source<'a> {
    session: &'a Session,
    uri: Uri,
    pos: Position,
    arrival: u64,
}

impl CompletionSource for Source<'_> {
    type Extra = LspPlace;

    fn check(&self) -> Result<(), Skip> {
        self.session.check(&self.uri, self.arrival)
    }

    fn snapshot(&self) -> Result<(Snapshot, LspPlace), Skip> {
        self.session.snapshot(&self.uri, self.pos, self.arrival)
    }

    fn settings(&self) -> RequestSettings {
        self.session.settings().request()
    }

    fn hint(&self) -> Hint {
        self.session.hint(&self.uri, self.pos).unwrap_or_default()
    }
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
        let key = uri.as_str().to_string();
        self.session.remember_cursor(&uri, pos);
        let source = Source {
            session: &self.session,
            uri,
            pos,
            arrival,
        };
        match self.service.complete(key, arrival, trigger, source).await {
            copilot_service::Outcome::Choices {
                snapshot,
                extra,
                texts,
                ids,
                ..
            } => Outcome::Choices {
                snapshot,
                place: extra,
                texts,
                ids,
            },
            copilot_service::Outcome::Empty(why) => Outcome::Empty(why),
        }
    }
}

impl Scheduler {
    /// Warm the model for `uri` at `pos` (or where the last request in it was), in the
    /// background: a document opened or focused, a large paste.
    pub fn warm(&self, uri: Uri, pos: Option<Position>) {
        let Some(pos) = pos.or_else(|| self.session.last_cursor(&uri)) else {
            tracing::debug!(uri = uri.as_str(), "no cursor known: not warmed");
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let source = Source {
                session: &this.session,
                uri,
                pos,
                arrival: u64::MAX,
            };
            this.service.warm(source).await;
        });
    }
}
