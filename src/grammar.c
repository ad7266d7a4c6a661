/* grammar.c - GBNF grammars (llama.cpp's format): parse text into rules,
 * then follow a text through them to say which tokens may come next.
 *
 * A compiled grammar is a flat array of elements.  Rule r's alternatives
 * start at rule_start[r], one after another, each ended by EG_ALT, the last
 * by EG_END.  An element is a character set (ranges, possibly negated) or a
 * reference to a rule.  Repeats and groups become generated rules while
 * parsing (x* -> R ::= x R | ), so matching knows only sets and references.
 *
 * A parse position is a set of stacks of element positions (as llama.cpp
 * keeps it): each stack's top is the character set that may match next,
 * the positions below it are where to continue when the rules above end.
 * An empty stack means the text may end here.  Which tokens may come next
 * is found by walking a byte trie of the vocabulary's token texts against
 * the stacks, so a prefix shared by many tokens is matched once, and a
 * subtree whose first bytes no stack accepts is skipped whole. */
#include "grammar.h"

#include <stdio.h>
#include <string.h>

enum { EG_END = 0, EG_ALT = 1, EG_REF = 2, EG_SET = 3 };

typedef struct eg_elem { uint8_t type, neg; uint32_t a, n; } eg_elem; /* SET: ranges [a, a+n); REF: rule a */
typedef struct eg_range { uint32_t lo, hi; } eg_range;

/* Limits that keep hostile grammars from exhausting memory or the C stack:
 * elements in a grammar, repeat counts, stack depth, stacks in one parse
 * position, and expansion steps for one character. */
#define EG_MAX_ELEMS (1u << 20)
#define EG_MAX_REPEAT 10000u
#define EG_MAX_STACK 1024u
#define EG_MAX_STACKS 1024u
#define EG_MAX_WORK 200000L

struct ember_grammar {
    ember_allocator al;
    const ember_allocator *a;    /* &al, or NULL for libc */
    eg_elem *elems;
    eg_range *ranges;
    uint32_t *rule_start;
    uint32_t n_elems, n_ranges, n_rules, root;
};

