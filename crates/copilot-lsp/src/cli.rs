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
    /// Serve LSP over stdio (what editors run).
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
    /// Scenarios to run: raw, typing, cold, all (comma-separated); `context` (not in `all`)
    /// types in a workspace with context on, then off.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    pub scenario: Vec<String>,
    /// Milliseconds between keystrokes while typing.
    #[arg(long, default_value_t = 60)]
    pub keystroke_ms: u64,
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 50)]
    pub debounce_ms: u64,
    /// psm, spm or auto.
    #[arg(long, default_value = "auto")]
    pub fim: String,
    #[arg(long, default_value_t = 1536)]
    pub prefix_tokens: usize,
    #[arg(long, default_value_t = 512)]
    pub suffix_tokens: usize,
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
    fn spec(&self, threads: Option<usize>) -> ModelSpec {
        ModelSpec {
            model: self.model.clone(),
            revision: self.revision.clone(),
            offline: self.offline,
            device: self.device,
            dtype: self.dtype,
            threads,
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
    /// Print a JSON object with the completion and timings.
    #[arg(long)]
    pub json: bool,
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
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

pub fn run(args: Args) -> Result<u8> {
    match args.command {
        None => serve(ServeArgs::default(), args.threads),
        Some(Command::Serve(s)) => serve(s, args.threads),
        Some(Command::Complete(c)) => complete(c, args.threads).map(|()| 0),
        Some(Command::GenCheckpoint(g)) => gen_checkpoint(g).map(|()| 0),
        Some(Command::ToGguf(g)) => to_gguf(g).map(|()| 0),
        Some(Command::Bench(b)) => bench(b).map(|()| 0),
        Some(Command::Finetune(a)) => crate::train_cli::finetune(a, args.threads).map(|()| 0),
        Some(Command::Merge(a)) => crate::train_cli::merge(a, args.threads).map(|()| 0),
        Some(Command::Eval(a)) => crate::train_cli::eval(a, args.threads).map(|()| 0),
    }
}

fn serve(s: ServeArgs, threads: Option<usize>) -> Result<u8> {
    let code = copilot_server::run_stdio(copilot_server::ServeOptions {
        model: s.model,
        revision: s.revision,
        offline: s.offline,
        device: s.device,
        dtype: s.dtype,
        threads,
    })?;
    Ok(u8::try_from(code).unwrap_or(1))
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
    let completer = Completer::load(&c.model.spec(threads), &|e| tracing::info!(?e, "load"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let req = CompletionRequest {
        text,
        cursor,
        // No path header: it would differ between the CLI (a file path) and editors (a URI).
        path: None,
        adapter: None,
        snippets: Vec::new(),
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
        });
        writeln!(stdout, "{v}")?;
    } else {
        write!(stdout, "{}", out.text)?;
    }
    stdout.flush()?;
    Ok(())
}

fn bench(b: BenchArgs) -> Result<()> {
    let report = copilot_bench::run(&copilot_bench::BenchOptions {
        model: b.model,
        device: b.device,
        dtype: b.dtype,
        scenarios: b.scenario,
        keystroke_ms: b.keystroke_ms,
        max_tokens: b.max_tokens,
        debounce_ms: b.debounce_ms,
        fim_mode: b.fim,
        prefix_tokens: b.prefix_tokens,
        suffix_tokens: b.suffix_tokens,
        raw_prompt_tokens: b.raw_prompt_tokens,
        raw_decode_tokens: b.raw_decode_tokens,
        runs: b.runs,
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

#[cfg(test)]
mod tests {
    use super::*;

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
