/* kernels_x86.c - the x86-64 kernel sets: "avx2" (AVX2 + FMA + F16C),
 * "avx512" (AVX-512 F/BW/DQ/VL + VNNI) and "amx" (avx512 plus AMX-INT8 tiles
 * for Q4_0/Q8_0 prompts and AMX-BF16 tiles for F16/BF16 prompts).  Every function carries its own target attribute,
 * so one build without -march flags runs anywhere and picks a set at run
 * time from CPUID (and XGETBV: the OS must save the wider registers too;
 * for AMX, Linux must also grant the process the tile state).
 *
 * Determinism.  Within a set, an output Y[b][r] is always computed by the
 * same sequence of float operations, whichever tile, row split or nb
 * produced it:
 *   - the float kernels and the AVX2 Q4_1/Q5_0/Q5_1/IQ4 kernels keep one
 *     vector accumulator per output, blocks in order, one horizontal sum at
 *     the end; tiles of several weight rows x activation rows only share
 *     loads;
 *   - the AVX-512 quantized kernels and the AVX2 Q4_0, Q8_0 and k-quant
 *     ones compute each block's (or superblock's) integer dot product
 *     exactly and feed it to one scalar float chain per output (see
 *     "AVX-512 VNNI quantized matmul", "AVX2 Q4_0 matmul", "AVX2 k-quant
 *     matmul"), so how the integer part is vectorized (rows in lanes,
 *     panels, AMX tiles, a scalar tail) does not matter.
 * One exception: the amx set's F16/BF16 batches of EKX_AMX_MIN rows or more
 * run on bf16 tiles (see "AMX-BF16 float matmul"): still the same bits for
 * any row split and any batch of that size, but not those of fewer rows. */
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)

/* g++ 12 flags the deliberately undefined vectors inside its own AVX-512
 * intrinsics (_mm512_undefined_*) as maybe-uninitialized (GCC bug 105593);
 * popped at the end of the file so the single-file build keeps the check
 * elsewhere. */
#if defined(__cplusplus) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>
#if defined(__GNUC__) || defined(__clang__)
#include <cpuid.h>
#else
#include <intrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The AMX set is compiled in unless EMBER_NO_AMX is defined.  Windows
 * builds leave it out unless EMBER_AMX is defined: Windows enables the tile
 * state itself (no permission request), but that path is untested, and
 * under wine the process would get Linux's XCR0 without Linux's permission. */
#if defined(_WIN32) && !defined(EMBER_AMX) && !defined(EMBER_NO_AMX)
#define EMBER_NO_AMX
#endif

#define EKX_T_AVX2 "avx2,fma,f16c"
#define EKX_T_AVX512 "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c"
#define EKX_T_AMX EKX_T_AVX512 ",amx-tile,amx-int8,amx-bf16,avx512bf16"
#if defined(__GNUC__) || defined(__clang__)
#define EKX_TARGET(t) __attribute__((target(t)))
#define EKX_TARGET_INLINE(t) static inline __attribute__((always_inline, target(t)))
/* The value v in a register here: keeps the compiler from regrouping a
 * chain of integer adds into a tree of many live products (which spills). */
#define EKX_KEEP(v) __asm__("" : "+x"(v))
/* Fully unroll the small loops over a tile's rows and activation rows, so
 * the accumulator arrays live in registers. */
#define EKX_UNROLL _Pragma("GCC unroll 8")
#define EKX_UNROLL16 _Pragma("GCC unroll 16")
#else
/* MSVC compiles every instruction set's intrinsics without target flags */
#define EKX_TARGET(t)
#define EKX_TARGET_INLINE(t) static __forceinline
#define EKX_KEEP(v) ((void)0)
#define EKX_UNROLL
#define EKX_UNROLL16
#endif
#define EKX_AVX2 EKX_TARGET(EKX_T_AVX2)
#define EKX_AVX2_INLINE EKX_TARGET_INLINE(EKX_T_AVX2)
#define EKX_AVX512 EKX_TARGET(EKX_T_AVX512)
#define EKX_AVX512_INLINE EKX_TARGET_INLINE(EKX_T_AVX512)
#define EKX_AMX EKX_TARGET(EKX_T_AMX)
#define EKX_AMX_INLINE EKX_TARGET_INLINE(EKX_T_AMX)

#if !defined(EMBER_NO_AMX) && defined(_WIN32) && defined(__GNUC__) && !defined(__clang__)
/* GCC's amxtileintrin.h passes the stride as a long, 32 bits on LLP64
 * Windows, which makes the (base, index) address mix 64- and 32-bit
 * registers; the same instructions with a 64-bit stride. */
#undef _tile_loadd
#undef _tile_stored
#define _tile_loadd(dst, base, stride)                                                         \
    __asm__ volatile("{tileloadd\t(%0,%1,1), %%tmm" #dst "|tileloadd\t%%tmm" #dst ", [%0+%1*1]}" \
                     ::"r"((const void *)(base)), "r"((long long)(stride)))
#define _tile_stored(dst, base, stride)                                                          \
    __asm__ volatile("{tilestored\t%%tmm" #dst ", (%0,%1,1)|tilestored\t[%0+%1*1], %%tmm" #dst "}" \
                     ::"r"((void *)(base)), "r"((long long)(stride))                             \
                     : "memory")
#endif

/* ---- CPU features ---------------------------------------------------------------- */

/* CPUID leaf/subleaf into r[0..3] = eax, ebx, ecx, edx; 0 if the CPU has no
 * such leaf. */
static int ekx_cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
#if defined(__GNUC__) || defined(__clang__)
    return __get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3]);
#else
    int v[4];
    __cpuid(v, (int)(leaf & 0x80000000u));
    if ((unsigned)v[0] < leaf) return 0;
    __cpuidex(v, (int)leaf, (int)sub);
    for (int i = 0; i < 4; i++) r[i] = (unsigned)v[i];
    return 1;
#endif
}

static uint64_t ekx_xgetbv0(void) {
#if defined(__GNUC__) || defined(__clang__)
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
#else
    return (uint64_t)_xgetbv(0);
#endif
}

#if defined(EMBER_NO_AMX) || !(defined(__linux__) || defined(_WIN32))
static int ekx_amx_permit(void) { return 0; }
#else
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif
static int ekx_amx_permit(void) {
    /* EMBER_NO_AMX=1 skips the request (e.g. under a seccomp filter that
     * kills on unknown arch_prctl codes) */
    const char *no = getenv("EMBER_NO_AMX");
    if (no && *no && *no != '0') return 0;
#ifdef _WIN32
    return 1; /* Windows grants the tile state to every process whose XCR0 shows it */
#else
    /* ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#endif
}
#endif

/* bit 0: avx2+fma+f16c usable; bit 1: avx512 f/bw/dq/vl/vnni usable; bit 2:
 * AMX-INT8 and AMX-BF16 (and AVX512-BF16) usable */
static int ekx_features(void) {
    static int cached = -1;
    if (cached >= 0) return cached;
    unsigned r[4], a, b, c, d, f = 0;
    if (ekx_cpuid(1, 0, r)) {
        c = r[2];
        int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
        uint64_t xcr0 = osxsave ? ekx_xgetbv0() : 0;
        int os_ymm = (xcr0 & 0x6) == 0x6, os_zmm = (xcr0 & 0xe6) == 0xe6;
        if (ekx_cpuid(7, 0, r)) {
            b = r[1], c = r[2], d = r[3];
            int avx2 = (b >> 5) & 1, f512 = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1,
                vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
            if (avx && avx2 && fma && f16c && os_ymm) f |= 1;
            if ((f & 1) && f512 && dq && bw && vl && vnni && os_zmm) f |= 2;
            /* AMX: CPUID, the OS's XCR0 bits for the tile state, and the
             * process's permission to use it (Linux asks for it once) */
            int amx_tile = (d >> 24) & 1, amx_int8 = (d >> 25) & 1, amx_bf16 = (d >> 22) & 1, avx512_bf16 = 0;
            if (ekx_cpuid(7, 1, r)) a = r[0], avx512_bf16 = (a >> 5) & 1;
            if ((f & 2) && amx_tile && amx_int8 && amx_bf16 && avx512_bf16 && (xcr0 & 0x60000) == 0x60000 &&
                ekx_amx_permit())
                f |= 4;
        }
    }
    cached = (int)f;
    return cached;
}

/* ---- AVX2 helpers -------------------------------------------------------------------- */

EKX_AVX2_INLINE float ekx_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

EKX_AVX2_INLINE float ekx_h2f(uint16_t h) { return _cvtsh_ss(h); }

/* Weight element kinds of the float matmul. */
enum { EKX_W_F32, EKX_W_F16, EKX_W_BF16 };

/* 8 weights as floats: F16 through F16C, BF16 by a 16-bit left shift. */
EKX_AVX2_INLINE __m256 ekx_load8(const uint8_t *p, int kind) {
    if (kind == EKX_W_F32) return _mm256_loadu_ps((const float *)p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (kind == EKX_W_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

EKX_AVX2_INLINE float ekx_load1(const uint8_t *p, int kind) {
    uint16_t h;
    if (kind == EKX_W_F32) { float f; memcpy(&f, p, 4); return f; }
    memcpy(&h, p, 2);
    return kind == EKX_W_F16 ? ekx_h2f(h) : ek_bf16_to_fp32(h);
}

/* acc + a * b, rounded once: the scalar tail is an explicit fma so that
 * every instantiation rounds it the same way. */
EKX_AVX2_INLINE float ekx_fma1(float a, float b, float acc) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(acc)));
}

/* ---- AVX2 float matmul (F32, F16, BF16 weights; F32 activations) ---------------------- */

#define EKX_FRT 4 /* rows per tile */
#define EKX_FBT 3 /* activation rows per tile: 12 accumulators + loads fit 16 ymm */

EKX_AVX2_INLINE void ekx_tile_float(int kind, int RT, int BT, const uint8_t *W, size_t wrow, int esz,
                                    const float *X, int n, float *Y, int ldy, int r, int b, int prefetch) {
    __m256 acc[EKX_FRT][EKX_FBT];
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) acc[i][j] = _mm256_setzero_ps();
    const int n8 = n & ~7;
    for (int k = 0; k < n8; k += 8) {
        __m256 xv[EKX_FBT];
        EKX_UNROLL
        for (int j = 0; j < BT; j++) xv[j] = _mm256_loadu_ps(X + (size_t)(b + j) * n + k);
        /* generation: fetch the next tile's rows at this tile's pace (the
         * AVX-512 twin explains) */
        if (prefetch && ((k * esz) & 63) == 0)
            EKX_UNROLL
            for (int i = 0; i < RT; i++)
                _mm_prefetch((const char *)W + (size_t)(r + RT + i) * wrow + (size_t)k * esz, _MM_HINT_T0);
        EKX_UNROLL
        for (int i = 0; i < RT; i++) {
            __m256 w = ekx_load8(W + (size_t)(r + i) * wrow + (size_t)k * esz, kind);
            EKX_UNROLL
            for (int j = 0; j < BT; j++) acc[i][j] = _mm256_fmadd_ps(w, xv[j], acc[i][j]);
        }
    }
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) {
            float s = ekx_hsum(acc[i][j]);
            const uint8_t *wr = W + (size_t)(r + i) * wrow;
            const float *xr = X + (size_t)(b + j) * n;
            for (int k = n8; k < n; k++) s = ekx_fma1(ekx_load1(wr + (size_t)k * esz, kind), xr[k], s);
            Y[(size_t)(b + j) * ldy + r + i] = s;
        }
}

/* BF16 prompt batches (nb >= EKX_FBLK_MIN): the same chains, in cache
 * blocks.  A block of EKX_FRB weight rows and EKX_FBB activation rows is
 * walked in column chunks of EKX_FKC2.  Each chunk of the weight rows is
 * converted to F32 (exactly) once into wp, where ekx_tile_float converts
 * every weight once per 3 activation rows (~40 times a 128-token prompt, two
 * instructions per 8 BF16 weights); 4 x 3 register tiles then run over wp
 * and a 3-row piece of X, both in L1, and the 8-lane accumulators of the
 * block's outputs wait in facc between chunks.  Lane l of an output still
 * sums k = l, l+8, ... in order, then the same horizontal sum and scalar
 * tail, so the bits equal ekx_tile_float's.  On the Zen 3 guest this took
 * TinyLlama's BF16 matmuls, one thread, 128 tokens, from ~38 to ~65 GFLOP/s.
 * F16 stays on ekx_tile_float: there one F16C instruction converts 8
 * weights, and the blocked walk (any of 16/32 rows x 24..96 activation rows
 * x 128..1024 columns) measured 10-15% slower than streaming the weight rows
 * once past all activation rows (~78 GFLOP/s, 77% of the FMA peak). */
#ifndef EKX_FBLK_MIN
#define EKX_FBLK_MIN 4
#endif
#ifndef EKX_FRB
#define EKX_FRB 16   /* weight rows per block (multiple of EKX_FRT) */
#endif
#ifndef EKX_FBB
#define EKX_FBB 48   /* activation rows per block (multiple of EKX_FBT) */
#endif
#ifndef EKX_FKC2
#define EKX_FKC2 256 /* columns per chunk (multiple of 8): wp is 16 KB */
#endif

/* (defined with the AVX-512 float matmul, which blocks the same way) */
EKX_AVX2_INLINE void ekx_prefetch_rows(const uint8_t *p, size_t stride, int rows, size_t bytes);

EKX_AVX2_INLINE void ekx_ftile_blk(int RT, int BT, const float *wp, const float *xp, int kc, int ldx, __m256 *facc) {
    __m256 acc[EKX_FRT][EKX_FBT];
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) acc[i][j] = facc[i * EKX_FBB + j];
    for (int k = 0; k < kc; k += 8) {
        __m256 xv[EKX_FBT];
        EKX_UNROLL
        for (int j = 0; j < BT; j++) xv[j] = _mm256_loadu_ps(xp + (size_t)j * ldx + k);
        EKX_UNROLL
        for (int i = 0; i < RT; i++) {
            const __m256 w = _mm256_load_ps(wp + i * EKX_FKC2 + k);
            EKX_UNROLL
            for (int j = 0; j < BT; j++) acc[i][j] = _mm256_fmadd_ps(w, xv[j], acc[i][j]);
        }
    }
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) facc[i * EKX_FBB + j] = acc[i][j];
}

EKX_AVX2_INLINE void ekx_matmul_float_blocked(int kind, const void *Wv, int n, const float *X, int nb,
                                              float *Y, int ldy, int r0, int r1) {
    const int esz = kind == EKX_W_F32 ? 4 : 2;
    const size_t wrow = (size_t)n * esz;
    const uint8_t *W = (const uint8_t *)Wv;
    const int n8 = n & ~7;
    EC_ALIGNAS(32) float wp[EKX_FRB * EKX_FKC2];
    EC_ALIGNAS(32) __m256 facc[EKX_FRB * EKX_FBB];
    for (int rb = r0; rb < r1; rb += EKX_FRB) {
        const int nr = r1 - rb < EKX_FRB ? r1 - rb : EKX_FRB;
        for (int bb = 0; bb < nb; bb += EKX_FBB) {
            const int nx = nb - bb < EKX_FBB ? nb - bb : EKX_FBB;
            for (int i = 0; i < nr; i++)
                for (int j = 0; j < nx; j++) facc[i * EKX_FBB + j] = _mm256_setzero_ps();
            for (int k0 = 0; k0 < n8; k0 += EKX_FKC2) {
                const int kc = n8 - k0 < EKX_FKC2 ? n8 - k0 : EKX_FKC2;
                for (int i = 0; i < nr; i++)
                    for (int k = 0; k < kc; k += 8)
                        _mm256_store_ps(wp + i * EKX_FKC2 + k, ekx_load8(W + (size_t)(rb + i) * wrow + (size_t)(k0 + k) * esz, kind));
                /* short row pieces defeat the hardware prefetcher: fetch the
                 * next chunk (or the next block's first) while this one runs */
                if (k0 + kc < n8)
                    ekx_prefetch_rows(W + (size_t)rb * wrow + (size_t)(k0 + kc) * esz, wrow, nr, (size_t)EKX_FKC2 * esz);
                else if (rb + nr < r1 && bb + nx >= nb)
                    ekx_prefetch_rows(W + (size_t)(rb + nr) * wrow, wrow, r1 - rb - nr < EKX_FRB ? r1 - rb - nr : EKX_FRB,
                                      (size_t)EKX_FKC2 * esz);
                for (int j = 0; j < nx; j += EKX_FBT) {
                    const int bt = nx - j < EKX_FBT ? nx - j : EKX_FBT;
                    const float *xt = X + (size_t)(bb + j) * n + k0;
                    int i = 0;
                    for (; i + EKX_FRT <= nr; i += EKX_FRT) {
                        const float *wt = wp + i * EKX_FKC2;
                        __m256 *fa = facc + i * EKX_FBB + j;
                        if (bt == 3) ekx_ftile_blk(EKX_FRT, 3, wt, xt, kc, n, fa);
                        else if (bt == 2) ekx_ftile_blk(EKX_FRT, 2, wt, xt, kc, n, fa);
                        else ekx_ftile_blk(EKX_FRT, 1, wt, xt, kc, n, fa);
                    }
                    for (; i < nr; i++) {
                        const float *wt = wp + i * EKX_FKC2;
                        __m256 *fa = facc + i * EKX_FBB + j;
                        if (bt == 3) ekx_ftile_blk(1, 3, wt, xt, kc, n, fa);
                        else if (bt == 2) ekx_ftile_blk(1, 2, wt, xt, kc, n, fa);
                        else ekx_ftile_blk(1, 1, wt, xt, kc, n, fa);
                    }
                }
            }
            /* the horizontal sums and the scalar tail, as ekx_tile_float */
            for (int i = 0; i < nr; i++) {
                const uint8_t *wr = W + (size_t)(rb + i) * wrow;
                for (int j = 0; j < nx; j++) {
                    const float *xr = X + (size_t)(bb + j) * n;
                    float s = ekx_hsum(facc[i * EKX_FBB + j]);
                    for (int k = n8; k < n; k++) s = ekx_fma1(ekx_load1(wr + (size_t)k * esz, kind), xr[k], s);
                    Y[(size_t)(bb + j) * ldy + rb + i] = s;
                }
            }
        }
    }
}

EKX_AVX2_INLINE void ekx_matmul_float(int kind, const void *W, int n, const void *X, int nb,
                                      float *Y, int ldy, int r0, int r1) {
    if (kind == EKX_W_BF16 && nb >= EKX_FBLK_MIN) {
        ekx_matmul_float_blocked(kind, W, n, (const float *)X, nb, Y, ldy, r0, r1);
        return;
    }
    const int esz = kind == EKX_W_F32 ? 4 : 2;
    const size_t wrow = (size_t)n * esz;
    int r = r0;
    for (; r + EKX_FRT <= r1; r += EKX_FRT) {
        int b = 0;
        for (; b + EKX_FBT <= nb; b += EKX_FBT) ekx_tile_float(kind, EKX_FRT, EKX_FBT, (const uint8_t *)W, wrow, esz, (const float *)X, n, Y, ldy, r, b, 0);
        for (; b < nb; b++) ekx_tile_float(kind, EKX_FRT, 1, (const uint8_t *)W, wrow, esz, (const float *)X, n, Y, ldy, r, b, r + 2 * EKX_FRT <= r1);
    }
    for (; r < r1; r++) {
        int b = 0;
        for (; b + EKX_FBT <= nb; b += EKX_FBT) ekx_tile_float(kind, 1, EKX_FBT, (const uint8_t *)W, wrow, esz, (const float *)X, n, Y, ldy, r, b, 0);
        for (; b < nb; b++) ekx_tile_float(kind, 1, 1, (const uint8_t *)W, wrow, esz, (const float *)X, n, Y, ldy, r, b, 0);
    }
}

static EKX_AVX2 void ekx_matmul_f32_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_float(EKX_W_F32, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_f16_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_float(EKX_W_F16, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_bf16_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_float(EKX_W_BF16, W, n, X, nb, Y, ldy, r0, r1);
}

/* ---- AVX2 legacy-quant matmul (Q4_1, Q5_0, Q5_1 weights; Q8_0 activations) ---------------
 * Per block the integer dot product is exact, in 8 int32 lanes (each the
 * sum of 4 adjacent byte products); it is converted to float and
 * accumulated with one fma by d_w * d_x.  Q4_0 and Q8_0 have kernels of
 * their own below, one float step per block and row. */

enum { EKX_Q4_0, EKX_Q8_0, EKX_Q4_1, EKX_Q5_0, EKX_Q5_1 };
/* block bytes, offset of the quants, whether the type has a min (value = d q + m) or a 5th bit */
#define EKX_WBS(kind) ((kind) == EKX_Q4_0 ? 18 : (kind) == EKX_Q8_0 ? 34 : (kind) == EKX_Q4_1 ? 20 : (kind) == EKX_Q5_0 ? 22 : 24)
#define EKX_QSOFF(kind) ((kind) == EKX_Q4_1 ? 4 : (kind) == EKX_Q5_0 ? 6 : (kind) == EKX_Q5_1 ? 8 : 2)
#define EKX_HASMIN(kind) ((kind) == EKX_Q4_1 || (kind) == EKX_Q5_1)
#define EKX_IS5(kind) ((kind) == EKX_Q5_0 || (kind) == EKX_Q5_1)

#define EKX_QRT 4 /* rows per tile */
#define EKX_QBT 2 /* activation rows per tile */

/* sum of 4 adjacent u8 * s8 products, per int32 lane (no saturation for
 * |u| <= 128 and |s| <= 127, or u <= 15) */
EKX_AVX2_INLINE __m256i ekx_dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* The 32 nibbles of a q4_0 block as bytes 0..15, in element order (low
 * nibbles are elements 0..15, high nibbles 16..31). */
EKX_AVX2_INLINE __m256i ekx_unpack_q4(const uint8_t *qs) {
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* 0xFF for the bytes j whose bit j of the 32 bits at p is set */
EKX_AVX2_INLINE __m256i ekx_bytes_from_bits32(const uint8_t *p) {
    uint32_t x32;
    memcpy(&x32, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* q4_0, q4_1, q5_0, q5_1: the 32 unsigned quants of a block in element order */
EKX_AVX2_INLINE __m256i ekx_unpack_q45(int kind, const uint8_t *wb) {
    __m256i q = ekx_unpack_q4(wb + EKX_QSOFF(kind));
    if (EKX_IS5(kind))
        q = _mm256_or_si256(q, _mm256_and_si256(ekx_bytes_from_bits32(wb + (kind == EKX_Q5_0 ? 2 : 4)), _mm256_set1_epi8(0x10)));
    return q;
}

/* Per block: acc += float(dot lanes) * (d_w * d_x); with a min, also
 * acc += float(sum(x) lanes) * (m_w * d_x). */
EKX_AVX2_INLINE void ekx_tile_q(int kind, int RT, int BT, const uint8_t *W, size_t wrow, const uint8_t *X,
                                size_t xrow, int nblk, float *Y, int ldy, int r, int b) {
    __m256 acc[EKX_QRT][EKX_QBT];
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) acc[i][j] = _mm256_setzero_ps();
    const int wbs = EKX_WBS(kind);
    for (int k = 0; k < nblk; k++) {
        __m256i xq[EKX_QBT], xc[EKX_QBT];
        __m256 dx[EKX_QBT], xs[EKX_QBT];
        EKX_UNROLL
        for (int j = 0; j < BT; j++) {
            const ek_block_q8_0 *xb = (const ek_block_q8_0 *)(X + (size_t)(b + j) * xrow) + k;
            xq[j] = _mm256_loadu_si256((const __m256i *)xb->qs);
            dx[j] = _mm256_set1_ps(ekx_h2f(xb->d));
            /* q5_0 stores q + 16: dot(q, x) = dot(q + 16, x) - dot(16, x) */
            if (kind == EKX_Q5_0) xc[j] = ekx_dot_u8s8(_mm256_set1_epi8(16), xq[j]);
            if (EKX_HASMIN(kind)) xs[j] = _mm256_cvtepi32_ps(ekx_dot_u8s8(_mm256_set1_epi8(1), xq[j]));
        }
        EKX_UNROLL
        for (int i = 0; i < RT; i++) {
            const uint8_t *wb = W + (size_t)(r + i) * wrow + (size_t)k * wbs;
            uint16_t dh;
            memcpy(&dh, wb, 2);
            const __m256 dw = _mm256_set1_ps(ekx_h2f(dh));
            const __m256i wu = ekx_unpack_q45(kind, wb);
            __m256 dm = _mm256_setzero_ps();
            if (EKX_HASMIN(kind)) { memcpy(&dh, wb + 2, 2); dm = _mm256_set1_ps(ekx_h2f(dh)); }
            EKX_UNROLL
            for (int j = 0; j < BT; j++) {
                __m256i p = ekx_dot_u8s8(wu, xq[j]);
                if (kind == EKX_Q5_0) p = _mm256_sub_epi32(p, xc[j]);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw, dx[j]), acc[i][j]);
                if (EKX_HASMIN(kind)) acc[i][j] = _mm256_fmadd_ps(xs[j], _mm256_mul_ps(dm, dx[j]), acc[i][j]);
            }
        }
    }
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) Y[(size_t)(b + j) * ldy + r + i] = ekx_hsum(acc[i][j]);
}

