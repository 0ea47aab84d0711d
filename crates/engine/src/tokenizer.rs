//! The tokenizer: `tokenizers` underneath, with what code completion needs on top.
//!
//! - Special tokens are found by their string (`<fim_prefix>`...), never by hard-coded ids.
//! - [`Tokenizer::encode_text`] never yields a special id: user text that contains
//!   `<fim_prefix>` or `<|endoftext|>` stays text. Prompts are spliced from separately
//!   encoded pieces and the special ids.
//! - Each id maps to its raw bytes, so decoding token by token never splits a UTF-8 character
//!   ([`Utf8Decoder`]).

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

/// Ids of the tokens the FIM format needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    pub eos: u32,
    pub fim_prefix: u32,
    pub fim_middle: u32,
    pub fim_suffix: u32,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    specials: SpecialIds,
    /// Contents of the added (special) tokens, to detect them in user text.
    added: Vec<String>,
    /// Ids of special tokens: none of them belongs in a completion, so decoding stops there.
    special_ids: std::collections::HashSet<u32>,
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
        let id = |s: &str| {
            inner.token_to_id(s).ok_or_else(|| {
                EngineError::Tokenizer(format!(
                    "tokenizer has no `{s}` token: not a StarCoder FIM tokenizer"
                ))
            })
        };
        let specials = SpecialIds {
            eos: id(EOS)?,
            fim_prefix: id(FIM_PREFIX)?,
            fim_middle: id(FIM_MIDDLE)?,
            fim_suffix: id(FIM_SUFFIX)?,
        };
        let added_map = inner.get_added_tokens_decoder();
        let added: Vec<String> = added_map.values().map(|t| t.content.clone()).collect();
        let special_ids = added_map
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        let byte_level = matches!(
            inner.get_decoder(),
            Some(tokenizers::DecoderWrapper::ByteLevel(_))
        );
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
            specials,
            added,
            special_ids,
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

    /// Encode user text. Never produces the id of a special token, even when the text
    /// contains its string.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        if !self.added.iter().any(|a| text.contains(a.as_str())) {
            let enc = self
                .inner
                .encode_fast(text, false)
                .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
            return Ok(enc.get_ids().to_vec());
        }
        self.encode_without_added(text)
    }

    /// The tokenizer's pipeline (normalizer, pre-tokenizer, model) without the added
    /// vocabulary's extraction step, so special strings are split like any other text.
    fn encode_without_added(&self, text: &str) -> Result<Vec<u32>> {
        let err = |e: tokenizers::Error| EngineError::Tokenizer(e.to_string());
        let mut normalized = tokenizers::NormalizedString::from(text);
        if let Some(n) = self.inner.get_normalizer() {
            n.normalize(&mut normalized).map_err(err)?;
        }
        let mut pre = PreTokenizedString::from(normalized);
        if let Some(p) = self.inner.get_pre_tokenizer() {
            p.pre_tokenize(&mut pre).map_err(err)?;
        }
        let model = self.inner.get_model();
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
