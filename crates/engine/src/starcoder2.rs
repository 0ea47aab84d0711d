//! StarCoder2 (3B, 7B, 15B): RoPE, grouped-query attention, LayerNorm with bias, a GELU
//! (tanh) MLP named like GPTBigCode's (`mlp.c_fc`, `mlp.c_proj`), biases on every
//! projection (`use_bias`), and sliding-window attention (4,096): query `i` sees keys `j`
//! with `i - j < window`, as transformers' mask counts. Runs on the shared rotary decoder
//! ([`crate::decoder`]). The KV cache keeps every position (so truncating to a common prefix
//! stays exact); a one-token step reads only the last `window` keys.
//!
//! Written here rather than taken from `candle_transformers::models::starcoder2` because
//! that module cannot serve this product: its sliding-window mask is built over the new
//! tokens only (with a cache the window never slides, so past 4,096 tokens it attends to
//! everything) and lets `window + 1` keys through; its KV cache only grows (no truncation
//! to the common prefix of two prompts); it returns the last position's logits only; and it
//! has no place for LoRA deltas or a differentiable pass for fine-tuning.

use crate::decoder::Family;

pub(crate) const FAMILY: Family = Family {
    rms_norm: false,
    swiglu: false,
};
