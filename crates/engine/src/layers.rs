//! Building blocks every architecture shares: where weights come from ([`Weights`]), layer
//! norm and RMSNorm, linear layers (dense or quantized; [`WeightMatrix`] picks the kernel),
//! several projections of one input stacked into one product (as loaded, before
//! repacking), their LoRA deltas, embeddings that may stay quantized, rotary positions (with
//! linear scaling), grouped-query attention, softmax and the causal mask (with a sliding
//! window).
//!
//! Knows nothing of any one architecture's tensor names, of tokenizers or of threads.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use crate::error::Result;
pub use crate::matmul::WeightMatrix;

/// How to run the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Fused kernels (softmax, layer norm) where candle has them: fastest, no gradients.
    Inference,
    /// Only ops that record a backward pass: candle's fused softmax and layer norm do not,
    /// which would silently leave upstream LoRA parameters without gradients.
    Differentiable,
}

/// A LoRA delta for one linear layer: `y += scale * (x Aᵀ) Bᵀ`, A `[r, in]`, B `[out, r]`.
#[derive(Clone, Debug)]
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    /// `scale · Bᵀ` `[r, out]` contiguous in f32, once the pair is prepared for inference
    /// on the CPU ([`crate::low_rank::prepare`]; then `scale` is 1 and `b` scaled too).
    pub(crate) bt: Option<Tensor>,
}

impl LoraPair {
    pub fn new(a: Tensor, b: Tensor, scale: f64) -> Self {
        Self {
            a,
            b,
            scale,
            bt: None,
        }
    }
}

/// Where weights come from, by hub tensor name (`transformer.h.0.attn.c_attn.weight`):
/// safetensors or a PyTorch file through a `VarBuilder`, or a GGUF file whose quantized
/// matrices stay quantized.
pub trait Weights {
    /// A dense tensor of the given shape (an error names the tensor if missing or misshapen).
    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// A matrix `[out, in]` for a projection; dense sources return `QMatMul::Tensor`.
    fn matmul(&self, name: &str, shape: &[usize]) -> Result<QMatMul> {
        Ok(QMatMul::Tensor(self.dense(name, shape)?))
    }
    fn contains(&self, name: &str) -> bool;
}

impl Weights for VarBuilder<'_> {
    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.get(shape, name)?)
    }
    fn contains(&self, name: &str) -> bool {
        self.contains_tensor(name)
    }
}

#[derive(Clone)]
pub(crate) struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f64,
}

impl LayerNorm {
    pub(crate) fn load(w: &dyn Weights, prefix: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.dense(&format!("{prefix}.weight"), &[size])?,
            bias: w.dense(&format!("{prefix}.bias"), &[size])?,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match pass {
            Pass::Inference => Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?),
            Pass::Differentiable => {
                let dtype = x.dtype();
                let x = x.to_dtype(DType::F32)?;
                let mean = x.mean_keepdim(D::Minus1)?;
                let centered = x.broadcast_sub(&mean)?;
                let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
                Ok(normed
                    .to_dtype(dtype)?
                    .broadcast_mul(&self.weight)?
                    .broadcast_add(&self.bias)?)
            }
        }
    }
}

/// A linear layer `y = x Wᵀ + b`, W `[out, in]`, dense or quantized ([`WeightMatrix`]
/// holds either, so the forward pass is the same code).
#[derive(Clone)]
pub(crate) struct Linear {
    pub(crate) w: WeightMatrix,
    /// None for the projections of architectures without biases (Llama, Qwen2's o_proj).
    pub(crate) b: Option<Tensor>,
    pub(crate) in_dim: usize,
}

impl Linear {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = matmul_t(&self.w, x)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Quantize the weight in place; layers whose input size is not a multiple of the
    /// format's block stay dense. Returns whether it was quantized.
    pub(crate) fn quantize(&mut self, dtype: GgmlDType) -> Result<bool> {
        if !self.in_dim.is_multiple_of(dtype.block_size()) {
            return Ok(false);
        }
        self.w.quantize(dtype)
    }

