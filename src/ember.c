/* ember.c - the public API: opening models (mapped, read or from memory),
 * contexts, evaluation, streaming generation and perplexity. */
#include "api.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int ember_default_threads(void) {
    int n = ep_cpu_count();
    return n > 256 ? 256 : n;
}

/* ---- status ---------------------------------------------------------------- */

const char *ember_version(void) { return EMBER_VERSION; }

const char *ember_status_string(ember_status status) {
    switch (status) {
    case EMBER_OK: return "ok";
    case EMBER_ERR_INVALID_ARG: return "invalid argument";
    case EMBER_ERR_NOMEM: return "out of memory";
    case EMBER_ERR_IO: return "input/output error";
    case EMBER_ERR_BAD_MAGIC: return "not a GGUF file";
    case EMBER_ERR_VERSION: return "unsupported GGUF version";
    case EMBER_ERR_TRUNCATED: return "file is truncated";
    case EMBER_ERR_CORRUPT: return "file is corrupt";
    case EMBER_ERR_UNSUPPORTED: return "unsupported model";
    case EMBER_ERR_SHAPE: return "tensor shapes are inconsistent";
    case EMBER_ERR_MISSING: return "required key or tensor is missing";
    case EMBER_ERR_CONTEXT_FULL: return "context is full";
    case EMBER_ERR_BAD_TOKEN: return "token id out of range";
    case EMBER_ERR_NONFINITE: return "model produced non-finite logits";
    case EMBER_ERR_BUFFER_TOO_SMALL: return "buffer too small";
    case EMBER_ERR_CANCELLED: return "cancelled";
    case EMBER_ERR_TOO_SHORT: return "input too short";
    case EMBER_ERR_GRAMMAR: return "the grammar allows no token";
    default: return "unknown status";
    }
}

static ember_status ember_fail(ember_error *err, ember_status code, const char *msg) {
    return ec_fail(err, code, "%s", msg ? msg : "");
}

/* ---- model ----------------------------------------------------------------- */

ember_model_params ember_model_default_params(void) {
    ember_model_params p;
    memset(&p, 0, sizeof p);
    p.load_mode = EMBER_LOAD_DEFAULT;
    return p;
}

/* The kernel set params ask for (ember_model_params.kernels), or an error
 * naming it and the sets this CPU runs. */
static ember_status ember_pick_kernels(const ember_model_params *params, const ek_kernels **k, ember_error *err) {
    const char *name = params ? params->kernels : NULL;
    int known;
    *k = ek_kernels_find(name, &known);
    if (*k) return EMBER_OK;
    char msg[256], have[96] = "";
    const ek_kernels *all[8];
    int n = ek_kernels_available(all, 8);
    for (int i = 0; i < n && i < 8; i++)
        snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", i ? ", " : "", ek_kernels_name(all[i]));
    if (known)
        snprintf(msg, sizeof msg, "kernel set '%.40s' is not available on this CPU (it runs: auto, %s)", name, have);
    else
        snprintf(msg, sizeof msg, "unknown kernel set '%.40s' (this CPU runs: auto, %s)", name, have);
    return ember_fail(err, known ? EMBER_ERR_UNSUPPORTED : EMBER_ERR_INVALID_ARG, msg);
}

/* Take a GGUF image that is already in memory; on success the model owns
 * region (if any). */
static ember_status ember_model_from_image(const void *data, size_t size, const ember_model_params *params,
                                           const ep_region *region, int mode, ember_model **out,
                                           ember_error *err) {
    const ember_allocator *user = params ? params->allocator : NULL;
    char msg[256] = "";
    const ek_kernels *kernels;
    ember_status rk = ember_pick_kernels(params, &kernels, err);
    if (rk != EMBER_OK) return rk;
    ember_model *model = (ember_model *)ec_calloc(user, 1, sizeof *model);
    if (!model) return ember_fail(err, EMBER_ERR_NOMEM, "out of memory");
    if (user) { model->alloc = *user; model->a = &model->alloc; }
    egf_file *f = NULL;
    int rc = egf_open(data, size, model->a, &f, msg, sizeof msg);
    if (rc == EMBER_OK) {
        /* a read-in copy is ours to rearrange; a mapping or the caller's buffer is not */
        rc = em_model_init(&model->m, f, model->a, kernels, params ? params->vocab_only : 0, mode == EMBER_LOAD_READ, msg,
                           sizeof msg);
        if (rc != EMBER_OK) egf_close(f);
    }
    if (rc != EMBER_OK) {
        ec_free(user, model);
        return ember_fail(err, (ember_status)rc, msg);
    }
    /* One pool of threads for every context of the model: N contexts must
     * not start N pools. */
    if (!model->m.vocab_only && (rc = et_pool_create(model->a, ember_default_threads(), &model->pool)) != EMBER_OK) {
        em_model_free(&model->m);
        ec_free(user, model);
        return ember_fail(err, (ember_status)rc, "out of memory starting threads");
    }
    if (region) model->region = *region;
    model->load_mode = mode;
    egf_str s;
    if (egf_get_str(f, "general.architecture", &s) == EMBER_OK)
        snprintf(model->arch, sizeof model->arch, "%.*s", (int)(s.len < 31 ? s.len : 31), s.ptr);
    if (egf_get_str(f, "general.name", &s) == EMBER_OK)
        snprintf(model->name, sizeof model->name, "%.*s", (int)(s.len < 127 ? s.len : 127), s.ptr);
    if (!model->arch[0]) snprintf(model->arch, sizeof model->arch, "%s", "none");
    snprintf(model->tokenizer, sizeof model->tokenizer, "%s", etok_kind(model->m.tok) == ETOK_SPM ? "llama" : "gpt2");
    *out = model;
    return ec_ok(err);
}

