//! Replays the committed corpus of the `fim` fuzz target (`fuzz/corpus/fim/`) through the
//! entry point the target calls, so stable `cargo test` keeps every input the fuzzer kept.

use std::path::Path;

#[test]
fn fim_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/fim");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| copilot_fim::fuzzing::fim(&data));
        assert!(r.is_ok(), "{} failed", path.display());
        n += 1;
    }
    assert!(n > 0, "empty corpus");
}
