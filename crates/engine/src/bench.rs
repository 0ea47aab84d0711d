//! Raw engine figures: prefill and decode speed on the model thread, without prompts or
//! post-processing, and the limits this machine sets them (read bandwidth for decode, the
//! matrix kernel's rate for prefill). Medians over several runs; nothing here is asserted
//! in tests.

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::cpu::Level;
use crate::error::Result;
use crate::model::{KvCache, Logits};
use crate::qmatmul::{PackedQ, QFormat};
use crate::worker::Engine;

#[derive(Clone, Debug, Serialize)]
pub struct RawFigures {
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub runs: usize,
    /// Median time to compute the whole prompt from an empty cache.
    pub prefill_ms_p50: f64,
    pub prefill_tokens_per_s: f64,
    /// Median time per decoded token (one-token forward with the cache full of the prompt).
    pub decode_ms_per_token_p50: f64,
    pub decode_tokens_per_s: f64,
    pub limits: Limits,
}

/// What bounds the raw figures on this machine, and each figure as a share of its bound.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    /// The kernels' level (`COPILOT_LSP_CPU` caps it), what the CPU could run, and the
    /// vector extensions it reports.
    pub cpu_level: String,
    pub cpu_detected: String,
    pub cpu_extensions: Vec<String>,
    pub threads: usize,
    /// Reading the projections' weights with every thread at the kernels' level, as a
    /// decode step reads them ([`weights_read_gb_s`]; a 64 MiB buffer where they cannot be
    /// read so).
    pub read_gb_s: f64,
    /// What a decode step must read: every projection's weights, and the KV cache at the
    /// decode's mean length.
    pub bytes_per_token: f64,
    /// `read_gb_s / bytes_per_token`, and the measured decode's share of it.
    pub decode_limit_tokens_per_s: f64,
    pub decode_share: f64,
    /// The projections' format and its kernel's rate on a compute-bound product (a prefill
    /// chunk's 256 rows times the MLP's 3,072 x 768), best of a second of runs.
    pub peak_kernel: String,
    pub peak_gflops: f64,
    /// Flops per prompt token: projections, and attention at the prompt's mean length.
    pub prefill_flop_per_token: f64,
    /// `peak_gflops / prefill_flop_per_token`, and the measured prefill's share of it.
    pub prefill_limit_tokens_per_s: f64,
    pub prefill_share: f64,
}

pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Percentile (0..=100) by nearest rank.
pub fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

/// Prefill `prompt` from scratch and decode `decode_tokens` greedy tokens after it, `runs`
/// times; `prompt` is cut to leave room in the window.
pub fn raw(
    engine: &Engine,
    prompt: Vec<u32>,
    decode_tokens: usize,
    runs: usize,
) -> Result<RawFigures> {
    raw_with(engine, prompt, decode_tokens, runs, None)
}

/// [`raw`] with the adapter registered under `adapter` applied unmerged.
pub fn raw_with(
    engine: &Engine,
    prompt: Vec<u32>,
    decode_tokens: usize,
    runs: usize,
    adapter: Option<String>,
) -> Result<RawFigures> {
    raw_on(engine, prompt, decode_tokens, runs, adapter, false)
}

/// [`raw`] on the merged copy of the adapter registered under `adapter`, made first
/// ([`crate::Generator::merge_now`]); also returns how long making it took (ms). An error
/// when the engine's merge budget cannot hold the copy.
pub fn raw_merged(
    engine: &Engine,
    prompt: Vec<u32>,
    decode_tokens: usize,
    runs: usize,
    adapter: String,
) -> Result<(RawFigures, f64)> {
    let t = Instant::now();
    if !engine.merge_now(adapter.clone())? {
        return Err(crate::error::EngineError::Other(format!(
            "the merged copy of `{adapter}` does not fit the merge budget"
        )));
    }
    let merge_ms = t.elapsed().as_secs_f64() * 1000.0;
    let figures = raw_on(engine, prompt, decode_tokens, runs, Some(adapter), true)?;
    Ok((figures, merge_ms))
}

