/* test_errors.c - the error contract of ember.h, function by function:
 * every text or array output follows one snprintf-like convention (a query
 * with NULL/0, an exact fit, one byte short: cut, NUL-terminated,
 * EMBER_ERR_BUFFER_TOO_SMALL, the full length reported); every failure
 * leaves a message naming the problem where the caller can read it, and a
 * success clears it (never a stale message); NULL handles fail with
 * EMBER_ERR_INVALID_ARG and a message, never a crash.  The expected texts
 * come from the tiny model's vocabulary as tm_build writes it
 * (test_hostile_model.c), not from ember. */
#define TM_NO_MAIN
#include "test_hostile_model.c"

#include <math.h>

/* pieces of the tiny vocabulary (tm_pieces) */
#define PIECE_A (TM_FIRST_PIECE + 1)        /* "a" */
#define PIECE_B (TM_FIRST_PIECE + 2)        /* "b" */
#define PIECE_WORLD (TM_FIRST_PIECE + 39)   /* "▁world" */
#define PIECE_HELLO (TM_FIRST_PIECE + 46)   /* "▁hello" */

static const char *const junk = "an older message that must not survive";

/* An ember_error holding a stale failure, to see that a call rewrites it. */
static void dirty(ember_error *err) {
    err->code = EMBER_ERR_CORRUPT;
    snprintf(err->message, sizeof err->message, "%s", junk);
}

/* err describes a failure rc: same code, a message of its own. */
static int names_failure(const ember_error *err, ember_status rc) {
    return err->code == rc && err->message[0] && strcmp(err->message, junk) != 0;
}

static int is_cleared(const ember_error *err) { return err->code == EMBER_OK && err->message[0] == 0; }

/* ---- the text convention ---------------------------------------------------- */

/* One text output function bound to its arguments. */
typedef struct text_call {
    const char *what;
    ember_status (*fn)(const struct text_call *c, char *buf, size_t size, size_t *out_len, ember_error *err);
    ember_model *m;
    const void *arg;
} text_call;

/* Check f against its expected text: a query with NULL/0, the exact fit,
 * one byte short, a 1-byte buffer, and NULL out_len/err. */
static void check_text(const text_call *c, const char *want) {
    const size_t n = strlen(want);
    char buf[512];
    size_t len = 12345;
    ember_error err;

    dirty(&err);
    ember_status rc = c->fn(c, NULL, 0, &len, &err);
    CHECK(rc == EMBER_ERR_BUFFER_TOO_SMALL && len == n && names_failure(&err, rc),
          "%s: query: rc %d len %zu (want %zu) '%s'", c->what, rc, len, n, err.message);
    char need[32];
    snprintf(need, sizeof need, "%zu", n + 1);
    CHECK(strstr(err.message, need) != NULL, "%s: the message says how much is needed (%s): '%s'", c->what, need,
          err.message);
    CHECK(c->fn(c, NULL, 0, NULL, NULL) == EMBER_ERR_BUFFER_TOO_SMALL, "%s: query without out_len or err", c->what);

    /* exact fit: all of it, a NUL, nothing beyond */
    memset(buf, '#', sizeof buf);
    dirty(&err);
    len = 12345;
    rc = c->fn(c, buf, n + 1, &len, &err);
    CHECK(rc == EMBER_OK && len == n && !memcmp(buf, want, n) && buf[n] == 0 && buf[n + 1] == '#' && is_cleared(&err),
          "%s: exact fit: rc %d len %zu '%.*s' err '%s'", c->what, rc, len, (int)n, buf, err.message);

    /* one byte short: cut, NUL-terminated, the full length reported */
    if (n > 0) {
        memset(buf, '#', sizeof buf);
        dirty(&err);
        len = 12345;
        rc = c->fn(c, buf, n, &len, &err);
        CHECK(rc == EMBER_ERR_BUFFER_TOO_SMALL && len == n && !memcmp(buf, want, n - 1) && buf[n - 1] == 0 &&
              buf[n] == '#' && names_failure(&err, rc),
              "%s: one byte short: rc %d len %zu '%s'", c->what, rc, len, buf);
        memset(buf, '#', sizeof buf);
        rc = c->fn(c, buf, 1, &len, NULL);
        CHECK(rc == EMBER_ERR_BUFFER_TOO_SMALL && buf[0] == 0 && buf[1] == '#' && len == n,
              "%s: a 1-byte buffer holds the NUL only: rc %d", c->what, rc);
    }
    /* plenty of room, no out_len */
    memset(buf, '#', sizeof buf);
    rc = c->fn(c, buf, sizeof buf, NULL, NULL);
    CHECK(rc == EMBER_OK && !strcmp(buf, want), "%s: large buffer: rc %d '%s'", c->what, rc, buf);
}

static ember_status call_meta(const text_call *c, char *buf, size_t size, size_t *out_len, ember_error *err) {
    return ember_model_meta(c->m, (const char *)c->arg, buf, size, out_len, err);
}

