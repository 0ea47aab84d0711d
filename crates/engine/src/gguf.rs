//! llama.cpp's GGUF files as a second input format, for every architecture the engine runs:
//! `starcoder` (GPTBigCode), `llama` (DeepSeek-Coder, CodeLlama), `qwen2` (Qwen2.5-Coder)
//! and `starcoder2`. Tensor names are mapped to the hub's; quantized matrices stay quantized
//! (q8_0 and q4_0 repacked for the engine's kernels by [`crate::matmul`]), the embedding
//! table too (looked up row by row), vectors are dequantized to f32. llama.cpp's converter
//! permutes Llama's q/k rows for its interleaved RoPE; the reader puts them back in the hub's
//! order, so one model implementation and the same PEFT adapters serve both formats. A writer
//! makes such files from a hub checkpoint (tests, and users converting locally).
//!
//! The tokenizer travels inside the file as llama.cpp stores it (`tokenizer.ggml.*`: a GPT-2
//! byte-level BPE's tokens, types, merges and pre-tokenizer name): a `.gguf` downloaded alone
//! needs no `tokenizer.json` beside it, and the files written here load in llama.cpp.
//! SentencePiece vocabularies (`tokenizer.ggml.model = llama`, CodeLlama's) are not rebuilt:
//! such a file needs its `tokenizer.json` beside it.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Mutex;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Tensor};

use crate::config::{Arch, Config, RopeJson};
use crate::error::{EngineError, Result};
use crate::model::Weights;

