//! Indentation: continuation lines take the file's style (tabs or spaces) and width.
//!
//! Each line keeps its column, measured with a tab reaching the next multiple of the file's
//! width, and is written again in the file's style. When the cursor ends a line that opens a
//! block and the model indents the body by a different step than the file (4 spaces in a
//! 2-space file), the columns inside the block are rescaled, but only when every line of the
//! completion sits on the model's grid. Columns at or left of the opening line are never
//! moved. Knows nothing of LSP, the engine or editors.

use crate::context::{advance, indent_width, is_blank, leading_ws, IndentStyle};
use crate::post::Site;
use crate::shape::opens_block;

/// Step 7: rewrite the leading whitespace of continuation lines (and of the first line when
/// the cursor is at column 0) in the file's style and width. Files without indented lines
/// near the cursor leave the output as it is.
pub fn restyle_indentation(lines: &mut [String], site: &Site) {
    let Some(style) = site.style else {
        return;
    };
    let tab = site.tab;
    let first = if site.before.is_empty() { 0 } else { 1 };
    let rescale = block_rescale(&lines[first.min(lines.len())..], site);
    for line in lines.iter_mut().skip(first) {
        if is_blank(line) {
            continue;
        }
        let ws = leading_ws(line);
        let mut col = advance(0, ws, tab);
        if let Some((base, from, to)) = rescale {
            if col > base {
                col = base + (col - base) / from * to;
            }
        }
        let indent = match style {
            IndentStyle::Tabs => format!("{}{}", "\t".repeat(col / tab), " ".repeat(col % tab)),
            IndentStyle::Spaces(_) => " ".repeat(col),
        };
        if indent != ws {
            *line = format!("{indent}{}", &line[ws.len()..]);
        }
    }
}

/// `(base column, model step, file step)` when the body of a block opened at the cursor is
/// indented by a different step than the file's and every line sits on the model's grid.
fn block_rescale(lines: &[String], site: &Site) -> Option<(usize, usize, usize)> {
    if !opens_block(site.before) || site.before.is_empty() {
        return None;
    }
    let tab = site.tab;
    let base = indent_width(site.before, tab);
    let mut cols = lines
        .iter()
        .filter(|l| !is_blank(l))
        .map(|l| indent_width(l, tab));
    let from = cols.clone().find(|&c| c > base)? - base;
    let to = match site.style? {
        IndentStyle::Spaces(w) => w,
        IndentStyle::Tabs => tab,
    };
    let on_grid = cols.all(|c| c <= base || (c - base) % from == 0);
    (from != to && from <= 8 && on_grid).then_some((base, from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::CursorContext;

    fn run(prefix: &str, out: &str) -> String {
        let ctx = CursorContext { prefix, suffix: "" };
        let site = Site::new(&ctx, None);
        let mut lines: Vec<String> = out.split('\n').map(str::to_string).collect();
        restyle_indentation(&mut lines, &site);
        lines.join("\n")
    }

    #[test]
    fn tabs_and_spaces() {
        let tabbed = "func f() {\n\tx := 1\n\t";
        assert_eq!(
            run(tabbed, "y()\n        z()\n\t  w"),
            "y()\n\t\tz()\n\t  w"
        );
        let spaced = "def f():\n    x = 1\n    ";
        assert_eq!(run(spaced, "y\n\t\tz\n    w"), "y\n        z\n    w");
        assert_eq!(run("a = 1\n", "\t\tb"), "\t\tb");
    }

    #[test]
    fn width_inside_a_block_opened_at_the_cursor() {
        let js = "function f() {\n  if (x) {\n    y();\n  }\n  while (z) {";
        assert_eq!(
            run(
                js,
                "\n      a();\n      if (b) {\n          c();\n      }\n  }"
            ),
            "\n    a();\n    if (b) {\n      c();\n    }\n  }"
        );
        // Off the grid: left alone.
        assert_eq!(
            run(js, "\n      a(1,\n         2);"),
            "\n      a(1,\n         2);"
        );
    }
}
