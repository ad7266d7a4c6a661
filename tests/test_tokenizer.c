/* test_tokenizer.c - the tokenizer against the reference fixtures in
 * ../shared/tokenizers (llama2 SentencePiece, gpt2 and llama3 byte-level
 * BPE), hard cases, a seeded fuzz pass and a speed measurement.
 * The vocabularies are read here from the upstream files (no GGUF). */
#include "test.h"
#include "tokenizer.h"

#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------ utilities */

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int sanitize_mode(void) {
    const char *s = getenv("EMBER_SANITIZE");
    return s && s[0] == '1';
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap + 1);
    for (;;) {
        if (n == cap) { cap *= 2; b = realloc(b, cap + 1); }
        size_t r = fread(b + n, 1, cap - n, f);
        if (r == 0) break;
        n += r;
    }
    fclose(f);
    b[n] = 0;
    *len = n;
    return b;
}

typedef struct { char *p; size_t n, cap; } sbuf;
static void sb_put(sbuf *s, const void *p, size_t n) {
    if (s->n + n + 1 > s->cap) {
        s->cap = (s->n + n + 1) * 2;
        s->p = realloc(s->p, s->cap);
    }
    memcpy(s->p + s->n, p, n);
    s->n += n;
    s->p[s->n] = 0;
}
static void sb_utf8(sbuf *s, uint32_t cp) {
    unsigned char b[4];
    int n;
    if (cp < 0x80) { b[0] = (unsigned char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = 0xC0 | (cp >> 6); b[1] = 0x80 | (cp & 63); n = 2; }
    else if (cp < 0x10000) { b[0] = 0xE0 | (cp >> 12); b[1] = 0x80 | ((cp >> 6) & 63); b[2] = 0x80 | (cp & 63); n = 3; }
    else { b[0] = 0xF0 | (cp >> 18); b[1] = 0x80 | ((cp >> 12) & 63); b[2] = 0x80 | ((cp >> 6) & 63); b[3] = 0x80 | (cp & 63); n = 4; }
    sb_put(s, b, (size_t)n);
}

/* ----------------------------------------------------------- vocabulary */

typedef struct {
    int kind, pre;
    int32_t n;
    char **text; size_t *len;
    float *score;
    int *type;
    int32_t n_merges;
    char **merge; size_t *mlen;
    int32_t bos, eos, eot, unk;
    int add_space_prefix;
} tvocab;

static void tv_text(void *ud, int32_t id, const char **p, size_t *n) {
    tvocab *v = ud; *p = v->text[id]; *n = v->len[id];
}
static float tv_score(void *ud, int32_t id) { tvocab *v = ud; return v->score ? v->score[id] : 0.0f; }
static int tv_type(void *ud, int32_t id) { tvocab *v = ud; return v->type[id]; }
static void tv_merge(void *ud, int32_t i, const char **p, size_t *n) {
    tvocab *v = ud; *p = v->merge[i]; *n = v->mlen[i];
}

static void tv_alloc(tvocab *v, int32_t n) {
    v->n = n;
    v->text = calloc((size_t)n, sizeof(char *));
    v->len = calloc((size_t)n, sizeof(size_t));
    v->type = calloc((size_t)n, sizeof(int));
    v->bos = v->eos = v->eot = v->unk = -1;
    v->add_space_prefix = 1;
}

static void tv_free(tvocab *v) {
    for (int32_t i = 0; i < v->n; i++) free(v->text[i]);
    for (int32_t i = 0; i < v->n_merges; i++) free(v->merge[i]);
    free(v->text); free(v->len); free(v->type); free(v->score); free(v->merge); free(v->mlen);
    memset(v, 0, sizeof *v);
}

static int g_general;   /* build with the general regex splitter only */

static etok *tv_build(tvocab *v) {
    etok_desc d;
    memset(&d, 0, sizeof d);
    d.general_split = g_general;
    d.kind = v->kind; d.pre = v->pre; d.n_vocab = v->n; d.n_merges = v->n_merges; d.ud = v;
    d.token_text = tv_text; d.token_score = tv_score; d.token_type = tv_type; d.merge_text = tv_merge;
    d.bos = v->bos; d.eos = v->eos; d.eot = v->eot; d.unk = v->unk; d.pad = -1;
    d.add_bos = 1; d.add_space_prefix = v->add_space_prefix;
    etok *t = NULL;
    char err[256] = "";
    int rc = etok_create(&d, NULL, &t, err, sizeof err);
    CHECK(rc == EMBER_OK && t, "etok_create: %d %s", rc, err);
    return t;
}

/* protobuf varint */
static uint64_t pb_varint(const unsigned char **p, const unsigned char *e) {
    uint64_t v = 0; int s = 0;
    while (*p < e) { unsigned b = *(*p)++; v |= (uint64_t)(b & 127) << s; s += 7; if (!(b & 128)) break; }
    return v;
}

static int load_llama2(const char *dir, tvocab *v) {
    char path[1024]; size_t n;
    snprintf(path, sizeof path, "%s/tokenizers/llama2/tokenizer.model", dir);
    unsigned char *b = (unsigned char *)read_file(path, &n);
    if (!b) return -1;
    memset(v, 0, sizeof *v);
    tv_alloc(v, 32000);
    v->score = calloc(32000, sizeof(float));
    v->kind = ETOK_SPM;
    int32_t cnt = 0;
    const unsigned char *p = b, *e = b + n;
    while (p < e) {
        uint64_t key = pb_varint(&p, e);
        int f = (int)(key >> 3), wt = (int)(key & 7);
        if (wt == 0) { pb_varint(&p, e); continue; }
        if (wt == 1) { p += 8; continue; }
        if (wt == 5) { p += 4; continue; }
        uint64_t l = pb_varint(&p, e);
        const unsigned char *q = p, *qe = p + l;
        p += l;
        if (f != 1 || cnt >= 32000) continue;
        int type = 1; float score = 0; const unsigned char *ps = NULL; size_t pl = 0;
        while (q < qe) {
            uint64_t k2 = pb_varint(&q, qe);
            int f2 = (int)(k2 >> 3), w2 = (int)(k2 & 7);
            if (w2 == 0) { uint64_t x = pb_varint(&q, qe); if (f2 == 3) type = (int)x; }
            else if (w2 == 5) { if (f2 == 2) memcpy(&score, q, 4); q += 4; }
            else if (w2 == 1) q += 8;
            else { uint64_t l2 = pb_varint(&q, qe); if (f2 == 1) { ps = q; pl = l2; } q += l2; }
        }
        v->text[cnt] = malloc(pl + 1);
        memcpy(v->text[cnt], ps, pl);
        v->text[cnt][pl] = 0;
        v->len[cnt] = pl;
        v->score[cnt] = score;
        v->type[cnt] = type;
        cnt++;
    }
    free(b);
    CHECK(cnt == 32000, "llama2 pieces: %d", cnt);
    v->unk = 0; v->bos = 1; v->eos = 2;
    return 0;
}

/* GPT-2 byte -> unicode alphabet */
static uint32_t b2u(unsigned b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) k++;
    return 0x100 + k;
}
static uint32_t b2u_tab[256];
static void alpha_str(sbuf *s, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) sb_utf8(s, b2u_tab[p[i]]);
}

