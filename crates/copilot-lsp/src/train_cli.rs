//! The `finetune`, `merge` and `eval` subcommands: flags parsed by clap, resolved into the
//! options of `copilot-finetune` and `copilot-eval`, results printed on stdout (a table, or
//! JSON with `--json`); progress and logs on stderr.

/// Command results go to stdout (logs go to stderr through tracing).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use copilot_engine::{load, ModelSpec};
use copilot_finetune::data::DataOptions;
use copilot_finetune::examples::ExampleOptions;
use copilot_finetune::job::{self, JobOptions};
use copilot_finetune::lora::Target;
use copilot_finetune::merge::{self, CombineOptions, Method};
use copilot_finetune::progress::{fmt_duration, Bar};
use copilot_finetune::train::TrainOptions;
use copilot_pipeline::{Completer, FimChoice};

use crate::cli::ModelArgs;

fn spec(m: &ModelArgs, threads: Option<usize>) -> ModelSpec {
    m.spec(threads)
}

/// Which files of a repository to use (shared by `finetune` and `eval`).
#[derive(ClapArgs, Debug, Clone)]
pub struct DataArgs {
    /// Globs of files to keep (repository-relative; `*` crosses folders).
    #[arg(long, value_delimiter = ',', default_value = "*.py")]
    pub include: Vec<String>,
    /// Globs of files to leave out.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Files larger than this many bytes are left out.
    #[arg(long, default_value_t = 512 * 1024)]
    pub max_file_bytes: u64,
    /// Share of files held out for evaluation.
    #[arg(long, default_value_t = 0.1)]
    pub heldout_fraction: f64,
    /// Seed of the split, the examples, the initialisation and the shuffling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl DataArgs {
    fn options(&self) -> DataOptions {
        DataOptions {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            max_bytes: self.max_file_bytes,
            heldout_fraction: self.heldout_fraction,
            seed: self.seed,
            ..Default::default()
        }
    }
}

#[derive(ClapArgs, Debug)]
pub struct FinetuneArgs {
    /// The repository to learn from.
    pub repo: PathBuf,
    /// Output folder: the PEFT adapter, train/held-out lists, log, checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Tokens per training sequence (capped by the model's window).
    #[arg(long, default_value_t = 1024)]
    pub seq_len: usize,
    /// Share of examples made fill-in-the-middle.
    #[arg(long, default_value_t = 0.5)]
    pub fim_rate: f64,
    /// Share of FIM examples in SPM order (the rest PSM).
    #[arg(long, default_value_t = 0.5)]
    pub spm_rate: f64,
    /// Layers to adapt (PEFT target_modules). Default: every linear layer of a block, named
    /// as the model's family names them (GPTBigCode c_attn,c_proj,c_fc; Llama and Qwen2
    /// q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj; StarCoder2 q_proj,k_proj,
    /// v_proj,o_proj,c_fc,c_proj). Also attn.c_proj, mlp.c_proj and the like.
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f64,
    /// Rank-stabilised scaling (alpha / sqrt(r)).
    #[arg(long)]
    pub rslora: bool,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Warmup steps (default: 3% of the steps).
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = 4)]
    pub grad_accum: usize,
    /// Sequences per forward/backward pass (default: the whole micro-batch, or on the CPU as
    /// many as fit in the memory available). Same gradients, less memory.
    #[arg(long)]
    pub forward_batch: Option<usize>,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Stop after this many optimiser steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Checkpoint every N optimiser steps (and at each epoch's end).
    #[arg(long, default_value_t = 50)]
    pub save_every: usize,
    /// Continue from OUT/checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Held-out sequences scored for the loss report (0: skip).
    #[arg(long, default_value_t = 32)]
    pub eval_sequences: usize,
    /// Also train on the completions you accepted and kept in this repository (the event
    /// log the server writes, `copilot-lsp stats`): fill-in-the-middle examples, never from
    /// held-out files.
    #[arg(long)]
    pub events: bool,
    /// How many times each kept completion counts (in expectation; 0.5: every other one).
    #[arg(long, default_value_t = 1.0, requires = "events")]
    pub events_weight: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Context in the examples' prompts, gathered as the server does (held-out files are
    /// never a source); `--context none` trains without it.
    #[command(flatten)]
    pub context: crate::cli::ContextArgs,
}

