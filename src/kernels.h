/* kernels.h - the numeric kernels: tensor type table, (de)quantization,
 * matrix products and the small vector operations of a transformer layer.
 * Knows no files and no models.  Every SIMD kernel has a scalar twin; the
 * scalar kernel set is the reference the tests compare against. */
#ifndef EMBER_KERNELS_H
#define EMBER_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "common.h"   /* EMBER_INTERNAL, the C/C++ spellings */

/* Tensor types, numbered as ggml numbers them (GGUF stores these ids). */
enum ek_type {
    EK_F32 = 0, EK_F16 = 1, EK_Q4_0 = 2, EK_Q4_1 = 3, EK_Q5_0 = 6, EK_Q5_1 = 7,
    EK_Q8_0 = 8, EK_Q8_1 = 9, EK_Q2_K = 10, EK_Q3_K = 11, EK_Q4_K = 12,
    EK_Q5_K = 13, EK_Q6_K = 14, EK_Q8_K = 15, EK_IQ4_NL = 20, EK_IQ4_XS = 23,
    EK_I8 = 24, EK_I16 = 25, EK_I32 = 26, EK_I64 = 27, EK_F64 = 28,
    EK_BF16 = 30,
    EK_TYPE_COUNT = 40
};

/* The one table of block facts.  A row of n elements of a type takes
 * n / block_size * type_size bytes (n must be a multiple of block_size). */
typedef struct ek_type_info {
    const char *name;     /* "q4_0" */
    int block_size;       /* elements per block */
    int type_size;        /* bytes per block */
} ek_type_info;

/* NULL for ids that are not ggml types (or are deprecated/removed ids). */
EMBER_INTERNAL const ek_type_info *ek_type_get(int type);
/* Bytes of a row of n elements; 0 if the type is unknown or n is not a
 * multiple of its block size. */
EMBER_INTERNAL uint64_t ek_row_bytes(int type, uint64_t n);

EMBER_INTERNAL uint16_t ek_fp32_to_fp16(float f);   /* round to nearest even */
EMBER_INTERNAL float ek_fp16_to_fp32(uint16_t h);
EMBER_INTERNAL uint16_t ek_fp32_to_bf16(float f);   /* round to nearest even, NaN kept */
EMBER_INTERNAL float ek_bf16_to_fp32(uint16_t h);

/* A kernel set: one per instruction set, static and immutable. */
typedef struct ek_kernels ek_kernels;

EMBER_INTERNAL const ek_kernels *ek_kernels_scalar(void);
/* The best set this CPU runs (CPUID on x86-64); never NULL. */
EMBER_INTERNAL const ek_kernels *ek_kernels_best(void);
/* All sets this CPU can run, best last; for tests. Returns the count. */
EMBER_INTERNAL int ek_kernels_available(const ek_kernels **out, int cap);
EMBER_INTERNAL const char *ek_kernels_name(const ek_kernels *k);
/* The set called name ("scalar", "avx2", "avx512", "amx", "neon",
 * "neon_dotprod"; NULL, "" or "auto": ek_kernels_best()).  NULL if this CPU
 * or build cannot run it; *known (if not NULL) is then 1 for a name of a
 * set that exists somewhere, 0 for a name that is no set at all. */
EMBER_INTERNAL const ek_kernels *ek_kernels_find(const char *name, int *known);

/* 1 if weights of this type can be used in ek_matmul / ek_dequant_row. */
EMBER_INTERNAL int ek_type_supported(int type);

/* Dequantize n elements (a whole number of blocks) to floats. */
EMBER_INTERNAL void ek_dequant_row(int type, const void *src, float *dst, int64_t n);
/* Reference quantization of n floats into type (byte-identical to ggml's
 * reference quantizers; for IQ4_NL and IQ4_XS to what llama-quantize writes
 * without an importance matrix); returns 0, or -1 if the type cannot be made. */
EMBER_INTERNAL int ek_quantize_row(int type, const float *src, void *dst, int64_t n);

/* Matrix products.  Activations are first converted, row by row, into the
 * format the weight type's dot product wants (floats for F32, Q8_0 blocks
 * for Q4_0/Q8_0, ...).  ek_act_row_bytes gives the converted row size. */
