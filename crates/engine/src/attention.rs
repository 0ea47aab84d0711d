//! Causal attention for inference on the CPU, fused: `softmax(q kᵀ · scale + causal mask) v`
//! computed block by block with flash attention's online softmax, for any layout of heads
//! (multi-head, multi-query, grouped-query), at each [`Level`].
//!
//! Why our own: composed from candle's ops, a prefill chunk of 256 tokens after 1,600 cached
//! ones builds a `(256 · heads, 1,856)` score tensor per layer (23 MB for tiny_starcoder_py),
//! adds a mask tensor to it, runs a separate softmax and multiplies the upper triangle that the
//! mask then zeroes; and candle's matmul (the `gemm` crate) picks AVX-512 whatever
//! `COPILOT_LSP_CPU` says. Here each task takes a block of queries and walks the keys they
//! may see in blocks of [`KB`]: scores for one block (the keys transposed once for every
//! query of the task), a running maximum and sum per query, the values weighted in place.
//! A decode step (one token: as few queries as heads) splits its keys across threads and
//! merges the partial sums.
//!
//! Knows nothing of any architecture's projections, positions or cache: `q`, `k`, `v` in,
//! the attended values out.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::Level;
use crate::softmax::exp;

/// Keys per block: 64 scores of a query stay in registers (4 `zmm`, 8 `ymm`).
pub const KB: usize = 64;

/// Whether [`causal`] applies: CPU, f32, no gradient wanted, `q (b, t, heads, d)` and
/// `k`, `v (b, kv_heads, len, d)` with `heads` a multiple of `kv_heads` and `len >= t`.
pub fn applies(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    let ok = |x: &Tensor| {
        x.device().is_cpu()
            && x.dtype() == candle_core::DType::F32
            && !x.track_op()
            && x.rank() == 4
    };
    if !(ok(q) && ok(k) && ok(v)) || k.dims() != v.dims() {
        return false;
    }
    let (qd, kd) = (q.dims(), k.dims());
    qd[0] == kd[0] && qd[3] == kd[3] && kd[1] > 0 && qd[2].is_multiple_of(kd[1]) && kd[2] >= qd[1]
}

/// `q (b, t, heads, d)` attends to `k`, `v (b, kv_heads, len, d)`: query `i` sits at
/// position `len - t + i` and sees keys `0..=len - t + i`; head `h` reads kv head
/// `h / (heads / kv_heads)`. Returns `(b, t, heads, d)`. `k` and `v` may be views of a larger
/// cache (each head's rows contiguous).
pub fn causal(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    causal_at(crate::cpu::level(), q, k, v, scale)
}

/// [`causal`] with `level`'s kernels (which the CPU must support).
pub fn causal_at(level: Level, q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor> {
    if !level.supported() {
        candle_core::bail!("{level} is not supported by this CPU");
    }
    q.contiguous()?
        .apply_op3_no_bwd(k, v, &Attention { level, scale })
}

struct Attention {
    level: Level,
    scale: f32,
}

/// Keys or values of every (batch, head): row `j` of head `h` in batch `b` starts at
/// `start + b·sb + h·sh + j·sr` (a view of the KV cache, or of the fused projection when
/// there is no cache).
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    start: usize,
    sb: usize,
    sh: usize,
    sr: usize,
}

impl<'a> Rows<'a> {
    fn of(s: &'a CpuStorage, l: &Layout) -> Result<Self> {
        let st = l.stride();
        if st[3] != 1 {
            candle_core::bail!("attention: keys and values need contiguous rows, strides {st:?}");
        }
        Ok(Self {
            data: s.as_slice::<f32>()?,
            start: l.start_offset(),
            sb: st[0],
            sh: st[1],
            sr: st[2],
        })
    }

    /// Head `h` of batch `b`: `len` rows of `d` at stride `sr`.
    fn head(&self, b: usize, h: usize, len: usize, d: usize) -> &'a [f32] {
        let span = if len == 0 { 0 } else { (len - 1) * self.sr + d };
        &self.data[self.start + b * self.sb + h * self.sh..][..span]
    }
}

