/* test_gguf.c - the GGUF reader: round trips of every value type through
 * the getters, and hostile images derived from valid ones (truncation at
 * every offset, bit flips, huge counts and lengths, bad shapes/types/
 * offsets, duplicates), allocation failure at every allocation, and a bound
 * on the memory a small hostile file can make the reader allocate. */
#include "test.h"
#include "gguf.h"
#include "gguf_build.h"

#include <math.h>
#include <stdint.h>

static const char *st(int rc) {
    switch (rc) {
    case EMBER_OK: return "OK";
    case EMBER_ERR_INVALID_ARG: return "INVALID_ARG";
    case EMBER_ERR_NOMEM: return "NOMEM";
    case EMBER_ERR_BAD_MAGIC: return "BAD_MAGIC";
    case EMBER_ERR_VERSION: return "VERSION";
    case EMBER_ERR_TRUNCATED: return "TRUNCATED";
    case EMBER_ERR_CORRUPT: return "CORRUPT";
    case EMBER_ERR_UNSUPPORTED: return "UNSUPPORTED";
    case EMBER_ERR_MISSING: return "MISSING";
    default: return "?";
    }
}

/* ---- a counting allocator ------------------------------------------------ */

typedef struct counter {
    long n_calls, fail_at;      /* fail the fail_at-th allocation (1-based), 0 = never */
    long live;
    uint64_t bytes, peak;
} counter;

static void *c_malloc(void *u, size_t n) {
    counter *c = u;
    if (++c->n_calls == c->fail_at) return NULL;
    size_t *p = malloc(n + 16);
    if (!p) return NULL;
    p[0] = n;
    c->live++;
    c->bytes += n;
    if (c->bytes > c->peak) c->peak = c->bytes;
    return (char *)p + 16;
}
static void *c_realloc(void *u, void *q, size_t n) {
    counter *c = u;
    if (!q) return c_malloc(u, n);
    if (++c->n_calls == c->fail_at) return NULL;
    size_t *p = (size_t *)((char *)q - 16);
    size_t old = p[0];
    size_t *np = realloc(p, n + 16);
    if (!np) return NULL;
    np[0] = n;
    c->bytes = c->bytes - old + n;
    if (c->bytes > c->peak) c->peak = c->bytes;
    return (char *)np + 16;
}
static void c_free(void *u, void *q) {
    counter *c = u;
    if (!q) return;
    size_t *p = (size_t *)((char *)q - 16);
    c->live--;
    c->bytes -= p[0];
    free(p);
}

/* ---- walking an open file (every accessor on every item) ------------------ */

static uint64_t walk(const egf_file *f) {
    uint64_t h = 0;
    for (uint64_t i = 0; i < egf_n_kv(f); i++) {
        const egf_kv *kv = egf_kv_at(f, i);
        char key[512];
        size_t n = kv->key.len < sizeof key - 1 ? (size_t)kv->key.len : sizeof key - 1;
        memcpy(key, kv->key.ptr, n);
        key[n] = 0;
        if (n == kv->key.len) CHECK(egf_find_kv(f, key) == kv, "find_kv('%s') is not kv %llu", key, (unsigned long long)i);
        uint32_t u; int64_t v; float x; int b; egf_str s;
        if (egf_get_u32(f, key, &u) == 0) h += u;
        if (egf_get_i64(f, key, &v) == 0) h += (uint64_t)v;
        if (egf_get_f32(f, key, &x) == 0) h += (uint64_t)(x == x);
        if (egf_get_bool(f, key, &b) == 0) h += (uint64_t)b;
        if (egf_get_str(f, key, &s) == 0) for (uint64_t k = 0; k < s.len; k++) h += (unsigned char)s.ptr[k];
        if (kv->type == GGUF_ARRAY) {
            for (uint64_t e = 0; e < kv->arr_n; e++) {
                if (egf_arr_str(f, kv, e, &s) == 0) {
                    for (uint64_t k = 0; k < s.len; k++) h += (unsigned char)s.ptr[k];
                } else if (egf_arr_int(kv, e, &v) == 0) {
                    h += (uint64_t)v;
                } else if (egf_arr_f32(kv, e, &x) == 0) {
                    h += (uint64_t)(x == x);
                } else break;
            }
        }
    }
    for (uint64_t i = 0; i < egf_n_tensors(f); i++) {
        const egf_tensor *t = egf_tensor_at(f, i);
        const unsigned char *d = t->data;
        for (uint64_t k = 0; k < t->nbytes; k += 61) h += d[k];
        if (t->nbytes) h += d[t->nbytes - 1];
    }
    return h;
}

/* Opens an image (copied into an exactly sized heap block so ASan sees any
 * read past its end), walks it if valid.  Returns the status; *err gets the
 * message. */
static int try_open(const uint8_t *p, size_t n, char *err, size_t errlen) {
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, p, n);
    egf_file *f = (egf_file *)1;
    err[0] = 0;
    int rc = egf_open(copy, n, NULL, &f, err, errlen);
    if (rc == EMBER_OK) {
        walk(f);
        egf_close(f);
    } else if (f != NULL) {
        CHECK(0, "failed open left *out set (%s)", st(rc));
    }
    free(copy);
    return rc;
}

static int expect_case(const char *what, const uint8_t *p, size_t n, int want) {
    char err[256];
    int rc = try_open(p, n, err, sizeof err);
    CHECK(rc == want, "%s: got %s, want %s (%s)", what, st(rc), st(want), err);
    if (want != EMBER_OK) CHECK(err[0] != 0, "%s: empty message", what);
    if (getenv("GGUF_TEST_VERBOSE")) printf("  %-40s %-11s %s\n", what, st(rc), err);
    return rc;
}
#define EXPECT(what, b, want) expect_case(what, (b)->p, (b)->n, want)

/* ---- the reference image ------------------------------------------------------ */

typedef struct layout {
    size_t arch_len_at;       /* string length of general.architecture's value */
    size_t arch_key_len_at;   /* key length of general.architecture */
    size_t u8_type_at;        /* value type of t.u8 */
    size_t tokens_type_at;    /* element type of tokenizer.ggml.tokens */
    size_t tokens_len_at;     /* element count of tokenizer.ggml.tokens */
    size_t scores_len_at;     /* element count of tokenizer.ggml.scores */
    size_t align_val_at;      /* value of general.alignment (if written) */
    size_t bool_at;           /* value of t.bool */
    size_t table_end;         /* end of the tensor infos */
    size_t data_at;           /* data section */
    size_t data_end;          /* end of the last tensor's data */
    gb_tensor t[4];
    int n_t, n_kv;
} layout;

static const char *const k_tokens[] = {"<unk>", "", "hello", "\xff\xfe", "\xe2\x96\x81the"};
static const float k_scores[] = {0.0f, -1.5f, 2.0f, 3.0f, 4.0f};

