/* gguf.h - a validating reader for GGUF files (versions 2 and 3) held in
 * memory.  Knows the file format and the tensor type table, nothing of
 * llama.  Everything is checked before use; nothing is copied: strings and
 * tensor data point into the caller's buffer. */
#ifndef EMBER_GGUF_H
#define EMBER_GGUF_H

#include "common.h"

enum egf_vtype {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3,
    GGUF_UINT32 = 4, GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7,
    GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_UINT64 = 10, GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12
};

typedef struct egf_str { const char *ptr; uint64_t len; } egf_str; /* not NUL-terminated */

typedef struct egf_kv {
    egf_str key;
    int type;               /* enum egf_vtype */
    int arr_type;           /* element type when type == GGUF_ARRAY */
    uint64_t arr_n;         /* element count when type == GGUF_ARRAY */
    const uint8_t *data;    /* the raw value / first array element (unaligned, little-endian) */
} egf_kv;

typedef struct egf_tensor {
    egf_str name;
    int n_dims;             /* 1..4 */
    int64_t ne[4];          /* ne[0] = row length; unused dims are 1 */
    int type;               /* ggml type id (enum ek_type) */
    uint64_t offset;        /* relative to the data section */
    uint64_t nbytes;
    const void *data;       /* aligned as the file says */
} egf_tensor;

typedef struct egf_file egf_file;

/* Parse and validate a GGUF image.  On error returns an ember_status
 * (EMBER_ERR_BAD_MAGIC, _VERSION, _TRUNCATED, _CORRUPT, _UNSUPPORTED,
 * _NOMEM) and writes a message naming the field into err. */
EMBER_INTERNAL int egf_open(const void *data, uint64_t size, const ember_allocator *a,
                             egf_file **out, char *err, size_t errlen);
EMBER_INTERNAL void egf_close(egf_file *f);

/* Bytes of one value of GGUF type t; 0 for strings, arrays and unknown types. */
EMBER_INTERNAL uint64_t egf_fixed_size(uint32_t t);

EMBER_INTERNAL uint32_t egf_version(const egf_file *f);
EMBER_INTERNAL uint32_t egf_alignment(const egf_file *f);

EMBER_INTERNAL uint64_t egf_n_kv(const egf_file *f);
EMBER_INTERNAL const egf_kv *egf_kv_at(const egf_file *f, uint64_t i);
EMBER_INTERNAL const egf_kv *egf_find_kv(const egf_file *f, const char *key); /* NULL if absent */

/* Typed getters: EMBER_OK, EMBER_ERR_MISSING if absent, EMBER_ERR_CORRUPT
 * if the stored type cannot represent the request exactly (any integer type
 * whose value fits is accepted for integers; float32/64 for floats). */
EMBER_INTERNAL int egf_get_u32(const egf_file *f, const char *key, uint32_t *out);
EMBER_INTERNAL int egf_get_i64(const egf_file *f, const char *key, int64_t *out);
EMBER_INTERNAL int egf_get_f32(const egf_file *f, const char *key, float *out);
EMBER_INTERNAL int egf_get_bool(const egf_file *f, const char *key, int *out);
EMBER_INTERNAL int egf_get_str(const egf_file *f, const char *key, egf_str *out);
/* 1 if the string s equals the NUL-terminated c. */
EMBER_INTERNAL int egf_str_eq(egf_str s, const char *c);

/* Arrays: element i of an array kv.  Numeric elements are returned
 * converted (any integer type for _int, float32/64 for _f32). Strings point
 * into the file.  Indexing is O(1) (string arrays are indexed at open). */
EMBER_INTERNAL int egf_arr_str(const egf_file *f, const egf_kv *kv, uint64_t i, egf_str *out);
EMBER_INTERNAL int egf_arr_int(const egf_kv *kv, uint64_t i, int64_t *out);
EMBER_INTERNAL int egf_arr_f32(const egf_kv *kv, uint64_t i, float *out);

EMBER_INTERNAL uint64_t egf_n_tensors(const egf_file *f);
EMBER_INTERNAL const egf_tensor *egf_tensor_at(const egf_file *f, uint64_t i);
EMBER_INTERNAL const egf_tensor *egf_find_tensor(const egf_file *f, const char *name); /* NULL if absent */

/* Where the tensor data section starts in the image, and its size. */
EMBER_INTERNAL uint64_t egf_data_offset(const egf_file *f);
EMBER_INTERNAL uint64_t egf_data_size(const egf_file *f);
/* "uint32", "string", ... for an enum egf_vtype value ("unknown" else). */
EMBER_INTERNAL const char *egf_vtype_name(int vtype);

#endif
