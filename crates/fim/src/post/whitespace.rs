//! Whitespace rules: trailing whitespace, trailing blank lines, whitespace-only results.
//!
//! Works on the completion's lines only; knows nothing of LSP, the engine or editors.

use crate::context::is_blank;

/// Step 6: remove trailing whitespace from every line, then trailing blank lines.
pub fn trim_trailing_whitespace(lines: &mut Vec<String>) {
    for line in lines.iter_mut() {
        let kept = line.trim_end().len();
        line.truncate(kept);
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
}

/// Step 8: a completion of whitespace only shows nothing.
pub fn drop_whitespace_only(lines: &mut Vec<String>) {
    if lines.iter().all(|l| is_blank(l)) {
        lines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.split('\n').map(str::to_string).collect()
    }

    #[test]
    fn trims() {
        let mut l = lines("a  \n  b\t\n \n\n");
        trim_trailing_whitespace(&mut l);
        assert_eq!(l, lines("a\n  b"));
        let mut l = lines(" \n\t");
        drop_whitespace_only(&mut l);
        assert!(l.is_empty());
        let mut l = lines("\nx");
        drop_whitespace_only(&mut l);
        assert_eq!(l, lines("\nx"));
    }
}
