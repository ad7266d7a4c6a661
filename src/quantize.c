/* quantize.c - ember_quantize: a GGUF file of F32, F16 or BF16 weights to
 * one of llama-quantize's file types, written as llama-quantize writes it.
 *
 * Which tensor gets which type is llama.cpp's decision (src/llama-quant.cpp:
 * llama_tensor_get_type and its helpers), made here for the file types
 * ember offers and without an importance matrix: the output head (and a
 * tied token embedding) Q6_K, attn_v / ffn_down of some layers more bits in
 * the _M mixes, rows that are not a whole number of blocks falling back to a
 * 32-block type, norms and other 1-D tensors kept as they are.  The rows
 * are quantized by the reference quantizers of kernels.c, which make
 * ggml's bytes; the KVs are copied in order with general.quantization_version
 * and general.file_type last, and the tensors go in llama-quantize's order
 * (by layer, then by name), so that for the same input the two tools' files
 * can be compared byte for byte.
 *
 * The input is mapped (read into memory where mapping is not available);
 * the output is streamed tensor by tensor, each in chunks of rows that the
 * thread pool quantizes in parallel, so the output never has to fit in
 * memory. */
#include "gguf.h"
#include "kernels.h"
#include "platform.h"
#include "threads.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#include <sys/stat.h>
#endif

/* ---- the file types ---------------------------------------------------------- */

/* llama_ftype values (llama.h), which general.file_type records. */
enum {
    EQ_ALL_F32 = 0, EQ_F16 = 1, EQ_Q4_0 = 2, EQ_Q4_1 = 3, EQ_Q8_0 = 7, EQ_Q5_0 = 8, EQ_Q5_1 = 9,
    EQ_Q2_K = 10, EQ_Q3_K_S = 11, EQ_Q3_K_M = 12, EQ_Q3_K_L = 13, EQ_Q4_K_S = 14, EQ_Q4_K_M = 15,
    EQ_Q5_K_S = 16, EQ_Q5_K_M = 17, EQ_Q6_K = 18, EQ_IQ4_NL = 25, EQ_IQ4_XS = 30, EQ_BF16 = 32
};

/* A file type: its name (as llama-quantize's, lower case), general.file_type
 * and the tensor type most tensors get.  Q3_K, Q4_K and Q5_K are
 * llama-quantize's aliases of the _M mixes. */
typedef struct eq_ftype { const char *name; int ftype, type; } eq_ftype;

static const eq_ftype eq_ftypes[] = {
    {"q4_0", EQ_Q4_0, EK_Q4_0},     {"q4_1", EQ_Q4_1, EK_Q4_1},     {"q5_0", EQ_Q5_0, EK_Q5_0},
    {"q5_1", EQ_Q5_1, EK_Q5_1},     {"q8_0", EQ_Q8_0, EK_Q8_0},     {"q2_k", EQ_Q2_K, EK_Q2_K},
    {"q3_k_s", EQ_Q3_K_S, EK_Q3_K}, {"q3_k_m", EQ_Q3_K_M, EK_Q3_K}, {"q3_k_l", EQ_Q3_K_L, EK_Q3_K},
    {"q3_k", EQ_Q3_K_M, EK_Q3_K},   {"q4_k_s", EQ_Q4_K_S, EK_Q4_K}, {"q4_k_m", EQ_Q4_K_M, EK_Q4_K},
    {"q4_k", EQ_Q4_K_M, EK_Q4_K},   {"q5_k_s", EQ_Q5_K_S, EK_Q5_K}, {"q5_k_m", EQ_Q5_K_M, EK_Q5_K},
    {"q5_k", EQ_Q5_K_M, EK_Q5_K},   {"q6_k", EQ_Q6_K, EK_Q6_K},     {"iq4_nl", EQ_IQ4_NL, EK_IQ4_NL},
    {"iq4_xs", EQ_IQ4_XS, EK_IQ4_XS}, {"f16", EQ_F16, EK_F16},      {"bf16", EQ_BF16, EK_BF16},
    {"f32", EQ_ALL_F32, EK_F32},
};
#define EQ_N_FTYPES ((int)(sizeof eq_ftypes / sizeof eq_ftypes[0]))

const char *ember_quantize_type_name(int i) { return i >= 0 && i < EQ_N_FTYPES ? eq_ftypes[i].name : NULL; }

