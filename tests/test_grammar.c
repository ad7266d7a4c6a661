/* test_grammar.c - GBNF grammars: parsing (llama.cpp's example grammars
 * when its checkout is at ../llama.cpp or $EMBER_LLAMACPP), hand-written
 * accept/reject cases, errors with line and column, the strings and JSON
 * Schema helpers, and constrained generation with tiny random models: every
 * text generated must be accepted (checked by hand-written predicates, not
 * only by the grammar code itself). */
#include "test.h"
#include "ember.h"
#define TM_NO_MAIN
#include "test_hostile_model.c"

#include <math.h>

static ember_grammar *parse(const char *text, ember_error *err) {
    ember_grammar *g = NULL;
    ember_error e;
    int rc = ember_grammar_parse(text, strlen(text), NULL, NULL, &g, err ? err : &e);
    if (rc != EMBER_OK) return NULL;
    return g;
}

/* 1 if g accepts s, 0 if not, or the failing status. */
static int accepts(const ember_grammar *g, const char *s) {
    int yes = -1;
    ember_status rc = ember_grammar_accepts(g, s, strlen(s), &yes);
    return rc == EMBER_OK ? yes : rc;
}

/* A token's text as read mid-text (its first size-1 bytes if longer) and
 * its full length, or -1. */
static int piece_of(const ember_model *m, ember_token t, char *buf, size_t size) {
    size_t len = 0;
    ember_status rc = ember_token_to_piece(m, t, t, 0, buf, size, &len, NULL);
    return rc == EMBER_OK || rc == EMBER_ERR_BUFFER_TOO_SMALL ? (int)len : -1;
}

/* The sampler's choice, or -1 if it failed. */
static ember_token sample(ember_sampler *s, const float *logits) {
    ember_token t = -1;
    return ember_sampler_sample(s, logits, &t) == EMBER_OK ? t : -1;
}

typedef struct { const char *grammar; const char *yes[8]; const char *no[8]; } accept_case;

static void test_accept_cases(void) {
    static const accept_case cases[] = {
        {"root ::= \"a\" | \"bc\"", {"a", "bc"}, {"", "b", "abc", "ab", "c"}},
        {"root ::= [a-c]{2,4}", {"ab", "abc", "cccc"}, {"a", "abcab", "ad", ""}},
        {"root ::= \"x\"{3}", {"xxx"}, {"xx", "xxxx"}},
        {"root ::= \"ab\"{2,}", {"abab", "ababab"}, {"ab", "aba", ""}},
        {"root ::= \"a\"{0,2} \"b\"", {"b", "ab", "aab"}, {"aaab", "a"}},
        {"root ::= (\"a\" | \"b\")* \"c\"", {"c", "abbac"}, {"", "ab", "cc"}},
        {"root ::= [0-9]+ (\".\" [0-9]+)?", {"1", "12.5"}, {"", ".5", "1.", "1.2.3"}},
        {"root ::= [^a-z]+", {"ABC", "!?", "\xc3\xa9"}, {"aB", ""}},    /* é is outside a-z */
        {"root ::= [^\\n\"]*", {"", "abc \xe2\x82\xac"}, {"a\"", "\n"}},
        {"root ::= \"caf\xc3\xa9\" | [\xe3\x81\x81-\xe3\x82\x9f]+", {"caf\xc3\xa9", "\xe3\x81\x82\xe3\x81\x84"},
         {"cafe", "caf\xc3", "\xe3\x82\xa2"}},  /* katakana ア is outside the hiragana range */
        {"root ::= \"\\x41\\u00e9\\U0001F600\\t\\n\\\\\\\"\\]\"", {"A\xc3\xa9\xf0\x9f\x98\x80\t\n\\\"]"}, {"A"}},
        {"root ::= [\\x00-\\x1F]", {"\x01", "\x1f"}, {" "}},
        {"# comment\nroot ::= a b # trailing\na ::= \"a\"\nb ::=\n  \"b\"\n  # more\n", {"ab"}, {"a", "b"}},
        {"root ::= ( \"a\"\n  | \"b\" )\n", {"a", "b"}, {"ab"}},
        {"root ::= expr\nexpr ::= term (\"+\" term)*\nterm ::= [0-9] | \"(\" expr \")\"", {"1", "1+2", "(1+2)+3", "((1))"},
         {"1+", "(1", "1++2"}},
        {"root ::= \"\"", {""}, {"a"}},
        {"root ::= x?\nx ::= \"y\"", {"", "y"}, {"yy"}},
        {"root ::= . .", {"ab", "\xe2\x82\xac!"}, {"a", "abc"}},
        {"root ::= [a-]+", {"a-a", "-"}, {"b"}},
        {"root ::= a\na ::= \"x\" a | \"y\"", {"y", "xy", "xxxxy"}, {"x", "yx"}},  /* right recursion */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ember_error err;
        ember_grammar *g = parse(cases[i].grammar, &err);
        CHECK(g != NULL, "case %zu: %s", i, err.message);
        if (!g) continue;
        for (int k = 0; k < 8 && cases[i].yes[k]; k++)
            CHECK(accepts(g, cases[i].yes[k]) == 1, "case %zu should accept \"%s\"", i, cases[i].yes[k]);
        for (int k = 0; k < 8 && cases[i].no[k]; k++)
            CHECK(accepts(g, cases[i].no[k]) == 0, "case %zu should reject \"%s\"", i, cases[i].no[k]);
        ember_grammar_free(g);
    }
}