EMBER_INTERNAL size_t ek_act_row_bytes(int wtype, int n);
EMBER_INTERNAL void ek_convert_act(const ek_kernels *k, int wtype, const float *x, void *xa, int n);

/* A batch: nb rows of n floats as ek_matmul with set k takes them.  That
 * is nb converted rows, ek_act_row_bytes apart, except where set k runs
 * the batch on tiles (the amx set's F16/BF16 prompts), which want their
 * own layout.  ek_batch_bytes gives its size, never less than nb rows. */
EMBER_INTERNAL size_t ek_batch_bytes(const ek_kernels *k, int wtype, int n, int nb);
EMBER_INTERNAL void ek_convert_batch(const ek_kernels *k, int wtype, const float *x, int nb, void *xa, int n);

/* Y[b*ldy + r] = dot(row r of W, row b of X) for r in [r0, r1), b in
 * [0, nb).  W has rows of n elements of type wtype, ek_row_bytes(wtype, n)
 * bytes apart; X is the batch of nb rows ek_convert_batch made for set k.
 * Threads call this on disjoint row ranges. */
EMBER_INTERNAL void ek_matmul(const ek_kernels *k, int wtype, const void *W, int n,
                              const void *X, int nb, float *Y, int ldy, int r0, int r1);

/* Packed weights.  A kernel set may run Q4_0, Q8_0, k-quant and IQ4_XS matrices
 * faster with their rows interleaved in groups of EK_PACK_ROWS: one group's
 * bytes are the same bytes as its 16 rows, moved so that the group streams
 * as one sequence (and, for Q4_0/Q8_0, SIMD lane j holds row j without
 * gathers):
 *   Q4_0, Q8_0:
 *     quants: dword m of block k of row j at  k * 16 * Q + 64 * m + 4 * j
 *     scales: fp16 d of block k of row j at   nblk * 16 * Q + 32 * k + 2 * j
 *     where Q = quant bytes per block (16 for Q4_0, 32 for Q8_0), nblk = n / 32;
 *   Q2_K .. Q6_K, IQ4_XS: superblock k of row j, whole, at (16 * k + j) * block bytes.
 * Groups follow each other, so rows r .. r+15 start at r * row bytes. */
#define EK_PACK_ROWS 16

/* 1 if set k has a packed kernel for wtype and rows is a multiple of 16. */
EMBER_INTERNAL int ek_pack_wanted(const ek_kernels *k, int wtype, int rows);
/* Bytes of scratch ek_pack_rows needs (one group) for rows of n elements. */
EMBER_INTERNAL size_t ek_pack_scratch_bytes(int wtype, int n);
/* Pack rows (a multiple of 16) rows of W in place; 0, or -1 if wtype, n or
 * rows cannot be packed. */
EMBER_INTERNAL int ek_pack_rows(int wtype, void *W, int n, int rows, void *scratch);
/* As ek_matmul on packed W; r0 and r1 are multiples of 16.  Same bits as
 * ek_matmul on the unpacked W with the set whose kernel runs (set k where it
 * has a packed kernel for wtype, the scalar set otherwise). */
EMBER_INTERNAL void ek_matmul_packed(const ek_kernels *k, int wtype, const void *W, int n,
                                     const void *X, int nb, float *Y, int ldy, int r0, int r1);

/* Vector operations of a transformer layer. */
EMBER_INTERNAL void ek_rmsnorm(const ek_kernels *k, float *out, const float *x,
                               const float *weight, int n, float eps);
EMBER_INTERNAL void ek_softmax(float *x, int n);                    /* in place, stable */
EMBER_INTERNAL void ek_swiglu(const ek_kernels *k, float *gate, const float *up, int n); /* gate = silu(gate) * up */
EMBER_INTERNAL void ek_add(const ek_kernels *k, float *y, const float *x, int n);       /* y += x */

