/* tool_tokenize - tokenize many texts with one model load (for the fixture
 * tests in test_tokenizer_gguf.py).  Uses only the public API.
 *   tool_tokenize MODEL.gguf IN OUT [--special]
 *   tool_tokenize MODEL.gguf --eog      (prints bos, eos and every end-of-generation id)
 * IN holds records (uint32 little-endian length, bytes).  OUT gets one line
 * per record: the ids separated by spaces, a tab, then the hex of
 * ember_detokenize(ids). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ember.h"

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[2], "--eog")) {
        ember_model_params mp = ember_model_default_params();
        mp.vocab_only = 1;
        ember_model *m;
        ember_error err;
        if (ember_model_open_file(argv[1], &mp, &m, &err)) { fprintf(stderr, "%s\n", err.message); return 1; }
        printf("bos %d eos %d eog", ember_token_bos(m), ember_token_eos(m));
        for (int i = 0; i < ember_n_vocab(m); i++)
            if (ember_token_is_eog(m, i)) printf(" %d", i);
        printf("\n");
        ember_model_free(m);
        return 0;
    }
    if (argc < 4) { fprintf(stderr, "usage: tool_tokenize MODEL IN OUT [--special] | MODEL --eog\n"); return 2; }
    int flags = argc > 4 && !strcmp(argv[4], "--special") ? EMBER_TOKENIZE_SPECIAL : 0;
    ember_model_params mp = ember_model_default_params();
    mp.vocab_only = 1;
    ember_model *m;
    ember_error err;
    if (ember_model_open_file(argv[1], &mp, &m, &err)) { fprintf(stderr, "%s\n", err.message); return 1; }
    FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
    if (!in || !out) { fprintf(stderr, "cannot open files\n"); return 1; }
    unsigned char lenb[4];
    while (fread(lenb, 1, 4, in) == 4) {
        size_t len = lenb[0] | lenb[1] << 8 | lenb[2] << 16 | (size_t)lenb[3] << 24;
        char *text = malloc(len + 1);
        if (!text || fread(text, 1, len, in) != len) { fprintf(stderr, "bad input\n"); return 1; }
        size_t n = 0, dl = 0;
        ember_tokenize(m, text, len, flags, NULL, 0, &n, NULL);
        ember_token *ids = malloc(sizeof *ids * (n + 1));
        if (ember_tokenize(m, text, len, flags, ids, n, &n, &err)) { fprintf(stderr, "tokenize failed: %s\n", err.message); return 1; }
        for (size_t i = 0; i < n; i++) fprintf(out, i ? " %d" : "%d", ids[i]);
        ember_detokenize(m, ids, (int)n, flags, NULL, 0, &dl, NULL);
        char *dec = malloc(dl + 1);
        if (ember_detokenize(m, ids, (int)n, flags, dec, dl + 1, NULL, &err)) { fprintf(stderr, "detokenize failed: %s\n", err.message); return 1; }
        fputc('\t', out);
        for (size_t i = 0; i < dl; i++) fprintf(out, "%02x", (unsigned char)dec[i]);
        fputc('\n', out);
        free(dec);
        free(ids);
        free(text);
    }
    fclose(in);
    fclose(out);
    ember_model_free(m);
    return 0;
}
