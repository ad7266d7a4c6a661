/* npc.c - three characters of a game sharing one model.
 *
 * The scene's description (the "system prompt") is evaluated once and
 * copied into each character's context.  Every frame, all characters that
 * are still talking advance by one token in a single pass over the weights
 * (ember_eval_multi), so three cost little more than one.  At the end the
 * characters are saved to files and one is restored and continued, as a
 * game does when the player saves and loads.  The guard then decides what
 * to do through a grammar: its answer can only be attack, flee or talk.
 *
 *   build/examples/npc models/ember-demo.gguf
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "ember.h"

#define N_NPC 3

typedef struct npc {
    const char *name, *line;     /* who, and how their turn starts */
    ember_context *ctx;
    ember_sampler *smp;
    char said[1024];
    size_t len;
    int done;
} npc;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

typedef struct decision { char text[64]; size_t len; } decision;

static int collect(void *ud, ember_token t, const char *text, size_t len) {
    decision *d = ud;
    (void)t;
    if (d->len + len < sizeof d->text) { memcpy(d->text + d->len, text, len); d->len += len; }
    return 0;
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "npc: %s: %s\n", what, why);
    return 1;
}

/* Sample each talking character's next token and append its text; return
 * how many tokens go into the next pass. */
static int choose_tokens(const ember_model *m, npc *npcs, ember_context **ctxs, ember_token *toks) {
    int n = 0;
    for (int i = 0; i < N_NPC; i++) {
        npc *c = &npcs[i];
        if (c->done) continue;
        const int pos = ember_context_pos(c->ctx);
        ember_token t;
        char piece[256];
        size_t len = 0;
        if (ember_sampler_sample(c->smp, ember_get_logits(c->ctx), &t) != EMBER_OK ||
            ember_sampler_accept(c->smp, t) != EMBER_OK || ember_token_is_eog(m, t) ||
            ember_token_to_piece(m, t, ember_context_tokens(c->ctx)[pos - 1], 0, piece, sizeof piece, &len, NULL) !=
                EMBER_OK ||
            pos >= ember_context_n_ctx(c->ctx) || c->len + len >= sizeof c->said) {
            c->done = 1;
            continue;
        }
        for (size_t j = 0; j < len; j++) c->said[c->len++] = piece[j] == '\n' ? ' ' : piece[j];
        if (memchr(piece, '.', len)) c->done = 1;   /* one sentence each */
        ctxs[n] = c->ctx;
        toks[n++] = t;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]); return 1; }
    ember_model *model;
    ember_error err;
    if (ember_model_open_file(argv[1], NULL, &model, &err) != EMBER_OK) return fail("loading", err.message);

    npc npcs[N_NPC] = {{.name = "Guard", .line = " The guard said,"},
                       {.name = "Merchant", .line = " The merchant said,"},
                       {.name = "Child", .line = " The little girl said,"}};
    const char *scene = "Once upon a time, in a small town by the sea, three friends met at the market.";
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = 256;

    /* The scene, evaluated once. */
    ember_context *scene_ctx;
    if (ember_context_create(model, &cp, &scene_ctx, &err) != EMBER_OK) return fail("context", err.message);
    ember_token toks[256];
    size_t n = 0;
    if (ember_tokenize(model, scene, strlen(scene), EMBER_TOKENIZE_ADD_BOS, toks, 256, &n, &err) != EMBER_OK)
        return fail("tokenizing", err.message);
    ember_eval(scene_ctx, toks, (int)n, NULL);
    const int scene_len = ember_context_pos(scene_ctx);

    ember_sampler_params sp = ember_sampler_default_params();
    for (int i = 0; i < N_NPC; i++) {
        npc *c = &npcs[i];
        sp.seed = 1000 + i;
        if (ember_context_create(model, &cp, &c->ctx, &err) != EMBER_OK) return fail("context", err.message);
        if (ember_sampler_create(model, &sp, &c->smp, &err) != EMBER_OK) return fail("sampler", err.message);
        ember_context_copy_prefix(c->ctx, scene_ctx, scene_len);      /* copied, not recomputed */
        if (ember_tokenize(model, c->line, strlen(c->line), 0, toks, 256, &n, &err) != EMBER_OK)
            return fail("tokenizing", err.message);
        ember_eval(c->ctx, toks, (int)n, NULL);
    }

    /* The game loop: each frame spends at most its budget on the characters
     * (one pass over the weights advances all who are still talking), and
     * the rest of the frame belongs to the game. */
    const double budget = 0.016;   /* of a 60 fps frame */
    int frames = 0, passes = 0;
    for (int talking = 1; talking && frames < 1000; frames++) {
        const double start = now();
        do {
            ember_context *ctxs[N_NPC];
            ember_token next[N_NPC];
            int k = choose_tokens(model, npcs, ctxs, next);
            if (k == 0) { talking = 0; break; }
            if (ember_eval_multi(ctxs, next, k) != EMBER_OK) return fail("eval", ember_context_errmsg(ctxs[0]));
            passes++;
        } while (now() - start < budget);
        /* ... draw the frame ... */
    }
    for (int i = 0; i < N_NPC; i++) printf("%-8s:%s%.*s\n", npcs[i].name, npcs[i].line, (int)npcs[i].len, npcs[i].said);
    printf("%d passes in %d frames (a %.0f ms budget each)\n", passes, frames, budget * 1e3);

    /* The guard's decision, constrained to three answers. */
    {
        const char *choices[] = {" attack", " flee", " talk"};
        ember_grammar *g;
        ember_sampler *gs;
        if (ember_grammar_from_strings(choices, 3, NULL, &g, &err) != EMBER_OK) return fail("grammar", err.message);
        if (ember_sampler_create(model, &sp, &gs, &err) != EMBER_OK) return fail("sampler", err.message);
        if (ember_sampler_set_grammar(gs, g) != EMBER_OK) return fail("grammar", ember_sampler_errmsg(gs));
        const char *ask = " Then the guard decided to";
        if (ember_tokenize(model, ask, strlen(ask), 0, toks, 256, &n, &err) != EMBER_OK)
            return fail("tokenizing", err.message);
        decision d = {{0}, 0};
        if (ember_generate(npcs[0].ctx, gs, toks, (int)n, 8, collect, &d, NULL) != EMBER_OK)
            return fail("deciding", ember_context_errmsg(npcs[0].ctx));
        printf("the guard decides to:%.*s\n", (int)d.len, d.text);
        ember_sampler_free(gs);
        ember_grammar_free(g);
    }

    /* Save everyone; restore the merchant into a fresh context and go on. */
    char path[64];
    for (int i = 0; i < N_NPC; i++) {
        snprintf(path, sizeof path, "npc-%d.state", i);
        if (ember_state_save_file(npcs[i].ctx, npcs[i].smp, path) != EMBER_OK)
            return fail("saving", ember_context_errmsg(npcs[i].ctx));
    }
    ember_context *loaded;
    ember_sampler *lsmp;
    ember_context_create(model, &cp, &loaded, NULL);
    ember_sampler_create(model, &sp, &lsmp, NULL);
    if (ember_state_load_file(loaded, lsmp, "npc-1.state") != EMBER_OK)
        return fail("loading", ember_context_errmsg(loaded));
    printf("restored %s at position %d:", npcs[1].name, ember_context_pos(loaded));
    char text[512];
    ember_step_result r;
    for (int i = 0; i < 12 && ember_step_text_size(loaded) <= sizeof text; i++) {
        if (ember_step(loaded, lsmp, text, sizeof text, &r) != EMBER_OK || r.stop) break;
        printf("%.*s", (int)r.len, text);
    }
    printf("\n");
    for (int i = 0; i < N_NPC; i++) {
        snprintf(path, sizeof path, "npc-%d.state", i);
        remove(path);
        ember_sampler_free(npcs[i].smp);
        ember_context_free(npcs[i].ctx);
    }
    ember_sampler_free(lsmp);
    ember_context_free(loaded);
    ember_context_free(scene_ctx);
    ember_model_free(model);
    return 0;
}
