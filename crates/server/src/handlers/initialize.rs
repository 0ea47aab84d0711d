//! `initialize`: negotiate the position encoding, read `initializationOptions`, advertise
//! capabilities, and start loading the model in the background. Answers at once.

use tower_lsp_server::jsonrpc::Result;
use tower_lsp_server::ls_types::{
    CompletionOptions, ExecuteCommandOptions, InitializeParams, InitializeResult, OneOf,
    ServerCapabilities, ServerInfo, TextDocumentSyncCapability, TextDocumentSyncKind,
    TextDocumentSyncOptions, TextDocumentSyncSaveOptions, WorkspaceFoldersServerCapabilities,
    WorkspaceServerCapabilities,
};

use super::configuration;
use crate::encoding::PositionEncoding;
use crate::scheduler::Scheduler;
use crate::session::file_path;

/// What `initialize` learnt about the client that later handlers need.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientTraits {
    pub pull_configuration: bool,
    /// The client lets us register for `workspace/didChangeWatchedFiles`.
    pub watch_files: bool,
}

pub fn handle(
    scheduler: &Scheduler,
    params: InitializeParams,
) -> Result<(InitializeResult, ClientTraits)> {
    let session = &scheduler.session;
    let caps = &params.capabilities;
    let encoding = PositionEncoding::negotiate(caps);
    session.set_encoding(encoding);

    #[allow(deprecated)] // root_uri: older clients send only this
    let mut roots: Vec<String> = params
        .workspace_folders
        .iter()
        .flatten()
        .filter_map(|f| file_path(f.uri.as_str()))
        .chain(params.root_uri.iter().filter_map(|u| file_path(u.as_str())))
        .collect();
    roots.dedup();
    session.set_roots(roots);

    let has_inline = caps
        .text_document
        .as_ref()
        .and_then(|t| t.inline_completion.as_ref())
        .is_some();
    scheduler.notifier.set_progress_supported(
        caps.window
            .as_ref()
            .and_then(|w| w.work_done_progress)
            .unwrap_or(false),
    );
    let traits = ClientTraits {
        pull_configuration: caps
            .workspace
            .as_ref()
            .and_then(|w| w.configuration)
            .unwrap_or(false),
        watch_files: caps
            .workspace
            .as_ref()
            .and_then(|w| w.did_change_watched_files.as_ref())
            .and_then(|d| d.dynamic_registration)
            .unwrap_or(false),
    };

    configuration::apply(scheduler, params.initialization_options.clone(), None);
    let settings = session.settings();
    let fallback = settings.completion_fallback.unwrap_or(!has_inline);
    tracing::info!(
        client = params
            .client_info
            .as_ref()
            .map(|c| c.name.as_str())
            .unwrap_or("?"),
        encoding = encoding.as_str(),
        inline = has_inline,
        completion_fallback = fallback,
        "initialize"
    );

    let capabilities = ServerCapabilities {
        position_encoding: Some(encoding.kind()),
        text_document_sync: Some(TextDocumentSyncCapability::Options(
            TextDocumentSyncOptions {
                open_close: Some(true),
                change: Some(TextDocumentSyncKind::INCREMENTAL),
                save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                ..TextDocumentSyncOptions::default()
            },
        )),
        inline_completion_provider: Some(OneOf::Left(true)),
        // Run by clients after an accept (Neovim 0.12 warns about a command not listed).
        execute_command_provider: Some(ExecuteCommandOptions {
            commands: vec![super::outcome::ACCEPTED.to_string()],
            ..ExecuteCommandOptions::default()
        }),
        completion_provider: fallback.then(|| CompletionOptions {
            trigger_characters: Some([".", "(", " "].map(String::from).to_vec()),
            resolve_provider: Some(false),
            ..CompletionOptions::default()
        }),
        workspace: Some(WorkspaceServerCapabilities {
            workspace_folders: Some(WorkspaceFoldersServerCapabilities {
                supported: Some(true),
                change_notifications: Some(OneOf::Left(true)),
            }),
            file_operations: None,
        }),
        ..ServerCapabilities::default()
    };
    session.set_initialized();
    Ok((
        InitializeResult {
            capabilities,
            server_info: Some(ServerInfo {
                name: "copilot-lsp".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
            offset_encoding: None,
        },
        traits,
    ))
}