static ember_status call_piece(const text_call *c, char *buf, size_t size, size_t *out_len, ember_error *err) {
    const ember_token *t = (const ember_token *)c->arg;   /* token, prev */
    return ember_token_to_piece(c->m, t[0], t[1], 0, buf, size, out_len, err);
}

static ember_status call_special(const text_call *c, char *buf, size_t size, size_t *out_len, ember_error *err) {
    (void)c->arg;
    return ember_token_to_piece(c->m, TM_EOS, -1, EMBER_TOKENIZE_SPECIAL, buf, size, out_len, err);
}

static ember_status call_detok(const text_call *c, char *buf, size_t size, size_t *out_len, ember_error *err) {
    static const ember_token toks[] = {TM_BOS, PIECE_HELLO, PIECE_WORLD, TM_EOS};
    (void)c->arg;
    return ember_detokenize(c->m, toks, 4, 0, buf, size, out_len, err);
}

static ember_status call_chat(const text_call *c, char *buf, size_t size, size_t *out_len, ember_error *err) {
    ember_chat_params p = ember_chat_default_params();
    p.template_name = "chatml";
    ember_chat_message msg = {"user", "hi"};
    (void)c->arg;
    return ember_chat_apply(c->m, &p, &msg, 1, buf, size, out_len, err);
}

static ember_status call_schema(const text_call *c, char *buf, size_t size, size_t *out_len, ember_error *err) {
    const char *schema = (const char *)c->arg;
    return ember_json_schema_to_gbnf(schema, strlen(schema), buf, size, out_len, err);
}

