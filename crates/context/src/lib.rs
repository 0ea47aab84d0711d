//! Context from the rest of the workspace for a completion prompt: snippets ranked for a
//! cursor from three sources, each its own module tested alone:
//!
//! - [`open`]: the other open documents (Copilot's neighbouring tabs: the best sliding
//!   window by Jaccard similarity of identifiers) and a ring of recently edited chunks
//!   (llama.vim's);
//! - [`imports`]: the current file's imports resolved in the workspace and its virtualenv,
//!   showing signatures and docstrings of the imported names used near the cursor
//!   (tree-sitter; Python first, other languages through the [`imports::Language`] seam);
//! - [`index`]: a gitignore-aware BM25 index of the workspace's chunks over identifier
//!   sub-tokens, built in the background and updated file by file.
//!
//! [`rank`] merges them within a token budget counted with the model's tokenizer. A
//! [`Workspace`] (one per workspace folder) holds it all behind short locks and keeps the
//! choice **stable while typing**: the same snippets, in the same order, until the cursor
//! moves to another line *and* the code there asks for different ones, the cursor leaves
//! its enclosing definition, or another file changes; so the prompt's KV cache survives
//! keystrokes.
//!
//! Does I/O (files of the workspace); knows no LSP, no JSON, no model. Only the server
//! knows LSP; `copilot-fim` renders the snippets into the prompt and stays pure.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use copilot_context::{ContextSettings, PromptBudget, Workspace};
//!
//! let ws = Workspace::new("/path/to/repo", ContextSettings::default());
//! // On a blocking thread at start; the server reports `$/progress` from the callback.
//! let stats = ws.build_index(&|_progress| {}, &AtomicBool::new(false))?;
//! ws.did_open("/path/to/repo/pkg/util.py".as_ref(), "def helper(x):\n    return x\n");
//! let text = "from pkg.util import helper\n\nhelper(";
//! let snippets = ws.snippets(
//!     "/path/to/repo/app.py".as_ref(),
//!     text,
//!     text.len(),
//!     PromptBudget::default(),
//!     &copilot_fim::CharCounter, // the model's tokenizer in real use
//! );
//! let for_the_prompt: Vec<copilot_fim::Snippet> = copilot_context::to_fim(&snippets);
//! # Ok::<(), copilot_context::ContextError>(())
//! ```

pub mod imports;
pub mod index;
pub mod offline;
pub mod open;
pub mod rank;
pub mod tokens;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use copilot_fim::TokenCounter;

pub use index::{IndexProgress, IndexStats};
pub use rank::{to_fim, Candidate, ContextSnippet, Source};

/// Errors of this crate. Bad files are never errors (they are skipped and logged once).
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("indexing cancelled")]
    Cancelled,
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Default context budget in tokens: a quarter of the default 1,536-token prefix budget
/// (the most the issue allows). Not yet backed by a recall-versus-budget measurement
/// (BENCHMARKS.md, "Context").
pub const DEFAULT_MAX_TOKENS: usize = 384;
/// Default cap on indexed files.
pub const DEFAULT_MAX_INDEX_FILES: usize = 5000;

/// What context to gather, as `context` settings say it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContextSettings {
    /// Other open documents and recently edited chunks.
    pub open_files: bool,
    /// Definitions of imported names used near the cursor.
    pub imports: bool,
    /// The workspace index.
    pub index: bool,
    /// Tokens the snippets may take (at most a quarter of the prefix budget is used).
    pub max_tokens: usize,
    /// Files indexed at most.
    pub max_index_files: usize,
}

impl Default for ContextSettings {
    fn default() -> Self {
        Self {
            open_files: true,
            imports: true,
            index: true,
            max_tokens: DEFAULT_MAX_TOKENS,
            max_index_files: DEFAULT_MAX_INDEX_FILES,
        }
    }
}

/// Which sources to use: `none`, `open`, `imports`, `index`, `all`, or a comma-separated
/// list (`open,imports`), as `--context` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sources {
    pub open_files: bool,
    pub imports: bool,
    pub index: bool,
}

impl Sources {
    pub const ALL: Sources = Sources {
        open_files: true,
        imports: true,
        index: true,
    };
    pub const NONE: Sources = Sources {
        open_files: false,
        imports: false,
        index: false,
    };

    pub fn any(self) -> bool {
        self.open_files || self.imports || self.index
    }