    /// Merge `pair` into the weight ([`WeightMatrix::with_low_rank`]). Returns the bytes of
    /// the new weight (0 without a pair); with `dry`, changes nothing and returns the bytes
    /// it would take.
    pub(crate) fn merge(&mut self, pair: Option<&LoraPair>, dry: bool) -> Result<usize> {
        let Some(p) = pair else {
            return Ok(0);
        };
        if !dry {
            self.w = self.w.with_low_rank(&[(0, p)])?;
        }
        Ok(self.w.bytes())
    }
}

/// `x Wᵀ` through [`crate::matmul`], which picks the kernel (few rows, many rows, quantized,
/// training, another device).
pub(crate) fn matmul_t(w: &WeightMatrix, x: &Tensor) -> Result<Tensor> {
    w.forward(x)
}

pub(crate) fn linear(
    w: &dyn Weights,
    prefix: &str,
    in_dim: usize,
    out_dim: usize,
) -> Result<Linear> {
    Ok(Linear {
        w: w.matmul(&format!("{prefix}.weight"), &[out_dim, in_dim])?
            .into(),
        b: Some(w.dense(&format!("{prefix}.bias"), &[out_dim])?),
        in_dim,
    })
}

pub(crate) fn linear_lora(layer: &Linear, lora: Option<&LoraPair>, x: &Tensor) -> Result<Tensor> {
    let y = layer.forward(x)?;
    match lora {
        None => Ok(y),
        Some(l) => add_lora(y, l, x),
    }
}

/// `y + scale · (x Aᵀ) Bᵀ`: in place on a prepared pair at inference
/// ([`crate::low_rank`]), else through tensors (training, other devices).
fn add_lora(y: Tensor, l: &LoraPair, x: &Tensor) -> Result<Tensor> {
    if crate::low_rank::applies(&y, x, l) {
        crate::low_rank::add_in_place(&y, x, l)?;
        return Ok(y);
    }
    let delta = lora_delta(l, x, y.dtype())?;
    Ok((y + delta)?)
}

pub(crate) fn softmax(x: &Tensor, pass: Pass) -> Result<Tensor> {
    Ok(match pass {
        Pass::Inference if crate::softmax::applies(x) => crate::softmax::softmax_last_dim(x)?,
        Pass::Inference => candle_nn::ops::softmax_last_dim(&x.contiguous()?)?,
        Pass::Differentiable => crate::train_ops::softmax_last_dim(x)?,
    })
}

/// Additive mask `(t, past + t)`: 0 where query `i` may see key `j` (`j <= past + i`), -inf
/// elsewhere.
pub(crate) fn causal_mask(t: usize, past: usize, device: &Device) -> Result<Tensor> {
    let total = past + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= past + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (t, total), device)?)
}

/// `(rows, in)` dims of a matrix as a `QMatMul` holds it.
fn qmatmul_dims(w: &QMatMul) -> Vec<usize> {
    match w {
        QMatMul::QTensor(q) => q.shape().dims().to_vec(),
        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims().to_vec(),
    }
}

/// Rows `idx` of a quantized `[rows, in]` matrix, still quantized (rows are whole blocks,
/// so a row is a contiguous run of bytes in any GGML format).
pub(crate) fn quantized_rows(q: &QTensor, idx: &[usize]) -> Result<QTensor> {
    let (rows, cols) = q.shape().dims2()?;
    let data = q.data()?;
    let row_bytes = data.len() / rows.max(1);
    // u64 words: the block types need 2- or 4-byte alignment, which a Vec<u8> need not have.
    let mut words = vec![0u64; (idx.len() * row_bytes).div_ceil(8)];
    // SAFETY: u8 has alignment 1 and any byte pattern is valid; the view covers the buffer.
    let buf =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) };
    for (k, &i) in idx.iter().enumerate() {
        if i >= rows {
            return Err(crate::error::EngineError::Other(format!(
                "row {i} of a matrix of {rows} rows"
            )));
        }
        buf[k * row_bytes..(k + 1) * row_bytes]
            .copy_from_slice(&data[i * row_bytes..(i + 1) * row_bytes]);
    }
    let storage = QStorage::from_data(
        std::borrow::Cow::Borrowed(&buf[..idx.len() * row_bytes]),
        &q.device(),
        q.dtype(),
    )?;
    Ok(QTensor::new(storage, (idx.len(), cols))?)
}