EKX_AVX2_INLINE void ekx_matmul_q(int kind, const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                  int r0, int r1) {
    const int nblk = n / 32;
    const size_t wrow = (size_t)nblk * EKX_WBS(kind), xrow = (size_t)nblk * 34;
    int r = r0;
    for (; r + EKX_QRT <= r1; r += EKX_QRT) {
        int b = 0;
        for (; b + EKX_QBT <= nb; b += EKX_QBT) ekx_tile_q(kind, EKX_QRT, EKX_QBT, (const uint8_t *)W, wrow, (const uint8_t *)X, xrow, nblk, Y, ldy, r, b);
        for (; b < nb; b++) ekx_tile_q(kind, EKX_QRT, 1, (const uint8_t *)W, wrow, (const uint8_t *)X, xrow, nblk, Y, ldy, r, b);
    }
    for (; r < r1; r++) {
        int b = 0;
        for (; b + EKX_QBT <= nb; b += EKX_QBT) ekx_tile_q(kind, 1, EKX_QBT, (const uint8_t *)W, wrow, (const uint8_t *)X, xrow, nblk, Y, ldy, r, b);
        for (; b < nb; b++) ekx_tile_q(kind, 1, 1, (const uint8_t *)W, wrow, (const uint8_t *)X, xrow, nblk, Y, ldy, r, b);
    }
}

static EKX_AVX2 void ekx_matmul_q4_1_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_q(EKX_Q4_1, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q5_0_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_q(EKX_Q5_0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q5_1_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_q(EKX_Q5_1, W, n, X, nb, Y, ldy, r0, r1);
}

/* ---- AVX2 Q4_0 matmul: exact block dot products, packed or not -----------------------
 * Y[b][r] is one float chain over the blocks k in order,
 *     acc = fma(float(idot_k), d_w * d_x, acc),   idot_k = sum (q - 8) x, exact,
 * whichever tile, layout (packed, kernels.h) or batch computes it, so the
 * packed kernel gives the unpacked kernel's bits.  The packed kernel holds
 * 8 rows in the 8 int32 lanes: a 32-byte load is dword m of 8 rows (4 low
 * nibbles: elements 4m..4m+3; 4 high: 16+4m..), multiplied by that dword of
 * the activations broadcast, so nothing is reduced across lanes and the 8
 * rows' scales are one fp16 load.  The -8 offset is taken out as
 * 8 * sum(x) per activation block, computed once per call where it fits. */

#define EKX_Q4_SUMS 4096   /* ints of activation block sums kept on the stack */
#define EKX_Q4_NBB 16      /* activation rows per pass over a packed group */

/* 8 * the sum of the 32 quants of a Q8_0 block */
EKX_AVX2_INLINE int32_t ekx_q8_0_sum8(const uint8_t *xb) {
    const __m256i x = _mm256_loadu_si256((const __m256i *)(xb + 2));
    const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), x), _mm256_set1_epi16(1));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
    return _mm_cvtsi128_si32(t);
}

EKX_AVX2_INLINE __m256i ekx_bcast32_avx2(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* The activation sums of rows b..b+nbb: sums[j * nblk + k]; 0 if they do
 * not fit (then the kernels compute them per block). */
EKX_AVX2_INLINE int ekx_q4_0_sums(const uint8_t *X, size_t xrow, int nblk, int b, int nbb, int32_t *sums) {
    if ((size_t)nbb * nblk > EKX_Q4_SUMS) return 0;
    for (int j = 0; j < nbb; j++)
        for (int k = 0; k < nblk; k++) sums[j * nblk + k] = ekx_q8_0_sum8(X + (size_t)(b + j) * xrow + (size_t)k * 34);
    return 1;
}

#define EKX_Q4BT 2 /* activation rows per packed tile (16 weight rows) */

/* 16 packed rows (group G of nblk blocks) x BT activation rows from b. */
EKX_AVX2_INLINE void ekx_tile_q4_0_packed(int BT, const uint8_t *G, int nblk, const uint8_t *X, size_t xrow,
                                          const int32_t *sums, float *Y, int ldy, int r, int b, int prefetch) {
    __m256 acc[2][EKX_Q4BT];
    EKX_UNROLL
    for (int h = 0; h < 2; h++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) acc[h][j] = _mm256_setzero_ps();
    const uint8_t *S = G + (size_t)nblk * 256;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int k = 0; k < nblk; k++) {
        const uint8_t *q = G + (size_t)k * 256;
        /* generation: the next group's bytes at this group's pace */
        if (prefetch) {
            _mm_prefetch((const char *)q + (size_t)nblk * 288, _MM_HINT_T0);
            _mm_prefetch((const char *)q + (size_t)nblk * 288 + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)q + (size_t)nblk * 288 + 128, _MM_HINT_T0);
            _mm_prefetch((const char *)q + (size_t)nblk * 288 + 192, _MM_HINT_T0);
        }
        __m256i s16[2][EKX_Q4BT];
        EKX_UNROLL
        for (int h = 0; h < 2; h++)
            EKX_UNROLL
            for (int j = 0; j < BT; j++) s16[h][j] = _mm256_setzero_si256();
        /* int16 lanes: 8 maddubs of pairs <= 2 * 15 * 127 stay below 2^15 */
        EKX_UNROLL
        for (int m = 0; m < 4; m++)
            EKX_UNROLL
            for (int h = 0; h < 2; h++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 64 * m + 32 * h));
                const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                EKX_UNROLL
                for (int j = 0; j < BT; j++) {
                    const uint8_t *xq = X + (size_t)(b + j) * xrow + (size_t)k * 34 + 2;
                    s16[h][j] = _mm256_add_epi16(s16[h][j], _mm256_maddubs_epi16(lo, ekx_bcast32_avx2(xq + 4 * m)));
                    s16[h][j] = _mm256_add_epi16(s16[h][j], _mm256_maddubs_epi16(hi, ekx_bcast32_avx2(xq + 16 + 4 * m)));
                    EKX_KEEP(s16[h][j]);
                }
            }
        EKX_UNROLL
        for (int j = 0; j < BT; j++) {
            const uint8_t *xb = X + (size_t)(b + j) * xrow + (size_t)k * 34;
            uint16_t dh;
            memcpy(&dh, xb, 2);
            const __m256 dx = _mm256_set1_ps(ekx_h2f(dh));
            const __m256i corr = _mm256_set1_epi32(sums ? sums[j * nblk + k] : ekx_q8_0_sum8(xb));
            EKX_UNROLL
            for (int h = 0; h < 2; h++) {
                const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(S + 32 * k + 16 * h)));
                const __m256i idot = _mm256_sub_epi32(_mm256_madd_epi16(s16[h][j], _mm256_set1_epi16(1)), corr);
                acc[h][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idot), _mm256_mul_ps(dw, dx), acc[h][j]);
            }
        }
    }
    EKX_UNROLL
    for (int h = 0; h < 2; h++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) _mm256_storeu_ps(Y + (size_t)(b + j) * ldy + r + 8 * h, acc[h][j]);
}

/* Small batches (several contexts stepped together, short prompts): a
 * group of 16 rows x BT <= 4 activation rows, block by block.  Each
 * 32-byte load of weights is unpacked once for all BT rows and each
 * broadcast of activations serves both 8-row halves, so per 32 products
 * the work is one maddubs, one int16 add and half a broadcast; the
 * per-block float steps read d_x and the -8 correction from tables made
 * once per pass (sums[k * ldt + j], dxs[k * ldt + j]).  The same float
 * chain as the tile above. */
#define EKX_Q4_PASS 16   /* at most this many activation rows per pass (per pair of tables) */
EKX_AVX2_INLINE void ekx_tile_q4_0_small(int BT, const uint8_t *G, int nblk, const uint8_t *X, size_t xrow,
                                         const int32_t *sums, const float *dxs, int ldt, float *Y, int ldy, int r) {
    __m256 acc[2][4];
    EKX_UNROLL
    for (int j = 0; j < BT; j++) acc[0][j] = acc[1][j] = _mm256_setzero_ps();
    const uint8_t *S = G + (size_t)nblk * 256;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int k = 0; k < nblk; k++) {
        const uint8_t *q = G + (size_t)k * 256, *xk = X + (size_t)k * 34 + 2;
        __m256i s16[2][4];
        EKX_UNROLL
        for (int m = 0; m < 4; m++) {
            const __m256i v0 = _mm256_loadu_si256((const __m256i *)(q + 64 * m));
            const __m256i v1 = _mm256_loadu_si256((const __m256i *)(q + 64 * m + 32));
            const __m256i lo0 = _mm256_and_si256(v0, m4), hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m4);
            const __m256i lo1 = _mm256_and_si256(v1, m4), hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m4);
            EKX_UNROLL
            for (int j = 0; j < BT; j++) {
                const uint8_t *xq = xk + (size_t)j * xrow;
                const __m256i bl = ekx_bcast32_avx2(xq + 4 * m), bh = ekx_bcast32_avx2(xq + 16 + 4 * m);
                const __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(lo0, bl), _mm256_maddubs_epi16(hi0, bh));
                const __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(lo1, bl), _mm256_maddubs_epi16(hi1, bh));
                s16[0][j] = m == 0 ? p0 : _mm256_add_epi16(s16[0][j], p0);
                s16[1][j] = m == 0 ? p1 : _mm256_add_epi16(s16[1][j], p1);
                EKX_KEEP(s16[0][j]);
                EKX_KEEP(s16[1][j]);
            }
        }
        EKX_UNROLL
        for (int h = 0; h < 2; h++) {
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(S + 32 * k + 16 * h)));
            EKX_UNROLL
            for (int j = 0; j < BT; j++) {
                const __m256i idot = _mm256_sub_epi32(_mm256_madd_epi16(s16[h][j], _mm256_set1_epi16(1)),
                                                      _mm256_set1_epi32(sums[k * ldt + j]));
                acc[h][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idot), _mm256_mul_ps(dw, _mm256_set1_ps(dxs[k * ldt + j])),
                                            acc[h][j]);
            }
        }
    }
    EKX_UNROLL
    for (int h = 0; h < 2; h++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) _mm256_storeu_ps(Y + (size_t)j * ldy + r + 8 * h, acc[h][j]);
}

/* One pass: rows r0..r1 x activation rows b..b+bt (bt * nblk <=
 * EKX_Q4_SUMS), per group tiles of 4 activation rows, so the group's
 * weights come from memory once per pass and from cache for the other
 * tiles. */
static EKX_AVX2 void ekx_q4_0_small(const uint8_t *W, size_t wrow, int nblk, const uint8_t *X, size_t xrow, int b,
                                    int bt, float *Y, int ldy, int r0, int r1) {
    int32_t sums[EKX_Q4_SUMS];
    float dxs[EKX_Q4_SUMS];
    X += (size_t)b * xrow;
    Y += (size_t)b * ldy;
    for (int k = 0; k < nblk; k++)
        for (int j = 0; j < bt; j++) {
            const uint8_t *xb = X + (size_t)j * xrow + (size_t)k * 34;
            uint16_t dh;
            memcpy(&dh, xb, 2);
            dxs[k * bt + j] = ekx_h2f(dh);
            sums[k * bt + j] = ekx_q8_0_sum8(xb);
        }
    for (int r = r0; r < r1; r += 16) {
        const uint8_t *G = W + (size_t)r * wrow;
        for (int j = 0; j < bt; j += 4) {
            const uint8_t *Xj = X + (size_t)j * xrow;
            float *Yj = Y + (size_t)j * ldy;
            switch (bt - j < 4 ? bt - j : 4) {
            case 1: ekx_tile_q4_0_small(1, G, nblk, Xj, xrow, sums + j, dxs + j, bt, Yj, ldy, r); break;
            case 2: ekx_tile_q4_0_small(2, G, nblk, Xj, xrow, sums + j, dxs + j, bt, Yj, ldy, r); break;
            case 3: ekx_tile_q4_0_small(3, G, nblk, Xj, xrow, sums + j, dxs + j, bt, Yj, ldy, r); break;
            default: ekx_tile_q4_0_small(4, G, nblk, Xj, xrow, sums + j, dxs + j, bt, Yj, ldy, r); break;
            }
        }
    }
}

static EKX_AVX2 void ekx_matmul_q4_0_packed_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                                 int r0, int r1) {
    const int nblk = n / 32;
    const size_t wrow = (size_t)nblk * 18, xrow = (size_t)nblk * 34;
    /* three or more activation rows: the small-batch tiles, in passes of
     * whole tiles of 4 whose tables fit; one or two rows (generation, pairs
     * of contexts) or rows too long for the tables: the 16 x 2 tiles below */
    int pass = EKX_Q4_SUMS / nblk < EKX_Q4_PASS ? EKX_Q4_SUMS / nblk / 4 * 4 : EKX_Q4_PASS;
    if (nb >= 3 && pass >= 4) {
        for (int b = 0; b < nb; b += pass)
            ekx_q4_0_small((const uint8_t *)W, wrow, nblk, (const uint8_t *)X, xrow, b, nb - b < pass ? nb - b : pass,
                           Y, ldy, r0, r1);
        return;
    }
    int32_t sums[EKX_Q4_SUMS];
    for (int bb = 0; bb < nb; bb += EKX_Q4_NBB) {
        const int nbb = nb - bb < EKX_Q4_NBB ? nb - bb : EKX_Q4_NBB;
        const int have = ekx_q4_0_sums((const uint8_t *)X, xrow, nblk, bb, nbb, sums);
        for (int r = r0; r < r1; r += 16) {
            const uint8_t *G = (const uint8_t *)W + (size_t)r * wrow;
            int j = 0;
            for (; j + EKX_Q4BT <= nbb; j += EKX_Q4BT)
                ekx_tile_q4_0_packed(EKX_Q4BT, G, nblk, (const uint8_t *)X, xrow, have ? sums + j * nblk : NULL, Y,
                                     ldy, r, bb + j, 0);
            for (; j < nbb; j++)
                ekx_tile_q4_0_packed(1, G, nblk, (const uint8_t *)X, xrow, have ? sums + j * nblk : NULL, Y, ldy, r,
                                     bb + j, nb == 1 && r + 32 <= r1);
        }
    }
}

/* Unpacked rows (Q4_0, Q8_0): per row a block's 8 int32 lanes of
 * products; 8 rows' lanes are summed across (exact) into one vector, which
 * then takes the packed kernels' float steps.  Fewer than 8 rows: the same
 * steps, scalar. */
EKX_AVX2_INLINE __m256i ekx_idot_lanes(int kind, const uint8_t *wb, __m256i xq) {
    if (kind == EKX_Q4_0) return ekx_dot_u8s8(ekx_unpack_q4(wb + 2), xq);
    /* signed x signed: |w| * (x with w's sign); |-128| = 128 as u8 */
    const __m256i w = _mm256_loadu_si256((const __m256i *)(wb + 2));
    return ekx_dot_u8s8(_mm256_abs_epi8(w), _mm256_sign_epi8(xq, w));
}

/* the correction a Q4_0 block's stored q + 8 needs: 8 * sum(x) of activation
 * row j's block k, from the table when it was made (have) */
EKX_AVX2_INLINE int32_t ekx_block_corr(int kind, int have, const int32_t *sums, int nblk, int j, int k,
                                       const uint8_t *xb) {
    if (kind != EKX_Q4_0) return 0;
    return have ? sums[j * nblk + k] : ekx_q8_0_sum8(xb);
}

EKX_AVX2_INLINE void ekx_matmul_rowlanes(int kind, const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                         int r0, int r1) {
    const int nblk = n / 32;
    const size_t wrow = (size_t)nblk * EKX_WBS(kind), xrow = (size_t)nblk * 34;
    const uint8_t *Wb = (const uint8_t *)W, *Xb = (const uint8_t *)X;
    int32_t sums[EKX_Q4_SUMS];
    for (int bb = 0; bb < nb; bb += EKX_Q4_NBB) {
        const int nbb = nb - bb < EKX_Q4_NBB ? nb - bb : EKX_Q4_NBB;
        const int have = kind == EKX_Q4_0 && ekx_q4_0_sums(Xb, xrow, nblk, bb, nbb, sums);
        int r = r0;
        for (; r + 8 <= r1; r += 8)
            for (int j = 0; j < nbb; j++) {
                __m256 acc = _mm256_setzero_ps();
                for (int k = 0; k < nblk; k++) {
                    const uint8_t *xb = Xb + (size_t)(bb + j) * xrow + (size_t)k * 34;
                    const __m256i xq = _mm256_loadu_si256((const __m256i *)(xb + 2));
                    __m256i p[8];
                    uint16_t dw[8], dh;
                    EKX_UNROLL
                    for (int i = 0; i < 8; i++) {
                        const uint8_t *wb = Wb + (size_t)(r + i) * wrow + (size_t)k * EKX_WBS(kind);
                        p[i] = ekx_idot_lanes(kind, wb, xq);
                        memcpy(&dw[i], wb, 2);
                    }
                    /* lanes -> rows: hadd pairs, then the two 128-bit halves */
                    const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
                    const __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
                    const __m256i t = _mm256_add_epi32(_mm256_permute2x128_si256(a, c, 0x20),
                                                       _mm256_permute2x128_si256(a, c, 0x31));
                    memcpy(&dh, xb, 2);
                    const __m256i corr = _mm256_set1_epi32(ekx_block_corr(kind, have, sums, nblk, j, k, xb));
                    const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dw)),
                                                   _mm256_set1_ps(ekx_h2f(dh)));
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(t, corr)), d, acc);
                }
                _mm256_storeu_ps(Y + (size_t)(bb + j) * ldy + r, acc);
            }
        for (; r < r1; r++)
            for (int j = 0; j < nbb; j++) {
                float acc = 0.0f;
                for (int k = 0; k < nblk; k++) {
                    const uint8_t *xb = Xb + (size_t)(bb + j) * xrow + (size_t)k * 34;
                    const uint8_t *wb = Wb + (size_t)r * wrow + (size_t)k * EKX_WBS(kind);
                    const __m256i s = ekx_idot_lanes(kind, wb, _mm256_loadu_si256((const __m256i *)(xb + 2)));
                    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
                    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
                    const int32_t idot = _mm_cvtsi128_si32(t) - ekx_block_corr(kind, have, sums, nblk, j, k, xb);
                    uint16_t hw, hx;
                    memcpy(&hw, wb, 2);
                    memcpy(&hx, xb, 2);
                    acc = ekx_fma1((float)idot, ekx_h2f(hw) * ekx_h2f(hx), acc);
                }
                Y[(size_t)(bb + j) * ldy + r] = acc;
            }
    }
}

static EKX_AVX2 void ekx_matmul_q4_0_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                          int r1) {
    ekx_matmul_rowlanes(EKX_Q4_0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q8_0_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                          int r1) {
    ekx_matmul_rowlanes(EKX_Q8_0, W, n, X, nb, Y, ldy, r0, r1);
}

/* ---- AVX2 Q8_0 matmul on packed weights -------------------------------------------------
 * The Q4_0 kernels' chain, acc = fma(float(idot_k), d_w * d_x, acc) over the
 * blocks k in order with idot_k exact, so the unpacked kernel above gives
 * the same bits.  Packed (kernels.h), one 32-byte load is dword m of 8 rows,
 * so lane i of the int32 sum over m of its products is row i's idot_k and
 * nothing is reduced across lanes.  A tile is NH 8-row halves of a group x
 * BT activation rows: per 32 products a sign, a maddubs, a madd and an add,
 * |w| shared by the BT rows and each broadcast of activations by the
 * halves.  Generation (one row) takes both halves, so the group streams in
 * order, and prefetches the next group; batches take 1 half x 4 rows, the
 * group's second half and the next rows coming from cache. */
#define EKX_Q8BT 4 /* activation rows per batch tile */

EKX_AVX2_INLINE void ekx_tile_q8_0_packed(int NH, int BT, const uint8_t *G, int nblk, int h0, const uint8_t *X,
                                          size_t xrow, float *Y, int ldy, int r, size_t pf) {
    __m256 acc[2][EKX_Q8BT];
    EKX_UNROLL
    for (int h = 0; h < NH; h++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) acc[h][j] = _mm256_setzero_ps();
    const uint8_t *S = G + (size_t)nblk * 512;
    for (int k = 0; k < nblk; k++) {
        const uint8_t *q = G + (size_t)k * 512 + 32 * h0, *xk = X + (size_t)k * 34;
        if (pf) {
            EKX_UNROLL
            for (int l = 0; l < 8; l++) _mm_prefetch((const char *)q + pf + 64 * l, _MM_HINT_T0);
            _mm_prefetch((const char *)S + pf + 32 * k, _MM_HINT_T0);
        }
        __m256i is[2][EKX_Q8BT];
        EKX_UNROLL
        for (int m = 0; m < 8; m++) {
            __m256i w[2], wa[2];
            EKX_UNROLL
            for (int h = 0; h < NH; h++) {
                w[h] = _mm256_loadu_si256((const __m256i *)(q + 64 * m + 32 * h));
                wa[h] = _mm256_abs_epi8(w[h]);
            }
            EKX_UNROLL
            for (int j = 0; j < BT; j++) {
                const __m256i xb = ekx_bcast32_avx2(xk + (size_t)j * xrow + 2 + 4 * m);
                EKX_UNROLL
                for (int h = 0; h < NH; h++) {
                    const __m256i p = ekx_dot_u8s8(wa[h], _mm256_sign_epi8(xb, w[h]));
                    is[h][j] = m == 0 ? p : _mm256_add_epi32(is[h][j], p);
                    EKX_KEEP(is[h][j]);
                }
            }
        }
        EKX_UNROLL
        for (int h = 0; h < NH; h++) {
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(S + 32 * k + 16 * (h0 + h))));
            EKX_UNROLL
            for (int j = 0; j < BT; j++) {
                uint16_t dh;
                memcpy(&dh, xk + (size_t)j * xrow, 2);
                acc[h][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[h][j]), _mm256_mul_ps(dw, _mm256_set1_ps(ekx_h2f(dh))),
                                            acc[h][j]);
            }
        }
    }
    EKX_UNROLL
    for (int h = 0; h < NH; h++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) _mm256_storeu_ps(Y + (size_t)j * ldy + r + 8 * (h0 + h), acc[h][j]);
}

