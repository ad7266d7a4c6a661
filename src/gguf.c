/* gguf.c - a validating, zero-copy reader for GGUF v2/v3 images in memory.
 *
 * The image is untrusted.  Every read is bounds-checked against the image
 * size, every count is bounded by what the remaining bytes could possibly
 * hold before anything is allocated for it, and all sizes are computed with
 * overflow checks.  Parsing time and memory are linear in the file size.
 *
 * Policy decisions (beyond the GGUF spec):
 *  - versions 2 and 3 only (v1 has 32-bit counts; a byte-swapped version
 *    number is reported as a big-endian file);
 *  - keys and tensor names must be non-empty, valid UTF-8 and free of NUL
 *    bytes (they are looked up by C string and printed in messages);
 *    string *values* may hold any bytes (llama.cpp does not check them and
 *    tokenizer vocabularies hold raw byte pieces);
 *  - keys unique, tensor names unique (checked on indices sorted by name,
 *    which also serve lookups by binary search: O(n log n) worst case, so
 *    no input can provoke the quadratic behaviour of a flooded hash table);
 *  - bool values must be 0 or 1 (scalars and array elements);
 *  - arrays of arrays are allowed up to GGUF_MAX_DEPTH levels of nesting;
 *    only top-level arrays can be read through the accessors;
 *  - general.alignment must be a uint32, nonzero power of two;
 *  - tensors: 1..4 dims, each ne >= 1, element count and byte size fit in
 *    int64, row length a multiple of the type's block size, type known to
 *    ek_type_get, offset a multiple of the alignment, data inside the image,
 *    no two tensors' data overlap (they need not be in offset order or
 *    contiguous, unlike llama.cpp which insists on its own layout).
 *
 * Memory: one egf_file, one kv array, one tensor array, two sorted
 * indices (4 bytes per kv / tensor) and one index of string-array elements (8 bytes per element, each of
 * which occupies at least 8 bytes of the file) - O(n_kv + n_tensors +
 * string elements), under 4 bytes per byte of the file (a kv takes at least
 * 14 bytes of file and 52 of memory, a tensor info 33 and 92) plus a small
 * constant.  Nothing is reallocated.
 */
#include "gguf.h"
#include "kernels.h"

#include <string.h>
#include <inttypes.h>
#include <stdio.h>

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ember's GGUF reader assumes a little-endian host"
#endif

#define GGUF_MAX_DEPTH 4          /* nesting levels of arrays (1 = plain array) */
#define GGUF_MAX_COUNT 0x7fffffffu /* kv / tensor count cap (indices are uint32) */
#define GGUF_DEFAULT_ALIGN 32u
#define GGUF_HEADER_SIZE 24u      /* magic, version, n_tensors, n_kv */
#define GGUF_MIN_KV_SIZE 14u      /* key len 8 + 1 byte key + type 4 + 1 byte value */
#define GGUF_MIN_TI_SIZE 33u      /* name len 8 + 1 + n_dims 4 + ne 8 + type 4 + offset 8 */

typedef struct egf_kvi {
    egf_kv pub;
    uint64_t str_first;           /* first index into egf_file.str_off (string arrays) */
} egf_kvi;

struct egf_file {
    const ember_allocator *alloc;
    const uint8_t *base;
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv, n_tensors;
    egf_kvi *kvs;
    egf_tensor *tensors;
    uint64_t *str_off;            /* image offset of each string-array element */
    uint64_t n_str;
    uint32_t *kv_order, *t_order; /* indices sorted by key / tensor name */
    uint64_t data_offset, data_size;
};

/* ---- cursor ------------------------------------------------------------- */

typedef struct egf_cur {
    const uint8_t *base;
    uint64_t size, pos;
    char *err;
    size_t errlen;
} egf_cur;

static uint64_t egf_left(const egf_cur *c) { return c->size - c->pos; }

static uint16_t egf_ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t egf_ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t egf_ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Reads n bytes' worth of a field; fails with TRUNCATED naming what. */
static int egf_need(egf_cur *c, uint64_t n, const char *what, const char *who) {
    if (n > egf_left(c))
        return ec_errorf(c->err, c->errlen, EMBER_ERR_TRUNCATED,
                         "%s%s: needs %" PRIu64 " bytes at offset %" PRIu64
                         " but the file ends at %" PRIu64,
                         who, what, n, c->pos, c->size);
    return EMBER_OK;
}

static int egf_rd32(egf_cur *c, uint32_t *v, const char *what, const char *who) {
    int rc = egf_need(c, 4, what, who);
    if (rc) return rc;
    *v = egf_ld32(c->base + c->pos);
    c->pos += 4;
    return EMBER_OK;
}