/// A matrix whose rows are `idx` of `w` (dense or quantized): reorders or selects output
/// features without dequantizing.
pub(crate) fn select_rows(w: QMatMul, idx: &[usize]) -> Result<QMatMul> {
    Ok(match w {
        QMatMul::QTensor(q) => QMatMul::QTensor(Arc::new(quantized_rows(&q, idx)?)),
        QMatMul::Tensor(t) => {
            let ids = Tensor::from_vec(
                idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                idx.len(),
                t.device(),
            )?;
            QMatMul::Tensor(t.index_select(&ids, 0)?)
        }
        QMatMul::TensorF16(t) => {
            let ids = Tensor::from_vec(
                idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                idx.len(),
                t.device(),
            )?;
            QMatMul::TensorF16(t.index_select(&ids, 0)?)
        }
    })
}

/// Stack matrices with the same input size along their output rows, keeping them
/// quantized when they share one GGML format; None when their formats differ (llama.cpp's
/// mixed files give `attn_v` more bits than `attn_q`).
fn stack_rows(parts: &[QMatMul]) -> Result<Option<QMatMul>> {
    match parts {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => {
            if parts.iter().all(|p| matches!(p, QMatMul::Tensor(_))) {
                let ts: Vec<&Tensor> = parts
                    .iter()
                    .map(|p| match p {
                        QMatMul::Tensor(t) => t,
                        _ => unreachable!(),
                    })
                    .collect();
                return Ok(Some(QMatMul::Tensor(Tensor::cat(&ts, 0)?)));
            }
            let qs: Vec<&Arc<QTensor>> = parts
                .iter()
                .filter_map(|p| match p {
                    QMatMul::QTensor(q) => Some(q),
                    _ => None,
                })
                .collect();
            if qs.len() != parts.len() || qs.iter().any(|q| q.dtype() != qs[0].dtype()) {
                return Ok(None);
            }
            let cols = qs[0].shape().dims2()?.1;
            let mut words: Vec<u64> = Vec::new();
            let mut bytes = 0;
            let mut rows = 0;
            let datas: Vec<_> = qs
                .iter()
                .map(|q| q.data())
                .collect::<candle_core::Result<_>>()?;
            let total: usize = datas.iter().map(|d| d.len()).sum();
            words.resize(total.div_ceil(8), 0);
            // SAFETY: as in `quantized_rows`.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
            };
            for (q, d) in qs.iter().zip(&datas) {
                if q.shape().dims2()?.1 != cols {
                    return Ok(None);
                }
                buf[bytes..bytes + d.len()].copy_from_slice(d);
                bytes += d.len();
                rows += q.shape().dims2()?.0;
            }
            let storage = QStorage::from_data(
                std::borrow::Cow::Borrowed(&buf[..bytes]),
                &qs[0].device(),
                qs[0].dtype(),
            )?;
            Ok(Some(QMatMul::QTensor(Arc::new(QTensor::new(
                storage,
                (rows, cols),
            )?))))
        }
    }
}

/// A linear layer as loaded, before its weight goes to its kernel's layout
/// ([`WeightMatrix`] repacks q8_0 and q4_0): [`Projections`] stacks these, as the file
/// stores them, into one matrix.
pub(crate) struct LinearSource {
    pub(crate) w: QMatMul,
    pub(crate) b: Option<Tensor>,
    pub(crate) in_dim: usize,
}

impl LinearSource {
    /// `prefix.weight` and, when `bias`, `prefix.bias`.
    pub(crate) fn load(
        w: &dyn Weights,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            w: w.matmul(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
            b: if bias {
                Some(w.dense(&format!("{prefix}.bias"), &[out_dim])?)
            } else {
                None
            },
            in_dim,
        })
    }

    pub(crate) fn into_linear(self) -> Linear {
        Linear {
            w: self.w.into(),
            b: self.b,
            in_dim: self.in_dim,
        }
    }
}

