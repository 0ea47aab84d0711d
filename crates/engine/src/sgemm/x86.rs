//! x86 micro-kernels for [`super`]: AVX2 + FMA 6 x 16 (12 accumulators of the 16 `ymm`
//! registers, as BLIS's Haswell kernel), AVX-512 12 x 32 (24 of the 32 `zmm`).

// Register tiles are arrays indexed by row and vector: index loops read best there.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{Level, MicroFn};

pub(super) fn micro_fn(level: Level) -> MicroFn {
    match level {
        Level::Avx2 | Level::Avx2Vnni => by_rows_avx2,
        Level::Avx512 | Level::Avx512Vnni => by_rows_avx512,
        _ => unreachable!("not an x86 level: {level}"),
    }
}

macro_rules! by_rows {
    ($name:ident, $micro:ident, [$($r:literal),+]) => {
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
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
                $( $r => $micro::<$r>(a, lda, ka, b, ldb, kc, c, ldc, nc, accumulate), )+
                _ => unreachable!("{mr} rows"),
            }
        }
    };
}

by_rows!(by_rows_avx2, micro_avx2, [1, 2, 3, 4, 5, 6]);
by_rows!(
    by_rows_avx512,
    micro_avx512,
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
);

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_avx2<const MR: usize>(
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
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for kk in 0..kc {
        let b0 = _mm256_loadu_ps(b.add(kk * ldb));
        let b1 = _mm256_loadu_ps(b.add(kk * ldb + 8));
        for i in 0..MR {
            let ai = _mm256_broadcast_ss(&*a.add(i * lda + kk * ka));
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let row = c.add(i * ldc);
        if nc == 16 {
            for (h, &v) in acc.iter().enumerate() {
                let p = row.add(8 * h);
                let v = if accumulate {
                    _mm256_add_ps(_mm256_loadu_ps(p), v)
                } else {
                    v
                };
                _mm256_storeu_ps(p, v);
            }
        } else {
            let mut tmp = [0f32; 16];
            _mm256_storeu_ps(tmp.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), acc[1]);
            for (j, &v) in tmp[..nc].iter().enumerate() {
                *row.add(j) = if accumulate { *row.add(j) + v } else { v };
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_avx512<const MR: usize>(
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
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for kk in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(kk * ldb));
        let b1 = _mm512_loadu_ps(b.add(kk * ldb + 16));
        for i in 0..MR {
            let ai = _mm512_set1_ps(*a.add(i * lda + kk * ka));
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    // Masked loads and stores for a partial panel (bit j: column j is in the matrix).
    let masks = [
        (((1u32 << nc.min(16)) - 1) & 0xFFFF) as u16,
        (((1u64 << nc.saturating_sub(16)) - 1) & 0xFFFF) as u16,
    ];
    for (i, acc) in acc.iter().enumerate() {
        let row = c.add(i * ldc);
        for (h, &v) in acc.iter().enumerate() {
            let p = row.add(16 * h);
            let m = masks[h];
            if m == 0xFFFF {
                let v = if accumulate {
                    _mm512_add_ps(_mm512_loadu_ps(p), v)
                } else {
                    v
                };
                _mm512_storeu_ps(p, v);
            } else if m != 0 {
                let v = if accumulate {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(m, p), v)
                } else {
                    v
                };
                _mm512_mask_storeu_ps(p, m, v);
            }
        }
    }
}
