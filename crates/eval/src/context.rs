//! Context in evaluation: the held-out lines completed with snippets from the rest of the
//! repository, gathered by `copilot-context` exactly as the server gathers them, and the
//! model-independent measure of what that context is worth, **cross-file identifier
//! recall**: of the sampled lines whose identifiers include one that the current file's
//! window lacks but another file of the repository defines, the share whose gathered
//! context holds it (per source, and all together).
//!
//! "Open files" are simulated: the other source files in the held-out file's folder are
//! open while its lines are completed. The held-out file itself is never a source (the
//! context crate never gathers from the document it completes). Knows no LSP.

use std::collections::{HashMap, HashSet};

pub use copilot_context::offline::Gatherer;
use copilot_context::{ContextSettings, PromptBudget, Source, Sources};
use copilot_fim::TokenCounter;
use copilot_finetune::data::SourceFile;
use serde::Serialize;

use crate::Task;

/// Whether the needed identifier `id` (at its first occurrence in the cursor's line, from
/// the cursor's identifier on) is code rather than a word in a comment or a string, judged
/// on the file with the target put back.
fn in_code(t: &Task, prose: &[std::ops::Range<usize>], id: &str) -> bool {
    let (start, line) = cursor_line(t);
    copilot_context::tokens::identifiers(&line)
        .find(|(at, s)| *s == id && at + s.len() > t.cursor - start)
        .is_none_or(|(at, _)| {
            let at = start + at;
            !prose.iter().any(|r| r.contains(&at))
        })
}

/// Where the cursor's line starts, and the line as it was: what precedes the cursor on it
/// and the held-out target.
fn cursor_line(t: &Task) -> (usize, String) {
    let start = t.text[..t.cursor].rfind('\n').map_or(0, |i| i + 1);
    (start, format!("{}{}", &t.text[start..t.cursor], t.target))
}

/// Recall of one source (or all together).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recall {
    /// `open`, `imports`, `index` or `all`.
    pub source: String,
    /// Lines for which the context holds every cross-file identifier the line needs.
    pub lines_found: usize,
    /// `lines_found` over the lines that need one.
    pub recall: f64,
    /// (line, identifier) pairs found, over all such pairs.
    pub identifiers_found: usize,
    pub identifier_recall: f64,
    /// Mean tokens of context per line.
    pub mean_tokens: f64,
    /// The same line recall over the lines whose needed identifiers are code (not words in
    /// a comment or a docstring).
    pub code_lines_found: usize,
    pub code_recall: f64,
}

/// Cross-file identifier recall over the sampled lines.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecallReport {
    pub sampled: usize,
    /// Sampled lines with an identifier missing from the window and defined in another file.
    pub needing: usize,
    /// Such (line, identifier) pairs.
    pub needed_identifiers: usize,
    /// Lines needing one whose needed identifiers are all code, not prose.
    pub needing_in_code: usize,
    pub rows: Vec<Recall>,
}

/// Names each file of the repository defines (Python, by tree-sitter outline): name ->
/// files.
pub fn definitions(files: &[SourceFile]) -> HashMap<String, HashSet<String>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for f in files {
        if !f.rel.ends_with(".py") && !f.rel.ends_with(".pyi") {
            continue;
        }
        let outline =
            copilot_context::imports::Language::outline(&copilot_context::imports::Python, &f.text);
        for n in outline.names() {
            out.entry(n.to_string()).or_default().insert(f.rel.clone());
        }
    }
    out
}

fn idents(text: &str) -> HashSet<&str> {
    copilot_context::tokens::identifiers(text)
        .map(|(_, s)| s)
        .filter(|s| s.chars().count() >= 2 && !copilot_context::tokens::is_stop_word(s))
        .collect()
}

/// The identifiers of `t`'s target that its window lacks and another file defines. An
/// identifier the cursor splits counts whole (`get_te|xt_stderr()` needs `get_text_stderr`,
/// not the tail `xt_stderr`): the line's identifiers are what the context must hold, and a
/// tail that happens to name something else is not one of them.
pub fn needed(
    t: &Task,
    defined: &HashMap<String, HashSet<String>>,
    budget: PromptBudget,
    counter: &dyn TokenCounter,
) -> Vec<String> {
    let (prefix, suffix) = t.text.split_at(t.cursor);
    let (kept, _) = copilot_fim::budget::keep_tail(prefix, budget.prefix_tokens, counter);
    let (head, _) = copilot_fim::budget::keep_head(suffix, budget.suffix_tokens, counter);
    let window: HashSet<&str> = idents(kept).union(&idents(head)).copied().collect();
    let (start, line) = cursor_line(t);
    let typed = t.cursor - start;
    let target: HashSet<&str> = copilot_context::tokens::identifiers(&line)
        .filter(|(at, s)| at + s.len() > typed)
        .map(|(_, s)| s)
        .filter(|s| s.chars().count() >= 2 && !copilot_context::tokens::is_stop_word(s))
        .collect();
    let mut out: Vec<String> = target
        .into_iter()
        .filter(|id| !window.contains(id))
        .filter(|id| {
            defined
                .get(*id)
                .is_some_and(|files| files.iter().any(|f| *f != t.rel))
        })
        .map(str::to_string)
        .collect();
    out.sort_unstable();
    out
}

