//! One open document: its text in a rope (a keystroke in a 10,000-line file costs
//! microseconds), its version, and conversions between LSP positions and offsets.
//!
//! Lines end at `\n`, `\r\n` or `\r` and nowhere else (ropey's `unicode_lines` is off). A
//! character past the end of a line is clamped to the line's end; a line past the end of the
//! document is "no such position" for requests and the document's end for edits.

use copilot_service::CharEdit;
use ropey::{Rope, RopeSlice};
use tower_lsp_server::ls_types::{Position, TextDocumentContentChangeEvent};

use crate::encoding::PositionEncoding;

#[derive(Clone, Debug)]
pub struct Document {
    rope: Rope,
    version: i32,
    /// Arrival number of the last message that changed the text (see `gate.rs`).
    changed_at: u64,
    language_id: String,
}

/// Length in chars of a line's terminator (`\r\n`, `\n`, `\r` or none at the end).
fn terminator_len(line: RopeSlice<'_>) -> usize {
    let n = line.len_chars();
    if n == 0 {
        return 0;
    }
    match line.char(n - 1) {
        '\n' if n >= 2 && line.char(n - 2) == '\r' => 2,
        '\n' | '\r' => 1,
        _ => 0,
    }
}

impl Document {
    pub fn new(text: &str, version: i32, changed_at: u64, language_id: String) -> Self {
        Self {
            rope: Rope::from_str(text),
            version,
            changed_at,
            language_id,
        }
    }

    pub fn text(&self) -> String {
        self.rope.to_string()
    }

    pub fn rope(&self) -> &Rope {
        &self.rope
    }

    pub fn version(&self) -> i32 {
        self.version
    }

    pub fn changed_at(&self) -> u64 {
        self.changed_at
    }

    pub fn language_id(&self) -> &str {
        &self.language_id
    }

    pub fn line_count(&self) -> usize {
        self.rope.len_lines()
    }

    /// Char index of `pos`, the character clamped to its line; `None` for a line past the
    /// last one.
    pub fn char_at(&self, pos: Position, enc: PositionEncoding) -> Option<usize> {
        let line_idx = pos.line as usize;
        if line_idx >= self.rope.len_lines() {
            return None;
        }
        let start = self.rope.line_to_char(line_idx);
        let line = self.rope.line(line_idx);
        let content = line.len_chars() - terminator_len(line);
        let col = pos.character as usize;
        let in_line = match enc {
            PositionEncoding::Utf32 => col.min(content),
            PositionEncoding::Utf16 => {
                let units = line.char_to_utf16_cu(content);
                // Inside a surrogate pair: ropey rounds down to the char's start.
                line.utf16_cu_to_char(col.min(units))
            }
            PositionEncoding::Utf8 => {
                let bytes = line.char_to_byte(content);
                line.byte_to_char(col.min(bytes))
            }
        };
        Some(start + in_line)
    }

    /// Like [`Document::char_at`], but a line past the end means the end of the document.
    pub fn char_at_clamped(&self, pos: Position, enc: PositionEncoding) -> usize {
        self.char_at(pos, enc)
            .unwrap_or_else(|| self.rope.len_chars())
    }

    /// The position of a char index.
    pub fn position_of(&self, char_idx: usize, enc: PositionEncoding) -> Position {
        let char_idx = char_idx.min(self.rope.len_chars());
        let line_idx = self.rope.char_to_line(char_idx);
        let col = char_idx - self.rope.line_to_char(line_idx);
        let line = self.rope.line(line_idx);
        let character = match enc {
            PositionEncoding::Utf32 => col,
            PositionEncoding::Utf16 => line.char_to_utf16_cu(col),
            PositionEncoding::Utf8 => line.char_to_byte(col),
        };
        Position::new(line_idx as u32, character as u32)
    }

    pub fn char_to_byte(&self, char_idx: usize) -> usize {
        self.rope.char_to_byte(char_idx.min(self.rope.len_chars()))
    }

    /// Start of the identifier-like word that ends at `char_idx`.
    pub fn word_start(&self, char_idx: usize) -> usize {
        let mut i = char_idx.min(self.rope.len_chars());
        while i > 0 {
            let c = self.rope.char(i - 1);
            if c.is_alphanumeric() || c == '_' {
                i -= 1;
            } else {
                break;
            }
        }
        i
    }

