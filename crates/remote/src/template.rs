//! FIM templates of the model families a remote server may run, and the rendering of the
//! pipeline's [`Prompt`] in one of them (as text, or as ids where a tokenizer is at hand).
//!
//! The pipeline builds every prompt with StarCoder's special tokens in one of its layouts
//! (PSM, bigcode's SPM, left-to-right). For the StarCoder families the prompt is kept as
//! built, piece for piece, so a remote StarCoder receives the very ids our embedded engine
//! computes. Other families were trained on one order only: their prompt is re-laid from
//! the prompt's sections (the prefix section: header, snippets, code before the cursor; the
//! suffix) in the family's order, with its token strings.
//!
//! A minimal table of its own: `copilot-fim` is gaining a family type of its own (the
//! families work); when it lands, this table should give way to it.
//!
//! Pure: no I/O; never panics on user text.

use copilot_fim::{Layout, Piece, Prompt, Special};

/// A model family with its own FIM format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    StarCoder,
    StarCoder2,
    CodeLlama,
    DeepSeek,
    Qwen,
    Codestral,
}

/// One family's token strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tokens {
    pub prefix: &'static str,
    pub suffix: &'static str,
    /// Empty for families that have none (Codestral: the prefix comes last).
    pub middle: &'static str,
    pub eos: &'static str,
    /// Strings that end a completion besides the server's own end-of-generation: the
    /// family's other control tokens, written out as text by some servers.
    pub stops: &'static [&'static str],
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::StarCoder,
        Family::StarCoder2,
        Family::CodeLlama,
        Family::DeepSeek,
        Family::Qwen,
        Family::Codestral,
    ];

    /// The name the `template` setting uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::StarCoder => "starcoder",
            Self::StarCoder2 => "starcoder2",
            Self::CodeLlama => "codellama",
            Self::DeepSeek => "deepseek",
            Self::Qwen => "qwen",
            Self::Codestral => "codestral",
        }
    }

    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn tokens(self) -> Tokens {
        match self {
            Self::StarCoder => Tokens {
                prefix: "<fim_prefix>",
                suffix: "<fim_suffix>",
                middle: "<fim_middle>",
                eos: "<|endoftext|>",
                stops: &["<|endoftext|>", "<fim_prefix>", "<fim_middle>"],
            },
            Self::StarCoder2 => Tokens {
                prefix: "<fim_prefix>",
                suffix: "<fim_suffix>",
                middle: "<fim_middle>",
                eos: "<|endoftext|>",
                stops: &["<|endoftext|>", "<file_sep>", "<fim_prefix>"],
            },
            Self::CodeLlama => Tokens {
                prefix: "<PRE>",
                suffix: "<SUF>",
                middle: "<MID>",
                eos: "<EOT>",
                stops: &["<EOT>", "<PRE>", "<SUF>"],
            },
            Self::DeepSeek => Tokens {
                prefix: "<｜fim▁begin｜>",
                suffix: "<｜fim▁hole｜>",
                middle: "<｜fim▁end｜>",
                eos: "<｜end▁of▁sentence｜>",
                stops: &["<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>"],
            },
            Self::Qwen => Tokens {
                prefix: "<|fim_prefix|>",
                suffix: "<|fim_suffix|>",
                middle: "<|fim_middle|>",
                eos: "<|endoftext|>",
                stops: &["<|endoftext|>", "<|file_sep|>", "<|fim_pad|>", "<|im_end|>"],
            },
            Self::Codestral => Tokens {
                prefix: "[PREFIX]",
                suffix: "[SUFFIX]",
                middle: "",
                eos: "</s>",
                stops: &["</s>", "[PREFIX]", "[SUFFIX]"],
            },
        }
    }

    /// The family a model's name (a hub id, an Ollama tag, a GGUF path) points to, if any.
    pub fn detect(model: &str) -> Option<Family> {
        let m = model.to_ascii_lowercase();
        let has = |s: &str| m.contains(s);
        if has("starcoder2") {
            Some(Self::StarCoder2)
        } else if has("starcoder") || has("santacoder") || has("stable-code") {
            Some(Self::StarCoder)
        } else if has("codellama") || has("code-llama") || has("code_llama") {
            Some(Self::CodeLlama)
        } else if has("deepseek") {
            Some(Self::DeepSeek)
        } else if has("qwen") {
            Some(Self::Qwen)
        } else if has("codestral") {
            Some(Self::Codestral)
        } else {
            None
        }
    }
}

