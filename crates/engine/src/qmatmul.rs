//! `x Wᵀ` on the CPU with W in GGML's q8_0 or q4_0 blocks: int8 dot products on quantized
//! activations, one kernel for every row count (a decode step of 1 to 8 tokens and a
//! prefill chunk of hundreds), for each [`Level`].
//!
//! Why our own rather than candle's `QMatMul`: candle dots one activation row with one weight
//! row at a time (`vec_dot`), and its SIMD paths are chosen at *compile* time, so the default
//! x86-64 build runs scalar code; q8_0 prefill was 2.3x slower than f32 on an AVX2 CPU
//! (59 vs 138 tok/s, issue 16). Here, as in llama.cpp's repacked kernels (`repack.cpp`) and
//! llamafile's `tinyBLAS`, the weights are repacked at load time so that one vector
//! instruction computes 16 weight rows (a *tile*) against one activation row: per 32-value
//! block, a tile stores its 16 f16 scales and then its quantized values interleaved by 4
//! (`[step 0..8][row 0..16][4 values]`), so the kernel broadcasts 4 activation bytes and
//! accumulates 16 rows at once with no horizontal sums. A register block of tiles × rows
//! loads each weight vector once for several activation rows (prefill) and streams the
//! weights once for a decode step.
//!
//! Arithmetic (the same at every level, in a different order): activations are quantized per
//! 32-block to int8 with an f32 scale `d_a = max|x| / 127` (llama.cpp rounds it to f16; f32
//! is closer to the f32 result); each block's int32 dot product is exact, and
//! `y += (d_w·d_a)·dot` in f32. Where the dot-product instruction needs an unsigned operand
//! (x86 VNNI), q8_0 values are stored as `w + 128` and the block's activation sum corrects
//! it (`Σ(w+128)a = Σwa + 128Σa`); q4_0's nibbles are stored as they are (`w + 8`) with the
//! same correction. x86 without VNNI multiplies `|a|` by `sign(w, a)` so no pair of products
//! overflows 16 bits.
//!
//! Knows nothing of models or tensors: slices in, slices out.

use std::ops::Range;

use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

use crate::cpu::Level;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Values per quantization block (q8_0 and q4_0 alike).
pub const BLOCK: usize = 32;
/// Weight rows a tile interleaves.
pub const TILE: usize = 16;

/// The block formats these kernels take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QFormat {
    Q8_0,
    Q4_0,
}

impl QFormat {
    pub fn from_ggml(d: GgmlDType) -> Option<Self> {
        match d {
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            GgmlDType::Q4_0 => Some(Self::Q4_0),
            _ => None,
        }
    }

    pub fn ggml(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
        }
    }

    /// Bytes of one GGML block: an f16 scale and the values.
    fn ggml_block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 2 + BLOCK,
            Self::Q4_0 => 2 + BLOCK / 2,
        }
    }

    /// 64-byte lines of values per (tile, block).
    fn lines(self) -> usize {
        match self {
            Self::Q8_0 => 8,
            Self::Q4_0 => 4,
        }
    }
}

/// 64 bytes, aligned so that a 512-bit load never splits a cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct Line(pub(crate) [u8; 64]);

/// A weight matrix `W (n, k)` in q8_0 or q4_0, repacked in tiles of 16 rows for `level`.
pub struct PackedQ {
    format: QFormat,
    n: usize,
    k: usize,
    /// Blocks per row, `k / 32`.
    kb: usize,
    level: Level,
    /// q8_0 stored as `w + 128`, for dot-product instructions that take one unsigned operand.
    unsigned: bool,
    /// `[tile][block][line]`; q8_0: 8 lines, `[step][row][4 values]`; q4_0: 4 lines of
    /// GGML's bytes (low nibble value `c`, high nibble `c + 16`), `[c / 4][row][c % 4]`.
    qs: Vec<Line>,
    /// f16 bits, `[tile][block][row]`; rows past `n` have scale 0.
    scales: Vec<u16>,
}

impl std::fmt::Debug for PackedQ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedQ({:?}, {}x{}, {})",
            self.format, self.n, self.k, self.level
        )
    }
}

