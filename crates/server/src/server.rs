//! The `LanguageServer` implementation: a thin dispatch to `handlers/`, plus the custom
//! methods registered in `lib.rs`.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tower_lsp_server::jsonrpc::{Error, ErrorCode, Result};
use tower_lsp_server::ls_types::{
    CompletionParams, CompletionResponse, DidChangeConfigurationParams,
    DidChangeTextDocumentParams, DidChangeWatchedFilesParams, DidChangeWorkspaceFoldersParams,
    DidCloseTextDocumentParams, DidOpenTextDocumentParams, DidSaveTextDocumentParams,
    ExecuteCommandParams, InitializeParams, InitializeResult, InitializedParams,
    InlineCompletionParams, InlineCompletionResponse,
};
use tower_lsp_server::{Client, LanguageServer};

use crate::handlers::initialize::ClientTraits;
use crate::handlers::{self, configuration, Stamped};
use crate::input::Malformed;
use crate::notify::Notifier;
use crate::scheduler::Scheduler;
use crate::session::Session;

#[derive(Debug)]
pub struct CopilotLsp {
    scheduler: Scheduler,
    traits: Mutex<ClientTraits>,
}

impl CopilotLsp {
    pub fn new(
        client: Client,
        session: Arc<Session>,
        notices: tokio::sync::mpsc::UnboundedReceiver<copilot_service::Notice>,
    ) -> Self {
        let notifier = Arc::new(Notifier::new(client));
        tokio::spawn(notifier.clone().show_notices(notices));
        Self {
            scheduler: Scheduler {
                service: session.service.clone(),
                session,
                notifier,
            },
            traits: Mutex::default(),
        }
    }

    fn traits(&self) -> ClientTraits {
        *self.traits.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn inline_completion(
        &self,
        params: Stamped<InlineCompletionParams>,
    ) -> Result<Option<InlineCompletionResponse>> {
        handlers::inline_completion::handle(&self.scheduler, params).await
    }

    /// `textDocument/completion`, re-routed by the gate with its arrival stamp.
    pub async fn completion_stamped(
        &self,
        params: Stamped<CompletionParams>,
    ) -> Result<Option<CompletionResponse>> {
        handlers::completion::handle(&self.scheduler, params).await
    }

    pub async fn debug_document(&self, params: handlers::debug::DocumentParams) -> Result<Value> {
        handlers::debug::document(&self.scheduler, params).await
    }

    pub async fn debug_context(
        &self,
        params: tower_lsp_server::ls_types::TextDocumentPositionParams,
    ) -> Result<Value> {
        handlers::debug::context(&self.scheduler, params).await
    }

    /// Copilot's `textDocument/didFocus {textDocument: {uri}}`: the user switched to this
    /// document.
    pub async fn did_focus(&self, params: handlers::text_document::DocumentFocus) {
        handlers::text_document::warm_opened(&self.scheduler, params.text_document.uri);
    }

    pub async fn debug_stats(&self) -> Result<Value> {
        handlers::debug::stats(&self.scheduler).await
    }

    pub async fn debug_events(&self) -> Result<Value> {
        handlers::debug::events(&self.scheduler).await
    }

    /// Copilot's `textDocument/didShowCompletion`.
    pub async fn did_show_completion(&self, params: Value) {
        handlers::outcome::did_show(&self.scheduler, params).await;
    }

    /// Copilot's `textDocument/didPartiallyAcceptCompletion`.
    pub async fn did_partially_accept_completion(&self, params: Value) {
        handlers::outcome::did_partially_accept(&self.scheduler, params).await;
    }

    /// A frame the input sanitizer could not pass on (see `input.rs`): answer its error.
    pub async fn malformed(&self, p: Malformed) -> Result<()> {
        Err(Error {
            code: ErrorCode::from(p.code),
            message: p.message.into(),
            data: None,
        })
    }
}

impl LanguageServer for CopilotLsp {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        let (result, traits) = handlers::initialize::handle(&self.scheduler, params)?;
        *self.traits.lock().unwrap_or_else(|e| e.into_inner()) = traits;
        Ok(result)
    }

    async fn initialized(&self, _: InitializedParams) {
        self.scheduler.notifier.mark_initialized();
        if self.traits().watch_files {
            let scheduler = self.scheduler.clone();
            tokio::spawn(async move { handlers::workspace::watch_files(&scheduler).await });
        }
        if self.traits().pull_configuration {
            let scheduler = self.scheduler.clone();
            tokio::spawn(async move {
                if let Some(v) = configuration::pull(&scheduler).await {
                    configuration::apply(&scheduler, None, Some(v));
                }
            });
        }
    }

    async fn shutdown(&self) -> Result<()> {
        // The gate has already marked the session shut down and cancelled every task.
        self.scheduler.session.set_shutdown();
        Ok(())
    }

    // Document notifications are applied in arrival order by the gate (`gate.rs`); by the
    // time the framework runs these, there is nothing left to do.
    // ...except warming the model for the document (in the background).
    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        handlers::text_document::warm_opened(&self.scheduler, params.text_document.uri);
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        handlers::text_document::warm_after_paste(&self.scheduler, &params);
    }

    async fn did_close(&self, _: DidCloseTextDocumentParams) {}

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        handlers::workspace::did_save(&self.scheduler, params);
    }

    async fn did_change_watched_files(&self, params: DidChangeWatchedFilesParams) {
        handlers::workspace::did_change_watched_files(&self.scheduler, params);
    }

    async fn did_change_workspace_folders(&self, params: DidChangeWorkspaceFoldersParams) {
        handlers::workspace::did_change_workspace_folders(&self.scheduler, params);
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        let pull = self.traits().pull_configuration;
        configuration::did_change(&self.scheduler, pull, params).await;
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<Value>> {
        handlers::outcome::execute_command(&self.scheduler, params).await
    }
}
