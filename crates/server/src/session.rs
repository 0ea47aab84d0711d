//! The server's shared state: open documents, negotiated encoding, settings, the per-document
//! task controller, lifecycle flags and counters.
//!
//! Locks here are `std` locks held for microseconds and never across an `.await`: a
//! keystroke never waits for the model.
//!
//! Documents are bounded ([`crate::limits`]): one larger than `MAX_DOCUMENT_BYTES` is not kept
//! (it is remembered as oversized, and a full-text change that fits brings it back); past
//! `MAX_DOCUMENTS` or `MAX_TOTAL_DOCUMENT_BYTES`, the documents changed least recently are
//! closed. Each of these is logged and shown to the user once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde_json::Value;
use tower_lsp_server::ls_types::{Position, Uri};

use copilot_service::{Level, Notice, Service, Skip, Snapshot};

use crate::context_feed::ContextFeed;
use crate::document::Document;
use crate::encoding::PositionEncoding;
use crate::limits::{MAX_DOCUMENTS, MAX_DOCUMENT_BYTES, MAX_TOTAL_DOCUMENT_BYTES};
use crate::settings::{self, Options, Settings};
use crate::ServeOptions;

/// Something a document bound did, for the log and (once per kind) the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DocNotice {
    /// The document is over `MAX_DOCUMENT_BYTES` and not kept.
    TooLarge { uri: String, bytes: usize },
    /// Closed to make room for newer ones.
    Evicted { uri: String },
}

impl DocNotice {
    /// One line for the log, naming the document.
    pub fn log_line(&self) -> String {
        match self {
            Self::TooLarge { uri, bytes } => format!(
                "{uri} is {bytes} bytes, above the limit of {MAX_DOCUMENT_BYTES}: it gets no \
                 completions"
            ),
            Self::Evicted { uri } => format!(
                "{uri} closed by the server: more than {MAX_DOCUMENTS} documents or \
                 {MAX_TOTAL_DOCUMENT_BYTES} bytes were open"
            ),
        }
    }

    /// The message shown to the user (the same for every document of a kind).
    pub fn user_message(&self) -> String {
        match self {
            Self::TooLarge { .. } => format!(
                "copilot-lsp: documents above {} MiB get no completions",
                MAX_DOCUMENT_BYTES >> 20
            ),
            Self::Evicted { .. } => format!(
                "copilot-lsp: more than {MAX_DOCUMENTS} documents (or {} MiB) are open; the \
                 least recently edited get no completions until reopened",
                MAX_TOTAL_DOCUMENT_BYTES >> 20
            ),
        }
    }
}

/// The open documents and what the bounds need to know about them.
#[derive(Debug, Default)]
struct Docs {
    open: HashMap<Uri, Document>,
    /// UTF-8 bytes of all open documents.
    bytes: usize,
    /// Open in the client but too large to keep, with their language (at most
    /// `MAX_DOCUMENTS` remembered).
    oversized: HashMap<Uri, String>,
}

impl Docs {
    fn remove(&mut self, uri: &Uri) -> Option<Document> {
        let d = self.open.remove(uri)?;
        self.bytes -= d.rope().len_bytes();
        Some(d)
    }

    fn mark_oversized(&mut self, uri: Uri, language_id: String) {
        if self.oversized.len() < MAX_DOCUMENTS {
            self.oversized.insert(uri, language_id);
        }
    }

    /// Keep `doc` if it fits, else remember it as oversized.
    fn insert(&mut self, uri: Uri, doc: Document, notices: &mut Vec<DocNotice>) {
        self.remove(&uri);
        let bytes = doc.rope().len_bytes();
        if bytes > MAX_DOCUMENT_BYTES {
            notices.push(DocNotice::TooLarge {
                uri: uri.as_str().to_string(),
                bytes,
            });
            self.mark_oversized(uri, doc.language_id().to_string());
            return;
        }
        self.oversized.remove(&uri);
        self.bytes += bytes;
        self.open.insert(uri.clone(), doc);
        self.evict(&uri, notices);
    }