/// The GGUF name of a hub tensor name (GPTBigCode's `transformer.*` or the rotary families'
/// `model.*` names).
pub fn gguf_name(hub: &str) -> Option<String> {
    let fixed = match hub {
        "transformer.wte.weight" | "model.embed_tokens.weight" => Some("token_embd.weight"),
        "transformer.wpe.weight" => Some("position_embd.weight"),
        "transformer.ln_f.weight" | "model.norm.weight" => Some("output_norm.weight"),
        "transformer.ln_f.bias" | "model.norm.bias" => Some("output_norm.bias"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hub
        .strip_prefix("transformer.h.")
        .or_else(|| hub.strip_prefix("model.layers."))?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let module = match module {
        "ln_1" | "input_layernorm" => "attn_norm",
        "attn.c_attn" => "attn_qkv",
        "attn.c_proj" | "self_attn.o_proj" => "attn_output",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "ln_2" | "post_attention_layernorm" => "ffn_norm",
        "mlp.c_fc" | "mlp.up_proj" => "ffn_up",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.c_proj" | "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{module}.{kind}"))
}

/// llama.cpp's order of a Llama q/k projection's rows (its converter's `permute`: each
/// head's two halves interleaved, for its pairwise RoPE) back to the hub's: hub row `r`
/// is GGUF row `idx[r]`.
pub fn unpermute_rows(n_head: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    (0..n_head * head_dim)
        .map(|r| {
            let (h, within) = (r / head_dim, r % head_dim);
            h * head_dim + 2 * (within % half) + within / half
        })
        .collect()
}

/// The inverse: hub rows to llama.cpp's order (what its converter writes).
pub fn permute_rows(n_head: usize, head_dim: usize) -> Vec<usize> {
    let un = unpermute_rows(n_head, head_dim);
    let mut p = vec![0; un.len()];
    for (r, &g) in un.iter().enumerate() {
        p[g] = r;
    }
    p
}

/// An open GGUF file as a [`Weights`] source.
pub struct Gguf {
    content: gguf_file::Content,
    reader: Mutex<BufReader<File>>,
    device: Device,
    path: std::path::PathBuf,
    arch: Option<Arch>,
    /// Llama: `(n_head, n_kv_head, head_dim)`, to put q/k rows back in the hub's order.
    permuted: Option<(usize, usize, usize)>,
}

impl Gguf {
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let err = |message: String| EngineError::File {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| err(e.to_string()))?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| err(format!("not a readable GGUF file: {e}")))?;
        let mut g = Self {
            content,
            reader: Mutex::new(reader),
            device: device.clone(),
            path: path.to_path_buf(),
            arch: None,
            permuted: None,
        };
        g.arch = Arch::from_gguf_name(&g.arch_name());
        if g.arch == Some(Arch::Llama) {
            let cfg = g.config()?;
            g.permuted = Some((cfg.n_head, cfg.kv_heads(), cfg.head_dim()));
        }
        Ok(g)
    }

    fn arch_name(&self) -> String {
        self.content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default()
    }

    fn meta(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content
            .metadata
            .get(&format!("{}.{key}", self.arch_name()))
    }

    fn dims(&self, name: &str) -> Option<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|t| t.shape.dims().to_vec())
    }

    /// The model's configuration, from the file's metadata, checked against its tensors.
    pub fn config(&self) -> Result<Config> {
        let err = |message: String| EngineError::Config {
            path: self.path.clone(),
            message,
        };
        let name = self.arch_name();
        let Some(arch) = Arch::from_gguf_name(&name) else {
            return Err(err(format!(
                "GGUF architecture `{name}` is not supported (supported: {})",
                Arch::supported_list(true)
            )));
        };
        let int = |key: &str| -> Result<usize> {
            self.meta(key)
                .and_then(|v| {
                    v.to_u32()
                        .ok()
                        .map(|x| x as usize)
                        .or_else(|| v.to_u64().ok().map(|x| x as usize))
                })
                .ok_or_else(|| err(format!("missing metadata {name}.{key}")))
        };
        let float = |key: &str| -> Option<f64> {
            self.meta(key)
                .and_then(|v| v.to_f32().ok().map(f64::from).or_else(|| v.to_f64().ok()))
        };
        let n_embd = int("embedding_length")?;
        let n_head = int("attention.head_count")?;
        let kv = int("attention.head_count_kv").unwrap_or(n_head);
        let embd = self
            .dims("token_embd.weight")
            .ok_or_else(|| err("no token_embd.weight tensor".into()))?;
        if embd.len() != 2 || embd[1] != n_embd {
            return Err(err(format!(
                "{name}.embedding_length is {n_embd} but token_embd.weight is {embd:?}"
            )));
        }
        let tied = !self.content.tensor_infos.contains_key("output.weight");
        if arch == Arch::GptBigCode {
            let cfg = Config {
                n_embd,
                n_head,
                n_layer: int("block_count")?,
                n_positions: int("context_length")?,
                n_inner: Some(int("feed_forward_length")?),
                vocab_size: embd[0],
                layer_norm_epsilon: float("attention.layer_norm_epsilon").unwrap_or(1e-5),
                multi_query: kv == 1,
                tie_word_embeddings: tied,
                ..Config::tiny_starcoder_py()
            };
            cfg.validate().map_err(err)?;
            return Ok(cfg);
        }
        let eps_key = match arch {
            Arch::Starcoder2 => "attention.layer_norm_epsilon",
            _ => "attention.layer_norm_rms_epsilon",
        };
        let has = |t: &str| self.content.tensor_infos.contains_key(t);
        let rope_scaling = match self
            .meta("rope.scaling.type")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
        {
            None | Some("none") => None,
            Some(t) => Some(RopeJson {
                rope_type: Some(t.to_string()),
                factor: float("rope.scaling.factor"),
                rope_theta: None,
            }),
        };
        let head_dim = int("attention.key_length").ok();
        let cfg = Config {
            model_type: arch.model_type().into(),
            n_embd,
            n_head,
            n_layer: int("block_count")?,
            n_positions: int("context_length")?,
            n_inner: Some(int("feed_forward_length")?),
            vocab_size: embd[0],
            layer_norm_epsilon: float(eps_key).unwrap_or(1e-5),
            multi_query: false,
            activation_function: match arch {
                Arch::Starcoder2 => "gelu_pytorch_tanh".into(),
                _ => "silu".into(),
            },
            tie_word_embeddings: tied,
            num_key_value_heads: Some(kv),
            head_dim: head_dim.filter(|&d| d * n_head != n_embd),
            rope_theta: Some(float("rope.freq_base").unwrap_or(10_000.0)),
            rope_scaling,
            sliding_window: int("attention.sliding_window").ok(),
            attention_bias: (arch == Arch::Llama).then(|| has("blk.0.attn_q.bias")),
            mlp_bias: (arch == Arch::Llama).then(|| has("blk.0.ffn_up.bias")),
            use_bias: (arch == Arch::Starcoder2).then(|| has("blk.0.attn_q.bias")),
            ..Config::tiny_starcoder_py()
        };
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    fn qtensor(&self, hub: &str, shape: &[usize]) -> Result<QTensor> {
        let name = gguf_name(hub)
            .ok_or_else(|| EngineError::Other(format!("no GGUF name for tensor {hub}")))?;
        // The shape the file declares is checked before candle reads the tensor: its
        // element count is a product that a hostile file can overflow (found by the `gguf`
        // fuzz target: "attempt to multiply with overflow" in candle's reader).
        if let Some(dims) = self.dims(&name) {
            if dims != shape {
                return Err(EngineError::File {
                    path: self.path.clone(),
                    message: format!(
                        "tensor {name} has shape {dims:?}, expected {shape:?} (the metadata \
                         disagrees with the tensors)"
                    ),
                });
            }
        }
        let mut r = self.reader.lock().expect("gguf reader lock");
        let q = self
            .content
            .tensor(&mut *r, &name, &self.device)
            .map_err(|e| EngineError::File {
                path: self.path.clone(),
                message: format!("tensor {name}: {e}"),
            })?;
        if q.shape().dims() != shape {
            return Err(EngineError::File {
                path: self.path.clone(),
                message: format!(
                    "tensor {name} has shape {:?}, expected {shape:?} (the metadata disagrees \
                     with the tensors)",
                    q.shape().dims()
                ),
            });
        }
        Ok(q)
    }

    /// The hub order of rows for a Llama q/k tensor (None for every other tensor).
    fn hub_rows(&self, hub: &str) -> Option<Vec<usize>> {
        let (n_head, n_kv, hd) = self.permuted?;
        let heads = if hub.contains(".self_attn.q_proj.") {
            n_head
        } else if hub.contains(".self_attn.k_proj.") {
            n_kv
        } else {
            return None;
        };
        Some(unpermute_rows(heads, hd))
    }
}

