/* test_kernels.c - the kernel module: type table, fp16/bf16, quantizers,
 * and every kernel set this CPU runs against the scalar reference set. */
#include "test.h"
#include "kernels.h"

#include <math.h>
#include <stdint.h>

/* ---- helpers ------------------------------------------------------------------- */

static uint64_t t_rng = 0x9e3779b97f4a7c15ull;
static uint32_t t_rand(void) {  /* xorshift64* */
    t_rng ^= t_rng >> 12; t_rng ^= t_rng << 25; t_rng ^= t_rng >> 27;
    return (uint32_t)((t_rng * 2685821657736338717ull) >> 32);
}
static float t_uniform(void) { return (float)(t_rand() >> 8) / 16777216.0f * 2.0f - 1.0f; } /* [-1, 1) */
static float t_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t t_u32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static void *t_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

/* ---- type table ---------------------------------------------------------------- */

static void test_type_table(void) {
    static const struct { int id, bs, ts; const char *name; } facts[] = {
        {EK_F32, 1, 4, "f32"}, {EK_F16, 1, 2, "f16"}, {EK_BF16, 1, 2, "bf16"},
        {EK_Q4_0, 32, 18, "q4_0"}, {EK_Q4_1, 32, 20, "q4_1"}, {EK_Q5_0, 32, 22, "q5_0"},
        {EK_Q5_1, 32, 24, "q5_1"}, {EK_Q8_0, 32, 34, "q8_0"}, {EK_Q8_1, 32, 36, "q8_1"},
        {EK_Q2_K, 256, 84, "q2_K"}, {EK_Q3_K, 256, 110, "q3_K"}, {EK_Q4_K, 256, 144, "q4_K"},
        {EK_Q5_K, 256, 176, "q5_K"}, {EK_Q6_K, 256, 210, "q6_K"}, {EK_Q8_K, 256, 292, "q8_K"},
        {EK_I8, 1, 1, "i8"}, {EK_I16, 1, 2, "i16"}, {EK_I32, 1, 4, "i32"}, {EK_I64, 1, 8, "i64"},
        {EK_F64, 1, 8, "f64"}, {EK_IQ4_NL, 32, 18, "iq4_nl"}, {EK_IQ4_XS, 256, 136, "iq4_xs"},
    };
    for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++) {
        const ek_type_info *t = ek_type_get(facts[i].id);
        CHECK(t != NULL, "type %d missing", facts[i].id);
        if (!t) continue;
        CHECK(t->block_size == facts[i].bs && t->type_size == facts[i].ts && !strcmp(t->name, facts[i].name),
              "type %d: %s %d/%d", facts[i].id, t->name, t->block_size, t->type_size);
    }
    CHECK(ek_type_get(4) == NULL && ek_type_get(5) == NULL, "deprecated ids 4, 5 must be NULL");
    CHECK(ek_type_get(-1) == NULL && ek_type_get(EK_TYPE_COUNT) == NULL && ek_type_get(1000) == NULL, "out of range");
    CHECK(ek_row_bytes(EK_Q4_0, 4096) == 4096 / 32 * 18, "row bytes q4_0");
    CHECK(ek_row_bytes(EK_Q6_K, 4096) == 16 * 210, "row bytes q6_K");
    CHECK(ek_row_bytes(EK_Q4_0, 33) == 0 && ek_row_bytes(4, 32) == 0, "row bytes of bad n / type");
    CHECK(ek_row_bytes(EK_F16, 7) == 14, "row bytes f16");
    /* the block structs must have exactly ggml's sizes */
    CHECK(sizeof(ek_block_q4_0) == 18 && sizeof(ek_block_q4_1) == 20 && sizeof(ek_block_q5_0) == 22 &&
          sizeof(ek_block_q5_1) == 24 && sizeof(ek_block_q8_0) == 34 && sizeof(ek_block_q8_1) == 36 &&
          sizeof(ek_block_q2_K) == 84 && sizeof(ek_block_q3_K) == 110 && sizeof(ek_block_q4_K) == 144 &&
          sizeof(ek_block_q5_K) == 176 && sizeof(ek_block_q6_K) == 210 && sizeof(ek_block_q8_K) == 292 &&
          sizeof(ek_block_iq4_nl) == 18 && sizeof(ek_block_iq4_xs) == 136,
          "block struct sizes");
}

/* ---- fp16 / bf16 --------------------------------------------------------------- */

static void test_fp16(void) {
    static const struct { uint32_t f; uint16_t h; } to16[] = {
        {0x3f800000, 0x3c00},             /* 1 */
        {0xc0000000, 0xc000},             /* -2 */
        {0x00000000, 0x0000}, {0x80000000, 0x8000},
        {0x477fe000, 0x7bff},             /* 65504, the largest half */
        {0x477fefff, 0x7bff},             /* just below the 65520 tie */
        {0x477ff000, 0x7c00},             /* 65520: tie to even -> inf */
        {0x7f800000, 0x7c00}, {0xff800000, 0xfc00},
        {0x38800000, 0x0400},             /* 2^-14, smallest normal */
        {0x33800000, 0x0001},             /* 2^-24, smallest subnormal */
        {0x33000000, 0x0000},             /* 2^-25: tie between 0 and 2^-24 -> 0 (even) */
        {0x33000001, 0x0001},             /* just above the tie */
        {0x33c00000, 0x0002},             /* 1.5 * 2^-24: tie between 1 and 2 -> 2 */
        {0x34200000, 0x0002},             /* 2.5 * 2^-24: tie between 2 and 3 -> 2 */
        {0x387fc000, 0x03ff},             /* the largest subnormal */
        {0x387fe000, 0x0400},             /* rounds up into the smallest normal */
        {0x3f801000, 0x3c00},             /* 1 + 2^-11: tie -> even 1.0 */
        {0x3f803000, 0x3c02},             /* 1 + 3*2^-11: tie -> even 1 + 2^-9 */
        {0x3f801001, 0x3c01},             /* just above a tie */
        {0x2f800000, 0x0000},             /* 2^-32 underflows */
    };
    for (size_t i = 0; i < sizeof to16 / sizeof to16[0]; i++) {
        uint16_t h = ek_fp32_to_fp16(t_bits(to16[i].f));
        CHECK(h == to16[i].h, "fp32 %08x -> fp16 %04x, want %04x", to16[i].f, h, to16[i].h);
    }
    uint16_t hn = ek_fp32_to_fp16(t_bits(0x7fc00000));
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0, "nan -> fp16 nan (%04x)", hn);
    hn = ek_fp32_to_fp16(t_bits(0x7f800001));  /* signalling nan with a low payload stays nan */
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0, "snan -> fp16 nan (%04x)", hn);

    CHECK(ek_fp16_to_fp32(0x0001) == ldexpf(1.0f, -24), "fp16 0001");
    CHECK(ek_fp16_to_fp32(0x03ff) == 1023 * ldexpf(1.0f, -24), "fp16 03ff");
    CHECK(ek_fp16_to_fp32(0x7bff) == 65504.0f, "fp16 7bff");
    CHECK(t_u32(ek_fp16_to_fp32(0x8000)) == 0x80000000u, "fp16 -0");
    CHECK(isinf(ek_fp16_to_fp32(0xfc00)) && ek_fp16_to_fp32(0xfc00) < 0, "fp16 -inf");
    CHECK(isnan(ek_fp16_to_fp32(0x7e00)) && isnan(ek_fp16_to_fp32(0x7c01)), "fp16 nan");
    /* every half survives the round trip */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ek_fp16_to_fp32((uint16_t)h);
        if (isnan(f)) { if (!isnan(ek_fp16_to_fp32(ek_fp32_to_fp16(f)))) bad++; }
        else if (ek_fp32_to_fp16(f) != h) bad++;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
    /* against double-precision rounding on random floats in the half range */
    bad = 0;
    for (int i = 0; i < 100000; i++) {
        float f = ldexpf(t_uniform(), (int)(t_rand() % 44) - 28);
        uint16_t h = ek_fp32_to_fp16(f);
        double e = fabs((double)ek_fp16_to_fp32(h) - f);
        /* no other half is nearer */
        uint16_t hu = (uint16_t)(h + 1), hd = (uint16_t)(h - 1);
        if ((h & 0x7fff) != 0x7bff && fabs((double)ek_fp16_to_fp32(hu) - f) < e) bad++;
        if ((h & 0x7fff) != 0 && fabs((double)ek_fp16_to_fp32(hd) - f) < e) bad++;
    }
    CHECK(bad == 0, "%d fp16 conversions not nearest", bad);
}