pub fn finetune(a: FinetuneArgs, threads: Option<usize>) -> Result<()> {
    crate::alloc::keep_freed_memory();
    let o = JobOptions {
        repo: a.repo.clone(),
        out: a.out.clone(),
        model: spec(&a.model, threads),
        data: a.data.options(),
        examples: ExampleOptions {
            seq_len: a.seq_len,
            fim_rate: a.fim_rate,
            spm_rate: a.spm_rate,
            with_path: true,
            seed: a.data.seed,
            // As the server prompts: context on unless `--context none`, within a quarter
            // of a sequence.
            context_tokens: if a.context.sources.any() {
                a.context.context_tokens.min(a.seq_len / 4)
            } else {
                0
            },
        },
        train: TrainOptions {
            target: Target {
                rank: a.rank,
                alpha: a.alpha,
                use_rslora: a.rslora,
                modules: a.target.clone(),
            },
            dropout: a.dropout,
            lr: a.lr,
            warmup_steps: a.warmup_steps,
            weight_decay: a.weight_decay,
            batch_size: a.batch_size,
            grad_accum: a.grad_accum,
            forward_batch: a.forward_batch,
            epochs: a.epochs,
            max_steps: a.max_steps,
            seed: a.data.seed,
            save_every: a.save_every,
            resume: a.resume,
            ..Default::default()
        },
        eval_sequences: a.eval_sequences,
        events: if a.events {
            Some(copilot_finetune::events::EventOptions {
                data_dir: crate::stats_cli::data_dir()?,
                weight: a.events_weight,
            })
        } else {
            None
        },
    };
    let mut bar: Option<Bar> = None;
    let report = job::run(&o, &mut |p| {
        bar.get_or_insert_with(|| Bar::new(p.total_steps as u64))
            .update(p);
        if p.step % 10 == 0 || p.step == p.total_steps {
            tracing::info!(
                step = p.step,
                total = p.total_steps,
                loss = format!("{:.4}", p.loss),
                tokens_per_s = format!("{:.0}", p.tokens_per_s),
                left = fmt_duration(p.eta_s),
                "training"
            );
        }
        true
    })
    .with_context(|| format!("fine-tuning on {}", a.repo.display()))?;
    if let Some(b) = &bar {
        b.finish();
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let s = &report.summary;
        let first = s.losses.first().copied().unwrap_or(f64::NAN);
        let last = s.losses.last().copied().unwrap_or(f64::NAN);
        outln!(
            "adapter written to {}\n{} train / {} held-out files ({} left out); {} sequences of {} tokens\n\
             {} steps, loss {first:.4} -> {last:.4}, {:.0} tokens/s, {}",
            report.out.display(),
            report.train_files,
            report.heldout_files,
            report.dropped_files,
            report.sequences,
            report.seq_len,
            s.steps,
            s.tokens_per_s,
            fmt_duration(s.elapsed_s)
        );
        if let Some(e) = &report.events {
            outln!(
                "{} examples from {} kept completions of the event log ({} suggestions; left \
                 out: {} held-out, {} duplicates, {} filtered, {} unusable)",
                e.examples,
                e.used,
                e.suggestions,
                e.held_out,
                e.duplicates,
                e.filtered,
                e.unusable
            );
        }
        if let (Some(b), Some(l)) = (report.heldout_loss_base, report.heldout_loss_adapter) {
            outln!("held-out loss: base {b:.4}, adapter {l:.4} (nats/token)");
        }
    }
    Ok(())
}

