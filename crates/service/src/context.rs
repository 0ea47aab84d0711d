//! Context from the rest of the workspace, per workspace folder: a `copilot_context::Workspace`
//! for each root the front-end names, fed the documents' open/change/save/close events and the
//! watched files, indexed in the background (progress leaves as an [`IndexReport`] for the
//! front-end to render), and asked for snippets at each completion.
//!
//! A document's workspace is the front-end's folder that holds it, else its nearest git root,
//! else its directory (a folder that is not a git root gets open files and imports but no
//! index: a stray file in the home directory must not index the home directory). A
//! document's context never comes from another folder's workspace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use copilot_context::{
    ContextSettings, ContextSnippet, FileChange, IndexProgress, PromptBudget, Workspace,
};
use copilot_fim::TokenCounter;
use copilot_pipeline::LanguageModel;
use tokio::sync::{mpsc, oneshot};

/// Workspaces created for files outside every folder, at most (the oldest are dropped).
const STRAY_WORKSPACES: usize = 16;

/// One workspace's index build, for the front-end that shows progress.
#[derive(Debug)]
pub struct IndexReport {
    /// The workspace's root.
    pub root: PathBuf,
    /// `(done, total)` as the walk goes (total is a running count while walking).
    pub progress: mpsc::UnboundedReceiver<(usize, usize)>,
    /// How it ended: a summary, or why not.
    pub done: oneshot::Receiver<Result<String, String>>,
}

struct Entry {
    ws: Arc<Workspace>,
    /// Set to stop its index build (the folder was removed, or the settings turned it off).
    cancel: Arc<AtomicBool>,
    indexed: bool,
}

/// Every workspace's context.
#[derive(Default)]
pub struct Contexts {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    settings: Option<ContextSettings>,
    /// The front-end's folders.
    folders: HashMap<PathBuf, Entry>,
    /// Workspaces of files outside every folder, oldest first.
    strays: Vec<(PathBuf, Arc<Workspace>)>,
}

