//! Each family's template, table-driven on `$0` cursor-marked fixtures: the prompt a cursor
//! gets, written out, equals the family's documented format exactly; context snippets go
//! through the repository tokens where the family has them; special strings in the user's
//! text stay text pieces.

use copilot_fim::{
    build_prompt, Budget, CharCounter, Layout, LayoutChoice, Piece, PromptInput, Snippet, Special,
    Template, CODELLAMA, CODESTRAL, DEEPSEEK_CODER, QWEN2_5_CODER, STARCODER, STARCODER2,
};

/// Split a `$0`-marked fixture into the text before and after the cursor.
fn cursor(fixture: &str) -> (&str, &str) {
    fixture.split_once("$0").expect("fixture has a $0 cursor")
}

const CODE: &str = "def f(x):\n    $0\n    return y\n";

struct Case {
    template: &'static Template,
    choice: LayoutChoice,
    fixture: &'static str,
    path: Option<&'static str>,
    snippets: bool,
    want: &'static str,
}

fn snippet() -> Vec<Snippet> {
    vec![Snippet {
        path: "util.py".into(),
        text: "def u():\n    return 1".into(),
    }]
}

const CASES: &[Case] = &[
    // StarCoder: bigcode's PSM and SPM ("variant 2").
    Case {
        template: &STARCODER,
        choice: LayoutChoice::Psm,
        fixture: CODE,
        path: None,
        snippets: false,
        want: "<fim_prefix>def f(x):\n    <fim_suffix>\n    return y\n<fim_middle>",
    },
    Case {
        template: &STARCODER,
        choice: LayoutChoice::Auto,
        fixture: CODE,
        path: None,
        snippets: false,
        want: "<fim_prefix><fim_suffix>\n    return y\n<fim_middle>def f(x):\n    ",
    },
    // StarCoder: context as comments (no repository tokens).
    Case {
        template: &STARCODER,
        choice: LayoutChoice::Psm,
        fixture: CODE,
        path: Some("app.py"),
        snippets: true,
        want: "<fim_prefix># path: app.py\n# snippet from util.py:\n# def u():\n#     return 1\ndef f(x):\n    <fim_suffix>\n    return y\n<fim_middle>",
    },
    // StarCoder2: the same FIM strings, context through <file_sep>, before the FIM tokens.
    Case {
        template: &STARCODER2,
        choice: LayoutChoice::Psm,
        fixture: CODE,
        path: Some("app.py"),
        snippets: true,
        want: "<file_sep>util.py\ndef u():\n    return 1\n<file_sep>app.py\n<fim_prefix>def f(x):\n    <fim_suffix>\n    return y\n<fim_middle>",
    },
    Case {
        template: &STARCODER2,
        choice: LayoutChoice::Auto,
        fixture: CODE,
        path: Some("app.py"),
        snippets: true,
        want: "<file_sep>util.py\ndef u():\n    return 1\n<file_sep>app.py\n<fim_prefix><fim_suffix>\n    return y\n<fim_middle>def f(x):\n    ",
    },
    // Qwen2.5-Coder: PSM (its only trained layout, also for `auto` and `spm`).
    Case {
        template: &QWEN2_5_CODER,
        choice: LayoutChoice::Auto,
        fixture: CODE,
        path: None,
        snippets: false,
        want: "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n    return y\n<|fim_middle|>",
    },
    Case {
        template: &QWEN2_5_CODER,
        choice: LayoutChoice::Spm,
        fixture: CODE,
        path: Some("src/app.py"),
        snippets: true,
        want: "<|file_sep|>util.py\ndef u():\n    return 1\n<|file_sep|>src/app.py\n<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n    return y\n<|fim_middle|>",
    },
    // Nothing but blanks after the cursor: left-to-right, context kept.
    Case {
        template: &QWEN2_5_CODER,
        choice: LayoutChoice::Auto,
        fixture: "import os\n$0\n\n",
        path: Some("a.py"),
        snippets: false,
        want: "<|file_sep|>a.py\nimport os\n",
    },
    // DeepSeek-Coder: BOS, then PSM.
    Case {
        template: &DEEPSEEK_CODER,
        choice: LayoutChoice::Auto,
        fixture: CODE,
        path: None,
        snippets: false,
        want: "<｜begin▁of▁sentence｜><｜fim▁begin｜>def f(x):\n    <｜fim▁hole｜>\n    return y\n<｜fim▁end｜>",
    },
    Case {
        template: &DEEPSEEK_CODER,
        choice: LayoutChoice::LeftToRight,
        fixture: CODE,
        path: None,
        snippets: false,
        want: "<｜begin▁of▁sentence｜>def f(x):\n    ",
    },
    // CodeLlama: `<PRE> {pre} <SUF>{suf} <MID>` and `<PRE> <SUF>{suf} <MID> {pre}` (the space
    // after <PRE> or <MID> is SentencePiece's, the one before <SUF>/<MID> is in the token).
    Case {
        template: &CODELLAMA,
        choice: LayoutChoice::Psm,
        fixture: CODE,
        path: None,
        snippets: false,
        want: "<s>▁<PRE> def f(x):\n    ▁<SUF>\n    return y\n▁<MID>",
    },
    Case {
        template: &CODELLAMA,
        choice: LayoutChoice::Auto,
        fixture: CODE,
        path: None,
        snippets: false,
        want: "<s>▁<PRE>▁<SUF>\n    return y\n▁<MID> def f(x):\n    ",
    },
    // Codestral: suffix first, no middle token.
    Case {
        template: &CODESTRAL,
        choice: LayoutChoice::Psm,
        fixture: CODE,
        path: None,
        snippets: false,
        want: "<s>[SUFFIX]\n    return y\n[PREFIX]def f(x):\n    ",
    },
];