    /// Close the least recently changed documents (never `keep`) until within bounds.
    fn evict(&mut self, keep: &Uri, notices: &mut Vec<DocNotice>) {
        while self.open.len() > MAX_DOCUMENTS || self.bytes > MAX_TOTAL_DOCUMENT_BYTES {
            let Some(oldest) = self
                .open
                .iter()
                .filter(|(u, _)| *u != keep)
                .min_by_key(|(_, d)| d.changed_at())
                .map(|(u, _)| u.clone())
            else {
                return;
            };
            self.remove(&oldest);
            notices.push(DocNotice::Evicted {
                uri: oldest.as_str().to_string(),
            });
        }
    }
}

/// What a `didChange` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    Applied(Vec<DocNotice>),
    /// The document is not open (or was too large and still is).
    NotOpen,
}

/// Where a completion goes in the client's terms, kept beside the core's snapshot.
#[derive(Clone, Debug)]
pub struct LspPlace {
    /// The cursor, clamped, in the client's encoding.
    pub position: Position,
    /// Start of the word before the cursor (for `textDocument/completion` edits).
    pub word_start: Position,
    pub word_prefix: String,
    pub version: i32,
}

#[derive(Debug)]
pub struct Session {
    pub cli: ServeOptions,
    docs: Mutex<Docs>,
    encoding: RwLock<PositionEncoding>,
    settings: RwLock<Settings>,
    /// Options from `initializationOptions`, then from the last configuration change.
    layers: Mutex<(Value, Value)>,
    roots: RwLock<Vec<String>>,
    /// The serving core: its tasks are cancelled here when a document changes.
    pub service: Arc<Service>,
    /// Document events for the context gatherers (see `context_feed.rs`).
    pub feed: Arc<ContextFeed>,
    /// Where the last completion request in each document was (to warm it when it is
    /// opened or focused again).
    cursors: Mutex<HashMap<Uri, Position>>,
    /// Arrival counter, stamped on messages by the gate.
    seq: AtomicU64,
    initialized: AtomicBool,
    shutdown: AtomicBool,
    exit: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    pub fn new(cli: ServeOptions, defaults: Settings, service: Arc<Service>) -> Arc<Self> {
        Arc::new(Self {
            cli,
            docs: Mutex::default(),
            encoding: RwLock::default(),
            settings: RwLock::new(defaults),
            layers: Mutex::new((Value::Null, Value::Null)),
            roots: RwLock::default(),
            service,
            feed: Arc::default(),
            cursors: Mutex::default(),
            seq: AtomicU64::new(0),
            initialized: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            exit: AtomicBool::new(false),
        })
    }