    /// Apply `changes` in order. A change without a range replaces the whole text. Returns
    /// the edits in characters, in order (for the outcome bookkeeping); a whole-text
    /// replacement is narrowed to what differs when `narrow` (a scan of the text, only worth
    /// it when something in the document is tracked), else it is one edit of everything.
    pub fn apply(
        &mut self,
        changes: &[TextDocumentContentChangeEvent],
        version: i32,
        changed_at: u64,
        enc: PositionEncoding,
        narrow: bool,
    ) -> Vec<CharEdit> {
        let mut edits = Vec::with_capacity(changes.len());
        for change in changes {
            match change.range {
                None => {
                    let new = Rope::from_str(&change.text);
                    edits.push(if narrow {
                        difference(&self.rope, &new)
                    } else {
                        CharEdit {
                            start: 0,
                            end: self.rope.len_chars(),
                            inserted: new.len_chars(),
                        }
                    });
                    self.rope = new;
                }
                Some(range) => {
                    let a = self.char_at_clamped(range.start, enc);
                    let b = self.char_at_clamped(range.end, enc);
                    let (start, end) = (a.min(b), a.max(b));
                    if start < end {
                        self.rope.remove(start..end);
                    }
                    if !change.text.is_empty() {
                        self.rope.insert(start, &change.text);
                    }
                    edits.push(CharEdit {
                        start,
                        end,
                        inserted: change.text.chars().count(),
                    });
                }
            }
        }
        self.version = version;
        self.changed_at = changed_at;
        edits
    }
}

