/* model.h - the llama architecture: hyperparameters and weights read from a
 * parsed GGUF file, the tokenizer built from its metadata, and the forward
 * pass over a batch of tokens with a KV cache.  Knows GGUF, the kernels and
 * the tokenizer; knows nothing of sampling or of the public API. */
#ifndef EMBER_MODEL_H
#define EMBER_MODEL_H

#include "common.h"
#include "gguf.h"
#include "kernels.h"
#include "threads.h"
#include "tokenizer.h"

/* What one architecture does differently, as data: the forward pass reads
 * these flags; it has no per-family branches of its own. */
enum em_arch_flags {
    EM_NEOX = 1 << 0,          /* RoPE pairs (i, i + n_rot/2), not (2i, 2i+1) */
    EM_GELU = 1 << 1,          /* GELU(tanh)-gated FFN instead of SiLU-gated */
    EM_QK_NORM = 1 << 2,       /* per-head RMSNorm of q and k before RoPE */
    EM_POST_NORMS = 1 << 3,    /* RMSNorm of the attention and FFN outputs */
    EM_EMBD_SQRT = 1 << 4,     /* embeddings scaled by sqrt(n_embd) */
    EM_SOFTCAP = 1 << 5,       /* attention and final soft-capping (default 50, 30) */
    EM_SCALES = 1 << 6,        /* embedding, residual, attention, logit scales from keys */
    EM_SWA_DEFAULT = 1 << 7,   /* sliding window even without the key (gemma2: 4096) */
    EM_SWA_KEY = 1 << 8,       /* sliding window when the file gives one */
    EM_LONGROPE = 1 << 9       /* rope_factors_long/short chosen by the context size */
};

typedef struct em_arch {
    const char *name;          /* general.architecture */
    unsigned flags;            /* enum em_arch_flags */
    int swa_period;            /* default period: layer l is local unless l % period == period - 1 */
    int nope_period;           /* layer l has no RoPE when (l + 1) % nope_period == 0 (0: never) */
    int big_layers;            /* a model of this many layers scales queries by
                                  1/sqrt(n_embd/n_head) (Gemma 27B), else 1/sqrt(head_dim) */
} em_arch;

typedef struct em_hparams {
    const em_arch *arch;
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim,
        n_ff, rope_dim;
    float rope_freq_base, rope_freq_scale, rms_eps;
    float attn_scale;          /* attention scores = q.k * attn_scale */
    float embd_scale;          /* embeddings multiplied by this */
    float residual_scale;      /* attention and FFN outputs multiplied by this */
    float logit_scale;         /* logits divided by this */
    float attn_softcap, final_softcap;     /* 0: none */
    int n_swa, swa_period;     /* window of local layers (0: none) and their period */
    float rope_freq_base_swa, rope_freq_scale_swa;
    float rope_attn_factor;    /* cos/sin multiplied by this (LongRoPE) */
    int n_ctx_orig;            /* LongRoPE: contexts beyond this use the long factors */
} em_hparams;

/* A weight matrix of n_out rows of n_in elements (GGUF ne = [n_in, n_out]). */
typedef struct em_matrix {
    const void *data;
    int type;
    int n_in, n_out;
    int packed;           /* rows interleaved for the kernels (kernels.h) */
} em_matrix;

/* Norms and biases are owned F32 copies (NULL when the file has none).
 * wqkv, when present, replaces wq, wk, wv (rows q | k | v); w_up without
 * w_gate is fused (rows gate | up). */
typedef struct em_layer {
    float *attn_norm, *ffn_norm;                   /* [n_embd] */
    float *attn_post_norm, *ffn_post_norm;         /* [n_embd] (EM_POST_NORMS) */
    float *q_norm, *k_norm;                        /* [head_dim] (EM_QK_NORM) */
    float *bq, *bk, *bv, *bo;                      /* [q_dim], [kv_dim], [kv_dim], [n_embd] */
    float *bqkv;                                   /* [q_dim + 2 kv_dim], with wqkv */
    float *b_gate, *b_up, *b_down;                 /* [n_ff], [n_ff], [n_embd] */
    em_matrix wq, wk, wv, wqkv, wo, w_gate, w_up, w_down;
    int swa;                                       /* local (sliding-window) layer */
    int rope;                                      /* 0 for NoPE layers */
} em_layer;

/* Matrices per layer, in em_matrix_at's order. */
#define EM_LAYER_MATRICES 8

typedef struct em_model {
    const ember_allocator *a;
    egf_file *gguf;
    em_hparams hp;
    em_matrix tok_embd, output;                    /* output == tok_embd when tied */
    int tied_output;
    float *output_norm;                            /* owned */
    float *output_bias;                            /* owned, or NULL */
    float *rope_freqs;                             /* owned, or NULL: rope_freqs.weight */
    float *rope_long, *rope_short;                 /* owned, or NULL: LongRoPE factors */
    em_layer *layers;
    etok *tok;
    int max_piece_bytes;                           /* longest decoded token */
    const ek_kernels *kernels;
    int vocab_only;                                /* tokenizer loaded, no weights */
    int file_type;
    uint64_t n_params, weight_bytes, bytes_per_token;
    uint64_t fingerprint;                          /* hyperparameters and tensor table */
    int n_packed;                                  /* matrices packed at load */
} em_model;