static const eq_ftype *eq_find_ftype(const char *name) {
    for (int i = 0; i < EQ_N_FTYPES; i++) {
        const char *a = eq_ftypes[i].name, *b = name;
        while (*a && (*b == *a || (*b >= 'A' && *b <= 'Z' && *b - 'A' + 'a' == *a))) a++, b++;
        if (!*a && !*b) return &eq_ftypes[i];
    }
    return NULL;
}

static int eq_is_float(int type) { return type == EK_F32 || type == EK_F16 || type == EK_BF16; }
static int eq_is_quantized(int type) { return !eq_is_float(type) && ek_type_get(type) && ek_type_get(type)->block_size > 1; }

/* ---- which tensors are quantized (llama.cpp's tensor_allows_quantization) ----- */

static int eq_has(const char *s, const char *part) { return strstr(s, part) != NULL; }

static int eq_ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !memcmp(s + n - m, tail, m);
}

/* ggml_n_dims: dimensions up to the last one larger than 1 */
static int eq_n_dims(const egf_tensor *t) {
    for (int i = 3; i >= 1; i--)
        if (t->ne[i] > 1) return i + 1;
    return 1;
}

/* Matrices whose name ends in "weight", except norms and the small or
 * special ones llama.cpp keeps as they are (expert routers, positional
 * tables, convolutions, RWKV's and multimodal projectors' small weights). */
static int eq_allows_quantization(const char *name, int n_dims) {
    static const char *const keep[] = {
        "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
        "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
        "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
        "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
        "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
        "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
        "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
    };
    if (n_dims < 2 || !eq_ends_with(name, "weight")) return 0;
    if (!strcmp(name, "position_embd.weight") || !strcmp(name, "token_types.weight")) return 0;
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (eq_has(name, keep[i])) return 0;
    return 1;
}

/* ---- the type of each tensor (llama.cpp's llama_tensor_get_type) -------------- */

enum eq_category {
    EQ_OTHER, EQ_OUTPUT, EQ_TOKEN_EMBD, EQ_ATTN_QKV, EQ_ATTN_KV_B, EQ_ATTN_V, EQ_ATTN_K, EQ_ATTN_Q,
    EQ_ATTN_OUTPUT, EQ_FFN_UP, EQ_FFN_GATE, EQ_FFN_DOWN
};

static int eq_category(const char *name) {
    if (!strcmp(name, "output.weight")) return EQ_OUTPUT;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "per_layer_token_embd.weight")) return EQ_TOKEN_EMBD;
    if (eq_has(name, "attn_qkv.weight")) return EQ_ATTN_QKV;
    if (eq_has(name, "attn_kv_b.weight")) return EQ_ATTN_KV_B;
    if (eq_has(name, "attn_v.weight")) return EQ_ATTN_V;
    if (eq_has(name, "attn_k.weight")) return EQ_ATTN_K;
    if (eq_has(name, "attn_q.weight")) return EQ_ATTN_Q;
    if (eq_has(name, "attn_output.weight")) return EQ_ATTN_OUTPUT;
    if (eq_has(name, "ffn_up")) return EQ_FFN_UP;
    if (eq_has(name, "ffn_gate")) return EQ_FFN_GATE;
    if (eq_has(name, "ffn_down")) return EQ_FFN_DOWN;
    return EQ_OTHER;
}

/* value tensors (and fused ones holding them) are the most sensitive */
static int eq_is_attn_v(int cat) { return cat == EQ_ATTN_V || cat == EQ_ATTN_QKV || cat == EQ_ATTN_KV_B; }

/* What the rules need of the model, and the counters they advance in
 * tensor order. */
typedef struct eq_rules {
    int ftype, default_type;
    int falcon, is_70b;           /* arch "falcon"; a 70B model as llama.cpp types them */
    int n_gqa, n_expert;          /* n_head / n_head_kv of layer 0; experts per layer */
    int n_layer;                  /* block_count: the ffn_* layer counters' range */
    int tied;                     /* no output.weight: token_embd is the head */
    int n_attn_v, i_attn_v, i_ffn_down, i_ffn_gate, i_ffn_up;
} eq_rules;

/* The first, last and every third layer of the middle get more bits. */
static int eq_use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

/* The layer of an ffn tensor: its counter, or with experts (which need not
 * be consecutive) the number in its name. */
