//! Special tokens written out as text: the model is done once it writes one.
//!
//! Knows the special tokens' strings only; nothing of the tokenizer or the engine.

use crate::prompt::Special;

/// The strings that end a completion when they appear in the output: the prompt's special
/// tokens and `<fim_pad>`, and the other families' FIM, file-separator and end tokens that
/// no code would contain (`<s>`, `</s>` and `[PREFIX]` could: HTML, Markdown).
pub const STOP_STRINGS: [&str; 17] = [
    Special::FimPrefix.as_str(),
    Special::FimSuffix.as_str(),
    Special::FimMiddle.as_str(),
    Special::EndOfText.as_str(),
    "<fim_pad>",
    "<file_sep>",
    "<repo_name>",
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|fim_pad|>",
    "<|file_sep|>",
    "<|repo_name|>",
    "<｜fim▁begin｜>",
    "<｜fim▁hole｜>",
    "<｜fim▁end｜>",
    "<｜end▁of▁sentence｜>",
];

/// Step 2: the text before the first special token string, and whether one was found.
pub fn cut_at_special_tokens(text: &str) -> (&str, bool) {
    match STOP_STRINGS.iter().filter_map(|s| text.find(s)).min() {
        Some(at) => (&text[..at], true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_the_first() {
        assert_eq!(
            cut_at_special_tokens("a<fim_middle>b<|endoftext|>"),
            ("a", true)
        );
        assert_eq!(cut_at_special_tokens("a<fim_mid"), ("a<fim_mid", false));
        assert_eq!(cut_at_special_tokens("x\n<|file_sep|>b.py"), ("x\n", true));
        assert_eq!(cut_at_special_tokens("<s>bold</s>"), ("<s>bold</s>", false));
    }
}
