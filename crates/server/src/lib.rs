//! The language server: the only crate that knows LSP and JSON.
//!
//! Code map (one line each; see ARCHITECTURE.md for the invariants):
//! - `framing`, `input`: cut the client's bytes into messages (resynchronising after a bad
//!   frame) and make each one the framework can decode, so bad input gets an error, not an exit.
//! - `gate`: sees every message in arrival order; applies document edits, stamps requests,
//!   bounds the requests in flight.
//! - `limits`: every bound on what a client can make the server hold or do.
//! - `server`, `handlers/*`: the `LanguageServer` impl and one file per method.
//! - `scheduler`: a request's document and position handed to the serving core
//!   (`copilot-service`: supersede, debounce, the model, stale answers dropped).
//! - `session`, `document`, `encoding`: open documents in ropes, LSP positions.
//! - `context_feed`: document events for the context gatherers, coalesced off the gate.
//! - `settings`: `initializationOptions`/`didChangeConfiguration` parsed, then validated.
//! - `notify`: the core's notices and load progress as `window/showMessage`, `$/progress`.
//! - `fuzzing`: entry points of the fuzz targets (`fuzz/`) and of their corpus replay.

pub mod context_feed;
pub mod document;
pub mod encoding;
pub mod framing;
pub mod fuzzing;
pub mod gate;
pub mod handlers;
pub mod input;
pub mod limits;
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
    /// Where the event log goes (`copilot-lsp`'s data directory); None:
    /// `$XDG_DATA_HOME/copilot-lsp`, else `~/.local/share/copilot-lsp`.
    pub data_dir: Option<std::path::PathBuf>,
}

/// How many messages the framework polls at once. tower-lsp-server stops *reading* when this
/// many handler futures are pending (its `buffer_unordered`), and its `$/cancelRequest` runs
/// only when polled: so it is set far above what the gate lets in flight
/// ([`limits::MAX_IN_FLIGHT`]), and a cancellation or a cheap request never queues behind
/// requests waiting for the model.
const CONCURRENCY: usize = 16 * limits::MAX_IN_FLIGHT;
/// After the input closes, how long cancelled requests get to be answered before the server
/// stops anyway.
const DRAIN_ON_CLOSE: Duration = Duration::from_millis(500);

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
    O: AsyncWrite + Unpin + Send + 'static,
{
    let defaults = Settings::from_cli(&opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let data_dir = opts
        .data_dir
        .clone()
        .or_else(copilot_events::paths::data_dir);
    let (core, notices) = copilot_service::Service::with_events(
        loader,
        data_dir,
        copilot_service::outcomes::Timing::default(),
    );
    let session = session::Session::new(opts, defaults, core);
    let texts: Arc<dyn copilot_service::DocumentTexts> = session.clone();
    session.service.outcomes.set_texts(Arc::downgrade(&texts));
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
            .custom_method("copilot/debugEvents", server::CopilotLsp::debug_events)
            .custom_method(
                "textDocument/didShowCompletion",
                server::CopilotLsp::did_show_completion,
            )
            .custom_method(
                "textDocument/didPartiallyAcceptCompletion",
                server::CopilotLsp::did_partially_accept_completion,
            )
            .custom_method("textDocument/didFocus", server::CopilotLsp::did_focus)
            .custom_method(input::MALFORMED, server::CopilotLsp::malformed)
            .finish();
    let service = gate::Gate::new(service, session.clone());
    let ids = Arc::default();
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    let (output, writer) = input::restore_ids(output, Arc::clone(&ids));
    let server =
        tower_lsp_server::Server::new(input::sanitize(input, ids, closed_tx), output, socket)
            .concurrency_level(CONCURRENCY)
            .serve(service);
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => {}
        Ok(()) = closed => {
            // The editor went away: whatever is running is for nobody. Cancel it (the model
            // stops within a token) and give the answers a moment to drain.
            session.service.tasks.cancel_all();
            if tokio::time::timeout(DRAIN_ON_CLOSE, &mut server).await.is_err() {
                tracing::info!("requests still running after the input closed: stopping anyway");
            }
        }
    }
    session.service.tasks.cancel_all();
    // What the event log was sent reaches the disk before the process exits.
    let outcomes = session.service.outcomes.clone();
    let _ = tokio::task::spawn_blocking(move || outcomes.log().flush(Duration::from_secs(2))).await;
    // The framework's output ends with it; let the last frames reach the client.
    let _ = tokio::time::timeout(DRAIN_ON_CLOSE, writer).await;
    let code = session.exit_code();
    tracing::info!(code, "server stopped");
    Ok(code)
}
