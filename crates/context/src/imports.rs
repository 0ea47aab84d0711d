//! Definitions the cursor's code uses: the current file's imports are resolved to files of
//! the workspace (or of its virtualenv), and the imported names used near the cursor are
//! shown as **signatures and docstrings**, never whole bodies.
//!
//! A [`Language`] is the seam: it lists a file's imports, resolves a module to a file and
//! outlines a file's definitions. Python is the one written ([`Python`], with tree-sitter's
//! grammar); files of other languages get no import context (the open-files and index
//! sources still serve them). Resolution follows re-exports (`from .core import Command` in
//! a package's `__init__.py`) a few levels deep, stops at cycles, and reads each file once
//! per version (outlines are cached by a stamp of the file).
//!
//! Does I/O only through [`Files`] (the workspace decides what a file's text is: an open
//! document's or the disk's). Knows no LSP, no prompt format, no model.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::rank::{Candidate, Source};
use crate::tokens::identifiers;
use crate::SaidOnce;

/// A module named by an import: `level` leading dots (0 for absolute), then its dotted path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModuleRef {
    pub level: usize,
    pub path: Vec<String>,
}

/// One name an import binds in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// The name bound in the importing file (`m` for `import a.b as m`, `a` for `import a.b`,
    /// `f` for `from x import f`).
    pub local: String,
    pub module: ModuleRef,
    /// The imported name for `from M import name`; `None` when the module itself is bound.
    pub name: Option<String>,
    /// `import a.b` (no alias) binds `a` but names `a.b`: uses spell the whole path.
    pub dotted: bool,
    /// `from M import *`.
    pub wildcard: bool,
}

/// A definition as the model is shown it: signature and docstring, no body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    /// 0-based line of the definition's first line (decorators included).
    pub line: usize,
    /// Signature, docstring and (for a class) its public methods' signatures.
    pub summary: String,
    /// Names defined inside (a class's methods and attributes).
    pub members: Vec<String>,
}

/// What a file defines and imports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outline {
    pub definitions: Vec<Definition>,
    pub imports: Vec<Import>,
    /// The parser met syntax errors (the definitions outside them are still listed).
    pub syntax_errors: bool,
}

impl Outline {
    /// Every name the file defines: top-level definitions and their members.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.definitions.iter().flat_map(|d| {
            std::iter::once(d.name.as_str()).chain(d.members.iter().map(String::as_str))
        })
    }
}

/// A language's import resolver: the seam other languages plug into.
pub trait Language: Send + Sync {
    /// Whether this language handles `path` (by extension).
    fn handles(&self, path: &Path) -> bool;
    /// The imports of a whole file.
    fn imports(&self, text: &str) -> Vec<Import>;
    /// The definitions and imports of a file.
    fn outline(&self, text: &str) -> Outline;
    /// The file a module names, seen from the file `from`, searched in `roots`.
    fn resolve(&self, module: &ModuleRef, from: &Path, roots: &[PathBuf]) -> Option<PathBuf>;
    /// The submodule `name` of the module in `module_file`, if it is a package.
    fn submodule(&self, module_file: &Path, name: &str) -> Option<PathBuf>;
}

/// Where the gatherer reads files (the workspace: open documents first, then the disk).
pub trait Files {
    /// A value that changes whenever the file's text does; `None` if there is no such file.
    fn stamp(&self, path: &Path) -> Option<u64>;
    /// The file's text; `None` if it cannot be read as text (logged by the implementation).
    fn load(&self, path: &Path) -> Option<Arc<str>>;
}

// ---------------------------------------------------------------------------------------
// Python

/// Python imports and outlines through tree-sitter-python.
#[derive(Debug, Default)]
pub struct Python;

thread_local! {
    static PARSER: RefCell<Option<tree_sitter::Parser>> = const { RefCell::new(None) };
}

/// Parse Python text (one parser per thread, made on first use).
fn parse_python(text: &str) -> Option<tree_sitter::Tree> {
    PARSER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut p = tree_sitter::Parser::new();
            p.set_language(&tree_sitter_python::LANGUAGE.into())
                .expect("tree-sitter-python matches the tree-sitter version");
            *slot = Some(p);
        }
        slot.as_mut().and_then(|p| p.parse(text, None))
    })
}

fn node_text<'a>(n: tree_sitter::Node<'_>, src: &'a str) -> &'a str {
    src.get(n.start_byte()..n.end_byte()).unwrap_or("")
}

