//! The tokenizer: `tokenizers` underneath, with what code completion needs on top.
//!
//! - Special tokens are found by their string, never by hard-coded ids: end of text from
//!   the strings the families use ([`EOS_CANDIDATES`]); control tokens are the tokenizer's
//!   own special tokens plus every family's FIM and repository tokens ([`CONTROL_STRINGS`])
//!   wherever the vocabulary has them (CodeLlama's `▁<PRE>` sits in its base vocabulary).
//! - [`Tokenizer::encode_text`] never yields a control id: user text that contains
//!   `<fim_prefix>`, `<|fim_middle|>` or `<|endoftext|>` stays text. Prompts are spliced from
//!   separately encoded pieces and the special ids. A SentencePiece-style tokenizer adds no
//!   dummy leading space to a piece: text is encoded as it is.
//! - Each id maps to its raw bytes (byte-level BPE, or SentencePiece's `▁` and `<0xNN>`
//!   pieces), so decoding token by token never splits a UTF-8 character ([`Utf8Decoder`]).

use std::collections::HashSet;
use std::path::Path;

use tokenizers::{
    Model as _, Normalizer as _, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer as _,
};

use crate::error::{EngineError, Result};

pub const EOS: &str = "<|endoftext|>";
pub const FIM_PREFIX: &str = "<fim_prefix>";
pub const FIM_MIDDLE: &str = "<fim_middle>";
pub const FIM_SUFFIX: &str = "<fim_suffix>";

/// End-of-text strings, in the order they are looked for: StarCoder/StarCoder2/Qwen2,
/// DeepSeek-Coder, Llama/CodeLlama/Mistral, Llama 3, Gemma.
pub const EOS_CANDIDATES: &[&str] = &[
    "<|endoftext|>",
    "<｜end▁of▁sentence｜>",
    "</s>",
    "<|end_of_text|>",
    "<eos>",
];

/// Begin-of-text strings (DeepSeek-Coder and CodeLlama prompts start with one).
pub const BOS_CANDIDATES: &[&str] = &["<｜begin▁of▁sentence｜>", "<s>", "<|begin_of_text|>"];

/// The families' FIM, repository and end-of-middle tokens: control tokens wherever the
/// vocabulary has them, whether or not the tokenizer marks them special.
pub const CONTROL_STRINGS: &[&str] = &[
    // StarCoder, StarCoder2
    "<fim_prefix>",
    "<fim_suffix>",
    "<fim_middle>",
    "<fim_pad>",
    "<file_sep>",
    "<repo_name>",
    "<reponame>",
    "<filename>",
    // Qwen2.5-Coder
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<|im_start|>",
    "<|im_end|>",
    // DeepSeek-Coder
    "<｜fim▁begin｜>",
    "<｜fim▁hole｜>",
    "<｜fim▁end｜>",
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    // CodeLlama
    "▁<PRE>",
    "▁<SUF>",
    "▁<MID>",
    "▁<EOT>",
    "<s>",
    "</s>",
    // Codestral
    "[PREFIX]",
    "[SUFFIX]",
    "[MIDDLE]",
];

