//! Prompt building: layouts in exact token order, budgets cut at line boundaries nearest the
//! cursor, header and snippets first, special strings in user text kept as text.

use std::cell::Cell;

use copilot_fim::{
    build_prompt, choose_layout, Budget, CharCounter, Layout, LayoutChoice, Piece, Prompt,
    PromptInput, Snippet, Special, TokenCounter, STARCODER,
};

const PRE: Piece = Piece::Special(Special::FimPrefix);
const SUF: Piece = Piece::Special(Special::FimSuffix);
const MID: Piece = Piece::Special(Special::FimMiddle);

fn text(s: &str) -> Piece {
    Piece::Text(s.to_string())
}

fn build(prefix: &str, suffix: &str, layout: Layout, budget: &Budget) -> Prompt {
    let input = PromptInput {
        prefix,
        suffix,
        path: None,
        snippets: &[],
    };
    build_prompt(&input, &STARCODER, layout, budget, &CharCounter)
}

const P: &str = "def f(x):\n    ret";
const S: &str = "\n\nprint(f(1))\n";

#[test]
fn psm_order() {
    let p = build(P, S, Layout::Psm, &Budget::default());
    assert_eq!(p.pieces, vec![PRE, text(P), SUF, text(S), MID]);
    assert_eq!(
        p.render(),
        format!("<fim_prefix>{P}<fim_suffix>{S}<fim_middle>")
    );
    assert_eq!((p.prefix.as_str(), p.suffix.as_str()), (P, S));
    assert_eq!(p.layout, Layout::Psm);
}

#[test]
fn spm_order_as_bigcode_trained_it() {
    let p = build(P, S, Layout::Spm, &Budget::default());
    assert_eq!(p.pieces, vec![PRE, SUF, text(S), MID, text(P)]);
}

#[test]
fn left_to_right_is_the_prefix_alone() {
    let p = build(P, S, Layout::LeftToRight, &Budget::default());
    assert_eq!(p.pieces, vec![text(P)]);
    assert_eq!(p.suffix, "");
    assert_eq!(p.counted_tokens, P.chars().count());
}

#[test]
fn empty_texts_are_left_out() {
    assert_eq!(
        build("", "", Layout::Psm, &Budget::default()).pieces,
        vec![PRE, SUF, MID]
    );
    assert_eq!(
        build("", "x", Layout::Spm, &Budget::default()).pieces,
        vec![PRE, SUF, text("x"), MID]
    );
    assert!(build("", "", Layout::LeftToRight, &Budget::default())
        .pieces
        .is_empty());
}

#[test]
fn auto_layout_follows_the_seed_rule() {
    assert_eq!(
        choose_layout(LayoutChoice::Auto, " \n\t\r\n"),
        Layout::LeftToRight
    );
    assert_eq!(choose_layout(LayoutChoice::Auto, ""), Layout::LeftToRight);
    assert_eq!(choose_layout(LayoutChoice::Auto, "\n  x"), Layout::Spm);
    assert_eq!(choose_layout(LayoutChoice::Spm, ""), Layout::Spm);
    assert_eq!(choose_layout(LayoutChoice::Psm, ""), Layout::Psm);
    assert_eq!(
        choose_layout(LayoutChoice::LeftToRight, "x"),
        Layout::LeftToRight
    );
    assert_eq!(LayoutChoice::default(), LayoutChoice::Auto);
}

#[test]
fn special_names() {
    let names: Vec<&str> = Special::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "<fim_prefix>",
            "<fim_suffix>",
            "<fim_middle>",
            "<|endoftext|>",
            "<s>",
            "<repo_name>",
            "<file_sep>"
        ]
    );
}

