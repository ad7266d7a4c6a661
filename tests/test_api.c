/* test_api.c - the public API's contracts: error paths of every function,
 * context limits, bad tokens, non-finite weights, allocation discipline
 * (zero allocations while evaluating; every failed allocation a clean
 * EMBER_ERR_NOMEM without leaks), determinism, UTF-8 streaming and
 * perplexity checked by hand.  Uses tiny models built in memory
 * (tm_build, in test_hostile_model.c). */
#define TM_NO_MAIN
#include "test_hostile_model.c"

#include <limits.h>
#ifndef _WIN32
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

static int n_alloc_points;

/* ---- helpers ------------------------------------------------------------- */

static ember_model *open_spec(const tm_spec *s, gb_buf *img, const ember_allocator *al) {
    ember_model *m = NULL;
    ember_error err;
    int rc = tm_open(s, img, al, &m, &err);
    CHECK(rc == EMBER_OK, "open tiny model: %s (%s)", ember_status_string(rc), err.message);
    return m;
}

static int tokenize(ember_model *m, const char *text, ember_token *out, int cap) {
    size_t n = 0;
    ember_error err;
    int rc = ember_tokenize(m, text, strlen(text), EMBER_TOKENIZE_ADD_BOS, out, (size_t)cap, &n, &err);
    CHECK(rc == EMBER_OK, "tokenize '%s': %d (%s)", text, rc, err.message);
    return rc == EMBER_OK ? (int)n : 0;
}

/* The sampler's choice, or -1 if it failed. */
static ember_token sample(ember_sampler *s, const float *logits) {
    ember_token t = -1;
    return ember_sampler_sample(s, logits, &t) == EMBER_OK ? t : -1;
}

typedef struct rec {
    ember_token toks[1024];
    int n;
    char text[8192];
    size_t len;
    int calls, flushes, bad_split, after_flush;
    int stop_at;               /* return 1 when this many tokens were seen (0 = never) */
    char chunks[64][32];       /* first chunks, for exact comparisons */
    int n_chunks;
} rec;

static int rec_cb(void *ud, ember_token tok, const char *text, size_t len) {
    rec *r = ud;
    r->calls++;
    if (r->flushes) r->after_flush++;
    if (tok < 0) r->flushes++;
    else if (r->n < 1024) r->toks[r->n++] = tok;
    if (tok >= 0 && test_utf8_incomplete((const unsigned char *)text, len)) r->bad_split++;
    if (r->len + len < sizeof r->text) { memcpy(r->text + r->len, text, len); r->len += len; }
    if (r->n_chunks < 64) {
        snprintf(r->chunks[r->n_chunks], sizeof r->chunks[0], "%.*s", (int)(len < 31 ? len : 31), text);
        r->n_chunks++;
    }
    return r->stop_at && tok >= 0 && r->n >= r->stop_at;
}

/* ---- status strings and NULL arguments ---------------------------------- */

static void test_status_strings(void) {
    const char *seen[18];
    for (int code = 0; code >= -17; code--) {
        const char *s = ember_status_string((ember_status)code);
        CHECK(s && s[0] && strcmp(s, "unknown status"), "status %d has no description", code);
        seen[-code] = s;
        for (int j = 0; j < -code; j++) CHECK(strcmp(seen[j], s), "status %d shares its text with %d", code, -j);
    }
    int unknown[] = {1, -18, 100, INT_MIN, INT_MAX};
    for (int i = 0; i < 5; i++)
        CHECK(!strcmp(ember_status_string((ember_status)unknown[i]), "unknown status"), "code %d", unknown[i]);
    CHECK(ember_cpu_features() && ember_cpu_features()[0], "cpu features");
    CHECK(ember_type_name(EK_Q8_0) && !strcmp(ember_type_name(EK_Q8_0), "q8_0"), "type name q8_0");
    CHECK(ember_type_name(-1) == NULL && ember_type_name(5) == NULL && ember_type_name(1000) == NULL, "bad type names");
}

static void test_null_args(ember_model *m) {
    ember_error err;
    ember_model *om = (ember_model *)1;
    /* model */
    memset(&err, 0, sizeof err);
    CHECK(ember_model_open_file(NULL, NULL, &om, &err) == EMBER_ERR_INVALID_ARG && om == NULL && err.message[0] &&
          err.code == EMBER_ERR_INVALID_ARG, "open_file(NULL path)");
    CHECK(ember_model_open_file("x.gguf", NULL, NULL, &err) == EMBER_ERR_INVALID_ARG && err.message[0], "open_file(NULL out)");
    CHECK(ember_model_open_file(NULL, NULL, NULL, NULL) == EMBER_ERR_INVALID_ARG, "open_file all NULL");
    om = (ember_model *)1;
    CHECK(ember_model_open_memory(NULL, 100, NULL, &om, &err) == EMBER_ERR_INVALID_ARG && om == NULL && err.message[0],
          "open_memory(NULL, 100)");
    CHECK(ember_model_open_memory("GGUF", 4, NULL, NULL, &err) == EMBER_ERR_INVALID_ARG, "open_memory(NULL out)");
    om = (ember_model *)1;
    int rc = ember_model_open_memory(NULL, 0, NULL, &om, &err);
    CHECK(rc != EMBER_OK && om == NULL && err.message[0], "open_memory(NULL, 0): %d", rc);
    rc = ember_model_open_memory("GGUF", 4, NULL, &om, NULL);
    CHECK(rc != EMBER_OK && om == NULL, "open_memory(4 bytes, NULL err): %d", rc);
    rc = ember_model_open_memory("not a gguf file at all, not at all", 34, NULL, &om, &err);
    CHECK(rc == EMBER_ERR_BAD_MAGIC && err.message[0], "open_memory(garbage): %d", rc);
    ember_model_free(NULL);
    ember_model_info info;
    CHECK(ember_model_get_info(NULL, &info, NULL) == EMBER_ERR_INVALID_ARG, "get_info(NULL)");
    CHECK(ember_model_get_info(m, NULL, NULL) == EMBER_ERR_INVALID_ARG, "get_info(m, NULL)");
    CHECK(ember_context_memory_needed(NULL, 16, 0, 0) == 0, "memory_needed(NULL)");
    CHECK(ember_context_memory_needed(m, 16, 0, 0) > 0, "memory_needed");
    char buf[64];
    size_t len = 99;
    CHECK(ember_model_meta(NULL, "general.name", buf, sizeof buf, &len, NULL) == EMBER_ERR_INVALID_ARG, "meta(NULL)");
    CHECK(ember_model_meta(m, NULL, buf, sizeof buf, &len, NULL) == EMBER_ERR_INVALID_ARG, "meta(NULL key)");
    CHECK(ember_model_meta(m, "general.name", NULL, 10, &len, NULL) == EMBER_ERR_INVALID_ARG, "meta(NULL buf, size 10)");
    CHECK(ember_model_meta(m, "no.such.key", NULL, 10, &len, NULL) == EMBER_ERR_INVALID_ARG,
          "meta(missing key, NULL buf, size 10)");
    CHECK(ember_model_meta(m, "general.name", NULL, 0, &len, NULL) == EMBER_ERR_BUFFER_TOO_SMALL &&
          len == strlen("tiny test model"), "meta length query: %zu", len);
    buf[0] = 'x';
    CHECK(ember_model_meta(m, "no.such.key", buf, sizeof buf, &len, NULL) == EMBER_ERR_MISSING && buf[0] == 0 &&
          len == 0, "meta missing key");
    CHECK(ember_model_meta(m, "general.name", buf, 5, &len, NULL) == EMBER_ERR_BUFFER_TOO_SMALL && len == 15 &&
          !strcmp(buf, "tiny"), "meta truncated: '%s'", buf);
    CHECK(ember_model_meta(m, "llama.block_count", buf, sizeof buf, &len, NULL) == EMBER_OK && !strcmp(buf, "2") &&
          len == 1, "meta u32: '%s'", buf);
    CHECK(ember_model_meta(m, "tokenizer.ggml.tokens", buf, sizeof buf, NULL, NULL) == EMBER_OK && strstr(buf, "string"),
          "meta array: '%s'", buf);
    /* tokens */
    CHECK(ember_n_vocab(NULL) == 0 && ember_token_bos(NULL) == -1 && ember_token_eos(NULL) == -1 &&
          ember_token_is_eog(NULL, 2) == 0, "token queries on NULL");
    CHECK(ember_token_is_eog(m, -1) == 0 && ember_token_is_eog(m, INT_MAX) == 0 && ember_token_is_eog(m, TM_EOS) == 1,
          "is_eog");
    ember_token toks[16];
    size_t n = 5;
    CHECK(ember_tokenize(NULL, "a", 1, 0, toks, 16, &n, NULL) == EMBER_ERR_INVALID_ARG, "tokenize(NULL model)");
    CHECK(ember_tokenize(m, NULL, 1, 0, toks, 16, &n, NULL) == EMBER_ERR_INVALID_ARG, "tokenize(NULL text, len 1)");
    CHECK(ember_tokenize(m, NULL, 0, EMBER_TOKENIZE_ADD_BOS, toks, 16, &n, NULL) == EMBER_OK && n == 1 &&
          toks[0] == TM_BOS, "tokenize(NULL, 0) = BOS");
    CHECK(ember_tokenize(m, "a", 1, 0, NULL, 16, &n, NULL) == EMBER_ERR_INVALID_ARG, "tokenize(NULL out, cap 16)");
    CHECK(ember_tokenize(m, "a", 1, 0, toks, 16, NULL, NULL) == EMBER_OK, "tokenize(NULL n_out) is allowed");
    rc = ember_tokenize(m, "hello world", 11, EMBER_TOKENIZE_ADD_BOS, toks, 1, &n, NULL);
    CHECK(rc == EMBER_ERR_BUFFER_TOO_SMALL && n == 3, "tokenize cap 1: %d n %zu", rc, n);
    rc = ember_tokenize(m, "hello world", 11, EMBER_TOKENIZE_ADD_BOS, NULL, 0, &n, NULL);
    CHECK(rc == EMBER_ERR_BUFFER_TOO_SMALL && n == 3, "tokenize count: %d n %zu", rc, n);
    CHECK(ember_token_to_piece(NULL, 5, -1, 0, buf, sizeof buf, &len, NULL) == EMBER_ERR_INVALID_ARG, "to_piece(NULL)");
    CHECK(ember_token_to_piece(m, 5, -1, 0, NULL, 10, &len, NULL) == EMBER_ERR_INVALID_ARG, "to_piece(NULL buf)");
    CHECK(ember_token_to_piece(m, TM_BYTE('A'), -1, 0, NULL, 0, &len, NULL) == EMBER_ERR_BUFFER_TOO_SMALL && len == 1,
          "to_piece length query");
    CHECK(ember_token_to_piece(m, TM_BOS, -1, 0, buf, sizeof buf, &len, NULL) == EMBER_OK && len == 0 && !buf[0],
          "control token has no text");
    CHECK(ember_token_to_piece(m, TM_BOS, -1, EMBER_TOKENIZE_SPECIAL, buf, sizeof buf, &len, NULL) == EMBER_OK &&
          len == 3, "control text with SPECIAL");
    CHECK(ember_detokenize(NULL, toks, 1, 0, buf, sizeof buf, &len, NULL) == EMBER_ERR_INVALID_ARG, "detokenize(NULL)");
    CHECK(ember_detokenize(m, NULL, 1, 0, buf, sizeof buf, &len, NULL) == EMBER_ERR_INVALID_ARG,
          "detokenize(NULL tokens)");
    CHECK(ember_detokenize(m, toks, -1, 0, buf, sizeof buf, &len, NULL) == EMBER_ERR_INVALID_ARG, "detokenize(n -1)");
    CHECK(ember_detokenize(m, toks, 1, 0, NULL, 5, &len, NULL) == EMBER_ERR_INVALID_ARG, "detokenize(NULL buf)");
    CHECK(ember_detokenize(m, NULL, 0, 0, buf, sizeof buf, &len, NULL) == EMBER_OK && buf[0] == 0 && len == 0,
          "detokenize nothing");
    /* context */
    ember_context *c = (ember_context *)1;
    CHECK(ember_context_create(NULL, NULL, &c, &err) == EMBER_ERR_INVALID_ARG && c == NULL && err.message[0], "ctx(NULL model)");
    CHECK(ember_context_create(m, NULL, NULL, &err) == EMBER_ERR_INVALID_ARG && err.message[0], "ctx(NULL out)");
    ember_context_params bad[6];
    for (int i = 0; i < 6; i++) bad[i] = ember_context_default_params();
    bad[0].n_ctx = -1; bad[1].n_batch = -1; bad[2].n_threads = -1; bad[3].kv_type = (ember_kv_type)7;
    bad[4].n_ctx = 129; bad[5].n_threads = 5000;
    for (int i = 0; i < 6; i++) {
        c = (ember_context *)1;
        memset(&err, 0, sizeof err);
        rc = ember_context_create(m, &bad[i], &c, &err);
        CHECK(rc == EMBER_ERR_INVALID_ARG && c == NULL && err.message[0] && err.code == rc, "bad context params %d: %d", i, rc);
    }
    ember_context_free(NULL);
    CHECK(ember_context_errmsg(NULL) != NULL, "errmsg(NULL)");
    CHECK(ember_context_n_ctx(NULL) == 0 && ember_context_pos(NULL) == 0, "ctx queries on NULL");
    CHECK(ember_context_set_pos(NULL, 0) == EMBER_ERR_INVALID_ARG, "set_pos(NULL)");
    ember_token one = 5;
    CHECK(ember_eval(NULL, &one, 1, NULL) == EMBER_ERR_INVALID_ARG, "eval(NULL)");
    CHECK(ember_get_logits(NULL) == NULL, "get_logits(NULL)");
    c = make_ctx(m, 16, 4, 1);
    if (c) {
        CHECK(ember_get_logits(c) == NULL, "logits before any eval");
        CHECK(ember_context_errmsg(c) && ember_context_errmsg(c)[0] == 0, "errmsg empty at start");
        CHECK(ember_eval(c, NULL, 1, NULL) == EMBER_ERR_INVALID_ARG && ember_context_errmsg(c)[0], "eval(NULL tokens)");
        CHECK(ember_eval(c, &one, 0, NULL) == EMBER_ERR_INVALID_ARG, "eval(n 0)");
        CHECK(ember_eval(c, &one, -3, NULL) == EMBER_ERR_INVALID_ARG, "eval(n -3)");
        CHECK(ember_context_set_pos(c, 1) == EMBER_ERR_INVALID_ARG, "set_pos beyond pos");
        CHECK(ember_context_set_pos(c, -1) == EMBER_ERR_INVALID_ARG, "set_pos -1");
        CHECK(ember_context_pos(c) == 0 && ember_context_n_ctx(c) == 16, "pos/n_ctx");
    }
    /* sampler */
    ember_sampler *s = (ember_sampler *)1;
    CHECK(ember_sampler_create(NULL, NULL, &s, NULL) == EMBER_ERR_INVALID_ARG && s == NULL, "sampler(NULL model)");
    CHECK(ember_sampler_create(m, NULL, NULL, NULL) == EMBER_ERR_INVALID_ARG, "sampler(NULL out)");
    ember_sampler_params sp[8];
    for (int i = 0; i < 8; i++) sp[i] = ember_sampler_default_params();
    sp[0].temperature = NAN; sp[1].temperature = -1; sp[2].top_k = -1; sp[3].top_p = 0; sp[4].top_p = 1.5f;
    sp[5].min_p = 1; sp[6].repeat_penalty = 0; sp[7].repeat_last_n = -1;
    for (int i = 0; i < 8; i++) {
        s = (ember_sampler *)1;
        CHECK(ember_sampler_create(m, &sp[i], &s, NULL) == EMBER_ERR_INVALID_ARG && s == NULL, "bad sampler params %d", i);
    }
    ember_sampler_free(NULL);
    ember_sampler_reset(NULL, 1);
    CHECK(ember_sampler_accept(NULL, 1) == EMBER_ERR_INVALID_ARG, "accept(NULL)");
    float logits[4] = {0};
    ember_token picked = 7;
    CHECK(ember_sampler_sample(NULL, logits, &picked) == EMBER_ERR_INVALID_ARG && picked == -1, "sample(NULL)");
    s = NULL;
    CHECK(ember_sampler_create(m, NULL, &s, NULL) == EMBER_OK, "default sampler");
    CHECK(ember_sampler_sample(s, NULL, &picked) == EMBER_ERR_INVALID_ARG && ember_sampler_errmsg(s)[0],
          "sample(NULL logits)");
    CHECK(ember_sampler_accept(s, -5) == EMBER_ERR_BAD_TOKEN, "accept(-5)");
    CHECK(ember_sampler_accept(s, INT_MAX) == EMBER_ERR_BAD_TOKEN, "accept(INT_MAX)");   /* no out-of-range write */
    /* generation */
    ember_generate_result res;
    memset(&res, 0x7f, sizeof res);
    CHECK(ember_generate(NULL, s, &one, 1, 4, NULL, NULL, &res) == EMBER_ERR_INVALID_ARG && res.n_generated == 0 &&
          res.stop == EMBER_STOP_NONE, "generate(NULL ctx) fills result");
    CHECK(ember_generate(c, NULL, &one, 1, 4, NULL, NULL, &res) == EMBER_ERR_INVALID_ARG, "generate(NULL sampler)");
    CHECK(ember_generate(c, s, NULL, 1, 4, NULL, NULL, &res) == EMBER_ERR_INVALID_ARG, "generate(NULL prompt)");
    CHECK(ember_generate(c, s, &one, -1, 4, NULL, NULL, &res) == EMBER_ERR_INVALID_ARG, "generate(n_prompt -1)");
    CHECK(ember_generate(c, s, &one, 1, -1, NULL, NULL, &res) == EMBER_ERR_INVALID_ARG, "generate(n_predict -1)");
    CHECK(ember_generate(c, s, NULL, 0, 4, NULL, NULL, &res) == EMBER_ERR_INVALID_ARG, "generate(nothing to continue)");
    CHECK(ember_context_pos(c) == 0, "failed generate calls changed pos");
    CHECK(ember_generate_text(NULL, s, "x", 4, NULL, NULL, NULL) == EMBER_ERR_INVALID_ARG, "generate_text(NULL ctx)");
    CHECK(ember_generate_text(c, s, NULL, 4, NULL, NULL, NULL) == EMBER_ERR_INVALID_ARG, "generate_text(NULL prompt)");
    CHECK(ember_generate_text(c, NULL, "x", 4, NULL, NULL, NULL) == EMBER_ERR_INVALID_ARG, "generate_text(NULL sampler)");
    /* NULL callback and NULL result are fine */
    rc = ember_generate(c, s, &one, 1, 3, NULL, NULL, NULL);
    CHECK(rc == EMBER_OK && ember_context_pos(c) >= 2, "generate without callback/result: %d", rc);
    rc = ember_generate(c, s, NULL, 0, 0, NULL, NULL, &res);
    CHECK(rc == EMBER_OK && res.n_generated == 0 && res.stop == EMBER_STOP_LENGTH, "n_predict 0: %d stop %d", rc, res.stop);
    /* perplexity */
    ember_perplexity_result pr;
    CHECK(ember_perplexity(NULL, "abc", 3, NULL, NULL, &pr) == EMBER_ERR_INVALID_ARG, "perplexity(NULL ctx)");
    CHECK(ember_perplexity(c, NULL, 3, NULL, NULL, &pr) == EMBER_ERR_INVALID_ARG, "perplexity(NULL text)");
    CHECK(ember_perplexity(c, "abc", 3, NULL, NULL, NULL) == EMBER_ERR_INVALID_ARG, "perplexity(NULL result)");
    rc = ember_perplexity(c, "abc", 3, NULL, NULL, &pr);
    CHECK(rc == EMBER_ERR_TOO_SHORT && ember_context_errmsg(c)[0], "perplexity short: %d", rc);
    rc = ember_perplexity(c, NULL, 0, NULL, NULL, &pr);
    CHECK(rc == EMBER_ERR_TOO_SHORT, "perplexity empty: %d", rc);
    ember_sampler_free(s);
    ember_context_free(c);
}

