//! Identifier tokens of code, for every similarity in this crate: whole identifiers (Jaccard
//! between windows, the import scan, the recall metric) and their lowercase sub-tokens
//! (`getUserName`, `get_user_name` and `GetUserName` all give `get`, `user`, `name`) for BM25.
//!
//! Pure and allocation-free on the hot paths: terms are 64-bit FNV-1a hashes of the
//! lowercased text, so the index stores no strings. Knows no file, no language grammar.

use std::collections::HashSet;
use std::sync::OnceLock;

/// Words that say nothing about what code is about: keywords of the common languages and
/// `self`/`this`. Left out of every similarity.
const STOP_WORDS: &[&str] = &[
    "and",
    "as",
    "assert",
    "async",
    "await",
    "break",
    "class",
    "continue",
    "def",
    "del",
    "elif",
    "else",
    "except",
    "false",
    "finally",
    "for",
    "from",
    "global",
    "if",
    "import",
    "in",
    "is",
    "lambda",
    "none",
    "nonlocal",
    "not",
    "or",
    "pass",
    "raise",
    "return",
    "true",
    "try",
    "while",
    "with",
    "yield",
    "self",
    "cls",
    "this",
    "fn",
    "let",
    "mut",
    "pub",
    "use",
    "impl",
    "struct",
    "enum",
    "match",
    "const",
    "static",
    "var",
    "function",
    "new",
    "null",
    "void",
    "int",
    "str",
    "string",
    "bool",
    "public",
    "private",
    "protected",
    "package",
    "func",
    "type",
    "interface",
    "the",
    "of",
    "to",
    "an",
    "it",
    "be",
    "on",
    "at",
    "by",
    "args",
    "kwargs",
];

/// FNV-1a over the bytes of `s` lowercased (ASCII lowercasing; other characters as they
/// are): stable across runs and Rust versions.
pub fn term_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b.to_ascii_lowercase() as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// FNV-1a over the exact bytes of `s` (identifiers are case-sensitive in most languages).
pub fn ident_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn stop_hashes() -> &'static HashSet<u64> {
    static SET: OnceLock<HashSet<u64>> = OnceLock::new();
    SET.get_or_init(|| STOP_WORDS.iter().map(|w| term_hash(w)).collect())
}

/// Whether `word` (any case) is a stop word.
pub fn is_stop_word(word: &str) -> bool {
    stop_hashes().contains(&term_hash(word))
}

/// The identifiers of `text` with their byte offsets: a letter or `_` then letters, digits
/// and `_`. Numbers (`0x1f`, `2e10`) are skipped whole. Works on any text, broken or not.
pub fn identifiers(text: &str) -> Identifiers<'_> {
    Identifiers { text, pos: 0 }
}

/// Iterator of [`identifiers`].
pub struct Identifiers<'a> {
    text: &'a str,
    pos: usize,
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl<'a> Iterator for Identifiers<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<(usize, &'a str)> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() {
            let b = bytes[self.pos];
            if b.is_ascii() {
                if b == b'_' || b.is_ascii_alphabetic() {
                    return Some(self.take_run());
                }
                if b.is_ascii_digit() {
                    // A number: skip it and any letters glued to it.
                    self.take_run();
                    continue;
                }
                self.pos += 1;
                continue;
            }
            let c = self.text[self.pos..].chars().next().expect("in bounds");
            if c.is_alphabetic() {
                return Some(self.take_run());
            }
            self.pos += c.len_utf8();
        }
        None
    }
}

impl<'a> Identifiers<'a> {
    fn take_run(&mut self) -> (usize, &'a str) {
        let start = self.pos;
        let rest = &self.text[start..];
        let len = rest
            .char_indices()
            .find(|&(_, c)| !is_ident_char(c))
            .map_or(rest.len(), |(i, _)| i);
        self.pos = start + len;
        (start, &rest[..len])
    }
}

