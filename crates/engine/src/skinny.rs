//! `x Wᵀ` for a few rows of `x` on the CPU, reading each weight row once.
//!
//! Why our own kernel: typing with a reused KV cache runs the model on 2 to 16 new tokens at a
//! time, and there candle's f32 matmul (the `gemm` crate, through `x.matmul(W.t())`) costs
//! about as much per extra row as a whole one-token step: 2 new tokens took twice as long as
//! 1, 4 four times (tiny_starcoder_py shape, `examples/step_cost.rs`), so the step is bound by
//! re-reading 600 MB of weights. Here each weight row is loaded once and dotted with every
//! row of `x` while it is in cache, so a step of a few tokens costs about what one token
//! costs. Larger inputs (prefill of a whole prompt, training) stay on candle's gemm, which is
//! faster once the product is compute-bound.
//!
//! Exposed as a candle custom op (no backward pass: inference only).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::Level;

/// Row counts from 1 up to this go through [`matmul_t`]: measured on the tiny_starcoder_py
/// shape after 1,800 cached positions (`examples/step_cost.rs`), candle's gemm catches up
/// at about 16 new tokens.
pub const MAX_ROWS: usize = 8;

/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 32;

/// How far ahead of its loads (in floats: 1 KiB) the x86 kernels prefetch `w`.
#[cfg(target_arch = "x86_64")]
const PREFETCH_FLOATS: usize = 256;

/// `x (.., k) · wᵀ` with `w (n, k)`, both f32 and on the CPU; returns `(.., n)`.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &SkinnyMatmul)
}

/// Whether [`matmul_t`] should take `x · wᵀ`: CPU f32, no gradient wanted, few rows.
pub fn applies(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && w.dtype() == candle_core::DType::F32
        && w.rank() == 2
        && !x.track_op()
        && !w.track_op()
        && x.elem_count() / x.dims().last().copied().unwrap_or(1).max(1) <= MAX_ROWS
}

struct SkinnyMatmul;

impl CustomOp2 for SkinnyMatmul {
    fn name(&self) -> &'static str {
        "skinny-matmul-t"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (Some((xa, xb)), Some((wa, wb))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            candle_core::bail!("skinny matmul needs contiguous inputs");
        };
        let x = &xs.as_slice::<f32>()?[xa..xb];
        let w = &ws.as_slice::<f32>()?[wa..wb];
        let dims = xl.shape().dims();
        let k = *dims.last().unwrap_or(&0);
        let (n, wk) = wl.shape().dims2()?;
        if wk != k || k == 0 {
            candle_core::bail!("skinny matmul: x has {k} columns, w has {wk}");
        }
        let rows = x.len() / k;
        let y = matmul_t_slices(x, rows, w, n, k);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().unwrap() = n;
        Ok((CpuStorage::F32(y), Shape::from(out_dims)))
    }
}

/// `y (rows, n) = x (rows, k) · w (n, k)ᵀ`, row-major slices, at this process's level.
pub fn matmul_t_slices(x: &[f32], rows: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    matmul_t_slices_at(crate::cpu::level(), x, rows, w, n, k)
}

/// [`matmul_t_slices`] with `level`'s kernel (which the CPU must support).
pub fn matmul_t_slices_at(
    level: Level,
    x: &[f32],
    rows: usize,
    w: &[f32],
    n: usize,
    k: usize,
) -> Vec<f32> {
    assert!(level.supported(), "{level} is not supported by this CPU");
    assert_eq!(x.len(), rows * k);
    assert_eq!(w.len(), n * k);
    let dots = dots_kernel(level);
    // Computed transposed (n, rows) so that tasks own whole weight rows, then transposed back
    // (one row is its own transpose).
    let mut yt = vec![0f32; n * rows];
    yt.par_chunks_mut(ROWS_PER_TASK * rows)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * ROWS_PER_TASK;
            for (r, out_row) in out.chunks_mut(rows).enumerate() {
                let w_row = &w[(first + r) * k..(first + r + 1) * k];
                // SAFETY: the level is supported (asserted above); `x` holds `rows` rows of
                // `k` and `out_row` one value per row.
                unsafe { dots(w_row, x, k, out_row) };
            }
        });
    untranspose(yt, rows, n)
}

