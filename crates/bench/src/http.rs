//! The `http` scenario: the typing scenario's keystrokes as an HTTP client sends them, to our
//! HTTP API over loopback, on the same model, timed as the typing scenario times LSP (from
//! the keystroke to the answer, at the pauses).
//!
//! The client is llama.vim's: after each key it waits the same debounce, then `POST /infill`
//! with the text around the cursor, a new connection per request; the next key drops the
//! request in flight (the server sees the hang-up and cancels it). Budgets, token limit and
//! time budget are the LSP server's, so both answer the same prompt.
//!
//! The client speaks HTTP/1.1 by hand on a `TcpStream`, as `curl` does for llama.vim: a
//! client library would add its own pooling and timing to the figure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use copilot_engine::ModelSpec;
use copilot_pipeline::CompletionOptions;
use copilot_server::EngineLoader;
use copilot_service::{EngineSpec, Service};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{
    cpu_seconds, latency, pauses_after, python_file, typing_site, BenchOptions, Latency, Totals,
};

/// One request on its own connection: status and JSON body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    s.set_nodelay(true)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(format!("{head}{body}").as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer: {text:.80}"))?;
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, json))
}

/// The server's totals, as the LSP scenario reads them from `copilot/debugStats`.
fn totals(service: &Service) -> Result<Totals> {
    Ok(Totals::from_stats(&serde_json::to_value(
        service.stats.snapshot(),
    )?))
}

/// Type the typing scenario's text through `/infill`; the figures as [`Latency`].
pub async fn typing(opts: &BenchOptions, spec: ModelSpec, typed: &str) -> Result<Latency> {
    let (service, mut notices) = Service::new(Arc::new(EngineLoader));
    tokio::spawn(async move { while notices.recv().await.is_some() {} });
    let defaults = CompletionOptions {
        temperature: 0.0,
        max_tokens: opts.max_tokens,
        fim: opts.fim_mode.parse().map_err(|e: String| anyhow!(e))?,
        prefix_tokens: opts.prefix_tokens,
        suffix_tokens: opts.suffix_tokens,
        ..CompletionOptions::default()
    };
    let time_budget_ms = defaults.time_budget.map_or(0, |d| d.as_millis() as u64);
    let config = copilot_http::Config {
        addr: "127.0.0.1:0".parse()?,
        api_key: None,
        body_limit: copilot_http::DEFAULT_BODY_LIMIT,
        model_id: opts.model.clone(),
        defaults,
        adapters: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let api = copilot_http::Api::new(service.clone(), config);
    api.load(EngineSpec::Embedded(spec));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        api.serve(listener, async {
            let _ = stopped.await;
        })
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    while call(addr, "GET", "/health", None).await?.0 != 200 {
        if Instant::now() > deadline {
            bail!("the HTTP server's model did not load in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = |text: &str, at: usize| {
        json!({
            "input_prefix": &text[..at], "input_suffix": &text[at..],
            "n_predict": opts.max_tokens, "temperature": 0,
            "t_max_predict_ms": time_budget_ms,
        })
    };
    // Warm up as the LSP scenario does: one answer before timing.
    let warm = "def warm():\n    return 1\n";
    let (status, v) = call(addr, "POST", "/infill", Some(&body(warm, 15))).await?;
    if status != 200 {
        bail!("warm-up completion failed: {status} {v}");
    }

    let mut text = python_file(0);
    let (_, mut offset) = typing_site(&text);
    let since = totals(&service)?;
    let mut samples = Vec::new();
    let mut empty = 0;
    let mut in_flight: Option<tokio::task::JoinHandle<Result<(u16, Value)>>> = None;
    let chars: Vec<char> = typed.chars().collect();
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    for (i, ch) in chars.iter().enumerate() {
        // The next key drops the request in flight.
        if let Some(h) = in_flight.take() {
            h.abort();
        }
        text.insert(offset, *ch);
        offset += ch.len_utf8();
        let pressed = Instant::now();
        let req = body(&text, offset);
        // An HTTP client has no server debounce: its own wait, 50 ms for `auto`.
        let debounce = Duration::from_millis(opts.debounce_ms.unwrap_or(50));
        let handle = tokio::spawn(async move {
            tokio::time::sleep(debounce).await;
            call(addr, "POST", "/infill", Some(&req)).await
        });
        if pauses_after(*ch, chars.get(i + 1)) {
            let (status, v) = tokio::time::timeout(Duration::from_secs(120), handle)
                .await
                .context("no answer at a pause")???;
            if status != 200 {
                bail!("/infill answered {status}: {v}");
            }
            samples.push(pressed.elapsed().as_secs_f64() * 1000.0);
            if v["content"].as_str().is_none_or(|t| t.trim().is_empty()) {
                empty += 1;
            }
        } else {
            in_flight = Some(handle);
            tokio::time::sleep(Duration::from_millis(opts.keystroke_ms)).await;
        }
    }
    let minutes = wall0.elapsed().as_secs_f64() / 60.0;
    let cpu = cpu_seconds() - cpu0;
    let now = totals(&service)?;
    let _ = stop.send(());
    server.await??;
    let mut l = latency(&mut samples, since, now, empty);
    l.cpu_seconds_per_minute = cpu / minutes.max(1e-9);
    Ok(l)
}
