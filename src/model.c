/* model.c - the llama architecture: loading from GGUF and the forward pass.
 *
 * Loading checks every hyperparameter against every tensor shape before any
 * of it is used, so the forward pass can trust what it reads.  The forward
 * pass runs a batch of tokens through each layer as matrix-matrix products
 * (prompt processing) or a single token as matrix-vector products
 * (generation), splitting rows of each weight matrix across threads. */
#include "model.h"
#include "vocab.h"

#include <stdatomic.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- loading ------------------------------------------------------------ */

#define EM_MAX_LAYERS 4096
#define EM_MAX_DIM (1 << 20)

static int em_get_dim(const gguf_file *f, const char *key, int required,
                      int fallback, int *out, char *err, size_t errlen) {
    uint32_t v;
    int rc = gguf_get_u32(f, key, &v);
    if (rc == EMBER_ERR_MISSING && !required) { *out = fallback; return EMBER_OK; }
    if (rc == EMBER_ERR_MISSING)
        return ec_errorf(err, errlen, rc, "missing metadata key '%s'", key);
    if (rc != EMBER_OK)
        return ec_errorf(err, errlen, rc, "metadata '%s' is not an unsigned integer", key);
    if (v == 0 || v > EM_MAX_DIM)
        return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "metadata '%s' = %u is out of range", key, v);
    *out = (int)v;
    return EMBER_OK;
}

static int em_get_float(const gguf_file *f, const char *key, float fallback,
                        float *out, char *err, size_t errlen) {
    int rc = gguf_get_f32(f, key, out);
    if (rc == EMBER_ERR_MISSING) { *out = fallback; return EMBER_OK; }
    if (rc != EMBER_OK)
        return ec_errorf(err, errlen, rc, "metadata '%s' is not a float", key);
    if (!isfinite(*out) || *out <= 0)
        return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "metadata '%s' = %g is out of range", key, (double)*out);
    return EMBER_OK;
}

static int em_read_hparams(em_hparams *hp, const gguf_file *f, char *err, size_t errlen) {
    gguf_str arch;
    if (gguf_get_str(f, "general.architecture", &arch) != EMBER_OK)
        return ec_errorf(err, errlen, EMBER_ERR_MISSING, "missing metadata key 'general.architecture'");
    if (!gguf_str_eq(arch, "llama"))
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED,
                         "architecture '%.*s' is not supported (only 'llama')",
                         (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
    int rc;
    if ((rc = em_get_dim(f, "llama.context_length", 1, 0, &hp->n_ctx_train, err, errlen)) ||
        (rc = em_get_dim(f, "llama.embedding_length", 1, 0, &hp->n_embd, err, errlen)) ||
        (rc = em_get_dim(f, "llama.block_count", 1, 0, &hp->n_layer, err, errlen)) ||
        (rc = em_get_dim(f, "llama.feed_forward_length", 1, 0, &hp->n_ff, err, errlen)) ||
        (rc = em_get_dim(f, "llama.attention.head_count", 1, 0, &hp->n_head, err, errlen)))
        return rc;
    if ((rc = em_get_dim(f, "llama.attention.head_count_kv", 0, hp->n_head, &hp->n_head_kv, err, errlen)))
        return rc;
    if (hp->n_layer > EM_MAX_LAYERS)
        return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "llama.block_count = %d is too large", hp->n_layer);
    if (hp->n_head > hp->n_embd)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "head_count %d exceeds embedding_length %d",
                         hp->n_head, hp->n_embd);
    if (hp->n_head % hp->n_head_kv != 0)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE,
                         "attention.head_count %d is not a multiple of head_count_kv %d",
                         hp->n_head, hp->n_head_kv);
    int default_hd = hp->n_embd / hp->n_head;
    if ((rc = em_get_dim(f, "llama.attention.key_length", 0, default_hd, &hp->head_dim, err, errlen)))
        return rc;
    int vlen;
    if ((rc = em_get_dim(f, "llama.attention.value_length", 0, hp->head_dim, &vlen, err, errlen)))
        return rc;
    if (vlen != hp->head_dim)
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED,
                         "attention.value_length %d differs from key_length %d", vlen, hp->head_dim);
    if (!gguf_find_kv(f, "llama.attention.key_length") && hp->n_embd % hp->n_head != 0)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE,
                         "embedding_length %d is not a multiple of head_count %d", hp->n_embd, hp->n_head);
    if (hp->head_dim % 2 != 0)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "head dimension %d is odd", hp->head_dim);
    if ((int64_t)hp->n_head * hp->head_dim > EM_MAX_DIM)   /* q_dim must not overflow int */
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "head_count %d x key_length %d is too large", hp->n_head, hp->head_dim);
    if ((rc = em_get_dim(f, "llama.rope.dimension_count", 0, hp->head_dim, &hp->rope_dim, err, errlen)))
        return rc;
    if (hp->rope_dim % 2 != 0 || hp->rope_dim > hp->head_dim)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "rope.dimension_count %d must be even and <= head dimension %d",
                         hp->rope_dim, hp->head_dim);
    if ((rc = em_get_float(f, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps, err, errlen)) ||
        (rc = em_get_float(f, "llama.rope.freq_base", 10000.0f, &hp->rope_freq_base, err, errlen)))
        return rc;
    hp->rope_freq_scale = 1.0f;
    gguf_str scaling;
    if (gguf_get_str(f, "llama.rope.scaling.type", &scaling) == EMBER_OK &&
        !gguf_str_eq(scaling, "none")) {
        if (!gguf_str_eq(scaling, "linear"))
            return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "rope scaling type '%.*s' is not supported",
                             (int)(scaling.len > 32 ? 32 : scaling.len), scaling.ptr);
        float factor;
        if ((rc = em_get_float(f, "llama.rope.scaling.factor", 1.0f, &factor, err, errlen))) return rc;
        hp->rope_freq_scale = 1.0f / factor;
    }
    return EMBER_OK;
}

