//! The gatherers and the workspace on small fixture workspaces written into temp dirs:
//! what each source finds, what it must not, stability while typing, and bad input.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use copilot_context::{
    index, ContextSettings, ContextSnippet, FileChange, PromptBudget, Source, Sources, Workspace,
};
use copilot_fim::CharCounter;

fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// A cursor-marked document: the text without `$0`, and the cursor's offset.
fn marked(text: &str) -> (String, usize) {
    let at = text.find("$0").expect("a $0 cursor");
    (text.replace("$0", ""), at)
}

fn settings(sources: Sources) -> ContextSettings {
    ContextSettings {
        max_tokens: 4000,
        ..ContextSettings::default().with_sources(sources)
    }
}

const BIG: PromptBudget = PromptBudget {
    prefix_tokens: 16_000,
    suffix_tokens: 2_000,
};

fn ask(ws: &Workspace, doc: &Path, marked_text: &str) -> Vec<ContextSnippet> {
    let (text, cursor) = marked(marked_text);
    ws.snippets(doc, &text, cursor, BIG, &CharCounter)
}

const MOD: &str = "\"\"\"Helpers.\"\"\"\n\n\
def fetch_user(user_id, *, timeout=3.0):\n    \"\"\"Fetch one user by id.\n\n    Raises KeyError when missing.\n    \"\"\"\n    secret_body_line = user_id * 2\n    return secret_body_line\n\n\
class Session:\n    \"\"\"A connection.\"\"\"\n    def close(self):\n        \"\"\"Close it.\"\"\"\n        pass\n";

fn package(root: &Path) {
    write(root, "pkg/__init__.py", "from .mod import fetch_user\n");
    write(root, "pkg/mod.py", MOD);
    write(
        root,
        "pkg/unrelated.py",
        "def render_banner(text):\n    \"\"\"Draw a banner.\"\"\"\n    return text.upper()\n",
    );
}

/// The imports source's (path, text) pairs for a cursor-marked document at `rel`.
fn listed(ws: &Workspace, root: &Path, rel: &str, text: &str) -> Vec<(String, String)> {
    import_texts(&ask(ws, &root.join(rel), text))
        .into_iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

fn import_texts(got: &[ContextSnippet]) -> Vec<(&str, &str)> {
    got.iter()
        .filter(|s| s.source == Source::Imports)
        .map(|s| (s.path.as_str(), s.text.as_str()))
        .collect()
}

#[test]
fn imported_signatures_and_docstrings_through_every_import_form() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    package(root);
    let ws = Workspace::with_virtualenv(
        root.to_path_buf(),
        settings(Sources::only(Source::Imports)),
        None,
    );
    let want = "def fetch_user(user_id, *, timeout=3.0):\n    \"\"\"Fetch one user by id.\n\n    Raises KeyError when missing.\n    \"\"\"\n    ...";
    let cases = [
        (
            "app.py",
            "from pkg.mod import fetch_user\n\nu = fetch_user($0",
        ),
        (
            "pkg/sub.py",
            "from .mod import fetch_user\n\nu = fetch_user($0",
        ),
        ("app2.py", "import pkg.mod as m\n\nu = m.fetch_user($0"),
        ("app3.py", "import pkg.mod\n\nu = pkg.mod.fetch_user($0"),
        // Re-exported by the package's __init__.py.
        ("app4.py", "from pkg import fetch_user\n\nu = fetch_user($0"),
        ("app5.py", "from pkg import mod\n\nu = mod.fetch_user($0"),
    ];
    for (rel, text) in cases {
        let got = ask(&ws, &root.join(rel), text);
        let texts = import_texts(&got);
        assert!(texts.contains(&("pkg/mod.py", want)), "{rel}: {got:#?}");
        // Beside it, at most the namespace of the module used near the cursor (`pkg.`,
        // `m.`): never a body, never the unrelated module.
        assert!(
            texts
                .iter()
                .all(|(p, t)| (*p == "pkg/mod.py" || *p == "pkg/__init__.py")
                    && !t.contains("secret_body_line")
                    && !t.contains("render_banner")),
            "{rel}: {got:#?}"
        );
    }
    // A class shows its methods' signatures; an unrelated file is never shown.
    let got = ask(
        &ws,
        &root.join("app6.py"),
        "from pkg.mod import Session\nfrom pkg import unrelated\n\ns = Session()\ns.close($0",
    );
    // The members `s` reaches, compact, stand for the class.
    let texts = import_texts(&got);
    assert_eq!(
        texts,
        vec![("pkg/mod.py", "class Session:\n    members: close")],
        "{got:#?}"
    );
    assert!(got.iter().all(|s| !s.path.contains("unrelated")));
    // Named without a variable, the class shows its methods' signatures and docstring.
    let got = ask(
        &ws,
        &root.join("app7.py"),
        "from pkg.mod import Session\n\nclass Mine(Session$0",
    );
    let texts = import_texts(&got);
    assert_eq!(texts.len(), 1, "{got:#?}");
    assert!(texts[0]
        .1
        .starts_with("class Session:\n    \"\"\"A connection.\"\"\"\n    def close(self):"));
}