fn dotted(n: tree_sitter::Node<'_>, src: &str) -> Vec<String> {
    node_text(n, src)
        .split('.')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The import statements of `text`, cut out so that only they are parsed: lines that
/// start (after indentation) with `import ` or `from `, with their parenthesised or
/// backslash continuations, each dedented. Parsing a whole module for its imports costs
/// milliseconds per request; this costs microseconds, and tree-sitter still does the
/// parsing.
fn import_statements(text: &str) -> String {
    let mut out = String::new();
    let mut open = 0i32;
    let mut continued = false;
    for line in text.lines() {
        let t = line.trim_start();
        let starts = t.starts_with("import ") || t.starts_with("from ");
        if open > 0 || continued || starts {
            out.push_str(if open > 0 || continued { line } else { t });
            out.push('\n');
            for c in t.chars() {
                match c {
                    '(' => open += 1,
                    ')' => open -= 1,
                    '#' => break,
                    _ => {}
                }
            }
            open = open.clamp(0, 8);
            continued = t.trim_end().ends_with('\\');
        }
    }
    out
}

fn collect_imports(node: tree_sitter::Node<'_>, src: &str, out: &mut Vec<Import>) {
    let mut cursor = node.walk();
    match node.kind() {
        "import_statement" => {
            for name in node.children_by_field_name("name", &mut cursor) {
                match name.kind() {
                    "dotted_name" => {
                        let path = dotted(name, src);
                        if let Some(first) = path.first().cloned() {
                            out.push(Import {
                                local: first,
                                dotted: path.len() > 1,
                                module: ModuleRef { level: 0, path },
                                name: None,
                                wildcard: false,
                            });
                        }
                    }
                    "aliased_import" => {
                        let (Some(n), Some(a)) = (
                            name.child_by_field_name("name"),
                            name.child_by_field_name("alias"),
                        ) else {
                            continue;
                        };
                        out.push(Import {
                            local: node_text(a, src).to_string(),
                            module: ModuleRef {
                                level: 0,
                                path: dotted(n, src),
                            },
                            name: None,
                            dotted: false,
                            wildcard: false,
                        });
                    }
                    _ => {}
                }
            }
        }
        "import_from_statement" => {
            let Some(m) = node.child_by_field_name("module_name") else {
                return;
            };
            let module = match m.kind() {
                "relative_import" => {
                    let mut level = 0;
                    let mut path = Vec::new();
                    let mut c = m.walk();
                    for ch in m.named_children(&mut c) {
                        match ch.kind() {
                            "import_prefix" => level = node_text(ch, src).matches('.').count(),
                            "dotted_name" => path = dotted(ch, src),
                            _ => {}
                        }
                    }
                    ModuleRef { level, path }
                }
                _ => ModuleRef {
                    level: 0,
                    path: dotted(m, src),
                },
            };
            let mut any = false;
            for name in node.children_by_field_name("name", &mut cursor) {
                let (imported, local) = match name.kind() {
                    "dotted_name" => {
                        let t = node_text(name, src).trim().to_string();
                        (t.clone(), t)
                    }
                    "aliased_import" => {
                        let (Some(n), Some(a)) = (
                            name.child_by_field_name("name"),
                            name.child_by_field_name("alias"),
                        ) else {
                            continue;
                        };
                        (
                            node_text(n, src).trim().to_string(),
                            node_text(a, src).to_string(),
                        )
                    }
                    _ => continue,
                };
                any = true;
                out.push(Import {
                    local,
                    module: module.clone(),
                    name: Some(imported),
                    dotted: false,
                    wildcard: false,
                });
            }
            let mut c = node.walk();
            if !any
                && node
                    .named_children(&mut c)
                    .any(|n| n.kind() == "wildcard_import")
            {
                out.push(Import {
                    local: "*".into(),
                    module,
                    name: None,
                    dotted: false,
                    wildcard: true,
                });
            }
        }
        _ => {
            for child in node.named_children(&mut cursor) {
                collect_imports(child, src, out);
            }
        }
    }
}

/// Lines of a docstring kept in a summary.
const DOC_LINES: usize = 8;
/// Members of a class listed in its summary.
const CLASS_MEMBERS: usize = 16;
/// A module-level assignment is shown when its first line is at most this long.
const ASSIGNMENT_CHARS: usize = 160;

fn line_start(src: &str, byte: usize) -> usize {
    src[..byte.min(src.len())].rfind('\n').map_or(0, |i| i + 1)
}

/// The docstring of a block (its first statement, when a string), first lines only,
/// with its source indentation.
fn docstring(body: tree_sitter::Node<'_>, src: &str, max_lines: usize) -> Option<String> {
    let first = body.named_child(0)?;
    if first.kind() != "expression_statement" {
        return None;
    }
    let s = first.named_child(0)?;
    if s.kind() != "string" {
        return None;
    }
    let text = src.get(line_start(src, s.start_byte())..s.end_byte())?;
    let mut lines: Vec<&str> = text.lines().collect();
    if lines.len() > max_lines {
        lines.truncate(max_lines);
    }
    Some(lines.join("\n"))
}

/// `def f(a, b) -> int:` (decorators from `outer`), up to the body.
fn signature(outer: tree_sitter::Node<'_>, body: tree_sitter::Node<'_>, src: &str) -> String {
    let start = line_start(src, outer.start_byte());
    src.get(start..body.start_byte())
        .unwrap_or("")
        .trim_end()
        .to_string()
}

fn body_indent(body: tree_sitter::Node<'_>, src: &str) -> String {
    let ls = line_start(src, body.start_byte());
    src[ls..body.start_byte()]
        .chars()
        .take_while(|c| c.is_whitespace())
        .collect()
}

fn definition(
    outer: tree_sitter::Node<'_>,
    def: tree_sitter::Node<'_>,
    src: &str,
) -> Option<Definition> {
    let name = node_text(def.child_by_field_name("name")?, src).to_string();
    let body = def.child_by_field_name("body")?;
    let mut summary = signature(outer, body, src);
    let indent = body_indent(body, src);
    let doc = docstring(body, src, DOC_LINES);
    let mut members = Vec::new();
    if def.kind() == "class_definition" {
        if let Some(d) = &doc {
            summary.push('\n');
            summary.push_str(d);
        }
        let mut shown = 0;
        let mut c = body.walk();
        for stmt in body.named_children(&mut c) {
            let (m_outer, m_def) = match stmt.kind() {
                "function_definition" => (stmt, stmt),
                "decorated_definition" => match stmt.child_by_field_name("definition") {
                    Some(d) if d.kind() == "function_definition" => (stmt, d),
                    _ => continue,
                },
                "expression_statement" => {
                    if let Some(a) = stmt.named_child(0).filter(|a| a.kind() == "assignment") {
                        if let Some(l) = a.child_by_field_name("left") {
                            if l.kind() == "identifier" {
                                let n = node_text(l, src).to_string();
                                let line = first_line(src, stmt);
                                if !n.starts_with('_')
                                    && shown < CLASS_MEMBERS
                                    && line.len() <= ASSIGNMENT_CHARS
                                {
                                    summary.push('\n');
                                    summary.push_str(line);
                                    shown += 1;
                                }
                                members.push(n);
                            }
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            let (Some(n), Some(b)) = (
                m_def.child_by_field_name("name"),
                m_def.child_by_field_name("body"),
            ) else {
                continue;
            };
            let n = node_text(n, src).to_string();
            if (!n.starts_with('_') || n == "__init__" || n == "__call__") && shown < CLASS_MEMBERS
            {
                summary.push('\n');
                summary.push_str(&signature(m_outer, b, src));
                if let Some(d) = docstring(b, src, 1) {
                    summary.push('\n');
                    summary.push_str(&d);
                }
                shown += 1;
            }
            members.push(n);
        }
    } else {
        if let Some(d) = &doc {
            summary.push('\n');
            summary.push_str(d);
        }
        summary.push('\n');
        summary.push_str(&indent);
        summary.push_str("...");
    }
    Some(Definition {
        name,
        line: outer.start_position().row,
        summary,
        members,
    })
}

fn first_line<'a>(src: &'a str, n: tree_sitter::Node<'_>) -> &'a str {
    let start = line_start(src, n.start_byte());
    let text = src.get(start..n.end_byte()).unwrap_or("");
    text.lines().next().unwrap_or("").trim_end()
}

fn outline_block(block: tree_sitter::Node<'_>, src: &str, out: &mut Outline, depth: usize) {
    let mut c = block.walk();
    for stmt in block.named_children(&mut c) {
        match stmt.kind() {
            "function_definition" | "class_definition" => {
                out.definitions.extend(definition(stmt, stmt, src));
            }
            "decorated_definition" => {
                if let Some(d) = stmt.child_by_field_name("definition") {
                    out.definitions.extend(definition(stmt, d, src));
                }
            }
            "import_statement" | "import_from_statement" => {
                collect_imports(stmt, src, &mut out.imports);
            }
            "expression_statement" => {
                let Some(a) = stmt.named_child(0).filter(|a| a.kind() == "assignment") else {
                    continue;
                };
                let Some(l) = a
                    .child_by_field_name("left")
                    .filter(|l| l.kind() == "identifier")
                else {
                    continue;
                };
                let line = first_line(src, stmt);
                out.definitions.push(Definition {
                    name: node_text(l, src).to_string(),
                    line: stmt.start_position().row,
                    summary: if line.len() <= ASSIGNMENT_CHARS {
                        line.to_string()
                    } else {
                        String::new()
                    },
                    members: Vec::new(),
                });
            }
            // `if TYPE_CHECKING:`, `try: import x except ImportError: ...` at module level.
            "if_statement" | "try_statement" | "else_clause" | "except_clause" | "elif_clause"
            | "finally_clause" | "block"
                if depth < 3 =>
            {
                outline_block(stmt, src, out, depth + 1);
            }
            _ => {}
        }
    }
}

/// Byte ranges of Python text that are prose, not code: comments and the text of string
/// literals (an f-string's `{...}` parts are code). Empty when the text does not parse.
pub fn prose_ranges(text: &str) -> Vec<std::ops::Range<usize>> {
    let Some(tree) = parse_python(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut c = tree.walk();
    'walk: loop {
        let n = c.node();
        let prose = matches!(n.kind(), "comment" | "string_content");
        if prose {
            out.push(n.start_byte()..n.end_byte());
        }
        if !prose && c.goto_first_child() {
            continue;
        }
        while !c.goto_next_sibling() {
            if !c.goto_parent() {
                break 'walk;
            }
        }
    }
    out
}

/// The 0-based lines where Python code may be cut into chunks: the start of every
/// top-level statement and of every statement in a top-level class's body. `None` when
/// the text does not parse at all.
pub fn definition_lines(text: &str) -> Option<Vec<usize>> {
    let tree = parse_python(text)?;
    let root = tree.root_node();
    let mut out = Vec::new();
    let mut c = root.walk();
    for stmt in root.named_children(&mut c) {
        out.push(stmt.start_position().row);
        let class = match stmt.kind() {
            "class_definition" => Some(stmt),
            "decorated_definition" => stmt
                .child_by_field_name("definition")
                .filter(|d| d.kind() == "class_definition"),
            _ => None,
        };
        if let Some(body) = class.and_then(|k| k.child_by_field_name("body")) {
            let mut bc = body.walk();
            out.extend(body.named_children(&mut bc).map(|s| s.start_position().row));
        }
    }
    Some(out)
}

const PY_EXTENSIONS: &[&str] = &["py", "pyi"];

impl Language for Python {
    fn handles(&self, path: &Path) -> bool {
        path.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| PY_EXTENSIONS.contains(&e))
    }

    fn imports(&self, text: &str) -> Vec<Import> {
        let src = import_statements(text);
        let mut out = Vec::new();
        if let Some(tree) = parse_python(&src) {
            collect_imports(tree.root_node(), &src, &mut out);
        }
        out
    }

    fn outline(&self, text: &str) -> Outline {
        let mut out = Outline::default();
        if let Some(tree) = parse_python(text) {
            let root = tree.root_node();
            out.syntax_errors = root.has_error();
            outline_block(root, text, &mut out, 0);
        }
        out
    }

    fn resolve(&self, module: &ModuleRef, from: &Path, roots: &[PathBuf]) -> Option<PathBuf> {
        let bases: Vec<PathBuf> = if module.level > 0 {
            let mut base = from.parent()?.to_path_buf();
            for _ in 1..module.level {
                base = base.parent()?.to_path_buf();
            }
            vec![base]
        } else {
            roots.to_vec()
        };
        for base in bases {
            let mut p = base;
            for part in &module.path {
                p.push(part);
            }
            if module.path.is_empty() {
                for init in ["__init__.py", "__init__.pyi"] {
                    let f = p.join(init);
                    if f.is_file() {
                        return Some(f);
                    }
                }
                continue;
            }
            if let Some(f) = module_file(&p) {
                return Some(f);
            }
        }
        None
    }

    fn submodule(&self, module_file: &Path, name: &str) -> Option<PathBuf> {
        let stem = module_file.file_stem()?.to_str()?;
        if stem != "__init__" {
            return None;
        }
        module_file
            .parent()
            .and_then(|d| module_file_of(&d.join(name)))
    }
}

fn module_file_of(p: &Path) -> Option<PathBuf> {
    module_file(p)
}

/// `p.py`, `p/__init__.py`, `p.pyi` or `p/__init__.pyi`, the first that exists.
fn module_file(p: &Path) -> Option<PathBuf> {
    let name = p.file_name()?.to_str()?;
    [
        p.with_file_name(format!("{name}.py")),
        p.join("__init__.py"),
        p.with_file_name(format!("{name}.pyi")),
        p.join("__init__.pyi"),
    ]
    .into_iter()
    .find(|f| f.is_file())
}

/// The site-packages folders of the active virtualenv (`VIRTUAL_ENV`) and of `root/.venv`.
pub fn virtualenv_site_packages(root: &Path, virtual_env: Option<&Path>) -> Vec<PathBuf> {
    let mut envs: Vec<PathBuf> = virtual_env.map(Path::to_path_buf).into_iter().collect();
    envs.push(root.join(".venv"));
    let mut out = Vec::new();
    for env in envs {
        // Windows layout first, then lib/pythonX.Y/site-packages.
        let win = env.join("Lib").join("site-packages");
        if win.is_dir() && !out.contains(&win) {
            out.push(win);
        }
        let Ok(rd) = std::fs::read_dir(env.join("lib")) else {
            continue;
        };
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("site-packages"))
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The gatherer

/// Outlines remembered (files whose stamps still match are not read again).
const OUTLINE_CACHE: usize = 512;
/// How deep re-exports are followed.
const MAX_DEPTH: usize = 4;
/// Definitions returned at most per request.
const MAX_DEFINITIONS: usize = 12;

/// Resolves imports to definitions, remembering outlines and import lists.
#[derive(Default)]
pub struct Imports {
    languages: Vec<Box<dyn Language>>,
    outlines: Mutex<HashMap<PathBuf, (u64, Arc<Outline>)>>,
    file_imports: Mutex<HashMap<u64, Arc<Vec<Import>>>>,
}

impl std::fmt::Debug for Imports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imports")
            .field("languages", &self.languages.len())
            .finish()
    }
}

/// A request to the imports gatherer.
pub struct ImportQuery<'a> {
    /// The current file (absolute).
    pub path: &'a Path,
    /// Its whole text.
    pub text: &'a str,
    /// The text near the cursor whose names are looked up, and the cursor's offset in it.
    pub near: &'a str,
    pub cursor: usize,
    /// Byte offset of `near` in `text`.
    pub near_start: usize,
    /// Byte offset in `text` where the prompt's window begins: the file's own imports
    /// above it are shown as a snippet.
    pub window_start: usize,
    /// Where absolute imports are searched, in order.
    pub roots: &'a [PathBuf],
    /// How often the rest of the workspace uses a name as an attribute (`x.name`): listings
    /// of members show the most used first.
    pub uses: &'a dyn Fn(&str) -> u32,
    /// The members the rest of the workspace reaches through a name (`app.` gives
    /// `test_client`, `route`, ...) that start with what is typed, most used first, with
    /// the file that uses them most.
    pub receiver_members: &'a ReceiverMembers<'a>,
    /// The other files of the workspace whose top level defines a name.
    pub defined_in: &'a dyn Fn(&str) -> Vec<PathBuf>,
}

/// The members the workspace reaches through a name (the first argument) that start with
/// the second, with the file using them most.
pub type ReceiverMembers<'a> = dyn Fn(&str, &str) -> (Option<PathBuf>, Vec<String>) + 'a;

impl Imports {
    /// A gatherer for Python.
    pub fn new() -> Self {
        Self::with_languages(vec![Box::new(Python)])
    }

    pub fn with_languages(languages: Vec<Box<dyn Language>>) -> Self {
        Self {
            languages,
            ..Default::default()
        }
    }

    fn language(&self, path: &Path) -> Option<&dyn Language> {
        self.languages
            .iter()
            .find(|l| l.handles(path))
            .map(|b| b.as_ref())
    }

    /// The outline of `path` (cached while its stamp holds).
    pub fn outline(&self, path: &Path, files: &dyn Files, said: &SaidOnce) -> Option<Arc<Outline>> {
        let lang = self.language(path)?;
        let stamp = files.stamp(path)?;
        if let Some((s, o)) = self.outlines.lock().expect("outline cache").get(path) {
            if *s == stamp {
                return Some(o.clone());
            }
        }
        let text = files.load(path)?;
        let outline = Arc::new(lang.outline(&text));
        if outline.syntax_errors {
            said.info(
                format!("syntax:{}:{stamp}", path.display()),
                format_args!(
                    "{} has syntax errors: its definitions outside them are still used",
                    path.display()
                ),
            );
        }
        let mut cache = self.outlines.lock().expect("outline cache");
        if cache.len() >= OUTLINE_CACHE {
            cache.clear();
        }
        cache.insert(path.to_path_buf(), (stamp, outline.clone()));
        Some(outline)
    }

    fn current_imports(&self, lang: &dyn Language, text: &str) -> Arc<Vec<Import>> {
        // Keyed by the import statements' text: typing elsewhere never re-parses them.
        let key = crate::tokens::ident_hash(&import_statements(text));
        if let Some(v) = self.file_imports.lock().expect("imports cache").get(&key) {
            return v.clone();
        }
        let v = Arc::new(lang.imports(text));
        let mut cache = self.file_imports.lock().expect("imports cache");
        if cache.len() >= OUTLINE_CACHE {
            cache.clear();
        }
        cache.insert(key, v.clone());
        v
    }

    /// Definitions of the imported names used in `q.near`, nearest the cursor first.
    pub fn gather(&self, q: &ImportQuery, files: &dyn Files, said: &SaidOnce) -> Vec<Candidate> {
        let Some(lang) = self.language(q.path) else {
            return Vec::new();
        };
        let imports = self.current_imports(lang, q.text);
        let mut out: Vec<Candidate> = Vec::new();
        let mut seen: HashSet<(PathBuf, String)> = HashSet::new();
        // First, what the cursor is naming a member of: `click.Pa|` or `from .core import |`.
        let r = Resolution {
            imports: self,
            lang,
            files,
            roots: q.roots,
            said,
        };
        if let Some(c) = r.namespace_at_cursor(&imports, q) {
            seen.insert((c.path.clone(), String::new()));
            out.push(c);
        }
        // On an import line: the names the file uses but has not imported, and where the
        // workspace defines them (`from .exceptions import UsageError`).
        if in_import_statement(q.text, q.near_start + q.cursor) {
            out.extend(unimported(q, &imports));
        }
        // The file's own imports that the window no longer shows: the names it has at hand.
        let above = imports_above(q.text, q.window_start);
        let ours: Vec<&(usize, String)> = above
            .iter()
            .filter(|(_, stmt)| {
                // Only what the workspace defines: the model knows the standard library.
                lang.imports(stmt)
                    .iter()
                    .any(|i| lang.resolve(&i.module, q.path, q.roots).is_some())
            })
            .collect();
        if let Some((line, _)) = ours.first() {
            let text: Vec<&str> = ours.iter().map(|(_, s)| s.as_str()).collect();
            out.push(Candidate {
                source: Source::Imports,
                score: 1.5,
                path: q.path.to_path_buf(),
                start_line: *line,
                text: text.join("\n"),
            });
        }
        // The namespace of a module the code near the cursor reaches members of (`click.` in
        // `@click.option(...)`), the names the workspace uses most (before the definitions:
        // on click, recall 0.45 with it last, 0.53 here).
        if let Some(c) = r.module_near(&imports, q) {
            if seen.insert((c.path.clone(), String::new())) {
                out.push(c);
            }
        }
        // Members of the classes the code near the cursor reaches through a variable.
        for (file, def, text) in r.receiver_listings(&imports, q) {
            // The listing stands for the class: its summary (docstrings, signatures) would
            // take budget that other snippets use.
            if seen.insert((file.clone(), def)) {
                out.push(Candidate {
                    source: Source::Imports,
                    score: 1.2,
                    path: file,
                    start_line: 0,
                    text,
                });
            }
        }
        if imports.is_empty() {
            return out;
        }
        for (distance, chain) in chains_near(q.near, q.cursor) {
            if out.len() >= MAX_DEFINITIONS {
                break;
            }
            let mut found = Vec::new();
            r.chain(&imports, &chain, q.path, &mut found);
            for (file, def) in found {
                if file == q.path || def.summary.trim().is_empty() {
                    continue;
                }
                if seen.insert((file.clone(), def.name.clone())) {
                    out.push(Candidate {
                        source: Source::Imports,
                        score: 1.0 / (1.0 + distance as f32),
                        path: file,
                        start_line: def.line,
                        text: def.summary.clone(),
                    });
                }
            }
        }
        out
    }
}

struct Resolution<'a> {
    imports: &'a Imports,
    lang: &'a dyn Language,
    files: &'a dyn Files,
    roots: &'a [PathBuf],
    said: &'a SaidOnce,
}

/// What the code just before the cursor names a member of.
#[derive(Debug, PartialEq, Eq)]
enum AtCursor<'t> {
    /// `m.pa|`: an attribute of `chain` (`["m"]`) being typed, `partial` (`pa`) so far.
    /// An empty chain: the head itself is being typed (`cli|`).
    Attribute {
        chain: Vec<&'t str>,
        partial: &'t str,
    },
    /// `from M import a, pa|` (parenthesised over lines too).
    FromImport { module: ModuleRef, partial: &'t str },
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifier characters `before` ends with.
fn trailing_ident(before: &str) -> &str {
    let b = before.as_bytes();
    let mut i = b.len();
    while i > 0 && is_ident_byte(b[i - 1]) {
        i -= 1;
    }
    &before[i..]
}

/// `.x.y` / `x.y` / `` as a module reference.
fn module_ref(spelled: &str) -> Option<ModuleRef> {
    let level = spelled.bytes().take_while(|b| *b == b'.').count();
    let rest = &spelled[level..];
    let path: Vec<String> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('.').map(str::to_string).collect()
    };
    if path
        .iter()
        .any(|p| p.is_empty() || !p.bytes().all(is_ident_byte))
        || (level == 0 && path.is_empty())
    {
        return None;
    }
    Some(ModuleRef { level, path })
}

/// Read what the cursor names a member of from the text before it (Python).
fn at_cursor(before: &str) -> Option<AtCursor<'_>> {
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = &before[line_start..];
    let partial = trailing_ident(line);
    // A `from M import` statement, on this line or opened with `(` on an earlier one.
    let stmt_start = {
        let t = line.trim_start();
        if t.starts_with("from ") {
            Some(line_start + (line.len() - t.len()))
        } else {
            // An open parenthesis of a `from ... import (` a few lines up, not closed since.
            let mut found = None;
            let mut end = line_start;
            for _ in 0..32 {
                if end == 0 {
                    break;
                }
                let start = before[..end - 1].rfind('\n').map_or(0, |i| i + 1);
                let l = &before[start..end];
                if l.contains(')') {
                    break;
                }
                let t = l.trim_start();
                if t.starts_with("from ") {
                    if t.contains("import (") {
                        found = Some(start + (l.len() - t.len()));
                    }
                    break;
                }
                end = start;
            }
            found
        }
    };
    if let Some(at) = stmt_start {
        let stmt = &before[at..];
        // `from m im|`: the module is named, the names are next.
        if let Some((head, kw)) = stmt.rsplit_once(' ') {
            if !kw.is_empty() && "import".starts_with(kw) && import_keyword(head).is_none() {
                let module = module_ref(head.strip_prefix("from ")?.trim())?;
                return Some(AtCursor::FromImport {
                    module,
                    partial: "",
                });
            }
        }
        let at = import_keyword(stmt)?;
        let (head, names) = (&stmt[..at], &stmt[at + " import".len()..]);
        if names.contains(')') {
            return None;
        }
        let module = module_ref(head.strip_prefix("from ")?.trim())?;
        return Some(AtCursor::FromImport { module, partial });
    }
    if line.trim_start().starts_with("import ") {
        return None;
    }
    // `a.b.pa`: identifiers joined by dots, ending at the cursor.
    let b = line.as_bytes();
    let mut i = line.len() - partial.len();
    let mut chain = Vec::new();
    while i > 0 && b[i - 1] == b'.' {
        let end = i - 1;
        let start = end - trailing_ident(&line[..end]).len();
        if start == end {
            return None; // `x().a`, `"s".a`: not a name's attribute
        }
        chain.push(&line[start..end]);
        i = start;
    }
    if i > 0 && matches!(b[i - 1], b')' | b']' | b'"' | b'\'') {
        return None;
    }
    if chain
        .first()
        .and_then(|c| c.bytes().next())
        .is_some_and(|b| b.is_ascii_digit())
    {
        return None;
    }
    chain.reverse();
    if chain.is_empty() && partial.len() < 2 {
        return None;
    }
    Some(AtCursor::Attribute { chain, partial })
}