/* Every value type; align = 0 writes no general.alignment (default 32). */
static void make_full(gb_buf *b, uint32_t version, uint32_t align, layout *L) {
    memset(L, 0, sizeof *L);
    gb_tensor t[4] = {
        GB_TENSOR("token_embd.weight", 2, EK_Q4_0, 64, 4, 0, 0),
        GB_TENSOR("output_norm.weight", 1, EK_F32, 64, 0, 0, 0),
        GB_TENSOR("blk.0.attn_q.weight", 2, EK_F16, 32, 3, 0, 0),
        GB_TENSOR("blk.0.ffn_dn.weight", 4, EK_Q4_K, 256, 1, 2, 1),
    };
    int n_kv = 26 + (align ? 1 : 0);
    gb_header(b, version, 4, (uint64_t)n_kv);
    L->arch_key_len_at = b->n;
    gb_key(b, "general.architecture", GB_STRING);
    L->arch_len_at = b->n;
    gb_str(b, "llama");
    if (align) {
        gb_key(b, "general.alignment", GB_UINT32);
        L->align_val_at = b->n;
        gb_u32(b, align);
    }
    gb_key(b, "t.u8", GB_UINT8);
    L->u8_type_at = b->n - 4;
    gb_u8(b, 200);
    gb_kv_i8(b, "t.i8", -5);
    gb_kv_u16(b, "t.u16", 60000);
    gb_kv_i16(b, "t.i16", -30000);
    gb_kv_u32(b, "t.u32", 4000000000u);
    gb_kv_i32(b, "t.i32", -2000000000);
    gb_kv_f32(b, "t.f32", 1.5f);
    gb_key(b, "t.bool", GB_BOOL);
    L->bool_at = b->n;
    gb_u8(b, 1);
    gb_kv_u64(b, "t.u64", (uint64_t)1 << 40);
    gb_kv_i64(b, "t.i64", -((int64_t)1 << 40));
    gb_kv_f64(b, "t.f64", 2.25);
    gb_kv_u64(b, "t.u64big", (uint64_t)1 << 63);
    gb_kv_i8(b, "t.i8pos", 7);
    gb_key(b, "tokenizer.ggml.tokens", GB_ARRAY);
    L->tokens_type_at = b->n;
    gb_arr(b, GB_STRING, 5);
    L->tokens_len_at = L->tokens_type_at + 4;
    for (int i = 0; i < 5; i++) gb_str(b, k_tokens[i]);
    L->scores_len_at = b->n + strlen("tokenizer.ggml.scores") + 8 + 4 + 4;
    gb_kv_arr_f32(b, "tokenizer.ggml.scores", k_scores, 5);
    int32_t ai[3] = {1, -2, 3};
    gb_kv_arr_i32(b, "t.arr_i32", ai, 3);
    gb_kv_arr(b, "t.arr_u8", GB_UINT8, 3);
    gb_u8(b, 1); gb_u8(b, 2); gb_u8(b, 255);
    gb_kv_arr(b, "t.arr_f64", GB_FLOAT64, 2);
    gb_f64(b, 0.5); gb_f64(b, -0.25);
    gb_kv_arr(b, "t.arr_bool", GB_BOOL, 2);
    gb_u8(b, 1); gb_u8(b, 0);
    gb_kv_arr(b, "t.arr_empty", GB_UINT32, 0);
    gb_kv_arr(b, "t.nested", GB_ARRAY, 2);
    gb_arr(b, GB_UINT16, 2); gb_u16(b, 1); gb_u16(b, 2);
    gb_arr(b, GB_STRING, 2); gb_str(b, "a"); gb_str(b, "bc");
    gb_kv_arr(b, "t.arr_u64", GB_UINT64, 1);
    gb_u64(b, (uint64_t)1 << 63);
    gb_kv_str(b, "t.str_empty", "");
    const char *s2[] = {"x", "yz"};
    gb_kv_arr_str(b, "t.arr_str2", s2, 2);
    gb_kv_arr(b, "t.arr_i16", GB_INT16, 2);
    gb_u16(b, (uint16_t)-7); gb_u16(b, 9);
    uint32_t al = align ? align : 32;
    L->data_at = gb_tensors(b, t, 4, al);
    L->table_end = t[0].info_at;
    for (int k = 0; k < 4; k++) L->t[k] = t[k];
    L->table_end = t[3].offset_at + 8;
    L->data_end = t[3].data_at + t[3].nbytes;
    L->n_t = 4;
    L->n_kv = n_kv;
}

/* ---- valid images ---------------------------------------------------------------- */