/// `(n, rows)` back to `(rows, n)` (one row is its own transpose).
fn untranspose(yt: Vec<f32>, rows: usize, n: usize) -> Vec<f32> {
    if rows <= 1 {
        return yt;
    }
    let mut y = vec![0f32; rows * n];
    for j in 0..n {
        for i in 0..rows {
            y[i * n + j] = yt[j * rows + i];
        }
    }
    y
}

/// [`matmul_t_slices`] on the calling thread only, for products too small to be worth a
/// hand-over to the pool (a LoRA pair's `A`: 16 rows). Returns `(rows, n)`.
pub(crate) fn matmul_t_slices_serial(
    level: Level,
    x: &[f32],
    rows: usize,
    w: &[f32],
    n: usize,
    k: usize,
) -> Vec<f32> {
    assert!(level.supported(), "{level} is not supported by this CPU");
    assert_eq!(x.len(), rows * k);
    assert_eq!(w.len(), n * k);
    let dots = dots_kernel(level);
    let mut yt = vec![0f32; n * rows];
    for (j, out_row) in yt.chunks_mut(rows.max(1)).enumerate() {
        // SAFETY: the level is supported (asserted above); `x` holds `rows` rows of `k`.
        unsafe { dots(&w[j * k..(j + 1) * k], x, k, out_row) };
    }
    untranspose(yt, rows, n)
}

/// `out[i] = w · x_i` for every row `x_i` of `x`.
type Dots = unsafe fn(&[f32], &[f32], usize, &mut [f32]);

/// The dot-product kernel for `level`, chosen once per product rather than per weight row.
fn dots_kernel(level: Level) -> Dots {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx2Vnni => avx2::dots,
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 | Level::Avx512Vnni => avx512::dots,
        #[cfg(target_arch = "aarch64")]
        Level::Neon | Level::NeonDot => neon::dots,
        _ => dots_portable,
    }
}

unsafe fn dots_portable(w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = dot_portable(w, &x[i * k..(i + 1) * k]);
    }
}