ember_status ember_model_open_memory(const void *data, size_t size, const ember_model_params *params,
                            ember_model **out, ember_error *err) {
    if (!out) return ember_fail(err, EMBER_ERR_INVALID_ARG, "out_model is NULL");
    *out = NULL;
    if (!data && size) return ember_fail(err, EMBER_ERR_INVALID_ARG, "data is NULL");
    return ember_model_from_image(data, size, params, NULL, EMBER_LOAD_MMAP, out, err);
}

ember_status ember_model_open_file(const char *path, const ember_model_params *params, ember_model **out,
                          ember_error *err) {
    char msg[300];
    if (!out) return ember_fail(err, EMBER_ERR_INVALID_ARG, "out_model is NULL");
    *out = NULL;
    if (!path) return ember_fail(err, EMBER_ERR_INVALID_ARG, "path is NULL");
    int mode = params ? (int)params->load_mode : EMBER_LOAD_DEFAULT;
    if (mode == EMBER_LOAD_DEFAULT) mode = EMBER_LOAD_READ;
    if (mode != EMBER_LOAD_MMAP && mode != EMBER_LOAD_READ)
        return ember_fail(err, EMBER_ERR_INVALID_ARG, "unknown load mode");
    const ek_kernels *kernels;   /* an unusable set fails before the file is read */
    ember_status rk = ember_pick_kernels(params, &kernels, err);
    if (rk != EMBER_OK) return rk;

    ep_region region;
    ember_status rc = (ember_status)(mode == EMBER_LOAD_MMAP ? ep_file_map(path, &region, msg, sizeof msg)
                                                            : ep_file_read(path, &region, msg, sizeof msg));
    if (rc != EMBER_OK) return ember_fail(err, rc, msg);
    rc = ember_model_from_image(region.data, region.size, params, &region, mode, out, err);
    if (rc != EMBER_OK) ep_region_free(&region);
    return rc;
}

void ember_model_free(ember_model *model) {
    if (!model) return;
    et_pool_free(model->pool);
    em_model_free(&model->m);
    ep_region_free(&model->region);
    const ember_allocator *a = model->a ? &model->alloc : NULL;
    ember_allocator copy;
    if (a) { copy = *a; a = &copy; }
    ec_free(a, model);
}

ember_status ember_model_get_info(const ember_model *model, ember_model_info *out, ember_error *err) {
    if (!model || !out) return ec_fail(err, EMBER_ERR_INVALID_ARG, "%s is NULL", model ? "out" : "model");
    const em_hparams *hp = &model->m.hp;
    memset(out, 0, sizeof *out);
    out->architecture = model->arch;
    out->name = model->name;
    out->tokenizer = model->tokenizer;
    out->n_vocab = hp->n_vocab;
    out->n_ctx_train = hp->n_ctx_train;
    out->n_embd = hp->n_embd;
    out->n_layer = hp->n_layer;
    out->n_head = hp->n_head;
    out->n_head_kv = hp->n_head_kv;
    out->head_dim = hp->head_dim;
    out->n_ff = hp->n_ff;
    out->rope_dim = hp->rope_dim;
    out->rope_freq_base = hp->rope_freq_base;
    out->rms_eps = hp->rms_eps;
    out->tied_output = model->m.tied_output;
    out->file_type = model->m.layers ? model->m.layers[0].wo.type : -1;   /* present in every family */
    out->n_params = model->m.n_params;
    out->weight_bytes = model->m.weight_bytes;
    out->bytes_per_token = model->m.bytes_per_token;
    out->load_mode = model->load_mode;
    out->n_packed = model->m.n_packed;
    out->kernels = ek_kernels_name(model->m.kernels);
    out->n_swa = hp->n_swa;
    for (int l = 0; l < hp->n_layer && model->m.layers; l++) out->n_swa_layers += model->m.layers[l].swa;
    return ec_ok(err);
}

const char *ember_type_name(int type) {
    const ek_type_info *t = ek_type_get(type);
    return t ? t->name : NULL;
}


/* As llama.cpp: a model trained on 131k positions must not take gigabytes
 * of cache just because no size was asked for. */
#define EMBER_DEFAULT_N_CTX 4096
static int ember_default_n_ctx(const ember_model *model) {
    return model->m.hp.n_ctx_train < EMBER_DEFAULT_N_CTX ? model->m.hp.n_ctx_train : EMBER_DEFAULT_N_CTX;
}

uint64_t ember_context_memory_needed(const ember_model *model, int n_ctx, int kv_type, int n_batch) {
    if (!model) return 0;
    if (n_ctx <= 0) n_ctx = ember_default_n_ctx(model);
    if (n_ctx > model->m.hp.n_ctx_train) n_ctx = model->m.hp.n_ctx_train;
    if (n_batch <= 0) n_batch = 64;
    return em_state_bytes(&model->m, n_ctx, kv_type, n_batch, ember_default_threads()) + sizeof(ember_context);
}

static const char *ember_vtype_name(int t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                  "string", "array", "u64", "i64", "f64"};
    return t >= 0 && t <= 12 ? names[t] : "?";
}