static int eq_layer_of(const eq_rules *r, int counter, const char *name, int *layer, char *err, size_t errlen) {
    *layer = counter;
    if (r->n_expert > 1) {
        if (sscanf(name, "blk.%d.", layer) != 1)
            return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "cannot tell the layer of tensor '%s'", name);
        if (*layer < 0 || *layer >= r->n_layer)
            return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tensor '%s': layer %d of %d", name, *layer, r->n_layer);
    }
    return EMBER_OK;
}

/* llama_tensor_get_type_impl for ember's file types (no imatrix). */
static int eq_mix_type(eq_rules *r, const egf_tensor *t, const char *name, int cat, int *type, char *err,
                       size_t errlen) {
    const int ft = r->ftype;
    int nt = *type, rc = EMBER_OK, il;
    if (cat == EQ_OUTPUT || (r->tied && cat == EQ_TOKEN_EMBD)) {
        if (r->falcon || t->ne[0] % ek_type_get(nt)->block_size) nt = EK_Q8_0;
        else if (nt != EK_Q8_0) nt = EK_Q6_K;
    } else if (cat == EQ_TOKEN_EMBD) {
        /* a separate embedding keeps the file's type */
    } else if (eq_is_attn_v(cat)) {
        if (ft == EQ_Q2_K) nt = r->n_gqa >= 4 ? EK_Q4_K : EK_Q3_K;
        else if (ft == EQ_Q3_K_M) nt = r->i_attn_v < 2 ? EK_Q5_K : EK_Q4_K;
        else if (ft == EQ_Q3_K_L) nt = EK_Q5_K;
        else if ((ft == EQ_IQ4_NL || ft == EQ_IQ4_XS) && r->n_gqa >= 4) nt = EK_Q5_K;
        else if ((ft == EQ_Q4_K_M || ft == EQ_Q5_K_M) && eq_use_more_bits(r->i_attn_v, r->n_attn_v)) nt = EK_Q6_K;
        else if (ft == EQ_Q4_K_S && r->i_attn_v < 4) nt = EK_Q5_K;
        if (r->is_70b && (nt == EK_Q3_K || nt == EK_Q4_K)) nt = EK_Q5_K;
        if (r->n_expert == 8) nt = EK_Q8_0;
        r->i_attn_v++;
    } else if (cat == EQ_ATTN_K) {
        if (r->n_expert == 8) nt = EK_Q8_0;
    } else if (cat == EQ_ATTN_Q) {
        /* only the IQ3 mixes, which ember does not make, change it */
    } else if (cat == EQ_FFN_DOWN) {
        if ((rc = eq_layer_of(r, r->i_ffn_down, name, &il, err, errlen)) != EMBER_OK) return rc;
        const int nl = r->n_layer, more = eq_use_more_bits(il, nl);
        if (ft == EQ_Q2_K) nt = EK_Q3_K;
        else if (ft == EQ_Q3_K_M) nt = il < nl / 16 ? EK_Q5_K : !r->falcon || more ? EK_Q4_K : EK_Q3_K;
        else if (ft == EQ_Q3_K_L) nt = r->falcon ? EK_Q4_K : EK_Q5_K;
        else if (ft == EQ_Q4_K_M) {
            if (r->falcon) nt = il < nl / 16 ? EK_Q6_K : more ? EK_Q5_K : EK_Q4_K;
            else if (more) nt = EK_Q6_K;
        } else if (il < nl / 8 && (ft == EQ_IQ4_NL || ft == EQ_IQ4_XS)) nt = EK_Q5_K;
        else if (ft == EQ_Q5_K_M && more) nt = EK_Q6_K;
        else if (ft == EQ_Q4_K_S && !r->falcon && il < nl / 8) nt = EK_Q5_K;
        r->i_ffn_down++;
    } else if (cat == EQ_ATTN_OUTPUT) {
        if (!r->falcon) {
            if (r->n_expert == 8) {
                if (ft == EQ_Q2_K || ft == EQ_Q3_K_S || ft == EQ_Q3_K_M || ft == EQ_IQ4_NL || ft == EQ_Q4_K_S ||
                    ft == EQ_Q4_K_M || ft == EQ_IQ4_XS)
                    nt = EK_Q5_K;
            } else if (ft == EQ_Q2_K) nt = EK_Q3_K;
            else if (ft == EQ_Q3_K_M) nt = EK_Q4_K;
            else if (ft == EQ_Q3_K_L) nt = EK_Q5_K;
        } else if (ft == EQ_Q3_K_L) nt = EK_Q4_K;
    } else if (cat == EQ_FFN_GATE || cat == EQ_FFN_UP) {
        /* their counters only matter to the IQ3_XS mix, but a bad layer in
         * an expert's name is refused as llama.cpp refuses it */
        int *counter = cat == EQ_FFN_GATE ? &r->i_ffn_gate : &r->i_ffn_up;
        if ((rc = eq_layer_of(r, *counter, name, &il, err, errlen)) != EMBER_OK) return rc;
        (*counter)++;
    }
    *type = nt;
    return EMBER_OK;
}