#[test]
fn header_and_snippets_come_first_in_the_prefix_section() {
    let snippets = [Snippet {
        path: "util.py".into(),
        text: "def u():\n    return 1\n".into(),
    }];
    let input = PromptInput {
        prefix: P,
        suffix: S,
        path: Some("src/app.py"),
        snippets: &snippets,
    };
    let header = text("# path: src/app.py\n");
    let snippet = text("# snippet from util.py:\n# def u():\n#     return 1\n");
    let psm = build_prompt(
        &input,
        &STARCODER,
        Layout::Psm,
        &Budget::default(),
        &CharCounter,
    );
    assert_eq!(
        psm.pieces,
        vec![
            PRE,
            header.clone(),
            snippet.clone(),
            text(P),
            SUF,
            text(S),
            MID
        ]
    );
    let spm = build_prompt(
        &input,
        &STARCODER,
        Layout::Spm,
        &Budget::default(),
        &CharCounter,
    );
    assert_eq!(
        spm.pieces,
        vec![
            PRE,
            SUF,
            text(S),
            MID,
            header.clone(),
            snippet.clone(),
            text(P)
        ]
    );
    let l2r = build_prompt(
        &input,
        &STARCODER,
        Layout::LeftToRight,
        &Budget::default(),
        &CharCounter,
    );
    assert_eq!(l2r.pieces, vec![header.clone(), snippet, text(P)]);
    assert_eq!(psm.prefix, P, "the kept prefix is code only");
    // The header piece is marked, so callers never have to find it by its text.
    for p in [&psm, &spm, &l2r] {
        assert_eq!(p.pieces[p.header.unwrap()], header, "{:?}", p.layout);
    }
    let no_path = build_prompt(
        &PromptInput {
            path: None,
            ..input
        },
        &STARCODER,
        Layout::Spm,
        &Budget::default(),
        &CharCounter,
    );
    assert_eq!(no_path.header, None);

    let rust = PromptInput {
        path: Some("src/main.rs"),
        snippets: &[],
        ..input
    };
    let p = build_prompt(
        &rust,
        &STARCODER,
        Layout::Psm,
        &Budget::default(),
        &CharCounter,
    );
    assert_eq!(p.pieces[1], text("// path: src/main.rs\n"));
}

#[test]
fn header_and_snippets_give_way_when_room_is_short() {
    let snippets = [
        Snippet {
            path: "big.py".into(),
            text: "x = 1\n".repeat(50),
        },
        Snippet {
            path: "s.py".into(),
            text: "y = 2\n".into(),
        },
    ];
    let input = PromptInput {
        prefix: "a = 1\n",
        suffix: "",
        path: Some("a/very/long/path/to/some/module.py"),
        snippets: &snippets,
    };
    let budget = Budget {
        prefix_tokens: 120,
        suffix_tokens: 0,
        window: 250,
        max_new_tokens: 50,
    };
    let p = build_prompt(
        &input,
        &STARCODER,
        Layout::LeftToRight,
        &budget,
        &CharCounter,
    );
    // The header (43 chars) fits a quarter of the room (200); the big snippet does not fit
    // a quarter of the prefix budget (30), the small one (29) does.
    assert_eq!(
        p.pieces,
        vec![
            text("# path: a/very/long/path/to/some/module.py\n"),
            text("# snippet from s.py:\n# y = 2\n"),
            text("a = 1\n"),
        ]
    );
    let tight = Budget {
        window: 220,
        ..budget
    };
    let p = build_prompt(
        &input,
        &STARCODER,
        Layout::LeftToRight,
        &tight,
        &CharCounter,
    );
    assert_eq!(
        p.pieces[0],
        text("# snippet from s.py:\n# y = 2\n"),
        "header over a quarter of the room"
    );
    assert_eq!(p.header, None);
}

#[test]
fn user_text_with_special_strings_stays_text() {
    let prefix = "s = '<fim_middle>'\nt = '<fim_prefix>";
    let suffix = "<|endoftext|>'\nu = '<fim_suffix>'\n";
    for layout in [Layout::Psm, Layout::Spm] {
        let p = build(prefix, suffix, layout, &Budget::default());
        let specials: Vec<&Piece> = p
            .pieces
            .iter()
            .filter(|x| matches!(x, Piece::Special(_)))
            .collect();
        assert_eq!(specials, vec![&PRE, &SUF, &MID], "{layout:?}");
        assert!(p.pieces.contains(&text(prefix)));
        assert!(p.pieces.contains(&text(suffix)));
    }
    let p = build(prefix, suffix, Layout::LeftToRight, &Budget::default());
    assert_eq!(p.pieces, vec![text(prefix)]);
}

fn numbered_lines(n: usize) -> String {
    (0..n).map(|i| format!("line {i:04}\n")).collect()
}

