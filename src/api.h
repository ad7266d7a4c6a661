/* api.h - what the public handles hold, for the sources of the public API
 * (ember.c, state.c).  Knows the model and the sampler; nothing below
 * knows it. */
#ifndef EMBER_API_H
#define EMBER_API_H

#include "model.h"
#include "sampler.h"
#include "platform.h"

struct ember_model {
    em_model m;
    ember_allocator alloc;          /* copy of the caller's hook */
    const ember_allocator *a;       /* &alloc, or NULL for libc */
    ep_region region;               /* the file's mapping or read-in copy, if we own one */
    int load_mode;
    char arch[32], name[128], tokenizer[16];
    et_pool *pool;                  /* threads every context of the model shares */
};

struct ember_context {
    const ember_model *model;
    ember_allocator alloc;
    const ember_allocator *a;
    em_state st;
    int pos;                        /* positions filled in the KV cache */
    int has_logits;                 /* st.logits predict the token at pos */
    ember_token *tokens;            /* [n_ctx]: the token at each position */
    char *stream;                   /* bytes held back until UTF-8 completes
                                       or no stop string can begin in them */
    size_t stream_len, stream_cap;
    char *stops;                    /* stop strings, NUL-separated (owned) */
    int n_stops;
    float *multi_logits;            /* ember_eval_multi: multi_rows rows of logits */
    int multi_rows;
    char errmsg[256];
};

/* Set the context's message (printf-style) and return code. */
EMBER_INTERNAL ember_status ea_ctx_fail(ember_context *ctx, ember_status code, const char *fmt, ...)
    EC_PRINTF(3, 4)
    ;
/* At the entry of every context function that can fail: a success leaves
 * the message "", so it never describes an older call. */
static inline void ea_ctx_begin(ember_context *ctx) { ctx->errmsg[0] = 0; }

#endif
