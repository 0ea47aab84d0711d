//! Repetition: a small model stuck in a loop writes the same line (or the same few lines)
//! again and again. Three copies in a row are kept as one and the output ends there.
//!
//! Lines are compared without their surrounding whitespace; groups made only of blank lines
//! are left to the scope rule (two blank lines). Knows nothing of LSP, the engine or editors.

use crate::context::is_blank;

/// The longest group of lines looked for.
pub const MAX_PERIOD: usize = 4;
/// How many copies in a row make a repetition.
pub const COPIES: usize = 3;

/// Step 4: cut the output after the first copy of the first repetition.
pub fn drop_repetition(lines: &mut Vec<String>) {
    if let Some(cut) = repetition_cut(lines) {
        lines.truncate(cut);
    }
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
}