    /// Only `source`.
    pub fn only(source: Source) -> Sources {
        Sources {
            open_files: source == Source::Open,
            imports: source == Source::Imports,
            index: source == Source::Index,
        }
    }
}

impl std::str::FromStr for Sources {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Sources::NONE;
        for part in s.split(',').map(|p| p.trim().to_ascii_lowercase()) {
            match part.as_str() {
                "none" | "off" => {}
                "all" => out = Sources::ALL,
                "open" | "open-files" => out.open_files = true,
                "imports" => out.imports = true,
                "index" => out.index = true,
                other => {
                    return Err(format!(
                    "unknown context source `{other}` (expected none, open, imports, index or all)"
                ))
                }
            }
        }
        Ok(out)
    }
}

impl ContextSettings {
    pub fn sources(&self) -> Sources {
        Sources {
            open_files: self.open_files,
            imports: self.imports,
            index: self.index,
        }
    }

    pub fn with_sources(self, s: Sources) -> Self {
        Self {
            open_files: s.open_files,
            imports: s.imports,
            index: s.index,
            ..self
        }
    }

    /// The snippet budget for a prompt whose prefix budget is `prefix_tokens`.
    pub fn budget(&self, prefix_tokens: usize) -> usize {
        self.max_tokens.min(prefix_tokens / 4)
    }
}

/// The prompt's budgets around the cursor (what the current file's window holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PromptBudget {
    pub prefix_tokens: usize,
    pub suffix_tokens: usize,
}

impl Default for PromptBudget {
    fn default() -> Self {
        Self {
            prefix_tokens: copilot_fim::DEFAULT_PREFIX_TOKENS,
            suffix_tokens: copilot_fim::DEFAULT_SUFFIX_TOKENS,
        }
    }
}

/// A change to a file on disk (`workspace/didChangeWatchedFiles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileChange {
    Created,
    Changed,
    Deleted,
}

/// Logs a message once per key: a broken file is said once, not at every keystroke.
#[derive(Debug, Default)]
pub struct SaidOnce(Mutex<HashSet<String>>);

/// Keys remembered before they may be said again.
const SAID_KEYS: usize = 10_000;

impl SaidOnce {
    fn first(&self, key: String) -> bool {
        let mut set = self.0.lock().expect("said lock");
        if set.len() >= SAID_KEYS {
            set.clear();
        }
        set.insert(key)
    }

    pub fn info(&self, key: String, msg: std::fmt::Arguments) {
        if self.first(key) {
            tracing::info!("{msg}");
        }
    }

    pub fn warn(&self, key: String, msg: std::fmt::Arguments) {
        if self.first(key) {
            tracing::warn!("{msg}");
        }
    }

    /// Whether a key starting with `prefix` was said.
    pub fn said_prefix(&self, prefix: &str) -> bool {
        self.0
            .lock()
            .expect("said lock")
            .iter()
            .any(|k| k.starts_with(prefix))
    }

    /// Whether `key` was said.
    pub fn said(&self, key: &str) -> bool {
        self.0.lock().expect("said lock").contains(key)
    }
}

/// The nearest folder above `file` holding `.git`, else `file`'s folder: the workspace of a
/// file when no editor says otherwise.
pub fn workspace_root_for(file: &Path) -> PathBuf {
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| abs.clone());
    let mut d = Some(dir.as_path());
    while let Some(p) = d {
        if p.join(".git").exists() {
            return p.to_path_buf();
        }
        d = p.parent();
    }
    dir
}

/// Lines above the cursor whose identifiers make the query.
const QUERY_LINES_BEFORE: usize = 30;
/// Lines below the cursor in the query.
const QUERY_LINES_AFTER: usize = 5;
/// Index hits asked for, and at most per file.
const INDEX_HITS: usize = 8;
const INDEX_HITS_PER_FILE: usize = 2;
/// Members asked of the index for a receiver name.
const RECEIVER_MEMBERS: usize = 24;
/// Remembered choices (one per document).
const MEMO_DOCS: usize = 64;

#[derive(Clone, Debug)]
struct Memo {
    line: usize,
    scope: u64,
    generation: u64,
    key: (Sources, usize, PromptBudget),
    result: Vec<ContextSnippet>,
}

/// Changes seen, to tell a change elsewhere from the current document's own typing.
#[derive(Debug, Default)]
struct Generations {
    total: u64,
    by_path: HashMap<PathBuf, u64>,
}

