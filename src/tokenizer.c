/* tokenizer.c - SentencePiece BPE ("llama") and byte-level BPE ("gpt2")
 * tokenizers.  See tokenizer.h and shared/tokenizers/README.md.
 *
 * Design:
 *  - Vocabulary: token texts are copied into one buffer; an open-addressing
 *    hash map (sized at creation) maps key bytes -> id.  SPM keys are the
 *    GGUF texts (U+2581 for spaces); BPE keys are the raw bytes (GPT-2 byte
 *    alphabet undone), so the pre-tokenizer's byte ranges are looked up
 *    directly.  BPE merges go into a second map (id_a, id_b) -> (rank, id).
 *  - Special tokens (CONTROL, USER_DEFINED, UNKNOWN texts) sit in a byte
 *    trie; the input is cut at the leftmost, longest special text.
 *    USER_DEFINED texts are always cut out (as sentencepiece, Hugging Face
 *    and llama.cpp do); CONTROL and UNKNOWN only with ETOK_PARSE_SPECIAL.
 *  - SPM: symbols (code points, or single invalid bytes) in a linked list
 *    and a binary heap of candidate pairs keyed (score desc, position asc);
 *    stale heap entries are detected by the lengths of the two symbols, as
 *    sentencepiece does.  When no mergeable piece contains U+2581 after a
 *    non-U+2581 character (true for Llama 2), the text is processed in
 *    independent segments that start at such a U+2581 - the result is
 *    identical and the heaps stay small.
 *  - BPE: the GPT-2 or Llama 3 regex as hand-written matchers over code
 *    points, then per pre-token: whole-token lookup, else lowest-rank merge
 *    (leftmost on ties) - a plain array scan for short words, a heap for
 *    long ones (O(n log n)).
 *  - Everything an encode call needs beyond the immutable tokenizer is
 *    allocated per call and freed before it returns: thread-safe.
 *
 * Vocabulary validation (etok_create): ids of bos/eos/eot/unk/pad must be -1
 * or in range, token types 0..6 (0 = normal), scores finite; BPE merges must
 * be "A B" with A, B and A+B all tokens (else EMBER_ERR_CORRUPT, as Hugging
 * Face tokenizers rejects them); a repeated merge keeps its first rank.
 * Duplicate token texts are tolerated (real GGUF vocabularies have them):
 * the text maps to the lowest id among mergeable tokens.  Empty texts are
 * tolerated (never matched).
 */
#include "tokenizer.h"
#include "unicode_tables.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define ETOK_MAX_TEXT 0x3FFFFFFFu   /* largest input accepted (1 GiB) */
#define ETOK_EMPTY64 UINT64_MAX
#define ETOK_MAX_EOG 16

typedef struct etok_slot {
    uint64_t kw;        /* first 8 key bytes, zero padded */
    uint32_t tag;       /* hash bits | key length (capped at 255) */
    int32_t id1;        /* id + 1, 0 = empty */
} etok_slot;

struct etok {
    ember_allocator alloc;
    const ember_allocator *a;       /* &alloc or NULL (libc) */
    int kind, pre;
    int32_t n_vocab;
    int32_t bos, eos, eot, unk, pad;
    int add_bos, add_space_prefix;
    uint8_t *type;                  /* [n_vocab] */
    float *score;                   /* [n_vocab] */
    /* map keys: SPM = GGUF text, BPE = raw bytes (== dec) */
    char *kbuf; uint32_t *koff;     /* koff[n_vocab + 1] */
    /* decoded bytes (etok_piece) */
    char *dbuf; uint32_t *doff;
    uint32_t max_key;               /* longest key */
    /* key -> id */
    etok_slot *smap; uint32_t smask;
    /* BPE merges (a << 32 | b) -> rank, result */
    uint64_t *pkey; int32_t *prank, *pres; uint32_t pmask;
    int32_t byte_tok[256];
    int has_byte_fallback;          /* SPM: any <0xNN> token */
    /* special-token trie: edge (node << 8 | byte) -> child */
    uint64_t *tkey; int32_t *tchild; uint32_t tmask;
    int32_t *tterm; int32_t n_nodes;
    uint8_t first_ud[256], first_sp[256];  /* first bytes: user-defined / any special */
    int has_ud, has_sp;
    int spm_split_ok;
    int32_t *spm_pair;              /* SPM: [129 * 129] ids of two-symbol pieces
                                       over ASCII and U+2581 (index 128), or -1 */
    int32_t spm_leaf[129];          /* SPM: etok_lookup of each of those characters */
    uint32_t *skey;                 /* SPM: [n_vocab] etok_score_key(score) of a
                                       mergeable piece, UINT32_MAX for the rest */
    int has_unused;                 /* SPM: any UNUSED piece */
    int32_t eog[ETOK_MAX_EOG]; int n_eog;
};

/* ---------------------------------------------------------------- hashing */

static inline uint64_t etok_hash(const unsigned char *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xA0761D6478BD642Full);
    while (n > 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        p += 8; n -= 8;
    }
    uint64_t w;
    if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, p, 4);
        memcpy(&y, p + n - 4, 4);
        w = (uint64_t)x << 32 | y;
    } else if (n > 0) {
        w = (uint64_t)p[0] << 16 | (uint64_t)p[n >> 1] << 8 | p[n - 1];
    } else {
        w = 0;
    }
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    h *= 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    return h;
}

static inline uint64_t etok_mix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    k *= 0xC4CEB9FE1A85EC53ull;
    k ^= k >> 33;
    return k;
}

/* the first min(n, 8) bytes of p as a zero-padded little-endian word */
static inline uint64_t etok_load8(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (n >= 8) { memcpy(&w, p, 8); return w; }
    if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, p, 4);
        memcpy(&y, p + n - 4, 4);
        return (uint64_t)x | (uint64_t)y << ((n - 4) * 8);
    }
    if (n > 0) w = (uint64_t)p[0] | (uint64_t)p[n >> 1] << ((n >> 1) * 8) | (uint64_t)p[n - 1] << ((n - 1) * 8);
    return w;
#else
    for (size_t i = 0; i < n && i < 8; i++) w |= (uint64_t)p[i] << (8 * i);
    return w;
#endif
}

/* hash of a key, and its first-8-bytes word (stored in the slot) */
static inline uint64_t etok_keyhash(const char *s, size_t n, uint64_t *kw) {
    *kw = etok_load8(s, n);
    if (n <= 8) return etok_mix64(*kw ^ ((uint64_t)n * 0xA0761D6478BD642Full));
    return etok_hash((const unsigned char *)s, n);
}

static inline uint32_t etok_tag(uint64_t h, size_t n) {
    return (uint32_t)((h >> 32) & 0xFFFFFF00u) | (uint32_t)(n < 255 ? n : 255);
}