/* Build the model from a parsed GGUF file (kept by the model, which closes
 * it in em_model_free).  Validates hyperparameters, shapes and types.
 * With vocab_only, only the tokenizer is loaded (no tensors needed).  With
 * may_pack, the tensor data is the model's own writable copy, and matrices
 * the kernels run faster packed are packed in place.  kernels is the set
 * the model runs (NULL: the best this CPU has).
 * On failure frees nothing of f (the caller closes it). */
EMBER_INTERNAL int em_model_init(em_model *m, egf_file *f, const ember_allocator *a, const ek_kernels *kernels,
                                 int vocab_only, int may_pack, char *err, size_t errlen);
EMBER_INTERNAL void em_model_free(em_model *m);

/* A row of a batch: a position of a context. */
typedef struct em_row { struct em_state *s; int pos; } em_row;

/* Per-context state: KV cache and scratch for batches of up to n_batch. */
typedef struct em_state {
    const em_model *m;
    const ember_allocator *a;
    int n_ctx, n_batch, kv_type, n_threads;
    size_t kv_elem;                 /* bytes per KV element */
    void *k_cache, *v_cache;        /* per layer: n_ctx rows of kv_dim, or a local layer's ring */
    size_t *kv_off;                 /* byte offset of each layer's rows */
    int swa_rows;                   /* rows of a local layer's ring (0: local layers keep n_ctx) */
    int swa_hi;                     /* 1 + the highest position written since the cache was cleared */
    int swa_floor;                  /* local layers hold nothing below this (a restored state) */
    ek_rope_params rope_global, rope_local;
    float *x, *xb, *q, *k, *v, *att_out, *hb, *hb2, *logits; /* scratch */
    void *xa;                       /* converted activations, packed rows */
    float *scores;                  /* [n_threads][n_ctx] */
    em_row *rows;                   /* [n_batch]: the rows of the batch being run */
    et_pool *pool;                  /* the model's shared pool, or its own */
    int own_pool;
    int (*abort_cb)(void *);        /* nonzero stops em_forward between layers */
    void *abort_ud;
} em_state;

EMBER_INTERNAL uint64_t em_state_bytes(const em_model *m, int n_ctx, int kv_type, int n_batch, int n_threads);
/* shared: a pool to use when it has n_threads threads (else one of its own). */
EMBER_INTERNAL int em_state_init(em_state *s, const em_model *m, int n_ctx, int n_batch,
                                 int kv_type, int n_threads, et_pool *shared, const ember_allocator *a);
EMBER_INTERNAL void em_state_free(em_state *s);
/* 1 if the cache can go back to position pos: local layers keep only the
 * last positions, so a rewind must leave every window it needs intact. */
EMBER_INTERNAL int em_state_can_rewind(const em_state *s, int pos);
/* The cache holds nothing any more (position 0). */
EMBER_INTERNAL void em_state_clear(em_state *s);

/* Saving, restoring and copying caches.  Continuing at position pos needs,
 * of layer l, the rows of positions em_kv_first(s, l, pos) .. pos - 1 (all
 * of them, or a local layer's window). */
EMBER_INTERNAL int em_kv_first(const em_state *s, int l, int pos);
EMBER_INTERNAL size_t em_kv_row_bytes(const em_state *s);
/* Row of position p of layer l's K (which 0) or V (which 1) cache. */
EMBER_INTERNAL const void *em_kv_row(const em_state *s, int l, int which, int p);
EMBER_INTERNAL void em_kv_put(em_state *s, int l, int which, int p, const void *row);
/* After em_kv_put of every needed row for position pos (cache cleared
 * before): the rewind bounds of what is now held. */
EMBER_INTERNAL void em_state_restored(em_state *s, int pos);
/* Bytes of KV cache a context of n_ctx positions and n_batch holds. */
EMBER_INTERNAL uint64_t em_kv_bytes(const em_model *m, int n_ctx, int kv_type, int n_batch);

/* Run tokens[0..n) at positions pos..pos+n-1 (n <= n_batch, pos + n <=
 * n_ctx, ids already validated).  Writes the logits of the last token to
 * s->logits, and of every token to all_logits (n * n_vocab) if non-NULL.
 * Returns 0, or 1 if the abort callback stopped it (then the cache rows of
 * these positions are undefined, s->logits unchanged). */
EMBER_INTERNAL int em_forward(em_state *s, const int32_t *tokens, int n, int pos, float *all_logits);
/* One token for each of nb contexts of the model in one pass over the
 * weights: tokens[b] at position pos[b] of states[b] (distinct states; nb
 * <= s->n_batch; every states[b]->n_ctx <= s->n_ctx, so s's scratch fits
 * their windows).  s (one of them or not) lends its scratch and threads.
 * Logits of row b into logits + b * n_vocab.  Same bits as each alone. */
EMBER_INTERNAL int em_forward_multi(em_state *s, em_state *const *states, const int *pos, const int32_t *tokens, int nb,
                                    float *logits);

#endif