/* Rows that are not a whole number of the type's blocks: the 32-block type
 * llama.cpp falls back to, else F16. */
static int eq_fallback(const egf_tensor *t, const char *name, int type, int *out, char *err, size_t errlen) {
    *out = type;
    if (t->ne[0] % ek_type_get(type)->block_size == 0) return EMBER_OK;
    switch (type) {
    case EK_IQ4_XS: *out = EK_IQ4_NL; break;
    case EK_Q2_K: case EK_Q3_K: *out = EK_Q4_0; break;
    case EK_Q4_K: *out = EK_Q5_0; break;
    case EK_Q5_K: *out = EK_Q5_1; break;
    case EK_Q6_K: *out = EK_Q8_0; break;
    default:
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED,
                         "tensor '%s': rows of %lld are not a multiple of %s's block of %d, and %s has no fallback",
                         name, (long long)t->ne[0], ek_type_get(type)->name, ek_type_get(type)->block_size,
                         ek_type_get(type)->name);
    }
    if (t->ne[0] % ek_type_get(*out)->block_size) *out = EK_F16;
    return EMBER_OK;
}

/* The output type of tensor t (llama_tensor_get_type). */
static int eq_tensor_type(eq_rules *r, const egf_tensor *t, const char *name, int *out, char *err, size_t errlen) {
    *out = t->type;
    if (!eq_allows_quantization(name, eq_n_dims(t))) return EMBER_OK;
    int type = r->default_type, rc;
    if (!eq_is_quantized(type)) { *out = type; return EMBER_OK; }
    if ((rc = eq_mix_type(r, t, name, eq_category(name), &type, err, errlen)) != EMBER_OK) return rc;
    return eq_fallback(t, name, type, out, err, errlen);
}

/* The model facts the rules read, from the "{arch}." keys. */
static void eq_rules_init(eq_rules *r, const egf_file *f, const eq_ftype *ft) {
    memset(r, 0, sizeof *r);
    r->ftype = ft->ftype;
    r->default_type = ft->type;
    egf_str arch = {"", 0};
    egf_get_str(f, "general.architecture", &arch);
    char a[64], key[128];
    snprintf(a, sizeof a, "%.*s", (int)(arch.len < 63 ? arch.len : 63), arch.ptr);
    uint32_t n_layer = 0, n_head = 0, n_head_kv = 0, n_expert = 0;
    snprintf(key, sizeof key, "%s.block_count", a);
    egf_get_u32(f, key, &n_layer);
    snprintf(key, sizeof key, "%s.expert_count", a);
    egf_get_u32(f, key, &n_expert);
    /* head counts may be per layer (arrays): layer 0's, as hparams.n_gqa() */
    const char *heads[2] = {"attention.head_count", "attention.head_count_kv"};
    uint32_t *vals[2] = {&n_head, &n_head_kv};
    int have_kv_heads = 0;
    for (int i = 0; i < 2; i++) {
        snprintf(key, sizeof key, "%s.%s", a, heads[i]);
        if (i == 1) have_kv_heads = egf_find_kv(f, key) != NULL;
        if (egf_get_u32(f, key, vals[i]) != EMBER_OK) {
            const egf_kv *kv = egf_find_kv(f, key);
            int64_t v;
            if (kv && kv->type == GGUF_ARRAY && kv->arr_n > 0 && egf_arr_int(kv, 0, &v) == EMBER_OK && v >= 0 &&
                v <= 0x7fffffff)
                *vals[i] = (uint32_t)v;
        }
    }
    if (!have_kv_heads) n_head_kv = n_head;   /* llama.cpp: head_count_kv defaults to head_count */
    r->n_layer = (int)(n_layer > 0x7fffffff ? 0x7fffffff : n_layer);
    r->n_expert = (int)(n_expert > 0x7fffffff ? 0x7fffffff : n_expert);
    r->n_gqa = n_head_kv ? (int)(n_head / n_head_kv) : 0;
    r->falcon = !strcmp(a, "falcon");
    r->is_70b = (n_layer == 80 && ((!strcmp(a, "llama") && n_head != n_head_kv) || !strcmp(a, "qwen2") ||
                                   !strcmp(a, "olmo") || !strcmp(a, "deci"))) ||
                (n_layer == 68 && !strcmp(a, "jais2"));
}