static void test_bf16(void) {
    CHECK(ek_fp32_to_bf16(1.0f) == 0x3f80, "bf16 1");
    CHECK(ek_fp32_to_bf16(t_bits(0x3f808000)) == 0x3f80, "bf16 tie -> even down");
    CHECK(ek_fp32_to_bf16(t_bits(0x3f818000)) == 0x3f82, "bf16 tie -> even up");
    CHECK(ek_fp32_to_bf16(t_bits(0x3f808001)) == 0x3f81, "bf16 above tie");
    CHECK(ek_fp32_to_bf16(t_bits(0x7f800000)) == 0x7f80, "bf16 inf");
    CHECK(ek_fp32_to_bf16(t_bits(0x7f7fffff)) == 0x7f80, "bf16 max float rounds to inf");
    uint16_t n = ek_fp32_to_bf16(t_bits(0x7f800001));
    CHECK((n & 0x7f80) == 0x7f80 && (n & 0x7f), "bf16 nan kept (%04x)", n);
    CHECK(ek_fp32_to_bf16(t_bits(0x00010000)) == 0x0001, "bf16 subnormal");
    CHECK(ek_bf16_to_fp32(0xc0a0) == -5.0f, "bf16 -5");
}

/* ---- quantizers ---------------------------------------------------------------- */

static void test_quantizer_bytes(void) {
    float x[32];
    unsigned char q[64];
    /* q8_0 with amax 127: d = 1, id = 1, roundf ties go away from zero */
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    x[0] = 127.0f; x[1] = 2.5f; x[2] = -2.5f; x[3] = 0.5f; x[4] = -0.5f; x[5] = 1.4999999f; x[6] = -127.0f;
    CHECK(ek_quantize_row(EK_Q8_0, x, q, 32) == 0, "q8_0 quantize");
    const ek_block_q8_0 *b8 = (const void *)q;
    CHECK(b8->d == 0x3c00, "q8_0 d %04x", b8->d);
    CHECK(b8->qs[0] == 127 && b8->qs[1] == 3 && b8->qs[2] == -3 && b8->qs[3] == 1 && b8->qs[4] == -1 &&
          b8->qs[5] == 1 && b8->qs[6] == -127 && b8->qs[7] == 0, "q8_0 rounding %d %d %d %d %d %d %d",
          b8->qs[0], b8->qs[1], b8->qs[2], b8->qs[3], b8->qs[4], b8->qs[5], b8->qs[6]);
    /* all-zero blocks */
    memset(x, 0, sizeof x);
    ek_quantize_row(EK_Q8_0, x, q, 32);
    int z = 1;
    for (int j = 0; j < 34; j++) z &= q[j] == 0;
    CHECK(z, "q8_0 zero block");
    ek_quantize_row(EK_Q4_0, x, q, 32);
    z = q[0] == 0x00 && q[1] == 0x80;  /* d = 0 / -8 = -0 */
    for (int j = 0; j < 16; j++) z &= q[2 + j] == 0x88;  /* 0 * 0 + 8.5 -> 8 */
    CHECK(z, "q4_0 zero block");
    /* q4_0 with a negative max: d = -8 / -8 = 1 */
    memset(x, 0, sizeof x);
    x[0] = -8.0f; x[1] = 7.0f; x[2] = 3.5f; x[3] = -0.5f; x[4] = 0.49f; x[16] = 6.5f; x[17] = -7.6f;
    /* 6.5 + 8.5 = 15 exactly; -7.6 + 8.5 = 0.9 -> 0 */
    ek_quantize_row(EK_Q4_0, x, q, 32);
    const ek_block_q4_0 *b4 = (const void *)q;
    CHECK(b4->d == 0x3c00, "q4_0 d %04x", b4->d);
    /* element j -> low nibble of qs[j], element j+16 -> high nibble; value = trunc(x*id + 8.5) */
    CHECK(b4->qs[0] == (0 | 15 << 4) && b4->qs[1] == (15 | 0 << 4) && b4->qs[2] == (12 | 8 << 4) &&
          b4->qs[3] == 0x88 && b4->qs[4] == 0x88, "q4_0 neg max bytes %02x %02x %02x %02x %02x",
          b4->qs[0], b4->qs[1], b4->qs[2], b4->qs[3], b4->qs[4]);
    /* positive max: d = -1; x = -8 maps to 16.5 and is clamped to 15 */
    memset(x, 0, sizeof x);
    x[0] = 8.0f; x[1] = -8.0f; x[2] = -7.0f;
    ek_quantize_row(EK_Q4_0, x, q, 32);
    CHECK(b4->d == 0xbc00 && (b4->qs[0] & 15) == 0 && (b4->qs[1] & 15) == 15 && (b4->qs[2] & 15) == 15,
          "q4_0 pos max: d %04x %02x %02x %02x", b4->d, b4->qs[0], b4->qs[1], b4->qs[2]);
    CHECK(ek_quantize_row(EK_Q4_0, x, q, 33) == -1 && ek_quantize_row(4, x, q, 32) == -1, "bad quantize args");
}

/* Element-wise error bound of quantize -> dequantize: half a step, plus the
 * fp16 rounding of the scale (relative 2^-11, times the largest level) and
 * of the min (relative 2^-11). */
static void test_round_trip(void) {
    static const struct { int type, levels; } tt[] = {
        {EK_Q4_0, 8}, {EK_Q4_1, 15}, {EK_Q5_0, 16}, {EK_Q5_1, 31}, {EK_Q8_0, 127}, {EK_Q8_K, 127},
        {EK_F16, 0}, {EK_BF16, 0},
    };
    enum { N = 1024 };
    float x[N], y[N];
    unsigned char q[N * 4];
    for (size_t t = 0; t < sizeof tt / sizeof tt[0]; t++) {
        int type = tt[t].type, bs = ek_type_get(type)->block_size, bad = 0;
        for (int i = 0; i < N; i++) x[i] = t_uniform() * (1.0f + (float)(i / bs));  /* varied block scales */
        CHECK(ek_quantize_row(type, x, q, N) == 0, "quantize %d", type);
        ek_dequant_row(type, q, y, N);
        for (int b = 0; b < N / bs; b++) {
            float mn = x[b * bs], mx = x[b * bs], amax = 0, smax = 0;
            for (int j = 0; j < bs; j++) {
                float v = x[b * bs + j];
                mn = fminf(mn, v); mx = fmaxf(mx, v);
                if (fabsf(v) > amax) { amax = fabsf(v); smax = v; }
            }
            for (int j = 0; j < bs; j++) {
                float v = x[b * bs + j], e = fabsf(y[b * bs + j] - v), bound;
                if (type == EK_F16) bound = fabsf(v) * 0x1p-11f;
                else if (type == EK_BF16) bound = fabsf(v) * 0x1p-8f;
                else if (type == EK_Q4_1 || type == EK_Q5_1) {
                    float step = (mx - mn) / tt[t].levels;
                    bound = step * (0.5f + tt[t].levels * 0x1p-11f) + fabsf(mn) * 0x1p-11f;
                } else {
                    float step = amax / tt[t].levels;
                    bound = step * (0.5f + tt[t].levels * 0x1p-11f);
                    if (type == EK_Q8_K) bound = step * 0.5f;   /* d is a float */
                    /* q4_0 / q5_0 map the max to -levels; values within half a step
                     * of -max would need level +levels and are clamped to levels-1 */
                    if ((type == EK_Q4_0 || type == EK_Q5_0) && v * smax < 0 &&
                        fabsf(v) >= amax * (1 - 0.5f / tt[t].levels) * 0.999f)
                        bound = step * (1.0f + tt[t].levels * 0x1p-11f);
                }
                if (e > bound * 1.0001f + 1e-30f) bad++;
            }
        }
        CHECK(bad == 0, "%s: %d elements beyond the round-trip bound", ek_type_get(type)->name, bad);
    }
    /* Q8_K's block sums */
    ek_quantize_row(EK_Q8_K, x, q, 256);
    const ek_block_q8_K *k = (const void *)q;
    int ok = 1;
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += k->qs[16 * g + l];
        ok &= s == k->bsums[g];
    }
    CHECK(ok, "q8_K bsums");
}