ember_status ember_model_meta(const ember_model *model, const char *key, char *buf, size_t size, size_t *out_len,
                              ember_error *err) {
    if (out_len) *out_len = 0;
    if (!model || !key || (!buf && size))
        return ec_fail(err, EMBER_ERR_INVALID_ARG, "%s is NULL", !model ? "model" : !key ? "key" : "buf");
    if (size) buf[0] = 0;
    const egf_kv *kv = egf_find_kv(model->m.gguf, key);
    if (!kv) return ec_fail(err, EMBER_ERR_MISSING, "the model has no metadata key '%.200s'", key);
    const egf_file *f = model->m.gguf;
    egf_str s;
    int64_t iv;
    float fv;
    int bv;
    char num[64];
    switch (kv->type) {
    case GGUF_STRING:   /* the one value that may be long: straight from the file */
        egf_get_str(f, key, &s);
        return ec_put_text(s.ptr, s.len, buf, size, out_len, "the value", err);
    case GGUF_FLOAT32: case GGUF_FLOAT64:
        egf_get_f32(f, key, &fv);
        snprintf(num, sizeof num, "%g", (double)fv);
        break;
    case GGUF_BOOL:
        egf_get_bool(f, key, &bv);
        snprintf(num, sizeof num, "%s", bv ? "true" : "false");
        break;
    case GGUF_ARRAY:
        snprintf(num, sizeof num, "[%s x %llu]", ember_vtype_name(kv->arr_type), (unsigned long long)kv->arr_n);
        break;
    default:
        if (egf_get_i64(f, key, &iv) == EMBER_OK) snprintf(num, sizeof num, "%lld", (long long)iv);
        else snprintf(num, sizeof num, "(%s)", ember_vtype_name(kv->type));
    }
    return ec_put_text(num, strlen(num), buf, size, out_len, "the value", err);
}

/* ---- tokens ---------------------------------------------------------------- */

int ember_n_vocab(const ember_model *model) { return model ? model->m.hp.n_vocab : 0; }
ember_token ember_token_bos(const ember_model *model) { return model ? etok_bos(model->m.tok) : -1; }
ember_token ember_token_eos(const ember_model *model) { return model ? etok_eos(model->m.tok) : -1; }
int ember_token_is_eog(const ember_model *model, ember_token t) { return model ? etok_is_eog(model->m.tok, t) : 0; }

ember_status ember_tokenize(const ember_model *model, const char *text, size_t len, int flags, ember_token *out,
                            size_t cap, size_t *n_out, ember_error *err) {
    if (n_out) *n_out = 0;
    if (!model) return ec_fail(err, EMBER_ERR_INVALID_ARG, "model is NULL");
    if (!text && len) return ec_fail(err, EMBER_ERR_INVALID_ARG, "text is NULL but len is %zu", len);
    if (!out && cap) return ec_fail(err, EMBER_ERR_INVALID_ARG, "out is NULL but cap is %zu", cap);
    /* BOS only where the model asks for it (tokenizer.ggml.add_bos_token),
     * as llama.cpp's add_special. */
    int tf = ((flags & EMBER_TOKENIZE_ADD_BOS) && etok_add_bos(model->m.tok) ? ETOK_ADD_BOS : 0) |
             ((flags & EMBER_TOKENIZE_SPECIAL) ? ETOK_PARSE_SPECIAL : 0);
    const int32_t room = cap > (size_t)INT32_MAX ? INT32_MAX : (int32_t)cap;
    int32_t n = 0;
    int rc = etok_encode(model->m.tok, text ? text : "", len, tf, out, room, &n);
    /* EOS after the text where the model asks for it (add_eos_token), also
     * as llama.cpp's add_special */
    const ember_token eos = etok_eos(model->m.tok);
    if ((flags & EMBER_TOKENIZE_ADD_BOS) && etok_add_eos(model->m.tok) && eos >= 0 &&
        (rc == EMBER_OK || rc == EMBER_ERR_BUFFER_TOO_SMALL)) {
        if (rc == EMBER_OK && n < room) out[n] = eos;
        else rc = EMBER_ERR_BUFFER_TOO_SMALL;
        n++;
    }
    if (rc != EMBER_OK && rc != EMBER_ERR_BUFFER_TOO_SMALL)
        return ec_fail(err, (ember_status)rc, "tokenizing %zu bytes failed: %s", len,
                       ember_status_string((ember_status)rc));
    if (n_out) *n_out = (size_t)n;
    if (rc == EMBER_ERR_BUFFER_TOO_SMALL)
        return ec_fail(err, EMBER_ERR_BUFFER_TOO_SMALL, "the text is %d tokens, the array holds %zu", (int)n, cap);
    return ec_ok(err);
}

ember_status ember_token_to_piece(const ember_model *model, ember_token token, ember_token prev, int flags,
                                  char *buf, size_t size, size_t *out_len, ember_error *err) {
    if (out_len) *out_len = 0;
    if (!model || (!buf && size))
        return ec_fail(err, EMBER_ERR_INVALID_ARG, "%s is NULL", model ? "buf" : "model");
    if (size) buf[0] = 0;
    if (token < 0 || token >= model->m.hp.n_vocab)
        return ec_fail(err, EMBER_ERR_BAD_TOKEN, "token %d is outside the vocabulary (0..%d)", (int)token,
                       model->m.hp.n_vocab - 1);
    /* the piece's first size-1 bytes, then the NUL */
    int n = etok_piece(model->m.tok, token, prev, (flags & EMBER_TOKENIZE_SPECIAL) ? ETOK_PARSE_SPECIAL : 0,
                       size > 1 ? buf : NULL, size ? size - 1 : 0);
    if (n < 0) return ec_fail(err, (ember_status)n, "token %d has no text", (int)token);
    if (size) buf[(size_t)n < size ? (size_t)n : size - 1] = 0;
    if (out_len) *out_len = (size_t)n;
    if ((size_t)n < size) return ec_ok(err);
    return ec_fail(err, EMBER_ERR_BUFFER_TOO_SMALL, "the piece needs %d bytes (%d and the NUL), the buffer holds %zu",
                   n + 1, n, size);
}

