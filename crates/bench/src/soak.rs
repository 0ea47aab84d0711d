//! `copilot-lsp bench --scenario soak`: a soak and load run through the real binary over
//! stdio, as an editor drives it. Mixed messages (edits, completions, cancels, configuration
//! changes, closes and reopens, cheap requests) to many documents, with a bounded number of
//! requests outstanding; reported, never asserted:
//! - request latency (p50/p99), completions and cheap requests apart;
//! - the server's RSS, open file descriptors and threads at the start and every 10,000
//!   messages (read from `/proc` at a quiet moment: nothing outstanding);
//! - requests lost (never answered) or answered twice, and documents whose text diverged from
//!   the client's.
//!
//! Its own module: the rest of the crate drives the server in process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// The `copilot-lsp` binary to run (`--stdio`).
    pub server: PathBuf,
    pub model: String,
    pub messages: usize,
    pub documents: usize,
    /// Requests outstanding at most before the client waits for answers.
    pub outstanding: usize,
    pub seed: u64,
}

/// The server's resources at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    pub messages: usize,
    pub rss_mib: f64,
    pub fds: usize,
    pub threads: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakReport {
    pub messages: usize,
    pub seconds: f64,
    pub requests: usize,
    /// Completions answered with text, empty, or cancelled (`-32800`).
    pub completions: Percentiles,
    pub completions_with_text: usize,
    pub completions_empty: usize,
    pub completions_cancelled: usize,
    /// Requests that are not completions (`copilot/debugStats`, `copilot/debugDocument`).
    pub cheap: Percentiles,
    pub lost: usize,
    pub duplicated: usize,
    pub errors: usize,
    pub diverged_documents: usize,
    pub samples: Vec<Sample>,
    /// The server's own counters at the end (`copilot/debugStats`).
    pub server_stats: Value,
    pub exit_code: Option<i32>,
}

impl SoakReport {
    pub fn table(&self) -> String {
        let p = |x: &Percentiles| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {}",
                x.p50_ms, x.p99_ms, x.max_ms, x.samples
            )
        };
        let mut s = format!(
            "soak: {} messages in {:.0} s, {} requests\n",
            self.messages, self.seconds, self.requests
        );
        s += &format!(
            "completions {} ({} with text, {} empty, {} cancelled)\n",
            p(&self.completions),
            self.completions_with_text,
            self.completions_empty,
            self.completions_cancelled
        );
        s += &format!("cheap requests {}\n", p(&self.cheap));
        s += &format!(
            "lost {}, duplicated {}, error answers {}, diverged documents {}, exit code {:?}\n",
            self.lost, self.duplicated, self.errors, self.diverged_documents, self.exit_code
        );
        s += "messages   RSS MiB   fds  threads\n";
        for x in &self.samples {
            s += &format!(
                "{:>8}  {:>8.1}  {:>4}  {:>7}\n",
                x.messages, x.rss_mib, x.fds, x.threads
            );
        }
        s
    }
}

/// A small deterministic generator (xorshift64*): the run is the same for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn frame(v: &Value) -> Vec<u8> {
    let body = v.to_string();
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend(body.into_bytes());
    out
}

fn send(stdin: &Mutex<ChildStdin>, v: &Value) -> Result<()> {
    let mut w = stdin.lock().unwrap_or_else(|e| e.into_inner());
    w.write_all(&frame(v))?;
    w.flush()?;
    Ok(())
}

fn read_message(r: &mut impl BufRead) -> Option<Value> {
    let mut len = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok();
            }
        }
    }
    let mut body = vec![0; len?];
    r.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

fn proc_sample(pid: u32, messages: usize) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Sample {
        messages,
        rss_mib: field("VmRSS:") / 1024.0,
        fds,
        threads: field("Threads:") as usize,
    }
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        samples: v.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Cheap,
    /// `copilot/debugDocument` for this document: its text is checked.
    Document(usize),
}

struct Soak {
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    rx: Receiver<(Value, Instant)>,
    next_id: i64,
    outstanding: usize,
    pending: HashMap<i64, (Instant, Kind)>,
    answered: std::collections::HashSet<i64>,
    report: SoakReport,
    completion_ms: Vec<f64>,
    cheap_ms: Vec<f64>,
    texts: Vec<String>,
    /// Documents with a `debugDocument` in flight: not edited until it is answered.
    locked: Vec<bool>,
}

fn uri(i: usize) -> String {
    format!("file:///soak/module_{i}.py")
}

/// Byte offset of char index `at`, and its (line, column in chars) position.
fn locate(text: &str, at: usize) -> (usize, u32, u32) {
    let mut line = 0;
    let mut col = 0;
    for (n, (i, c)) in text.char_indices().enumerate() {
        if n == at {
            return (i, line, col);
        }
        if c == '\n' {
            line += 1;
            col = 0;
        } else {
            col += 1;
        }
    }
    (text.len(), line, col)
}

