//! The input sanitizer: sits between the client's bytes and tower-lsp-server, so that nothing
//! a client sends can end the server's input stream, and the framework only ever sees frames
//! it can decode.
//!
//! tower-lsp-server 0.23 ends its input stream on the first frame it cannot decode (its codec's
//! error ends tokio-util's `FramedRead`): a bad header, invalid UTF-8 or JSON, or an id it
//! cannot represent (its `Id` is an `i64` or a string). So here:
//! - [`crate::framing`] cuts the bytes into bodies and resynchronises after a bad frame;
//! - each body is checked ([`Sanitizer::clean`]): a valid message passes untouched; a lone
//!   UTF-16 surrogate escape (`"\ud83d"`, which JavaScript clients can send) becomes U+FFFD,
//!   one UTF-16 unit like the surrogate, so positions stay right (invalid UTF-8 bytes likewise);
//!   an id the framework cannot carry (an integral float such as `1.0`, an integer past `i32`,
//!   which its `$/cancelRequest` cannot name) is swapped for a string token that
//!   [`restore_ids`] swaps back on the way out, so the answer carries the id as sent;
//! - anything else becomes a request to [`MALFORMED`], whose handler answers the JSON-RPC
//!   error (`-32700` parse error, `-32600` invalid request; the id when one was readable).
//!
//! Knows JSON-RPC framing and ids; nothing of LSP methods beyond `$/cancelRequest`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tower_lsp_server::jsonrpc::{Request, Response};

use crate::framing::{Event, Framer};
use crate::limits::MAX_REMAPPED_IDS;

/// The method a malformed frame is turned into.
pub const MALFORMED: &str = "copilot/internal/malformed";

/// Params of [`MALFORMED`].
#[derive(Debug, Deserialize)]
#[serde(expecting = "an error code and message")]
pub struct Malformed {
    pub code: i64,
    pub message: String,
}

/// Ids the framework cannot carry, swapped for string tokens on the way in and back on the way
/// out. Bounded by [`MAX_REMAPPED_IDS`]; an entry lives until its response is written.
#[derive(Debug)]
pub struct IdMap {
    prefix: String,
    next: u64,
    /// Token -> the id as the client sent it.
    original: HashMap<String, Value>,
    /// The id as sent (serialized) -> its token, for `$/cancelRequest`.
    token: HashMap<String, String>,
}

impl Default for IdMap {
    fn default() -> Self {
        // A per-process prefix no client can guess, so a client's own string ids never clash.
        let nonce = RandomState::new().hash_one(std::process::id());
        Self {
            prefix: format!("copilot-lsp-id-{nonce:016x}-"),
            next: 0,
            original: HashMap::new(),
            token: HashMap::new(),
        }
    }
}

impl IdMap {
    pub fn len(&self) -> usize {
        self.original.len()
    }

    pub fn is_empty(&self) -> bool {
        self.original.is_empty()
    }

    fn insert(&mut self, id: &Value) -> Option<String> {
        if self.original.len() >= MAX_REMAPPED_IDS {
            return None;
        }
        self.next += 1;
        let token = format!("{}{}", self.prefix, self.next);
        self.original.insert(token.clone(), id.clone());
        self.token.insert(id.to_string(), token.clone());
        Some(token)
    }

    /// If `body` is a response to a swapped id, the body with the id as the client sent it.
    pub fn restore(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        if self.original.is_empty() {
            return None;
        }
        // The framework writes a response's id last: `...,"id":"<token>"}`.
        let key = b"\"id\":\"";
        let at = body.windows(key.len()).rposition(|w| w == key)?;
        let start = at + key.len();
        let end = start + body[start..].iter().position(|b| *b == b'"')?;
        if &body[end..] != b"\"}" {
            return None;
        }
        let token = std::str::from_utf8(&body[start..end]).ok()?;
        let id = self.original.remove(token)?;
        self.token.remove(&id.to_string());
        let mut out = body[..at].to_vec();
        out.extend_from_slice(format!("\"id\":{id}}}").as_bytes());
        Some(out)
    }
}

/// Whether tower-lsp-server can carry this id as it is (and cancel it by it).
fn carried(id: &Value) -> bool {
    match id {
        Value::String(_) | Value::Null => true,
        Value::Number(n) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        _ => false,
    }
}