static void test_text_outputs(ember_model *m) {
    text_call name = {"meta general.name", call_meta, m, "general.name"};
    check_text(&name, "tiny test model");
    text_call layers = {"meta llama.block_count", call_meta, m, "llama.block_count"};
    check_text(&layers, "2");
    text_call embd = {"meta llama.embedding_length", call_meta, m, "llama.embedding_length"};
    check_text(&embd, "64");

    static const ember_token mid[2] = {PIECE_HELLO, PIECE_A};     /* after "a": the space stays */
    text_call piece = {"token_to_piece mid-text", call_piece, m, mid};
    check_text(&piece, " hello");
    static const ember_token first[2] = {PIECE_HELLO, -1};        /* at the start: SentencePiece drops it */
    text_call piece0 = {"token_to_piece first", call_piece, m, first};
    check_text(&piece0, "hello");
    text_call special = {"token_to_piece EOS with SPECIAL", call_special, m, NULL};
    check_text(&special, "</s>");
    text_call detok = {"detokenize", call_detok, m, NULL};
    check_text(&detok, "hello world");
    text_call chat = {"chat_apply chatml", call_chat, m, NULL};
    check_text(&chat, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");

    /* the grammar text: its content is test_grammar's business; here its
     * length must be the same however it is asked for */
    const char *schema = "{\"type\": \"boolean\"}";
    char gbnf[512];
    size_t n = 0;
    CHECK(ember_json_schema_to_gbnf(schema, strlen(schema), gbnf, sizeof gbnf, &n, NULL) == EMBER_OK &&
          n == strlen(gbnf) && n > 10 && strstr(gbnf, "root ::="), "schema to gbnf: %zu '%s'", n, gbnf);
    text_call sch = {"json_schema_to_gbnf", call_schema, m, schema};
    check_text(&sch, gbnf);

    /* a missing key: EMBER_ERR_MISSING naming it, buf = "", length 0 */
    char buf[16] = "xxxx";
    size_t len = 99;
    ember_error err;
    dirty(&err);
    ember_status rc = ember_model_meta(m, "no.such.key", buf, sizeof buf, &len, &err);
    CHECK(rc == EMBER_ERR_MISSING && buf[0] == 0 && len == 0 && names_failure(&err, rc) &&
          strstr(err.message, "no.such.key"), "meta of a missing key: %d '%s'", rc, err.message);
}

/* ---- the array convention: ember_tokenize ------------------------------------ */

static void test_tokenize_convention(ember_model *m) {
    /* " hello world" in the tiny SentencePiece vocabulary: BOS, ▁hello, ▁world */
    const ember_token want[3] = {TM_BOS, PIECE_HELLO, PIECE_WORLD};
    ember_token out[8];
    size_t n = 12345;
    ember_error err;
    dirty(&err);
    ember_status rc = ember_tokenize(m, "hello world", 11, EMBER_TOKENIZE_ADD_BOS, NULL, 0, &n, &err);
    CHECK(rc == EMBER_ERR_BUFFER_TOO_SMALL && n == 3 && names_failure(&err, rc), "tokenize query: %d n %zu", rc, n);
    for (int i = 0; i < 8; i++) out[i] = -77;
    dirty(&err);
    rc = ember_tokenize(m, "hello world", 11, EMBER_TOKENIZE_ADD_BOS, out, 3, &n, &err);
    CHECK(rc == EMBER_OK && n == 3 && !memcmp(out, want, sizeof want) && out[3] == -77 && is_cleared(&err),
          "tokenize exact fit: %d n %zu [%d %d %d]", rc, n, out[0], out[1], out[2]);
    for (int i = 0; i < 8; i++) out[i] = -77;
    dirty(&err);
    rc = ember_tokenize(m, "hello world", 11, EMBER_TOKENIZE_ADD_BOS, out, 2, &n, &err);
    CHECK(rc == EMBER_ERR_BUFFER_TOO_SMALL && n == 3 && out[2] == -77 && names_failure(&err, rc) &&
          strstr(err.message, "3"), "tokenize one short: %d n %zu '%s'", rc, n, err.message);
    CHECK(ember_tokenize(m, "hello world", 11, EMBER_TOKENIZE_ADD_BOS, out, 8, NULL, NULL) == EMBER_OK &&
          !memcmp(out, want, sizeof want), "tokenize without n_out or err");
    /* nothing to write: an empty text without BOS fits in 0 */
    CHECK(ember_tokenize(m, "", 0, 0, NULL, 0, &n, &err) == EMBER_OK && n == 0 && is_cleared(&err), "empty text");
}

/* ---- bytes: ember_state_save; ember_step's fixed-size text ----------------- */

static void test_state_and_step(ember_model *m) {
    ember_context *c = make_ctx(m, 32, 8, 1);
    ember_sampler *s = NULL;
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0;
    CHECK(ember_sampler_create(m, &sp, &s, NULL) == EMBER_OK, "sampler");
    if (!c || !s) { ember_sampler_free(s); ember_context_free(c); return; }
    const ember_token prompt[3] = {TM_BOS, PIECE_HELLO, PIECE_WORLD};
    CHECK(ember_eval(c, prompt, 3, NULL) == EMBER_OK, "eval");
    const size_t need = ember_state_size(c, s);
    unsigned char *buf = (unsigned char *)malloc(need + 8);
    size_t written = 0;
    CHECK(ember_state_save(c, s, NULL, 0, &written) == EMBER_ERR_BUFFER_TOO_SMALL && written == need &&
          ember_context_errmsg(c)[0], "state query: %zu of %zu", written, need);
    memset(buf, 0xAB, need + 8);
    CHECK(ember_state_save(c, s, buf, need - 1, &written) == EMBER_ERR_BUFFER_TOO_SMALL && written == need &&
          strstr(ember_context_errmsg(c), "bytes"), "state one short: '%s'", ember_context_errmsg(c));
    int untouched = 1;
    for (size_t i = 0; i < need + 8; i++) untouched &= buf[i] == 0xAB;
    CHECK(untouched, "a state that does not fit writes nothing");
    CHECK(ember_state_save(c, s, buf, need, &written) == EMBER_OK && written == need && buf[need] == 0xAB &&
          ember_context_errmsg(c)[0] == 0, "state exact fit");
    CHECK(ember_state_load(c, s, buf, need) == EMBER_OK, "the saved state loads");
    free(buf);

    /* ember_step: a buffer smaller than ember_step_text_size fails before
     * anything happens; the exact size works and ends the text with a NUL */
    const size_t ts = ember_step_text_size(c);
    char *text = (char *)malloc(ts + 1);
    ember_step_result r;
    const int pos = ember_context_pos(c);
    CHECK(ember_step(c, s, text, ts - 1, &r) == EMBER_ERR_BUFFER_TOO_SMALL && ember_context_pos(c) == pos &&
          strstr(ember_context_errmsg(c), "ember_step_text_size"), "step one short: '%s'", ember_context_errmsg(c));
    memset(text, '#', ts + 1);
    ember_status rc = ember_step(c, s, text, ts, &r);
    CHECK(rc == EMBER_OK && r.len < ts && text[r.len] == 0 && text[ts] == '#' && ember_context_errmsg(c)[0] == 0,
          "step exact size: %d len %zu '%s'", rc, r.len, ember_context_errmsg(c));
    free(text);
    ember_sampler_free(s);
    ember_context_free(c);
}

/* ---- never a stale message -------------------------------------------------- */

static void test_context_messages(ember_model *m) {
    ember_context *c = make_ctx(m, 16, 4, 1), *d = make_ctx(m, 16, 4, 1);
    ember_sampler *s = NULL;
    ember_sampler_create(m, NULL, &s, NULL);
    if (!c || !d || !s) { ember_sampler_free(s); ember_context_free(c); ember_context_free(d); return; }
    const char *msg = ember_context_errmsg(c);
    CHECK(msg && msg[0] == 0, "a new context has no message");

    /* one failure, then another: the message is the second's */
    const ember_token bad = 100000, one = PIECE_A;
    CHECK(ember_eval(c, NULL, 1, NULL) == EMBER_ERR_INVALID_ARG && strstr(ember_context_errmsg(c), "no tokens"),
          "first failure: '%s'", ember_context_errmsg(c));
    CHECK(ember_eval(c, &bad, 1, NULL) == EMBER_ERR_BAD_TOKEN && strstr(ember_context_errmsg(c), "100000") &&
          !strstr(ember_context_errmsg(c), "no tokens"), "second failure: '%s'", ember_context_errmsg(c));
    CHECK(ember_context_set_pos(c, 5) == EMBER_ERR_INVALID_ARG && strstr(ember_context_errmsg(c), "position 5") &&
          !strstr(ember_context_errmsg(c), "100000"), "a third, by another function: '%s'", ember_context_errmsg(c));
    /* a success clears it, whichever function succeeds */
    CHECK(ember_eval(c, &one, 1, NULL) == EMBER_OK && ember_context_errmsg(c)[0] == 0, "eval success clears: '%s'",
          ember_context_errmsg(c));
    const char *stops[] = {"x", ""};
    struct { const char *what; ember_status rc; ember_status ok; } cases[6];
    int k = 0;
    cases[k].what = "set_stop_strings";
    cases[k].rc = ember_context_set_stop_strings(c, stops, 2);
    cases[k++].ok = ember_context_set_stop_strings(c, stops, 1);
    cases[k].what = "set_pos";
    cases[k].rc = ember_context_set_pos(c, -1);
    cases[k++].ok = ember_context_set_pos(c, 1);
    cases[k].what = "copy_prefix";
    cases[k].rc = ember_context_copy_prefix(c, c, 1);
    cases[k++].ok = ember_context_copy_prefix(d, c, 1);
    cases[k].what = "state_load";
    cases[k].rc = ember_state_load(c, NULL, "garbage", 7);
    cases[k++].ok = ember_state_save(c, NULL, NULL, 0, NULL) == EMBER_ERR_BUFFER_TOO_SMALL
                        ? ember_context_set_pos(c, 1) : EMBER_ERR_INVALID_ARG;
    cases[k].what = "generate";
    cases[k].rc = ember_generate(c, s, &one, 1, -1, NULL, NULL, NULL);
    cases[k++].ok = ember_generate(c, s, &one, 1, 1, NULL, NULL, NULL);
    cases[k].what = "perplexity";
    cases[k].rc = ember_perplexity(c, "hello", 5, NULL, NULL, NULL);
    cases[k++].ok = ember_context_set_pos(c, 0);
    for (int i = 0; i < k; i++) {
        /* ok ran last; the failure's message is checked by its own call below */
        CHECK(cases[i].rc != EMBER_OK && cases[i].ok == EMBER_OK, "%s: fail %d then ok %d", cases[i].what, cases[i].rc,
              cases[i].ok);
    }
    CHECK(ember_context_errmsg(c)[0] == 0, "the last call succeeded: '%s'", ember_context_errmsg(c));
    /* each failing call above leaves its own message */
    ember_context_set_stop_strings(c, stops, 2);
    CHECK(strstr(ember_context_errmsg(c), "stop string 1"), "stop strings: '%s'", ember_context_errmsg(c));
    ember_context_copy_prefix(c, c, 1);
    CHECK(strstr(ember_context_errmsg(c), "same context"), "copy_prefix: '%s'", ember_context_errmsg(c));
    ember_state_load(c, NULL, "garbage", 7);
    CHECK(strstr(ember_context_errmsg(c), "state"), "state_load: '%s'", ember_context_errmsg(c));
    ember_perplexity(c, "hello", 5, NULL, NULL, NULL);
    CHECK(strstr(ember_context_errmsg(c), "result"), "perplexity: '%s'", ember_context_errmsg(c));
    /* the copy's failures are dst's, not src's */
    CHECK(ember_context_copy_prefix(d, c, 99) == EMBER_ERR_INVALID_ARG && strstr(ember_context_errmsg(d), "99") &&
          !strstr(ember_context_errmsg(c), "99"), "copy_prefix reports in dst");
    ember_context_set_stop_strings(c, NULL, 0);

    /* ember_eval_multi reports in ctxs[0] */
    ember_context *both[2] = {c, d};
    ember_token two[2] = {PIECE_A, bad};
    CHECK(ember_eval_multi(both, two, 2) == EMBER_ERR_BAD_TOKEN && strstr(ember_context_errmsg(c), "context 1"),
          "eval_multi: '%s'", ember_context_errmsg(c));
    CHECK(ember_eval_multi(both, NULL, 2) == EMBER_ERR_INVALID_ARG && strstr(ember_context_errmsg(c), "tokens"),
          "eval_multi(NULL tokens): '%s'", ember_context_errmsg(c));
    two[1] = PIECE_B;
    CHECK(ember_eval_multi(both, two, 2) == EMBER_OK && ember_context_errmsg(c)[0] == 0, "eval_multi success clears");

    ember_sampler_free(s);
    ember_context_free(d);
    ember_context_free(c);
}

/* ember_generate, ember_generate_text and ember_step: every bad argument
 * sets the context's message, replacing an older one. */
static void test_generate_args(ember_model *m) {
    ember_context *c = make_ctx(m, 16, 4, 1);
    ember_sampler *s = NULL;
    ember_sampler_create(m, NULL, &s, NULL);
    if (!c || !s) { ember_sampler_free(s); ember_context_free(c); return; }
    const ember_token one = PIECE_A, bad = -3;
    struct { const char *what, *word; ember_status rc; } cases[10];
    int k = 0;
#define GEN_CASE(name, expect, call) do {                                                  \
        ember_eval(c, &bad, 1, NULL);   /* an older, unrelated message */                   \
        cases[k].what = name; cases[k].word = expect; cases[k].rc = (call);                 \
        const char *msg_ = ember_context_errmsg(c);                                         \
        CHECK(cases[k].rc == EMBER_ERR_INVALID_ARG && strstr(msg_, expect) && !strstr(msg_, "-3"), \
              "%s: %d '%s'", name, cases[k].rc, msg_);                                      \
        k++;                                                                                \
    } while (0)
    GEN_CASE("generate NULL sampler", "sampler", ember_generate(c, NULL, &one, 1, 4, NULL, NULL, NULL));
    GEN_CASE("generate NULL prompt", "prompt", ember_generate(c, s, NULL, 2, 4, NULL, NULL, NULL));
    GEN_CASE("generate n_prompt -1", "prompt", ember_generate(c, s, &one, -1, 4, NULL, NULL, NULL));
    GEN_CASE("generate n_predict -1", "n_predict", ember_generate(c, s, &one, 1, -1, NULL, NULL, NULL));
    GEN_CASE("generate nothing to continue", "nothing", ember_generate(c, s, NULL, 0, 4, NULL, NULL, NULL));
    GEN_CASE("generate_text NULL prompt", "prompt", ember_generate_text(c, s, NULL, 4, NULL, NULL, NULL));
    GEN_CASE("generate_text NULL sampler", "sampler", ember_generate_text(c, NULL, "hi", 4, NULL, NULL, NULL));
    GEN_CASE("generate_text n_predict -1", "n_predict", ember_generate_text(c, s, "hi", -1, NULL, NULL, NULL));
    char text[256];
    ember_step_result r;
    GEN_CASE("step NULL sampler", "sampler", ember_step(c, NULL, text, sizeof text, &r));
    GEN_CASE("step NULL result", "out", ember_step(c, s, text, sizeof text, NULL));
#undef GEN_CASE
    /* and a bad token inside the prompt is eval's message, not a stale one */
    ember_context_set_pos(c, 0);
    CHECK(ember_generate(c, s, &bad, 1, 4, NULL, NULL, NULL) == EMBER_ERR_BAD_TOKEN &&
          strstr(ember_context_errmsg(c), "vocabulary"), "generate with a bad token: '%s'", ember_context_errmsg(c));
    ember_generate_result res;
    CHECK(ember_generate_text(c, s, "hello", 2, NULL, NULL, &res) == EMBER_OK && ember_context_errmsg(c)[0] == 0 &&
          res.n_generated == 2, "a good generation clears the message");
    ember_sampler_free(s);
    ember_context_free(c);
}

