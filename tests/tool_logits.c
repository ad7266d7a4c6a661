/* tool_logits - evaluate tokens with ember and dump every position's logits.
 *
 *   tool_logits MODEL.gguf OUT.f32 [options] TOKEN_ID...
 *   tool_logits MODEL.gguf OUT.f32 [options] --tokens-file FILE
 *
 * options: --kv f32|f16 (default f32), --batch N (n_batch; 1 = token by token,
 *          default: the library's), --threads N (default: the library's),
 *          --ctx N (n_ctx; default: the number of tokens, at least 1).
 * FILE holds token ids separated by spaces, commas, newlines or brackets.
 * OUT receives n_tokens * n_vocab little-endian float32 (row i predicts the
 * token after token i).  Uses only the public API.  Errors: stderr, exit 1.
 */
#include "ember.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *fmt, const char *arg) {
    fprintf(stderr, "tool_logits: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return 1;
}

static int parse_int(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return 0;
    *out = v;
    return 1;
}

static int push(ember_token **toks, int *n, int *cap, long v) {
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 256;
        ember_token *t = realloc(*toks, (size_t)nc * sizeof **toks);
        if (!t) return 0;
        *toks = t;
        *cap = nc;
    }
    (*toks)[(*n)++] = (ember_token)v;
    return 1;
}

static int read_tokens_file(const char *path, ember_token **toks, int *n, int *cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return die("cannot open tokens file %s", path);
    char word[64];
    size_t len = 0;
    int c, rc = 0;
    for (;;) {
        c = fgetc(f);
        if (c != EOF && (isdigit(c) || c == '-')) {
            if (len + 1 >= sizeof word) { rc = die("token id too long in %s", path); break; }
            word[len++] = (char)c;
            continue;
        }
        if (len) {
            long v;
            word[len] = 0;
            len = 0;
            if (!parse_int(word, &v)) { rc = die("bad token id '%s'", word); break; }
            if (!push(toks, n, cap, v)) { rc = die("%s", "out of memory"); break; }
        }
        if (c == EOF) break;
        if (!(isspace(c) || c == ',' || c == '[' || c == ']')) {
            rc = die("unexpected character in %s", path);
            break;
        }
    }
    fclose(f);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.gguf OUT.f32 [--kv f32|f16] [--batch N] [--threads N] "
                        "[--ctx N] (TOKEN_ID... | --tokens-file FILE)\n", argv[0]);
        return 1;
    }
    const char *model_path = argv[1], *out_path = argv[2];
    ember_token *toks = NULL;
    int n = 0, cap = 0;
    long batch = 0, threads = 0, n_ctx = 0;
    ember_kv_type kv = EMBER_KV_F32;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        long v;
        if (!strcmp(a, "--kv") || !strcmp(a, "--batch") || !strcmp(a, "--threads") ||
            !strcmp(a, "--ctx") || !strcmp(a, "--tokens-file")) {
            if (i + 1 >= argc) return die("%s needs a value", a);
            const char *val = argv[++i];
            if (!strcmp(a, "--kv")) {
                if (!strcmp(val, "f32")) kv = EMBER_KV_F32;
                else if (!strcmp(val, "f16")) kv = EMBER_KV_F16;
                else return die("--kv must be f32 or f16, not %s", val);
            } else if (!strcmp(a, "--tokens-file")) {
                if (read_tokens_file(val, &toks, &n, &cap)) { free(toks); return 1; }
            } else {
                if (!parse_int(val, &v) || v < 0 || v > 1000000) return die("bad number %s", val);
                if (!strcmp(a, "--batch")) batch = v;
                else if (!strcmp(a, "--threads")) threads = v;
                else n_ctx = v;
            }
        } else if (parse_int(a, &v)) {
            if (!push(&toks, &n, &cap, v)) return die("%s", "out of memory");
        } else {
            free(toks);
            return die("unknown argument %s", a);
        }
    }
    if (n == 0) { free(toks); return die("%s", "no tokens given"); }

    ember_model *model = NULL;
    ember_error err;
    memset(&err, 0, sizeof err);
    int rc = ember_model_open_file(model_path, NULL, &model, &err);
    if (rc != EMBER_OK) {
        fprintf(stderr, "tool_logits: cannot open %s: %s (%s)\n", model_path,
                err.message, ember_status_string(rc));
        free(toks);
        return 1;
    }
    int n_vocab = ember_n_vocab(model);
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = n_ctx ? (int)n_ctx : n;
    cp.kv_type = kv;
    if (batch) cp.n_batch = (int)batch;
    if (threads) cp.n_threads = (int)threads;
    ember_context *ctx = NULL;
    rc = ember_context_create(model, &cp, &ctx, &err);
    if (rc != EMBER_OK) {
        fprintf(stderr, "tool_logits: cannot create context: %s (%s)\n", err.message,
                ember_status_string(rc));
        ember_model_free(model);
        free(toks);
        return 1;
    }
    float *logits = malloc((size_t)n * (size_t)n_vocab * sizeof *logits);
    if (!logits) {
        ember_context_free(ctx);
        ember_model_free(model);
        free(toks);
        return die("%s", "out of memory");
    }
    rc = ember_eval(ctx, toks, n, logits);
    int status = 0;
    if (rc != EMBER_OK) {
        fprintf(stderr, "tool_logits: ember_eval failed: %s (%s)\n", ember_context_errmsg(ctx),
                ember_status_string(rc));
        status = 1;
    } else {
        FILE *f = fopen(out_path, "wb");
        if (!f) {
            status = die("cannot create %s", out_path);
        } else {
            size_t cnt = (size_t)n * (size_t)n_vocab;
            if (fwrite(logits, sizeof *logits, cnt, f) != cnt) status = die("cannot write %s", out_path);
            if (fclose(f) != 0 && !status) status = die("cannot write %s", out_path);
        }
    }
    free(logits);
    ember_context_free(ctx);
    ember_model_free(model);
    free(toks);
    return status;
}
