//! Reading a workspace's log back (the rotated file, then the current one), and joining its
//! lines into one [`Suggestion`] each: what was shown, how much of it was accepted and how,
//! with what context, whether it was rejected, and what the retention checks found. A line
//! that does not parse (a half-written line from a full disk, an edit by hand) is skipped
//! and counted, never fatal.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::paths;
use crate::record::{Context, Event, How, RejectReason, Retained, Retention, Shown, What};
use crate::EventsError;

/// A workspace's events, in file order.
#[derive(Clone, Debug, Default)]
pub struct Read {
    pub events: Vec<Event>,
    /// Lines that were not events.
    pub corrupt_lines: usize,
    /// The files read (those that exist).
    pub files: Vec<PathBuf>,
}

/// Read the log of the workspace folder `root` under the data directory `data_dir`.
pub fn read_workspace(data_dir: &Path, root: &Path) -> Result<Read, EventsError> {
    let canonical = paths::canonical_root(root);
    read_files(&[
        paths::rotated_file(data_dir, &canonical),
        paths::current_file(data_dir, &canonical),
    ])
}

/// Read these files in order; missing ones are skipped.
pub fn read_files(files: &[PathBuf]) -> Result<Read, EventsError> {
    let mut out = Read::default();
    for path in files {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EventsError::io(path, e)),
        };
        out.files.push(path.clone());
        let mut r = std::io::BufReader::new(f);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = r
                .read_until(b'\n', &mut buf)
                .map_err(|e| EventsError::io(path, e))?;
            if n == 0 {
                break;
            }
            let line = buf.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Event>(line) {
                Ok(e) => out.events.push(e),
                Err(_) => out.corrupt_lines += 1,
            }
        }
    }
    Ok(out)
}

/// Everything the log says about one suggestion.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    pub id: String,
    /// When it was shown (ms since the epoch).
    pub t: u64,
    pub shown: Shown,
    /// Characters accepted (0: none), and whether that was all of it.
    pub accepted_chars: usize,
    pub complete: bool,
    /// How it was first accepted.
    pub how: Option<How>,
    pub context: Option<Context>,
    pub rejected: Option<RejectReason>,
    /// Retention checks by seconds after the accept.
    pub retention: BTreeMap<u32, Retention>,
}

impl Suggestion {
    /// The accepted part of the suggestion.
    pub fn accepted_text(&self) -> &str {
        let s = &self.shown.suggestion;
        let end = s
            .char_indices()
            .nth(self.accepted_chars)
            .map_or(s.len(), |(i, _)| i);
        &s[..end]
    }

    pub fn is_accepted(&self) -> bool {
        self.complete
    }

    pub fn is_partially_accepted(&self) -> bool {
        self.accepted_chars > 0 && !self.complete
    }

    /// The state found by the check `after_s` seconds after the accept, if it ran.
    pub fn retained(&self, after_s: u32) -> Option<Retained> {
        self.retention.get(&after_s).map(|r| r.state)
    }

    /// Kept at the last check that ran (and at least one ran).
    pub fn kept_at_last_check(&self) -> bool {
        self.retention
            .values()
            .next_back()
            .is_some_and(|r| r.state == Retained::Kept)
    }
}

/// The suggestions of `events`, in the order they were shown. Outcome lines of a suggestion
/// whose `shown` line is not in the log (rotated away) are counted as orphans and dropped.
pub fn fold(events: &[Event]) -> (Vec<Suggestion>, usize) {
    let mut order: Vec<Suggestion> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut orphans = 0;
    for e in events {
        if let What::Shown(s) = &e.what {
            if index.contains_key(e.id.as_str()) {
                continue; // shown twice: the first one counts
            }
            index.insert(&e.id, order.len());
            order.push(Suggestion {
                id: e.id.clone(),
                t: e.t,
                shown: s.clone(),
                accepted_chars: 0,
                complete: false,
                how: None,
                context: None,
                rejected: None,
                retention: BTreeMap::new(),
            });
            continue;
        }
        let Some(&i) = index.get(e.id.as_str()) else {
            orphans += 1;
            continue;
        };
        let s = &mut order[i];
        match &e.what {
            What::Shown(_) => unreachable!("handled above"),
            What::Accepted(a) => {
                s.accepted_chars = s.accepted_chars.max(a.accepted_chars);
                s.complete |= a.complete;
                s.how.get_or_insert(a.how);
                if s.context.is_none() {
                    s.context.clone_from(&a.context);
                }
            }
            What::Rejected(r) => s.rejected = Some(r.reason),
            What::Retention(r) => {
                s.retention.insert(r.after_s, r.clone());
            }
        }
    }
    (order, orphans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Accepted, Rejected, Trigger, FORMAT};

    pub(crate) fn shown(id: &str, t: u64, suggestion: &str) -> Event {
        Event {
            v: FORMAT,
            t,
            id: id.into(),
            what: What::Shown(Shown {
                path: "a.py".into(),
                line: 0,
                column: 0,
                model: "m".into(),
                adapter: None,
                latency_ms: 10.0,
                trigger: Trigger::Automatic,
                suggestion: suggestion.into(),
            }),
        }
    }

    fn accepted(id: &str, how: How, chars: usize, complete: bool) -> Event {
        Event {
            v: FORMAT,
            t: 0,
            id: id.into(),
            what: What::Accepted(Accepted {
                how,
                accepted_chars: chars,
                complete,
                context: Some(Context {
                    prefix: format!("p{chars}"),
                    suffix: String::new(),
                }),
            }),
        }
    }

    #[test]
    fn a_corrupt_line_is_skipped_and_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.jsonl");
        let good = serde_json::to_string(&shown("a", 1, "x")).unwrap();
        let text = format!("{good}\n{{\"v\":1,\"t\":\n\nnot json at all\n\u{1}\u{2}\n{good}");
        std::fs::write(&p, text).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend(b"\n\xff\xfe\n");
        std::fs::write(&p, bytes).unwrap();
        let r = read_files(&[tmp.path().join("missing.jsonl"), p.clone()]).unwrap();
        assert_eq!(r.events.len(), 2);
        assert_eq!(r.corrupt_lines, 4);
        assert_eq!(r.files, vec![p]);
    }

    #[test]
    fn lines_join_by_id() {
        let events = vec![
            shown("a", 1, "héllo()"),
            accepted("a", How::Partial, 3, false),
            accepted("a", How::Partial, 2, false),
            shown("b", 2, "x"),
            Event {
                v: 1,
                t: 3,
                id: "b".into(),
                what: What::Rejected(Rejected {
                    reason: RejectReason::Superseded,
                }),
            },
            accepted("zzz", How::Command, 1, true),
            accepted("a", How::Command, 7, true),
        ];
        let (s, orphans) = fold(&events);
        assert_eq!(orphans, 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].accepted_chars, 7);
        assert!(s[0].complete && s[0].is_accepted());
        assert_eq!(s[0].how, Some(How::Partial));
        assert_eq!(s[0].context.as_ref().unwrap().prefix, "p3");
        assert_eq!(s[1].rejected, Some(RejectReason::Superseded));
        let mut partial = s[0].clone();
        partial.accepted_chars = 2;
        partial.complete = false;
        assert_eq!(partial.accepted_text(), "hé");
        assert!(partial.is_partially_accepted());
    }
}
