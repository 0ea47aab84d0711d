//! The rotary families (Llama, Qwen2, StarCoder2) on tiny random checkpoints built in code:
//! the same equivalences the GPTBigCode model keeps (cached decoding equals recomputing,
//! truncate-and-continue equals a fresh run, the differentiable pass computes the same
//! function), StarCoder2's window slid past, q8_0, and LoRA deltas equal to merged weights.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use copilot_engine::model::{BlockLora, LoraPair};
use copilot_engine::{load, testkit, Arch, KvCache, Logits, Lora, Model, ModelSpec, Module, Pass};

const FAMILIES: [Arch; 3] = [Arch::Llama, Arch::Qwen2, Arch::Starcoder2];

fn load_dir(dir: &std::path::Path) -> Model {
    let spec = ModelSpec {
        model: dir.display().to_string(),
        ..Default::default()
    };
    let files = load::resolve(&spec, &mut |_| {}).unwrap();
    let cfg = load::load_config(&files.config).unwrap();
    load::load_model(&files, &cfg, &Device::Cpu, DType::F32).unwrap()
}

fn tiny(arch: Arch) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_rope_checkpoint(dir.path(), arch, 11).unwrap();
    let model = load_dir(dir.path());
    (dir, model)
}

fn diff(a: &Tensor, b: &Tensor) -> f32 {
    testkit::max_abs_diff(a, b).unwrap()
}

fn argmax(t: &Tensor) -> u32 {
    t.argmax(0).unwrap().to_scalar::<u32>().unwrap()
}

/// 40 ids: longer than the tiny StarCoder2's window of 16.
fn prompt() -> Vec<u32> {
    (0..40u32).map(|i| 30 + (i * 37) % 200).collect()
}

