//! Measured evaluation of completions on held-out files: for sampled lines of files the
//! adapter never saw, delete the line, complete at its start from the code around it
//! through the same pipeline as the server (`copilot_pipeline::Completer`, greedy), and score
//! the first completed line against the original: exact match, edit distance in characters,
//! latency. The base model and each adapter run on the same samples, side by side.
//!
//! Where the cursor sits in the line is a choice (`CursorMode`):
//! - `line-start` (the default): the whole line is removed and the target includes its
//!   indentation. Hardest, and free of tokenisation questions.
//! - `indent`: the cursor is after the line's indentation, as an editor leaves it after
//!   Enter; the target is the code of the line.
//! - `mid`: the cursor is at a seeded random character inside the line's code, as when the
//!   user pauses mid-line (how Copilot-style systems are most often triggered); the target is
//!   the rest of the line. The code before the cursor stays in the document.
//!
//! A prompt that ends inside a run of spaces or a word is one a left-to-right model rarely
//! saw, but FIM training splits documents at random *characters*, so in FIM layouts (the
//! default whenever there is code after the cursor) such prefixes are in distribution.
//!
//! With context (`context.rs`), each line's prompt also holds snippets from the rest of the
//! repository, gathered as the server gathers them.
//!
//! Knows the pipeline and the adapter format; knows nothing of LSP or the command line.

pub mod context;

use std::path::{Path, PathBuf};
use std::time::Instant;

use copilot_finetune::data::{self, DataOptions, SourceFile};
use copilot_pipeline::{CancelToken, Completer, CompletionOptions, CompletionRequest, FimChoice};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Finetune(#[from] copilot_finetune::FinetuneError),
    #[error("completion failed: {0}")]
    Pipeline(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// Where in a sampled line the cursor is put.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CursorMode {
    /// Start of the line; the target includes the indentation.
    #[default]
    LineStart,
    /// After the indentation; the target is the line's code.
    Indent,
    /// A seeded random character inside the code (at least one character left to
    /// complete); the target is the rest of the line.
    Mid,
}

impl CursorMode {
    /// The mode's name, as the command line and the JSON report spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LineStart => "line-start",
            Self::Indent => "indent",
            Self::Mid => "mid",
        }
    }
}

impl std::str::FromStr for CursorMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "line-start" | "start" => Ok(Self::LineStart),
            "indent" => Ok(Self::Indent),
            "mid" | "mid-line" => Ok(Self::Mid),
            other => Err(format!(
                "unknown cursor mode `{other}` (expected line-start, indent or mid)"
            )),
        }
    }
}

/// One hole to fill: the end of line `line` (1-based) of `rel`, from `cursor` on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Task {
    pub rel: String,
    pub line: usize,
    /// The document with the line's text after the cursor removed (its line break kept).
    #[serde(skip)]
    pub text: String,
    /// Byte offset of the cursor in `text`.
    pub cursor: usize,
    /// The line's text before the cursor (empty for `line-start`).
    pub typed: String,
    /// The removed text, trailing whitespace trimmed.
    pub target: String,
    /// Context from the rest of the repository for this line (empty without context).
    #[serde(skip)]
    pub snippets: Vec<copilot_fim::Snippet>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvalOptions {
    /// Lines sampled per held-out file.
    pub lines_per_file: usize,
    /// Cap on samples overall.
    pub max_samples: usize,
    /// Lines whose code is shorter than this (characters) are not sampled.
    pub min_line_chars: usize,
    pub cursor: CursorMode,
    pub seed: u64,
    /// Completion settings (temperature 0 for repeatable numbers).
    pub completion: CompletionOptions,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            lines_per_file: 10,
            max_samples: 200,
            min_line_chars: 4,
            cursor: CursorMode::LineStart,
            seed: 42,
            completion: CompletionOptions {
                temperature: 0.0,
                max_tokens: 48,
                fim: FimChoice::Auto,
                postprocess: true,
                // Quality is measured without the interactive time budget.
                time_budget: None,
                ..Default::default()
            },
        }
    }
}

