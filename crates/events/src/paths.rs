//! Where the log lives: `$XDG_DATA_HOME/copilot-lsp/` (default `~/.local/share/copilot-lsp/`),
//! `events/` under it, one file per workspace folder named after the folder and a hash of
//! its canonical path (`myrepo-1f3a....jsonl`), and the rotated previous file beside it
//! (`myrepo-1f3a....1.jsonl`). The server and the CLI name a workspace's file alike, so
//! `copilot-lsp stats --workspace DIR` finds what the server wrote for `DIR`.

use std::path::{Path, PathBuf};

/// Folder of the log files under the data directory.
pub const EVENTS_DIR: &str = "events";
const EXT: &str = "jsonl";

/// `copilot-lsp`'s data directory: `$XDG_DATA_HOME/copilot-lsp` when that variable holds an
/// absolute path (the XDG spec ignores relative ones), else `$HOME/.local/share/copilot-lsp`;
/// `None` without a usable home.
pub fn data_dir() -> Option<PathBuf> {
    data_dir_from(
        std::env::var_os("XDG_DATA_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
}

fn data_dir_from(xdg: Option<&std::ffi::OsStr>, home: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if let Some(x) = xdg.map(Path::new).filter(|p| p.is_absolute()) {
        return Some(x.join("copilot-lsp"));
    }
    let home = home.map(Path::new).filter(|p| p.is_absolute())?;
    Some(home.join(".local/share/copilot-lsp"))
}

/// The canonical form of a workspace folder (symlinks resolved), or the path as given when
/// it cannot be resolved (a folder that no longer exists still names its old log).
pub fn canonical_root(root: &Path) -> PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())
}

/// FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The file stem of a workspace's log: its folder's name (letters, digits, `.`, `_`, `-`;
/// at most 40) and a hash of its canonical path.
pub fn stem(canonical: &Path) -> String {
    let name: String = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let name = name.trim_start_matches('.');
    let hash = fnv1a(canonical.as_os_str().as_encoded_bytes());
    if name.is_empty() {
        format!("{hash:016x}")
    } else {
        format!("{name}-{hash:016x}")
    }
}

/// The current log file of the workspace `canonical` under `data_dir`.
pub fn current_file(data_dir: &Path, canonical: &Path) -> PathBuf {
    data_dir
        .join(EVENTS_DIR)
        .join(format!("{}.{EXT}", stem(canonical)))
}

/// The rotated (previous) log file beside [`current_file`].
pub fn rotated_file(data_dir: &Path, canonical: &Path) -> PathBuf {
    data_dir
        .join(EVENTS_DIR)
        .join(format!("{}.1.{EXT}", stem(canonical)))
}

/// Every log file under `data_dir` (all workspaces), sorted.
pub fn all_files(data_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = data_dir.join(EVENTS_DIR);
    let mut out = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == EXT) && p.is_file() {
                    out.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn the_data_directory_follows_xdg() {
        let d =
            |x: Option<&str>, h: Option<&str>| data_dir_from(x.map(OsStr::new), h.map(OsStr::new));
        assert_eq!(
            d(Some("/x/data"), Some("/home/u")),
            Some(PathBuf::from("/x/data/copilot-lsp"))
        );
        assert_eq!(
            d(Some("relative"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.local/share/copilot-lsp"))
        );
        assert_eq!(
            d(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.local/share/copilot-lsp"))
        );
        assert_eq!(d(None, None), None);
        assert_eq!(d(Some(""), Some("")), None);
    }

    #[test]
    fn each_workspace_gets_its_own_stable_file() {
        let a = stem(Path::new("/w/my repo"));
        let b = stem(Path::new("/other/my repo"));
        assert!(a.starts_with("my_repo-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, stem(Path::new("/w/my repo")));
        assert_eq!(stem(Path::new("/")).len(), 16);
        assert!(!stem(Path::new("/w/..hidden")).starts_with('.'));
        let long = stem(Path::new(&format!("/w/{}", "é".repeat(100))));
        assert_eq!(long.len(), 40 + 1 + 16);
        let dir = Path::new("/data");
        let root = Path::new("/w/r");
        assert_eq!(
            current_file(dir, root),
            PathBuf::from(format!("/data/events/{}.jsonl", stem(root)))
        );
        assert_eq!(
            rotated_file(dir, root),
            PathBuf::from(format!("/data/events/{}.1.jsonl", stem(root)))
        );
    }
}
