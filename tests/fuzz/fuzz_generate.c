/* fuzz_generate.c - libFuzzer harness for generation: a tiny random model
 * (built in memory once) generates from prompt bytes and sampling
 * parameters taken from the input.  Checks: valid token ids, streamed text
 * == detokenized text, no UTF-8 character split across callbacks, the
 * final flush, stop reasons, positions, and that evaluation and generation
 * allocate nothing.  Built by tests/fuzz/run.sh.
 * Input: 16 bytes of parameters, then the prompt. */
#define TM_NO_MAIN
#include "../test_hostile_model.c"

static ember_model *g_model;
static gb_buf g_img;
static tm_alloc g_ca;
static ember_allocator g_al;

typedef struct fz_rec {
    ember_token toks[80];
    int n, flushes, calls_after_flush;
    char text[2048];
    size_t len;
    int stop_after;
    unsigned char pend[4];      /* incomplete UTF-8 tail of the previous chunk */
    size_t npend;
} fz_rec;

static int fz_cb(void *ud, ember_token tok, const char *text, size_t len) {
    fz_rec *r = ud;
    if (r->flushes) r->calls_after_flush++;
    if (tok < 0) { if (tok != -1) __builtin_trap(); r->flushes++; }
    else {
        if (tok >= ember_n_vocab(g_model)) __builtin_trap();
        if (r->n < 80) r->toks[r->n++] = tok;
    }
    if (len && !text) __builtin_trap();
    /* A character split across callbacks: the previous chunk ended in an
     * incomplete sequence that this chunk's first bytes complete.  (A chunk
     * may end in a lead byte that the following bytes make invalid.) */
    const unsigned char *u = (const unsigned char *)text;
    if (r->npend && len) {
        unsigned c0 = r->pend[0];
        size_t need = (c0 & 0xE0) == 0xC0 ? 2 : (c0 & 0xF0) == 0xE0 ? 3 : 4;
        size_t k = 0;
        while (k < need - r->npend && k < len && (u[k] & 0xC0) == 0x80) k++;
        if (k > 0 && (k == need - r->npend || k == len)) __builtin_trap();
    }
    if (len) {
        r->npend = test_utf8_incomplete(u, len);
        memcpy(r->pend, u + len - r->npend, r->npend);
    }
    if (r->len + len <= sizeof r->text) { memcpy(r->text + r->len, text, len); r->len += len; }
    return r->stop_after && tok >= 0 && r->n >= r->stop_after;
}