/* Find a 2-D weight of n_out rows of n_in elements. */
static int em_get_matrix(const gguf_file *f, const char *name, int n_in, int n_out,
                         int required, em_matrix *out, char *err, size_t errlen) {
    const gguf_tensor *t = gguf_find_tensor(f, name);
    memset(out, 0, sizeof *out);
    if (!t) {
        if (!required) return EMBER_OK;
        return ec_errorf(err, errlen, EMBER_ERR_MISSING, "missing tensor '%s'", name);
    }
    if (t->ne[0] != n_in || t->ne[1] != n_out || t->ne[2] != 1 || t->ne[3] != 1)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE,
                         "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%d, %d]", name,
                         (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                         (long long)t->ne[3], n_in, n_out);
    if (!ek_type_supported(t->type)) {
        const ek_type_info *ti = ek_type_get(t->type);
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "tensor '%s' has type %s, which ember cannot run yet",
                         name, ti ? ti->name : "?");
    }
    out->data = t->data;
    out->type = t->type;
    out->n_in = n_in;
    out->n_out = n_out;
    return EMBER_OK;
}

/* Copy a 1-D tensor of n elements into owned F32 memory (norm weights are
 * tiny; copying also frees us from their storage type and alignment). */
static int em_get_vector(const gguf_file *f, const char *name, int n, const ember_allocator *a,
                         float **out, char *err, size_t errlen) {
    const gguf_tensor *t = gguf_find_tensor(f, name);
    *out = NULL;
    if (!t) return ec_errorf(err, errlen, EMBER_ERR_MISSING, "missing tensor '%s'", name);
    if (t->n_dims != 1 || t->ne[0] != n)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "tensor '%s' has %d dims and %lld elements, expected [%d]",
                         name, t->n_dims, (long long)t->ne[0], n);
    if (!ek_type_supported(t->type))
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "tensor '%s' has an unsupported type", name);
    float *v = ec_malloc_aligned(a, (size_t)n * sizeof(float));
    if (!v) return ec_errorf(err, errlen, EMBER_ERR_NOMEM, "out of memory copying '%s'", name);
    ek_dequant_row(t->type, t->data, v, n);
    *out = v;
    return EMBER_OK;
}

/* ---- model -------------------------------------------------------------- */

static uint64_t em_matrix_bytes(const em_matrix *w) {
    return w->data ? ek_row_bytes(w->type, (uint64_t)w->n_in) * (uint64_t)w->n_out : 0;
}

/* Matrix i of the model's 1 + 7 * n_layer matrices: the output head, then
 * each layer's seven. */
