/*
 * ember.h - run Llama-architecture language models from GGUF files on a CPU.
 *
 * One model (immutable after open, shareable between threads) serves any
 * number of contexts; each context owns one KV cache and its scratch memory
 * and is used by one thread at a time.  The library never prints, exits or
 * aborts.
 *
 * Errors, one contract for every function:
 *   - Every function that can fail returns an ember_status (0 = EMBER_OK,
 *     negative = error); ember_status_string() describes a code.
 *   - Every failure also leaves a message naming the problem: in the
 *     trailing ember_error (may be NULL) of functions that create an object
 *     or work on the shared model; else in the object's own message
 *     (ember_context_errmsg, ember_sampler_errmsg, ember_chat_errmsg).  A
 *     call that succeeds clears it (""), so a message always describes the
 *     last call that can fail.  A NULL handle gives EMBER_ERR_INVALID_ARG
 *     (and the errmsg functions given NULL say which handle was NULL).
 *   - Text and array outputs work as snprintf: f(..., buf, size, &len, ...)
 *     writes at most size-1 bytes and always a NUL when size > 0 (buf may
 *     be NULL when size is 0), sets len (may be NULL) to the full length
 *     without the NUL, and returns EMBER_ERR_BUFFER_TOO_SMALL when size <
 *     len + 1 (the output was cut; always for size 0).  So: ask with
 *     (NULL, 0, &len), then allocate len + 1.  Token arrays likewise, in
 *     ids and without a NUL (ember_tokenize).
 *
 * Thread-safety, unless a function says otherwise: functions on a model
 * only read it, so any number of threads may call them on one shared model
 * at once; a context, sampler or chat is used by one thread at a time
 * (different objects by different threads freely).
 *
 *   ember_model *m; ember_context *c; ember_sampler *s;
 *   ember_model_open_file("model.gguf", NULL, &m, NULL);
 *   ember_context_create(m, NULL, &c, NULL);
 *   ember_sampler_create(m, NULL, &s, NULL);
 *   ember_generate_text(c, s, "Once upon a time", 64, print_cb, NULL, NULL);
 *   ember_sampler_free(s); ember_context_free(c); ember_model_free(m);
 *
 * MIT License. See LICENSE.
 */
#ifndef EMBER_H
#define EMBER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* EMBER_API marks the public functions, the only symbols ember exports.
 *   static library, or the single file: define nothing;
 *   Windows DLL: the DLL is built with EMBER_BUILD_DLL, and programs that
 *     use it define EMBER_DLL (__declspec(dllimport));
 *   the single file included into one .c file of yours: define EMBER_STATIC
 *     and the ember_* functions are static there too (as stb does);
 *   elsewhere (ELF, Mach-O) the library is built with -fvisibility=hidden
 *     and EMBER_API gives the API default visibility. */
#ifndef EMBER_API
#  if defined(EMBER_STATIC) && defined(__GNUC__)
#    define EMBER_API __attribute__((unused)) static
#  elif defined(EMBER_STATIC)
#    define EMBER_API static
#  elif defined(_WIN32) || defined(__CYGWIN__)
#    if defined(EMBER_BUILD_DLL)
#      define EMBER_API __declspec(dllexport)
#    elif defined(EMBER_DLL)
#      define EMBER_API __declspec(dllimport)
#    else
#      define EMBER_API
#    endif
#  elif defined(__GNUC__) && __GNUC__ >= 4
#    define EMBER_API __attribute__((visibility("default")))
#  else
#    define EMBER_API
#  endif
#endif

/* The version: the numbers here are the only place it is written (the
 * Makefile reads them for the shared library's name and ember.pc). */
#define EMBER_VERSION_MAJOR 0
#define EMBER_VERSION_MINOR 1
#define EMBER_VERSION_PATCH 0
#define EMBER_VERSION_STR_(x) #x
#define EMBER_VERSION_XSTR_(x) EMBER_VERSION_STR_(x)
/* "0.1.0"; EMBER_VERSION_NUMBER is 100 for 0.1.0 (for #if) */
#define EMBER_VERSION EMBER_VERSION_XSTR_(EMBER_VERSION_MAJOR) "." \
    EMBER_VERSION_XSTR_(EMBER_VERSION_MINOR) "." EMBER_VERSION_XSTR_(EMBER_VERSION_PATCH)
#define EMBER_VERSION_NUMBER \
    (EMBER_VERSION_MAJOR * 10000 + EMBER_VERSION_MINOR * 100 + EMBER_VERSION_PATCH)

/* The version of the library linked (EMBER_VERSION is the header's), e.g.
 * "0.1.0"; a static string.  Thread-safe. */
EMBER_API const char *ember_version(void);

/* ---- status codes ------------------------------------------------------ */

typedef enum ember_status {
    EMBER_OK = 0,
    EMBER_ERR_INVALID_ARG = -1,   /* a NULL handle, bad parameter value      */
    EMBER_ERR_NOMEM = -2,         /* an allocation failed                    */
    EMBER_ERR_IO = -3,            /* open/read/mmap of a file failed         */
    EMBER_ERR_BAD_MAGIC = -4,     /* not a GGUF file                         */
    EMBER_ERR_VERSION = -5,       /* GGUF version not 2 or 3                 */
    EMBER_ERR_TRUNCATED = -6,     /* the file ends before its contents do    */
    EMBER_ERR_CORRUPT = -7,       /* a field holds an impossible value       */
    EMBER_ERR_UNSUPPORTED = -8,   /* valid GGUF, but an architecture, tensor
                                     type or tokenizer ember cannot run      */
    EMBER_ERR_SHAPE = -9,         /* tensor shapes disagree with the
                                     hyperparameters or each other           */
    EMBER_ERR_MISSING = -10,      /* a required key or tensor is absent      */
    EMBER_ERR_CONTEXT_FULL = -11, /* tokens do not fit in the context        */
    EMBER_ERR_BAD_TOKEN = -12,    /* a token id outside the vocabulary       */
    EMBER_ERR_NONFINITE = -13,    /* the model produced NaN or Inf logits    */
    EMBER_ERR_BUFFER_TOO_SMALL = -14, /* output buffer too small; the needed
                                     size is reported through the out param  */
    EMBER_ERR_CANCELLED = -15,    /* a callback asked to stop                */
    EMBER_ERR_TOO_SHORT = -16,    /* too little text for the request
                                     (e.g. perplexity needs 2 contexts)      */
    EMBER_ERR_GRAMMAR = -17       /* a sampler's grammar allows no token of
                                     the vocabulary                          */
} ember_status;