impl Weights for Gguf {
    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.qtensor(name, shape)?.dequantize(&self.device)?;
        Ok(match self.hub_rows(name) {
            Some(rows) => {
                let idx = Tensor::from_vec(
                    rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                    rows.len(),
                    &self.device,
                )?;
                t.index_select(&idx, 0)?
            }
            None => t,
        })
    }

    fn matmul(&self, name: &str, shape: &[usize]) -> Result<QMatMul> {
        let m = QMatMul::from_qtensor(self.qtensor(name, shape)?)?;
        match self.hub_rows(name) {
            Some(rows) => crate::layers::select_rows(m, &rows),
            None => Ok(m),
        }
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|n| self.content.tensor_infos.contains_key(&n))
    }
}

/// llama.cpp's token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;

/// Qwen2's pre-tokenizer split (llama.cpp's `qwen2`), as its `tokenizer.json` writes it.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// DeepSeek-Coder's pre-tokenizer splits (llama.cpp's `deepseek-coder`), in order.
const DEEPSEEK_CODER_SPLITS: [&str; 5] = [
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    "[\u{4e00}-\u{9fa5}\u{0800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
    r"\p{N}",
];

/// llama.cpp's name for a `tokenizer.json`'s pre-tokenizer, or None if it is none we know.
fn pre_tokenizer_name(pre: &serde_json::Value) -> Option<&'static str> {
    let text = pre.to_string();
    let split = |re: &str| text.contains(&serde_json::Value::String(re.into()).to_string());
    if text.contains("\"Digits\"") {
        Some("starcoder")
    } else if split(QWEN2_SPLIT) {
        Some("qwen2")
    } else if DEEPSEEK_CODER_SPLITS.iter().all(|r| split(r)) {
        Some("deepseek-coder")
    } else if pre["type"] == "ByteLevel" {
        Some("gpt-2")
    } else {
        None
    }
}