#[test]
fn the_namespace_the_cursor_types_a_member_of_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    package(root);
    let ws = Workspace::with_virtualenv(
        root.to_path_buf(),
        settings(Sources::only(Source::Imports)),
        None,
    );
    let first = |rel: &str, text: &str| {
        let got = ask(&ws, &root.join(rel), text);
        import_texts(&got)
            .first()
            .map(|(p, t)| (p.to_string(), t.to_string()))
    };
    // `from M import |`: what M offers, filtered by what is typed.
    assert_eq!(
        first("a.py", "from pkg.mod import $0"),
        Some((
            "pkg/mod.py".into(),
            "def fetch_user(user_id, *, timeout=3.0):\nclass Session:".into()
        ))
    );
    assert_eq!(
        first("b.py", "from pkg.mod import (\n    fetch_user,\n    Se$0"),
        Some(("pkg/mod.py".into(), "class Session:".into()))
    );
    // `m.|` where m is an imported module, and a package's re-exports.
    assert_eq!(
        first("c.py", "import pkg.mod as m\n\nx = m.Se$0"),
        Some(("pkg/mod.py".into(), "class Session:".into()))
    );
    assert_eq!(
        first("d.py", "import pkg\n\nx = pkg.$0"),
        Some((
            "pkg/__init__.py".into(),
            "from .mod import fetch_user".into()
        ))
    );
    // Nothing that starts with what is typed, or not a module: no listing.
    assert_eq!(first("e.py", "from pkg.mod import Zz$0"), None);
    assert_eq!(first("f.py", "import pkg.mod as m\n\nx = q.Se$0"), None);
}

