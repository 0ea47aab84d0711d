//! Property tests: post-processing never panics, only removes text (indentation and line
//! endings aside), is idempotent and agrees with the early-stop rule; prompts stay within
//! their budget and keep user text as text.

//!
//! The properties themselves live in `copilot_fim::fuzzing`, shared with the fuzz target.

use copilot_fim::fuzzing::{postprocess_properties, prompt_properties};
use copilot_fim::{Budget, Layout, Shape};
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
