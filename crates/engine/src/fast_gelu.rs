//! GELU (tanh approximation, `gelu_pytorch_tanh`) on the CPU without a libm call per element.
//!
//! Why our own: candle computes it element by element with `f32::tanh` (glibc's `tanhf`,
//! through `expm1f`); in a whole-window prefill of the tiny_starcoder_py shape that was 15%
//! of the time (`perf`, 1,892 tokens: 20 layers × 1,892 × 3,072 elements). Here `tanh` is
//! Eigen's rational approximation (`generic_fast_tanh_float`, accurate to a few ulp), written
//! so the compiler vectorises it, and the rows are split across rayon's threads.
//!
//! A candle custom op with its backward pass (one fused kernel too: candle's backward of
//! GELU is a chain of element-wise ops with libm calls), so fine-tuning uses it as well.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether [`gelu_tanh`] applies: CPU f32.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, differentiable.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FastGelu)
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

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad_y.contiguous()?, &FastGeluGrad)?,
        ))
    }
}

/// `dx = dy · gelu'(x)`.
struct FastGeluGrad;

impl CustomOp2 for FastGeluGrad {
    fn name(&self) -> &'static str {
        "fast-gelu-tanh-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = crate::train_ops::value_and_grad((s1, l1), (s2, l2), "fast gelu grad")?;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(4096)
            .zip(x.par_chunks(4096).zip(g.par_chunks(4096)))
            .for_each(|(dx, (x, g))| {
                for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                    *dx = g * gelu_derivative(x);
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// d/dx of [`gelu`]: `½(1 + t) + ½x(1 - t²)·√(2/π)(1 + 3·0.044715x²)`, `t` the tanh.
#[inline(always)]
fn gelu_derivative(x: f32) -> f32 {
    let x2 = x * x;
    let u = SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x2);
    let t = tanh(u);
    // Where tanh saturates in f32, 1 - t² is rounding noise times a factor growing as x³.
    let sech2 = if u.abs() >= TANH_CLAMP {
        0.0
    } else {
        1.0 - t * t
    };
    0.5 * (1.0 + t) + 0.5 * x * sech2 * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x2)
}

fn gelu_slice(x: &[f32], y: &mut [f32]) {
    gelu_slice_at(crate::cpu::level(), x, y)
}

/// GELU of `x` into `y` with `level`'s vectors (the same arithmetic at every level).
fn gelu_slice_at(level: crate::cpu::Level, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::cpu::Level;
        if matches!(level, Level::Avx512 | Level::Avx512Vnni) {
            // SAFETY: only at a level the CPU supports.
            unsafe { gelu_slice_avx512(x, y) };
            return;
        }
        if matches!(level, Level::Avx2 | Level::Avx2Vnni) {
            // SAFETY: as above.
            unsafe { gelu_slice_avx2(x, y) };
            return;
        }
    }
    let _ = level;
    gelu_slice_portable(x, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_avx2(x: &[f32], y: &mut [f32]) {
    gelu_slice_portable(x, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gelu_slice_avx512(x: &[f32], y: &mut [f32]) {
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

/// Where [`tanh`] is ±1 in f32.
const TANH_CLAMP: f32 = 7.905_311;

/// Eigen's `generic_fast_tanh_float`: `x · P(x²) / Q(x²)` on `x` clamped to ±7.905 (where
/// tanh is 1 in f32).
#[inline(always)]
fn tanh(x: f32) -> f32 {
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
    let x = x.clamp(-TANH_CLAMP, TANH_CLAMP);
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

    #[test]
    fn every_level_equals_the_scalar_one() {
        let x: Vec<f32> = (0..10_007).map(|i| (i as f32 - 5_000.0) * 2e-3).collect();
        let mut want = vec![0f32; x.len()];
        gelu_slice_at(crate::cpu::Level::Scalar, &x, &mut want);
        for level in crate::cpu::available() {
            let mut got = vec![0f32; x.len()];
            gelu_slice_at(level, &x, &mut got);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                    "{level}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn derivative_is_exact() {
        let exact = |x: f64| {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            let t = (k * (x + 0.044715 * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x)
        };
        let mut worst = 0f64;
        for i in -12_000..=12_000 {
            let x = i as f64 * 1e-3;
            worst = worst.max((gelu_derivative(x as f32) as f64 - exact(x)).abs());
        }
        assert!(worst < 5e-6, "{worst}");
        // And it is the derivative: a central difference of the forward function agrees.
        for x in [-3.0f64, -0.7, 0.0, 0.4, 1.3, 5.0] {
            let h = 1e-3;
            let fd = (gelu((x + h) as f32) as f64 - gelu((x - h) as f32) as f64) / (2.0 * h);
            assert!((fd - gelu_derivative(x as f32) as f64).abs() < 1e-3, "{x}");
        }
    }

    #[test]
    fn its_gradient_equals_candles() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (3, 5_003), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 5_003), &dev).unwrap();
        let grad = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
            let v = candle_core::Var::from_tensor(&x).unwrap();
            let l = (f(v.as_tensor()).unwrap() * &w).unwrap().sum_all().unwrap();
            l.backward().unwrap().get(v.as_tensor()).unwrap().clone()
        };
        let ours = grad(&gelu_tanh);
        // candle's backward rounds its constants (0.0356774 for √(2/π)·0.044715, ...), which
        // shows at |x| ~ 10; the exact derivative is checked below.
        let candles = grad(&|x: &Tensor| x.gelu());
        let diff = crate::testkit::max_abs_diff(&ours, &candles).unwrap();
        assert!(diff < 5e-4, "{diff}");
        assert!(crate::testkit::abs_sum(&ours).unwrap() > 1.0);
    }
}
