/* test_conversation.c - ember_chat: a conversation that keeps its KV cache.
 *
 * On the demo model (models/ember-demo.gguf, which has no template of its
 * own: the formats are named), every reply of a multi-turn conversation
 * must equal the reply a fresh context gives to the whole rendered
 * conversation (greedy, same bits), while evaluating only the tokens that
 * are new: the count ember_generate reports is checked against the common
 * prefix computed here from the token sequences.  Qwen3 without thinking
 * renders earlier replies differently from the prompt they were generated
 * after, so the cache must roll back to where the texts part.  A full
 * context fails without changing the conversation, and works again after
 * erasing the oldest turns.  Public API only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ember.h"
#include "test.h"

#define MODEL "models/ember-demo.gguf"

typedef struct text { char s[4096]; size_t n; ember_token ids[256]; int n_ids; } text;

static int collect(void *ud, ember_token tok, const char *t, size_t n) {
    text *x = ud;
    if (x->n + n < sizeof x->s) { memcpy(x->s + x->n, t, n); x->n += n; x->s[x->n] = 0; }
    if (tok >= 0 && x->n_ids < 256) x->ids[x->n_ids++] = tok;
    return 0;
}

/* The rendered prompt's tokens as ember.h tells callers to make them:
 * special-token text parsed, BOS first where the model asks for it and the
 * text does not already start with it, no EOS. */
static ember_token *tokenize_prompt(ember_model *m, const char *s, int *n) {
    ember_token bos = ember_token_bos(m), first[2];
    size_t n0 = 0, count = 0;
    char bos_text[64] = "";
    if (bos < 0 || ember_token_to_piece(m, bos, -1, EMBER_TOKENIZE_SPECIAL, bos_text, sizeof bos_text, NULL, NULL))
        bos_text[0] = 0;
    int wants_bos = ember_tokenize(m, "", 0, EMBER_TOKENIZE_ADD_BOS, first, 2, &n0, NULL) == EMBER_OK && n0 > 0 &&
                    first[0] == bos;
    int add = wants_bos && !(bos_text[0] && !strncmp(s, bos_text, strlen(bos_text)));
    ember_tokenize(m, s, strlen(s), EMBER_TOKENIZE_SPECIAL, NULL, 0, &count, NULL);
    ember_token *t = malloc(sizeof *t * (count + 2));
    ember_tokenize(m, s, strlen(s), EMBER_TOKENIZE_SPECIAL, t + add, count, &count, NULL);
    *n = (int)count;
    if (add) { t[0] = bos; (*n)++; }
    return t;
}

/* The reply a fresh context gives to the conversation so far. */
static void fresh_reply(ember_model *m, const ember_chat_params *cp, const ember_chat *chat, int n_msgs, int n_predict,
                        text *out, ember_token **toks, int *n_toks) {
    ember_chat_message msgs[32];
    for (int i = 0; i < n_msgs; i++) msgs[i] = *ember_chat_message_at(chat, i);
    char prompt[8192];
    ember_error err;
    size_t len = 0;
    CHECK(ember_chat_apply(m, cp, msgs, n_msgs, prompt, sizeof prompt, &len, &err) == EMBER_OK && len > 0,
          "render: %s", err.message);
    *toks = tokenize_prompt(m, prompt, n_toks);
    out->n = 0;
    out->n_ids = 0;
    out->s[0] = 0;
    if (*n_toks + n_predict >= 256) return;   /* the caller stops there */
    ember_context *c;
    ember_context_params pp = ember_context_default_params();
    pp.n_threads = 1;
    ember_context_create(m, &pp, &c, NULL);
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0;
    ember_sampler *s;
    ember_sampler_create(m, &sp, &s, NULL);
    ember_generate_result r;
    int rc = ember_generate(c, s, *toks, *n_toks, n_predict, collect, out, &r);
    CHECK(rc == EMBER_OK, "fresh generate: %s", ember_context_errmsg(c));
    ember_sampler_free(s);
    ember_context_free(c);
}

static int common_prefix(const ember_token *a, int na, const ember_token *b, int nb) {
    int k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    return k;
}

