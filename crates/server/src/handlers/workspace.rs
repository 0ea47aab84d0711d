//! What the workspace tells us besides documents: `didSave`, `workspace/didChangeWatchedFiles`
//! (registered dynamically where the client allows it) and
//! `workspace/didChangeWorkspaceFolders`. Each feeds the serving core's context (the index
//! follows the files) and adapter resolution (a repository's adapter file or git remote may
//! have changed).

use std::path::PathBuf;

use copilot_context::FileChange;
use tower_lsp_server::ls_types::{
    DidChangeWatchedFilesParams, DidChangeWatchedFilesRegistrationOptions,
    DidChangeWorkspaceFoldersParams, DidSaveTextDocumentParams, FileChangeType, FileSystemWatcher,
    GlobPattern, Registration,
};

use super::configuration;
use crate::scheduler::Scheduler;
use crate::session::file_path;

/// The files whose change re-resolves a workspace's adapter, relative to its root.
const ADAPTER_FILES: [&str; 2] = [copilot_service::adapters::REPO_ADAPTER_FILE, ".git/config"];

pub fn did_save(scheduler: &Scheduler, params: DidSaveTextDocumentParams) {
    if let Some(path) = file_path(params.text_document.uri.as_str()) {
        scheduler.session.feed.save(path.into());
    }
}

pub fn did_change_watched_files(scheduler: &Scheduler, params: DidChangeWatchedFilesParams) {
    let changes: Vec<(PathBuf, FileChange)> = params
        .changes
        .iter()
        .filter_map(|e| {
            let kind = match e.typ {
                FileChangeType::CREATED => FileChange::Created,
                FileChangeType::DELETED => FileChange::Deleted,
                _ => FileChange::Changed,
            };
            Some((PathBuf::from(file_path(e.uri.as_str())?), kind))
        })
        .collect();
    for (path, _) in &changes {
        let p = path.to_string_lossy();
        for f in ADAPTER_FILES {
            if let Some(root) = p.strip_suffix(f) {
                scheduler.service.adapters.invalidate(root);
            }
        }
    }
    let service = scheduler.service.clone();
    // Re-indexing reads the files: not on the runtime's threads.
    tokio::task::spawn_blocking(move || service.context.files_changed(&changes));
}

pub fn did_change_workspace_folders(
    scheduler: &Scheduler,
    params: DidChangeWorkspaceFoldersParams,
) {
    let session = &scheduler.session;
    let removed: Vec<String> = params
        .event
        .removed
        .iter()
        .filter_map(|f| file_path(f.uri.as_str()))
        .collect();
    let mut roots: Vec<String> = session
        .roots()
        .into_iter()
        .filter(|r| !removed.contains(r))
        .collect();
    for f in &params.event.added {
        if let Some(p) = file_path(f.uri.as_str()) {
            if !roots.contains(&p) {
                roots.push(p);
            }
        }
    }
    tracing::info!(?roots, "workspace folders changed");
    session.set_roots(roots);
    // Same settings, new folders: adapters and context follow.
    configuration::apply(scheduler, None, None);
}

/// Ask the client to tell us about file changes in the workspace (where it supports
/// registering for them).
pub async fn watch_files(scheduler: &Scheduler) {
    let options = DidChangeWatchedFilesRegistrationOptions {
        watchers: vec![FileSystemWatcher {
            glob_pattern: GlobPattern::String("**/*".into()),
            kind: None,
        }],
    };
    let registration = Registration {
        id: "copilot-lsp/watched-files".into(),
        method: "workspace/didChangeWatchedFiles".into(),
        register_options: serde_json::to_value(options).ok(),
    };
    if let Err(e) = scheduler
        .notifier
        .client()
        .register_capability(vec![registration])
        .await
    {
        tracing::debug!("the client refused to watch files: {e}");
    }
}
