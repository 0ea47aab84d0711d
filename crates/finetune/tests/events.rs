//! `finetune --events` end to end (hermetic: the checkpoint and the repository are made in
//! code): an event log written by `copilot-events`' own writer for a small repository, read
//! back by the fine-tuning job, which trains on the completion the user kept in a training
//! file and on nothing else of the log: not the one kept in a held-out file, not the one
//! accepted and then deleted, not the corrupt line.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use copilot_engine::{load, testkit, DTypeSpec, DeviceSpec, ModelSpec};
use copilot_events::{
    paths, Accepted, Context, Event, How, Log, Retained, Retention, Shown, Trigger, What,
};
use copilot_finetune::data::{self, DataOptions};
use copilot_finetune::events::EventOptions;
use copilot_finetune::job::{self, JobOptions, JobReport};
use copilot_finetune::{ExampleOptions, TrainOptions};

/// Six small Python files, each its own (no two alike, so none is dropped as a duplicate).
fn write_repo(repo: &Path) {
    for i in 0..6 {
        let dir = repo.join("pkg");
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!(
            "def area_{i}(width, height):\n    return width * height  # edited after the accept\n\n\
             def shift_{i}(x):\n    return x + {i}\n\n\
             class Box{i}:\n    def __init__(self, v):\n        self.v = v\n"
        );
        std::fs::write(dir.join(format!("mod{i}.py")), text).unwrap();
    }
}

/// The lines of one suggestion's story: shown, accepted whole (with its context), and the
/// retention checks at 30 s and 2 min.
fn story(
    id: &str,
    path: &str,
    prefix: &str,
    suggestion: &str,
    suffix: &str,
    at_120s: Retained,
) -> Vec<Event> {
    let retention = |after_s, state| {
        Event::now(
            id,
            What::Retention(Retention {
                after_s,
                similarity: if state == Retained::Kept { 1.0 } else { 0.0 },
                state,
            }),
        )
    };
    vec![
        Event::now(
            id,
            What::Shown(Shown {
                path: path.into(),
                line: prefix.lines().count() as u32,
                column: 4,
                model: "tiny".into(),
                adapter: None,
                latency_ms: 12.0,
                trigger: Trigger::Automatic,
                suggestion: suggestion.into(),
            }),
        ),
        Event::now(
            id,
            What::Accepted(Accepted {
                how: How::Command,
                accepted_chars: suggestion.chars().count(),
                complete: true,
                context: Some(Context {
                    prefix: prefix.into(),
                    suffix: suffix.into(),
                }),
            }),
        ),
        retention(30, Retained::Kept),
        retention(120, at_120s),
    ]
}

fn options(repo: &Path, model: &Path, out: &Path, events: Option<EventOptions>) -> JobOptions {
    JobOptions {
        repo: repo.to_path_buf(),
        out: out.to_path_buf(),
        model: ModelSpec {
            model: model.display().to_string(),
            device: DeviceSpec::Cpu,
            dtype: DTypeSpec::F32,
            ..Default::default()
        },
        data: DataOptions::default(),
        examples: ExampleOptions {
            seq_len: 64,
            ..Default::default()
        },
        train: TrainOptions {
            batch_size: 2,
            grad_accum: 1,
            epochs: 1,
            max_steps: Some(2),
            save_every: 0,
            ..Default::default()
        },
        eval_sequences: 0,
        events,
    }
}

fn run(o: &JobOptions) -> JobReport {
    job::run(o, &mut |_| true).unwrap()
}