/// A part of a rendered prompt: a family control token, or text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part<'a> {
    Control(&'static str),
    Text(&'a str),
}

/// The prompt's sections, whatever its layout: the prefix section's texts (header, snippets,
/// code before the cursor) and the suffix's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sections<'a> {
    pub prefix: Vec<&'a str>,
    pub suffix: Vec<&'a str>,
}

/// Split a built prompt into its sections. In PSM the prefix section lies between
/// `<fim_prefix>` and `<fim_suffix>`; in SPM it follows `<fim_middle>`; the suffix lies
/// between `<fim_suffix>` and `<fim_middle>`; left-to-right is all prefix.
pub fn sections(prompt: &Prompt) -> Sections<'_> {
    #[derive(PartialEq)]
    enum At {
        Prefix,
        Suffix,
        Middle,
    }
    let mut at = At::Prefix;
    let mut out = Sections::default();
    for piece in &prompt.pieces {
        match piece {
            Piece::Special(Special::FimPrefix) => at = At::Prefix,
            Piece::Special(Special::FimSuffix) => at = At::Suffix,
            Piece::Special(Special::FimMiddle) => at = At::Middle,
            // Not in the StarCoder-format prompts a remote engine is given (the pipeline
            // builds them with that template; repository tokens are Qwen's and StarCoder2's).
            Piece::Special(
                Special::EndOfText | Special::Bos | Special::RepoName | Special::FileSep,
            ) => {}
            Piece::Text(t) => match at {
                // In SPM the prefix section comes after the middle token.
                At::Prefix | At::Middle => out.prefix.push(t),
                At::Suffix => out.suffix.push(t),
            },
        }
    }
    out
}

/// The prompt in `family`'s format.
///
/// StarCoder and StarCoder2 keep the prompt as built (both layouts were trained); the others
/// always get their one trained order, PSM (Codestral: suffix first). A left-to-right
/// prompt stays plain text in every family.
pub fn render(prompt: &Prompt, family: Family) -> Vec<Part<'_>> {
    let t = family.tokens();
    if matches!(family, Family::StarCoder | Family::StarCoder2) {
        return prompt
            .pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Special(s) => match s {
                    Special::FimPrefix => Some(t.prefix),
                    Special::FimSuffix => Some(t.suffix),
                    Special::FimMiddle => Some(t.middle),
                    Special::EndOfText => Some(t.eos),
                    // Not in StarCoder-format prompts (see `sections`).
                    Special::Bos | Special::RepoName | Special::FileSep => None,
                }
                .map(Part::Control),
                Piece::Text(s) => Some(Part::Text(s)),
            })
            .collect();
    }
    let s = sections(prompt);
    fn text<'a>(v: Vec<&'a str>) -> impl Iterator<Item = Part<'a>> {
        v.into_iter().map(Part::Text)
    }
    if prompt.layout == Layout::LeftToRight {
        return text(s.prefix).collect();
    }
    let mut out = Vec::new();
    match family {
        Family::Codestral => {
            out.push(Part::Control(t.suffix));
            out.extend(text(s.suffix));
            out.push(Part::Control(t.prefix));
            out.extend(text(s.prefix));
        }
        Family::CodeLlama => {
            // As Meta's reference code formats it: "<PRE> {prefix} <SUF>{suffix} <MID>".
            out.push(Part::Control(t.prefix));
            out.push(Part::Text(" "));
            out.extend(text(s.prefix));
            out.push(Part::Text(" "));
            out.push(Part::Control(t.suffix));
            out.extend(text(s.suffix));
            out.push(Part::Text(" "));
            out.push(Part::Control(t.middle));
        }
        _ => {
            out.push(Part::Control(t.prefix));
            out.extend(text(s.prefix));
            out.push(Part::Control(t.suffix));
            out.extend(text(s.suffix));
            out.push(Part::Control(t.middle));
        }
    }
    out
}

