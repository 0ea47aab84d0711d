//! The rest of llama-server's API that its clients call before completing: `GET /props`
//! (the context window, as `default_generation_settings.n_ctx`) and `POST /tokenize`
//! (`{"content": text}` → `{"tokens": [ids]}`). llama.vim and copilot-lsp's own
//! `llama.cpp` engine size their prompts from them; without them they guess, and their
//! prompts differ from what the embedded engine builds for the same cursor.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ask::loaded;
use crate::error::{ApiError, Json};
use crate::fields::{read_object, Fields};
use crate::State;

pub async fn props(AxState(state): AxState<Arc<State>>) -> Response {
    match loaded(&state) {
        Ok(c) => {
            let info = c.model().info();
            Json(json!({
                "default_generation_settings": { "n_ctx": info.window },
                "total_slots": 1,
                "model_path": state.config.model_id,
                "description": c.description(),
            }))
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub async fn tokenize(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let go = async {
        let obj = read_object(&headers, body, state.config.body_limit).await?;
        let content = Fields(&obj)
            .string("content")?
            .ok_or_else(|| ApiError::field("content", "`content` is required: the text"))?;
        let c = loaded(&state)?;
        let ids = c.model().tokenize(&content).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "this engine has no tokenizer at hand",
            )
        })?;
        Ok::<_, ApiError>(Json(json!({ "tokens": ids })).into_response())
    };
    go.await.unwrap_or_else(|e| e.into_response())
}