/* 1 if both paths name one existing file (writing would truncate the input). */
static int eq_same_file(const char *a, const char *b) {
#ifndef _WIN32
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
#else
    return !strcmp(a, b);
#endif
}

/* ---- the GGUF writer ------------------------------------------------------------ */

typedef struct eq_writer { FILE *f; uint64_t pos; int failed; } eq_writer;

static void eq_put(eq_writer *w, const void *p, size_t n) {
    if (w->failed || !n) return;
    if (fwrite(p, 1, n, w->f) != n) w->failed = 1;
    w->pos += n;
}
static void eq_put_u32(eq_writer *w, uint32_t v) { eq_put(w, &v, 4); }
static void eq_put_u64(eq_writer *w, uint64_t v) { eq_put(w, &v, 8); }
static void eq_put_str(eq_writer *w, const char *s, uint64_t n) { eq_put_u64(w, n); eq_put(w, s, (size_t)n); }
static void eq_pad(eq_writer *w, uint32_t align) {
    static const uint8_t zeros[256] = {0};
    while (w->pos % align) {
        size_t n = (size_t)(align - w->pos % align);
        eq_put(w, zeros, n < sizeof zeros ? n : sizeof zeros);
        if (w->failed) return;
    }
}

/* Past n encoded values of type t (the reader has checked they fit). */
static const uint8_t *eq_skip_values(const uint8_t *p, int t, uint64_t n) {
    const size_t size = (size_t)egf_fixed_size((uint32_t)t);
    if (size) return p + size * n;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        if (t == GGUF_STRING) {
            memcpy(&len, p, 8);
            p += 8 + len;
        } else {   /* a nested array: element type, count, elements */
            uint32_t et;
            memcpy(&et, p, 4);
            memcpy(&len, p + 4, 8);
            p = eq_skip_values(p + 12, (int)et, len);
        }
    }
    return p;
}

/* A KV's bytes as the input encodes them: key length, key, type, value. */
static void eq_put_kv(eq_writer *w, const egf_kv *kv) {
    const uint8_t *start = (const uint8_t *)kv->key.ptr - 8;
    const uint8_t *end = kv->type == GGUF_ARRAY ? eq_skip_values(kv->data, kv->arr_type, kv->arr_n)
                                                : eq_skip_values(kv->data, kv->type, 1);
    eq_put(w, start, (size_t)(end - start));
}

static void eq_put_kv_u32(eq_writer *w, const char *key, uint32_t v) {
    eq_put_str(w, key, strlen(key));
    eq_put_u32(w, GGUF_UINT32);
    eq_put_u32(w, v);
}

/* ---- the plan: every tensor's output type and place ----------------------------- */

typedef struct eq_tensor {
    const egf_tensor *t;
    char name[256];
    int layer;                /* N of "blk.N.", -1 for the others */
    int type;                 /* output type */
    uint64_t nbytes, offset;  /* output size and offset in the data section */
} eq_tensor;

/* llama-quantize's order (its loader's weights map): by layer, the tensors
 * outside layers first, then by name. */
