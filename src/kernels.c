/* kernels.c - the type table, fp16/bf16 conversions, (de)quantization, the
 * scalar reference kernel set and the dispatch to the best SIMD set.
 *
 * The scalar kernels are written for clarity: they are the reference every
 * SIMD kernel is tested against.  Integer dot products are exact, so the
 * only rounding in a quantized dot product is in the per-block float
 * accumulation. */
#include "kernels.h"

#include <math.h>
#include <string.h>

/* ---- type table ------------------------------------------------------------ */

/* Indexed by ggml type id, in order (C++ has no array designators); the
 * ids between are unused or removed from ggml. */
static const ek_type_info ek_types[EK_TYPE_COUNT] = {
    {"f32", 1, 4},          {"f16", 1, 2},          {"q4_0", 32, 18},      {"q4_1", 32, 20},    /*  0.. 3 */
    {NULL, 0, 0},           {NULL, 0, 0},           {"q5_0", 32, 22},      {"q5_1", 32, 24},    /*  4.. 7 */
    {"q8_0", 32, 34},       {"q8_1", 32, 36},       {"q2_K", 256, 84},     {"q3_K", 256, 110},  /*  8..11 */
    {"q4_K", 256, 144},     {"q5_K", 256, 176},     {"q6_K", 256, 210},    {"q8_K", 256, 292},  /* 12..15 */
    {"iq2_xxs", 256, 66},   {"iq2_xs", 256, 74},    {"iq3_xxs", 256, 98},  {"iq1_s", 256, 50},  /* 16..19 */
    {"iq4_nl", 32, 18},     {"iq3_s", 256, 110},    {"iq2_s", 256, 82},    {"iq4_xs", 256, 136}, /* 20..23 */
    {"i8", 1, 1},           {"i16", 1, 2},          {"i32", 1, 4},         {"i64", 1, 8},       /* 24..27 */
    {"f64", 1, 8},          {"iq1_m", 256, 56},     {"bf16", 1, 2},        {NULL, 0, 0},        /* 28..31 */
    {NULL, 0, 0},           {NULL, 0, 0},           {"tq1_0", 256, 54},    {"tq2_0", 256, 66},  /* 32..35 */
    {NULL, 0, 0},           {NULL, 0, 0},           {NULL, 0, 0},          {"mxfp4", 32, 17},   /* 36..39 */
};
/* the ids the table and EK_MATMULS (kernels.h) place by position */
EC_STATIC_ASSERT(EK_F32 == 0 && EK_F16 == 1 && EK_Q4_0 == 2 && EK_Q4_1 == 3 && EK_Q5_0 == 6 && EK_Q5_1 == 7 &&
                 EK_Q8_0 == 8 && EK_Q8_1 == 9 && EK_Q2_K == 10 && EK_Q3_K == 11 && EK_Q4_K == 12 &&
                 EK_Q5_K == 13 && EK_Q6_K == 14 && EK_Q8_K == 15 && EK_IQ4_NL == 20 && EK_IQ4_XS == 23 &&
                 EK_I8 == 24 && EK_I16 == 25 && EK_I32 == 26 && EK_I64 == 27 && EK_F64 == 28 &&
                 EK_BF16 == 30 && EK_TYPE_COUNT == 40, "enum ek_type is ggml's type ids");

const ek_type_info *ek_type_get(int type) {
    if (type < 0 || type >= EK_TYPE_COUNT || !ek_types[type].name) return NULL;
    return &ek_types[type];
}

uint64_t ek_row_bytes(int type, uint64_t n) {
    const ek_type_info *t = ek_type_get(type);
    if (!t || n % (uint64_t)t->block_size) return 0;
    return n / (uint64_t)t->block_size * (uint64_t)t->type_size;
}

/* ---- fp16 / bf16 -------------------------------------------------------------
 * Bit manipulation only, so results do not depend on the FPU or compiler. */

uint16_t ek_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)                      /* NaN: keep it quiet, keep top payload */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 (or inf) -> inf */
    if (ax >= 0x38800000u) {                   /* normal half: round mantissa to 10 bits, even ties */
        uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
        return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
    }
    if (ax < 0x33000000u) return (uint16_t)sign; /* below 2^-25: rounds to zero */
    /* subnormal half: value / 2^-24, rounded to nearest even */
    int e = (int)(ax >> 23) - 127;             /* -25 .. -15 */
    uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    int shift = -(e + 1);                      /* 14 .. 24 */
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