#[test]
fn members_reached_through_variables_and_the_imports_above_the_window_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "pkg/__init__.py", "");
    write(
        root,
        "pkg/base.py",
        "class Base:\n    def connect(self, url):\n        pass\n    def retry_later(self):\n        pass\n",
    );
    write(
        root,
        "pkg/mod.py",
        "from .base import Base\n\nclass Session(Base):\n    def close(self):\n        pass\n    def _secret(self):\n        pass\n",
    );
    write(
        root,
        "pkg/unrelated.py",
        "class Other:\n    def render_banner(self):\n        pass\n",
    );
    // How the tests reach the `client` fixture's members.
    write(
        root,
        "tests/test_a.py",
        "def test_a(client):\n    client.fetch_all()\n    client.fetch_all()\n    client.login('u')\n",
    );
    let ws = Workspace::with_virtualenv(
        root.to_path_buf(),
        settings(Sources::only(Source::Imports)),
        None,
    );
    ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    let listing = |rel: &str, text: &str| listed(&ws, root, rel, text);
    let session = |members: &str| {
        (
            "pkg/mod.py".to_string(),
            format!("class Session(Base):\n    members: {members}"),
        )
    };
    let all = "close, connect, retry_later";
    let cases = [
        // `s = Session()`: the class's members, then its base's (another file's), private
        // left out.
        ("app.py", "from pkg.mod import Session\n\ns = Session()\ns.$0", all),
        // Filtered by what is typed, through an annotation.
        (
            "app2.py",
            "from pkg import mod\n\ndef f(s: mod.Session):\n    s.re$0",
            "retry_later",
        ),
        // `self.` in a class whose base is imported: the base's members.
        (
            "app3.py",
            "from pkg.mod import Session\n\nclass Mine(Session):\n    def go(self):\n        self.$0",
            all,
        ),
        // A variable just bound to a class, before any `a.` is written: its members already.
        (
            "app5.py",
            "import pkg.mod\n\ndef test():\n    a = pkg.mod.Session()\n    assert $0",
            all,
        ),
        // An instance of a class this file defines on an imported base: the base's members.
        (
            "app6.py",
            "from pkg import mod\n\ndef test():\n    class Mine(mod.Session):\n        pass\n\n    m = Mine()\n    m.con$0",
            "connect",
        ),
    ];
    for (rel, text, members) in cases {
        let got = listing(rel, text);
        assert!(got.contains(&session(members)), "{rel}: {got:#?}");
        assert!(got.iter().all(|(p, _)| !p.contains("unrelated")), "{rel}");
    }
    // An unbound name (a fixture): what the rest of the workspace calls on it, most used first.
    let got = listing(
        "tests/test_b.py",
        "import os\n\ndef test_b(client):\n    client.$0",
    );
    assert!(
        got.contains(&("tests/test_a.py".into(), "client: fetch_all, login".into())),
        "{got:#?}"
    );
    // The file's own workspace imports that the window no longer shows (not `os`).
    let body: String = (0..100).map(|i| format!("x{i} = {i}\n")).collect();
    let text = format!("import os\nfrom pkg.mod import Session\n{body}y = $0");
    let (plain, cursor) = marked(&text);
    let small = PromptBudget {
        prefix_tokens: 400,
        suffix_tokens: 10,
    };
    let doc = root.join("app4.py");
    let got = ws.snippets(&doc, &plain, cursor, small, &CharCounter);
    assert!(
        import_texts(&got).contains(&("app4.py", "from pkg.mod import Session")),
        "{got:#?}"
    );
    // With the whole file in the window, nothing is repeated.
    let got = ws.snippets(&doc, &plain, cursor, BIG, &CharCounter);
    assert!(
        import_texts(&got).iter().all(|(p, _)| *p != "app4.py"),
        "{got:#?}"
    );
}

