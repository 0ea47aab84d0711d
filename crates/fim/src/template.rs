//! FIM templates per model family: the strings each family was trained with, the layouts it
//! was trained in, the tokens that end its middle, and its repository-level tokens. Pure
//! strings: the engine finds each string's id in the model's own vocabulary.
//!
//! | family | PSM | SPM | ends the middle | repository tokens |
//! |---|---|---|---|---|
//! | StarCoder | `<fim_prefix>P<fim_suffix>S<fim_middle>` | `<fim_prefix><fim_suffix>S<fim_middle>P` | `<|endoftext|>` | — |
//! | StarCoder2 | same | same | `<|endoftext|>`, `<file_sep>` | `<repo_name>`, `<file_sep>` |
//! | Qwen2.5-Coder | `<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>` | not trained | `<|endoftext|>`, `<|fim_pad|>`, `<|file_sep|>` | `<|repo_name|>`, `<|file_sep|>` |
//! | DeepSeek-Coder | `<bos><｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>` | not trained | `<｜end▁of▁sentence｜>` | — |
//! | CodeLlama | `<s>▁<PRE> P▁<SUF>S▁<MID>` | `<s>▁<PRE>▁<SUF>S▁<MID> P` | `▁<EOT>` | — |
//! | Codestral | — | `<s>[SUFFIX]S[PREFIX]P` | `</s>` | — |
//!
//! Sources: bigcode's Megatron-LM FIM (`permute`, PSM and SPM at 0.5 each, which StarCoder2
//! kept); the Qwen2.5-Coder report (PSM, and `<|repo_name|>name` then `<|file_sep|>path\n`
//! before each file for repository context); DeepSeek-Coder's README (PSM, BOS first);
//! Meta's `infilling_prompt_tokens` for CodeLlama (both orders; the prefix is encoded with
//! SentencePiece's leading space, the suffix without); Mistral's FIM API for Codestral
//! (suffix first, no middle token; for remote engines, as no Mistral runs in process).

use crate::prompt::{Layout, LayoutChoice, Special};

/// How a family lays out suffix-first prompts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpmOrder {
    /// `<prefix><suffix>S<middle>P`: bigcode's "variant 2" of the FIM paper, and CodeLlama's.
    PrefixTokenFirst,
    /// `<suffix>S<prefix>P`, the middle written after P (Codestral).
    SuffixTokenFirst,
}

/// Repository-level tokens: context files are rendered `<file_sep>path\n` then their text,
/// before the current file's `<file_sep>path\n`, instead of as comments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RepoTokens {
    pub repo_name: &'static str,
    pub file_sep: &'static str,
}

/// One family's FIM format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Template {
    /// The family's name, for logs and settings (`starcoder`, `qwen2.5-coder`...).
    pub name: &'static str,
    pub prefix: &'static str,
    pub suffix: &'static str,
    /// None for families whose middle follows the prefix directly (Codestral).
    pub middle: Option<&'static str>,
    pub end_of_text: &'static str,
    /// A begin-of-text token every prompt starts with, for families whose tokenizer adds one.
    pub bos: Option<&'static str>,
    /// Tokens that end a middle (the first is the one training appends after it) and file
    /// separators: generation stops at any of them.
    pub stops: &'static [&'static str],
    pub repo: Option<RepoTokens>,
    /// Trained with prefix-suffix-middle.
    pub psm: bool,
    /// Trained with a suffix-first order, and which.
    pub spm: Option<SpmOrder>,
    /// The layout `auto` picks when code follows the cursor (SPM where trained: typing at
    /// the cursor then only appends to the prompt, so the KV cache is reused).
    pub default_layout: Layout,
    /// The prefix text starts with a space the template adds (SentencePiece's dummy prefix,
    /// which CodeLlama's prefix is encoded with and its suffix is not).
    pub prefix_space: bool,
}

/// StarCoder 1 and tiny_starcoder_py (`gpt_bigcode`).
pub const STARCODER: Template = Template {
    name: "starcoder",
    prefix: "<fim_prefix>",
    suffix: "<fim_suffix>",
    middle: Some("<fim_middle>"),
    end_of_text: "<|endoftext|>",
    bos: None,
    stops: &["<|endoftext|>", "<fim_pad>"],
    repo: None,
    psm: true,
    spm: Some(SpmOrder::PrefixTokenFirst),
    default_layout: Layout::Spm,
    prefix_space: false,
};