static int egf_rd64(egf_cur *c, uint64_t *v, const char *what, const char *who) {
    int rc = egf_need(c, 8, what, who);
    if (rc) return rc;
    *v = egf_ld64(c->base + c->pos);
    c->pos += 8;
    return EMBER_OK;
}

/* A printable, bounded rendering of untrusted bytes for messages. */
static const char *egf_quote(char *buf, size_t cap, const char *s, uint64_t n) {
    size_t o = 0;
    uint64_t i;
    for (i = 0; i < n && o + 4 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (i < n && o + 4 <= cap) { buf[o++] = '.'; buf[o++] = '.'; buf[o++] = '.'; }
    buf[o] = 0;
    return buf;
}

/* Reads a GGUF string (uint64 length + bytes). */
static int egf_rdstr(egf_cur *c, egf_str *s, const char *what, const char *who) {
    uint64_t len;
    int rc = egf_rd64(c, &len, what, who);
    if (rc) return rc;
    if (len > egf_left(c))
        return ec_errorf(c->err, c->errlen, EMBER_ERR_TRUNCATED,
                         "%s%s: string length %" PRIu64 " at offset %" PRIu64
                         " exceeds the %" PRIu64 " bytes left in the file",
                         who, what, len, c->pos - 8, egf_left(c));
    s->ptr = (const char *)c->base + c->pos;
    s->len = len;
    c->pos += len;
    return EMBER_OK;
}

/* Keys and tensor names: non-empty, no NUL, valid UTF-8. */
static int egf_check_name(egf_cur *c, egf_str s, uint64_t at, const char *what) {
    char q[80];
    if (s.len == 0)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                         "%s at offset %" PRIu64 " is empty", what, at);
    const unsigned char *p = (const unsigned char *)s.ptr;
    uint64_t i = 0;
    while (i < s.len) {
        uint32_t cp;
        uint64_t rest = s.len - i;
        int l = ec_utf8_decode(p + i, rest > 8 ? 8 : (size_t)rest, &cp);
        if (l == 0 || cp == 0)
            return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                             "%s '%s' at offset %" PRIu64 " has %s at byte %" PRIu64,
                             what, egf_quote(q, sizeof q, s.ptr, s.len), at,
                             l == 0 ? "invalid UTF-8" : "a NUL byte", i);
        i += (uint64_t)l;
    }
    return EMBER_OK;
}

/* ---- value types ---------------------------------------------------------- */

static const char *egf_vtype_names[13] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
    "string", "array", "uint64", "int64", "float64"
};

const char *egf_vtype_name(int t) {
    return (t >= 0 && t <= GGUF_FLOAT64) ? egf_vtype_names[t] : "unknown";
}

uint64_t egf_fixed_size(uint32_t t) {
    switch (t) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_BOOL: return 1;
    case GGUF_UINT16: case GGUF_INT16: return 2;
    case GGUF_UINT32: case GGUF_INT32: case GGUF_FLOAT32: return 4;
    case GGUF_UINT64: case GGUF_INT64: case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Least bytes one element of type t can occupy (t already known valid). */
static uint64_t egf_min_size(uint32_t t) {
    if (t == GGUF_STRING) return 8;
    if (t == GGUF_ARRAY) return 12;
    return egf_fixed_size(t);
}

typedef struct egf_ctx {
    egf_cur c;
    const char *keyq;       /* quoted key, for messages */
    char who[128];          /* "key '...'", for messages */
    uint64_t n_str;         /* string-array elements counted / stored */
    uint64_t *str_off;      /* NULL during the counting pass */
} egf_ctx;

/* Skips/validates one value of type t at the cursor.  depth = array nesting
 * of this value.  For a top-level string array in the filling pass, records
 * element offsets. */
static int egf_value(egf_ctx *x, uint32_t t, int depth, int index_strings) {
    egf_cur *c = &x->c;
    const char *who = x->who;
    int rc;
    if (t > GGUF_FLOAT64)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                         "key '%s': unknown value type %" PRIu32 " at offset %" PRIu64,
                         x->keyq, t, c->pos);
    if (t == GGUF_STRING) {
        egf_str s;
        return egf_rdstr(c, &s, " string value", who);
    }
    if (t != GGUF_ARRAY) {
        uint64_t n = egf_fixed_size(t);
        if ((rc = egf_need(c, n, " value", who))) return rc;
        if (t == GGUF_BOOL && c->base[c->pos] > 1)
            return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                             "key '%s': bool value %u at offset %" PRIu64 " is not 0 or 1",
                             x->keyq, c->base[c->pos], c->pos);
        c->pos += n;
        return EMBER_OK;
    }
    /* array */
    if (depth + 1 > GGUF_MAX_DEPTH)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                         "key '%s': arrays nested deeper than %d levels at offset %" PRIu64,
                         x->keyq, GGUF_MAX_DEPTH, c->pos);
    uint32_t et;
    uint64_t n;
    if ((rc = egf_rd32(c, &et, " array element type", who))) return rc;
    if (et > GGUF_FLOAT64)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                         "key '%s': unknown array element type %" PRIu32 " at offset %" PRIu64,
                         x->keyq, et, c->pos - 4);
    if ((rc = egf_rd64(c, &n, " array length", who))) return rc;
    uint64_t esz = egf_min_size(et);
    if (n > egf_left(c) / esz)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                         "key '%s': array of %" PRIu64 " %s elements at offset %" PRIu64
                         " cannot fit in the %" PRIu64 " bytes left in the file",
                         x->keyq, n, egf_vtype_name((int)et), c->pos - 8, egf_left(c));
    if (et == GGUF_STRING) {
        for (uint64_t i = 0; i < n; i++) {
            egf_str s;
            if (index_strings && x->str_off) x->str_off[x->n_str] = c->pos;
            if ((rc = egf_rdstr(c, &s, " string array element", who))) return rc;
            if (index_strings) x->n_str++;
        }
        return EMBER_OK;
    }
    if (et == GGUF_ARRAY) {
        for (uint64_t i = 0; i < n; i++)
            if ((rc = egf_value(x, GGUF_ARRAY, depth + 1, 0))) return rc;
        return EMBER_OK;
    }
    /* fixed-size elements: n * esz <= left, checked above */
    if (et == GGUF_BOOL) {
        const uint8_t *p = c->base + c->pos;
        for (uint64_t i = 0; i < n; i++)
            if (p[i] > 1)
                return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                                 "key '%s': bool array element %" PRIu64 " = %u is not 0 or 1",
                                 x->keyq, i, p[i]);
    }
    c->pos += n * esz;
    return EMBER_OK;
}

