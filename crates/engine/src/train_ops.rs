//! CPU kernels for fine-tuning, each with its backward pass: softmax over the last
//! dimension (attention), per-position cross-entropy (the loss over the vocabulary), and
//! `x Wᵀ` for a frozen base weight `W`.
//!
//! Why the frozen matmul: candle's backward pass of a matmul computes the gradient of both
//! operands whether or not they need one. For every base linear layer that is a full
//! weight-gradient matmul per step (a third of a step's matmul work) and, because the layer
//! broadcasts `W` over the batch, a gradient tensor of `batch × W` kept until the backward
//! pass ends: fine-tuning tiny_starcoder_py's shape at batch 4 ran out of 24 GB.
//!
//! Why our own: candle's fused softmax records no backward pass (`apply_op1_no_bwd`, see the
//! field notes), so training composed softmax and log-softmax from five or six element-wise
//! ops. Each is a full pass over the biggest tensors of a step (attention scores of
//! `batch × heads × T × T`, logits of `batch × T × vocab`), each result is kept for the
//! backward pass, and the backward pass of the chain makes as many again. Fused, the forward
//! pass keeps its input and output only and the backward pass is one kernel.
//!
//! CPU and f32 only ([`applies`]); elsewhere the functions fall back to the composed ops
//! (GPU memory is not the constraint, and candle's CUDA kernels are not ours to fuse).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape};
use candle_core::{Storage, Tensor, D};
use rayon::prelude::*;

/// Whether the fused kernels apply to `x`: on the CPU, in f32.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !applies(x) {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    x.contiguous()?.apply_op1(Softmax)
}

/// Negative log-likelihood of `targets` (`[N]`, u32 or i64) under `logits` (`[N, V]`), per
/// row: `[N]`. Differentiable with respect to the logits.
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if !applies(logits) {
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        return logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg();
    }
    let (n, _) = logits.dims2()?;
    if targets.dims1()? != n {
        candle_core::bail!(
            "cross entropy: {n} rows of logits but {:?} targets",
            targets.shape()
        );
    }
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropy)
}

/// `x Wᵀ` (`x` `[..., in]`, `W` `[out, in]`), differentiable in `x` only. Where it does not
/// apply (not CPU f32, or `x` needs no gradient) it is candle's matmul.
pub fn matmul_t_frozen(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !(applies(x) && applies(w) && x.track_op()) {
        return x.broadcast_matmul(&w.t()?);
    }
    x.contiguous()?
        .apply_op1(FrozenMatmulT { w: w.contiguous()? })
}

struct FrozenMatmulT {
    /// `[out, in]`, contiguous.
    w: Tensor,
}

impl CustomOp1 for FrozenMatmulT {
    fn name(&self) -> &'static str {
        "matmul-t-frozen-weight"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let k = row_len(l)?;
        if !l.is_contiguous() {
            candle_core::bail!("frozen matmul needs a contiguous input");
        }
        let m = l.shape().elem_count() / k;
        let (n, wk) = self.w.dims2()?;
        if wk != k {
            candle_core::bail!("frozen matmul: input rows of {k} against a weight of {n}x{wk}");
        }
        let (ws, wl) = self.w.storage_and_layout();
        let Storage::Cpu(w) = &*ws else {
            candle_core::bail!("frozen matmul: the weight is not on the CPU");
        };
        // Candle's own CPU matmul (its gemm dispatch), on x as [m, k] and a transposed view
        // of W as [k, n].
        let x = Layout::contiguous_with_offset((m, k), l.start_offset());
        let y = s.matmul(w, (1, m, n, k), &x, &wl.transpose(0, 1)?)?;
        let mut dims = l.dims().to_vec();
        *dims.last_mut().expect("non-empty") = n;
        Ok((y, Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        let n = self.w.dim(0)?;
        let g = grad_y.contiguous()?.reshape(((), n))?;
        Ok(Some(g.matmul(&self.w)?.reshape(x.shape())?))
    }
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what} needs a contiguous input");
    };
    Ok(&s.as_slice::<f32>()?[a..b])
}

/// The f32 data of a backward kernel's two inputs (a forward value and the incoming
/// gradient), which must be contiguous and of one size.
pub(crate) fn value_and_grad<'a>(
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    what: &str,
) -> Result<(&'a [f32], &'a [f32])> {
    let (x, g) = (contiguous(s1, l1, what)?, contiguous(s2, l2, what)?);
    if x.len() != g.len() {
        candle_core::bail!(
            "{what}: the value has {} elements, its gradient {}",
            x.len(),
            g.len()
        );
    }
    Ok((x, g))
}

