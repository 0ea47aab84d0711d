//! llama.cpp's GGUF files for the `starcoder` architecture (the format published for
//! tiny_starcoder_py), as a second input format. Tensor names are mapped to the hub's;
//! quantized matrices stay quantized (candle's `QMatMul`), vectors are dequantized to f32.
//! A writer makes such files from a hub checkpoint (tests, and users converting locally).
//!
//! The tokenizer travels inside the file as llama.cpp stores it (`tokenizer.ggml.*`: a GPT-2
//! byte-level BPE's tokens, types and merges): a `.gguf` downloaded alone needs no
//! `tokenizer.json` beside it, and the files written here load in llama.cpp.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Mutex;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Tensor};

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::model::Weights;

const ARCH: &str = "starcoder";

/// The GGUF name of a hub tensor name.
pub fn gguf_name(hub: &str) -> Option<String> {
    let fixed = match hub {
        "transformer.wte.weight" => Some("token_embd.weight"),
        "transformer.wpe.weight" => Some("position_embd.weight"),
        "transformer.ln_f.weight" => Some("output_norm.weight"),
        "transformer.ln_f.bias" => Some("output_norm.bias"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hub.strip_prefix("transformer.h.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let module = match module {
        "ln_1" => "attn_norm",
        "attn.c_attn" => "attn_qkv",
        "attn.c_proj" => "attn_output",
        "ln_2" => "ffn_norm",
        "mlp.c_fc" => "ffn_up",
        "mlp.c_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{module}.{kind}"))
}

/// An open GGUF file as a [`Weights`] source.
pub struct Gguf {
    content: gguf_file::Content,
    reader: Mutex<BufReader<File>>,
    device: Device,
    path: std::path::PathBuf,
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
        Ok(Self {
            content,
            reader: Mutex::new(reader),
            device: device.clone(),
            path: path.to_path_buf(),
        })
    }

    fn meta(&self, key: &str) -> Option<&gguf_file::Value> {
        self.content.metadata.get(&format!("{ARCH}.{key}"))
    }

    /// The model's configuration, from the file's metadata.
    pub fn config(&self) -> Result<Config> {
        let err = |message: String| EngineError::Config {
            path: self.path.clone(),
            message,
        };
        let arch = self
            .content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != ARCH {
            return Err(err(format!(
                "GGUF architecture is `{arch}`, expected `{ARCH}` (StarCoder)"
            )));
        }
        let int = |key: &str| -> Result<usize> {
            self.meta(key)
                .and_then(|v| {
                    v.to_u32()
                        .ok()
                        .map(|x| x as usize)
                        .or_else(|| v.to_u64().ok().map(|x| x as usize))
                })
                .ok_or_else(|| err(format!("missing metadata {ARCH}.{key}")))
        };
        let n_head = int("attention.head_count")?;
        let kv = int("attention.head_count_kv").unwrap_or(n_head);
        let vocab = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| err("no token_embd.weight tensor".into()))?;
        let eps = self
            .meta("attention.layer_norm_epsilon")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(1e-5) as f64;
        Ok(Config {
            n_embd: int("embedding_length")?,
            n_head,
            n_layer: int("block_count")?,
            n_positions: int("context_length")?,
            n_inner: Some(int("feed_forward_length")?),
            vocab_size: vocab,
            layer_norm_epsilon: eps,
            multi_query: kv == 1,
            tie_word_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
            ..Config::tiny_starcoder_py()
        })
    }

    fn qtensor(&self, hub: &str, shape: &[usize]) -> Result<QTensor> {
        let name = gguf_name(hub)
            .ok_or_else(|| EngineError::Other(format!("no GGUF name for tensor {hub}")))?;
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
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    q.shape().dims()
                ),
            });
        }
        Ok(q)
    }
}

impl Weights for Gguf {
    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.qtensor(name, shape)?.dequantize(&self.device)?)
    }

    fn matmul(&self, name: &str, shape: &[usize]) -> Result<QMatMul> {
        Ok(QMatMul::from_qtensor(self.qtensor(name, shape)?)?)
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|n| self.content.tensor_infos.contains_key(&n))
    }
}

/// llama.cpp's token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_UNUSED: i32 = 5;

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
            TOKEN_NORMAL
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
    // that pre-tokenizer `starcoder`, the plain one `gpt-2`.
    let digits = tok["pre_tokenizer"].to_string().contains("\"Digits\"");
    let eos = tok["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["content"] == "<|endoftext|>")
        .and_then(|t| t["id"].as_u64())
        .ok_or_else(|| bad_tokenizer("no <|endoftext|> token"))?;
    Ok(vec![
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            V::String(if digits { "starcoder" } else { "gpt-2" }.into()),
        ),
        ("tokenizer.ggml.tokens".into(), V::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), V::Array(types)),
        ("tokenizer.ggml.merges".into(), V::Array(merges)),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(eos as u32)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(eos as u32)),
    ])
}

/// The `tokenizer.json` of the tokenizer stored in a GGUF file (GPT-2 byte-level BPE, the
/// format of every `starcoder` GGUF).
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
            "tokenizer model {model:?} is not supported (only gpt2 byte-level BPE)"
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
            TOKEN_CONTROL => added.push(serde_json::json!({
                "id": id, "content": text, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
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
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    let pre = match meta("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()) {
        Some(p) if p == "starcoder" => serde_json::json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]
        }),
        None => byte_level.clone(),
        Some(p) if p == "gpt-2" || p == "default" => byte_level.clone(),
        Some(p) => return Err(err(format!("pre-tokenizer `{p}` is not supported"))),
    };
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

/// Write a hub-format checkpoint's tensors as a `starcoder` GGUF file: matrices in `dtype`
/// (where their rows fit its blocks, else f32), vectors in f32; with the tokenizer's
/// `tokenizer.json` when given.
pub fn write(
    path: &Path,
    cfg: &Config,
    tensors: &HashMap<String, Tensor>,
    dtype: GgmlDType,
    tokenizer: Option<&serde_json::Value>,
) -> Result<()> {
    let mut q = Vec::new();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for hub in names {
        let t = &tensors[hub];
        let Some(name) = gguf_name(hub) else { continue };
        let fits = t.rank() == 2 && t.dim(1)? % dtype.block_size() == 0;
        let qt = QTensor::quantize(t, if fits { dtype } else { GgmlDType::F32 })?;
        q.push((name, qt));
    }
    use gguf_file::Value as V;
    let u = |x: usize| V::U32(x as u32);
    let mut meta: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(ARCH.into())),
        (format!("{ARCH}.context_length"), u(cfg.n_positions)),
        (format!("{ARCH}.embedding_length"), u(cfg.n_embd)),
        (format!("{ARCH}.feed_forward_length"), u(cfg.inner_dim())),
        (format!("{ARCH}.block_count"), u(cfg.n_layer)),
        (format!("{ARCH}.attention.head_count"), u(cfg.n_head)),
        (format!("{ARCH}.attention.head_count_kv"), u(cfg.kv_heads())),
        (
            format!("{ARCH}.attention.layer_norm_epsilon"),
            V::F32(cfg.layer_norm_epsilon as f32),
        ),
    ];
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
}