/* One key/value pair.  If kv is non-NULL it is filled. */
static int egf_one_kv(egf_ctx *x, uint64_t i, egf_kvi *kv) {
    egf_cur *c = &x->c;
    char who[48], q[80];
    egf_str key;
    uint32_t t;
    int rc;
    uint64_t at = c->pos;
    snprintf(who, sizeof who, "kv %" PRIu64, i);
    if ((rc = egf_rdstr(c, &key, " key", who))) return rc;
    if ((rc = egf_check_name(c, key, at, "key"))) return rc;
    x->keyq = egf_quote(q, sizeof q, key.ptr, key.len);
    snprintf(x->who, sizeof x->who, "key '%s'", x->keyq);
    if ((rc = egf_rd32(c, &t, " value type", x->who))) return rc;
    uint64_t vstart = c->pos;
    uint64_t sfirst = x->n_str;
    if ((rc = egf_value(x, t, 0, 1))) return rc;
    if (kv) {
        kv->pub.key = key;
        kv->pub.type = (int)t;
        kv->pub.arr_type = -1;
        kv->pub.arr_n = 0;
        kv->pub.data = c->base + vstart;
        kv->str_first = sfirst;
        if (t == GGUF_ARRAY) {
            kv->pub.arr_type = (int)egf_ld32(c->base + vstart);
            kv->pub.arr_n = egf_ld64(c->base + vstart + 4);
            kv->pub.data = c->base + vstart + 12;
        }
    }
    return EMBER_OK;
}

/* ---- sorted indices -------------------------------------------------------- */

/* Byte-wise order of names (a prefix sorts first). */
static int egf_name_cmp(egf_str a, egf_str b) {
    uint64_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, (size_t)n) : 0;
    if (c) return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

typedef int (*egf_less_fn)(const egf_file *f, uint32_t a, uint32_t b);

/* Total orders (ties broken by index, so equal names end up adjacent with
 * the first occurrence first). */
static int egf_kv_less(const egf_file *f, uint32_t a, uint32_t b) {
    int c = egf_name_cmp(f->kvs[a].pub.key, f->kvs[b].pub.key);
    return c < 0 || (c == 0 && a < b);
}
static int egf_tname_less(const egf_file *f, uint32_t a, uint32_t b) {
    int c = egf_name_cmp(f->tensors[a].name, f->tensors[b].name);
    return c < 0 || (c == 0 && a < b);
}
static int egf_toff_less(const egf_file *f, uint32_t a, uint32_t b) {
    uint64_t x = f->tensors[a].offset, y = f->tensors[b].offset;
    return x < y || (x == y && a < b);
}

/* Heap sort: no allocation, no recursion, O(n log n) worst case. */
static void egf_sift(const egf_file *f, uint32_t *ix, uint64_t root, uint64_t n, egf_less_fn less) {
    for (;;) {
        uint64_t child = 2 * root + 1;
        if (child >= n) return;
        if (child + 1 < n && less(f, ix[child], ix[child + 1])) child++;
        if (!less(f, ix[root], ix[child])) return;
        uint32_t tmp = ix[root]; ix[root] = ix[child]; ix[child] = tmp;
        root = child;
    }
}

