/* gguf_build.h - build GGUF images in memory for tests.
 *
 *   gb_buf b = {0};
 *   gb_header(&b, 3, n_tensors, n_kv);
 *   gb_kv_u32(&b, "general.alignment", 32);
 *   gb_kv_str(&b, "general.architecture", "llama");
 *   gb_tensor t[] = {GB_TENSOR("tok_embd.weight", 2, EK_F32, 64, 10)};
 *   gb_tensors(&b, t, 1, 32);   // infos (contiguous offsets), padding, data
 *   ... egf_open(b.p, b.n, ...) ...
 *   gb_free(&b);
 *
 * Every writer appends to the buffer; b.n before a call is the offset the
 * field lands at, so tests can corrupt any field precisely.  Allocation
 * failure aborts the test program (this is test code).  All names gb_. */
#ifndef EMBER_GGUF_BUILD_H
#define EMBER_GGUF_BUILD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

/* Tests include this header and use only some of it. */
#if defined(__GNUC__)
#define GB_STATIC static __attribute__((unused))
#else
#define GB_STATIC static
#endif

typedef struct gb_buf {
    uint8_t *p;
    size_t n, cap;
} gb_buf;

/* GGUF value type ids (as enum egf_vtype in src/gguf.h). */
enum {
    GB_UINT8 = 0, GB_INT8 = 1, GB_UINT16 = 2, GB_INT16 = 3, GB_UINT32 = 4,
    GB_INT32 = 5, GB_FLOAT32 = 6, GB_BOOL = 7, GB_STRING = 8, GB_ARRAY = 9,
    GB_UINT64 = 10, GB_INT64 = 11, GB_FLOAT64 = 12
};

GB_STATIC void gb_free(gb_buf *b) { free(b->p); b->p = NULL; b->n = b->cap = 0; }