typedef struct { const char *grammar; int line, col; const char *word; } error_case;

static void test_errors(void) {
    static const error_case cases[] = {
        {"root ::= \"a", 1, 10, "unterminated"},
        {"root ::= [a-", 1, 10, "unterminated"},
        {"root ::= a", 1, 10, "undefined rule 'a'"},
        {"root ::= \"a\"\n\nx ::= (\"b\"", 3, 7, "unclosed"},
        {"root ::= \"a\"\nroot ::= \"b\"", 2, 1, "defined twice"},
        {"root ::= \"a\" \"\\q\"", 1, 15, "unknown escape"},
        {"root := \"a\"", 1, 6, "::="},
        {"root ::= *", 1, 10, "repeat"},
        {"root ::= \"a\"{3,2}", 1, 13, "n < m"},
        {"root ::= \"a\"{99999}", 1, 18, "too large"},
        {"root ::= [z-a]", 1, 13, "below"},
        {"start ::= \"a\"", 1, 14, "no rule named 'root'"},
        {"root ::= root \"a\" | \"b\"", 1, 1, "left recursion"},
        {"root ::= x\nx ::= y? x \"a\" | \"b\"\ny ::= \"c\"", 1, 10, "left recursion"},
        {"root ::= (\"a\"?)* \"b\"", 1, 1, "left recursion"},
        {"root ::= a\na ::= a \"b\" | \"c\"", 1, 10, "left recursion"},
        {"root ::= a\na ::= a", 1, 1, "empty"},
        {"root ::= []", 1, 1, "empty"},
        {"root ::= \"a\" root", 1, 1, "empty"},
        {"root ::= \"a\") ", 1, 13, "unmatched"},
        {"root ::= \"\xff\"", 1, 11, "UTF-8"},
        {"root ::= \"a\"\n  | \"b\"", 2, 3, "rule name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ember_error err;
        ember_grammar *g = (ember_grammar *)1;
        int rc = ember_grammar_parse(cases[i].grammar, strlen(cases[i].grammar), NULL, NULL, &g, &err);
        CHECK(rc == EMBER_ERR_INVALID_ARG && g == NULL && err.code == rc, "case %zu: rc %d", i, rc);
        char want[64];
        snprintf(want, sizeof want, "line %d, column %d:", cases[i].line, cases[i].col);
        CHECK(strstr(err.message, want) != NULL, "case %zu: want %s, got \"%s\"", i, want, err.message);
        CHECK(strstr(err.message, cases[i].word) != NULL, "case %zu: want \"%s\" in \"%s\"", i, cases[i].word, err.message);
    }
    /* 2^n distinct stacks after n x's: past the limit the grammar stops
     * (an error), it does not grow without bound */
    const char *amb = "root ::= a\na ::= \"x\" a \"y\" | \"x\" a \"z\" | \"\"";
    ember_grammar *ga = parse(amb, NULL);
    CHECK(ga != NULL, "ambiguous grammar parses");
    if (ga) {
        CHECK(accepts(ga, "xxyz") == 1 && accepts(ga, "xxy") == 0, "ambiguous small");
        CHECK(accepts(ga, "xxxxxxxxxxxxxxxxxxxxyyyyyyyyyyyyyyyyyyyy") < 0, "past the stack limit: an error");
        ember_grammar_free(ga);
    }
    /* a named start rule, NULL arguments */
    ember_grammar *g = NULL;
    ember_error err;
    CHECK(ember_grammar_parse("start ::= \"a\"", 13, "start", NULL, &g, &err) == EMBER_OK && g, "%s", err.message);
    CHECK(g && accepts(g, "a") == 1, "named start");
    ember_grammar_free(g);
    CHECK(ember_grammar_parse(NULL, 3, NULL, NULL, &g, NULL) == EMBER_ERR_INVALID_ARG, "NULL text");
    int yes = 7;
    CHECK(ember_grammar_accepts(NULL, "a", 1, &yes) == EMBER_ERR_INVALID_ARG && yes == 0, "NULL grammar");
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    b[*n] = 0;
    fclose(f);
    return b;
}

typedef struct { const char *file; const char *yes[4]; const char *no[4]; } example_case;

static void test_llamacpp_examples(void) {
    const char *dir = getenv("EMBER_LLAMACPP");
    if (!dir) dir = "../llama.cpp";
    static const example_case cases[] = {
        {"json.gbnf", {"{\"a\": [1, 2.5e3, \"x\\n\", true, null], \"b\": {}}", "{}"}, {"[1]", "{\"a\" 1}", "{'a': 1}"}},
        {"json_arr.gbnf", {"[\n{\"a\": 1},\n\"x\"]", "[\n]"}, {"{}", "[\n1,]", "[1]"}},
        {"arithmetic.gbnf", {"1+2=3\n", "(x *2)=y\n"}, {"1+2=3", "=\n", "(x * 2)=y\n"}},
        {"list.gbnf", {"- one\n- two\n"}, {"- one", "one\n"}},
        {"japanese.gbnf", {"\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf \xe4\xb8\x96\xe7\x95\x8c"}, {"hello", ""}},
        {"chess.gbnf", {"1. e4 e5\n2. Nf3 Nc6\n", "1. e4 e5\n2. O-O-O exd8=Q#\n"}, {"1. e4 e5\n", "1. e9 e5\n2. a1 a2\n"}},
        {"english.gbnf", {}, {}},
        {"c.gbnf", {}, {}},
    };
    char path[1024];
    snprintf(path, sizeof path, "%s/grammars/json.gbnf", dir);
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        printf("SKIP: %s not found (llama.cpp's example grammars; set EMBER_LLAMACPP)\n", path);
        test_skipped++;
        return;
    }
    fclose(probe);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(path, sizeof path, "%s/grammars/%s", dir, cases[i].file);
        size_t n;
        char *text = read_file(path, &n);
        CHECK(text != NULL, "%s missing", path);
        if (!text) continue;
        ember_grammar *g = NULL;
        ember_error err;
        int rc = ember_grammar_parse(text, n, NULL, NULL, &g, &err);
        CHECK(rc == EMBER_OK, "%s: %s", cases[i].file, err.message);
        for (int k = 0; g && k < 4 && cases[i].yes[k]; k++)
            CHECK(accepts(g, cases[i].yes[k]) == 1, "%s should accept \"%s\"", cases[i].file, cases[i].yes[k]);
        for (int k = 0; g && k < 4 && cases[i].no[k]; k++)
            CHECK(accepts(g, cases[i].no[k]) == 0, "%s should reject \"%s\"", cases[i].file, cases[i].no[k]);
        ember_grammar_free(g);
        free(text);
    }
}

