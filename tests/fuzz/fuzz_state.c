/* fuzz_state.c - libFuzzer harness for saved context states: whatever the
 * bytes, ember_state_load either restores a usable context or fails with
 * the context unchanged.  A tiny Gemma-3-shaped model (a local layer with a
 * ring cache, a global one) is built in memory once, with a valid state of
 * it.  Built by tests/fuzz/run.sh.
 * Input: one byte of flags, then data.
 *   flags & 1: the checksum is set right after the input is formed, so the
 *              parser's later checks are reached
 *   flags & 2: a sampler is passed too
 *   flags & 4: the data is XORed onto the valid state (at the offset in the
 *              next two bytes) instead of being the state */
#define TM_NO_MAIN
#include "../test_hostile_model.c"

static ember_model *g_model;
static ember_context *g_ctx;
static ember_sampler *g_smp;
static gb_buf g_img;
static uint8_t *g_valid;
static size_t g_valid_n;

static void fz_init(void) {
    tm_spec s = tm_family("gemma3");
    s.n_embd = 32; s.n_ff = 64; s.n_head = 4; s.n_head_kv = 2; s.n_ctx = 64;
    ember_error err;
    if (tm_open(&s, &g_img, NULL, &g_model, &err) != EMBER_OK) __builtin_trap();
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = 64; cp.n_batch = 4; cp.n_threads = 1;
    if (ember_context_create(g_model, &cp, &g_ctx, &err) != EMBER_OK) __builtin_trap();
    if (ember_sampler_create(g_model, NULL, &g_smp, NULL) != EMBER_OK) __builtin_trap();
    ember_token toks[20];
    for (int i = 0; i < 20; i++) toks[i] = TM_FIRST_PIECE + i % 9;
    if (ember_eval(g_ctx, toks, 20, NULL) != EMBER_OK) __builtin_trap();
    for (int i = 0; i < 20; i++) ember_sampler_accept(g_smp, toks[i]);
    g_valid_n = ember_state_size(g_ctx, g_smp);
    g_valid = malloc(g_valid_n);
    if (ember_state_save(g_ctx, g_smp, g_valid, g_valid_n, NULL) != EMBER_OK) __builtin_trap();
}

static void fz_fix_checksum(uint8_t *p, size_t n) {
    if (n < 8) return;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n - 8; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    for (int i = 0; i < 8; i++) p[n - 8 + i] = (uint8_t)(h >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_model) fz_init();
    if (size < 1) return 0;
    const int flags = data[0];
    data++; size--;
    uint8_t *st;
    size_t n;
    if (flags & 4) {
        if (size < 2) return 0;
        size_t at = ((size_t)data[0] | (size_t)data[1] << 8) % g_valid_n;
        data += 2; size -= 2;
        n = g_valid_n;
        st = malloc(n);
        memcpy(st, g_valid, n);
        for (size_t i = 0; i < size && at + i < n; i++) st[at + i] ^= data[i];
    } else {
        n = size;
        st = malloc(n ? n : 1);
        if (n) memcpy(st, data, n);
    }
    if (flags & 1) fz_fix_checksum(st, n);
    ember_state_load(g_ctx, g_smp, g_valid, g_valid_n);   /* a known starting point */
    const int pos = ember_context_pos(g_ctx);
    int rc = ember_state_load(g_ctx, (flags & 2) ? g_smp : NULL, st, n);
    if (rc != EMBER_OK) {
        if (ember_context_pos(g_ctx) != pos || !ember_context_errmsg(g_ctx)[0]) __builtin_trap();
    } else {
        /* usable: one more token (the restored numbers may be anything, so
         * a non-finite result is an allowed answer) */
        int p = ember_context_pos(g_ctx);
        ember_token t = TM_FIRST_PIECE;
        if (p < 64) {
            rc = ember_eval(g_ctx, &t, 1, NULL);
            if (rc != EMBER_OK && rc != EMBER_ERR_NONFINITE) __builtin_trap();
        }
        ember_token t2 = -1;
        if (ember_get_logits(g_ctx) && (ember_sampler_sample(g_smp, ember_get_logits(g_ctx), &t2) != EMBER_OK ||
                                        t2 < 0 || t2 >= ember_n_vocab(g_model)))
            __builtin_trap();
    }
    free(st);
    return 0;
}
