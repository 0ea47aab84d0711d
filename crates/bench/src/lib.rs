//! Benchmarks: measured, reported as medians and percentiles, never asserted.
//!
//! - `raw`: the engine alone (prefill of a long prompt from scratch, per-token decode).
//! - `typing`: a person typing a function into a ~400-line file, replayed through the real
//!   server path (LSP messages, documents, debounce, scheduler, engine, post-processing) over
//!   in-memory pipes; a completion is requested on every keystroke, as editors do, and the
//!   latency that counts is the one at each pause.
//! - `cold`: a new file each time, so the whole window is computed from scratch.
//! - `events`: what the outcome event log costs on a completion's path: registering an
//!   answer's suggestion (and sending its `shown` line to the writer thread) and an accept,
//!   timed one by one, against the same with events off. The typing and cold scenarios log
//!   events too (to a temporary data directory), as a user's server does; `--events off`
//!   runs them without.
//! - `remote` (with `--engine`): our overhead over a remote engine's own timings
//!   (`remote.rs`).
//!
//! - `soak` ([`soak`]): 100,000 mixed messages through the real binary over stdio; resources,
//!   latency, lost and duplicated answers (`--scenario soak`, not part of `all`).
//!
//! Like the `tests/` harness this crate is a *client*: it speaks LSP JSON to the server. The
//! product's invariant (only `copilot-server` knows LSP) is about the code that serves.

pub mod soak;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use copilot_engine::bench::{median, percentile, RawFigures};
use copilot_engine::ModelSpec;
use copilot_server::{EngineLoader, ServeOptions};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

