//! What became of each suggestion the server answered with, decided here and written to
//! the workspace's event log (`copilot-events`): shown, accepted whole (the client ran the
//! item's command) or in part (`didPartiallyAcceptCompletion`), typed through, rejected, and
//! for accepted text whether it is still there 30 s and 2 min later.
//!
//! The bookkeeping, per document:
//! - every suggestion answered gets an id (sent back in the item's command) and a zero-width
//!   *anchor* where it starts, moved through the document's edits ([`Outcomes::edited`], a
//!   few additions per edit: nothing rescans the document);
//! - an answer that continues a pending suggestion (the cursor moved by the suggestion's
//!   first characters and the text is its rest: the completion cache typing through, or the
//!   model saying the same) is an alias of it, not a new suggestion;
//! - a pending suggestion that a newer one replaces is settled after a grace period (the
//!   accept command may come after the next request), one left alone after a timeout: if the
//!   text at its anchor starts with some of it, the user typed it (accepted as typed, whole
//!   or in part), otherwise it was rejected;
//! - after the first accept, checks at 30 s and 2 min read the accepted span (tracked through
//!   edits, as the anchor) and compare it with what was accepted ([`copilot_events::record::retention`]).
//!
//! Shown: a client that sends `didShowCompletion` (the VS Code extension, the Neovim plugin)
//! tells us; until one has, every suggestion answered counts as shown.
//!
//! Only the front-end knows documents; it supplies their text through [`DocumentTexts`],
//! under its own lock so that no edit lands meanwhile (lock order: the front-end's documents,
//! then this module's state, as in [`Outcomes::edited`]). Protocol-free: no LSP, no JSON.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use copilot_events::record::{self, now_ms};
use copilot_events::{Accepted, Context, Event, How, Log, RejectReason, Rejected, Shown, What};
use copilot_pipeline::LanguageModel;
use tokio::time::Instant;

use crate::complete::{Snapshot, Trigger};

/// When things happen to a suggestion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A replaced suggestion is settled this long after the newer one arrived.
    pub reject_grace: Duration,
    /// A suggestion nobody replaced nor accepted is settled this long after it was answered
    /// (or last continued).
    pub pending_max: Duration,
    /// When accepted text is not yet in the document (the edit may come after the accept
    /// command), look again after this long.
    pub settle_retry: Duration,
    /// The retention checks, after the first accept.
    pub checks: [Duration; 2],
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            reject_grace: Duration::from_secs(2),
            pending_max: Duration::from_secs(30),
            settle_retry: Duration::from_secs(1),
            checks: copilot_events::stats::CHECKS_S.map(|s| Duration::from_secs(u64::from(s))),
        }
    }
}

/// A document's text as the front-end holds it, in characters (Unicode scalar values).
pub trait DocumentText {
    fn len_chars(&self) -> usize;
    /// The characters in `chars`, clamped to the document.
    fn slice(&self, chars: Range<usize>) -> String;
}

/// The front-end's open documents.
pub trait DocumentTexts: Send + Sync {
    /// Run `f` on the text of document `key` under the front-end's lock; false (and `f` not
    /// run) when the document is not open.
    fn with_text(&self, key: &str, f: &mut dyn FnMut(&dyn DocumentText)) -> bool;
}

/// One edit of a document, in characters of the text before it: `start..end` replaced by
/// `inserted` characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharEdit {
    pub start: usize,
    pub end: usize,
    pub inserted: usize,
}

impl CharEdit {
    /// Where position `p` goes: unchanged before the edit, shifted after it, and inside it
    /// (or at its edges) kept at its distance from the start, within the new text. So an
    /// insertion at `p` leaves `p` before it (typing at a suggestion's anchor, pasting at the
    /// start of a span), and replacing the word before `p` with that word and a completion
    /// (the completion fallback's edit) leaves `p` after the word.
    pub fn map(&self, p: usize) -> usize {
        let (a, b) = (self.start.min(self.end), self.start.max(self.end));
        if p < a {
            p
        } else if p > b {
            p - (b - a) + self.inserted
        } else {
            a + (p - a).min(self.inserted)
        }
    }
}

