//! A minimal LSP client: spawns `copilot-lsp --stdio` as an editor does, speaks
//! `Content-Length` framed JSON-RPC over its stdin/stdout, answers the server's own requests
//! (`window/workDoneProgress/create`, `workspace/configuration`) with `null`, and keeps
//! everything the server says unasked for inspection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_copilot-lsp");

/// How long any single answer may take before a test fails (CI machines are slow).
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Lsp {
    child: Child,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    rx: Receiver<Value>,
    /// Responses that arrived while waiting for something else.
    responses: HashMap<i64, Value>,
    /// Responses with a null id (malformed input).
    null_id_responses: Vec<Value>,
    /// Responses with any other id that is not an `i64` (floats, huge integers, strings).
    odd_id_responses: Vec<Value>,
    /// Notifications and server requests, in arrival order.
    pub unasked: Vec<Value>,
    next_id: i64,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn frame(body: &str) -> Vec<u8> {
    format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn write_all(stdin: &Mutex<Option<ChildStdin>>, bytes: &[u8]) -> std::io::Result<()> {
    let mut guard = stdin.lock().unwrap();
    let s = guard.as_mut().ok_or(std::io::ErrorKind::BrokenPipe)?;
    s.write_all(bytes)?;
    s.flush()
}

/// Read one framed message; `None` at the end of the stream.
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
                len = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = vec![0; len?];
    r.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).expect("the server wrote invalid JSON"))
}

impl Lsp {
    /// Spawn `copilot-lsp` with `args` (e.g. `["--stdio"]`), logging to a file; its event
    /// log goes to a temporary data directory (`XDG_DATA_HOME`), not the user's.
    pub fn spawn(args: &[&str]) -> Lsp {
        Self::spawn_with(args, &[], true)
    }