static void test_strings_and_schema(void) {
    const char *words[] = {"attack", "flee", "talk", "say \"hi\"\\", "caf\xc3\xa9"};
    ember_grammar *g = NULL;
    ember_error err;
    CHECK(ember_grammar_from_strings(words, 5, NULL, &g, &err) == EMBER_OK, "%s", err.message);
    for (int i = 0; g && i < 5; i++) CHECK(accepts(g, words[i]) == 1, "word %d", i);
    CHECK(g && accepts(g, "att") == 0 && accepts(g, "attackflee") == 0 && accepts(g, "") == 0, "not words");
    ember_grammar_free(g);
    CHECK(ember_grammar_from_strings(words, 0, NULL, &g, &err) == EMBER_ERR_INVALID_ARG, "no words");

    const char *schema =
        "{\"type\": \"object\", \"properties\": {"
        "  \"name\": {\"type\": \"string\", \"maxLength\": 8},"
        "  \"age\": {\"type\": \"integer\"},"
        "  \"mood\": {\"enum\": [\"calm\", \"angry\", 3]},"
        "  \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"boolean\"}, \"minItems\": 1, \"maxItems\": 2},"
        "  \"pos\": {\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"number\"}}, \"required\": [\"x\"]}"
        "}, \"required\": [\"name\", \"age\"]}";
    CHECK(ember_grammar_from_json_schema(schema, strlen(schema), NULL, &g, &err) == EMBER_OK, "%s", err.message);
    static const char *const yes[] = {
        "{\"name\": \"Bo\", \"age\": 3}",
        "{\"name\":\"Bo\",\"age\":-30,\"mood\":3}",
        "{ \"name\" : \"\" , \"age\" : 0 , \"tags\" : [ true , false ] , \"pos\" : { \"x\" : 1.5e-3 } }",
        "{\"name\": \"a\\\"b\", \"age\": 1, \"pos\": {\"x\": 0}}",
        "{\"name\": \"x\", \"age\": 1, \"mood\": \"angry\", \"pos\": {\"x\": -2}}",
    };
    static const char *const no[] = {
        "{\"age\": 3}", "{\"name\": \"Bo\"}", "{\"age\": 3, \"name\": \"Bo\"}",          /* required, order */
        "{\"name\": \"toolongname\", \"age\": 3}", "{\"name\": \"Bo\", \"age\": 3.5}",
        "{\"name\": \"Bo\", \"age\": 3, \"tags\": []}", "{\"name\": \"Bo\", \"age\": 3, \"tags\": [true, true, true]}",
        "{\"name\": \"Bo\", \"age\": 3, \"mood\": \"sad\"}", "{\"name\": \"Bo\", \"age\": 3, \"pos\": {}}",
        "{\"name\": \"Bo\", \"age\": 3, \"extra\": 1}", "{\"name\": \"Bo\", \"age\": 01}",
        "{\"name\": \"Bo\", \"age\": 3, \"pos\": {\"x\": 1}, \"mood\": 3}",   /* optional ones keep their order */
    };
    for (size_t i = 0; g && i < sizeof yes / sizeof *yes; i++) CHECK(accepts(g, yes[i]) == 1, "schema should accept %s", yes[i]);
    for (size_t i = 0; g && i < sizeof no / sizeof *no; i++) CHECK(accepts(g, no[i]) == 0, "schema should reject %s", no[i]);
    ember_grammar_free(g);

    /* the text itself, snprintf-like */
    char small[8];
    size_t n = 0, again = 0;
    CHECK(ember_json_schema_to_gbnf("{\"type\": \"string\"}", 18, small, sizeof small, &n, &err) ==
              EMBER_ERR_BUFFER_TOO_SMALL && n > 8 && strlen(small) == 7, "gbnf length %zu", n);
    char *full = malloc(n + 1);
    CHECK(ember_json_schema_to_gbnf("{\"type\": \"string\"}", 18, full, n + 1, &again, &err) == EMBER_OK && again == n,
          "again");
    CHECK(strstr(full, "root ::= string") && strstr(full, "space ::= | \" \" | \"\\n\"{1,2} [ \\t]{0,20}"), "shape: %s", full);
    free(full);

    /* any value; optional-only objects */
    const char *any = "{}", *opt = "{\"properties\": {\"a\": {\"type\": \"null\"}, \"b\": {\"const\": \"k\"}, \"c\": true}}";
    CHECK(ember_grammar_from_json_schema(any, 2, NULL, &g, &err) == EMBER_OK, "%s", err.message);
    CHECK(g && accepts(g, "[1, {\"x\": [null, \"y\"]}, false]") == 1 && accepts(g, "[1,") == 0, "any value");
    ember_grammar_free(g);
    CHECK(ember_grammar_from_json_schema(opt, strlen(opt), NULL, &g, &err) == EMBER_OK, "%s", err.message);
    static const char *const oyes[] = {"{}", "{\"a\": null}", "{\"b\": \"k\"}", "{\"a\":null,\"c\":[1]}", "{\"a\":null,\"b\":\"k\",\"c\":{}}"};
    static const char *const ono[] = {"{\"b\": \"j\"}", "{,}", "{\"a\": null,}", "{\"b\": \"k\", \"a\": null}"};
    for (size_t i = 0; g && i < 5; i++) CHECK(accepts(g, oyes[i]) == 1, "optional: %s", oyes[i]);
    for (size_t i = 0; g && i < 4; i++) CHECK(accepts(g, ono[i]) == 0, "optional: %s", ono[i]);
    ember_grammar_free(g);

    /* schema errors name the place */
    static const char *const bad[] = {"{\"type\": \"object\"", "{\"type\": \"strin\"}", "{\"$ref\": \"#/x\"}", "[1]",
                                      "{\"enum\": []}", "{\"type\": \"array\", \"minItems\": 3, \"maxItems\": 1}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = ember_grammar_from_json_schema(bad[i], strlen(bad[i]), NULL, &g, &err);
        CHECK(rc < 0 && g == NULL && strstr(err.message, "JSON schema at byte"), "bad schema %zu: %d %s", i, rc, err.message);
    }
}

