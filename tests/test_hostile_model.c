/* test_hostile_model.c - model-level hostile GGUF files: contradictory
 * hyperparameters, missing / misshapen / mistyped tensors, broken tokenizer
 * metadata, huge context requests, and a valid model truncated at every
 * offset.  Each must fail with the right status and a message, without a
 * crash or a leak (a counting allocator checks the live block count).
 *
 * The first part of this file is a builder of tiny valid llama models in
 * memory (tm_build), used by the other API tests and the fuzzers too:
 *   #define TM_NO_MAIN
 *   #include "test_hostile_model.c"
 */
#include "test.h"
#include "gguf_build.h"
#include "ember.h"
#include "kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define TM_UNUSED __attribute__((unused))
#else
#define TM_UNUSED
#endif

/* ======================================================================
 * Tiny model builder
 * ====================================================================== */

#define TM_SAME INT64_MIN          /* metadata value = the shape value */
#define TM_OMIT (INT64_MIN + 1)    /* leave the key out */

enum { TM_RANDOM = 0,   /* random weights everywhere */
       TM_CHAIN = 1 };  /* attention/FFN contribute nothing; the output head
                           makes token t predict tm_succ(t) with a big margin */

/* Vocabulary: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then pieces. */
#define TM_UNK 0
#define TM_BOS 1
#define TM_EOS 2
#define TM_BYTE(b) (3 + (int)(b))
#define TM_FIRST_PIECE 259

static const char *const tm_pieces[] = {
    "\xe2\x96\x81", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m",
    "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z",
    "\xe2\x96\x81t", "he", "\xe2\x96\x81the", "in", "er", "an", "on", "\xe2\x96\x81" "a",
    "\xe2\x96\x81w", "or", "ld", "\xe2\x96\x81wor", "\xe2\x96\x81world", "ll", "lo",
    "\xe2\x96\x81h", "\xe2\x96\x81he", "\xe2\x96\x81hel", "\xe2\x96\x81hell",
    "\xe2\x96\x81hello", ".", ",", "!", "\xc3\xa9", "\xe2\x82\xac", "\xe6\x97\xa5\xe6\x9c\xac",
    "\xe2\x96\x81\xc3\xa9", "\xe2\x96\x81" "de", "de", "\xe2\x96\x81s", "st", "\xe2\x96\x81st",
};
#define TM_N_PIECES ((int)(sizeof tm_pieces / sizeof tm_pieces[0]))

typedef struct tm_spec {
    /* the real shapes (tensors are written with these) */
    int n_embd, n_ff, n_layer, n_head, n_head_kv, n_ctx;
    int wtype;                 /* matrices: EK_F32, EK_F16, EK_Q8_0, ... */
    int norm_type;             /* norms: EK_F32 (or another type, hostile) */
    int mode;                  /* TM_RANDOM / TM_CHAIN */
    uint64_t seed;
    int tied;                  /* no output.weight */
    int small_vocab;           /* no byte tokens (3 specials + pieces) */
    /* metadata (TM_SAME = as the shapes, TM_OMIT = absent) */
    int64_t md_ctx, md_embd, md_layers, md_ff, md_head, md_head_kv, md_key_length;
    int64_t md_bos, md_eos;
    const char *arch;          /* "llama" */
    const char *tok_model;     /* "llama" */
    int64_t md_rope_dim;
    /* hostile knobs */
    int tensor_layers;         /* layers whose tensors are written (0 = n_layer) */
    int extra_embd_rows;       /* token_embd rows = vocab + this */
    const char *drop_tensor;   /* leave this tensor out */
    const char *reshape_tensor; int reshape_dim, reshape_delta;  /* ne[dim] += delta */
    const char *retype_tensor; int retype;                        /* another type */
    const char *redim_tensor; int redim;                          /* another n_dims */
    int tokens_elem;           /* element type of tokenizer.ggml.tokens (GB_STRING) */
    int scores_elem, types_elem;
    int scores_delta, types_delta;    /* array length differences */
    int omit_tokens, omit_tok_model;
    int bad_token_type;        /* a token_type value out of range */
    int nonfinite;             /* 1: NaN in an output row, 2: +Inf in token_embd row 5 */
    const int32_t *chain;      /* TM_CHAIN: sequence of tokens; the rest cycles */
    int chain_len;
    /* other families: architecture and key prefix, and their tensors */
    const char *family;        /* NULL: llama keys under s->arch */
    int head_dim;              /* real head size (0: n_embd / n_head) */
    int qk_norm, post_norms;   /* attn_q_norm/attn_k_norm, post_attention_norm/post_ffw_norm */
    int fused_qkv, fused_up;   /* attn_qkv (q | k | v), ffn_up (gate | up) without ffn_gate */
    int qkv_bias;              /* attn_q/k/v.bias */
    int64_t md_swa, md_swa_period;   /* attention.sliding_window(_pattern), TM_OMIT by default */
    int64_t md_softcap;        /* attn_logit_softcapping (as f32), TM_OMIT by default */
    int add_eos;               /* tokenizer.ggml.add_eos_token = true */
} tm_spec;

TM_UNUSED static tm_spec tm_default(void) {
    tm_spec s;
    memset(&s, 0, sizeof s);
    s.n_embd = 64; s.n_ff = 96; s.n_layer = 2; s.n_head = 8; s.n_head_kv = 4; s.n_ctx = 128;
    s.wtype = EK_Q8_0; s.norm_type = EK_F32; s.mode = TM_RANDOM; s.seed = 1;
    s.md_ctx = s.md_embd = s.md_layers = s.md_ff = s.md_head = s.md_head_kv = TM_SAME;
    s.md_key_length = TM_OMIT; s.md_rope_dim = TM_OMIT;
    s.md_bos = TM_BOS; s.md_eos = TM_EOS;
    s.arch = "llama"; s.tok_model = "llama";
    s.tokens_elem = GB_STRING; s.scores_elem = GB_FLOAT32; s.types_elem = GB_INT32;
    s.md_swa = s.md_swa_period = s.md_softcap = TM_OMIT;
    return s;
}

/* A tiny model of another family, with its distinctive tensors and keys
 * (a window of 5 where the family has local layers). */
TM_UNUSED static tm_spec tm_family(const char *family) {
    tm_spec s = tm_default();
    s.family = family;
    if (!strcmp(family, "qwen2")) s.qkv_bias = 1;
    if (!strcmp(family, "qwen3")) { s.qk_norm = 1; s.head_dim = 16; s.md_key_length = TM_SAME; }
    if (!strcmp(family, "gemma2")) { s.post_norms = 1; s.md_swa = 5; s.tied = 1; }
    if (!strcmp(family, "gemma3")) { s.post_norms = 1; s.qk_norm = 1; s.md_swa = 5; s.md_swa_period = 2; s.tied = 1; }
    if (!strcmp(family, "phi3")) { s.fused_qkv = 1; s.fused_up = 1; s.md_rope_dim = 4; }
    return s;
}

