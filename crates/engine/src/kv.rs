//! The KV cache: per-layer keys and values plus the token ids they encode, truncatable to
//! the common prefix of two prompts. Knows nothing of any one architecture.

use candle_core::Tensor;

use crate::error::Result;

/// Key/value buffers of one layer, `(batch, kv_heads, capacity, head_dim)`, valid up to `len`.
#[derive(Clone, Debug, Default)]
pub(crate) struct LayerKv {
    pub(crate) k: Option<Tensor>,
    pub(crate) v: Option<Tensor>,
    pub(crate) len: usize,
}

impl LayerKv {
    pub(crate) fn capacity(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dim(2).unwrap_or(0))
    }

    /// Append `k`, `v` `(batch, kv_heads, t, head_dim)` and return views of everything so far.
    pub(crate) fn append(
        &mut self,
        k: &Tensor,
        v: &Tensor,
        max_len: usize,
    ) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let needed = self.len + t;
        if needed > self.capacity() {
            // Grow geometrically (bounded by the window) so appends are amortised O(1) and
            // memory follows the context actually used, not n_positions.
            let cap = needed
                .max(self.capacity() * 2)
                .max(64)
                .min(max_len.max(needed));
            let (b, h, _, d) = k.dims4()?;
            let grow = |old: &Option<Tensor>| -> Result<Tensor> {
                let buf = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
                if let Some(old) = old {
                    if self.len > 0 {
                        buf.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    }
                }
                Ok(buf)
            };
            self.k = Some(grow(&self.k)?);
            self.v = Some(grow(&self.v)?);
        }
        let (kb, vb) = (self.k.as_ref().unwrap(), self.v.as_ref().unwrap());
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((kb.narrow(2, 0, needed)?, vb.narrow(2, 0, needed)?))
    }
}

/// The KV cache of one sequence: per-layer keys and values plus the token ids they encode,
/// so a new prompt can keep the longest common prefix and compute only the rest.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    pub(crate) tokens: Vec<u32>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token ids whose keys and values are cached.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Keep the first `len` positions only (no copy: later appends overwrite the rest).
    pub fn truncate(&mut self, len: usize) {
        let len = len.min(self.tokens.len());
        self.tokens.truncate(len);
        for l in &mut self.layers {
            l.len = len;
        }
    }

    /// Length of the common prefix of the cached tokens and `ids`.
    pub fn common_prefix(&self, ids: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count()
    }
}