/* ---- generation with a tiny random model --------------------------------- */

typedef struct { char buf[4096]; size_t n; } collect;
static int collect_cb(void *ud, ember_token t, const char *text, size_t len) {
    collect *c = ud;
    if (c->n + len < sizeof c->buf) { memcpy(c->buf + c->n, text, len); c->n += len; c->buf[c->n] = 0; }
    return 0;
}

/* Independent checks of the generated text. */
static int is_word(const char *s) { return !strcmp(s, "attack") || !strcmp(s, "flee") || !strcmp(s, "talk"); }
static int is_digits_list(const char *s) {   /* [0-9]{1,3} ("," [0-9]{1,3})*  */
    for (;;) {
        int d = 0;
        while (*s >= '0' && *s <= '9') { s++; d++; }
        if (d < 1 || d > 3) return 0;
        if (!*s) return 1;
        if (*s++ != ',') return 0;
    }
}

static ember_model *tiny_model(gb_buf *img, int small_vocab, uint64_t seed) {
    tm_spec s = tm_default();
    s.small_vocab = small_vocab;
    s.seed = seed;
    tm_build(&s, img);
    ember_model *m = NULL;
    ember_error err;
    if (ember_model_open_memory(img->p, img->n, NULL, &m, &err) != EMBER_OK) {
        fprintf(stderr, "tiny model: %s\n", err.message);
        return NULL;
    }
    return m;
}

