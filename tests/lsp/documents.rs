//! Document synchronisation: what the server holds must equal what the client holds, in
//! every position encoding, through emoji, astral characters, CRLF, lone CR, changes without
//! a range and 1,000 random edits.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::client::{caps, Lsp};
use crate::fixtures::{lines, offset, position, tiny, Enc};

const URI: &str = "file:///tmp/harness/doc.py";

/// The client's side of one document.
struct ClientDoc {
    text: String,
    version: i32,
    enc: Enc,
}

impl ClientDoc {
    /// Apply a change given by byte range, and describe it as the LSP change event.
    fn edit(&mut self, start: usize, end: usize, new: &str) -> Value {
        let (sl, sc) = position(&self.text, start, self.enc);
        let (el, ec) = position(&self.text, end, self.enc);
        self.text.replace_range(start..end, new);
        json!({"range": {"start": {"line": sl, "character": sc}, "end": {"line": el, "character": ec}},
               "text": new})
    }

    fn replace_all(&mut self, new: &str) -> Value {
        self.text = new.to_string();
        json!({"text": new})
    }

    fn send(&mut self, lsp: &Lsp, changes: Vec<Value>) {
        self.version += 1;
        lsp.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": URI, "version": self.version}, "contentChanges": changes}),
        );
    }

    fn check(&self, lsp: &mut Lsp, what: &str) {
        let d = lsp.document(URI);
        assert_eq!(d["version"], self.version, "{what}");
        assert_eq!(d["encoding"], self.enc.name(), "{what}");
        let got = d["text"].as_str().unwrap();
        assert!(
            got == self.text,
            "{what} ({}): server {got:?}\nclient {:?}",
            self.enc.name(),
            self.text
        );
        assert_eq!(d["lineCount"], lines(&self.text).len(), "{what}");
    }
}

fn start(enc: Enc, text: &str) -> (Lsp, ClientDoc) {
    let mut lsp = Lsp::spawn(&["--stdio"]);
    let init = lsp.initialize(json!({"model": tiny().dir}), caps(&[enc.name()]), None);
    assert_eq!(
        init["result"]["capabilities"]["positionEncoding"],
        enc.name()
    );
    lsp.open(URI, text);
    let doc = ClientDoc {
        text: text.to_string(),
        version: 0,
        enc,
    };
    (lsp, doc)
}

#[test]
fn edits_with_emoji_astral_characters_crlf_and_full_replacement() {
    for enc in [Enc::Utf16, Enc::Utf8, Enc::Utf32] {
        let (mut lsp, mut doc) = start(enc, "héllo 😀 wörld\r\nsecond 𝄞 line\rthird\n");
        doc.check(&mut lsp, "open");
        let t = doc.text.clone();
        // Insert right after the emoji (a surrogate pair in UTF-16, 4 bytes in UTF-8).
        let after_emoji = t.find('😀').unwrap() + '😀'.len_utf8();
        let c = doc.edit(after_emoji, after_emoji, "🎉");
        doc.send(&lsp, vec![c]);
        doc.check(&mut lsp, "insert after emoji");
        // Replace the astral G clef across the CRLF into the first line.
        let s = doc.text.find("wörld").unwrap();
        let e = doc.text.find('𝄞').unwrap() + '𝄞'.len_utf8();
        let c = doc.edit(s, e, "W\r\nX 𝄢");
        doc.send(&lsp, vec![c]);
        doc.check(&mut lsp, "replace across CRLF");
        // Several changes in one notification, each relative to the previous result.
        let a = doc.edit(0, 1, "H");
        let end = doc.text.len();
        let b = doc.edit(end, end, "fourth\r\n");
        let cr = doc.text.find('\r').unwrap();
        let c = doc.edit(cr, cr, "!");
        doc.send(&lsp, vec![a, b, c]);
        doc.check(&mut lsp, "three changes in one notification");
        // A character past the end of a line is clamped to the line's end.
        doc.version += 1;
        let (l, _) = position(&doc.text, 0, enc);
        lsp.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": URI, "version": doc.version},
                   "contentChanges": [{"range": {"start": {"line": l, "character": 10_000},
                                                 "end": {"line": l, "character": 20_000}},
                                       "text": "<eol>"}]}),
        );
        let eol = lines(&doc.text)[0].1;
        doc.text.insert_str(eol, "<eol>");
        doc.check(&mut lsp, "clamped past the end of a line");
        // A change without a range replaces everything.
        let c = doc.replace_all("brand\rnew 😀\n");
        doc.send(&lsp, vec![c]);
        doc.check(&mut lsp, "full replacement");
        assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
    }
}

const PIECES: &[&str] = &[
    "a", "bc", " ", "    ", "\n", "\r\n", "\r", "é", "😀", "𝄞", "\t", "{}", "def f():", "中文",
];

/// A random char-boundary byte offset that is not inside a `\r\n` pair.
fn random_offset(rng: &mut StdRng, text: &str) -> usize {
    loop {
        let i = rng.random_range(0..=text.len());
        let b = text.as_bytes();
        if text.is_char_boundary(i) && !(i > 0 && i < b.len() && b[i - 1] == b'\r' && b[i] == b'\n')
        {
            return i;
        }
    }
}

fn random_edits(enc: Enc, edits: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut lsp, mut doc) = start(enc, "fn main() {\r\n    println!(\"😀\");\n}\r");
    let mut done = 0;
    let mut checks = 0;
    while done < edits {
        let mut changes = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            done += 1;
            if rng.random_bool(0.01) {
                let n = rng.random_range(0..6);
                let new: String = (0..n).map(|_| *PIECES.choose(&mut rng).unwrap()).collect();
                changes.push(doc.replace_all(&new));
                continue;
            }
            let a = random_offset(&mut rng, &doc.text);
            let b = if rng.random_bool(0.5) {
                a
            } else {
                random_offset(&mut rng, &doc.text)
            };
            let (s, e) = (a.min(b), a.max(b).min(a.min(b) + 40));
            let e = (s..=e)
                .rev()
                .find(|&i| {
                    doc.text.is_char_boundary(i) && {
                        let bytes = doc.text.as_bytes();
                        !(i > 0 && i < bytes.len() && bytes[i - 1] == b'\r' && bytes[i] == b'\n')
                    }
                })
                .unwrap();
            let n = rng.random_range(0..4);
            let new: String = (0..n).map(|_| *PIECES.choose(&mut rng).unwrap()).collect();
            // An insertion that would split a CRLF pair is not expressible in LSP positions;
            // a `\n` typed right after a lone `\r` merges with it on both sides alike.
            changes.push(doc.edit(s, e, &new));
        }
        doc.send(&lsp, changes);
        if done / 100 > checks {
            checks = done / 100;
            doc.check(&mut lsp, &format!("after {done} random edits"));
        }
    }
    doc.check(&mut lsp, &format!("after all {done} random edits"));
    // Positions computed by the server agree with the client's too.
    let at = random_offset(&mut rng, &doc.text);
    let (l, c) = position(&doc.text, at, enc);
    assert_eq!(offset(&doc.text, l, c, enc), at);
    assert_eq!(lsp.shutdown_and_exit().code(), Some(0));
}

#[test]
fn the_server_text_equals_the_client_text_after_1000_random_utf16_edits() {
    random_edits(Enc::Utf16, 1000, 7);
}

#[test]
fn random_edits_in_utf8_and_utf32() {
    random_edits(Enc::Utf8, 300, 8);
    random_edits(Enc::Utf32, 300, 9);
}