EMBER_INTERNAL void ek_geglu(const ek_kernels *k, float *gate, const float *up, int n); /* gate = gelu_tanh(gate) * up */
EMBER_INTERNAL void ek_softcap(float *x, int n, float cap);         /* x = cap * tanh(x / cap) */
EMBER_INTERNAL void ek_scale(float *x, int n, float s);             /* x *= s */

/* RoPE of one kind of layer.  Pair i < n_rot/2 of each head, (x[2i],
 * x[2i+1]) or with neox (x[i], x[i + n_rot/2]), turns by the angle
 * pos * freq_base^(-2i/n_rot) / freq_factors[i] * freq_scale; cos and sin
 * are multiplied by mscale.  Dimensions past n_rot pass through. */
typedef struct ek_rope_params {
    int n_rot;                   /* even, <= head_dim, <= 1024 */
    int neox;
    float freq_base, freq_scale, mscale;
    const float *freq_factors;   /* n_rot/2 divisors, or NULL */
} ek_rope_params;
/* x holds n_heads heads of head_dim floats. */
EMBER_INTERNAL void ek_rope(float *x, int n_heads, int head_dim, int pos, const ek_rope_params *p);

/* KV cache rows are F32 (kv_type 1) or F16 (kv_type 0), as ember_kv_type. */
EMBER_INTERNAL void ek_kv_store(const ek_kernels *k, int kv_type, void *dst, const float *src, int n);
EMBER_INTERNAL float ek_kv_dot(const ek_kernels *k, int kv_type, const float *q, const void *krow, int n);
EMBER_INTERNAL void ek_kv_axpy(const ek_kernels *k, int kv_type, float *y, float a, const void *vrow, int n); /* y += a * v */
/* Attention over n_pos cache rows of n elements, stride elements apart:
 *   ek_kv_scores: s[t] = dot(q, row t) * scale
 *   ek_kv_mix:    out = sum over t in order of p[t] * row t (out overwritten),
 *                 each element's sum the same as ek_kv_axpy's one row at a time */
EMBER_INTERNAL void ek_kv_scores(const ek_kernels *k, int kv_type, const float *q, const void *rows, size_t stride, int n_pos,
                                 int n, float scale, float *s);
EMBER_INTERNAL void ek_kv_mix(const ek_kernels *k, int kv_type, const float *p, const void *rows, size_t stride, int n_pos, int n,
                              float *out);

/* ---- inside the kernel modules (kernels.c, kernels_x86.c, kernels_arm.c) --
 * Everything below is for the kernel sources and white-box tests only. */

/* Block layouts, as ggml lays them out (fp16 fields as raw uint16_t). */
typedef struct { uint16_t d; uint8_t qs[16]; } ek_block_q4_0;                 /* 18 */
typedef struct { uint16_t d, m; uint8_t qs[16]; } ek_block_q4_1;              /* 20 */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } ek_block_q5_0;  /* 22 */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } ek_block_q5_1; /* 24 */
typedef struct { uint16_t d; int8_t qs[32]; } ek_block_q8_0;                  /* 34 */
typedef struct { uint16_t d, s; int8_t qs[32]; } ek_block_q8_1;               /* 36 */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } ek_block_q2_K;   /* 84 */
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } ek_block_q3_K; /* 110 */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } ek_block_q4_K; /* 144 */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } ek_block_q5_K; /* 176 */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } ek_block_q6_K; /* 210 */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } ek_block_q8_K; /* 292 */
/* Non-linear 4-bit: nibble i stands for ek_iq4nl_values[i].  iq4_nl: 32
 * elements, low nibbles of qs are elements 0..15, high nibbles 16..31.
 * iq4_xs: 256 elements in 8 sub-blocks of 32 laid out as iq4_nl's, each with
 * a 6-bit scale ls (low 4 bits: nibble ib of scales_l, low first; high 2
 * bits: bits 2ib..2ib+1 of scales_h); value = d * (ls - 32) * table value. */
typedef struct { uint16_t d; uint8_t qs[16]; } ek_block_iq4_nl;              /* 18 */
typedef struct { uint16_t d, scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } ek_block_iq4_xs; /* 136 */
/* ggml's kvalues_iq4nl.  The single-file build makes it static (C++ has no
 * static forward declaration of data): there its definition in kernels.c
 * comes before every use. */
