//! Replays the committed corpora of the `gguf` and `safetensors` fuzz targets
//! (`fuzz/corpus/<target>/`) through the entry points the targets call.

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
}

#[test]
fn safetensors_corpus() {
    replay("safetensors", copilot_engine::fuzzing::safetensors);
}

#[test]
fn gguf_corpus() {
    replay("gguf", copilot_engine::fuzzing::gguf);
}