static EKX_AVX2 void ekx_matmul_q8_0_packed_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                                 int r0, int r1) {
    const int nblk = n / 32;
    const size_t wrow = (size_t)nblk * 34, xrow = (size_t)nblk * 34;
    const uint8_t *Xb = (const uint8_t *)X;
    for (int g = r0; g < r1; g += 16) {
        const uint8_t *G = (const uint8_t *)W + (size_t)g * wrow;
        if (nb == 1) {
            ekx_tile_q8_0_packed(2, 1, G, nblk, 0, Xb, xrow, Y, ldy, g, g + 16 < r1 ? (size_t)nblk * 544 : 0);
            continue;
        }
        for (int j = 0; j < nb; j += EKX_Q8BT)
            for (int h = 0; h < 2; h++) {
                const uint8_t *Xj = Xb + (size_t)j * xrow;
                float *Yj = Y + (size_t)j * ldy;
                switch (nb - j < EKX_Q8BT ? nb - j : EKX_Q8BT) {
                case 1: ekx_tile_q8_0_packed(1, 1, G, nblk, h, Xj, xrow, Yj, ldy, g, 0); break;
                case 2: ekx_tile_q8_0_packed(1, 2, G, nblk, h, Xj, xrow, Yj, ldy, g, 0); break;
                case 3: ekx_tile_q8_0_packed(1, 3, G, nblk, h, Xj, xrow, Yj, ldy, g, 0); break;
                default: ekx_tile_q8_0_packed(1, 4, G, nblk, h, Xj, xrow, Yj, ldy, g, 0); break;
                }
            }
    }
}

/* ---- AVX2 k-quant matmul (Q4_K, Q5_K, Q6_K weights; Q8_K activations) --------------------
 * Per 256-superblock, per 32 elements: maddubs of the unsigned quants with
 * the activations (16 int16 lanes, no saturation: 63 * 127 * 2 < 2^15),
 * then madd with the sub-block scales into 8 int32 lanes, summed exactly
 * over the superblock.  The offsets (q4_K/q5_K mins, q6_K's -32) need only
 * the activations' 16-element sums, which Q8_K carries (bsums).  8 weight
 * rows go together: their exact sums are reduced across lanes into one
 * vector, row i in lane i, so one float chain per output (ekx_kq8_step)
 * costs one fma per superblock for 8 rows. */

enum { EKX_Q4_K, EKX_Q5_K, EKX_Q6_K, EKX_Q2_K, EKX_Q3_K };
#define EKX_KWBS(kind) ((kind) == EKX_Q4_K ? 144 : (kind) == EKX_Q5_K ? 176 : (kind) == EKX_Q6_K ? 210 : (kind) == EKX_Q2_K ? 84 : 110)

/* the 32 unsigned quants of piece p (0..7) of a superblock; scale index
 * sc16 receives the 16-element group of the piece's first half */
EKX_AVX2_INLINE __m256i ekx_kquant_piece(int kind, const uint8_t *blk, int p) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    if (kind == EKX_Q2_K || kind == EKX_Q3_K) {
        /* piece p = half p / 4, shift p % 4: 2 bits of qs[32 half + l]; q3_K adds
         * 4 * (bit 4 half + shift of hmask[l]) (so q + 4, unsigned) */
        const int h = p / 4, sh = p % 4;
        const __m256i v = _mm256_loadu_si256((const __m256i *)(blk + (kind == EKX_Q2_K ? 16 : 32) + 32 * h));
        __m256i q = _mm256_and_si256(_mm256_srli_epi16(v, 2 * sh), _mm256_set1_epi8(3));
        if (kind == EKX_Q3_K) {
            const __m256i hm = _mm256_loadu_si256((const __m256i *)blk);
            const __m256i bit = _mm256_set1_epi8((char)(1 << (4 * h + sh)));
            const __m256i hb = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
            q = _mm256_or_si256(q, _mm256_and_si256(hb, _mm256_set1_epi8(4)));
        }
        return q;
    }
    if (kind == EKX_Q4_K || kind == EKX_Q5_K) {
        const int c = p / 2;   /* 64-element chunk: low nibbles, then high nibbles */
        const uint8_t *qs = blk + (kind == EKX_Q4_K ? 16 : 48) + 32 * c;
        __m256i v = _mm256_loadu_si256((const __m256i *)qs);
        __m256i q = (p & 1) ? _mm256_and_si256(_mm256_srli_epi16(v, 4), m4) : _mm256_and_si256(v, m4);
        if (kind == EKX_Q5_K) {
            /* bit p of each qh byte to bit 4 (16-bit shifts: the mask drops
             * what crosses between the two bytes) */
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 16));
            const __m256i hb = p < 4 ? _mm256_slli_epi16(qh, 4 - p) : p > 4 ? _mm256_srli_epi16(qh, p - 4) : qh;
            q = _mm256_or_si256(q, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
        }
        return q;
    }
    /* q6_K: piece p = half h (128 elements), quarter s (32 elements) */
    const int h = p / 4, sq = p % 4;
    const uint8_t *ql = blk + 64 * h + (sq & 1) * 32, *qhp = blk + 128 + 32 * h;
    __m256i l = _mm256_loadu_si256((const __m256i *)ql), qh = _mm256_loadu_si256((const __m256i *)qhp);
    __m256i lo = sq < 2 ? _mm256_and_si256(l, m4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), m4);
    __m256i hi;
    switch (sq) {
    case 0: hi = _mm256_slli_epi16(qh, 4); break;
    case 1: hi = _mm256_slli_epi16(qh, 2); break;
    case 2: hi = qh; break;
    default: hi = _mm256_srli_epi16(qh, 2); break;
    }
    return _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)));
}

/* The scales of a q2_K, q3_K or q6_K superblock: value = d * scale_g * q -
 * dmin * off_g for 16-element group g (q2_K: off = the group's min; q6_K and
 * q3_K: off = 32 * scale, 4 * scale, with dmin = 32 d, 4 d; q4_K and q5_K
 * decode 8 rows' scales at once in ekx_kq8_step).  *scv gets the 16 scales
 * as int16 arranged for ekx_kquant_scale_of: groups 0, 2, .., 14 in the low
 * 128-bit lane, 1, 3, .., 15 in the high one (a piece's two groups); *offv
 * gets off_0..15 in order, beside Q8_K's bsums. */
EKX_AVX2_INLINE void ekx_kquant_scales(int kind, const uint8_t *blk, __m256i *scv, __m256i *offv) {
    /* bytes 0..15 -> even bytes, then odd bytes */
    const __m128i evod = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    if (kind == EKX_Q2_K) {
        const __m128i v = _mm_loadu_si128((const __m128i *)blk);
        *scv = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_and_si128(v, _mm_set1_epi8(15)), evod));
        *offv = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(15)));
        return;
    }
    __m128i v;
    if (kind == EKX_Q3_K) {
        const uint8_t *s3 = blk + 96;
        int8_t sc[16];
        for (int g = 0; g < 16; g++) {
            const int lo = g < 8 ? (s3[g] & 0xF) : (s3[g - 8] >> 4), hi = (s3[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
            sc[g] = (int8_t)((lo | (hi << 4)) - 32);
        }
        v = _mm_loadu_si128((const __m128i *)sc);
    } else {
        v = _mm_loadu_si128((const __m128i *)(blk + 192));   /* q6_K */
    }
    *scv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(v, evod));
    *offv = _mm256_cvtepi8_epi16(v);
}

/* The scales of piece p (groups 2p and 2p + 1) in the 8 int16 pairs of
 * each lane: one byte shuffle of the arranged scales. */
EKX_AVX2_INLINE __m256i ekx_kquant_scale_of(__m256i scv, int p) {
    const __m256i ctl = _mm256_set1_epi16((short)((2 * p) | ((2 * p + 1) << 8)));
    return _mm256_shuffle_epi8(scv, ctl);
}

#define EKX_KBT 4   /* prompts: activation rows per pass over 8 weight rows (then 2, 1) */

/* The 8 int32 lane sums of vectors v_0..v_7 into lanes 0..7, exact (any
 * tree gives the same integers), fed one vector at a time to keep few
 * registers live: t[i / 2] holds the pair sums of v_i and v_i+1, t[0] and
 * t[2] then rows 0..3 and 4..7 of lanes 0..3 | of lanes 4..7. */
EKX_AVX2_INLINE void ekx_lanes8_add(__m256i *t, int i, __m256i v) {
    t[i / 2] = i % 2 ? _mm256_hadd_epi32(t[i / 2], v) : v;
    if (i % 4 == 3) t[i / 2 - 1] = _mm256_hadd_epi32(t[i / 2 - 1], t[i / 2]);
}
EKX_AVX2_INLINE __m256i ekx_lanes8(const __m256i *t) {
    return _mm256_add_epi32(_mm256_permute2x128_si256(t[0], t[2], 0x20), _mm256_permute2x128_si256(t[0], t[2], 0x31));
}

/* 8 fp16 (the low halves of v's dwords, or the high halves if hi) as floats */
EKX_AVX2_INLINE __m256 ekx_kq_h8(__m256i v, int hi) {
    v = hi ? _mm256_srli_epi32(v, 16) : _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
    return _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08)));
}

/* q4_K / q5_K: the 4 word pairs of 32-element activation sums b_j (bsums
 * 2j + 2j+1) that meet the mins in ekx_kq8_step: (b0, b2), (b1, b3), (b4,
 * b6), (b5, b7). */
EKX_AVX2_INLINE void ekx_kq_minpairs(const ek_block_q8_K *xb, int32_t bp[4]) {
    const __m128i one = _mm_set1_epi16(1);
    const __m128i lo = _mm_madd_epi16(_mm_loadu_si128((const __m128i *)xb->bsums), one);
    const __m128i hi = _mm_madd_epi16(_mm_loadu_si128((const __m128i *)(xb->bsums + 8)), one);
    const __m128i b = _mm_shuffle_epi8(_mm_packs_epi32(lo, hi), _mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15));
    _mm_storeu_si128((__m128i *)bp, b);
}

/* One superblock of 8 weight rows (row i at wk + i * rs; rows past nr
 * repeat row nr - 1, their lanes are dropped) against BT activation rows
 * xk[j] (bp[j]: their ekx_kq_minpairs, q4_K / q5_K only).  Each row's exact
 * integer sum isum, and msum = sum_g off_g * bsum_g for q4_K, q5_K and q2_K
 * (q6_K and q3_K fold theirs into isum: off = 32 scale, 4 scale), land in
 * lane i (ekx_lanes8), then
 *     acc[j] = fma((float)isum, d * d_x, acc[j]);  acc[j] -= (float)msum * (dmin * d_x)  (one rounding)
 * lane by lane: the float chain of one output, whichever lane or tile. */
EKX_AVX2_INLINE void ekx_kq8_step(int kind, int BT, const uint8_t *wk, size_t rs, int nr,
                                  const ek_block_q8_K *const *xk, const int32_t (*bp)[4], size_t pf, __m256 *acc) {
    const uint8_t *w[8];
    EKX_UNROLL
    for (int i = 0; i < 8; i++) {
        w[i] = wk + (size_t)(i < nr ? i : nr - 1) * rs;
        /* packed generation: each row's bytes pf ahead, spread over the rows */
        if (pf)
            for (int o = 0; o < EKX_KWBS(kind); o += 64) _mm_prefetch((const char *)w[i] + pf + o, _MM_HINT_T0);
    }
    __m256i v[EKX_KBT][4], mv[EKX_KBT][4];   /* ekx_lanes8_add's sums */
    __m256 d, dmin = _mm256_setzero_ps();
    __m256i msum[EKX_KBT];
    if (kind == EKX_Q4_K || kind == EKX_Q5_K) {
        /* the first 16 bytes (d, dmin, 12 bytes of scales and mins) of the 8
         * rows transposed: dword m of row i in lane i of D[m] */
        __m256i z[4], D[4];
        EKX_UNROLL
        for (int g = 0; g < 4; g++)
            z[g] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)w[g])),
                                           _mm_loadu_si128((const __m128i *)w[g + 4]), 1);
        const __m256i t0 = _mm256_unpacklo_epi32(z[0], z[1]), t1 = _mm256_unpackhi_epi32(z[0], z[1]);
        const __m256i t2 = _mm256_unpacklo_epi32(z[2], z[3]), t3 = _mm256_unpackhi_epi32(z[2], z[3]);
        D[0] = _mm256_unpacklo_epi64(t0, t2);
        D[1] = _mm256_unpackhi_epi64(t0, t2);
        D[2] = _mm256_unpacklo_epi64(t1, t3);
        D[3] = _mm256_unpackhi_epi64(t1, t3);
        d = ekx_kq_h8(D[0], 0);
        dmin = ekx_kq_h8(D[0], 1);
        /* ekx_kquant_scales' unpacking with rows in lanes */
        const __m256i c3f = _mm256_set1_epi8(0x3F), c0f = _mm256_set1_epi8(0x0F), c30 = _mm256_set1_epi8(0x30);
        const __m256i sclo = _mm256_and_si256(D[1], c3f);
        const __m256i schi = _mm256_or_si256(_mm256_and_si256(D[3], c0f), _mm256_and_si256(_mm256_srli_epi32(D[1], 2), c30));
        const __m256i mlo = _mm256_and_si256(D[2], c3f);
        const __m256i mhi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(D[3], 4), c0f),
                                            _mm256_and_si256(_mm256_srli_epi32(D[2], 2), c30));
        /* mins as word pairs (min j, min j + 2) against ekx_kq_minpairs */
        const __m256i w16 = _mm256_set1_epi32(0x00FF00FF);
        const __m256i m0 = _mm256_and_si256(mlo, w16), m1 = _mm256_and_si256(_mm256_srli_epi32(mlo, 8), w16);
        const __m256i m2 = _mm256_and_si256(mhi, w16), m3 = _mm256_and_si256(_mm256_srli_epi32(mhi, 8), w16);
        EKX_UNROLL
        for (int j = 0; j < BT; j++)
            msum[j] = _mm256_add_epi32(
                _mm256_add_epi32(_mm256_madd_epi16(m0, _mm256_set1_epi32(bp[j][0])), _mm256_madd_epi16(m1, _mm256_set1_epi32(bp[j][1]))),
                _mm256_add_epi32(_mm256_madd_epi16(m2, _mm256_set1_epi32(bp[j][2])), _mm256_madd_epi16(m3, _mm256_set1_epi32(bp[j][3]))));
        /* each row's 8 scale bytes as one qword: unpacklo holds rows 0, 1 |
         * 4, 5, unpackhi rows 2, 3 | 6, 7 */
        EC_ALIGNAS(32) uint64_t scq[8];
        _mm256_store_si256((__m256i *)scq, _mm256_unpacklo_epi32(sclo, schi));
        _mm256_store_si256((__m256i *)(scq + 4), _mm256_unpackhi_epi32(sclo, schi));
        EKX_UNROLL
        for (int i = 0; i < 8; i++) {
            const __m256i sq = _mm256_set1_epi64x((long long)scq[(i % 4 < 2 ? 0 : 4) + 2 * (i / 4) + (i % 2)]);
            __m256i is[EKX_KBT];
            EKX_UNROLL
            for (int j = 0; j < BT; j++) is[j] = _mm256_setzero_si256();
            EKX_UNROLL
            for (int p = 0; p < 8; p++) {
                const __m256i q = ekx_kquant_piece(kind, w[i], p);
                /* scale byte p in every word */
                const __m256i sp = _mm256_shuffle_epi8(sq, _mm256_set1_epi16((short)(p - 32768)));
                EKX_UNROLL
                for (int j = 0; j < BT; j++) {
                    const __m256i x = _mm256_loadu_si256((const __m256i *)(xk[j]->qs + 32 * p));
                    is[j] = _mm256_add_epi32(is[j], _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), sp));
                    EKX_KEEP(is[j]);
                }
            }
            EKX_UNROLL
            for (int j = 0; j < BT; j++) ekx_lanes8_add(v[j], i, is[j]);
        }
    } else {
        EKX_UNROLL
        for (int i = 0; i < 8; i++) {
            __m256i scv, offv;
            ekx_kquant_scales(kind, w[i], &scv, &offv);
            __m256i is[EKX_KBT];
            EKX_UNROLL
            for (int j = 0; j < BT; j++) is[j] = _mm256_setzero_si256();
            EKX_UNROLL
            for (int p = 0; p < 8; p++) {
                const __m256i q = ekx_kquant_piece(kind, w[i], p);
                const __m256i sp = ekx_kquant_scale_of(scv, p);
                EKX_UNROLL
                for (int j = 0; j < BT; j++) {
                    const __m256i x = _mm256_loadu_si256((const __m256i *)(xk[j]->qs + 32 * p));
                    is[j] = _mm256_add_epi32(is[j], _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), sp));
                    EKX_KEEP(is[j]);
                }
            }
            EKX_UNROLL
            for (int j = 0; j < BT; j++) {
                const __m256i o8 = _mm256_madd_epi16(offv, _mm256_loadu_si256((const __m256i *)xk[j]->bsums));
                if (kind == EKX_Q2_K) ekx_lanes8_add(mv[j], i, o8);
                else is[j] = _mm256_sub_epi32(is[j], _mm256_slli_epi32(o8, kind == EKX_Q6_K ? 5 : 2));
                ekx_lanes8_add(v[j], i, is[j]);
            }
        }
        /* d (and q2_K's dmin): the dword that ends with d, or holds d and dmin,
         * of each row (loads: a gather is slower on Zen 3) */
        int32_t dw[8];
        EKX_UNROLL
        for (int i = 0; i < 8; i++) memcpy(&dw[i], w[i] + (kind == EKX_Q6_K ? 206 : kind == EKX_Q3_K ? 106 : 80), 4);
        const __m256i gd = _mm256_setr_epi32(dw[0], dw[1], dw[2], dw[3], dw[4], dw[5], dw[6], dw[7]);
        d = ekx_kq_h8(gd, kind != EKX_Q2_K);
        if (kind == EKX_Q2_K) {
            dmin = ekx_kq_h8(gd, 1);
            EKX_UNROLL
            for (int j = 0; j < BT; j++) msum[j] = ekx_lanes8(mv[j]);
        }
    }
    EKX_UNROLL
    for (int j = 0; j < BT; j++) {
        const __m256 dx = _mm256_set1_ps(xk[j]->d);
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ekx_lanes8(v[j])), _mm256_mul_ps(d, dx), acc[j]);
        if (kind == EKX_Q4_K || kind == EKX_Q5_K || kind == EKX_Q2_K)
            acc[j] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[j]), _mm256_mul_ps(dmin, dx), acc[j]);
    }
}

/* lane i of v to y[i], i < nr */
EKX_AVX2_INLINE void ekx_kq_store(float *y, __m256 v, int nr) {
    if (nr == 8) {
        _mm256_storeu_ps(y, v);
        return;
    }
    EC_ALIGNAS(32) float t[8];
    _mm256_store_ps(t, v);
    memcpy(y, t, sizeof(float) * (size_t)nr);
}

/* lane i of v from y[i], i < nr */
EKX_AVX2_INLINE __m256 ekx_kq_load(const float *y, int nr) {
    if (nr == 8) return _mm256_loadu_ps(y);
    EC_ALIGNAS(32) float t[8] = {0};
    memcpy(t, y, sizeof(float) * (size_t)nr);
    return _mm256_load_ps(t);
}

/* 8 rows (nr valid; row i at W + i * rs + k * ks for superblock k) against
 * activation rows b .. b + BT - 1, superblocks k0 .. k1 - 1; the chains
 * carry on from Y when k0 > 0. */
EKX_AVX2_INLINE void ekx_kq8_rows(int kind, int BT, const uint8_t *W, size_t rs, size_t ks, int nr, const uint8_t *X,
                                  size_t xrow, int k0, int k1, float *Y, int ldy, int r, int b) {
    __m256 acc[EKX_KBT];
    EKX_UNROLL
    for (int j = 0; j < BT; j++) acc[j] = k0 ? ekx_kq_load(Y + (size_t)(b + j) * ldy + r, nr) : _mm256_setzero_ps();
    for (int k = k0; k < k1; k++) {
        const ek_block_q8_K *xk[EKX_KBT];
        int32_t bp[EKX_KBT][4];
        EKX_UNROLL
        for (int j = 0; j < BT; j++) {
            xk[j] = (const ek_block_q8_K *)(X + (size_t)(b + j) * xrow) + k;
            if (kind == EKX_Q4_K || kind == EKX_Q5_K) ekx_kq_minpairs(xk[j], bp[j]);
        }
        ekx_kq8_step(kind, BT, W + (size_t)k * ks, rs, nr, xk, (const int32_t (*)[4])bp, 0, acc);
    }
    EKX_UNROLL
    for (int j = 0; j < BT; j++) ekx_kq_store(Y + (size_t)(b + j) * ldy + r, acc[j], nr);
}

/* Prompts: 8 rows against all activation rows, EKX_KSB superblocks at a
 * time so that the rows' bytes stay in L1 across the activation rows. */
#define EKX_KSB 8
EKX_AVX2_INLINE void ekx_kq8_batch(int kind, const uint8_t *W, size_t rs, size_t ks, int nr, const uint8_t *X,
                                   size_t xrow, int nsb, int nb, float *Y, int ldy, int r) {
    for (int k0 = 0; k0 < nsb; k0 += EKX_KSB) {
        const int k1 = nsb - k0 < EKX_KSB ? nsb : k0 + EKX_KSB;
        int b = 0;
        for (; b + EKX_KBT <= nb; b += EKX_KBT) ekx_kq8_rows(kind, EKX_KBT, W, rs, ks, nr, X, xrow, k0, k1, Y, ldy, r, b);
        for (; b + 2 <= nb; b += 2) ekx_kq8_rows(kind, 2, W, rs, ks, nr, X, xrow, k0, k1, Y, ldy, r, b);
        for (; b < nb; b++) ekx_kq8_rows(kind, 1, W, rs, ks, nr, X, xrow, k0, k1, Y, ldy, r, b);
    }
}

EKX_AVX2_INLINE void ekx_matmul_k(int kind, const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                  int r0, int r1) {
    const int nsb = n / 256, wbs = EKX_KWBS(kind);
    const size_t wrow = (size_t)nsb * wbs, xrow = (size_t)nsb * sizeof(ek_block_q8_K);
    for (int r = r0; r < r1; r += 8)
        ekx_kq8_batch(kind, (const uint8_t *)W + (size_t)r * wrow, wrow, (size_t)wbs, r1 - r < 8 ? r1 - r : 8,
                      (const uint8_t *)X, xrow, nsb, nb, Y, ldy, r);
}

/* Packed (kernels.h): a group's 16 rows' superblocks k side by side, so
 * rows i of a group are wbs apart and superblocks 16 wbs; the same steps
 * per output as unpacked, so the same bits.  Generation walks a group
 * strictly in order (superblock k of rows 0..7, then of rows 8..15), one
 * stream, prefetched row by row 2 such steps ahead within r0..r1 (a burst
 * of prefetches per step stalls the loads; memory-bound, 4 tile streams
 * per group were slower). */
