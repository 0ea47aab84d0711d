//! The local event log of the data flywheel: what became of each suggestion (shown,
//! accepted whole or in part, typed through, rejected, still there 30 s and 2 min after the
//! accept), one JSON line per event, a file per workspace folder under the user's data
//! directory. Nothing leaves the machine.
//!
//! Code map:
//! - `record`: the line format ([`Event`]) and the retention measure.
//! - `paths`: the data directory (`$XDG_DATA_HOME/copilot-lsp`) and a workspace's file names.
//! - `log`: the writer thread (off the request path), `0600` files, rotation, degrading to
//!   no logging with one message.
//! - `read`: reading a workspace's log back (corrupt lines counted, skipped) and joining its
//!   lines per suggestion.
//! - `stats`: the figures of `copilot-lsp stats`.
//!
//! Knows files and JSON lines; knows nothing of LSP, models or editors. The serving core
//! decides what happened (`copilot-service`'s `outcomes`); this crate only keeps it.

pub mod log;
pub mod paths;
pub mod read;
pub mod record;
pub mod stats;

use std::path::{Path, PathBuf};

pub use log::Log;
pub use read::{fold, read_workspace, Read, Suggestion};
pub use record::{
    Accepted, Context, Event, How, RejectReason, Rejected, Retained, Retention, Shown, Trigger,
    What,
};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl EventsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Delete the log of the workspace folder `root` (current and rotated files). Returns the
/// files removed.
pub fn clear_workspace(data_dir: &Path, root: &Path) -> Result<Vec<PathBuf>, EventsError> {
    let canonical = paths::canonical_root(root);
    remove(&[
        paths::current_file(data_dir, &canonical),
        paths::rotated_file(data_dir, &canonical),
    ])
}

/// Delete every workspace's log under `data_dir`.
pub fn clear_all(data_dir: &Path) -> Result<Vec<PathBuf>, EventsError> {
    let files = paths::all_files(data_dir).map_err(|e| EventsError::io(data_dir, e))?;
    remove(&files)
}

fn remove(files: &[PathBuf]) -> Result<Vec<PathBuf>, EventsError> {
    let mut removed = Vec::new();
    for f in files {
        match std::fs::remove_file(f) {
            Ok(()) => removed.push(f.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EventsError::io(f, e)),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_removes_one_workspace_or_all() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let log = Log::new(Some(data.clone()), |m| panic!("{m}"));
        for root in [&a, &b] {
            log.write(
                root,
                Event::now(
                    "x",
                    What::Rejected(Rejected {
                        reason: RejectReason::Timeout,
                    }),
                ),
            );
        }
        assert!(log.flush(std::time::Duration::from_secs(10)));
        assert_eq!(read_workspace(&data, &a).unwrap().events.len(), 1);
        let removed = clear_workspace(&data, &a).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(read_workspace(&data, &a).unwrap().events.is_empty());
        assert_eq!(read_workspace(&data, &b).unwrap().events.len(), 1);
        assert_eq!(clear_all(&data).unwrap().len(), 1);
        assert!(paths::all_files(&data).unwrap().is_empty());
        assert!(clear_all(&tmp.path().join("nothing")).unwrap().is_empty());
    }
}