#[test]
fn prefix_over_budget_keeps_the_lines_nearest_the_cursor() {
    // 10 chars per line; the cursor line is "cur" (3 chars).
    let prefix = format!("{}cur", numbered_lines(1000));
    let budget = Budget {
        prefix_tokens: 45,
        suffix_tokens: 10,
        ..Budget::default()
    };
    let p = build(&prefix, "", Layout::Psm, &budget);
    assert_eq!(p.prefix, "line 0996\nline 0997\nline 0998\nline 0999\ncur");
    assert_eq!(p.pieces, vec![PRE, text(&p.prefix), SUF, MID]);
}

#[test]
fn suffix_over_budget_keeps_the_lines_nearest_the_cursor() {
    let suffix = format!("rest\n{}", numbered_lines(1000));
    let budget = Budget {
        prefix_tokens: 10,
        suffix_tokens: 26,
        ..Budget::default()
    };
    let p = build("x", &suffix, Layout::Psm, &budget);
    assert_eq!(p.suffix, "rest\nline 0000\nline 0001\n");
}

#[test]
fn a_cursor_line_alone_over_budget_is_cut_from_its_far_end() {
    let long = "x".repeat(100);
    let budget = Budget {
        prefix_tokens: 10,
        suffix_tokens: 5,
        ..Budget::default()
    };
    let p = build(
        &format!("a\n{long}PREFIX"),
        &format!("SUFFIX{long}\nb"),
        Layout::Psm,
        &budget,
    );
    assert_eq!(p.prefix, "xxxxPREFIX");
    assert_eq!(p.suffix, "SUFFI");
}

#[test]
fn a_small_window_scales_both_budgets_down() {
    // The pico model: 1,024 positions. Room = 1024 - 128 - 3 specials = 893, split 3:1.
    let budget = Budget {
        window: 1024,
        max_new_tokens: 128,
        ..Budget::default()
    };
    let lines = "x\n".repeat(5000);
    let p = build(&lines, &lines, Layout::Psm, &budget);
    let (pre, suf) = (p.prefix.chars().count(), p.suffix.chars().count());
    // 669 tokens give 334 whole lines; the truncated prefix then starts at the next line
    // number that is a multiple of ANCHOR_LINES (5000 - 334 = 4666 -> 4672): 328 lines.
    assert_eq!(
        (pre, suf),
        (656, 224),
        "669 and 224 tokens of budget, whole 2-char lines, anchored start"
    );
    assert_eq!(p.counted_tokens, 3 + pre + suf);
    assert!(p.counted_tokens <= 1024 - 128);
    // The 8,192 window grants the defaults.
    let p = build(&lines, &lines, Layout::Psm, &Budget::default());
    // 768 whole lines fit; anchored from line 4232 to 4240: 760 lines.
    assert_eq!((p.prefix.len(), p.suffix.len()), (1520, 512));
}

#[test]
fn huge_budgets_do_not_overflow() {
    let budget = Budget {
        prefix_tokens: usize::MAX,
        suffix_tokens: usize::MAX,
        window: usize::MAX,
        max_new_tokens: 0,
    };
    let p = build(P, S, Layout::Psm, &budget);
    assert_eq!(p.pieces, vec![PRE, text(P), SUF, text(S), MID]);
    let none = Budget {
        window: 2,
        max_new_tokens: 10,
        ..budget
    };
    let p = build(P, S, Layout::Psm, &none);
    assert_eq!(p.pieces, vec![PRE, SUF, MID]);
}

/// Counts characters and remembers how many it was asked to look at.
struct Metered {
    seen: Cell<usize>,
}

impl TokenCounter for Metered {
    fn count(&self, text: &str) -> usize {
        self.seen.set(self.seen.get() + text.len());
        text.chars().count()
    }
}

#[test]
fn counting_walks_outward_and_stops() {
    let prefix = numbered_lines(9_999); // about 100,000 chars
    let suffix = numbered_lines(9_999);
    let counter = Metered { seen: Cell::new(0) };
    let input = PromptInput {
        prefix: &prefix,
        suffix: &suffix,
        path: None,
        snippets: &[],
    };
    let p = build_prompt(
        &input,
        &STARCODER,
        Layout::Psm,
        &Budget::default(),
        &counter,
    );
    // 153 whole lines fit; the start is then anchored to a line number that is a multiple of
    // ANCHOR_LINES (9846 -> 9856), keeping 143.
    assert_eq!(p.prefix.len(), 1430);
    // Kept text plus one line each side, not the whole document.
    assert!(
        // (plus the lines skipped to reach the anchored start, counted once more)
        counter.seen.get() <= 1530 + 510 + 2 * 10 + copilot_fim::budget::ANCHOR_LINES * 10,
        "{}",
        counter.seen.get()
    );
}