/* ---- files --------------------------------------------------------------- */

static void test_files(const gb_buf *img) {
    char path[1024];
    int fd = test_temp_file(path, sizeof path, "ember_test_api");
    CHECK(fd == 0, "temporary file");
    if (fd != 0) return;
    ember_model *m = (ember_model *)1;
    ember_error err;
    /* empty file */
    int rc = ember_model_open_file(path, NULL, &m, &err);
    CHECK(rc == EMBER_ERR_TRUNCATED && m == NULL && err.message[0], "empty file: %d", rc);
    CHECK(gb_write_file(img, path) == 0, "write model");
    ember_model_params p = ember_model_default_params();
    for (int mode = 0; mode <= 2; mode++) {
        p.load_mode = (ember_load_mode)mode;
        rc = ember_model_open_file(path, &p, &m, &err);
        CHECK(rc == EMBER_OK, "open file mode %d: %s", mode, err.message);
        if (rc == EMBER_OK) {
            ember_model_info info;
            CHECK(ember_model_get_info(m, &info, NULL) == EMBER_OK && info.n_layer == 2 && info.n_embd == 64 &&
                  !strcmp(info.architecture, "llama") && !strcmp(info.tokenizer, "llama") &&
                  !strcmp(info.name, "tiny test model"), "info");
            ember_model_free(m);
        }
    }
    p.load_mode = (ember_load_mode)7;
    m = (ember_model *)1;
    rc = ember_model_open_file(path, &p, &m, &err);
    CHECK(rc == EMBER_ERR_INVALID_ARG && m == NULL && err.message[0], "load mode 7: %d", rc);
    /* a truncated file */
    FILE *f = fopen(path, "wb");
    fwrite(img->p, 1, img->n / 2, f);
    fclose(f);
    rc = ember_model_open_file(path, NULL, &m, &err);
    CHECK(rc == EMBER_ERR_TRUNCATED && m == NULL && err.message[0], "truncated file: %d", rc);
    remove(path);
    rc = ember_model_open_file(path, NULL, &m, &err);
    CHECK(rc == EMBER_ERR_IO && m == NULL && strstr(err.message, path), "missing file: %d %s", rc, err.message);
    rc = ember_model_open_file(test_temp_dir(), NULL, &m, &err);
    CHECK(rc == EMBER_ERR_IO && m == NULL && err.message[0], "directory: %d", rc);
}

/* ---- packed weights --------------------------------------------------------
 * A read-in model may have its Q4_0/Q8_0 matrices packed for the kernels
 * (ember_model_info.n_packed); a mapped file or a caller's buffer never.
 * The logits must be the same bits either way, for one token at a time, a
 * batch, and two threads. */

