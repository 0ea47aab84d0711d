//! The `remote` scenario: our side's cost on top of a remote engine's own work, for a warm
//! completion. Each cursor's request is sent once to warm the server's prompt cache, then
//! `runs` times through the real pipeline (prompt building with the engine's token counts,
//! the HTTP request, the streamed answer, post-processing off so every stream is read to the
//! server's final event); overhead = our wall time − the server's own timings (llama-server's
//! `timings.prompt_ms + predicted_ms`, Ollama's durations, or whatever the server reports).
//! With `--compare-embedded` the same cursors also run through our own engine (`--model`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use copilot_engine::bench::{median, percentile};
use copilot_pipeline::{CancelToken, Completer, CompletionOptions, CompletionRequest, ModelSpec};
use copilot_remote::{Remote, RemoteSpec};
use serde::Serialize;

use crate::{python_file, BenchOptions};

/// Cursors measured (each on its own line of the benchmark file).
const CURSORS: usize = 10;

#[derive(Clone, Debug, Default, Serialize)]
pub struct RemoteFigures {
    pub engine: String,
    pub samples: usize,
    /// Our wall time minus the server's own, per completion.
    pub overhead_p50_ms: f64,
    pub overhead_p95_ms: f64,
    /// The server's own time (prompt + generation), per completion.
    pub server_p50_ms: f64,
    /// Our wall time, per completion.
    pub wall_p50_ms: f64,
    /// Building the prompt alone (token counts included).
    pub prepare_p50_ms: f64,
    pub mean_prompt_tokens: f64,
    pub mean_cached_tokens: f64,
    pub mean_generated_tokens: f64,
    /// The same cursors through the embedded engine (`--compare-embedded`): wall time per
    /// completion.
    pub embedded_wall_p50_ms: Option<f64>,
    pub embedded_wall_p95_ms: Option<f64>,
    pub embedded_mean_generated_tokens: Option<f64>,
}

pub fn run(spec: RemoteSpec, opts: &BenchOptions) -> Result<RemoteFigures> {
    let remote = Remote::connect_blocking(spec, &|_| {}).map_err(|e| anyhow!("{e}"))?;
    let completer = Completer::new(Arc::new(remote));
    let m = measure(&completer, opts)?;
    let n = m.wall.len() as f64;
    let mut figures = RemoteFigures {
        engine: completer.description().to_string(),
        samples: m.wall.len(),
        overhead_p50_ms: median(&mut m.overhead.clone()),
        overhead_p95_ms: percentile(&mut m.overhead.clone(), 95.0),
        server_p50_ms: median(&mut m.server.clone()),
        wall_p50_ms: median(&mut m.wall.clone()),
        prepare_p50_ms: median(&mut m.prepare.clone()),
        mean_prompt_tokens: m.prompt / n,
        mean_cached_tokens: m.cached / n,
        mean_generated_tokens: m.generated / n,
        ..RemoteFigures::default()
    };
    if opts.compare_embedded {
        // The same cursors through our own engine, in this process, for comparison.
        let spec = ModelSpec {
            model: opts.model.clone(),
            device: opts.device.parse().map_err(|e: String| anyhow!(e))?,
            dtype: opts.dtype.parse().map_err(|e: String| anyhow!(e))?,
            ..Default::default()
        };
        let embedded = Completer::load(&spec, &|_| {}).map_err(|e| anyhow!("{e}"))?;
        let e = measure(&embedded, opts)?;
        figures.embedded_wall_p50_ms = Some(median(&mut e.wall.clone()));
        figures.embedded_wall_p95_ms = Some(percentile(&mut e.wall.clone(), 95.0));
        figures.embedded_mean_generated_tokens = Some(e.generated / e.wall.len() as f64);
    }
    Ok(figures)
}

/// Per-completion samples of one engine.
#[derive(Default)]
struct Measured {
    overhead: Vec<f64>,
    server: Vec<f64>,
    wall: Vec<f64>,
    prepare: Vec<f64>,
    prompt: f64,
    cached: f64,
    generated: f64,
}

fn measure(completer: &Completer, opts: &BenchOptions) -> Result<Measured> {
    let text = python_file(0);
    let lines: Vec<usize> = text
        .match_indices("        return ")
        .map(|(i, m)| i + m.len())
        .collect();
    if lines.is_empty() {
        bail!("no cursor in the benchmark file");
    }
    let step = (lines.len() / CURSORS).max(1);
    let mut m = Measured::default();
    for &cursor in lines.iter().step_by(step).take(CURSORS) {
        let req = CompletionRequest {
            text: text.clone(),
            cursor,
            path: None,
            adapter: None,
            ids: None,
            snippets: Vec::new(),
            options: CompletionOptions {
                temperature: 0.0,
                max_tokens: opts.max_tokens,
                fim: opts.fim_mode.parse().map_err(|e: String| anyhow!(e))?,
                prefix_tokens: opts.prefix_tokens,
                suffix_tokens: opts.suffix_tokens,
                postprocess: false,
                time_budget: None,
                cache: false,
                ..CompletionOptions::default()
            },
        };
        // Warm: the server's prompt cache, our token-count memo, the connection.
        completer
            .complete_blocking(req.clone(), CancelToken::new())
            .map_err(|e| anyhow!("{e}"))?;
        for _ in 0..opts.runs.max(1) {
            let t = Instant::now();
            let _ = completer.prepare(&req);
            m.prepare.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let out = completer
                .complete_blocking(req.clone(), CancelToken::new())
                .map_err(|e| anyhow!("{e}"))?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let theirs = out.stats.prefill_ms + out.stats.decode_ms;
            m.wall.push(ms);
            m.server.push(theirs);
            m.overhead.push(ms - theirs);
            m.prompt += out.stats.prompt_tokens as f64;
            m.cached += out.stats.reused_tokens as f64;
            m.generated += out.stats.generated_tokens as f64;
        }
    }
    Ok(m)
}
