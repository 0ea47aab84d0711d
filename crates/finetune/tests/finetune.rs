//! Training, adapters and merging on the tiny random model (hermetic: the checkpoint is made
//! in code). One test binary for the crate.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use copilot_engine::{load, testkit, Logits, Lora, Model, ModelSpec, Pass, Tokenizer};
use copilot_finetune::examples::{self, ExampleOptions, Packed};
use copilot_finetune::lora::{Module, Target, TrainableLora};
use copilot_finetune::merge::{self, CombineOptions, Method};
use copilot_finetune::peft::{self, Adapter, AdapterConfig};
use copilot_finetune::train::{self, Batch, TrainOptions};
use copilot_finetune::SourceFile;
use rand::{Rng, SeedableRng};

struct Tiny {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    model: Model,
    tok: Tokenizer,
}

fn tiny(seed: u64) -> Tiny {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny");
    testkit::write_tiny_checkpoint(&path, true, seed).unwrap();
    let (model, tok) = load_dir(&path);
    Tiny {
        _dir: dir,
        path,
        model,
        tok,
    }
}

fn load_dir(path: &Path) -> (Model, Tokenizer) {
    let spec = ModelSpec {
        model: path.display().to_string(),
        ..Default::default()
    };
    let files = load::resolve(&spec, &mut |_| {}).unwrap();
    let cfg = load::load_config(&files.config).unwrap();
    let model = load::load_model(&files, &cfg, &Device::Cpu, DType::F32).unwrap();
    (model, load::load_tokenizer(&files.tokenizer).unwrap())
}

/// A small, regular corpus: the same few functions with varying names and constants.
fn corpus(n: usize) -> Vec<SourceFile> {
    (0..n)
        .map(|i| SourceFile {
            rel: format!("pkg/mod{i}.py"),
            text: format!(
                "def add_{i}(a, b):\n    return a + b + {i}\n\n\
                 def scale_{i}(x):\n    return x * {}\n\n\
                 class Item{i}:\n    def __init__(self, v):\n        self.v = v\n",
                i % 7
            ),
        })
        .collect()
}

fn packed(t: &Tiny, files: usize, seq_len: usize) -> Packed {
    let opts = ExampleOptions {
        seq_len,
        ..Default::default()
    };
    examples::build(&t.tok, &corpus(files), &opts).unwrap()
}

fn randomize_b(lora: &TrainableLora, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for p in &lora.pairs {
        let (o, r) = p.b.dims2().unwrap();
        let v: Vec<f32> = (0..o * r).map(|_| rng.random_range(-0.1..0.1)).collect();
        p.b.set(&Tensor::from_vec(v, (o, r), &Device::Cpu).unwrap())
            .unwrap();
    }
}

fn logits(model: &Model, lora: Option<&Lora>, ids: &[u32]) -> Tensor {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward_batch(&input, Logits::All, lora, Pass::Inference)
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    testkit::max_abs_diff(a, b).unwrap()
}

