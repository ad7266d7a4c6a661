/* state.c - a context's state as bytes (to a buffer or a file) and back,
 * and copying a prefix of one context's cache into another.
 *
 * Layout, little-endian, every count checked on the way in:
 *   "EMBERST\0"  magic                      8 bytes
 *   u32 version (1), u32 kv_type, u64 model fingerprint
 *   u32 n_layer, u32 row bytes (one K or V row), u32 n_vocab, u32 n_swa
 *   i32 pos, u32 flags (1: logits follow, 2: sampler state follows)
 *   pos x i32 tokens
 *   per layer l: u32 first (em_kv_first), then (pos - first) K rows and as
 *                many V rows
 *   n_vocab x f32 logits                    (flag 1)
 *   u32 bytes, sampler state                (flag 2)
 *   u64 FNV-1a of everything before it
 * The size follows the positions held (a local layer only its window), not
 * n_ctx.  Nothing is changed until the whole state has been checked. */
#include "api.h"

#include <stdio.h>
#include <string.h>

#define ST_MAGIC "EMBERST"     /* with its NUL: 8 bytes */
#define ST_VERSION 1
#define ST_HEADER 48
enum { ST_HAS_LOGITS = 1, ST_HAS_SAMPLER = 2 };

static uint64_t st_fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
#define ST_FNV_INIT 0xcbf29ce484222325ull

/* ---- writing -------------------------------------------------------------- */

typedef struct st_out {
    uint8_t *buf;         /* memory, or NULL when writing to f */
    FILE *f;
    size_t n;
    uint64_t h;
    int failed;           /* a write to f failed */
} st_out;

static void st_put(st_out *o, const void *d, size_t n) {
    o->h = st_fnv(o->h, d, n);
    if (o->buf) memcpy(o->buf + o->n, d, n);
    else if (!o->failed && fwrite(d, 1, n, o->f) != n) o->failed = 1;
    o->n += n;
}

static void st_put32(st_out *o, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    st_put(o, b, 4);
}

static void st_put64(st_out *o, uint64_t v) {
    st_put32(o, (uint32_t)v);
    st_put32(o, (uint32_t)(v >> 32));
}

static size_t st_size(const ember_context *ctx, const ember_sampler *smp) {
    const em_state *s = &ctx->st;
    const em_hparams *hp = &ctx->model->m.hp;
    size_t n = ST_HEADER + 4 * (size_t)ctx->pos + 8, rb = em_kv_row_bytes(s);
    for (int l = 0; l < hp->n_layer; l++) n += 4 + 2 * rb * (size_t)(ctx->pos - em_kv_first(s, l, ctx->pos));
    if (ctx->has_logits) n += 4 * (size_t)hp->n_vocab;
    if (smp) n += 4 + es_state_bytes(smp);
    return n;
}

static void st_write(const ember_context *ctx, const ember_sampler *smp, st_out *o) {
    const em_state *s = &ctx->st;
    const em_model *m = &ctx->model->m;
    const int pos = ctx->pos;
    const size_t rb = em_kv_row_bytes(s);
    o->h = ST_FNV_INIT;
    st_put(o, ST_MAGIC, 8);
    st_put32(o, ST_VERSION);
    st_put32(o, (uint32_t)s->kv_type);
    st_put64(o, m->fingerprint);
    st_put32(o, (uint32_t)m->hp.n_layer);
    st_put32(o, (uint32_t)rb);
    st_put32(o, (uint32_t)m->hp.n_vocab);
    st_put32(o, (uint32_t)m->hp.n_swa);
    st_put32(o, (uint32_t)pos);
    st_put32(o, (ctx->has_logits ? ST_HAS_LOGITS : 0) | (smp ? ST_HAS_SAMPLER : 0));
    for (int i = 0; i < pos; i++) st_put32(o, (uint32_t)ctx->tokens[i]);
    for (int l = 0; l < m->hp.n_layer; l++) {
        int first = em_kv_first(s, l, pos);
        st_put32(o, (uint32_t)first);
        for (int which = 0; which < 2; which++)
            for (int p = first; p < pos; p++) st_put(o, em_kv_row(s, l, which, p), rb);
    }
    if (ctx->has_logits) st_put(o, s->logits, 4 * (size_t)m->hp.n_vocab);   /* floats are little-endian here */
    if (smp) {
        uint8_t tmp[1024];
        size_t n = es_state_bytes(smp);
        st_put32(o, (uint32_t)n);
        if (n <= sizeof tmp) {
            es_state_write(smp, tmp);
            st_put(o, tmp, n);
        } else {   /* long repetition histories: through the context's allocator */
            uint8_t *big = (uint8_t *)ec_malloc(ctx->a, n);
            if (!big) { o->failed = 2; return; }
            es_state_write(smp, big);
            st_put(o, big, n);
            ec_free(ctx->a, big);
        }
    }
    st_put64(o, o->h);
}