/* etok_lookup with the hash (and word) already computed */
static inline int32_t etok_lookup_h(const etok *t, const char *s, size_t n, uint64_t h, uint64_t kw) {
    uint32_t tag = etok_tag(h, n), i = (uint32_t)h & t->smask;
    for (;;) {
        const etok_slot *e = &t->smap[i];
        if (!e->id1) return -1;
        if (e->tag == tag && e->kw == kw) {
            int32_t id = e->id1 - 1;
            if (n <= 8) return id;   /* the word holds the whole key */
            if (t->koff[id + 1] - t->koff[id] == n && memcmp(t->kbuf + t->koff[id] + 8, s + 8, n - 8) == 0)
                return id;
        }
        i = (i + 1) & t->smask;
    }
}

static inline int32_t etok_lookup(const etok *t, const char *s, size_t n) {
    if (n == 0 || n > t->max_key) return -1;
    uint64_t kw, h = etok_keyhash(s, n, &kw);
    return etok_lookup_h(t, s, n, h, kw);
}

static inline void etok_prefetch(const void *p) {
#if defined(__GNUC__)
    __builtin_prefetch(p);
#else
    (void)p;
#endif
}

/* inserts id unless its key is already present */
static void etok_insert(etok *t, int32_t id) {
    size_t n = t->koff[id + 1] - t->koff[id];
    if (n == 0) return;
    const char *s = t->kbuf + t->koff[id];
    if (etok_lookup(t, s, n) >= 0) return;
    uint64_t kw, h = etok_keyhash(s, n, &kw);
    uint32_t i = (uint32_t)h & t->smask;
    while (t->smap[i].id1) i = (i + 1) & t->smask;
    t->smap[i].kw = kw;
    t->smap[i].tag = etok_tag(h, n);
    t->smap[i].id1 = id + 1;
}

static inline int etok_pair_find(const etok *t, int32_t a, int32_t b, int32_t *rank, int32_t *res) {
    if (!t->pkey || a < 0 || b < 0) return 0;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t i = (uint32_t)etok_mix64(k) & t->pmask;
    for (;;) {
        uint64_t o = t->pkey[i];
        if (o == k) { *rank = t->prank[i]; *res = t->pres[i]; return 1; }
        if (o == ETOK_EMPTY64) return 0;
        i = (i + 1) & t->pmask;
    }
}

/* -------------------------------------------------------------- utilities */

static uint32_t etok_pow2_above(uint64_t n) {
    uint64_t c = 16;
    while (c < n) c <<= 1;
    return (uint32_t)c;
}

/* float -> uint32 with the same order; then inverted (higher score first) */
static inline uint32_t etok_score_key(float s) {
    uint32_t u;
    memcpy(&u, &s, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~u;
}

static int etok_is_mergeable(int type) {
    return type == ETOK_T_NORMAL || type == ETOK_T_USER_DEFINED || type == ETOK_T_UNUSED;
}

/* GPT-2 byte alphabet, inverse: code point -> byte, or -1. */
static int etok_u2b(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp >= 0x100 && cp <= 0x143) {
        unsigned n = cp - 0x100;
        if (n <= 32) return (int)n;
        if (n <= 66) return (int)(0x7F + n - 33);
        return 0xAD;
    }
    return -1;
}

/* Undo the byte alphabet: writes at most n bytes to out (never more than
 * the input length); characters outside the alphabet are copied as-is. */
static size_t etok_unalpha(const char *s, size_t n, char *out) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint32_t cp;
        int l = ec_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (l <= 0) { out[o++] = s[i++]; continue; }
        int b = etok_u2b(cp);
        if (b >= 0) { out[o++] = (char)b; }
        else { memcpy(out + o, s + i, (size_t)l); o += (size_t)l; }
        i += (size_t)l;
    }
    return o;
}

static int etok_hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* "<0xNN>" -> NN, else -1 */
static int etok_byte_piece(const char *s, size_t n) {
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int h = etok_hexval((unsigned char)s[3]), l = etok_hexval((unsigned char)s[4]);
    if (h < 0 || l < 0) return -1;
    return h * 16 + l;
}

/* --------------------------------------------------------------- creation */

void etok_free(etok *t) {
    if (!t) return;
    const ember_allocator *a = t->a;
    if (t->kbuf != t->dbuf) { ec_free(a, t->kbuf); ec_free(a, t->koff); }
    ec_free(a, t->dbuf); ec_free(a, t->doff);
    ec_free(a, t->type); ec_free(a, t->score);
    ec_free(a, t->smap);
    ec_free(a, t->pkey); ec_free(a, t->prank); ec_free(a, t->pres);
    ec_free(a, t->tkey); ec_free(a, t->tchild); ec_free(a, t->tterm);
    ec_free(a, t->spm_pair);
    ec_free(a, t->skey);
    ec_free(a, t);
}

static int etok_trie_child(etok *t, int32_t node, unsigned char b, int create) {
    uint64_t k = (uint64_t)(uint32_t)node << 8 | b;
    uint32_t i = (uint32_t)etok_mix64(k) & t->tmask;
    for (;;) {
        if (t->tkey[i] == k) return t->tchild[i];
        if (t->tkey[i] == ETOK_EMPTY64) {
            if (!create) return -1;
            t->tkey[i] = k;
            t->tchild[i] = t->n_nodes;
            t->tterm[t->n_nodes] = -1;
            return t->n_nodes++;
        }
        i = (i + 1) & t->tmask;
    }
}

static int etok_trie_child_c(const etok *t, int32_t node, unsigned char b) {
    uint64_t k = (uint64_t)(uint32_t)node << 8 | b;
    uint32_t i = (uint32_t)etok_mix64(k) & t->tmask;
    for (;;) {
        if (t->tkey[i] == k) return t->tchild[i];
        if (t->tkey[i] == ETOK_EMPTY64) return -1;
        i = (i + 1) & t->tmask;
    }
}

static int etok_is_special_type(int type) {
    return type == ETOK_T_CONTROL || type == ETOK_T_USER_DEFINED || type == ETOK_T_UNKNOWN;
}

