//! The base protocol's framing (`Content-Length: N\r\n\r\n` + N bytes) as a pure push parser:
//! bytes in, whole message bodies and framing errors out. Owns resynchronisation after a bad
//! frame and the bounds on what it buffers; knows nothing of JSON-RPC beyond one fact about
//! JSON (below), and does no I/O.
//!
//! Resynchronisation rests on that fact: a JSON text never holds a raw line break inside a
//! string, and outside strings it holds no letters but those of `true`, `false` and `null`.
//! So `Content-Length:`, digits and a raw line break (a *header mark*) can only be the start
//! of the next frame, wherever it appears:
//! - after garbage, or after a header block that gives no usable length, bytes are skipped up
//!   to the next header mark (one error per run of bad bytes);
//! - a body that holds a header mark before its declared end was mislabelled (its
//!   `Content-Length` too long): it ends there, and the next frame is read from the mark, so a
//!   wrong length costs that one message, never the ones after it;
//! - a body shorter than declared leaves garbage behind it, which the first rule skips.
//!
//! Bounds: a header line holds at most [`MAX_HEADER_LINE`] bytes and a header block
//! [`MAX_HEADER_LINES`] lines; a body at most [`MAX_MESSAGE_BYTES`] (a larger one is
//! refused and skipped without being buffered); skipping keeps a few bytes only. So
//! [`Framer::buffered`] never exceeds `MAX_MESSAGE_BYTES` plus the last chunk pushed.
//!
//! This is written here rather than taken from a crate: tower-lsp-server's codec (and
//! tokio-util's framed reader around it) ends the stream on the first bad frame and buffers a
//! header line without limit, and no LSP framing crate resynchronises.

use std::collections::VecDeque;

pub use crate::limits::{MAX_HEADER_LINE, MAX_HEADER_LINES, MAX_MESSAGE_BYTES};

/// Why bytes of the input were not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("expected a header, got `{0}`")]
    NotAHeader(String),
    #[error("a header line longer than {MAX_HEADER_LINE} bytes")]
    LongHeaderLine,
    #[error("more than {MAX_HEADER_LINES} header lines")]
    TooManyHeaders,
    #[error("invalid Content-Length `{0}`")]
    BadLength(String),
    #[error("missing Content-Length")]
    MissingLength,
    #[error("Content-Length {0} is above the limit of {MAX_MESSAGE_BYTES} bytes")]
    TooLarge(u64),
}

/// What the framer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A body of exactly its declared length.
    Message(Vec<u8>),
    /// A body cut short by the next frame's header: its `Content-Length` was too long. It may
    /// still be a whole message.
    Mislabelled { body: Vec<u8>, declared: usize },
    /// Bytes that were no message; one error per run of them.
    Error(FrameError),
}

#[derive(Clone, Debug)]
enum State {
    /// Reading a header block.
    Headers { len: Option<usize>, lines: usize },
    /// Reading a body of `len` bytes into the buffer; header marks before `scan` are ruled out.
    Body { len: usize, scan: usize },
    /// Skipping bad bytes up to the next header mark.
    Skip,
}

/// The push parser. Feed it with [`Framer::push`], take events with [`Framer::next_event`].
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    state: State,
    events: VecDeque<Event>,
    /// An error was reported and no message has been read since: stay quiet.
    in_error: bool,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

const NAME: &[u8] = b"content-length";
/// The longest header mark [`find_mark`] accepts: the name, a colon, 64 blanks, 20 digits,
/// `\r\n`.
const MARK_MAX: usize = 14 + 1 + 64 + 20 + 2;

/// Where a header mark (`content-length:`, blanks, digits, `\n`) starts in `bytes`, looking at
/// candidates whose colon is at or after `from`. `Err(at)`: none is complete yet, but one
/// starting at `at` might be once more bytes arrive, either because its tail is not decided
/// yet or because `bytes` ends inside its name (`Content-Le`): without the second, a body
/// read in pieces would end before a mark that the same bytes read at once show.
fn find_mark(bytes: &[u8], from: usize) -> Result<usize, Option<usize>> {
    let mut i = from.max(NAME.len());
    while i < bytes.len() {
        let Some(off) = memchr::memchr(b':', &bytes[i..]) else {
            return Err(partial_name(bytes, from));
        };
        let colon = i + off;
        let start = colon - NAME.len();
        if bytes[start..colon].eq_ignore_ascii_case(NAME) {
            match mark_tail(&bytes[colon + 1..]) {
                Some(true) => return Ok(start),
                Some(false) => {}
                None => return Err(Some(start)),
            }
        }
        i = colon + 1;
    }
    Err(partial_name(bytes, from))
}