size_t ember_state_size(const ember_context *ctx, const ember_sampler *sampler) {
    return ctx ? st_size(ctx, sampler) : 0;
}

ember_status ember_state_save(ember_context *ctx, const ember_sampler *sampler, void *buf, size_t size,
                              size_t *written) {
    if (written) *written = 0;
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (!buf && size) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "buf is NULL");
    size_t need = st_size(ctx, sampler);
    if (written) *written = need;
    if (size < need)
        return ea_ctx_fail(ctx, EMBER_ERR_BUFFER_TOO_SMALL, "the state takes %zu bytes, the buffer holds %zu", need, size);
    st_out o = {(uint8_t *)buf, NULL, 0, 0, 0};
    st_write(ctx, sampler, &o);
    if (o.failed) return ea_ctx_fail(ctx, EMBER_ERR_NOMEM, "out of memory saving the sampler's history");
    return EMBER_OK;
}

ember_status ember_state_save_file(ember_context *ctx, const ember_sampler *sampler, const char *path) {
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (!path) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "path is NULL");
    FILE *f = fopen(path, "wb");
    if (!f) return ea_ctx_fail(ctx, EMBER_ERR_IO, "cannot create '%s'", path);
    st_out o = {NULL, f, 0, 0, 0};
    st_write(ctx, sampler, &o);
    int closed = fclose(f);
    if (o.failed == 2) return ea_ctx_fail(ctx, EMBER_ERR_NOMEM, "out of memory saving the sampler's history");
    if (o.failed || closed) return ea_ctx_fail(ctx, EMBER_ERR_IO, "writing '%s' failed", path);
    return EMBER_OK;
}

/* ---- reading -------------------------------------------------------------- */

typedef struct st_in {
    const uint8_t *p;
    size_t n, at;
} st_in;

static int st_has(const st_in *in, size_t n) { return in->n - in->at >= n; }