EKX_AVX2_INLINE void ekx_matmul_k_packed(int kind, const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                         int r0, int r1) {
    const int nsb = n / 256, wbs = EKX_KWBS(kind);
    const size_t wrow = (size_t)nsb * wbs, xrow = (size_t)nsb * sizeof(ek_block_q8_K), ks = (size_t)16 * wbs;
    if (nb > 1) {
        for (int g = r0; g < r1; g += 8) {
            /* rows g .. g + 7: half of a group, superblocks ks apart */
            const uint8_t *G = (const uint8_t *)W + (size_t)(g & ~15) * wrow + (size_t)(g & 15) * wbs;
            ekx_kq8_batch(kind, G, (size_t)wbs, ks, 8, (const uint8_t *)X, xrow, nsb, nb, Y, ldy, g);
        }
        return;
    }
    const uint8_t *end = (const uint8_t *)W + (size_t)r1 * wrow;
    const ek_block_q8_K *xb = (const ek_block_q8_K *)X;
    const size_t pfd = (size_t)2 * ks;
    for (int g = r0; g < r1; g += 16) {
        const uint8_t *G = (const uint8_t *)W + (size_t)g * wrow;
        __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int k = 0; k < nsb; k++) {
            const uint8_t *wk = G + (size_t)k * ks;
            const size_t pf = wk + pfd + ks <= end ? pfd : 0;
            const ek_block_q8_K *xk = xb + k;
            int32_t bp[1][4];
            if (kind == EKX_Q4_K || kind == EKX_Q5_K) ekx_kq_minpairs(xk, bp[0]);
            ekx_kq8_step(kind, 1, wk, (size_t)wbs, 8, &xk, (const int32_t (*)[4])bp, pf, &acc[0]);
            ekx_kq8_step(kind, 1, wk + (size_t)8 * wbs, (size_t)wbs, 8, &xk, (const int32_t (*)[4])bp, pf, &acc[1]);
        }
        _mm256_storeu_ps(Y + g, acc[0]);
        _mm256_storeu_ps(Y + g + 8, acc[1]);
    }
}

static EKX_AVX2 void ekx_matmul_q4_K_packed_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_k_packed(EKX_Q4_K, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q5_K_packed_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_k_packed(EKX_Q5_K, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q6_K_packed_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_k_packed(EKX_Q6_K, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q2_K_packed_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_k_packed(EKX_Q2_K, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q3_K_packed_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_k_packed(EKX_Q3_K, W, n, X, nb, Y, ldy, r0, r1);
}

static EKX_AVX2 void ekx_matmul_q4_K_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_k(EKX_Q4_K, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q5_K_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_k(EKX_Q5_K, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q6_K_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_k(EKX_Q6_K, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q2_K_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_k(EKX_Q2_K, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX2 void ekx_matmul_q3_K_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_k(EKX_Q3_K, W, n, X, nb, Y, ldy, r0, r1);
}

/* ---- AVX2 IQ4_XS matmul (Q8_K activations), packed or not ---------------------------------
 * Two sub-blocks per step from one 32-byte load of quants: its low nibbles
 * are elements 0..15 of sub-blocks p and p + 1 (128-bit lanes 0 and 1), its
 * high nibbles their elements 16..31; the activations are rearranged to
 * match once per superblock and activation row (not per weight row).  Per
 * 32 elements: maddubs of |w| with x carrying w's sign (2 * 127 * 128 <
 * 2^15), madd with the sub-block's scale ls - 32 (lane 0: p, lane 1: p + 1),
 * summed exactly in 8 int32 lanes over the superblock, then one fma by
 * d * d_x.  Every tile, layout (packed: kernels.h, a group's superblocks k
 * side by side) and batch takes these float steps per output, so the
 * packed kernel gives the unpacked kernel's bits. */

#define EKX_XRT 4   /* rows per tile (IQ4_XS and IQ4_NL) */
#define EKX_XBT 2   /* activation rows per tile */
#define EKX_XBS 136 /* bytes of an IQ4_XS superblock */

/* the 8 scales ls - 32 of a superblock, scale ib in both int16 halves of
 * int32 lane ib (a madd operand once broadcast) */
EKX_AVX2_INLINE __m256i ekx_iq4_xs_scales(const uint8_t *blk) {
    uint16_t h;
    uint32_t l;
    memcpy(&h, blk + 2, 2);
    memcpy(&l, blk + 4, 4);
    const __m256i lo = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)l), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                                        _mm256_set1_epi32(15));
    const __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(h), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                                        _mm256_set1_epi32(3));
    const __m256i s = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), _mm256_set1_epi32(32));
    return _mm256_or_si256(_mm256_and_si256(s, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(s, 16));
}

/* The 256 activations of a Q8_K superblock as the quant loads see them:
 * per pair p, p + 1 of sub-blocks, their elements 0..15 side by side, then
 * their elements 16..31. */
EKX_AVX2_INLINE void ekx_iq4_xs_xsplit(const int8_t *xq, __m256i *out) {
    EKX_UNROLL
    for (int p = 0; p < 8; p += 2) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(xq + 32 * p));
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xq + 32 * p + 32));
        out[p] = _mm256_permute2x128_si256(x0, x1, 0x20);
        out[p + 1] = _mm256_permute2x128_si256(x0, x1, 0x31);
    }
}

/* One weight row's superblock blk against BT split activation superblocks
 * (xs + 8 j, scales dx[j]): acc[j] += float(exact lane sums) * (d * d_x). */
EKX_AVX2_INLINE void ekx_iq4_xs_sb(int BT, const uint8_t *blk, const __m256i *xs, const float *dx, __m256 *acc) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ek_iq4nl_values));
    const __m256i sc = ekx_iq4_xs_scales(blk);
    __m256i isum[EKX_XBT];
    EKX_UNROLL
    for (int j = 0; j < BT; j++) isum[j] = _mm256_setzero_si256();
    EKX_UNROLL
    for (int p = 0; p < 8; p += 2) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 8 + 16 * p));
        const __m256i wl = _mm256_shuffle_epi8(table, _mm256_and_si256(v, m4));
        const __m256i wh = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
        const __m256i al = _mm256_abs_epi8(wl), ah = _mm256_abs_epi8(wh);
        const __m256i s = _mm256_permutevar8x32_epi32(sc, _mm256_setr_epi32(p, p, p, p, p + 1, p + 1, p + 1, p + 1));
        EKX_UNROLL
        for (int j = 0; j < BT; j++) {
            const __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(al, _mm256_sign_epi8(xs[8 * j + p], wl)), s);
            const __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(ah, _mm256_sign_epi8(xs[8 * j + p + 1], wh)), s);
            isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(pl, ph));
            EKX_KEEP(isum[j]);
        }
    }
    uint16_t dh;
    memcpy(&dh, blk, 2);
    const float d = ekx_h2f(dh);
    EKX_UNROLL
    for (int j = 0; j < BT; j++) acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_set1_ps(d * dx[j]), acc[j]);
}

/* RT rows (rstride apart, superblocks kstride apart, from W0) x BT
 * activation rows from b. */
EKX_AVX2_INLINE void ekx_tile_iq4_xs_at(int RT, int BT, const uint8_t *W0, size_t rstride, size_t kstride,
                                        const uint8_t *X, size_t xrow, int nsb, float *Y, int ldy, int r, int b) {
    __m256 acc[EKX_XRT][EKX_XBT];
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) acc[i][j] = _mm256_setzero_ps();
    for (int k = 0; k < nsb; k++) {
        __m256i xs[8 * EKX_XBT];
        float dx[EKX_XBT];
        EKX_UNROLL
        for (int j = 0; j < BT; j++) {
            const ek_block_q8_K *xb = (const ek_block_q8_K *)(X + (size_t)(b + j) * xrow) + k;
            ekx_iq4_xs_xsplit(xb->qs, xs + 8 * j);
            dx[j] = xb->d;
        }
        EKX_UNROLL
        for (int i = 0; i < RT; i++) ekx_iq4_xs_sb(BT, W0 + (size_t)i * rstride + (size_t)k * kstride, xs, dx, acc[i]);
    }
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) Y[(size_t)(b + j) * ldy + r + i] = ekx_hsum(acc[i][j]);
}

static EKX_AVX2 void ekx_matmul_iq4_xs_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    const int nsb = n / 256;
    const size_t wrow = (size_t)nsb * EKX_XBS, xrow = (size_t)nsb * sizeof(ek_block_q8_K);
    const uint8_t *Wb = (const uint8_t *)W, *Xb = (const uint8_t *)X;
    int r = r0;
    for (; r + EKX_XRT <= r1; r += EKX_XRT) {
        int b = 0;
        for (; b + EKX_XBT <= nb; b += EKX_XBT) ekx_tile_iq4_xs_at(EKX_XRT, EKX_XBT, Wb + (size_t)r * wrow, wrow, EKX_XBS, Xb, xrow, nsb, Y, ldy, r, b);
        for (; b < nb; b++) ekx_tile_iq4_xs_at(EKX_XRT, 1, Wb + (size_t)r * wrow, wrow, EKX_XBS, Xb, xrow, nsb, Y, ldy, r, b);
    }
    for (; r < r1; r++) {
        int b = 0;
        for (; b + EKX_XBT <= nb; b += EKX_XBT) ekx_tile_iq4_xs_at(1, EKX_XBT, Wb + (size_t)r * wrow, wrow, EKX_XBS, Xb, xrow, nsb, Y, ldy, r, b);
        for (; b < nb; b++) ekx_tile_iq4_xs_at(1, 1, Wb + (size_t)r * wrow, wrow, EKX_XBS, Xb, xrow, nsb, Y, ldy, r, b);
    }
}

/* Generation on a packed group: superblock k of all 16 rows, then k + 1,
 * so the group is one forward stream, prefetched pf bytes ahead (0: not);
 * the accumulators stay in memory (touched once per row and superblock). */
EKX_AVX2_INLINE void ekx_group_iq4_xs_gen(const uint8_t *G, const uint8_t *X, int nsb, float *Y, size_t pf) {
    __m256 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = _mm256_setzero_ps();
    for (int k = 0; k < nsb; k++) {
        const ek_block_q8_K *xb = (const ek_block_q8_K *)X + k;
        __m256i xs[8];
        ekx_iq4_xs_xsplit(xb->qs, xs);
        const float dx = xb->d;
        const uint8_t *blk = G + (size_t)k * 16 * EKX_XBS;
        for (int i = 0; i < 16; i++, blk += EKX_XBS) {
            if (pf) {
                _mm_prefetch((const char *)blk + pf, _MM_HINT_T0);
                _mm_prefetch((const char *)blk + pf + 64, _MM_HINT_T0);
                _mm_prefetch((const char *)blk + pf + 128, _MM_HINT_T0);
            }
            ekx_iq4_xs_sb(1, blk, xs, &dx, acc + i);
        }
    }
    for (int i = 0; i < 16; i++) Y[i] = ekx_hsum(acc[i]);
}

static EKX_AVX2 void ekx_matmul_iq4_xs_packed_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                                   int r1) {
    const int nsb = n / 256;
    const size_t wrow = (size_t)nsb * EKX_XBS, xrow = (size_t)nsb * sizeof(ek_block_q8_K);
    for (int g = r0; g < r1; g += 16) {
        const uint8_t *G = (const uint8_t *)W + (size_t)g * wrow;
        if (nb == 1) {
            ekx_group_iq4_xs_gen(G, (const uint8_t *)X, nsb, Y + g, g + 16 < r1 ? (size_t)32 * EKX_XBS : 0);
            continue;
        }
        for (int t = 0; t < 16; t += EKX_XRT) {
            int b = 0;
            for (; b + EKX_XBT <= nb; b += EKX_XBT)
                ekx_tile_iq4_xs_at(EKX_XRT, EKX_XBT, G + (size_t)t * EKX_XBS, EKX_XBS, (size_t)16 * EKX_XBS,
                                   (const uint8_t *)X, xrow, nsb, Y, ldy, g + t, b);
            for (; b < nb; b++)
                ekx_tile_iq4_xs_at(EKX_XRT, 1, G + (size_t)t * EKX_XBS, EKX_XBS, (size_t)16 * EKX_XBS,
                                   (const uint8_t *)X, xrow, nsb, Y, ldy, g + t, b);
        }
    }
}

/* ---- AVX2 IQ4_NL matmul (Q8_0 activations) ----------------------------------------------
 * Two blocks per step, as IQ4_XS's sub-blocks: the quants of blocks k and
 * k + 1 in 128-bit lanes 0 and 1, low nibbles (elements 0..15) and high
 * nibbles (16..31) looked up apart, the activations gathered to match.  The
 * exact integer sums of block k land in int32 lanes 0..3, of block k + 1 in
 * 4..7, scaled in one fma by [d_w d_x of k x4 | of k + 1 x4].  An odd last
 * block runs with lane 1 of the activations and of the scale zero. */

EKX_AVX2_INLINE void ekx_tile_iq4_nl(int RT, int BT, const uint8_t *W, size_t wrow, const uint8_t *X, size_t xrow,
                                     int nblk, float *Y, int ldy, int r, int b) {
    __m256 acc[EKX_XRT][EKX_XBT];
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) acc[i][j] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ek_iq4nl_values));
    const __m256i lane_of_d = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    for (int k = 0; k < nblk; k += 2) {
        const int two = k + 1 < nblk;
        __m256i xl[EKX_XBT], xh[EKX_XBT];
        __m128 dx[EKX_XBT];
        EKX_UNROLL
        for (int j = 0; j < BT; j++) {
            const ek_block_q8_0 *xb = (const ek_block_q8_0 *)(X + (size_t)(b + j) * xrow) + k;
            const __m128i l0 = _mm_loadu_si128((const __m128i *)xb[0].qs), h0 = _mm_loadu_si128((const __m128i *)(xb[0].qs + 16));
            const __m128i l1 = two ? _mm_loadu_si128((const __m128i *)xb[1].qs) : _mm_setzero_si128();
            const __m128i h1 = two ? _mm_loadu_si128((const __m128i *)(xb[1].qs + 16)) : _mm_setzero_si128();
            xl[j] = _mm256_inserti128_si256(_mm256_castsi128_si256(l0), l1, 1);
            xh[j] = _mm256_inserti128_si256(_mm256_castsi128_si256(h0), h1, 1);
            dx[j] = _mm_setr_ps(ekx_h2f(xb[0].d), two ? ekx_h2f(xb[1].d) : 0.0f, 0.0f, 0.0f);
        }
        EKX_UNROLL
        for (int i = 0; i < RT; i++) {
            const ek_block_iq4_nl *wb = (const ek_block_iq4_nl *)(W + (size_t)(r + i) * wrow) + k;
            const __m128i q0 = _mm_loadu_si128((const __m128i *)wb[0].qs);
            const __m128i q1 = two ? _mm_loadu_si128((const __m128i *)wb[1].qs) : _mm_setzero_si128();
            const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
            const __m256i wl = _mm256_shuffle_epi8(table, _mm256_and_si256(v, m4));
            const __m256i wh = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
            const __m256i al = _mm256_abs_epi8(wl), ah = _mm256_abs_epi8(wh);
            const __m128 dw = _mm_cvtph_ps(_mm_setr_epi16((short)wb[0].d, two ? (short)wb[1].d : 0, 0, 0, 0, 0, 0, 0));
            EKX_UNROLL
            for (int j = 0; j < BT; j++) {
                const __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(al, _mm256_sign_epi8(xl[j], wl)), ones);
                const __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(ah, _mm256_sign_epi8(xh[j], wh)), ones);
                const __m256 d = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_mul_ps(dw, dx[j])), lane_of_d);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(pl, ph)), d, acc[i][j]);
            }
        }
    }
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) Y[(size_t)(b + j) * ldy + r + i] = ekx_hsum(acc[i][j]);
}

static EKX_AVX2 void ekx_matmul_iq4_nl_avx2(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    const int nblk = n / 32;
    const size_t wrow = (size_t)nblk * sizeof(ek_block_iq4_nl), xrow = (size_t)nblk * sizeof(ek_block_q8_0);
    int r = r0;
    for (; r + EKX_XRT <= r1; r += EKX_XRT) {
        int b = 0;
        for (; b + EKX_XBT <= nb; b += EKX_XBT) ekx_tile_iq4_nl(EKX_XRT, EKX_XBT, (const uint8_t *)W, wrow, (const uint8_t *)X, xrow, nblk, Y, ldy, r, b);
        for (; b < nb; b++) ekx_tile_iq4_nl(EKX_XRT, 1, (const uint8_t *)W, wrow, (const uint8_t *)X, xrow, nblk, Y, ldy, r, b);
    }
    for (; r < r1; r++) {
        int b = 0;
        for (; b + EKX_XBT <= nb; b += EKX_XBT) ekx_tile_iq4_nl(1, EKX_XBT, (const uint8_t *)W, wrow, (const uint8_t *)X, xrow, nblk, Y, ldy, r, b);
        for (; b < nb; b++) ekx_tile_iq4_nl(1, 1, (const uint8_t *)W, wrow, (const uint8_t *)X, xrow, nblk, Y, ldy, r, b);
    }
}

/* ---- AVX2 activation quantization (byte-identical to the reference) ------------------- */

/* roundf (half away from zero), exactly: truncate |v|, add 1 if the
 * fraction (computed exactly) is >= 0.5, put the sign back. */
EKX_AVX2_INLINE __m256i ekx_roundf_epi32(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_andnot_ps(sign, v);
    __m256 t = _mm256_round_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 up = _mm256_cmp_ps(_mm256_sub_ps(a, t), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    t = _mm256_add_ps(t, _mm256_and_ps(up, _mm256_set1_ps(1.0f)));
    return _mm256_cvttps_epi32(_mm256_or_ps(t, _mm256_and_ps(sign, v)));
}

/* 32 int32 (in 4 vectors) to 32 int8 in order */
EKX_AVX2_INLINE __m256i ekx_pack32_epi8(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i abcd = _mm256_packs_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static EKX_AVX2 void ekx_quantize_q8_0_avx2(const float *x, void *dst, int n) {
    ek_block_q8_0 *y = (ek_block_q8_0 *)dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int i = 0; i < n / 32; i++, x += 32) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(x + 8 * j);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
        y[i].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int j = 0; j < 4; j++) q[j] = ekx_roundf_epi32(_mm256_mul_ps(v[j], vid));
        _mm256_storeu_si256((__m256i *)y[i].qs, ekx_pack32_epi8(q[0], q[1], q[2], q[3]));
    }
}

/* ---- AVX2 vector ops ---------------------------------------------------------------------- */

/* expf for the vector ops: Cephes' polynomial on [-ln2/2, ln2/2] after
 * range reduction, about 1-2 ulp; inputs are clamped to [-87.3, 88.7]. */
EKX_AVX2_INLINE __m256 ekx_expf(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33f)), _mm256_set1_ps(88.72f));
    __m256 nf = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n in two halves so that n = 128 (x near 88.7) does not overflow the exponent */
    __m256i n = _mm256_cvtps_epi32(nf);
    __m256i n1 = _mm256_srai_epi32(n, 1), n2 = _mm256_sub_epi32(n, n1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

static EKX_AVX2 void ekx_rmsnorm_avx2(float *out, const float *x, const float *w, int n, float eps) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
        a1 = _mm256_fmadd_ps(v1, v1, a1);
    }
    double ss = ekx_hsum(_mm256_add_ps(a0, a1));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    const __m256 vs = _mm256_set1_ps(scale);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _mm256_loadu_ps(w + i)));
    for (; i < n; i++) out[i] = x[i] * scale * w[i];
}

static EKX_AVX2 void ekx_swiglu_avx2(float *g, const float *u, int n) {
    int i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        __m256 e = ekx_expf(_mm256_sub_ps(_mm256_setzero_ps(), v));
        __m256 s = _mm256_div_ps(v, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) {
        /* the tail goes through the same vector expf, so every element of a
         * row is computed the same way */
        float v[8] = {0}, e[8];
        v[0] = -g[i];
        _mm256_storeu_ps(e, ekx_expf(_mm256_loadu_ps(v)));
        g[i] = g[i] / (1.0f + e[0]) * u[i];
    }
}

/* gelu_tanh(x) = 0.5 x (1 + tanh(z)) = x / (1 + exp(-2z)), z = sqrt(2/pi)
 * (x + 0.044715 x^3): one vector expf per 8 elements, within ~1e-6 of the
 * scalar tanhf form. */
EKX_AVX2_INLINE __m256 ekx_gelu_tanh(__m256 x) {
    const __m256 c2 = _mm256_set1_ps(-2.0f * 0.7978845608028654f), a = _mm256_set1_ps(0.044715f);
    __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    __m256 e = ekx_expf(_mm256_mul_ps(c2, _mm256_fmadd_ps(a, x3, x)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static EKX_AVX2 void ekx_geglu_avx2(float *g, const float *u, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(g + i, _mm256_mul_ps(ekx_gelu_tanh(_mm256_loadu_ps(g + i)), _mm256_loadu_ps(u + i)));
    if (i < n) {   /* the tail through the same vector code */
        float v[8] = {0}, w[8] = {0};
        memcpy(v, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(w, u + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(v, _mm256_mul_ps(ekx_gelu_tanh(_mm256_loadu_ps(v)), _mm256_loadu_ps(w)));
        memcpy(g + i, v, (size_t)(n - i) * sizeof(float));
    }
}

static EKX_AVX2 void ekx_add_avx2(float *y, const float *x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] += x[i];
}

static EKX_AVX2 float ekx_dot_f32_avx2(const float *q, const float *k, int n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(k + i + 8), a1);
    }
    float s = ekx_hsum(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += q[i] * k[i];
    return s;
}

static EKX_AVX2 float ekx_dot_f16_avx2(const float *q, const uint16_t *k, int n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i))), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i + 8))), a1);
    }
    float s = ekx_hsum(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += q[i] * ekx_h2f(k[i]);
    return s;
}

static EKX_AVX2 void ekx_axpy_f32_avx2(float *y, float a, const float *x, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static EKX_AVX2 void ekx_axpy_f16_avx2(float *y, float a, const uint16_t *x, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * ekx_h2f(x[i]);
}

/* 4 cache rows per pass, two 8-lane chains each: the per-row call and
 * horizontal-sum overhead of a 64-element dot is most of its cost */
static EKX_AVX2 void ekx_kv_scores_f16_avx2(const float *q, const uint16_t *rows, size_t stride, int n_pos, int n,
                                           float scale, float *s) {
    const int n16 = n & ~15;
    int t = 0;
    for (; t + 4 <= n_pos; t += 4) {
        __m256 a[4][2];
        EKX_UNROLL
        for (int j = 0; j < 4; j++) a[j][0] = a[j][1] = _mm256_setzero_ps();
        for (int i = 0; i < n16; i += 16) {
            const __m256 q0 = _mm256_loadu_ps(q + i), q1 = _mm256_loadu_ps(q + i + 8);
            EKX_UNROLL
            for (int j = 0; j < 4; j++) {
                const uint16_t *r = rows + (size_t)(t + j) * stride + i;
                a[j][0] = _mm256_fmadd_ps(q0, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)r)), a[j][0]);
                a[j][1] = _mm256_fmadd_ps(q1, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 8))), a[j][1]);
            }
        }
        EKX_UNROLL
        for (int j = 0; j < 4; j++) {
            float v = ekx_hsum(_mm256_add_ps(a[j][0], a[j][1]));
            const uint16_t *r = rows + (size_t)(t + j) * stride;
            for (int i = n16; i < n; i++) v += q[i] * ekx_h2f(r[i]);
            s[t + j] = v * scale;
        }
    }
    for (; t < n_pos; t++) s[t] = ekx_dot_f16_avx2(q, rows + (size_t)t * stride, n) * scale;
}

/* 32 output elements stay in registers while every row passes; per element
 * the same fma chain over t as ekx_axpy_f16_avx2 row by row */