#[test]
fn cached_decoding_equals_recomputing_for_every_family() {
    for arch in FAMILIES {
        let (_d, model) = tiny(arch);
        assert_eq!(model.arch(), arch);
        let mut ids = prompt();
        let mut cache = KvCache::new();
        let mut logits = model
            .forward_cached(&ids, &mut cache, Logits::Last, None)
            .unwrap();
        for step in 0..10 {
            let full = model
                .forward_cached(&ids, &mut KvCache::new(), Logits::Last, None)
                .unwrap();
            assert!(diff(&full, &logits) < 1e-4, "{arch:?} step {step}");
            let next = argmax(&logits);
            ids.push(next);
            logits = model
                .forward_cached(&[next], &mut cache, Logits::Last, None)
                .unwrap();
        }
        // Chunked prefill (what generation does) equals one pass.
        let mut chunked = KvCache::new();
        let mut last = None;
        for c in ids.chunks(7) {
            last = Some(
                model
                    .forward_cached(c, &mut chunked, Logits::Last, None)
                    .unwrap(),
            );
        }
        let whole = model
            .forward_cached(&ids, &mut KvCache::new(), Logits::Last, None)
            .unwrap();
        assert!(diff(&last.unwrap(), &whole) < 1e-4, "{arch:?} chunked");
        // All-position logits agree with the last-position path.
        let all = model
            .forward_cached(&ids[..30], &mut KvCache::new(), Logits::All, None)
            .unwrap();
        let last = model
            .forward_cached(&ids[..30], &mut KvCache::new(), Logits::Last, None)
            .unwrap();
        assert!(diff(&all.get(29).unwrap(), &last) < 1e-4, "{arch:?}");
        // The differentiable formulation computes the same function.
        let batch = Tensor::new(&ids[..30], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let d = model
            .forward_batch(&batch, Logits::All, None, Pass::Differentiable)
            .unwrap()
            .squeeze(0)
            .unwrap();
        assert!(diff(&d, &all) < 1e-3, "{arch:?} differentiable");
    }
}

#[test]
fn truncate_and_continue_equals_a_fresh_run_for_every_family() {
    for arch in FAMILIES {
        let (_d, model) = tiny(arch);
        let a = prompt();
        let b: Vec<u32> = (0..9).map(|i| 50 + i).collect();
        let mut cache = KvCache::new();
        model
            .forward_cached(&a, &mut cache, Logits::Last, None)
            .unwrap();
        model
            .forward_cached(&b, &mut cache, Logits::Last, None)
            .unwrap();
        for k in [1, 15, 17, a.len()] {
            let mut c = cache.clone();
            c.truncate(k);
            let rest: Vec<u32> = a[k..].iter().chain(&b).copied().collect();
            let cont = model
                .forward_cached(&rest, &mut c, Logits::Last, None)
                .unwrap();
            let mut all = a[..k].to_vec();
            all.extend(&rest);
            let fresh = model
                .forward_cached(&all, &mut KvCache::new(), Logits::Last, None)
                .unwrap();
            assert!(diff(&cont, &fresh) < 1e-4, "{arch:?} truncate to {k}");
        }
    }
}

#[test]
fn the_sliding_window_hides_keys_older_than_the_window() {
    // The last position's logits depend on the tokens in its window only.
    let (_d, model) = tiny(Arch::Starcoder2);
    let window = model.config().window().unwrap();
    let a = prompt();
    let mut b = a.clone();
    // Change a token just outside the last position's window, then one inside it.
    // Later layers see earlier positions' outputs, so the influence of a token reaches
    // n_layer · (window - 1) positions back; change one beyond that.
    let reach = model.config().n_layer * (window - 1);
    let outside = a.len() - 1 - reach - 1;
    b[outside] = a[outside] + 1;
    let la = model
        .forward_cached(&a, &mut KvCache::new(), Logits::Last, None)
        .unwrap();
    let lb = model
        .forward_cached(&b, &mut KvCache::new(), Logits::Last, None)
        .unwrap();
    assert!(
        diff(&la, &lb) < 1e-5,
        "a token outside the window changed the output"
    );
    let mut c = a.clone();
    c[a.len() - 2] = a[a.len() - 2] + 1;
    let lc = model
        .forward_cached(&c, &mut KvCache::new(), Logits::Last, None)
        .unwrap();
    assert!(
        diff(&la, &lc) > 1e-3,
        "a token inside the window changed nothing"
    );
}

#[test]
fn q8_0_stays_close_to_f32_for_every_family() {
    for arch in FAMILIES {
        let (_d, mut model) = tiny(arch);
        let ids = prompt();
        let dense = model
            .forward_cached(&ids, &mut KvCache::new(), Logits::All, None)
            .unwrap();
        let n = model
            .quantize(candle_core::quantized::GgmlDType::Q8_0)
            .unwrap();
        // Per block: fused q/k/v, o_proj, then gate+up fused and down (or c_fc, c_proj);
        // then the embedding table, and the untied head when there is one.
        let head = usize::from(!model.config().tie_word_embeddings);
        assert_eq!(n, 2 * 4 + 1 + head, "{arch:?}");
        let quant = model
            .forward_cached(&ids, &mut KvCache::new(), Logits::All, None)
            .unwrap();
        let scale = testkit::abs_max(&dense).unwrap();
        let d = diff(&dense, &quant);
        // Activations are quantized too (candle's q8_0 product): a few percent on these
        // small random models, whose activations grow through the blocks.
        assert!(d > 0.0 && d < 0.1 * scale, "{arch:?}: {d} vs {scale}");
        let am = |t: &Tensor| t.argmax(1).unwrap().to_vec1::<u32>().unwrap();
        let agree = am(&dense)
            .iter()
            .zip(am(&quant))
            .filter(|(a, b)| **a == *b)
            .count();
        assert!(
            agree * 10 >= ids.len() * 9,
            "{arch:?}: greedy agreement {agree}/{}",
            ids.len()
        );
    }
}

/// A random LoRA pair for `module` of a model of config `cfg`.
fn pair(cfg: &copilot_engine::Config, module: Module, seed: u64) -> LoraPair {
    let (inp, out) = module.dims(cfg);
    let r = 3;
    let vals = |n: usize, k: u64| -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u64 * 2654435761 + k * 97) % 1000) as f32 / 1000.0 - 0.5) * 0.4)
            .collect()
    };
    LoraPair::new(
        Tensor::from_vec(vals(r * inp, seed), (r, inp), &Device::Cpu).unwrap(),
        Tensor::from_vec(vals(out * r, seed + 1), (out, r), &Device::Cpu).unwrap(),
        1.5,
    )
}

