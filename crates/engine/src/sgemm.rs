//! `x Wᵀ` in f32 on the CPU for many rows of `x` (a prefill chunk, a scoring batch): a
//! register-tiled product in the BLIS layout, for each [`Level`].
//!
//! Why our own rather than candle's `gemm` crate: `gemm` picks its kernels by run-time
//! detection that nothing can cap, so with `COPILOT_LSP_CPU=avx2` on an AVX-512 machine the
//! prefill would still run AVX-512 code and the AVX2 figures would be wrong; and it packs
//! both operands for every product where one suffices here. Each task owns a range of
//! weight rows (output columns): it copies a `KC`-deep slice of them into panels of `NR`
//! columns (`[panel][kk][NR]`, the transpose that lets a vector load `NR` outputs' weights
//! at once), then runs the micro-kernel over every `MR`-row block of `x`, which broadcasts
//! one value of each row and accumulates an `MR x NR` block of `y` in registers. Few rows
//! (a decode step) go to [`crate::skinny`] instead, which reads `W` once without copying it.
//!
//! Knows nothing of tensors or models: slices in, slices out.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::cpu::Level;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Depth of a packed slice of `W`: an `NR x KC` panel stays in L1 (32 KB at NR = 32).
const KC: usize = 256;

/// Register block for a level: `(MR, NR)`.
pub(crate) fn geometry(level: Level) -> (usize, usize) {
    match level {
        Level::Avx512 | Level::Avx512Vnni => (12, 32),
        Level::Avx2 | Level::Avx2Vnni => (6, 16),
        Level::Neon | Level::NeonDot => (6, 16),
        Level::Scalar => (4, 16),
    }
}

/// `c[i][j] (+)= Σ_kk a[i][kk] · b[kk][j]` for `i < mr`, `j < nc`: `a[i][kk]` at
/// `i·lda + kk·ka` (`ka` 1 for row-major, `lda` 1 to read a transposed matrix),
/// `b` rows of `NR` values at stride `ldb` (a packed panel `[kc][NR]`, or rows of a larger
/// matrix: all `NR` are read), `c` rows at stride `ldc`; adds to `c` when `accumulate`.
pub(crate) type MicroFn = unsafe fn(
    a: *const f32,
    lda: usize,
    ka: usize,
    mr: usize,
    b: *const f32,
    ldb: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
);

pub(crate) fn micro_kernel(level: Level) -> MicroFn {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx2Vnni | Level::Avx512 | Level::Avx512Vnni => x86::micro_fn(level),
        #[cfg(target_arch = "aarch64")]
        Level::Neon | Level::NeonDot => neon::micro_fn(level),
        _ => micro_scalar,
    }
}

/// `y`'s base pointer, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint columns of `y` (see `matmul_t`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

