//! Table-driven post-processing tests: a document with the cursor marked `$0`, the model's
//! raw output, and the text that must be inserted at the cursor.
//!
//! Every case is also checked for idempotence and for agreement with the early-stop rule:
//! wherever `should_stop` says stop, post-processing what was generated so far gives the same
//! result as post-processing the whole output.

use copilot_fim::{postprocess, shape, should_stop, CursorContext, PostOptions, Shape};

struct Case {
    name: &'static str,
    doc: String,
    raw: String,
    want: String,
    shape: Option<Shape>,
}

fn case(name: &'static str, doc: &str, raw: &str, want: &str) -> Case {
    Case {
        name,
        doc: doc.to_string(),
        raw: raw.to_string(),
        want: want.to_string(),
        shape: None,
    }
}

fn forced(name: &'static str, shape: Shape, doc: &str, raw: &str, want: &str) -> Case {
    Case {
        shape: Some(shape),
        ..case(name, doc, raw, want)
    }
}

fn split(doc: &str) -> (&str, &str) {
    assert_eq!(doc.matches("$0").count(), 1, "one cursor marker in {doc:?}");
    doc.split_once("$0").unwrap()
}

fn cases() -> Vec<Case> {
    use Shape::{MultiLine, SingleLine};
    let mut big = String::new();
    for i in 0..5000 {
        big.push_str(&format!("def helper_{i}(x):\n    return x + {i}\n\n"));
    }
    big.push_str("def last(x):$0\n");
    vec![
        // Single line.
        case("mid_line_keeps_first_line", "x = foo($0)\n", "a, b)\nprint(x)\n", "a, b"),
        case("mid_line_newline_first_shows_nothing", "x = $0 + 1\n", "\ny = 2\n", ""),
        case("eol_statement_first_line_only", "total = 0$0\n", " + 1\nprint(total)\n", " + 1"),
        case("eol_next_line_suggestion", "import os$0\n", "\nimport sys\nimport re\n", "\nimport sys"),
        case("eol_next_line_that_walks_out", "def f():\n    return 1$0\n", "\ndef g():\n    pass\n", ""),
        case("eol_next_line_blank_shows_nothing", "x = 1$0\n", "\n\ny = 2", ""),
        case("comment_colon_is_not_a_block", "# Steps:$0\n", " parse, check\n# then run\n", " parse, check"),
        case("cursor_at_start_of_file", "$0\nimport os\n", "import sys\nimport os\n", "import sys"),
        case("cursor_at_end_of_file_without_newline", "def f(x):\n    return x$0", " + 1\n\n\ndef g(): pass", " + 1"),
        case("empty_file", "$0", "import numpy as np\nimport pandas as pd\n", "import numpy as np"),
        case("empty_file_empty_output", "$0", "", ""),
        case("cursor_before_trailing_spaces", "x = 1  $0  \n", "# one\nx = 2\n", "# one"),
        forced("forced_single_line_on_opener", SingleLine, "def f():$0\n", "\n    return 1\n    x\n", "\n    return 1"),
        // Multi-line, Python blocks.
        case("def_body_stops_at_dedent", "def add(a, b):$0\n", "\n    return a + b\nprint(add(1, 2))\n", "\n    return a + b"),
        case(
            "def_body_with_inner_blocks",
            "def f(xs):$0\n",
            "\n    for x in xs:\n        if x:\n            yield x\n    return\n\nf([])",
            "\n    for x in xs:\n        if x:\n            yield x\n    return",
        ),
        case("single_blank_line_in_body_kept", "def f():$0\n", "\n    a = 1\n\n    return a\n", "\n    a = 1\n\n    return a"),
        case("two_blank_lines_stop", "def main():$0\n", "\n    run()\n\n\n    cleanup()\n", "\n    run()"),
        case("two_blank_lines_right_after_opener", "def f():$0\n", "\n\n\n    return 1\n", ""),
        forced(
            "stops_at_new_top_level_def",
            MultiLine,
            "import os\n$0\n",
            "def f():\n    return os.getcwd()\n\ndef g():\n    pass\n",
            "def f():\n    return os.getcwd()",
        ),
        forced("stops_at_decorator", MultiLine, "x = 1\n$0\n", "def f():\n    pass\n@app.route('/')\ndef g():\n", "def f():\n    pass"),
        forced(
            "stops_at_if_main",
            MultiLine,
            "import sys\n$0\n",
            "def main():\n    print(sys.argv)\nif __name__ == \"__main__\":\n    main()\n",
            "def main():\n    print(sys.argv)",
        ),
        forced("async_def_is_top_level", MultiLine, "$0\n", "x = 1\nasync def g():\n", "x = 1"),
        case(
            "class_body",
            "class Point:$0\n",
            "\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\nclass Line:\n    pass\n",
            "\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y",
        ),
        case("opener_then_immediate_walk_out", "def f():$0\n", "\npass\n", ""),
        case(
            "else_at_opener_column_stops",
            "def f(x):\n    if x:$0\n    return 0\n",
            "\n        return 1\n    else:\n        return 2\n",
            "\n        return 1",
        ),
        case("opener_with_text_on_cursor_line", "if ready:$0\n", " start()\nelse:\n    wait()\n", " start()"),
        case(
            "blank_indented_cursor_line",
            "def f(n):\n    total = 0\n    $0\n",
            "for i in range(n):\n        total += i\n    return total\ndef g():\n",
            "for i in range(n):\n        total += i\n    return total",
        ),
        case("blank_col0_after_opener", "def f():\n$0\n", "    return 42\n\n\nprint(f())\n", "    return 42"),
        case("blank_col0_after_opener_walks_out", "def f():\n$0\n", "print(1)\n", ""),
        case(
            "blank_col0_between_indented_lines",
            "def f():\n    a = 1\n$0\n    return a\n",
            "    b = 2\n    return a + b\n",
            "    b = 2\n    return a + b",
        ),
        case("blank_top_level_is_single_line", "import os\n\n$0\n", "import sys\nimport re\n", "import sys"),
        case(
            "dict_literal_closer_kept",
            "CONFIG = {$0\n",
            "\n    \"debug\": True,\n    \"port\": 8080,\n}\nprint(CONFIG)\n",
            "\n    \"debug\": True,\n    \"port\": 8080,\n}",
        ),
        case("call_arguments_closer_kept", "result = compute($0\n", "\n    alpha,\n    beta,\n)\nprint(result)", "\n    alpha,\n    beta,\n)"),
        forced("forced_multi_line_mid_line", MultiLine, "x = f($0)\n", "a,\n      b)\nprint(x)", "a,\n      b"),
        // Multi-line, brace blocks.
        case(
            "brace_closer_kept_when_suffix_lacks_it",
            "function add(a, b) {$0\n",
            "\n  return a + b;\n}\n\nfunction sub(a, b) {\n",
            "\n  return a + b;\n}",
        ),
        case("brace_closer_dropped_when_suffix_has_it", "function add(a, b) {$0\n}\n", "\n  return a + b;\n}\n", "\n  return a + b;"),
        case("else_line_ends_brace_block", "if (ok) {$0\n", "\n  run();\n} else {\n  stop();\n}\n", "\n  run();"),
        case(
            "go_tabs_body",
            "func main() {\n\tx := 1\n\tif x > 0 {$0\n\t}\n}\n",
            "\n\t\tfmt.Println(x)\n\t}\n}\n",
            "\n\t\tfmt.Println(x)",
        ),
        // Suffix overlap.
        case("drops_lines_repeating_below", "def f(x):$0\n    return x\n", "\n    x = x * 2\n    return x\n", "\n    x = x * 2"),
        case(
            "keeps_lines_that_differ_from_below",
            "def f(x):$0\n    return x\n",
            "\n    x = x * 2\n    return x * 3\n",
            "\n    x = x * 2\n    return x * 3",
        ),
        case(
            "drops_several_lines_repeating_below",
            "def f():\n    $0\n    b = 2\n    return b\n",
            "a = 1\n    b = 2\n    return b\n",
            "a = 1",
        ),
        case("auto_closed_paren", "print($0)\n", "\"hello\")\n", "\"hello\""),
        case("inner_call_paren_kept", "print($0)\n", "len(xs)\n", "len(xs)"),
        case("extra_paren_trimmed", "print($0)\n", "len(xs))\n", "len(xs)"),
        case("auto_closed_quote", "name = \"$0\"\n", "world\"\n", "world"),
        case("paren_and_colon", "def greet($0):\n", "name):\n    print(name)\n", "name"),
        case("whole_rest_of_line_repeated", "value = $0compute(x)\n", "cached_compute(x)\n", "cached_"),
        case("no_overlap_unchanged", "x = max($0)\n", "a, b\n", "a, b"),
        case("quote_and_paren_closed", "d = dict(name=\"$0\")\n", "bob\")", "bob"),
        case("only_the_auto_closed_part", "x = [$0]\n", "1, 2, 3]\n", "1, 2, 3"),
        // Indentation.
        case(
            "tabs_file_space_output_becomes_tabs",
            "def f():\n\tif x:\n\t\treturn 1\n\tfor y in z:$0\n",
            "\n        print(y)\n        total += y\n",
            "\n\t\tprint(y)\n\t\ttotal += y",
        ),
        case(
            "spaces_file_tab_output_becomes_spaces",
            "def f():\n    if x:\n        return 1\n    for y in z:$0\n",
            "\n\t\tprint(y)\n",
            "\n        print(y)",
        ),
        case(
            "two_space_file_tab_output",
            "function f() {\n  if (a) {\n    b();\n  }\n  while (c) {$0\n",
            "\n\t\td();\n",
            "\n    d();",
        ),
        case(
            "four_space_output_in_two_space_file_rescaled",
            "function f() {\n  if (a) {\n    b();\n  }\n  while (c) {$0\n",
            "\n      d();\n      if (e) {\n          g();\n      }\n  }\n",
            "\n    d();\n    if (e) {\n      g();\n    }\n  }",
        ),
        case("no_indented_lines_leaves_output", "x = 1\nif x:$0\n", "\n\tprint(x)\n", "\n\tprint(x)"),
        case(
            "continuation_lines_keep_the_cursor_block_column",
            "class A:\n    def f(self):\n        $0\n",
            "x = 1\n        return x\n",
            "x = 1\n        return x",
        ),
        case("column_zero_first_line_restyled", "def f():\n\tpass\n\ndef g():\n$0\n", "    return 1\n", "\treturn 1"),
        // Repetition.
        case("same_line_three_times", "def f():$0\n", "\n    print(1)\n    print(1)\n    print(1)\n    print(1)\n", "\n    print(1)"),
        case("same_line_twice_kept", "def f():$0\n", "\n    x += 1\n    x += 1\n", "\n    x += 1\n    x += 1"),
        case(
            "two_line_group_repeated",
            "def f():$0\n",
            "\n    a = 1\n    b = 2\n    a = 1\n    b = 2\n    a = 1\n    b = 2\n",
            "\n    a = 1\n    b = 2",
        ),
        case("degenerate_pass_lines", "class E(Exception):$0\n", "\n    pass\n    pass\n    pass\n    pass\n    pass", "\n    pass"),
        case("blank_interleaved_repetition", "def f():$0\n", "\n    x()\n\n    x()\n\n    x()\n\n", "\n    x()"),
        // Stopping after the third blank would be early: a fourth ends the scope before it.
        case("repetition_ending_in_a_blank_line", "def f():\n    $0\n", "x()\n\n    x()\n\n    x()\n\n    y()\n", "x()"),
        case("line_looping_inside_is_dropped", "def f():\n$0\n", "    url = \"http://www.1.1.1.1.1.1.1", ""),
        case(
            "lines_before_an_inner_loop_stay",
            "def f():\n    $0\n",
            "a = 1\n    b = x_to_to_to_to_to_to_to",
            "a = 1",
        ),
        // The overlap trims `foo()` off the last line, which bares a loop; dropping that line
        // makes the first one last, and its `foo()` repeats the rest of the line as well.
        forced("overlap_then_loop_then_overlap", MultiLine, "x = $0foo()\n", "1 + foo()\nab_ab_ab_ab_ab_foo()", "1 +"),
        // The tab of the last line becomes the file's spaces, and then its end repeats the
        // rest of the cursor line (` xyz`): the overlap is looked for again after the restyle.
        forced("overlap_after_restyled_indentation", MultiLine, "def f():\n    y = 1\n $0 xyz\n", "b\n\txyz", "b"),
        case("numeric_row_is_not_a_loop", "x = $0\n", "[0, 0, 0, 0, 0, 0]", "[0, 0, 0, 0, 0, 0]"),
        // Whitespace.
        case("trailing_whitespace_trimmed", "def f():$0\n", "\n    a = 1   \n    return a\t\n", "\n    a = 1\n    return a"),
        case("whitespace_only_output", "def f():$0\n", "\n    \n   \n", ""),
        case("only_newlines_output", "x = $0\n", "\n\n\n\n", ""),
        case("empty_output", "def f():$0\n", "", ""),
        // CRLF.
        case(
            "crlf_multi_line",
            "def f(a):\r\n    if a:$0\r\n    return 0\r\n",
            "\n        return 1\n    return 2\n",
            "\r\n        return 1",
        ),
        case("crlf_raw_in_lf_doc", "def f():$0\n", "\r\n    return 1\r\n", "\n    return 1"),
        case("crlf_single_line", "x = foo($0)\r\ny = 2\r\n", "1, 2)\r\n", "1, 2"),
        case("crlf_with_tabs", "if x {\r\n\ty()\r\n}\r\nfor {$0\r\n}\r\n", "\n    z()\n}\n", "\r\n\tz()"),
        // Unicode.
        case("unicode_identifier_mid_line", "größe = berechne($0)\n", "länge, breite)\n", "länge, breite"),
        case("emoji_in_string_auto_closed_quote", "msg = \"$0\"\n", "done ✅ 🎉\"\n", "done ✅ 🎉"),
        case(
            "unicode_multi_line",
            "def grüße(名前):$0\n",
            "\n    return f\"こんにちは {名前} 👋\"\nprint(grüße(\"世界\"))\n",
            "\n    return f\"こんにちは {名前} 👋\"",
        ),
        // Special tokens written out.
        case("end_of_text_written_out", "def f():$0\n", "\n    return 1<|endoftext|>\ndef g(): pass", "\n    return 1"),
        case("fim_token_written_out", "x = $0\n", "42<fim_middle>garbage", "42"),
        // Large document.
        case("prefix_far_over_budget", &big, "\n    return x * 2\n\n\ndef more():\n", "\n    return x * 2"),
    ]
}