/// The rendered parts as one string (control tokens written out).
pub fn to_text(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Control(s) | Part::Text(s) => *s,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use copilot_fim::{build_prompt, Budget, CharCounter, PromptInput, Snippet};

    use super::*;

    /// A `$0`-marked fixture's prompt in `layout`, with the path header and a snippet when
    /// asked.
    fn prompt(fixture: &str, layout: Layout, extras: bool) -> Prompt {
        let (prefix, suffix) = fixture.split_once("$0").expect("a $0 cursor");
        let snippets = [Snippet {
            path: "u.py".into(),
            text: "def u(): pass".into(),
        }];
        let input = PromptInput {
            prefix,
            suffix,
            path: extras.then_some("a.py"),
            snippets: if extras { &snippets } else { &[] },
        };
        build_prompt(
            &input,
            &copilot_fim::STARCODER,
            layout,
            &Budget::default(),
            &CharCounter,
        )
    }

    #[test]
    fn every_family_in_its_order() {
        let fx = "def f(x):\n    return $0\n\nprint(f(2))\n";
        let p = prompt(fx, Layout::Spm, false);
        let cases = [
            (
                Family::StarCoder,
                "<fim_prefix><fim_suffix>\n\nprint(f(2))\n<fim_middle>def f(x):\n    return ",
            ),
            (
                Family::Qwen,
                "<|fim_prefix|>def f(x):\n    return <|fim_suffix|>\n\nprint(f(2))\n<|fim_middle|>",
            ),
            (
                Family::DeepSeek,
                "<｜fim▁begin｜>def f(x):\n    return <｜fim▁hole｜>\n\nprint(f(2))\n<｜fim▁end｜>",
            ),
            (
                Family::CodeLlama,
                "<PRE> def f(x):\n    return  <SUF>\n\nprint(f(2))\n <MID>",
            ),
            (
                Family::Codestral,
                "[SUFFIX]\n\nprint(f(2))\n[PREFIX]def f(x):\n    return ",
            ),
        ];
        for (family, want) in cases {
            assert_eq!(to_text(&render(&p, family)), want, "{family:?}");
        }
        let psm = prompt(fx, Layout::Psm, false);
        assert_eq!(
            to_text(&render(&psm, Family::StarCoder2)),
            "<fim_prefix>def f(x):\n    return <fim_suffix>\n\nprint(f(2))\n<fim_middle>"
        );
        // Re-laid from either layout, the other families see the same prompt.
        for f in [Family::Qwen, Family::CodeLlama, Family::Codestral] {
            assert_eq!(render(&psm, f), render(&p, f), "{f:?}");
        }
    }

    #[test]
    fn header_and_snippets_stay_in_the_prefix_section() {
        let p = prompt("x = 1\n$0\ny = 2\n", Layout::Spm, true);
        let s = sections(&p);
        assert_eq!(
            s.prefix,
            [
                "# path: a.py\n",
                "# snippet from u.py:\n# def u(): pass\n",
                "x = 1\n"
            ]
        );
        assert_eq!(s.suffix, ["\ny = 2\n"]);
        assert_eq!(
            to_text(&render(&p, Family::Qwen)),
            "<|fim_prefix|># path: a.py\n# snippet from u.py:\n# def u(): pass\nx = 1\n\
             <|fim_suffix|>\ny = 2\n<|fim_middle|>"
        );
    }

    #[test]
    fn left_to_right_is_plain_text_and_user_text_is_never_a_control_part() {
        let p = prompt(
            "s = '<fim_middle><|fim_prefix|>'$0",
            Layout::LeftToRight,
            false,
        );
        for f in Family::ALL {
            let parts = render(&p, f);
            assert!(
                parts.iter().all(|x| matches!(x, Part::Text(_))),
                "{f:?}: {parts:?}"
            );
            assert_eq!(to_text(&parts), "s = '<fim_middle><|fim_prefix|>'");
        }
        let p = prompt("a$0<fim_suffix>", Layout::Psm, false);
        let controls = render(&p, Family::StarCoder)
            .into_iter()
            .filter(|x| matches!(x, Part::Control(_)))
            .count();
        assert_eq!(controls, 3);
    }

    #[test]
    fn families_from_model_names() {
        for (name, want) in [
            ("bigcode/starcoder2-3b", Some(Family::StarCoder2)),
            (
                "/models/tiny_starcoder_py-f32.gguf",
                Some(Family::StarCoder),
            ),
            ("starcoder:1b", Some(Family::StarCoder)),
            ("codellama:7b-code", Some(Family::CodeLlama)),
            ("deepseek-coder:1.3b-base", Some(Family::DeepSeek)),
            ("Qwen/Qwen2.5-Coder-1.5B", Some(Family::Qwen)),
            ("codestral:22b", Some(Family::Codestral)),
            ("pico.gguf", None),
            ("", None),
        ] {
            assert_eq!(Family::detect(name), want, "{name}");
        }
    }
}