/// Each lone UTF-16 surrogate escape in a JSON text replaced by `\ufffd`; `None` if it has
/// none. Every backslash in valid JSON starts an escape (`\uXXXX` or two characters), so the
/// scan needs no notion of strings.
pub fn replace_lone_surrogates(body: &[u8]) -> Option<Vec<u8>> {
    fn unit(b: &[u8], at: usize) -> Option<u16> {
        let hex = b.get(at..at + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    }
    let high = |u: u16| (0xD800..0xDC00).contains(&u);
    let low = |u: u16| (0xDC00..0xE000).contains(&u);
    let mut out = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' {
            out.push(body[i]);
            i += 1;
            continue;
        }
        match unit(body, i) {
            Some(u) if high(u) && unit(body, i + 6).is_some_and(low) => {
                out.extend_from_slice(&body[i..i + 12]);
                i += 12;
            }
            Some(u) if high(u) || low(u) => {
                out.extend_from_slice(b"\\ufffd");
                changed = true;
                i += 6;
            }
            Some(_) => {
                out.extend_from_slice(&body[i..i + 6]);
                i += 6;
            }
            None => {
                let end = (i + 2).min(body.len());
                out.extend_from_slice(&body[i..end]);
                i = end;
            }
        }
    }
    changed.then_some(out)
}

fn malformed(id: Value, code: i64, message: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": MALFORMED,
           "params": {"code": code, "message": message}})
    .to_string()
    .into_bytes()
}

/// Turns framer events into bodies tower-lsp-server can decode.
#[derive(Debug, Default)]
pub struct Sanitizer {
    ids: Arc<Mutex<IdMap>>,
    /// The last body was cut short (its JSON ended early): the framing error that follows it
    /// (the rest of that frame, its length having been too short) is the same incident, and
    /// is not answered again.
    after_truncated: bool,
}

impl Sanitizer {
    pub fn new(ids: Arc<Mutex<IdMap>>) -> Self {
        Self {
            ids,
            after_truncated: false,
        }
    }

    /// The body to hand the framework for one event, or nothing.
    pub fn clean(&mut self, event: Event) -> Option<Vec<u8>> {
        match event {
            Event::Message(body) => Some(self.body(body, None)),
            Event::Mislabelled { body, declared } => Some(self.body(body, Some(declared))),
            Event::Error(e) => {
                tracing::warn!("malformed input from the client: {e}");
                if std::mem::take(&mut self.after_truncated) {
                    return None;
                }
                Some(malformed(Value::Null, -32700, &format!("parse error: {e}")))
            }
        }
    }

    fn body(&mut self, body: Vec<u8>, declared: Option<usize>) -> Vec<u8> {
        self.after_truncated = false;
        let (out, _) = self.check(body);
        if let Some(n) = declared {
            tracing::warn!(
                "a message's Content-Length ({n}) was longer than the message; it ended at the \
                 next header"
            );
        }
        out
    }

    /// The body to pass on, and whether it is the client's message (not an error).
    fn check(&mut self, body: Vec<u8>) -> (Vec<u8>, bool) {
        // The common case: a message the framework decodes as it is.
        if let Ok(req) = serde_json::from_slice::<Request>(&body) {
            let plain = req.method() != "$/cancelRequest"
                && req
                    .id()
                    .is_none_or(|id| serde_json::to_value(id).is_ok_and(|v| carried(&v)));
            if plain {
                return (body, true);
            }
        } else if serde_json::from_slice::<Response>(&body).is_ok() {
            return (body, true);
        }
        let value = match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v,
            Err(e) => match repaired(&body) {
                Some(v) => {
                    tracing::warn!(
                        "a message held lone UTF-16 surrogates or invalid UTF-8: replaced by \
                         U+FFFD"
                    );
                    v
                }
                None => {
                    self.after_truncated = e.is_eof();
                    tracing::warn!("malformed message from the client: {e}");
                    let text = format!("parse error: {e}");
                    return (malformed(Value::Null, -32700, &text), false);
                }
            },
        };
        self.message(value)
    }

    /// A parsed JSON value made into something the framework can decode.
    fn message(&mut self, mut v: Value) -> (Vec<u8>, bool) {
        let invalid = |id: Value, why: &str| {
            tracing::warn!("invalid request from the client: {why}");
            (
                malformed(id, -32600, &format!("invalid request: {why}")),
                false,
            )
        };
        let Some(obj) = v.as_object_mut() else {
            return invalid(Value::Null, "not a JSON-RPC 2.0 message");
        };
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = obj.get("id").filter(|id| !carried(id)).cloned() {
            if !id.is_number() {
                return invalid(Value::Null, "an id must be a number or a string");
            }
            match ids.insert(&id) {
                Some(token) => {
                    obj.insert("id".into(), Value::String(token));
                }
                None => {
                    return invalid(
                        Value::Null,
                        &format!("more than {MAX_REMAPPED_IDS} requests with unusual ids"),
                    )
                }
            }
        }
        if obj.get("method").and_then(Value::as_str) == Some("$/cancelRequest") {
            if let Some(id) = obj.get_mut("params").and_then(|p| p.get_mut("id")) {
                if let Some(token) = ids.token.get(&id.to_string()) {
                    *id = Value::String(token.clone());
                }
            }
        }
        drop(ids);
        let id = obj.get("id").cloned().unwrap_or(Value::Null);
        let body = v.to_string().into_bytes();
        if serde_json::from_slice::<Request>(&body).is_ok()
            || serde_json::from_slice::<Response>(&body).is_ok()
        {
            return (body, true);
        }
        let id = if id.is_string() || id.is_i64() {
            id
        } else {
            Value::Null
        };
        invalid(id, "not a JSON-RPC 2.0 message")
    }
}

