//! The model seam: one [`Model`] whatever the architecture, so the KV cache that truncates to
//! a common prefix, all-position logits, LoRA deltas, the differentiable pass for
//! fine-tuning, quantized matrices and the one model thread work the same for every family.
//!
//! An architecture implements [`Architecture`] (one file each: [`crate::bigcode`] for
//! GPTBigCode, [`crate::decoder`] for the RoPE families [`crate::llama`], [`crate::qwen2`],
//! [`crate::starcoder2`]); this file owns what they share: the window check, the cache's
//! bookkeeping (tokens, rollback after an error), and the dispatch on
//! [`Config::arch`](crate::config::Config::arch).
//!
//! The model itself is immutable (`&self`); the KV cache is a separate value, so one model in
//! memory can serve several caches (one per adapter) and training needs no cache at all.
//! Knows nothing of tokenizers, prompts or threads.

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::{Arch, Config};
use crate::error::{EngineError, Result};
pub use crate::kv::KvCache;
use crate::kv::LayerKv;
use crate::layers::WeightMatrix;
pub use crate::layers::{LoraPair, Pass, Weights};
pub use crate::lora::{BlockLora, Lora, Module};

/// Which logits to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// `(batch, vocab)` for the last position only: cheap, what decoding needs.
    Last,
    /// `(batch, seq, vocab)` for every position: training and evaluation.
    All,
}

/// What an architecture implements; [`Model`] does the rest.
pub(crate) trait Architecture: Send + Sync {
    fn device(&self) -> &Device;
    fn dtype(&self) -> DType;
    /// Number of blocks (one KV buffer each).
    fn n_blocks(&self) -> usize;
    /// Quantize every projection (and the output head) that fits the format's blocks;
    /// returns how many were quantized.
    fn quantize(&mut self, dtype: GgmlDType) -> Result<usize>;
    /// Every projection's weight (blocks, then the output head): what a decode step reads.
    fn projections(&self) -> Vec<&WeightMatrix>;
    /// A copy sharing every weight (tensors and packed matrices are reference-counted).
    fn boxed_clone(&self) -> Box<dyn Architecture>;
    /// Merge `lora` into the weights it touches, in place (call it on a copy); returns the
    /// bytes of the weights it made. With `dry`, changes nothing and returns what it would
    /// make.
    fn merge(&mut self, lora: &Lora, dry: bool) -> Result<usize>;
    /// Run `input` `(batch, t)` at positions `past..past + t`, appending keys and values to
    /// `kv` (one entry per block) when given. f32 logits: `(batch, vocab)` for
    /// [`Logits::Last`], `(batch, t, vocab)` for [`Logits::All`].
    fn run(
        &self,
        input: &Tensor,
        past: usize,
        kv: Option<&mut [LayerKv]>,
        logits: Logits,
        lora: Option<&Lora>,
        pass: Pass,
    ) -> Result<Tensor>;
}

/// A model with its weights, of any supported architecture.
pub struct Model {
    cfg: Config,
    net: Box<dyn Architecture>,
}

/// A clone shares the weights (reference-counted), it does not copy them.
impl Clone for Model {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            net: self.net.boxed_clone(),
        }
    }
}

impl Model {
    /// Build from a `VarBuilder` over hub-format tensor names.
    /// A missing tensor or one of the wrong shape is an error that names it.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        Self::load_from(&vb, cfg)
    }

    /// Build from any [`Weights`] source (hub tensor names), the architecture chosen by
    /// `cfg.model_type`.
    pub fn load_from(w: &dyn Weights, cfg: &Config) -> Result<Self> {
        let net: Box<dyn Architecture> = match cfg.arch() {
            Arch::GptBigCode => Box::new(crate::bigcode::BigCode::load(w, cfg)?),
            Arch::Llama | Arch::Qwen2 | Arch::Starcoder2 => {
                Box::new(crate::decoder::Decoder::load(w, cfg)?)
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            net,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The architecture it runs.
    pub fn arch(&self) -> Arch {
        self.cfg.arch()
    }

    /// Quantize every projection, the output projection included, to a GGML block format
    /// (Q8_0, Q4_0, Q4K...). Layers whose input size is not a multiple of the block stay
    /// dense. Returns the number of matrices quantized.
    pub fn quantize(&mut self, dtype: GgmlDType) -> Result<usize> {
        self.net.quantize(dtype)
    }

    /// Every projection's weight (blocks, then the output head): what a decode step reads.
    pub fn projections(&self) -> Vec<&WeightMatrix> {
        self.net.projections()
    }

    pub fn device(&self) -> &Device {
        self.net.device()
    }

    /// A copy with `lora` merged into the weights it touches, as fast as the base and with
    /// the same predictions up to rounding (a quantized weight is quantized again after the
    /// merge); the untouched weights (embeddings, norms, the output head, layers the
    /// adapter leaves alone) are shared with `self`, not copied. Returns it with the bytes of
    /// the weights it made. Slow (the size of those weights, on one thread): the model
    /// thread builds it in the background ([`crate::Generator::set_merge_budget`]).
    pub fn merged(&self, lora: &Lora) -> Result<(Model, usize)> {
        let mut m = self.clone();
        let bytes = m.net.merge(lora, false)?;
        Ok((m, bytes))
    }

    /// The bytes [`Model::merged`] would make for `lora`, computed without merging.
    pub fn merge_cost(&self, lora: &Lora) -> Result<usize> {
        self.clone().net.merge(lora, true)
    }

    pub fn dtype(&self) -> DType {
        self.net.dtype()
    }

    /// Run `ids` (one sequence) after what `cache` holds, appending to it.
    /// Returns f32 logits: `(vocab,)` for [`Logits::Last`], `(len, vocab)` for [`Logits::All`].
    pub fn forward_cached(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        lora: Option<&Lora>,
    ) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(EngineError::Other("forward on an empty sequence".into()));
        }
        let past = cache.len();
        self.check_window(past + ids.len())?;
        let n = self.net.n_blocks();
        if cache.layers.len() != n {
            cache.layers = vec![LayerKv::default(); n];
            cache.tokens.clear();
        }
        let input = Tensor::new(ids, self.device())?.unsqueeze(0)?;
        let out = self.net.run(
            &input,
            past,
            Some(&mut cache.layers),
            logits,
            lora,
            Pass::Inference,
        );
        match out {
            Ok(out) => {
                cache.tokens.extend_from_slice(ids);
                Ok(out.squeeze(0)?)
            }
            Err(e) => {
                // Some layers may have appended: bring them back to the token list.
                cache.truncate(past);
                Err(e)
            }
        }
    }

    /// A batch `(batch, seq)` of u32 ids from position 0, no cache: training and scoring.
    /// Returns f32 logits `(batch, seq, vocab)` (or `(batch, vocab)` for [`Logits::Last`]).
    pub fn forward_batch(
        &self,
        input: &Tensor,
        logits: Logits,
        lora: Option<&Lora>,
        pass: Pass,
    ) -> Result<Tensor> {
        let (_, t) = input.dims2()?;
        self.check_window(t)?;
        self.net.run(input, 0, None, logits, lora, pass)
    }

    fn check_window(&self, len: usize) -> Result<()> {
        if len > self.cfg.n_positions {
            return Err(EngineError::ContextTooLong {
                len,
                window: self.cfg.n_positions,
            });
        }
        Ok(())
    }
}
