//! Cancellation: one token type ([`Cancel`]) and one latest-wins controller ([`LatestWins`]).
//!
//! A [`Cancel`] wraps the engine's [`CancelToken`] (the flag the decode loop checks between
//! tokens) and adds an awaitable `cancelled()`, so a handler can race its work against it.
//! [`LatestWins`] keeps one live task per key (a document): starting a newer one cancels the
//! older, and dropping a [`Ticket`] (the handler future dropped by `$/cancelRequest`) cancels
//! it, which is how cancellation reaches the model. Knows nothing of LSP.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use copilot_engine::CancelToken;
use tokio::sync::Notify;

/// A cloneable cancellation flag; cancelling any clone cancels them all.
#[derive(Clone, Debug, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    token: CancelToken,
    notify: Notify,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.inner.token.cancel();
        self.inner.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    /// The engine's flag, for the decode loop.
    pub fn token(&self) -> CancelToken {
        self.inner.token.clone()
    }

    /// Resolves once cancelled (at once if already).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Register before checking the flag, so a `cancel()` in between is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// One live task per key; a newer one cancels the older. Tasks are ordered by the sequence
/// number the caller gives (the message's arrival order), not by when they happen to start.
#[derive(Debug)]
pub struct LatestWins<K: Eq + Hash + Clone> {
    live: Arc<Mutex<HashMap<K, (u64, Cancel)>>>,
}

impl<K: Eq + Hash + Clone> Default for LatestWins<K> {
    fn default() -> Self {
        Self {
            live: Arc::default(),
        }
    }
}

impl<K: Eq + Hash + Clone> LatestWins<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start a task for `key` that arrived as message `seq`. Cancels the live task for the key
    /// if it is older; if the live one is newer, the returned ticket is already cancelled.
    pub fn begin(&self, key: K, seq: u64) -> Ticket<K> {
        let cancel = Cancel::new();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        match live.get(&key) {
            Some((other, _)) if *other > seq => cancel.cancel(),
            _ => {
                if let Some((_, older)) = live.insert(key.clone(), (seq, cancel.clone())) {
                    older.cancel();
                }
            }
        }
        Ticket {
            key,
            seq,
            cancel,
            live: self.live.clone(),
        }
    }

    /// Cancel the live task for `key`, if any (the document changed or closed).
    pub fn cancel(&self, key: &K) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = live.get(key) {
            c.cancel();
        }
    }

    /// Cancel every live task (shutdown).
    pub fn cancel_all(&self) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        for (_, c) in live.values() {
            c.cancel();
        }
    }

    /// Number of keys with a live task (tests).
    pub fn live_count(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A running task's handle. Dropping it cancels the task and frees its slot.
#[derive(Debug)]
pub struct Ticket<K: Eq + Hash + Clone> {
    key: K,
    seq: u64,
    cancel: Cancel,
    live: Arc<Mutex<HashMap<K, (u64, Cancel)>>>,
}

impl<K: Eq + Hash + Clone> Ticket<K> {
    pub fn cancel_handle(&self) -> &Cancel {
        &self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}

impl<K: Eq + Hash + Clone> Drop for Ticket<K> {
    fn drop(&mut self) {
        self.cancel.cancel();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.get(&self.key).is_some_and(|(seq, _)| *seq == self.seq) {
            live.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cancelled_wakes_a_waiter_and_sets_the_engine_flag() {
        let c = Cancel::new();
        let token = c.token();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move {
                c.cancelled().await;
                tokio::time::Instant::now()
            }
        });
        let start = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!token.is_cancelled());
        c.cancel();
        let woke = waiter.await.unwrap();
        assert_eq!(woke - start, Duration::from_millis(30));
        assert!(token.is_cancelled());
        // Already cancelled: resolves at once.
        c.cancelled().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_task_cancels_the_older_one() {
        let lw = LatestWins::new();
        let a = lw.begin("doc", 1);
        let b = lw.begin("doc", 2);
        assert!(a.is_cancelled());
        assert!(!b.is_cancelled());
        let other = lw.begin("other", 3);
        assert!(!other.is_cancelled());
        assert_eq!(lw.live_count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_task_starting_late_is_born_cancelled() {
        let lw = LatestWins::new();
        let newer = lw.begin("doc", 5);
        let older = lw.begin("doc", 4);
        assert!(older.is_cancelled());
        assert!(!newer.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_ticket_cancels_it_and_frees_the_slot() {
        let lw = LatestWins::new();
        let a = lw.begin("doc", 1);
        let token = a.cancel_handle().token();
        drop(a);
        assert!(token.is_cancelled());
        assert_eq!(lw.live_count(), 0);
        // A stale ticket's drop does not remove a newer one.
        let b = lw.begin("doc", 2);
        let c = lw.begin("doc", 3);
        drop(b);
        assert_eq!(lw.live_count(), 1);
        assert!(!c.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_by_key_and_cancel_all() {
        let lw = LatestWins::new();
        let a = lw.begin("a", 1);
        let b = lw.begin("b", 2);
        lw.cancel(&"a");
        assert!(a.is_cancelled());
        assert!(!b.is_cancelled());
        lw.cancel_all();
        assert!(b.is_cancelled());
    }
}