/* A static English description of a status code ("unknown status" if the
 * code is not one of the above).  Static storage; thread-safe. */
EMBER_API const char *ember_status_string(ember_status status);

/* Filled by the functions that create objects or work on the shared model,
 * so a failure can be explained without an object to hold the message.
 * May be passed as NULL.  On success: code EMBER_OK and message "". */
typedef struct ember_error {
    ember_status code;    /* the returned status                         */
    char message[256];    /* NUL-terminated, names the field or problem  */
} ember_error;

/* ---- memory ------------------------------------------------------------- */

/* Allocator hook.  Every heap allocation ember makes for a model, context or
 * sampler goes through the allocator in its params (NULL = libc).  Functions
 * must behave like malloc/realloc/free; user_data is passed through. */
typedef struct ember_allocator {
    void *(*malloc_fn)(void *user_data, size_t size);
    void *(*realloc_fn)(void *user_data, void *ptr, size_t size);
    void (*free_fn)(void *user_data, void *ptr);
    void *user_data;
} ember_allocator;

/* ---- model ---------------------------------------------------------------- */

typedef struct ember_model ember_model;
typedef int32_t ember_token;

typedef enum ember_load_mode {
    EMBER_LOAD_DEFAULT = 0, /* the faster mode, as measured (see README)      */
    EMBER_LOAD_MMAP = 1,    /* map the file read-only: instant, zero copy     */
    EMBER_LOAD_READ = 2     /* read into aligned memory (huge pages if the OS
                               allows): slower start, faster weight streaming */
} ember_load_mode;

typedef struct ember_model_params {
    ember_load_mode load_mode;
    const ember_allocator *allocator; /* NULL = libc (the hook is copied)    */
    int vocab_only;   /* load only the tokenizer (e.g. for tokenize-only use,
                         or a vocabulary-only GGUF); no context can be made */
    const char *kernels; /* kernel set: NULL, "auto" = the best this CPU runs;
                         or "scalar", "avx2", "avx512", "amx", "neon",
                         "neon_dotprod".  A set this CPU cannot run fails
                         with EMBER_ERR_UNSUPPORTED, an unknown name with
                         EMBER_ERR_INVALID_ARG (the message names it).
                         Sets differ only in speed and in the last bits of
                         the logits (each is tested against "scalar"). */
} ember_model_params;

/* Thread-safe. */
EMBER_API ember_model_params ember_model_default_params(void);

/* Open a GGUF model file.  params may be NULL for defaults.  On success
 * *out_model is set and EMBER_OK returned; on failure *out_model is NULL
 * and err says why.  The caller owns the model: free it with
 * ember_model_free() after every context, sampler and chat made from it.
 * Thread-safe (no shared state). */
EMBER_API ember_status ember_model_open_file(const char *path,
                                             const ember_model_params *params,
                                             ember_model **out_model, ember_error *err);

/* Open a model from a GGUF image in memory.  The buffer is used in place
 * (no copy) and must stay valid and unchanged until ember_model_free().
 * Tensor data must be aligned as the file says relative to data; a buffer
 * from malloc (16-byte aligned) or better is fine.  Thread-safe. */
EMBER_API ember_status ember_model_open_memory(const void *data, size_t size,
                                               const ember_model_params *params,
                                               ember_model **out_model, ember_error *err);

/* Free a model (NULL is allowed).  Thread-safety: no other call may be
 * using the model, or anything made from it, at the same time. */
EMBER_API void ember_model_free(ember_model *model);

/* Hyperparameters and facts about an open model. */
typedef struct ember_model_info {
    const char *architecture;  /* "llama", "qwen2", "qwen3", "gemma2", "gemma3",
                                  "phi3", "smollm3", "granite"               */
    const char *name;          /* general.name, or ""                        */
    const char *tokenizer;     /* "llama" (SentencePiece) or "gpt2" (BPE)    */
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim,
        n_ff, rope_dim;
    float rope_freq_base, rms_eps;
    int tied_output;           /* 1 when output reuses token_embd            */
    int file_type;             /* dominant weight type (ggml type id)        */
    uint64_t n_params;         /* number of weights                          */
    uint64_t weight_bytes;     /* bytes of tensor data                       */
    uint64_t bytes_per_token;  /* weight bytes read to generate one token    */
    int load_mode;             /* the mode actually used                     */
    int n_packed;              /* matrices whose rows were interleaved at
                                  load for the SIMD kernels (READ mode only:
                                  same results, fewer cycles per byte)       */
    int n_swa;                 /* sliding window of local layers (0: none)   */
    int n_swa_layers;          /* layers that are local; their KV cache
                                  keeps n_swa + n_batch positions, not n_ctx */
    const char *kernels;       /* the kernel set in use ("avx2", ...)       */
} ember_model_info;

/* Fill *out.  Its strings belong to the model: valid until
 * ember_model_free().  Thread-safe on a shared model. */
