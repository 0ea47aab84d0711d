//! x86 kernels for [`super`]: AVX2 works on a tile as two 256-bit halves (8 rows each),
//! AVX-512 on one 512-bit vector; with VNNI one `vpdpbusd` does the 4-value dot products of
//! 16 (or 8) rows, without it `pmaddubsw` + `pmaddwd` do.
//!
//! Each micro-kernel is its own `#[target_feature]` function (called once per register
//! block, so the call costs nothing), so its intrinsics are compiled for that level whatever
//! the optimisation level of the build.

// Register tiles are arrays indexed by row and vector: index loops read best there.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{Level, QFormat, TileArgs, TileFn, BLOCK, TILE};

pub(super) fn tile_fn(level: Level) -> TileFn {
    match level {
        Level::Avx2 => drive_avx2,
        Level::Avx2Vnni => drive_avx2_vnni,
        Level::Avx512 => drive_avx512,
        Level::Avx512Vnni => drive_avx512_vnni,
        _ => unreachable!("not an x86 level: {level}"),
    }
}

/// Four activation bytes at `p`, in every 32-bit lane.
macro_rules! bcast4 {
    ($set1:ident, $p:expr) => {
        $set1(std::ptr::read_unaligned($p as *const i32))
    };
}

/// Register blocks for a task: rows in steps of `$rmax`, tiles in steps of `$tmax`; the
/// remainders go to smaller instantiations of the same micro-kernel.
macro_rules! driver {
    ($name:ident, $micro:ident, tiles: $tmax:tt, rows: [$($r:literal),+]) => {
        unsafe fn $name(t: &TileArgs) {
            let q4 = t.w.format == QFormat::Q4_0;
            let rmax = [$($r),+].len();
            let rows = t.a.rows;
            let mut r0 = 0;
            while r0 < rows {
                let nr = (rows - r0).min(rmax);
                let mut tile = t.tiles.start;
                while tile < t.tiles.end {
                    let nt = (t.tiles.end - tile).min(driver!(@count $tmax));
                    driver!(@pick $micro, t, tile, r0, q4, nt, nr, $tmax, [$($r),+]);
                    tile += nt;
                }
                r0 += nr;
            }
        }
    };
    (@count two) => { 2 };
    (@count one) => { 1 };
    (@pick $micro:ident, $t:ident, $tile:ident, $r0:ident, $q4:ident, $nt:ident, $nr:ident, two, [$($r:literal),+]) => {
        match ($q4, $nt, $nr) {
            $( (false, 2, $r) => $micro::<2, $r, false>($t, $tile, $r0),
               (true, 2, $r) => $micro::<2, $r, true>($t, $tile, $r0),
               (false, _, $r) => $micro::<1, $r, false>($t, $tile, $r0),
               (true, _, $r) => $micro::<1, $r, true>($t, $tile, $r0), )+
            _ => unreachable!(),
        }
    };
    (@pick $micro:ident, $t:ident, $tile:ident, $r0:ident, $q4:ident, $nt:ident, $nr:ident, one, [$($r:literal),+]) => {
        match ($q4, $nr) {
            $( (false, $r) => $micro::<1, $r, false>($t, $tile, $r0),
               (true, $r) => $micro::<1, $r, true>($t, $tile, $r0), )+
            _ => unreachable!(),
        }
    };
}

// AVX2: one tile (two halves) at a time. Without VNNI, q8_0 needs |a|, sign(w, a), a ones
// vector and 2 registers a row: 2 rows fit the 16 registers.
driver!(drive_avx2, micro_avx2, tiles: one, rows: [1, 2, 3]);
driver!(drive_avx2_vnni, micro_avx2_vnni, tiles: one, rows: [1, 2, 3]);
// AVX-512: two tiles by four rows: 16 accumulators, 8 sums of blocks, 32 registers.
driver!(drive_avx512, micro_avx512, tiles: two, rows: [1, 2, 3, 4]);
driver!(drive_avx512_vnni, micro_avx512_vnni, tiles: two, rows: [1, 2, 3, 4]);

