// Cold completion with llama.cpp, for comparison with `copilot-lsp bench --scenario raw`
// (BENCHMARKS.md): prefill N prompt tokens from an empty KV cache, then D greedy tokens one
// by one, as llama-bench's pp/tg tests do. Not part of the build: compiled by hand against a
// llama.cpp checkout (see crates/bench/reference/README.md).
#include "llama.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char ** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [prompt_tokens] [decode_tokens] [threads] [runs]\n", argv[0]);
        return 2;
    }
    const int n_prompt = argc > 2 ? atoi(argv[2]) : 1000;
    const int n_decode = argc > 3 ? atoi(argv[3]) : 32;
    const int threads  = argc > 4 ? atoi(argv[4]) : 2;
    const int runs     = argc > 5 ? atoi(argv[5]) : 3;

    llama_log_set([](enum ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_prompt + n_decode + 16;
    cp.n_batch = n_prompt;
    cp.n_ubatch = 512;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot make a context\n"); return 1; }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    std::mt19937 rng(0);
    std::vector<double> pre, dec, tot;
    for (int r = 0; r <= runs; r++) {  // the first run warms up
        std::vector<llama_token> ids(n_prompt);
        for (auto & t : ids) t = 100 + rng() % (n_vocab - 100);
        llama_memory_clear(llama_get_memory(ctx), true);
        double t0 = now();
        if (llama_decode(ctx, llama_batch_get_one(ids.data(), n_prompt))) { fprintf(stderr, "decode failed\n"); return 1; }
        float * logits = llama_get_logits_ith(ctx, -1);
        llama_token next = std::max_element(logits, logits + n_vocab) - logits;
        double t1 = now();
        for (int i = 0; i < n_decode; i++) {
            if (llama_decode(ctx, llama_batch_get_one(&next, 1))) { fprintf(stderr, "decode failed\n"); return 1; }
            logits = llama_get_logits_ith(ctx, -1);
            next = std::max_element(logits, logits + n_vocab) - logits;
        }
        double t2 = now();
        if (r) { pre.push_back(t1 - t0); dec.push_back(t2 - t1); tot.push_back(t2 - t0); }
    }
    auto med = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; };
    printf("llama.cpp threads=%d prompt=%d decode=%d\n", threads, n_prompt, n_decode);
    printf("prefill %.0f ms (%.0f tok/s), decode %.1f tok/s, cold total %.0f ms (median of %d)\n",
           med(pre) * 1e3, n_prompt / med(pre), n_decode / med(dec), med(tot) * 1e3, runs);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
