/* shared_model.c - one model in memory, several independent contexts.
 *
 * Shows what an embedding program (a game, an editor) typically does: read
 * the model file into its own buffer, count every allocation ember makes
 * through an allocator hook, and run two conversations that share the
 * weights but not their KV caches.
 *
 *   build/examples/shared_model models/ember-demo.gguf
 */
#include <stdio.h>
#include <stdlib.h>
#include "ember.h"

typedef struct { size_t calls, live; } alloc_stats;

static void *counting_malloc(void *ud, size_t n) {
    alloc_stats *s = ud; s->calls++; s->live++;
    return malloc(n);
}
static void *counting_realloc(void *ud, void *p, size_t n) {
    alloc_stats *s = ud; s->calls++;
    if (!p) s->live++;
    return realloc(p, n);
}
static void counting_free(void *ud, void *p) {
    alloc_stats *s = ud;
    if (p) s->live--;
    free(p);
}

static void *read_whole_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static int print_piece(void *ud, ember_token t, const char *text, size_t len) {
    (void)ud; (void)t;
    fwrite(text, 1, len, stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]); return 1; }
    size_t size;
    void *image = read_whole_file(argv[1], &size);
    if (!image) { fprintf(stderr, "cannot read %s\n", argv[1]); return 1; }

    alloc_stats stats = {0, 0};
    ember_allocator hook = {counting_malloc, counting_realloc, counting_free, &stats};
    ember_model_params mp = ember_model_default_params();
    mp.allocator = &hook;

    ember_model *model;
    ember_error err;
    if (ember_model_open_memory(image, size, &mp, &model, &err) != EMBER_OK) {
        fprintf(stderr, "cannot load: %s\n", err.message);
        free(image);
        return 1;
    }

    const char *prompts[2] = {"The cat", "A wise man once said"};
    ember_context *ctx[2];
    ember_sampler *smp[2];
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = 256;
    ember_sampler_params sp = ember_sampler_default_params();
    sp.allocator = &hook;
    for (int i = 0; i < 2; i++) {
        ember_context_create(model, &cp, &ctx[i], NULL);
        sp.seed = 100 + i;
        ember_sampler_create(model, &sp, &smp[i], NULL);
    }

    size_t before = stats.calls;
    for (int i = 0; i < 2; i++) {
        printf("[%d] %s", i, prompts[i]);
        ember_generate_text(ctx[i], smp[i], prompts[i], 40, print_piece, NULL, NULL);
        printf("\n");
    }
    /* Tokenizing the prompt allocates; evaluating and sampling do not. */
    fprintf(stderr, "allocations during generation: %zu\n", stats.calls - before);

    for (int i = 0; i < 2; i++) { ember_sampler_free(smp[i]); ember_context_free(ctx[i]); }
    ember_model_free(model);
    fprintf(stderr, "blocks still allocated: %zu\n", stats.live);
    free(image);
    return 0;
}
