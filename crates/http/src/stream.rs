//! Streaming answers as server-sent events. The generation runs on a task of its own and
//! sends its pieces on a channel; the response body owns that task. When the client hangs
//! up, hyper drops the body, the body aborts the task, and dropping the core's future
//! cancels the request: the decode loop stops within one token, and the request counts as
//! abandoned by its client.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use copilot_pipeline::{Completion, TextSink};
use tokio::sync::mpsc;

use crate::ask::{self, Ask, Watch};
use crate::error::ApiError;
use crate::State;

/// What the generation task reports.
pub enum Report {
    /// New final text of choice `index` (numbered across the request's prompts).
    Piece { index: usize, text: String },
    /// The prompt whose choices start at `first` is done; `rest[i]` is what its choice `i`
    /// still lacks of the answer (choices that repeat a greedy answer never streamed).
    Done {
        first: usize,
        result: Result<Vec<Completion>, ApiError>,
        rest: Vec<String>,
    },
}

/// How an API writes the events of a stream (`data:` payloads).
pub trait Render: Send + Unpin + 'static {
    fn piece(&mut self, index: usize, text: &str) -> String;
    /// A prompt's end: its last pieces and its finish, or an error.
    fn done(
        &mut self,
        first: usize,
        result: &Result<Vec<Completion>, ApiError>,
        rest: &[String],
    ) -> Vec<String>;
    /// After everything (OpenAI's usage chunk and `[DONE]`).
    fn end(&mut self) -> Vec<String>;
}

struct Body<R: Render> {
    rx: mpsc::UnboundedReceiver<Report>,
    render: R,
    queued: std::collections::VecDeque<String>,
    ended: bool,
    _task: AbortOnDrop,
    watch: Watch,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<R: Render> futures_core::Stream for Body<R> {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(data) = this.queued.pop_front() {
                return Poll::Ready(Some(Ok(Event::default().data(data))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Report::Piece { index, text })) => {
                    let data = this.render.piece(index, &text);
                    this.queued.push_back(data);
                }
                Poll::Ready(Some(Report::Done {
                    first,
                    result,
                    rest,
                })) => {
                    let datas = this.render.done(first, &result, &rest);
                    this.queued.extend(datas);
                }
                Poll::Ready(None) => {
                    // The task is done (all prompts answered, or it failed): the end.
                    this.watch.finish();
                    this.ended = true;
                    let datas = this.render.end();
                    this.queued.extend(datas);
                }
            }
        }
    }
}

/// Answer `asks` (one per prompt, `n` choices each) as a stream rendered by `render`.
/// The model must be ready (checked by the caller, so that errors before the first byte are
/// ordinary HTTP errors).
pub fn respond<R: Render>(state: Arc<State>, asks: Vec<Ask>, render: R) -> Response {
    let (tx, rx) = mpsc::unbounded_channel();
    let watch = Watch::new(&state.service);
    let task = tokio::spawn(async move {
        let mut first = 0;
        for ask in asks {
            let n = ask.n;
            let sent: Vec<Arc<std::sync::Mutex<String>>> = (0..n).map(|_| Arc::default()).collect();
            let sinks = (0..n)
                .map(|i| {
                    let (tx, sent) = (tx.clone(), sent[i].clone());
                    Some(TextSink::new(move |text: &str| {
                        sent.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_str(text);
                        let _ = tx.send(Report::Piece {
                            index: first + i,
                            text: text.to_string(),
                        });
                    }))
                })
                .collect();
            let result = ask::answer(&state, ask, sinks).await;
            let failed = result.is_err();
            let rest = match &result {
                Ok(runs) => runs
                    .iter()
                    .zip(&sent)
                    .map(|(c, s)| {
                        let s = s.lock().unwrap_or_else(|e| e.into_inner());
                        c.text
                            .strip_prefix(s.as_str())
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            let _ = tx.send(Report::Done {
                first,
                result,
                rest,
            });
            if failed {
                break;
            }
            first += n;
        }
    });
    let body = Body {
        rx,
        render,
        queued: Default::default(),
        ended: false,
        _task: AbortOnDrop(task),
        watch,
    };
    Sse::new(body).into_response()
}