static void test_generation(uint64_t seed) {
    gb_buf img = {0};
    ember_model *m = tiny_model(&img, 0, seed);
    CHECK(m != NULL, "tiny model");
    if (!m) return;
    ember_context *ctx = NULL;
    CHECK(ember_context_create(m, NULL, &ctx, NULL) == EMBER_OK, "context");
    const char *words[] = {"attack", "flee", "talk"};
    ember_grammar *gw = NULL, *gd = NULL;
    ember_error err;
    CHECK(ember_grammar_from_strings(words, 3, NULL, &gw, &err) == EMBER_OK, "%s", err.message);
    const char *dl = "root ::= [0-9]{1,3} (\",\" [0-9]{1,3})*";
    CHECK(ember_grammar_parse(dl, strlen(dl), NULL, NULL, &gd, &err) == EMBER_OK, "%s", err.message);
    int eog_stops = 0, complete = 0;
    for (int trial = 0; trial < 24 && ctx && gw && gd; trial++) {
        ember_sampler_params sp = ember_sampler_default_params();
        sp.seed = 1000 + (uint64_t)trial;
        sp.temperature = trial % 4 == 0 ? 0.0f : 1.5f;
        sp.top_k = trial % 3 == 1 ? 0 : 40;
        sp.top_p = trial % 2 ? 1.0f : 0.9f;
        sp.min_p = 0;
        ember_sampler *s = NULL;
        CHECK(ember_sampler_create(m, &sp, &s, NULL) == EMBER_OK, "sampler");
        if (!s) continue;
        ember_grammar *g = trial % 2 ? gd : gw;
        CHECK(ember_sampler_set_grammar(s, g) == EMBER_OK, "attach");
        ember_context_set_pos(ctx, 0);
        collect c = {{0}, 0};
        ember_generate_result res;
        int rc = ember_generate_text(ctx, s, "", trial % 2 ? 12 : 40, collect_cb, &c, &res);
        CHECK(rc == EMBER_OK, "generate: %d %s", rc, ember_context_errmsg(ctx));
        if (g == gw) {
            CHECK(is_word(c.buf), "trial %d: \"%s\" is not one of the words", trial, c.buf);
            CHECK(res.stop == EMBER_STOP_EOG, "trial %d: stop %d (the grammar is complete: must end)", trial, res.stop);
            complete += is_word(c.buf);
        } else {
            /* cut at the length limit: a prefix of the language; at EOG: all of it */
            int accepted = -1;
            CHECK((ember_grammar_accepts(g, c.buf, c.n, &accepted) == EMBER_OK &&
                   accepted == (res.stop == EMBER_STOP_EOG)) ||
                      res.stop == EMBER_STOP_LENGTH,
                  "trial %d: \"%s\" stop %d", trial, c.buf, res.stop);
            if (res.stop == EMBER_STOP_EOG) { CHECK(is_digits_list(c.buf), "trial %d: \"%s\"", trial, c.buf); eog_stops++; }
            else {
                /* a prefix: every byte a digit or comma, no two commas, groups <= 3 */
                int ok = 1, run = 0;
                for (size_t i = 0; i < c.n; i++) {
                    if (c.buf[i] == ',') { ok &= run > 0; run = 0; }
                    else { ok &= c.buf[i] >= '0' && c.buf[i] <= '9'; run++; ok &= run <= 3; }
                }
                CHECK(ok && c.n > 0, "trial %d: \"%s\" is no prefix of the digit list", trial, c.buf);
            }
        }
        /* the same sampler again after a reset: the grammar restarts */
        ember_sampler_reset(s, 7);
        ember_context_set_pos(ctx, 0);
        collect c2 = {{0}, 0};
        rc = ember_generate_text(ctx, s, "", 40, collect_cb, &c2, &res);
        CHECK(rc == EMBER_OK && (g == gd || is_word(c2.buf)), "after reset: \"%s\"", c2.buf);
        ember_sampler_free(s);
    }
    CHECK(complete == 12, "every word trial complete: %d", complete);
    printf("  model seed %d: %d digit-list runs ended by the grammar\n", (int)seed, eog_stops);
    ember_grammar_free(gw);
    ember_grammar_free(gd);
    ember_context_free(ctx);
    ember_model_free(m);
    free(img.p);
}

