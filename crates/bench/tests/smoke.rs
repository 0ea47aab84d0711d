//! The benchmark runs end to end on the tiny random checkpoint (numbers are not asserted:
//! only that every scenario measured something, so the benchmark cannot silently rot).

#[test]
fn every_scenario_measures_something() {
    let dir = tempfile::tempdir().unwrap();
    copilot_engine::testkit::write_tiny_checkpoint(dir.path(), true, 1).unwrap();
    let report = copilot_bench::run(&copilot_bench::BenchOptions {
        model: dir.path().display().to_string(),
        keystroke_ms: 0,
        raw_prompt_tokens: 100,
        raw_decode_tokens: 4,
        runs: 2,
        ..Default::default()
    })
    .unwrap();
    let raw = report.raw.as_ref().unwrap();
    assert_eq!(raw.prompt_tokens, 100);
    assert!(raw.prefill_ms_p50 > 0.0 && raw.decode_tokens_per_s > 0.0);
    let typing = report.typing.as_ref().unwrap();
    assert!(typing.samples > 10, "{typing:?}");
    assert!(typing.model_calls + typing.cache_hits > 0);
    assert!(
        typing.reuse_ratio > 0.0,
        "typing at the cursor reuses the KV cache: {typing:?}"
    );
    let cold = report.cold.as_ref().unwrap();
    assert_eq!(cold.samples, 2);
    assert_eq!(
        cold.cache_hits, 0,
        "cold files must not hit the completion cache"
    );
    let events = report.events.as_ref().unwrap();
    assert_eq!(events.samples, 800);
    assert!(events.offer_us_p95 > 0.0 && events.accept_us_p95 > 0.0);
    // Each answer with events on wrote its `shown` line, each accept its own: 800 + 200.
    assert_eq!(events.lines, 1000, "{events:?}");
    assert!(report.table().contains("keystroke-to-answer"));
    assert!(report.table().contains("per accept"));
}

/// The remote scenario against a scripted llama-server: the server's own timings are what
/// it reports, and our overhead is the wall time beyond them.
#[test]
fn the_remote_scenario_measures_overhead_over_the_servers_timings() {
    use copilot_remote::fake::{FakeServer, Reply};
    use serde_json::json;
    let server = FakeServer::start(|req| match req.path.as_str() {
        "/props" => {
            Reply::Json(json!({"default_generation_settings": {"n_ctx": 4096}}).to_string())
        }
        "/tokenize" => Reply::Json(json!({"tokens": [1, 2, 3, 4]}).to_string()),
        _ => Reply::sse(
            &[
                json!({"content": "x", "stop": false}).to_string(),
                json!({"content": "", "stop": true, "stop_type": "limit",
                       "timings": {"prompt_n": 3, "cache_n": 90, "prompt_ms": 0.5,
                                   "predicted_n": 1, "predicted_ms": 0.25}})
                .to_string(),
            ],
            std::time::Duration::ZERO,
        ),
    });
    let (spec, _) = copilot_remote::RemoteArgs {
        engine: Some("llama.cpp"),
        endpoint: Some(&server.url()),
        ..Default::default()
    }
    .resolve();
    let dir = tempfile::tempdir().unwrap();
    copilot_engine::testkit::write_tiny_checkpoint(dir.path(), true, 1).unwrap();
    let report = copilot_bench::run(&copilot_bench::BenchOptions {
        model: dir.path().display().to_string(),
        runs: 2,
        scenarios: vec!["remote".into()],
        remote: spec,
        compare_embedded: true,
        ..Default::default()
    })
    .unwrap();
    let r = report.remote.as_ref().unwrap();
    assert_eq!(r.samples, 20, "10 cursors, 2 runs each");
    assert_eq!(r.server_p50_ms, 0.75);
    // The server's time is the same for every request, so the overhead is the wall time
    // shifted by it (a fast loopback answer may take under 0.75 ms: no sign asserted).
    assert!(r.wall_p50_ms > 0.0, "{r:?}");
    assert!(
        (r.wall_p50_ms - r.server_p50_ms - r.overhead_p50_ms).abs() < 1e-9,
        "{r:?}"
    );
    assert_eq!(r.mean_prompt_tokens, 93.0);
    // Each measured request reached the server (one warm-up per cursor besides).
    assert_eq!(server.seen_at("/infill").len(), 30);
    assert!(report
        .table()
        .contains("overhead over the server's own timings"));
    // The same cursors through the embedded engine, for comparison.
    assert!(r.embedded_wall_p50_ms.is_some_and(|ms| ms > 0.0), "{r:?}");
    assert!(report.table().contains("embedded (same cursors)"));
}