static void test_roundtrip(uint32_t version, uint32_t align) {
    gb_buf b = {0};
    layout L;
    make_full(&b, version, align, &L);
    char err[256];
    egf_file *f = NULL;
    int rc = egf_open(b.p, b.n, NULL, &f, err, sizeof err);
    CHECK(rc == EMBER_OK, "v%u align %u: %s (%s)", version, align, st(rc), err);
    if (rc) { gb_free(&b); return; }
    uint32_t al = align ? align : 32;
    CHECK(egf_version(f) == version, "version %u", egf_version(f));
    CHECK(egf_alignment(f) == al, "alignment %u", egf_alignment(f));
    CHECK(egf_n_kv(f) == (uint64_t)L.n_kv, "n_kv %llu", (unsigned long long)egf_n_kv(f));
    CHECK(egf_data_offset(f) == L.data_at, "data offset %llu vs %zu",
          (unsigned long long)egf_data_offset(f), L.data_at);
    CHECK(egf_data_offset(f) % al == 0, "data section aligned");

    uint32_t u; int64_t v; float x; int bo; egf_str s;
    CHECK(egf_get_str(f, "general.architecture", &s) == 0 && egf_str_eq(s, "llama"), "arch");
    CHECK(s.ptr == (const char *)b.p + L.arch_len_at + 8, "string points into the image");
    CHECK(egf_get_u32(f, "t.u8", &u) == 0 && u == 200, "u8 %u", u);
    CHECK(egf_get_i64(f, "t.u8", &v) == 0 && v == 200, "u8 as i64");
    CHECK(egf_get_u32(f, "t.i8", &u) == EMBER_ERR_CORRUPT, "negative i8 as u32");
    CHECK(egf_get_i64(f, "t.i8", &v) == 0 && v == -5, "i8");
    CHECK(egf_get_u32(f, "t.i8pos", &u) == 0 && u == 7, "positive i8 as u32");
    CHECK(egf_get_u32(f, "t.u16", &u) == 0 && u == 60000, "u16");
    CHECK(egf_get_i64(f, "t.i16", &v) == 0 && v == -30000, "i16");
    CHECK(egf_get_u32(f, "t.u32", &u) == 0 && u == 4000000000u, "u32");
    CHECK(egf_get_i64(f, "t.i32", &v) == 0 && v == -2000000000, "i32");
    CHECK(egf_get_u32(f, "t.i32", &u) == EMBER_ERR_CORRUPT, "negative i32 as u32");
    CHECK(egf_get_f32(f, "t.f32", &x) == 0 && x == 1.5f, "f32");
    CHECK(egf_get_f32(f, "t.f64", &x) == 0 && x == 2.25f, "f64 as f32");
    CHECK(egf_get_f32(f, "t.u32", &x) == EMBER_ERR_CORRUPT, "u32 as f32");
    CHECK(egf_get_i64(f, "t.f32", &v) == EMBER_ERR_CORRUPT, "f32 as i64");
    CHECK(egf_get_bool(f, "t.bool", &bo) == 0 && bo == 1, "bool");
    CHECK(egf_get_bool(f, "t.u8", &bo) == EMBER_ERR_CORRUPT, "u8 as bool");
    CHECK(egf_get_u32(f, "t.bool", &u) == EMBER_ERR_CORRUPT, "bool as u32");
    CHECK(egf_get_u32(f, "t.u64", &u) == EMBER_ERR_CORRUPT, "2^40 as u32");
    CHECK(egf_get_i64(f, "t.u64", &v) == 0 && v == (int64_t)1 << 40, "u64");
    CHECK(egf_get_i64(f, "t.i64", &v) == 0 && v == -((int64_t)1 << 40), "i64");
    CHECK(egf_get_i64(f, "t.u64big", &v) == EMBER_ERR_CORRUPT, "2^63 as i64");
    CHECK(egf_get_str(f, "t.u32", &s) == EMBER_ERR_CORRUPT, "u32 as string");
    CHECK(egf_get_str(f, "t.str_empty", &s) == 0 && s.len == 0 && egf_str_eq(s, ""), "empty string");
    CHECK(egf_get_u32(f, "no.such.key", &u) == EMBER_ERR_MISSING, "missing u32");
    CHECK(egf_get_i64(f, "no.such.key", &v) == EMBER_ERR_MISSING, "missing i64");
    CHECK(egf_get_f32(f, "no.such.key", &x) == EMBER_ERR_MISSING, "missing f32");
    CHECK(egf_get_bool(f, "no.such.key", &bo) == EMBER_ERR_MISSING, "missing bool");
    CHECK(egf_get_str(f, "no.such.key", &s) == EMBER_ERR_MISSING, "missing str");
    CHECK(egf_get_u32(f, "t.u32", NULL) == EMBER_ERR_INVALID_ARG, "NULL out");
    CHECK(egf_find_kv(f, "") == NULL && egf_find_kv(f, "t.u3") == NULL &&
          egf_find_kv(f, "t.u322") == NULL && egf_find_kv(f, NULL) == NULL, "near misses");
    CHECK(egf_str_eq(s, "x") == 0, "str_eq length");
    if (align) {
        CHECK(egf_get_u32(f, "general.alignment", &u) == 0 && u == align, "alignment kv");
    }

    const egf_kv *kv = egf_find_kv(f, "tokenizer.ggml.tokens");
    CHECK(kv && kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING && kv->arr_n == 5, "tokens kv");
    if (kv) {
        for (int i = 0; i < 5; i++) {
            int r = egf_arr_str(f, kv, (uint64_t)i, &s);
            CHECK(r == 0 && egf_str_eq(s, k_tokens[i]), "token %d", i);
        }
        CHECK(egf_arr_str(f, kv, 5, &s) == EMBER_ERR_INVALID_ARG, "token index past end");
        CHECK(egf_arr_int(kv, 0, &v) == EMBER_ERR_CORRUPT, "string array as int");
        CHECK(egf_arr_f32(kv, 0, &x) == EMBER_ERR_CORRUPT, "string array as f32");
    }
    kv = egf_find_kv(f, "t.arr_str2");
    CHECK(kv && egf_arr_str(f, kv, 0, &s) == 0 && egf_str_eq(s, "x") &&
          egf_arr_str(f, kv, 1, &s) == 0 && egf_str_eq(s, "yz"), "second string array");
    {   /* a kv that is not f's */
        egf_kv fake = *kv;
        CHECK(egf_arr_str(f, &fake, 0, &s) == EMBER_ERR_INVALID_ARG, "foreign kv");
    }
    kv = egf_find_kv(f, "tokenizer.ggml.scores");
    CHECK(kv && kv->arr_type == GGUF_FLOAT32 && kv->arr_n == 5, "scores kv");
    for (int i = 0; kv && i < 5; i++)
        CHECK(egf_arr_f32(kv, (uint64_t)i, &x) == 0 && x == k_scores[i], "score %d", i);
    CHECK(kv && egf_arr_int(kv, 0, &v) == EMBER_ERR_CORRUPT, "f32 array as int");
    CHECK(egf_arr_str(f, kv, 0, &s) == EMBER_ERR_CORRUPT, "f32 array as strings");
    kv = egf_find_kv(f, "t.arr_i32");
    CHECK(kv && egf_arr_int(kv, 0, &v) == 0 && v == 1 && egf_arr_int(kv, 1, &v) == 0 && v == -2 &&
          egf_arr_int(kv, 2, &v) == 0 && v == 3, "i32 array");
    CHECK(kv && egf_arr_int(kv, 3, &v) == EMBER_ERR_INVALID_ARG, "i32 array past end");
    CHECK(kv && egf_arr_int(kv, UINT64_MAX, &v) == EMBER_ERR_INVALID_ARG, "index 2^64-1");
    kv = egf_find_kv(f, "t.arr_u8");
    CHECK(kv && egf_arr_int(kv, 2, &v) == 0 && v == 255, "u8 array");
    kv = egf_find_kv(f, "t.arr_i16");
    CHECK(kv && egf_arr_int(kv, 0, &v) == 0 && v == -7 && egf_arr_int(kv, 1, &v) == 0 && v == 9, "i16 array");
    kv = egf_find_kv(f, "t.arr_f64");
    CHECK(kv && egf_arr_f32(kv, 1, &x) == 0 && x == -0.25f, "f64 array");
    kv = egf_find_kv(f, "t.arr_bool");
    CHECK(kv && kv->arr_type == GGUF_BOOL && kv->arr_n == 2 && kv->data[0] == 1 && kv->data[1] == 0, "bool array");
    kv = egf_find_kv(f, "t.arr_empty");
    CHECK(kv && kv->arr_n == 0 && egf_arr_int(kv, 0, &v) == EMBER_ERR_INVALID_ARG, "empty array");
    kv = egf_find_kv(f, "t.nested");
    CHECK(kv && kv->arr_type == GGUF_ARRAY && kv->arr_n == 2 &&
          egf_arr_int(kv, 0, &v) == EMBER_ERR_CORRUPT, "nested array");
    kv = egf_find_kv(f, "t.arr_u64");
    CHECK(kv && egf_arr_int(kv, 0, &v) == EMBER_ERR_CORRUPT, "2^63 element as int64");
    kv = egf_find_kv(f, "t.u32");
    CHECK(kv && egf_arr_int(kv, 0, &v) == EMBER_ERR_CORRUPT, "scalar as array");
    CHECK(egf_kv_at(f, egf_n_kv(f)) == NULL, "kv_at past end");

    CHECK(egf_n_tensors(f) == 4, "n_tensors");
    for (int k = 0; k < 4; k++) {
        const egf_tensor *t = egf_find_tensor(f, L.t[k].name);
        CHECK(t == egf_tensor_at(f, (uint64_t)k), "find tensor %s", L.t[k].name);
        if (!t) continue;
        CHECK(t->n_dims == L.t[k].n_dims && t->type == L.t[k].type, "tensor %d dims/type", k);
        for (int d = 0; d < 4; d++)
            CHECK(t->ne[d] == (d < t->n_dims ? L.t[k].ne[d] : 1), "tensor %d ne[%d] = %lld", k, d, (long long)t->ne[d]);
        CHECK(t->nbytes == L.t[k].nbytes && t->offset == L.t[k].offset, "tensor %d size/offset", k);
        CHECK(t->data == b.p + L.t[k].data_at, "tensor %d data pointer", k);
        CHECK(t->offset % al == 0, "tensor %d offset aligned", k);
        CHECK(((const uint8_t *)t->data)[1] == (uint8_t)(k * 31 + 1), "tensor %d data", k);
    }
    CHECK(L.t[0].nbytes == 4 * 18 * 2 && L.t[3].nbytes == 2 * 144, "builder sizes");
    CHECK(egf_find_tensor(f, "token_embd") == NULL && egf_find_tensor(f, "") == NULL, "absent tensor");
    CHECK(egf_tensor_at(f, 4) == NULL, "tensor_at past end");
    egf_close(f);
    gb_free(&b);
}