/* JSON string at *p (after the opening quote) -> s; *p after closing quote */
static int json_string(const char **pp, sbuf *s) {
    const char *p = *pp;
    s->n = 0;
    sb_put(s, "", 0);
    while (*p && *p != '"') {
        if (*p != '\\') { sb_put(s, p, 1); p++; continue; }
        p++;
        char c = *p++;
        switch (c) {
        case '"': sb_put(s, "\"", 1); break;
        case '\\': sb_put(s, "\\", 1); break;
        case '/': sb_put(s, "/", 1); break;
        case 'n': sb_put(s, "\n", 1); break;
        case 'r': sb_put(s, "\r", 1); break;
        case 't': sb_put(s, "\t", 1); break;
        case 'b': sb_put(s, "\b", 1); break;
        case 'f': sb_put(s, "\f", 1); break;
        case 'u': {
            uint32_t cp = (uint32_t)strtoul((char[5]){p[0], p[1], p[2], p[3], 0}, NULL, 16);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
                uint32_t lo = (uint32_t)strtoul((char[5]){p[2], p[3], p[4], p[5], 0}, NULL, 16);
                if (lo >= 0xDC00 && lo < 0xE000) { cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00); p += 6; }
            }
            sb_utf8(s, cp);
            break;
        }
        default: return -1;
        }
    }
    if (*p != '"') return -1;
    *pp = p + 1;
    return 0;
}

typedef struct { char *key; size_t klen; int32_t val; } kv;

/* test-side byte-string -> int map */
typedef struct { char **k; size_t *kl; int32_t *v; size_t mask; } smap_t;
static uint64_t fnv(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)p[i]; h *= 1099511628211ull; }
    return h;
}
static void sm_init(smap_t *m, size_t n) {
    size_t c = 16; while (c < 2 * n) c <<= 1;
    m->mask = c - 1;
    m->k = calloc(c, sizeof(char *)); m->kl = calloc(c, sizeof(size_t)); m->v = calloc(c, sizeof(int32_t));
}
static void sm_put(smap_t *m, char *k, size_t kl, int32_t v) {
    size_t i = fnv(k, kl) & m->mask;
    while (m->k[i]) { if (m->kl[i] == kl && !memcmp(m->k[i], k, kl)) return; i = (i + 1) & m->mask; }
    m->k[i] = k; m->kl[i] = kl; m->v[i] = v;
}
static int32_t sm_get(const smap_t *m, const char *k, size_t kl) {
    size_t i = fnv(k, kl) & m->mask;
    while (m->k[i]) { if (m->kl[i] == kl && !memcmp(m->k[i], k, kl)) return m->v[i]; i = (i + 1) & m->mask; }
    return -1;
}
static void sm_free(smap_t *m) { free(m->k); free(m->kl); free(m->v); }

static int load_gpt2(const char *dir, tvocab *v) {
    char path[1024]; size_t n;
    snprintf(path, sizeof path, "%s/tokenizers/gpt2/encoder.json", dir);
    char *js = read_file(path, &n);
    if (!js) return -1;
    memset(v, 0, sizeof *v);
    tv_alloc(v, 50257);
    v->kind = ETOK_BPE; v->pre = ETOK_PRE_GPT2;
    const char *p = js;
    sbuf s = {0};
    int cnt = 0;
    while (*p && *p != '{') p++;
    p++;
    for (;;) {
        while (*p == ' ' || *p == '\n' || *p == ',' || *p == '\r' || *p == '\t') p++;
        if (*p != '"') break;
        p++;
        if (json_string(&p, &s)) break;
        while (*p == ' ' || *p == ':') p++;
        long id = strtol(p, (char **)&p, 10);
        if (id >= 0 && id < 50257 && !v->text[id]) {
            v->text[id] = malloc(s.n + 1);
            memcpy(v->text[id], s.p, s.n + 1);
            v->len[id] = s.n;
            v->type[id] = ETOK_T_NORMAL;
            cnt++;
        }
    }
    free(js);
    CHECK(cnt == 50257, "gpt2 encoder entries: %d", cnt);
    v->type[50256] = ETOK_T_CONTROL;
    v->bos = v->eos = 50256;
    snprintf(path, sizeof path, "%s/tokenizers/gpt2/vocab.bpe", dir);
    char *bpe = read_file(path, &n);
    if (!bpe) { free(s.p); return -1; }
    v->merge = calloc(50000, sizeof(char *));
    v->mlen = calloc(50000, sizeof(size_t));
    char *q = strchr(bpe, '\n') + 1;
    while (*q && v->n_merges < 50000) {
        char *e = strchr(q, '\n');
        if (!e) e = q + strlen(q);
        if (e > q) {
            v->merge[v->n_merges] = malloc((size_t)(e - q) + 1);
            memcpy(v->merge[v->n_merges], q, (size_t)(e - q));
            v->merge[v->n_merges][e - q] = 0;
            v->mlen[v->n_merges++] = (size_t)(e - q);
        }
        q = *e ? e + 1 : e;
    }
    CHECK(v->n_merges == 50000, "gpt2 merges: %d", v->n_merges);
    free(bpe);
    free(s.p);
    return 0;
}