static void test_packed_load(void) {
    static const int types[] = {EK_Q8_0, EK_Q4_0, EK_Q4_K, EK_Q6_K};
    for (int t = 0; t < 4; t++) {
        tm_spec spec = tm_default();
        spec.wtype = types[t];
        spec.n_embd = 256; spec.n_ff = 512; spec.n_head = 8; spec.n_head_kv = 2;
        gb_buf img = {0};
        ember_model *mm = open_spec(&spec, &img, NULL);   /* the caller's buffer */
        if (!mm) { gb_free(&img); continue; }
        char path[1024];
        CHECK(test_temp_file(path, sizeof path, "ember_test_packed") == 0 && gb_write_file(&img, path) == 0,
              "write model");
        ember_model_params p = ember_model_default_params();
        ember_model *mr = NULL, *mp = NULL;
        ember_error err;
        p.load_mode = EMBER_LOAD_READ;
        CHECK(ember_model_open_file(path, &p, &mr, &err) == EMBER_OK, "open read: %s", err.message);
        p.load_mode = EMBER_LOAD_MMAP;
        CHECK(ember_model_open_file(path, &p, &mp, &err) == EMBER_OK, "open mmap: %s", err.message);
        remove(path);
        if (mr && mp) {
            ember_model_info ir, ip, im;
            ember_model_get_info(mr, &ir, NULL); ember_model_get_info(mp, &ip, NULL); ember_model_get_info(mm, &im, NULL);
            /* 7 matrices per layer, rows 256, 64, 64, 256, 512, 512, 256: all
             * packable; the output head (vocab rows) only if a multiple of 16 */
            int want = (spec.n_layer * 7 + (ember_n_vocab(mr) % 16 == 0));
            const char *set = ember_cpu_features();
            int packs = ek_pack_wanted(ek_kernels_best(), types[t], 256);   /* the set has a packed kernel */
            printf("kernels %s: %s model packed %d matrices at read\n", set, ember_type_name(types[t]), ir.n_packed);
            CHECK(ir.n_packed == (packs ? want : 0) && ip.n_packed == 0 && im.n_packed == 0,
                  "%s packed: read %d (want %d), mmap %d, memory %d", ember_type_name(types[t]), ir.n_packed,
                  packs ? want : 0, ip.n_packed, im.n_packed);
            ember_token toks[40];
            for (int i = 0; i < 40; i++) toks[i] = TM_FIRST_PIECE + (i * 7) % 20;
            int V = ember_n_vocab(mr);
            float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
            /* one token at a time (generation kernels), a batch of 40 (prompt
             * kernels: panels and AMX tiles), at 1 and 2 threads */
            static const int nbs[] = {1, 40, 40}, ths[] = {1, 1, 2};
            for (int v = 0; v < 3; v++) {
                if (eval_last(mp, toks, 40, nbs[v], ths[v], a) || eval_last(mr, toks, 40, nbs[v], ths[v], b)) break;
                CHECK(memcmp(a, b, sizeof(float) * V) == 0, "%s nb %d threads %d: packed logits differ from mapped",
                      ember_type_name(types[t]), nbs[v], ths[v]);
                if (eval_last(mm, toks, 40, nbs[v], ths[v], b)) break;
                CHECK(memcmp(a, b, sizeof(float) * V) == 0, "%s nb %d threads %d: memory logits differ from mapped",
                      ember_type_name(types[t]), nbs[v], ths[v]);
            }
            free(a); free(b);
        }
        ember_model_free(mr); ember_model_free(mp); ember_model_free(mm);
        gb_free(&img);
    }
}

/* ---- other families ------------------------------------------------------ */

/* all n logits of toks evaluated in batches of nb in a context of n_ctx */
static int eval_all(ember_model *m, const ember_token *toks, int n, int n_ctx, int nb, int threads, float *out) {
    ember_context *c = make_ctx(m, n_ctx, nb, threads);
    if (!c) return -1;
    int rc = ember_eval(c, toks, n, out);
    CHECK(rc == EMBER_OK, "eval: %s", ember_context_errmsg(c));
    ember_context_free(c);
    return rc;
}

/* Every family: the same bits one token at a time, in a batch, on two
 * threads (Q8_0 weights).  Local layers: a ring cache gives the same bits
 * as a full one, the window is applied, and a rewind is allowed exactly
 * while every window it needs is still held. */
