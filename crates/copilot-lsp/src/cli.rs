//! Command-line interface: raw flags (clap) resolved into the library crates' settings.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand};
use copilot_engine::{testkit, Config, DTypeSpec, DeviceSpec, ModelSpec};
use copilot_pipeline::{CancelToken, Completer, CompletionOptions, CompletionRequest, FimChoice};

#[derive(Parser, Debug)]
#[command(
    name = "copilot-lsp",
    version,
    about = "Copilot-style inline completions from a local StarCoder model, as a language server",
    long_about = "Copilot-style inline completions from a local StarCoder model.\n\n\
                  Without a subcommand (or with --stdio) it serves the Language Server Protocol \
                  on stdin/stdout, as editors launch it."
)]
pub struct Args {
    /// Serve LSP over stdin/stdout (the default; editors pass it).
    #[arg(long, global = true)]
    pub stdio: bool,
    /// Write logs to this file instead of stderr.
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, global = true, env = "COPILOT_LSP_LOG")]
    pub log_level: Option<String>,
    /// Compute threads (default: all cores below 4, else one left for the editor).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve LSP over stdio (what editors run), or HTTP with --http ADDR.
    Serve(ServeArgs),
    /// Complete at FILE:LINE:COL (1-based, column in characters) and print the completion.
    Complete(CompleteArgs),
    /// Write a random-weight checkpoint of a model's shape (tests and benchmarks).
    GenCheckpoint(GenArgs),
    /// Write a hub-format checkpoint as a llama.cpp GGUF file (its tokenizer inside).
    ToGguf(ToGgufArgs),
    /// Measure speed: raw engine figures, typing replayed through the server, cold files.
    Bench(BenchArgs),
    /// Fine-tune a LoRA adapter on a repository (PEFT format).
    Finetune(crate::train_cli::FinetuneArgs),
    /// Merge adapters into one, or an adapter into the base weights.
    Merge(crate::train_cli::MergeArgs),
    /// Measure completion quality on held-out files: base model and adapters side by side.
    Eval(crate::train_cli::EvalArgs),
    /// What became of a workspace's suggestions: shown, accepted, kept (the event log).
    Stats(crate::stats_cli::StatsArgs),
    /// Where a workspace's event log is, or delete it (--clear).
    Events(crate::events_cli::EventsArgs),
}

