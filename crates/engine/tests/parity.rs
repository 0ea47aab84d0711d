//! Numerical parity with Hugging Face transformers: logits and greedy continuations recorded
//! by transformers in `reference.json` next to each checkpoint.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use copilot_engine::{load, KvCache, Logits, Tokenizer};
use serde_json::Value;

fn check_checkpoint(dir: &Path) {
    let cfg = load::load_config(&dir.join("config.json")).unwrap();
    let files = load::resolve(
        &copilot_engine::ModelSpec {
            model: dir.display().to_string(),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let model = load::load_model(&files, &cfg, &Device::Cpu, DType::F32).unwrap();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let ids: Vec<u32> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        // transformers encoded the prompt whole, special strings as special ids.
        let ours = tok.inner().encode(prompt, false).unwrap();
        assert_eq!(ours.get_ids(), &ids[..], "prompt ids of {prompt:?}");

        let mut cache = KvCache::new();
        let logits = model
            .forward_cached(&ids, &mut cache, Logits::Last, None)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let head: Vec<f32> = case["last_logits_head"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (i, (a, b)) in logits.iter().zip(&head).enumerate() {
            assert!(
                (a - b).abs() < 1e-4,
                "{}: logit {i} of {prompt:?}: ours {a}, transformers {b}",
                dir.display()
            );
        }
        let (argmax, max) =
            logits.iter().enumerate().fold(
                (0, f32::MIN),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        assert_eq!(argmax as u64, case["last_logits_argmax"].as_u64().unwrap());
        assert!((max - case["last_logits_max"].as_f64().unwrap() as f32).abs() < 1e-4);

        // Greedy continuation with the KV cache, end-of-text not treated as a stop.
        let want: Vec<u32> = case["greedy_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let mut got = Vec::new();
        let mut logits = model
            .forward_cached(&ids, &mut KvCache::new(), Logits::Last, None)
            .unwrap();
        let mut cache = KvCache::new();
        model
            .forward_cached(&ids, &mut cache, Logits::Last, None)
            .unwrap();
        for _ in 0..want.len() {
            let next = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
            got.push(next);
            logits = model
                .forward_cached(&[next], &mut cache, Logits::Last, None)
                .unwrap();
        }
        assert_eq!(got, want, "{}: greedy ids of {prompt:?}", dir.display());
        assert_eq!(
            tok.decode(&got),
            case["greedy_text"].as_str().unwrap(),
            "greedy text"
        );
    }
    eprintln!(
        "{}: {} cases match transformers",
        dir.display(),
        cases.len()
    );
}

#[test]
fn tiny_random_mqa_matches_transformers() {
    if let Some(s) = common::shared_dir("tiny_random_mqa_matches_transformers") {
        check_checkpoint(&s.join("fixtures/hf-reference/tiny-random-mqa"));
    }
}

#[test]
fn tiny_random_mha_matches_transformers() {
    if let Some(s) = common::shared_dir("tiny_random_mha_matches_transformers") {
        check_checkpoint(&s.join("fixtures/hf-reference/tiny-random-mha"));
    }
}

#[test]
fn pico_starcoder_matches_transformers() {
    if let Some(s) = common::shared_dir("pico_starcoder_matches_transformers") {
        check_checkpoint(&s.join("models/pico-starcoder"));
    }
}

/// The rotary families' fixtures, committed beside the tests (`fixtures/families/make.py`
/// wrote them with transformers): every last-position logit within 1e-4, the greedy tokens
/// identical with the KV cache, and the tokenizer's ids those transformers used.
fn check_family(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name);
    let files = load::resolve(
        &copilot_engine::ModelSpec {
            model: dir.display().to_string(),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let cfg = load::load_config(&files.config).unwrap();
    let model = load::load_model(&files, &cfg, &Device::Cpu, DType::F32).unwrap();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let ids_of = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    for case in reference["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let ids = ids_of(&case["prompt_ids"]);
        let ours = tok.inner().encode(prompt, false).unwrap();
        assert_eq!(ours.get_ids(), &ids[..], "{name}: prompt ids of {prompt:?}");
        let want: Vec<f32> = case["last_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let mut cache = KvCache::new();
        let got = model
            .forward_cached(&ids, &mut cache, Logits::Last, None)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4,
            "{name}: logits of {prompt:?} differ by {worst}"
        );
        // Greedy, one token at a time through the KV cache.
        let greedy = ids_of(&case["greedy_ids"]);
        let mut next = Tensor::new(got.as_slice(), &Device::Cpu)
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        let mut out = Vec::new();
        for _ in 0..greedy.len() {
            out.push(next);
            let l = model
                .forward_cached(&[next], &mut cache, Logits::Last, None)
                .unwrap();
            next = l.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        }
        assert_eq!(out, greedy, "{name}: greedy ids of {prompt:?}");
        // Truncate to a prefix and continue: the same as a fresh run.
        let mut all = ids.clone();
        all.extend(&out);
        let k = ids.len() / 2;
        cache.truncate(k);
        let cont = model
            .forward_cached(&all[k..], &mut cache, Logits::Last, None)
            .unwrap();
        let fresh = model
            .forward_cached(&all, &mut KvCache::new(), Logits::Last, None)
            .unwrap();
        let d = copilot_engine::testkit::max_abs_diff(&cont, &fresh).unwrap();
        assert!(d < 1e-4, "{name}: truncate-and-continue differs by {d}");
    }
}

#[test]
fn qwen2_tied_matches_transformers() {
    check_family("qwen2-tied");
}

#[test]
fn qwen2_untied_with_four_kv_heads_matches_transformers() {
    check_family("qwen2-untied-kv4");
}

#[test]
fn llama_with_linear_rope_scaling_matches_transformers() {
    check_family("llama-linear-rope");
}

#[test]
fn starcoder2_past_its_sliding_window_matches_transformers() {
    check_family("starcoder2-window");
}
