//! Line endings: the model writes `\n`; the document may be CRLF.
//!
//! Owns only the conversion; knows nothing of LSP, the engine or editors.

/// Step 1: `\r\n` and lone `\r` become `\n`.
pub fn normalize_line_endings(raw: &str) -> String {
    if !raw.contains('\r') {
        return raw.to_string();
    }
    raw.replace("\r\n", "\n").replace('\r', "\n")
}

/// Step 9: `\n` becomes `\r\n` when the document is CRLF.
pub fn restore_line_endings(text: &str, crlf: bool) -> String {
    if crlf {
        text.replace('\n', "\r\n")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(normalize_line_endings("a\r\nb\rc\n"), "a\nb\nc\n");
        assert_eq!(restore_line_endings("a\nb", true), "a\r\nb");
        assert_eq!(restore_line_endings("a\nb", false), "a\nb");
    }
}