static const em_matrix *em_matrix_at(const em_model *m, int i) {
    if (i == 0) return &m->output;
    const em_layer *L = &m->layers[(i - 1) / 7];
    const em_matrix *ws[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return ws[(i - 1) % 7];
}

/* Pack every matrix the kernels want packed.  The token embedding is read
 * by rows, so it (and the output head when tied to it) stays as it is. */
static int em_pack_matrices(em_model *m, char *err, size_t errlen) {
    const int n = 1 + 7 * m->hp.n_layer;
    size_t scratch_bytes = 0;
    for (int i = m->tied_output; i < n; i++) {
        const em_matrix *w = em_matrix_at(m, i);
        size_t b = ek_pack_wanted(m->kernels, w->type, w->n_out) ? ek_pack_scratch_bytes(w->type, w->n_in) : 0;
        if (b > scratch_bytes) scratch_bytes = b;
    }
    if (!scratch_bytes) return EMBER_OK;
    void *scratch = ec_malloc_aligned(m->a, scratch_bytes);
    if (!scratch) return ec_errorf(err, errlen, EMBER_ERR_NOMEM, "out of memory");
    for (int i = m->tied_output; i < n; i++) {
        em_matrix *w = (em_matrix *)em_matrix_at(m, i);   /* m is ours to change */
        if (!ek_pack_wanted(m->kernels, w->type, w->n_out)) continue;
        ek_pack_rows(w->type, (void *)(uintptr_t)w->data, w->n_in, w->n_out, scratch);
        w->packed = 1;
        m->n_packed++;
    }
    ec_free_aligned(m->a, scratch);
    return EMBER_OK;
}

int em_model_init(em_model *m, gguf_file *f, const ember_allocator *a, int vocab_only, int may_pack, char *err,
                  size_t errlen) {
    memset(m, 0, sizeof *m);
    m->a = a;
    m->kernels = ek_kernels_best();
    em_hparams *hp = &m->hp;
    int rc;
    if (vocab_only) {
        m->vocab_only = 1;
        if ((rc = em_vocab_load(f, a, &m->tok, &m->max_piece_bytes, err, errlen))) { em_model_free(m); return rc; }
        hp->n_vocab = etok_n_vocab(m->tok);
        m->gguf = f;
        return EMBER_OK;
    }
    rc = em_read_hparams(hp, f, err, errlen);
    if (rc) return rc;

    /* The vocabulary size is the embedding's row count; the tokenizer must agree. */
    const gguf_tensor *te = gguf_find_tensor(f, "token_embd.weight");
    if (!te) return ec_errorf(err, errlen, EMBER_ERR_MISSING, "missing tensor 'token_embd.weight'");
    if (te->ne[1] < 1 || te->ne[1] > (1 << 24))
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "token_embd.weight has %lld rows", (long long)te->ne[1]);
    hp->n_vocab = (int)te->ne[1];

    const int n_embd = hp->n_embd, q_dim = hp->n_head * hp->head_dim,
              kv_dim = hp->n_head_kv * hp->head_dim, n_ff = hp->n_ff;
    if ((rc = em_get_matrix(f, "token_embd.weight", n_embd, hp->n_vocab, 1, &m->tok_embd, err, errlen)) ||
        (rc = em_get_matrix(f, "output.weight", n_embd, hp->n_vocab, 0, &m->output, err, errlen)))
        goto fail;
    if (!m->output.data) { m->output = m->tok_embd; m->tied_output = 1; }
    if ((rc = em_get_vector(f, "output_norm.weight", n_embd, a, &m->output_norm, err, errlen))) goto fail;

    m->layers = ec_calloc(a, (size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) { rc = ec_errorf(err, errlen, EMBER_ERR_NOMEM, "out of memory"); goto fail; }
    for (int l = 0; l < hp->n_layer; l++) {
        em_layer *L = &m->layers[l];
        char name[64];
#define EM_NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
        if ((rc = em_get_vector(f, EM_NAME("attn_norm.weight"), n_embd, a, &L->attn_norm, err, errlen)) ||
            (rc = em_get_vector(f, EM_NAME("ffn_norm.weight"), n_embd, a, &L->ffn_norm, err, errlen)) ||
            (rc = em_get_matrix(f, EM_NAME("attn_q.weight"), n_embd, q_dim, 1, &L->wq, err, errlen)) ||
            (rc = em_get_matrix(f, EM_NAME("attn_k.weight"), n_embd, kv_dim, 1, &L->wk, err, errlen)) ||
            (rc = em_get_matrix(f, EM_NAME("attn_v.weight"), n_embd, kv_dim, 1, &L->wv, err, errlen)) ||
            (rc = em_get_matrix(f, EM_NAME("attn_output.weight"), q_dim, n_embd, 1, &L->wo, err, errlen)) ||
            (rc = em_get_matrix(f, EM_NAME("ffn_gate.weight"), n_embd, n_ff, 1, &L->w_gate, err, errlen)) ||
            (rc = em_get_matrix(f, EM_NAME("ffn_up.weight"), n_embd, n_ff, 1, &L->w_up, err, errlen)) ||
            (rc = em_get_matrix(f, EM_NAME("ffn_down.weight"), n_ff, n_embd, 1, &L->w_down, err, errlen)))
            goto fail;
#undef EM_NAME
        m->bytes_per_token += em_matrix_bytes(&L->wq) + em_matrix_bytes(&L->wk) + em_matrix_bytes(&L->wv) +
                              em_matrix_bytes(&L->wo) + em_matrix_bytes(&L->w_gate) +
                              em_matrix_bytes(&L->w_up) + em_matrix_bytes(&L->w_down);
    }
    m->bytes_per_token += em_matrix_bytes(&m->output) + ek_row_bytes(m->tok_embd.type, (uint64_t)n_embd);

    /* Per-pair RoPE frequency factors: rope_freqs (Llama 3.1 scaling) times
     * the linear scaling factor, or none. */
    const gguf_tensor *rf = gguf_find_tensor(f, "rope_freqs.weight");
    if (rf) {
        if ((rc = em_get_vector(f, "rope_freqs.weight", hp->rope_dim / 2, a, &m->rope_freqs, err, errlen)))
            goto fail;
        for (int i = 0; i < hp->rope_dim / 2; i++)
            if (!(m->rope_freqs[i] > 0) || !isfinite(m->rope_freqs[i])) {
                rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "rope_freqs.weight[%d] is not a positive number", i);
                goto fail;
            }
    }
    if (hp->rope_freq_scale != 1.0f) {
        if (!m->rope_freqs) {
            m->rope_freqs = ec_malloc_aligned(a, (size_t)(hp->rope_dim / 2) * sizeof(float));
            if (!m->rope_freqs) { rc = ec_errorf(err, errlen, EMBER_ERR_NOMEM, "out of memory"); goto fail; }
            for (int i = 0; i < hp->rope_dim / 2; i++) m->rope_freqs[i] = 1.0f;
        }
        for (int i = 0; i < hp->rope_dim / 2; i++) m->rope_freqs[i] /= hp->rope_freq_scale;
    }

    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        m->n_params += (uint64_t)t->ne[0] * (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
        m->weight_bytes += t->nbytes;
    }
    uint32_t ft;
    m->file_type = gguf_get_u32(f, "general.file_type", &ft) == EMBER_OK ? (int)ft : -1;

    if ((rc = em_vocab_load(f, a, &m->tok, &m->max_piece_bytes, err, errlen))) goto fail;
    if (etok_n_vocab(m->tok) != hp->n_vocab) {
        rc = ec_errorf(err, errlen, EMBER_ERR_SHAPE, "the tokenizer has %d tokens but token_embd.weight has %d rows",
                       etok_n_vocab(m->tok), hp->n_vocab);
        goto fail;
    }
    if (may_pack && (rc = em_pack_matrices(m, err, errlen))) goto fail;
    m->gguf = f;
    return EMBER_OK;

fail:
    em_model_free(m);
    return rc;
}