fn raw_on(
    engine: &Engine,
    prompt: Vec<u32>,
    decode_tokens: usize,
    runs: usize,
    adapter: Option<String>,
    merged: bool,
) -> Result<RawFigures> {
    engine.run_blocking(move |g| -> Result<RawFigures> {
        let lora =
            match &adapter {
                Some(name) => Some(g.adapter(name).ok_or_else(|| {
                    crate::error::EngineError::Other(format!("no adapter `{name}`"))
                })?),
                None => None,
            };
        let copy = match (&adapter, merged) {
            (Some(name), true) => Some(g.merged_copies().model(name).ok_or_else(|| {
                crate::error::EngineError::Other(format!("no merged copy of `{name}`"))
            })?),
            _ => None,
        };
        let model: &crate::Model = copy.as_deref().unwrap_or(&g.model);
        let lora = if copy.is_some() {
            None
        } else {
            lora.as_deref()
        };
        let window = model.config().n_positions;
        let mut prompt = prompt;
        prompt.truncate(window.saturating_sub(decode_tokens + 1).max(1));
        let mut prefill = Vec::new();
        let mut decode = Vec::new();
        for _ in 0..runs.max(1) {
            let mut cache = KvCache::new();
            let t = Instant::now();
            let mut logits = None;
            for chunk in prompt.chunks(crate::generate::PREFILL_CHUNK) {
                logits = Some(model.forward_cached(chunk, &mut cache, Logits::Last, lora)?);
            }
            prefill.push(t.elapsed().as_secs_f64() * 1000.0);
            let mut next = logits
                .expect("non-empty prompt")
                .argmax(0)?
                .to_scalar::<u32>()?;
            let t = Instant::now();
            for _ in 0..decode_tokens {
                let l = model.forward_cached(&[next], &mut cache, Logits::Last, lora)?;
                next = l.argmax(0)?.to_scalar::<u32>()?;
            }
            if decode_tokens > 0 {
                decode.push(t.elapsed().as_secs_f64() * 1000.0 / decode_tokens as f64);
            }
        }
        let p = median(&mut prefill);
        let d = median(&mut decode);
        let prefill_tokens_per_s = if p > 0.0 {
            prompt.len() as f64 * 1000.0 / p
        } else {
            0.0
        };
        let decode_tokens_per_s = if d > 0.0 { 1000.0 / d } else { 0.0 };
        // What bounds them.
        let cfg = model.config();
        let projections = model.projections();
        let weight_bytes: usize = projections.iter().map(|w| w.bytes()).sum();
        let params: usize = projections
            .iter()
            .map(|w| w.dims().map_or(0, |(n, k)| n * k))
            .sum();
        let kv_row = (cfg.n_layer * 2 * cfg.kv_heads() * cfg.head_dim() * 4) as f64;
        let decode_len = prompt.len() as f64 + decode_tokens as f64 / 2.0;
        let bytes_per_token = weight_bytes as f64 + kv_row * decode_len;
        let attention_flop = 4.0 * (cfg.n_layer * cfg.n_embd) as f64;
        let prefill_flop_per_token =
            2.0 * params as f64 + attention_flop * (prompt.len() as f64 + 1.0) / 2.0;
        // The most common format among the projections, by bytes.
        let kind = projections
            .iter()
            .max_by_key(|w| w.bytes())
            .map_or("f32".to_string(), |w| w.kind());
        let level = crate::cpu::level();
        // The bytes a decode step reads, read as it reads them: a 64 MiB probe fits in the
        // last-level cache of some machines (480 MiB on one here), and a model that fits too
        // is then read from cache, so only the weights themselves give the real bound.
        let read_gb_s =
            weights_read_gb_s(level, &projections).unwrap_or_else(|| read_bandwidth_gb_s(level));
        let peak_gflops = kernel_peak_gflops(&kind, level);
        let choice = crate::cpu::choice();
        let share = |x: f64, limit: f64| if limit > 0.0 { x / limit } else { 0.0 };
        let decode_limit = read_gb_s * 1e9 / bytes_per_token;
        let prefill_limit = peak_gflops * 1e9 / prefill_flop_per_token;
        Ok(RawFigures {
            prompt_tokens: prompt.len(),
            decode_tokens,
            runs: runs.max(1),
            prefill_ms_p50: p,
            prefill_tokens_per_s,
            decode_ms_per_token_p50: d,
            decode_tokens_per_s,
            limits: Limits {
                cpu_level: choice.level.to_string(),
                cpu_detected: choice.detected.to_string(),
                cpu_extensions: crate::cpu::extensions()
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                threads: rayon::current_num_threads(),
                read_gb_s,
                bytes_per_token,
                decode_limit_tokens_per_s: decode_limit,
                decode_share: share(decode_tokens_per_s, decode_limit),
                peak_kernel: kind,
                peak_gflops,
                prefill_flop_per_token,
                prefill_limit_tokens_per_s: prefill_limit,
                prefill_share: share(prefill_tokens_per_s, prefill_limit),
            },
        })
    })?
}