    // --- lifecycle -------------------------------------------------------------------------

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn current_seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    pub fn set_initialized(&self) {
        self.initialized.store(true, Ordering::SeqCst);
    }

    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::SeqCst)
    }

    pub fn set_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.service.tasks.cancel_all();
    }

    pub fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    pub fn set_exit(&self) {
        self.exit.store(true, Ordering::SeqCst);
    }

    /// Document notifications are applied between `initialize` and `shutdown` only.
    pub fn accepts_documents(&self) -> bool {
        self.is_initialized() && !self.is_shutdown()
    }

    /// The process exit code the spec asks for: 0 after `shutdown` then `exit`, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.exit.load(Ordering::SeqCst) && self.is_shutdown() {
            0
        } else {
            1
        }
    }

    // --- configuration ---------------------------------------------------------------------

    pub fn encoding(&self) -> PositionEncoding {
        *self.encoding.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_encoding(&self, enc: PositionEncoding) {
        *self.encoding.write().unwrap_or_else(|e| e.into_inner()) = enc;
    }

    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace one layer of options (`initializationOptions` or the latest configuration)
    /// and re-resolve. Returns the new settings and the problems found.
    pub fn configure(
        &self,
        init: Option<Value>,
        change: Option<Value>,
    ) -> (Settings, settings::Problems) {
        let mut guard = lock(&self.layers);
        let layers = &mut *guard;
        let mut rejected = settings::Problems::default();
        for (given, layer) in [(init, &mut layers.0), (change, &mut layers.1)] {
            match given {
                // Not settings at all: the layer in force stays.
                Some(v) if !(v.is_null() || v.is_object()) => {
                    rejected = Options::parse(&v).1;
                }
                Some(v) => *layer = v,
                None => {}
            }
        }
        let in_force = self.settings();
        let (s, _, mut problems): (Settings, Options, _) =
            settings::load_over(&self.cli, &[&layers.0, &layers.1], &in_force);
        problems.errors.extend(rejected.errors);
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = s.clone();
        (s, problems)
    }

    pub fn set_roots(&self, roots: Vec<String>) {
        *self.roots.write().unwrap_or_else(|e| e.into_inner()) = roots;
    }

    pub fn roots(&self) -> Vec<String> {
        self.roots.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    // --- documents -------------------------------------------------------------------------

    /// Log what a document bound did, tell the user once per kind, and take the documents
    /// no longer kept out of the context gatherers.
    pub fn report(&self, notices: Vec<DocNotice>) {
        for n in notices {
            tracing::warn!("{}", n.log_line());
            let (kind, uri) = match &n {
                DocNotice::TooLarge { uri, .. } => ("document-too-large", uri),
                DocNotice::Evicted { uri } => ("document-evicted", uri),
            };
            // No longer held: what was tracked in it is lost, as on a close.
            self.service.outcomes.closed(uri);
            if let Some(path) = file_path(uri) {
                self.feed.close(path.into());
            }
            self.service.notify(Notice {
                level: Level::Warning,
                kind: kind.into(),
                message: n.user_message(),
            });
        }
    }

    pub fn open(
        &self,
        uri: Uri,
        text: &str,
        version: i32,
        language_id: String,
        seq: u64,
    ) -> Vec<DocNotice> {
        self.service.tasks.cancel(&uri.as_str().to_string());
        // Reopened with new text: what was tracked in it is lost.
        self.service.outcomes.closed(uri.as_str());
        let mut notices = Vec::new();
        if text.len() > MAX_DOCUMENT_BYTES {
            // Not even copied into a rope.
            let mut docs = lock(&self.docs);
            docs.remove(&uri);
            notices.push(DocNotice::TooLarge {
                uri: uri.as_str().to_string(),
                bytes: text.len(),
            });
            docs.mark_oversized(uri, language_id);
            return notices;
        }
        let doc = Document::new(text, version, seq, language_id);
        if let Some(path) = file_path(uri.as_str()) {
            self.feed.open(path.into(), doc.rope());
        }
        lock(&self.docs).insert(uri, doc, &mut notices);
        notices
    }

    pub fn change(
        &self,
        uri: &Uri,
        changes: &[tower_lsp_server::ls_types::TextDocumentContentChangeEvent],
        version: i32,
        seq: u64,
    ) -> Changed {
        self.service.tasks.cancel(&uri.as_str().to_string());
        let enc = self.encoding();
        let outcomes = &self.service.outcomes;
        let mut guard = lock(&self.docs);
        let docs = &mut *guard;
        let mut notices = Vec::new();
        if let Some(doc) = docs.open.get_mut(uri) {
            let before = doc.rope().len_bytes();
            let narrow = outcomes.tracks(uri.as_str());
            let edits = doc.apply(changes, version, seq, enc, narrow);
            // Under the documents' lock, as the outcome checks read them.
            outcomes.edited(uri.as_str(), &edits);
            let after = doc.rope().len_bytes();
            docs.bytes = docs.bytes - before + after;
            if after > MAX_DOCUMENT_BYTES {
                outcomes.closed(uri.as_str());
                let language_id = docs.remove(uri).map(|d| d.language_id().to_string());
                let language_id = language_id.unwrap_or_default();
                notices.push(DocNotice::TooLarge {
                    uri: uri.as_str().to_string(),
                    bytes: after,
                });
                docs.mark_oversized(uri.clone(), language_id);
            } else {
                if let Some(path) = file_path(uri.as_str()) {
                    let line = changes
                        .last()
                        .and_then(|c| c.range)
                        .map(|r| r.start.line as usize);
                    self.feed.change(path.into(), doc.rope(), line);
                }
                docs.evict(uri, &mut notices);
            }
            return Changed::Applied(notices);
        }
        let Some(language_id) = docs.oversized.get(uri).cloned() else {
            return Changed::NotOpen;
        };
        // Too large so far: a full-text change may bring it back within the bound.
        let Some(full) = changes.iter().rposition(|c| c.range.is_none()) else {
            return Changed::NotOpen;
        };
        if changes[full..].iter().map(|c| c.text.len()).sum::<usize>() > MAX_DOCUMENT_BYTES {
            return Changed::NotOpen;
        }
        let mut doc = Document::new("", version, seq, language_id);
        doc.apply(&changes[full..], version, seq, enc, false);
        if let Some(path) = file_path(uri.as_str()) {
            self.feed.open(path.into(), doc.rope());
        }
        docs.insert(uri.clone(), doc, &mut notices);
        Changed::Applied(notices)
    }

    pub fn close(&self, uri: &Uri) {
        self.service.tasks.cancel(&uri.as_str().to_string());
        self.service.outcomes.closed(uri.as_str());
        let mut docs = lock(&self.docs);
        docs.oversized.remove(uri);
        if docs.remove(uri).is_some() {
            if let Some(path) = file_path(uri.as_str()) {
                self.feed.close(path.into());
            }
        }
    }

    /// Run `f` on a document, under the lock (keep it short).
    pub fn with_document<R>(&self, uri: &Uri, f: impl FnOnce(&Document) -> R) -> Option<R> {
        lock(&self.docs).open.get(uri).map(f)
    }

    /// Open documents and their UTF-8 bytes (`copilot/debugStats`).
    pub fn document_totals(&self) -> (usize, usize) {
        let docs = lock(&self.docs);
        (docs.open.len(), docs.bytes)
    }

    /// Has the document changed since message `arrival`?
    pub fn check(&self, uri: &Uri, arrival: u64) -> Result<(), Skip> {
        match lock(&self.docs).open.get(uri) {
            None => Err(Skip::NoDocument),
            Some(d) if d.changed_at() > arrival => Err(Skip::Stale),
            Some(_) => Ok(()),
        }
    }

    /// Copy out what the model needs at `pos`, if the document is still as it was when the
    /// request arrived.
    pub fn snapshot(
        &self,
        uri: &Uri,
        pos: Position,
        arrival: u64,
    ) -> Result<(Snapshot, LspPlace), Skip> {
        let enc = self.encoding();
        let path = self.display_path(uri);
        let file = file_path(uri.as_str());
        let docs = lock(&self.docs);
        let doc = docs.open.get(uri).ok_or(Skip::NoDocument)?;
        if doc.changed_at() > arrival {
            return Err(Skip::Stale);
        }
        let at = doc.char_at(pos, enc).ok_or(Skip::OutOfRange)?;
        let word = doc.word_start(at);
        Ok((
            Snapshot {
                text: doc.text(),
                cursor: doc.char_to_byte(at),
                path,
                file,
            },
            LspPlace {
                position: doc.position_of(at, enc),
                word_start: doc.position_of(word, enc),
                word_prefix: doc.rope().slice(word..at).to_string(),
                version: doc.version(),
            },
        ))
    }

    /// The position right after `text` inserted at `start` (the document holds it now),
    /// and the document's version.
    pub fn after_insert(&self, uri: &Uri, start: Position, text: &str) -> Option<(Position, i32)> {
        let enc = self.encoding();
        let docs = lock(&self.docs);
        let doc = docs.open.get(uri)?;
        let at = doc.char_at_clamped(start, enc) + text.chars().count();
        let at = at.min(doc.rope().len_chars());
        Some((doc.position_of(at, enc), doc.version()))
    }

    pub fn version(&self, uri: &Uri) -> Option<i32> {
        lock(&self.docs).open.get(uri).map(Document::version)
    }

    pub fn remember_cursor(&self, uri: &Uri, pos: Position) {
        let mut c = lock(&self.cursors);
        if c.len() >= 1024 && !c.contains_key(uri) {
            c.clear();
        }
        c.insert(uri.clone(), pos);
    }

    pub fn last_cursor(&self, uri: &Uri) -> Option<Position> {
        lock(&self.cursors).get(uri).copied()
    }

    /// What the place at `pos` says for the adaptive debounce, read from the rope without
    /// copying the text (only the cursor's line and the document's end are looked at).
    pub fn hint(&self, uri: &Uri, pos: Position) -> Option<copilot_service::Hint> {
        let enc = self.encoding();
        let docs = lock(&self.docs);
        let doc = docs.open.get(uri)?;
        let at = doc.char_at(pos, enc)?;
        let rope = doc.rope();
        let before = at.checked_sub(1).map(|i| rope.char(i));
        let line = rope.char_to_line(at);
        let line_end = rope.line_to_char(line) + rope.line(line).len_chars();
        let blank = |c: char| c.is_whitespace();
        let rest_of_line_blank = rope.slice(at..line_end).chars().all(blank);
        // The end of the document: blank from here on (looked at up to 4 KiB of it).
        let tail = rope.slice(at..);
        let at_doc_end = tail.len_chars() <= 4096 && tail.chars().all(blank);
        Some(copilot_service::Hint {
            after_non_word: before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')),
            at_line_end: rest_of_line_blank,
            at_doc_end,
        })
    }

    /// The path shown to the model: relative to the workspace root that holds the file, else
    /// the file's path; none for other schemes.
    pub fn display_path(&self, uri: &Uri) -> Option<String> {
        let path = file_path(uri.as_str())?;
        let roots = self.roots.read().unwrap_or_else(|e| e.into_inner());
        for root in roots.iter() {
            let root = root.trim_end_matches('/');
            if let Some(rest) = path.strip_prefix(root) {
                if let Some(rel) = rest.strip_prefix('/') {
                    if !rel.is_empty() {
                        return Some(rel.to_string());
                    }
                }
            }
        }
        Some(path)
    }
}

/// A document's text for the outcome bookkeeping (retention checks, typed-through text).
struct RopeText<'a>(&'a ropey::Rope);