static int eg_grow(const ember_allocator *a, void **p, uint32_t *cap, uint32_t need, size_t size) {
    if (need <= *cap) return 0;
    uint32_t c = *cap ? *cap : 16;
    while (c < need) c = c > UINT32_MAX / 2 ? need : c * 2;
    void *q = ec_realloc(a, *p, (size_t)c * size);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* ---- parsing ------------------------------------------------------------ */

typedef struct eg_seq { eg_elem *v; uint32_t n, cap; } eg_seq;
typedef struct eg_sym {
    const char *name;   /* points into the source or a generated name buffer */
    size_t len;
    size_t use_pos;     /* first reference, for "undefined rule" errors */
    int defined, generated;
    uint32_t parent;    /* generated rules: the rule they came from */
} eg_sym;

typedef struct eg_parser {
    const ember_allocator *a;
    const char *s;
    size_t n, pos;
    eg_sym *syms;
    eg_seq *rules;
    uint32_t n_rules, cap_syms, cap_rules;
    eg_range *ranges;
    uint32_t n_ranges, cap_ranges;
    uint32_t *named;     /* ids of the rules named in the text */
    uint32_t n_named, cap_named;
    uint32_t total;      /* elements so far */
    int rc;
    char msg[200];
    size_t err_pos;
} eg_parser;

static void eg_fail_at(eg_parser *p, size_t at, int rc, const char *fmt, const char *arg, size_t arg_len) {
    if (p->rc) return;
    p->rc = rc;
    p->err_pos = at;
    if (arg) {
        char name[64];
        size_t k = arg_len < sizeof name - 1 ? arg_len : sizeof name - 1;
        memcpy(name, arg, k);
        name[k] = 0;
        snprintf(p->msg, sizeof p->msg, fmt, name);
    } else {
        snprintf(p->msg, sizeof p->msg, "%s", fmt);
    }
}
static void eg_fail(eg_parser *p, const char *what) { eg_fail_at(p, p->pos, EMBER_ERR_INVALID_ARG, what, NULL, 0); }
static void eg_nomem(eg_parser *p) { eg_fail_at(p, p->pos, EMBER_ERR_NOMEM, "out of memory", NULL, 0); }

static int eg_peek(const eg_parser *p, size_t k) { return p->pos + k < p->n ? (unsigned char)p->s[p->pos + k] : -1; }
static int eg_is_word(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Spaces, tabs and # comments; line breaks too when newline_ok. */
static void eg_space(eg_parser *p, int newline_ok) {
    for (;;) {
        int c = eg_peek(p, 0);
        if (c == ' ' || c == '\t' || (newline_ok && (c == '\r' || c == '\n'))) p->pos++;
        else if (c == '#') while (p->pos < p->n && p->s[p->pos] != '\r' && p->s[p->pos] != '\n') p->pos++;
        else return;
    }
}

static uint32_t eg_rule_new(eg_parser *p, const char *name, size_t len, int generated, uint32_t parent) {
    if (p->n_rules >= (1u << 20)) { eg_fail(p, "too many rules"); return 0; }
    if (eg_grow(p->a, (void **)&p->syms, &p->cap_syms, p->n_rules + 1, sizeof *p->syms) ||
        eg_grow(p->a, (void **)&p->rules, &p->cap_rules, p->n_rules + 1, sizeof *p->rules)) {
        eg_nomem(p);
        return 0;
    }
    uint32_t id = p->n_rules++;
    memset(&p->syms[id], 0, sizeof p->syms[id]);
    memset(&p->rules[id], 0, sizeof p->rules[id]);
    p->syms[id].name = name;
    p->syms[id].len = len;
    p->syms[id].generated = generated;
    p->syms[id].parent = parent;
    p->syms[id].use_pos = p->pos;
    return id;
}

static uint32_t eg_rule_named(eg_parser *p, const char *name, size_t len) {
    for (uint32_t k = 0; k < p->n_named; k++) {
        uint32_t i = p->named[k];
        if (p->syms[i].len == len && memcmp(p->syms[i].name, name, len) == 0) return i;
    }
    if (eg_grow(p->a, (void **)&p->named, &p->cap_named, p->n_named + 1, sizeof *p->named)) { eg_nomem(p); return 0; }
    uint32_t id = eg_rule_new(p, name, len, 0, 0);
    if (!p->rc) p->named[p->n_named++] = id;
    return id;
}

static void eg_push(eg_parser *p, uint32_t rule, uint8_t type, uint8_t neg, uint32_t a, uint32_t n) {
    if (p->rc) return;
    if (++p->total > EG_MAX_ELEMS) { eg_fail(p, "the grammar is too large"); return; }
    eg_seq *q = &p->rules[rule];
    if (eg_grow(p->a, (void **)&q->v, &q->cap, q->n + 1, sizeof *q->v)) { eg_nomem(p); return; }
    q->v[q->n++] = (eg_elem){type, neg, a, n};
}

static void eg_push_range(eg_parser *p, uint32_t lo, uint32_t hi) {
    if (p->rc) return;
    if (p->n_ranges >= EG_MAX_ELEMS) { eg_fail(p, "the grammar is too large"); return; }
    if (eg_grow(p->a, (void **)&p->ranges, &p->cap_ranges, p->n_ranges + 1, sizeof *p->ranges)) { eg_nomem(p); return; }
    p->ranges[p->n_ranges++] = (eg_range){lo, hi};
}

static int eg_hex(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* One character of a literal or class: an escape or a UTF-8 sequence. */
static uint32_t eg_char(eg_parser *p) {
    int c = eg_peek(p, 0);
    if (c < 0) { eg_fail(p, "unexpected end of input"); return 0; }
    if (c == '\\') {
        int e = eg_peek(p, 1), digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (digits) {
            uint32_t v = 0;
            for (int i = 0; i < digits; i++) {
                int h = eg_hex(eg_peek(p, 2 + (size_t)i));
                if (h < 0) { eg_fail(p, "expected hex digits after \\x, \\u or \\U"); return 0; }
                v = v << 4 | (uint32_t)h;
            }
            if (v > 0x10FFFF) { eg_fail(p, "code point above U+10FFFF"); return 0; }
            p->pos += 2 + (size_t)digits;
            return v;
        }
        static const char from[] = "tnr\\\"[]-^", to[] = "\t\n\r\\\"[]-^";
        const char *f = e > 0 ? strchr(from, e) : NULL;
        if (!f || !*f) { eg_fail(p, "unknown escape"); return 0; }
        p->pos += 2;
        return (unsigned char)to[f - from];
    }
    uint32_t cp;
    int k = ec_utf8_decode((const unsigned char *)p->s + p->pos, p->n - p->pos, &cp);
    if (!k) { eg_fail(p, "invalid UTF-8"); return 0; }
    p->pos += (size_t)k;
    return cp;
}

static void eg_alternates(eg_parser *p, uint32_t rule, int nested);

/* A generated rule named after the rule it came from (for error messages). */
static uint32_t eg_rule_gen(eg_parser *p, uint32_t parent) {
    while (p->syms[parent].generated) parent = p->syms[parent].parent;
    return eg_rule_new(p, p->syms[parent].name, p->syms[parent].len, 1, parent);
}

/* Apply a repeat to the item that occupies rule[start..n): min copies, then
 * max - min optional ones (max = UINT32_MAX: any number more). */
static void eg_repeat(eg_parser *p, uint32_t rule, uint32_t start, uint32_t min, uint32_t max) {
    if (p->rc) return;
    eg_seq *q = &p->rules[rule];
    if (q->n - start > 1) {   /* a multi-character literal: make it one rule */
        uint32_t r = eg_rule_gen(p, rule);
        if (p->rc) return;
        q = &p->rules[rule];
        for (uint32_t i = start; i < q->n; i++) eg_push(p, r, q->v[i].type, q->v[i].neg, q->v[i].a, q->v[i].n);
        eg_push(p, r, EG_END, 0, 0, 0);
        p->total -= p->rules[rule].n - start;
        p->rules[rule].n = start;
        eg_push(p, rule, EG_REF, 0, r, 0);
        if (p->rc) return;
    }
    eg_elem x = p->rules[rule].v[start];
    p->rules[rule].n = start;
    p->total--;
    for (uint32_t i = 0; i < min; i++) eg_push(p, rule, x.type, x.neg, x.a, x.n);
    if (max == UINT32_MAX) {           /* R ::= x R | */
        uint32_t r = eg_rule_gen(p, rule);
        eg_push(p, r, x.type, x.neg, x.a, x.n);
        eg_push(p, r, EG_REF, 0, r, 0);
        eg_push(p, r, EG_ALT, 0, 0, 0);
        eg_push(p, r, EG_END, 0, 0, 0);
        eg_push(p, rule, EG_REF, 0, r, 0);
    } else if (max > min) {            /* R1 ::= x | ; Rk ::= x R(k-1) | */
        uint32_t prev = 0;
        for (uint32_t k = 1; k <= max - min && !p->rc; k++) {
            uint32_t r = eg_rule_gen(p, rule);
            eg_push(p, r, x.type, x.neg, x.a, x.n);
            if (k > 1) eg_push(p, r, EG_REF, 0, prev, 0);
            eg_push(p, r, EG_ALT, 0, 0, 0);
            eg_push(p, r, EG_END, 0, 0, 0);
            prev = r;
        }
        eg_push(p, rule, EG_REF, 0, prev, 0);
    }
}

static uint32_t eg_uint(eg_parser *p) {
    uint64_t v = 0;
    int any = 0;
    while (eg_peek(p, 0) >= '0' && eg_peek(p, 0) <= '9') {
        v = v * 10 + (uint64_t)(eg_peek(p, 0) - '0');
        if (v > EG_MAX_REPEAT) { eg_fail(p, "repeat count too large (at most 10000)"); return 0; }
        p->pos++;
        any = 1;
    }
    if (!any) eg_fail(p, "expected a number");
    return (uint32_t)v;
}

static void eg_sequence(eg_parser *p, uint32_t rule, int nested) {
    uint32_t last = UINT32_MAX;   /* where the last item starts */
    while (!p->rc) {
        int c = eg_peek(p, 0);
        size_t at = p->pos;
        if (c == '"') {
            p->pos++;
            last = p->rules[rule].n;
            while (!p->rc && eg_peek(p, 0) != '"') {
                if (eg_peek(p, 0) < 0) { eg_fail_at(p, at, EMBER_ERR_INVALID_ARG, "unterminated string literal", NULL, 0); return; }
                uint32_t cp = eg_char(p);
                eg_push_range(p, cp, cp);
                eg_push(p, rule, EG_SET, 0, p->n_ranges - 1, 1);
            }
            p->pos++;
            if (!p->rc && p->rules[rule].n == last) last = UINT32_MAX;  /* "" matches the empty string */
        } else if (c == '[') {
            p->pos++;
            int neg = eg_peek(p, 0) == '^';
            if (neg) p->pos++;
            uint32_t first = p->n_ranges;
            while (!p->rc && eg_peek(p, 0) != ']') {
                if (eg_peek(p, 0) < 0) { eg_fail_at(p, at, EMBER_ERR_INVALID_ARG, "unterminated character class", NULL, 0); return; }
                uint32_t lo = eg_char(p), hi = lo;
                if (eg_peek(p, 0) == '-' && eg_peek(p, 1) != ']' && eg_peek(p, 1) >= 0) {
                    p->pos++;
                    size_t hat = p->pos;
                    hi = eg_char(p);
                    if (!p->rc && hi < lo) { eg_fail_at(p, hat, EMBER_ERR_INVALID_ARG, "character range ends below its start", NULL, 0); return; }
                }
                eg_push_range(p, lo, hi);
            }
            p->pos++;
            last = p->rules[rule].n;
            eg_push(p, rule, EG_SET, (uint8_t)neg, first, p->n_ranges - first);
        } else if (c == '.') {
            p->pos++;
            last = p->rules[rule].n;
            eg_push_range(p, 0, 0x10FFFF);
            eg_push(p, rule, EG_SET, 0, p->n_ranges - 1, 1);
        } else if (eg_is_word(c)) {
            size_t len = 0;
            while (eg_is_word(eg_peek(p, len))) len++;
            uint32_t r = eg_rule_named(p, p->s + at, len);
            p->pos += len;
            last = p->rules[rule].n;
            eg_push(p, rule, EG_REF, 0, r, 0);
        } else if (c == '(') {
            p->pos++;
            eg_space(p, 1);
            uint32_t r = eg_rule_gen(p, rule);
            eg_alternates(p, r, 1);
            if (p->rc) return;
            if (eg_peek(p, 0) != ')') { eg_fail_at(p, at, EMBER_ERR_INVALID_ARG, "unclosed '('", NULL, 0); return; }
            p->pos++;
            last = p->rules[rule].n;
            eg_push(p, rule, EG_REF, 0, r, 0);
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last == UINT32_MAX) { eg_fail(p, "a repeat must follow an item"); return; }
            uint32_t min = c == '+' ? 1 : 0, max = c == '?' ? 1 : UINT32_MAX;
            p->pos++;
            if (c == '{') {
                eg_space(p, nested);
                min = eg_uint(p);
                eg_space(p, nested);
                max = min;
                if (eg_peek(p, 0) == ',') {
                    p->pos++;
                    eg_space(p, nested);
                    max = eg_peek(p, 0) == '}' ? UINT32_MAX : eg_uint(p);
                    eg_space(p, nested);
                }
                if (p->rc) return;
                if (eg_peek(p, 0) != '}') { eg_fail(p, "expected '}'"); return; }
                p->pos++;
                if (max < min) { eg_fail_at(p, at, EMBER_ERR_INVALID_ARG, "repeat {m,n} with n < m", NULL, 0); return; }
            }
            eg_repeat(p, rule, last, min, max);
            last = UINT32_MAX;   /* x** is an error, as in llama.cpp */
        } else {
            return;
        }
        eg_space(p, nested);
    }
}

static void eg_alternates(eg_parser *p, uint32_t rule, int nested) {
    eg_sequence(p, rule, nested);
    while (!p->rc && eg_peek(p, 0) == '|') {
        eg_push(p, rule, EG_ALT, 0, 0, 0);
        p->pos++;
        eg_space(p, 1);
        eg_sequence(p, rule, nested);
    }
    eg_push(p, rule, EG_END, 0, 0, 0);
}

static void eg_rule(eg_parser *p) {
    size_t at = p->pos, len = 0;
    while (eg_is_word(eg_peek(p, len))) len++;
    if (!len) { eg_fail(p, "expected a rule name"); return; }
    uint32_t r = eg_rule_named(p, p->s + at, len);
    if (p->rc) return;
    if (p->syms[r].defined) { eg_fail_at(p, at, EMBER_ERR_INVALID_ARG, "rule '%s' is defined twice", p->s + at, len); return; }
    p->syms[r].defined = 1;
    p->pos += len;
    eg_space(p, 0);
    if (!(eg_peek(p, 0) == ':' && eg_peek(p, 1) == ':' && eg_peek(p, 2) == '=')) { eg_fail(p, "expected '::='"); return; }
    p->pos += 3;
    eg_space(p, 1);
    eg_alternates(p, r, 0);
    if (p->rc) return;
    int c = eg_peek(p, 0);
    if (c == '\r' || c == '\n') p->pos++;
    else if (c >= 0) { eg_fail(p, c == ')' ? "unmatched ')'" : "expected a newline or the end of the rule"); return; }
    eg_space(p, 1);
}

/* ---- checks on the rules: nullable, productive, left recursion ---------- */

/* For each alternative of rule r, in order: calls visit on its elements
 * until it returns nonzero. */
static int eg_nullable_alt(const eg_seq *q, uint32_t i, const uint8_t *nullable) {
    for (; q->v[i].type > EG_ALT; i++)
        if (q->v[i].type == EG_SET || !nullable[q->v[i].a]) return 0;
    return 1;
}

static int eg_set_empty(const eg_elem *e) { return !e->neg && e->n == 0; }

static int eg_productive_alt(const eg_seq *q, uint32_t i, const uint8_t *prod) {
    for (; q->v[i].type > EG_ALT; i++)
        if (q->v[i].type == EG_SET ? eg_set_empty(&q->v[i]) : !prod[q->v[i].a]) return 0;
    return 1;
}

/* Least fixpoint of "some alternative qualifies" (nullable or productive). */
static void eg_fixpoint(const eg_parser *p, uint8_t *flag, int productive) {
    memset(flag, 0, p->n_rules);
    for (int changed = 1; changed;) {
        changed = 0;
        for (uint32_t r = 0; r < p->n_rules; r++) {
            if (flag[r]) continue;
            const eg_seq *q = &p->rules[r];
            for (uint32_t i = 0; i < q->n;) {
                if (productive ? eg_productive_alt(q, i, flag) : eg_nullable_alt(q, i, flag)) { flag[r] = 1; changed = 1; break; }
                while (q->v[i].type > EG_ALT) i++;
                i++;
            }
        }
    }
}

/* A rule reaching itself through references preceded only by nullable
 * elements would make matching loop forever: reject it.  Iterative DFS
 * (the chain of rules can be long). */
static void eg_check_left_recursion(eg_parser *p, const uint8_t *nullable) {
    uint32_t n = p->n_rules;
    uint8_t *color = (uint8_t *)ec_calloc(p->a, n, 1);
    uint32_t *st_rule = (uint32_t *)ec_calloc(p->a, n, sizeof *st_rule), *st_idx = (uint32_t *)ec_calloc(p->a, n, sizeof *st_idx);
    uint8_t *st_left = (uint8_t *)ec_calloc(p->a, n, 1);
    if (!color || !st_rule || !st_idx || !st_left) { eg_nomem(p); goto done; }
    for (uint32_t start = 0; start < n && !p->rc; start++) {
        if (color[start]) continue;
        uint32_t sp = 0;
        st_rule[0] = start; st_idx[0] = 0; st_left[0] = 1; color[start] = 1;
        while (sp != UINT32_MAX && !p->rc) {
            uint32_t r = st_rule[sp];
            const eg_seq *q = &p->rules[r];
            /* next left-reachable reference of r from element st_idx[sp]:
             * one whose alternative has only nullable elements before it
             * (st_left[sp]: that holds at st_idx[sp]) */
            uint32_t i = st_idx[sp], next = UINT32_MAX;
            int left = st_left[sp];
            while (i < q->n) {
                const eg_elem *e = &q->v[i++];
                if (e->type <= EG_ALT) { left = 1; continue; }
                if (e->type == EG_SET) { left = 0; continue; }
                int was_left = left;
                left = left && nullable[e->a];
                if (was_left) { next = e->a; break; }
            }
            st_left[sp] = (uint8_t)left;
            st_idx[sp] = i;
            if (next == UINT32_MAX) { color[r] = 2; sp = sp ? sp - 1 : UINT32_MAX; continue; }
            if (color[next] == 1) {
                uint32_t top = next;
                while (p->syms[top].generated) top = p->syms[top].parent;
                eg_fail_at(p, p->syms[top].use_pos, EMBER_ERR_INVALID_ARG,
                           "left recursion: rule '%s' can reach itself before reading a character", p->syms[top].name, p->syms[top].len);
                break;
            }
            if (color[next] == 0) { color[next] = 1; sp++; st_rule[sp] = next; st_idx[sp] = 0; st_left[sp] = 1; }
        }
    }
done:
    ec_free(p->a, color);
    ec_free(p->a, st_rule);
    ec_free(p->a, st_idx);
    ec_free(p->a, st_left);
}

void ember_grammar_free(ember_grammar *g) {
    if (!g) return;
    ec_free(g->a, g->elems);
    ec_free(g->a, g->ranges);
    ec_free(g->a, g->rule_start);
    ec_free(g->a, g);
}

static void eg_line_col(const char *s, size_t pos, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < pos; i++) {
        if (s[i] == '\n') { (*line)++; *col = 1; }
        else (*col)++;
    }
}

static int eg_expand_initial(const ember_grammar *g, const ember_allocator *a);

ember_status ember_grammar_parse(const char *text, size_t len, const char *root, const ember_allocator *allocator,
                                 ember_grammar **out, ember_error *err) {
    if (!out) return ec_fail(err, EMBER_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!text && len) return ec_fail(err, EMBER_ERR_INVALID_ARG, "text is NULL but len is %zu", len);
    if (!root) root = "root";
    eg_parser p;
    memset(&p, 0, sizeof p);
    p.a = allocator;
    p.s = text ? text : "";
    p.n = len;
    eg_space(&p, 1);
    while (!p.rc && p.pos < p.n) eg_rule(&p);
    uint32_t root_id = UINT32_MAX;
    for (uint32_t i = 0; i < p.n_rules && !p.rc; i++) {
        if (!p.syms[i].defined && !p.syms[i].generated)
            eg_fail_at(&p, p.syms[i].use_pos, EMBER_ERR_INVALID_ARG, "undefined rule '%s'", p.syms[i].name, p.syms[i].len);
        if (!p.syms[i].generated && p.syms[i].len == strlen(root) && memcmp(p.syms[i].name, root, p.syms[i].len) == 0)
            root_id = i;
    }
    if (!p.rc && root_id == UINT32_MAX) eg_fail_at(&p, p.n, EMBER_ERR_INVALID_ARG, "no rule named '%s'", root, strlen(root));
    uint8_t *flag = p.rc ? NULL : (uint8_t *)ec_calloc(allocator, p.n_rules, 1);
    if (!p.rc && !flag) eg_nomem(&p);
    if (!p.rc) {
        eg_fixpoint(&p, flag, 1);
        if (!flag[root_id])
            eg_fail_at(&p, p.syms[root_id].use_pos, EMBER_ERR_INVALID_ARG,
                       "rule '%s' matches no text at all (its language is empty)", root, strlen(root));
    }
    if (!p.rc) {
        eg_fixpoint(&p, flag, 0);
        eg_check_left_recursion(&p, flag);
    }
    ec_free(allocator, flag);

    ember_grammar *g = NULL;
    if (!p.rc) {
        g = (ember_grammar *)ec_calloc(allocator, 1, sizeof *g);
        if (g) {
            if (allocator) { g->al = *allocator; g->a = &g->al; }
            g->n_rules = p.n_rules;
            g->n_elems = p.total + 1;
            g->root = root_id;
            g->elems = (eg_elem *)ec_calloc(g->a, g->n_elems, sizeof *g->elems);
            g->rule_start = (uint32_t *)ec_calloc(g->a, p.n_rules, sizeof *g->rule_start);
            g->n_ranges = p.n_ranges;
            g->ranges = (eg_range *)ec_calloc(g->a, p.n_ranges ? p.n_ranges : 1, sizeof *g->ranges);
        }
        if (!g || !g->elems || !g->rule_start || !g->ranges) {
            ember_grammar_free(g);
            g = NULL;
            eg_nomem(&p);
        } else {
            uint32_t k = 0;
            for (uint32_t r = 0; r < p.n_rules; r++) {
                g->rule_start[r] = k;
                memcpy(g->elems + k, p.rules[r].v, (size_t)p.rules[r].n * sizeof *g->elems);
                k += p.rules[r].n;
            }
            g->elems[k] = (eg_elem){EG_END, 0, 0, 0};  /* a sentinel: a position after the last rule's end */
            if (p.n_ranges) memcpy(g->ranges, p.ranges, (size_t)p.n_ranges * sizeof *g->ranges);
            int rc = eg_expand_initial(g, allocator);
            if (rc) {
                ember_grammar_free(g);
                g = NULL;
                eg_fail_at(&p, 0, rc, rc == EMBER_ERR_NOMEM ? "out of memory"
                           : "the grammar's start expands to too many alternatives or too deep a nesting", NULL, 0);
            }
        }
    }
    for (uint32_t r = 0; r < p.n_rules; r++) ec_free(allocator, p.rules[r].v);
    ec_free(allocator, p.rules);
    ec_free(allocator, p.syms);
    ec_free(allocator, p.ranges);
    ec_free(allocator, p.named);
    if (p.rc) {
        int line, col;
        eg_line_col(p.s, p.err_pos < p.n ? p.err_pos : p.n, &line, &col);
        return ec_fail(err, (ember_status)p.rc, "grammar line %d, column %d: %s", line, col, p.msg);
    }
    *out = g;
    return ec_ok(err);
}

/* "one of these strings": root ::= "a" | "b" | ... */
ember_status ember_grammar_from_strings(const char *const *strings, int n, const ember_allocator *allocator,
                                        ember_grammar **out, ember_error *err) {
    if (out) *out = NULL;
    if (!out) return ec_fail(err, EMBER_ERR_INVALID_ARG, "out is NULL");
    if (n <= 0 || !strings) return ec_fail(err, EMBER_ERR_INVALID_ARG, "no strings given (n %d)", n);
    size_t need = 16;
    for (int i = 0; i < n; i++) {
        if (!strings[i]) return ec_fail(err, EMBER_ERR_INVALID_ARG, "string %d is NULL", i);
        need += 8 + 4 * strlen(strings[i]);
    }
    char *t = (char *)ec_malloc(allocator, need), *w = t;
    if (!t) return ec_fail(err, EMBER_ERR_NOMEM, "out of memory for the grammar's text (%zu bytes)", need);
    w += sprintf(w, "root ::=");
    for (int i = 0; i < n; i++) {
        w += sprintf(w, "%s\"", i ? " | " : " ");
        for (const unsigned char *s = (const unsigned char *)strings[i]; *s; s++) {
            if (*s == '"' || *s == '\\') { *w++ = '\\'; *w++ = (char)*s; }
            else if (*s < 0x20 || *s == 0x7F) w += sprintf(w, "\\x%02X", *s);
            else *w++ = (char)*s;
        }
        *w++ = '"';
    }
    *w++ = '\n';
    ember_status rc = ember_grammar_parse(t, (size_t)(w - t), "root", allocator, out, err);
    ec_free(allocator, t);
    return rc;
}

/* ---- matching ------------------------------------------------------------- */

/* Sets of stacks are interned: each distinct set gets an id, and the set
 * reached from set s by code point c is remembered (a table of 128 for
 * ASCII, a hash for the rest), so the walk over the vocabulary's trie costs
 * a lookup per node once the few sets a grammar visits are known.  Inside a
 * JSON string, say, reading a letter leads back to the same set: after the
 * first token, every later one is lookups only.  The cache persists across
 * tokens and is flushed when it grows past EG_CACHE_SETS sets. */
#define EG_CACHE_SETS 32768u
#define EG_UNKNOWN (-2)
#define EG_PARTIAL_KEY 0x80000000u
#define EG_MASKS 8

/* A cached mask: the tokens allowed at (set, pending bytes). */
struct eg_mask_entry { int32_t set; uint32_t pending; int count; uint32_t used; uint8_t *mask; };

struct eg_matcher {
    const ember_allocator *a;
    const ember_grammar *g;
    int n_vocab;
    /* vocabulary: token t's text is text[toff[t] .. toff[t+1]) */
    uint8_t *text;
    uint32_t *toff;
    uint8_t *is_eog;
    int32_t *eogs;
    int n_eog;
    /* the trie in depth-first order: node i's subtree is [i, i + tsize[i]),
     * its first child i + 1, the next sibling of child c is c + tsize[c] */
    uint8_t *tbyte;
    uint32_t *tsize;
    int32_t *ttok;         /* first token whose text ends at the node, or -1 */
    int32_t *tok_next;     /* further tokens with the same text */
    uint32_t n_nodes;
    /* scratch where a set is computed: stacks as [length, positions...] */
    uint32_t *ar;
    size_t ar_n, ar_cap;
    uint32_t *tmp;         /* one stack: EG_MAX_STACK + 2 positions */
    long work;
    int overflow;
    /* interned sets */
    uint32_t *sd;          /* contents */
    size_t sd_n, sd_cap;
    size_t *soff;
    uint32_t *slen;
    int32_t **ascii;       /* per set, lazily, for a byte read with nothing
                              pending: ASCII -> the next set, a lead byte ->
                              1 if some code point it starts may follow */
    uint32_t n_sets, cap_sets;
    uint32_t *stab, stab_cap;        /* content hash -> set id + 1 */
    uint64_t *tkey;                  /* (set << 32 | code) -> tval */
    int32_t *tval;
    uint32_t tcap, tn;
    /* the last masks made, by (set, pending bytes): a parse position
     * recurs often (inside a string, between JSON values) */
    struct eg_mask_entry masks[EG_MASKS];
    uint32_t mask_clock;
    long walk_budget;      /* trie nodes the current walk may still visit */
    /* the parse position */
    int32_t cur;           /* current set, -1: dead (nothing allowed) */
    uint32_t acc;          /* pending UTF-8 bytes: value so far, */
    int need, seq_len;     /* continuation bytes missing, sequence length */
    int ended;             /* an end-of-generation token was accepted */
};

static int eg_set_match(const ember_grammar *g, const eg_elem *e, uint32_t cp) {
    const eg_range *r = g->ranges + e->a;
    for (uint32_t i = 0; i < e->n; i++)
        if (cp >= r[i].lo && cp <= r[i].hi) return !e->neg;
    return e->neg;
}

/* Does set e contain some code point in [lo, hi]? */
static int eg_set_meets(const ember_grammar *g, const eg_elem *e, uint32_t lo, uint32_t hi) {
    const eg_range *r = g->ranges + e->a;
    if (!e->neg) {
        for (uint32_t i = 0; i < e->n; i++)
            if (r[i].lo <= hi && r[i].hi >= lo) return 1;
        return 0;
    }
    /* negated: some point of [lo, hi] outside every range? */
    uint32_t x = lo;
    for (;;) {
        uint32_t i;
        for (i = 0; i < e->n; i++)
            if (x >= r[i].lo && x <= r[i].hi) break;
        if (i == e->n) return 1;
        if (r[i].hi >= hi) return 0;
        x = r[i].hi + 1;
    }
}

static int eg_ar_reserve(eg_matcher *m, size_t extra) {
    if (m->ar_n + extra <= m->ar_cap) return 0;
    size_t c = m->ar_cap ? m->ar_cap : 1024;
    while (c < m->ar_n + extra) c *= 2;
    uint32_t *q = (uint32_t *)ec_realloc(m->a, m->ar, c * sizeof *q);
    if (!q) { m->overflow = 1; return -1; }
    m->ar = q;
    m->ar_cap = c;
    return 0;
}

/* Add a stack to the set that starts at set_start (unless already there). */
static void eg_emit(eg_matcher *m, size_t set_start, const uint32_t *st, uint32_t len) {
    uint32_t count = 0;
    for (size_t o = set_start; o < m->ar_n; o += 1 + m->ar[o], count++)
        if (m->ar[o] == len && memcmp(m->ar + o + 1, st, len * sizeof *st) == 0) return;
    if (count >= EG_MAX_STACKS || eg_ar_reserve(m, 1 + (size_t)len)) { m->overflow = 1; return; }
    m->ar[m->ar_n] = len;
    memcpy(m->ar + m->ar_n + 1, st, len * sizeof *st);
    m->ar_n += 1 + len;
}

/* Resolve the stack st[0..len) until its top is a character set (or it is
 * empty), adding the results to the set at set_start.  Leaves st[0..len)
 * as it found it. */
static void eg_expand(eg_matcher *m, size_t set_start, uint32_t *st, uint32_t len, int depth) {
    if (m->overflow) return;
    if (++m->work > EG_MAX_WORK || depth > (int)(2 * EG_MAX_STACK)) { m->overflow = 1; return; }
    if (len == 0) { eg_emit(m, set_start, st, 0); return; }
    const ember_grammar *g = m->g;
    uint32_t pos = st[len - 1];
    const eg_elem *e = &g->elems[pos];
    if (e->type == EG_SET) { eg_emit(m, set_start, st, len); return; }
    if (e->type != EG_REF) {   /* the alternative ended: continue below */
        eg_expand(m, set_start, st, len - 1, depth + 1);
        st[len - 1] = pos;
        return;
    }
    /* A reference as the alternative's last element needs no return
     * position (so x* and right recursion do not grow the stack). */
    int tail = g->elems[pos + 1].type <= EG_ALT;
    uint32_t base = tail ? len - 1 : len;
    if (base + 1 > EG_MAX_STACK) { m->overflow = 1; return; }
    if (!tail) st[len - 1] = pos + 1;
    for (uint32_t a = g->rule_start[e->a];;) {
        st[base] = a;
        eg_expand(m, set_start, st, base + 1, depth + 1);
        while (g->elems[a].type > EG_ALT) a++;
        if (g->elems[a].type == EG_END) break;
        a++;
    }
    st[len - 1] = pos;
}

/* The set reached from the set ar[off..end) by reading cp: appended to the
 * scratch, starting at the returned offset (empty if nothing matched). */
static size_t eg_advance(eg_matcher *m, size_t off, size_t end, uint32_t cp) {
    size_t start = m->ar_n;
    m->work = 0;
    for (size_t o = off; o < end; o += 1 + m->ar[o]) {
        uint32_t len = m->ar[o];
        if (!len) continue;
        uint32_t top = m->ar[o + len];
        if (!eg_set_match(m->g, &m->g->elems[top], cp)) continue;
        memcpy(m->tmp, m->ar + o + 1, len * sizeof *m->tmp);
        m->tmp[len - 1] = top + 1;
        eg_expand(m, start, m->tmp, len, 0);
    }
    return start;
}

/* Could some stack of ar[off..end) read a code point that starts with the
 * pending bytes (value acc, need more bytes, of a seq_len-byte sequence)? */
static int eg_partial_ok(const eg_matcher *m, size_t off, size_t end, uint32_t acc, int need, int seq_len) {
    uint32_t lo = acc << (6 * need), hi = lo | ((1u << (6 * need)) - 1);
    uint32_t min = seq_len == 2 ? 0x80 : seq_len == 3 ? 0x800 : 0x10000;
    if (lo < min) lo = min;
    if (hi > 0x10FFFF) hi = 0x10FFFF;
    if (lo > hi) return 0;
    for (size_t o = off; o < end; o += 1 + m->ar[o])
        if (m->ar[o] && eg_set_meets(m->g, &m->g->elems[m->ar[o + m->ar[o]]], lo, hi)) return 1;
    return 0;
}

/* One byte of UTF-8 against the pending state: returns 1 and sets *cp when
 * a code point completes, 0 when more bytes are needed, -1 if invalid. */
static int eg_utf8_step(uint8_t b, uint32_t *acc, int *need, int *seq_len, uint32_t *cp) {
    if (*need == 0) {
        if (b < 0x80) { *cp = b; return 1; }
        if (b >= 0xC2 && b <= 0xDF) { *acc = b & 0x1F; *need = 1; *seq_len = 2; return 0; }
        if ((b & 0xF0) == 0xE0) { *acc = b & 0x0F; *need = 2; *seq_len = 3; return 0; }
        if (b >= 0xF0 && b <= 0xF4) { *acc = b & 0x07; *need = 3; *seq_len = 4; return 0; }
        return -1;
    }
    if ((b & 0xC0) != 0x80) return -1;
    *acc = *acc << 6 | (b & 0x3F);
    if (--*need) {
        /* reject overlong and surrogate prefixes as soon as they show */
        if (*seq_len == 3 && *need == 1 && (*acc < 0x20 || (*acc >= 0x360 && *acc <= 0x37F))) return -1;
        if (*seq_len == 4 && *need == 2 && (*acc < 0x10 || *acc > 0x10F)) return -1;
        return 0;
    }
    *cp = *acc;
    if ((*seq_len == 3 && (*cp < 0x800 || (*cp >= 0xD800 && *cp <= 0xDFFF))) || (*seq_len == 4 && (*cp < 0x10000 || *cp > 0x10FFFF)))
        return -1;
    return 1;
}

/* ---- the set cache ---- */

static uint32_t eg_hash_words(const uint32_t *w, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= w[i]; h *= 16777619u; h ^= h >> 15; }
    return h;
}
static uint32_t eg_hash_key(uint64_t k) {
    k ^= k >> 33; k *= 0xff51afd7ed558ccdull; k ^= k >> 33;
    return (uint32_t)k;
}

