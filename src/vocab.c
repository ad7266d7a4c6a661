/* vocab.c - the tokenizer a GGUF file describes in its tokenizer.* keys
 * (tokenizer.ggml.model, .pre, .tokens, .scores, .token_type, .merges,
 * special token ids and flags), checked and handed to the tokenizer.
 * Knows GGUF and the tokenizer; nothing of models. */
#include "vocab.h"

#include <string.h>

typedef struct em_vocab_src {
    const egf_file *f;
    const egf_kv *tokens, *scores, *types, *merges;
} em_vocab_src;

static void em_vocab_text(void *ud, int32_t id, const char **p, size_t *n) {
    em_vocab_src *v = (em_vocab_src *)ud;
    egf_str s = {"", 0};
    egf_arr_str(v->f, v->tokens, (uint64_t)id, &s);
    *p = s.ptr;
    *n = (size_t)s.len;
}

static float em_vocab_score(void *ud, int32_t id) {
    em_vocab_src *v = (em_vocab_src *)ud;
    float x = 0;
    egf_arr_f32(v->scores, (uint64_t)id, &x);
    return x;
}

static int em_vocab_type(void *ud, int32_t id) {
    em_vocab_src *v = (em_vocab_src *)ud;
    int64_t x = ETOK_T_NORMAL;
    egf_arr_int(v->types, (uint64_t)id, &x);
    return (int)x;
}

static void em_vocab_merge(void *ud, int32_t i, const char **p, size_t *n) {
    em_vocab_src *v = (em_vocab_src *)ud;
    egf_str s = {"", 0};
    egf_arr_str(v->f, v->merges, (uint64_t)i, &s);
    *p = s.ptr;
    *n = (size_t)s.len;
}

static int32_t em_token_id(const egf_file *f, const char *key, int32_t n_vocab) {
    uint32_t v;
    if (egf_get_u32(f, key, &v) != EMBER_OK || v >= (uint32_t)n_vocab) return -1;
    return (int32_t)v;
}

static int em_array_kv(const egf_file *f, const char *key, int elem_kind, uint64_t n_expect,
                       int required, const egf_kv **out, char *err, size_t errlen) {
    const egf_kv *kv = egf_find_kv(f, key);
    *out = NULL;
    if (!kv) {
        if (required) return ec_errorf(err, errlen, EMBER_ERR_MISSING, "missing metadata key '%s'", key);
        return EMBER_OK;
    }
    int ok_type = kv->type == GGUF_ARRAY &&
        (elem_kind == 's' ? kv->arr_type == GGUF_STRING
         : elem_kind == 'f' ? (kv->arr_type == GGUF_FLOAT32 || kv->arr_type == GGUF_FLOAT64)
         : (kv->arr_type <= GGUF_INT32 && kv->arr_type != GGUF_FLOAT32) ||
           kv->arr_type == GGUF_UINT64 || kv->arr_type == GGUF_INT64);
    if (!ok_type)
        return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "metadata '%s' has the wrong type", key);
    if (n_expect && kv->arr_n != n_expect)
        return ec_errorf(err, errlen, EMBER_ERR_SHAPE, "metadata '%s' has %llu entries, expected %llu",
                         key, (unsigned long long)kv->arr_n, (unsigned long long)n_expect);
    *out = kv;
    return EMBER_OK;
}