/// Names shown at most for one namespace.
const NAMESPACE_NAMES: usize = 48;
/// A definition's line in a namespace listing is cut to this many characters.
const NAMESPACE_LINE_CHARS: usize = 120;

/// The first line a definition's summary shows for it: its signature on one line
/// (decorators left out), or the assignment.
fn signature_line(d: &Definition) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for l in d
        .summary
        .lines()
        .skip_while(|l| l.trim_start().starts_with('@'))
    {
        parts.push(l.trim());
        if l.trim_end().ends_with(':') || parts.len() >= 6 {
            break;
        }
    }
    let mut s = parts.join(" ");
    if s.is_empty() {
        s = format!("{} = ...", d.name);
    }
    if s.chars().count() > NAMESPACE_LINE_CHARS {
        s = s.chars().take(NAMESPACE_LINE_CHARS).collect::<String>() + "...";
    }
    s
}

fn spell(m: &ModuleRef) -> String {
    format!("{}{}", ".".repeat(m.level), m.path.join("."))
}

/// A module's public names as Python the model reads easily: its re-exports grouped by
/// module (`from .core import Argument, Command`), then one line per definition. Only the
/// names that start with `partial`; `None` when none does. When there are more than a
/// listing shows, the ones the workspace `uses` most are kept (shown in the module's order).
pub fn namespace_listing(
    outline: &Outline,
    partial: &str,
    uses: &dyn Fn(&str) -> u32,
) -> Option<String> {
    let public = |n: &str| !n.starts_with('_') && n.starts_with(partial);
    // (name, the re-export's module or None for a definition of the module itself)
    let mut entries: Vec<(&str, Option<&Import>, Option<&Definition>)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut wildcards: Vec<String> = Vec::new();
    for i in &outline.imports {
        if i.wildcard {
            if partial.is_empty() {
                wildcards.push(spell(&i.module));
            }
            continue;
        }
        // `import os` in a module is not what users reach through it; `from x import y`
        // re-exports are.
        if i.name.is_none() || !public(&i.local) || !seen.insert(i.local.as_str()) {
            continue;
        }
        entries.push((&i.local, Some(i), None));
    }
    for d in &outline.definitions {
        if public(&d.name) && seen.insert(d.name.as_str()) {
            entries.push((&d.name, None, Some(d)));
        }
    }
    if entries.len() > NAMESPACE_NAMES {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&k| std::cmp::Reverse(uses(entries[k].0)));
        let mut keep = vec![false; entries.len()];
        for &k in &order[..NAMESPACE_NAMES] {
            keep[k] = true;
        }
        let mut k = 0;
        entries.retain(|_| {
            k += 1;
            keep[k - 1]
        });
    }
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    let mut defs: Vec<String> = Vec::new();
    for (name, import, def) in &entries {
        if let Some(i) = import {
            let m = spell(&i.module);
            match groups.iter_mut().find(|(g, _)| *g == m) {
                Some((_, names)) => names.push(name),
                None => groups.push((m, vec![name])),
            }
        } else if let Some(d) = def {
            defs.push(signature_line(d));
        }
    }
    if entries.is_empty() && wildcards.is_empty() {
        return None;
    }
    let mut lines: Vec<String> = groups
        .into_iter()
        .map(|(m, names)| format!("from {m} import {}", names.join(", ")))
        .collect();
    lines.extend(wildcards.into_iter().map(|m| format!("from {m} import *")));
    lines.extend(defs);
    Some(lines.join("\n"))
}

