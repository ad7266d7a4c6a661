/* fuzz_model.c - libFuzzer harness for model loading: open the input as a
 * model from memory (through an allocator that caps live bytes and checks
 * for leaks); if it opens, query it, tokenize and detokenize a little, and
 * evaluate a couple of tokens in a tiny context.  Built by tests/fuzz/run.sh:
 *   clang -fsanitize=fuzzer,address,undefined -Iinclude -Isrc -Itests \
 *       tests/fuzz/fuzz_model.c src/[all].c -lm -lpthread */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "ember.h"

static size_t fz_live, fz_cap;
static long fz_blocks;
static void *fz_malloc(void *u, size_t n) {
    (void)u;
    if (n > fz_cap - fz_live) return NULL;      /* a clean NOMEM, not a crash */
    size_t *p = malloc(n + 16);
    if (!p) return NULL;
    p[0] = n;
    fz_live += n;
    fz_blocks++;
    return (char *)p + 16;
}
static void *fz_realloc(void *u, void *q, size_t n) {
    (void)u;
    if (!q) return fz_malloc(u, n);
    size_t *p = (size_t *)((char *)q - 16);
    if (n > p[0] && n - p[0] > fz_cap - fz_live) return NULL;
    size_t old = p[0];
    size_t *r = realloc(p, n + 16);
    if (!r) return NULL;
    fz_live = fz_live - old + n;
    r[0] = n;
    return (char *)r + 16;
}
static void fz_free(void *u, void *q) {
    (void)u;
    if (!q) return;
    size_t *p = (size_t *)((char *)q - 16);
    fz_live -= p[0];
    fz_blocks--;
    free(p);
}

static volatile uint64_t fz_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ember_allocator a = {fz_malloc, fz_realloc, fz_free, NULL};
    fz_live = 0;
    fz_blocks = 0;
    fz_cap = (size_t)64 << 20;
    /* an exactly sized private copy (malloc alignment, as documented) */
    uint8_t *img = malloc(size ? size : 1);
    if (size) memcpy(img, data, size);
    ember_model_params mp = ember_model_default_params();
    mp.allocator = &a;
    ember_model *m = (ember_model *)1;
    ember_error err;
    memset(&err, 0x5a, sizeof err);
    int rc = ember_model_open_memory(img, size, &mp, &m, &err);
    if (rc != EMBER_OK) {
        if (m != NULL || err.code != rc || !memchr(err.message, 0, sizeof err.message) || !err.message[0]) __builtin_trap();
        if (fz_blocks) __builtin_trap();   /* leak on failure */
        free(img);
        return 0;
    }
    ember_model_info info;
    if (ember_model_get_info(m, &info, NULL) != EMBER_OK) __builtin_trap();
    char buf[512];
    static const char *const keys[] = {"general.name", "tokenizer.ggml.tokens", "llama.rope.freq_base"};
    for (int k = 0; k < 3; k++) {
        size_t len = 0;
        const int st = ember_model_meta(m, keys[k], buf, sizeof buf, &len, NULL);
        if (st != EMBER_OK && st != EMBER_ERR_MISSING && st != EMBER_ERR_BUFFER_TOO_SMALL) __builtin_trap();
        if (!memchr(buf, 0, sizeof buf)) __builtin_trap();   /* always NUL-terminated */
        fz_sink += len;
    }
    const int V = ember_n_vocab(m);
    if (V <= 0 || V != info.n_vocab) __builtin_trap();
    ember_token bos = ember_token_bos(m), eos = ember_token_eos(m);
    if (bos < -1 || bos >= V || eos < -1 || eos >= V) __builtin_trap();

    /* tokenize a fixed text, decode every token of a prefix of the vocab */
    static const char text[] = "Hello world! caf\xc3\xa9 \xe2\x82\xac 123 <s> \xff\xfe the end";
    ember_token toks[256];
    size_t n = 0;
    rc = ember_tokenize(m, text, sizeof text - 1, EMBER_TOKENIZE_ADD_BOS | EMBER_TOKENIZE_SPECIAL, toks, 256, &n, NULL);
    if (rc == EMBER_OK) {
        for (size_t i = 0; i < n; i++) if (toks[i] < 0 || toks[i] >= V) __builtin_trap();
        size_t len = 0;
        const int st = ember_detokenize(m, toks, (int)n, 0, buf, sizeof buf, &len, NULL);
        if (st != EMBER_OK && st != EMBER_ERR_BUFFER_TOO_SMALL) __builtin_trap();
    } else if (rc != EMBER_ERR_NOMEM && rc != EMBER_ERR_BUFFER_TOO_SMALL) {
        __builtin_trap();
    }
    for (int i = 0; i < V && i < 64; i++) {
        size_t len = 0;
        const int st = ember_token_to_piece(m, i, i - 1, EMBER_TOKENIZE_SPECIAL, buf, sizeof buf, &len, NULL);
        if (st != EMBER_OK && st != EMBER_ERR_BUFFER_TOO_SMALL) __builtin_trap();
    }

    /* evaluate two tokens in a tiny context (skip models too big to run fast) */
    if (info.bytes_per_token < ((uint64_t)4 << 20) && info.n_layer <= 8) {
        ember_context_params cp = ember_context_default_params();
        cp.n_ctx = info.n_ctx_train < 8 ? info.n_ctx_train : 8;
        cp.n_batch = 2;
        cp.n_threads = 1;
        ember_context *c = NULL;
        rc = ember_context_create(m, &cp, &c, &err);
        if (rc == EMBER_OK) {
            ember_token t2[2] = {bos >= 0 ? bos : 0, V > 1 ? 1 : 0};
            int k = cp.n_ctx < 2 ? cp.n_ctx : 2;
            rc = ember_eval(c, t2, k, NULL);
            if (rc != EMBER_OK && rc != EMBER_ERR_NONFINITE) __builtin_trap();
            if (rc == EMBER_OK) {
                const float *l = ember_get_logits(c);
                for (int i = 0; i < V; i++) if (!isfinite(l[i])) __builtin_trap();
                fz_sink += (uint64_t)(l[0] != 0);
            }
            ember_context_free(c);
        } else if (rc != EMBER_ERR_NOMEM) {
            __builtin_trap();
        }
    }
    ember_model_free(m);
    if (fz_blocks) __builtin_trap();       /* leak */
    free(img);
    return 0;
}
