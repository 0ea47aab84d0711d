//! Context for batch jobs (evaluation, fine-tuning), gathered as the server gathers it:
//! "open files" are simulated as the other source files of the document's folder, open
//! while the document's cursors are asked about, and each request is chosen afresh (a
//! batch has no typing to keep stable). Files the workspace excludes (held-out files
//! during fine-tuning) are never opened.

use std::path::{Path, PathBuf};

use copilot_fim::TokenCounter;

use crate::{index, ContextSettings, ContextSnippet, PromptBudget, Sources, Workspace};

/// The other source files of `me`'s folder, read from disk (the simulated open editor
/// tabs), those excluded left out.
fn siblings(me: &Path, excluded: &dyn Fn(&Path) -> bool) -> Vec<(PathBuf, String)> {
    let Some(dir) = me.parent() else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, String)> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p != me && !excluded(p) && p.is_file() && index::is_source(p))
        .filter_map(|p| {
            let text = index::read_source(&p, index::MAX_FILE_BYTES).ok()?.1;
            Some((p, text))
        })
        .collect();
    out.sort();
    out
}

/// Gathers context for tasks, opening each held-out file's siblings while its lines are
/// asked about.
pub struct Gatherer<'a> {
    pub ws: &'a Workspace,
    pub repo: &'a Path,
    pub budget: PromptBudget,
    open: Vec<PathBuf>,
    open_for: Option<PathBuf>,
}

impl<'a> Gatherer<'a> {
    pub fn new(ws: &'a Workspace, repo: &'a Path, budget: PromptBudget) -> Self {
        Self {
            ws,
            repo,
            budget,
            open: Vec::new(),
            open_for: None,
        }
    }

    fn open_siblings(&mut self, doc: &Path) {
        if self.open_for.as_deref() == Some(doc) {
            return;
        }
        for p in self.open.drain(..) {
            self.ws.did_close(&p);
        }
        for (p, text) in siblings(doc, &|p| self.ws.is_excluded(p)) {
            self.ws.did_open(&p, &text);
            self.open.push(p);
        }
        self.open_for = Some(doc.to_path_buf());
    }

    /// The snippets for a cursor in `doc` (whose text is `text`) with `sources`, chosen
    /// afresh (no memory of the previous request: each is its own document state).
    pub fn snippets(
        &mut self,
        doc: &Path,
        text: &str,
        cursor: usize,
        sources: Sources,
        settings: &ContextSettings,
        counter: &dyn TokenCounter,
    ) -> Vec<ContextSnippet> {
        if !sources.any() {
            return Vec::new();
        }
        if sources.open_files {
            self.open_siblings(doc);
        } else {
            // No tabs without the open-files source: an open file is left out of the
            // index's answers (its live text is the open source's), so siblings left open
            // by an earlier request would hide them from an index-only measure.
            self.finish();
        }
        self.ws.set_settings(settings.clone().with_sources(sources));
        self.ws.forget_choice(doc);
        self.ws.snippets(doc, text, cursor, self.budget, counter)
    }

    /// Close what was opened.
    pub fn finish(&mut self) {
        for p in self.open.drain(..) {
            self.ws.did_close(&p);
        }
        self.open_for = None;
    }
}