/// What the serving core knows of a suggestion it answered with.
#[derive(Clone)]
pub struct Offer<'a> {
    /// The document (the front-end's key: its URI).
    pub key: &'a str,
    pub snapshot: &'a Snapshot,
    /// The model's one-line description, and the adapter's name if one was used.
    pub model: &'a str,
    pub adapter: Option<&'a str>,
    pub latency_ms: f64,
    pub trigger: Trigger,
    /// The prompt's prefix and suffix budgets (tokens): the context kept for training.
    pub budget: (usize, usize),
    /// Counts tokens for those budgets.
    pub counter: Arc<dyn LanguageModel>,
}

/// Why an outcome from the client was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not an id this server gave (another session's, or made up).
    Unknown,
    /// One of ours, but its story is over (settled, or its document closed).
    Stale,
    /// Events are off.
    Off,
}

/// Bytes of the document kept per token of budget around a suggestion, before the exact cut
/// at accept time (an upper bound for code: a byte-level BPE token averages 3-4 bytes).
const BYTES_PER_TOKEN: usize = 32;
/// How far around its anchor accepted text is looked for (characters).
const SETTLE_WINDOW: usize = 256;

/// The code around a suggestion, kept until its first accept cuts it to the budgets.
struct Window {
    prefix: String,
    suffix: String,
    budget: (usize, usize),
    counter: Arc<dyn LanguageModel>,
}

struct Counter<'a>(&'a dyn LanguageModel);

impl copilot_fim::TokenCounter for Counter<'_> {
    fn count(&self, text: &str) -> usize {
        self.0.count_tokens(text)
    }
}

