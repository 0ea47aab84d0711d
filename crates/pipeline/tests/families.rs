//! Prompt ids for a cursor in each family's format, found from the tokenizer's own special
//! tokens: the ids equal the family's documented template, context snippets go through the
//! repository tokens, user text holding the family's special strings stays text, and a
//! tokenizer without FIM tokens completes left to right.

use copilot_engine::{testkit, Arch, Config};
use copilot_fim::Snippet;
use copilot_pipeline::{
    CancelToken, Completer, CompletionOptions, CompletionRequest, Embedded, FimChoice, ModelSpec,
    Prepared,
};

/// A completer over the embedded engine, and the ids that engine runs for a request.
struct Model {
    e: Embedded,
    c: Completer,
}

impl Model {
    fn load(dir: &std::path::Path) -> Self {
        let e = Embedded::load(
            &ModelSpec {
                model: dir.display().to_string(),
                ..Default::default()
            },
            &|_| {},
        )
        .unwrap();
        Self {
            c: Completer::embedded(e.clone()),
            e,
        }
    }

    fn prepare(&self, req: &CompletionRequest) -> (Prepared, Vec<u32>) {
        let p = self.c.prepare(req);
        let ids = self.e.encode(&p.prompt, p.max_new).unwrap();
        (p, ids)
    }
}

fn completer(arch: Arch) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    testkit::write_tiny_rope_checkpoint(dir.path(), arch, 3).unwrap();
    let m = Model::load(dir.path());
    (dir, m)
}

fn request(fixture: &str, fim: FimChoice) -> CompletionRequest {
    let cursor = fixture.find("$0").unwrap();
    CompletionRequest {
        text: fixture.replacen("$0", "", 1),
        cursor,
        path: None,
        adapter: None,
        ids: None,
        snippets: Vec::new(),
        options: CompletionOptions {
            temperature: 0.0,
            max_tokens: 8,
            fim,
            postprocess: false,
            ..Default::default()
        },
    }
}

const CODE: &str =
    "s = '<|fim_middle|><fim_prefix><｜fim▁hole｜>'\ndef f(x):\n    $0\n    return y\n";

#[test]
fn each_family_gets_its_documented_template_ids() {
    let (p, x) = CODE.split_once("$0").unwrap();
    for (arch, name) in [
        (Arch::Qwen2, "qwen2.5-coder"),
        (Arch::Llama, "deepseek-coder"),
        (Arch::Starcoder2, "starcoder2"),
    ] {
        let (_d, c) = completer(arch);
        assert_eq!(c.c.template().map(|t| t.name), Some(name));
        let tok = c.e.tokenizer();
        let id = |s: &str| tok.token_id(s).unwrap();
        let enc = |t: &str| tok.encode_text(t).unwrap();
        let (_, psm) = c.prepare(&request(CODE, FimChoice::Psm));
        let (_, spm) = c.prepare(&request(CODE, FimChoice::Spm));
        let (_, auto) = c.prepare(&request(CODE, FimChoice::Auto));
        let (want_psm, want_spm): (Vec<u32>, Vec<u32>) = match arch {
            // <|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>; SPM was not trained: PSM.
            Arch::Qwen2 => {
                let psm = [
                    vec![id("<|fim_prefix|>")],
                    enc(p),
                    vec![id("<|fim_suffix|>")],
                    enc(x),
                    vec![id("<|fim_middle|>")],
                ]
                .concat();
                (psm.clone(), psm)
            }
            // BOS, then <｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>; PSM only.
            Arch::Llama => {
                let psm = [
                    vec![id("<｜begin▁of▁sentence｜>"), id("<｜fim▁begin｜>")],
                    enc(p),
                    vec![id("<｜fim▁hole｜>")],
                    enc(x),
                    vec![id("<｜fim▁end｜>")],
                ]
                .concat();
                (psm.clone(), psm)
            }
            // bigcode's PSM and SPM.
            _ => (
                [
                    vec![id("<fim_prefix>")],
                    enc(p),
                    vec![id("<fim_suffix>")],
                    enc(x),
                    vec![id("<fim_middle>")],
                ]
                .concat(),
                [
                    vec![id("<fim_prefix>"), id("<fim_suffix>")],
                    enc(x),
                    vec![id("<fim_middle>")],
                    enc(p),
                ]
                .concat(),
            ),
        };
        assert_eq!(psm, want_psm, "{name} psm");
        assert_eq!(spm, want_spm, "{name} spm");
        let want_auto = if arch == Arch::Starcoder2 {
            &want_spm
        } else {
            &want_psm
        };
        assert_eq!(&auto, want_auto, "{name} auto");
        // The user's text held three families' FIM strings: none became a control id.
        let controls = want_psm.iter().filter(|&&i| tok.is_special(i)).count();
        assert_eq!(controls, psm.iter().filter(|&&i| tok.is_special(i)).count());
        assert_eq!(controls, 3 + usize::from(arch == Arch::Llama), "{name}");
    }
}

#[test]
fn snippets_go_through_the_repository_tokens_where_the_family_has_them() {
    let (p, x) = CODE.split_once("$0").unwrap();
    let (_d, c) = completer(Arch::Qwen2);
    let tok = c.e.tokenizer();
    let id = |s: &str| tok.token_id(s).unwrap();
    let enc = |t: &str| tok.encode_text(t).unwrap();
    let mut req = request(CODE, FimChoice::Psm);
    req.path = Some("src/app.py".into());
    req.snippets = vec![Snippet {
        path: "src/util.py".into(),
        text: "def u():\n    return 1\n".into(),
    }];
    let (_, got) = c.prepare(&req);
    let want = [
        vec![id("<|file_sep|>")],
        enc("src/util.py\ndef u():\n    return 1\n"),
        vec![id("<|file_sep|>")],
        enc("src/app.py\n"),
        vec![id("<|fim_prefix|>")],
        enc(p),
        vec![id("<|fim_suffix|>")],
        enc(x),
        vec![id("<|fim_middle|>")],
    ]
    .concat();
    assert_eq!(got, want);
}

#[test]
fn a_tokenizer_without_fim_tokens_completes_left_to_right() {
    let dir = tempfile::tempdir().unwrap();
    // A plain byte-level tokenizer: end of text, no FIM tokens.
    let tok = testkit::byte_level_tokenizer_json_with(&["<|endoftext|>"]);
    let mut cfg = Config::tiny_rope_test(Arch::Qwen2, 300);
    cfg.vocab_size = 300;
    testkit::write_random_checkpoint(dir.path(), &cfg, 1, 0.2, Some(tok)).unwrap();
    let m = Model::load(dir.path());
    assert!(m.c.template().is_none());
    let (p, _) = CODE.split_once("$0").unwrap();
    let tok = m.e.tokenizer();
    for fim in [FimChoice::Psm, FimChoice::Spm, FimChoice::Auto] {
        let (prepared, ids) = m.prepare(&request(CODE, fim));
        assert_eq!(ids, tok.encode_text(p).unwrap(), "{fim:?}");
        assert_eq!(prepared.layout, copilot_fim::Layout::LeftToRight);
    }
    // And it completes.
    m.c.complete_blocking(request(CODE, FimChoice::Auto), CancelToken::new())
        .unwrap();
}