/// Measure recall for every source alone and all together.
pub fn cross_file_recall(
    g: &mut Gatherer,
    tasks: &[Task],
    defined: &HashMap<String, HashSet<String>>,
    settings: &ContextSettings,
    counter: &dyn TokenCounter,
) -> RecallReport {
    let configs = [
        ("open", Sources::only(Source::Open)),
        ("imports", Sources::only(Source::Imports)),
        ("index", Sources::only(Source::Index)),
        ("all", Sources::ALL),
    ];
    let mut rows: Vec<Recall> = configs
        .iter()
        .map(|(name, _)| Recall {
            source: name.to_string(),
            lines_found: 0,
            recall: 0.0,
            identifiers_found: 0,
            identifier_recall: 0.0,
            mean_tokens: 0.0,
            code_lines_found: 0,
            code_recall: 0.0,
        })
        .collect();
    let (mut needing, mut pairs, mut in_code_lines) = (0, 0, 0);
    for t in tasks {
        let need = needed(t, defined, g.budget, counter);
        if need.is_empty() {
            continue;
        }
        needing += 1;
        pairs += need.len();
        let code = t.rel.ends_with(".py") && {
            let whole = format!("{}{}{}", &t.text[..t.cursor], t.target, &t.text[t.cursor..]);
            let prose = copilot_context::imports::prose_ranges(&whole);
            need.iter().all(|id| in_code(t, &prose, id))
        };
        in_code_lines += usize::from(code);
        // The single sources that found the whole line: a line one of them finds and `all`
        // misses was lost to the budget or to the combiner's order.
        let mut found_alone: Vec<&str> = Vec::new();
        for (row, (name, sources)) in rows.iter_mut().zip(configs) {
            let doc = g.repo.join(&t.rel);
            let snippets = g.snippets(&doc, &t.text, t.cursor, sources, settings, counter);
            let have: HashSet<&str> = snippets.iter().flat_map(|s| idents(&s.text)).collect();
            let found = need.iter().filter(|id| have.contains(id.as_str())).count();
            if sources == Sources::ALL && found < need.len() {
                let missed: Vec<&String> = need
                    .iter()
                    .filter(|id| !have.contains(id.as_str()))
                    .collect();
                tracing::debug!(
                    file = %t.rel,
                    line = t.target.trim(),
                    ?missed,
                    ?found_alone,
                    from = ?snippets.iter().map(|s| (s.source, &s.path)).collect::<Vec<_>>(),
                    "context missed"
                );
            }
            if sources != Sources::ALL && found == need.len() {
                found_alone.push(name);
            }
            row.identifiers_found += found;
            row.lines_found += usize::from(found == need.len());
            row.code_lines_found += usize::from(code && found == need.len());
            row.mean_tokens += snippets.iter().map(|s| s.tokens).sum::<usize>() as f64;
        }
    }
    g.finish();
    for r in &mut rows {
        r.recall = r.lines_found as f64 / needing.max(1) as f64;
        r.identifier_recall = r.identifiers_found as f64 / pairs.max(1) as f64;
        r.mean_tokens /= needing.max(1) as f64;
        r.code_recall = r.code_lines_found as f64 / in_code_lines.max(1) as f64;
    }
    RecallReport {
        sampled: tasks.len(),
        needing,
        needed_identifiers: pairs,
        needing_in_code: in_code_lines,
        rows,
    }
}