#[test]
fn an_import_line_lists_the_unimported_names_and_instances_show_their_class() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "pkg/__init__.py", "");
    write(
        root,
        "pkg/errors.py",
        "class UsageError(Exception):\n    pass\n\ndef fail(msg):\n    raise UsageError(msg)\n",
    );
    write(
        root,
        "pkg/app.py",
        "class App:\n    def route(self, rule):\n        pass\n    def run(self):\n        pass\n\n\
         app = App()\ncurrent: \"App\" = make_proxy()\n",
    );
    write(root, "other/errors.py", "def fail():\n    pass\n");
    // `@app.route` counts as a use of `app`'s member: how the tests reach the fixture.
    write(
        root,
        "tests/test_a.py",
        "def test_a(app):\n    @app.route('/')\n    def index(): pass\n    app.teardown(f)\n",
    );
    let ws = Workspace::with_virtualenv(
        root.to_path_buf(),
        settings(Sources::only(Source::Imports)),
        None,
    );
    ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    let listing = |rel: &str, text: &str| listed(&ws, root, rel, text);
    // An import line being typed: what the file uses but has not imported, spelled as the
    // file would import it; names it binds itself (`helper`, the parameter `msg`) and the
    // ones it imports are not listed; of two definers, the one nearest the file.
    let body = "\ndef helper(msg):\n    fail(msg)\n    raise UsageError(msg)\n\nhelper(App)\n";
    let got = listing(
        "pkg/cli.py",
        &format!("import os\nfrom .app import App\nfro$0\n{body}"),
    );
    assert!(
        got.contains(&(
            "pkg/cli.py".into(),
            "from .errors import fail, UsageError".into()
        )),
        "{got:#?}"
    );
    let got = listing("tests/test_cli.py", &format!("imp$0\n{body}"));
    assert!(
        got.iter().any(
            |(_, t)| t.contains("from pkg.errors import fail, UsageError")
                && t.contains("from pkg.app import App")
        ),
        "{got:#?}"
    );
    // A giant file is read for its names only so far: a use past the first megabyte is
    // not looked up.
    let filler: String = "x = 1\n".repeat(200_000);
    let got = listing("pkg/big.py", &format!("fro$0\n{filler}fail(1)\n"));
    assert!(got.iter().all(|(_, t)| !t.contains("fail")), "{got:#?}");
    let got = listing("pkg/big2.py", &format!("fro$0\nfail(1)\n{filler}"));
    assert!(
        got.iter()
            .any(|(_, t)| t.contains("from .errors import fail")),
        "{got:#?}"
    );
    // Not on an import line: no such listing.
    let got = listing("pkg/cli2.py", &format!("x = fa$0\n{body}"));
    assert!(got.iter().all(|(_, t)| !t.contains("import")), "{got:#?}");
    // An imported instance (`app = App()`, `current: "App"` where they are defined): its
    // class's members.
    for name in ["app", "current"] {
        let got = listing(
            "main.py",
            &format!("from pkg.app import {name}\n\n{name}.r$0"),
        );
        assert!(
            got.contains(&(
                "pkg/app.py".into(),
                "class App:\n    members: route, run".into()
            )),
            "{name}: {got:#?}"
        );
    }
    // A method being defined in a subclass: the base's members it may override.
    let got = listing(
        "sub.py",
        "from pkg.app import App\n\nclass Mine(App):\n    def ru$0",
    );
    assert!(
        got.contains(&("pkg/app.py".into(), "class App:\n    members: run".into())),
        "{got:#?}"
    );
    // A fixture reached through a decorator, filtered by what is typed before the most
    // used are kept.
    let got = listing("tests/test_b.py", "def test_b(app):\n    app.te$0");
    assert!(
        got.contains(&("tests/test_a.py".into(), "app: teardown".into())),
        "{got:#?}"
    );
    // `a.b.` where `a` is no module: what the workspace reaches through `b`.
    let got = listing("tests/test_d.py", "def test_d(x):\n    x.app.r$0");
    assert!(
        got.contains(&("tests/test_a.py".into(), "app: route".into())),
        "{got:#?}"
    );
    let got = listing("tests/test_c.py", "def test_c(app):\n    @app.$0");
    assert!(
        got.contains(&("tests/test_a.py".into(), "app: route, teardown".into())),
        "{got:#?}"
    );
}

#[test]
fn src_layouts_and_the_virtualenv_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proj");
    write(
        &root,
        "src/lib_a/core.py",
        "def run_job(name):\n    \"\"\"Run.\"\"\"\n    return name\n",
    );
    let venv = dir.path().join("venv");
    write(
        &venv,
        "lib/python3.12/site-packages/extlib/__init__.py",
        "def remote_call(url: str) -> bytes:\n    \"\"\"Call a URL.\"\"\"\n    return b''\n",
    );
    let ws = Workspace::with_virtualenv(
        root.clone(),
        settings(Sources::only(Source::Imports)),
        Some(&venv),
    );
    let got = ask(
        &ws,
        &root.join("tests/test_core.py"),
        "from lib_a.core import run_job\nimport extlib\n\nrun_job(extlib.remote_call($0",
    );
    let texts = import_texts(&got);
    // The namespace of the module used at the cursor, then the definitions.
    assert_eq!(texts.len(), 3, "{got:#?}");
    assert_eq!(
        texts[0],
        ("extlib/__init__.py", "def remote_call(url: str) -> bytes:")
    );
    assert_eq!(
        texts[1].0, "extlib/__init__.py",
        "nearest the cursor first; relative to site-packages"
    );
    assert!(texts[1]
        .1
        .starts_with("def remote_call(url: str) -> bytes:\n    \"\"\"Call a URL."));
    assert_eq!(texts[2].0, "src/lib_a/core.py", "relative to the workspace");
}

