/* common.h - what every ember source file shares: the allocator hook and
 * small helpers.  Lowest layer: knows nothing of files, models or kernels. */
#ifndef EMBER_COMMON_H
#define EMBER_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include "ember.h"

/* The linkage of every internal function and data object: external in the
 * library (hidden from the shared library's exports by -fvisibility=hidden),
 * static in the single-file build (tools/amalgamate.sh defines it), so that
 * ember links beside ggml and others without clashes. */
#ifndef EMBER_INTERNAL
#define EMBER_INTERNAL
#endif

/* Every source also compiles as C++17 (the single file drops into C++
 * projects): the C11 spellings C++ lacks go through these. */
#ifdef __cplusplus
#include <atomic>
using std::atomic_int;
using std::atomic_uint;
using std::memory_order_relaxed;
using std::memory_order_acquire;
using std::memory_order_release;
using std::memory_order_acq_rel;
#define EC_ALIGNAS(n) alignas(n)
#define EC_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#define EC_RESTRICT __restrict
#else
#include <stdatomic.h>
#define EC_ALIGNAS(n) _Alignas(n)
#define EC_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#define EC_RESTRICT restrict
#endif

/* Allocation through a user hook (a NULL hook means libc). */
EMBER_INTERNAL void *ec_malloc(const ember_allocator *a, size_t n);
EMBER_INTERNAL void *ec_calloc(const ember_allocator *a, size_t count, size_t size); /* overflow-checked */
EMBER_INTERNAL void *ec_realloc(const ember_allocator *a, void *p, size_t n);
EMBER_INTERNAL void ec_free(const ember_allocator *a, void *p);

/* 64-byte aligned allocation through the hook (stores the offset before
 * the block); free with ec_free_aligned. */
EMBER_INTERNAL void *ec_malloc_aligned(const ember_allocator *a, size_t n);
EMBER_INTERNAL void ec_free_aligned(const ember_allocator *a, void *p);

/* printf-style format checking.  MinGW builds use MinGW's own printf
 * (__USE_MINGW_ANSI_STDIO, set by the Makefile and the single file), which
 * knows C99's %zu; msvcrt's does not. */
#if defined(__MINGW32__)
#define EC_PRINTF(f, a) __attribute__((format(gnu_printf, f, a)))
#elif defined(__GNUC__)
#define EC_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define EC_PRINTF(f, a)
#endif

/* snprintf into an error buffer (buf may be NULL); returns code. */
EMBER_INTERNAL int ec_errorf(char *buf, size_t size, int code, const char *fmt, ...)
    EC_PRINTF(4, 5)
    ;

/* The error contract's two halves for functions that take an ember_error
 * (err may be NULL): ec_fail fills it with code and a printf-style message
 * naming the problem and returns code; ec_ok marks success (EMBER_OK, "")
 * so an earlier message never survives a successful call. */
EMBER_INTERNAL ember_status ec_fail(ember_error *err, ember_status code, const char *fmt, ...)
    EC_PRINTF(3, 4)
    ;
EMBER_INTERNAL ember_status ec_ok(ember_error *err);

/* The one convention for text output: n bytes of src into buf of size
 * bytes, at most size-1 of them and always a NUL when size > 0 (buf may be
 * NULL when size is 0); *out_len (may be NULL) = n.  EMBER_OK when all of
 * it fit, else EMBER_ERR_BUFFER_TOO_SMALL with err saying how much is
 * needed.  what names the text in that message. */
EMBER_INTERNAL ember_status ec_put_text(const char *src, size_t n, char *buf, size_t size, size_t *out_len, const char *what,
                         ember_error *err);

/* a * b without overflow: returns 0 and sets *out, or -1 on overflow. */
static inline int ec_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return -1;
    *out = a * b;
    return 0;
}

/* Decode one UTF-8 code point from s[0..n): returns its byte length (1..4)
 * and sets *cp, or returns 0 for an invalid / truncated sequence (then the
 * caller treats s[0] as one byte). Overlongs and surrogates are invalid. */
EMBER_INTERNAL int ec_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* Number of bytes at the end of s[0..n) that form an incomplete (but so far
 * valid) UTF-8 sequence, 0..3. */
EMBER_INTERNAL size_t ec_utf8_incomplete_tail(const unsigned char *s, size_t n);

#endif