impl Soak {
    fn request(&mut self, method: &str, params: Value, kind: Kind) -> Result<i64> {
        while self.pending.len() >= self.outstanding {
            self.take(Duration::from_secs(120))?;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, (Instant::now(), kind));
        self.report.requests += 1;
        send(
            &self.stdin,
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )?;
        Ok(id)
    }

    fn notify(&mut self, method: &str, params: Value) -> Result<()> {
        send(
            &self.stdin,
            &json!({"jsonrpc": "2.0", "method": method, "params": params}),
        )
    }

    /// Wait up to `within` for an answer and file it.
    fn take(&mut self, within: Duration) -> Result<()> {
        let (msg, at) = self.recv(within)?;
        self.file(msg, at);
        Ok(())
    }

    fn recv(&mut self, within: Duration) -> Result<(Value, Instant)> {
        match self.rx.recv_timeout(within) {
            Ok(m) => Ok(m),
            Err(RecvTimeoutError::Timeout) => bail!("no answer within {within:?}"),
            Err(RecvTimeoutError::Disconnected) => bail!("the server closed its output"),
        }
    }

    /// Count an answer: its latency, its outcome, a duplicate.
    fn file(&mut self, msg: Value, at: Instant) {
        let Some(id) = msg["id"].as_i64() else {
            self.report.errors += 1;
            return;
        };
        let Some((sent, kind)) = self.pending.remove(&id) else {
            if self.answered.contains(&id) {
                self.report.duplicated += 1;
            }
            return;
        };
        self.answered.insert(id);
        let ms = (at - sent).as_secs_f64() * 1e3;
        match kind {
            Kind::Completion => {
                self.completion_ms.push(ms);
                if msg["error"]["code"] == -32800 {
                    self.report.completions_cancelled += 1;
                } else if msg.get("error").is_some() {
                    self.report.errors += 1;
                } else if msg["result"]["items"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
                {
                    self.report.completions_with_text += 1;
                } else {
                    self.report.completions_empty += 1;
                }
            }
            Kind::Cheap => self.cheap_ms.push(ms),
            Kind::Document(d) => {
                self.cheap_ms.push(ms);
                self.locked[d] = false;
                if msg["result"]["text"].as_str() != Some(self.texts[d].as_str()) {
                    self.report.diverged_documents += 1;
                }
            }
        }
    }

    fn quiesce(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.take(Duration::from_secs(120))?;
        }
        Ok(())
    }
}