#[derive(ClapArgs, Debug)]
pub struct BenchArgs {
    /// Local checkpoint directory or hub repo id.
    #[arg(long, default_value = copilot_engine::DEFAULT_MODEL)]
    pub model: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// auto, f32, f16, bf16, q8_0, q4_0, q4k.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Scenarios to run: raw, typing, cold, open, events, http (the typing keystrokes through
    /// the HTTP API's `/infill`), all (comma-separated); `context`
    /// (not in `all`) types in a workspace with context on, then off; `remote` with
    /// `--engine`; `soak` alone (not in `all`): mixed messages through this binary over stdio.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    pub scenario: Vec<String>,
    /// Soak: messages to send.
    #[arg(long, default_value_t = 100_000)]
    pub messages: usize,
    /// Soak: documents open.
    #[arg(long, default_value_t = 200)]
    pub documents: usize,
    /// Soak: requests outstanding at most.
    #[arg(long, default_value_t = 32)]
    pub outstanding: usize,
    /// Milliseconds between keystrokes while typing.
    #[arg(long, default_value_t = 60)]
    pub keystroke_ms: u64,
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    /// The server's debounce in milliseconds, or `auto`: its adaptive debounce, what users
    /// get unless they set `debounceMs` (the typing rhythm and the measured latency).
    #[arg(long, default_value = "50", value_parser = parse_debounce)]
    pub debounce_ms: Debounce,
    /// psm, spm or auto.
    #[arg(long, default_value = "auto")]
    pub fim: String,
    #[arg(long, default_value_t = 1536)]
    pub prefix_tokens: usize,
    #[arg(long, default_value_t = 512)]
    pub suffix_tokens: usize,
    /// Typing and cold: leave the prompt budgets to the server (sized to this machine, as for
    /// a user who sets none) instead of `--prefix-tokens` and `--suffix-tokens`.
    #[arg(long)]
    pub auto_budget: bool,
    /// Raw scenario: prompt tokens computed from scratch.
    #[arg(long, default_value_t = 1000)]
    pub raw_prompt_tokens: usize,
    /// Raw scenario: tokens decoded after the prompt.
    #[arg(long, default_value_t = 32)]
    pub raw_decode_tokens: usize,
    /// Repetitions (raw runs, cold files).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Log outcome events in the typing and cold scenarios (on, as users run; off to compare).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub events: String,
    /// A remote engine (`--engine llama.cpp --endpoint URL`): the `remote` scenario.
    #[command(flatten)]
    pub remote: RemoteFlags,
    /// With a remote engine: run the same cursors through the embedded engine (`--model`).
    #[arg(long)]
    pub compare_embedded: bool,
    /// A LoRA adapter directory (PEFT): the raw, typing and cold scenarios run again with
    /// it, unmerged, reported beside the base in the same run.
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct ModelArgs {
    /// Local checkpoint directory or hub repo id.
    #[arg(long, default_value = copilot_engine::DEFAULT_MODEL)]
    pub model: String,
    /// Hub revision (branch, tag or commit).
    #[arg(long)]
    pub revision: Option<String>,
    /// Use the hub cache only (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    /// auto, f32, f16 or bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: DTypeSpec,
}

impl ModelArgs {
    pub(crate) fn spec(&self, threads: Option<usize>) -> ModelSpec {
        ModelSpec {
            model: self.model.clone(),
            revision: self.revision.clone(),
            offline: self.offline,
            device: self.device,
            dtype: self.dtype,
            threads,
            adapter_memory: None,
        }
    }
}

#[derive(ClapArgs, Debug, Default)]
pub struct ServeArgs {
    /// Default model (the client's settings override it).
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub revision: Option<String>,
    #[arg(long)]
    pub offline: bool,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub dtype: Option<String>,
    /// Serve HTTP on this address instead of LSP on stdio: OpenAI's /v1/completions,
    /// llama-server's /infill (llama.vim, llama.vscode), /health, /v1/models, /stats.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// Bearer token HTTP clients must send (`Authorization: Bearer KEY`); required when
    /// --http is not a loopback address.
    #[arg(
        long,
        env = "COPILOT_LSP_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// An adapter HTTP requests may name (`"adapter": NAME`), repeatable.
    #[arg(long = "adapter", value_name = "NAME=DIR")]
    pub adapters: Vec<String>,
    /// Largest HTTP request body, in bytes.
    #[arg(long, default_value_t = copilot_http::DEFAULT_BODY_LIMIT, value_name = "BYTES")]
    pub body_limit: usize,
}

#[derive(ClapArgs, Debug)]
pub struct CompleteArgs {
    /// FILE:LINE:COL, 1-based; FILE may be `-` for stdin.
    #[arg(allow_hyphen_values = true)]
    pub location: String,
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 0.2)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// psm, spm, off (left-to-right, prefix only) or auto.
    #[arg(long, default_value = "auto")]
    pub fim: FimChoice,
    #[arg(long, default_value_t = 1536)]
    pub prefix_tokens: usize,
    #[arg(long, default_value_t = 512)]
    pub suffix_tokens: usize,
    /// Print the model's output without post-processing.
    #[arg(long)]
    pub raw: bool,
    /// Print a JSON object with the completion, timings and the context snippets.
    #[arg(long)]
    pub json: bool,
    /// The workspace whose files give context (default: FILE's nearest enclosing git root,
    /// else FILE's folder). Other open files: none (the CLI has only FILE open).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    #[command(flatten)]
    pub context: ContextArgs,
    #[command(flatten)]
    pub remote: RemoteFlags,
}

/// Context from the rest of the repository (shared by `complete` and `eval`).
#[derive(ClapArgs, Debug, Clone)]
pub struct ContextArgs {
    /// Context sources: none, open, imports, index, all (or a comma-separated list).
    #[arg(long = "context", default_value = "all")]
    pub sources: copilot_context::Sources,
    /// Tokens the context snippets may take (at most a quarter of the prefix budget).
    #[arg(long, default_value_t = copilot_context::DEFAULT_MAX_TOKENS)]
    pub context_tokens: usize,
    /// Files indexed at most.
    #[arg(long, default_value_t = copilot_context::DEFAULT_MAX_INDEX_FILES)]
    pub max_index_files: usize,
}