EMBER_API ember_status ember_model_get_info(const ember_model *model, ember_model_info *out,
                                            ember_error *err);

/* Name of a ggml tensor type id ("q4_0"), or NULL if unknown.  Static
 * storage; thread-safe. */
EMBER_API const char *ember_type_name(int type);

/* Bytes of memory a context with n_ctx positions needs (KV cache and
 * scratch), for a given KV type (see ember_context_params); 0 if model is
 * NULL.  Thread-safe on a shared model. */
EMBER_API uint64_t ember_context_memory_needed(const ember_model *model,
                                               int n_ctx, int kv_type,
                                               int n_batch);

/* Read a metadata value as text, e.g. for `ember info`.  Numbers are
 * formatted, arrays summarised ("[string x 32000]").  The text convention
 * (see the top: buf, size, *out_len, EMBER_ERR_BUFFER_TOO_SMALL); a key
 * the file does not have gives EMBER_ERR_MISSING with buf = "" and
 * *out_len = 0.  Thread-safe on a shared model. */
EMBER_API ember_status ember_model_meta(const ember_model *model, const char *key,
                                        char *buf, size_t size, size_t *out_len,
                                        ember_error *err);

/* ---- tokens --------------------------------------------------------------- */

/* Getters that cannot fail (0 / -1 for a NULL model).  Thread-safe on a
 * shared model. */
EMBER_API int ember_n_vocab(const ember_model *model);
EMBER_API ember_token ember_token_bos(const ember_model *model); /* -1 if none */
EMBER_API ember_token ember_token_eos(const ember_model *model); /* -1 if none */
/* 1 if generation should stop at this token (EOS, end-of-turn, ...). */
EMBER_API int ember_token_is_eog(const ember_model *model, ember_token token);

enum {
    EMBER_TOKENIZE_ADD_BOS = 1,  /* the model's special tokens: BOS before
                                    and EOS after the text where it asks for
                                    them (tokenizer.ggml.add_bos_token,
                                    add_eos_token), as llama.cpp's add_special */
    EMBER_TOKENIZE_SPECIAL = 2   /* parse special-token text (e.g.
                                    "<|eot_id|>") into its id; by default such
                                    text is tokenized as plain characters     */
};

/* Tokenize len bytes of text (any bytes; invalid UTF-8 is handled as the
 * reference tokenizer does).  Writes at most cap ids to out (out may be
 * NULL when cap is 0) and sets *n_out (may be NULL) to the count of the
 * whole text; EMBER_ERR_BUFFER_TOO_SMALL if cap is less.  So: ask with
 * (NULL, 0, &n), then allocate n ids.  Thread-safe on a shared model. */
EMBER_API ember_status ember_tokenize(const ember_model *model, const char *text,
                                      size_t len, int flags, ember_token *out, size_t cap,
                                      size_t *n_out, ember_error *err);

/* The bytes a token contributes to text, by the text convention (buf,
 * size, *out_len, EMBER_ERR_BUFFER_TOO_SMALL; a NUL after them).  prev is
 * the preceding token, or -1 at the start of the text (SentencePiece drops
 * the space a first word carries).  Control tokens give no bytes unless
 * flags has EMBER_TOKENIZE_SPECIAL.  A piece may be part of a UTF-8
 * character, and a byte token may be a 0 byte: use *out_len, not strlen.
 * EMBER_ERR_BAD_TOKEN for a token outside the vocabulary.  Thread-safe on
 * a shared model. */
EMBER_API ember_status ember_token_to_piece(const ember_model *model, ember_token token,
                                            ember_token prev, int flags, char *buf,
                                            size_t size, size_t *out_len, ember_error *err);

/* Decode a whole token sequence into text, by the text convention (buf,
 * size, *out_len, EMBER_ERR_BUFFER_TOO_SMALL).  Thread-safe on a shared
 * model. */
EMBER_API ember_status ember_detokenize(const ember_model *model, const ember_token *tokens,
                                        int n_tokens, int flags, char *buf, size_t size,
                                        size_t *out_len, ember_error *err);

/* ---- context -------------------------------------------------------------- */

typedef struct ember_context ember_context;

typedef enum ember_kv_type { EMBER_KV_F16 = 0, EMBER_KV_F32 = 1 } ember_kv_type;

typedef struct ember_context_params {
    int n_ctx;        /* positions in the KV cache; 0 = the model's own
                         context length, at most 4096 (as llama.cpp)         */
    int n_batch;      /* max tokens evaluated at once (prompt batching);
                         0 = default (64)                                   */
    int n_threads;    /* 0 = all cores                                      */
    ember_kv_type kv_type;
    const ember_allocator *allocator; /* NULL = the model's allocator       */
    /* Called between layers while evaluating (from the evaluating thread);
     * nonzero stops: ember_eval returns EMBER_ERR_CANCELLED and the context
     * keeps every position before the stopped batch.  NULL = never. */
    int (*abort_callback)(void *user_data);
    void *abort_user_data;
} ember_context_params;

/* Thread-safe. */
EMBER_API ember_context_params ember_context_default_params(void);

/* Create a context for model.  All memory the context will ever need is
 * allocated here: evaluating and generating allocate nothing.  On failure
 * *out_ctx is NULL and err says why.  The caller owns the context (free it
 * with ember_context_free() before the model).  Thread-safe on a shared
 * model.
 *
 * Every function below taking an ember_context reports its failures in the
 * context's message.  Thread-safety (all of them): one thread at a time per
 * context; different contexts of one model on different threads freely. */
EMBER_API ember_status ember_context_create(const ember_model *model,
                                            const ember_context_params *params,
                                            ember_context **out_ctx, ember_error *err);