ember_status ember_detokenize(const ember_model *model, const ember_token *tokens, int n, int flags, char *buf,
                              size_t size, size_t *out_len, ember_error *err) {
    if (out_len) *out_len = 0;
    if (!model || (!tokens && n) || (!buf && size))
        return ec_fail(err, EMBER_ERR_INVALID_ARG, "%s is NULL", !model ? "model" : !buf && size ? "buf" : "tokens");
    if (n < 0) return ec_fail(err, EMBER_ERR_INVALID_ARG, "n_tokens %d is negative", n);
    if (size) buf[0] = 0;
    for (int i = 0; i < n; i++)   /* before writing: a failure leaves "" */
        if (tokens[i] < 0 || tokens[i] >= model->m.hp.n_vocab)
            return ec_fail(err, EMBER_ERR_BAD_TOKEN, "token %d at index %d is outside the vocabulary (0..%d)",
                           (int)tokens[i], i, model->m.hp.n_vocab - 1);
    size_t total = 0;
    ember_token prev = -1;
    for (int i = 0; i < n; i++) {
        size_t room = total + 1 < size ? size - 1 - total : 0;   /* what fits before the NUL */
        int len = etok_piece(model->m.tok, tokens[i], prev, (flags & EMBER_TOKENIZE_SPECIAL) ? ETOK_PARSE_SPECIAL : 0,
                             room ? buf + total : NULL, room);
        if (len < 0) {
            if (size) buf[0] = 0;
            return ec_fail(err, (ember_status)len, "token %d at index %d has no text", (int)tokens[i], i);
        }
        total += (size_t)len;
        prev = tokens[i];
    }
    if (size) buf[total < size ? total : size - 1] = 0;
    if (out_len) *out_len = total;
    if (total < size) return ec_ok(err);
    return ec_fail(err, EMBER_ERR_BUFFER_TOO_SMALL, "the text needs %zu bytes (%zu and the NUL), the buffer holds %zu",
                   total + 1, total, size);
}

/* ---- context --------------------------------------------------------------- */

ember_context_params ember_context_default_params(void) {
    ember_context_params p;
    memset(&p, 0, sizeof p);
    p.kv_type = EMBER_KV_F16;
    return p;
}

ember_status ember_context_create(const ember_model *model, const ember_context_params *params, ember_context **out,
                                  ember_error *err) {
    if (!out) return ember_fail(err, EMBER_ERR_INVALID_ARG, "out_ctx is NULL");
    *out = NULL;
    if (!model) return ember_fail(err, EMBER_ERR_INVALID_ARG, "model is NULL");
    if (model->m.vocab_only)
        return ember_fail(err, EMBER_ERR_INVALID_ARG, "the model was opened with vocab_only: it has no weights");
    ember_context_params p = params ? *params : ember_context_default_params();
    const ember_allocator *user = p.allocator ? p.allocator : model->a;
    if (p.n_ctx < 0) return ec_fail(err, EMBER_ERR_INVALID_ARG, "n_ctx %d is negative", p.n_ctx);
    if (p.n_batch < 0) return ec_fail(err, EMBER_ERR_INVALID_ARG, "n_batch %d is negative", p.n_batch);
    if (p.n_threads < 0 || p.n_threads > 1024)
        return ec_fail(err, EMBER_ERR_INVALID_ARG, "n_threads %d is not in 0..1024", p.n_threads);
    if (p.kv_type != EMBER_KV_F16 && p.kv_type != EMBER_KV_F32)
        return ec_fail(err, EMBER_ERR_INVALID_ARG, "kv_type %d is neither EMBER_KV_F16 nor EMBER_KV_F32", (int)p.kv_type);
    int n_ctx = p.n_ctx ? p.n_ctx : ember_default_n_ctx(model);
    if (n_ctx > model->m.hp.n_ctx_train) {
        char msg[128];
        snprintf(msg, sizeof msg, "n_ctx %d exceeds the model's context length %d", n_ctx, model->m.hp.n_ctx_train);
        return ember_fail(err, EMBER_ERR_INVALID_ARG, msg);
    }
    int n_batch = p.n_batch ? p.n_batch : 64;
    if (n_batch > n_ctx) n_batch = n_ctx;
    int n_threads = p.n_threads ? p.n_threads : ember_default_threads();

    ember_context *ctx = (ember_context *)ec_calloc(user, 1, sizeof *ctx);
    if (!ctx) return ember_fail(err, EMBER_ERR_NOMEM, "out of memory");
    if (user) { ctx->alloc = *user; ctx->a = &ctx->alloc; }
    ctx->model = model;
    ctx->stream_cap = (size_t)model->m.max_piece_bytes + 8;
    ctx->stream = (char *)ec_malloc(ctx->a, ctx->stream_cap);
    ctx->tokens = (ember_token *)ec_malloc(ctx->a, (size_t)n_ctx * sizeof *ctx->tokens);
    int rc = ctx->stream && ctx->tokens ? em_state_init(&ctx->st, &model->m, n_ctx, n_batch, p.kv_type, n_threads, model->pool, ctx->a)
                                        : EMBER_ERR_NOMEM;
    if (rc != EMBER_OK) {
        ec_free(ctx->a, ctx->tokens);
        ec_free(ctx->a, ctx->stream);
        ec_free(user, ctx);
        return ember_fail(err, (ember_status)rc, "out of memory for the context (KV cache and scratch)");
    }
    ctx->st.abort_cb = p.abort_callback;
    ctx->st.abort_ud = p.abort_user_data;
    *out = ctx;
    return ec_ok(err);
}

void ember_context_free(ember_context *ctx) {
    if (!ctx) return;
    ember_allocator copy = ctx->alloc;
    const ember_allocator *a = ctx->a ? &copy : NULL;
    em_state_free(&ctx->st);
    ec_free(a, ctx->tokens);
    ec_free(a, ctx->stops);
    ec_free(a, ctx->multi_logits);
    ec_free(a, ctx->stream);
    ec_free(a, ctx);
}