void em_model_free(em_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->hp.n_layer; l++) {
            ec_free_aligned(m->a, m->layers[l].attn_norm);
            ec_free_aligned(m->a, m->layers[l].ffn_norm);
        }
        ec_free(m->a, m->layers);
    }
    ec_free_aligned(m->a, m->output_norm);
    ec_free_aligned(m->a, m->rope_freqs);
    etok_free(m->tok);
    gguf_close(m->gguf);
    memset(m, 0, sizeof *m);
}

/* ---- per-context state -------------------------------------------------- */

/* Largest converted batch of n_batch rows any matrix of the model needs
 * (a smaller batch of any one format fits in it). */
static size_t em_max_batch(const em_model *m, int n_batch) {
    size_t mx = 0;
    for (int i = 0; i < 1 + 7 * m->hp.n_layer; i++) {
        const em_matrix *w = em_matrix_at(m, i);
        size_t b = ek_batch_bytes(m->kernels, w->type, w->n_in, n_batch);
        if (b > mx) mx = b;
    }
    return (mx + 63) & ~(size_t)63;
}

typedef struct em_sizes {
    uint64_t kv_layer;   /* bytes of one layer's K (or V) cache */
    uint64_t floats;     /* scratch floats */
    uint64_t xa;         /* converted activation bytes */
} em_sizes;