/// `G` tiles (of two 8-row halves each; `G` is 1 here) by `R` rows over every block.
macro_rules! micro256 {
    ($name:ident, $features:literal, vnni: $vnni:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name<const G: usize, const R: usize, const Q4: bool>(
            t: &TileArgs,
            tile: usize,
            r0: usize,
        ) {
            debug_assert_eq!(G, 1);
            let (w, a) = (t.w, t.a);
            let (kb, k) = (w.kb, w.k);
            let lines = w.format.lines();
            let off = w.offset();
            let m4 = _mm256_set1_epi8(0x0F);
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_ps(); R]; 2];
            for b in 0..kb {
                let mut dot = [[_mm256_setzero_si256(); R]; 2];
                if off != 0 {
                    for r in 0..R {
                        let c = _mm256_set1_epi32(-off * *a.sums.get_unchecked((r0 + r) * kb + b));
                        dot[0][r] = c;
                        dot[1][r] = c;
                    }
                }
                let wp = w.qs.as_ptr().add((tile * kb + b) * lines) as *const __m256i;
                let ap = a.qs.as_ptr().add(r0 * k + b * BLOCK);
                if Q4 {
                    for p in 0..4 {
                        let mut lo = [_mm256_setzero_si256(); 2];
                        let mut hi = lo;
                        for h in 0..2 {
                            let v = _mm256_load_si256(wp.add(2 * p + h));
                            lo[h] = _mm256_and_si256(v, m4);
                            hi[h] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                        }
                        for r in 0..R {
                            let alo = bcast4!(_mm256_set1_epi32, ap.add(r * k + 4 * p));
                            let ahi = bcast4!(_mm256_set1_epi32, ap.add(r * k + 16 + 4 * p));
                            for h in 0..2 {
                                if $vnni {
                                    dot[h][r] = _mm256_dpbusd_avx_epi32(dot[h][r], lo[h], alo);
                                    dot[h][r] = _mm256_dpbusd_avx_epi32(dot[h][r], hi[h], ahi);
                                } else {
                                    let p = _mm256_add_epi16(
                                        _mm256_maddubs_epi16(lo[h], alo),
                                        _mm256_maddubs_epi16(hi[h], ahi),
                                    );
                                    dot[h][r] =
                                        _mm256_add_epi32(dot[h][r], _mm256_madd_epi16(p, ones));
                                }
                            }
                        }
                    }
                } else {
                    for s in 0..8 {
                        let wv = [
                            _mm256_load_si256(wp.add(2 * s)),
                            _mm256_load_si256(wp.add(2 * s + 1)),
                        ];
                        for r in 0..R {
                            let av = bcast4!(_mm256_set1_epi32, ap.add(r * k + 4 * s));
                            if $vnni {
                                for h in 0..2 {
                                    dot[h][r] = _mm256_dpbusd_avx_epi32(dot[h][r], wv[h], av);
                                }
                            } else {
                                let aa = bcast4!(
                                    _mm256_set1_epi32,
                                    a.abs.as_ptr().add((r0 + r) * k + b * BLOCK + 4 * s)
                                );
                                for h in 0..2 {
                                    let sw = _mm256_sign_epi8(wv[h], av);
                                    let p = _mm256_maddubs_epi16(aa, sw);
                                    dot[h][r] =
                                        _mm256_add_epi32(dot[h][r], _mm256_madd_epi16(p, ones));
                                }
                            }
                        }
                    }
                }
                let sp = w.scales.as_ptr().add((tile * kb + b) * TILE);
                let dw = [
                    _mm256_cvtph_ps(_mm_loadu_si128(sp as *const __m128i)),
                    _mm256_cvtph_ps(_mm_loadu_si128(sp.add(8) as *const __m128i)),
                ];
                for r in 0..R {
                    let da = _mm256_set1_ps(*a.d.get_unchecked((r0 + r) * kb + b));
                    for h in 0..2 {
                        acc[h][r] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(dot[h][r]),
                            _mm256_mul_ps(dw[h], da),
                            acc[h][r],
                        );
                    }
                }
            }
            for r in 0..R {
                let mut v = [0f32; TILE];
                _mm256_storeu_ps(v.as_mut_ptr(), acc[0][r]);
                _mm256_storeu_ps(v.as_mut_ptr().add(8), acc[1][r]);
                t.store(r0 + r, tile, &v);
            }
        }
    };
}

micro256!(micro_avx2, "avx2,fma,f16c", vnni: false);
micro256!(micro_avx2_vnni, "avx2,fma,f16c,avxvnni", vnni: true);