fn run(c: &Case) -> (String, CursorContext<'_>, PostOptions) {
    let (prefix, suffix) = split(&c.doc);
    let ctx = CursorContext { prefix, suffix };
    let opts = PostOptions { shape: c.shape };
    (postprocess(&c.raw, &ctx, &opts), ctx, opts)
}

#[test]
fn fixtures() {
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    let mut failed = Vec::new();
    for c in &cases {
        let (got, _, _) = run(c);
        if got != c.want {
            failed.push(format!(
                "{}:\n  raw:  {:?}\n  want: {:?}\n  got:  {:?}",
                c.name, c.raw, c.want, got
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn fixtures_are_idempotent() {
    for c in &cases() {
        let (once, ctx, opts) = run(c);
        assert_eq!(postprocess(&once, &ctx, &opts), once, "{}", c.name);
    }
}

#[test]
fn fixtures_never_stop_early() {
    for c in &cases() {
        let (full, ctx, opts) = run(c);
        let shape = opts.shape.unwrap_or_else(|| shape(&ctx));
        for (i, _) in c.raw.char_indices().skip(1) {
            let partial = &c.raw[..i];
            if should_stop(&ctx, shape, partial) {
                assert_eq!(
                    postprocess(partial, &ctx, &opts),
                    full,
                    "{}: stopped after {partial:?}",
                    c.name
                );
            }
        }
    }
}

#[test]
fn early_stop_fires_where_it_should() {
    let at = |doc: &str, gen: &str| {
        let (prefix, suffix) = split(doc);
        let ctx = CursorContext { prefix, suffix };
        should_stop(&ctx, shape(&ctx), gen)
    };
    // Single line: at the newline, not before.
    assert!(!at("x = foo($0)\n", "a, b)"));
    assert!(at("x = foo($0)\n", "a, b)\n"));
    // End of a line: the next line, once complete.
    assert!(!at("import os$0\n", "\n"));
    assert!(!at("import os$0\n", "\nimport sys"));
    assert!(at("import os$0\n", "\nimport sys\n"));
    // Blocks: a line walking out stops as soon as its indentation is known.
    assert!(!at("def f():$0\n", "\n    return 1\n"));
    assert!(at("def f():$0\n", "\n    return 1\np"));
    assert!(!at("def f():$0\n", "\n    return 1\n    "));
    // Two blank lines.
    assert!(!at("def f():$0\n", "\n    a()\n\n"));
    assert!(at("def f():$0\n", "\n    a()\n\n\n"));
    // A closing brace at the opener's column: wait for its line to end.
    assert!(!at("if (x) {$0\n", "\n  a();\n}"));
    assert!(at("if (x) {$0\n", "\n  a();\n}\n"));
    // Repetition and special tokens.
    assert!(at("def f():$0\n", "\n    a()\n    a()\n    a()\n"));
    assert!(!at("def f():$0\n", "\n    a()\n    a()\n    a("));
    assert!(at("def f():$0\n", "\n    a()<|endoftext|>"));
}

#[test]
fn traced_steps_follow_the_documented_order() {
    let (prefix, suffix) = split("def f(x):$0\n    return x\n");
    let ctx = CursorContext { prefix, suffix };
    let raw = "\r\n\tx = x * 2   \r\n    return x\r\nprint(f(1))\r\n";
    let steps = copilot_fim::postprocess_traced(raw, &ctx, &PostOptions::default());
    let names: Vec<&str> = steps.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, copilot_fim::post::STEPS);
    let text = |name: &str| steps.iter().find(|(n, _)| *n == name).unwrap().1.as_str();
    assert_eq!(text("limit_to_scope"), "\n\tx = x * 2   \n    return x");
    assert_eq!(
        text("trim_trailing_whitespace"),
        "\n\tx = x * 2\n    return x"
    );
    assert_eq!(text("drop_suffix_overlap"), "\n\tx = x * 2");
    assert_eq!(text("restyle_indentation"), "\n    x = x * 2");
    assert_eq!(
        steps.last().unwrap().1,
        postprocess(raw, &ctx, &PostOptions::default())
    );
}
