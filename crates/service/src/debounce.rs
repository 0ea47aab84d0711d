//! Server-side debounce: a request waits `delay` before it may reach the model; if anything
//! cancels it meanwhile (a newer request for the document, an edit, `$/cancelRequest`), it
//! stops at once and never touches the model.
//!
//! Debounce is "wait, unless superseded": the superseding itself is [`crate::cancel`]'s job,
//! so this unit only races a timer against a [`Cancel`]. Knows nothing of LSP.

use std::time::Duration;

use crate::cancel::Cancel;

/// How a debounce ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Debounced {
    /// The delay elapsed: go ahead.
    Settled,
    /// Cancelled while waiting: drop the request.
    Cancelled,
}

/// Wait `delay` unless `cancel` fires first. A zero delay still yields once, so a burst of
/// requests already queued gets the chance to supersede this one.
pub async fn debounce(delay: Duration, cancel: &Cancel) -> Debounced {
    if cancel.is_cancelled() {
        return Debounced::Cancelled;
    }
    if delay.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Debounced::Cancelled,
            () = tokio::time::sleep(delay) => {}
        }
    }
    if cancel.is_cancelled() {
        Debounced::Cancelled
    } else {
        Debounced::Settled
    }
}

/// What the request's place says about the user's intent (Tabby's "context score"): after
/// a non-word character, at the end of a line or of the document, a suggestion is more
/// likely wanted now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hint {
    /// The character before the cursor is not part of a word (space, `(`, `.`, `:`...), or
    /// the cursor starts its line.
    pub after_non_word: bool,
    /// Only blanks follow the cursor on its line.
    pub at_line_end: bool,
    /// Only blanks follow the cursor in the document.
    pub at_doc_end: bool,
}

impl Hint {
    /// In [0, 1]: 1 is a place where a suggestion is most likely wanted.
    fn score(self) -> f64 {
        0.5 * f64::from(u8::from(self.after_non_word))
            + 0.4 * f64::from(u8::from(self.at_line_end))
            + 0.1 * f64::from(u8::from(self.at_doc_end))
    }
}

/// A debounce adapted to the typing rhythm and to how long answers take (after Tabby's
/// `CompletionDebouncer`): wait about `rate × interval − latency`, where `interval` is the
/// recent mean time between requests (the typing rhythm), `rate` runs from 2.5 in the middle
/// of a word down to 0.8 at a likely pause, and `latency` is the model's recent answer time
/// (a slow model adds no wait of ours on top). Mid-word requests then wait past the next
/// keystroke and are superseded without touching the model; pauses are answered at once.
#[derive(Debug, Default)]
pub struct Adaptive {
    state: std::sync::Mutex<Rhythm>,
}

#[derive(Debug, Default)]
struct Rhythm {
    last: Option<tokio::time::Instant>,
    intervals: std::collections::VecDeque<Duration>,
    /// Recent answer time of the model, smoothed.
    latency_ms: Option<f64>,
}

/// Intervals longer than this are pauses, not rhythm.
const RHYTHM_MAX: Duration = Duration::from_millis(400);
/// Intervals remembered, and needed before the rhythm is trusted.
const RHYTHM_WINDOW: usize = 50;
const RHYTHM_MIN_SAMPLES: usize = 8;
/// The interval assumed until then (a brisk typist).
const DEFAULT_INTERVAL_MS: f64 = 120.0;
/// Bounds of the wait.
pub const ADAPTIVE_MIN: Duration = Duration::from_millis(15);
pub const ADAPTIVE_MAX: Duration = Duration::from_millis(600);

impl Adaptive {
    /// The wait for a request arriving `now` at a place described by `hint`; records the
    /// request in the rhythm.
    pub fn delay(&self, now: tokio::time::Instant, hint: Hint) -> Duration {
        let mut r = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = r.last.replace(now) {
            let gap = now.saturating_duration_since(last);
            if gap <= RHYTHM_MAX {
                r.intervals.push_back(gap);
                if r.intervals.len() > RHYTHM_WINDOW {
                    r.intervals.pop_front();
                }
            }
        }
        let interval_ms = if r.intervals.len() >= RHYTHM_MIN_SAMPLES {
            let sum: Duration = r.intervals.iter().sum();
            (sum.as_secs_f64() * 1000.0 / r.intervals.len() as f64).clamp(40.0, 400.0)
        } else {
            DEFAULT_INTERVAL_MS
        };
        let rate = 2.5 - 1.7 * hint.score();
        let ms = rate * interval_ms - r.latency_ms.unwrap_or(0.0);
        Duration::from_secs_f64(ms.max(0.0) / 1000.0).clamp(ADAPTIVE_MIN, ADAPTIVE_MAX)
    }

