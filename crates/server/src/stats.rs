//! Counters of what happened to completion requests, for `copilot/debugStats` (tests and
//! the latency benchmark) and the logs.
//!
//! A [`Trace`] follows one request; whatever way it ends (answered, superseded, dropped by
//! `$/cancelRequest` mid-generation), its `Drop` files it under exactly one outcome.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    /// Cancelled before reaching the model (newer request, edit, `$/cancelRequest`).
    cancelled_waiting: AtomicU64,
    /// Cancelled while the model was generating for it.
    cancelled_generating: AtomicU64,
    /// Computed to the end, but the document had changed: not sent.
    stale: AtomicU64,
    /// Computed to the end and answered.
    completed: AtomicU64,
    /// No document, position out of range, model unavailable.
    skipped: AtomicU64,
    /// The model failed or panicked.
    failed: AtomicU64,
    /// Requests now in the model (gauge).
    generating: AtomicU64,
    /// Generations started (one request may run several choices).
    generations: AtomicU64,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Cancelled,
    Stale,
    Completed,
    Skipped,
    Failed,
}

impl Stats {
    pub fn trace(&self) -> Trace<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Trace {
            stats: self,
            generating: false,
            ended: None,
        }
    }

    pub fn snapshot(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "requests": g(&self.requests),
            "cancelledWaiting": g(&self.cancelled_waiting),
            "cancelledGenerating": g(&self.cancelled_generating),
            "stale": g(&self.stale),
            "completed": g(&self.completed),
            "skipped": g(&self.skipped),
            "failed": g(&self.failed),
            "generating": g(&self.generating),
            "generations": g(&self.generations),
        })
    }
}

/// One request's passage. Ends as `Cancelled` unless told otherwise.
#[derive(Debug)]
pub struct Trace<'a> {
    stats: &'a Stats,
    generating: bool,
    ended: Option<Ended>,
}

impl Trace<'_> {
    pub fn start_generating(&mut self) {
        if !self.generating {
            self.generating = true;
            self.stats.generating.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.generations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end(&mut self, how: Ended) {
        self.ended = Some(how);
    }
}

impl Drop for Trace<'_> {
    fn drop(&mut self) {
        let s = self.stats;
        if self.generating {
            s.generating.fetch_sub(1, Ordering::Relaxed);
        }
        let counter = match self.ended.unwrap_or(Ended::Cancelled) {
            Ended::Cancelled if self.generating => &s.cancelled_generating,
            Ended::Cancelled => &s.cancelled_waiting,
            Ended::Stale => &s.stale,
            Ended::Completed => &s.completed,
            Ended::Skipped => &s.skipped,
            Ended::Failed => &s.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_trace_counts_as_cancelled_where_it_was() {
        let s = Stats::default();
        drop(s.trace());
        let mut t = s.trace();
        t.start_generating();
        assert_eq!(s.snapshot()["generating"], 1);
        drop(t);
        let mut t = s.trace();
        t.start_generating();
        t.end(Ended::Completed);
        drop(t);
        let v = s.snapshot();
        assert_eq!(v["requests"], 3);
        assert_eq!(v["cancelledWaiting"], 1);
        assert_eq!(v["cancelledGenerating"], 1);
        assert_eq!(v["completed"], 1);
        assert_eq!(v["generating"], 0);
        assert_eq!(v["generations"], 2);
    }
}