static int eq_tensor_order(const void *pa, const void *pb) {
    const eq_tensor *a = (const eq_tensor *)pa, *b = (const eq_tensor *)pb;
    if (a->layer != b->layer) return a->layer < b->layer ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int eq_plan(const egf_file *f, const eq_ftype *ft, uint32_t align, eq_tensor *ts, char *err, size_t errlen) {
    const uint64_t n = egf_n_tensors(f);
    eq_rules r;
    eq_rules_init(&r, f, ft);
    r.tied = 1;
    for (uint64_t i = 0; i < n; i++) {
        eq_tensor *e = &ts[i];
        e->t = egf_tensor_at(f, i);
        if (e->t->name.len >= sizeof e->name)
            return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "a tensor name of %llu bytes",
                             (unsigned long long)e->t->name.len);
        memcpy(e->name, e->t->name.ptr, (size_t)e->t->name.len);
        e->name[e->t->name.len] = 0;
        e->layer = -1;
        sscanf(e->name, "blk.%d.", &e->layer);
        const int cat = eq_category(e->name);
        if (eq_is_attn_v(cat)) r.n_attn_v++;
        if (cat == EQ_OUTPUT) r.tied = 0;
    }
    qsort(ts, (size_t)n, sizeof *ts, eq_tensor_order);
    uint64_t offset = 0;
    for (uint64_t i = 0; i < n; i++) {
        eq_tensor *e = &ts[i];
        int rc = eq_tensor_type(&r, e->t, e->name, &e->type, err, errlen);
        if (rc != EMBER_OK) return rc;
        if (e->type != e->t->type && !eq_is_float(e->t->type))
            return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED,
                             "tensor '%s' is %s: ember quantizes F32, F16 or BF16 weights, not already quantized ones",
                             e->name, ek_type_get(e->t->type)->name);
        uint64_t rows = 1;
        for (int d = 1; d < 4; d++) rows *= (uint64_t)e->t->ne[d];
        if (ec_mul_u64(rows, ek_row_bytes(e->type, (uint64_t)e->t->ne[0]), &e->nbytes) != 0)
            return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tensor '%s' is too large", e->name);
        e->offset = offset;
        offset += (e->nbytes + align - 1) / align * align;
    }
    return EMBER_OK;
}

/* ---- quantizing rows in parallel ------------------------------------------------- */

typedef struct eq_job {
    const uint8_t *src;       /* first row of the chunk */
    int src_type, dst_type;
    int64_t n, rows;          /* row length, rows in the chunk */
    size_t src_rb, dst_rb;
    uint8_t *dst;
    float *scratch;           /* n floats per thread */
    int failed;
} eq_job;

static void eq_row_to_f32(int type, const uint8_t *src, float *dst, int64_t n) {
    if (type == EK_F32) { memcpy(dst, src, (size_t)n * 4); return; }
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = type == EK_F16 ? ek_fp16_to_fp32(h) : ek_bf16_to_fp32(h);
    }
}

static void eq_job_run(void *arg, int ith, int nth) {
    eq_job *j = (eq_job *)arg;
    const int64_t r0 = j->rows * ith / nth, r1 = j->rows * (ith + 1) / nth;
    float *x = j->scratch + (size_t)ith * (size_t)j->n;
    for (int64_t r = r0; r < r1; r++) {
        eq_row_to_f32(j->src_type, j->src + (size_t)r * j->src_rb, x, j->n);
        if (ek_quantize_row(j->dst_type, x, j->dst + (size_t)r * j->dst_rb, j->n) != 0) j->failed = 1;
    }
}

/* Bytes of output per chunk: large enough that the threads' fork/join is
 * noise, small enough to stay in memory beside a big model. */
#define EQ_CHUNK_BYTES ((size_t)8 << 20)

static int eq_write_tensor(eq_writer *w, const eq_tensor *e, et_pool *pool, uint8_t *buf, size_t buf_size,
                           float *scratch, char *err, size_t errlen) {
    const egf_tensor *t = e->t;
    if (e->type == t->type) {
        eq_put(w, t->data, (size_t)t->nbytes);
        return EMBER_OK;
    }
    eq_job j;
    memset(&j, 0, sizeof j);
    j.src_type = t->type;
    j.dst_type = e->type;
    j.n = t->ne[0];
    j.src_rb = (size_t)ek_row_bytes(t->type, (uint64_t)j.n);
    j.dst_rb = (size_t)ek_row_bytes(e->type, (uint64_t)j.n);
    j.scratch = scratch;
    const int64_t rows = (int64_t)(e->nbytes / j.dst_rb);
    const int nth = et_pool_size(pool);
    int64_t chunk = (int64_t)(buf_size / j.dst_rb);
    for (int64_t r = 0; r < rows && !w->failed; r += chunk) {
        j.rows = rows - r < chunk ? rows - r : chunk;
        j.src = (const uint8_t *)t->data + (size_t)r * j.src_rb;
        j.dst = buf;
        et_pool_run(pool, eq_job_run, &j, j.rows < nth ? (int)j.rows : nth);
        if (j.failed)
            return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "tensor '%s': cannot make %s", e->name,
                             ek_type_get(e->type)->name);
        eq_put(w, buf, (size_t)j.rows * j.dst_rb);
    }
    return EMBER_OK;
}

