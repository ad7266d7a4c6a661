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
 *    sentencepiece does.  The text is processed in independent segments
 *    that start at a U+2581 after another character, wherever no mergeable
 *    piece joins the two (everywhere for Llama 2; Gemma 3 has one such
 *    piece) - the result is identical and the heaps stay small.
 *  - BPE: pre-tokenizer split steps from a table (tokenizer.ggml.pre name ->
 *    patterns, NFC) run by a small backtracking regex matcher; the GPT-2 and
 *    cl100k patterns also have hand-written matchers over code points (same
 *    splits, tested), then per pre-token: whole-token lookup, else lowest-rank merge
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
#include <stdlib.h>
#include <string.h>

/* class (UT_L, UT_N, UT_S, UT_OTHER) of each ASCII character */
static const uint8_t etok_ascii_class[128] = {
    0,0,0,0,0,0,0,0,0,3,3,3,3,3,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    3,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,2,2,2,2,2,2,2,2,2,0,0,0,0,0,0,
    0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,0,0,0,0,0,
    0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,0,0,0,0,0,
};

#define ETOK_MAX_TEXT 0x3FFFFFFFu   /* largest input accepted (1 GiB) */
#define ETOK_EMPTY64 UINT64_MAX
#define ETOK_MAX_EOG 32

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
    uint8_t spm_nocut[256];         /* SPM: last bytes of characters some piece has before an inner U+2581 */
    int32_t *spm_pair;              /* SPM: [129 * 129] ids of two-symbol pieces
                                       over ASCII and U+2581 (index 128), or -1 */
    int32_t spm_leaf[129];          /* SPM: etok_lookup of each of those characters */
    uint32_t *skey;                 /* SPM: [n_vocab] etok_score_key(score) of a
                                       mergeable piece, UINT32_MAX for the rest */
    int has_unused;                 /* SPM: any UNUSED piece */
    int32_t eog[ETOK_MAX_EOG]; int n_eog;
    int add_eos;
    /* BPE pre-tokenizer: split steps (steps >= byte_from run on the
     * byte-level text), NFC, or a hand-written splitter (fast) */
    int n_steps, byte_from, fast, nfc;
    uint8_t step_fast[6];           /* a step whose pattern has a hand-written splitter (as fast) */
    struct etok_re *re;             /* [n_steps] */
    int32_t *comp; int32_t n_comp;  /* NFC: ut_decomp indices of primary composites by (first, second) */
    uint32_t bytecp[256];           /* GPT-2 byte alphabet */
    uint8_t bytecb[256];            /* its category bytes */
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

/* ---------------------------------------------------------- split regexes
 *
 * Pre-tokenizer split patterns are compiled once per tokenizer into a small
 * program for a backtracking matcher with Perl / Oniguruma semantics: at
 * each start position the alternatives are tried in order and the first one
 * that matches wins (leftmost-first, not longest), quantifiers are greedy
 * and give back characters one at a time.  This is what Hugging Face's
 * tokenizers (Oniguruma) and tiktoken (fancy-regex) do.  Supported: literals,
 * `.`, classes `[...]` with ranges, negation, `\p{..}` / `\P{..}` general
 * categories (L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po
 * S Sm Sc Sk So Z Zs Zl Zp C Cc Cf Cs Co Cn), `\s` `\S` (White_Space) `\d`
 * `\D` (Nd) `\w` `\W`, escapes `\r \n \t \f \v \xHH \x{H..} \uHHHH`,
 * groups `(...)` `(?:...)` `(?i:...)` (Unicode simple case folding),
 * lookahead `(?=...)` `(?!...)`, `^` `$` (line anchors, as Oniguruma's Ruby
 * syntax), `?` `*` `+` `{m}` `{m,}` `{m,n}`.
 *
 * Instructions: a quantified single character or class is one RUN
 * instruction (scan the longest run, then give back one at a time), so the
 * common loops cost one class test per character.  Two facts keep the
 * matcher linear on long runs (1 MB of spaces, letters, ...): the end of a
 * class run found from position p is the end for every start inside it
 * (cached per RUN), and once every continuation of an unbounded RUN from p
 * to its end e has failed, any later entry into the same RUN at p' >= p
 * with the same end must fail too (its continuations are a subset); such
 * entries fail at once.  Without that, `\s+$` on spaces followed by a
 * letter would be quadratic.  Loops over groups (`(?:ab)*`) are supported
 * but not accelerated; no pattern in the table uses one. */

enum {
    ETOK_RO_CHAR, ETOK_RO_CLASS, ETOK_RO_RUN, ETOK_RO_SPLIT, ETOK_RO_JMP, ETOK_RO_MATCH,
    ETOK_RO_EOL, ETOK_RO_BOL, ETOK_RO_LOOK, ETOK_RO_LOOKEND
};
#define ETOK_RE_INF UINT32_MAX
#define ETOK_RE_MAX_INS 65536
#define ETOK_RE_SPACE 0x80u          /* category byte flag: White_Space */

typedef struct etok_rcls {
    uint32_t ascii[4];      /* membership of U+0000..U+007F, negation applied */
    uint32_t cats;          /* bit g: general category g */
    uint8_t space, nspace, neg;
    uint32_t r0, nr;        /* ranges rng[2 * r0 ..] as lo, hi pairs, sorted, disjoint */
} etok_rcls;

typedef struct etok_rins {
    uint8_t op, neg, fkind; /* fkind (SPLIT): 0 unknown, 1 char, 2 class: what branch x starts with */
    int32_t x, y;           /* CHAR: code point; CLASS/RUN: class; SPLIT: branches (x first);
                               JMP: target; LOOK: the pc after its body */
    int32_t fval;           /* SPLIT: the char or class of fkind */
    uint32_t fa[4];         /* SPLIT: ASCII characters branch x can start with (all if it can
                               match empty) */
    uint32_t min, max;      /* RUN */
} etok_rins;

typedef struct etok_re {
    uint32_t fa[4];         /* ASCII characters a match can start with (all if it can be empty) */
    etok_rins *ins; int32_t n_ins, cap_ins;
    etok_rcls *cls; int32_t n_cls, cap_cls;
    uint32_t *rng; uint32_t n_rng, cap_rng;      /* pairs */
} etok_re;

/* Per-subject state of one program (the caches are valid while gen matches). */
typedef struct etok_rrun {
    uint32_t gen_c, gen_f;
    size_t c_lo, c_end;     /* run cache: from any p in [c_lo, c_end] the run ends at c_end */
    size_t f_from, f_end;   /* every continuation from f_from .. f_end failed */
} etok_rrun;

typedef struct etok_rframe {
    int32_t pc, kind;       /* kind 0: resume at (pc, cur); 1: RUN give-back */
    size_t cur, lo, start, end;
} etok_rframe;

typedef struct etok_rsub {
    const uint32_t *cp;     /* code points (0xFFFFFFFF: an invalid byte) */
    const uint8_t *cb;      /* general category | ETOK_RE_SPACE */
    size_t n;
    etok_rrun *rt;          /* [n_ins] */
    uint32_t gen;
    etok_rframe *st; size_t st_n, st_cap;
    const ember_allocator *a;
    int nomem;
} etok_rsub;

static void etok_re_free(const ember_allocator *a, etok_re *re) {
    ec_free(a, re->ins); ec_free(a, re->cls); ec_free(a, re->rng);
    memset(re, 0, sizeof *re);
}

static inline int etok_rcls_has(const etok_re *re, const etok_rcls *k, uint32_t c, unsigned cb) {
    if (c < 128) return (int)((k->ascii[c >> 5] >> (c & 31)) & 1);
    int in = (int)((k->cats >> (cb & 31)) & 1);
    if (!in && k->space) in = (cb & ETOK_RE_SPACE) != 0;
    if (!in && k->nspace) in = (cb & ETOK_RE_SPACE) == 0;
    if (!in && k->nr) {
        const uint32_t *r = re->rng + 2 * (size_t)k->r0;
        uint32_t lo = 0, hi = k->nr;
        while (lo < hi) {
            uint32_t mid = (lo + hi) >> 1;
            if (c < r[2 * mid]) hi = mid;
            else if (c > r[2 * mid + 1]) lo = mid + 1;
            else { in = 1; break; }
        }
    }
    return in ^ k->neg;
}

static inline unsigned etok_cat_byte(uint32_t c) {
    if (c > 0x10FFFF) return UT_GC_CN;
    return (unsigned)ut_gc(c) | (ut_is_space(c) ? ETOK_RE_SPACE : 0u);
}

/* ---- compiler */

typedef struct etok_rparse {
    const ember_allocator *a;
    etok_re *re;
    const unsigned char *p, *e;
    const char *err;
    int depth;
    /* the class being built */
    uint32_t *cr; size_t cr_n, cr_cap;
} etok_rparse;

/* AST */
enum { ETOK_RN_CHAR, ETOK_RN_CLASS, ETOK_RN_EOL, ETOK_RN_BOL, ETOK_RN_CAT, ETOK_RN_ALT,
       ETOK_RN_REP, ETOK_RN_LOOK, ETOK_RN_EMPTY };
typedef struct etok_rnode {
    int kind, neg;
    uint32_t val;           /* CHAR: code point; CLASS: class index */
    uint32_t min, max;      /* REP */
    struct etok_rnode *kid, *next;
} etok_rnode;

static etok_rnode *etok_rn_new(etok_rparse *P, int kind) {
    etok_rnode *n = (etok_rnode *)ec_calloc(P->a, 1, sizeof *n);
    if (!n) { P->err = "out of memory"; return NULL; }
    n->kind = kind;
    return n;
}