/// Ids of the tokens every prompt and decoder needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    pub eos: u32,
    /// Begin of text, when the vocabulary has one.
    pub bos: Option<u32>,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `inner` without a SentencePiece dummy prefix (encodes text as it is); None when
    /// `inner` has none.
    plain: Option<tokenizers::Tokenizer>,
    specials: SpecialIds,
    /// Contents of the added tokens and of the control tokens, to detect them in user text.
    added: Vec<String>,
    /// Ids of control tokens: none of them belongs in a completion, so decoding stops there.
    special_ids: HashSet<u32>,
    /// Control tokens of the base vocabulary, as they appear in raw text (`<PRE>`): text
    /// is cut inside them so that no merge can rebuild one.
    vocab_controls: Vec<String>,
    /// Raw bytes of each id.
    bytes: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.bytes.len())
            .field("specials", &self.specials)
            .finish()
    }
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| EngineError::File {
            path: path.to_path_buf(),
            message: format!("cannot read tokenizer: {e}"),
        })?;
        Self::new(inner).map_err(|e| EngineError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn from_json(json: &str) -> Result<Self> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| EngineError::Tokenizer(format!("cannot parse tokenizer: {e}")))?;
        Self::new(inner)
    }

    pub fn new(inner: tokenizers::Tokenizer) -> Result<Self> {
        let eos = EOS_CANDIDATES
            .iter()
            .find_map(|s| inner.token_to_id(s))
            .ok_or_else(|| {
                EngineError::Tokenizer(format!(
                    "tokenizer has no end-of-text token (looked for {})",
                    EOS_CANDIDATES.join(" ")
                ))
            })?;
        let bos = BOS_CANDIDATES.iter().find_map(|s| inner.token_to_id(s));
        let added_map = inner.get_added_tokens_decoder();
        let mut added: Vec<String> = added_map.values().map(|t| t.content.clone()).collect();
        let mut special_ids: HashSet<u32> = added_map
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        let mut vocab_controls = Vec::new();
        for s in CONTROL_STRINGS {
            if let Some(id) = inner.token_to_id(s) {
                special_ids.insert(id);
                let raw = s.trim_start_matches('▁').to_string();
                if !added_map.contains_key(&id) {
                    vocab_controls.push(raw.clone());
                }
                added.push(raw);
            }
        }
        special_ids.insert(eos);
        added.sort();
        added.dedup();
        let json: serde_json::Value = inner
            .to_string(false)
            .ok()
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        let plain = without_dummy_prefix(&json)?;
        let byte_level = matches!(
            inner.get_decoder(),
            Some(tokenizers::DecoderWrapper::ByteLevel(_))
        );
        // SentencePiece converted to BPE: `▁` is a space, `<0x0A>` a raw byte.
        let spm = json["model"]["byte_fallback"] == true
            || json["decoder"].to_string().contains("ByteFallback");
        let table = byte_level.then(byte_decoder);
        let size = inner.get_vocab_size(true);
        let bytes = (0..size as u32)
            .map(|id| {
                if let Some(t) = added_map.get(&id) {
                    return t.content.as_bytes().to_vec();
                }
                match (&table, inner.id_to_token(id)) {
                    (Some(table), Some(tok)) => tok
                        .chars()
                        .map(|c| table.get(&c).copied().unwrap_or(b'?'))
                        .collect(),
                    (None, Some(tok)) if spm => spm_piece_bytes(&tok),
                    (None, Some(_)) => inner
                        .decode(&[id], false)
                        .map(String::into_bytes)
                        .unwrap_or_default(),
                    (_, None) => Vec::new(),
                }
            })
            .collect();
        Ok(Self {
            inner,
            plain,
            specials: SpecialIds { eos, bos },
            added,
            special_ids,
            vocab_controls,
            bytes,
        })
    }

    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    /// Whether `id` is a special token (`<|endoftext|>`, `<fim_*>`, `<filename>`...).
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// Id of an arbitrary token string, special or not.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// Encode user text. Never produces the id of a control token, even when the text
    /// contains its string.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let ids = if !self.added.iter().any(|a| text.contains(a.as_str())) {
            let enc = self
                .encoder()
                .encode_fast(text, false)
                .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
            enc.get_ids().to_vec()
        } else {
            self.encode_without_added(text)?
        };
        if !ids.iter().any(|i| self.special_ids.contains(i)) {
            return Ok(ids);
        }
        // A control token of the base vocabulary (CodeLlama's `▁<PRE>`) was rebuilt by the
        // merges: cut the text after the first character of each such string and encode the
        // parts on their own, so no merge can span the cut.
        let mut cuts: Vec<usize> = self
            .vocab_controls
            .iter()
            .flat_map(|c| {
                let first = c.chars().next().map_or(1, char::len_utf8);
                text.match_indices(c.as_str()).map(move |(i, _)| i + first)
            })
            .collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([text.len()]) {
            if cut > at {
                out.extend(self.encode_without_added(&text[at..cut])?);
                at = cut;
            }
        }
        Ok(out)
    }

    /// The tokenizer that encodes text pieces (without a dummy leading space).
    fn encoder(&self) -> &tokenizers::Tokenizer {
        self.plain.as_ref().unwrap_or(&self.inner)
    }

    /// The tokenizer's pipeline (normalizer, pre-tokenizer, model) without the added
    /// vocabulary's extraction step, so special strings are split like any other text.
    fn encode_without_added(&self, text: &str) -> Result<Vec<u32>> {
        let err = |e: tokenizers::Error| EngineError::Tokenizer(e.to_string());
        let enc = self.encoder();
        let mut normalized = tokenizers::NormalizedString::from(text);
        if let Some(n) = enc.get_normalizer() {
            n.normalize(&mut normalized).map_err(err)?;
        }
        let mut pre = PreTokenizedString::from(normalized);
        if let Some(p) = enc.get_pre_tokenizer() {
            p.pre_tokenize(&mut pre).map_err(err)?;
        }
        let model = enc.get_model();
        pre.tokenize(|s| model.tokenize(s.get())).map_err(err)?;
        Ok(pre
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .flat_map(|(_, _, toks)| toks.iter().flatten().map(|t| t.id).collect::<Vec<_>>())
            .collect())
    }

    /// Raw bytes of a token (empty for an unknown id).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// Decode ids to text, invalid UTF-8 replaced.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.token_bytes(i).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The same tokenizer without SentencePiece's dummy prefix (a `Prepend("▁")` normalizer, or
