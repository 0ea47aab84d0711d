//! In-process test rig: the real server (`copilot_server::serve`) on in-memory pipes, a small
//! LSP client, and a scripted model behind the pipeline's generation seam, driven by tokio's
//! paused clock. Requests go through the real pipeline; the harness turns post-processing
//! and the completion cache off unless a test asks for them, so the scripted text arrives
//! as written.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use copilot_engine::ModelSpec;
use copilot_pipeline::{
    BoxFuture, Generated, Job, LanguageModel, LoadEvent, ModelInfo, PipelineError, StopReason,
};
use copilot_server::{EngineSpec, Loader, ServeOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

// --- the scripted model -----------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub enum LoadBehavior {
    Ok,
    Fail(String),
    Panic,
}

/// What the scripted model does, and what happened to it.
#[derive(Debug)]
pub struct Script {
    pub load_delay: Duration,
    pub load: LoadBehavior,
    pub token_delay: Duration,
    pub tokens: usize,
    pub loads: AtomicUsize,
    pub calls: AtomicUsize,
    pub finished: AtomicUsize,
    pub cancelled: AtomicUsize,
    /// When each cancelled generation noticed it.
    pub cancel_times: Mutex<Vec<Instant>>,
    pub specs: Mutex<Vec<ModelSpec>>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            load_delay: Duration::from_millis(100),
            load: LoadBehavior::Ok,
            token_delay: Duration::from_millis(10),
            tokens: 5,
            loads: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            cancel_times: Mutex::default(),
            specs: Mutex::default(),
        }
    }
}

impl Script {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

/// The scripted completion for a job: the cursor line's text before the cursor, quoted,
/// and the seed, so tests can tell which version and which choice an answer came from.
pub fn scripted_text(job: &Job) -> String {
    let before = &job.prompt.prefix;
    let line = before.rsplit(['\n', '\r']).next().unwrap_or("");
    format!("<{line}|{}>", job.sampling.seed)
}

pub struct ScriptedLoader(pub Arc<Script>);

struct ScriptedModel {
    script: Arc<Script>,
    info: ModelInfo,
}

/// Counts a generation that ends without finishing (cancelled or dropped) exactly once.
struct Watch {
    script: Arc<Script>,
    done: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            self.script.cancelled.fetch_add(1, Ordering::SeqCst);
            self.script
                .cancel_times
                .lock()
                .unwrap()
                .push(Instant::now());
        }
    }
}

impl LanguageModel for ScriptedModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn count_tokens(&self, text: &str) -> usize {
        text.len() / 4 + 1
    }

    fn generate(&self, job: Job) -> BoxFuture<Result<Generated, PipelineError>> {
        let script = self.script.clone();
        Box::pin(async move {
            script.calls.fetch_add(1, Ordering::SeqCst);
            let text = format!("{}{}", job.prompt.prefix, job.prompt.suffix);
            if text.contains("PANIC") {
                panic!("scripted worker panic");
            }
            if text.contains("FAIL") {
                return Err(PipelineError::Engine("scripted engine failure".into()));
            }
            let mut watch = Watch {
                script: script.clone(),
                done: false,
            };
            for _ in 0..script.tokens {
                if job.cancel.is_cancelled() {
                    return Err(PipelineError::Cancelled);
                }
                tokio::time::sleep(script.token_delay).await;
            }
            watch.done = true;
            script.finished.fetch_add(1, Ordering::SeqCst);
            Ok(Generated {
                text: scripted_text(&job),
                generated_tokens: script.tokens,
                stop_reason: Some(StopReason::MaxTokens),
                ..Generated::default()
            })
        })
    }
}

impl Loader for ScriptedLoader {
    fn load(
        &self,
        spec: EngineSpec,
        events: mpsc::UnboundedSender<LoadEvent>,
    ) -> BoxFuture<Result<Arc<dyn LanguageModel>, String>> {
        let script = self.0.clone();
        Box::pin(async move {
            let spec = match spec {
                EngineSpec::Embedded(spec) => spec,
                other => return Err(format!("the scripted loader has no {other}")),
            };
            script.loads.fetch_add(1, Ordering::SeqCst);
            script.specs.lock().unwrap().push(spec.clone());
            let _ = events.send(LoadEvent::Downloading {
                file: "model.safetensors".into(),
            });
            tokio::time::sleep(script.load_delay).await;
            let _ = events.send(LoadEvent::Loading {
                what: spec.model.clone(),
            });
            match &script.load {
                LoadBehavior::Ok => Ok(Arc::new(ScriptedModel {
                    script: script.clone(),
                    info: ModelInfo {
                        description: "scripted".into(),
                        window: 4096,
                        fim: true,
                    },
                }) as Arc<dyn LanguageModel>),
                LoadBehavior::Fail(e) => Err(e.clone()),
                LoadBehavior::Panic => panic!("scripted loader panic"),
            }
        })
    }
}

