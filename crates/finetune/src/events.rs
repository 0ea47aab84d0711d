//! Training examples from the event log (`copilot-lsp finetune REPO --events`): each
//! completion the user accepted and still had at the last retention check becomes a
//! fill-in-the-middle example, the accepted text as the middle and its recorded context as
//! prefix and suffix, laid out by the server's own prompt code (PSM or SPM as `spm_rate`
//! says), with the path header as the server shows it.
//!
//! What is left out, and counted:
//! - completions in held-out files, and any whose recorded code is found in a held-out file
//!   (moved or copied there): evaluation must never see what training saw;
//! - completions in files the data options leave out (globs, vendored folders, files
//!   dropped as generated or minified);
//! - duplicates: the same completion at the same place twice, and completions whose whole
//!   recorded window (prefix, middle and suffix) is still verbatim in a repository file,
//!   which the file's own examples already teach;
//! - a middle too long for a training sequence, or blank.
//!
//! Only the middle and the end-of-text token are learned: the prefix and suffix are an
//! older copy of the repository's code, read as context but not trained on a second time.
//! `weight` repeats each example (2.5: twice, and a third time with probability 0.5).

use std::collections::HashSet;
use std::path::Path;

use copilot_engine::Tokenizer;
use copilot_fim::{Budget, Layout, PromptInput, TokenCounter};
use globset::GlobSet;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::data::{Corpus, DataOptions, Dropped};
use crate::error::{FinetuneError, Result};
use crate::examples::{self, Example, ExampleOptions};

/// Where the events are and how much they weigh.
#[derive(Clone, Debug, PartialEq)]
pub struct EventOptions {
    /// `copilot-lsp`'s data directory (`$XDG_DATA_HOME/copilot-lsp`).
    pub data_dir: std::path::PathBuf,
    /// Copies of each example (in expectation).
    pub weight: f64,
}

/// What the event log gave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventReport {
    /// Suggestions in the log, and those accepted and kept at their last check.
    pub suggestions: usize,
    pub kept: usize,
    /// Kept completions trained on, and the examples made of them (with the weight).
    pub used: usize,
    pub examples: usize,
    pub held_out: usize,
    pub filtered: usize,
    pub duplicates: usize,
    /// Blank, or too long for a training sequence.
    pub unusable: usize,
    pub corrupt_lines: usize,
}

/// Counts tokens with the tokenizer (for cutting the context to the sequence).
struct Tokens<'a>(&'a Tokenizer);

impl TokenCounter for Tokens<'_> {
    fn count(&self, text: &str) -> usize {
        self.0.encode_text(text).map_or(text.len(), |ids| ids.len())
    }
}

/// A completion the log says was accepted and kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub path: String,
    pub prefix: String,
    pub middle: String,
    pub suffix: String,
}

/// The kept completions of the workspace `repo` in the log under `data_dir`, and what the
/// log held.
pub fn kept(data_dir: &Path, repo: &Path) -> Result<(Vec<Kept>, EventReport)> {
    let read = copilot_events::read_workspace(data_dir, repo)
        .map_err(|e| FinetuneError::Other(e.to_string()))?;
    let (all, _) = copilot_events::fold(&read.events);
    let mut report = EventReport {
        suggestions: all.len(),
        corrupt_lines: read.corrupt_lines,
        ..EventReport::default()
    };
    let kept: Vec<Kept> = all
        .iter()
        .filter(|s| s.accepted_chars > 0 && s.kept_at_last_check())
        .filter_map(|s| {
            let ctx = s.context.as_ref()?;
            Some(Kept {
                path: s.shown.path.clone(),
                prefix: ctx.prefix.clone(),
                middle: s.accepted_text().to_string(),
                suffix: ctx.suffix.clone(),
            })
        })
        .collect();
    report.kept = kept.len();
    Ok((kept, report))
}

fn globs(list: &[String]) -> Result<GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for g in list {
        b.add(
            globset::Glob::new(g)
                .map_err(|e| FinetuneError::Options(format!("glob `{g}`: {e}")))?,
        );
    }
    b.build()
        .map_err(|e| FinetuneError::Options(format!("globs: {e}")))
}