#ifndef EMBER_SINGLE_FILE
extern const int8_t ek_iq4nl_values[16];
#endif

/* The activation format a weight type's dot product wants (EK_F32,
 * EK_Q8_0 or EK_Q8_K), or -1 if the type has no matmul.  IQ4_NL takes Q8_0
 * and IQ4_XS Q8_K, as in ggml. */
EMBER_INTERNAL int ek_act_type(int wtype);

/* One matmul kernel: same contract as ek_matmul for one weight type. */
typedef void (*ek_matmul_fn)(const void *W, int n, const void *X, int nb,
                             float *Y, int ldy, int r0, int r1);

/* A matmul table (indexed by enum ek_type), one argument per weight type
 * that has kernels, NULL where a set has none.  The kernel sets spell their
 * tables through it: C++ has no array designators. */
#define EK_MATMULS(f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, iq4_nl, iq4_xs, bf16) \
    { f32, f16, q4_0, q4_1, NULL, NULL, q5_0, q5_1, q8_0, NULL, q2_K, q3_K, q4_K, q5_K, q6_K, NULL,            \
      NULL, NULL, NULL, NULL, iq4_nl, NULL, NULL, iq4_xs, NULL, NULL, NULL, NULL, NULL, NULL, bf16 }

/* A kernel set.  NULL entries fall back to the scalar set's kernel. */
struct ek_kernels {
    const char *name;
    ek_matmul_fn matmul[EK_TYPE_COUNT];
    ek_matmul_fn matmul_packed[EK_TYPE_COUNT];   /* packed weights (Q4_0, Q8_0, k-quants, IQ4_XS) */
    void (*quantize_q8_0)(const float *x, void *dst, int n);  /* byte-identical to the reference */
    void (*quantize_q8_K)(const float *x, void *dst, int n);  /* byte-identical to the reference */
    void (*rmsnorm)(float *out, const float *x, const float *w, int n, float eps);
    void (*swiglu)(float *gate, const float *up, int n);
    void (*geglu)(float *gate, const float *up, int n);
    void (*add)(float *y, const float *x, int n);
    float (*dot_f32)(const float *q, const float *k, int n);
    float (*dot_f16)(const float *q, const uint16_t *k, int n);
    void (*axpy_f32)(float *y, float a, const float *x, int n);
    void (*axpy_f16)(float *y, float a, const uint16_t *x, int n);
    void (*store_f16)(uint16_t *dst, const float *src, int n);
    /* many F16 cache rows at once (NULL: a loop over dot_f16 / axpy_f16) */
    void (*kv_scores_f16)(const float *q, const uint16_t *rows, size_t stride, int n_pos, int n, float scale, float *s);
    void (*kv_mix_f16)(const float *p, const uint16_t *rows, size_t stride, int n_pos, int n, float *out);
    /* 0, or the nb from which F16/BF16 matmuls run on bf16 tiles (amx set):
     * each product within 2^-15 of w*x instead of exact, so such batches
     * differ in the last bits from fewer rows (kernels_x86.c, AMX-BF16).
     * Their batch is made by convert_bf16_tiles (ek_convert_batch). */
    int bf16_tiles_min_nb;
    void (*convert_bf16_tiles)(const float *x, int nb, void *xa, int n);
};

/* The per-ISA sets (NULL when the CPU or the build lacks them), declared
 * only where they are defined (static in the single-file build). */
#if defined(__x86_64__) || defined(_M_X64)
EMBER_INTERNAL const ek_kernels *ekx_kernels_avx2(void);
EMBER_INTERNAL const ek_kernels *ekx_kernels_avx512(void);
EMBER_INTERNAL const ek_kernels *ekx_kernels_amx(void);   /* avx512 + AMX tiles for Q4_0/Q8_0/F16/BF16 prompts */
#endif
#if defined(__aarch64__)
EMBER_INTERNAL const ek_kernels *eka_kernels_neon(void);
EMBER_INTERNAL const ek_kernels *eka_kernels_neon_dotprod(void);
#endif

#endif