static void etok_rn_free(const ember_allocator *a, etok_rnode *n) {
    while (n) {
        etok_rnode *nx = n->next;
        etok_rn_free(a, n->kid);
        ec_free(a, n);
        n = nx;
    }
}

static int etok_re_grow(etok_rparse *P, void **p, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return 1;
    int64_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *q = ec_realloc(P->a, *p, (size_t)nc * elem);
    if (!q) { P->err = "out of memory"; return 0; }
    *p = q; *cap = nc;
    return 1;
}

static void etok_cr_add(etok_rparse *P, uint32_t lo, uint32_t hi) {
    if (P->cr_n + 2 > P->cr_cap) {
        size_t nc = P->cr_cap ? P->cr_cap * 2 : 32;
        uint32_t *q = (uint32_t *)ec_realloc(P->a, P->cr, nc * sizeof(uint32_t));
        if (!q) { P->err = "out of memory"; return; }
        P->cr = q; P->cr_cap = nc;
    }
    P->cr[P->cr_n++] = lo;
    P->cr[P->cr_n++] = hi;
}

/* every code point whose simple case folding equals that of c */
static void etok_cr_add_fold(etok_rparse *P, uint32_t c) {
    uint32_t f = ut_fold(c);
    etok_cr_add(P, c, c);
    if (f != c) etok_cr_add(P, f, f);
    for (int i = 0; i < UT_FOLD_RUNS_N; i++) {
        int64_t lo = ut_fold_runs[i][0], n = ut_fold_runs[i][1] >> 2, st = ut_fold_runs[i][1] & 3, d = ut_fold_runs[i][2];
        int64_t k = (int64_t)f - d - lo;
        if (k >= 0 && k % st == 0 && k / st < n) {
            uint32_t x = (uint32_t)(f - d);
            if (x != c) etok_cr_add(P, x, x);
        }
    }
}

static int etok_u32cmp(const void *a, const void *b) {
    const uint32_t *x = (const uint32_t *)a, *y = (const uint32_t *)b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Finish the class in P->cr: sort and merge the ranges, fill the ASCII map. */
static int32_t etok_cls_finish(etok_rparse *P, uint32_t cats, int space, int nspace, int neg) {
    etok_re *re = P->re;
    if (P->err) return -1;
    if (P->cr_n) qsort(P->cr, P->cr_n / 2, 2 * sizeof(uint32_t), etok_u32cmp);
    size_t m = 0;
    for (size_t i = 0; i < P->cr_n; i += 2) {
        if (m && P->cr[i] <= P->cr[m - 1] + 1 && P->cr[m - 1] != UINT32_MAX) {
            if (P->cr[i + 1] > P->cr[m - 1]) P->cr[m - 1] = P->cr[i + 1];
        } else {
            P->cr[m++] = P->cr[i];
            P->cr[m++] = P->cr[i + 1];
        }
    }
    int64_t cap = re->cap_cls, rcap = re->cap_rng;
    if (!etok_re_grow(P, (void **)&re->cls, &cap, re->n_cls + 1, sizeof(etok_rcls))) return -1;
    re->cap_cls = (int32_t)cap;
    if (!etok_re_grow(P, (void **)&re->rng, &rcap, (int64_t)re->n_rng + (int64_t)m / 2 + 1, 2 * sizeof(uint32_t))) return -1;
    re->cap_rng = (uint32_t)rcap;
    etok_rcls *k = &re->cls[re->n_cls];
    memset(k, 0, sizeof *k);
    k->cats = cats; k->space = (uint8_t)space; k->nspace = (uint8_t)nspace; k->neg = (uint8_t)neg;
    k->r0 = re->n_rng; k->nr = (uint32_t)(m / 2);
    if (m) memcpy(re->rng + 2 * (size_t)re->n_rng, P->cr, m * sizeof(uint32_t));
    re->n_rng += (uint32_t)(m / 2);
    /* the ASCII map through the general test (ascii[] still zero here) */
    for (uint32_t c = 0; c < 128; c++) {
        unsigned cb = etok_cat_byte(c);
        int in = (int)((cats >> (cb & 31)) & 1) || (space && (cb & ETOK_RE_SPACE)) ||
                 (nspace && !(cb & ETOK_RE_SPACE));
        for (size_t i = 0; i < m && !in; i += 2) in = c >= P->cr[i] && c <= P->cr[i + 1];
        if (in ^ neg) k->ascii[c >> 5] |= 1u << (c & 31);
    }
    P->cr_n = 0;
    return re->n_cls++;
}

static int etok_hex_run(etok_rparse *P, int maxd, uint32_t *out) {
    uint32_t v = 0;
    int d = 0;
    while (d < maxd && P->p < P->e && etok_hexval(*P->p) >= 0) { v = v * 16 + (uint32_t)etok_hexval(*P->p++); d++; }
    *out = v;
    return d;
}

/* \p{Name} -> category mask, 0 if unknown */
static uint32_t etok_cat_mask(const char *s, size_t n) {
    static const char names[] = "LuLlLtLmLoMnMcMeNdNlNoPcPdPsPePiPfPoSmScSkSoZsZlZpCcCfCsCoCn";
    if (n == 1) {
        switch (s[0]) {
        case 'L': return 0x1Fu;
        case 'M': return 0x7u << UT_GC_MN;
        case 'N': return 0x7u << UT_GC_ND;
        case 'P': return 0x7Fu << UT_GC_PC;
        case 'S': return 0xFu << UT_GC_SM;
        case 'Z': return 0x7u << UT_GC_ZS;
        case 'C': return 0x1Fu << UT_GC_CC;
        }
        return 0;
    }
    if (n == 2)
        for (int g = 0; g < UT_GC_COUNT; g++)
            if (names[2 * g] == s[0] && names[2 * g + 1] == s[1]) return 1u << g;
    return 0;
}

#define ETOK_ALL_CATS ((1u << UT_GC_COUNT) - 1)

/* One escape after '\'.  Sets either *c (a single code point, returns 1) or
 * the class parts (returns 2). */
static int etok_re_escape(etok_rparse *P, uint32_t *c, uint32_t *cats, int *space, int *nspace) {
    if (P->p >= P->e) { P->err = "trailing backslash"; return 0; }
    unsigned ch = *P->p++;
    switch (ch) {
    case 'n': *c = '\n'; return 1;
    case 'r': *c = '\r'; return 1;
    case 't': *c = '\t'; return 1;
    case 'f': *c = '\f'; return 1;
    case 'v': *c = '\v'; return 1;
    case 'a': *c = 7; return 1;
    case 'e': *c = 27; return 1;
    case '0': *c = 0; return 1;
    case 's': *space = 1; return 2;
    case 'S': *nspace = 1; return 2;
    case 'd': *cats |= 1u << UT_GC_ND; return 2;
    case 'D': *cats |= ETOK_ALL_CATS & ~(1u << UT_GC_ND); return 2;
    case 'w': *cats |= 0x1Fu | 0x7u << UT_GC_MN | 1u << UT_GC_ND | 1u << UT_GC_PC; return 2;
    case 'W': *cats |= ETOK_ALL_CATS & ~(0x1Fu | 0x7u << UT_GC_MN | 1u << UT_GC_ND | 1u << UT_GC_PC); return 2;
    case 'x':
        if (P->p < P->e && *P->p == '{') {
            P->p++;
            if (etok_hex_run(P, 6, c) == 0 || P->p >= P->e || *P->p != '}') { P->err = "bad \\x{...}"; return 0; }
            P->p++;
            return 1;
        }
        if (etok_hex_run(P, 2, c) != 2) { P->err = "bad \\xHH"; return 0; }
        return 1;
    case 'u':
        if (etok_hex_run(P, 4, c) != 4) { P->err = "bad \\uHHHH"; return 0; }
        return 1;
    case 'p': case 'P': {
        const unsigned char *s = P->p;
        size_t n = 0;
        if (s < P->e && *s == '{') {
            s++;
            while (s + n < P->e && s[n] != '}') n++;
            if (s + n >= P->e) { P->err = "bad \\p{...}"; return 0; }
            P->p = s + n + 1;
        } else if (s < P->e) {
            n = 1;
            P->p = s + 1;
        }
        uint32_t m = etok_cat_mask((const char *)s, n);
        if (!m) { P->err = "unknown \\p{...} category"; return 0; }
        *cats |= ch == 'p' ? m : ETOK_ALL_CATS & ~m;
        return 2;
    }
    default:
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '1' && ch <= '9')) {
            P->err = "unsupported escape";
            return 0;
        }
        if (ch >= 0x80) {   /* an escaped non-ASCII character stands for itself */
            P->p--;
            int l = ec_utf8_decode(P->p, (size_t)(P->e - P->p), c);
            if (l <= 0) { P->err = "invalid UTF-8 in pattern"; return 0; }
            P->p += l;
            return 1;
        }
        *c = ch;
        return 1;
    }
}

static int etok_re_char(etok_rparse *P, uint32_t *c) {
    int l = ec_utf8_decode(P->p, (size_t)(P->e - P->p), c);
    if (l <= 0) { P->err = "invalid UTF-8 in pattern"; return 0; }
    P->p += l;
    return 1;
}