static void test_small_valid(void) {
    gb_buf b = {0};
    /* header only: no kvs, no tensors */
    gb_header(&b, 3, 0, 0);
    EXPECT("header only", &b, EMBER_OK);
    gb_free(&b);
    /* 0 tensors, kvs, with and without the final padding */
    for (int pad = 0; pad < 2; pad++) {
        for (uint32_t v = 2; v <= 3; v++) {
            gb_header(&b, v, 0, 1);
            gb_kv_str(&b, "general.name", "empty");
            if (pad) gb_pad(&b, 32);
            egf_file *f = NULL;
            char err[256];
            int rc = egf_open(b.p, b.n, NULL, &f, err, sizeof err);
            CHECK(rc == 0 && egf_n_tensors(f) == 0 && egf_version(f) == v, "0 tensors v%u pad %d: %s", v, pad, err);
            egf_close(f);
            gb_free(&b);
        }
    }
    /* a tensor with all 1-sized dims, one byte types, alignment 1 and odd offsets */
    gb_header(&b, 3, 2, 1);
    gb_kv_u32(&b, "general.alignment", 1);
    gb_tensor t[2] = {GB_TENSOR("a", 4, EK_I8, 1, 1, 1, 1), GB_TENSOR("b", 1, EK_I8, 3, 0, 0, 0)};
    gb_tensors(&b, t, 2, 1);
    CHECK(t[1].offset == 1, "builder offset with alignment 1");
    EXPECT("alignment 1, odd offsets", &b, EMBER_OK);
    gb_free(&b);
    /* tensors out of offset order, with a gap between them */
    gb_header(&b, 3, 2, 0);
    int64_t ne[1] = {8};
    gb_tensor_info(&b, "second", 1, ne, EK_F32, 64);
    gb_tensor_info(&b, "first", 1, ne, EK_F32, 0);
    gb_pad(&b, 32);
    gb_zeros(&b, 96);
    EXPECT("tensors out of order with gaps", &b, EMBER_OK);
    gb_free(&b);
    /* nested arrays: 4 levels allowed */
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "deep", GB_ARRAY);
    gb_arr(&b, GB_ARRAY, 1); gb_arr(&b, GB_ARRAY, 1); gb_arr(&b, GB_ARRAY, 1);
    gb_arr(&b, GB_UINT8, 1); gb_u8(&b, 9);
    EXPECT("arrays nested 4 deep", &b, EMBER_OK);
    gb_free(&b);
    /* invalid UTF-8 in string values is allowed */
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k", GB_STRING); gb_strn(&b, "\xff\x00\xc0", 3);
    EXPECT("invalid UTF-8 value", &b, EMBER_OK);
    gb_free(&b);
    /* NULL arguments */
    egf_file *f = NULL;
    char err[64];
    CHECK(egf_open(NULL, 10, NULL, &f, err, sizeof err) == EMBER_ERR_INVALID_ARG, "NULL data");
    CHECK(egf_open("GGUF", 4, NULL, NULL, err, sizeof err) == EMBER_ERR_INVALID_ARG, "NULL out");
    CHECK(egf_open(NULL, 0, NULL, &f, NULL, 0) == EMBER_ERR_TRUNCATED, "empty, no err buffer");
    egf_close(NULL);
    CHECK(egf_n_kv(NULL) == 0 && egf_find_kv(NULL, "x") == NULL && egf_find_tensor(NULL, "x") == NULL, "NULL file");
}

/* ---- hostile images --------------------------------------------------------------- */

typedef struct tally { int n, ok, trunc, corrupt, other; } tally;

static void tally_add(tally *t, int rc) {
    t->n++;
    if (rc == EMBER_OK) t->ok++;
    else if (rc == EMBER_ERR_TRUNCATED) t->trunc++;
    else if (rc == EMBER_ERR_CORRUPT) t->corrupt++;
    else t->other++;
}

static int n_hostile;

static void test_truncation(void) {
    gb_buf b = {0};
    layout L;
    make_full(&b, 3, 64, &L);
    tally t = {0};
    char err[256];
    /* every byte offset of the header and table, then a sample in the data */
    for (size_t n = 0; n < b.n; n += (n < L.data_at + 8 || n + 8 > L.data_end) ? 1 : 37) {
        if (n >= L.data_end) break;
        int rc = try_open(b.p, n, err, sizeof err);
        tally_add(&t, rc);
        CHECK(rc == EMBER_ERR_TRUNCATED || rc == EMBER_ERR_CORRUPT,
              "truncated at %zu of %zu: %s (%s)", n, b.n, st(rc), err);
        CHECK(err[0], "truncated at %zu: empty message", n);
    }
    /* cut inside the final padding: still valid */
    CHECK(try_open(b.p, L.data_end, err, sizeof err) == EMBER_OK, "cut after the last tensor: %s", err);
    printf("truncation: %d cuts: %d TRUNCATED, %d CORRUPT, %d OK, %d other\n",
           t.n, t.trunc, t.corrupt, t.ok, t.other);
    n_hostile += t.n;
    gb_free(&b);
}

static void test_bitflips(void) {
    gb_buf b = {0};
    layout L;
    make_full(&b, 3, 32, &L);
    tally t = {0};
    char err[256];
    for (size_t i = 0; i < L.data_at; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b.p[i] ^= (uint8_t)(1u << bit);
            int rc = try_open(b.p, b.n, err, sizeof err);
            b.p[i] ^= (uint8_t)(1u << bit);
            tally_add(&t, rc);
            if (rc != EMBER_OK) CHECK(err[0], "flip %zu.%d: empty message", i, bit);
        }
    }
    printf("bit flips: %d: %d OK, %d TRUNCATED, %d CORRUPT, %d other\n",
           t.n, t.ok, t.trunc, t.corrupt, t.other);
    n_hostile += t.n;
    /* random multi-byte mutations of the whole image */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    tally r = {0};
    for (int it = 0; it < 3000; it++) {
        uint8_t *c = malloc(b.n);
        memcpy(c, b.p, b.n);
        int k = 1 + it % 4;
        for (int j = 0; j < k; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)((s >> 33) % L.table_end);
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            uint8_t vals[] = {0, 0xff, 0x7f, 0x80, 1, (uint8_t)(s >> 56)};
            c[at] = vals[(s >> 40) % 6];
        }
        tally_add(&r, try_open(c, b.n, err, sizeof err));
        free(c);
    }
    printf("random mutations: %d: %d OK, %d TRUNCATED, %d CORRUPT, %d other\n",
           r.n, r.ok, r.trunc, r.corrupt, r.other);
    n_hostile += r.n;
    gb_free(&b);
}

/* Run fn on a fresh copy of the reference image, then expect want. */
#define MUTATE(what, want, ...) do {                   \
        gb_buf b = {0};                                \
        layout L;                                      \
        make_full(&b, 3, 32, &L);                      \
        __VA_ARGS__;                                   \
        EXPECT(what, &b, want);                        \
        n_hostile++;                                   \
        gb_free(&b);                                   \
    } while (0)
/* Any failure will do (the exact field that breaks depends on the bytes
 * that are misread). */
#define MUTATE_FAILS(what, ...) do {                   \
        gb_buf b = {0};                                \
        layout L;                                      \
        char err_[256];                                \
        make_full(&b, 3, 32, &L);                      \
        __VA_ARGS__;                                   \
        int rc_ = try_open(b.p, b.n, err_, sizeof err_); \
        CHECK(rc_ != EMBER_OK && err_[0], "%s: %s (%s)", what, st(rc_), err_); \
        if (getenv("GGUF_TEST_VERBOSE")) printf("  %-40s %-11s %s\n", what, st(rc_), err_); \
        n_hostile++;                                   \
        gb_free(&b);                                   \
    } while (0)

