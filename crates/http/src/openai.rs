//! `POST /v1/completions`: OpenAI's (legacy) completions API, as vLLM, TGI and llama-server
//! also serve it: `prompt` is the code before the cursor, `suffix` the code after.
//!
//! Fields: `model` (any name: one model is served), `prompt` (a string or an array of
//! strings, one answer set each; or the model's token ids, an array of integers or an array
//! of such arrays, run as given, as vLLM and llama-server run them: no prompt of ours
//! around them, no `suffix`, and the raw text back, since post-processing needs the
//! cursor's text), `suffix`, `max_tokens`, `temperature`, `top_p`, `stop` (at
//! most 4, as OpenAI), `n`, `seed`, `stream` (+ `stream_options.include_usage`), `user`;
//! our extensions `postprocess` (default true: our cleaning rules; false for the model's
//! raw text), `adapter` (a name from `--adapter NAME=DIR`) and `top_k`. Fields we cannot
//! honour (`echo`, `logprobs`, `best_of` above 1, penalties, `logit_bias`) are a 400 rather
//! than silently ignored; unknown fields are ignored. What a request leaves out comes from
//! the server's settings, without the typing time budget (an API client asked for
//! `max_tokens`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use copilot_pipeline::Completion;
use serde_json::{json, Value};

use crate::ask::{self, hit_limit, unix_now, Ask, Watch};
use crate::error::{ApiError, Json};
use crate::fields::{read_object, Fields};
use crate::stream::{self, Render};
use crate::State;

/// OpenAI's limit on stop sequences (vLLM rejects more too).
const MAX_STOP: usize = 4;
/// Choices per prompt at most.
const MAX_N: i64 = 16;
/// Tokens a request may ask for (the pipeline also keeps half the window for the prompt).
pub const MAX_TOKENS: i64 = 4096;

struct Parsed {
    asks: Vec<Ask>,
    stream: bool,
    include_usage: bool,
}

fn parse(state: &State, obj: &serde_json::Map<String, Value>) -> Result<Parsed, ApiError> {
    let f = Fields(obj);
    f.string("model")?;
    f.string("user")?;
    let prompts = prompts(f.value("prompt"))?;
    let suffix = f.string("suffix")?.unwrap_or_default();
    let mut options = common_options(state, &f)?;
    options.time_budget = None;
    let by_ids = matches!(prompts.first(), Some(Prompt::Ids(_)));
    if by_ids {
        if !suffix.is_empty() {
            return Err(ApiError::field(
                "suffix",
                "`suffix` needs a text `prompt`: a prompt of token ids is run as given",
            ));
        }
        if f.bool("postprocess")? == Some(true) {
            return Err(ApiError::field(
                "postprocess",
                "`postprocess` needs a text `prompt` (the rules read the code around the \
                 cursor): a prompt of token ids gets the model's raw text",
            ));
        }
        options.postprocess = false;
    }
    if let Some(m) = f.int("max_tokens", 1, MAX_TOKENS)? {
        options.max_tokens = m as usize;
    }
    let n = f.int("n", 1, MAX_N)?.unwrap_or(1) as usize;
    let stop = f.strings("stop", MAX_STOP)?;
    if f.bool("echo")? == Some(true) {
        return Err(ApiError::field("echo", "`echo` is not supported"));
    }
    if f.int("logprobs", 0, 5)?.is_some_and(|l| l > 0) {
        return Err(ApiError::field("logprobs", "`logprobs` is not supported"));
    }
    if f.int("best_of", 1, MAX_N)?
        .is_some_and(|b| b != 1 && b != n as i64)
    {
        return Err(ApiError::field(
            "best_of",
            "`best_of` other than 1 or `n` is not supported",
        ));
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if f.number(key, -2.0, 2.0, false)?.is_some_and(|p| p != 0.0) {
            return Err(ApiError::field(
                key,
                format!("`{key}` other than 0 is not supported"),
            ));
        }
    }
    if f.value("logit_bias")
        .is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(ApiError::field(
            "logit_bias",
            "`logit_bias` is not supported",
        ));
    }
    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.value("stream_options") {
        None => false,
        Some(Value::Object(o)) => Fields(o)
            .bool("include_usage")
            .map_err(|_| {
                ApiError::field(
                    "stream_options",
                    "`stream_options.include_usage` must be true or false",
                )
            })?
            .unwrap_or(false),
        Some(_) => {
            return Err(ApiError::field(
                "stream_options",
                "`stream_options` must be an object",
            ))
        }
    };
    let adapter = adapter(state, &f)?;
    let asks = prompts
        .into_iter()
        .map(|prompt| {
            let (prefix, ids) = match prompt {
                Prompt::Text(t) => (t, None),
                Prompt::Ids(ids) => (String::new(), Some(ids)),
            };
            Ask {
                prefix,
                suffix: suffix.clone(),
                options: options.clone(),
                n,
                stop: stop.clone(),
                snippets: Vec::new(),
                adapter: adapter.clone(),
                ids,
            }
        })
        .collect();
    Ok(Parsed {
        asks,
        stream,
        include_usage,
    })
}

/// One prompt of a request.
enum Prompt {
    /// The code before the cursor.
    Text(String),
    /// The model's token ids.
    Ids(Vec<u32>),
}

