/* tokenizer.h - SentencePiece-style BPE ("llama") and byte-level BPE
 * ("gpt2": GPT-2, Llama 3, ...) tokenizers, built from a vocabulary
 * described through callbacks (the model loader reads them from GGUF
 * metadata).  Needs no kernels and no file format.  An etok is immutable
 * after creation and safe to share between threads. */
#ifndef EMBER_TOKENIZER_H
#define EMBER_TOKENIZER_H

#include "common.h"

enum etok_kind { ETOK_SPM = 1, ETOK_BPE = 2 };
/* Pre-tokenizer for ETOK_BPE: the split steps (and normalization) of a
 * tokenizer.ggml.pre name, from the table in tokenizer.c (etok_pre_lookup). */
enum etok_pre { ETOK_PRE_DEFAULT = 0, ETOK_PRE_GPT2 = 1, ETOK_PRE_LLAMA3 = 2, ETOK_PRE_QWEN2 = 3,
                ETOK_PRE_SMOLLM = 4, ETOK_PRE_FALCON = 5, ETOK_PRE_DEEPSEEK_LLM = 6,
                ETOK_PRE_DEEPSEEK_CODER = 7, ETOK_PRE_TEKKEN = 8, ETOK_PRE_GPT4O = 9 };
/* Token types, as tokenizer.ggml.token_type stores them. */
enum etok_ttype { ETOK_T_NORMAL = 1, ETOK_T_UNKNOWN = 2, ETOK_T_CONTROL = 3,
                  ETOK_T_USER_DEFINED = 4, ETOK_T_UNUSED = 5, ETOK_T_BYTE = 6 };

typedef struct etok_desc {
    int kind;                 /* enum etok_kind */
    int pre;                  /* enum etok_pre */
    int32_t n_vocab;
    int32_t n_merges;         /* ETOK_BPE: merges "A B" in rank order */
    void *ud;                 /* passed to the callbacks */
    /* token text (GGUF form: U+2581 for spaces in SPM, GPT-2 byte alphabet in BPE) */
    void (*token_text)(void *ud, int32_t id, const char **p, size_t *n);
    float (*token_score)(void *ud, int32_t id);      /* may be NULL (all 0) */
    int (*token_type)(void *ud, int32_t id);         /* may be NULL (all normal) */
    void (*merge_text)(void *ud, int32_t i, const char **p, size_t *n);  /* ETOK_BPE */
    int32_t bos, eos, eot, unk, pad;                 /* -1 = none */
    int32_t eom_plus1;        /* tokenizer.ggml.eom_token_id + 1 (0 = none, as in a zeroed desc) */
    int add_bos;              /* tokenizer.ggml.add_bos_token */
    int add_space_prefix;     /* SPM dummy prefix (default 1) */
    int add_eos;              /* tokenizer.ggml.add_eos_token */
    int general_split;        /* tests: never use the hand-written GPT-2 / cl100k splitters */
} etok_desc;

typedef struct etok etok;

/* Build the tokenizer (copies what it needs; the callbacks are not kept).
 * Errors: EMBER_ERR_CORRUPT (bad vocabulary: token type outside 0..6 (0 is
 * taken as normal), NaN score, bos/eos/eot/unk/pad outside -1..n_vocab-1,
 * a merge that is not "A B" or whose A, B or A+B is not a token),
 * EMBER_ERR_UNSUPPORTED (kind or pre-tokenizer), EMBER_ERR_NOMEM; message
 * in err.  Tolerated: duplicate texts (the lowest id of a normal /
 * user-defined / unused token wins), empty texts (never matched), a merge
 * listed twice (its first rank counts).  ETOK_PRE_DEFAULT with ETOK_BPE
 * means the GPT-2 regex (llama.cpp's "default" is a four-step falcon-like
 * split; no released model names it).  Unicode 14 (unicode_tables.h):
 * general categories, White_Space, simple case folding, NFC. */
