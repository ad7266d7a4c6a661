/* fuzz_tokenizer.c - libFuzzer harness for the tokenizer (src/tokenizer.c).
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
 *       tests/fuzz/fuzz_tokenizer.c src/tokenizer.c src/common.c -lm
 *   mkdir -p corpus && ./a.out corpus tests/fuzz/corpus_tokenizer
 * Builds small synthetic vocabularies (no files needed): SentencePiece with
 * byte fallback (two variants: pieces with U+2581 inside, so no segment
 * cutting, and without), SentencePiece without byte tokens but with
 * unknown / control / user-defined / unused pieces, and byte-level BPE with
 * every pre-tokenizer of the table (GPT-2, Llama 3, Qwen2 with NFC, ...).  The first input byte picks the
 * tokenizer and flags; the rest is the text.  Checks: no crash, ids in
 * range, decode(encode(text)) == text where that must hold, and for SPM
 * (and BPE on single pre-tokens) the ids equal a naive O(n^2) reference. */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tokenizer.h"

typedef struct {
    int n;
    char *text[1024];
    size_t len[1024];
    float score[1024];
    int type[1024];
    int n_merges;
    char *merge[1024];
    size_t mlen[1024];
    int indexed;
    int slot[4096];     /* hash index (id + 1) once built */
} fz_vocab;

static unsigned fz_h(const char *s, size_t n) {
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 16777619u; }
    return h & 4095;
}

static void fz_text(void *ud, int32_t id, const char **p, size_t *n) {
    fz_vocab *v = ud; *p = v->text[id]; *n = v->len[id];
}
static float fz_score(void *ud, int32_t id) { return ((fz_vocab *)ud)->score[id]; }
static int fz_type(void *ud, int32_t id) { return ((fz_vocab *)ud)->type[id]; }
static void fz_merge(void *ud, int32_t i, const char **p, size_t *n) {
    fz_vocab *v = ud; *p = v->merge[i]; *n = v->mlen[i];
}

static int fz_find(const fz_vocab *v, const char *s, size_t n) {
    if (v->indexed) {
        for (unsigned h = fz_h(s, n);; h = (h + 1) & 4095) {
            int i = v->slot[h] - 1;
            if (i < 0) return -1;
            if (v->len[i] == n && memcmp(v->text[i], s, n) == 0) return i;
        }
    }
    for (int i = 0; i < v->n; i++)
        if (v->len[i] == n && memcmp(v->text[i], s, n) == 0) return i;
    return -1;
}

static int fz_add(fz_vocab *v, const char *s, size_t n, float score, int type) {
    int o = fz_find(v, s, n);
    if (o >= 0 || v->n >= 1024) return o;
    v->text[v->n] = malloc(n + 1);
    memcpy(v->text[v->n], s, n);
    v->text[v->n][n] = 0;
    v->len[v->n] = n;
    v->score[v->n] = score;
    v->type[v->n] = type;
    return v->n++;
}

static uint32_t fz_rng = 12345;
static uint32_t fz_rand(void) { fz_rng = fz_rng * 1103515245u + 12345u; return fz_rng >> 8; }

#define U2581 "\xE2\x96\x81"

/* SPM: kind 0 = byte fallback, pieces may hold U+2581 inside;
 *      kind 1 = byte fallback, U+2581 only as a prefix;
 *      kind 2 = no byte tokens, unk/control/user-defined/unused pieces */
