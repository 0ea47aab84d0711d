//! Turns on the model: one completion request computes at a time (the model is one thread
//! anyway), and at most [`MAX_WAITING_FOR_MODEL`] wait for their turn. One more cancels the
//! request that has waited longest, so under a flood the newest requests are served and a
//! cancelled or shed request never reaches the model: it has not even built its prompt.
//!
//! A page of mechanism in the spirit of `cancel.rs`: knows nothing of documents or protocols.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cancel::Cancel;

/// Completion requests waiting for their turn on the model. One more cancels the one that
/// has waited longest (answered empty): under a flood the newest requests are served.
pub const MAX_WAITING_FOR_MODEL: usize = 8;

#[derive(Debug)]
pub struct Turns {
    model: Arc<Semaphore>,
    waiting: Mutex<VecDeque<(u64, Cancel)>>,
    next: AtomicU64,
    max_waiting: usize,
    shed: AtomicU64,
}

impl Default for Turns {
    fn default() -> Self {
        Self::new(MAX_WAITING_FOR_MODEL)
    }
}

/// The turn, held while computing; the next waiter goes when it is dropped.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl Turns {
    pub fn new(max_waiting: usize) -> Self {
        Self {
            model: Arc::new(Semaphore::new(1)),
            waiting: Mutex::default(),
            next: AtomicU64::new(0),
            max_waiting,
            shed: AtomicU64::new(0),
        }
    }

    /// Wait for the turn (first come, first served). `None` if `cancel` fires first, or if
    /// this request is shed for a newer one.
    pub async fn take(&self, cancel: &Cancel) -> Option<Turn> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.push_back((id, cancel.clone()));
            while waiting.len() > self.max_waiting {
                if let Some((_, oldest)) = waiting.pop_front() {
                    oldest.cancel();
                    self.shed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let _leave = Leave { turns: self, id };
        tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            permit = self.model.clone().acquire_owned() => permit.ok().map(|p| Turn { _permit: p }),
        }
    }

    /// Requests cancelled because newer ones were waiting (`copilot/debugStats`).
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Takes a request off the waiting list however its wait ends.
struct Leave<'a> {
    turns: &'a Turns,
    id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut waiting = self.turns.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_at_a_time_in_arrival_order() {
        let turns = Arc::new(Turns::new(8));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (turns, order) = (turns.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = turns.take(&Cancel::new()).await.unwrap();
                order.lock().unwrap().push((i, tokio::time::Instant::now()));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        let ids: Vec<_> = order.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [0, 1, 2]);
        assert_eq!(order[2].1 - order[0].1, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_at_once_and_a_flood_sheds_the_oldest() {
        let turns = Arc::new(Turns::new(2));
        let busy = turns.take(&Cancel::new()).await.unwrap();
        let cancels: Vec<Cancel> = (0..4).map(|_| Cancel::new()).collect();
        let mut waiters = Vec::new();
        for c in &cancels {
            let (turns, c) = (turns.clone(), c.clone());
            waiters.push(tokio::spawn(async move { turns.take(&c).await.is_some() }));
            tokio::task::yield_now().await;
        }
        // Four came, two may wait: the two oldest were shed (their requests cancelled).
        assert!(cancels[0].is_cancelled() && cancels[1].is_cancelled());
        assert!(!cancels[2].is_cancelled() && !cancels[3].is_cancelled());
        assert_eq!(turns.shed(), 2);
        cancels[2].cancel();
        drop(busy);
        let got: Vec<bool> = futures_join(waiters).await;
        assert_eq!(got, [false, false, false, true]);
        assert_eq!(turns.waiting(), 0);
    }

    async fn futures_join(tasks: Vec<tokio::task::JoinHandle<bool>>) -> Vec<bool> {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }
}
