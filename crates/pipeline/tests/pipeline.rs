//! The pipeline end to end: prompt ids for a cursor, generation, post-processing.

use std::path::Path;

use copilot_engine::testkit;
use copilot_pipeline::{
    CancelToken, Completer, CompletionOptions, CompletionRequest, Embedded, FimChoice, ModelSpec,
};

fn load(dir: &Path) -> Completer {
    Completer::embedded(embedded(dir))
}

fn embedded(dir: &Path) -> Embedded {
    Embedded::load(
        &ModelSpec {
            model: dir.display().to_string(),
            ..Default::default()
        },
        &|_| {},
    )
    .unwrap()
}

/// The ids the embedded engine runs for a request.
struct Ids {
    e: Embedded,
    c: Completer,
}

impl Ids {
    fn new(dir: &Path) -> Self {
        let e = embedded(dir);
        Self {
            c: Completer::embedded(e.clone()),
            e,
        }
    }

    fn of(&self, req: &CompletionRequest) -> Vec<u32> {
        let p = self.c.prepare(req);
        self.e.encode(&p.prompt, p.max_new).unwrap()
    }
}

fn request(text: &str, cursor: usize, fim: FimChoice) -> CompletionRequest {
    CompletionRequest {
        text: text.to_string(),
        cursor,
        path: None,
        adapter: None,
        ids: None,
        snippets: Vec::new(),
        options: CompletionOptions {
            temperature: 0.0,
            max_tokens: 12,
            fim,
            postprocess: false,
            ..Default::default()
        },
    }
}

#[test]
fn layouts_splice_special_ids_around_separately_encoded_text() {
    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_checkpoint(dir.path(), true, 5).unwrap();
    let c = Ids::new(dir.path());
    let tok = c.e.tokenizer();
    struct Specials {
        eos: u32,
        fim_prefix: u32,
        fim_suffix: u32,
        fim_middle: u32,
    }
    let id = |s: &str| tok.token_id(s).unwrap();
    let s = Specials {
        eos: tok.specials().eos,
        fim_prefix: id("<fim_prefix>"),
        fim_suffix: id("<fim_suffix>"),
        fim_middle: id("<fim_middle>"),
    };
    let text = "x = '<fim_middle>'\ny = <|endoftext|>\n";
    let cursor = text.find('\n').unwrap() + 1;
    let enc = |t: &str| tok.encode_text(t).unwrap();
    let (p, x) = text.split_at(cursor);

    let psm = c.of(&request(text, cursor, FimChoice::Psm));
    let mut want = vec![s.fim_prefix];
    want.extend(enc(p));
    want.push(s.fim_suffix);
    want.extend(enc(x));
    want.push(s.fim_middle);
    assert_eq!(psm, want);

    let spm = c.of(&request(text, cursor, FimChoice::Spm));
    let mut want = vec![s.fim_prefix, s.fim_suffix];
    want.extend(enc(x));
    want.push(s.fim_middle);
    want.extend(enc(p));
    assert_eq!(spm, want);

    let l2r = c.of(&request(text, cursor, FimChoice::Off));
    assert_eq!(l2r, enc(p));
    // User text never turns into control tokens.
    // (The text holds `<fim_middle>` and `<|endoftext|>`; the only control ids are the
    // layout's own, each once.)
    for ids in [&psm[1..psm.len() - 1], &l2r[..]] {
        assert!(!ids.contains(&s.eos), "{ids:?}");
        assert!(!ids.contains(&s.fim_middle), "{ids:?}");
        assert!(!ids.contains(&s.fim_prefix), "{ids:?}");
    }
    let count = |id| psm.iter().filter(|&&i| i == id).count();
    assert_eq!(
        (
            count(s.fim_prefix),
            count(s.fim_suffix),
            count(s.fim_middle)
        ),
        (1, 1, 1)
    );
    // Auto: blank suffix means left-to-right.
    let auto = c.of(&request("def f():\n    ", 13, FimChoice::Auto));
    assert!(!auto.contains(&s.fim_prefix));
    // A cursor inside a multi-byte character or past the end does not panic.
    let odd = "é😀";
    c.of(&request(odd, 2, FimChoice::Psm));
    c.of(&request(odd, 999, FimChoice::Psm));
}

