//! Which LoRA adapter serves a document: the `adapters` setting maps a workspace folder, or
//! its git remote URL, to an adapter directory; a repository can also name its own in
//! `.copilot-lsp/adapter` (a path, relative to the repository root). The document's
//! workspace is the longest workspace root that contains it, so one repository's adapter is
//! never used for another's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file a repository uses to name its adapter.
pub const REPO_ADAPTER_FILE: &str = ".copilot-lsp/adapter";

fn trim(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// The workspace root holding `path`: the longest root that is `path` or one of its parents.
pub fn root_of<'a>(path: &str, roots: &'a [String]) -> Option<&'a str> {
    roots
        .iter()
        .map(|r| trim(r))
        .filter(|r| {
            path == *r
                || path
                    .strip_prefix(*r)
                    .is_some_and(|rest| rest.starts_with('/') || r.ends_with('/'))
        })
        .max_by_key(|r| r.len())
}

/// The URL of the `origin` remote (else the first remote) in `<root>/.git/config`.
pub fn git_remote(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join(".git/config")).ok()?;
    let mut section = String::new();
    let mut first = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
        } else if let Some(url) = line
            .strip_prefix("url")
            .and_then(|r| r.trim_start().strip_prefix('='))
        {
            let url = url.trim().to_string();
            if section == "[remote \"origin\"]" {
                return Some(url);
            }
            if section.starts_with("[remote ") && first.is_none() {
                first = Some(url);
            }
        }
    }
    first
}

/// The adapter directory for a document at `path` (a file path), if any.
pub fn adapter_for(
    path: &str,
    roots: &[String],
    map: &BTreeMap<String, String>,
) -> Option<PathBuf> {
    let root = root_of(path, roots)?;
    let root_path = Path::new(root);
    let resolve = |dir: &str| {
        let p = PathBuf::from(dir);
        if p.is_absolute() {
            p
        } else {
            root_path.join(p)
        }
    };
    let by_folder = map.iter().find(|(k, _)| trim(k) == root).map(|(_, v)| v);
    if let Some(dir) = by_folder {
        return Some(resolve(dir));
    }
    if let Some(dir) = git_remote(root_path).and_then(|url| map.get(&url)) {
        return Some(resolve(dir));
    }
    let named = std::fs::read_to_string(root_path.join(REPO_ADAPTER_FILE)).ok()?;
    let named = named.trim();
    (!named.is_empty()).then(|| resolve(named))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_containing_root_wins() {
        let roots = vec!["/w/a".to_string(), "/w/a/sub/".to_string(), "/w/ab".into()];
        assert_eq!(root_of("/w/a/x.py", &roots), Some("/w/a"));
        assert_eq!(root_of("/w/a/sub/x.py", &roots), Some("/w/a/sub"));
        assert_eq!(root_of("/w/ab/x.py", &roots), Some("/w/ab"));
        assert_eq!(root_of("/w/abc/x.py", &roots), None);
        assert_eq!(root_of("/elsewhere/x.py", &roots), None);
    }

    #[test]
    fn folders_remotes_and_repository_files_name_adapters() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        let c = tmp.path().join("c");
        for d in [&a, &b, &c] {
            std::fs::create_dir_all(d.join(".git")).unwrap();
            std::fs::create_dir_all(d.join(".copilot-lsp")).unwrap();
        }
        std::fs::write(
            b.join(".git/config"),
            "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = https://x/up.git\n[remote \"origin\"]\n\turl = git@host:team/b.git\n",
        )
        .unwrap();
        std::fs::write(c.join(REPO_ADAPTER_FILE), "  adapters/c-lora\n").unwrap();
        let s = |p: &Path| p.display().to_string();
        let roots = vec![s(&a), s(&b), s(&c), s(&tmp.path().join("d"))];
        let mut map = BTreeMap::new();
        map.insert(format!("{}/", s(&a)), "/adapters/a".to_string());
        map.insert("git@host:team/b.git".to_string(), "/adapters/b".to_string());
        assert_eq!(
            adapter_for(&format!("{}/m.py", s(&a)), &roots, &map),
            Some(PathBuf::from("/adapters/a"))
        );
        assert_eq!(
            adapter_for(&format!("{}/pkg/m.py", s(&b)), &roots, &map),
            Some(PathBuf::from("/adapters/b"))
        );
        assert_eq!(
            adapter_for(&format!("{}/m.py", s(&c)), &roots, &map),
            Some(c.join("adapters/c-lora"))
        );
        // A workspace with nothing configured, and a file outside every workspace: none.
        assert_eq!(
            adapter_for(&format!("{}/d/m.py", s(tmp.path())), &roots, &map),
            None
        );
        assert_eq!(adapter_for("/other/m.py", &roots, &map), None);
    }
}