/// The recall report as plain-text lines.
pub fn recall_table(r: &RecallReport) -> String {
    let mut s = format!(
        "cross-file identifier recall: {} of {} sampled lines need an identifier defined in another file ({} identifiers)\n",
        r.needing, r.sampled, r.needed_identifiers
    );
    s += &format!(
        "{} of them need it in code, not in a comment or a string (\"code\" column)\n",
        r.needing_in_code
    );
    s += &format!(
        "{:<8}  {:>12}  {:>17}  {:>11}  {:>15}\n",
        "context", "line recall", "identifier recall", "code recall", "tokens per line"
    );
    for x in &r.rows {
        s += &format!(
            "{:<8}  {:>12.3}  {:>17.3}  {:>11.3}  {:>15.0}\n",
            x.source, x.recall, x.identifier_recall, x.code_recall, x.mean_tokens
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use copilot_context::Workspace;
    use copilot_fim::CharCounter;

    fn task(rel: &str, text: &str, target: &str) -> Task {
        let cursor = text.find("$0").unwrap();
        Task {
            rel: rel.into(),
            line: 1,
            text: text.replace("$0", ""),
            cursor,
            typed: String::new(),
            target: target.into(),
            snippets: Vec::new(),
        }
    }

    #[test]
    fn needed_identifiers_are_missing_from_the_window_and_defined_elsewhere() {
        let files = vec![
            SourceFile {
                rel: "pkg/util.py".into(),
                text: "def helper_fn(x):\n    return x\nclass Thing:\n    def method_x(self):\n        pass\n".into(),
            },
            SourceFile {
                rel: "app.py".into(),
                text: "def local_fn():\n    pass\n".into(),
            },
        ];
        let defined = definitions(&files);
        let t = task(
            "app.py",
            "def local_fn():\n    pass\nv = 1\n$0\n",
            "y = helper_fn(local_fn(v)) + Thing().method_x() + len(v)",
        );
        let budget = PromptBudget::default();
        // local_fn is defined here, v and len nowhere else, `Thing` etc. elsewhere.
        assert_eq!(
            needed(&t, &defined, budget, &CharCounter),
            ["Thing", "helper_fn", "method_x"]
        );
        // The identifier the cursor splits counts whole: `get_text_stderr` is needed, the
        // tail `stderr` (another file's name too) is not.
        let mut files = files;
        files[0]
            .text
            .push_str("def get_text_stderr():\n    pass\ndef stderr():\n    pass\n");
        let defined = definitions(&files);
        let t = task("app.py", "x = get_text_$0\n", "stderr()");
        assert_eq!(
            needed(&t, &defined, budget, &CharCounter),
            ["get_text_stderr"]
        );
        let t = task("app.py", "get_text_stderr()\nx = stde$0\n", "rr()");
        assert_eq!(needed(&t, &defined, budget, &CharCounter), ["stderr"]);
        // Already in the window: not needed.
        let t = task(
            "app.py",
            "from pkg.util import helper_fn\n$0\n",
            "helper_fn(1)",
        );
        assert!(needed(&t, &defined, budget, &CharCounter).is_empty());
    }

    #[test]
    fn recall_counts_lines_whose_context_holds_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        std::fs::create_dir_all(repo.join("pkg")).unwrap();
        let util = "def helper_fn(x):\n    \"\"\"Help.\"\"\"\n    return x\n\n\n\
                    def other_fn(y):\n    \"\"\"Other.\"\"\"\n    return y\n";
        std::fs::write(repo.join("pkg/util.py"), util).unwrap();
        std::fs::write(
            repo.join("pkg/app.py"),
            "import pkg.util as u\n\nu.other_fn(2)\nu.helper_fn(1)\n",
        )
        .unwrap();
        let files = vec![SourceFile {
            rel: "pkg/util.py".into(),
            text: util.into(),
        }];
        let defined = definitions(&files);
        let ws = Workspace::with_virtualenv(repo.to_path_buf(), ContextSettings::default(), None);
        ws.build_index(&|_| {}, &std::sync::atomic::AtomicBool::new(false))
            .unwrap();
        let budget = PromptBudget::default();
        let mut g = Gatherer::new(&ws, repo, budget);
        let tasks = vec![
            // The module is used nearby: util.py's text matches the lines around the cursor.
            task(
                "pkg/app.py",
                "import pkg.util as u\n\nu.other_fn(2)\nu.$0\n",
                "helper_fn(1)",
            ),
            // Nothing near the cursor but the import itself.
            task(
                "pkg/app.py",
                "import pkg.util as u\n\n$0\n",
                "u.helper_fn(1)",
            ),
            // The name in a docstring: needed, but prose, not code.
            task(
                "pkg/app.py",
                "import pkg.util as u\n\ndef f():\n    \"\"\"Calls $0\n    \"\"\"\n",
                "helper_fn twice.",
            ),
        ];
        let r = cross_file_recall(
            &mut g,
            &tasks,
            &defined,
            &ContextSettings::default(),
            &CharCounter,
        );
        assert_eq!((r.sampled, r.needing, r.needed_identifiers), (3, 3, 3));
        assert_eq!(r.needing_in_code, 2);
        let by: Vec<(&str, usize, usize)> = r
            .rows
            .iter()
            .map(|x| (x.source.as_str(), x.lines_found, x.code_lines_found))
            .collect();
        // Used nearby, the module's text shares `other_fn` with the cursor's lines: the open
        // sibling's window and the index both bring `helper_fn`; imports lists the module's
        // namespace after the bare `u.`. With nothing but the import near, only the index
        // knows util.py, by its file name's term `util`; with every source on it must still
        // answer though util.py is also open. The docstring line counts in line recall
        // only.
        assert_eq!(
            by,
            [
                ("open", 1, 1),
                ("imports", 1, 1),
                ("index", 3, 2),
                ("all", 3, 2)
            ]
        );
        assert_eq!(r.rows[3].code_recall, 1.0);
        assert!(recall_table(&r).contains("3 of 3 sampled lines"));
    }
}
