/* sampler.c - choosing the next token from logits.
 *
 * The chain follows llama.cpp's default order: repetition penalty, top-k,
 * top-p, min-p, temperature, then a draw from the remaining distribution
 * (or argmax when the temperature is 0).  An attached grammar removes the
 * tokens it does not allow before all of these (grammar.c).  All memory is
 * allocated when the sampler is created; sampling allocates nothing, except
 * that a grammar's caches grow as it meets new parse positions. */
#include "sampler.h"
#include "grammar.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct es_cand { float logit; int32_t id; } es_cand;

struct ember_sampler {
    ember_sampler_params p;
    const ember_allocator *a;
    int n_vocab;
    uint64_t rng;
    es_cand *cand;       /* n_vocab candidates */
    float *probs;        /* n_vocab */
    ember_logit_bias *bias;   /* p.n_logit_bias entries (owned copy) */
    uint32_t *stamp;     /* per token: last sample call that penalised it */
    uint32_t calls;
    int32_t *history;    /* ring of the last repeat_last_n tokens */
    int hist_len, hist_pos;
    const ember_model *model;
    eg_matcher *gm;      /* the attached grammar's parse state, or NULL */
    uint8_t *allowed;    /* n_vocab: the grammar's mask */
    char errmsg[256];    /* the last call's failure, "" after a success */
};

/* Set the sampler's message (printf-style) and return code. */
static ember_status es_fail(ember_sampler *s, ember_status code, const char *fmt, ...)
    EC_PRINTF(3, 4)
    ;