static void test_sampler_messages(ember_model *m) {
    /* a bad parameter: err names it and its value */
    struct { const char *name; ember_sampler_params p; } bad[9];
    for (int i = 0; i < 9; i++) bad[i].p = ember_sampler_default_params();
    bad[0].name = "temperature";    bad[0].p.temperature = -1;
    bad[1].name = "temperature";    bad[1].p.temperature = NAN;
    bad[2].name = "top_k";          bad[2].p.top_k = -2;
    bad[3].name = "top_p";          bad[3].p.top_p = 0;
    bad[4].name = "min_p";          bad[4].p.min_p = 1;
    bad[5].name = "repeat_penalty"; bad[5].p.repeat_penalty = 0;
    bad[6].name = "repeat_last_n";  bad[6].p.repeat_last_n = -1;
    ember_logit_bias lb[1] = {{999999, 1.0f}};
    bad[7].name = "logit_bias[0]";  bad[7].p.logit_bias = lb; bad[7].p.n_logit_bias = 1;
    bad[8].name = "logit_bias";     bad[8].p.n_logit_bias = 2;
    const char *value[9] = {"-1", "nan", "-2", "0", "1", "0", "-1", "999999", "2"};
    for (int i = 0; i < 9; i++) {
        ember_sampler *s = (ember_sampler *)1;
        ember_error err;
        dirty(&err);
        ember_status rc = ember_sampler_create(m, &bad[i].p, &s, &err);
        CHECK(rc == EMBER_ERR_INVALID_ARG && s == NULL && names_failure(&err, rc) && strstr(err.message, bad[i].name) &&
              strstr(err.message, value[i]), "bad %s: %d '%s'", bad[i].name, rc, err.message);
    }
    ember_sampler *s = NULL;
    ember_error err;
    dirty(&err);
    CHECK(ember_sampler_create(m, NULL, &s, &err) == EMBER_OK && s && is_cleared(&err), "a good sampler clears err");
    if (!s) return;
    CHECK(ember_sampler_errmsg(s) && ember_sampler_errmsg(s)[0] == 0, "a new sampler has no message");

    /* failure, another failure, success */
    const int V = ember_n_vocab(m);
    float *logits = (float *)calloc((size_t)V, sizeof *logits);
    ember_token t = 0;
    CHECK(ember_sampler_accept(s, -5) == EMBER_ERR_BAD_TOKEN && strstr(ember_sampler_errmsg(s), "-5"),
          "accept -5: '%s'", ember_sampler_errmsg(s));
    CHECK(ember_sampler_sample(s, NULL, &t) == EMBER_ERR_INVALID_ARG && strstr(ember_sampler_errmsg(s), "logits") &&
          !strstr(ember_sampler_errmsg(s), "-5"), "sample(NULL logits): '%s'", ember_sampler_errmsg(s));
    CHECK(ember_sampler_sample(s, logits, &t) == EMBER_OK && t >= 0 && t < V && ember_sampler_errmsg(s)[0] == 0,
          "a sample clears the message");
    CHECK(ember_sampler_accept(s, V) == EMBER_ERR_BAD_TOKEN && ember_sampler_errmsg(s)[0], "accept V");
    CHECK(ember_sampler_accept(s, t) == EMBER_OK && ember_sampler_errmsg(s)[0] == 0, "accept clears the message");

    /* a grammar that allows nothing any more: EMBER_ERR_GRAMMAR with the
     * sampler's message, and generation fails with it in the context's */
    const char *word[] = {"attack"};
    ember_grammar *g = NULL;
    CHECK(ember_grammar_from_strings(word, 1, NULL, &g, &err) == EMBER_OK, "%s", err.message);
    CHECK(ember_sampler_set_grammar(s, g) == EMBER_OK && ember_sampler_errmsg(s)[0] == 0, "attach");
    ember_sampler_reset(s, 1);
    CHECK(ember_sampler_sample(s, logits, &t) == EMBER_OK && (t == PIECE_A || t == TM_BYTE('a')),
          "the grammar allows 'a' first: %d", t);
    CHECK(ember_sampler_accept(s, PIECE_B) == EMBER_OK, "accepting a token the grammar rejects");   /* dead now */
    t = 12345;
    ember_status rc = ember_sampler_sample(s, logits, &t);
    CHECK(rc == EMBER_ERR_GRAMMAR && t == -1 &&
          strstr(ember_sampler_errmsg(s), "no token of the vocabulary is allowed by the grammar"),
          "dead grammar: %d %d '%s'", rc, t, ember_sampler_errmsg(s));
    CHECK(!strcmp(ember_status_string(EMBER_ERR_GRAMMAR), "the grammar allows no token"), "status string");
    ember_context *c = make_ctx(m, 16, 4, 1);
    if (c) {
        const ember_token bos = TM_BOS;
        ember_generate_result res;
        rc = ember_generate(c, s, &bos, 1, 4, NULL, NULL, &res);
        CHECK(rc == EMBER_ERR_GRAMMAR && res.n_generated == 0 &&
              strstr(ember_context_errmsg(c), "no token of the vocabulary is allowed by the grammar"),
              "generation with a dead grammar: %d '%s'", rc, ember_context_errmsg(c));
        char text[256];
        ember_step_result r;
        CHECK(ember_step(c, s, text, sizeof text, &r) == EMBER_ERR_GRAMMAR && strstr(ember_context_errmsg(c), "grammar"),
              "a step with a dead grammar: '%s'", ember_context_errmsg(c));
        ember_context_free(c);
    }
    ember_sampler_reset(s, 1);   /* restarts the grammar */
    CHECK(ember_sampler_sample(s, logits, &t) == EMBER_OK && (t == PIECE_A || t == TM_BYTE('a')) &&
          ember_sampler_errmsg(s)[0] == 0,
          "after a reset the grammar allows 'a' again: %d", t);
    CHECK(ember_sampler_set_grammar(s, NULL) == EMBER_OK, "detach");
    ember_sampler_free(s);
    ember_grammar_free(g);
    free(logits);
}

