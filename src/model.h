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

typedef struct em_hparams {
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim,
        n_ff, rope_dim;
    float rope_freq_base, rope_freq_scale, rms_eps;
} em_hparams;

/* A weight matrix of n_out rows of n_in elements (GGUF ne = [n_in, n_out]). */
typedef struct em_matrix {
    const void *data;
    int type;
    int n_in, n_out;
    int packed;           /* rows interleaved for the kernels (kernels.h) */
} em_matrix;

typedef struct em_layer {
    float *attn_norm, *ffn_norm;                   /* owned F32 copies */
    em_matrix wq, wk, wv, wo, w_gate, w_up, w_down;
} em_layer;

typedef struct em_model {
    const ember_allocator *a;
    gguf_file *gguf;
    em_hparams hp;
    em_matrix tok_embd, output;                    /* output == tok_embd when tied */
    int tied_output;
    float *output_norm;                            /* owned */
    float *rope_freqs;                             /* owned, or NULL */
    em_layer *layers;
    etok *tok;
    int max_piece_bytes;                           /* longest decoded token */
    const ek_kernels *kernels;
    int vocab_only;                                /* tokenizer loaded, no weights */
    int file_type;
    uint64_t n_params, weight_bytes, bytes_per_token;
    int n_packed;                                  /* matrices packed at load */
} em_model;

/* Build the model from a parsed GGUF file (kept by the model, which closes
 * it in em_model_free).  Validates hyperparameters, shapes and types.
 * With vocab_only, only the tokenizer is loaded (no tensors needed).  With
 * may_pack, the tensor data is the model's own writable copy, and matrices
 * the kernels run faster packed are packed in place.
 * On failure frees nothing of f (the caller closes it). */
int em_model_init(em_model *m, gguf_file *f, const ember_allocator *a,
                  int vocab_only, int may_pack, char *err, size_t errlen);
void em_model_free(em_model *m);

/* Per-context state: KV cache and scratch for batches of up to n_batch. */
typedef struct em_state {
    const em_model *m;
    const ember_allocator *a;
    int n_ctx, n_batch, kv_type, n_threads;
    size_t kv_elem;                 /* bytes per KV element */
    void *k_cache, *v_cache;        /* [n_layer][n_ctx][kv_dim] */
    float *x, *xb, *q, *k, *v, *att_out, *hb, *hb2, *logits; /* scratch */
    void *xa;                       /* converted activations, packed rows */
    float *scores;                  /* [n_threads][n_ctx] */
    et_pool *pool;
} em_state;

uint64_t em_state_bytes(const em_model *m, int n_ctx, int kv_type, int n_batch, int n_threads);
int em_state_init(em_state *s, const em_model *m, int n_ctx, int n_batch,
                  int kv_type, int n_threads, const ember_allocator *a);
void em_state_free(em_state *s);

/* Run tokens[0..n) at positions pos..pos+n-1 (n <= n_batch, pos + n <=
 * n_ctx, ids already validated).  Writes the logits of the last token to
 * s->logits, and of every token to all_logits (n * n_vocab) if non-NULL. */
void em_forward(em_state *s, const int32_t *tokens, int n, int pos, float *all_logits);

#endif