/* ---- IQ4_NL / IQ4_XS ------------------------------------------------------------ */

/* Hand-made blocks, decoded by hand from ggml's format (ggml-common.h:
 * block_iq4_nl {d; qs[16]}, block_iq4_xs {d; scales_h; scales_l[4]; qs[128]};
 * kvalues_iq4nl = -127 -104 -83 -65 -49 -35 -22 -10 1 13 25 38 53 69 89 113;
 * dequantize_row_iq4_*: y[j] = d * kv[qs[j] & 15], y[j + 16] = d * kv[qs[j] >> 4],
 * iq4_xs sub-block ib with ls = (scales_l[ib/2] >> 4*(ib%2)) & 15 |
 * ((scales_h >> 2*ib) & 3) << 4 and d_ib = d * (ls - 32)). */
static void test_iq4_dequant_by_hand(void) {
    ek_block_iq4_nl nl;
    float y[256];
    memset(&nl, 0, sizeof nl);
    nl.d = 0x3800;                 /* 0.5 */
    nl.qs[0] = 0xF0;               /* element 0: kv[0] = -127, element 16: kv[15] = 113 */
    nl.qs[5] = 0x78;               /* element 5: kv[8] = 1, element 21: kv[7] = -10 */
    nl.qs[15] = 0x3C;              /* element 15: kv[12] = 53, element 31: kv[3] = -65 */
    ek_dequant_row(EK_IQ4_NL, &nl, y, 32);
    CHECK(y[0] == -63.5f && y[16] == 56.5f && y[5] == 0.5f && y[21] == -5.0f && y[15] == 26.5f && y[31] == -32.5f &&
          y[1] == -63.5f && y[17] == -63.5f, "iq4_nl by hand: %g %g %g %g %g %g %g %g", y[0], y[16], y[5], y[21], y[15],
          y[31], y[1], y[17]);

    ek_block_iq4_xs xs;
    memset(&xs, 0, sizeof xs);
    xs.d = 0x3800;                 /* 0.5 */
    /* ls: sub-block 0 = 33 (+1), 1 = 0 (-32), 2 = 47 (+15), 3 = 32 (0), 7 = 63 (+31), others 0 (-32) */
    xs.scales_l[0] = 0x01;         /* ls0 & 15 = 1, ls1 & 15 = 0 */
    xs.scales_l[1] = 0x0F;         /* ls2 & 15 = 15, ls3 & 15 = 0 */
    xs.scales_l[3] = 0xF0;         /* ls6 & 15 = 0, ls7 & 15 = 15 */
    xs.scales_h = 0x2 | 0x2 << 4 | 0x2 << 6 | 0x3 << 14;  /* ls0 >> 4 = 2, ls2 >> 4 = 2, ls3 >> 4 = 2, ls7 >> 4 = 3 */
    xs.qs[0] = 0xF0;               /* sub-block 0: element 0 kv[0], element 16 kv[15] */
    xs.qs[16 + 3] = 0x9E;          /* sub-block 1: element 35 kv[14] = 89, element 51 kv[9] = 13 */
    xs.qs[32 + 0] = 0x01;          /* sub-block 2: element 64 kv[1] = -104, element 80 kv[0] */
    xs.qs[48 + 9] = 0x5A;          /* sub-block 3 (scale 0): elements 105, 121 */
    xs.qs[112 + 15] = 0xF8;        /* sub-block 7: element 239 kv[8] = 1, element 255 kv[15] = 113 */
    ek_dequant_row(EK_IQ4_XS, &xs, y, 256);
    CHECK(y[0] == -63.5f && y[16] == 56.5f && y[1] == -63.5f, "iq4_xs by hand, sub-block 0: %g %g %g", y[0], y[16], y[1]);
    CHECK(y[35] == -1424.0f && y[51] == -208.0f && y[32] == 2032.0f, "iq4_xs by hand, sub-block 1: %g %g %g", y[35], y[51],
          y[32]);
    CHECK(y[64] == -780.0f && y[80] == -952.5f && y[73] == -952.5f, "iq4_xs by hand, sub-block 2: %g %g %g", y[64], y[80],
          y[73]);
    CHECK(y[105] == 0.0f && y[121] == 0.0f && y[96] == 0.0f && y[57] == 2032.0f, "iq4_xs by hand, sub-block 3: %g %g %g %g",
          y[105], y[121], y[96], y[57]);
    CHECK(y[239] == 15.5f && y[255] == 1751.5f && y[224] == -1968.5f && y[128] == 2032.0f,
          "iq4_xs by hand, sub-blocks 4, 7: %g %g %g %g", y[239], y[255], y[224], y[128]);
}

/* Fixtures from ggml itself: the FNV-1a hashes of what llama.cpp's
 * ggml-base (commit d32676d77) makes of the inputs below, by linking its
 * quantize_iq4_nl / quantize_iq4_xs (importance weights NULL, as
 * llama-quantize without an imatrix) and dequantize_row_iq4_nl / _xs. */
static uint32_t t_fx_state;
static uint32_t t_fx_rand(void) {
    t_fx_state ^= t_fx_state << 13; t_fx_state ^= t_fx_state >> 17; t_fx_state ^= t_fx_state << 5;
    return t_fx_state;
}
/* uniform, cubed (heavy tails), magnitudes 2^-12..2^6, zero 32-blocks and outliers */
static void t_fx_floats(float *x, int n) {
    t_fx_state = 12345u;
    for (int i = 0; i < n; i++) {
        float u = (float)(t_fx_rand() >> 8) / 16777216.0f * 2.0f - 1.0f;
        switch ((i / 1024) % 4) {
        case 0: x[i] = u; break;
        case 1: x[i] = u * u * u * 3.0f; break;
        case 2: x[i] = ldexpf(u, (int)((i / 32) % 19) - 12); break;
        default: x[i] = (i / 32) % 3 == 1 ? 0.0f : (i % 256 == 7 ? 40.0f * u : u); break;
        }
    }
}
/* random blocks of bs bytes, each with fp16 d = k * 2^-14, k in -1000..1000 */
static void t_fx_blocks(uint8_t *q, int n, int bs) {
    t_fx_state = 777u;
    for (int i = 0; i < n; i++) q[i] = (uint8_t)(t_fx_rand() >> 24);
    for (int b = 0; b < n / bs; b++) {
        uint16_t h = ek_fp32_to_fp16(ldexpf((float)((int)(t_fx_rand() % 2001) - 1000), -14));
        memcpy(q + b * bs, &h, 2);
    }
}
static uint64_t t_fnv(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ull; }
    return h;
}

static void test_iq4_ggml_fixtures(void) {
    enum { N = 8192 };
    static float x[N], y[N];
    static uint8_t q[N];
    t_fx_floats(x, N);
    CHECK(ek_quantize_row(EK_IQ4_NL, x, q, N) == 0 && t_fnv(q, N / 32 * 18) == 0xd68c269e0817d399ull,
          "iq4_nl quantization differs from ggml's");
    CHECK(ek_quantize_row(EK_IQ4_XS, x, q, N) == 0 && t_fnv(q, N / 256 * 136) == 0x91aeb32924a6b42bull,
          "iq4_xs quantization differs from ggml's");
    t_fx_blocks(q, N / 32 * 18, 18);
    ek_dequant_row(EK_IQ4_NL, q, y, N);
    CHECK(t_fnv(y, sizeof y) == 0xb8effd259cf218e4ull, "iq4_nl dequantization differs from ggml's");
    t_fx_blocks(q, N / 256 * 136, 136);
    ek_dequant_row(EK_IQ4_XS, q, y, N);
    CHECK(t_fnv(y, sizeof y) == 0xf061528040fadba0ull, "iq4_xs dequantization differs from ggml's");
    CHECK(ek_quantize_row(EK_IQ4_NL, x, q, 48) == -1 && ek_quantize_row(EK_IQ4_XS, x, q, 288) == -1,
          "iq4: rows not a whole number of blocks are refused");
}

