//! llama.cpp's `llama-server`: `POST /infill` (the server builds the FIM prompt from the
//! GGUF's own tokens; snippets go in `input_extra`), `POST /tokenize`, `GET /props`.
//! Request bodies and the parsing of its answers; pure.

use copilot_fim::Piece;
use copilot_pipeline::{Job, StopReason};
use serde_json::{json, Value};

use crate::backoff::{Fault, FaultKind};
use crate::stream::{Final, Step};

pub const INFILL: &str = "/infill";
pub const TOKENIZE: &str = "/tokenize";
pub const PROPS: &str = "/props";

/// The `/infill` request for a job: the kept prefix (after the path header, when the prompt
/// has one) and suffix, the snippets as `input_extra`, the sampling, streaming, the prompt
/// cache on.
pub fn infill_body(job: &Job, stops: &[String]) -> Value {
    let p = &job.prompt;
    let header = p.header.and_then(|i| match p.pieces.get(i) {
        Some(Piece::Text(t)) => Some(t.as_str()),
        _ => None,
    });
    let s = &job.sampling;
    let mut body = json!({
        "input_prefix": format!("{}{}", header.unwrap_or(""), p.prefix),
        "input_suffix": p.suffix,
        "input_extra": job.snippets.iter()
            .map(|s| json!({"filename": s.path, "text": s.text}))
            .collect::<Vec<_>>(),
        "n_predict": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        // 0: off, as in our sampler without top-k (llama.cpp's default is 40).
        "top_k": s.top_k.unwrap_or(0),
        // Our sampler has no min-p (llama.cpp's default is 0.05).
        "min_p": 0.0,
        "seed": s.seed,
        "stop": stops,
        "cache_prompt": true,
        "stream": true,
    });
    if let Some(b) = s.soft_budget {
        body["t_max_predict_ms"] = json!(b.as_millis() as u64);
    }
    body
}

pub fn tokenize_body(text: &str) -> Value {
    json!({"content": text, "add_special": false})
}

/// The number of tokens in a `/tokenize` answer.
pub fn token_count(v: &Value) -> Option<usize> {
    v.get("tokens")?.as_array().map(Vec::len)
}

/// One streamed event of `/infill`.
pub fn parse(v: &Value) -> Result<Step, Fault> {
    if let Some(e) = v.get("error") {
        return Err(Fault::new(
            FaultKind::ServerError,
            format!(
                "{INFILL} failed: {}",
                crate::http::error_text(e.to_string().as_bytes())
            ),
        ));
    }
    let Some(text) = v.get("content").and_then(Value::as_str) else {
        return Err(Fault::new(
            FaultKind::Malformed,
            format!("{INFILL} sent an event without `content`"),
        ));
    };
    let done = v.get("stop").and_then(Value::as_bool).unwrap_or(false);
    let mut info = Final::default();
    if done {
        let t = v.get("timings").unwrap_or(&Value::Null);
        let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let ms = |k: &str| t.get(k).and_then(Value::as_f64);
        let prompt_n = n(t, "prompt_n");
        let cache_n = n(t, "cache_n");
        let evaluated = n(v, "tokens_evaluated");
        info = Final {
            stop: match v.get("stop_type").and_then(Value::as_str) {
                Some("eos") => Some(StopReason::EndOfText),
                Some("word") => Some(StopReason::StopString),
                Some("limit") => Some(StopReason::MaxTokens),
                _ => None,
            },
            prompt_tokens: match (prompt_n, cache_n) {
                (Some(p), Some(c)) => Some(p + c),
                _ => evaluated,
            },
            cached_tokens: cache_n.or_else(|| Some(evaluated?.saturating_sub(prompt_n?))),
            generated_tokens: n(t, "predicted_n"),
            prefill_ms: ms("prompt_ms"),
            decode_ms: ms("predicted_ms"),
        };
    }
    Ok(Step {
        text: text.to_string(),
        info,
        done,
    })
}

