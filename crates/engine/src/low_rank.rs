//! An unmerged LoRA delta at inference, cheap: `y += (x·Aᵀ)·B'ᵀ` added **in place** to the
//! base layer's output, on the CPU in f32.
//!
//! The tensor path (`(x·Aᵀ)·Bᵀ · scale`, converted and added: five candle ops, two of them
//! on transposed views) cost a third of every completion (issue 18). Here an adapter is
//! prepared once when it is registered ([`prepare`]): A `(r, in)` contiguous in f32 and
//! B'ᵀ = (scale·B)ᵀ `(r, out)`, the scale folded in. Each target layer then costs one op:
//! `t = x·Aᵀ` (r long dot products per row, through [`crate::skinny`]'s kernel for the few
//! rows of decode and [`crate::sgemm`] for prefill), then `y_row += Σ_j t_j · B'ᵀ_j`, r
//! multiply-adds over contiguous rows of `out` values ([`axpy`], vectorised for the CPU's
//! level). A product with r = 16 deep dots would spend its time in horizontal sums; rows of
//! `B'ᵀ` keep every lane busy. No conversion, no transposed operand, no temporary of the
//! output's size.
//!
//! Training (tensors that track gradients), other devices and other dtypes keep the tensor
//! path: [`applies`] says which.

use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Storage, Tensor};

use crate::cpu::Level;
use crate::layers::LoraPair;
use crate::lora::Lora;

/// Whether [`add_in_place`] takes `y += delta(x)` for this pair: CPU f32 everywhere, no
/// gradients, a prepared pair, an output whose rows are contiguous.
pub(crate) fn applies(y: &Tensor, x: &Tensor, l: &LoraPair) -> bool {
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op();
    let Some(bt) = &l.bt else {
        return false;
    };
    f32_cpu(y)
        && f32_cpu(x)
        && f32_cpu(&l.a)
        && f32_cpu(bt)
        && l.a.is_contiguous()
        && bt.is_contiguous()
        && l.a.rank() == 2
        && bt.rank() == 2
        && y.stride().last() == Some(&1)
}

/// The pair as inference wants it: the scale folded into B (`scale` 1) and, on the CPU, A
/// and `Bᵀ` contiguous in f32 for [`add_in_place`]. A pair that cannot be converted stays
/// as it was (the tensor path serves it).
pub fn prepare_pair(p: &LoraPair) -> LoraPair {
    let go = || -> candle_core::Result<LoraPair> {
        let cpu = p.a.device().is_cpu();
        let dtype = if cpu { DType::F32 } else { p.a.dtype() };
        let b = (p.b.detach().to_dtype(dtype)? * p.scale)?.contiguous()?;
        Ok(LoraPair {
            a: p.a.detach().to_dtype(dtype)?.contiguous()?,
            bt: if cpu {
                Some(b.t()?.contiguous()?)
            } else {
                None
            },
            b,
            scale: 1.0,
        })
    };
    go().unwrap_or_else(|e| {
        tracing::warn!("a LoRA pair stays on the tensor path: {e}");
        p.clone()
    })
}

/// Every pair of an adapter prepared ([`prepare_pair`]).
pub fn prepare(lora: &Lora) -> Lora {
    let mut out = lora.clone();
    for block in &mut out.blocks {
        for m in crate::lora::Module::ALL {
            if let Some(p) = block.get(m) {
                let q = prepare_pair(p);
                block.set(m, Some(q));
            }
        }
    }
    out
}

/// `y += (x·Aᵀ)·Bᵀ` in place (the caller checked [`applies`]).
pub(crate) fn add_in_place(y: &Tensor, x: &Tensor, l: &LoraPair) -> crate::error::Result<()> {
    let bad = |m: String| crate::error::EngineError::Candle(candle_core::Error::Msg(m));
    let bt =
        l.bt.as_ref()
            .ok_or_else(|| bad("a LoRA pair used unprepared".into()))?;
    let x = x.contiguous()?;
    let (a_storage, a_layout) = l.a.storage_and_layout();
    let (b_storage, b_layout) = bt.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(a)), Storage::Cpu(CpuStorage::F32(b))) =
        (&*a_storage, &*b_storage)
    else {
        return Err(bad("a LoRA pair is not f32 on the CPU".into()));
    };
    let (r, k) = a_layout.shape().dims2()?;
    let (br, n) = b_layout.shape().dims2()?;
    if br != r {
        return Err(bad(format!("LoRA A has rank {r}, B {br}")));
    }
    let a = &a[a_layout.start_offset()..a_layout.start_offset() + r * k];
    let bt = &b[b_layout.start_offset()..b_layout.start_offset() + r * n];
    y.inplace_op2(&x, &AddLowRank { a, bt, r, k, n })?;
    Ok(())
}