static void eg_cache_clear(eg_matcher *m) {
    for (int i = 0; i < EG_MASKS; i++) m->masks[i].set = -1;
    for (uint32_t i = 0; i < m->n_sets; i++) ec_free(m->a, m->ascii[i]);
    m->n_sets = 0;
    m->sd_n = 0;
    m->tn = 0;
    if (m->stab) memset(m->stab, 0, m->stab_cap * sizeof *m->stab);
    if (m->tkey) memset(m->tkey, 0xFF, m->tcap * sizeof *m->tkey);
}

/* The id of the set with these contents (n words), added if new; -1 for
 * the empty set or when memory runs out (then overflow is set). */
static int32_t eg_intern(eg_matcher *m, const uint32_t *w, size_t n) {
    if (n == 0) return -1;
    if (m->n_sets + 1 > m->stab_cap / 2) {   /* grow the hash to keep it half empty */
        uint32_t cap = m->stab_cap ? m->stab_cap * 2 : 1024;
        uint32_t *t = (uint32_t *)ec_calloc(m->a, cap, sizeof *t);
        if (!t) { m->overflow = 1; return -1; }
        for (uint32_t i = 0; i < m->n_sets; i++) {
            uint32_t h = eg_hash_words(m->sd + m->soff[i], m->slen[i]) & (cap - 1);
            while (t[h]) h = (h + 1) & (cap - 1);
            t[h] = i + 1;
        }
        ec_free(m->a, m->stab);
        m->stab = t;
        m->stab_cap = cap;
    }
    uint32_t h = eg_hash_words(w, n) & (m->stab_cap - 1);
    for (; m->stab[h]; h = (h + 1) & (m->stab_cap - 1)) {
        uint32_t id = m->stab[h] - 1;
        if (m->slen[id] == n && memcmp(m->sd + m->soff[id], w, n * sizeof *w) == 0) return (int32_t)id;
    }
    if (m->n_sets + 1 > m->cap_sets) {
        uint32_t cap = m->cap_sets ? m->cap_sets * 2 : 256;
        size_t *so = (size_t *)ec_realloc(m->a, m->soff, (size_t)cap * sizeof *so);
        if (so) m->soff = so;
        uint32_t *sl = so ? (uint32_t *)ec_realloc(m->a, m->slen, (size_t)cap * sizeof *sl) : NULL;
        if (sl) m->slen = sl;
        int32_t **as = sl ? (int32_t **)ec_realloc(m->a, m->ascii, (size_t)cap * sizeof *as) : NULL;
        if (!as) { m->overflow = 1; return -1; }
        m->ascii = as;
        m->cap_sets = cap;
    }
    if (m->sd_n + n > m->sd_cap) {
        size_t c = m->sd_cap ? m->sd_cap : 4096;
        while (c < m->sd_n + n) c *= 2;
        uint32_t *q = (uint32_t *)ec_realloc(m->a, m->sd, c * sizeof *q);
        if (!q) { m->overflow = 1; return -1; }
        m->sd = q;
        m->sd_cap = c;
    }
    uint32_t id = m->n_sets++;
    m->soff[id] = m->sd_n;
    m->slen[id] = (uint32_t)n;
    m->ascii[id] = NULL;
    memcpy(m->sd + m->sd_n, w, n * sizeof *w);
    m->sd_n += n;
    m->stab[h] = id + 1;
    return (int32_t)id;
}