/* NULL is allowed.  Thread-safety: nothing else may use the context. */
EMBER_API void ember_context_free(ember_context *ctx);

/* The message for the context's last call that can fail: "" if it
 * succeeded.  Owned by the context: valid until the next call on it.
 * Given NULL, a static "context is NULL".  Thread-safety: as the context. */
EMBER_API const char *ember_context_errmsg(const ember_context *ctx);

/* Getters that cannot fail (0 for a NULL context).  Thread-safety: as the
 * context. */
EMBER_API int ember_context_n_ctx(const ember_context *ctx);
/* Number of positions filled in the KV cache. */
EMBER_API int ember_context_pos(const ember_context *ctx);
/* Forget positions >= pos (pos = 0 clears the cache).  Afterwards
 * ember_get_logits() returns the logits that predict the token at pos (the
 * token at pos - 1 is run again for them).  Models with sliding-window
 * layers keep only the last window + n_batch positions of those layers:
 * going back further fails with EMBER_ERR_INVALID_ARG (nothing changed).
 * Thread-safety: as the context. */
EMBER_API ember_status ember_context_set_pos(ember_context *ctx, int pos);
/* The tokens the context holds (ember_context_pos() of them), or NULL for
 * a NULL context.  Owned by the context: valid until the next call that
 * changes it (eval, set_pos, generate, step, state_load, copy_prefix,
 * perplexity, a chat reply) or ember_context_free.  Thread-safety: as the
 * context. */
EMBER_API const ember_token *ember_context_tokens(const ember_context *ctx);

/* Append n tokens to the context and run the model over them.  Afterwards
 * ember_get_logits() returns the logits that predict the token after the
 * last one.  If all_logits is non-NULL it receives n * n_vocab floats: row i
 * predicts the token after tokens[i].  Fails with EMBER_ERR_CONTEXT_FULL
 * (nothing changed) if the tokens do not fit, EMBER_ERR_NONFINITE if a
 * logit is NaN or Inf.  Thread-safety: as the context (it uses the
 * model's thread pool, which contexts of one model share safely). */
EMBER_API ember_status ember_eval(ember_context *ctx, const ember_token *tokens, int n,
                                  float *all_logits);

/* Evaluate one token for each of n contexts of the same model in one pass
 * over the weights (generation is memory-bound: n characters cost little
 * more than one).  tokens[i] is appended to ctxs[i]; afterwards each
 * context's ember_get_logits() predicts its next token, with the same bits
 * as ember_eval() of that token alone.  The contexts must be distinct and
 * not in use by another thread; the one with the most positions lends its
 * scratch and threads (its first call with more contexts than before
 * allocates their rows of logits; later calls allocate nothing).  Errors
 * are reported in ctxs[0]'s message: nothing is changed by a bad argument
 * (EMBER_ERR_INVALID_ARG, EMBER_ERR_BAD_TOKEN, EMBER_ERR_CONTEXT_FULL for a
 * full context); a context whose logits are not finite also has its own
 * message.  Thread-safety: every context listed, one thread at a time. */
EMBER_API ember_status ember_eval_multi(ember_context *const *ctxs, const ember_token *tokens, int n);

/* Logits (n_vocab floats) that predict the token after the last one the
 * context holds, or NULL if there are none (nothing evaluated, or after
 * set_pos(0)).  Owned by the context: valid until the next call that
 * changes it (eval, eval_multi, set_pos, generate, step, state_load,
 * copy_prefix, perplexity, a chat reply) or ember_context_free.
 * Thread-safety: as the context. */
EMBER_API const float *ember_get_logits(const ember_context *ctx);

/* ---- sampling ------------------------------------------------------------- */

typedef struct ember_sampler ember_sampler;

/* A bias added to one token's logit (see ember_sampler_params). */
typedef struct ember_logit_bias { ember_token token; float bias; } ember_logit_bias;

typedef struct ember_sampler_params {
    float temperature;     /* 0 = greedy (argmax)                          */
    int top_k;             /* 0 = off                                       */
    float top_p;           /* 1 = off                                       */
    float min_p;           /* 0 = off                                       */
    float repeat_penalty;  /* 1 = off                                       */
    int repeat_last_n;     /* how many recent tokens are penalised          */
    uint64_t seed;         /* same seed, same choices                       */
    const ember_allocator *allocator; /* NULL = libc                        */
    /* Added to a token's logit before anything else (-INFINITY: never
     * chosen).  The list is copied at creation. */
    const ember_logit_bias *logit_bias;
    int n_logit_bias;
} ember_sampler_params;

/* Thread-safe. */
EMBER_API ember_sampler_params ember_sampler_default_params(void);
/* Create a sampler for model's vocabulary (params NULL = defaults).  A bad
 * parameter fails with EMBER_ERR_INVALID_ARG and err naming it and its
 * value; *out_sampler is then NULL.  The caller owns the sampler (free it
 * before the model).  Thread-safe on a shared model.
 *
 * The functions below taking an ember_sampler report failures in the
 * sampler's message.  Thread-safety (all of them): one thread at a time per
 * sampler. */
EMBER_API ember_status ember_sampler_create(const ember_model *model,
                                            const ember_sampler_params *params,
                                            ember_sampler **out_sampler, ember_error *err);
/* NULL is allowed.  Thread-safety: nothing else may use the sampler. */
EMBER_API void ember_sampler_free(ember_sampler *sampler);
/* The message for the sampler's last call that can fail: "" if it
 * succeeded.  Owned by the sampler: valid until the next call on it.
 * Given NULL, a static "sampler is NULL". */
EMBER_API const char *ember_sampler_errmsg(const ember_sampler *sampler);
/* Forget the token history, reseed, restart an attached grammar.  Cannot
 * fail (a NULL sampler is ignored). */
