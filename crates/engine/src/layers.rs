//! Building blocks every architecture shares: where weights come from ([`Weights`]), layer
//! norm, linear layers (dense or quantized, with the CPU's few-row kernel and the training
//! path's frozen-weight product) and their LoRA deltas, softmax and the causal mask.
//!
//! Knows nothing of any one architecture's tensor names, of tokenizers or of threads.

use candle_core::quantized::{GgmlDType, QMatMul};
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
pub(crate) struct Linear {
    pub(crate) w: WeightMatrix,
    pub(crate) b: Tensor,
    pub(crate) in_dim: usize,
}

impl Linear {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(matmul_t(&self.w, x)?.broadcast_add(&self.b)?)
    }

    /// Quantize the weight in place; layers whose input size is not a multiple of the
    /// format's block stay dense. Returns whether it was quantized.
    pub(crate) fn quantize(&mut self, dtype: GgmlDType) -> Result<bool> {
        if !self.in_dim.is_multiple_of(dtype.block_size()) {
            return Ok(false);
        }
        self.w.quantize(dtype)
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
        b: w.dense(&format!("{prefix}.bias"), &[out_dim])?,
        in_dim,
    })
}

pub(crate) fn linear_lora(layer: &Linear, lora: Option<&LoraPair>, x: &Tensor) -> Result<Tensor> {
    let y = layer.forward(x)?;
    match lora {
        None => Ok(y),
        Some(l) => {
            let dtype = y.dtype();
            let a = l.a.to_dtype(x.dtype())?;
            let b = l.b.to_dtype(x.dtype())?;
            let delta = x.broadcast_matmul(&a.t()?)?.broadcast_matmul(&b.t()?)?;
            Ok((y + (delta * l.scale)?.to_dtype(dtype)?)?)
        }
    }
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
