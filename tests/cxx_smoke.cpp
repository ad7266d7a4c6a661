// cxx_smoke.cpp - ember from C++: ember.h in a C++17 program, a model
// opened and a few greedy tokens generated.  tests/test_cxx.sh compares the
// text with the C CLI's for the same prompt.
//   cxx_smoke MODEL.gguf PROMPT N_PREDICT
#include "ember.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

struct handles {  // frees in reverse order of creation, whatever happens
    ember_model *model = nullptr;
    ember_context *ctx = nullptr;
    ember_sampler *sampler = nullptr;
    ~handles() {
        if (sampler) ember_sampler_free(sampler);
        if (ctx) ember_context_free(ctx);
        if (model) ember_model_free(model);
    }
};

int append_piece(void *user_data, ember_token, const char *text, size_t len) {
    static_cast<std::string *>(user_data)->append(text, len);
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s MODEL.gguf PROMPT N_PREDICT\n", argv[0]);
        return 2;
    }
    handles h;
    ember_error err;
    if (ember_model_open_file(argv[1], nullptr, &h.model, &err) != EMBER_OK) {
        std::fprintf(stderr, "cannot open %s: %s\n", argv[1], err.message);
        return 1;
    }
    if (ember_context_create(h.model, nullptr, &h.ctx, &err) != EMBER_OK) {
        std::fprintf(stderr, "cannot create a context: %s\n", err.message);
        return 1;
    }
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0.0f;  // greedy: the same tokens as `ember --temp 0`
    if (ember_sampler_create(h.model, &sp, &h.sampler, &err) != EMBER_OK) {
        std::fprintf(stderr, "cannot create a sampler: %s\n", err.message);
        return 1;
    }
    std::string text;
    ember_generate_result res;
    int rc = ember_generate_text(h.ctx, h.sampler, argv[2], std::atoi(argv[3]), append_piece, &text, &res);
    if (rc != EMBER_OK) {
        std::fprintf(stderr, "generation failed: %s\n", ember_context_errmsg(h.ctx));
        return 1;
    }
    std::printf("%s\n", text.c_str());
    return 0;
}
