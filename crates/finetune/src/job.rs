//! One fine-tuning job end to end, as `copilot-lsp finetune REPO --out DIR` runs it: load the
//! model, prepare the repository's files, make and pack examples, train, and write the
//! adapter (PEFT format), the train and held-out lists and a training log into `DIR`.

use std::path::{Path, PathBuf};

use copilot_engine::{load, Model, ModelSpec, Tokenizer};
use serde::Serialize;

use crate::data::{self, DataOptions, HELDOUT_FILE, TRAIN_FILE};
use crate::error::{io_err, FinetuneError, Result};
use crate::events::{self, EventOptions, EventReport};
use crate::examples::{self, ExampleOptions};
use crate::memory;
use crate::train::{self, TrainOptions, TrainProgress, TrainSummary};

/// Name of the JSON log written beside the adapter.
pub const LOG_FILE: &str = "training_log.json";

#[derive(Clone, Debug)]
pub struct JobOptions {
    pub repo: PathBuf,
    pub out: PathBuf,
    pub model: ModelSpec,
    pub data: DataOptions,
    pub examples: ExampleOptions,
    pub train: TrainOptions,
    /// Held-out sequences scored for the loss report (0: skip).
    pub eval_sequences: usize,
    /// Also train on the completions this workspace's user kept (the event log).
    pub events: Option<EventOptions>,
}

/// What the job reports.
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    pub model: String,
    pub train_files: usize,
    pub heldout_files: usize,
    pub dropped_files: usize,
    pub sequences: usize,
    pub seq_len: usize,
    /// Examples by layout: left-to-right, PSM, SPM (the files').
    pub examples: (usize, usize, usize),
    /// What the event log gave (with `--events`).
    pub events: Option<EventReport>,
    pub target_tokens_per_epoch: usize,
    pub summary: TrainSummary,
    /// Mean loss (nats/token) on held-out sequences, base model and adapter.
    pub heldout_loss_base: Option<f64>,
    pub heldout_loss_adapter: Option<f64>,
    pub out: PathBuf,
}

/// Load the model and tokenizer of `spec`.
pub fn load_model(spec: &ModelSpec) -> Result<(Model, Tokenizer)> {
    let files = load::resolve(spec, &mut |f| tracing::info!(?f, "fetching"))?;
    let device = load::select_device(spec.device)?;
    let dtype = load::select_dtype(spec.dtype, &device)?;
    let cfg = load::load_config(&files.config)?;
    let tok = load::load_tokenizer(&files.tokenizer)?;
    let model = load::load_model(&files, &cfg, &device, dtype)?;
    Ok((model, tok))
}

pub fn run(
    o: &JobOptions,
    on_progress: &mut dyn FnMut(&TrainProgress) -> bool,
) -> Result<JobReport> {
    let corpus = data::prepare(&o.repo, &o.data)?;
    std::fs::create_dir_all(&o.out).map_err(io_err(&o.out))?;
    data::write_list(&o.out.join(TRAIN_FILE), &rels(&corpus.train))?;
    data::write_list(&o.out.join(HELDOUT_FILE), &rels(&corpus.heldout))?;
    for (rel, why) in &corpus.dropped {
        tracing::debug!(rel, ?why, "left out");
    }

    let (model, tok) = load_model(&o.model)?;
    let mut ex = o.examples.clone();
    ex.seq_len = ex.seq_len.min(model.config().n_positions);
    let (extra, event_report) = match &o.events {
        Some(ev) => {
            let (kept, mut r) = events::kept(&ev.data_dir, &o.repo)?;
            let extra = events::examples(&tok, &kept, &corpus, &o.data, &ex, ev.weight, &mut r)?;
            tracing::info!(report = ?r, "examples from the event log");
            (extra, Some(r))
        }
        None => (Vec::new(), None),
    };
    let packed = if ex.context_tokens > 0 {
        with_context(&o.repo, &corpus, &tok, extra, &ex)?
    } else {
        examples::build_with(&tok, &corpus.train, extra, &ex)?
    };
    tracing::info!(
        sequences = packed.sequences.len(),
        tokens = packed.target_tokens(),
        examples = ?packed.counts,
        "examples packed"
    );
    let mut topts = o.train.clone();
    if topts.base_model.is_none() {
        topts.base_model = Some(o.model.model.clone());
    }
    if topts.forward_batch.is_none() && model.device().is_cpu() {
        if let Some(available) = memory::available_bytes() {
            let per_sequence = memory::bytes_per_sequence(model.config(), packed.seq_len);
            let fb = memory::forward_batch(topts.batch_size, per_sequence, available)?;
            if fb < topts.batch_size {
                tracing::warn!(
                    batch = topts.batch_size,
                    forward_batch = fb,
                    gb_per_sequence = per_sequence as f64 / 1e9,
                    gb_available = available as f64 / 1e9,
                    "a micro-batch does not fit in memory: running it in smaller passes \
                     (the same gradients)"
                );
            }
            topts.forward_batch = Some(fb);
        }
    }
    let (adapter, summary) = train::train(&model, &packed, &topts, &o.out, on_progress)?;
    adapter.save(&o.out)?;

    let (mut base_loss, mut adapter_loss) = (None, None);
    if o.eval_sequences > 0 && !corpus.heldout.is_empty() {
        let held = examples::build(&tok, &corpus.heldout, &ex)?;
        let bs = topts.batch_size;
        base_loss = Some(train::eval_loss(&model, None, &held, bs, o.eval_sequences)?);
        let lora = adapter.to_lora(model.config().n_layer);
        adapter_loss = Some(train::eval_loss(
            &model,
            Some(&lora),
            &held,
            bs,
            o.eval_sequences,
        )?);
    }
    let report = JobReport {
        model: o.model.model.clone(),
        train_files: corpus.train.len(),
        heldout_files: corpus.heldout.len(),
        dropped_files: corpus.dropped.len(),
        sequences: packed.sequences.len(),
        seq_len: packed.seq_len,
        examples: packed.counts,
        events: event_report,
        target_tokens_per_epoch: packed.target_tokens(),
        summary,
        heldout_loss_base: base_loss,
        heldout_loss_adapter: adapter_loss,
        out: o.out.clone(),
    };
    let log = o.out.join(LOG_FILE);
    std::fs::write(
        &log,
        serde_json::to_string_pretty(&report).expect("report serialises"),
    )
    .map_err(io_err(&log))?;
    Ok(report)
}

