//! Merged copies of adapters: an adapter applied unmerged costs two extra products per
//! layer and target at every step; merged into a copy of the weights it touches, it runs at
//! the base's speed. The model thread keeps the most recently used adapters' copies within a
//! memory budget, builds each in the background the first time its adapter is used (on one
//! low-priority thread, so typing keeps both cores), serves the adapter unmerged until the
//! copy is ready and whenever the budget cannot hold it, and drops the least recently used
//! copy to make room.
//!
//! Knows nothing of workspaces, settings or the protocol: adapters are names.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

use crate::model::{Lora, Model};

/// Memory for merged copies when the caller sets none: enough for a few adapters of a small
/// model (a rank-16 adapter on every projection of tiny_starcoder_py makes 0.5 GB in f32).
pub const DEFAULT_MERGE_BUDGET: usize = 1 << 30;

struct Copy {
    model: Arc<Model>,
    bytes: usize,
    used: u64,
}

struct Build {
    name: String,
    bytes: usize,
    done: Receiver<crate::error::Result<(Model, usize)>>,
}

/// What changed for the caller: adapters whose KV cache was computed by other weights
/// than those that now serve them (a copy adopted or dropped), so it must be reset.
#[must_use]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Switched(pub Vec<String>);

/// The merged copies and the one build in flight.
pub struct MergedCopies {
    budget: usize,
    copies: HashMap<String, Copy>,
    building: Option<Build>,
    /// Adapters whose copy does not fit the budget or failed to build: served unmerged
    /// until they are replaced or the budget changes.
    refused: HashSet<String>,
    clock: u64,
}

impl Default for MergedCopies {
    fn default() -> Self {
        Self::new(0)
    }
}

impl MergedCopies {
    /// Copies within `budget` bytes (0: every adapter unmerged).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            copies: HashMap::new(),
            building: None,
            refused: HashSet::new(),
            clock: 0,
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes the copies hold.
    pub fn bytes(&self) -> usize {
        self.copies.values().map(|c| c.bytes).sum()
    }

