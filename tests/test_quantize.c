/* test_quantize.c - ember_quantize on a GGUF built here (no llama.cpp
 * needed): the type of every tensor as llama.cpp's rules give it (derived
 * by hand below from src/llama-quant.cpp; tests/test_quantize.py checks the
 * same rules against llama-quantize's own files), every KV copied byte for
 * byte, the rows exactly what ek_quantize_row makes of the input (so
 * threads and chunks put every row in its place) and within each type's
 * round-trip error, the same file for any thread count, the progress
 * callback, and the errors. */
#include "test.h"
#include "gguf_build.h"
#include "gguf.h"
#include "kernels.h"
#include "ember.h"

#include <math.h>
#include <stdint.h>
#include <unistd.h>

static char t_in[300], t_out[300], t_out2[300];

static uint64_t t_rng = 0x243f6a8885a308d3ull;
static float t_uniform(void) {   /* [-1, 1) */
    t_rng ^= t_rng >> 12; t_rng ^= t_rng << 25; t_rng ^= t_rng >> 27;
    return (float)((t_rng * 2685821657736338717ull) >> 40) / 16777216.0f * 2.0f - 1.0f;
}

/* ---- the input model ----------------------------------------------------------- */

enum { N_LAYER = 8, N_EMBD = 256, N_FF = 96, N_VOCAB = 24 };

/* In file order (not llama-quantize's), with each type's expectation:
 * q4_k_m, q2_k, iq4_xs (ggml type names).  Derivation (llama-quant.cpp):
 *  - output.weight: the head gets Q6_K (its rows, 256, are whole 256-blocks);
 *  - token_embd: not tied (output.weight exists), so the mix's type;
 *  - attn_v: q4_k_m Q6_K where use_more_bits(i, 8) (i = 0, 3, 6, 7), else
 *    Q4_K; q2_k with n_gqa = 8/2 = 4 Q4_K; iq4_xs with n_gqa >= 4 Q5_K;
 *  - ffn_down (rows of 96): q4_k_m Q6_K in the use_more_bits layers, falling
 *    back to Q8_0, else Q4_K -> Q5_0; q2_k Q3_K -> Q4_0; iq4_xs Q5_K in
 *    layer 0 (< 8/8) -> Q5_1, else IQ4_XS -> IQ4_NL;
 *  - rows of 200 (not a multiple of 32): the fallback's fallback, F16;
 *  - norms, 1-D-shaped ([256, 1]) tensors, ssm_conv1d, the expert router:
 *    kept as they are. */
typedef struct t_spec {
    char name[48];
    int type;
    int64_t ne0, ne1;
    const char *want[3];
} t_spec;

static t_spec t_specs[64];
static int t_n_specs;

