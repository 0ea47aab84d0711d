// Greedy tokens with llama.cpp for a prompt given as ids, to check that a GGUF file written
// by `copilot_engine::gguf::write` runs in llama.cpp with the output copilot-lsp gives
// (crates/bench/reference/README.md). Prints the greedy ids and the prompt's last logits'
// argmax and max. Not part of the build: compiled by hand as llama_cold.cpp is.
#include "llama.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char ** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf ID,ID,... [new_tokens]\n", argv[0]);
        return 2;
    }
    std::vector<llama_token> ids;
    std::stringstream ss(argv[2]);
    for (std::string x; std::getline(ss, x, ',');) ids.push_back(atoi(x.c_str()));
    const int n_new = argc > 3 ? atoi(argv[3]) : 16;

    llama_log_set([](enum ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = ids.size() + n_new + 16;
    cp.n_batch = ids.size();
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot make a context\n"); return 1; }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    if (llama_decode(ctx, llama_batch_get_one(ids.data(), ids.size()))) { fprintf(stderr, "decode failed\n"); return 1; }
    float * logits = llama_get_logits_ith(ctx, -1);
    llama_token next = std::max_element(logits, logits + n_vocab) - logits;
    printf("last argmax %d max %.5f\ngreedy", next, logits[next]);
    for (int i = 0; i < n_new; i++) {
        printf(" %d", next);
        if (llama_decode(ctx, llama_batch_get_one(&next, 1))) { fprintf(stderr, "decode failed\n"); return 1; }
        logits = llama_get_logits_ith(ctx, -1);
        next = std::max_element(logits, logits + n_vocab) - logits;
    }
    printf("\n");
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
