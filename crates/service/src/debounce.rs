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
}