/// Sample tasks from files: seeded, per file, in a stable order. Pure.
pub fn sample_tasks(files: &[SourceFile], o: &EvalOptions) -> Vec<Task> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let mut tasks = Vec::new();
    for f in files {
        // (line number, start byte, line length without its line break)
        let mut candidates = Vec::new();
        let mut start = 0;
        for (i, raw) in f.text.split_inclusive('\n').enumerate() {
            let line = raw.trim_end_matches(['\n', '\r']);
            if line.trim().chars().count() >= o.min_line_chars {
                candidates.push((i + 1, start, line.len()));
            }
            start += raw.len();
        }
        candidates.shuffle(&mut rng);
        candidates.truncate(o.lines_per_file);
        candidates.sort();
        for (line, start, len) in candidates {
            let end = start + len;
            let code = &f.text[start..end];
            let indent = code.len() - code.trim_start().len();
            let cut = start
                + match o.cursor {
                    CursorMode::LineStart => 0,
                    CursorMode::Indent => indent,
                    CursorMode::Mid => {
                        // Character boundaries from the end of the indentation up to (not
                        // including) the last character of the code.
                        let code_end = code.trim_end().len();
                        let cuts: Vec<usize> = code[indent..code_end]
                            .char_indices()
                            .map(|(i, _)| indent + i)
                            .collect();
                        cuts[rng.random_range(0..cuts.len())]
                    }
                };
            tasks.push(Task {
                rel: f.rel.clone(),
                line,
                text: format!("{}{}", &f.text[..cut], &f.text[end..]),
                cursor: cut,
                typed: f.text[start..cut].to_string(),
                target: f.text[cut..end].trim_end().to_string(),
                snippets: Vec::new(),
            });
        }
    }
    if tasks.len() > o.max_samples {
        tasks.shuffle(&mut rng);
        tasks.truncate(o.max_samples);
        tasks.sort_by(|a, b| (&a.rel, a.line).cmp(&(&b.rel, b.line)));
    }
    tasks
}

/// Levenshtein distance in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Edit similarity, as CodeXGLUE and CrossCodeEval report it: 1 - distance / longer length
/// (in characters), 1 for two empty strings. Bounded per sample, so one long runaway
/// completion weighs no more than any other miss.
pub fn edit_similarity(a: &str, b: &str) -> f64 {
    let longer = a.chars().count().max(b.chars().count());
    if longer == 0 {
        1.0
    } else {
        1.0 - edit_distance(a, b) as f64 / longer as f64
    }
}

/// The line a completion proposes: its first line, trailing whitespace removed.
pub fn first_line(completion: &str) -> &str {
    completion.split('\n').next().unwrap_or("").trim_end()
}

/// One sample's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub rel: String,
    pub line: usize,
    pub typed: String,
    pub target: String,
    pub predicted: String,
    pub exact: bool,
    pub edit_distance: usize,
    pub edit_similarity: f64,
    pub latency_ms: f64,
}

/// A variant against the base model on the same samples (paired).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VsBase {
    /// Samples with a smaller / larger edit distance than the base's.
    pub better: usize,
    pub worse: usize,
    /// Mean of (variant - base) edit distance: negative is a gain.
    pub edit_distance_change: f64,
    /// 95% confidence interval of that mean (paired bootstrap, seeded): a gain is shown
    /// when the whole interval is below zero.
    pub ci95: (f64, f64),
}

/// Bootstrap resamples behind [`VsBase::ci95`].
const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Compare per-sample edit distances of a variant with the base's (same samples, same
/// order). Pure and seeded.
pub fn vs_base(base: &[usize], variant: &[usize], seed: u64) -> VsBase {
    assert_eq!(base.len(), variant.len(), "paired samples");
    let d: Vec<f64> = variant
        .iter()
        .zip(base)
        .map(|(&v, &b)| v as f64 - b as f64)
        .collect();
    let n = d.len();
    let mean = |xs: &mut dyn Iterator<Item = f64>| xs.sum::<f64>() / n.max(1) as f64;
    let change = mean(&mut d.iter().copied());
    let ci95 = if n == 0 {
        (f64::NAN, f64::NAN)
    } else {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut means: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
            .map(|_| mean(&mut (0..n).map(|_| d[rng.random_range(0..n)])))
            .collect();
        means.sort_by(f64::total_cmp);
        let at = |q: f64| means[((q * (means.len() - 1) as f64).round()) as usize];
        (at(0.025), at(0.975))
    };
    VsBase {
        better: d.iter().filter(|&&x| x < 0.0).count(),
        worse: d.iter().filter(|&&x| x > 0.0).count(),
        edit_distance_change: change,
        ci95,
    }
}

/// Scores of one model variant.
#[derive(Clone, Debug, Serialize)]
pub struct Scores {
    /// `base`, or the adapter's folder.
    pub name: String,
    pub samples: usize,
    pub exact_match: f64,
    pub mean_edit_distance: f64,
    /// Mean [`edit_similarity`] (0 to 1, higher is better).
    pub edit_similarity: f64,
    pub mean_latency_ms: f64,
    /// Paired comparison with the base model (when the base was evaluated too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_base: Option<VsBase>,
    /// Filled with `keep_outcomes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<Outcome>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub repo: PathBuf,
    pub model: String,
    pub cursor: CursorMode,
    pub files: usize,
    pub samples: usize,
    /// The context sources the completions used (`none`, `all`, ...).
    pub context: String,
    /// Cross-file identifier recall of the context (when measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<context::RecallReport>,
    pub rows: Vec<Scores>,
}

