/* bench_grammar.c - what a grammar costs per token on a real vocabulary.
 *   make && cc -O2 -Iinclude -Isrc tools/bench_grammar.c build/libember.a -lm -lpthread -o build/bench_grammar
 *   ./build/bench_grammar VOCAB.gguf [GRAMMAR.gbnf TEXT-FILE]
 * VOCAB.gguf may be vocabulary-only (convert_weights.py --vocab-only).
 * Without a grammar file: a JSON Schema grammar and a JSON document, and
 * "one of three words".  The text is fed token by token (teacher forcing:
 * the grammar follows the real text) and at each step we time
 *   mask     the full mask of the vocabulary (a walk of the token trie),
 *   sample   ember_sampler_sample with the grammar attached, minus the
 *            same call without it, for two kinds of logits: "confident"
 *            (the true next token 8 above Gaussian noise: the first
 *            candidate usually passes) and "flat" (noise only: the best
 *            candidates are mostly rejected, so the full mask runs).
 * Default sampling parameters (temperature 0.8, top-k 40, top-p 0.95,
 * min-p 0.05) and greedy. */
#include "ember.h"
#include "grammar.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);  /* CPU time: the machine is shared */
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    b[*n] = 0;
    fclose(f);
    return b;
}

static uint64_t rng = 12345;
static double gauss(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double u1 = ((rng >> 11) + 0.5) / 9007199254740992.0;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double u2 = ((rng >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

static void run(ember_model *m, const char *name, const ember_grammar *g, const char *text) {
    const int V = ember_n_vocab(m);
    size_t count = 0;
    ember_tokenize(m, text, strlen(text), 0, NULL, 0, &count, NULL);
    ember_token *toks = malloc((count ? count : 1) * sizeof *toks);
    ember_tokenize(m, text, strlen(text), 0, toks, count, &count, NULL);
    const int n = (int)count;
    double t0 = now();
    eg_matcher *gm;
    if (eg_matcher_create(g, m, NULL, &gm) != EMBER_OK) { fprintf(stderr, "matcher failed\n"); exit(1); }
    double t_build = now() - t0;
    uint8_t *allowed = malloc((size_t)V);
    float *logits = malloc((size_t)V * sizeof *logits);
    printf("%s: %d tokens of text; vocabulary view built in %.1f ms\n", name, n, t_build * 1e3);
    for (int kind = 0; kind < 2; kind++) {
        for (int greedy = 0; greedy < 2; greedy++) {
            ember_sampler_params sp = ember_sampler_default_params();
            if (greedy) sp.temperature = 0;
            ember_sampler *sg, *sn;
            ember_sampler_create(m, &sp, &sg, NULL);
            ember_sampler_create(m, &sp, &sn, NULL);
            ember_sampler_set_grammar(sg, g);
            eg_matcher_reset(gm);
            double mask_sum = 0, mask_max = 0, over_sum = 0, over_max = 0, plain_sum = 0;
            long n_allowed = 0;
            int agree = 0;
            for (int i = 0; i < n; i++) {
                for (int v = 0; v < V; v++) logits[v] = (float)(2 * gauss());
                if (kind == 0) logits[toks[i]] += 8;
                double a = now();
                int k = eg_matcher_mask(gm, allowed);
                double b = now();
                ember_token tg = -1, tn;
                ember_sampler_sample(sg, logits, &tg);
                double c = now();
                ember_sampler_sample(sn, logits, &tn);
                double d = now();
                n_allowed += k;
                agree += k > 0 && allowed[toks[i]];
                mask_sum += b - a;
                if (b - a > mask_max) mask_max = b - a;
                double over = (c - b) - (d - c);
                over_sum += over;
                if (over > over_max) over_max = over;
                plain_sum += d - c;
                if (tg >= 0 && !allowed[tg]) printf("  BUG: sampled token %d is not allowed\n", tg);
                eg_matcher_accept(gm, toks[i]);
                ember_sampler_accept(sg, toks[i]);
                ember_sampler_accept(sn, toks[i]);
            }
            printf("  %-9s %-6s mask %6.3f ms mean %6.3f max | sample overhead %6.3f ms mean %6.3f max"
                   " (plain sample %.3f ms) | allowed %ld avg, text tokens allowed %d/%d\n",
                   kind ? "flat" : "confident", greedy ? "greedy" : "top-k", mask_sum / n * 1e3, mask_max * 1e3,
                   over_sum / n * 1e3, over_max * 1e3, plain_sum / n * 1e3, n_allowed / n, agree, n);
            ember_sampler_free(sg);
            ember_sampler_free(sn);
        }
    }
    eg_matcher_free(gm);
    free(allowed);
    free(logits);
    free(toks);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: bench_grammar VOCAB.gguf [GRAMMAR.gbnf TEXT-FILE]\n"); return 2; }
    ember_model_params mp = ember_model_default_params();
    mp.vocab_only = 1;
    ember_model *m;
    ember_error err;
    if (ember_model_open_file(argv[1], &mp, &m, &err) != EMBER_OK) { fprintf(stderr, "%s\n", err.message); return 1; }
    printf("vocabulary: %d tokens\n", ember_n_vocab(m));
    ember_grammar *g;
    if (argc >= 4) {
        size_t gn, tn;
        char *gt = slurp(argv[2], &gn), *text = slurp(argv[3], &tn);
        if (ember_grammar_parse(gt, gn, NULL, NULL, &g, &err) != EMBER_OK) { fprintf(stderr, "%s\n", err.message); return 1; }
        run(m, argv[2], g, text);
        ember_grammar_free(g);
        free(gt);
        free(text);
    } else {
        const char *schema =
            "{\"type\": \"object\", \"properties\": {"
            "\"name\": {\"type\": \"string\"}, \"age\": {\"type\": \"integer\"},"
            "\"bio\": {\"type\": \"string\"},"
            "\"skills\": {\"type\": \"array\", \"items\": {\"type\": \"object\", \"properties\": {"
            "  \"skill\": {\"type\": \"string\"}, \"level\": {\"type\": \"number\"}}, \"required\": [\"skill\", \"level\"]}},"
            "\"mood\": {\"enum\": [\"calm\", \"angry\", \"afraid\"]}}, \"required\": [\"name\", \"age\", \"bio\", \"skills\", \"mood\"]}";
        const char *doc =
            "{\"name\": \"Aldric the Grey\", \"age\": 57, \"bio\": \"A retired blacksmith who keeps bees behind the "
            "mill and tells long stories about the war, most of them true. Speaks softly; distrusts wizards.\", "
            "\"skills\": [{\"skill\": \"smithing\", \"level\": 9.5}, {\"skill\": \"beekeeping\", \"level\": 6}], "
            "\"mood\": \"calm\"}";
        if (ember_grammar_from_json_schema(schema, strlen(schema), NULL, &g, &err) != EMBER_OK) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
        run(m, "json-schema", g, doc);
        ember_grammar_free(g);
        const char *words[] = {"attack", "flee", "talk"};
        ember_grammar_from_strings(words, 3, NULL, &g, &err);
        run(m, "one-of-3", g, "flee");
        ember_grammar_free(g);
        const char *free_text = "root ::= [^\\x00]*";
        ember_grammar_parse(free_text, strlen(free_text), NULL, NULL, &g, &err);
        run(m, "anything", g, "Once upon a time, in a village by the sea, there lived an old fisherman.");
        ember_grammar_free(g);
    }
    ember_model_free(m);
    return 0;
}
