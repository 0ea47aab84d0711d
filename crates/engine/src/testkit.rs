//! Random-weight checkpoints in the hub's format, made in code: tests need a model without
//! the network, and benchmarks need tiny_starcoder_py's or Qwen2.5-Coder-0.5B's exact shape
//! (speed does not depend on the weights' values). Also the comparison the numerical tests
//! share.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::config::{Arch, Config};
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

/// StarCoder2's control tokens (its tokenizer's first ids).
pub const STARCODER2_SPECIALS: &[&str] = &[
    "<|endoftext|>",
    "<fim_prefix>",
    "<fim_middle>",
    "<fim_suffix>",
    "<fim_pad>",
    "<repo_name>",
    "<file_sep>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<jupyter_script>",
    "<empty_output>",
    "<code_to_intermediate>",
    "<intermediate_to_code>",
    "<pr>",
];

/// Qwen2.5-Coder's control tokens (in its tokenizer they follow the 151,643 BPE tokens).
pub const QWEN2_5_CODER_SPECIALS: &[&str] = &[
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
];

/// DeepSeek-Coder's control tokens (begin/end of sentence and its FIM triple).
pub const DEEPSEEK_CODER_SPECIALS: &[&str] = &[
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜fim▁hole｜>",
    "<｜fim▁begin｜>",
    "<｜fim▁end｜>",
];

/// A byte-level BPE tokenizer (StarCoder's special tokens, then the 256 bytes, a handful of
/// merges for common code pieces) in `tokenizer.json` form.
pub fn byte_level_tokenizer_json() -> Value {
    byte_level_tokenizer_json_with(STARCODER_SPECIALS)
}

/// The same byte-level BPE with another family's control tokens first.
pub fn byte_level_tokenizer_json_with(specials: &[&str]) -> Value {
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, s) in specials.iter().enumerate() {
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

/// The `config.json` a hub checkpoint of `cfg` carries, as transformers writes it (so that
/// transformers, llama.cpp's converter and we all read it).
pub fn hub_config_json(cfg: &Config) -> Value {
    let arch = cfg.arch();
    if arch == Arch::GptBigCode {
        let mut config = serde_json::to_value(cfg).expect("json");
        config["architectures"] = json!(["GPTBigCodeForCausalLM"]);
        config["torch_dtype"] = json!("float32");
        config["bos_token_id"] = json!(0);
        config["eos_token_id"] = json!(0);
        return config;
    }
    let class = match arch {
        Arch::Llama => "LlamaForCausalLM",
        Arch::Qwen2 => "Qwen2ForCausalLM",
        _ => "Starcoder2ForCausalLM",
    };
    let mut c = json!({
        "architectures": [class],
        "model_type": cfg.model_type,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.inner_dim(),
        "num_attention_heads": cfg.n_head,
        "num_hidden_layers": cfg.n_layer,
        "num_key_value_heads": cfg.kv_heads(),
        "max_position_embeddings": cfg.n_positions,
        "vocab_size": cfg.vocab_size,
        "hidden_act": cfg.activation_function,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "rope_theta": cfg.rope_base(),
        "torch_dtype": "float32",
    });
    let eps = if arch == Arch::Starcoder2 {
        "norm_epsilon"
    } else {
        "rms_norm_eps"
    };
    c[eps] = json!(cfg.layer_norm_epsilon);
    if let Some(r) = cfg.rope_parameters.as_ref().or(cfg.rope_scaling.as_ref()) {
        if r.rope_type.as_deref().is_some_and(|t| t != "default") {
            c["rope_scaling"] = json!({"type": r.rope_type, "factor": r.factor});
        }
    }
    if let Some(d) = cfg.head_dim {
        c["head_dim"] = json!(d);
    }
    match arch {
        Arch::Starcoder2 => {
            c["sliding_window"] = json!(cfg.sliding_window);
            c["use_bias"] = json!(cfg.use_bias.unwrap_or(true));
        }
        Arch::Llama => {
            c["attention_bias"] = json!(cfg.attention_bias.unwrap_or(false));
            c["mlp_bias"] = json!(cfg.mlp_bias.unwrap_or(false));
        }
        Arch::Qwen2 => c["use_sliding_window"] = json!(false),
        Arch::GptBigCode => {}
    }
    c
}

/// Write `config.json`, `tokenizer.json` and `model.safetensors` with random weights (normal,
/// `std`), tied `lm_head` absent, as the hub ships checkpoints of `cfg`'s architecture.
/// `tokenizer`: a `tokenizer.json` to use (padded up to the vocabulary); None for the
/// byte-level one with the family's control tokens.
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
    let mut tok =
        tokenizer.unwrap_or_else(|| byte_level_tokenizer_json_with(specials_of(cfg.arch())));
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
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&hub_config_json(cfg)).expect("json"),
    )
    .map_err(io)?;
    let t = random_tensors(cfg, seed, std)?;
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
    Ok(())
}

