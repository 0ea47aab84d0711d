//! A linear layer's weight and `x Wᵀ` with it, whatever its format: the one place that
//! decides which kernel a product runs on (few rows or many, dense or quantized, inference
//! or training, CPU or another device).
//!
//! Knows no architecture (any `x Wᵀ` with W `(out, in)`), no tensor names, no threads.
//!
//! On the CPU in f32 and without gradients: 1 to [`skinny::MAX_ROWS`] rows through
//! [`skinny`] (W read once, not copied), more through [`sgemm`]; q8_0 and q4_0 through
//! [`qmatmul`] (repacked once, when the weight is made); all at [`cpu::level`]. Training
//! (`x` tracks gradients, W frozen) goes to [`train_ops`]; other devices and GGML formats to
//! candle.
//!
//! [`skinny::MAX_ROWS`]: crate::skinny::MAX_ROWS
//! [`skinny`]: crate::skinny
//! [`sgemm`]: crate::sgemm
//! [`qmatmul`]: crate::qmatmul
//! [`cpu::level`]: crate::cpu::level
//! [`train_ops`]: crate::train_ops

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

use crate::error::Result;
use crate::qmatmul::{PackedQ, QFormat};

/// The weight `W (out, in)` of `x Wᵀ`.
#[derive(Clone, Debug)]
pub enum WeightMatrix {
    /// Dense, in the model's dtype.
    Dense(Tensor),
    /// q8_0 or q4_0 on the CPU, repacked for this CPU's kernels.
    Packed(Arc<PackedQ>),
    /// Any other quantized format or device: candle's product.
    Candle(QMatMul),
}

impl From<QMatMul> for WeightMatrix {
    /// Dense matrices stay tensors; q8_0 and q4_0 on the CPU are repacked at
    /// [`crate::cpu::level`]; anything else stays candle's.
    fn from(q: QMatMul) -> Self {
        match q {
            QMatMul::Tensor(t) => Self::Dense(t),
            QMatMul::QTensor(qt) => match pack(&qt) {
                Some(p) => Self::Packed(Arc::new(p)),
                None => Self::Candle(QMatMul::QTensor(qt)),
            },
            other => Self::Candle(other),
        }
    }
}

fn pack(qt: &QTensor) -> Option<PackedQ> {
    let format = QFormat::from_ggml(qt.dtype())?;
    if !qt.device().is_cpu() {
        return None;
    }
    let (n, k) = qt.shape().dims2().ok()?;
    let data = qt.data().ok()?;
    match PackedQ::from_ggml(format, n, k, &data, crate::cpu::level()) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("{format:?} {n}x{k} stays on candle's kernels: {e}");
            None
        }
    }
}