static int32_t *eg_tr_slot(eg_matcher *m, uint64_t key, int *found) {
    if (m->tn + 1 > m->tcap / 2) {
        uint32_t cap = m->tcap ? m->tcap * 2 : 4096;
        uint64_t *k = (uint64_t *)ec_malloc(m->a, (size_t)cap * sizeof *k);
        int32_t *v = (int32_t *)ec_malloc(m->a, (size_t)cap * sizeof *v);
        if (!k || !v) { ec_free(m->a, k); ec_free(m->a, v); m->overflow = 1; return NULL; }
        memset(k, 0xFF, (size_t)cap * sizeof *k);
        for (uint32_t i = 0; i < m->tcap; i++) {
            if (m->tkey[i] == UINT64_MAX) continue;
            uint32_t h = eg_hash_key(m->tkey[i]) & (cap - 1);
            while (k[h] != UINT64_MAX) h = (h + 1) & (cap - 1);
            k[h] = m->tkey[i];
            v[h] = m->tval[i];
        }
        ec_free(m->a, m->tkey);
        ec_free(m->a, m->tval);
        m->tkey = k;
        m->tval = v;
        m->tcap = cap;
    }
    uint32_t h = eg_hash_key(key) & (m->tcap - 1);
    while (m->tkey[h] != UINT64_MAX && m->tkey[h] != key) h = (h + 1) & (m->tcap - 1);
    *found = m->tkey[h] == key;
    if (!*found) { m->tkey[h] = key; m->tn++; }
    return &m->tval[h];
}