/// The control tokens of a family's tokenizer, for the byte-level test tokenizer.
pub fn specials_of(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::GptBigCode => STARCODER_SPECIALS,
        Arch::Starcoder2 => STARCODER2_SPECIALS,
        Arch::Qwen2 => QWEN2_5_CODER_SPECIALS,
        Arch::Llama => DEEPSEEK_CODER_SPECIALS,
    }
}

/// Random weights of `cfg`'s architecture by hub name.
pub fn random_tensors(cfg: &Config, seed: u64, std: f32) -> Result<HashMap<String, Tensor>> {
    let dev = Device::Cpu;
    // candle's CPU device cannot be seeded: draw the values from our own seeded generator.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut randn = |shape: &[usize], std: f32| -> Result<Tensor> {
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
    let e = cfg.n_embd;
    let kv = cfg.kv_heads() * cfg.head_dim();
    let inner = cfg.inner_dim();
    let mut t: HashMap<String, Tensor> = HashMap::new();
    if cfg.arch() == Arch::GptBigCode {
        t.insert(
            "transformer.wte.weight".into(),
            randn(&[cfg.vocab_size, e], std)?,
        );
        t.insert(
            "transformer.wpe.weight".into(),
            randn(&[cfg.n_positions, e], std)?,
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
                t.insert(format!("{p}.{name}.weight"), randn(&[out, inp], std)?);
                t.insert(format!("{p}.{name}.bias"), randn(&[out], std)?);
            }
        }
        return Ok(t);
    }
    // Rotary families: norms near 1 (not exactly, so a norm applied wrongly shows).
    let layer_norm = cfg.arch() == Arch::Starcoder2;
    let q = cfg.n_head * cfg.head_dim();
    let mut norm = |t: &mut HashMap<String, Tensor>, p: &str| -> Result<()> {
        t.insert(format!("{p}.weight"), (randn(&[e], 0.1)? + 1.0)?);
        if layer_norm {
            t.insert(format!("{p}.bias"), randn(&[e], 0.1)?);
        }
        Ok(())
    };
    norm(&mut t, "model.norm")?;
    for i in 0..cfg.n_layer {
        let p = format!("model.layers.{i}");
        norm(&mut t, &format!("{p}.input_layernorm"))?;
        norm(&mut t, &format!("{p}.post_attention_layernorm"))?;
    }
    t.insert(
        "model.embed_tokens.weight".into(),
        randn(&[cfg.vocab_size, e], std)?,
    );
    if !cfg.tie_word_embeddings {
        t.insert("lm_head.weight".into(), randn(&[cfg.vocab_size, e], std)?);
    }
    let mlp: Vec<(&str, usize, usize)> = if cfg.arch() == Arch::Starcoder2 {
        vec![("mlp.c_fc", inner, e), ("mlp.c_proj", e, inner)]
    } else {
        vec![
            ("mlp.gate_proj", inner, e),
            ("mlp.up_proj", inner, e),
            ("mlp.down_proj", e, inner),
        ]
    };
    for i in 0..cfg.n_layer {
        let p = format!("model.layers.{i}");
        let attn = [
            ("self_attn.q_proj", q, e, cfg.qkv_bias()),
            ("self_attn.k_proj", kv, e, cfg.qkv_bias()),
            ("self_attn.v_proj", kv, e, cfg.qkv_bias()),
            ("self_attn.o_proj", e, q, cfg.o_bias()),
        ];
        let mlp = mlp.iter().map(|&(n, o, i)| (n, o, i, cfg.mlp_bias()));
        for (name, out, inp, bias) in attn.into_iter().chain(mlp) {
            t.insert(format!("{p}.{name}.weight"), randn(&[out, inp], std)?);
            if bias {
                t.insert(format!("{p}.{name}.bias"), randn(&[out], std)?);
            }
        }
    }
    Ok(t)
}

