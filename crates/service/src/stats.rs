//! Counters of what happened to completion requests, for the front-ends' debugging views
//! (`copilot/debugStats`, `/health`), the tests and the latency benchmark.
//!
//! A [`Trace`] follows one request; whatever way it ends (answered, superseded, dropped by
//! `$/cancelRequest` mid-generation), its `Drop` files it under exactly one outcome.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Requests whose client went away before the answer (a closed HTTP connection); each
    /// is also counted where it was cancelled.
    disconnected: AtomicU64,
    /// Requests now in the model (gauge).
    generating: AtomicU64,
    /// Generations started (one request may run several choices).
    generations: AtomicU64,
    /// Answered generations: by the model (with their prompt tokens and those whose KV came
    /// from a cache), and from the completion cache without the model.
    model_answers: AtomicU64,
    prompt_tokens: AtomicU64,
    reused_tokens: AtomicU64,
    cache_hits: AtomicU64,
    /// The last context steps' durations (gathering and ranking), in ms.
    context_ms: std::sync::Mutex<Recent>,
}

/// The most recent durations, bounded.
#[derive(Debug, Default)]
struct Recent {
    values: Vec<f32>,
    next: usize,
}

/// Durations kept for the percentiles.
const RECENT: usize = 4096;

impl Recent {
    fn push(&mut self, v: f32) {
        if self.values.len() < RECENT {
            self.values.push(v);
        } else {
            self.values[self.next] = v;
        }
        self.next = (self.next + 1) % RECENT;
    }

    /// The `q`-th percentile (0 when empty).
    fn percentile(&self, q: f64) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        let mut v = self.values.clone();
        v.sort_by(f32::total_cmp);
        let i = ((q / 100.0) * (v.len() - 1) as f64).round() as usize;
        f64::from(v[i.min(v.len() - 1)])
    }
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    pub requests: u64,
    pub cancelled_waiting: u64,
    pub cancelled_generating: u64,
    pub stale: u64,
    pub completed: u64,
    pub skipped: u64,
    pub failed: u64,
    pub disconnected: u64,
    pub generating: u64,
    pub generations: u64,
    pub model_answers: u64,
    pub prompt_tokens: u64,
    pub reused_tokens: u64,
    pub cache_hits: u64,
    /// The context step over the recent requests (gathering and ranking snippets).
    pub context_ms_p50: f64,
    pub context_ms_p95: f64,
    pub context_steps: u64,
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

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let recent = self.context_ms.lock().unwrap_or_else(|e| e.into_inner());
        StatsSnapshot {
            requests: g(&self.requests),
            cancelled_waiting: g(&self.cancelled_waiting),
            cancelled_generating: g(&self.cancelled_generating),
            stale: g(&self.stale),
            completed: g(&self.completed),
            skipped: g(&self.skipped),
            failed: g(&self.failed),
            disconnected: g(&self.disconnected),
            generating: g(&self.generating),
            generations: g(&self.generations),
            model_answers: g(&self.model_answers),
            prompt_tokens: g(&self.prompt_tokens),
            reused_tokens: g(&self.reused_tokens),
            cache_hits: g(&self.cache_hits),
            context_ms_p50: recent.percentile(50.0),
            context_ms_p95: recent.percentile(95.0),
            context_steps: recent.values.len() as u64,
        }
    }

    /// Time one context step took.
    pub fn record_context(&self, ms: f64) {
        self.context_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ms as f32);
    }

    /// Count a request whose client went away before its answer.
    pub fn client_gone(&self) {
        self.disconnected.fetch_add(1, Ordering::Relaxed);
    }

    /// Count one answered generation's figures.
    pub fn record(&self, c: &copilot_pipeline::Stats) {
        let add = |a: &AtomicU64, n: usize| a.fetch_add(n as u64, Ordering::Relaxed);
        if c.cache_hit {
            add(&self.cache_hits, 1);
        } else {
            add(&self.model_answers, 1);
            add(&self.prompt_tokens, c.prompt_tokens);
            add(&self.reused_tokens, c.reused_tokens);
        }
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
        assert_eq!(s.snapshot().generating, 1);
        drop(t);
        let mut t = s.trace();
        t.start_generating();
        t.end(Ended::Completed);
        drop(t);
        let v = s.snapshot();
        assert_eq!(v.requests, 3);
        assert_eq!(v.cancelled_waiting, 1);
        assert_eq!(v.cancelled_generating, 1);
        assert_eq!(v.completed, 1);
        assert_eq!(v.generating, 0);
        assert_eq!(v.generations, 2);
    }
}