GB_STATIC void gb_bytes(gb_buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = (uint8_t *)realloc(b->p, cap);
        if (!p) { fprintf(stderr, "gguf_build: out of memory\n"); exit(2); }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

GB_STATIC void gb_zeros(gb_buf *b, size_t n) {
    static const uint8_t z[64];
    while (n) { size_t k = n < 64 ? n : 64; gb_bytes(b, z, k); n -= k; }
}

GB_STATIC void gb_u8(gb_buf *b, uint8_t v) { gb_bytes(b, &v, 1); }
GB_STATIC void gb_u16(gb_buf *b, uint16_t v) { gb_bytes(b, &v, 2); }
GB_STATIC void gb_u32(gb_buf *b, uint32_t v) { gb_bytes(b, &v, 4); }
GB_STATIC void gb_u64(gb_buf *b, uint64_t v) { gb_bytes(b, &v, 8); }
GB_STATIC void gb_f32(gb_buf *b, float v) { gb_bytes(b, &v, 4); }
GB_STATIC void gb_f64(gb_buf *b, double v) { gb_bytes(b, &v, 8); }

/* A GGUF string: uint64 length then the bytes (no NUL). */
GB_STATIC void gb_strn(gb_buf *b, const char *s, size_t n) { gb_u64(b, n); gb_bytes(b, s, n); }
GB_STATIC void gb_str(gb_buf *b, const char *s) { gb_strn(b, s, strlen(s)); }

/* Overwrite fields already written. */
GB_STATIC void gb_put_u32(gb_buf *b, size_t at, uint32_t v) { memcpy(b->p + at, &v, 4); }
GB_STATIC void gb_put_u64(gb_buf *b, size_t at, uint64_t v) { memcpy(b->p + at, &v, 8); }

GB_STATIC void gb_pad(gb_buf *b, size_t align) {
    if (align > 1 && b->n % align) gb_zeros(b, align - b->n % align);
}

/* magic, version, n_tensors, n_kv (offsets 0, 4, 8, 16). */
GB_STATIC void gb_header(gb_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    gb_bytes(b, "GGUF", 4);
    gb_u32(b, version);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}

/* key and value type; the value follows. */
GB_STATIC void gb_key(gb_buf *b, const char *key, uint32_t type) { gb_str(b, key); gb_u32(b, type); }

GB_STATIC void gb_kv_u8(gb_buf *b, const char *k, uint8_t v) { gb_key(b, k, GB_UINT8); gb_u8(b, v); }
GB_STATIC void gb_kv_i8(gb_buf *b, const char *k, int8_t v) { gb_key(b, k, GB_INT8); gb_u8(b, (uint8_t)v); }
GB_STATIC void gb_kv_u16(gb_buf *b, const char *k, uint16_t v) { gb_key(b, k, GB_UINT16); gb_u16(b, v); }
GB_STATIC void gb_kv_i16(gb_buf *b, const char *k, int16_t v) { gb_key(b, k, GB_INT16); gb_u16(b, (uint16_t)v); }
GB_STATIC void gb_kv_u32(gb_buf *b, const char *k, uint32_t v) { gb_key(b, k, GB_UINT32); gb_u32(b, v); }
GB_STATIC void gb_kv_i32(gb_buf *b, const char *k, int32_t v) { gb_key(b, k, GB_INT32); gb_u32(b, (uint32_t)v); }
GB_STATIC void gb_kv_u64(gb_buf *b, const char *k, uint64_t v) { gb_key(b, k, GB_UINT64); gb_u64(b, v); }
GB_STATIC void gb_kv_i64(gb_buf *b, const char *k, int64_t v) { gb_key(b, k, GB_INT64); gb_u64(b, (uint64_t)v); }
GB_STATIC void gb_kv_f32(gb_buf *b, const char *k, float v) { gb_key(b, k, GB_FLOAT32); gb_f32(b, v); }
GB_STATIC void gb_kv_f64(gb_buf *b, const char *k, double v) { gb_key(b, k, GB_FLOAT64); gb_f64(b, v); }
GB_STATIC void gb_kv_bool(gb_buf *b, const char *k, int v) { gb_key(b, k, GB_BOOL); gb_u8(b, v ? 1 : 0); }
GB_STATIC void gb_kv_str(gb_buf *b, const char *k, const char *v) { gb_key(b, k, GB_STRING); gb_str(b, v); }

/* Array header (element type, count); the caller writes the n elements. */
GB_STATIC void gb_arr(gb_buf *b, uint32_t elem_type, uint64_t n) { gb_u32(b, elem_type); gb_u64(b, n); }
GB_STATIC void gb_kv_arr(gb_buf *b, const char *k, uint32_t elem_type, uint64_t n) {
    gb_key(b, k, GB_ARRAY);
    gb_arr(b, elem_type, n);
}
GB_STATIC void gb_kv_arr_str(gb_buf *b, const char *k, const char *const *v, size_t n) {
    gb_kv_arr(b, k, GB_STRING, n);
    for (size_t i = 0; i < n; i++) gb_str(b, v[i]);
}
GB_STATIC void gb_kv_arr_i32(gb_buf *b, const char *k, const int32_t *v, size_t n) {
    gb_kv_arr(b, k, GB_INT32, n);
    gb_bytes(b, v, n * 4);
}
GB_STATIC void gb_kv_arr_f32(gb_buf *b, const char *k, const float *v, size_t n) {
    gb_kv_arr(b, k, GB_FLOAT32, n);
    gb_bytes(b, v, n * 4);
}

/* One tensor info, written verbatim (any values, for corrupting). */
GB_STATIC void gb_tensor_info(gb_buf *b, const char *name, uint32_t n_dims,
                           const int64_t *ne, uint32_t type, uint64_t offset) {
    gb_str(b, name);
    gb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) gb_u64(b, (uint64_t)ne[d]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

typedef struct gb_tensor {
    const char *name;
    int n_dims;
    int64_t ne[4];           /* unused dims may be 0 */
    int type;                /* ggml type id */
    /* filled by gb_tensors: */
    size_t info_at;          /* offset of the tensor info (its name length) */
    size_t offset_at;        /* offset of its "offset" field */
    uint64_t offset;         /* relative to the data section */
    uint64_t nbytes;
    size_t data_at;          /* absolute offset of its data */
} gb_tensor;

/* A tensor spec with the filled-in fields left zero:
 *   gb_tensor t[] = {GB_TENSOR("w", 2, EK_F32, 64, 10)}; */
#define GB_TENSOR(nm, nd, ty, ...) {.name = (nm), .n_dims = (nd), .type = (ty), .ne = {__VA_ARGS__}}

GB_STATIC uint64_t gb_tensor_nbytes(const gb_tensor *t) {
    uint64_t rows = 1;
    for (int d = 1; d < t->n_dims; d++) rows *= (uint64_t)t->ne[d];
    return ek_row_bytes(t->type, (uint64_t)t->ne[0]) * rows;
}

/* Tensor infos with contiguous aligned offsets, padding to align, then the
 * data (byte i of tensor k's data = (k * 31 + i) & 0xff).  Returns the
 * offset of the data section. */
GB_STATIC size_t gb_tensors(gb_buf *b, gb_tensor *t, int n, size_t align) {
    uint64_t off = 0;
    for (int k = 0; k < n; k++) {
        t[k].nbytes = gb_tensor_nbytes(&t[k]);
        t[k].offset = off;
        off += t[k].nbytes;
        if (align > 1 && off % align) off += align - off % align;
    }
    for (int k = 0; k < n; k++) {
        t[k].info_at = b->n;
        gb_tensor_info(b, t[k].name, (uint32_t)t[k].n_dims, t[k].ne, (uint32_t)t[k].type, t[k].offset);
        t[k].offset_at = b->n - 8;
    }
    gb_pad(b, align);
    size_t data = b->n;
    for (int k = 0; k < n; k++) {
        gb_zeros(b, (size_t)(data + t[k].offset - b->n));
        t[k].data_at = b->n;
        for (uint64_t i = 0; i < t[k].nbytes; i++) gb_u8(b, (uint8_t)((k * 31 + i) & 0xff));
    }
    gb_pad(b, align);
    return data;
}

/* Write the image to a file; returns 0 on success. */
GB_STATIC int gb_write_file(const gb_buf *b, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b->p, 1, b->n, f);
    return (fclose(f) == 0 && w == b->n) ? 0 : -1;
}

#endif
