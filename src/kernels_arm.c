/* kernels_arm.c - the AArch64 kernel sets: "neon" (baseline ASIMD, always
 * present on AArch64) and "neon_dotprod" (adds SDOT, detected at run time
 * from the kernel's HWCAP on Linux).  Same layout rules as kernels_x86.c:
 * every output is computed by one fixed instruction sequence (one vector
 * accumulator, blocks in order, one horizontal sum), tiles only share
 * loads, so results do not depend on the row split or on nb.  Kernels not
 * listed in a set fall back to the scalar ones. */
#include "kernels.h"

#if defined(__aarch64__)

#include <arm_neon.h>
#include <string.h>
#include <math.h>
#if defined(__linux__)
#include <sys/auxv.h>
#endif

#define EKA_UNROLL _Pragma("GCC unroll 8")
#define EKA_INLINE static inline __attribute__((always_inline))
#define EKA_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#define EKA_DOTPROD_INLINE static inline __attribute__((always_inline, target("arch=armv8.2-a+dotprod")))

enum { EKA_W_F32, EKA_W_F16, EKA_W_BF16 };
enum { EKA_Q4_0, EKA_Q8_0, EKA_IQ4_NL };
#define EKA_WBS(kind) ((kind) == EKA_Q8_0 ? 34 : 18)   /* block bytes */

EKA_INLINE float eka_h2f(uint16_t h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }

/* ---- float matmul (F32, F16, BF16 weights; F32 activations) ------------------------------ */

EKA_INLINE float32x4_t eka_load4(const uint8_t *p, int kind) {
    if (kind == EKA_W_F32) return vld1q_f32((const float *)p);
    uint16x4_t h = vld1_u16((const uint16_t *)p);
    if (kind == EKA_W_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshlq_n_u32(vmovl_u16(h), 16));
}

EKA_INLINE float eka_load1(const uint8_t *p, int kind) {
    uint16_t h;
    if (kind == EKA_W_F32) { float f; memcpy(&f, p, 4); return f; }
    memcpy(&h, p, 2);
    return kind == EKA_W_F16 ? eka_h2f(h) : ek_bf16_to_fp32(h);
}

#define EKA_FRT 4
#define EKA_FBT 4

EKA_INLINE void eka_tile_float(int kind, int RT, int BT, const uint8_t *W, size_t wrow, int esz,
                               const float *X, int n, float *Y, int ldy, int r, int b) {
    float32x4_t acc[EKA_FRT][EKA_FBT];
    EKA_UNROLL
    for (int i = 0; i < RT; i++)
        EKA_UNROLL
        for (int j = 0; j < BT; j++) acc[i][j] = vdupq_n_f32(0.0f);
    const int n4 = n & ~3;
    for (int k = 0; k < n4; k += 4) {
        float32x4_t xv[EKA_FBT];
        EKA_UNROLL
        for (int j = 0; j < BT; j++) xv[j] = vld1q_f32(X + (size_t)(b + j) * n + k);
        EKA_UNROLL
        for (int i = 0; i < RT; i++) {
            float32x4_t w = eka_load4(W + (size_t)(r + i) * wrow + (size_t)k * esz, kind);
            EKA_UNROLL
            for (int j = 0; j < BT; j++) acc[i][j] = vfmaq_f32(acc[i][j], w, xv[j]);
        }
    }
    EKA_UNROLL
    for (int i = 0; i < RT; i++)
        EKA_UNROLL
        for (int j = 0; j < BT; j++) {
            float s = vaddvq_f32(acc[i][j]);
            const uint8_t *wr = W + (size_t)(r + i) * wrow;
            const float *xr = X + (size_t)(b + j) * n;
            for (int k = n4; k < n; k++) s = fmaf(eka_load1(wr + (size_t)k * esz, kind), xr[k], s);
            Y[(size_t)(b + j) * ldy + r + i] = s;
        }
}

EKA_INLINE void eka_matmul_float(int kind, const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                 int r0, int r1) {
    const int esz = kind == EKA_W_F32 ? 4 : 2;
    const size_t wrow = (size_t)n * esz;
    int r = r0;
    for (; r + EKA_FRT <= r1; r += EKA_FRT) {
        int b = 0;
        for (; b + EKA_FBT <= nb; b += EKA_FBT) eka_tile_float(kind, EKA_FRT, EKA_FBT, W, wrow, esz, X, n, Y, ldy, r, b);
        for (; b < nb; b++) eka_tile_float(kind, EKA_FRT, 1, W, wrow, esz, X, n, Y, ldy, r, b);
    }
    for (; r < r1; r++) {
        int b = 0;
        for (; b + EKA_FBT <= nb; b += EKA_FBT) eka_tile_float(kind, 1, EKA_FBT, W, wrow, esz, X, n, Y, ldy, r, b);
        for (; b < nb; b++) eka_tile_float(kind, 1, 1, W, wrow, esz, X, n, Y, ldy, r, b);
    }
}

