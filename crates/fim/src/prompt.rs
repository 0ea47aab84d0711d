//! Prompt building: the FIM layouts of a family's [`Template`], the path header and
//! snippets, within a token budget.
//!
//! A prompt is a list of [`Piece`]s, special tokens and text. The engine tokenizes each text
//! piece on its own and splices the special ids in between, so user text that contains
//! `<fim_middle>` stays text. Stable parts come first (header, then snippets, then the code
//! before the cursor; in SPM the suffix before all of them) so a KV cache can be reused
//! between keystrokes. Families with repository tokens get the snippets and the path as
//! their training had them (`<file_sep>path\n` then the text, before the FIM tokens);
//! the others get them as comments. Knows nothing of the tokenizer, the engine or LSP.

use crate::budget::{keep_head, keep_tail, split_room, Budget, TokenCounter};
use crate::template::{SpmOrder, Template};

/// The special tokens a prompt uses; each family spells them its own way
/// ([`Template::string`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Special {
    /// `<fim_prefix>`
    FimPrefix,
    /// `<fim_suffix>`
    FimSuffix,
    /// `<fim_middle>`
    FimMiddle,
    /// `<|endoftext|>`
    EndOfText,
    /// Begin of text (DeepSeek-Coder, CodeLlama).
    Bos,
    /// `<repo_name>` (StarCoder2), `<|repo_name|>` (Qwen2.5-Coder).
    RepoName,
    /// `<file_sep>` (StarCoder2), `<|file_sep|>` (Qwen2.5-Coder).
    FileSep,
}

impl Special {
    /// All special tokens.
    pub const ALL: [Special; 7] = [
        Special::FimPrefix,
        Special::FimSuffix,
        Special::FimMiddle,
        Special::EndOfText,
        Special::Bos,
        Special::RepoName,
        Special::FileSep,
    ];

    /// The token's string in the bigcode vocabularies (StarCoder's FIM tokens, StarCoder2's
    /// repository tokens; `<s>` for begin of text, which neither has).
    pub const fn as_str(&self) -> &'static str {
        match self {
            Special::FimPrefix => "<fim_prefix>",
            Special::FimSuffix => "<fim_suffix>",
            Special::FimMiddle => "<fim_middle>",
            Special::EndOfText => "<|endoftext|>",
            Special::Bos => "<s>",
            Special::RepoName => "<repo_name>",
            Special::FileSep => "<file_sep>",
        }
    }
}

/// One part of a prompt.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Piece {
    /// A special token, spliced in by id.
    Special(Special),
    /// Text, tokenized on its own (never yields a special id).
    Text(String),
}

/// The order of a prompt's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `<fim_prefix>P<fim_suffix>S<fim_middle>`
    Psm,
    /// As bigcode trained it: `<fim_prefix><fim_suffix>S<fim_middle>P`
    Spm,
    /// `P` alone: plain completion.
    LeftToRight,
}

impl Layout {
    /// How many special tokens the layout adds.
    pub fn special_tokens(self) -> usize {
        match self {
            Layout::Psm | Layout::Spm => 3,
            Layout::LeftToRight => 0,
        }
    }
}

/// The layout asked for by configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LayoutChoice {
    /// Always PSM.
    Psm,
    /// Always SPM.
    Spm,
    /// Always left-to-right.
    LeftToRight,
    /// PSM, or left-to-right when the suffix is whitespace only.
    #[default]
    Auto,
}

/// Resolve a layout choice for a cursor whose following text is `suffix`.
pub fn choose_layout(choice: LayoutChoice, suffix: &str) -> Layout {
    match choice {
        LayoutChoice::Psm => Layout::Psm,
        LayoutChoice::Spm => Layout::Spm,
        LayoutChoice::LeftToRight => Layout::LeftToRight,
        LayoutChoice::Auto if suffix.trim().is_empty() => Layout::LeftToRight,
        // SPM, measured (BENCHMARKS.md): typing at the cursor only appends to an SPM prompt,
        // so the KV cache keeps ~96% of it; PSM recomputes the suffix at every keystroke
        // (p50 148 ms vs 1,645 ms on tiny_starcoder_py's shape). On the pico model's held-out
        // lines both layouts score 0% exact match (edit distance 43.4 SPM, 44.3 PSM).
        LayoutChoice::Auto => Layout::Spm,
    }
}

/// Text from another file, to show the model as context.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Snippet {
    /// The other file's path (as shown to the model).
    pub path: String,
    /// The snippet's text.
    pub text: String,
}