mod http;
pub mod remote;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub model: String,
    pub device: String,
    pub dtype: String,
    /// raw, typing, cold or all.
    pub scenarios: Vec<String>,
    pub keystroke_ms: u64,
    pub max_tokens: usize,
    /// The server's `debounceMs`; `None` leaves it unset: the adaptive debounce.
    pub debounce_ms: Option<u64>,
    pub fim_mode: String,
    pub prefix_tokens: usize,
    pub suffix_tokens: usize,
    /// The LSP scenarios leave the budgets to the server (machine-fitted) instead of the
    /// two above.
    pub auto_budget: bool,
    /// Raw scenario: prompt length and decoded tokens.
    pub raw_prompt_tokens: usize,
    pub raw_decode_tokens: usize,
    pub runs: usize,
    /// Log outcome events in the typing and cold scenarios (as users' servers do).
    pub events: bool,
    /// A remote engine: the `remote` scenario instead of the embedded ones.
    pub remote: Option<copilot_remote::RemoteSpec>,
    /// With a remote engine: the same cursors through the embedded engine too.
    pub compare_embedded: bool,
    /// A PEFT adapter directory: raw, typing and cold run again with it (unmerged).
    pub adapter: Option<std::path::PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            model: copilot_engine::DEFAULT_MODEL.into(),
            device: "cpu".into(),
            dtype: "auto".into(),
            scenarios: vec!["all".into()],
            keystroke_ms: 60,
            max_tokens: 16,
            debounce_ms: Some(50),
            fim_mode: "auto".into(),
            prefix_tokens: 1536,
            suffix_tokens: 512,
            auto_budget: false,
            raw_prompt_tokens: 1000,
            raw_decode_tokens: 32,
            runs: 5,
            events: true,
            adapter: None,
            remote: None,
            compare_embedded: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub mean_prompt_tokens: f64,
    pub mean_computed_tokens: f64,
    /// Share of prompt tokens whose keys and values came from the KV cache.
    pub reuse_ratio: f64,
    pub empty_answers: usize,
    /// Requests that reached the model.
    pub model_calls: usize,
    /// Requests answered from the completion cache (exact or typed through).
    pub cache_hits: usize,
    /// CPU time the process spent per minute of the scenario (typing: a laptop's battery
    /// and fans), in seconds; at most 60 × threads.
    pub cpu_seconds_per_minute: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub model: String,
    pub raw: Option<RawFigures>,
    pub typing: Option<Latency>,
    pub cold: Option<Latency>,
    /// With `--adapter`: the same scenarios with the adapter applied unmerged
    /// (`adapterMemoryMb: 0`)...
    pub raw_adapter: Option<RawFigures>,
    pub typing_adapter: Option<Latency>,
    pub cold_adapter: Option<Latency>,
    /// ... and served by its merged copy (the default budget), once the copy is made.
    pub raw_merged: Option<RawFigures>,
    pub typing_merged: Option<Latency>,
    /// How long making the merged copy took, on the raw scenario's engine.
    pub merge_ms: Option<f64>,
    pub events: Option<EventCost>,
    pub remote: Option<remote::RemoteFigures>,
    /// Typing in a workspace file that imports two workspace modules, three other files
    /// open: with context on, then off.
    pub context: Option<ContextFigures>,
    /// The first completion in a file, 3 s after it was opened.
    pub open: Option<OpenFigures>,
    /// The typing scenario's keystrokes through the HTTP API (`/infill`, as llama.vim).
    pub http: Option<Latency>,
    /// The server's debounce in the LSP scenarios: `50 ms`, or `adaptive`.
    pub debounce: String,
    pub peak_rss_mib: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct OpenFigures {
    /// A file asked for the first time (nothing to warm: the server cannot know the cursor).
    pub fresh_ms: f64,
    /// The same file and place after another file took the cache, closed and reopened 3 s
    /// before asking (warmed where its last request was).
    pub reopened_ms: f64,
    /// Prompt tokens of the fresh request.
    pub prompt_tokens: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ContextFigures {
    pub on: Latency,
    pub off: Latency,
    /// p50 with context on over p50 with it off.
    pub p50_ratio: f64,
    /// The context step (gathering and ranking, as the server timed it) with context on.
    pub step_ms_p50: f64,
    pub step_ms_p95: f64,
    pub steps: u64,
}

/// What logging outcome events costs on a completion's path (microseconds per call).
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventCost {
    pub samples: usize,
    /// Registering one answer's suggestion (`Outcomes::offer`, then `sent`: its `shown` line
    /// queued).
    pub offer_us_p50: f64,
    pub offer_us_p95: f64,
    /// The same call with events off: the floor.
    pub off_us_p50: f64,
    pub off_us_p95: f64,
    /// Recording an accept (the command's handler; the context is cut on the writer).
    pub accept_us_p50: f64,
    pub accept_us_p95: f64,
    /// What the writer thread wrote.
    pub lines: usize,
    pub bytes: u64,
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut s = format!("model: {}\n", self.model);
        if !self.debounce.is_empty() {
            s += &format!("debounce: {}\n", self.debounce);
        }
        if let Some(r) = &self.raw {
            let l = &r.limits;
            s += &format!(
                "cpu     kernels {} (detected {}), {} threads | {}\n",
                l.cpu_level,
                l.cpu_detected,
                l.threads,
                l.cpu_extensions.join(" ")
            );
            s += &format!(
                "raw     prefill {} tokens: p50 {:.1} ms ({:.0} tok/s) | decode: {:.2} ms/token ({:.1} tok/s)\n",
                r.prompt_tokens, r.prefill_ms_p50, r.prefill_tokens_per_s,
                r.decode_ms_per_token_p50, r.decode_tokens_per_s
            );
            s += &format!(
                "limits  decode: {:.0} MB/token at {:.1} GB/s read = {:.1} tok/s, measured {:.0}% | prefill: {:.0} MFLOP/token at {:.0} GFLOP/s ({} kernel) = {:.0} tok/s, measured {:.0}%\n",
                l.bytes_per_token / 1e6, l.read_gb_s, l.decode_limit_tokens_per_s, l.decode_share * 100.0,
                l.prefill_flop_per_token / 1e6, l.peak_gflops, l.peak_kernel, l.prefill_limit_tokens_per_s,
                l.prefill_share * 100.0
            );
        }
        for (name, r) in [
            ("raw+lora", &self.raw_adapter),
            ("raw+merged", &self.raw_merged),
        ] {
            if let (Some(r), Some(base)) = (r, &self.raw) {
                s += &format!(
                    "{name} prefill {} tokens: p50 {:.1} ms ({:.2}x base) | decode: {:.2} ms/token ({:.2}x base)\n",
                    r.prompt_tokens,
                    r.prefill_ms_p50,
                    r.prefill_ms_p50 / base.prefill_ms_p50.max(1e-9),
                    r.decode_ms_per_token_p50,
                    r.decode_ms_per_token_p50 / base.decode_ms_per_token_p50.max(1e-9)
                );
            }
        }
        if let Some(ms) = self.merge_ms {
            s += &format!("merge   the adapter's merged copy made in {ms:.0} ms (in the background while typing)\n");
        }
        for (name, l) in [
            ("typing", &self.typing),
            ("cold", &self.cold),
            ("typing+lora", &self.typing_adapter),
            ("cold+lora", &self.cold_adapter),
            ("typing+merged", &self.typing_merged),
            ("http", &self.http),
        ] {
            if let Some(l) = l {
                s += &format!(
                    "{name:<7} keystroke-to-answer p50 {:.1} ms, p95 {:.1} ms over {} pauses | prompt {:.0} tokens, computed {:.0} (reuse {:.0}%) | {} empty, {} model calls, {} cache hits | {:.1} CPU-s per minute\n",
                    l.p50_ms, l.p95_ms, l.samples, l.mean_prompt_tokens, l.mean_computed_tokens,
                    l.reuse_ratio * 100.0, l.empty_answers, l.model_calls, l.cache_hits,
                    l.cpu_seconds_per_minute
                );
            }
        }
        if let (Some(h), Some(t)) = (&self.http, &self.typing) {
            s += &format!(
                "http    over LSP typing p50 {:.3}x, p95 {:.3}x\n",
                h.p50_ms / t.p50_ms.max(1e-9),
                h.p95_ms / t.p95_ms.max(1e-9)
            );
        }
        for (name, with, base) in [
            ("typing", &self.typing_adapter, &self.typing),
            ("cold", &self.cold_adapter, &self.cold),
            ("typing merged", &self.typing_merged, &self.typing),
        ] {
            if let (Some(w), Some(b)) = (with, base) {
                s += &format!(
                    "adapter {name} p50 with/without {:.3}x, p95 {:.3}x\n",
                    w.p50_ms / b.p50_ms.max(1e-9),
                    w.p95_ms / b.p95_ms.max(1e-9)
                );
            }
        }
        if let Some(e) = &self.events {
            s += &format!(
                "events  per answer: p50 {:.1} us, p95 {:.1} us (off: p50 {:.1} us, p95 {:.1} us) | per accept p50 {:.1} us, p95 {:.1} us | {} samples, {} lines, {} bytes written\n",
                e.offer_us_p50, e.offer_us_p95, e.off_us_p50, e.off_us_p95,
                e.accept_us_p50, e.accept_us_p95, e.samples, e.lines, e.bytes
            );
        }
        if let Some(c) = &self.context {
            for (name, l) in [("ctx on", &c.on), ("ctx off", &c.off)] {
                s += &format!(
                    "{name:<7} keystroke-to-answer p50 {:.1} ms, p95 {:.1} ms over {} pauses | prompt {:.0} tokens, computed {:.0} (reuse {:.0}%) | {} empty, {} model calls, {} cache hits\n",
                    l.p50_ms, l.p95_ms, l.samples, l.mean_prompt_tokens, l.mean_computed_tokens,
                    l.reuse_ratio * 100.0, l.empty_answers, l.model_calls, l.cache_hits
                );
            }
            s += &format!(
                "context p50 on/off {:.2}x | context step p50 {:.2} ms, p95 {:.2} ms over {} requests\n",
                c.p50_ratio, c.step_ms_p50, c.step_ms_p95, c.steps
            );
        }
        if let Some(o) = &self.open {
            s += &format!(
                "open    first completion 3 s after opening: fresh file {:.1} ms | reopened (warmed) {:.1} ms | prompt {:.0} tokens\n",
                o.fresh_ms, o.reopened_ms, o.prompt_tokens
            );
        }
        if let Some(r) = &self.remote {
            s += &format!(
                "remote  overhead over the server's own timings p50 {:.2} ms, p95 {:.2} ms over {} warm completions | wall p50 {:.1} ms, server p50 {:.1} ms, prompt building p50 {:.2} ms | prompt {:.0} tokens ({:.0} cached), {:.1} generated\n",
                r.overhead_p50_ms, r.overhead_p95_ms, r.samples, r.wall_p50_ms, r.server_p50_ms,
                r.prepare_p50_ms, r.mean_prompt_tokens, r.mean_cached_tokens, r.mean_generated_tokens
            );
            if let (Some(p50), Some(p95), Some(g)) = (
                r.embedded_wall_p50_ms,
                r.embedded_wall_p95_ms,
                r.embedded_mean_generated_tokens,
            ) {
                s += &format!(
                    "embedded (same cursors) wall p50 {p50:.1} ms, p95 {p95:.1} ms | {g:.1} generated\n"
                );
            }
        }
        s += &format!("peak RSS {:.0} MiB\n", self.peak_rss_mib);
        s
    }
}

