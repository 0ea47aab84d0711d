"""Write a hub-format GPTBigCode checkpoint as a llama.cpp `starcoder` GGUF, tokenizer
included, so llama.cpp can load the very weights `copilot-lsp` runs (crates/bench/reference/README.md).
Uses the `gguf` package from PyPI (llama.cpp's own gguf-py).

    python crates/bench/reference/to_gguf.py /tmp/tsp /tmp/tsp-q8_0.gguf --type q8_0
"""
import argparse, json, os

import numpy as np
import gguf
from safetensors.numpy import load_file

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("out")
ap.add_argument("--type", choices=["f32", "q8_0"], default="f32")
a = ap.parse_args()

cfg = json.load(open(os.path.join(a.model, "config.json")))
tok = json.load(open(os.path.join(a.model, "tokenizer.json")))
st = load_file(os.path.join(a.model, "model.safetensors"))
n_vocab = cfg["vocab_size"]

w = gguf.GGUFWriter(a.out, "starcoder")
w.add_context_length(cfg["n_positions"])
w.add_embedding_length(cfg["n_embd"])
w.add_feed_forward_length(cfg.get("n_inner") or 4 * cfg["n_embd"])
w.add_block_count(cfg["n_layer"])
w.add_head_count(cfg["n_head"])
w.add_head_count_kv(1 if cfg.get("multi_query", True) else cfg["n_head"])
w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if a.type == "q8_0" else gguf.LlamaFileType.ALL_F32)

# Byte-level BPE vocabulary, padded to the model's vocabulary size as llama.cpp's converter does.
vocab = {**tok["model"]["vocab"], **{t["content"]: t["id"] for t in tok["added_tokens"]}}
by_id = {i: s for s, i in vocab.items()}
special = {t["id"] for t in tok["added_tokens"]}
tokens, types = [], []
for i in range(n_vocab):
    if i in by_id:
        tokens.append(by_id[i])
        types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
    else:
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre("starcoder")
w.add_token_list(tokens)
w.add_token_types(types)
w.add_token_merges(merges)
eos = vocab["<|endoftext|>"]
w.add_bos_token_id(eos)
w.add_eos_token_id(eos)

names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
         "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
fixed = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
         "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias",
         "lm_head.weight": "output.weight"}
for hub, t in sorted(st.items()):
    if hub in fixed:
        name = fixed[hub]
    elif hub.startswith("transformer.h."):
        layer, rest = hub[len("transformer.h."):].split(".", 1)
        module, kind = rest.rsplit(".", 1)
        if module not in names:
            continue
        name = f"blk.{layer}.{names[module]}.{kind}"
    else:
        continue
    t = t.astype(np.float32)
    if a.type == "q8_0" and t.ndim == 2 and t.shape[1] % 32 == 0 and name != "position_embd.weight":
        w.add_tensor(name, gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0),
                     raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        w.add_tensor(name, t)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f"wrote {a.out}")