    /// [`Lsp::spawn`] with environment variables (paths) set for the server.
    pub fn spawn_env(args: &[&str], env: &[(&str, &Path)]) -> Lsp {
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(k, v)| (*k, v.to_str().expect("a UTF-8 path")))
            .collect();
        Self::spawn_with(args, &env, true)
    }

    /// Spawn with extra environment variables; with `log_file` false, the server logs to its
    /// stderr as it does for an editor (captured into the same file, raw). The event log
    /// goes to the test's own data directory unless `env` names one.
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)], log_file: bool) -> Lsp {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut cmd = Command::new(BIN);
        cmd.env("XDG_DATA_HOME", dir.path().join("data"));
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if log_file {
            cmd.arg("--log-file")
                .arg(&log)
                .arg("--log-level")
                .arg("debug")
                .stderr(Stdio::null());
        } else {
            cmd.stderr(std::fs::File::create(&log).unwrap());
        }
        let mut child = cmd.spawn().expect("spawn copilot-lsp");
        let stdin = Arc::new(Mutex::new(child.stdin.take()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let replier = stdin.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            while let Some(msg) = read_message(&mut r) {
                if msg.get("method").is_some() {
                    if let Some(id) = msg.get("id") {
                        let reply = json!({"jsonrpc": "2.0", "id": id, "result": null});
                        let _ = write_all(&replier, &frame(&reply.to_string()));
                    }
                }
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
        Lsp {
            child,
            stdin,
            rx,
            responses: HashMap::new(),
            null_id_responses: Vec::new(),
            odd_id_responses: Vec::new(),
            unasked: Vec::new(),
            next_id: 1,
            log,
            _dir: dir,
        }
    }

    pub fn raw(&self, bytes: &[u8]) {
        write_all(&self.stdin, bytes).expect("write to the server");
    }

    pub fn notify(&self, method: &str, params: Value) {
        let msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.raw(&frame(&msg.to_string()));
    }

    /// Send a request; returns its id.
    pub fn request(&mut self, method: &str, params: Value) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.raw(&frame(&msg.to_string()));
        id
    }

    /// Bytes of a request message, for sending several in one write.
    pub fn request_bytes(&mut self, method: &str, params: Value) -> (i64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        (id, frame(&msg.to_string()))
    }

    pub fn notification_bytes(method: &str, params: Value) -> Vec<u8> {
        let msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        frame(&msg.to_string())
    }

    fn file(&mut self, msg: Value) {
        if msg.get("method").is_some() {
            self.unasked.push(msg);
        } else if let Some(id) = msg["id"].as_i64() {
            self.responses.insert(id, msg);
        } else if msg["id"].is_null() {
            self.null_id_responses.push(msg);
        } else {
            self.odd_id_responses.push(msg);
        }
    }

    fn pump(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(m) => {
                self.file(m);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the server closed its output\n{}", self.log_tail())
            }
        }
    }

    /// Take whatever has arrived, without waiting.
    pub fn poll(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.file(m);
        }
    }

    /// The response to request `id`, if it arrives within `within`.
    pub fn try_response(&mut self, id: i64, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self.responses.remove(&id) {
                return Some(r);
            }
            if !self.pump(deadline) {
                return self.responses.remove(&id);
            }
        }
    }

    pub fn response(&mut self, id: i64) -> Value {
        self.try_response(id, PATIENCE)
            .unwrap_or_else(|| panic!("no response to request {id}\n{}", self.log_tail()))
    }

    pub fn null_id_response(&mut self) -> Value {
        let deadline = Instant::now() + PATIENCE;
        while self.null_id_responses.is_empty() {
            assert!(self.pump(deadline), "no error response to malformed input");
        }
        self.null_id_responses.remove(0)
    }

    /// The response whose id is exactly `id` as JSON text (`1.0`, `9223372036854775808`).
    pub fn response_with_raw_id(&mut self, id: &str) -> Value {
        let want: Value = serde_json::from_str(id).unwrap();
        if let Some(n) = want.as_i64() {
            return self.response(n);
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(i) = self.odd_id_responses.iter().position(|m| m["id"] == want) {
                return self.odd_id_responses.remove(i);
            }
            assert!(
                self.pump(deadline),
                "no response with id {id}\n{}",
                self.log_tail()
            );
        }
    }

    /// Null-id error responses received so far (without waiting).
    pub fn null_id_count(&mut self) -> usize {
        self.poll();
        self.null_id_responses.len()
    }

    /// The server's process id (for `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log (or raw stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The bytes of the log (or raw stderr) so far.
    pub fn log_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.log).unwrap_or_default()
    }

    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.request(method, params);
        self.response(id)
    }

    /// Wait for an unasked message matching `pred`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(m) = self.unasked.iter().find(|m| pred(m)) {
                return m.clone();
            }
            assert!(self.pump(deadline), "no {what}\n{}", self.log_tail());
        }
    }

    pub fn unasked(&mut self, method: &str) -> Vec<Value> {
        self.poll();
        self.unasked
            .iter()
            .filter(|m| m["method"] == method)
            .cloned()
            .collect()
    }

    pub fn initialize(
        &mut self,
        options: Value,
        capabilities: Value,
        root: Option<&Path>,
    ) -> Value {
        let root_uri = root.map(file_uri);
        let r = self.call(
            "initialize",
            json!({"processId": std::process::id(), "capabilities": capabilities,
                   "initializationOptions": options, "rootUri": root_uri,
                   "clientInfo": {"name": "copilot-lsp-harness"}}),
        );
        assert!(r.get("error").is_none(), "initialize failed: {r}");
        self.notify("initialized", json!({}));
        r
    }

    pub fn stats(&mut self) -> Value {
        self.call("copilot/debugStats", Value::Null)["result"].clone()
    }

    /// Wait until the model is loaded (or failed: returns the state either way).
    pub fn wait_model(&mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let state = self.stats()["model"].as_str().unwrap_or("").to_string();
            if state == "ready" || state == "failed" || Instant::now() > deadline {
                return state;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn open(&self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "python", "version": 0, "text": text}}),
        );
    }

    pub fn document(&mut self, uri: &str) -> Value {
        self.call("copilot/debugDocument", json!({"uri": uri}))["result"].clone()
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Close the server's input, as an editor that dies would.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.lock().unwrap().take());
    }

    /// `shutdown` then `exit`; the exit status.
    pub fn shutdown_and_exit(&mut self) -> ExitStatus {
        let r = self.call("shutdown", Value::Null);
        assert!(r.get("error").is_none(), "shutdown failed: {r}");
        self.notify("exit", Value::Null);
        self.wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("the server did not exit\n{}", self.log_tail()))
    }

    /// The whole server log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "--- server log (last 40 lines) ---\n{}",
            lines[start..].join("\n")
        )
    }
}

impl Drop for Lsp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn file_uri(path: &Path) -> String {
    let mut s = String::from("file://");
    for b in path.to_str().expect("utf-8 path").bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                s.push(b as char)
            }
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

/// Client capabilities of a modern editor: inline completion, progress, a position
/// encoding list.
pub fn caps(encodings: &[&str]) -> Value {
    json!({
        "general": {"positionEncodings": encodings},
        "window": {"workDoneProgress": true},
        "textDocument": {"inlineCompletion": {}, "synchronization": {"dynamicRegistration": false}}
    })
}

pub fn inline_params(uri: &str, line: u32, character: u32, trigger: u32) -> Value {
    json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
           "context": {"triggerKind": trigger}})
}

/// The insertTexts of an inlineCompletion response (panics on an error response).
pub fn texts(resp: &Value) -> Vec<String> {
    assert!(resp.get("error").is_none(), "error response: {resp}");
    let r = &resp["result"];
    let items = if r.is_array() { r } else { &r["items"] };
    items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["insertText"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}