/// Several projections of the same input (q, k, v; gate and up), computed as one product
/// when their weights can be stacked: one pass over the input and one thread dispatch
/// instead of three, which is what a one-token decoding step is bound by. Each part keeps
/// its own LoRA delta.
#[derive(Clone)]
pub(crate) enum Projections {
    Fused { linear: Linear, sizes: Vec<usize> },
    Separate(Vec<Linear>),
}

impl Projections {
    pub(crate) fn new(parts: Vec<LinearSource>) -> Result<Self> {
        let sizes: Vec<usize> = parts.iter().map(|l| qmatmul_dims(&l.w)[0]).collect();
        let weights: Vec<QMatMul> = parts.iter().map(|l| l.w.clone()).collect();
        let Some(w) = stack_rows(&weights)? else {
            return Ok(Self::Separate(
                parts.into_iter().map(LinearSource::into_linear).collect(),
            ));
        };
        let b = if parts.iter().all(|l| l.b.is_none()) {
            None
        } else {
            let bs = parts
                .iter()
                .zip(&sizes)
                .map(|(l, &n)| match &l.b {
                    Some(b) => Ok(b.clone()),
                    None => {
                        let like = parts.iter().find_map(|l| l.b.as_ref()).expect("some bias");
                        Tensor::zeros(n, like.dtype(), like.device())
                    }
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Some(Tensor::cat(&bs, 0)?)
        };
        let in_dim = parts[0].in_dim;
        Ok(Self::Fused {
            linear: LinearSource { w, b, in_dim }.into_linear(),
            sizes,
        })
    }

    /// Each part's output, LoRA deltas added (`lora[i]` for part `i`).
    pub(crate) fn forward(&self, x: &Tensor, lora: &[Option<&LoraPair>]) -> Result<Vec<Tensor>> {
        match self {
            Self::Separate(parts) => parts
                .iter()
                .enumerate()
                .map(|(i, l)| linear_lora(l, lora.get(i).copied().flatten(), x))
                .collect(),
            Self::Fused { linear, sizes } => {
                let y = linear.forward(x)?;
                let last = y.rank() - 1;
                let mut at = 0;
                let mut out = Vec::with_capacity(sizes.len());
                for (i, &n) in sizes.iter().enumerate() {
                    let part = y.narrow(last, at, n)?;
                    at += n;
                    out.push(match lora.get(i).copied().flatten() {
                        Some(l) => add_lora(part, l, x)?,
                        None => part,
                    });
                }
                Ok(out)
            }
        }
    }

    /// Merge each part's pair (`pairs[i]` for part `i`) into the weights, as
    /// [`Linear::merge`]: a fused matrix is rebuilt once with every part's rows.
    pub(crate) fn merge(&mut self, pairs: &[Option<&LoraPair>], dry: bool) -> Result<usize> {
        let pair = |i: usize| pairs.get(i).copied().flatten();
        match self {
            Self::Separate(parts) => parts
                .iter_mut()
                .enumerate()
                .map(|(i, l)| l.merge(pair(i), dry))
                .sum(),
            Self::Fused { linear, sizes } => {
                let mut at = 0;
                let mut deltas = Vec::new();
                for (i, &n) in sizes.iter().enumerate() {
                    if let Some(p) = pair(i) {
                        deltas.push((at, p));
                    }
                    at += n;
                }
                if deltas.is_empty() {
                    return Ok(0);
                }
                if !dry {
                    linear.w = linear.w.with_low_rank(&deltas)?;
                }
                Ok(linear.w.bytes())
            }
        }
    }

    /// The weights it multiplies by: one when fused.
    pub(crate) fn weights(&self) -> Vec<&WeightMatrix> {
        match self {
            Self::Fused { linear, .. } => vec![&linear.w],
            Self::Separate(parts) => parts.iter().map(|l| &l.w).collect(),
        }
    }

    pub(crate) fn quantize(&mut self, dtype: GgmlDType) -> Result<usize> {
        match self {
            Self::Fused { linear, .. } => Ok(usize::from(linear.quantize(dtype)?)),
            Self::Separate(parts) => {
                let mut n = 0;
                for l in parts {
                    n += usize::from(l.quantize(dtype)?);
                }
                Ok(n)
            }
        }
    }
}

/// `scale · (x Aᵀ) Bᵀ` in `dtype`.
fn lora_delta(l: &LoraPair, x: &Tensor, dtype: DType) -> Result<Tensor> {
    let a = l.a.to_dtype(x.dtype())?;
    let b = l.b.to_dtype(x.dtype())?;
    let delta = x.broadcast_matmul(&a.t()?)?.broadcast_matmul(&b.t()?)?;
    let delta = if l.scale == 1.0 {
        delta
    } else {
        (delta * l.scale)?
    };
    Ok(delta.to_dtype(dtype)?)
}

/// RMSNorm as Llama and Qwen2 have it: `x / sqrt(mean(x²) + eps) · weight`, in f32.
#[derive(Clone)]
pub(crate) struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
}

impl RmsNorm {
    pub(crate) fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match pass {
            Pass::Inference => Ok(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                &self.weight,
                self.eps as f32,
            )?),
            Pass::Differentiable => {
                let dtype = x.dtype();
                let x = x.to_dtype(DType::F32)?;
                let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = x.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
                Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
            }
        }
    }
}