/* Several turns: every reply as from scratch, only new tokens evaluated. */
static void test_turns(ember_model *m, const char *format, int think) {
    ember_context_params pp = ember_context_default_params();
    pp.n_threads = 1;
    ember_context *ctx;
    CHECK(ember_context_create(m, &pp, &ctx, NULL) == EMBER_OK, "context");
    ember_chat_params cp = ember_chat_default_params();
    cp.template_name = format;
    cp.enable_thinking = think;
    ember_chat *chat;
    ember_error err;
    int rc = ember_chat_create(m, ctx, &cp, &chat, &err);
    CHECK(rc == EMBER_OK, "%s: create: %s", format, err.message);
    if (rc) { ember_context_free(ctx); return; }
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0;
    ember_sampler *s;
    ember_sampler_create(m, &sp, &s, NULL);
    const char *users[] = {"Cats?", "And dogs?", "A fortune."};
    ember_token *held = NULL;   /* what the context holds after the previous turn */
    int n_held = 0, rolled_back = 0;
    if (strcmp(format, "llama2")) ember_chat_add(chat, "system", "Be brief.");
    for (int turn = 0; turn < 3; turn++) {
        ember_chat_add(chat, "user", users[turn]);
        text want, got = {{0}, 0, {0}, 0};
        ember_token *toks;
        int n_toks;
        fresh_reply(m, &cp, chat, ember_chat_n_messages(chat), 12, &want, &toks, &n_toks);
        if (n_toks + 12 >= ember_context_n_ctx(ctx)) {   /* the demo model's 256 positions are full */
            CHECK(turn >= 2, "%s: turn %d already needs %d tokens", format, turn, n_toks);
            free(toks);
            break;
        }
        ember_generate_result r;
        rc = ember_chat_respond(chat, s, 12, collect, &got, &r);
        CHECK(rc == EMBER_OK, "%s turn %d: respond: %s", format, turn, ember_chat_errmsg(chat));
        CHECK(got.n == want.n && !memcmp(got.s, want.s, got.n), "%s turn %d: reply '%s' differs from a fresh context's '%s'",
              format, turn, got.s, want.s);
        const ember_chat_message *last = ember_chat_message_at(chat, ember_chat_n_messages(chat) - 1);
        CHECK(last && !strcmp(last->role, "assistant") && !strcmp(last->content, got.s), "%s turn %d: reply appended",
              format, turn);
        int keep = common_prefix(held, n_held, toks, n_toks);
        if (keep == n_toks) keep--;
        if (keep < n_held) rolled_back = 1;
        CHECK(r.n_prompt == n_toks - keep, "%s turn %d: evaluated %d prompt tokens, expected %d new of %d", format, turn,
              r.n_prompt, n_toks - keep, n_toks);
        if (turn > 0) CHECK(keep > 0 && r.n_prompt < n_toks / 2 + 8, "%s turn %d: reused %d of %d tokens", format, turn, keep, n_toks);
        CHECK(got.n_ids == want.n_ids && !memcmp(got.ids, want.ids, sizeof *got.ids * (size_t)got.n_ids),
              "%s turn %d: the same reply tokens as a fresh context", format, turn);
        /* what the context holds now: the prompt, then the reply tokens evaluated */
        int pos = ember_context_pos(ctx);
        CHECK(pos >= n_toks && pos <= n_toks + got.n_ids, "%s turn %d: position %d after %d prompt and %d reply tokens",
              format, turn, pos, n_toks, got.n_ids);
        free(held);
        held = malloc(sizeof *held * (size_t)(n_toks + got.n_ids + 1));
        memcpy(held, toks, sizeof *held * (size_t)n_toks);
        memcpy(held + n_toks, got.ids, sizeof *held * (size_t)got.n_ids);
        n_held = pos;
        free(toks);
    }
    if (!think && !strcmp(format, "qwen3"))
        CHECK(rolled_back, "qwen3 without thinking: an earlier reply re-renders without its empty think block, "
                           "so the cache must roll back");
    free(held);
    ember_sampler_free(s);
    ember_chat_free(chat);
    ember_context_free(ctx);
}

/* A context too small for the conversation: an error that changes nothing,
 * then erasing the oldest turn makes room. */
static void test_full(ember_model *m) {
    ember_context_params pp = ember_context_default_params();
    pp.n_threads = 1;
    pp.n_ctx = 64;
    ember_context *ctx;
    ember_context_create(m, &pp, &ctx, NULL);
    ember_chat_params cp = ember_chat_default_params();
    cp.template_name = "chatml";
    ember_chat *chat;
    CHECK(ember_chat_create(m, ctx, &cp, &chat, NULL) == EMBER_OK, "create");
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0;
    ember_sampler *s;
    ember_sampler_create(m, &sp, &s, NULL);
    int full = 0;
    for (int turn = 0; turn < 10 && !full; turn++) {
        ember_chat_add(chat, "user", "Say something about the weather today, please.");
        int n_before = ember_chat_n_messages(chat);
        ember_generate_result r;
        int rc = ember_chat_respond(chat, s, 8, NULL, NULL, &r);
        if (rc == EMBER_ERR_CONTEXT_FULL) {
            full = 1;
            CHECK(ember_chat_n_messages(chat) == n_before, "a conversation that does not fit is left as it was");
            CHECK(strstr(ember_chat_errmsg(chat), "does not fit") || strstr(ember_chat_errmsg(chat), "context holds"),
                  "message: %s", ember_chat_errmsg(chat));
            while (ember_chat_n_messages(chat) > 1 && rc == EMBER_ERR_CONTEXT_FULL) {
                ember_chat_erase(chat, 0, 2);
                rc = ember_chat_respond(chat, s, 8, NULL, NULL, &r);
            }
            CHECK(rc == EMBER_OK, "after erasing the oldest turns the reply fits: %s", ember_chat_errmsg(chat));
        } else {
            CHECK(rc == EMBER_OK, "turn %d: %s", turn, ember_chat_errmsg(chat));
        }
    }
    CHECK(full, "a 64-position context filled within 10 turns");
    ember_sampler_free(s);
    ember_chat_free(chat);
    ember_context_free(ctx);
}

