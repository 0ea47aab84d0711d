//! Streamed answers: bytes into lines, lines into server-sent events or JSON lines, and the
//! text pieces into a completion under the same stop rules as the embedded engine's decode
//! loop (stop strings, the caller's early-stop rule, the soft time budget).
//!
//! Server-sent events are parsed here rather than by a crate: the servers we speak send
//! `data:` lines (and llama-server `error:` lines) and nothing else, and an
//! `eventsource` crate would bring a second stream abstraction for those 40 lines.
//!
//! Pure: no I/O; never panics on what a server sends.

use std::time::{Duration, Instant};

use copilot_pipeline::model::StopFn;
use copilot_pipeline::StopReason;

use crate::backoff::{Fault, FaultKind};

/// A line longer than this is garbage, not an event.
pub const MAX_LINE: usize = 1 << 20;

/// Splits a byte stream into lines (`\n` or `\r\n`).
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
}

fn malformed(what: &str, sample: &[u8]) -> Fault {
    let s = String::from_utf8_lossy(&sample[..sample.len().min(80)]).replace(['\n', '\r'], " ");
    Fault::new(FaultKind::Malformed, format!("{what}: `{s}`"))
}

impl Lines {
    /// Add bytes; complete lines go to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<String>) -> Result<(), Fault> {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + i;
            let line = &self.buf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            out.push(
                String::from_utf8(line.to_vec())
                    .map_err(|_| malformed("a line that is not UTF-8", line))?,
            );
            start = end + 1;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(malformed("a line of over 1 MiB", &self.buf));
        }
        Ok(())
    }

    /// The unterminated last line, at the end of the stream.
    pub fn finish(&mut self) -> Result<Option<String>, Fault> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.strip_suffix(b"\r").unwrap_or(&rest);
        if rest.is_empty() {
            return Ok(None);
        }
        String::from_utf8(rest.to_vec())
            .map(Some)
            .map_err(|_| malformed("a line that is not UTF-8", rest))
    }
}

/// A complete server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Data(String),
    /// An `error:` field, or an `event: error` event's data (llama-server's way).
    Error(String),
}

/// Server-sent events, one line at a time.
#[derive(Debug, Default)]
pub struct Sse {
    data: Vec<String>,
    error: bool,
}

impl Sse {
    /// Feed one line; a blank line completes the event being read.
    pub fn line(&mut self, line: &str) -> Result<Option<Event>, Fault> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => self.data.push(value.to_string()),
            "error" => {
                self.error = true;
                self.data.push(value.to_string());
            }
            "event" => self.error = value.trim() == "error",
            "id" | "retry" => {}
            _ => return Err(malformed("not a server-sent event", line.as_bytes())),
        }
        Ok(None)
    }

    /// At the end of the stream: the event left unterminated, if any.
    pub fn finish(&mut self) -> Option<Event> {
        self.dispatch()
    }

    fn dispatch(&mut self) -> Option<Event> {
        let error = std::mem::take(&mut self.error);
        if self.data.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.data).join("\n");
        Some(if error {
            Event::Error(data)
        } else {
            Event::Data(data)
        })
    }
}

/// What a server says at the end of an answer (each field where it says it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Final {
    pub stop: Option<StopReason>,
    pub prompt_tokens: Option<usize>,
    pub cached_tokens: Option<usize>,
    pub generated_tokens: Option<usize>,
    pub prefill_ms: Option<f64>,
    pub decode_ms: Option<f64>,
}

impl Final {
    /// `self` with what `newer` says taking precedence.
    pub fn merge(&mut self, newer: Final) {
        self.stop = newer.stop.or(self.stop);
        self.prompt_tokens = newer.prompt_tokens.or(self.prompt_tokens);
        self.cached_tokens = newer.cached_tokens.or(self.cached_tokens);
        self.generated_tokens = newer.generated_tokens.or(self.generated_tokens);
        self.prefill_ms = newer.prefill_ms.or(self.prefill_ms);
        self.decode_ms = newer.decode_ms.or(self.decode_ms);
    }
}

/// One parsed event of an answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// New text.
    pub text: String,
    /// What the event says about the answer as a whole (counts, timings, why it ended).
    pub info: Final,
    /// The answer is complete.
    pub done: bool,
}

/// The completion being received, with the stop rules applied to each piece.
pub struct Decoder {
    pub text: String,
    stops: Vec<String>,
    rule: Option<StopFn>,
    soft_budget: Option<Duration>,
    soft_mark: Option<usize>,
    first: Option<Instant>,
    /// Text pieces received (each holds one token or more).
    pub pieces: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("text", &self.text)
            .field("pieces", &self.pieces)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    pub fn new(stops: Vec<String>, rule: Option<StopFn>, soft_budget: Option<Duration>) -> Self {
        Self {
            text: String::new(),
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            rule,
            soft_budget,
            soft_mark: None,
            first: None,
            pieces: 0,
        }
    }

