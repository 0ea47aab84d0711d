//! The engine's one error type. Messages are written for the user: they name the file, the
//! tensor or the setting that is wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid model config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("model not found: {0}")]
    NotFound(String),
    #[error("hub: {0}")]
    Hub(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("context of {len} tokens exceeds the model's window of {window} positions")]
    ContextTooLong { len: usize, window: usize },
    #[error("device: {0}")]
    Device(String),
    #[error("the model thread has stopped")]
    WorkerGone,
    #[error("model worker panicked: {0}")]
    Panicked(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
