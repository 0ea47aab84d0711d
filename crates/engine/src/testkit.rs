//! Random-weight checkpoints in the hub's format, made in code: tests need a model without
//! the network, and benchmarks need tiny_starcoder_py's exact shape (speed does not depend on
//! the weights' values). Also the comparison the numerical tests share.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::config::Config;
use crate::error::{EngineError, Result};

/// The special tokens of StarCoder's tokenizer, in its id order.
pub const STARCODER_SPECIALS: &[&str] = &[
    "<|endoftext|>",
    "<fim_prefix>",
    "<fim_middle>",
    "<fim_suffix>",
    "<fim_pad>",
    "<filename>",
    "<gh_stars>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<empty_output>",
    "<commit_before>",
    "<commit_msg>",
    "<commit_after>",
    "<reponame>",
];

fn added_token(id: usize, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false,
           "rstrip": false, "normalized": false, "special": true})
}

/// A byte-level BPE tokenizer (StarCoder's special tokens, then the 256 bytes, a handful of
/// merges for common code pieces) in `tokenizer.json` form.
pub fn byte_level_tokenizer_json() -> Value {
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, s) in STARCODER_SPECIALS.iter().enumerate() {
        vocab.insert(s.to_string(), json!(i));
        added.push(added_token(i, s));
    }
    let chars = crate::tokenizer::byte_alphabet();
    for c in &chars {
        let id = vocab.len();
        vocab.insert(c.to_string(), json!(id));
    }
    // A few merges so that multi-byte tokens exist (and decoding across them is exercised).
    let merges = [
        ("Ġ", "Ġ"),
        ("ĠĠ", "ĠĠ"),
        ("d", "e"),
        ("de", "f"),
        ("r", "e"),
        ("Ċ", "Ġ"),
    ];
    let mut merge_list = Vec::new();
    for (a, b) in merges {
        let m = format!("{a}{b}");
        if !vocab.contains_key(&m) {
            let id = vocab.len();
            vocab.insert(m, json!(id));
        }
        merge_list.push(json!(format!("{a} {b}")));
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merge_list
        }
    })
}

/// Number of entries (model vocabulary plus added tokens) of a tokenizer JSON.
pub fn tokenizer_len(tok: &Value) -> usize {
    let vocab = tok["model"]["vocab"].as_object().map_or(0, |v| v.len());
    let max_added = tok["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_u64())
        .max()
        .map_or(0, |m| m as usize + 1);
    vocab.max(max_added)
}

/// Pad a tokenizer with added tokens `<|pad_N|>` until it has `size` entries.
pub fn pad_tokenizer(tok: &mut Value, size: usize) {
    let mut n = tokenizer_len(tok);
    let added = tok["added_tokens"].as_array_mut().expect("added_tokens");
    while n < size {
        added.push(added_token(n, &format!("<|pad_{n}|>")));
        n += 1;
    }
}

/// Write `config.json`, `tokenizer.json` and `model.safetensors` with random weights (normal,
/// `std`), tied `lm_head` absent, as the hub ships GPTBigCode checkpoints. `tokenizer`: a
/// `tokenizer.json` to use (padded up to the vocabulary); None for the byte-level one.
pub fn write_random_checkpoint(
    dir: &Path,
    cfg: &Config,
    seed: u64,
    std: f32,
    tokenizer: Option<Value>,
) -> Result<()> {
    let io = |e: std::io::Error| EngineError::File {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tok = tokenizer.unwrap_or_else(byte_level_tokenizer_json);
    let tok_len = tokenizer_len(&tok);
    if tok_len > cfg.vocab_size {
        return Err(EngineError::Other(format!(
            "tokenizer has {tok_len} entries, more than the vocabulary of {}",
            cfg.vocab_size
        )));
    }
    pad_tokenizer(&mut tok, cfg.vocab_size);
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_string(&tok).expect("json"),
    )
    .map_err(io)?;

    let mut config = serde_json::to_value(cfg).expect("json");
    config["architectures"] = json!(["GPTBigCodeForCausalLM"]);
    config["torch_dtype"] = json!("float32");
    config["bos_token_id"] = json!(0);
    config["eos_token_id"] = json!(0);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).expect("json"),
    )
    .map_err(io)?;

    let dev = Device::Cpu;
    // candle's CPU device cannot be seeded: draw the values from our own seeded generator.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let e = cfg.n_embd;
    let kv = cfg.kv_heads() * cfg.head_dim();
    let inner = cfg.inner_dim();
    let mut randn = |shape: &[usize]| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        // Box-Muller: two uniforms give two independent normals.
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random();
            let r = (-2.0 * u1.ln()).sqrt() * std;
            let th = std::f32::consts::TAU * u2;
            v.push(r * th.cos());
            v.push(r * th.sin());
        }
        v.truncate(n);
        Ok(Tensor::from_vec(v, shape, &dev)?)
    };
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert(
        "transformer.wte.weight".into(),
        randn(&[cfg.vocab_size, e])?,
    );
    t.insert(
        "transformer.wpe.weight".into(),
        randn(&[cfg.n_positions, e])?,
    );
    t.insert(
        "transformer.ln_f.weight".into(),
        Tensor::ones(e, DType::F32, &dev)?,
    );
    t.insert(
        "transformer.ln_f.bias".into(),
        Tensor::zeros(e, DType::F32, &dev)?,
    );
    for i in 0..cfg.n_layer {
        let p = format!("transformer.h.{i}");
        for ln in ["ln_1", "ln_2"] {
            t.insert(
                format!("{p}.{ln}.weight"),
                Tensor::ones(e, DType::F32, &dev)?,
            );
            t.insert(
                format!("{p}.{ln}.bias"),
                Tensor::zeros(e, DType::F32, &dev)?,
            );
        }
        for (name, out, inp) in [
            ("attn.c_attn", e + 2 * kv, e),
            ("attn.c_proj", e, e),
            ("mlp.c_fc", inner, e),
            ("mlp.c_proj", e, inner),
        ] {
            t.insert(format!("{p}.{name}.weight"), randn(&[out, inp])?);
            t.insert(format!("{p}.{name}.bias"), randn(&[out])?);
        }
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
    Ok(())
}

/// The tiny test checkpoint: 2 layers, n_embd 64, byte-level tokenizer, multi-query
/// (`multi_query: false` for the multi-head variant).
pub fn write_tiny_checkpoint(dir: &Path, multi_query: bool, seed: u64) -> Result<()> {
    let tok = byte_level_tokenizer_json();
    let mut cfg = Config::tiny_test(tokenizer_len(&tok));
    cfg.multi_query = multi_query;
    write_random_checkpoint(dir, &cfg, seed, 0.2, Some(tok))
}

/// The largest absolute difference between two tensors of the same shape (`f32`).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// The largest absolute value of an f32 tensor (the scale tolerances are relative to).
pub fn abs_max(t: &Tensor) -> Result<f32> {
    Ok(t.abs()?.max_all()?.to_scalar::<f32>()?)
}

/// The sum of absolute values of an f32 tensor (is a gradient there at all?).
pub fn abs_sum(t: &Tensor) -> Result<f32> {
    Ok(t.abs()?.sum_all()?.to_scalar::<f32>()?)
}
