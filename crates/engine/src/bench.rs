//! Raw engine figures: prefill and decode speed on the model thread, without prompts or
//! post-processing. Medians over several runs; nothing here is asserted in tests.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::model::{KvCache, Logits};
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
    engine.run_blocking(move |g| -> Result<RawFigures> {
        let window = g.model.config().n_positions;
        let mut prompt = prompt;
        prompt.truncate(window.saturating_sub(decode_tokens + 1).max(1));
        let mut prefill = Vec::new();
        let mut decode = Vec::new();
        for _ in 0..runs.max(1) {
            let mut cache = KvCache::new();
            let t = Instant::now();
            let mut logits = None;
            for chunk in prompt.chunks(crate::generate::PREFILL_CHUNK) {
                logits = Some(
                    g.model
                        .forward_cached(chunk, &mut cache, Logits::Last, None)?,
                );
            }
            prefill.push(t.elapsed().as_secs_f64() * 1000.0);
            let mut next = logits
                .expect("non-empty prompt")
                .argmax(0)?
                .to_scalar::<u32>()?;
            let t = Instant::now();
            for _ in 0..decode_tokens {
                let l = g
                    .model
                    .forward_cached(&[next], &mut cache, Logits::Last, None)?;
                next = l.argmax(0)?.to_scalar::<u32>()?;
            }
            if decode_tokens > 0 {
                decode.push(t.elapsed().as_secs_f64() * 1000.0 / decode_tokens as f64);
            }
        }
        let p = median(&mut prefill);
        let d = median(&mut decode);
        Ok(RawFigures {
            prompt_tokens: prompt.len(),
            decode_tokens,
            runs: runs.max(1),
            prefill_ms_p50: p,
            prefill_tokens_per_s: if p > 0.0 {
                prompt.len() as f64 * 1000.0 / p
            } else {
                0.0
            },
            decode_ms_per_token_p50: d,
            decode_tokens_per_s: if d > 0.0 { 1000.0 / d } else { 0.0 },
        })
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