/* k-quants: ggml's quantize_row_q2_K_ref .. q6_K_ref (what llama-quantize
 * writes without an imatrix), hashed as the iq4 fixtures above (same
 * inputs, 32 superblocks; ggml-base of llama.cpp d32676d77 through
 * ggml_quantize_chunk with no importance weights). */
static void test_kquant_ggml_fixtures(void) {
    enum { N = 8192 };
    static float x[N];
    static uint8_t q[N];
    static const struct { int type; uint64_t fnv; } fx[] = {
        {EK_Q2_K, 0x5eccf37737d73cefull}, {EK_Q3_K, 0xde77d6af443e252eull}, {EK_Q4_K, 0x00a0b7ad82bd2687ull},
        {EK_Q5_K, 0x416732372d937878ull}, {EK_Q6_K, 0x832d875fb4fa5fa9ull},
    };
    t_fx_floats(x, N);
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) {
        const ek_type_info *t = ek_type_get(fx[i].type);
        CHECK(ek_quantize_row(fx[i].type, x, q, N) == 0 && t_fnv(q, N / 256 * (size_t)t->type_size) == fx[i].fnv,
              "%s quantization differs from ggml's", t->name);
        CHECK(ek_quantize_row(fx[i].type, x, q, 288) == -1, "%s: a row of 288 is refused", t->name);
    }
}

/* k-quant round trips: the largest error in a group of 16 against the
 * group's range (with 0) and the relative RMS error, on uniform rows with
 * varied superblock scales.  The limits are about 1.25x what ggml's
 * quantizers reach on a million such elements (q2_K 0.27 / 0.233, q3_K
 * 0.139 / 0.125, q4_K 0.080 / 0.055, q5_K 0.041 / 0.028, q6_K 0.0155 /
 * 0.0132); a misplaced bit or scale gives errors of the order of the
 * values. */
static void test_kquant_round_trip(void) {
    static const struct { int type; float max_err, rms; } tt[] = {
        {EK_Q2_K, 0.34f, 0.29f}, {EK_Q3_K, 0.175f, 0.16f}, {EK_Q4_K, 0.10f, 0.069f},
        {EK_Q5_K, 0.052f, 0.035f}, {EK_Q6_K, 0.02f, 0.0165f},
    };
    enum { N = 256 * 64 };
    static float x[N], y[N];
    static unsigned char q[N];
    for (size_t t = 0; t < sizeof tt / sizeof tt[0]; t++) {
        for (int i = 0; i < N; i++) x[i] = t_uniform() * (float)(1 + (i / 256) % 7);
        x[5] = 0;   /* a zero superblock: all zero back */
        for (int i = 256; i < 512; i++) x[i] = 0;
        CHECK(ek_quantize_row(tt[t].type, x, q, N) == 0, "quantize %d", tt[t].type);
        ek_dequant_row(tt[t].type, q, y, N);
        double se = 0, sx = 0, worst = 0;
        for (int g = 0; g < N / 16; g++) {
            float mn = 0, mx = 0;
            for (int j = 0; j < 16; j++) { mn = fminf(mn, x[16 * g + j]); mx = fmaxf(mx, x[16 * g + j]); }
            for (int j = 0; j < 16; j++) {
                const int i = 16 * g + j;
                const double e = fabs((double)y[i] - x[i]);
                if (mx > mn && e / (mx - mn) > worst) worst = e / (mx - mn);
                se += e * e;
                sx += (double)x[i] * x[i];
            }
        }
        int zero = 1;
        for (int i = 256; i < 512; i++) zero &= y[i] == 0;
        const char *name = ek_type_get(tt[t].type)->name;
        CHECK(worst <= tt[t].max_err, "%s: largest error %.4f of a group's range (limit %.4f)", name, worst, tt[t].max_err);
        CHECK(sqrt(se / sx) <= tt[t].rms, "%s: relative RMS error %.4f (limit %.4f)", name, sqrt(se / sx), tt[t].rms);
        CHECK(zero, "%s: a zero superblock comes back zero", name);
    }
}

/* Quantizing the table itself: x[j] = s * kv[j % 16] is represented
 * exactly by d = s (fp16) and nibble j % 16, and zero blocks by d = 0
 * (iq4_xs: -0, as ggml's -max/32) and the level nearest 0 (kv[8] = 1). */
static void test_iq4_quantize_by_hand(void) {
    float x[256];
    uint8_t q[136];
    const float s = 0.01f;
    for (int j = 0; j < 256; j++) x[j] = s * ek_iq4nl_values[j % 16];
    ek_quantize_row(EK_IQ4_NL, x, q, 32);
    const ek_block_iq4_nl *nl = (const void *)q;
    int ok = abs((int)nl->d - (int)ek_fp32_to_fp16(s)) <= 1;
    for (int j = 0; j < 16; j++) ok &= nl->qs[j] == (j | j << 4);
    CHECK(ok, "iq4_nl of the table: d %04x (want ~%04x), qs[0..1] %02x %02x", nl->d, ek_fp32_to_fp16(s), nl->qs[0], nl->qs[1]);
    for (int j = 0; j < 256; j++) x[j] = (j / 32 == 5 ? 2 : 1) * s * ek_iq4nl_values[j % 16];
    ek_quantize_row(EK_IQ4_XS, x, q, 256);
    const ek_block_iq4_xs *xs = (const void *)q;
    /* block scales s and 2s: d = -2s/32, ls - 32 = -16 and -32 */
    float d = ek_fp16_to_fp32(xs->d);
    ok = fabsf(d + 2 * s / 32) <= 2 * s / 32 * 0x1p-10f;
    for (int ib = 0; ib < 8; ib++) {
        int ls = ((xs->scales_l[ib / 2] >> (4 * (ib % 2))) & 15) | (((xs->scales_h >> (2 * ib)) & 3) << 4);
        ok &= ls == (ib == 5 ? 0 : 16);
    }
    /* negative scales flip the levels: nibble 15 - j would be the mirror, but
     * the table is not symmetric, so check values instead */
    float y[256];
    ek_dequant_row(EK_IQ4_XS, q, y, 256);
    for (int j = 0; j < 256; j++) ok &= fabsf(y[j] - x[j]) <= fabsf(x[j]) * 0x1p-9f + 1e-6f;
    CHECK(ok, "iq4_xs of the table: d %g, scales_h %04x", d, xs->scales_h);
    memset(x, 0, sizeof x);
    ek_quantize_row(EK_IQ4_NL, x, q, 32);
    ok = nl->d == 0x0000;
    for (int j = 0; j < 16; j++) ok &= nl->qs[j] == 0x88;
    CHECK(ok, "iq4_nl zero block: d %04x qs %02x", nl->d, nl->qs[0]);
    ek_quantize_row(EK_IQ4_XS, x, q, 256);
    ok = xs->d == 0x8000 && xs->scales_h == 0xAAAA;  /* ls = 32 everywhere: high bits 2 */
    for (int j = 0; j < 4; j++) ok &= xs->scales_l[j] == 0;
    for (int j = 0; j < 128; j++) ok &= xs->qs[j] == 0x88;
    CHECK(ok, "iq4_xs zero block: d %04x scales_h %04x", xs->d, xs->scales_h);
}

/* ---- matmul -------------------------------------------------------------------- */

/* Random weights of a type: quantized from random floats for the 32-block
 * types, random bytes with sane fp16 scales for the k-quants and the IQ4
 * types (every nibble, level and 6-bit scale, which quantizing random
 * floats does not all make). */
