//! GPTBigCode (the StarCoder architecture) on candle: weights, forward pass, KV cache.
//!
//! Written here rather than taken from `candle_transformers::models::bigcode` because that
//! module cannot serve this product: its KV cache only grows (no reset, no truncation to the
//! common prefix of two prompts), it returns the last position's logits only (fine-tuning and
//! evaluation need all of them), it refuses f16/bf16, its multi-head path reshapes wrongly,
//! and it has no place for LoRA deltas or a differentiable training graph.
//!
//! One implementation of the engine's model seam ([`crate::model::Architecture`]): the
//! weights are immutable; the KV cache, the adapter and the pass kind come with each call.
//! Knows nothing of tokenizers, prompts or threads.

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};

use crate::config::{Activation, Config};
use crate::error::{EngineError, Result};
use crate::kv::LayerKv;
use crate::layers::{
    causal_mask, linear, linear_lora, matmul_t, softmax, LayerNorm, Linear, Pass, WeightMatrix,
    Weights,
};
use crate::lora::{BlockLora, Lora, Module};
use crate::model::{Architecture, Logits};

#[derive(Clone)]
struct Attention {
    c_attn: Linear,
    c_proj: Linear,
    n_head: usize,
    head_dim: usize,
    multi_query: bool,
    scale: f64,
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        kv: Option<&mut LayerKv>,
        max_len: usize,
        lora: Option<&BlockLora>,
        pass: Pass,
    ) -> Result<Tensor> {
        let (b, t, e) = x.dims3()?;
        let (nh, hd) = (self.n_head, self.head_dim);
        let qkv = linear_lora(&self.c_attn, lora.and_then(|l| l.get(Module::CAttn)), x)?;
        // MQA: [q (E) | k (hd) | v (hd)]; MHA: per head [q | k | v] (as transformers splits).
        let (q, k, v) = if self.multi_query {
            let q = qkv.narrow(2, 0, e)?;
            let k = qkv.narrow(2, e, hd)?.unsqueeze(1)?;
            let v = qkv.narrow(2, e + hd, hd)?.unsqueeze(1)?;
            (q, k, v)
        } else {
            let qkv = qkv.reshape((b, t, nh, 3 * hd))?.transpose(1, 2)?;
            (
                qkv.narrow(3, 0, hd)?,
                qkv.narrow(3, hd, hd)?,
                qkv.narrow(3, 2 * hd, hd)?,
            )
        };
        let (k, v) = match kv {
            Some(cache) => cache.append(&k, &v, max_len)?,
            None => (k, v),
        };
        let kv_len = k.dim(2)?;
        // On the CPU: one fused causal attention (no score tensor, no mask), `q` as
        // `(b, t, heads, head_dim)`.
        if pass == Pass::Inference && x.device().is_cpu() {
            let q4 = if self.multi_query {
                q.reshape((b, t, nh, hd))?
            } else {
                q.transpose(1, 2)?
            };
            if crate::attention::applies(&q4, &k, &v) {
                let out = crate::attention::causal(&q4, &k, &v, self.scale as f32)?;
                let out = out.reshape((b, t, e))?;
                let lora = lora.and_then(|l| l.get(Module::AttnCProj));
                return linear_lora(&self.c_proj, lora, &out);
            }
        }
        // Scores in f32 whatever the weights' dtype (softmax in f32, as transformers does).
        let work = DType::F32;
        let k = k.to_dtype(work)?;
        let out = if self.multi_query {
            // All heads share one K/V head: fold heads into the query length and do one matmul.
            // Scale the queries, not the scores: (t, E) values instead of (t·heads, kv_len).
            let q = (q.to_dtype(work)? * self.scale)?
                .contiguous()?
                .reshape((b, 1, t * nh, hd))?;
            // Contiguous before the transpose: without a cache, `k` is a strided view of
            // `qkv`, which CUDA's matmul refuses (the CPU's accepts it).
            let k_t = k.contiguous()?.t()?;
            let scores = q.matmul(&k_t)?.reshape((b, t, nh, kv_len))?;
            let scores = scores.broadcast_add(&mask.reshape((1, t, 1, kv_len))?)?;
            let w = softmax(&scores, pass)?
                .reshape((b, 1, t * nh, kv_len))?
                .to_dtype(v.dtype())?;
            w.matmul(&v.contiguous()?)?.reshape((b, t, e))?
        } else {
            let q = (q.to_dtype(work)? * self.scale)?.contiguous()?;
            let scores = q.matmul(&k.t()?.contiguous()?)?;
            let scores = scores.broadcast_add(&mask.reshape((1, 1, t, kv_len))?)?;
            let w = softmax(&scores, pass)?.to_dtype(v.dtype())?;
            w.matmul(&v.contiguous()?)?
                .transpose(1, 2)?
                .reshape((b, t, e))?
        };
        linear_lora(
            &self.c_proj,
            lora.and_then(|l| l.get(Module::AttnCProj)),
            &out,
        )
    }
}

