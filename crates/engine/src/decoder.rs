//! The pre-norm rotary decoder that Llama (DeepSeek-Coder, CodeLlama), Qwen2 (Qwen2.5-Coder)
//! and StarCoder2 share, as one implementation of the model seam
//! ([`crate::model::Architecture`]). What differs between them is small and comes from each
//! family's file ([`crate::llama`], [`crate::qwen2`], [`crate::starcoder2`]) and the config:
//! RMSNorm or LayerNorm with bias, SwiGLU or GELU MLP, which projections have biases, a
//! sliding window, RoPE's base and linear scaling, tied or untied embeddings.
//!
//! Block `i` (hub names under `model.layers.i`):
//! `x += o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))`, `n1 = norm1(x)`;
//! `x += mlp(norm2(x))`. q/k/v (and SwiGLU's gate/up) run as one product when their weights
//! stack ([`Projections`]); attention is grouped-query without copying K/V: on the CPU
//! the fused causal kernel ([`crate::attention`]) where no sliding window hides a key the
//! causal mask would show, [`gqa_attention`] elsewhere (training, other devices, a prefill
//! past the window).
//!
//! Knows nothing of tokenizers, prompts or threads.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{DType, Device, Tensor};

use crate::config::{Activation, Arch, Config, RopeScaling};
use crate::error::{EngineError, Result};
use crate::kv::LayerKv;
use crate::layers::{
    gqa_attention, linear_lora, matmul_t, window_mask, Embedding, Linear, LinearSource, Norm, Pass,
    Projections, Rope, WeightMatrix, Weights,
};
use crate::lora::{BlockLora, Lora, Module};
use crate::model::{Architecture, Logits};

/// What a family's file says about its blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Family {
    /// RMSNorm (weight only) rather than LayerNorm with bias.
    pub(crate) rms_norm: bool,
    /// SwiGLU (`down(silu(gate(x)) · up(x))`) rather than `c_proj(act(c_fc(x)))`.
    pub(crate) swiglu: bool,
}

impl Family {
    fn of(arch: Arch) -> Result<Self> {
        match arch {
            Arch::Llama => Ok(crate::llama::FAMILY),
            Arch::Qwen2 => Ok(crate::qwen2::FAMILY),
            Arch::Starcoder2 => Ok(crate::starcoder2::FAMILY),
            Arch::GptBigCode => Err(EngineError::Other(
                "gpt_bigcode is not a rotary decoder".into(),
            )),
        }
    }
}

#[derive(Clone)]
struct Attention {
    qkv: Projections,
    o_proj: Linear,
    n_head: usize,
    n_kv: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        window: Option<usize>,
        kv: Option<&mut LayerKv>,
        max_len: usize,
        lora: Option<&BlockLora>,
        pass: Pass,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.n_head, self.n_kv, self.head_dim);
        let l = |m: Module| lora.and_then(|l| l.get(m));
        let qkv = self
            .qkv
            .forward(x, &[l(Module::QProj), l(Module::KProj), l(Module::VProj)])?;
        let heads = |y: &Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?)
        };
        let (cos, sin) = rope;
        let q = Rope::apply(&heads(&qkv[0], nh)?, cos, sin, pass)?;
        let k = Rope::apply(&heads(&qkv[1], nkv)?, cos, sin, pass)?;
        let v = heads(&qkv[2], nkv)?;
        let (k, v) = match kv {
            Some(cache) => cache.append(&k, &v, max_len)?,
            None => (k, v),
        };
        // A one-token step past the window reads the last `window` keys only (the mask
        // would hide the others; there is no mask for one query).
        let len = k.dim(2)?;
        let (k, v) = match window {
            Some(w) if mask.is_none() && len > w => {
                (k.narrow(2, len - w, w)?, v.narrow(2, len - w, w)?)
            }
            _ => (k, v),
        };
        // On the CPU: one fused causal attention (no score tensor, no mask), grouped-query
        // as it is, when the window hides no key the causal mask would show.
        let len = k.dim(2)?;
        if pass == Pass::Inference && x.device().is_cpu() && window.is_none_or(|w| len <= w) {
            let q4 = q.transpose(1, 2)?;
            if crate::attention::applies(&q4, &k, &v) {
                let out = crate::attention::causal(&q4, &k, &v, self.scale as f32)?;
                let out = out.reshape((b, t, nh * hd))?;
                return linear_lora(&self.o_proj, l(Module::OProj), &out);
            }
        }
        let q = (q * self.scale)?;
        let out = gqa_attention(&q, &k, &v, mask, pass)?;
        linear_lora(&self.o_proj, l(Module::OProj), &out)
    }
}

#[derive(Clone)]
enum Mlp {
    SwiGlu {
        gate_up: Projections,
        down: Linear,
    },
    Plain {
        c_fc: Linear,
        c_proj: Linear,
        act: Activation,
    },
}