static void eka_matmul_f32(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    eka_matmul_float(EKA_W_F32, W, n, X, nb, Y, ldy, r0, r1);
}
static void eka_matmul_f16(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    eka_matmul_float(EKA_W_F16, W, n, X, nb, Y, ldy, r0, r1);
}
static void eka_matmul_bf16(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    eka_matmul_float(EKA_W_BF16, W, n, X, nb, Y, ldy, r0, r1);
}

/* ---- quantized matmul (Q4_0, Q8_0, IQ4_NL weights; Q8_0 activations) ------------------------
 * Per block: the 32 weights as two int8x16 (q4_0: low nibbles are elements
 * 0..15, high nibbles 16..31, minus 8; iq4_nl: the same nibbles looked up
 * in the table), an exact integer dot product in 4 int32 lanes, then
 * acc += float(lanes) * (d_w * d_x). */

#define EKA_QRT 4
#define EKA_QBT 2

/* 16 bytes of nibbles (element j low, j + 16 high) as table values */
EKA_INLINE void eka_iq4_values(const uint8_t *qs, int8x16_t *w0, int8x16_t *w1) {
    const int8x16_t table = vld1q_s8(ek_iq4nl_values);
    uint8x16_t v = vld1q_u8(qs);
    *w0 = vqtbl1q_s8(table, vandq_u8(v, vdupq_n_u8(0x0F)));
    *w1 = vqtbl1q_s8(table, vshrq_n_u8(v, 4));
}

EKA_INLINE void eka_weights32(int kind, const uint8_t *qs, int8x16_t *w0, int8x16_t *w1) {
    if (kind == EKA_IQ4_NL) {
        eka_iq4_values(qs, w0, w1);
    } else if (kind == EKA_Q4_0) {
        uint8x16_t v = vld1q_u8(qs);
        *w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
        *w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vdupq_n_s8(8));
    } else {
        *w0 = vld1q_s8((const int8_t *)qs);
        *w1 = vld1q_s8((const int8_t *)qs + 16);
    }
}

/* 4 int32 lanes of the block's integer dot product: widening multiplies
 * and pairwise adds (baseline ASIMD) */
EKA_INLINE int32x4_t eka_idot_neon(int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1) {
    int16x8_t p0 = vmull_s8(vget_low_s8(w0), vget_low_s8(x0));
    int16x8_t p1 = vmull_s8(vget_high_s8(w0), vget_high_s8(x0));
    int16x8_t p2 = vmull_s8(vget_low_s8(w1), vget_low_s8(x1));
    int16x8_t p3 = vmull_s8(vget_high_s8(w1), vget_high_s8(x1));
    int32x4_t s = vpaddlq_s16(p0);
    s = vpadalq_s16(s, p1);
    s = vpadalq_s16(s, p2);
    return vpadalq_s16(s, p3);
}

EKA_DOTPROD_INLINE int32x4_t eka_idot_dotprod(int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1);
}

/* One tile body, written once as a macro so that it can be instantiated
 * for both integer dot products (a dotprod function cannot be inlined into
 * a baseline one, and the baseline must not contain SDOT). */
#define EKA_TILE_Q_BODY(IDOT)                                                                         \
    float32x4_t acc[EKA_QRT][EKA_QBT];                                                                \
    EKA_UNROLL for (int i = 0; i < RT; i++) EKA_UNROLL for (int j = 0; j < BT; j++) acc[i][j] = vdupq_n_f32(0.0f); \
    const int wbs = EKA_WBS(kind);                                                                    \
    for (int k = 0; k < nblk; k++) {                                                                  \
        int8x16_t x0[EKA_QBT], x1[EKA_QBT];                                                           \
        float dx[EKA_QBT];                                                                            \
        EKA_UNROLL for (int j = 0; j < BT; j++) {                                                     \
            const ek_block_q8_0 *xb = (const ek_block_q8_0 *)(X + (size_t)(b + j) * xrow) + k;        \
            x0[j] = vld1q_s8(xb->qs);                                                                 \
            x1[j] = vld1q_s8(xb->qs + 16);                                                            \
            dx[j] = eka_h2f(xb->d);                                                                   \
        }                                                                                             \
        EKA_UNROLL for (int i = 0; i < RT; i++) {                                                     \
            const uint8_t *wb = W + (size_t)(r + i) * wrow + (size_t)k * wbs;                         \
            uint16_t dh;                                                                              \
            memcpy(&dh, wb, 2);                                                                       \
            const float dw = eka_h2f(dh);                                                             \
            int8x16_t w0, w1;                                                                         \
            eka_weights32(kind, wb + 2, &w0, &w1);                                                    \
            EKA_UNROLL for (int j = 0; j < BT; j++) {                                                 \
                int32x4_t p = IDOT(w0, w1, x0[j], x1[j]);                                             \
                acc[i][j] = vfmaq_n_f32(acc[i][j], vcvtq_f32_s32(p), dw * dx[j]);                     \
            }                                                                                         \
        }                                                                                             \
    }                                                                                                 \
    EKA_UNROLL for (int i = 0; i < RT; i++) EKA_UNROLL for (int j = 0; j < BT; j++)                   \
        Y[(size_t)(b + j) * ldy + r + i] = vaddvq_f32(acc[i][j]);