static uint32_t st_get32(st_in *in) {
    const uint8_t *b = in->p + in->at;
    in->at += 4;
    return b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t st_get64(st_in *in) {
    uint64_t lo = st_get32(in);
    return lo | (uint64_t)st_get32(in) << 32;
}

/* Where the parts of a checked state are. */
typedef struct st_parts {
    int pos, flags;
    size_t tokens, layers, logits, sampler, sampler_bytes;
} st_parts;

/* Check everything a load will use; fill parts.  The context is untouched. */
static ember_status st_check(ember_context *ctx, const void *buf, size_t size, st_parts *pt) {
    const em_state *s = &ctx->st;
    const em_model *m = &ctx->model->m;
    const size_t rb = em_kv_row_bytes(s);
    st_in in = {(const uint8_t *)buf, size, 0};
    if (size < 8 || memcmp(buf, ST_MAGIC, 8) != 0)
        return ea_ctx_fail(ctx, EMBER_ERR_CORRUPT, "not an ember state (bad magic)");
    if (size < ST_HEADER + 8) return ea_ctx_fail(ctx, EMBER_ERR_TRUNCATED, "the state ends inside its header");
    st_in tail = {(const uint8_t *)buf, size, size - 8};
    const uint64_t sum = st_get64(&tail);
    in.at = 8;
    uint32_t version = st_get32(&in), kv_type = st_get32(&in);
    uint64_t fp = st_get64(&in);
    uint32_t n_layer = st_get32(&in), row = st_get32(&in), n_vocab = st_get32(&in), n_swa = st_get32(&in);
    uint32_t pos = st_get32(&in), flags = st_get32(&in);
    if (version != ST_VERSION)
        return ea_ctx_fail(ctx, EMBER_ERR_UNSUPPORTED, "state version %u is not supported (this build reads %d)", version,
                           ST_VERSION);
    if (st_fnv(ST_FNV_INIT, buf, size - 8) != sum)
        return ea_ctx_fail(ctx, EMBER_ERR_CORRUPT, "the state's checksum does not match: it is damaged or truncated");
    if (fp != m->fingerprint || n_layer != (uint32_t)m->hp.n_layer || n_vocab != (uint32_t)m->hp.n_vocab ||
        n_swa != (uint32_t)m->hp.n_swa)
        return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "the state was saved from a different model");
    if (kv_type != (uint32_t)s->kv_type || row != rb)
        return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "the state has a %s KV cache, the context %s",
                           kv_type == EMBER_KV_F32 ? "F32" : "F16", s->kv_type == EMBER_KV_F32 ? "F32" : "F16");
    if (pos > (uint32_t)s->n_ctx)
        return ea_ctx_fail(ctx, EMBER_ERR_CONTEXT_FULL, "the state holds %u positions, the context only %d", pos,
                           s->n_ctx);
    if (flags & ~(uint32_t)(ST_HAS_LOGITS | ST_HAS_SAMPLER))
        return ea_ctx_fail(ctx, EMBER_ERR_CORRUPT, "the state has unknown flags %#x", flags);
    pt->pos = (int)pos;
    pt->flags = (int)flags;
    in.n = size - 8;
    pt->tokens = in.at;
    if (!st_has(&in, 4 * (size_t)pos)) return ea_ctx_fail(ctx, EMBER_ERR_TRUNCATED, "the state ends inside its tokens");
    for (uint32_t i = 0; i < pos; i++)
        if (st_get32(&in) >= n_vocab) return ea_ctx_fail(ctx, EMBER_ERR_CORRUPT, "token %u of the state is out of range", i);
    pt->layers = in.at;
    for (int l = 0; l < m->hp.n_layer; l++) {
        if (!st_has(&in, 4)) return ea_ctx_fail(ctx, EMBER_ERR_TRUNCATED, "the state ends before layer %d", l);
        uint32_t first = st_get32(&in);
        if (first != (uint32_t)em_kv_first(s, l, (int)pos))
            return ea_ctx_fail(ctx, EMBER_ERR_CORRUPT, "layer %d of the state starts at position %u, expected %d", l,
                               first, em_kv_first(s, l, (int)pos));
        size_t bytes = 2 * rb * (size_t)(pos - first);
        if (!st_has(&in, bytes)) return ea_ctx_fail(ctx, EMBER_ERR_TRUNCATED, "the state ends inside layer %d", l);
        in.at += bytes;
    }
    pt->logits = in.at;
    if (flags & ST_HAS_LOGITS) {
        if (pos == 0) return ea_ctx_fail(ctx, EMBER_ERR_CORRUPT, "the state has logits but no positions");
        if (!st_has(&in, 4 * (size_t)n_vocab)) return ea_ctx_fail(ctx, EMBER_ERR_TRUNCATED, "the state ends inside its logits");
        in.at += 4 * (size_t)n_vocab;
    }
    pt->sampler = pt->sampler_bytes = 0;
    if (flags & ST_HAS_SAMPLER) {
        if (!st_has(&in, 4)) return ea_ctx_fail(ctx, EMBER_ERR_TRUNCATED, "the state ends before its sampler");
        pt->sampler_bytes = st_get32(&in);
        pt->sampler = in.at;
        if (!st_has(&in, pt->sampler_bytes)) return ea_ctx_fail(ctx, EMBER_ERR_TRUNCATED, "the state ends inside its sampler");
        in.at += pt->sampler_bytes;
    }
    if (in.at != in.n) return ea_ctx_fail(ctx, EMBER_ERR_CORRUPT, "%zu bytes follow the state", in.n - in.at);
    return EMBER_OK;
}

