//! aarch64 kernels for [`super`]: a tile is four 128-bit vectors of 4 rows. With the
//! dot-product extension one `sdot` does 4 rows' 4-value dot products (written as inline
//! assembly: Rust's `vdotq_s32` is not stable yet); without it `smull` + `sadalp`.

// Register tiles are arrays indexed by row and vector: index loops read best there.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Level, QFormat, TileArgs, TileFn, BLOCK, TILE};

pub(super) fn tile_fn(level: Level) -> TileFn {
    match level {
        Level::Neon => drive_neon,
        Level::NeonDot => drive_neon_dot,
        _ => unreachable!("not an aarch64 level: {level}"),
    }
}

macro_rules! driver {
    ($name:ident, $micro:ident, rows: [$($r:literal),+]) => {
        unsafe fn $name(t: &TileArgs) {
            let q4 = t.w.format == QFormat::Q4_0;
            let rmax = [$($r),+].len();
            let rows = t.a.rows;
            let mut r0 = 0;
            while r0 < rows {
                let nr = (rows - r0).min(rmax);
                for tile in t.tiles.clone() {
                    match (q4, nr) {
                        $( (false, $r) => $micro::<$r, false>(t, tile, r0),
                           (true, $r) => $micro::<$r, true>(t, tile, r0), )+
                        _ => unreachable!(),
                    }
                }
                r0 += nr;
            }
        }
    };
}

// 32 vector registers: 4 vectors a row of f32 sums and 4 (dotprod) or 8 (pairs) of int sums.
driver!(drive_neon, micro_neon, rows: [1, 2]);
driver!(drive_neon_dot, micro_neon_dot, rows: [1, 2, 3]);

/// Four f16 scales (bits) to f32: the exponent rebased by a multiply, which also handles
/// subnormals; scales are finite.
#[inline(always)]
unsafe fn f16x4(p: *const u16) -> float32x4_t {
    let h = vmovl_u16(vld1_u16(p));
    let mag = vshlq_n_u32::<13>(vandq_u32(h, vdupq_n_u32(0x7fff)));
    let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
    let f = vmulq_f32(
        vreinterpretq_f32_u32(mag),
        vdupq_n_f32(f32::from_bits(0x7780_0000)),
    );
    vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(f), sign))
}

#[inline(always)]
unsafe fn dup4(p: *const i8) -> int8x16_t {
    vreinterpretq_s8_s32(vld1q_dup_s32(p as *const i32))
}

/// The tile's values for one step: `[4 rows x 4 values] x 4` (q8_0), or the low and high
/// nibbles of one q4_0 line.
#[inline(always)]
unsafe fn load_q8(p: *const u8) -> [int8x16_t; 4] {
    let p = p as *const i8;
    [
        vld1q_s8(p),
        vld1q_s8(p.add(16)),
        vld1q_s8(p.add(32)),
        vld1q_s8(p.add(48)),
    ]
}