EKA_INLINE void eka_tile_q_neon(int kind, int RT, int BT, const uint8_t *W, size_t wrow, const uint8_t *X,
                                size_t xrow, int nblk, float *Y, int ldy, int r, int b) {
    EKA_TILE_Q_BODY(eka_idot_neon)
}

EKA_DOTPROD_INLINE void eka_tile_q_dotprod(int kind, int RT, int BT, const uint8_t *W, size_t wrow,
                                           const uint8_t *X, size_t xrow, int nblk, float *Y, int ldy, int r, int b) {
    EKA_TILE_Q_BODY(eka_idot_dotprod)
}

#define EKA_MATMUL_Q_BODY(TILE)                                                                        \
    const int nblk = n / 32;                                                                          \
    const size_t wrow = (size_t)nblk * EKA_WBS(kind), xrow = (size_t)nblk * 34;                      \
    int r = r0;                                                                                       \
    for (; r + EKA_QRT <= r1; r += EKA_QRT) {                                                         \
        int b = 0;                                                                                    \
        for (; b + EKA_QBT <= nb; b += EKA_QBT) TILE(kind, EKA_QRT, EKA_QBT, W, wrow, X, xrow, nblk, Y, ldy, r, b); \
        for (; b < nb; b++) TILE(kind, EKA_QRT, 1, W, wrow, X, xrow, nblk, Y, ldy, r, b);            \
    }                                                                                                 \
    for (; r < r1; r++) {                                                                             \
        int b = 0;                                                                                    \
        for (; b + EKA_QBT <= nb; b += EKA_QBT) TILE(kind, 1, EKA_QBT, W, wrow, X, xrow, nblk, Y, ldy, r, b); \
        for (; b < nb; b++) TILE(kind, 1, 1, W, wrow, X, xrow, nblk, Y, ldy, r, b);                  \
    }

EKA_INLINE void eka_matmul_q_neon(int kind, const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                  int r0, int r1) {
    EKA_MATMUL_Q_BODY(eka_tile_q_neon)
}
EKA_DOTPROD_INLINE void eka_matmul_q_dotprod(int kind, const void *W, int n, const void *X, int nb, float *Y,
                                             int ldy, int r0, int r1) {
    EKA_MATMUL_Q_BODY(eka_tile_q_dotprod)
}

