//! Code models on candle: GPTBigCode (StarCoder), Llama (DeepSeek-Coder, CodeLlama), Qwen2
//! (Qwen2.5-Coder) and StarCoder2 behind one model seam ([`model`]); configuration,
//! loading (hub directories and GGUF), KV cache, sampling and the one thread that owns the
//! model. Knows nothing of prompts' meaning, LSP or editors.

pub mod attention;
pub mod bench;
pub mod bigcode;
pub mod cancel;
pub mod config;
pub mod cpu;
pub mod decoder;
pub mod error;
pub mod fast_gelu;
pub mod fuzzing;
pub mod generate;
pub mod gguf;
pub mod kv;
pub mod layers;
pub mod llama;
pub mod load;
pub mod lora;
pub mod low_rank;
pub mod matmul;
pub mod merged;
pub mod model;
pub mod qmatmul;
pub mod qwen2;
pub mod sgemm;
pub mod skinny;
pub mod softmax;
pub mod spec;
pub mod starcoder2;
pub mod testkit;
pub mod tokenizer;
pub mod train_ops;
pub mod worker;

use std::sync::Arc;

pub use cancel::CancelToken;
pub use config::{Arch, Config};
pub use error::{EngineError, Result};
pub use generate::{
    GenerateParams, GenerateRequest, Generation, Generator, StopFn, StopReason, TextFn,
};
pub use load::{Fetch, ModelFiles};
pub use model::{BlockLora, KvCache, Logits, Lora, Model, Module, Pass};
pub use spec::{DTypeSpec, DeviceSpec, ModelSpec, DEFAULT_MODEL};
pub use tokenizer::{SpecialIds, Tokenizer, Utf8Decoder};
pub use worker::Engine;

/// Stages of [`load`], for progress reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadStage<'a> {
    /// Fetching a file from the hub (or finding it in the cache).
    Fetching(&'a str),
    /// Reading weights into memory.
    Loading(&'a str),
}

/// Set the number of compute threads. Must run before the first tensor operation (candle
/// reads it once); the binary calls it at start-up.
pub fn set_threads(n: usize) {
    let n = n.max(1).to_string();
    // SAFETY (edition 2021: set_var is safe): called at start-up before other threads exist.
    std::env::set_var("RAYON_NUM_THREADS", &n);
    std::env::set_var("CANDLE_NUM_THREADS", &n);
}

/// A default thread count for a machine that also runs the editor: all physical cores on
/// small machines (halving a 2-core laptop's speed costs more than it saves), one left free
/// from 4 cores up.
pub fn default_threads() -> usize {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n >= 4 {
        n - 1
    } else {
        n
    }
}

/// Resolve, load and start a model: what the CLI and the server call.
pub fn load(spec: &ModelSpec, on_stage: &mut dyn FnMut(LoadStage)) -> Result<Engine> {
    let files = load::resolve(spec, &mut |f| match f {
        Fetch::Fetching(name) => on_stage(LoadStage::Fetching(name)),
    })?;
    on_stage(LoadStage::Loading(&spec.model));
    let device = load::select_device(spec.device)?;
    let dtype = load::select_dtype(spec.dtype, &device)?;
    let cfg = load::files_config(&files)?;
    let tokenizer = load::load_tokenizer(&files.tokenizer)?;
    if tokenizer.vocab_size() > cfg.vocab_size {
        return Err(EngineError::File {
            path: files.tokenizer.clone(),
            message: format!(
                "tokenizer has {} tokens but the model's vocabulary is {}",
                tokenizer.vocab_size(),
                cfg.vocab_size
            ),
        });
    }
    let mut model = load::load_model(&files, &cfg, &device, dtype)?;
    let precision = match spec.dtype.quantized() {
        Some(q) => {
            let n = model.quantize(q)?;
            format!("{q:?} ({n} layers)")
        }
        None => format!("{dtype:?}"),
    };
    let description = format!(
        "{} ({} layers, n_embd {}, window {}, {precision} on {:?})",
        spec.model,
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_positions,
        device.location()
    );
    let engine = Engine::start(model, Arc::new(tokenizer), description);
    engine.set_merge_budget(spec.adapter_memory.unwrap_or(merged::DEFAULT_MERGE_BUDGET))?;
    Ok(engine)
}
