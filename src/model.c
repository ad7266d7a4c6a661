/* model.c - the llama architecture: loading from GGUF and the forward pass.
 *
 * Loading checks every hyperparameter against every tensor shape before any
 * of it is used, so the forward pass can trust what it reads.  The forward
 * pass runs a batch of tokens through each layer as matrix-matrix products
 * (prompt processing) or a single token as matrix-vector products
 * (generation), splitting rows of each weight matrix across threads. */
#include "model.h"
#include "vocab.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- loading ------------------------------------------------------------ */

#define EM_MAX_LAYERS 4096
#define EM_MAX_DIM (1 << 20)

static int em_get_dim(const egf_file *f, const char *key, int required,
                      int fallback, int *out, char *err, size_t errlen) {
    uint32_t v;
    int rc = egf_get_u32(f, key, &v);
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

/* A positive float key (or fallback when absent); with zero_ok, 0 too. */
static int em_get_float(const egf_file *f, const char *key, float fallback, int zero_ok,
                        float *out, char *err, size_t errlen) {
    int rc = egf_get_f32(f, key, out);
    if (rc == EMBER_ERR_MISSING) { *out = fallback; return EMBER_OK; }
    if (rc != EMBER_OK)
        return ec_errorf(err, errlen, rc, "metadata '%s' is not a float", key);
    if (!isfinite(*out) || *out < 0 || (*out == 0 && !zero_ok))
        return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "metadata '%s' = %g is out of range", key, (double)*out);
    return EMBER_OK;
}

/* The architectures ember runs: each family's differences from llama as
 * data (llama.cpp's graphs for the same files are the reference). */
static const em_arch em_archs[] = {
    /* llama, Mistral, SmolLM2, TinyLlama: sliding-window keys ignored, as llama.cpp does */
    {"llama", 0, 0, 0, 0},
    {"qwen2", EM_NEOX, 0, 0, 0},
    {"qwen3", EM_NEOX | EM_QK_NORM, 0, 0, 0},
    {"gemma2", EM_NEOX | EM_GELU | EM_POST_NORMS | EM_EMBD_SQRT | EM_SOFTCAP | EM_SWA_DEFAULT, 2, 0, 46},
    {"gemma3", EM_NEOX | EM_GELU | EM_POST_NORMS | EM_EMBD_SQRT | EM_QK_NORM | EM_SWA_KEY, 6, 0, 62},
    {"phi3", EM_NEOX | EM_LONGROPE, 0, 0, 0},   /* its sliding window is ignored, as llama.cpp does */
    {"smollm3", 0, 0, 4, 0},
    {"granite", EM_SCALES, 0, 0, 0},
};

static const em_arch *em_find_arch(egf_str name) {
    for (size_t i = 0; i < sizeof em_archs / sizeof em_archs[0]; i++)
        if (egf_str_eq(name, em_archs[i].name)) return &em_archs[i];
    return NULL;
}

/* "<arch>.<suffix>" in buf */
static const char *em_key(char *buf, size_t size, const em_hparams *hp, const char *suffix) {
    snprintf(buf, size, "%s.%s", hp->arch->name, suffix);
    return buf;
}

static int em_read_scales(em_hparams *hp, const egf_file *f, char *err, size_t errlen) {
    const unsigned fl = hp->arch->flags;
    char key[96];
    int rc;
    hp->embd_scale = (fl & EM_EMBD_SQRT) ? sqrtf((float)hp->n_embd) : 1.0f;
    hp->residual_scale = hp->logit_scale = 1.0f;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    if (hp->arch->big_layers && hp->n_layer == hp->arch->big_layers)
        hp->attn_scale = 1.0f / sqrtf((float)(hp->n_embd / hp->n_head));
    if (fl & EM_SCALES) {
        if ((rc = em_get_float(f, em_key(key, sizeof key, hp, "embedding_scale"), 1.0f, 0, &hp->embd_scale, err, errlen)) ||
            (rc = em_get_float(f, em_key(key, sizeof key, hp, "residual_scale"), 1.0f, 0, &hp->residual_scale, err, errlen)) ||
            (rc = em_get_float(f, em_key(key, sizeof key, hp, "attention.scale"), hp->attn_scale, 0, &hp->attn_scale, err, errlen)) ||
            (rc = em_get_float(f, em_key(key, sizeof key, hp, "logit_scale"), 1.0f, 0, &hp->logit_scale, err, errlen)))
            return rc;
    }
    float attn_cap = (fl & EM_SOFTCAP) ? 50.0f : 0.0f, final_cap = (fl & EM_SOFTCAP) ? 30.0f : 0.0f;
    if ((rc = em_get_float(f, em_key(key, sizeof key, hp, "final_logit_softcapping"), final_cap, 1, &hp->final_softcap, err, errlen)))
        return rc;
    hp->attn_softcap = 0;
    if ((fl & EM_SOFTCAP) &&
        (rc = em_get_float(f, em_key(key, sizeof key, hp, "attn_logit_softcapping"), attn_cap, 1, &hp->attn_softcap, err, errlen)))
        return rc;
    return EMBER_OK;
}

/* Local layers: the window and which layers have it. */
static int em_read_swa(em_hparams *hp, const egf_file *f, char *err, size_t errlen) {
    const unsigned fl = hp->arch->flags;
    char key[96];
    int rc;
    hp->n_swa = hp->swa_period = 0;
    if (!(fl & (EM_SWA_DEFAULT | EM_SWA_KEY))) return EMBER_OK;
    int has_key = egf_find_kv(f, em_key(key, sizeof key, hp, "attention.sliding_window")) != NULL;
    if (!has_key && !(fl & EM_SWA_DEFAULT)) return EMBER_OK;
    if ((rc = em_get_dim(f, key, 0, 4096, &hp->n_swa, err, errlen))) return rc;
    if ((rc = em_get_dim(f, em_key(key, sizeof key, hp, "attention.sliding_window_pattern"), 0, hp->arch->swa_period,
                         &hp->swa_period, err, errlen)))
        return rc;
    hp->rope_freq_base_swa = (fl & EM_SWA_DEFAULT) ? hp->rope_freq_base : 10000.0f;
    hp->rope_freq_scale_swa = (fl & EM_SWA_DEFAULT) ? hp->rope_freq_scale : 1.0f;
    return em_get_float(f, em_key(key, sizeof key, hp, "rope.freq_base_swa"), hp->rope_freq_base_swa, 0,
                        &hp->rope_freq_base_swa, err, errlen);
}