static void t_random_weights(int type, void *w, int rows, int n) {
    size_t rb = (size_t)ek_row_bytes(type, (uint64_t)n);
    if (type == EK_Q2_K || type == EK_Q3_K || type == EK_Q4_K || type == EK_Q5_K || type == EK_Q6_K ||
        type == EK_IQ4_NL || type == EK_IQ4_XS) {
        unsigned char *p = w;
        for (size_t i = 0; i < rb * rows; i++) p[i] = (unsigned char)t_rand();
        int ts = ek_type_get(type)->type_size;
        for (size_t b = 0; b < rb * rows / ts; b++) {
            unsigned char *blk = p + b * ts;
            uint16_t d = ek_fp32_to_fp16(0.001f + 0.01f * fabsf(t_uniform()));
            uint16_t dm = ek_fp32_to_fp16(0.001f + 0.01f * fabsf(t_uniform()));
            switch (type) {
            case EK_Q2_K: memcpy(blk + 80, &d, 2); memcpy(blk + 82, &dm, 2); break;
            case EK_Q3_K: memcpy(blk + 108, &d, 2); break;
            case EK_Q4_K: case EK_Q5_K: memcpy(blk, &d, 2); memcpy(blk + 2, &dm, 2); break;
            case EK_IQ4_NL: case EK_IQ4_XS: memcpy(blk, &d, 2); break;
            case EK_Q6_K: memcpy(blk + 208, &d, 2); break;
            }
        }
        return;
    }
    float *f = t_alloc((size_t)n * sizeof(float));
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < n; i++) f[i] = t_uniform();
        ek_quantize_row(type, f, (unsigned char *)w + (size_t)r * rb, n);
    }
    free(f);
}

static int t_is_float_type(int t) { return t == EK_F32 || t == EK_F16 || t == EK_BF16; }

/* 1 if set k runs this F16/BF16 batch on bf16 tiles (kernels.h) */
static int t_bf16_tiles(const ek_kernels *k, int type, int nb) {
    return (type == EK_F16 || type == EK_BF16) && k->bf16_tiles_min_nb && nb >= k->bf16_tiles_min_nb;
}

static void test_matmul_case(const ek_kernels *k, int type, int n, int rows, int nb) {
    const ek_kernels *s = ek_kernels_scalar();
    size_t wrb = (size_t)ek_row_bytes(type, (uint64_t)n), xrb = ek_act_row_bytes(type, n);
    unsigned char *W = t_alloc(wrb * rows), *Xk = t_alloc(xrb * nb), *Xs = t_alloc(xrb * nb);
    float *x = t_alloc(sizeof(float) * n * nb), *Yk = t_alloc(sizeof(float) * rows * nb),
          *Ys = t_alloc(sizeof(float) * rows * nb), *Y2 = t_alloc(sizeof(float) * rows * nb),
          *wd = t_alloc(sizeof(float) * n * rows), *xd = t_alloc(sizeof(float) * n * nb);
    t_random_weights(type, W, rows, n);
    for (int i = 0; i < n * nb; i++) x[i] = t_uniform();
    for (int b = 0; b < nb; b++) {
        ek_convert_act(k, type, x + (size_t)b * n, Xk + b * xrb, n);
        ek_convert_act(s, type, x + (size_t)b * n, Xs + b * xrb, n);
    }
    /* the SIMD activation quantizers are byte-identical to the reference */
    CHECK(memcmp(Xk, Xs, xrb * nb) == 0, "%s %s: converted activations differ", ek_kernels_name(k),
          ek_type_get(type)->name);
    /* the batch set k takes: the same rows, or (tiles) its own layout */
    const int tiles = t_bf16_tiles(k, type, nb);
    size_t xbb = ek_batch_bytes(k, type, n, nb);
    unsigned char *Xb = t_alloc(xbb);
    CHECK(xbb >= xrb * nb && (tiles || xbb == xrb * nb), "%s %s nb=%d: batch bytes %zu", ek_kernels_name(k),
          ek_type_get(type)->name, nb, xbb);
    ek_convert_batch(k, type, x, nb, Xb, n);
    if (!tiles)
        CHECK(memcmp(Xb, Xk, xrb * nb) == 0, "%s %s: batch differs from its rows", ek_kernels_name(k),
              ek_type_get(type)->name);
    for (int r = 0; r < rows; r++) ek_dequant_row(type, W + r * wrb, wd + (size_t)r * n, n);
    for (int b = 0; b < nb; b++) ek_dequant_row(ek_act_type(type), Xk + b * xrb, xd + (size_t)b * n, n);

    ek_matmul(k, type, W, n, Xb, nb, Yk, rows, 0, rows);
    ek_matmul(s, type, W, n, Xs, nb, Ys, rows, 0, rows);

    /* 1. against a double-precision dot of the dequantized operands.  Any
     * float summation of m terms is within gamma_m * sum|terms| (m * 2^-24,
     * Higham); a kernel sums at most n products plus per-block scalings.
     * The bf16 tiles (amx set, F16/BF16 batches) add up to 2^-15 per
     * product (kernels_x86.c). */
    const double tiles_err = tiles ? 0x1p-15 : 0;
    double num = 0, den = 0, num_f = 0, den_f = 0;
    int bad = 0;
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < rows; r++) {
            double ref = 0, mag = 0, reff = 0;
            for (int i = 0; i < n; i++) {
                double p = (double)wd[(size_t)r * n + i] * xd[(size_t)b * n + i];
                double pf = (double)wd[(size_t)r * n + i] * x[(size_t)b * n + i];
                ref += p;
                reff += pf;
                mag += fabs(p);
                den_f += pf * pf;
            }
            double y = Yk[(size_t)b * rows + r];
            if (fabs(y - ref) > ((n + 64) * 0x1p-24 + tiles_err) * mag + 1e-30) bad++;
            num += (y - Ys[(size_t)b * rows + r]) * (y - Ys[(size_t)b * rows + r]);
            den += mag * mag;
            num_f += (y - reff) * (y - reff);
        }
    CHECK(bad == 0, "%s %s n=%d rows=%d nb=%d: %d results beyond the summation bound", ek_kernels_name(k),
          ek_type_get(type)->name, n, rows, nb, bad);
    /* 2. against the scalar set, as a mean squared error normalized by the
     * squared sum of |products| (the scale summation errors live on, so
     * cancellation in random data cannot inflate it).  Same converted
     * activations, so only summation order differs: relative errors
     * ~ sqrt(n) * 2^-24 ~ 4e-6, squared 1.5e-11; 1e-9 leaves margin. */
    double nmse = den > 0 ? num / den : num;
    CHECK(nmse < 1e-9, "%s %s n=%d rows=%d nb=%d: nmse vs scalar %.3g", ek_kernels_name(k),
          ek_type_get(type)->name, n, rows, nb, nmse);
    /* 3. against the unquantized float activations: the activation
     * quantization error.  Q8_0 / Q8_K round each element to a step of
     * amax/127, error e_i uniform in +-step/2, so the dot's error sum w_i e_i
     * has variance sum w_i^2 step^2/12.  Normalized by sum (w_i x_i)^2 that
     * is step^2 / (12 E[x^2]) = 1/(4 * 127^2) = 1.55e-5 for uniform [-1, 1)
     * data (amax ~ 1, E[x^2] = 1/3); measured means are 0.8-1.15x that.
     * One case averages over few independent draws (the rows of one
     * activation row share its errors), so the bound allows 1.5x plus a
     * chi-square tail of 12/sqrt(nb) (one draw may be ~10x its mean with
     * probability 1e-3); float activations see only summation error. */
    double tol_f = t_is_float_type(type) ? 1e-9 : 1.6e-5 * (1.5 + 12 / sqrt((double)nb));
    double nf = den_f > 0 ? num_f / den_f : num_f;
    CHECK(nf < tol_f, "%s %s n=%d rows=%d nb=%d: error vs float activations %.3g", ek_kernels_name(k),
          ek_type_get(type)->name, n, rows, nb, nf);

    /* 4. bitwise independent of the row split and of the batch size */
    if (rows > 2) {
        int a = 1 + (int)(t_rand() % (unsigned)(rows - 2)), c = a + (int)(t_rand() % (unsigned)(rows - a));
        memset(Y2, 0, sizeof(float) * rows * nb);
        ek_matmul(k, type, W, n, Xb, nb, Y2, rows, c, rows);
        ek_matmul(k, type, W, n, Xb, nb, Y2, rows, 0, a);
        ek_matmul(k, type, W, n, Xb, nb, Y2, rows, a, c);
        CHECK(memcmp(Y2, Yk, sizeof(float) * rows * nb) == 0, "%s %s n=%d rows=%d nb=%d: split %d/%d changes bits",
              ek_kernels_name(k), ek_type_get(type)->name, n, rows, nb, a, c);
    }
    if (nb > 1) {
        memset(Y2, 0, sizeof(float) * rows * nb);
        for (int b = 0; b < nb; b++) ek_matmul(k, type, W, n, Xk + b * xrb, 1, Y2 + (size_t)b * rows, rows, 0, rows);
        if (!tiles)
            CHECK(memcmp(Y2, Yk, sizeof(float) * rows * nb) == 0, "%s %s n=%d rows=%d nb=%d: batching changes bits",
                  ek_kernels_name(k), ek_type_get(type)->name, n, rows, nb);
        /* bf16 tiles: a batch's rows are the same with any other rows beside
         * them (the first and last row again, as batches of the minimum) */
        if (tiles) {
            const int m = k->bf16_tiles_min_nb;
            float *Y3 = t_alloc(sizeof(float) * rows * m);
            unsigned char *X3 = t_alloc(ek_batch_bytes(k, type, n, m));
            ek_convert_batch(k, type, x, m, X3, n);
            ek_matmul(k, type, W, n, X3, m, Y3, rows, 0, rows);
            CHECK(memcmp(Y3, Yk, sizeof(float) * rows) == 0, "%s %s n=%d rows=%d nb=%d: first row of a batch of %d differs",
                  ek_kernels_name(k), ek_type_get(type)->name, n, rows, nb, m);
            ek_convert_batch(k, type, x + (size_t)(nb - m) * n, m, X3, n);
            ek_matmul(k, type, W, n, X3, m, Y3, rows, 0, rows);
            CHECK(memcmp(Y3 + (size_t)(m - 1) * rows, Yk + (size_t)(nb - 1) * rows, sizeof(float) * rows) == 0,
                  "%s %s n=%d rows=%d nb=%d: last row of a batch of %d differs", ek_kernels_name(k),
                  ek_type_get(type)->name, n, rows, nb, m);
            free(Y3);
            free(X3);
        }
    }
    free(W); free(Xk); free(Xs); free(Xb); free(x); free(Yk); free(Ys); free(Y2); free(wd); free(xd);
}