EMBER_API void ember_sampler_reset(ember_sampler *sampler, uint64_t seed);
/* Choose a token from logits (n_vocab floats; not modified) into *out.
 * EMBER_ERR_GRAMMAR if an attached grammar allows no token of the
 * vocabulary (see ember_sampler_set_grammar); *out is then -1. */
EMBER_API ember_status ember_sampler_sample(ember_sampler *sampler,
                                            const float *logits, ember_token *out);
/* Record a token in the history used by the repetition penalty (and
 * advance the attached grammar over it).  EMBER_ERR_BAD_TOKEN (nothing
 * recorded) for a token outside the vocabulary. */
EMBER_API ember_status ember_sampler_accept(ember_sampler *sampler, ember_token token);

/* ---- grammars (constrained output) ------------------------------------------ */

/* A compiled grammar in llama.cpp's GBNF format: immutable once made, so
 * one grammar may be used by any number of samplers and threads at once.
 * Attached to a sampler, it restricts sampling to tokens that keep the text
 * a prefix of something the grammar accepts; an end-of-generation token is
 * allowed only where the text is complete, and is the only choice once
 * nothing more can follow (so ember_generate stops there). */
typedef struct ember_grammar ember_grammar;

/* Compile len bytes of GBNF text; root names the start rule (NULL =
 * "root").  allocator: NULL = libc (the hook is copied and used for the
 * grammar's whole life).  On failure *out is NULL and err's message says
 * "grammar line L, column C: what" (EMBER_ERR_INVALID_ARG) for a syntax
 * error, an undefined rule, left recursion, an empty language or too large
 * a grammar (repeats count at most 10000; a grammar at most 2^20 elements).
 * The caller owns the grammar (free it with ember_grammar_free() after
 * detaching it from every sampler).  Thread-safe (no shared state). */
EMBER_API ember_status ember_grammar_parse(const char *text, size_t len, const char *root,
                                           const ember_allocator *allocator,
                                           ember_grammar **out, ember_error *err);

/* A grammar accepting exactly one of n NUL-terminated strings (UTF-8), e.g.
 * {"attack", "flee", "talk"}.  The strings are copied.  Thread-safe. */
EMBER_API ember_status ember_grammar_from_strings(const char *const *strings, int n,
                                                  const ember_allocator *allocator,
                                                  ember_grammar **out, ember_error *err);

/* Convert a JSON Schema (len bytes of JSON) to GBNF text, the way llama.cpp's
 * json-schema-to-grammar shapes it (optional whitespace between tokens).
 * The subset: type object (properties, required; other properties are not
 * allowed), array (items, minItems, maxItems), string (minLength,
 * maxLength), number, integer, boolean, null, enum, const, anyOf/oneOf,
 * nested to any depth; a schema of {} or true is any JSON value.  The
 * text convention (buf, size, *out_len, EMBER_ERR_BUFFER_TOO_SMALL); a
 * schema outside the subset fails with err's message naming the problem.
 * Thread-safe. */
EMBER_API ember_status ember_json_schema_to_gbnf(const char *schema, size_t len,
                                                 char *buf, size_t size, size_t *out_len,
                                                 ember_error *err);

/* ember_json_schema_to_gbnf, then ember_grammar_parse.  Thread-safe. */
EMBER_API ember_status ember_grammar_from_json_schema(const char *schema, size_t len,
                                                      const ember_allocator *allocator,
                                                      ember_grammar **out, ember_error *err);

/* *accepted = 1 if the grammar accepts the whole text, 0 if not.  Fails
 * with EMBER_ERR_INVALID_ARG (a NULL argument) or EMBER_ERR_NOMEM (also
 * for a text too ambiguous for the parse's limits); a grammar has no
 * message of its own, so the status is all there is.  Thread-safe
 * (allocates its own parse state). */
EMBER_API ember_status ember_grammar_accepts(const ember_grammar *grammar,
                                             const char *text, size_t len, int *accepted);

/* Free a grammar (NULL is allowed); no sampler may still have it attached.
 * Thread-safety: no other thread may be using the grammar. */
EMBER_API void ember_grammar_free(ember_grammar *grammar);

/* Attach grammar to sampler (NULL detaches), starting from the grammar's
 * beginning.  The grammar is not copied: it must outlive the attachment.
 * The first attach builds the sampler's view of the vocabulary (each
 * token's text and a byte trie of them: tens of milliseconds for 150k
 * tokens), kept for later grammars.  Afterwards:
 *   ember_sampler_sample  picks only tokens the grammar allows, with the
 *       same distribution as masking every other token first, then applying
 *       top-k / top-p / min-p / temperature; it returns an end-of-generation
 *       token once the text is complete and nothing may follow, and fails
 *       with EMBER_ERR_GRAMMAR when no token of the vocabulary is allowed
 *       (or a grammar too ambiguous exceeded its work limit);
 *   ember_sampler_accept  advances the grammar over the token (a token the
 *       grammar does not allow leaves it allowing nothing until a reset);
 *   ember_sampler_reset   restarts the grammar.
 * Saved states (ember_state_save) do not include the grammar's position;
 * ember_state_load leaves it as it was.  Token texts are read as in the
 * middle of a text (SentencePiece's leading space kept).  Cost: the
 * candidates that can win are checked first; the whole vocabulary is
 * masked (a walk of the trie) only when they are rejected, or for every
 * token when temperature > 0 and top_k = 0.  Thread-safety: as the
 * sampler (one thread at a time); the grammar may be shared. */
EMBER_API ember_status ember_sampler_set_grammar(ember_sampler *sampler,
                                                 const ember_grammar *grammar);

/* ---- saved state and shared prefixes ---------------------------------------- */