impl std::fmt::Debug for Contexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Contexts")
            .field("folders", &inner.folders.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Counts tokens through the model, for the context budget.
struct ModelCounter(Arc<dyn LanguageModel>);

impl TokenCounter for ModelCounter {
    fn count(&self, text: &str) -> usize {
        self.0.count_tokens(text)
    }
}

impl Contexts {
    /// The folders and settings in force: new folders get a workspace (and, with the index
    /// on, an index build whose progress is returned); removed ones are dropped and their
    /// builds stopped. Needs a tokio runtime (builds run on blocking threads).
    pub fn configure(&self, roots: &[String], settings: &ContextSettings) -> Vec<IndexReport> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let changed = inner.settings.as_ref() != Some(settings);
        inner.settings = Some(settings.clone());
        let wanted: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
        inner.folders.retain(|root, e| {
            let keep = wanted.contains(root);
            if !keep {
                e.cancel.store(true, Ordering::SeqCst);
            }
            keep
        });
        for root in &wanted {
            inner.folders.entry(root.clone()).or_insert_with(|| Entry {
                ws: Arc::new(Workspace::new(root.clone(), settings.clone())),
                cancel: Arc::default(),
                indexed: false,
            });
        }
        if changed {
            for e in inner.folders.values() {
                e.ws.set_settings(settings.clone());
            }
            for (_, ws) in &inner.strays {
                ws.set_settings(settings.clone());
            }
        }
        let mut reports = Vec::new();
        for e in inner.folders.values_mut() {
            if !settings.index {
                e.cancel.store(true, Ordering::SeqCst);
                e.indexed = false;
                continue;
            }
            // A folder that is not there (yet) has nothing to index.
            if (!e.indexed || changed) && e.ws.root().is_dir() {
                e.cancel.store(true, Ordering::SeqCst);
                e.cancel = Arc::default();
                e.indexed = true;
                reports.push(spawn_build(e.ws.clone(), e.cancel.clone()));
            }
        }
        reports
    }

    /// The workspace a file belongs to (see the module's doc).
    pub fn workspace_for(&self, file: &Path) -> Option<Arc<Workspace>> {
        {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            let settings = inner.settings.clone()?;
            if let Some(e) = inner
                .folders
                .iter()
                .filter(|(root, _)| file.starts_with(root))
                .max_by_key(|(root, _)| root.as_os_str().len())
                .map(|(_, e)| e)
            {
                return Some(e.ws.clone());
            }
            let root = copilot_context::workspace_root_for(file);
            if let Some((_, ws)) = inner.strays.iter().find(|(r, _)| *r == root) {
                return Some(ws.clone());
            }
            drop(inner);
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            if let Some((_, ws)) = inner.strays.iter().find(|(r, _)| *r == root) {
                return Some(ws.clone());
            }
            let git = root.join(".git").exists();
            let mut s = settings;
            s.index &= git;
            let ws = Arc::new(Workspace::new(root.clone(), s.clone()));
            if inner.strays.len() >= STRAY_WORKSPACES {
                inner.strays.remove(0);
            }
            inner.strays.push((root, ws.clone()));
            if s.index && tokio::runtime::Handle::try_current().is_ok() {
                // Nobody shows this one's progress: it is logged.
                let report = spawn_build(ws.clone(), Arc::default());
                tokio::spawn(async move {
                    if let Ok(Err(e)) = report.done.await {
                        tracing::warn!("indexing {} failed: {e}", report.root.display());
                    }
                });
            }
            Some(ws)
        }
    }

    pub fn did_open(&self, file: &Path, text: &str) {
        if let Some(ws) = self.workspace_for(file) {
            ws.did_open(file, text);
        }
    }

    /// A document's new text, and the (0-based) line of the edit when known.
    pub fn did_change(&self, file: &Path, text: &str, edited_line: Option<usize>) {
        if let Some(ws) = self.workspace_for(file) {
            ws.did_change(file, text, edited_line);
        }
    }

    pub fn did_save(&self, file: &Path) {
        if let Some(ws) = self.workspace_for(file) {
            ws.did_save(file);
        }
    }

    pub fn did_close(&self, file: &Path) {
        if let Some(ws) = self.workspace_for(file) {
            ws.did_close(file);
        }
    }

    /// Files changed on disk (re-indexed or forgotten in the workspaces holding them).
    pub fn files_changed(&self, changes: &[(PathBuf, FileChange)]) {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let all = inner
            .folders
            .values()
            .map(|e| &e.ws)
            .chain(inner.strays.iter().map(|(_, ws)| ws));
        for ws in all {
            let mine: Vec<_> = changes
                .iter()
                .filter(|(p, _)| ws.contains(p))
                .cloned()
                .collect();
            if !mine.is_empty() {
                ws.files_changed(&mine);
            }
        }
    }

    /// Snippets for a cursor in `file`, most relevant first, within the settings' budget.
    /// Runs the gatherers on a blocking thread (they may read files the first time).
    pub async fn snippets(
        &self,
        file: &Path,
        text: &str,
        cursor: usize,
        budget: PromptBudget,
        model: Arc<dyn LanguageModel>,
    ) -> Vec<ContextSnippet> {
        let Some(ws) = self.workspace_for(file) else {
            return Vec::new();
        };
        let (file, text) = (file.to_path_buf(), text.to_string());
        let started = std::time::Instant::now();
        let gathered = tokio::task::spawn_blocking(move || {
            let got = ws.snippets(&file, &text, cursor, budget, &ModelCounter(model));
            (got, ws.display_path(&file))
        })
        .await;
        match gathered {
            Ok((got, doc)) => {
                tracing::debug!(
                    doc,
                    ms = started.elapsed().as_secs_f64() * 1000.0,
                    snippets = ?got
                        .iter()
                        .map(|s| format!("{:?} {} ({} tokens)", s.source, s.path, s.tokens))
                        .collect::<Vec<_>>(),
                    "context"
                );
                got
            }
            Err(e) => {
                tracing::warn!("gathering context failed: {e}");
                Vec::new()
            }
        }
    }
}

/// Build `ws`'s index on a blocking thread.
fn spawn_build(ws: Arc<Workspace>, cancel: Arc<AtomicBool>) -> IndexReport {
    let (ptx, prx) = mpsc::unbounded_channel();
    let (dtx, drx) = oneshot::channel();
    let root = ws.root().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let progress = |p: IndexProgress| {
            let _ = ptx.send((p.done, p.total));
        };
        let outcome = ws
            .build_index(&progress, &cancel)
            .map(|s| {
                format!(
                    "{} files, {} chunks in {:.1} s{}",
                    s.files,
                    s.chunks,
                    started.elapsed().as_secs_f64(),
                    if s.capped {
                        " (stopped at maxIndexFiles)"
                    } else {
                        ""
                    }
                )
            })
            .map_err(|e| e.to_string());
        let _ = dtx.send(outcome);
    });
    IndexReport {
        root,
        progress: prx,
        done: drx,
    }
}