ember_status ea_ctx_fail(ember_context *ctx, ember_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

const char *ember_context_errmsg(const ember_context *ctx) { return ctx ? ctx->errmsg : "context is NULL"; }
int ember_context_n_ctx(const ember_context *ctx) { return ctx ? ctx->st.n_ctx : 0; }
int ember_context_pos(const ember_context *ctx) { return ctx ? ctx->pos : 0; }
const ember_token *ember_context_tokens(const ember_context *ctx) { return ctx ? ctx->tokens : NULL; }

/* Run tokens at ctx->pos in batches; on success the context holds them and
 * their logits.  A batch the abort callback stops leaves every position
 * before it as it was. */
static ember_status ember_run(ember_context *ctx, const ember_token *tokens, int n, float *all_logits) {
    const int V = ctx->model->m.hp.n_vocab;
    for (int i = 0; i < n; i += ctx->st.n_batch) {
        int nb = n - i < ctx->st.n_batch ? n - i : ctx->st.n_batch;
        if (em_forward(&ctx->st, tokens + i, nb, ctx->pos, all_logits ? all_logits + (size_t)i * V : NULL))
            return ea_ctx_fail(ctx, EMBER_ERR_CANCELLED, "evaluation aborted by the abort callback at position %d "
                                  "(positions before it are kept)", ctx->pos);
        memcpy(ctx->tokens + ctx->pos, tokens + i, (size_t)nb * sizeof *tokens);
        ctx->pos += nb;
        ctx->has_logits = 1;
    }
    return EMBER_OK;
}

/* Forget every position (cannot fail, leaves the message alone). */
static void ember_clear(ember_context *ctx) {
    em_state_clear(&ctx->st);
    ctx->pos = 0;
    ctx->has_logits = 0;
}

ember_status ember_context_set_pos(ember_context *ctx, int pos) {
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (pos < 0 || pos > ctx->pos) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "position %d is not in 0..%d", pos, ctx->pos);
    if (pos == ctx->pos) return EMBER_OK;
    if (pos == 0) {
        ember_clear(ctx);
        return EMBER_OK;
    }
    /* The logits at pos come from running the token at pos - 1 again. */
    if (!em_state_can_rewind(&ctx->st, pos - 1))
        return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG,
                              "cannot go back to position %d: the model's sliding-window layers keep only the last %d "
                              "positions (their window plus n_batch)", pos, ctx->st.swa_rows);
    ctx->pos = pos - 1;
    ctx->has_logits = 0;
    return ember_run(ctx, ctx->tokens + pos - 1, 1, NULL);
}

static int ember_all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

ember_status ember_eval(ember_context *ctx, const ember_token *tokens, int n, float *all_logits) {
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (n <= 0 || !tokens) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "no tokens to evaluate (n %d, tokens %s)", n,
                                              tokens ? "given" : "NULL");
    const int V = ctx->model->m.hp.n_vocab;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return ea_ctx_fail(ctx, EMBER_ERR_BAD_TOKEN, "token %d at index %d is outside the vocabulary (0..%d)",
                                  tokens[i], i, V - 1);
    if (n > ctx->st.n_ctx - ctx->pos)
        return ea_ctx_fail(ctx, EMBER_ERR_CONTEXT_FULL, "%d tokens do not fit: %d of %d positions are used", n,
                              ctx->pos, ctx->st.n_ctx);
    ember_status rc = ember_run(ctx, tokens, n, all_logits);
    if (rc != EMBER_OK) return rc;
    if (!ember_all_finite(ctx->st.logits, (size_t)V))
        return ea_ctx_fail(ctx, EMBER_ERR_NONFINITE, "the model produced NaN or infinite logits");
    return EMBER_OK;
}

ember_status ember_eval_multi(ember_context *const *ctxs, const ember_token *tokens, int n) {
    if (!ctxs || n <= 0 || !ctxs[0]) return EMBER_ERR_INVALID_ARG;   /* no context to hold a message */
    ember_context *lead = ctxs[0];
    ea_ctx_begin(lead);
    if (!tokens) return ea_ctx_fail(lead, EMBER_ERR_INVALID_ARG, "tokens is NULL");
    const ember_model *model = lead->model;
    const int V = model->m.hp.n_vocab;
    for (int i = 0; i < n; i++) {
        ember_context *c = ctxs[i];
        if (!c) return ea_ctx_fail(lead, EMBER_ERR_INVALID_ARG, "context %d is NULL", i);
        if (c->model != model) return ea_ctx_fail(lead, EMBER_ERR_INVALID_ARG, "context %d is of another model", i);
        if (tokens[i] < 0 || tokens[i] >= V)
            return ea_ctx_fail(lead, EMBER_ERR_BAD_TOKEN, "token %d for context %d is outside the vocabulary (0..%d)",
                               tokens[i], i, V - 1);
        if (c->pos >= c->st.n_ctx)
            return ea_ctx_fail(lead, EMBER_ERR_CONTEXT_FULL, "context %d is full (%d positions)", i, c->st.n_ctx);
        for (int j = 0; j < i; j++)
            if (ctxs[j] == c) return ea_ctx_fail(lead, EMBER_ERR_INVALID_ARG, "context %d is listed twice", i);
    }
    /* The scratch comes from the context with the most positions (the
     * attention scores of every other fit in it), in chunks of its n_batch. */
    ember_context *scratch = lead;
    for (int i = 1; i < n; i++)
        if (ctxs[i]->st.n_ctx > scratch->st.n_ctx) scratch = ctxs[i];
    enum { EMBER_MULTI_MAX = 64 };       /* rows per pass: their states and positions on the stack */
    int chunk = n < scratch->st.n_batch ? n : scratch->st.n_batch;
    if (chunk > EMBER_MULTI_MAX) chunk = EMBER_MULTI_MAX;
    if (scratch->multi_rows < chunk) {   /* the first call with this many contexts */
        float *l = (float *)ec_realloc(scratch->a, scratch->multi_logits, (size_t)chunk * (size_t)V * sizeof(float));
        if (!l) return ea_ctx_fail(lead, EMBER_ERR_NOMEM, "out of memory for %d rows of logits", chunk);
        scratch->multi_logits = l;
        scratch->multi_rows = chunk;
    }
    em_state *states[EMBER_MULTI_MAX];
    int pos[EMBER_MULTI_MAX];
    ember_status rc = EMBER_OK;
    for (int i = 0; i < n; i += chunk) {
        const int nb = n - i < chunk ? n - i : chunk;
        for (int b = 0; b < nb; b++) {
            states[b] = &ctxs[i + b]->st;
            pos[b] = ctxs[i + b]->pos;
        }
        if (em_forward_multi(&scratch->st, states, pos, tokens + i, nb, scratch->multi_logits))
            return ea_ctx_fail(lead, EMBER_ERR_CANCELLED, "evaluation aborted by the abort callback "
                               "(contexts before %d advanced, the rest unchanged)", i);
        for (int b = 0; b < nb; b++) {
            ember_context *c = ctxs[i + b];
            c->tokens[c->pos++] = tokens[i + b];
            c->has_logits = 1;
            memcpy(c->st.logits, scratch->multi_logits + (size_t)b * V, (size_t)V * sizeof(float));
            if (!ember_all_finite(c->st.logits, (size_t)V))
                rc = ea_ctx_fail(c, EMBER_ERR_NONFINITE, "the model produced NaN or infinite logits");
        }
    }
    if (rc != EMBER_OK) ea_ctx_fail(lead, rc, "a context's logits are NaN or infinite");
    return rc;
}