/// CPU time of the whole process (every thread, user and system), in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn run(opts: &BenchOptions) -> Result<Report> {
    let all = opts.scenarios.iter().any(|s| s == "all");
    let wants = |s: &str| all || opts.scenarios.iter().any(|x| x == s);
    for s in &opts.scenarios {
        if !matches!(
            s.as_str(),
            "all" | "raw" | "typing" | "cold" | "context" | "open" | "events" | "remote" | "http"
        ) {
            bail!(
                "unknown scenario `{s}` (raw, typing, cold, open, events, context, http, remote, all)"
            );
        }
    }
    if let Some(spec) = &opts.remote {
        if !(all || opts.scenarios.iter().all(|s| s == "remote")) {
            bail!("a remote engine runs the `remote` scenario only");
        }
        let figures = remote::run(spec.clone(), opts)?;
        return Ok(Report {
            model: figures.engine.clone(),
            remote: Some(figures),
            peak_rss_mib: peak_rss_mib(),
            ..Report::default()
        });
    }
    if wants("remote") && !all {
        bail!("the `remote` scenario needs a remote engine (--engine, --endpoint)");
    }
    let spec = ModelSpec {
        model: opts.model.clone(),
        device: opts.device.parse().map_err(|e: String| anyhow!(e))?,
        dtype: opts.dtype.parse().map_err(|e: String| anyhow!(e))?,
        ..Default::default()
    };
    let mut report = Report {
        debounce: opts
            .debounce_ms
            .map_or_else(|| "adaptive".to_string(), |ms| format!("{ms} ms")),
        ..Report::default()
    };
    if wants("raw") {
        let engine = copilot_engine::load(&spec, &mut |_| {})?;
        report.model = engine.description().to_string();
        let text = python_file(0);
        let mut ids = engine.tokenizer().encode_text(&text)?;
        while ids.len() < opts.raw_prompt_tokens {
            ids.extend_from_within(..);
        }
        ids.truncate(opts.raw_prompt_tokens);
        report.raw = Some(copilot_engine::bench::raw(
            &engine,
            ids.clone(),
            opts.raw_decode_tokens,
            opts.runs,
        )?);
        if let Some(dir) = &opts.adapter {
            let dir = dir.clone();
            let lora = engine
                .run_blocking(move |g| copilot_service::loader::read_peft(&dir, &g.model))?
                .map_err(|e| anyhow!("the adapter: {e}"))?;
            engine.add_adapter("bench".into(), lora)?;
            report.raw_adapter = Some(copilot_engine::bench::raw_with(
                &engine,
                ids.clone(),
                opts.raw_decode_tokens,
                opts.runs,
                Some("bench".into()),
            )?);
            let (merged, ms) = copilot_engine::bench::raw_merged(
                &engine,
                ids,
                opts.raw_decode_tokens,
                opts.runs,
                "bench".into(),
            )?;
            report.raw_merged = Some(merged);
            report.merge_ms = Some(ms);
        }
    }
    if wants("typing") || wants("cold") || wants("open") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut client = Client::start(opts, None).await?;
            if wants("typing") {
                report.typing = Some(client.typing(opts).await?);
            }
            if wants("cold") {
                report.cold = Some(client.cold(opts).await?);
            }
            if opts.adapter.is_some() && (wants("typing") || wants("cold")) {
                // A second server whose workspace has the adapter, unmerged: same text, same
                // cursors.
                let mut with =
                    Client::start_with_adapter(opts, None, opts.adapter.as_deref(), Some(0))
                        .await?;
                if wants("typing") {
                    report.typing_adapter = Some(with.typing(opts).await?);
                }
                if wants("cold") {
                    report.cold_adapter = Some(with.cold(opts).await?);
                }
                with.shutdown().await?;
                if wants("typing") {
                    // A third with the default merge budget: its first completion starts the
                    // merge; typing starts once the copy had time to be made.
                    let mut merged =
                        Client::start_with_adapter(opts, None, opts.adapter.as_deref(), None)
                            .await?;
                    merged.warm_up().await?;
                    let wait = report.merge_ms.map_or(3000.0, |ms| (3.0 * ms).max(1000.0));
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    report.typing_merged = Some(merged.typing(opts).await?);
                    merged.shutdown().await?;
                }
            }
            if wants("open") {
                report.open = Some(client.open_scenario().await?);
            }
            if report.model.is_empty() {
                report.model = client.description();
            }
            client.shutdown().await
        })?;
    }
    if wants("http") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        report.http = Some(rt.block_on(http::typing(opts, spec.clone(), TYPED))?);
    }
    if wants("events") {
        report.events = Some(events::cost(opts.runs.max(1) * 400)?);
    }
    // Not part of `all`: it types the function twice (context on, then off).
    if opts.scenarios.iter().any(|s| s == "context") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let ws = ContextWorkspace::write()?;
        let figures = rt.block_on(async {
            let mut client = Client::start(opts, Some(&ws.root)).await?;
            let figures = client.context_typing(opts, &ws).await?;
            if report.model.is_empty() {
                report.model = client.description();
            }
            client.shutdown().await?;
            Ok::<_, anyhow::Error>(figures)
        });
        drop(ws);
        report.context = Some(figures?);
    }
    report.peak_rss_mib = peak_rss_mib();
    Ok(report)
}