/// `body` parsed after replacing lone surrogate escapes and invalid UTF-8 by U+FFFD.
fn repaired(body: &[u8]) -> Option<Value> {
    let fixed = replace_lone_surrogates(body);
    let bytes = fixed.as_deref().unwrap_or(body);
    let lossy = match String::from_utf8_lossy(bytes) {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(s) => Some(s.into_bytes()),
    };
    if fixed.is_none() && lossy.is_none() {
        return None;
    }
    serde_json::from_slice(lossy.as_deref().unwrap_or(bytes)).ok()
}

/// Spawn the sanitizer on `input`; the framework reads the clean stream from the returned
/// pipe. `closed` fires when the input ends (the editor went away).
pub fn sanitize<R>(
    input: R,
    ids: Arc<Mutex<IdMap>>,
    closed: tokio::sync::oneshot::Sender<()>,
) -> DuplexStream
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (mut tx, rx) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let mut input = input;
        let mut framer = Framer::new();
        let mut sanitizer = Sanitizer::new(ids);
        let mut chunk = vec![0u8; 1 << 16];
        let mut ended = false;
        while !ended {
            match input.read(&mut chunk).await {
                Ok(0) => {
                    framer.finish();
                    ended = true;
                }
                Ok(n) => framer.push(&chunk[..n]),
                Err(e) => {
                    tracing::info!("reading client input failed: {e}");
                    framer.finish();
                    ended = true;
                }
            }
            while let Some(event) = framer.next_event() {
                let Some(body) = sanitizer.clean(event) else {
                    continue;
                };
                let header = format!("Content-Length: {}\r\n\r\n", body.len());
                if tx.write_all(header.as_bytes()).await.is_err()
                    || tx.write_all(&body).await.is_err()
                {
                    return; // the server stopped reading
                }
            }
        }
        tracing::info!("the client closed the server's input");
        let _ = closed.send(());
        let _ = tx.shutdown().await;
    });
    rx
}