#[test]
fn lora_on_every_module_equals_the_merged_weights() {
    for arch in FAMILIES {
        let dir = tempfile::tempdir().unwrap();
        let cfg = testkit::write_tiny_rope_checkpoint(dir.path(), arch, 5).unwrap();
        let model = load_dir(dir.path());
        let mut lora = Lora {
            blocks: vec![BlockLora::default(); cfg.n_layer],
        };
        let mut weights: HashMap<String, Tensor> =
            candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu)
                .unwrap();
        for layer in 0..cfg.n_layer {
            for (k, &m) in Module::of(arch).iter().enumerate() {
                let p = pair(&cfg, m, (layer * 10 + k) as u64);
                let name = format!("{}.weight", m.name(arch, layer));
                let w = &weights[&name];
                let merged = (w + (p.b.matmul(&p.a).unwrap() * p.scale).unwrap()).unwrap();
                weights.insert(name, merged);
                lora.blocks[layer].set(m, Some(p));
            }
        }
        let ids = prompt();
        let with_lora = model
            .forward_cached(&ids, &mut KvCache::new(), Logits::All, Some(&lora))
            .unwrap();
        let base = model
            .forward_cached(&ids, &mut KvCache::new(), Logits::All, None)
            .unwrap();
        candle_core::safetensors::save(&weights, dir.path().join("model.safetensors")).unwrap();
        let merged = load_dir(dir.path())
            .forward_cached(&ids, &mut KvCache::new(), Logits::All, None)
            .unwrap();
        assert!(
            diff(&with_lora, &base) > 1e-2,
            "{arch:?}: the adapter did nothing"
        );
        assert!(
            diff(&with_lora, &merged) < 1e-4,
            "{arch:?}: adapter != merged"
        );
        // Prepared for inference (scale folded in, added in place; what the engine serves),
        // over the whole prompt and then one row at a time through the cache (decode).
        let prepared = copilot_engine::low_rank::prepare(&lora);
        let fast = model
            .forward_cached(&ids, &mut KvCache::new(), Logits::All, Some(&prepared))
            .unwrap();
        assert!(
            diff(&fast, &merged) < 1e-4,
            "{arch:?}: prepared adapter != merged"
        );
        let mut cache = KvCache::new();
        let mut last = None;
        for id in &ids {
            last = Some(
                model
                    .forward_cached(&[*id], &mut cache, Logits::Last, Some(&prepared))
                    .unwrap(),
            );
        }
        let want = merged.get(ids.len() - 1).unwrap();
        assert!(
            diff(&last.unwrap(), &want) < 1e-4,
            "{arch:?}: prepared adapter, row by row != merged"
        );
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(name)
}

/// Greedy ids after `ids`, through the cache.
fn greedy(model: &Model, ids: &[u32], n: usize) -> (Tensor, Vec<u32>) {
    let mut cache = KvCache::new();
    let first = model
        .forward_cached(ids, &mut cache, Logits::Last, None)
        .unwrap();
    let mut next = argmax(&first);
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next);
        next = argmax(
            &model
                .forward_cached(&[next], &mut cache, Logits::Last, None)
                .unwrap(),
        );
    }
    (first, out)
}

fn write_gguf(
    dir: &std::path::Path,
    out: &std::path::Path,
    dtype: candle_core::quantized::GgmlDType,
) {
    let cfg = load::load_config(&dir.join("config.json")).unwrap();
    let st = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    copilot_engine::gguf::write(out, &cfg, &st, dtype, Some(&tok)).unwrap();
}

