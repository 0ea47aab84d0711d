//! Messages to the user: `window/showMessage`, `window/logMessage` and work-done `$/progress`.
//!
//! Nothing may reach the client before `initialized` (the framework drops it), so everything
//! here first waits for that; the serving core sends each kind of problem once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::sync::Arc;

use copilot_pipeline::LoadEvent;
use copilot_service::{IndexReport, Level, LoadReport, Notice};
use tokio::sync::{mpsc, watch};
use tower_lsp_server::ls_types::notification::Progress;
use tower_lsp_server::ls_types::{
    MessageType, NumberOrString, ProgressParams, ProgressParamsValue, ProgressToken,
    WorkDoneProgress, WorkDoneProgressBegin, WorkDoneProgressEnd, WorkDoneProgressReport,
};
use tower_lsp_server::Client;

/// `message` without the lines of a captured backtrace (candle appends one to its errors when
/// `RUST_BACKTRACE` is set): an editor's message box is no place for 40 stack frames.
pub fn without_backtrace(message: &str) -> String {
    let frame = |l: &str| {
        let t = l.trim_start();
        let numbered = t
            .split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        (numbered && l.starts_with(' ')) || (t.starts_with("at ") && l.starts_with("   "))
    };
    let mut out: Vec<&str> = Vec::new();
    for line in message.lines() {
        if frame(line) || line.trim() == "stack backtrace:" {
            continue;
        }
        out.push(line);
    }
    let joined = out.join("\n");
    match joined.trim_end() {
        t if t.len() == joined.len() => joined,
        t => t.to_string(),
    }
}

#[derive(Debug)]
pub struct Notifier {
    client: Client,
    initialized: watch::Sender<bool>,
    progress_supported: AtomicBool,
    next_token: AtomicU64,
}

impl Notifier {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            initialized: watch::Sender::new(false),
            progress_supported: AtomicBool::new(false),
            next_token: AtomicU64::new(1),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn set_progress_supported(&self, yes: bool) {
        self.progress_supported.store(yes, Ordering::SeqCst);
    }

    /// The client sent `initialized`: messages may flow.
    pub fn mark_initialized(&self) {
        self.initialized.send_replace(true);
    }

