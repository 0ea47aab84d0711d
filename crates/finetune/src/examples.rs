//! Training examples made the way the base model was trained (bigcode's Megatron-LM
//! `permute`): each file is cut into chunks that fit a sequence, a `fim_rate` share of the
//! chunks is split at two random *character* positions into prefix, middle and suffix and laid
//! out PSM or SPM (`spm_rate`), the rest stay left-to-right; every example ends with
//! `<|endoftext|>`. The layout comes from `copilot_fim::build_prompt`, the very code that
//! builds the server's prompts, so training and serving cannot disagree. Examples are then
//! packed end to end into sequences of `seq_len + 1` tokens (inputs and shifted targets).
//!
//! The path header (`# path: x.py`) is context the server always supplies, so its tokens
//! are inputs but not targets: learned as targets, a header repeated in every example
//! teaches the model to *write* `# path:` wherever a file might start (seen on `requests`:
//! the adapter began half its completions with it).
//!
//! With context (`build_with_context`), each example's prompt also holds the snippets the
//! context crate gathers for its cursor, as the server's prompts do; like the header they
//! are read, never learned.
//!
//! No I/O, no model: text and a tokenizer in, token ids out.

use copilot_engine::Tokenizer;
use copilot_fim::{Budget, Layout, Piece, Prompt, PromptInput, Snippet, Template, TokenCounter};
use rand::{Rng, SeedableRng};

use crate::data::SourceFile;
use crate::error::{FinetuneError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct ExampleOptions {
    /// Tokens per training sequence (inputs; targets are shifted by one).
    pub seq_len: usize,
    /// Share of chunks turned into fill-in-the-middle examples.
    pub fim_rate: f64,
    /// Share of FIM examples in SPM order (bigcode's variant), the rest PSM.
    pub spm_rate: f64,
    /// Show the file's path to the model as the server does.
    pub with_path: bool,
    pub seed: u64,
    /// Tokens of each sequence left for context snippets (0 without context): chunks are
    /// cut that much smaller.
    pub context_tokens: usize,
}

impl Default for ExampleOptions {
    fn default() -> Self {
        Self {
            seq_len: 1024,
            fim_rate: 0.5,
            spm_rate: 0.5,
            with_path: true,
            seed: 42,
            context_tokens: 0,
        }
    }
}

/// Sequences of `seq_len + 1` ids; `valid[i]` of them are real (the rest is padding that the
/// loss ignores, only ever in the last sequence).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packed {
    pub seq_len: usize,
    pub sequences: Vec<Vec<u32>>,
    pub valid: Vec<usize>,
    /// Per sequence and position: whether the token counts in the loss when it is a target
    /// (false for path headers and padding).
    pub learn: Vec<Vec<bool>>,
    /// Examples by layout: (left-to-right, PSM, SPM).
    pub counts: (usize, usize, usize),
}

impl Packed {
    /// Number of target tokens that count in the loss.
    pub fn target_tokens(&self) -> usize {
        (0..self.sequences.len()).map(|i| self.targets(i)).sum()
    }

    /// Whether target `j` of sequence `i` (the token at position `j + 1`) counts in the loss.
    pub fn learns(&self, i: usize, j: usize) -> bool {
        j + 1 < self.valid[i] && self.learn[i][j + 1]
    }

    /// Number of targets of sequence `i` that count in the loss.
    pub fn targets(&self, i: usize) -> usize {
        (0..self.seq_len).filter(|&j| self.learns(i, j)).count()
    }

    /// A fingerprint of the ids, to check on resume that the data did not change.
    pub fn fingerprint(&self) -> u64 {
        // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
        let mut h: u64 = 0xcbf29ce484222325;
        for s in &self.sequences {
            for &id in s {
                for b in id.to_le_bytes() {
                    h ^= b as u64;
                    h = h.wrapping_mul(0x100000001b3);
                }
            }
        }
        h
    }
}

/// Budgets large enough that `build_prompt` never trims a chunk (trimming would break the
/// prefix-middle-suffix contiguity the model must learn); chunks are sized beforehand.
const NO_TRIM: usize = 1 << 28;

/// Byte length as the token count: an upper bound for byte-level BPE, and free. Only used
/// against [`NO_TRIM`] budgets.
pub(crate) struct ByteCounter;

impl TokenCounter for ByteCounter {
    fn count(&self, text: &str) -> usize {
        text.len()
    }
}

/// A training example: ids, and whether each is learned as a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub learn: Vec<bool>,
}

impl Example {
    pub(crate) fn push(&mut self, ids: impl IntoIterator<Item = u32>, learn: bool) {
        for id in ids {
            self.ids.push(id);
            self.learn.push(learn);
        }
    }
}

