//! Token counts and ids for a remote engine: the model's own `tokenizer.json` when the
//! `tokenizer` setting names one, else the server's `/tokenize` (llama-server), else a
//! conservative estimate (said once in the log).
//!
//! The prompt budgets count a document line by line and, between two keystrokes, only the
//! cursor's line changes: counts of short texts are remembered, so a server is asked about
//! one or two lines per keystroke.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokenizers::{
    Model as _, Normalizer as _, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer as _,
};

use crate::RemoteError;

/// Texts up to this many bytes have their counts remembered.
const MEMO_MAX_TEXT: usize = 512;
/// Remembered counts before the memo starts over.
const MEMO_ENTRIES: usize = 50_000;
/// Bytes per token the estimate assumes: code tokenizes at 3 to 4 bytes a token, so this
/// overcounts (prompts come out a little short, never over the window).
const ESTIMATE_BYTES_PER_TOKEN: usize = 3;
/// Longest wait for a server's `/tokenize`: past it the estimate answers.
const TOKENIZE_TIMEOUT: Duration = Duration::from_millis(300);

/// A conservative count for a text nobody tokenized.
pub fn estimate(text: &str) -> usize {
    text.len().div_ceil(ESTIMATE_BYTES_PER_TOKEN)
}

/// A model's tokenizer, read locally.
///
/// Written here rather than using `copilot_engine::Tokenizer`, which refuses vocabularies
/// without StarCoder's FIM tokens; the special-safe encoding is the same (and for StarCoder
/// vocabularies gives the same ids, which the tests check).
pub struct LocalTokenizer {
    inner: tokenizers::Tokenizer,
    /// The added (special) tokens' strings, to detect them in user text.
    added: Vec<String>,
}

impl std::fmt::Debug for LocalTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .finish()
    }
}

impl LocalTokenizer {
    pub fn new(inner: tokenizers::Tokenizer) -> Self {
        let added = inner
            .get_added_tokens_decoder()
            .values()
            .map(|t| t.content.clone())
            .filter(|c| !c.is_empty())
            .collect();
        Self { inner, added }
    }

    pub fn from_json(json: &str) -> Result<Self, String> {
        json.parse::<tokenizers::Tokenizer>()
            .map(Self::new)
            .map_err(|e| format!("not a tokenizer.json: {e}"))
    }

    /// A `tokenizer.json` file, a directory holding one, a `.gguf` file (the tokenizer
    /// inside it), or a hub repository id (its `tokenizer.json`, through the hub cache;
    /// `HF_HUB_OFFLINE=1` reads the cache only). Blocking.
    pub fn load(source: &str) -> Result<Self, RemoteError> {
        let err = |message: String| RemoteError::Tokenizer {
            tokenizer: source.to_string(),
            message,
        };
        let path = Path::new(source);
        let json = if path.is_dir() {
            read(&path.join("tokenizer.json")).map_err(err)?
        } else if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
            copilot_engine::gguf::tokenizer_json(path).map_err(|e| err(e.to_string()))?
        } else if path.is_file() {
            read(path).map_err(err)?
        } else if looks_like_hub_id(source) {
            let file = hub_tokenizer(source).map_err(err)?;
            read(&file).map_err(err)?
        } else {
            return Err(err("no such file or directory".into()));
        };
        Self::from_json(&json).map_err(err)
    }

    /// Id of a token string (a control token's), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Encode user text. Never yields an added token's id, even when the text contains its
    /// string: `<fim_middle>` typed in a file stays text.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>, String> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        if !self.added.iter().any(|a| text.contains(a.as_str())) {
            return self
                .inner
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| e.to_string());
        }
        // The tokenizer's pipeline without the added vocabulary's extraction step.
        let err = |e: tokenizers::Error| e.to_string();
        let mut normalized = tokenizers::NormalizedString::from(text);
        if let Some(n) = self.inner.get_normalizer() {
            n.normalize(&mut normalized).map_err(err)?;
        }
        let mut pre = PreTokenizedString::from(normalized);
        if let Some(p) = self.inner.get_pre_tokenizer() {
            p.pre_tokenize(&mut pre).map_err(err)?;
        }
        let model = self.inner.get_model();
        pre.tokenize(|s| model.tokenize(s.get())).map_err(err)?;
        Ok(pre
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .flat_map(|(_, _, toks)| toks.iter().flatten().map(|t| t.id).collect::<Vec<_>>())
            .collect())
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn looks_like_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !s.starts_with(['/', '.', '~'])
        && !s.contains('\\')
        && (1..=2).contains(&parts.len())
        && parts.iter().all(|p| !p.is_empty())
}