impl Mlp {
    fn forward(&self, x: &Tensor, lora: Option<&BlockLora>) -> Result<Tensor> {
        let l = |m: Module| lora.and_then(|l| l.get(m));
        match self {
            Mlp::SwiGlu { gate_up, down } => {
                let gu = gate_up.forward(x, &[l(Module::GateProj), l(Module::UpProj)])?;
                let h = (gu[0].silu()? * &gu[1])?;
                linear_lora(down, l(Module::DownProj), &h)
            }
            Mlp::Plain { c_fc, c_proj, act } => {
                let h = linear_lora(c_fc, l(Module::CFc), x)?;
                let h = match act {
                    Activation::GeluTanh if crate::fast_gelu::applies(&h) => {
                        crate::fast_gelu::gelu_tanh(&h)?
                    }
                    Activation::GeluTanh => h.gelu()?,
                    Activation::GeluErf => h.gelu_erf()?,
                    Activation::Relu => h.relu()?,
                    Activation::Silu => h.silu()?,
                };
                linear_lora(c_proj, l(Module::MlpCProj), &h)
            }
        }
    }

    fn quantize(&mut self, dtype: GgmlDType) -> Result<usize> {
        Ok(match self {
            Mlp::SwiGlu { gate_up, down } => {
                gate_up.quantize(dtype)? + usize::from(down.quantize(dtype)?)
            }
            Mlp::Plain { c_fc, c_proj, .. } => {
                usize::from(c_fc.quantize(dtype)?) + usize::from(c_proj.quantize(dtype)?)
            }
        })
    }
}

#[derive(Clone)]
struct Block {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    mlp: Mlp,
}

impl Block {
    fn load(w: &dyn Weights, p: &str, cfg: &Config, family: Family) -> Result<Self> {
        let e = cfg.n_embd;
        let hd = cfg.head_dim();
        let (q_out, kv_out) = (cfg.n_head * hd, cfg.kv_heads() * hd);
        let eps = cfg.layer_norm_epsilon;
        let lin = |name: &str, i: usize, o: usize, bias: bool| {
            LinearSource::load(w, &format!("{p}.{name}"), i, o, bias)
        };
        let qb = cfg.qkv_bias();
        let qkv = Projections::new(vec![
            lin("self_attn.q_proj", e, q_out, qb)?,
            lin("self_attn.k_proj", e, kv_out, qb)?,
            lin("self_attn.v_proj", e, kv_out, qb)?,
        ])?;
        let attn = Attention {
            qkv,
            o_proj: lin("self_attn.o_proj", q_out, e, cfg.o_bias())?.into_linear(),
            n_head: cfg.n_head,
            n_kv: cfg.kv_heads(),
            head_dim: hd,
            scale: 1.0 / (hd as f64).sqrt(),
        };
        let inner = cfg.inner_dim();
        let mb = cfg.mlp_bias();
        let mlp = if family.swiglu {
            Mlp::SwiGlu {
                gate_up: Projections::new(vec![
                    lin("mlp.gate_proj", e, inner, mb)?,
                    lin("mlp.up_proj", e, inner, mb)?,
                ])?,
                down: lin("mlp.down_proj", inner, e, mb)?.into_linear(),
            }
        } else {
            Mlp::Plain {
                c_fc: lin("mlp.c_fc", e, inner, mb)?.into_linear(),
                c_proj: lin("mlp.c_proj", inner, e, mb)?.into_linear(),
                act: cfg.activation().map_err(EngineError::Other)?,
            }
        };
        Ok(Self {
            norm1: Norm::load(w, &format!("{p}.input_layernorm"), e, eps, family.rms_norm)?,
            attn,
            norm2: Norm::load(
                w,
                &format!("{p}.post_attention_layernorm"),
                e,
                eps,
                family.rms_norm,
            )?,
            mlp,
        })
    }
}

/// A rotary decoder (Llama, Qwen2, StarCoder2) with its weights.
#[derive(Clone)]
pub(crate) struct Decoder {
    cfg: Config,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Norm,
    /// `[vocab, n_embd]`; the embedding table's own storage when tied and dense (a quantized
    /// table is repacked for the product: the lookup reads the file's blocks, the head its
    /// kernels' tiles).
    lm_head: WeightMatrix,
    tied: bool,
    rope: Rope,
    window: Option<usize>,
    device: Device,
    dtype: DType,
}

