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
}