impl ContextArgs {
    pub fn settings(&self) -> copilot_context::ContextSettings {
        copilot_context::ContextSettings {
            max_tokens: self.context_tokens,
            max_index_files: self.max_index_files,
            ..Default::default()
        }
        .with_sources(self.sources)
    }
}

/// Which engine runs the model: ours, or a server's (`--engine llama.cpp --endpoint URL`).
#[derive(ClapArgs, Debug, Clone, Default)]
pub struct RemoteFlags {
    /// embedded (our model, the default), llama.cpp, ollama or openai.
    #[arg(long)]
    pub engine: Option<String>,
    /// The remote engine's base URL (default: the engine's usual local port).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The model name the remote server expects.
    #[arg(long)]
    pub remote_model: Option<String>,
    /// FIM format of remote prompts: auto, starcoder, starcoder2, codellama, deepseek, qwen
    /// or codestral.
    #[arg(long)]
    pub template: Option<String>,
    /// The environment variable holding the remote server's bearer token.
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// The remote model's tokenizer: tokenizer.json, a .gguf file, or a hub id.
    #[arg(long)]
    pub tokenizer: Option<String>,
}

impl RemoteFlags {
    /// The remote engine asked for, or `None` for the embedded one.
    pub fn spec(&self) -> Result<Option<copilot_remote::RemoteSpec>> {
        let (spec, problems) = copilot_remote::RemoteArgs {
            engine: self.engine.as_deref(),
            endpoint: self.endpoint.as_deref(),
            model: self.remote_model.as_deref(),
            api_key_env: self.api_key_env.as_deref(),
            template: self.template.as_deref(),
            tokenizer: self.tokenizer.as_deref(),
        }
        .resolve();
        if let Some(p) = problems.first() {
            bail!("invalid --{}: {}", flag(p.key), p.message);
        }
        Ok(spec)
    }
}

/// The flag spelling of a settings key (`remoteModel` -> `remote-model`).
fn flag(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(ClapArgs, Debug)]
pub struct GenArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// tiny (2 layers, for tests), tiny-mha, tiny-llama, tiny-qwen2, tiny-starcoder2, or a
    /// real model's shape: tiny_starcoder_py, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b.
    #[arg(long, default_value = "tiny")]
    pub shape: String,
    /// A tokenizer to use: tokenizer.json, or a .gguf file holding one (padded with added
    /// tokens to the vocabulary size; Qwen2.5-Coder shapes get its added tokens).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(ClapArgs, Debug)]
pub struct ToGgufArgs {
    /// Checkpoint directory (config.json, tokenizer.json, safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// The .gguf file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Matrices in f32, f16, q8_0, q4_0 or q4k (vectors stay f32).
    #[arg(long = "type", default_value = "q8_0")]
    pub dtype: String,
}

pub fn init_logging(args: &Args) -> Result<()> {
    let serving = matches!(args.command, None | Some(Command::Serve(_)));
    let default = if serving { "info" } else { "warn" };
    let filter =
        tracing_subscriber::EnvFilter::try_new(args.log_level.as_deref().unwrap_or(default))
            .context("invalid --log-level")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &args.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => {
            let colour = use_colour(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR"),
            );
            builder
                .with_ansi(colour)
                .with_writer(std::io::stderr)
                .init()
        }
    }
    Ok(())
}

/// Colour in the logs only for a person at a terminal: editors show a server's stderr raw in
/// their log panes. `NO_COLOR` (set and not empty) turns it off everywhere (no-color.org).
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