/* A context's state as bytes: the tokens it holds, the KV rows they need
 * (a sliding-window layer only its window), the last logits and, if a
 * sampler is given, its random state and repetition history.  The size
 * grows with the positions held, not with n_ctx.  The bytes name the model
 * they belong to (a fingerprint of its hyperparameters and tensor table),
 * the KV type, and end in a checksum.  Failures of these functions are in
 * the context's message.  Thread-safety: as the context (and the sampler)
 * passed.  ember_state_size: 0 for a NULL context. */
EMBER_API size_t ember_state_size(const ember_context *ctx, const ember_sampler *sampler);
/* Save into buf of size bytes (buf may be NULL when size is 0); *written
 * (may be NULL) = the state's size.  Bytes, not text: no NUL.
 * EMBER_ERR_BUFFER_TOO_SMALL (nothing written) if size is less. */
EMBER_API ember_status ember_state_save(ember_context *ctx, const ember_sampler *sampler,
                                        void *buf, size_t size, size_t *written);
/* Restore into a context of the same model and KV type with room for the
 * positions (any n_batch, n_threads), and into sampler unless it is NULL.
 * The whole state is checked before anything changes: a truncated, damaged
 * or foreign state fails (EMBER_ERR_TRUNCATED, EMBER_ERR_CORRUPT,
 * EMBER_ERR_INVALID_ARG for another model or KV type, EMBER_ERR_CONTEXT_FULL)
 * with the context and sampler as they were. */
EMBER_API ember_status ember_state_load(ember_context *ctx, ember_sampler *sampler,
                                        const void *buf, size_t size);
EMBER_API ember_status ember_state_save_file(ember_context *ctx, const ember_sampler *sampler,
                                             const char *path);
EMBER_API ember_status ember_state_load_file(ember_context *ctx, ember_sampler *sampler,
                                             const char *path);

/* Make dst hold the first n positions of src (contexts of the same model
 * and KV type): a shared system prompt is evaluated once and copied to
 * every character.  dst's logits are src's when n is all src holds, else
 * none until dst evaluates.  Thread-safety: src is only read (other threads
 * may read it too); dst is written.  Failures are in dst's message. */
EMBER_API ember_status ember_context_copy_prefix(ember_context *dst, const ember_context *src, int n);

/* ---- generation ----------------------------------------------------------- */

/* Called for each generated token.  text holds the bytes that became
 * complete UTF-8 with this token (possibly 0 bytes).  Return nonzero to stop.
 * If generation ends with bytes that never formed a complete character, one
 * last call passes them with token = -1, so no byte is lost.  text is not
 * NUL-terminated and is valid only during the call.  Called from the
 * thread that called ember_generate. */
typedef int (*ember_token_callback)(void *user_data, ember_token token,
                                    const char *text, size_t len);

typedef enum ember_stop_reason {
    EMBER_STOP_NONE = 0,
    EMBER_STOP_EOG = 1,          /* the model produced an end token        */
    EMBER_STOP_LENGTH = 2,       /* n_predict tokens were generated        */
    EMBER_STOP_CONTEXT_FULL = 3, /* the KV cache is full                   */
    EMBER_STOP_CALLBACK = 4,     /* the callback returned nonzero          */
    EMBER_STOP_STRING = 5        /* a stop string appeared (not passed on) */
} ember_stop_reason;

typedef struct ember_generate_result {
    int n_prompt;        /* prompt tokens evaluated                         */
    int n_generated;     /* tokens generated                                */
    ember_stop_reason stop;
    double prompt_seconds, generate_seconds;
} ember_generate_result;

/* Evaluate prompt tokens (appended to what the context holds), then sample
 * up to n_predict tokens, feeding each back and streaming it through cb.
 * n_prompt may be 0 if the context already holds tokens.  The end token is
 * not passed to cb.  A prompt that does not fit fails with
 * EMBER_ERR_CONTEXT_FULL; reaching the end of the context during
 * generation stops with EMBER_STOP_CONTEXT_FULL and returns EMBER_OK.  A
 * sampler's failure (EMBER_ERR_GRAMMAR) ends generation with that status,
 * its message copied to the context's.  result may be NULL.
 * Thread-safety: as the context and the sampler. */
EMBER_API ember_status ember_generate(ember_context *ctx, ember_sampler *sampler,
                                      const ember_token *prompt, int n_prompt,
                                      int n_predict, ember_token_callback cb,
                                      void *user_data, ember_generate_result *result);

/* Stop strings for ember_generate and ember_step (copied; n = 0 clears).
 * Generation stops when the text contains one, matched across token
 * boundaries; the text before it is passed on, the stop string and what
 * follows are not.  Text that may still become a stop string is held back
 * until it cannot (never passed on and then retracted); at the end of
 * generation held-back bytes are passed with token = -1.  The strings are
 * copied (the caller keeps ownership of stops).  Thread-safety: as the
 * context (one thread at a time). */
EMBER_API ember_status ember_context_set_stop_strings(ember_context *ctx, const char *const *stops, int n);

/* One generation step for a game loop: sample the next token from the
 * context's logits, accept it, and unless it ends generation, evaluate it.
 * text receives the bytes that became final with this token (complete
 * UTF-8, stop strings held back) and a NUL; out->len is their count.  As a
 * step cannot be taken back, size must be at least ember_step_text_size()
 * (else EMBER_ERR_BUFFER_TOO_SMALL before anything happens), so the text is
 * never cut.  The context must hold logits (a prompt evaluated).
 * Thread-safety: as the context and sampler.  ember_step_text_size: 0 for a
 * NULL context; it grows with ember_context_set_stop_strings. */
