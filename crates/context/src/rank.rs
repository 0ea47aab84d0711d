//! The combiner: candidates of the three sources merged into one list within a token
//! budget, most relevant first.
//!
//! Each source ranks its own candidates (their scores are not comparable across sources),
//! so the lists are interleaved in turns, imports first and twice a round (the definitions
//! and members the code at the cursor uses are the surest; measured on click, requests and
//! flask in BENCHMARKS.md), then open files, then the index (Tabby orders its sources the
//! same way). A candidate is skipped when most of its lines are already in the prompt:
//! in the current file's window or in a snippet already chosen. Sizes are counted as the
//! prompt will show them ([`copilot_fim::prompt::render_snippet`]) with the model's
//! tokenizer; a candidate too big for what is left is cut to its first lines when at least
//! a few fit. Pure: no I/O, no lock.

use std::collections::HashSet;
use std::path::PathBuf;

use copilot_fim::{Snippet, TokenCounter};

/// Where a snippet comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Another open document, or a recently edited chunk.
    Open,
    /// A definition the code near the cursor imports.
    Imports,
    /// The workspace index.
    Index,
}

impl Source {
    /// The name the CLI's JSON and the eval report use.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Open => "open",
            Source::Imports => "imports",
            Source::Index => "index",
        }
    }
}

/// A snippet a source proposes.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub source: Source,
    /// The file it comes from (absolute).
    pub path: PathBuf,
    /// 0-based first line in that file.
    pub start_line: usize,
    pub text: String,
    /// Higher is better; only compared within one source.
    pub score: f32,
}

/// A snippet chosen for a prompt.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContextSnippet {
    pub source: Source,
    /// The file's path relative to the workspace (`/`-separated), as the prompt shows it.
    pub path: String,
    /// 0-based first line in that file.
    pub line: usize,
    pub text: String,
    /// Tokens the snippet takes in the prompt, rendered as a commented block.
    pub tokens: usize,
}

impl From<&ContextSnippet> for Snippet {
    fn from(c: &ContextSnippet) -> Self {
        Snippet {
            path: c.path.clone(),
            text: c.text.clone(),
        }
    }
}

/// Turn a list of chosen snippets into the prompt's.
pub fn to_fim(snippets: &[ContextSnippet]) -> Vec<Snippet> {
    snippets.iter().map(Snippet::from).collect()
}

/// Lines shorter than this (`)`, `pass`, `else:`) say nothing about duplication.
const MIN_LINE_CHARS: usize = 6;
/// A candidate whose lines are at least this share already in the prompt is skipped.
const DUPLICATE_SHARE: f32 = 0.6;
/// A cut candidate keeps at least this many lines.
const MIN_CUT_LINES: usize = 3;
/// Turns the imports source takes in each round (the other sources take one).
const IMPORT_TURNS: usize = 2;
/// Below this many tokens left, the combiner stops.
const MIN_ROOM: usize = 16;

fn telling_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.chars().count() >= MIN_LINE_CHARS)
}

/// The lines of a text that make it recognisable, for [`combine`]'s `covered` set.
pub fn covered_lines(text: &str) -> HashSet<&str> {
    telling_lines(text).collect()
}

fn duplicate_share(text: &str, covered: &HashSet<&str>, chosen: &HashSet<String>) -> f32 {
    let (mut n, mut dup) = (0, 0);
    for l in telling_lines(text) {
        n += 1;
        if covered.contains(l) || chosen.contains(l) {
            dup += 1;
        }
    }
    if n == 0 {
        1.0
    } else {
        dup as f32 / n as f32
    }
}