int etok_create(const etok_desc *d, const ember_allocator *a, etok **out,
                char *err, size_t errlen) {
    if (out) *out = NULL;
    if (!d || !out) return ec_errorf(err, errlen, EMBER_ERR_INVALID_ARG, "tokenizer: NULL argument");
    if (d->kind != ETOK_SPM && d->kind != ETOK_BPE)
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "tokenizer: unsupported tokenizer kind %d", d->kind);
    if (d->kind == ETOK_BPE && d->pre != ETOK_PRE_DEFAULT && d->pre != ETOK_PRE_GPT2 && d->pre != ETOK_PRE_LLAMA3)
        return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "tokenizer: unsupported pre-tokenizer %d", d->pre);
    if (d->n_vocab <= 0 || d->n_vocab > (1 << 30) || !d->token_text)
        return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer: bad vocabulary size %d", (int)d->n_vocab);
    if (d->kind == ETOK_BPE && (d->n_merges < 0 || (d->n_merges > 0 && !d->merge_text)))
        return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer: bad merge count %d", (int)d->n_merges);
    const int32_t n = d->n_vocab;
    const int32_t sp[5] = { d->bos, d->eos, d->eot, d->unk, d->pad };
    static const char *const spn[5] = { "bos", "eos", "eot", "unk", "pad" };
    for (int i = 0; i < 5; i++)
        if (sp[i] < -1 || sp[i] >= n)
            return ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer: %s id %d outside the vocabulary (%d tokens)",
                             spn[i], (int)sp[i], (int)n);

    etok *t = ec_calloc(a, 1, sizeof *t);
    if (!t) return ec_errorf(err, errlen, EMBER_ERR_NOMEM, "tokenizer: out of memory");
    if (a) { t->alloc = *a; t->a = &t->alloc; }
    a = t->a;
    int rc = EMBER_ERR_NOMEM;
    char *scratch = NULL;
    t->kind = d->kind;
    t->pre = d->kind == ETOK_BPE ? (d->pre == ETOK_PRE_LLAMA3 ? ETOK_PRE_LLAMA3 : ETOK_PRE_GPT2) : ETOK_PRE_DEFAULT;
    t->n_vocab = n;
    t->bos = d->bos; t->eos = d->eos; t->eot = d->eot; t->unk = d->unk; t->pad = d->pad;
    t->add_bos = d->add_bos != 0;
    t->add_space_prefix = d->add_space_prefix != 0;
    t->type = ec_malloc(a, (size_t)n);
    t->score = ec_malloc(a, (size_t)n * sizeof(float));
    t->doff = ec_malloc(a, ((size_t)n + 1) * sizeof(uint32_t));
    if (!t->type || !t->score || !t->doff) goto fail;

    /* types, scores, total text size */
    uint64_t total = 0;
    size_t maxlen = 0;
    for (int32_t i = 0; i < n; i++) {
        int ty = d->token_type ? d->token_type(d->ud, i) : ETOK_T_NORMAL;
        if (ty == 0) ty = ETOK_T_NORMAL;
        if (ty < 1 || ty > 6) {
            rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer: token %d has bad type %d", (int)i, ty);
            goto fail;
        }
        t->type[i] = (uint8_t)ty;
        float s = d->token_score ? d->token_score(d->ud, i) : 0.0f;
        if (isnan(s)) {
            rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer: token %d has a NaN score", (int)i);
            goto fail;
        }
        t->score[i] = s == 0.0f ? 0.0f : s;   /* -0 -> +0 */
        const char *p = NULL; size_t l = 0;
        d->token_text(d->ud, i, &p, &l);
        if (!p && l) {
            rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer: token %d has no text", (int)i);
            goto fail;
        }
        total += l;
        if (l > maxlen) maxlen = l;
    }
    if (total > 0x7FFFFFFF || maxlen > 0xFFFFFF) {
        rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer: token texts too long");
        goto fail;
    }
    scratch = ec_malloc(a, 2 * maxlen + 16);
    if (!scratch) goto fail;

    /* decoded pieces (and keys) */
    /* SPM: decoded <= text + 1 for unknown (" \u2047 " is 5 bytes) */
    t->dbuf = ec_malloc(a, (size_t)total + (size_t)n * 5 + 1);
    if (!t->dbuf) goto fail;
    if (d->kind == ETOK_SPM) {
        t->kbuf = ec_malloc(a, (size_t)total + 1);
        t->koff = ec_malloc(a, ((size_t)n + 1) * sizeof(uint32_t));
        if (!t->kbuf || !t->koff) goto fail;
    }
    for (int i = 0; i < 256; i++) t->byte_tok[i] = -1;
    {
        uint32_t ko = 0, dof = 0;
        for (int32_t i = 0; i < n; i++) {
            const char *p = NULL; size_t l = 0;
            d->token_text(d->ud, i, &p, &l);
            int ty = t->type[i];
            t->doff[i] = dof;
            char *o = t->dbuf + dof;
            if (d->kind == ETOK_SPM) {
                t->koff[i] = ko;
                if (l) memcpy(t->kbuf + ko, p, l);
                ko += (uint32_t)l;
                if (l > t->max_key) t->max_key = (uint32_t)l;
                int bv = etok_byte_piece(p, l);
                if (ty == ETOK_T_BYTE && bv >= 0) {
                    *o = (char)bv; dof += 1;
                } else if (ty == ETOK_T_UNKNOWN) {
                    memcpy(o, " \xE2\x81\x87 ", 5); dof += 5;
                } else {
                    size_t j = 0, w = 0;
                    while (j < l) {
                        if (j + 3 <= l && memcmp(p + j, "\xE2\x96\x81", 3) == 0) { o[w++] = ' '; j += 3; }
                        else o[w++] = p[j++];
                    }
                    dof += (uint32_t)w;
                }
            } else {
                if (ty == ETOK_T_CONTROL || ty == ETOK_T_USER_DEFINED || ty == ETOK_T_UNKNOWN) {
                    if (l) memcpy(o, p, l);
                    dof += (uint32_t)l;
                } else {
                    dof += (uint32_t)etok_unalpha(p, l, o);
                }
                uint32_t dl = dof - t->doff[i];
                if (dl > t->max_key) t->max_key = dl;
            }
        }
        t->doff[n] = dof;
        if (d->kind == ETOK_SPM) t->koff[n] = ko;
    }
    if (d->kind == ETOK_BPE) {
        t->kbuf = t->dbuf;
        t->koff = t->doff;
    }

    /* key map: mergeable tokens first (lowest id wins), then the rest
     * (BPE: CONTROL tokens are never matched as text) */
    t->smask = etok_pow2_above((uint64_t)n * 2) - 1;
    t->smap = ec_calloc(a, (size_t)t->smask + 1, sizeof(etok_slot));
    if (!t->smap) goto fail;
    for (int32_t i = 0; i < n; i++)
        if (etok_is_mergeable(t->type[i])) etok_insert(t, i);
    for (int32_t i = 0; i < n; i++)
        if (!etok_is_mergeable(t->type[i]) && !(d->kind == ETOK_BPE && t->type[i] == ETOK_T_CONTROL))
            etok_insert(t, i);

    /* byte tokens */
    if (d->kind == ETOK_SPM) {
        for (int b = 0; b < 256; b++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", b);
            int32_t id = etok_lookup(t, s, 6);
            if (id >= 0) { t->byte_tok[b] = id; t->has_byte_fallback = 1; }
        }
    } else {
        for (int b = 0; b < 256; b++) {
            char c = (char)b;
            t->byte_tok[b] = etok_lookup(t, &c, 1);
        }
    }

    /* merges */
    if (d->kind == ETOK_BPE && d->n_merges > 0) {
        t->pmask = etok_pow2_above((uint64_t)d->n_merges * 2) - 1;
        t->pkey = ec_malloc(a, ((size_t)t->pmask + 1) * sizeof(uint64_t));
        t->prank = ec_malloc(a, ((size_t)t->pmask + 1) * sizeof(int32_t));
        t->pres = ec_malloc(a, ((size_t)t->pmask + 1) * sizeof(int32_t));
        if (!t->pkey || !t->prank || !t->pres) goto fail;
        memset(t->pkey, 0xFF, ((size_t)t->pmask + 1) * sizeof(uint64_t));
        char *mbuf = NULL; size_t mcap = 0;
        for (int32_t m = 0; m < d->n_merges; m++) {
            const char *p = NULL; size_t l = 0;
            d->merge_text(d->ud, m, &p, &l);
            size_t sp1 = 0;
            for (size_t j = 1; j < l; j++) if (p[j] == ' ') { sp1 = j; break; }
            if (!p || sp1 == 0 || sp1 + 1 >= l) {
                ec_free(a, mbuf);
                rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer: merge %d is not \"A B\"", (int)m);
                goto fail;
            }
            if (l > mcap) {
                ec_free(a, mbuf);
                mcap = l * 2;
                mbuf = ec_malloc(a, mcap);
                if (!mbuf) goto fail;
            }
            size_t la = etok_unalpha(p, sp1, mbuf);
            size_t lb = etok_unalpha(p + sp1 + 1, l - sp1 - 1, mbuf + la);
            int32_t ia = etok_lookup(t, mbuf, la), ib = etok_lookup(t, mbuf + la, lb);
            int32_t ir = etok_lookup(t, mbuf, la + lb);
            if (ia < 0 || ib < 0 || ir < 0) {
                ec_free(a, mbuf);
                rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer: merge %d (\"%.*s\") names %s",
                               (int)m, (int)(l > 64 ? 64 : l), p,
                               ir >= 0 ? "an unknown token" : (ia < 0 || ib < 0) ? "an unknown token" :
                               "a result that is not a token");
                goto fail;
            }
            uint64_t k = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
            uint32_t i = (uint32_t)etok_mix64(k) & t->pmask;
            while (t->pkey[i] != ETOK_EMPTY64 && t->pkey[i] != k) i = (i + 1) & t->pmask;
            if (t->pkey[i] == ETOK_EMPTY64) { t->pkey[i] = k; t->prank[i] = m; t->pres[i] = ir; }
        }
        ec_free(a, mbuf);
    }

    /* special-token trie */
    {
        uint64_t nodes = 1;
        for (int32_t i = 0; i < n; i++)
            if (etok_is_special_type(t->type[i])) {
                const char *p = NULL; size_t l = 0;
                d->token_text(d->ud, i, &p, &l);
                nodes += l;
            }
        if (nodes > 1) {
            if (nodes > 0x7FFFFFF) { rc = ec_errorf(err, errlen, EMBER_ERR_CORRUPT, "tokenizer: too many special tokens"); goto fail; }
            t->tmask = etok_pow2_above(nodes * 2) - 1;
            t->tkey = ec_malloc(a, ((size_t)t->tmask + 1) * sizeof(uint64_t));
            t->tchild = ec_malloc(a, ((size_t)t->tmask + 1) * sizeof(int32_t));
            t->tterm = ec_malloc(a, (size_t)nodes * sizeof(int32_t));
            if (!t->tkey || !t->tchild || !t->tterm) goto fail;
            memset(t->tkey, 0xFF, ((size_t)t->tmask + 1) * sizeof(uint64_t));
            t->n_nodes = 1;
            t->tterm[0] = -1;
            for (int32_t i = 0; i < n; i++) {
                int ty = t->type[i];
                if (!etok_is_special_type(ty)) continue;
                const char *p = NULL; size_t l = 0;
                d->token_text(d->ud, i, &p, &l);
                if (l == 0) continue;
                int32_t node = 0;
                for (size_t j = 0; j < l; j++) node = etok_trie_child(t, node, (unsigned char)p[j], 1);
                /* a USER_DEFINED terminal wins over others with the same text
                 * (it is the one matched without ETOK_PARSE_SPECIAL) */
                if (t->tterm[node] < 0 || (ty == ETOK_T_USER_DEFINED && t->type[t->tterm[node]] != ETOK_T_USER_DEFINED))
                    t->tterm[node] = i;
                t->first_sp[(unsigned char)p[0]] = 1;
                t->has_sp = 1;
                if (ty == ETOK_T_USER_DEFINED) { t->first_ud[(unsigned char)p[0]] = 1; t->has_ud = 1; }
            }
        }
    }

    /* SPM: may the text be cut before each U+2581 that follows another
     * character?  Only if no mergeable piece has such a U+2581 inside. */
    if (d->kind == ETOK_SPM) {
        t->spm_split_ok = 1;
        for (int32_t i = 0; i < n && t->spm_split_ok; i++) {
            if (!etok_is_mergeable(t->type[i])) continue;
            const char *p = t->kbuf + t->koff[i];
            size_t l = t->koff[i + 1] - t->koff[i];
            for (size_t j = 1; j + 3 <= l; j++)
                if (memcmp(p + j, "\xE2\x96\x81", 3) == 0 &&
                    !(j >= 3 && memcmp(p + j - 3, "\xE2\x96\x81", 3) == 0)) { t->spm_split_ok = 0; break; }
        }
    }

    /* SPM: the pieces made of two ASCII / U+2581 characters, by table */
    if (d->kind == ETOK_SPM) {
        t->spm_pair = ec_malloc(a, 129 * 129 * sizeof(int32_t));
        if (!t->spm_pair) goto fail;
        for (int x = 0; x < 129; x++)
            for (int y = 0; y < 129; y++) {
                char s2[6];
                size_t l2 = 0;
                if (x == 128) { memcpy(s2, "\xE2\x96\x81", 3); l2 = 3; } else s2[l2++] = (char)x;
                if (y == 128) { memcpy(s2 + l2, "\xE2\x96\x81", 3); l2 += 3; } else s2[l2++] = (char)y;
                int32_t id = etok_lookup(t, s2, l2);
                t->spm_pair[x * 129 + y] = id >= 0 && etok_is_mergeable(t->type[id]) ? id : -1;
            }
        for (int x = 0; x < 129; x++) {
            char c = (char)x;
            t->spm_leaf[x] = x == 128 ? etok_lookup(t, "\xE2\x96\x81", 3) : etok_lookup(t, &c, 1);
        }
        t->skey = ec_malloc(a, (size_t)n * sizeof(uint32_t));
        if (!t->skey) goto fail;
        for (int32_t i = 0; i < n; i++) {
            t->skey[i] = etok_is_mergeable(t->type[i]) ? etok_score_key(t->score[i]) : UINT32_MAX;
            if (t->type[i] == ETOK_T_UNUSED) t->has_unused = 1;
        }
    }

    /* end-of-generation tokens */
    {
        static const char *const eog_names[] = {
            "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>",
            "<end_of_turn>", "<|end|>", "</s>", "<|EOT|>", "<EOT>"
        };
        if (t->eos >= 0) t->eog[t->n_eog++] = t->eos;
        if (t->eot >= 0 && t->eot != t->eos) t->eog[t->n_eog++] = t->eot;
        for (int32_t i = 0; i < n && t->n_eog < ETOK_MAX_EOG; i++) {
            if (t->type[i] != ETOK_T_CONTROL && t->type[i] != ETOK_T_USER_DEFINED) continue;
            const char *p = NULL; size_t l = 0;
            d->token_text(d->ud, i, &p, &l);
            for (size_t k = 0; k < sizeof eog_names / sizeof eog_names[0]; k++)
                if (strlen(eog_names[k]) == l && memcmp(eog_names[k], p, l) == 0) {
                    int dup = 0;
                    for (int e = 0; e < t->n_eog; e++) dup |= t->eog[e] == i;
                    if (!dup) t->eog[t->n_eog++] = i;
                }
        }
    }

    ec_free(a, scratch);
    *out = t;
    return EMBER_OK;