/// StarCoder2: StarCoder's FIM strings, with repository tokens.
pub const STARCODER2: Template = Template {
    name: "starcoder2",
    stops: &["<|endoftext|>", "<file_sep>", "<fim_pad>", "<repo_name>"],
    repo: Some(RepoTokens {
        repo_name: "<repo_name>",
        file_sep: "<file_sep>",
    }),
    ..STARCODER
};

/// Qwen2.5-Coder: PSM only (what its report describes and llama.cpp's `/infill` sends).
pub const QWEN2_5_CODER: Template = Template {
    name: "qwen2.5-coder",
    prefix: "<|fim_prefix|>",
    suffix: "<|fim_suffix|>",
    middle: Some("<|fim_middle|>"),
    end_of_text: "<|endoftext|>",
    bos: None,
    stops: &[
        "<|endoftext|>",
        "<|fim_pad|>",
        "<|file_sep|>",
        "<|repo_name|>",
        "<|im_end|>",
    ],
    repo: Some(RepoTokens {
        repo_name: "<|repo_name|>",
        file_sep: "<|file_sep|>",
    }),
    psm: true,
    spm: None,
    default_layout: Layout::Psm,
    prefix_space: false,
};

/// DeepSeek-Coder: PSM only, BOS first.
pub const DEEPSEEK_CODER: Template = Template {
    name: "deepseek-coder",
    prefix: "<｜fim▁begin｜>",
    suffix: "<｜fim▁hole｜>",
    middle: Some("<｜fim▁end｜>"),
    end_of_text: "<｜end▁of▁sentence｜>",
    bos: Some("<｜begin▁of▁sentence｜>"),
    stops: &["<｜end▁of▁sentence｜>"],
    repo: None,
    psm: true,
    spm: None,
    default_layout: Layout::Psm,
    prefix_space: false,
};

/// CodeLlama: both orders, BOS first, `▁<EOT>` after the middle.
pub const CODELLAMA: Template = Template {
    name: "codellama",
    prefix: "▁<PRE>",
    suffix: "▁<SUF>",
    middle: Some("▁<MID>"),
    end_of_text: "</s>",
    bos: Some("<s>"),
    stops: &["▁<EOT>", "</s>"],
    repo: None,
    psm: true,
    spm: Some(SpmOrder::PrefixTokenFirst),
    default_layout: Layout::Spm,
    prefix_space: true,
};

/// Codestral (remote engines): suffix first, the middle right after the prefix.
pub const CODESTRAL: Template = Template {
    name: "codestral",
    prefix: "[PREFIX]",
    suffix: "[SUFFIX]",
    middle: None,
    end_of_text: "</s>",
    bos: Some("<s>"),
    stops: &["</s>"],
    repo: None,
    psm: false,
    spm: Some(SpmOrder::SuffixTokenFirst),
    default_layout: Layout::Spm,
    prefix_space: false,
};

/// Every template, in the order [`Template::detect`] tries them.
pub const TEMPLATES: [&Template; 6] = [
    &QWEN2_5_CODER,
    &DEEPSEEK_CODER,
    &CODELLAMA,
    &STARCODER2,
    &STARCODER,
    &CODESTRAL,
];