static void egf_heapsort(const egf_file *f, uint32_t *ix, uint64_t n, egf_less_fn less) {
    for (uint64_t i = 0; i < n; i++) ix[i] = (uint32_t)i;
    if (n < 2) return;
    for (uint64_t i = n / 2; i-- > 0;) egf_sift(f, ix, i, n, less);
    for (uint64_t end = n - 1; end > 0; end--) {
        uint32_t tmp = ix[0]; ix[0] = ix[end]; ix[end] = tmp;
        egf_sift(f, ix, 0, end, less);
    }
}

/* ---- open ------------------------------------------------------------------- */

void egf_close(egf_file *f) {
    if (!f) return;
    const ember_allocator *a = f->alloc;
    ec_free(a, f->kvs);
    ec_free(a, f->tensors);
    ec_free(a, f->str_off);
    ec_free(a, f->kv_order);
    ec_free(a, f->t_order);
    ec_free(a, f);
}

static int egf_nomem(char *err, size_t errlen, const char *what, uint64_t n) {
    return ec_errorf(err, errlen, EMBER_ERR_NOMEM,
                     "out of memory allocating %s (%" PRIu64 " entries)", what, n);
}

static void *egf_alloc_array(const ember_allocator *a, uint64_t n, size_t sz) {
    if (n > SIZE_MAX) return NULL;
    return ec_calloc(a, (size_t)(n ? n : 1), sz);
}

static int egf_tensor_info(egf_file *f, egf_cur *c, uint64_t i) {
    egf_tensor *t = &f->tensors[i];
    char who[48], q[80];
    egf_str name;
    uint32_t nd, type;
    int rc;
    uint64_t at = c->pos;
    snprintf(who, sizeof who, "tensor %" PRIu64, i);
    if ((rc = egf_rdstr(c, &name, " name", who))) return rc;
    if ((rc = egf_check_name(c, name, at, "tensor name"))) return rc;
    egf_quote(q, sizeof q, name.ptr, name.len);
    snprintf(who, sizeof who, "tensor '%.36s'", q);
    t->name = name;
    if ((rc = egf_rd32(c, &nd, " n_dims", who))) return rc;
    if (nd < 1 || nd > 4)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                         "tensor '%s': n_dims %" PRIu32 " is not in 1..4", q, nd);
    t->n_dims = (int)nd;
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if ((rc = egf_rd64(c, &ne, " dimension", who))) return rc;
        if (ne < 1 || ne > (uint64_t)INT64_MAX)
            return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                             "tensor '%s': ne[%" PRIu32 "] = %" PRId64 " is not positive",
                             q, d, (int64_t)ne);
        t->ne[d] = (int64_t)ne;
    }
    if ((rc = egf_rd32(c, &type, " type", who))) return rc;
    if ((rc = egf_rd64(c, &t->offset, " offset", who))) return rc;
    t->type = (int)(type & 0x7fffffff);
    const ek_type_info *ti = type < 0x10000 ? ek_type_get((int)type) : NULL;
    if (!ti || ti->block_size <= 0 || ti->type_size <= 0)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_UNSUPPORTED,
                         "tensor '%s': unknown tensor type %" PRIu32, q, type);
    /* element count must fit in int64 */
    uint64_t nel = (uint64_t)t->ne[0];
    for (int d = 1; d < 4; d++)
        if (ec_mul_u64(nel, (uint64_t)t->ne[d], &nel) || nel > (uint64_t)INT64_MAX)
            return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                             "tensor '%s': shape [%" PRId64 ", %" PRId64 ", %" PRId64
                             ", %" PRId64 "] has more than 2^63-1 elements",
                             q, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    uint64_t bs = (uint64_t)ti->block_size;
    if ((uint64_t)t->ne[0] % bs != 0)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                         "tensor '%s': row length %" PRId64 " is not a multiple of the %s block size %d",
                         q, t->ne[0], ti->name ? ti->name : "?", ti->block_size);
    uint64_t rowb, nb;
    if (ec_mul_u64((uint64_t)t->ne[0] / bs, (uint64_t)ti->type_size, &rowb) ||
        ec_mul_u64(rowb, nel / (uint64_t)t->ne[0], &nb) || nb > (uint64_t)INT64_MAX)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                         "tensor '%s': byte size of shape [%" PRId64 ", %" PRId64 ", %" PRId64
                         ", %" PRId64 "] overflows", q, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    if (ek_row_bytes((int)type, (uint64_t)t->ne[0]) != rowb)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_UNSUPPORTED,
                         "tensor '%s': type %" PRIu32 " row of %" PRId64 " has no size",
                         q, type, t->ne[0]);
    t->nbytes = nb;
    if (t->offset % f->alignment != 0)
        return ec_errorf(c->err, c->errlen, EMBER_ERR_CORRUPT,
                         "tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %" PRIu32,
                         q, t->offset, f->alignment);
    return EMBER_OK;
}