/// The one edit turning `old` into `new`: what lies between their common prefix and suffix.
fn difference(old: &Rope, new: &Rope) -> CharEdit {
    let prefix = old
        .chars()
        .zip(new.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let room = old.len_chars().min(new.len_chars()) - prefix;
    let suffix = old
        .chars_at(old.len_chars())
        .reversed()
        .zip(new.chars_at(new.len_chars()).reversed())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    CharEdit {
        start: prefix,
        end: old.len_chars() - suffix,
        inserted: new.len_chars() - suffix - prefix,
    }
}

#[cfg(test)]
mod tests {
    use tower_lsp_server::ls_types::Range;

    use super::*;
    use PositionEncoding::{Utf16, Utf32, Utf8};

    fn doc(text: &str) -> Document {
        Document::new(text, 0, 0, "python".into())
    }

    fn pos(line: u32, character: u32) -> Position {
        Position::new(line, character)
    }

    fn edit(range: Option<((u32, u32), (u32, u32))>, text: &str) -> TextDocumentContentChangeEvent {
        TextDocumentContentChangeEvent {
            range: range.map(|((a, b), (c, d))| Range::new(pos(a, b), pos(c, d))),
            range_length: None,
            text: text.into(),
        }
    }

    #[test]
    fn positions_in_each_encoding() {
        // 'é' is 2 bytes/1 unit, '😀' 4 bytes/2 units/1 char.
        let d = doc("aé😀b\nx");
        let want_b = 3; // char index of 'b'
        assert_eq!(d.char_at(pos(0, 3), Utf32), Some(want_b));
        assert_eq!(d.char_at(pos(0, 4), Utf16), Some(want_b));
        assert_eq!(d.char_at(pos(0, 7), Utf8), Some(want_b));
        for enc in [Utf8, Utf16, Utf32] {
            let p = d.position_of(want_b, enc);
            assert_eq!(d.char_at(p, enc), Some(want_b), "{enc:?}");
            assert_eq!(d.char_at(pos(1, 0), enc), Some(5));
        }
        // Inside the emoji: rounds down to its start.
        assert_eq!(d.char_at(pos(0, 3), Utf16), Some(2));
        assert_eq!(d.char_at(pos(0, 5), Utf8), Some(2));
    }

    #[test]
    fn characters_past_the_end_of_a_line_are_clamped() {
        for text in ["ab\ncd", "ab\r\ncd", "ab\rcd"] {
            let d = doc(text);
            for enc in [Utf8, Utf16, Utf32] {
                assert_eq!(d.char_at(pos(0, 99), enc), Some(2), "{text:?} {enc:?}");
                let second = d.char_at(pos(1, 0), enc).unwrap();
                assert_eq!(d.rope().char(second), 'c');
                assert_eq!(d.char_at(pos(1, 99), enc), Some(d.rope().len_chars()));
            }
        }
    }

    #[test]
    fn lines_past_the_end() {
        let d = doc("a\n");
        assert_eq!(d.line_count(), 2);
        assert_eq!(d.char_at(pos(1, 0), Utf16), Some(2));
        assert_eq!(d.char_at(pos(2, 0), Utf16), None);
        assert_eq!(d.char_at_clamped(pos(7, 3), Utf16), 2);
    }

    #[test]
    fn only_lsp_line_breaks_count() {
        // U+2028, NEL, VT and FF are not line breaks in LSP. If this fails, ropey's
        // `unicode_lines` feature got switched on by feature unification.
        let d = doc("a\u{2028}b\u{85}c\u{b}d\u{c}e\nf");
        assert_eq!(d.line_count(), 2);
        assert_eq!(d.char_at(pos(1, 0), Utf32), Some(10));
    }

    #[test]
    fn incremental_edits_with_emoji_crlf_and_full_replacement() {
        let mut d = doc("hello\r\nworld");
        d.apply(&[edit(Some(((0, 5), (0, 5))), " 😀")], 1, 1, Utf16, false);
        assert_eq!(d.text(), "hello 😀\r\nworld");
        // After the emoji: utf-16 column 8.
        d.apply(&[edit(Some(((0, 8), (1, 0))), "|𝄞|")], 2, 2, Utf16, false);
        assert_eq!(d.text(), "hello 😀|𝄞|world");
        d.apply(&[edit(Some(((0, 6), (0, 12))), "")], 3, 3, Utf16, false);
        assert_eq!(d.text(), "hello world");
        d.apply(
            &[edit(None, "new\rtext"), edit(Some(((1, 0), (1, 4))), "x")],
            4,
            4,
            Utf8,
            false,
        );
        assert_eq!(d.text(), "new\rx");
        assert_eq!(d.version(), 4);
        assert_eq!(d.changed_at(), 4);
    }

    #[test]
    fn a_reversed_or_out_of_range_edit_does_not_panic() {
        let mut d = doc("abc");
        d.apply(&[edit(Some(((0, 2), (0, 1))), "X")], 1, 1, Utf16, false);
        assert_eq!(d.text(), "aXc");
        d.apply(&[edit(Some(((5, 0), (9, 9))), "!")], 2, 2, Utf16, false);
        assert_eq!(d.text(), "aXc!");
    }

    #[test]
    fn keystrokes_in_a_10000_line_document() {
        let line = "    let value = compute(alpha, beta); // 😀 naïve comment\r\n";
        let mut d = doc(&line.repeat(10_000));
        let start = std::time::Instant::now();
        for i in 0..1000u32 {
            let l = (i * 7919) % 10_000;
            d.apply(
                &[edit(Some(((l, 4), (l, 4))), "x")],
                i as i32,
                u64::from(i),
                Utf16,
                false,
            );
        }
        let per_keystroke = start.elapsed() / 1000;
        // Printed, not asserted (nothing asserts timings): microseconds, not milliseconds.
        eprintln!("{per_keystroke:?} per keystroke in a 10,000-line document"); // stdout ok: stderr, in a test
        let text = d.text();
        assert_eq!(text.matches('x').count(), 1000);
        assert_eq!(d.line_count(), 10_001);
        assert_eq!(text.len(), line.len() * 10_000 + 1000);
    }

    #[test]
    fn edits_are_reported_in_characters() {
        let e = |start, end, inserted| CharEdit {
            start,
            end,
            inserted,
        };
        let mut d = doc("a😀b\nxyz");
        // After the emoji (UTF-16 column 3 = char 2), replace "b\nx" with "é".
        let got = d.apply(&[edit(Some(((0, 3), (1, 1))), "é")], 1, 1, Utf16, false);
        assert_eq!(got, [e(2, 5, 1)]);
        assert_eq!(d.text(), "a😀éyz");
        // A whole-text replacement, narrowed to what differs, or not.
        let got = d.apply(&[edit(None, "a😀Xéyz")], 2, 2, Utf16, true);
        assert_eq!(got, [e(2, 2, 1)]);
        let got = d.apply(&[edit(None, "a😀Xéyz!")], 3, 3, Utf16, false);
        assert_eq!(got, [e(0, 6, 7)]);
        for (old, new, want) in [
            ("abc", "abc", e(3, 3, 0)),
            ("abc", "", e(0, 3, 0)),
            ("", "xy", e(0, 0, 2)),
            ("aaa", "aa", e(2, 3, 0)),
            ("abab", "ab", e(2, 4, 0)),
            ("x😀y", "x😀😀y", e(2, 2, 1)),
        ] {
            let mut d = doc(old);
            assert_eq!(
                d.apply(&[edit(None, new)], 1, 1, Utf8, true),
                [want],
                "{old:?} -> {new:?}"
            );
        }
    }

    #[test]
    fn word_start_stops_at_non_identifier_chars() {
        let d = doc("x = foo_bär1");
        assert_eq!(d.word_start(12), 4);
        assert_eq!(d.word_start(4), 4);
        assert_eq!(d.word_start(3), 3);
    }
}