/// [`add_in_place`] for benchmarks and examples (checks [`applies`] first).
pub fn add_for_bench(y: &Tensor, x: &Tensor, l: &LoraPair) -> crate::error::Result<()> {
    if !applies(y, x, l) {
        return Err(crate::error::EngineError::Other(
            "the pair is not prepared for the in-place path".into(),
        ));
    }
    add_in_place(y, x, l)
}

struct AddLowRank<'w> {
    a: &'w [f32],
    /// `(r, n)`.
    bt: &'w [f32],
    r: usize,
    k: usize,
    n: usize,
}

/// Start offsets of the rows (last dimension) of a layout whose last stride is 1, in
/// row-major order of the leading dimensions.
fn row_offsets(l: &Layout) -> Vec<usize> {
    let dims = l.shape().dims();
    let strides = l.stride();
    let lead = &dims[..dims.len().saturating_sub(1)];
    let count: usize = lead.iter().product();
    let mut offsets = Vec::with_capacity(count);
    let mut idx = vec![0usize; lead.len()];
    for _ in 0..count {
        let off: usize = idx.iter().zip(strides).map(|(i, s)| i * s).sum();
        offsets.push(l.start_offset() + off);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < lead[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    offsets
}

/// `y += a · x` over equal-length slices.
type Axpy = unsafe fn(&mut [f32], f32, &[f32]);

fn axpy_portable(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

// The loops below are the portable one compiled for wider vectors with fused
// multiply-adds: LLVM vectorises them fully, so no intrinsics are spelled out.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o = v.mul_add(a, *o);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn axpy_avx512(y: &mut [f32], a: f32, x: &[f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o = v.mul_add(a, *o);
    }
}

#[cfg(target_arch = "aarch64")]
fn axpy_neon(y: &mut [f32], a: f32, x: &[f32]) {
    // NEON is aarch64's baseline: the portable loop already uses it; `mul_add` makes it
    // fused.
    for (o, v) in y.iter_mut().zip(x) {
        *o = v.mul_add(a, *o);
    }
}

/// The axpy for `level` (which the CPU must support).
fn axpy_kernel(level: Level) -> Axpy {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx2Vnni => axpy_avx2,
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => axpy_avx512,
        #[cfg(target_arch = "aarch64")]
        Level::Neon | Level::NeonDot => axpy_neon,
        _ => axpy_portable,
    }
}

/// `y_row += t_row · bt` for every row: `t (rows, r)`, `bt (r, n)`, rows of `y` at
/// `offsets`, with `level`'s axpy, on the calling thread. Decode is bound by memory and a
/// pair is about 2% of its layer's bytes; handing each of a step's 80 updates to the pool
/// cost more than reading them on one thread (measured: 1.2-1.3x a step instead of ~1.05x).
fn update_at(
    level: Level,
    y: &mut [f32],
    offsets: &[usize],
    t: &[f32],
    bt: &[f32],
    r: usize,
    n: usize,
) {
    assert!(level.supported(), "{level} is not supported by this CPU");
    let axpy = axpy_kernel(level);
    for (row, &off) in offsets.iter().enumerate() {
        let dst = &mut y[off..off + n];
        for (j, &tj) in t[row * r..(row + 1) * r].iter().enumerate() {
            // SAFETY: the level is supported (asserted above); both slices are `n` long.
            unsafe { axpy(dst, tj, &bt[j * n..(j + 1) * n]) };
        }
    }
}

