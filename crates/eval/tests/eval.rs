//! The evaluation loop end to end on the tiny random model: base and an adapter side by
//! side through the real pipeline (hermetic; the numbers mean nothing, the plumbing does).

use candle_core::Device;
use copilot_engine::{testkit, ModelSpec};
use copilot_eval::{evaluate, sample_tasks, table, EvalOptions, Report};
use copilot_finetune::lora::{Target, TrainableLora};
use copilot_finetune::peft::{Adapter, AdapterConfig};
use copilot_finetune::SourceFile;
use copilot_pipeline::Completer;

#[test]
fn base_and_adapter_are_scored_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("tiny");
    testkit::write_tiny_checkpoint(&ckpt, true, 1).unwrap();
    let spec = ModelSpec {
        model: ckpt.display().to_string(),
        ..Default::default()
    };
    let completer = Completer::load(&spec, &|_| {}).unwrap();
    let cfg = completer.engine().unwrap().config().clone();

    // An adapter with non-zero B, saved in PEFT format and loaded as the server would.
    let target = Target::default();
    let lora = TrainableLora::new(&cfg, target.clone(), 3, &Device::Cpu).unwrap();
    for p in &lora.pairs {
        p.b.set(&(p.b.ones_like().unwrap() * 0.05).unwrap())
            .unwrap();
    }
    let adapter_dir = dir.path().join("adapter");
    Adapter::from_trainable(&lora, AdapterConfig::for_training(&target, 0.0, None))
        .unwrap()
        .save(&adapter_dir)
        .unwrap();
    let loaded =
        copilot_finetune::load_adapter_for_engine(completer.engine().unwrap(), &adapter_dir)
            .unwrap();
    completer
        .engine()
        .unwrap()
        .add_adapter("repo".into(), loaded)
        .unwrap();

    let files = vec![SourceFile {
        rel: "pkg/a.py".into(),
        text: "import os\n\n\ndef f(x):\n    y = x + 1\n    return y\n".into(),
    }];
    let mut o = EvalOptions {
        lines_per_file: 3,
        ..Default::default()
    };
    o.completion.max_tokens = 4;
    let tasks = sample_tasks(&files, &o);
    assert_eq!(tasks.len(), 3);
    let rows = evaluate(
        &completer,
        &tasks,
        &[None, Some("repo".into())],
        &o,
        true,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].name, "base");
    assert_eq!(rows[1].name, "repo");
    for r in &rows {
        assert_eq!(r.samples, 3);
        assert_eq!(r.outcomes.len(), 3);
        assert!(r.mean_latency_ms > 0.0);
        assert!((0.0..=1.0).contains(&r.exact_match));
        assert!((0.0..=1.0).contains(&r.edit_similarity));
    }
    // The adapter row is compared with the base on the same samples.
    assert!(rows[0].vs_base.is_none());
    let vs = rows[1].vs_base.as_ref().unwrap();
    let change: f64 = rows[1]
        .outcomes
        .iter()
        .zip(&rows[0].outcomes)
        .map(|(a, b)| a.edit_distance as f64 - b.edit_distance as f64)
        .sum::<f64>()
        / 3.0;
    assert!((vs.edit_distance_change - change).abs() < 1e-9);
    assert!(vs.better + vs.worse <= 3);
    let report = Report {
        context: "none".into(),
        recall: None,
        repo: "pkg".into(),
        model: "tiny".into(),
        cursor: Default::default(),
        files: 1,
        samples: 3,
        rows,
    };
    let t = table(&report);
    assert!(
        t.contains("base") && t.contains("repo") && t.contains("exact match"),
        "{t}"
    );
    // Every number sits under its heading: the numeric columns of the header end where the
    // rows' do (the variant name is left-aligned).
    let lines: Vec<&str> = t.lines().skip(1).collect();
    let ends = |line: &str| {
        let mut ends = Vec::new();
        let b = line.as_bytes();
        for i in 1..b.len() {
            if b[i] == b' ' && b[i - 1] != b' ' && b.get(i + 1) == Some(&b' ') {
                ends.push(i);
            }
        }
        ends
    };
    let header = ends(lines[0]);
    let base_row = ends(lines[1]);
    assert_eq!(&header[1..5], &base_row[1..5], "{t}");
    assert!(lines[0].contains("edit similarity"), "{t}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["rows"][1]["samples"], 3);
    assert!(json["rows"][1]["vs_base"]["ci95"].is_array());
    assert_eq!(json["cursor"], "line-start");
}