/// a `Metaspace` pre-tokenizer that prepends), None when it has none: pieces of a prompt are
/// encoded as the text they are, and a template writes the space where its family wants one.
fn without_dummy_prefix(json: &serde_json::Value) -> Result<Option<tokenizers::Tokenizer>> {
    fn strip(v: &mut serde_json::Value) -> bool {
        let mut changed = false;
        match v {
            serde_json::Value::Object(m) => {
                if m.get("type").and_then(|t| t.as_str()) == Some("Metaspace") {
                    if m.get("prepend_scheme").and_then(|p| p.as_str()) != Some("never") {
                        m.insert("prepend_scheme".into(), "never".into());
                        changed = true;
                    }
                    if m.get("add_prefix_space") == Some(&serde_json::Value::Bool(true)) {
                        m.insert("add_prefix_space".into(), false.into());
                        changed = true;
                    }
                }
                if let Some(serde_json::Value::Array(list)) = m.get_mut("normalizers") {
                    let before = list.len();
                    list.retain(|n| n.get("type").and_then(|t| t.as_str()) != Some("Prepend"));
                    changed |= list.len() != before;
                }
                for (_, x) in m.iter_mut() {
                    changed |= strip(x);
                }
            }
            serde_json::Value::Array(a) => {
                for x in a {
                    changed |= strip(x);
                }
            }
            _ => {}
        }
        changed
    }
    let mut v = json.clone();
    let top_prepend = v["normalizer"]["type"] == "Prepend";
    if top_prepend {
        v["normalizer"] = serde_json::Value::Null;
    }
    let changed = strip(&mut v["normalizer"]) | strip(&mut v["pre_tokenizer"]);
    if !(changed || top_prepend) {
        return Ok(None);
    }
    let t: tokenizers::Tokenizer = v
        .to_string()
        .parse()
        .map_err(|e| EngineError::Tokenizer(format!("cannot rebuild tokenizer: {e}")))?;
    Ok(Some(t))
}

/// A SentencePiece piece's bytes: `<0x0A>` is that byte, `▁` a space.
fn spm_piece_bytes(piece: &str) -> Vec<u8> {
    if let Some(hex) = piece
        .strip_prefix("<0x")
        .and_then(|h| h.strip_suffix('>'))
        .filter(|h| h.len() == 2)
    {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            return vec![b];
        }
    }
    piece.replace('▁', " ").into_bytes()
}

/// GPT-2's byte-level alphabet: the printable char that stands for each byte, in byte order.
pub fn byte_alphabet() -> [char; 256] {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = ['\0'; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        out[b as usize] = char::from_u32(c).expect("valid alphabet char");
    }
    out
}

/// The alphabet reversed: printable char -> byte.
fn byte_decoder() -> std::collections::HashMap<char, u8> {
    byte_alphabet()
        .into_iter()
        .enumerate()
        .map(|(b, c)| (c, b as u8))
        .collect()
}

/// Incremental UTF-8 decoding of token bytes: emits only complete characters and holds back
/// a split multi-byte sequence until its last byte arrives.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes; return the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap());
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Invalid bytes: replace them and go on.
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + len);
                        }
                    }
                }
            }
        }
    }

    /// Like [`Utf8Decoder::push`], but bytes that are not UTF-8 are dropped instead of
    /// becoming U+FFFD. (A model's output is code to insert into the user's file: invalid
    /// bytes are the model going astray, and U+FFFD must not reach the file.)
    pub fn push_valid(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            let (valid, bad) = match std::str::from_utf8(&self.pending) {
                Ok(_) => (self.pending.len(), None),
                Err(e) => (e.valid_up_to(), e.error_len()),
            };
            out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
            match bad {
                Some(len) => {
                    self.pending.drain(..valid + len);
                }
                None => {
                    // All valid, or an incomplete sequence at the end: wait for more bytes.
                    self.pending.drain(..valid);
                    return out;
                }
            }
        }
    }

    /// Flush what is left (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_decoder_holds_back_split_characters() {
        let text = "é😀a";
        let bytes = text.as_bytes();
        let mut d = Utf8Decoder::new();
        let mut out = String::new();
        for b in bytes {
            let piece = d.push(&[*b]);
            assert!(!piece.contains('\u{FFFD}'));
            out.push_str(&piece);
        }
        out.push_str(&d.finish());
        assert_eq!(out, text);
    }

    #[test]
    fn utf8_decoder_replaces_invalid_bytes_and_continues() {
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
        assert_eq!(d.push(&[0xE2, 0x82]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }

    #[test]
    fn push_valid_drops_invalid_bytes_and_holds_back_split_characters() {
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push_valid("é".as_bytes()), "é");
        assert_eq!(d.push_valid(&[b'a', 0xF0, 0x9F]), "a");
        assert_eq!(d.push_valid(&[0x98, 0x80, b'b']), "😀b");
        // A lead byte followed by another character: the lead byte is dropped (pico wrote
        // such bytes next to emoji).
        assert_eq!(d.push_valid(&[b'c', 0xF0, 0x9F]), "c");
        assert_eq!(d.push_valid(&[0xD0, 0xBB, b'x', 0xFF, b'y']), "лxy");
    }

    #[test]
    fn byte_decoder_covers_all_bytes() {
        let t = byte_decoder();
        assert_eq!(t.len(), 256);
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'a'], b'a');
    }
}