static void em_compute_sizes(const em_model *m, int n_ctx, int kv_type, int n_batch, int n_threads,
                             em_sizes *z) {
    const em_hparams *hp = &m->hp;
    uint64_t kv_dim = (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim;
    uint64_t q_dim = (uint64_t)hp->n_head * (uint64_t)hp->head_dim;
    uint64_t elem = kv_type == EMBER_KV_F32 ? 4 : 2, B = (uint64_t)n_batch;
    z->kv_layer = (uint64_t)n_ctx * kv_dim * elem;
    uint64_t wide = (uint64_t)hp->n_embd > q_dim ? (uint64_t)hp->n_embd : q_dim;
    /* x, xb: n_embd (xb also holds q_dim-wide rows); q, att_out: q_dim;
     * k, v: kv_dim; hb, hb2: n_ff; logits: n_vocab; scores per thread. */
    z->floats = B * ((uint64_t)hp->n_embd + wide + 2 * q_dim + 2 * kv_dim + 2 * (uint64_t)hp->n_ff) +
                (uint64_t)hp->n_vocab + (uint64_t)n_threads * (uint64_t)n_ctx + 16 * 11;
    z->xa = em_max_batch(m, n_batch);
}

uint64_t em_state_bytes(const em_model *m, int n_ctx, int kv_type, int n_batch, int n_threads) {
    em_sizes z;
    em_compute_sizes(m, n_ctx, kv_type, n_batch, n_threads, &z);
    return 2 * z.kv_layer * (uint64_t)m->hp.n_layer + z.floats * 4 + z.xa;
}

int em_state_init(em_state *s, const em_model *m, int n_ctx, int n_batch, int kv_type, int n_threads,
                  const ember_allocator *a) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->a = a;
    s->n_ctx = n_ctx;
    s->n_batch = n_batch;
    s->kv_type = kv_type;
    s->n_threads = n_threads;
    s->kv_elem = kv_type == EMBER_KV_F32 ? 4 : 2;
    em_sizes z;
    em_compute_sizes(m, n_ctx, kv_type, n_batch, n_threads, &z);
    uint64_t kv_total;
    if (ec_mul_u64(z.kv_layer, (uint64_t)m->hp.n_layer, &kv_total) || kv_total > SIZE_MAX / 2)
        return EMBER_ERR_NOMEM;
    s->k_cache = ec_malloc_aligned(a, (size_t)kv_total);
    s->v_cache = ec_malloc_aligned(a, (size_t)kv_total);
    float *fl = ec_malloc_aligned(a, (size_t)z.floats * sizeof(float));
    s->xa = ec_malloc_aligned(a, (size_t)z.xa);
    if (!s->k_cache || !s->v_cache || !fl || !s->xa) {
        ec_free_aligned(a, fl);
        em_state_free(s);
        return EMBER_ERR_NOMEM;
    }
    memset(s->k_cache, 0, (size_t)kv_total);
    memset(s->v_cache, 0, (size_t)kv_total);
    const em_hparams *hp = &m->hp;
    size_t B = (size_t)n_batch, q_dim = (size_t)hp->n_head * hp->head_dim,
           kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    size_t wide = (size_t)hp->n_embd > q_dim ? (size_t)hp->n_embd : q_dim;
    /* Carve the float scratch into 64-byte aligned pieces. */
    float *p = fl;
#define EM_TAKE(ptr, count) do { (ptr) = p; p += ((count) + 15) & ~(size_t)15; } while (0)
    EM_TAKE(s->x, B * hp->n_embd);
    EM_TAKE(s->xb, B * wide);
    EM_TAKE(s->q, B * q_dim);
    EM_TAKE(s->att_out, B * q_dim);
    EM_TAKE(s->k, B * kv_dim);
    EM_TAKE(s->v, B * kv_dim);
    EM_TAKE(s->hb, B * hp->n_ff);
    EM_TAKE(s->hb2, B * hp->n_ff);
    EM_TAKE(s->logits, (size_t)hp->n_vocab);
    EM_TAKE(s->scores, (size_t)n_threads * n_ctx);
#undef EM_TAKE
    int rc = et_pool_create(a, n_threads, &s->pool);
    if (rc) { em_state_free(s); return rc; }
    return EMBER_OK;
}