static void test_errors(ember_model *m) {
    ember_error err;
    ember_chat_message msg = {"user", "hi"};
    char buf[256];
    int rc = ember_chat_apply(m, NULL, &msg, 1, buf, sizeof buf, NULL, &err);
    CHECK(rc == EMBER_ERR_MISSING && strstr(err.message, "no chat template"), "the demo model has no template: %d %s", rc,
          err.message);
    ember_chat_params cp = ember_chat_default_params();
    cp.template_name = "nonesuch";
    rc = ember_chat_apply(m, &cp, &msg, 1, buf, sizeof buf, NULL, &err);
    CHECK(rc == EMBER_ERR_UNSUPPORTED && strstr(err.message, "nonesuch"), "unknown name: %s", err.message);
    ember_context *ctx;
    ember_context_create(m, NULL, &ctx, NULL);
    ember_chat *chat = (ember_chat *)1;
    rc = ember_chat_create(m, ctx, &cp, &chat, &err);
    CHECK(rc == EMBER_ERR_UNSUPPORTED && chat == NULL, "create refuses an unknown template");
    ember_context_free(ctx);
    /* buffer convention: needed length reported, output truncated with a NUL */
    cp.template_name = "chatml";
    size_t need = 0, got = 0;
    rc = ember_chat_apply(m, &cp, &msg, 1, NULL, 0, &need, &err);
    CHECK(rc == EMBER_ERR_BUFFER_TOO_SMALL && need == strlen("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
          "length %zu", need);
    char small[8];
    rc = ember_chat_apply(m, &cp, &msg, 1, small, sizeof small, &got, &err);
    CHECK(rc == EMBER_ERR_BUFFER_TOO_SMALL && got == need && !strcmp(small, "<|im_st") && err.message[0],
          "truncated: %d '%s'", rc, small);
    ember_chat_message bad = {NULL, "x"};
    CHECK(ember_chat_apply(m, &cp, &bad, 1, buf, sizeof buf, NULL, &err) == EMBER_ERR_INVALID_ARG, "NULL role");
    /* BOS/EOS text comes from the model's tokens */
    cp.template_name = "zephyr";
    ember_chat_apply(m, &cp, &msg, 1, buf, sizeof buf, NULL, &err);
    CHECK(!strcmp(buf, "<|user|>\nhi<|endoftext|>\n<|assistant|>\n"), "zephyr with the model's EOS: '%s'", buf);
}

int main(void) {
    ember_model *m, *v;
    ember_error err;
    if (ember_model_open_file(MODEL, NULL, &m, &err)) { fprintf(stderr, "%s\n", err.message); return 1; }
    const char *formats[] = {"chatml", "llama3", "qwen3", "gemma3", "phi3", "llama2", "mistral-v7", "zephyr"};
    for (size_t i = 0; i < sizeof formats / sizeof *formats; i++) test_turns(m, formats[i], 1);
    test_turns(m, "qwen3", 0);
    test_full(m);
    test_errors(m);
    /* rendering needs only the vocabulary */
    ember_model_params mp = ember_model_default_params();
    mp.vocab_only = 1;
    CHECK(ember_model_open_file(MODEL, &mp, &v, &err) == EMBER_OK, "vocab only: %s", err.message);
    ember_chat_params cp = ember_chat_default_params();
    cp.template_name = "llama3";
    ember_chat_message msg = {"user", "hi"};
    char a[256], b[256];
    ember_chat_apply(m, &cp, &msg, 1, a, sizeof a, NULL, NULL);
    CHECK(ember_chat_apply(v, &cp, &msg, 1, b, sizeof b, NULL, NULL) == EMBER_OK && a[0] && !strcmp(a, b),
          "vocab-only model renders the same");
    ember_model_free(v);
    ember_model_free(m);
    return test_summary("test_conversation");
}
