/* fuzz_grammar.c - libFuzzer harness for GBNF grammars (src/grammar.c,
 * src/grammar_json.c) and the sampler's grammar hook.  Built by
 * tests/fuzz/run.sh.  Input: a flags byte, the grammar text up to the first
 * NUL, then script bytes.  Flags bit 0: read the text as a JSON Schema
 * instead.  A text that does not compile must fail with a message naming
 * the place; one that compiles is (1) matched against the script bytes as a
 * whole text, (2) attached to a sampler over a tiny model's vocabulary and
 * sampled from logits made of the script bytes: an end-of-generation token
 * may come only when the text so far is accepted (checked by matching the
 * text directly, not through the vocabulary trie), (3) fed arbitrary tokens (which may kill it) and
 * sampled again.  Every allocation goes through a counting allocator and
 * must be freed. */
#define TM_NO_MAIN
#include "../test_hostile_model.c"

static ember_model *g_model;
static gb_buf g_img;
static tm_alloc g_ca;
static ember_allocator g_al;

static void fz_init(void) {
    tm_spec s = tm_default();
    s.n_embd = 32; s.n_ff = 64; s.n_layer = 1; s.n_head = 4; s.n_head_kv = 2; s.n_ctx = 64;
    g_al = tm_allocator(&g_ca);
    ember_error err;
    if (tm_open(&s, &g_img, &g_al, &g_model, &err) != EMBER_OK) __builtin_trap();
}

/* 1 if the grammar accepts the text, 0 if not, or a negative status. */
static int fz_accepts(const ember_grammar *g, const char *text, size_t n) {
    int accepted = -1;
    const int st = ember_grammar_accepts(g, text, n, &accepted);
    if (st != EMBER_OK) return st;
    if (accepted != 0 && accepted != 1) __builtin_trap();
    return accepted;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_model) fz_init();
    if (size < 1) return 0;
    const int flags = data[0];
    const char *text = (const char *)data + 1;
    size_t tn = 0;
    while (1 + tn < size && text[tn]) tn++;
    const uint8_t *script = data + 1 + tn + (1 + tn < size);
    size_t sn = size - (size_t)(script - data);

    static tm_alloc ga;
    ember_allocator al = tm_allocator(&ga);
    ember_grammar *g = NULL;
    ember_error err;
    int rc = (flags & 1) ? ember_grammar_from_json_schema(text, tn, &al, &g, &err)
                         : ember_grammar_parse(text, tn, NULL, &al, &g, &err);
    if (rc != EMBER_OK) {
        if (g || err.code != rc || !err.message[0]) __builtin_trap();
        if (rc == EMBER_ERR_INVALID_ARG && !(flags & 1) && !strstr(err.message, "line ")) __builtin_trap();
        return 0;
    }
    int acc = fz_accepts(g, (const char *)script, sn);
    if (acc < EMBER_ERR_NOMEM || acc > 1) __builtin_trap();

    const int V = ember_n_vocab(g_model);
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = (flags & 2) ? 0.0f : 1.0f;
    sp.top_k = (flags & 4) ? 0 : 1 + (flags >> 4);
    sp.top_p = (flags & 8) ? 0.9f : 1.0f;
    sp.min_p = 0;
    sp.seed = flags;
    sp.allocator = &al;
    ember_sampler *s = NULL;
    if (ember_sampler_create(g_model, &sp, &s, NULL) != EMBER_OK) __builtin_trap();
    if (ember_sampler_set_grammar(s, g) != EMBER_OK) __builtin_trap();
    float *logits = malloc((size_t)V * sizeof *logits);
    char out[512];
    size_t on = 0;
    for (int step = 0; step < 24; step++) {
        for (int i = 0; i < V; i++) logits[i] = sn ? (float)((int)script[((size_t)i * 7 + (size_t)step) % sn] - 128) / 16.0f : 0;
        ember_token t = -1;
        const int st = ember_sampler_sample(s, logits, &t);
        if (st == EMBER_ERR_GRAMMAR) break;   /* the grammar allows no token */
        if (st != EMBER_OK || t < 0 || t >= V) __builtin_trap();
        if (ember_token_is_eog(g_model, t)) {
            int a = fz_accepts(g, out, on);
            if (a == 0 && on < sizeof out - 64) __builtin_trap();
            ember_sampler_accept(s, t);
            break;
        }
        char piece[64];
        size_t n = 0;
        const int pst = ember_token_to_piece(g_model, t, t, 0, piece, sizeof piece, &n, NULL);
        if ((pst != EMBER_OK && pst != EMBER_ERR_BUFFER_TOO_SMALL) || n == 0) __builtin_trap();   /* empty tokens are never allowed */
        if (pst == EMBER_OK && on + n < sizeof out) { memcpy(out + on, piece, n); on += n; }
        else on = sizeof out;   /* too long to check */
        ember_sampler_accept(s, t);
        if (on < sizeof out) {
            int a = fz_accepts(g, out, on);
            if (a < EMBER_ERR_NOMEM || a > 1) __builtin_trap();
        }
    }
    /* arbitrary tokens, then sample again */
    ember_sampler_reset(s, 1);
    for (size_t i = 0; i + 1 < sn && i < 16; i += 2) ember_sampler_accept(s, (ember_token)((script[i] << 8 | script[i + 1]) % (V + 2)) - 1);
    if (V > 0) {
        ember_token t = -1;
        const int st = ember_sampler_sample(s, logits, &t);
        if (st != EMBER_ERR_GRAMMAR && (st != EMBER_OK || t < 0 || t >= V)) __builtin_trap();
    }
    ember_sampler_set_grammar(s, NULL);
    ember_sampler_free(s);
    free(logits);
    ember_grammar_free(g);
    if (ga.live) __builtin_trap();
    return 0;
}