/* Copy set s into the scratch: returns its end. */
static size_t eg_load(eg_matcher *m, int32_t s) {
    m->ar_n = 0;
    if (eg_ar_reserve(m, m->slen[s])) return 0;
    memcpy(m->ar, m->sd + m->soff[s], m->slen[s] * sizeof *m->ar);
    m->ar_n = m->slen[s];
    return m->ar_n;
}

static int32_t eg_compute(eg_matcher *m, int32_t s, uint32_t cp) {
    size_t end = eg_load(m, s);
    if (m->overflow) return -1;
    size_t start = eg_advance(m, 0, end, cp);
    if (m->overflow) return -1;
    return eg_intern(m, m->ar + start, m->ar_n - start);
}

static int eg_partial(eg_matcher *m, int32_t s, uint32_t acc, int need, int seq_len);

/* The set reached from set s by cp depends only on which stacks' top sets
 * match cp: that signature (for sets of up to 24 waiting stacks) is looked
 * up before anything is computed, so the thousands of distinct characters
 * of a vocabulary cost one computation per distinct outcome. */
#define EG_SIG_KEY 0x40000000u
static int32_t eg_transition(eg_matcher *m, int32_t s, uint32_t cp) {
    const uint32_t *w = m->sd + m->soff[s];
    uint32_t sig = 0;
    int k = 0;
    for (uint32_t o = 0; o < m->slen[s]; o += 1 + w[o]) {
        if (!w[o]) continue;
        if (k == 24) return eg_compute(m, s, cp);
        if (eg_set_match(m->g, &m->g->elems[w[o + w[o]]], cp)) sig |= 1u << k;
        k++;
    }
    if (!sig) return -1;
    uint64_t key = (uint64_t)(uint32_t)s << 32 | EG_SIG_KEY | sig;
    int found;
    int32_t *slot = eg_tr_slot(m, key, &found);
    if (!slot) return -1;
    if (found) return *slot;
    int32_t r = eg_compute(m, s, cp);
    slot = eg_tr_slot(m, key, &found);   /* the table may have grown */
    if (!slot) return -1;
    *slot = m->overflow ? -1 : r;
    return *slot;
}

