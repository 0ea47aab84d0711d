//! LoRA on the rotary families (Llama, Qwen2, StarCoder2) on tiny random checkpoints: every
//! adapter tensor gets a gradient, training drives the loss down, adapters save in the PEFT
//! format under the family's module names and come back as the same logits, merged weights
//! equal the adapter; and a Qwen2 adapter crosses with Python's `peft` both ways.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use copilot_engine::{load, testkit, Arch, Logits, Lora, Model, ModelSpec, Pass, Tokenizer};
use copilot_finetune::examples::{self, ExampleOptions};
use copilot_finetune::lora::{Target, TrainableLora};
use copilot_finetune::merge;
use copilot_finetune::peft::{self, Adapter, AdapterConfig};
use copilot_finetune::train::{self, Batch, TrainOptions};
use copilot_finetune::SourceFile;

const FAMILIES: [Arch; 3] = [Arch::Llama, Arch::Qwen2, Arch::Starcoder2];

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

fn corpus(n: usize) -> Vec<SourceFile> {
    (0..n)
        .map(|i| SourceFile {
            rel: format!("pkg/mod{i}.py"),
            text: format!(
                "def add_{i}(a, b):\n    return a + b + {i}\n\n\
                 class Item{i}:\n    def __init__(self, v):\n        self.v = v\n"
            ),
        })
        .collect()
}

fn logits(model: &Model, lora: Option<&Lora>, ids: &[u32]) -> Tensor {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward_batch(&input, Logits::All, lora, Pass::Inference)
        .unwrap()
        .squeeze(0)
        .unwrap()
}

fn diff(a: &Tensor, b: &Tensor) -> f32 {
    testkit::max_abs_diff(a, b).unwrap()
}

#[test]
fn every_family_trains_saves_reloads_and_merges() {
    for arch in FAMILIES {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        testkit::write_tiny_rope_checkpoint(&base, arch, 4).unwrap();
        let (model, tok) = load_dir(&base);
        let data = examples::build(
            &tok,
            &corpus(16),
            &ExampleOptions {
                seq_len: 48,
                ..Default::default()
            },
        )
        .unwrap();

        // Every A and B gets a gradient once B is non-zero (RoPE, RMSNorm, SwiGLU and the
        // fused q/k/v all pass gradients back).
        let lora = TrainableLora::new(model.config(), Target::default(), 1, &Device::Cpu).unwrap();
        let per_block = copilot_engine::Module::of(arch).len();
        assert_eq!(
            lora.pairs.len(),
            per_block * model.config().n_layer,
            "{arch:?}"
        );
        for p in &lora.pairs {
            let (o, r) = p.b.dims2().unwrap();
            let v: Vec<f32> = (0..o * r).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
            p.b.set(&Tensor::from_vec(v, (o, r), &Device::Cpu).unwrap())
                .unwrap();
        }
        let batch = Batch::new(&data, &[0, 1], &Device::Cpu).unwrap();
        let (_, grads) = train::loss_and_grads(&model, &lora, &batch, None).unwrap();
        for (i, g) in grads.iter().enumerate() {
            let g = g
                .as_ref()
                .unwrap_or_else(|| panic!("{arch:?}: var {i} has no gradient"));
            assert!(testkit::abs_sum(g).unwrap() > 0.0, "{arch:?}: var {i}");
        }

        // Training drives the loss down.
        let out = dir.path().join("out");
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
            max_steps: Some(30),
            warmup_steps: Some(3),
            save_every: 0,
            ..Default::default()
        };
        let (adapter, summary) = train::train(&model, &data, &opts, &out, &mut |_| true).unwrap();
        let l = &summary.losses;
        let first = l[..3].iter().sum::<f64>() / 3.0;
        let last = l[l.len() - 3..].iter().sum::<f64>() / 3.0;
        eprintln!("{arch:?}: loss {first:.3} -> {last:.3}");
        assert!(last < 0.8 * first, "{arch:?}: loss {first:.3} -> {last:.3}");

        // Saved in PEFT's format under the family's names, reloaded: the same logits.
        let saved = dir.path().join("adapter");
        adapter.save(&saved).unwrap();
        let cfg_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(saved.join(peft::CONFIG_FILE)).unwrap())
                .unwrap();
        let want_targets: Vec<String> = copilot_finetune::lora::default_targets(arch);
        assert_eq!(
            cfg_json["target_modules"],
            serde_json::to_value(&want_targets).unwrap()
        );
        let keys =
            candle_core::safetensors::load(saved.join(peft::WEIGHTS_FILE), &Device::Cpu).unwrap();
        assert!(keys
            .keys()
            .all(|k| k.starts_with("base_model.model.model.layers.")));
        let ids = tok.encode_text("def add_3(a, b):\n    return a").unwrap();
        let trained = logits(&model, Some(&adapter.to_lora(model.config().n_layer)), &ids);
        let back = peft::load_adapter(&saved, model.config(), &Device::Cpu, DType::F32).unwrap();
        assert!(
            diff(&trained, &logits(&model, Some(&back), &ids)) < 1e-5,
            "{arch:?}"
        );
        assert!(
            diff(&trained, &logits(&model, None, &ids)) > 1e-3,
            "{arch:?}"
        );

        // Merged into the base weights: the same logits without the adapter.
        let files = load::resolve(
            &ModelSpec {
                model: base.display().to_string(),
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap();
        let merged_dir = dir.path().join("merged");
        merge::merge_into_base(&files, &adapter, &merged_dir).unwrap();
        let (merged, _) = load_dir(&merged_dir);
        let d = diff(&trained, &logits(&merged, None, &ids));
        assert!(d < 1e-4, "{arch:?}: merged differs by {d}");

        // An adapter for another architecture is refused with a clear message.
        if arch == Arch::Qwen2 {
            let sc2 = dir.path().join("sc2");
            testkit::write_tiny_rope_checkpoint(&sc2, Arch::Starcoder2, 4).unwrap();
            let (other, _) = load_dir(&sc2);
            let e = Adapter::load(&saved, other.config(), &Device::Cpu, DType::F32)
                .unwrap_err()
                .to_string();
            // Tensors are read by name: layer 0's down_proj is the first StarCoder2 lacks.
            assert!(
                e.contains("layers.0.mlp.down_proj") && e.contains("starcoder2"),
                "{e}"
            );
        }
    }
}

/// Adapters cross between this crate and Python's `peft` on a tiny Qwen2 (fixture made by
/// `tests/fixtures/peft-interop/make.py`): one trained here by `copilot-lsp finetune`, as
/// peft computes it, and one peft made (rank_pattern and alpha_pattern on q/k/v/o and the
/// MLP), as we compute it, give the same logits within 1e-4.
#[test]
fn qwen2_adapters_cross_with_python_peft() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft-interop");
    let (model, _) = load_dir(&dir.join("base-qwen2"));
    assert_eq!(model.arch(), Arch::Qwen2);
    for name in ["ours-qwen2", "peft-qwen2"] {
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
        let d = diff(&logits(&model, Some(&lora), &ids), &want);
        assert!(d < 1e-4, "{name}: logits differ from peft's by {d}");
        let base_d = diff(&logits(&model, None, &ids), &want);
        assert!(base_d > 1e-2, "{name}: adapter changes nothing ({base_d})");
    }
    // The adapter trained here names the modules as peft does for Qwen2.
    let cfg: AdapterConfig = serde_json::from_str(
        &std::fs::read_to_string(dir.join("ours-qwen2").join(peft::CONFIG_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&cfg.target_modules).unwrap(),
        serde_json::json!([
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj"
        ])
    );
}