static void test_chat_messages(ember_model *m) {
    ember_context *c = make_ctx(m, 64, 8, 1);
    ember_chat_params p = ember_chat_default_params();
    p.template_name = "chatml";
    ember_chat *chat = NULL;
    ember_error err;
    dirty(&err);
    CHECK(c && ember_chat_create(m, c, &p, &chat, &err) == EMBER_OK && is_cleared(&err), "chat: %s", err.message);
    if (!chat) { ember_context_free(c); return; }
    CHECK(ember_chat_errmsg(chat)[0] == 0, "a new chat has no message");
    CHECK(ember_chat_erase(chat, 0, 1) == EMBER_ERR_INVALID_ARG && strstr(ember_chat_errmsg(chat), "messages"),
          "erase beyond: '%s'", ember_chat_errmsg(chat));
    CHECK(ember_chat_add(chat, NULL, "x") == EMBER_ERR_INVALID_ARG && strstr(ember_chat_errmsg(chat), "role") &&
          !strstr(ember_chat_errmsg(chat), "messages"), "add NULL role: '%s'", ember_chat_errmsg(chat));
    CHECK(ember_chat_add(chat, "user", "hi") == EMBER_OK && ember_chat_errmsg(chat)[0] == 0, "add clears");
    CHECK(ember_chat_respond(chat, NULL, 4, NULL, NULL, NULL) == EMBER_ERR_INVALID_ARG &&
          strstr(ember_chat_errmsg(chat), "sampler"), "respond NULL sampler: '%s'", ember_chat_errmsg(chat));
    CHECK(ember_chat_erase(chat, 0, 1) == EMBER_OK && ember_chat_errmsg(chat)[0] == 0 &&
          ember_chat_n_messages(chat) == 0, "erase clears");
    ember_chat_free(chat);
    ember_context_free(c);
}

