//! `POST /infill`: llama-server's fill-in-the-middle endpoint, as llama.vim and llama.vscode
//! call it, answered in llama-server's shape so they work unchanged.
//!
//! The code before the cursor is `input_prefix` followed by `prompt` (llama.vim sends the
//! cursor line's start there), after it `input_suffix`; `input_extra` chunks
//! (`{filename, text}`) become context snippets before the prefix. `n_predict` (-1: the
//! server's default), `temperature`, `top_k`, `top_p`, `seed`, `stop` and
//! `t_max_predict_ms` (once spent, stop at the next newline: our time budget) are honoured;
//! `cache_prompt` always holds (the KV cache is reused across requests); `id_slot`,
//! `n_indent` (the post-processing's scope rule does this job), `samplers`,
//! `t_max_prompt_ms` and `model` are accepted and ignored. `n_predict: 0` (llama.vim's
//! warm-up with new extra context) answers at once without running the model.
//! `response_fields` picks fields (`"timings/prompt_n"` keys), as llama-server does.
//! Extensions as in `/v1/completions`: `postprocess`, `adapter`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use copilot_fim::Snippet;
use copilot_pipeline::Completion;
use serde_json::{json, Map, Value};

use crate::ask::{self, Ask, Watch};
use crate::error::{ApiError, Json};
use crate::fields::{read_object, Fields};
use crate::openai::{adapter, common_options, MAX_TOKENS};
use crate::stream::{self, Render};
use crate::State;

struct Parsed {
    ask: Ask,
    stream: bool,
    response_fields: Vec<String>,
    n_predict_zero: bool,
}

fn parse(state: &State, obj: &Map<String, Value>) -> Result<Parsed, ApiError> {
    let f = Fields(obj);
    let mut prefix = f.string("input_prefix")?.unwrap_or_default();
    match f.value("prompt") {
        None => {}
        Some(Value::String(s)) => prefix.push_str(s),
        Some(_) => {
            return Err(ApiError::field(
                "prompt",
                "`prompt` must be a string (the text before the cursor on its line)",
            ))
        }
    }
    let suffix = f.string("input_suffix")?.unwrap_or_default();
    let snippets = extra(f.value("input_extra"))?;
    let mut options = common_options(state, &f)?;
    let n_predict = f.int("n_predict", -1, MAX_TOKENS)?;
    if let Some(m) = n_predict.filter(|&m| m > 0) {
        options.max_tokens = m as usize;
    }
    options.time_budget = f
        .int("t_max_predict_ms", 0, 3_600_000)?
        .filter(|&ms| ms > 0)
        .map(|ms| Duration::from_millis(ms as u64));
    let stop = f.strings("stop", 64)?;
    for key in [
        "model",
        "samplers",
        "id_slot",
        "n_indent",
        "cache_prompt",
        "t_max_prompt_ms",
    ] {
        // Accepted for llama.vim's sake; checked only for being JSON of a sane kind.
        let _ = f.value(key);
    }
    let response_fields = f.strings("response_fields", 256)?;
    let adapter = adapter(state, &f)?;
    Ok(Parsed {
        ask: Ask {
            prefix,
            suffix,
            options,
            n: 1,
            stop,
            snippets,
            adapter,
            ids: None,
        },
        stream: f.bool("stream")?.unwrap_or(false),
        response_fields,
        n_predict_zero: n_predict == Some(0),
    })
}

/// `input_extra`: `[{"filename": string, "text": string}]`.
fn extra(v: Option<&Value>) -> Result<Vec<Snippet>, ApiError> {
    let bad = || {
        ApiError::field(
            "input_extra",
            "`input_extra` must be an array of {\"filename\": string, \"text\": string}",
        )
    };
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let items = v.as_array().ok_or_else(bad)?;
    items
        .iter()
        .map(|chunk| {
            let o = chunk.as_object().ok_or_else(bad)?;
            let text = match o.get("text") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(bad()),
            };
            let path = match o.get("filename") {
                None | Some(Value::Null) => "tmp".to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => return Err(bad()),
            };
            Ok(Snippet { path, text })
        })
        .collect()
}

pub async fn infill(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: Arc<State>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let obj = read_object(&headers, body, state.config.body_limit).await?;
    let parsed = parse(&state, &obj)?;
    ask::ready(&state, &parsed.ask).await?;
    let model = state.config.model_id.clone();
    if parsed.n_predict_zero {
        let empty = Completion {
            text: String::new(),
            raw: String::new(),
            stats: copilot_pipeline::Stats {
                stop_reason: "MaxTokens".into(),
                ..Default::default()
            },
        };
        return Ok(Json(select(
            final_object(&model, &parsed.ask, &empty, false),
            &parsed.response_fields,
        ))
        .into_response());
    }
    if parsed.stream {
        let render = Events {
            model,
            ask: parsed.ask.clone(),
        };
        return Ok(stream::respond(state, vec![parsed.ask], render));
    }
    let mut watch = Watch::new(&state.service);
    let ask = parsed.ask.clone();
    let runs = ask::answer(&state, parsed.ask, vec![None]).await?;
    watch.finish();
    let out = final_object(&model, &ask, &runs[0], false);
    Ok(Json(select(out, &parsed.response_fields)).into_response())
}