    /// The adapters served merged now, most recently used first.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<(&String, u64)> = self.copies.iter().map(|(n, c)| (n, c.used)).collect();
        v.sort_by_key(|(_, used)| std::cmp::Reverse(*used));
        v.into_iter().map(|(n, _)| n.clone()).collect()
    }

    /// The copy of `name`, if there is one (without counting it as a use).
    pub fn model(&self, name: &str) -> Option<Arc<Model>> {
        self.copies.get(name).map(|c| c.model.clone())
    }

    /// Whether a copy of `name` is being built.
    pub fn building(&self) -> Option<&str> {
        self.building.as_ref().map(|b| b.name.as_str())
    }

    /// A new budget: copies beyond it are dropped, least recently used first.
    pub fn set_budget(&mut self, budget: usize) -> Switched {
        self.budget = budget;
        self.refused.clear();
        if self.building.as_ref().is_some_and(|b| b.bytes > budget) {
            self.building = None;
        }
        Switched(self.evict_to(budget))
    }

    /// `name` was replaced or removed: its copy and a build of it in flight are dropped
    /// (the caller drops its cache with it).
    pub fn forget(&mut self, name: &str) {
        self.refused.remove(name);
        if self.building.as_ref().is_some_and(|b| b.name == name) {
            // The thread finishes on its own; its result is never read.
            self.building = None;
        }
        self.copies.remove(name);
    }

    /// The copy that serves `name` now, if any. Adopts a finished build first; when `name`
    /// has no copy and nothing is being built, starts building one from `base` and `lora`
    /// if the budget can hold it (dropping least recently used copies to make room).
    pub fn serve(
        &mut self,
        name: &str,
        base: &Model,
        lora: &Arc<Lora>,
    ) -> (Option<Arc<Model>>, Switched) {
        let mut switched = self.poll();
        self.clock += 1;
        if let Some(c) = self.copies.get_mut(name) {
            c.used = self.clock;
            return (Some(c.model.clone()), switched);
        }
        if self.budget == 0 || self.building.is_some() || self.refused.contains(name) {
            return (None, switched);
        }
        let bytes = match base.merge_cost(lora) {
            Ok(b) if b > 0 && b <= self.budget => b,
            Ok(b) => {
                tracing::info!(
                    adapter = name,
                    mb = b as f64 / 1e6,
                    budget_mb = self.budget as f64 / 1e6,
                    "adapter served unmerged: its merged copy does not fit the budget"
                );
                self.refused.insert(name.to_string());
                return (None, switched);
            }
            Err(e) => {
                tracing::warn!(adapter = name, "adapter served unmerged: {e}");
                self.refused.insert(name.to_string());
                return (None, switched);
            }
        };
        // Room first, so the copies never exceed the budget, not even while one is built.
        switched.0.extend(self.evict_to(self.budget - bytes));
        let (tx, rx) = mpsc::channel();
        let (base, lora) = (base.clone(), lora.clone());
        let spawned = std::thread::Builder::new()
            .name("copilot-merge".into())
            .spawn(move || {
                lower_priority();
                let _ = tx.send(base.merged(&lora));
            });
        match spawned {
            Ok(_) => {
                tracing::debug!(adapter = name, mb = bytes as f64 / 1e6, "merging adapter");
                self.building = Some(Build {
                    name: name.to_string(),
                    bytes,
                    done: rx,
                });
            }
            Err(e) => tracing::warn!(adapter = name, "adapter served unmerged: {e}"),
        }
        (None, switched)
    }

    /// Adopt the build in flight if it has finished.
    pub fn poll(&mut self) -> Switched {
        let Some(b) = &self.building else {
            return Switched::default();
        };
        match b.done.try_recv() {
            Err(TryRecvError::Empty) => Switched::default(),
            Ok(result) => {
                let b = self.building.take().expect("a build in flight");
                self.adopt(b.name, result)
            }
            Err(TryRecvError::Disconnected) => {
                let b = self.building.take().expect("a build in flight");
                tracing::warn!(
                    adapter = b.name,
                    "the merge thread stopped without a result"
                );
                self.refused.insert(b.name);
                Switched::default()
            }
        }
    }

    /// Block until the build in flight (if any) is adopted (benchmarks, evaluation, tests).
    pub fn wait(&mut self) -> Switched {
        let Some(b) = self.building.take() else {
            return Switched::default();
        };
        match b.done.recv() {
            Ok(result) => self.adopt(b.name, result),
            Err(_) => {
                self.refused.insert(b.name);
                Switched::default()
            }
        }
    }

    fn adopt(&mut self, name: String, result: crate::error::Result<(Model, usize)>) -> Switched {
        match result {
            Ok((model, bytes)) => {
                let mut switched = self.evict_to(self.budget.saturating_sub(bytes));
                tracing::info!(
                    adapter = name,
                    mb = bytes as f64 / 1e6,
                    "adapter served merged"
                );
                self.clock += 1;
                self.copies.insert(
                    name.clone(),
                    Copy {
                        model: Arc::new(model),
                        bytes,
                        used: self.clock,
                    },
                );
                switched.push(name);
                Switched(switched)
            }
            Err(e) => {
                tracing::warn!(
                    adapter = name,
                    "adapter served unmerged: merging failed: {e}"
                );
                self.refused.insert(name);
                Switched::default()
            }
        }
    }

    /// Drop least recently used copies until they hold at most `room` bytes.
    fn evict_to(&mut self, room: usize) -> Vec<String> {
        let mut dropped = Vec::new();
        while self.bytes() > room {
            let Some(oldest) = self
                .copies
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            tracing::debug!(adapter = oldest, "merged copy dropped (budget)");
            self.copies.remove(&oldest);
            dropped.push(oldest);
        }
        dropped
    }
}

/// The merge thread yields to the model thread: on Linux a thread has its own nice value.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's id (PRIO_PROCESS with a tid sets that
    // thread only on Linux); no memory is touched.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}
