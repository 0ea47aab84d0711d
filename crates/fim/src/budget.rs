//! Token budgets around the cursor: how many tokens of prefix and suffix a prompt may hold,
//! and where to cut the text (at line boundaries, nearest lines kept).
//!
//! Tokens are counted through [`TokenCounter`] so that this crate needs no tokenizer: the
//! engine implements it with the model's tokenizer, tests use [`CharCounter`]. Counting is
//! done line by line walking outward from the cursor, so the cost grows with what is kept,
//! not with the size of the document. Knows nothing of the engine, LSP or editors.

/// Default number of prefix tokens (text before the cursor) in a prompt.
pub const DEFAULT_PREFIX_TOKENS: usize = 1536;
/// Default number of suffix tokens (text after the cursor) in a prompt.
pub const DEFAULT_SUFFIX_TOKENS: usize = 512;

/// Counts the tokens of a piece of text. Implementations should be monotone (a longer
/// piece never counts fewer tokens than a shorter piece it contains) for the cuts to be tight.
pub trait TokenCounter {
    /// Number of tokens `text` encodes to.
    fn count(&self, text: &str) -> usize;
}

/// One token per character: the counter of tests and of callers without a tokenizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CharCounter;

impl TokenCounter for CharCounter {
    fn count(&self, text: &str) -> usize {
        text.chars().count()
    }
}

impl<T: TokenCounter + ?Sized> TokenCounter for &T {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
}

/// How many tokens a prompt may use.
///
/// The whole prompt (special tokens counting one each) never exceeds
/// `window - max_new_tokens`; when that is less than `prefix_tokens + suffix_tokens` plus the
/// special tokens and header, the prefix and suffix budgets are scaled down proportionally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Budget {
    /// Tokens of text before the cursor (default 1,536).
    pub prefix_tokens: usize,
    /// Tokens of text after the cursor (default 512); unused by left-to-right prompts.
    pub suffix_tokens: usize,
    /// The model's context window (`n_positions`).
    pub window: usize,
    /// Tokens reserved for generation.
    pub max_new_tokens: usize,
}

impl Default for Budget {
    /// The defaults for tiny_starcoder_py: 1,536 + 512 tokens, a window of 8,192 and 128 new
    /// tokens.
    fn default() -> Self {
        Self {
            prefix_tokens: DEFAULT_PREFIX_TOKENS,
            suffix_tokens: DEFAULT_SUFFIX_TOKENS,
            window: 8192,
            max_new_tokens: 128,
        }
    }
}

/// Split `room` tokens between a prefix wanting `want_prefix` and a suffix wanting
/// `want_suffix`: both granted when they fit, otherwise scaled down proportionally.
pub fn split_room(want_prefix: usize, want_suffix: usize, room: usize) -> (usize, usize) {
    let want = want_prefix as u128 + want_suffix as u128;
    if want <= room as u128 {
        return (want_prefix, want_suffix);
    }
    // want > room >= 0, so want > 0 and the quotient is at most room.
    let prefix = (room as u128 * want_prefix as u128 / want) as usize;
    let suffix = (room - prefix).min(want_suffix);
    (prefix, suffix)
}

/// The longest tail of `text` that fits `budget` tokens, cut at a line boundary: the partial
/// line at the end (the cursor line) is always kept, cut from its start if it alone is over
/// budget; then whole lines are added walking backwards while they fit.
///
/// Returns the kept tail and its token count (the sum of the per-line counts).
pub fn keep_tail<'a>(text: &'a str, budget: usize, counter: &dyn TokenCounter) -> (&'a str, usize) {
    let cursor_line = text.rfind('\n').map_or(0, |i| i + 1);
    let partial = &text[cursor_line..];
    let mut used = counter.count(partial);
    if used > budget {
        let kept = longest_fitting_tail(partial, budget, counter);
        return (kept, counter.count(kept));
    }
    let mut start = cursor_line;
    while start > 0 {
        // text[start - 1] is the '\n' ending the previous line.
        let line_start = text[..start - 1].rfind('\n').map_or(0, |i| i + 1);
        let n = counter.count(&text[line_start..start]);
        if used + n > budget {
            break;
        }
        used += n;
        start = line_start;
    }
    if start > 0 {
        // Truncated: move the start forward to the next line whose number is a multiple of
        // ANCHOR_LINES, so that the prompt's first line stays put while the user types at the
        // cursor (a start that slides by one line per new line would change the whole
        // prompt, and a KV cache can reuse only a common prefix).
        let line_no = text[..start].matches('\n').count();
        let skip = (ANCHOR_LINES - line_no % ANCHOR_LINES) % ANCHOR_LINES;
        let mut anchored = start;
        for _ in 0..skip {
            match text[anchored..cursor_line].find('\n') {
                Some(i) => anchored += i + 1,
                None => break,
            }
        }
        let kept_lines = text[start..cursor_line].matches('\n').count();
        if anchored < cursor_line && 2 * skip < kept_lines {
            used -= counter.count(&text[start..anchored]).min(used);
            start = anchored;
        }
    }
    (&text[start..], used)
}

