//! Shared helpers of the engine's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `$COPILOT_LSP_SHARED` (set by `.ci/run` when `../shared` exists): real checkpoints and
/// reference fixtures. Tests that need it say so on stderr and return when it is unset.
pub fn shared_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("COPILOT_LSP_SHARED") {
        Some(p) if PathBuf::from(&p).is_dir() => Some(PathBuf::from(p)),
        _ => {
            eprintln!("SKIPPED {test}: COPILOT_LSP_SHARED is not set (needs the shared fixtures)");
            None
        }
    }
}