static void t_add(const char *name, int type, int64_t ne0, int64_t ne1, const char *a, const char *b, const char *c) {
    t_spec *s = &t_specs[t_n_specs++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->type = type;
    s->ne0 = ne0;
    s->ne1 = ne1;
    s->want[0] = a;
    s->want[1] = b;
    s->want[2] = c;
}

static void t_make_specs(void) {
    t_add("token_embd.weight", EK_F16, N_EMBD, N_VOCAB, "q4_K", "q2_K", "iq4_xs");
    t_add("output_norm.weight", EK_F32, N_EMBD, 0, "f32", "f32", "f32");
    t_add("output.weight", EK_BF16, N_EMBD, N_VOCAB, "q6_K", "q6_K", "q6_K");
    for (int l = N_LAYER - 1; l >= 0; l--) {   /* backwards: ember must sort */
        char n[48];
        const int more = l == 0 || l == 3 || l == 6 || l == 7;
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", l);
        t_add(n, EK_F32, N_EMBD, 0, "f32", "f32", "f32");
        snprintf(n, sizeof n, "blk.%d.attn_q.weight", l);
        t_add(n, EK_F32, N_EMBD, 16, "q4_K", "q2_K", "iq4_xs");
        snprintf(n, sizeof n, "blk.%d.attn_v.weight", l);
        t_add(n, EK_F32, N_EMBD, 32, more ? "q6_K" : "q4_K", "q4_K", "q5_K");
        snprintf(n, sizeof n, "blk.%d.ffn_down.weight", l);
        t_add(n, l % 2 ? EK_F16 : EK_F32, N_FF, N_EMBD, more ? "q8_0" : "q5_0", "q4_0", l == 0 ? "q5_1" : "iq4_nl");
        snprintf(n, sizeof n, "blk.%d.ffn_up.weight", l);
        t_add(n, EK_F32, N_EMBD, N_FF, "q4_K", "q2_K", "iq4_xs");
    }
    t_add("blk.2.attn_k.weight", EK_F32, N_EMBD, 1, "f32", "f32", "f32");
    t_add("blk.0.ssm_conv1d.weight", EK_F32, 4, N_EMBD, "f32", "f32", "f32");
    t_add("blk.0.ffn_gate_inp.weight", EK_F32, N_EMBD, 8, "f32", "f32", "f32");
    t_add("blk.3.ffn_gate.weight", EK_F32, 200, 8, "f16", "f16", "f16");
}

static const char *t_mixes[3] = {"q4_k_m", "q2_k", "iq4_xs"};
static const uint32_t t_ftypes[3] = {15, 10, 30};   /* llama_ftype MOSTLY_Q4_K_M, _Q2_K, _IQ4_XS */

static float *t_values[64];   /* each tensor's values as floats (what its stored type holds) */

/* The model as a GGUF image, KVs of every kind among them (and a stale
 * general.file_type in the middle, to be replaced). */
static void t_build(gb_buf *b) {
    static const char *const toks[] = {"a", "b", "c"};
    gb_header(b, 3, (uint64_t)t_n_specs, 13);
    gb_kv_str(b, "general.architecture", "llama");
    gb_kv_u32(b, "general.alignment", 64);
    gb_kv_u32(b, "llama.block_count", N_LAYER);
    gb_kv_u32(b, "general.file_type", 0);
    gb_kv_u32(b, "llama.attention.head_count", 8);
    gb_kv_u32(b, "llama.attention.head_count_kv", 2);
    gb_kv_f32(b, "llama.rope.freq_base", 10000.0f);
    gb_kv_f64(b, "test.f64", -2.5);
    gb_kv_bool(b, "test.bool", 1);
    gb_kv_i8(b, "test.i8", -7);
    gb_kv_arr_str(b, "tokenizer.ggml.tokens", toks, 3);
    gb_kv_arr(b, "test.nested", GB_ARRAY, 2);      /* [[1, 2], []] */
    gb_arr(b, GB_INT32, 2);
    gb_u32(b, 1);
    gb_u32(b, 2);
    gb_arr(b, GB_INT32, 0);
    gb_kv_u64(b, "test.u64", 0x0123456789abcdefull);
    gb_tensor ts[64];
    memset(ts, 0, sizeof ts);
    for (int i = 0; i < t_n_specs; i++) {
        ts[i].name = t_specs[i].name;
        ts[i].n_dims = t_specs[i].ne1 ? 2 : 1;
        ts[i].ne[0] = t_specs[i].ne0;
        ts[i].ne[1] = t_specs[i].ne1 ? t_specs[i].ne1 : 1;
        ts[i].type = t_specs[i].type;
    }
    gb_tensors(b, ts, t_n_specs, 64);
    for (int i = 0; i < t_n_specs; i++) {
        const int64_t n = ts[i].ne[0] * ts[i].ne[1];
        float *v = (float *)malloc(sizeof(float) * (size_t)n);
        for (int64_t j = 0; j < n; j++) {
            float x = t_uniform() * (1.0f + (float)((j / ts[i].ne[0]) % 5));   /* rows of varied scale */
            uint16_t h;
            switch (ts[i].type) {
            case EK_F16: h = ek_fp32_to_fp16(x); memcpy(b->p + ts[i].data_at + 2 * j, &h, 2); x = ek_fp16_to_fp32(h); break;
            case EK_BF16: h = ek_fp32_to_bf16(x); memcpy(b->p + ts[i].data_at + 2 * j, &h, 2); x = ek_bf16_to_fp32(h); break;
            default: memcpy(b->p + ts[i].data_at + 4 * j, &x, 4); break;
            }
            v[j] = x;
        }
        t_values[i] = v;
    }
}

/* ---- reading files back ---------------------------------------------------------- */

typedef struct t_file { uint8_t *p; size_t n; egf_file *f; } t_file;

static int t_open(t_file *tf, const char *path) {
    memset(tf, 0, sizeof *tf);
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    fseek(fp, 0, SEEK_END);
    tf->n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    tf->p = (uint8_t *)malloc(tf->n ? tf->n : 1);
    size_t got = fread(tf->p, 1, tf->n, fp);
    fclose(fp);
    char err[256];
    if (got != tf->n || egf_open(tf->p, tf->n, NULL, &tf->f, err, sizeof err) != EMBER_OK) {
        fprintf(stderr, "cannot read back %s: %s\n", path, err);
        return -1;
    }
    return 0;
}

static void t_close(t_file *tf) { egf_close(tf->f); free(tf->p); memset(tf, 0, sizeof *tf); }

static int t_files_equal(const char *a, const char *b) {
    t_file x, y;
    if (t_open(&x, a) || t_open(&y, b)) return 0;
    int eq = x.n == y.n && !memcmp(x.p, y.p, x.n);
    t_close(&x);
    t_close(&y);
    return eq;
}

/* The bytes of KV i as stored: from its key length to the next KV (or the
 * first tensor info). */
static void t_kv_span(const egf_file *f, uint64_t i, const uint8_t **p, size_t *n) {
    const uint8_t *start = (const uint8_t *)egf_kv_at(f, i)->key.ptr - 8;
    const uint8_t *end = i + 1 < egf_n_kv(f) ? (const uint8_t *)egf_kv_at(f, i + 1)->key.ptr - 8
                                               : (const uint8_t *)egf_tensor_at(f, 0)->name.ptr - 8;
    *p = start;
    *n = (size_t)(end - start);
}

static const char *t_type_name(int type) { return ek_type_get(type) ? ek_type_get(type)->name : "?"; }

/* Largest relative RMS error of a round trip, per type. */
static double t_rms_limit(int type) {
    switch (type) {
    case EK_Q8_0: return 0.006;
    case EK_Q6_K: return 0.017;
    case EK_Q5_0: case EK_Q5_1: case EK_Q5_K: return 0.04;
    case EK_Q4_K: case EK_IQ4_NL: case EK_IQ4_XS: return 0.075;
    case EK_Q4_0: return 0.09;
    case EK_Q3_K: return 0.16;
    case EK_Q2_K: return 0.29;
    case EK_F16: return 0.0005;
    default: return 0;
    }
}

/* ---- the checks ------------------------------------------------------------------- */

static void t_check_output(const char *path, int mix, const egf_file *in) {
    t_file o;
    CHECK(t_open(&o, path) == 0, "%s: output readable", t_mixes[mix]);
    if (!o.f) return;
    const egf_file *f = o.f;
    /* KVs: the input's in order, general.file_type dropped, then the
     * quantization version and the new file type */
    CHECK(egf_n_kv(f) == egf_n_kv(in) + 1, "%s: %llu KVs", t_mixes[mix], (unsigned long long)egf_n_kv(f));
    uint64_t j = 0;
    int kv_ok = 1;
    for (uint64_t i = 0; i < egf_n_kv(in) && j < egf_n_kv(f); i++) {
        if (egf_str_eq(egf_kv_at(in, i)->key, "general.file_type")) continue;
        const uint8_t *a, *b;
        size_t na, nb;
        t_kv_span(in, i, &a, &na);
        t_kv_span(f, j++, &b, &nb);
        if (na != nb || memcmp(a, b, na)) { kv_ok = 0; fprintf(stderr, "KV %llu differs\n", (unsigned long long)i); }
    }
    CHECK(kv_ok, "%s: every KV copied byte for byte", t_mixes[mix]);
    uint32_t qv = 0, ft = 0;
    CHECK(egf_get_u32(f, "general.quantization_version", &qv) == EMBER_OK && qv == 2, "%s: quantization_version %u",
          t_mixes[mix], qv);
    CHECK(egf_get_u32(f, "general.file_type", &ft) == EMBER_OK && ft == t_ftypes[mix], "%s: file_type %u",
          t_mixes[mix], ft);
    CHECK(egf_alignment(f) == 64, "%s: alignment %u", t_mixes[mix], egf_alignment(f));
    /* tensors: llama-quantize's order (layer, then name), types, bytes */
    CHECK(egf_n_tensors(f) == (uint64_t)t_n_specs, "%s: tensor count", t_mixes[mix]);
    int prev_layer = -1;
    char prev[64] = "";
    for (uint64_t k = 0; k < egf_n_tensors(f); k++) {
        const egf_tensor *t = egf_tensor_at(f, k);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        int layer = -1;
        sscanf(name, "blk.%d.", &layer);
        CHECK(layer > prev_layer || (layer == prev_layer && strcmp(prev, name) < 0), "%s: %s after %s", t_mixes[mix],
              name, prev);
        prev_layer = layer;
        snprintf(prev, sizeof prev, "%s", name);
        int s = 0;
        while (s < t_n_specs && strcmp(t_specs[s].name, name)) s++;
        if (s == t_n_specs) { CHECK(0, "%s: unexpected tensor %s", t_mixes[mix], name); continue; }
        const t_spec *sp = &t_specs[s];
        CHECK(!strcmp(t_type_name(t->type), sp->want[mix]), "%s: %s is %s, want %s", t_mixes[mix], name,
              t_type_name(t->type), sp->want[mix]);
        CHECK(t->n_dims == (sp->ne1 > 1 ? 2 : 1) && t->ne[0] == sp->ne0, "%s: %s shape", t_mixes[mix], name);
        const egf_tensor *ti = egf_find_tensor(in, name);
        if (t->type == ti->type) {
            CHECK(t->nbytes == ti->nbytes && !memcmp(t->data, ti->data, (size_t)t->nbytes), "%s: %s copied",
                  t_mixes[mix], name);
            continue;
        }
        /* quantized: every row as ek_quantize_row makes it, and close to the input */
        const int64_t n = t->ne[0], rows = t->ne[1];
        const size_t rb = (size_t)ek_row_bytes(t->type, (uint64_t)n);
        uint8_t *q = (uint8_t *)malloc(rb);
        float *y = (float *)malloc(sizeof(float) * (size_t)n);
        int same = 1;
        double se = 0, sx = 0;
        for (int64_t r = 0; r < rows; r++) {
            const float *x = t_values[s] + r * n;
            ek_quantize_row(t->type, x, q, n);
            same &= !memcmp(q, (const uint8_t *)t->data + (size_t)r * rb, rb);
            ek_dequant_row(t->type, (const uint8_t *)t->data + (size_t)r * rb, y, n);
            for (int64_t i = 0; i < n; i++) {
                se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                sx += (double)x[i] * x[i];
            }
        }
        CHECK(same, "%s: %s rows are ek_quantize_row's", t_mixes[mix], name);
        CHECK(sqrt(se / sx) <= t_rms_limit(t->type), "%s: %s (%s) relative RMS error %.4f > %.4f", t_mixes[mix], name,
              t_type_name(t->type), sqrt(se / sx), t_rms_limit(t->type));
        free(q);
        free(y);
    }
    t_close(&o);
}

typedef struct t_progress { int calls, last, n, cancel_at; char first[64]; } t_progress;

static int t_progress_cb(void *ud, int tensor, int n_tensors, const char *name) {
    t_progress *p = (t_progress *)ud;
    if (p->calls == 0) snprintf(p->first, sizeof p->first, "%s", name);
    p->calls += tensor == p->last + 1;
    p->last = tensor;
    p->n = n_tensors;
    return p->cancel_at >= 0 && tensor == p->cancel_at;
}

static int t_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static void test_mixes(const egf_file *in) {
    for (int mix = 0; mix < 3; mix++) {
        ember_quantize_params qp = ember_quantize_default_params();
        qp.type = t_mixes[mix];
        qp.n_threads = 3;
        t_progress pr = {0, -1, 0, -1, ""};
        qp.progress = t_progress_cb;
        qp.user_data = &pr;
        ember_error err;
        ember_status rc = ember_quantize(t_in, t_out, &qp, &err);
        CHECK(rc == EMBER_OK, "%s: %s", t_mixes[mix], err.message);
        CHECK(pr.calls == t_n_specs && pr.n == t_n_specs && !strcmp(pr.first, "output.weight"),
              "%s: progress %d calls of %d, first %s", t_mixes[mix], pr.calls, pr.n, pr.first);
        if (rc == EMBER_OK) t_check_output(t_out, mix, in);
        /* one thread (and upper case) makes the same file */
        qp.n_threads = 1;
        qp.type = mix == 0 ? "Q4_K_M" : t_mixes[mix];
        qp.progress = NULL;
        CHECK(ember_quantize(t_in, t_out2, &qp, &err) == EMBER_OK && t_files_equal(t_out, t_out2),
              "%s: 1 and 3 threads make the same file", t_mixes[mix]);
    }
}

static void test_errors(void) {
    ember_quantize_params qp = ember_quantize_default_params();
    ember_error err;
    CHECK(!strcmp(qp.type, "q4_k_m") && qp.n_threads == 0 && !qp.progress, "default params");
    /* the names */
    int n = 0, has_q4km = 0;
    for (; ember_quantize_type_name(n); n++) has_q4km |= !strcmp(ember_quantize_type_name(n), "q4_k_m");
    CHECK(n >= 19 && has_q4km && !ember_quantize_type_name(-1), "type names: %d", n);

    CHECK(ember_quantize(NULL, t_out, &qp, &err) == EMBER_ERR_INVALID_ARG && strstr(err.message, "in_path"),
          "NULL in_path: %s", err.message);
    CHECK(ember_quantize(t_in, t_out, NULL, NULL) == EMBER_ERR_INVALID_ARG, "NULL params, NULL err");
    qp.type = "q4_k_x";
    remove(t_out2);
    CHECK(ember_quantize(t_in, t_out2, &qp, &err) == EMBER_ERR_INVALID_ARG && strstr(err.message, "q4_k_x") &&
              strstr(err.message, "q5_k_m") && !t_exists(t_out2),
          "unknown type: %s", err.message);
    qp.type = "q4_k_m";
    char missing[320];
    snprintf(missing, sizeof missing, "%s.missing.gguf", t_in);
    CHECK(ember_quantize(missing, t_out2, &qp, &err) == EMBER_ERR_IO && strstr(err.message, "missing.gguf"),
          "missing input: %s", err.message);
    CHECK(ember_quantize(t_in, "/nonexistent-dir/out.gguf", &qp, &err) == EMBER_ERR_IO &&
              strstr(err.message, "/nonexistent-dir/out.gguf"),
          "unwritable output: %s", err.message);
    CHECK(ember_quantize(t_in, t_in, &qp, &err) == EMBER_ERR_INVALID_ARG && strstr(err.message, "input"),
          "output = input: %s", err.message);
    CHECK(ember_quantize(t_in, t_out2, &qp, &err) == EMBER_OK, "the input survives output = input: %s", err.message);
    /* already quantized: t_out holds iq4_xs from test_mixes */
    qp.type = "q8_0";
    remove(t_out2);
    CHECK(ember_quantize(t_out, t_out2, &qp, &err) == EMBER_ERR_UNSUPPORTED && strstr(err.message, "quantized") &&
              !t_exists(t_out2),
          "requantizing: %s", err.message);
    /* q8_0 has no fallback for rows of 200 (llama.cpp refuses it too) */
    CHECK(ember_quantize(t_in, t_out2, &qp, &err) == EMBER_ERR_UNSUPPORTED &&
              strstr(err.message, "blk.3.ffn_gate.weight"),
          "no fallback: %s", err.message);
    /* not a GGUF */
    CHECK(ember_quantize("tests/test_quantize.c", t_out2, &qp, &err) == EMBER_ERR_BAD_MAGIC, "not GGUF: %s",
          err.message);
    /* cancelled: no output left */
    qp.type = "q6_k";
    t_progress pr = {0, -1, 0, 5, ""};
    qp.progress = t_progress_cb;
    qp.user_data = &pr;
    CHECK(ember_quantize(t_in, t_out2, &qp, &err) == EMBER_ERR_CANCELLED && !t_exists(t_out2) && pr.calls == 6,
          "cancel: %s, %d calls", err.message, pr.calls);
    /* success clears err */
    qp.progress = NULL;
    CHECK(ember_quantize(t_in, t_out2, &qp, &err) == EMBER_OK && err.code == EMBER_OK && !err.message[0],
          "success clears err");
}

int main(void) {
    /* unique names (test.h: /tmp on POSIX, %TEMP% on Windows); the outputs
     * must not exist before each run */
    if (test_temp_file(t_in, sizeof t_in, "ember_q_in") != 0 || test_temp_file(t_out, sizeof t_out, "ember_q_out") != 0 ||
        test_temp_file(t_out2, sizeof t_out2, "ember_q_out2") != 0) {
        fprintf(stderr, "cannot make temporary files\n");
        return 1;
    }
    remove(t_out);
    remove(t_out2);
    t_make_specs();
    gb_buf b = {0};
    t_build(&b);
    CHECK(gb_write_file(&b, t_in) == 0, "write %s", t_in);
    egf_file *in = NULL;
    char err[256];
    CHECK(egf_open(b.p, b.n, NULL, &in, err, sizeof err) == EMBER_OK, "input: %s", err);
    if (in) {
        test_mixes(in);
        test_errors();
        egf_close(in);
    }
    gb_free(&b);
    for (int i = 0; i < t_n_specs; i++) free(t_values[i]);
    remove(t_in);
    remove(t_out);
    remove(t_out2);
    return test_summary("test_quantize");
}