/// Typing at the cursor, new lines included, keeps the truncated prefix's first line in place
/// (so a KV cache keeps its common prefix), until the budget forces a jump of ANCHOR_LINES.
#[test]
fn a_truncated_prefix_start_stays_put_while_typing() {
    let budget = Budget {
        prefix_tokens: 400,
        suffix_tokens: 100,
        window: 8192,
        max_new_tokens: 64,
    };
    let file = numbered_lines(500);
    let first_line = |typed: &str| {
        let prefix = format!("{file}{typed}");
        let p = build(&prefix, "\nrest\n", Layout::Psm, &budget);
        p.prefix.lines().next().unwrap().to_string()
    };
    let start = first_line("");
    let mut typed = String::new();
    let mut jumps = 0;
    let mut last = start.clone();
    for ch in "def f(x):\n    return x\n".chars() {
        typed.push(ch);
        let now = first_line(&typed);
        if now != last {
            jumps += 1;
            last = now;
        }
    }
    assert_eq!(
        jumps, 0,
        "two new lines must not move the start (began at {start:?})"
    );
    // Far more new lines do move it, by whole anchor blocks.
    let many = "y = 1\n".repeat(3 * copilot_fim::budget::ANCHOR_LINES);
    assert_ne!(first_line(&many), start);
}

#[test]
fn the_most_relevant_snippet_sits_nearest_the_code_within_a_quarter_of_the_prefix() {
    let snippet = |path: &str, text: &str| Snippet {
        path: path.into(),
        text: text.into(),
    };
    // Most relevant first, as the context crate gives them.
    let snippets = [
        snippet("best.py", "a = 1\n"),
        snippet("second.py", "b = 2\n"),
        snippet("huge.py", &"c = 3\n".repeat(100)),
        snippet("third.py", "d = 4\n"),
    ];
    let input = PromptInput {
        prefix: "x = 1\n",
        suffix: "",
        path: None,
        snippets: &snippets,
    };
    let budget = Budget {
        prefix_tokens: 400,
        suffix_tokens: 0,
        window: 8192,
        max_new_tokens: 64,
    };
    let p = build_prompt(
        &input,
        &STARCODER,
        Layout::LeftToRight,
        &budget,
        &CharCounter,
    );
    assert_eq!(
        p.pieces,
        vec![
            text("# snippet from third.py:\n# d = 4\n"),
            text("# snippet from second.py:\n# b = 2\n"),
            text("# snippet from best.py:\n# a = 1\n"),
            text("x = 1\n"),
        ]
    );
    assert_eq!(
        p.snippets,
        vec![3, 1, 0],
        "indices of the kept ones, in prompt order"
    );
    // The snippets never take more than a quarter of the prefix budget.
    let used: usize = p.pieces[..3]
        .iter()
        .map(|x| match x {
            Piece::Text(t) => t.chars().count(),
            Piece::Special(_) => 1,
        })
        .sum();
    assert!(used <= 100, "{used}");
}

#[test]
fn a_small_window_sets_room_aside_for_snippets_before_cutting_code() {
    let snippets = [Snippet {
        path: "u.py".into(),
        text: "def u():\n    return 1\n".into(),
    }];
    let long_prefix: String = (0..200).map(|i| format!("v{i} = {i}\n")).collect();
    let input = PromptInput {
        prefix: &long_prefix,
        suffix: "",
        path: None,
        snippets: &snippets,
    };
    // A window much smaller than the code: the prefix alone would fill it.
    let budget = Budget {
        prefix_tokens: 1536,
        suffix_tokens: 512,
        window: 400,
        max_new_tokens: 48,
    };
    let p = build_prompt(&input, &STARCODER, Layout::Spm, &budget, &CharCounter);
    assert!(p
        .pieces
        .contains(&text("# snippet from u.py:\n# def u():\n#     return 1\n")));
    assert!(p.counted_tokens <= 400 - 48);
    let without = build_prompt(
        &PromptInput {
            snippets: &[],
            ..input
        },
        &STARCODER,
        Layout::Spm,
        &budget,
        &CharCounter,
    );
    assert!(
        without.prefix.len() > p.prefix.len(),
        "the code gave way to the snippet"
    );
}