/* A vocabulary without digits (no byte tokens) and a grammar of digits:
 * sampling returns -1 and ember_generate fails instead of looping. */
static void test_impossible(void) {
    gb_buf img = {0};
    ember_model *m = tiny_model(&img, 1, 1);
    CHECK(m != NULL, "tiny model");
    if (!m) return;
    ember_context *ctx = NULL;
    ember_error err;
    CHECK(ember_context_create(m, NULL, &ctx, NULL) == EMBER_OK, "context");
    const char *impossible = "root ::= [0-9]+";
    ember_grammar *gi = NULL;
    CHECK(ember_grammar_parse(impossible, strlen(impossible), NULL, NULL, &gi, &err) == EMBER_OK, "%s", err.message);
    ember_sampler *s = NULL;
    ember_sampler_create(m, NULL, &s, NULL);
    if (s && gi && ctx) {
        CHECK(ember_sampler_set_grammar(s, gi) == EMBER_OK, "attach");
        ember_context_set_pos(ctx, 0);
        ember_token bos = ember_token_bos(m) >= 0 ? ember_token_bos(m) : 0;
        ember_eval(ctx, &bos, 1, NULL);
        ember_token t = 7;
        CHECK(ember_sampler_sample(s, ember_get_logits(ctx), &t) == EMBER_ERR_GRAMMAR && t == -1 &&
              strstr(ember_sampler_errmsg(s), "grammar"), "no token allowed: %d", t);
        ember_generate_result res;
        int rc = ember_generate_text(ctx, s, "", 10, NULL, NULL, &res);
        CHECK(rc == EMBER_ERR_GRAMMAR && strstr(ember_context_errmsg(ctx), "grammar"),
              "generation with no token allowed fails: rc %d, %d generated", rc, res.n_generated);
        /* a token the grammar rejects leaves it allowing nothing */
        ember_token a = -1;
        for (ember_token k = 0; k < ember_n_vocab(m); k++) {
            char piece[16];
            if (piece_of(m, k, piece, sizeof piece) >= 1 && piece[0] == 'a') { a = k; break; }
        }
        if (a >= 0) {
            CHECK(ember_sampler_accept(s, a) == EMBER_OK, "accept");
            CHECK(ember_sampler_sample(s, ember_get_logits(ctx), &t) == EMBER_ERR_GRAMMAR, "dead grammar");
        }
        CHECK(ember_sampler_set_grammar(s, NULL) == EMBER_OK && sample(s, ember_get_logits(ctx)) >= 0,
              "detached");
    }
    ember_sampler_free(s);
    ember_grammar_free(gi);
    ember_context_free(ctx);
    ember_model_free(m);
    free(img.p);
}

/* Masked sampling equals sampling from the masked distribution: with a
 * grammar allowing a fixed token set, the frequency of each token over many
 * draws matches softmax over the allowed logits (temperature 1, no
 * truncation), whichever path (first-candidate check or full mask) ran. */
