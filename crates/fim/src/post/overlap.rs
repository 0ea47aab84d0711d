//! Suffix overlap: the model often writes again what already follows the cursor.
//!
//! - Lines: trailing lines of the completion that repeat the lines just below the cursor
//!   (compared without surrounding whitespace, blank lines skipped) are dropped.
//! - Rest of the line: the end of the completion's last line that repeats the start of the
//!   rest of the cursor line is trimmed when it holds a closing bracket or quote the completion
//!   itself leaves unmatched (an auto-closed `)` or `"`), or when it is the whole rest of the
//!   line.
//!
//! Knows nothing of LSP, the engine or editors.

use crate::context::is_blank;
use crate::post::whitespace::trim_trailing_whitespace;
use crate::post::Site;

/// Step 6: apply both overlap rules (each followed by trimming trailing whitespace) until
/// neither changes anything.
pub fn drop_suffix_overlap(lines: &mut Vec<String>, site: &Site) {
    let continuation = lines.iter().skip(1).filter(|l| !is_blank(l)).count();
    let below: Vec<&str> = site
        .ctx
        .lines_below()
        .map(str::trim)
        .take(continuation)
        .collect();
    loop {
        let dropped = drop_lines_repeating_suffix(lines, &below);
        let trimmed = trim_rest_of_line_overlap(lines, site.after);
        if !dropped && !trimmed {
            return;
        }
        trim_trailing_whitespace(lines);
    }
}

/// Drop the longest run of trailing lines (after the first) whose non-blank lines are the
/// first lines of `below`. Returns whether anything was dropped.
pub fn drop_lines_repeating_suffix(lines: &mut Vec<String>, below: &[&str]) -> bool {
    let candidates: Vec<usize> = (1..lines.len()).filter(|&i| !is_blank(&lines[i])).collect();
    let from = (0..candidates.len()).find(|&t| {
        let tail = &candidates[t..];
        tail.len() <= below.len() && tail.iter().zip(below).all(|(&i, b)| lines[i].trim() == *b)
    });
    match from {
        Some(t) => {
            lines.truncate(candidates[t]);
            true
        }
        None => false,
    }
}

/// Trim the end of the last line that repeats the start of `rest` (the cursor line after the
/// cursor). Returns whether anything was trimmed.
pub fn trim_rest_of_line_overlap(lines: &mut [String], rest: &str) -> bool {
    let rest = rest.trim_end();
    let Some(last) = lines.last_mut() else {
        return false;
    };
    if rest.trim().is_empty() {
        return false;
    }
    let unmatched = unmatched_closers(last);
    let ends: Vec<usize> = rest.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
    for &k in ends.iter().rev() {
        let overlap = &rest[..k];
        if k > last.len() || !last.ends_with(overlap) {
            continue;
        }
        let start = last.len() - k;
        let closes_unmatched = unmatched.iter().any(|&p| p >= start)
            && last[start..]
                .char_indices()
                .filter(|(_, c)| is_bracket_or_quote(*c))
                .all(|(i, _)| unmatched.contains(&(start + i)));
        let whole_rest = overlap == rest && rest.trim().chars().count() >= 3;
        if closes_unmatched || whole_rest {
            last.truncate(start);
            return true;
        }
    }
    false
}

fn is_bracket_or_quote(c: char) -> bool {
    matches!(c, '(' | ')' | '[' | ']' | '{' | '}' | '"' | '\'' | '`')
}

/// Byte offsets of the closing brackets without an opener in `line`, and of the last quote of
/// each kind that appears an odd number of times.
fn unmatched_closers(line: &str) -> Vec<usize> {
    let mut open: Vec<char> = Vec::new();
    let mut out = Vec::new();
    for (i, c) in line.char_indices() {
        match c {
            '(' | '[' | '{' => open.push(c),
            ')' | ']' | '}' => {
                let opener = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if open.last() == Some(&opener) {
                    open.pop();
                } else {
                    out.push(i);
                }
            }
            _ => {}
        }
    }
    for q in ['"', '\'', '`'] {
        let at: Vec<usize> = line.match_indices(q).map(|(i, _)| i).collect();
        if at.len() % 2 == 1 {
            out.extend(at.last());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.split('\n').map(str::to_string).collect()
    }

    fn rest(s: &str, after: &str) -> String {
        let mut l = lines(s);
        trim_rest_of_line_overlap(&mut l, after);
        l.join("\n")
    }

    #[test]
    fn rest_of_line() {
        assert_eq!(rest("a, b)", ")"), "a, b");
        assert_eq!(rest("bar()", ")"), "bar()");
        assert_eq!(rest("f())", ")"), "f()");
        assert_eq!(rest("hi\")", "\")"), "hi");
        assert_eq!(rest("x):", "):"), "x");
        assert_eq!(rest("y + 1", " + 1"), "y");
        assert_eq!(rest("a)", "x"), "a)");
        assert_eq!(rest("ab", "b"), "ab");
        assert_eq!(rest("\"é\"", "\""), "\"é\"");
        assert_eq!(rest("é\"", "\""), "é");
    }

    #[test]
    fn lines_below() {
        let mut l = lines("\n    x = 1\n    return x\n\nfoo()");
        assert!(drop_lines_repeating_suffix(
            &mut l,
            &["return x", "foo()", "bar()"]
        ));
        assert_eq!(l, lines("\n    x = 1"));
        let mut l = lines("\n    return x\n    y");
        assert!(!drop_lines_repeating_suffix(&mut l, &["return x"]));
        let mut l = lines("return x");
        assert!(!drop_lines_repeating_suffix(&mut l, &["return x"]));
    }
}
