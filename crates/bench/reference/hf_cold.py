"""Cold completion with Hugging Face transformers, for comparison with `copilot-lsp bench
--scenario raw` (BENCHMARKS.md): prefill N prompt tokens from an empty cache, then D greedy
tokens one by one with the KV cache. Same checkpoint folder, same thread count.

    python crates/bench/reference/hf_cold.py /tmp/tsp --prompt-tokens 1892 --decode-tokens 16 --threads 2
"""
import argparse, statistics, time

import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--prompt-tokens", type=int, default=1000)
ap.add_argument("--decode-tokens", type=int, default=32)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--runs", type=int, default=3)
a = ap.parse_args()

torch.set_num_threads(a.threads)
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
g = torch.Generator().manual_seed(0)
vocab = model.config.vocab_size
prefill, decode, total = [], [], []
with torch.inference_mode():
    for run in range(a.runs + 1):  # the first run warms up
        ids = torch.randint(100, vocab, (1, a.prompt_tokens), generator=g)
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t1 = time.perf_counter()
        for _ in range(a.decode_tokens):
            out = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t2 = time.perf_counter()
        if run:
            prefill.append(t1 - t0); decode.append(t2 - t1); total.append(t2 - t0)
m = statistics.median
print(f"transformers {torch.__version__} threads={a.threads} prompt={a.prompt_tokens} decode={a.decode_tokens}")
print(f"prefill {m(prefill)*1e3:.0f} ms ({a.prompt_tokens/m(prefill):.0f} tok/s), "
      f"decode {a.decode_tokens/m(decode):.1f} tok/s, cold total {m(total)*1e3:.0f} ms (median of {a.runs})")