static int32_t *eg_byte_table(eg_matcher *m, int32_t s) {
    int32_t *t = m->ascii[s];
    if (!t) {
        t = m->ascii[s] = (int32_t *)ec_malloc(m->a, 256 * sizeof *t);
        if (!t) { m->overflow = 1; return NULL; }
        for (int i = 0; i < 256; i++) t[i] = i < 0x80 || (i >= 0xC2 && i <= 0xF4) ? EG_UNKNOWN : -1;
    }
    return t;
}

/* For byte b read from set s with nothing pending: the next set (ASCII), or
 * 1 / -1 whether a character that b starts may follow (a lead byte). */
static int32_t eg_first_byte(eg_matcher *m, int32_t s, uint8_t b) {
    int32_t *t = eg_byte_table(m, s);
    if (!t) return -1;
    if (t[b] != EG_UNKNOWN) return t[b];
    int32_t r;
    if (b < 0x80) {
        r = eg_transition(m, s, b);
    } else {
        uint32_t acc = 0, cp;
        int need = 0, seq_len = 0;
        eg_utf8_step(b, &acc, &need, &seq_len, &cp);
        r = eg_partial(m, s, acc, need, seq_len) ? 1 : -1;
    }
    m->ascii[s][b] = m->overflow ? -1 : r;   /* the table of pointers may have moved */
    return m->ascii[s][b];
}

/* The set reached from set s by reading cp (-1: none). */
static int32_t eg_next(eg_matcher *m, int32_t s, uint32_t cp) {
    if (cp < 128) {
        int32_t *t = eg_byte_table(m, s);
        if (!t) return -1;
        return t[cp] != EG_UNKNOWN ? t[cp] : eg_first_byte(m, s, (uint8_t)cp);
    }
    int found;
    int32_t *slot = eg_tr_slot(m, (uint64_t)(uint32_t)s << 32 | cp, &found);
    if (!slot) return -1;
    if (found) return *slot;
    uint64_t key = (uint64_t)(uint32_t)s << 32 | cp;
    int32_t r = eg_transition(m, s, cp);
    /* the table may have grown while computing: look the slot up again */
    slot = eg_tr_slot(m, key, &found);
    if (!slot) return -1;
    *slot = m->overflow ? -1 : r;
    return *slot;
}

/* Could set s read a code point starting with the pending bytes? */
static int eg_partial(eg_matcher *m, int32_t s, uint32_t acc, int need, int seq_len) {
    uint64_t key = (uint64_t)(uint32_t)s << 32 | EG_PARTIAL_KEY | acc << 4 | (uint32_t)need << 2 | (uint32_t)(seq_len - 2);
    int found;
    int32_t *slot = eg_tr_slot(m, key, &found);
    if (!slot) return 0;
    if (found) return *slot;
    size_t end = eg_load(m, s);
    int ok = !m->overflow && eg_partial_ok(m, 0, end, acc, need, seq_len);
    slot = eg_tr_slot(m, key, &found);   /* (the table does not grow in between, but stay safe) */
    if (!slot) return 0;
    *slot = ok;
    return ok;
}

static int eg_set_accepting(const eg_matcher *m, int32_t s) {
    const uint32_t *w = m->sd + m->soff[s];
    for (uint32_t o = 0; o < m->slen[s]; o += 1 + w[o])
        if (w[o] == 0) return 1;
    return 0;
}

/* The root rule's alternatives, expanded into the scratch. */
static void eg_initial(eg_matcher *m) {
    const ember_grammar *g = m->g;
    m->ar_n = 0;
    m->work = 0;
    for (uint32_t a = g->rule_start[g->root];;) {
        m->tmp[0] = a;
        eg_expand(m, 0, m->tmp, 1, 0);
        while (g->elems[a].type > EG_ALT) a++;
        if (g->elems[a].type == EG_END) break;
        a++;
    }
}

/* Flush the cache when it has grown large, keeping the current set. */
static void eg_cache_check(eg_matcher *m) {
    if (m->n_sets < EG_CACHE_SETS && m->tn < 8 * EG_CACHE_SETS) return;
    if (m->cur >= 0) eg_load(m, m->cur);
    else m->ar_n = 0;
    eg_cache_clear(m);
    if (m->cur >= 0) m->cur = eg_intern(m, m->ar, m->ar_n);
}

/* Read n bytes from set s with the pending UTF-8 state: the set reached
 * (-1: the bytes are not allowed). */