#[test]
fn completes_deterministically_and_honours_cancellation() {
    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_checkpoint(dir.path(), true, 5).unwrap();
    let c = load(dir.path());
    let text = "def add(a, b):\n    return \n";
    let a = c
        .complete_blocking(request(text, 26, FimChoice::Psm), CancelToken::new())
        .unwrap();
    let b = c
        .complete_blocking(request(text, 26, FimChoice::Psm), CancelToken::new())
        .unwrap();
    assert_eq!(
        a,
        Completion {
            stats: a.stats.clone(),
            ..b.clone()
        }
    );
    assert_eq!(a.raw, a.text, "postprocess off returns the raw text");
    assert!(
        b.stats.reused_tokens > 0,
        "the second run reuses the KV cache"
    );
    let cancel = CancelToken::new();
    cancel.cancel();
    let err = c
        .complete_blocking(request(text, 26, FimChoice::Psm), cancel)
        .unwrap_err();
    assert!(matches!(err, copilot_pipeline::PipelineError::Cancelled));
}

use copilot_pipeline::Completion;

/// The prompt ids the pipeline builds for the pico model's reference prompts are exactly the
/// ids transformers was given (PSM, SPM and left-to-right layouts).
#[test]
fn pico_prompt_ids_match_the_reference() {
    let Some(shared) = std::env::var_os("COPILOT_LSP_SHARED") else {
        eprintln!("SKIPPED pico_prompt_ids_match_the_reference: COPILOT_LSP_SHARED is not set");
        return;
    };
    let pico = Path::new(&shared).join("models/pico-starcoder");
    let c = Ids::new(&pico);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pico.join("reference.json")).unwrap())
            .unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let (fim, prefix, suffix) =
            if let Some(rest) = prompt.strip_prefix("<fim_prefix><fim_suffix>") {
                let (s, p) = rest.split_once("<fim_middle>").unwrap();
                (FimChoice::Spm, p, s)
            } else if let Some(rest) = prompt.strip_prefix("<fim_prefix>") {
                let (p, rest) = rest.split_once("<fim_suffix>").unwrap();
                (
                    FimChoice::Psm,
                    p,
                    rest.strip_suffix("<fim_middle>").unwrap(),
                )
            } else {
                (FimChoice::Off, prompt, "")
            };
        let text = format!("{prefix}{suffix}");
        let p = c.of(&request(&text, prefix.len(), fim));
        let want: Vec<u32> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(p, want, "{prompt:?}");
    }
}

#[test]
fn typing_through_a_suggestion_is_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_checkpoint(dir.path(), true, 5).unwrap();
    let c = load(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let text = "def add(a, b):\n    return \n";
    let mut req = request(text, 26, FimChoice::Psm);
    req.options.cache = true;
    let first = rt
        .block_on(c.complete(req.clone(), CancelToken::new()))
        .unwrap();
    assert!(!first.stats.cache_hit);
    let shown: Vec<char> = first.text.chars().collect();
    assert!(
        shown.len() >= 3,
        "tiny model output too short: {:?}",
        first.text
    );
    // The user types the first two characters of the ghost text.
    let typed: String = shown[..2].iter().collect();
    let mut next = req.clone();
    next.text = format!("{}{typed}{}", &text[..26], &text[26..]);
    next.cursor = 26 + typed.len();
    let again = rt.block_on(c.complete(next, CancelToken::new())).unwrap();
    assert!(again.stats.cache_hit);
    assert_eq!(again.text, shown[2..].iter().collect::<String>());
    // With the cache off the model runs again.
    req.options.cache = false;
    let fresh = rt.block_on(c.complete(req, CancelToken::new())).unwrap();
    assert!(!fresh.stats.cache_hit);
    assert_eq!(fresh.text, first.text);
}