/// Sizes of one product.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    t: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    len: usize,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Some((qa, qb)) = ql.contiguous_offsets() else {
            candle_core::bail!("attention needs contiguous queries");
        };
        let (b, t, heads, d) = ql.shape().dims4()?;
        let (kb, kv_heads, len, kd) = kl.shape().dims4()?;
        if vl.shape() != kl.shape()
            || kb != b
            || kd != d
            || kv_heads == 0
            || heads % kv_heads != 0
            || len < t
        {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} do not fit",
                ql.shape(),
                kl.shape(),
                vl.shape()
            );
        }
        let dims = Dims {
            b,
            t,
            heads,
            kv_heads,
            d,
            len,
        };
        let q = &qs.as_slice::<f32>()?[qa..qb];
        let y = attend(
            self.level,
            q,
            dims,
            Rows::of(ks, kl)?,
            Rows::of(vs, vl)?,
            self.scale,
        );
        Ok((CpuStorage::F32(y), ql.shape().clone()))
    }
}

/// One task: the queries of tokens `tokens` for the heads of kv head `kh` in batch `bi`,
/// against keys `keys`.
#[derive(Clone, Debug)]
struct Task {
    bi: usize,
    kh: usize,
    tokens: std::ops::Range<usize>,
    keys: std::ops::Range<usize>,
}

/// One kv head's keys and values with their row strides.
struct Heads<'a> {
    k: &'a [f32],
    v: &'a [f32],
    ks: usize,
    vs: usize,
}

/// A task's running state per query row: maximum score, sum of weights, weighted values.
struct Partial {
    m: Vec<f32>,
    l: Vec<f32>,
    o: Vec<f32>,
}

fn attend(level: Level, q: &[f32], dm: Dims, k: Rows, v: Rows, scale: f32) -> Vec<f32> {
    let Dims {
        b,
        t,
        heads,
        kv_heads,
        d,
        len,
    } = dm;
    let group = heads / kv_heads;
    let past = len - t;
    // About 32 query rows a task (a token's heads of one kv head make `group` rows).
    let per_block = (32 / group).max(1);
    let blocks = t.div_ceil(per_block);
    // Few query blocks (a decode step): split the keys so every thread has work.
    let threads = rayon::current_num_threads().max(1);
    let tasks_wanted = threads * 4;
    let splits = if b * kv_heads * blocks >= tasks_wanted {
        1
    } else {
        (tasks_wanted / (b * kv_heads * blocks)).clamp(1, len.div_ceil(4 * KB).max(1))
    };
    let mut tasks = Vec::new();
    for bi in 0..b {
        for kh in 0..kv_heads {
            for blk in 0..blocks {
                let tokens = blk * per_block..((blk + 1) * per_block).min(t);
                // Keys the block's last token sees, split in whole key blocks.
                let seen = past + tokens.end;
                let per_split = seen.div_ceil(splits).next_multiple_of(KB);
                for s in 0..splits {
                    let keys = (s * per_split).min(seen)..((s + 1) * per_split).min(seen);
                    if !keys.is_empty() || s == 0 {
                        tasks.push(Task {
                            bi,
                            kh,
                            tokens: tokens.clone(),
                            keys,
                        });
                    }
                }
            }
        }
    }
    let run = |task: &Task| -> Partial {
        let rows = task.tokens.len() * group;
        // The task's queries, scaled once, row (token, head in group).
        let mut qs = vec![0f32; rows * d];
        let mut limits = vec![0usize; rows];
        for (ti, i) in task.tokens.clone().enumerate() {
            for g in 0..group {
                let h = task.kh * group + g;
                let r = ti * group + g;
                let src = &q[((task.bi * t + i) * heads + h) * d..][..d];
                for (dst, &x) in qs[r * d..][..d].iter_mut().zip(src) {
                    *dst = x * scale;
                }
                limits[r] = past + i + 1;
            }
        }
        let kh = k.head(task.bi, task.kh, len, d);
        let vh = v.head(task.bi, task.kh, len, d);
        let mut p = Partial {
            m: vec![f32::NEG_INFINITY; rows],
            l: vec![0.0; rows],
            o: vec![0.0; rows * d],
        };
        let heads = Heads {
            k: kh,
            v: vh,
            ks: k.sr,
            vs: v.sr,
        };
        block(level, &qs, &limits, &heads, d, task.keys.clone(), &mut p);
        p
    };
    let partials: Vec<Partial> = if tasks.len() == 1 {
        vec![run(&tasks[0])]
    } else {
        tasks.par_iter().map(run).collect()
    };
    // Merge the splits of each block (consecutive tasks) and write `o / l`.
    let mut y = vec![0f32; b * t * heads * d];
    let mut i = 0;
    while i < tasks.len() {
        let mut j = i + 1;
        while j < tasks.len()
            && tasks[j].bi == tasks[i].bi
            && tasks[j].kh == tasks[i].kh
            && tasks[j].tokens == tasks[i].tokens
        {
            j += 1;
        }
        let task = &tasks[i];
        let rows = task.tokens.len() * group;
        for r in 0..rows {
            let m = partials[i..j]
                .iter()
                .fold(f32::NEG_INFINITY, |a, p| a.max(p.m[r]));
            let (ti, g) = (r / group, r % group);
            let (tok, h) = (task.tokens.start + ti, task.kh * group + g);
            let dst = &mut y[((task.bi * t + tok) * heads + h) * d..][..d];
            let mut l = 0f32;
            for p in &partials[i..j] {
                if p.m[r] == f32::NEG_INFINITY {
                    continue;
                }
                let c = exp(p.m[r] - m);
                l += p.l[r] * c;
                for (o, &x) in dst.iter_mut().zip(&p.o[r * d..][..d]) {
                    *o += x * c;
                }
            }
            let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
            dst.iter_mut().for_each(|o| *o *= inv);
        }
        i = j;
    }
    y
}