impl PackedQ {
    /// Repack GGML blocks (row-major, `n · k/32` blocks, as `QTensor::data` and GGUF files
    /// hold them) for `level`'s kernels.
    pub fn from_ggml(
        format: QFormat,
        n: usize,
        k: usize,
        bytes: &[u8],
        level: Level,
    ) -> Result<Self, String> {
        if k == 0 || !k.is_multiple_of(BLOCK) {
            return Err(format!(
                "{format:?} rows of {k} values are not whole blocks"
            ));
        }
        let kb = k / BLOCK;
        let bb = format.ggml_block_bytes();
        if bytes.len() != n * kb * bb {
            return Err(format!(
                "{format:?} {n}x{k} needs {} bytes, got {}",
                n * kb * bb,
                bytes.len()
            ));
        }
        let unsigned =
            format == QFormat::Q8_0 && matches!(level, Level::Avx2Vnni | Level::Avx512Vnni);
        let tiles = n.div_ceil(TILE);
        let lines = format.lines();
        let mut qs = vec![Line([0; 64]); tiles * kb * lines];
        let mut scales = vec![0u16; tiles * kb * TILE];
        qs.par_chunks_mut(kb * lines)
            .zip(scales.par_chunks_mut(kb * TILE))
            .enumerate()
            .for_each(|(t, (qs, scales))| {
                for j in 0..TILE.min(n - t * TILE) {
                    let row = &bytes[(t * TILE + j) * kb * bb..][..kb * bb];
                    for (b, blk) in row.chunks_exact(bb).enumerate() {
                        scales[b * TILE + j] = u16::from_le_bytes([blk[0], blk[1]]);
                        let lines = &mut qs[b * format.lines()..][..format.lines()];
                        match format {
                            QFormat::Q8_0 => {
                                for (c, &v) in blk[2..].iter().enumerate() {
                                    // -128 cannot be negated by the sign trick; GGML never
                                    // writes it (it rounds to ±127).
                                    let v = (v as i8).max(-127) as u8;
                                    lines[c / 4].0[j * 4 + c % 4] =
                                        if unsigned { v ^ 0x80 } else { v };
                                }
                            }
                            QFormat::Q4_0 => {
                                for (c, &v) in blk[2..].iter().enumerate() {
                                    lines[c / 4].0[j * 4 + c % 4] = v;
                                }
                            }
                        }
                    }
                }
            });
        Ok(Self {
            format,
            n,
            k,
            kb,
            level,
            unsigned,
            qs,
            scales,
        })
    }

    /// Quantize an f32 matrix `(n, k)` row-major with candle's GGML quantizer, then repack.
    pub fn quantize(
        format: QFormat,
        w: &[f32],
        n: usize,
        k: usize,
        level: Level,
    ) -> Result<Self, String> {
        let t = candle_core::Tensor::from_slice(w, (n, k), &candle_core::Device::Cpu)
            .map_err(|e| e.to_string())?;
        let q = candle_core::quantized::QTensor::quantize(&t, format.ggml())
            .map_err(|e| e.to_string())?;
        let data = q.data().map_err(|e| e.to_string())?;
        Self::from_ggml(format, n, k, &data, level)
    }

    pub fn format(&self) -> QFormat {
        self.format
    }

    /// `(n, k)`: output and input sizes.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// Bytes a product reads: values and scales.
    pub fn bytes(&self) -> usize {
        self.qs.len() * 64 + self.scales.len() * 2
    }

    /// Calls `f` with the values, then the scales, seen as 32-bit words (the few bytes at
    /// the scales' unaligned ends left out): what a product reads, for a bandwidth probe
    /// that only reads it.
    pub(crate) fn read_words(&self, f: &mut dyn FnMut(&[u32])) {
        // SAFETY: `Line`s are bytes and `scales` u16s, both valid as any `u32` bit pattern;
        // `align_to` keeps the views aligned, and they live only as long as the borrows of
        // `self` they are made from.
        let (_, qs, _) = unsafe { self.qs.align_to::<u32>() };
        f(qs);
        let (_, scales, _) = unsafe { self.scales.align_to::<u32>() };
        f(scales);
    }