fn hub_tokenizer(id: &str) -> Result<std::path::PathBuf, String> {
    let cache = hf_hub::Cache::from_env();
    let repo = hf_hub::Repo::model(id.to_string());
    if let Some(p) = cache.repo(repo.clone()).get("tokenizer.json") {
        return Ok(p);
    }
    let offline = std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"));
    if offline {
        return Err(format!(
            "tokenizer.json of {id} is not in the hub cache and HF_HUB_OFFLINE is set"
        ));
    }
    hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_progress(false)
        .build()
        .map_err(|e| e.to_string())?
        .repo(repo)
        .get("tokenizer.json")
        .map_err(|e| format!("tokenizer.json of {id}: {e}"))
}

/// Asks a server for counts, from any thread (async or not): a thread of its own with its
/// own runtime and HTTP client does the requests, the caller waits at most
/// [`TOKENIZE_TIMEOUT`].
pub struct ServerCounter {
    tx: Mutex<mpsc::Sender<(String, mpsc::SyncSender<Option<usize>>)>>,
}

impl std::fmt::Debug for ServerCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCounter")
    }
}

/// One count request: the text's token count, or `None` when the server could not say.
pub type CountFn = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<usize>> + Send>>
        + Send
        + Sync,
>;

impl ServerCounter {
    /// Start the counting thread; `count` makes one request (built on the thread's runtime).
    pub fn start(count: CountFn) -> Result<Self, RemoteError> {
        let (tx, rx) = mpsc::channel::<(String, mpsc::SyncSender<Option<usize>>)>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Setup(format!("cannot start a runtime: {e}")))?;
        std::thread::Builder::new()
            .name("copilot-remote-tokenize".into())
            .spawn(move || {
                // Ends when the counter (the only sender) is dropped.
                while let Ok((text, reply)) = rx.recv() {
                    let n = rt.block_on(async {
                        tokio::time::timeout(TOKENIZE_TIMEOUT, count(text))
                            .await
                            .ok()
                            .flatten()
                    });
                    let _ = reply.send(n);
                }
            })
            .map_err(|e| RemoteError::Setup(format!("cannot start a thread: {e}")))?;
        Ok(Self { tx: Mutex::new(tx) })
    }

    fn count(&self, text: &str) -> Option<usize> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx.lock().ok()?.send((text.to_string(), reply)).ok()?;
        answer.recv_timeout(TOKENIZE_TIMEOUT * 2).ok().flatten()
    }
}

/// Where counts come from.
#[derive(Debug)]
pub enum Source {
    Local(Arc<LocalTokenizer>),
    Server(ServerCounter),
    Estimate,
}

/// Counts with a memo, falling back to the estimate while the server cannot answer.
#[derive(Debug)]
pub struct Counter {
    source: Source,
    memo: Mutex<HashMap<Box<str>, u32>>,
    said_estimate: AtomicBool,
    /// What the log calls the engine.
    engine: String,
}