pub fn run(args: Args) -> Result<u8> {
    match args.command {
        None => serve(ServeArgs::default(), args.threads),
        Some(Command::Serve(s)) if s.http.is_some() => {
            if args.stdio {
                bail!("--http and --stdio: serve one protocol per process");
            }
            serve_http(s, args.threads).map(|()| 0)
        }
        Some(Command::Serve(s)) => serve(s, args.threads),
        Some(Command::Complete(c)) => complete(c, args.threads).map(|()| 0),
        Some(Command::GenCheckpoint(g)) => gen_checkpoint(g).map(|()| 0),
        Some(Command::ToGguf(g)) => to_gguf(g).map(|()| 0),
        Some(Command::Bench(b)) => bench(b).map(|()| 0),
        Some(Command::Finetune(a)) => crate::train_cli::finetune(a, args.threads).map(|()| 0),
        Some(Command::Merge(a)) => crate::train_cli::merge(a, args.threads).map(|()| 0),
        Some(Command::Eval(a)) => crate::train_cli::eval(a, args.threads).map(|()| 0),
        Some(Command::Stats(a)) => crate::stats_cli::stats(a).map(|()| 0),
        Some(Command::Events(a)) => crate::events_cli::events(a).map(|()| 0),
    }
}

fn serve_options(s: &ServeArgs, threads: Option<usize>) -> copilot_server::ServeOptions {
    copilot_server::ServeOptions {
        model: s.model.clone(),
        revision: s.revision.clone(),
        offline: s.offline,
        device: s.device.clone(),
        dtype: s.dtype.clone(),
        threads,
        data_dir: None,
    }
}

fn serve(s: ServeArgs, threads: Option<usize>) -> Result<u8> {
    let code = copilot_server::run_stdio(serve_options(&s, threads))?;
    Ok(u8::try_from(code).unwrap_or(1))
}

/// `serve --http ADDR`: the flags resolved as the LSP server resolves them (the same model,
/// the same completion defaults), then the HTTP front-end.
fn serve_http(s: ServeArgs, threads: Option<usize>) -> Result<()> {
    let settings = copilot_server::Settings::from_cli(&serve_options(&s, threads))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let adapters = s
        .adapters
        .iter()
        .map(|a| match a.split_once('=') {
            Some((name, dir)) if !name.trim().is_empty() && !dir.is_empty() => {
                Ok((name.trim().to_string(), PathBuf::from(dir)))
            }
            _ => bail!("--adapter wants NAME=DIR, got `{a}`"),
        })
        .collect::<Result<_>>()?;
    let config = copilot_http::Config {
        addr: s.http.context("--http")?,
        api_key: s.api_key,
        body_limit: s.body_limit,
        model_id: settings.model.model.clone(),
        defaults: settings.completion.clone(),
        adapters,
    };
    copilot_http::run(
        config,
        settings.engine(),
        std::sync::Arc::new(copilot_server::EngineLoader),
    )?;
    Ok(())
}

/// Split `FILE:LINE:COL` from the right, so paths may contain colons.
fn parse_location(loc: &str) -> Result<(String, usize, usize)> {
    let mut parts = loc.rsplitn(3, ':');
    let col = parts.next();
    let line = parts.next();
    let file = parts.next();
    match (file, line, col) {
        (Some(f), Some(l), Some(c)) if !f.is_empty() => {
            let line: usize = l
                .parse()
                .with_context(|| format!("invalid line `{l}` in {loc}"))?;
            let col: usize = c
                .parse()
                .with_context(|| format!("invalid column `{c}` in {loc}"))?;
            if line == 0 || col == 0 {
                bail!("line and column are 1-based in {loc}");
            }
            Ok((f.to_string(), line, col))
        }
        _ => bail!("expected FILE:LINE:COL, got `{loc}`"),
    }
}

/// Byte offset of 1-based (line, column in characters). Lines end at `\n`, `\r\n` or `\r`.
pub fn byte_offset(text: &str, line: usize, col: usize) -> Result<usize> {
    let mut starts = vec![0usize];
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                starts.push(i + 2);
                i += 2;
                continue;
            }
            b'\r' | b'\n' => starts.push(i + 1),
            _ => {}
        }
        i += 1;
    }
    let Some(&start) = starts.get(line - 1) else {
        bail!(
            "line {line} is past the end of the file ({} lines)",
            starts.len()
        );
    };
    let end = starts
        .get(line)
        .map(|&next| {
            let mut e = next;
            while e > start && matches!(bytes[e - 1], b'\n' | b'\r') {
                e -= 1;
            }
            e
        })
        .unwrap_or(text.len());
    let line_text = &text[start..end];
    let chars = line_text.chars().count();
    if col > chars + 1 {
        bail!("column {col} is past the end of line {line} ({chars} characters)");
    }
    Ok(start
        + line_text
            .char_indices()
            .nth(col - 1)
            .map_or(line_text.len(), |(b, _)| b))
}

