//! Open and recent files: the other documents the editor has open, scored by Copilot's
//! "neighboring tabs" rule (the best sliding window of each file by Jaccard similarity of
//! its identifiers with the code around the cursor), and a bounded ring of the chunks the
//! user recently edited or saved, as llama.vim keeps one (16 chunks of up to 32 lines
//! around the edit; a chunk that repeats one already there is dropped, and one that mostly
//! repeats an older chunk evicts it).
//!
//! The ring only ever holds text that is still in an open document: a chunk whose text an
//! edit removed, or whose document was closed, leaves the ring, so the context never shows
//! code that no longer exists. Pure data structures, no I/O; knows no LSP.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::rank::{Candidate, Source};
use crate::tokens::for_each_ident;

/// Lines of a neighbouring-tab window (Copilot slides a fixed window over each file).
pub const WINDOW_LINES: usize = 20;
/// Chunks the ring keeps (llama.vim's `ring_n_chunks`).
pub const RING_CHUNKS: usize = 16;
/// Lines of a ring chunk (llama.vim takes `ring_chunk_size / 2` = 32 lines around the cursor).
pub const RING_CHUNK_LINES: usize = 32;
/// Line similarity above which a new chunk evicts an older one (llama.vim's 0.9).
const EVICT_SIMILARITY: f32 = 0.9;

/// An open document, with its identifiers per line ready for sliding windows.
#[derive(Debug)]
pub struct Doc {
    pub text: Arc<str>,
    /// Byte offset of each line's start.
    line_starts: Vec<usize>,
    /// The identifier hashes of each line.
    line_idents: Vec<Vec<u64>>,
    /// 0-based line of the last edit.
    pub last_edit: Option<usize>,
}

impl Doc {
    pub fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        if line_starts.len() > 1 && *line_starts.last().expect("nonempty") == text.len() {
            line_starts.pop();
        }
        let line_idents = (0..line_starts.len())
            .map(|i| {
                let mut v = Vec::new();
                for_each_ident(line_of(text, &line_starts, i), |h| v.push(h));
                v
            })
            .collect();
        Self {
            text: text.into(),
            line_starts,
            line_idents,
            last_edit: None,
        }
    }

    pub fn lines(&self) -> usize {
        self.line_starts.len()
    }

    /// Lines `[start, end)` (with their line breaks).
    pub fn slice(&self, start: usize, end: usize) -> &str {
        let end = end.min(self.lines());
        if start >= end {
            return "";
        }
        let a = self.line_starts[start];
        let b = self
            .line_starts
            .get(end)
            .copied()
            .unwrap_or(self.text.len());
        &self.text[a..b]
    }

    /// The best window of `len` lines by Jaccard similarity with `query`: (score, first line).
    pub fn best_window(&self, query: &HashSet<u64>, len: usize) -> Option<(f32, usize)> {
        if query.is_empty() || self.lines() == 0 {
            return None;
        }
        let len = len.max(1);
        let mut counts: HashMap<u64, u32> = HashMap::new();
        let (mut distinct, mut shared) = (0usize, 0usize);
        let mut best: Option<(f32, usize)> = None;
        let n = self.lines();
        for end in 0..n {
            for &h in &self.line_idents[end] {
                let c = counts.entry(h).or_insert(0);
                if *c == 0 {
                    distinct += 1;
                    shared += usize::from(query.contains(&h));
                }
                *c += 1;
            }
            if end >= len {
                for &h in &self.line_idents[end - len] {
                    let c = counts.get_mut(&h).expect("counted when it entered");
                    *c -= 1;
                    if *c == 0 {
                        distinct -= 1;
                        shared -= usize::from(query.contains(&h));
                    }
                }
            }
            // Score full windows, or the whole file when it is shorter than a window.
            if end + 1 >= len.min(n) {
                let union = query.len() + distinct - shared;
                let score = if union == 0 {
                    0.0
                } else {
                    shared as f32 / union as f32
                };
                let start = (end + 1).saturating_sub(len);
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, start));
                }
            }
        }
        best.filter(|&(s, _)| s > 0.0)
    }
}

fn line_of<'a>(text: &'a str, starts: &[usize], i: usize) -> &'a str {
    let a = starts[i];
    let b = starts.get(i + 1).copied().unwrap_or(text.len());
    &text[a..b]
}

/// A chunk of recently edited or saved code.
#[derive(Clone, Debug, PartialEq)]
pub struct RingChunk {
    pub path: PathBuf,
    /// 0-based first line when it was taken.
    pub start_line: usize,
    pub text: String,
}