fn per(n: usize, ms: f64) -> (f64, f64) {
    if n == 0 || ms <= 0.0 {
        (0.0, 0.0)
    } else {
        (ms / n as f64, n as f64 * 1000.0 / ms)
    }
}

/// llama-server's final answer (`to_json_non_oaicompat`).
fn final_object(model: &str, ask: &Ask, c: &Completion, streamed: bool) -> Value {
    let s = &c.stats;
    let computed = s.prompt_tokens.saturating_sub(s.reused_tokens);
    let (prompt_per_token_ms, prompt_per_second) = per(computed, s.prefill_ms);
    let (predicted_per_token_ms, predicted_per_second) = per(s.generated_tokens, s.decode_ms);
    let stop_type = match s.stop_reason.as_str() {
        "MaxTokens" | "Window" => "limit",
        "StopString" => "word",
        "Cancelled" => "none",
        _ => "eos",
    };
    json!({
        "index": 0,
        // In a stream the pieces carried the text already.
        "content": if streamed { "" } else { c.text.as_str() },
        "tokens": [],
        "id_slot": 0,
        "stop": true,
        "model": model,
        "tokens_predicted": s.generated_tokens,
        "tokens_evaluated": s.prompt_tokens,
        "generation_settings": {
            "n_predict": ask.options.max_tokens,
            "temperature": ask.options.temperature,
            "top_k": ask.options.top_k.unwrap_or(0),
            "top_p": ask.options.top_p,
            "seed": ask.options.seed,
            "stop": ask.stop,
            "postprocess": ask.options.postprocess,
        },
        "prompt": "",
        "has_new_line": c.text.contains('\n'),
        "truncated": false,
        "stop_type": stop_type,
        "stopping_word": "",
        "tokens_cached": s.reused_tokens,
        "timings": {
            "cache_n": s.reused_tokens,
            "prompt_n": computed,
            "prompt_ms": s.prefill_ms,
            "prompt_per_token_ms": prompt_per_token_ms,
            "prompt_per_second": prompt_per_second,
            "predicted_n": s.generated_tokens,
            "predicted_ms": s.decode_ms,
            "predicted_per_token_ms": predicted_per_token_ms,
            "predicted_per_second": predicted_per_second,
        },
    })
}

/// `response_fields`: only the named paths (`a/b` reaches into objects), each under its
/// path as the key, as llama-server's `json_get_nested_values`.
fn select(full: Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return full;
    }
    let mut out = Map::new();
    for path in fields {
        let mut at = Some(&full);
        for key in path.split('/') {
            at = at.and_then(|v| v.as_object()).and_then(|o| o.get(key));
        }
        if let Some(v) = at {
            out.insert(path.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// llama-server's stream: `{"content": piece, "stop": false, ...}` events, then the final
/// object with `stop: true`; no `[DONE]` (that is the OpenAI endpoints').
struct Events {
    model: String,
    ask: Ask,
}

impl Render for Events {
    fn piece(&mut self, index: usize, text: &str) -> String {
        json!({"index": index, "content": text, "tokens": [], "stop": false, "id_slot": 0})
            .to_string()
    }

    fn done(
        &mut self,
        _first: usize,
        result: &Result<Vec<Completion>, ApiError>,
        rest: &[String],
    ) -> Vec<String> {
        match result {
            Ok(runs) => {
                let mut out = Vec::new();
                if let Some(rest) = rest.first().filter(|r| !r.is_empty()) {
                    out.push(self.piece(0, rest));
                }
                out.push(final_object(&self.model, &self.ask, &runs[0], true).to_string());
                out
            }
            Err(e) => vec![e.body().to_string()],
        }
    }

    fn end(&mut self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_fields_select_nested_paths_by_name() {
        let full = json!({"content": "x", "timings": {"prompt_n": 3}, "tokens_cached": 1});
        let picked = select(
            full,
            &[
                "content".into(),
                "timings/prompt_n".into(),
                "timings/nope".into(),
            ],
        );
        assert_eq!(picked, json!({"content": "x", "timings/prompt_n": 3}));
    }

    #[test]
    fn extra_chunks_become_snippets() {
        let v = json!([{"filename": "a.py", "text": "def a(): pass\n"}, {"text": "b"}]);
        let s = extra(Some(&v)).unwrap();
        assert_eq!(s[0].path, "a.py");
        assert_eq!(s[1].path, "tmp");
        for bad in [
            json!({}),
            json!([1]),
            json!([{"filename": "a"}]),
            json!([{"text": 2}]),
        ] {
            assert_eq!(
                extra(Some(&bad)).unwrap_err().param.as_deref(),
                Some("input_extra")
            );
        }
    }
}
