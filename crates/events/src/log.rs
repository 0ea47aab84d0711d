//! The writer: events go over a bounded channel to one thread that serialises them and
//! appends one line each to their workspace's file, so that nothing on a request's path waits
//! for the disk (a send is a few microseconds; `copilot-lsp bench --scenario events` measures
//! it). Files are created `0600` in a `0700` folder; a file over the size cap is rotated to
//! `NAME.1.jsonl` (replacing the previous one), so a workspace keeps at most twice the cap.
//!
//! Any I/O failure (no home, a read-only or full disk) turns logging off for the rest of the
//! process with one call of the `on_fail` callback (the server shows it once as a warning);
//! the events are dropped, the caller never sees an error. So is an event that finds the
//! channel full (the disk is that slow): it is counted and dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::paths;
use crate::record::Event;

/// Default size cap of one log file (the previous one is kept beside it).
pub const DEFAULT_CAP_BYTES: u64 = 32 << 20;

/// Events queued at most; beyond, new ones are dropped.
const QUEUE: usize = 4096;

/// An event to build on the writer thread (where its costly parts, such as cutting a
/// context to a token budget, are off the caller's path).
pub type MakeEvent = Box<dyn FnOnce() -> Option<Event> + Send>;

enum Msg {
    Write(PathBuf, Event),
    Make(PathBuf, MakeEvent),
    Flush(mpsc::Sender<()>),
}

type OnFail = Arc<dyn Fn(String) + Send + Sync>;

/// The event log of one process: a handle to its writer thread (started at the first event).
pub struct Log {
    dir: Option<PathBuf>,
    cap: u64,
    tx: Mutex<Option<SyncSender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    failed: Arc<AtomicBool>,
    dropped: AtomicU64,
    on_fail: OnFail,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("failed", &self.is_failed())
            .finish_non_exhaustive()
    }
}

impl Log {
    /// A log under `dir` (the data directory: files go to `dir/events/`); `None` logs
    /// nothing and reports that once. `on_fail` is called once, from the writer thread, with
    /// a message for the user when logging stops.
    pub fn new(dir: Option<PathBuf>, on_fail: impl Fn(String) + Send + Sync + 'static) -> Self {
        Self {
            dir,
            cap: DEFAULT_CAP_BYTES,
            tx: Mutex::new(None),
            thread: Mutex::new(None),
            failed: Arc::new(AtomicBool::new(false)),
            dropped: AtomicU64::new(0),
            on_fail: Arc::new(on_fail),
        }
    }

    /// The same with another size cap per file (tests).
    pub fn with_cap(mut self, cap: u64) -> Self {
        self.cap = cap.max(1);
        self
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether logging has stopped after a failure.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Append `event` to the log of the workspace folder `root`.
    pub fn write(&self, root: &Path, event: Event) {
        self.send(Msg::Write(root.to_path_buf(), event));
    }

    /// Build an event on the writer thread and append it (nothing when `make` returns None).
    pub fn write_with(&self, root: &Path, make: MakeEvent) {
        self.send(Msg::Make(root.to_path_buf(), make));
    }

    /// Wait (at most `timeout`) until everything sent so far is written. False on timeout.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        let sent = {
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            match tx.as_ref() {
                // Never started: nothing to wait for.
                None => return true,
                Some(tx) => tx.send(Msg::Flush(ack)).is_ok(),
            }
        };
        sent && done.recv_timeout(timeout).is_ok()
    }

    fn send(&self, msg: Msg) {
        if self.is_failed() {
            return;
        }
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if tx.is_none() {
            let (t, rx) = mpsc::sync_channel(QUEUE);
            let writer = Writer {
                dir: self.dir.clone(),
                cap: self.cap,
                failed: self.failed.clone(),
                on_fail: self.on_fail.clone(),
                files: HashMap::new(),
            };
            match std::thread::Builder::new()
                .name("copilot-events".into())
                .spawn(move || writer.run(rx))
            {
                Ok(h) => *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(h),
                Err(e) => {
                    self.fail(format!("cannot start the event writer: {e}"));
                    return;
                }
            }
            *tx = Some(t);
        }
        if let Some(t) = tx.as_ref() {
            match t.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("event log queue full: event dropped");
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    fn fail(&self, message: String) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            (self.on_fail)(message);
        }
    }
}

impl Drop for Log {
    /// Close the channel and let the writer finish what is queued.
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

struct Open {
    path: PathBuf,
    rotated: PathBuf,
    file: File,
    size: u64,
}

struct Writer {
    dir: Option<PathBuf>,
    cap: u64,
    failed: Arc<AtomicBool>,
    on_fail: OnFail,
    /// Open files by workspace folder (as the server names it).
    files: HashMap<PathBuf, Open>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        for msg in rx {
            let (root, event) = match msg {
                Msg::Flush(ack) => {
                    let _ = ack.send(());
                    continue;
                }
                Msg::Write(root, e) => (root, Some(e)),
                Msg::Make(root, make) => (root, make()),
            };
            let Some(event) = event else { continue };
            if self.failed.load(Ordering::Relaxed) {
                continue;
            }
            if let Err(message) = self.append(&root, &event) {
                self.files.clear();
                if !self.failed.swap(true, Ordering::Relaxed) {
                    (self.on_fail)(format!(
                        "copilot-lsp: outcome events are not logged: {message} (set `events` \
                         to false to silence this)"
                    ));
                }
            }
        }
    }