/* Layer l is local when the period says so (llama.cpp's pattern: all but
 * the last layer of each period). */
static int em_layer_is_swa(const em_hparams *hp, int l) {
    return hp->n_swa > 0 && (hp->swa_period <= 1 || l % hp->swa_period < hp->swa_period - 1);
}

static int em_read_hparams(em_hparams *hp, const egf_file *f, char *err, size_t errlen) {
    egf_str arch;
    if (egf_get_str(f, "general.architecture", &arch) != EMBER_OK)
        return ec_errorf(err, errlen, EMBER_ERR_MISSING, "missing metadata key 'general.architecture'");
    hp->arch = em_find_arch(arch);
    if (!hp->arch)
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED,
                         "architecture '%.*s' is not supported (llama, qwen2, qwen3, gemma2, gemma3, phi3, smollm3, granite)",
                         (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
    char key[96];
    int rc;
#define EM_KEY(suffix) em_key(key, sizeof key, hp, suffix)
    if ((rc = em_get_dim(f, EM_KEY("context_length"), 1, 0, &hp->n_ctx_train, err, errlen)) ||
        (rc = em_get_dim(f, EM_KEY("embedding_length"), 1, 0, &hp->n_embd, err, errlen)) ||
        (rc = em_get_dim(f, EM_KEY("block_count"), 1, 0, &hp->n_layer, err, errlen)) ||
        (rc = em_get_dim(f, EM_KEY("feed_forward_length"), 1, 0, &hp->n_ff, err, errlen)) ||
        (rc = em_get_dim(f, EM_KEY("attention.head_count"), 1, 0, &hp->n_head, err, errlen)))
        return rc;
    if ((rc = em_get_dim(f, EM_KEY("attention.head_count_kv"), 0, hp->n_head, &hp->n_head_kv, err, errlen)))
        return rc;
    if (hp->n_layer > EM_MAX_LAYERS)
        return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "%s = %d is too large", EM_KEY("block_count"), hp->n_layer);
    if (hp->n_head > hp->n_embd)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "head_count %d exceeds embedding_length %d",
                         hp->n_head, hp->n_embd);
    if (hp->n_head % hp->n_head_kv != 0)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE,
                         "attention.head_count %d is not a multiple of head_count_kv %d",
                         hp->n_head, hp->n_head_kv);
    int default_hd = hp->n_embd / hp->n_head;
    if ((rc = em_get_dim(f, EM_KEY("attention.key_length"), 0, default_hd, &hp->head_dim, err, errlen)))
        return rc;
    int vlen;
    if ((rc = em_get_dim(f, EM_KEY("attention.value_length"), 0, hp->head_dim, &vlen, err, errlen)))
        return rc;
    if (vlen != hp->head_dim)
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED,
                         "attention.value_length %d differs from key_length %d", vlen, hp->head_dim);
    if (!egf_find_kv(f, EM_KEY("attention.key_length")) && hp->n_embd % hp->n_head != 0)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE,
                         "embedding_length %d is not a multiple of head_count %d", hp->n_embd, hp->n_head);
    if (hp->head_dim % 2 != 0)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "head dimension %d is odd", hp->head_dim);
    if ((int64_t)hp->n_head * hp->head_dim > EM_MAX_DIM)   /* q_dim must not overflow int */
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "head_count %d x key_length %d is too large", hp->n_head, hp->head_dim);
    if ((rc = em_get_dim(f, EM_KEY("rope.dimension_count"), 0, hp->head_dim, &hp->rope_dim, err, errlen)))
        return rc;
    if (hp->rope_dim % 2 != 0 || hp->rope_dim > hp->head_dim || hp->rope_dim > 1024)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "rope.dimension_count %d must be even and <= head dimension %d",
                         hp->rope_dim, hp->head_dim);
    if ((rc = em_get_float(f, EM_KEY("attention.layer_norm_rms_epsilon"), 1e-5f, 0, &hp->rms_eps, err, errlen)) ||
        (rc = em_get_float(f, EM_KEY("rope.freq_base"), 10000.0f, 0, &hp->rope_freq_base, err, errlen)))
        return rc;
    hp->rope_freq_scale = 1.0f;
    egf_str scaling;
    if (egf_get_str(f, EM_KEY("rope.scaling.type"), &scaling) == EMBER_OK &&
        !egf_str_eq(scaling, "none")) {
        if (!egf_str_eq(scaling, "linear") && !((hp->arch->flags & EM_LONGROPE) && egf_str_eq(scaling, "longrope")))
            return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "rope scaling type '%.*s' is not supported",
                             (int)(scaling.len > 32 ? 32 : scaling.len), scaling.ptr);
    }
    float factor;
    if ((rc = em_get_float(f, EM_KEY("rope.scaling.factor"), 0.0f, 1, &factor, err, errlen))) return rc;
    if (factor > 0) hp->rope_freq_scale = 1.0f / factor;
    if ((rc = em_get_float(f, EM_KEY("rope.scaling.attn_factor"), 1.0f, 0, &hp->rope_attn_factor, err, errlen)))
        return rc;
    if ((rc = em_get_dim(f, EM_KEY("rope.scaling.original_context_length"), 0, hp->n_ctx_train, &hp->n_ctx_orig,
                         err, errlen)))
        return rc;
#undef EM_KEY
    if ((rc = em_read_scales(hp, f, err, errlen)) || (rc = em_read_swa(hp, f, err, errlen))) return rc;
    return EMBER_OK;
}