fail:
    if (rc == EMBER_ERR_NOMEM) ec_errorf(err, errlen, EMBER_ERR_NOMEM, "tokenizer: out of memory");
    ec_free(a, scratch);
    etok_free(t);
    return rc;
}

/* ------------------------------------------------------------ encode state */

typedef struct etok_sym {
    uint32_t start, len;
    int32_t prev, next;
    int32_t id;
    int32_t rec;        /* SPM: merge record (<0: leaf -(index+1)) */
} etok_sym;

typedef struct etok_hent {
    uint64_t key;       /* priority << 32 | left symbol index */
    uint32_t right, size;
    int32_t id;
} etok_hent;

typedef struct etok_rec { int32_t l, r, id; } etok_rec;

typedef struct etok_work {
    const ember_allocator *a;
    int32_t *out; int64_t cap, n;
    int last_unk;
    int nomem;
    char *norm; size_t norm_cap;
    etok_sym *sym; size_t sym_cap;
    etok_hent *heap; size_t heap_cap, heap_n;
    etok_rec *rec; size_t rec_cap, rec_n;
    uint32_t *cp; uint8_t *cl; uint32_t *off; size_t cp_cap, cl_cap, off_cap;
} etok_work;

static int etok_grow(etok_work *w, void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *q = ec_realloc(w->a, *p, nc * elem);
    if (!q) { w->nomem = 1; return 0; }
    *p = q; *cap = nc;
    return 1;
}