impl Generations {
    fn bump(&mut self, path: Option<&Path>) {
        self.total += 1;
        if let Some(p) = path {
            *self.by_path.entry(p.to_path_buf()).or_insert(0) += 1;
        }
    }

    /// Changes made by anything but `path`.
    fn foreign(&self, path: &Path) -> u64 {
        self.total - self.by_path.get(path).copied().unwrap_or(0)
    }
}

/// Context for the documents of one workspace folder. `Send + Sync`: share it in an
/// `Arc`; every method takes `&self` and holds its locks for microseconds (documents are
/// tokenized and files read and cut before a lock is taken), except that a search holds
/// the index's read lock while it ranks (about a millisecond).
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    roots: Vec<PathBuf>,
    settings: RwLock<ContextSettings>,
    open: RwLock<open::OpenFiles>,
    index: RwLock<index::Index>,
    imports: imports::Imports,
    memo: Mutex<HashMap<PathBuf, Memo>>,
    generations: Mutex<Generations>,
    excluded: RwLock<HashSet<PathBuf>>,
    said: SaidOnce,
}

/// The workspace seen as files for the imports gatherer: open documents first.
struct WorkspaceFiles<'a> {
    open: &'a open::OpenFiles,
    said: &'a SaidOnce,
}

impl imports::Files for WorkspaceFiles<'_> {
    fn stamp(&self, path: &Path) -> Option<u64> {
        if let Some(d) = self.open.get(path) {
            return Some(tokens::ident_hash(&d.text) | 1 << 63);
        }
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| index::file_stamp(&m) & !(1 << 63))
    }

    fn load(&self, path: &Path) -> Option<Arc<str>> {
        if let Some(d) = self.open.get(path) {
            return Some(d.text.clone());
        }
        match index::read_source(path, index::MAX_FILE_BYTES) {
            Ok((_, text)) => Some(text.into()),
            Err(why) => {
                self.said.info(
                    format!("load:{}", path.display()),
                    format_args!("imported file {} not read: {why:?}", path.display()),
                );
                None
            }
        }
    }
}