static void eka_matmul_q4_0_neon(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    eka_matmul_q_neon(EKA_Q4_0, W, n, X, nb, Y, ldy, r0, r1);
}
static void eka_matmul_q8_0_neon(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    eka_matmul_q_neon(EKA_Q8_0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKA_DOTPROD void eka_matmul_q4_0_dotprod(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    eka_matmul_q_dotprod(EKA_Q4_0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKA_DOTPROD void eka_matmul_q8_0_dotprod(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    eka_matmul_q_dotprod(EKA_Q8_0, W, n, X, nb, Y, ldy, r0, r1);
}
static void eka_matmul_iq4_nl_neon(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    eka_matmul_q_neon(EKA_IQ4_NL, W, n, X, nb, Y, ldy, r0, r1);
}
static EKA_DOTPROD void eka_matmul_iq4_nl_dotprod(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                                  int r1) {
    eka_matmul_q_dotprod(EKA_IQ4_NL, W, n, X, nb, Y, ldy, r0, r1);
}

/* ---- IQ4_XS weights; Q8_K activations ------------------------------------------------------
 * Per superblock: per sub-block of 32 the table values as two int8x16, the
 * exact integer dot product (4 int32 lanes) times its scale ls - 32, summed
 * exactly over the superblock; then acc += float(lanes) * (d_w * d_x). */

#define EKA_XRT 4
#define EKA_XBT 2

/* the 8 sub-block scales ls - 32 of an iq4_xs superblock */
EKA_INLINE void eka_iq4_xs_scales(const ek_block_iq4_xs *b, int32_t sc[8]) {
    for (int ib = 0; ib < 8; ib++)
        sc[ib] = (((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b->scales_h >> (2 * ib)) & 3) << 4)) - 32;
}

#define EKA_TILE_XS_BODY(IDOT)                                                                        \
    float32x4_t acc[EKA_XRT][EKA_XBT];                                                                \
    EKA_UNROLL for (int i = 0; i < RT; i++) EKA_UNROLL for (int j = 0; j < BT; j++) acc[i][j] = vdupq_n_f32(0.0f); \
    for (int k = 0; k < nsb; k++) {                                                                   \
        const ek_block_q8_K *xb[EKA_XBT];                                                             \
        EKA_UNROLL for (int j = 0; j < BT; j++) xb[j] = (const ek_block_q8_K *)(X + (size_t)(b + j) * xrow) + k; \
        EKA_UNROLL for (int i = 0; i < RT; i++) {                                                     \
            const ek_block_iq4_xs *wb = (const ek_block_iq4_xs *)(W + (size_t)(r + i) * wrow) + k;    \
            int32_t sc[8];                                                                            \
            eka_iq4_xs_scales(wb, sc);                                                                \
            int32x4_t isum[EKA_XBT];                                                                  \
            EKA_UNROLL for (int j = 0; j < BT; j++) isum[j] = vdupq_n_s32(0);                         \
            for (int ib = 0; ib < 8; ib++) {                                                          \
                int8x16_t w0, w1;                                                                     \
                eka_iq4_values(wb->qs + 16 * ib, &w0, &w1);                                           \
                EKA_UNROLL for (int j = 0; j < BT; j++) {                                             \
                    int32x4_t p = IDOT(w0, w1, vld1q_s8(xb[j]->qs + 32 * ib), vld1q_s8(xb[j]->qs + 32 * ib + 16)); \
                    isum[j] = vmlaq_n_s32(isum[j], p, sc[ib]);                                        \
                }                                                                                     \
            }                                                                                         \
            const float dw = eka_h2f(wb->d);                                                          \
            EKA_UNROLL for (int j = 0; j < BT; j++)                                                   \
                acc[i][j] = vfmaq_n_f32(acc[i][j], vcvtq_f32_s32(isum[j]), dw * xb[j]->d);            \
        }                                                                                             \
    }                                                                                                 \
    EKA_UNROLL for (int i = 0; i < RT; i++) EKA_UNROLL for (int j = 0; j < BT; j++)                   \
        Y[(size_t)(b + j) * ldy + r + i] = vaddvq_f32(acc[i][j]);

EKA_INLINE void eka_tile_xs_neon(int RT, int BT, const uint8_t *W, size_t wrow, const uint8_t *X, size_t xrow,
                                 int nsb, float *Y, int ldy, int r, int b) {
    EKA_TILE_XS_BODY(eka_idot_neon)
}
EKA_DOTPROD_INLINE void eka_tile_xs_dotprod(int RT, int BT, const uint8_t *W, size_t wrow, const uint8_t *X,
                                            size_t xrow, int nsb, float *Y, int ldy, int r, int b) {
    EKA_TILE_XS_BODY(eka_idot_dotprod)
}

#define EKA_MATMUL_XS_BODY(TILE)                                                                       \
    const int nsb = n / 256;                                                                          \
    const size_t wrow = (size_t)nsb * sizeof(ek_block_iq4_xs), xrow = (size_t)nsb * sizeof(ek_block_q8_K); \
    int r = r0;                                                                                       \
    for (; r + EKA_XRT <= r1; r += EKA_XRT) {                                                         \
        int b = 0;                                                                                    \
        for (; b + EKA_XBT <= nb; b += EKA_XBT) TILE(EKA_XRT, EKA_XBT, W, wrow, X, xrow, nsb, Y, ldy, r, b); \
        for (; b < nb; b++) TILE(EKA_XRT, 1, W, wrow, X, xrow, nsb, Y, ldy, r, b);                   \
    }                                                                                                 \
    for (; r < r1; r++) {                                                                             \
        int b = 0;                                                                                    \
        for (; b + EKA_XBT <= nb; b += EKA_XBT) TILE(1, EKA_XBT, W, wrow, X, xrow, nsb, Y, ldy, r, b); \
        for (; b < nb; b++) TILE(1, 1, W, wrow, X, xrow, nsb, Y, ldy, r, b);                         \
    }

static void eka_matmul_iq4_xs_neon(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    EKA_MATMUL_XS_BODY(eka_tile_xs_neon)
}
static EKA_DOTPROD void eka_matmul_iq4_xs_dotprod(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                                  int r1) {
    EKA_MATMUL_XS_BODY(eka_tile_xs_dotprod)
}

/* ---- vector ops --------------------------------------------------------------------------- */

static void eka_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t v0 = vld1q_f32(x + i), v1 = vld1q_f32(x + i + 4);
        a0 = vfmaq_f32(a0, v0, v0);
        a1 = vfmaq_f32(a1, v1, v1);
    }
    double ss = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(out + i, vmulq_f32(vmulq_n_f32(vld1q_f32(x + i), scale), vld1q_f32(w + i)));
    for (; i < n; i++) out[i] = x[i] * scale * w[i];
}

static void eka_add(float *y, const float *x, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vld1q_f32(x + i)));
    for (; i < n; i++) y[i] += x[i];
}