/// Import statements shown at most from above the window.
const IMPORTS_ABOVE: usize = 24;

/// The current file's import statements that end before `window_start` (the prompt's
/// window no longer shows them), one line each (a parenthesised statement joined), with
/// the 0-based line each starts on.
fn imports_above(text: &str, window_start: usize) -> Vec<(usize, String)> {
    let Some(above) = text.get(..window_start) else {
        return Vec::new();
    };
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut first_line = 0;
    let mut cur = String::new();
    let mut open = 0i32;
    let mut continued = false;
    for (n, line) in above.lines().enumerate() {
        let t = line.trim();
        // `import x` or `from x import`, not a docstring's sentence.
        let starts = t
            .strip_prefix("import ")
            .is_some_and(|r| r.bytes().next().is_some_and(is_ident_byte))
            || (t.starts_with("from ") && t.contains(" import"));
        if !(open > 0 || continued || starts) {
            continue;
        }
        if cur.is_empty() {
            first_line = n;
        }
        let code = t
            .split('#')
            .next()
            .unwrap_or("")
            .trim_end_matches('\\')
            .trim();
        if !cur.is_empty() && !cur.ends_with('(') && !code.starts_with(')') && !code.is_empty() {
            cur.push(' ');
        }
        cur.push_str(code);
        for c in code.chars() {
            match c {
                '(' => open += 1,
                ')' => open -= 1,
                _ => {}
            }
        }
        open = open.clamp(0, 8);
        continued = t.ends_with('\\');
        if open == 0 && !continued {
            out.push((first_line, std::mem::take(&mut cur).replace(",)", ")")));
            if out.len() >= IMPORTS_ABOVE {
                break;
            }
        }
    }
    // A statement the window cuts through is in the window: not repeated.
    out
}

/// The name typed so far when the cursor's line begins a member in a class body: a method
/// (`    de|`, `    def lo|`) or a class attribute (`    comma|` of `command_class = ...`,
/// which overrides a base's), else `None`.
fn member_being_defined(before: &str) -> Option<&str> {
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let t = line.trim_start();
    if t.len() == line.len() || t.len() < 2 {
        return None;
    }
    // In a class body: the nearest less indented line above is the `class` line.
    let indent = line.len() - t.len();
    let above = &before[..before.len() - line.len()];
    let owner = above
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && l.len() - l.trim_start().len() < indent)?;
    if !owner.trim_start().starts_with("class ") {
        return None;
    }
    if "def ".starts_with(t) || (t.len() >= 3 && "async def ".starts_with(t)) {
        return Some("");
    }
    let name = t
        .strip_prefix("def ")
        .or_else(|| t.strip_prefix("async def "))
        .unwrap_or(t);
    // (`pass`, `if`: a statement, not a member.)
    (name.bytes().all(is_ident_byte) && !crate::tokens::is_stop_word(name)).then_some(name)
}

/// Whether the cursor at `at` is in an import statement: `from`/`import` begun on its line
/// (`fro|`, `from .x im|`), a parenthesised `from m import (` continued, or a fresh line
/// right after an import.
fn in_import_statement(text: &str, at: usize) -> bool {
    let Some(before) = text.get(..at) else {
        return false;
    };
    let ls = before.rfind('\n').map_or(0, |i| i + 1);
    let t = before[ls..].trim_start();
    if t.starts_with("from ") || t.starts_with("import ") {
        return true;
    }
    // `fro`, `imp`: one or two letters begin too many other words (`if`, `f(`).
    if t.len() >= 3 && ("from ".starts_with(t) || "import ".starts_with(t)) {
        return true;
    }
    let above = &before[..ls];
    // Inside `from m import (` not closed since.
    for l in above.lines().rev().take(40) {
        let lt = l.trim_start();
        if l.contains(')') {
            break;
        }
        if lt.starts_with("from ") {
            if l.contains("import (") {
                return true;
            }
            break;
        }
        if !lt.is_empty() && lt.len() == l.len() {
            break;
        }
    }
    t.is_empty()
        && above
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| l.starts_with("from ") || l.starts_with("import "))
}

/// Python's builtins: never offered as an import though a module defines one
/// (`gzip.open`).
const BUILTINS: &[&str] = &[
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "bool",
    "breakpoint",
    "bytearray",
    "bytes",
    "callable",
    "chr",
    "classmethod",
    "compile",
    "complex",
    "delattr",
    "dict",
    "dir",
    "divmod",
    "enumerate",
    "eval",
    "exec",
    "exit",
    "filter",
    "float",
    "format",
    "frozenset",
    "getattr",
    "globals",
    "hasattr",
    "hash",
    "help",
    "hex",
    "id",
    "input",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "locals",
    "map",
    "max",
    "memoryview",
    "min",
    "next",
    "object",
    "oct",
    "open",
    "ord",
    "pow",
    "print",
    "property",
    "quit",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "setattr",
    "slice",
    "sorted",
    "staticmethod",
    "str",
    "sum",
    "super",
    "tuple",
    "type",
    "vars",
    "zip",
    "Exception",
    "BaseException",
    "ValueError",
    "TypeError",
    "KeyError",
    "IndexError",
    "RuntimeError",
    "NotImplementedError",
    "AttributeError",
    "OSError",
    "IOError",
    "StopIteration",
    "ImportError",
    "NotImplemented",
    "Ellipsis",
    "__name__",
    "__file__",
];

/// Names the unimported listing shows at most.
const UNIMPORTED_NAMES: usize = 24;
/// Bytes of the file the unimported listing reads for the names it uses (a generated or
/// vendored giant must not cost more than a normal module).
const UNIMPORTED_SCAN_BYTES: usize = 1 << 20;
/// Definers of one name compared at most.
const DEFINERS: usize = 16;

/// The identifiers `text` binds itself: `def`/`class` names, assignment targets, names
/// after `as`, `for`, `import` (and in a `from m import` list), and parameters (a name
/// after `(`, `,` or `*` on a `def` line).
fn bound_names(text: &str) -> HashSet<&str> {
    let mut out = HashSet::new();
    // Open parentheses and brackets of a `def` signature continued on the next lines
    // (black's style): a parameter is at parenthesis depth 1 outside any bracket.
    let mut def_depth = (0i32, 0i32);
    for line in text.lines() {
        let t = line.trim_start();
        let starts_def = t.starts_with("def ") || t.starts_with("async def ");
        let in_def = starts_def || def_depth.0 > 0;
        let is_import = t.starts_with("import ") || t.starts_with("from ");
        // A statement binding every name of its target list: `a, b = ...`, `for k, v in`.
        let target_end = if in_def || is_import {
            None
        } else if let Some(r) = t.strip_prefix("for ") {
            r.find(" in ").map(|i| line.len() - t.len() + 4 + i)
        } else {
            top_level_assignment(line)
        };
        let b = line.as_bytes();
        let mut depth = if starts_def { (0, 0) } else { def_depth };
        let count = |bytes: &[u8], d: &mut (i32, i32)| {
            for &c in bytes {
                match c {
                    b'(' => d.0 += 1,
                    b')' => d.0 -= 1,
                    b'[' | b'{' => d.1 += 1,
                    b']' | b'}' => d.1 -= 1,
                    _ => {}
                }
            }
        };
        let mut last = 0usize;
        let mut prev_word = "";
        for (at, id) in crate::tokens::identifiers(line) {
            count(&b[last..at], &mut depth);
            last = at;
            let before = line[..at].trim_end();
            let after = line[at + id.len()..].trim_start();
            let dotted = at > 0 && b[at - 1] == b'.';
            let annotated = !in_def && after.starts_with(':') && before.is_empty();
            let param = in_def
                && depth == (1, 0)
                && (matches!(before.as_bytes().last(), Some(b'(' | b',' | b'*'))
                    || (before.is_empty() && !starts_def));
            // Names of the target list itself, not inside a subscript (`d[key(x)] = v`).
            let target = target_end.is_some_and(|end| at < end) && !in_def && depth == (0, 0);
            if !dotted
                && (annotated
                    || param
                    || target
                    || is_import
                    || matches!(prev_word, "def" | "class" | "as" | "global" | "nonlocal"))
            {
                out.insert(id);
            }
            prev_word = id;
        }
        if in_def {
            count(&b[last..], &mut depth);
            def_depth = (depth.0.clamp(0, 8), depth.1.clamp(0, 8));
        }
    }
    out
}

/// Where the target list of an assignment statement on `line` ends: the first `=` outside
/// brackets that is no comparison (`==`, `<=`, `>=`, `!=`) and no keyword argument.
fn top_level_assignment(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut depth = 0i32;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'"' | b'\'' | b'#' => return None,
            b'=' if depth == 0 => {
                let prev = i.checked_sub(1).map(|j| b[j]);
                let next = b.get(i + 1).copied();
                if next == Some(b'=') || matches!(prev, Some(b'=' | b'<' | b'>' | b'!')) {
                    return None;
                }
                return Some(i);
            }
            _ => {}
        }
    }
    None
}

/// Where `file` is imported from, seen from `doc`: relative within one package tree
/// (`.exceptions`, `..app`), else absolute (`flask.sessions`); a file outside any package
/// by its stem.
fn import_spelling(doc: &Path, file: &Path) -> String {
    fn packages(p: &Path) -> (PathBuf, Vec<String>) {
        let mut parts = Vec::new();
        let mut dir = p.parent();
        while let Some(d) = dir {
            if !d.join("__init__.py").is_file() {
                break;
            }
            parts.push(
                d.file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into()),
            );
            dir = d.parent();
        }
        parts.reverse();
        (dir.map(Path::to_path_buf).unwrap_or_default(), parts)
    }
    let (root, mut module) = packages(file);
    let stem = file
        .file_stem()
        .map_or(String::new(), |s| s.to_string_lossy().into());
    if stem != "__init__" {
        module.push(stem);
    }
    let (doc_root, doc_pkg) = packages(doc);
    if root == doc_root && !doc_pkg.is_empty() && module.first() == doc_pkg.first() {
        let common = doc_pkg
            .iter()
            .zip(&module)
            .take_while(|(a, b)| a == b)
            .count();
        let dots = ".".repeat(doc_pkg.len() - common + 1);
        return format!("{dots}{}", module[common..].join("."));
    }
    module.join(".")
}