/* ---- NULL handles: EMBER_ERR_INVALID_ARG with a message, no crash ------------ */

static void test_null_handles(ember_model *m) {
    ember_error err;
    ember_status rc;
    char buf[64];
    size_t len = 0;
    ember_token tok = 0;
    ember_model *om = (ember_model *)1;
    ember_context *oc = (ember_context *)1;
    ember_sampler *os = (ember_sampler *)1;
    ember_grammar *og = (ember_grammar *)1;
    ember_chat *oh = (ember_chat *)1;
    ember_model_info info;
    /* functions with an ember_error: the code and a message in err; and
     * with err NULL, the same status and no crash */
#define WITH_ERR(name, call) do {                                                          \
        ember_error *e_ = &err;                                                             \
        dirty(&err);                                                                        \
        rc = (call);                                                                        \
        CHECK(rc == EMBER_ERR_INVALID_ARG && names_failure(&err, rc), "%s: %d '%s'", name, rc, err.message); \
        e_ = NULL;                                                                          \
        CHECK((call) == EMBER_ERR_INVALID_ARG, "%s with err NULL", name);                   \
        (void)e_;                                                                           \
    } while (0)
    WITH_ERR("model_open_file(NULL path)", ember_model_open_file(NULL, NULL, &om, e_));
    CHECK(om == NULL, "open_file sets *out_model to NULL");
    WITH_ERR("model_open_file(NULL out)", ember_model_open_file("x.gguf", NULL, NULL, e_));
    WITH_ERR("model_open_memory(NULL data)", ember_model_open_memory(NULL, 8, NULL, &om, e_));
    WITH_ERR("model_get_info(NULL model)", ember_model_get_info(NULL, &info, e_));
    WITH_ERR("model_get_info(NULL out)", ember_model_get_info(m, NULL, e_));
    WITH_ERR("model_meta(NULL model)", ember_model_meta(NULL, "general.name", buf, sizeof buf, &len, e_));
    WITH_ERR("model_meta(NULL key)", ember_model_meta(m, NULL, buf, sizeof buf, &len, e_));
    WITH_ERR("tokenize(NULL model)", ember_tokenize(NULL, "a", 1, 0, &tok, 1, &len, e_));
    WITH_ERR("tokenize(NULL text)", ember_tokenize(m, NULL, 1, 0, &tok, 1, &len, e_));
    WITH_ERR("token_to_piece(NULL model)", ember_token_to_piece(NULL, PIECE_A, -1, 0, buf, sizeof buf, &len, e_));
    WITH_ERR("detokenize(NULL model)", ember_detokenize(NULL, &tok, 1, 0, buf, sizeof buf, &len, e_));
    WITH_ERR("detokenize(NULL tokens)", ember_detokenize(m, NULL, 1, 0, buf, sizeof buf, &len, e_));
    WITH_ERR("context_create(NULL model)", ember_context_create(NULL, NULL, &oc, e_));
    CHECK(oc == NULL, "context_create sets *out_ctx to NULL");
    WITH_ERR("sampler_create(NULL model)", ember_sampler_create(NULL, NULL, &os, e_));
    CHECK(os == NULL, "sampler_create sets *out_sampler to NULL");
    WITH_ERR("sampler_create(NULL out)", ember_sampler_create(m, NULL, NULL, e_));
    WITH_ERR("grammar_parse(NULL text)", ember_grammar_parse(NULL, 3, NULL, NULL, &og, e_));
    CHECK(og == NULL, "grammar_parse sets *out to NULL");
    WITH_ERR("grammar_parse(NULL out)", ember_grammar_parse("root ::= \"a\"", 12, NULL, NULL, NULL, e_));
    WITH_ERR("grammar_from_strings(NULL)", ember_grammar_from_strings(NULL, 1, NULL, &og, e_));
    WITH_ERR("grammar_from_json_schema(NULL)", ember_grammar_from_json_schema(NULL, 3, NULL, &og, e_));
    WITH_ERR("json_schema_to_gbnf(NULL)", ember_json_schema_to_gbnf(NULL, 3, buf, sizeof buf, &len, e_));
    WITH_ERR("chat_apply(NULL model, no template)", ember_chat_apply(NULL, NULL, NULL, 0, buf, sizeof buf, &len, e_));
    WITH_ERR("chat_create(NULL model)", ember_chat_create(NULL, NULL, NULL, &oh, e_));
    CHECK(oh == NULL, "chat_create sets *out_chat to NULL");