/// What `/props` says: the window of a slot and the model file.
pub fn props(v: &Value) -> (Option<usize>, Option<String>) {
    let ctx = v
        .pointer("/default_generation_settings/n_ctx")
        .or_else(|| v.get("n_ctx"))
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let model = v
        .get("model_path")
        .and_then(Value::as_str)
        .map(str::to_string);
    (ctx, model)
}

#[cfg(test)]
mod tests {
    use copilot_fim::Snippet;

    use super::*;
    use crate::testing::job;

    #[test]
    fn infill_takes_the_kept_prefix_and_suffix_and_the_snippets_apart() {
        let snippets = vec![Snippet {
            path: "u.py".into(),
            text: "def u(): pass".into(),
        }];
        let j = job("x = 1\ny = $0\nz = 3\n", Some("a.py"), snippets);
        let b = infill_body(&j, &["\n\n".to_string()]);
        assert_eq!(b["input_prefix"], "# path: a.py\nx = 1\ny = ");
        assert_eq!(b["input_suffix"], "\nz = 3\n");
        assert_eq!(
            b["input_extra"],
            json!([{"filename": "u.py", "text": "def u(): pass"}])
        );
        assert_eq!(b["n_predict"], 16);
        assert_eq!(b["t_max_predict_ms"], 250);
        assert_eq!(b["cache_prompt"], true);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stop"], json!(["\n\n"]));
        assert_eq!(b["top_k"], 0);
        let mut j = job("a$0", None, Vec::new());
        j.sampling.soft_budget = None;
        let b = infill_body(&j, &[]);
        assert_eq!(b["input_prefix"], "a");
        assert!(b.get("t_max_predict_ms").is_none());
    }

    #[test]
    fn events_and_the_final_one() {
        let s = parse(&json!({"content": "re", "stop": false})).unwrap();
        assert_eq!((s.text.as_str(), s.done), ("re", false));
        let last = parse(&json!({
            "content": "", "stop": true, "stop_type": "limit", "tokens_evaluated": 40,
            "timings": {"prompt_n": 4, "cache_n": 36, "prompt_ms": 1.5, "predicted_n": 16,
                        "predicted_ms": 20.25}
        }))
        .unwrap();
        assert!(last.done);
        assert_eq!(
            last.info,
            Final {
                stop: Some(StopReason::MaxTokens),
                prompt_tokens: Some(40),
                cached_tokens: Some(36),
                generated_tokens: Some(16),
                prefill_ms: Some(1.5),
                decode_ms: Some(20.25),
            }
        );
        // An older server: no cache_n.
        let old = parse(
            &json!({"content": "", "stop": true, "stop_type": "eos", "tokens_evaluated": 10,
                          "timings": {"prompt_n": 3}}),
        )
        .unwrap();
        assert_eq!(old.info.prompt_tokens, Some(10));
        assert_eq!(old.info.cached_tokens, Some(7));
        assert_eq!(old.info.stop, Some(StopReason::EndOfText));

        let e = parse(&json!({"error": {"code": 500, "message": "slot unavailable"}})).unwrap_err();
        assert_eq!(e.kind, FaultKind::ServerError);
        assert!(e.detail.contains("slot unavailable"), "{}", e.detail);
        assert_eq!(
            parse(&json!({"tokens": [1]})).unwrap_err().kind,
            FaultKind::Malformed
        );
    }

    #[test]
    fn props_and_tokenize() {
        let v =
            json!({"default_generation_settings": {"n_ctx": 1024}, "model_path": "/m/pico.gguf"});
        assert_eq!(props(&v), (Some(1024), Some("/m/pico.gguf".into())));
        assert_eq!(props(&json!({})), (None, None));
        assert_eq!(token_count(&json!({"tokens": [1, 2, 3]})), Some(3));
        assert_eq!(token_count(&json!({"nope": 1})), None);
        assert_eq!(tokenize_body("x")["add_special"], false);
    }
}
