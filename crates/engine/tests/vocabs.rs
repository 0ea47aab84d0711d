//! llama.cpp's own vocabulary files (`models/ggml-vocab-*.gguf` in its sources, with the
//! token ids Hugging Face's tokenizers give for its test strings, `.inp` / `.out`): the
//! tokenizer we rebuild from a GGUF's metadata must give the same ids, on the real Qwen2,
//! DeepSeek-Coder and StarCoder vocabularies. The files are not ours to commit: the test
//! reads `COPILOT_LSP_LLAMA_VOCABS` (that `models` folder) and says SKIPPED without it.

use copilot_engine::load;

fn cases(dir: &std::path::Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    texts
        .into_iter()
        .zip(out.lines())
        .map(|(t, ids)| {
            let ids = ids.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (t.to_string(), ids)
        })
        .collect()
}

#[test]
fn gguf_vocabularies_tokenize_as_hugging_face_does() {
    let Some(dir) = std::env::var_os("COPILOT_LSP_LLAMA_VOCABS").map(std::path::PathBuf::from)
    else {
        eprintln!(
            "SKIPPED gguf_vocabularies_tokenize_as_hugging_face_does: COPILOT_LSP_LLAMA_VOCABS \
             is not set (llama.cpp's models/ folder)"
        );
        return;
    };
    // The files' control tokens: `ggml-vocab-qwen2` is Qwen1.5's (no FIM tokens),
    // `ggml-vocab-starcoder` StarCoder2's; DeepSeek-Coder's FIM tokens are "user defined"
    // there, control tokens for us all the same.
    for (name, control) in [
        ("qwen2", "<|im_start|>"),
        ("deepseek-coder", "<｜fim▁begin｜>"),
        ("starcoder", "<file_sep>"),
    ] {
        let path = dir.join(format!("ggml-vocab-{name}.gguf"));
        let tok = load::load_tokenizer(&path).unwrap();
        let all = cases(&dir, name);
        assert!(all.len() > 20, "{name}");
        for (text, want) in &all {
            assert_eq!(&tok.encode_text(text).unwrap(), want, "{name}: {text:?}");
            assert_eq!(tok.decode(want), *text, "{name}: decode");
        }
        let id = tok.token_id(control).unwrap();
        assert!(tok.is_special(id), "{name}: {control} is a control token");
        // As text it stays text.
        let ids = tok.encode_text(&format!("x{control}y")).unwrap();
        assert!(!ids.contains(&id), "{name}: {ids:?}");
        eprintln!(
            "{name}: {} strings tokenize as Hugging Face does",
            all.len()
        );
    }
}