int egf_open(const void *data, uint64_t size, const ember_allocator *a,
              egf_file **out, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (out) *out = NULL;
    if (!out || (!data && size))
        return ec_errorf(err, errlen, EMBER_ERR_INVALID_ARG, "egf_open: NULL argument");
    if (a && (!a->malloc_fn || !a->realloc_fn || !a->free_fn))
        return ec_errorf(err, errlen, EMBER_ERR_INVALID_ARG, "egf_open: allocator has NULL functions");

    egf_ctx x;
    memset(&x, 0, sizeof x);
    egf_cur *c = &x.c;
    c->base = (const uint8_t *)data;
    c->size = size;
    c->err = err;
    c->errlen = errlen;
    int rc;

    /* magic */
    {
        static const char magic[4] = {'G', 'G', 'U', 'F'};
        uint64_t n = size < 4 ? size : 4;
        char q[16];
        if (n && memcmp(data, magic, (size_t)n) != 0)
            return ec_errorf(err, errlen, EMBER_ERR_BAD_MAGIC,
                             "not a GGUF file: magic '%s', expected 'GGUF'",
                             egf_quote(q, sizeof q, (const char *)data, n));
        if (n < 4)
            return ec_errorf(err, errlen, EMBER_ERR_TRUNCATED,
                             "file of %" PRIu64 " bytes is too short for the GGUF magic", size);
        c->pos = 4;
    }
    uint32_t version;
    uint64_t n_tensors, n_kv;
    if ((rc = egf_rd32(c, &version, "version", ""))) return rc;
    if (version != 2 && version != 3) {
        if ((version & 0xffff) == 0 && version != 0)
            return ec_errorf(err, errlen, EMBER_ERR_VERSION,
                             "GGUF version field 0x%08" PRIx32 " looks byte-swapped: big-endian files are not supported",
                             version);
        return ec_errorf(err, errlen, EMBER_ERR_VERSION,
                         "GGUF version %" PRIu32 " is not supported (only 2 and 3)", version);
    }
    if ((rc = egf_rd64(c, &n_tensors, "n_tensors", ""))) return rc;
    if ((rc = egf_rd64(c, &n_kv, "n_kv", ""))) return rc;
    {
        uint64_t left = egf_left(c);
        if (n_kv > GGUF_MAX_COUNT || n_kv > left / GGUF_MIN_KV_SIZE)
            return ec_errorf(err, errlen, EMBER_ERR_CORRUPT,
                             "n_kv = %" PRIu64 " key/value pairs cannot fit in the %" PRIu64
                             " bytes left in the file", n_kv, left);
        if (n_tensors > GGUF_MAX_COUNT || n_tensors > left / GGUF_MIN_TI_SIZE)
            return ec_errorf(err, errlen, EMBER_ERR_CORRUPT,
                             "n_tensors = %" PRIu64 " tensor infos cannot fit in the %" PRIu64
                             " bytes left in the file", n_tensors, left);
        if (n_tensors * GGUF_MIN_TI_SIZE > left - n_kv * GGUF_MIN_KV_SIZE)
            return ec_errorf(err, errlen, EMBER_ERR_CORRUPT,
                             "n_kv = %" PRIu64 " and n_tensors = %" PRIu64
                             " cannot fit in the %" PRIu64 " bytes left in the file",
                             n_kv, n_tensors, left);
    }
    uint64_t kv_start = c->pos;

    /* pass 1: validate the key/value section, count string-array elements */
    for (uint64_t i = 0; i < n_kv; i++)
        if ((rc = egf_one_kv(&x, i, NULL))) return rc;
    uint64_t n_str = x.n_str;
    uint64_t ti_start = c->pos;
    if (n_tensors > egf_left(c) / GGUF_MIN_TI_SIZE)
        return ec_errorf(err, errlen, EMBER_ERR_CORRUPT,
                         "n_tensors = %" PRIu64 " tensor infos cannot fit in the %" PRIu64
                         " bytes left after the key/value pairs", n_tensors, egf_left(c));

    /* allocate everything */
    egf_file *f = (egf_file *)ec_calloc(a, 1, sizeof *f);
    if (!f) return egf_nomem(err, errlen, "the GGUF file object", 1);
    f->alloc = a;
    f->base = c->base;
    f->size = size;
    f->version = version;
    f->alignment = GGUF_DEFAULT_ALIGN;
    f->n_kv = n_kv;
    f->n_tensors = n_tensors;
    f->n_str = n_str;
    if (!(f->kvs = (egf_kvi *)egf_alloc_array(a, n_kv, sizeof *f->kvs))) {
        rc = egf_nomem(err, errlen, "key/value pairs", n_kv); goto fail;
    }
    if (!(f->str_off = (uint64_t *)egf_alloc_array(a, n_str, sizeof *f->str_off))) {
        rc = egf_nomem(err, errlen, "the string array index", n_str); goto fail;
    }
    if (!(f->kv_order = (uint32_t *)egf_alloc_array(a, n_kv, sizeof *f->kv_order))) {
        rc = egf_nomem(err, errlen, "the key index", n_kv); goto fail;
    }
    if (!(f->tensors = (egf_tensor *)egf_alloc_array(a, n_tensors, sizeof *f->tensors))) {
        rc = egf_nomem(err, errlen, "tensor infos", n_tensors); goto fail;
    }
    if (!(f->t_order = (uint32_t *)egf_alloc_array(a, n_tensors, sizeof *f->t_order))) {
        rc = egf_nomem(err, errlen, "the tensor index", n_tensors); goto fail;
    }

    /* pass 2: fill the kv table (the section was validated by pass 1) */
    c->pos = kv_start;
    x.n_str = 0;
    x.str_off = f->str_off;
    for (uint64_t i = 0; i < n_kv; i++) {
        egf_kvi *kv = &f->kvs[i];
        if ((rc = egf_one_kv(&x, i, kv))) goto fail;
    }
    egf_heapsort(f, f->kv_order, n_kv, egf_kv_less);
    for (uint64_t k = 1; k < n_kv; k++) {
        const egf_kvi *p = &f->kvs[f->kv_order[k - 1]], *kv = &f->kvs[f->kv_order[k]];
        if (egf_name_cmp(p->pub.key, kv->pub.key) == 0) {
            char q[80];
            rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT,
                           "kv %" PRIu32 ": duplicate key '%s' (also kv %" PRIu32 ")",
                           f->kv_order[k], egf_quote(q, sizeof q, kv->pub.key.ptr, kv->pub.key.len),
                           f->kv_order[k - 1]);
            goto fail;
        }
    }

    /* alignment */
    {
        const egf_kv *al = egf_find_kv(f, "general.alignment");
        if (al) {
            if (al->type != GGUF_UINT32) {
                rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT,
                               "general.alignment has type %s, expected uint32",
                               egf_vtype_name(al->type));
                goto fail;
            }
            uint32_t v = egf_ld32(al->data);
            if (v == 0 || (v & (v - 1)) != 0) {
                rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT,
                               "general.alignment = %" PRIu32 " is not a nonzero power of two", v);
                goto fail;
            }
            f->alignment = v;
        }
    }

    /* tensor infos */
    c->pos = ti_start;
    for (uint64_t i = 0; i < n_tensors; i++)
        if ((rc = egf_tensor_info(f, c, i))) goto fail;

    /* data section */
    {
        uint64_t end = c->pos, al = f->alignment;
        uint64_t pad = (al - end % al) % al;
        if (n_tensors == 0) {
            /* nothing to find there: tolerate a missing final padding */
            f->data_offset = pad <= size - end ? end + pad : size;
            f->data_size = size - f->data_offset;
        } else {
            if (pad > size - end) {
                rc = ec_errorf(err, errlen, EMBER_ERR_TRUNCATED,
                               "the data section should start at offset %" PRIu64
                               " (alignment %" PRIu32 ") but the file ends at %" PRIu64,
                               end + pad, f->alignment, size);
                goto fail;
            }
            f->data_offset = end + pad;
            f->data_size = size - f->data_offset;
        }
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        egf_tensor *t = &f->tensors[i];
        if (t->offset > f->data_size || t->nbytes > f->data_size - t->offset) {
            char q[80];
            rc = ec_errorf(err, errlen, EMBER_ERR_TRUNCATED,
                           "tensor '%s': offset %" PRIu64 " + %" PRIu64
                           " bytes exceeds the data section (%" PRIu64 " bytes)",
                           egf_quote(q, sizeof q, t->name.ptr, t->name.len),
                           t->offset, t->nbytes, f->data_size);
            goto fail;
        }
        t->data = f->base + f->data_offset + t->offset;
    }
    /* overlaps: sort by offset, compare neighbours */
    egf_heapsort(f, f->t_order, n_tensors, egf_toff_less);
    for (uint64_t k = 1; k < n_tensors; k++) {
        const egf_tensor *p = &f->tensors[f->t_order[k - 1]], *t = &f->tensors[f->t_order[k]];
        if (p->offset + p->nbytes > t->offset) {
            char q1[80], q2[80];
            rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT,
                           "tensor '%s' (offset %" PRIu64 ", %" PRIu64 " bytes) overlaps tensor '%s' (offset %" PRIu64 ")",
                           egf_quote(q1, sizeof q1, p->name.ptr, p->name.len), p->offset, p->nbytes,
                           egf_quote(q2, sizeof q2, t->name.ptr, t->name.len), t->offset);
            goto fail;
        }
    }
    /* unique names: sort by name (the index then serves lookups) */
    egf_heapsort(f, f->t_order, n_tensors, egf_tname_less);
    for (uint64_t k = 1; k < n_tensors; k++) {
        const egf_tensor *p = &f->tensors[f->t_order[k - 1]], *t = &f->tensors[f->t_order[k]];
        if (egf_name_cmp(p->name, t->name) == 0) {
            char q[80];
            rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT,
                           "tensor %" PRIu32 ": duplicate tensor name '%s' (also tensor %" PRIu32 ")",
                           f->t_order[k], egf_quote(q, sizeof q, t->name.ptr, t->name.len),
                           f->t_order[k - 1]);
            goto fail;
        }
    }
    *out = f;
    return EMBER_OK;