static float eka_dot_f32(const float *q, const float *k, int n) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 = vfmaq_f32(a0, vld1q_f32(q + i), vld1q_f32(k + i));
        a1 = vfmaq_f32(a1, vld1q_f32(q + i + 4), vld1q_f32(k + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) s += q[i] * k[i];
    return s;
}

static float eka_dot_f16(const float *q, const uint16_t *k, int n) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(k + i));
        a0 = vfmaq_f32(a0, vld1q_f32(q + i), vcvt_f32_f16(vget_low_f16(h)));
        a1 = vfmaq_f32(a1, vld1q_f32(q + i + 4), vcvt_high_f32_f16(h));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) s += q[i] * eka_h2f(k[i]);
    return s;
}

static void eka_axpy_f32(float *y, float a, const float *x, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    for (; i < n; i++) y[i] += a * x[i];
}

static void eka_axpy_f16(float *y, float a, const uint16_t *x, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + i))), a));
    for (; i < n; i++) y[i] += a * eka_h2f(x[i]);
}

static void eka_store_f16(uint16_t *dst, const float *src, int n) {
    int i = 0;  /* FCVTN rounds to nearest even (the default FPCR mode) */
    for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    for (; i < n; i++) dst[i] = ek_fp32_to_fp16(src[i]);
}

/* every field after matmul, in declaration order (C++ wants it) */
#define EKA_COMMON                                                                               \
    .matmul_packed = {NULL}, .quantize_q8_0 = NULL, .quantize_q8_K = NULL,                         \
    .rmsnorm = eka_rmsnorm, .swiglu = NULL, .geglu = NULL,                                         \
    .add = eka_add, .dot_f32 = eka_dot_f32, .dot_f16 = eka_dot_f16,                                \
    .axpy_f32 = eka_axpy_f32, .axpy_f16 = eka_axpy_f16, .store_f16 = eka_store_f16,                \
    .kv_scores_f16 = NULL, .kv_mix_f16 = NULL, .bf16_tiles_min_nb = 0, .convert_bf16_tiles = NULL

static const ek_kernels eka_neon_set = {
    .name = "neon",
    .matmul = EK_MATMULS(eka_matmul_f32, eka_matmul_f16, eka_matmul_q4_0_neon, NULL, NULL, NULL,
                         eka_matmul_q8_0_neon, NULL, NULL, NULL, NULL, NULL,
                         eka_matmul_iq4_nl_neon, eka_matmul_iq4_xs_neon, eka_matmul_bf16),
    EKA_COMMON,
};

static const ek_kernels eka_dotprod_set = {
    .name = "neon_dotprod",
    .matmul = EK_MATMULS(eka_matmul_f32, eka_matmul_f16, eka_matmul_q4_0_dotprod, NULL, NULL, NULL,
                         eka_matmul_q8_0_dotprod, NULL, NULL, NULL, NULL, NULL,
                         eka_matmul_iq4_nl_dotprod, eka_matmul_iq4_xs_dotprod, eka_matmul_bf16),
    EKA_COMMON,
};

static int eka_has_dotprod(void) {
#if defined(__linux__) && defined(AT_HWCAP)
    return (getauxval(AT_HWCAP) & (1ul << 20)) != 0;  /* HWCAP_ASIMDDP */
#else
    return 0;
#endif
}

const ek_kernels *eka_kernels_neon(void) { return &eka_neon_set; }
const ek_kernels *eka_kernels_neon_dotprod(void) { return eka_has_dotprod() ? &eka_dotprod_set : NULL; }

#else
typedef int eka_no_arm; /* ISO C wants a non-empty translation unit */
#endif
