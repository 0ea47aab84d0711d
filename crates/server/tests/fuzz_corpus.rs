//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same entry points
//! the libFuzzer targets call, so stable `cargo test` keeps every input the fuzzer kept.

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| entry(&data));
        assert!(r.is_ok(), "{target}: {} failed", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus");
    eprintln!("{target}: {n} inputs replayed");
}

#[test]
fn frames_corpus() {
    replay("frames", copilot_server::fuzzing::frames);
}

#[test]
fn documents_corpus() {
    replay("documents", copilot_server::fuzzing::documents);
}

#[test]
fn settings_corpus() {
    replay("settings", copilot_server::fuzzing::settings);
}
