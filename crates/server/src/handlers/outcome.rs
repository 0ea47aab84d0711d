//! What the client tells us became of a suggestion, for the serving core's outcome
//! bookkeeping (`copilot_service::Outcomes`) and the event log:
//! - `workspace/executeCommand` of [`ACCEPTED`], the command every item carries (run by
//!   clients after an accept: VS Code, Neovim, Helix and eglot for completion items);
//! - Copilot's `textDocument/didShowCompletion {item}` and
//!   `textDocument/didPartiallyAcceptCompletion {item, acceptedLength}`, `acceptedLength`
//!   in the negotiated position encoding's units.
//!
//! The id travels as the command's first argument (a string, or `{"id": ...}`). An id that
//! is unknown or stale (another session's, or a suggestion already settled) is no error for
//! the client (it would show one to the user for a bookkeeping matter): it is logged and
//! ignored. A command we do not have, or no id at all, is invalid params.

use serde_json::Value;
use tower_lsp_server::jsonrpc::{Error, Result};
use tower_lsp_server::ls_types::{Command, ExecuteCommandParams};

use crate::scheduler::Scheduler;

/// The command of every suggestion: "this one was accepted".
pub const ACCEPTED: &str = "copilot-lsp.accepted";

/// The command an item with event id `id` carries.
pub fn command(id: &str) -> Command {
    Command {
        title: "copilot-lsp: suggestion accepted".into(),
        command: ACCEPTED.into(),
        arguments: Some(vec![Value::from(id)]),
    }
}

/// The id in a command's arguments.
fn id_of(arguments: Option<&[Value]>) -> Option<&str> {
    match arguments?.first()? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("id")?.as_str(),
        _ => None,
    }
}

/// The id in an item echoed back by the client (`item.command.arguments`).
fn item_id(params: &Value) -> Option<&str> {
    let args = params.get("item")?.get("command")?.get("arguments")?;
    id_of(args.as_array().map(Vec::as_slice))
}

pub async fn execute_command(
    scheduler: &Scheduler,
    params: ExecuteCommandParams,
) -> Result<Option<Value>> {
    if params.command != ACCEPTED {
        return Err(Error::invalid_params(format!(
            "unknown command `{}` (this server has `{ACCEPTED}`)",
            params.command
        )));
    }
    let Some(id) = id_of(Some(&params.arguments)) else {
        return Err(Error::invalid_params(format!(
            "`{ACCEPTED}` takes the suggestion's id as its argument"
        )));
    };
    match scheduler.service.outcomes.accepted(id, None) {
        Ok(r) => tracing::debug!(id, chars = r.accepted_chars, "suggestion accepted"),
        Err(why) => tracing::debug!(id, ?why, "accept not recorded"),
    }
    Ok(None)
}

pub async fn did_show(scheduler: &Scheduler, params: Value) {
    let Some(id) = item_id(&params) else {
        tracing::debug!("didShowCompletion without one of our items: ignored");
        return;
    };
    if let Err(why) = scheduler.service.outcomes.shown(id) {
        tracing::debug!(id, ?why, "show not recorded");
    }
}

pub async fn did_partially_accept(scheduler: &Scheduler, params: Value) {
    let Some(id) = item_id(&params) else {
        tracing::debug!("didPartiallyAcceptCompletion without one of our items: ignored");
        return;
    };
    let Some(units) = params.get("acceptedLength").and_then(Value::as_u64) else {
        tracing::debug!(
            id,
            "didPartiallyAcceptCompletion without an acceptedLength: ignored"
        );
        return;
    };
    let outcomes = &scheduler.service.outcomes;
    // Counted in the item's own text, in the units the client counts positions in.
    let text = match outcomes.text(id) {
        Ok(t) => t,
        Err(why) => {
            tracing::debug!(id, ?why, "partial accept not recorded");
            return;
        }
    };
    let units = usize::try_from(units).unwrap_or(usize::MAX);
    let chars = scheduler.session.encoding().chars_within(&text, units);
    match outcomes.accepted(id, Some(chars)) {
        Ok(r) => tracing::debug!(id, chars = r.accepted_chars, of = r.total, "partial accept"),
        Err(why) => tracing::debug!(id, ?why, "partial accept not recorded"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_are_read_from_strings_or_objects() {
        assert_eq!(id_of(Some(&[json!("a-1")])), Some("a-1"));
        assert_eq!(id_of(Some(&[json!({"id": "a-2"})])), Some("a-2"));
        assert_eq!(id_of(Some(&[json!(7)])), None);
        assert_eq!(id_of(Some(&[])), None);
        assert_eq!(id_of(None), None);
        let item = json!({"item": {"insertText": "x", "command": command("a-3")}});
        assert_eq!(item_id(&item), Some("a-3"));
        assert_eq!(item_id(&json!({"item": {"insertText": "x"}})), None);
        assert_eq!(item_id(&json!(null)), None);
    }
}