/// A truncated prefix starts at a line number that is a multiple of this (see `keep_tail`).
pub const ANCHOR_LINES: usize = 16;

/// The longest head of `text` that fits `budget` tokens, cut at a line boundary: the rest of
/// the cursor line (with its newline) is always kept, cut from its end if it alone is over
/// budget; then whole lines are added walking forwards while they fit.
///
/// Returns the kept head and its token count (the sum of the per-line counts).
pub fn keep_head<'a>(text: &'a str, budget: usize, counter: &dyn TokenCounter) -> (&'a str, usize) {
    let mut end = text.find('\n').map_or(text.len(), |i| i + 1);
    let mut used = counter.count(&text[..end]);
    if used > budget {
        let kept = longest_fitting_head(&text[..end], budget, counter);
        return (kept, counter.count(kept));
    }
    while end < text.len() {
        let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
        let n = counter.count(&text[end..line_end]);
        if used + n > budget {
            break;
        }
        used += n;
        end = line_end;
    }
    (&text[..end], used)
}

/// Binary search (over character boundaries) for the longest tail of `line` within budget.
fn longest_fitting_tail<'a>(line: &'a str, budget: usize, counter: &dyn TokenCounter) -> &'a str {
    let starts: Vec<usize> = line
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(line.len()))
        .collect();
    // Smallest k such that line[starts[k]..] fits; k = last (empty text) always fits.
    let (mut lo, mut hi) = (0, starts.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if counter.count(&line[starts[mid]..]) <= budget {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    &line[starts[lo]..]
}

/// Binary search (over character boundaries) for the longest head of `line` within budget.
fn longest_fitting_head<'a>(line: &'a str, budget: usize, counter: &dyn TokenCounter) -> &'a str {
    let ends: Vec<usize> = std::iter::once(0)
        .chain(line.char_indices().skip(1).map(|(i, _)| i))
        .chain(std::iter::once(line.len()))
        .collect();
    // Largest k such that line[..ends[k]] fits; k = 0 (empty text) always fits.
    let (mut lo, mut hi) = (0, ends.len() - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if counter.count(&line[..ends[mid]]) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    &line[..ends[lo]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_room_grants_or_scales() {
        assert_eq!(split_room(1536, 512, 8000), (1536, 512));
        assert_eq!(split_room(1536, 512, 1024), (768, 256));
        assert_eq!(split_room(1536, 0, 1000), (1000, 0));
        assert_eq!(split_room(0, 0, 0), (0, 0));
        assert_eq!(split_room(usize::MAX, usize::MAX, 10), (5, 5));
    }

    #[test]
    fn tail_keeps_nearest_whole_lines() {
        let text = "aaaa\nbbbb\ncc";
        assert_eq!(keep_tail(text, 2, &CharCounter), ("cc", 2));
        assert_eq!(keep_tail(text, 6, &CharCounter), ("cc", 2));
        assert_eq!(keep_tail(text, 7, &CharCounter), ("bbbb\ncc", 7));
        assert_eq!(keep_tail(text, 100, &CharCounter), (text, 12));
        assert_eq!(keep_tail(text, 1, &CharCounter), ("c", 1));
        assert_eq!(keep_tail("ab\n", 0, &CharCounter), ("", 0));
        assert_eq!(keep_tail("", 0, &CharCounter), ("", 0));
    }

    #[test]
    fn head_keeps_nearest_whole_lines() {
        let text = "cc\nbbbb\naaaa";
        assert_eq!(keep_head(text, 3, &CharCounter), ("cc\n", 3));
        assert_eq!(keep_head(text, 7, &CharCounter), ("cc\n", 3));
        assert_eq!(keep_head(text, 8, &CharCounter), ("cc\nbbbb\n", 8));
        assert_eq!(keep_head(text, 100, &CharCounter), (text, 12));
        assert_eq!(keep_head(text, 2, &CharCounter), ("cc", 2));
        assert_eq!(keep_head("é€x", 2, &CharCounter), ("é€", 2));
    }

    #[test]
    fn over_budget_cursor_line_is_cut_at_char_boundaries() {
        assert_eq!(keep_tail("x\nh€llo wörld", 5, &CharCounter), ("wörld", 5));
        assert_eq!(keep_head("h€llo wörld\nx", 2, &CharCounter), ("h€", 2));
    }
}