pub fn run(opts: &SoakOptions) -> Result<SoakReport> {
    let mut child = Command::new(&opts.server)
        .args(["--stdio", "--log-level", "warn"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", opts.server.display()))?;
    let pid = child.id();
    let stdin = Arc::new(Mutex::new(child.stdin.take().context("stdin")?));
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    let replier = stdin.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        while let Some(msg) = read_message(&mut r) {
            let at = Instant::now();
            if msg.get("method").is_some() {
                // A server request (progress token): answer it; notifications are dropped.
                if let Some(id) = msg.get("id") {
                    let _ = send(
                        &replier,
                        &json!({"jsonrpc": "2.0", "id": id, "result": null}),
                    );
                }
                continue;
            }
            if tx.send((msg, at)).is_err() {
                return;
            }
        }
    });
    let mut s = Soak {
        child,
        stdin,
        rx,
        next_id: 1,
        outstanding: opts.outstanding.max(1),
        pending: HashMap::new(),
        answered: Default::default(),
        report: SoakReport::default(),
        completion_ms: Vec::new(),
        cheap_ms: Vec::new(),
        texts: Vec::new(),
        locked: vec![false; opts.documents],
    };
    let started = Instant::now();

    // Initialize and wait for the model.
    let caps = json!({"general": {"positionEncodings": ["utf-32"]},
                      "textDocument": {"inlineCompletion": {}}});
    s.request(
        "initialize",
        json!({"processId": std::process::id(), "capabilities": caps,
               "initializationOptions": {"model": opts.model, "maxTokens": 16,
                                         "debounceMs": 20, "temperature": 0}}),
        Kind::Cheap,
    )?;
    s.quiesce()?;
    s.notify("initialized", json!({}))?;
    loop {
        s.request("copilot/debugStats", Value::Null, Kind::Cheap)?;
        let (msg, _) = s.recv(Duration::from_secs(300))?;
        s.pending.clear();
        match msg["result"]["model"].as_str() {
            Some("ready") => break,
            Some("failed") => bail!("the model failed to load"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    s.completion_ms.clear();
    s.cheap_ms.clear();

    for d in 0..opts.documents {
        let text: String = crate::python_file(d)
            .lines()
            .take(60)
            .map(|l| format!("{l}\n"))
            .collect();
        s.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri(d), "languageId": "python", "version": 0,
                                    "text": text}}),
        )?;
        s.texts.push(text);
    }
    s.report.samples.push(proc_sample(pid, 0));

    let mut rng = Rng(opts.seed.max(1));
    let mut versions = vec![0i64; opts.documents];
    let alphabet = ['a', 'x', '_', ' ', '(', ')', ':', '\n', 'é', '1'];
    let mut sent = 0usize;
    let mut recent: Vec<i64> = Vec::new();
    let mut next_sample = 10_000;
    while sent < opts.messages {
        let d = rng.below(opts.documents);
        let roll = rng.below(100);
        let chars = s.texts[d].chars().count();
        match roll {
            // An edit: insert or delete one character somewhere.
            0..=44 if !s.locked[d] => {
                let at = rng.below(chars + 1);
                let (byte, line, col) = locate(&s.texts[d], at);
                versions[d] += 1;
                let change = if rng.below(3) == 0 && at < chars {
                    let c = s.texts[d][byte..].chars().next().expect("a char");
                    let (_, l2, c2) = locate(&s.texts[d], at + 1);
                    s.texts[d].replace_range(byte..byte + c.len_utf8(), "");
                    json!({"range": {"start": {"line": line, "character": col},
                                     "end": {"line": l2, "character": c2}}, "text": ""})
                } else {
                    let c = alphabet[rng.below(alphabet.len())];
                    s.texts[d].insert(byte, c);
                    json!({"range": {"start": {"line": line, "character": col},
                                     "end": {"line": line, "character": col}},
                           "text": c.to_string()})
                };
                s.notify(
                    "textDocument/didChange",
                    json!({"textDocument": {"uri": uri(d), "version": versions[d]},
                           "contentChanges": [change]}),
                )?;
            }
            45..=69 => {
                let (_, line, col) = locate(&s.texts[d], rng.below(chars + 1));
                let trigger = if rng.below(4) == 0 { 1 } else { 2 };
                let id = s.request(
                    "textDocument/inlineCompletion",
                    json!({"textDocument": {"uri": uri(d)},
                           "position": {"line": line, "character": col},
                           "context": {"triggerKind": trigger}}),
                    Kind::Completion,
                )?;
                recent.push(id);
                if recent.len() > 64 {
                    recent.remove(0);
                }
            }
            70..=79 if !recent.is_empty() => {
                let id = recent[rng.below(recent.len())];
                s.notify("$/cancelRequest", json!({ "id": id }))?;
            }
            80..=89 => {
                s.request("copilot/debugStats", Value::Null, Kind::Cheap)?;
            }
            90..=91 => {
                let settings = json!({"maxTokens": 8 + 8 * rng.below(2),
                                      "debounceMs": 20 * rng.below(2),
                                      "temperature": if rng.below(2) == 0 { 0.0 } else { 0.2 }});
                s.notify(
                    "workspace/didChangeConfiguration",
                    json!({ "settings": settings }),
                )?;
            }
            92..=94 if !s.locked[d] => {
                s.notify(
                    "textDocument/didClose",
                    json!({"textDocument": {"uri": uri(d)}}),
                )?;
                versions[d] += 1;
                s.notify(
                    "textDocument/didOpen",
                    json!({"textDocument": {"uri": uri(d), "languageId": "python",
                                            "version": versions[d], "text": s.texts[d]}}),
                )?;
                sent += 1;
            }
            95..=96 if !s.locked[d] => {
                s.locked[d] = true;
                s.request(
                    "copilot/debugDocument",
                    json!({"uri": uri(d)}),
                    Kind::Document(d),
                )?;
            }
            _ => {
                s.request("copilot/debugStats", Value::Null, Kind::Cheap)?;
            }
        }
        sent += 1;
        // File what has arrived, without waiting.
        while let Ok((msg, at)) = s.rx.try_recv() {
            s.file(msg, at);
        }
        if sent >= next_sample || sent >= opts.messages {
            s.quiesce()?;
            s.report.samples.push(proc_sample(pid, sent));
            next_sample += 10_000;
        }
    }
    // Every document as the client has it.
    for d in 0..opts.documents {
        s.request(
            "copilot/debugDocument",
            json!({"uri": uri(d)}),
            Kind::Document(d),
        )?;
    }
    s.quiesce()?;
    let id = s.next_id;
    s.request("copilot/debugStats", Value::Null, Kind::Cheap)?;
    while s.pending.contains_key(&id) {
        let (msg, at) = s.recv(Duration::from_secs(60))?;
        if msg["id"] == id {
            s.report.server_stats = msg["result"].clone();
        }
        s.file(msg, at);
    }
    s.request("shutdown", Value::Null, Kind::Cheap)?;
    let quiet = s.quiesce();
    s.report.lost = s.pending.len();
    quiet?;
    s.notify("exit", Value::Null)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = s.child.try_wait()? {
            s.report.exit_code = status.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if s.report.exit_code.is_none() {
        let _ = s.child.kill();
    }
    s.report.messages = sent;
    s.report.seconds = started.elapsed().as_secs_f64();
    s.report.completions = percentiles(std::mem::take(&mut s.completion_ms));
    s.report.cheap = percentiles(std::mem::take(&mut s.cheap_ms));
    Ok(s.report)
}