static void fz_init(void) {
    tm_spec s = tm_default();
    s.n_embd = 32; s.n_ff = 64; s.n_layer = 2; s.n_head = 4; s.n_head_kv = 2; s.n_ctx = 64;
    g_al = tm_allocator(&g_ca);
    ember_error err;
    if (tm_open(&s, &g_img, &g_al, &g_model, &err) != EMBER_OK) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_model) fz_init();
    if (size < 16) return 0;
    const uint8_t *p = data;
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = p[0] < 32 ? 0.0f : (float)p[0] / 64.0f;
    sp.top_k = p[1] % 4 == 0 ? 0 : p[1];
    sp.top_p = p[2] >= 250 ? 1.0f : (float)(p[2] + 1) / 251.0f;
    sp.min_p = p[3] < 128 ? 0.0f : (float)(p[3] - 128) / 128.0f;
    sp.repeat_penalty = p[4] < 128 ? 1.0f : 0.5f + (float)(p[4] - 128) / 64.0f;
    sp.repeat_last_n = p[5] % 80;
    memcpy(&sp.seed, p + 6, 4);
    int n_predict = p[10] % 40;
    int n_ctx = 4 + p[11] % 61;            /* 4..64 */
    int n_batch = 1 + p[12] % 16;
    int flags = p[13] & 3;
    int kv_type = (p[14] & 1) ? EMBER_KV_F32 : EMBER_KV_F16;
    int stop_after = (p[14] >> 1) % 8;
    int rollback = p[15] % 5;
    const char *prompt = (const char *)data + 16;
    size_t plen = size - 16;

    ember_sampler *s = NULL;
    sp.allocator = &g_al;
    if (ember_sampler_create(g_model, &sp, &s, NULL) != EMBER_OK) __builtin_trap();
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = n_ctx; cp.n_batch = n_batch; cp.n_threads = 1; cp.kv_type = (ember_kv_type)kv_type;
    ember_context *c = NULL;
    if (ember_context_create(g_model, &cp, &c, NULL) != EMBER_OK) __builtin_trap();

    ember_token toks[256];
    size_t n_tok = 0;
    int rc = ember_tokenize(g_model, prompt, plen, flags, toks, 256, &n_tok, NULL);
    int n = n_tok > 256 ? 256 : (int)n_tok;
    if (rc == EMBER_ERR_BUFFER_TOO_SMALL) n = 256;
    else if (rc != EMBER_OK) __builtin_trap();
    for (int i = 0; i < n; i++) if (toks[i] < 0 || toks[i] >= ember_n_vocab(g_model)) __builtin_trap();
    if (n == 0) toks[n++] = TM_BOS;

    long calls0 = g_ca.calls;
    fz_rec r;
    memset(&r, 0, sizeof r);
    r.stop_after = stop_after;
    ember_generate_result res;
    rc = ember_generate(c, s, toks, n, n_predict, fz_cb, &r, &res);
    if (n > n_ctx) {
        if (rc != EMBER_ERR_CONTEXT_FULL || ember_context_pos(c) != 0 || r.n) __builtin_trap();
    } else {
        if (rc != EMBER_OK) __builtin_trap();
        if (res.n_generated != r.n || res.n_prompt != n) __builtin_trap();
        if (r.flushes > 1 || r.calls_after_flush) __builtin_trap();
        switch (res.stop) {
        case EMBER_STOP_LENGTH: if (res.n_generated != n_predict) __builtin_trap(); break;
        case EMBER_STOP_CONTEXT_FULL: if (ember_context_pos(c) != n_ctx) __builtin_trap(); break;
        case EMBER_STOP_CALLBACK: if (!stop_after || r.n != stop_after) __builtin_trap(); break;
        case EMBER_STOP_EOG: break;
        default: __builtin_trap();
        }
        if (ember_context_pos(c) > n_ctx) __builtin_trap();
        /* streamed text == detokenize(prompt + generated) - detokenize(prompt) */
        static ember_token all[400];
        static char full[8192], head[8192];
        memcpy(all, toks, (size_t)n * sizeof *all);
        memcpy(all + n, r.toks, (size_t)r.n * sizeof *all);
        size_t lf = 0, lh = 0;
        if (ember_detokenize(g_model, all, n + r.n, 0, full, sizeof full, &lf, NULL) != EMBER_OK ||
            ember_detokenize(g_model, toks, n, 0, head, sizeof head, &lh, NULL) != EMBER_OK)
            __builtin_trap();
        if ((size_t)(lf - lh) != r.len || memcmp(full + lh, r.text, r.len)) __builtin_trap();
        /* roll back and continue */
        if (rollback && ember_context_pos(c) > 0) {
            int pos = ember_context_pos(c) * rollback / 5;
            if (ember_context_set_pos(c, pos) != EMBER_OK || ember_context_pos(c) != pos) __builtin_trap();
            if (pos > 0) {
                ember_token t = toks[0];
                rc = ember_eval(c, &t, 1, NULL);
                if (rc != EMBER_OK && !(rc == EMBER_ERR_CONTEXT_FULL && pos == n_ctx)) __builtin_trap();
                memset(&r, 0, sizeof r);
                if (ember_context_pos(c) < n_ctx) {
                    rc = ember_generate(c, s, NULL, 0, n_predict, fz_cb, &r, &res);
                    if (rc != EMBER_OK) __builtin_trap();
                }
            }
        }
        /* sampling directly from the context's logits */
        const float *l = ember_get_logits(c);
        if (l) {
            ember_token t = -1;
            if (ember_sampler_sample(s, l, &t) != EMBER_OK || t < 0 || t >= ember_n_vocab(g_model)) __builtin_trap();
        }
    }
    if (g_ca.calls != calls0) __builtin_trap();    /* generation allocated */
    ember_context_free(c);
    ember_sampler_free(s);
    return 0;
}