impl InplaceOp2 for AddLowRank<'_> {
    fn name(&self) -> &'static str {
        "lora-add-in-place"
    }

    fn cpu_fwd(
        &self,
        ys: &mut CpuStorage,
        yl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> candle_core::Result<()> {
        let Some((xa, xb)) = xl.contiguous_offsets() else {
            candle_core::bail!("LoRA: x is not contiguous");
        };
        let x = &xs.as_slice::<f32>()?[xa..xb];
        let (r, k, n) = (self.r, self.k, self.n);
        if xl.shape().dims().last() != Some(&k) || yl.shape().dims().last() != Some(&n) {
            candle_core::bail!(
                "LoRA: x {:?} · A ({r}, {k}) · B ({n}, {r}) into y {:?}",
                xl.shape(),
                yl.shape()
            );
        }
        let rows = x.len() / k.max(1);
        let offsets = row_offsets(yl);
        if offsets.len() != rows || yl.stride().last() != Some(&1) {
            candle_core::bail!("LoRA: y {:?} and x {:?} disagree", yl.shape(), xl.shape());
        }
        let level = crate::cpu::level();
        let t = if rows <= crate::skinny::MAX_ROWS {
            crate::skinny::matmul_t_slices_serial(level, x, rows, self.a, r, k)
        } else {
            crate::sgemm::matmul_t(x, rows, self.a, r, k, level)
        };
        let CpuStorage::F32(y) = ys else {
            candle_core::bail!("LoRA: y is not f32");
        };
        update_at(level, y, &offsets, &t, self.bt, r, n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn pair(r: usize, k: usize, n: usize, scale: f64) -> LoraPair {
        let dev = Device::Cpu;
        LoraPair::new(
            Tensor::randn(0f32, 1.0, (r, k), &dev).unwrap(),
            Tensor::randn(0f32, 1.0, (n, r), &dev).unwrap(),
            scale,
        )
    }

    /// The tensor path's delta, as the model computed it before.
    fn reference(y: &Tensor, x: &Tensor, l: &LoraPair) -> Tensor {
        let d = x
            .broadcast_matmul(&l.a.t().unwrap())
            .unwrap()
            .broadcast_matmul(&l.b.t().unwrap())
            .unwrap();
        (y + (d * l.scale).unwrap()).unwrap()
    }

    #[test]
    fn in_place_equals_the_tensor_path_for_decode_and_prefill_rows() {
        let dev = Device::Cpu;
        for rows in [1, 3, 8, 9, 37] {
            let l = pair(16, 64, 48, 2.0);
            let x = Tensor::randn(0f32, 1.0, (1, rows, 64), &dev).unwrap();
            let y = Tensor::randn(0f32, 1.0, (1, rows, 48), &dev).unwrap();
            let want = reference(&y, &x, &l);
            let p = prepare_pair(&l);
            assert_eq!(p.scale, 1.0);
            assert!(applies(&y, &x, &p));
            let got = y.copy().unwrap();
            add_in_place(&got, &x, &p).unwrap();
            let diff = crate::testkit::max_abs_diff(&got, &want).unwrap();
            assert!(diff < 1e-3, "{rows} rows: {diff}");
        }
    }

    #[test]
    fn a_narrowed_output_gets_only_its_columns() {
        // The fused q/k/v output: each part is a view of one tensor.
        let dev = Device::Cpu;
        let l = prepare_pair(&pair(4, 32, 8, 0.5));
        let x = Tensor::randn(0f32, 1.0, (2, 5, 32), &dev).unwrap();
        let whole = Tensor::randn(0f32, 1.0, (2, 5, 24), &dev).unwrap();
        let before = whole.copy().unwrap();
        let part = whole.narrow(2, 8, 8).unwrap();
        assert!(applies(&part, &x, &l));
        add_in_place(&part, &x, &l).unwrap();
        let want = reference(&before.narrow(2, 8, 8).unwrap(), &x, &l);
        let diff = crate::testkit::max_abs_diff(&whole.narrow(2, 8, 8).unwrap(), &want).unwrap();
        assert!(diff < 1e-3, "{diff}");
        for (a, n) in [(0, 8), (16, 8)] {
            let d = crate::testkit::max_abs_diff(
                &whole.narrow(2, a, n).unwrap(),
                &before.narrow(2, a, n).unwrap(),
            )
            .unwrap();
            assert_eq!(d, 0.0, "columns {a}..{} changed", a + n);
        }
    }

    #[test]
    fn every_level_updates_as_the_portable_loop_does() {
        let (r, n) = (5, 37);
        let t: Vec<f32> = (0..2 * r).map(|i| i as f32 * 0.25 - 1.0).collect();
        let bt: Vec<f32> = (0..r * n).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        // Two rows 40 apart in a wider buffer: only their first n values change.
        let base: Vec<f32> = (0..80).map(|i| i as f32).collect();
        let mut want = base.clone();
        update_at(Level::Scalar, &mut want, &[0, 40], &t, &bt, r, n);
        assert_eq!(&want[37..40], &base[37..40]);
        assert_ne!(&want[..37], &base[..37]);
        for level in Level::ALL.into_iter().filter(|l| l.supported()) {
            let mut got = base.clone();
            update_at(level, &mut got, &[0, 40], &t, &bt, r, n);
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-4, "{level}: {diff}");
        }
    }

    #[test]
    fn unprepared_or_tracked_pairs_keep_the_tensor_path() {
        let dev = Device::Cpu;
        let l = pair(4, 32, 8, 2.0);
        let x = Tensor::randn(0f32, 1.0, (1, 32), &dev).unwrap();
        let y = Tensor::zeros((1, 8), DType::F32, &dev).unwrap();
        assert!(!applies(&y, &x, &l), "not prepared");
        let p = prepare_pair(&l);
        assert!(applies(&y, &x, &p));
        let var = candle_core::Var::from_tensor(&p.a).unwrap();
        let tracked = LoraPair {
            a: var.as_tensor().clone(),
            ..p.clone()
        };
        assert!(!applies(&y, &x, &tracked), "training keeps gradients");
        let half = LoraPair {
            a: p.a.to_dtype(DType::F16).unwrap(),
            ..p
        };
        assert!(!applies(&y, &x, &half));
    }
}
