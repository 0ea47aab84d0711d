//! The ordering gate: a `tower` service in front of tower-lsp-server's, seeing every client
//! message in arrival order (the transport calls `Service::call` from its read loop, one
//! message at a time), before the framework runs handlers concurrently.
//!
//! It (1) applies `didOpen`/`didChange`/`didClose` right there, so edits land strictly in
//! order; (2) stamps the completion requests with their arrival number, so a handler can tell
//! whether the document changed after its request was sent, however late the framework polls
//! it; (3) records `shutdown` and `exit` for the exit code; (4) bounds the completion requests
//! in flight ([`MAX_IN_FLIGHT`]: one more is answered at once with `RequestFailed`); (5) answers a
//! `$/` request it has no handler for with `MethodNotFound`, as the spec asks (the framework
//! would drop it unanswered).
//!
//! Invariant: nothing here awaits; applying an edit costs microseconds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use copilot_pipeline::BoxFuture;
use serde_json::Value;
use tower_lsp_server::jsonrpc::{Error, ErrorCode, Request, Response};
use tower_service::Service;

use crate::handlers::text_document;
use crate::limits::MAX_IN_FLIGHT;
use crate::session::Session;

/// Where the gate puts a request's arrival number in its params.
pub const ARRIVAL_KEY: &str = "$copilotArrival";
/// `textDocument/completion` is re-routed here (with its stamp): tower-lsp-server's own
/// route for it takes typed params that would drop the stamp.
pub const STAMPED_COMPLETION: &str = "copilot/internal/completion";

pub struct Gate<S> {
    inner: S,
    session: Arc<Session>,
    in_flight: Arc<AtomicUsize>,
}

impl<S> Gate<S> {
    pub fn new(inner: S, session: Arc<Session>) -> Self {
        Self {
            inner,
            session,
            in_flight: Arc::default(),
        }
    }
}

/// LSP's `RequestFailed`: the request was valid, but the server could not run it.
const REQUEST_FAILED: i64 = -32803;

/// One request in flight; dropped when its future ends or is dropped (`$/cancelRequest`).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answer<E: Send + 'static>(
    id: tower_lsp_server::jsonrpc::Id,
    error: Error,
) -> BoxFuture<Result<Option<Response>, E>> {
    Box::pin(std::future::ready(Ok(Some(Response::from_error(
        id, error,
    )))))
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
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Option<Response>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let seq = self.session.next_seq();
        let mut guard = None;
        if let Some(id) = req.id().cloned() {
            let method = req.method();
            if method.starts_with("$/") && method != "$/cancelRequest" {
                tracing::debug!("no handler for the request {method}");
                return answer(id, Error::method_not_found());
            }
            // Only completions wait (for the debounce, the model): every other request is
            // answered as soon as it is polled, and is never refused.
            if matches!(
                method,
                "textDocument/inlineCompletion" | "textDocument/completion"
            ) {
                let n = self.in_flight.fetch_add(1, Ordering::SeqCst);
                guard = Some(InFlight(self.in_flight.clone()));
                if n >= MAX_IN_FLIGHT {
                    tracing::warn!("{n} completion requests in flight: {method} refused");
                    return answer(
                        id,
                        Error {
                            code: ErrorCode::ServerError(REQUEST_FAILED),
                            message: format!(
                                "copilot-lsp: {MAX_IN_FLIGHT} completion requests are in flight \
                                 already; this one was not run"
                            )
                            .into(),
                            data: None,
                        },
                    );
                }
            }
        }
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
        let fut = self.inner.call(req);
        Box::pin(async move {
            let _guard = guard;
            fut.await
        })
    }
}
