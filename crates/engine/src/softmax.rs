//! Softmax over the last dimension on the CPU, and the vectorisable `exp` it (and
//! [`crate::attention`]) is built on, for each [`Level`].
//!
//! Why our own: candle's CPU softmax calls libm's `expf` per element and is compiled for the
//! build's baseline ISA (SSE2 on x86-64); `perf` of a tiny_starcoder_py prefill put 6% in
//! `expf` alone. Here `exp` is Cephes' `expf` (range reduction to `2^n · e^r`, a degree-5
//! polynomial, accurate to 2 ulp), written so the compiler vectorises it at the level's
//! width, and rows are split across rayon's threads.
//!
//! Knows nothing of attention, masks or models. Inference only (no backward pass: training
//! uses [`crate::train_ops`]).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::Level;

/// `e^x` for `x` in f32's range: 0 below -87.3 (where `e^x` leaves the normal floats),
/// saturating above 88.4. Plain multiplies and adds rather than `mul_add`, which is a libm
/// call where the build's baseline has no FMA (the scalar level on x86-64).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const LOW: f32 = -87.336_55;
    let c = x.clamp(LOW, 88.376_26);
    let n = (c * LOG2E + 0.5).floor();
    let r = c - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n by building the exponent field; n is in -126..=127 after the clamp.
    let e = y * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < LOW {
        0.0
    } else {
        e
    }
}

/// Softmax of every row of `rows` (each of length `len`) in place.
pub(crate) fn softmax_rows(level: Level, rows: &mut [f32], len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if matches!(level, Level::Avx512 | Level::Avx512Vnni) {
            // SAFETY: only at a level the CPU supports.
            return unsafe { softmax_rows_avx512(rows, len) };
        }
        if matches!(level, Level::Avx2 | Level::Avx2Vnni) {
            // SAFETY: as above.
            return unsafe { softmax_rows_avx2(rows, len) };
        }
    }
    let _ = level;
    softmax_rows_portable(rows, len)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(rows: &mut [f32], len: usize) {
    softmax_rows_portable(rows, len)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn softmax_rows_avx512(rows: &mut [f32], len: usize) {
    softmax_rows_portable(rows, len)
}

#[inline(always)]
fn softmax_rows_portable(rows: &mut [f32], len: usize) {
    for row in rows.chunks_exact_mut(len) {
        let mut m = [f32::NEG_INFINITY; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for l in 0..8 {
                m[l] = if c[l] > m[l] { c[l] } else { m[l] };
            }
        }
        let mut max = m
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        for &v in chunks.remainder() {
            max = if v > max { v } else { max };
        }
        if max == f32::NEG_INFINITY {
            // Every value masked: no distribution; zeros rather than NaN.
            row.iter_mut().for_each(|v| *v = 0.0);
            continue;
        }
        let mut s = [0f32; 8];
        let mut chunks = row.chunks_exact_mut(8);
        for c in &mut chunks {
            for l in 0..8 {
                c[l] = exp(c[l] - max);
                s[l] += c[l];
            }
        }
        let mut sum: f32 = s.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Whether [`softmax_last_dim`] applies: CPU f32, no gradient wanted.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && !x.track_op() && x.rank() > 0
}

/// Softmax over the last dimension (CPU f32, no backward pass).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Softmax)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("softmax needs a contiguous input");
        };
        let len = *l.shape().dims().last().unwrap_or(&1);
        let mut y = s.as_slice::<f32>()?[a..b].to_vec();
        if len == 0 {
            return Ok((CpuStorage::F32(y), l.shape().clone()));
        }
        let level = crate::cpu::level();
        let per_task = (8192 / len).max(1) * len;
        y.par_chunks_mut(per_task)
            .for_each(|rows| softmax_rows(level, rows, len));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_across_the_range() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 * 1e-3;
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "{worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert!(exp(100.0).is_finite());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn every_level_equals_candles_softmax() {
        let dev = candle_core::Device::Cpu;
        for len in [1, 7, 8, 33, 1000] {
            let x = Tensor::randn(0f32, 4.0, (5, len), &dev).unwrap();
            let want = candle_nn::ops::softmax_last_dim(&x).unwrap();
            let got = softmax_last_dim(&x).unwrap();
            assert!(crate::testkit::max_abs_diff(&got, &want).unwrap() < 1e-6);
            let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
            for level in crate::cpu::available() {
                let mut got = xs.clone();
                softmax_rows(level, &mut got, len);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-6, "{level} len {len}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn masked_values_get_nothing_and_a_fully_masked_row_is_zeros() {
        let mut row = [0.5, f32::NEG_INFINITY, 1.5, f32::NEG_INFINITY];
        softmax_rows(Level::Scalar, &mut row, 4);
        assert_eq!(row[1], 0.0);
        assert!((row[0] + row[2] - 1.0).abs() < 1e-6);
        let mut row = [f32::NEG_INFINITY; 3];
        softmax_rows(crate::cpu::level(), &mut row, 3);
        assert_eq!(row, [0.0; 3]);
    }
}