/// Counts tokens with the model's tokenizer.
struct TokenizerCount<'a>(&'a Tokenizer);

impl copilot_fim::TokenCounter for TokenizerCount<'_> {
    fn count(&self, text: &str) -> usize {
        self.0
            .encode_text(text)
            .map_or(text.len() / 3 + 1, |v| v.len())
    }
}

/// The training examples with context gathered as the server gathers it (the same
/// crate): the repository indexed without its held-out files, which are never a source,
/// and each training file's folder "open" while its examples are made.
fn with_context(
    repo: &Path,
    corpus: &data::Corpus,
    tok: &Tokenizer,
    extra: Vec<examples::Example>,
    ex: &ExampleOptions,
) -> Result<examples::Packed> {
    let repo = std::path::absolute(repo).map_err(io_err(repo))?;
    let settings = copilot_context::ContextSettings {
        max_tokens: ex.context_tokens,
        ..Default::default()
    };
    let ws = copilot_context::Workspace::new(&repo, settings.clone());
    ws.exclude(corpus.heldout.iter().map(|f| repo.join(&f.rel)));
    let stats = ws
        .build_index(&|_| {}, &std::sync::atomic::AtomicBool::new(false))
        .map_err(|e| FinetuneError::Options(e.to_string()))?;
    tracing::info!(
        files = stats.files,
        chunks = stats.chunks,
        "repository indexed for context"
    );
    let counter = TokenizerCount(tok);
    let mut g = copilot_context::offline::Gatherer::new(
        &ws,
        &repo,
        copilot_context::PromptBudget::default(),
    );
    let mut shown = 0usize;
    let mut examples_with = 0usize;
    let packed =
        examples::build_with_context(tok, &corpus.train, extra, ex, &mut |f, text, cursor| {
            let doc = repo.join(&f.rel);
            let s = g.snippets(&doc, text, cursor, settings.sources(), &settings, &counter);
            shown += s.len();
            examples_with += usize::from(!s.is_empty());
            copilot_context::to_fim(&s)
        })?;
    g.finish();
    tracing::info!(
        snippets = shown,
        examples_with,
        "context gathered for the examples"
    );
    Ok(packed)
}

fn rels(fs: &[data::SourceFile]) -> Vec<&str> {
    fs.iter().map(|f| f.rel.as_str()).collect()
}

/// The held-out list of an adapter folder (written by [`run`]).
pub fn heldout_list(adapter_dir: &Path) -> Result<Vec<String>> {
    let p = adapter_dir.join(HELDOUT_FILE);
    if !p.is_file() {
        return Err(FinetuneError::File {
            path: p,
            message: "no held-out list (was this adapter trained by `copilot-lsp finetune`?)"
                .into(),
        });
    }
    data::read_list(&p)
}
