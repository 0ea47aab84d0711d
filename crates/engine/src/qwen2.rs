//! Qwen2, as Qwen2.5-Coder (0.5B, 1.5B, 3B, 7B) ships it: Llama's block with biases on
//! q/k/v (none on o_proj or the MLP), RoPE base 1e6, 2 to 4 K/V heads, RMSNorm eps 1e-6,
//! tied embeddings for 0.5B/1.5B/3B. Runs on the shared rotary decoder
//! ([`crate::decoder`]); `use_sliding_window` (off in every Qwen2.5-Coder) is refused by
//! the config check rather than silently ignored.
//!
//! Written here rather than taken from `candle_transformers::models::qwen2` (or
//! `quantized_qwen2`) because those cannot serve this product: the KV cache only grows by
//! concatenation (no truncation to the common prefix of two prompts, and a full copy of the
//! cache at every token), only the last position's logits come out, there is no place for
//! LoRA deltas, the fused rotary/softmax kernels record no backward pass for fine-tuning,
//! and the dense and GGUF paths are two separate models with different APIs.

use crate::decoder::Family;

pub(crate) const FAMILY: Family = Family {
    rms_norm: true,
    swiglu: true,
};