/// Passes over the weights in [`weights_read_gb_s`]: best of these.
const WEIGHT_PASSES: usize = 5;
/// Words each thread's task sums in a pass over one weight.
const PROBE_TASK_WORDS: usize = 1 << 16;

/// Read bandwidth over exactly what a decode step reads from the projections: every weight
/// matrix summed in turn with every thread, at the kernels' level (one parallel pass per
/// matrix, as the products make), best of [`WEIGHT_PASSES`] passes, in GB/s. `None` when a
/// weight's storage cannot be read so (candle's own formats, another device).
pub fn weights_read_gb_s(level: Level, weights: &[&crate::matmul::WeightMatrix]) -> Option<f64> {
    let mut best = 0f64;
    for _ in 0..WEIGHT_PASSES {
        let (mut words, mut all) = (0usize, true);
        let t = Instant::now();
        for w in weights {
            if !all {
                break;
            }
            all = w.read_words(&mut |v: &[u32]| {
                words += v.len();
                let s = v
                    .par_chunks(PROBE_TASK_WORDS)
                    .map(|c| xor(level, c))
                    .reduce(|| 0, |a, b| a ^ b);
                std::hint::black_box(s);
            });
        }
        let secs = t.elapsed().as_secs_f64();
        if !all || words == 0 {
            return None;
        }
        best = best.max((words * 4) as f64 / secs / 1e9);
    }
    Some(best)
}

/// Read bandwidth with every thread over a 64 MiB buffer, best of 10 passes, in GB/s: the
/// bound where [`weights_read_gb_s`] cannot read the weights. Twice a 32 MiB L3, small
/// enough not to raise the benchmark's peak RSS much; a larger cache holds it, so it is
/// an upper bound there.
pub fn read_bandwidth_gb_s(level: Level) -> f64 {
    let n = 16 << 20;
    let buf = vec![1u32; n];
    let chunk = n.div_ceil(rayon::current_num_threads().max(1) * 8);
    let mut best = 0f64;
    for _ in 0..10 {
        let t = Instant::now();
        let s = buf
            .par_chunks(chunk)
            .map(|c| xor(level, c))
            .reduce(|| 0, |a, b| a ^ b);
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max((n * 4) as f64 / secs / 1e9);
    }
    best
}

