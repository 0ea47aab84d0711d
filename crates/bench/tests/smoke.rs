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
