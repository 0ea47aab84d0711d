//! `GET /health` (llama-server's: 503 while the model loads, with the load's progress here;
//! 200 `{"status": "ok"}` when ready), `GET /v1/models` (OpenAI's list: the one model, and
//! the adapters a request may name), `GET /stats` (the serving core's request counters,
//! among them the requests whose client went away).

use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use copilot_service::ModelState;
use serde_json::json;

use crate::error::Json;
use crate::State;

pub async fn health(AxState(state): AxState<Arc<State>>) -> Response {
    let progress = state
        .progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match state.service.host.state() {
        ModelState::Ready(_) => Json(json!({"status": "ok"})).into_response(),
        ModelState::Idle | ModelState::Loading => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "loading model",
                "progress": progress,
                "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"},
            })),
        )
            .into_response(),
        ModelState::Failed(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "error",
                "error": {
                    "code": 503,
                    "message": format!("the model failed to load: {e}"),
                    "type": "unavailable_error",
                },
            })),
        )
            .into_response(),
    }
}

pub async fn models(AxState(state): AxState<Arc<State>>) -> Response {
    let created = state
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (description, window) = match state.service.host.state() {
        ModelState::Ready(c) => (
            Some(c.description().to_string()),
            Some(c.model().info().window),
        ),
        _ => (None, None),
    };
    // The window as vLLM (`max_model_len`) and llama-server (`meta.n_ctx_train`) give it:
    // clients size their prompts from it.
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.config.model_id,
            "object": "model",
            "created": created,
            "owned_by": "copilot-lsp",
            "max_model_len": window,
            "meta": {
                "description": description,
                "adapters": state.config.adapters.keys().collect::<Vec<_>>(),
                "n_ctx_train": window,
            },
        }],
    }))
    .into_response()
}

pub async fn stats(AxState(state): AxState<Arc<State>>) -> Response {
    Json(json!({
        "model": state.service.host.state().label(),
        "requests": state.service.stats.snapshot(),
    }))
    .into_response()
}