/* Find a 2-D weight of n_out rows of n_in elements. */
static int em_get_matrix(const egf_file *f, const char *name, int n_in, int n_out,
                         int required, em_matrix *out, char *err, size_t errlen) {
    const egf_tensor *t = egf_find_tensor(f, name);
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
static int em_get_vector(const egf_file *f, const char *name, int n, int required, const ember_allocator *a,
                         float **out, char *err, size_t errlen) {
    const egf_tensor *t = egf_find_tensor(f, name);
    *out = NULL;
    if (!t && !required) return EMBER_OK;
    if (!t) return ec_errorf(err, errlen, EMBER_ERR_MISSING, "missing tensor '%s'", name);
    if (t->n_dims != 1 || t->ne[0] != n)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "tensor '%s' has %d dims and %lld elements, expected [%d]",
                         name, t->n_dims, (long long)t->ne[0], n);
    if (!ek_type_supported(t->type))
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "tensor '%s' has an unsupported type", name);
    float *v = (float *)ec_malloc_aligned(a, (size_t)n * sizeof(float));
    if (!v) return ec_errorf(err, errlen, EMBER_ERR_NOMEM, "out of memory copying '%s'", name);
    ek_dequant_row(t->type, t->data, v, n);
    *out = v;
    return EMBER_OK;
}

/* ---- model -------------------------------------------------------------- */

static uint64_t em_matrix_bytes(const em_matrix *w) {
    return w->data ? ek_row_bytes(w->type, (uint64_t)w->n_in) * (uint64_t)w->n_out : 0;
}

/* Matrix i of the model's 1 + EM_LAYER_MATRICES * n_layer matrix slots:
 * the output head, then each layer's (absent ones have no data). */
static const em_matrix *em_matrix_at(const em_model *m, int i) {
    if (i == 0) return &m->output;
    const em_layer *L = &m->layers[(i - 1) / EM_LAYER_MATRICES];
    const em_matrix *ws[EM_LAYER_MATRICES] = {&L->wq, &L->wk, &L->wv, &L->wqkv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return ws[(i - 1) % EM_LAYER_MATRICES];
}

static int em_n_matrices(const em_model *m) { return 1 + EM_LAYER_MATRICES * m->hp.n_layer; }

/* Pack every matrix the kernels want packed.  The token embedding is read
 * by rows, so it (and the output head when tied to it) stays as it is. */
static int em_pack_matrices(em_model *m, char *err, size_t errlen) {
    const int n = em_n_matrices(m);
    size_t scratch_bytes = 0;
    for (int i = m->tied_output; i < n; i++) {
        const em_matrix *w = em_matrix_at(m, i);
        size_t b = w->data && ek_pack_wanted(m->kernels, w->type, w->n_out) ? ek_pack_scratch_bytes(w->type, w->n_in) : 0;
        if (b > scratch_bytes) scratch_bytes = b;
    }
    if (!scratch_bytes) return EMBER_OK;
    void *scratch = ec_malloc_aligned(m->a, scratch_bytes);
    if (!scratch) return ec_errorf(err, errlen, EMBER_ERR_NOMEM, "out of memory");
    for (int i = m->tied_output; i < n; i++) {
        em_matrix *w = (em_matrix *)em_matrix_at(m, i);   /* m is ours to change */
        if (!w->data || !ek_pack_wanted(m->kernels, w->type, w->n_out)) continue;
        ek_pack_rows(w->type, (void *)(uintptr_t)w->data, w->n_in, w->n_out, scratch);
        w->packed = 1;
        m->n_packed++;
    }
    ec_free_aligned(m->a, scratch);
    return EMBER_OK;
}

/* A per-pair RoPE factor vector (n_rot/2 positive numbers), or none. */
static int em_get_rope_factors(const egf_file *f, const char *name, int n, const ember_allocator *a, float **out,
                               char *err, size_t errlen) {
    int rc = em_get_vector(f, name, n, 0, a, out, err, errlen);
    if (rc || !*out) return rc;
    for (int i = 0; i < n; i++)
        if (!((*out)[i] > 0) || !isfinite((*out)[i]))
            return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "%s[%d] is not a positive number", name, i);
    return EMBER_OK;
}

/* One layer's tensors.  Which are required follows the family: q/k norms
 * with EM_QK_NORM, post norms with EM_POST_NORMS; attention either fused
 * (attn_qkv) or apart, FFN either gated or fused (ffn_up rows gate | up,
 * as Phi-3 stores it); biases wherever the file has them. */
static int em_load_layer(em_model *m, const egf_file *f, int l, char *err, size_t errlen) {
    const em_hparams *hp = &m->hp;
    const ember_allocator *a = m->a;
    const unsigned fl = hp->arch->flags;
    const int n_embd = hp->n_embd, hd = hp->head_dim, q_dim = hp->n_head * hd, kv_dim = hp->n_head_kv * hd,
              n_ff = hp->n_ff;
    em_layer *L = &m->layers[l];
    char name[64];
    int rc;
#define EM_NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, l), name)
#define EM_VEC(dst, suffix, n, req) em_get_vector(f, EM_NAME(suffix), n, req, a, &L->dst, err, errlen)
#define EM_MAT(dst, suffix, n_in, n_out, req) em_get_matrix(f, EM_NAME(suffix), n_in, n_out, req, &L->dst, err, errlen)
    if ((rc = EM_VEC(attn_norm, "attn_norm.weight", n_embd, 1)) ||
        (rc = EM_VEC(ffn_norm, "ffn_norm.weight", n_embd, 1)) ||
        (rc = EM_VEC(attn_post_norm, "post_attention_norm.weight", n_embd, (fl & EM_POST_NORMS) != 0)) ||
        (rc = EM_VEC(ffn_post_norm, "post_ffw_norm.weight", n_embd, (fl & EM_POST_NORMS) != 0)) ||
        (rc = EM_VEC(q_norm, "attn_q_norm.weight", hd, (fl & EM_QK_NORM) != 0)) ||
        (rc = EM_VEC(k_norm, "attn_k_norm.weight", hd, (fl & EM_QK_NORM) != 0)) ||
        (rc = EM_MAT(wqkv, "attn_qkv.weight", n_embd, q_dim + 2 * kv_dim, 0)))
        return rc;
    if (!L->wqkv.data &&
        ((rc = EM_MAT(wq, "attn_q.weight", n_embd, q_dim, 1)) || (rc = EM_MAT(wk, "attn_k.weight", n_embd, kv_dim, 1)) ||
         (rc = EM_MAT(wv, "attn_v.weight", n_embd, kv_dim, 1))))
        return rc;
    if ((rc = EM_VEC(bq, "attn_q.bias", q_dim, 0)) || (rc = EM_VEC(bk, "attn_k.bias", kv_dim, 0)) ||
        (rc = EM_VEC(bv, "attn_v.bias", kv_dim, 0)) || (rc = EM_VEC(bo, "attn_output.bias", n_embd, 0)) ||
        (rc = EM_MAT(wo, "attn_output.weight", q_dim, n_embd, 1)) ||
        (rc = EM_MAT(w_gate, "ffn_gate.weight", n_embd, n_ff, 0)))
        return rc;
    /* without ffn_gate, ffn_up must be the fused gate | up */
    const egf_tensor *up = egf_find_tensor(f, EM_NAME("ffn_up.weight"));
    if (!L->w_gate.data && up && up->ne[1] == n_ff)
        return ec_errorf(err, errlen, EMBER_ERR_MISSING, "missing tensor '%s'", EM_NAME("ffn_gate.weight"));
    if ((rc = EM_MAT(w_up, "ffn_up.weight", n_embd, L->w_gate.data ? n_ff : 2 * n_ff, 1)) ||
        (rc = EM_MAT(w_down, "ffn_down.weight", n_ff, n_embd, 1)) ||
        (rc = EM_VEC(b_gate, "ffn_gate.bias", n_ff, 0)) || (rc = EM_VEC(b_up, "ffn_up.bias", n_ff, 0)) ||
        (rc = EM_VEC(b_down, "ffn_down.bias", n_embd, 0)))
        return rc;
    if (L->wqkv.data && (rc = EM_VEC(bqkv, "attn_qkv.bias", q_dim + 2 * kv_dim, 0))) return rc;
    if (!L->w_gate.data && (L->b_gate || L->b_up))
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "layer %d: FFN biases with a fused ffn_up", l);
#undef EM_MAT
#undef EM_VEC
#undef EM_NAME
    L->swa = em_layer_is_swa(hp, l);
    L->rope = !(hp->arch->nope_period && (l + 1) % hp->arch->nope_period == 0);
    for (int i = 1; i < EM_LAYER_MATRICES + 1; i++)
        m->bytes_per_token += em_matrix_bytes(em_matrix_at(m, l * EM_LAYER_MATRICES + i));
    return EMBER_OK;
}

