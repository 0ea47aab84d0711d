//! The HTTP client of a remote engine: reqwest over rustls, one pooled client per engine
//! (connections reused), the bearer token from the environment, timeouts, and every error
//! turned into a [`Fault`] of its class. The key is kept in a header marked sensitive and
//! scrubbed from anything a server sends back; it is never logged or put in a message.

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde_json::Value;

use crate::backoff::{Fault, FaultKind};
use crate::spec::{RemoteSpec, Timeouts};
use crate::RemoteError;

/// Most bytes of an error body read (for its message).
const ERROR_BODY: usize = 8 << 10;
/// Most bytes of a JSON answer (`/props`, `/v1/models`, `/api/show`).
const JSON_BODY: usize = 8 << 20;

/// A secret that prints as `***`.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
    base: String,
    auth: Option<HeaderValue>,
    key: Option<Secret>,
    pub timeouts: Timeouts,
}

impl Http {
    pub fn new(spec: &RemoteSpec) -> Result<Self, RemoteError> {
        let key = match &spec.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.trim().is_empty() => Some(Secret(k.trim().to_string())),
                _ => {
                    return Err(RemoteError::Setup(format!(
                        "`apiKeyEnv` names the environment variable {var}, which is not set"
                    )))
                }
            },
        };
        let auth = match &key {
            None => None,
            Some(Secret(k)) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    RemoteError::Setup(format!(
                        "the key in {} is not a valid header value",
                        spec.api_key_env.as_deref().unwrap_or_default()
                    ))
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let url = reqwest::Url::parse(&spec.endpoint)
            .map_err(|e| RemoteError::Setup(format!("endpoint {}: {e}", spec.endpoint)))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(spec.timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("copilot-lsp/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&url) {
            // A proxy from the environment never serves this machine's own servers.
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| RemoteError::Setup(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: spec.endpoint.trim_end_matches('/').to_string(),
            auth,
            key,
            timeouts: spec.timeouts,
        })
    }

    /// `text` with the key, should a server echo it, replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        match &self.key {
            Some(Secret(k)) if !k.is_empty() => text.replace(k.as_str(), "***"),
            _ => text.to_string(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some(a) => rb.header(AUTHORIZATION, a.clone()),
            None => rb,
        }
    }

    /// Send, wait for the response's headers, and turn an error status into a fault.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, Fault> {
        let attempt = || {
            let mut rb = self.request(method.clone(), path);
            if let Some(b) = body {
                rb = rb
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            tokio::time::timeout(self.timeouts.response, rb.send())
        };
        let timed_out = || {
            Fault::new(
                FaultKind::Timeout,
                format!(
                    "no answer from {path} within {:.1} s",
                    self.timeouts.response.as_secs_f64()
                ),
            )
        };
        let resp = match attempt().await.map_err(|_| timed_out())? {
            Ok(r) => r,
            // A pooled keep-alive connection that the server closed meanwhile fails before
            // any answer ("connection closed before message completed": seen against
            // llama-server between typing pauses). Asking again on a fresh connection is
            // safe: a completion has no side effect. A server that is really down fails
            // the second time too, with the same fault.
            Err(e) if !e.is_timeout() => {
                tracing::debug!("{path}: {e}; asking again on a new connection");
                attempt()
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| self.classify(&e, path))?
            }
            Err(e) => return Err(self.classify(&e, path)),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = tokio::time::timeout(Duration::from_secs(1), read_limited(resp, ERROR_BODY))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let said = self.scrub(&error_text(&body));
        Err(Fault::new(
            FaultKind::of_status(status.as_u16()),
            format!(
                "HTTP {status} from {path}{}",
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            ),
        ))
    }

    /// A JSON answer (not streamed).
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Fault> {
        let resp = self.send(method, path, body).await?;
        let bytes = tokio::time::timeout(self.timeouts.idle, read_limited(resp, JSON_BODY))
            .await
            .map_err(|_| {
                Fault::new(
                    FaultKind::Timeout,
                    format!("{path} stopped answering mid-way"),
                )
            })?
            .map_err(|e| self.classify(&e, path))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Fault::new(
                FaultKind::Malformed,
                format!("{path} answered with invalid JSON: {e}"),
            )
        })
    }

    /// The next piece of a streamed body: `None` at its end.
    pub async fn chunk(
        &self,
        resp: &mut reqwest::Response,
        path: &str,
    ) -> Result<Option<bytes::Bytes>, Fault> {
        match tokio::time::timeout(self.timeouts.idle, resp.chunk()).await {
            Err(_) => Err(Fault::new(
                FaultKind::Timeout,
                format!(
                    "the stream from {path} stalled for {:.1} s",
                    self.timeouts.idle.as_secs_f64()
                ),
            )),
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(Fault::new(
                FaultKind::BrokenStream,
                format!("the stream from {path} broke: {}", chain(&e)),
            )),
        }
    }

    /// The class of a transport error.
    pub fn classify(&self, e: &reqwest::Error, path: &str) -> Fault {
        let text = chain(e);
        let lower = text.to_ascii_lowercase();
        let refused = {
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
            let mut found = false;
            while let Some(s) = src {
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    found |= io.kind() == std::io::ErrorKind::ConnectionRefused;
                }
                src = s.source();
            }
            found || lower.contains("connection refused")
        };
        let kind = if e.is_timeout() {
            FaultKind::Timeout
        } else if refused {
            FaultKind::Refused
        } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
            FaultKind::Dns
        } else if e.is_connect() {
            FaultKind::Unreachable
        } else if e.is_body() || e.is_decode() {
            FaultKind::BrokenStream
        } else {
            FaultKind::Unreachable
        };
        let what = match kind {
            FaultKind::Refused => "connection refused (is the server running?)".to_string(),
            FaultKind::Dns => format!("cannot resolve the host name ({text})"),
            FaultKind::Timeout => format!(
                "could not connect within {:.1} s",
                self.timeouts.connect.as_secs_f64()
            ),
            _ => text,
        };
        Fault::new(kind, self.scrub(&format!("{path}: {what}")))
    }
}