/// Spawn the writer that puts swapped ids back: the framework writes to the returned pipe,
/// the task copies each frame to `output`. It ends when the pipe's writer is dropped.
pub fn restore_ids<W>(
    output: W,
    ids: Arc<Mutex<IdMap>>,
) -> (DuplexStream, tokio::task::JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(async move {
        let mut out = output;
        let mut r = BufReader::new(rx);
        // The framework's own frames: `Content-Length: N\r\n\r\n` and N bytes.
        loop {
            let mut len = None;
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => {
                        let _ = out.flush().await;
                        return;
                    }
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&line);
                let line = line.trim();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse::<usize>().ok();
                    }
                }
            }
            let mut body = vec![0; len.unwrap_or(0)];
            if r.read_exact(&mut body).await.is_err() {
                let _ = out.flush().await;
                return;
            }
            if let Some(b) = ids.lock().unwrap_or_else(|e| e.into_inner()).restore(&body) {
                body = b;
            }
            let header = format!("Content-Length: {}\r\n\r\n", body.len());
            if out.write_all(header.as_bytes()).await.is_err()
                || out.write_all(&body).await.is_err()
                || out.flush().await.is_err()
            {
                return;
            }
        }
    });
    (tx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(body: &str) -> Value {
        let mut s = Sanitizer::default();
        let out = s.clean(Event::Message(body.as_bytes().to_vec())).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn valid_messages_pass_untouched() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{}}}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"a"}"#,
            r#"{"jsonrpc":"2.0","id":7,"result":null}"#,
            r#"{"jsonrpc":"2.0","method":"exit"}"#,
        ] {
            let mut s = Sanitizer::default();
            let out = s.clean(Event::Message(body.as_bytes().to_vec())).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), body);
        }
    }

    #[test]
    fn malformed_bodies_become_error_requests() {
        let cases = [
            ("{not json", -32700, Value::Null),
            (r#"{"id": 5, "hello": 1}"#, -32600, json!(5)),
            ("[1,2,3]", -32600, Value::Null),
            (
                r#"{"jsonrpc":"2.0","id":true,"method":"a"}"#,
                -32600,
                Value::Null,
            ),
            (
                r#"{"jsonrpc":"1.0","id":"s","method":"a"}"#,
                -32600,
                json!("s"),
            ),
        ];
        for (body, code, id) in cases {
            let m = clean(body);
            assert_eq!(m["method"], MALFORMED, "{body}");
            assert_eq!(m["params"]["code"], code, "{body}");
            assert_eq!(m["id"], id, "{body}");
        }
    }

    #[test]
    fn ids_the_framework_cannot_carry_are_swapped_and_restored() {
        let ids = Arc::new(Mutex::new(IdMap::default()));
        let mut s = Sanitizer::new(ids.clone());
        for (id, cancel) in [
            ("1.0", "1.0"),
            ("9223372036854775808", "9223372036854775808"),
            ("3000000000", "3000000000"),
            ("-2.5e3", "-2500.0"),
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"x"}}"#);
            let out = s.clean(Event::Message(body.into_bytes())).unwrap();
            let req: Request = serde_json::from_slice(&out).expect("the framework decodes it");
            let token = serde_json::to_value(req.id().unwrap()).unwrap();
            assert!(token.is_string(), "{id}: {token}");
            // A cancel names the same request.
            let c = format!(
                r#"{{"jsonrpc":"2.0","method":"$/cancelRequest","params":{{"id":{cancel}}}}}"#
            );
            let out: Value =
                serde_json::from_slice(&s.clean(Event::Message(c.into_bytes())).unwrap()).unwrap();
            assert_eq!(out["params"]["id"], token, "{id}");
            // The answer goes out with the id as sent.
            let resp = Response::from_ok(serde_json::from_value(token).unwrap(), json!(1));
            let bytes = serde_json::to_vec(&resp).unwrap();
            let back = ids.lock().unwrap().restore(&bytes).unwrap();
            let back: Value = serde_json::from_slice(&back).unwrap();
            let want: Value = serde_json::from_str(id).unwrap();
            assert_eq!(back["id"], want, "{id}");
            assert_eq!(back["result"], 1);
        }
        assert!(ids.lock().unwrap().is_empty());
    }

    #[test]
    fn lone_surrogates_become_one_replacement_character() {
        let cases = [
            (r#""a\ud83db""#, r#""a\ufffdb""#),
            (r#""\ude00""#, r#""\ufffd""#),
            (r#""\ud83d\ude00""#, r#""\ud83d\ude00""#),
            (r#""\ud83d\ud83d\ude00""#, r#""\ufffd\ud83d\ude00""#),
            (r#""\\ud83d""#, r#""\\ud83d""#),
            (r#""\ud83d"#, r#""\ufffd"#),
            ("\"\\", "\"\\"),
        ];
        for (input, want) in cases {
            let got = replace_lone_surrogates(input.as_bytes());
            let got = got.as_deref().unwrap_or(input.as_bytes());
            assert_eq!(std::str::from_utf8(got).unwrap(), want, "{input}");
        }
        let m = clean(
            r#"{"jsonrpc":"2.0","method":"textDocument/didChange","params":{"t":"x\ud83dy"}}"#,
        );
        assert_eq!(m["params"]["t"], "x\u{FFFD}y");
        let mut bytes = br#"{"jsonrpc":"2.0","method":"m","params":{"t":"a"#.to_vec();
        bytes.extend([0xff, b'"', b'}', b'}']);
        let mut s = Sanitizer::default();
        let m: Value = serde_json::from_slice(&s.clean(Event::Message(bytes)).unwrap()).unwrap();
        assert_eq!(m["params"]["t"], "a\u{FFFD}");
    }

    #[test]
    fn the_rest_of_a_short_frame_is_not_answered_twice() {
        let mut s = Sanitizer::default();
        assert!(s.clean(Event::Message(b"{\"jso".to_vec())).is_some());
        let e = crate::framing::FrameError::NotAHeader("x".into());
        assert!(s.clean(Event::Error(e.clone())).is_none());
        assert!(s.clean(Event::Error(e.clone())).is_some());
        // After a whole body that is no message, garbage is a new incident.
        assert!(s.clean(Event::Message(b"[1,2,3]".to_vec())).is_some());
        assert!(s.clean(Event::Error(e)).is_some());
    }
}