void em_state_free(em_state *s) {
    if (!s) return;
    et_pool_free(s->pool);
    ec_free_aligned(s->a, s->k_cache);
    ec_free_aligned(s->a, s->v_cache);
    ec_free_aligned(s->a, s->x);
    ec_free_aligned(s->a, s->xa);
    memset(s, 0, sizeof *s);
}

/* ---- forward pass ------------------------------------------------------- */

/* Below this many multiply-adds per thread, extra threads cost more than
 * they save (a 260K-parameter model must not slow down with 2 threads). */
#define EM_MIN_WORK_PER_THREAD (1 << 16)
/* Row ranges handed to threads start at multiples of this, so kernels can
 * work on whole tiles. */
#define EM_ROW_ALIGN 16
_Static_assert(EM_ROW_ALIGN % EK_PACK_ROWS == 0, "thread row ranges must split packed matrices between groups");

/* Chunks of rows per thread: threads take chunks from a shared counter, so
 * when one core is slowed (another process, an interrupt) the other takes
 * over its remaining chunks instead of waiting for it.  Which thread
 * computes a row never changes its bits. */
#define EM_CHUNKS_PER_THREAD 4

typedef struct em_mm_job {
    const ek_kernels *k;
    const em_matrix *w[3];
    float *y[3];          /* y[i] has rows of w[i]->n_out floats */
    int n_w;
    const void *xa;       /* the converted batch (ek_convert_batch) */
    int nb;
    int total_rows;
    int chunk_rows;       /* a multiple of EM_ROW_ALIGN */
    atomic_int next_chunk;
} em_mm_job;

/* Rows [lo, hi) of the concatenated rows of all the job's matrices. */
static void em_mm_rows(const em_mm_job *j, int lo, int hi) {
    int base = 0;
    for (int i = 0; i < j->n_w && lo < hi; i++) {
        const em_matrix *w = j->w[i];
        int r0 = lo - base, r1 = hi - base;
        if (r0 < 0) r0 = 0;
        if (r1 > w->n_out) r1 = w->n_out;
        if (r0 < r1 && w->packed)
            ek_matmul_packed(j->k, w->type, w->data, w->n_in, j->xa, j->nb, j->y[i], w->n_out, r0, r1);
        else if (r0 < r1)
            ek_matmul(j->k, w->type, w->data, w->n_in, j->xa, j->nb, j->y[i], w->n_out, r0, r1);
        base += w->n_out;
    }
}

static void em_mm_task(void *arg, int ith, int nth) {
    em_mm_job *j = arg;
    const int n_chunks = (j->total_rows + j->chunk_rows - 1) / j->chunk_rows;
    /* chunk ith first (no contention at the start), then whatever is left */
    for (int c = ith; c < n_chunks; c = atomic_fetch_add_explicit(&j->next_chunk, 1, memory_order_relaxed)) {
        int lo = c * j->chunk_rows, hi = lo + j->chunk_rows;
        em_mm_rows(j, lo, hi < j->total_rows ? hi : j->total_rows);
    }
    (void)nth;
}

/* y_i = x W_i^T for up to three matrices sharing the input x (nb rows of
 * n_in floats).  Matrices whose activation formats differ are run apart. */