/// What a prompt is built from.
#[derive(Clone, Copy, Debug, Default)]
pub struct PromptInput<'a> {
    /// All text before the cursor.
    pub prefix: &'a str,
    /// All text after the cursor.
    pub suffix: &'a str,
    /// The file's path, shown as a comment header when given.
    pub path: Option<&'a str>,
    /// Snippets from other files, most relevant first; included while room is left.
    pub snippets: &'a [Snippet],
}

/// A built prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    /// Special tokens and text pieces, in order. Empty text pieces are left out.
    pub pieces: Vec<Piece>,
    /// The family's template the special tokens belong to.
    pub template: &'static Template,
    /// The layout used.
    pub layout: Layout,
    /// Index in `pieces` of the path header, when one was included. It is context the
    /// caller supplied, not code: fine-tuning reads it but never learns it as a target.
    pub header: Option<usize>,
    /// Indices in `input.snippets` of the snippets included, in prompt order (the most
    /// relevant last, nearest the code).
    pub snippets: Vec<usize>,
    /// Indices in `pieces` of the snippets' text pieces (context the caller supplied, like
    /// the header: fine-tuning reads them but never learns them).
    pub snippet_pieces: Vec<usize>,
    /// The part of the prefix that was kept (code only, no header or snippets).
    pub prefix: String,
    /// The part of the suffix that was kept (empty for left-to-right).
    pub suffix: String,
    /// The prompt's size as counted: special tokens one each, text pieces by the counter.
    pub counted_tokens: usize,
}

impl Prompt {
    /// The prompt as one string, special tokens written out (for logs and debugging; never
    /// tokenize this).
    pub fn render(&self) -> String {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Special(s) => self.template.string(*s).unwrap_or(s.as_str()),
                Piece::Text(t) => t.as_str(),
            })
            .collect()
    }

    /// The prompt's ids: text pieces through `text` (each on its own, so user text never
    /// becomes a control token), special tokens through `special` given the family's string.
    pub fn encode<E>(
        &self,
        mut text: impl FnMut(&str) -> Result<Vec<u32>, E>,
        mut special: impl FnMut(&'static str) -> Result<u32, E>,
    ) -> Result<Vec<u32>, E> {
        let mut ids = Vec::new();
        for p in &self.pieces {
            match p {
                Piece::Special(s) => {
                    ids.push(special(self.template.string(*s).unwrap_or(s.as_str()))?)
                }
                Piece::Text(t) => ids.extend(text(t)?),
            }
        }
        Ok(ids)
    }
}

/// Snippets take at most this fraction (1/n) of the prefix budget and of the room.
const SNIPPET_SHARE_OF_PREFIX: usize = 4;
/// A path header may take at most this fraction (1/n) of the room.
const HEADER_SHARE_OF_ROOM: usize = 4;