/// The normalisation of a block: LayerNorm with bias (StarCoder2) or RMSNorm.
#[derive(Clone)]
pub(crate) enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    pub(crate) fn load(
        w: &dyn Weights,
        prefix: &str,
        size: usize,
        eps: f64,
        rms: bool,
    ) -> Result<Self> {
        Ok(if rms {
            Norm::Rms(RmsNorm {
                weight: w.dense(&format!("{prefix}.weight"), &[size])?,
                eps,
            })
        } else {
            Norm::Layer(LayerNorm::load(w, prefix, size, eps)?)
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match self {
            Norm::Layer(n) => n.forward(x, pass),
            Norm::Rms(n) => n.forward(x, pass),
        }
    }
}

/// The token embedding table: dense, or quantized as a GGUF file stores it (then looked up
/// row by row and dequantized, so a 151,936-row Qwen2 table stays at its file size instead
/// of 545 MB of f32).
#[derive(Clone)]
pub(crate) enum Embedding {
    Dense(Tensor),
    Quantized {
        q: Arc<QTensor>,
        device: Device,
        dtype: DType,
    },
}

impl Embedding {
    /// From a matrix as [`Weights::matmul`] returns it; quantized tables stay quantized on
    /// the CPU (elsewhere they are dequantized once: a row lookup would copy the table).
    pub(crate) fn from_matmul(w: &QMatMul, device: &Device, dtype: DType) -> Result<Self> {
        Ok(match w {
            QMatMul::QTensor(q) if device.is_cpu() => Embedding::Quantized {
                q: q.clone(),
                device: device.clone(),
                dtype,
            },
            QMatMul::QTensor(q) => Embedding::Dense(q.dequantize(device)?.to_dtype(dtype)?),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => Embedding::Dense(t.to_dtype(dtype)?),
        })
    }

    /// `(n, dim)` rows for the ids of a flat u32 tensor.
    pub(crate) fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Embedding::Dense(t) => Ok(t.index_select(ids, 0)?),
            Embedding::Quantized { q, device, dtype } => {
                let idx: Vec<usize> = ids
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|i| i as usize)
                    .collect();
                Ok(quantized_rows(q, &idx)?
                    .dequantize(device)?
                    .to_dtype(*dtype)?)
            }
        }
    }

    /// The table as an output projection (tied embeddings): the same storage.
    pub(crate) fn as_matmul(&self) -> QMatMul {
        match self {
            Embedding::Dense(t) => QMatMul::Tensor(t.clone()),
            Embedding::Quantized { q, .. } => QMatMul::QTensor(q.clone()),
        }
    }

    /// Quantize a dense table (a quantized one stays as it is).
    pub(crate) fn quantize(&mut self, dtype: GgmlDType) -> Result<bool> {
        let Embedding::Dense(t) = self else {
            return Ok(false);
        };
        let (_, cols) = t.dims2()?;
        if !t.device().is_cpu() || !cols.is_multiple_of(dtype.block_size()) {
            return Ok(false);
        }
        let q = QTensor::quantize(&t.to_dtype(DType::F32)?, dtype)?;
        *self = Embedding::Quantized {
            q: Arc::new(q),
            device: t.device().clone(),
            dtype: t.dtype(),
        };
        Ok(true)
    }
}

