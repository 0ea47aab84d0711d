//! The crate's one error type. Messages name the file, tensor or option that is wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid adapter {path}: {message}")]
    Adapter { path: PathBuf, message: String },
    #[error("invalid option: {0}")]
    Options(String),
    #[error("no training data: {0}")]
    NoData(String),
    #[error(transparent)]
    Engine(#[from] copilot_engine::EngineError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = FinetuneError> = std::result::Result<T, E>;

/// Map an I/O error to one that names the path.
pub(crate) fn io_err(path: &std::path::Path) -> impl Fn(std::io::Error) -> FinetuneError + '_ {
    move |e| FinetuneError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
