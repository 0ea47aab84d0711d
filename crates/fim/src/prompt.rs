//! Prompt building: the FIM layouts, the path header and snippets, within a token budget.
//!
//! A prompt is a list of [`Piece`]s, special tokens and text. The engine tokenizes each text
//! piece on its own and splices the special ids in between, so user text that contains
//! `<fim_middle>` stays text. Stable parts come first (header, then snippets, then the code
//! before the cursor; in SPM the suffix before all of them) so a KV cache can be reused
//! between keystrokes. Knows nothing of the tokenizer, the engine or LSP.

use crate::budget::{keep_head, keep_tail, split_room, Budget, TokenCounter};

/// The special tokens a prompt uses.
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
}

impl Special {
    /// All special tokens.
    pub const ALL: [Special; 4] = [
        Special::FimPrefix,
        Special::FimSuffix,
        Special::FimMiddle,
        Special::EndOfText,
    ];

    /// The token's string in StarCoder's vocabulary.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Special::FimPrefix => "<fim_prefix>",
            Special::FimSuffix => "<fim_suffix>",
            Special::FimMiddle => "<fim_middle>",
            Special::EndOfText => "<|endoftext|>",
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
    /// The layout used.
    pub layout: Layout,
    /// Index in `pieces` of the path header, when one was included. It is context the
    /// caller supplied, not code: fine-tuning reads it but never learns it as a target.
    pub header: Option<usize>,
    /// Indices in `input.snippets` of the snippets included, in prompt order (the most
    /// relevant last, nearest the code).
    pub snippets: Vec<usize>,
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
                Piece::Special(s) => s.as_str(),
                Piece::Text(t) => t.as_str(),
            })
            .collect()
    }
}

/// Snippets take at most this fraction (1/n) of the prefix budget and of the room.
const SNIPPET_SHARE_OF_PREFIX: usize = 4;
/// A path header may take at most this fraction (1/n) of the room.
const HEADER_SHARE_OF_ROOM: usize = 4;

/// Build the prompt for `input` in `layout` within `budget`.
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
///   left-to-right `P`.
pub fn build_prompt(
    input: &PromptInput,
    layout: Layout,
    budget: &Budget,
    counter: &dyn TokenCounter,
) -> Prompt {
    let specials = layout.special_tokens();
    let mut room = budget
        .window
        .saturating_sub(budget.max_new_tokens)
        .saturating_sub(specials);
    let comment = comment_marker(input.path.unwrap_or(""));

    let header = input.path.and_then(|path| {
        let text = path_header(path, comment);
        let n = counter.count(&text);
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
        let text = render_snippet(s, comment);
        let n = counter.count(&text);
        if n > 0 && n <= snippet_room {
            snippet_room -= n;
            snippets_used += n;
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
    let has_header = header.is_some();
    let mut prefix_section: Vec<String> = Vec::new();
    prefix_section.extend(header.map(|(t, _)| t));
    prefix_section.extend(snippets);
    prefix_section.push(prefix.to_string());

    let text = |t: String| (!t.is_empty()).then_some(Piece::Text(t));
    let sp = Piece::Special;
    let pieces: Vec<Piece> = match layout {
        Layout::Psm => std::iter::once(sp(Special::FimPrefix))
            .chain(prefix_section.into_iter().filter_map(text))
            .chain([sp(Special::FimSuffix)])
            .chain(text(suffix.to_string()))
            .chain([sp(Special::FimMiddle)])
            .collect(),
        Layout::Spm => [sp(Special::FimPrefix), sp(Special::FimSuffix)]
            .into_iter()
            .chain(text(suffix.to_string()))
            .chain([sp(Special::FimMiddle)])
            .chain(prefix_section.into_iter().filter_map(text))
            .collect(),
        Layout::LeftToRight => prefix_section.into_iter().filter_map(text).collect(),
    };

    // The header is the prefix section's first piece, and a header is never empty.
    let header = has_header.then(|| match layout {
        Layout::Psm => 1,
        Layout::Spm => pieces
            .iter()
            .position(|p| *p == sp(Special::FimMiddle))
            .map_or(0, |i| i + 1),
        Layout::LeftToRight => 0,
    });
    debug_assert!(header.is_none_or(|i| matches!(pieces.get(i), Some(Piece::Text(_)))));

    Prompt {
        pieces,
        layout,
        header,
        snippets: kept_snippets,
        prefix: prefix.to_string(),
        suffix: suffix.to_string(),
        counted_tokens: specials + header_used + snippets_used + prefix_used + suffix_used,
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