/// An error and its causes, in one line (the URL left out: the endpoint is said elsewhere).
fn chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        src = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> reqwest::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await? {
        out.extend_from_slice(&c);
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

/// What an error body says, in one short line: the `error`/`message` field of a JSON body,
/// else the start of the text.
pub fn error_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let said = match serde_json::from_str::<Value>(&text) {
        Ok(v) => {
            let field = |v: &Value| -> Option<String> {
                match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => {
                        o.get("message").and_then(Value::as_str).map(str::to_string)
                    }
                    _ => None,
                }
            };
            v.get("error")
                .and_then(field)
                .or_else(|| field(&v))
                .or_else(|| v.get("detail").and_then(field))
                .unwrap_or_else(|| text.to_string())
        }
        Err(_) => text.to_string(),
    };
    let one_line = said.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_in_one_line() {
        assert_eq!(
            error_text(br#"{"error":{"code":500,"message":"Loading\nmodel","type":"x"}}"#),
            "Loading model"
        );
        assert_eq!(
            error_text(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            error_text(br#"{"object":"error","message":"max 4 stop"}"#),
            "max 4 stop"
        );
        assert_eq!(
            error_text(b"<h1>Bad\n Gateway</h1>"),
            "<h1>Bad Gateway</h1>"
        );
        let long = "é".repeat(300);
        assert_eq!(error_text(long.as_bytes()).chars().count(), 201);
        assert_eq!(error_text(b""), "");
    }

    #[test]
    fn loopback_hosts() {
        for (u, want) in [
            ("http://127.0.0.1:8080", true),
            ("http://localhost:1", true),
            ("http://[::1]:2", true),
            ("http://gpu-box:8000", false),
            ("https://10.0.0.2", false),
        ] {
            assert_eq!(is_loopback(&reqwest::Url::parse(u).unwrap()), want, "{u}");
        }
    }
}