static const uint64_t k_huge[] = {0xffffffffull, (uint64_t)1 << 63, UINT64_MAX,
                                  (uint64_t)1 << 32, 0x7fffffffffffffffull};

static void test_hostile_fields(void) {
    char what[128];
    layout R;   /* field offsets of the reference image */
    {
        gb_buf r = {0};
        make_full(&r, 3, 32, &R);
        gb_free(&r);
    }
    for (size_t h = 0; h < sizeof k_huge / sizeof k_huge[0]; h++) {
        uint64_t v = k_huge[h];
        snprintf(what, sizeof what, "n_tensors = %llu", (unsigned long long)v);
        MUTATE(what, EMBER_ERR_CORRUPT, gb_put_u64(&b, 8, v));
        snprintf(what, sizeof what, "n_kv = %llu", (unsigned long long)v);
        MUTATE(what, EMBER_ERR_CORRUPT, gb_put_u64(&b, 16, v));
        snprintf(what, sizeof what, "string length %llu", (unsigned long long)v);
        MUTATE(what, EMBER_ERR_TRUNCATED, gb_put_u64(&b, L.arch_len_at, v));
        snprintf(what, sizeof what, "key length %llu", (unsigned long long)v);
        MUTATE(what, EMBER_ERR_TRUNCATED, gb_put_u64(&b, L.arch_key_len_at, v));
        snprintf(what, sizeof what, "string array length %llu", (unsigned long long)v);
        MUTATE(what, EMBER_ERR_CORRUPT, gb_put_u64(&b, L.tokens_len_at, v));
        snprintf(what, sizeof what, "f32 array length %llu", (unsigned long long)v);
        MUTATE(what, EMBER_ERR_CORRUPT, gb_put_u64(&b, L.scores_len_at, v));
        snprintf(what, sizeof what, "tensor name length %llu", (unsigned long long)v);
        MUTATE(what, EMBER_ERR_TRUNCATED, gb_put_u64(&b, L.t[1].info_at, v));
        snprintf(what, sizeof what, "tensor offset %llu", (unsigned long long)v);
        MUTATE(what, (v & 31) ? EMBER_ERR_CORRUPT : EMBER_ERR_TRUNCATED, gb_put_u64(&b, L.t[2].offset_at, v));
    }
    /* counts slightly too large: the last item runs off the end of its section */
    MUTATE_FAILS("n_kv + 1", gb_put_u64(&b, 16, (uint64_t)L.n_kv + 1));
    MUTATE_FAILS("n_kv - 1", gb_put_u64(&b, 16, (uint64_t)L.n_kv - 1));
    MUTATE_FAILS("n_tensors + 1", gb_put_u64(&b, 8, 5));
    MUTATE_FAILS("string length + 1", gb_put_u64(&b, L.arch_len_at, 6));
    MUTATE_FAILS("string length - 1", gb_put_u64(&b, L.arch_len_at, 4));
    MUTATE_FAILS("string array length + 1", gb_put_u64(&b, L.tokens_len_at, 6));
    MUTATE_FAILS("f32 array length + 1", gb_put_u64(&b, L.scores_len_at, 6));

    /* value types */
    MUTATE("unknown value type 13", EMBER_ERR_CORRUPT, gb_put_u32(&b, L.u8_type_at, 13));
    MUTATE("unknown value type 2^32-1", EMBER_ERR_CORRUPT, gb_put_u32(&b, L.u8_type_at, 0xffffffffu));
    MUTATE("unknown array element type 13", EMBER_ERR_CORRUPT, gb_put_u32(&b, L.tokens_type_at, 13));
    MUTATE("array element type 2^31", EMBER_ERR_CORRUPT, gb_put_u32(&b, L.tokens_type_at, 0x80000000u));
    MUTATE("bool value 2", EMBER_ERR_CORRUPT, b.p[L.bool_at] = 2);

    /* tensor infos */
    size_t ti = R.t[1].info_at + 8 + strlen(R.t[1].name); /* n_dims of output_norm.weight (1 dim) */
    MUTATE("n_dims 0", EMBER_ERR_CORRUPT, gb_put_u32(&b, ti, 0));
    MUTATE("n_dims 5", EMBER_ERR_CORRUPT, gb_put_u32(&b, ti, 5));
    MUTATE("n_dims 2^32-1", EMBER_ERR_CORRUPT, gb_put_u32(&b, ti, 0xffffffffu));
    MUTATE("ne[0] = 0", EMBER_ERR_CORRUPT, gb_put_u64(&b, ti + 4, 0));
    MUTATE("ne[0] = -1", EMBER_ERR_CORRUPT, gb_put_u64(&b, ti + 4, UINT64_MAX));
    MUTATE("ne[0] = 2^63", EMBER_ERR_CORRUPT, gb_put_u64(&b, ti + 4, (uint64_t)1 << 63));
    MUTATE("ne[0] = 2^62 (f32 bytes overflow)", EMBER_ERR_CORRUPT, gb_put_u64(&b, ti + 4, (uint64_t)1 << 62));
    MUTATE("ne[0] = 2^61 (bytes 2^63)", EMBER_ERR_CORRUPT, gb_put_u64(&b, ti + 4, (uint64_t)1 << 61));
    MUTATE("ne[0] = 2^60 (past the end)", EMBER_ERR_TRUNCATED, gb_put_u64(&b, ti + 4, (uint64_t)1 << 60));
    MUTATE("ne[0] = 65 (overlaps next)", EMBER_ERR_CORRUPT, gb_put_u64(&b, ti + 4, 65));
    size_t t0 = R.t[0].info_at + 8 + strlen(R.t[0].name); /* q4_0 [64, 4] */
    MUTATE("ne[0] = 33 (not a q4_0 block multiple)", EMBER_ERR_CORRUPT, gb_put_u64(&b, t0 + 4, 33));
    MUTATE("ne = [2^32, 2^32] (elements overflow)", EMBER_ERR_CORRUPT,
           (gb_put_u64(&b, t0 + 4, (uint64_t)32 << 32), gb_put_u64(&b, t0 + 12, (uint64_t)1 << 32)));
    MUTATE("ne = [64, 2^62] (elements 2^68)", EMBER_ERR_CORRUPT, gb_put_u64(&b, t0 + 12, (uint64_t)1 << 62));
    MUTATE("ne = [64, 2^57] (elements 2^63)", EMBER_ERR_CORRUPT, gb_put_u64(&b, t0 + 12, (uint64_t)1 << 57));
    MUTATE("ne = [64, 2^56] (bytes fit, past the end)", EMBER_ERR_TRUNCATED, gb_put_u64(&b, t0 + 12, (uint64_t)1 << 56));
    MUTATE("ne[1] = 0", EMBER_ERR_CORRUPT, gb_put_u64(&b, t0 + 12, 0));
    size_t t3 = R.t[3].info_at + 8 + strlen(R.t[3].name); /* q4_k, 4 dims */
    MUTATE("ne[3] = 2^40 * ne[2] = 2^41 ... overflow", EMBER_ERR_CORRUPT,
           (gb_put_u64(&b, t3 + 4 + 16, (uint64_t)1 << 30), gb_put_u64(&b, t3 + 4 + 24, (uint64_t)1 << 30)));
    size_t ty = R.t[1].offset_at - 4;
    MUTATE("tensor type 4 (removed q4_2)", EMBER_ERR_UNSUPPORTED, gb_put_u32(&b, ty, 4));
    MUTATE("tensor type 40", EMBER_ERR_UNSUPPORTED, gb_put_u32(&b, ty, 40));
    MUTATE("tensor type 1000", EMBER_ERR_UNSUPPORTED, gb_put_u32(&b, ty, 1000));
    MUTATE("tensor type 2^32-1", EMBER_ERR_UNSUPPORTED, gb_put_u32(&b, ty, 0xffffffffu));
    MUTATE("misaligned offset +1", EMBER_ERR_CORRUPT, gb_put_u64(&b, L.t[1].offset_at, L.t[1].offset + 1));
    MUTATE("misaligned offset +16", EMBER_ERR_CORRUPT, gb_put_u64(&b, L.t[1].offset_at, L.t[1].offset + 16));
    MUTATE("offset at the end of the file", EMBER_ERR_TRUNCATED,
           gb_put_u64(&b, L.t[3].offset_at, (b.n - L.data_at + 31) / 32 * 32));
    MUTATE("offset so the data runs past the end", EMBER_ERR_TRUNCATED,
           gb_put_u64(&b, L.t[3].offset_at, L.t[3].offset + 32));
    MUTATE("offset 2^64-32", EMBER_ERR_TRUNCATED, gb_put_u64(&b, L.t[3].offset_at, (uint64_t)0 - 32));
    MUTATE("overlapping tensors (same offset)", EMBER_ERR_CORRUPT,
           gb_put_u64(&b, L.t[2].offset_at, L.t[1].offset));
    MUTATE("overlapping tensors (partial)", EMBER_ERR_CORRUPT,
           gb_put_u64(&b, L.t[0].offset_at, L.t[1].offset + 32));
    MUTATE("duplicate tensor name", EMBER_ERR_CORRUPT,   /* blk.0.ffn_dn.weight -> blk.0.attn_q.weight */
           memcpy(b.p + L.t[3].info_at + 8, "blk.0.attn_q.weight", 19));
    MUTATE("empty tensor name", EMBER_ERR_CORRUPT, {
        /* rebuild: a tensor named "" */
        gb_free(&b);
        gb_header(&b, 3, 1, 0);
        int64_t ne[1] = {4};
        gb_tensor_info(&b, "", 1, ne, EK_F32, 0);
        gb_pad(&b, 32); gb_zeros(&b, 16);
    });
    MUTATE("tensor name with invalid UTF-8", EMBER_ERR_CORRUPT, b.p[L.t[1].info_at + 8] = 0xc0);
    MUTATE("tensor name with NUL", EMBER_ERR_CORRUPT, b.p[L.t[1].info_at + 9] = 0);

    /* keys */
    MUTATE("empty key", EMBER_ERR_CORRUPT, {
        gb_free(&b);
        gb_header(&b, 3, 0, 1);
        gb_kv_u32(&b, "", 1);
    });
    MUTATE("key with invalid UTF-8", EMBER_ERR_CORRUPT, b.p[L.arch_key_len_at + 8 + 3] = 0xff);
    MUTATE("key with a surrogate", EMBER_ERR_CORRUPT, memcpy(b.p + L.arch_key_len_at + 8, "\xed\xa0\x80", 3));
    MUTATE("key with NUL", EMBER_ERR_CORRUPT, b.p[L.arch_key_len_at + 8 + 7] = 0);
    MUTATE("duplicate key", EMBER_ERR_CORRUPT, memcpy(b.p + L.u8_type_at - 2, "i8", 2)); /* "t.u8" -> "t.i8" */
    MUTATE("duplicate general.alignment", EMBER_ERR_CORRUPT, {
        gb_free(&b);
        gb_header(&b, 3, 0, 2);
        gb_kv_u32(&b, "general.alignment", 32);
        gb_kv_u32(&b, "general.alignment", 64);
    });

    /* alignment */
    static const uint32_t bad_align[] = {0, 3, 24, 0x80000001u, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad_align / sizeof bad_align[0]; i++) {
        snprintf(what, sizeof what, "alignment %u", bad_align[i]);
        gb_buf b = {0};
        layout L;
        make_full(&b, 3, 64, &L);
        gb_put_u32(&b, L.align_val_at, bad_align[i]);
        EXPECT(what, &b, EMBER_ERR_CORRUPT);
        n_hostile++;
        gb_free(&b);
    }
    MUTATE("alignment as uint64", EMBER_ERR_CORRUPT, {
        gb_free(&b); gb_header(&b, 3, 0, 1); gb_kv_u64(&b, "general.alignment", 32);
    });
    MUTATE("alignment as int32", EMBER_ERR_CORRUPT, {
        gb_free(&b); gb_header(&b, 3, 0, 1); gb_kv_i32(&b, "general.alignment", 32);
    });
    MUTATE("alignment as string", EMBER_ERR_CORRUPT, {
        gb_free(&b); gb_header(&b, 3, 0, 1); gb_kv_str(&b, "general.alignment", "32");
    });
    MUTATE("alignment 64 with offsets aligned to 32 only", EMBER_ERR_CORRUPT, {
        gb_free(&b);
        gb_header(&b, 3, 2, 1);
        gb_kv_u32(&b, "general.alignment", 64);
        int64_t ne[1] = {8};
        gb_tensor_info(&b, "a", 1, ne, EK_F32, 0);
        gb_tensor_info(&b, "b", 1, ne, EK_F32, 32);
        gb_pad(&b, 64); gb_zeros(&b, 64);
    });
    MUTATE("data section start past the end", EMBER_ERR_TRUNCATED, {
        gb_free(&b);
        gb_header(&b, 3, 1, 1);
        gb_kv_u32(&b, "general.alignment", 1u << 20);
        int64_t ne[1] = {1};
        gb_tensor_info(&b, "a", 1, ne, EK_I8, 0);
        gb_zeros(&b, 4);
    });

    /* magic and version */
    MUTATE("magic GGML", EMBER_ERR_BAD_MAGIC, memcpy(b.p, "GGML", 4));
    MUTATE("magic ggu", EMBER_ERR_BAD_MAGIC, b.n = 3; b.p[2] = 'u');
    MUTATE("zero-filled file", EMBER_ERR_BAD_MAGIC, memset(b.p, 0, b.n));
    MUTATE("3 bytes GGU", EMBER_ERR_TRUNCATED, b.n = 3);
    MUTATE("version 0", EMBER_ERR_VERSION, gb_put_u32(&b, 4, 0));
    MUTATE("version 1", EMBER_ERR_VERSION, gb_put_u32(&b, 4, 1));
    MUTATE("version 4", EMBER_ERR_VERSION, gb_put_u32(&b, 4, 4));
    MUTATE("version big-endian 3", EMBER_ERR_VERSION, gb_put_u32(&b, 4, 0x03000000u));
    MUTATE("version 2^32-1", EMBER_ERR_VERSION, gb_put_u32(&b, 4, 0xffffffffu));
    MUTATE("version 2 (valid)", EMBER_OK, gb_put_u32(&b, 4, 2));

    /* nested arrays */
    MUTATE("arrays nested 5 deep", EMBER_ERR_CORRUPT, {
        gb_free(&b);
        gb_header(&b, 3, 0, 1);
        gb_key(&b, "deep", GB_ARRAY);
        for (int d = 0; d < 4; d++) gb_arr(&b, GB_ARRAY, 1);
        gb_arr(&b, GB_UINT8, 1); gb_u8(&b, 9);
    });
    MUTATE("arrays nested 100000 deep", EMBER_ERR_CORRUPT, {
        gb_free(&b);
        gb_header(&b, 3, 0, 1);
        gb_key(&b, "deep", GB_ARRAY);
        for (int d = 0; d < 100000; d++) gb_arr(&b, GB_ARRAY, 1);
    });
    MUTATE("nested array count huge", EMBER_ERR_CORRUPT, {
        gb_free(&b);
        gb_header(&b, 3, 0, 1);
        gb_key(&b, "deep", GB_ARRAY);
        gb_arr(&b, GB_ARRAY, 1);
        gb_arr(&b, GB_UINT64, UINT64_MAX / 4);
        gb_zeros(&b, 64);
    });
    MUTATE("nested string length huge", EMBER_ERR_TRUNCATED, {
        gb_free(&b);
        gb_header(&b, 3, 0, 1);
        gb_key(&b, "deep", GB_ARRAY);
        gb_arr(&b, GB_ARRAY, 1);
        gb_arr(&b, GB_STRING, 1);
        gb_u64(&b, UINT64_MAX);
        gb_zeros(&b, 16);
    });
    MUTATE("bool array element 255", EMBER_ERR_CORRUPT, {
        gb_free(&b);
        gb_header(&b, 3, 0, 1);
        gb_kv_arr(&b, "bools", GB_BOOL, 3);
        gb_u8(&b, 0); gb_u8(&b, 1); gb_u8(&b, 255);
    });
}