    fn tiles(&self) -> usize {
        self.n.div_ceil(TILE)
    }

    /// What stored values are above the real ones.
    fn offset(&self) -> i32 {
        match self.format {
            QFormat::Q8_0 if self.unsigned => 128,
            QFormat::Q8_0 => 0,
            QFormat::Q4_0 => 8,
        }
    }

    /// The stored value of row `r`, column `c` (before [`Self::offset`]).
    fn stored(&self, r: usize, c: usize) -> i32 {
        let (t, j) = (r / TILE, r % TILE);
        let (b, c) = (c / BLOCK, c % BLOCK);
        let lines = &self.qs[(t * self.kb + b) * self.format.lines()..];
        match self.format {
            QFormat::Q8_0 => {
                let v = lines[c / 4].0[j * 4 + c % 4];
                if self.unsigned {
                    v as i32
                } else {
                    v as i8 as i32
                }
            }
            QFormat::Q4_0 => {
                let v = lines[(c % 16) / 4].0[j * 4 + c % 4];
                (if c < 16 { v & 15 } else { v >> 4 }) as i32
            }
        }
    }

    fn scale(&self, r: usize, b: usize) -> f32 {
        let (t, j) = (r / TILE, r % TILE);
        half::f16::from_bits(self.scales[(t * self.kb + b) * TILE + j]).to_f32()
    }

    /// The matrix in f32, `(n, k)` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for r in 0..self.n {
            for c in 0..self.k {
                out[r * self.k + c] =
                    (self.stored(r, c) - self.offset()) as f32 * self.scale(r, c / BLOCK);
            }
        }
        out
    }

    /// `y (rows, n) = x (rows, k) · Wᵀ`, with `level`'s kernels (the level it was packed for).
    pub fn matmul_t(&self, x: &[f32], rows: usize) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.k, "x is not ({rows}, {})", self.k);
        let mut y = vec![0f32; rows * self.n];
        if rows == 0 || self.n == 0 {
            return y;
        }
        let acts = QActs::quantize(x, rows, self.k, self.needs_abs(), self.level);
        let tiles = self.tiles();
        // Tasks own whole tiles (an even number, for kernels that take two at a time): enough
        // tasks to balance the threads, each long enough to amortise its start.
        let threads = rayon::current_num_threads().max(1);
        let per_task = tiles.div_ceil(threads * 4).max(2).next_multiple_of(2);
        let tasks = tiles.div_ceil(per_task);
        let out = OutPtr(y.as_mut_ptr());
        let run = |t: usize| {
            let args = TileArgs {
                w: self,
                a: &acts,
                tiles: t * per_task..((t + 1) * per_task).min(tiles),
                y: out,
            };
            // SAFETY: `args` covers tiles of `self` and all rows of `acts` (both checked
            // above); tasks own disjoint tiles, so disjoint columns of `y`, which has
            // `rows · n` elements; the level's kernel only runs if the CPU supports it
            // (checked by `PackedQ`'s constructor's caller through `Level::supported`).
            unsafe { tile_kernel(self.level)(&args) }
        };
        if tasks == 1 {
            run(0);
        } else {
            (0..tasks).into_par_iter().for_each(run);
        }
        y
    }

    fn needs_abs(&self) -> bool {
        self.format == QFormat::Q8_0
            && !self.unsigned
            && matches!(self.level, Level::Avx2 | Level::Avx512)
    }
}

/// `y`'s base pointer, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: tasks write disjoint elements (see `PackedQ::matmul_t`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// One task's work: `tiles` of `w` against every row of `a`.
pub(crate) struct TileArgs<'a> {
    pub(crate) w: &'a PackedQ,
    pub(crate) a: &'a QActs,
    pub(crate) tiles: Range<usize>,
    /// `(a.rows, w.n)` row-major.
    pub(crate) y: OutPtr,
}