/* ---- ember_quantize ----------------------------------------------------------------- */

ember_quantize_params ember_quantize_default_params(void) {
    ember_quantize_params p;
    memset(&p, 0, sizeof p);
    p.type = "q4_k_m";
    return p;
}

static int eq_default_threads(void) {
    int n = ep_cpu_count();
    return n > 256 ? 256 : n;
}

static ember_status eq_status(ember_error *err, int rc, const char *msg) {
    const ember_status code = (ember_status)rc;
    if (err) {
        err->code = code;
        snprintf(err->message, sizeof err->message, "%s", code != EMBER_OK && !*msg ? ember_status_string(code) : msg);
    }
    return code;
}

/* Everything a run holds, freed in one place. */
typedef struct eq_run {
    const ember_allocator *a;
    ep_region in;             /* the input file, mapped (read where the platform cannot map) */
    egf_file *f;
    eq_tensor *ts;
    et_pool *pool;
    uint8_t *buf;
    float *scratch;
    FILE *out;
    int created;              /* the output file exists because of us: remove it on failure */
} eq_run;

static void eq_run_free(eq_run *q) {
    if (q->out) fclose(q->out);
    ec_free_aligned(q->a, q->buf);
    ec_free(q->a, q->scratch);
    et_pool_free(q->pool);
    ec_free(q->a, q->ts);
    egf_close(q->f);
    ep_region_free(&q->in);
}

/* Header, KVs and tensor infos, padded to the alignment. */
static void eq_write_meta(eq_writer *w, const egf_file *f, const eq_tensor *ts, uint64_t n, int ftype,
                          uint32_t align) {
    static const char *const replaced[] = {"general.quantization_version", "general.file_type", "split.no",
                                           "split.count", "split.tensors.count"};
    uint64_t n_kv = 2;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            eq_put(w, "GGUF", 4);
            eq_put_u32(w, 3);
            eq_put_u64(w, n);
            eq_put_u64(w, n_kv);
        }
        for (uint64_t i = 0; i < egf_n_kv(f); i++) {
            const egf_kv *kv = egf_kv_at(f, i);
            int keep = 1;
            for (size_t k = 0; k < sizeof replaced / sizeof replaced[0]; k++) keep &= !egf_str_eq(kv->key, replaced[k]);
            if (!keep) continue;
            if (pass == 0) n_kv++;
            else eq_put_kv(w, kv);
        }
    }
    eq_put_kv_u32(w, "general.quantization_version", 2);
    eq_put_kv_u32(w, "general.file_type", (uint32_t)ftype);
    for (uint64_t i = 0; i < n; i++) {
        const int nd = eq_n_dims(ts[i].t);
        eq_put_str(w, ts[i].name, strlen(ts[i].name));
        eq_put_u32(w, (uint32_t)nd);
        for (int d = 0; d < nd; d++) eq_put_u64(w, (uint64_t)ts[i].t->ne[d]);
        eq_put_u32(w, (uint32_t)ts[i].type);
        eq_put_u64(w, ts[i].offset);
    }
    eq_pad(w, align);
}