/// `prompt`: a string, strings, token ids or arrays of them (all of one kind).
fn prompts(v: Option<&Value>) -> Result<Vec<Prompt>, ApiError> {
    let bad = |m: &str| ApiError::field("prompt", m);
    let ids = |items: &[Value]| -> Option<Vec<u32>> {
        items
            .iter()
            .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
            .collect()
    };
    match v {
        None => Err(bad("`prompt` is required: the code before the cursor")),
        Some(Value::String(s)) => Ok(vec![Prompt::Text(s.clone())]),
        Some(Value::Array(items)) if items.is_empty() => Err(bad("`prompt` must not be empty")),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(items
            .iter()
            .map(|v| Prompt::Text(v.as_str().unwrap_or_default().to_string()))
            .collect()),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => match ids(items) {
            Some(ids) => Ok(vec![Prompt::Ids(ids)]),
            None => Err(bad(
                "`prompt` token ids must be integers from 0 to 4294967295",
            )),
        },
        Some(Value::Array(items)) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|v| match v.as_array().map(|a| (a.is_empty(), ids(a))) {
                Some((false, Some(ids))) => Ok(Prompt::Ids(ids)),
                _ => Err(bad(
                    "each prompt of token ids must be a non-empty array of integers from 0 to 4294967295",
                )),
            })
            .collect(),
        Some(_) => Err(bad(
            "`prompt` must be a string, an array of strings, an array of token ids or an array of such arrays",
        )),
    }
}

/// The sampling fields both APIs share, over the server's defaults.
pub fn common_options(
    state: &State,
    f: &Fields,
) -> Result<copilot_pipeline::CompletionOptions, ApiError> {
    let mut o = state.config.defaults.clone();
    if let Some(t) = f.number("temperature", 0.0, 2.0, false)? {
        o.temperature = t;
    }
    if let Some(p) = f.number("top_p", 0.0, 1.0, true)? {
        o.top_p = p;
    }
    if let Some(k) = f.int("top_k", 0, 100_000)? {
        // llama-server's 0 means no top-k.
        o.top_k = (k > 0).then_some(k as usize);
    }
    if let Some(s) = f.u64("seed")? {
        o.seed = s;
    }
    if let Some(p) = f.bool("postprocess")? {
        o.postprocess = p;
    }
    Ok(o)
}

/// The adapter a request names, checked against the server's list.
pub fn adapter(state: &State, f: &Fields) -> Result<Option<std::path::PathBuf>, ApiError> {
    let Some(name) = f.string("adapter")? else {
        return Ok(None);
    };
    match state.config.adapters.get(&name) {
        Some(dir) => Ok(Some(dir.clone())),
        None => {
            let known: Vec<&str> = state.config.adapters.keys().map(String::as_str).collect();
            Err(ApiError::field(
                "adapter",
                if known.is_empty() {
                    format!("unknown adapter `{name}`: the server has none (start it with --adapter NAME=DIR)")
                } else {
                    format!("unknown adapter `{name}` (known: {})", known.join(", "))
                },
            ))
        }
    }
}

fn finish_reason(c: &Completion) -> &'static str {
    if hit_limit(c) {
        "length"
    } else {
        "stop"
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// The response id: unique within the process, unpredictable enough for logs.
fn completion_id(state: &State) -> String {
    let seq = state.seq.load(std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("cmpl-{:016x}{:04x}", nanos, seq & 0xffff)
}

pub async fn completions(
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
    ask::ready(&state, &parsed.asks[0]).await?;
    ask::check_ids(&state, &parsed.asks)?;
    let id = completion_id(&state);
    let model = state.config.model_id.clone();
    let created = unix_now();
    if parsed.stream {
        let render = Chunks {
            id,
            model,
            created,
            include_usage: parsed.include_usage,
            prompt_tokens: 0,
            completion_tokens: 0,
        };
        return Ok(stream::respond(state, parsed.asks, render));
    }
    let mut watch = Watch::new(&state.service);
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for ask in parsed.asks {
        let n = ask.n;
        let runs = ask::answer(&state, ask, vec![None; n]).await?;
        prompt_tokens += runs[0].stats.prompt_tokens;
        for c in &runs {
            completion_tokens += c.stats.generated_tokens;
            choices.push(json!({
                "text": c.text,
                "index": choices.len(),
                "logprobs": null,
                "finish_reason": finish_reason(c),
            }));
        }
    }
    watch.finish();
    Ok(Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }))
    .into_response())
}

/// OpenAI's stream: `text_completion` chunks with one choice each, a last chunk per choice
/// with its `finish_reason`, the usage chunk when asked for, then `[DONE]`.
struct Chunks {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Chunks {
    fn chunk(&self, choices: Value) -> String {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
        .to_string()
    }
}

impl Render for Chunks {
    fn piece(&mut self, index: usize, text: &str) -> String {
        self.chunk(json!([{"text": text, "index": index, "logprobs": null, "finish_reason": null}]))
    }

    fn done(
        &mut self,
        first: usize,
        result: &Result<Vec<Completion>, ApiError>,
        rest: &[String],
    ) -> Vec<String> {
        match result {
            Ok(runs) => {
                self.prompt_tokens += runs.first().map_or(0, |c| c.stats.prompt_tokens);
                runs.iter()
                    .zip(rest)
                    .enumerate()
                    .map(|(i, (c, rest))| {
                        self.completion_tokens += c.stats.generated_tokens;
                        self.chunk(json!([{
                            "text": rest,
                            "index": first + i,
                            "logprobs": null,
                            "finish_reason": finish_reason(c),
                        }]))
                    })
                    .collect()
            }
            // Headers are sent: the error goes in the stream, as OpenAI's clients read it.
            Err(e) => vec![e.body().to_string()],
        }
    }

    fn end(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if self.include_usage {
            out.push(
                json!({
                    "id": self.id,
                    "object": "text_completion",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage(self.prompt_tokens, self.completion_tokens),
                })
                .to_string(),
            );
        }
        out.push("[DONE]".to_string());
        out
    }
}