static ember_status es_fail(ember_sampler *s, ember_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

const char *ember_sampler_errmsg(const ember_sampler *s) { return s ? s->errmsg : "sampler is NULL"; }

ember_sampler_params ember_sampler_default_params(void) {
    ember_sampler_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.seed = 0x5eed;
    return p;
}

/* splitmix64: a small, well-mixed generator; same seed, same sequence. */
static uint64_t es_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double es_uniform(uint64_t *state) { return (double)(es_next(state) >> 11) * (1.0 / 9007199254740992.0); }

/* The first parameter out of its range, named with its value in err. */
static ember_status es_check_params(const ember_sampler_params *p, int n_vocab, ember_error *err) {
    const ember_status bad = EMBER_ERR_INVALID_ARG;
    if (!(p->temperature >= 0)) return ec_fail(err, bad, "temperature %g: must be >= 0", (double)p->temperature);
    if (p->top_k < 0) return ec_fail(err, bad, "top_k %d: must be >= 0", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1)) return ec_fail(err, bad, "top_p %g: must be in (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0 && p->min_p < 1)) return ec_fail(err, bad, "min_p %g: must be in [0, 1)", (double)p->min_p);
    if (!(p->repeat_penalty > 0))
        return ec_fail(err, bad, "repeat_penalty %g: must be > 0", (double)p->repeat_penalty);
    if (p->repeat_last_n < 0 || p->repeat_last_n > (1 << 20))
        return ec_fail(err, bad, "repeat_last_n %d: must be in 0..%d", p->repeat_last_n, 1 << 20);
    if (p->n_logit_bias < 0) return ec_fail(err, bad, "n_logit_bias %d: must be >= 0", p->n_logit_bias);
    if (p->n_logit_bias && !p->logit_bias)
        return ec_fail(err, bad, "logit_bias is NULL but n_logit_bias is %d", p->n_logit_bias);
    for (int i = 0; i < p->n_logit_bias; i++) {
        if (p->logit_bias[i].token < 0 || p->logit_bias[i].token >= n_vocab)
            return ec_fail(err, bad, "logit_bias[%d]: token %d is outside the vocabulary (0..%d)", i,
                           (int)p->logit_bias[i].token, n_vocab - 1);
        if (isnan(p->logit_bias[i].bias) || p->logit_bias[i].bias == INFINITY)
            return ec_fail(err, bad, "logit_bias[%d]: bias %g: must be a number or -INFINITY", i,
                           (double)p->logit_bias[i].bias);
    }
    return EMBER_OK;
}

ember_status ember_sampler_create(const ember_model *model, const ember_sampler_params *params, ember_sampler **out,
                                  ember_error *err) {
    if (!out) return ec_fail(err, EMBER_ERR_INVALID_ARG, "out_sampler is NULL");
    *out = NULL;
    if (!model) return ec_fail(err, EMBER_ERR_INVALID_ARG, "model is NULL");
    ember_sampler_params p = params ? *params : ember_sampler_default_params();
    ember_status rc = es_check_params(&p, ember_n_vocab(model), err);
    if (rc != EMBER_OK) return rc;
    const ember_allocator *a = p.allocator;
    ember_sampler *s = (ember_sampler *)ec_calloc(a, 1, sizeof *s);
    if (!s) return ec_fail(err, EMBER_ERR_NOMEM, "out of memory for the sampler");
    s->p = p;
    s->a = a;
    s->n_vocab = ember_n_vocab(model);
    s->model = model;
    s->cand = (es_cand *)ec_calloc(a, (size_t)s->n_vocab, sizeof *s->cand);
    s->probs = (float *)ec_calloc(a, (size_t)s->n_vocab, sizeof *s->probs);
    s->stamp = (uint32_t *)ec_calloc(a, (size_t)s->n_vocab, sizeof *s->stamp);
    s->history = (int32_t *)ec_calloc(a, (size_t)(p.repeat_last_n ? p.repeat_last_n : 1), sizeof *s->history);
    s->bias = p.n_logit_bias ? (ember_logit_bias *)ec_calloc(a, (size_t)p.n_logit_bias, sizeof *s->bias) : NULL;
    if (s->bias) memcpy(s->bias, p.logit_bias, (size_t)p.n_logit_bias * sizeof *s->bias);
    s->p.logit_bias = s->bias;
    if (!s->cand || !s->probs || !s->stamp || !s->history || (p.n_logit_bias && !s->bias)) {
        ember_sampler_free(s);
        return ec_fail(err, EMBER_ERR_NOMEM, "out of memory for the sampler's %d candidates", ember_n_vocab(model));
    }
    ember_sampler_reset(s, p.seed);
    *out = s;
    return ec_ok(err);
}

void ember_sampler_free(ember_sampler *s) {
    if (!s) return;
    ec_free(s->a, s->cand);
    ec_free(s->a, s->probs);
    ec_free(s->a, s->stamp);
    ec_free(s->a, s->history);
    ec_free(s->a, s->bias);
    eg_matcher_free(s->gm);
    ec_free(s->a, s->allowed);
    ec_free(s->a, s);
}

void ember_sampler_reset(ember_sampler *s, uint64_t seed) {
    if (!s) return;
    s->rng = seed;
    s->hist_len = s->hist_pos = 0;
    if (s->gm) eg_matcher_reset(s->gm);
}

static void es_history_push(ember_sampler *s, ember_token token) {
    if (s->p.repeat_last_n == 0 || token < 0 || token >= s->n_vocab) return;
    s->history[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->hist_len < s->p.repeat_last_n) s->hist_len++;
}

ember_status ember_sampler_accept(ember_sampler *s, ember_token token) {
    if (!s) return EMBER_ERR_INVALID_ARG;
    s->errmsg[0] = 0;
    if (token < 0 || token >= s->n_vocab)
        return es_fail(s, EMBER_ERR_BAD_TOKEN, "token %d is outside the vocabulary (0..%d)", (int)token, s->n_vocab - 1);
    es_history_push(s, token);
    if (s->gm) eg_matcher_accept(s->gm, token);
    return EMBER_OK;
}

ember_status ember_sampler_set_grammar(ember_sampler *s, const ember_grammar *g) {
    if (!s) return EMBER_ERR_INVALID_ARG;
    s->errmsg[0] = 0;
    if (!g) {
        eg_matcher_free(s->gm);
        ec_free(s->a, s->allowed);
        s->gm = NULL;
        s->allowed = NULL;
        return EMBER_OK;
    }
    if (s->gm) {   /* the vocabulary side does not depend on the grammar: keep it */
        eg_matcher_set_grammar(s->gm, g);
        return EMBER_OK;
    }
    s->allowed = (uint8_t *)ec_malloc(s->a, (size_t)s->n_vocab);
    if (!s->allowed) return es_fail(s, EMBER_ERR_NOMEM, "out of memory for the grammar's mask");
    int rc = eg_matcher_create(g, s->model, s->a, &s->gm);
    if (rc != EMBER_OK) {
        ec_free(s->a, s->allowed);
        s->allowed = NULL;
        return es_fail(s, (ember_status)rc, "attaching the grammar failed: %s", ember_status_string((ember_status)rc));
    }
    return EMBER_OK;
}

static ember_token es_sample(ember_sampler *s, const float *logits);

static int es_cmp_desc(const void *a, const void *b) {
    const es_cand *x = (const es_cand *)a, *y = (const es_cand *)b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;   /* ties: lower id first (deterministic) */
}

/* Move the k largest candidates to the front (unordered): quickselect. */
static void es_select_top(es_cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        es_cand pivot = c[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (es_cmp_desc(&c[i], &pivot) < 0) i++;
            while (es_cmp_desc(&c[j], &pivot) > 0) j--;
            if (i <= j) { es_cand t = c[i]; c[i] = c[j]; c[j] = t; i++; j--; }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

/* Softmax of the n candidates' logits / temp into probs (descending order
 * of candidates not required). */
static void es_softmax(const es_cand *c, int n, float temp, float *probs) {
    float mx = c[0].logit;
    for (int i = 1; i < n; i++) if (c[i].logit > mx) mx = c[i].logit;
    double sum = 0;
    for (int i = 0; i < n; i++) { probs[i] = expf((c[i].logit - mx) / temp); sum += probs[i]; }
    for (int i = 0; i < n; i++) probs[i] = (float)(probs[i] / sum);
}

/* Keep only the candidates the grammar allows, at the front of c; returns
 * how many (0: none, -1: the grammar failed).  Masking the whole
 * vocabulary is the expensive part, so first the candidates that can win
 * are checked one by one: the argmax when greedy, the best few when top-k
 * limits the draw (the top k allowed tokens are the first k allowed ones in
 * logit order).  The result is exactly what masking first would give. */
static int es_grammar_filter(ember_sampler *s, es_cand *c, int V) {
    int n = -1;
    if (s->p.temperature <= 0) {
        int best = 0;
        for (int i = 1; i < V; i++) if (es_cmp_desc(&c[i], &c[best]) < 0) best = i;
        if (c[best].logit > -INFINITY && eg_matcher_allows(s->gm, c[best].id)) {
            c[0] = c[best];
            return 1;
        }
        /* A position that allows few tokens masks quickly; for one that
         * allows many, the next best few are checked in order instead (the
         * first allowed one is the argmax of the allowed tokens). */
        n = eg_matcher_mask_within(s->gm, s->allowed, 20000);
        if (n == EG_MASK_UNFINISHED) {
            int look = V < 64 ? V : 64;
            es_select_top(c, V, look);
            qsort(c, (size_t)look, sizeof *c, es_cmp_desc);
            for (int i = 0; i < look; i++)
                if (c[i].logit > -INFINITY && eg_matcher_allows(s->gm, c[i].id)) {
                    c[0] = c[i];
                    return 1;
                }
            n = -1;
        }
    } else if (s->p.top_k > 0) {
        int look = 4 * s->p.top_k < 256 ? 256 : 4 * s->p.top_k;
        if (look > V) look = V;
        es_select_top(c, V, look);
        qsort(c, (size_t)look, sizeof *c, es_cmp_desc);
        int kept = 0;
        for (int i = 0; i < look && kept < s->p.top_k; i++)
            if (c[i].logit > -INFINITY && eg_matcher_allows(s->gm, c[i].id)) c[kept++] = c[i];
        if (kept == s->p.top_k || look == V) return kept;
    }
    if (n < 0) n = eg_matcher_mask(s->gm, s->allowed);
    if (n <= 0) return n < 0 ? -1 : 0;
    int kept = 0;
    for (int i = 0; i < V; i++)
        if (s->allowed[c[i].id] && c[i].logit > -INFINITY) c[kept++] = c[i];
    return kept;
}

ember_status ember_sampler_sample(ember_sampler *s, const float *logits, ember_token *out) {
    if (out) *out = -1;
    if (!s) return EMBER_ERR_INVALID_ARG;
    s->errmsg[0] = 0;
    if (!logits || !out) return es_fail(s, EMBER_ERR_INVALID_ARG, "%s is NULL", logits ? "out" : "logits");
    *out = es_sample(s, logits);
    if (*out < 0)
        return es_fail(s, EMBER_ERR_GRAMMAR, "no token of the vocabulary is allowed by the grammar%s",
                       eg_matcher_complete(s->gm) ? " (the text is complete and the model has no end token)" : "");
    return EMBER_OK;
}

/* The chain; -1 when an attached grammar allows no token. */
static ember_token es_sample(ember_sampler *s, const float *logits) {
    const int V = s->n_vocab;
    es_cand *c = s->cand;
    /* Non-finite logits would break the comparisons below (NaN: the
     * quickselect's bounds) and the softmax (inf - inf): NaN counts as the
     * least likely, infinities are clamped to the largest finite floats. */
    for (int i = 0; i < V; i++) {
        float x = logits[i];
        c[i].logit = isnan(x) ? -FLT_MAX : x > FLT_MAX ? FLT_MAX : x < -FLT_MAX ? -FLT_MAX : x;
        c[i].id = i;
    }

    for (int i = 0; i < s->p.n_logit_bias; i++) {
        float *x = &c[s->bias[i].token].logit;
        *x = s->bias[i].bias == -INFINITY ? -INFINITY : *x + s->bias[i].bias;
        if (*x > FLT_MAX) *x = FLT_MAX;
    }

    /* Repetition penalty, once per distinct recent token (as llama.cpp). */
    if (s->p.repeat_penalty != 1.0f && s->hist_len > 0) {
        s->calls++;
        for (int i = 0; i < s->hist_len; i++) {
            int32_t t = s->history[i];
            if (s->stamp[t] == s->calls) continue;
            s->stamp[t] = s->calls;
            c[t].logit = c[t].logit > 0 ? c[t].logit / s->p.repeat_penalty : c[t].logit * s->p.repeat_penalty;
        }
    }

    int n = V;
    if (s->gm) {
        if (eg_matcher_complete(s->gm)) return eg_matcher_eog(s->gm, logits);
        n = es_grammar_filter(s, c, V);
        if (n <= 0) return -1;
    }

    if (s->p.temperature <= 0) {
        int best = 0;
        for (int i = 1; i < n; i++) if (es_cmp_desc(&c[i], &c[best]) < 0) best = i;
        return c[best].id;
    }

    if (s->p.top_k > 0 && s->p.top_k < n) {
        es_select_top(c, n, s->p.top_k);
        n = s->p.top_k;
    }
    qsort(c, (size_t)n, sizeof *c, es_cmp_desc);

    if (s->p.top_p < 1.0f) {
        es_softmax(c, n, 1.0f, s->probs);
        double cum = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += s->probs[i];
            if (cum >= s->p.top_p) { keep = i + 1; break; }
        }
        n = keep;
    }
    if (s->p.min_p > 0) {
        /* p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p). */
        float cut = c[0].logit + logf(s->p.min_p);
        int keep = 1;
        while (keep < n && c[keep].logit >= cut) keep++;
        n = keep;
    }

    es_softmax(c, n, s->p.temperature, s->probs);
    double r = es_uniform(&s->rng), cum = 0;
    for (int i = 0; i < n; i++) {
        cum += s->probs[i];
        if (r < cum) return c[i].id;
    }
    return c[n - 1].id;
}

/* ---- state as bytes (little-endian): u64 rng, u32 count, count x i32 ---- */

size_t es_state_bytes(const ember_sampler *s) { return 12 + 4 * (size_t)s->hist_len; }

static void es_put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t es_get32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

void es_state_write(const ember_sampler *s, uint8_t *out) {
    es_put32(out, (uint32_t)s->rng);
    es_put32(out + 4, (uint32_t)(s->rng >> 32));
    es_put32(out + 8, (uint32_t)s->hist_len);
    const int cap = s->p.repeat_last_n, oldest = s->hist_len < cap ? 0 : s->hist_pos;
    for (int i = 0; i < s->hist_len; i++) es_put32(out + 12 + 4 * i, (uint32_t)s->history[(oldest + i) % cap]);
}

int es_state_read(ember_sampler *s, const uint8_t *in, size_t n) {
    if (n < 12) return EMBER_ERR_CORRUPT;
    uint32_t count = es_get32(in + 8);
    if (count > (1u << 20) || n != 12 + 4 * (size_t)count) return EMBER_ERR_CORRUPT;
    for (uint32_t i = 0; i < count; i++)
        if (es_get32(in + 12 + 4 * i) >= (uint32_t)s->n_vocab) return EMBER_ERR_CORRUPT;
    /* The random state and history only: a grammar's parse state is not
     * part of the bytes and stays as it is. */
    s->rng = (uint64_t)es_get32(in) | (uint64_t)es_get32(in + 4) << 32;
    s->hist_len = s->hist_pos = 0;
    for (uint32_t i = 0; i < count; i++) es_history_push(s, (ember_token)es_get32(in + 12 + 4 * i));
    return EMBER_OK;
}