static void test_families_eval(void) {
    static const char *const fams[] = {"llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "smollm3", "granite"};
    ember_token toks[40];
    for (int i = 0; i < 40; i++) toks[i] = TM_FIRST_PIECE + (i * 7) % 20;
    for (int f = 0; f < (int)(sizeof fams / sizeof fams[0]); f++) {
        tm_spec spec = tm_family(fams[f]);
        gb_buf img = {0};
        ember_model *m = open_spec(&spec, &img, NULL);
        if (!m) { gb_free(&img); continue; }
        int V = ember_n_vocab(m);
        float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
        static const int nbs[] = {1, 40, 7}, ths[] = {1, 1, 2};
        eval_last(m, toks, 40, 1, 1, a);
        int finite = 1;
        for (int i = 0; i < V; i++) finite &= isfinite(a[i]) != 0;
        CHECK(finite, "%s: non-finite logits", fams[f]);
        for (int v = 1; v < 3; v++) {
            if (eval_last(m, toks, 40, nbs[v], ths[v], b)) break;
            CHECK(memcmp(a, b, sizeof(float) * V) == 0, "%s: nb %d threads %d differ from one token at a time",
                  fams[f], nbs[v], ths[v]);
        }
        free(a); free(b);
        ember_model_free(m);
        gb_free(&img);
    }

    /* a fused attn_qkv.bias is applied: the same weights with it differ */
    {
        tm_spec a = tm_family("phi3"), b = tm_family("phi3");
        b.qkv_bias = 1;
        gb_buf ia = {0}, ib = {0};
        ember_model *ma = open_spec(&a, &ia, NULL), *mb = open_spec(&b, &ib, NULL);
        if (ma && mb) {
            int V = ember_n_vocab(ma);
            float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
            if (!eval_last(ma, toks, 10, 10, 1, la) && !eval_last(mb, toks, 10, 10, 1, lb))
                CHECK(memcmp(la, lb, sizeof(float) * V) != 0, "phi3: attn_qkv.bias changes nothing");
            free(la); free(lb);
        }
        ember_model_free(ma); ember_model_free(mb);
        gb_free(&ia); gb_free(&ib);
    }

    /* gemma2, window 5, n_batch 4: a ring of 8 rows (stored twice) in a
     * context of 128, all 16 rows in a context of 16 */
    tm_spec spec = tm_family("gemma2");
    gb_buf img = {0}, img_wide = {0};
    ember_model *m = open_spec(&spec, &img, NULL);
    spec.md_swa = 64;
    ember_model *wide = open_spec(&spec, &img_wide, NULL);
    if (m && wide) {
        int V = ember_n_vocab(m);
        float *ring = malloc(sizeof(float) * V * 40), *full = malloc(sizeof(float) * V * 40);
        float *w64 = malloc(sizeof(float) * V * 40);
        if (!eval_all(m, toks, 15, 128, 4, 1, ring) && !eval_all(m, toks, 15, 16, 4, 1, full) &&
            !eval_all(wide, toks, 15, 16, 4, 1, w64)) {
            CHECK(memcmp(ring, full, sizeof(float) * V * 15) == 0, "gemma2: ring cache logits differ from a full cache");
            CHECK(memcmp(w64, full, sizeof(float) * V * 5) == 0, "gemma2: windows 5 and 64 differ before position 5");
            CHECK(memcmp(w64 + (size_t)V * 5, full + (size_t)V * 5, sizeof(float) * V) != 0,
                  "gemma2: window 5 changes nothing at position 5");
        }
        CHECK(ember_context_memory_needed(m, 128, EMBER_KV_F16, 4) < ember_context_memory_needed(wide, 128, EMBER_KV_F16, 4),
              "gemma2: a window of 5 does not shrink the cache");
        /* rewinds: 30 positions held, ring of 8 */
        ember_context *c = make_ctx(m, 128, 4, 1);
        if (c) {
            eval_all(m, toks, 30, 128, 4, 1, ring);
            CHECK(ember_eval(c, toks, 30, NULL) == EMBER_OK, "eval 30");
            CHECK(ember_context_set_pos(c, 28) == EMBER_OK, "rewind by 2: %s", ember_context_errmsg(c));
            CHECK(ember_eval(c, toks + 28, 2, NULL) == EMBER_OK, "eval after rewind");
            CHECK(memcmp(ember_get_logits(c), ring + (size_t)V * 29, sizeof(float) * V) == 0,
                  "gemma2: logits after a rewind by 2 differ");
            CHECK(ember_context_set_pos(c, 20) == EMBER_ERR_INVALID_ARG, "rewind by 10 past the ring is refused");
            CHECK(strstr(ember_context_errmsg(c), "sliding-window") != NULL, "message: %s", ember_context_errmsg(c));
            CHECK(ember_context_pos(c) == 30, "a refused rewind changes nothing");
            CHECK(ember_context_set_pos(c, 0) == EMBER_OK, "clear");
            CHECK(ember_eval(c, toks, 30, NULL) == EMBER_OK, "eval after clear");
            CHECK(memcmp(ember_get_logits(c), ring + (size_t)V * 29, sizeof(float) * V) == 0,
                  "gemma2: logits after a clear differ");
            ember_context_free(c);
        }
        free(ring); free(full); free(w64);
    }
    ember_model_free(m); ember_model_free(wide);
    gb_free(&img); gb_free(&img_wide);
}

/* ---- saved state and shared prefixes -------------------------------------- */

static int gen_tokens(ember_context *c, ember_sampler *smp, int n, ember_token *out) {
    for (int i = 0; i < n; i++) {
        const float *l = ember_get_logits(c);
        if (!l) return -1;
        out[i] = sample(smp, l);
        ember_sampler_accept(smp, out[i]);
        if (ember_eval(c, &out[i], 1, NULL) != EMBER_OK) return -1;
    }
    return 0;
}

/* A state saved mid-generation and loaded into a fresh context and sampler
 * continues exactly as the original does (sampled, repetition penalty on);
 * its size follows the positions held, not n_ctx. */
static void test_state_roundtrip(ember_model *m, const char *what, int n_ctx_a, int n_batch_a, int n_ctx_b,
                                 int n_batch_b) {
    ember_token toks[30], want[12], got[12];
    for (int i = 0; i < 30; i++) toks[i] = TM_FIRST_PIECE + (i * 7) % 20;
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 1.5f; sp.top_k = 0; sp.top_p = 1; sp.min_p = 0; sp.repeat_penalty = 1.3f; sp.repeat_last_n = 8;
    sp.seed = 77;
    ember_sampler *sa = NULL, *sb = NULL;
    ember_sampler_create(m, &sp, &sa, NULL);
    sp.seed = 1;   /* replaced by the saved state */
    ember_sampler_create(m, &sp, &sb, NULL);
    ember_context *a = make_ctx(m, n_ctx_a, n_batch_a, 1), *b = make_ctx(m, n_ctx_b, n_batch_b, 2);
    if (!a || !b || !sa || !sb) goto out;
    CHECK(ember_eval(a, toks, 30, NULL) == EMBER_OK, "%s: eval", what);
    for (int i = 0; i < 30; i++) ember_sampler_accept(sa, toks[i]);
    size_t size = ember_state_size(a, sa), written = 0;
    uint8_t *buf = malloc(size + 16);
    CHECK(ember_state_save(a, sa, buf, size - 1, &written) == EMBER_ERR_BUFFER_TOO_SMALL && written == size,
          "%s: a short buffer is refused and the size told", what);
    CHECK(ember_state_save(a, sa, buf, size + 16, &written) == EMBER_OK && written == size, "%s: save", what);
    if (gen_tokens(a, sa, 12, want)) { free(buf); goto out; }
    CHECK(ember_state_load(b, sb, buf, size) == EMBER_OK, "%s: load: %s", what, ember_context_errmsg(b));
    CHECK(ember_context_pos(b) == 30 && !memcmp(ember_context_tokens(b), toks, sizeof toks), "%s: tokens restored", what);
    if (!gen_tokens(b, sb, 12, got))
        CHECK(!memcmp(want, got, sizeof want), "%s: the restored context and sampler continue differently", what);
    /* bigger with more positions, and the same for any n_ctx */
    ember_context *c = make_ctx(m, n_ctx_a + 16 <= 128 ? n_ctx_a + 16 : n_ctx_a - 16, n_batch_a, 1);
    if (c) {
        ember_eval(c, toks, 30, NULL);
        CHECK(ember_state_size(c, sa) == size, "%s: the state's size depends on n_ctx", what);
        ember_context_set_pos(c, 0);
        ember_eval(c, toks, 10, NULL);
        CHECK(ember_state_size(c, sa) < size, "%s: fewer positions, no smaller state", what);
        ember_context_free(c);
    }
    free(buf);
out:
    ember_context_free(a); ember_context_free(b);
    ember_sampler_free(sa); ember_sampler_free(sb);
}

/* Every truncation, bit flips everywhere, another model, another KV type,
 * too small a context: an error, and the context as it was. */
static void test_state_hostile(ember_model *m) {
    ember_token toks[20];
    for (int i = 0; i < 20; i++) toks[i] = TM_FIRST_PIECE + (i * 3) % 20;
    ember_context *a = make_ctx(m, 64, 8, 1), *b = make_ctx(m, 64, 8, 1);
    if (!a || !b) { ember_context_free(a); ember_context_free(b); return; }
    ember_eval(a, toks, 20, NULL);
    ember_eval(b, toks + 5, 3, NULL);
    size_t size = ember_state_size(a, NULL);
    uint8_t *buf = malloc(size), *bad = malloc(size);
    ember_state_save(a, NULL, buf, size, NULL);
    int V = ember_n_vocab(m), wrong = 0;
    float *before = malloc(sizeof(float) * V);
    memcpy(before, ember_get_logits(b), sizeof(float) * V);
    for (size_t n = 0; n < size; n += (n < 64 ? 1 : 37)) {
        int rc = ember_state_load(b, NULL, buf, n);
        wrong += rc == EMBER_OK || ember_context_pos(b) != 3;
    }
    CHECK(wrong == 0, "truncated states: %d loaded or changed the context", wrong);
    wrong = 0;
    for (size_t at = 0; at < size; at += (at < 64 ? 1 : 29)) {
        memcpy(bad, buf, size);
        bad[at] ^= (uint8_t)(1u << (at % 8));
        int rc = ember_state_load(b, NULL, bad, size);
        wrong += rc == EMBER_OK || ember_context_pos(b) != 3;
    }
    CHECK(wrong == 0, "bit-flipped states: %d loaded or changed the context", wrong);
    CHECK(!memcmp(before, ember_get_logits(b), sizeof(float) * V), "failed loads changed the logits");
    CHECK(ember_state_load(b, NULL, buf, size) == EMBER_OK, "the intact state loads");
    /* a context too small, another KV type, another model */
    ember_context *small = make_ctx(m, 16, 8, 1);
    if (small) {
        CHECK(ember_state_load(small, NULL, buf, size) == EMBER_ERR_CONTEXT_FULL, "20 positions into 16");
        ember_context_free(small);
    }
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = 64; cp.kv_type = EMBER_KV_F32;
    ember_context *f32 = NULL;
    ember_context_create(m, &cp, &f32, NULL);
    if (f32) {
        CHECK(ember_state_load(f32, NULL, buf, size) == EMBER_ERR_INVALID_ARG, "F16 state into an F32 context");
        CHECK(strstr(ember_context_errmsg(f32), "F16") != NULL, "message: %s", ember_context_errmsg(f32));
        ember_context_free(f32);
    }
    tm_spec other = tm_family("qwen2");
    gb_buf img = {0};
    ember_model *mo = open_spec(&other, &img, NULL);
    ember_context *co = mo ? make_ctx(mo, 64, 8, 1) : NULL;
    if (co) {
        CHECK(ember_state_load(co, NULL, buf, size) == EMBER_ERR_INVALID_ARG, "a state of another model");
        CHECK(strstr(ember_context_errmsg(co), "different model") != NULL, "message: %s", ember_context_errmsg(co));
        CHECK(ember_context_copy_prefix(co, a, 5) == EMBER_ERR_INVALID_ARG, "copying between models");
        ember_context_free(co);
    }
    ember_model_free(mo);
    gb_free(&img);
    /* through a file */
    char path[1024];
    CHECK(test_temp_file(path, sizeof path, "ember_test_state") == 0, "temporary file");
    CHECK(ember_state_save_file(a, NULL, path) == EMBER_OK, "save file");
    ember_context_set_pos(b, 0);
    CHECK(ember_state_load_file(b, NULL, path) == EMBER_OK && ember_context_pos(b) == 20, "load file");
    CHECK(!memcmp(ember_get_logits(a), ember_get_logits(b), sizeof(float) * V), "logits through a file");
    remove(path);
    CHECK(ember_state_load_file(b, NULL, path) == EMBER_ERR_IO, "a missing file");
    free(buf); free(bad); free(before);
    ember_context_free(a); ember_context_free(b);
}

/* A prefix computed once and copied: the copies continue exactly as a
 * context that evaluated everything itself. */
static void test_copy_prefix(ember_model *m, const char *what) {
    ember_token toks[24];
    for (int i = 0; i < 24; i++) toks[i] = TM_FIRST_PIECE + (i * 5) % 19;
    int V = ember_n_vocab(m);
    float *want = malloc(sizeof(float) * V);
    ember_context *sys = make_ctx(m, 64, 4, 1), *npc = make_ctx(m, 128, 4, 1);
    if (!sys || !npc || eval_last(m, toks, 24, 4, 1, want)) goto out;
    ember_eval(sys, toks, 16, NULL);
    CHECK(ember_context_copy_prefix(npc, sys, 16) == EMBER_OK && ember_get_logits(npc) &&
          !memcmp(ember_get_logits(npc), ember_get_logits(sys), sizeof(float) * V), "%s: copy all 16", what);
    CHECK(ember_eval(npc, toks + 16, 8, NULL) == EMBER_OK &&
          !memcmp(ember_get_logits(npc), want, sizeof(float) * V), "%s: after copying 16", what);
    CHECK(ember_context_copy_prefix(npc, sys, 14) == EMBER_OK && ember_context_pos(npc) == 14 &&
          ember_get_logits(npc) == NULL, "%s: copy 14 of 16", what);
    CHECK(ember_eval(npc, toks + 14, 10, NULL) == EMBER_OK &&
          !memcmp(ember_get_logits(npc), want, sizeof(float) * V), "%s: after copying 14", what);
    CHECK(ember_context_copy_prefix(npc, sys, 17) == EMBER_ERR_INVALID_ARG, "%s: more than the source holds", what);
    CHECK(ember_context_copy_prefix(npc, npc, 3) == EMBER_ERR_INVALID_ARG, "%s: onto itself", what);
out:
    free(want);
    ember_context_free(sys); ember_context_free(npc);
}

static void test_state(ember_model *m) {
    test_state_roundtrip(m, "llama", 64, 8, 96, 3);
    test_state_hostile(m);
    test_copy_prefix(m, "llama");
    /* sliding windows: ring to ring, ring to a full cache, full to ring */
    tm_spec spec = tm_family("gemma3");
    gb_buf img = {0};
    ember_model *g = open_spec(&spec, &img, NULL);
    if (g) {
        test_state_roundtrip(g, "gemma3 ring to ring", 128, 4, 96, 2);
        test_state_roundtrip(g, "gemma3 ring to full", 128, 4, 48, 32);
        test_state_roundtrip(g, "gemma3 full to ring", 48, 32, 128, 4);
        test_copy_prefix(g, "gemma3");
        /* a restored ring holds only the window: going back further is refused */
        ember_context *c = make_ctx(g, 128, 4, 1);
        ember_token toks[30];
        for (int i = 0; i < 30; i++) toks[i] = TM_FIRST_PIECE + i % 20;
        if (c) {
            ember_eval(c, toks, 30, NULL);
            size_t size = ember_state_size(c, NULL);
            uint8_t *buf = malloc(size);
            ember_state_save(c, NULL, buf, size, NULL);
            ember_context *d = make_ctx(g, 128, 4, 1);
            if (d && ember_state_load(d, NULL, buf, size) == EMBER_OK) {
                /* the state holds the window for position 30 only */
                CHECK(ember_context_set_pos(d, 29) == EMBER_ERR_INVALID_ARG && ember_context_pos(d) == 30,
                      "gemma3: rewind past a restored window");
                CHECK(ember_context_set_pos(d, 30) == EMBER_OK && ember_eval(d, toks, 1, NULL) == EMBER_OK,
                      "gemma3: going on after a restore");
            }
            ember_context_free(d);
            free(buf);
            ember_context_free(c);
        }
        ember_model_free(g);
    }
    gb_free(&img);
}

/* ---- stop strings and the step API ----------------------------------------- */

typedef struct txt { char s[4096]; size_t n; int calls_after_end; int ended; } txt;
static int txt_cb(void *ud, ember_token tok, const char *text, size_t len) {
    txt *t = ud;
    if (t->ended) t->calls_after_end++;
    if (tok < 0) t->ended = 1;
    if (t->n + len < sizeof t->s) { memcpy(t->s + t->n, text, len); t->n += len; }
    return 0;
}

/* greedy text of n tokens after the prompt, through ember_generate */
static ember_stop_reason gen_text(ember_model *m, const char *const *stops, int n_stops, int n, txt *out) {
    memset(out, 0, sizeof *out);
    ember_context *c = make_ctx(m, 128, 8, 1);
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0;
    ember_sampler *s = NULL;
    ember_sampler_create(m, &sp, &s, NULL);
    ember_generate_result r;
    memset(&r, 0, sizeof r);
    if (c && s) {
        CHECK(ember_context_set_stop_strings(c, stops, n_stops) == EMBER_OK, "set stop strings");
        CHECK(ember_generate_text(c, s, "hello world", n, txt_cb, out, &r) == EMBER_OK, "generate");
    }
    ember_sampler_free(s);
    ember_context_free(c);
    return r.stop;
}

static void test_stop_strings(ember_model *m) {
    txt full, got;
    gen_text(m, NULL, 0, 40, &full);
    full.s[full.n] = 0;
    if (full.n < 12) { CHECK(0, "the tiny model generated only %zu bytes", full.n); return; }
    /* a stop string from the middle of the text: everything before its first
     * occurrence is passed on, nothing after */
    char stop[8];
    memcpy(stop, full.s + full.n / 2, 5);
    stop[5] = 0;
    const char *first = strstr(full.s, stop);
    const char *list[2] = {"\x01never", stop};
    ember_stop_reason why = gen_text(m, list, 2, 40, &got);
    CHECK(why == EMBER_STOP_STRING, "stop reason %d", why);
    CHECK(got.n == (size_t)(first - full.s) && !memcmp(got.s, full.s, got.n),
          "stop string '%s': %zu bytes passed on, want %zu", stop, got.n, (size_t)(first - full.s));
    CHECK(got.calls_after_end == 0, "calls after the final flush");
    /* a stop string that never completes but whose start keeps appearing:
     * all text passes, none retracted, the held-back tail at the end */
    char almost[8];
    memcpy(almost, full.s + full.n - 3, 3);
    memcpy(almost + 3, "\x02!", 3);
    const char *list2[1] = {almost};
    why = gen_text(m, list2, 1, 40, &got);
    CHECK(why == EMBER_STOP_LENGTH && got.n == full.n && !memcmp(got.s, full.s, full.n), "held-back text lost or changed");
    /* bad lists */
    ember_context *c = make_ctx(m, 32, 8, 1);
    const char *empty[1] = {""};
    CHECK(c && ember_context_set_stop_strings(c, empty, 1) == EMBER_ERR_INVALID_ARG, "an empty stop string");
    CHECK(c && ember_context_set_stop_strings(c, NULL, 2) == EMBER_ERR_INVALID_ARG, "NULL list");
    ember_context_free(c);

    /* the step API gives the same text, token by token */
    for (int with_stop = 0; with_stop < 2; with_stop++) {
        c = make_ctx(m, 128, 8, 1);
        ember_sampler_params sp = ember_sampler_default_params();
        sp.temperature = 0;
        ember_sampler *s = NULL;
        ember_sampler_create(m, &sp, &s, NULL);
        if (!c || !s) { ember_context_free(c); ember_sampler_free(s); return; }
        if (with_stop) ember_context_set_stop_strings(c, list, 2);
        ember_token toks[64];
        int n = tokenize(m, "hello world", toks, 64);
        ember_eval(c, toks, n, NULL);
        char buf[512], small[2];
        ember_step_result r;
        CHECK(ember_step(c, s, small, sizeof small, &r) == EMBER_ERR_BUFFER_TOO_SMALL, "a small step buffer");
        CHECK(ember_step_text_size(c) <= sizeof buf, "step text size %zu", ember_step_text_size(c));
        txt t;
        memset(&t, 0, sizeof t);
        int steps = 0;
        for (; steps < 40; steps++) {
            if (ember_step(c, s, buf, sizeof buf, &r) != EMBER_OK) break;
            memcpy(t.s + t.n, buf, r.len);
            t.n += r.len;
            if (r.stop) break;
        }
        if (with_stop)
            CHECK(r.stop == EMBER_STOP_STRING && t.n == (size_t)(first - full.s) && !memcmp(t.s, full.s, t.n),
                  "steps with a stop string: %zu bytes, stop %d", t.n, r.stop);
        else
            CHECK(steps == 40 && ember_context_pos(c) == n + 40 && !memcmp(t.s, full.s, t.n) && full.n - t.n < 4,
                  "40 steps: %zu bytes (generate: %zu)", t.n, full.n);
        ember_sampler_free(s);
        ember_context_free(c);
    }
}

/* ---- special tokens ------------------------------------------------------- */

/* add_eos_token: EOS after the text when special tokens are asked for, and
 * counted when the buffer is too small. */
static void test_add_eos(void) {
    tm_spec spec = tm_default();
    spec.add_eos = 1;
    gb_buf img = {0};
    ember_model *m = open_spec(&spec, &img, NULL);
    if (m) {
        ember_token t[64], plain[64];
        size_t n = 0, np = 0;
        CHECK(ember_tokenize(m, "hello", 5, EMBER_TOKENIZE_ADD_BOS, t, 64, &n, NULL) == EMBER_OK, "tokenize");
        CHECK(ember_tokenize(m, "hello", 5, 0, plain, 64, &np, NULL) == EMBER_OK, "tokenize plain");
        CHECK(n == np + 2 && t[0] == ember_token_bos(m) && t[n - 1] == ember_token_eos(m) &&
              !memcmp(t + 1, plain, sizeof(ember_token) * np), "BOS + text + EOS: %zu vs %zu", n, np);
        CHECK(ember_tokenize(m, "hello", 5, EMBER_TOKENIZE_ADD_BOS, t, n - 1, &np, NULL) == EMBER_ERR_BUFFER_TOO_SMALL &&
              np == n, "a buffer one short: %zu, want %zu", np, n);
    }
    ember_model_free(m);
    gb_free(&img);
}

/* ---- logit bias ------------------------------------------------------------ */

static void test_logit_bias(ember_model *m) {
    int V = ember_n_vocab(m);
    float *l = calloc((size_t)V, sizeof(float));
    for (int i = 0; i < V; i++) l[i] = (float)(i % 13);
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0;
    ember_logit_bias lb[2] = {{5, 100.0f}, {12, -INFINITY}};
    sp.logit_bias = lb; sp.n_logit_bias = 1;
    ember_sampler *s = NULL;
    CHECK(ember_sampler_create(m, &sp, &s, NULL) == EMBER_OK && sample(s, l) == 5, "a +100 bias wins");
    ember_sampler_free(s);
    sp.logit_bias = lb + 1;   /* 12 is the first argmax: banned, 25 next */
    CHECK(ember_sampler_create(m, &sp, &s, NULL) == EMBER_OK && sample(s, l) == 25, "a banned token");
    sp.temperature = 5; sp.top_k = 0; sp.top_p = 1; sp.min_p = 0;
    int seen = 0;
    ember_sampler_free(s);
    ember_sampler_create(m, &sp, &s, NULL);
    for (int i = 0; i < 2000 && s; i++) seen += sample(s, l) == 12;
    CHECK(seen == 0, "a banned token sampled %d times at temperature 5", seen);
    ember_sampler_free(s);
    lb[0].token = V;
    sp.logit_bias = lb;
    s = (ember_sampler *)0x1;
    CHECK(ember_sampler_create(m, &sp, &s, NULL) == EMBER_ERR_INVALID_ARG && !s, "a bias for a token outside the vocabulary");
    free(l);
}

/* ---- many contexts in one pass --------------------------------------------- */

/* Three contexts with different prompts and sizes stepped together by
 * ember_eval_multi give the same bits as each stepped alone.  wtype >= 0:
 * matrices of that type, read in from a file (so packed, where the kernel
 * set packs it: packed Q4_0 batches take their own tiles). */
static void test_eval_multi_family(const char *family, int wtype) {
    tm_spec spec = tm_family(family);
    gb_buf img = {0};
    ember_model *m = NULL;
    if (wtype >= 0) {
        spec.wtype = wtype;
        spec.n_embd = 256; spec.n_ff = 512; spec.n_head = 8; spec.n_head_kv = 2;
        tm_build(&spec, &img);
        char path[1024];
        ember_model_params p = ember_model_default_params();
        ember_error err;
        p.load_mode = EMBER_LOAD_READ;
        CHECK(test_temp_file(path, sizeof path, "ember_test_multi") == 0 && gb_write_file(&img, path) == 0 &&
              ember_model_open_file(path, &p, &m, &err) == EMBER_OK, "%s: write and read a model", family);
        remove(path);
    } else {
        m = open_spec(&spec, &img, NULL);
    }
    if (!m) { gb_free(&img); return; }
    enum { N = 3, STEPS = 12 };
    /* the scratch is the longest context's: its n_batch of 2 splits the 3
     * rows in passes of 2 and 1, of 8 (read-in case) keeps them in one */
    const int V = ember_n_vocab(m), n_ctx[N] = {64, 128, 48}, n_batch[N] = {4, wtype >= 0 ? 8 : 2, 8},
              plen[N] = {5, 11, 2};
    ember_context *multi[N], *alone[N];
    int ok = 1;
    for (int i = 0; i < N; i++) {
        multi[i] = make_ctx(m, n_ctx[i], n_batch[i], 1 + i % 2);
        alone[i] = make_ctx(m, n_ctx[i], n_batch[i], 1);
        ok &= multi[i] && alone[i];
    }
    for (int i = 0; ok && i < N; i++) {
        ember_token p[16];
        for (int t = 0; t < plen[i]; t++) p[t] = TM_FIRST_PIECE + (t * 3 + i) % 20;
        ember_eval(multi[i], p, plen[i], NULL);
        ember_eval(alone[i], p, plen[i], NULL);
    }
    int same = 1;
    for (int step = 0; ok && step < STEPS; step++) {
        ember_token next[N];
        for (int i = 0; i < N; i++) {   /* greedy from the multi context's logits */
            const float *l = ember_get_logits(multi[i]);
            int best = 0;
            for (int v = 1; v < V; v++) if (l[v] > l[best]) best = v;
            next[i] = best;
            ember_eval(alone[i], &next[i], 1, NULL);
        }
        if (ember_eval_multi(multi, next, N) != EMBER_OK) { CHECK(0, "%s: eval_multi: %s", family, ember_context_errmsg(multi[0])); break; }
        for (int i = 0; i < N; i++)
            same &= !memcmp(ember_get_logits(multi[i]), ember_get_logits(alone[i]), sizeof(float) * V) &&
                    ember_context_pos(multi[i]) == ember_context_pos(alone[i]);
    }
    CHECK(same, "%s: contexts stepped together differ from each stepped alone", family);
    if (ok) {
        ember_token t[N] = {TM_FIRST_PIECE, TM_FIRST_PIECE, V};
        int before = ember_context_pos(multi[0]);
        CHECK(ember_eval_multi(multi, t, N) == EMBER_ERR_BAD_TOKEN && ember_context_pos(multi[0]) == before,
              "%s: a bad token changes nothing", family);
        ember_context *twice[2] = {multi[0], multi[0]};
        CHECK(ember_eval_multi(twice, t, 2) == EMBER_ERR_INVALID_ARG, "%s: a context listed twice", family);
    }
    for (int i = 0; i < N; i++) { ember_context_free(multi[i]); ember_context_free(alone[i]); }
    ember_model_free(m);
    gb_free(&img);
}

static void test_eval_multi(void) {
    test_eval_multi_family("llama", -1);
    test_eval_multi_family("llama", EK_Q4_0);
    test_eval_multi_family("gemma3", -1);
    test_eval_multi_family("phi3", -1);
}

/* ---- abort ----------------------------------------------------------------- */

static int abort_after(void *ud) { int *left = ud; return (*left)-- <= 0; }

/* The abort callback stops between layers: EMBER_ERR_CANCELLED, the
 * positions before the stopped batch kept, and going on from there gives
 * the same logits as never stopping. */
static void test_abort(ember_model *m) {
    ember_token toks[24];
    for (int i = 0; i < 24; i++) toks[i] = TM_FIRST_PIECE + (i * 5) % 17;
    int V = ember_n_vocab(m), left = 1000000;
    float *want = malloc(sizeof(float) * V);
    if (eval_last(m, toks, 24, 8, 1, want)) { free(want); return; }
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = 64; cp.n_batch = 8; cp.n_threads = 1;
    cp.abort_callback = abort_after; cp.abort_user_data = &left;
    ember_context *c = NULL;
    CHECK(ember_context_create(m, &cp, &c, NULL) == EMBER_OK, "context with an abort callback");
    if (!c) { free(want); return; }
    left = 2 + 1;   /* two layers per batch: stops in the second batch */
    int rc = ember_eval(c, toks, 24, NULL);
    CHECK(rc == EMBER_ERR_CANCELLED, "aborted eval: %d (%s)", rc, ember_status_string(rc));
    CHECK(ember_context_pos(c) == 8, "aborted in the second batch: pos %d, want 8", ember_context_pos(c));
    CHECK(strstr(ember_context_errmsg(c), "abort") != NULL, "message: %s", ember_context_errmsg(c));
    left = 1000000;
    rc = ember_eval(c, toks + 8, 16, NULL);
    CHECK(rc == EMBER_OK && !memcmp(ember_get_logits(c), want, sizeof(float) * V),
          "going on after an abort gives the uninterrupted logits");
    ember_context_free(c);
    free(want);
}

/* ---- context limits ------------------------------------------------------ */

static void test_context_limits(ember_model *m) {
    ember_context *c = make_ctx(m, 8, 3, 2);
    if (!c) return;
    ember_token toks[16];
    for (int i = 0; i < 16; i++) toks[i] = TM_FIRST_PIECE + i;
    int rc = ember_eval(c, toks, 9, NULL);
    CHECK(rc == EMBER_ERR_CONTEXT_FULL && ember_context_pos(c) == 0 && ember_get_logits(c) == NULL &&
          ember_context_errmsg(c)[0], "9 tokens in 8 positions: %d pos %d", rc, ember_context_pos(c));
    rc = ember_eval(c, toks, 5, NULL);
    CHECK(rc == EMBER_OK && ember_context_pos(c) == 5, "5 tokens: %d", rc);
    float saved[400];
    int V = ember_n_vocab(m);
    memcpy(saved, ember_get_logits(c), (size_t)V * sizeof(float));
    rc = ember_eval(c, toks, 4, NULL);
    CHECK(rc == EMBER_ERR_CONTEXT_FULL && ember_context_pos(c) == 5, "4 more in 3 free: %d pos %d", rc, ember_context_pos(c));
    CHECK(ember_get_logits(c) && !memcmp(saved, ember_get_logits(c), (size_t)V * sizeof(float)),
          "a refused eval changed the logits");
    ember_sampler_params sp = ember_sampler_default_params();
    sp.seed = 3;
    ember_sampler *s = NULL;
    ember_sampler_create(m, &sp, &s, NULL);
    rec r;
    memset(&r, 0, sizeof r);
    ember_generate_result res;
    rc = ember_generate(c, s, toks, 4, 10, rec_cb, &r, &res);   /* prompt does not fit */
    CHECK(rc == EMBER_ERR_CONTEXT_FULL && ember_context_pos(c) == 5 && r.calls == 0, "prompt too long for generate: %d", rc);
    rc = ember_generate(c, s, NULL, 0, 100, rec_cb, &r, &res);
    CHECK(rc == EMBER_OK && res.stop == EMBER_STOP_CONTEXT_FULL && ember_context_pos(c) == 8,
          "generate to the end: %d stop %d pos %d", rc, res.stop, ember_context_pos(c));
    CHECK(res.n_generated == r.n && res.n_generated >= 1 && res.n_generated <= 4, "n_generated %d, callbacks %d", res.n_generated, r.n);
    memset(&r, 0, sizeof r);
    rc = ember_generate(c, s, NULL, 0, 100, rec_cb, &r, &res);   /* full context: one token, then stop */
    CHECK(rc == EMBER_OK && res.stop == EMBER_STOP_CONTEXT_FULL && ember_context_pos(c) == 8 && res.n_generated <= 1,
          "generate on a full context: %d stop %d n %d", rc, res.stop, res.n_generated);
    rc = ember_eval(c, toks, 1, NULL);
    CHECK(rc == EMBER_ERR_CONTEXT_FULL && ember_context_pos(c) == 8, "eval on a full context: %d", rc);
    /* a prompt that exactly fills the context */
    ember_context_set_pos(c, 0);
    memset(&r, 0, sizeof r);
    rc = ember_generate(c, s, toks, 8, 5, rec_cb, &r, &res);
    CHECK(rc == EMBER_OK && res.stop == EMBER_STOP_CONTEXT_FULL && res.n_prompt == 8 && ember_context_pos(c) == 8,
          "prompt of exactly n_ctx: %d stop %d", rc, res.stop);
    ember_sampler_free(s);
    ember_context_free(c);

    /* Rollback: re-evaluating after set_pos gives identical logits. */
    ember_context *c1 = make_ctx(m, 32, 64, 1);
    if (!c1) return;
    float *a = malloc((size_t)V * sizeof(float)), *b = malloc((size_t)V * sizeof(float));
    for (int i = 0; i < 10; i++) {
        ember_eval(c1, &toks[i], 1, NULL);
        if (i == 8) memcpy(b, ember_get_logits(c1), (size_t)V * sizeof(float));
    }
    memcpy(a, ember_get_logits(c1), (size_t)V * sizeof(float));
    ember_eval(c1, toks + 3, 6, NULL);
    CHECK(ember_context_pos(c1) == 16, "pos 16");
    CHECK(ember_context_set_pos(c1, 9) == EMBER_OK && ember_context_pos(c1) == 9 && ember_get_logits(c1) &&
          !memcmp(b, ember_get_logits(c1), (size_t)V * sizeof(float)),
          "set_pos 9: the logits predict position 9 again");
    CHECK(!memcmp(ember_context_tokens(c1), toks, 9 * sizeof(ember_token)), "the context's tokens after set_pos");
    ember_eval(c1, &toks[9], 1, NULL);
    CHECK(!memcmp(a, ember_get_logits(c1), (size_t)V * sizeof(float)), "rollback: single-token logits differ");
    /* batched: all 10 at once vs rollback to 4 and 6 more */
    ember_context_set_pos(c1, 0);
    ember_eval(c1, toks, 10, NULL);
    memcpy(b, ember_get_logits(c1), (size_t)V * sizeof(float));
    ember_eval(c1, toks + 2, 12, NULL);
    ember_context_set_pos(c1, 4);
    ember_eval(c1, toks + 4, 6, NULL);
    float mx = 0, mx2 = 0;
    for (int i = 0; i < V; i++) {
        float d = fabsf(b[i] - ember_get_logits(c1)[i]);
        if (d > mx) mx = d;
        d = fabsf(a[i] - b[i]);
        if (d > mx2) mx2 = d;
    }
    CHECK(mx < 1e-4f, "rollback (batched): logits differ by %g", (double)mx);
    CHECK(mx2 < 1e-3f, "batched vs one-by-one logits differ by %g", (double)mx2);
    CHECK(ember_context_set_pos(c1, 0) == EMBER_OK && ember_context_pos(c1) == 0, "set_pos 0");
    free(a); free(b);
    ember_context_free(c1);
}

/* ---- bad tokens, non-finite weights ------------------------------------- */

static void test_bad_tokens(ember_model *m) {
    ember_context *c = make_ctx(m, 16, 4, 1);
    if (!c) return;
    int V = ember_n_vocab(m);
    ember_token bad[] = {-1, V, V + 1000, INT_MAX, INT_MIN};
    for (int i = 0; i < 5; i++) {
        ember_token toks[3] = {TM_BOS, TM_FIRST_PIECE, bad[i]};
        int rc = ember_eval(c, toks, 3, NULL);
        CHECK(rc == EMBER_ERR_BAD_TOKEN && ember_context_pos(c) == 0 && ember_context_errmsg(c)[0],
              "eval bad token %d: %d pos %d", bad[i], rc, ember_context_pos(c));
        char buf[16];
        CHECK(ember_token_to_piece(m, bad[i], -1, 0, buf, sizeof buf, NULL, NULL) == EMBER_ERR_BAD_TOKEN, "to_piece %d",
              bad[i]);
        CHECK(ember_detokenize(m, toks, 3, 0, buf, sizeof buf, NULL, NULL) == EMBER_ERR_BAD_TOKEN, "detokenize %d", bad[i]);
        ember_sampler *s = NULL;
        ember_sampler_create(m, NULL, &s, NULL);
        int rc2 = ember_generate(c, s, toks, 3, 4, NULL, NULL, NULL);
        CHECK(rc2 == EMBER_ERR_BAD_TOKEN && ember_context_pos(c) == 0, "generate with bad token %d: %d", bad[i], rc2);
        ember_sampler_free(s);
    }
    /* prev out of range is harmless */
    char buf[16];
    size_t len = 0;
    CHECK(ember_token_to_piece(m, TM_FIRST_PIECE + 1, INT_MIN, 0, buf, sizeof buf, &len, NULL) == EMBER_OK && len == 1,
          "to_piece with prev INT_MIN");
    ember_context_free(c);
}

/* Returns the exit status (fn's result) / signal of fn() run in a child
 * process.  Windows has no fork: fn runs in this process, where a crash
 * fails the whole test. */
static int run_child(int (*fn)(void *), void *arg, int *signaled) {
#ifdef _WIN32
    *signaled = 0;
    return fn(arg);
#else
    fflush(stdout); fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) { alarm(20); _exit(fn(arg)); }
    int st = 0;
    waitpid(pid, &st, 0);
    *signaled = WIFSIGNALED(st);
    return WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st);