int em_vocab_load(const egf_file *f, const ember_allocator *a, etok **out, int *max_piece_bytes,
                  char *err, size_t errlen) {
    egf_str model_name, pre = {"default", 7};
    if (egf_get_str(f, "tokenizer.ggml.model", &model_name) != EMBER_OK)
        return ec_errorf(err, errlen, EMBER_ERR_MISSING, "missing metadata key 'tokenizer.ggml.model'");
    egf_get_str(f, "tokenizer.ggml.pre", &pre);

    etok_desc d;
    memset(&d, 0, sizeof d);
    em_vocab_src src = {f, NULL, NULL, NULL, NULL};
    int rc;
    if ((rc = em_array_kv(f, "tokenizer.ggml.tokens", 's', 0, 1, &src.tokens, err, errlen))) return rc;
    if (src.tokens->arr_n == 0 || src.tokens->arr_n > (1u << 24))
        return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer.ggml.tokens has %llu entries",
                         (unsigned long long)src.tokens->arr_n);
    d.n_vocab = (int32_t)src.tokens->arr_n;
    if ((rc = em_array_kv(f, "tokenizer.ggml.scores", 'f', src.tokens->arr_n, 0, &src.scores, err, errlen)) ||
        (rc = em_array_kv(f, "tokenizer.ggml.token_type", 'i', src.tokens->arr_n, 0, &src.types, err, errlen)))
        return rc;

    if (egf_str_eq(model_name, "llama")) {
        d.kind = ETOK_SPM;
        d.pre = ETOK_PRE_DEFAULT;
        d.add_bos = 1;
        d.add_space_prefix = 1;
    } else if (egf_str_eq(model_name, "gpt2")) {
        d.kind = ETOK_BPE;
        int id = etok_pre_lookup(pre.ptr, (size_t)pre.len);
        if (id < 0)
            return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED,
                             "tokenizer pre-tokenizer '%.*s' is not supported (tokenizer.ggml.pre)",
                             (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
        d.pre = id;
        if ((rc = em_array_kv(f, "tokenizer.ggml.merges", 's', 0, 1, &src.merges, err, errlen))) return rc;
        if (src.merges->arr_n > (1u << 24))
            return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "too many merges");
        d.n_merges = (int32_t)src.merges->arr_n;
        d.merge_text = em_vocab_merge;
        /* llama.cpp's defaults when the file has no add_bos_token: BOS for
         * llama-bpe (Llama 3) and tekken, none for the others (qwen2, gpt-2, ...) */
        d.add_bos = id == ETOK_PRE_LLAMA3 || id == ETOK_PRE_TEKKEN;
    } else {
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "tokenizer model '%.*s' is not supported (llama, gpt2)",
                         (int)(model_name.len > 32 ? 32 : model_name.len), model_name.ptr);
    }
    d.ud = &src;
    d.token_text = em_vocab_text;
    d.token_score = src.scores ? em_vocab_score : NULL;
    d.token_type = src.types ? em_vocab_type : NULL;
    d.bos = em_token_id(f, "tokenizer.ggml.bos_token_id", d.n_vocab);
    d.eos = em_token_id(f, "tokenizer.ggml.eos_token_id", d.n_vocab);
    d.eot = em_token_id(f, "tokenizer.ggml.eot_token_id", d.n_vocab);
    d.unk = em_token_id(f, "tokenizer.ggml.unknown_token_id", d.n_vocab);
    d.pad = em_token_id(f, "tokenizer.ggml.padding_token_id", d.n_vocab);
    d.eom_plus1 = em_token_id(f, "tokenizer.ggml.eom_token_id", d.n_vocab) + 1;
    int b;
    if (egf_get_bool(f, "tokenizer.ggml.add_bos_token", &b) == EMBER_OK) d.add_bos = b;
    if (egf_get_bool(f, "tokenizer.ggml.add_eos_token", &b) == EMBER_OK) d.add_eos = b;
    if (egf_get_bool(f, "tokenizer.ggml.add_space_prefix", &b) == EMBER_OK) d.add_space_prefix = b;

    rc = etok_create(&d, a, out, err, errlen);
    if (rc != EMBER_OK) return rc;

    /* The longest piece any token decodes to sizes the streaming buffers. */
    int longest = 0;
    for (int32_t i = 0; i < d.n_vocab; i++) {
        int n = etok_piece(*out, i, i, ETOK_PARSE_SPECIAL, NULL, 0);
        if (n > longest) longest = n;
    }
    *max_piece_bytes = longest;
    return EMBER_OK;
}
