/* bench_kernels.c - matmul micro-benchmark, one thread.
 *   cc -O2 -Iinclude -Isrc tools/bench_kernels.c build/obj/libember-internal.a -lm -lpthread
 *   ./a.out [set-name|all] [type-name|all] [rows] [n] [nb]
 * For a 5632 x 2048 weight matrix (TinyLlama's FFN) of each type: nb = 1
 * (generation) as GB/s of weights streamed, and nb = 64 (prompt) as
 * GFLOP/s (2 * rows * n * nb); the same for the packed layout where the
 * set has a packed kernel.  The matrix (>= 13 MB) is larger than the
 * caches, as in a real model. */
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double bk_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: the machine is shared */
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const int rows = argc > 3 ? atoi(argv[3]) : 5632, n = argc > 4 ? atoi(argv[4]) : 2048,
              nbig = argc > 5 ? atoi(argv[5]) : 64;
    static const int types[] = {EK_F32, EK_F16, EK_BF16, EK_Q8_0, EK_Q4_0, EK_Q4_1, EK_Q5_0, EK_Q5_1,
                                EK_Q2_K, EK_Q3_K, EK_Q4_K, EK_Q5_K, EK_Q6_K, EK_IQ4_NL, EK_IQ4_XS};
    const ek_kernels *sets[8];
    int nsets = ek_kernels_available(sets, 8);
    float *x = malloc(sizeof(float) * n * nbig), *y = malloc(sizeof(float) * rows * nbig);
    for (int i = 0; i < n * nbig; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    printf("%-8s %-6s %10s nb=%d GFLOP/s\n", "set", "type", "nb=1 GB/s", nbig);
    for (int s = 0; s < nsets; s++) {
        const ek_kernels *k = sets[s];
        if (argc > 1 && strcmp(argv[1], "all") && strcmp(argv[1], ek_kernels_name(k))) continue;
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            int type = types[t];
            if (argc > 2 && strcmp(argv[2], "all") && strcmp(argv[2], ek_type_get(type)->name)) continue;
            size_t wrb = (size_t)ek_row_bytes(type, n), xrb = ek_act_row_bytes(type, n);
            size_t xbb = ek_batch_bytes(k, type, n, nbig);
            unsigned char *W = malloc(wrb * rows), *X = malloc(xbb > xrb ? xbb : xrb), *Xb = malloc(xbb);
            for (size_t i = 0; i < wrb * rows; i++) W[i] = (unsigned char)rand();
            /* sane scales: quantize real rows where ember can, else keep random bytes
             * (speed does not depend on the values) */
            float *row = malloc(sizeof(float) * n);
            for (int r = 0; r < rows; r++) {
                for (int i = 0; i < n; i++) row[i] = (float)rand() / RAND_MAX - 0.5f;
                ek_quantize_row(type, row, W + (size_t)r * wrb, n);
            }
            free(row);
            ek_convert_act(k, type, x, X, n);
            ek_convert_batch(k, type, x, nbig, Xb, n);
            /* nb = 1: best of several passes over the whole matrix */
            double best = 1e9;
            int reps = strcmp(ek_kernels_name(k), "scalar") ? 20 : 2;
            for (int rep = 0; rep < reps; rep++) {
                double t0 = bk_now();
                ek_matmul(k, type, W, n, X, 1, y, rows, 0, rows);
                double dt = bk_now() - t0;
                if (dt < best) best = dt;
            }
            double gbs = wrb * rows / best * 1e-9;
            double bestb = 1e9;
            for (int rep = 0; rep < (reps > 2 ? 3 : 1); rep++) {
                double t0 = bk_now();
                ek_matmul(k, type, W, n, Xb, nbig, y, rows, 0, rows);
                double dt = bk_now() - t0;
                if (dt < bestb) bestb = dt;
            }
            double gflops = 2.0 * rows * n * nbig / bestb * 1e-9;
            printf("%-8s %-6s %10.1f %12.1f", ek_kernels_name(k), ek_type_get(type)->name, gbs, gflops);
            /* the packed layout (kernels.h), where set k runs it */
            if (ek_pack_wanted(k, type, rows)) {
                void *scratch = malloc(ek_pack_scratch_bytes(type, n));
                ek_pack_rows(type, W, n, rows, scratch);
                free(scratch);
                double bp = 1e9, bpb = 1e9;
                for (int rep = 0; rep < reps; rep++) {
                    double t0 = bk_now();
                    ek_matmul_packed(k, type, W, n, X, 1, y, rows, 0, rows);
                    double dt = bk_now() - t0;
                    if (dt < bp) bp = dt;
                }
                for (int rep = 0; rep < 3; rep++) {
                    double t0 = bk_now();
                    ek_matmul_packed(k, type, W, n, Xb, nbig, y, rows, 0, rows);
                    double dt = bk_now() - t0;
                    if (dt < bpb) bpb = dt;
                }
                printf("   packed %10.1f %12.1f", wrb * rows / bp * 1e-9, 2.0 * rows * n * nbig / bpb * 1e-9);
            }
            printf("\n");
            fflush(stdout);
            free(W);
            free(X);
            free(Xb);
        }
    }
    free(x);
    free(y);
    return 0;
}