static int32_t eg_read(eg_matcher *m, int32_t s, const uint8_t *b, size_t n, uint32_t *acc, int *need, int *seq_len) {
    for (size_t i = 0; i < n && s >= 0; i++) {
        uint32_t cp;
        int r = eg_utf8_step(b[i], acc, need, seq_len, &cp);
        if (r < 0) return -1;
        if (r == 0) { if (!eg_partial(m, s, *acc, *need, *seq_len)) return -1; continue; }
        s = eg_next(m, s, cp);
    }
    return s;
}

static int eg_accepting(const eg_matcher *m) {
    return m->cur >= 0 && !m->ended && !m->need && eg_set_accepting(m, m->cur);
}

int eg_matcher_complete(const eg_matcher *m) {
    return eg_accepting(m) && m->slen[m->cur] == 1;   /* the one stack is the empty one */
}

int eg_matcher_allows(eg_matcher *m, int32_t t) {
    if (m->cur < 0 || m->ended || t < 0 || t >= m->n_vocab) return 0;
    if (m->is_eog[t]) return eg_accepting(m);
    uint32_t n = m->toff[t + 1] - m->toff[t];
    if (!n) return 0;
    eg_cache_check(m);
    uint32_t acc = m->acc;
    int need = m->need, seq_len = m->seq_len;
    return eg_read(m, m->cur, m->text + m->toff[t], n, &acc, &need, &seq_len) >= 0 && !m->overflow;
}

static void eg_mark(const eg_matcher *m, uint32_t node, uint8_t *allowed, int *count) {
    for (int32_t t = m->ttok[node]; t >= 0; t = m->tok_next[t]) { allowed[t] = 1; (*count)++; }
}

/* Depth-first over the children of node from set s and the pending UTF-8
 * state: a child whose byte no stack can read is skipped with its whole
 * subtree. */
static void eg_walk(eg_matcher *m, uint32_t node, int32_t s, uint32_t acc, int need, int seq_len, uint8_t *allowed,
                    int *count) {
    const uint32_t end = node + m->tsize[node];
    for (uint32_t c = node + 1; c < end && !m->overflow; c += m->tsize[c]) {
        if (--m->walk_budget < 0) return;
        uint8_t b = m->tbyte[c];
        if (need == 0) {   /* a byte that starts a character: one table lookup */
            int32_t *t = m->ascii[s];
            int32_t r = t && t[b] != EG_UNKNOWN ? t[b] : eg_first_byte(m, s, b);
            if (r < 0) continue;
            eg_mark(m, c, allowed, count);
            if (m->tsize[c] <= 1) continue;
            if (b < 0x80) {
                eg_walk(m, c, r, 0, 0, 0, allowed, count);
            } else {
                uint32_t a2 = 0, cp;
                int n2 = 0, l2 = 0;
                eg_utf8_step(b, &a2, &n2, &l2, &cp);
                eg_walk(m, c, s, a2, n2, l2, allowed, count);
            }
            continue;
        }
        uint32_t a2 = acc, cp;
        int n2 = need, l2 = seq_len;
        int r = eg_utf8_step(b, &a2, &n2, &l2, &cp);
        if (r < 0) continue;
        int32_t ns = s;
        if (r == 0) {
            /* the middle of a character: checked here only if a token ends
             * here (the subtree is checked when the character completes) */
            if (m->ttok[c] >= 0 && !eg_partial(m, s, a2, n2, l2)) {
                if (m->tsize[c] > 1) eg_walk(m, c, ns, a2, n2, l2, allowed, count);
                continue;
            }
            eg_mark(m, c, allowed, count);
        } else {
            ns = eg_next(m, s, cp);
            if (ns < 0) continue;
            eg_mark(m, c, allowed, count);
        }
        if (m->tsize[c] > 1) eg_walk(m, c, ns, a2, n2, l2, allowed, count);
    }
}

int eg_matcher_mask(eg_matcher *m, uint8_t *allowed) { return eg_matcher_mask_within(m, allowed, -1); }

int eg_matcher_mask_within(eg_matcher *m, uint8_t *allowed, long max_nodes) {
    if (m->cur < 0 || m->ended) { memset(allowed, 0, (size_t)m->n_vocab); return 0; }
    eg_cache_check(m);
    const uint32_t pending = m->acc << 4 | (uint32_t)m->need << 2 | (uint32_t)(m->seq_len ? m->seq_len - 2 : 0);
    struct eg_mask_entry *e = NULL;   /* the slot to fill: an empty one, else the least recently used */
    uint32_t e_score = UINT32_MAX;
    for (int i = 0; i < EG_MASKS; i++) {
        struct eg_mask_entry *x = &m->masks[i];
        int valid = x->mask && x->set >= 0;
        if (valid && x->set == m->cur && x->pending == pending) {
            x->used = ++m->mask_clock;
            memcpy(allowed, x->mask, (size_t)m->n_vocab);
            return x->count;
        }
        uint32_t score = valid ? x->used : 0;
        if (score < e_score || !e) { e = x; e_score = score; }
    }
    memset(allowed, 0, (size_t)m->n_vocab);
    int count = 0;
    m->walk_budget = max_nodes < 0 ? (long)m->n_nodes + 1 : max_nodes;
    eg_walk(m, 0, m->cur, m->acc, m->need, m->seq_len, allowed, &count);
    if (m->overflow) return EMBER_ERR_NOMEM;
    if (m->walk_budget < 0) return EG_MASK_UNFINISHED;
    if (eg_accepting(m))
        for (int i = 0; i < m->n_eog; i++) { allowed[m->eogs[i]] = 1; count++; }
    if (!e->mask) e->mask = (uint8_t *)ec_malloc(m->a, (size_t)m->n_vocab);
    if (e->mask) {   /* no memory for the cache: just no caching */
        memcpy(e->mask, allowed, (size_t)m->n_vocab);
        e->set = m->cur;
        e->pending = pending;
        e->count = count;
        e->used = ++m->mask_clock;
    }
    return count;
}

void eg_matcher_accept(eg_matcher *m, int32_t t) {
    if (m->cur < 0 || m->ended || t < 0 || t >= m->n_vocab) { m->cur = -1; return; }
    if (m->is_eog[t]) {
        if (eg_accepting(m)) m->ended = 1;
        else m->cur = -1;
        return;
    }
    uint32_t n = m->toff[t + 1] - m->toff[t];
    eg_cache_check(m);
    m->cur = n ? eg_read(m, m->cur, m->text + m->toff[t], n, &m->acc, &m->need, &m->seq_len) : -1;
}

void eg_matcher_reset(eg_matcher *m) {
    m->acc = 0;
    m->need = m->seq_len = 0;
    m->ended = 0;
    if (m->overflow) eg_cache_clear(m);   /* it may hold "nothing" for transitions cut short */
    m->overflow = 0;
    eg_cache_check(m);
    eg_initial(m);
    m->cur = m->overflow ? -1 : eg_intern(m, m->ar, m->ar_n);
}

void eg_matcher_set_grammar(eg_matcher *m, const ember_grammar *g) {
    m->g = g;
    eg_cache_clear(m);
    eg_matcher_reset(m);
}

/* A matcher with no vocabulary, for a whole text (or the parse-time check
 * that the start expands within limits). */
static void eg_matcher_release(eg_matcher *m) {
    eg_cache_clear(m);
    for (int i = 0; i < EG_MASKS; i++) ec_free(m->a, m->masks[i].mask);
    ec_free(m->a, m->ar);
    ec_free(m->a, m->tmp);
    ec_free(m->a, m->sd);
    ec_free(m->a, m->soff);
    ec_free(m->a, m->slen);
    ec_free(m->a, m->ascii);
    ec_free(m->a, m->stab);
    ec_free(m->a, m->tkey);
    ec_free(m->a, m->tval);
}

static int eg_bare_matcher(eg_matcher *m, const ember_grammar *g, const ember_allocator *a) {
    memset(m, 0, sizeof *m);
    m->a = a;
    m->g = g;
    m->tmp = (uint32_t *)ec_malloc(a, (EG_MAX_STACK + 2) * sizeof *m->tmp);
    if (!m->tmp) return EMBER_ERR_NOMEM;
    eg_matcher_reset(m);
    return EMBER_OK;
}

static int eg_expand_initial(const ember_grammar *g, const ember_allocator *a) {
    eg_matcher m;
    int rc = eg_bare_matcher(&m, g, a);
    if (rc == EMBER_OK && m.overflow) rc = EMBER_ERR_INVALID_ARG;
    eg_matcher_release(&m);
    return rc;
}