/* FNV-1a over the hyperparameters and every tensor's name, type and
 * shape: a saved state belongs to models with the same fingerprint. */
static uint64_t em_fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t em_fingerprint(const em_model *m, const egf_file *f) {
    const em_hparams *hp = &m->hp;
    uint64_t h = em_fnv(0xcbf29ce484222325ull, hp->arch->name, strlen(hp->arch->name));
    const int dims[] = {hp->n_vocab, hp->n_ctx_train, hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv,
                        hp->head_dim, hp->n_ff, hp->rope_dim, hp->n_swa, hp->swa_period};
    const float vals[] = {hp->rope_freq_base, hp->rope_freq_scale, hp->rms_eps, hp->attn_scale, hp->embd_scale,
                          hp->residual_scale, hp->logit_scale, hp->attn_softcap, hp->final_softcap};
    h = em_fnv(h, dims, sizeof dims);
    h = em_fnv(h, vals, sizeof vals);
    for (uint64_t i = 0; i < egf_n_tensors(f); i++) {
        const egf_tensor *t = egf_tensor_at(f, i);
        h = em_fnv(h, t->name.ptr, (size_t)t->name.len);
        h = em_fnv(h, &t->type, sizeof t->type);
        h = em_fnv(h, t->ne, sizeof t->ne);
    }
    return h;
}

int em_model_init(em_model *m, egf_file *f, const ember_allocator *a, const ek_kernels *kernels, int vocab_only,
                  int may_pack, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->a = a;
    m->kernels = kernels ? kernels : ek_kernels_best();
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
    const egf_tensor *te = egf_find_tensor(f, "token_embd.weight");
    if (!te) return ec_errorf(err, errlen, EMBER_ERR_MISSING, "missing tensor 'token_embd.weight'");
    if (te->ne[1] < 1 || te->ne[1] > (1 << 24))
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "token_embd.weight has %lld rows", (long long)te->ne[1]);
    hp->n_vocab = (int)te->ne[1];

    const int n_embd = hp->n_embd, n_pairs = hp->rope_dim / 2;
    if ((rc = em_get_matrix(f, "token_embd.weight", n_embd, hp->n_vocab, 1, &m->tok_embd, err, errlen)) ||
        (rc = em_get_matrix(f, "output.weight", n_embd, hp->n_vocab, 0, &m->output, err, errlen)))
        goto fail;
    if (!m->output.data) { m->output = m->tok_embd; m->tied_output = 1; }
    if ((rc = em_get_vector(f, "output_norm.weight", n_embd, 1, a, &m->output_norm, err, errlen)) ||
        (rc = em_get_vector(f, "output.bias", hp->n_vocab, 0, a, &m->output_bias, err, errlen)))
        goto fail;

    m->layers = (em_layer *)ec_calloc(a, (size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) { rc = ec_errorf(err, errlen, EMBER_ERR_NOMEM, "out of memory"); goto fail; }
    for (int l = 0; l < hp->n_layer; l++)
        if ((rc = em_load_layer(m, f, l, err, errlen))) goto fail;
    m->bytes_per_token += em_matrix_bytes(&m->output) + ek_row_bytes(m->tok_embd.type, (uint64_t)n_embd);

    /* Per-pair RoPE frequency factors: rope_freqs (Llama 3.1), or LongRoPE's
     * long and short sets (the context size picks one). */
    if ((rc = em_get_rope_factors(f, "rope_freqs.weight", n_pairs, a, &m->rope_freqs, err, errlen)) ||
        (rc = em_get_rope_factors(f, "rope_factors_long.weight", n_pairs, a, &m->rope_long, err, errlen)) ||
        (rc = em_get_rope_factors(f, "rope_factors_short.weight", n_pairs, a, &m->rope_short, err, errlen)))
        goto fail;

    for (uint64_t i = 0; i < egf_n_tensors(f); i++) {
        const egf_tensor *t = egf_tensor_at(f, i);
        m->n_params += (uint64_t)t->ne[0] * (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
        m->weight_bytes += t->nbytes;
    }
    uint32_t ft;
    m->file_type = egf_get_u32(f, "general.file_type", &ft) == EMBER_OK ? (int)ft : -1;
    m->fingerprint = em_fingerprint(m, f);

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
            em_layer *L = &m->layers[l];
            float *owned[] = {L->attn_norm, L->ffn_norm, L->attn_post_norm, L->ffn_post_norm, L->q_norm, L->k_norm,
                              L->bq, L->bk, L->bv, L->bqkv, L->bo, L->b_gate, L->b_up, L->b_down};
            for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) ec_free_aligned(m->a, owned[i]);
        }
        ec_free(m->a, m->layers);
    }
    ec_free_aligned(m->a, m->output_norm);
    ec_free_aligned(m->a, m->output_bias);
    ec_free_aligned(m->a, m->rope_freqs);
    ec_free_aligned(m->a, m->rope_long);
    ec_free_aligned(m->a, m->rope_short);
    etok_free(m->tok);
    egf_close(m->gguf);
    memset(m, 0, sizeof *m);
}