static etok_rnode *etok_re_class(etok_rparse *P, int icase) {
    uint32_t cats = 0;
    int space = 0, nspace = 0, neg = 0, first = 1;
    if (P->p < P->e && *P->p == '^') { neg = 1; P->p++; }
    P->cr_n = 0;
    for (;;) {
        if (P->p >= P->e) { P->err = "unterminated class"; return NULL; }
        if (*P->p == ']' && !first) { P->p++; break; }
        first = 0;
        if (*P->p == '[') { P->err = "nested classes are not supported"; return NULL; }
        uint32_t lo;
        int r;
        if (*P->p == '\\') { P->p++; r = etok_re_escape(P, &lo, &cats, &space, &nspace); }
        else r = etok_re_char(P, &lo);
        if (!r) return NULL;
        if (r == 2) continue;
        uint32_t hi = lo;
        if (P->p + 1 < P->e && *P->p == '-' && P->p[1] != ']') {
            P->p++;
            if (*P->p == '\\') {
                P->p++;
                uint32_t k2 = 0;
                int s2 = 0, n2 = 0;
                r = etok_re_escape(P, &hi, &k2, &s2, &n2);
                if (r != 1) { if (!P->err) P->err = "bad class range"; return NULL; }
            } else if (!etok_re_char(P, &hi)) return NULL;
            if (hi < lo) { P->err = "bad class range"; return NULL; }
        }
        if (icase && hi - lo < 1024) {
            for (uint32_t c = lo; c <= hi; c++) etok_cr_add_fold(P, c);
        } else {
            etok_cr_add(P, lo, hi);
        }
        if (P->err) return NULL;
    }
    int32_t k = etok_cls_finish(P, cats, space, nspace, neg);
    if (k < 0) return NULL;
    etok_rnode *n = etok_rn_new(P, ETOK_RN_CLASS);
    if (n) n->val = (uint32_t)k;
    return n;
}

static etok_rnode *etok_re_alt(etok_rparse *P, int icase);

static etok_rnode *etok_re_atom(etok_rparse *P, int icase) {
    unsigned ch = *P->p;
    if (ch == '(') {
        P->p++;
        int look = 0, neg = 0, ic = icase;
        if (P->p < P->e && *P->p == '?') {
            P->p++;
            if (P->p < P->e && *P->p == ':') P->p++;
            else if (P->p < P->e && (*P->p == '=' || *P->p == '!')) { look = 1; neg = *P->p == '!'; P->p++; }
            else if (P->p + 1 < P->e && P->p[0] == 'i' && P->p[1] == ':') { ic = 1; P->p += 2; }
            else if (P->p + 1 < P->e && P->p[0] == '-' && P->p[1] == 'i' && P->p + 2 < P->e && P->p[2] == ':') { ic = 0; P->p += 3; }
            else { P->err = "unsupported group"; return NULL; }
        }
        if (++P->depth > 64) { P->err = "groups nested too deep"; return NULL; }
        etok_rnode *body = etok_re_alt(P, ic);
        P->depth--;
        if (!body) return NULL;
        if (P->p >= P->e || *P->p != ')') { etok_rn_free(P->a, body); P->err = "missing )"; return NULL; }
        P->p++;
        if (!look) return body;
        etok_rnode *n = etok_rn_new(P, ETOK_RN_LOOK);
        if (!n) { etok_rn_free(P->a, body); return NULL; }
        n->neg = neg;
        n->kid = body;
        return n;
    }
    if (ch == '[') { P->p++; return etok_re_class(P, icase); }
    if (ch == '$') { P->p++; return etok_rn_new(P, ETOK_RN_EOL); }
    if (ch == '^') { P->p++; return etok_rn_new(P, ETOK_RN_BOL); }
    if (ch == '.') {
        P->p++;
        P->cr_n = 0;
        etok_cr_add(P, '\n', '\n');
        int32_t k = etok_cls_finish(P, 0, 0, 0, 1);
        etok_rnode *n = k < 0 ? NULL : etok_rn_new(P, ETOK_RN_CLASS);
        if (n) n->val = (uint32_t)k;
        return n;
    }
    if (ch == '*' || ch == '+' || ch == '?' || ch == '{') { P->err = "nothing to repeat"; return NULL; }
    uint32_t c, cats = 0;
    int space = 0, nspace = 0, r;
    if (ch == '\\') { P->p++; r = etok_re_escape(P, &c, &cats, &space, &nspace); }
    else r = etok_re_char(P, &c);
    if (!r) return NULL;
    if (r == 1 && !icase) {
        etok_rnode *n = etok_rn_new(P, ETOK_RN_CHAR);
        if (n) n->val = c;
        return n;
    }
    P->cr_n = 0;
    if (r == 1) etok_cr_add_fold(P, c);
    int32_t k = etok_cls_finish(P, cats, space, nspace, 0);
    etok_rnode *n = k < 0 ? NULL : etok_rn_new(P, ETOK_RN_CLASS);
    if (n) n->val = (uint32_t)k;
    return n;
}

static int etok_re_number(etok_rparse *P, uint32_t *v) {
    uint32_t x = 0;
    int d = 0;
    while (P->p < P->e && *P->p >= '0' && *P->p <= '9') {
        x = x * 10 + (uint32_t)(*P->p++ - '0');
        if (++d > 4) return 0;
    }
    *v = x;
    return d;
}

static etok_rnode *etok_re_repeat(etok_rparse *P, int icase) {
    etok_rnode *a = etok_re_atom(P, icase);
    while (a && P->p < P->e) {
        uint32_t mn, mx;
        unsigned ch = *P->p;
        if (ch == '?') { mn = 0; mx = 1; P->p++; }
        else if (ch == '*') { mn = 0; mx = ETOK_RE_INF; P->p++; }
        else if (ch == '+') { mn = 1; mx = ETOK_RE_INF; P->p++; }
        else if (ch == '{') {
            const unsigned char *save = P->p;
            P->p++;
            if (!etok_re_number(P, &mn)) { P->p = save; P->err = "bad {m,n}"; break; }
            mx = mn;
            if (P->p < P->e && *P->p == ',') {
                P->p++;
                if (P->p < P->e && *P->p == '}') mx = ETOK_RE_INF;
                else if (!etok_re_number(P, &mx)) { P->err = "bad {m,n}"; break; }
            }
            if (P->p >= P->e || *P->p != '}' || mx < mn || mn > 1000 || (mx != ETOK_RE_INF && mx > 1000)) {
                P->err = "bad {m,n}";
                break;
            }
            P->p++;
        } else break;
        if (P->p < P->e && (*P->p == '?' || *P->p == '+')) { P->err = "lazy and possessive quantifiers are not supported"; break; }
        etok_rnode *r = etok_rn_new(P, ETOK_RN_REP);
        if (!r) break;
        r->min = mn; r->max = mx; r->kid = a;
        a = r;
    }
    if (P->err) { etok_rn_free(P->a, a); return NULL; }
    return a;
}

static etok_rnode *etok_re_alt(etok_rparse *P, int icase) {
    etok_rnode *alt = etok_rn_new(P, ETOK_RN_ALT), **branch = NULL;
    if (!alt) return NULL;
    for (;;) {
        etok_rnode *cat = etok_rn_new(P, ETOK_RN_CAT), **tail;
        if (!cat) break;
        if (branch) *branch = cat; else alt->kid = cat;
        branch = &cat->next;
        tail = &cat->kid;
        while (P->p < P->e && *P->p != '|' && *P->p != ')') {
            etok_rnode *r = etok_re_repeat(P, icase);
            if (!r) break;
            *tail = r;
            tail = &r->next;
        }
        if (P->err) break;
        if (P->p < P->e && *P->p == '|') { P->p++; continue; }
        break;
    }
    if (P->err) { etok_rn_free(P->a, alt); return NULL; }
    return alt;
}

static int32_t etok_re_emit(etok_rparse *P, int op) {
    etok_re *re = P->re;
    if (re->n_ins >= ETOK_RE_MAX_INS) { P->err = "pattern too large"; return -1; }
    int64_t cap = re->cap_ins;
    if (!etok_re_grow(P, (void **)&re->ins, &cap, re->n_ins + 1, sizeof(etok_rins))) return -1;
    re->cap_ins = (int32_t)cap;
    etok_rins *i = &re->ins[re->n_ins];
    memset(i, 0, sizeof *i);
    i->op = (uint8_t)op;
    return re->n_ins++;
}

static int etok_rn_nullable(const etok_rnode *n) {
    switch (n->kind) {
    case ETOK_RN_CHAR: case ETOK_RN_CLASS: return 0;
    case ETOK_RN_CAT:
        for (const etok_rnode *k = n->kid; k; k = k->next) if (!etok_rn_nullable(k)) return 0;
        return 1;
    case ETOK_RN_ALT:
        for (const etok_rnode *k = n->kid; k; k = k->next) if (etok_rn_nullable(k)) return 1;
        return 0;
    case ETOK_RN_REP: return n->min == 0 || etok_rn_nullable(n->kid);
    default: return 1;
    }
}

/* a CHAR or CLASS node, possibly inside one-element CATs / ALTs */
static const etok_rnode *etok_rn_single(const etok_rnode *n) {
    while ((n->kind == ETOK_RN_CAT || n->kind == ETOK_RN_ALT) && n->kid && !n->kid->next) n = n->kid;
    return n->kind == ETOK_RN_CHAR || n->kind == ETOK_RN_CLASS ? n : NULL;
}