    /// When the first piece came (decoding's start, as the client sees it).
    pub fn first_piece(&self) -> Option<Instant> {
        self.first
    }

    /// Add a piece received at `now`. `Some` when generation should stop here (the text is
    /// already cut as the rule says).
    pub fn push(&mut self, piece: &str, now: Instant) -> Option<StopReason> {
        if piece.is_empty() {
            return None;
        }
        let t0 = *self.first.get_or_insert(now);
        self.pieces += 1;
        let before = self.text.len();
        self.text.push_str(piece);
        // A stop string may straddle pieces: look from just before the new piece.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = before.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min()
        {
            self.text.truncate(at);
            return Some(StopReason::StopString);
        }
        if let Some(rule) = self.rule.as_mut() {
            if rule(&self.text) {
                return Some(StopReason::StopRule);
            }
        }
        // As the embedded engine: once the budget is spent, stop at the next newline after
        // the text as it was then, keeping complete lines.
        if self
            .soft_budget
            .is_some_and(|b| now.saturating_duration_since(t0) >= b)
        {
            let mark = *self.soft_mark.get_or_insert(self.text.len());
            if let Some(nl) = self.text[mark..].find('\n') {
                self.text.truncate(mark + nl + 1);
                return Some(StopReason::Budget);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Result<Vec<String>, Fault> {
        let mut l = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            l.push(c, &mut out)?;
        }
        out.extend(l.finish()?);
        Ok(out)
    }

    #[test]
    fn lines_across_chunks_and_line_endings() {
        assert_eq!(
            lines(&[b"da", b"ta: 1\r", b"\n\nx\ny"]).unwrap(),
            ["data: 1", "", "x", "y"]
        );
        // A character split across two chunks.
        let e = "é".as_bytes();
        assert_eq!(lines(&[&e[..1], &e[1..], b"\n"]).unwrap(), ["é"]);
        assert_eq!(
            lines(&[b"\xff\xfe\n"]).unwrap_err().kind,
            FaultKind::Malformed
        );
        let long = vec![b'a'; MAX_LINE + 1];
        assert_eq!(lines(&[&long]).unwrap_err().kind, FaultKind::Malformed);
    }

    fn events(text: &str) -> Result<Vec<Event>, Fault> {
        let mut sse = Sse::default();
        let mut out = Vec::new();
        for line in text.split('\n') {
            out.extend(sse.line(line)?);
        }
        out.extend(sse.finish());
        Ok(out)
    }

    #[test]
    fn server_sent_events() {
        let got = events(
            ": keep-alive\ndata: {\"a\":1}\n\ndata:x\ndata: y\n\nevent: error\ndata: boom\n\n\
             error: {\"code\":500}\n\ndata: [DONE]",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                Event::Data("{\"a\":1}".into()),
                Event::Data("x\ny".into()),
                Event::Error("boom".into()),
                Event::Error("{\"code\":500}".into()),
                Event::Data("[DONE]".into()),
            ]
        );
        let e = events("data: 1\n\n<html>oops</html>\n").unwrap_err();
        assert_eq!(e.kind, FaultKind::Malformed);
        assert!(e.detail.contains("<html>"), "{}", e.detail);
    }

    #[test]
    fn stop_strings_across_pieces_cut_before_them() {
        let t = Instant::now();
        let mut d = Decoder::new(vec!["<|end".into(), String::new()], None, None);
        assert_eq!(d.push("x = 1<", t), None);
        assert_eq!(d.push("|en", t), None);
        assert_eq!(d.push("doftext|>", t), Some(StopReason::StopString));
        assert_eq!(d.text, "x = 1");
        assert_eq!(d.pieces, 3);
        let mut d = Decoder::new(vec!["é".into()], None, None);
        assert_eq!(d.push("aé", t), Some(StopReason::StopString));
        assert_eq!(d.push("", t), None);
        assert_eq!(d.text, "a");
    }

    #[test]
    fn the_early_stop_rule_sees_the_text_so_far() {
        let t = Instant::now();
        let rule: StopFn = Box::new(|text: &str| text.contains("\n\n"));
        let mut d = Decoder::new(Vec::new(), Some(rule), None);
        assert_eq!(d.push("a\n", t), None);
        assert_eq!(d.push("\nb", t), Some(StopReason::StopRule));
        assert_eq!(d.text, "a\n\nb");
    }

    #[test]
    fn a_spent_budget_stops_at_the_next_newline() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Decoder::new(Vec::new(), None, Some(ms(100)));
        assert_eq!(d.push("a\nb", t), None);
        assert_eq!(d.push("c\n", t + ms(50)), None);
        // Spent: the mark is the text as it is after this piece.
        assert_eq!(d.push("d\ne", t + ms(120)), None);
        assert_eq!(d.push("f", t + ms(130)), None);
        assert_eq!(d.push("g\nh", t + ms(140)), Some(StopReason::Budget));
        assert_eq!(d.text, "a\nbc\nd\nefg\n");
    }
}
