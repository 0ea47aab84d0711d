//! The language server: the only crate that knows LSP and JSON.
//!
//! Code map (one line each; see ARCHITECTURE.md for the invariants):
//! - `input`: re-frames the client's bytes so a malformed message gets an error, not an exit.
//! - `gate`: sees every message in arrival order; applies document edits, stamps requests.
//! - `server`, `handlers/*`: the `LanguageServer` impl and one file per method.
//! - `scheduler`: a request's document and position handed to the serving core
//!   (`copilot-service`: supersede, debounce, the model, stale answers dropped).
//! - `session`, `document`, `encoding`: open documents in ropes, LSP positions.
//! - `context_feed`: document events for the context gatherers, coalesced off the gate.
//! - `settings`: `initializationOptions`/`didChangeConfiguration` parsed, then validated.
//! - `notify`: the core's notices and load progress as `window/showMessage`, `$/progress`.

pub mod context_feed;
pub mod document;
pub mod encoding;
pub mod gate;
pub mod handlers;
pub mod input;
pub mod notify;
pub mod scheduler;
pub mod server;
pub mod session;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tower_lsp_server::LspService;

pub use copilot_service::{EngineLoader, EngineSpec, Loader};
pub use settings::{Options, Settings};

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

/// How many requests the framework runs at once. Above the default (4) so that requests
/// waiting on the model never starve `$/cancelRequest` and edits of a slot.
const CONCURRENCY: usize = 64;

/// Serve LSP over stdin/stdout until `exit`. Returns the process exit code: 0 after
/// `shutdown` then `exit`, 1 for `exit` without `shutdown` or a closed stdin.
pub fn run_stdio(opts: ServeOptions) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("copilot-lsp-io")
        .enable_all()
        .build()?;
    let code = rt.block_on(serve(
        tokio::io::stdin(),
        tokio::io::stdout(),
        opts,
        Arc::new(EngineLoader),
    ));
    // A blocking read of stdin (or a model still loading) must not hold the process up.
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}

/// Serve LSP on any byte streams with any model loader (tests use in-memory pipes and a
/// scripted loader). Returns the exit code as [`run_stdio`] does.
pub async fn serve<I, O>(
    input: I,
    output: O,
    opts: ServeOptions,
    loader: Arc<dyn Loader>,
) -> anyhow::Result<i32>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite,
{
    let defaults = Settings::from_cli(&opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (core, notices) = copilot_service::Service::new(loader);
    let session = session::Session::new(opts, defaults, core);
    tokio::spawn(session.feed.clone().run(Arc::downgrade(&session.service)));
    let (service, socket) =
        LspService::build(|client| server::CopilotLsp::new(client, session.clone(), notices))
            .custom_method(
                "textDocument/inlineCompletion",
                server::CopilotLsp::inline_completion,
            )
            .custom_method(
                gate::STAMPED_COMPLETION,
                server::CopilotLsp::completion_stamped,
            )
            .custom_method("copilot/debugDocument", server::CopilotLsp::debug_document)
            .custom_method("copilot/debugStats", server::CopilotLsp::debug_stats)
            .custom_method("copilot/debugContext", server::CopilotLsp::debug_context)
            .custom_method("textDocument/didFocus", server::CopilotLsp::did_focus)
            .custom_method(input::MALFORMED, server::CopilotLsp::malformed)
            .finish();
    let service = gate::Gate::new(service, session.clone());
    tower_lsp_server::Server::new(input::sanitize(input), output, socket)
        .concurrency_level(CONCURRENCY)
        .serve(service)
        .await;
    session.service.tasks.cancel_all();
    let code = session.exit_code();
    tracing::info!(code, "server stopped");
    Ok(code)
}