fn trained_adapter(t: &Tiny, seed: u64, modules: &[&str], rank: usize) -> Adapter {
    let target = Target {
        rank,
        modules: modules.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let lora = TrainableLora::new(t.model.config(), target.clone(), seed, &Device::Cpu).unwrap();
    randomize_b(&lora, seed + 1);
    Adapter::from_trainable(&lora, AdapterConfig::for_training(&target, 0.0, None)).unwrap()
}

#[test]
fn every_lora_tensor_receives_a_nonzero_gradient() {
    let t = tiny(1);
    let data = packed(&t, 4, 32);
    let batch = Batch::new(&data, &[0, 1], &Device::Cpu).unwrap();
    let lora = TrainableLora::new(t.model.config(), Target::default(), 3, &Device::Cpu).unwrap();
    assert_eq!(
        lora.pairs.len(),
        2 * 4,
        "c_attn, c_proj (both), c_fc in 2 layers"
    );
    // At initialisation B = 0, so only B can receive a gradient (dL/dA = s·Bᵀ·...).
    let (_, grads) = train::loss_and_grads(&t.model, &lora, &batch, None).unwrap();
    for (p, g) in lora.pairs.iter().zip(grads.chunks(2)) {
        let g_b = g[1].as_ref().expect("B has a gradient");
        assert!(copilot_engine::testkit::abs_sum(g_b).unwrap() > 0.0);
        assert_eq!(g_b.dims(), p.b.dims());
    }
    // With B non-zero every tensor, A and B, must get a non-zero gradient: this fails if any
    // op of the training graph (softmax, layer norm) records no backward pass.
    randomize_b(&lora, 9);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (l, grads) =
        train::loss_and_grads(&t.model, &lora, &batch, Some((0.05, &mut rng))).unwrap();
    assert!(l.is_finite());
    let names: Vec<String> = lora
        .pairs
        .iter()
        .flat_map(|p| ['A', 'B'].map(|w| peft::key(lora.arch, p.layer, p.module, w)))
        .collect();
    for (name, g) in names.iter().zip(&grads) {
        let g = g.as_ref().unwrap_or_else(|| panic!("{name}: no gradient"));
        let s = copilot_engine::testkit::abs_sum(g).unwrap();
        assert!(s > 0.0 && s.is_finite(), "{name}: gradient sum {s}");
    }
}

#[test]
fn a_few_dozen_steps_drive_the_loss_down() {
    let t = tiny(2);
    let data = packed(&t, 24, 64);
    let out = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        target: Target {
            rank: 8,
            alpha: 16.0,
            ..Default::default()
        },
        lr: 5e-3,
        batch_size: 4,
        grad_accum: 1,
        epochs: 100,
        max_steps: Some(36),
        warmup_steps: Some(3),
        save_every: 0,
        ..Default::default()
    };
    let (_, summary) = train::train(&t.model, &data, &opts, out.path(), &mut |_| true).unwrap();
    let l = &summary.losses;
    assert_eq!(l.len(), 36);
    let first = l[..3].iter().sum::<f64>() / 3.0;
    let last = l[l.len() - 3..].iter().sum::<f64>() / 3.0;
    eprintln!("loss {first:.3} -> {last:.3}");
    assert!(last < 0.7 * first, "loss {first:.3} -> {last:.3}");
}

#[test]
fn resuming_an_interrupted_run_gives_the_same_adapter() {
    let t = tiny(3);
    let data = packed(&t, 10, 32);
    let opts = TrainOptions {
        target: Target {
            rank: 4,
            ..Default::default()
        },
        lr: 1e-3,
        batch_size: 2,
        grad_accum: 2,
        epochs: 2,
        save_every: 2,
        ..Default::default()
    };
    let full_dir = tempfile::tempdir().unwrap();
    let (full, s_full) =
        train::train(&t.model, &data, &opts, full_dir.path(), &mut |_| true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, s1) = train::train(&t.model, &data, &opts, dir.path(), &mut |p| p.step < 3).unwrap();
    assert_eq!(s1.steps, 3);
    let resume = TrainOptions {
        resume: true,
        ..opts.clone()
    };
    let (resumed, s2) = train::train(&t.model, &data, &resume, dir.path(), &mut |_| true).unwrap();
    assert_eq!(s2.resumed_from, Some(3));
    assert_eq!(s2.steps, s_full.steps);
    for (k, p) in &full.pairs {
        let q = &resumed.pairs[k];
        assert!(
            max_diff(&p.a, &q.a) < 1e-6 && max_diff(&p.b, &q.b) < 1e-6,
            "{k:?}"
        );
    }
    // Other options: refuse to resume.
    let other = TrainOptions {
        batch_size: 1,
        ..resume
    };
    let e = train::train(&t.model, &data, &other, dir.path(), &mut |_| true)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("other data or options"), "{e}");
}