fn xor(level: Level, x: &[u32]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if matches!(level, Level::Avx512 | Level::Avx512Vnni) {
            // SAFETY: only at a level the CPU supports.
            return unsafe { xor_avx512(x) };
        }
        if matches!(level, Level::Avx2 | Level::Avx2Vnni) {
            // SAFETY: as above.
            return unsafe { xor_avx2(x) };
        }
    }
    let _ = level;
    xor_portable(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn xor_avx2(x: &[u32]) -> u32 {
    xor_portable(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn xor_avx512(x: &[u32]) -> u32 {
    xor_portable(x)
}

/// 64 independent lanes: several vectors in flight whatever the width (integers, so that no
/// bit pattern read costs a floating-point assist).
#[inline(always)]
fn xor_portable(x: &[u32]) -> u32 {
    let mut acc = [0u32; 64];
    let mut chunks = x.chunks_exact(64);
    for c in &mut chunks {
        for l in 0..64 {
            acc[l] ^= c[l];
        }
    }
    acc.iter().fold(0, |a, b| a ^ b) ^ chunks.remainder().iter().fold(0, |a, b| a ^ b)
}

/// The rate of the projections' kernel (`f32`, `q8_0`, `q4_0`) on 256 rows times a
/// 3,072 x 768 weight, best of about a second of runs, in GFLOP/s; 0 for formats our
/// kernels do not run.
pub fn kernel_peak_gflops(kind: &str, level: Level) -> f64 {
    let (m, n, k) = (256, 3072, 768);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 104_729) % 1999) as f32 / 999.0 - 1.0)
        .collect();
    let packed = match kind {
        "q8_0" => PackedQ::quantize(QFormat::Q8_0, &w, n, k, level).ok(),
        "q4_0" => PackedQ::quantize(QFormat::Q4_0, &w, n, k, level).ok(),
        "f32" => None,
        _ => return 0.0,
    };
    let run = || match &packed {
        Some(p) => std::hint::black_box(p.matmul_t(&x, m)),
        None => std::hint::black_box(crate::sgemm::matmul_t(&x, m, &w, n, k, level)),
    };
    run();
    let start = Instant::now();
    let mut best = f64::MAX;
    while start.elapsed().as_secs_f64() < 1.0 {
        let t = Instant::now();
        run();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::{DType, Tensor};

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
        let mut xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut xs, 50.0), 50.0);
        assert_eq!(percentile(&mut xs, 95.0), 95.0);
        assert_eq!(percentile(&mut xs, 100.0), 100.0);
    }

    #[test]
    fn the_probes_measure_something_at_every_level() {
        assert!(kernel_peak_gflops("q4k", crate::cpu::level()) == 0.0);
        for level in crate::cpu::available() {
            let x: Vec<u32> = (0..1000u32)
                .map(|i| i.wrapping_mul(2_654_435_761))
                .collect();
            let want = x.iter().fold(0, |a, b| a ^ b);
            assert_eq!(xor(level, &x), want, "{level}");
        }
    }

    #[test]
    fn the_decode_probe_reads_every_byte_of_the_weights_our_kernels_read() {
        use crate::matmul::WeightMatrix;
        let dev = candle_core::Device::Cpu;
        let dense = WeightMatrix::Dense(Tensor::ones((64, 96), DType::F32, &dev).unwrap());
        let mut packed = dense.clone();
        assert!(packed.quantize(GgmlDType::Q8_0).unwrap());
        for w in [&dense, &packed] {
            let mut words = 0;
            assert!(w.read_words(&mut |v: &[u32]| words += v.len()));
            // Every byte but the scales' unaligned ends (2 bytes at most each).
            assert!(w.bytes() - words * 4 <= 4, "{} of {}", words * 4, w.bytes());
        }
        let f16 = WeightMatrix::Dense(Tensor::ones((64, 96), DType::F16, &dev).unwrap());
        assert!(!f16.read_words(&mut |_| panic!("f16 is not read")));
        assert!(weights_read_gb_s(crate::cpu::level(), &[&dense, &f16]).is_none());
        assert!(weights_read_gb_s(crate::cpu::level(), &[&dense, &packed]).unwrap() > 0.0);
    }
}