#endif
}

typedef struct nan_case { ember_model *m; int top_k; float temp; int where; } nan_case;

static int sample_nan_child(void *arg) {
    nan_case *nc = arg;
    int V = ember_n_vocab(nc->m);
    float *l = malloc((size_t)V * sizeof(float));
    for (int i = 0; i < V; i++) l[i] = (float)(i % 7) * 0.1f;
    if (nc->where < 0) for (int i = 0; i < V; i++) l[i] = NAN;
    else l[nc->where] = NAN;
    ember_sampler_params sp = ember_sampler_default_params();
    sp.top_k = nc->top_k;
    sp.temperature = nc->temp;
    ember_sampler *s = NULL;
    if (ember_sampler_create(nc->m, &sp, &s, NULL) != EMBER_OK) { free(l); return 3; }
    for (int k = 0; k < 20; k++) {
        ember_token t = sample(s, l);
        if (t < 0 || t >= V) { ember_sampler_free(s); free(l); return 2; }
    }
    ember_sampler_free(s);
    free(l);
    return 0;
}

static void test_nonfinite(void) {
    for (int kind = 1; kind <= 2; kind++) {
        tm_spec sp = tm_default();
        sp.wtype = EK_F32;
        sp.nonfinite = kind;
        gb_buf img = {0};
        ember_model *m = open_spec(&sp, &img, NULL);
        if (!m) { gb_free(&img); continue; }
        ember_context *c = make_ctx(m, 32, 8, 2);
        ember_token toks[4] = {TM_BOS, 5, TM_FIRST_PIECE, TM_FIRST_PIECE + 3};
        int rc = ember_eval(c, toks, 4, NULL);
        CHECK(rc == EMBER_ERR_NONFINITE && ember_context_errmsg(c)[0], "%s weights: eval %d", kind == 1 ? "NaN" : "Inf", rc);
        ember_sampler *s = NULL;
        ember_sampler_create(m, NULL, &s, NULL);
        ember_context_set_pos(c, 0);
        rec r;
        memset(&r, 0, sizeof r);
        rc = ember_generate(c, s, toks, 4, 8, rec_cb, &r, NULL);
        CHECK(rc == EMBER_ERR_NONFINITE && r.n == 0, "%s weights: generate %d, %d tokens", kind == 1 ? "NaN" : "Inf", rc, r.n);
        ember_perplexity_result pr;
        char text[600];
        for (int i = 0; i < 599; i++) text[i] = "abcdefgh ijklmnop"[i % 17];
        text[599] = 0;
        rc = ember_perplexity(c, text, strlen(text), NULL, NULL, &pr);
        if (kind == 1) CHECK(rc == EMBER_ERR_NONFINITE, "NaN weights: perplexity %d", rc);
        else CHECK(rc == EMBER_OK && isfinite(pr.ppl), "Inf weights on an unused token: perplexity %d", rc);
        /* tokens that avoid the bad row still work with the Inf model */
        if (kind == 2) {
            ember_context_set_pos(c, 0);
            rc = ember_eval(c, toks + 2, 2, NULL);
            CHECK(rc == EMBER_OK, "Inf weights, clean tokens: %d", rc);
        }
        ember_sampler_free(s);
        ember_context_free(c);
        ember_model_free(m);
        gb_free(&img);
    }
}

