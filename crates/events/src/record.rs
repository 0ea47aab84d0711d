//! What one line of the event log holds: an [`Event`] about one suggestion, identified by
//! the id the server gave it (and sent to the client in the item's command). A suggestion's
//! story is several lines: `shown`, then `accepted` (one or more: partial accepts grow),
//! `rejected`, or `retention` checks after an accept. Readers join them by id ([`crate::fold`]).
//!
//! The format is versioned (`v`); unknown fields are ignored on reading, so a newer server's
//! log stays readable by an older `stats`.

use serde::{Deserialize, Serialize};

/// Version of the line format written now.
pub const FORMAT: u32 = 1;

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Format version ([`FORMAT`]).
    pub v: u32,
    /// When, in milliseconds since the Unix epoch.
    pub t: u64,
    /// The suggestion this event is about.
    pub id: String,
    #[serde(flatten)]
    pub what: What,
}

impl Event {
    /// An event of the current format, stamped now.
    pub fn now(id: impl Into<String>, what: What) -> Self {
        Self {
            v: FORMAT,
            t: now_ms(),
            id: id.into(),
            what,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    Shown(Shown),
    Accepted(Accepted),
    Rejected(Rejected),
    Retention(Retention),
}

/// A suggestion the client showed (or, for clients that never say, was sent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shown {
    /// Path of the file relative to its workspace folder, `/`-separated.
    pub path: String,
    /// Where the suggestion starts: 0-based line and character (Unicode scalar values).
    pub line: u32,
    pub column: u32,
    /// The model that made it (its one-line description) and the adapter, if one was used.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// From the request's arrival to the answer, in milliseconds.
    pub latency_ms: f64,
    pub trigger: Trigger,
    /// The text suggested.
    pub suggestion: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Automatic,
    Invoked,
}

/// Some or all of a suggestion became the user's code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub how: How,
    /// Characters (Unicode scalar values) of the suggestion accepted so far, from its start.
    pub accepted_chars: usize,
    /// Whether that is all of it.
    pub complete: bool,
    /// The code around the suggestion when it was made, within the prompt's budgets: enough
    /// to rebuild a fill-in-the-middle training example. On the first accept of a
    /// suggestion only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Context>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// The client ran the item's command (a full accept).
    Command,
    /// `textDocument/didPartiallyAcceptCompletion` (a word, a line).
    Partial,
    /// The user typed it (typing through the ghost text).
    Typed,
}

/// The code before and after the cursor the suggestion was made at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub prefix: String,
    pub suffix: String,
}

/// Shown, then typed over or dismissed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub reason: RejectReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// A newer suggestion replaced it and nothing of it was typed or accepted.
    Superseded,
    /// Nothing happened to it for a while (dismissed, or the editor moved on).
    Timeout,
    /// Its document was closed.
    Closed,
}

/// Whether accepted text was still there some time after the accept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    /// Seconds after the (first) accept.
    pub after_s: u32,
    /// Edit similarity of the accepted text and the text now at its place (1: unchanged).
    pub similarity: f64,
    pub state: Retained,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retained {
    /// Still there, perhaps lightly edited (similarity at least [`KEPT_SIMILARITY`]).
    Kept,
    /// Still something there, but mostly rewritten.
    Changed,
    /// Removed: nothing is left where it was.
    Deleted,
    /// The document was closed before the check: unknown.
    Closed,
}

/// Edit similarity from which accepted text counts as kept.
pub const KEPT_SIMILARITY: f64 = 0.5;

/// Above this many distance cells, a similarity bounded below the bar is not computed.
const MAX_CELLS: usize = 1 << 22;

/// How much of `accepted` is still in `now` (the text at its place): the state and the
/// similarity (Levenshtein over characters, normalised by the longer text, as `eval` and
/// CodeXGLUE measure edit similarity).
pub fn retention(accepted: &str, now: &str) -> (Retained, f64) {
    if now.trim().is_empty() && !accepted.trim().is_empty() {
        return (Retained::Deleted, 0.0);
    }
    let (a, b) = (accepted.chars().count(), now.chars().count());
    let (short, long) = (a.min(b), a.max(b));
    // The distance is at least the difference in length, so the similarity at most
    // short/long: when that is below the bar and the quadratic distance would be costly (a
    // span that grew by thousands of characters), that bound is the answer.
    if short.saturating_mul(long) > MAX_CELLS && (short as f64 / long as f64) < KEPT_SIMILARITY {
        return (Retained::Changed, short as f64 / long as f64);
    }
    let sim = strsim::normalized_levenshtein(accepted, now);
    let state = if sim >= KEPT_SIMILARITY {
        Retained::Kept
    } else {
        Retained::Changed
    };
    (state, sim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_read_the_documented_keys() {
        let e = Event {
            v: FORMAT,
            t: 1_700_000_000_000,
            id: "ab-1".into(),
            what: What::Shown(Shown {
                path: "src/a.py".into(),
                line: 3,
                column: 4,
                model: "pico".into(),
                adapter: None,
                latency_ms: 12.5,
                trigger: Trigger::Automatic,
                suggestion: "return 1".into(),
            }),
        };
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.contains(r#""event":"shown""#), "{line}");
        assert!(!line.contains("adapter"), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), e);
        // A later format's extra fields are ignored.
        let newer = r#"{"v":2,"t":5,"id":"x","event":"rejected","reason":"timeout","new":1}"#;
        let got: Event = serde_json::from_str(newer).unwrap();
        assert_eq!(
            got.what,
            What::Rejected(Rejected {
                reason: RejectReason::Timeout
            })
        );
    }

    #[test]
    fn retention_states() {
        let cases = [
            ("return a + b", "return a + b", Retained::Kept, 1.0),
            ("return a + b", "return a - b", Retained::Kept, 11.0 / 12.0),
            ("return a + b", "", Retained::Deleted, 0.0),
            ("return a + b", "  \n", Retained::Deleted, 0.0),
            // Only one character lines up: distance 11 of 12.
            ("return a + b", "pass", Retained::Changed, 1.0 / 12.0),
            // Too long to compare cheaply, and too long to be kept whatever it holds.
            (&"x".repeat(1000), &"x".repeat(5000), Retained::Changed, 0.2),
            ("", "", Retained::Kept, 1.0),
        ];
        for (accepted, now, state, sim) in cases {
            let (s, got) = retention(accepted, now);
            assert_eq!(s, state, "{accepted:?} -> {now:?}");
            assert!((got - sim).abs() < 1e-9, "{accepted:?} -> {now:?}: {got}");
        }
    }
}