#[test]
fn saved_reloaded_and_merged_adapters_give_the_same_logits() {
    let t = tiny(4);
    let adapter = trained_adapter(&t, 11, &["c_attn", "c_proj", "c_fc"], 8);
    let n_layer = t.model.config().n_layer;
    let ids: Vec<u32> = t.tok.encode_text("def f(x):\n    return x + 1\n").unwrap();
    let base = logits(&t.model, None, &ids);
    let unmerged = logits(&t.model, Some(&adapter.to_lora(n_layer)), &ids);
    assert!(
        max_diff(&base, &unmerged) > 1e-3,
        "the adapter changes the output"
    );

    let dir = tempfile::tempdir().unwrap();
    adapter.save(dir.path()).unwrap();
    let reloaded =
        peft::load_adapter(dir.path(), t.model.config(), &Device::Cpu, DType::F32).unwrap();
    let d = max_diff(&unmerged, &logits(&t.model, Some(&reloaded), &ids));
    assert!(d < 1e-5, "reloaded: {d}");

    let files = load::resolve(
        &ModelSpec {
            model: t.path.display().to_string(),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let merged_dir = dir.path().join("merged");
    let loaded = Adapter::load(dir.path(), t.model.config(), &Device::Cpu, DType::F32).unwrap();
    merge::merge_into_base(&files, &loaded, &merged_dir).unwrap();
    let (merged, _) = load_dir(&merged_dir);
    let d = max_diff(&unmerged, &logits(&merged, None, &ids));
    assert!(d < 1e-4, "merged: {d}");
}

#[test]
fn combining_with_weights_one_zero_equals_the_first_adapter() {
    let t = tiny(5);
    let n_layer = t.model.config().n_layer;
    let a = trained_adapter(&t, 21, &["c_attn", "c_proj", "c_fc"], 4);
    let b = trained_adapter(&t, 31, &["c_attn", "c_fc"], 8);
    let ids: Vec<u32> = t.tok.encode_text("class A:\n    pass\n").unwrap();
    let want = logits(&t.model, Some(&a.to_lora(n_layer)), &ids);
    for method in [Method::Linear, Method::Cat, Method::Ties] {
        let o = CombineOptions {
            method,
            weights: vec![1.0, 0.0],
            density: 1.0,
            rank: None,
        };
        let c = merge::combine(&[a.clone(), b.clone()], &o).unwrap();
        for (k, p) in &a.pairs {
            let d = max_diff(&p.delta().unwrap(), &c.pairs[k].delta().unwrap());
            assert!(d < 1e-4, "{method:?} {k:?}: {d}");
        }
        let got = logits(&t.model, Some(&c.to_lora(n_layer)), &ids);
        assert!(max_diff(&want, &got) < 1e-4, "{method:?}");
        // The combined adapter is itself a valid PEFT adapter.
        let dir = tempfile::tempdir().unwrap();
        c.save(dir.path()).unwrap();
        let back =
            peft::load_adapter(dir.path(), t.model.config(), &Device::Cpu, DType::F32).unwrap();
        assert!(max_diff(&want, &logits(&t.model, Some(&back), &ids)) < 1e-4);
    }
    // cat is exact for any weights, and its rank is the sum of the ranks.
    let o = CombineOptions {
        method: Method::Cat,
        weights: vec![0.7, 0.3],
        density: 0.5,
        rank: None,
    };
    let c = merge::combine(&[a.clone(), b.clone()], &o).unwrap();
    assert_eq!(c.config.r, 12);
    for (k, p) in &c.pairs {
        let mut want = (a.pairs.get(k).map(|p| p.delta().unwrap()).unwrap() * 0.7).unwrap();
        if let Some(q) = b.pairs.get(k) {
            want = (want + (q.delta().unwrap() * 0.3).unwrap()).unwrap();
        }
        assert!(max_diff(&want, &p.delta().unwrap()) < 1e-5, "{k:?}");
    }
}

#[test]
fn peft_config_and_key_names_match_the_hand_written_fixture() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft");
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    // The default target, resolved for GPTBigCode (its defaults: c_attn, c_proj, c_fc).
    let t = tiny(6);
    let lora = TrainableLora::new(t.model.config(), Target::default(), 1, &Device::Cpu).unwrap();
    let cfg =
        AdapterConfig::for_training(&lora.target, 0.05, Some("bigcode/tiny_starcoder_py".into()));
    assert_eq!(serde_json::to_value(&cfg).unwrap(), want);
    let adapter = Adapter::from_trainable(&lora, cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    adapter.save(dir.path()).unwrap();
    let bytes = std::fs::read(dir.path().join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        meta.metadata()
            .as_ref()
            .unwrap()
            .get("format")
            .map(String::as_str),
        Some("pt")
    );
    let keys: BTreeSet<String> = st.names().into_iter().map(str::to_string).collect();
    let want_keys: BTreeSet<String> = std::fs::read_to_string(fixtures.join("keys-2-layers.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(keys, want_keys);
    let e = t.model.config().n_embd;
    let a = st
        .tensor("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")
        .unwrap();
    let b = st
        .tensor("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight")
        .unwrap();
    assert_eq!(a.shape(), [16, e]);
    assert_eq!(b.shape(), [e + 2 * (e / 4), 16]);
    let c = st
        .tensor("base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight")
        .unwrap();
    assert_eq!(c.shape(), [16, 4 * e]);
    assert_eq!(a.dtype(), safetensors::Dtype::F32);
}

#[test]
fn loads_an_adapter_written_as_peft_writes_it() {
    // As Python's peft would save one: the fixture's config (alpha 32, r 16) with a rank
    // pattern, tensors named per the format, written without this crate's writer.
    let t = tiny(7);
    let cfg = t.model.config().clone();
    let dir = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft/adapter_config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    config["rank_pattern"] = serde_json::json!({"h.1.mlp.c_fc": 4});
    config["some_future_field"] = serde_json::json!("ignored");
    std::fs::write(dir.path().join("adapter_config.json"), config.to_string()).unwrap();
    let e = cfg.n_embd;
    let mut tensors = HashMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut rand_t = |r: usize, c: usize| {
        let v: Vec<f32> = (0..r * c).map(|_| rng.random_range(-0.1..0.1)).collect();
        Tensor::from_vec(v, (r, c), &Device::Cpu).unwrap()
    };
    let p = "base_model.model.transformer.h";
    tensors.insert(format!("{p}.0.attn.c_attn.lora_A.weight"), rand_t(16, e));
    tensors.insert(
        format!("{p}.0.attn.c_attn.lora_B.weight"),
        rand_t(e + 32, 16),
    );
    tensors.insert(format!("{p}.1.mlp.c_fc.lora_A.weight"), rand_t(4, e));
    tensors.insert(format!("{p}.1.mlp.c_fc.lora_B.weight"), rand_t(4 * e, 4));
    candle_core::safetensors::save(&tensors, dir.path().join("adapter_model.safetensors")).unwrap();
    let lora = peft::load_adapter(dir.path(), &cfg, &Device::Cpu, DType::F32).unwrap();
    let c_attn = lora.blocks[0].get(Module::CAttn).unwrap();
    assert_eq!(c_attn.scale, 2.0);
    assert!(
        lora.blocks[0].get(Module::CFc).is_none() && lora.blocks[1].get(Module::CAttn).is_none()
    );
    assert_eq!(lora.blocks[1].get(Module::CFc).unwrap().scale, 8.0);

    // A wrong shape (an adapter for another model) is an error naming the module.
    tensors.insert(format!("{p}.1.mlp.c_fc.lora_A.weight"), rand_t(4, e + 1));
    candle_core::safetensors::save(&tensors, dir.path().join("adapter_model.safetensors")).unwrap();
    let err = peft::load_adapter(dir.path(), &cfg, &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("transformer.h.1.mlp.c_fc"), "{err}");
    // Unsupported variants are refused, not silently misapplied.
    config["use_dora"] = serde_json::json!(true);
    std::fs::write(dir.path().join("adapter_config.json"), config.to_string()).unwrap();
    let err = peft::load_adapter(dir.path(), &cfg, &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("DoRA"), "{err}");
}

#[test]
fn trainable_vars_are_f32_and_b_starts_at_zero() {
    let t = tiny(8);
    let lora = TrainableLora::new(t.model.config(), Target::default(), 1, &Device::Cpu).unwrap();
    let vars: Vec<&Var> = lora.vars();
    assert!(vars.iter().all(|v| v.dtype() == DType::F32));
    for p in &lora.pairs {
        assert_eq!(p.b.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        let bound = 1.0 / (p.a.dim(1).unwrap() as f32).sqrt();
        assert!(copilot_engine::testkit::abs_max(&p.a).unwrap() <= bound);
    }
}

/// On the real pico checkpoint (`$COPILOT_LSP_SHARED/models/pico-starcoder`): a few training
/// steps give every LoRA tensor a gradient and lower the loss on the batch they see, and
/// the saved adapter gives the same logits reloaded and merged into a full checkpoint.
#[test]
fn pico_trains_saves_and_merges() {
    let Some(shared) = std::env::var_os("COPILOT_LSP_SHARED") else {
        eprintln!("SKIPPED pico_trains_saves_and_merges: COPILOT_LSP_SHARED is not set");
        return;
    };
    let pico = Path::new(&shared).join("models/pico-starcoder");
    let (model, tok) = load_dir(&pico);
    let data = examples::build(
        &tok,
        &corpus(6),
        &ExampleOptions {
            seq_len: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        lr: 2e-3,
        batch_size: 2,
        grad_accum: 1,
        epochs: 1,
        max_steps: Some(4),
        dropout: 0.0,
        ..Default::default()
    };
    let batch = Batch::new(&data, &[0, 1], &Device::Cpu).unwrap();
    let before = train::loss(&model, None, &batch, Pass::Inference)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let (adapter, _) = train::train(&model, &data, &opts, out.path(), &mut |_| true).unwrap();
    let n_layer = model.config().n_layer;
    let lora = adapter.to_lora(n_layer);
    let after = train::loss(&model, Some(&lora), &batch, Pass::Inference)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(after < before, "loss {before} -> {after}");

    let dir = out.path().join("adapter");
    adapter.save(&dir).unwrap();
    let ids = tok.encode_text("import os\n\ndef main():\n").unwrap();
    let want = logits(&model, Some(&lora), &ids);
    let back = peft::load_adapter(&dir, model.config(), &Device::Cpu, DType::F32).unwrap();
    assert!(max_diff(&want, &logits(&model, Some(&back), &ids)) < 1e-5);
    let files = load::resolve(
        &ModelSpec {
            model: pico.display().to_string(),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let merged_dir = out.path().join("merged");
    merge::merge_into_base(&files, &adapter, &merged_dir).unwrap();
    let (merged, _) = load_dir(&merged_dir);
    let d = max_diff(&want, &logits(&merged, None, &ids));
    assert!(d < 1e-4, "merged: {d}");
}

/// Adapters cross between this crate and Python's `peft` (fixture made by
/// `tests/fixtures/peft-interop/make.py` with peft 0.21): an adapter trained here, as peft
/// computes it, and an adapter peft made (with a rank_pattern and an alpha_pattern), as we
/// compute it, give the same logits.
#[test]
fn adapters_cross_with_python_peft() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft-interop");
    let (model, _) = load_dir(&dir.join("base"));
    for name in ["ours", "peft"] {
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(name).join("peft_logits.json")).unwrap(),
        )
        .unwrap();
        let ids: Vec<u32> = reference["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want: Vec<f32> = reference["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter())
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let want =
            Tensor::from_vec(want, (ids.len(), model.config().vocab_size), &Device::Cpu).unwrap();
        let lora =
            peft::load_adapter(&dir.join(name), model.config(), &Device::Cpu, DType::F32).unwrap();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = |lora: Option<&Lora>| {
            model
                .forward_batch(&input, Logits::All, lora, Pass::Inference)
                .unwrap()
                .squeeze(0)
                .unwrap()
        };
        let diff = max_diff(&logits(Some(&lora)), &want);
        assert!(diff < 1e-4, "{name}: logits differ from peft's by {diff}");
        // The adapter matters: without it the logits are far from peft's.
        let base_diff = max_diff(&logits(None), &want);
        assert!(
            base_diff > 1e-2,
            "{name}: adapter changes nothing ({base_diff})"
        );
    }
}

#[test]
fn a_micro_batch_run_in_smaller_passes_has_the_same_loss_and_gradients() {
    let t = tiny(5);
    let data = packed(&t, 12, 48);
    assert!(data.sequences.len() >= 4, "{}", data.sequences.len());
    let lora = TrainableLora::new(t.model.config(), Target::default(), 3, &Device::Cpu).unwrap();
    randomize_b(&lora, 4);
    let idx = [0, 1, 2, 3];
    let (whole, g_whole, n_whole) =
        train::micro_batch_grads(&t.model, &lora, &data, &idx, 4, None).unwrap();
    for fb in [1, 3] {
        let (l, g, n) = train::micro_batch_grads(&t.model, &lora, &data, &idx, fb, None).unwrap();
        assert_eq!(n, n_whole);
        assert!((l - whole).abs() < 1e-5, "{fb}: {l} vs {whole}");
        for (a, b) in g.iter().zip(&g_whole) {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            let scale = testkit::abs_max(b).unwrap().max(1e-6);
            assert!(max_diff(a, b) / scale < 1e-4, "{fb}");
        }
    }
}
