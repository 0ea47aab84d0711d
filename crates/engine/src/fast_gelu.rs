//! GELU (tanh approximation, `gelu_pytorch_tanh`) on the CPU without a libm call per element.
//!
//! Why our own: candle computes it element by element with `f32::tanh` (glibc's `tanhf`,
//! through `expm1f`); in a whole-window prefill of the tiny_starcoder_py shape that was 15%
//! of the time (`perf`, 1,892 tokens: 20 layers × 1,892 × 3,072 elements). Here `tanh` is
//! Eigen's rational approximation (`generic_fast_tanh_float`, accurate to a few ulp), written
//! so the compiler vectorises it, and the rows are split across rayon's threads.
//!
//! A candle custom op without a backward pass: inference only (training keeps candle's).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether [`gelu_tanh`] applies: CPU f32 with no gradient wanted.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && !x.track_op()
}

/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&FastGelu)
}

struct FastGelu;

impl CustomOp1 for FastGelu {
    fn name(&self) -> &'static str {
        "fast-gelu-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("fast gelu needs a contiguous input");
        };
        let x = &s.as_slice::<f32>()?[a..b];
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .for_each(|(y, x)| gelu_slice(x, y));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

fn gelu_slice(x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { gelu_slice_avx2(x, y) };
            return;
        }
    }
    gelu_slice_portable(x, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_avx2(x: &[f32], y: &mut [f32]) {
    gelu_slice_portable(x, y);
}

#[inline(always)]
fn gelu_slice_portable(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = gelu(x);
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
}

/// Eigen's `generic_fast_tanh_float`: `x · P(x²) / Q(x²)` on `x` clamped to ±7.905 (where
/// tanh is 1 in f32).
#[inline(always)]
fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A1: f32 = 4.893_524_5e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525e-3;
    const B2: f32 = 2.268_434_7e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let p = A13;
    let p = p.mul_add(x2, A11);
    let p = p.mul_add(x2, A9);
    let p = p.mul_add(x2, A7);
    let p = p.mul_add(x2, A5);
    let p = p.mul_add(x2, A3);
    let p = p.mul_add(x2, A1);
    let p = p * x;
    let q = B6;
    let q = q.mul_add(x2, B4);
    let q = q.mul_add(x2, B2);
    let q = q.mul_add(x2, B0);
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_is_accurate_everywhere() {
        let mut worst = 0f32;
        for i in -20_000..=20_000 {
            let x = i as f32 * 1e-3;
            worst = worst.max((tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 1e-6, "{worst}");
        assert!((tanh(1e30) - 1.0).abs() < 1e-6);
        assert!((tanh(-1e30) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn equals_candles_gelu() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (3, 10_007), &dev).unwrap();
        assert!(applies(&x));
        let want = x.gelu().unwrap();
        let got = gelu_tanh(&x).unwrap();
        let diff = crate::testkit::max_abs_diff(&got, &want).unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
