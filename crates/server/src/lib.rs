//! The language server: the only crate that knows LSP and JSON.
//!
//! NOTE: interface stub; the server helper fills it in.

/// Defaults given on the command line (`copilot-lsp --stdio --model X ...`); the client's
/// `initializationOptions` and `didChangeConfiguration` override them.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    pub model: Option<String>,
    pub revision: Option<String>,
    pub offline: bool,
    pub device: Option<String>,
    pub dtype: Option<String>,
    pub threads: Option<usize>,
}

/// Serve LSP over stdin/stdout until `exit`. Returns the process exit code: 0 after
/// `shutdown` then `exit`, 1 for `exit` without `shutdown` or a closed stdin.
pub fn run_stdio(_opts: ServeOptions) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