    fn append(&mut self, root: &Path, event: &Event) -> Result<(), String> {
        let mut line = serde_json::to_string(event).map_err(|e| e.to_string())?;
        line.push('\n');
        let Some(dir) = self.dir.clone() else {
            return Err("no data directory (neither XDG_DATA_HOME nor HOME is set)".into());
        };
        if !self.files.contains_key(root) {
            let open = open(&dir, root)?;
            self.files.insert(root.to_path_buf(), open);
        }
        let f = self.files.get_mut(root).expect("just inserted");
        if f.size > 0 && f.size + line.len() as u64 > self.cap {
            std::fs::rename(&f.path, &f.rotated)
                .map_err(|e| format!("cannot rotate {}: {e}", f.path.display()))?;
            let (file, size) = open_file(&f.path)?;
            f.file = file;
            f.size = size;
        }
        // One write per line, appended: a reader never sees half a line from us unless the
        // disk fills in the middle of one (the reader skips it as corrupt).
        f.file
            .write_all(line.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", f.path.display()))?;
        f.size += line.len() as u64;
        Ok(())
    }
}

fn open(dir: &Path, root: &Path) -> Result<Open, String> {
    let events = dir.join(paths::EVENTS_DIR);
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(&events)
        .map_err(|e| format!("cannot create {}: {e}", events.display()))?;
    let canonical = paths::canonical_root(root);
    let path = paths::current_file(dir, &canonical);
    let (file, size) = open_file(&path)?;
    Ok(Open {
        rotated: paths::rotated_file(dir, &canonical),
        path,
        file,
        size,
    })
}

fn open_file(path: &Path) -> Result<(File, u64), String> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let file = o
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A file made by hand or by an older version: ours, so make it private too.
        if meta.permissions().mode() & 0o077 != 0 {
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::record::{RejectReason, Rejected, What};

    fn event(id: &str) -> Event {
        Event::now(
            id,
            What::Rejected(Rejected {
                reason: RejectReason::Superseded,
            }),
        )
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn events_land_in_their_workspace_file_private_and_rotated() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        let line_len = serde_json::to_string(&event("a-0")).unwrap().len() as u64 + 1;
        let log = Log::new(Some(data.clone()), |m| panic!("{m}")).with_cap(line_len * 3);
        for i in 0..5 {
            log.write(&a, event(&format!("a-{i}")));
        }
        log.write(&b, event("b-0"));
        let made = Box::new(|| Some(event("b-made"))) as MakeEvent;
        log.write_with(&b, made);
        log.write_with(&b, Box::new(|| None));
        assert!(log.flush(Duration::from_secs(10)));
        let ca = paths::canonical_root(&a);
        let cur = paths::current_file(&data, &ca);
        let old = paths::rotated_file(&data, &ca);
        // Three lines fit a file: a-0..a-2 rotated out, a-3 and a-4 current.
        assert_eq!(lines(&old).len(), 3);
        assert!(lines(&old)[0].contains("\"a-0\""));
        assert_eq!(lines(&cur).len(), 2);
        assert!(lines(&cur)[1].contains("\"a-4\""));
        let bl = lines(&paths::current_file(&data, &b));
        assert_eq!(bl.len(), 2, "{bl:?}");
        assert!(bl[1].contains("b-made"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&cur), 0o600);
            assert_eq!(mode(&old), 0o600);
            assert_eq!(mode(&data.join("events")), 0o700);
        }
        drop(log);
    }

    #[test]
    fn an_unwritable_directory_fails_once_and_drops_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        // A regular file where the folder should be: fails even for root.
        let blocker = tmp.path().join("file");
        std::fs::write(&blocker, "x").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (c, m) = (calls.clone(), messages.clone());
        let log = Log::new(Some(blocker.join("data")), move |msg| {
            c.fetch_add(1, Ordering::SeqCst);
            m.lock().unwrap().push(msg);
        });
        for i in 0..10 {
            log.write(tmp.path(), event(&i.to_string()));
        }
        log.flush(Duration::from_secs(10));
        assert!(log.is_failed());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let msg = messages.lock().unwrap()[0].clone();
        assert!(msg.contains("cannot create"), "{msg}");
        // No data directory at all: the same single report.
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let log = Log::new(None, move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        });
        log.write(tmp.path(), event("x"));
        log.write(tmp.path(), event("y"));
        log.flush(Duration::from_secs(10));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_log_never_written_starts_no_thread() {
        let log = Log::new(None, |m| panic!("{m}"));
        assert!(log.flush(Duration::from_millis(1)));
        assert!(log.thread.lock().unwrap().is_none());
    }
}
