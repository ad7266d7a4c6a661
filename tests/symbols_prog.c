/* symbols_prog.c - a program that defines the names of ggml, gguf,
 * llama.cpp and whisper.cpp functions (with their own, different
 * signatures) and of ember's internal functions, and also runs ember.  It
 * must link against libember.a, libember.so and the single file without a
 * "multiple definition", each call must reach its own definition here, and
 * ember must still open a model and generate (tests/test_symbols.sh).
 *   symbols_prog MODEL.gguf PROMPT N_PREDICT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ember.h"

struct gguf_context { int dummy; };
struct ggml_context { int dummy; };

/* ggml's gguf API (gguf.h) */
long gguf_find_tensor(const struct gguf_context *ctx, const char *name) { (void)ctx; (void)name; return -101; }
struct gguf_context *gguf_init_from_file(const char *fname, int params) { (void)fname; (void)params; return NULL; }
long gguf_get_n_tensors(const struct gguf_context *ctx) { (void)ctx; return -102; }
long gguf_find_key(const struct gguf_context *ctx, const char *key) { (void)ctx; (void)key; return -103; }
long gguf_get_n_kv(const struct gguf_context *ctx) { (void)ctx; return -104; }
const char *gguf_get_val_str(const struct gguf_context *ctx, long i) { (void)ctx; (void)i; return "prog"; }
unsigned gguf_get_val_u32(const struct gguf_context *ctx, long i) { (void)ctx; (void)i; return 105; }
unsigned gguf_get_version(const struct gguf_context *ctx) { (void)ctx; return 106; }
size_t gguf_get_alignment(const struct gguf_context *ctx) { (void)ctx; return 107; }
const char *gguf_get_tensor_name(const struct gguf_context *ctx, long i) { (void)ctx; (void)i; return "prog"; }
size_t gguf_get_tensor_offset(const struct gguf_context *ctx, long i) { (void)ctx; (void)i; return 108; }
void gguf_free(struct gguf_context *ctx) { (void)ctx; }
/* ember's GGUF reader as it was once named */
int gguf_open(int a) { return a + 109; }
void gguf_close(int *p) { if (p) *p = 110; }
int gguf_get_u32(int a) { return a + 111; }
/* ggml */
struct ggml_context *ggml_init(int params) { (void)params; return NULL; }
void ggml_free(struct ggml_context *ctx) { (void)ctx; }
float ggml_fp16_to_fp32(int h) { return (float)h + 0.5f; }
int ggml_fp32_to_fp16(double f) { return (int)f + 112; }
size_t ggml_type_size(int type) { return (size_t)type + 113; }
long ggml_blck_size(int type) { return type + 114; }
size_t ggml_row_size(int type, long n) { return (size_t)(type + n); }
const char *ggml_type_name(int type) { (void)type; return "prog"; }
/* llama.cpp and whisper.cpp */
void *llama_model_load(const char *path, int params) { (void)path; (void)params; return NULL; }
int llama_tokenize(int a) { return a + 115; }
void *whisper_init(int params) { (void)params; return NULL; }
void whisper_free(void *ctx) { (void)ctx; }
/* ember's internal names */
int egf_open(int a) { return a + 116; }
int egf_find_tensor(int a) { return a + 117; }
int ek_matmul(int a) { return a + 118; }
int etok_create(int a) { return a + 119; }
int em_forward(int a) { return a + 120; }
int ec_malloc(int a) { return a + 121; }
int et_pool_create(int a) { return a + 122; }
int ek_iq4nl_values = 123;

static int append_piece(void *user_data, ember_token token, const char *text, size_t len) {
    (void)token;
    strncat((char *)user_data, text, len);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s MODEL.gguf PROMPT N_PREDICT\n", argv[0]); return 2; }
    /* each name reaches the definition above */
    int mine = gguf_find_tensor(NULL, "x") == -101 && gguf_init_from_file("x", 0) == NULL &&
               gguf_get_n_tensors(NULL) == -102 && gguf_find_key(NULL, "k") == -103 &&
               gguf_get_n_kv(NULL) == -104 && !strcmp(gguf_get_val_str(NULL, 0), "prog") &&
               gguf_get_val_u32(NULL, 0) == 105 && gguf_get_version(NULL) == 106 &&
               gguf_get_alignment(NULL) == 107 && !strcmp(gguf_get_tensor_name(NULL, 0), "prog") &&
               gguf_get_tensor_offset(NULL, 0) == 108 && gguf_open(0) == 109 && gguf_get_u32(0) == 111 &&
               ggml_init(0) == NULL && ggml_fp16_to_fp32(1) == 1.5f && ggml_fp32_to_fp16(0.0) == 112 &&
               ggml_type_size(0) == 113 && ggml_blck_size(0) == 114 && ggml_row_size(1, 2) == 3 &&
               !strcmp(ggml_type_name(0), "prog") && llama_model_load("x", 0) == NULL &&
               llama_tokenize(0) == 115 && whisper_init(0) == NULL && egf_open(0) == 116 &&
               egf_find_tensor(0) == 117 && ek_matmul(0) == 118 && etok_create(0) == 119 &&
               em_forward(0) == 120 && ec_malloc(0) == 121 && et_pool_create(0) == 122 &&
               ek_iq4nl_values == 123;
    int closed = 0;
    gguf_close(&closed);
    gguf_free(NULL); ggml_free(NULL); whisper_free(NULL);
    if (!mine || closed != 110) { fprintf(stderr, "a call did not reach the program's own definition\n"); return 1; }

    ember_model *model; ember_context *ctx; ember_sampler *smp; ember_error err;
    if (ember_model_open_file(argv[1], NULL, &model, &err) != EMBER_OK) { fprintf(stderr, "open: %s\n", err.message); return 1; }
    if (ember_context_create(model, NULL, &ctx, &err) != EMBER_OK) { fprintf(stderr, "context: %s\n", err.message); return 1; }
    ember_sampler_params sp = ember_sampler_default_params();
    sp.temperature = 0.0f;
    if (ember_sampler_create(model, &sp, &smp) != EMBER_OK) { fprintf(stderr, "sampler\n"); return 1; }
    static char text[1 << 16];
    if (ember_generate_text(ctx, smp, argv[2], atoi(argv[3]), append_piece, text, NULL) != EMBER_OK) {
        fprintf(stderr, "generate: %s\n", ember_context_errmsg(ctx)); return 1;
    }
    printf("%s\n", text);
    ember_sampler_free(smp); ember_context_free(ctx); ember_model_free(model);
    return 0;
}