/// Eight independent lanes, so the compiler can vectorise without reassociating a sum.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Up to four rows of `x` per pass over `w`: each chunk of `w` is loaded once and used
    /// for every row; two 8-wide accumulators per row hide the FMA latency.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots(w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
        let rows = out.len();
        let mut i = 0;
        while i < rows {
            let take = (rows - i).min(4);
            let xp = |r: usize| x.as_ptr().add((i + r) * k);
            let o = &mut out[i..i + take];
            match take {
                4 => block::<4>(w, [xp(0), xp(1), xp(2), xp(3)], k, o),
                3 => block::<3>(w, [xp(0), xp(1), xp(2)], k, o),
                2 => block::<2>(w, [xp(0), xp(1)], k, o),
                _ => block::<1>(w, [xp(0)], k, o),
            }
            i += take;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const R: usize>(w: &[f32], xs: [*const f32; R], k: usize, out: &mut [f32]) {
        if R <= 2 {
            return block_wide::<R>(w, xs, k, out);
        }
        let wp = w.as_ptr();
        let full = k / 16 * 16;
        let mut a0 = [_mm256_setzero_ps(); R];
        let mut a1 = [_mm256_setzero_ps(); R];
        let mut c = 0;
        while c < full {
            let w0 = _mm256_loadu_ps(wp.add(c));
            let w1 = _mm256_loadu_ps(wp.add(c + 8));
            for r in 0..R {
                a0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[r].add(c)), a0[r]);
                a1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs[r].add(c + 8)), a1[r]);
            }
            c += 16;
        }
        for r in 0..R {
            let mut s = hsum(_mm256_add_ps(a0[r], a1[r]));
            for cc in full..k {
                s += *wp.add(cc) * *xs[r].add(cc);
            }
            out[r] = s;
        }
    }

    /// One or two rows: two cache lines of `w` per step (four 8-wide accumulators a row),
    /// as the 512-bit kernel reads them; with one line a step a decode read the weights
    /// about a tenth slower than at AVX-512 (tsp f32, 34.5 against 31.0 ms a token).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_wide<const R: usize>(
        w: &[f32],
        xs: [*const f32; R],
        k: usize,
        out: &mut [f32],
    ) {
        let wp = w.as_ptr();
        let full = k / 32 * 32;
        let mut a = [[_mm256_setzero_ps(); 4]; R];
        let mut c = 0;
        while c < full {
            // (A prefetch never faults: past the end it reads nothing; `wrapping_add`
            // keeps the address arithmetic defined there.)
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(c + super::PREFETCH_FLOATS).cast::<i8>());
            let ws = [
                _mm256_loadu_ps(wp.add(c)),
                _mm256_loadu_ps(wp.add(c + 8)),
                _mm256_loadu_ps(wp.add(c + 16)),
                _mm256_loadu_ps(wp.add(c + 24)),
            ];
            for r in 0..R {
                for (l, wl) in ws.iter().enumerate() {
                    a[r][l] = _mm256_fmadd_ps(*wl, _mm256_loadu_ps(xs[r].add(c + 8 * l)), a[r][l]);
                }
            }
            c += 32;
        }
        for r in 0..R {
            let v = _mm256_add_ps(
                _mm256_add_ps(a[r][0], a[r][1]),
                _mm256_add_ps(a[r][2], a[r][3]),
            );
            let mut s = hsum(v);
            for cc in full..k {
                s += *wp.add(cc) * *xs[r].add(cc);
            }
            out[r] = s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// As the AVX2 kernel, on 512-bit vectors: up to four rows of `x` per pass over `w`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn dots(w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
        let rows = out.len();
        let mut i = 0;
        while i < rows {
            let take = (rows - i).min(4);
            let xp = |r: usize| x.as_ptr().add((i + r) * k);
            let o = &mut out[i..i + take];
            match take {
                4 => block::<4>(w, [xp(0), xp(1), xp(2), xp(3)], k, o),
                3 => block::<3>(w, [xp(0), xp(1), xp(2)], k, o),
                2 => block::<2>(w, [xp(0), xp(1)], k, o),
                _ => block::<1>(w, [xp(0)], k, o),
            }
            i += take;
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn block<const R: usize>(w: &[f32], xs: [*const f32; R], k: usize, out: &mut [f32]) {
        let wp = w.as_ptr();
        let full = k / 32 * 32;
        let mut a0 = [_mm512_setzero_ps(); R];
        let mut a1 = [_mm512_setzero_ps(); R];
        let mut c = 0;
        while c < full {
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(c + super::PREFETCH_FLOATS).cast::<i8>());
            let w0 = _mm512_loadu_ps(wp.add(c));
            let w1 = _mm512_loadu_ps(wp.add(c + 16));
            for r in 0..R {
                a0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xs[r].add(c)), a0[r]);
                a1[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xs[r].add(c + 16)), a1[r]);
            }
            c += 32;
        }
        // One masked step for the last 1 to 31 values.
        let rest = k - full;
        if rest > 0 {
            let m0 = ((1u32 << rest.min(16)) - 1) as u16;
            let m1 = ((1u64 << rest.saturating_sub(16)) - 1) as u16;
            let w0 = _mm512_maskz_loadu_ps(m0, wp.add(c));
            let w1 = _mm512_maskz_loadu_ps(m1, wp.add(c + 16));
            for r in 0..R {
                a0[r] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m0, xs[r].add(c)), a0[r]);
                a1[r] = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(m1, xs[r].add(c + 16)), a1[r]);
            }
        }
        for r in 0..R {
            out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r]));
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// Up to four rows of `x` per pass over `w`, four 4-wide accumulators per row.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn dots(w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
        let rows = out.len();
        let mut i = 0;
        while i < rows {
            let take = (rows - i).min(4);
            let xp = |r: usize| x.as_ptr().add((i + r) * k);
            let o = &mut out[i..i + take];
            match take {
                4 => block::<4>(w, [xp(0), xp(1), xp(2), xp(3)], k, o),
                3 => block::<3>(w, [xp(0), xp(1), xp(2)], k, o),
                2 => block::<2>(w, [xp(0), xp(1)], k, o),
                _ => block::<1>(w, [xp(0)], k, o),
            }
            i += take;
        }
    }

    #[target_feature(enable = "neon")]
    unsafe fn block<const R: usize>(w: &[f32], xs: [*const f32; R], k: usize, out: &mut [f32]) {
        let wp = w.as_ptr();
        let full = k / 16 * 16;
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        let mut c = 0;
        while c < full {
            let wv = [
                vld1q_f32(wp.add(c)),
                vld1q_f32(wp.add(c + 4)),
                vld1q_f32(wp.add(c + 8)),
                vld1q_f32(wp.add(c + 12)),
            ];
            for r in 0..R {
                for q in 0..4 {
                    acc[r][q] = vfmaq_f32(acc[r][q], wv[q], vld1q_f32(xs[r].add(c + 4 * q)));
                }
            }
            c += 16;
        }
        for r in 0..R {
            let v = vaddq_f32(
                vaddq_f32(acc[r][0], acc[r][1]),
                vaddq_f32(acc[r][2], acc[r][3]),
            );
            let mut s = vaddvq_f32(v);
            for cc in full..k {
                s += *wp.add(cc) * *xs[r].add(cc);
            }
            out[r] = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn equals_candle_matmul_for_every_row_count_and_odd_sizes() {
        let dev = Device::Cpu;
        for (n, k) in [(70, 37), (64, 768), (3, 5)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            for rows in 1..=MAX_ROWS {
                let x = Tensor::randn(0f32, 1.0, (1, rows, k), &dev).unwrap();
                assert!(applies(&x, &w));
                let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
                let got = matmul_t(&x, &w).unwrap();
                assert_eq!(got.dims(), want.dims());
                let diff = crate::testkit::max_abs_diff(&got, &want).unwrap();
                assert!(
                    diff < 1e-3 * (k as f32).sqrt(),
                    "{n}x{k}, {rows} rows: {diff}"
                );
            }
        }
        let many = Tensor::zeros((1, MAX_ROWS + 1, 8), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 8), candle_core::DType::F32, &dev).unwrap();
        assert!(!applies(&many, &w));
    }

    #[test]
    fn every_level_equals_the_portable_kernel() {
        let dev = Device::Cpu;
        for (n, k) in [(33, 5), (40, 47), (65, 768), (3, 1000)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let w: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
            for rows in 1..=MAX_ROWS {
                let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
                let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
                let want = matmul_t_slices_at(Level::Scalar, &x, rows, &w, n, k);
                for level in crate::cpu::available() {
                    let got = matmul_t_slices_at(level, &x, rows, &w, n, k);
                    // The calling-thread variant computes the very same dots.
                    let serial = matmul_t_slices_serial(level, &x, rows, &w, n, k);
                    assert_eq!(serial, got, "{n}x{k} {rows} {level}: serial differs");
                    for (g, e) in got.iter().zip(&want) {
                        assert!(
                            (g - e).abs() < 1e-4 * (k as f32).sqrt(),
                            "{n}x{k} {rows} {level}: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn portable_dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.25).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot_portable(&a, &b) - plain).abs() < 1e-3);
    }
}