fail:
    egf_close(f);
    return rc;
}

/* ---- accessors ------------------------------------------------------------ */

uint32_t egf_version(const egf_file *f) { return f ? f->version : 0; }
uint32_t egf_alignment(const egf_file *f) { return f ? f->alignment : 0; }
uint64_t egf_data_offset(const egf_file *f) { return f ? f->data_offset : 0; }
uint64_t egf_data_size(const egf_file *f) { return f ? f->data_size : 0; }
uint64_t egf_n_kv(const egf_file *f) { return f ? f->n_kv : 0; }
uint64_t egf_n_tensors(const egf_file *f) { return f ? f->n_tensors : 0; }

const egf_kv *egf_kv_at(const egf_file *f, uint64_t i) {
    return (f && i < f->n_kv) ? &f->kvs[i].pub : NULL;
}

const egf_tensor *egf_tensor_at(const egf_file *f, uint64_t i) {
    return (f && i < f->n_tensors) ? &f->tensors[i] : NULL;
}

/* Binary search of a sorted index; returns the item index or -1. */
static int64_t egf_bsearch(const egf_file *f, const uint32_t *ix, uint64_t n,
                            const char *name, int tensors) {
    if (!ix || !name) return -1;
    egf_str k = { name, strlen(name) };
    uint64_t lo = 0, hi = n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        egf_str m = tensors ? f->tensors[ix[mid]].name : f->kvs[ix[mid]].pub.key;
        int c = egf_name_cmp(m, k);
        if (c == 0) return ix[mid];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return -1;
}