/// The start of the longest tail of `bytes` that begins `content-length` (no colon yet), if
/// its colon would be at or after `from`.
fn partial_name(bytes: &[u8], from: usize) -> Option<usize> {
    let first = bytes.len().saturating_sub(NAME.len());
    (first..bytes.len()).find(|&start| {
        start + NAME.len() >= from
            && bytes[start..].eq_ignore_ascii_case(&NAME[..bytes.len() - start])
    })
}

/// After `content-length:`: blanks, digits, an optional `\r`, then `\n`? `None`: not known yet.
fn mark_tail(rest: &[u8]) -> Option<bool> {
    let mut i = 0;
    while i < rest.len() && (rest[i] == b' ' || rest[i] == b'\t') {
        i += 1;
        if i > 64 {
            return Some(false);
        }
    }
    let digits = i;
    while i < rest.len() && rest[i].is_ascii_digit() {
        i += 1;
        if i - digits > 20 {
            return Some(false);
        }
    }
    if i == rest.len() {
        return None;
    }
    if i == digits {
        return Some(false);
    }
    if rest[i] == b'\r' {
        i += 1;
        if i == rest.len() {
            return None;
        }
    }
    Some(rest[i] == b'\n')
}

fn snippet(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\r', '\n'])
        .chars()
        .take(40)
        .collect()
}