/* Under emulation (qemu) the large cases are thinned: EMBER_TEST_QUICK=1. */
static int t_quick(void) { const char *q = getenv("EMBER_TEST_QUICK"); return q && *q == '1'; }

static void test_matmul(const ek_kernels *k) {
    static const int types[] = {EK_F32, EK_F16, EK_BF16, EK_Q4_0, EK_Q4_1, EK_Q5_0, EK_Q5_1, EK_Q8_0,
                                EK_Q2_K, EK_Q3_K, EK_Q4_K, EK_Q5_K, EK_Q6_K, EK_IQ4_NL, EK_IQ4_XS};
    static const int ns32[] = {32, 64, 96, 4096 + 32}, nsK[] = {256, 512, 768, 4096 + 256};
    static const int rowss[] = {1, 3, 17, 130}, nbs[] = {1, 2, 5, 33};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        int type = types[t];
        CHECK(ek_type_supported(type), "type %d supported", type);
        const int *ns = ek_type_get(type)->block_size == 256 ? nsK : ns32;
        for (int in = 0; in < 4; in++)
            for (int ir = 0; ir < 4; ir++) {
                /* every nb with every row count at small n; at the large n one
                 * nb per row count (and nb 1 for 130 rows) keeps the run short */
                for (int ib = 0; ib < 4; ib++) {
                    if (in == 3 && ib != (ir == 3 ? 0 : ir)) continue;
                    if (t_quick() && in >= 1 && ir != 1 && !(in == 1 && ir == 2 && ib == 3)) continue;
                    test_matmul_case(k, type, ns[in], rowss[ir], nbs[ib]);
                }
            }
        /* float weights also take any n (tails) */
        if (t_is_float_type(type)) {
            test_matmul_case(k, type, 7, 5, 3);
            test_matmul_case(k, type, 45, 9, 4);
            /* cache-blocked prompt path: two column chunks and a tail, a
             * second row block of 4 + 1, a second activation block of 6 + 1 */
            test_matmul_case(k, type, 256 + 48 + 3, 21, 31);
            /* bf16 tiles: three activation blocks (the last partial), a
             * partial 32-row block, several column chunks with a tail */
            test_matmul_case(k, type, 100, 50, 150);
            test_matmul_case(k, type, 1000 + 7, 64 + 16 + 5, 40);
        }
    }
}

/* Packed weights (kernels.h): the packed kernel of set k must give the bits
 * of the unpacked kernel of the set that runs it, for any row split at
 * multiples of 16 and any batch size; packing moves every byte. */
static void test_packed_case(const ek_kernels *k, int type, int n, int rows, int nb) {
    const ek_kernels *s = ek_kernels_scalar(), *ref = ek_pack_wanted(k, type, rows) ? k : s;
    size_t wrb = (size_t)ek_row_bytes(type, (uint64_t)n), xrb = ek_act_row_bytes(type, n);
    unsigned char *W = t_alloc(wrb * rows), *P = t_alloc(wrb * rows), *X = t_alloc(xrb * nb),
                  *scratch = t_alloc(ek_pack_scratch_bytes(type, n));
    float *x = t_alloc(sizeof(float) * n * nb), *Yu = t_alloc(sizeof(float) * rows * nb),
          *Yp = t_alloc(sizeof(float) * rows * nb);
    t_random_weights(type, W, rows, n);
    memcpy(P, W, wrb * rows);
    CHECK(ek_pack_rows(type, P, n, rows, scratch) == 0, "pack %s", ek_type_get(type)->name);
    /* a permutation of the bytes: same multiset, different order (rows of
     * more than one block) */
    long hist[2][256] = {{0}};
    for (size_t i = 0; i < wrb * rows; i++) { hist[0][W[i]]++; hist[1][P[i]]++; }
    CHECK(memcmp(hist[0], hist[1], sizeof hist[0]) == 0 && (n == ek_type_get(type)->block_size || memcmp(W, P, wrb * rows) != 0),
          "packing %s moves bytes", ek_type_get(type)->name);
    for (int i = 0; i < n * nb; i++) x[i] = t_uniform();
    for (int b = 0; b < nb; b++) ek_convert_act(k, type, x + (size_t)b * n, X + b * xrb, n);
    ek_matmul(ref, type, W, n, X, nb, Yu, rows, 0, rows);
    memset(Yp, 0, sizeof(float) * rows * nb);
    /* in three pieces at multiples of 16, the last first */
    int a = 16 * (int)(t_rand() % (unsigned)(rows / 16 + 1)), c = a + 16 * (int)(t_rand() % (unsigned)((rows - a) / 16 + 1));
    ek_matmul_packed(k, type, P, n, X, nb, Yp, rows, c, rows);
    ek_matmul_packed(k, type, P, n, X, nb, Yp, rows, 0, a);
    ek_matmul_packed(k, type, P, n, X, nb, Yp, rows, a, c);
    CHECK(memcmp(Yu, Yp, sizeof(float) * rows * nb) == 0, "%s packed %s n=%d rows=%d nb=%d split %d/%d: bits differ from %s",
          ek_kernels_name(k), ek_type_get(type)->name, n, rows, nb, a, c, ek_kernels_name(ref));
    /* rows not a multiple of 16, or another type: refused */
    CHECK(ek_pack_rows(type, P, n, rows + 1, scratch) == -1 && ek_pack_rows(EK_F16, P, n, rows, scratch) == -1 &&
          !ek_pack_wanted(k, type, rows + 1) && !ek_pack_wanted(k, EK_Q4_1, rows), "pack refusals");
    free(W); free(P); free(X); free(scratch); free(x); free(Yu); free(Yp);
}

/* Types without a packed layout (IQ4_NL) take the unpacked path: never
 * wanted, not packable, and ek_matmul_packed leaves Y alone. */