/// The `tokenizer.json` pre-tokenizer for llama.cpp's name of one.
fn pre_tokenizer_json(name: Option<&str>) -> Option<serde_json::Value> {
    use serde_json::json;
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    Some(match name {
        None | Some("gpt-2") | Some("default") => byte_level(true),
        Some("starcoder") => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
        }),
        Some("qwen2") => json!({
            "type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]
        }),
        Some("deepseek-coder") => {
            let mut list: Vec<_> = DEEPSEEK_CODER_SPLITS.iter().map(|r| split(r)).collect();
            list.push(byte_level(false));
            json!({"type": "Sequence", "pretokenizers": list})
        }
        Some(_) => return None,
    })
}

fn bad_tokenizer(message: impl Into<String>) -> EngineError {
    EngineError::Tokenizer(message.into())
}

/// `tokenizer.ggml.*` metadata for a byte-level BPE `tokenizer.json`, its vocabulary padded
/// with unused tokens to `vocab_size` (the model's), as llama.cpp's converter does.
pub fn tokenizer_metadata(
    tok: &serde_json::Value,
    vocab_size: usize,
) -> Result<Vec<(String, gguf_file::Value)>> {
    use gguf_file::Value as V;
    let model = &tok["model"];
    if model["type"] != "BPE" {
        return Err(bad_tokenizer(
            "only byte-level BPE tokenizers can go into a GGUF",
        ));
    }
    let mut by_id: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut put = |id: u64, text: &str, kind: i32| -> Result<()> {
        let slot = by_id
            .get_mut(id as usize)
            .ok_or_else(|| bad_tokenizer(format!("token id {id} is past the vocabulary")))?;
        *slot = Some((text.to_string(), kind));
        Ok(())
    };
    for (text, id) in model["vocab"].as_object().into_iter().flatten() {
        put(id.as_u64().unwrap_or(u64::MAX), text, TOKEN_NORMAL)?;
    }
    for t in tok["added_tokens"].as_array().into_iter().flatten() {
        let kind = if t["special"] == true {
            TOKEN_CONTROL
        } else {
            TOKEN_USER_DEFINED
        };
        put(
            t["id"].as_u64().unwrap_or(u64::MAX),
            t["content"].as_str().unwrap_or_default(),
            kind,
        )?;
    }
    let (tokens, types): (Vec<V>, Vec<V>) = by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let (text, kind) = t.unwrap_or_else(|| (format!("[PAD{i}]"), TOKEN_UNUSED));
            (V::String(text), V::I32(kind))
        })
        .unzip();
    let merges: Vec<V> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            serde_json::Value::Array(pair) => V::String(
                pair.iter()
                    .map(|p| p.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            other => V::String(other.as_str().unwrap_or_default().to_string()),
        })
        .collect();
    // StarCoder's own tokenizer splits digits before the byte-level split; llama.cpp calls
    // that pre-tokenizer `starcoder`, Qwen2's regex `qwen2`, DeepSeek-Coder's splits
    // `deepseek-coder`, the plain one `gpt-2`.
    let pre = pre_tokenizer_name(&tok["pre_tokenizer"]).ok_or_else(|| {
        bad_tokenizer(format!(
            "pre-tokenizer not recognised (known: starcoder, qwen2, deepseek-coder, gpt-2): {}",
            tok["pre_tokenizer"]
        ))
    })?;
    let added = tok["added_tokens"].as_array().cloned().unwrap_or_default();
    let find = |candidates: &[&str]| {
        candidates.iter().find_map(|c| {
            added
                .iter()
                .find(|t| t["content"] == *c)
                .and_then(|t| t["id"].as_u64())
        })
    };
    let eos = find(crate::tokenizer::EOS_CANDIDATES).ok_or_else(|| {
        bad_tokenizer(format!(
            "no end-of-text token (looked for {})",
            crate::tokenizer::EOS_CANDIDATES.join(" ")
        ))
    })?;
    let bos = find(crate::tokenizer::BOS_CANDIDATES);
    Ok(vec![
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), V::Array(types)),
        ("tokenizer.ggml.merges".into(), V::Array(merges)),
        (
            "tokenizer.ggml.bos_token_id".into(),
            V::U32(bos.unwrap_or(eos) as u32),
        ),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(eos as u32)),
        (
            "tokenizer.ggml.add_bos_token".into(),
            V::Bool(bos.is_some()),
        ),
    ])
}

