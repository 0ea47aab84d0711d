//! How many sequences one forward and backward pass can hold in memory, on the CPU.
//!
//! A micro-batch whose activations do not fit is run as several smaller passes whose
//! gradients are summed with token weights ([`crate::train`]), which is the same gradient:
//! the default command (batch 4 of 1,024 tokens) on tiny_starcoder_py needs ~36 GB in one
//! pass and was killed by the kernel on a 24 GB machine.
//!
//! The estimate is a formula fitted to measured peak RSS (BENCHMARKS.md): per sequence of `T`
//! tokens, `T · 4(L(24E + 10I) + 3V) + T² · 17LH` bytes (L layers, E width, I inner width,
//! H heads, V vocabulary). The `T²` term is the attention scores and their gradients, the `T`
//! term the per-layer activations kept for the backward pass and the logits. Fitted on
//! tiny_starcoder_py's shape at 512 and 1,024 tokens (3.39 and 8.9 GB a sequence), it predicts
//! pico's 2.2 GB at batch 4 × 512 (measured 2.24 GB).

use copilot_engine::Config;

use crate::error::{FinetuneError, Result};

/// Share of the available memory a pass may plan to use.
const HEADROOM: f64 = 0.85;

/// Estimated bytes of activations one training sequence of `seq_len` tokens needs (f32).
pub fn bytes_per_sequence(cfg: &Config, seq_len: usize) -> u64 {
    let (l, e, i) = (
        cfg.n_layer as u64,
        cfg.n_embd as u64,
        cfg.inner_dim() as u64,
    );
    let (h, v, t) = (cfg.n_head as u64, cfg.vocab_size as u64, seq_len as u64);
    t * 4 * (l * (24 * e + 10 * i) + 3 * v) + t * t * 17 * l * h
}

/// Memory the system can give this process now (Linux's `MemAvailable`); None elsewhere or
/// when it cannot be read.
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&info)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Sequences per forward pass: the whole micro-batch when it fits in `available` bytes,
/// else the most that fit. An error when not even one sequence fits.
pub fn forward_batch(batch_size: usize, per_sequence: u64, available: u64) -> Result<usize> {
    let budget = (available as f64 * HEADROOM) as u64;
    let fits = (budget / per_sequence.max(1)) as usize;
    if fits == 0 {
        return Err(FinetuneError::Options(format!(
            "one training sequence needs about {:.1} GB of memory and {:.1} GB is available: \
             lower --seq-len",
            per_sequence as f64 / 1e9,
            available as f64 / 1e9
        )));
    }
    Ok(fits.min(batch_size).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(l: usize, e: usize, h: usize, v: usize) -> Config {
        let json = format!(
            r#"{{"n_layer": {l}, "n_embd": {e}, "n_head": {h}, "vocab_size": {v},
                "n_positions": 8192, "multi_query": true}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn the_estimate_matches_the_measurements_it_was_fitted_on() {
        let tsp = cfg(20, 768, 12, 49152);
        let gb = |b: u64| b as f64 / 1e9;
        // Measured: 3.39 GB a sequence at 512 tokens, 8.9 GB at 1,024.
        assert!((gb(bytes_per_sequence(&tsp, 512)) - 3.39).abs() < 0.15);
        assert!((gb(bytes_per_sequence(&tsp, 1024)) - 8.9).abs() < 0.3);
        // And predicts pico (measured 2.24 GB peak at batch 4 × 512, ~0.1 GB of it weights).
        let pico = cfg(6, 384, 6, 8192);
        assert!((gb(4 * bytes_per_sequence(&pico, 512)) - 2.1).abs() < 0.2);
    }

    #[test]
    fn a_micro_batch_that_does_not_fit_is_split() {
        let gb = 1_000_000_000u64;
        assert_eq!(forward_batch(4, 9 * gb, 100 * gb).unwrap(), 4);
        assert_eq!(forward_batch(4, 9 * gb, 23 * gb).unwrap(), 2);
        assert_eq!(forward_batch(4, 9 * gb, 11 * gb).unwrap(), 1);
        let e = forward_batch(4, 9 * gb, 10 * gb).unwrap_err().to_string();
        assert!(e.contains("lower --seq-len"), "{e}");
        assert_eq!(
            parse_mem_available("MemTotal: 10 kB\nMemAvailable:   2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_mem_available("MemTotal: 10 kB\n"), None);
    }
}