/// The examples of `kept` for a run over `corpus` (see the module's rules).
pub fn examples(
    tok: &Tokenizer,
    kept: &[Kept],
    corpus: &Corpus,
    data: &DataOptions,
    opts: &ExampleOptions,
    weight: f64,
    report: &mut EventReport,
) -> Result<Vec<Example>> {
    if !(0.0..=1.0).contains(&opts.spm_rate) {
        return Err(FinetuneError::Options(
            "the SPM rate must lie in [0, 1]".into(),
        ));
    }
    if !weight.is_finite() || weight < 0.0 {
        return Err(FinetuneError::Options(format!(
            "the events' weight must be 0 or more (got {weight})"
        )));
    }
    let include = globs(&data.include)?;
    let exclude = globs(&data.exclude)?;
    let heldout: HashSet<&str> = corpus.heldout.iter().map(|f| f.rel.as_str()).collect();
    let dropped: HashSet<&str> = corpus
        .dropped
        .iter()
        .filter(|(_, why)| !matches!(why, Dropped::Duplicate { .. }))
        .map(|(rel, _)| rel.as_str())
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed ^ 0x6576_656e_7473);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    // Room as file chunks have it: the special tokens and a path header fit beside.
    let room = opts.seq_len.saturating_sub(32).max(opts.seq_len * 3 / 4);
    let counter = Tokens(tok);
    for k in kept {
        let vendored = k.path.split('/').any(crate::data::is_skipped_dir);
        if heldout.contains(k.path.as_str()) {
            report.held_out += 1;
            continue;
        }
        if !include.is_match(&k.path)
            || exclude.is_match(&k.path)
            || vendored
            || dropped.contains(k.path.as_str())
        {
            report.filtered += 1;
            continue;
        }
        if k.middle.trim().is_empty() {
            report.unusable += 1;
            continue;
        }
        let window = format!("{}{}{}", k.prefix, k.middle, k.suffix);
        if corpus.heldout.iter().any(|f| f.text.contains(&window)) {
            report.held_out += 1;
            continue;
        }
        let key = (
            k.path.as_str(),
            k.middle.as_str(),
            tail_chars(&k.prefix, 200),
            head_chars(&k.suffix, 200),
        );
        if !seen.insert(key) || corpus.train.iter().any(|f| f.text.contains(&window)) {
            report.duplicates += 1;
            continue;
        }
        let middle_tokens = counter.count(&k.middle);
        if middle_tokens + 8 > room {
            report.unusable += 1;
            continue;
        }
        let left = room - middle_tokens - 8;
        let (pb, sb) = (left * 3 / 4, left - left * 3 / 4);
        let prefix = copilot_fim::budget::keep_tail(&k.prefix, pb, &counter).0;
        let suffix = copilot_fim::budget::keep_head(&k.suffix, sb, &counter).0;
        let layout = if rng.random_bool(opts.spm_rate) {
            Layout::Spm
        } else {
            Layout::Psm
        };
        let path = opts.with_path.then_some(k.path.as_str());
        let ex = example(tok, prefix, &k.middle, suffix, path, layout)?;
        let copies = weight.floor() as usize + usize::from(rng.random_bool(weight.fract()));
        report.used += 1;
        report.examples += copies;
        for _ in 0..copies {
            out.push(ex.clone());
        }
    }
    Ok(out)
}

fn tail_chars(s: &str, n: usize) -> &str {
    let start = s
        .char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    &s[start..]
}

fn head_chars(s: &str, n: usize) -> &str {
    &s[..s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)]
}