/// A tiny rotary checkpoint of `arch` (2 layers, n_embd 64, 4 heads over 2 K/V heads) with
/// the byte-level tokenizer and the family's control tokens.
pub fn write_tiny_rope_checkpoint(dir: &Path, arch: Arch, seed: u64) -> Result<Config> {
    let tok = byte_level_tokenizer_json_with(specials_of(arch));
    let cfg = Config::tiny_rope_test(arch, tokenizer_len(&tok));
    write_random_checkpoint(dir, &cfg, seed, 0.2, Some(tok))?;
    Ok(cfg)
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

/// Qwen2.5-Coder's added tokens and their ids (after the 151,643 BPE tokens it shares with
/// Qwen1.5 and Qwen2).
pub const QWEN2_5_CODER_ADDED: [(u32, &str); 22] = [
    (151643, "<|endoftext|>"),
    (151644, "<|im_start|>"),
    (151645, "<|im_end|>"),
    (151646, "<|object_ref_start|>"),
    (151647, "<|object_ref_end|>"),
    (151648, "<|box_start|>"),
    (151649, "<|box_end|>"),
    (151650, "<|quad_start|>"),
    (151651, "<|quad_end|>"),
    (151652, "<|vision_start|>"),
    (151653, "<|vision_end|>"),
    (151654, "<|vision_pad|>"),
    (151655, "<|image_pad|>"),
    (151656, "<|video_pad|>"),
    (151657, "<tool_call>"),
    (151658, "</tool_call>"),
    (151659, "<|fim_prefix|>"),
    (151660, "<|fim_middle|>"),
    (151661, "<|fim_suffix|>"),
    (151662, "<|fim_pad|>"),
    (151663, "<|repo_name|>"),
    (151664, "<|file_sep|>"),
];

/// Give a Qwen-family `tokenizer.json` (Qwen1.5's, as llama.cpp's `ggml-vocab-qwen2.gguf`
/// holds it) Qwen2.5-Coder's added tokens at their ids, replacing what sits there, and
/// dropping any other entry with one of their strings (another family's `<|endoftext|>`
/// at id 0): every token string stays unique, as llama.cpp requires of a vocabulary.
pub fn with_qwen2_5_coder_specials(tok: &mut Value) {
    let taken = |id: u64, text: &str| {
        QWEN2_5_CODER_ADDED
            .iter()
            .any(|(i, s)| u64::from(*i) == id || *s == text)
    };
    let added = tok["added_tokens"].as_array_mut().expect("added_tokens");
    added.retain(|t| {
        !taken(
            t["id"].as_u64().unwrap_or(0),
            t["content"].as_str().unwrap_or(""),
        )
    });
    for (id, s) in QWEN2_5_CODER_ADDED {
        added.push(added_token(id as usize, s));
    }
    if let Some(vocab) = tok["model"]["vocab"].as_object_mut() {
        vocab.retain(|text, v| !taken(v.as_u64().unwrap_or(0), text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen_specials_leave_every_token_string_unique() {
        let mut tok = json!({
            "added_tokens": [added_token(0, "<|endoftext|>"), added_token(1, "<fim_prefix>")],
            "model": {"vocab": {"<|endoftext|>": 0, "<fim_prefix>": 1, "a": 2, "<|im_end|>": 3}},
        });
        with_qwen2_5_coder_specials(&mut tok);
        let mut strings: Vec<String> = tok["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["content"].as_str().unwrap().to_string())
            .collect();
        let added: std::collections::HashSet<String> = strings.iter().cloned().collect();
        strings.extend(
            tok["model"]["vocab"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| !added.contains(*k))
                .cloned(),
        );
        let n = strings.len();
        strings.sort();
        strings.dedup();
        assert_eq!(strings.len(), n, "{tok}");
        let id_of = |s: &str| {
            tok["added_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["content"] == s)
                .map(|t| t["id"].as_u64().unwrap())
        };
        assert_eq!(id_of("<|endoftext|>"), Some(151643));
        assert_eq!(id_of("<fim_prefix>"), Some(1));
        assert!(tok["model"]["vocab"].get("<|im_end|>").is_none());
        assert_eq!(tok["model"]["vocab"]["a"], 2);
    }
}