static EKX_AVX2 void ekx_kv_mix_f16_avx2(const float *p, const uint16_t *rows, size_t stride, int n_pos, int n,
                                        float *out) {
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 a[4];
        EKX_UNROLL
        for (int c = 0; c < 4; c++) a[c] = _mm256_setzero_ps();
        for (int t = 0; t < n_pos; t++) {
            const __m256 w = _mm256_set1_ps(p[t]);
            const uint16_t *r = rows + (size_t)t * stride + i;
            EKX_UNROLL
            for (int c = 0; c < 4; c++)
                a[c] = _mm256_fmadd_ps(w, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 8 * c))), a[c]);
        }
        EKX_UNROLL
        for (int c = 0; c < 4; c++) _mm256_storeu_ps(out + i + 8 * c, a[c]);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int t = 0; t < n_pos; t++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(p[t]), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rows + (size_t)t * stride + i))), a);
        _mm256_storeu_ps(out + i, a);
    }
    for (; i < n; i++) {
        float a = 0.0f;
        for (int t = 0; t < n_pos; t++) a += p[t] * ekx_h2f(rows[(size_t)t * stride + i]);
        out[i] = a;
    }
}

static EKX_AVX2 void ekx_store_f16_avx2(uint16_t *dst, const float *src, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = ek_fp32_to_fp16(src[i]);
}

/* every field after matmul_packed, in declaration order (C++ wants it) */
#define EKX_AVX2_COMMON                                                                 \
    .quantize_q8_0 = ekx_quantize_q8_0_avx2, .quantize_q8_K = NULL,                     \
    .rmsnorm = ekx_rmsnorm_avx2,                                                        \
    .swiglu = ekx_swiglu_avx2, .geglu = ekx_geglu_avx2, .add = ekx_add_avx2,            \
    .dot_f32 = ekx_dot_f32_avx2,                                                         \
    .dot_f16 = ekx_dot_f16_avx2, .axpy_f32 = ekx_axpy_f32_avx2,                          \
    .axpy_f16 = ekx_axpy_f16_avx2, .store_f16 = ekx_store_f16_avx2,                     \
    .kv_scores_f16 = ekx_kv_scores_f16_avx2, .kv_mix_f16 = ekx_kv_mix_f16_avx2

static const ek_kernels ekx_avx2_set = {
    .name = "avx2",
    .matmul = EK_MATMULS(ekx_matmul_f32_avx2, ekx_matmul_f16_avx2, ekx_matmul_q4_0_avx2,
                         ekx_matmul_q4_1_avx2, ekx_matmul_q5_0_avx2, ekx_matmul_q5_1_avx2,
                         ekx_matmul_q8_0_avx2, ekx_matmul_q2_K_avx2, ekx_matmul_q3_K_avx2,
                         ekx_matmul_q4_K_avx2, ekx_matmul_q5_K_avx2, ekx_matmul_q6_K_avx2,
                         ekx_matmul_iq4_nl_avx2, ekx_matmul_iq4_xs_avx2, ekx_matmul_bf16_avx2),
    .matmul_packed = EK_MATMULS(NULL, NULL, ekx_matmul_q4_0_packed_avx2, NULL, NULL, NULL, ekx_matmul_q8_0_packed_avx2,
                                ekx_matmul_q2_K_packed_avx2, ekx_matmul_q3_K_packed_avx2, ekx_matmul_q4_K_packed_avx2,
                                ekx_matmul_q5_K_packed_avx2, ekx_matmul_q6_K_packed_avx2, NULL,
                                ekx_matmul_iq4_xs_packed_avx2, NULL),
    EKX_AVX2_COMMON,
    .bf16_tiles_min_nb = 0, .convert_bf16_tiles = NULL,
};

/* ---- AVX-512 float matmul: as the AVX2 one, 16 lanes and 4 x 4 tiles ------------------ */

#define EKX_ZRT 4
#define EKX_ZBT 4

EKX_AVX512_INLINE __m512 ekx_load16(const uint8_t *p, int kind) {
    if (kind == EKX_W_F32) return _mm512_loadu_ps((const float *)p);
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    if (kind == EKX_W_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

EKX_AVX512_INLINE void ekx_tile_float512(int kind, int RT, int BT, const uint8_t *W, size_t wrow, int esz,
                                         const float *X, int n, float *Y, int ldy, int r, int b, int prefetch) {
    __m512 acc[EKX_ZRT][EKX_ZBT];
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) acc[i][j] = _mm512_setzero_ps();
    const int n16 = n & ~15;
    for (int k = 0; k < n16; k += 16) {
        __m512 xv[EKX_ZBT];
        EKX_UNROLL
        for (int j = 0; j < BT; j++) xv[j] = _mm512_loadu_ps(X + (size_t)(b + j) * n + k);
        /* generation streams the weights once: fetch the next tile's rows
         * (when they are the caller's: prefetch) at the pace of this one, as
         * the hardware prefetcher alone leaves the memory bus idle at every
         * tile start */
        if (prefetch && ((k * esz) & 63) == 0)
            EKX_UNROLL
            for (int i = 0; i < RT; i++)
                _mm_prefetch((const char *)W + (size_t)(r + RT + i) * wrow + (size_t)k * esz, _MM_HINT_T0);
        EKX_UNROLL
        for (int i = 0; i < RT; i++) {
            __m512 w = ekx_load16(W + (size_t)(r + i) * wrow + (size_t)k * esz, kind);
            EKX_UNROLL
            for (int j = 0; j < BT; j++) acc[i][j] = _mm512_fmadd_ps(w, xv[j], acc[i][j]);
        }
    }
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) {
            float s = _mm512_reduce_add_ps(acc[i][j]);
            const uint8_t *wr = W + (size_t)(r + i) * wrow;
            const float *xr = X + (size_t)(b + j) * n;
            for (int k = n16; k < n; k++) s = ekx_fma1(ekx_load1(wr + (size_t)k * esz, kind), xr[k], s);
            Y[(size_t)(b + j) * ldy + r + i] = s;
        }
}

/* Prompt batches (nb >= EKX_ZBLK_MIN): the same chains, in cache blocks.
 * A block of EKX_ZRB weight rows and EKX_ZBB activation rows is walked in
 * column chunks of EKX_ZKC.  Each chunk of the weight rows is converted to
 * F32 (exactly) into wp, contiguous, so the F16/BF16 conversion is paid
 * once per block instead of once per 4 x 4 tile and the rows, n * esz
 * bytes apart in the file, stop competing for the same L1 sets; 4 x 6
 * register tiles then run over wp and a 6-row piece of X from L1, and the
 * 16-lane accumulators of the block's outputs wait in zacc between chunks.
 * Lane l of an output still sums k = l, l+16, ... in order, then the same
 * horizontal sum and scalar tail, so the bits equal ekx_tile_float512's.
 * On TinyLlama's F16 prompt this took one thread from ~33 to ~40 tok/s. */
#define EKX_ZBLK_MIN 4
#define EKX_ZRB 16   /* weight rows per block (multiple of 4) */
#define EKX_ZBB 32   /* activation rows per block */
#define EKX_ZKC 256  /* columns per chunk (multiple of 16): wp is 16 KB */

EKX_AVX2_INLINE void ekx_prefetch_rows(const uint8_t *p, size_t stride, int rows, size_t bytes) {
    for (int i = 0; i < rows; i++)
        for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + (size_t)i * stride + o, _MM_HINT_T0);
}

EKX_AVX512_INLINE void ekx_ztile(int RT, int BT, const float *wp, const float *xp, int kc, int ldx, __m512 *zacc) {
    __m512 acc[4][6];
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) acc[i][j] = zacc[i * EKX_ZBB + j];
    for (int k = 0; k < kc; k += 16) {
        __m512 xv[6];
        EKX_UNROLL
        for (int j = 0; j < BT; j++) xv[j] = _mm512_loadu_ps(xp + (size_t)j * ldx + k);
        EKX_UNROLL
        for (int i = 0; i < RT; i++) {
            __m512 w = _mm512_load_ps(wp + i * EKX_ZKC + k);
            EKX_UNROLL
            for (int j = 0; j < BT; j++) acc[i][j] = _mm512_fmadd_ps(w, xv[j], acc[i][j]);
        }
    }
    EKX_UNROLL
    for (int i = 0; i < RT; i++)
        EKX_UNROLL
        for (int j = 0; j < BT; j++) zacc[i * EKX_ZBB + j] = acc[i][j];
}

EKX_AVX512_INLINE void ekx_matmul_float512_blocked(int kind, const void *Wv, int n, const float *X, int nb,
                                                   float *Y, int ldy, int r0, int r1) {
    const int esz = kind == EKX_W_F32 ? 4 : 2;
    const size_t wrow = (size_t)n * esz;
    const uint8_t *W = (const uint8_t *)Wv;
    const int n16 = n & ~15;
    EC_ALIGNAS(64) float wp[EKX_ZRB * EKX_ZKC];
    EC_ALIGNAS(64) __m512 zacc[EKX_ZRB * EKX_ZBB];
    for (int rb = r0; rb < r1; rb += EKX_ZRB) {
        const int nr = r1 - rb < EKX_ZRB ? r1 - rb : EKX_ZRB;
        for (int bb = 0; bb < nb; bb += EKX_ZBB) {
            const int nx = nb - bb < EKX_ZBB ? nb - bb : EKX_ZBB;
            for (int k0 = 0; k0 < n16; k0 += EKX_ZKC) {
                const int kc = n16 - k0 < EKX_ZKC ? n16 - k0 : EKX_ZKC;
                if (k0 == 0)
                    for (int i = 0; i < nr; i++)
                        for (int j = 0; j < nx; j++) zacc[i * EKX_ZBB + j] = _mm512_setzero_ps();
                for (int i = 0; i < nr; i++)
                    for (int k = 0; k < kc; k += 16)
                        _mm512_store_ps(wp + i * EKX_ZKC + k, ekx_load16(W + (size_t)(rb + i) * wrow + (size_t)(k0 + k) * esz, kind));
                /* short row pieces defeat the hardware prefetcher: fetch the
                 * next chunk (or the next block's first) while this one runs */
                if (k0 + kc < n16)
                    ekx_prefetch_rows(W + (size_t)rb * wrow + (size_t)(k0 + kc) * esz, wrow, nr, (size_t)EKX_ZKC * esz);
                else if (rb + nr < r1 && bb + nx >= nb)
                    ekx_prefetch_rows(W + (size_t)(rb + nr) * wrow, wrow, r1 - rb - nr < EKX_ZRB ? r1 - rb - nr : EKX_ZRB,
                                      (size_t)EKX_ZKC * esz);
                for (int j = 0; j < nx; j += 6) {
                    const int bt = nx - j < 6 ? nx - j : 6;
                    for (int i = 0; i < nr; i += 4) {
                        const float *wt = wp + i * EKX_ZKC, *xt = X + (size_t)(bb + j) * n + k0;
                        __m512 *za = zacc + i * EKX_ZBB + j;
                        if (nr - i >= 4) {
                            switch (bt) {
                            case 6: ekx_ztile(4, 6, wt, xt, kc, n, za); break;
                            case 5: ekx_ztile(4, 5, wt, xt, kc, n, za); break;
                            case 4: ekx_ztile(4, 4, wt, xt, kc, n, za); break;
                            case 3: ekx_ztile(4, 3, wt, xt, kc, n, za); break;
                            case 2: ekx_ztile(4, 2, wt, xt, kc, n, za); break;
                            default: ekx_ztile(4, 1, wt, xt, kc, n, za); break;
                            }
                        } else {
                            for (int ii = i; ii < nr; ii++)
                                for (int jj = 0; jj < bt; jj++)
                                    ekx_ztile(1, 1, wp + ii * EKX_ZKC, xt + (size_t)jj * n, kc, n,
                                              zacc + ii * EKX_ZBB + j + jj);
                        }
                    }
                }
            }
            /* the horizontal sums and the scalar tail */
            for (int i = 0; i < nr; i++) {
                const uint8_t *wr = W + (size_t)(rb + i) * wrow;
                for (int j = 0; j < nx; j++) {
                    const float *xr = X + (size_t)(bb + j) * n;
                    float s = n16 ? _mm512_reduce_add_ps(zacc[i * EKX_ZBB + j]) : 0.0f;
                    for (int k = n16; k < n; k++) s = ekx_fma1(ekx_load1(wr + (size_t)k * esz, kind), xr[k], s);
                    Y[(size_t)(bb + j) * ldy + rb + i] = s;
                }
            }
        }
    }
}

EKX_AVX512_INLINE void ekx_matmul_float512(int kind, const void *W, int n, const void *X, int nb,
                                           float *Y, int ldy, int r0, int r1) {
    if (nb >= EKX_ZBLK_MIN) {
        ekx_matmul_float512_blocked(kind, W, n, (const float *)X, nb, Y, ldy, r0, r1);
        return;
    }
    const int esz = kind == EKX_W_F32 ? 4 : 2;
    const size_t wrow = (size_t)n * esz;
    int r = r0;
    for (; r + EKX_ZRT <= r1; r += EKX_ZRT) {
        int b = 0;
        for (; b + EKX_ZBT <= nb; b += EKX_ZBT) ekx_tile_float512(kind, EKX_ZRT, EKX_ZBT, (const uint8_t *)W, wrow, esz, (const float *)X, n, Y, ldy, r, b, 0);
        for (; b < nb; b++) ekx_tile_float512(kind, EKX_ZRT, 1, (const uint8_t *)W, wrow, esz, (const float *)X, n, Y, ldy, r, b, r + 2 * EKX_ZRT <= r1);
    }
    for (; r < r1; r++) {
        int b = 0;
        for (; b + EKX_ZBT <= nb; b += EKX_ZBT) ekx_tile_float512(kind, 1, EKX_ZBT, (const uint8_t *)W, wrow, esz, (const float *)X, n, Y, ldy, r, b, 0);
        for (; b < nb; b++) ekx_tile_float512(kind, 1, 1, (const uint8_t *)W, wrow, esz, (const float *)X, n, Y, ldy, r, b, 0);
    }
}

static EKX_AVX512 void ekx_matmul_f32_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_float512(EKX_W_F32, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_f16_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_float512(EKX_W_F16, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_bf16_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_float512(EKX_W_BF16, W, n, X, nb, Y, ldy, r0, r1);
}

/* ---- AVX-512 VNNI quantized matmul (Q4_0, Q8_0 weights; Q8_0 activations) ----------------------
 * Every output is one float chain over the blocks k of its row, in order:
 *     acc = 0;  acc = fma((float)isum_k, d_w,k * d_x,k, acc),
 * where isum_k is the block's exact integer dot product (the product of the
 * two fp16 scales is rounded to float first).  The kernels differ only in
 * how they obtain isum_k, which is exact, so every path below gives the same
 * bits, whatever the row split or nb:
 *   - nb = 1 (generation): 16 weight rows in the 16 lanes.  Whole blocks of 4
 *     (q4_0) or 2 (q8_0) rows per zmm go through vpdpbusd against the
 *     broadcast activation block, and a transposing reduction leaves row j's
 *     isum in lane j; the scales of the 16 rows come in with one gather.
 *   - nb >= EKX_PANEL_MIN (prompts): a panel of 16 weight rows is unpacked
 *     once per chunk of blocks into "dword m of row j in lane j" vectors;
 *     each activation row then needs only 8 broadcast dwords and 8 vpdpbusd
 *     per block for 16 outputs, and one cvt + mul + fma.
 *   - tail rows (fewer than 16): a scalar loop.
 *   - packed weights (kernels.h; Q4_0/Q8_0 read into memory): the same two
 *     paths, but dword m of the 16 rows and their 16 scales are each one
 *     load, so generation needs no gathers and no transposing reduction,
 *     and reads each group as one sequential stream.
 * vpdpbusd multiplies unsigned by signed bytes: the weights enter biased
 * (q4_0 stores q + 8; q8_0 is xor-ed with 0x80, i.e. q + 128), and
 * -8 * sum(x) or -128 * sum(x) of the activation block starts the sum. */

#define EKX_KC1 512       /* blocks per chunk, nb = 1 */
#define EKX_PFSTEP 128

#define EKX_KCP 32        /* blocks per chunk, panels */
#define EKX_PBMAX 64      /* activation rows per panel pass */
#define EKX_PANEL_MIN 4   /* smallest nb for the panel kernel */

/* d_x as floats and the bias -8 * sum(x) (q4_0), -128 * sum(x) (q8_0),
 * -16 * sum(x) (q5_0), or sum(x) itself (q4_1, q5_1: for the min term) of kc
 * activation blocks */
EKX_AVX512_INLINE void ekx_q_side(int kind, const uint8_t *xrow, int k0, int kc, float *dx, int32_t *bias) {
    const ek_block_q8_0 *xb = (const ek_block_q8_0 *)xrow + k0;
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int k = 0; k < kc; k++) {
        dx[k] = ekx_h2f(xb[k].d);
        /* sum(x) = sum(x + 128) - 32 * 128, the former by psadbw against 0 */
        __m256i s = _mm256_sad_epu8(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)xb[k].qs), flip),
                                    _mm256_setzero_si256());
        __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        int sum = (int)(_mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1)) - 32 * 128;
        bias[k] = kind == EKX_Q4_0 ? -8 * sum : kind == EKX_Q8_0 ? -128 * sum : kind == EKX_Q5_0 ? -16 * sum : sum;
    }
}

/* The chain of one output over kc blocks, scalar (tail rows). */
EKX_AVX512_INLINE float ekx_q_chain1(int kind, const uint8_t *w, const uint8_t *xrow, int k0, int kc,
                                     const float *dx, const int32_t *bias, float acc) {
    const int wbs = EKX_WBS(kind);
    const ek_block_q8_0 *xb = (const ek_block_q8_0 *)xrow + k0;
    for (int k = 0; k < kc; k++) {
        const uint8_t *wb = w + (size_t)(k0 + k) * wbs;
        /* sign-extended 16-bit products (written out: GCC 12 turns a plain
         * s8 x s8 loop into vpdpbusd, which is u8 x s8) */
        __m256i wq;
        if (kind == EKX_Q8_0) wq = _mm256_loadu_si256((const __m256i *)(wb + 2));
        else {
            wq = ekx_unpack_q4(wb + EKX_QSOFF(kind));
            if (EKX_IS5(kind)) {
                uint32_t qh;
                memcpy(&qh, wb + (kind == EKX_Q5_0 ? 2 : 4), 4);
                wq = _mm256_or_si256(wq, _mm256_and_si256(_mm256_movm_epi8((__mmask32)qh), _mm256_set1_epi8(0x10)));
            }
            if (kind == EKX_Q4_0) wq = _mm256_sub_epi8(wq, _mm256_set1_epi8(8));
            if (kind == EKX_Q5_0) wq = _mm256_sub_epi8(wq, _mm256_set1_epi8(16));
        }
        const __m256i xq = _mm256_loadu_si256((const __m256i *)xb[k].qs);
        __m256i p = _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(wq)), _mm256_cvtepi8_epi16(_mm256_castsi256_si128(xq))),
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(wq, 1)),
                              _mm256_cvtepi8_epi16(_mm256_extracti128_si256(xq, 1))));
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
        const int isum = _mm_cvtsi128_si32(t);
        uint16_t dh;
        memcpy(&dh, wb, 2);
        const float s = ekx_h2f(dh) * dx[k];
        acc = ekx_fma1((float)isum, s, acc);
        if (EKX_HASMIN(kind)) {
            memcpy(&dh, wb + 2, 2);
            const float sm = ekx_h2f(dh) * dx[k];
            acc = ekx_fma1((float)bias[k], sm, acc);
        }
    }
    return acc;
}

/* a and b hold sums of 2m adjacent lanes per output; the result holds sums
 * of m lanes per output: pairs of a's lanes, then pairs of b's */
EKX_AVX512_INLINE __m512i ekx_pair_reduce(__m512i a, __m512i b) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    return _mm512_add_epi32(_mm512_permutex2var_epi32(a, ie, b), _mm512_permutex2var_epi32(a, io, b));
}

EKX_AVX512_INLINE __m512i ekx_bcast32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* the fp16 scales at p + j * wrow (j = 0..15, by vidx) as floats */
EKX_AVX512_INLINE __m512 ekx_gather_d16(const uint8_t *p, __m512i vidx) {
    __m512i g = _mm512_i32gather_epi32(vidx, (const void *)p, 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
}

/* nb = 1: rows r .. r+15 over blocks k0 .. k0+kc-1; W points at row r */
EKX_AVX512_INLINE void ekx_q_gemv16(int kind, const uint8_t *W, size_t wrow, const uint8_t *xrow, int k0, int kc,
                                    const float *dx, const int32_t *bias, float *y, int first, int prefetch) {
    const int wbs = EKX_WBS(kind);
    const __m512i vidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int)wrow));
    const __m512i m4 = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8((char)0x80), z0 = _mm512_setzero_si512();
    __m512 acc = first ? _mm512_setzero_ps() : _mm512_loadu_ps(y);
    const ek_block_q8_0 *xb = (const ek_block_q8_0 *)xrow + k0;
    /* the next 16 rows are contiguous: fetch them at the pace of this pass */
    const uint8_t *pf = W + 16 * wrow + (size_t)k0 * 16 * wbs;
    for (int k = 0; k < kc; k++) {
        const uint8_t *wk = W + (size_t)(k0 + k) * wbs;
        if (prefetch)
            EKX_UNROLL
            for (int i = 0; i < 16 * wbs; i += EKX_PFSTEP) _mm_prefetch((const char *)pf + (size_t)k * 16 * wbs + i, _MM_HINT_T0);
        __m512i isum;
        if (kind != EKX_Q8_0) {
            const __m512i xlo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)xb[k].qs));
            const __m512i xhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xb[k].qs + 16)));
            __m512i p[4], gqh = z0;
            if (EKX_IS5(kind)) gqh = _mm512_i32gather_epi32(vidx, (const void *)(wk + (kind == EKX_Q5_0 ? 2 : 4)), 1);
            EKX_UNROLL
            for (int g = 0; g < 4; g++) {
                const uint8_t *w0 = wk + (size_t)(4 * g) * wrow + EKX_QSOFF(kind);
                __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)w0));
                v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(w0 + wrow)), 1);
                v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(w0 + 2 * wrow)), 2);
                v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(w0 + 3 * wrow)), 3);
                __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                if (EKX_IS5(kind)) {
                    /* row 4g+i's qh in 128-bit lane i; bytes j of the lane <- qh byte j/8 (lo) or
                     * 2 + j/8 (hi), tested against bit j%8 */
                    const __m512i h = _mm512_permutexvar_epi32(_mm512_setr_epi32(
                        4 * g, 4 * g, 4 * g, 4 * g, 4 * g + 1, 4 * g + 1, 4 * g + 1, 4 * g + 1, 4 * g + 2, 4 * g + 2,
                        4 * g + 2, 4 * g + 2, 4 * g + 3, 4 * g + 3, 4 * g + 3, 4 * g + 3), gqh);
                    const __m512i bl = _mm512_shuffle_epi8(h, _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)));
                    const __m512i bh = _mm512_shuffle_epi8(h, _mm512_broadcast_i32x4(_mm_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3)));
                    const __m512i bits = _mm512_broadcast_i32x4(_mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128));
                    const __m512i sixteen = _mm512_set1_epi8(16);
                    lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(bl, bits), lo, sixteen);
                    hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(bh, bits), hi, sixteen);
                }
                p[g] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z0, lo, xlo), hi, xhi);
            }
            isum = ekx_pair_reduce(ekx_pair_reduce(p[0], p[1]), ekx_pair_reduce(p[2], p[3]));
        } else {
            const __m512i x2 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)xb[k].qs));
            __m512i p[8];
            EKX_UNROLL
            for (int g = 0; g < 8; g++) {
                const uint8_t *w0 = wk + (size_t)(2 * g) * wrow + 2;
                __m512i v = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)w0));
                v = _mm512_inserti64x4(v, _mm256_loadu_si256((const __m256i *)(w0 + wrow)), 1);
                p[g] = _mm512_dpbusd_epi32(z0, _mm512_xor_si512(v, flip), x2);
            }
            isum = ekx_pair_reduce(ekx_pair_reduce(ekx_pair_reduce(p[0], p[1]), ekx_pair_reduce(p[2], p[3])),
                                   ekx_pair_reduce(ekx_pair_reduce(p[4], p[5]), ekx_pair_reduce(p[6], p[7])));
        }
        if (!EKX_HASMIN(kind)) isum = _mm512_add_epi32(isum, _mm512_set1_epi32(bias[k]));
        const __m512i gd = _mm512_i32gather_epi32(vidx, (const void *)wk, 1);
        const __m512 vdx = _mm512_set1_ps(dx[k]);
        const __m512 s = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(gd)), vdx);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, acc);
        if (EKX_HASMIN(kind)) {
            const __m512 sm = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(gd, 16))), vdx);
            acc = _mm512_fmadd_ps(_mm512_set1_ps((float)bias[k]), sm, acc);
        }
    }
    _mm512_storeu_ps(y, acc);
}