/// The model family's FIM template, found from the tokenizer's special tokens (as the
/// pipeline finds it); None when it has none (then every example is left-to-right).
pub fn template_of(tok: &Tokenizer) -> Option<&'static Template> {
    Template::detect(|s| tok.token_id(s).is_some())
}

/// The id of a family's special token string.
fn special_id(tok: &Tokenizer, s: &str) -> Result<u32> {
    tok.token_id(s)
        .ok_or_else(|| FinetuneError::Other(format!("the tokenizer has no `{s}` token")))
}

/// Ids of a prompt's pieces, specials spliced in, text encoded piece by piece (as the
/// pipeline does); the prompt's path header and snippets are read but not learned.
pub(crate) fn prompt_ids(tok: &Tokenizer, prompt: &Prompt, out: &mut Example) -> Result<()> {
    for (i, p) in prompt.pieces.iter().enumerate() {
        match p {
            Piece::Special(s) => {
                let text = prompt.template.string(*s).unwrap_or(s.as_str());
                out.push([special_id(tok, text)?], true)
            }
            Piece::Text(t) => out.push(
                tok.encode_text(t)?,
                prompt.header != Some(i) && !prompt.snippet_pieces.contains(&i),
            ),
        }
    }
    Ok(())
}

/// Cut `text` at line boundaries into chunks of at most about `max_tokens` tokens (a single
/// longer line is cut at a character boundary).
pub fn chunk(tok: &Tokenizer, text: &str, max_tokens: usize) -> Result<Vec<String>> {
    let max_tokens = max_tokens.max(8);
    let mut chunks = Vec::new();
    let mut cur = String::new();
    let mut cur_tokens = 0;
    for line in text.split_inclusive('\n') {
        let n = tok.encode_text(line)?.len();
        if cur_tokens + n > max_tokens && !cur.is_empty() {
            chunks.push(std::mem::take(&mut cur));
            cur_tokens = 0;
        }
        if n > max_tokens {
            // A very long line: cut it by characters, proportionally.
            let chars: Vec<char> = line.chars().collect();
            let per = (chars.len() * max_tokens / n).max(1);
            for piece in chars.chunks(per) {
                chunks.push(piece.iter().collect());
            }
            continue;
        }
        cur.push_str(line);
        cur_tokens += n;
    }
    if !cur.trim().is_empty() {
        chunks.push(cur);
    }
    Ok(chunks)
}

/// Byte offsets of two sorted random character positions of `text` (0..=len).
fn split_points(text: &str, rng: &mut impl Rng) -> (usize, usize) {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let a = bounds[rng.random_range(0..bounds.len())];
    let b = bounds[rng.random_range(0..bounds.len())];
    (a.min(b), a.max(b))
}

/// One example: `chunk` laid out by `layout` in the model family's format (split at `(a, b)`
/// for FIM), then the middle and the family's end-of-middle token (FIM) or end of text;
/// every token is learned but the path header's. A layout the family was not trained with
/// becomes the one it was; without FIM tokens, every example is left-to-right.
pub fn example(
    tok: &Tokenizer,
    chunk: &str,
    path: Option<&str>,
    layout: Layout,
    cut: (usize, usize),
) -> Result<Example> {
    example_with(tok, chunk, path, &[], layout, cut)
}

/// [`example`] with context snippets before the code (read, not learned).
pub fn example_with(
    tok: &Tokenizer,
    chunk: &str,
    path: Option<&str>,
    snippets: &[Snippet],
    layout: Layout,
    (a, b): (usize, usize),
) -> Result<Example> {
    let (template, layout) = match template_of(tok) {
        Some(t) => (t, t.trained(layout)),
        None => (&copilot_fim::STARCODER, Layout::LeftToRight),
    };
    let budget = Budget {
        prefix_tokens: NO_TRIM,
        suffix_tokens: NO_TRIM,
        window: NO_TRIM * 4,
        max_new_tokens: 0,
    };
    let mut ex = Example::default();
    match layout {
        Layout::LeftToRight => {
            let input = PromptInput {
                prefix: chunk,
                suffix: "",
                path,
                snippets,
            };
            let prompt = copilot_fim::build_prompt(&input, template, layout, &budget, &ByteCounter);
            prompt_ids(tok, &prompt, &mut ex)?;
            ex.push([tok.specials().eos], true);
        }
        Layout::Psm | Layout::Spm => {
            let input = PromptInput {
                prefix: &chunk[..a],
                suffix: &chunk[b..],
                path,
                snippets,
            };
            let prompt = copilot_fim::build_prompt(&input, template, layout, &budget, &ByteCounter);
            prompt_ids(tok, &prompt, &mut ex)?;
            ex.push(tok.encode_text(&chunk[a..b])?, true);
            ex.push([special_id(tok, template.end_of_middle())?], true);
        }
    }
    Ok(ex)
}