static int eq_quantize(eq_run *q, const char *in_path, const char *out_path, const ember_quantize_params *p,
                       char *err, size_t errlen) {
    const eq_ftype *ft = eq_find_ftype(p->type);
    if (!ft) {
        int n = ec_errorf(err, errlen, EMBER_ERR_INVALID_ARG, "unknown type '%s'; known:", p->type);
        for (int i = 0; i < EQ_N_FTYPES; i++) {
            size_t len = strlen(err);
            if (len + 1 < errlen) snprintf(err + len, errlen - len, " %s", eq_ftypes[i].name);
        }
        return n;
    }
    int rc = ep_file_map(in_path, &q->in, err, errlen);
    if (rc != EMBER_OK) return rc;
    char msg[256] = "";
    if ((rc = egf_open(q->in.data, q->in.size, q->a, &q->f, msg, sizeof msg)) != EMBER_OK)
        return ec_errorf(err, errlen, rc, "%s: %s", in_path, msg);
    uint32_t n_split = 1;
    if (egf_get_u32(q->f, "split.count", &n_split) == EMBER_OK && n_split > 1)
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "%s is one of %u split files; merge them first",
                         in_path, n_split);
    const uint64_t n = egf_n_tensors(q->f);
    const uint32_t align = egf_alignment(q->f);
    if (n > INT32_MAX) return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "too many tensors");
    q->ts = (eq_tensor *)ec_calloc(q->a, n ? (size_t)n : 1, sizeof *q->ts);
    if (!q->ts) return ec_errorf(err, errlen, EMBER_ERR_NOMEM, "out of memory");
    if ((rc = eq_plan(q->f, ft, align, q->ts, err, errlen)) != EMBER_OK) return rc;

    int nth = p->n_threads > 0 ? p->n_threads : eq_default_threads();
    if (nth > 256) nth = 256;
    int64_t max_row = 1;
    size_t max_rb = 1;
    for (uint64_t i = 0; i < n; i++) {
        if (q->ts[i].t->ne[0] > max_row) max_row = q->ts[i].t->ne[0];
        size_t rb = (size_t)ek_row_bytes(q->ts[i].type, (uint64_t)q->ts[i].t->ne[0]);
        if (rb > max_rb) max_rb = rb;
    }
    const size_t buf_size = max_rb > EQ_CHUNK_BYTES / (size_t)nth ? max_rb * (size_t)nth : EQ_CHUNK_BYTES;
    if ((rc = et_pool_create(q->a, nth, &q->pool)) != EMBER_OK)
        return ec_errorf(err, errlen, rc, "cannot start %d threads", nth);
    q->buf = (uint8_t *)ec_malloc_aligned(q->a, buf_size);
    q->scratch = (float *)ec_calloc(q->a, (size_t)nth * (size_t)max_row, sizeof(float));
    if (!q->buf || !q->scratch) return ec_errorf(err, errlen, EMBER_ERR_NOMEM, "out of memory");

    if (eq_same_file(in_path, out_path))
        return ec_errorf(err, errlen, EMBER_ERR_INVALID_ARG, "the output '%s' is the input file", out_path);
    q->out = ep_fopen(out_path, "wb");
    if (!q->out) return ec_errorf(err, errlen, EMBER_ERR_IO, "cannot create '%s': %s", out_path, strerror(errno));
    q->created = 1;
    eq_writer w = {q->out, 0, 0};
    eq_write_meta(&w, q->f, q->ts, n, ft->ftype, align);
    for (uint64_t i = 0; i < n && !w.failed; i++) {
        if (p->progress && p->progress(p->user_data, (int)i, (int)n, q->ts[i].name))
            return ec_errorf(err, errlen, EMBER_ERR_CANCELLED, "cancelled by the progress callback");
        if ((rc = eq_write_tensor(&w, &q->ts[i], q->pool, q->buf, buf_size, q->scratch, err, errlen)) != EMBER_OK)
            return rc;
        eq_pad(&w, align);
    }
    if (!w.failed && fflush(q->out) != 0) w.failed = 1;
    const int close_failed = fclose(q->out) != 0;
    q->out = NULL;
    if (w.failed || close_failed)
        return ec_errorf(err, errlen, EMBER_ERR_IO, "cannot write '%s': %s", out_path, strerror(errno));
    return EMBER_OK;
}

ember_status ember_quantize(const char *in_path, const char *out_path, const ember_quantize_params *params,
                            ember_error *err) {
    if (!in_path || !out_path || !params || !params->type)
        return eq_status(err, EMBER_ERR_INVALID_ARG, !in_path ? "in_path is NULL" : !out_path ? "out_path is NULL"
                                                     : !params ? "params is NULL" : "params->type is NULL");
    eq_run q;
    memset(&q, 0, sizeof q);
    q.a = params->allocator;
    char msg[256] = "";
    int rc = eq_quantize(&q, in_path, out_path, params, msg, sizeof msg);
    eq_run_free(&q);
    if (rc != EMBER_OK && q.created) remove(out_path);
    return eq_status(err, rc, rc == EMBER_OK ? "" : msg);
}
