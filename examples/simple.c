/* simple.c - the smallest useful ember program: load a model, generate
 * text from a prompt, print it as it streams.
 *
 *   build/examples/simple models/ember-demo.gguf "Once upon a time"
 */
#include <stdio.h>
#include "ember.h"

/* Called once per generated token with the text it completed. */
static int print_piece(void *user_data, ember_token token, const char *text, size_t len) {
    (void)user_data; (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;                       /* nonzero would stop generation */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [PROMPT]\n", argv[0]);
        return 1;
    }
    const char *prompt = argc > 2 ? argv[2] : "Once upon a time";

    ember_model *model;
    ember_error err;
    if (ember_model_open_file(argv[1], NULL, &model, &err) != EMBER_OK) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], err.message);
        return 1;
    }

    ember_context *ctx;             /* one KV cache; NULL params = defaults */
    if (ember_context_create(model, NULL, &ctx, &err) != EMBER_OK) {
        fprintf(stderr, "cannot create a context: %s\n", err.message);
        ember_model_free(model);
        return 1;
    }

    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0.7f;
    sp.seed = 1234;                 /* same seed, same text */
    ember_sampler *sampler;
    if (ember_sampler_create(model, &sp, &sampler, &err) != EMBER_OK) {
        fprintf(stderr, "cannot create a sampler: %s\n", err.message);
        ember_context_free(ctx);
        ember_model_free(model);
        return 1;
    }

    printf("%s", prompt);
    ember_generate_result result;
    int rc = ember_generate_text(ctx, sampler, prompt, 100, print_piece, NULL, &result);
    printf("\n");
    if (rc != EMBER_OK)
        fprintf(stderr, "generation failed: %s\n", ember_context_errmsg(ctx));
    else
        fprintf(stderr, "%d tokens, %.1f tokens/s\n", result.n_generated,
                result.n_generated / (result.generate_seconds + 1e-9));

    ember_sampler_free(sampler);
    ember_context_free(ctx);
    ember_model_free(model);
    return rc == EMBER_OK ? 0 : 1;
}
