//! Post-processing: clean the model's raw output into the text inserted at the cursor, and
//! the decoder's early-stop rule that agrees with it.
//!
//! Each rule is a small named step in its own module, applied in the fixed order of
//! [`STEPS`]:
//!
//! 1. [`line_endings::normalize_line_endings`]: `\r\n` and `\r` become `\n`.
//! 2. [`special::cut_at_special_tokens`]: cut at `<|endoftext|>`, `<fim_*>` written out.
//! 3. [`scope::limit_to_scope`]: one line, or lines until the model walks out of the
//!    cursor's block (a line indented less, a new top-level `def`/`class`/`@`/`if __name__`,
//!    two blank lines).
//! 4. [`repetition::drop_repetition`]: a line (or group of up to four lines) repeated three
//!    times is kept once and the output ends there; a line that loops inside itself
//!    (`a_to_to_to_to_to`) is dropped with the rest.
//! 5. [`whitespace::trim_trailing_whitespace`]: per line, and trailing blank lines.
//! 6. [`overlap::drop_suffix_overlap`]: trailing lines that repeat the lines below the cursor,
//!    and the end of the last line that repeats the rest of the cursor line (an auto-closed
//!    `)` or `"`), and step 4's rule again on what is left (a cut can bare a loop), until
//!    none applies.
//! 7. [`indent::restyle_indentation`]: continuation lines take the file's tabs or spaces and
//!    indentation width; step 6 again on the restyled lines, until neither changes them.
//! 8. [`whitespace::drop_whitespace_only`]: nothing to show.
//! 9. [`line_endings::restore_line_endings`]: CRLF documents get `\r\n`.
//!
//! The result's first line continues the cursor line; continuation lines carry their full
//! indentation. Every step only removes text, except 7 and 9 which change indentation and
//! line endings, so the output's non-whitespace characters are a prefix of the raw output's,
//! and running [`postprocess`] on its own output changes nothing. [`should_stop`] evaluates
//! steps 1 to 4 on the text generated so far and says stop only once their cut can no
//! longer move.
//!
//! [`settled::settled`] says which part of a partial output streaming may already send.
//!
//! Knows nothing of LSP, the engine or editors; `--raw` and `postprocess: false` are the
//! callers' business (they skip this module).

pub mod indent;
pub mod line_endings;
pub mod overlap;
pub mod repetition;
pub mod scope;
pub mod settled;
pub mod special;
pub mod whitespace;

use crate::context::{is_blank, CursorContext, IndentStyle};
use crate::shape::{shape, Shape};

/// The names of the steps, in the order [`postprocess`] applies them.
pub const STEPS: [&str; 9] = [
    "normalize_line_endings",
    "cut_at_special_tokens",
    "limit_to_scope",
    "drop_repetition",
    "trim_trailing_whitespace",
    "drop_suffix_overlap",
    "restyle_indentation",
    "drop_whitespace_only",
    "restore_line_endings",
];

/// Options of [`postprocess`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PostOptions {
    /// The completion's shape; `None`: computed by [`shape()`].
    pub shape: Option<Shape>,
}

/// What the rules need to know about the cursor, computed once per call.
#[derive(Clone, Copy, Debug)]
pub struct Site<'a> {
    /// The document around the cursor.
    pub ctx: CursorContext<'a>,
    /// The cursor line before the cursor.
    pub before: &'a str,
    /// The cursor line after the cursor.
    pub after: &'a str,
    /// The file's indentation style, if it has any indented line near the cursor.
    pub style: Option<IndentStyle>,
    /// The tab width used to measure indentation.
    pub tab: usize,
    /// The completion's shape.
    pub shape: Shape,
}

impl<'a> Site<'a> {
    /// Analyse the cursor's surroundings.
    pub fn new(ctx: &CursorContext<'a>, shape_opt: Option<Shape>) -> Self {
        let style = ctx.indent_style();
        Site {
            ctx: *ctx,
            before: ctx.line_before(),
            after: ctx.line_after(),
            style,
            tab: IndentStyle::tab_width(style),
            shape: shape_opt.unwrap_or_else(|| shape(ctx)),
        }
    }
}

/// Clean raw model output into the text inserted at the cursor; `""` means show nothing.
/// Never panics on any UTF-8. See the module documentation for the steps.
pub fn postprocess(raw: &str, ctx: &CursorContext, opts: &PostOptions) -> String {
    run(raw, ctx, opts, &mut |_, _| {})
}