typedef struct ember_step_result {
    ember_token token;       /* the token chosen                              */
    ember_stop_reason stop;  /* EMBER_STOP_NONE: go on; EOG, STRING or
                                CONTEXT_FULL: generation ended with it        */
    size_t len;              /* bytes written to text                         */
} ember_step_result;
EMBER_API size_t ember_step_text_size(const ember_context *ctx);
EMBER_API ember_status ember_step(ember_context *ctx, ember_sampler *sampler, char *text,
                                  size_t size, ember_step_result *out);

/* Convenience: tokenize text (with BOS; "" = BOS only) and ember_generate().
 * Thread-safety: as ember_generate. */
EMBER_API ember_status ember_generate_text(ember_context *ctx, ember_sampler *sampler,
                                           const char *prompt, int n_predict,
                                           ember_token_callback cb, void *user_data,
                                           ember_generate_result *result);

/* ---- perplexity ----------------------------------------------------------- */

typedef struct ember_perplexity_result {
    double ppl;        /* exp(mean negative log-likelihood)                 */
    double ppl_err;    /* its standard error, as llama.cpp reports it       */
    double mean_nll;
    int n_chunks;      /* chunks of n_ctx tokens                            */
    int n_scored;      /* tokens scored                                     */
} ember_perplexity_result;

/* Called after each chunk, from the calling thread; return nonzero to
 * cancel. */
typedef int (*ember_progress_callback)(void *user_data, int chunk,
                                       int n_chunks, double ppl_so_far);

/* Perplexity of text exactly as llama.cpp's perplexity tool computes it:
 * tokenize with BOS, cut into chunks of n_ctx (the context's size) tokens,
 * make each chunk's first token BOS, score the second half of each chunk.
 * Needs at least 2 * n_ctx tokens (else EMBER_ERR_TOO_SHORT).  Clears the
 * context's KV cache.  Thread-safety: as the context. */
EMBER_API ember_status ember_perplexity(ember_context *ctx, const char *text, size_t len,
                                        ember_progress_callback cb, void *user_data,
                                        ember_perplexity_result *result);

/* ---- chat ------------------------------------------------------------------- */

/* A conversation is a list of messages; role is "system", "user",
 * "assistant" (or another role the model's template knows, e.g. "tool").
 * Both strings are NUL-terminated UTF-8. */
typedef struct ember_chat_message {
    const char *role;
    const char *content;
} ember_chat_message;

typedef struct ember_chat_params {
    const char *template_name; /* NULL: the model's tokenizer.chat_template.
                                  Else a built-in format name ("llama3",
                                  "chatml", "qwen3", ...: see
                                  ember_chat_template_name) or a Jinja
                                  template text to recognise             */
    int add_generation_prompt; /* 1 (default): end with the assistant's
                                  header, so the model writes the reply   */
    int enable_thinking;       /* 1 (default); 0 = Qwen3's
                                  enable_thinking=false (an empty think
                                  block); formats without thinking ignore it */
    const char *date;          /* "YYYY-MM-DD" for the templates that print
                                  today's date (Llama 3.2, Granite 3.3);
                                  NULL = today, local time               */
    const char *bos_token, *eos_token; /* the text templates print for BOS
                                  and EOS; NULL = the model's tokens ("" if
                                  there is no model)                      */
    const ember_allocator *allocator;  /* NULL = libc                      */
} ember_chat_params;

/* Defaults: the model's template, generation prompt on, thinking on,
 * today's date, the model's BOS/EOS, libc allocation.  Thread-safe. */
EMBER_API ember_chat_params ember_chat_default_params(void);

/* Render messages as the prompt text the model was trained on, in its chat
 * format: the format of the model's tokenizer.chat_template (recognised by
 * marker strings as llama.cpp does, then rendered by ember's built-in
 * renderer, byte for byte as the Jinja template renders plain text
 * messages), or the one params->template_name names.  An unrecognised or
 * missing template is an error (EMBER_ERR_UNSUPPORTED / EMBER_ERR_MISSING)
 * whose message says why; no format is guessed (ember_chat_template_name
 * lists the formats a caller may name instead).  A conversation the
 * template itself refuses (e.g. roles that do not alternate where it
 * requires them, a system message for Gemma 2) fails with
 * EMBER_ERR_INVALID_ARG.  model may be NULL if template_name is given (then
 * BOS/EOS text come from params or are "").  Works on vocab_only models.
 * The text convention (buf, size, *out_len, EMBER_ERR_BUFFER_TOO_SMALL),
 * failures in err.  The output holds special-token text ("<|im_start|>",
 * the BOS text...): tokenize it with EMBER_TOKENIZE_SPECIAL, and put BOS
 * first only if the model asks for one and the text does not start with it
 * (never EOS at the end: ember_chat does this).
 * Thread-safe (reads the model only). */
EMBER_API ember_status ember_chat_apply(const ember_model *model, const ember_chat_params *params,
                                        const ember_chat_message *messages, int n_messages,
                                        char *buf, size_t size, size_t *out_len, ember_error *err);

/* The built-in format a Jinja template text is recognised as ("qwen3"), or
 * NULL.  Static strings.  Thread-safe. */
EMBER_API const char *ember_chat_template_detect(const char *template_text);
/* The i-th built-in format name, NULL past the last.  Thread-safe. */
EMBER_API const char *ember_chat_template_name(int i);

/* A conversation that keeps its context's KV cache between turns: each
 * reply renders the whole conversation, keeps the tokens the context already
 * holds up to the first difference (rolling back with ember_context_set_pos
 * where the template renders earlier turns differently, as Qwen3 drops old
 * reasoning), and evaluates only the rest.  While it lives, the chat owns
 * the context's cache: other use of ctx (set_pos, eval) is allowed but
 * costs re-evaluation.  One thread at a time, like its context. */
typedef struct ember_chat ember_chat;