static int b64v(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static const char *llama3_special_name(int id, char *buf, size_t size) {
    static const char *const names[12] = {
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>" };
    if (id - 128000 < 12) return names[id - 128000];
    snprintf(buf, size, "<|reserved_special_token_%d|>", id - 128012 + 2);
    return buf;
}

static int load_llama3(const char *dir, tvocab *v) {
    char path[1024]; size_t n;
    snprintf(path, sizeof path, "%s/tokenizers/llama3/tokenizer.model", dir);
    char *f = read_file(path, &n);
    if (!f) return -1;
    memset(v, 0, sizeof *v);
    tv_alloc(v, 128256);
    v->kind = ETOK_BPE; v->pre = ETOK_PRE_LLAMA3;
    char **raw = calloc(128000, sizeof(char *));
    size_t *rawl = calloc(128000, sizeof(size_t));
    char *p = f;
    int cnt = 0;
    while (*p) {
        char *sp = strchr(p, ' ');
        if (!sp) break;
        char *nl = strchr(sp, '\n');
        long rank = strtol(sp + 1, NULL, 10);
        unsigned char tmp[512]; size_t tl = 0;
        uint32_t acc = 0; int bits = 0;
        for (char *c = p; c < sp; c++) {
            int x = b64v(*c);
            if (x < 0) continue;
            acc = (acc << 6) | (uint32_t)x; bits += 6;
            if (bits >= 8) { bits -= 8; tmp[tl++] = (unsigned char)(acc >> bits); }
        }
        if (rank >= 0 && rank < 128000) {
            raw[rank] = malloc(tl + 1); memcpy(raw[rank], tmp, tl); rawl[rank] = tl;
            cnt++;
        }
        if (!nl) break;
        p = nl + 1;
    }
    free(f);
    CHECK(cnt == 128000, "llama3 ranks: %d", cnt);
    sbuf s = {0};
    for (int i = 0; i < 128000; i++) {
        s.n = 0;
        alpha_str(&s, (unsigned char *)raw[i], rawl[i]);
        v->text[i] = malloc(s.n + 1); memcpy(v->text[i], s.p, s.n + 1); v->len[i] = s.n;
        v->type[i] = ETOK_T_NORMAL;
    }
    for (int i = 128000; i < 128256; i++) {
        char nb[64];
        const char *nm = llama3_special_name(i, nb, sizeof nb);
        v->text[i] = strdup(nm); v->len[i] = strlen(nm); v->type[i] = ETOK_T_CONTROL;
    }
    v->bos = 128000; v->eos = 128001; v->eot = 128009;
    /* merges: every split (a, b) of each token with a and b tokens, by rank
     * of a+b, then (rank a, rank b) - the list HF's converter writes */
    smap_t m;
    sm_init(&m, 128000);
    for (int i = 0; i < 128000; i++) sm_put(&m, raw[i], rawl[i], i);
    size_t mcap = 400000;
    v->merge = malloc(mcap * sizeof(char *));
    v->mlen = malloc(mcap * sizeof(size_t));
    for (int r = 0; r < 128000; r++) {
        size_t L = rawl[r];
        int32_t la[256][2]; int nl = 0;
        for (size_t k = 1; k < L && nl < 256; k++) {
            int32_t ra = sm_get(&m, raw[r], k), rb = sm_get(&m, raw[r] + k, L - k);
            if (ra >= 0 && rb >= 0) { la[nl][0] = ra; la[nl][1] = rb; nl++; }
        }
        /* sort by (ra, rb) */
        for (int x = 1; x < nl; x++)
            for (int y = x; y > 0 && (la[y][0] < la[y - 1][0] || (la[y][0] == la[y - 1][0] && la[y][1] < la[y - 1][1])); y--) {
                int32_t t0 = la[y][0], t1 = la[y][1];
                la[y][0] = la[y - 1][0]; la[y][1] = la[y - 1][1]; la[y - 1][0] = t0; la[y - 1][1] = t1;
            }
        for (int x = 0; x < nl; x++) {
            if ((size_t)v->n_merges == mcap) {
                mcap *= 2;
                v->merge = realloc(v->merge, mcap * sizeof(char *));
                v->mlen = realloc(v->mlen, mcap * sizeof(size_t));
            }
            s.n = 0;
            sb_put(&s, v->text[la[x][0]], v->len[la[x][0]]);
            sb_put(&s, " ", 1);
            sb_put(&s, v->text[la[x][1]], v->len[la[x][1]]);
            v->merge[v->n_merges] = malloc(s.n + 1); memcpy(v->merge[v->n_merges], s.p, s.n + 1);
            v->mlen[v->n_merges++] = s.n;
        }
    }
    sm_free(&m);
    for (int i = 0; i < 128000; i++) free(raw[i]);
    free(raw); free(rawl); free(s.p);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

static int32_t *encode(const etok *t, const char *s, size_t n, int flags, int32_t *count) {
    int32_t cap = (int32_t)(n + 8), got = 0;
    int32_t *ids = malloc((size_t)cap * sizeof(int32_t));
    int rc = etok_encode(t, s, n, flags, ids, cap, &got);
    if (rc == EMBER_ERR_BUFFER_TOO_SMALL) {
        ids = realloc(ids, (size_t)got * sizeof(int32_t));
        cap = got;
        rc = etok_encode(t, s, n, flags, ids, cap, &got);
    }
    CHECK(rc == EMBER_OK, "etok_encode rc %d", rc);
    *count = rc == EMBER_OK ? got : 0;
    return ids;
}

static void decode(const etok *t, const int32_t *ids, int32_t n, int flags, sbuf *out) {
    out->n = 0;
    sb_put(out, "", 0);
    char buf[256];
    for (int32_t i = 0; i < n; i++) {
        int l = etok_piece(t, ids[i], i ? ids[i - 1] : -1, flags, buf, sizeof buf);
        if (l < 0) { CHECK(l >= 0, "etok_piece(%d) = %d", ids[i], l); return; }
        if ((size_t)l > sizeof buf) {
            char *big = malloc((size_t)l);
            etok_piece(t, ids[i], i ? ids[i - 1] : -1, flags, big, (size_t)l);
            sb_put(out, big, (size_t)l);
            free(big);
        } else sb_put(out, buf, (size_t)l);
    }
}

static void print_ids(const char *what, const int32_t *ids, int32_t n) {
    fprintf(stderr, "    %s (%d):", what, n);
    for (int32_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    if (n > 40) fprintf(stderr, " ...");
    fputc('\n', stderr);
}

static void print_text(const char *s, size_t n) {
    fputs("    text: \"", stderr);
    for (size_t i = 0; i < n && i < 160; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\' || c == 0x7F) fprintf(stderr, "\\x%02x", c);
        else fputc(c, stderr);
    }
    fputs(n > 160 ? "\"...\n" : "\"\n", stderr);
}

/* ------------------------------------------------------------- fixtures */

typedef struct { int n, exact, roundtrip; } fixres;

/* reads every line of a fixtures file; texts are appended to prose
 * (if non-NULL) for the speed test */
static fixres run_fixtures(const etok *t, const char *path, int flags, const char *name, sbuf *prose) {
    fixres r = {0, 0, 0};
    size_t n;
    char *f = read_file(path, &n);
    CHECK(f != NULL, "cannot read %s", path);
    if (!f) return r;
    sbuf text = {0}, dec = {0};
    int32_t *want = malloc(sizeof(int32_t) * 8192);
    int shown = 0;
    char *line = f;
    while (*line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        const char *p = strstr(line, "\"text\": \"");
        if (!p) { if (!nl) break; line = nl + 1; continue; }
        p += 9;
        if (json_string(&p, &text)) { CHECK(0, "%s: bad JSON line %d", name, r.n + 1); break; }
        const char *q = strstr(p, "\"ids\": [");
        int32_t nw = 0;
        if (q) {
            q += 8;
            while (*q && *q != ']') {
                while (*q == ' ' || *q == ',') q++;
                if (*q == ']') break;
                want[nw++] = (int32_t)strtol(q, (char **)&q, 10);
            }
        }
        r.n++;
        int32_t ng;
        int32_t *got = encode(t, text.p, text.n, flags, &ng);
        int ok = ng == nw && memcmp(got, want, (size_t)nw * sizeof(int32_t)) == 0;
        if (ok) r.exact++;
        else if (shown++ < 5) {
            fprintf(stderr, "MISMATCH %s line %d\n", name, r.n);
            print_text(text.p, text.n);
            print_ids("want", want, nw);
            print_ids("got ", got, ng);
        }
        decode(t, want, nw, flags, &dec);
        if (dec.n == text.n && memcmp(dec.p, text.p, text.n) == 0) r.roundtrip++;
        else if (shown++ < 5) {
            fprintf(stderr, "ROUNDTRIP %s line %d\n", name, r.n);
            print_text(text.p, text.n);
            print_text(dec.p, dec.n);
        }
        if (prose) {
            /* mostly-ASCII lines count as English prose */
            size_t ascii = 0, alpha = 0, run = 1, maxrun = 0, word = 0, maxword = 0;
            for (size_t i = 0; i < text.n; i++) {
                unsigned char c = (unsigned char)text.p[i];
                word = c > ' ' ? word + 1 : 0;
                if (word > maxword) maxword = word;
                ascii += c < 0x80;
                alpha += (c | 32) >= 'a' && (c | 32) <= 'z';
                alpha += c == ' ';
                run = i && text.p[i - 1] == text.p[i] ? run + 1 : 1;
                if (run > maxrun) maxrun = run;
            }
            if (text.n > 40 && ascii * 100 >= text.n * 98 && alpha * 10 >= text.n * 9 && maxrun < 8 && maxword <= 24) {
                sb_put(prose, text.p, text.n);
                sb_put(prose, "\n", 1);
            }
        }
        free(got);
        if (!nl) break;
        line = nl + 1;
    }
    printf("%-28s exact %d/%d, round trip %d/%d\n", name, r.exact, r.n, r.roundtrip, r.n);
    CHECK(r.exact == r.n && r.n > 0, "%s: %d of %d exact", name, r.exact, r.n);
    CHECK(r.roundtrip == r.n, "%s: %d of %d round trips", name, r.roundtrip, r.n);
    free(want); free(text.p); free(dec.p); free(f);
    return r;
}

/* ------------------------------------------------------------ own cases */

static void expect_ids(const etok *t, const char *s, int flags, const int32_t *want, int32_t nw, const char *what) {
    int32_t ng;
    int32_t *got = encode(t, s, strlen(s), flags, &ng);
    int ok = ng == nw && memcmp(got, want, (size_t)nw * sizeof(int32_t)) == 0;
    CHECK(ok, "%s", what);
    if (!ok) { print_text(s, strlen(s)); print_ids("want", want, nw); print_ids("got ", got, ng); }
    free(got);
}

/* decode(encode(s)) == s (byte exact) */
static int roundtrip(const etok *t, const char *s, size_t n, int flags) {
    int32_t ng;
    int32_t *got = encode(t, s, n, flags, &ng);
    sbuf d = {0};
    decode(t, got, ng, flags, &d);
    int ok = d.n == n && (n == 0 || memcmp(d.p, s, n) == 0);
    free(got); free(d.p);
    return ok;
}

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static uint32_t random_cp(void) {
    static const uint32_t pool[] = { ' ', ' ', ' ', '\n', '\r', '\t', '\'', 's', 'S', 0x17F, 'l', 'L', 'e',
        '1', '2', '0', '.', ',', '!', '<', '|', '>', 0xA0, 0x85, 0x2028, 0x2029, 0x3000, 0xFEFF, 0x200B, 0x200D,
        0x301, 0xE9, 0x4E2D, 0x6587, 0x1F600, 0x1F469, 0x1F3FD, 0x0660, 0x0966, 0x2160, 0xBD, 0x10FFFF, 0xFFFE,
        0xE000, 0x1D400, 0x0627, 0x05D0, 0x0915, 0x093F, 0x3042, 0xAC00, 0x1680, 0x180E, 0x1C, 0x7F, 0 };
    uint32_t r = rnd() % 100;
    if (r < 45) return 0x20 + rnd() % 95;
    if (r < 80) return pool[rnd() % (sizeof pool / sizeof pool[0])];
    uint32_t cp;
    do cp = rnd() % 0x110000; while (cp >= 0xD800 && cp < 0xE000);
    return cp;
}

static int has_u2581(const char *s, size_t n) {
    for (size_t i = 0; i + 3 <= n; i++)
        if (!memcmp(s + i, "\xE2\x96\x81", 3)) return 1;
    return 0;
}

static void fuzz_family(const etok *t, const char *name, double budget) {
    double t0 = now_sec();
    int iters = 0, bad = 0, spm = etok_kind(t) == ETOK_SPM;
    sbuf s = {0};
    while (now_sec() - t0 < budget && iters < 50000) {
        s.n = 0;
        sb_put(&s, "", 0);
        int len = (int)(rnd() % ((iters & 7) == 0 ? 300 : 48));
        if (iters & 1) for (int i = 0; i < len; i++) { unsigned char c = (unsigned char)rnd(); sb_put(&s, &c, 1); }
        else for (int i = 0; i < len; i++) sb_utf8(&s, random_cp());
        iters++;
        int flags = (iters % 3 == 0) ? ETOK_PARSE_SPECIAL : 0;
        if (spm && has_u2581(s.p, s.n)) { int32_t c; free(encode(t, s.p, s.n, flags, &c)); continue; }
        if (!roundtrip(t, s.p, s.n, flags & ~ETOK_PARSE_SPECIAL)) {
            if (bad++ < 3) { fprintf(stderr, "fuzz %s round trip failed:\n", name); print_text(s.p, s.n); }
        }
        if (flags) { int32_t c; free(encode(t, s.p, s.n, flags, &c)); }
    }
    printf("%-28s fuzz: %d strings, %d round-trip failures (%.2f s)\n", name, iters, bad, now_sec() - t0);
    CHECK(bad == 0, "%s fuzz: %d failures", name, bad);
    free(s.p);
}

static void long_word(const etok *t, const char *name) {
    size_t n = sanitize_mode() ? (64 << 10) : (1 << 20);
    char *s = malloc(n);
    memset(s, 'a', n);
    double t0 = now_sec();
    int32_t ng;
    int32_t *ids = encode(t, s, n, 0, &ng);
    double dt = now_sec() - t0;
    printf("%-28s %zu x 'a': %d tokens in %.3f s\n", name, n, ng, dt);
    CHECK(ng > 0 && dt < (sanitize_mode() ? 10.0 : 1.0), "%s long word too slow: %.3f s", name, dt);
    sbuf d = {0};
    decode(t, ids, ng, 0, &d);
    CHECK(d.n == n && !memcmp(d.p, s, n), "%s long word round trip", name);
    free(ids); free(d.p);
    /* long runs of other classes */
    static const char *units[] = { " ", "1", "!", "\n", " a", "\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "\x80", "ab " };
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        size_t ul = strlen(units[u]), m = (sanitize_mode() ? (16 << 10) : (256 << 10)) / ul * ul;
        char *r = malloc(m);
        for (size_t i = 0; i < m; i += ul) memcpy(r + i, units[u], ul);
        t0 = now_sec();
        int ok = roundtrip(t, r, m, 0);
        dt = now_sec() - t0;
        CHECK(ok || (etok_kind(t) == ETOK_SPM && u == 4 && 0), "%s long run %zu round trip", name, u);
        CHECK(dt < (sanitize_mode() ? 10.0 : 1.0), "%s long run %zu: %.3f s", name, u, dt);
        free(r);
    }
    free(s);
}

static int speed_only(void) {
    const char *s = getenv("EMBER_TOK_SPEED_ONLY");
    return s && s[0] == '1';
}

static void speed(const etok *t, const char *name, const sbuf *prose) {
    if (!prose->n) return;
    size_t target = sanitize_mode() ? (128 << 10) : (2 << 20);
    sbuf big = {0};
    while (big.n < target) sb_put(&big, prose->p, prose->n);
    int32_t *ids = malloc(big.n * sizeof(int32_t));
    int32_t ng = 0;
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_sec();
        int rc = etok_encode(t, big.p, big.n, 0, ids, (int32_t)big.n, &ng);
        double dt = now_sec() - t0;
        CHECK(rc == EMBER_OK, "speed encode rc %d", rc);
        if (dt < best) best = dt;
    }
    printf("%-28s speed: %.1f MB/s encoding English prose (%.2f MB, %d tokens)\n", name,
           big.n / best / 1e6, big.n / 1e6, ng);
    free(ids); free(big.p);
}


/* --------------------------------------------------- split regexes, fast paths */

typedef struct { const char *pat, *text; const char *pieces[12]; } split_case;

/* Hand-checked splits (Perl / Oniguruma leftmost-first semantics; the cases
 * the shared README spells out, and ones each construct must get right). */
static void split_cases(void) {
    static const split_case cases[] = {
        { "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
          "a   b", { "a", "  ", " b" } },
        { "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}",
          "it'\xC5\xBF" "elf IT'S 12345", { "it", "'\xC5\xBF", "elf", " IT", "'S", " ", "123", "45" } },
        { "\\s+$", "ab  \xE2\x98\x83  ", { "ab  \xE2\x98\x83", "  " } },
        { "\\s+$", "x \ny \n", { "x", " ", "\ny", " \n" } },
        { "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[\\p{Lu}]+", "HTTPServer",
          { "HTTPServer" } },
        { "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[\\p{Lu}]+", "ABC",
          { "ABC" } },
        { "\\p{N}{1,3}", "1234567", { "123", "456", "7" } },
        { "a(?=b)|c(?!d)", "abcdcx", { "a", "bcd", "c", "x" } },
        { "(?:ab)+|x{2,3}", "ababaxxxxx", { "abab", "a", "xxx", "xx" } },
        { "[^a-c\\d]+", "xyza9bq", { "xyz", "a9b", "q" } },
        { "(?i:k)", "\xE2\x84\xAA", { "\xE2\x84\xAA" } },
        { "\\p{P}+", "a\xE2\x80\x94!b", { "a", "\xE2\x80\x94!", "b" } },
        { "[\xE4\xB8\x80-\xE9\xBE\xA5]+", "ab\xE4\xB8\xAD\xE6\x96\x87" "c", { "ab", "\xE4\xB8\xAD\xE6\x96\x87", "c" } },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const split_case *c = &cases[k];
        size_t ends[32], len = strlen(c->text);
        char err[128] = "";
        int64_t np = etok_split_test(c->pat, c->text, len, ends, 32, err, sizeof err);
        int ok = np >= 0;
        size_t prev = 0, i = 0;
        for (; ok && i < (size_t)np && i < 12 && c->pieces[i]; i++) {
            size_t pl = strlen(c->pieces[i]);
            ok = ends[i] - prev == pl && memcmp(c->text + prev, c->pieces[i], pl) == 0;
            prev = ends[i];
        }
        ok = ok && i == (size_t)np && (i == 12 || !c->pieces[i]);
        CHECK(ok, "split case %zu (%s on \"%s\"): %lld pieces %s", k, c->pat, c->text, (long long)np, err);
    }
    /* patterns the matcher refuses, with a message instead of a crash */
    static const char *bad[] = { "(", "[a", "a{2", "\\p{Xx}", "(?<n>a)", "a**", "(?:a?)*", "\\", "[z-a]", "a+?" };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        size_t ends[4];
        char err[128] = "";
        int64_t np = etok_split_test(bad[k], "aaa", 3, ends, 4, err, sizeof err);
        CHECK(np == -1 && err[0], "bad pattern %s accepted", bad[k]);
    }
}

/* Every pattern of every pre-tokenizer compiles, and stays linear on 1 MB
 * runs of each character class (no catastrophic backtracking). */
static void split_table_linear(void) {
    size_t n = sanitize_mode() ? (64 << 10) : (1 << 20);
    static const char *units[] = { " ", "a", "A", "1", "!", "\n", "\r\n", " \xE2\x98\x83", "\xE4\xB8\xAD", "\xCC\x81",
                                   " a", "\xC2\xA0", "'s" };
    static const char *tails[] = { "", "x", "\xE2\x98\x83", "!", "1" };
    char *buf = malloc(n + 16);
    size_t *ends = malloc((n + 16) * sizeof(size_t));
    int npat = 0;
    for (int pre = 0; pre < 64; pre++) {
        for (int st = 0; st < 6; st++) {
            const char *p = etok_pre_pattern(pre, st);
            if (!p) break;
            if (p[0] == 1) p++;
            npat++;
            for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
                size_t ul = strlen(units[u]);
                size_t m = n / ul * ul, i;
                /* 1 MB for the plain runs; 64 KB for the other combinations */
                size_t small = n < (64u << 10) ? n : (64u << 10);
                if (u > 3) m = small / ul * ul;
                for (i = 0; i < m; i += ul) memcpy(buf + i, units[u], ul);
                for (size_t tl = 0; tl < sizeof tails / sizeof tails[0]; tl++) {
                    size_t l = strlen(tails[tl]);
                    memcpy(buf + m, tails[tl], l);
                    char err[128] = "";
                    double t0 = now_sec();
                    int64_t np = etok_split_test(p, buf, m + l, ends, n + 16, err, sizeof err);
                    double dt = now_sec() - t0;
                    CHECK(np > 0, "pre %d step %d: %s", pre, st, err);
                    CHECK(dt < (sanitize_mode() ? 20.0 : 2.0), "pre %d step %d on a run of '%s' + '%s': %.2f s",
                          pre, st, units[u], tails[tl], dt);
                }
            }
        }
        if (!etok_pre_pattern(pre, 0)) break;
    }
    printf("%-28s %d patterns on runs (%zu bytes of spaces, letters, digits; 64 KB of 9 more kinds) x 5 tails: linear\n", "split table", npat, n);
    free(buf);
    free(ends);
}

/* The hand-written splitters and the general matcher must give the same ids. */
static void fast_vs_general(tvocab *v, int pre, const char *name, const char *fixtures) {
    int save = v->pre;
    v->pre = pre;
    g_general = 0;
    etok *a = tv_build(v);
    g_general = 1;
    etok *b = tv_build(v);
    g_general = 0;
    v->pre = save;
    if (!a || !b) { etok_free(a); etok_free(b); return; }
    int iters = 0, diff = 0;
    sbuf s = {0};
    /* the fixture texts, then random strings */
    size_t flen = 0;
    char *fx = fixtures ? read_file(fixtures, &flen) : NULL;
    const char *fp = fx;
    for (;;) {
        s.n = 0;
        if (fp && fp < fx + flen) {
            const char *q = strstr(fp, "\"text\": ");
            if (!q) { fp = NULL; continue; }
            q += 8;
            json_string(&q, &s);
            fp = strchr(q, '\n');
            if (fp) fp++;
        } else {
            if (iters > 20000) break;
            int len = (int)(rnd() % ((iters & 7) == 0 ? 400 : 40));
            static const char alpha[] = " a\n\r1'sA.\t\xC2\xA0";   /* NBSP split in two: invalid bytes too */
            if (iters & 1) for (int i = 0; i < len; i++) { unsigned char c = (unsigned char)alpha[rnd() % (sizeof alpha - 1)]; sb_put(&s, &c, 1); }
            else for (int i = 0; i < len; i++) sb_utf8(&s, random_cp());
        }
        iters++;
        int32_t na, nb;
        int32_t *ia = encode(a, s.p, s.n, 0, &na), *ib = encode(b, s.p, s.n, 0, &nb);
        if (na != nb || memcmp(ia, ib, (size_t)na * sizeof(int32_t))) {
            if (diff++ < 3) { fprintf(stderr, "%s: fast and general splits differ on:\n", name); print_text(s.p, s.n); }
        }
        free(ia); free(ib);
    }
    printf("%-28s fast path == general matcher on %d strings (%d differ)\n", name, iters, diff);
    CHECK(diff == 0, "%s: %d strings differ between fast and general", name, diff);
    free(fx); free(s.p);
    etok_free(a); etok_free(b);
}


/* End of generation: llama.cpp's set, by text, whatever the ids. */
static void eog_sets(void) {
    static const char *tx[] = { "a", "<|im_end|>", "<|endoftext|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
                                "<end_of_turn>", "<|end|>", "<|im_start|>", "<|fim_prefix|>", "hello", "<eos>",
                                "<|eom_id|>", "<|eot_id|>", "<|return|>", "<|call|>" };
    const int n = (int)(sizeof tx / sizeof tx[0]);
    tvocab v;
    memset(&v, 0, sizeof v);
    tv_alloc(&v, n);
    for (int i = 0; i < n; i++) { v.text[i] = strdup(tx[i]); v.len[i] = strlen(tx[i]); v.type[i] = i ? ETOK_T_CONTROL : 1; }
    v.kind = ETOK_BPE; v.pre = ETOK_PRE_QWEN2;
    for (int harmony = 0; harmony < 2; harmony++) {
        etok_desc d;
        memset(&d, 0, sizeof d);
        d.kind = v.kind; d.pre = v.pre; d.n_vocab = harmony ? n : n - 2; d.ud = &v;
        d.token_text = tv_text; d.token_type = tv_type;
        d.bos = d.eot = d.unk = d.pad = -1;
        d.eos = 10;                 /* "hello": an odd eos is still an end */
        etok *t = NULL;
        char err[256] = "";
        CHECK(etok_create(&d, NULL, &t, err, sizeof err) == EMBER_OK && t, "eog vocab: %s", err);
        if (!t) continue;
        /* a, <|im_start|>, <|fim_prefix|> are not ends; <|end|> is not with <|return|> + <|call|> (gpt-oss) */
        for (int i = 0; i < d.n_vocab; i++) {
            int want = !(i == 0 || i == 8 || i == 9 || (harmony && i == 7));
            CHECK(etok_is_eog(t, i) == want, "eog %s (harmony %d): %d", tx[i], harmony, etok_is_eog(t, i));
        }
        etok_free(t);
    }
    tv_free(&v);
}

/* Without ../shared: the hand-written splitters against the matcher on a
 * byte-only vocabulary (the pieces decide the ids: one id per byte, and
 * whole pieces up to 2 bytes are tokens). */
static void fast_vs_general_bytes(void) {
    tvocab v;
    memset(&v, 0, sizeof v);
    int n = 256 + 96 * 96;
    tv_alloc(&v, n);
    for (int b = 0; b < 256; b++) {
        sbuf s = {0};
        sb_utf8(&s, b2u_tab[b]);
        v.text[b] = s.p; v.len[b] = s.n; v.type[b] = 1;
    }
    /* two-character ASCII pieces, so a piece boundary shows in the ids */
    for (int x = 0; x < 96; x++)
        for (int y = 0; y < 96; y++) {
            int id = 256 + x * 96 + y;
            sbuf s = {0};
            sb_utf8(&s, b2u_tab[32 + x]);
            sb_utf8(&s, b2u_tab[32 + y]);
            v.text[id] = s.p; v.len[id] = s.n; v.type[id] = 1;
        }
    v.kind = ETOK_BPE;
    v.bos = v.eos = v.eot = v.unk = -1;
    fast_vs_general(&v, ETOK_PRE_GPT2, "gpt2 splitter (bytes)", NULL);
    fast_vs_general(&v, ETOK_PRE_LLAMA3, "llama3 splitter (bytes)", NULL);
    fast_vs_general(&v, ETOK_PRE_QWEN2, "qwen2 splitter (bytes)", NULL);
    fast_vs_general(&v, ETOK_PRE_SMOLLM, "smollm steps (bytes)", NULL);
    fast_vs_general(&v, ETOK_PRE_FALCON, "falcon steps (bytes)", NULL);
    tv_free(&v);
}

/* --------------------------------------------------------------- suites */

static void llama2_cases(const etok *t) {
    { int32_t w[] = { 29871, 15043 }; expect_ids(t, " Hello", 0, w, 2, "llama2 ' Hello'"); }
    { int32_t w[] = { 29871, 3 }; expect_ids(t, "\0", 0, w, 0, "llama2 NUL is empty C string"); }
    { int32_t w[] = { 1, 15043 }; expect_ids(t, "Hello", ETOK_ADD_BOS, w, 2, "llama2 BOS"); }
    { int32_t w[] = { 1 }; expect_ids(t, "", ETOK_ADD_BOS, w, 1, "llama2 BOS only"); }
    /* <s> as text vs special */
    {
        int32_t ng, ng2;
        int32_t *a = encode(t, "<s>Hi", 5, 0, &ng);
        CHECK(ng > 2 && a[0] != 1, "llama2 <s> is plain text by default");
        int32_t *b = encode(t, "<s>Hi", 5, ETOK_PARSE_SPECIAL, &ng2);
        int32_t *c = encode(t, "Hi", 2, 0, &ng);
        /* llama.cpp: a dummy prefix follows a special token */
        CHECK(ng2 == ng + 1 && b[0] == 1 && !memcmp(b + 1, c, (size_t)ng * 4), "llama2 <s> parsed");
        free(a); free(b); free(c);
    }
    /* invalid UTF-8 -> byte tokens, and back */
    {
        const char bad[] = "a\xff\xc3(b\xe2\x82";
        int32_t ng;
        int32_t *ids = encode(t, bad, sizeof bad - 1, 0, &ng);
        int has_ff = 0;
        for (int i = 0; i < ng; i++) has_ff |= ids[i] == 3 + 0xFF;
        CHECK(has_ff, "llama2 invalid byte -> <0xFF>");
        free(ids);
        CHECK(roundtrip(t, bad, sizeof bad - 1, 0), "llama2 invalid UTF-8 round trip");
    }
    char buf[16];
    CHECK(etok_piece(t, 1, -1, 0, buf, sizeof buf) == 0, "llama2 <s> decodes to nothing");
    CHECK(etok_piece(t, 1, -1, ETOK_PARSE_SPECIAL, buf, sizeof buf) == 3 && !memcmp(buf, "<s>", 3), "llama2 <s> special");
    CHECK(etok_piece(t, 0, -1, 0, buf, sizeof buf) == 5 && !memcmp(buf, " \xE2\x81\x87 ", 5), "llama2 unk surface");
    CHECK(etok_piece(t, 15043, 1, 0, buf, sizeof buf) == 5 && !memcmp(buf, "Hello", 5), "llama2 strip after BOS");
    CHECK(etok_piece(t, 15043, 100, 0, buf, sizeof buf) == 6 && !memcmp(buf, " Hello", 6), "llama2 keep space");
    CHECK(etok_piece(t, 32000, -1, 0, buf, sizeof buf) < 0, "llama2 bad id");
    CHECK(etok_is_eog(t, 2) && !etok_is_eog(t, 1), "llama2 eog");
    /* BUFFER_TOO_SMALL */
    {
        int32_t o[2], ng = 0;
        int rc = etok_encode(t, "Hello world again", 17, 0, o, 2, &ng);
        CHECK(rc == EMBER_ERR_BUFFER_TOO_SMALL && ng > 2, "llama2 buffer too small: rc %d n %d", rc, ng);
    }
}

static void gpt2_cases(const etok *t) {
    { int32_t w[] = { 15496, 995 }; expect_ids(t, "Hello world", 0, w, 2, "gpt2 Hello world"); }
    { int32_t w[] = { 50256 }; expect_ids(t, "<|endoftext|>", ETOK_PARSE_SPECIAL, w, 1, "gpt2 eot special"); }
    {
        int32_t ng;
        int32_t *a = encode(t, "<|endoftext|>", 13, 0, &ng);
        CHECK(ng > 1, "gpt2 eot as text");
        free(a);
    }
    const char *cases[] = { "a   b", "  leading", "trailing  ", "\t\t x\n\n\n y", "I'm you're we'VE it'S",
        "12345 678", "\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family",
        "mixed \xD0\xBF\xD1\x80\xD0\xB8 \xE4\xB8\xAD\xE6\x96\x87 \xD8\xB9\xD8\xB1\xD8\xA8", "\xff\xfe bad \xc0\xaf utf8 \xed\xa0\x80",
        "<|endoftext|><|endoftext", "x\xC2\xA0\xC2\x85y" };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(roundtrip(t, cases[i], strlen(cases[i]), 0), "gpt2 round trip case %zu", i);
    CHECK(etok_is_eog(t, 50256), "gpt2 eog");
}

static void llama3_cases(const etok *t) {
    { int32_t w[] = { 9906, 1917 }; expect_ids(t, "Hello world", 0, w, 2, "llama3 Hello world"); }
    { int32_t w[] = { 128000, 9906 }; expect_ids(t, "Hello", ETOK_ADD_BOS, w, 2, "llama3 BOS"); }
    { int32_t w[] = { 128006, 882, 128007, 271 }; expect_ids(t, "<|start_header_id|>user<|end_header_id|>\n\n", ETOK_PARSE_SPECIAL, w, 4, "llama3 header"); }
    const char *cases[] = { "a   b", "it'\305\277elf IT'S we'LL", "1234567", " \r\n\r\n  x", "\xff\xfe\x80 z",
        "<|eot_id|> <|eot_id", "\xE2\x80\xA8\xC2\x85\xEF\xBB\xBFz" };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(roundtrip(t, cases[i], strlen(cases[i]), 0), "llama3 round trip case %zu", i);
    CHECK(etok_is_eog(t, 128009) && etok_is_eog(t, 128001) && etok_is_eog(t, 128008) && !etok_is_eog(t, 128000),
          "llama3 eog");
    char buf[64];
    CHECK(etok_piece(t, 128009, -1, 0, buf, sizeof buf) == 0, "llama3 control hidden");
    CHECK(etok_piece(t, 128009, -1, ETOK_PARSE_SPECIAL, buf, sizeof buf) == 10, "llama3 control shown");
}

/* validation of bad vocabularies */
static void bad_vocab(void) {
    tvocab v;
    memset(&v, 0, sizeof v);
    tv_alloc(&v, 4);
    const char *tx[4] = { "a", "b", "ab", "<|x|>" };
    for (int i = 0; i < 4; i++) { v.text[i] = strdup(tx[i]); v.len[i] = strlen(tx[i]); v.type[i] = 1; }
    v.kind = ETOK_BPE; v.pre = ETOK_PRE_GPT2;
    v.merge = calloc(1, sizeof(char *)); v.mlen = calloc(1, sizeof(size_t));
    v.merge[0] = strdup("a c"); v.mlen[0] = 3; v.n_merges = 1;
    etok_desc d;
    memset(&d, 0, sizeof d);
    d.kind = v.kind; d.pre = v.pre; d.n_vocab = v.n; d.n_merges = 1; d.ud = &v;
    d.token_text = tv_text; d.token_type = tv_type; d.merge_text = tv_merge;
    d.bos = d.eos = d.eot = d.unk = d.pad = -1;
    etok *t = NULL;
    char err[256] = "";
    CHECK(etok_create(&d, NULL, &t, err, sizeof err) == EMBER_ERR_CORRUPT && !t, "bad merge rejected");
    CHECK(strstr(err, "merge") != NULL, "bad merge message: %s", err);
    strcpy(v.merge[0], "a b");
    CHECK(etok_create(&d, NULL, &t, err, sizeof err) == EMBER_OK && t, "good merge: %s", err);
    etok_free(t);
    d.bos = 7;
    CHECK(etok_create(&d, NULL, &t, err, sizeof err) == EMBER_ERR_CORRUPT, "bos out of range");
    d.bos = -1;
    v.type[3] = 9;
    CHECK(etok_create(&d, NULL, &t, err, sizeof err) == EMBER_ERR_CORRUPT, "bad type");
    v.type[3] = ETOK_T_USER_DEFINED;
    /* user-defined tokens are always cut out of text */
    CHECK(etok_create(&d, NULL, &t, err, sizeof err) == EMBER_OK, "ud vocab");
    {
        int32_t o[8], ng;
        etok_encode(t, "ab<|x|>a", 8, 0, o, 8, &ng);
        CHECK(ng == 3 && o[0] == 2 && o[1] == 3 && o[2] == 0, "user-defined split: %d", ng);
    }
    etok_free(t);
    d.kind = 7;
    CHECK(etok_create(&d, NULL, &t, err, sizeof err) == EMBER_ERR_UNSUPPORTED, "bad kind");
    tv_free(&v);
}

int main(void) {
    for (int b = 0; b < 256; b++) b2u_tab[b] = b2u((unsigned)b);
    bad_vocab();
    split_cases();
    eog_sets();
    if (!speed_only()) {
        split_table_linear();
        fast_vs_general_bytes();
    }
    const char *dir = test_shared_dir();
    if (!dir) return test_summary("test_tokenizer");
    double fuzz_budget = sanitize_mode() ? 2.0 : 0.7;
    char path[1024];
    tvocab v;
    sbuf prose = {0};

    /* ---- llama2 */
    if (load_llama2(dir, &v) == 0) {
        etok *t = tv_build(&v);
        if (t) {
            snprintf(path, sizeof path, "%s/tokenizers/llama2/fixtures.jsonl", dir);
            prose.n = 0;
            run_fixtures(t, path, 0, "llama2/fixtures", &prose);
            if (!speed_only()) {
                llama2_cases(t);
                long_word(t, "llama2");
                fuzz_family(t, "llama2", fuzz_budget);
            }
            speed(t, "llama2", &prose);
            etok_free(t);
        }
        tv_free(&v);
    } else CHECK(0, "cannot load llama2 vocabulary");

    /* ---- gpt2 */
    if (load_gpt2(dir, &v) == 0) {
        etok *t = tv_build(&v);
        if (t) {
            snprintf(path, sizeof path, "%s/tokenizers/gpt2/fixtures.jsonl", dir);
            prose.n = 0;
            run_fixtures(t, path, 0, "gpt2/fixtures", &prose);
            snprintf(path, sizeof path, "%s/tokenizers/gpt2/fixtures_special.jsonl", dir);
            run_fixtures(t, path, ETOK_PARSE_SPECIAL, "gpt2/fixtures_special", NULL);
            if (!speed_only()) {
                gpt2_cases(t);
                long_word(t, "gpt2");
                fuzz_family(t, "gpt2", fuzz_budget);
            }
            speed(t, "gpt2", &prose);
            if (!speed_only()) fast_vs_general(&v, ETOK_PRE_GPT2, "gpt2 splitter", path);
            etok_free(t);
        }
        tv_free(&v);
    } else CHECK(0, "cannot load gpt2 vocabulary");

    /* ---- llama3 */
    if (load_llama3(dir, &v) == 0) {
        double t0 = now_sec();
        etok *t = tv_build(&v);
        printf("%-28s built in %.3f s (%d merges)\n", "llama3", now_sec() - t0, v.n_merges);
        if (t) {
            snprintf(path, sizeof path, "%s/tokenizers/llama3/fixtures.jsonl", dir);
            prose.n = 0;
            run_fixtures(t, path, 0, "llama3/fixtures", &prose);
            snprintf(path, sizeof path, "%s/tokenizers/llama3/fixtures_special.jsonl", dir);
            run_fixtures(t, path, ETOK_PARSE_SPECIAL, "llama3/fixtures_special", NULL);
            if (!speed_only()) {
                llama3_cases(t);
                long_word(t, "llama3");
                fuzz_family(t, "llama3", fuzz_budget);
            }
            speed(t, "llama3", &prose);
            snprintf(path, sizeof path, "%s/tokenizers/llama3/fixtures.jsonl", dir);
            if (!speed_only()) {
                fast_vs_general(&v, ETOK_PRE_LLAMA3, "llama3 splitter", path);
                fast_vs_general(&v, ETOK_PRE_QWEN2, "qwen2 splitter", path);
                fast_vs_general(&v, ETOK_PRE_SMOLLM, "smollm steps", path);
            }
            g_general = 1;
            etok *tg = tv_build(&v);
            g_general = 0;
            if (tg) {
                speed(tg, "llama3 (general matcher)", &prose);
                etok_free(tg);
            }
            etok_free(t);
        }
        tv_free(&v);
    } else CHECK(0, "cannot load llama3 vocabulary");
    free(prose.p);
    return test_summary("test_tokenizer");
}