/// [`postprocess`], returning the text after each step (named as in [`STEPS`]), for
/// debugging and evaluation reports. The last entry is the result.
pub fn postprocess_traced(
    raw: &str,
    ctx: &CursorContext,
    opts: &PostOptions,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    run(raw, ctx, opts, &mut |step, text| {
        out.push((step, text.to_string()))
    });
    out
}

fn run(
    raw: &str,
    ctx: &CursorContext,
    opts: &PostOptions,
    trace: &mut dyn FnMut(&'static str, &str),
) -> String {
    let site = Site::new(ctx, opts.shape);
    let text = line_endings::normalize_line_endings(raw);
    trace(STEPS[0], &text);
    let (text, _) = special::cut_at_special_tokens(&text);
    trace(STEPS[1], text);
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let mut step = |i: usize, lines: &mut Vec<String>, f: &dyn Fn(&mut Vec<String>)| {
        f(lines);
        trace(STEPS[i], &lines.join("\n"));
    };
    step(2, &mut lines, &|l| scope::limit_to_scope(l, &site));
    step(3, &mut lines, &repetition::drop_repetition);
    step(4, &mut lines, &whitespace::trim_trailing_whitespace);
    // The overlap's cut can bare a loop that the text after it hid (`..F\0F\0F\0` once `?`
    // repeating the suffix is gone), and the repetition's cut can make a line the last one,
    // whose end may repeat the rest of the cursor line: both rules, with the trailing blank
    // lines a cut leaves, until none changes anything, or a second pass would (both found by
    // the `fim` fuzz target). Each only removes text, so it ends.
    let settle = |l: &mut Vec<String>| loop {
        let before = l.len() + l.iter().map(String::len).sum::<usize>();
        overlap::drop_suffix_overlap(l, &site);
        repetition::drop_repetition(l);
        whitespace::trim_trailing_whitespace(l);
        if l.len() + l.iter().map(String::len).sum::<usize>() == before {
            break;
        }
    };
    step(5, &mut lines, &settle);
    step(6, &mut lines, &|l| loop {
        // The restyled indentation can make the last line's end repeat the rest of the
        // cursor line (`\tx` becomes `    x` below ` | x`): settled again until the restyle
        // leaves nothing more to cut (found by the `fim` fuzz target). The restyle keeps
        // restyled lines as they are, and settling only removes text, so it ends.
        indent::restyle_indentation(l, &site);
        let before = l.len() + l.iter().map(String::len).sum::<usize>();
        settle(l);
        if l.len() + l.iter().map(String::len).sum::<usize>() == before {
            break;
        }
    });
    step(7, &mut lines, &whitespace::drop_whitespace_only);
    let text = line_endings::restore_line_endings(&lines.join("\n"), ctx.is_crlf());
    trace(STEPS[8], &text);
    text
}

/// Early stop for the decoder: true once `generated` (the raw text so far) already holds
/// everything [`postprocess`] would keep, whatever the model writes next. Called after each
/// token: linear in the text generated plus a bounded look around the cursor.
///
/// Stops on a special token written out, on a scope cut that later text cannot move (a line
/// that walks out of the block, two blank lines, the end of a single line), or on a
/// repetition among the complete lines. Never earlier: for any continuation `more`,
/// `postprocess(generated + more) == postprocess(generated)` whenever this returns true.
pub fn should_stop(ctx: &CursorContext, shape: Shape, generated: &str) -> bool {
    let text = line_endings::normalize_line_endings(generated);
    let (text, found) = special::cut_at_special_tokens(&text);
    if found {
        return true;
    }
    let site = Site::new(ctx, Some(shape));
    let lines: Vec<&str> = text.split('\n').collect();
    let cut = scope::scope_cut(&lines, false, &site);
    if cut.decided {
        return true;
    }
    let mut complete = cut.keep.min(lines.len() - 1);
    // A blank last complete line is not settled while the line being written may turn out
    // blank too: two blank lines end the scope before it, and a repetition that needs it
    // (`a`, blank, three times) would no longer be one (found by the `fim` fuzz target).
    if complete > 0 && is_blank(lines[complete - 1]) && is_blank(lines[complete]) {
        complete -= 1;
    }
    repetition::repetition_cut(&lines[..complete]).is_some()
}