/* nb = 1 on packed weights (kernels.h): ng groups of 16 rows (G, G +
 * gstride, ...; ng <= EKX_NGMAX), blocks k0 .. k0+kc-1.  Lane j is row j
 * throughout: no gathers, no transposing reduction.  The groups are walked
 * side by side because this machine reads several sequential streams
 * faster than one (tools/mem_bandwidth). */
#define EKX_NGMAX 4    /* groups side by side: 2 -> 4 gained ~10%, 8 no more (A/B, one thread) */
#define EKX_PPF 2048   /* prefetch distance per stream, bytes: none loses ~15%, 1-4 KB alike */
EKX_AVX512_INLINE void ekx_q_gemv16p(int kind, int ng, const uint8_t *G, size_t gstride, int nblk, const uint8_t *xrow,
                                     int k0, int kc, const float *dx, const int32_t *bias, float *y, int first) {
    const int qb = kind == EKX_Q4_0 ? 16 * 16 : 16 * 32;
    const __m512i m4 = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8((char)0x80), z0 = _mm512_setzero_si512();
    __m512 acc[EKX_NGMAX];
    const uint8_t *Q[EKX_NGMAX], *S[EKX_NGMAX];
    EKX_UNROLL
    for (int g = 0; g < ng; g++) {
        acc[g] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(y + 16 * g);
        Q[g] = G + g * gstride + (size_t)k0 * qb;
        S[g] = G + g * gstride + (size_t)nblk * qb + (size_t)k0 * 32;
    }
    const ek_block_q8_0 *xb = (const ek_block_q8_0 *)xrow + k0;
    for (int k = 0; k < kc; k++) {
        const int8_t *xq = xb[k].qs;
        const __m512 vdx = _mm512_set1_ps(dx[k]);
        EKX_UNROLL
        for (int g = 0; g < ng; g++) {
            const uint8_t *q = Q[g] + (size_t)k * qb;
            EKX_UNROLL
            for (int i = 0; i < qb; i += 64) _mm_prefetch((const char *)q + EKX_PPF + i, _MM_HINT_T0);
            if (!(k & 1)) _mm_prefetch((const char *)S[g] + 32 * k + EKX_PPF / 8, _MM_HINT_T0);
            __m512i p[4];
            if (kind == EKX_Q4_0) {
                EKX_UNROLL
                for (int m = 0; m < 4; m++) {
                    const __m512i v = _mm512_loadu_si512((const void *)(q + 64 * m));
                    const __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                    p[m] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(m ? z0 : _mm512_set1_epi32(bias[k]), lo,
                                                                   ekx_bcast32(xq + 4 * m)),
                                               hi, ekx_bcast32(xq + 16 + 4 * m));
                }
            } else {
                EKX_UNROLL
                for (int m = 0; m < 4; m++) {
                    const __m512i v0 = _mm512_xor_si512(_mm512_loadu_si512((const void *)(q + 64 * m)), flip);
                    const __m512i v1 = _mm512_xor_si512(_mm512_loadu_si512((const void *)(q + 256 + 64 * m)), flip);
                    p[m] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(m ? z0 : _mm512_set1_epi32(bias[k]), v0,
                                                                   ekx_bcast32(xq + 4 * m)),
                                               v1, ekx_bcast32(xq + 16 + 4 * m));
                }
            }
            const __m512i isum = _mm512_add_epi32(_mm512_add_epi32(p[0], p[1]), _mm512_add_epi32(p[2], p[3]));
            const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(S[g] + 32 * k)));
            acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, vdx), acc[g]);
        }
    }
    EKX_UNROLL
    for (int g = 0; g < ng; g++) _mm512_storeu_ps(y + 16 * g, acc[g]);
}

/* Unpack kc blocks of 16 rows (W at row r, block k0) into `per` vectors per
 * block: 8 with dword m of each row's quants in lane j, then the 16 scales
 * as floats.  The quants are biased unsigned for vpdpbusd (signed_q = 0:
 * q4_0 stores q + 8, q8_0 gets q + 128) or signed for AMX's B tile
 * (signed_q = 1).  Each dword vector is a gather from the 16 rows, or one
 * load when packed. */
EKX_AVX512_INLINE void ekx_q_unpack16(int kind, int packed, int signed_q, const uint8_t *W, size_t wrow, int k0,
                                      int kc, __m512i *buf, int per) {
    const int wbs = kind == EKX_Q4_0 ? 18 : 34, qb = 16 * (wbs - 2), nblk = (int)(wrow / (size_t)wbs);
    const __m512i vidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int)wrow));
    const __m512i m4 = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8((char)0x80), eight = _mm512_set1_epi8(8);
    for (int k = 0; k < kc; k++) {
        const uint8_t *wk = W + (size_t)(k0 + k) * wbs, *pq = W + (size_t)(k0 + k) * qb;
        __m512i d[8], *o = buf + per * k;
        for (int m = 0; m < (kind == EKX_Q4_0 ? 4 : 8); m++)
            d[m] = packed ? _mm512_loadu_si512((const void *)(pq + 64 * m))
                          : _mm512_i32gather_epi32(vidx, (const void *)(wk + 2 + 4 * m), 1);
        if (kind == EKX_Q4_0) {
            EKX_UNROLL
            for (int m = 0; m < 4; m++) {
                o[m] = _mm512_and_si512(d[m], m4);
                o[4 + m] = _mm512_and_si512(_mm512_srli_epi32(d[m], 4), m4);
                if (signed_q) { o[m] = _mm512_sub_epi8(o[m], eight); o[4 + m] = _mm512_sub_epi8(o[4 + m], eight); }
            }
        } else {
            EKX_UNROLL
            for (int m = 0; m < 8; m++) o[m] = signed_q ? d[m] : _mm512_xor_si512(d[m], flip);
        }
        o[8] = _mm512_castps_si512(
            packed ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(W + (size_t)nblk * qb + 32 * (size_t)(k0 + k))))
                   : ekx_gather_d16(wk, vidx));
    }
}

/* BG activation rows (b .. b+BG-1) against an unpacked panel of 16 rows */
EKX_AVX512_INLINE void ekx_q_panel(int BG, const __m512i *buf, int kc, const uint8_t *X, size_t xrow, int k0,
                                   const float *dx, const int32_t *bias, float *Y, int ldy, int r, int b, int first) {
    __m512 acc[16];
    EKX_UNROLL16
    for (int j = 0; j < BG; j++) acc[j] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(Y + (size_t)(b + j) * ldy + r);
    for (int k = 0; k < kc; k++) {
        const __m512i *w = buf + 9 * k;
        const __m512 dw = _mm512_castsi512_ps(w[8]);
        EKX_UNROLL16
        for (int j = 0; j < BG; j++) {
            const int8_t *xq = ((const ek_block_q8_0 *)(X + (size_t)(b + j) * xrow) + k0 + k)->qs;
            __m512i p = _mm512_set1_epi32(bias[(b + j) * EKX_KCP + k]);
            EKX_UNROLL
            for (int m = 0; m < 8; m++) p = _mm512_dpbusd_epi32(p, w[m], ekx_bcast32(xq + 4 * m));
            const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(dx[(b + j) * EKX_KCP + k]));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[j]);
        }
    }
    EKX_UNROLL16
    for (int j = 0; j < BG; j++) _mm512_storeu_ps(Y + (size_t)(b + j) * ldy + r, acc[j]);
}

/* packed: W is packed (kernels.h) and r0, r1 are multiples of 16 */
EKX_AVX512_INLINE void ekx_matmul_q512(int kind, int packed, const void *Wv, int n, const void *Xv, int nb, float *Y,
                                       int ldy, int r0, int r1) {
    const uint8_t *W = (const uint8_t *)Wv, *X = (const uint8_t *)Xv;
    const int nblk = n / 32;
    const size_t wrow = (size_t)nblk * EKX_WBS(kind), xrow = (size_t)nblk * 34;
    const int r16 = r0 + (r1 - r0) / 16 * 16;
    if (nb < EKX_PANEL_MIN || (kind != EKX_Q4_0 && kind != EKX_Q8_0)) {
        /* 128-row slices stay in L2 while every activation row passes */
        float dx[EKX_KC1];
        int32_t bias[EKX_KC1];
        for (int rc = r0; rc < r1; rc += 128) {
            const int re = r1 - rc < 128 ? r1 : rc + 128, re16 = re < r16 ? re : r16;
            for (int b = 0; b < nb; b++) {
                const uint8_t *xr = X + (size_t)b * xrow;
                float *yb = Y + (size_t)b * ldy;
                for (int k0 = 0; k0 < nblk; k0 += EKX_KC1) {
                    const int kc = nblk - k0 < EKX_KC1 ? nblk - k0 : EKX_KC1;
                    ekx_q_side(kind, xr, k0, kc, dx, bias);
                    if (packed)
                        for (int r = rc; r < re16;) {
                            /* ng a constant in each call, so the groups' state stays in registers */
                            const int left = (re16 - r) / 16;
#define EKX_GEMV16P(NG) ekx_q_gemv16p(kind, NG, W + (size_t)r * wrow, 16 * wrow, nblk, xr, k0, kc, dx, bias, \
                                      yb + r, k0 == 0), r += 16 * (NG)
                            if (left >= EKX_NGMAX) EKX_GEMV16P(EKX_NGMAX);
                            else if (left >= 2) EKX_GEMV16P(2);
                            else EKX_GEMV16P(1);
#undef EKX_GEMV16P
                        }
                    else
                        for (int r = rc; r < re16; r += 16)
                            ekx_q_gemv16(kind, W + (size_t)r * wrow, wrow, xr, k0, kc, dx, bias, yb + r, k0 == 0,
                                         r + 32 <= r1);   /* the next panel is ours: fetch it */
                    for (int r = re16; r < re; r++)
                        yb[r] = ekx_q_chain1(kind, W + (size_t)r * wrow, xr, k0, kc, dx, bias, k0 ? yb[r] : 0.0f);
                }
            }
        }
        return;
    }
    EC_ALIGNAS(64) __m512i buf[9 * EKX_KCP];
    float dx[EKX_PBMAX * EKX_KCP];
    int32_t bias[EKX_PBMAX * EKX_KCP];
    for (int b0 = 0; b0 < nb; b0 += EKX_PBMAX) {
        const int nbc = nb - b0 < EKX_PBMAX ? nb - b0 : EKX_PBMAX;
        const uint8_t *Xc = X + (size_t)b0 * xrow;
        float *Yc = Y + (size_t)b0 * ldy;
        for (int k0 = 0; k0 < nblk; k0 += EKX_KCP) {
            const int kc = nblk - k0 < EKX_KCP ? nblk - k0 : EKX_KCP, first = k0 == 0;
            for (int b = 0; b < nbc; b++)
                ekx_q_side(kind, Xc + (size_t)b * xrow, k0, kc, dx + b * EKX_KCP, bias + b * EKX_KCP);
            for (int r = r0; r < r16; r += 16) {
                ekx_q_unpack16(kind, packed, 0, W + (size_t)r * wrow, wrow, k0, kc, buf, 9);
                int b = 0;
                for (; b + 16 <= nbc; b += 16) ekx_q_panel(16, buf, kc, Xc, xrow, k0, dx, bias, Yc, ldy, r, b, first);
                if (b + 8 <= nbc) { ekx_q_panel(8, buf, kc, Xc, xrow, k0, dx, bias, Yc, ldy, r, b, first); b += 8; }
                if (b + 4 <= nbc) { ekx_q_panel(4, buf, kc, Xc, xrow, k0, dx, bias, Yc, ldy, r, b, first); b += 4; }
                if (b + 2 <= nbc) { ekx_q_panel(2, buf, kc, Xc, xrow, k0, dx, bias, Yc, ldy, r, b, first); b += 2; }
                if (b < nbc) ekx_q_panel(1, buf, kc, Xc, xrow, k0, dx, bias, Yc, ldy, r, b, first);
            }
            for (int b = 0; b < nbc; b++)
                for (int r = r16; r < r1; r++) {
                    float *y = Yc + (size_t)b * ldy + r;
                    *y = ekx_q_chain1(kind, W + (size_t)r * wrow, Xc + (size_t)b * xrow, k0, kc, dx + b * EKX_KCP,
                                      bias + b * EKX_KCP, first ? 0.0f : *y);
                }
        }
    }
}

static EKX_AVX512 void ekx_matmul_q4_0_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_q512(EKX_Q4_0, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q8_0_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_q512(EKX_Q8_0, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q4_0_packed_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                                     int r0, int r1) {
    ekx_matmul_q512(EKX_Q4_0, 1, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q8_0_packed_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy,
                                                     int r0, int r1) {
    ekx_matmul_q512(EKX_Q8_0, 1, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q4_1_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_q512(EKX_Q4_1, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q5_0_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_q512(EKX_Q5_0, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q5_1_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_q512(EKX_Q5_1, 0, W, n, X, nb, Y, ldy, r0, r1);
}

/* ---- AVX-512 k-quant matmul (Q4_K, Q5_K, Q6_K weights; Q8_K activations) ------------------------
 * Every output is one float chain over its superblocks, in order:
 *     acc = fma((float)isum, d * d_x, acc);  acc = acc - (float)msum * (dmin * d_x)  (one rounding)
 * with isum = sum_g scale_g * dot_g(q, x) and msum = sum_g min_g * bsum_g(x)
 * exact integers (q6_K: its -32 offset folded into isum, no msum).  16
 * weight rows go together: each row's 256 products are scaled in 16 int32
 * lanes (maddubs, then madd with the sub-block scales), a transposing
 * reduction leaves row j's isum in lane j, and the scales, mins and fp16
 * factors of the 16 rows come in with gathers, decoded with rows in lanes.
 * Activation rows are taken one at a time against the same 16 rows (which
 * stay in L1), so nb does not change any output's instructions; tail rows
 * run a scalar chain. */

/* q4_K / q5_K: scale and min of group j (6 bits each) from the 12 packed bytes s */
EKX_AVX512_INLINE void ekx_scale_min_k4(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) { *sc = s[j] & 63; *m = s[j + 4] & 63; }
    else { *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4); *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
}

EKX_AVX512_INLINE float ekx_fnma1(float a, float b, float acc) {
    return _mm_cvtss_f32(_mm_fnmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(acc)));
}

/* scalar: one row against one activation row */
EKX_AVX512_INLINE float ekx_kq_chain1(int kind, const uint8_t *w, const ek_block_q8_K *xb, int nsb) {
    const int wbs = EKX_KWBS(kind);
    float acc = 0.0f;
    for (int k = 0; k < nsb; k++) {
        const uint8_t *blk = w + (size_t)k * wbs;
        const int8_t *x = xb[k].qs;
        int isum = 0, msum = 0;
        uint16_t h;
        float d, dmin = 0.0f;
        if (kind == EKX_Q2_K || kind == EKX_Q3_K) {
            /* element i = 128 hf + 32 s + l: 2 bits at shift 2 s of qs[32 hf + l]; group i / 16 */
            const uint8_t *qs = blk + (kind == EKX_Q2_K ? 16 : 32);
            memcpy(&h, blk + (kind == EKX_Q2_K ? 80 : 108), 2);
            d = ekx_h2f(h);
            if (kind == EKX_Q2_K) { memcpy(&h, blk + 82, 2); dmin = ekx_h2f(h); }
            for (int g = 0; g < 16; g++) {
                int dot = 0, sc;
                for (int t = 0; t < 16; t++) {
                    const int i = g * 16 + t, hf = i / 128, sh = (i % 128) / 32, l = i % 32;
                    int q = (qs[32 * hf + l] >> (2 * sh)) & 3;
                    if (kind == EKX_Q3_K) q += ((blk[l] >> (4 * hf + sh)) & 1) << 2;   /* q + 4 */
                    dot += q * x[i];
                }
                if (kind == EKX_Q2_K) {
                    sc = blk[g] & 0xF;
                    isum += sc * dot;
                    msum += (blk[g] >> 4) * xb[k].bsums[g];
                } else {
                    const uint8_t *s3 = blk + 96;
                    const int lo = g < 8 ? (s3[g] & 0xF) : (s3[g - 8] >> 4), hi = (s3[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
                    sc = (lo | (hi << 4)) - 32;
                    isum += sc * (dot - 4 * xb[k].bsums[g]);
                }
            }
        } else if (kind == EKX_Q6_K) {
            memcpy(&h, blk + 208, 2);
            d = ekx_h2f(h);
            const uint8_t *ql = blk, *qh = blk + 128;
            const int8_t *sc = (const int8_t *)(blk + 192);
            for (int g = 0; g < 16; g++) {
                /* element i = 128 half + 32 s + l; group g = i / 16 */
                int dot = 0;
                for (int t = 0; t < 16; t++) {
                    const int i = g * 16 + t, hf = i / 128, s = (i % 128) / 32, l = i % 32;
                    const int lo = s & 1 ? ql[64 * hf + 32 + l] : ql[64 * hf + l];
                    const int q = ((s < 2 ? lo & 0xF : lo >> 4) | (((qh[32 * hf + l] >> (2 * s)) & 3) << 4));
                    dot += q * x[i];
                }
                isum += sc[g] * (dot - 32 * xb[k].bsums[g]);
            }
        } else {
            memcpy(&h, blk, 2);
            d = ekx_h2f(h);
            memcpy(&h, blk + 2, 2);
            dmin = ekx_h2f(h);
            const uint8_t *s = blk + 4, *qh = blk + 16, *qs = blk + (kind == EKX_Q4_K ? 16 : 48);
            for (int j = 0; j < 8; j++) {
                int sc, m;
                ekx_scale_min_k4(j, s, &sc, &m);
                int dot = 0;
                for (int l = 0; l < 32; l++) {
                    const int c = j / 2;
                    int q = j & 1 ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 0xF;
                    if (kind == EKX_Q5_K) q |= ((qh[l] >> j) & 1) << 4;
                    dot += q * x[32 * j + l];
                }
                isum += sc * dot;
                msum += m * (xb[k].bsums[2 * j] + xb[k].bsums[2 * j + 1]);
            }
        }
        const float t = d * xb[k].d;
        acc = ekx_fma1((float)isum, t, acc);
        if (kind == EKX_Q4_K || kind == EKX_Q5_K || kind == EKX_Q2_K) {
            const float u = dmin * xb[k].d;
            acc = ekx_fnma1((float)msum, u, acc);
        }
    }
    return acc;
}

/* q4_K / q5_K: the 16 scaled int32 lanes of one row's superblock */
EKX_AVX512_INLINE __m512i ekx_kq45_row(int kind, const uint8_t *blk, uint64_t scq, const __m512i x[4]) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), sh = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
    const __m512i scb = _mm512_set1_epi64((long long)scq);
    const uint8_t *qs = blk + (kind == EKX_Q4_K ? 16 : 48);
    __m512i hb = _mm512_setzero_si512();
    if (kind == EKX_Q5_K) hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 16)));
    __m512i sum = _mm512_setzero_si512();
    EKX_UNROLL
    for (int c = 0; c < 4; c++) {
        const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)));
        __m512i q = _mm512_and_si512(_mm512_srlv_epi64(v, sh), m4);
        if (kind == EKX_Q5_K) {
            const __m512i hs = _mm512_setr_epi64(2 * c, 2 * c, 2 * c, 2 * c, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1);
            const __m512i bit = _mm512_and_si512(_mm512_srlv_epi64(hb, hs), _mm512_set1_epi8(1));
            q = _mm512_or_si512(q, _mm512_slli_epi16(bit, 4));
        }
        /* words: scale 2c in the low 256 bits, 2c+1 in the high ones */
        const __m512i idx = _mm512_setr_epi32(0x80008000 | (2 * c) * 0x10001, 0x80008000 | (2 * c) * 0x10001,
                                              0x80008000 | (2 * c) * 0x10001, 0x80008000 | (2 * c) * 0x10001,
                                              0x80008000 | (2 * c) * 0x10001, 0x80008000 | (2 * c) * 0x10001,
                                              0x80008000 | (2 * c) * 0x10001, 0x80008000 | (2 * c) * 0x10001,
                                              0x80008000 | (2 * c + 1) * 0x10001, 0x80008000 | (2 * c + 1) * 0x10001,
                                              0x80008000 | (2 * c + 1) * 0x10001, 0x80008000 | (2 * c + 1) * 0x10001,
                                              0x80008000 | (2 * c + 1) * 0x10001, 0x80008000 | (2 * c + 1) * 0x10001,
                                              0x80008000 | (2 * c + 1) * 0x10001, 0x80008000 | (2 * c + 1) * 0x10001);
        const __m512i scv = _mm512_shuffle_epi8(scb, idx);
        sum = _mm512_add_epi32(sum, _mm512_madd_epi16(_mm512_maddubs_epi16(q, x[c]), scv));
    }
    return sum;
}

/* q6_K: the 16 int32 lanes of one row's superblock, offset included */
EKX_AVX512_INLINE __m512i ekx_kq6_row(const uint8_t *blk, const __m512i x[4], __m256i bsums) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m3 = _mm512_set1_epi8(0x30);
    /* scales as words, sign-extended */
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
    const __m512i sc = _mm512_castsi256_si512(sc16);
    __m512i sum = _mm512_setzero_si512();
    EKX_UNROLL
    for (int hf = 0; hf < 2; hf++) {
        /* zmm e (e = 0, 1) covers elements 128 hf + 64 e .. + 63: quarters s = 2e, 2e+1 */
        const __m512i l64 = _mm512_loadu_si512((const void *)(blk + 64 * hf));        /* ql[0..63] of the half */
        const __m512i h32 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * hf)));
        EKX_UNROLL
        for (int e = 0; e < 2; e++) {
            /* s = 2e: low nibbles of ql[0..31] (e=0) or high nibbles of ql[0..31] (e=1);
             * s = 2e+1: the same of ql[32..63]: so zmm = [nib(ql[0..31]), nib(ql[32..63])] */
            const __m512i lo = e == 0 ? _mm512_and_si512(l64, m4) : _mm512_and_si512(_mm512_srli_epi16(l64, 4), m4);
            /* high bits: quarter s takes bits 2s, 2s+1 of qh[l] */
            /* (qh >> 2s) << 4 = qh << (4 - 2s) for s = 0, 1 and qh >> (2s - 4) for s = 2, 3 */
            const __m512i hi = e == 0
                ? _mm512_and_si512(_mm512_sllv_epi64(h32, _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2)), m3)
                : _mm512_and_si512(_mm512_srlv_epi64(h32, _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2)), m3);
            const __m512i q = _mm512_or_si512(lo, hi);
            /* groups 8 hf + 4 e .. + 3, 8 words each */
            const int g0 = 8 * hf + 4 * e;
            const __m512i idx = _mm512_setr_epi32(g0 * 0x10001, g0 * 0x10001, g0 * 0x10001, g0 * 0x10001,
                                                  (g0 + 1) * 0x10001, (g0 + 1) * 0x10001, (g0 + 1) * 0x10001, (g0 + 1) * 0x10001,
                                                  (g0 + 2) * 0x10001, (g0 + 2) * 0x10001, (g0 + 2) * 0x10001, (g0 + 2) * 0x10001,
                                                  (g0 + 3) * 0x10001, (g0 + 3) * 0x10001, (g0 + 3) * 0x10001, (g0 + 3) * 0x10001);
            const __m512i scv = _mm512_permutexvar_epi16(idx, sc);
            sum = _mm512_add_epi32(sum, _mm512_madd_epi16(_mm512_maddubs_epi16(q, x[2 * hf + e]), scv));
        }
    }
    /* - 32 * sum_g scale_g * bsum_g */
    const __m256i off = _mm256_madd_epi16(sc16, bsums);
    return _mm512_sub_epi32(sum, _mm512_castsi256_si512(_mm256_slli_epi32(off, 5)));
}

