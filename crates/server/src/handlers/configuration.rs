//! `workspace/didChangeConfiguration`, and pulling `workspace/configuration` from clients
//! that push `null` (the pull model). New settings apply to the next request; a changed model
//! setting reloads the model in the background.

use serde_json::Value;
use tower_lsp_server::ls_types::{ConfigurationItem, DidChangeConfigurationParams, MessageType};

use crate::scheduler::Scheduler;
use crate::settings::SECTIONS;

pub async fn did_change(
    scheduler: &Scheduler,
    pull_supported: bool,
    params: DidChangeConfigurationParams,
) {
    let pushed = params.settings;
    let empty = match &pushed {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    let value = if empty && pull_supported {
        pull(scheduler).await.unwrap_or(Value::Null)
    } else {
        pushed
    };
    apply(scheduler, None, Some(value));
}

/// Ask the client for our section; `None` if it has nothing for us.
pub async fn pull(scheduler: &Scheduler) -> Option<Value> {
    let item = ConfigurationItem {
        scope_uri: None,
        section: Some(SECTIONS[0].to_string()),
    };
    match scheduler.notifier.client().configuration(vec![item]).await {
        Ok(values) => values.into_iter().next().filter(|v| !v.is_null()),
        Err(e) => {
            tracing::debug!("workspace/configuration failed: {e}");
            None
        }
    }
}

/// Store a layer of options, re-resolve, report problems, and load the model the settings
/// name if it is not the one loaded. Never awaits (safe inside `initialize`).
pub fn apply(scheduler: &Scheduler, init: Option<Value>, change: Option<Value>) {
    let (settings, problems) = scheduler.session.configure(init, change);
    tracing::info!(?settings, "settings");
    if let Some(message) = problems.message() {
        let typ = if problems.errors.is_empty() {
            MessageType::WARNING
        } else {
            MessageType::ERROR
        };
        let notifier = scheduler.notifier.clone();
        tokio::spawn(async move { notifier.show(typ, message).await });
    }
    let roots = scheduler.session.roots();
    scheduler
        .service
        .adapters
        .configure(&settings.adapters, &roots);
    scheduler
        .service
        .outcomes
        .configure(settings.events, &roots);
    for report in scheduler
        .service
        .context
        .configure(&roots, &settings.context)
    {
        let notifier = scheduler.notifier.clone();
        tokio::spawn(async move { notifier.report_index(report).await });
    }
    if let Some(report) = scheduler.service.host.ensure(settings.engine()) {
        let notifier = scheduler.notifier.clone();
        tokio::spawn(async move { notifier.report_load(report).await });
    }
}