/// Make the examples of `files` and pack them into sequences.
pub fn build(tok: &Tokenizer, files: &[SourceFile], opts: &ExampleOptions) -> Result<Packed> {
    build_with(tok, files, Vec::new(), opts)
}

/// [`build`], with `extra` examples (the event log's) packed after the files' ones
/// (training shuffles the sequences).
pub fn build_with(
    tok: &Tokenizer,
    files: &[SourceFile],
    extra: Vec<Example>,
    opts: &ExampleOptions,
) -> Result<Packed> {
    build_with_context(tok, files, extra, opts, &mut |_, _, _| Vec::new())
}

/// Context for an example: given the file, the text the editor would hold (the file with
/// the example's middle removed) and the cursor's byte offset in it, the snippets.
pub type ContextFn<'a> = dyn FnMut(&SourceFile, &str, usize) -> Vec<Snippet> + 'a;

/// [`build_with`], each file example's prompt holding the snippets `context` gives for
/// its cursor.
pub fn build_with_context(
    tok: &Tokenizer,
    files: &[SourceFile],
    extra: Vec<Example>,
    opts: &ExampleOptions,
    context: &mut ContextFn,
) -> Result<Packed> {
    if opts.seq_len < 16 {
        return Err(FinetuneError::Options(format!(
            "sequence length {} is too short",
            opts.seq_len
        )));
    }
    if !(0.0..=1.0).contains(&opts.fim_rate) || !(0.0..=1.0).contains(&opts.spm_rate) {
        return Err(FinetuneError::Options(
            "FIM and SPM rates must lie in [0, 1]".into(),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let template = template_of(tok);
    let mut stream = Example::default();
    let mut counts = (0, 0, 0);
    // Room for the special tokens and a path header inside one sequence.
    // Context takes its room out of the chunk, down to half the sequence.
    let floor = opts.seq_len * 3 / 4 - opts.context_tokens.min(opts.seq_len / 4);
    let chunk_tokens = opts
        .seq_len
        .saturating_sub(32 + opts.context_tokens)
        .max(floor);
    for f in files {
        let path = opts.with_path.then_some(f.rel.as_str());
        let mut offset = 0;
        for c in chunk(tok, &f.text, chunk_tokens)? {
            let chunk_start = offset;
            offset += c.len();
            let drawn = if rng.random_bool(opts.fim_rate) {
                if rng.random_bool(opts.spm_rate) {
                    Layout::Spm
                } else {
                    Layout::Psm
                }
            } else {
                Layout::LeftToRight
            };
            // As the family was trained: Qwen2.5-Coder's SPM draws become PSM.
            let layout = template.map_or(Layout::LeftToRight, |t| t.trained(drawn));
            match layout {
                Layout::LeftToRight => counts.0 += 1,
                Layout::Psm => counts.1 += 1,
                Layout::Spm => counts.2 += 1,
            }
            let cut = match layout {
                Layout::LeftToRight => (0, 0),
                _ => split_points(&c, &mut rng),
            };
            // The editor's view: the file without the part the model is to write.
            let snippets = if opts.context_tokens > 0 {
                let (a, b) = match layout {
                    Layout::LeftToRight => (0, c.len()),
                    _ => cut,
                };
                let text = format!(
                    "{}{}",
                    &f.text[..chunk_start + a],
                    &f.text[chunk_start + b..]
                );
                context(f, &text, chunk_start + a)
            } else {
                Vec::new()
            };
            let ex = example_with(tok, &c, path, &snippets, layout, cut)?;
            stream.ids.extend(ex.ids);
            stream.learn.extend(ex.learn);
        }
    }
    for ex in extra {
        stream.ids.extend(ex.ids);
        stream.learn.extend(ex.learn);
    }
    let mut packed = pack(&stream, opts.seq_len, tok.specials().eos);
    packed.counts = counts;
    Ok(packed)
}

/// Cut a token stream into windows of `seq_len + 1` overlapping by one token (the last
/// target of one is the first input of the next), padding the last with `pad` (never
/// learned); each token keeps its `learn` flag.
pub fn pack(stream: &Example, seq_len: usize, pad: u32) -> Packed {
    let mut sequences = Vec::new();
    let mut valid = Vec::new();
    let mut learn = Vec::new();
    let mut start = 0;
    let n = stream.ids.len();
    while start + 1 < n {
        let end = (start + seq_len + 1).min(n);
        let mut s = stream.ids[start..end].to_vec();
        let mut l = stream.learn[start..end].to_vec();
        valid.push(s.len());
        s.resize(seq_len + 1, pad);
        l.resize(seq_len + 1, false);
        sequences.push(s);
        learn.push(l);
        start += seq_len;
    }
    Packed {
        seq_len,
        sequences,
        valid,
        learn,
        counts: (0, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let json = copilot_engine::testkit::byte_level_tokenizer_json().to_string();
        Tokenizer::from_json(&json).unwrap()
    }

    #[test]
    fn fim_examples_follow_the_prompt_code_then_middle_and_eos() {
        let tok = tokenizer();
        let sp = tok.specials();
        let id = |s: &str| tok.token_id(s).unwrap();
        let (pre, suf, mid) = (id("<fim_prefix>"), id("<fim_suffix>"), id("<fim_middle>"));
        let text = "def f(x):\n    return x\n";
        let enc = |s: &str| tok.encode_text(s).unwrap();
        let (a, b) = (4, 10);
        let psm = example(&tok, text, None, Layout::Psm, (a, b)).unwrap().ids;
        let mut want = vec![pre];
        want.extend(enc(&text[..a]));
        want.push(suf);
        want.extend(enc(&text[b..]));
        want.push(mid);
        want.extend(enc(&text[a..b]));
        want.push(sp.eos);
        assert_eq!(psm, want);
        // SPM as bigcode trained it: <fim_prefix><fim_suffix>S<fim_middle>P, then M.
        let spm = example(&tok, text, None, Layout::Spm, (a, b)).unwrap().ids;
        let mut want = vec![pre, suf];
        want.extend(enc(&text[b..]));
        want.push(mid);
        want.extend(enc(&text[..a]));
        want.extend(enc(&text[a..b]));
        want.push(sp.eos);
        assert_eq!(spm, want);
        let l2r = example(&tok, text, None, Layout::LeftToRight, (0, 0))
            .unwrap()
            .ids;
        let mut want = enc(text);
        want.push(sp.eos);
        assert_eq!(l2r, want);
    }

    #[test]
    fn the_path_header_is_read_but_not_learned() {
        let tok = tokenizer();
        let text = "def f(x):\n    return x\n";
        let header = tok.encode_text("# path: pkg/m.py\n").unwrap();
        for (layout, cut) in [
            (Layout::LeftToRight, (0, 0)),
            (Layout::Psm, (4, 10)),
            (Layout::Spm, (4, 10)),
        ] {
            let ex = example(&tok, text, Some("pkg/m.py"), layout, cut).unwrap();
            let plain = example(&tok, text, None, layout, cut).unwrap();
            // The header is in the input, all of it and only it unlearned.
            assert_eq!(ex.ids.len(), plain.ids.len() + header.len(), "{layout:?}");
            let start = ex
                .ids
                .windows(header.len())
                .position(|w| w == header.as_slice())
                .unwrap();
            for (i, &l) in ex.learn.iter().enumerate() {
                assert_eq!(
                    l,
                    !(start..start + header.len()).contains(&i),
                    "{layout:?} {i}"
                );
            }
            assert!(plain.learn.iter().all(|&l| l));
        }
        // Code whose text is its own header line is still code, and learned: the header is
        // found by its place in the prompt, not by its text.
        let same = "# path: pkg/m.py\n";
        for layout in [Layout::LeftToRight, Layout::Psm, Layout::Spm] {
            let cut = (same.len(), same.len());
            let ex = example(&tok, same, Some("pkg/m.py"), layout, cut).unwrap();
            let unlearned = ex.learn.iter().filter(|&&l| !l).count();
            assert_eq!(unlearned, header.len(), "{layout:?}");
        }
        // Packing keeps the flags; padding is never learned, and the loss counts the rest.
        let files = [SourceFile {
            rel: "pkg/m.py".into(),
            text: text.repeat(3),
        }];
        let opts = ExampleOptions {
            seq_len: 32,
            fim_rate: 0.0,
            ..Default::default()
        };
        let p = build(&tok, &files, &opts).unwrap();
        let learned: usize = p.learn.iter().flatten().filter(|&&l| l).count();
        let all: usize = p.valid.iter().sum();
        assert!(learned < all);
        assert!(p.target_tokens() < all - p.sequences.len());
        let last = p.sequences.len() - 1;
        assert!(!p.learns(last, p.seq_len - 1) || p.valid[last] == p.seq_len + 1);
    }

    #[test]
    fn context_snippets_are_read_but_not_learned() {
        let tok = tokenizer();
        let text = "def f(x):\n    return helper(x)\n";
        let snippet = Snippet {
            path: "pkg/util.py".into(),
            text: "def helper(x):\n    ...".into(),
        };
        let rendered = tok
            .encode_text(&copilot_fim::prompt::render_snippet(&snippet, "#"))
            .unwrap();
        for (layout, cut) in [
            (Layout::LeftToRight, (0, 0)),
            (Layout::Psm, (4, 10)),
            (Layout::Spm, (4, 10)),
        ] {
            let with = example_with(
                &tok,
                text,
                Some("m.py"),
                std::slice::from_ref(&snippet),
                layout,
                cut,
            )
            .unwrap();
            let plain = example(&tok, text, Some("m.py"), layout, cut).unwrap();
            assert_eq!(
                with.ids.len(),
                plain.ids.len() + rendered.len(),
                "{layout:?}"
            );
            let start = with
                .ids
                .windows(rendered.len())
                .position(|w| w == rendered.as_slice())
                .unwrap();
            for i in start..start + rendered.len() {
                assert!(!with.learn[i], "{layout:?} {i}");
            }
            // Everything learned without the snippet is learned with it.
            let learned = |e: &Example| e.learn.iter().filter(|&&l| l).count();
            assert_eq!(learned(&with), learned(&plain), "{layout:?}");
        }
        // Context is asked for with the editor's view: the middle removed, cursor at it.
        let files = [SourceFile {
            rel: "m.py".into(),
            text: text.repeat(4),
        }];
        let opts = ExampleOptions {
            seq_len: 64,
            fim_rate: 1.0,
            context_tokens: 8,
            ..Default::default()
        };
        let mut asked = Vec::new();
        build_with_context(&tok, &files, Vec::new(), &opts, &mut |f, view, cursor| {
            assert!(view.len() < f.text.len() || view == f.text);
            assert!(cursor <= view.len());
            asked.push(cursor);
            vec![snippet.clone()]
        })
        .unwrap();
        assert!(!asked.is_empty());
    }

    #[test]
    fn user_text_with_special_strings_stays_text() {
        let tok = tokenizer();
        let text = "s = '<fim_middle><|endoftext|>'\n";
        let ids = example(&tok, text, None, Layout::LeftToRight, (0, 0))
            .unwrap()
            .ids;
        let sp = tok.specials();
        assert_eq!(ids.iter().filter(|&&i| i == sp.eos).count(), 1);
        assert!(!ids.contains(&tok.token_id("<fim_middle>").unwrap()));
    }

    #[test]
    fn fim_rate_and_packing() {
        let tok = tokenizer();
        let files: Vec<_> = (0..40)
            .map(|i| SourceFile {
                rel: format!("m{i}.py"),
                text: format!("def f{i}(a, b):\n    return a * {i} + b\n"),
            })
            .collect();
        let opts = ExampleOptions {
            seq_len: 64,
            with_path: false,
            ..Default::default()
        };
        let p = build(&tok, &files, &opts).unwrap();
        let (l, psm, spm) = p.counts;
        assert_eq!(l + psm + spm, 40);
        assert!((10..=30).contains(&l), "{:?}", p.counts);
        assert!(psm > 0 && spm > 0);
        assert!(p.sequences.iter().all(|s| s.len() == 65));
        assert!(p.valid[..p.valid.len() - 1].iter().all(|&v| v == 65));
        // Overlap by one: the last target of a window is the first input of the next.
        assert_eq!(p.sequences[0][64], p.sequences[1][0]);
        let again = build(&tok, &files, &opts).unwrap();
        assert_eq!(p.fingerprint(), again.fingerprint());
        let none = build(
            &tok,
            &files,
            &ExampleOptions {
                fim_rate: 0.0,
                ..opts
            },
        )
        .unwrap();
        assert_eq!(none.counts, (40, 0, 0));
    }

    #[test]
    fn long_files_are_chunked_at_lines() {
        let tok = tokenizer();
        let text: String = (0..200).map(|i| format!("x{i} = {i}\n")).collect();
        let chunks = chunk(&tok, &text, 100).unwrap();
        assert!(chunks.len() > 5);
        assert_eq!(chunks.concat(), text);
        assert!(chunks
            .iter()
            .all(|c| tok.encode_text(c).unwrap().len() <= 100));
        let long = "y".repeat(1000);
        let chunks = chunk(&tok, &long, 100).unwrap();
        assert_eq!(chunks.concat(), long);
    }
}