/// The `tokenizer.json` of the tokenizer stored in a GGUF file (GPT-2 byte-level BPE: every
/// `starcoder`, `qwen2` and `starcoder2` GGUF, and DeepSeek-Coder's `llama` ones).
pub fn tokenizer_json(path: &Path) -> Result<String> {
    let err = |message: String| EngineError::File {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|e| err(e.to_string()))?;
    let content = gguf_file::Content::read(&mut BufReader::new(file))
        .map_err(|e| err(format!("not a readable GGUF file: {e}")))?;
    let meta = |key: &str| content.metadata.get(key);
    let strings = |key: &str| -> Result<Vec<String>> {
        match meta(key) {
            Some(gguf_file::Value::Array(v)) => v
                .iter()
                .map(|x| {
                    x.to_string()
                        .cloned()
                        .map_err(|e| err(format!("{key}: {e}")))
                })
                .collect(),
            _ => Err(err(format!(
                "no {key} in the file's metadata (and no tokenizer.json beside it)"
            ))),
        }
    };
    let model = meta("tokenizer.ggml.model").and_then(|v| v.to_string().ok());
    if model.map(String::as_str) != Some("gpt2") {
        return Err(err(format!(
            "tokenizer model {model:?} is not supported (only gpt2 byte-level BPE; for a \
             SentencePiece one, put the model's tokenizer.json beside the file)"
        )));
    }
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i32> = match meta("tokenizer.ggml.token_type") {
        Some(gguf_file::Value::Array(v)) => v.iter().map(|x| x.to_i32().unwrap_or(1)).collect(),
        _ => vec![TOKEN_NORMAL; tokens.len()],
    };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, text) in tokens.iter().enumerate() {
        match types.get(id).copied().unwrap_or(TOKEN_NORMAL) {
            TOKEN_UNUSED => {}
            kind @ (TOKEN_CONTROL | TOKEN_USER_DEFINED) => added.push(serde_json::json!({
                "id": id, "content": text, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": kind == TOKEN_CONTROL
            })),
            _ => {
                vocab.insert(text.clone(), id.into());
            }
        }
    }
    // Special tokens are also in the model's vocabulary, as in the hub's files.
    for t in &added {
        vocab.insert(t["content"].as_str().unwrap().to_string(), t["id"].clone());
    }
    let pre_name = meta("tokenizer.ggml.pre").and_then(|v| v.to_string().ok());
    let pre = pre_tokenizer_json(pre_name.map(String::as_str)).ok_or_else(|| {
        err(format!(
            "pre-tokenizer `{}` is not supported (supported: starcoder, qwen2, deepseek-coder, \
             gpt-2); put the model's tokenizer.json beside the file",
            pre_name.map_or("", String::as_str)
        ))
    })?;
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": pre, "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab,
            "merges": merges,
        }
    });
    Ok(json.to_string())
}