#[test]
fn open_documents_are_gathered_and_edits_and_closes_change_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ws = Workspace::with_virtualenv(
        root.to_path_buf(),
        settings(Sources::only(Source::Open)),
        None,
    );
    let other = root.join("billing.py");
    ws.did_open(
        &other,
        "def compute_invoice_total(order_lines, tax_rate):\n    subtotal = sum(l.price for l in order_lines)\n    return subtotal * (1 + tax_rate)\n",
    );
    let me = root.join("app.py");
    let text = "order_lines = load()\ntax_rate = 0.2\ntotal = compute_invoice_total(order_lines, tax_rate$0";
    let got = ask(&ws, &me, text);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (got[0].source, got[0].path.as_str()),
        (Source::Open, "billing.py")
    );
    assert!(got[0].text.contains("def compute_invoice_total"));
    // An edit that removes what matched: not gathered any more.
    ws.did_change(
        &other,
        "def render_banner(text):\n    return text.upper()\n",
        Some(0),
    );
    assert!(ask(&ws, &me, text).is_empty());
    // Reopened, then closed: gone.
    ws.did_change(
        &other,
        "def compute_invoice_total(order_lines, tax_rate):\n    pass\n",
        Some(0),
    );
    assert_eq!(ask(&ws, &me, text).len(), 1);
    ws.did_close(&other);
    assert!(ask(&ws, &me, text).is_empty());
}

#[test]
fn the_index_honours_gitignore_and_updates_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, ".gitignore", "secret/\nignored.py\n");
    write(
        root,
        "lib/shipping.py",
        "def estimate_shipping_cost(parcel_weight, zone):\n    return parcel_weight * zone\n",
    );
    write(
        root,
        "secret/keys.py",
        "def estimate_shipping_cost_secret(parcel_weight):\n    return 1\n",
    );
    write(
        root,
        "ignored.py",
        "def estimate_shipping_cost_ignored(parcel_weight):\n    return 2\n",
    );
    write(root, "notes.txt", "estimate shipping cost parcel weight\n");
    let ws = Workspace::with_virtualenv(
        root.to_path_buf(),
        settings(Sources::only(Source::Index)),
        None,
    );
    let seen = std::sync::Mutex::new(Vec::new());
    let stats = ws
        .build_index(&|p| seen.lock().unwrap().push(p), &AtomicBool::new(false))
        .unwrap();
    assert_eq!(stats.files, 1, "{stats:?}");
    assert_eq!(
        seen.lock().unwrap().last().map(|p| (p.done, p.total)),
        Some((1, 1))
    );
    let me = root.join("app.py");
    let text = "w = parcel_weight\ncost = estimate_shipping_cost(w, zone$0)";
    let got = ask(&ws, &me, text);
    let paths: Vec<&str> = got.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["lib/shipping.py"]);
    // A new file, reported by the watcher, is found; a deleted one is forgotten.
    let extra = write(
        root,
        "lib/zones.py",
        "ZONE_TABLE = {'zone': 3}\ndef zone_for(parcel_weight):\n    return 1\n",
    );
    ws.files_changed(&[(extra.clone(), FileChange::Created)]);
    let got = ask(&ws, &me, "z = zone_for(parcel_weight$0)");
    assert!(got.iter().any(|s| s.path == "lib/zones.py"), "{got:#?}");
    std::fs::remove_file(&extra).unwrap();
    ws.files_changed(&[(extra, FileChange::Deleted)]);
    assert!(ask(&ws, &me, "z = zone_for(parcel_weight$0)")
        .iter()
        .all(|s| s.path != "lib/zones.py"));
    // A gitignored file reported by the watcher is still never indexed... by the walk; the
    // watcher only re-indexes files the walk would take.
    assert!(!ws.reindex(&root.join("notes.txt")));
    // A save re-indexes the file: its new text is what the index shows.
    let ship = root.join("lib/shipping.py");
    std::fs::write(
        &ship,
        "def estimate_shipping_cost(parcel_weight, zone, express):\n    return 0\n",
    )
    .unwrap();
    ws.did_save(&ship);
    let got = ask(&ws, &me, text);
    assert!(got.iter().any(|s| s.text.contains("express")), "{got:#?}");
}

