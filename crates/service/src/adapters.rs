//! Which LoRA adapter serves a document: the `adapters` setting maps a workspace folder, or
//! its git remote URL, to an adapter directory; a repository can also name its own in
//! `.copilot-lsp/adapter` (a path, relative to the repository root). The document's
//! workspace is the longest workspace root that contains it, so one repository's adapter is
//! never used for another's files.
//!
//! The files of an opened repository are untrusted input (a clone can hold a symlink to
//! `/dev/stdin` or `/dev/zero`, or a path that climbs out of it): they are read only as
//! regular files, opened without blocking, up to a size cap ([`read_repo_file`]); a path the
//! repository names must resolve inside the workspace unless the user's own `adapters`
//! setting lists it. [`Adapters`] resolves each workspace once (per settings), on a blocking
//! thread with a timeout, never under a lock and never per keystroke.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

/// The file a repository uses to name its adapter.
pub const REPO_ADAPTER_FILE: &str = ".copilot-lsp/adapter";

/// The most bytes read from one repository file for configuration (`.git/config`,
/// `.copilot-lsp/adapter`).
pub const REPO_FILE_CAP: u64 = 256 << 10;

/// How long a workspace's adapter resolution may take before it is given up as none.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Why a repository file was not read.
#[derive(Debug, thiserror::Error)]
pub enum RepoFileError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path} is larger than {cap} bytes")]
    TooLarge { path: PathBuf, cap: u64 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RepoFileError {
    /// The file does not exist: the ordinary case, not worth a message.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Read a file of an untrusted repository as text: only a regular file (symlinks are
/// followed, but what they reach must be a regular file), opened without blocking (a FIFO
/// cannot hang the caller), at most `cap` bytes. Blocking I/O: call off the async runtime.
pub fn read_repo_file(path: &Path, cap: u64) -> Result<String, RepoFileError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(|source| RepoFileError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // Checked on the open file, not the path: nothing can swap it in between.
    let meta = file.metadata().map_err(|source| RepoFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(RepoFileError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > cap {
        return Err(RepoFileError::TooLarge {
            path: path.to_path_buf(),
            cap,
        });
    }
    let mut bytes = Vec::new();
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|source| RepoFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The URL of the `origin` remote (else the first remote) in `<root>/.git/config`.
pub fn git_remote(root: &Path) -> Option<String> {
    let text = match read_repo_file(&root.join(".git/config"), REPO_FILE_CAP) {
        Ok(t) => t,
        Err(e) if e.is_missing() => return None,
        Err(e) => {
            tracing::warn!("git remote not read: {e}");
            return None;
        }
    };
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

/// What serves one workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The base model.
    Base,
    /// The adapter in this directory.
    Adapter(PathBuf),
    /// The repository named an adapter that is not used (the base model serves); the
    /// message says why, for the user, once.
    Refused(String),
}

impl Resolution {
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Self::Adapter(d) => Some(d),
            _ => None,
        }
    }
}

/// Resolve the adapter of the workspace at `root` (blocking I/O: call off the runtime).
/// The user's `adapters` setting is trusted; what the repository names is not.
pub fn resolve(root: &Path, map: &BTreeMap<String, String>) -> Resolution {
    let resolve_user = |dir: &str| {
        let p = PathBuf::from(dir);
        if p.is_absolute() {
            p
        } else {
            root.join(p)
        }
    };
    let root_str = root.display().to_string();
    if let Some(dir) = map
        .iter()
        .find(|(k, _)| trim(k) == trim(&root_str))
        .map(|(_, v)| v)
    {
        return Resolution::Adapter(resolve_user(dir));
    }
    if let Some(dir) = git_remote(root).and_then(|url| map.get(&url)) {
        return Resolution::Adapter(resolve_user(dir));
    }
    let file = root.join(REPO_ADAPTER_FILE);
    let named = match read_repo_file(&file, REPO_FILE_CAP) {
        Ok(t) => t,
        Err(e) if e.is_missing() => return Resolution::Base,
        Err(e) => return Resolution::Refused(format!("adapter file not used: {e}")),
    };
    let named = named.trim();
    if named.is_empty() {
        return Resolution::Base;
    }
    if named.contains(['\n', '\0']) {
        return Resolution::Refused(format!(
            "{} names more than one line; expected one path",
            file.display()
        ));
    }
    let wanted = root.join(named);
    let (Ok(real), Ok(real_root)) = (wanted.canonicalize(), root.canonicalize()) else {
        return Resolution::Refused(format!(
            "the adapter `{named}` named by {} does not exist",
            file.display()
        ));
    };
    let listed = map
        .values()
        .filter_map(|v| resolve_user(v).canonicalize().ok())
        .any(|p| p == real);
    if real.starts_with(&real_root) || listed {
        Resolution::Adapter(real)
    } else {
        Resolution::Refused(format!(
            "the adapter `{named}` named by {} lies outside the workspace; list it in the \
             `adapters` setting to use it",
            file.display()
        ))
    }
}

/// Each workspace's adapter, resolved once per settings on a blocking thread.
#[derive(Debug, Default)]
pub struct Adapters {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: BTreeMap<String, String>,
    roots: Vec<String>,
    resolved: HashMap<String, Arc<OnceCell<Resolution>>>,
}

impl Adapters {
    /// New settings or workspace folders: forget what was resolved if they changed.
    pub fn configure(&self, map: &BTreeMap<String, String>, roots: &[String]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.map != *map || inner.roots != roots {
            inner.map = map.clone();
            inner.roots = roots.to_vec();
            inner.resolved.clear();
        }
    }

    /// A workspace's files changed where its adapter is named: resolve it again next time.
    pub fn invalidate(&self, root: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.resolved.remove(trim(root));
    }

    /// The workspace root and the resolution for the file at `path`; `None` outside every
    /// workspace (the base model serves: never another repository's adapter).
    pub async fn for_file(&self, path: &str) -> Option<(String, Resolution)> {
        let (root, cell, map) = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let root = root_of(path, &inner.roots)?.to_string();
            let map = inner.map.clone();
            let cell = inner.resolved.entry(root.clone()).or_default().clone();
            (root, cell, map)
        };
        let r = cell
            .get_or_init(|| {
                let root = root.clone();
                async move {
                    let dir = PathBuf::from(&root);
                    let task = tokio::task::spawn_blocking(move || resolve(&dir, &map));
                    match tokio::time::timeout(RESOLVE_TIMEOUT, task).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => Resolution::Refused(format!(
                            "resolving the adapter of {root} failed: {e}"
                        )),
                        Err(_) => Resolution::Refused(format!(
                            "resolving the adapter of {root} took over {}s; the base model serves",
                            RESOLVE_TIMEOUT.as_secs()
                        )),
                    }
                }
            })
            .await
            .clone();
        Some((root, r))
    }
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

    fn adapter_for(
        path: &str,
        roots: &[String],
        map: &BTreeMap<String, String>,
    ) -> Option<PathBuf> {
        let root = root_of(path, roots)?;
        resolve(Path::new(root), map).dir().map(Path::to_path_buf)
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
        std::fs::create_dir_all(c.join("adapters/c-lora")).unwrap();
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
            Some(c.join("adapters/c-lora").canonicalize().unwrap())
        );
        // A workspace with nothing configured, and a file outside every workspace: none.
        assert_eq!(
            adapter_for(&format!("{}/d/m.py", s(tmp.path())), &roots, &map),
            None
        );
        assert_eq!(adapter_for("/other/m.py", &roots, &map), None);
    }

    #[cfg(unix)]
    #[test]
    fn repository_files_are_read_only_as_small_regular_files() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);
        std::fs::write(p("ok"), "adapters/x\n").unwrap();
        assert_eq!(read_repo_file(&p("ok"), 64).unwrap(), "adapters/x\n");
        symlink(p("ok"), p("link")).unwrap();
        assert_eq!(read_repo_file(&p("link"), 64).unwrap(), "adapters/x\n");
        std::fs::write(p("big"), vec![b'a'; 65]).unwrap();
        assert!(matches!(
            read_repo_file(&p("big"), 64),
            Err(RepoFileError::TooLarge { .. })
        ));
        symlink("/dev/zero", p("zero")).unwrap();
        assert!(matches!(
            read_repo_file(&p("zero"), 64),
            Err(RepoFileError::NotRegular { .. })
        ));
        // A FIFO with no writer: opening it for reading would block without O_NONBLOCK.
        let fifo = std::ffi::CString::new(p("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_repo_file(&p("fifo"), 64),
            Err(RepoFileError::NotRegular { .. })
        ));
        assert!(read_repo_file(&p("missing"), 64).unwrap_err().is_missing());
        std::fs::create_dir(p("dir")).unwrap();
        assert!(matches!(
            read_repo_file(&p("dir"), 64),
            Err(RepoFileError::NotRegular { .. })
        ));
    }

    #[test]
    fn a_repository_cannot_name_an_adapter_outside_itself_unless_the_user_lists_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join(".copilot-lsp")).unwrap();
        std::fs::create_dir_all(root.join("lora")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let name = |t: &str| std::fs::write(root.join(REPO_ADAPTER_FILE), t).unwrap();
        let none = BTreeMap::new();

        name("lora\n");
        assert_eq!(
            resolve(&root, &none),
            Resolution::Adapter(root.join("lora").canonicalize().unwrap())
        );
        name("../outside");
        let r = resolve(&root, &none);
        assert!(
            matches!(&r, Resolution::Refused(m) if m.contains("outside the workspace")),
            "{r:?}"
        );
        // Listed in the user's own settings (for another workspace): trusted.
        let mut listed = BTreeMap::new();
        listed.insert(
            "/some/other/root".to_string(),
            outside.display().to_string(),
        );
        assert_eq!(
            resolve(&root, &listed),
            Resolution::Adapter(outside.canonicalize().unwrap())
        );
        // A symlink inside the repository that points out is outside too.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, root.join("sneaky")).unwrap();
            name("sneaky");
            assert!(matches!(resolve(&root, &none), Resolution::Refused(_)));
        }
        name("does/not/exist");
        assert!(
            matches!(resolve(&root, &none), Resolution::Refused(m) if m.contains("does not exist"))
        );
        name("   \n");
        assert_eq!(resolve(&root, &none), Resolution::Base);
    }

    #[tokio::test]
    async fn each_workspace_is_resolved_once_until_the_settings_change() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        std::fs::create_dir_all(root.join(".copilot-lsp")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::write(root.join(REPO_ADAPTER_FILE), "a").unwrap();
        let roots = vec![root.display().to_string()];
        let file = root.join("m.py").display().to_string();
        let adapters = Adapters::default();
        adapters.configure(&BTreeMap::new(), &roots);
        let first = adapters.for_file(&file).await.unwrap().1;
        assert_eq!(
            first.dir(),
            Some(root.join("a").canonicalize().unwrap().as_path())
        );
        // Changed on disk: the cached answer stands until something says so.
        std::fs::write(root.join(REPO_ADAPTER_FILE), "b").unwrap();
        assert_eq!(adapters.for_file(&file).await.unwrap().1, first);
        adapters.invalidate(&roots[0]);
        let b = adapters.for_file(&file).await.unwrap().1;
        assert_eq!(
            b.dir(),
            Some(root.join("b").canonicalize().unwrap().as_path())
        );
        assert!(adapters.for_file("/elsewhere/m.py").await.is_none());
    }
}