impl Framer {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            state: State::Headers {
                len: None,
                lines: 0,
            },
            events: VecDeque::new(),
            in_error: false,
        }
    }

    /// Bytes held: a partial header line, a partial body, or a few skipped bytes.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next event, if any is complete.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Add bytes from the input and parse as far as they go.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while self.step() {}
    }

    /// The input ended: a body or header left unfinished is reported.
    pub fn finish(&mut self) {
        if let State::Body { len, .. } = self.state {
            if self.buf.len() >= len {
                // Complete; only a possible header mark after it was waiting for bytes.
                self.buf.truncate(len);
                let body = std::mem::take(&mut self.buf);
                self.events.push_back(Event::Message(body));
                self.state = State::Skip;
                return;
            }
        }
        let unfinished = match self.state {
            State::Headers { lines, .. } => lines > 0 || !self.buf.is_empty(),
            State::Body { .. } => true,
            State::Skip => false,
        };
        if unfinished && !self.buf.iter().all(u8::is_ascii_whitespace) {
            self.error(FrameError::NotAHeader(snippet(&self.buf)));
        }
        self.buf.clear();
        self.state = State::Skip;
    }

    fn error(&mut self, e: FrameError) {
        if !self.in_error {
            self.events.push_back(Event::Error(e));
            self.in_error = true;
        }
    }

    fn headers() -> State {
        State::Headers {
            len: None,
            lines: 0,
        }
    }

    /// Skip bad bytes from the start of the buffer on.
    fn skip(&mut self, e: FrameError) {
        self.error(e);
        self.state = State::Skip;
    }

    /// One step of the state machine; false when it needs more bytes.
    fn step(&mut self) -> bool {
        match self.state.clone() {
            State::Skip => match find_mark(&self.buf, 0) {
                Ok(at) => {
                    self.buf.drain(..at);
                    self.state = Self::headers();
                    true
                }
                Err(maybe) => {
                    // Keep only what could still begin a mark (at most `MARK_MAX` bytes).
                    let keep_from = maybe.unwrap_or(self.buf.len().saturating_sub(NAME.len()));
                    self.buf.drain(..keep_from);
                    false
                }
            },
            State::Headers { len, lines } => {
                let Some(nl) = memchr::memchr(b'\n', &self.buf) else {
                    if self.buf.len() > MAX_HEADER_LINE {
                        self.skip(FrameError::LongHeaderLine);
                        return true;
                    }
                    return false;
                };
                if nl + 1 > MAX_HEADER_LINE {
                    self.skip(FrameError::LongHeaderLine);
                    return true;
                }
                self.header_line(nl, len, lines);
                true
            }
            State::Body { len, scan } => {
                let end = len.min(self.buf.len());
                // A header mark starting inside the body: the length was wrong. (Marks that
                // start after the body are the next frame's business.)
                let window = &self.buf[..(len + MARK_MAX).min(self.buf.len())];
                match find_mark(window, scan) {
                    Ok(at) if at < len => {
                        let rest = self.buf.split_off(at);
                        let body = std::mem::replace(&mut self.buf, rest);
                        self.events.push_back(Event::Mislabelled {
                            body,
                            declared: len,
                        });
                        self.in_error = false;
                        self.state = Self::headers();
                        return true;
                    }
                    Err(Some(at)) if at < len => {
                        // Undecided until more bytes arrive.
                        self.state = State::Body { len, scan: at };
                        return false;
                    }
                    _ => {}
                }
                if self.buf.len() < len {
                    self.state = State::Body {
                        len,
                        scan: end.saturating_sub(NAME.len()),
                    };
                    return false;
                }
                let rest = self.buf.split_off(len);
                let body = std::mem::replace(&mut self.buf, rest);
                self.events.push_back(Event::Message(body));
                self.in_error = false;
                self.state = Self::headers();
                true
            }
        }
    }

    /// Handle the header line `buf[..=nl]`.
    fn header_line(&mut self, nl: usize, len: Option<usize>, lines: usize) {
        let line = &self.buf[..=nl];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(|b| *b == b' ' || *b == b'\t') {
            self.buf.drain(..=nl);
            if lines == 0 {
                return; // a stray blank line between messages
            }
            self.state = match len {
                Some(n) => State::Body { len: n, scan: 0 },
                None => {
                    self.error(FrameError::MissingLength);
                    State::Skip
                }
            };
            return;
        }
        if lines >= MAX_HEADER_LINES {
            self.skip(FrameError::TooManyHeaders);
            return;
        }
        let parsed = match text.iter().position(|b| *b == b':') {
            Some(colon) => {
                let name = &text[..colon];
                let value = String::from_utf8_lossy(&text[colon + 1..])
                    .trim()
                    .to_string();
                if name.eq_ignore_ascii_case(NAME) {
                    Some(match value.parse::<u64>() {
                        Ok(n) if n <= MAX_MESSAGE_BYTES as u64 => Ok(Some(n as usize)),
                        Ok(n) => Err(FrameError::TooLarge(n)),
                        Err(_) => Err(FrameError::BadLength(value.chars().take(40).collect())),
                    })
                } else if !name.is_empty()
                    && name.iter().all(|b| b.is_ascii_graphic() && *b != b':')
                {
                    Some(Ok(None)) // Content-Type and others: ignored
                } else {
                    None
                }
            }
            None => None,
        };
        // A header mark later in the line: what came before it was garbage.
        let later = find_mark(line, NAME.len() + 1).ok().filter(|&at| at > 0);
        match (parsed, later) {
            (Some(Ok(n)), None) => {
                self.buf.drain(..=nl);
                self.state = State::Headers {
                    len: n.or(len),
                    lines: lines + 1,
                };
            }
            (parsed, Some(at)) => {
                let e = match parsed {
                    Some(Err(e)) => e,
                    _ => FrameError::NotAHeader(snippet(&line[..at])),
                };
                self.error(e);
                self.buf.drain(..at);
                self.state = Self::headers();
            }
            (Some(Err(e)), None) => {
                self.buf.drain(..=nl);
                self.skip(e);
            }
            (None, None) => {
                let e = FrameError::NotAHeader(snippet(line));
                self.buf.drain(..=nl);
                self.skip(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &str) -> String {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    /// Events for `input` pushed in one piece, and again byte by byte: they must agree.
    fn events(input: &[u8]) -> Vec<Event> {
        let run = |chunk: usize| {
            let mut f = Framer::new();
            let mut out = Vec::new();
            for c in input.chunks(chunk.max(1)) {
                f.push(c);
                while let Some(e) = f.next_event() {
                    out.push(e);
                }
            }
            f.finish();
            while let Some(e) = f.next_event() {
                out.push(e);
            }
            out
        };
        let whole = run(input.len());
        assert_eq!(whole, run(1), "chunking changed the events");
        assert_eq!(whole, run(7), "chunking changed the events");
        whole
    }

    fn msg(s: &str) -> Event {
        Event::Message(s.as_bytes().to_vec())
    }

    const A: &str = r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#;
    const B: &str = r#"{"jsonrpc":"2.0","id":2,"method":"b"}"#;

    #[test]
    fn valid_frames_with_headers_blank_lines_and_lf_endings() {
        let input = format!(
            "Content-Length: {}\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{A}\r\n{}content-length:{}\n\n{B}",
            A.len(),
            frame(B),
            B.len()
        );
        assert_eq!(events(input.as_bytes()), [msg(A), msg(B), msg(B)]);
    }

    #[test]
    fn each_kind_of_bad_frame_costs_only_itself() {
        let err = |e: FrameError| Event::Error(e);
        let not_a_header = |s: &str| err(FrameError::NotAHeader(s.chars().take(40).collect()));
        let cases: Vec<(&str, String, Vec<Event>)> = vec![
            (
                "too short",
                format!("Content-Length: 10\r\n\r\n{A}"),
                vec![msg(&A[..10]), not_a_header(&A[10..])],
            ),
            (
                "missing",
                format!("Content-Type: x\r\n\r\n{A}"),
                vec![err(FrameError::MissingLength)],
            ),
            (
                "absurd",
                format!("Content-Length: 1000000000000\r\n\r\n{A}"),
                vec![err(FrameError::TooLarge(1_000_000_000_000))],
            ),
            (
                "not a number",
                format!("Content-Length: 12x\r\n\r\n{A}"),
                vec![err(FrameError::BadLength("12x".into()))],
            ),
            (
                "garbage",
                "hello there\r\n".into(),
                vec![not_a_header("hello there")],
            ),
            (
                "garbage without newline",
                "\u{1}garbage".into(),
                vec![not_a_header("\u{1}garbage")],
            ),
            (
                "binary",
                "\u{fffd}".repeat(100),
                vec![not_a_header(&"\u{fffd}".repeat(100))],
            ),
        ];
        for (what, bad, mut want) in cases {
            let input = format!("{bad}{}{}", frame(A), frame(B));
            want.extend([msg(A), msg(B)]);
            assert_eq!(events(input.as_bytes()), want, "{what}");
        }
    }

    #[test]
    fn a_too_long_length_ends_at_the_next_header_and_keeps_the_body() {
        let input = format!("Content-Length: 500\r\n\r\n{A}{}", frame(B));
        assert_eq!(
            events(input.as_bytes()),
            [
                Event::Mislabelled {
                    body: A.as_bytes().to_vec(),
                    declared: 500
                },
                msg(B)
            ]
        );
    }

    #[test]
    fn content_length_text_inside_a_json_string_is_not_a_header() {
        let body =
            r#"{"jsonrpc":"2.0","method":"x","params":{"t":"Content-Length: 5\r\n\r\nabc"}}"#;
        assert_eq!(events(frame(body).as_bytes()), [msg(body)]);
    }

    #[test]
    fn a_header_mark_glued_to_garbage_resynchronises() {
        let input = format!("junk{}Content-Length: 12{}", frame(A), frame(B));
        let bad = format!("12Content-Length: {}", B.len());
        assert_eq!(
            events(input.as_bytes()),
            [
                Event::Error(FrameError::NotAHeader("junk".into())),
                msg(A),
                Event::Error(FrameError::BadLength(bad)),
                msg(B)
            ]
        );
    }

    #[test]
    fn long_lines_and_header_floods_are_not_buffered() {
        let mut f = Framer::new();
        let chunk = vec![b'a'; 1 << 16];
        for _ in 0..(100 << 20) / chunk.len() {
            f.push(&chunk);
            assert!(f.buffered() <= MAX_HEADER_LINE + chunk.len());
        }
        f.push(b"\r\n");
        f.push(frame(A).as_bytes());
        assert_eq!(
            f.next_event(),
            Some(Event::Error(FrameError::LongHeaderLine))
        );
        assert_eq!(f.next_event(), Some(msg(A)));
        assert_eq!(f.buffered(), 0);

        let flood = "X-A: 1\r\n".repeat(1000);
        let ev = events(format!("{flood}{}", frame(A)).as_bytes());
        assert_eq!(ev, [Event::Error(FrameError::TooManyHeaders), msg(A)]);
    }

    #[test]
    fn a_mark_split_across_reads_inside_a_short_body_is_still_seen() {
        // Found by the `frames` fuzz target: the body's declared 12 bytes end inside the
        // next frame's `Content-Length` name. Read whole, the mark shows and the body is
        // mislabelled; read byte by byte, the body used to end at byte 12, mid-name.
        // (`events` asserts both readings agree.)
        let next = frame(r#"{"jsonrpc":"2.0","method":"x"}"#);
        let input = format!("content-length:  12\nX-A: b\u{b}\n\r\n{next}");
        let got = events(input.as_bytes());
        assert_eq!(
            got.last(),
            Some(&msg(r#"{"jsonrpc":"2.0","method":"x"}"#)),
            "{got:?}"
        );
        assert!(
            matches!(got[0], Event::Mislabelled { declared: 12, .. }),
            "{got:?}"
        );
    }

    #[test]
    fn an_unfinished_frame_at_the_end_is_reported() {
        assert_eq!(
            events(b"Content-Length: 50\r\n\r\n{\"a\""),
            [Event::Error(FrameError::NotAHeader("{\"a\"".into()))]
        );
        assert_eq!(events(b"\r\n\r\n"), []);
    }
}