static void em_matmul(em_state *s, const float *x, int nb, const em_matrix *const *ws, float *const *ys, int n_w) {
    const ek_kernels *k = s->m->kernels;
    int i = 0;
    while (i < n_w) {
        /* Group consecutive matrices with the same weight type and layout
         * (packed matrices have rows in multiples of 16, so every matrix of
         * a packed group starts at a multiple of EM_ROW_ALIGN). */
        int g = i + 1;
        while (g < n_w && ws[g]->type == ws[i]->type && ws[g]->packed == ws[i]->packed) g++;
        const em_matrix *w0 = ws[i];
        ek_convert_batch(k, w0->type, x, nb, s->xa, w0->n_in);
        em_mm_job j;
        memset(&j, 0, sizeof j);
        j.k = k;
        j.n_w = g - i;
        uint64_t work = 0;
        for (int t = 0; t < j.n_w; t++) {
            j.w[t] = ws[i + t];
            j.y[t] = ys[i + t];
            j.total_rows += ws[i + t]->n_out;
            work += (uint64_t)ws[i + t]->n_out * (uint64_t)ws[i + t]->n_in * (uint64_t)nb;
        }
        j.xa = s->xa;
        j.nb = nb;
        int nth = (int)(work / EM_MIN_WORK_PER_THREAD);
        if (nth > s->n_threads) nth = s->n_threads;
        int max_by_rows = (j.total_rows + EM_ROW_ALIGN - 1) / EM_ROW_ALIGN;
        if (nth > max_by_rows) nth = max_by_rows;
        if (nth < 1) nth = 1;
        int chunk = (j.total_rows + nth * EM_CHUNKS_PER_THREAD - 1) / (nth * EM_CHUNKS_PER_THREAD);
        j.chunk_rows = nth == 1 ? j.total_rows : (chunk + EM_ROW_ALIGN - 1) / EM_ROW_ALIGN * EM_ROW_ALIGN;
        atomic_init(&j.next_chunk, nth);
        et_pool_run(s->pool, em_mm_task, &j, nth);
        i = g;
    }
}

static void em_matmul1(em_state *s, const float *x, int nb, const em_matrix *w, float *y) {
    em_matmul(s, x, nb, &w, &y, 1);
}

typedef struct em_attn_job {
    em_state *s;
    int layer, pos, nb;
} em_attn_job;

/* Causal attention for (token, head) pairs split across threads: each pair
 * is computed the same way whichever thread runs it. */
static void em_attn_task(void *arg, int ith, int nth) {
    em_attn_job *j = arg;
    em_state *s = j->s;
    const em_hparams *hp = &s->m->hp;
    const ek_kernels *k = s->m->kernels;
    const int hd = hp->head_dim, n_head = hp->n_head, group = hp->n_head / hp->n_head_kv;
    const size_t kv_dim = (size_t)hp->n_head_kv * hd, q_dim = (size_t)n_head * hd;
    const char *kc = (const char *)s->k_cache + (size_t)j->layer * s->n_ctx * kv_dim * s->kv_elem;
    const char *vc = (const char *)s->v_cache + (size_t)j->layer * s->n_ctx * kv_dim * s->kv_elem;
    const float scale = 1.0f / sqrtf((float)hd);
    float *sc = s->scores + (size_t)ith * s->n_ctx;
    /* items interleaved across threads: a later token attends to more
     * positions, so contiguous ranges would leave the last thread the most */
    const int items = j->nb * n_head;
    for (int it = ith; it < items; it += nth) {
        int b = it / n_head, h = it % n_head, g = h / group, p = j->pos + b;
        const float *q = s->q + (size_t)b * q_dim + (size_t)h * hd;
        ek_kv_scores(k, s->kv_type, q, kc + (size_t)g * hd * s->kv_elem, kv_dim, p + 1, hd, scale, sc);
        ek_softmax(sc, p + 1);
        ek_kv_mix(k, s->kv_type, sc, vc + (size_t)g * hd * s->kv_elem, kv_dim, p + 1, hd,
                  s->att_out + (size_t)b * q_dim + (size_t)h * hd);
    }
}

static void em_attention(em_state *s, int layer, int pos, int nb) {
    const em_hparams *hp = &s->m->hp;
    em_attn_job j = {s, layer, pos, nb};
    uint64_t work = (uint64_t)nb * hp->n_head * (uint64_t)(pos + nb) * hp->head_dim * 2;
    int nth = (int)(work / EM_MIN_WORK_PER_THREAD);
    if (nth > s->n_threads) nth = s->n_threads;
    if (nth > nb * hp->n_head) nth = nb * hp->n_head;
    if (nth < 1) nth = 1;
    et_pool_run(s->pool, em_attn_task, &j, nth);
}