/* ---- per-context state -------------------------------------------------- */

/* Largest converted batch of n_batch rows any matrix of the model needs
 * (a smaller batch of any one format fits in it). */
static size_t em_max_batch(const em_model *m, int n_batch) {
    size_t mx = 0;
    for (int i = 0; i < em_n_matrices(m); i++) {
        const em_matrix *w = em_matrix_at(m, i);
        size_t b = w->data ? ek_batch_bytes(m->kernels, w->type, w->n_in, n_batch) : 0;
        if (b > mx) mx = b;
    }
    return (mx + 63) & ~(size_t)63;
}

/* Rows of a local layer's ring: its window plus a batch, so that while a
 * batch is stored every window its tokens read is still there.  Stored
 * twice over (row r and r + rows), any window is one run of rows.  0 when
 * a ring would not save memory: local layers then keep all n_ctx rows. */
static int em_swa_rows(const em_model *m, int n_ctx, int n_batch) {
    const em_hparams *hp = &m->hp;
    if (!hp->n_swa) return 0;
    int64_t rows = (int64_t)hp->n_swa + n_batch - 1;
    return 2 * rows < n_ctx ? (int)rows : 0;
}

/* Cache rows of layer l. */
static int64_t em_kv_rows(const em_model *m, int l, int n_ctx, int swa_rows) {
    return m->layers[l].swa && swa_rows ? 2 * (int64_t)swa_rows : n_ctx;
}

