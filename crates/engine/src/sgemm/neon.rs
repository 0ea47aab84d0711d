//! aarch64 micro-kernel for [`super`]: 6 x 16 (24 accumulators of the 32 vector registers).

// Register tiles are arrays indexed by row and vector: index loops read best there.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;

use super::{Level, MicroFn};

pub(super) fn micro_fn(level: Level) -> MicroFn {
    match level {
        Level::Neon | Level::NeonDot => by_rows,
        _ => unreachable!("not an aarch64 level: {level}"),
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn by_rows(
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
    match mr {
        1 => micro::<1>(a, lda, ka, b, ldb, kc, c, ldc, nc, accumulate),
        2 => micro::<2>(a, lda, ka, b, ldb, kc, c, ldc, nc, accumulate),
        3 => micro::<3>(a, lda, ka, b, ldb, kc, c, ldc, nc, accumulate),
        4 => micro::<4>(a, lda, ka, b, ldb, kc, c, ldc, nc, accumulate),
        5 => micro::<5>(a, lda, ka, b, ldb, kc, c, ldc, nc, accumulate),
        6 => micro::<6>(a, lda, ka, b, ldb, kc, c, ldc, nc, accumulate),
        _ => unreachable!("{mr} rows"),
    }
}

#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const MR: usize>(
    a: *const f32,
    lda: usize,
    ka: usize,
    b: *const f32,
    ldb: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    nc: usize,
    accumulate: bool,
) {
    let mut acc = [[vdupq_n_f32(0.0); 4]; MR];
    for kk in 0..kc {
        let bp = b.add(kk * ldb);
        let bv = [
            vld1q_f32(bp),
            vld1q_f32(bp.add(4)),
            vld1q_f32(bp.add(8)),
            vld1q_f32(bp.add(12)),
        ];
        for i in 0..MR {
            let ai = vld1q_dup_f32(a.add(i * lda + kk * ka));
            for q in 0..4 {
                acc[i][q] = vfmaq_f32(acc[i][q], ai, bv[q]);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let row = c.add(i * ldc);
        let mut tmp = [0f32; 16];
        for (q, &v) in acc.iter().enumerate() {
            vst1q_f32(tmp.as_mut_ptr().add(4 * q), v);
        }
        for (j, &v) in tmp[..nc].iter().enumerate() {
            *row.add(j) = if accumulate { *row.add(j) + v } else { v };
        }
    }
}
