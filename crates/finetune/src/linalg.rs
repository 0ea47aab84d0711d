//! A truncated SVD, for factorising a combined delta-W back into LoRA's `B A` of rank r.
//!
//! Written here because candle has no SVD, a LAPACK binding would add a system library to a
//! product that otherwise builds with cargo alone, and a general linear-algebra crate is a
//! large compile for one function. The matrices are small (at most a few thousand rows) and
//! of low effective rank, and only the top r factors are wanted, which is the case the
//! randomized range finder of Halko, Martinsson & Tropp (2011) is made for: sample the range
//! with a seeded Gaussian test matrix (r + 10 columns) and two power iterations, orthonormalise
//! (Gram-Schmidt, twice), then decompose the small projected matrix exactly through the Jacobi
//! eigen-decomposition of its k×k Gram matrix. Everything runs in f64; big products go through
//! candle's matmul. A matrix whose rank is at most k is reproduced to rounding error.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::error::Result;

const OVERSAMPLE: usize = 10;
const POWER_ITERS: usize = 2;

/// Orthonormalise the columns of `y` (`[n, k]`): modified Gram-Schmidt, run twice for
/// stability; columns that vanish (dependent ones) become zero.
fn orthonormal_columns(y: &Tensor) -> Result<Tensor> {
    let (n, k) = y.dims2()?;
    let mut cols: Vec<Vec<f64>> = y.t()?.to_dtype(DType::F64)?.to_vec2()?;
    let scale0: f64 = cols
        .iter()
        .map(|c| c.iter().map(|x| x * x).sum::<f64>().sqrt())
        .fold(0.0, f64::max);
    for j in 0..k {
        for _ in 0..2 {
            for i in 0..j {
                let (done, rest) = cols.split_at_mut(j);
                let qi = &done[i];
                let d: f64 = qi.iter().zip(&rest[0]).map(|(a, b)| a * b).sum();
                for (x, q) in rest[0].iter_mut().zip(qi) {
                    *x -= d * q;
                }
            }
        }
        let norm = cols[j].iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-12 * scale0.max(f64::MIN_POSITIVE) && norm > 0.0 {
            cols[j].iter_mut().for_each(|x| *x /= norm);
        } else {
            cols[j].iter_mut().for_each(|x| *x = 0.0);
        }
    }
    let flat: Vec<f64> = cols.into_iter().flatten().collect();
    Ok(Tensor::from_vec(flat, (k, n), &Device::Cpu)?
        .t()?
        .contiguous()?)
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: eigenvalues in
/// descending order and the matching eigenvectors as columns (`vecs[row][col]`).
pub fn symmetric_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v = vec![vec![0.0; n]; n];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let total: f64 = a.iter().flatten().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off <= 1e-30 * total.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (rp, rq) = {
                    let (lo, hi) = a.split_at_mut(q);
                    (&mut lo[p], &mut hi[0])
                };
                for (x, y) in rp.iter_mut().zip(rq.iter_mut()) {
                    let (apk, aqk) = (*x, *y);
                    *x = c * apk - s * aqk;
                    *y = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j][j].total_cmp(&a[i][i]));
    let vals = order.iter().map(|&i| a[i][i]).collect();
    let vecs = (0..n)
        .map(|row| order.iter().map(|&i| v[row][i]).collect())
        .collect();
    (vals, vecs)
}