static inline void etok_emit(etok_work *w, int32_t id) {
    if (w->n < w->cap) w->out[w->n] = id;
    w->n++;
    w->last_unk = 0;
}

static void etok_heap_push(etok_work *w, etok_hent e) {
    if (w->heap_n == w->heap_cap &&
        !etok_grow(w, (void **)&w->heap, &w->heap_cap, w->heap_n + 1, sizeof(etok_hent)))
        return;
    size_t i = w->heap_n++;
    etok_hent *h = w->heap;
    while (i > 0) {
        size_t p = (i - 1) >> 1;
        if (h[p].key <= e.key) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static etok_hent etok_heap_pop(etok_work *w) {
    etok_hent *h = w->heap;
    etok_hent top = h[0], last = h[--w->heap_n];
    size_t n = w->heap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1].key < h[c].key) c++;
        if (last.key <= h[c].key) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = last;
    return top;
}


/* ----------------------------------------------------------------- SPM */

/* index of a one-character symbol in spm_pair (ASCII, U+2581 = 128), or -1 */
static inline int etok_spm_small(const char *p, uint32_t len) {
    if (len == 1) return (unsigned char)p[0] < 0x80 ? (unsigned char)p[0] : -1;
    if (len == 3 && (unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x96 && (unsigned char)p[2] == 0x81) return 128;
    return -1;
}

static void etok_spm_try(const etok *t, etok_work *w, const char *buf, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    etok_sym *s = w->sym;
    size_t n = (size_t)s[l].len + s[r].len;
    int32_t id;
    int x = etok_spm_small(buf + s[l].start, s[l].len), y = etok_spm_small(buf + s[r].start, s[r].len);
    if (x >= 0 && y >= 0) {
        id = t->spm_pair[x * 129 + y];
        if (id < 0) return;
    } else {
        if (n > t->max_key) return;
        id = etok_lookup(t, buf + s[l].start, n);
        if (id < 0 || !etok_is_mergeable(t->type[id])) return;
    }
    etok_hent e;
    e.key = (uint64_t)etok_score_key(t->score[id]) << 32 | (uint32_t)l;
    e.right = (uint32_t)r;
    e.size = (uint32_t)n;
    e.id = id;
    etok_heap_push(w, e);
}

static void etok_spm_fallback(const etok *t, etok_work *w, const char *p, size_t n) {
    if (t->has_byte_fallback) {
        for (size_t i = 0; i < n; i++) {
            int32_t b = t->byte_tok[(unsigned char)p[i]];
            if (b >= 0) etok_emit(w, b);
            else if (t->unk >= 0) etok_emit(w, t->unk);
        }
        return;
    }
    /* sentencepiece without byte fallback: a run of unknown pieces is one unk */
    if (t->unk >= 0 && !w->last_unk) { etok_emit(w, t->unk); w->last_unk = 1; }
}

static void etok_spm_out(const etok *t, etok_work *w, const char *buf, int32_t rec) {
    if (rec < 0) {
        const etok_sym *s = &w->sym[-rec - 1];
        /* a leaf: one code point, or one invalid byte; its length is in
         * the id field (set when the symbols were made) */
        size_t cl = (size_t)s->id;
        int32_t id = etok_lookup(t, buf + s->start, cl);
        if (id >= 0 && t->type[id] != ETOK_T_UNKNOWN) etok_emit(w, id);
        else etok_spm_fallback(t, w, buf + s->start, cl);
        return;
    }
    const etok_rec *r = &w->rec[rec];
    if (t->type[r->id] == ETOK_T_UNUSED) {
        /* sentencepiece resegments unused pieces into their parts */
        int32_t l = r->l, rr = r->r;
        etok_spm_out(t, w, buf, l);
        etok_spm_out(t, w, buf, rr);
        return;
    }
    etok_emit(w, r->id);
}

#define ETOK_SPM_SHORT 64   /* symbols: segments up to this use the array path */

/* The same BPE as etok_spm_segment for a short segment, on arrays: the
 * best pair (highest score, then leftmost) is found by a scan and merged in
 * place, so there are no stale heap entries.  pk[i] is the score key of
 * the piece made by symbols i and i + 1 (UINT32_MAX: none; never the key
 * of a real score, NaN being refused), pid[i] its id.  Returns 0, having
 * emitted nothing, when the segment is too long or an unused piece was made
 * (its parts are needed: the general path handles it). */
static int etok_spm_short(const etok *t, etok_work *w, const char *buf, size_t n) {
    uint32_t st[ETOK_SPM_SHORT], ln[ETOK_SPM_SHORT], pk[ETOK_SPM_SHORT];
    int32_t id[ETOK_SPM_SHORT], pid[ETOK_SPM_SHORT];
    int16_t sx[ETOK_SPM_SHORT];
    if (n > ETOK_SPM_SHORT * 4) return 0;
    const unsigned char *u = (const unsigned char *)buf;
    const uint32_t *skey = t->skey;
    const uint32_t max_key = t->max_key;
    int m = 0;
    for (size_t i = 0; i < n;) {
        if (m == ETOK_SPM_SHORT) return 0;
        unsigned c = u[i];
        int l, x;
        if (c < 0x80) { l = 1; x = (int)c; }
        else if (c == 0xE2 && i + 3 <= n && u[i + 1] == 0x96 && u[i + 2] == 0x81) { l = 3; x = 128; }
        else {
            uint32_t cp;
            l = ec_utf8_decode(u + i, n - i, &cp);
            if (l <= 0) l = 1;
            x = -1;
        }
        st[m] = (uint32_t)i;
        ln[m] = (uint32_t)l;
        sx[m] = (int16_t)x;
        id[m] = -1;             /* leaf */
        m++;
        i += (size_t)l;
    }
    for (int i = 0; i + 1 < m; i++) {
        int32_t p;
        uint32_t len = ln[i] + ln[i + 1];
        if (sx[i] >= 0 && sx[i + 1] >= 0) p = t->spm_pair[sx[i] * 129 + sx[i + 1]];
        else p = len <= max_key ? etok_lookup(t, buf + st[i], len) : -1;
        pk[i] = p >= 0 ? skey[p] : UINT32_MAX;
        pid[i] = p;
    }
    while (m > 1) {
        int best = 0;
        uint32_t bk = pk[0];
        for (int i = 1; i + 1 < m; i++)
            if (pk[i] < bk) { bk = pk[i]; best = i; }
        if (bk == UINT32_MAX) break;
        int32_t nid = pid[best];
        if (t->has_unused && t->type[nid] == ETOK_T_UNUSED) return 0;
        id[best] = nid;
        ln[best] += ln[best + 1];
        sx[best] = -1;
        /* remove symbol best + 1 (and the pair starting there) */
        for (int i = best + 1; i + 1 < m; i++) {
            st[i] = st[i + 1]; ln[i] = ln[i + 1]; sx[i] = sx[i + 1]; id[i] = id[i + 1];
            pid[i] = pid[i + 1]; pk[i] = pk[i + 1];
        }
        m--;
        /* the new pairs with the left and right neighbours (a merged
         * symbol is never in spm_pair); both probes are issued first */
        int hl = best > 0, hr = best + 1 < m;
        uint32_t ll = hl ? ln[best - 1] + ln[best] : 0, lr = hr ? ln[best] + ln[best + 1] : 0;
        const char *sl = hl ? buf + st[best - 1] : NULL, *sr = buf + st[best];
        hl = hl && ll <= max_key;
        hr = hr && lr <= max_key;
        uint64_t kwl = 0, kwr = 0, h_l = 0, h_r = 0;
        if (hl) { h_l = etok_keyhash(sl, ll, &kwl); etok_prefetch(&t->smap[(uint32_t)h_l & t->smask]); }
        if (hr) { h_r = etok_keyhash(sr, lr, &kwr); etok_prefetch(&t->smap[(uint32_t)h_r & t->smask]); }
        if (best > 0) {
            int32_t p = hl ? etok_lookup_h(t, sl, ll, h_l, kwl) : -1;
            pk[best - 1] = p >= 0 ? skey[p] : UINT32_MAX;
            pid[best - 1] = p;
        }
        if (best + 1 < m) {
            int32_t p = hr ? etok_lookup_h(t, sr, lr, h_r, kwr) : -1;
            pk[best] = p >= 0 ? skey[p] : UINT32_MAX;
            pid[best] = p;
        }
    }
    for (int i = 0; i < m; i++) {
        if (id[i] >= 0) { etok_emit(w, id[i]); continue; }
        /* a leaf, as etok_spm_out */
        int32_t lid = sx[i] >= 0 ? t->spm_leaf[sx[i]] : etok_lookup(t, buf + st[i], ln[i]);
        if (lid >= 0 && t->type[lid] != ETOK_T_UNKNOWN) etok_emit(w, lid);
        else etok_spm_fallback(t, w, buf + st[i], ln[i]);
    }
    return 1;
}

/* BPE over buf[0..n) (already normalized). */
static void etok_spm_segment(const etok *t, etok_work *w, const char *buf, size_t n) {
    if (n == 0) return;
    if (etok_spm_short(t, w, buf, n)) return;
    if (!etok_grow(w, (void **)&w->sym, &w->sym_cap, n, sizeof(etok_sym))) return;
    etok_sym *s = w->sym;
    int32_t ns = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = ec_utf8_decode((const unsigned char *)buf + i, n - i, &cp);
        if (l <= 0) l = 1;
        s[ns].start = (uint32_t)i;
        s[ns].len = (uint32_t)l;
        s[ns].prev = ns - 1;
        s[ns].next = ns + 1;
        s[ns].id = l;           /* leaf length (see etok_spm_out) */
        s[ns].rec = -(ns + 1);
        ns++;
        i += (size_t)l;
    }
    s[ns - 1].next = -1;
    w->heap_n = 0;
    w->rec_n = 0;
    for (int32_t i = 0; i + 1 < ns; i++) etok_spm_try(t, w, buf, i, i + 1);
    while (w->heap_n > 0 && !w->nomem) {
        etok_hent e = etok_heap_pop(w);
        int32_t L = (int32_t)(uint32_t)e.key, R = (int32_t)e.right;
        s = w->sym;
        if (s[L].len == 0 || s[R].len == 0 || s[L].len + s[R].len != e.size) continue;
        if (!etok_grow(w, (void **)&w->rec, &w->rec_cap, w->rec_n + 1, sizeof(etok_rec))) return;
        etok_rec *r = &w->rec[w->rec_n];
        r->l = s[L].rec; r->r = s[R].rec; r->id = e.id;
        s[L].rec = (int32_t)w->rec_n++;
        s[L].len += s[R].len;
        s[R].len = 0;
        s[L].next = s[R].next;
        if (s[R].next >= 0) s[s[R].next].prev = L;
        etok_spm_try(t, w, buf, s[L].prev, L);
        etok_spm_try(t, w, buf, L, s[L].next);
    }
    if (w->nomem) return;
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) etok_spm_out(t, w, buf, w->sym[i].rec);
}