/* The sampler given NaN logits (a host may pass any floats) must return a
 * token in range, not read out of bounds. Run in a child: it may crash. */
static void test_sampler_nan(ember_model *m) {
    struct { int top_k; float temp; int where; } cases[] = {
        {0, 0.0f, 10}, {0, 0.8f, 10}, {40, 0.8f, -1}, {5, 0.8f, 150}, {5, 0.8f, 200}, {40, 0.8f, 3},
    };
    int V = ember_n_vocab(m);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nan_case nc = {m, cases[i].top_k, cases[i].temp, cases[i].where};
        if (nc.where >= V) nc.where = V - 1;
        int sig = 0, st = run_child(sample_nan_child, &nc, &sig);
        CHECK(st == 0 && !sig, "sampler with NaN logits (top_k %d, temp %g, NaN at %d): %s %d", nc.top_k,
              (double)nc.temp, nc.where, sig ? "killed by signal" : "exit status", st);
    }
    /* Infinite logits: a valid token */
    ember_sampler *s = NULL;
    ember_sampler_params sp = ember_sampler_default_params();
    ember_sampler_create(m, &sp, &s, NULL);
    float *l = calloc((size_t)V, sizeof(float));
    l[17] = INFINITY;
    ember_token t = sample(s, l);
    CHECK(t >= 0 && t < V, "+Inf logit: token %d", t);
    for (int i = 0; i < V; i++) l[i] = -INFINITY;
    t = sample(s, l);
    CHECK(t >= 0 && t < V, "all -Inf logits: token %d", t);
    for (int i = 0; i < V; i++) l[i] = i == 40 ? 1e30f : -1e30f;
    t = sample(s, l);
    CHECK(t == 40, "huge logits: token %d", t);
    free(l);
    ember_sampler_free(s);
}

/* ---- allocation discipline ---------------------------------------------- */

static void test_zero_alloc(const tm_spec *spec) {
    tm_alloc ca = {0};
    ember_allocator al = tm_allocator(&ca);
    gb_buf img = {0};
    ember_model *m = open_spec(spec, &img, &al);
    if (!m) { gb_free(&img); return; }
    long after_open = ca.calls;
    CHECK(after_open > 0, "the allocator hook is used for the model");
    ember_context *c = make_ctx(m, 64, 16, 2);
    ember_sampler_params sp = ember_sampler_default_params();
    sp.allocator = &al;
    sp.repeat_penalty = 1.1f;
    ember_sampler *s = NULL;
    ember_sampler_create(m, &sp, &s, NULL);
    CHECK(ca.calls > after_open + 2, "the hook is used for context and sampler (%ld calls)", ca.calls - after_open);
    ember_token toks[40];
    int n = tokenize(m, "hello world, the state of the art is here", toks, 40);
    long base = ca.calls;
    int V = ember_n_vocab(m);
    float *all = malloc((size_t)n * V * sizeof(float));
    ember_eval(c, toks, n, NULL);                   /* prompt batch (several batches of 16) */
    ember_eval(c, toks, 1, NULL);                   /* single token */
    ember_eval(c, toks, n, all);                    /* all logits */
    ember_context_set_pos(c, 0);
    rec r;
    memset(&r, 0, sizeof r);
    ember_generate_result res;
    int rc = ember_generate(c, s, toks, n, 12, rec_cb, &r, &res);
    rc |= ember_generate(c, s, NULL, 0, 6, rec_cb, &r, &res);
    ember_token t = sample(s, ember_get_logits(c));
    ember_sampler_accept(s, t);
    ember_sampler_reset(s, 5);
    char buf[256];
    ember_detokenize(m, r.toks, r.n, 0, buf, sizeof buf, NULL, NULL);
    ember_token_to_piece(m, toks[1], toks[0], 0, buf, sizeof buf, NULL, NULL);
    CHECK(rc == EMBER_OK, "generation failed");
    CHECK(ca.calls == base, "%ld allocations while evaluating / generating / sampling", ca.calls - base);
    /* context to the end: still nothing */
    ember_context_set_pos(c, 0);
    rc = ember_generate(c, s, toks, n, 1000, rec_cb, &r, &res);
    CHECK(rc == EMBER_OK && res.stop == EMBER_STOP_CONTEXT_FULL && ca.calls == base, "generate to full: %ld allocations",
          ca.calls - base);
    free(all);
    ember_sampler_free(s);
    ember_context_free(c);
    ember_model_free(m);
    CHECK(ca.live == 0, "%ld blocks live after freeing everything", ca.live);
    gb_free(&img);
}

