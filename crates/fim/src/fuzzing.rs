//! The properties of post-processing and prompt building, as functions that panic when one
//! fails: called by the property tests (`tests/properties.rs`), by the `fim` fuzz target
//! (`fuzz/`) and by the stable replay of its corpus (`tests/fuzz_corpus.rs`).

use crate::{
    build_prompt, postprocess, shape, should_stop, Budget, CharCounter, CursorContext, Layout,
    Piece, PostOptions, PromptInput, Shape, Snippet,
};

/// Non-whitespace characters, in order.
fn visible(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Post-processing only removes text (indentation and line endings aside), is idempotent,
/// writes `\r` only into CRLF files, and agrees with the early-stop rule: wherever
/// [`should_stop`] stops, the result is the one of the whole output.
pub fn postprocess_properties(raw: &str, prefix: &str, suffix: &str, shape_opt: Option<Shape>) {
    let ctx = CursorContext { prefix, suffix };
    let opts = PostOptions { shape: shape_opt };
    let out = postprocess(raw, &ctx, &opts);
    assert!(
        visible(raw).starts_with(&visible(&out)),
        "output {out:?} is not taken from raw {raw:?}"
    );
    assert_eq!(postprocess(&out, &ctx, &opts), out, "not idempotent");
    if !ctx.is_crlf() {
        assert!(!out.contains('\r'), "{out:?}");
    }
    // The early-stop rule is called after every token: checked on short outputs only (it is
    // quadratic here).
    if raw.len() <= 400 {
        let shape = shape_opt.unwrap_or_else(|| shape(&ctx));
        for (i, _) in raw.char_indices() {
            let partial = &raw[..i];
            if should_stop(&ctx, shape, partial) {
                assert_eq!(
                    postprocess(partial, &ctx, &opts),
                    out,
                    "stopped after {partial:?}"
                );
                break;
            }
        }
    }
}

/// A prompt stays within its window and budgets, keeps the user's text as text (never a
/// special token), and takes its prefix and suffix from the ends nearest the cursor.
pub fn prompt_properties(
    prefix: &str,
    suffix: &str,
    path: Option<&str>,
    snippet: &str,
    budget: Budget,
    layout: Layout,
) {
    let snippets = [Snippet {
        path: "other.py".into(),
        text: snippet.to_string(),
    }];
    let input = PromptInput {
        prefix,
        suffix,
        path,
        snippets: &snippets,
    };
    let p = build_prompt(&input, &crate::STARCODER, layout, &budget, &CharCounter);
    let total: usize = p
        .pieces
        .iter()
        .map(|x| match x {
            Piece::Special(_) => 1,
            Piece::Text(t) => t.chars().count(),
        })
        .sum();
    assert_eq!(total, p.counted_tokens);
    let specials = layout.special_tokens();
    if budget.window >= budget.max_new_tokens + specials {
        assert!(
            total <= budget.window - budget.max_new_tokens,
            "{total} tokens for {budget:?}"
        );
    }
    assert!(prefix.ends_with(&p.prefix));
    assert!(suffix.starts_with(&p.suffix));
    assert!(p.prefix.chars().count() <= budget.prefix_tokens);
    assert!(p.suffix.chars().count() <= budget.suffix_tokens);
    let n_special = p
        .pieces
        .iter()
        .filter(|x| matches!(x, Piece::Special(_)))
        .count();
    assert_eq!(n_special, specials);
    assert!(p.pieces.iter().all(|x| x != &Piece::Text(String::new())));
    // Each kept snippet is one text piece, and fine-tuning finds it there.
    assert_eq!(p.snippet_pieces.len(), p.snippets.len());
    for &i in &p.snippet_pieces {
        assert!(matches!(p.pieces.get(i), Some(Piece::Text(_))), "{i}");
        assert_ne!(p.header, Some(i));
    }
}

/// Arbitrary bytes as a document, a cursor in it, a model output, a snippet and budgets.
pub fn fim(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (params, rest) = data.split_at(8);
    let mut parts = rest.split(|b| *b == 0xFF);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let raw = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let snippet = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let mut cursor = usize::from(u16::from_le_bytes([params[0], params[1]])) % (text.len() + 1);
    while !text.is_char_boundary(cursor) {
        cursor -= 1;
    }
    let (prefix, suffix) = text.split_at(cursor);
    let shape_opt = match params[2] % 3 {
        0 => None,
        1 => Some(Shape::SingleLine),
        _ => Some(Shape::MultiLine),
    };
    postprocess_properties(&raw, prefix, suffix, shape_opt);
    let layout = match params[3] % 3 {
        0 => Layout::Psm,
        1 => Layout::Spm,
        _ => Layout::LeftToRight,
    };
    let budget = Budget {
        prefix_tokens: usize::from(params[4]),
        suffix_tokens: usize::from(params[5]),
        window: usize::from(params[6]) * 2,
        max_new_tokens: usize::from(params[7] % 64),
    };
    let path = (params[2] & 0x80 != 0).then_some("src/a b/ü.py");
    prompt_properties(prefix, suffix, path, &snippet, budget, layout);
}