/// The names `q`'s file uses but neither binds nor imports and another file of the
/// workspace defines at its top level, as `from M import a, b` lines, most used first:
/// what an import line being typed is likely to bring in.
fn unimported(q: &ImportQuery, imports: &[Import]) -> Option<Candidate> {
    let text = &q.text[..crate::floor_char_boundary(q.text, UNIMPORTED_SCAN_BYTES)];
    let bound = bound_names(text);
    let b = text.as_bytes();
    let mut uses: HashMap<&str, (usize, usize)> = HashMap::new();
    for (at, id) in crate::tokens::identifiers(text) {
        if (at > 0 && b[at - 1] == b'.')
            || id.len() < 2
            || BUILTINS.contains(&id)
            || bound.contains(id)
            || crate::tokens::is_stop_word(id)
            || imports.iter().any(|i| i.local == id)
        {
            continue;
        }
        let n = uses.len();
        uses.entry(id).or_insert((0, n)).0 += 1;
    }
    let mut names: Vec<(&str, (usize, usize))> = uses.into_iter().collect();
    names.sort_by_key(|(_, (n, first))| (std::cmp::Reverse(*n), *first));
    let doc_dir = q.path.parent().unwrap_or(Path::new(""));
    let mut by_file: Vec<(PathBuf, Vec<&str>)> = Vec::new();
    let mut listed = 0;
    for (name, _) in names {
        if listed >= UNIMPORTED_NAMES {
            break;
        }
        // Of several definers, the one nearest the document's folder, then one in a
        // package (importable by a dotted name).
        // The order is the path's, not the index's (its threads add files in any order).
        let shared = |f: &Path| {
            f.components()
                .zip(doc_dir.components())
                .take_while(|(a, b)| a == b)
                .count()
        };
        let mut definers: Vec<PathBuf> = (q.defined_in)(name)
            .into_iter()
            .filter(|f| f.file_name().is_none_or(|n| n != "conftest.py"))
            .collect();
        definers.sort_by(|a, b| shared(b).cmp(&shared(a)).then_with(|| a.cmp(b)));
        let Some(file) = definers.into_iter().take(DEFINERS).min_by_key(|f| {
            let package = f.parent().is_some_and(|d| d.join("__init__.py").is_file());
            (std::cmp::Reverse(shared(f)), !package, f.clone())
        }) else {
            continue;
        };
        listed += 1;
        match by_file.iter_mut().find(|(f, _)| *f == file) {
            Some((_, v)) => v.push(name),
            None => by_file.push((file, vec![name])),
        }
    }
    if by_file.is_empty() {
        return None;
    }
    let text: Vec<String> = by_file
        .iter()
        .map(|(f, names)| {
            format!(
                "from {} import {}",
                import_spelling(q.path, f),
                names.join(", ")
            )
        })
        .collect();
    Some(Candidate {
        source: Source::Imports,
        score: 2.0,
        path: q.path.to_path_buf(),
        start_line: 0,
        text: text.join("\n"),
    })
}

/// Where ` import` begins in a `from` statement as the keyword (followed by a space, a
/// parenthesis or nothing), not as the start of a module's name (`from importlib ...`).
fn import_keyword(stmt: &str) -> Option<usize> {
    stmt.match_indices(" import").map(|(i, _)| i).find(|&i| {
        stmt[i + " import".len()..]
            .bytes()
            .next()
            .is_none_or(|b| b == b' ' || b == b'\t' || b == b'(')
    })
}

/// A dotted name at the start of `s` (`a.b.C`), and what follows it.
fn leading_chain(s: &str) -> (Vec<&str>, &str) {
    let mut chain = Vec::new();
    let mut rest = s;
    loop {
        let n = rest.bytes().take_while(|b| is_ident_byte(*b)).count();
        if n == 0 || rest.as_bytes()[0].is_ascii_digit() {
            break;
        }
        chain.push(&rest[..n]);
        rest = &rest[n..];
        match rest.strip_prefix('.') {
            Some(r) if r.bytes().next().is_some_and(is_ident_byte) => rest = r,
            _ => break,
        }
    }
    (chain, rest)
}

/// Wrappers whose first argument is the type an annotation means.
const TYPE_WRAPPERS: &[&str] = &["Optional", "Type", "type", "Final", "ClassVar", "Annotated"];

/// The class an annotation names: `C`, `m.C`, `t.Optional[C]`, `"C"`.
fn annotated_class(s: &str) -> Option<Vec<&str>> {
    let s = s.trim_start().trim_start_matches(['"', '\'']);
    let (chain, rest) = leading_chain(s);
    let last = *chain.last()?;
    if TYPE_WRAPPERS.contains(&last) {
        return annotated_class(rest.strip_prefix('[')?);
    }
    Some(chain)
}

/// The bases of the class the cursor at `at` is inside (`class X(A, m.B):` gives `A` and
/// `m.B`), keyword arguments (`metaclass=`) left out. Empty outside a class.
fn enclosing_class_bases(text: &str, at: usize) -> Vec<Vec<&str>> {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent = |l: &str| l.len() - l.trim_start().len();
    let cur = &text[line_start..at];
    let mut limit = if cur.trim().is_empty() {
        cur.len()
    } else {
        indent(cur)
    };
    for l in text[..line_start].lines().rev().take(4000) {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        let i = indent(l);
        if i >= limit {
            continue;
        }
        limit = i;
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix("class ") {
            let (_, after) = leading_chain(rest);
            return bases(after);
        }
        if i == 0 {
            break;
        }
    }
    Vec::new()
}

/// The bases of the class `name` defined in `text` (at any depth: a test's class inside a
/// function too), keyword arguments left out; the last definition wins.
fn local_class_bases<'t>(text: &'t str, name: &str) -> Vec<Vec<&'t str>> {
    let Some(rest) = text
        .lines()
        .rev()
        .filter_map(|l| l.trim_start().strip_prefix("class "))
        .find_map(|r| r.strip_prefix(name).filter(|a| a.starts_with('(')))
    else {
        return Vec::new();
    };
    bases(rest)
}

/// The bases of a class line after its name (`(A, m.B, metaclass=M):` gives `A` and
/// `m.B`); empty without parentheses.
fn bases(after_name: &str) -> Vec<Vec<&str>> {
    let Some(args) = after_name.strip_prefix('(') else {
        return Vec::new();
    };
    top_level_args(args)
        .into_iter()
        .filter(|a| !a.contains('='))
        .filter_map(|a| {
            let (c, _) = leading_chain(a.trim());
            (!c.is_empty()).then_some(c)
        })
        .collect()
}

/// Names bound to a call on a line of their own (`a = m.C(...)`) above `cursor` in `text`
/// (what is bound below is not bound yet where the cursor is), with their distance in bytes
/// from it; each name once, at its nearest binding. Lines inside brackets are arguments
/// (`    timeout=Timeout(5),`), not bindings.
fn bindings_near(text: &str, cursor: usize) -> Vec<(usize, &str)> {
    let mut out: Vec<(usize, &str)> = Vec::new();
    let mut start = 0;
    let mut depth = 0usize;
    let above = text
        .get(..cursor)
        .map_or("", |t| &t[..t.rfind('\n').map_or(0, |i| i + 1)]);
    for line in above.split_inclusive('\n') {
        let outside = depth == 0;
        for b in line.bytes() {
            match b {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        let t = line.trim_start();
        let at = start + (line.len() - t.len());
        start += line.len();
        if !outside {
            continue;
        }
        let n = t.bytes().take_while(|b| is_ident_byte(*b)).count();
        if n == 0 || t.as_bytes()[0].is_ascii_digit() {
            continue;
        }
        let (name, rhs) = t.split_at(n);
        let Some(rhs) = rhs.trim_start_matches([' ', '\t']).strip_prefix('=') else {
            continue;
        };
        let (chain, after) = leading_chain(rhs.trim_start());
        if chain.is_empty() || !after.starts_with('(') || crate::tokens::is_stop_word(name) {
            continue;
        }
        out.push((at.abs_diff(cursor), name));
    }
    out.sort_by_key(|(d, _)| *d);
    let mut seen = HashSet::new();
    out.retain(|(_, n)| seen.insert(*n));
    out
}

/// The comma-separated arguments up to the `)` closing an argument list.
fn top_level_args(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ')' if depth == 0 => {
                out.push(&s[start..i]);
                return out.into_iter().filter(|a| !a.trim().is_empty()).collect();
            }
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|a| !a.trim().is_empty()).collect()
}

/// Lines above the cursor searched for what a variable was bound to.
const BINDING_LINES: usize = 400;

/// The class `name` was last bound to before `at`: `name = C(...)` or `name = m.C(...)`,
/// or an annotation `name: C` (a parameter's too).
fn bound_class<'t>(text: &'t str, at: usize, name: &str) -> Option<Vec<&'t str>> {
    let at = at.min(text.len());
    let before = &text[..at];
    let start = before
        .char_indices()
        .rev()
        .filter(|(_, c)| *c == '\n')
        .nth(BINDING_LINES)
        .map_or(0, |(i, _)| i + 1);
    let region = &before[start..];
    let mut best: Option<Vec<&str>> = None;
    for (i, _) in region.match_indices(name) {
        let b = region.as_bytes();
        if i > 0 && (is_ident_byte(b[i - 1]) || b[i - 1] == b'.') {
            continue;
        }
        let after = &region[i + name.len()..];
        if after.bytes().next().is_some_and(is_ident_byte) {
            continue;
        }
        let after = after.trim_start_matches([' ', '\t']);
        let found = if let Some(rhs) = after.strip_prefix('=') {
            if rhs.starts_with('=') {
                continue;
            }
            let (chain, rest) = leading_chain(rhs.trim_start());
            (rest.starts_with('(') && !chain.is_empty()).then_some(chain)
        } else if let Some(ann) = after.strip_prefix(':') {
            annotated_class(ann).filter(|c| !c.is_empty())
        } else {
            None
        };
        if found.is_some() {
            best = found;
        }
    }
    best
}

/// Receivers (variables whose members are reached) looked at per request.
const RECEIVERS: usize = 3;
/// Imported names looked up per request for the class their definition binds them to.
const IMPORTED_HEADS: usize = 4;
/// Member names listed at most for one class and its bases (24 rather than 40: 100 lines
/// recalled of 169 against 99 on click, requests and flask, and less budget taken).
const MEMBER_NAMES: usize = 24;
/// Members listed at most for a receiver the workspace's uses describe.
const RECEIVER_MEMBERS: usize = 24;
/// Bases followed at most, deep.
const BASE_DEPTH: usize = 3;

/// The names of `names` that start with `partial`, at most `max`, as comma-separated lines
/// of at most [`NAMESPACE_LINE_CHARS`]: the first begins with `first`, the others with
/// `next`. `None` when no name matches.
fn name_lines(
    names: &[String],
    partial: &str,
    max: usize,
    first: &str,
    next: &str,
) -> Option<String> {
    let mut matching = names
        .iter()
        .filter(|n| n.starts_with(partial))
        .take(max)
        .peekable();
    matching.peek()?;
    let mut lines = Vec::new();
    let mut line = first.to_string();
    for n in matching {
        if line.len() + n.len() + 2 > NAMESPACE_LINE_CHARS {
            lines.push(std::mem::replace(&mut line, next.to_string()));
        }
        line.push(' ');
        line.push_str(n);
        line.push(',');
    }
    lines.push(line.trim_end_matches(',').to_string());
    Some(lines.join("\n"))
}

/// A class's members as one listing: its signature line, then its public members and
/// those of its bases, most derived first, filtered by `partial`.
fn member_listing(signature: &str, names: &[String], partial: &str) -> Option<String> {
    let members = name_lines(names, partial, MEMBER_NAMES, "    members:", "   ")?;
    Some(format!("{signature}\n{members}"))
}

/// The members the workspace reaches through `head`, as `head: a, b, c` lines.
fn receiver_listing(head: &str, members: &[String], partial: &str) -> Option<String> {
    let first = format!("{head}:");
    name_lines(members, partial, RECEIVER_MEMBERS, &first, &first)
}

