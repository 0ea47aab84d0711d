//! The input sanitizer: re-frames the client's byte stream before tower-lsp-server reads it.
//!
//! tower-lsp-server 0.23 answers a malformed message with an error, but its framed reader
//! then ends the stream (tokio-util's `FramedRead` yields `None` after a decoder error), so
//! the server would stop on the first bad byte. Here every frame is checked; one that the
//! framework could not decode (bad headers, invalid UTF-8 or JSON, not a JSON-RPC message)
//! is replaced by a request to [`MALFORMED`], whose handler answers the JSON-RPC error
//! (`-32700` parse error or `-32600` invalid request, id `null` unless one was readable).
//! Valid frames pass through untouched, with only their `Content-Length` header.

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tower_lsp_server::jsonrpc::{Request, Response};

/// The method a malformed frame is turned into.
pub const MALFORMED: &str = "copilot/internal/malformed";

/// Largest message accepted (a 256 MiB document is not one an editor sends).
const MAX_CONTENT: usize = 256 << 20;

/// Params of [`MALFORMED`].
#[derive(Debug, Deserialize)]
pub struct Malformed {
    pub code: i64,
    pub message: String,
}

/// What to hand the framework for one frame's body.
pub fn check(body: &[u8]) -> Option<Value> {
    if serde_json::from_slice::<Request>(body).is_ok()
        || serde_json::from_slice::<Response>(body).is_ok()
    {
        return None;
    }
    Some(match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            // Valid JSON but not a message: answer to its id if it has a usable one.
            let id = match v.get("id") {
                Some(id @ (Value::Number(_) | Value::String(_)))
                    if id.as_f64().is_none_or(|f| f.fract() == 0.0) =>
                {
                    id.clone()
                }
                _ => Value::Null,
            };
            malformed(id, -32600, "invalid request: not a JSON-RPC 2.0 message")
        }
        Err(e) => malformed(Value::Null, -32700, &format!("parse error: {e}")),
    })
}

fn malformed(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": MALFORMED,
           "params": {"code": code, "message": message}})
}

/// Spawn the sanitizer on `input`; read the clean stream from the returned pipe.
pub fn sanitize<R>(input: R) -> DuplexStream
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (mut tx, rx) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let mut r = BufReader::new(input);
        loop {
            match next_frame(&mut r).await {
                Ok(Some(frame)) => {
                    let body = match frame {
                        Frame::Body(b) => match check(&b) {
                            None => b,
                            Some(replacement) => {
                                tracing::warn!(
                                    "malformed message from the client: {}",
                                    replacement["params"]["message"]
                                );
                                replacement.to_string().into_bytes()
                            }
                        },
                        Frame::BadHeader(why) => {
                            tracing::warn!("malformed header from the client: {why}");
                            malformed(Value::Null, -32700, &format!("parse error: {why}"))
                                .to_string()
                                .into_bytes()
                        }
                    };
                    let header = format!("Content-Length: {}\r\n\r\n", body.len());
                    if tx.write_all(header.as_bytes()).await.is_err()
                        || tx.write_all(&body).await.is_err()
                    {
                        return; // the server stopped reading
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!("reading client input failed: {e}");
                    break;
                }
            }
        }
        let _ = tx.shutdown().await;
    });
    rx
}

enum Frame {
    Body(Vec<u8>),
    BadHeader(String),
}

/// Read one frame. `Ok(None)` at the end of the input.
async fn next_frame<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> std::io::Result<Option<Frame>> {
    let mut len: Option<usize> = None;
    let mut bad: Option<String> = None;
    let mut saw_header = false;
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if saw_header {
                break;
            }
            continue; // stray blank line between messages
        }
        saw_header = true;
        match text.split_once(':') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("content-length") => {
                match value.trim().parse::<usize>() {
                    Ok(n) if n <= MAX_CONTENT => len = Some(n),
                    Ok(n) => bad = Some(format!("Content-Length {n} is too large")),
                    Err(_) => bad = Some(format!("invalid Content-Length `{}`", value.trim())),
                }
            }
            Some((name, _)) if name.trim().eq_ignore_ascii_case("content-type") => {}
            Some((name, _)) if !name.trim().is_empty() && !name.contains(char::is_whitespace) => {
                tracing::debug!("ignoring header `{}`", name.trim());
            }
            _ => {
                // Not a header: garbage. Report it and look for the next message.
                return Ok(Some(Frame::BadHeader(format!(
                    "expected a header, got `{}`",
                    text.chars().take(40).collect::<String>()
                ))));
            }
        }
    }
    if let Some(why) = bad {
        return Ok(Some(Frame::BadHeader(why)));
    }
    let Some(n) = len else {
        return Ok(Some(Frame::BadHeader("missing Content-Length".into())));
    };
    let mut body = vec![0; n];
    r.read_exact(&mut body).await?;
    Ok(Some(Frame::Body(body)))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn frame(body: &str) -> String {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    async fn run(input: &str) -> Vec<Value> {
        let mut out = sanitize(std::io::Cursor::new(input.as_bytes().to_vec()));
        let mut all = String::new();
        out.read_to_string(&mut all).await.unwrap();
        let mut msgs = Vec::new();
        let mut rest = all.as_str();
        while let Some(i) = rest.find("\r\n\r\n") {
            let n: usize = rest["Content-Length: ".len()..i].parse().unwrap();
            let body = &rest[i + 4..i + 4 + n];
            msgs.push(serde_json::from_str(body).unwrap());
            rest = &rest[i + 4 + n..];
        }
        msgs
    }

    #[tokio::test]
    async fn valid_messages_pass_through() {
        let a = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{}}}"#;
        let b = r#"{"jsonrpc":"2.0","id":7,"result":null}"#;
        let input = format!(
            "Content-Length: {}\r\nContent-Type: application/vscode-jsonrpc\r\n\r\n{a}{}",
            a.len(),
            frame(b)
        );
        let out = run(&input).await;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["method"], "initialize");
        assert_eq!(out[1]["id"], 7);
    }

    #[tokio::test]
    async fn malformed_frames_become_error_requests() {
        let input = [
            frame("{not json"),
            frame(r#"{"id": 5, "hello": 1}"#),
            frame("[1,2,3]"),
            "garbage line\r\n".to_string(),
            "Content-Length: x\r\n\r\n".to_string(),
            frame(r#"{"jsonrpc":"2.0","method":"exit"}"#),
        ]
        .concat();
        let out = run(&input).await;
        let codes: Vec<_> = out.iter().map(|m| m["params"]["code"].clone()).collect();
        assert_eq!(
            codes,
            [
                json!(-32700),
                json!(-32600),
                json!(-32600),
                json!(-32700),
                json!(-32700),
                Value::Null
            ]
        );
        assert_eq!(out[1]["id"], 5);
        assert_eq!(out[0]["id"], Value::Null);
        assert_eq!(out[5]["method"], "exit");
        assert!(out[..5].iter().all(|m| m["method"] == MALFORMED));
    }

    #[tokio::test]
    async fn invalid_utf8_is_a_parse_error() {
        let mut bytes = b"Content-Length: 3\r\n\r\n".to_vec();
        bytes.extend([0xff, 0xfe, b'{']);
        let mut out = sanitize(std::io::Cursor::new(bytes));
        let mut s = String::new();
        out.read_to_string(&mut s).await.unwrap();
        assert!(s.contains("-32700"), "{s}");
    }
}