static void test_distribution(void) {
    gb_buf img = {0};
    ember_model *m = tiny_model(&img, 0, 3);
    if (!m) { CHECK(0, "model"); return; }
    const int V = ember_n_vocab(m);
    /* the tokens whose text is one of a few single letters */
    const char *g_text = "root ::= [a-e]";
    ember_grammar *g = NULL;
    ember_error err;
    CHECK(ember_grammar_parse(g_text, strlen(g_text), NULL, NULL, &g, &err) == EMBER_OK, "%s", err.message);
    float *logits = malloc((size_t)V * sizeof *logits);
    uint64_t x = 42;
    for (int i = 0; i < V; i++) { x = x * 6364136223846793005ull + 1442695040888963407ull; logits[i] = (float)((x >> 40) % 1000) / 250.0f; }
    double *want = calloc((size_t)V, sizeof *want), z = 0;
    int *count = calloc((size_t)V, sizeof *count);
    for (int t = 0; t < V; t++) {
        char piece[8];
        int n = piece_of(m, t, piece, sizeof piece);
        if (n == 1 && piece[0] >= 'a' && piece[0] <= 'e') { want[t] = exp(logits[t]); z += want[t]; }
    }
    CHECK(z > 0, "letters in the vocabulary");
    /* mode 2: top-k = 3 of the allowed tokens, the three best letters */
    double *want3 = calloc((size_t)V, sizeof *want3), z3 = 0;
    for (int k = 0; k < 3; k++) {
        int best = -1;
        for (int t = 0; t < V; t++)
            if (want[t] > 0 && want3[t] == 0 && (best < 0 || logits[t] > logits[best])) best = t;
        if (best >= 0) { want3[best] = want[best]; z3 += want[best]; }
    }
    for (int mode = 0; mode < 3 && g; mode++) {
        ember_sampler_params sp = ember_sampler_default_params();
        sp.temperature = 1.0f;
        /* top-k = V: the sorted candidate scan; 0: the full mask; 3: the
         * first few candidates (the best tokens are mostly not letters, so
         * the scan may fall back to the mask) */
        sp.top_k = mode == 0 ? V : mode == 1 ? 0 : 3;
        const double *w = mode == 2 ? want3 : want;
        const double wz = mode == 2 ? z3 : z;
        sp.top_p = 1.0f;
        sp.min_p = 0;
        ember_sampler *s = NULL;
        ember_sampler_create(m, &sp, &s, NULL);
        ember_sampler_set_grammar(s, g);
        memset(count, 0, (size_t)V * sizeof *count);
        const int N = 20000;
        for (int i = 0; i < N; i++) {
            ember_token t = sample(s, logits);
            if (t >= 0 && t < V) count[t]++;
        }
        double worst = 0;
        int bad = 0;
        for (int t = 0; t < V; t++) {
            double p = w[t] / wz, f = (double)count[t] / N;
            if (p == 0 && count[t]) bad++;
            double sd = sqrt(p * (1 - p) / N) + 1e-9;
            if (fabs(f - p) / sd > worst) worst = fabs(f - p) / sd;
        }
        CHECK(bad == 0 && worst < 5, "mode %d: disallowed draws %d, worst deviation %.1f sd", mode, bad, worst);
        ember_sampler_free(s);
    }
    free(logits);
    free(want);
    free(want3);
    free(count);
    ember_grammar_free(g);
    ember_model_free(m);
    free(img.p);
}

/* The grammar with the rest of the sampler: a logit bias that bans a word's
 * first token, switching grammars on one sampler, and saved states (which
 * leave the grammar's position as it was). */