/* Duplicates among many tensors (hash collisions), and lookups in a large
 * table. */
static void test_duplicate_tensor(void) {
    gb_buf b = {0};
    gb_header(&b, 3, 3, 0);
    gb_tensor t[3] = {GB_TENSOR("w", 1, EK_F32, 8), GB_TENSOR("v", 1, EK_F32, 8), GB_TENSOR("w", 1, EK_F32, 8)};
    gb_tensors(&b, t, 3, 32);
    EXPECT("duplicate tensor name 'w'", &b, EMBER_ERR_CORRUPT);
    n_hostile++;
    gb_free(&b);
    /* many tensors, then a duplicate: exercises hash collisions */
    gb_header(&b, 3, 2001, 0);
    char names[2001][16];
    for (int i = 0; i < 2001; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i == 2000 ? 1234 : i);
        int64_t ne[1] = {1};
        gb_tensor_info(&b, names[i], 1, ne, EK_I8, (uint64_t)i * 32);
    }
    gb_pad(&b, 32);
    gb_zeros(&b, 2001 * 32);
    EXPECT("duplicate among 2001 tensors", &b, EMBER_ERR_CORRUPT);
    gb_free(&b);
    gb_header(&b, 3, 2000, 0);
    for (int i = 0; i < 2000; i++) {
        int64_t ne[1] = {1};
        gb_tensor_info(&b, names[i], 1, ne, EK_I8, (uint64_t)(1999 - i) * 32);
    }
    gb_pad(&b, 32);
    gb_zeros(&b, 2000 * 32);
    egf_file *f = NULL;
    char err[256];
    int rc = egf_open(b.p, b.n, NULL, &f, err, sizeof err);
    CHECK(rc == 0, "2000 tensors: %s", err);
    int found = 0;
    for (int i = 0; rc == 0 && i < 2000; i++) {
        const egf_tensor *t1 = egf_find_tensor(f, names[i]);
        found += t1 && t1->offset == (uint64_t)(1999 - i) * 32;
    }
    CHECK(found == 2000, "found %d of 2000", found);
    egf_close(f);
    n_hostile++;
    gb_free(&b);
}