#[inline(always)]
unsafe fn load_q4(p: *const u8) -> ([int8x16_t; 4], [int8x16_t; 4]) {
    let m = vdupq_n_u8(0x0F);
    let mut lo = [vdupq_n_s8(0); 4];
    let mut hi = lo;
    for q in 0..4 {
        let v = vld1q_u8(p.add(16 * q));
        lo[q] = vreinterpretq_s8_u8(vandq_u8(v, m));
        hi[q] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
    }
    (lo, hi)
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn micro_neon_dot<const R: usize, const Q4: bool>(t: &TileArgs, tile: usize, r0: usize) {
    // Its own target feature (not `inline(always)`), so the assembler accepts `sdot` even
    // where a debug build keeps this function out of line.
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn sdot(mut acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }
    let (w, a) = (t.w, t.a);
    let (kb, k) = (w.kb, w.k);
    let lines = w.format.lines();
    let off = w.offset();
    let mut acc = [[vdupq_n_f32(0.0); R]; 4];
    for b in 0..kb {
        let mut dot = [[vdupq_n_s32(0); R]; 4];
        for r in 0..R {
            let c = vdupq_n_s32(-off * *a.sums.get_unchecked((r0 + r) * kb + b));
            for d in dot.iter_mut() {
                d[r] = c;
            }
        }
        let wp = w.qs.as_ptr().add((tile * kb + b) * lines) as *const u8;
        let ap = a.qs.as_ptr().add(r0 * k + b * BLOCK);
        if Q4 {
            for p in 0..4 {
                let (lo, hi) = load_q4(wp.add(64 * p));
                for r in 0..R {
                    let alo = dup4(ap.add(r * k + 4 * p));
                    let ahi = dup4(ap.add(r * k + 16 + 4 * p));
                    for q in 0..4 {
                        dot[q][r] = sdot(dot[q][r], lo[q], alo);
                        dot[q][r] = sdot(dot[q][r], hi[q], ahi);
                    }
                }
            }
        } else {
            for s in 0..8 {
                let wv = load_q8(wp.add(64 * s));
                for r in 0..R {
                    let av = dup4(ap.add(r * k + 4 * s));
                    for q in 0..4 {
                        dot[q][r] = sdot(dot[q][r], wv[q], av);
                    }
                }
            }
        }
        finish_block(t, tile, b, r0, &dot, &mut acc);
    }
    store(t, tile, r0, &acc);
}

#[target_feature(enable = "neon")]
unsafe fn micro_neon<const R: usize, const Q4: bool>(t: &TileArgs, tile: usize, r0: usize) {
    // Products of 4 rows x 4 values widen to 16 bits (`smull`), and pairs of them add into
    // 32-bit lanes (`sadalp`): lanes [r0, r0, r1, r1] and [r2, r2, r3, r3], folded per block.
    #[inline(always)]
    unsafe fn mla(acc: &mut [int32x4_t; 2], w: int8x16_t, a: int8x16_t) {
        acc[0] = vpadalq_s16(acc[0], vmull_s8(vget_low_s8(w), vget_low_s8(a)));
        acc[1] = vpadalq_s16(acc[1], vmull_high_s8(w, a));
    }
    let (w, a) = (t.w, t.a);
    let (kb, k) = (w.kb, w.k);
    let lines = w.format.lines();
    let off = w.offset();
    let mut acc = [[vdupq_n_f32(0.0); R]; 4];
    for b in 0..kb {
        let mut pairs = [[[vdupq_n_s32(0); 2]; R]; 4];
        let wp = w.qs.as_ptr().add((tile * kb + b) * lines) as *const u8;
        let ap = a.qs.as_ptr().add(r0 * k + b * BLOCK);
        if Q4 {
            for p in 0..4 {
                let (lo, hi) = load_q4(wp.add(64 * p));
                for r in 0..R {
                    let alo = dup4(ap.add(r * k + 4 * p));
                    let ahi = dup4(ap.add(r * k + 16 + 4 * p));
                    for q in 0..4 {
                        mla(&mut pairs[q][r], lo[q], alo);
                        mla(&mut pairs[q][r], hi[q], ahi);
                    }
                }
            }
        } else {
            for s in 0..8 {
                let wv = load_q8(wp.add(64 * s));
                for r in 0..R {
                    let av = dup4(ap.add(r * k + 4 * s));
                    for q in 0..4 {
                        mla(&mut pairs[q][r], wv[q], av);
                    }
                }
            }
        }
        let mut dot = [[vdupq_n_s32(0); R]; 4];
        for r in 0..R {
            let c = vdupq_n_s32(-off * *a.sums.get_unchecked((r0 + r) * kb + b));
            for q in 0..4 {
                dot[q][r] = vaddq_s32(vpaddq_s32(pairs[q][r][0], pairs[q][r][1]), c);
            }
        }
        finish_block(t, tile, b, r0, &dot, &mut acc);
    }
    store(t, tile, r0, &acc);
}

/// `acc += (d_w · d_a) · dot` for one block.
#[inline(always)]
unsafe fn finish_block<const R: usize>(
    t: &TileArgs,
    tile: usize,
    b: usize,
    r0: usize,
    dot: &[[int32x4_t; R]; 4],
    acc: &mut [[float32x4_t; R]; 4],
) {
    let (w, a) = (t.w, t.a);
    let sp = w.scales.as_ptr().add((tile * w.kb + b) * TILE);
    let dw = [
        f16x4(sp),
        f16x4(sp.add(4)),
        f16x4(sp.add(8)),
        f16x4(sp.add(12)),
    ];
    for r in 0..R {
        let da = vdupq_n_f32(*a.d.get_unchecked((r0 + r) * w.kb + b));
        for q in 0..4 {
            acc[q][r] = vfmaq_f32(acc[q][r], vcvtq_f32_s32(dot[q][r]), vmulq_f32(dw[q], da));
        }
    }
}

#[inline(always)]
unsafe fn store<const R: usize>(t: &TileArgs, tile: usize, r0: usize, acc: &[[float32x4_t; R]; 4]) {
    for r in 0..R {
        let mut v = [0f32; TILE];
        for q in 0..4 {
            vst1q_f32(v.as_mut_ptr().add(4 * q), acc[q][r]);
        }
        t.store(r0 + r, tile, &v);
    }
}