#[test]
fn streamed_pieces_add_up_to_the_answer() {
    use std::sync::{Arc, Mutex};

    use copilot_pipeline::{Extras, TextSink};

    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_checkpoint(dir.path(), true, 5).unwrap();
    let c = load(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let complete = |req: CompletionRequest, stop: Vec<String>| {
        let pieces = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = pieces.clone();
        let sink = TextSink::new(move |t: &str| log.lock().unwrap().push(t.to_string()));
        let streamed = rt
            .block_on(c.complete_with(
                req.clone(),
                CancelToken::new(),
                Extras {
                    stop: stop.clone(),
                    on_text: Some(sink),
                },
            ))
            .unwrap();
        let plain = rt
            .block_on(c.complete_with(
                req,
                CancelToken::new(),
                Extras {
                    stop,
                    on_text: None,
                },
            ))
            .unwrap();
        let pieces = pieces.lock().unwrap().clone();
        (streamed, plain, pieces)
    };
    let text = "def add(a, b):\n    return \n";
    let mut raw_streamed = 0;
    for fim in [FimChoice::Psm, FimChoice::Spm, FimChoice::Off] {
        for postprocess in [false, true] {
            let mut req = request(text, 26, fim);
            req.options.postprocess = postprocess;
            req.options.max_tokens = 24;
            req.options.cache = false;
            let (out, plain, pieces) = complete(req.clone(), Vec::new());
            assert_eq!(pieces.concat(), out.text, "postprocess={postprocess}");
            assert_eq!(out.text, plain.text);
            let chars: Vec<char> = out.text.chars().collect();
            // (The random model's tokens are sometimes bytes that decode to nothing, so a
            // short answer may come in one piece.)
            if !postprocess && chars.len() >= 4 {
                // The raw text streams as it comes, not in one piece at the end.
                assert!(pieces.len() > 1, "{fim:?}: {pieces:?} {out:?}");
                raw_streamed += 1;
                // A stop string cuts the raw text before it, in the stream too.
                let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
                let (cut, plain, pieces) = complete(req, vec![stop.clone()]);
                assert_eq!(cut.text, out.text[..out.text.find(&stop).unwrap()]);
                assert_eq!(pieces.concat(), cut.text);
                assert_eq!(plain.text, cut.text);
            }
        }
    }
    assert!(
        raw_streamed > 0,
        "no layout gave a raw answer long enough to stream"
    );
}

/// A prompt given as ids runs exactly those ids: the ids the pipeline builds for a cursor,
/// given back, give that cursor's raw answer; an id outside the vocabulary is an error,
/// never an index past the embedding.
#[test]
fn a_prompt_of_ids_runs_as_given() {
    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_checkpoint(dir.path(), true, 5).unwrap();
    let ids = Ids::new(dir.path());
    let text = "def add(a, b):\n    return \n";
    let built = request(text, 26, FimChoice::Psm);
    let want = ids
        .c
        .complete_blocking(built.clone(), CancelToken::new())
        .unwrap();
    let given = CompletionRequest {
        text: String::new(),
        cursor: 0,
        ids: Some(ids.of(&built)),
        ..built.clone()
    };
    let got = ids
        .c
        .complete_blocking(given.clone(), CancelToken::new())
        .unwrap();
    assert_eq!(got.raw, want.raw);
    assert_eq!(got.stats.prompt_tokens, want.stats.prompt_tokens);
    let vocab = copilot_pipeline::LanguageModel::vocab_size(&ids.e).unwrap();
    let bad = CompletionRequest {
        ids: Some(vec![1, vocab as u32]),
        ..given
    };
    let err = ids
        .c
        .complete_blocking(bad, CancelToken::new())
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}