static void test_packed_declines(const ek_kernels *k) {
    static const int types[] = {EK_IQ4_NL};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const int type = types[t], n = 256, rows = 32;
        const size_t wrb = (size_t)ek_row_bytes(type, n);
        unsigned char *W = t_alloc(wrb * rows), *W0 = t_alloc(wrb * rows), *X = t_alloc(ek_act_row_bytes(type, n));
        float x[256], Y[32];
        t_random_weights(type, W, rows, n);
        memcpy(W0, W, wrb * rows);
        for (int i = 0; i < n; i++) x[i] = t_uniform();
        ek_convert_act(k, type, x, X, n);
        for (int r = 0; r < rows; r++) Y[r] = 12345.0f;
        ek_matmul_packed(k, type, W, n, X, 1, Y, rows, 0, rows);
        int untouched = 1;
        for (int r = 0; r < rows; r++) untouched &= Y[r] == 12345.0f;
        CHECK(!ek_pack_wanted(k, type, rows) && ek_pack_scratch_bytes(type, n) == 0 &&
              ek_pack_rows(type, W, n, rows, X) == -1 && memcmp(W, W0, wrb * rows) == 0 && untouched,
              "%s %s: packing must be declined", ek_kernels_name(k), ek_type_get(type)->name);
        free(W); free(W0); free(X);
    }
}

static void test_packed(const ek_kernels *k) {
    test_packed_declines(k);
    static const int types[] = {EK_Q4_0, EK_Q8_0, EK_Q2_K, EK_Q3_K, EK_Q4_K, EK_Q5_K, EK_Q6_K, EK_IQ4_XS};
    static const int ns32[] = {32, 96, 4096 + 32, 16384 + 64}, nsK[] = {256, 768, 4096 + 256, 16384 + 512};
    static const int rowss[] = {16, 48, 160}, nbs[] = {1, 3, 5, 70};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const int *ns = ek_type_get(types[t])->block_size == 256 ? nsK : ns32;
        for (int in = 0; in < 4; in++)
            for (int ir = 0; ir < 3; ir++)
                for (int ib = 0; ib < 4; ib++) {
                    if (in >= 2 && (ir == 2 || ib == 3) && !(in == 2 && ir == 1 && ib == 3)) continue;
                    if (t_quick() && (in >= 2 || ir == 2)) continue;
                    test_packed_case(k, types[t], ns[in], rowss[ir], nbs[ib]);
                }
    }
    /* Q4_0 batches go through tiles of up to 8 activation rows: one full
     * tile, and full tiles with a last one of 1 or 2 rows */
    test_packed_case(k, EK_Q4_0, 96, 48, 8);
    test_packed_case(k, EK_Q4_0, 4096 + 32, 32, 17);
    test_packed_case(k, EK_Q4_0, 160, 160, 10);
}

/* ---- vector ops ---------------------------------------------------------------- */

static double t_max_rel(const float *a, const float *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (fabs((double)b[i]) + 1e-6);
        if (d > m) m = d;
    }
    return m;
}

static void test_vector_ops(const ek_kernels *k) {
    const ek_kernels *s = ek_kernels_scalar();
    static const int ns[] = {1, 7, 64, 100, 4096 + 3};
    for (int in = 0; in < 5; in++) {
        int n = ns[in];
        float *x = t_alloc(4 * n), *w = t_alloc(4 * n), *a = t_alloc(4 * n), *b = t_alloc(4 * n), *u = t_alloc(4 * n);
        uint16_t *hk = t_alloc(2 * n), *hs = t_alloc(2 * n);
        for (int i = 0; i < n; i++) { x[i] = t_uniform() * 4; w[i] = t_uniform(); u[i] = t_uniform(); }
        const char *kn = ek_kernels_name(k);

        ek_rmsnorm(k, a, x, w, n, 1e-5f);
        ek_rmsnorm(s, b, x, w, n, 1e-5f);
        CHECK(t_max_rel(a, b, n) < 1e-5, "%s rmsnorm n=%d: %g", kn, n, t_max_rel(a, b, n));
        double ss = 0;   /* and the definition, in double */
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        int bad = 0;
        for (int i = 0; i < n; i++) {
            double r = x[i] / sqrt(ss / n + 1e-5) * w[i];
            if (fabs(b[i] - r) > 1e-5 * (fabs(r) + 1e-3)) bad++;
        }
        CHECK(bad == 0, "rmsnorm definition n=%d", n);

        for (int i = 0; i < n; i++) x[i] = t_uniform() * 20;  /* silu over a wide range */
        memcpy(a, x, 4 * n); memcpy(b, x, 4 * n);
        ek_swiglu(k, a, u, n);
        ek_swiglu(s, b, u, n);
        bad = 0;
        for (int i = 0; i < n; i++) {
            double r = x[i] / (1 + exp(-(double)x[i])) * u[i];
            if (fabs(a[i] - r) > 1e-6 * fabs(r) + 1e-30) bad++;
            if (fabs(b[i] - r) > 1e-6 * fabs(r) + 1e-30) bad++;
        }
        CHECK(bad == 0, "%s swiglu n=%d: %d off", kn, n, bad);

        for (int i = 0; i < n; i++) x[i] = t_uniform() * 24 - 12;  /* gelu(tanh) over both tails */
        memcpy(a, x, 4 * n); memcpy(b, x, 4 * n);
        ek_geglu(k, a, u, n);
        ek_geglu(s, b, u, n);
        bad = 0;
        for (int i = 0; i < n; i++) {
            double xd = x[i], r = 0.5 * xd * (1 + tanh(0.7978845608028654 * (xd + 0.044715 * xd * xd * xd))) * u[i];
            if (fabs(a[i] - r) > 2e-6 * fabs(r) + 1e-30 + 1e-7 * fabs(u[i])) bad++;
            if (fabs(b[i] - r) > 2e-6 * fabs(r) + 1e-30 + 1e-7 * fabs(u[i])) bad++;
        }
        CHECK(bad == 0, "%s geglu n=%d: %d off", kn, n, bad);

        memcpy(a, x, 4 * n); memcpy(b, x, 4 * n);
        ek_add(k, a, u, n);
        ek_add(s, b, u, n);
        CHECK(memcmp(a, b, 4 * n) == 0, "%s add n=%d", kn, n);

        /* KV: f16 store is bitwise the scalar conversion (specials included) */
        for (int i = 0; i < n; i++) x[i] = i % 13 == 5 ? t_bits(t_rand()) : t_uniform() * 100;
        for (int i = 0; i < n; i++) if (isnan(x[i])) x[i] = 0;  /* nan payloads may differ */
        if (n > 6) { x[1] = INFINITY; x[2] = 70000.0f; x[3] = 1e-7f; x[4] = -0.0f; x[6] = 65520.0f; }
        ek_kv_store(k, 0, hk, x, n);
        ek_kv_store(s, 0, hs, x, n);
        CHECK(memcmp(hk, hs, 2 * n) == 0, "%s kv_store f16 n=%d", kn, n);
        ek_kv_store(k, 1, a, x, n);
        CHECK(memcmp(a, x, 4 * n) == 0, "%s kv_store f32", kn);

        for (int i = 0; i < n; i++) { x[i] = t_uniform(); w[i] = t_uniform(); }
        ek_kv_store(s, 0, hs, w, n);
        for (int kv = 0; kv < 2; kv++) {
            const void *row = kv ? (const void *)w : (const void *)hs;
            double ref = 0, mag = 0;
            for (int i = 0; i < n; i++) {
                double wi = kv ? w[i] : ek_fp16_to_fp32(hs[i]);
                ref += x[i] * wi;
                mag += fabs(x[i] * wi);
            }
            float dk = ek_kv_dot(k, kv, x, row, n), ds = ek_kv_dot(s, kv, x, row, n);
            CHECK(fabs(dk - ref) <= (n + 8) * 0x1p-24 * mag && fabs(ds - ref) <= (n + 8) * 0x1p-24 * mag,
                  "%s kv_dot type %d n=%d: %g %g %g", kn, kv, n, dk, ds, ref);
            for (int i = 0; i < n; i++) a[i] = b[i] = u[i];
            ek_kv_axpy(k, kv, a, 0.37f, row, n);
            ek_kv_axpy(s, kv, b, 0.37f, row, n);
            bad = 0;
            for (int i = 0; i < n; i++) if (fabsf(a[i] - b[i]) > 1e-6f * (fabsf(b[i]) + 1)) bad++;
            CHECK(bad == 0, "%s kv_axpy type %d n=%d", kn, kv, n);
        }
        free(x); free(w); free(a); free(b); free(u); free(hk); free(hs);
    }
}

/* Many cache rows at once: ek_kv_scores against a double dot per row, and
 * ek_kv_mix bitwise against ek_kv_axpy row by row (its documented chain),
 * for head sizes with and without 8/16/32-element tails, strided rows. */
