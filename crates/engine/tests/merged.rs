//! Merged copies of adapters: a copy computes what the base with the unmerged delta
//! computes (every architecture, dense and q8_0), and the model thread serves copies within
//! its memory budget, least recently used first out, with the caches of the adapters it
//! switches reset.

use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use copilot_engine::model::{BlockLora, LoraPair};
use copilot_engine::{
    load, testkit, Arch, GenerateParams, GenerateRequest, Generator, KvCache, Logits, Lora, Model,
    ModelSpec, Module,
};

fn load_dir(dir: &std::path::Path) -> (Model, copilot_engine::Tokenizer) {
    let spec = ModelSpec {
        model: dir.display().to_string(),
        ..Default::default()
    };
    let files = load::resolve(&spec, &mut |_| {}).unwrap();
    let cfg = load::load_config(&files.config).unwrap();
    let model = load::load_model(&files, &cfg, &Device::Cpu, DType::F32).unwrap();
    (model, load::load_tokenizer(&files.tokenizer).unwrap())
}

/// A tiny random checkpoint of `arch` (GPTBigCode with multi-query attention or not).
fn tiny(arch: Arch, multi_query: bool) -> (tempfile::TempDir, Model, copilot_engine::Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    match arch {
        Arch::GptBigCode => testkit::write_tiny_checkpoint(dir.path(), multi_query, 3).unwrap(),
        _ => {
            testkit::write_tiny_rope_checkpoint(dir.path(), arch, 3).unwrap();
        }
    }
    let (model, tok) = load_dir(dir.path());
    (dir, model, tok)
}

/// An adapter of rank 3 on every module of the architecture, prepared as the engine serves
/// adapters.
fn adapter(model: &Model, seed: u64) -> Lora {
    let cfg = model.config();
    let vals = |n: usize, k: u64| -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u64 * 2654435761 + k * 97) % 1000) as f32 / 1000.0 - 0.5) * 0.4)
            .collect()
    };
    let mut lora = Lora {
        blocks: vec![BlockLora::default(); cfg.n_layer],
    };
    for layer in 0..cfg.n_layer {
        for (k, &m) in Module::of(model.arch()).iter().enumerate() {
            let (inp, out) = m.dims(cfg);
            let s = seed + (layer * 10 + k) as u64;
            lora.blocks[layer].set(
                m,
                Some(LoraPair::new(
                    Tensor::from_vec(vals(3 * inp, s), (3, inp), &Device::Cpu).unwrap(),
                    Tensor::from_vec(vals(out * 3, s + 1), (out, 3), &Device::Cpu).unwrap(),
                    1.5,
                )),
            );
        }
    }
    copilot_engine::low_rank::prepare(&lora)
}

fn prompt() -> Vec<u32> {
    (0..14).map(|i| (i * 7 + 3) % 60 + 1).collect()
}

fn all_logits(model: &Model, lora: Option<&Lora>) -> Tensor {
    model
        .forward_cached(&prompt(), &mut KvCache::new(), Logits::All, lora)
        .unwrap()
}

fn diff(a: &Tensor, b: &Tensor) -> f32 {
    testkit::max_abs_diff(a, b).unwrap()
}

fn argmaxes(t: &Tensor) -> Vec<u32> {
    t.argmax(1).unwrap().to_vec1::<u32>().unwrap()
}

#[test]
fn a_merged_copy_computes_what_the_unmerged_adapter_does() {
    let cases = [
        (Arch::GptBigCode, true),
        (Arch::GptBigCode, false),
        (Arch::Llama, false),
        (Arch::Qwen2, false),
        (Arch::Starcoder2, false),
    ];
    for (arch, mq) in cases {
        let (_dir, model, _) = tiny(arch, mq);
        let lora = adapter(&model, 1);
        let base = all_logits(&model, None);
        let unmerged = all_logits(&model, Some(&lora));
        assert!(
            diff(&base, &unmerged) > 1e-2,
            "{arch:?}: the adapter did nothing"
        );
        let cost = model.merge_cost(&lora).unwrap();
        let (copy, bytes) = model.merged(&lora).unwrap();
        assert_eq!(bytes, cost, "{arch:?}: the dry run's bytes");
        let merged = all_logits(&copy, None);
        assert!(
            diff(&merged, &unmerged) < 1e-4,
            "{arch:?}: merged {}",
            diff(&merged, &unmerged)
        );
        // The base is untouched by the merge (its weights are shared, not written).
        assert_eq!(diff(&all_logits(&model, None), &base), 0.0, "{arch:?}");
        // The copy owns only the touched projections: every block's, not the embeddings.
        let touched: usize = model.projections().iter().map(|w| w.bytes()).sum::<usize>()
            - model.projections().last().unwrap().bytes();
        assert_eq!(bytes, touched, "{arch:?}: bytes of the merged projections");

        // q8_0: the copy stays q8_0 (quantized again after the merge), predicts what the
        // quantized base with the unmerged delta predicts at nearly every position, and is
        // no further from the f32 result than that one.
        let mut q = model.clone();
        q.quantize(GgmlDType::Q8_0).unwrap();
        let q_unmerged = all_logits(&q, Some(&lora));
        let (q_copy, q_bytes) = q.merged(&lora).unwrap();
        assert!(
            q_bytes < bytes / 3,
            "{arch:?}: q8_0 copy of {q_bytes} bytes"
        );
        let kinds: Vec<String> = q_copy.projections().iter().map(|w| w.kind()).collect();
        let q_kinds: Vec<String> = q.projections().iter().map(|w| w.kind()).collect();
        assert_eq!(kinds, q_kinds, "{arch:?}");
        let q_merged = all_logits(&q_copy, None);
        let (a, b) = (argmaxes(&q_merged), argmaxes(&q_unmerged));
        let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(
            agree * 10 >= a.len() * 9,
            "{arch:?}: q8_0 agreement {agree}/{}",
            a.len()
        );
        // Its error against the f32 merged model is the quantization's: about what the
        // quantized base with the exact delta has against the f32 one.
        let (err_merged, err_unmerged) = (diff(&q_merged, &merged), diff(&q_unmerged, &unmerged));
        assert!(
            err_merged <= 1.5 * err_unmerged + 1e-3,
            "{arch:?}: q8_0 merged off by {err_merged}, unmerged by {err_unmerged}"
        );
    }
}

