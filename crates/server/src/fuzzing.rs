//! Entry points for the fuzz targets in `fuzz/` (libFuzzer, nightly) and for the stable
//! replay of their corpora in `tests/fuzz_corpus.rs`: each takes arbitrary bytes and panics
//! when a property fails. Not used by the server itself.
//!
//! - [`frames`]: the framer and the sanitizer on any byte stream;
//! - [`documents`]: a document against a reference text model, under any edits in all three
//!   position encodings (CRLF, astral characters, lone surrogates through the sanitizer);
//! - [`settings`]: any JSON as settings.

use serde::Deserialize;
use serde_json::Value;
use tower_lsp_server::jsonrpc::{Request, Response};
use tower_lsp_server::ls_types::{DidChangeTextDocumentParams, Position};

use crate::document::Document;
use crate::encoding::PositionEncoding;
use crate::framing::{Event, Framer, MAX_MESSAGE_BYTES};
use crate::input::Sanitizer;
use crate::settings::{load_over, Settings};
use crate::ServeOptions;

fn run_framer(stream: &[u8], chunk: usize) -> (Vec<Event>, usize) {
    let mut f = Framer::new();
    let mut events = Vec::new();
    let mut peak = 0;
    for c in stream.chunks(chunk.max(1)) {
        f.push(c);
        peak = peak.max(f.buffered());
        while let Some(e) = f.next_event() {
            events.push(e);
        }
    }
    f.finish();
    while let Some(e) = f.next_event() {
        events.push(e);
    }
    (events, peak)
}

const TAIL_A: &str = r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#;
const TAIL_B: &str = r#"{"jsonrpc":"2.0","method":"b","params":{"t":"Content-Length: 5\r\n"}}"#;

