//! Settled text: the part of a completion that streaming may send before the model is done.
//!
//! [`settled`] answers, for the raw text generated so far, a prefix of what [`postprocess`]
//! will return whatever the model writes next. Post-processing mostly removes text, but
//! later output can remove earlier output too (the second copy of a repeated line, trailing
//! lines that repeat the code below the cursor, trailing blank lines), trim the end of the
//! line that ends up last (an auto-closed bracket), or re-indent a whole block (the width
//! rescale of step 7). So this sends whole lines only, each once none of these rules can
//! reach it any more; single-line completions and blocks that may be re-indented settle only
//! when [`should_stop`] says the answer is final (or, by the caller, when decoding ends).
//!
//! Conservative by construction: every rule that could still change a line withholds it and
//! everything after it, and the result is checked against [`postprocess`] of the kept lines.
//! Knows nothing of LSP, the engine or editors.

use crate::context::{is_blank, CursorContext};
use crate::post::{line_endings, postprocess, repetition, should_stop, special, PostOptions, Site};
use crate::shape::{opens_block, Shape};

/// A prefix of `postprocess(generated + more)` for every `more`: the text a stream may send
/// now. `""` when nothing is settled yet. Never panics on any UTF-8.
pub fn settled(ctx: &CursorContext, shape: Shape, generated: &str) -> String {
    let opts = PostOptions { shape: Some(shape) };
    if should_stop(ctx, shape, generated) {
        // Final: no continuation changes the answer (the early-stop rule's promise).
        return postprocess(generated, ctx, &opts);
    }
    let site = Site::new(ctx, Some(shape));
    if shape == Shape::SingleLine || may_rescale(&site) {
        return String::new();
    }
    // A `\r` at the end may be the first half of `\r\n`: not a line end yet.
    let text = line_endings::normalize_line_endings(generated.trim_end_matches('\r'));
    let (text, _) = special::cut_at_special_tokens(&text);
    let lines: Vec<&str> = text.split('\n').collect();
    // The last piece is still being written.
    let complete = &lines[..lines.len() - 1];
    let below: Vec<&str> = ctx.lines_below().map(str::trim).collect();
    let mut keep = complete.len().min(repetition_risk(complete));
    loop {
        let before = keep;
        // Trailing blank lines are dropped (and two in a row end the scope).
        while keep > 0 && is_blank(complete[keep - 1]) {
            keep -= 1;
        }
        keep = keep.min(suffix_overlap_risk(&complete[..keep], &below));
        if keep > 0 && rest_of_line_risk(complete[keep - 1], site.after) {
            keep -= 1;
        }
        if keep == before {
            break;
        }
    }
    if keep == 0 {
        return String::new();
    }
    let out = postprocess(&complete[..keep].join("\n"), ctx, &opts);
    // Belt and braces: the kept lines must come out whole, else send nothing yet.
    if out.split('\n').count() == keep {
        out
    } else {
        String::new()
    }
}

/// Whether step 7 may re-indent the whole block depending on lines not written yet.
fn may_rescale(site: &Site) -> bool {
    site.style.is_some() && !site.before.is_empty() && opens_block(site.before)
}

/// The first line that a repetition completed by later lines, or a line that loops inside
/// itself, could remove: lines before it stay.
fn repetition_risk(lines: &[&str]) -> usize {
    let n = lines.len();
    let line = |i: usize| lines[i].trim();
    let mut risk = lines
        .iter()
        .position(|l| repetition::loops_inside(l))
        .unwrap_or(n);
    for period in 1..=repetition::MAX_PERIOD {
        let len = period * repetition::COPIES;
        // Windows that end after the known lines; those inside them were checked by
        // `should_stop`.
        for start in n.saturating_sub(len - 1)..n {
            if start + period >= risk {
                break;
            }
            if start + period <= n && (start..start + period).all(|i| is_blank(line(i))) {
                continue;
            }
            let fits = (start + period..n).all(|i| line(i) == line(start + (i - start) % period));
            if fits {
                risk = start + period;
            }
        }
    }
    risk
}

/// The first line (after the first) that step 6 could drop as a repeat of the code below
/// the cursor: the non-blank lines from it on match the first lines below so far.
fn suffix_overlap_risk(lines: &[&str], below: &[&str]) -> usize {
    (1..lines.len())
        .filter(|&i| !is_blank(lines[i]))
        .find(|&i| {
            let tail: Vec<&str> = lines[i..]
                .iter()
                .filter(|l| !is_blank(l))
                .map(|l| l.trim())
                .collect();
            tail.len() <= below.len() && tail.iter().zip(below).all(|(a, b)| a == b)
        })
        .unwrap_or(lines.len())
}

/// Whether step 6 could trim the end of `line` if it ended up last: it ends with the start
/// of the rest of the cursor line.
fn rest_of_line_risk(line: &str, rest: &str) -> bool {
    let rest = rest.trim_end();
    if rest.trim().is_empty() {
        return false;
    }
    let line = line.trim_end();
    rest.char_indices()
        .map(|(i, c)| &rest[..i + c.len_utf8()])
        .any(|overlap| line.ends_with(overlap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(doc: &str, generated: &str) -> String {
        let (prefix, suffix) = doc.split_once("$0").unwrap();
        let ctx = CursorContext { prefix, suffix };
        settled(&ctx, crate::shape(&ctx), generated)
    }

    #[test]
    fn whole_lines_once_nothing_can_reach_them() {
        let doc = "def f(xs):\n    total = 0\n    $0\n\nprint(f([1]))\n";
        // The line being written is not sent.
        assert_eq!(run(doc, "for x in xs:"), "");
        assert_eq!(run(doc, "for x in xs:\n"), "for x in xs:");
        assert_eq!(
            run(doc, "for x in xs:\n        total += x\n    ret"),
            "for x in xs:\n        total += x"
        );
        // Blank lines wait for what follows them.
        assert_eq!(run(doc, "for x in xs:\n\n"), "for x in xs:");
    }

    #[test]
    fn lines_a_repetition_could_remove_wait() {
        let doc = "def f():\n    $0\n";
        // `a` twice: a third copy would keep only the first.
        assert_eq!(run(doc, "a = 1\n    a = 1\n"), "a = 1");
        // `a b a`: `a b` three times would keep the first `a b` only.
        assert_eq!(
            run(doc, "a = 1\n    b = 2\n    a = 1\n"),
            "a = 1\n    b = 2"
        );
        assert_eq!(
            run(doc, "a = 1\n    b = 2\n    c = 3\n"),
            "a = 1\n    b = 2\n    c = 3"
        );
    }

    #[test]
    fn lines_repeating_the_code_below_wait() {
        let doc = "def f():\n    $0\n    return x\n";
        assert_eq!(run(doc, "x = 1\n    return x\n"), "x = 1");
        assert_eq!(
            run(doc, "x = 1\n    return x\n    y = 2\n"),
            "x = 1\n    return x\n    y = 2"
        );
    }

    #[test]
    fn single_lines_and_rescaled_blocks_settle_at_the_end() {
        assert_eq!(run("x = f($0)", "a, b"), "");
        assert_eq!(run("x = f($0)", "a, b\n"), "a, b");
        // A block opened at the cursor in a 2-space file: its width depends on every line.
        let js = "function f() {\n  if (x) {\n    y();\n  }\n  while (z) {$0\n";
        assert_eq!(run(js, "\n      a();\n"), "");
    }
}