fn complete(c: CompleteArgs, threads: Option<usize>) -> Result<()> {
    let (file, line, col) = parse_location(&c.location)?;
    let bytes = if file == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("reading stdin")?;
        b
    } else {
        std::fs::read(&file).with_context(|| format!("cannot read {file}"))?
    };
    let text = String::from_utf8(bytes).with_context(|| format!("{file} is not valid UTF-8"))?;
    let cursor = byte_offset(&text, line, col).with_context(|| file.clone())?;
    let completer = match c.remote.spec()? {
        Some(spec) => Completer::new(std::sync::Arc::new(
            copilot_remote::Remote::connect_blocking(spec, &|e| tracing::info!(?e, "load"))
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        None => Completer::load(&c.model.spec(threads), &|e| tracing::info!(?e, "load"))
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let doc = std::path::absolute(if file == "-" { "stdin" } else { &file })?;
    let context = gather_context(&c, &doc, &text, cursor, &completer)?;
    let mut req = CompletionRequest {
        text,
        cursor,
        // No path header: it would differ between the CLI (a file path) and editors (a URI).
        path: None,
        adapter: None,
        ids: None,
        snippets: copilot_context::to_fim(&context),
        options: CompletionOptions {
            temperature: c.temperature,
            top_p: c.top_p,
            top_k: c.top_k,
            max_tokens: c.max_tokens,
            seed: c.seed,
            fim: c.fim,
            prefix_tokens: c.prefix_tokens,
            suffix_tokens: c.suffix_tokens,
            postprocess: !c.raw,
            time_budget: None,
            cache: false,
        },
    };
    // The snippets the prompt really holds, in prompt order.
    let kept = completer.prepare(&req).prompt.snippets;
    let in_prompt: Vec<serde_json::Value> = kept
        .iter()
        .map(|&i| {
            let s = &context[i];
            serde_json::json!({
                "source": s.source.as_str(),
                "path": s.path,
                "text": s.text,
                "tokens": s.tokens,
            })
        })
        .collect();
    req.options.cache = false;
    let out = completer
        .complete_blocking(req, CancelToken::new())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut stdout = std::io::stdout().lock();
    if c.json {
        let s = &out.stats;
        let tps = if s.decode_ms > 0.0 {
            s.generated_tokens as f64 * 1000.0 / s.decode_ms
        } else {
            0.0
        };
        let v = serde_json::json!({
            "completion": out.text,
            "raw": out.raw,
            "prompt_tokens": s.prompt_tokens,
            "reused_tokens": s.reused_tokens,
            "generated_tokens": s.generated_tokens,
            "prefill_ms": s.prefill_ms,
            "decode_ms": s.decode_ms,
            "prefill_tokens_per_s": if s.prefill_ms > 0.0 { (s.prompt_tokens - s.reused_tokens) as f64 * 1000.0 / s.prefill_ms } else { 0.0 },
            "decode_tokens_per_s": tps,
            "stop_reason": s.stop_reason,
            "layout": s.layout,
            "model": completer.description(),
            "context": in_prompt,
        });
        writeln!(stdout, "{v}")?;
    } else {
        write!(stdout, "{}", out.text)?;
    }
    stdout.flush()?;
    Ok(())
}

/// Context snippets for the cursor: the workspace indexed (when the index is asked for),
/// then ranked for the cursor with the model's tokenizer.
fn gather_context(
    c: &CompleteArgs,
    doc: &std::path::Path,
    text: &str,
    cursor: usize,
    completer: &Completer,
) -> Result<Vec<copilot_context::ContextSnippet>> {
    let settings = c.context.settings();
    if !settings.sources().any() {
        return Ok(Vec::new());
    }
    let root = match &c.workspace {
        Some(d) => d.clone(),
        None => copilot_context::workspace_root_for(doc),
    };
    let ws = copilot_context::Workspace::new(root, settings.clone());
    if settings.index {
        let stats = ws
            .build_index(
                &|p| tracing::debug!(done = p.done, total = p.total, "indexing"),
                &std::sync::atomic::AtomicBool::new(false),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(
            files = stats.files,
            chunks = stats.chunks,
            ms = stats.elapsed_ms as u64,
            "indexed"
        );
    }
    let budget = copilot_context::PromptBudget {
        prefix_tokens: c.prefix_tokens,
        suffix_tokens: c.suffix_tokens,
    };
    let counter = completer.token_counter();
    let snippets = ws.snippets(doc, text, cursor, budget, &counter);
    for s in &snippets {
        tracing::debug!(source = s.source.as_str(), path = %s.path, tokens = s.tokens, "context snippet");
    }
    Ok(snippets)
}

fn bench(b: BenchArgs) -> Result<()> {
    if b.scenario.iter().any(|s| s == "soak") {
        if b.scenario.len() > 1 {
            bail!("--scenario soak runs alone");
        }
        let report = copilot_bench::soak::run(&copilot_bench::soak::SoakOptions {
            server: std::env::current_exe().context("cannot find this binary")?,
            model: b.model,
            messages: b.messages,
            documents: b.documents,
            outstanding: b.outstanding,
            seed: 1,
        })?;
        let mut stdout = std::io::stdout().lock();
        if b.json {
            writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
        } else {
            write!(stdout, "{}", report.table())?;
        }
        return Ok(());
    }
    let report = copilot_bench::run(&copilot_bench::BenchOptions {
        model: b.model,
        device: b.device,
        dtype: b.dtype,
        scenarios: b.scenario,
        keystroke_ms: b.keystroke_ms,
        max_tokens: b.max_tokens,
        debounce_ms: b.debounce_ms.ms(),
        fim_mode: b.fim,
        prefix_tokens: b.prefix_tokens,
        suffix_tokens: b.suffix_tokens,
        auto_budget: b.auto_budget,
        raw_prompt_tokens: b.raw_prompt_tokens,
        raw_decode_tokens: b.raw_decode_tokens,
        runs: b.runs,
        events: b.events == "on",
        remote: b.remote.spec()?,
        compare_embedded: b.compare_embedded,
        adapter: b.adapter,
    })?;
    let mut stdout = std::io::stdout().lock();
    if b.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(stdout, "{}", report.table())?;
    }
    Ok(())
}

fn gen_checkpoint(g: GenArgs) -> Result<()> {
    let tok = match &g.tokenizer {
        Some(p) => {
            let text = if p.extension().is_some_and(|e| e == "gguf") {
                copilot_engine::gguf::tokenizer_json(p)?
            } else {
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?
            };
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", p.display()))?;
            Some(v)
        }
        None => None,
    };
    let real = |cfg: Config, mut tok: Option<serde_json::Value>| -> Result<()> {
        if cfg.arch() == copilot_engine::Arch::Qwen2 {
            if let Some(t) = tok.as_mut() {
                testkit::with_qwen2_5_coder_specials(t);
            }
        }
        testkit::write_random_checkpoint(&g.out, &cfg, g.seed, 0.02, tok)?;
        Ok(())
    };
    match g.shape.as_str() {
        "tiny" | "tiny-mha" => {
            if tok.is_some() {
                bail!("--tokenizer applies to the real models' shapes only");
            }
            testkit::write_tiny_checkpoint(&g.out, g.shape == "tiny", g.seed)?;
        }
        "tiny-llama" | "tiny-qwen2" | "tiny-starcoder2" => {
            if tok.is_some() {
                bail!("--tokenizer applies to the real models' shapes only");
            }
            let arch = match g.shape.as_str() {
                "tiny-llama" => copilot_engine::Arch::Llama,
                "tiny-qwen2" => copilot_engine::Arch::Qwen2,
                _ => copilot_engine::Arch::Starcoder2,
            };
            testkit::write_tiny_rope_checkpoint(&g.out, arch, g.seed)?;
        }
        "tiny_starcoder_py" | "tiny-starcoder-py" => real(Config::tiny_starcoder_py(), tok)?,
        "qwen2.5-coder-0.5b" => real(Config::qwen2_5_coder_0_5b(), tok)?,
        "qwen2.5-coder-1.5b" => real(Config::qwen2_5_coder_1_5b(), tok)?,
        other => bail!(
            "unknown shape `{other}` (tiny, tiny-mha, tiny-llama, tiny-qwen2, tiny-starcoder2, \
             tiny_starcoder_py, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)"
        ),
    }
    tracing::info!(out = %g.out.display(), "checkpoint written");
    Ok(())
}

fn to_gguf(g: ToGgufArgs) -> Result<()> {
    let dtype = copilot_engine::gguf::parse_type(&g.dtype).map_err(anyhow::Error::msg)?;
    copilot_engine::gguf::convert(&g.model, &g.out, dtype)?;
    tracing::info!(out = %g.out.display(), "GGUF written");
    Ok(())
}

/// `--debounce-ms`: a number of milliseconds, or `auto` (the server's adaptive one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Debounce {
    Auto,
    Ms(u64),
}

impl Debounce {
    /// The `debounceMs` to send: `None` for the adaptive debounce.
    fn ms(self) -> Option<u64> {
        match self {
            Self::Auto => None,
            Self::Ms(ms) => Some(ms),
        }
    }
}

fn parse_debounce(s: &str) -> Result<Debounce, String> {
    if s == "auto" {
        return Ok(Debounce::Auto);
    }
    s.parse()
        .map(Debounce::Ms)
        .map_err(|_| format!("`{s}` is neither a number of milliseconds nor `auto`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_flags_name_themselves_in_errors() {
        let flags = RemoteFlags {
            engine: Some("ollama".into()),
            ..RemoteFlags::default()
        };
        let e = flags.spec().unwrap_err().to_string();
        assert!(e.starts_with("invalid --remote-model:"), "{e}");
        assert!(RemoteFlags::default().spec().unwrap().is_none());
        let flags = RemoteFlags {
            engine: Some("llama.cpp".into()),
            endpoint: Some("http://127.0.0.1:9".into()),
            ..RemoteFlags::default()
        };
        assert_eq!(
            flags.spec().unwrap().unwrap().endpoint,
            "http://127.0.0.1:9"
        );
    }

    #[test]
    fn colour_only_at_a_terminal_and_never_with_no_color() {
        let set = |v: &str| Some(std::ffi::OsString::from(v));
        let cases = [
            (true, None, true),
            (false, None, false),
            (true, set("1"), false),
            (true, set(""), true),
            (false, set("1"), false),
        ];
        for (tty, no_color, want) in cases {
            assert_eq!(
                use_colour(tty, no_color.clone()),
                want,
                "{tty} {no_color:?}"
            );
        }
    }

    #[test]
    fn the_bench_debounce_is_milliseconds_or_auto() {
        use clap::Parser;
        let debounce = |extra: &[&str]| {
            let argv = [&["copilot-lsp", "bench"][..], extra].concat();
            match Args::try_parse_from(argv).map(|a| a.command) {
                Ok(Some(Command::Bench(b))) => Ok(b.debounce_ms.ms()),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(debounce(&[]), Ok(Some(50)));
        assert_eq!(debounce(&["--debounce-ms", "0"]), Ok(Some(0)));
        assert_eq!(debounce(&["--debounce-ms", "auto"]), Ok(None));
        let e = debounce(&["--debounce-ms=soon"]).unwrap_err();
        assert!(
            e.contains("neither a number of milliseconds nor `auto`"),
            "{e}"
        );
    }

    #[test]
    fn locations_split_from_the_right() {
        assert_eq!(
            parse_location("a:b.py:3:4").unwrap(),
            ("a:b.py".to_string(), 3, 4)
        );
        assert!(parse_location("x.py:3").is_err());
        assert!(parse_location("x.py:0:1").is_err());
        assert!(parse_location("x.py:a:1").is_err());
    }

    #[test]
    fn offsets_count_characters_and_all_line_endings() {
        let t = "ab\r\nçd😀e\rx\ny";
        assert_eq!(byte_offset(t, 1, 1).unwrap(), 0);
        assert_eq!(byte_offset(t, 1, 3).unwrap(), 2);
        assert_eq!(byte_offset(t, 2, 2).unwrap(), 6);
        assert_eq!(byte_offset(t, 2, 4).unwrap(), 11);
        assert_eq!(byte_offset(t, 3, 1).unwrap(), 13);
        assert_eq!(byte_offset(t, 4, 2).unwrap(), t.len());
        assert!(byte_offset(t, 5, 1)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
        assert!(byte_offset(t, 1, 4)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
    }
}