ember_status ember_grammar_accepts(const ember_grammar *g, const char *text, size_t len, int *accepted) {
    if (accepted) *accepted = 0;
    if (!g || (!text && len) || !accepted) return EMBER_ERR_INVALID_ARG;
    eg_matcher m;
    int rc = eg_bare_matcher(&m, g, g->a);
    if (rc == EMBER_OK) {
        int32_t s = m.cur >= 0 ? eg_read(&m, m.cur, (const uint8_t *)text, len, &m.acc, &m.need, &m.seq_len) : -1;
        if (m.overflow) rc = EMBER_ERR_NOMEM;
        else *accepted = s >= 0 && !m.need && eg_set_accepting(&m, s);
    }
    eg_matcher_release(&m);
    return (ember_status)rc;
}

/* ---- the vocabulary side -------------------------------------------------- */

/* Token ids ordered by their texts (bytewise, a prefix first): a merge
 * sort, since qsort has no context argument. */
static int eg_text_less(const eg_matcher *m, int32_t x, int32_t y) {
    uint32_t nx = m->toff[x + 1] - m->toff[x], ny = m->toff[y + 1] - m->toff[y];
    int c = memcmp(m->text + m->toff[x], m->text + m->toff[y], nx < ny ? nx : ny);
    return c < 0 || (c == 0 && nx < ny);
}

static void eg_sort_tokens(const eg_matcher *m, int32_t *ids, int32_t *tmp, uint32_t n) {
    for (uint32_t w = 1; w < n; w *= 2) {
        for (uint32_t lo = 0; lo < n; lo += 2 * w) {
            uint32_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, i = lo, j = mid, k = lo;
            while (i < mid && j < hi) tmp[k++] = eg_text_less(m, ids[j], ids[i]) ? ids[j++] : ids[i++];
            while (i < mid) tmp[k++] = ids[i++];
            while (j < hi) tmp[k++] = ids[j++];
        }
        memcpy(ids, tmp, n * sizeof *ids);
    }
}

/* The trie in depth-first order, from the tokens sorted by text: each
 * token shares the path of its common prefix with the previous one. */
static int eg_build_trie(eg_matcher *m) {
    const int V = m->n_vocab;
    int32_t *ids = (int32_t *)ec_malloc(m->a, (size_t)V * sizeof *ids), *tmp = (int32_t *)ec_malloc(m->a, (size_t)V * sizeof *tmp);
    uint32_t max_nodes = m->toff[V] + 1, max_len = 0, n = 0;
    m->tbyte = (uint8_t *)ec_malloc(m->a, max_nodes);
    m->tsize = (uint32_t *)ec_malloc(m->a, (size_t)max_nodes * sizeof *m->tsize);
    m->ttok = (int32_t *)ec_malloc(m->a, (size_t)max_nodes * sizeof *m->ttok);
    int rc = EMBER_ERR_NOMEM;
    uint32_t *path = NULL;
    uint32_t depth = 0;
    int32_t prev = -1;
    if (!ids || !tmp || !m->tbyte || !m->tsize || !m->ttok) goto done;
    for (int t = 0; t < V; t++) {
        uint32_t len = m->toff[t + 1] - m->toff[t];
        m->tok_next[t] = -1;
        if (len) ids[n++] = t;
        if (len > max_len) max_len = len;
    }
    eg_sort_tokens(m, ids, tmp, n);
    path = (uint32_t *)ec_malloc(m->a, ((size_t)max_len + 1) * sizeof *path);
    if (!path) goto done;
    m->n_nodes = 1;
    m->tbyte[0] = 0;
    m->ttok[0] = -1;
    path[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        int32_t t = ids[i];
        const uint8_t *s = m->text + m->toff[t];
        uint32_t len = m->toff[t + 1] - m->toff[t], lcp = 0;
        if (prev >= 0) {
            const uint8_t *p = m->text + m->toff[prev];
            while (lcp < depth && lcp < len && p[lcp] == s[lcp]) lcp++;
        }
        for (; depth > lcp; depth--) m->tsize[path[depth]] = m->n_nodes - path[depth];
        for (; depth < len; depth++) {
            uint32_t k = m->n_nodes++;
            m->tbyte[k] = s[depth];
            m->ttok[k] = -1;
            path[depth + 1] = k;
        }
        m->tok_next[t] = m->ttok[path[depth]];
        m->ttok[path[depth]] = t;
        prev = t;
    }
    for (; depth > 0; depth--) m->tsize[path[depth]] = m->n_nodes - path[depth];
    m->tsize[0] = m->n_nodes;
    rc = EMBER_OK;
done:
    ec_free(m->a, ids);
    ec_free(m->a, tmp);
    ec_free(m->a, path);
    return rc;
}

void eg_matcher_free(eg_matcher *m) {
    if (!m) return;
    eg_matcher_release(m);
    ec_free(m->a, m->text);
    ec_free(m->a, m->toff);
    ec_free(m->a, m->is_eog);
    ec_free(m->a, m->eogs);
    ec_free(m->a, m->tbyte);
    ec_free(m->a, m->tsize);
    ec_free(m->a, m->ttok);
    ec_free(m->a, m->tok_next);
    ec_free(m->a, m);
}

int eg_matcher_create(const ember_grammar *g, const ember_model *model, const ember_allocator *a, eg_matcher **out) {
    *out = NULL;
    eg_matcher *m = (eg_matcher *)ec_calloc(a, 1, sizeof *m);
    if (!m) return EMBER_ERR_NOMEM;
    m->a = a;
    m->g = g;
    const int V = m->n_vocab = ember_n_vocab(model);
    m->toff = (uint32_t *)ec_calloc(a, (size_t)V + 1, sizeof *m->toff);
    m->is_eog = (uint8_t *)ec_calloc(a, (size_t)V, 1);
    m->tok_next = (int32_t *)ec_calloc(a, (size_t)V, sizeof *m->tok_next);
    m->tmp = (uint32_t *)ec_malloc(a, (EG_MAX_STACK + 2) * sizeof *m->tmp);
    uint32_t text_cap = 0, used = 0;
    int rc = EMBER_ERR_NOMEM;
    if (!m->toff || !m->is_eog || !m->tok_next || !m->tmp) goto fail;
    /* Token texts as they read in the middle of a text (prev = the token
     * itself: not -1 or BOS, so SentencePiece keeps a leading space). */
    for (int t = 0; t < V; t++) {
        m->toff[t] = used;
        if (ember_token_is_eog(model, t)) {
            m->is_eog[t] = 1;
            m->n_eog++;
            continue;
        }
        /* room for the piece's NUL too (overwritten by the next piece) */
        if (eg_grow(a, (void **)&m->text, &text_cap, used + 257, 1)) goto fail;
        size_t n = 0;
        ember_status st = ember_token_to_piece(model, t, t, 0, (char *)m->text + used, 257, &n, NULL);
        if (st == EMBER_ERR_BUFFER_TOO_SMALL) {
            if (n > UINT32_MAX - 1 - used || eg_grow(a, (void **)&m->text, &text_cap, used + (uint32_t)n + 1, 1))
                goto fail;
            st = ember_token_to_piece(model, t, t, 0, (char *)m->text + used, n + 1, &n, NULL);
        }
        if (st != EMBER_OK) { rc = st; goto fail; }
        used += (uint32_t)n;
    }
    m->toff[V] = used;
    m->eogs = (int32_t *)ec_calloc(a, (size_t)(m->n_eog ? m->n_eog : 1), sizeof *m->eogs);
    if (!m->eogs) goto fail;
    for (int t = 0, k = 0; t < V; t++)
        if (m->is_eog[t]) m->eogs[k++] = t;
    if ((rc = eg_build_trie(m)) != EMBER_OK) goto fail;
    eg_matcher_reset(m);
    if (m->overflow) { rc = EMBER_ERR_NOMEM; goto fail; }
    *out = m;
    return EMBER_OK;
fail:
    eg_matcher_free(m);
    return rc;
}

int32_t eg_matcher_eog(const eg_matcher *m, const float *logits) {
    int32_t best = -1;
    for (int i = 0; i < m->n_eog; i++)
        if (best < 0 || (logits && logits[m->eogs[i]] > logits[best])) best = m->eogs[i];
    return best;
}