typedef int (*alloc_op)(void *state, const ember_allocator *al);

/* Count the allocations of op, then fail each one in turn. */
static void fail_each(const char *what, alloc_op op, void *state, tm_alloc *ca, const ember_allocator *al) {
    long live0 = ca->live;
    ca->calls = 0; ca->fail_at = 0; ca->failed = 0;
    int rc = op(state, al);
    long total = ca->calls;
    CHECK(rc == EMBER_OK && total > 0, "%s: %d with %ld allocations", what, rc, total);
    long cleanup = ca->live - live0;   /* blocks the successful op left (freed by op on the next call) */
    (void)cleanup;
    int bad = 0;
    for (long n = 1; n <= total; n++) {
        ca->calls = 0; ca->fail_at = n; ca->failed = 0;
        long before = ca->live;
        rc = op(state, al);
        n_alloc_points++;
        if (ca->failed == 0) continue;   /* took another path */
        if (rc == EMBER_OK) continue;    /* tolerated */
        if (rc != EMBER_ERR_NOMEM && bad++ < 5) CHECK(0, "%s: allocation %ld of %ld failed -> %d (%s)", what, n, total, rc, ember_status_string(rc));
        if (ca->live != before && bad++ < 5) CHECK(0, "%s: allocation %ld of %ld failed -> %ld blocks leaked", what, n, total, ca->live - before);
    }
    ca->fail_at = 0;
    CHECK(bad == 0, "%s: %d bad failure points", what, bad);
    printf("%-28s %ld allocation points\n", what, total);
}

typedef struct op_state {
    const gb_buf *img;
    ember_model *m;          /* for ops on an open model */
    ember_context *c;
    const char *text;
    size_t len;
} op_state;

static int op_open(void *st, const ember_allocator *al) {
    op_state *o = st;
    ember_model_params p = ember_model_default_params();
    p.allocator = al;
    ember_model *m = NULL;
    ember_error err;
    err.message[0] = 0;
    int rc = ember_model_open_memory(o->img->p, o->img->n, &p, &m, &err);
    if (rc != EMBER_OK && (!err.message[0] || m)) return -999;
    ember_model_free(m);
    return rc;
}

static int op_context(void *st, const ember_allocator *al) {
    op_state *o = st;
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = 32; cp.n_batch = 8; cp.n_threads = 3; cp.allocator = al;
    ember_context *c = NULL;
    ember_error err;
    err.message[0] = 0;
    int rc = ember_context_create(o->m, &cp, &c, &err);
    if (rc != EMBER_OK && (!err.message[0] || c)) return -999;
    if (rc == EMBER_OK) {
        ember_token t[2] = {TM_BOS, TM_FIRST_PIECE};
        if (ember_eval(c, t, 2, NULL) != EMBER_OK) rc = -998;
    }
    ember_context_free(c);
    return rc;
}

static int op_sampler(void *st, const ember_allocator *al) {
    op_state *o = st;
    ember_sampler_params sp = ember_sampler_default_params();
    sp.allocator = al;
    ember_sampler *s = NULL;
    int rc = ember_sampler_create(o->m, &sp, &s, NULL);
    if (rc != EMBER_OK && s) return -999;
    ember_sampler_free(s);
    return rc;
}

static int op_tokenize(void *st, const ember_allocator *al) {
    op_state *o = st;
    (void)al;
    ember_token toks[4096];
    size_t n = 0;
    int rc = ember_tokenize(o->m, o->text, o->len, EMBER_TOKENIZE_ADD_BOS | EMBER_TOKENIZE_SPECIAL, toks, 4096, &n, NULL);
    if (rc == EMBER_OK && n < 10) return -999;
    return rc;
}

static int op_perplexity(void *st, const ember_allocator *al) {
    op_state *o = st;
    (void)al;
    ember_perplexity_result pr;
    int rc = ember_perplexity(o->c, o->text, o->len, NULL, NULL, &pr);
    if (rc == EMBER_OK && !(pr.ppl > 1)) return -999;
    return rc;
}

static int op_generate_text(void *st, const ember_allocator *al) {
    op_state *o = st;
    (void)al;
    ember_sampler *s = NULL;
    ember_sampler_create(o->m, NULL, &s, NULL);
    ember_context_set_pos(o->c, 0);
    int rc = ember_generate_text(o->c, s, "hello world", 4, NULL, NULL, NULL);
    ember_sampler_free(s);
    return rc;
}

static void test_alloc_failures(const gb_buf *img) {
    tm_alloc ca = {0};
    ember_allocator al = tm_allocator(&ca);
    op_state o = {img, NULL, NULL, NULL, 0};
    fail_each("model open (memory)", op_open, &o, &ca, &al);
    CHECK(ca.live == 0, "model open: %ld live", ca.live);

    /* context / sampler on a libc model */
    ember_model *m = NULL;
    ember_model_open_memory(img->p, img->n, NULL, &m, NULL);
    o.m = m;
    fail_each("context create", op_context, &o, &ca, &al);
    fail_each("sampler create", op_sampler, &o, &ca, &al);
    CHECK(ca.live == 0, "context/sampler: %ld live", ca.live);
    ember_model_free(m);

    /* tokenize and perplexity: the model's allocator */
    ca.calls = 0;
    ember_model_params p = ember_model_default_params();
    p.allocator = &al;
    ember_model_open_memory(img->p, img->n, &p, &m, NULL);
    o.m = m;
    static char text[3000];
    size_t len = 0;
    const char *words[] = {"hello ", "world", ", the ", "st\xc3\xa9", "<s>", "\xe2\x82\xac ", "zq", "\xf0\x9f\x98\x80", "de ", "\xff"};
    for (int i = 0; len < 2900; i++) {
        const char *w = words[(i * 7 + i / 3) % 10];
        memcpy(text + len, w, strlen(w));
        len += strlen(w);
    }
    o.text = text; o.len = len;
    fail_each("tokenize", op_tokenize, &o, &ca, &al);
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = 64; cp.n_batch = 16; cp.n_threads = 1;
    ember_context *c = NULL;
    ember_context_create(m, &cp, &c, NULL);
    o.c = c;
    fail_each("perplexity", op_perplexity, &o, &ca, &al);
    fail_each("generate_text", op_generate_text, &o, &ca, &al);
    ember_context_free(c);
    ember_model_free(m);
    CHECK(ca.live == 0, "tokenize/perplexity: %ld live", ca.live);
}

/* ---- determinism --------------------------------------------------------- */

static void run_gen(ember_model *m, int n_threads, int n_batch, uint64_t seed, float temp, rec *r, float *logits_out) {
    memset(r, 0, sizeof *r);
    ember_context *c = make_ctx(m, 96, n_batch, n_threads);
    ember_sampler_params sp = ember_sampler_default_params();
    sp.seed = seed;
    sp.temperature = temp;
    sp.repeat_penalty = 1.05f;
    ember_sampler *s = NULL;
    ember_sampler_create(m, &sp, &s, NULL);
    ember_token toks[64];
    int n = tokenize(m, "hello world, the state of the art. de st", toks, 64);
    if (logits_out) {
        ember_eval(c, toks, n, NULL);
        memcpy(logits_out, ember_get_logits(c), (size_t)ember_n_vocab(m) * sizeof(float));
        ember_context_set_pos(c, 0);
    }
    ember_generate_result res;
    int rc = ember_generate(c, s, toks, n, 32, rec_cb, r, &res);
    CHECK(rc == EMBER_OK, "generate: %d", rc);
    ember_sampler_free(s);
    ember_context_free(c);
}

static void test_determinism(ember_model *m) {
    int V = ember_n_vocab(m);
    float *l0 = malloc((size_t)V * sizeof(float)), *l1 = malloc((size_t)V * sizeof(float));
    rec *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    run_gen(m, 1, 64, 1234, 0.9f, a, l0);
    CHECK(a->n > 5, "reference run generated %d tokens", a->n);
    const int threads[] = {1, 2, 3, 1, 2, 3}, batches[] = {64, 64, 64, 1, 1, 7};
    for (int i = 0; i < 6; i++) {
        run_gen(m, threads[i], batches[i], 1234, 0.9f, b, l1);
        CHECK(a->n == b->n && !memcmp(a->toks, b->toks, (size_t)a->n * sizeof(ember_token)),
              "threads %d batch %d: different tokens", threads[i], batches[i]);
        float mx = 0;
        for (int k = 0; k < V; k++) if (fabsf(l0[k] - l1[k]) > mx) mx = fabsf(l0[k] - l1[k]);
        if (batches[i] == 64) CHECK(mx == 0, "threads %d: logits differ by %g (expected bit-identical)", threads[i], (double)mx);
        else CHECK(mx < 1e-3f, "batch %d: logits differ by %g", batches[i], (double)mx);
    }
    /* another seed: different choices (32 tokens at temperature 1.5) */
    run_gen(m, 1, 64, 99, 1.5f, a, NULL);
    run_gen(m, 1, 64, 100, 1.5f, b, NULL);
    CHECK(a->n != b->n || memcmp(a->toks, b->toks, (size_t)a->n * sizeof(ember_token)), "seeds 99 and 100 chose the same");
    /* sampler reset */
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 1.5f; sp.top_k = 0; sp.top_p = 1; sp.min_p = 0; sp.seed = 7; sp.repeat_penalty = 1.3f;
    ember_sampler *s1 = NULL, *s2 = NULL;
    ember_sampler_create(m, &sp, &s1, NULL);
    ember_sampler_create(m, &sp, &s2, NULL);
    ember_token x[40], y[40], z[40];
    for (int i = 0; i < 40; i++) { x[i] = sample(s1, l0); ember_sampler_accept(s1, x[i]); }
    for (int i = 0; i < 40; i++) { y[i] = sample(s2, l0); ember_sampler_accept(s2, y[i]); }
    CHECK(!memcmp(x, y, sizeof x), "two samplers with one seed differ");
    ember_sampler_reset(s1, 7);
    for (int i = 0; i < 40; i++) { z[i] = sample(s1, l0); ember_sampler_accept(s1, z[i]); }
    CHECK(!memcmp(x, z, sizeof x), "reset(seed) does not replay (history not forgotten or rng not reseeded)");
    ember_sampler_reset(s1, 8);
    for (int i = 0; i < 40; i++) { z[i] = sample(s1, l0); ember_sampler_accept(s1, z[i]); }
    CHECK(memcmp(x, z, sizeof x), "reset(8) replays seed 7");
    /* greedy picks the argmax */
    sp = ember_sampler_default_params();
    sp.temperature = 0;
    ember_sampler *g = NULL;
    ember_sampler_create(m, &sp, &g, NULL);
    int best = 0;
    for (int i = 1; i < V; i++) if (l0[i] > l0[best]) best = i;
    CHECK(sample(g, l0) == best, "greedy != argmax");
    ember_sampler_free(g);
    ember_sampler_free(s1);
    ember_sampler_free(s2);
    free(a); free(b); free(l0); free(l1);
}

/* ---- streaming ------------------------------------------------------------- */