/// The context scenario's workspace on disk: two modules the typed file imports, three
/// other files the user has open, and the typed file (twice: one copy per run).
struct ContextWorkspace {
    root: std::path::PathBuf,
}

const MODELS_PY: &str = "\"\"\"The warehouse's records.\"\"\"\n\nfrom dataclasses import dataclass, field\nfrom typing import List\n\n\n@dataclass\nclass StockItem:\n    \"\"\"One line of stock: a product, how many are left, and when to reorder.\"\"\"\n\n    sku: str\n    quantity: int = 0\n    reorder_point: int = 5\n    tags: List[str] = field(default_factory=list)\n\n    def needs_reorder(self) -> bool:\n        \"\"\"Whether the stock fell to the reorder point.\"\"\"\n        return self.quantity <= self.reorder_point\n";
const PRICING_PY: &str = "\"\"\"Prices, discounts and restock sizes.\"\"\"\n\nfrom models import StockItem\n\n\ndef restock_quantity(item: StockItem, lead_days: int = 7) -> int:\n    \"\"\"How many units to order so that `item` lasts `lead_days` more days.\"\"\"\n    return max(item.reorder_point * 2 - item.quantity, 0) + lead_days\n\n\ndef bulk_discount(units: int) -> float:\n    \"\"\"The discount rate for an order of `units`.\"\"\"\n    return 0.1 if units >= 100 else 0.0\n";
const TYPED_IN_WORKSPACE: &str = "def restock_all(items):\n    low = [i for i in items if i.needs_reorder()]\n    for item in low:\n        item.quantity += restock_quantity(item)\n    return low\n";

