//! Single-line or multi-line: what kind of completion the cursor's position calls for.
//!
//! Decided from the document text alone (no syntax tree): code after the cursor on its line
//! means one line; the end of a line that opens a block, or an empty line inside one, means
//! several. Knows nothing of LSP, the engine or editors.

use crate::context::{indent_width, is_blank, CursorContext, IndentStyle};

/// How much a completion may span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// The rest of the cursor line (or, at the end of a line, the next line).
    SingleLine,
    /// A block of lines, until the model walks out of the cursor's block.
    MultiLine,
}

/// The shape a completion at this cursor should take:
///
/// - code after the cursor on its line: [`Shape::SingleLine`];
/// - at the end of a line that opens a block (`:`, `{`, `(` or `[` last): [`Shape::MultiLine`];
/// - on a blank line inside a block (the cursor is indented, the line above opens a block, or
///   the lines above and below are both indented): [`Shape::MultiLine`];
/// - otherwise [`Shape::SingleLine`].
pub fn shape(ctx: &CursorContext) -> Shape {
    let before = ctx.line_before();
    if !is_blank(ctx.line_after()) {
        return Shape::SingleLine;
    }
    if opens_block(before) || (is_blank(before) && inside_block(ctx)) {
        Shape::MultiLine
    } else {
        Shape::SingleLine
    }
}

/// Whether a line ends by opening a block: `:` (Python), `{`, `(` or `[` as its last
/// non-blank character, and it is not a comment.
pub fn opens_block(line: &str) -> bool {
    let code = line.trim();
    if code.is_empty() || is_comment(code) {
        return false;
    }
    code.ends_with([':', '{', '(', '['])
}

/// Whether a trimmed line is a comment (`#`, `//`, `/*`, `*`, `--`).
fn is_comment(code: &str) -> bool {
    ["#", "//", "/*", "*", "--"]
        .iter()
        .any(|c| code.starts_with(c))
}

/// Whether a cursor on a blank line is inside a block.
fn inside_block(ctx: &CursorContext) -> bool {
    if !ctx.line_before().is_empty() {
        // The cursor is indented.
        return true;
    }
    let Some(prev) = ctx.previous_line() else {
        return false;
    };
    if opens_block(prev) {
        return true;
    }
    let tab = IndentStyle::tab_width(None);
    let next_indented = ctx
        .lines_below()
        .next()
        .is_some_and(|l| indent_width(l, tab) > 0);
    indent_width(prev, tab) > 0 && next_indented
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(doc: &str) -> Shape {
        let (prefix, suffix) = doc.split_once("$0").unwrap();
        shape(&CursorContext { prefix, suffix })
    }

    #[test]
    fn shapes() {
        assert_eq!(at("x = foo($0)\n"), Shape::SingleLine);
        assert_eq!(at("def f():$0\n"), Shape::MultiLine);
        assert_eq!(at("def f():$0  \r\n"), Shape::MultiLine);
        assert_eq!(at("if (x) {$0\n}"), Shape::MultiLine);
        assert_eq!(at("x = 1$0\n"), Shape::SingleLine);
        assert_eq!(at("# note:$0\n"), Shape::SingleLine);
        assert_eq!(at("def f():\n    $0\n"), Shape::MultiLine);
        assert_eq!(at("def f():\n$0\n"), Shape::MultiLine);
        assert_eq!(
            at("def f():\n    a = 1\n$0\n    return a\n"),
            Shape::MultiLine
        );
        assert_eq!(at("def f():\n    a = 1\n$0\n"), Shape::SingleLine);
        assert_eq!(at("import os\n$0\n"), Shape::SingleLine);
        assert_eq!(at("$0"), Shape::SingleLine);
    }
}
