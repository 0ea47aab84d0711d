//! Llama, as DeepSeek-Coder (1.3B, 6.7B) and CodeLlama ship it: RoPE (DeepSeek-Coder with
//! linear scaling, factor 4, base 100,000; CodeLlama base 1e6), grouped-query attention,
//! RMSNorm, a SwiGLU MLP, no biases (unless `attention_bias` / `mlp_bias`), untied output
//! head. Runs on the shared rotary decoder ([`crate::decoder`]).
//!
//! Written here rather than taken from `candle_transformers::models::llama` because that
//! module cannot serve this product: its `Cache` only grows (no truncation to the common
//! prefix of two prompts, so every keystroke would recompute the whole prompt), it returns
//! the last position's logits only (fine-tuning and evaluation need all of them), it has no
//! place for LoRA deltas, its fused rotary and softmax kernels record no backward pass, and
//! its quantized sibling (`quantized_llama`) is a second implementation with interleaved
//! RoPE (llama.cpp's permuted q/k) that PEFT adapters, written for the hub's layout, cannot
//! be applied to. Our GGUF reader un-permutes q/k instead, so one implementation serves
//! both formats and the same adapters.

use crate::decoder::Family;

pub(crate) const FAMILY: Family = Family {
    rms_norm: true,
    swiglu: true,
};