impl ContextWorkspace {
    fn write() -> Result<Self> {
        let root =
            std::env::temp_dir().join(format!("copilot-lsp-bench-ws-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join(".git"))?;
        std::fs::write(root.join("models.py"), MODELS_PY)?;
        std::fs::write(root.join("pricing.py"), PRICING_PY)?;
        for v in 1..=3 {
            std::fs::write(root.join(format!("open_{v}.py")), python_file(v))?;
        }
        let main = Self::main_text();
        std::fs::write(root.join("main_on.py"), &main)?;
        std::fs::write(root.join("main_off.py"), &main)?;
        Ok(Self { root })
    }

    /// The typed file: it imports both modules.
    fn main_text() -> String {
        format!(
            "from models import StockItem\nfrom pricing import bulk_discount, restock_quantity\n{}",
            python_file(0)
        )
    }

    fn uri(&self, name: &str) -> String {
        format!("file://{}/{name}", self.root.display())
    }
}

impl Drop for ContextWorkspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A ~400-line Python module; `variant` changes its first line and every function's numbers,
/// so that files differ from the start and around any cursor (the cold scenario gets neither
/// KV-cache reuse nor completion-cache hits).
pub fn python_file(variant: usize) -> String {
    let mut s = format!(
        "# inventory_{variant}.py: stock keeping for the warehouse service\n\"\"\"Inventory records, pricing rules and reports.\"\"\"\n\nimport json\nimport math\nfrom dataclasses import dataclass, field\nfrom typing import Dict, List, Optional\n\n\n"
    );
    let things = [
        "item",
        "order",
        "invoice",
        "customer",
        "supplier",
        "shipment",
        "warehouse",
        "price",
        "discount",
        "report",
        "batch",
        "ledger",
        "account",
        "payment",
        "refund",
        "coupon",
        "basket",
        "review",
        "rating",
        "category",
        "region",
        "carrier",
        "parcel",
        "label",
        "stock",
        "return",
        "quote",
        "contract",
        "budget",
        "forecast",
        "audit",
        "tax",
    ];
    for (i, t) in things.iter().enumerate() {
        let cap: String = t[..1].to_uppercase() + &t[1..];
        s += &format!(
            "@dataclass\nclass {cap}:\n    name: str\n    quantity: int = 0\n    tags: List[str] = field(default_factory=list)\n\n    def total(self, unit_price: float) -> float:\n        \"\"\"Price of every {t} at `unit_price`.\"\"\"\n        return round(self.quantity * unit_price * (1 + {} / 100), 2)\n\n\ndef load_{t}s(path: str) -> List[{cap}]:\n    with open(path) as f:\n        return [{cap}(**row) for row in json.load(f)]\n\n\n",
            i + variant
        );
    }
    s
}

/// What a person types in the typing scenario (a function, inserted mid-file).
const TYPED: &str = "def restock(items, threshold=10):\n    low = [i for i in items if i.quantity < threshold]\n    for item in low:\n        item.quantity += threshold\n    return low\n";

/// Where the typing scenarios type into `text`: between two
/// classes, a third of the way down; `(line, byte offset)` of that line's start.
fn typing_site(text: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let at_line = lines.len() / 3;
    let at_line = (at_line..lines.len())
        .find(|&l| lines[l].starts_with("@dataclass"))
        .unwrap_or(at_line);
    let offset = lines[..at_line].iter().map(|l| l.len() + 1).sum();
    (at_line, offset)
}

/// Whether a typing scenario waits for the answer after typing `ch` (`next` is the key
/// after it): at a space, a newline, `(`, `.`, `:` and the last key, as a person pauses.
fn pauses_after(ch: char, next: Option<&char>) -> bool {
    matches!(ch, ' ' | '\n' | '(' | '.' | ':') || next.is_none()
}

/// A typing scenario's figures from its samples and the server's totals before and after.
fn latency(samples: &mut [f64], since: Totals, now: Totals, empty: usize) -> Latency {
    let calls = (now.model_answers - since.model_answers) as usize;
    let hits = (now.cache_hits - since.cache_hits) as usize;
    let n = calls.max(1) as f64;
    let prompt = (now.prompt_tokens - since.prompt_tokens) as usize;
    let reused = (now.reused_tokens - since.reused_tokens) as usize;
    Latency {
        samples: samples.len(),
        p50_ms: median(samples),
        p95_ms: percentile(samples, 95.0),
        mean_prompt_tokens: prompt as f64 / n,
        mean_computed_tokens: (prompt - reused) as f64 / n,
        reuse_ratio: if prompt > 0 {
            reused as f64 / prompt as f64
        } else {
            0.0
        },
        empty_answers: empty,
        model_calls: calls,
        cache_hits: hits,
        cpu_seconds_per_minute: 0.0,
    }
}

/// The server's running totals of answered completions (`copilot/debugStats`).
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    model_answers: u64,
    prompt_tokens: u64,
    reused_tokens: u64,
    cache_hits: u64,
}

impl Totals {
    fn from_stats(v: &Value) -> Self {
        let g = |k: &str| v[k].as_u64().unwrap_or(0);
        Self {
            model_answers: g("modelAnswers"),
            prompt_tokens: g("promptTokens"),
            reused_tokens: g("reusedTokens"),
            cache_hits: g("cacheHits"),
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A minimal LSP client over in-memory pipes to an in-process server.
struct Client {
    /// The server's data directory (its event log), removed with the client.
    _data: tempfile::TempDir,
    tx: mpsc::UnboundedSender<String>,
    pending: Pending,
    next_id: u64,
    description: Arc<Mutex<String>>,
    server: tokio::task::JoinHandle<Result<i32>>,
    docs: usize,
}

impl Client {
    async fn start(opts: &BenchOptions, root: Option<&std::path::Path>) -> Result<Self> {
        Self::start_with_adapter(opts, root, None, None).await
    }

    /// A server whose workspace (`root`, else `/bench`) has `adapter`, if given, with
    /// `adapter_memory_mb` for merged copies (None: the server's default).
    async fn start_with_adapter(
        opts: &BenchOptions,
        root: Option<&std::path::Path>,
        adapter: Option<&std::path::Path>,
        adapter_memory_mb: Option<u64>,
    ) -> Result<Self> {
        let (client_w, server_r) = tokio::io::duplex(1 << 22);
        let (server_w, client_r) = tokio::io::duplex(1 << 22);
        let loader = Arc::new(EngineLoader);
        // Events go where they would for a user, but into a folder of our own.
        let data = tempfile::tempdir().context("a temporary data directory")?;
        let server = tokio::spawn(copilot_server::serve(
            server_r,
            server_w,
            ServeOptions {
                data_dir: Some(data.path().to_path_buf()),
                ..ServeOptions::default()
            },
            loader,
        ));
        let pending: Pending = Arc::default();
        let description = Arc::new(Mutex::new(String::new()));
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            let mut w = client_w;
            while let Some(frame) = rx.recv().await {
                if w.write_all(frame.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(read_loop(
            client_r,
            tx.clone(),
            pending.clone(),
            description.clone(),
        ));
        let mut c = Self {
            _data: data,
            tx,
            pending,
            next_id: 0,
            description,
            server,
            docs: 0,
        };
        let mut adapters = serde_json::Map::new();
        if let Some(a) = adapter {
            let folder = root.map_or_else(|| "/bench".to_string(), |r| r.display().to_string());
            adapters.insert(folder, json!(a.display().to_string()));
        }
        let mut init = json!({
            "processId": null,
            // The documents' folder: their events are logged (the log is per folder).
            "rootUri": root.map_or_else(|| "file:///bench".to_string(), |r| format!("file://{}", r.display())),
            "capabilities": {"general": {"positionEncodings": ["utf-8"]},
                             "textDocument": {"inlineCompletion": {}}},
            "initializationOptions": {
                "model": opts.model, "device": opts.device, "dtype": opts.dtype,
                "temperature": 0.0, "maxTokens": opts.max_tokens,
                "debounceMs": opts.debounce_ms, "fimMode": opts.fim_mode,
                "prefixTokens": opts.prefix_tokens, "suffixTokens": opts.suffix_tokens,
                "events": opts.events,
                "adapters": adapters,
            }
        });
        if let Some(mb) = adapter_memory_mb {
            init["initializationOptions"]["adapterMemoryMb"] = json!(mb);
        }
        if opts.debounce_ms.is_none() {
            if let Some(o) = init["initializationOptions"].as_object_mut() {
                o.remove("debounceMs");
            }
        }
        if opts.auto_budget {
            let o = &mut init["initializationOptions"];
            if let Some(o) = o.as_object_mut() {
                o.remove("prefixTokens");
                o.remove("suffixTokens");
            }
        }
        c.request("initialize", init).await?;
        c.notify("initialized", json!({})).await?;
        Ok(c)
    }

    fn description(&self) -> String {
        self.description.lock().unwrap().clone()
    }

    async fn send(&mut self, msg: Value) -> Result<()> {
        self.tx
            .send(frame(&msg))
            .map_err(|_| anyhow!("server connection closed"))
    }

    async fn notify(&mut self, method: &str, params: Value) -> Result<()> {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    /// Send a request; the receiver yields its response.
    async fn start_request(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<oneshot::Receiver<Value>> {
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        Ok(rx)
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let rx = self.start_request(method, params).await?;
        tokio::time::timeout(Duration::from_secs(600), rx)
            .await
            .context("no response in 10 minutes")?
            .map_err(|_| anyhow!("connection closed"))
    }

    async fn open(&mut self, text: &str) -> Result<String> {
        self.docs += 1;
        let uri = format!("file:///bench/doc{}.py", self.docs);
        self.open_at(&uri, text).await?;
        Ok(uri)
    }

    async fn open_at(&mut self, uri: &str, text: &str) -> Result<()> {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}}),
        )
        .await
    }

    fn inline_params(uri: &str, line: usize, col: usize) -> Value {
        json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": col},
               "context": {"triggerKind": 2}})
    }

    async fn totals(&mut self) -> Result<Totals> {
        let r = self.request("copilot/debugStats", Value::Null).await?;
        Ok(Totals::from_stats(&r["result"]))
    }

    async fn latency(
        &mut self,
        samples: &mut [f64],
        since: Totals,
        empty: usize,
    ) -> Result<Latency> {
        let now = self.totals().await?;
        Ok(latency(samples, since, now, empty))
    }

    /// Wait until the model answers once (loading included), so timings exclude the load.
    async fn warm_up(&mut self) -> Result<()> {
        let uri = self.open("def warm():\n    return 1\n").await?;
        let r = self
            .request(
                "textDocument/inlineCompletion",
                Self::inline_params(&uri, 1, 4),
            )
            .await?;
        if let Some(e) = r.get("error") {
            bail!("warm-up completion failed: {e}");
        }
        Ok(())
    }

    async fn typing(&mut self, opts: &BenchOptions) -> Result<Latency> {
        self.warm_up().await?;
        let text = python_file(0);
        let uri = self.open(&text).await?;
        self.type_into(opts, &uri, text, TYPED).await
    }

    /// Type `typed` into the open document `uri` (whose text is `text`) between two
    /// classes a third of the way down, one character every `keystroke_ms`, a request at
    /// every keystroke, timing the answers at the pauses.
    async fn type_into(
        &mut self,
        opts: &BenchOptions,
        uri: &str,
        mut text: String,
        typed: &str,
    ) -> Result<Latency> {
        let (at_line, mut offset) = typing_site(&text);
        let since = self.totals().await?;
        let (mut line, mut col) = (at_line, 0usize);
        let mut version = 1;
        let mut samples = Vec::new();
        let mut empty = 0;
        let chars: Vec<char> = typed.chars().collect();
        let (cpu0, wall0) = (cpu_seconds(), Instant::now());
        for (i, ch) in chars.iter().enumerate() {
            version += 1;
            self.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": uri, "version": version},
                       "contentChanges": [{"range": {"start": {"line": line, "character": col},
                                                      "end": {"line": line, "character": col}},
                                           "text": ch.to_string()}]}),
            )
            .await?;
            text.insert(offset, *ch);
            offset += ch.len_utf8();
            if *ch == '\n' {
                line += 1;
                col = 0;
            } else {
                col += ch.len_utf8();
            }
            let rx = self
                .start_request(
                    "textDocument/inlineCompletion",
                    Self::inline_params(uri, line, col),
                )
                .await?;
            let sent = Instant::now();
            // Requests at other keystrokes are superseded by the next one; the server answers
            // them empty or cancelled, and nobody waits for them (as in an editor).
            if pauses_after(*ch, chars.get(i + 1)) {
                let resp = tokio::time::timeout(Duration::from_secs(120), rx)
                    .await
                    .context("no answer at a pause")??;
                samples.push(sent.elapsed().as_secs_f64() * 1000.0);
                if is_empty(&resp) {
                    empty += 1;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(opts.keystroke_ms)).await;
            }
        }
        let minutes = wall0.elapsed().as_secs_f64() / 60.0;
        let mut l = self.latency(&mut samples, since, empty).await?;
        l.cpu_seconds_per_minute = (cpu_seconds() - cpu0) / minutes.max(1e-9);
        Ok(l)
    }

    /// The context scenario: the same typing with context on (first: any help from the
    /// KV cache of the earlier run goes to the run without), then off.
    async fn context_typing(
        &mut self,
        opts: &BenchOptions,
        ws: &ContextWorkspace,
    ) -> Result<ContextFigures> {
        self.warm_up().await?;
        for v in 1..=3 {
            let name = format!("open_{v}.py");
            self.open_at(&ws.uri(&name), &python_file(v)).await?;
        }
        let main = ContextWorkspace::main_text();
        let on_uri = ws.uri("main_on.py");
        self.open_at(&on_uri, &main).await?;
        // Let the index build (six files) and the open documents reach the gatherers.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let on = self
            .type_into(opts, &on_uri, main.clone(), TYPED_IN_WORKSPACE)
            .await?;
        let stats = self.request("copilot/debugStats", Value::Null).await?;
        let step = |k: &str| stats["result"][k].as_f64().unwrap_or(0.0);
        let (step_ms_p50, step_ms_p95) = (step("contextMsP50"), step("contextMsP95"));
        let steps = stats["result"]["contextSteps"].as_u64().unwrap_or(0);
        self.notify(
            "workspace/didChangeConfiguration",
            json!({"settings": {"context": {"openFiles": false, "imports": false, "index": false}}}),
        )
        .await?;
        let off_uri = ws.uri("main_off.py");
        self.open_at(&off_uri, &main).await?;
        let off = self
            .type_into(opts, &off_uri, main, TYPED_IN_WORKSPACE)
            .await?;
        Ok(ContextFigures {
            p50_ratio: if off.p50_ms > 0.0 {
                on.p50_ms / off.p50_ms
            } else {
                0.0
            },
            on,
            off,
            step_ms_p50,
            step_ms_p95,
            steps,
        })
    }

    /// The first completion in a file 3 s after opening it: a fresh file, and one opened
    /// again after another file took the KV cache (the server warms it on open).
    async fn open_scenario(&mut self) -> Result<OpenFigures> {
        self.warm_up().await?;
        let place = |text: &str| {
            let lines: Vec<&str> = text.lines().collect();
            let line = (lines.len() / 2..lines.len())
                .find(|&l| lines[l].trim_start().starts_with("return round"))
                .unwrap_or(lines.len() / 2);
            (line, lines[line].find("round").unwrap_or(0))
        };
        let text = python_file(2000);
        let (line, col) = place(&text);
        // Fresh: opened, 3 s, asked.
        let uri = self.open(&text).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let params = Self::inline_params(&uri, line, col);
        let since = self.totals().await?;
        let t = Instant::now();
        self.request("textDocument/inlineCompletion", params.clone())
            .await?;
        let fresh_ms = t.elapsed().as_secs_f64() * 1000.0;
        let after = self.totals().await?;
        // Another file takes the cache.
        let other = python_file(2001);
        let (ol, oc) = place(&other);
        let other_uri = self.open(&other).await?;
        self.request(
            "textDocument/inlineCompletion",
            Self::inline_params(&other_uri, ol, oc),
        )
        .await?;
        // Closed and opened again; asked 3 s later at the same place.
        self.notify(
            "textDocument/didClose",
            json!({"textDocument": {"uri": uri}}),
        )
        .await?;
        self.open_at(&uri, &text).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let t = Instant::now();
        self.request("textDocument/inlineCompletion", params)
            .await?;
        let reopened_ms = t.elapsed().as_secs_f64() * 1000.0;
        Ok(OpenFigures {
            fresh_ms,
            reopened_ms,
            prompt_tokens: (after.prompt_tokens - since.prompt_tokens) as f64
                / (after.model_answers - since.model_answers).max(1) as f64,
        })
    }

    async fn cold(&mut self, opts: &BenchOptions) -> Result<Latency> {
        self.warm_up().await?;
        let since = self.totals().await?;
        let mut samples = Vec::new();
        let mut empty = 0;
        for v in 0..opts.runs.max(1) {
            let text = python_file(1000 + v);
            let lines: Vec<&str> = text.lines().collect();
            // Cursor in the middle of the file, after `return ` of a method.
            let line = (lines.len() / 2..lines.len())
                .find(|&l| lines[l].trim_start().starts_with("return round"))
                .unwrap_or(lines.len() / 2);
            let col = lines[line].find("round").unwrap_or(0);
            let uri = self.open(&text).await?;
            let t = Instant::now();
            let resp = self
                .request(
                    "textDocument/inlineCompletion",
                    Self::inline_params(&uri, line, col),
                )
                .await?;
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
            if is_empty(&resp) {
                empty += 1;
            }
        }
        self.latency(&mut samples, since, empty).await
    }

    async fn shutdown(mut self) -> Result<()> {
        self.request("shutdown", Value::Null).await?;
        self.notify("exit", Value::Null).await?;
        let code = tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .context("server did not exit")???;
        if code != 0 {
            bail!("server exited with {code}");
        }
        Ok(())
    }
}