/* ---- allocation ----------------------------------------------------------- */

static void test_alloc_failure(void) {
    gb_buf b = {0};
    layout L;
    make_full(&b, 3, 32, &L);
    int n_fail = 0, opened = 0;
    for (long n = 1; n < 100; n++) {
        counter c = {0};
        c.fail_at = n;
        ember_allocator a = {c_malloc, c_realloc, c_free, &c};
        egf_file *f = NULL;
        char err[256] = "";
        int rc = egf_open(b.p, b.n, &a, &f, err, sizeof err);
        if (rc == EMBER_OK) {
            CHECK(c.n_calls < n, "succeeded although allocation %ld failed", n);
            walk(f);
            egf_close(f);
            CHECK(c.live == 0 && c.bytes == 0, "leak after success: %ld blocks", c.live);
            opened = 1;
            break;
        }
        n_fail++;
        CHECK(rc == EMBER_ERR_NOMEM, "allocation %ld failed: %s (%s)", n, st(rc), err);
        CHECK(err[0] != 0, "allocation %ld: empty message", n);
        CHECK(c.live == 0 && c.bytes == 0, "allocation %ld failed: %ld blocks leaked", n, c.live);
        CHECK(f == NULL, "out set on failure");
    }
    CHECK(opened, "never opened");
    printf("allocation failure: %d failing points, all NOMEM, no leaks\n", n_fail);
    gb_free(&b);
}

static uint64_t peak_of(const gb_buf *b, int *rc_out) {
    counter c = {0};
    ember_allocator a = {c_malloc, c_realloc, c_free, &c};
    egf_file *f = NULL;
    char err[256];
    int rc = egf_open(b->p, b->n, &a, &f, err, sizeof err);
    if (rc == 0) { walk(f); egf_close(f); }
    CHECK(c.live == 0, "leak");
    *rc_out = rc;
    return c.peak;
}

static void test_alloc_bound(void) {
    const size_t K = 1024;
    uint64_t worst = 0;
    int rc;
    gb_buf b = {0};
    /* huge counts in a 1 KB file */
    for (size_t h = 0; h < sizeof k_huge / sizeof k_huge[0]; h++) {
        gb_header(&b, 3, k_huge[h], k_huge[h]);
        gb_zeros(&b, K - b.n);
        uint64_t p = peak_of(&b, &rc);
        CHECK(rc == EMBER_ERR_CORRUPT && p == 0, "huge counts: %s, peak %llu", st(rc), (unsigned long long)p);
        gb_free(&b);
        gb_header(&b, 3, 0, 1);
        gb_kv_arr(&b, "a", GB_STRING, k_huge[h]);
        gb_zeros(&b, K - b.n);
        p = peak_of(&b, &rc);
        CHECK(rc == EMBER_ERR_CORRUPT && p == 0, "huge array: %s, peak %llu", st(rc), (unsigned long long)p);
        gb_free(&b);
    }
    /* the most kvs a 1 KB file can hold */
    gb_header(&b, 3, 0, 0);
    int n = 0;
    while (b.n + 14 <= K) {
        gb_u64(&b, 1); gb_u8(&b, (uint8_t)('!' + n)); gb_u32(&b, GB_UINT8); gb_u8(&b, 0);
        n++;
    }
    gb_put_u64(&b, 16, (uint64_t)n);
    uint64_t p = peak_of(&b, &rc);
    if (p > worst) worst = p;
    CHECK(rc == 0, "%d one-byte kvs: %s", n, st(rc));
    gb_free(&b);
    /* the longest string array a 1 KB file can hold */
    gb_header(&b, 3, 0, 1);
    gb_kv_arr(&b, "s", GB_STRING, (K - 24 - 8 - 1 - 4 - 12) / 8);
    gb_zeros(&b, K - b.n);
    p = peak_of(&b, &rc);
    if (p > worst) worst = p;
    CHECK(rc == 0, "string array: %s", st(rc));
    gb_free(&b);
    /* the most tensors a 1 KB file can hold */
    gb_header(&b, 3, 0, 0);
    n = 0;
    while (b.n + 33 + 32 <= K - 32) {
        char name[8];
        snprintf(name, sizeof name, "%c%c", 'a' + n % 26, 'a' + n / 26);
        int64_t ne[1] = {1};
        gb_tensor_info(&b, name, 1, ne, EK_I8, (uint64_t)n * 1);
        n++;
    }
    gb_put_u64(&b, 8, (uint64_t)n);
    gb_zeros(&b, K - b.n);
    p = peak_of(&b, &rc);
    if (p > worst) worst = p;
    CHECK(rc == EMBER_ERR_CORRUPT, "%d tensors with default alignment: %s", n, st(rc));
    gb_free(&b);
    printf("allocation bound: peak %llu bytes for hostile 1 KB files\n", (unsigned long long)worst);
    CHECK(worst < 64 * 1024, "peak %llu bytes for a 1 KB file", (unsigned long long)worst);
    /* the documented bound: under 4 bytes per file byte plus a constant */
    CHECK(worst < 4 * K + 1024, "peak %llu bytes for a 1 KB file exceeds 4 bytes per byte", (unsigned long long)worst);
}

