//! Position encodings: what an LSP `Position.character` counts (UTF-16 code units by
//! default, or UTF-8 bytes, or Unicode scalar values), negotiated from the client's
//! `general.positionEncodings` and echoed in `capabilities.positionEncoding`.

use tower_lsp_server::ls_types::{ClientCapabilities, PositionEncodingKind};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PositionEncoding {
    Utf8,
    #[default]
    Utf16,
    Utf32,
}

impl PositionEncoding {
    pub fn kind(self) -> PositionEncodingKind {
        match self {
            Self::Utf8 => PositionEncodingKind::UTF8,
            Self::Utf16 => PositionEncodingKind::UTF16,
            Self::Utf32 => PositionEncodingKind::UTF32,
        }
    }

    fn from_kind(kind: &PositionEncodingKind) -> Option<Self> {
        match kind.as_str() {
            "utf-8" => Some(Self::Utf8),
            "utf-16" => Some(Self::Utf16),
            "utf-32" => Some(Self::Utf32),
            _ => None,
        }
    }

    /// The client's first supported choice (its list is in order of preference); UTF-16, the
    /// mandatory encoding, when it offers none we know or sends no list.
    pub fn negotiate(caps: &ClientCapabilities) -> Self {
        caps.general
            .as_ref()
            .and_then(|g| g.position_encodings.as_ref())
            .and_then(|list| list.iter().find_map(Self::from_kind))
            .unwrap_or_default()
    }

    /// How many whole characters of `text` its first `units` code units hold (a length the
    /// client counts in this encoding, such as `acceptedLength`); a unit count that ends
    /// inside a character stops before it, one past the end is the whole text.
    pub fn chars_within(self, text: &str, units: usize) -> usize {
        let width = |c: char| match self {
            Self::Utf8 => c.len_utf8(),
            Self::Utf16 => c.len_utf16(),
            Self::Utf32 => 1,
        };
        let mut used = 0;
        text.chars()
            .take_while(|&c| {
                used += width(c);
                used <= units
            })
            .count()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Utf8 => "utf-8",
            Self::Utf16 => "utf-16",
            Self::Utf32 => "utf-32",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn caps(v: serde_json::Value) -> ClientCapabilities {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn negotiation_follows_the_clients_preference() {
        let cases = [
            (json!({}), PositionEncoding::Utf16),
            (json!({"general": {}}), PositionEncoding::Utf16),
            (
                json!({"general": {"positionEncodings": ["utf-8", "utf-16"]}}),
                PositionEncoding::Utf8,
            ),
            (
                json!({"general": {"positionEncodings": ["utf-32"]}}),
                PositionEncoding::Utf32,
            ),
            (
                json!({"general": {"positionEncodings": ["latin-1", "utf-32", "utf-8"]}}),
                PositionEncoding::Utf32,
            ),
            (
                json!({"general": {"positionEncodings": ["latin-1"]}}),
                PositionEncoding::Utf16,
            ),
            (
                json!({"general": {"positionEncodings": []}}),
                PositionEncoding::Utf16,
            ),
        ];
        for (c, want) in cases {
            assert_eq!(PositionEncoding::negotiate(&caps(c.clone())), want, "{c}");
        }
    }

    #[test]
    fn lengths_in_units_become_characters() {
        use PositionEncoding::{Utf16, Utf32, Utf8};
        // '<' 1 unit, '😀' 2 UTF-16 units (4 bytes), 'é' 1 unit (2 bytes).
        let t = "<😀éb";
        let cases = [
            (Utf16, 0, 0),
            (Utf16, 1, 1),
            (Utf16, 2, 1), // inside the emoji: stops before it
            (Utf16, 3, 2),
            (Utf16, 5, 4),
            (Utf16, 99, 4),
            (Utf8, 5, 2),
            (Utf8, 6, 2),
            (Utf8, 7, 3),
            (Utf32, 3, 3),
            (Utf32, 9, 4),
        ];
        for (enc, units, want) in cases {
            assert_eq!(enc.chars_within(t, units), want, "{enc:?} {units}");
        }
    }
}