uint64_t em_kv_bytes(const em_model *m, int n_ctx, int kv_type, int n_batch) {
    const em_hparams *hp = &m->hp;
    uint64_t kv_dim = (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim, elem = kv_type == EMBER_KV_F32 ? 4 : 2;
    int swa_rows = em_swa_rows(m, n_ctx, n_batch);
    uint64_t rows = 0;
    for (int l = 0; l < hp->n_layer; l++) rows += (uint64_t)em_kv_rows(m, l, n_ctx, swa_rows);
    return 2 * rows * kv_dim * elem;     /* K and V */
}

typedef struct em_sizes {
    uint64_t floats;     /* scratch floats */
    uint64_t xa;         /* converted activation bytes */
} em_sizes;

/* Widest row of the fused outputs: q | k | v, or gate | up. */
static uint64_t em_hb_width(const em_hparams *hp) {
    uint64_t qkv = (uint64_t)(hp->n_head + 2 * hp->n_head_kv) * (uint64_t)hp->head_dim, ff2 = 2 * (uint64_t)hp->n_ff;
    return qkv > ff2 ? qkv : ff2;
}

static void em_compute_sizes(const em_model *m, int n_ctx, int n_batch, int n_threads, em_sizes *z) {
    const em_hparams *hp = &m->hp;
    uint64_t kv_dim = (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim;
    uint64_t q_dim = (uint64_t)hp->n_head * (uint64_t)hp->head_dim;
    uint64_t B = (uint64_t)n_batch;
    uint64_t wide = (uint64_t)hp->n_embd > q_dim ? (uint64_t)hp->n_embd : q_dim;
    /* x, xb: n_embd (xb also holds q_dim-wide rows); q, att_out: q_dim;
     * k, v: kv_dim; hb: fused rows; hb2: n_ff; logits: n_vocab; scores
     * per thread. */
    z->floats = B * ((uint64_t)hp->n_embd + wide + 2 * q_dim + 2 * kv_dim + em_hb_width(hp) + (uint64_t)hp->n_ff) +
                (uint64_t)hp->n_vocab + (uint64_t)n_threads * (uint64_t)n_ctx + 16 * 11;
    z->xa = em_max_batch(m, n_batch);
}

uint64_t em_state_bytes(const em_model *m, int n_ctx, int kv_type, int n_batch, int n_threads) {
    em_sizes z;
    em_compute_sizes(m, n_ctx, n_batch, n_threads, &z);
    return em_kv_bytes(m, n_ctx, kv_type, n_batch) + z.floats * 4 + z.xa + (uint64_t)m->hp.n_layer * sizeof(size_t);
}

/* RoPE of global and local layers for a context of n_ctx positions. */
static void em_init_rope(em_state *s, int n_ctx) {
    const em_model *m = s->m;
    const em_hparams *hp = &m->hp;
    ek_rope_params g = {hp->rope_dim, (hp->arch->flags & EM_NEOX) != 0, hp->rope_freq_base, hp->rope_freq_scale,
                        hp->rope_attn_factor, m->rope_freqs};
    /* LongRoPE: as llama.cpp, the long factors when the context, rounded up
     * to a multiple of 256 as llama.cpp sizes it, is longer than the
     * original one (Hugging Face picks per sequence length instead). */
    const int n_ctx_llama = (n_ctx + 255) / 256 * 256;
    if (!g.freq_factors && (m->rope_long || m->rope_short))
        g.freq_factors = n_ctx_llama > hp->n_ctx_orig && m->rope_long ? m->rope_long : m->rope_short;
    s->rope_global = g;
    s->rope_local = g;
    if (hp->n_swa) {
        s->rope_local.freq_base = hp->rope_freq_base_swa;
        s->rope_local.freq_scale = hp->rope_freq_scale_swa;
    }
}

int em_state_init(em_state *s, const em_model *m, int n_ctx, int n_batch, int kv_type, int n_threads,
                  et_pool *shared, const ember_allocator *a) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->a = a;
    s->n_ctx = n_ctx;
    s->n_batch = n_batch;
    s->kv_type = kv_type;
    s->n_threads = n_threads;
    s->kv_elem = kv_type == EMBER_KV_F32 ? 4 : 2;
    s->swa_rows = em_swa_rows(m, n_ctx, n_batch);
    em_init_rope(s, n_ctx);
    em_sizes z;
    em_compute_sizes(m, n_ctx, n_batch, n_threads, &z);
    uint64_t kv_total = em_kv_bytes(m, n_ctx, kv_type, n_batch) / 2;
    if (kv_total > SIZE_MAX / 2) return EMBER_ERR_NOMEM;
    s->k_cache = ec_malloc_aligned(a, (size_t)kv_total);
    s->v_cache = ec_malloc_aligned(a, (size_t)kv_total);
    s->kv_off = (size_t *)ec_malloc(a, (size_t)m->hp.n_layer * sizeof *s->kv_off);
    s->rows = (em_row *)ec_malloc(a, (size_t)n_batch * sizeof *s->rows);
    float *fl = (float *)ec_malloc_aligned(a, (size_t)z.floats * sizeof(float));
    s->xa = ec_malloc_aligned(a, (size_t)z.xa);
    if (!s->k_cache || !s->v_cache || !s->kv_off || !s->rows || !fl || !s->xa) {
        ec_free_aligned(a, fl);
        em_state_free(s);
        return EMBER_ERR_NOMEM;
    }
    memset(s->k_cache, 0, (size_t)kv_total);
    memset(s->v_cache, 0, (size_t)kv_total);
    const em_hparams *hp = &m->hp;
    size_t B = (size_t)n_batch, q_dim = (size_t)hp->n_head * hp->head_dim,
           kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    size_t off = 0;
    for (int l = 0; l < hp->n_layer; l++) {
        s->kv_off[l] = off;
        off += (size_t)em_kv_rows(m, l, n_ctx, s->swa_rows) * kv_dim * s->kv_elem;
    }
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
    EM_TAKE(s->hb, B * (size_t)em_hb_width(hp));
    EM_TAKE(s->hb2, B * hp->n_ff);
    EM_TAKE(s->logits, (size_t)hp->n_vocab);
    EM_TAKE(s->scores, (size_t)n_threads * n_ctx);
#undef EM_TAKE
    if (shared && et_pool_size(shared) >= n_threads) {
        s->pool = shared;
    } else {
        int rc = et_pool_create(a, n_threads, &s->pool);
        if (rc) { em_state_free(s); return rc; }
        s->own_pool = 1;
    }
    return EMBER_OK;
}

void em_state_free(em_state *s) {
    if (!s) return;
    if (s->own_pool) et_pool_free(s->pool);
    ec_free_aligned(s->a, s->k_cache);
    ec_free_aligned(s->a, s->v_cache);
    ec_free(s->a, s->kv_off);
    ec_free(s->a, s->rows);
    ec_free_aligned(s->a, s->x);
    ec_free_aligned(s->a, s->xa);
    memset(s, 0, sizeof *s);
}

int em_state_can_rewind(const em_state *s, int pos) {
    if (!s->m->hp.n_swa || pos == 0) return 1;
    int need = pos - s->m->hp.n_swa + 1;      /* oldest position the next token reads */
    if (need < 0) need = 0;
    return need >= s->swa_floor && (!s->swa_rows || need >= s->swa_hi - s->swa_rows);
}

void em_state_clear(em_state *s) { s->swa_hi = s->swa_floor = 0; }

int em_kv_first(const em_state *s, int l, int pos) {
    int first = s->m->layers[l].swa ? pos - s->m->hp.n_swa + 1 : 0;
    return first > 0 ? first : 0;
}

size_t em_kv_row_bytes(const em_state *s) { return (size_t)s->m->hp.n_head_kv * s->m->hp.head_dim * s->kv_elem; }

/* byte offset of the first copy of position p in layer l */
static size_t em_kv_at(const em_state *s, int l, int p) {
    int ring = s->m->layers[l].swa ? s->swa_rows : 0;
    return s->kv_off[l] + (size_t)(ring ? p % ring : p) * em_kv_row_bytes(s);
}

const void *em_kv_row(const em_state *s, int l, int which, int p) {
    return (const char *)(which ? s->v_cache : s->k_cache) + em_kv_at(s, l, p);
}

void em_kv_put(em_state *s, int l, int which, int p, const void *row) {
    char *base = (char *)(which ? s->v_cache : s->k_cache);
    const size_t rb = em_kv_row_bytes(s);
    memcpy(base + em_kv_at(s, l, p), row, rb);
    if (s->m->layers[l].swa && s->swa_rows) memcpy(base + em_kv_at(s, l, p) + (size_t)s->swa_rows * rb, row, rb);
}

void em_state_restored(em_state *s, int pos) {
    s->swa_hi = pos;
    s->swa_floor = pos - s->m->hp.n_swa + 1 > 0 ? pos - s->m->hp.n_swa + 1 : 0;
}

/* ---- forward pass ------------------------------------------------------- */

/* Below this many multiply-adds per thread, extra threads cost more than
 * they save (a 260K-parameter model must not slow down with 2 threads). */
#define EM_MIN_WORK_PER_THREAD (1 << 16)
/* Row ranges handed to threads start at multiples of this, so kernels can
 * work on whole tiles. */
#define EM_ROW_ALIGN 16
EC_STATIC_ASSERT(EM_ROW_ALIGN % EK_PACK_ROWS == 0, "thread row ranges must split packed matrices between groups");

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
    em_mm_job *j = (em_mm_job *)arg;
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
        memset((void *)&j, 0, sizeof j);   /* C++: j holds an atomic */
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
    em_state *s;          /* scratch: q, att_out, scores */
    int layer, nb;
} em_attn_job;

/* Causal attention for (token, head) pairs split across threads: each pair
 * is computed the same way whichever thread runs it.  Row b reads the
 * cache of its own context (s->rows[b]).  A local layer's token reads only
 * the last n_swa positions (itself included). */