/* Parse time stays linear: a 128k-entry string array and a large kv set. */
static void test_large_vocab(void) {
    gb_buf b = {0};
    enum { NV = 128 * 1024 };
    gb_header(&b, 3, 0, 1);
    gb_kv_arr(&b, "tokenizer.ggml.tokens", GB_STRING, NV);
    char tok[32];
    for (int i = 0; i < NV; i++) { snprintf(tok, sizeof tok, "tok%d", i); gb_str(&b, tok); }
    egf_file *f = NULL;
    char err[256];
    int rc = egf_open(b.p, b.n, NULL, &f, err, sizeof err);
    CHECK(rc == 0, "128k tokens: %s", err);
    if (rc == 0) {
        const egf_kv *kv = egf_find_kv(f, "tokenizer.ggml.tokens");
        int ok = 1;
        for (int i = 0; i < NV; i += 997) {
            egf_str s;
            snprintf(tok, sizeof tok, "tok%d", i);
            ok &= egf_arr_str(f, kv, (uint64_t)i, &s) == 0 && egf_str_eq(s, tok);
        }
        egf_str s;
        snprintf(tok, sizeof tok, "tok%d", NV - 1);
        ok &= egf_arr_str(f, kv, NV - 1, &s) == 0 && egf_str_eq(s, tok);
        CHECK(ok, "token lookups");
        egf_close(f);
    }
    gb_free(&b);
}

/* Many kvs and tensors whose names share long prefixes: open stays fast
 * (sorted indices, O(n log n) worst case) and every lookup works. */
static void test_many_names(void) {
    enum { NT = 40000, NK = 40000 };
    gb_buf b = {0};
    char name[96];
    gb_header(&b, 3, NT, NK + 1);
    gb_kv_u32(&b, "general.alignment", 1);
    for (int i = 0; i < NK; i++) {
        snprintf(name, sizeof name, "k.%048d.%d", 0, (i * 7919) % NK);
        gb_kv_u32(&b, name, (uint32_t)((i * 7919) % NK));
    }
    for (int i = 0; i < NT; i++) {
        snprintf(name, sizeof name, "blk.%040d.%d", 0, NT - 1 - i);
        int64_t ne[1] = {1};
        gb_tensor_info(&b, name, 1, ne, EK_I8, (uint64_t)i);
    }
    gb_zeros(&b, NT);
    egf_file *f = NULL;
    char err[256];
    int rc = egf_open(b.p, b.n, NULL, &f, err, sizeof err);
    CHECK(rc == 0, "%d kvs / %d tensors: %s", NK, NT, err);
    if (rc == 0) {
        int bad = 0;
        for (int i = 0; i < NK; i++) {
            uint32_t u = 0;
            snprintf(name, sizeof name, "k.%048d.%d", 0, i);
            bad += egf_get_u32(f, name, &u) != 0 || u != (uint32_t)i;
        }
        for (int i = 0; i < NT; i++) {
            snprintf(name, sizeof name, "blk.%040d.%d", 0, i);
            const egf_tensor *t = egf_find_tensor(f, name);
            bad += !t || t->offset != (uint64_t)(NT - 1 - i);
        }
        snprintf(name, sizeof name, "blk.%040d.", 0);
        bad += egf_find_tensor(f, name) != NULL;
        bad += egf_find_tensor(f, "blk") != NULL || egf_find_kv(f, "k") != NULL;
        bad += egf_find_kv(f, "k.") != NULL || egf_find_kv(f, "\x7f") != NULL;
        CHECK(bad == 0, "%d lookups failed", bad);
        egf_close(f);
    }
    gb_free(&b);
}

/* Writes a few small valid images for the fuzzer's seed corpus when
 * GGUF_WRITE_CORPUS names a directory. */
static void write_corpus(const char *dir) {
    char path[1024];
    gb_buf b = {0};
    layout L;
    make_full(&b, 3, 32, &L);
    snprintf(path, sizeof path, "%s/full_v3.gguf", dir);
    CHECK(gb_write_file(&b, path) == 0, "write %s", path);
    gb_free(&b);
    make_full(&b, 2, 64, &L);
    snprintf(path, sizeof path, "%s/full_v2_align64.gguf", dir);
    CHECK(gb_write_file(&b, path) == 0, "write %s", path);
    gb_free(&b);
    gb_header(&b, 3, 0, 2);
    gb_kv_str(&b, "general.architecture", "llama");
    gb_key(&b, "deep", GB_ARRAY);
    gb_arr(&b, GB_ARRAY, 2); gb_arr(&b, GB_INT8, 1); gb_u8(&b, 1); gb_arr(&b, GB_STRING, 1); gb_str(&b, "z");
    snprintf(path, sizeof path, "%s/kv_only.gguf", dir);
    CHECK(gb_write_file(&b, path) == 0, "write %s", path);
    gb_free(&b);
    gb_header(&b, 3, 2, 1);
    gb_kv_u32(&b, "general.alignment", 1);
    gb_tensor t[2] = {GB_TENSOR("a", 3, EK_BF16, 2, 1, 3), GB_TENSOR("b", 2, EK_Q8_0, 32, 2)};
    gb_tensors(&b, t, 2, 1);
    snprintf(path, sizeof path, "%s/align1.gguf", dir);
    CHECK(gb_write_file(&b, path) == 0, "write %s", path);
    gb_free(&b);
}

/* Fuzzing (tests/fuzz/fuzz_gguf.c, ~2.7M executions) has found no crash,
 * leak or allocation-bound violation; any future crash input belongs here
 * as a regression case. */

int main(void) {
    (void)test_shared_dir;   /* no shared data needed: images are built here */
    const char *corpus = getenv("GGUF_WRITE_CORPUS");
    if (corpus) { write_corpus(corpus); return test_summary("test_gguf"); }
    test_roundtrip(3, 0);
    test_roundtrip(3, 32);
    test_roundtrip(3, 64);
    test_roundtrip(3, 1);
    test_roundtrip(2, 0);
    test_roundtrip(2, 128);
    test_small_valid();
    test_truncation();
    test_bitflips();
    test_hostile_fields();
    test_duplicate_tensor();
    test_alloc_failure();
    test_alloc_bound();
    test_large_vocab();
    test_many_names();
    printf("hostile images: %d\n", n_hostile);
    return test_summary("test_gguf");
}
