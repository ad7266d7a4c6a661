/* test_kernel_sets.c - choosing the kernel set (ember_model_params.kernels):
 * every set this CPU runs gives the demo model the same greedy tokens as the
 * scalar set and logits within float summation error of it; per set, packed
 * (read in) and unpacked (mapped) weights, a batch and one token at a time,
 * and 1 or 2 threads give the same bits for quantized models; "auto" is the
 * best set; an unknown or unavailable name fails with a message naming it. */
#define TM_NO_MAIN
#include "test_hostile_model.c"

#include "kernels.h"

#include <math.h>

#define DEMO "models/ember-demo.gguf"
#define N_GEN 24

static ember_model *open_set(const char *path, const char *kernels, int mode) {
    ember_model_params p = ember_model_default_params();
    p.kernels = kernels;
    p.load_mode = mode;
    ember_model *m = NULL;
    ember_error err;
    int rc = ember_model_open_file(path, &p, &m, &err);
    CHECK(rc == EMBER_OK, "open %s with kernels %s: %s", path, kernels ? kernels : "NULL", err.message);
    return m;
}

/* root mean square of a - b over that of b */
static double rel_rms(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) { num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); den += (double)b[i] * b[i]; }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Greedy tokens after the prompt; the logits of the first step in logits0. */
static int greedy(ember_model *m, ember_token *out, float *logits0) {
    ember_token prompt[64];
    size_t n = 0;
    if (ember_tokenize(m, "The meaning of life is", 22, EMBER_TOKENIZE_ADD_BOS, prompt, 64, &n, NULL) != EMBER_OK)
        return -1;
    ember_context *c = make_ctx(m, 128, 32, 2);
    if (!c) return -1;
    int rc = ember_eval(c, prompt, (int)n, NULL);
    const int V = ember_n_vocab(m);
    for (int i = 0; i < N_GEN && rc == EMBER_OK; i++) {
        const float *l = ember_get_logits(c);
        if (i == 0) memcpy(logits0, l, sizeof(float) * V);
        int best = 0;
        for (int v = 1; v < V; v++) if (l[v] > l[best]) best = v;
        out[i] = best;
        rc = ember_eval(c, &out[i], 1, NULL);
    }
    ember_context_free(c);
    return rc;
}

static void test_demo_model(void) {
    FILE *f = fopen(DEMO, "rb");
    if (!f) { printf("SKIP: %s not found (run from the repository root)\n", DEMO); test_skipped++; return; }
    fclose(f);
    const ek_kernels *sets[8];
    const int n = ek_kernels_available(sets, 8);
    ember_token ref[N_GEN], toks[N_GEN];
    float *l_ref = NULL, *l = NULL;
    for (int s = 0; s < n; s++) {
        const char *name = ek_kernels_name(sets[s]);
        ember_model *m = open_set(DEMO, name, EMBER_LOAD_READ);
        if (!m) continue;
        ember_model_info info;
        ember_model_get_info(m, &info, NULL);
        CHECK(!strcmp(info.kernels, name), "asked for %s, model runs %s", name, info.kernels);
        const int V = ember_n_vocab(m);
        if (!l_ref) { l_ref = malloc(sizeof(float) * V); l = malloc(sizeof(float) * V); }
        int rc = greedy(m, s == 0 ? ref : toks, s == 0 ? l_ref : l);
        CHECK(rc == EMBER_OK, "%s: generation failed", name);
        if (s > 0 && rc == EMBER_OK) {
            CHECK(memcmp(ref, toks, sizeof ref) == 0, "%s: greedy tokens differ from the scalar set's", name);
            /* F16 products are exact in float; only the order of the float
             * sums differs between sets (~1e-6 relative per dot, a little
             * more after 4 layers); a wrong kernel is off by O(1) */
            const double e = rel_rms(l, l_ref, V);
            CHECK(e < 1e-4, "%s: first logits vs scalar: rel rms %.3g", name, e);
        }
        ember_model_free(m);
    }
    free(l_ref);
    free(l);
}

/* Quantized models: each set is bit-identical to itself across load modes
 * (packed or not), batch sizes and thread counts, and near the scalar set. */