static void em_attn_task(void *arg, int ith, int nth) {
    em_attn_job *j = (em_attn_job *)arg;
    em_state *s = j->s;
    const em_hparams *hp = &s->m->hp;
    const ek_kernels *k = s->m->kernels;
    const int hd = hp->head_dim, n_head = hp->n_head, group = hp->n_head / hp->n_head_kv;
    const int swa = s->m->layers[j->layer].swa;
    const size_t kv_dim = (size_t)hp->n_head_kv * hd, q_dim = (size_t)n_head * hd;
    float *sc = s->scores + (size_t)ith * s->n_ctx;
    /* items interleaved across threads: a later token attends to more
     * positions, so contiguous ranges would leave the last thread the most */
    const int items = j->nb * n_head;
    for (int it = ith; it < items; it += nth) {
        int b = it / n_head, h = it % n_head, g = h / group;
        const em_state *c = s->rows[b].s;
        const int p = s->rows[b].pos, ring = swa ? c->swa_rows : 0;
        const char *kc = (const char *)c->k_cache + c->kv_off[j->layer];
        const char *vc = (const char *)c->v_cache + c->kv_off[j->layer];
        int lo = swa && p - hp->n_swa + 1 > 0 ? p - hp->n_swa + 1 : 0, n_pos = p - lo + 1;
        size_t row0 = (size_t)(ring ? lo % ring : lo) * kv_dim;
        const float *q = s->q + (size_t)b * q_dim + (size_t)h * hd;
        ek_kv_scores(k, c->kv_type, q, kc + (row0 + (size_t)g * hd) * c->kv_elem, kv_dim, n_pos, hd, hp->attn_scale,
                     sc);
        if (hp->attn_softcap > 0) ek_softcap(sc, n_pos, hp->attn_softcap);
        ek_softmax(sc, n_pos);
        ek_kv_mix(k, c->kv_type, sc, vc + (row0 + (size_t)g * hd) * c->kv_elem, kv_dim, n_pos, hd,
                  s->att_out + (size_t)b * q_dim + (size_t)h * hd);
    }
}

static void em_attention(em_state *s, int layer, int nb) {
    const em_hparams *hp = &s->m->hp;
    em_attn_job j = {s, layer, nb};
    uint64_t work = 0;
    for (int b = 0; b < nb; b++) work += (uint64_t)hp->n_head * (uint64_t)(s->rows[b].pos + 1) * hp->head_dim * 2;
    int nth = (int)(work / EM_MIN_WORK_PER_THREAD);
    if (nth > s->n_threads) nth = s->n_threads;
    if (nth > nb * hp->n_head) nth = nb * hp->n_head;
    if (nth < 1) nth = 1;
    et_pool_run(s->pool, em_attn_task, &j, nth);
}

/* rows[b] += bias for nb rows of n floats */
static void em_add_bias(const ek_kernels *k, float *rows, const float *bias, int nb, int n) {
    if (!bias) return;
    for (int b = 0; b < nb; b++) ek_add(k, rows + (size_t)b * n, bias, n);
}

static void em_rmsnorm_rows(const ek_kernels *k, float *out, const float *x, const float *w, int nb, int n, float eps) {
    for (int b = 0; b < nb; b++) ek_rmsnorm(k, out + (size_t)b * n, x + (size_t)b * n, w, n, eps);
}

/* q, k, v of nb tokens from the normed input xb: one fused matrix or three,
 * then biases, per-head norms and RoPE; k and v go into the cache. */
static void em_qkv(em_state *s, const em_layer *L, int l, int nb) {
    const em_model *m = s->m;
    const em_hparams *hp = &m->hp;
    const ek_kernels *k = m->kernels;
    const int hd = hp->head_dim, q_dim = hp->n_head * hd, kv_dim = hp->n_head_kv * hd;
    if (L->wqkv.data) {
        const int w = q_dim + 2 * kv_dim;
        em_matmul1(s, s->xb, nb, &L->wqkv, s->hb);
        em_add_bias(k, s->hb, L->bqkv, nb, w);
        for (int b = 0; b < nb; b++) {
            const float *row = s->hb + (size_t)b * w;
            memcpy(s->q + (size_t)b * q_dim, row, (size_t)q_dim * sizeof(float));
            memcpy(s->k + (size_t)b * kv_dim, row + q_dim, (size_t)kv_dim * sizeof(float));
            memcpy(s->v + (size_t)b * kv_dim, row + q_dim + kv_dim, (size_t)kv_dim * sizeof(float));
        }
    } else {
        const em_matrix *qkv[3] = {&L->wq, &L->wk, &L->wv};
        float *qkv_out[3] = {s->q, s->k, s->v};
        em_matmul(s, s->xb, nb, qkv, qkv_out, 3);
    }
    em_add_bias(k, s->q, L->bq, nb, q_dim);
    em_add_bias(k, s->k, L->bk, nb, kv_dim);
    em_add_bias(k, s->v, L->bv, nb, kv_dim);
    if (L->q_norm) {
        em_rmsnorm_rows(k, s->q, s->q, L->q_norm, nb * hp->n_head, hd, hp->rms_eps);
        em_rmsnorm_rows(k, s->k, s->k, L->k_norm, nb * hp->n_head_kv, hd, hp->rms_eps);
    }
    for (int b = 0; b < nb; b++) {
        em_state *c = s->rows[b].s;            /* the context row b belongs to */
        const int p = s->rows[b].pos, ring = L->swa ? c->swa_rows : 0;
        const ek_rope_params *rope = L->swa ? &c->rope_local : &c->rope_global;
        char *kc = (char *)c->k_cache + c->kv_off[l], *vc = (char *)c->v_cache + c->kv_off[l];
        float *q = s->q + (size_t)b * q_dim, *kk = s->k + (size_t)b * kv_dim, *vv = s->v + (size_t)b * kv_dim;
        if (L->rope) {
            ek_rope(q, hp->n_head, hd, p, rope);
            ek_rope(kk, hp->n_head_kv, hd, p, rope);
        }
        /* a ring stores each row twice, rows apart, so windows never wrap */
        for (int copy = 0; copy < (ring ? 2 : 1); copy++) {
            size_t row = ring ? (size_t)(p % ring + copy * ring) : (size_t)p;
            ek_kv_store(k, c->kv_type, kc + row * kv_dim * c->kv_elem, kk, kv_dim);
            ek_kv_store(k, c->kv_type, vc + row * kv_dim * c->kv_elem, vv, kv_dim);
        }
    }
}