void em_forward(em_state *s, const int32_t *tokens, int nb, int pos, float *all_logits) {
    const em_model *m = s->m;
    const em_hparams *hp = &m->hp;
    const ek_kernels *k = m->kernels;
    const int n_embd = hp->n_embd, hd = hp->head_dim;
    const size_t q_dim = (size_t)hp->n_head * hd, kv_dim = (size_t)hp->n_head_kv * hd;
    const uint64_t emb_row = ek_row_bytes(m->tok_embd.type, (uint64_t)n_embd);

    for (int b = 0; b < nb; b++)
        ek_dequant_row(m->tok_embd.type, (const char *)m->tok_embd.data + (size_t)tokens[b] * emb_row,
                       s->x + (size_t)b * n_embd, n_embd);

    for (int l = 0; l < hp->n_layer; l++) {
        const em_layer *L = &m->layers[l];
        for (int b = 0; b < nb; b++)
            ek_rmsnorm(k, s->xb + (size_t)b * n_embd, s->x + (size_t)b * n_embd, L->attn_norm, n_embd, hp->rms_eps);
        const em_matrix *qkv[3] = {&L->wq, &L->wk, &L->wv};
        float *qkv_out[3] = {s->q, s->k, s->v};
        em_matmul(s, s->xb, nb, qkv, qkv_out, 3);

        char *kc = (char *)s->k_cache + (size_t)l * s->n_ctx * kv_dim * s->kv_elem;
        char *vc = (char *)s->v_cache + (size_t)l * s->n_ctx * kv_dim * s->kv_elem;
        for (int b = 0; b < nb; b++) {
            float *q = s->q + (size_t)b * q_dim, *kk = s->k + (size_t)b * kv_dim;
            ek_rope(q, hp->n_head, hd, hp->rope_dim, pos + b, hp->rope_freq_base, m->rope_freqs);
            ek_rope(kk, hp->n_head_kv, hd, hp->rope_dim, pos + b, hp->rope_freq_base, m->rope_freqs);
            ek_kv_store(k, s->kv_type, kc + (size_t)(pos + b) * kv_dim * s->kv_elem, kk, (int)kv_dim);
            ek_kv_store(k, s->kv_type, vc + (size_t)(pos + b) * kv_dim * s->kv_elem, s->v + (size_t)b * kv_dim,
                        (int)kv_dim);
        }
        em_attention(s, l, pos, nb);

        em_matmul1(s, s->att_out, nb, &L->wo, s->xb);
        for (int b = 0; b < nb; b++)
            ek_add(k, s->x + (size_t)b * n_embd, s->xb + (size_t)b * n_embd, n_embd);

        for (int b = 0; b < nb; b++)
            ek_rmsnorm(k, s->xb + (size_t)b * n_embd, s->x + (size_t)b * n_embd, L->ffn_norm, n_embd, hp->rms_eps);
        const em_matrix *gu[2] = {&L->w_gate, &L->w_up};
        float *gu_out[2] = {s->hb, s->hb2};
        em_matmul(s, s->xb, nb, gu, gu_out, 2);
        for (int b = 0; b < nb; b++)
            ek_swiglu(k, s->hb + (size_t)b * hp->n_ff, s->hb2 + (size_t)b * hp->n_ff, hp->n_ff);
        em_matmul1(s, s->hb, nb, &L->w_down, s->xb);
        for (int b = 0; b < nb; b++)
            ek_add(k, s->x + (size_t)b * n_embd, s->xb + (size_t)b * n_embd, n_embd);
    }

    /* Only the rows whose logits are wanted go through the output head. */
    int first = all_logits ? 0 : nb - 1, rows = nb - first;
    for (int b = first; b < nb; b++)
        ek_rmsnorm(k, s->xb + (size_t)(b - first) * n_embd, s->x + (size_t)b * n_embd, m->output_norm, n_embd,
                   hp->rms_eps);
    if (all_logits) {
        em_matmul1(s, s->xb, rows, &m->output, all_logits);
        memcpy(s->logits, all_logits + (size_t)(rows - 1) * hp->n_vocab, (size_t)hp->n_vocab * sizeof(float));
    } else {
        em_matmul1(s, s->xb, 1, &m->output, s->logits);
    }
}
