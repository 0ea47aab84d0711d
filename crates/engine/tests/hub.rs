//! Loading by hub repo id from a local hub cache in offline mode: the cache layout
//! `hf-hub` (and Python's huggingface_hub) use, built by the test. Own test binary because it
//! sets `HF_HOME` for the process.

use copilot_engine::{load, testkit, LoadStage, ModelSpec};

#[test]
fn loads_a_repo_id_from_the_hub_cache_offline() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--acme--tiny-coder");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    testkit::write_tiny_checkpoint(&snapshot, true, 3).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    std::env::set_var("HF_HOME", home.path());

    let mut fetched = Vec::new();
    let engine = load(
        &ModelSpec {
            model: "acme/tiny-coder".into(),
            offline: true,
            ..Default::default()
        },
        &mut |s| {
            if let LoadStage::Fetching(f) = s {
                fetched.push(f.to_string())
            }
        },
    )
    .unwrap();
    assert_eq!(engine.config().n_layer, 2);
    assert!(fetched.contains(&"config.json".to_string()), "{fetched:?}");
    assert!(fetched.contains(&"model.safetensors".to_string()));

    // A revision that is not cached, offline: a clear error naming the file and the cache.
    let err = load(
        &ModelSpec {
            model: "acme/tiny-coder".into(),
            revision: Some("v2".into()),
            offline: true,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not in the hub cache") && err.contains("config.json"),
        "{err}"
    );

    // An unknown repo offline, through HF_HUB_OFFLINE.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let err = load(
        &ModelSpec {
            model: "acme/missing".into(),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("offline"), "{err}");
}
