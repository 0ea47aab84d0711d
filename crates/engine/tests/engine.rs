//! Engine behaviour on the tiny random checkpoint built in code: KV cache equivalences,
//! generation, cancellation, special-token safety, and clear errors for bad checkpoints.

use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use copilot_engine::{
    load, testkit, CancelToken, EngineError, GenerateParams, GenerateRequest, KvCache, Logits,
    Model, ModelSpec, Pass, StopReason, Tokenizer,
};

fn tiny(multi_query: bool) -> (tempfile::TempDir, Model, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_checkpoint(dir.path(), multi_query, 7).unwrap();
    let spec = ModelSpec {
        model: dir.path().display().to_string(),
        ..Default::default()
    };
    let files = load::resolve(&spec, &mut |_| {}).unwrap();
    let cfg = load::load_config(&files.config).unwrap();
    let model = load::load_model(&files, &cfg, &Device::Cpu, DType::F32).unwrap();
    let tok = load::load_tokenizer(&files.tokenizer).unwrap();
    (dir, model, tok)
}

fn argmax(t: &Tensor) -> u32 {
    t.argmax(0).unwrap().to_scalar::<u32>().unwrap()
}

/// The largest absolute value of a tensor: the scale tolerances are relative to.
fn max_abs(t: &Tensor) -> f32 {
    copilot_engine::testkit::abs_max(t).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    copilot_engine::testkit::max_abs_diff(a, b).unwrap()
}

