//! OpenAI-compatible servers (vLLM, TGI, LM Studio, llama-server, Ollama's `/v1`):
//! `POST /v1/completions` streamed as server-sent events ending with `data: [DONE]`, and
//! `GET /v1/models`. The FIM prompt is ours, rendered from the family template: token ids
//! where a tokenizer is at hand (so user text holding special-token strings stays text),
//! else text. Request bodies and the parsing of answers; pure.

use copilot_pipeline::{Job, StopReason};
use serde_json::{json, Value};

use crate::backoff::{Fault, FaultKind};
use crate::stream::Step;

pub const COMPLETIONS: &str = "/v1/completions";
pub const MODELS: &str = "/v1/models";

/// vLLM rejects more stop strings than this in some versions (Zed caps them too).
pub const MAX_STOPS: usize = 4;

/// The prompt as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptBody {
    Text(String),
    Ids(Vec<u32>),
}

/// The `/v1/completions` request for a job.
pub fn completions_body(
    job: &Job,
    model: Option<&str>,
    prompt: &PromptBody,
    stops: &[String],
) -> Value {
    let s = &job.sampling;
    let mut body = json!({
        "prompt": match prompt {
            PromptBody::Text(t) => json!(t),
            PromptBody::Ids(ids) => json!(ids),
        },
        "max_tokens": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    if let Some(k) = s.top_k {
        body["top_k"] = json!(k);
    }
    let stops: Vec<&String> = stops.iter().take(MAX_STOPS).collect();
    if !stops.is_empty() {
        body["stop"] = json!(stops);
    }
    body
}

/// One event's data (not `[DONE]`).
pub fn parse(v: &Value) -> Result<Step, Fault> {
    if let Some(e) = v.get("error") {
        return Err(Fault::new(
            FaultKind::ServerError,
            format!(
                "{COMPLETIONS} failed: {}",
                crate::http::error_text(e.to_string().as_bytes())
            ),
        ));
    }
    if v.get("object").and_then(Value::as_str) == Some("error") {
        return Err(Fault::new(
            FaultKind::ServerError,
            format!(
                "{COMPLETIONS} failed: {}",
                crate::http::error_text(v.to_string().as_bytes())
            ),
        ));
    }
    let Some(choices) = v.get("choices").and_then(Value::as_array) else {
        return Err(Fault::new(
            FaultKind::Malformed,
            format!("{COMPLETIONS} sent an event without `choices`"),
        ));
    };
    let mut step = Step::default();
    // One choice is asked for (`n` is not sent); a usage-only event has none.
    if let Some(c) = choices.first() {
        match c.get("text") {
            Some(Value::String(t)) => step.text = t.clone(),
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err(Fault::new(
                    FaultKind::Malformed,
                    format!("{COMPLETIONS} sent a choice whose `text` is not a string"),
                ))
            }
        }
        step.info.stop = match c.get("finish_reason").and_then(Value::as_str) {
            Some("stop") => Some(StopReason::EndOfText),
            Some("length") => Some(StopReason::MaxTokens),
            _ => None,
        };
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
        step.info.prompt_tokens = n(u, "prompt_tokens");
        step.info.generated_tokens = n(u, "completion_tokens");
        step.info.cached_tokens = u
            .get("prompt_tokens_details")
            .and_then(|d| n(d, "cached_tokens"));
    }
    // llama-server adds its own timings.
    if let Some(t) = v.get("timings").filter(|t| t.is_object()) {
        step.info.prefill_ms = t.get("prompt_ms").and_then(Value::as_f64);
        step.info.decode_ms = t.get("predicted_ms").and_then(Value::as_f64);
        step.info.cached_tokens = t
            .get("cache_n")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .or(step.info.cached_tokens);
    }
    Ok(step)
}

/// What `/v1/models` says about `model` (or the first model when none is named): its id
/// and window (vLLM's `max_model_len`, llama-server's `meta.n_ctx_train`). A named model
/// the list lacks keeps its name, window unknown (some servers list aliases only).
pub fn models(v: &Value, model: Option<&str>) -> Option<(String, Option<usize>)> {
    let data = v.get("data")?.as_array()?;
    let entry = match model {
        Some(m) => match data
            .iter()
            .find(|e| e.get("id").and_then(Value::as_str) == Some(m))
        {
            Some(e) => e,
            None => return Some((m.to_string(), None)),
        },
        None => data.first()?,
    };
    let id = entry.get("id")?.as_str()?.to_string();
    let window = entry
        .get("max_model_len")
        .or_else(|| entry.pointer("/meta/n_ctx_train"))
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    Some((id, window))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::job;

    #[test]
    fn the_request() {
        let j = job("a$0b", None, Vec::new());
        let stops: Vec<String> = ["1", "2", "3", "4", "5"].map(String::from).to_vec();
        let b = completions_body(&j, Some("m"), &PromptBody::Ids(vec![1, 2]), &stops);
        assert_eq!(b["model"], "m");
        assert_eq!(b["prompt"], json!([1, 2]));
        assert_eq!(b["max_tokens"], 16);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stop"], json!(["1", "2", "3", "4"]), "at most 4");
        let b = completions_body(&j, None, &PromptBody::Text("p".into()), &[]);
        assert!(b.get("model").is_none() && b.get("stop").is_none());
        assert_eq!(b["prompt"], "p");
    }

    #[test]
    fn events() {
        let s =
            parse(&json!({"choices": [{"text": "x", "index": 0, "finish_reason": null}]})).unwrap();
        assert_eq!(s.text, "x");
        assert_eq!(s.info.stop, None);
        let s = parse(
            &json!({"choices": [{"text": "", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 16},
            "timings": {"prompt_ms": 2.0, "predicted_ms": 30.0, "cache_n": 5}}),
        )
        .unwrap();
        assert_eq!(s.info.stop, Some(StopReason::MaxTokens));
        assert_eq!(s.info.prompt_tokens, Some(9));
        assert_eq!(s.info.cached_tokens, Some(5));
        assert_eq!(s.info.decode_ms, Some(30.0));
        // Usage alone (vLLM's last event with include_usage).
        let s = parse(&json!({"choices": [], "usage": {"prompt_tokens": 3}})).unwrap();
        assert_eq!((s.text.as_str(), s.info.prompt_tokens), ("", Some(3)));
        for (bad, kind) in [
            (
                json!({"object": "error", "message": "too many stops"}),
                FaultKind::ServerError,
            ),
            (
                json!({"error": {"message": "boom"}}),
                FaultKind::ServerError,
            ),
            (json!({"id": 1}), FaultKind::Malformed),
            (json!({"choices": [{"text": 5}]}), FaultKind::Malformed),
        ] {
            assert_eq!(parse(&bad).unwrap_err().kind, kind, "{bad}");
        }
    }

    #[test]
    fn models_list() {
        let v = json!({"data": [{"id": "a", "max_model_len": 4096},
                                {"id": "b", "meta": {"n_ctx_train": 1024}}]});
        assert_eq!(models(&v, None), Some(("a".into(), Some(4096))));
        assert_eq!(models(&v, Some("b")), Some(("b".into(), Some(1024))));
        assert_eq!(models(&v, Some("zz")), Some(("zz".into(), None)));
        assert_eq!(models(&json!({"data": []}), None), None);
    }
}