static void test_streaming(void) {
    tm_spec sp = tm_default();
    sp.mode = TM_CHAIN;
    sp.wtype = EK_F32;
    sp.n_layer = 1;
    int32_t chain[32];
    int n = 0;
    chain[n++] = TM_BOS;
    chain[n++] = tm_piece_id(&sp, "\xe2\x96\x81hello");
    chain[n++] = tm_piece_id(&sp, "\xe2\x96\x81world");
    chain[n++] = TM_BYTE(0xE2); chain[n++] = TM_BYTE(0x82); chain[n++] = TM_BYTE(0xAC);
    chain[n++] = tm_piece_id(&sp, "\xc3\xa9");
    chain[n++] = TM_BYTE(0xF0); chain[n++] = TM_BYTE(0x9F); chain[n++] = TM_BYTE(0x98); chain[n++] = TM_BYTE(0x80);
    chain[n++] = tm_piece_id(&sp, "!");
    chain[n++] = TM_BYTE(0xE6);
    chain[n++] = tm_piece_id(&sp, "\xe6\x97\xa5\xe6\x9c\xac");
    chain[n++] = tm_piece_id(&sp, "\xe2\x96\x81\xc3\xa9");
    chain[n++] = TM_BYTE(0xC3);
    chain[n++] = TM_EOS;
    sp.chain = chain;
    sp.chain_len = n;
    gb_buf img = {0};
    ember_model *m = open_spec(&sp, &img, NULL);
    if (!m) { gb_free(&img); return; }
    static const char *const want_chunks[] = {
        "hello", " world", "", "", "\xe2\x82\xac", "\xc3\xa9", "", "", "", "\xf0\x9f\x98\x80", "!", "",
        "\xe6\xe6\x97\xa5\xe6\x9c\xac", " \xc3\xa9", "", "\xc3",
    };
    const char *want_text = "hello world\xe2\x82\xac\xc3\xa9\xf0\x9f\x98\x80!\xe6\xe6\x97\xa5\xe6\x9c\xac \xc3\xa9\xc3";
    for (int variant = 0; variant < 4; variant++) {
        ember_context *c = make_ctx(m, 64, variant == 3 ? 1 : 8, 1 + variant % 2);
        ember_sampler_params spp = ember_sampler_default_params();
        spp.temperature = variant == 0 ? 0.0f : 1.0f;
        spp.seed = (uint64_t)variant;
        ember_sampler *s = NULL;
        ember_sampler_create(m, &spp, &s, NULL);
        rec r;
        memset(&r, 0, sizeof r);
        ember_generate_result res;
        ember_token bos = TM_BOS;
        int rc = ember_generate(c, s, &bos, 1, 100, rec_cb, &r, &res);
        CHECK(rc == EMBER_OK && res.stop == EMBER_STOP_EOG, "chain model: %d stop %d", rc, res.stop);
        CHECK(res.n_generated == n - 2 && r.n == n - 2, "chain model generated %d tokens (%d callbacks), expected %d",
              res.n_generated, r.n, n - 2);
        int same = r.n == n - 2;
        for (int i = 0; i < r.n && same; i++) same = r.toks[i] == chain[i + 1];
        CHECK(same, "chain model did not follow the chain (variant %d)", variant);
        CHECK(r.flushes == 1 && r.after_flush == 0, "final flush: %d flushes, %d calls after", r.flushes, r.after_flush);
        CHECK(r.bad_split == 0, "%d chunks ended inside a UTF-8 character", r.bad_split);
        CHECK(r.len == strlen(want_text) && !memcmp(r.text, want_text, r.len), "streamed text '%.*s'", (int)r.len, r.text);
        int nc = (int)(sizeof want_chunks / sizeof want_chunks[0]);
        CHECK(r.n_chunks == nc, "%d chunks, expected %d", r.n_chunks, nc);
        for (int i = 0; i < nc && i < r.n_chunks; i++)
            CHECK(!strcmp(r.chunks[i], want_chunks[i]), "chunk %d '%s', expected '%s'", i, r.chunks[i], want_chunks[i]);
        /* concatenation == detokenize(prompt + generated) - detokenize(prompt) */
        ember_token all[64];
        all[0] = TM_BOS;
        memcpy(all + 1, r.toks, (size_t)r.n * sizeof(ember_token));
        char buf[512];
        size_t len = 0;
        CHECK(ember_detokenize(m, all, r.n + 1, 0, buf, sizeof buf, &len, NULL) == EMBER_OK && len == r.len &&
              !memcmp(buf, r.text, r.len), "detokenize '%s' != streamed", buf);
        /* stop by length in the middle of a character: the held byte is flushed */
        ember_context_set_pos(c, 0);
        memset(&r, 0, sizeof r);
        rc = ember_generate(c, s, &bos, 1, 4, rec_cb, &r, &res);
        CHECK(rc == EMBER_OK && res.stop == EMBER_STOP_LENGTH && r.flushes == 1 && r.len == 13 &&
              !memcmp(r.text, "hello world\xe2\x82", 13), "length stop mid-character: '%.*s'", (int)r.len, r.text);
        /* stop by the callback in the middle of a character */
        ember_context_set_pos(c, 0);
        memset(&r, 0, sizeof r);
        r.stop_at = 8;
        rc = ember_generate(c, s, &bos, 1, 100, rec_cb, &r, &res);
        CHECK(rc == EMBER_OK && res.stop == EMBER_STOP_CALLBACK && res.n_generated == 8 && r.flushes == 1 &&
              ember_context_pos(c) == 9, "callback stop: stop %d n %d flush %d pos %d", res.stop, res.n_generated,
              r.flushes, ember_context_pos(c));
        /* continuing after a prompt: the space of the first word stays */
        ember_context_set_pos(c, 0);
        memset(&r, 0, sizeof r);
        ember_token pr[2] = {TM_BOS, chain[1]};
        rc = ember_generate(c, s, pr, 2, 1, rec_cb, &r, &res);
        CHECK(rc == EMBER_OK && r.len == 6 && !memcmp(r.text, " world", 6), "continuation '%.*s'", (int)r.len, r.text);
        /* context full in the middle of a character */
        ember_context_free(c);
        c = make_ctx(m, 4, 8, 1);
        memset(&r, 0, sizeof r);
        rc = ember_generate(c, s, &bos, 1, 100, rec_cb, &r, &res);
        CHECK(rc == EMBER_OK && res.stop == EMBER_STOP_CONTEXT_FULL && r.flushes == 1 &&
              r.len == 13 && !memcmp(r.text, "hello world\xe2\x82", 13), "context full mid-character: stop %d '%.*s'",
              res.stop, (int)r.len, r.text);
        ember_sampler_free(s);
        ember_context_free(c);
    }
    /* generate_text with "" = BOS only */
    ember_context *c = make_ctx(m, 64, 8, 1);
    ember_sampler *s = NULL;
    ember_sampler_params spp = ember_sampler_default_params();
    spp.temperature = 0;
    ember_sampler_create(m, &spp, &s, NULL);
    rec r;
    memset(&r, 0, sizeof r);
    int rc = ember_generate_text(c, s, "", 3, rec_cb, &r, NULL);
    CHECK(rc == EMBER_OK && r.len == 12 && !memcmp(r.text, "hello world\xe2", 12) && r.flushes == 1, "generate_text(\"\"): '%.*s'", (int)r.len, r.text);
    ember_sampler_free(s);
    ember_context_free(c);
    ember_model_free(m);
    gb_free(&img);
}

/* ---- perplexity by hand ---------------------------------------------------- */

typedef struct prog { int calls, last_chunk, n_chunks, cancel_at; } prog;
static int prog_cb(void *ud, int chunk, int n_chunks, double ppl) {
    prog *p = ud;
    p->calls++;
    p->last_chunk = chunk;
    p->n_chunks = n_chunks;
    (void)ppl;
    return p->cancel_at && chunk >= p->cancel_at;
}

static void test_perplexity(ember_model *m) {
    static char text[4000];
    size_t len = 0;
    const char *words[] = {"hello ", "world", ", the ", "state ", "of ", "art. ", "de ", "st\xc3\xa9 ", "\xe2\x82\xac", "zq "};
    for (int i = 0; len < 1000; i++) {
        const char *w = words[(i * 7 + i / 3) % 10];
        memcpy(text + len, w, strlen(w));
        len += strlen(w);
    }
    const int n_ctx = 16;
    ember_token *toks = malloc(4000 * sizeof *toks);
    size_t n_toks = 0;
    ember_tokenize(m, text, len, EMBER_TOKENIZE_ADD_BOS, toks, 4000, &n_toks, NULL);
    int n = (int)n_toks;
    int V = ember_n_vocab(m);
    float *logits = malloc((size_t)n_ctx * V * sizeof(float));
    ember_context *ref = make_ctx(m, n_ctx, 64, 1);
    int n_chunks = n / n_ctx, first = n_ctx / 2;
    double nll = 0;
    int count = 0;
    for (int c = 0; c < n_chunks; c++) {
        ember_token chunk[16];
        memcpy(chunk, toks + c * n_ctx, sizeof chunk);
        chunk[0] = TM_BOS;
        ember_context_set_pos(ref, 0);
        CHECK(ember_eval(ref, chunk, n_ctx, logits) == EMBER_OK, "ref eval");
        for (int j = first; j < n_ctx - 1; j++) {
            const float *l = logits + (size_t)j * V;
            double mx = l[0], sum = 0;
            for (int v = 1; v < V; v++) if (l[v] > mx) mx = l[v];
            for (int v = 0; v < V; v++) sum += exp(l[v] - mx);
            nll += log(sum) + mx - l[toks[c * n_ctx + j + 1]];
            count++;
        }
    }
    double want = exp(nll / count);
    for (int nb = 1; nb <= 16; nb += 5) {
        ember_context *c = make_ctx(m, n_ctx, nb, 2);
        ember_eval(c, toks, 3, NULL);   /* perplexity clears the cache itself */
        ember_perplexity_result pr;
        prog pg = {0, 0, 0, 0};
        int rc = ember_perplexity(c, text, len, prog_cb, &pg, &pr);
        CHECK(rc == EMBER_OK, "perplexity: %d %s", rc, ember_context_errmsg(c));
        CHECK(fabs(pr.ppl - want) < 1e-4 * want, "n_batch %d: ppl %.8f, by hand %.8f", nb, pr.ppl, want);
        CHECK(fabs(pr.mean_nll - nll / count) < 1e-4, "mean nll %.8f vs %.8f", pr.mean_nll, nll / count);
        CHECK(pr.n_chunks == n_chunks && pr.n_scored == count, "chunks %d/%d scored %d/%d", pr.n_chunks, n_chunks,
              pr.n_scored, count);
        CHECK(pr.ppl_err > 0 && pr.ppl_err < pr.ppl, "ppl_err %g", pr.ppl_err);
        CHECK(pg.calls == n_chunks && pg.last_chunk == n_chunks && pg.n_chunks == n_chunks, "progress calls %d", pg.calls);
        CHECK(ember_context_pos(c) == 0, "perplexity leaves pos %d", ember_context_pos(c));
        pg.calls = 0; pg.cancel_at = 2;
        rc = ember_perplexity(c, text, len, prog_cb, &pg, &pr);
        CHECK(rc == EMBER_ERR_CANCELLED && pg.calls == 2, "cancel: %d after %d calls", rc, pg.calls);
        ember_context_free(c);
    }
    printf("perplexity by hand: %.6f over %d chunks, %d tokens scored\n", want, n_chunks, count);
    /* exactly 2 * n_ctx - 1 tokens: too short; tiny contexts: an error or a finite number */
    ember_context *c = make_ctx(m, n_ctx, 8, 1);
    ember_perplexity_result pr;
    char shorttext[64];
    int rc = ember_perplexity(c, "hello", 5, NULL, NULL, &pr);
    CHECK(rc == EMBER_ERR_TOO_SHORT, "short: %d", rc);
    (void)shorttext;
    ember_context_free(c);
    for (int tiny = 1; tiny <= 3; tiny++) {
        c = make_ctx(m, tiny, 8, 1);
        memset(&pr, 0, sizeof pr);
        rc = ember_perplexity(c, text, len, NULL, NULL, &pr);
        CHECK(rc == (tiny < 3 ? EMBER_ERR_INVALID_ARG : EMBER_OK) && (rc != EMBER_OK || (isfinite(pr.ppl) && pr.n_scored > 0)), "n_ctx %d: status %d ppl %g scored %d", tiny, rc,
              pr.ppl, pr.n_scored);
        ember_context_free(c);
    }
    ember_context_free(ref);
    free(logits);
    free(toks);
}

int main(void) {
    test_status_strings();
    tm_spec spec = tm_default();
    gb_buf img = {0};
    ember_model *m = open_spec(&spec, &img, NULL);
    if (!m) return test_summary("test_api");
    test_null_args(m);
    test_files(&img);
    test_packed_load();
    test_families_eval();
    test_abort(m);
    test_eval_multi();
    test_logit_bias(m);
    test_add_eos();
    test_stop_strings(m);
    test_state(m);
    test_context_limits(m);
    test_bad_tokens(m);
    test_nonfinite();
    test_sampler_nan(m);
    test_zero_alloc(&spec);
    test_alloc_failures(&img);
    test_determinism(m);
    test_streaming();
    test_perplexity(m);
    ember_model_free(m);
    gb_free(&img);
    printf("allocation failure points: %d\n", n_alloc_points);
    return test_summary("test_api");
}