impl WeightMatrix {
    /// `(out, in)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        Ok(match self {
            Self::Dense(t) => t.dims2()?,
            Self::Packed(p) => p.dims(),
            Self::Candle(QMatMul::QTensor(q)) => q.shape().dims2()?,
            Self::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims2()?,
        })
    }

    /// Bytes a product reads from the weight.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Self::Packed(p) => p.bytes(),
            Self::Candle(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Self::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                t.elem_count() * t.dtype().size_in_bytes()
            }
        }
    }

    /// Calls `f` with the memory a CPU product reads from this weight, seen as 32-bit words
    /// (read only, by the decode bandwidth probe: integers, so that no bit pattern costs a
    /// floating-point assist): a dense f32 tensor's data, a packed matrix's values and
    /// scales. `false`, and `f` not called, for any other storage (candle's own formats,
    /// another device).
    pub fn read_words(&self, f: &mut dyn FnMut(&[u32])) -> bool {
        match self {
            Self::Dense(t) if t.dtype() == DType::F32 && t.device().is_cpu() => {
                let (storage, layout) = t.storage_and_layout();
                let (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) =
                    (&*storage, layout.contiguous_offsets())
                else {
                    return false;
                };
                // SAFETY: every f32 is a valid u32 bit pattern, with the same alignment.
                let (_, words, _) = unsafe { v[a..b].align_to::<u32>() };
                f(words);
                true
            }
            Self::Packed(p) => {
                p.read_words(f);
                true
            }
            _ => false,
        }
    }

    /// The format's name: the tensor's dtype or the GGML block type (`f32`, `q8_0`, ...).
    pub fn kind(&self) -> String {
        match self {
            Self::Dense(t) => format!("{:?}", t.dtype()).to_lowercase(),
            Self::Packed(p) => format!("{:?}", p.format().ggml()).to_lowercase(),
            Self::Candle(QMatMul::QTensor(q)) => format!("{:?}", q.dtype()).to_lowercase(),
            Self::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => {
                format!("{:?}", t.dtype()).to_lowercase()
            }
        }
    }

    /// The dense tensor, when the weight is dense.
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            Self::Dense(t) => Some(t),
            _ => None,
        }
    }

    /// Quantize a dense weight to a GGML block format (q8_0 and q4_0 into this CPU's
    /// kernels' layout). Returns whether it was quantized: already quantized weights and
    /// rows that are not whole blocks stay as they are.
    pub fn quantize(&mut self, dtype: GgmlDType) -> Result<bool> {
        let Self::Dense(w) = self else {
            return Ok(false);
        };
        if !w.dim(1)?.is_multiple_of(dtype.block_size()) {
            return Ok(false);
        }
        let q = QTensor::quantize(&w.to_dtype(DType::F32)?, dtype)?;
        *self = QMatMul::from_qtensor(q)?.into();
        Ok(true)
    }

    /// `W + Σ scale · B·A`, each pair's rows added at its offset (`(offset, pair)`: B
    /// `[rows, r]` adds to rows `offset..offset + rows`), in W's own format: dense in its
    /// dtype, quantized again to its GGML format (then repacked as at load). The merged
    /// copy of an adapter ([`crate::Model::merged`]): computed in f32 on one thread,
    /// row by row (an axpy per rank, which the compiler vectorizes), so a merge running
    /// beside typing takes one core, not candle's pool.
    pub fn with_low_rank(&self, deltas: &[(usize, &crate::layers::LoraPair)]) -> Result<Self> {
        let (n, k) = self.dims()?;
        let mut w = self.to_f32()?;
        for &(offset, pair) in deltas {
            let cpu = |t: &Tensor| -> Result<(Vec<f32>, usize, usize)> {
                let (rows, cols) = t.dims2()?;
                let v = t
                    .to_device(&candle_core::Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                Ok((v, rows, cols))
            };
            let (a, r, ka) = cpu(&pair.a)?;
            let (b, rows, rb) = cpu(&pair.b)?;
            if ka != k || rb != r || offset + rows > n {
                return Err(crate::error::EngineError::Other(format!(
                    "a LoRA pair A {r}x{ka}, B {rows}x{rb} at row {offset} does not fit a \
                     {n}x{k} weight"
                )));
            }
            let scale = pair.scale as f32;
            for o in 0..rows {
                let row = &mut w[(offset + o) * k..(offset + o + 1) * k];
                for j in 0..r {
                    let c = b[o * r + j] * scale;
                    if c != 0.0 {
                        for (x, &y) in row.iter_mut().zip(&a[j * k..(j + 1) * k]) {
                            *x += c * y;
                        }
                    }
                }
            }
        }
        self.same_format_from_f32(w, n, k)
    }

    /// The weight's values in f32, row-major `(out, in)`.
    fn to_f32(&self) -> Result<Vec<f32>> {
        let dense = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_device(&candle_core::Device::Cpu)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        match self {
            Self::Dense(t) | Self::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => dense(t),
            Self::Packed(p) => Ok(p.dequantize()),
            Self::Candle(QMatMul::QTensor(q)) => dense(&q.dequantize(&candle_core::Device::Cpu)?),
        }
    }

    /// A weight of the same format, device and layout as `self` holding `w` `(n, k)`.
    fn same_format_from_f32(&self, w: Vec<f32>, n: usize, k: usize) -> Result<Self> {
        let like = |w: Vec<f32>, t: &Tensor| -> Result<Tensor> {
            Ok(Tensor::from_vec(w, (n, k), t.device())?.to_dtype(t.dtype())?)
        };
        Ok(match self {
            Self::Dense(t) => Self::Dense(like(w, t)?),
            Self::Candle(QMatMul::Tensor(t)) => Self::Candle(QMatMul::Tensor(like(w, t)?)),
            Self::Candle(QMatMul::TensorF16(t)) => Self::Candle(QMatMul::TensorF16(like(w, t)?)),
            Self::Packed(p) => Self::Packed(Arc::new(
                PackedQ::quantize(p.format(), &w, n, k, p.level())
                    .map_err(crate::error::EngineError::Other)?,
            )),
            Self::Candle(QMatMul::QTensor(q)) => {
                let t = Tensor::from_vec(w, (n, k), &q.device())?;
                QMatMul::from_qtensor(QTensor::quantize(&t, q.dtype())?)?.into()
            }
        })
    }

    /// `x (.., in) · Wᵀ` → `(.., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(w) => dense(w, x),
            Self::Packed(p) => {
                let dtype = x.dtype();
                let y = x
                    .to_dtype(DType::F32)?
                    .contiguous()?
                    .apply_op1_no_bwd(&PackedOp(p.clone()))?;
                Ok(y.to_dtype(dtype)?)
            }
            Self::Candle(q) => Ok(x.apply(q)?),
        }
    }
}