TM_UNUSED static int tm_n_vocab(const tm_spec *s) { return (s->small_vocab ? 3 : 259) + TM_N_PIECES; }

/* Token id of a piece text (normal pieces only), -1 if none. */
/* k-quants (which ember does not quantize): random quants and group scales
 * with small positive d and dmin, from a seed (the row's first float);
 * 1 if the type is one. */
TM_UNUSED static int tm_kquant_row(int type, uint8_t *dst, size_t rb, float seed) {
    static const int d_at[] = {[EK_Q2_K] = 80, [EK_Q3_K] = 108, [EK_Q4_K] = 0, [EK_Q5_K] = 0, [EK_Q6_K] = 208};
    if (type != EK_Q2_K && type != EK_Q3_K && type != EK_Q4_K && type != EK_Q5_K && type != EK_Q6_K) return 0;
    uint32_t st;
    memcpy(&st, &seed, 4);
    st = st * 2654435761u + 1;
    for (size_t i = 0; i < rb; i++) {
        st = st * 1664525u + 1013904223u;
        dst[i] = (uint8_t)(st >> 24);
    }
    const int ts = ek_type_get(type)->type_size;
    for (size_t b = 0; b < rb / (size_t)ts; b++) {
        uint16_t d = ek_fp32_to_fp16(0.002f + 0.0001f * (float)(dst[b * ts + 1] & 63)), dm = ek_fp32_to_fp16(0.001f);
        memcpy(dst + b * ts + d_at[type], &d, 2);
        if (type == EK_Q2_K || type == EK_Q4_K || type == EK_Q5_K) memcpy(dst + b * ts + d_at[type] + 2, &dm, 2);
    }
    return 1;
}

TM_UNUSED static int tm_piece_id(const tm_spec *s, const char *text) {
    for (int i = 0; i < TM_N_PIECES; i++)
        if (!strcmp(tm_pieces[i], text)) return (s->small_vocab ? 3 : 259) + i;
    return -1;
}

static void tm_token_text(const tm_spec *s, int id, char *buf, size_t size) {
    int first = s->small_vocab ? 3 : 259;
    if (id == TM_UNK) snprintf(buf, size, "<unk>");
    else if (id == TM_BOS) snprintf(buf, size, "<s>");
    else if (id == TM_EOS) snprintf(buf, size, "</s>");
    else if (id < first) snprintf(buf, size, "<0x%02X>", id - 3);
    else snprintf(buf, size, "%s", tm_pieces[id - first]);
}

static int tm_token_type(const tm_spec *s, int id) {
    if (id == TM_UNK) return 2;
    if (id == TM_BOS || id == TM_EOS) return 3;
    if (id < (s->small_vocab ? 3 : 259)) return 6;
    return 1;
}