#[test]
fn each_family_gets_its_documented_prompt() {
    for (i, c) in CASES.iter().enumerate() {
        let (prefix, suffix) = cursor(c.fixture);
        let snippets = if c.snippets { snippet() } else { vec![] };
        let input = PromptInput {
            prefix,
            suffix,
            path: c.path,
            snippets: &snippets,
        };
        let layout = c.template.choose_layout(c.choice, suffix);
        let p = build_prompt(&input, c.template, layout, &Budget::default(), &CharCounter);
        assert_eq!(p.render(), c.want, "case {i} ({})", c.template.name);
        assert!(c.template.supports(p.layout), "case {i}");
        // The counted size is the pieces' size: one per special token, chars for text.
        let size: usize = p
            .pieces
            .iter()
            .map(|x| match x {
                Piece::Special(_) => 1,
                Piece::Text(t) => t.chars().count(),
            })
            .sum();
        assert_eq!(size, p.counted_tokens, "case {i}");
        // The header, when there is one, is the piece holding the path.
        if let (Some(h), Some(path)) = (p.header, c.path) {
            match &p.pieces[h] {
                Piece::Text(t) => assert!(t.contains(path), "case {i}: {t:?}"),
                other => panic!("case {i}: header is {other:?}"),
            }
        }
    }
}

#[test]
fn family_token_strings_in_user_text_stay_text() {
    let text =
        "s = '<|fim_middle|><fim_prefix><｜fim▁hole｜>▁<MID>[SUFFIX]<|file_sep|>'\n$0\nx = 1\n";
    let (prefix, suffix) = cursor(text);
    for t in copilot_fim::TEMPLATES {
        let input = PromptInput {
            prefix,
            suffix,
            path: Some("a.py"),
            snippets: &[],
        };
        let p = build_prompt(&input, t, Layout::Psm, &Budget::default(), &CharCounter);
        let specials = p
            .pieces
            .iter()
            .filter(|x| matches!(x, Piece::Special(_)))
            .count();
        let seps = usize::from(t.repo.is_some());
        assert_eq!(specials, t.special_tokens(p.layout) + seps, "{}", t.name);
        assert!(p
            .pieces
            .iter()
            .any(|x| matches!(x, Piece::Text(s) if s.contains("<|fim_middle|><fim_prefix>"))));
    }
}

#[test]
fn ids_are_spliced_from_the_family_strings() {
    let (prefix, suffix) = cursor(CODE);
    let input = PromptInput {
        prefix,
        suffix,
        path: None,
        snippets: &[],
    };
    let p = build_prompt(
        &input,
        &DEEPSEEK_CODER,
        Layout::Psm,
        &Budget::default(),
        &CharCounter,
    );
    // A fake vocabulary: each special string's id is its position in the template's list.
    let strings = [
        DEEPSEEK_CODER.string(Special::Bos).unwrap(),
        DEEPSEEK_CODER.prefix,
        DEEPSEEK_CODER.suffix,
        DEEPSEEK_CODER.middle.unwrap(),
    ];
    let ids = p
        .encode(
            |t| Ok::<_, String>(vec![100 + t.len() as u32]),
            |s| {
                strings
                    .iter()
                    .position(|x| *x == s)
                    .map(|i| i as u32)
                    .ok_or(format!("no {s}"))
            },
        )
        .unwrap();
    assert_eq!(
        ids,
        [
            0,
            1,
            100 + prefix.len() as u32,
            2,
            100 + suffix.len() as u32,
            3
        ]
    );
    let missing = p.encode(|_| Ok(vec![]), |s| Err(format!("no {s}")));
    assert_eq!(missing.unwrap_err(), "no <｜begin▁of▁sentence｜>");
}