impl Workspace {
    /// The context of the workspace folder `root`. Builds no index (see
    /// [`Workspace::build_index`]); finds the virtualenv (`VIRTUAL_ENV`, `root/.venv`).
    pub fn new(root: impl Into<PathBuf>, settings: ContextSettings) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        let venv = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from);
        Self::with_virtualenv(root, settings, venv.as_deref())
    }

    /// As [`Workspace::new`], with the active virtualenv given (tests, eval).
    pub fn with_virtualenv(
        root: PathBuf,
        settings: ContextSettings,
        virtual_env: Option<&Path>,
    ) -> Self {
        let mut roots = vec![root.clone()];
        for sub in ["src", "lib"] {
            let d = root.join(sub);
            if d.is_dir() {
                roots.push(d);
            }
        }
        roots.extend(imports::virtualenv_site_packages(&root, virtual_env));
        Self {
            root,
            roots,
            settings: RwLock::new(settings),
            open: RwLock::default(),
            index: RwLock::default(),
            imports: imports::Imports::new(),
            memo: Mutex::default(),
            generations: Mutex::default(),
            excluded: RwLock::default(),
            said: SaidOnce::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `path` lies in this workspace folder.
    pub fn contains(&self, path: &Path) -> bool {
        path.starts_with(&self.root)
    }

    /// Folders where absolute imports are looked for (the root, `src/`, `lib/`, the
    /// virtualenv's site-packages).
    pub fn import_roots(&self) -> &[PathBuf] {
        &self.roots
    }

    pub fn settings(&self) -> ContextSettings {
        self.settings.read().expect("settings lock").clone()
    }

    pub fn set_settings(&self, s: ContextSettings) {
        *self.settings.write().expect("settings lock") = s;
        self.generations
            .lock()
            .expect("generations lock")
            .bump(None);
    }

    /// Messages said once so far (tests look for their keys).
    pub fn said(&self) -> &SaidOnce {
        &self.said
    }

    fn bump(&self, path: Option<&Path>) {
        self.generations
            .lock()
            .expect("generations lock")
            .bump(path);
    }

    pub fn did_open(&self, path: &Path, text: &str) {
        let doc = Arc::new(open::Doc::new(text));
        self.open
            .write()
            .expect("open lock")
            .open(path.to_path_buf(), doc);
        self.bump(Some(path));
    }

    /// A document's new text; `edited_line` (0-based) is where the edit was, when known:
    /// the chunk around it joins the recent-edits ring.
    pub fn did_change(&self, path: &Path, text: &str, edited_line: Option<usize>) {
        let doc = open::Doc::new(text);
        self.open
            .write()
            .expect("open lock")
            .change(path.to_path_buf(), doc, edited_line);
        self.bump(Some(path));
    }

    /// A save: the chunk around the last edit joins the ring and the file is re-indexed.
    pub fn did_save(&self, path: &Path) {
        self.open.write().expect("open lock").save(path);
        self.reindex(path);
    }

    pub fn did_close(&self, path: &Path) {
        self.open.write().expect("open lock").close(path);
        self.memo.lock().expect("memo lock").remove(path);
        self.bump(Some(path));
    }

    /// Files changed on disk (watched files): re-indexed or forgotten.
    pub fn files_changed(&self, changes: &[(PathBuf, FileChange)]) {
        for (path, change) in changes {
            match change {
                FileChange::Deleted => {
                    if self.index.write().expect("index lock").remove(path) {
                        self.bump(Some(path));
                    }
                }
                FileChange::Created | FileChange::Changed => {
                    self.reindex(path);
                }
            }
        }
    }

    /// Re-index one file (read and cut outside the lock). Returns whether it is indexed.
    pub fn reindex(&self, path: &Path) -> bool {
        if !self.contains(path) || !index::is_source(path) || self.in_skipped_dir(path) {
            return false;
        }
        let max = self.settings().max_index_files;
        let prepared = index::prepare_file(path, index::MAX_FILE_BYTES);
        let mut idx = self.index.write().expect("index lock");
        let indexed = match prepared {
            Ok(f) if idx.contains(path) || idx.files() < max => {
                idx.add(f);
                true
            }
            Ok(_) => false,
            Err(why) => {
                idx.remove(path);
                tracing::debug!(path = %path.display(), ?why, "not indexed");
                false
            }
        };
        drop(idx);
        self.bump(Some(path));
        indexed
    }

    fn in_skipped_dir(&self, path: &Path) -> bool {
        path.strip_prefix(&self.root).is_ok_and(|rel| {
            rel.parent().is_some_and(|p| {
                p.components().any(|c| {
                    let s = c.as_os_str().to_string_lossy();
                    index::SKIPPED_DIRS.contains(&s.as_ref()) || s.starts_with('.')
                })
            })
        })
    }

    /// Build the index (blocking: run it on a blocking thread). `progress` is called
    /// between files; setting `cancel` stops the build and keeps the previous index.
    pub fn build_index(
        &self,
        progress: &dyn Fn(IndexProgress),
        cancel: &AtomicBool,
    ) -> Result<IndexStats, ContextError> {
        let o = index::BuildOptions {
            max_files: self.settings().max_index_files,
            ..Default::default()
        };
        let (idx, stats) = index::build(&self.root, &o, progress, cancel, &self.said)?;
        *self.index.write().expect("index lock") = idx;
        self.bump(None);
        Ok(stats)
    }

    /// Never gather from these files (fine-tuning leaves its held-out files out so that
    /// no training example shows them).
    pub fn exclude(&self, paths: impl IntoIterator<Item = PathBuf>) {
        self.excluded.write().expect("excluded lock").extend(paths);
        self.bump(None);
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        self.excluded.read().expect("excluded lock").contains(path)
    }

    /// Forget the choice remembered for `doc` (the next request chooses afresh).
    pub fn forget_choice(&self, doc: &Path) {
        self.memo.lock().expect("memo lock").remove(doc);
    }

    /// Files and chunks indexed.
    pub fn index_size(&self) -> (usize, usize) {
        let idx = self.index.read().expect("index lock");
        (idx.files(), idx.chunks())
    }

    /// The path the prompt shows for `path`: relative to the workspace (or to the import
    /// root holding it), `/`-separated.
    pub fn display_path(&self, path: &Path) -> String {
        let rel = std::iter::once(&self.root)
            .chain(self.roots.iter().skip(1))
            .find_map(|r| path.strip_prefix(r).ok())
            .unwrap_or(path);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Snippets for a cursor at byte `cursor` of `text` (the document `doc`), most
    /// relevant first, within `settings.max_tokens` and a quarter of the prefix budget.
    /// Cheap: the choice is remembered per document and kept while the cursor stays on
    /// its line and nothing else changed; when the line changes inside the same
    /// definition, the previous choice stands unless the code now uses another imported
    /// name.
    pub fn snippets(
        &self,
        doc: &Path,
        text: &str,
        cursor: usize,
        budget: PromptBudget,
        counter: &dyn TokenCounter,
    ) -> Vec<ContextSnippet> {
        let settings = self.settings();
        let sources = settings.sources();
        let tokens = settings.budget(budget.prefix_tokens);
        if !sources.any() || tokens == 0 {
            return Vec::new();
        }
        let cursor = floor_char_boundary(text, cursor);
        let line = text[..cursor].matches('\n').count();
        let scope = enclosing_scope(text, cursor);
        let generation = self
            .generations
            .lock()
            .expect("generations lock")
            .foreign(doc);
        let key = (sources, tokens, budget);
        let previous = self.memo.lock().expect("memo lock").get(doc).cloned();
        if let Some(m) = &previous {
            if m.line == line && m.scope == scope && m.generation == generation && m.key == key {
                return m.result.clone();
            }
        }

        let (qa, qb) = query_range(text, cursor);
        let near = &text[qa..qb];
        let (wa, wb) = window_range(text, cursor, budget, counter);
        let mut lists: Vec<Vec<Candidate>> = Vec::new();
        if sources.imports {
            let open = self.open.read().expect("open lock");
            let mut roots = self.roots.clone();
            roots.extend(doc.parent().map(Path::to_path_buf));
            let files = WorkspaceFiles {
                open: &open,
                said: &self.said,
            };
            // Excluded before index, the order `index_candidates` takes them in.
            let excluded = self.excluded.read().expect("excluded lock");
            let idx = self.index.read().expect("index lock");
            let uses = |name: &str| idx.attribute_uses(name, doc);
            let receiver_members = |name: &str, partial: &str| {
                let (file, members) = idx.receiver_members(name, partial, doc, RECEIVER_MEMBERS);
                (file, members.into_iter().map(|(m, _)| m).collect())
            };
            let defined_in = |name: &str| {
                let mut v = idx.defined_in(name, doc);
                v.retain(|p| !excluded.contains(p));
                v
            };
            let q = imports::ImportQuery {
                path: doc,
                text,
                near,
                cursor: cursor - qa,
                near_start: qa,
                window_start: wa,
                roots: &roots,
                uses: &uses,
                receiver_members: &receiver_members,
                defined_in: &defined_in,
            };
            lists.push(self.imports.gather(&q, &files, &self.said));
        }
        if sources.open_files {
            let query = tokens::ident_set(near);
            lists.push(self.open.read().expect("open lock").gather(doc, &query));
        }
        if sources.index {
            lists.push(self.index_candidates(doc, near));
        }

        let covered = rank::covered_lines(&text[wa..wb]);
        let comment = copilot_fim::prompt::comment_marker(&doc.to_string_lossy());
        {
            let excluded = self.excluded.read().expect("excluded lock");
            if !excluded.is_empty() {
                // The document's own imports above the window are its own text, never a
                // held-out file's.
                for l in &mut lists {
                    l.retain(|c| c.path == doc || !excluded.contains(&c.path));
                }
            }
        }
        let mut result = rank::combine(
            lists,
            &covered,
            tokens,
            &|p| self.display_path(p),
            comment,
            counter,
        );

        // Stability inside a definition: keep the previous choice unless the new one brings
        // an imported definition the previous lacked (the user just used a new name).
        if let Some(m) = previous {
            let same_place = m.scope == scope && m.generation == generation && m.key == key;
            let nothing_new = result
                .iter()
                .filter(|s| s.source == Source::Imports)
                .all(|s| m.result.contains(s));
            // Only the document itself changed since: its own chunks must still be in it.
            let own = self.display_path(doc);
            // (Its open-file chunks: the imports source's listings under its path, its
            // imports joined one a line and the names it lacks, are not its text.)
            let still_there = m.result.iter().all(|s| {
                s.source != Source::Open || s.path != own || text.contains(s.text.as_str())
            });
            if same_place && nothing_new && still_there && !m.result.is_empty() {
                result = m.result;
            }
        }
        let mut memo = self.memo.lock().expect("memo lock");
        if memo.len() >= MEMO_DOCS && !memo.contains_key(doc) {
            memo.clear();
        }
        memo.insert(
            doc.to_path_buf(),
            Memo {
                line,
                scope,
                generation,
                key,
                result: result.clone(),
            },
        );
        result
    }

    fn index_candidates(&self, doc: &Path, near: &str) -> Vec<Candidate> {
        let mut q = Vec::new();
        tokens::terms(near, |h| q.push(h));
        q.sort_unstable();
        q.dedup();
        let excluded = self.excluded.read().expect("excluded lock");
        let idx = self.index.read().expect("index lock");
        // The current document is left out: its live text is in the window. Open files are
        // not: the open-files source finds them by the lines' shared identifiers, the index
        // by BM25 over terms, and leaving them out here hid what only the index found (on
        // flask, `all` recalled less than `open` alone). Their chunks are read back only while
        // the saved file is unchanged; what both sources pick is dropped as a duplicate.
        let hits = idx.search(&q, INDEX_HITS, INDEX_HITS_PER_FILE, &|p| {
            p == doc || excluded.contains(p)
        });
        hits.into_iter()
            .filter_map(|h| {
                let text = idx.text(&h)?;
                Some(Candidate {
                    source: Source::Index,
                    path: h.path,
                    start_line: h.line,
                    text,
                    score: h.score,
                })
            })
            .collect()
    }
}

pub(crate) fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A key for the definition the cursor is in: the text of the nearest unindented line
/// above the cursor's line (a top-level `def`/`class`, or any top-level statement).
fn enclosing_scope(text: &str, cursor: usize) -> u64 {
    let line_start = text[..cursor].rfind('\n').map_or(0, |i| i + 1);
    text[..line_start]
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with([' ', '\t']))
        .map_or(0, tokens::ident_hash)
}

/// Byte range of the lines around the cursor whose identifiers make the query.
fn query_range(text: &str, cursor: usize) -> (usize, usize) {
    let mut a = text[..cursor].rfind('\n').map_or(0, |i| i + 1);
    for _ in 0..QUERY_LINES_BEFORE {
        if a == 0 {
            break;
        }
        a = text[..a - 1].rfind('\n').map_or(0, |i| i + 1);
    }
    let mut b = cursor;
    for _ in 0..=QUERY_LINES_AFTER {
        match text[b..].find('\n') {
            Some(i) => b += i + 1,
            None => {
                b = text.len();
                break;
            }
        }
    }
    (a, b)
}

/// Byte range of the document that the prompt's window shows (at most: budgets are cut
/// further when the model's window is small).
fn window_range(
    text: &str,
    cursor: usize,
    budget: PromptBudget,
    counter: &dyn TokenCounter,
) -> (usize, usize) {
    let (prefix, suffix) = text.split_at(cursor);
    let (kept, _) = copilot_fim::budget::keep_tail(prefix, budget.prefix_tokens, counter);
    let (head, _) = copilot_fim::budget::keep_head(suffix, budget.suffix_tokens, counter);
    (cursor - kept.len(), cursor + head.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!("all".parse::<Sources>(), Ok(Sources::ALL));
        assert_eq!("none".parse::<Sources>(), Ok(Sources::NONE));
        assert_eq!("open".parse::<Sources>(), Ok(Sources::only(Source::Open)));
        let two: Sources = "imports, index".parse().unwrap();
        assert!(two.imports && two.index && !two.open_files);
        assert!("tabs".parse::<Sources>().unwrap_err().contains("imports"));
        assert_eq!(ContextSettings::default().budget(1536), 384);
        assert_eq!(ContextSettings::default().budget(400), 100);
    }

    #[test]
    fn scopes_and_ranges() {
        let text = "import os\n\ndef f(a):\n    x = 1\n    y$";
        let cursor = text.len() - 1;
        let scope = enclosing_scope(text, cursor);
        assert_eq!(scope, tokens::ident_hash("def f(a):"));
        // Typing on the line does not change the scope; a line of its own does not either.
        assert_eq!(enclosing_scope("def f(a):\n    x = 1\n    yy", 24), scope);
        assert_eq!(enclosing_scope("x", 1), 0);
        let (a, b) = query_range(text, cursor);
        assert_eq!((a, b), (0, text.len()));
        let long: String = (0..100).map(|i| format!("l{i}\n")).collect();
        let at = long.find("l50").unwrap();
        let (a, b) = query_range(&long, at);
        assert!(long[a..b].starts_with("l20\n") && long[a..b].ends_with("l55\n"));
        let (wa, wb) = window_range(
            &long,
            at,
            PromptBudget {
                prefix_tokens: 8,
                suffix_tokens: 8,
            },
            &copilot_fim::CharCounter,
        );
        assert_eq!(&long[wa..wb], "l48\nl49\nl50\nl51\n");
    }
}