fn row_len(l: &Layout) -> Result<usize> {
    match l.dims().last() {
        Some(&n) if n > 0 => Ok(n),
        _ => candle_core::bail!("a row-wise op needs a non-empty last dimension"),
    }
}

fn targets_of(s: &CpuStorage, l: &Layout) -> Result<Vec<usize>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("cross entropy needs contiguous targets");
    };
    Ok(match s {
        CpuStorage::U32(t) => t[a..b].iter().map(|&t| t as usize).collect(),
        CpuStorage::I64(t) => t[a..b]
            .iter()
            .map(|&t| usize::try_from(t))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| candle_core::Error::Msg("cross entropy: a negative target".into()))?,
        _ => candle_core::bail!("cross entropy targets must be u32 or i64"),
    })
}

/// Row maximum and `ln Σ exp(x - max)`.
#[inline]
fn max_and_log_sum_exp(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    (max, sum.ln())
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim-with-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, "softmax")?;
        let n = row_len(l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (x - max).exp();
                sum += *y;
            }
            let inv = 1.0 / sum;
            y.iter_mut().for_each(|y| *y *= inv);
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            y.apply_op2_no_bwd(&grad_y.contiguous()?, &SoftmaxGrad)?,
        ))
    }
}

/// `dx = y ⊙ (dy - Σ dy ⊙ y)`, row by row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-last-dim-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = value_and_grad((s1, l1), (s2, l2), "softmax grad")?;
        let n = row_len(l1)?;
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(n)
            .zip(y.par_chunks(n).zip(g.par_chunks(n)))
            .for_each(|(dx, (y, g))| {
                let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                    *dx = y * (g - dot);
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

struct CrossEntropy;

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let logits = contiguous(s1, l1, "cross entropy")?;
        let targets = targets_of(s2, l2)?;
        let v = row_len(l1)?;
        if let Some(&t) = targets.iter().find(|&&t| t >= v) {
            candle_core::bail!("cross entropy: target {t} outside a vocabulary of {v}");
        }
        let loss: Vec<f32> = logits
            .par_chunks(v)
            .zip(targets.par_iter())
            .map(|(row, &t)| {
                let (max, lse) = max_and_log_sum_exp(row);
                max + lse - row[t]
            })
            .collect();
        Ok((CpuStorage::F32(loss), Shape::from(targets.len())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _loss: &Tensor,
        grad_loss: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = logits.apply_op3_no_bwd(targets, &grad_loss.contiguous()?, &CrossEntropyGrad)?;
        Ok((Some(grad), None))
    }
}

/// `dlogits = (softmax(logits) - onehot(target)) · dloss`, row by row.
struct CrossEntropyGrad;

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-rows-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let logits = contiguous(s1, l1, "cross entropy grad")?;
        let targets = targets_of(s2, l2)?;
        let g = contiguous(s3, l3, "cross entropy grad")?;
        let v = row_len(l1)?;
        let mut dx = vec![0f32; logits.len()];
        dx.par_chunks_mut(v)
            .zip(logits.par_chunks(v))
            .zip(targets.par_iter().zip(g.par_iter()))
            .for_each(|((dx, row), (&t, &g))| {
                if g == 0.0 {
                    return; // masked position: no gradient (and no exp over the vocabulary)
                }
                let (max, lse) = max_and_log_sum_exp(row);
                for (dx, &x) in dx.iter_mut().zip(row) {
                    *dx = (x - max - lse).exp() * g;
                }
                dx[t] -= g;
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{abs_sum, max_abs_diff};
    use candle_core::{Device, Var};

    /// Value and input gradient of `f(x)·w` summed, for a fixed random weighting `w`.
    fn output_and_grad(
        x: &Tensor,
        w: &Tensor,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> (Tensor, Tensor) {
        let v = Var::from_tensor(x).unwrap();
        let y = f(v.as_tensor()).unwrap();
        let l = (y.clone() * w).unwrap().sum_all().unwrap();
        let g = l.backward().unwrap();
        (y, g.get(v.as_tensor()).unwrap().clone())
    }

    #[test]
    fn frozen_matmul_equals_candles_and_gives_the_weight_no_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 24), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (40, 24), &dev).unwrap();
        let gw = Tensor::randn(0f32, 1.0, (3, 5, 40), &dev).unwrap();
        let wv = Var::from_tensor(&w).unwrap();
        let run = |f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>| {
            let xv = Var::from_tensor(&x).unwrap();
            let y = f(xv.as_tensor(), wv.as_tensor()).unwrap();
            let grads = (y.clone() * &gw)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gx = grads.get(xv.as_tensor()).unwrap().clone();
            (y, gx, grads.get(wv.as_tensor()).is_some())
        };
        let (y, gx, w_has_grad) = run(&|x, w| matmul_t_frozen(x, &w.detach()));
        let (y0, gx0, w0_has_grad) = run(&|x, w| x.broadcast_matmul(&w.t()?));
        assert!(max_abs_diff(&y, &y0).unwrap() < 1e-5);
        assert!(max_abs_diff(&gx, &gx0).unwrap() < 1e-5);
        assert!(!w_has_grad, "the frozen weight gets no gradient");
        assert!(w0_has_grad, "candle's matmul computes one");
        // Without a gradient to track it is candle's matmul, same values.
        let plain = matmul_t_frozen(&x, &w).unwrap();
        assert!(max_abs_diff(&plain, &y0).unwrap() < 1e-5);
    }

    #[test]
    fn softmax_and_its_gradient_equal_the_composed_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (2, 3, 37), &dev).unwrap();
        // A causal-mask-like row of -inf must give zeros and no NaN.
        let x = x
            .slice_assign(
                &[0..1, 0..1, 30..37],
                &Tensor::full(f32::NEG_INFINITY, (1, 1, 7), &dev).unwrap(),
            )
            .unwrap();
        let w = Tensor::randn(0f32, 1.0, (2, 3, 37), &dev).unwrap();
        let (y, g) = output_and_grad(&x, &w, softmax_last_dim);
        let (y0, g0) = output_and_grad(&x, &w, |x| candle_nn::ops::softmax(x, D::Minus1));
        assert!(max_abs_diff(&y, &y0).unwrap() < 1e-6);
        assert!(max_abs_diff(&g, &g0).unwrap() < 1e-6);
        assert!(abs_sum(&g).unwrap() > 0.0);
        let masked = y.narrow(2, 30, 7).unwrap().get(0).unwrap().get(0).unwrap();
        assert_eq!(masked.to_vec1::<f32>().unwrap(), vec![0.0; 7]);
    }

    #[test]
    fn cross_entropy_and_its_gradient_equal_log_softmax_and_gather() {
        let dev = Device::Cpu;
        let logits = Tensor::randn(0f32, 4.0, (9, 1001), &dev).unwrap();
        let targets = Tensor::new(&[0u32, 5, 1000, 17, 17, 3, 999, 500, 2], &dev).unwrap();
        // Row weights with zeros, as the loss mask gives.
        let w = Tensor::new(&[1f32, 0.5, 0.0, 2.0, 1.0, 0.0, 1.0, 0.25, 1.0], &dev).unwrap();
        let (l, g) = output_and_grad(&logits, &w, |x| cross_entropy_rows(x, &targets));
        let composed = |x: &Tensor| {
            let logp = candle_nn::ops::log_softmax(x, D::Minus1)?;
            logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
        };
        let (l0, g0) = output_and_grad(&logits, &w, composed);
        assert!(max_abs_diff(&l, &l0).unwrap() < 1e-4);
        let d = max_abs_diff(&g, &g0).unwrap();
        assert!(d < 1e-5, "{d}");
        // Masked rows get no gradient; each weighted row's gradient sums to zero.
        let rows = g.sum(1).unwrap().to_vec1::<f32>().unwrap();
        assert!(rows.iter().all(|r| r.abs() < 1e-4), "{rows:?}");
        assert_eq!(abs_sum(&g.get(2).unwrap()).unwrap(), 0.0);

        let bad = Tensor::new(&[0u32, 1001, 0, 0, 0, 0, 0, 0, 0], &dev).unwrap();
        let e = cross_entropy_rows(&logits, &bad).unwrap_err().to_string();
        assert!(e.contains("outside a vocabulary"), "{e}");
        let negative = Tensor::new(&[0i64, -100, 0, 0, 0, 0, 0, 0, 0], &dev).unwrap();
        let e = cross_entropy_rows(&logits, &negative)
            .unwrap_err()
            .to_string();
        assert!(e.contains("negative target"), "{e}");
    }
}