impl Counter {
    pub fn new(source: Source, engine: String) -> Self {
        Self {
            source,
            memo: Mutex::default(),
            said_estimate: AtomicBool::new(false),
            engine,
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Tokens in `text`. `reachable`: whether the server may be asked now (not while it is
    /// failing: typing never waits on a dead engine).
    pub fn count(&self, text: &str, reachable: bool) -> usize {
        if text.is_empty() {
            return 0;
        }
        let memo = text.len() <= MEMO_MAX_TEXT;
        if memo {
            if let Some(&n) = self.memo.lock().expect("memo lock").get(text) {
                return n as usize;
            }
        }
        let exact = match &self.source {
            Source::Local(t) => t.encode_text(text).ok().map(|ids| ids.len()),
            Source::Server(s) if reachable => s.count(text),
            Source::Server(_) | Source::Estimate => None,
        };
        let Some(n) = exact else {
            self.say_estimate();
            return estimate(text);
        };
        if memo {
            let mut m = self.memo.lock().expect("memo lock");
            if m.len() >= MEMO_ENTRIES {
                m.clear();
            }
            m.insert(text.into(), n as u32);
        }
        n
    }

    fn say_estimate(&self) {
        if self.said_estimate.swap(true, Ordering::Relaxed) {
            return;
        }
        match self.source {
            Source::Estimate => tracing::info!(
                engine = %self.engine,
                "no tokenizer for this engine (set `tokenizer` to the model's tokenizer.json): \
                 prompt budgets use an estimate of {ESTIMATE_BYTES_PER_TOKEN} bytes a token"
            ),
            _ => tracing::info!(
                engine = %self.engine,
                "the engine's tokenizer did not answer: prompt budgets use an estimate of \
                 {ESTIMATE_BYTES_PER_TOKEN} bytes a token until it does"
            ),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A byte-level BPE with two added tokens, in the hub's `tokenizer.json` format.
    pub(crate) fn tiny_tokenizer() -> LocalTokenizer {
        // Byte-level: printable ASCII stands for itself, space is `Ġ`, newline `Ċ`.
        let mut alphabet: Vec<String> = (b'!'..=b'~').map(|b| char::from(b).to_string()).collect();
        alphabet.extend(["Ġ".to_string(), "Ċ".to_string()]);
        let mut vocab = serde_json::Map::new();
        vocab.insert("<|endoftext|>".into(), 0.into());
        vocab.insert("<fim_prefix>".into(), 1.into());
        for (i, c) in alphabet.iter().enumerate() {
            vocab.insert(c.clone(), (i + 2).into());
        }
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [
                {"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "<fim_prefix>", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
                              "trim_offsets": true, "use_regex": true},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                        "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": []}
        });
        LocalTokenizer::from_json(&json.to_string()).unwrap()
    }

    #[test]
    fn user_text_never_becomes_a_control_token() {
        let t = tiny_tokenizer();
        assert_eq!(t.token_id("<fim_prefix>"), Some(1));
        let ids = t.encode_text("a<fim_prefix>b").unwrap();
        assert!(!ids.contains(&1), "{ids:?}");
        assert_eq!(ids.len(), "a<fim_prefix>b".len());
        assert_eq!(t.encode_text("ab").unwrap().len(), 2);
        assert!(t.encode_text("").unwrap().is_empty());
    }

    #[test]
    fn counts_are_remembered_and_fall_back_to_the_estimate() {
        let local = Counter::new(Source::Local(Arc::new(tiny_tokenizer())), "t".into());
        assert_eq!(local.count("abc d", true), 5);
        assert_eq!(local.count("", true), 0);

        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a = asked.clone();
        let server = ServerCounter::start(Arc::new(move |text: String| {
            a.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { (!text.contains("down")).then_some(text.len() * 10) })
        }))
        .unwrap();
        let c = Counter::new(Source::Server(server), "t".into());
        assert_eq!(c.count("line\n", true), 50);
        assert_eq!(c.count("line\n", true), 50, "from the memo");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // A server that cannot answer, or may not be asked: the estimate, not remembered.
        assert_eq!(c.count("down here", true), estimate("down here"));
        assert_eq!(c.count("other", false), estimate("other"));
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        assert_eq!(c.count("other", true), 50);

        let e = Counter::new(Source::Estimate, "t".into());
        assert_eq!(e.count("123456", true), 2);
        assert_eq!(e.count("1234567", true), 3);
    }

    #[test]
    fn hub_ids_and_paths() {
        assert!(looks_like_hub_id("bigcode/starcoder2-3b"));
        assert!(looks_like_hub_id("gpt2"));
        for p in ["/abs/tokenizer.json", "./t.json", "a/b/c", "a//b", "C:\\x"] {
            assert!(!looks_like_hub_id(p), "{p}");
        }
        let e = LocalTokenizer::load("/no/such/tokenizer.json").unwrap_err();
        assert!(e.to_string().contains("/no/such/tokenizer.json"), "{e}");
    }
}