const float *ember_get_logits(const ember_context *ctx) {
    return ctx && ctx->has_logits ? ctx->st.logits : NULL;
}

/* ---- streaming text and stop strings ---------------------------------------- */

ember_status ember_context_set_stop_strings(ember_context *ctx, const char *const *stops, int n) {
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (n < 0 || (n && !stops)) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "bad stop string list");
    size_t total = 0, longest = 0;
    for (int i = 0; i < n; i++) {
        if (!stops[i] || !stops[i][0]) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "stop string %d is empty", i);
        size_t len = strlen(stops[i]);
        if (len > 4096) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "stop string %d is longer than 4096 bytes", i);
        total += len + 1;
        if (len > longest) longest = len;
    }
    /* one block: the strings, NUL-separated; the stream grows to hold a
     * stop string's worth of held-back text beside a token's */
    char *block = n ? (char *)ec_malloc(ctx->a, total) : NULL;
    size_t cap = (size_t)ctx->model->m.max_piece_bytes + 8 + longest;
    char *stream = cap > ctx->stream_cap ? (char *)ec_realloc(ctx->a, ctx->stream, cap) : ctx->stream;
    if ((n && !block) || !stream) {
        ec_free(ctx->a, block);
        if (stream) ctx->stream = stream;
        return ea_ctx_fail(ctx, EMBER_ERR_NOMEM, "out of memory for stop strings");
    }
    ctx->stream = stream;
    if (cap > ctx->stream_cap) ctx->stream_cap = cap;
    for (size_t i = 0, at = 0; i < (size_t)n; i++) {
        size_t len = strlen(stops[i]) + 1;
        memcpy(block + at, stops[i], len);
        at += len;
    }
    ec_free(ctx->a, ctx->stops);
    ctx->stops = block;
    ctx->n_stops = n;
    return EMBER_OK;
}

/* Where the earliest stop string starts in the stream (-1: none), and the
 * longest tail of it that could still become one (*partial). */
static long ember_find_stop(const ember_context *ctx, size_t *partial) {
    const char *st = ctx->stream;
    const size_t len = ctx->stream_len;
    long found = -1;
    *partial = 0;
    const char *p = ctx->stops;
    for (int i = 0; i < ctx->n_stops; i++, p += strlen(p) + 1) {
        const size_t sl = strlen(p);
        for (size_t at = 0; at + sl <= len; at++)
            if (!memcmp(st + at, p, sl)) { if (found < 0 || (long)at < found) found = (long)at; break; }
        for (size_t k = sl - 1 < len ? sl - 1 : len; k > *partial; k--)
            if (!memcmp(st + len - k, p, k)) { *partial = k; break; }
    }
    return found;
}

/* Append a token's text to the stream.  *emit = how many bytes at the
 * front are final: whole UTF-8 characters that cannot be the start of a
 * stop string.  Returns 1 if a stop string completed (then *emit is the
 * text before it). */
static int ember_stream_push(ember_context *ctx, ember_token tok, ember_token prev, size_t *emit) {
    size_t room = ctx->stream_cap - ctx->stream_len;
    int n = etok_piece(ctx->model->m.tok, tok, prev, 0, ctx->stream + ctx->stream_len, room);
    if (n < 0 || (size_t)n > room) n = 0;   /* cannot happen: stream_cap covers the longest piece */
    ctx->stream_len += (size_t)n;
    size_t partial = 0;
    long stop = ctx->n_stops ? ember_find_stop(ctx, &partial) : -1;
    if (stop >= 0) { *emit = (size_t)stop; return 1; }
    size_t keep = ec_utf8_incomplete_tail((const unsigned char *)ctx->stream, ctx->stream_len);
    if (partial > keep) keep = partial;
    *emit = ctx->stream_len - keep;
    return 0;
}