static void etok_spm_text(const etok *t, etok_work *w, const char *text, size_t len, int prefix) {
    if (len == 0) return;
    size_t need = len * 3 + 3;
    if (!etok_grow(w, (void **)&w->norm, &w->norm_cap, need, 1)) return;
    char *nb = w->norm;
    size_t o = 0;
    if (prefix && t->add_space_prefix) { memcpy(nb, "\xE2\x96\x81", 3); o = 3; }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') { memcpy(nb + o, "\xE2\x96\x81", 3); o += 3; }
        else nb[o++] = text[i];
    }
    if (!t->spm_split_ok) { etok_spm_segment(t, w, nb, o); return; }
    /* cut before each U+2581 that follows a non-U+2581 character */
    size_t seg = 0;
    for (size_t i = 1; i + 3 <= o; i++) {
        if ((unsigned char)nb[i] == 0xE2 && (unsigned char)nb[i + 1] == 0x96 && (unsigned char)nb[i + 2] == 0x81 &&
            !(i >= 3 && (unsigned char)nb[i - 3] == 0xE2 && (unsigned char)nb[i - 2] == 0x96 &&
              (unsigned char)nb[i - 1] == 0x81)) {
            etok_spm_segment(t, w, nb + seg, i - seg);
            if (w->nomem) return;
            seg = i;
        }
    }
    etok_spm_segment(t, w, nb + seg, o - seg);
}