/// Write a hub-format checkpoint's tensors as a GGUF file of `cfg`'s architecture, as
/// llama.cpp's converter does (its metadata keys, Llama's q/k rows permuted for llama.cpp's
/// RoPE): matrices in `dtype` (where their rows fit its blocks, else f32), vectors in f32;
/// with the tokenizer's `tokenizer.json` when given.
pub fn write(
    path: &Path,
    cfg: &Config,
    tensors: &HashMap<String, Tensor>,
    dtype: GgmlDType,
    tokenizer: Option<&serde_json::Value>,
) -> Result<()> {
    let arch = cfg.arch();
    let mut q = Vec::new();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for hub in names {
        let mut t = tensors[hub].clone();
        let Some(name) = gguf_name(hub) else { continue };
        if arch == Arch::Llama {
            let heads = if hub.contains(".self_attn.q_proj.") {
                Some(cfg.n_head)
            } else if hub.contains(".self_attn.k_proj.") {
                Some(cfg.kv_heads())
            } else {
                None
            };
            if let Some(h) = heads {
                let rows = permute_rows(h, cfg.head_dim());
                let idx = Tensor::from_vec(
                    rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                    rows.len(),
                    t.device(),
                )?;
                t = t.index_select(&idx, 0)?;
            }
        }
        let fits = t.rank() == 2 && t.dim(1)? % dtype.block_size() == 0;
        let qt = QTensor::quantize(&t, if fits { dtype } else { GgmlDType::F32 })?;
        q.push((name, qt));
    }
    use gguf_file::Value as V;
    let u = |x: usize| V::U32(x as u32);
    let a = arch.gguf_name();
    let mut meta: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(a.into())),
        (format!("{a}.context_length"), u(cfg.n_positions)),
        (format!("{a}.embedding_length"), u(cfg.n_embd)),
        (format!("{a}.feed_forward_length"), u(cfg.inner_dim())),
        (format!("{a}.block_count"), u(cfg.n_layer)),
        (format!("{a}.attention.head_count"), u(cfg.n_head)),
        (format!("{a}.attention.head_count_kv"), u(cfg.kv_heads())),
    ];
    let eps = V::F32(cfg.layer_norm_epsilon as f32);
    match arch {
        Arch::GptBigCode | Arch::Starcoder2 => {
            meta.push((format!("{a}.attention.layer_norm_epsilon"), eps))
        }
        Arch::Llama | Arch::Qwen2 => {
            meta.push((format!("{a}.attention.layer_norm_rms_epsilon"), eps))
        }
    }
    if arch.uses_rope() {
        meta.push((
            format!("{a}.rope.freq_base"),
            V::F32(cfg.rope_base() as f32),
        ));
        meta.push((format!("{a}.rope.dimension_count"), u(cfg.head_dim())));
        meta.push((format!("{a}.vocab_size"), u(cfg.vocab_size)));
        if let Some(d) = cfg.head_dim {
            meta.push((format!("{a}.attention.key_length"), u(d)));
            meta.push((format!("{a}.attention.value_length"), u(d)));
        }
        if let Some(crate::config::RopeScaling::Linear { factor }) =
            cfg.rope_scaling_kind().map_err(EngineError::Other)?
        {
            meta.push((format!("{a}.rope.scaling.type"), V::String("linear".into())));
            meta.push((format!("{a}.rope.scaling.factor"), V::F32(factor as f32)));
        }
        if let Some(w) = cfg.window() {
            // llama.cpp's converter writes none for StarCoder2 (it runs it with full
            // attention); we read it back.
            meta.push((format!("{a}.attention.sliding_window"), u(w)));
        }
    }
    if let Some(tok) = tokenizer {
        meta.extend(tokenizer_metadata(tok, cfg.vocab_size)?);
    }
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = File::create(path).map_err(|e| EngineError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    gguf_file::write(&mut f, &meta_refs, &tensor_refs)?;
    Ok(())
}

/// A GGML type by name, for `to-gguf --type`.
pub fn parse_type(s: &str) -> std::result::Result<GgmlDType, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" => Ok(GgmlDType::F32),
        "f16" => Ok(GgmlDType::F16),
        "q8_0" => Ok(GgmlDType::Q8_0),
        "q4_0" => Ok(GgmlDType::Q4_0),
        "q4k" | "q4_k" => Ok(GgmlDType::Q4K),
        other => Err(format!(
            "unknown GGUF type `{other}` (f32, f16, q8_0, q4_0, q4k)"
        )),
    }
}