/* Drop the first n bytes of the stream (all of it after a stop string). */
static void ember_stream_consume(ember_context *ctx, size_t n, int stopped) {
    if (stopped) n = ctx->stream_len;
    memmove(ctx->stream, ctx->stream + n, ctx->stream_len - n);
    ctx->stream_len -= n;
}

/* ---- generation ---------------------------------------------------------------- */

/* Sample the next token and accept it; a sampler's failure becomes the
 * context's. */
static ember_status ember_next_token(ember_context *ctx, ember_sampler *sampler, ember_token *tok) {
    ember_status rc = ember_sampler_sample(sampler, ctx->st.logits, tok);
    if (rc == EMBER_OK) rc = ember_sampler_accept(sampler, *tok);
    if (rc != EMBER_OK) return ea_ctx_fail(ctx, rc, "sampling failed: %s", ember_sampler_errmsg(sampler));
    return EMBER_OK;
}

ember_status ember_generate(ember_context *ctx, ember_sampler *sampler, const ember_token *prompt, int n_prompt,
                            int n_predict, ember_token_callback cb, void *ud, ember_generate_result *result) {
    ember_generate_result res;
    memset(&res, 0, sizeof res);
    if (result) *result = res;
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (!sampler) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "sampler is NULL");
    if (n_prompt < 0 || (n_prompt && !prompt)) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "bad prompt (n_prompt %d)", n_prompt);
    if (n_predict < 0) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "n_predict %d is negative", n_predict);
    const em_model *m = &ctx->model->m;
    double t0 = ep_seconds();
    if (n_prompt > 0) {
        ember_status rc = ember_eval(ctx, prompt, n_prompt, NULL);
        if (rc != EMBER_OK) return rc;
        res.n_prompt = n_prompt;
    } else if (!ctx->has_logits) {
        return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "nothing to continue: the prompt is empty and the context holds no tokens");
    }
    double t1 = ep_seconds();
    res.prompt_seconds = t1 - t0;
    ctx->stream_len = 0;
    ember_token prev = ctx->pos ? ctx->tokens[ctx->pos - 1] : -1;
    ember_status rc = EMBER_OK;
    for (;;) {
        if (res.n_generated >= n_predict) { res.stop = EMBER_STOP_LENGTH; break; }
        ember_token tok;
        if ((rc = ember_next_token(ctx, sampler, &tok)) != EMBER_OK) break;
        if (etok_is_eog(m->tok, tok)) { res.stop = EMBER_STOP_EOG; break; }
        res.n_generated++;
        size_t emit;
        int stopped = ember_stream_push(ctx, tok, prev, &emit);
        if (cb && cb(ud, tok, ctx->stream, emit)) res.stop = EMBER_STOP_CALLBACK;
        ember_stream_consume(ctx, emit, stopped);
        if (stopped) res.stop = EMBER_STOP_STRING;
        prev = tok;
        /* Evaluate the token so the context holds everything generated. */
        if (ctx->pos >= ctx->st.n_ctx) { if (!res.stop) res.stop = EMBER_STOP_CONTEXT_FULL; break; }
        rc = ember_eval(ctx, &tok, 1, NULL);
        if (rc != EMBER_OK || res.stop) break;
    }
    if (ctx->stream_len && cb) cb(ud, -1, ctx->stream, ctx->stream_len);  /* held-back or incomplete bytes */
    ctx->stream_len = 0;
    res.generate_seconds = ep_seconds() - t1;
    if (result) *result = res;
    return rc;
}

/* the stream's bytes and a NUL */
size_t ember_step_text_size(const ember_context *ctx) { return ctx ? ctx->stream_cap + 1 : 0; }

ember_status ember_step(ember_context *ctx, ember_sampler *sampler, char *text, size_t size, ember_step_result *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (!sampler || !out) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "%s is NULL", sampler ? "out" : "sampler");
    if (!text && size) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "text is NULL");
    if (size < ctx->stream_cap + 1)
        return ea_ctx_fail(ctx, EMBER_ERR_BUFFER_TOO_SMALL,
                           "the text buffer holds %zu bytes, it must hold ember_step_text_size() = %zu", size,
                           ctx->stream_cap + 1);
    if (!ctx->has_logits) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "nothing to continue: evaluate a prompt first");
    ember_token tok;
    ember_status rc = ember_next_token(ctx, sampler, &tok);
    if (rc != EMBER_OK) return rc;
    out->token = tok;
    size_t emit = 0;
    int stopped = 0;
    if (etok_is_eog(ctx->model->m.tok, tok)) {
        out->stop = EMBER_STOP_EOG;
        emit = ctx->stream_len;                  /* whatever was held back is final now */
    } else {
        stopped = ember_stream_push(ctx, tok, ctx->pos ? ctx->tokens[ctx->pos - 1] : -1, &emit);
        if (stopped) out->stop = EMBER_STOP_STRING;
        else if (ctx->pos >= ctx->st.n_ctx) { out->stop = EMBER_STOP_CONTEXT_FULL; emit = ctx->stream_len; }
    }
    memcpy(text, ctx->stream, emit);
    text[emit] = 0;
    out->len = emit;
    ember_stream_consume(ctx, emit, stopped || out->stop);
    if (out->stop == EMBER_STOP_EOG || out->stop == EMBER_STOP_CONTEXT_FULL) return EMBER_OK;
    return ember_eval(ctx, &tok, 1, NULL);
}

/* Tokenize into a new array from the context's allocator (free with
 * ec_free).  Returns a status; the message is set on failure. */