/* The etok_pre of a tokenizer.ggml.pre name (len bytes), or -1. */
EMBER_INTERNAL int etok_pre_lookup(const char *name, size_t len);
/* Split pattern number step of pre-tokenizer pre (NULL past the last; a
 * leading \x01 marks a step on the byte-level text).  For tests. */
EMBER_INTERNAL const char *etok_pre_pattern(int pre, int step);
/* Compile pattern and split text with it as Hugging Face's Split(Isolated)
 * does: writes the byte offsets where pieces end to ends (up to cap),
 * returns the piece count, or -1 with a message in err for a pattern the
 * matcher does not support, -2 when out of memory.  For tests. */
EMBER_INTERNAL int64_t etok_split_test(const char *pattern, const char *text, size_t len, size_t *ends, size_t cap,
                                       char *err, size_t errlen);

EMBER_INTERNAL int etok_create(const etok_desc *d, const ember_allocator *a, etok **out,
                               char *err, size_t errlen);
EMBER_INTERNAL void etok_free(etok *t);

enum { ETOK_ADD_BOS = 1, ETOK_PARSE_SPECIAL = 2 };

/* Encode len bytes of text.  Writes up to cap ids; *n_out = the full count.
 * Returns EMBER_OK, EMBER_ERR_BUFFER_TOO_SMALL (cap too small; *n_out is
 * the count needed), EMBER_ERR_NOMEM, EMBER_ERR_INVALID_ARG (len > 1 GiB).
 * Scratch memory comes from the tokenizer's allocator; no quadratic
 * behaviour on long inputs (O(n log n)).
 * Special tokens: USER_DEFINED texts are always cut out of the text (as
 * sentencepiece, Hugging Face and llama.cpp do); CONTROL and UNKNOWN texts
 * only with ETOK_PARSE_SPECIAL; leftmost, then longest match.  The text
 * between them is encoded normally; for SPM each such piece gets the dummy
 * prefix (llama.cpp's behaviour after a special token).
 * Any bytes are accepted: SPM sends each invalid UTF-8 byte to its <0xNN>
 * token (unk without byte tokens; a run of unknowns is one unk, as
 * sentencepiece does); byte-level BPE treats an invalid byte as a one-byte
 * character that is neither letter, number nor space, so decoding gives the
 * input back exactly. */
EMBER_INTERNAL int etok_encode(const etok *t, const char *text, size_t len, int flags,
                               int32_t *out, int32_t cap, int32_t *n_out);

/* Bytes token id contributes to decoded text (prev = previous token id or
 * -1 at the start).  Returns the length (may exceed size; nothing is
 * NUL-terminated) or a negative status for a bad id.  Control tokens
 * contribute nothing unless flags & ETOK_PARSE_SPECIAL (then their text).
 * SPM: U+2581 -> space, <0xNN> -> the byte, unknown -> " U+2047 "
 * (sentencepiece's surface), and the leading space of a piece is dropped
 * when prev is -1 or BOS and the dummy prefix is on.  BPE: the GPT-2 byte
 * alphabet undone; user-defined tokens give their text. */
EMBER_INTERNAL int etok_piece(const etok *t, int32_t id, int32_t prev, int flags, char *buf, size_t size);

EMBER_INTERNAL int32_t etok_n_vocab(const etok *t);
EMBER_INTERNAL int32_t etok_bos(const etok *t);
EMBER_INTERNAL int32_t etok_eos(const etok *t);
EMBER_INTERNAL int etok_add_bos(const etok *t);
EMBER_INTERNAL int etok_add_eos(const etok *t);
/* End of generation: eos, eot, eom, and the tokens whose text llama.cpp
 * stops at (<|im_end|>, <end_of_turn>, <|eot_id|>, <|endoftext|>, fim
 * pad/repo/separator tokens, ...; see etok_create). */
EMBER_INTERNAL int etok_is_eog(const etok *t, int32_t id);
EMBER_INTERNAL int etok_kind(const etok *t);

#endif