/// Framer and sanitizer on arbitrary bytes (the first byte picks the chunk size):
/// - the events do not depend on how the bytes are split into reads;
/// - what is buffered stays bounded;
/// - every body handed to tower-lsp-server is one it decodes (else it would end the stream);
/// - whatever came before, the second of two valid frames appended comes out whole.
pub fn frames(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let (whole, _) = run_framer(stream, stream.len());
    let (chunked, peak) = run_framer(stream, chunk);
    assert_eq!(whole, chunked, "chunking changed the events");
    assert!(peak <= MAX_MESSAGE_BYTES + chunk, "buffered {peak} bytes");
    let mut s = Sanitizer::default();
    for e in whole {
        if let Some(body) = s.clean(e) {
            assert!(
                serde_json::from_slice::<Request>(&body).is_ok()
                    || serde_json::from_slice::<Response>(&body).is_ok(),
                "the framework cannot decode {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    let mut tail = stream.to_vec();
    for body in [TAIL_A, TAIL_B] {
        tail.extend(format!("Content-Length: {}\r\n\r\n{body}", body.len()).bytes());
    }
    let (events, _) = run_framer(&tail, chunk);
    assert_eq!(
        events.last(),
        Some(&Event::Message(TAIL_B.as_bytes().to_vec())),
        "the stream did not recover: {events:?}"
    );
}

/// Reads the fuzzer's bytes as small numbers.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// Pieces edits are made of; `None` entries are lone UTF-16 surrogates (high, low), which
/// only the JSON path can carry.
const PIECES: &[Option<&str>] = &[
    Some("a"),
    Some("b"),
    Some(" "),
    Some("\n"),
    Some("\r"),
    Some("\r\n"),
    Some("é"),
    Some("名"),
    Some("😀"),
    Some("𝄞"),
    Some("\u{FFFD}"),
    Some("\u{2028}"),
    Some("\t"),
    None,
    None,
];

/// The reference model's positions: LSP's own rules, written without ropey.
mod reference {
    use crate::encoding::PositionEncoding;

    fn units(c: char, enc: PositionEncoding) -> usize {
        match enc {
            PositionEncoding::Utf8 => c.len_utf8(),
            PositionEncoding::Utf16 => c.len_utf16(),
            PositionEncoding::Utf32 => 1,
        }
    }

    /// Byte ranges of each line's content (without `\n`, `\r\n` or `\r`).
    pub fn lines(text: &str) -> Vec<(usize, usize)> {
        let b = text.as_bytes();
        let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
        while i < b.len() {
            match b[i] {
                b'\r' if b.get(i + 1) == Some(&b'\n') => {
                    out.push((start, i));
                    i += 2;
                    start = i;
                }
                b'\r' | b'\n' => {
                    out.push((start, i));
                    i += 1;
                    start = i;
                }
                _ => i += 1,
            }
        }
        out.push((start, b.len()));
        out
    }

    /// Byte offset of a position: the character clamped to the line, rounded down inside a
    /// character; `None` for a line past the end.
    pub fn offset(text: &str, line: u32, character: u32, enc: PositionEncoding) -> Option<usize> {
        let &(s, e) = lines(text).get(line as usize)?;
        let mut seen = 0;
        for (i, c) in text[s..e].char_indices() {
            if seen + units(c, enc) > character as usize {
                return Some(s + i);
            }
            seen += units(c, enc);
        }
        Some(e)
    }
}

/// A [`Document`] against the reference model under arbitrary edits: after every edit both
/// hold the same text, and every position maps to the same offset in both.
pub fn documents(data: &[u8]) {
    let mut b = Bytes(data);
    let Some(mode) = b.next() else { return };
    let enc = match mode % 3 {
        0 => PositionEncoding::Utf8,
        1 => PositionEncoding::Utf16,
        _ => PositionEncoding::Utf32,
    };
    let mut doc = Document::new("", 0, 0, "text".into());
    let mut want = String::new();
    let mut sanitizer = Sanitizer::default();
    let mut version = 0;
    while let Some(op) = b.next() {
        version += 1;
        // A range, or none (a full replacement) one time in sixteen.
        let coord = |b: &mut Bytes| u32::from(b.next().unwrap_or(0) % 12);
        let range = (op % 16 != 0).then(|| {
            let (l0, c0, l1, c1) = (coord(&mut b), coord(&mut b), coord(&mut b), coord(&mut b));
            (Position::new(l0, c0), Position::new(l1, c1))
        });
        // The inserted text: as JSON (through the sanitizer), with its lone surrogates.
        let n = usize::from(b.next().unwrap_or(0) % 6);
        let mut json_text = String::from("\"");
        let mut text = String::new();
        let mut i = 0;
        let picks: Vec<Option<&str>> = (0..n)
            .map(|_| PIECES[usize::from(b.next().unwrap_or(0)) % PIECES.len()])
            .collect();
        while i < picks.len() {
            match picks[i] {
                Some(p) => {
                    let quoted = serde_json::to_string(p).expect("a string serializes");
                    json_text.push_str(&quoted[1..quoted.len() - 1]);
                    text.push_str(p);
                }
                // A lone surrogate decodes as one U+FFFD, or two of them as their pair when
                // a high one is followed by a low one.
                None => {
                    let high = i % 2 == 0;
                    json_text.push_str(if high { "\\ud83d" } else { "\\ude00" });
                    let pairs = high && i + 1 < picks.len() && picks[i + 1].is_none();
                    if pairs {
                        json_text.push_str("\\ude00");
                        text.push('😀');
                        i += 1;
                    } else {
                        text.push('\u{FFFD}');
                    }
                }
            }
            i += 1;
        }
        json_text.push('"');
        let range_json = match range {
            Some((a, z)) => format!(
                r#","range":{{"start":{{"line":{},"character":{}}},"end":{{"line":{},"character":{}}}}}"#,
                a.line, a.character, z.line, z.character
            ),
            None => String::new(),
        };
        let body = format!(
            r#"{{"jsonrpc":"2.0","method":"textDocument/didChange","params":{{"textDocument":{{"uri":"file:///f","version":{version}}},"contentChanges":[{{"text":{json_text}{range_json}}}]}}}}"#
        );
        let clean = sanitizer
            .clean(Event::Message(body.into_bytes()))
            .expect("a message");
        let req: Request = serde_json::from_slice(&clean).expect("the framework decodes it");
        let params = DidChangeTextDocumentParams::deserialize(req.params().expect("params"))
            .expect("didChange params");
        assert_eq!(params.content_changes[0].text, text, "decoded text");
        doc.apply(&params.content_changes, version, version as u64, enc, false);

        // The reference edit.
        match range {
            None => want = text,
            Some((a, z)) => {
                let end = want.len();
                let x = reference::offset(&want, a.line, a.character, enc).unwrap_or(end);
                let y = reference::offset(&want, z.line, z.character, enc).unwrap_or(end);
                let (x, y) = (x.min(y), x.max(y));
                want.replace_range(x..y, &text);
            }
        }
        assert_eq!(doc.text(), want, "texts diverged after edit {version}");
        // Positions agree: every cell of a small grid.
        for line in 0..4 {
            for character in 0..6 {
                let got = doc
                    .char_at(Position::new(line, character), enc)
                    .map(|c| doc.char_to_byte(c));
                let exp = reference::offset(&want, line, character, enc);
                assert_eq!(got, exp, "position {line}:{character} ({enc:?})");
                if let Some(c) = doc.char_at(Position::new(line, character), enc) {
                    let back = doc.position_of(c, enc);
                    assert_eq!(doc.char_at(back, enc), Some(c), "round trip");
                }
            }
        }
    }
}

/// Any JSON value as settings: never a panic; an invalid value keeps the value in force; the
/// same settings twice resolve to the same thing.
pub fn settings(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let cli = ServeOptions::default();
    let defaults = Settings::from_cli(&cli).expect("the defaults are valid");
    let (s, _, problems) = load_over(&cli, &[&v], &defaults);
    let _ = problems.message();
    for key in &problems.invalid {
        let mut kept = s.clone();
        assert!(kept.keep(key, &defaults), "`{key}` cannot be kept");
        assert_eq!(kept, s, "`{key}` did not keep the value in force");
    }
    let (twice, _, _) = load_over(&cli, &[&v, &v], &defaults);
    assert_eq!(twice, s, "the same layer twice changed the settings");
    let (over_itself, _, _) = load_over(&cli, &[&v], &s);
    assert_eq!(over_itself, s, "re-applying the settings changed them");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_points_accept_the_empty_input_and_a_few_bytes() {
        for data in [
            &b""[..],
            b"\x05Content-Length: 3\r\n\r\n{}}",
            b"\x01\x07\x03\x02\x0e\x0d",
        ] {
            frames(data);
            documents(data);
            settings(data);
        }
        settings(br#"{"model": "", "device": "tpu", "copilot-lsp": {"topP": 3}}"#);
    }
}
