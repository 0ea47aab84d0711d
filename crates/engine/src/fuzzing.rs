//! Entry points of the `gguf` and `safetensors` fuzz targets (`fuzz/`) and of the stable
//! replay of their corpora (`tests/fuzz_corpus.rs`): arbitrary bytes as a weights file, read
//! by the loaders the engine uses (`load::load_model`, `gguf::Gguf`, `gguf::tokenizer_json`).
//! A broken file must be an error, never a panic; what loads must be usable.
//!
//! The loaders read files, so the bytes are written to a scratch file first (one per thread).

use std::path::PathBuf;

use candle_core::{DType, Device};

use crate::config::Config;
use crate::load::{load_model, ModelFiles, Weights};

/// The model the weights are read for: one layer, n_embd 8, the byte-level vocabulary.
pub fn micro_config() -> Config {
    Config {
        n_embd: 8,
        n_head: 2,
        n_layer: 1,
        n_positions: 16,
        n_inner: Some(16),
        vocab_size: crate::testkit::tokenizer_len(&crate::testkit::byte_level_tokenizer_json()),
        ..Config::tiny_starcoder_py()
    }
}

/// A scratch file holding the input, removed with its folder when dropped (the fuzzer
/// runs millions of inputs and many processes: nothing may be left in the temp folder).
struct Scratch {
    path: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn scratch(ext: &str, data: &[u8]) -> Scratch {
    // A folder per thread: with one per process, one thread removing it as another made
    // sure it existed failed the second (`create_dir_all`: "File exists"; seen once in the
    // corpus replay, whose two tests run on two threads).
    let thread = format!("{:?}", std::thread::current().id()).replace(['(', ')'], "");
    let dir = std::env::temp_dir().join(format!("copilot-fuzz-{}-{thread}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join(format!("input.{ext}"));
    std::fs::write(&path, data).expect("scratch file");
    Scratch { path }
}

fn files(weights: Weights) -> ModelFiles {
    ModelFiles {
        config: PathBuf::from("config.json"),
        tokenizer: PathBuf::from("tokenizer.json"),
        weights,
    }
}

/// Whatever loads answers a forward pass.
fn usable(model: crate::model::Model) {
    let mut cache = crate::model::KvCache::new();
    let _ = model.forward_cached(&[1, 2], &mut cache, crate::model::Logits::Last, None);
}

/// Arbitrary bytes as `model.safetensors` of [`micro_config`].
pub fn safetensors(data: &[u8]) {
    let file = scratch("safetensors", data);
    let files = files(Weights::Safetensors(vec![file.path.clone()]));
    if let Ok(model) = load_model(&files, &micro_config(), &Device::Cpu, DType::F32) {
        usable(model);
    }
}

/// Arbitrary bytes as a `.gguf` file: its metadata, config, tokenizer and tensors.
pub fn gguf(data: &[u8]) {
    let file = scratch("gguf", data);
    let path = file.path.clone();
    if let Ok(g) = crate::gguf::Gguf::open(&path, &Device::Cpu) {
        let _ = g.config();
    }
    let _ = crate::gguf::tokenizer_json(&path);
    let files = files(Weights::Gguf(path));
    if let Ok(model) = load_model(&files, &micro_config(), &Device::Cpu, DType::F32) {
        usable(model);
    }
}
