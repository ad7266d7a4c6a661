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
    for (uint32_t i = 0; i < p->n_rules; i++)
        if (!p->syms[i].generated && p->syms[i].len == len && memcmp(p->syms[i].name, name, len) == 0) return i;
    return eg_rule_new(p, name, len, 0, 0);
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

static int eg_set_empty(const eg_parser *p, const eg_elem *e) { return !e->neg && e->n == 0; }

static int eg_productive_alt(const eg_parser *p, const eg_seq *q, uint32_t i, const uint8_t *prod) {
    for (; q->v[i].type > EG_ALT; i++)
        if (q->v[i].type == EG_SET ? eg_set_empty(p, &q->v[i]) : !prod[q->v[i].a]) return 0;
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
                if (productive ? eg_productive_alt(p, q, i, flag) : eg_nullable_alt(q, i, flag)) { flag[r] = 1; changed = 1; break; }
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
    uint8_t *color = ec_calloc(p->a, n, 1);
    uint32_t *st_rule = ec_calloc(p->a, n, sizeof *st_rule), *st_idx = ec_calloc(p->a, n, sizeof *st_idx);
    if (!color || !st_rule || !st_idx) { eg_nomem(p); goto done; }
    for (uint32_t start = 0; start < n && !p->rc; start++) {
        if (color[start]) continue;
        uint32_t sp = 0;
        st_rule[0] = start; st_idx[0] = 0; color[start] = 1;
        while (sp != UINT32_MAX && !p->rc) {
            uint32_t r = st_rule[sp];
            const eg_seq *q = &p->rules[r];
            /* next left-reachable reference of r from element st_idx[sp] */
            uint32_t i = st_idx[sp], next = UINT32_MAX;
            while (i < q->n) {
                const eg_elem *e = &q->v[i];
                if (e->type == EG_REF) {
                    /* left position if every earlier element of the alternative is nullable */
                    uint32_t j = i;
                    while (j > 0 && q->v[j - 1].type > EG_ALT) j--;
                    int left = 1;
                    for (uint32_t k = j; k < i; k++)
                        if (q->v[k].type == EG_SET || !nullable[q->v[k].a]) { left = 0; break; }
                    i++;
                    if (left) { next = e->a; break; }
                } else {
                    i++;
                }
            }
            st_idx[sp] = i;
            if (next == UINT32_MAX) { color[r] = 2; sp = sp ? sp - 1 : UINT32_MAX; continue; }
            if (color[next] == 1) {
                uint32_t top = next;
                while (p->syms[top].generated) top = p->syms[top].parent;
                eg_fail_at(p, p->syms[top].use_pos, EMBER_ERR_INVALID_ARG,
                           "left recursion: rule '%s' can reach itself before reading a character", p->syms[top].name, p->syms[top].len);
                break;
            }
            if (color[next] == 0) { color[next] = 1; sp++; st_rule[sp] = next; st_idx[sp] = 0; }
        }
    }
done:
    ec_free(p->a, color);
    ec_free(p->a, st_rule);
    ec_free(p->a, st_idx);
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

int ember_grammar_parse(const char *text, size_t len, const char *root, const ember_allocator *allocator,
                        ember_grammar **out, ember_error *err) {
    if (err) { err->code = 0; err->message[0] = 0; }
    if (!out || (!text && len)) {
        if (err) err->code = ec_errorf(err->message, sizeof err->message, EMBER_ERR_INVALID_ARG, "invalid argument");
        return EMBER_ERR_INVALID_ARG;
    }
    *out = NULL;
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
    uint8_t *flag = p.rc ? NULL : ec_calloc(allocator, p.n_rules, 1);
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
        g = ec_calloc(allocator, 1, sizeof *g);
        if (g) {
            if (allocator) { g->al = *allocator; g->a = &g->al; }
            g->n_rules = p.n_rules;
            g->n_elems = p.total + 1;
            g->root = root_id;
            g->elems = ec_calloc(g->a, g->n_elems, sizeof *g->elems);
            g->rule_start = ec_calloc(g->a, p.n_rules, sizeof *g->rule_start);
            g->n_ranges = p.n_ranges;
            g->ranges = ec_calloc(g->a, p.n_ranges ? p.n_ranges : 1, sizeof *g->ranges);
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
    if (p.rc) {
        if (err) {
            int line, col;
            eg_line_col(p.s, p.err_pos < p.n ? p.err_pos : p.n, &line, &col);
            err->code = ec_errorf(err->message, sizeof err->message, p.rc, "grammar line %d, column %d: %s", line, col, p.msg);
        }
        return p.rc;
    }
    *out = g;
    return EMBER_OK;
}

/* "one of these strings": root ::= "a" | "b" | ... */
int ember_grammar_from_strings(const char *const *strings, int n, const ember_allocator *allocator,
                               ember_grammar **out, ember_error *err) {
    if (err) { err->code = 0; err->message[0] = 0; }
    if (out) *out = NULL;
    if (!out || n <= 0 || !strings) {
        if (err) err->code = ec_errorf(err->message, sizeof err->message, EMBER_ERR_INVALID_ARG, "no strings given");
        return EMBER_ERR_INVALID_ARG;
    }
    size_t need = 16;
    for (int i = 0; i < n; i++) {
        if (!strings[i]) {
            if (err) err->code = ec_errorf(err->message, sizeof err->message, EMBER_ERR_INVALID_ARG, "string %d is NULL", i);
            return EMBER_ERR_INVALID_ARG;
        }
        need += 8 + 4 * strlen(strings[i]);
    }
    char *t = ec_malloc(allocator, need), *w = t;
    if (!t) {
        if (err) err->code = ec_errorf(err->message, sizeof err->message, EMBER_ERR_NOMEM, "out of memory");
        return EMBER_ERR_NOMEM;
    }
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
    int rc = ember_grammar_parse(t, (size_t)(w - t), "root", allocator, out, err);
    ec_free(allocator, t);
    return rc;
}

/* ---- matching ------------------------------------------------------------- */

typedef struct eg_node {
    uint32_t child, sibling;   /* first child, next sibling (0 = none: node 0 is the root) */
    int32_t tok;               /* first token whose text ends here (-1: none); more via tok_next */
    uint8_t byte;
} eg_node;

struct eg_matcher {
    const ember_allocator *a;
    const ember_grammar *g;
    int n_vocab;
    /* vocabulary */
    uint8_t *text;
    uint32_t *toff;        /* token t: text[toff[t] .. toff[t+1]) */
    uint8_t *is_eog;
    int32_t *eogs;
    int n_eog;
    eg_node *nodes;
    uint32_t n_nodes;
    int32_t *tok_next;
    /* state: the current set of stacks is ar[0 .. cur_end) (each stack: its
     * length, then positions bottom to top); sets made while matching follow */
    uint32_t *ar;
    size_t ar_n, ar_cap, cur_end;
    uint32_t acc;           /* pending UTF-8 bytes: value so far, */
    int need, seq_len;      /* continuation bytes missing, sequence length */
    int dead, ended, overflow;
    long work;
    uint32_t *tmp;          /* EG_MAX_STACK + 2 positions */
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
    uint32_t *q = ec_realloc(m->a, m->ar, c * sizeof *q);
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
 * arena, starting at the returned offset (empty if nothing matched). */
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

/* Read n bytes from the set ar[off..end) and pending state; on success the
 * resulting set is ar[*out_off .. ar_n) and the pending state is updated. */
static int eg_read(eg_matcher *m, const uint8_t *s, size_t n, size_t off, size_t end, size_t *out_off, uint32_t *acc,
                   int *need, int *seq_len) {
    for (size_t i = 0; i < n; i++) {
        uint32_t cp;
        int r = eg_utf8_step(s[i], acc, need, seq_len, &cp);
        if (r < 0) return 0;
        if (r == 0) {
            if (!eg_partial_ok(m, off, end, *acc, *need, *seq_len)) return 0;
            continue;
        }
        size_t start = eg_advance(m, off, end, cp);
        if (m->overflow || start == m->ar_n) return 0;
        off = start;
        end = m->ar_n;
    }
    *out_off = off;
    return 1;
}

static int eg_accepting(const eg_matcher *m) {
    if (m->dead || m->ended || m->need) return 0;
    for (size_t o = 0; o < m->cur_end; o += 1 + m->ar[o])
        if (m->ar[o] == 0) return 1;
    return 0;
}

int eg_matcher_complete(const eg_matcher *m) {
    return eg_accepting(m) && m->cur_end == 1;   /* the one stack is the empty one */
}

int eg_matcher_allows(eg_matcher *m, int32_t t) {
    if (m->dead || m->ended || t < 0 || t >= m->n_vocab) return 0;
    if (m->is_eog[t]) return eg_accepting(m);
    uint32_t n = m->toff[t + 1] - m->toff[t];
    if (!n) return 0;
    size_t mark = m->ar_n, off;
    uint32_t acc = m->acc;
    int need = m->need, seq_len = m->seq_len;
    int ok = eg_read(m, m->text + m->toff[t], n, 0, m->cur_end, &off, &acc, &need, &seq_len);
    m->ar_n = mark;
    if (m->overflow) return 0;
    return ok;
}

static void eg_mark(eg_matcher *m, const eg_node *nd, uint8_t *allowed, int *count) {
    for (int32_t t = nd->tok; t >= 0; t = m->tok_next[t]) { allowed[t] = 1; (*count)++; }
}

/* Depth-first over the trie below node, from the set ar[off..end) and the
 * pending UTF-8 state: a child whose byte no stack can read is skipped with
 * its whole subtree. */
static void eg_walk(eg_matcher *m, uint32_t node, size_t off, size_t end, uint32_t acc, int need, int seq_len,
                    uint8_t *allowed, int *count) {
    for (uint32_t c = m->nodes[node].child; c && !m->overflow; c = m->nodes[c].sibling) {
        const eg_node *nd = &m->nodes[c];
        uint32_t a2 = acc, cp;
        int n2 = need, l2 = seq_len;
        int r = eg_utf8_step(nd->byte, &a2, &n2, &l2, &cp);
        if (r < 0) continue;
        if (r == 0) {
            if (!eg_partial_ok(m, off, end, a2, n2, l2)) continue;
            eg_mark(m, nd, allowed, count);
            if (nd->child) eg_walk(m, c, off, end, a2, n2, l2, allowed, count);
            continue;
        }
        size_t mark = m->ar_n, start = eg_advance(m, off, end, cp);
        if (start != m->ar_n) {
            eg_mark(m, nd, allowed, count);
            if (nd->child) eg_walk(m, c, start, m->ar_n, 0, 0, 0, allowed, count);
        }
        m->ar_n = mark;
    }
}

int eg_matcher_mask(eg_matcher *m, uint8_t *allowed) {
    memset(allowed, 0, (size_t)m->n_vocab);
    if (m->dead || m->ended) return 0;
    int count = 0;
    m->ar_n = m->cur_end;
    eg_walk(m, 0, 0, m->cur_end, m->acc, m->need, m->seq_len, allowed, &count);
    m->ar_n = m->cur_end;
    if (m->overflow) return EMBER_ERR_NOMEM;
    if (eg_accepting(m))
        for (int i = 0; i < m->n_eog; i++) { allowed[m->eogs[i]] = 1; count++; }
    return count;
}

void eg_matcher_accept(eg_matcher *m, int32_t t) {
    if (m->dead || m->ended) { m->dead = 1; return; }
    if (t < 0 || t >= m->n_vocab) { m->dead = 1; return; }
    if (m->is_eog[t]) {
        if (eg_accepting(m)) m->ended = 1;
        else m->dead = 1;
        return;
    }
    uint32_t n = m->toff[t + 1] - m->toff[t];
    size_t off;
    if (!n || !eg_read(m, m->text + m->toff[t], n, 0, m->cur_end, &off, &m->acc, &m->need, &m->seq_len)) {
        m->ar_n = m->cur_end;
        m->dead = 1;
        return;
    }
    if (off != 0) {   /* move the new set to the front */
        memmove(m->ar, m->ar + off, (m->ar_n - off) * sizeof *m->ar);
        m->cur_end = m->ar_n - off;
    }
    m->ar_n = m->cur_end;
}

/* The start: the root rule expanded into the arena's first set. */
void eg_matcher_reset(eg_matcher *m) {
    m->ar_n = 0;
    m->acc = 0;
    m->need = m->seq_len = 0;
    m->dead = m->ended = m->overflow = 0;
    m->work = 0;
    const ember_grammar *g = m->g;
    /* start stacks: one per alternative of root */
    for (uint32_t a = g->rule_start[g->root];;) {
        m->tmp[0] = a;
        eg_expand(m, 0, m->tmp, 1, 0);
        while (g->elems[a].type > EG_ALT) a++;
        if (g->elems[a].type == EG_END) break;
        a++;
    }
    m->cur_end = m->ar_n;
    if (m->overflow || m->cur_end == 0) m->dead = 1;
}

void eg_matcher_set_grammar(eg_matcher *m, const ember_grammar *g) {
    m->g = g;
    eg_matcher_reset(m);
}

/* A matcher with no vocabulary, to check the start expands within limits. */
static int eg_expand_initial(const ember_grammar *g, const ember_allocator *a) {
    eg_matcher m;
    memset(&m, 0, sizeof m);
    m.a = a;
    m.g = g;
    m.tmp = ec_malloc(a, (EG_MAX_STACK + 2) * sizeof *m.tmp);
    if (!m.tmp) return EMBER_ERR_NOMEM;
    eg_matcher_reset(&m);
    int rc = m.overflow ? EMBER_ERR_INVALID_ARG : EMBER_OK;
    ec_free(a, m.tmp);
    ec_free(a, m.ar);
    return rc;
}

int ember_grammar_accepts(const ember_grammar *g, const char *text, size_t len) {
    if (!g || (!text && len)) return EMBER_ERR_INVALID_ARG;
    eg_matcher m;
    memset(&m, 0, sizeof m);
    m.a = g->a;
    m.g = g;
    m.tmp = ec_malloc(g->a, (EG_MAX_STACK + 2) * sizeof *m.tmp);
    if (!m.tmp) return EMBER_ERR_NOMEM;
    eg_matcher_reset(&m);
    size_t off = 0;
    int ok = !m.dead && eg_read(&m, (const uint8_t *)text, len, 0, m.cur_end, &off, &m.acc, &m.need, &m.seq_len);
    int rc = m.overflow ? EMBER_ERR_NOMEM : 0;
    if (ok && !rc && !m.need) {
        ok = 0;
        for (size_t o = off; o < m.ar_n; o += 1 + m.ar[o])
            if (m.ar[o] == 0) ok = 1;
    } else {
        ok = 0;
    }
    ec_free(g->a, m.tmp);
    ec_free(g->a, m.ar);
    return rc ? rc : ok;
}

/* ---- the vocabulary side -------------------------------------------------- */

static int eg_trie_insert(eg_matcher *m, uint32_t *cap, int32_t t) {
    uint32_t node = 0;
    for (uint32_t i = m->toff[t]; i < m->toff[t + 1]; i++) {
        uint8_t b = m->text[i];
        uint32_t c = m->nodes[node].child, prev = 0;
        while (c && m->nodes[c].byte < b) { prev = c; c = m->nodes[c].sibling; }
        if (!c || m->nodes[c].byte != b) {   /* new node, siblings kept in byte order */
            if (eg_grow(m->a, (void **)&m->nodes, cap, m->n_nodes + 1, sizeof *m->nodes)) return -1;
            uint32_t k = m->n_nodes++;
            m->nodes[k] = (eg_node){0, c, -1, b};
            if (prev) m->nodes[prev].sibling = k;
            else m->nodes[node].child = k;
            c = k;
        }
        node = c;
    }
    m->tok_next[t] = m->nodes[node].tok;
    m->nodes[node].tok = t;
    return 0;
}

void eg_matcher_free(eg_matcher *m) {
    if (!m) return;
    ec_free(m->a, m->text);
    ec_free(m->a, m->toff);
    ec_free(m->a, m->is_eog);
    ec_free(m->a, m->eogs);
    ec_free(m->a, m->nodes);
    ec_free(m->a, m->tok_next);
    ec_free(m->a, m->ar);
    ec_free(m->a, m->tmp);
    ec_free(m->a, m);
}

int eg_matcher_create(const ember_grammar *g, const ember_model *model, const ember_allocator *a, eg_matcher **out) {
    *out = NULL;
    eg_matcher *m = ec_calloc(a, 1, sizeof *m);
    if (!m) return EMBER_ERR_NOMEM;
    m->a = a;
    m->g = g;
    const int V = m->n_vocab = ember_n_vocab(model);
    m->toff = ec_calloc(a, (size_t)V + 1, sizeof *m->toff);
    m->is_eog = ec_calloc(a, (size_t)V, 1);
    m->tok_next = ec_calloc(a, (size_t)V, sizeof *m->tok_next);
    m->tmp = ec_malloc(a, (EG_MAX_STACK + 2) * sizeof *m->tmp);
    uint32_t text_cap = 0, node_cap = 0;
    int rc = EMBER_ERR_NOMEM;
    if (!m->toff || !m->is_eog || !m->tok_next || !m->tmp) goto fail;
    /* Token texts as they read in the middle of a text (prev = the token
     * itself: not -1 or BOS, so SentencePiece keeps a leading space). */
    uint32_t used = 0;
    for (int t = 0; t < V; t++) {
        m->toff[t] = used;
        if (ember_token_is_eog(model, t)) {
            m->is_eog[t] = 1;
            m->n_eog++;
            continue;
        }
        int n = ember_token_to_piece(model, t, t, 0, NULL, 0);
        if (n < 0) { rc = n; goto fail; }
        if (n == 0) continue;
        if (eg_grow(a, (void **)&m->text, &text_cap, used + (uint32_t)n, 1)) goto fail;
        ember_token_to_piece(model, t, t, 0, (char *)m->text + used, (size_t)n);
        used += (uint32_t)n;
    }
    m->toff[V] = used;
    m->eogs = ec_calloc(a, (size_t)(m->n_eog ? m->n_eog : 1), sizeof *m->eogs);
    if (!m->eogs) goto fail;
    for (int t = 0, k = 0; t < V; t++)
        if (m->is_eog[t]) m->eogs[k++] = t;
    if (eg_grow(a, (void **)&m->nodes, &node_cap, 1024, sizeof *m->nodes)) goto fail;
    m->nodes[0] = (eg_node){0, 0, -1, 0};
    m->n_nodes = 1;
    for (int t = 0; t < V; t++) {
        m->tok_next[t] = -1;
        if (m->toff[t + 1] > m->toff[t] && eg_trie_insert(m, &node_cap, t)) goto fail;
    }
    eg_matcher_reset(m);
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