static ember_status ember_tokenize_new(ember_context *ctx, const char *text, size_t len, ember_token **out, int *n) {
    *out = NULL;
    *n = 0;
    ember_error err;
    size_t count = 0;
    ember_status rc = ember_tokenize(ctx->model, text, len, EMBER_TOKENIZE_ADD_BOS, NULL, 0, &count, &err);
    if (rc != EMBER_OK && rc != EMBER_ERR_BUFFER_TOO_SMALL) return ea_ctx_fail(ctx, rc, "%s", err.message);
    if (count > (size_t)INT32_MAX) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "the text is %zu tokens", count);
    *out = (ember_token *)ec_malloc(ctx->a, (count ? count : 1) * sizeof **out);
    if (!*out) return ea_ctx_fail(ctx, EMBER_ERR_NOMEM, "out of memory for %zu tokens", count);
    rc = ember_tokenize(ctx->model, text, len, EMBER_TOKENIZE_ADD_BOS, *out, count, &count, &err);
    if (rc != EMBER_OK) {
        ec_free(ctx->a, *out);
        *out = NULL;
        return ea_ctx_fail(ctx, rc, "%s", err.message);
    }
    *n = (int)count;
    return EMBER_OK;
}

ember_status ember_generate_text(ember_context *ctx, ember_sampler *sampler, const char *prompt, int n_predict,
                                 ember_token_callback cb, void *ud, ember_generate_result *result) {
    if (result) memset(result, 0, sizeof *result);
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (!prompt) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "prompt is NULL");
    if (!sampler) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "sampler is NULL");
    if (n_predict < 0) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "n_predict %d is negative", n_predict);
    ember_token *toks;
    int n;
    ember_status rc = ember_tokenize_new(ctx, prompt, strlen(prompt), &toks, &n);
    if (rc != EMBER_OK) return rc;
    if (n == 0) {   /* no BOS and no text: nothing to condition on */
        ec_free(ctx->a, toks);
        return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "the prompt is empty and the model has no BOS token");
    }
    rc = ember_generate(ctx, sampler, toks, n, n_predict, cb, ud, result);
    ec_free(ctx->a, toks);
    return rc;
}

/* ---- perplexity ------------------------------------------------------------ */

ember_status ember_perplexity(ember_context *ctx, const char *text, size_t len, ember_progress_callback cb, void *ud,
                              ember_perplexity_result *result) {
    if (result) memset(result, 0, sizeof *result);
    if (!ctx) return EMBER_ERR_INVALID_ARG;
    ea_ctx_begin(ctx);
    if (!text && len) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "text is NULL but len is %zu", len);
    if (!result) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "result is NULL");
    const ember_model *model = ctx->model;
    const int n_ctx = ctx->st.n_ctx, V = model->m.hp.n_vocab, n_batch = ctx->st.n_batch;
    if (n_ctx < 3) return ea_ctx_fail(ctx, EMBER_ERR_INVALID_ARG, "perplexity needs a context of at least 3 tokens (it scores the second half of each chunk)");
    ember_token *toks;
    int n;
    ember_status rc = ember_tokenize_new(ctx, text, len, &toks, &n);
    if (rc != EMBER_OK) return rc;
    if (n < 2 * n_ctx) {
        ec_free(ctx->a, toks);
        return ea_ctx_fail(ctx, EMBER_ERR_TOO_SHORT, "%d tokens is too few: perplexity with a context of %d needs at least %d",
                              n, n_ctx, 2 * n_ctx);
    }
    float *logits = (float *)ec_malloc(ctx->a, (size_t)n_batch * V * sizeof(float));
    if (!logits) {
        ec_free(ctx->a, toks);
        return ea_ctx_fail(ctx, EMBER_ERR_NOMEM, "out of memory");
    }
    const int n_chunks = n / n_ctx, first = n_ctx / 2;
    const ember_token bos = etok_add_bos(model->m.tok) ? etok_bos(model->m.tok) : -1;
    double nll = 0, nll2 = 0;
    long count = 0;
    for (int c = 0; c < n_chunks && rc == EMBER_OK; c++) {
        const int start = c * n_ctx;
        ember_clear(ctx);
        for (int i = 0; i < n_ctx && rc == EMBER_OK; i += n_batch) {
            int nb = n_ctx - i < n_batch ? n_ctx - i : n_batch;
            ember_token saved = toks[start + i];
            if (i == 0 && bos >= 0) toks[start] = bos;  /* every chunk starts with BOS, as llama.cpp */
            rc = ember_eval(ctx, toks + start + i, nb, logits);
            toks[start + i] = saved;
            /* Row j predicts token j+1; score positions first .. n_ctx-2. */
            for (int r = 0; r < nb && rc == EMBER_OK; r++) {
                int j = i + r;
                if (j < first || j >= n_ctx - 1) continue;
                const float *l = logits + (size_t)r * V;
                float mx = l[0];
                for (int v = 1; v < V; v++) if (l[v] > mx) mx = l[v];
                double sum = 0;
                for (int v = 0; v < V; v++) sum += exp((double)l[v] - mx);
                double x = log(sum) - ((double)l[toks[start + j + 1]] - mx);
                nll += x;
                nll2 += x * x;
                count++;
            }
        }
        if (rc == EMBER_OK && cb && cb(ud, c + 1, n_chunks, exp(nll / (double)count)))
            rc = ea_ctx_fail(ctx, EMBER_ERR_CANCELLED, "cancelled by the progress callback");
    }
    ember_clear(ctx);
    ec_free(ctx->a, toks);
    ec_free(ctx->a, logits);
    if (rc != EMBER_OK) return rc;
    double mean = nll / (double)count, var = nll2 / (double)count - mean * mean;
    result->mean_nll = mean;
    result->ppl = exp(mean);
    result->ppl_err = var > 0 && count > 1 ? result->ppl * sqrt(var / (double)(count - 1)) : 0;
    result->n_chunks = n_chunks;
    result->n_scored = (int)count;
    return EMBER_OK;
}

const char *ember_cpu_features(void) { return ek_kernels_name(ek_kernels_best()); }
