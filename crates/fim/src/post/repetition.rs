//! Repetition: a small model stuck in a loop writes the same line (or the same few lines)
//! again and again. Three copies in a row are kept as one and the output ends there.
//!
//! It also loops *inside* a line (`def _get_to_to_to_to_to`, `"http://www.1.1.1.1.1.1`)
//! until the token budget cuts it: a line that ends in five or more copies of a short unit
//! (with a letter or digit, and two distinct characters, so `# -----` and `x = "    "`
//! stay) is dropped with everything after it, as Copilot drops repetitive completions.
//!
//! Lines are compared without their surrounding whitespace; groups made only of blank lines
//! are left to the scope rule (two blank lines). Knows nothing of LSP, the engine or editors.

use crate::context::is_blank;

/// The longest group of lines looked for.
pub const MAX_PERIOD: usize = 4;
/// How many copies in a row make a repetition.
pub const COPIES: usize = 3;

/// Longest unit of an in-line loop.
pub const MAX_UNIT: usize = 10;
/// Copies of the unit that make an in-line loop.
pub const LINE_COPIES: usize = 5;

/// Step 4: cut the output after the first copy of the first repetition, and before the
/// first line that loops inside itself.
pub fn drop_repetition(lines: &mut Vec<String>) {
    if let Some(cut) = repetition_cut(lines) {
        lines.truncate(cut);
    }
    if let Some(i) = lines.iter().position(|l| loops_inside(l)) {
        lines.truncate(i);
    }
}

/// Whether `line` ends (trailing whitespace aside) in [`LINE_COPIES`] or more copies of a
/// unit of at most [`MAX_UNIT`] characters holding a letter or digit and two distinct
/// characters.
pub fn loops_inside(line: &str) -> bool {
    let chars: Vec<char> = line.trim_end().chars().collect();
    let n = chars.len();
    for unit in 1..=MAX_UNIT {
        if unit * LINE_COPIES > n {
            break;
        }
        let tail = &chars[n - unit..];
        let mut distinct = tail.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 2 || !tail.iter().any(|c| c.is_alphanumeric()) {
            continue;
        }
        let copies = (1..)
            .take_while(|k| k * unit <= n && chars[n - k * unit..n - (k - 1) * unit] == *tail)
            .count();
        if copies >= LINE_COPIES {
            return true;
        }
    }
    false
}

/// Where to cut `lines`: after the first copy of the repetition that completes first (the
/// smallest last line), or `None`. Depends only on the lines up to that last line.
pub fn repetition_cut<S: AsRef<str>>(lines: &[S]) -> Option<usize> {
    let line = |i: usize| lines[i].as_ref().trim();
    for end in 0..lines.len() {
        for period in 1..=MAX_PERIOD {
            let len = period * COPIES;
            if end + 1 < len {
                break;
            }
            let start = end + 1 - len;
            if (start..start + period).all(|i| is_blank(line(i))) {
                continue;
            }
            let repeats =
                (start + period..=end).all(|i| line(i) == line(start + (i - start) % period));
            if repeats {
                return Some(start + period);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(s: &str) -> Option<usize> {
        repetition_cut(&s.split('\n').collect::<Vec<_>>())
    }

    #[test]
    fn finds_the_first_completed_repetition() {
        assert_eq!(cut("a\na\na"), Some(1));
        assert_eq!(cut("x\n  a\na \na\nb"), Some(2));
        assert_eq!(cut("a\na"), None);
        assert_eq!(cut("a\nb\na\nb\na\nb"), Some(2));
        assert_eq!(cut("a\n\na\n\na\n"), Some(2));
        assert_eq!(cut("a\n\na\n\na"), None);
        assert_eq!(cut("\n\n\n"), None);
        assert_eq!(cut("a\nb\nc\na\nb\nc"), None);
    }

    #[test]
    fn loops_inside_a_line() {
        for looping in [
            "def _get_to_to_to_to_to_to",
            "    \"http://www.1.1.1.1.1.1.1.1.1",
            "# path, name, name, name, name, name, name",
            "x = abab ab ab ab ab ab ab  ",
        ] {
            assert!(loops_inside(looping), "{looping}");
        }
        for fine in [
            "# ----------------------------------------",
            "x = [0, 0, 0, 0, 0, 0]",
            "_to_to_to_to",
            "self.assertEqual(a, b)",
            "        ",
            "====================",
        ] {
            assert!(!loops_inside(fine), "{fine}");
        }
        let mut lines: Vec<String> = ["a = 1", "b_to_to_to_to_to_to", "c"]
            .map(String::from)
            .to_vec();
        drop_repetition(&mut lines);
        assert_eq!(lines, ["a = 1"]);
    }
}