/* q2_K / q3_K: the 16 int32 lanes of one row's superblock (q3_K: offset
 * included); q2_K's min sums go to *mins (8 lanes) */
EKX_AVX512_INLINE __m512i ekx_kq23_row(int kind, const uint8_t *blk, const __m512i x[4], __m256i bsums, __m512i *mins) {
    const __m512i m3 = _mm512_set1_epi8(3);
    __m256i sc16;
    if (kind == EKX_Q2_K) {
        const __m128i sb = _mm_loadu_si128((const __m128i *)blk);
        sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(sb, _mm_set1_epi8(0x0F)));
        const __m256i m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sb, 4), _mm_set1_epi8(0x0F)));
        *mins = _mm512_castsi256_si512(_mm256_madd_epi16(m16, bsums));
    } else {
        /* 16 6-bit scales - 32: low 4 bits from the nibbles of bytes 0..7, high
         * 2 bits from bytes 8..11 (byte g & 3, shift 2 (g >> 2)) */
        const uint8_t *s3 = blk + 96;
        uint64_t a;
        uint32_t b;
        memcpy(&a, s3, 8);
        memcpy(&b, s3 + 8, 4);
        const __m128i av = _mm_cvtsi64_si128((long long)a);
        const __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(av, _mm_set1_epi8(0x0F)),
                                              _mm_and_si128(_mm_srli_epi16(av, 4), _mm_set1_epi8(0x0F)));
        const __m128i hi = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32((int)b), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
        const __m128i sc8 = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
        sc16 = _mm256_cvtepi8_epi16(sc8);
    }
    const __m512i sc = _mm512_castsi256_si512(sc16);
    const uint8_t *qs = blk + (kind == EKX_Q2_K ? 16 : 32);
    __m512i hm = _mm512_setzero_si512();
    if (kind == EKX_Q3_K) hm = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)blk));
    __m512i sum = _mm512_setzero_si512();
    EKX_UNROLL
    for (int e = 0; e < 4; e++) {
        /* elements 64 e .. + 63: half hf = e / 2, shifts s0 = 2 (e % 2) and s0 + 1 */
        const int hf = e / 2, s0 = 2 * (e % 2);
        const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * hf)));
        const __m512i sh = _mm512_setr_epi64(2 * s0, 2 * s0, 2 * s0, 2 * s0, 2 * s0 + 2, 2 * s0 + 2, 2 * s0 + 2, 2 * s0 + 2);
        __m512i q = _mm512_and_si512(_mm512_srlv_epi64(v, sh), m3);
        if (kind == EKX_Q3_K) {
            const __m512i hs = _mm512_setr_epi64(4 * hf + s0, 4 * hf + s0, 4 * hf + s0, 4 * hf + s0, 4 * hf + s0 + 1,
                                                 4 * hf + s0 + 1, 4 * hf + s0 + 1, 4 * hf + s0 + 1);
            const __m512i bit = _mm512_and_si512(_mm512_srlv_epi64(hm, hs), _mm512_set1_epi8(1));
            q = _mm512_or_si512(q, _mm512_slli_epi16(bit, 2));
        }
        const int g0 = 4 * e;
        const __m512i idx = _mm512_setr_epi32(g0 * 0x10001, g0 * 0x10001, g0 * 0x10001, g0 * 0x10001,
                                              (g0 + 1) * 0x10001, (g0 + 1) * 0x10001, (g0 + 1) * 0x10001, (g0 + 1) * 0x10001,
                                              (g0 + 2) * 0x10001, (g0 + 2) * 0x10001, (g0 + 2) * 0x10001, (g0 + 2) * 0x10001,
                                              (g0 + 3) * 0x10001, (g0 + 3) * 0x10001, (g0 + 3) * 0x10001, (g0 + 3) * 0x10001);
        sum = _mm512_add_epi32(sum, _mm512_madd_epi16(_mm512_maddubs_epi16(q, x[e]), _mm512_permutexvar_epi16(idx, sc)));
    }
    if (kind == EKX_Q3_K) {
        const __m256i off = _mm256_madd_epi16(sc16, bsums);   /* - 4 * sum_g scale_g * bsum_g */
        sum = _mm512_sub_epi32(sum, _mm512_castsi256_si512(_mm256_slli_epi32(off, 2)));
    }
    return sum;
}

/* lane j of the result: the sum of v[j]'s lanes */
EKX_AVX512_INLINE __m512i ekx_reduce16(const __m512i v[16]) {
    __m512i t8[8], t4[4], t2[2];
    EKX_UNROLL
    for (int i = 0; i < 8; i++) t8[i] = ekx_pair_reduce(v[2 * i], v[2 * i + 1]);
    EKX_UNROLL
    for (int i = 0; i < 4; i++) t4[i] = ekx_pair_reduce(t8[2 * i], t8[2 * i + 1]);
    EKX_UNROLL
    for (int i = 0; i < 2; i++) t2[i] = ekx_pair_reduce(t4[2 * i], t4[2 * i + 1]);
    return ekx_pair_reduce(t2[0], t2[1]);
}

#ifndef EKX_KPF
#define EKX_KPF 4608   /* packed k-quant generation: prefetch distance, bytes */
#endif

/* 16 rows (W at row r) against one activation row; y gets 16 outputs.
 * Superblock k of row i is at W + i * rs + k * ks: rs = row bytes and ks =
 * block bytes as stored, or rs = block bytes and ks = 16 blocks when packed
 * (kernels.h).  The next 16 rows start gs bytes on. */
EKX_AVX512_INLINE void ekx_kq16(int kind, const uint8_t *W, size_t rs, size_t ks, size_t gs, const ek_block_q8_K *xb,
                                int nsb, float *y, int prefetch) {
    const int wbs = EKX_KWBS(kind);
    const __m512i vidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int)rs));
    __m512 acc = _mm512_setzero_ps();
    for (int k = 0; k < nsb; k++) {
        /* the next 16 rows, at the pace of these: 16 short pieces, or one
         * run of 16 blocks when packed */
        if (rs == (size_t)wbs) {
            /* packed: one stream (this group, then the next), EKX_KPF bytes ahead */
            const size_t at = (size_t)k * ks + EKX_KPF;
            if (prefetch || at + ks <= gs)
                for (int o = 0; o < 16 * wbs; o += 64) _mm_prefetch((const char *)W + at + o, _MM_HINT_T0);
        } else if (prefetch)
            for (int i = 0; i < 16; i++)
                for (int o = 0; o < wbs; o += 64)
                    _mm_prefetch((const char *)W + gs + (size_t)i * rs + (size_t)k * ks + o, _MM_HINT_T0);
        const uint8_t *wk = W + (size_t)k * ks;
        __m512i x[4];
        EKX_UNROLL
        for (int c = 0; c < 4; c++) x[c] = _mm512_loadu_si512((const void *)(xb[k].qs + 64 * c));
        __m512i v[16];
        __m512 d, dmin = _mm512_setzero_ps();
        __m512i msum = _mm512_setzero_si512();
        if (kind == EKX_Q2_K || kind == EKX_Q3_K) {
            const __m256i bs = _mm256_loadu_si256((const __m256i *)xb[k].bsums);
            __m512i mv[16];
            EKX_UNROLL16
            for (int i = 0; i < 16; i++) v[i] = ekx_kq23_row(kind, wk + (size_t)i * rs, x, bs, &mv[i]);
            if (kind == EKX_Q2_K) {
                const __m512i gd = _mm512_i32gather_epi32(vidx, (const void *)(wk + 80), 1);
                d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(gd));
                dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(gd, 16)));
                msum = ekx_reduce16(mv);
            } else {
                d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_i32gather_epi32(vidx, (const void *)(wk + 106), 1), 16)));
            }
        } else if (kind == EKX_Q6_K) {
            const __m256i bs = _mm256_loadu_si256((const __m256i *)xb[k].bsums);
            EKX_UNROLL16
            for (int i = 0; i < 16; i++) v[i] = ekx_kq6_row(wk + (size_t)i * rs, x, bs);
            /* d is the block's last 2 bytes: gather the dword that ends there */
            d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_i32gather_epi32(vidx, (const void *)(wk + 206), 1), 16)));
        } else {
            /* the first 16 bytes of the 16 blocks (d, dmin, scales), transposed to
             * dword m of each row in lane j: loads and permutes beat 4 gathers */
            __m512i z[4];
            EKX_UNROLL
            for (int g = 0; g < 4; g++) {
                const uint8_t *p0 = wk + (size_t)(4 * g) * rs;
                __m512i t = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p0));
                t = _mm512_inserti32x4(t, _mm_loadu_si128((const __m128i *)(p0 + rs)), 1);
                t = _mm512_inserti32x4(t, _mm_loadu_si128((const __m128i *)(p0 + 2 * rs)), 2);
                z[g] = _mm512_inserti32x4(t, _mm_loadu_si128((const __m128i *)(p0 + 3 * rs)), 3);
            }
            const __m512i ia = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
            const __m512i ib = _mm512_add_epi32(ia, _mm512_set1_epi32(2));
            const __m512i ilo = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
            const __m512i ihi = _mm512_add_epi32(ilo, _mm512_set1_epi32(8));
            const __m512i u0 = _mm512_permutex2var_epi32(z[0], ia, z[1]), u1 = _mm512_permutex2var_epi32(z[0], ib, z[1]);
            const __m512i u2 = _mm512_permutex2var_epi32(z[2], ia, z[3]), u3 = _mm512_permutex2var_epi32(z[2], ib, z[3]);
            const __m512i g0 = _mm512_permutex2var_epi32(u0, ilo, u2), s0 = _mm512_permutex2var_epi32(u0, ihi, u2);
            const __m512i s1 = _mm512_permutex2var_epi32(u1, ilo, u3), s2 = _mm512_permutex2var_epi32(u1, ihi, u3);
            d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g0));
            dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g0, 16)));
            const __m512i c3f = _mm512_set1_epi8(0x3F), c0f = _mm512_set1_epi8(0x0F), c30 = _mm512_set1_epi8(0x30);
            const __m512i sclo = _mm512_and_si512(s0, c3f);
            const __m512i schi = _mm512_or_si512(_mm512_and_si512(s2, c0f), _mm512_and_si512(_mm512_srli_epi32(s0, 2), c30));
            const __m512i mlo = _mm512_and_si512(s1, c3f);
            const __m512i mhi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(s2, 4), c0f),
                                                _mm512_and_si512(_mm512_srli_epi32(s1, 2), c30));
            /* mins as word pairs against pairs of 32-element activation sums */
            const __m512i w16 = _mm512_set1_epi32(0x00FF00FF);
            int32_t bp[4];
            for (int t = 0; t < 4; t++) {
                /* pair t: (min j, min j + 2) with j = 4 (t / 2) + (t % 2) */
                const int j = 4 * (t / 2) + (t % 2);
                const int b0 = xb[k].bsums[2 * j] + xb[k].bsums[2 * j + 1];
                const int b2 = xb[k].bsums[2 * j + 4] + xb[k].bsums[2 * j + 5];
                bp[t] = (int32_t)(((uint32_t)b0 & 0xFFFF) | ((uint32_t)b2 << 16));
            }
            msum = _mm512_madd_epi16(_mm512_and_si512(mlo, w16), _mm512_set1_epi32(bp[0]));
            msum = _mm512_add_epi32(msum, _mm512_madd_epi16(_mm512_and_si512(_mm512_srli_epi32(mlo, 8), w16), _mm512_set1_epi32(bp[1])));
            msum = _mm512_add_epi32(msum, _mm512_madd_epi16(_mm512_and_si512(mhi, w16), _mm512_set1_epi32(bp[2])));
            msum = _mm512_add_epi32(msum, _mm512_madd_epi16(_mm512_and_si512(_mm512_srli_epi32(mhi, 8), w16), _mm512_set1_epi32(bp[3])));
            /* each row's 8 scale bytes as one qword */
            EC_ALIGNAS(64) uint64_t scq[16];
            _mm512_store_si512((void *)scq, _mm512_unpacklo_epi32(sclo, schi));
            _mm512_store_si512((void *)(scq + 8), _mm512_unpackhi_epi32(sclo, schi));
            /* unpacklo holds rows 4L, 4L+1 at qwords 2L, 2L+1; unpackhi rows 4L+2, 4L+3 */
            EKX_UNROLL16
            for (int i = 0; i < 16; i++)
                v[i] = ekx_kq45_row(kind, wk + (size_t)i * rs, scq[(i % 4 < 2 ? 0 : 8) + 2 * (i / 4) + (i % 2)], x);
        }
        const __m512i isum = ekx_reduce16(v);
        const __m512 dx = _mm512_set1_ps(xb[k].d);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, dx), acc);
        if (kind == EKX_Q4_K || kind == EKX_Q5_K || kind == EKX_Q2_K) acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(dmin, dx), acc);
    }
    _mm512_storeu_ps(y, acc);
}

/* Prompts (nb >= EKX_KPANEL_MIN) for q4_K, q5_K and q6_K: a superblock of
 * 16 rows is decoded once into a panel (quants as "dword m of row j in lane
 * j", scales as int32 per group, mins as word pairs, d and dmin as floats),
 * and every activation row then takes 64 vpdpbusd per superblock from it:
 * per group g, dot_g of the 16 rows, times the group's scales (vpmulld).
 * The integers are the same exact isum and msum as above, the float steps
 * the same, so the bits equal ekx_kq16's. */
#define EKX_KPANEL_MIN 4
#define EKX_KSC 4         /* superblocks per panel chunk: 4 x 5.5 KB */

typedef struct {
    __m512i q[64];        /* dword m (elements 4m .. 4m+3) of the 16 rows, unsigned */
    __m512i sc[16];       /* scale of group g (q4_K/q5_K: 8 groups of 32; q6_K: 16 of 16) */
    __m512i mp[4];        /* q4_K/q5_K: mins of groups 2t, 2t+1 as a word pair */
    __m512 d, dmin;
} ekx_kpanel;

/* decode superblock k of rows r .. r+15 (W at row r; strides as ekx_kq16's) */
EKX_AVX512_INLINE void ekx_kq_unpack16(int kind, const uint8_t *W, size_t rs, size_t ks, int k, ekx_kpanel *p) {
    EC_ALIGNAS(64) uint8_t t[16][256];
    EC_ALIGNAS(64) int32_t sc[16][16], mp[4][16];
    EC_ALIGNAS(64) float d[16], dmin[16];
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (int j = 0; j < 16; j++) {
        const uint8_t *blk = W + (size_t)j * rs + (size_t)k * ks;
        uint16_t h;
        if (kind == EKX_Q6_K) {
            memcpy(&h, blk + 208, 2);
            d[j] = ekx_h2f(h);
            dmin[j] = 0.0f;
            for (int g = 0; g < 16; g++) sc[g][j] = ((const int8_t *)(blk + 192))[g];
            EKX_UNROLL
            for (int hf = 0; hf < 2; hf++) {
                /* element 128 hf + 32 s + l */
                const __m256i a = _mm256_loadu_si256((const __m256i *)(blk + 64 * hf));
                const __m256i b = _mm256_loadu_si256((const __m256i *)(blk + 64 * hf + 32));
                const __m256i hb = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * hf));
                uint8_t *o = t[j] + 128 * hf;
                _mm256_store_si256((__m256i *)o, _mm256_or_si256(_mm256_and_si256(a, m4),
                                                                 _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4)));
                _mm256_store_si256((__m256i *)(o + 32),
                                   _mm256_or_si256(_mm256_and_si256(b, m4),
                                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4)));
                _mm256_store_si256((__m256i *)(o + 64),
                                   _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4),
                                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4)));
                _mm256_store_si256((__m256i *)(o + 96),
                                   _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), m4),
                                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4)));
            }
        } else {
            memcpy(&h, blk, 2);
            d[j] = ekx_h2f(h);
            memcpy(&h, blk + 2, 2);
            dmin[j] = ekx_h2f(h);
            int m[8];
            for (int g = 0; g < 8; g++) ekx_scale_min_k4(g, blk + 4, &sc[g][j], &m[g]);
            for (int q = 0; q < 4; q++) mp[q][j] = m[2 * q] | (m[2 * q + 1] << 16);
            const uint8_t *qs = blk + (kind == EKX_Q4_K ? 16 : 48);
            const __m256i hb = kind == EKX_Q5_K ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
            EKX_UNROLL
            for (int c = 0; c < 4; c++) {
                /* element 64 c + 32 h + l: group 2c + h */
                const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
                __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (kind == EKX_Q5_K) {
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4));
                }
                _mm256_store_si256((__m256i *)(t[j] + 64 * c), lo);
                _mm256_store_si256((__m256i *)(t[j] + 64 * c + 32), hi);
            }
        }
    }
    const __m512i vidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(256));
    for (int m = 0; m < 64; m++) p->q[m] = _mm512_i32gather_epi32(vidx, (const void *)(t[0] + 4 * m), 1);
    for (int g = 0; g < (kind == EKX_Q6_K ? 16 : 8); g++) p->sc[g] = _mm512_load_si512((const void *)sc[g]);
    if (kind != EKX_Q6_K)
        for (int q = 0; q < 4; q++) p->mp[q] = _mm512_load_si512((const void *)mp[q]);
    p->d = _mm512_load_ps(d);
    p->dmin = _mm512_load_ps(dmin);
}

/* one activation row against kc decoded superblocks: the chain of 16 outputs */
EKX_AVX512_INLINE __m512 ekx_kq_panel_row(int kind, const ekx_kpanel *pb, int kc, const ek_block_q8_K *xb, __m512 acc) {
    const __m512i z0 = _mm512_setzero_si512();
    for (int k = 0; k < kc; k++) {
        const ekx_kpanel *p = pb + k;
        const int8_t *x = xb[k].qs;
        __m512i isum = z0, msum = z0;
        if (kind == EKX_Q6_K) {
            EKX_UNROLL16
            for (int g = 0; g < 16; g++) {
                /* dot_g - 32 bsum_g, then times the scale */
                __m512i a = _mm512_set1_epi32(-32 * xb[k].bsums[g]);
                EKX_UNROLL
                for (int m = 0; m < 4; m++) a = _mm512_dpbusd_epi32(a, p->q[4 * g + m], ekx_bcast32(x + 16 * g + 4 * m));
                isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(a, p->sc[g]));
            }
        } else {
            EKX_UNROLL
            for (int g = 0; g < 8; g++) {
                __m512i a = z0, b = z0;
                EKX_UNROLL
                for (int m = 0; m < 4; m++) {
                    a = _mm512_dpbusd_epi32(a, p->q[8 * g + m], ekx_bcast32(x + 32 * g + 4 * m));
                    b = _mm512_dpbusd_epi32(b, p->q[8 * g + 4 + m], ekx_bcast32(x + 32 * g + 16 + 4 * m));
                }
                isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(_mm512_add_epi32(a, b), p->sc[g]));
            }
            EKX_UNROLL
            for (int q = 0; q < 4; q++) {
                /* groups 2q, 2q+1: their 32-element activation sums as a word pair */
                const int b0 = xb[k].bsums[4 * q] + xb[k].bsums[4 * q + 1], b1 = xb[k].bsums[4 * q + 2] + xb[k].bsums[4 * q + 3];
                const int32_t pair = (int32_t)(((uint32_t)b0 & 0xFFFF) | ((uint32_t)b1 << 16));
                msum = _mm512_add_epi32(msum, _mm512_madd_epi16(p->mp[q], _mm512_set1_epi32(pair)));
            }
        }
        const __m512 dx = _mm512_set1_ps(xb[k].d);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(p->d, dx), acc);
        if (kind != EKX_Q6_K) acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(p->dmin, dx), acc);
    }
    return acc;
}

EKX_AVX512_INLINE void ekx_matmul_kq512(int kind, int packed, const void *Wv, int n, const void *Xv, int nb, float *Y,
                                        int ldy, int r0, int r1) {
    const uint8_t *W = (const uint8_t *)Wv, *X = (const uint8_t *)Xv;
    const int nsb = n / 256, wbs = EKX_KWBS(kind);
    const size_t wrow = (size_t)nsb * wbs, xrow = (size_t)nsb * sizeof(ek_block_q8_K);
    /* superblock k of row i of a 16-row group: stored, or packed (kernels.h) */
    const size_t rs = packed ? (size_t)wbs : wrow, ks = packed ? (size_t)16 * wbs : (size_t)wbs;
    int r = r0;
    if (nb >= EKX_KPANEL_MIN && (kind == EKX_Q4_K || kind == EKX_Q5_K || kind == EKX_Q6_K)) {
        EC_ALIGNAS(64) ekx_kpanel pb[EKX_KSC];
        for (; r + 16 <= r1; r += 16)
            for (int k0 = 0; k0 < nsb; k0 += EKX_KSC) {
                const int kc = nsb - k0 < EKX_KSC ? nsb - k0 : EKX_KSC;
                for (int k = 0; k < kc; k++) ekx_kq_unpack16(kind, W + (size_t)r * wrow, rs, ks, k0 + k, pb + k);
                for (int b = 0; b < nb; b++) {
                    float *y = Y + (size_t)b * ldy + r;
                    const ek_block_q8_K *xb = (const ek_block_q8_K *)(X + (size_t)b * xrow) + k0;
                    _mm512_storeu_ps(y, ekx_kq_panel_row(kind, pb, kc, xb, k0 ? _mm512_loadu_ps(y) : _mm512_setzero_ps()));
                }
            }
    }
    for (; r + 16 <= r1; r += 16)
        for (int b = 0; b < nb; b++)
            ekx_kq16(kind, W + (size_t)r * wrow, rs, ks, 16 * wrow, (const ek_block_q8_K *)(X + (size_t)b * xrow), nsb,
                     Y + (size_t)b * ldy + r, b == 0 && r + 32 <= r1);
    for (; r < r1; r++)
        for (int b = 0; b < nb; b++)
            Y[(size_t)b * ldy + r] = ekx_kq_chain1(kind, W + (size_t)r * wrow, (const ek_block_q8_K *)(X + (size_t)b * xrow), nsb);
}