static uint64_t tm_rng(uint64_t *st) {
    uint64_t z = (*st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float tm_uniform(uint64_t *st) { return (float)((double)(tm_rng(st) >> 11) / 9007199254740992.0 * 2.0 - 1.0); }

/* Successor of each token in TM_CHAIN mode: the chain's tokens in order,
 * then every other token, cyclically (a permutation: each token has exactly
 * one predecessor). */
static void tm_perm(const tm_spec *s, int V, int *order) {
    char *used = calloc((size_t)V, 1);
    int n = 0;
    for (int i = 0; i < s->chain_len; i++)
        if (s->chain[i] >= 0 && s->chain[i] < V && !used[s->chain[i]]) { used[s->chain[i]] = 1; order[n++] = s->chain[i]; }
    for (int t = 0; t < V; t++) if (!used[t]) order[n++] = t;
    free(used);
}

typedef struct tm_tensor { char name[64]; int n_dims; int64_t ne[2]; int type; float *w; } tm_tensor;

/* Build the model image; returns 0 (and the image in *out, free with
 * gb_free) or -1. */
static int tm_build(const tm_spec *s, gb_buf *out) {
    const int V = tm_n_vocab(s), E = s->n_embd, F = s->n_ff, L = s->n_layer;
    const int hd = s->head_dim ? s->head_dim : E / s->n_head;
    const int q_dim = s->n_head * hd, kv_dim = s->n_head_kv * hd;
    const int TL = s->tensor_layers ? s->tensor_layers : L;
    const int rows = V + s->extra_embd_rows;
    uint64_t st = s->seed * 0x1234567ull + 7;

    /* ---- tensors with float contents ---- */
    int cap = 3 + 16 * TL;
    tm_tensor *t = calloc((size_t)cap, sizeof *t);
    int nt = 0;
#define TM_ADD(nm, nd, n0, n1, ty) do { tm_tensor *x_ = &t[nt++]; snprintf(x_->name, sizeof x_->name, "%s", nm); \
        x_->n_dims = (nd); x_->ne[0] = (n0); x_->ne[1] = (n1); x_->type = (ty); } while (0)
    TM_ADD("token_embd.weight", 2, E, rows, s->wtype == EK_Q8_0 || s->wtype == EK_F16 ? s->wtype : EK_F32);
    TM_ADD("output_norm.weight", 1, E, 1, s->norm_type);
    if (!s->tied) TM_ADD("output.weight", 2, E, rows, s->wtype);
    for (int l = 0; l < TL; l++) {
        char nm[64];
#define TM_LAYER(sfx, nd, n0, n1, ty) do { snprintf(nm, sizeof nm, "blk.%d." sfx, l); TM_ADD(nm, nd, n0, n1, ty); } while (0)
        TM_LAYER("attn_norm.weight", 1, E, 1, s->norm_type);
        if (s->fused_qkv) {
            TM_LAYER("attn_qkv.weight", 2, E, q_dim + 2 * kv_dim, s->wtype);
        } else {
            TM_LAYER("attn_q.weight", 2, E, q_dim, s->wtype);
            TM_LAYER("attn_k.weight", 2, E, kv_dim, s->wtype);
            TM_LAYER("attn_v.weight", 2, E, kv_dim, s->wtype);
        }
        if (s->qkv_bias && !s->fused_qkv) {
            TM_LAYER("attn_q.bias", 1, q_dim, 1, EK_F32);
            TM_LAYER("attn_k.bias", 1, kv_dim, 1, EK_F32);
            TM_LAYER("attn_v.bias", 1, kv_dim, 1, EK_F32);
        }
        if (s->qk_norm) {
            TM_LAYER("attn_q_norm.weight", 1, hd, 1, s->norm_type);
            TM_LAYER("attn_k_norm.weight", 1, hd, 1, s->norm_type);
        }
        TM_LAYER("attn_output.weight", 2, q_dim, E, s->wtype);
        TM_LAYER("ffn_norm.weight", 1, E, 1, s->norm_type);
        if (s->fused_up) {
            TM_LAYER("ffn_up.weight", 2, E, 2 * F, s->wtype);
        } else {
            TM_LAYER("ffn_gate.weight", 2, E, F, s->wtype);
            TM_LAYER("ffn_up.weight", 2, E, F, s->wtype);
        }
        TM_LAYER("ffn_down.weight", 2, F, E, s->wtype);
        if (s->post_norms) {
            TM_LAYER("post_attention_norm.weight", 1, E, 1, s->norm_type);
            TM_LAYER("post_ffw_norm.weight", 1, E, 1, s->norm_type);
        }
    }
    /* fused biases last, so the other tensors draw the same numbers with or without them */
    for (int l = 0; l < TL && s->qkv_bias && s->fused_qkv; l++) {
        char nm[64];
        TM_LAYER("attn_qkv.bias", 1, q_dim + 2 * kv_dim, 1, EK_F32);
    }
#undef TM_LAYER
#undef TM_ADD
    int *order = NULL;
    if (s->mode == TM_CHAIN) { order = malloc((size_t)V * sizeof *order); tm_perm(s, V, order); }
    float *embd = NULL;
    for (int k = 0; k < nt; k++) {
        tm_tensor *x = &t[k];
        size_t n = (size_t)x->ne[0] * (size_t)(x->n_dims > 1 ? x->ne[1] : 1);
        x->w = calloc(n, sizeof(float));
        int is_norm = x->n_dims == 1;
        int is_embd = !strcmp(x->name, "token_embd.weight"), is_out = !strcmp(x->name, "output.weight");
        for (size_t i = 0; i < n; i++) {
            float r = tm_uniform(&st);
            if (is_norm) x->w[i] = s->mode == TM_CHAIN ? 1.0f : 1.0f + 0.1f * r;
            else if (is_embd) x->w[i] = r * 1.7f;
            else if (s->mode == TM_CHAIN) x->w[i] = is_out ? 0.0f : (strstr(x->name, "attn_output") || strstr(x->name, "ffn_down") ? 0.0f : 0.1f * r);
            else x->w[i] = r * (is_out ? 0.5f : 0.25f);
        }
        if (is_embd) embd = x->w;
    }
    if (s->mode == TM_CHAIN && !s->tied) {
        /* output row succ(t) = embd row t, so logits[succ(t)] = |e_t|^2 / rms */
        for (int k = 0; k < nt; k++) {
            if (strcmp(t[k].name, "output.weight")) continue;
            for (int i = 0; i < V; i++) {
                int from = order[i], to = order[(i + 1) % V];
                memcpy(t[k].w + (size_t)to * E, embd + (size_t)from * E, (size_t)E * sizeof(float));
            }
        }
    }
    if (s->nonfinite) {
        for (int k = 0; k < nt; k++) {
            if (s->nonfinite == 1 && (!strcmp(t[k].name, "output.weight") || (s->tied && !strcmp(t[k].name, "token_embd.weight"))))
                t[k].w[5 * E + 3] = NAN;
            if (s->nonfinite == 2 && !strcmp(t[k].name, "token_embd.weight")) t[k].w[5 * E + 3] = INFINITY;
        }
    }
    free(order);

    /* hostile tensor edits */
    gb_tensor *gt = calloc((size_t)nt, sizeof *gt);
    int ng = 0;
    int *src = calloc((size_t)nt, sizeof *src);
    for (int k = 0; k < nt; k++) {
        if (s->drop_tensor && !strcmp(s->drop_tensor, t[k].name)) continue;
        gb_tensor *g = &gt[ng];
        g->name = t[k].name;
        g->n_dims = t[k].n_dims;
        g->ne[0] = t[k].ne[0]; g->ne[1] = t[k].n_dims > 1 ? t[k].ne[1] : 1; g->ne[2] = g->ne[3] = 1;
        g->type = t[k].type;
        if (s->reshape_tensor && !strcmp(s->reshape_tensor, t[k].name)) {
            g->ne[s->reshape_dim] += s->reshape_delta;
            if (g->n_dims <= s->reshape_dim) g->n_dims = s->reshape_dim + 1;
        }
        if (s->retype_tensor && !strcmp(s->retype_tensor, t[k].name)) g->type = s->retype;
        if (s->redim_tensor && !strcmp(s->redim_tensor, t[k].name)) {
            if (s->redim > g->n_dims) for (int d = g->n_dims; d < s->redim; d++) g->ne[d] = 1;
            g->n_dims = s->redim;
            if (g->n_dims == 2 && t[k].n_dims == 1) { g->ne[0] = t[k].ne[0] / 2; g->ne[1] = 2; }
        }
        src[ng++] = k;
    }

    /* ---- metadata ---- */
    gb_buf kv = {0};
    int nkv = 0;
    const char *kp = s->family ? s->family : "llama";   /* key prefix */
    char key[96];
#define TM_KEY(sfx) (snprintf(key, sizeof key, "%s." sfx, kp), key)
#define TM_DIM(k, md, val) do { if ((md) != TM_OMIT) { gb_kv_u32(&kv, k, (uint32_t)((md) == TM_SAME ? (int64_t)(val) : (md))); nkv++; } } while (0)
    const char *arch = s->family ? s->family : s->arch;
    if (arch) { gb_kv_str(&kv, "general.architecture", arch); nkv++; }
    gb_kv_str(&kv, "general.name", "tiny test model"); nkv++;
    TM_DIM(TM_KEY("context_length"), s->md_ctx, s->n_ctx);
    TM_DIM(TM_KEY("embedding_length"), s->md_embd, E);
    TM_DIM(TM_KEY("block_count"), s->md_layers, L);
    TM_DIM(TM_KEY("feed_forward_length"), s->md_ff, F);
    TM_DIM(TM_KEY("attention.head_count"), s->md_head, s->n_head);
    TM_DIM(TM_KEY("attention.head_count_kv"), s->md_head_kv, s->n_head_kv);
    TM_DIM(TM_KEY("attention.key_length"), s->md_key_length, hd);
    TM_DIM(TM_KEY("rope.dimension_count"), s->md_rope_dim, hd);
    TM_DIM(TM_KEY("attention.sliding_window"), s->md_swa, 0);
    TM_DIM(TM_KEY("attention.sliding_window_pattern"), s->md_swa_period, 0);
    if (s->md_softcap != TM_OMIT) { gb_kv_f32(&kv, TM_KEY("attn_logit_softcapping"), (float)s->md_softcap); nkv++; }
    gb_kv_f32(&kv, TM_KEY("attention.layer_norm_rms_epsilon"), 1e-5f); nkv++;
    gb_kv_f32(&kv, TM_KEY("rope.freq_base"), 10000.0f); nkv++;
#undef TM_KEY
    if (!s->omit_tok_model) { gb_kv_str(&kv, "tokenizer.ggml.model", s->tok_model); nkv++; }
    if (!s->omit_tokens) {
        char txt[64];
        if (s->tokens_elem == GB_STRING) {
            gb_kv_arr(&kv, "tokenizer.ggml.tokens", GB_STRING, (uint64_t)V);
            for (int i = 0; i < V; i++) { tm_token_text(s, i, txt, sizeof txt); gb_str(&kv, txt); }
        } else {
            gb_kv_arr(&kv, "tokenizer.ggml.tokens", (uint32_t)s->tokens_elem, (uint64_t)V);
            for (int i = 0; i < V; i++) gb_u32(&kv, (uint32_t)i);   /* 4-byte elements */
        }
        nkv++;
    }
    {
        int n = V + s->scores_delta;
        if (n < 0) n = 0;
        if (s->scores_elem == GB_FLOAT32) {
            gb_kv_arr(&kv, "tokenizer.ggml.scores", GB_FLOAT32, (uint64_t)n);
            for (int i = 0; i < n; i++) {
                char txt[64];
                tm_token_text(s, i < V ? i : 0, txt, sizeof txt);
                gb_f32(&kv, i >= (s->small_vocab ? 3 : 259) ? (float)strlen(txt) - 0.01f * (float)i : 0.0f);
            }
        } else {
            gb_kv_arr(&kv, "tokenizer.ggml.scores", GB_STRING, (uint64_t)n);
            for (int i = 0; i < n; i++) gb_str(&kv, "x");
        }
        nkv++;
    }
    {
        int n = V + s->types_delta;
        if (n < 0) n = 0;
        if (s->types_elem == GB_INT32) {
            gb_kv_arr(&kv, "tokenizer.ggml.token_type", GB_INT32, (uint64_t)n);
            for (int i = 0; i < n; i++) gb_u32(&kv, (uint32_t)(s->bad_token_type && i == 7 ? 99 : tm_token_type(s, i < V ? i : 0)));
        } else {
            gb_kv_arr(&kv, "tokenizer.ggml.token_type", GB_FLOAT32, (uint64_t)n);
            for (int i = 0; i < n; i++) gb_f32(&kv, 1.0f);
        }
        nkv++;
    }
    if (s->md_bos != TM_OMIT) { gb_kv_u32(&kv, "tokenizer.ggml.bos_token_id", (uint32_t)s->md_bos); nkv++; }
    if (s->md_eos != TM_OMIT) { gb_kv_u32(&kv, "tokenizer.ggml.eos_token_id", (uint32_t)s->md_eos); nkv++; }
    gb_kv_u32(&kv, "tokenizer.ggml.unknown_token_id", TM_UNK); nkv++;
    gb_kv_bool(&kv, "tokenizer.ggml.add_bos_token", 1); nkv++;
    if (s->add_eos) { gb_kv_bool(&kv, "tokenizer.ggml.add_eos_token", 1); nkv++; }
#undef TM_DIM

    /* ---- the image ---- */
    gb_buf b = {0};
    gb_header(&b, 3, (uint64_t)ng, (uint64_t)nkv);
    gb_bytes(&b, kv.p, kv.n);
    gb_free(&kv);
    gb_tensors(&b, gt, ng, 32);
    for (int g = 0; g < ng; g++) {
        const tm_tensor *x = &t[src[g]];
        /* Contents only where the shape and type are the original ones. */
        if (gt[g].ne[0] != x->ne[0] || gt[g].type != x->type) continue;
        if (gt[g].n_dims == 1 && x->n_dims != 1) continue;
        int64_t nrows = x->n_dims > 1 ? x->ne[1] : 1;
        if (gt[g].ne[1] < nrows) nrows = gt[g].ne[1];
        size_t rb = (size_t)ek_row_bytes(x->type, (uint64_t)x->ne[0]);
        for (int64_t r = 0; r < nrows; r++) {
            uint8_t *dst = b.p + gt[g].data_at + (size_t)r * rb;
            const float *row = x->w + (size_t)r * (size_t)x->ne[0];
            if (x->type == EK_F32) memcpy(dst, row, (size_t)x->ne[0] * 4);
            else if (ek_quantize_row(x->type, row, dst, x->ne[0]) != 0 && !tm_kquant_row(x->type, dst, rb, x->w[r]))
                memset(dst, 0, rb);
        }
    }
    for (int k = 0; k < nt; k++) free(t[k].w);
    free(t); free(gt); free(src);
    *out = b;
    return 0;
}

/* ---- a counting allocator ------------------------------------------------ */

typedef struct tm_alloc {
    long calls;         /* malloc + realloc calls */
    long live;          /* blocks not yet freed */
    long fail_at;       /* 1-based call number that fails (0 = never) */
    long failed;        /* failures injected */
    size_t bytes;       /* bytes requested in total */
    size_t max_size;    /* larger requests fail (0 = no limit) */
} tm_alloc;

static void *tm_malloc(void *ud, size_t n) {
    tm_alloc *a = ud;
    a->calls++;
    if ((a->fail_at && a->calls == a->fail_at) || (a->max_size && n > a->max_size)) { a->failed++; return NULL; }
    void *p = malloc(n);
    if (p) { a->live++; a->bytes += n; }
    return p;
}
static void *tm_realloc(void *ud, void *p, size_t n) {
    tm_alloc *a = ud;
    if (!p) return tm_malloc(ud, n);
    a->calls++;
    if ((a->fail_at && a->calls == a->fail_at) || (a->max_size && n > a->max_size)) { a->failed++; return NULL; }
    void *q = realloc(p, n);
    if (q) a->bytes += n;
    return q;
}
static void tm_free(void *ud, void *p) {
    tm_alloc *a = ud;
    if (p) { a->live--; free(p); }
}
TM_UNUSED static ember_allocator tm_allocator(tm_alloc *a) {
    ember_allocator h = {tm_malloc, tm_realloc, tm_free, a};
    return h;
}

/* Open a spec'd model from memory (the image stays in *img). */
TM_UNUSED static int tm_open(const tm_spec *s, gb_buf *img, const ember_allocator *al, ember_model **m,
                             ember_error *err) {
    tm_build(s, img);
    ember_model_params p = ember_model_default_params();
    p.allocator = al;
    return ember_model_open_memory(img->p, img->n, &p, m, err);
}

/* A context (the test fails if it cannot be made). */
TM_UNUSED static ember_context *make_ctx(ember_model *m, int n_ctx, int n_batch, int n_threads) {
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_batch;
    cp.n_threads = n_threads;
    ember_context *c = NULL;
    ember_error err;
    int rc = ember_context_create(m, &cp, &c, &err);
    CHECK(rc == EMBER_OK, "context create: %s", err.message);
    return c;
}

/* Logits of the last of n tokens, evaluated in batches of nb in a context of 64. */
TM_UNUSED static int eval_last(ember_model *m, const ember_token *toks, int n, int nb, int threads, float *out) {
    ember_context *c = make_ctx(m, 64, nb, threads);
    if (!c) return -1;
    int rc = EMBER_OK;
    for (int i = 0; i < n && rc == EMBER_OK; i += nb) rc = ember_eval(c, toks + i, n - i < nb ? n - i : nb, NULL);
    CHECK(rc == EMBER_OK, "eval: %s", ember_context_errmsg(c));
    if (rc == EMBER_OK) memcpy(out, ember_get_logits(c), (size_t)ember_n_vocab(m) * sizeof(float));
    ember_context_free(c);
    return rc;
}

#ifndef TM_NO_MAIN
/* ======================================================================
 * The hostile-model tests
 * ====================================================================== */

static int n_cases;

/* Open the model; expect `want` (or any error if want == 1), a message, no
 * leak; free the model if it opened. */
static void expect_open(const char *what, const tm_spec *s, int want) {
    gb_buf img = {0};
    tm_alloc ca = {0};
    ember_allocator al = tm_allocator(&ca);
    ember_model *m = (ember_model *)0x1;
    ember_error err;
    memset(&err, 0x55, sizeof err);
    int rc = tm_open(s, &img, &al, &m, &err);
    n_cases++;
    if (want == 1) CHECK(rc != EMBER_OK, "%s: opened, expected an error", what);
    else CHECK(rc == want, "%s: status %d (%s), expected %d (%s): %s", what, rc, ember_status_string(rc), want,
               ember_status_string(want), rc ? err.message : "");
    if (rc != EMBER_OK) {
        CHECK(m == NULL, "%s: model not NULL on failure", what);
        CHECK(err.code == rc, "%s: err.code %d", what, err.code);
        CHECK(memchr(err.message, 0, sizeof err.message) && err.message[0], "%s: no message", what);
        if (getenv("EMBER_TEST_VERBOSE")) fprintf(stderr, "  %-44s -> %s: %s\n", what, ember_status_string(rc), err.message);
    } else {
        ember_model_free(m);
    }
    CHECK(ca.live == 0, "%s: %ld blocks leaked", what, ca.live);
    gb_free(&img);
}

static const char *const tensor_names[] = {
    "token_embd.weight", "output_norm.weight", "output.weight",
    "blk.0.attn_norm.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight",
    "blk.0.attn_output.weight", "blk.0.ffn_norm.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight",
    "blk.0.ffn_down.weight", "blk.1.attn_norm.weight", "blk.1.attn_q.weight", "blk.1.ffn_down.weight",
};
#define N_TENSOR_NAMES ((int)(sizeof tensor_names / sizeof tensor_names[0]))

static void test_valid(void) {
    tm_spec s = tm_default();
    expect_open("valid q8_0", &s, EMBER_OK);
    s.wtype = EK_F32; expect_open("valid f32", &s, EMBER_OK);
    s.wtype = EK_F16; expect_open("valid f16", &s, EMBER_OK);
    s.tied = 1; expect_open("valid tied output", &s, EMBER_OK);
    s = tm_default(); s.md_head_kv = TM_OMIT; s.n_head_kv = s.n_head; expect_open("valid, no head_count_kv", &s, EMBER_OK);
    s = tm_default(); s.norm_type = EK_F16; expect_open("norms in f16 (fine)", &s, EMBER_OK);
    s = tm_default(); s.small_vocab = 1; expect_open("valid small vocab", &s, EMBER_OK);
}

static void test_hparams(void) {
    tm_spec s;
    s = tm_default(); s.md_head = 3; expect_open("head_count 3 does not divide 64", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_head = 3; s.md_head_kv = 1; expect_open("embedding_length 64 not a multiple of head_count 3", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_head = 16; expect_open("head_count 16 vs tensors of 8", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_head = 128; expect_open("head_count > embedding_length", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_head = 0; expect_open("head_count 0", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.md_head_kv = 3; expect_open("head_count_kv 3 does not divide 8", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_head_kv = 16; expect_open("head_count_kv > head_count", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_head_kv = 2; expect_open("head_count_kv 2 vs tensors of 4", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_head_kv = 0; expect_open("head_count_kv 0", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.md_embd = 32; expect_open("embedding_length 32 vs 64", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_embd = 128; expect_open("embedding_length 128 vs 64", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_embd = 0; expect_open("embedding_length 0", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.md_embd = 0xFFFFFFFFu; expect_open("embedding_length 2^32-1", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.md_layers = 3; expect_open("block_count 3, tensors for 2", &s, EMBER_ERR_MISSING);
    s = tm_default(); s.md_layers = 4096; expect_open("block_count 4096, tensors for 2", &s, EMBER_ERR_MISSING);
    s = tm_default(); s.md_layers = 100000; expect_open("block_count 100000", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.md_layers = 0; expect_open("block_count 0", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.md_layers = 1; expect_open("block_count 1 (extra tensors ignored)", &s, EMBER_OK);
    s = tm_default(); s.md_ff = 128; expect_open("feed_forward_length 128 vs 96", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_ff = 0; expect_open("feed_forward_length 0", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.md_ctx = 0; expect_open("context_length 0", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.md_ctx = 0xFFFFFFFFu; expect_open("context_length 2^32-1", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.md_ctx = (1 << 20) + 1; expect_open("context_length 2^20+1", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.md_key_length = 7; expect_open("key_length odd", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_key_length = 16; expect_open("key_length 16 vs tensors of 8", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_rope_dim = 10; expect_open("rope dim > head dim", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_rope_dim = 3; expect_open("rope dim odd", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.md_rope_dim = 4; expect_open("rope dim 4 < head dim (fine)", &s, EMBER_OK);
    s = tm_default(); s.md_ctx = TM_OMIT; expect_open("no context_length", &s, EMBER_ERR_MISSING);
    s = tm_default(); s.md_embd = TM_OMIT; expect_open("no embedding_length", &s, EMBER_ERR_MISSING);
    s = tm_default(); s.md_layers = TM_OMIT; expect_open("no block_count", &s, EMBER_ERR_MISSING);
    s = tm_default(); s.md_ff = TM_OMIT; expect_open("no feed_forward_length", &s, EMBER_ERR_MISSING);
    s = tm_default(); s.md_head = TM_OMIT; expect_open("no head_count", &s, EMBER_ERR_MISSING);
    s = tm_default(); s.arch = "gpt2"; expect_open("architecture gpt2", &s, EMBER_ERR_UNSUPPORTED);
    s = tm_default(); s.arch = "llama\xff"; expect_open("architecture llama\\xff", &s, EMBER_ERR_UNSUPPORTED);
    s = tm_default(); s.arch = ""; expect_open("architecture empty", &s, EMBER_ERR_UNSUPPORTED);
    s = tm_default(); s.arch = NULL; expect_open("no architecture", &s, EMBER_ERR_MISSING);
}

/* head_count x key_length whose int product wraps around 2^32 to a small
 * number: the tensors are small, the heads are not. */
static const char *const families[] = {"llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "smollm3", "granite"};
#define N_FAMILIES ((int)(sizeof families / sizeof families[0]))

/* Each family's tensors and keys: present and well shaped it opens; each
 * one missing or misshapen is an error naming it. */
static void test_families(void) {
    char what[128];
    for (int i = 0; i < N_FAMILIES; i++) {
        tm_spec s = tm_family(families[i]);
        snprintf(what, sizeof what, "valid %s", families[i]);
        expect_open(what, &s, EMBER_OK);
    }
    tm_spec s;
    s = tm_family("qwen3"); s.drop_tensor = "blk.0.attn_q_norm.weight"; expect_open("qwen3 without attn_q_norm", &s, EMBER_ERR_MISSING);
    s = tm_family("qwen3"); s.reshape_tensor = "blk.1.attn_k_norm.weight"; s.reshape_dim = 0; s.reshape_delta = 8;
    expect_open("qwen3 attn_k_norm of 24", &s, EMBER_ERR_SHAPE);
    s = tm_family("qwen3"); s.md_key_length = TM_OMIT; expect_open("qwen3 without key_length (tensors of 16)", &s, EMBER_ERR_SHAPE);
    s = tm_family("qwen2"); s.reshape_tensor = "blk.0.attn_k.bias"; s.reshape_dim = 0; s.reshape_delta = -1;
    expect_open("qwen2 attn_k.bias short", &s, EMBER_ERR_SHAPE);
    s = tm_family("gemma2"); s.drop_tensor = "blk.1.post_ffw_norm.weight"; expect_open("gemma2 without post_ffw_norm", &s, EMBER_ERR_MISSING);
    s = tm_family("gemma2"); s.md_swa = TM_OMIT; expect_open("gemma2 without a window (default 4096)", &s, EMBER_OK);
    s = tm_family("gemma3"); s.drop_tensor = "blk.0.post_attention_norm.weight"; expect_open("gemma3 without post_attention_norm", &s, EMBER_ERR_MISSING);
    s = tm_family("gemma3"); s.md_swa = 0; expect_open("gemma3 window 0", &s, EMBER_ERR_CORRUPT);
    s = tm_family("gemma3"); s.md_swa = (1 << 20) + 1; expect_open("gemma3 window 2^20+1", &s, EMBER_ERR_CORRUPT);
    s = tm_family("gemma3"); s.md_swa_period = 0; expect_open("gemma3 window pattern 0", &s, EMBER_ERR_CORRUPT);
    s = tm_family("gemma2"); s.md_softcap = -1; expect_open("gemma2 negative soft-cap", &s, EMBER_ERR_CORRUPT);
    s = tm_family("gemma2"); s.md_softcap = 0; expect_open("gemma2 soft-cap 0 (off)", &s, EMBER_OK);
    s = tm_family("phi3"); s.reshape_tensor = "blk.0.ffn_up.weight"; s.reshape_dim = 1; s.reshape_delta = -1;
    expect_open("phi3 fused ffn_up one row short", &s, EMBER_ERR_SHAPE);
    s = tm_family("phi3"); s.reshape_tensor = "blk.1.attn_qkv.weight"; s.reshape_dim = 1; s.reshape_delta = 16;
    expect_open("phi3 attn_qkv too tall", &s, EMBER_ERR_SHAPE);
    s = tm_family("phi3"); s.drop_tensor = "blk.1.attn_qkv.weight"; expect_open("phi3 without attn_qkv or attn_q", &s, EMBER_ERR_MISSING);
    s = tm_family("phi3"); s.qkv_bias = 1; expect_open("phi3 with attn_qkv.bias", &s, EMBER_OK);
    s = tm_family("phi3"); s.qkv_bias = 1; s.reshape_tensor = "blk.0.attn_qkv.bias"; s.reshape_dim = 0; s.reshape_delta = 1;
    expect_open("phi3 attn_qkv.bias one too long", &s, EMBER_ERR_SHAPE);
    s = tm_family("llama"); s.family = "mistral3"; expect_open("architecture mistral3", &s, EMBER_ERR_UNSUPPORTED);
}

static void test_head_overflow(void) {
    /* n_head * head_dim = 1025 * 4190212 = 2^32 + 4 (head_dim too large ->
     * rejected by the 2^20 bound); 1047553 * 4100 = 2^32 + 4 (both in
     * range): q_dim would wrap to 4. */
    gb_buf b = {0};
    const int64_t n_head = 1047553, hd = 4100, E = 1 << 20;
    gb_buf kv = {0};
    int nkv = 0;
    gb_kv_str(&kv, "general.architecture", "llama"); nkv++;
    gb_kv_u32(&kv, "llama.context_length", 16); nkv++;
    gb_kv_u32(&kv, "llama.embedding_length", (uint32_t)E); nkv++;
    gb_kv_u32(&kv, "llama.block_count", 1); nkv++;
    gb_kv_u32(&kv, "llama.feed_forward_length", 1); nkv++;
    gb_kv_u32(&kv, "llama.attention.head_count", (uint32_t)n_head); nkv++;
    gb_kv_u32(&kv, "llama.attention.head_count_kv", (uint32_t)n_head); nkv++;
    gb_kv_u32(&kv, "llama.attention.key_length", (uint32_t)hd); nkv++;
    gb_kv_u32(&kv, "llama.rope.dimension_count", 2); nkv++;
    gb_kv_str(&kv, "tokenizer.ggml.model", "llama"); nkv++;
    const char *toks[] = {"<unk>", "<s>", "</s>", "a"};
    gb_kv_arr_str(&kv, "tokenizer.ggml.tokens", toks, 4); nkv++;
    gb_header(&b, 3, 12, (uint64_t)nkv);
    gb_bytes(&b, kv.p, kv.n);
    gb_free(&kv);
    /* q_dim = kv_dim = (int)(n_head * hd) = 4 after the wrap */
    gb_tensor t[] = {
        GB_TENSOR("token_embd.weight", 2, EK_Q4_0, E, 4),
        GB_TENSOR("output_norm.weight", 1, EK_Q4_0, E),
        GB_TENSOR("blk.0.attn_norm.weight", 1, EK_Q4_0, E),
        GB_TENSOR("blk.0.ffn_norm.weight", 1, EK_Q4_0, E),
        GB_TENSOR("blk.0.attn_q.weight", 2, EK_Q4_0, E, 4),
        GB_TENSOR("blk.0.attn_k.weight", 2, EK_Q4_0, E, 4),
        GB_TENSOR("blk.0.attn_v.weight", 2, EK_Q4_0, E, 4),
        GB_TENSOR("blk.0.attn_output.weight", 2, EK_F16, 4, E),
        GB_TENSOR("blk.0.ffn_gate.weight", 2, EK_Q4_0, E, 1),
        GB_TENSOR("blk.0.ffn_up.weight", 2, EK_Q4_0, E, 1),
        GB_TENSOR("blk.0.ffn_down.weight", 2, EK_F16, 1, E),
        GB_TENSOR("output.weight", 2, EK_Q4_0, E, 4),
    };
    gb_tensors(&b, t, 12, 32);
    tm_alloc ca = {0};
    ember_allocator al = tm_allocator(&ca);
    ember_model_params p = ember_model_default_params();
    p.allocator = &al;
    ember_model *m = NULL;
    ember_error err;
    int rc = ember_model_open_memory(b.p, b.n, &p, &m, &err);
    n_cases++;
    CHECK(rc == EMBER_ERR_SHAPE || rc == EMBER_ERR_CORRUPT || rc == EMBER_ERR_UNSUPPORTED,
          "head_count %lld x key_length %lld (wraps to 4 in int): status %d, expected a shape error",
          (long long)n_head, (long long)hd, rc);
    if (rc == EMBER_OK) {
        /* Do not run it: the forward pass would write far out of bounds. */
        ember_model_free(m);
    }
    CHECK(ca.live == 0, "head overflow: leak");
    gb_free(&b);
}

static void test_tensors(void) {
    char what[160];
    for (int i = 0; i < N_TENSOR_NAMES; i++) {
        tm_spec s = tm_default();
        s.drop_tensor = tensor_names[i];
        snprintf(what, sizeof what, "missing %s", tensor_names[i]);
        /* a missing output.weight means a tied output: fine */
        expect_open(what, &s, strcmp(tensor_names[i], "output.weight") ? EMBER_ERR_MISSING : EMBER_OK);
    }
    for (int i = 0; i < N_TENSOR_NAMES; i++) {
        for (int dim = 0; dim < 2; dim++) {
            tm_spec s = tm_default();
            s.wtype = EK_F32;
            s.reshape_tensor = tensor_names[i];
            s.reshape_dim = dim;
            s.reshape_delta = 32;
            snprintf(what, sizeof what, "%s ne[%d] + 32", tensor_names[i], dim);
            /* token_embd rows are the vocabulary: disagrees with the tokenizer */
            expect_open(what, &s, EMBER_ERR_SHAPE);
        }
        tm_spec s = tm_default();
        s.redim_tensor = tensor_names[i];
        s.redim = 3;
        snprintf(what, sizeof what, "%s as 3-D", tensor_names[i]);
        expect_open(what, &s, strstr(tensor_names[i], "norm") ? EMBER_ERR_SHAPE : EMBER_OK);
    }
    /* norms of a wrong type or rank */
    static const char *const norms[] = {"output_norm.weight", "blk.0.attn_norm.weight", "blk.1.ffn_norm.weight"};
    for (int i = 0; i < 3; i++) {
        tm_spec s = tm_default();
        s.retype_tensor = norms[i]; s.retype = EK_I32;
        snprintf(what, sizeof what, "%s of type i32", norms[i]);
        expect_open(what, &s, EMBER_ERR_UNSUPPORTED);
        s.retype = EK_I8;
        snprintf(what, sizeof what, "%s of type i8", norms[i]);
        expect_open(what, &s, EMBER_ERR_UNSUPPORTED);
        s.retype = EK_Q8_K;
        snprintf(what, sizeof what, "%s of type q8_K", norms[i]);
        s.n_embd = 256; s.n_ff = 256;   /* a whole q8_K block */
        expect_open(what, &s, EMBER_ERR_UNSUPPORTED);
        s = tm_default();
        s.redim_tensor = norms[i]; s.redim = 2;
        snprintf(what, sizeof what, "%s as 2-D", norms[i]);
        expect_open(what, &s, EMBER_ERR_SHAPE);
    }
    /* matrices of a type ember cannot run */
    static const char *const mats[] = {"blk.0.attn_q.weight", "blk.1.ffn_down.weight", "token_embd.weight", "output.weight"};
    for (int i = 0; i < 4; i++) {
        tm_spec s = tm_default();
        s.retype_tensor = mats[i]; s.retype = EK_I16;
        snprintf(what, sizeof what, "%s of type i16", mats[i]);
        expect_open(what, &s, EMBER_ERR_UNSUPPORTED);
        s.retype = EK_Q8_1;
        snprintf(what, sizeof what, "%s of type q8_1", mats[i]);
        expect_open(what, &s, EMBER_ERR_UNSUPPORTED);
    }
    tm_spec s = tm_default();
    s.tensor_layers = 1;
    expect_open("tensors for 1 of 2 layers", &s, EMBER_ERR_MISSING);
}

static void test_tokenizer_meta(void) {
    tm_spec s;
    s = tm_default(); s.extra_embd_rows = 1; expect_open("token_embd rows = vocab + 1", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.extra_embd_rows = -1; expect_open("token_embd rows = vocab - 1", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.extra_embd_rows = 1; s.tied = 1; expect_open("tied, rows = vocab + 1", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.tokens_elem = GB_INT32; expect_open("tokens as int32 array", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.tokens_elem = GB_FLOAT32; expect_open("tokens as float32 array", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.omit_tokens = 1; expect_open("no tokenizer.ggml.tokens", &s, EMBER_ERR_MISSING);
    s = tm_default(); s.omit_tok_model = 1; expect_open("no tokenizer.ggml.model", &s, EMBER_ERR_MISSING);
    s = tm_default(); s.tok_model = "bert"; expect_open("tokenizer model bert", &s, EMBER_ERR_UNSUPPORTED);
    s = tm_default(); s.tok_model = "gpt2"; expect_open("tokenizer gpt2 without merges", &s, 1);
    s = tm_default(); s.scores_delta = -1; expect_open("scores one short", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.scores_delta = 5; expect_open("scores 5 too many", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.scores_delta = -100000; expect_open("scores empty", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.scores_elem = GB_STRING; expect_open("scores as strings", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.types_delta = -1; expect_open("token_type one short", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.types_delta = 1; expect_open("token_type one too many", &s, EMBER_ERR_SHAPE);
    s = tm_default(); s.types_elem = GB_FLOAT32; expect_open("token_type as floats", &s, EMBER_ERR_CORRUPT);
    s = tm_default(); s.bad_token_type = 1; expect_open("token_type 99", &s, EMBER_ERR_CORRUPT);

    /* Special ids out of range: llama.cpp ignores them (with a warning), and
     * so may ember - but an out-of-range id must never come back. */
    static const int64_t bad_ids[] = {100000, 0x7FFFFFFF, 0xFFFFFFFFu, 314};
    for (int i = 0; i < 4; i++) {
        for (int which = 0; which < 2; which++) {
            s = tm_default();
            if (which == 0) s.md_bos = bad_ids[i]; else s.md_eos = bad_ids[i];
            if (bad_ids[i] == 314) { if (which == 0) s.md_bos = tm_n_vocab(&s); else s.md_eos = tm_n_vocab(&s); }
            gb_buf img = {0};
            tm_alloc ca = {0};
            ember_allocator al = tm_allocator(&ca);
            ember_model *m = NULL;
            ember_error err;
            int rc = tm_open(&s, &img, &al, &m, &err);
            n_cases++;
            if (rc == EMBER_OK) {
                int V = ember_n_vocab(m);
                ember_token id = which == 0 ? ember_token_bos(m) : ember_token_eos(m);
                CHECK(id >= -1 && id < V, "%s id %lld: the model reports %d (vocab %d)", which ? "eos" : "bos",
                      (long long)bad_ids[i], id, V);
                ember_token toks[8];
                size_t n = 0;
                rc = ember_tokenize(m, "hi", 2, EMBER_TOKENIZE_ADD_BOS, toks, 8, &n, NULL);
                CHECK(rc == EMBER_OK, "tokenize with a bad %s id: %d", which ? "eos" : "bos", rc);
                for (size_t k = 0; k < n && rc == EMBER_OK; k++) CHECK(toks[k] >= 0 && toks[k] < V, "token %d out of range", toks[k]);
                ember_model_free(m);
            } else {
                CHECK(rc == EMBER_ERR_CORRUPT && err.message[0], "bad special id: status %d", rc);
            }
            CHECK(ca.live == 0, "bad special id: leak");
            gb_free(&img);
        }
    }
}

/* A huge context request: refused (too large for the model) or NOMEM, never a crash. */
static void test_huge_ctx(void) {
    tm_spec s = tm_default();
    s.md_ctx = 1 << 20;
    gb_buf img = {0};
    tm_alloc ca = {0};
    ember_allocator al = tm_allocator(&ca);
    ember_model *m = NULL;
    ember_error err;
    int rc = tm_open(&s, &img, &al, &m, &err);
    CHECK(rc == EMBER_OK, "context_length 2^20 should load: %s", err.message);
    if (rc == EMBER_OK) {
        ember_context *c = NULL;
        ember_context_params cp = ember_context_default_params();
        cp.n_threads = 1;
        cp.n_ctx = (1 << 20) + 1;
        rc = ember_context_create(m, &cp, &c, &err);
        n_cases++;
        CHECK(rc == EMBER_ERR_INVALID_ARG && c == NULL && err.message[0], "n_ctx > context_length: %d", rc);
        cp.n_ctx = 0x7FFFFFFF;
        rc = ember_context_create(m, &cp, &c, &err);
        n_cases++;
        CHECK(rc == EMBER_ERR_INVALID_ARG && c == NULL, "n_ctx INT_MAX: %d", rc);
        cp.n_ctx = -5;
        rc = ember_context_create(m, &cp, &c, &err);
        n_cases++;
        CHECK(rc == EMBER_ERR_INVALID_ARG && c == NULL, "n_ctx -5: %d", rc);
        /* the model's own 2^20 positions, with an allocator that refuses
         * more than 16 MB at once */
        ca.max_size = 16u << 20;
        cp.n_ctx = 1 << 20;
        CHECK(ember_context_memory_needed(m, 0, EMBER_KV_F16, 0) < (16u << 20),
              "the default context is capped at 4096 positions");
        uint64_t need = ember_context_memory_needed(m, 1 << 20, EMBER_KV_F16, 0);
        CHECK(need > (64u << 20), "memory needed for 2^20 positions: %llu", (unsigned long long)need);
        rc = ember_context_create(m, &cp, &c, &err);
        n_cases++;
        CHECK(rc == EMBER_ERR_NOMEM && c == NULL && err.message[0], "2^20 positions, 16 MB cap: %d", rc);
        cp.n_batch = 0x7FFFFFFF;   /* clamped to n_ctx */
        cp.n_ctx = 64;
        ca.max_size = 0;
        rc = ember_context_create(m, &cp, &c, &err);
        n_cases++;
        CHECK(rc == EMBER_OK, "n_batch INT_MAX: %d %s", rc, err.message);
        ember_context_free(c);
        cp.n_batch = 0; cp.n_threads = 100000;
        rc = ember_context_create(m, &cp, &c, &err);
        n_cases++;
        CHECK(rc == EMBER_ERR_INVALID_ARG && c == NULL, "n_threads 100000: %d", rc);
        ember_model_free(m);
    }
    CHECK(ca.live == 0, "huge ctx: leak");
    gb_free(&img);
}

/* A whole model truncated at every offset of its metadata and a stride of
 * its data, each copy in an exactly sized block (ASan sees any overread). */
static void test_truncation(void) {
    tm_spec s = tm_default();
    s.n_embd = 32; s.n_ff = 64; s.n_layer = 1; s.n_head = 4; s.n_head_kv = 2;
    gb_buf img = {0};
    tm_build(&s, &img);
    ember_model *m = NULL;
    ember_error err;
    CHECK(ember_model_open_memory(img.p, img.n, NULL, &m, &err) == EMBER_OK, "truncation base model: %s", err.message);
    ember_model_free(m);
    /* the data section starts after the last tensor info: find it by
     * scanning for the first offset where only tensor data is missing */
    size_t meta_end = img.n;
    {
        /* conservatively: every byte of the first 40% and a stride after */
        meta_end = img.n * 2 / 5;
    }
    long tried = 0, opened = 0;
    tm_alloc ca = {0};
    ember_allocator al = tm_allocator(&ca);
    ember_model_params p = ember_model_default_params();
    p.allocator = &al;
    for (size_t len = 0; len < img.n; len += len < meta_end ? 1 : 97) {
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, img.p, len);
        m = NULL;
        int rc = ember_model_open_memory(copy, len, &p, &m, &err);
        tried++;
        if (rc == EMBER_OK) { opened++; ember_model_free(m); }
        else if (!err.message[0]) CHECK(0, "truncated at %zu: no message", len);
        free(copy);
        if (ca.live != 0) { CHECK(0, "truncated at %zu: %ld blocks leaked", len, ca.live); ca.live = 0; }
    }
    CHECK(opened == 0, "%ld truncated images opened", opened);
    n_cases += (int)tried;
    printf("truncation: %ld lengths tried (image %zu bytes)\n", tried, img.n);
    gb_free(&img);
}

/* Write tiny valid models as fuzzing seeds. */
static int write_seeds(const char *dir) {
    char path[512];
    struct { const char *name; int wtype, small, tied, layers, embd; } v[] = {
        {"tiny_q8_0.gguf", EK_Q8_0, 1, 0, 1, 32}, {"tiny_f16_tied.gguf", EK_F16, 1, 1, 1, 32},
        {"tiny_f32_2layers.gguf", EK_F32, 1, 0, 2, 16}, {"tiny_q4_0.gguf", EK_Q4_0, 1, 0, 1, 32},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        tm_spec s = tm_default();
        s.wtype = v[i].wtype; s.small_vocab = v[i].small; s.tied = v[i].tied; s.n_layer = v[i].layers;
        s.n_embd = v[i].embd; s.n_ff = 32; s.n_head = 4; s.n_head_kv = 2; s.n_ctx = 32;
        gb_buf b = {0};
        tm_build(&s, &b);
        snprintf(path, sizeof path, "%s/%s", dir, v[i].name);
        if (gb_write_file(&b, path)) { fprintf(stderr, "cannot write %s\n", path); return 1; }
        gb_free(&b);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-seeds")) return write_seeds(argv[2]);
    test_valid();
    test_hparams();
    test_head_overflow();
    test_families();
    test_tensors();
    test_tokenizer_meta();
    test_huge_ctx();
    test_truncation();
    printf("hostile cases: %d\n", n_cases);
    return test_summary("test_hostile_model");
}
#endif