/// Rotary position embeddings: the frequencies of one head and how they are scaled.
#[derive(Clone)]
pub(crate) struct Rope {
    /// `1 / base^(2i/d) / factor` for `i < d/2`, computed in f32 as transformers does.
    inv_freq: Vec<f32>,
}

impl Rope {
    pub(crate) fn new(head_dim: usize, base: f64, linear_factor: Option<f64>) -> Self {
        let base = base as f32;
        let factor = linear_factor.unwrap_or(1.0) as f32;
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32) / factor)
            .collect();
        Self { inv_freq }
    }

    /// `(cos, sin)`, each `(t, head_dim / 2)`, for positions `past..past + t`.
    pub(crate) fn tables(
        &self,
        past: usize,
        t: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in past..past + t {
            for &f in &self.inv_freq {
                // The angle as transformers rounds it (f32 product), then cos/sin exactly.
                let a = (p as f32 * f) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (t, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (t, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }

    /// Rotate `x` `(b, heads, t, head_dim)` in transformers' layout (halves, not pairs).
    pub(crate) fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor, pass: Pass) -> Result<Tensor> {
        let x = x.contiguous()?;
        Ok(match pass {
            Pass::Inference => candle_nn::rotary_emb::rope(&x, cos, sin)?,
            // candle's fused rope records no backward pass.
            Pass::Differentiable => candle_nn::rotary_emb::rope_slow(&x, cos, sin)?,
        })
    }
}

/// Additive mask `(t, past + t)` for queries at `past..past + t`: 0 where query `i` may see
/// key `j` (`j <= i`, and with a window `i - j < window`, as transformers' sliding window
/// counts), -inf elsewhere.
pub(crate) fn window_mask(
    t: usize,
    past: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let total = past + t;
    let w = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            let q = past + i;
            (0..total).map(move |j| {
                if j <= q && q - j < w {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (t, total), device)?)
}

/// Grouped-query attention: `q` `(b, heads, t, d)` already scaled, `k`, `v`
/// `(b, kv_heads, len, d)`; query head `h` reads K/V head `h / (heads / kv_heads)`, as
/// transformers' `repeat_kv` arranges them. The query heads of one group are folded into
/// the query length, so there is one product per K/V head and no copy of K or V.
/// Returns `(b, t, heads · d)`.
pub(crate) fn gqa_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    pass: Pass,
) -> Result<Tensor> {
    let (b, nh, t, d) = q.dims4()?;
    let (_, nkv, len, _) = k.dims4()?;
    let g = nh / nkv;
    let work = DType::F32;
    let q = q
        .to_dtype(work)?
        .contiguous()?
        .reshape((b, nkv, g * t, d))?;
    let k = k.to_dtype(work)?;
    let scores = q.matmul(&k.contiguous()?.t()?)?;
    let scores = match mask {
        Some(m) => scores
            .reshape((b, nkv, g, t, len))?
            .broadcast_add(&m.reshape((1, 1, 1, t, len))?)?
            .reshape((b, nkv, g * t, len))?,
        None => scores,
    };
    let w = softmax(&scores, pass)?.to_dtype(v.dtype())?;
    Ok(w.matmul(&v.contiguous()?)?
        .reshape((b, nh, t, d))?
        .transpose(1, 2)?
        .reshape((b, t, nh * d))?)
}