static void test_quantized(void) {
    static const int types[] = {EK_Q4_0, EK_Q8_0, EK_Q2_K, EK_Q3_K, EK_Q4_K, EK_Q5_K, EK_Q6_K, EK_IQ4_XS, EK_F16, EK_BF16};
    ember_token toks[40];
    for (int i = 0; i < 40; i++) toks[i] = TM_FIRST_PIECE + (i * 7) % 20;
    const ek_kernels *sets[8];
    const int n = ek_kernels_available(sets, 8);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        tm_spec spec = tm_default();
        spec.wtype = types[t];
        spec.seed = 7;
        spec.n_embd = 256; spec.n_ff = 512; spec.n_head = 8; spec.n_head_kv = 2;
        gb_buf img = {0};
        tm_build(&spec, &img);
        char path[300];
        const int made = test_temp_file(path, sizeof path, "ember_test_kernel_sets") == 0;
        CHECK(made && gb_write_file(&img, path) == 0, "write model");
        gb_free(&img);
        const char *tname = ember_type_name(types[t]);
        float *ref = NULL, *a = NULL, *b = NULL;
        for (int s = 0; s < n; s++) {
            const char *name = ek_kernels_name(sets[s]);
            ember_model *mr = open_set(path, name, EMBER_LOAD_READ), *mp = open_set(path, name, EMBER_LOAD_MMAP);
            if (!mr || !mp) { ember_model_free(mr); ember_model_free(mp); continue; }
            const int V = ember_n_vocab(mr);
            /* read weights are packed exactly where the set has a packed
             * kernel for the type, so the bit checks below cover it */
            ember_model_info ir;
            ember_model_get_info(mr, &ir, NULL);
            CHECK((ir.n_packed > 0) == (ek_pack_wanted(sets[s], types[t], 512) != 0), "%s %s: %d matrices packed",
                  name, tname, ir.n_packed);
            if (!ref) { ref = malloc(sizeof(float) * V); a = malloc(sizeof(float) * V); b = malloc(sizeof(float) * V); }
            /* one token at a time, mapped (never packed), 1 thread: the base */
            if (eval_last(mp, toks, 40, 1, 1, s == 0 ? ref : a) != EMBER_OK) goto next;
            const float *base = s == 0 ? ref : a;
            /* batches of 40 use the amx set's bf16 tiles for F16/BF16, which
             * differ in the last bits (kernels.h); one token at a time does not */
            const int tiles = sets[s]->bf16_tiles_min_nb > 0 && (types[t] == EK_F16 || types[t] == EK_BF16);
            static const int nbs[] = {1, 40, 7}, ths[] = {2, 1, 2};
            for (int v = 0; v < 3; v++) {
                if (tiles && nbs[v] >= sets[s]->bf16_tiles_min_nb) continue;
                if (eval_last(mr, toks, 40, nbs[v], ths[v], b) != EMBER_OK) break;
                CHECK(memcmp(base, b, sizeof(float) * V) == 0, "%s %s read nb %d threads %d: bits differ from mapped",
                      name, tname, nbs[v], ths[v]);
            }
            if (s > 0) {
                /* same converted activations, same integer block sums: only
                 * the float order of the scaled sums differs.  But every
                 * layer re-quantizes its input to 8 bits, and a last-bit
                 * difference that flips one rounding moves a dot product by
                 * a quantization step (~1/127 of the row's largest value):
                 * through 40 positions of real (ggml-quantized) k-quant
                 * weights that reaches ~1e-2.  A wrong kernel is off by O(1)
                 * (rel rms ~1); each kernel's bits against its scalar twin are
                 * test_kernels' business. */
                const double e = rel_rms(a, ref, V);
                CHECK(e < 5e-2, "%s %s: logits vs scalar: rel rms %.3g", name, tname, e);
            }
        next:
            ember_model_free(mr);
            ember_model_free(mp);
        }
        remove(path);
        free(ref); free(a); free(b);
    }
}

static void expect_fail(const char *kernels, int want_code) {
    ember_model_params p = ember_model_default_params();
    p.kernels = kernels;
    ember_model *m = (ember_model *)&p;   /* must be set to NULL */
    ember_error err;
    int rc = ember_model_open_file(DEMO, &p, &m, &err);
    CHECK(rc == want_code && m == NULL, "kernels '%s': status %d, want %d", kernels, rc, want_code);
    CHECK(strstr(err.message, kernels) != NULL && err.code == rc, "kernels '%s': message '%s' must name it", kernels,
          err.message);
    if (rc == EMBER_OK) ember_model_free(m);
}

static void test_names(void) {
    FILE *f = fopen(DEMO, "rb");
    if (!f) { printf("SKIP: %s not found\n", DEMO); test_skipped++; return; }
    fclose(f);
    const char *autos[] = {NULL, "", "auto"};
    for (int i = 0; i < 3; i++) {
        ember_model *m = open_set(DEMO, autos[i], EMBER_LOAD_MMAP);
        if (!m) continue;
        ember_model_info info;
        ember_model_get_info(m, &info, NULL);
        CHECK(!strcmp(info.kernels, ember_cpu_features()), "'%s' runs %s, the best is %s", autos[i] ? autos[i] : "NULL",
              info.kernels, ember_cpu_features());
        ember_model_free(m);
    }
    expect_fail("avx3", EMBER_ERR_INVALID_ARG);
    expect_fail("AVX2", EMBER_ERR_INVALID_ARG);   /* names are exact */
    /* a set of another architecture (or one this CPU lacks) */
    static const char *others[] = {"avx2", "avx512", "amx", "neon", "neon_dotprod"};
    int tried = 0;
    for (int i = 0; i < 5; i++) {
        int known = 0;
        if (ek_kernels_find(others[i], &known)) continue;
        CHECK(known, "%s is a known set", others[i]);
        expect_fail(others[i], EMBER_ERR_UNSUPPORTED);
        tried++;
    }
    CHECK(tried > 0, "some set is unavailable on any one CPU");
}

int main(void) {
    test_names();
    test_demo_model();
    test_quantized();
    return test_summary("test_kernel_sets");
}
