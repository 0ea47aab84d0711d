//! The ordering gate: a `tower` service in front of tower-lsp-server's, seeing every client
//! message in arrival order (the transport calls `Service::call` from its read loop, one
//! message at a time), before the framework runs handlers concurrently.
//!
//! It (1) applies `didOpen`/`didChange`/`didClose` right there, so edits land strictly in
//! order; (2) stamps the completion requests with their arrival number, so a handler can tell
//! whether the document changed after its request was sent, however late the framework polls
//! it; (3) records `shutdown` and `exit` for the exit code.
//!
//! Invariant: nothing here awaits; applying an edit costs microseconds.

use std::sync::Arc;
use std::task::{Context, Poll};

use serde_json::Value;
use tower_lsp_server::jsonrpc::{Request, Response};
use tower_service::Service;

use crate::handlers::text_document;
use crate::session::Session;

/// Where the gate puts a request's arrival number in its params.
pub const ARRIVAL_KEY: &str = "$copilotArrival";
/// `textDocument/completion` is re-routed here (with its stamp): tower-lsp-server's own
/// route for it takes typed params that would drop the stamp.
pub const STAMPED_COMPLETION: &str = "copilot/internal/completion";

pub struct Gate<S> {
    inner: S,
    session: Arc<Session>,
}

impl<S> Gate<S> {
    pub fn new(inner: S, session: Arc<Session>) -> Self {
        Self { inner, session }
    }
}

fn stamp(req: Request, method: &'static str, seq: u64) -> Request {
    let (_, id, params) = req.into_parts();
    let Some(id) = id else {
        // A notification by mistake: let the framework answer it as it would.
        let b = Request::build(method);
        return match params {
            Some(p) => b.params(p).finish(),
            None => b.finish(),
        };
    };
    let params = match params {
        Some(Value::Object(mut map)) => {
            map.insert(ARRIVAL_KEY.into(), Value::from(seq));
            Value::Object(map)
        }
        // Malformed: pass it on for the framework's "invalid params" error.
        Some(other) => other,
        None => Value::Null,
    };
    Request::build(method).id(id).params(params).finish()
}

impl<S> Service<Request> for Gate<S>
where
    S: Service<Request, Response = Option<Response>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let seq = self.session.next_seq();
        let req = match req.method() {
            "textDocument/didOpen" | "textDocument/didChange" | "textDocument/didClose" => {
                if self.session.accepts_documents() {
                    text_document::apply(&self.session, req.method(), req.params(), seq);
                }
                req
            }
            "textDocument/inlineCompletion" => stamp(req, "textDocument/inlineCompletion", seq),
            "textDocument/completion" => stamp(req, STAMPED_COMPLETION, seq),
            "shutdown" => {
                if self.session.is_initialized() {
                    self.session.set_shutdown();
                }
                req
            }
            "exit" => {
                self.session.set_exit();
                req
            }
            _ => req,
        };
        self.inner.call(req)
    }
}