const egf_kv *egf_find_kv(const egf_file *f, const char *key) {
    if (!f) return NULL;
    int64_t i = egf_bsearch(f, f->kv_order, f->n_kv, key, 0);
    return i < 0 ? NULL : &f->kvs[i].pub;
}

const egf_tensor *egf_find_tensor(const egf_file *f, const char *name) {
    if (!f) return NULL;
    int64_t i = egf_bsearch(f, f->t_order, f->n_tensors, name, 1);
    return i < 0 ? NULL : &f->tensors[i];
}

int egf_str_eq(egf_str s, const char *c) {
    if (!c) return 0;
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

/* Integer value of type t at p: returns 0 and sets *neg and *mag = abs(value),
 * or -1 if t is not an integer type. */
static int egf_load_int(int t, const uint8_t *p, int *neg, uint64_t *mag) {
    int64_t s;
    switch (t) {
    case GGUF_UINT8: *neg = 0; *mag = p[0]; return 0;
    case GGUF_UINT16: *neg = 0; *mag = egf_ld16(p); return 0;
    case GGUF_UINT32: *neg = 0; *mag = egf_ld32(p); return 0;
    case GGUF_UINT64: *neg = 0; *mag = egf_ld64(p); return 0;
    case GGUF_INT8: s = (int8_t)p[0]; break;
    case GGUF_INT16: s = (int16_t)egf_ld16(p); break;
    case GGUF_INT32: s = (int32_t)egf_ld32(p); break;
    case GGUF_INT64: s = (int64_t)egf_ld64(p); break;
    default: return -1;
    }
    *neg = s < 0;
    *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return 0;
}

static int egf_to_i64(int t, const uint8_t *p, int64_t *out) {
    int neg;
    uint64_t mag;
    if (egf_load_int(t, p, &neg, &mag)) return EMBER_ERR_CORRUPT;
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1) return EMBER_ERR_CORRUPT;
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX) return EMBER_ERR_CORRUPT;
        *out = (int64_t)mag;
    }
    return EMBER_OK;
}