fn is_class(d: &Definition) -> bool {
    signature_line(d).starts_with("class ")
}

impl Resolution<'_> {
    /// The module `chain` names through the imports of `from` (`click`, `pkg.sub`, a
    /// module bound by `from . import views`), if it names one.
    fn module_of(&self, imports: &[Import], chain: &[&str], from: &Path) -> Option<PathBuf> {
        let imp = imports.iter().rev().find(|i| i.local == chain[0])?;
        let mut file = self.lang.resolve(&imp.module, from, self.roots)?;
        match &imp.name {
            Some(n) => file = self.lang.submodule(&file, n)?,
            None if imp.dotted => {
                let top = ModuleRef {
                    level: 0,
                    path: vec![chain[0].to_string()],
                };
                file = self.lang.resolve(&top, from, self.roots).unwrap_or(file);
            }
            None => {}
        }
        for part in &chain[1..] {
            file = self.lang.submodule(&file, part)?;
        }
        Some(file)
    }

    /// A listing of the namespace the cursor is typing a member of: after `m.` where `m`
    /// is an imported module, or in a `from M import` statement, the names that start with
    /// what is typed so far. When the head itself is being typed (`cli|`), the first
    /// imported module whose name it begins.
    fn namespace_at_cursor(&self, imports: &[Import], q: &ImportQuery) -> Option<Candidate> {
        let before = q.near.get(..q.cursor)?;
        let (file, partial) = match at_cursor(before)? {
            AtCursor::FromImport { module, partial } => {
                (self.lang.resolve(&module, q.path, self.roots)?, partial)
            }
            AtCursor::Attribute { chain, partial } if chain.is_empty() => {
                let file = imports
                    .iter()
                    .filter(|i| i.local.starts_with(partial))
                    .find_map(|i| self.module_of(imports, &[i.local.as_str()], q.path))?;
                (file, "")
            }
            AtCursor::Attribute { chain, partial } => {
                (self.module_of(imports, &chain, q.path)?, partial)
            }
        };
        if file == q.path {
            return None;
        }
        let outline = self.imports.outline(&file, self.files, self.said)?;
        let text = namespace_listing(&outline, partial, q.uses)?;
        Some(Candidate {
            source: Source::Imports,
            score: 2.0,
            path: file,
            start_line: 0,
            text,
        })
    }

    /// The listing of the nearest imported module whose members the code near the cursor
    /// uses (`m.f(...)`).
    fn module_near(&self, imports: &[Import], q: &ImportQuery) -> Option<Candidate> {
        let file = chains_near(q.near, q.cursor)
            .into_iter()
            .filter(|(_, c)| c.len() >= 2)
            .find_map(|(_, c)| self.module_of(imports, &c[..1], q.path))?;
        if file == q.path {
            return None;
        }
        let outline = self.imports.outline(&file, self.files, self.said)?;
        let text = namespace_listing(&outline, "", q.uses)?;
        Some(Candidate {
            source: Source::Imports,
            score: 0.1,
            path: file,
            start_line: 0,
            text,
        })
    }

    /// Listings of the members of the classes that variables near the cursor hold:
    /// `self.` in a class whose bases are imported (the bases' members), `v.` where `v`
    /// was bound to an imported class (`v = C(...)`, `v: C`). Each as (the class's file,
    /// its name, the listing).
    fn receiver_listings(
        &self,
        imports: &[Import],
        q: &ImportQuery,
    ) -> Vec<(PathBuf, String, String)> {
        let before = q.near.get(..q.cursor).unwrap_or("");
        let mut heads: Vec<(&str, &str)> = Vec::new();
        // `a.b.c|`: what the workspace reaches through `b` (`app.config.from_|`), when `a`
        // is not an imported module (then the namespace listing answers).
        let mut tail: Option<(&str, &str)> = None;
        if let Some(AtCursor::Attribute { chain, partial }) = at_cursor(before) {
            if chain.len() == 1 {
                heads.push((chain[0], partial));
            } else if chain.len() >= 2 && self.module_of(imports, &chain, q.path).is_none() {
                tail = chain.last().map(|t| (*t, partial));
            }
        }
        // A member being defined in a class body: the bases' members it may override.
        if let Some(partial) = member_being_defined(before) {
            heads.push(("self", partial));
        }
        // Names used as receivers near the cursor (`x.f`), and names just bound to a call
        // (`a = m.C()` above `a.|` not yet written), nearest first.
        let mut near: Vec<(usize, &str)> = chains_near(q.near, q.cursor)
            .into_iter()
            .filter(|(_, c)| c.len() >= 2)
            .map(|(d, c)| (d, c[0]))
            .chain(bindings_near(q.near, q.cursor))
            .collect();
        near.sort_by_key(|(d, _)| *d);
        for (_, head) in near {
            if !heads.iter().any(|(h, _)| *h == head) {
                heads.push((head, ""));
            }
        }
        let at = q.near_start + q.cursor;
        let mut out = Vec::new();
        if let Some((head, partial)) = tail {
            let (file, members) = (q.receiver_members)(head, partial);
            if let (Some(file), Some(text)) = (file, receiver_listing(head, &members, partial)) {
                out.push((file, format!("{head}."), text));
            }
        }
        let (mut looked, mut tried) = (0, 0);
        for (head, partial) in heads {
            if looked >= RECEIVERS {
                break;
            }
            let imported = imports.iter().any(|i| i.local == head);
            let mut classes: Vec<(PathBuf, Definition)> = Vec::new();
            if imported {
                // An imported variable bound to a class where it is defined
                // (`app = Flask(__name__)`, `current_app: "Flask" = LocalProxy(...)`); any
                // other imported name is the definitions' and namespaces' to show.
                tried += 1;
                if tried > IMPORTED_HEADS {
                    continue;
                }
                classes = self.imported_instance(imports, head, q.path);
                if classes.is_empty() {
                    continue;
                }
            } else {
                let types: Vec<Vec<&str>> = if head == "self" || head == "cls" {
                    enclosing_class_bases(q.text, at)
                } else {
                    bound_class(q.text, at, head).into_iter().collect()
                };
                for t in &types {
                    let mut found = Vec::new();
                    self.chain(imports, t, q.path, &mut found);
                    if found.is_empty() && t.len() == 1 {
                        // A class of this file (`class CustomFlask(flask.Flask):` in a
                        // test): its bases are what the workspace defines.
                        for base in local_class_bases(q.text, t[0]) {
                            self.chain(imports, &base, q.path, &mut found);
                        }
                    }
                    classes.extend(found.into_iter().filter(|(_, d)| is_class(d)));
                }
            }
            looked += 1;
            let mut names: Vec<String> = Vec::new();
            let mut seen: HashSet<String> = HashSet::new();
            let mut visited: HashSet<(PathBuf, String)> = HashSet::new();
            let mut first: Option<(PathBuf, Definition)> = None;
            for (file, def) in classes.into_iter().filter(|(f, _)| *f != q.path) {
                self.class_members(&file, &def, 0, &mut visited, &mut names, &mut seen);
                first.get_or_insert((file, def));
            }
            let Some((file, def)) = first else {
                // Not bound here to a class we know (a test's fixture, a parameter, the
                // result of a function): how the workspace uses the name.
                if head != "self" && head != "cls" {
                    let (file, members) = (q.receiver_members)(head, partial);
                    if let (Some(file), Some(text)) =
                        (file, receiver_listing(head, &members, partial))
                    {
                        out.push((file, format!("{head}."), text));
                    }
                }
                continue;
            };
            // Most used first (stable: definition order, most derived class first, breaks ties).
            names.sort_by_key(|n| std::cmp::Reverse((q.uses)(n)));
            if let Some(text) = member_listing(&signature_line(&def), &names, partial) {
                out.push((file, def.name, text));
            }
        }
        out
    }

    /// The classes an imported name's definition binds it to: `name = C(...)` or
    /// `name: C = ...` in the module that defines it, `C` looked up there.
    fn imported_instance(
        &self,
        imports: &[Import],
        name: &str,
        from: &Path,
    ) -> Vec<(PathBuf, Definition)> {
        let mut found = Vec::new();
        self.chain(imports, &[name], from, &mut found);
        let mut out = Vec::new();
        for (file, def) in found {
            // A module-level assignment's summary is its line (`app = Flask(__name__)`);
            // a function's or a class's begins with `def`, `class` or a decorator.
            let Some(rest) = def
                .summary
                .lines()
                .next()
                .and_then(|l| l.strip_prefix(def.name.as_str()))
            else {
                continue;
            };
            let rest = rest.trim_start();
            let chain = if let Some(ann) = rest.strip_prefix(':') {
                annotated_class(ann)
            } else if let Some(rhs) = rest.strip_prefix('=') {
                let (chain, after) = leading_chain(rhs.trim_start());
                after.starts_with('(').then_some(chain)
            } else {
                None
            };
            if let Some(chain) = chain.filter(|c| !c.is_empty()) {
                out.extend(self.class_in(&file, &chain));
            }
        }
        out
    }

    /// The class a dotted name means in the module `file`: its own class, or one it
    /// imports.
    fn class_in(&self, file: &Path, chain: &[&str]) -> Vec<(PathBuf, Definition)> {
        let Some(outline) = self.imports.outline(file, self.files, self.said) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        match outline
            .definitions
            .iter()
            .rev()
            .find(|d| chain.len() == 1 && d.name == chain[0] && is_class(d))
        {
            Some(d) => found.push((file.to_path_buf(), d.clone())),
            None => self.chain(&outline.imports, chain, file, &mut found),
        }
        found.retain(|(_, d)| is_class(d));
        found
    }

    /// The public members of the class `def` of `file`, then those of its bases.
    fn class_members(
        &self,
        file: &Path,
        def: &Definition,
        depth: usize,
        visited: &mut HashSet<(PathBuf, String)>,
        names: &mut Vec<String>,
        seen: &mut HashSet<String>,
    ) {
        if depth > BASE_DEPTH || !visited.insert((file.to_path_buf(), def.name.clone())) {
            return;
        }
        for m in &def.members {
            if !m.starts_with('_') && seen.insert(m.clone()) {
                names.push(m.clone());
            }
        }
        let sig = signature_line(def);
        let Some((_, after)) = sig.strip_prefix("class ").map(leading_chain) else {
            return;
        };
        for chain in bases(after) {
            for (f, d) in self.class_in(file, &chain) {
                self.class_members(&f, &d, depth + 1, visited, names, seen);
            }
        }
    }

    /// Resolve a use `a.b.c` against the imports of the file `from`.
    fn chain(
        &self,
        imports: &[Import],
        chain: &[&str],
        from: &Path,
        out: &mut Vec<(PathBuf, Definition)>,
    ) {
        let first = chain[0];
        let Some(imp) = imports.iter().rev().find(|i| i.local == first) else {
            for w in imports.iter().filter(|i| i.wildcard) {
                if let Some(file) = self.lang.resolve(&w.module, from, self.roots) {
                    let mut visited = HashSet::new();
                    self.name(&file, first, &chain[1..], 0, &mut visited, out);
                }
            }
            return;
        };
        let Some(file) = self.lang.resolve(&imp.module, from, self.roots) else {
            // `import a.b` where only `a.b` resolves is handled below; nothing else to do.
            return;
        };
        let mut visited = HashSet::new();
        match &imp.name {
            Some(name) => self.name(&file, name, &chain[1..], 0, &mut visited, out),
            None if imp.dotted => {
                // `import a.b` binds `a`: walk the use's parts down the package tree.
                let mut file = match self.lang.resolve(
                    &ModuleRef {
                        level: 0,
                        path: vec![first.to_string()],
                    },
                    from,
                    self.roots,
                ) {
                    Some(f) => f,
                    None => file,
                };
                let mut i = 1;
                while i < chain.len() {
                    match self.lang.submodule(&file, chain[i]) {
                        Some(sub) => {
                            file = sub;
                            i += 1;
                        }
                        None => break,
                    }
                }
                if i < chain.len() {
                    self.name(&file, chain[i], &chain[i + 1..], 0, &mut visited, out);
                }
            }
            None => {
                if let Some(name) = chain.get(1) {
                    self.name(&file, name, &chain[2..], 0, &mut visited, out);
                }
            }
        }
    }

    /// Find `name` in the module `file`: a definition, a re-export, or a submodule (then
    /// `rest` is looked up in it).
    fn name(
        &self,
        file: &Path,
        name: &str,
        rest: &[&str],
        depth: usize,
        visited: &mut HashSet<(PathBuf, String)>,
        out: &mut Vec<(PathBuf, Definition)>,
    ) {
        if !visited.insert((file.to_path_buf(), name.to_string())) {
            self.said.info(
                format!("cycle:{}:{name}", file.display()),
                format_args!(
                    "import cycle through {} (name `{name}`): not followed again",
                    file.display()
                ),
            );
            return;
        }
        if depth > MAX_DEPTH {
            return;
        }
        let Some(outline) = self.imports.outline(file, self.files, self.said) else {
            return;
        };
        if let Some(def) = outline.definitions.iter().rev().find(|d| d.name == name) {
            out.push((file.to_path_buf(), def.clone()));
            return;
        }
        if let Some(imp) = outline.imports.iter().rev().find(|i| i.local == name) {
            if let Some(target) = self.lang.resolve(&imp.module, file, self.roots) {
                match &imp.name {
                    Some(n) => self.name(&target, n, rest, depth + 1, visited, out),
                    None => {
                        if let Some(next) = rest.first() {
                            self.name(&target, next, &rest[1..], depth + 1, visited, out);
                        }
                    }
                }
                return;
            }
        }
        if let Some(sub) = self.lang.submodule(file, name) {
            if let Some(next) = rest.first() {
                self.name(&sub, next, &rest[1..], depth + 1, visited, out);
            }
            return;
        }
        for w in outline.imports.iter().filter(|i| i.wildcard) {
            if let Some(target) = self.lang.resolve(&w.module, file, self.roots) {
                self.name(&target, name, rest, depth + 1, visited, out);
            }
        }
    }
}