/// Convert a hub-format checkpoint directory (config.json, tokenizer.json, safetensors) to
/// a GGUF file with the tokenizer inside: [`write`] on its tensors.
pub fn convert(dir: &Path, out: &Path, dtype: GgmlDType) -> Result<()> {
    let spec = crate::ModelSpec {
        model: dir.display().to_string(),
        ..Default::default()
    };
    let files = crate::load::resolve(&spec, &mut |_| {})?;
    let cfg = crate::load::files_config(&files)?;
    let crate::load::Weights::Safetensors(paths) = &files.weights else {
        return Err(EngineError::Other(format!(
            "{}: only safetensors weights can be converted",
            dir.display()
        )));
    };
    let mut tensors = HashMap::new();
    for p in paths {
        let t = candle_core::safetensors::load(p, &Device::Cpu).map_err(|e| EngineError::File {
            path: p.clone(),
            message: e.to_string(),
        })?;
        tensors.extend(t);
    }
    let text = std::fs::read_to_string(&files.tokenizer).map_err(|e| EngineError::File {
        path: files.tokenizer.clone(),
        message: e.to_string(),
    })?;
    let tok: serde_json::Value = serde_json::from_str(&text).map_err(|e| EngineError::File {
        path: files.tokenizer.clone(),
        message: e.to_string(),
    })?;
    write(out, &cfg, &tensors, dtype, Some(&tok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_cpp_starcoder() {
        assert_eq!(
            gguf_name("transformer.wte.weight").unwrap(),
            "token_embd.weight"
        );
        assert_eq!(
            gguf_name("transformer.h.3.attn.c_attn.bias").unwrap(),
            "blk.3.attn_qkv.bias"
        );
        assert_eq!(
            gguf_name("transformer.h.12.mlp.c_proj.weight").unwrap(),
            "blk.12.ffn_down.weight"
        );
        assert_eq!(
            gguf_name("transformer.h.0.ln_2.weight").unwrap(),
            "blk.0.ffn_norm.weight"
        );
        assert_eq!(gguf_name("lm_head.weight").unwrap(), "output.weight");
        assert!(gguf_name("transformer.h.0.attn.bias").is_none());
    }

    #[test]
    fn names_follow_llama_cpp_for_the_rotary_families() {
        for (hub, want) in [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.bias", "output_norm.bias"),
            (
                "model.layers.2.input_layernorm.weight",
                "blk.2.attn_norm.weight",
            ),
            ("model.layers.0.self_attn.q_proj.bias", "blk.0.attn_q.bias"),
            (
                "model.layers.0.self_attn.o_proj.weight",
                "blk.0.attn_output.weight",
            ),
            (
                "model.layers.1.post_attention_layernorm.weight",
                "blk.1.ffn_norm.weight",
            ),
            (
                "model.layers.1.mlp.gate_proj.weight",
                "blk.1.ffn_gate.weight",
            ),
            ("model.layers.1.mlp.up_proj.weight", "blk.1.ffn_up.weight"),
            (
                "model.layers.1.mlp.down_proj.weight",
                "blk.1.ffn_down.weight",
            ),
            ("model.layers.3.mlp.c_fc.bias", "blk.3.ffn_up.bias"),
            ("model.layers.3.mlp.c_proj.weight", "blk.3.ffn_down.weight"),
        ] {
            assert_eq!(gguf_name(hub).as_deref(), Some(want), "{hub}");
        }
        assert!(gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq").is_none());
    }

    #[test]
    fn llama_cpp_permutation_round_trips() {
        // llama.cpp's `permute`: reshape(n_head, 2, hd/2).swapaxes(1, 2); head 0, hd 4:
        // hub rows [a0 a1 | b0 b1] become [a0 b0 a1 b1].
        assert_eq!(permute_rows(1, 4), [0, 2, 1, 3]);
        assert_eq!(unpermute_rows(2, 4), [0, 2, 1, 3, 4, 6, 5, 7]);
        let p = permute_rows(3, 8);
        let u = unpermute_rows(3, 8);
        for r in 0..24 {
            assert_eq!(p[u[r]], r);
        }
        assert_eq!(permute_rows(1, 6), [0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn pre_tokenizers_round_trip_by_name() {
        for name in ["starcoder", "qwen2", "deepseek-coder", "gpt-2"] {
            let json = pre_tokenizer_json(Some(name)).unwrap();
            assert_eq!(pre_tokenizer_name(&json), Some(name));
        }
        assert!(pre_tokenizer_json(Some("llama3")).is_none());
    }
}