/* Create a conversation for ctx, which must be a context of model.  params
 * may be NULL (defaults); its strings are copied, so they need not outlive
 * the call; the model and the context must outlive the chat.  Fails at once
 * (and sets *out_chat to NULL) if the template cannot be rendered.  Memory
 * comes from params->allocator.  The caller owns the chat.  Thread-safe on
 * a shared model; the chat is then used like its context, by one thread at
 * a time, and reports failures in its own message (ember_chat_errmsg). */
EMBER_API ember_status ember_chat_create(const ember_model *model, ember_context *ctx,
                                         const ember_chat_params *params,
                                         ember_chat **out_chat, ember_error *err);
/* Free the chat and its messages (not the model, context or sampler).
 * NULL is allowed.  Thread-safety: nothing else may use the chat. */
EMBER_API void ember_chat_free(ember_chat *chat);

/* Append a message (role and content are copied).  Thread-safety, for this
 * and the functions below: one thread at a time per chat (and, for
 * ember_chat_respond, its context). */
EMBER_API ember_status ember_chat_add(ember_chat *chat, const char *role, const char *content);
/* Remove count messages from index first (e.g. the oldest turns when the
 * context is full).  The next reply re-evaluates from the first change. */
EMBER_API ember_status ember_chat_erase(ember_chat *chat, int first, int count);
/* Getters that cannot fail (0 / NULL for a NULL chat).  Thread-safety: as
 * the chat. */
EMBER_API int ember_chat_n_messages(const ember_chat *chat);
/* Message i (0-based), or NULL.  Owned by the chat: valid until the chat
 * changes (add, erase, respond) or is freed. */
EMBER_API const ember_chat_message *ember_chat_message_at(const ember_chat *chat, int i);

/* Generate the assistant's reply to the conversation (streamed through cb,
 * as ember_generate does, up to n_predict tokens; cb may be NULL, or return
 * nonzero to stop early) and append it as an "assistant" message.  sampler
 * is the caller's and may be shared by several chats used in turn.  If the
 * rendered conversation does not fit in the context, fails with
 * EMBER_ERR_CONTEXT_FULL and changes nothing: erase earlier turns and call
 * again.  A reply cut by a full context stops with
 * result->stop = EMBER_STOP_CONTEXT_FULL (and is appended as far as it
 * got).  Errors are described by ember_chat_errmsg() (a failure of the
 * context or sampler with their message).  Thread-safety: as the chat, its
 * context and the sampler. */
EMBER_API ember_status ember_chat_respond(ember_chat *chat, ember_sampler *sampler, int n_predict,
                                          ember_token_callback cb, void *user_data,
                                          ember_generate_result *result);
/* The message for the chat's last call that can fail: "" if it succeeded.
 * Owned by the chat: valid until the next call on it.  Given NULL, a
 * static "chat is NULL". */
EMBER_API const char *ember_chat_errmsg(const ember_chat *chat);

/* ---- system ----------------------------------------------------------------- */

/* The SIMD kernel set ember uses on this CPU ("avx512", "avx2", "neon",
 * "scalar").  Static storage; thread-safe. */
EMBER_API const char *ember_cpu_features(void);

/* ---- quantization ------------------------------------------------------------ */

/* ember_quantize writes a copy of a GGUF model of F32, F16 or BF16 weights
 * with its matrices quantized as llama.cpp's llama-quantize does without an
 * importance matrix: the same type for each tensor (llama.cpp's rules: the
 * output head Q6_K, more bits for attn_v / ffn_down in some layers of the
 * _M mixes, rows that are not a whole number of 256-blocks falling back to a
 * 32-block type, norms and 1-D tensors kept), the same quantized bytes, and
 * every KV of the input with general.file_type and
 * general.quantization_version = 2 set.  The output is written tensor by
 * tensor (never held in memory whole). */
typedef struct ember_quantize_params {
    const char *type;          /* a name from ember_quantize_type_name, any case
                                  ("q4_k_m", "Q8_0", ...); default "q4_k_m" */
    int n_threads;             /* <= 0: one per core */
    /* Called before each tensor is written (tensor = 0 .. n_tensors-1, name
     * valid during the call), from the calling thread; return nonzero to
     * stop (EMBER_ERR_CANCELLED, the output file is removed).  May be NULL. */
    int (*progress)(void *user_data, int tensor, int n_tensors, const char *name);
    void *user_data;
    const ember_allocator *allocator;   /* NULL: libc */
} ember_quantize_params;

EMBER_API ember_quantize_params ember_quantize_default_params(void);

/* Quantize in_path into out_path (created or replaced).  Fails with
 * EMBER_ERR_INVALID_ARG for an unknown type or out_path naming the input,
 * EMBER_ERR_UNSUPPORTED for an input whose weights are already quantized
 * (or a split file), EMBER_ERR_IO if a file cannot be read or written, and
 * the GGUF reader's codes for a broken input; err (may be NULL) gets the
 * message.  On failure no partial output file is left.  Thread-safety: any
 * number of calls may run at once (on different output files). */
EMBER_API ember_status ember_quantize(const char *in_path, const char *out_path,
                                     const ember_quantize_params *params, ember_error *err);

/* The i-th type name ember_quantize knows (i = 0, 1, ...), NULL past the
 * last: q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k_s q3_k_m q3_k_l q3_k q4_k_s
 * q4_k_m q4_k q5_k_s q5_k_m q5_k q6_k iq4_nl iq4_xs f16 bf16 f32 (q3_k, q4_k
 * and q5_k are the _m mixes, as in llama-quantize).  Static strings. */
EMBER_API const char *ember_quantize_type_name(int i);

#ifdef __cplusplus
}
#endif
#endif /* EMBER_H */
