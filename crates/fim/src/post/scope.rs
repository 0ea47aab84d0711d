//! Scope: how much of the output belongs to the completion.
//!
//! Single-line completions keep the rest of the cursor line (at the end of a line whose rest
//! the model leaves blank, the next line instead). Multi-line completions keep lines until the
//! model walks out of the cursor's block:
//!
//! - a line indented less than the block (for a block opened at the cursor: not deeper than
//!   the opening line), except a line of closing brackets at the opening line's column, which
//!   is kept and ends the completion;
//! - a new top-level `def`, `async def`, `class`, `@decorator` or `if __name__`;
//! - two blank lines in a row.
//!
//! The cut is computed line by line and each decision depends only on the lines up to it and
//! on what of the line cannot change any more, so the early-stop rule can use it on a partial
//! output. Knows nothing of LSP, the engine or editors.

use crate::context::{advance, indent_width, is_blank, leading_ws};
use crate::post::Site;
use crate::shape::{opens_block, Shape};

/// Where the scope rules cut the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// How many lines are kept.
    pub keep: usize,
    /// Whether more output could not change `keep`.
    pub decided: bool,
}

/// Step 3: keep the lines within the completion's scope.
pub fn limit_to_scope(lines: &mut Vec<String>, site: &Site) {
    let cut = scope_cut(lines, true, site);
    lines.truncate(cut.keep);
}

/// The scope cut of `lines` (the output split at `\n`; the first continues the cursor line).
/// `last_complete` says whether the last line is finished (the whole output) or may still
/// grow (decoding in progress).
pub fn scope_cut<S: AsRef<str>>(lines: &[S], last_complete: bool, site: &Site) -> Scope {
    let n = lines.len();
    let view = Lines {
        lines,
        last_complete,
    };
    match site.shape {
        Shape::SingleLine => single_line(&view, site),
        Shape::MultiLine => multi_line(&view, site),
    }
    .unwrap_or(Scope {
        keep: n,
        decided: false,
    })
}

struct Lines<'a, S> {
    lines: &'a [S],
    last_complete: bool,
}

impl<S: AsRef<str>> Lines<'_, S> {
    fn len(&self) -> usize {
        self.lines.len()
    }
    fn get(&self, i: usize) -> &str {
        self.lines[i].as_ref()
    }
    fn complete(&self, i: usize) -> bool {
        i + 1 < self.lines.len() || self.last_complete
    }
}

fn decided(keep: usize) -> Option<Scope> {
    Some(Scope {
        keep,
        decided: true,
    })
}

/// `None`: undecided, keep everything so far.
fn single_line<S: AsRef<str>>(lines: &Lines<S>, site: &Site) -> Option<Scope> {
    if lines.len() == 0 || !lines.complete(0) {
        return None;
    }
    if !is_blank(lines.get(0)) || !is_blank(site.after) || lines.len() == 1 {
        return decided(1);
    }
    // At the end of a line the model went to the next line: keep that one line, unless it
    // leaves the cursor line's block.
    let next = lines.get(1);
    if is_blank(next) {
        return if lines.complete(1) { decided(1) } else { None };
    }
    if indent_width(next, site.tab) < indent_width(site.before, site.tab) {
        return decided(1);
    }
    if lines.complete(1) {
        decided(2)
    } else {
        None
    }
}

/// `None`: undecided, keep everything so far.
fn multi_line<S: AsRef<str>>(lines: &Lines<S>, site: &Site) -> Option<Scope> {
    let tab = site.tab;
    // Lines indented less than `min` leave the block; `closer_at`: the column where a line
    // of closing brackets ends the block (a block opened at the cursor).
    let mut min: Option<usize> = None;
    let mut closer_at: Option<usize> = None;
    // A block opened by the line above a blank cursor line: the block's first line must be
    // deeper than this.
    let mut deeper_than: Option<usize> = None;
    if !is_blank(site.before) {
        let col = indent_width(site.before, tab);
        if opens_block(site.before) {
            min = Some(col + 1);
            closer_at = Some(col);
        } else {
            min = Some(col);
        }
    } else {
        deeper_than = site
            .ctx
            .previous_line()
            .filter(|l| opens_block(l))
            .map(|l| indent_width(l, tab));
        if let Some(first) = lines.lines.first().map(AsRef::as_ref) {
            if !is_blank(first) {
                let col = advance(indent_width(site.before, tab), leading_ws(first), tab);
                if deeper_than.is_some_and(|d| col <= d) {
                    return decided(0);
                }
                min = Some(col);
            }
        }
    }
    let mut blank_run = 0;
    for i in 1..lines.len() {
        let line = lines.get(i);
        if is_blank(line) {
            if !lines.complete(i) {
                return None;
            }
            blank_run += 1;
            if blank_run == 2 {
                return decided(i - 1);
            }
            continue;
        }
        blank_run = 0;
        let col = indent_width(line, tab);
        let Some(m) = min else {
            // The first line of a completion on a blank line sets the block's column.
            if deeper_than.is_some_and(|d| col <= d) {
                return decided(i);
            }
            min = Some(col);
            continue;
        };
        let code = line.trim_start();
        if col < m {
            if closer_at == Some(col) && code.starts_with([')', ']', '}']) {
                if !lines.complete(i) {
                    return None;
                }
                return decided(if is_closing_line(code) { i + 1 } else { i });
            }
            return decided(i);
        }
        if col == 0 && starts_top_level(code) {
            return decided(i);
        }
    }
    None
}

/// A line of closing brackets only (`}`, `});`, `),`).
fn is_closing_line(code: &str) -> bool {
    let code = code.trim_end();
    code.starts_with([')', ']', '}'])
        && code
            .chars()
            .all(|c| matches!(c, ')' | ']' | '}' | ';' | ','))
}

/// A line that starts a new top-level definition in Python. A prefix test, so a partial
/// line that passes it passes it whatever follows.
fn starts_top_level(code: &str) -> bool {
    ["def ", "async def ", "class ", "@", "if __name__"]
        .iter()
        .any(|k| code.starts_with(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::CursorContext;

    fn cut(doc: &str, out: &str, complete: bool) -> Scope {
        let (prefix, suffix) = doc.split_once("$0").unwrap();
        let site = Site::new(&CursorContext { prefix, suffix }, None);
        let lines: Vec<&str> = out.split('\n').collect();
        scope_cut(&lines, complete, &site)
    }

    #[test]
    fn partial_lines_decide_only_what_cannot_change() {
        let doc = "def f():$0\n";
        assert!(!cut(doc, "\n    x = 1\n", false).decided);
        assert_eq!(cut(doc, "\n    x = 1\ny", false), decided(2).unwrap());
        assert!(!cut(doc, "\n    x = 1\n\n", false).decided);
        assert_eq!(cut(doc, "\n    x = 1\n\n\n", false), decided(2).unwrap());
        let js = "if (x) {$0\n";
        assert!(!cut(js, "\n  a();\n}", false).decided);
        assert_eq!(cut(js, "\n  a();\n}\n", false), decided(3).unwrap());
        assert_eq!(cut(js, "\n  a();\n} else {\n", false), decided(2).unwrap());
        assert!(!cut("x = f($0)", "a, b", false).decided);
        assert_eq!(cut("x = f($0)", "a, b\n", false), decided(1).unwrap());
    }

    #[test]
    fn top_level_is_a_prefix_test() {
        assert!(starts_top_level("def g():"));
        assert!(starts_top_level("@app.route"));
        assert!(!starts_top_level("default = 1"));
        assert!(is_closing_line("});"));
        assert!(!is_closing_line("} else {"));
    }
}