float ek_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    if (e == 0x1f) x = sign | 0x7f800000u | (m << 13);          /* inf, nan */
    else if (e != 0) x = sign | ((e + 112) << 23) | (m << 13);  /* normal */
    else if (m == 0) x = sign;                                   /* zero */
    else {                                                       /* subnormal: normalize */
        int sh = 0;
        while (!(m & 0x400u)) { m <<= 1; sh++; }
        x = sign | ((uint32_t)(113 - sh) << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

uint16_t ek_fp32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float ek_bf16_to_fp32(uint16_t h) {
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

#define EK_H2F(h) ek_fp16_to_fp32(h)

/* The 16 levels of IQ4_NL / IQ4_XS nibbles (ggml's kvalues_iq4nl). */
EMBER_INTERNAL const int8_t ek_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* ---- k-quant decoding --------------------------------------------------------
 * Every k-quant block is decoded into one shape: 256 small integers q, and
 * for each group of 16 an integer scale and min, so that
 *     value[i] = d * scale[i/16] * q[i] - dmin * min[i/16].
 * Dequantization and the scalar dot products both use it. */

typedef struct {
    float d, dmin;
    int8_t q[256];
    int scale[16], min[16];
} ek_kblock;

/* The 6-bit scale and min of sub-block j of q4_K / q5_K (ggml's packing). */
static void ek_scale_min_k4(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void ek_decode_q2_K(const ek_block_q2_K *b, ek_kblock *o) {
    o->d = EK_H2F(b->d);
    o->dmin = EK_H2F(b->dmin);
    for (int g = 0; g < 16; g++) { o->scale[g] = b->scales[g] & 0xF; o->min[g] = b->scales[g] >> 4; }
    /* 128-element halves; within one, 4 shifts x 32 bytes of 2-bit fields */
    for (int half = 0; half < 2; half++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++)
                o->q[half * 128 + s * 32 + l] = (int8_t)((b->qs[half * 32 + l] >> (2 * s)) & 3);
}

static void ek_decode_q3_K(const ek_block_q3_K *b, ek_kblock *o) {
    o->d = EK_H2F(b->d);
    o->dmin = 0.0f;
    /* 16 6-bit scales: low 4 bits in scales[0..7] nibbles, high 2 bits in scales[8..11] */
    for (int g = 0; g < 16; g++) {
        int lo = g < 8 ? (b->scales[g] & 0xF) : (b->scales[g - 8] >> 4);
        int hi = (b->scales[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
        o->scale[g] = (lo | (hi << 4)) - 32;
        o->min[g] = 0;
    }
    for (int half = 0; half < 2; half++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                int i = half * 128 + s * 32 + l;
                int lowbits = (b->qs[half * 32 + l] >> (2 * s)) & 3;
                int hbit = (b->hmask[l] >> (half * 4 + s)) & 1;
                o->q[i] = (int8_t)(lowbits - (hbit ? 0 : 4));
            }
}

static void ek_decode_q4_K(const ek_block_q4_K *b, ek_kblock *o) {
    o->d = EK_H2F(b->d);
    o->dmin = EK_H2F(b->dmin);
    for (int j = 0; j < 8; j++) {  /* 8 sub-blocks of 32 = 2 groups of 16 */
        int sc, m;
        ek_scale_min_k4(j, b->scales, &sc, &m);
        o->scale[2 * j] = o->scale[2 * j + 1] = sc;
        o->min[2 * j] = o->min[2 * j + 1] = m;
    }
    for (int c = 0; c < 4; c++)     /* 4 chunks of 32 bytes: low nibbles, then high */
        for (int l = 0; l < 32; l++) {
            o->q[c * 64 + l] = (int8_t)(b->qs[c * 32 + l] & 0xF);
            o->q[c * 64 + 32 + l] = (int8_t)(b->qs[c * 32 + l] >> 4);
        }
}

static void ek_decode_q5_K(const ek_block_q5_K *b, ek_kblock *o) {
    o->d = EK_H2F(b->d);
    o->dmin = EK_H2F(b->dmin);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        ek_scale_min_k4(j, b->scales, &sc, &m);
        o->scale[2 * j] = o->scale[2 * j + 1] = sc;
        o->min[2 * j] = o->min[2 * j + 1] = m;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int h0 = (b->qh[l] >> (2 * c)) & 1, h1 = (b->qh[l] >> (2 * c + 1)) & 1;
            o->q[c * 64 + l] = (int8_t)((b->qs[c * 32 + l] & 0xF) | (h0 << 4));
            o->q[c * 64 + 32 + l] = (int8_t)((b->qs[c * 32 + l] >> 4) | (h1 << 4));
        }
}

static void ek_decode_q6_K(const ek_block_q6_K *b, ek_kblock *o) {
    o->d = EK_H2F(b->d);
    o->dmin = 0.0f;
    for (int g = 0; g < 16; g++) { o->scale[g] = b->scales[g]; o->min[g] = 0; }
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
        int8_t *q = o->q + 128 * half;
        for (int l = 0; l < 32; l++) {
            q[l + 0] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            q[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            q[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

/* iq4_xs in the same shape: one 6-bit scale (ls - 32) per sub-block of 32,
 * no min; dmin = 0 keeps d * scale * q - 0 * 0 the bits of ggml's
 * (d * (ls - 32)) * value. */
static void ek_decode_iq4_xs(const ek_block_iq4_xs *b, ek_kblock *o) {
    o->d = EK_H2F(b->d);
    o->dmin = 0.0f;
    for (int ib = 0; ib < 8; ib++) {
        int ls = ((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b->scales_h >> (2 * ib)) & 3) << 4);
        o->scale[2 * ib] = o->scale[2 * ib + 1] = ls - 32;
        o->min[2 * ib] = o->min[2 * ib + 1] = 0;
        for (int j = 0; j < 16; j++) {
            o->q[32 * ib + j] = ek_iq4nl_values[b->qs[16 * ib + j] & 0xF];
            o->q[32 * ib + 16 + j] = ek_iq4nl_values[b->qs[16 * ib + j] >> 4];
        }
    }
}

static int ek_decode_kblock(int type, const void *blk, ek_kblock *o) {
    switch (type) {
    case EK_Q2_K: ek_decode_q2_K((const ek_block_q2_K *)blk, o); return 0;
    case EK_Q3_K: ek_decode_q3_K((const ek_block_q3_K *)blk, o); return 0;
    case EK_Q4_K: ek_decode_q4_K((const ek_block_q4_K *)blk, o); return 0;
    case EK_Q5_K: ek_decode_q5_K((const ek_block_q5_K *)blk, o); return 0;
    case EK_Q6_K: ek_decode_q6_K((const ek_block_q6_K *)blk, o); return 0;
    case EK_IQ4_XS: ek_decode_iq4_xs((const ek_block_iq4_xs *)blk, o); return 0;
    default: return -1;
    }
}

/* ---- dequantization ---------------------------------------------------------- */

/* The 32 integers of one 32-block of the legacy formats and IQ4_NL, and
 * its d and m (value = d * q + m, or d * q for the types without a min). */
static void ek_decode_block32(int type, const void *blk, int q[32], float *d, float *m) {
    *m = 0.0f;
    switch (type) {
    case EK_Q4_0: {
        const ek_block_q4_0 *b = (const ek_block_q4_0 *)blk;
        *d = EK_H2F(b->d);
        for (int j = 0; j < 16; j++) { q[j] = (b->qs[j] & 0xF) - 8; q[j + 16] = (b->qs[j] >> 4) - 8; }
        break;
    }
    case EK_Q4_1: {
        const ek_block_q4_1 *b = (const ek_block_q4_1 *)blk;
        *d = EK_H2F(b->d); *m = EK_H2F(b->m);
        for (int j = 0; j < 16; j++) { q[j] = b->qs[j] & 0xF; q[j + 16] = b->qs[j] >> 4; }
        break;
    }
    case EK_Q5_0: case EK_Q5_1: {
        const uint8_t *qh4, *qs;
        if (type == EK_Q5_0) { const ek_block_q5_0 *b = (const ek_block_q5_0 *)blk; *d = EK_H2F(b->d); qh4 = b->qh; qs = b->qs; }
        else { const ek_block_q5_1 *b = (const ek_block_q5_1 *)blk; *d = EK_H2F(b->d); *m = EK_H2F(b->m); qh4 = b->qh; qs = b->qs; }
        uint32_t qh;
        memcpy(&qh, qh4, 4);                 /* bit j: 5th bit of element j (little-endian) */
        int off = type == EK_Q5_0 ? 16 : 0;
        for (int j = 0; j < 16; j++) {
            q[j] = ((qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - off;
            q[j + 16] = ((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - off;
        }
        break;
    }
    case EK_Q8_0: {
        const ek_block_q8_0 *b = (const ek_block_q8_0 *)blk;
        *d = EK_H2F(b->d);
        for (int j = 0; j < 32; j++) q[j] = b->qs[j];
        break;
    }
    case EK_Q8_1: {
        const ek_block_q8_1 *b = (const ek_block_q8_1 *)blk;
        *d = EK_H2F(b->d);
        for (int j = 0; j < 32; j++) q[j] = b->qs[j];
        break;
    }
    case EK_IQ4_NL: {
        const ek_block_iq4_nl *b = (const ek_block_iq4_nl *)blk;
        *d = EK_H2F(b->d);
        for (int j = 0; j < 16; j++) { q[j] = ek_iq4nl_values[b->qs[j] & 0xF]; q[j + 16] = ek_iq4nl_values[b->qs[j] >> 4]; }
        break;
    }
    }
}

static int ek_has_min(int type) { return type == EK_Q4_1 || type == EK_Q5_1; }

int ek_type_supported(int type) {
    switch (type) {
    case EK_F32: case EK_F16: case EK_BF16: case EK_Q4_0: case EK_Q4_1: case EK_Q5_0:
    case EK_Q5_1: case EK_Q8_0: case EK_Q2_K: case EK_Q3_K: case EK_Q4_K: case EK_Q5_K:
    case EK_Q6_K: case EK_IQ4_NL: case EK_IQ4_XS:
        return 1;
    default:
        return 0;
    }
}

void ek_dequant_row(int type, const void *src, float *dst, int64_t n) {
    const uint8_t *p = (const uint8_t *)src;
    switch (type) {
    case EK_F32: memcpy(dst, src, (size_t)n * 4); return;
    case EK_F16:
        for (int64_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); dst[i] = ek_fp16_to_fp32(h); }
        return;
    case EK_BF16:
        for (int64_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); dst[i] = ek_bf16_to_fp32(h); }
        return;
    case EK_Q4_0: case EK_Q4_1: case EK_Q5_0: case EK_Q5_1: case EK_Q8_0: case EK_Q8_1: case EK_IQ4_NL: {
        int bs = ek_types[type].type_size, q[32];
        for (int64_t i = 0; i < n / 32; i++) {
            float d, m;
            ek_decode_block32(type, p + i * bs, q, &d, &m);
            /* as ggml: q * d, and + m only where there is one (keeps -0) */
            for (int j = 0; j < 32; j++) dst[i * 32 + j] = ek_has_min(type) ? q[j] * d + m : q[j] * d;
        }
        return;
    }
    case EK_Q8_K:
        for (int64_t i = 0; i < n / 256; i++) {
            const ek_block_q8_K *b = (const ek_block_q8_K *)(p + i * sizeof(ek_block_q8_K));
            for (int j = 0; j < 256; j++) dst[i * 256 + j] = b->d * b->qs[j];
        }
        return;
    default: {
        int bs = ek_types[type].type_size;
        ek_kblock kb;
        for (int64_t i = 0; i < n / 256; i++) {
            if (ek_decode_kblock(type, p + i * bs, &kb)) return;
            for (int j = 0; j < 256; j++) {
                int g = j / 16;
                dst[i * 256 + j] = kb.d * (float)kb.scale[g] * kb.q[j] - kb.dmin * (float)kb.min[g];
            }
        }
    }
    }
}

/* ---- reference quantizers (byte-identical to ggml's *_ref) ------------------- */

static void ek_quantize_q8_0_ref(const float *x, void *dst, int n) {
    ek_block_q8_0 *y = (ek_block_q8_0 *)dst;
    for (int i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        y[i].d = ek_fp32_to_fp16(d);
        for (int j = 0; j < 32; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void ek_quantize_q4_0_ref(const float *x, void *dst, int n) {
    ek_block_q4_0 *y = (ek_block_q4_0 *)dst;
    for (int i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f, max = 0.0f;       /* the value of largest magnitude, with its sign */
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -8, id = d ? 1.0f / d : 0.0f;
        y[i].d = ek_fp32_to_fp16(d);
        for (int j = 0; j < 16; j++) {
            int a = (int8_t)(x[j] * id + 8.5f), b = (int8_t)(x[j + 16] * id + 8.5f);
            a = a < 15 ? a : 15;
            b = b < 15 ? b : 15;
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

static void ek_quantize_q4_1_ref(const float *x, void *dst, int n) {
    ek_block_q4_1 *y = (ek_block_q4_1 *)dst;
    for (int i = 0; i < n / 32; i++, x += 32) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < 32; j++) { if (x[j] < min) min = x[j]; if (x[j] > max) max = x[j]; }
        const float d = (max - min) / ((1 << 4) - 1), id = d ? 1.0f / d : 0.0f;
        y[i].d = ek_fp32_to_fp16(d);
        y[i].m = ek_fp32_to_fp16(min);
        for (int j = 0; j < 16; j++) {
            int a = (int8_t)((x[j] - min) * id + 0.5f), b = (int8_t)((x[j + 16] - min) * id + 0.5f);
            a = a < 15 ? a : 15;
            b = b < 15 ? b : 15;
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

static void ek_quantize_q5_0_ref(const float *x, void *dst, int n) {
    ek_block_q5_0 *y = (ek_block_q5_0 *)dst;
    for (int i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -16, id = d ? 1.0f / d : 0.0f;
        y[i].d = ek_fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int a = (int8_t)(x[j] * id + 16.5f), b = (int8_t)(x[j + 16] * id + 16.5f);
            a = a < 31 ? a : 31;
            b = b < 31 ? b : 31;
            y[i].qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
            qh |= ((uint32_t)(a & 0x10) >> 4) << j;
            qh |= ((uint32_t)(b & 0x10) >> 4) << (j + 16);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

static void ek_quantize_q5_1_ref(const float *x, void *dst, int n) {
    ek_block_q5_1 *y = (ek_block_q5_1 *)dst;
    for (int i = 0; i < n / 32; i++, x += 32) {
        float min = x[0], max = x[0];
        for (int j = 1; j < 32; j++) { if (x[j] < min) min = x[j]; if (x[j] > max) max = x[j]; }
        const float d = (max - min) / ((1 << 5) - 1), id = d ? 1.0f / d : 0.0f;
        y[i].d = ek_fp32_to_fp16(d);
        y[i].m = ek_fp32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int a = (uint8_t)((x[j] - min) * id + 0.5f), b = (uint8_t)((x[j + 16] - min) * id + 0.5f);
            y[i].qs[j] = (uint8_t)((a & 0xF) | ((b & 0xF) << 4));
            qh |= ((uint32_t)(a & 0x10) >> 4) << j;
            qh |= ((uint32_t)(b & 0x10) >> 4) << (j + 16);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

/* Round to nearest, ties to even, as ggml's nearest_int (|f| < 2^22). */
static int ek_nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static void ek_quantize_q8_K_ref(const float *x, void *dst, int n) {
    ek_block_q8_K *y = (ek_block_q8_K *)dst;
    for (int i = 0; i < n / 256; i++, x += 256) {
        float max = 0, amax = 0;
        for (int j = 0; j < 256; j++)
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < 256; j++) {
            int v = ek_nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[g * 16 + l];
            y[i].bsums[g] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

/* ---- IQ4_NL / IQ4_XS: ggml's quantize_iq4_nl / quantize_iq4_xs without
 * importance weights (weights x^2), which is what llama-quantize writes
 * without an imatrix.  (ggml's quantize_row_iq4_nl_ref, a one-pass variant
 * that skips the scale search, is not what files contain.) */

/* The index of the table value nearest x (ties to the lower), as ggml's
 * best_index_int8. */
static int ek_iq4_nearest(float x) {
    const int8_t *v = ek_iq4nl_values;
    if (x <= v[0]) return 0;
    if (x >= v[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (x < v[mid]) hi = mid; else lo = mid;
    }
    return x - v[hi - 1] < v[hi] - x ? hi - 1 : hi;
}

/* sum w q x and sum w q^2 over a 32-block with its levels for scale 1/id */
static void ek_iq4_fit(const float *x, const float *w, float id, uint8_t *L, float *sumqx, float *sumq2) {
    float sx = 0, s2 = 0;
    for (int j = 0; j < 32; j++) {
        int l = ek_iq4_nearest(id * x[j]);
        if (L) L[j] = (uint8_t)l;
        float q = ek_iq4nl_values[l];
        sx += w[j] * q * x[j];
        s2 += w[j] * q * q;
    }
    *sumqx = sx;
    *sumq2 = s2;
}

/* The best scale of one 32-block: least squares on the levels of scale
 * max/127, then of the 15 scales max/(-127 + t) for t in -7..7; 0 for an
 * all-zero block. */
static float ek_iq4_block_scale(const float *x) {
    float w[32], amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        w[j] = x[j] * x[j];
        if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
    }
    if (amax < 1e-15f) return 0;
    const int8_t *v = ek_iq4nl_values;
    float d = -max / v[0], sumqx, sumq2;
    ek_iq4_fit(x, w, 1 / d, NULL, &sumqx, &sumq2);
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int t = -7; t <= 7; t++) {
        ek_iq4_fit(x, w, (t + v[0]) / max, NULL, &sumqx, &sumq2);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) { d = sumqx / sumq2; best = d * sumqx; }
    }
    return d;
}

/* the 32 levels of a block as 16 bytes: element j low, j + 16 high */
static void ek_iq4_pack(const float *x, float id, uint8_t *qs) {
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(ek_iq4_nearest(id * x[j]) | (ek_iq4_nearest(id * x[j + 16]) << 4));
}

static void ek_quantize_iq4_nl_ref(const float *x, void *dst, int n) {
    ek_block_iq4_nl *y = (ek_block_iq4_nl *)dst;
    for (int i = 0; i < n / 32; i++, x += 32) {
        const float d = ek_iq4_block_scale(x);
        y[i].d = ek_fp32_to_fp16(d);
        ek_iq4_pack(x, d ? 1 / d : 0, y[i].qs);
    }
}

/* iq4_xs: each sub-block's best scale as above, then one d = -(the scale of
 * largest magnitude) / 32 and 6-bit ls - 32 = nearest(scale / d) in -32..31;
 * levels again for d * (ls - 32), d in float (not its fp16). */
static void ek_quantize_iq4_xs_ref(const float *x, void *dst, int n) {
    ek_block_iq4_xs *y = (ek_block_iq4_xs *)dst;
    for (int i = 0; i < n / 256; i++, x += 256) {
        float sc[8], amax = 0, max = 0;
        for (int ib = 0; ib < 8; ib++) {
            sc[ib] = ek_iq4_block_scale(x + 32 * ib);
            if (fabsf(sc[ib]) > amax) { amax = fabsf(sc[ib]); max = sc[ib]; }
        }
        const float d = -max / 32, id = d ? 1 / d : 0.f;
        y[i].d = ek_fp32_to_fp16(d);
        y[i].scales_h = 0;
        memset(y[i].scales_l, 0, sizeof y[i].scales_l);
        for (int ib = 0; ib < 8; ib++) {
            int l = ek_nearest_int(id * sc[ib]);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            const float dl = d * l;
            ek_iq4_pack(x + 32 * ib, dl ? 1 / dl : 0.f, y[i].qs + 16 * ib);
            l += 32;
            y[i].scales_l[ib / 2] |= (uint8_t)((l & 0xF) << (4 * (ib % 2)));
            y[i].scales_h |= (uint16_t)((l >> 4) << (2 * ib));
        }
    }
}

/* ---- k-quants: ggml's quantize_row_qN_K_ref, which is what llama-quantize
 * writes without an importance matrix (its quantize_qN_K without weights
 * calls them).  Each superblock of 256 is fitted in groups (16 or 32
 * elements) whose scales (and mins) are then quantized to 4, 6 or 8 bits
 * against one fp16 superblock scale, and the elements re-fitted to the
 * rounded scales.  The float operations are ggml's, in ggml's order: a
 * reordered sum rounds differently and moves a level now and then. */

#define EK_GROUP_EPS 1e-15f   /* a group whose largest magnitude is below this is all zero */

static int ek_clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The value of largest magnitude, with its sign (0 for an empty group). */
static float ek_signed_absmax(const float *x, int n) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; }
    return max;
}

/* Signed levels l in [-nmax, nmax) of one group and its scale s (x ~ s l),
 * weighted by w = x^2: least squares on the levels of each of the 19
 * inverse scales -(nmax + 0.1 k) / max, k = -9..9, keeping the best fit
 * (ggml's make_qx_quants with rmse_type 1).  L[i] = l + nmax. */
static float ek_fit_signed(int n, int nmax, const float *x, int8_t *L) {
    const float max = ek_signed_absmax(x, n);
    if (fabsf(max) < EK_GROUP_EPS) { memset(L, 0, (size_t)n); return 0.f; }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = ek_clampi(ek_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = ek_clampi(ek_nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + ek_clampi(ek_nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* q3_K's group fit (16 elements, levels -4..3, w = x^2): start from the
 * levels of scale -max/4, then up to 5 passes that move single levels to
 * their least-squares value while the fit improves (ggml's make_q3_quants
 * with do_rmse).  L[i] = l + 4. */
static float ek_fit_q3(const float *x, int8_t *L) {
    enum { N = 16, NMAX = 4 };
    const float max = ek_signed_absmax(x, N);
    if (fabsf(max) < EK_GROUP_EPS) { memset(L, 0, N); return 0.f; }
    const float iscale = -NMAX / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < N; i++) {
        int l = ek_clampi(ek_nearest_int(iscale * x[i]), -NMAX, NMAX - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < N; i++) {
            float w = x[i] * x[i], slx = sumlx - w * x[i] * L[i];
            if (slx <= 0) continue;
            float sl2 = suml2 - w * L[i] * L[i];
            int new_l = ek_clampi(ek_nearest_int(x[i] * sl2 / slx), -NMAX, NMAX - 1);
            if (new_l == L[i]) continue;
            slx += w * x[i] * new_l;
            sl2 += w * new_l * new_l;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)new_l;
                sumlx = slx;
                suml2 = sl2;
                n_changed++;
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < N; i++) L[i] = (int8_t)(L[i] + NMAX);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Levels 0..nmax of one group (n <= 32) with a scale and a min (x ~ s l - m,
 * m >= 0 returned in *the_min): the levels of the range's scale, then of
 * nstep + 1 scales (rmin + rdelta k + nmax) / range, each refitted by
 * weighted least squares (scale and min together), keeping the smallest
 * weighted error, squared or absolute (use_mad) (ggml's make_qkx2_quants). */
static float ek_fit_affine(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                           float rmin, float rdelta, int nstep, int use_mad) {
    uint8_t Laux[32];
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best_error = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)ek_clampi(ek_nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += w[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = ek_clampi(ek_nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D <= 0) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float cur_error = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * Laux[i] + this_min - x[i];
            diff = use_mad ? fabsf(diff) : diff * diff;
            cur_error += w[i] * diff;
        }
        if (cur_error < best_error) {
            memcpy(L, Laux, (size_t)n);
            best_error = cur_error;
            scale = this_scale;
            min = this_min;
        }
    }
    *the_min = -min;
    return scale;
}

/* 2-bit fields of 256 levels as q2_K / q3_K store them: byte l of each
 * 32-byte half holds elements l, l+32, l+64, l+96 of its 128. */
static void ek_pack_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < 256; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

static void ek_quantize_q2_K_ref(const float *x, void *dst, int n) {
    ek_block_q2_K *y = (ek_block_q2_K *)dst;
    const float q4scale = 15.f;
    uint8_t L[256];
    float w[16], mins[16], scales[16];
    for (int i = 0; i < n / 256; i++, x += 256) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) w[l] = fabsf(x[16 * j + l]);
            scales[j] = ek_fit_affine(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, 1);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        memset(y[i].scales, 0, 16);
        y[i].d = ek_fp32_to_fp16(0.f);
        y[i].dmin = ek_fp32_to_fp16(0.f);
        if (max_scale > 0) {   /* scales in the low nibbles */
            const float iscale = q4scale / max_scale;
            for (int j = 0; j < 16; j++) y[i].scales[j] = (uint8_t)ek_nearest_int(iscale * scales[j]);
            y[i].d = ek_fp32_to_fp16(max_scale / q4scale);
        }
        if (max_min > 0) {     /* mins in the high nibbles */
            const float iscale = q4scale / max_min;
            for (int j = 0; j < 16; j++)
                y[i].scales[j] |= (uint8_t)((unsigned)ek_nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = ek_fp32_to_fp16(max_min / q4scale);
        }
        for (int j = 0; j < 16; j++) {
            const float d = EK_H2F(y[i].d) * (y[i].scales[j] & 0xF);
            if (!d) continue;
            const float dm = EK_H2F(y[i].dmin) * (y[i].scales[j] >> 4);
            for (int ii = 0; ii < 16; ii++)
                L[16 * j + ii] = (uint8_t)ek_clampi(ek_nearest_int((x[16 * j + ii] + dm) / d), 0, 3);
        }
        ek_pack_2bit(L, y[i].qs);
    }
}

static void ek_quantize_q3_K_ref(const float *x, void *dst, int n) {
    ek_block_q3_K *y = (ek_block_q3_K *)dst;
    int8_t L[256];
    float scales[16];
    for (int i = 0; i < n / 256; i++, x += 256) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = ek_fit_q3(x + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > amax) { amax = fabsf(scales[j]); max_scale = scales[j]; }
        }
        /* 6-bit scales (stored + 32): low nibbles in bytes 0..7, top 2 bits in 8..11 */
        memset(y[i].scales, 0, 12);
        if (max_scale) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; j++) {
                int l = ek_clampi((int8_t)ek_nearest_int(iscale * scales[j]), -32, 31) + 32;
                if (j < 8) y[i].scales[j] = (uint8_t)(l & 0xF);
                else y[i].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
                y[i].scales[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
            }
            y[i].d = ek_fp32_to_fp16(1 / iscale);
        } else {
            y[i].d = ek_fp32_to_fp16(0.f);
        }
        for (int j = 0; j < 16; j++) {
            int sc = j < 8 ? y[i].scales[j] & 0xF : y[i].scales[j - 8] >> 4;
            sc = (sc | (((y[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
            const float d = EK_H2F(y[i].d) * sc;
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++)
                L[16 * j + ii] = (int8_t)(ek_clampi(ek_nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
        }
        /* the high bit of element j goes to bit j / 32 of hmask[j % 32] */
        memset(y[i].hmask, 0, 32);
        uint8_t low[256];
        for (int j = 0; j < 256; j++) {
            if (L[j] > 3) y[i].hmask[j % 32] |= (uint8_t)(1 << (j / 32));
            low[j] = (uint8_t)(L[j] > 3 ? L[j] - 4 : L[j]);
        }
        ek_pack_2bit(low, y[i].qs);
    }
}

/* q4_K / q5_K: 8 groups of 32 with a scale and a min each, both quantized
 * to 6 bits against the superblock's d and dmin, packed as ek_scale_min_k4
 * reads them. */
static void ek_fit_k_superblock(const float *x, int nmax, float rmin, int nstep, uint16_t *d, uint16_t *dmin,
                                uint8_t scales_out[12], uint8_t L[256]) {
    float w[32], mins[8], scales[8], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xj = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xj[l] * xj[l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(xj[l]);
        scales[j] = ek_fit_affine(32, nmax, xj, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep, 0);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)ek_nearest_int(inv_scale * scales[j]), lm = (uint8_t)ek_nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales_out[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales_out[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d = ek_fp32_to_fp16(max_scale / 63.f);
    *dmin = ek_fp32_to_fp16(max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        ek_scale_min_k4(j, scales_out, &sc, &m);
        const float dj = EK_H2F(*d) * sc;
        if (!dj) continue;
        const float dm = EK_H2F(*dmin) * m;
        for (int ii = 0; ii < 32; ii++)
            L[32 * j + ii] = (uint8_t)ek_clampi(ek_nearest_int((x[32 * j + ii] + dm) / dj), 0, nmax);
    }
}

static void ek_quantize_q4_K_ref(const float *x, void *dst, int n) {
    ek_block_q4_K *y = (ek_block_q4_K *)dst;
    uint8_t L[256];
    for (int i = 0; i < n / 256; i++, x += 256) {
        ek_fit_k_superblock(x, 15, -1.f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        /* 64 elements per 32 bytes: the first 32 in the low nibbles */
        for (int j = 0; j < 256; j += 64)
            for (int l = 0; l < 32; l++) y[i].qs[j / 2 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void ek_quantize_q5_K_ref(const float *x, void *dst, int n) {
    ek_block_q5_K *y = (ek_block_q5_K *)dst;
    uint8_t L[256];
    for (int i = 0; i < n / 256; i++, x += 256) {
        ek_fit_k_superblock(x, 31, -0.5f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        /* low 4 bits as q4_K; bit 4 of elements c*64 + l and c*64 + 32 + l in
         * bits 2c and 2c+1 of qh[l] */
        memset(y[i].qh, 0, 32);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                int l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
                if (l1 > 15) { l1 -= 16; y[i].qh[l] |= (uint8_t)(1 << (2 * c)); }
                if (l2 > 15) { l2 -= 16; y[i].qh[l] |= (uint8_t)(2 << (2 * c)); }
                y[i].qs[32 * c + l] = (uint8_t)(l1 | (l2 << 4));
            }
    }
}

static void ek_quantize_q6_K_ref(const float *x, void *dst, int n) {
    ek_block_q6_K *y = (ek_block_q6_K *)dst;
    int8_t L[256];
    float scales[16];
    for (int i = 0; i < n / 256; i++, x += 256) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < 16; ib++) {
            scales[ib] = ek_fit_signed(16, 32, x + 16 * ib, L + 16 * ib);
            if (fabsf(scales[ib]) > max_abs_scale) { max_abs_scale = fabsf(scales[ib]); max_scale = scales[ib]; }
        }
        if (max_abs_scale < EK_GROUP_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = ek_fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < 16; ib++) {
            int s = ek_nearest_int(iscale * scales[ib]);
            y[i].scales[ib] = (int8_t)(s < 127 ? s : 127);
        }
        for (int j = 0; j < 16; j++) {
            const float d = EK_H2F(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++)
                L[16 * j + ii] = (int8_t)(ek_clampi(ek_nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
        }
        /* per 128: low nibbles of l, l+64 in ql[l], of l+32, l+96 in ql[l+32];
         * the top 2 bits of all four in qh[l] */
        for (int h = 0; h < 2; h++) {
            const int8_t *Lh = L + 128 * h;
            uint8_t *ql = y[i].ql + 64 * h, *qh = y[i].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
                qh[l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) |
                                  ((Lh[l + 96] >> 4) << 6));
            }
        }
    }
}

int ek_quantize_row(int type, const float *src, void *dst, int64_t n) {
    const ek_type_info *t = ek_type_get(type);
    if (!t || n % t->block_size) return -1;
    uint8_t *p = (uint8_t *)dst;
    switch (type) {
    case EK_F32: memcpy(dst, src, (size_t)n * 4); return 0;
    case EK_F16:
        for (int64_t i = 0; i < n; i++) { uint16_t h = ek_fp32_to_fp16(src[i]); memcpy(p + 2 * i, &h, 2); }
        return 0;
    case EK_BF16:
        for (int64_t i = 0; i < n; i++) { uint16_t h = ek_fp32_to_bf16(src[i]); memcpy(p + 2 * i, &h, 2); }
        return 0;
    case EK_Q4_0: ek_quantize_q4_0_ref(src, dst, (int)n); return 0;
    case EK_Q4_1: ek_quantize_q4_1_ref(src, dst, (int)n); return 0;
    case EK_Q5_0: ek_quantize_q5_0_ref(src, dst, (int)n); return 0;
    case EK_Q5_1: ek_quantize_q5_1_ref(src, dst, (int)n); return 0;
    case EK_Q8_0: ek_quantize_q8_0_ref(src, dst, (int)n); return 0;
    case EK_Q8_K: ek_quantize_q8_K_ref(src, dst, (int)n); return 0;
    case EK_IQ4_NL: ek_quantize_iq4_nl_ref(src, dst, (int)n); return 0;
    case EK_IQ4_XS: ek_quantize_iq4_xs_ref(src, dst, (int)n); return 0;
    case EK_Q2_K: ek_quantize_q2_K_ref(src, dst, (int)n); return 0;
    case EK_Q3_K: ek_quantize_q3_K_ref(src, dst, (int)n); return 0;
    case EK_Q4_K: ek_quantize_q4_K_ref(src, dst, (int)n); return 0;
    case EK_Q5_K: ek_quantize_q5_K_ref(src, dst, (int)n); return 0;
    case EK_Q6_K: ek_quantize_q6_K_ref(src, dst, (int)n); return 0;
    default: return -1;
    }
}

/* ---- activations --------------------------------------------------------------- */

int ek_act_type(int wtype) {
    switch (wtype) {
    case EK_F32: case EK_F16: case EK_BF16: return EK_F32;
    case EK_Q4_0: case EK_Q4_1: case EK_Q5_0: case EK_Q5_1: case EK_Q8_0: case EK_IQ4_NL: return EK_Q8_0;
    case EK_Q2_K: case EK_Q3_K: case EK_Q4_K: case EK_Q5_K: case EK_Q6_K: case EK_IQ4_XS: return EK_Q8_K;
    default: return -1;
    }
}

size_t ek_act_row_bytes(int wtype, int n) {
    int at = ek_act_type(wtype);
    return at < 0 ? 0 : (size_t)ek_row_bytes(at, (uint64_t)n);
}

void ek_convert_act(const ek_kernels *k, int wtype, const float *x, void *xa, int n) {
    const ek_kernels *s = ek_kernels_scalar();
    switch (ek_act_type(wtype)) {
    case EK_F32: if (x != xa) memcpy(xa, x, (size_t)n * 4); break;
    case EK_Q8_0: (k->quantize_q8_0 ? k->quantize_q8_0 : s->quantize_q8_0)(x, xa, n); break;
    case EK_Q8_K: (k->quantize_q8_K ? k->quantize_q8_K : s->quantize_q8_K)(x, xa, n); break;
    default: break;
    }
}

/* 1 if set k runs an nb-row batch of wtype on bf16 tiles */
static int ek_bf16_tiles(const ek_kernels *k, int wtype, int nb) {
    return (wtype == EK_F16 || wtype == EK_BF16) && k && k->bf16_tiles_min_nb && k->convert_bf16_tiles &&
           nb >= k->bf16_tiles_min_nb;
}

size_t ek_batch_bytes(const ek_kernels *k, int wtype, int n, int nb) {
    if (nb <= 0 || n <= 0) return 0;
    /* tile batches: 32-row pairs of groups x 32-column steps x (high, low) bf16 */
    if (ek_bf16_tiles(k, wtype, nb)) return (size_t)((nb + 31) / 32 * 32) * (size_t)((n + 31) / 32 * 32) * 4;
    return (size_t)nb * ek_act_row_bytes(wtype, n);
}

void ek_convert_batch(const ek_kernels *k, int wtype, const float *x, int nb, void *xa, int n) {
    if (ek_bf16_tiles(k, wtype, nb)) {
        k->convert_bf16_tiles(x, nb, xa, n);
        return;
    }
    const size_t row = ek_act_row_bytes(wtype, n);
    for (int b = 0; b < nb; b++) ek_convert_act(k, wtype, x + (size_t)b * n, (char *)xa + (size_t)b * row, n);
}

/* ---- scalar dot products ---------------------------------------------------------
 * One weight row (of its type) with one converted activation row. */

static float ek_dot_f32_scalar(const float *w, const float *x, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += w[i] * x[i];
    return s;
}

static float ek_vdot_f32(const void *w, const void *x, int n) { return ek_dot_f32_scalar((const float *)w, (const float *)x, n); }

static float ek_vdot_f16(const void *w, const void *x, int n) {
    const uint8_t *p = (const uint8_t *)w;
    const float *xf = (const float *)x;
    float s = 0.0f;
    for (int i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); s += ek_fp16_to_fp32(h) * xf[i]; }
    return s;
}

static float ek_vdot_bf16(const void *w, const void *x, int n) {
    const uint8_t *p = (const uint8_t *)w;
    const float *xf = (const float *)x;
    float s = 0.0f;
    for (int i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); s += ek_bf16_to_fp32(h) * xf[i]; }
    return s;
}

/* Legacy 32-blocks against Q8_0 activations: per block an exact integer dot,
 * then sum += (d_w * d_x) * isum (+ m_w * d_x * sum(q_x) for the types with
 * a min). */
static float ek_block32_step(int type, const void *wblk, const ek_block_q8_0 *xb, float s) {
    int q[32];
    float d, m;
    ek_decode_block32(type, wblk, q, &d, &m);
    int isum = 0, xsum = 0;
    for (int j = 0; j < 32; j++) { isum += q[j] * xb->qs[j]; xsum += xb->qs[j]; }
    float dx = EK_H2F(xb->d);
    s += d * dx * (float)isum;
    if (m != 0.0f) s += m * dx * (float)xsum;
    return s;
}

static float ek_vdot_block32(int type, const void *w, const void *x, int n) {
    const uint8_t *wp = (const uint8_t *)w;
    const ek_block_q8_0 *xb = (const ek_block_q8_0 *)x;
    int bs = ek_types[type].type_size;
    float s = 0.0f;
    for (int i = 0; i < n / 32; i++) s = ek_block32_step(type, wp + i * bs, xb + i, s);
    return s;
}
static float ek_vdot_q4_0(const void *w, const void *x, int n) { return ek_vdot_block32(EK_Q4_0, w, x, n); }
static float ek_vdot_q4_1(const void *w, const void *x, int n) { return ek_vdot_block32(EK_Q4_1, w, x, n); }
static float ek_vdot_q5_0(const void *w, const void *x, int n) { return ek_vdot_block32(EK_Q5_0, w, x, n); }
static float ek_vdot_q5_1(const void *w, const void *x, int n) { return ek_vdot_block32(EK_Q5_1, w, x, n); }
static float ek_vdot_q8_0(const void *w, const void *x, int n) { return ek_vdot_block32(EK_Q8_0, w, x, n); }
/* (d_w * d_x) * isum per block, as ggml's ggml_vec_dot_iq4_nl_q8_0 */
static float ek_vdot_iq4_nl(const void *w, const void *x, int n) { return ek_vdot_block32(EK_IQ4_NL, w, x, n); }

/* k-quants against Q8_K activations: per block
 *   d_x * (d * sum_g scale_g * dot_g(q, q_x) - dmin * sum_g min_g * bsum_g). */
static float ek_vdot_kquant_strided(int type, const void *w, size_t stride, const void *x, int n) {
    const uint8_t *wp = (const uint8_t *)w;
    const ek_block_q8_K *xb = (const ek_block_q8_K *)x;
    ek_kblock kb;
    float s = 0.0f;
    for (int i = 0; i < n / 256; i++) {
        ek_decode_kblock(type, wp + (size_t)i * stride, &kb);
        int isum = 0, msum = 0;
        for (int g = 0; g < 16; g++) {
            int gs = 0;
            for (int l = 0; l < 16; l++) gs += kb.q[g * 16 + l] * xb[i].qs[g * 16 + l];
            isum += kb.scale[g] * gs;
            msum += kb.min[g] * xb[i].bsums[g];
        }
        s += xb[i].d * (kb.d * (float)isum - kb.dmin * (float)msum);
    }
    return s;
}
/* superblock i of row w at w + i * stride (the block size as stored) */
static float ek_vdot_kquant(int type, const void *w, const void *x, int n) {
    return ek_vdot_kquant_strided(type, w, (size_t)ek_types[type].type_size, x, n);
}
static float ek_vdot_q2_K(const void *w, const void *x, int n) { return ek_vdot_kquant(EK_Q2_K, w, x, n); }
static float ek_vdot_q3_K(const void *w, const void *x, int n) { return ek_vdot_kquant(EK_Q3_K, w, x, n); }
static float ek_vdot_q4_K(const void *w, const void *x, int n) { return ek_vdot_kquant(EK_Q4_K, w, x, n); }
static float ek_vdot_q5_K(const void *w, const void *x, int n) { return ek_vdot_kquant(EK_Q5_K, w, x, n); }
static float ek_vdot_q6_K(const void *w, const void *x, int n) { return ek_vdot_kquant(EK_Q6_K, w, x, n); }
/* iq4_xs: the superblock's integer sum of (ls - 32) * dot over its 8
 * sub-blocks, scaled once (ggml's generic kernel scales each sub-block in
 * float; the two agree to float rounding) */
static float ek_vdot_iq4_xs(const void *w, const void *x, int n) { return ek_vdot_kquant(EK_IQ4_XS, w, x, n); }

typedef float (*ek_vdot_fn)(const void *w, const void *x, int n);

static void ek_matmul_rows(ek_vdot_fn dot, int wtype, const void *W, int n, const void *X, int nb,
                           float *Y, int ldy, int r0, int r1) {
    size_t wrow = (size_t)ek_row_bytes(wtype, (uint64_t)n), xrow = ek_act_row_bytes(wtype, n);
    for (int r = r0; r < r1; r++)
        for (int b = 0; b < nb; b++)
            Y[(size_t)b * ldy + r] = dot((const uint8_t *)W + (size_t)r * wrow, (const uint8_t *)X + (size_t)b * xrow, n);
}

#define EK_SCALAR_MATMUL(T, TYPE)                                                        \
    static void ek_matmul_##T##_scalar(const void *W, int n, const void *X, int nb,       \
                                       float *Y, int ldy, int r0, int r1) {               \
        ek_matmul_rows(ek_vdot_##T, TYPE, W, n, X, nb, Y, ldy, r0, r1);                   \
    }
EK_SCALAR_MATMUL(f32, EK_F32)
EK_SCALAR_MATMUL(f16, EK_F16)
EK_SCALAR_MATMUL(bf16, EK_BF16)
EK_SCALAR_MATMUL(q4_0, EK_Q4_0)
EK_SCALAR_MATMUL(q4_1, EK_Q4_1)
EK_SCALAR_MATMUL(q5_0, EK_Q5_0)
EK_SCALAR_MATMUL(q5_1, EK_Q5_1)
EK_SCALAR_MATMUL(q8_0, EK_Q8_0)
EK_SCALAR_MATMUL(q2_K, EK_Q2_K)
EK_SCALAR_MATMUL(q3_K, EK_Q3_K)
EK_SCALAR_MATMUL(q4_K, EK_Q4_K)
EK_SCALAR_MATMUL(q5_K, EK_Q5_K)
EK_SCALAR_MATMUL(q6_K, EK_Q6_K)
EK_SCALAR_MATMUL(iq4_nl, EK_IQ4_NL)
EK_SCALAR_MATMUL(iq4_xs, EK_IQ4_XS)

/* ---- packed weights (layout in kernels.h) ------------------------------------------- */

/* the types packed as whole superblocks: the k-quants and IQ4_XS */
static int ek_packs_superblocks(int wtype) {
    return wtype == EK_Q2_K || wtype == EK_Q3_K || wtype == EK_Q4_K || wtype == EK_Q5_K || wtype == EK_Q6_K ||
           wtype == EK_IQ4_XS;
}
static int ek_packable_type(int wtype) { return wtype == EK_Q4_0 || wtype == EK_Q8_0 || ek_packs_superblocks(wtype); }

/* k-quants, IQ4_XS: where, in a packed group, row j's superblock k is */
static size_t ek_packed_kblock_at(int bs, int k, int j) { return ((size_t)k * EK_PACK_ROWS + j) * bs; }

/* Where, in a packed group of nblk blocks of q quant bytes, row j's block k
 * keeps its fp16 scale and its dword m of quants (the layout of kernels.h). */
static size_t ek_packed_scale_at(int q, int nblk, int k, int j) {
    return (size_t)nblk * EK_PACK_ROWS * q + (size_t)k * 2 * EK_PACK_ROWS + 2 * j;
}
static size_t ek_packed_dword_at(int q, int k, int m, int j) {
    return ((size_t)k * q / 4 + m) * 4 * EK_PACK_ROWS + 4 * j;
}

/* Block k of row j of the packed group G, rebuilt as the file stores it. */
static void ek_packed_block(int wtype, const uint8_t *G, int nblk, int k, int j, uint8_t *blk) {
    const int q = ek_types[wtype].type_size - 2;
    memcpy(blk, G + ek_packed_scale_at(q, nblk, k, j), 2);
    for (int m = 0; m < q / 4; m++) memcpy(blk + 2 + 4 * m, G + ek_packed_dword_at(q, k, m, j), 4);
}

size_t ek_pack_scratch_bytes(int wtype, int n) {
    return ek_packable_type(wtype) ? (size_t)ek_row_bytes(wtype, (uint64_t)n) * EK_PACK_ROWS : 0;
}

int ek_pack_rows(int wtype, void *W, int n, int rows, void *scratch) {
    const size_t wrow = (size_t)ek_row_bytes(wtype, (uint64_t)n);
    if (!ek_packable_type(wtype) || !wrow || rows < 0 || rows % EK_PACK_ROWS) return -1;
    const int nblk = n / 32, q = ek_types[wtype].type_size - 2, bs = ek_types[wtype].type_size;
    for (int g = 0; g < rows / EK_PACK_ROWS; g++) {
        uint8_t *G = (uint8_t *)W + (size_t)g * EK_PACK_ROWS * wrow;
        const uint8_t *R = (const uint8_t *)scratch;
        memcpy(scratch, G, EK_PACK_ROWS * wrow);
        if (ek_packs_superblocks(wtype)) {
            for (int j = 0; j < EK_PACK_ROWS; j++)
                for (int k = 0; k < n / 256; k++)
                    memcpy(G + ek_packed_kblock_at(bs, k, j), R + (size_t)j * wrow + (size_t)k * bs, bs);
            continue;
        }
        for (int j = 0; j < EK_PACK_ROWS; j++)
            for (int k = 0; k < nblk; k++) {
                const uint8_t *blk = R + (size_t)j * wrow + (size_t)k * bs;
                memcpy(G + ek_packed_scale_at(q, nblk, k, j), blk, 2);
                for (int m = 0; m < q / 4; m++) memcpy(G + ek_packed_dword_at(q, k, m, j), blk + 2 + 4 * m, 4);
            }
    }
    return 0;
}

/* The reference: each block rebuilt, then the same steps as ek_vdot_block32. */
static void ek_matmul_packed_scalar(int wtype, const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                    int r0, int r1) {
    const size_t wrow = (size_t)ek_row_bytes(wtype, (uint64_t)n), xrow = ek_act_row_bytes(wtype, n);
    const int nblk = n / 32;
    uint8_t blk[34];
    for (int r = r0; r < r1; r++) {
        const uint8_t *G = (const uint8_t *)W + (size_t)(r / EK_PACK_ROWS) * EK_PACK_ROWS * wrow;
        for (int b = 0; b < nb; b++) {
            const ek_block_q8_0 *xb = (const ek_block_q8_0 *)((const uint8_t *)X + (size_t)b * xrow);
            float s = 0.0f;
            for (int k = 0; k < nblk; k++) {
                ek_packed_block(wtype, G, nblk, k, r % EK_PACK_ROWS, blk);
                s = ek_block32_step(wtype, blk, xb + k, s);
            }
            Y[(size_t)b * ldy + r] = s;
        }
    }
}
/* k-quants, IQ4_XS: row r's superblocks are 16 blocks apart in its group */
static void ek_matmul_kquant_packed_scalar(int wtype, const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                           int r0, int r1) {
    const size_t wrow = (size_t)ek_row_bytes(wtype, (uint64_t)n), xrow = ek_act_row_bytes(wtype, n);
    const int bs = ek_types[wtype].type_size;
    for (int r = r0; r < r1; r++) {
        const uint8_t *G = (const uint8_t *)W + (size_t)(r / EK_PACK_ROWS) * EK_PACK_ROWS * wrow;
        for (int b = 0; b < nb; b++)
            Y[(size_t)b * ldy + r] = ek_vdot_kquant_strided(wtype, G + ek_packed_kblock_at(bs, 0, r % EK_PACK_ROWS),
                                                            (size_t)EK_PACK_ROWS * bs,
                                                            (const uint8_t *)X + (size_t)b * xrow, n);
    }
}
#define EK_PACKED_SCALAR(T, TYPE, FN)                                                                         \
    static void ek_matmul_##T##_packed_scalar(const void *W, int n, const void *X, int nb, float *Y, int ldy, \
                                              int r0, int r1) {                                               \
        FN(TYPE, W, n, X, nb, Y, ldy, r0, r1);                                                                \
    }
EK_PACKED_SCALAR(q4_0, EK_Q4_0, ek_matmul_packed_scalar)
EK_PACKED_SCALAR(q8_0, EK_Q8_0, ek_matmul_packed_scalar)
EK_PACKED_SCALAR(q2_K, EK_Q2_K, ek_matmul_kquant_packed_scalar)
EK_PACKED_SCALAR(q3_K, EK_Q3_K, ek_matmul_kquant_packed_scalar)
EK_PACKED_SCALAR(q4_K, EK_Q4_K, ek_matmul_kquant_packed_scalar)
EK_PACKED_SCALAR(q5_K, EK_Q5_K, ek_matmul_kquant_packed_scalar)
EK_PACKED_SCALAR(q6_K, EK_Q6_K, ek_matmul_kquant_packed_scalar)
EK_PACKED_SCALAR(iq4_xs, EK_IQ4_XS, ek_matmul_kquant_packed_scalar)

/* ---- scalar vector ops ------------------------------------------------------------ */

static void ek_rmsnorm_scalar(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0.0;                         /* as ggml: sum of squares in double */
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

static void ek_geglu_scalar(float *gate, const float *up, int n);

static void ek_swiglu_scalar(float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void ek_add_scalar(float *y, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += x[i];
}

static float ek_dot_f16_scalar(const float *q, const uint16_t *k, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += q[i] * ek_fp16_to_fp32(k[i]);
    return s;
}

static void ek_axpy_f32_scalar(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static void ek_axpy_f16_scalar(float *y, float a, const uint16_t *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * ek_fp16_to_fp32(x[i]);
}

static void ek_store_f16_scalar(uint16_t *dst, const float *src, int n) {
    for (int i = 0; i < n; i++) dst[i] = ek_fp32_to_fp16(src[i]);
}

static const ek_kernels ek_scalar_set = {
    .name = "scalar",
    .matmul = EK_MATMULS(ek_matmul_f32_scalar, ek_matmul_f16_scalar, ek_matmul_q4_0_scalar,
                         ek_matmul_q4_1_scalar, ek_matmul_q5_0_scalar, ek_matmul_q5_1_scalar,
                         ek_matmul_q8_0_scalar, ek_matmul_q2_K_scalar, ek_matmul_q3_K_scalar,
                         ek_matmul_q4_K_scalar, ek_matmul_q5_K_scalar, ek_matmul_q6_K_scalar,
                         ek_matmul_iq4_nl_scalar, ek_matmul_iq4_xs_scalar, ek_matmul_bf16_scalar),
    .matmul_packed = EK_MATMULS(NULL, NULL, ek_matmul_q4_0_packed_scalar, NULL, NULL, NULL,
                                ek_matmul_q8_0_packed_scalar, ek_matmul_q2_K_packed_scalar,
                                ek_matmul_q3_K_packed_scalar, ek_matmul_q4_K_packed_scalar,
                                ek_matmul_q5_K_packed_scalar, ek_matmul_q6_K_packed_scalar,
                                NULL, ek_matmul_iq4_xs_packed_scalar, NULL),
    .quantize_q8_0 = ek_quantize_q8_0_ref,
    .quantize_q8_K = ek_quantize_q8_K_ref,
    .rmsnorm = ek_rmsnorm_scalar,
    .swiglu = ek_swiglu_scalar,
    .geglu = ek_geglu_scalar,
    .add = ek_add_scalar,
    .dot_f32 = ek_dot_f32_scalar,
    .dot_f16 = ek_dot_f16_scalar,
    .axpy_f32 = ek_axpy_f32_scalar,
    .axpy_f16 = ek_axpy_f16_scalar,
    .store_f16 = ek_store_f16_scalar,
    .kv_scores_f16 = NULL, .kv_mix_f16 = NULL,
    .bf16_tiles_min_nb = 0, .convert_bf16_tiles = NULL,
};

/* ---- kernel sets and dispatch ------------------------------------------------------ */

const ek_kernels *ek_kernels_scalar(void) { return &ek_scalar_set; }

int ek_kernels_available(const ek_kernels **out, int cap) {
    const ek_kernels *all[8];
    int n = 0;
    all[n++] = &ek_scalar_set;
#if defined(__x86_64__) || defined(_M_X64)
    if (ekx_kernels_avx2()) all[n++] = ekx_kernels_avx2();
    if (ekx_kernels_avx512()) all[n++] = ekx_kernels_avx512();
    if (ekx_kernels_amx()) all[n++] = ekx_kernels_amx();
#endif
#if defined(__aarch64__)
    if (eka_kernels_neon()) all[n++] = eka_kernels_neon();
    if (eka_kernels_neon_dotprod()) all[n++] = eka_kernels_neon_dotprod();
#endif
    for (int i = 0; i < n && i < cap; i++) out[i] = all[i];
    return n;
}

const ek_kernels *ek_kernels_best(void) {
    const ek_kernels *all[8];
    int n = ek_kernels_available(all, 8);
    return all[n - 1];
}

const char *ek_kernels_name(const ek_kernels *k) { return k ? k->name : "none"; }

/* Every set ember has on some machine: one list, for names and messages. */
static const char *const ek_set_names[] = {"scalar", "avx2", "avx512", "amx", "neon", "neon_dotprod"};

const ek_kernels *ek_kernels_find(const char *name, int *known) {
    if (known) *known = 1;
    if (!name || !*name || !strcmp(name, "auto")) return ek_kernels_best();
    const ek_kernels *all[8];
    int n = ek_kernels_available(all, 8);
    for (int i = 0; i < n; i++)
        if (!strcmp(all[i]->name, name)) return all[i];
    if (known) {
        *known = 0;
        for (size_t i = 0; i < sizeof ek_set_names / sizeof ek_set_names[0]; i++)
            if (!strcmp(ek_set_names[i], name)) *known = 1;
    }
    return NULL;
}

/* The kernel of set k, or the scalar one where k has none. */
#define EK_PICK(k, field) ((k) && (k)->field ? (k)->field : ek_scalar_set.field)

void ek_matmul(const ek_kernels *k, int wtype, const void *W, int n, const void *X, int nb,
               float *Y, int ldy, int r0, int r1) {
    if (wtype < 0 || wtype >= EK_TYPE_COUNT || r0 >= r1 || nb <= 0) return;
    ek_matmul_fn f = EK_PICK(k, matmul[wtype]);
    if (f) f(W, n, X, nb, Y, ldy, r0, r1);
}

int ek_pack_wanted(const ek_kernels *k, int wtype, int rows) {
    return k && k != &ek_scalar_set && ek_packable_type(wtype) && k->matmul_packed[wtype] && rows > 0 &&
           rows % EK_PACK_ROWS == 0;
}

void ek_matmul_packed(const ek_kernels *k, int wtype, const void *W, int n, const void *X, int nb,
                      float *Y, int ldy, int r0, int r1) {
    if (!ek_packable_type(wtype) || r0 >= r1 || nb <= 0 || r0 % EK_PACK_ROWS || r1 % EK_PACK_ROWS) return;
    EK_PICK(k, matmul_packed[wtype])(W, n, X, nb, Y, ldy, r0, r1);
}

void ek_rmsnorm(const ek_kernels *k, float *out, const float *x, const float *weight, int n, float eps) {
    EK_PICK(k, rmsnorm)(out, x, weight, n, eps);
}

void ek_softmax(float *x, int n) {
    if (n <= 0) return;
    float max = x[0];
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void ek_swiglu(const ek_kernels *k, float *gate, const float *up, int n) { EK_PICK(k, swiglu)(gate, up, n); }
void ek_add(const ek_kernels *k, float *y, const float *x, int n) { EK_PICK(k, add)(y, x, n); }

/* GELU with the tanh approximation (gelu_pytorch_tanh), in float.  ggml
 * looks the value up in a table of fp16 inputs instead, so llama.cpp's
 * GELU differs from this (and from Hugging Face's) by up to ~2^-11
 * relative; ember follows the model's definition. */
static float ek_gelu_tanh(float x) {
    const float c = 0.7978845608028654f;    /* sqrt(2 / pi) */
    return 0.5f * x * (1.0f + tanhf(c * x * (1.0f + 0.044715f * x * x)));
}

static void ek_geglu_scalar(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) gate[i] = ek_gelu_tanh(gate[i]) * up[i];
}

void ek_geglu(const ek_kernels *k, float *gate, const float *up, int n) { EK_PICK(k, geglu)(gate, up, n); }

void ek_softcap(float *x, int n, float cap) {
    const float inv = 1.0f / cap;
    for (int i = 0; i < n; i++) x[i] = tanhf(x[i] * inv) * cap;
}

void ek_scale(float *x, int n, float s) {
    for (int i = 0; i < n; i++) x[i] *= s;
}

/* As llama.cpp's rope: theta starts at pos and is multiplied by
 * freq_base^(-2/n_rot) once per pair, in float, then divided by the pair's
 * factor and multiplied by freq_scale, so the angles match ggml's to the
 * last bit. */
void ek_rope(float *x, int n_heads, int head_dim, int pos, const ek_rope_params *p) {
    const int n_rot = p->n_rot;
    const float theta_scale = powf(p->freq_base, -2.0f / (float)n_rot);
    float cs[2 * 512], *c = cs;             /* cos/sin per pair, shared by all heads */
    int npairs = n_rot / 2;
    if (npairs > 512) npairs = 512;         /* the model limits n_rot to 1024 */
    float theta = (float)pos;
    for (int i = 0; i < npairs; i++) {
        float t = p->freq_factors ? theta / p->freq_factors[i] : theta;
        t *= p->freq_scale;
        c[2 * i] = cosf(t) * p->mscale;
        c[2 * i + 1] = sinf(t) * p->mscale;
        theta *= theta_scale;
    }
    /* pair i is (x[2i], x[2i+1]) or, NEOX style, (x[i], x[i + n_rot/2]) */
    const int stride = p->neox ? 1 : 2, other = p->neox ? npairs : 1;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < npairs; i++) {
            float *a = v + stride * i, *b = a + other;
            float x0 = *a, x1 = *b, co = c[2 * i], si = c[2 * i + 1];
            *a = x0 * co - x1 * si;
            *b = x0 * si + x1 * co;
        }
    }
}

void ek_kv_store(const ek_kernels *k, int kv_type, void *dst, const float *src, int n) {
    if (kv_type == 1) memcpy(dst, src, (size_t)n * 4);
    else EK_PICK(k, store_f16)((uint16_t *)dst, src, n);
}

float ek_kv_dot(const ek_kernels *k, int kv_type, const float *q, const void *krow, int n) {
    return kv_type == 1 ? EK_PICK(k, dot_f32)(q, (const float *)krow, n) : EK_PICK(k, dot_f16)(q, (const uint16_t *)krow, n);
}

void ek_kv_scores(const ek_kernels *k, int kv_type, const float *q, const void *rows, size_t stride, int n_pos,
                  int n, float scale, float *s) {
    if (kv_type != 1 && k && k->kv_scores_f16) {
        k->kv_scores_f16(q, (const uint16_t *)rows, stride, n_pos, n, scale, s);
        return;
    }
    const size_t esz = kv_type == 1 ? 4 : 2;
    for (int t = 0; t < n_pos; t++) s[t] = ek_kv_dot(k, kv_type, q, (const char *)rows + (size_t)t * stride * esz, n) * scale;
}

void ek_kv_mix(const ek_kernels *k, int kv_type, const float *p, const void *rows, size_t stride, int n_pos, int n,
               float *out) {
    if (kv_type != 1 && k && k->kv_mix_f16) {
        k->kv_mix_f16(p, (const uint16_t *)rows, stride, n_pos, n, out);
        return;
    }
    const size_t esz = kv_type == 1 ? 4 : 2;
    memset(out, 0, (size_t)n * sizeof(float));
    for (int t = 0; t < n_pos; t++) ek_kv_axpy(k, kv_type, out, p[t], (const char *)rows + (size_t)t * stride * esz, n);
}

void ek_kv_axpy(const ek_kernels *k, int kv_type, float *y, float a, const void *vrow, int n) {
    if (kv_type == 1) EK_PICK(k, axpy_f32)(y, a, (const float *)vrow, n);
    else EK_PICK(k, axpy_f16)(y, a, (const uint16_t *)vrow, n);
}