static EKX_AVX512 void ekx_matmul_q4_K_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_kq512(EKX_Q4_K, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q4_K_packed_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                                  int r1) {
    ekx_matmul_kq512(EKX_Q4_K, 1, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q5_K_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_kq512(EKX_Q5_K, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q5_K_packed_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                                  int r1) {
    ekx_matmul_kq512(EKX_Q5_K, 1, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q6_K_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_kq512(EKX_Q6_K, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q6_K_packed_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                                  int r1) {
    ekx_matmul_kq512(EKX_Q6_K, 1, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q2_K_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_kq512(EKX_Q2_K, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q2_K_packed_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                                  int r1) {
    ekx_matmul_kq512(EKX_Q2_K, 1, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q3_K_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_kq512(EKX_Q3_K, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AVX512 void ekx_matmul_q3_K_packed_avx512(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                                  int r1) {
    ekx_matmul_kq512(EKX_Q3_K, 1, W, n, X, nb, Y, ldy, r0, r1);
}

#ifndef EMBER_NO_AMX
/* ---- AMX quantized matmul (Q4_0, Q8_0 weights; Q8_0 activations) --------------------------------
 * Same chain as above, with isum from AMX tiles (exact int32, so the same
 * bits again).  Roles swap for the signedness of tdpbusd (A unsigned, B
 * signed): A holds 16 activation rows of one block as x + 128 (x xor 0x80),
 * B the block of 16 weight rows as signed quants in the "dword m of row j"
 * layout that the panel unpacking already makes (8 rows x 64 bytes), and C
 * starts from -128 * sum(q) of each weight row (a stride-0 tile load).  C's
 * row b then holds isum for activation row b and the 16 weight rows in its
 * lanes, which is what the float stage of the panels takes. */

#define EKX_AKC 16        /* blocks per chunk */
#define EKX_AMX_MIN 16    /* smallest nb for AMX */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} ekx_tilecfg;

/* ekx_q_unpack16 with signed quants and a 10th vector per block: -128 *
 * sum(q) per row */
EKX_AMX_INLINE void ekx_q_unpack16_amx(int kind, int packed, const uint8_t *W, size_t wrow, int k0, int kc,
                                       __m512i *buf) {
    ekx_q_unpack16(kind, packed, 1, W, wrow, k0, kc, buf, 10);
    const __m512i ones = _mm512_set1_epi8(1);
    for (int k = 0; k < kc; k++) {
        __m512i *o = buf + 10 * k, sq = _mm512_setzero_si512();
        EKX_UNROLL
        for (int m = 0; m < 8; m++) sq = _mm512_dpbusd_epi32(sq, ones, o[m]);
        o[9] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sq, 7));
    }
}

EKX_AMX_INLINE void ekx_matmul_q_amx(int kind, int packed, const void *Wv, int n, const void *Xv, int nb, float *Y,
                                     int ldy, int r0, int r1) {
    if (nb < EKX_AMX_MIN) {
        ekx_matmul_q512(kind, packed, Wv, n, Xv, nb, Y, ldy, r0, r1);
        return;
    }
    const uint8_t *W = (const uint8_t *)Wv, *X = (const uint8_t *)Xv;
    const int nblk = n / 32;
    const size_t wrow = (size_t)nblk * (kind == EKX_Q4_0 ? 18 : 34), xrow = (size_t)nblk * 34;
    const int r16 = r0 + (r1 - r0) / 16 * 16;
    ekx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 2; t++) {
        cfg.rows[t] = 16; cfg.colsb[t] = 64;          /* C: 16 activation rows x 16 int32 */
        cfg.rows[2 + t] = 16; cfg.colsb[2 + t] = 32;  /* A: 16 activation rows x 32 bytes */
        cfg.rows[4 + t] = 8; cfg.colsb[4 + t] = 64;   /* B: 8 dwords x 16 weight rows */
    }
    _tile_loadconfig(&cfg);
    EC_ALIGNAS(64) __m512i buf[10 * EKX_AKC];
    EC_ALIGNAS(64) int8_t abuf[EKX_PBMAX / 16][EKX_AKC][16][32];   /* activation tiles */
    EC_ALIGNAS(64) int32_t cbuf[EKX_AKC][16][16];
    float dx[EKX_PBMAX * EKX_AKC];
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int b0 = 0; b0 < nb; b0 += EKX_PBMAX) {
        const int nbc = nb - b0 < EKX_PBMAX ? nb - b0 : EKX_PBMAX, ngrp = (nbc + 15) / 16;
        const uint8_t *Xc = X + (size_t)b0 * xrow;
        float *Yc = Y + (size_t)b0 * ldy;
        for (int k0 = 0; k0 < nblk; k0 += EKX_AKC) {
            const int kc = nblk - k0 < EKX_AKC ? nblk - k0 : EKX_AKC, first = k0 == 0;
            for (int b = 0; b < ngrp * 16; b++)
                for (int k = 0; k < kc; k++) {
                    __m256i v = _mm256_setzero_si256();
                    if (b < nbc) {
                        const ek_block_q8_0 *xb = (const ek_block_q8_0 *)(Xc + (size_t)b * xrow) + k0 + k;
                        v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)xb->qs), _mm512_castsi512_si256(flip));
                        dx[b * EKX_AKC + k] = ekx_h2f(xb->d);
                    } else {
                        dx[b * EKX_AKC + k] = 0.0f;
                    }
                    _mm256_store_si256((__m256i *)abuf[b / 16][k][b % 16], v);
                }
            for (int r = r0; r < r16; r += 16) {
                ekx_q_unpack16_amx(kind, packed, W + (size_t)r * wrow, wrow, k0, kc, buf);
                for (int g = 0; g < ngrp; g++) {
                    const int b = g * 16, nv = nbc - b < 16 ? nbc - b : 16;
                    __m512 acc[16];
                    EKX_UNROLL16
                    for (int j = 0; j < 16; j++)
                        acc[j] = first || j >= nv ? _mm512_setzero_ps() : _mm512_loadu_ps(Yc + (size_t)(b + j) * ldy + r);
                    /* the tile products of all blocks of the chunk first (alternating
                     * tile registers, so they pipeline), then the float chains */
                    for (int k = 0; k < kc; k++) {
                        const __m512i *w = buf + 10 * k;
                        if (k & 1) {
                            _tile_loadd(1, w + 9, 0);
                            _tile_loadd(3, abuf[g][k], 32);
                            _tile_loadd(5, w, 64);
                            _tile_dpbusd(1, 3, 5);
                            _tile_stored(1, cbuf[k], 64);
                        } else {
                            _tile_loadd(0, w + 9, 0);
                            _tile_loadd(2, abuf[g][k], 32);
                            _tile_loadd(4, w, 64);
                            _tile_dpbusd(0, 2, 4);
                            _tile_stored(0, cbuf[k], 64);
                        }
                    }
                    for (int k = 0; k < kc; k++) {
                        const __m512 dw = _mm512_castsi512_ps(buf[10 * k + 8]);
                        const int32_t *c = cbuf[k][0];
                        EKX_UNROLL16
                        for (int j = 0; j < 16; j++) {
                            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(dx[(b + j) * EKX_AKC + k]));
                            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * j)), sc, acc[j]);
                        }
                    }
                    EKX_UNROLL16
                    for (int j = 0; j < 16; j++)
                        if (j < nv) _mm512_storeu_ps(Yc + (size_t)(b + j) * ldy + r, acc[j]);
                }
            }
            for (int b = 0; b < nbc; b++)
                for (int r = r16; r < r1; r++) {
                    float *y = Yc + (size_t)b * ldy + r;
                    *y = ekx_q_chain1(kind, W + (size_t)r * wrow, Xc + (size_t)b * xrow, k0, kc, dx + b * EKX_AKC,
                                      NULL, first ? 0.0f : *y);
                }
        }
    }
    _tile_release();
}

static EKX_AMX void ekx_matmul_q4_0_amx(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_q_amx(EKX_Q4_0, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AMX void ekx_matmul_q8_0_amx(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_q_amx(EKX_Q8_0, 0, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AMX void ekx_matmul_q4_0_packed_amx(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                               int r1) {
    ekx_matmul_q_amx(EKX_Q4_0, 1, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AMX void ekx_matmul_q8_0_packed_amx(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0,
                                               int r1) {
    ekx_matmul_q_amx(EKX_Q8_0, 1, W, n, X, nb, Y, ldy, r0, r1);
}

/* ---- AMX-BF16 float matmul (F16, BF16 weights; F32 activations), prompts ---------------------
 * The tiles multiply bf16 (8 significant bits) and add in FP32, so each
 * operand is split into a rounded high part and the rest:
 *     w = wh + wl   exactly (an F16 weight has 11 bits; a BF16 weight has wl = 0)
 *     x = xh + xl + e   with |e| <= 2^-16 |x|
 * and the tiles sum wh*xh + xl*wh + xh*wl, one 32-column step at a time.
 * wl*xl (<= 2^-16 |wx|) is left out, so each product is within 2^-15 of
 * w*x before the FP32 additions: 16x closer than F16 activations (what
 * llama.cpp uses).  Every output is one chain over the columns in order,
 * whatever the row split or the batch, but a different chain from the
 * float kernel that batches of fewer than EKX_AMX_MIN rows (and generation)
 * use: those differ in the last bits (ek_kernels.bf16_tiles_min_nb).
 * Roles: A = 16 activation rows x 32 columns (high or low parts, split once
 * per batch by ekx_convert_bf16_tiles into the batch buffer), B = 16 weight
 * rows as column pairs (B row p holds the pair (2p, 2p+1) of each weight
 * row: a 16 x 16 dword transpose, made per chunk on the stack), C = a 16 x
 * 16 block of Y, loaded from and stored to Y between chunks (FP32 both
 * ways, so exact). */

#ifndef EKX_FKC
#define EKX_FKC 8    /* 32-column steps per chunk: the weight tiles are 32 KB */
#endif

/* r[i] dword j -> r[j] dword i */
EKX_AVX512_INLINE void ekx_transpose16_epi32(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    /* r[4c + m], 128-bit lane l: column 4l + m of rows 4c .. 4c+3 */
    for (int c = 0; c < 16; c += 4) {
        r[c] = _mm512_unpacklo_epi64(t[c], t[c + 2]);
        r[c + 1] = _mm512_unpackhi_epi64(t[c], t[c + 2]);
        r[c + 2] = _mm512_unpacklo_epi64(t[c + 1], t[c + 3]);
        r[c + 3] = _mm512_unpackhi_epi64(t[c + 1], t[c + 3]);
    }
    for (int m = 0; m < 4; m++) {
        __m512i s0 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x44), s1 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xEE),
                s2 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x44), s3 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xEE);
        t[m] = _mm512_shuffle_i32x4(s0, s2, 0x88);
        t[4 + m] = _mm512_shuffle_i32x4(s0, s2, 0xDD);
        t[8 + m] = _mm512_shuffle_i32x4(s1, s3, 0x88);
        t[12 + m] = _mm512_shuffle_i32x4(s1, s3, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

/* 16 bf16 back to FP32, exactly */
EKX_AVX512_INLINE __m512 ekx_bf16x16_to_f32(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* 32 floats (f0: columns 0-15, f1: 16-31) -> their bf16 high parts and the
 * bf16 rounding of what is left */
EKX_AMX_INLINE void ekx_split_bf16(__m512 f0, __m512 f1, __m512i *hi, __m512i *lo) {
    __m512i h = (__m512i)_mm512_cvtne2ps_pbh(f1, f0);
    __m512 h0 = ekx_bf16x16_to_f32(_mm512_castsi512_si256(h)), h1 = ekx_bf16x16_to_f32(_mm512_extracti64x4_epi64(h, 1));
    *hi = h;
    *lo = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(f1, h1), _mm512_sub_ps(f0, h0));
}

EKX_AVX512_INLINE __mmask16 ekx_mask16(int rem) {
    return rem >= 16 ? (__mmask16)0xFFFF : rem <= 0 ? (__mmask16)0 : (__mmask16)((1u << rem) - 1);
}

/* The batch buffer of a tile batch (kernels.c: ek_batch_bytes): for each
 * group of 16 rows (nb rounded up to 32, zeros after row nb), each 32-column
 * step (zeros after column n), the high then the low parts as A tiles. */
static EKX_AMX void ekx_convert_bf16_tiles(const float *x, int nb, void *xa, int n) {
    const int nsteps = (n + 31) / 32, nrows = (nb + 31) / 32 * 32;
    uint16_t(*a)[2][16][32] = (uint16_t (*)[2][16][32])xa;   /* [group * nsteps + step][high/low] */
    for (int b = 0; b < nrows; b++)
        for (int s = 0; s < nsteps; s++) {
            __m512i hi = _mm512_setzero_si512(), lo = hi;
            if (b < nb) {
                const int k = 32 * s;
                const float *p = x + (size_t)b * n + k;
                ekx_split_bf16(_mm512_maskz_loadu_ps(ekx_mask16(n - k), p),
                               _mm512_maskz_loadu_ps(ekx_mask16(n - k - 16), p + 16), &hi, &lo);
            }
            _mm512_storeu_si512(a[(size_t)(b / 16) * nsteps + s][0][b % 16], hi);
            _mm512_storeu_si512(a[(size_t)(b / 16) * nsteps + s][1][b % 16], lo);
        }
}

/* nr (<= 16) weight rows (the rest of the 16 are zeros), steps s0 ..
 * s0+ns-1, as B tiles: w[s][0] high parts, w[s][1] low parts (F16 only).
 * Meanwhile the same rows' pieces at pf (the next chunk's) are fetched:
 * the hardware prefetcher does not follow 32 rows read in short pieces. */
EKX_AMX_INLINE void ekx_bf16_weights(int kind, const uint8_t *W, size_t wrow, int nr, int n, int s0, int ns,
                                     __m512i (*w)[2][16], const uint8_t *pf, int npf) {
    for (int s = 0; s < ns; s++) {
        const int k = 32 * (s0 + s);
        for (int j = 0; j < npf; j++) _mm_prefetch((const char *)pf + (size_t)j * wrow + (size_t)s * 64, _MM_HINT_T0);
        const __mmask32 m = n - k >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (n - k)) - 1);
        __m512i hi[16], lo[16];
        for (int j = 0; j < 16; j++) {
            hi[j] = lo[j] = _mm512_setzero_si512();
            if (j >= nr) continue;
            __m512i raw = _mm512_maskz_loadu_epi16(m, W + (size_t)j * wrow + (size_t)k * 2);
            if (kind == EKX_W_BF16)
                hi[j] = raw;
            else
                ekx_split_bf16(_mm512_cvtph_ps(_mm512_castsi512_si256(raw)),
                               _mm512_cvtph_ps(_mm512_extracti64x4_epi64(raw, 1)), &hi[j], &lo[j]);
        }
        ekx_transpose16_epi32(hi);
        for (int p = 0; p < 16; p++) w[s][0][p] = hi[p];
        if (kind == EKX_W_F16) {
            ekx_transpose16_epi32(lo);
            for (int p = 0; p < 16; p++) w[s][1][p] = lo[p];
        }
    }
}

/* The 2 x 2 tile step: B tiles 6, 7 (weight rows 0-15, 16-31) from w0, w1;
 * then A tiles 4, 5 (activation rows 0-15, 16-31) from a0, a1 and C(i, j)
 * += A(i) B(j) into tiles 0-3. */
EKX_AMX_INLINE void ekx_tiles_b(const void *w0, const void *w1) {
    _tile_loadd(6, w0, 64);
    _tile_loadd(7, w1, 64);
}
EKX_AMX_INLINE void ekx_tiles_a_dp(const void *a0, const void *a1) {
    _tile_loadd(4, a0, 64);
    _tile_loadd(5, a1, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
}

EKX_AMX_INLINE void ekx_matmul_float_amx(int kind, const void *Wv, int n, const void *Xv, int nb, float *Y,
                                         int ldy, int r0, int r1) {
    if (nb < EKX_AMX_MIN) {
        ekx_matmul_float512(kind, Wv, n, Xv, nb, Y, ldy, r0, r1);
        return;
    }
    const uint8_t *W = (const uint8_t *)Wv;
    const uint16_t(*X)[2][16][32] = (const uint16_t (*)[2][16][32])Xv;
    const size_t wrow = (size_t)n * 2, ys = (size_t)ldy * sizeof(float);
    const int nsteps = (n + 31) / 32, npair = (nb + 31) / 32;
    ekx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;   /* C 0-3, A 4-5, B 6-7 */
    _tile_loadconfig(&cfg);
    EC_ALIGNAS(64) __m512i wbuf[2][EKX_FKC][2][16];
    EC_ALIGNAS(64) float cbuf[32][32];
    for (int r = r0; r < r1; r += 32) {
        const int nr = r1 - r < 32 ? r1 - r : 32;
        for (int s0 = 0; s0 < nsteps; s0 += EKX_FKC) {
            const int ns = nsteps - s0 < EKX_FKC ? nsteps - s0 : EKX_FKC, first = s0 == 0;
            /* prefetch the next chunk: these rows' next piece, or the next rows' first */
            const int more = s0 + EKX_FKC < nsteps, pr = more ? r : r + 32;
            const int npf = more ? nr : (r1 - pr < 32 ? r1 - pr : 32);
            const uint8_t *pf = W + (size_t)pr * wrow + (more ? (size_t)(s0 + EKX_FKC) * 64 : 0);
            ekx_bf16_weights(kind, W + (size_t)r * wrow, wrow, nr < 16 ? nr : 16, n, s0, ns, wbuf[0], pf,
                             npf < 16 ? npf : 16);
            ekx_bf16_weights(kind, W + (size_t)(r + 16) * wrow, wrow, nr - 16, n, s0, ns, wbuf[1], pf + 16 * wrow,
                             npf - 16);
            for (int p = 0; p < npair; p++) {
                const int nv = nb - 32 * p < 32 ? nb - 32 * p : 32, full = nv == 32 && nr == 32;
                float *yb = Y + (size_t)(32 * p) * ldy + r;
                /* C tile (i, j): activation rows 16i.., weight rows 16j.. of
                 * this block, in Y or (at the edges) in cbuf */
                float *c = yb;
                size_t cs = ys;
                if (!full) {
                    for (int i = 0; i < 32; i++)
                        for (int j = 0; j < 32; j++) cbuf[i][j] = !first && i < nv && j < nr ? yb[(size_t)i * ldy + j] : 0.0f;
                    c = cbuf[0];
                    cs = sizeof cbuf[0];
                }
                if (first && full) {
                    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
                } else {
                    _tile_loadd(0, c, cs);
                    _tile_loadd(1, c + 16, cs);
                    _tile_loadd(2, (char *)c + 16 * cs, cs);
                    _tile_loadd(3, (char *)(c + 16) + 16 * cs, cs);
                }
                const uint16_t(*a0)[2][16][32] = X + (size_t)(2 * p) * nsteps + s0, (*a1)[2][16][32] = a0 + nsteps;
                for (int s = 0; s < ns; s++) {
                    /* wh*xh, wh*xl, then (F16) wl*xh */
                    ekx_tiles_b(wbuf[0][s][0], wbuf[1][s][0]);
                    ekx_tiles_a_dp(a0[s][0], a1[s][0]);
                    ekx_tiles_a_dp(a0[s][1], a1[s][1]);
                    if (kind == EKX_W_F16) {
                        ekx_tiles_b(wbuf[0][s][1], wbuf[1][s][1]);
                        ekx_tiles_a_dp(a0[s][0], a1[s][0]);
                    }
                }
                _tile_stored(0, c, cs);
                _tile_stored(1, c + 16, cs);
                _tile_stored(2, (char *)c + 16 * cs, cs);
                _tile_stored(3, (char *)(c + 16) + 16 * cs, cs);
                if (!full)
                    for (int i = 0; i < nv; i++)
                        for (int j = 0; j < nr; j++) yb[(size_t)i * ldy + j] = cbuf[i][j];
            }
        }
    }
    _tile_release();
}

static EKX_AMX void ekx_matmul_f16_amx(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_float_amx(EKX_W_F16, W, n, X, nb, Y, ldy, r0, r1);
}
static EKX_AMX void ekx_matmul_bf16_amx(const void *W, int n, const void *X, int nb, float *Y, int ldy, int r0, int r1) {
    ekx_matmul_float_amx(EKX_W_BF16, W, n, X, nb, Y, ldy, r0, r1);
}

#endif /* EMBER_NO_AMX */

/* ---- AVX-512 set ------------------------------------------------------------------------------ */

/* the packed matmuls of both sets: Q4_0 and Q8_0 given, the k-quants shared */
#define EKX_AVX512_PACKED(q4_0, q8_0)                                                                      \
    EK_MATMULS(NULL, NULL, q4_0, NULL, NULL, NULL, q8_0,                                                    \
               ekx_matmul_q2_K_packed_avx512, ekx_matmul_q3_K_packed_avx512, ekx_matmul_q4_K_packed_avx512, \
               ekx_matmul_q5_K_packed_avx512, ekx_matmul_q6_K_packed_avx512, NULL, ekx_matmul_iq4_xs_packed_avx2, NULL)

/* the matmuls of both sets: F16, BF16, Q4_0 and Q8_0 given (the amx set
 * replaces them), the AVX-512 ones of every other type.
 * IQ4_NL and IQ4_XS run the AVX2 kernels here: an AVX-512 variant could not
 * be run (and so tested) on the machine they were written on. */
#define EKX_AVX512_MATMULS(f16, q4_0, q8_0, bf16)                                                           \
    EK_MATMULS(ekx_matmul_f32_avx512, f16, q4_0, ekx_matmul_q4_1_avx512, ekx_matmul_q5_0_avx512,            \
               ekx_matmul_q5_1_avx512, q8_0, ekx_matmul_q2_K_avx512, ekx_matmul_q3_K_avx512,                \
               ekx_matmul_q4_K_avx512, ekx_matmul_q5_K_avx512, ekx_matmul_q6_K_avx512,                      \
               ekx_matmul_iq4_nl_avx2, ekx_matmul_iq4_xs_avx2, bf16)

static const ek_kernels ekx_avx512_set = {
    .name = "avx512",
    .matmul = EKX_AVX512_MATMULS(ekx_matmul_f16_avx512, ekx_matmul_q4_0_avx512, ekx_matmul_q8_0_avx512,
                                 ekx_matmul_bf16_avx512),
    .matmul_packed = EKX_AVX512_PACKED(ekx_matmul_q4_0_packed_avx512, ekx_matmul_q8_0_packed_avx512),
    EKX_AVX2_COMMON,
    .bf16_tiles_min_nb = 0, .convert_bf16_tiles = NULL,
};

#ifndef EMBER_NO_AMX
static const ek_kernels ekx_amx_set = {
    .name = "amx",
    .matmul = EKX_AVX512_MATMULS(ekx_matmul_f16_amx, ekx_matmul_q4_0_amx, ekx_matmul_q8_0_amx,
                                 ekx_matmul_bf16_amx),
    .matmul_packed = EKX_AVX512_PACKED(ekx_matmul_q4_0_packed_amx, ekx_matmul_q8_0_packed_amx),
    EKX_AVX2_COMMON,
    .bf16_tiles_min_nb = EKX_AMX_MIN, .convert_bf16_tiles = ekx_convert_bf16_tiles,
};
#endif

const ek_kernels *ekx_kernels_avx2(void) { return (ekx_features() & 1) ? &ekx_avx2_set : NULL; }
const ek_kernels *ekx_kernels_avx512(void) { return (ekx_features() & 2) ? &ekx_avx512_set : NULL; }
#ifdef EMBER_NO_AMX
const ek_kernels *ekx_kernels_amx(void) { return NULL; }
#else
const ek_kernels *ekx_kernels_amx(void) { return (ekx_features() & 4) ? &ekx_amx_set : NULL; }
#endif

#if defined(__cplusplus) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#else
typedef int ekx_no_x86; /* ISO C wants a non-empty translation unit */
#endif