/// A variant to evaluate: the base model (None) or an adapter registered with the engine
/// under that name.
pub type Variant = Option<String>;

/// Complete every task with every variant.
pub fn evaluate(
    completer: &Completer,
    tasks: &[Task],
    variants: &[Variant],
    o: &EvalOptions,
    keep_outcomes: bool,
    on_sample: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Scores>> {
    let total = tasks.len() * variants.len();
    let mut done = 0;
    let mut rows = Vec::new();
    let mut base_distances: Option<Vec<usize>> = None;
    for v in variants {
        let mut outcomes = Vec::new();
        for t in tasks {
            let req = CompletionRequest {
                text: t.text.clone(),
                cursor: t.cursor,
                path: Some(t.rel.clone()),
                adapter: v.clone(),
                ids: None,
                snippets: t.snippets.clone(),
                options: o.completion.clone(),
            };
            let started = Instant::now();
            let c = completer
                .complete_blocking(req, CancelToken::new())
                .map_err(|e| EvalError::Pipeline(e.to_string()))?;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let predicted = first_line(&c.text).to_string();
            outcomes.push(Outcome {
                rel: t.rel.clone(),
                line: t.line,
                typed: t.typed.clone(),
                exact: predicted == t.target,
                edit_distance: edit_distance(&predicted, &t.target),
                edit_similarity: edit_similarity(&predicted, &t.target),
                target: t.target.clone(),
                predicted,
                latency_ms,
            });
            done += 1;
            on_sample(done, total);
        }
        let n = outcomes.len().max(1) as f64;
        let distances: Vec<usize> = outcomes.iter().map(|o| o.edit_distance).collect();
        let vs = match (v, &base_distances) {
            (Some(_), Some(base)) => Some(vs_base(base, &distances, o.seed)),
            _ => None,
        };
        if v.is_none() {
            base_distances = Some(distances);
        }
        rows.push(Scores {
            name: v.clone().unwrap_or_else(|| "base".into()),
            samples: outcomes.len(),
            exact_match: outcomes.iter().filter(|o| o.exact).count() as f64 / n,
            mean_edit_distance: outcomes.iter().map(|o| o.edit_distance as f64).sum::<f64>() / n,
            edit_similarity: outcomes.iter().map(|o| o.edit_similarity).sum::<f64>() / n,
            mean_latency_ms: outcomes.iter().map(|o| o.latency_ms).sum::<f64>() / n,
            vs_base: vs,
            outcomes: if keep_outcomes { outcomes } else { Vec::new() },
        });
    }
    Ok(rows)
}

/// The held-out files of `repo`: those listed in `list` (repository-relative), read and kept
/// only if they still pass the data filters; without a list, the split `finetune` makes
/// with the same options.
pub fn heldout_files(
    repo: &Path,
    list: Option<&[String]>,
    data_opts: &DataOptions,
) -> Result<Vec<SourceFile>> {
    match list {
        Some(rels) => {
            let mut files = Vec::new();
            for rel in rels {
                let p = repo.join(rel);
                match std::fs::read_to_string(&p) {
                    Ok(text) => files.push(SourceFile {
                        rel: rel.clone(),
                        text,
                    }),
                    Err(e) => tracing::warn!(path = %p.display(), %e, "held-out file skipped"),
                }
            }
            if files.is_empty() {
                return Err(EvalError::Other(format!(
                    "none of the {} held-out files exists under {}",
                    rels.len(),
                    repo.display()
                )));
            }
            Ok(files)
        }
        None => Ok(data::prepare(repo, data_opts)?.heldout),
    }
}

/// The report as a plain-text table.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{} held-out files of {}, {} lines (cursor: {}, context: {}), model {}\n",
        r.files,
        r.repo.display(),
        r.samples,
        r.cursor.as_str(),
        r.context,
        r.model
    );
    if let Some(recall) = &r.recall {
        s += &context::recall_table(recall);
    }
    let w = r
        .rows
        .iter()
        .map(|x| x.name.len())
        .max()
        .unwrap_or(4)
        .max(7);
    s += &format!(
        "{:<w$}  {:>11}  {:>13}  {:>15}  {:>12}  {}\n",
        "variant",
        "exact match",
        "edit distance",
        "edit similarity",
        "latency (ms)",
        "edit distance vs base: better/worse, change [95% CI]"
    );
    for x in &r.rows {
        let vs = x.vs_base.as_ref().map_or(String::new(), |c| {
            format!(
                "{}/{}, {:+.2} [{:+.2}, {:+.2}]",
                c.better, c.worse, c.edit_distance_change, c.ci95.0, c.ci95.1
            )
        });
        s += &format!(
            "{:<w$}  {:>10.1}%  {:>13.2}  {:>15.3}  {:>12.1}  {}\n",
            x.name,
            100.0 * x.exact_match,
            x.mean_edit_distance,
            x.edit_similarity,
            x.mean_latency_ms,
            vs
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_characters() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("é😀", "e😀"), 1);
        assert_eq!(first_line("x = 1  \ny = 2"), "x = 1");
        assert_eq!(edit_similarity("", ""), 1.0);
        assert_eq!(edit_similarity("abc", ""), 0.0);
        assert!((edit_similarity("kitten", "sitting") - (1.0 - 3.0 / 7.0)).abs() < 1e-12);
    }

    #[test]
    fn tasks_empty_the_line_and_put_the_cursor_at_its_start() {
        let f = SourceFile {
            rel: "a.py".into(),
            text: "def f(x):\n    y = x + 1\n\n    return y\n".into(),
        };
        let o = EvalOptions {
            lines_per_file: 10,
            ..Default::default()
        };
        let tasks = sample_tasks(&[f], &o);
        assert_eq!(tasks.len(), 3);
        let t = &tasks[1];
        assert_eq!((t.line, t.target.as_str()), (2, "    y = x + 1"));
        assert_eq!(t.text, "def f(x):\n\n\n    return y\n");
        assert_eq!(&t.text[..t.cursor], "def f(x):\n");
        let again = sample_tasks(
            &[SourceFile {
                rel: "a.py".into(),
                text: "def f(x):\n    y = x + 1\n\n    return y\n".into(),
            }],
            &EvalOptions {
                lines_per_file: 1,
                ..o
            },
        );
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn paired_comparison_counts_and_bounds_the_change() {
        let base = [10, 10, 10, 10, 10, 10, 10, 10];
        let gain = [8, 9, 10, 7, 10, 8, 9, 6];
        let c = vs_base(&base, &gain, 1);
        assert_eq!((c.better, c.worse), (6, 0));
        assert!((c.edit_distance_change + 1.625).abs() < 1e-12);
        assert!(c.ci95.0 <= c.edit_distance_change && c.edit_distance_change <= c.ci95.1);
        assert!(
            c.ci95.1 < 0.0,
            "a consistent gain has its whole interval below zero"
        );
        // Noise: as many worse as better, the interval straddles zero.
        let noise = [12, 8, 11, 9, 13, 7, 10, 10];
        let c = vs_base(&base, &noise, 1);
        assert_eq!((c.better, c.worse), (3, 3));
        assert!(c.ci95.0 < 0.0 && c.ci95.1 > 0.0);
        assert_eq!(vs_base(&base, &base, 1).ci95, (0.0, 0.0));
    }

    #[test]
    fn cursor_modes_keep_what_was_typed_and_ask_for_the_rest() {
        let text = "def f(x):\n    yé = x + 1\n    return yé\n";
        let files = [SourceFile {
            rel: "a.py".into(),
            text: text.into(),
        }];
        let with = |cursor| {
            sample_tasks(
                &files,
                &EvalOptions {
                    lines_per_file: 10,
                    cursor,
                    ..Default::default()
                },
            )
        };
        let indent = with(CursorMode::Indent);
        assert_eq!(indent[1].typed, "    ");
        assert_eq!(indent[1].target, "yé = x + 1");
        assert_eq!(indent[1].text, "def f(x):\n    \n    return yé\n");
        assert_eq!(&indent[1].text[..indent[1].cursor], "def f(x):\n    ");
        for seed in 0..50 {
            let mid = sample_tasks(
                &files,
                &EvalOptions {
                    lines_per_file: 10,
                    cursor: CursorMode::Mid,
                    seed,
                    ..Default::default()
                },
            );
            assert_eq!(mid.len(), 3);
            for (t, line) in mid.iter().zip(text.lines()) {
                // What was typed plus what is asked for is the line; at least one character
                // is left to complete and the cut is after the indentation.
                assert_eq!(format!("{}{}", t.typed, t.target), line);
                assert!(!t.target.is_empty());
                assert!(t
                    .typed
                    .starts_with(&line[..line.len() - line.trim_start().len()]));
                assert_eq!(
                    &t.text[..t.cursor],
                    &text[..text.find(line).unwrap() + t.typed.len()]
                );
            }
        }
        for m in [CursorMode::LineStart, CursorMode::Indent, CursorMode::Mid] {
            // The name round-trips, and is the one the JSON report writes.
            assert_eq!(m.as_str().parse::<CursorMode>(), Ok(m));
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        assert!("middle"
            .parse::<CursorMode>()
            .unwrap_err()
            .contains("line-start"));
    }
}