fn dense(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    let cpu_f32 = x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && w.rank() == 2
        && x.rank() >= 1;
    if cpu_f32 && !x.track_op() && !w.track_op() {
        if crate::skinny::applies(x, w) {
            return Ok(crate::skinny::matmul_t(x, w)?);
        }
        return Ok(x
            .contiguous()?
            .apply_op2_no_bwd(&w.contiguous()?, &SgemmOp)?);
    }
    if x.track_op() && !w.track_op() {
        return Ok(crate::train_ops::matmul_t_frozen(x, w)?);
    }
    Ok(x.apply(&QMatMul::Tensor(w.clone()))?)
}

/// The output shape: `x`'s with its last dimension `k` replaced by `n`.
fn out_shape(l: &Layout, k: usize, n: usize) -> candle_core::Result<(usize, Shape)> {
    let dims = l.shape().dims();
    match dims.last() {
        Some(&last) if last == k && k > 0 => {
            let mut out = dims.to_vec();
            *out.last_mut().expect("non-empty") = n;
            Ok((l.shape().elem_count() / k, Shape::from(out)))
        }
        _ => candle_core::bail!("x {dims:?} does not end in {k} columns"),
    }
}

/// `x Wᵀ` with W dense f32, many rows: [`crate::sgemm`].
struct SgemmOp;

impl CustomOp2 for SgemmOp {
    fn name(&self) -> &'static str {
        "sgemm-matmul-t"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (Some((xa, xb)), Some((wa, wb))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            candle_core::bail!("sgemm needs contiguous inputs");
        };
        let (n, k) = wl.shape().dims2()?;
        let (rows, shape) = out_shape(xl, k, n)?;
        let x = &xs.as_slice::<f32>()?[xa..xb];
        let w = &ws.as_slice::<f32>()?[wa..wb];
        let y = crate::sgemm::matmul_t(x, rows, w, n, k, crate::cpu::level());
        Ok((CpuStorage::F32(y), shape))
    }
}

/// `x Wᵀ` with W q8_0/q4_0: [`crate::qmatmul`].
struct PackedOp(Arc<PackedQ>);

impl CustomOp1 for PackedOp {
    fn name(&self) -> &'static str {
        "qmatmul-t"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("quantized matmul needs a contiguous input");
        };
        let (n, k) = self.0.dims();
        let (rows, shape) = out_shape(l, k, n)?;
        let y = self.0.matmul_t(&s.as_slice::<f32>()?[a..b], rows);
        Ok((CpuStorage::F32(y), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn every_path_equals_candles_product() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (40, 64), &dev).unwrap();
        for rows in [1, 3, 8, 9, 40] {
            let x = Tensor::randn(0f32, 1.0, (2, rows, 64), &dev).unwrap();
            let want = x.apply(&QMatMul::Tensor(w.clone())).unwrap();
            let got = WeightMatrix::Dense(w.clone()).forward(&x).unwrap();
            assert_eq!(got.dims(), &[2, rows, 40]);
            let diff = crate::testkit::max_abs_diff(&got, &want).unwrap();
            assert!(diff < 1e-4, "dense, {rows} rows: {diff}");
            for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::Q4K] {
                let mut q = WeightMatrix::Dense(w.clone());
                // q4k needs rows of 256 values: this one stays dense.
                assert_eq!(q.quantize(dtype).unwrap(), dtype != GgmlDType::Q4K);
                if dtype == GgmlDType::Q4K {
                    assert!(q.dense().is_some());
                    continue;
                }
                let candle = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap();
                assert!(matches!(q, WeightMatrix::Packed(_)));
                let want = x.apply(&candle).unwrap();
                let got = q.forward(&x).unwrap();
                let scale = crate::testkit::abs_max(&want).unwrap();
                let diff = crate::testkit::max_abs_diff(&got, &want).unwrap();
                assert!(diff < 1e-2 * scale, "{dtype:?}, {rows} rows: {diff}");
            }
        }
    }

    #[test]
    fn a_product_that_trains_keeps_its_gradient() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (6, 8), &dev).unwrap();
        let x = candle_core::Var::randn(0f32, 1.0, (12, 8), &dev).unwrap();
        let y = WeightMatrix::Dense(w).forward(x.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(x.as_tensor()).is_some());
    }

    #[test]
    fn refuses_a_mismatched_input() {
        let dev = Device::Cpu;
        let w = WeightMatrix::Dense(Tensor::zeros((4, 32), DType::F32, &dev).unwrap());
        let x = Tensor::zeros((20, 16), DType::F32, &dev).unwrap();
        assert!(w.forward(&x).is_err());
        let mut q = w.clone();
        q.quantize(GgmlDType::Q8_0).unwrap();
        assert!(q.forward(&x).is_err());
    }
}