static void etok_re_gen(etok_rparse *P, const etok_rnode *n) {
    if (P->err) return;
    etok_re *re = P->re;
    int32_t pc;
    switch (n->kind) {
    case ETOK_RN_CHAR:
        if ((pc = etok_re_emit(P, ETOK_RO_CHAR)) >= 0) re->ins[pc].x = (int32_t)n->val;
        return;
    case ETOK_RN_CLASS:
        if ((pc = etok_re_emit(P, ETOK_RO_CLASS)) >= 0) re->ins[pc].x = (int32_t)n->val;
        return;
    case ETOK_RN_EOL: etok_re_emit(P, ETOK_RO_EOL); return;
    case ETOK_RN_BOL: etok_re_emit(P, ETOK_RO_BOL); return;
    case ETOK_RN_EMPTY: return;
    case ETOK_RN_CAT:
        for (const etok_rnode *k = n->kid; k; k = k->next) etok_re_gen(P, k);
        return;
    case ETOK_RN_ALT: {
        int32_t jumps[256], nj = 0;
        for (const etok_rnode *k = n->kid; k && !P->err; k = k->next) {
            if (!k->next) { etok_re_gen(P, k); break; }
            int32_t sp = etok_re_emit(P, ETOK_RO_SPLIT);
            if (sp < 0) return;
            re->ins[sp].x = sp + 1;
            etok_re_gen(P, k);
            int32_t j = etok_re_emit(P, ETOK_RO_JMP);
            if (j < 0) return;
            if (nj == 256) { P->err = "too many alternatives"; return; }
            jumps[nj++] = j;
            re->ins[sp].y = re->n_ins;
        }
        for (int32_t i = 0; i < nj && !P->err; i++) re->ins[jumps[i]].x = re->n_ins;
        return;
    }
    case ETOK_RN_REP: {
        const etok_rnode *s = etok_rn_single(n->kid);
        if (s) {
            int32_t k = (int32_t)s->val;
            if (s->kind == ETOK_RN_CHAR) {
                P->cr_n = 0;
                etok_cr_add(P, s->val, s->val);
                k = etok_cls_finish(P, 0, 0, 0, 0);
                if (k < 0) return;
            }
            if ((pc = etok_re_emit(P, ETOK_RO_RUN)) >= 0) {
                re->ins[pc].x = k; re->ins[pc].min = n->min; re->ins[pc].max = n->max;
            }
            return;
        }
        for (uint32_t i = 0; i < n->min && !P->err; i++) etok_re_gen(P, n->kid);
        if (n->max == ETOK_RE_INF) {
            if (etok_rn_nullable(n->kid)) { P->err = "a loop over a group that can match nothing"; return; }
            int32_t sp = etok_re_emit(P, ETOK_RO_SPLIT);
            if (sp < 0) return;
            re->ins[sp].x = sp + 1;
            etok_re_gen(P, n->kid);
            int32_t j = etok_re_emit(P, ETOK_RO_JMP);
            if (j < 0) return;
            re->ins[j].x = sp;
            re->ins[sp].y = re->n_ins;
            return;
        }
        int32_t splits[1000], ns = 0;
        for (uint32_t i = n->min; i < n->max && !P->err; i++) {
            int32_t sp = etok_re_emit(P, ETOK_RO_SPLIT);
            if (sp < 0) return;
            re->ins[sp].x = sp + 1;
            splits[ns++] = sp;
            etok_re_gen(P, n->kid);
        }
        for (int32_t i = 0; i < ns && !P->err; i++) re->ins[splits[i]].y = re->n_ins;
        return;
    }
    case ETOK_RN_LOOK: {
        int32_t lk = etok_re_emit(P, ETOK_RO_LOOK);
        if (lk < 0) return;
        re->ins[lk].neg = (uint8_t)n->neg;
        etok_re_gen(P, n->kid);
        etok_re_emit(P, ETOK_RO_LOOKEND);
        if (!P->err) re->ins[lk].x = re->n_ins;
        return;
    }
    }
}

/* What a branch starting at pc must begin with (for SPLIT's quick test). */
static void etok_re_first(etok_re *re, int32_t sp) {
    int32_t pc = re->ins[sp].x;
    for (int hops = 0; hops < 8 && re->ins[pc].op == ETOK_RO_JMP; hops++) pc = re->ins[pc].x;
    const etok_rins *i = &re->ins[pc];
    etok_rins *s = &re->ins[sp];
    if (i->op == ETOK_RO_CHAR) { s->fkind = 1; s->fval = i->x; }
    else if (i->op == ETOK_RO_CLASS || (i->op == ETOK_RO_RUN && i->min > 0)) { s->fkind = 2; s->fval = i->x; }
}

/* The ASCII characters a match from pc can start with, ORed into fa; returns 1
 * when it may match empty there or the answer is unknown (then fa means nothing). */
static int etok_re_first_ascii(const etok_re *re, int32_t pc, int depth, uint32_t fa[4]) {
    for (;;) {
        if (depth > 64) return 1;
        const etok_rins *i = &re->ins[pc];
        switch (i->op) {
        case ETOK_RO_CHAR:
            if ((uint32_t)i->x < 128) fa[i->x >> 5] |= 1u << (i->x & 31);
            return 0;
        case ETOK_RO_CLASS:
            for (int k = 0; k < 4; k++) fa[k] |= re->cls[i->x].ascii[k];
            return 0;
        case ETOK_RO_RUN:
            for (int k = 0; k < 4; k++) fa[k] |= re->cls[i->x].ascii[k];
            if (i->min > 0) return 0;
            pc++; depth++;
            continue;
        case ETOK_RO_SPLIT:
            if (etok_re_first_ascii(re, i->x, depth + 1, fa)) return 1;
            pc = i->y; depth++;
            continue;
        case ETOK_RO_JMP:
            pc = i->x; depth++;
            continue;
        default:
            return 1;
        }
    }
}

static void etok_re_firsts(etok_re *re) {
    for (int32_t i = 0; i < re->n_ins; i++) {
        etok_rins *s = &re->ins[i];
        if (s->op != ETOK_RO_SPLIT) continue;
        etok_re_first(re, i);
        if (etok_re_first_ascii(re, s->x, 0, s->fa)) memset(s->fa, 0xFF, sizeof s->fa);
    }
    if (etok_re_first_ascii(re, 0, 0, re->fa)) memset(re->fa, 0xFF, sizeof re->fa);
}

/* Compile pattern (len bytes of UTF-8).  Returns 0 or an error text. */
static const char *etok_re_compile(const ember_allocator *a, const char *pat, size_t len, etok_re *re) {
    etok_rparse P;
    memset(&P, 0, sizeof P);
    memset(re, 0, sizeof *re);
    P.a = a; P.re = re;
    P.p = (const unsigned char *)pat; P.e = P.p + len;
    etok_rnode *root = etok_re_alt(&P, 0);
    if (root && P.p < P.e) P.err = "unbalanced )";
    if (root && !P.err) {
        etok_re_gen(&P, root);
        etok_re_emit(&P, ETOK_RO_MATCH);
    }
    etok_rn_free(a, root);
    ec_free(a, P.cr);
    if (!P.err) etok_re_firsts(re);
    if (P.err) { etok_re_free(a, re); return P.err; }
    return NULL;
}

/* ---- matcher */

static int etok_rgrow(etok_rsub *s) {
    size_t nc = s->st_cap ? s->st_cap * 2 : 64;
    etok_rframe *q = (etok_rframe *)ec_realloc(s->a, s->st, nc * sizeof *q);
    if (!q) { s->nomem = 1; return 0; }
    s->st = q; s->st_cap = nc;
    return 1;
}

static inline int etok_rpush(etok_rsub *s, etok_rframe f) {
    if (s->st_n == s->st_cap && !etok_rgrow(s)) return 0;
    s->st[s->st_n++] = f;
    return 1;
}

/* Anchored match of the program from pc at pos: the end of the match, or -1. */
static int64_t etok_re_exec(const etok_re *re, etok_rsub *s, int32_t pc, size_t pos) {
    const size_t base = s->st_n, n = s->n;
    const uint32_t *cp = s->cp;
    const uint8_t *cb = s->cb;
    for (;;) {
        const etok_rins *I = &re->ins[pc];
        switch (I->op) {
        case ETOK_RO_CHAR:
            if (pos < n && cp[pos] == (uint32_t)I->x) { pos++; pc++; continue; }
            goto fail;
        case ETOK_RO_CLASS:
            if (pos < n && etok_rcls_has(re, &re->cls[I->x], cp[pos], cb[pos])) { pos++; pc++; continue; }
            goto fail;
        case ETOK_RO_RUN: {
            const etok_rcls *k = &re->cls[I->x];
            etok_rrun *rt = &s->rt[pc];
            size_t e;
            if (I->max == ETOK_RE_INF) {
                if (rt->gen_c == s->gen && pos >= rt->c_lo && pos <= rt->c_end) {
                    e = rt->c_end;
                } else {
                    e = pos;
                    while (e < n && etok_rcls_has(re, k, cp[e], cb[e])) e++;
                    rt->gen_c = s->gen; rt->c_lo = pos; rt->c_end = e;
                }
                if (rt->gen_f == s->gen && rt->f_end == e && pos >= rt->f_from) goto fail;
            } else {
                size_t lim = n - pos < I->max ? n : pos + I->max;
                e = pos;
                while (e < lim && etok_rcls_has(re, k, cp[e], cb[e])) e++;
            }
            if (e - pos < I->min) goto fail;
            if (e > pos + I->min || I->max == ETOK_RE_INF) {
                etok_rframe f = { pc, 1, e, pos + I->min, pos, e };
                if (!etok_rpush(s, f)) return -1;
            }
            pos = e; pc++;
            continue;
        }
        case ETOK_RO_SPLIT:
            if (pos < n && cp[pos] < 128 ? !((I->fa[cp[pos] >> 5] >> (cp[pos] & 31)) & 1)
                : I->fkind && (pos >= n || (I->fkind == 1 ? cp[pos] != (uint32_t)I->fval
                                            : !etok_rcls_has(re, &re->cls[I->fval], cp[pos], cb[pos])))) {
                pc = I->y;
                continue;
            } else {
                etok_rframe f = { I->y, 0, pos, 0, 0, 0 };
                if (!etok_rpush(s, f)) return -1;
                pc = I->x;
                continue;
            }
        case ETOK_RO_JMP: pc = I->x; continue;
        case ETOK_RO_MATCH: case ETOK_RO_LOOKEND:
            s->st_n = base;
            return (int64_t)pos;
        case ETOK_RO_EOL:
            if (pos == n || cp[pos] == '\n') { pc++; continue; }
            goto fail;
        case ETOK_RO_BOL:
            if (pos == 0 || cp[pos - 1] == '\n') { pc++; continue; }
            goto fail;
        case ETOK_RO_LOOK: {
            int64_t r = etok_re_exec(re, s, pc + 1, pos);
            if (s->nomem) return -1;
            if ((r >= 0) != (I->neg != 0)) { pc = I->x; continue; }
            goto fail;
        }
        }
    fail:
        for (;;) {
            if (s->st_n == base) return -1;
            etok_rframe *f = &s->st[s->st_n - 1];
            if (f->kind == 0) { pc = f->pc; pos = f->cur; s->st_n--; break; }
            if (f->cur == f->lo) {
                /* every continuation of this run failed: remember it */
                if (re->ins[f->pc].max == ETOK_RE_INF) {
                    etok_rrun *rt = &s->rt[f->pc];
                    if (!(rt->gen_f == s->gen && rt->f_end == f->end && rt->f_from <= f->start)) {
                        rt->gen_f = s->gen; rt->f_from = f->start; rt->f_end = f->end;
                    }
                }
                s->st_n--;
                continue;
            }
            f->cur--;
            pc = f->pc + 1;
            pos = f->cur;
            break;
        }
    }
}

