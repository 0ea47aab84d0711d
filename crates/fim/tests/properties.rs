//! Property tests: post-processing never panics, only removes text (indentation and line
//! endings aside), is idempotent and agrees with the early-stop rule; prompts stay within
//! their budget and keep user text as text.

//!
//! The properties themselves live in `copilot_fim::fuzzing`, shared with the fuzz target.

use copilot_fim::fuzzing::{postprocess_properties, prompt_properties};
use copilot_fim::{postprocess, settled, Budget, CursorContext, Layout, PostOptions, Shape};
use proptest::prelude::*;

/// Code-like text: the fragments the rules react to, in any order.
fn code() -> impl Strategy<Value = String> {
    let fragments = vec![
        "\n",
        "\n",
        "\n",
        "\r\n",
        "\r",
        " ",
        "    ",
        "  ",
        "\t",
        "def ",
        "class ",
        "@",
        "if __name__",
        "async def ",
        "return x",
        "pass",
        "x = 1",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ":",
        ";",
        ",",
        "\"",
        "'",
        "`",
        "# c:",
        "é",
        "名",
        "🎉",
        "<fim_middle>",
        "<|endoftext|>",
        "<fim_",
        "a",
        "b",
    ];
    prop::collection::vec(prop::sample::select(fragments), 0..40).prop_map(|v| v.concat())
}

/// Code made of a few lines, so that repeated lines, lines equal to the code below the
/// cursor, blank runs and dedents are common.
fn code_lines() -> impl Strategy<Value = String> {
    let lines = vec![
        "x = 1",
        "    x = 1",
        "    return x",
        "        y(x)",
        "\ty = 2",
        "  z = [",
        "  ]",
        "}",
        ")",
        "def g():",
        "    pass",
        "",
        "   ",
        "foo(a)",
        "a, b)",
        "\r",
    ];
    prop::collection::vec(prop::sample::select(lines), 0..12).prop_map(|v| v.join("\n"))
}

fn shapes() -> impl Strategy<Value = Option<Shape>> {
    prop::option::of(prop_oneof![Just(Shape::SingleLine), Just(Shape::MultiLine)])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_utf8(raw in any::<String>(), prefix in any::<String>(), suffix in any::<String>(), shape in shapes()) {
        postprocess_properties(&raw, &prefix, &suffix, shape);
    }

    #[test]
    fn code_like_text_and_the_early_stop_rule(raw in code(), prefix in code(), suffix in code(), shape in shapes()) {
        postprocess_properties(&raw, &prefix, &suffix, shape);
    }

    #[test]
    fn settled_text_is_the_start_of_every_continuation(
        raw in prop_oneof![code(), code_lines()],
        prefix in prop_oneof![code(), code_lines(), Just("def f(x):\n    ".to_string()), Just("if (x) {".to_string())],
        suffix in prop_oneof![code(), code_lines()],
        shape in shapes(),
    ) {
        let ctx = CursorContext { prefix: &prefix, suffix: &suffix };
        let shape = shape.unwrap_or_else(|| copilot_fim::shape(&ctx));
        let full = postprocess(&raw, &ctx, &PostOptions { shape: Some(shape) });
        for (i, _) in raw.char_indices().chain([(raw.len(), ' ')]) {
            let partial = &raw[..i];
            let sent = settled(&ctx, shape, partial);
            prop_assert!(full.starts_with(&sent), "sent {:?} after {:?}, the answer is {:?}", sent, partial, full);
        }
    }

    #[test]
    fn prompts_fit_the_window(
        prefix in code(),
        suffix in code(),
        path in prop::option::of("[a-z/]{1,20}\\.(py|rs)"),
        snippet in code(),
        prefix_tokens in 0usize..200,
        suffix_tokens in 0usize..200,
        window in 0usize..300,
        max_new_tokens in 0usize..100,
        layout in prop_oneof![Just(Layout::Psm), Just(Layout::Spm), Just(Layout::LeftToRight)],
    ) {
        let budget = Budget { prefix_tokens, suffix_tokens, window, max_new_tokens };
        prompt_properties(&prefix, &suffix, path.as_deref(), &snippet, budget, layout);
    }
}