static void test_kv_many(const ek_kernels *k) {
    static const int ns[] = {64, 128, 72, 40, 7, 1}, npos[] = {1, 3, 4, 5, 37};
    const char *kn = ek_kernels_name(k);
    for (int in = 0; in < 6; in++)
        for (int ip = 0; ip < 5; ip++)
            for (int kv = 0; kv < 2; kv++) {
                const int n = ns[in], np = npos[ip];
                const size_t stride = (size_t)n + 24, esz = kv ? 4 : 2;
                unsigned char *rows = t_alloc(stride * np * esz);
                float *q = t_alloc(sizeof(float) * n), *f = t_alloc(sizeof(float) * stride * np),
                      *sk = t_alloc(sizeof(float) * np), *p = t_alloc(sizeof(float) * np),
                      *mk = t_alloc(sizeof(float) * n), *ma = t_alloc(sizeof(float) * n);
                for (size_t i = 0; i < stride * np; i++) f[i] = t_uniform();
                for (int t = 0; t < np; t++) ek_kv_store(k, kv, rows + (size_t)t * stride * esz, f + (size_t)t * stride, n);
                for (int i = 0; i < n; i++) q[i] = t_uniform();
                for (int t = 0; t < np; t++) p[t] = t_uniform();
                ek_kv_scores(k, kv, q, rows, stride, np, n, 0.125f, sk);
                int bad = 0;
                for (int t = 0; t < np; t++) {
                    double ref = 0, mag = 0;
                    for (int i = 0; i < n; i++) {
                        const unsigned char *r = rows + ((size_t)t * stride + i) * esz;
                        uint16_t h;
                        float w;
                        if (kv) memcpy(&w, r, 4); else { memcpy(&h, r, 2); w = ek_fp16_to_fp32(h); }
                        ref += (double)q[i] * w;
                        mag += fabs((double)q[i] * w);
                    }
                    if (fabs(sk[t] - 0.125 * ref) > (n + 8) * 0x1p-24 * 0.125 * mag + 1e-30) bad++;
                }
                CHECK(bad == 0, "%s kv_scores type %d n=%d n_pos=%d: %d off", kn, kv, n, np, bad);
                ek_kv_mix(k, kv, p, rows, stride, np, n, mk);
                for (int i = 0; i < n; i++) ma[i] = 0.0f;
                for (int t = 0; t < np; t++) ek_kv_axpy(k, kv, ma, p[t], rows + (size_t)t * stride * esz, n);
                CHECK(memcmp(mk, ma, sizeof(float) * n) == 0, "%s kv_mix type %d n=%d n_pos=%d: not the axpy chain", kn,
                      kv, n, np);
                free(rows); free(q); free(f); free(sk); free(p); free(mk); free(ma);
            }
}

static void test_softmax_rope(void) {
    float x[300];
    for (int i = 0; i < 300; i++) x[i] = t_uniform() * 50 + 1000;  /* needs the max shift */
    float y[300];
    memcpy(y, x, sizeof x);
    ek_softmax(y, 300);
    double sum = 0, mx = x[0];
    for (int i = 0; i < 300; i++) if (x[i] > mx) mx = x[i];
    double z = 0;
    for (int i = 0; i < 300; i++) z += exp(x[i] - mx);
    int bad = 0;
    for (int i = 0; i < 300; i++) {
        sum += y[i];
        if (fabs(y[i] - exp(x[i] - mx) / z) > 1e-6 * (exp(x[i] - mx) / z) + 1e-12) bad++;
    }
    CHECK(bad == 0 && fabs(sum - 1) < 1e-5, "softmax: %d off, sum %g", bad, sum);

    /* rope against double precision: two heads of 8 with rope_dim 6 (the
     * last pair passes through), pos 3, freq factors on pair 1 */
    float v[16], r[16], ff[3] = {1.0f, 2.0f, 1.0f};
    for (int i = 0; i < 16; i++) v[i] = r[i] = t_uniform();
    ek_rope_params rp = {6, 0, 10000.0f, 1.0f, 1.0f, ff};
    ek_rope(r, 2, 8, 3, &rp);
    bad = 0;
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++) {
            double x0 = v[h * 8 + 2 * i], x1 = v[h * 8 + 2 * i + 1], e0 = x0, e1 = x1;
            if (i < 3) {
                double th = 3 * pow(10000.0, -2.0 * i / 6) / ff[i];
                e0 = x0 * cos(th) - x1 * sin(th);
                e1 = x0 * sin(th) + x1 * cos(th);
            }
            if (fabs(r[h * 8 + 2 * i] - e0) > 1e-5 || fabs(r[h * 8 + 2 * i + 1] - e1) > 1e-5) bad++;
        }
    CHECK(bad == 0, "rope: %d pairs off", bad);
    /* NEOX pairs (i, i + n_rot/2), partial rotary (n_rot 6 of 8: dims 6, 7
     * pass through), linear scaling and an attention factor on cos/sin */
    memcpy(r, v, sizeof v);
    ek_rope_params np = {6, 1, 10000.0f, 0.25f, 1.5f, ff};
    ek_rope(r, 2, 8, 5, &np);
    bad = 0;
    for (int h = 0; h < 2; h++) {
        for (int i = 0; i < 3; i++) {
            double x0 = v[h * 8 + i], x1 = v[h * 8 + i + 3];
            double th = 5 * pow(10000.0, -2.0 * i / 6) / ff[i] * 0.25;
            double e0 = 1.5 * (x0 * cos(th) - x1 * sin(th)), e1 = 1.5 * (x0 * sin(th) + x1 * cos(th));
            if (fabs(r[h * 8 + i] - e0) > 1e-5 || fabs(r[h * 8 + i + 3] - e1) > 1e-5) bad++;
        }
        if (r[h * 8 + 6] != v[h * 8 + 6] || r[h * 8 + 7] != v[h * 8 + 7]) bad++;
    }
    CHECK(bad == 0, "neox rope: %d pairs off", bad);
    memcpy(r, v, sizeof v);
    ek_rope_params id = {8, 0, 10000.0f, 1.0f, 1.0f, NULL};
    ek_rope(r, 2, 8, 0, &id);
    CHECK(memcmp(r, v, sizeof v) == 0, "rope at pos 0 is the identity");

    /* GELU(tanh) gating and soft-capping against double precision */
    float g[64], u[64], gg[64];
    for (int i = 0; i < 64; i++) { g[i] = gg[i] = 8 * t_uniform() - 4; u[i] = t_uniform(); }
    ek_geglu(ek_kernels_scalar(), gg, u, 64);
    bad = 0;
    for (int i = 0; i < 64; i++) {
        double xg = g[i], e = 0.5 * xg * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (xg + 0.044715 * xg * xg * xg))) * u[i];
        if (fabs(gg[i] - e) > 1e-6 * (1 + fabs(e))) bad++;
    }
    CHECK(bad == 0, "geglu: %d off", bad);
    for (int i = 0; i < 64; i++) gg[i] = 100 * g[i];
    ek_softcap(gg, 64, 30.0f);
    bad = 0;
    for (int i = 0; i < 64; i++)
        if (fabs(gg[i] - 30 * tanh(100.0 * g[i] / 30)) > 1e-5) bad++;
    CHECK(bad == 0, "softcap: %d off", bad);
}

int main(void) {
    test_type_table();
    test_fp16();
    test_bf16();
    test_quantizer_bytes();
    test_round_trip();
    test_iq4_dequant_by_hand();
    test_iq4_quantize_by_hand();
    test_iq4_ggml_fixtures();
    test_kquant_ggml_fixtures();
    test_kquant_round_trip();
    test_softmax_rope();
    const ek_kernels *sets[8];
    int ns = ek_kernels_available(sets, 8);
    CHECK(ns >= 1 && sets[0] == ek_kernels_scalar(), "the scalar set comes first");
    CHECK(ek_kernels_best() == sets[ns - 1], "best is the last available");
    for (int i = 0; i < ns; i++) {
        printf("kernel set %s\n", ek_kernels_name(sets[i]));
        test_matmul(sets[i]);
        test_packed(sets[i]);
        test_vector_ops(sets[i]);
        test_kv_many(sets[i]);
    }
    return test_summary("test_kernels");
}