/// Our GGUF writer on transformers' checkpoints (llama.cpp's names and metadata, Llama's
/// q/k permuted as its converter does), read back with the tokenizer inside: f32 gives the
/// safetensors model's logits and greedy tokens; q8_0 gives those of the safetensors model
/// quantized to q8_0 at load.
#[test]
fn gguf_files_of_every_family_match_the_safetensors_directory() {
    use candle_core::quantized::GgmlDType;
    for name in [
        "qwen2-tied",
        "qwen2-untied-kv4",
        "llama-linear-rope",
        "starcoder2-window",
    ] {
        let dir = fixture(name);
        let tmp = tempfile::tempdir().unwrap();
        let reference = load_dir(&dir);
        let tok = load::load_tokenizer(&dir.join("tokenizer.json")).unwrap();
        let text =
            "def total(xs):\n    s = 0\n    for x in xs:\n        s += x * 2  # é\n    return";
        let ids = tok.encode_text(text).unwrap();
        for dtype in [GgmlDType::F32, GgmlDType::Q8_0] {
            let path = tmp.path().join(format!("{name}-{dtype:?}.gguf"));
            write_gguf(&dir, &path, dtype);
            let files = load::resolve(
                &ModelSpec {
                    model: path.display().to_string(),
                    ..Default::default()
                },
                &mut |_| {},
            )
            .unwrap();
            // The tokenizer inside the file encodes as the hub's tokenizer.json does.
            let inside = load::load_tokenizer(&files.tokenizer).unwrap();
            for t in [text, "s = '<|fim_middle|><fim_prefix>'\n\t12345 ü"] {
                assert_eq!(
                    inside.encode_text(t).unwrap(),
                    tok.encode_text(t).unwrap(),
                    "{name}"
                );
            }
            assert_eq!(inside.specials(), tok.specials(), "{name}");
            let cfg = load::files_config(&files).unwrap();
            let want_cfg = reference.config();
            assert_eq!(cfg.arch(), want_cfg.arch(), "{name}");
            assert_eq!(
                (
                    cfg.kv_heads(),
                    cfg.head_dim(),
                    cfg.tie_word_embeddings,
                    cfg.window()
                ),
                (
                    want_cfg.kv_heads(),
                    want_cfg.head_dim(),
                    want_cfg.tie_word_embeddings,
                    want_cfg.window()
                ),
                "{name}"
            );
            assert_eq!(
                cfg.rope_scaling_kind(),
                want_cfg.rope_scaling_kind(),
                "{name}"
            );
            let model = load::load_model(&files, &cfg, &Device::Cpu, DType::F32).unwrap();
            let (got, got_greedy) = greedy(&model, &ids, 12);
            let mut base = load_dir(&dir);
            if dtype == GgmlDType::Q8_0 {
                base.quantize(dtype).unwrap();
            }
            let (want, want_greedy) = greedy(&base, &ids, 12);
            let d = diff(&got, &want);
            assert!(d < 1e-4, "{name} {dtype:?}: logits differ by {d}");
            assert_eq!(got_greedy, want_greedy, "{name} {dtype:?}");
        }
    }
}

#[test]
fn gguf_metadata_that_disagrees_with_the_tensors_is_a_clear_error() {
    use candle_core::quantized::gguf_file;
    let dir = fixture("qwen2-tied");
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.gguf");
    write_gguf(&dir, &good, candle_core::quantized::GgmlDType::F32);
    // Rewrite one metadata value and load.
    let rewrite = |key: &str, value: gguf_file::Value| -> String {
        let mut f = std::fs::File::open(&good).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        let mut meta = content.metadata.clone();
        meta.insert(key.to_string(), value);
        let tensors: Vec<(String, candle_core::quantized::QTensor)> = content
            .tensor_infos
            .keys()
            .map(|n| (n.clone(), content.tensor(&mut f, n, &Device::Cpu).unwrap()))
            .collect();
        let bad = tmp.path().join("bad.gguf");
        let mut out = std::fs::File::create(&bad).unwrap();
        let m: Vec<(&str, &gguf_file::Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t: Vec<(&str, &candle_core::quantized::QTensor)> =
            tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut out, &m, &t).unwrap();
        copilot_engine::load(
            &ModelSpec {
                model: bad.display().to_string(),
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap_err()
        .to_string()
    };
    let e = rewrite("qwen2.embedding_length", gguf_file::Value::U32(48));
    assert!(
        e.contains("embedding_length") && e.contains("token_embd"),
        "{e}"
    );
    let e = rewrite("qwen2.attention.head_count_kv", gguf_file::Value::U32(1));
    assert!(
        e.contains("blk.0.attn_k.weight") && e.contains("shape"),
        "{e}"
    );
    let e = rewrite("qwen2.attention.head_count_kv", gguf_file::Value::U32(3));
    assert!(e.contains("num_key_value_heads 3"), "{e}");
    let e = rewrite(
        "general.architecture",
        gguf_file::Value::String("phi3".into()),
    );
    assert!(
        e.contains("`phi3`") && e.contains("starcoder, llama, qwen2, starcoder2"),
        "{e}"
    );
    let e = rewrite(
        "qwen2.rope.scaling.type",
        gguf_file::Value::String("yarn".into()),
    );
    assert!(e.contains("yarn"), "{e}");
}
