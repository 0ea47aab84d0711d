//! Ollama: `POST /api/generate` (JSON lines), `POST /api/show`. With the `auto` template the
//! FIM format is the model's own (its Ollama template, through `suffix`); with a named
//! template we render the prompt and send it `raw`. Request bodies and the parsing of its
//! answers; pure.

use copilot_pipeline::{Job, StopReason};
use serde_json::{json, Value};

use crate::backoff::{Fault, FaultKind};
use crate::stream::{Final, Step};
use crate::template::{self, Family};

pub const GENERATE: &str = "/api/generate";
pub const SHOW: &str = "/api/show";

/// How long Ollama keeps the model loaded after a request (its default is 5 minutes: an
/// editor pausing longer would wait for a reload).
pub const KEEP_ALIVE: &str = "30m";

/// The window asked for (`num_ctx`) when the model allows more: the prompt budgets fit in
/// it, and each extra position costs the server memory.
pub const MAX_NUM_CTX: usize = 4096;

/// The `/api/generate` request for a job. `family`: render the FIM prompt ourselves and send
/// it raw; `None`: the prefix section as `prompt` and the suffix as `suffix`, for the
/// model's template (a left-to-right prompt goes raw: a chat template must not wrap it).
pub fn generate_body(
    job: &Job,
    model: &str,
    family: Option<Family>,
    stops: &[String],
    num_ctx: usize,
) -> Value {
    let s = &job.sampling;
    let mut options = json!({
        "num_predict": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "num_ctx": num_ctx,
    });
    if let Some(k) = s.top_k {
        options["top_k"] = json!(k);
    }
    if !stops.is_empty() {
        options["stop"] = json!(stops);
    }
    let mut body = json!({
        "model": model,
        "stream": true,
        "keep_alive": KEEP_ALIVE,
        "options": options,
    });
    match family {
        Some(f) => {
            body["prompt"] = json!(template::to_text(&template::render(&job.prompt, f)));
            body["raw"] = json!(true);
        }
        None => {
            let sec = template::sections(&job.prompt);
            body["prompt"] = json!(sec.prefix.concat());
            if job.prompt.layout == copilot_fim::Layout::LeftToRight {
                body["raw"] = json!(true);
            } else {
                body["suffix"] = json!(sec.suffix.concat());
                body["raw"] = json!(false);
            }
        }
    }
    body
}

/// The request that loads the model without generating (an empty prompt).
pub fn preload_body(model: &str) -> Value {
    json!({"model": model, "keep_alive": KEEP_ALIVE})
}

/// One line of `/api/generate`'s stream.
pub fn parse(v: &Value) -> Result<Step, Fault> {
    if let Some(e) = v.get("error") {
        return Err(Fault::new(
            FaultKind::ServerError,
            format!(
                "{GENERATE} failed: {}",
                e.as_str().unwrap_or(&e.to_string())
            ),
        ));
    }
    let Some(text) = v.get("response").and_then(Value::as_str) else {
        return Err(Fault::new(
            FaultKind::Malformed,
            format!("{GENERATE} sent a line without `response`"),
        ));
    };
    let done = v.get("done").and_then(Value::as_bool).unwrap_or(false);
    let mut info = Final::default();
    if done {
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        let ms = |k: &str| n(k).map(|ns| ns as f64 / 1e6);
        info = Final {
            stop: match v.get("done_reason").and_then(Value::as_str) {
                Some("stop") => Some(StopReason::EndOfText),
                Some("length") => Some(StopReason::MaxTokens),
                _ => None,
            },
            prompt_tokens: n("prompt_eval_count").map(|x| x as usize),
            cached_tokens: None,
            generated_tokens: n("eval_count").map(|x| x as usize),
            prefill_ms: ms("prompt_eval_duration"),
            decode_ms: ms("eval_duration"),
        };
    }
    Ok(Step {
        text: text.to_string(),
        info,
        done,
    })
}

/// What `/api/show` says: the model's trained window, and whether its template takes a
/// suffix (FIM).
pub fn show(v: &Value) -> (Option<usize>, bool) {
    let ctx = v
        .get("model_info")
        .and_then(Value::as_object)
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.ends_with(".context_length"))
                .and_then(|(_, v)| v.as_u64())
                .map(|n| n as usize)
        });
    let caps_insert = v
        .get("capabilities")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|x| x == "insert"));
    let template_suffix = v
        .get("template")
        .and_then(Value::as_str)
        .is_some_and(|t| t.contains(".Suffix"));
    (ctx, caps_insert || template_suffix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::job;

    #[test]
    fn auto_leaves_fim_to_the_model_template() {
        let j = job("x = 1\ny = $0\nz = 3\n", None, Vec::new());
        let b = generate_body(&j, "qwen2.5-coder:1.5b", None, &["\n\n".into()], 4096);
        assert_eq!(b["model"], "qwen2.5-coder:1.5b");
        assert_eq!(b["prompt"], "x = 1\ny = ");
        assert_eq!(b["suffix"], "\nz = 3\n");
        assert_eq!(b["raw"], false);
        assert_eq!(b["stream"], true);
        assert_eq!(b["keep_alive"], KEEP_ALIVE);
        assert_eq!(
            b["options"],
            json!({"num_predict": 16, "temperature": 0.0, "top_p": 0.95, "seed": 7,
                   "num_ctx": 4096, "stop": ["\n\n"]})
        );
    }

    #[test]
    fn a_named_template_goes_raw() {
        let j = job("a$0b", None, Vec::new());
        let b = generate_body(&j, "m", Some(Family::Qwen), &[], 2048);
        assert_eq!(b["prompt"], "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>");
        assert_eq!(b["raw"], true);
        assert!(b.get("suffix").is_none());
        assert!(b["options"].get("stop").is_none());
    }

    #[test]
    fn lines_and_the_last_one() {
        let s = parse(&json!({"model": "m", "response": "ab", "done": false})).unwrap();
        assert_eq!((s.text.as_str(), s.done), ("ab", false));
        let last = parse(
            &json!({"response": "", "done": true, "done_reason": "length",
            "prompt_eval_count": 12, "prompt_eval_duration": 3_500_000u64,
            "eval_count": 16, "eval_duration": 40_000_000u64}),
        )
        .unwrap();
        assert!(last.done);
        assert_eq!(last.info.stop, Some(StopReason::MaxTokens));
        assert_eq!(last.info.prompt_tokens, Some(12));
        assert_eq!(last.info.prefill_ms, Some(3.5));
        assert_eq!(last.info.decode_ms, Some(40.0));
        let e = parse(&json!({"error": "model 'x' not found"})).unwrap_err();
        assert!(e.detail.contains("model 'x' not found"));
        assert_eq!(
            parse(&json!({"done": false})).unwrap_err().kind,
            FaultKind::Malformed
        );
    }

    #[test]
    fn show_gives_the_window_and_fim() {
        let v = json!({"model_info": {"general.architecture": "qwen2",
                                      "qwen2.context_length": 32768},
                       "capabilities": ["completion", "insert"]});
        assert_eq!(show(&v), (Some(32768), true));
        let v = json!({"template": "{{ .Prompt }}"});
        assert_eq!(show(&v), (None, false));
        let v = json!({"template": "<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>"});
        assert_eq!(show(&v), (None, true));
    }
}