fn request(adapter: &str) -> GenerateRequest {
    let mut r = GenerateRequest::new(
        prompt(),
        GenerateParams {
            max_new_tokens: 6,
            ..Default::default()
        },
    );
    r.adapter = Some(adapter.to_string());
    r
}

fn run(g: &mut Generator, adapter: &str) -> copilot_engine::Generation {
    g.generate(&mut request(adapter), &|| false).unwrap()
}

#[test]
fn the_model_thread_serves_merged_copies_within_its_budget() {
    let (_dir, model, tok) = tiny(Arch::GptBigCode, true);
    let (a, b) = (adapter(&model, 1), adapter(&model, 50));
    let cost = model.merge_cost(&a).unwrap();
    let mut g = Generator::new(model, Arc::new(tok));
    g.add_adapter("a".into(), a);
    g.add_adapter("b".into(), b);

    // Unmerged by default (budget 0): what the copies must reproduce.
    let want_a = run(&mut g, "a").tokens;
    let want_b = run(&mut g, "b").tokens;
    assert_ne!(want_a, want_b, "the two adapters differ");
    assert!(g.merged_copies().names().is_empty());

    // Room for one copy: the first use starts a build in the background and is served
    // unmerged; the copy serves once adopted, with a's cache reset (filled by other weights).
    g.set_merge_budget(cost);
    assert_eq!(run(&mut g, "a").tokens, want_a);
    assert_eq!(g.merged_copies().building(), Some("a"));
    assert!(g.merge_now("a").unwrap());
    assert_eq!(g.merged_copies().names(), ["a"]);
    let first = run(&mut g, "a");
    assert_eq!(first.tokens, want_a, "merged a");
    assert_eq!(
        first.reused_tokens, 0,
        "a's cache was reset when its copy came"
    );
    assert!(run(&mut g, "a").reused_tokens > 0, "then reused");

    // b's copy needs a's room: a is dropped before b is built, never both in memory.
    assert_eq!(run(&mut g, "b").tokens, want_b);
    assert_eq!(g.merged_copies().building(), Some("b"));
    assert!(g.merged_copies().names().is_empty());
    assert!(g.merged_copies().bytes() <= cost);
    assert!(g.merge_now("b").unwrap());
    assert_eq!(g.merged_copies().names(), ["b"]);
    assert_eq!(run(&mut g, "b").tokens, want_b, "merged b");
    assert_eq!(run(&mut g, "a").tokens, want_a, "a unmerged again");

    // Room for two: both stay, most recently used first.
    // (That use of a started its build, dropping b's copy to make room.)
    g.set_merge_budget(2 * cost);
    assert!(g.merge_now("a").unwrap());
    assert_eq!(g.merged_copies().names(), ["a"]);
    assert!(g.merge_now("b").unwrap());
    assert_eq!(g.merged_copies().names(), ["b", "a"]);
    assert_eq!(g.merged_copies().bytes(), 2 * cost);

    // A smaller budget drops the least recently used; one too small for any copy serves
    // every adapter unmerged, and says so without building.
    g.set_merge_budget(cost);
    assert_eq!(g.merged_copies().names(), ["b"]);
    g.set_merge_budget(cost - 1);
    assert!(g.merged_copies().names().is_empty());
    assert!(!g.merge_now("b").unwrap());
    assert_eq!(g.merged_copies().building(), None);
    assert_eq!(run(&mut g, "b").tokens, want_b);

    // Replacing an adapter drops its copy: the new deltas are served, not the old merge.
    g.set_merge_budget(2 * cost);
    assert!(g.merge_now("a").unwrap());
    let b_again = g.adapter("b").unwrap().as_ref().clone();
    g.add_adapter("a".into(), b_again);
    assert!(!g.merged_copies().names().contains(&"a".to_string()));
    assert_eq!(run(&mut g, "a").tokens, want_b, "a now holds b's deltas");
    assert!(g.merge_now("a").unwrap());
    assert_eq!(
        run(&mut g, "a").tokens,
        want_b,
        "merged from the new deltas"
    );
}