/* Leftmost match at or after from: 1 and [*ms, *me), or 0.  Empty matches
 * are skipped (they cut nothing). */
static int etok_re_find(const etok_re *re, etok_rsub *s, size_t from, size_t *ms, size_t *me) {
    for (size_t st = from; st < s->n; st++) {
        uint32_t c = s->cp[st];
        if (c < 128 && !((re->fa[c >> 5] >> (c & 31)) & 1)) continue;
        int64_t r = etok_re_exec(re, s, 0, st);
        if (s->nomem) return 0;
        if (r > (int64_t)st) { *ms = st; *me = (size_t)r; return 1; }
    }
    return 0;
}

/* ------------------------------------------------------- pre-tokenizers
 *
 * Each GGUF tokenizer.ggml.pre name stands for the split steps of the
 * model's Hugging Face tokenizer.json: its Split / ByteLevel / Digits /
 * Punctuation pre-tokenizers in order, each written as the pattern whose
 * matches it isolates (ByteLevel with use_regex = the GPT-2 pattern,
 * Digits = \p{N} or \p{N}+, Punctuation = [\p{P} and ASCII punctuation]+).
 * A step written "\x01..." runs after ByteLevel, on the byte-level text
 * (each byte one character of GPT-2's byte alphabet), as Hugging Face runs
 * it; later steps then may cut inside a UTF-8 character.
 * Where llama.cpp approximates a model's pattern this table follows Hugging
 * Face (the reference the fixtures in tests/data/tokenizers come from):
 *  - deepseek-llm: Digits(individual_digits) splits single digits; llama.cpp
 *    uses \p{N}+.
 *  - falcon: llama.cpp's list has no Digits step and runs its last pattern on
 *    the text rather than after ByteLevel; here \p{N}+ and [0-9]{3} run on the
 *    byte-level text, so bytes that map to ² ³ ¹ ¼ ½ ¾ split as Hugging
 *    Face splits them.
 *  - gpt-2, mpt, starcoder, refact, smollm, falcon: the GPT-2 pattern ends with
 *    |\s+ in Hugging Face's ByteLevel (llama.cpp drops it; it only matters
 *    for trailing whitespace before a non-space in the same piece).
 *  - qwen2: NFC first (tokenizer.json's normalizer; llama.cpp skips it).
 *  - (?i:...) is kept as written (llama.cpp spells it out with [sS]...,
 *    which misses U+017F and U+212A). */
#define ETOK_P_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define ETOK_P_CL100K_HEAD "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define ETOK_P_CL100K_TAIL "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define ETOK_P_UPPER "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define ETOK_P_LOWER "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"
#define ETOK_P_CJK "[\xE4\xB8\x80-\xE9\xBE\xA5\xE0\xA0\x80-\xE4\xB8\x80\xEA\xB0\x80-\xED\x9F\xBF]+"

static const struct etok_pre_def {
    const char *names;      /* tokenizer.ggml.pre values, space separated */
    uint8_t nfc;            /* NFC before splitting */
    uint8_t fast;           /* hand-written splitter giving the same splits
                               (tested): 1 GPT-2, 2 cl100k, 3 cl100k with single digits */
    const char *steps[6];
} etok_pre_defs[] = {
    [ETOK_PRE_DEFAULT] = { "default", 0, 1, { ETOK_P_GPT2 } },
    [ETOK_PRE_GPT2] = { "gpt-2 gpt2 mpt", 0, 1, { ETOK_P_GPT2 } },
    [ETOK_PRE_LLAMA3] = { "llama-bpe llama3 llama-v3 dbrx smaug-bpe", 0, 2,
                          { ETOK_P_CL100K_HEAD "\\p{N}{1,3}" ETOK_P_CL100K_TAIL } },
    [ETOK_PRE_QWEN2] = { "qwen2 deepseek-r1-qwen", 1, 3, { ETOK_P_CL100K_HEAD "\\p{N}" ETOK_P_CL100K_TAIL } },
    [ETOK_PRE_SMOLLM] = { "smollm starcoder refact", 0, 0, { "\\p{N}", ETOK_P_GPT2 } },
    [ETOK_PRE_FALCON] = { "falcon", 0, 0,
                          { "[\\p{P}$+<=>^`|~]+", ETOK_P_GPT2, "\x01\\p{N}+", "\x01[0-9][0-9][0-9]" } },
    [ETOK_PRE_DEEPSEEK_LLM] = { "deepseek-llm", 0, 0, {
        "[\\r\\n]",
        "\\s?[A-Za-z\xC2\xB5\xC3\x80-\xC3\x96\xC3\x98-\xC3\xB6\xC3\xB8-\xC6\xBA\xC6\xBC-\xC6\xBF\xC7\x84-\xCA\x93"
        "\xCA\x95-\xCA\xAF\xCD\xB0-\xCD\xB3\xCD\xB6\xCD\xB7\xCD\xBB-\xCD\xBD\xCD\xBF\xCE\x86\xCE\x88-\xCE\x8A"
        "\xCE\x8C\xCE\x8E-\xCE\xA1\xCE\xA3-\xCF\xB5\xCF\xB7-\xD2\x81\xD2\x8A-\xD4\xAF\xD4\xB1-\xD5\x96\xE1\x82\xA0"
        "-\xE1\x83\x85\xE1\x8E\xA0-\xE1\x8F\xB5\xE1\x8F\xB8-\xE1\x8F\xBD\xE1\xB2\x90-\xE1\xB2\xBA\xE1\xB2\xBD"
        "-\xE1\xB2\xBF\xE1\xB4\x80-\xE1\xB4\xAB\xE1\xB5\xAB-\xE1\xB5\xB7\xE1\xB5\xB9-\xE1\xB6\x9A\xE1\xB8\x80"
        "-\xE1\xBC\x95\xE1\xBC\x98-\xE1\xBC\x9D\xE1\xBC\xA0-\xE1\xBD\x85\xE1\xBD\x88-\xE1\xBD\x8D\xE1\xBD\x90"
        "-\xE1\xBD\x97\xE1\xBD\x99\xE1\xBD\x9B\xE1\xBD\x9D\xE1\xBD\x9F-\xE1\xBD\xBD\xE1\xBE\x80-\xE1\xBE\xB4"
        "\xE1\xBE\xB6-\xE1\xBE\xBC\xE1\xBE\xBE\xE1\xBF\x82-\xE1\xBF\x84\xE1\xBF\x86-\xE1\xBF\x8C\xE1\xBF\x90"
        "-\xE1\xBF\x93\xE1\xBF\x96-\xE1\xBF\x9B\xE1\xBF\xA0-\xE1\xBF\xAC\xE1\xBF\xB2-\xE1\xBF\xB4\xE1\xBF\xB6"
        "-\xE1\xBF\xBC\xE2\x84\x82\xE2\x84\x87\xE2\x84\x8A-\xE2\x84\x93\xE2\x84\x95\xE2\x84\x99-\xE2\x84\x9D"
        "\xE2\x84\xA4\xE2\x84\xA6\xE2\x84\xA8\xE2\x84\xAA-\xE2\x84\xAD\xE2\x84\xAF-\xE2\x84\xB4\xE2\x84\xB9"
        "\xE2\x84\xBC-\xE2\x84\xBF\xE2\x85\x85-\xE2\x85\x89\xE2\x85\x8E\xE2\x86\x83\xE2\x86\x84\xE2\xB0\x80"
        "-\xE2\xB1\xBB\xE2\xB1\xBE-\xE2\xB3\xA4\xE2\xB3\xAB-\xE2\xB3\xAE\xE2\xB3\xB2\xE2\xB3\xB3\xEA\x99\x80"
        "-\xEA\x99\xAD\xEA\x9A\x80-\xEA\x9A\x9B\xEA\x9C\xA2-\xEA\x9D\xAF\xEA\x9D\xB1-\xEA\x9E\x87\xEA\x9E\x8B"
        "-\xEA\x9E\x8E\xEA\xAD\xB0-\xEA\xAE\xBF\xEF\xAC\x80-\xEF\xAC\x86\xEF\xAC\x93-\xEF\xAC\x97\xEF\xBC\xA1"
        "-\xEF\xBC\xBA\xEF\xBD\x81-\xEF\xBD\x9A\xF0\x90\x90\x80-\xF0\x90\x91\x8F\xF0\x90\x92\xB0-\xF0\x90\x93\x93"
        "\xF0\x90\x93\x98-\xF0\x90\x93\xBB\xF0\x90\xB2\x80-\xF0\x90\xB2\xB2\xF0\x90\xB3\x80-\xF0\x90\xB3\xB2"
        "\xF0\x91\xA2\xA0-\xF0\x91\xA3\x9F\xF0\x9E\xA4\x80-\xF0\x9E\xA5\x83]+",
        "\\s?[!-/:-~\xEF\xBC\x81-\xEF\xBC\x8F\xEF\xBC\x9A-\xEF\xBD\x9E\xE2\x80\x98-\xE2\x80\x9F\xE3\x80\x80"
        "-\xE3\x80\x82]+",
        "\\s+$",
        ETOK_P_CJK,
        "\\p{N}" } },
    [ETOK_PRE_DEEPSEEK_CODER] = { "deepseek-coder", 0, 0,
                                  { "[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", ETOK_P_CJK, "\\p{N}" } },
    [ETOK_PRE_TEKKEN] = { "tekken", 0, 0, {
        "[^\\r\\n\\p{L}\\p{N}]?" ETOK_P_UPPER "*" ETOK_P_LOWER "+|[^\\r\\n\\p{L}\\p{N}]?" ETOK_P_UPPER "+" ETOK_P_LOWER
        "*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" } },
    [ETOK_PRE_GPT4O] = { "gpt-4o", 0, 0, {
        "[^\\r\\n\\p{L}\\p{N}]?" ETOK_P_UPPER "*" ETOK_P_LOWER "+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?"
        ETOK_P_UPPER "+" ETOK_P_LOWER "*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*"
        "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" } },
};
#define ETOK_N_PRE ((int)(sizeof etok_pre_defs / sizeof etok_pre_defs[0]))

