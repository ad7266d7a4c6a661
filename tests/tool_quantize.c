/* tool_quantize - ember's reference quantizer on raw rows (white-box).
 *
 *   tool_quantize TYPE N < rows.f32 > rows.bin
 *
 * TYPE is a ggml type name as ember names it (q4_0, q8_0, iq4_nl, iq4_xs,
 * ...), N the row length.  Reads little-endian float32 rows of N elements
 * from stdin until it ends and writes each row quantized by ek_quantize_row
 * (for iq4_nl / iq4_xs the bytes llama-quantize writes without an imatrix).
 * Errors: stderr, exit 1. */
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: tool_quantize TYPE N < rows.f32 > rows.bin\n"); return 1; }
    int type = -1;
    for (int t = 0; t < EK_TYPE_COUNT; t++)
        if (ek_type_get(t) && !strcmp(ek_type_get(t)->name, argv[1])) type = t;
    const long n = atol(argv[2]);
    const size_t rb = type >= 0 && n > 0 ? (size_t)ek_row_bytes(type, (uint64_t)n) : 0;
    if (!rb) { fprintf(stderr, "tool_quantize: bad type %s or row length %s\n", argv[1], argv[2]); return 1; }
    float *x = malloc(sizeof(float) * (size_t)n);
    unsigned char *q = malloc(rb);
    if (!x || !q) { fprintf(stderr, "tool_quantize: out of memory\n"); return 1; }
    size_t got;
    while ((got = fread(x, sizeof(float), (size_t)n, stdin)) == (size_t)n) {
        if (ek_quantize_row(type, x, q, n) != 0) { fprintf(stderr, "tool_quantize: cannot make %s\n", argv[1]); return 1; }
        if (fwrite(q, 1, rb, stdout) != rb) { fprintf(stderr, "tool_quantize: write error\n"); return 1; }
    }
    if (got != 0) { fprintf(stderr, "tool_quantize: input is not whole rows\n"); return 1; }
    free(x);
    free(q);
    return 0;
}