/// Merge ranked lists (in priority order) into snippets within `budget` tokens.
/// `covered` holds the lines the prompt's own window shows; `rel` names a file as the
/// prompt shows it; `comment` is the current file's comment marker.
pub fn combine(
    lists: Vec<Vec<Candidate>>,
    covered: &HashSet<&str>,
    budget: usize,
    rel: &dyn Fn(&std::path::Path) -> String,
    comment: &str,
    counter: &dyn TokenCounter,
) -> Vec<ContextSnippet> {
    let mut out: Vec<ContextSnippet> = Vec::new();
    let mut chosen_lines: HashSet<String> = HashSet::new();
    let mut left = budget;
    let mut cursors = vec![0usize; lists.len()];
    let count = |path: &str, text: &str| {
        let s = Snippet {
            path: path.to_string(),
            text: text.to_string(),
        };
        counter.count(&copilot_fim::prompt::render_snippet(&s, comment))
    };
    loop {
        let mut progressed = false;
        for (li, list) in lists.iter().enumerate() {
            // The definitions the code at the cursor uses are the surest: two turns a round.
            let turns = if list.first().is_some_and(|c| c.source == Source::Imports) {
                IMPORT_TURNS
            } else {
                1
            };
            for _ in 0..turns {
                if left < MIN_ROOM {
                    break;
                }
                while let Some(c) = list.get(cursors[li]) {
                    cursors[li] += 1;
                    progressed = true;
                    let text = c.text.trim_end().trim_start_matches(['\n', '\r']);
                    if text.trim().is_empty()
                        || duplicate_share(text, covered, &chosen_lines) >= DUPLICATE_SHARE
                    {
                        continue;
                    }
                    let path = rel(&c.path);
                    let mut kept = text.to_string();
                    let mut n = count(&path, &kept);
                    if n > left {
                        // Keep the longest head of whole lines that fits, if it says enough.
                        let lines: Vec<&str> = text.lines().collect();
                        let (mut lo, mut hi) = (0usize, lines.len());
                        while lo < hi {
                            let mid = (lo + hi).div_ceil(2);
                            if count(&path, &lines[..mid].join("\n")) <= left {
                                lo = mid;
                            } else {
                                hi = mid - 1;
                            }
                        }
                        if lo < MIN_CUT_LINES {
                            continue;
                        }
                        kept = lines[..lo].join("\n");
                        n = count(&path, &kept);
                    }
                    left -= n;
                    chosen_lines.extend(telling_lines(&kept).map(str::to_string));
                    out.push(ContextSnippet {
                        source: c.source,
                        path,
                        line: c.start_line,
                        text: kept,
                        tokens: n,
                    });
                    break;
                }
            }
        }
        if !progressed || left < MIN_ROOM {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use copilot_fim::CharCounter;
    use std::path::Path;

    fn cand(source: Source, path: &str, text: &str, score: f32) -> Candidate {
        Candidate {
            source,
            path: PathBuf::from(path),
            start_line: 0,
            text: text.into(),
            score,
        }
    }

    fn rel(p: &Path) -> String {
        p.to_string_lossy().trim_start_matches('/').to_string()
    }

    #[test]
    fn sources_take_turns_within_the_budget() {
        let imports = vec![
            cand(Source::Imports, "/a.py", "def alpha(x):\n    ...", 1.0),
            cand(Source::Imports, "/a.py", "def beta(y):\n    ...", 0.5),
            cand(Source::Imports, "/d.py", "def delta(z):\n    ...", 0.4),
        ];
        let open = vec![cand(
            Source::Open,
            "/b.py",
            "value = compute_thing()\n",
            0.3,
        )];
        let index = vec![cand(
            Source::Index,
            "/c.py",
            "class Gamma:\n    size = 3\n",
            2.0,
        )];
        let all = combine(
            vec![imports.clone(), open.clone(), index.clone()],
            &HashSet::new(),
            10_000,
            &rel,
            "#",
            &CharCounter,
        );
        let order: Vec<(&str, &str)> = all
            .iter()
            .map(|s| (s.source.as_str(), s.path.as_str()))
            .collect();
        assert_eq!(
            order,
            // Imports take two turns a round, the others one.
            [
                ("imports", "a.py"),
                ("imports", "a.py"),
                ("open", "b.py"),
                ("index", "c.py"),
                ("imports", "d.py")
            ]
        );
        // Token counts are those of the rendered block.
        assert_eq!(
            all[0].tokens,
            "# snippet from a.py:\n# def alpha(x):\n#     ...\n"
                .chars()
                .count()
        );
        let total: usize = all.iter().map(|s| s.tokens).sum();
        // A budget that fits the first two only.
        let two = all[0].tokens + all[1].tokens;
        let some = combine(
            vec![imports, open, index],
            &HashSet::new(),
            two,
            &rel,
            "#",
            &CharCounter,
        );
        assert_eq!(some.len(), 2);
        assert!(some.iter().map(|s| s.tokens).sum::<usize>() <= two);
        assert!(total > two);
    }

    #[test]
    fn what_the_window_or_an_earlier_snippet_holds_is_not_repeated() {
        let window = "def alpha(x):\n    return compute(x) + 1\n";
        let covered = covered_lines(window);
        let lists = vec![
            vec![cand(
                Source::Index,
                "/a.py",
                "def alpha(x):\n    return compute(x) + 1\n",
                1.0,
            )],
            vec![
                cand(
                    Source::Open,
                    "/b.py",
                    "def other_fn(y):\n    return y * 2\n",
                    1.0,
                ),
                cand(
                    Source::Open,
                    "/c.py",
                    "def other_fn(y):\n    return y * 2\n",
                    0.9,
                ),
            ],
        ];
        let got = combine(lists, &covered, 10_000, &rel, "#", &CharCounter);
        let paths: Vec<&str> = got.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["b.py"]);
    }

    #[test]
    fn a_big_candidate_is_cut_to_the_lines_that_fit() {
        let big: String = (0..30)
            .map(|i| format!("line_number_{i} = {i}\n"))
            .collect();
        let lists = vec![vec![cand(Source::Index, "/big.py", &big, 1.0)]];
        let got = combine(lists, &HashSet::new(), 200, &rel, "#", &CharCounter);
        assert_eq!(got.len(), 1);
        assert!(got[0].tokens <= 200);
        assert!(got[0]
            .text
            .starts_with("line_number_0 = 0\nline_number_1 = 1"));
        assert!(got[0].text.lines().count() >= MIN_CUT_LINES);
        let none = combine(
            vec![vec![cand(Source::Index, "/big.py", &big, 1.0)]],
            &HashSet::new(),
            40,
            &rel,
            "#",
            &CharCounter,
        );
        assert!(none.is_empty(), "fewer than three lines fit");
    }
}