int etok_pre_lookup(const char *name, size_t len) {
    for (int i = 0; i < ETOK_N_PRE; i++) {
        const char *s = etok_pre_defs[i].names;
        while (*s) {
            size_t l = strcspn(s, " ");
            if (l == len && memcmp(s, name, len) == 0) return i;
            s += l;
            while (*s == ' ') s++;
        }
    }
    return -1;
}

const char *etok_pre_pattern(int pre, int step) {
    if (pre < 0 || pre >= ETOK_N_PRE || step < 0 || step >= 6) return NULL;
    return etok_pre_defs[pre].steps[step];
}

/* ------------------------------------------------------------------ NFC
 * Canonical decomposition, canonical ordering, canonical composition
 * (Unicode 14 data from unicode_tables.h; Hangul by its formula).  Text
 * without a code point at or above U+0300 is already NFC and is not copied. */

#define ETOK_SBASE 0xAC00u
#define ETOK_LBASE 0x1100u
#define ETOK_VBASE 0x1161u
#define ETOK_TBASE 0x11A7u
#define ETOK_SCOUNT 11172u
#define ETOK_NCOUNT 588u
#define ETOK_TCOUNT 28u

static int etok_nfc_needed(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++)
        if (u[i] >= 0xCC) return 1;     /* lead bytes of U+0300 and above */
    return 0;
}

/* full canonical decomposition of c appended to d (room for 4 more needed) */
static size_t etok_decompose(uint32_t c, uint32_t *d, size_t o) {
    if (c >= ETOK_SBASE && c < ETOK_SBASE + ETOK_SCOUNT) {
        uint32_t si = c - ETOK_SBASE;
        d[o++] = ETOK_LBASE + si / ETOK_NCOUNT;
        d[o++] = ETOK_VBASE + (si % ETOK_NCOUNT) / ETOK_TCOUNT;
        if (si % ETOK_TCOUNT) d[o++] = ETOK_TBASE + si % ETOK_TCOUNT;
        return o;
    }
    int k = c < 0xC0 || c > 0x10FFFF ? -1 : ut_decomp_find(c);
    if (k < 0) { d[o++] = c; return o; }
    uint64_t e = ut_decomp[k];
    uint32_t a = (uint32_t)(e >> 22) & 0x1FFFFF, b = (uint32_t)(e >> 1) & 0x1FFFFF;
    o = etok_decompose(a, d, o);
    if (b) o = etok_decompose(b, d, o);
    return o;
}

static uint32_t etok_compose(const etok *t, uint32_t a, uint32_t b) {
    if (a >= ETOK_LBASE && a < ETOK_LBASE + 19 && b >= ETOK_VBASE && b < ETOK_VBASE + 21)
        return ETOK_SBASE + ((a - ETOK_LBASE) * 21 + (b - ETOK_VBASE)) * ETOK_TCOUNT;
    if (a >= ETOK_SBASE && a < ETOK_SBASE + ETOK_SCOUNT && (a - ETOK_SBASE) % ETOK_TCOUNT == 0 &&
        b > ETOK_TBASE && b < ETOK_TBASE + ETOK_TCOUNT)
        return a + (b - ETOK_TBASE);
    uint64_t key = (uint64_t)a << 21 | b;
    int32_t lo = 0, hi = t->n_comp - 1;
    while (lo <= hi) {
        int32_t mid = (lo + hi) >> 1;
        uint64_t e = ut_decomp[t->comp[mid]];
        uint64_t k = (e >> 1) & ((1ull << 42) - 1);   /* first << 21 | second */
        if (k == key) return (uint32_t)(e >> 43);
        if (k < key) lo = mid + 1; else hi = mid - 1;
    }
    return 0;
}

/* ------------------------------------------------------------ split driver */

/* Per-encode state of the regex pre-tokenizer. */
typedef struct etok_rwork {
    etok_rsub rs;
    etok_rrun *rt[6];
    uint32_t gen[6];
    uint8_t *cb; size_t cb_cap;          /* category bytes of the code points */
    uint32_t *bcp; uint8_t *bcb;         /* byte-level text: alphabet code point, category */
    size_t bcp_cap, bcb_cap;
    uint8_t *ucl; size_t ucl_cap;        /* UT_* classes, for steps with a hand-written splitter */
} etok_rwork;

static int etok_comp_cmp(const void *x, const void *y) {
    uint64_t a = (ut_decomp[*(const int32_t *)x] >> 1) & ((1ull << 42) - 1);
    uint64_t b = (ut_decomp[*(const int32_t *)y] >> 1) & ((1ull << 42) - 1);
    return a < b ? -1 : a > b;
}

/* Compile the split steps of t->pre; the NFC composition index; the byte
 * alphabet and its categories. */
static int etok_pre_build(etok *t, int general, char *err, size_t errlen) {
    const struct etok_pre_def *pd = &etok_pre_defs[t->pre];
    const ember_allocator *a = t->a;
    int n = 0;
    while (n < 6 && pd->steps[n]) n++;
    t->re = (etok_re *)ec_calloc(a, (size_t)(n ? n : 1), sizeof(etok_re));
    if (!t->re) return ec_errorf(err, errlen, EMBER_ERR_NOMEM, "tokenizer: out of memory");
    t->n_steps = n;
    t->byte_from = n;
    for (int i = 0; i < n; i++) {
        const char *p = pd->steps[i];
        int bytes = p[0] == '\x01';
        if (bytes && t->byte_from == n) t->byte_from = i;
        if (!bytes && t->byte_from < n)
            return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "tokenizer: pre-tokenizer %d: a text step after a byte step", t->pre);
        const char *e = etok_re_compile(a, p + bytes, strlen(p + bytes), &t->re[i]);
        if (e)
            return ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "tokenizer: pre-tokenizer %d step %d: %s", t->pre, i, e);
    }
    t->fast = general ? 0 : pd->fast;
    for (int i = 0; i < t->byte_from && !general; i++) {
        const char *p = pd->steps[i];
        t->step_fast[i] = !strcmp(p, ETOK_P_GPT2) ? 1 : !strcmp(p, etok_pre_defs[ETOK_PRE_LLAMA3].steps[0]) ? 2
                        : !strcmp(p, etok_pre_defs[ETOK_PRE_QWEN2].steps[0]) ? 3 : 0;
    }
    t->nfc = pd->nfc;
    if (t->nfc) {
        t->comp = (int32_t *)ec_malloc(a, UT_DECOMP_N * sizeof(int32_t));
        if (!t->comp) return ec_errorf(err, errlen, EMBER_ERR_NOMEM, "tokenizer: out of memory");
        for (int32_t i = 0; i < UT_DECOMP_N; i++)
            if (ut_decomp[i] & 1) t->comp[t->n_comp++] = i;
        qsort(t->comp, (size_t)t->n_comp, sizeof(int32_t), etok_comp_cmp);
    }
    uint32_t next = 0x100;
    for (int b = 0; b < 256; b++) {
        int direct = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        uint32_t c = direct ? (uint32_t)b : next++;
        t->bytecp[b] = c;
        t->bytecb[b] = (uint8_t)etok_cat_byte(c);
    }
    return EMBER_OK;
}