/* ----------------------------------------------------------------- BPE */

static void etok_bpe_emit_sym(const etok *t, etok_work *w, int32_t id) {
    if (id >= 0) etok_emit(w, id);
    else if (t->unk >= 0) etok_emit(w, t->unk);
}

#define ETOK_LINEAR_MAX 64

/* byte-level BPE of one pre-token */
static void etok_bpe_word(const etok *t, etok_work *w, const char *p, size_t n) {
    int32_t id = etok_lookup(t, p, n);
    if (id >= 0) { etok_emit(w, id); return; }
    if (n == 1) { etok_bpe_emit_sym(t, w, t->byte_tok[(unsigned char)p[0]]); return; }
    if (n <= ETOK_LINEAR_MAX) {
        int32_t ids[ETOK_LINEAR_MAX], rank[ETOK_LINEAR_MAX], res[ETOK_LINEAR_MAX];
        size_t m = n;
        for (size_t i = 0; i < n; i++) ids[i] = t->byte_tok[(unsigned char)p[i]];
        for (size_t i = 0; i + 1 < m; i++)
            if (!etok_pair_find(t, ids[i], ids[i + 1], &rank[i], &res[i])) rank[i] = INT32_MAX;
        while (m > 1) {
            size_t best = 0;
            int32_t br = rank[0];
            for (size_t i = 1; i + 1 < m; i++)
                if (rank[i] < br) { br = rank[i]; best = i; }
            if (br == INT32_MAX) break;
            ids[best] = res[best];
            /* remove element best + 1 */
            for (size_t i = best + 1; i + 1 < m; i++) {
                ids[i] = ids[i + 1];
                rank[i] = rank[i + 1];
                res[i] = res[i + 1];
            }
            m--;
            if (best > 0 && !etok_pair_find(t, ids[best - 1], ids[best], &rank[best - 1], &res[best - 1]))
                rank[best - 1] = INT32_MAX;
            if (best + 1 < m) {
                if (!etok_pair_find(t, ids[best], ids[best + 1], &rank[best], &res[best])) rank[best] = INT32_MAX;
            }
        }
        for (size_t i = 0; i < m; i++) etok_bpe_emit_sym(t, w, ids[i]);
        return;
    }
    /* long word: linked list + heap */
    if (!etok_grow(w, (void **)&w->sym, &w->sym_cap, n, sizeof(etok_sym))) return;
    etok_sym *s = w->sym;
    for (size_t i = 0; i < n; i++) {
        s[i].start = (uint32_t)i;
        s[i].len = 1;
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        s[i].id = t->byte_tok[(unsigned char)p[i]];
    }
    w->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t rk, rs;
        if (etok_pair_find(t, s[i].id, s[i + 1].id, &rk, &rs)) {
            etok_hent e = { (uint64_t)(uint32_t)rk << 32 | (uint32_t)i, (uint32_t)i + 1, 2, rs };
            etok_heap_push(w, e);
        }
    }
    while (w->heap_n > 0 && !w->nomem) {
        etok_hent e = etok_heap_pop(w);
        int32_t L = (int32_t)(uint32_t)e.key, R = (int32_t)e.right;
        if (s[L].len == 0 || s[R].len == 0 || s[L].len + s[R].len != e.size) continue;
        s[L].id = e.id;
        s[L].len += s[R].len;
        s[R].len = 0;
        s[L].next = s[R].next;
        if (s[R].next >= 0) s[s[R].next].prev = L;
        int32_t rk, rs;
        int32_t P = s[L].prev, N = s[L].next;
        if (P >= 0 && etok_pair_find(t, s[P].id, s[L].id, &rk, &rs)) {
            etok_hent h = { (uint64_t)(uint32_t)rk << 32 | (uint32_t)P, (uint32_t)L, s[P].len + s[L].len, rs };
            etok_heap_push(w, h);
        }
        if (N >= 0 && etok_pair_find(t, s[L].id, s[N].id, &rk, &rs)) {
            etok_hent h = { (uint64_t)(uint32_t)rk << 32 | (uint32_t)L, (uint32_t)N, s[L].len + s[N].len, rs };
            etok_heap_push(w, h);
        }
    }
    if (w->nomem) return;
    for (int32_t i = 0; i >= 0; i = s[i].next) etok_bpe_emit_sym(t, w, s[i].id);
}

static inline int etok_fold(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return (int)(c + 32);
    if (c == 0x17F) return 's';
    return (int)c;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t etok_re_gpt2(const uint32_t *cp, const uint8_t *cl, size_t i, size_t n) {
    uint32_t c = cp[i];
    if (c == '\'' && i + 1 < n) {
        uint32_t d = cp[i + 1];
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return i + 2;
        if (i + 2 < n) {
            uint32_t e = cp[i + 2];
            if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) return i + 3;
        }
    }
    size_t s = i;
    int k = cl[i];
    if (c == ' ' && i + 1 < n && cl[i + 1] != UT_S) { s = i + 1; k = cl[i + 1]; }
    size_t j;
    if (k != UT_S) {
        j = s + 1;
        while (j < n && cl[j] == k) j++;
        return j;
    }
    j = i + 1;
    while (j < n && cl[j] == UT_S) j++;
    if (j == n) return j;
    if (j - 1 > i) return j - 1;
    return j;
}

/* Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t etok_re_llama3(const uint32_t *cp, const uint8_t *cl, size_t i, size_t n) {
    uint32_t c = cp[i];
    if (c == '\'' && i + 1 < n) {
        int d = etok_fold(cp[i + 1]);
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return i + 2;
        if (i + 2 < n) {
            int e = etok_fold(cp[i + 2]);
            if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) return i + 3;
        }
    }
    int k = cl[i];
    size_t j;
    if (k == UT_L) {
        j = i + 1;
        while (j < n && cl[j] == UT_L) j++;
        return j;
    }
    if (k != UT_N && c != '\r' && c != '\n' && i + 1 < n && cl[i + 1] == UT_L) {
        j = i + 2;
        while (j < n && cl[j] == UT_L) j++;
        return j;
    }
    if (k == UT_N) {
        j = i + 1;
        while (j < n && j < i + 3 && cl[j] == UT_N) j++;
        return j;
    }
    if ((c == ' ' && i + 1 < n && cl[i + 1] == UT_OTHER) || k == UT_OTHER) {
        j = k == UT_OTHER ? i + 1 : i + 2;
        while (j < n && cl[j] == UT_OTHER) j++;
        while (j < n && (cp[j] == '\r' || cp[j] == '\n')) j++;
        return j;
    }
    /* whitespace */
    size_t last_nl = (size_t)-1;
    j = i;
    while (j < n && cl[j] == UT_S) {
        if (cp[j] == '\r' || cp[j] == '\n') last_nl = j;
        j++;
    }
    if (last_nl != (size_t)-1) return last_nl + 1;
    if (j == n) return j;
    if (j - 1 > i) return j - 1;
    return j;
}

static void etok_bpe_text(const etok *t, etok_work *w, const char *text, size_t len) {
    if (len == 0) return;
    if (!etok_grow(w, (void **)&w->cp, &w->cp_cap, len + 1, sizeof(uint32_t))) return;
    if (!etok_grow(w, (void **)&w->cl, &w->cl_cap, len + 1, 1)) return;
    if (!etok_grow(w, (void **)&w->off, &w->off_cap, len + 1, sizeof(uint32_t))) return;
    uint8_t *cl = w->cl;
    uint32_t *off = w->off;
    uint32_t *cp = w->cp;
    size_t nc = 0;
    const unsigned char *u = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        unsigned c0 = u[i];
        off[nc] = (uint32_t)i;
        if (c0 < 0x80) {
            cp[nc] = c0;
            cl[nc] = ut_latin1[c0];
            i++;
        } else {
            uint32_t v;
            int l = ec_utf8_decode(u + i, len - i, &v);
            if (l <= 0) { cp[nc] = 0xFFFFFFFFu; cl[nc] = UT_OTHER; i++; }
            else { cp[nc] = v; cl[nc] = (uint8_t)ut_class(v); i += (size_t)l; }
        }
        nc++;
    }
    off[nc] = (uint32_t)len;
    int llama3 = t->pre == ETOK_PRE_LLAMA3;
    for (size_t i = 0; i < nc && !w->nomem;) {
        size_t j = llama3 ? etok_re_llama3(cp, cl, i, nc) : etok_re_gpt2(cp, cl, i, nc);
        etok_bpe_word(t, w, text + off[i], off[j] - off[i]);
        i = j;
    }
}

/* --------------------------------------------------------------- encode */

static void etok_text(const etok *t, etok_work *w, const char *text, size_t len, int after_special) {
    if (t->kind == ETOK_SPM) etok_spm_text(t, w, text, len, after_special);
    else etok_bpe_text(t, w, text, len);
}

int etok_encode(const etok *t, const char *text, size_t len, int flags,
                int32_t *out, int32_t cap, int32_t *n_out) {
    if (n_out) *n_out = 0;
    if (!t || (!text && len) || (!out && cap > 0) || cap < 0 || !n_out) return EMBER_ERR_INVALID_ARG;
    if (len > ETOK_MAX_TEXT) return EMBER_ERR_INVALID_ARG;
    etok_work w;
    memset(&w, 0, sizeof w);
    w.a = t->a;
    w.out = out;
    w.cap = cap;
    if ((flags & ETOK_ADD_BOS) && t->bos >= 0) etok_emit(&w, t->bos);
    int special = (flags & ETOK_PARSE_SPECIAL) ? t->has_sp : t->has_ud;
    const uint8_t *first = (flags & ETOK_PARSE_SPECIAL) ? t->first_sp : t->first_ud;
    size_t pos = 0;
    int after_special = 1;
    if (special) {
        const unsigned char *u = (const unsigned char *)text;
        for (size_t i = 0; i < len && !w.nomem;) {
            if (!first[u[i]]) { i++; continue; }
            int32_t node = 0, best = -1;
            size_t best_len = 0;
            for (size_t j = i; j < len; j++) {
                node = etok_trie_child_c(t, node, u[j]);
                if (node < 0) break;
                int32_t id = t->tterm[node];
                if (id >= 0 && ((flags & ETOK_PARSE_SPECIAL) || t->type[id] == ETOK_T_USER_DEFINED)) {
                    best = id;
                    best_len = j + 1 - i;
                }
            }
            if (best < 0) { i++; continue; }
            etok_text(t, &w, text + pos, i - pos, after_special);
            etok_emit(&w, best);
            after_special = 1;
            i += best_len;
            pos = i;
        }
    }
    if (!w.nomem) etok_text(t, &w, text + pos, len - pos, after_special);
    ec_free(t->a, w.norm);
    ec_free(t->a, w.sym);
    ec_free(t->a, w.heap);
    ec_free(t->a, w.rec);
    ec_free(t->a, w.cp);
    ec_free(t->a, w.cl);
    ec_free(t->a, w.off);
    if (w.nomem) return EMBER_ERR_NOMEM;
    if (w.n > INT32_MAX) return EMBER_ERR_INVALID_ARG;
    *n_out = (int32_t)w.n;
    return w.n > cap ? EMBER_ERR_BUFFER_TOO_SMALL : EMBER_OK;
}

/* --------------------------------------------------------------- decode */

int etok_piece(const etok *t, int32_t id, int32_t prev, int flags, char *buf, size_t size) {
    if (!t || id < 0 || id >= t->n_vocab) return EMBER_ERR_BAD_TOKEN;
    if (!buf && size) return EMBER_ERR_INVALID_ARG;
    int ty = t->type[id];
    if (ty == ETOK_T_CONTROL && !(flags & ETOK_PARSE_SPECIAL)) return 0;
    const char *p = t->dbuf + t->doff[id];
    size_t n = t->doff[id + 1] - t->doff[id];
    if (t->kind == ETOK_SPM && t->add_space_prefix && ty != ETOK_T_CONTROL && ty != ETOK_T_UNKNOWN &&
        ty != ETOK_T_BYTE &&
        (prev < 0 || prev == t->bos) && n > 0 && p[0] == ' ') {
        p++; n--;
    }
    if (n > INT32_MAX) return EMBER_ERR_INVALID_ARG;
    if (size && n) memcpy(buf, p, n < size ? n : size);
    return (int)n;
}

int32_t etok_n_vocab(const etok *t) { return t ? t->n_vocab : 0; }
int32_t etok_bos(const etok *t) { return t ? t->bos : -1; }
int32_t etok_eos(const etok *t) { return t ? t->eos : -1; }
int etok_add_bos(const etok *t) { return t ? t->add_bos : 0; }
int etok_kind(const etok *t) { return t ? t->kind : 0; }

int etok_is_eog(const etok *t, int32_t id) {
    if (!t || id < 0) return 0;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 1;
    return 0;
}