#undef WITH_ERR

    /* functions on an object: its errmsg given NULL names the NULL handle */
    CHECK(strstr(ember_context_errmsg(NULL), "NULL"), "context_errmsg(NULL)");
    CHECK(strstr(ember_sampler_errmsg(NULL), "NULL"), "sampler_errmsg(NULL)");
    CHECK(strstr(ember_chat_errmsg(NULL), "NULL"), "chat_errmsg(NULL)");
    const ember_token one = PIECE_A;
    ember_generate_result gres;
    ember_perplexity_result pres;
    ember_step_result sres;
    struct { const char *name; ember_status rc; } cases[] = {
        {"context_set_pos", ember_context_set_pos(NULL, 0)},
        {"eval", ember_eval(NULL, &one, 1, NULL)},
        {"eval_multi(NULL)", ember_eval_multi(NULL, &one, 1)},
        {"context_set_stop_strings", ember_context_set_stop_strings(NULL, NULL, 0)},
        {"generate", ember_generate(NULL, NULL, &one, 1, 1, NULL, NULL, &gres)},
        {"generate_text", ember_generate_text(NULL, NULL, "x", 1, NULL, NULL, &gres)},
        {"step", ember_step(NULL, NULL, buf, sizeof buf, &sres)},
        {"perplexity", ember_perplexity(NULL, "x", 1, NULL, NULL, &pres)},
        {"state_save", ember_state_save(NULL, NULL, buf, sizeof buf, &len)},
        {"state_load", ember_state_load(NULL, NULL, buf, sizeof buf)},
        {"state_save_file", ember_state_save_file(NULL, NULL, "/nonexistent/x")},
        {"state_load_file", ember_state_load_file(NULL, NULL, "/nonexistent/x")},
        {"context_copy_prefix", ember_context_copy_prefix(NULL, NULL, 0)},
        {"sampler_sample", ember_sampler_sample(NULL, NULL, &tok)},
        {"sampler_accept", ember_sampler_accept(NULL, PIECE_A)},
        {"sampler_set_grammar", ember_sampler_set_grammar(NULL, NULL)},
        {"grammar_accepts", ember_grammar_accepts(NULL, "a", 1, NULL)},
        {"chat_add", ember_chat_add(NULL, "user", "x")},
        {"chat_erase", ember_chat_erase(NULL, 0, 0)},
        {"chat_respond", ember_chat_respond(NULL, NULL, 1, NULL, NULL, &gres)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        CHECK(cases[i].rc == EMBER_ERR_INVALID_ARG, "%s(NULL): %d", cases[i].name, cases[i].rc);
    CHECK(gres.n_generated == 0 && pres.n_chunks == 0 && sres.len == 0, "results zeroed on a NULL handle");
    CHECK(tok == -1, "sampler_sample(NULL) sets *out to -1");

    /* a NULL second handle: the first one's message */
    ember_context *c = make_ctx(m, 16, 4, 1);
    if (c) {
        CHECK(ember_context_copy_prefix(c, NULL, 0) == EMBER_ERR_INVALID_ARG && strstr(ember_context_errmsg(c), "src"),
              "copy_prefix(ctx, NULL): '%s'", ember_context_errmsg(c));
        ember_context *list[1] = {c};
        CHECK(ember_eval_multi(list, NULL, 1) == EMBER_ERR_INVALID_ARG && strstr(ember_context_errmsg(c), "tokens"),
              "eval_multi(NULL tokens): '%s'", ember_context_errmsg(c));
        CHECK(ember_state_save_file(c, NULL, NULL) == EMBER_ERR_INVALID_ARG && strstr(ember_context_errmsg(c), "path"),
              "state_save_file(NULL path): '%s'", ember_context_errmsg(c));
        ember_context_free(c);
    }
}

int main(void) {
    gb_buf img = {0};
    tm_spec spec = tm_default();
    tm_build(&spec, &img);
    ember_model *m = NULL;
    ember_error err;
    if (ember_model_open_memory(img.p, img.n, NULL, &m, &err) != EMBER_OK) {
        fprintf(stderr, "tiny model: %s\n", err.message);
        return 1;
    }
    test_text_outputs(m);
    test_tokenize_convention(m);
    test_state_and_step(m);
    test_context_messages(m);
    test_generate_args(m);
    test_sampler_messages(m);
    test_chat_messages(m);
    test_null_handles(m);
    ember_model_free(m);
    gb_free(&img);
    return test_summary("test_errors");
}