impl Window {
    fn cut(&self) -> Context {
        let c = Counter(&*self.counter);
        Context {
            prefix: copilot_fim::budget::keep_tail(&self.prefix, self.budget.0, &c)
                .0
                .to_string(),
            suffix: copilot_fim::budget::keep_head(&self.suffix, self.budget.1, &c)
                .0
                .to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Pending,
    Accepted {
        chars: usize,
        complete: bool,
        /// Retention checks done.
        checks: usize,
    },
}

struct Entry {
    key: String,
    root: PathBuf,
    shown: Shown,
    /// Length of the suggestion in characters.
    chars: usize,
    /// Where it starts in the document (characters), tracked through edits.
    start: usize,
    /// Where the accepted text ends, once found in the document.
    end: Option<usize>,
    phase: Phase,
    shown_logged: bool,
    window: Option<Arc<Window>>,
    aliases: Vec<u64>,
    /// A pending suggestion is settled as timed out after this.
    deadline: Instant,
}

#[derive(Default)]
struct State {
    roots: Vec<String>,
    /// The client has sent `didShowCompletion`: only those it says are shown.
    reports_shows: bool,
    next: u64,
    entries: HashMap<u64, Entry>,
    /// Continuations: alias -> (suggestion, characters typed before the alias starts).
    aliases: HashMap<u64, (u64, usize)>,
    docs: HashMap<String, Vec<u64>>,
}

impl State {
    fn remove(&mut self, serial: u64) {
        if let Some(e) = self.entries.remove(&serial) {
            for a in &e.aliases {
                self.aliases.remove(a);
            }
            if let Some(list) = self.docs.get_mut(&e.key) {
                list.retain(|&s| s != serial);
                if list.is_empty() {
                    self.docs.remove(&e.key);
                }
            }
        }
    }
}

/// The outcome bookkeeping of one server process.
pub struct Outcomes {
    me: Weak<Outcomes>,
    log: Log,
    enabled: AtomicBool,
    timing: Timing,
    texts: RwLock<Option<Weak<dyn DocumentTexts>>>,
    /// Distinguishes this process's ids from another's.
    nonce: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcomes")
            .field("log", &self.log)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// What a client-reported outcome came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// Characters of the suggestion now accepted, of `total`.
    pub accepted_chars: usize,
    pub total: usize,
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn tail(s: &str, bytes: usize) -> &str {
    let mut i = s.len().saturating_sub(bytes);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

fn head(s: &str, bytes: usize) -> &str {
    &s[..floor_char_boundary(s, bytes)]
}

/// The first `chars` characters of `s`.
fn first_chars(s: &str, chars: usize) -> &str {
    &s[..s.char_indices().nth(chars).map_or(s.len(), |(i, _)| i)]
}

fn common_prefix_chars(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

impl Outcomes {
    /// Bookkeeping writing to `log`.
    pub fn new(log: Log, timing: Timing) -> Arc<Self> {
        let nonce = format!(
            "{:08x}",
            (now_ms() as u32) ^ std::process::id().rotate_left(16)
        );
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            log,
            enabled: AtomicBool::new(true),
            timing,
            texts: RwLock::new(None),
            nonce,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Where the front-end's documents are read for the retention checks.
    pub fn set_texts(&self, texts: Weak<dyn DocumentTexts>) {
        *self.texts.write().unwrap_or_else(|e| e.into_inner()) = Some(texts);
    }

    fn texts(&self) -> Option<Arc<dyn DocumentTexts>> {
        self.texts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade)
    }

    /// Turn events on or off (off forgets every suggestion in flight), and set the workspace
    /// folders (a file outside them is not logged: the log is per folder).
    pub fn configure(&self, enabled: bool, roots: &[String]) {
        self.enabled.store(enabled, Ordering::Relaxed);
        let mut st = self.lock();
        st.roots = roots.to_vec();
        if !enabled {
            // Ids keep counting: an old id must not name a new suggestion.
            let old = std::mem::take(&mut *st);
            *st = State {
                roots: old.roots,
                reports_shows: old.reports_shows,
                next: old.next,
                ..State::default()
            };
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn id(&self, serial: u64) -> String {
        format!("{}-{serial}", self.nonce)
    }

    fn parse(&self, id: &str) -> Option<u64> {
        id.strip_prefix(&self.nonce)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// Resolve an id to (suggestion, characters before it starts).
    fn resolve(&self, st: &State, id: &str) -> Result<(u64, usize), Refused> {
        if !self.is_enabled() {
            return Err(Refused::Off);
        }
        let serial = self.parse(id).ok_or(Refused::Unknown)?;
        if serial >= st.next {
            return Err(Refused::Unknown);
        }
        if st.entries.contains_key(&serial) {
            return Ok((serial, 0));
        }
        st.aliases.get(&serial).copied().ok_or(Refused::Stale)
    }

    /// Ids for the suggestions `texts` answered at `offer`'s cursor (None where nothing is
    /// logged: events off, or a document outside the workspace folders).
    pub fn offer(&self, offer: &Offer<'_>, texts: &[String]) -> Vec<Option<String>> {
        let none = vec![None; texts.len()];
        if !self.is_enabled() || texts.is_empty() {
            return none;
        }
        let snap = offer.snapshot;
        let Some(file) = snap.file.as_deref() else {
            return none;
        };
        let root = {
            let st = self.lock();
            match crate::adapters::root_of(file, &st.roots) {
                Some(r) => r.to_string(),
                None => return none,
            }
        };
        let path = file
            .strip_prefix(root.as_str())
            .unwrap_or(file)
            .trim_start_matches('/')
            .to_string();
        let cursor = floor_char_boundary(&snap.text, snap.cursor);
        let (prefix, suffix) = snap.text.split_at(cursor);
        let anchor = prefix.chars().count();
        let line = prefix.bytes().filter(|&b| b == b'\n').count();
        let line_start = prefix.rfind(['\n', '\r']).map_or(0, |i| i + 1);
        let column = prefix[line_start..].chars().count();
        let window = Arc::new(Window {
            prefix: tail(prefix, offer.budget.0.saturating_mul(BYTES_PER_TOKEN)).to_string(),
            suffix: head(suffix, offer.budget.1.saturating_mul(BYTES_PER_TOKEN)).to_string(),
            budget: offer.budget,
            counter: offer.counter.clone(),
        });
        let trigger = match offer.trigger {
            Trigger::Automatic => record::Trigger::Automatic,
            Trigger::Invoked => record::Trigger::Invoked,
        };
        let deadline = Instant::now() + self.timing.pending_max;
        let mut ids = Vec::with_capacity(texts.len());
        let mut fresh = Vec::new();
        let mut continued = Vec::new();
        let mut st = self.lock();
        let older: Vec<u64> = st
            .docs
            .get(offer.key)
            .into_iter()
            .flatten()
            .copied()
            .filter(|s| st.entries[s].phase == Phase::Pending)
            .collect();
        for text in texts {
            // A continuation of a pending suggestion: same start, typed its first part.
            let cont = older.iter().copied().find_map(|s| {
                let e = &st.entries[&s];
                let full = &e.shown.suggestion;
                // Checked first: a text longer in characters but not in bytes (multibyte
                // characters in the suggestion) is no continuation, and must not underflow.
                if !full.ends_with(text.as_str()) {
                    return None;
                }
                let typed_bytes = full.len() - text.len();
                let typed = e.chars.checked_sub(text.chars().count())?;
                (e.start + typed == anchor && prefix.ends_with(&full[..typed_bytes]))
                    .then_some((s, typed))
            });
            let serial = st.next;
            st.next += 1;
            ids.push(Some(self.id(serial)));
            if let Some((s, typed)) = cont {
                st.aliases.insert(serial, (s, typed));
                let e = st.entries.get_mut(&s).expect("pending entry");
                e.aliases.push(serial);
                e.deadline = deadline;
                continued.push(s);
                continue;
            }
            st.entries.insert(
                serial,
                Entry {
                    key: offer.key.to_string(),
                    root: PathBuf::from(&root),
                    shown: Shown {
                        path: path.clone(),
                        line: line as u32,
                        column: column as u32,
                        model: offer.model.to_string(),
                        adapter: offer.adapter.map(String::from),
                        latency_ms: offer.latency_ms,
                        trigger,
                        suggestion: text.clone(),
                    },
                    chars: text.chars().count(),
                    start: anchor,
                    end: None,
                    phase: Phase::Pending,
                    shown_logged: false,
                    window: Some(window.clone()),
                    aliases: Vec::new(),
                    deadline,
                },
            );
            st.docs
                .entry(offer.key.to_string())
                .or_default()
                .push(serial);
            fresh.push(serial);
        }
        drop(st);
        let superseded: Vec<u64> = if fresh.is_empty() {
            Vec::new()
        } else {
            older
                .into_iter()
                .filter(|s| !continued.contains(s))
                .collect()
        };
        for s in superseded {
            self.after(self.timing.reject_grace, move |me| {
                me.settle_pending(s, RejectReason::Superseded)
            });
        }
        for s in fresh {
            self.after(self.timing.pending_max, move |me| me.timeout(s));
        }
        ids
    }

    /// The suggestions `ids` (from [`Outcomes::offer`]) were sent to the client: until it
    /// has said it reports shows (`didShowCompletion`), being sent counts as shown.
    pub fn sent(&self, ids: &[Option<String>]) {
        let mut st = self.lock();
        if st.reports_shows {
            return;
        }
        for id in ids.iter().flatten() {
            // Continuations (aliases) are not entries: their suggestion was shown already.
            if let Some(serial) = self.parse(id).filter(|s| st.entries.contains_key(s)) {
                self.log_shown(&mut st, serial);
            }
        }
    }

    /// Forget suggestions answered for a document that changed meanwhile (never sent).
    pub fn discard(&self, ids: &[Option<String>]) {
        let mut st = self.lock();
        for id in ids.iter().flatten() {
            let Some(serial) = self.parse(id) else {
                continue;
            };
            if let Some((s, _)) = st.aliases.remove(&serial) {
                if let Some(e) = st.entries.get_mut(&s) {
                    e.aliases.retain(|&a| a != serial);
                }
            } else if st
                .entries
                .get(&serial)
                .is_some_and(|e| e.phase == Phase::Pending)
            {
                st.remove(serial);
            }
        }
    }

    /// The text of the item `id` stood for (for the front-end's unit conversions).
    pub fn text(&self, id: &str) -> Result<String, Refused> {
        let st = self.lock();
        let (serial, offset) = self.resolve(&st, id)?;
        let s = &st.entries[&serial].shown.suggestion;
        let start = s.char_indices().nth(offset).map_or(s.len(), |(i, _)| i);
        Ok(s[start..].to_string())
    }

    /// The client showed the item `id`.
    pub fn shown(&self, id: &str) -> Result<(), Refused> {
        let mut st = self.lock();
        let (serial, _) = self.resolve(&st, id)?;
        st.reports_shows = true;
        self.log_shown(&mut st, serial);
        Ok(())
    }

    /// The client accepted all of item `id` (`chars: None`) or its first `chars`
    /// characters.
    pub fn accepted(&self, id: &str, chars: Option<usize>) -> Result<Recorded, Refused> {
        let how = if chars.is_some() {
            How::Partial
        } else {
            How::Command
        };
        let (serial, recorded) = {
            let mut st = self.lock();
            let (serial, offset) = self.resolve(&st, id)?;
            let total = st.entries[&serial].chars;
            let accepted = chars.map_or(total, |c| offset.saturating_add(c).min(total));
            (serial, self.accept(&mut st, serial, accepted, how))
        };
        self.settle_span(serial, true);
        Ok(recorded)
    }

    /// Record an accept of `accepted` characters (at least what was accepted before).
    fn accept(&self, st: &mut State, serial: u64, accepted: usize, how: How) -> Recorded {
        let e = st.entries.get_mut(&serial).expect("resolved entry");
        let total = e.chars;
        let first = e.phase == Phase::Pending;
        let (prev, was_complete, checks) = match e.phase {
            Phase::Pending => (0, false, 0),
            Phase::Accepted {
                chars,
                complete,
                checks,
            } => (chars, complete, checks),
        };
        let chars = accepted.max(prev);
        let complete = was_complete || chars >= total;
        if !first && chars == prev && complete == was_complete {
            return Recorded {
                accepted_chars: chars,
                total,
            };
        }
        e.phase = Phase::Accepted {
            chars,
            complete,
            checks,
        };
        e.end = None;
        let window = if first { e.window.take() } else { None };
        let root = e.root.clone();
        self.log_shown(st, serial);
        let id = self.id(serial);
        let t = now_ms();
        let accepted = move |context| Event {
            v: record::FORMAT,
            t,
            id,
            what: What::Accepted(Accepted {
                how,
                accepted_chars: chars,
                complete,
                context,
            }),
        };
        match window {
            // Cutting the context to the token budgets counts tokens: on the writer thread.
            Some(w) => self
                .log
                .write_with(&root, Box::new(move || Some(accepted(Some(w.cut()))))),
            None => self.log.write(&root, accepted(None)),
        }
        if first {
            let checks = self.timing.checks;
            self.after(checks[0], move |me| me.check(serial, 0));
            self.after(checks[1], move |me| me.check(serial, 1));
        }
        Recorded {
            accepted_chars: chars,
            total,
        }
    }

    fn log_shown(&self, st: &mut State, serial: u64) {
        let Some(e) = st.entries.get_mut(&serial) else {
            return;
        };
        if e.shown_logged {
            return;
        }
        e.shown_logged = true;
        let event = Event::now(self.id(serial), What::Shown(e.shown.clone()));
        self.log.write(&e.root, event);
    }

    /// The document `key` changed by `edits` (in order): move anchors and spans.
    pub fn edited(&self, key: &str, edits: &[CharEdit]) {
        let mut st = self.lock();
        let State { docs, entries, .. } = &mut *st;
        let Some(serials) = docs.get(key) else {
            return;
        };
        for s in serials {
            if let Some(e) = entries.get_mut(s) {
                for edit in edits {
                    e.start = edit.map(e.start);
                    e.end = e.end.map(|p| edit.map(p));
                }
            }
        }
    }

    /// Whether anything in document `key` is tracked (a front-end may then compute an edit
    /// it would not otherwise, e.g. for a whole-document replacement).
    pub fn tracks(&self, key: &str) -> bool {
        self.lock().docs.contains_key(key)
    }

    /// The document `key` was closed: pending suggestions are rejected, retention checks
    /// still to come report `closed`.
    pub fn closed(&self, key: &str) {
        let mut st = self.lock();
        let Some(serials) = st.docs.get(key).cloned() else {
            return;
        };
        for s in serials {
            let e = &st.entries[&s];
            match e.phase {
                Phase::Pending => {
                    if e.shown_logged {
                        let ev = Event::now(
                            self.id(s),
                            What::Rejected(Rejected {
                                reason: RejectReason::Closed,
                            }),
                        );
                        self.log.write(&e.root, ev);
                    }
                }
                Phase::Accepted { checks, .. } => {
                    for after in &self.timing.checks[checks.min(2)..] {
                        let ev = Event::now(
                            self.id(s),
                            What::Retention(record::Retention {
                                after_s: after.as_secs() as u32,
                                similarity: 0.0,
                                state: record::Retained::Closed,
                            }),
                        );
                        self.log.write(&e.root, ev);
                    }
                }
            }
            st.remove(s);
        }
    }

    /// Run `f` after `delay` on the runtime, if there is one and we still exist.
    fn after(&self, delay: Duration, f: impl FnOnce(Arc<Outcomes>) + Send + 'static) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.me.clone();
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(me) = me.upgrade() {
                f(me);
            }
        });
    }

    fn timeout(&self, serial: u64) {
        let rearm = {
            let st = self.lock();
            match st.entries.get(&serial) {
                Some(e) if e.phase == Phase::Pending && e.deadline > Instant::now() => {
                    Some(e.deadline - Instant::now())
                }
                _ => None,
            }
        };
        match rearm {
            Some(left) => self.after(left, move |me| me.timeout(serial)),
            None => self.settle_pending(serial, RejectReason::Timeout),
        }
    }

    /// Run `f` on the document of suggestion `serial` under the front-end's lock, with our
    /// state locked. Returns None when the entry is gone, or the document is not open (then
    /// `closed` is called with the state).
    fn with_doc<R>(
        &self,
        serial: u64,
        mut f: impl FnMut(&mut State, &dyn DocumentText) -> R,
    ) -> Option<Result<R, ()>> {
        let key = self.lock().entries.get(&serial)?.key.clone();
        let Some(texts) = self.texts() else {
            return Some(Err(()));
        };
        let mut out = None;
        let open = texts.with_text(&key, &mut |doc| {
            let mut st = self.lock();
            if st.entries.contains_key(&serial) {
                out = Some(f(&mut st, doc));
            }
        });
        if !open {
            return Some(Err(()));
        }
        out.map(Ok)
    }

    /// Settle a pending suggestion: typed (some of it is at its anchor) or rejected.
    fn settle_pending(&self, serial: u64, reason: RejectReason) {
        let typed = self.with_doc(serial, |st, doc| {
            let e = &st.entries[&serial];
            if e.phase != Phase::Pending {
                return;
            }
            let there = doc.slice(e.start..e.start + e.chars);
            let typed = common_prefix_chars(&e.shown.suggestion, &there);
            if typed > 0 && e.shown_logged {
                self.accept(st, serial, typed, How::Typed);
                let e = st.entries.get_mut(&serial).expect("entry");
                e.end = Some(e.start + typed);
            } else {
                self.reject(st, serial, reason);
            }
        });
        if let Some(Err(())) = typed {
            // The document is gone (or no front-end reads documents): rejected as it stands.
            let mut st = self.lock();
            if st
                .entries
                .get(&serial)
                .is_some_and(|e| e.phase == Phase::Pending)
            {
                self.reject(&mut st, serial, reason);
            }
        }
    }

    fn reject(&self, st: &mut State, serial: u64, reason: RejectReason) {
        let e = &st.entries[&serial];
        if e.shown_logged {
            let ev = Event::now(self.id(serial), What::Rejected(Rejected { reason }));
            self.log.write(&e.root, ev);
        }
        st.remove(serial);
    }

    /// Find the accepted text near the anchor and track its span; when it is not there yet
    /// and `retry`, look again a little later.
    fn settle_span(&self, serial: u64, retry: bool) {
        let found = self.with_doc(serial, |st, doc| {
            let e = st.entries.get_mut(&serial).expect("entry");
            locate(e, doc)
        });
        if retry && matches!(found, Some(Ok(false))) {
            self.after(self.timing.settle_retry, move |me| {
                me.settle_span(serial, false)
            });
        }
    }

    /// Retention check `i` of an accepted suggestion.
    fn check(&self, serial: u64, i: usize) {
        let after_s = self.timing.checks[i].as_secs() as u32;
        let done = self.with_doc(serial, |st, doc| {
            let e = st.entries.get_mut(&serial).expect("entry");
            let Phase::Accepted {
                chars,
                complete,
                checks,
            } = e.phase
            else {
                return;
            };
            if e.end.is_none() {
                locate(e, doc);
            }
            let accepted = first_chars(&e.shown.suggestion, chars);
            let span = e.start..e.end.unwrap_or(e.start + chars);
            let (state, similarity) = record::retention(accepted, &doc.slice(span));
            e.phase = Phase::Accepted {
                chars,
                complete,
                checks: checks + 1,
            };
            let ev = Event::now(
                self.id(serial),
                What::Retention(record::Retention {
                    after_s,
                    similarity,
                    state,
                }),
            );
            self.log.write(&e.root, ev);
            if i + 1 == self.timing.checks.len() {
                st.remove(serial);
            }
        });
        if let Some(Err(())) = done {
            let mut st = self.lock();
            if let Some(key) = st.entries.get(&serial).map(|e| e.key.clone()) {
                drop(st);
                self.closed(&key);
            } else {
                st.remove(serial);
            }
        }
    }
}

/// Look for the accepted text of `e` within [`SETTLE_WINDOW`] of its start; on success move
/// the span there. Returns whether it was found.
fn locate(e: &mut Entry, doc: &dyn DocumentText) -> bool {
    let Phase::Accepted { chars, .. } = e.phase else {
        return false;
    };
    let want = first_chars(&e.shown.suggestion, chars);
    if want.is_empty() {
        e.end = Some(e.start);
        return true;
    }
    let lo = e.start.saturating_sub(SETTLE_WINDOW);
    let hi = (e.start + chars + SETTLE_WINDOW).min(doc.len_chars());
    let around = doc.slice(lo..hi);
    let target = e.start - lo;
    let mut best: Option<usize> = None;
    let mut chars_before = 0;
    let mut last_byte = 0;
    for (byte, _) in around.match_indices(want) {
        chars_before += around[last_byte..byte].chars().count();
        last_byte = byte;
        if best.is_none_or(|b| chars_before.abs_diff(target) < b.abs_diff(target)) {
            best = Some(chars_before);
        }
    }
    match best {
        Some(at) => {
            e.start = lo + at;
            e.end = Some(lo + at + chars);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_move_through_edits() {
        let e = |start, end, inserted| CharEdit {
            start,
            end,
            inserted,
        };
        // (edit, position, where it goes)
        let cases = [
            (e(2, 2, 3), 1, 1), // insertion after
            (e(2, 2, 3), 2, 2), // insertion at: stays before it
            (e(2, 2, 3), 5, 8), // insertion before: shifted
            (e(2, 6, 0), 4, 2), // deleted around: collapses to the start
            (e(2, 6, 0), 9, 5), // deletion before: shifted back
            (e(0, 3, 8), 3, 3), // word replaced by word + completion: after the word
            (e(0, 3, 1), 3, 1), // word replaced by less: at the end of the new text
            (e(6, 2, 0), 4, 2), // a reversed range is the same range
            (e(5, 9, 2), 9, 7), // at the end of a replaced range
        ];
        for (edit, p, want) in cases {
            assert_eq!(edit.map(p), want, "{edit:?} at {p}");
        }
    }

    /// Counts bytes as tokens; never generates.
    struct Bytes(copilot_pipeline::ModelInfo);

    impl LanguageModel for Bytes {
        fn info(&self) -> &copilot_pipeline::ModelInfo {
            &self.0
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.len()
        }
        fn generate(
            &self,
            _: copilot_pipeline::Job,
        ) -> copilot_pipeline::BoxFuture<
            Result<copilot_pipeline::Generated, copilot_pipeline::PipelineError>,
        > {
            Box::pin(async { Err(copilot_pipeline::PipelineError::Unsupported("generation")) })
        }
    }

    #[test]
    fn an_answer_continues_a_pending_suggestion_only_when_it_is_its_rest() {
        let outcomes = Outcomes::new(Log::new(None, |_| {}), Timing::default());
        outcomes.configure(true, &["/w".to_string()]);
        let counter: Arc<dyn LanguageModel> = Arc::new(Bytes(copilot_pipeline::ModelInfo {
            description: "bytes".into(),
            window: 1024,
            fim: true,
        }));
        let offer = |text: &str, texts: &[&str]| {
            let snapshot = Snapshot {
                text: text.to_string(),
                cursor: text.len(),
                path: Some("a.py".into()),
                file: Some("/w/a.py".into()),
            };
            let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
            outcomes.offer(
                &Offer {
                    key: "file:///w/a.py",
                    snapshot: &snapshot,
                    model: "bytes",
                    adapter: None,
                    latency_ms: 1.0,
                    trigger: Trigger::Automatic,
                    budget: (64, 64),
                    counter: counter.clone(),
                },
                &texts,
            )[0]
            .clone()
            .unwrap()
        };
        // "é" is 2 bytes, 1 character; "ab" 2 bytes, 2 characters: no continuation (this
        // underflowed on the request path).
        let first = offer("x = ", &["é"]);
        let other = offer("x = ", &["ab"]);
        assert_ne!(first, other);
        assert_eq!(outcomes.text(&other).unwrap(), "ab");
        // Typed "a" of "abc": the answer "bc" is the same suggestion, from its second char.
        let abc = offer("y = ", &["abc"]);
        let rest = offer("y = a", &["bc"]);
        assert_ne!(abc, rest);
        assert_eq!(outcomes.text(&rest).unwrap(), "bc");
        assert_eq!(outcomes.text(&abc).unwrap(), "abc");
        // A partial accept through the continuation counts from the suggestion's start.
        let r = outcomes.accepted(&rest, Some(1)).unwrap();
        assert_eq!((r.accepted_chars, r.total), (2, 3));
        assert_eq!(outcomes.text("nonsense"), Err(Refused::Unknown));
    }

    #[test]
    fn helpers_are_char_safe() {
        assert_eq!(first_chars("é😀x", 2), "é😀");
        assert_eq!(first_chars("ab", 9), "ab");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aé", 2), "é");
        assert_eq!(head("éa", 1), "");
        assert_eq!(common_prefix_chars("😀ab", "😀ac"), 2);
    }
}