// --- the client -------------------------------------------------------------------------

type Writer = Arc<tokio::sync::Mutex<WriteHalf<DuplexStream>>>;

pub struct Client {
    writer: Writer,
    pending: Arc<Mutex<HashMap<i64, oneshot::Sender<Value>>>>,
    /// Notifications and server requests, in order.
    inbox: mpsc::UnboundedReceiver<Value>,
    pub seen: Vec<Value>,
    next_id: i64,
    pub server: Option<JoinHandle<anyhow::Result<i32>>>,
    pub script: Arc<Script>,
    _data: Option<tempfile::TempDir>,
}

async fn write_frame(w: &Writer, body: &[u8]) {
    let mut w = w.lock().await;
    let header = format!("Content-Length: {}\r\n\r\n", body.len());
    w.write_all(header.as_bytes()).await.unwrap();
    w.write_all(body).await.unwrap();
    w.flush().await.unwrap();
}

impl Client {
    /// Start a server with `script` as its model.
    pub fn start(script: Script) -> Client {
        Self::start_with(script, ServeOptions::default())
    }

    /// Start a server with `script` as its model and `opts`; without a `data_dir` its event
    /// log goes to a temporary folder (never the user's).
    pub fn start_with(script: Script, mut opts: ServeOptions) -> Client {
        let data = opts
            .data_dir
            .is_none()
            .then(|| tempfile::tempdir().unwrap());
        if let Some(d) = &data {
            opts.data_dir = Some(d.path().to_path_buf());
        }
        let script = Arc::new(script);
        let (client_end, server_end) = tokio::io::duplex(1 << 20);
        let (sr, sw) = tokio::io::split(server_end);
        let loader = Arc::new(ScriptedLoader(script.clone()));
        let server = tokio::spawn(copilot_server::serve(sr, sw, opts, loader));
        let (cr, cw) = tokio::io::split(client_end);
        let writer: Writer = Arc::new(tokio::sync::Mutex::new(cw));
        let pending: Arc<Mutex<HashMap<i64, oneshot::Sender<Value>>>> = Arc::default();
        let (tx, inbox) = mpsc::unbounded_channel();
        tokio::spawn({
            let writer = writer.clone();
            let pending = pending.clone();
            async move {
                let mut r = BufReader::new(cr);
                loop {
                    let mut len = None;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some(v) = line.strip_prefix("Content-Length: ") {
                            len = Some(v.parse::<usize>().unwrap());
                        }
                    }
                    let mut body = vec![0; len.expect("Content-Length")];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let msg: Value = serde_json::from_slice(&body).unwrap();
                    let is_response = msg.get("method").is_none();
                    if is_response {
                        let id = msg["id"].as_i64().unwrap_or(-1);
                        if let Some(tx) = pending.lock().unwrap().remove(&id) {
                            let _ = tx.send(msg);
                        } else {
                            let _ = tx.send(msg);
                        }
                    } else {
                        if let Some(id) = msg.get("id") {
                            // A server request: answer null, as a minimal editor would.
                            let reply = json!({"jsonrpc": "2.0", "id": id, "result": null});
                            write_frame(&writer, reply.to_string().as_bytes()).await;
                        }
                        let _ = tx.send(msg);
                    }
                }
            }
        });
        Client {
            writer,
            pending,
            inbox,
            seen: Vec::new(),
            next_id: 1,
            server: Some(server),
            script,
            _data: data,
        }
    }

    pub async fn raw(&self, bytes: &[u8]) {
        let mut w = self.writer.lock().await;
        w.write_all(bytes).await.unwrap();
        w.flush().await.unwrap();
    }

    pub async fn notify(&self, method: &str, params: Value) {
        let msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        write_frame(&self.writer, msg.to_string().as_bytes()).await;
    }

    /// Send a request; the receiver gets the whole response message.
    pub async fn send(&mut self, method: &str, params: Value) -> (i64, oneshot::Receiver<Value>) {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        write_frame(&self.writer, msg.to_string().as_bytes()).await;
        (id, rx)
    }

    /// Send a request and wait for its response message.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let (_, rx) = self.send(method, params).await;
        tokio::time::timeout(Duration::from_secs(600), rx)
            .await
            .expect("no response within 600 s of (paused) time")
            .expect("server went away")
    }

    pub async fn initialize(&mut self, options: Value) -> Value {
        self.initialize_with(options, default_caps()).await
    }

    pub async fn initialize_with(&mut self, mut options: Value, caps: Value) -> Value {
        // The scripted text as written: no post-processing, no completion cache.
        if let Some(o) = options.as_object_mut() {
            o.entry("postprocess").or_insert(json!(false));
            o.entry("cache").or_insert(json!(false));
        }
        let r = self
            .call(
                "initialize",
                json!({"capabilities": caps, "initializationOptions": options,
                       "rootUri": "file:///proj", "clientInfo": {"name": "test"}}),
            )
            .await;
        self.notify("initialized", json!({})).await;
        r
    }

    pub async fn open(&self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "python", "version": 0, "text": text}}),
        )
        .await;
    }

    pub async fn replace(&self, uri: &str, version: i32, text: &str) {
        self.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version},
                   "contentChanges": [{"text": text}]}),
        )
        .await;
    }

    pub async fn inline(&mut self, uri: &str, line: u32, character: u32, kind: u32) -> Value {
        let p = inline_params(uri, line, character, kind);
        self.call("textDocument/inlineCompletion", p).await
    }

    pub async fn stats(&mut self) -> Value {
        self.call("copilot/debugStats", Value::Null).await["result"].clone()
    }

    /// Everything the server sent unasked so far (notifications, server requests).
    pub fn drain(&mut self) -> &[Value] {
        while let Ok(m) = self.inbox.try_recv() {
            self.seen.push(m);
        }
        &self.seen
    }

    /// Wait until the server sends an unasked message matching `pred`.
    pub async fn wait_for_msg(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(m) = self.drain().iter().find(|m| pred(m)) {
            return m.clone();
        }
        loop {
            let m = tokio::time::timeout(Duration::from_secs(600), self.inbox.recv())
                .await
                .expect("nothing matching within 600 s")
                .expect("server went away");
            self.seen.push(m.clone());
            if pred(&m) {
                return m;
            }
        }
    }

    /// Wait until the server sends a message with `method` matching `pred`.
    pub async fn wait_for(&mut self, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_msg(|m| m["method"] == method && pred(m))
            .await
    }

    /// The response to a request sent with [`Client::raw`].
    pub async fn wait_for_response(&mut self, id: i64) -> Value {
        self.wait_for_msg(|m| m.get("method").is_none() && m["id"] == id)
            .await
    }

    /// The error response to a message that had no readable id (malformed JSON).
    pub async fn wait_for_response_null_id(&mut self) -> Value {
        self.wait_for_msg(|m| m.get("method").is_none() && m["id"].is_null())
            .await
    }

    /// Close the server's input, as a client that dies would.
    pub async fn close_input(&self) {
        self.writer.lock().await.shutdown().await.unwrap();
    }

    pub fn messages(&mut self, method: &str) -> Vec<Value> {
        self.drain()
            .iter()
            .filter(|m| m["method"] == method)
            .cloned()
            .collect()
    }

    pub async fn shutdown_and_exit(&mut self) -> i32 {
        let r = self.call("shutdown", Value::Null).await;
        assert!(r.get("error").is_none(), "{r}");
        self.notify("exit", Value::Null).await;
        self.exit_code().await
    }

    pub async fn exit_code(&mut self) -> i32 {
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap()
    }
}

pub fn inline_params(uri: &str, line: u32, character: u32, kind: u32) -> Value {
    json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
           "context": {"triggerKind": kind}})
}

pub fn default_caps() -> Value {
    json!({
        "general": {"positionEncodings": ["utf-16"]},
        "window": {"workDoneProgress": true},
        "textDocument": {"inlineCompletion": {}}
    })
}

/// The insertTexts of an inlineCompletion response.
pub fn texts(resp: &Value) -> Vec<String> {
    let r = &resp["result"];
    let items = if r.is_array() { r } else { &r["items"] };
    items
        .as_array()
        .unwrap_or_else(|| panic!("no items in {resp}"))
        .iter()
        .map(|i| i["insertText"].as_str().unwrap().to_string())
        .collect()
}