/// Build the prompt for `input` in `layout` within `budget`, in `template`'s family format
/// (a layout the family was not trained with becomes the one it was: [`Template::trained`]).
///
/// - The room is `window - max_new_tokens - special tokens`. A path header (when given and at
///   most a quarter of the room) is taken from it first; the rest is split between prefix and
///   suffix, scaled down proportionally when both budgets do not fit.
/// - Prefix and suffix are cut at line boundaries keeping the lines nearest the cursor (see
///   [`keep_tail`], [`keep_head`]); the cursor line is always kept, cut if it alone is over
///   budget.
/// - Snippets (given most relevant first) are taken in that order, each whole or not at
///   all, within a quarter of the prefix budget and of the room; their room is set aside
///   before the code is cut, so a small window still shows them.
/// - Order: header, snippets, prefix code form the prefix section, the snippets in reverse
///   (the most relevant nearest the code). With no path and no snippets, PSM is exactly
///   `<fim_prefix>P<fim_suffix>S<fim_middle>`, SPM `<fim_prefix><fim_suffix>S<fim_middle>P`,
///   left-to-right `P` (StarCoder's strings; a family with a begin-of-text token starts
///   with it).
/// - Families with repository tokens (Qwen2.5-Coder, StarCoder2) get each snippet as
///   `<file_sep>path\n` + text and the header as `<file_sep>path\n`, before the FIM tokens
///   (their training format and llama.cpp's `/infill`); the others get them as comments.
pub fn build_prompt(
    input: &PromptInput,
    template: &'static Template,
    layout: Layout,
    budget: &Budget,
    counter: &dyn TokenCounter,
) -> Prompt {
    let layout = template.trained(layout);
    let specials = template.special_tokens(layout);
    // Room for the leading space a family's prefix may get (counted as one token).
    let lead = usize::from(template.prefix_space);
    let mut room = budget
        .window
        .saturating_sub(budget.max_new_tokens)
        .saturating_sub(specials + lead);
    let comment = comment_marker(input.path.unwrap_or(""));
    // Repository tokens: a file separator (one token) before each file instead of comments.
    let repo = template.repo.is_some();
    let sep = usize::from(repo);

    let header = input.path.and_then(|path| {
        let text = if repo {
            file_line(path)
        } else {
            path_header(path, comment)
        };
        let n = counter.count(&text) + sep;
        (n <= room / HEADER_SHARE_OF_ROOM).then(|| {
            room -= n;
            (text, n)
        })
    });

    let mut snippet_room =
        (budget.prefix_tokens / SNIPPET_SHARE_OF_PREFIX).min(room / SNIPPET_SHARE_OF_PREFIX);
    let mut snippets_used = 0;
    let mut kept_snippets = Vec::new();
    let mut snippets: Vec<String> = Vec::new();
    for (i, s) in input.snippets.iter().enumerate() {
        let text = if repo {
            repo_snippet(s)
        } else {
            render_snippet(s, comment)
        };
        let n = counter.count(&text);
        if n > 0 && n + sep <= snippet_room {
            snippet_room -= n + sep;
            snippets_used += n + sep;
            kept_snippets.push(i);
            snippets.push(text);
        }
    }
    // The most relevant nearest the code.
    snippets.reverse();
    kept_snippets.reverse();
    room -= snippets_used;

    let with_suffix = layout != Layout::LeftToRight;
    let want_suffix = if with_suffix { budget.suffix_tokens } else { 0 };
    let (prefix_room, suffix_room) = split_room(budget.prefix_tokens, want_suffix, room);
    let (prefix, prefix_used) = keep_tail(input.prefix, prefix_room, counter);
    let (suffix, suffix_used) = if with_suffix {
        keep_head(input.suffix, suffix_room, counter)
    } else {
        ("", 0)
    };

    let header_used = header.as_ref().map_or(0, |(_, n)| *n);
    let mut pieces: Vec<Piece> = Vec::new();
    let mut header_at = None;
    let sp = Piece::Special;
    let push_text = |pieces: &mut Vec<Piece>, t: String| {
        if !t.is_empty() {
            pieces.push(Piece::Text(t));
        }
    };
    if template.bos.is_some() {
        pieces.push(sp(Special::Bos));
    }
    // Repository context first: stable between keystrokes in every layout.
    let mut section: Vec<String> = Vec::new();
    let mut snippet_at: Vec<usize> = Vec::new();
    // Which entries of `section` are snippets (after the header, when there is one).
    let mut section_snippets = 0..0;
    if repo {
        for s in snippets {
            pieces.push(sp(Special::FileSep));
            if !s.is_empty() {
                snippet_at.push(pieces.len());
            }
            push_text(&mut pieces, s);
        }
        if let Some((h, _)) = header {
            pieces.push(sp(Special::FileSep));
            header_at = Some(pieces.len());
            push_text(&mut pieces, h);
        }
    } else {
        section.extend(header.map(|(t, _)| t));
        let start = section.len();
        section.extend(snippets);
        section_snippets = start..section.len();
    }
    let comment_header = !repo && input.path.is_some() && header_used > 0;
    section.push(prefix.to_string());
    let mut lead_used = 0;
    if template.prefix_space {
        // SentencePiece's leading space, which the family's prefix was encoded with.
        if let Some(first) = section.iter_mut().find(|t| !t.is_empty()) {
            first.insert(0, ' ');
            lead_used = lead;
        }
    }
    let mut push_section = |pieces: &mut Vec<Piece>| {
        if comment_header {
            header_at = Some(pieces.len());
        }
        for (i, t) in std::mem::take(&mut section).into_iter().enumerate() {
            if section_snippets.contains(&i) && !t.is_empty() {
                snippet_at.push(pieces.len());
            }
            push_text(pieces, t);
        }
    };
    let suffix_text = suffix.to_string();
    match (layout, template.spm) {
        (Layout::Psm, _) | (Layout::Spm, None) => {
            pieces.push(sp(Special::FimPrefix));
            push_section(&mut pieces);
            pieces.push(sp(Special::FimSuffix));
            push_text(&mut pieces, suffix_text);
            if template.middle.is_some() {
                pieces.push(sp(Special::FimMiddle));
            }
        }
        (Layout::Spm, Some(SpmOrder::PrefixTokenFirst)) => {
            pieces.push(sp(Special::FimPrefix));
            pieces.push(sp(Special::FimSuffix));
            push_text(&mut pieces, suffix_text);
            pieces.push(sp(Special::FimMiddle));
            push_section(&mut pieces);
        }
        (Layout::Spm, Some(SpmOrder::SuffixTokenFirst)) => {
            pieces.push(sp(Special::FimSuffix));
            push_text(&mut pieces, suffix_text);
            pieces.push(sp(Special::FimPrefix));
            push_section(&mut pieces);
        }
        (Layout::LeftToRight, _) => push_section(&mut pieces),
    }
    // A header is never empty, so it is the text piece at its index.
    debug_assert!(header_at.is_none_or(|i| matches!(pieces.get(i), Some(Piece::Text(_)))));

    Prompt {
        pieces,
        template,
        layout,
        header: header_at,
        snippets: kept_snippets,
        snippet_pieces: snippet_at,
        prefix: prefix.to_string(),
        suffix: suffix.to_string(),
        counted_tokens: specials
            + lead_used
            + header_used
            + snippets_used
            + prefix_used
            + suffix_used,
    }
}

