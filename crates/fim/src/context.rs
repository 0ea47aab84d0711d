//! The cursor's surroundings as the output rules see them: the cursor line, the lines around
//! it, the file's indentation style and line endings.
//!
//! Works on the document text only; knows nothing of LSP positions, the engine or editors.
//! Every look-around is bounded ([`SCAN_LINES`]) so that the early-stop rule, called after
//! every token, stays cheap on large files.

/// How many lines around the cursor are looked at to detect the indentation style.
pub const SCAN_LINES: usize = 400;

/// The document around the cursor: everything before and after it, as in the document
/// (lines may end with `\r\n`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CursorContext<'a> {
    /// All text before the cursor.
    pub prefix: &'a str,
    /// All text after the cursor.
    pub suffix: &'a str,
}

/// How a file indents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndentStyle {
    /// One tab per level.
    Tabs,
    /// This many spaces per level.
    Spaces(usize),
}

impl IndentStyle {
    /// Columns a tab advances to (the next multiple of), for measuring indentation.
    pub fn tab_width(style: Option<IndentStyle>) -> usize {
        match style {
            Some(IndentStyle::Spaces(w)) => w,
            _ => 4,
        }
    }
}

impl<'a> CursorContext<'a> {
    /// The text of the cursor line before the cursor (without any `\r`).
    pub fn line_before(&self) -> &'a str {
        let start = self.prefix.rfind(['\n', '\r']).map_or(0, |i| i + 1);
        &self.prefix[start..]
    }

    /// The text of the cursor line after the cursor (without the line ending).
    pub fn line_after(&self) -> &'a str {
        let end = self.suffix.find(['\n', '\r']).unwrap_or(self.suffix.len());
        &self.suffix[..end]
    }

    /// Whether the document uses `\r\n`, judged by the line ending nearest the cursor.
    pub fn is_crlf(&self) -> bool {
        if let Some(i) = self.suffix.find('\n') {
            return self.suffix[..i].ends_with('\r');
        }
        match self.prefix.rfind('\n') {
            Some(i) => self.prefix[..i].ends_with('\r'),
            None => false,
        }
    }

    /// The nearest non-blank line above the cursor line (within [`SCAN_LINES`]).
    pub fn previous_line(&self) -> Option<&'a str> {
        let start = self.prefix.len() - self.line_before().len();
        self.prefix[..start]
            .rsplit('\n')
            .take(SCAN_LINES)
            .map(|l| l.trim_end_matches('\r'))
            .find(|l| !is_blank(l))
    }

    /// The non-blank lines below the cursor line, nearest first.
    pub fn lines_below(&self) -> impl Iterator<Item = &'a str> {
        let start = self.line_after().len();
        self.suffix[start..]
            .split('\n')
            .skip(1)
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !is_blank(l))
    }

    /// The file's indentation style, judged from the lines around the cursor; `None` when
    /// no line there is indented.
    pub fn indent_style(&self) -> Option<IndentStyle> {
        let before: Vec<&str> = self.prefix.rsplit('\n').take(SCAN_LINES).collect();
        let after = self.suffix.split('\n').skip(1).take(SCAN_LINES);
        let (mut tabs, mut spaces) = (0usize, 0usize);
        // Histogram of positive indentation steps between consecutive space-indented lines.
        let mut steps = [0usize; 9];
        let mut last: Option<usize> = None;
        for line in before.into_iter().rev().chain(after) {
            if is_blank(line) {
                continue;
            }
            match line.as_bytes()[0] {
                b'\t' => {
                    tabs += 1;
                    last = None;
                    continue;
                }
                b' ' => spaces += 1,
                _ => {}
            }
            let width = line.bytes().take_while(|&b| b == b' ').count();
            if line.as_bytes().get(width) == Some(&b'\t') {
                last = None;
                continue;
            }
            if let Some(prev) = last {
                if width > prev && width - prev < steps.len() {
                    steps[width - prev] += 1;
                }
            }
            last = Some(width);
        }
        if tabs == 0 && spaces == 0 {
            return None;
        }
        if tabs > spaces {
            return Some(IndentStyle::Tabs);
        }
        let (best, count) =
            steps.iter().enumerate().skip(1).fold(
                (4, 0),
                |best, (w, &n)| if n > best.1 { (w, n) } else { best },
            );
        Some(IndentStyle::Spaces(if count == 0 { 4 } else { best }))
    }
}

/// Whether a line holds nothing but whitespace.
pub fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// The leading spaces and tabs of `line`.
pub fn leading_ws(line: &str) -> &str {
    let n = line
        .bytes()
        .take_while(|&b| b == b' ' || b == b'\t')
        .count();
    &line[..n]
}

/// Columns of leading whitespace, a tab advancing to the next multiple of `tab`.
pub fn indent_width(line: &str, tab: usize) -> usize {
    advance(0, leading_ws(line), tab)
}

/// The column reached from `col` after the spaces and tabs at the start of `ws`.
pub fn advance(col: usize, ws: &str, tab: usize) -> usize {
    let tab = tab.max(1);
    ws.bytes()
        .map_while(|b| match b {
            b' ' => Some(1),
            b'\t' => Some(0),
            _ => None,
        })
        .fold(col, |col, step| {
            if step == 1 {
                col + 1
            } else {
                (col / tab + 1) * tab
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(prefix: &'a str, suffix: &'a str) -> CursorContext<'a> {
        CursorContext { prefix, suffix }
    }

    #[test]
    fn cursor_line_halves() {
        let c = ctx("a\r\n  foo(", ")\r\nb");
        assert_eq!(c.line_before(), "  foo(");
        assert_eq!(c.line_after(), ")");
        assert!(c.is_crlf());
        assert!(ctx("a\nb", "c\r\nd").is_crlf());
        assert!(!ctx("a\r\nb", "c\nd").is_crlf());
        assert!(ctx("a\r\nb", "").is_crlf());
        assert!(!ctx("", "").is_crlf());
    }

    #[test]
    fn neighbours() {
        let c = ctx("x\n  y\n\n", "\n\n z\nw");
        assert_eq!(c.previous_line(), Some("  y"));
        assert_eq!(c.lines_below().collect::<Vec<_>>(), vec![" z", "w"]);
        assert_eq!(ctx("", "").previous_line(), None);
    }

    #[test]
    fn styles() {
        let py = "def f():\n    if x:\n        y\n    z\n";
        assert_eq!(ctx(py, "").indent_style(), Some(IndentStyle::Spaces(4)));
        let js = "function f() {\n  if (x) {\n    y();\n  }\n}\n";
        assert_eq!(ctx(js, "").indent_style(), Some(IndentStyle::Spaces(2)));
        let go = "func f() {\n\tif x {\n\t\ty()\n\t}\n}\n";
        assert_eq!(ctx("", go).indent_style(), Some(IndentStyle::Tabs));
        assert_eq!(ctx("a = 1\nb = 2\n", "").indent_style(), None);
    }

    #[test]
    fn widths() {
        assert_eq!(indent_width("    x", 4), 4);
        assert_eq!(indent_width("\t\tx", 4), 8);
        assert_eq!(indent_width("  \tx", 4), 4);
        assert_eq!(indent_width("\t  x", 2), 4);
        assert_eq!(indent_width("x", 4), 0);
        assert_eq!(advance(2, "\t", 4), 4);
    }
}