    /// The model answered in `took` (prefill and decode; not completion-cache hits).
    pub fn observe(&self, took: Duration) {
        let mut r = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ms = took.as_secs_f64() * 1000.0;
        r.latency_ms = Some(match r.latency_ms {
            None => ms,
            Some(old) => 0.8 * old + 0.2 * ms,
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::cancel::LatestWins;

    #[tokio::test(start_paused = true)]
    async fn settles_after_the_delay() {
        let start = Instant::now();
        let out = debounce(Duration::from_millis(50), &Cancel::new()).await;
        assert_eq!(out, Debounced::Settled);
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_delay_settles_at_once() {
        let start = Instant::now();
        assert_eq!(
            debounce(Duration::ZERO, &Cancel::new()).await,
            Debounced::Settled
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_mid_wait_returns_at_once() {
        let c = Cancel::new();
        let start = Instant::now();
        let task = tokio::spawn({
            let c = c.clone();
            async move { debounce(Duration::from_secs(10), &c).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.cancel();
        assert_eq!(task.await.unwrap(), Debounced::Cancelled);
        assert_eq!(start.elapsed(), Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn keystrokes_faster_than_the_delay_let_only_the_last_through() {
        let lw = LatestWins::new();
        let mut tasks = Vec::new();
        for seq in 0..10u64 {
            let ticket = lw.begin("doc", seq);
            tasks.push(tokio::spawn(async move {
                debounce(Duration::from_millis(50), ticket.cancel_handle()).await
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut outs = Vec::new();
        for t in tasks {
            outs.push(t.await.unwrap());
        }
        let settled: Vec<usize> = outs
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == Debounced::Settled)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(settled, vec![9]);
    }

    #[tokio::test(start_paused = true)]
    async fn already_cancelled_never_waits() {
        let c = Cancel::new();
        c.cancel();
        let start = Instant::now();
        assert_eq!(
            debounce(Duration::from_secs(1), &c).await,
            Debounced::Cancelled
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn adaptive_waits_past_the_next_keystroke_mid_word_and_little_at_a_pause() {
        let a = Adaptive::default();
        let t0 = tokio::time::Instant::now();
        let mid = Hint::default();
        let pause = Hint {
            after_non_word: true,
            at_line_end: true,
            at_doc_end: false,
        };
        // A typist at 60 ms per key: once the rhythm is known, a mid-word request waits
        // more than one interval (it will be superseded), a pause much less.
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_millis(60);
            a.delay(t, mid);
        }
        t += Duration::from_millis(60);
        let mid_wait = a.delay(t, mid);
        t += Duration::from_millis(60);
        let pause_wait = a.delay(t, pause);
        assert_eq!(mid_wait, Duration::from_millis(150), "2.5 x 60 ms");
        assert!(
            (Duration::from_millis(58)..=Duration::from_millis(59)).contains(&pause_wait),
            "{pause_wait:?}"
        );
        // A slow model: no wait of ours on top of its own time.
        a.observe(Duration::from_secs(2));
        t += Duration::from_millis(60);
        assert_eq!(a.delay(t, mid), ADAPTIVE_MIN);
        // A long pause between requests is not rhythm: the mean stays 60 ms.
        let b = Adaptive::default();
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_millis(60);
            b.delay(t, mid);
        }
        t += Duration::from_secs(5);
        assert_eq!(b.delay(t, mid), Duration::from_millis(150));
    }

    #[test]
    fn adaptive_uses_a_brisk_default_until_the_rhythm_is_known() {
        let a = Adaptive::default();
        let t0 = tokio::time::Instant::now();
        assert_eq!(a.delay(t0, Hint::default()), Duration::from_millis(300));
    }
}