/// Dotted uses (`m.f`, `a.b.c`, `f`) in `text`, each once, nearest `cursor` first, with
/// their distance in bytes.
pub fn chains_near(text: &str, cursor: usize) -> Vec<(usize, Vec<&str>)> {
    let mut chains: Vec<(usize, Vec<&str>)> = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    let mut cur_start: usize = 0;
    let mut last_end: usize = 0;
    fn flush<'t>(cur: &mut Vec<&'t str>, d: usize, chains: &mut Vec<(usize, Vec<&'t str>)>) {
        if !cur.is_empty() {
            chains.push((d, std::mem::take(cur)));
        }
    }
    // Names on import lines are bindings, not uses.
    let mut import_lines: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with("import ") || t.starts_with("from ") {
            import_lines.push(start..start + line.len());
        }
        start += line.len();
    }
    for (at, ident) in identifiers(text) {
        if import_lines.iter().any(|r| r.contains(&at)) {
            continue;
        }
        let joined = !cur.is_empty() && text.get(last_end..at) == Some(".");
        if !joined {
            flush(&mut cur, cur_start.abs_diff(cursor), &mut chains);
            cur_start = at;
        }
        // An identifier preceded by `.` but not joined (`x().f`) is an attribute of
        // something unknown: not a use of an import.
        let after_dot = at > 0 && text.as_bytes()[at - 1] == b'.';
        if joined || !after_dot {
            cur.push(ident);
        }
        last_end = at + ident.len();
    }
    flush(&mut cur, cur_start.abs_diff(cursor), &mut chains);
    chains.sort_by_key(|(d, _)| *d);
    let mut seen = HashSet::new();
    chains.retain(|(_, c)| seen.insert(c.clone()));
    chains
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_of_every_form() {
        let text = "import os\nimport a.b\nimport a.b as m\nfrom .x import y as z, w\n\
                    from ..pkg.mod import (\n    f,\n    g,\n)\nfrom q import *\n\
                    def h():\n    import inner\n";
        let imps = Python.imports(text);
        let brief: Vec<(String, usize, String, Option<String>, bool)> = imps
            .iter()
            .map(|i| {
                (
                    i.local.clone(),
                    i.module.level,
                    i.module.path.join("."),
                    i.name.clone(),
                    i.dotted,
                )
            })
            .collect();
        let s = |x: &str| x.to_string();
        assert_eq!(
            brief,
            vec![
                (s("os"), 0, s("os"), None, false),
                (s("a"), 0, s("a.b"), None, true),
                (s("m"), 0, s("a.b"), None, false),
                (s("z"), 1, s("x"), Some(s("y")), false),
                (s("w"), 1, s("x"), Some(s("w")), false),
                (s("f"), 2, s("pkg.mod"), Some(s("f")), false),
                (s("g"), 2, s("pkg.mod"), Some(s("g")), false),
                (s("*"), 0, s("q"), None, false),
                (s("inner"), 0, s("inner"), None, false),
            ]
        );
        assert!(imps[7].wildcard);
    }

    #[test]
    fn outlines_keep_signatures_and_docstrings_not_bodies() {
        let text = "\"\"\"Module.\"\"\"\nimport os\nLIMIT = 10\n\n@cache\ndef f(a, b=1) -> int:\n    \"\"\"Add.\n\n    More.\n    \"\"\"\n    secret = a + b\n    return secret\n\n\
                    class C(Base):\n    \"\"\"A C.\"\"\"\n    size: int = 3\n    def __init__(self, x):\n        self.x = x\n    def run(self, n):\n        \"\"\"Run n times.\n\n        Long.\"\"\"\n        return n\n    def _hidden(self):\n        pass\n";
        let o = Python.outline(text);
        assert!(!o.syntax_errors);
        let names: Vec<&str> = o.definitions.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["LIMIT", "f", "C"]);
        assert_eq!(o.definitions[0].summary, "LIMIT = 10");
        let f = &o.definitions[1];
        assert_eq!(f.line, 4);
        assert_eq!(
            f.summary,
            "@cache\ndef f(a, b=1) -> int:\n    \"\"\"Add.\n\n    More.\n    \"\"\"\n    ..."
        );
        assert!(!f.summary.contains("secret"));
        let c = &o.definitions[2];
        assert_eq!(
            c.summary,
            "class C(Base):\n    \"\"\"A C.\"\"\"\n    size: int = 3\n    def __init__(self, x):\n    def run(self, n):\n        \"\"\"Run n times."
        );
        assert_eq!(c.members, ["size", "__init__", "run", "_hidden"]);
        assert_eq!(o.imports.len(), 1);
        let names: Vec<&str> = o.names().collect();
        assert!(names.contains(&"run") && names.contains(&"LIMIT"));
    }

    #[test]
    fn what_the_cursor_names_a_member_of() {
        let m = |level, p: &[&str]| ModuleRef {
            level,
            path: p.iter().map(|s| s.to_string()).collect(),
        };
        let attr = |chain: Vec<&'static str>, partial| Some(AtCursor::Attribute { chain, partial });
        let table: Vec<(&str, Option<AtCursor>)> = vec![
            ("x = click.Pa", attr(vec!["click"], "Pa")),
            ("    @click.", attr(vec!["click"], "")),
            ("y(pkg.sub.f", attr(vec!["pkg", "sub"], "f")),
            ("    type=cli", attr(vec![], "cli")),
            ("    c", None),
            ("f().a", None),
            ("'s'.jo", None),
            ("import os.pa", None),
            (
                "from .core import Com",
                Some(AtCursor::FromImport {
                    module: m(1, &["core"]),
                    partial: "Com",
                }),
            ),
            (
                "from pkg.mod import a, ",
                Some(AtCursor::FromImport {
                    module: m(0, &["pkg", "mod"]),
                    partial: "",
                }),
            ),
            (
                "from .. import (\n    a,\n    b",
                Some(AtCursor::FromImport {
                    module: m(2, &[]),
                    partial: "b",
                }),
            ),
            (
                "from flask.globals im",
                Some(AtCursor::FromImport {
                    module: m(0, &["flask", "globals"]),
                    partial: "",
                }),
            ),
            ("from flask.glo", None),
            (
                "from importlib.metadata im",
                Some(AtCursor::FromImport {
                    module: m(0, &["importlib", "metadata"]),
                    partial: "",
                }),
            ),
            (
                "from imports.x import a",
                Some(AtCursor::FromImport {
                    module: m(0, &["imports", "x"]),
                    partial: "a",
                }),
            ),
            ("from x import (a)\ny = z.", attr(vec!["z"], "")),
            ("from x import (a,\n b)\n", None),
            ("from  import a", None),
        ];
        for (before, want) in table {
            assert_eq!(at_cursor(before), want, "{before:?}");
        }
    }

    #[test]
    fn a_namespace_lists_re_exports_and_definitions_that_match_what_is_typed() {
        let init = Python.outline(
            "import os\nfrom .core import Argument as Argument\nfrom .core import Command\n\
             from .types import Path, ParamType\nfrom .x import *\nimport a.b as ab\n\
             @deco\ndef echo(\n    message=None,\n    err=False,\n) -> None:\n    pass\n\
             class Group(Command):\n    def add(self): pass\n_private = 1\nVERSION = '8'\n",
        );
        assert_eq!(
            namespace_listing(&init, "", &|_| 0).unwrap(),
            "from .core import Argument, Command\nfrom .types import Path, ParamType\n\
             from .x import *\n\
             def echo( message=None, err=False, ) -> None:\nclass Group(Command):\nVERSION = '8'"
        );
        assert_eq!(
            namespace_listing(&init, "Pa", &|_| 0).unwrap(),
            "from .types import Path, ParamType"
        );
        assert_eq!(
            namespace_listing(&init, "Gr", &|_| 0).unwrap(),
            "class Group(Command):"
        );
        assert_eq!(namespace_listing(&init, "Zz", &|_| 0), None);
    }

    #[test]
    fn the_ranked_namespace_keeps_the_most_used_names_in_the_module_order() {
        let mut text = String::from("from .core import Argument, Command, Group\n");
        for i in 0..NAMESPACE_NAMES {
            text += &format!("def f{i}():\n    pass\n");
        }
        let o = Python.outline(&text);
        // Unranked, the listing stops at the cap in the module's order.
        let plain = namespace_listing(&o, "", &|_| 0).unwrap();
        assert!(plain.starts_with("from .core import Argument, Command, Group\ndef f0():"));
        assert!(!plain.contains(&format!("def f{}():", NAMESPACE_NAMES - 3)));
        // The used names stay, in the module's order; the least used leave.
        let uses = |n: &str| match n {
            "Group" => 9,
            "f47" => 5,
            "f46" => 5,
            "f45" => 5,
            _ => 0,
        };
        let ranked = namespace_listing(&o, "", &uses).unwrap();
        assert!(
            ranked.contains("from .core import Argument, Command, Group\n"),
            "{ranked}"
        );
        assert!(
            ranked.ends_with("def f45():\ndef f46():\ndef f47():"),
            "{ranked}"
        );
        assert_eq!(ranked.lines().count(), 1 + NAMESPACE_NAMES - 3);
    }

    #[test]
    fn what_a_variable_was_bound_to_and_the_enclosing_bases() {
        let table: Vec<(&str, &str, Option<Vec<&str>>)> = vec![
            ("app = Flask(__name__)\n$0", "app", Some(vec!["Flask"])),
            (
                "s = pkg.mod.Session(1)\ns.$0",
                "s",
                Some(vec!["pkg", "mod", "Session"]),
            ),
            (
                "def f(ctx: Context, n: int):\n    ctx.$0",
                "ctx",
                Some(vec!["Context"]),
            ),
            (
                "def f(ctx: t.Optional[Context]):\n    ctx.$0",
                "ctx",
                Some(vec!["Context"]),
            ),
            ("c = A()\nc = B()\nc.$0", "c", Some(vec!["B"])),
            ("if app == x:\n    app.$0", "app", None),
            ("app = make\napp.$0", "app", None),
            ("myapp = Flask()\napp.$0", "app", None),
            ("x.app = Flask()\napp.$0", "app", None),
        ];
        for (marked, name, want) in table {
            let at = marked.find("$0").unwrap();
            let text = marked.replace("$0", "");
            assert_eq!(bound_class(&text, at, name), want, "{marked:?}");
        }
        let bases: Vec<(&str, Vec<Vec<&str>>)> = vec![
            (
                "class A(Base, m.Mixin, metaclass=M):\n    def f(self):\n        self.$0",
                vec![vec!["Base"], vec!["m", "Mixin"]],
            ),
            ("class A(Base):\n    x = 1\n\n    $0", vec![vec!["Base"]]),
            (
                "class A(Base):\n    pass\n\ndef g(self):\n    self.$0",
                vec![],
            ),
            ("class A:\n    def f(self):\n        self.$0", vec![]),
            (
                "class A(G[T]):\n    def f(self):\n        if x:\n            self.$0",
                vec![vec!["G"]],
            ),
        ];
        for (marked, want) in bases {
            let at = marked.find("$0").unwrap();
            let text = marked.replace("$0", "");
            assert_eq!(enclosing_class_bases(&text, at), want, "{marked:?}");
        }
        let local: Vec<(&str, &str, Vec<Vec<&str>>)> = vec![
            (
                "def t():\n    class C(flask.Flask, M, metaclass=X):\n        pass\n",
                "C",
                vec![vec!["flask", "Flask"], vec!["M"]],
            ),
            ("class C:\n    pass\n", "C", vec![]),
            ("class CC(A):\n    pass\n", "C", vec![]),
            (
                "class C(A):\n    pass\nclass C(B):\n    pass\n",
                "C",
                vec![vec!["B"]],
            ),
        ];
        for (text, name, want) in local {
            assert_eq!(local_class_bases(text, name), want, "{text:?}");
        }
        // `a = m.C(...)` lines, nearest the cursor first, each name once; comparisons,
        // attribute assignments and non-calls are not bindings.
        let text = "a = m.C()\nb = 3\nif c == D():\n    c == D()\n    x.y = E()\n    d = F(1)\n    r = s.get(\n        timeout=T(5),\n    )\n    a = G()\n$0\ne = H()\n";
        let (at, plain) = (text.find("$0").unwrap(), text.replace("$0", ""));
        let got: Vec<&str> = bindings_near(&plain, at)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(got, ["a", "r", "d"]);
    }

    #[test]
    fn imports_above_the_window_one_statement_a_line() {
        let text = "\"\"\"Doc: from the start import nothing.\"\"\"\nimport os\nfrom .core import (\n    Command,\n    Group,  # groups\n)\nfrom .x import \\\n    y\n\ndef f():\n    from .late import z\n    return 1\n";
        let at = text.find("def f").unwrap();
        assert_eq!(
            imports_above(text, at),
            vec![
                (1, "import os".to_string()),
                (2, "from .core import (Command, Group)".to_string()),
                (6, "from .x import y".to_string()),
            ]
        );
        // What the window shows is not repeated; nothing above it, nothing to show.
        assert_eq!(imports_above(text, text.find("from .x").unwrap()).len(), 2);
        assert!(imports_above(text, 0).is_empty());
    }

    #[test]
    fn import_lines_members_being_defined_and_what_a_file_binds() {
        // `|` marks the cursor.
        let cases = [
            ("fro|", true),
            ("imp|", true),
            ("fr|", false),
            ("i|", false),
            ("from .x im|", true),
            ("import o|", true),
            ("    from .y import (a,|", true),
            ("from .core import (\n    Command,\n    Gr|", true),
            ("from .core import (\n    Command,\n)\nx = Gr|", false),
            ("import os\n|", true),
            ("import os\n\nx = 1\n|", false),
            ("x = f|", false),
            ("def from_x(|", false),
            ("|", false),
            ("    return fr|", false),
        ];
        for (marked, want) in cases {
            let at = marked.find('|').unwrap();
            let text = marked.replace('|', "");
            assert_eq!(in_import_statement(&text, at), want, "{marked:?}");
        }
        let defs = [
            ("class A(B):\n    de", Some("")),
            ("class A(B):\n    def log_", Some("log_")),
            ("class A(B):\n    async def ", Some("")),
            ("class A(B):\n    def f(se", None),
            ("class A(B):\n    d", None),
            ("class A(B):\n    comma", Some("comma")),
            ("class A(B):\n    pass", None),
            ("class A(B):\n    x = ", None),
            ("class A(B):\n    def f(self):\n        de", None),
            ("def f():\n    class S(m.B):\n        def lo", Some("lo")),
            ("de", None),
            ("    return d", None),
        ];
        for (before, want) in defs {
            assert_eq!(member_being_defined(before), want, "{before:?}");
        }
        let text = "from .x import a, b as c\nimport os\nclass K(Base):\n    n: int = 1\n\
                    def f(p, *args, q: Type = D, **kw) -> Dict[str, Any]:\n    v = use(p, E)\n    \
                    for i, j in it:\n        o.attr = F\n    with g() as w:\n        pass\n\
                    def long(\n    first,\n    second: Union[A, Bx] = H,\n) -> R:\n    \
                    t1, t2 = pair(kw_arg=1)\n    if t1 == CMP:\n        pass\n    \
                    d[sub_fn(x)] = 2\n";
        let bound = bound_names(text);
        for n in [
            "a", "b", "c", "os", "K", "n", "f", "p", "args", "q", "kw", "v", "i", "j", "w", "long",
            "first", "second", "t1", "t2",
        ] {
            assert!(bound.contains(n), "{n}");
        }
        // Uses, annotations (inside brackets too), defaults, bases, attribute stores,
        // keyword arguments and comparisons bind nothing.
        for n in [
            "Base", "Type", "D", "Dict", "Any", "R", "use", "E", "it", "attr", "F", "g", "A", "Bx",
            "H", "pair", "kw_arg", "CMP", "sub_fn",
        ] {
            assert!(!bound.contains(n), "{n}");
        }
    }

    #[test]
    fn import_spelling_is_relative_inside_a_package_and_absolute_across() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["src/flask/sansio", "tests"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in ["src/flask/__init__.py", "src/flask/sansio/__init__.py"] {
            std::fs::write(r.join(f), "").unwrap();
        }
        let at = |p: &str| r.join(p);
        let cases = [
            (
                "src/flask/debughelpers.py",
                "src/flask/sansio/scaffold.py",
                ".sansio.scaffold",
            ),
            (
                "src/flask/sansio/blueprints.py",
                "src/flask/app.py",
                "..app",
            ),
            (
                "src/flask/app.py",
                "src/flask/sansio/__init__.py",
                ".sansio",
            ),
            (
                "tests/test_reqctx.py",
                "src/flask/sessions.py",
                "flask.sessions",
            ),
            ("src/flask/app.py", "tests/conftest.py", "conftest"),
        ];
        for (doc, file, want) in cases {
            assert_eq!(
                import_spelling(&at(doc), &at(file)),
                want,
                "{doc} <- {file}"
            );
        }
    }

    #[test]
    fn member_and_receiver_listings_fit_lines_and_filter_by_what_is_typed() {
        let names: Vec<String> = (0..30).map(|i| format!("member_{i}")).collect();
        let l = member_listing("class Big(Base):", &names, "").unwrap();
        assert!(l.starts_with("class Big(Base):\n    members: member_0, member_1,"));
        assert!(l.lines().all(|x| x.len() <= NAMESPACE_LINE_CHARS), "{l}");
        assert_eq!(
            member_listing("class Big(Base):", &names, "member_2").unwrap(),
            "class Big(Base):\n    members: member_2, member_20, member_21, member_22, member_23, member_24, member_25, member_26, member_27,\n    member_28, member_29"
        );
        assert_eq!(member_listing("class Big:", &names, "zz"), None);
        let m = vec!["test_client".to_string(), "route".to_string()];
        assert_eq!(
            receiver_listing("app", &m, "").unwrap(),
            "app: test_client, route"
        );
        assert_eq!(receiver_listing("app", &m, "ro").unwrap(), "app: route");
        assert_eq!(receiver_listing("app", &m, "x"), None);
    }

    #[test]
    fn prose_is_comments_and_string_text() {
        let text = "x = f\"a {name} b\"  # see Helper\ny = 'word' + z\n";
        let prose: Vec<&str> = prose_ranges(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(prose, ["a ", " b", "# see Helper", "word"]);
    }

    #[test]
    fn broken_code_still_outlines_what_it_can() {
        let o = Python
            .outline("def ok(a):\n    return a\n\ndef broken(:\n    pass\n\nclass K:\n    pass\n");
        assert!(o.syntax_errors);
        assert!(o.definitions.iter().any(|d| d.name == "ok"));
        // Never panics, whatever the text.
        for t in [
            "",
            "(((",
            "def",
            "class :",
            "from . import",
            "import",
            "\u{0}\u{fffd}",
        ] {
            let _ = Python.outline(t);
            let _ = Python.imports(t);
        }
    }

    #[test]
    fn chains_are_dotted_uses_nearest_first() {
        let text = "x = m.f(1)\ny = obj.attr.g\nz = a.b.c(q)";
        let cursor = text.len();
        let chains: Vec<Vec<&str>> = chains_near(text, cursor)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(
            chains,
            vec![
                vec!["q"],
                vec!["a", "b", "c"],
                vec!["z"],
                vec!["obj", "attr", "g"],
                vec!["y"],
                vec!["m", "f"],
                vec!["x"],
            ]
        );
        let broken: Vec<Vec<&str>> = chains_near("f().g", 0)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(broken, vec![vec!["f"]]);
    }
}