impl copilot_service::DocumentText for RopeText<'_> {
    fn len_chars(&self) -> usize {
        self.0.len_chars()
    }

    fn slice(&self, chars: std::ops::Range<usize>) -> String {
        let n = self.0.len_chars();
        let (a, b) = (chars.start.min(n), chars.end.min(n));
        self.0.slice(a..b.max(a)).to_string()
    }
}

impl copilot_service::DocumentTexts for Session {
    fn with_text(&self, key: &str, f: &mut dyn FnMut(&dyn copilot_service::DocumentText)) -> bool {
        let Ok(uri) = key.parse::<Uri>() else {
            return false;
        };
        match lock(&self.docs).open.get(&uri) {
            Some(d) => {
                f(&RopeText(d.rope()));
                true
            }
            None => false,
        }
    }
}

/// The path of a `file:` URI, percent-decoded (`file:///C:/x` gives `C:/x`).
pub fn file_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("file://")?;
    // Skip the authority (usually empty).
    let path = &rest[rest.find('/')?..];
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    let mut p = String::from_utf8_lossy(&out).into_owned();
    let b = p.as_bytes();
    if b.len() >= 3 && b[0] == b'/' && b[1].is_ascii_alphabetic() && b[2] == b':' {
        p.remove(0);
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_become_paths() {
        assert_eq!(
            file_path("file:///tmp/a%20b/c.py").as_deref(),
            Some("/tmp/a b/c.py")
        );
        assert_eq!(file_path("file:///C:/x/y.rs").as_deref(), Some("C:/x/y.rs"));
        assert_eq!(
            file_path("file://host/share/z.py").as_deref(),
            Some("/share/z.py")
        );
        assert_eq!(file_path("file:///%E2%82%AC.py").as_deref(), Some("/€.py"));
        assert_eq!(file_path("file:///bad%zz").as_deref(), Some("/bad%zz"));
        assert_eq!(file_path("file:///end%2").as_deref(), Some("/end%2"));
        assert_eq!(file_path("untitled:Untitled-1"), None);
    }

    #[test]
    fn paths_are_shown_relative_to_their_root() {
        let s = Session::new(
            ServeOptions::default(),
            Settings::from_cli(&ServeOptions::default()).unwrap(),
            copilot_service::Service::new(std::sync::Arc::new(copilot_service::EngineLoader)).0,
        );
        s.set_roots(vec!["/work/proj".into(), "/other/".into()]);
        let uri = |u: &str| u.parse::<Uri>().unwrap();
        assert_eq!(
            s.display_path(&uri("file:///work/proj/src/a.py"))
                .as_deref(),
            Some("src/a.py")
        );
        assert_eq!(
            s.display_path(&uri("file:///other/b.py")).as_deref(),
            Some("b.py")
        );
        assert_eq!(
            s.display_path(&uri("file:///work/projx/c.py")).as_deref(),
            Some("/work/projx/c.py")
        );
    }
}