impl TileArgs<'_> {
    /// Write one row's 16 results of tile `t`, dropping columns past `n`.
    ///
    /// # Safety
    /// `r < a.rows` and `t < w.tiles()`.
    #[inline(always)]
    pub(crate) unsafe fn store(&self, r: usize, t: usize, v: &[f32; TILE]) {
        let n = self.w.n;
        let col = t * TILE;
        let dst = self.y.0.add(r * n + col);
        let len = TILE.min(n - col);
        std::ptr::copy_nonoverlapping(v.as_ptr(), dst, len);
    }
}

type TileFn = unsafe fn(&TileArgs);

fn tile_kernel(level: Level) -> TileFn {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx2Vnni | Level::Avx512 | Level::Avx512Vnni => x86::tile_fn(level),
        #[cfg(target_arch = "aarch64")]
        Level::Neon | Level::NeonDot => neon::tile_fn(level),
        _ => tile_scalar,
    }
}

/// Activations quantized per 32-block: int8 values, their f32 scales and block sums.
pub(crate) struct QActs {
    pub(crate) rows: usize,
    pub(crate) k: usize,
    pub(crate) kb: usize,
    /// `(rows, k)`.
    pub(crate) qs: Vec<i8>,
    /// `|qs|`, for x86 kernels without VNNI (empty otherwise).
    pub(crate) abs: Vec<u8>,
    /// `(rows, kb)`.
    pub(crate) d: Vec<f32>,
    /// `(rows, kb)`: the sum of each block's values.
    pub(crate) sums: Vec<i32>,
}

impl QActs {
    pub(crate) fn quantize(x: &[f32], rows: usize, k: usize, with_abs: bool, level: Level) -> Self {
        let kb = k / BLOCK;
        let mut a = Self {
            rows,
            k,
            kb,
            qs: vec![0; rows * k],
            abs: if with_abs {
                vec![0; rows * k]
            } else {
                Vec::new()
            },
            d: vec![0.0; rows * kb],
            sums: vec![0; rows * kb],
        };
        // Rows in parallel only when there are enough values to pay for the tasks.
        let per_task = (16_384 / k.max(1)).max(1);
        if rows <= per_task {
            quantize_rows(level, x, &mut a.qs, &mut a.d, &mut a.sums, &mut a.abs);
        } else {
            let abs: Vec<&mut [u8]> = if with_abs {
                a.abs.chunks_mut(per_task * k).collect()
            } else {
                (0..rows.div_ceil(per_task))
                    .map(|_| Default::default())
                    .collect()
            };
            x.par_chunks(per_task * k)
                .zip(a.qs.par_chunks_mut(per_task * k))
                .zip(a.d.par_chunks_mut(per_task * kb))
                .zip(a.sums.par_chunks_mut(per_task * kb))
                .zip(abs)
                .for_each(|((((x, qs), d), sums), abs)| quantize_rows(level, x, qs, d, sums, abs));
        }
        a
    }
}