/// Best rank-`r` factorisation of `m` (`[out, in]`): `(B [out, r], A [r, in])` with
/// `B = U_r Σ_r` and `A = V_rᵀ` (PEFT's convention), f32 on `m`'s device. `seed` fixes the
/// random test matrix.
pub fn low_rank(m: &Tensor, r: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let device = m.device().clone();
    let (out, inp) = m.dims2()?;
    let m64 = m.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let k = (r + OVERSAMPLE).min(out.min(inp)).max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let omega: Vec<f64> = (0..inp * k)
        .map(|_| {
            // Box-Muller
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect();
    let omega = Tensor::from_vec(omega, (inp, k), &Device::Cpu)?;
    let mut q = orthonormal_columns(&m64.matmul(&omega)?)?;
    let mt = m64.t()?.contiguous()?;
    for _ in 0..POWER_ITERS {
        let z = orthonormal_columns(&mt.matmul(&q)?)?;
        q = orthonormal_columns(&m64.matmul(&z)?)?;
    }
    let small = q.t()?.contiguous()?.matmul(&m64)?; // [k, in]
    let gram: Vec<Vec<f64>> = small.matmul(&small.t()?.contiguous()?)?.to_vec2()?;
    let (vals, vecs) = symmetric_eigen(gram);
    let sigma: Vec<f64> = vals.iter().map(|v| v.max(0.0).sqrt()).collect();
    let smax = sigma.first().copied().unwrap_or(0.0);
    let r_eff = r.min(k);
    // W_r [k, r]; B = Q W_r Σ_r; A = Σ_r⁻¹ W_rᵀ small.
    let w: Vec<f64> = (0..k)
        .flat_map(|row| (0..r).map(move |c| (row, c)))
        .map(|(row, c)| if c < r_eff { vecs[row][c] } else { 0.0 })
        .collect();
    let w = Tensor::from_vec(w, (k, r), &Device::Cpu)?;
    let s: Vec<f64> = (0..r)
        .map(|c| if c < r_eff { sigma[c] } else { 0.0 })
        .collect();
    let inv: Vec<f64> = s
        .iter()
        .map(|&x| {
            if x > 1e-12 * smax && x > 0.0 {
                1.0 / x
            } else {
                0.0
            }
        })
        .collect();
    let s = Tensor::from_vec(s, (1, r), &Device::Cpu)?;
    let inv = Tensor::from_vec(inv, (r, 1), &Device::Cpu)?;
    let b = q.matmul(&w)?.broadcast_mul(&s)?;
    let a = w.t()?.contiguous()?.matmul(&small)?.broadcast_mul(&inv)?;
    Ok((
        b.to_dtype(DType::F32)?.to_device(&device)?,
        a.to_dtype(DType::F32)?.to_device(&device)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_mat(rows: usize, cols: usize, seed: u64) -> Tensor {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    fn max_abs(t: &Tensor) -> f32 {
        copilot_engine::testkit::abs_max(t).unwrap()
    }

    #[test]
    fn reproduces_low_rank_matrices_exactly() {
        // rank 5, asked for rank 8: exact.
        let m = rand_mat(120, 5, 1).matmul(&rand_mat(5, 70, 2)).unwrap();
        let (b, a) = low_rank(&m, 8, 0).unwrap();
        assert_eq!((b.dims(), a.dims()), (&[120, 8][..], &[8, 70][..]));
        let err = max_abs(&(b.matmul(&a).unwrap() - &m).unwrap());
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn truncation_keeps_the_dominant_directions() {
        // A strong rank-2 part plus weak noise: the rank-2 approximation is close to the
        // strong part, and better than what a rank-1 one achieves.
        let strong = rand_mat(60, 2, 3).matmul(&rand_mat(2, 40, 4)).unwrap();
        let m = (&strong + (rand_mat(60, 40, 5) * 0.01).unwrap()).unwrap();
        let (b, a) = low_rank(&m, 2, 0).unwrap();
        let err2 = max_abs(&(b.matmul(&a).unwrap() - &strong).unwrap());
        let (b1, a1) = low_rank(&m, 1, 0).unwrap();
        let err1 = max_abs(&(b1.matmul(&a1).unwrap() - &strong).unwrap());
        assert!(err2 < 0.05 && err1 > 0.1, "{err2} {err1}");
    }

    #[test]
    fn jacobi_diagonalises() {
        let (vals, vecs) = symmetric_eigen(vec![vec![2.0, 1.0], vec![1.0, 2.0]]);
        assert!((vals[0] - 3.0).abs() < 1e-12 && (vals[1] - 1.0).abs() < 1e-12);
        assert!((vecs[0][0].abs() - 0.5f64.sqrt()).abs() < 1e-12);
    }
}