impl RingChunk {
    fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.lines()
    }
}

/// llama.vim's similarity of two chunks: twice the lines in common over the lines of both.
fn chunk_similarity(a: &RingChunk, b: &RingChunk) -> f32 {
    let bl: HashSet<&str> = b.lines().collect();
    let (na, nb) = (a.lines().count(), bl.len().max(b.lines().count()));
    if na + nb == 0 {
        return 0.0;
    }
    let common = a.lines().filter(|l| bl.contains(l)).count();
    2.0 * common as f32 / (na + nb) as f32
}

/// The other open documents and the recent-chunk ring.
#[derive(Debug, Default)]
pub struct OpenFiles {
    docs: HashMap<PathBuf, Arc<Doc>>,
    ring: VecDeque<RingChunk>,
    /// Chunks evicted as near-duplicates so far (llama.vim's `ring_n_evict`).
    pub evicted: usize,
}

impl OpenFiles {
    pub fn get(&self, path: &Path) -> Option<&Arc<Doc>> {
        self.docs.get(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.docs.keys()
    }

    pub fn ring(&self) -> impl Iterator<Item = &RingChunk> {
        self.ring.iter()
    }

    /// Open (or replace) a document. Cheap to call with a `Doc` built outside any lock.
    pub fn open(&mut self, path: PathBuf, doc: Arc<Doc>) {
        self.docs.insert(path.clone(), doc);
        self.drop_stale(&path);
    }

    /// A document's new text; `edited` is the line of the edit, whose chunk joins the ring.
    pub fn change(&mut self, path: PathBuf, mut doc: Doc, edited: Option<usize>) {
        doc.last_edit = edited.or_else(|| self.docs.get(&path).and_then(|d| d.last_edit));
        let doc = Arc::new(doc);
        self.docs.insert(path.clone(), doc.clone());
        self.drop_stale(&path);
        if let Some(line) = edited {
            self.remember(&path, &doc, line);
        }
    }

    /// A save: the chunk around the last edit joins the ring.
    pub fn save(&mut self, path: &Path) {
        if let Some(doc) = self.docs.get(path).cloned() {
            let line = doc.last_edit.unwrap_or(0);
            self.remember(path, &doc, line);
        }
    }

    /// A close: the document and its ring chunks go.
    pub fn close(&mut self, path: &Path) {
        self.docs.remove(path);
        self.ring.retain(|c| c.path != path);
    }

    /// Remove ring chunks of `path` whose text is no longer in the document.
    fn drop_stale(&mut self, path: &Path) {
        let Some(doc) = self.docs.get(path) else {
            return;
        };
        self.ring
            .retain(|c| c.path != path || doc.text.contains(c.text.as_str()));
    }

    /// Put the chunk around `line` of `doc` into the ring.
    fn remember(&mut self, path: &Path, doc: &Doc, line: usize) {
        let half = RING_CHUNK_LINES / 2;
        let start = line.saturating_sub(half);
        let end = (start + RING_CHUNK_LINES).min(doc.lines());
        let text = doc.slice(start, end);
        if text.lines().filter(|l| !l.trim().is_empty()).count() < 3 {
            return;
        }
        let chunk = RingChunk {
            path: path.to_path_buf(),
            start_line: start,
            text: text.to_string(),
        };
        if let Some(i) = self.ring.iter().position(|c| c.text == chunk.text) {
            // Seen again: it becomes the most recent.
            let c = self.ring.remove(i).expect("index in range");
            self.ring.push_back(c);
            return;
        }
        let before = self.ring.len();
        self.ring
            .retain(|c| chunk_similarity(c, &chunk) <= EVICT_SIMILARITY);
        self.evicted += before - self.ring.len();
        if self.ring.len() == RING_CHUNKS {
            self.ring.pop_front();
        }
        self.ring.push_back(chunk);
    }

    /// Candidates for a cursor in `current`: each other open document's best window, and
    /// the ring's chunks, by Jaccard similarity with `query` (identifiers near the cursor).
    /// Ring chunks rank a little higher the more recent they are.
    pub fn gather(&self, current: &Path, query: &HashSet<u64>) -> Vec<Candidate> {
        let mut out = Vec::new();
        for (path, doc) in &self.docs {
            if path == current {
                continue;
            }
            if let Some((score, start)) = doc.best_window(query, WINDOW_LINES) {
                out.push(Candidate {
                    source: Source::Open,
                    path: path.clone(),
                    start_line: start,
                    text: doc.slice(start, start + WINDOW_LINES).to_string(),
                    score,
                });
            }
        }
        let n = self.ring.len();
        for (i, c) in self.ring.iter().enumerate() {
            let mut set = HashSet::new();
            for_each_ident(&c.text, |h| {
                set.insert(h);
            });
            let shared = set.iter().filter(|h| query.contains(h)).count();
            let union = query.len() + set.len() - shared;
            if shared == 0 || union == 0 {
                continue;
            }
            let recency = 1.0 + 0.1 * (i + 1) as f32 / n as f32;
            out.push(Candidate {
                source: Source::Open,
                path: c.path.clone(),
                start_line: c.start_line,
                text: c.text.clone(),
                score: recency * shared as f32 / union as f32,
            });
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.path.cmp(&b.path)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::ident_set;

    fn text(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn the_best_window_is_the_one_sharing_most_identifiers() {
        let mut lines: Vec<String> = (0..60).map(|i| format!("filler_{i} = {i}")).collect();
        lines[40] = "def parse_header(raw_bytes, charset):".into();
        lines[41] = "    return decode_header(raw_bytes, charset)".into();
        let doc = Doc::new(&lines.join("\n"));
        let query = ident_set("h = parse_header(raw_bytes, charset)");
        let (score, start) = doc.best_window(&query, 20).unwrap();
        assert!(score > 0.0);
        assert!((21..=40).contains(&start), "{start}");
        assert_eq!(doc.best_window(&ident_set("nothing_shared"), 20), None);
        assert_eq!(doc.best_window(&HashSet::new(), 20), None);
        // Shorter than a window: the whole file is the window.
        let small = Doc::new("def parse_header(x):\n    pass\n");
        assert_eq!(small.best_window(&query, 20).map(|w| w.1), Some(0));
    }

    #[test]
    fn other_documents_are_candidates_and_edits_change_them() {
        let mut open = OpenFiles::default();
        let a = PathBuf::from("/w/a.py");
        let b = PathBuf::from("/w/b.py");
        open.open(a.clone(), Arc::new(Doc::new("x = load_config(path)\n")));
        open.open(
            b.clone(),
            Arc::new(Doc::new(
                "def load_config(path):\n    return read_toml(path)\n",
            )),
        );
        let q = ident_set("cfg = load_config(path)");
        let got = open.gather(&a, &q);
        assert_eq!(got.len(), 1, "never the current document itself");
        assert_eq!(got[0].path, b);
        assert!(got[0].text.contains("def load_config"));
        open.change(
            b.clone(),
            Doc::new("def unrelated_thing():\n    pass\n"),
            None,
        );
        assert!(
            open.gather(&a, &q).is_empty(),
            "the edit removed what matched"
        );
        open.close(&b);
        assert!(open.gather(&a, &ident_set("unrelated_thing")).is_empty());
    }

    #[test]
    fn the_ring_keeps_recent_edits_evicts_near_duplicates_and_stale_text() {
        let mut open = OpenFiles::default();
        let p = PathBuf::from("/w/m.py");
        let body: Vec<String> = (0..100)
            .map(|i| format!("value_{i} = compute_{i}()"))
            .collect();
        let refs: Vec<&str> = body.iter().map(String::as_str).collect();
        open.change(p.clone(), Doc::new(&text(&refs)), Some(50));
        assert_eq!(open.ring().count(), 1);
        // The same place edited again (one line changed): the older chunk is evicted.
        let mut edited = body.clone();
        edited[50] = "value_50 = compute_fast()".into();
        let refs: Vec<&str> = edited.iter().map(String::as_str).collect();
        open.change(p.clone(), Doc::new(&text(&refs)), Some(50));
        let ring: Vec<&RingChunk> = open.ring().collect();
        assert_eq!(ring.len(), 1);
        assert!(ring[0].text.contains("compute_fast"));
        assert_eq!(open.evicted, 0, "stale text left the ring before eviction");
        // Far away: a second chunk.
        open.change(p.clone(), Doc::new(&text(&refs)), Some(5));
        assert_eq!(open.ring().count(), 2);
        // Capacity: never more than RING_CHUNKS.
        let many: Vec<String> = (0..2000).map(|i| format!("v{i} = f{i}()")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let doc_text = text(&refs);
        for k in 0..40 {
            open.change(p.clone(), Doc::new(&doc_text), Some(k * 40));
        }
        assert_eq!(open.ring().count(), RING_CHUNKS);
        open.close(&p);
        assert_eq!(open.ring().count(), 0);
    }
}