    pub async fn wait_initialized(&self) {
        let mut rx = self.initialized.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    pub async fn show(&self, typ: MessageType, message: String) {
        let message = without_backtrace(&message);
        match typ {
            MessageType::ERROR => tracing::error!("{message}"),
            MessageType::WARNING => tracing::warn!("{message}"),
            _ => tracing::info!("{message}"),
        }
        self.wait_initialized().await;
        self.client.show_message(typ, message).await;
    }

    /// Show the serving core's notices (each kind comes once) until the core goes away.
    pub async fn show_notices(self: Arc<Self>, mut notices: mpsc::UnboundedReceiver<Notice>) {
        while let Some(n) = notices.recv().await {
            let typ = match n.level {
                Level::Error => MessageType::ERROR,
                Level::Warning => MessageType::WARNING,
                Level::Info => MessageType::INFO,
            };
            // Logged by the core already: only the client is told here.
            self.wait_initialized().await;
            self.client
                .show_message(typ, without_backtrace(&n.message))
                .await;
        }
    }

    pub async fn log(&self, typ: MessageType, message: String) {
        tracing::info!("{message}");
        self.wait_initialized().await;
        self.client.log_message(typ, message).await;
    }

    /// Report a model load as work-done progress: begin, one report per event, end with the
    /// outcome from `done`. Shows a load failure once with `window/showMessage`.
    pub async fn report_load(&self, report: LoadReport) {
        let LoadReport {
            model,
            mut events,
            done,
        } = report;
        self.wait_initialized().await;
        let token = self.progress_token("load").await;
        let send = |value: WorkDoneProgress| {
            let token = token.clone();
            async move {
                if let Some(token) = token {
                    self.progress(token, value).await;
                }
            }
        };
        send(WorkDoneProgress::Begin(WorkDoneProgressBegin {
            title: "copilot-lsp".into(),
            cancellable: Some(false),
            message: Some(format!("loading {model}")),
            percentage: None,
        }))
        .await;
        while let Some(ev) = events.recv().await {
            let message = match ev {
                LoadEvent::Downloading { file } => format!("downloading {file}"),
                LoadEvent::Loading { what } => format!("loading {what}"),
                LoadEvent::Ready { description } => format!("ready: {description}"),
            };
            tracing::info!("model: {message}");
            send(WorkDoneProgress::Report(WorkDoneProgressReport {
                message: Some(message),
                ..WorkDoneProgressReport::default()
            }))
            .await;
        }
        let outcome = done
            .await
            .unwrap_or_else(|_| Err("the model loader stopped".into()));
        let message = match &outcome {
            Ok(desc) => format!("model ready: {desc}"),
            Err(e) => format!("model failed to load: {e}"),
        };
        send(WorkDoneProgress::End(WorkDoneProgressEnd {
            message: Some(message.clone()),
        }))
        .await;
        match outcome {
            Ok(_) => self.log(MessageType::INFO, message).await,
            Err(e) => {
                self.show(
                    MessageType::ERROR,
                    format!(
                        "copilot-lsp: cannot load model `{model}`: {e}. Completions are off \
                         until the settings change."
                    ),
                )
                .await
            }
        }
    }

    /// Report a workspace's index build as work-done progress (begin, a report every few
    /// hundred files, end with the summary); a failure is logged, never shown: completions
    /// go on without the index.
    pub async fn report_index(&self, report: IndexReport) {
        let IndexReport {
            root,
            mut progress,
            done,
        } = report;
        self.wait_initialized().await;
        let token = self.progress_token("index").await;
        let send = |value: WorkDoneProgress| {
            let token = token.clone();
            async move {
                if let Some(token) = token {
                    self.progress(token, value).await;
                }
            }
        };
        let name = root.file_name().map_or_else(
            || root.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        send(WorkDoneProgress::Begin(WorkDoneProgressBegin {
            title: "copilot-lsp".into(),
            cancellable: Some(false),
            message: Some(format!("indexing {name}")),
            percentage: None,
        }))
        .await;
        let mut last = 0;
        while let Some((files, _)) = progress.recv().await {
            if files >= last + 250 {
                last = files;
                send(WorkDoneProgress::Report(WorkDoneProgressReport {
                    message: Some(format!("indexing {name}: {files} files")),
                    ..WorkDoneProgressReport::default()
                }))
                .await;
            }
        }
        let outcome = done
            .await
            .unwrap_or_else(|_| Err("the index build stopped".into()));
        let message = match &outcome {
            Ok(summary) => format!("indexed {name}: {summary}"),
            Err(e) => format!("not indexed {name}: {e}"),
        };
        tracing::info!("{message}");
        send(WorkDoneProgress::End(WorkDoneProgressEnd {
            message: Some(message),
        }))
        .await;
    }

    /// A fresh progress token, if the client takes them.
    async fn progress_token(&self, what: &str) -> Option<ProgressToken> {
        if !self.progress_supported.load(Ordering::SeqCst) {
            return None;
        }
        let n = self.next_token.fetch_add(1, Ordering::SeqCst);
        let token = NumberOrString::String(format!("copilot-lsp/{what}/{n}"));
        match self.client.create_work_done_progress(token.clone()).await {
            Ok(()) => Some(token),
            Err(e) => {
                tracing::debug!("client refused a progress token: {e}");
                None
            }
        }
    }

    async fn progress(&self, token: ProgressToken, value: WorkDoneProgress) {
        self.client
            .send_notification::<Progress>(ProgressParams {
                token,
                value: ProgressParamsValue::WorkDone(value),
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtraces_are_cut_from_messages() {
        let candle = "copilot-lsp: cannot load model `m`: header too large\n   0: candle_core::error::Error::bt\n             at /src/error.rs:260:25\n  12: std::rt::lang_start\n. Completions are off until the settings change.";
        assert_eq!(
            without_backtrace(candle),
            "copilot-lsp: cannot load model `m`: header too large\n. Completions are off until the settings change."
        );
        let plain = "copilot-lsp settings: invalid value for `topP`: 7\nsecond line: fine";
        assert_eq!(without_backtrace(plain), plain);
    }
}