/// One event example: the prompt the server would build (read, not learned), then the
/// middle and `<|endoftext|>` (learned).
pub fn example(
    tok: &Tokenizer,
    prefix: &str,
    middle: &str,
    suffix: &str,
    path: Option<&str>,
    layout: Layout,
) -> Result<Example> {
    let input = PromptInput {
        prefix,
        suffix,
        path,
        snippets: &[],
    };
    let budget = Budget {
        prefix_tokens: usize::MAX / 8,
        suffix_tokens: usize::MAX / 8,
        window: usize::MAX / 2,
        max_new_tokens: 0,
    };
    // The family's format, as its file examples get it (none: left to right).
    let (template, layout) = match examples::template_of(tok) {
        Some(t) => (t, layout),
        None => (&copilot_fim::STARCODER, Layout::LeftToRight),
    };
    let prompt =
        copilot_fim::build_prompt(&input, template, layout, &budget, &examples::ByteCounter);
    let mut ex = Example::default();
    examples::prompt_ids(tok, &prompt, &mut ex)?;
    ex.learn.iter_mut().for_each(|l| *l = false);
    ex.push(tok.encode_text(middle)?, true);
    ex.push([tok.specials().eos], true);
    Ok(ex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SourceFile;

    fn tokenizer() -> Tokenizer {
        let json = copilot_engine::testkit::byte_level_tokenizer_json().to_string();
        Tokenizer::from_json(&json).unwrap()
    }

    fn kept(path: &str, prefix: &str, middle: &str) -> Kept {
        Kept {
            path: path.into(),
            prefix: prefix.into(),
            middle: middle.into(),
            suffix: "\n".into(),
        }
    }

    fn file(rel: &str, text: &str) -> SourceFile {
        SourceFile {
            rel: rel.into(),
            text: text.into(),
        }
    }

    #[test]
    fn only_the_middle_is_learned() {
        let tok = tokenizer();
        let ex = example(
            &tok,
            "def f():\n    ",
            "return 1",
            "\n",
            Some("a.py"),
            Layout::Psm,
        )
        .unwrap();
        let learned: Vec<u32> = ex
            .ids
            .iter()
            .zip(&ex.learn)
            .filter(|(_, &l)| l)
            .map(|(&i, _)| i)
            .collect();
        let mut want = tok.encode_text("return 1").unwrap();
        want.push(tok.specials().eos);
        assert_eq!(learned, want);
        assert!(ex
            .ids
            .contains(&tok.token_id("<fim_middle>").expect("a FIM tokenizer")));
    }

    #[test]
    fn held_out_filtered_and_duplicate_completions_are_left_out_and_counted() {
        let tok = tokenizer();
        let corpus = Corpus {
            train: vec![file("a.py", "import os\nx = 1\n"), file("b.py", "y = 2\n")],
            heldout: vec![file("h.py", "secret = compute()\nz = 3\n")],
            dropped: vec![("gen.py".into(), Dropped::Generated)],
        };
        let list = vec![
            kept("a.py", "def f():\n    ", "return 1"),
            kept("a.py", "def f():\n    ", "return 1"), // the same again
            kept("h.py", "", "secret = 1"),             // a held-out file
            kept("b.py", "secret = ", "compute()"),     // found in the held-out file
            kept("a.py", "import os\n", "x = 1"),       // still verbatim in a.py
            kept("gen.py", "", "z = 0"),                // dropped as generated
            kept("c.rs", "", "let x = 1;"),             // not included
            kept("vendor/v.py", "", "w = 1"),           // vendored
            kept("b.py", "", "   "),                    // blank
            kept("b.py", "", &"q".repeat(400)),         // unusable: too long for a sequence
            kept("new.py", "def g():\n    ", "return 2"),
        ];
        let opts = ExampleOptions {
            seq_len: 64,
            ..ExampleOptions::default()
        };
        let mut r = EventReport::default();
        let ex = examples(
            &tok,
            &list,
            &corpus,
            &DataOptions::default(),
            &opts,
            1.0,
            &mut r,
        )
        .unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            (
                r.used,
                r.examples,
                r.held_out,
                r.duplicates,
                r.filtered,
                r.unusable
            ),
            (2, 2, 2, 2, 3, 2)
        );
        // Nothing of the held-out file reaches the examples.
        let secret = tok.encode_text("secret").unwrap();
        for e in &ex {
            assert!(!e.ids.windows(secret.len()).any(|w| w == secret.as_slice()));
        }
        // Weights: 0 makes none, 2 twice as many, a fraction some in between.
        for (w, lo, hi) in [(0.0, 0, 0), (2.0, 4, 4), (1.5, 2, 4)] {
            let mut r = EventReport::default();
            let n = examples(
                &tok,
                &list,
                &corpus,
                &DataOptions::default(),
                &opts,
                w,
                &mut r,
            )
            .unwrap()
            .len();
            assert!((lo..=hi).contains(&n), "weight {w}: {n}");
            assert_eq!(r.examples, n);
        }
        let mut r = EventReport::default();
        assert!(examples(
            &tok,
            &list,
            &corpus,
            &DataOptions::default(),
            &opts,
            -1.0,
            &mut r
        )
        .is_err());
    }
}