int64_t etok_split_test(const char *pattern, const char *text, size_t len, size_t *ends, size_t cap,
                        char *err, size_t errlen) {
    etok_re re;
    const char *e = etok_re_compile(NULL, pattern, strlen(pattern), &re);
    if (e) { ec_errorf(err, errlen, EMBER_ERR_UNSUPPORTED, "%s", e); return -1; }
    uint32_t *cp = (uint32_t *)ec_malloc(NULL, (len + 1) * sizeof(uint32_t));
    uint8_t *cb = (uint8_t *)ec_malloc(NULL, len + 1);
    size_t *off = (size_t *)ec_malloc(NULL, (len + 1) * sizeof(size_t));
    etok_rrun *rt = (etok_rrun *)ec_calloc(NULL, (size_t)re.n_ins, sizeof(etok_rrun));
    int64_t np = -2;
    if (cp && cb && off && rt) {
        size_t nc = 0;
        for (size_t i = 0; i < len;) {
            uint32_t c;
            int l = ec_utf8_decode((const unsigned char *)text + i, len - i, &c);
            if (l <= 0) { c = 0xFFFFFFFFu; l = 1; }
            off[nc] = i;
            cp[nc] = c;
            cb[nc] = (uint8_t)etok_cat_byte(c);
            nc++;
            i += (size_t)l;
        }
        off[nc] = len;
        etok_rsub s;
        memset(&s, 0, sizeof s);
        s.cp = cp; s.cb = cb; s.n = nc; s.rt = rt; s.gen = 1;
        size_t pos = 0, ms, me;
        np = 0;
        while (pos < nc && etok_re_find(&re, &s, pos, &ms, &me)) {
            if (ms > pos) { if ((size_t)np < cap) ends[np] = off[ms]; np++; }
            if ((size_t)np < cap) ends[np] = off[me];
            np++;
            pos = me;
        }
        if (pos < nc) { if ((size_t)np < cap) ends[np] = len; np++; }
        if (s.nomem) np = -2;
        ec_free(NULL, s.st);
    }
    ec_free(NULL, cp); ec_free(NULL, cb); ec_free(NULL, off); ec_free(NULL, rt);
    etok_re_free(NULL, &re);
    return np;
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
    if (t->re)
        for (int i = 0; i < t->n_steps; i++) etok_re_free(a, &t->re[i]);
    ec_free(a, t->re);
    ec_free(a, t->comp);
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
    if (d->kind == ETOK_BPE && (d->pre < 0 || d->pre >= ETOK_N_PRE))
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

    etok *t = (etok *)ec_calloc(a, 1, sizeof *t);
    if (!t) return ec_errorf(err, errlen, EMBER_ERR_NOMEM, "tokenizer: out of memory");
    if (a) { t->alloc = *a; t->a = &t->alloc; }
    a = t->a;
    int rc = EMBER_ERR_NOMEM;
    char *scratch = NULL;
    uint64_t total = 0;     /* token text bytes */
    size_t maxlen = 0;
    t->kind = d->kind;
    t->pre = d->kind == ETOK_BPE ? d->pre : ETOK_PRE_DEFAULT;
    t->add_eos = d->add_eos != 0;
    t->n_vocab = n;
    t->bos = d->bos; t->eos = d->eos; t->eot = d->eot; t->unk = d->unk; t->pad = d->pad;
    t->add_bos = d->add_bos != 0;
    t->add_space_prefix = d->add_space_prefix != 0;
    if (d->kind == ETOK_BPE && (rc = etok_pre_build(t, d->general_split, err, errlen)) != EMBER_OK) goto fail;
    rc = EMBER_ERR_NOMEM;
    t->type = (uint8_t *)ec_malloc(a, (size_t)n);
    t->score = (float *)ec_malloc(a, (size_t)n * sizeof(float));
    t->doff = (uint32_t *)ec_malloc(a, ((size_t)n + 1) * sizeof(uint32_t));
    if (!t->type || !t->score || !t->doff) goto fail;

    /* types, scores, total text size */
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
    scratch = (char *)ec_malloc(a, 2 * maxlen + 16);
    if (!scratch) goto fail;

    /* decoded pieces (and keys) */
    /* SPM: decoded <= text + 1 for unknown (" \u2047 " is 5 bytes) */
    t->dbuf = (char *)ec_malloc(a, (size_t)total + (size_t)n * 5 + 1);
    if (!t->dbuf) goto fail;
    if (d->kind == ETOK_SPM) {
        t->kbuf = (char *)ec_malloc(a, (size_t)total + 1);
        t->koff = (uint32_t *)ec_malloc(a, ((size_t)n + 1) * sizeof(uint32_t));
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
    t->smap = (etok_slot *)ec_calloc(a, (size_t)t->smask + 1, sizeof(etok_slot));
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
        t->pkey = (uint64_t *)ec_malloc(a, ((size_t)t->pmask + 1) * sizeof(uint64_t));
        t->prank = (int32_t *)ec_malloc(a, ((size_t)t->pmask + 1) * sizeof(int32_t));
        t->pres = (int32_t *)ec_malloc(a, ((size_t)t->pmask + 1) * sizeof(int32_t));
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
                mbuf = (char *)ec_malloc(a, mcap);
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
            t->tkey = (uint64_t *)ec_malloc(a, ((size_t)t->tmask + 1) * sizeof(uint64_t));
            t->tchild = (int32_t *)ec_malloc(a, ((size_t)t->tmask + 1) * sizeof(int32_t));
            t->tterm = (int32_t *)ec_malloc(a, (size_t)nodes * sizeof(int32_t));
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

    /* SPM: where may the text be cut?  Before a U+2581 that follows a
     * character X when no mergeable piece holds X U+2581: then no merge
     * crosses the cut and the parts give the same result alone.  Pieces
     * with such a U+2581 inside (Gemma 3 has one, ">\u2581</") exclude the
     * cuts after the last byte of their X (a byte set: conservative). */
    if (d->kind == ETOK_SPM) {
        for (int32_t i = 0; i < n; i++) {
            if (!etok_is_mergeable(t->type[i])) continue;
            const char *p = t->kbuf + t->koff[i];
            size_t l = t->koff[i + 1] - t->koff[i];
            for (size_t j = 1; j + 3 <= l; j++)
                if (memcmp(p + j, "\xE2\x96\x81", 3) == 0 &&
                    !(j >= 3 && memcmp(p + j - 3, "\xE2\x96\x81", 3) == 0))
                    t->spm_nocut[(unsigned char)p[j - 1]] = 1;
        }
    }

    /* SPM: the pieces made of two ASCII / U+2581 characters, by table */
    if (d->kind == ETOK_SPM) {
        t->spm_pair = (int32_t *)ec_malloc(a, 129 * 129 * sizeof(int32_t));
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
        t->skey = (uint32_t *)ec_malloc(a, (size_t)n * sizeof(uint32_t));
        if (!t->skey) goto fail;
        for (int32_t i = 0; i < n; i++) {
            t->skey[i] = etok_is_mergeable(t->type[i]) ? etok_score_key(t->score[i]) : UINT32_MAX;
            if (t->type[i] == ETOK_T_UNUSED) t->has_unused = 1;
        }
    }

    /* end-of-generation tokens: llama.cpp's set (llama-vocab.cpp): eos, eot
     * and eom, the fim pad / repo / file separator tokens, and every token
     * whose text is one of the end markers below - whatever its type */
    {
        static const char *const eog_names[] = {
            "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
            "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
            "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
            "<\xEF\xBD\x9C\x65nd\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "[e~[",
            /* fim pad, repo and file separator (the first of each llama.cpp finds) */
            "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
            "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>"
        };
        int has_return = 0, has_call = 0, has_end = -1;
        if (t->eos >= 0) t->eog[t->n_eog++] = t->eos;
        if (t->eot >= 0 && t->eot != t->eos) t->eog[t->n_eog++] = t->eot;
        int32_t eom = d->eom_plus1 - 1;
        if (eom >= 0 && eom < n && eom != t->eos && eom != t->eot) t->eog[t->n_eog++] = eom;
        for (int32_t i = 0; i < n; i++) {
            const char *p = NULL; size_t l = 0;
            d->token_text(d->ud, i, &p, &l);
            if (l < 3 || l > 40 || (p[0] != '<' && p[0] != '[' && p[0] != '_')) continue;
            for (size_t k = 0; k < sizeof eog_names / sizeof eog_names[0]; k++) {
                if (strlen(eog_names[k]) != l || memcmp(eog_names[k], p, l) != 0) continue;
                int dup = 0;
                for (int e = 0; e < t->n_eog; e++) dup |= t->eog[e] == i;
                if (!dup && t->n_eog < ETOK_MAX_EOG) t->eog[t->n_eog++] = i;
                has_return |= k == 3;
                has_call |= k == 4;
                if (k == 2) has_end = i;
            }
        }
        /* gpt-oss (harmony): <|end|> ends a message, not the generation */
        if (has_return && has_call && has_end >= 0)
            for (int e = 0; e < t->n_eog; e++)
                if (t->eog[e] == has_end && has_end != t->eos) { t->eog[e] = t->eog[--t->n_eog]; break; }
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
    etok_rwork rx;                  /* regex pre-tokenizer */
    uint32_t *nd; size_t nd_cap;    /* NFC: code points */
    char *nfc; size_t nfc_cap;      /* NFC: the normalized text */
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
    /* cut before each U+2581 that follows a non-U+2581 character (and no
     * piece joins the two) */
    size_t seg = 0;
    for (size_t i = 1; i + 3 <= o; i++) {
        if ((unsigned char)nb[i] == 0xE2 && (unsigned char)nb[i + 1] == 0x96 && (unsigned char)nb[i + 2] == 0x81 &&
            !(i >= 3 && (unsigned char)nb[i - 3] == 0xE2 && (unsigned char)nb[i - 2] == 0x96 &&
              (unsigned char)nb[i - 1] == 0x81) && !t->spm_nocut[(unsigned char)nb[i - 1]]) {
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

/* Llama 3 (maxdig 3) and Qwen2 (maxdig 1: \p{N} instead of \p{N}{1,3}):
 *          (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t etok_re_llama3(const uint32_t *cp, const uint8_t *cl, size_t i, size_t n, size_t maxdig) {
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
        while (j < n && j < i + maxdig && cl[j] == UT_N) j++;
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

/* One piece [b0, b1) of text (chars [c0, c1) while the steps run on code
 * points) through split step `step` and the ones after it, then BPE. */
static void etok_pre_piece(const etok *t, etok_work *w, const char *text, int step,
                           size_t b0, size_t b1, size_t c0, size_t c1) {
    if (w->nomem || b0 == b1) return;
    if (step == t->n_steps) { etok_bpe_word(t, w, text + b0, b1 - b0); return; }
    etok_rwork *x = &w->rx;
    const int bytes = step >= t->byte_from;
    const size_t n = bytes ? b1 - b0 : c1 - c0;
    if (!bytes && t->step_fast[step]) {
        const uint32_t *cp = w->cp + c0;
        const uint8_t *cl = x->ucl + c0;
        for (size_t i = 0; i < n && !w->nomem;) {
            size_t j = t->step_fast[step] == 1 ? etok_re_gpt2(cp, cl, i, n)
                                                : etok_re_llama3(cp, cl, i, n, t->step_fast[step] == 2 ? 3 : 1);
            etok_pre_piece(t, w, text, step + 1, w->off[c0 + i], w->off[c0 + j], c0 + i, c0 + j);
            i = j;
        }
        return;
    }
    const uint32_t g = ++x->gen[step];
    size_t pos = 0, ms, me;
    for (;;) {
        etok_rsub *s = &x->rs;
        s->cp = bytes ? x->bcp + b0 : w->cp + c0;
        s->cb = bytes ? x->bcb + b0 : x->cb + c0;
        s->n = n;
        s->rt = x->rt[step];
        s->gen = g;
        if (pos >= n || !etok_re_find(&t->re[step], s, pos, &ms, &me)) break;
        if (bytes) {
            etok_pre_piece(t, w, text, step + 1, b0 + pos, b0 + ms, 0, 0);
            etok_pre_piece(t, w, text, step + 1, b0 + ms, b0 + me, 0, 0);
        } else {
            etok_pre_piece(t, w, text, step + 1, w->off[c0 + pos], w->off[c0 + ms], c0 + pos, c0 + ms);
            etok_pre_piece(t, w, text, step + 1, w->off[c0 + ms], w->off[c0 + me], c0 + ms, c0 + me);
        }
        pos = me;
    }
    if (x->rs.nomem) { w->nomem = 1; return; }
    if (pos < n) {
        if (bytes) etok_pre_piece(t, w, text, step + 1, b0 + pos, b1, 0, 0);
        else etok_pre_piece(t, w, text, step + 1, w->off[c0 + pos], b1, c0 + pos, c1);
    }
}

/* NFC of text[0..len) into w->nfc; returns the new length (or len and
 * *out = text when nothing changes). */
static size_t etok_nfc_text(const etok *t, etok_work *w, const char *text, size_t len, const char **out) {
    *out = text;
    if (!etok_nfc_needed(text, len)) return len;
    /* decomposition is at most 4 code points per input byte... bounded by 4 per code point */
    if (!etok_grow(w, (void **)&w->nd, &w->nd_cap, len * 4 + 8, sizeof(uint32_t))) return 0;
    uint32_t *d = w->nd;
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        int l = ec_utf8_decode(u + i, len - i, &c);
        if (l <= 0) { d[o++] = 0x80000000u | u[i]; i++; continue; }   /* an invalid byte: kept, blocks */
        i += (size_t)l;
        o = etok_decompose(c, d, o);
    }
    /* canonical ordering: stable sort of each run of non-starters by class */
    for (size_t i = 1; i < o; i++) {
        uint32_t c = d[i];
        int cc = c & 0x80000000u ? 0 : ut_ccc(c);
        if (!cc) continue;
        size_t j = i;
        while (j > 0) {
            int pc = d[j - 1] & 0x80000000u ? 0 : ut_ccc(d[j - 1]);
            if (pc <= cc) break;
            d[j] = d[j - 1];
            j--;
        }
        d[j] = c;
    }
    /* canonical composition */
    size_t m = 0;
    int64_t sp = -1;
    int last_cc = 0;
    for (size_t i = 0; i < o; i++) {
        uint32_t c = d[i];
        int cc = c & 0x80000000u ? 0 : ut_ccc(c);
        if (sp >= 0 && !(d[sp] & 0x80000000u) && !(c & 0x80000000u) &&
            ((size_t)sp == m - 1 || (last_cc != 0 && last_cc < cc))) {
            uint32_t k = etok_compose(t, d[sp], c);
            if (k) { d[sp] = k; continue; }
        }
        if (cc == 0) sp = (int64_t)m;
        d[m++] = c;
        last_cc = cc;
    }
    if (!etok_grow(w, (void **)&w->nfc, &w->nfc_cap, m * 4 + 1, 1)) return 0;
    char *b = w->nfc;
    size_t bl = 0;
    for (size_t i = 0; i < m; i++) {
        uint32_t c = d[i];
        if (c & 0x80000000u) { b[bl++] = (char)(c & 0xFF); continue; }
        if (c < 0x80) b[bl++] = (char)c;
        else if (c < 0x800) { b[bl++] = (char)(0xC0 | c >> 6); b[bl++] = (char)(0x80 | (c & 63)); }
        else if (c < 0x10000) {
            b[bl++] = (char)(0xE0 | c >> 12); b[bl++] = (char)(0x80 | (c >> 6 & 63)); b[bl++] = (char)(0x80 | (c & 63));
        } else {
            b[bl++] = (char)(0xF0 | c >> 18); b[bl++] = (char)(0x80 | (c >> 12 & 63));
            b[bl++] = (char)(0x80 | (c >> 6 & 63)); b[bl++] = (char)(0x80 | (c & 63));
        }
    }
    *out = b;
    return bl;
}

static void etok_bpe_text(const etok *t, etok_work *w, const char *text, size_t len) {
    if (len == 0) return;
    if (t->nfc) {
        len = etok_nfc_text(t, w, text, len, &text);
        if (w->nomem) return;
    }
    if (!etok_grow(w, (void **)&w->cp, &w->cp_cap, len + 1, sizeof(uint32_t))) return;
    if (!etok_grow(w, (void **)&w->cl, &w->cl_cap, len + 1, 1)) return;
    if (!etok_grow(w, (void **)&w->off, &w->off_cap, len + 1, sizeof(uint32_t))) return;
    uint8_t *cl = w->cl;
    uint32_t *off = w->off;
    uint32_t *cp = w->cp;
    size_t nc = 0;
    const unsigned char *u = (const unsigned char *)text;
    if (t->fast) {
        for (size_t i = 0; i < len;) {
            unsigned c0 = u[i];
            off[nc] = (uint32_t)i;
            if (c0 < 0x80) {
                cp[nc] = c0;
                cl[nc] = etok_ascii_class[c0];
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
        size_t maxdig = t->fast == 2 ? 3 : 1;
        for (size_t i = 0; i < nc && !w->nomem;) {
            size_t j = t->fast == 1 ? etok_re_gpt2(cp, cl, i, nc) : etok_re_llama3(cp, cl, i, nc, maxdig);
            etok_bpe_word(t, w, text + off[i], off[j] - off[i]);
            i = j;
        }
        return;
    }
    etok_rwork *x = &w->rx;
    if (t->byte_from > 0) {
        /* cl holds the category bytes of the code points here */
        for (size_t i = 0; i < len;) {
            uint32_t v;
            int l;
            if (u[i] < 0x80) { v = u[i]; l = 1; }
            else if ((l = ec_utf8_decode(u + i, len - i, &v)) <= 0) { v = 0xFFFFFFFFu; l = 1; }
            off[nc] = (uint32_t)i;
            cp[nc] = v;
            cl[nc] = (uint8_t)etok_cat_byte(v);
            nc++;
            i += (size_t)l;
        }
        off[nc] = (uint32_t)len;
        x->cb = cl;
        int any_fast = 0;
        for (int k = 0; k < t->byte_from; k++) any_fast |= t->step_fast[k];
        if (any_fast) {
            if (!etok_grow(w, (void **)&x->ucl, &x->ucl_cap, nc + 1, 1)) return;
            for (size_t i = 0; i < nc; i++) {
                unsigned b = cl[i], g = b & 31;
                x->ucl[i] = (uint8_t)(b & ETOK_RE_SPACE ? UT_S : g <= UT_GC_LO ? UT_L
                                      : g >= UT_GC_ND && g <= UT_GC_NO ? UT_N : UT_OTHER);
            }
        }
    }
    if (t->byte_from < t->n_steps) {
        if (!etok_grow(w, (void **)&x->bcp, &x->bcp_cap, len + 1, sizeof(uint32_t))) return;
        if (!etok_grow(w, (void **)&x->bcb, &x->bcb_cap, len + 1, 1)) return;
        for (size_t i = 0; i < len; i++) { x->bcp[i] = t->bytecp[u[i]]; x->bcb[i] = t->bytecb[u[i]]; }
    }
    for (int k = 0; k < t->n_steps; k++)
        if (!x->rt[k]) {
            x->rt[k] = (etok_rrun *)ec_calloc(w->a, (size_t)t->re[k].n_ins, sizeof(etok_rrun));
            if (!x->rt[k]) { w->nomem = 1; return; }
        }
    x->rs.a = w->a;
    etok_pre_piece(t, w, text, 0, 0, len, 0, nc);
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
    for (int k = 0; k < 6; k++) ec_free(t->a, w.rx.rt[k]);
    ec_free(t->a, w.rx.rs.st);
    ec_free(t->a, w.rx.bcp);
    ec_free(t->a, w.rx.bcb);
    ec_free(t->a, w.rx.ucl);
    ec_free(t->a, w.nd);
    ec_free(t->a, w.nfc);
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
int etok_add_eos(const etok *t) { return t ? t->add_eos : 0; }
int etok_kind(const etok *t) { return t ? t->kind : 0; }

int etok_is_eog(const etok *t, int32_t id) {
    if (!t || id < 0) return 0;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 1;
    return 0;
}