static void fz_build_spm(fz_vocab *v, int kind) {
    memset(v, 0, sizeof *v);
    fz_add(v, "<unk>", 5, 0, ETOK_T_UNKNOWN);
    fz_add(v, "<s>", 3, 0, ETOK_T_CONTROL);
    fz_add(v, "</s>", 4, 0, ETOK_T_CONTROL);
    if (kind != 2)
        for (int b = 0; b < 256; b++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", b);
            fz_add(v, s, 6, 0, ETOK_T_BYTE);
        }
    else {
        fz_add(v, "<ud>", 4, 0, ETOK_T_USER_DEFINED);
        fz_add(v, "ab", 2, -0.5f, ETOK_T_UNUSED);
        fz_add(v, "ca", 2, -0.25f, ETOK_T_UNUSED);
    }
    static const char *const chars[] = { U2581, "a", "b", "c", "d", "\xC3\xA9", "\xE4\xB8\xAD", "<", ">" };
    for (size_t i = 0; i < sizeof chars / sizeof chars[0]; i++)
        fz_add(v, chars[i], strlen(chars[i]), -100.0f - (float)i, ETOK_T_NORMAL);
    fz_rng = 777u + (uint32_t)kind;
    const char *alpha[5] = { U2581, "a", "b", "c", "\xC3\xA9" };
    for (int k = 0; k < 400; k++) {
        char s[64];
        size_t n = 0;
        int len = 2 + (int)(fz_rand() % 4);
        int ok = 1;
        for (int j = 0; j < len; j++) {
            int c = (int)(fz_rand() % 5);
            if (kind == 1 && c == 0 && j > 0 && !(n >= 3 && !memcmp(s + n - 3, U2581, 3))) { ok = 0; break; }
            size_t cl = strlen(alpha[c]);
            memcpy(s + n, alpha[c], cl);
            n += cl;
        }
        if (!ok) continue;
        /* few distinct scores: exercises the leftmost-on-ties rule */
        fz_add(v, s, n, -(float)(fz_rand() % 16), ETOK_T_NORMAL);
    }
}

/* byte-level BPE: 256 byte tokens in the GPT-2 alphabet, random merges */
static size_t fz_b2u(unsigned b, char *o) {
    unsigned cp = b;
    if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
        unsigned k = 0;
        for (unsigned x = 0; x < b; x++)
            if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) k++;
        cp = 0x100 + k;
    }
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 63));
    return 2;
}

static unsigned char fz_bytes[1024][64];
static size_t fz_blen[1024];
static int fz_rank[1024][1024];

static void fz_build_bpe(fz_vocab *v) {
    memset(v, 0, sizeof *v);
    for (unsigned b = 0; b < 256; b++) {
        char s[4];
        size_t n = fz_b2u(b, s);
        int id = fz_add(v, s, n, 0, ETOK_T_NORMAL);
        fz_bytes[id][0] = (unsigned char)b;
        fz_blen[id] = 1;
    }
    for (int i = 0; i < 1024; i++)
        for (int j = 0; j < 1024; j++) fz_rank[i][j] = -1;
    fz_rng = 4242u;
    static const unsigned char pref[] = { 'a', 'b', 'c', ' ', '\n', '1', '\'', 's', 0xC3, 0xA9 };
    while (v->n_merges < 500 && v->n < 1000) {
        int a, b;
        if (fz_rand() % 3 == 0) { a = fz_find(v, "a", 1); } else a = (int)(fz_rand() % (unsigned)v->n);
        b = (int)(fz_rand() % (unsigned)v->n);
        if (fz_rand() % 2) {
            char s[4];
            size_t n = fz_b2u(pref[fz_rand() % sizeof pref], s);
            a = fz_find(v, s, n);
        }
        if (a < 0 || fz_rank[a][b] >= 0 || fz_blen[a] + fz_blen[b] > 24) continue;
        if (a >= 256 && b >= 256 && fz_rand() % 2) continue;
        char s[256];
        size_t n = v->len[a] + v->len[b];
        memcpy(s, v->text[a], v->len[a]);
        memcpy(s + v->len[a], v->text[b], v->len[b]);
        int r = fz_find(v, s, n);
        if (r < 0) {
            r = fz_add(v, s, n, 0, ETOK_T_NORMAL);
            memcpy(fz_bytes[r], fz_bytes[a], fz_blen[a]);
            memcpy(fz_bytes[r] + fz_blen[a], fz_bytes[b], fz_blen[b]);
            fz_blen[r] = fz_blen[a] + fz_blen[b];
        }
        fz_rank[a][b] = v->n_merges;
        char m[256];
        memcpy(m, v->text[a], v->len[a]);
        m[v->len[a]] = ' ';
        memcpy(m + v->len[a] + 1, v->text[b], v->len[b]);
        v->merge[v->n_merges] = malloc(n + 2);
        memcpy(v->merge[v->n_merges], m, n + 1);
        v->mlen[v->n_merges++] = n + 1;
    }
    fz_add(v, "<|endoftext|>", 13, 0, ETOK_T_CONTROL);
}

static fz_vocab fz_v[5];
static etok *fz_t[5];
static etok *fz_x[7];   /* the byte-level vocabulary with the other pre-tokenizers (qwen2 .. gpt-4o) */