impl Decoder {
    /// Build from hub tensor names (`model.embed_tokens.weight`, `model.layers.0...`).
    pub(crate) fn load(w: &dyn Weights, cfg: &Config) -> Result<Self> {
        let family = Family::of(cfg.arch())?;
        let e = cfg.n_embd;
        let table = w.matmul("model.embed_tokens.weight", &[cfg.vocab_size, e])?;
        let (device, dtype) = match &table {
            QMatMul::QTensor(q) => (q.device(), DType::F32),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => (t.device().clone(), t.dtype()),
        };
        let embed = Embedding::from_matmul(&table, &device, dtype)?;
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(w, &format!("model.layers.{i}"), cfg, family))
            .collect::<Result<Vec<_>>>()?;
        let norm = Norm::load(w, "model.norm", e, cfg.layer_norm_epsilon, family.rms_norm)?;
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        if !cfg.tie_word_embeddings && tied {
            return Err(EngineError::Other(
                "tie_word_embeddings is false but the checkpoint has no lm_head.weight".into(),
            ));
        }
        let lm_head = if tied {
            embed.as_matmul().into()
        } else {
            w.matmul("lm_head.weight", &[cfg.vocab_size, e])?.into()
        };
        let linear = cfg
            .rope_scaling_kind()
            .map_err(EngineError::Other)?
            .map(|RopeScaling::Linear { factor }| factor);
        Ok(Self {
            rope: Rope::new(cfg.head_dim(), cfg.rope_base(), linear),
            window: cfg.window(),
            cfg: cfg.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            tied,
            device,
            dtype,
        })
    }
}

impl Architecture for Decoder {
    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Every projection, the embedding table (as llama.cpp's quantized files have it: a
    /// 151,936-row Qwen2 table is 545 MB in f32, 145 MB in q8_0) and the output head.
    fn quantize(&mut self, dtype: GgmlDType) -> Result<usize> {
        let mut n = 0;
        for b in &mut self.blocks {
            n += b.attn.qkv.quantize(dtype)?;
            n += usize::from(b.attn.o_proj.quantize(dtype)?);
            n += b.mlp.quantize(dtype)?;
        }
        let embed_quantized = self.embed.quantize(dtype)?;
        n += usize::from(embed_quantized);
        if self.tied && embed_quantized {
            self.lm_head = self.embed.as_matmul().into();
        } else {
            n += usize::from(self.lm_head.quantize(dtype)?);
        }
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
            let g = |m: Module| l.get(m);
            bytes += b
                .attn
                .qkv
                .merge(&[g(Module::QProj), g(Module::KProj), g(Module::VProj)], dry)?;
            bytes += b.attn.o_proj.merge(g(Module::OProj), dry)?;
            bytes += match &mut b.mlp {
                Mlp::SwiGlu { gate_up, down } => {
                    gate_up.merge(&[g(Module::GateProj), g(Module::UpProj)], dry)?
                        + down.merge(g(Module::DownProj), dry)?
                }
                Mlp::Plain { c_fc, c_proj, .. } => {
                    c_fc.merge(g(Module::CFc), dry)? + c_proj.merge(g(Module::MlpCProj), dry)?
                }
            };
        }
        Ok(bytes)
    }

    fn projections(&self) -> Vec<&WeightMatrix> {
        let mut out = Vec::new();
        for b in &self.blocks {
            out.extend(b.attn.qkv.weights());
            out.push(&b.attn.o_proj.w);
            match &b.mlp {
                Mlp::SwiGlu { gate_up, down } => {
                    out.extend(gate_up.weights());
                    out.push(&down.w);
                }
                Mlp::Plain { c_fc, c_proj, .. } => {
                    out.push(&c_fc.w);
                    out.push(&c_proj.w);
                }
            }
        }
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
        let mut x = self
            .embed
            .lookup(&input.flatten_all()?)?
            .reshape((b, t, self.cfg.n_embd))?;
        let rope = self.rope.tables(past, t, &self.device, x.dtype())?;
        let mask = if t > 1 {
            Some(window_mask(t, past, self.window, &self.device)?)
        } else {
            None
        };
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_kv = kv.as_deref_mut().map(|layers| &mut layers[i]);
            let block_lora = lora.and_then(|l| l.block(i));
            let h = block.norm1.forward(&x, pass)?;
            let h = block.attn.forward(
                &h,
                &rope,
                mask.as_ref(),
                self.window,
                layer_kv,
                self.cfg.n_positions,
                block_lora,
                pass,
            )?;
            x = (x + h)?;
            let h = block.norm2.forward(&x, pass)?;
            let h = block.mlp.forward(&h, block_lora)?;
            x = (x + h)?;
        }
        let x = match logits {
            Logits::Last => x.narrow(1, t - 1, 1)?,
            Logits::All => x,
        };
        let x = self.norm.forward(&x, pass)?;
        let out = matmul_t(&self.lm_head, &x.contiguous()?)?.to_dtype(DType::F32)?;
        Ok(match logits {
            Logits::Last => out.squeeze(1)?,
            Logits::All => out,
        })
    }
}