#[test]
fn the_choice_is_stable_while_typing_and_changes_with_the_scope() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    package(root);
    write(
        root,
        "lib/orders.py",
        "def place_order(cart, customer):\n    return cart\n",
    );
    write(
        root,
        "lib/geo.py",
        "def distance_between(origin, target):\n    return 0\n",
    );
    // A budget for two or three snippets, so that what is chosen depends on the cursor.
    let ws = Workspace::with_virtualenv(
        root.to_path_buf(),
        ContextSettings {
            max_tokens: 250,
            ..Default::default()
        },
        None,
    );
    ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    ws.did_open(
        &root.join("lib/geo.py"),
        "def distance_between(origin, target):\n    return 0\n",
    );
    let me = root.join("app.py");
    let head = "from pkg.mod import fetch_user\n\ndef first(cart, customer):\n    order = place_order(cart, customer)\n    user = fetch_user(";
    let tail = "\n\ndef second(origin, target):\n    return distance_between(origin, target)\n";
    let mut typed = String::new();
    let mut results = Vec::new();
    for c in "user_id, timeout=1".chars() {
        typed.push(c);
        let text = format!("{head}{typed}{tail}");
        let cursor = head.len() + typed.len();
        results.push(ws.snippets(&me, &text, cursor, BIG, &CharCounter));
    }
    assert_eq!(results[0][0].source, Source::Imports, "{:#?}", results[0]);
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "same snippets, same order at every key"
    );
    // A new line in the same definition that uses nothing new keeps the choice too.
    let text = format!("{head}user_id)\n    x = 1\n{tail}");
    let cursor = text.find("x = 1").unwrap() + 5;
    let again = ws.snippets(&me, &text, cursor, BIG, &CharCounter);
    assert_eq!(again, results[0]);
    // Another definition asks for other code: recomputed.
    let text =
        format!("from pkg.mod import fetch_user\n\ndef first(cart, customer):\n    pass{tail}");
    let cursor = text.len() - 1;
    let elsewhere = ws.snippets(&me, &text, cursor, BIG, &CharCounter);
    assert_ne!(elsewhere, results[0]);
    assert!(elsewhere
        .iter()
        .any(|s| s.text.contains("def distance_between")));
    // Another file's change counts: the choice is recomputed with its new text.
    ws.did_change(
        &root.join("lib/geo.py"),
        "def distance_between(origin, target, unit):\n    return 0\n",
        Some(0),
    );
    let changed = ws.snippets(&me, &text, cursor, BIG, &CharCounter);
    assert!(
        changed.iter().any(|s| s.text.contains("unit")),
        "{changed:#?}"
    );
}

#[test]
fn snippets_fit_the_budget_and_never_repeat_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..30 {
        write(
            root,
            &format!("m{i}.py"),
            &format!("def handle_request_{i}(request, response):\n    return request.body + response.body\n"),
        );
    }
    let ws = Workspace::with_virtualenv(
        root.to_path_buf(),
        ContextSettings {
            max_tokens: 300,
            ..Default::default()
        },
        None,
    );
    ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    let me = root.join("m0.py");
    let text =
        std::fs::read_to_string(&me).unwrap() + "\nx = handle_request_3(request, response)\n";
    let got = ws.snippets(&me, &text, text.len(), BIG, &CharCounter);
    let total: usize = got.iter().map(|s| s.tokens).sum();
    assert!(!got.is_empty() && total <= 300, "{total}");
    assert!(
        got.iter().all(|s| s.path != "m0.py"),
        "the current file's window is not repeated"
    );
    // A quarter of a small prefix budget caps it further.
    let small = PromptBudget {
        prefix_tokens: 400,
        suffix_tokens: 100,
    };
    let got = ws.snippets(&me, &text, text.len(), small, &CharCounter);
    assert!(got.iter().map(|s| s.tokens).sum::<usize>() <= 100);
}

// ------------------------------------------------------------------------------------
// Bad input: completions keep working, nothing panics, one log line each.