static void fz_index(fz_vocab *v) {
    memset(v->slot, 0, sizeof v->slot);
    for (int i = 0; i < v->n; i++) {
        unsigned h = fz_h(v->text[i], v->len[i]);
        while (v->slot[h]) h = (h + 1) & 4095;
        v->slot[h] = i + 1;
    }
    v->indexed = 1;
}

static etok *fz_make(fz_vocab *v, int kind, int pre) {
    fz_index(v);
    etok_desc d;
    memset(&d, 0, sizeof d);
    d.kind = kind; d.pre = pre; d.n_vocab = v->n; d.n_merges = v->n_merges; d.ud = v;
    d.token_text = fz_text; d.token_score = fz_score; d.token_type = fz_type; d.merge_text = fz_merge;
    d.bos = kind == ETOK_SPM ? 1 : -1; d.eos = kind == ETOK_SPM ? 2 : v->n - 1; d.eot = -1;
    d.unk = kind == ETOK_SPM ? 0 : -1; d.pad = -1;
    d.add_bos = 1; d.add_space_prefix = 1;
    etok *t = NULL;
    char err[256];
    if (etok_create(&d, NULL, &t, err, sizeof err) != EMBER_OK) {
        fprintf(stderr, "etok_create: %s\n", err);
        abort();
    }
    return t;
}

static void fz_init(void) {
    if (fz_t[0]) return;
    for (int k = 0; k < 3; k++) { fz_build_spm(&fz_v[k], k); fz_t[k] = fz_make(&fz_v[k], ETOK_SPM, 0); }
    fz_build_bpe(&fz_v[3]);
    fz_t[3] = fz_make(&fz_v[3], ETOK_BPE, ETOK_PRE_GPT2);
    fz_v[4] = fz_v[3];   /* shares the strings; never freed */
    fz_t[4] = fz_make(&fz_v[4], ETOK_BPE, ETOK_PRE_LLAMA3);
    for (int k = 0; k < 7; k++) fz_x[k] = fz_make(&fz_v[3], ETOK_BPE, ETOK_PRE_QWEN2 + k);
}

/* naive SentencePiece BPE (byte fallback vocabularies, no specials) */
static int fz_spm_ref(const fz_vocab *v, const char *text, size_t len, int32_t *out, int cap) {
    char *buf = malloc(len * 3 + 4);
    size_t n = 0;
    memcpy(buf, U2581, 3); n = 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') { memcpy(buf + n, U2581, 3); n += 3; }
        else buf[n++] = text[i];
    }
    size_t *st = malloc(n * sizeof(size_t)), *ln = malloc(n * sizeof(size_t));
    int ns = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = (unsigned char)buf[i];
        size_t l = 1;
        uint32_t cp;
        int r = ec_utf8_decode((const unsigned char *)buf + i, n - i, &cp);
        if (r > 0) l = (size_t)r;
        (void)c;
        st[ns] = i; ln[ns] = l; ns++;
        i += l;
    }
    for (;;) {
        int best = -1;
        float bs = 0;
        for (int i = 0; i + 1 < ns; i++) {
            int id = fz_find(v, buf + st[i], ln[i] + ln[i + 1]);
            if (id < 0 || v->type[id] != ETOK_T_NORMAL) continue;
            if (best < 0 || v->score[id] > bs) { best = i; bs = v->score[id]; }
        }
        if (best < 0) break;
        ln[best] += ln[best + 1];
        memmove(st + best + 1, st + best + 2, (size_t)(ns - best - 2) * sizeof(size_t));
        memmove(ln + best + 1, ln + best + 2, (size_t)(ns - best - 2) * sizeof(size_t));
        ns--;
    }
    int k = 0;
    for (int i = 0; i < ns; i++) {
        int id = fz_find(v, buf + st[i], ln[i]);
        if (id >= 0) { if (k < cap) out[k] = id; k++; continue; }
        for (size_t j = 0; j < ln[i]; j++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", (unsigned char)buf[st[i] + j]);
            if (k < cap) out[k] = fz_find(v, s, 6);
            k++;
        }
    }
    free(buf); free(st); free(ln);
    return k;
}