#[allow(clippy::too_many_arguments)]
fn block(
    level: Level,
    qs: &[f32],
    limits: &[usize],
    h: &Heads,
    d: usize,
    keys: std::ops::Range<usize>,
    p: &mut Partial,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if matches!(level, Level::Avx512 | Level::Avx512Vnni) {
            // SAFETY: only at a level the CPU supports.
            return unsafe { block_avx512(level, qs, limits, h, d, keys, p) };
        }
        if matches!(level, Level::Avx2 | Level::Avx2Vnni) {
            // SAFETY: as above.
            return unsafe { block_avx2(level, qs, limits, h, d, keys, p) };
        }
    }
    block_dispatch(level, qs, limits, h, d, keys, p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(
    level: Level,
    qs: &[f32],
    limits: &[usize],
    h: &Heads,
    d: usize,
    keys: std::ops::Range<usize>,
    p: &mut Partial,
) {
    block_dispatch(level, qs, limits, h, d, keys, p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn block_avx512(
    level: Level,
    qs: &[f32],
    limits: &[usize],
    h: &Heads,
    d: usize,
    keys: std::ops::Range<usize>,
    p: &mut Partial,
) {
    block_dispatch(level, qs, limits, h, d, keys, p)
}

/// Head sizes that are whole panels of the level's matrix micro-kernel go through it (both
/// products of a block are small matrix products); any other size through the portable loop.
#[inline(always)]
fn block_dispatch(
    level: Level,
    qs: &[f32],
    limits: &[usize],
    h: &Heads,
    d: usize,
    keys: std::ops::Range<usize>,
    p: &mut Partial,
) {
    let (_, nr) = crate::sgemm::geometry(level);
    if d.is_multiple_of(nr) {
        block_gemm(level, qs, limits, h, d, keys, p)
    } else {
        block_portable::<0>(qs, limits, h, d, keys, p)
    }
}

/// Online softmax over `keys` with both products of a key block done by [`crate::sgemm`]'s
/// micro-kernel. The scores are computed transposed, `Sᵀ = K Qᵀ` (keys by queries): the
/// keys are read in place and only the task's queries are packed, once; the softmax then
/// runs across queries (contiguous), and `O += P V` reads `P` from `Sᵀ` by stride.
#[inline(always)]
fn block_gemm(
    level: Level,
    qs: &[f32],
    limits: &[usize],
    h: &Heads,
    d: usize,
    keys: std::ops::Range<usize>,
    p: &mut Partial,
) {
    let (mr, nr) = crate::sgemm::geometry(level);
    let micro = crate::sgemm::micro_kernel(level);
    let rows = limits.len();
    let wide = rows.next_multiple_of(nr);
    // Queries as panels `[panel][c][nr]`, rows past the last zeros.
    let mut qt = vec![0f32; wide * d];
    for r in 0..rows {
        let base = (r / nr) * d * nr + r % nr;
        for (c, &x) in qs[r * d..][..d].iter().enumerate() {
            qt[base + c * nr] = x;
        }
    }
    let mut st = vec![0f32; KB * wide];
    let mut m_new = vec![0f32; rows];
    let mut corr = vec![0f32; rows];
    let mut sum = vec![0f32; rows];
    let mut j0 = keys.start;
    while j0 < keys.end {
        let nk = KB.min(keys.end - j0);
        // Rows are ordered by token, so their limits never decrease: rows before `first`
        // see none of these keys.
        let first = limits.partition_point(|&lim| lim <= j0);
        if first == rows {
            break;
        }
        let (p0, p1) = (first / nr, wide / nr);
        for k0 in (0..nk).step_by(mr) {
            let m = mr.min(nk - k0);
            for pp in p0..p1 {
                // SAFETY: key rows `j0 + k0..j0 + k0 + m` exist (`keys.end <= len`) with `d`
                // values each; the panel holds `d · nr`; `st` rows hold `wide` values, of
                // which this writes `pp·nr..(pp + 1)·nr`; the level is the caller's.
                unsafe {
                    micro(
                        h.k.as_ptr().add((j0 + k0) * h.ks),
                        h.ks,
                        1,
                        m,
                        qt.as_ptr().add(pp * d * nr),
                        nr,
                        d,
                        st.as_mut_ptr().add(k0 * wide + pp * nr),
                        wide,
                        nr,
                        false,
                    );
                }
            }
        }
        let live = first..rows;
        // The causal mask: key `j0 + jj` is hidden from the rows whose limit is at most it.
        for jj in 0..nk {
            let cut = limits.partition_point(|&lim| lim <= j0 + jj);
            if cut > first {
                st[jj * wide + first..jj * wide + cut].fill(f32::NEG_INFINITY);
            }
        }
        m_new[live.clone()].copy_from_slice(&p.m[live.clone()]);
        for jj in 0..nk {
            for (m, &x) in m_new[live.clone()]
                .iter_mut()
                .zip(&st[jj * wide..][live.clone()])
            {
                *m = if x > *m { x } else { *m };
            }
        }
        for r in live.clone() {
            corr[r] = exp(p.m[r] - m_new[r]);
            sum[r] = 0.0;
        }
        for jj in 0..nk {
            let row = &mut st[jj * wide..][live.clone()];
            for ((x, &m), s) in row
                .iter_mut()
                .zip(&m_new[live.clone()])
                .zip(&mut sum[live.clone()])
            {
                *x = exp(*x - m);
                *s += *x;
            }
        }
        for r in live.clone() {
            p.l[r] = p.l[r] * corr[r] + sum[r];
            p.m[r] = m_new[r];
            if corr[r] != 1.0 {
                let c = corr[r];
                p.o[r * d..][..d].iter_mut().for_each(|x| *x *= c);
            }
        }
        for r0 in live.clone().step_by(mr) {
            let m = mr.min(rows - r0);
            for cp in 0..d / nr {
                // SAFETY: `P[i][jj]` is `st[jj·wide + r0 + i]` for `jj < nk <= KB`; value
                // rows `j0..j0 + nk` exist and columns `cp·nr..(cp + 1)·nr` are within `d`;
                // `o` rows hold `d`.
                unsafe {
                    micro(
                        st.as_ptr().add(r0),
                        1,
                        wide,
                        m,
                        h.v.as_ptr().add(j0 * h.vs + cp * nr),
                        h.vs,
                        nk,
                        p.o.as_mut_ptr().add(r0 * d + cp * nr),
                        d,
                        nr,
                        true,
                    );
                }
            }
        }
        j0 += nk;
    }
}

/// Online softmax over `keys` for every query row (`D` the head size, or 0 for `d` at run
/// time): for each block of keys, transpose them once, then per row its scores, the new
/// maximum, the rescaled sums and the weighted values.
#[inline(always)]
fn block_portable<const D: usize>(
    qs: &[f32],
    limits: &[usize],
    h: &Heads,
    d: usize,
    keys: std::ops::Range<usize>,
    p: &mut Partial,
) {
    let d = if D > 0 { D } else { d };
    let rows = limits.len();
    let mut kt = vec![0f32; d * KB];
    let mut j0 = keys.start;
    while j0 < keys.end {
        let nk = KB.min(keys.end - j0);
        // Rows are ordered by token, so their limits never decrease.
        let first = limits.partition_point(|&lim| lim <= j0);
        if first == rows {
            break;
        }
        for jj in 0..nk {
            let src = &h.k[(j0 + jj) * h.ks..][..d];
            for (c, &x) in src.iter().enumerate() {
                kt[c * KB + jj] = x;
            }
        }
        for jj in nk..KB {
            for c in 0..d {
                kt[c * KB + jj] = 0.0;
            }
        }
        for r in first..rows {
            let mut s = [0f32; KB];
            let q = &qs[r * d..][..d];
            for (c, &qc) in q.iter().enumerate() {
                let row: &[f32; KB] = kt[c * KB..][..KB].try_into().expect("KB values");
                for jj in 0..KB {
                    s[jj] += qc * row[jj];
                }
            }
            let vis = (limits[r] - j0).min(nk);
            let mut bm = f32::NEG_INFINITY;
            for (jj, x) in s.iter_mut().enumerate() {
                if jj >= vis {
                    *x = f32::NEG_INFINITY;
                }
                bm = if *x > bm { *x } else { bm };
            }
            let m_new = if bm > p.m[r] { bm } else { p.m[r] };
            let corr = exp(p.m[r] - m_new);
            let mut sum = 0f32;
            for x in s.iter_mut() {
                *x = exp(*x - m_new);
                sum += *x;
            }
            p.l[r] = p.l[r] * corr + sum;
            p.m[r] = m_new;
            let o = &mut p.o[r * d..][..d];
            if D > 0 {
                let mut acc = [0f32; D];
                for (a, &x) in acc.iter_mut().zip(o.iter()) {
                    *a = x * corr;
                }
                for (jj, &w) in s[..vis].iter().enumerate() {
                    let vr = &h.v[(j0 + jj) * h.vs..][..D];
                    for (a, &x) in acc.iter_mut().zip(vr) {
                        *a += w * x;
                    }
                }
                o.copy_from_slice(&acc);
            } else {
                o.iter_mut().for_each(|x| *x *= corr);
                for (jj, &w) in s[..vis].iter().enumerate() {
                    let vr = &h.v[(j0 + jj) * h.vs..][..d];
                    for (a, &x) in o.iter_mut().zip(vr) {
                        *a += w * x;
                    }
                }
            }
        }
        j0 += nk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    /// The composed reference: scores, mask, softmax, weighted values, per kv group.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        let (b, t, heads, d) = q.dims4().unwrap();
        let (_, kvh, len, _) = k.dims4().unwrap();
        let group = heads / kvh;
        let past = len - t;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| {
                (0..len).map(move |j| {
                    if j <= past + i {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, len), &Device::Cpu).unwrap();
        let q = q.transpose(1, 2).unwrap().contiguous().unwrap(); // (b, heads, t, d)
        let k = k.repeat_interleave_heads(group);
        let v = v.repeat_interleave_heads(group);
        let s = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
        let s = s.broadcast_add(&mask).unwrap();
        let w = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        let o = w.matmul(&v).unwrap(); // (b, heads, t, d)
        o.transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, t, heads, d))
            .unwrap()
    }

    trait Repeat {
        fn repeat_interleave_heads(&self, n: usize) -> Tensor;
    }
    impl Repeat for Tensor {
        fn repeat_interleave_heads(&self, n: usize) -> Tensor {
            let (b, h, l, d) = self.dims4().unwrap();
            self.unsqueeze(2)
                .unwrap()
                .broadcast_as((b, h, n, l, d))
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((b, h * n, l, d))
                .unwrap()
        }
    }

    #[test]
    fn equals_the_composed_ops_for_every_layout_and_level() {
        let dev = Device::Cpu;
        // (batch, t, heads, kv heads, d, len): a decode step after a long cache, a prefill
        // chunk after a cached prefix, MHA, MQA and GQA, head sizes 64 (compiled), 40 (run
        // time), lengths that leave partial key blocks.
        for (b, t, heads, kvh, d, len) in [
            (1, 1, 12, 1, 64, 700),
            (1, 37, 12, 1, 64, 170),
            (2, 20, 4, 4, 40, 20),
            (1, 9, 8, 2, 128, 75),
            (1, 3, 2, 1, 8, 3),
            // MHA at 64: two query panels, later key blocks that skip the first rows.
            (1, 70, 4, 4, 64, 200),
        ] {
            let q = Tensor::randn(0f32, 1.0, (b, t, heads, d), &dev).unwrap();
            // A cache with spare capacity, viewed as `len` rows, as the KV cache hands it.
            let cap = len + 13;
            let kc = Tensor::randn(0f32, 1.0, (b, kvh, cap, d), &dev).unwrap();
            let vc = Tensor::randn(0f32, 1.0, (b, kvh, cap, d), &dev).unwrap();
            let k = kc.narrow(2, 0, len).unwrap();
            let v = vc.narrow(2, 0, len).unwrap();
            assert!(applies(&q, &k, &v));
            let scale = 1.0 / (d as f64).sqrt();
            let want = reference(
                &q,
                &k.contiguous().unwrap(),
                &v.contiguous().unwrap(),
                scale,
            );
            let got = causal(&q, &k, &v, scale as f32).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = crate::testkit::max_abs_diff(&got, &want).unwrap();
            assert!(diff < 1e-5, "{b} {t} {heads} {kvh} {d} {len}: {diff}");
            // Every level against the scalar one on the same inputs.
            let (qs, ks, vs) = (
                q.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                k.contiguous()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                v.contiguous()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
            let dims = Dims {
                b,
                t,
                heads,
                kv_heads: kvh,
                d,
                len,
            };
            fn rows(data: &[f32], kvh: usize, len: usize, d: usize) -> Rows<'_> {
                Rows {
                    data,
                    start: 0,
                    sb: kvh * len * d,
                    sh: len * d,
                    sr: d,
                }
            }
            let (kr, vr) = (rows(&ks, kvh, len, d), rows(&vs, kvh, len, d));
            let scalar = attend(Level::Scalar, &qs, dims, kr, vr, scale as f32);
            for level in crate::cpu::available() {
                let got = attend(level, &qs, dims, kr, vr, scale as f32);
                for (g, w) in got.iter().zip(&scalar) {
                    assert!((g - w).abs() < 1e-5, "{level}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 4, 3, 8), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 2, 4, 8), DType::F32, &dev).unwrap();
        assert!(!applies(&q, &k, &k), "3 heads over 2 kv heads");
        let k = Tensor::zeros((1, 1, 3, 8), DType::F32, &dev).unwrap();
        assert!(!applies(&q, &k, &k), "fewer keys than queries");
        assert!(causal(&q, &k, &k, 1.0).is_err());
    }
}