thread_local! {
    /// Each thread's packed panels, kept between products (a prefill runs hundreds).
    static PANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y (m, n) = x (m, k) · w (n, k)ᵀ`, row-major, with `level`'s kernels (which the CPU must
/// support: [`Level::supported`]).
pub fn matmul_t(x: &[f32], m: usize, w: &[f32], n: usize, k: usize, level: Level) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not ({m}, {k})");
    assert_eq!(w.len(), n * k, "w is not ({n}, {k})");
    assert!(level.supported(), "{level} is not supported by this CPU");
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return y;
    }
    let (mr, nr) = geometry(level);
    let micro = micro_kernel(level);
    // Tasks of whole panels: enough to balance the threads, at most 8 panels each.
    let panels = n.div_ceil(nr);
    let threads = rayon::current_num_threads().max(1);
    let per_task = panels.div_ceil(threads * 3).clamp(1, 8);
    let tasks = panels.div_ceil(per_task);
    let out = OutPtr(y.as_mut_ptr());
    let run = |task: usize| {
        let p0 = task * per_task;
        let p1 = (p0 + per_task).min(panels);
        PANELS.with(|buf| {
            let mut buf = buf.borrow_mut();
            let need = (p1 - p0) * nr * KC;
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
            for kc0 in (0..k).step_by(KC) {
                let kc = KC.min(k - kc0);
                pack(w, n, k, p0 * nr..p1 * nr, kc0, kc, nr, &mut buf);
                for r0 in (0..m).step_by(mr) {
                    let rows = mr.min(m - r0);
                    for p in p0..p1 {
                        let col = p * nr;
                        // SAFETY: `x` has `m · k` values, so rows `r0..r0 + rows` from column
                        // `kc0` hold `kc` each; the panel holds `kc · nr`; `y` has `m · n`
                        // values and this task alone writes columns `col..col + nc`; the
                        // level is supported (asserted above).
                        unsafe {
                            micro(
                                x.as_ptr().add(r0 * k + kc0),
                                k,
                                1,
                                rows,
                                buf.as_ptr().add((p - p0) * kc * nr),
                                nr,
                                kc,
                                out.get().add(r0 * n + col),
                                n,
                                nr.min(n - col),
                                kc0 > 0,
                            );
                        }
                    }
                }
            }
        });
    };
    if tasks == 1 {
        run(0);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
    y
}

/// Copy `w[cols][kc0..kc0 + kc]` into panels `[panel][kk][nr]`; columns past `n` are zeros.
#[allow(clippy::too_many_arguments)]
fn pack(
    w: &[f32],
    n: usize,
    k: usize,
    cols: std::ops::Range<usize>,
    kc0: usize,
    kc: usize,
    nr: usize,
    buf: &mut [f32],
) {
    for (p, panel) in buf[..cols.len() * kc].chunks_exact_mut(kc * nr).enumerate() {
        for j in 0..nr {
            let col = cols.start + p * nr + j;
            if col < n {
                let src = &w[col * k + kc0..][..kc];
                for (kk, &v) in src.iter().enumerate() {
                    panel[kk * nr + j] = v;
                }
            } else {
                for kk in 0..kc {
                    panel[kk * nr + j] = 0.0;
                }
            }
        }
    }
}

/// The reference micro-kernel (`NR` = 16).
///
/// # Safety
/// The pointers cover the ranges [`MicroFn`] describes.
#[allow(clippy::too_many_arguments)]
unsafe fn micro_scalar(
    a: *const f32,
    lda: usize,
    ka: usize,
    mr: usize,
    b: *const f32,
    ldb: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    const NR: usize = 16;
    for i in 0..mr {
        let mut acc = [0f32; NR];
        for kk in 0..kc {
            let av = *a.add(i * lda + kk * ka);
            let bp = std::slice::from_raw_parts(b.add(kk * ldb), NR);
            for (s, &bv) in acc.iter_mut().zip(bp) {
                *s += av * bv;
            }
        }
        let row = std::slice::from_raw_parts_mut(c.add(i * ldc), nc);
        for (dst, &s) in row.iter_mut().zip(&acc) {
            *dst = if accumulate { *dst + s } else { s };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn every_level_equals_a_plain_product_on_odd_sizes() {
        // Row counts around each level's MR, columns around NR and a partial panel, depths
        // across a KC boundary.
        for (m, n, k) in [
            (1, 1, 1),
            (7, 33, 17),
            (13, 70, 300),
            (25, 16, 513),
            (12, 96, 256),
        ] {
            let x = random(m * k, m as u64);
            let w = random(n * k, n as u64 + 1000);
            let mut want = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    want[i * n + j] = (0..k)
                        .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                        .sum();
                }
            }
            for level in crate::cpu::available() {
                let got = matmul_t(&x, m, &w, n, k, level);
                for (idx, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g as f64 - e).abs() < 1e-4 * (k as f64).sqrt(),
                        "{m}x{n}x{k} at {level}, element {idx}: {g} vs {e}"
                    );
                }
            }
        }
    }
}