#[test]
fn cached_decoding_equals_recomputing_the_whole_sequence() {
    for mq in [true, false] {
        let (_d, model, tok) = tiny(mq);
        let mut ids = tok.encode_text("def add(a, b):\n    return").unwrap();
        let mut cache = KvCache::new();
        let mut logits = model
            .forward_cached(&ids, &mut cache, Logits::Last, None)
            .unwrap();
        for _ in 0..12 {
            let full = model
                .forward_cached(&ids, &mut KvCache::new(), Logits::Last, None)
                .unwrap();
            assert!(max_abs_diff(&full, &logits) < 1e-4, "multi_query={mq}");
            let next = argmax(&logits);
            ids.push(next);
            logits = model
                .forward_cached(&[next], &mut cache, Logits::Last, None)
                .unwrap();
        }
        // All-position logits agree with the last-position path at every position.
        let all = model
            .forward_cached(&ids[..10], &mut KvCache::new(), Logits::All, None)
            .unwrap();
        let last = model
            .forward_cached(&ids[..10], &mut KvCache::new(), Logits::Last, None)
            .unwrap();
        assert!(max_abs_diff(&all.get(9).unwrap(), &last) < 1e-4);
        // The differentiable formulation computes the same function.
        let batch = Tensor::new(&ids[..10], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let diff = model
            .forward_batch(&batch, Logits::All, None, Pass::Differentiable)
            .unwrap()
            .squeeze(0)
            .unwrap();
        assert!(max_abs_diff(&diff, &all) < 1e-3);
    }
}

#[test]
fn truncating_the_cache_then_continuing_equals_a_fresh_run() {
    let (_d, model, tok) = tiny(true);
    let a = tok
        .encode_text("import os\nimport sys\n\ndef main():\n")
        .unwrap();
    let b = tok.encode_text("    print('hello')").unwrap();
    let mut cache = KvCache::new();
    model
        .forward_cached(&a, &mut cache, Logits::Last, None)
        .unwrap();
    model
        .forward_cached(&b, &mut cache, Logits::Last, None)
        .unwrap();
    for k in [1, 5, a.len()] {
        let mut c = cache.clone();
        c.truncate(k);
        assert_eq!(c.len(), k);
        let rest: Vec<u32> = a[k..].iter().chain(&b).copied().collect();
        let rest = if rest.is_empty() { b.clone() } else { rest };
        let cont = model
            .forward_cached(&rest, &mut c, Logits::Last, None)
            .unwrap();
        let mut all = a[..k].to_vec();
        all.extend(&rest);
        let fresh = model
            .forward_cached(&all, &mut KvCache::new(), Logits::Last, None)
            .unwrap();
        assert!(max_abs_diff(&cont, &fresh) < 1e-4, "truncate to {k}");
    }
}

#[test]
fn a_context_longer_than_the_window_is_an_error_not_a_panic() {
    let (_d, model, _tok) = tiny(true);
    let n = model.config().n_positions + 1;
    let ids = vec![40u32; n];
    let err = model
        .forward_cached(&ids, &mut KvCache::new(), Logits::Last, None)
        .unwrap_err();
    assert!(matches!(err, EngineError::ContextTooLong { .. }), "{err}");
    assert!(err.to_string().contains("window"));
}

#[test]
fn special_strings_in_user_text_never_become_special_ids() {
    let (_d, _model, tok) = tiny(true);
    let s = tok.specials();
    for text in [
        "x = '<fim_middle>'",
        "<|endoftext|>",
        "a<fim_prefix>b<fim_suffix>",
    ] {
        let ids = tok.encode_text(text).unwrap();
        for special in ["<fim_prefix>", "<fim_middle>", "<fim_suffix>"] {
            let special = tok.token_id(special).unwrap();
            assert!(tok.is_special(special));
            assert!(!ids.contains(&special), "{text:?} gave {ids:?}");
        }
        assert!(!ids.contains(&s.eos), "{text:?} gave {ids:?}");
        assert_eq!(tok.decode(&ids), text, "round trip");
    }
    // Ordinary text goes through the normal path and round-trips, multi-byte included.
    let text = "naïve = '😀'\tüber()";
    assert_eq!(tok.decode(&tok.encode_text(text).unwrap()), text);
}

fn start_engine(dir: &std::path::Path) -> copilot_engine::Engine {
    load(
        &ModelSpec {
            model: dir.display().to_string(),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap()
}

/// Send a task to the model thread without waiting for it (one poll of `Engine::run`).
fn submit(engine: &copilot_engine::Engine, task: impl FnOnce() + Send + 'static) {
    use std::future::Future;
    let mut fut = std::pin::pin!(engine.run(move |_| task()));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
}

#[test]
fn dropping_the_last_handle_waits_for_the_model_thread() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_checkpoint(dir.path(), true, 7).unwrap();
    let engine = start_engine(dir.path());
    // A job still running when the last handle goes ends before the drop returns, and so does
    // the thread (with CUDA, exiting while it frees device buffers crashed the process).
    let done = std::sync::Arc::new(AtomicBool::new(false));
    submit(&engine, {
        let done = done.clone();
        move || {
            std::thread::sleep(Duration::from_millis(200));
            done.store(true, Ordering::SeqCst);
        }
    });
    drop(engine);
    assert!(done.load(Ordering::SeqCst));
}

#[test]
fn the_last_handle_may_be_dropped_on_the_model_thread() {
    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_checkpoint(dir.path(), true, 7).unwrap();
    let engine = start_engine(dir.path());
    let last = engine.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    submit(&engine, move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(last); // the last handle by now: must not join its own thread
        tx.send(()).unwrap();
    });
    drop(engine);
    rx.recv_timeout(Duration::from_secs(10))
        .expect("dropping the last handle on the model thread deadlocked");
}

#[test]
fn generation_reuses_the_common_prefix_and_gives_the_same_tokens() {
    let (dir, _m, tok) = tiny(true);
    let engine = start_engine(dir.path());
    let params = GenerateParams {
        max_new_tokens: 8,
        ..Default::default()
    };
    let p1 = tok.encode_text("def fib(n):\n    return").unwrap();
    let first = engine
        .generate_blocking(GenerateRequest::new(p1.clone(), params.clone()))
        .unwrap();
    assert_eq!(first.reused_tokens, 0);
    assert_eq!(first.prompt_tokens, p1.len());
    // Same prompt again: all but one token reused, same output.
    let again = engine
        .generate_blocking(GenerateRequest::new(p1.clone(), params.clone()))
        .unwrap();
    assert_eq!(again.reused_tokens, p1.len() - 1);
    assert_eq!(again.tokens, first.tokens);
    // A prompt that extends the first: the shared prefix is reused; output equals a cold run.
    let mut p2 = p1.clone();
    p2.extend(tok.encode_text(" fib(n - 1)").unwrap());
    let warm = engine
        .generate_blocking(GenerateRequest::new(p2.clone(), params.clone()))
        .unwrap();
    assert!(warm.reused_tokens >= p1.len() - 1, "{}", warm.reused_tokens);
    let cold_engine = start_engine(dir.path());
    let cold = cold_engine
        .generate_blocking(GenerateRequest::new(p2, params))
        .unwrap();
    assert_eq!(cold.reused_tokens, 0);
    assert_eq!(warm.tokens, cold.tokens);
    assert_eq!(warm.text, cold.text);
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let (dir, _m, tok) = tiny(true);
    let engine = start_engine(dir.path());
    let prompt = tok.encode_text("class Foo:").unwrap();
    let run = |seed| {
        engine
            .generate_blocking(GenerateRequest::new(
                prompt.clone(),
                GenerateParams {
                    max_new_tokens: 16,
                    temperature: 1.0,
                    top_p: 0.95,
                    top_k: Some(50),
                    seed,
                    ..Default::default()
                },
            ))
            .unwrap()
            .tokens
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn stop_strings_rules_and_limits_end_generation() {
    let (dir, _m, tok) = tiny(true);
    let engine = start_engine(dir.path());
    let prompt = tok.encode_text("x = ").unwrap();
    let base = engine
        .generate_blocking(GenerateRequest::new(
            prompt.clone(),
            GenerateParams {
                max_new_tokens: 20,
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(base.stop_reason, StopReason::MaxTokens);
    assert_eq!(base.tokens.len(), 20);
    // A stop string taken from the greedy output cuts the text right before it.
    let chars: Vec<char> = base.text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 1].iter().collect();
    let cut = engine
        .generate_blocking(GenerateRequest::new(
            prompt.clone(),
            GenerateParams {
                max_new_tokens: 20,
                stop_strings: vec![stop.clone()],
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(cut.stop_reason, StopReason::StopString);
    assert_eq!(cut.text, base.text[..base.text.find(&stop).unwrap()]);
    // A caller's rule sees the text so far.
    let mut req = GenerateRequest::new(
        prompt,
        GenerateParams {
            max_new_tokens: 20,
            ..Default::default()
        },
    );
    req.stop = Some(Box::new(|t: &str| t.chars().count() >= 3));
    let ruled = engine.generate_blocking(req).unwrap();
    assert_eq!(ruled.stop_reason, StopReason::StopRule);
    assert!(ruled.tokens.len() < 20);
}

#[test]
fn the_text_as_it_comes_grows_into_the_answer() {
    let (dir, _m, tok) = tiny(true);
    let engine = start_engine(dir.path());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut req = GenerateRequest::new(
        tok.encode_text("x = ").unwrap(),
        GenerateParams {
            max_new_tokens: 12,
            ..Default::default()
        },
    );
    let log = seen.clone();
    req.on_text = Some(Box::new(move |t: &str| {
        log.lock().unwrap().push(t.to_string())
    }));
    let out = engine.generate_blocking(req).unwrap();
    assert_eq!(out.stop_reason, StopReason::MaxTokens);
    let seen = seen.lock().unwrap();
    // Told after every token no check stopped at (here all 12: the limit ends the loop),
    // each time the answer so far.
    assert_eq!(seen.len(), 12);
    for pair in seen.windows(2) {
        assert!(pair[1].starts_with(&pair[0]), "{pair:?}");
    }
    assert!(out.text.starts_with(seen.last().unwrap()));
}

#[test]
fn cancellation_stops_decoding() {
    let (dir, _m, tok) = tiny(true);
    let engine = start_engine(dir.path());
    let cancel = CancelToken::new();
    let mut req = GenerateRequest::new(
        tok.encode_text("def f():").unwrap(),
        GenerateParams {
            max_new_tokens: 400,
            ..Default::default()
        },
    );
    req.cancel = cancel.clone();
    let c = cancel.clone();
    req.stop = Some(Box::new(move |t: &str| {
        // Cancel from "outside" after the third character; the loop must stop right after.
        if t.chars().count() >= 3 {
            c.cancel();
        }
        false
    }));
    let out = engine.generate_blocking(req).unwrap();
    assert_eq!(out.stop_reason, StopReason::Cancelled);
    assert!(out.tokens.len() < 10, "{} tokens", out.tokens.len());
    // A hard budget of zero stops after the first token.
    let out = engine
        .generate_blocking(GenerateRequest::new(
            tok.encode_text("def f():").unwrap(),
            GenerateParams {
                max_new_tokens: 400,
                hard_budget: Some(Duration::ZERO),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(out.stop_reason, StopReason::Budget);
    assert_eq!(out.tokens.len(), 1);
}

#[test]
fn dropping_the_request_frees_the_model_thread() {
    let (dir, _m, tok) = tiny(true);
    let engine = start_engine(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let prompt = tok.encode_text("def f():").unwrap();
    rt.block_on(async {
        let long = engine.generate(GenerateRequest::new(
            prompt.clone(),
            GenerateParams {
                max_new_tokens: 100_000,
                ..Default::default()
            },
        ));
        // Abandon it after a moment.
        let _ = tokio::time::timeout(Duration::from_millis(50), long).await;
    });
    // If the abandoned request were still decoding (up to the window), this would wait for it.
    let t = std::time::Instant::now();
    let out = engine
        .generate_blocking(GenerateRequest::new(
            prompt,
            GenerateParams {
                max_new_tokens: 2,
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(out.tokens.len(), 2);
    assert!(t.elapsed() < Duration::from_secs(5));
}

fn load_err(dir: &std::path::Path) -> String {
    load(
        &ModelSpec {
            model: dir.display().to_string(),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_checkpoint(dir.path(), true, 1).unwrap();
    let p = dir.path();

    // Truncated weights.
    let w = p.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(p);
    assert!(
        e.contains("truncated") && e.contains("model.safetensors"),
        "{e}"
    );
    std::fs::write(&w, &bytes[..4]).unwrap();
    assert!(load_err(p).contains("truncated"));
    std::fs::write(&w, &bytes).unwrap();

    // An architecture we do not run names itself and the ones we do.
    let c = p.join("config.json");
    let cfg = std::fs::read_to_string(&c).unwrap();
    std::fs::write(&c, cfg.replace("gpt_bigcode", "mistral")).unwrap();
    let e = load_err(p);
    assert!(
        e.contains("`mistral`") && e.contains("gpt_bigcode, llama, qwen2, starcoder2"),
        "{e}"
    );
    assert!(e.contains("config.json") && e.lines().count() == 1, "{e}");

    // A tensor of the wrong shape is named.
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["n_inner"] = serde_json::json!(100);
    std::fs::write(&c, v.to_string()).unwrap();
    let e = load_err(p);
    assert!(e.contains("mlp.c_fc"), "{e}");
    std::fs::write(&c, &cfg).unwrap();

    // A tokenizer without an end-of-text token (one without FIM tokens loads: the
    // pipeline then completes left to right).
    let t = p.join("tokenizer.json");
    let tok = std::fs::read_to_string(&t).unwrap();
    std::fs::write(&t, tok.replace("<|endoftext|>", "<|end|>")).unwrap();
    let e = load_err(p);
    assert!(
        e.contains("end-of-text") && e.contains("<|endoftext|>"),
        "{e}"
    );
    std::fs::write(&t, tok.replace("<fim_middle>", "<fim_mid>")).unwrap();
    load(
        &ModelSpec {
            model: p.display().to_string(),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    std::fs::write(&t, &tok).unwrap();

    // No weights at all.
    std::fs::remove_file(&w).unwrap();
    let e = load_err(p);
    assert!(e.contains("no weights"), "{e}");

    // Not a directory.
    let e = load_err(&p.join("nope"));
    assert!(e.contains("no such directory"), "{e}");
}

#[test]
fn q8_0_weights_stay_close_to_f32() {
    let (_d, mut model, tok) = tiny(true);
    let ids = tok
        .encode_text("def add(a, b):\n    return a + b\n")
        .unwrap();
    let dense = model
        .forward_cached(&ids, &mut KvCache::new(), Logits::All, None)
        .unwrap();
    let n = model
        .quantize(candle_core::quantized::GgmlDType::Q8_0)
        .unwrap();
    assert_eq!(n, 2 * 4 + 1, "every projection and the output head");
    let quant = model
        .forward_cached(&ids, &mut KvCache::new(), Logits::All, None)
        .unwrap();
    let scale = max_abs(&dense);
    let diff = max_abs_diff(&dense, &quant);
    assert!(diff > 0.0, "quantization changed nothing: not applied?");
    assert!(diff < 0.05 * scale, "q8_0 drifted: {diff} vs scale {scale}");
}

/// GGUF (llama.cpp's `starcoder` names) written from the hub checkpoint, loaded back: logits
/// close to the safetensors model quantized to the same format (the GGUF also quantizes the
/// embedding tables, which stay f32 when we quantize a safetensors model ourselves).
#[test]
fn gguf_checkpoint_matches_the_quantized_safetensors_model() {
    let (dir, mut model, tok) = tiny(true);
    let st =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let cfg = model.config().clone();
    let gguf_dir = tempfile::tempdir().unwrap();
    let path = gguf_dir.path().join("tiny.gguf");
    // The tokenizer goes inside the file, as in llama.cpp's GGUFs: nothing beside it.
    let tok_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("tokenizer.json")).unwrap())
            .unwrap();
    copilot_engine::gguf::write(
        &path,
        &cfg,
        &st,
        candle_core::quantized::GgmlDType::Q8_0,
        Some(&tok_json),
    )
    .unwrap();
    assert!(!gguf_dir.path().join("tokenizer.json").exists());
    let inside = copilot_engine::load::load_tokenizer(&path).unwrap();
    for text in [
        "def f(x):\n    return x * 2  # é😀\n",
        "s = '<fim_middle>'\n\t12345",
    ] {
        assert_eq!(
            inside.encode_text(text).unwrap(),
            tok.encode_text(text).unwrap()
        );
        let ids = inside.encode_text(text).unwrap();
        assert_eq!(inside.decode(&ids), text);
    }
    assert_eq!(inside.specials(), tok.specials());
    let engine = load(
        &ModelSpec {
            model: path.display().to_string(),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(engine.config().n_layer, cfg.n_layer);
    assert_eq!(engine.config().multi_query, cfg.multi_query);
    let ids = tok.encode_text("def f(x):\n    return x * 2\n").unwrap();
    let from_gguf = engine
        .run_blocking({
            let ids = ids.clone();
            move |g| {
                g.model
                    .forward_cached(&ids, &mut KvCache::new(), Logits::All, None)
                    .unwrap()
            }
        })
        .unwrap();
    model
        .quantize(candle_core::quantized::GgmlDType::Q8_0)
        .unwrap();
    let from_st = model
        .forward_cached(&ids, &mut KvCache::new(), Logits::All, None)
        .unwrap();
    let scale = max_abs(&from_st);
    let diff = max_abs_diff(&from_gguf, &from_st);
    // Two quantizations of one model (the GGUF's embeddings too), each ~4 to 7% of the scale
    // from the f32 logits on this tiny random model; their errors are independent since the
    // activations' scales are f32 (candle's kernels rounded both models' the same way).
    assert!(diff < 0.08 * scale, "gguf drifted: {diff} vs scale {scale}");
    let argmax_all = |t: &Tensor| t.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    let agree = argmax_all(&from_gguf)
        .iter()
        .zip(argmax_all(&from_st))
        .filter(|(a, b)| **a == *b)
        .count();
    assert!(
        agree * 5 >= ids.len() * 4,
        "greedy agreement {agree}/{}",
        ids.len()
    );
    // Not a GGUF file: a clear error.
    std::fs::write(&path, b"not gguf").unwrap();
    let e = load(
        &ModelSpec {
            model: path.display().to_string(),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("GGUF") && e.contains("tiny.gguf"), "{e}");
}