#[derive(ClapArgs, Debug)]
pub struct MergeArgs {
    /// Adapter folders (PEFT format), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub adapters: Vec<PathBuf>,
    /// One weight per adapter (default: 1 each).
    #[arg(long, value_delimiter = ',')]
    pub weights: Vec<f64>,
    /// linear, cat or ties.
    #[arg(long, default_value = "linear")]
    pub method: Method,
    /// TIES: share of each delta kept.
    #[arg(long, default_value_t = 0.5)]
    pub density: f64,
    /// Rank of a linear/ties result (default: the largest input rank).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Merge into the base model's weights and write a full checkpoint.
    #[arg(long)]
    pub into_base: bool,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn merge(a: MergeArgs, threads: Option<usize>) -> Result<()> {
    let s = spec(&a.model, threads);
    let files = load::resolve(&s, &mut |_| {}).context("resolving the base model")?;
    let cfg = load::load_config(&files.config)?;
    let adapters = a
        .adapters
        .iter()
        .map(|d| {
            merge::load_for_merge(d, &cfg)
                .with_context(|| format!("loading adapter {}", d.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let weights = if a.weights.is_empty() {
        vec![1.0; adapters.len()]
    } else {
        a.weights.clone()
    };
    let adapter = if adapters.len() == 1 && weights[0] == 1.0 {
        adapters.into_iter().next().expect("one adapter")
    } else {
        merge::combine(
            &adapters,
            &CombineOptions {
                method: a.method,
                weights,
                density: a.density,
                rank: a.rank,
            },
        )?
    };
    if a.into_base {
        merge::merge_into_base(&files, &adapter, &a.out)?;
        outln!("merged checkpoint written to {}", a.out.display());
    } else {
        if a.adapters.len() < 2 {
            bail!("give two or more --adapters to combine, or --into-base to merge into the model");
        }
        adapter.save(&a.out)?;
        outln!(
            "combined adapter (rank {}) written to {}",
            adapter.config.r,
            a.out.display()
        );
    }
    Ok(())
}

#[derive(ClapArgs, Debug)]
pub struct EvalArgs {
    /// The repository whose held-out files are completed.
    pub repo: PathBuf,
    /// Adapter folders to compare with the base model (repeatable).
    #[arg(long = "adapter")]
    pub adapters: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Held-out list (default: the first adapter's heldout.txt, else the split `finetune`
    /// makes with the same --seed and --heldout-fraction).
    #[arg(long)]
    pub heldout: Option<PathBuf>,
    /// Lines sampled per held-out file.
    #[arg(long, default_value_t = 10)]
    pub lines_per_file: usize,
    #[arg(long, default_value_t = 200)]
    pub max_samples: usize,
    #[arg(long, default_value_t = 48)]
    pub max_tokens: usize,
    /// psm, spm, off or auto.
    #[arg(long, default_value = "auto")]
    pub fim: FimChoice,
    /// Where the cursor goes in a sampled line: line-start (complete the whole line,
    /// indentation included), indent (after the indentation) or mid (a random character
    /// inside the code; complete the rest of the line).
    #[arg(long, default_value = "line-start")]
    pub cursor: copilot_eval::CursorMode,
    /// Leave the base model out of the comparison.
    #[arg(long)]
    pub no_base: bool,
    /// Serve the adapters unmerged (the base plus the low-rank delta at every step) rather
    /// than by merged copies, as the server does within `adapterMemoryMb`.
    #[arg(long)]
    pub unmerged: bool,
    /// Print JSON (with every sample's outcome) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Context for the completions; "open files" are the other files of the held-out
    /// file's folder. Cross-file identifier recall is measured whenever it is not none.
    #[command(flatten)]
    pub context: crate::cli::ContextArgs,
    /// Measure the context's recall only (no completions).
    #[arg(long)]
    pub recall_only: bool,
}

pub fn eval(a: EvalArgs, threads: Option<usize>) -> Result<()> {
    crate::alloc::keep_freed_memory();
    let list = match (&a.heldout, a.adapters.first()) {
        (Some(p), _) => Some(copilot_finetune::data::read_list(p)?),
        (None, Some(d)) => Some(job::heldout_list(d)?),
        (None, None) => None,
    };
    let files = copilot_eval::heldout_files(&a.repo, list.as_deref(), &a.data.options())?;
    let o = copilot_eval::EvalOptions {
        lines_per_file: a.lines_per_file,
        max_samples: a.max_samples,
        cursor: a.cursor,
        seed: a.data.seed,
        completion: copilot_pipeline::CompletionOptions {
            temperature: 0.0,
            max_tokens: a.max_tokens,
            fim: a.fim,
            postprocess: true,
            time_budget: None,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut tasks = copilot_eval::sample_tasks(&files, &o);
    if tasks.is_empty() {
        bail!("no line to complete in the {} held-out files", files.len());
    }
    let completer = Completer::load(&spec(&a.model, threads), &|e| tracing::info!(?e, "load"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = a.context.settings();
    let mut recall = None;
    if settings.sources().any() {
        let repo = std::path::absolute(&a.repo)?;
        let ws = copilot_context::Workspace::new(&repo, settings.clone());
        let stats = ws
            .build_index(&|_| {}, &std::sync::atomic::AtomicBool::new(false))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(
            files = stats.files,
            chunks = stats.chunks,
            "repository indexed"
        );
        let budget = copilot_context::PromptBudget {
            prefix_tokens: o.completion.prefix_tokens,
            suffix_tokens: o.completion.suffix_tokens,
        };
        let counter = completer.token_counter();
        let mut g = copilot_eval::context::Gatherer::new(&ws, &repo, budget);
        let (all_files, _) = copilot_finetune::data::collect(&repo, &a.data.options())?;
        let defined = copilot_eval::context::definitions(&all_files);
        recall = Some(copilot_eval::context::cross_file_recall(
            &mut g, &tasks, &defined, &settings, &counter,
        ));
        for t in &mut tasks {
            let doc = repo.join(&t.rel);
            let snippets = g.snippets(
                &doc,
                &t.text,
                t.cursor,
                settings.sources(),
                &settings,
                &counter,
            );
            t.snippets = copilot_context::to_fim(&snippets);
        }
        g.finish();
    }
    let engine = completer
        .engine()
        .context("evaluation needs the embedded engine")?;
    let mut variants = Vec::new();
    if !a.no_base {
        variants.push(None);
    }
    for d in &a.adapters {
        let lora = copilot_finetune::load_adapter_for_engine(engine, d)
            .with_context(|| format!("loading adapter {}", d.display()))?;
        let name = d.display().to_string();
        engine.add_adapter(name.clone(), lora)?;
        variants.push(Some(name));
    }
    // The latency column is the steady state a user sees: the adapters' merged copies made
    // before the first sample, all of them or (when the budget holds fewer) none, so that
    // no row mixes merged and unmerged samples.
    let names: Vec<String> = variants.iter().flatten().cloned().collect();
    let mut merged = !a.unmerged && !names.is_empty();
    for name in &names {
        merged = merged && engine.merge_now(name.clone())?;
    }
    if merged {
        merged = engine.run_blocking({
            let names = names.clone();
            move |g| {
                let have = g.merged_copies().names();
                names.iter().all(|n| have.contains(n))
            }
        })?;
    }
    if !merged && !names.is_empty() {
        engine.set_merge_budget(0)?;
        if !a.unmerged {
            tracing::info!("the adapters' merged copies do not all fit: served unmerged");
        }
    }
    let rows = if a.recall_only {
        Vec::new()
    } else {
        copilot_eval::evaluate(&completer, &tasks, &variants, &o, a.json, &mut |i, n| {
            if i % 20 == 0 || i == n {
                tracing::info!(done = i, total = n, "evaluating");
            }
        })?
    };
    let report = copilot_eval::Report {
        repo: a.repo.clone(),
        model: completer.description().to_string(),
        cursor: a.cursor,
        files: files.len(),
        samples: tasks.len(),
        context: context_name(settings.sources()),
        recall,
        rows,
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", copilot_eval::table(&report));
    }
    Ok(())
}

/// `none`, `all`, or the sources' names joined by commas.
fn context_name(s: copilot_context::Sources) -> String {
    if s == copilot_context::Sources::ALL {
        return "all".into();
    }
    let names: Vec<&str> = [
        (s.open_files, "open"),
        (s.imports, "imports"),
        (s.index, "index"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}