/* naive byte-level BPE of one pre-token */
static int fz_bpe_ref(const fz_vocab *v, const unsigned char *p, size_t n, int32_t *out, int cap) {
    for (int i = 0; i < 1000 && i < v->n; i++)
        if (fz_blen[i] == n && memcmp(fz_bytes[i], p, n) == 0 && v->type[i] == ETOK_T_NORMAL) {
            if (cap > 0) out[0] = i;
            return 1;
        }
    int *ids = malloc(n * sizeof(int));
    int m = (int)n;
    for (size_t i = 0; i < n; i++) {
        char s[4];
        size_t l = fz_b2u(p[i], s);
        ids[i] = fz_find(v, s, l);
    }
    for (;;) {
        int best = -1, br = 0;
        for (int i = 0; i + 1 < m; i++) {
            int r = fz_rank[ids[i]][ids[i + 1]];
            if (r >= 0 && (best < 0 || r < br)) { best = i; br = r; }
        }
        if (best < 0) break;
        char s[256];
        memcpy(s, v->text[ids[best]], v->len[ids[best]]);
        memcpy(s + v->len[ids[best]], v->text[ids[best + 1]], v->len[ids[best + 1]]);
        ids[best] = fz_find(v, s, v->len[ids[best]] + v->len[ids[best + 1]]);
        memmove(ids + best + 1, ids + best + 2, (size_t)(m - best - 2) * sizeof(int));
        m--;
    }
    for (int i = 0; i < m && i < cap; i++) out[i] = ids[i];
    free(ids);
    return m;
}

static int fz_has(const uint8_t *d, size_t n, const char *pat) {
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= n; i++)
        if (!memcmp(d + i, pat, pl)) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_init();
    if (size < 1) return 0;
    int xsel = data[0] % 12, flags = (data[0] / 12) % 4;
    int sel = xsel < 5 ? xsel : 3;     /* the vocabulary (fz_v) the tokenizer was built from */
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const etok *t = xsel < 5 ? fz_t[xsel] : fz_x[xsel - 5];
    int32_t cap = (int32_t)len * 2 + 4, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof(int32_t));
    int rc = etok_encode(t, text, len, flags, ids, cap, &n);
    if (rc != EMBER_OK) __builtin_trap();
    for (int32_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= etok_n_vocab(t)) __builtin_trap();
    /* a too small buffer reports the same count */
    if (n > 0) {
        int32_t n2 = 0;
        if (etok_encode(t, text, len, flags, ids, n - 1, &n2) != EMBER_ERR_BUFFER_TOO_SMALL || n2 != n)
            __builtin_trap();
        etok_encode(t, text, len, flags, ids, cap, &n);
    }
    /* decode */
    size_t dcap = len + 64 + (size_t)n * 8, dn = 0;
    char *dec = malloc(dcap);
    for (int32_t i = 0; i < n; i++) {
        int l = etok_piece(t, ids[i], i ? ids[i - 1] : -1, flags & ETOK_PARSE_SPECIAL, dec + dn, dcap - dn);
        if (l < 0 || (size_t)l > dcap - dn) __builtin_trap();
        dn += (size_t)l;
    }
    int plain = flags == 0;
    if (plain && sel >= 3 && xsel != 5) {   /* fz_x[0] (qwen2) normalizes to NFC */
        if (dn != len || memcmp(dec, text, len) != 0) __builtin_trap();
    }
    if (plain && sel <= 1 && !fz_has(data + 1, len, U2581)) {
        if (dn != len || memcmp(dec, text, len) != 0) __builtin_trap();
        if (len <= 256) {
            int32_t *ref = malloc((size_t)cap * sizeof(int32_t));
            int rn = len ? fz_spm_ref(&fz_v[sel], text, len, ref, cap) : 0;
            if (rn != n || memcmp(ref, ids, (size_t)n * sizeof(int32_t)) != 0) __builtin_trap();
            free(ref);
        }
    }
    /* BPE differential on a single pre-token: letters a-c only */
    if (plain && sel >= 3 && len > 0 && len <= 2048) {
        int only = 1;
        for (size_t i = 0; i < len; i++) only &= text[i] >= 'a' && text[i] <= 'c';
        if (only) {
            int32_t *ref = malloc((size_t)cap * sizeof(int32_t));
            int rn = fz_bpe_ref(&fz_v[sel], (const unsigned char *)text, len, ref, cap);
            if (rn != n || memcmp(ref, ids, (size_t)n * sizeof(int32_t)) != 0) __builtin_trap();
            free(ref);
        }
    }
    free(dec);
    free(ids);
    return 0;
}