mod events {
    //! The `events` scenario: `Outcomes::offer` + `sent` and `Outcomes::accepted` timed call by call
    //! on a ~400-line file, with the writer thread running, events on and off.

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result};
    use copilot_engine::bench::percentile;
    use copilot_pipeline::{BoxFuture, Generated, Job, LanguageModel, ModelInfo, PipelineError};
    use copilot_service::outcomes::{Offer, Outcomes, Timing};
    use copilot_service::{Snapshot, Trigger};

    use super::EventCost;

    /// Counts tokens as a byte-level tokenizer roughly would; never generates.
    struct Approx(ModelInfo);

    impl LanguageModel for Approx {
        fn info(&self) -> &ModelInfo {
            &self.0
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.len() / 4 + 1
        }
        fn generate(&self, _: Job) -> BoxFuture<Result<Generated, PipelineError>> {
            Box::pin(async { Err(PipelineError::Unsupported("generation")) })
        }
    }

    pub fn cost(samples: usize) -> Result<EventCost> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let data = tempfile::tempdir().context("a temporary data directory")?;
        let text = super::python_file(7);
        let cursor = text.find("return round").unwrap_or(text.len() / 2) + "return ".len();
        let snapshot = Snapshot {
            text,
            cursor,
            path: Some("inventory.py".into()),
            file: Some("/bench/inventory.py".into()),
        };
        let counter: Arc<dyn LanguageModel> = Arc::new(Approx(ModelInfo {
            description: "approx".into(),
            window: 8192,
            fim: true,
        }));
        let suggestion = vec!["round(self.quantity * unit_price * (1 + 7 / 100), 2)".to_string()];
        let log =
            copilot_events::Log::new(Some(data.path().to_path_buf()), |m| tracing::warn!("{m}"));
        let outcomes = Outcomes::new(log, Timing::default());
        let roots = vec!["/bench".to_string()];
        let (mut on, mut off, mut accept) = (Vec::new(), Vec::new(), Vec::new());
        rt.block_on(async {
            for i in 0..samples * 2 {
                let enabled = i % 2 == 0;
                outcomes.configure(enabled, &roots);
                let offer = Offer {
                    key: "file:///bench/inventory.py",
                    snapshot: &snapshot,
                    model: "approx",
                    adapter: None,
                    latency_ms: 100.0,
                    trigger: Trigger::Automatic,
                    budget: (1536, 512),
                    counter: counter.clone(),
                };
                let t = Instant::now();
                let ids = outcomes.offer(&offer, &suggestion);
                outcomes.sent(&ids);
                let us = t.elapsed().as_secs_f64() * 1e6;
                if enabled {
                    on.push(us);
                    if i % 8 == 0 {
                        if let Some(id) = ids[0].as_deref() {
                            let t = Instant::now();
                            let _ = outcomes.accepted(id, None);
                            accept.push(t.elapsed().as_secs_f64() * 1e6);
                        }
                    }
                } else {
                    off.push(us);
                }
                // Answers come no faster than keystrokes; let the writer keep up.
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        drop(rt);
        outcomes.log().flush(Duration::from_secs(30));
        let mut lines = 0;
        let mut bytes = 0;
        for f in copilot_events::paths::all_files(data.path())? {
            let s = std::fs::read_to_string(&f)?;
            lines += s.lines().count();
            bytes += s.len() as u64;
        }
        Ok(EventCost {
            samples,
            offer_us_p50: percentile(&mut on, 50.0),
            offer_us_p95: percentile(&mut on, 95.0),
            off_us_p50: percentile(&mut off, 50.0),
            off_us_p95: percentile(&mut off, 95.0),
            accept_us_p50: percentile(&mut accept, 50.0),
            accept_us_p95: percentile(&mut accept, 95.0),
            lines,
            bytes,
        })
    }
}

fn is_empty(resp: &Value) -> bool {
    let r = &resp["result"];
    let items = r.get("items").unwrap_or(r);
    items.as_array().is_none_or(|a| {
        a.iter()
            .all(|i| i["insertText"].as_str().is_none_or(str::is_empty))
    })
}

fn frame(msg: &Value) -> String {
    let body = msg.to_string();
    format!("Content-Length: {}\r\n\r\n{body}", body.len())
}

async fn read_loop(
    r: tokio::io::DuplexStream,
    tx: mpsc::UnboundedSender<String>,
    pending: Pending,
    description: Arc<Mutex<String>>,
) -> Result<()> {
    let mut r = BufReader::new(r);
    loop {
        let mut len = None;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length:") {
                len = Some(v.trim().parse::<usize>()?);
            }
        }
        let mut body = vec![0; len.context("frame without Content-Length")?];
        r.read_exact(&mut body).await?;
        let msg: Value = serde_json::from_slice(&body)?;
        if let Some(id) = msg.get("id").and_then(Value::as_u64) {
            if msg.get("method").is_none() {
                if let Some(tx) = pending.lock().unwrap().remove(&id) {
                    let _ = tx.send(msg);
                }
                continue;
            }
        }
        if let Some(id) = msg.get("id") {
            // A request from the server (progress token creation, configuration): accept.
            let _ = tx.send(frame(&json!({"jsonrpc": "2.0", "id": id, "result": null})));
            continue;
        }
        // Progress or messages from the server: keep the model's description when it says.
        if msg["method"] == "$/progress" {
            if let Some(m) = msg["params"]["value"]["message"].as_str() {
                *description.lock().unwrap() = m.to_string();
            }
        }
    }
}