static int egf_to_f32(int t, const uint8_t *p, float *out) {
    if (t == GGUF_FLOAT32) {
        memcpy(out, p, 4);
        return EMBER_OK;
    }
    if (t == GGUF_FLOAT64) {
        double d;
        memcpy(&d, p, 8);
        /* finite doubles beyond float range cannot be represented */
        if (d == d && (d > 3.4028234663852886e38 || d < -3.4028234663852886e38) &&
            d - d == 0.0)
            return EMBER_ERR_CORRUPT;
        *out = (float)d;
        return EMBER_OK;
    }
    return EMBER_ERR_CORRUPT;
}

int egf_get_u32(const egf_file *f, const char *key, uint32_t *out) {
    const egf_kv *kv = egf_find_kv(f, key);
    int neg;
    uint64_t mag;
    if (!out) return EMBER_ERR_INVALID_ARG;
    if (!kv) return EMBER_ERR_MISSING;
    if (egf_load_int(kv->type, kv->data, &neg, &mag) || neg || mag > UINT32_MAX)
        return EMBER_ERR_CORRUPT;
    *out = (uint32_t)mag;
    return EMBER_OK;
}

int egf_get_i64(const egf_file *f, const char *key, int64_t *out) {
    const egf_kv *kv = egf_find_kv(f, key);
    if (!out) return EMBER_ERR_INVALID_ARG;
    if (!kv) return EMBER_ERR_MISSING;
    return egf_to_i64(kv->type, kv->data, out);
}

int egf_get_f32(const egf_file *f, const char *key, float *out) {
    const egf_kv *kv = egf_find_kv(f, key);
    if (!out) return EMBER_ERR_INVALID_ARG;
    if (!kv) return EMBER_ERR_MISSING;
    return egf_to_f32(kv->type, kv->data, out);
}

int egf_get_bool(const egf_file *f, const char *key, int *out) {
    const egf_kv *kv = egf_find_kv(f, key);
    if (!out) return EMBER_ERR_INVALID_ARG;
    if (!kv) return EMBER_ERR_MISSING;
    if (kv->type != GGUF_BOOL) return EMBER_ERR_CORRUPT;
    *out = kv->data[0] != 0;
    return EMBER_OK;
}

int egf_get_str(const egf_file *f, const char *key, egf_str *out) {
    const egf_kv *kv = egf_find_kv(f, key);
    if (!out) return EMBER_ERR_INVALID_ARG;
    if (!kv) return EMBER_ERR_MISSING;
    if (kv->type != GGUF_STRING) return EMBER_ERR_CORRUPT;
    out->len = egf_ld64(kv->data);
    out->ptr = (const char *)kv->data + 8;
    return EMBER_OK;
}

int egf_arr_str(const egf_file *f, const egf_kv *kv, uint64_t i, egf_str *out) {
    if (!f || !kv || !out || !f->kvs) return EMBER_ERR_INVALID_ARG;
    uintptr_t p = (uintptr_t)kv, b = (uintptr_t)f->kvs;
    if (p < b || p >= b + f->n_kv * sizeof *f->kvs || (p - b) % sizeof *f->kvs != 0)
        return EMBER_ERR_INVALID_ARG;          /* not one of f's kvs */
    const egf_kvi *kvi = &f->kvs[(p - b) / sizeof *f->kvs];
    if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING) return EMBER_ERR_CORRUPT;
    if (i >= kv->arr_n) return EMBER_ERR_INVALID_ARG;
    uint64_t off = f->str_off[kvi->str_first + i];
    out->len = egf_ld64(f->base + off);
    out->ptr = (const char *)f->base + off + 8;
    return EMBER_OK;
}

int egf_arr_int(const egf_kv *kv, uint64_t i, int64_t *out) {
    if (!kv || !out) return EMBER_ERR_INVALID_ARG;
    if (kv->type != GGUF_ARRAY) return EMBER_ERR_CORRUPT;
    uint64_t esz = egf_fixed_size((uint32_t)kv->arr_type);
    if (esz == 0 || kv->arr_type == GGUF_BOOL || kv->arr_type == GGUF_FLOAT32 ||
        kv->arr_type == GGUF_FLOAT64)
        return EMBER_ERR_CORRUPT;
    if (i >= kv->arr_n) return EMBER_ERR_INVALID_ARG;
    return egf_to_i64(kv->arr_type, kv->data + i * esz, out);
}

int egf_arr_f32(const egf_kv *kv, uint64_t i, float *out) {
    if (!kv || !out) return EMBER_ERR_INVALID_ARG;
    if (kv->type != GGUF_ARRAY) return EMBER_ERR_CORRUPT;
    if (kv->arr_type != GGUF_FLOAT32 && kv->arr_type != GGUF_FLOAT64) return EMBER_ERR_CORRUPT;
    if (i >= kv->arr_n) return EMBER_ERR_INVALID_ARG;
    return egf_to_f32(kv->arr_type, kv->data + i * egf_fixed_size((uint32_t)kv->arr_type), out);
}