ember_status ember_state_load(ember_context *ctx, ember_sampler *sampler, const void *buf, size_t size) {
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (!buf && size) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "buf is NULL");
    st_parts pt = {0, 0, 0, 0, 0, 0, 0};
    ember_status rc = st_check(ctx, buf, size, &pt);
    if (rc != EMBER_OK) return rc;
    const uint8_t *b = (const uint8_t *)buf;
    if (sampler && (pt.flags & ST_HAS_SAMPLER)) {
        /* the sampler checks its own part; it is the one thing that can
         * still fail, so it goes first */
        if (es_state_read(sampler, b + pt.sampler, pt.sampler_bytes) != EMBER_OK)
            return ea_ctx_fail(ctx, EMBER_ERR_CORRUPT, "the state's sampler part is not a sampler state "
                               "(or the sampler is for another vocabulary)");
    }
    em_state *s = &ctx->st;
    const size_t rb = em_kv_row_bytes(s);
    em_state_clear(s);
    st_in in = {b, size, pt.tokens};
    for (int i = 0; i < pt.pos; i++) ctx->tokens[i] = (ember_token)st_get32(&in);
    for (int l = 0; l < ctx->model->m.hp.n_layer; l++) {
        int first = (int)st_get32(&in);
        for (int which = 0; which < 2; which++)
            for (int p = first; p < pt.pos; p++, in.at += rb) em_kv_put(s, l, which, p, b + in.at);
    }
    em_state_restored(s, pt.pos);
    ctx->pos = pt.pos;
    ctx->has_logits = (pt.flags & ST_HAS_LOGITS) != 0;
    if (ctx->has_logits) memcpy(s->logits, b + pt.logits, 4 * (size_t)ctx->model->m.hp.n_vocab);
    ctx->stream_len = 0;
    return EMBER_OK;
}

ember_status ember_state_load_file(ember_context *ctx, ember_sampler *sampler, const char *path) {
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (!path) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return ea_ctx_fail(ctx, EMBER_ERR_IO, "cannot open '%s'", path);
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = (uint8_t *)ec_malloc(ctx->a, cap);
    ember_status rc = buf ? EMBER_OK : EMBER_ERR_NOMEM;
    while (rc == EMBER_OK) {
        if (n == cap) {
            uint8_t *bigger = cap <= SIZE_MAX / 2 ? (uint8_t *)ec_realloc(ctx->a, buf, cap * 2) : NULL;
            if (!bigger) { rc = EMBER_ERR_NOMEM; break; }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) { if (ferror(f)) rc = EMBER_ERR_IO; break; }
    }
    fclose(f);
    if (rc == EMBER_OK) rc = ember_state_load(ctx, sampler, buf, n);
    else rc = ea_ctx_fail(ctx, rc, rc == EMBER_ERR_NOMEM ? "out of memory reading '%s'" : "reading '%s' failed", path);
    ec_free(ctx->a, buf);
    return rc;
}

/* ---- sharing a prefix ----------------------------------------------------- */

ember_status ember_context_copy_prefix(ember_context *dst, const ember_context *src, int n) {
    if (!dst) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(dst);
    if (!src) return ea_ctx_fail(dst, EMBER_ERR_INVALID_ARG, "src is NULL");
    if (src == dst) return ea_ctx_fail(dst, EMBER_ERR_INVALID_ARG, "src and dst are the same context");
    if (src->model->m.fingerprint != dst->model->m.fingerprint)
        return ea_ctx_fail(dst, EMBER_ERR_INVALID_ARG, "the contexts are of different models");
    if (src->st.kv_type != dst->st.kv_type)
        return ea_ctx_fail(dst, EMBER_ERR_INVALID_ARG, "the contexts have different KV cache types");
    if (n < 0 || n > src->pos) return ea_ctx_fail(dst, EMBER_ERR_INVALID_ARG, "n = %d is not in 0..%d", n, src->pos);
    if (n > dst->st.n_ctx)
        return ea_ctx_fail(dst, EMBER_ERR_CONTEXT_FULL, "%d positions do not fit in a context of %d", n, dst->st.n_ctx);
    if (n && !em_state_can_rewind(&src->st, n))
        return ea_ctx_fail(dst, EMBER_ERR_INVALID_ARG,
                           "the source no longer holds the sliding-window rows of position %d", n);
    em_state *d = &dst->st;
    em_state_clear(d);
    for (int l = 0; l < dst->model->m.hp.n_layer; l++)
        for (int which = 0; which < 2; which++)
            for (int p = em_kv_first(d, l, n); p < n; p++) em_kv_put(d, l, which, p, em_kv_row(&src->st, l, which, p));
    memcpy(dst->tokens, src->tokens, (size_t)n * sizeof *dst->tokens);
    em_state_restored(d, n);
    dst->pos = n;
    dst->stream_len = 0;
    /* the logits at n: the source's when it holds exactly n, else none
     * until the caller evaluates */
    dst->has_logits = n == src->pos && src->has_logits;
    if (dst->has_logits) memcpy(d->logits, src->st.logits, sizeof(float) * (size_t)dst->model->m.hp.n_vocab);
    return EMBER_OK;
}