static void test_sampler_interplay(void) {
    gb_buf img = {0};
    ember_model *m = tiny_model(&img, 0, 5);
    ember_context *ctx = NULL;
    if (!m || ember_context_create(m, NULL, &ctx, NULL) != EMBER_OK) { CHECK(0, "model"); return; }
    /* ban every token starting with 'a' or 't': only "flee" remains */
    const int V = ember_n_vocab(m);
    ember_logit_bias *bias = calloc((size_t)V, sizeof *bias);
    int nb = 0;
    for (ember_token t = 0; t < V; t++) {
        char piece[16];
        int n = piece_of(m, t, piece, sizeof piece);
        if (n >= 1 && (piece[0] == 'a' || piece[0] == 't')) { bias[nb].token = t; bias[nb].bias = -INFINITY; nb++; }
    }
    ember_sampler_params sp = ember_sampler_default_params();
    sp.logit_bias = bias;
    sp.n_logit_bias = nb;
    sp.temperature = 1.5f;
    ember_sampler *s = NULL;
    CHECK(ember_sampler_create(m, &sp, &s, NULL) == EMBER_OK, "sampler");
    const char *words[] = {"attack", "flee", "talk"};
    const char *digits = "root ::= [0-9]+ \";\"";
    ember_grammar *gw = NULL, *gd = NULL;
    ember_error err;
    ember_grammar_from_strings(words, 3, NULL, &gw, &err);
    ember_grammar_parse(digits, strlen(digits), NULL, NULL, &gd, &err);
    for (int i = 0; i < 6 && s && gw && gd; i++) {
        ember_sampler_set_grammar(s, i % 2 ? gd : gw);
        ember_sampler_reset(s, (uint64_t)i);
        ember_context_set_pos(ctx, 0);
        collect c = {{0}, 0};
        ember_generate_result res;
        int rc = ember_generate_text(ctx, s, "", 30, collect_cb, &c, &res);
        if (i % 2 == 0) CHECK(rc == EMBER_OK && !strcmp(c.buf, "flee") && res.stop == EMBER_STOP_EOG, "bias + words: \"%s\"", c.buf);
        else {
            size_t k = 0;
            while (k < c.n && c.buf[k] >= '0' && c.buf[k] <= '9') k++;
            CHECK(rc == EMBER_OK && k > 0 && (k == c.n || (k + 1 == c.n && c.buf[k] == ';' && res.stop == EMBER_STOP_EOG)),
                  "digits: \"%s\" stop %d", c.buf, res.stop);
        }
    }
    /* a saved state does not move the grammar */
    if (s && gw) {
        ember_sampler_set_grammar(s, gw);
        ember_sampler_reset(s, 1);
        ember_context_set_pos(ctx, 0);
        ember_token bos = ember_token_bos(m);
        ember_eval(ctx, &bos, 1, NULL);
        size_t need = ember_state_size(ctx, s);
        void *buf = malloc(need);
        CHECK(ember_state_save(ctx, s, buf, need, NULL) == EMBER_OK, "save");
        ember_token f = -1;
        for (ember_token t = 0; t < V; t++) {
            char piece[16];
            if (piece_of(m, t, piece, sizeof piece) == 1 && piece[0] == 'f') f = t;
        }
        ember_sampler_accept(s, f);   /* "f": only "lee" may follow */
        CHECK(ember_state_load(ctx, s, buf, need) == EMBER_OK, "load");
        float *l = calloc((size_t)V, sizeof *l);
        ember_token t = sample(s, l);
        char piece[16];
        int n = t >= 0 ? piece_of(m, t, piece, sizeof piece) : 0;
        CHECK(n >= 1 && piece[0] == 'l', "after load the grammar still expects \"lee\": token %d", t);
        free(l);
        free(buf);
    }
    ember_sampler_free(s);
    ember_grammar_free(gw);
    ember_grammar_free(gd);
    free(bias);
    ember_context_free(ctx);
    ember_model_free(m);
    free(img.p);
}

/* The allocator hook is used for everything and balanced. */
static long live_allocs;
static void *cnt_malloc(void *ud, size_t n) { (void)ud; live_allocs++; return malloc(n); }
static void *cnt_realloc(void *ud, void *p, size_t n) { (void)ud; if (!p) live_allocs++; return realloc(p, n); }
static void cnt_free(void *ud, void *p) { (void)ud; if (p) live_allocs--; free(p); }

static void test_allocator(void) {
    ember_allocator al = {cnt_malloc, cnt_realloc, cnt_free, NULL};
    ember_grammar *g = NULL;
    ember_error err;
    const char *schema = "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}}}";
    CHECK(ember_grammar_from_json_schema(schema, strlen(schema), &al, &g, &err) == EMBER_OK, "%s", err.message);
    CHECK(live_allocs > 0, "allocator used");
    CHECK(g && accepts(g, "{\"a\": [\"x\"]}") == 1, "accepts");
    ember_grammar_free(g);
    CHECK(live_allocs == 0, "balanced: %ld", live_allocs);
    CHECK(ember_grammar_parse("root ::= (", 10, NULL, &al, &g, &err) != EMBER_OK && live_allocs == 0, "error path balanced");
}

int main(void) {
    test_accept_cases();
    test_errors();
    test_llamacpp_examples();
    test_strings_and_schema();
    test_generation(1);
    test_generation(2);
    test_impossible();
    test_distribution();
    test_sampler_interplay();
    test_allocator();
    return test_summary("test_grammar");
}