fn quantize_rows(
    level: Level,
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    sums: &mut [i32],
    abs: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if matches!(level, Level::Avx512 | Level::Avx512Vnni) {
            // SAFETY: only at a level the CPU supports.
            return unsafe { quantize_rows_avx512(x, qs, d, sums, abs) };
        }
        if matches!(level, Level::Avx2 | Level::Avx2Vnni) {
            // SAFETY: as above.
            return unsafe { quantize_rows_avx2(x, qs, d, sums, abs) };
        }
    }
    let _ = level;
    quantize_rows_portable(x, qs, d, sums, abs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_rows_avx2(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    sums: &mut [i32],
    abs: &mut [u8],
) {
    quantize_rows_portable(x, qs, d, sums, abs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn quantize_rows_avx512(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    sums: &mut [i32],
    abs: &mut [u8],
) {
    quantize_rows_portable(x, qs, d, sums, abs)
}

/// GGML's `quantize_row_q8_0` with an f32 scale, written so the compiler vectorises it.
#[inline(always)]
fn quantize_rows_portable(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    sums: &mut [i32],
    abs: &mut [u8],
) {
    let with_abs = !abs.is_empty();
    for (blk, ((xs, q), (d, s))) in x
        .chunks_exact(BLOCK)
        .zip(qs.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut().zip(sums.iter_mut()))
        .enumerate()
    {
        let mut m = [0f32; 8];
        for c in xs.chunks_exact(8) {
            for l in 0..8 {
                let v = c[l].abs();
                m[l] = if v > m[l] { v } else { m[l] };
            }
        }
        let amax = m.iter().fold(0f32, |a, &b| if b > a { b } else { a });
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in q.iter_mut().zip(xs) {
            // Saturating: a NaN or infinity in x must not make an out-of-range value.
            let r = (v * inv).round().clamp(-127.0, 127.0) as i8;
            *q = r;
            sum += r as i32;
        }
        *d = scale;
        *s = sum;
        if with_abs {
            for (a, &q) in abs[blk * BLOCK..][..BLOCK].iter_mut().zip(q.iter()) {
                *a = q.unsigned_abs();
            }
        }
    }
}

/// The reference kernel: plain loops over the packed layout.
///
/// # Safety
/// Safe in itself (indexing is checked); `unsafe` for the [`TileFn`] signature.
unsafe fn tile_scalar(t: &TileArgs) {
    let (w, a) = (t.w, t.a);
    let off = w.offset();
    for tile in t.tiles.clone() {
        for r in 0..a.rows {
            let mut acc = [0f32; TILE];
            for b in 0..w.kb {
                let xs = &a.qs[r * a.k + b * BLOCK..][..BLOCK];
                let da = a.d[r * a.kb + b];
                let corr = off * a.sums[r * a.kb + b];
                for (j, acc) in acc.iter_mut().enumerate() {
                    let row = tile * TILE + j;
                    if row >= w.n {
                        break;
                    }
                    let mut dot = 0i32;
                    for (c, &x) in xs.iter().enumerate() {
                        dot += w.stored(row, b * BLOCK + c) * x as i32;
                    }
                    *acc += (dot - corr) as f32 * (w.scale(row, b) * da);
                }
            }
            t.store(r, tile, &acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0) * scale)
            .collect()
    }

    /// `x Wᵀ` in f64 from the dequantized weights and the dequantized activations: what
    /// every kernel computes up to f32 rounding.
    fn reference(w: &PackedQ, x: &[f32], rows: usize) -> Vec<f64> {
        let (n, k) = w.dims();
        let deq = w.dequantize();
        let a = QActs::quantize(x, rows, k, false, Level::Scalar);
        let mut y = vec![0f64; rows * n];
        for r in 0..rows {
            for o in 0..n {
                let mut s = 0f64;
                for c in 0..k {
                    let xa = a.qs[r * k + c] as f64 * a.d[r * a.kb + c / BLOCK] as f64;
                    s += deq[o * k + c] as f64 * xa;
                }
                y[r * n + o] = s;
            }
        }
        y
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 2e-5 * scale,
                "{what}: element {i}: {g} vs {w} (scale {scale})"
            );
        }
    }

    #[test]
    fn packing_keeps_every_value_and_scale() {
        for format in [QFormat::Q8_0, QFormat::Q4_0] {
            let (n, k) = (19, 96);
            let w = random(n * k, 1, 2.0);
            let t = candle_core::Tensor::from_slice(&w, (n, k), &candle_core::Device::Cpu).unwrap();
            let q = candle_core::quantized::QTensor::quantize(&t, format.ggml()).unwrap();
            let want = q.dequantize(&candle_core::Device::Cpu).unwrap();
            let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
            for level in crate::cpu::available() {
                let p = PackedQ::from_ggml(format, n, k, &q.data().unwrap(), level).unwrap();
                assert_eq!(p.dequantize(), want, "{format:?} at {level}");
            }
        }
    }

    #[test]
    fn refuses_partial_blocks_and_short_data() {
        assert!(PackedQ::from_ggml(QFormat::Q8_0, 2, 40, &[0; 68], Level::Scalar).is_err());
        assert!(PackedQ::from_ggml(QFormat::Q8_0, 2, 32, &[0; 67], Level::Scalar).is_err());
        assert!(PackedQ::from_ggml(QFormat::Q4_0, 2, 32, &[0; 36], Level::Scalar).is_ok());
    }

    #[test]
    fn every_level_equals_the_reference_on_odd_sizes() {
        // Row counts across the decode (1..8) and prefill register blocks with remainders;
        // output sizes that leave partial tiles and odd tile counts.
        for format in [QFormat::Q8_0, QFormat::Q4_0] {
            for (n, k) in [(1, 32), (17, 64), (40, 96), (70, 160)] {
                let w = random(n * k, n as u64, 0.5);
                for rows in [1, 2, 3, 4, 5, 7, 8, 9, 13, 31] {
                    let x = random(rows * k, 100 + rows as u64, 3.0);
                    let mut want = None;
                    for level in crate::cpu::available() {
                        let p = PackedQ::quantize(format, &w, n, k, level).unwrap();
                        let want = want.get_or_insert_with(|| reference(&p, &x, rows));
                        let got = p.matmul_t(&x, rows);
                        assert_close(
                            &got,
                            want,
                            &format!("{format:?} {n}x{k} rows {rows} {level}"),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        // Every weight and activation at ±127 after quantization: each pair of products is
        // at the edge of 16 bits in the kernels without VNNI.
        let (n, k, rows) = (32, 256, 6);
        let w: Vec<f32> = (0..n * k)
            .map(|i| if (i / 3) % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let x: Vec<f32> = (0..rows * k)
            .map(|i| if (i / 5) % 2 == 0 { -1.0 } else { 1.0 })
            .collect();
        for format in [QFormat::Q8_0, QFormat::Q4_0] {
            let mut want = None;
            for level in crate::cpu::available() {
                let p = PackedQ::quantize(format, &w, n, k, level).unwrap();
                let want = want.get_or_insert_with(|| reference(&p, &x, rows));
                assert_close(&p.matmul_t(&x, rows), want, &format!("{format:?} {level}"));
            }
        }
    }

    #[test]
    fn matches_candles_quantized_matmul() {
        let dev = candle_core::Device::Cpu;
        let (n, k, rows) = (48, 128, 5);
        let w = random(n * k, 7, 1.0);
        let x = random(rows * k, 8, 1.0);
        for format in [QFormat::Q8_0, QFormat::Q4_0] {
            let wt = candle_core::Tensor::from_slice(&w, (n, k), &dev).unwrap();
            let q = candle_core::quantized::QTensor::quantize(&wt, format.ggml()).unwrap();
            let qm = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
            let xt = candle_core::Tensor::from_slice(&x, (rows, k), &dev).unwrap();
            let want: Vec<f32> = xt
                .apply(&qm)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got = PackedQ::quantize(format, &w, n, k, crate::cpu::level())
                .unwrap()
                .matmul_t(&x, rows);
            // candle rounds the activations' scales to f16: agreement to ~1e-3 relative.
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 5e-3 * scale, "{format:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn activation_quantization_round_trips_within_half_a_step() {
        let k = 64;
        let mut x = random(2 * k, 3, 5.0);
        x[5] = 0.0;
        x[k..k + 32].iter_mut().for_each(|v| *v = 0.0); // an all-zero block
        for level in crate::cpu::available() {
            let a = QActs::quantize(&x, 2, k, true, level);
            for (i, &v) in x.iter().enumerate() {
                let d = a.d[i / BLOCK];
                let back = a.qs[i] as f32 * d;
                assert!(
                    (back - v).abs() <= d * 0.5 + 1e-6,
                    "{level} {i}: {v} -> {back}"
                );
                assert_eq!(a.abs[i], a.qs[i].unsigned_abs());
            }
            for b in 0..a.rows * a.kb {
                let s: i32 = a.qs[b * BLOCK..][..BLOCK].iter().map(|&q| q as i32).sum();
                assert_eq!(a.sums[b], s);
            }
            assert_eq!(a.d[2], 0.0);
        }
    }
}