/// `G` tiles by `R` rows over every block, one 512-bit vector per tile.
macro_rules! micro512 {
    ($name:ident, $features:literal, vnni: $vnni:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name<const G: usize, const R: usize, const Q4: bool>(
            t: &TileArgs,
            tile: usize,
            r0: usize,
        ) {
            let (w, a) = (t.w, t.a);
            let (kb, k) = (w.kb, w.k);
            let lines = w.format.lines();
            let off = w.offset();
            let m4 = _mm512_set1_epi8(0x0F);
            let ones = _mm512_set1_epi16(1);
            let zero = _mm512_setzero_si512();
            let mut acc = [[_mm512_setzero_ps(); R]; G];
            for b in 0..kb {
                let mut dot = [[zero; R]; G];
                if off != 0 {
                    for r in 0..R {
                        let c = _mm512_set1_epi32(-off * *a.sums.get_unchecked((r0 + r) * kb + b));
                        for d in dot.iter_mut() {
                            d[r] = c;
                        }
                    }
                }
                let wp =
                    |g: usize| w.qs.as_ptr().add(((tile + g) * kb + b) * lines) as *const __m512i;
                let ap = a.qs.as_ptr().add(r0 * k + b * BLOCK);
                if Q4 {
                    for p in 0..4 {
                        let mut lo = [zero; G];
                        let mut hi = [zero; G];
                        for g in 0..G {
                            let v = _mm512_load_si512(wp(g).add(p));
                            lo[g] = _mm512_and_si512(v, m4);
                            hi[g] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
                        }
                        for r in 0..R {
                            let alo = bcast4!(_mm512_set1_epi32, ap.add(r * k + 4 * p));
                            let ahi = bcast4!(_mm512_set1_epi32, ap.add(r * k + 16 + 4 * p));
                            for g in 0..G {
                                if $vnni {
                                    dot[g][r] = _mm512_dpbusd_epi32(dot[g][r], lo[g], alo);
                                    dot[g][r] = _mm512_dpbusd_epi32(dot[g][r], hi[g], ahi);
                                } else {
                                    let p = _mm512_add_epi16(
                                        _mm512_maddubs_epi16(lo[g], alo),
                                        _mm512_maddubs_epi16(hi[g], ahi),
                                    );
                                    dot[g][r] =
                                        _mm512_add_epi32(dot[g][r], _mm512_madd_epi16(p, ones));
                                }
                            }
                        }
                    }
                } else {
                    for s in 0..8 {
                        let mut wv = [zero; G];
                        for g in 0..G {
                            wv[g] = _mm512_load_si512(wp(g).add(s));
                        }
                        for r in 0..R {
                            let av = bcast4!(_mm512_set1_epi32, ap.add(r * k + 4 * s));
                            if $vnni {
                                for g in 0..G {
                                    dot[g][r] = _mm512_dpbusd_epi32(dot[g][r], wv[g], av);
                                }
                            } else {
                                let aa = bcast4!(
                                    _mm512_set1_epi32,
                                    a.abs.as_ptr().add((r0 + r) * k + b * BLOCK + 4 * s)
                                );
                                let neg = _mm512_movepi8_mask(av);
                                for g in 0..G {
                                    let sw = _mm512_mask_sub_epi8(wv[g], neg, zero, wv[g]);
                                    let p = _mm512_maddubs_epi16(aa, sw);
                                    dot[g][r] =
                                        _mm512_add_epi32(dot[g][r], _mm512_madd_epi16(p, ones));
                                }
                            }
                        }
                    }
                }
                let mut dw = [_mm512_setzero_ps(); G];
                for g in 0..G {
                    let sp = w.scales.as_ptr().add(((tile + g) * kb + b) * TILE);
                    dw[g] = _mm512_cvtph_ps(_mm256_loadu_si256(sp as *const __m256i));
                }
                for r in 0..R {
                    let da = _mm512_set1_ps(*a.d.get_unchecked((r0 + r) * kb + b));
                    for g in 0..G {
                        acc[g][r] = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(dot[g][r]),
                            _mm512_mul_ps(dw[g], da),
                            acc[g][r],
                        );
                    }
                }
            }
            for g in 0..G {
                for r in 0..R {
                    let mut v = [0f32; TILE];
                    _mm512_storeu_ps(v.as_mut_ptr(), acc[g][r]);
                    t.store(r0 + r, tile + g, &v);
                }
            }
        }
    };
}

micro512!(micro_avx512, "avx512f,avx512bw,avx512vl,avx2,fma,f16c", vnni: false);
micro512!(micro_avx512_vnni, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", vnni: true);