#[test]
fn a_syntax_error_in_an_imported_file_keeps_what_parses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let broken = write(
        root,
        "broken.py",
        "def good_one(a):\n    \"\"\"Fine.\"\"\"\n    return a\n\ndef bad(:\n    pass\n",
    );
    let ws = Workspace::with_virtualenv(root.to_path_buf(), settings(Sources::ALL), None);
    let got = ask(
        &ws,
        &root.join("app.py"),
        "from broken import good_one\n\ngood_one($0",
    );
    assert!(
        got.iter().any(|s| s.text.starts_with("def good_one(a):")),
        "{got:#?}"
    );
    assert!(ws
        .said()
        .said_prefix(&format!("syntax:{}:", broken.display())));
}

#[test]
fn an_import_cycle_is_followed_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "a.py", "from b import thing\n");
    write(root, "b.py", "from a import thing\n");
    let ws = Workspace::with_virtualenv(root.to_path_buf(), settings(Sources::ALL), None);
    let got = ask(&ws, &root.join("app.py"), "from a import thing\n\nthing($0");
    assert!(got.iter().all(|s| s.source != Source::Imports));
    assert!(ws
        .said()
        .said(&format!("cycle:{}:thing", root.join("a.py").display())));
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_is_not_walked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "pkg/real.py", "def real_function():\n    pass\n");
    std::os::unix::fs::symlink(root, root.join("pkg/loop")).unwrap();
    std::os::unix::fs::symlink(root.join("pkg/real.py"), root.join("pkg/alias.py")).unwrap();
    let ws = Workspace::with_virtualenv(root.to_path_buf(), settings(Sources::ALL), None);
    let stats = ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(stats.files, 1);
}

#[test]
fn huge_binary_and_vanished_files_are_skipped_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "ok.py", "def fine_function():\n    pass\n");
    let huge = root.join("huge.py");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(50 << 20).unwrap();
    std::fs::write(root.join("blob.py"), [0u8, 159, 146, 150, 0, 1, 2, 255]).unwrap();
    let ws = Workspace::with_virtualenv(root.to_path_buf(), settings(Sources::ALL), None);
    let stats = ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(stats.files, 1, "{stats:?}");
    assert_eq!(stats.skipped.get(&index::Skip::TooLarge), Some(&1));
    assert_eq!(stats.skipped.get(&index::Skip::Binary), Some(&1));
    assert!(ws.said().said(&format!("skip:{}", huge.display())));
    // Importing them is harmless too.
    let got = ask(
        &ws,
        &root.join("app.py"),
        "from huge import x\nfrom blob import y\n\nx(y($0",
    );
    assert!(got.iter().all(|s| s.source != Source::Imports));
    // A file listed by the walk and gone when read.
    let gone = root.join("gone.py");
    assert_eq!(
        index::prepare_file(&gone, index::MAX_FILE_BYTES).unwrap_err(),
        index::Skip::Vanished
    );
    let said = copilot_context::SaidOnce::default();
    let (idx, stats) = index::index_files(
        vec![root.join("ok.py"), gone],
        &index::BuildOptions::default(),
        &|_| {},
        &AtomicBool::new(false),
        &said,
    )
    .unwrap();
    assert_eq!(
        (idx.files(), stats.skipped.get(&index::Skip::Vanished)),
        (1, Some(&1))
    );
}

#[test]
fn a_workspace_past_max_index_files_is_capped_and_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in 0..100 {
        let sub = root.join(format!("d{d:03}"));
        std::fs::create_dir(&sub).unwrap();
        for f in 0..1000 {
            std::fs::write(sub.join(format!("f{f:04}.py")), "x = 1\n").unwrap();
        }
    }
    let ws = Workspace::with_virtualenv(
        root.to_path_buf(),
        ContextSettings {
            max_index_files: 500,
            ..Default::default()
        },
        None,
    );
    let stats = ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    assert!(stats.capped);
    assert_eq!(stats.files, 500);
    assert!(ws.said().said(&format!("cap:{}", root.display())));
    // Built again: still capped, not said again (one line per workspace).
    let stats = ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    assert!(stats.capped);
    // Cancelled: the previous index stays.
    let err = ws.build_index(&|_| {}, &AtomicBool::new(true)).unwrap_err();
    assert!(matches!(err, copilot_context::ContextError::Cancelled));
    assert_eq!(ws.index_size().0, 500);
}