#[test]
fn finetune_with_events_trains_on_the_kept_completions_of_training_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    write_repo(&repo);
    let model = tmp.path().join("tiny");
    testkit::write_tiny_checkpoint(&model, true, 17).unwrap();
    let data_dir = tmp.path().join("data");

    // The split the job will make (the same options and seed), to know which file is held out.
    let corpus = data::prepare(&repo, &DataOptions::default()).unwrap();
    assert_eq!(corpus.heldout.len(), 1, "one file of six is held out");
    let heldout = corpus.heldout[0].rel.clone();
    let train: Vec<&str> = corpus.train.iter().map(|f| f.rel.as_str()).collect();
    let (kept_file, deleted_file) = (train[0], train[1]);
    let digit = |rel: &str| {
        rel.trim_start_matches("pkg/mod")
            .trim_end_matches(".py")
            .to_string()
    };

    // The kept completion's recorded window is an older copy of its file (the user edited the
    // line since), so it is not a duplicate of the file's own examples.
    let k = digit(kept_file);
    let kept_middle = "return width * height";
    let kept = story(
        "kept-train",
        kept_file,
        &format!("def area_{k}(width, height):\n    "),
        kept_middle,
        &format!("\n\ndef shift_{k}(x):\n"),
        Retained::Kept,
    );
    let h = digit(&heldout);
    let heldout_middle = "return held_out_secret_value(x) - 12345";
    let in_heldout = story(
        "kept-heldout",
        &heldout,
        &format!("def shift_{h}(x):\n    "),
        heldout_middle,
        "\n",
        Retained::Kept,
    );
    let d = digit(deleted_file);
    let deleted_middle = "print('debugging output', x, x * 2)";
    let deleted = story(
        "deleted",
        deleted_file,
        &format!("def shift_{d}(x):\n    "),
        deleted_middle,
        "\n",
        Retained::Deleted,
    );

    let log = Log::new(Some(data_dir.clone()), |m| panic!("{m}"));
    for e in kept.into_iter().chain(in_heldout) {
        log.write(&repo, e);
    }
    assert!(log.flush(Duration::from_secs(10)));
    // A half-written line (a full disk) in the middle of the log, then more events.
    let file = paths::current_file(&data_dir, &paths::canonical_root(&repo));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(b"{\"v\":1,\"t\":17000,\"id\":\"cut\",\"event\":\"sho\n")
        .unwrap();
    drop(f);
    for e in deleted {
        log.write(&repo, e);
    }
    assert!(log.flush(Duration::from_secs(10)));
    assert!(!log.is_failed());
    drop(log);

    let events = EventOptions {
        data_dir: data_dir.clone(),
        weight: 1.0,
    };
    let with = run(&options(
        &repo,
        &model,
        &tmp.path().join("with"),
        Some(events),
    ));
    let without = run(&options(&repo, &model, &tmp.path().join("without"), None));

    let r = with.events.as_ref().expect("an event report with --events");
    assert_eq!(r.suggestions, 3, "{r:?}");
    assert_eq!(r.corrupt_lines, 1, "{r:?}");
    // Kept at the last check: the training file's and the held-out file's, not the deleted.
    assert_eq!(r.kept, 2, "{r:?}");
    assert_eq!(r.held_out, 1, "{r:?}");
    assert_eq!((r.used, r.examples), (1, 1), "{r:?}");
    assert_eq!((r.filtered, r.duplicates, r.unusable), (0, 0, 0), "{r:?}");
    assert!(without.events.is_none());

    // The job split the repository as predicted and says so in its lists.
    let listed = data::read_list(&tmp.path().join("with").join(data::HELDOUT_FILE)).unwrap();
    assert_eq!(listed, vec![heldout.clone()]);

    // Training ran on the event example: the same files' examples, and on top exactly the
    // kept middle and its end-of-text token as learned targets. Had the held-out or the
    // deleted completion been packed, their middles would be learned too.
    let tok = load::load_tokenizer(&model.join("tokenizer.json")).unwrap();
    let middle_tokens = |m: &str| tok.encode_text(m).unwrap().len();
    assert_ne!(middle_tokens(kept_middle), middle_tokens(heldout_middle));
    assert_ne!(middle_tokens(kept_middle), middle_tokens(deleted_middle));
    assert_eq!(with.examples, without.examples, "the files' examples");
    assert_eq!(
        with.target_tokens_per_epoch - without.target_tokens_per_epoch,
        middle_tokens(kept_middle) + 1,
        "learned tokens with and without events"
    );
    // (The sequence count may stay the same: one short example can fit in the padding of the
    // last sequence; the learned tokens are the count that says what was trained on.)
    assert_eq!(with.summary.steps, 2);
    assert!(with.summary.losses.iter().all(|l| l.is_finite()));
}
