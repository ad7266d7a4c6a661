/* test_iq4_model.c - models whose matrices are IQ4_NL or IQ4_XS (the types
 * llama-quantize writes for IQ4_XS files) load and run through the public
 * API: never packed, the same logits bits for one token at a time, a batch
 * and two threads, read or mapped; and the logits are those of the same
 * model with its matrices dequantized to F32 (by ek_dequant_row, which
 * test_kernels checks against ggml's), up to the activations' quantization. */
#define TM_NO_MAIN
#include "test_hostile_model.c"

#include "gguf.h"


/* The image of a model of 256-wide matrices (every type's rows are whole
 * blocks) with the weights of seed 5 in type wtype. */
static gb_buf build_typed(int wtype) {
    tm_spec spec = tm_default();
    spec.wtype = wtype;
    spec.seed = 5;
    spec.n_embd = 256; spec.n_ff = 512; spec.n_head = 8; spec.n_head_kv = 2;
    gb_buf img = {0};
    tm_build(&spec, &img);
    return img;
}

/* Image f (all F32) with each matrix replaced by the dequantized matrix of
 * image q: the same model, exactly, in F32. */
static int dequantize_into(gb_buf *f, const gb_buf *q) {
    egf_file *gf = NULL, *gq = NULL;
    char err[256];
    int ok = egf_open(f->p, f->n, NULL, &gf, err, sizeof err) == EMBER_OK &&
             egf_open(q->p, q->n, NULL, &gq, err, sizeof err) == EMBER_OK;
    CHECK(ok, "parse test images: %s", err);
    int n = 0;
    for (uint64_t i = 0; ok && i < egf_n_tensors(gq); i++) {
        const egf_tensor *tq = egf_tensor_at(gq, i), *tf = NULL;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)tq->name.len, tq->name.ptr);
        tf = egf_find_tensor(gf, name);
        if (!tf || tf->type != EK_F32 || tq->type == EK_F32) continue;
        const uint64_t rows = (uint64_t)tq->ne[1], rb = ek_row_bytes(tq->type, (uint64_t)tq->ne[0]);
        for (uint64_t r = 0; r < rows; r++)
            ek_dequant_row(tq->type, (const uint8_t *)tq->data + r * rb, (float *)tf->data + r * (uint64_t)tq->ne[0],
                           tq->ne[0]);
        n++;
    }
    egf_close(gf);
    egf_close(gq);
    return n;
}

/* model from an image: read into memory from a file, or mapped */
static ember_model *open_image(const gb_buf *img, int mode, const char *what) {
    char path[1024];
    CHECK(test_temp_file(path, sizeof path, "ember_test_iq4") == 0 && gb_write_file(img, path) == 0, "write model");
    ember_model_params p = ember_model_default_params();
    ember_model *m = NULL;
    ember_error err;
    p.load_mode = mode;
    CHECK(ember_model_open_file(path, &p, &m, &err) == EMBER_OK, "%s model: %s", what, err.message);
    remove(path);
    return m;
}

/* root mean square of a - b over that of b */
static double rel_rms(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) { num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); den += (double)b[i] * b[i]; }
    return sqrt(num / (den > 0 ? den : 1));
}

int main(void) {
    ember_token toks[40];
    for (int i = 0; i < 40; i++) toks[i] = TM_FIRST_PIECE + (i * 7) % 20;
    /* Q4_0 first: its gap to its own dequantized model calibrates the others' */
    static const int types[] = {EK_Q4_0, EK_IQ4_NL, EK_IQ4_XS};
    double e_q4_0 = 0;
    for (int t = 0; t < 3; t++) {
        const int type = types[t];
        const char *name = ember_type_name(type);
        gb_buf q = build_typed(type), f = build_typed(EK_F32);
        /* 7 matrices per layer and the output head */
        CHECK(dequantize_into(&f, &q) == 2 * 7 + 1, "%s: matrices dequantized", name);
        ember_model *mr = open_image(&q, EMBER_LOAD_READ, name), *mp = open_image(&q, EMBER_LOAD_MMAP, name),
                    *mf = open_image(&f, EMBER_LOAD_READ, "f32");
        gb_free(&q);
        gb_free(&f);
        if (!mr || !mp || !mf) { ember_model_free(mr); ember_model_free(mp); ember_model_free(mf); continue; }
        const int V = ember_n_vocab(mr);
        float *ref = malloc(sizeof(float) * V), *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
        ember_model_info ir;
        ember_model_get_info(mr, &ir, NULL);
        CHECK(type != EK_IQ4_NL || ir.n_packed == 0, "%s: %d matrices packed, the type has no packed layout", name,
              ir.n_packed);
        static const int nbs[] = {1, 40, 40, 7}, ths[] = {1, 1, 2, 2};
        int ok = eval_last(mp, toks, 40, 1, 1, a) == EMBER_OK && eval_last(mf, toks, 40, 1, 1, ref) == EMBER_OK;
        for (int v = 0; v < 4 && ok; v++) {
            if (eval_last(mr, toks, 40, nbs[v], ths[v], b) != EMBER_OK) { ok = 0; break; }
            CHECK(memcmp(a, b, sizeof(float) * V) == 0, "%s nb %d threads %d: logits differ from mapped nb 1", name,
                  nbs[v], ths[v]);
        }
        if (ok) {
            int finite = 1;
            for (int i = 0; i < V; i++) finite &= isfinite(a[i]) != 0;
            const double e = rel_rms(a, ref, V);
            printf("%s: logits vs the dequantized model in f32: rel rms %.5f\n", name, e);
            if (type == EK_Q4_0) e_q4_0 = e;
            /* only the activations' 8-bit quantization (Q8_0 / Q8_K, steps of
             * amax/127) differs, which this random model amplifies to ~3% for
             * every type; a decoding error (a wrong level, scale or element
             * order) is of the order of the logits themselves */
            CHECK(finite && e < 0.1 && (type == EK_Q4_0 || e < 2 * e_q4_0),
                  "%s: logits vs the dequantized model in f32: rel rms %.5f (q4_0 %.5f)", name, e, e_q4_0);
        }
        free(ref); free(a); free(b);
        ember_model_free(mr); ember_model_free(mp); ember_model_free(mf);
    }
    return test_summary("test_iq4_model");
}