#[derive(Clone)]
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_c_proj: Linear,
    activation: Activation,
}

impl Block {
    fn load(w: &dyn Weights, p: &str, cfg: &Config) -> Result<Self> {
        let e = cfg.n_embd;
        let kv_dim = cfg.kv_heads() * cfg.head_dim();
        let attn = Attention {
            c_attn: linear(w, &format!("{p}.attn.c_attn"), e, e + 2 * kv_dim)?,
            c_proj: linear(w, &format!("{p}.attn.c_proj"), e, e)?,
            n_head: cfg.n_head,
            head_dim: cfg.head_dim(),
            multi_query: cfg.multi_query,
            scale: if cfg.scale_attn_weights {
                1.0 / (cfg.head_dim() as f64).sqrt()
            } else {
                1.0
            },
        };
        Ok(Self {
            ln_1: LayerNorm::load(w, &format!("{p}.ln_1"), e, cfg.layer_norm_epsilon)?,
            attn,
            ln_2: LayerNorm::load(w, &format!("{p}.ln_2"), e, cfg.layer_norm_epsilon)?,
            c_fc: linear(w, &format!("{p}.mlp.c_fc"), e, cfg.inner_dim())?,
            mlp_c_proj: linear(w, &format!("{p}.mlp.c_proj"), cfg.inner_dim(), e)?,
            activation: cfg.activation().map_err(EngineError::Other)?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        kv: Option<&mut LayerKv>,
        max_len: usize,
        lora: Option<&BlockLora>,
        pass: Pass,
    ) -> Result<Tensor> {
        let h = self.ln_1.forward(x, pass)?;
        let h = self.attn.forward(&h, mask, kv, max_len, lora, pass)?;
        let x = (x + h)?;
        let h = self.ln_2.forward(&x, pass)?;
        let h = linear_lora(&self.c_fc, lora.and_then(|l| l.get(Module::CFc)), &h)?;
        let h = match self.activation {
            Activation::GeluTanh if crate::fast_gelu::applies(&h) => {
                crate::fast_gelu::gelu_tanh(&h)?
            }
            Activation::GeluTanh => h.gelu()?,
            Activation::GeluErf => h.gelu_erf()?,
            Activation::Relu => h.relu()?,
            // Rejected for GPTBigCode by `Config::validate`; computed right all the same.
            Activation::Silu => h.silu()?,
        };
        let h = linear_lora(
            &self.mlp_c_proj,
            lora.and_then(|l| l.get(Module::MlpCProj)),
            &h,
        )?;
        Ok((x + h)?)
    }
}

/// A GPTBigCode model with its weights.
#[derive(Clone)]
pub(crate) struct BigCode {
    cfg: Config,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// `[vocab, n_embd]`; the same tensor as `wte` when the embeddings are tied (quantized
    /// separately from the embedding table, which stays dense for lookups).
    lm_head: WeightMatrix,
    device: Device,
    dtype: DType,
}

impl BigCode {
    /// Build from any [`Weights`] source (hub tensor names, `transformer.h.0.attn...`).
    /// A missing tensor or one of the wrong shape is an error that names it.
    pub(crate) fn load(w: &dyn Weights, cfg: &Config) -> Result<Self> {
        let wte = w.dense("transformer.wte.weight", &[cfg.vocab_size, cfg.n_embd])?;
        let wpe = w.dense("transformer.wpe.weight", &[cfg.n_positions, cfg.n_embd])?;
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(w, &format!("transformer.h.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::load(w, "transformer.ln_f", cfg.n_embd, cfg.layer_norm_epsilon)?;
        // lm_head is tied to wte and usually absent from the checkpoint.
        let head_shape = [cfg.vocab_size, cfg.n_embd];
        let lm_head = if !cfg.tie_word_embeddings && w.contains("lm_head.weight") {
            w.matmul("lm_head.weight", &head_shape)?.into()
        } else {
            // A quantized source keeps its quantized embedding matrix for the projection.
            match w.matmul("transformer.wte.weight", &head_shape)?.into() {
                WeightMatrix::Dense(_) => WeightMatrix::Dense(wte.clone()),
                q => q,
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            device: wte.device().clone(),
            dtype: wte.dtype(),
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        })
    }
}

impl Architecture for BigCode {
    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Quantize every projection, the tied output projection included, to a GGML block
    /// format (Q8_0, Q4_0, Q4K...). Layers whose input size is not a multiple of the block
    /// stay dense. Returns the number of layers quantized.
    fn quantize(&mut self, dtype: GgmlDType) -> Result<usize> {
        let mut n = 0;
        for b in &mut self.blocks {
            for l in [
                &mut b.attn.c_attn,
                &mut b.attn.c_proj,
                &mut b.c_fc,
                &mut b.mlp_c_proj,
            ] {
                n += usize::from(l.quantize(dtype)?);
            }
        }
        n += usize::from(self.lm_head.quantize(dtype)?);
        Ok(n)
    }

    fn boxed_clone(&self) -> Box<dyn Architecture> {
        Box::new(self.clone())
    }

    fn merge(&mut self, lora: &Lora, dry: bool) -> Result<usize> {
        let mut bytes = 0;
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let Some(l) = lora.block(i) else {
                continue;
            };
            bytes += b.attn.c_attn.merge(l.get(Module::CAttn), dry)?;
            bytes += b.attn.c_proj.merge(l.get(Module::AttnCProj), dry)?;
            bytes += b.c_fc.merge(l.get(Module::CFc), dry)?;
            bytes += b.mlp_c_proj.merge(l.get(Module::MlpCProj), dry)?;
        }
        Ok(bytes)
    }

    fn projections(&self) -> Vec<&WeightMatrix> {
        let mut out: Vec<&WeightMatrix> = self
            .blocks
            .iter()
            .flat_map(|b| {
                [
                    &b.attn.c_attn.w,
                    &b.attn.c_proj.w,
                    &b.c_fc.w,
                    &b.mlp_c_proj.w,
                ]
            })
            .collect();
        out.push(&self.lm_head);
        out
    }

    fn run(
        &self,
        input: &Tensor,
        past: usize,
        mut kv: Option<&mut [LayerKv]>,
        logits: Logits,
        lora: Option<&Lora>,
        pass: Pass,
    ) -> Result<Tensor> {
        let (b, t) = input.dims2()?;
        let flat = input.flatten_all()?;
        let tok = self
            .wte
            .index_select(&flat, 0)?
            .reshape((b, t, self.cfg.n_embd))?;
        let pos = self.wpe.narrow(0, past, t)?.unsqueeze(0)?;
        let mut x = tok.broadcast_add(&pos)?;
        let mask = causal_mask(t, past, &self.device)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_kv = kv.as_deref_mut().map(|layers| &mut layers[i]);
            let block_lora = lora.and_then(|l| l.blocks.get(i));
            x = block.forward(&x, &mask, layer_kv, self.cfg.n_positions, block_lora, pass)?;
        }
        let x = match logits {
            Logits::Last => x.narrow(1, t - 1, 1)?,
            Logits::All => x,
        };
        let x = self.ln_f.forward(&x, pass)?;
        let out = matmul_t(&self.lm_head, &x.contiguous()?)?.to_dtype(DType::F32)?;
        Ok(match logits {
            Logits::Last => out.squeeze(1)?,
            Logits::All => out,
        })
    }
}
