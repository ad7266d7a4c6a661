/* fuzz_gguf.c - libFuzzer harness for the GGUF reader: open the input as a
 * GGUF image and touch every kv, array element and tensor byte range.
 *   clang -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
 *       tests/fuzz/fuzz_gguf.c src/gguf.c src/kernels.c src/kernels_x86.c \
 *       src/kernels_arm.c src/common.c
 *   mkdir -p corpus && ./a.out corpus tests/fuzz/corpus_gguf
 * (kernels.c refers to the SIMD kernel sets in kernels_x86.c/_arm.c.)
 * The seed corpus is written by GGUF_WRITE_CORPUS=dir build/tests/test_gguf. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>
#include "gguf.h"

/* A tiny allocator that caps live bytes: the reader documents under 4
 * bytes of allocation per input byte (plus a small constant). */
static size_t fz_live, fz_cap;
static void *fz_malloc(void *u, size_t n) {
    (void)u;
    if (n > fz_cap - fz_live) __builtin_trap();
    size_t *p = malloc(n + 16);
    if (!p) return NULL;
    p[0] = n;
    fz_live += n;
    return (char *)p + 16;
}
static void *fz_realloc(void *u, void *q, size_t n) {
    (void)u; (void)q; (void)n;
    __builtin_trap();   /* the reader never reallocates */
}
static void fz_free(void *u, void *q) {
    (void)u;
    if (!q) return;
    size_t *p = (size_t *)((char *)q - 16);
    fz_live -= p[0];
    free(p);
}

static volatile uint64_t fz_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ember_allocator a = {fz_malloc, fz_realloc, fz_free, NULL};
    fz_live = 0;
    fz_cap = 1024 + 4 * size;
    egf_file *f = NULL;
    char err[256];
    int rc = egf_open(data, size, &a, &f, err, sizeof err);
    if (rc != EMBER_OK) {
        if (f || !err[0] || strlen(err) >= sizeof err) __builtin_trap();
        if (fz_live) __builtin_trap();   /* leak on failure */
        return 0;
    }
    uint64_t h = egf_version(f) + egf_alignment(f);
    for (uint64_t i = 0; i < egf_n_kv(f); i++) {
        const egf_kv *kv = egf_kv_at(f, i);
        char key[256];
        size_t n = kv->key.len < sizeof key - 1 ? (size_t)kv->key.len : sizeof key - 1;
        memcpy(key, kv->key.ptr, n);
        key[n] = 0;
        if (n == kv->key.len && egf_find_kv(f, key) != kv) __builtin_trap();
        uint32_t u; int64_t v; float x; int b; egf_str s;
        if (egf_get_u32(f, key, &u) == 0) h += u;
        if (egf_get_i64(f, key, &v) == 0) h += (uint64_t)v;
        if (egf_get_f32(f, key, &x) == 0) h += (uint64_t)(x == x);
        if (egf_get_bool(f, key, &b) == 0) h += (uint64_t)b;
        if (egf_get_str(f, key, &s) == 0 && s.len) h += (unsigned char)s.ptr[0] + (unsigned char)s.ptr[s.len - 1];
        if (kv->type == GGUF_ARRAY) {
            for (uint64_t e = 0; e < kv->arr_n; e++) {
                if (egf_arr_str(f, kv, e, &s) == 0) {
                    if (s.len) h += (unsigned char)s.ptr[0] + (unsigned char)s.ptr[s.len - 1];
                } else if (egf_arr_int(kv, e, &v) == 0) {
                    h += (uint64_t)v;
                } else if (egf_arr_f32(kv, e, &x) == 0) {
                    h += (uint64_t)(x == x);
                } else {
                    break;
                }
            }
        }
    }
    const uint8_t *end = data + size;
    for (uint64_t i = 0; i < egf_n_tensors(f); i++) {
        const egf_tensor *t = egf_tensor_at(f, i);
        const uint8_t *d = t->data;
        if (t->n_dims < 1 || t->n_dims > 4 || t->nbytes == 0) __builtin_trap();
        if (d < data || d > end || t->nbytes > (uint64_t)(end - d)) __builtin_trap();
        if ((t->offset % egf_alignment(f)) != 0) __builtin_trap();
        h += d[0] + d[t->nbytes - 1];
        if (egf_find_tensor(f, "") != NULL) __builtin_trap();
        char name[256];
        size_t n = t->name.len < sizeof name - 1 ? (size_t)t->name.len : sizeof name - 1;
        memcpy(name, t->name.ptr, n);
        name[n] = 0;
        if (n == t->name.len && egf_find_tensor(f, name) != t) __builtin_trap();
    }
    fz_sink = h;
    egf_close(f);
    if (fz_live) __builtin_trap();
    return 0;
}