/* The FFN of nb tokens from the normed input xb, result in xb. */
static void em_ffn(em_state *s, const em_layer *L, int nb) {
    const em_model *m = s->m;
    const em_hparams *hp = &m->hp;
    const ek_kernels *k = m->kernels;
    const int n_ff = hp->n_ff, gelu = (hp->arch->flags & EM_GELU) != 0;
    float *act;                       /* nb rows of n_ff: act(gate) * up */
    if (L->w_gate.data) {
        const em_matrix *gu[2] = {&L->w_gate, &L->w_up};
        float *gu_out[2] = {s->hb, s->hb2};
        em_matmul(s, s->xb, nb, gu, gu_out, 2);
        em_add_bias(k, s->hb, L->b_gate, nb, n_ff);
        em_add_bias(k, s->hb2, L->b_up, nb, n_ff);
        for (int b = 0; b < nb; b++) {
            float *g = s->hb + (size_t)b * n_ff, *u = s->hb2 + (size_t)b * n_ff;
            if (gelu) ek_geglu(k, g, u, n_ff);
            else ek_swiglu(k, g, u, n_ff);
        }
        act = s->hb;
    } else {                          /* fused rows gate | up */
        em_matmul1(s, s->xb, nb, &L->w_up, s->hb);
        for (int b = 0; b < nb; b++) {
            float *g = s->hb + (size_t)b * 2 * n_ff, *u = g + n_ff;
            if (gelu) ek_geglu(k, g, u, n_ff);
            else ek_swiglu(k, g, u, n_ff);
            memcpy(s->hb2 + (size_t)b * n_ff, g, (size_t)n_ff * sizeof(float));
        }
        act = s->hb2;
    }
    em_matmul1(s, act, nb, &L->w_down, s->xb);
    em_add_bias(k, s->xb, L->b_down, nb, hp->n_embd);
}

/* x += post_norm(branch) * residual_scale for nb rows, branch in xb. */
static void em_residual(em_state *s, const float *post_norm, int nb) {
    const em_hparams *hp = &s->m->hp;
    const ek_kernels *k = s->m->kernels;
    const int n = hp->n_embd;
    for (int b = 0; b < nb; b++) {
        float *xb = s->xb + (size_t)b * n;
        if (post_norm) ek_rmsnorm(k, xb, xb, post_norm, n, hp->rms_eps);
        if (hp->residual_scale != 1.0f) ek_scale(xb, n, hp->residual_scale);
        ek_add(k, s->x + (size_t)b * n, xb, n);
    }
}

/* Logits of rows rows of normed states in xb, into out (rows * n_vocab). */
static void em_logits(em_state *s, int rows, float *out) {
    const em_model *m = s->m;
    const em_hparams *hp = &m->hp;
    em_matmul1(s, s->xb, rows, &m->output, out);
    for (int b = 0; b < rows; b++) {
        float *y = out + (size_t)b * hp->n_vocab;
        if (m->output_bias) ek_add(m->kernels, y, m->output_bias, hp->n_vocab);
        if (hp->logit_scale != 1.0f) ek_scale(y, hp->n_vocab, 1.0f / hp->logit_scale);
        if (hp->final_softcap > 0) ek_softcap(y, hp->n_vocab, hp->final_softcap);
    }
}

/* The forward pass of nb rows: row b is token tokens[b] at position
 * s->rows[b].pos of context s->rows[b].s; s provides the scratch.  Logits
 * of rows first.. into out (rows of n_vocab). */
static int em_forward_rows(em_state *s, const int32_t *tokens, int nb, int first, float *out) {
    const em_model *m = s->m;
    const em_hparams *hp = &m->hp;
    const ek_kernels *k = m->kernels;
    const int n_embd = hp->n_embd;
    const uint64_t emb_row = ek_row_bytes(m->tok_embd.type, (uint64_t)n_embd);

    for (int b = 0; b < nb; b++) {
        float *x = s->x + (size_t)b * n_embd;
        ek_dequant_row(m->tok_embd.type, (const char *)m->tok_embd.data + (size_t)tokens[b] * emb_row, x, n_embd);
        if (hp->embd_scale != 1.0f) ek_scale(x, n_embd, hp->embd_scale);
        em_state *c = s->rows[b].s;
        if (s->rows[b].pos + 1 > c->swa_hi) c->swa_hi = s->rows[b].pos + 1;
    }

    for (int l = 0; l < hp->n_layer; l++) {
        if (s->abort_cb && s->abort_cb(s->abort_ud)) return 1;
        const em_layer *L = &m->layers[l];
        em_rmsnorm_rows(k, s->xb, s->x, L->attn_norm, nb, n_embd, hp->rms_eps);
        em_qkv(s, L, l, nb);
        em_attention(s, l, nb);
        em_matmul1(s, s->att_out, nb, &L->wo, s->xb);
        em_add_bias(k, s->xb, L->bo, nb, n_embd);
        em_residual(s, L->attn_post_norm, nb);

        em_rmsnorm_rows(k, s->xb, s->x, L->ffn_norm, nb, n_embd, hp->rms_eps);
        em_ffn(s, L, nb);
        em_residual(s, L->ffn_post_norm, nb);
    }

    /* Only the rows whose logits are wanted go through the output head. */
    const int rows = nb - first;
    em_rmsnorm_rows(k, s->xb, s->x + (size_t)first * n_embd, m->output_norm, rows, n_embd, hp->rms_eps);
    em_logits(s, rows, out);
    return 0;
}

int em_forward(em_state *s, const int32_t *tokens, int nb, int pos, float *all_logits) {
    for (int b = 0; b < nb; b++) s->rows[b] = (em_row){s, pos + b};
    if (!all_logits) return em_forward_rows(s, tokens, nb, nb - 1, s->logits);
    if (em_forward_rows(s, tokens, nb, 0, all_logits)) return 1;
    memcpy(s->logits, all_logits + (size_t)(nb - 1) * s->m->hp.n_vocab, (size_t)s->m->hp.n_vocab * sizeof(float));
    return 0;
}

int em_forward_multi(em_state *s, em_state *const *states, const int *pos, const int32_t *tokens, int nb,
                     float *logits) {
    for (int b = 0; b < nb; b++) s->rows[b] = (em_row){states[b], pos[b]};
    return em_forward_rows(s, tokens, nb, 0, logits);
}