/// The line-comment marker for a file, from its extension (`#` when unknown).
pub fn comment_marker(path: &str) -> &'static str {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) => ext.to_ascii_lowercase(),
        None => return "#",
    };
    match ext.as_str() {
        "rs" | "c" | "h" | "cc" | "cpp" | "cxx" | "hpp" | "hh" | "js" | "jsx" | "mjs" | "cjs"
        | "ts" | "tsx" | "java" | "go" | "kt" | "kts" | "swift" | "scala" | "cs" | "dart"
        | "php" | "zig" | "proto" | "groovy" | "sol" | "v" | "glsl" => "//",
        "lua" | "sql" | "hs" | "elm" | "ada" => "--",
        _ => "#",
    }
}

/// The header line a prompt shows for `path` (its comment marker chosen by extension), as
/// [`build_prompt`] writes it. Training masks it out of the loss: the model should read it,
/// never learn to write it.
pub fn header_for_path(path: &str) -> String {
    path_header(path, comment_marker(path))
}

/// `# path: src/x.py` (one line, whatever the path holds).
fn path_header(path: &str, comment: &str) -> String {
    let path: String = path
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("{comment} path: {path}\n")
}

/// `path\n`: the line after a file separator (one line, whatever the path holds).
fn file_line(path: &str) -> String {
    format!("{}\n", path.replace(['\n', '\r'], " "))
}

/// A snippet after a file separator: its path line, then its text ending with a newline.
fn repo_snippet(snippet: &Snippet) -> String {
    if snippet.text.trim().is_empty() {
        return String::new();
    }
    let mut out = file_line(&snippet.path);
    out.push_str(&snippet.text);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// A snippet as a commented block: `# snippet from other.py:` then each line commented
/// (`comment` is the current file's marker, [`comment_marker`]).
pub fn render_snippet(snippet: &Snippet, comment: &str) -> String {
    if snippet.text.trim().is_empty() {
        return String::new();
    }
    let path = snippet.path.replace(['\n', '\r'], " ");
    let mut out = format!("{comment} snippet from {path}:\n");
    for line in snippet.text.lines() {
        if line.trim().is_empty() {
            out.push_str(comment);
        } else {
            out.push_str(comment);
            out.push(' ');
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_markers() {
        assert_eq!(comment_marker("a/b.py"), "#");
        assert_eq!(comment_marker("src/main.RS"), "//");
        assert_eq!(comment_marker("q.sql"), "--");
        assert_eq!(comment_marker("Makefile"), "#");
        assert_eq!(comment_marker("dir.js/file"), "#");
    }

    #[test]
    fn snippet_rendering() {
        let s = Snippet {
            path: "u.py".into(),
            text: "def u():\n\n    return 1\n".into(),
        };
        assert_eq!(
            render_snippet(&s, "#"),
            "# snippet from u.py:\n# def u():\n#\n#     return 1\n"
        );
        assert_eq!(render_snippet(&Snippet::default(), "#"), "");
        assert_eq!(path_header("a\nb.py", "#"), "# path: a b.py\n");
    }
}