impl Template {
    /// The template whose FIM tokens the vocabulary has (`has(string)`: is it a token?),
    /// StarCoder2 told from StarCoder by its `<file_sep>`. None: no FIM tokens at all.
    pub fn detect(has: impl Fn(&str) -> bool) -> Option<&'static Template> {
        TEMPLATES.into_iter().find(|t| {
            let fim = has(t.prefix) && has(t.suffix) && t.middle.is_none_or(&has);
            let repo = t.repo.is_none_or(|r| has(r.file_sep));
            fim && repo
        })
    }

    /// A template by name (`starcoder`, `qwen2.5-coder`...).
    pub fn by_name(name: &str) -> Option<&'static Template> {
        TEMPLATES.into_iter().find(|t| t.name == name)
    }

    /// The token's string in this family's vocabulary; None where the family has none.
    pub fn string(&self, s: Special) -> Option<&'static str> {
        match s {
            Special::FimPrefix => Some(self.prefix),
            Special::FimSuffix => Some(self.suffix),
            Special::FimMiddle => self.middle,
            Special::EndOfText => Some(self.end_of_text),
            Special::Bos => self.bos,
            Special::RepoName => self.repo.map(|r| r.repo_name),
            Special::FileSep => self.repo.map(|r| r.file_sep),
        }
    }

    /// The token training appends after a middle.
    pub fn end_of_middle(&self) -> &'static str {
        self.stops.first().copied().unwrap_or(self.end_of_text)
    }

    /// Whether the family was trained with `layout` (left-to-right always).
    pub fn supports(&self, layout: Layout) -> bool {
        match layout {
            Layout::Psm => self.psm,
            Layout::Spm => self.spm.is_some(),
            Layout::LeftToRight => true,
        }
    }

    /// The layout for a cursor followed by `suffix`: left-to-right when asked or when only
    /// blanks follow (`auto`), the family's default for `auto`, and a layout the family was
    /// not trained with replaced by the one it was (Qwen2.5-Coder asked for SPM gets PSM).
    pub fn choose_layout(&self, choice: LayoutChoice, suffix: &str) -> Layout {
        let want = match choice {
            LayoutChoice::Psm => Layout::Psm,
            LayoutChoice::Spm => Layout::Spm,
            LayoutChoice::LeftToRight => Layout::LeftToRight,
            LayoutChoice::Auto if suffix.trim().is_empty() => Layout::LeftToRight,
            LayoutChoice::Auto => self.default_layout,
        };
        self.trained(want)
    }

    /// `layout` if the family was trained with it, else the FIM layout it was trained with.
    pub fn trained(&self, layout: Layout) -> Layout {
        match layout {
            l if self.supports(l) => l,
            Layout::Psm => Layout::Spm,
            _ => Layout::Psm,
        }
    }

    /// Special tokens a prompt in `layout` starts and frames itself with (context files'
    /// separators not included).
    pub fn special_tokens(&self, layout: Layout) -> usize {
        let bos = usize::from(self.bos.is_some());
        bos + match layout {
            Layout::LeftToRight => 0,
            _ => 2 + usize::from(self.middle.is_some()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_by_the_vocabulary_strings() {
        let vocab = |words: &'static [&'static str]| move |s: &str| words.contains(&s);
        let t = |words| Template::detect(vocab(words)).map(|t| t.name);
        assert_eq!(
            t(&[
                "<|endoftext|>",
                "<fim_prefix>",
                "<fim_middle>",
                "<fim_suffix>"
            ]),
            Some("starcoder")
        );
        assert_eq!(
            t(&["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<file_sep>"]),
            Some("starcoder2")
        );
        assert_eq!(
            t(&[
                "<|fim_prefix|>",
                "<|fim_middle|>",
                "<|fim_suffix|>",
                "<|file_sep|>"
            ]),
            Some("qwen2.5-coder")
        );
        assert_eq!(
            t(&["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"]),
            Some("deepseek-coder")
        );
        assert_eq!(
            t(&["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]),
            Some("codellama")
        );
        assert_eq!(t(&["[PREFIX]", "[SUFFIX]"]), Some("codestral"));
        assert_eq!(t(&["<|endoftext|>", "<s>"]), None);
        for t in TEMPLATES {
            assert_eq!(Template::by_name(t.name), Some(t));
            assert!(t.supports(t.default_layout), "{}", t.name);
        }
    }

    #[test]
    fn untrained_layouts_fall_back_to_the_trained_one() {
        use LayoutChoice as C;
        let q = &QWEN2_5_CODER;
        assert_eq!(q.choose_layout(C::Auto, "\nx"), Layout::Psm);
        assert_eq!(q.choose_layout(C::Spm, "\nx"), Layout::Psm);
        assert_eq!(q.choose_layout(C::Auto, " \n"), Layout::LeftToRight);
        assert_eq!(STARCODER.choose_layout(C::Auto, "\nx"), Layout::Spm);
        assert_eq!(STARCODER2.choose_layout(C::Psm, "\nx"), Layout::Psm);
        assert_eq!(CODESTRAL.choose_layout(C::Psm, "\nx"), Layout::Spm);
        assert_eq!(DEEPSEEK_CODER.choose_layout(C::Spm, "x"), Layout::Psm);
        assert_eq!(CODELLAMA.choose_layout(C::Auto, "x"), Layout::Spm);
        assert_eq!(DEEPSEEK_CODER.special_tokens(Layout::Psm), 4);
        assert_eq!(CODESTRAL.special_tokens(Layout::Spm), 3);
        assert_eq!(STARCODER.special_tokens(Layout::LeftToRight), 0);
        assert_eq!(CODELLAMA.end_of_middle(), "▁<EOT>");
    }
}