/// The parts of an identifier: split at `_`, at lower-to-upper case changes (`getUser`),
/// before the last capital of a run followed by a lowercase letter (`HTTPServer` ->
/// `HTTP`, `Server`) and between letters and digits. Parts keep their case.
pub fn parts(ident: &str, mut f: impl FnMut(&str)) {
    let mut start: Option<usize> = None;
    let mut prev: Option<char> = None;
    let mut iter = ident.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if c == '_' {
            if let Some(s) = start.take() {
                f(&ident[s..i]);
            }
            prev = None;
            continue;
        }
        let boundary = match prev {
            None => false,
            Some(p) => {
                (p.is_lowercase() && c.is_uppercase())
                    || (p.is_alphabetic() != c.is_alphabetic())
                    || (p.is_uppercase()
                        && c.is_uppercase()
                        && iter.peek().is_some_and(|&(_, n)| n.is_lowercase()))
            }
        };
        if boundary {
            if let Some(s) = start.take() {
                f(&ident[s..i]);
            }
        }
        if start.is_none() {
            start = Some(i);
        }
        prev = Some(c);
    }
    if let Some(s) = start {
        f(&ident[s..]);
    }
}

/// The BM25 terms of `text`, as hashes: each identifier's parts of two or more characters
/// and, for an identifier of several parts, the whole identifier too (so an exact name
/// scores above its parts). Stop words and numbers are left out.
pub fn terms(text: &str, mut f: impl FnMut(u64)) {
    let stop = stop_hashes();
    for (_, ident) in identifiers(text) {
        let mut n = 0;
        parts(ident, |p| {
            n += 1;
            if p.chars().count() >= 2 && !p.bytes().all(|b| b.is_ascii_digit()) {
                let h = term_hash(p);
                if !stop.contains(&h) {
                    f(h);
                }
            }
        });
        if n > 1 {
            let h = term_hash(ident);
            if !stop.contains(&h) {
                f(h);
            }
        }
    }
}

/// The distinct identifiers of `text` that say something (two or more characters, not a
/// stop word), as [`ident_hash`]es: the sets Jaccard similarity compares.
pub fn ident_set(text: &str) -> HashSet<u64> {
    let mut out = HashSet::new();
    for_each_ident(text, |h| {
        out.insert(h);
    });
    out
}

/// Each identifier of `text` that says something, as an [`ident_hash`], in order.
pub fn for_each_ident(text: &str, mut f: impl FnMut(u64)) {
    for (_, ident) in identifiers(text) {
        if ident.chars().count() >= 2 && !is_stop_word(ident) {
            f(ident_hash(ident));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(ident: &str) -> Vec<String> {
        let mut v = Vec::new();
        parts(ident, |p| v.push(p.to_string()));
        v
    }

    #[test]
    fn identifiers_skip_numbers_and_punctuation() {
        let ids: Vec<&str> = identifiers("x = getUser(0x1f, 2e10) + _y.é_2 # ok")
            .map(|(_, s)| s)
            .collect();
        assert_eq!(ids, ["x", "getUser", "_y", "é_2", "ok"]);
        let first = identifiers("  ab").next().unwrap();
        assert_eq!(first, (2, "ab"));
        assert_eq!(identifiers("").count(), 0);
        assert_eq!(identifiers("123 ()").count(), 0);
    }

    #[test]
    fn parts_split_case_underscores_and_digits() {
        for (ident, want) in [
            ("getUserName", vec!["get", "User", "Name"]),
            ("get_user_name", vec!["get", "user", "name"]),
            ("GetUserName", vec!["Get", "User", "Name"]),
            ("HTTPServer", vec!["HTTP", "Server"]),
            ("__init__", vec!["init"]),
            ("utf8Decode", vec!["utf", "8", "Decode"]),
            ("x", vec!["x"]),
            ("_", vec![]),
        ] {
            assert_eq!(split(ident), want, "{ident}");
        }
    }

    #[test]
    fn terms_agree_across_naming_styles() {
        let collect = |s: &str| {
            let mut v = Vec::new();
            terms(s, |h| v.push(h));
            v
        };
        let camel = collect("getUserName");
        let snake = collect("get_user_name");
        let parts: Vec<u64> = ["get", "user", "name"]
            .iter()
            .map(|s| term_hash(s))
            .collect();
        assert_eq!(&camel[..3], parts.as_slice());
        assert_eq!(&snake[..3], parts.as_slice());
        // The whole identifier comes last, in its own spelling (lowercased).
        assert_eq!(camel[3], term_hash("getusername"));
        assert_eq!(snake[3], term_hash("get_user_name"));
        // Stop words and one-letter parts are left out.
        assert!(collect("def self x return").is_empty());
    }
}
