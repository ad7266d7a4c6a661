/* grammar_json.c - a JSON Schema subset to a GBNF grammar, shaped like
 * llama.cpp's json-schema-to-grammar: one rule per schema node, named by
 * its path (root, root-name, root-name-item ...), shared primitive rules
 * (string, number, integer, boolean, null, value), and `space` (nothing, a
 * space, or up to two line breaks and indentation) after every JSON token.
 *
 * The schema is read in place: a cursor walks its text, so no tree is
 * built.  Keys are compared as written (JSON escapes in property names are
 * not decoded). */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EJ_MAX_DEPTH 64

typedef struct ej_str { char *v; size_t n, cap; } ej_str;

typedef struct ej {
    const ember_allocator *a;
    const char *s;
    size_t n;
    ej_str out;          /* the grammar text */
    ej_str names;        /* rule names used so far, each followed by '\n' */
    int rc;
    char msg[200];
    unsigned need;       /* primitive rules referenced (EJ_P_* bits) */
} ej;

enum { EJ_P_SPACE = 1, EJ_P_STRING = 2, EJ_P_NUMBER = 4, EJ_P_INTEGER = 8, EJ_P_BOOLEAN = 16, EJ_P_NULL = 32,
       EJ_P_VALUE = 64, EJ_P_CHAR = 128, EJ_P_INTEGRAL = 256 };

static void ej_fail(ej *j, int rc, size_t at, const char *what) {
    if (j->rc) return;
    j->rc = rc;
    snprintf(j->msg, sizeof j->msg, "JSON schema at byte %zu: %s", at, what);
}

static void ej_putn(ej *j, ej_str *o, const char *s, size_t n) {
    if (j->rc) return;
    if (o->n + n + 1 > o->cap) {
        size_t c = o->cap ? o->cap : 256;
        while (c < o->n + n + 1) c *= 2;
        char *q = (char *)ec_realloc(j->a, o->v, c);
        if (!q) { ej_fail(j, EMBER_ERR_NOMEM, 0, "out of memory"); return; }
        o->v = q;
        o->cap = c;
    }
    memcpy(o->v + o->n, s, n);
    o->n += n;
    o->v[o->n] = 0;
}
static void ej_puts(ej *j, ej_str *o, const char *s) { ej_putn(j, o, s, strlen(s)); }

/* ---- a cursor over JSON text ------------------------------------------- */

static size_t ej_ws(const ej *j, size_t p) {
    while (p < j->n && (j->s[p] == ' ' || j->s[p] == '\t' || j->s[p] == '\n' || j->s[p] == '\r')) p++;
    return p;
}

/* Skip the value at p (checking its syntax); returns the position after
 * it, or sets an error. */
static size_t ej_skip(ej *j, size_t p, int depth) {
    p = ej_ws(j, p);
    if (j->rc) return p;
    if (depth > EJ_MAX_DEPTH) { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "nested too deeply"); return p; }
    if (p >= j->n) { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "unexpected end"); return p; }
    char c = j->s[p];
    if (c == '"') {
        for (p++; p < j->n && j->s[p] != '"'; p++) {
            if ((unsigned char)j->s[p] < 0x20) { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "control character in a string"); return p; }
            if (j->s[p] == '\\') p++;
        }
        if (p >= j->n) { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "unterminated string"); return p; }
        return p + 1;
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        p = ej_ws(j, p + 1);
        if (p < j->n && j->s[p] == close) return p + 1;
        for (;;) {
            if (c == '{') {
                p = ej_ws(j, p);
                if (p >= j->n || j->s[p] != '"') { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "expected a key"); return p; }
                p = ej_ws(j, ej_skip(j, p, depth + 1));
                if (j->rc) return p;
                if (p >= j->n || j->s[p] != ':') { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "expected ':'"); return p; }
                p++;
            }
            p = ej_ws(j, ej_skip(j, p, depth + 1));
            if (j->rc) return p;
            if (p < j->n && j->s[p] == ',') { p++; continue; }
            if (p < j->n && j->s[p] == close) return p + 1;
            ej_fail(j, EMBER_ERR_INVALID_ARG, p, "expected ',' or the end of the object or array");
            return p;
        }
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t k = strlen(words[i]);
        if (j->n - p >= k && memcmp(j->s + p, words[i], k) == 0) return p + k;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        size_t q = p + (c == '-');
        size_t digits = q;
        while (q < j->n && j->s[q] >= '0' && j->s[q] <= '9') q++;
        if (q == digits) { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "bad number"); return p; }
        if (q < j->n && j->s[q] == '.') { q++; while (q < j->n && j->s[q] >= '0' && j->s[q] <= '9') q++; }
        if (q < j->n && (j->s[q] == 'e' || j->s[q] == 'E')) {
            q++;
            if (q < j->n && (j->s[q] == '+' || j->s[q] == '-')) q++;
            while (q < j->n && j->s[q] >= '0' && j->s[q] <= '9') q++;
        }
        return q;
    }
    ej_fail(j, EMBER_ERR_INVALID_ARG, p, "expected a JSON value");
    return p;
}

/* Iterate an object's members or an array's items: *it starts at the
 * container's position; each call sets *key (objects: the key's position,
 * with quotes) and returns the value's position, or 0 at the end. */
static size_t ej_next(ej *j, size_t *it, size_t *key) {
    size_t p = ej_ws(j, *it);
    if (j->rc || p >= j->n) return 0;
    char c = j->s[p];
    if (c == '{' || c == '[') p = ej_ws(j, p + 1);   /* first call */
    else if (c == ',') p = ej_ws(j, p + 1);
    else return 0;
    if (p >= j->n || j->s[p] == '}' || j->s[p] == ']') return 0;
    if (key && j->s[p] == '"') {
        size_t k = p;
        size_t after = ej_ws(j, ej_skip(j, p, 0));
        if (after < j->n && j->s[after] == ':') {
            *key = k;
            p = ej_ws(j, after + 1);
        }
    }
    *it = ej_ws(j, ej_skip(j, p, 0));
    return p;
}

static int ej_is(const ej *j, size_t p, const char *lit) {
    size_t k = strlen(lit);
    return j->n - p >= k && memcmp(j->s + p, lit, k) == 0;
}

/* The value of key (given with quotes, e.g. "\"type\"") in the object at
 * obj, or 0. */
static size_t ej_get(ej *j, size_t obj, const char *key) {
    if (j->s[obj] != '{') return 0;
    size_t it = obj, k = 0, v;
    while ((v = ej_next(j, &it, &k)))
        if (ej_is(j, k, key)) return v;
    return 0;
}

static long ej_int(ej *j, size_t p, long dflt) {
    if (!p) return dflt;
    char buf[32];
    size_t e = ej_skip(j, p, 0), k = e - p < sizeof buf - 1 ? e - p : sizeof buf - 1;
    memcpy(buf, j->s + p, k);
    buf[k] = 0;
    char *end;
    double d = strtod(buf, &end);
    if (end == buf || d < 0 || d > 1e6) { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "expected a count between 0 and 1000000"); return dflt; }
    return (long)d;
}

/* ---- emitting the grammar ---------------------------------------------- */

/* A JSON text as a GBNF literal (whitespace outside strings dropped). */
static void ej_literal(ej *j, ej_str *o, size_t p) {
    size_t e = ej_skip(j, p, 0);
    int in_str = 0;
    ej_puts(j, o, "\"");
    for (size_t i = p; i < e; i++) {
        char c = j->s[i];
        if (!in_str && (c == ' ' || c == '\t' || c == '\n' || c == '\r')) continue;
        if (c == '"') in_str = !in_str;
        if (c == '"' || c == '\\') ej_puts(j, o, "\\");
        ej_putn(j, o, &c, 1);
        if (c == '\\' && in_str && i + 1 < e) {   /* the escaped character, quote or not */
            c = j->s[++i];
            if (c == '"' || c == '\\') ej_puts(j, o, "\\");
            ej_putn(j, o, &c, 1);
        }
    }
    ej_puts(j, o, "\"");
}

/* A fresh rule name from a hint: word characters only, unique. */
static void ej_name(ej *j, const char *hint, char *out, size_t size) {
    size_t k = 0;
    for (const char *h = hint; *h && k + 8 < size; h++) {
        char c = *h;
        out[k++] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) ? c : '-';
    }
    out[k] = 0;
    for (int n = 0; !j->rc; n++) {
        if (n) snprintf(out + k, size - k, "%d", n);
        size_t len = strlen(out);
        int used = 0;
        /* names that the primitive rules take, and those given out */
        static const char *const fixed[] = {"space", "string", "number", "integer", "boolean", "null", "value",
                                            "object", "array", "char", "integral-part", "decimal-part", NULL};
        for (int i = 0; fixed[i]; i++) if (!strcmp(fixed[i], out)) used = 1;
        for (size_t i = 0; !used && i < j->names.n;) {
            size_t e = i;
            while (j->names.v[e] != '\n') e++;
            if (e - i == len && memcmp(j->names.v + i, out, len) == 0) used = 1;
            i = e + 1;
        }
        if (!used) break;
    }
    ej_puts(j, &j->names, out);
    ej_puts(j, &j->names, "\n");
}

static void ej_rule(ej *j, const char *name, const ej_str *body) {
    ej_puts(j, &j->out, name);
    ej_puts(j, &j->out, " ::= ");
    if (body->n) ej_putn(j, &j->out, body->v, body->n);
    ej_puts(j, &j->out, "\n");
}

static void ej_visit(ej *j, size_t p, const char *hint, ej_str *expr, int depth);

static void ej_type(ej *j, size_t p, size_t type, const char *hint, ej_str *e, int depth) {
    char name[128], sub[256];
    if (type && ej_is(j, type, "\"string\"")) {
        size_t mn = ej_get(j, p, "\"minLength\""), mx = ej_get(j, p, "\"maxLength\"");
        if (!mn && !mx) { j->need |= EJ_P_STRING; ej_puts(j, e, "string"); return; }
        long lo = ej_int(j, mn, 0), hi = ej_int(j, mx, -1);
        if (hi >= 0 && hi < lo) { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "maxLength below minLength"); return; }
        j->need |= EJ_P_CHAR | EJ_P_SPACE;
        char rep[64];
        if (hi < 0) snprintf(rep, sizeof rep, "\"\\\"\" char{%ld,} \"\\\"\" space", lo);
        else snprintf(rep, sizeof rep, "\"\\\"\" char{%ld,%ld} \"\\\"\" space", lo, hi);
        ej_puts(j, e, "(");
        ej_puts(j, e, rep);
        ej_puts(j, e, ")");
    } else if (type && ej_is(j, type, "\"number\"")) { j->need |= EJ_P_NUMBER; ej_puts(j, e, "number"); }
    else if (type && ej_is(j, type, "\"integer\"")) { j->need |= EJ_P_INTEGER; ej_puts(j, e, "integer"); }
    else if (type && ej_is(j, type, "\"boolean\"")) { j->need |= EJ_P_BOOLEAN; ej_puts(j, e, "boolean"); }
    else if (type && ej_is(j, type, "\"null\"")) { j->need |= EJ_P_NULL; ej_puts(j, e, "null"); }
    else if (type && ej_is(j, type, "\"array\"")) {
        size_t items = ej_get(j, p, "\"items\"");
        long lo = ej_int(j, ej_get(j, p, "\"minItems\""), 0), hi = ej_int(j, ej_get(j, p, "\"maxItems\""), -1);
        if (hi >= 0 && hi < lo) { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "maxItems below minItems"); return; }
        ej_str item = {NULL, 0, 0}, body = {NULL, 0, 0};
        snprintf(sub, sizeof sub, "%s-item", hint);
        if (items) ej_visit(j, items, sub, &item, depth + 1);
        else { j->need |= EJ_P_VALUE; ej_puts(j, &item, "value"); }
        j->need |= EJ_P_SPACE;
        char rep[64];
        ej_puts(j, &body, "\"[\" space ");
        if (hi != 0) {
            if (lo == 0) ej_puts(j, &body, "(");
            ej_putn(j, &body, item.v, item.n);
            ej_puts(j, &body, " (\",\" space ");
            ej_putn(j, &body, item.v, item.n);
            if (hi < 0) snprintf(rep, sizeof rep, "){%ld,}", lo ? lo - 1 : 0);
            else snprintf(rep, sizeof rep, "){%ld,%ld}", lo ? lo - 1 : 0, hi - 1);
            ej_puts(j, &body, rep);
            if (lo == 0) ej_puts(j, &body, ")?");
            ej_puts(j, &body, " ");
        }
        ej_puts(j, &body, "\"]\" space");
        ej_name(j, hint, name, sizeof name);
        ej_rule(j, name, &body);
        ej_puts(j, e, name);
        ec_free(j->a, item.v);
        ec_free(j->a, body.v);
    } else if (!type || ej_is(j, type, "\"object\"")) {  /* no type but properties: an object */
        size_t props = ej_get(j, p, "\"properties\""), req = ej_get(j, p, "\"required\"");
        if (!props) { j->need |= EJ_P_VALUE; ej_puts(j, e, "object"); return; }
        if (j->s[props] != '{') { ej_fail(j, EMBER_ERR_INVALID_ARG, props, "properties must be an object"); return; }
        if (req && j->s[req] != '[') { ej_fail(j, EMBER_ERR_INVALID_ARG, req, "required must be an array"); return; }
        ej_name(j, hint, name, sizeof name);
        /* one rule per property: "key" space ":" space value */
        ej_str body = {NULL, 0, 0}, opt = {NULL, 0, 0};
        int n_req = 0, n_opt = 0;
        char kv[128];
        size_t it = props, key = 0, v;
        j->need |= EJ_P_SPACE;
        ej_puts(j, &body, "\"{\" space");
        /* required properties, in the order of "properties" */
        for (int pass = 0; pass < 2 && !j->rc; pass++) {
            it = props;
            while (!j->rc && (v = ej_next(j, &it, &key))) {
                int is_req = 0;
                if (req) {
                    size_t rit = req, r, kend = ej_skip(j, key, 0);
                    while ((r = ej_next(j, &rit, NULL)))
                        if (ej_skip(j, r, 0) - r == kend - key && memcmp(j->s + r, j->s + key, kend - key) == 0) is_req = 1;
                }
                if (is_req != (pass == 0)) continue;
                /* the key's text as a hint: name-key */
                size_t kend = ej_skip(j, key, 0);
                char kh[48];
                size_t kl = kend - key - 2 < sizeof kh - 1 ? kend - key - 2 : sizeof kh - 1;
                memcpy(kh, j->s + key + 1, kl);
                kh[kl] = 0;
                snprintf(sub, sizeof sub, "%s-%s", name, kh);
                ej_str val = {NULL, 0, 0}, kvb = {NULL, 0, 0};
                ej_visit(j, v, sub, &val, depth + 1);
                ej_literal(j, &kvb, key);
                ej_puts(j, &kvb, " space \":\" space ");
                ej_putn(j, &kvb, val.v, val.n);
                snprintf(sub, sizeof sub, "%s-%s-kv", name, kh);
                ej_name(j, sub, kv, sizeof kv);
                ej_rule(j, kv, &kvb);
                ec_free(j->a, val.v);
                ec_free(j->a, kvb.v);
                if (pass == 0) {
                    ej_puts(j, &body, n_req ? " \",\" space " : " ");
                    ej_puts(j, &body, kv);
                    n_req++;
                } else {
                    ej_puts(j, &opt, kv);
                    ej_puts(j, &opt, "\n");
                    n_opt++;
                }
            }
        }
        if (n_opt && !j->rc) {
            /* T_i ::= O_i ("," space T_{i+1})? | T_{i+1}: any ordered
             * non-empty subset of the optional properties, unambiguously */
            char (*t)[128] = (char (*)[128])ec_calloc(j->a, (size_t)n_opt, sizeof *t);
            if (!t) { ej_fail(j, EMBER_ERR_NOMEM, 0, "out of memory"); }
            for (int i = 0; t && i < n_opt && !j->rc; i++) {
                snprintf(sub, sizeof sub, "%s-rest", name);
                ej_name(j, sub, t[i], sizeof t[i]);
            }
            size_t line = 0;
            for (int i = 0; t && i < n_opt && !j->rc; i++) {
                size_t end = line;
                while (opt.v[end] != '\n') end++;
                ej_str tb = {NULL, 0, 0};
                ej_putn(j, &tb, opt.v + line, end - line);
                if (i + 1 < n_opt) {
                    ej_puts(j, &tb, " (\",\" space ");
                    ej_puts(j, &tb, t[i + 1]);
                    ej_puts(j, &tb, ")? | ");
                    ej_puts(j, &tb, t[i + 1]);
                }
                ej_rule(j, t[i], &tb);
                ec_free(j->a, tb.v);
                line = end + 1;
            }
            if (t && !j->rc) {
                ej_puts(j, &body, n_req ? " (\",\" space " : " (");
                ej_puts(j, &body, t[0]);
                ej_puts(j, &body, ")?");
            }
            ec_free(j->a, t);
        }
        ej_puts(j, &body, " \"}\" space");
        ej_rule(j, name, &body);
        ej_puts(j, e, name);
        ec_free(j->a, body.v);
        ec_free(j->a, opt.v);
    } else {
        ej_fail(j, EMBER_ERR_UNSUPPORTED, type, "unsupported type");
    }
}

static void ej_visit(ej *j, size_t p, const char *hint, ej_str *e, int depth) {
    p = ej_ws(j, p);
    if (j->rc) return;
    if (depth > EJ_MAX_DEPTH) { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "schema nested too deeply"); return; }
    if (ej_is(j, p, "true")) { j->need |= EJ_P_VALUE; ej_puts(j, e, "value"); return; }
    if (j->s[p] != '{') { ej_fail(j, EMBER_ERR_INVALID_ARG, p, "a schema must be an object or true"); return; }
    static const char *const unsupported[] = {"\"$ref\"", "\"pattern\"", "\"allOf\"", "\"not\"", "\"patternProperties\"",
                                              "\"if\"", NULL};
    for (int i = 0; unsupported[i]; i++)
        if (ej_get(j, p, unsupported[i])) {
            char what[64];
            snprintf(what, sizeof what, "keyword %s is not supported", unsupported[i]);
            ej_fail(j, EMBER_ERR_UNSUPPORTED, ej_get(j, p, unsupported[i]), what);
            return;
        }
    size_t v;
    if ((v = ej_get(j, p, "\"const\""))) {
        j->need |= EJ_P_SPACE;
        ej_puts(j, e, "(");
        ej_literal(j, e, v);
        ej_puts(j, e, " space)");
        return;
    }
    if ((v = ej_get(j, p, "\"enum\""))) {
        if (j->s[v] != '[') { ej_fail(j, EMBER_ERR_INVALID_ARG, v, "enum must be an array"); return; }
        size_t it = v, x;
        int k = 0;
        j->need |= EJ_P_SPACE;
        ej_puts(j, e, "((");
        while ((x = ej_next(j, &it, NULL))) {
            if (k++) ej_puts(j, e, " | ");
            ej_literal(j, e, x);
        }
        if (!k) { ej_fail(j, EMBER_ERR_INVALID_ARG, v, "enum is empty"); return; }
        ej_puts(j, e, ") space)");
        return;
    }
    if ((v = ej_get(j, p, "\"anyOf\"")) || (v = ej_get(j, p, "\"oneOf\""))) {
        if (j->s[v] != '[') { ej_fail(j, EMBER_ERR_INVALID_ARG, v, "anyOf/oneOf must be an array"); return; }
        size_t it = v, x;
        int k = 0;
        char sub[160];
        ej_puts(j, e, "(");
        while ((x = ej_next(j, &it, NULL)) && !j->rc) {
            if (k) ej_puts(j, e, " | ");
            snprintf(sub, sizeof sub, "%s-%d", hint, k++);
            ej_visit(j, x, sub, e, depth + 1);
        }
        if (!k) { ej_fail(j, EMBER_ERR_INVALID_ARG, v, "anyOf/oneOf is empty"); return; }
        ej_puts(j, e, ")");
        return;
    }
    size_t type = ej_get(j, p, "\"type\"");
    if (!type) {
        if (ej_get(j, p, "\"properties\"")) { ej_type(j, p, 0, hint, e, depth); return; }
        j->need |= EJ_P_VALUE;   /* {}: any value */
        ej_puts(j, e, "value");
        return;
    }
    if (j->s[type] == '[') {   /* "type": ["string", "null"] */
        size_t it = type, x;
        int k = 0;
        char sub[160];
        ej_puts(j, e, "(");
        while ((x = ej_next(j, &it, NULL)) && !j->rc) {
            if (k) ej_puts(j, e, " | ");
            snprintf(sub, sizeof sub, "%s-%d", hint, k++);
            ej_type(j, p, x, sub, e, depth);
        }
        if (!k) { ej_fail(j, EMBER_ERR_INVALID_ARG, type, "type list is empty"); return; }
        ej_puts(j, e, ")");
        return;
    }
    if (j->s[type] != '"') { ej_fail(j, EMBER_ERR_INVALID_ARG, type, "type must be a string or a list of them"); return; }
    ej_type(j, p, type, hint, e, depth);
}

/* The shared rules, as llama.cpp's converter writes them. */
static void ej_primitives(ej *j) {
    unsigned n = j->need;
    if (n & EJ_P_VALUE) n |= EJ_P_STRING | EJ_P_NUMBER | EJ_P_BOOLEAN | EJ_P_NULL;
    if (n & EJ_P_STRING) n |= EJ_P_CHAR;
    if (n & (EJ_P_NUMBER | EJ_P_INTEGER)) n |= EJ_P_INTEGRAL;
    if (n) n |= EJ_P_SPACE;
    if (n & EJ_P_SPACE) ej_puts(j, &j->out, "space ::= | \" \" | \"\\n\"{1,2} [ \\t]{0,20}\n");
    if (n & EJ_P_CHAR) ej_puts(j, &j->out, "char ::= [^\"\\\\\\x7F\\x00-\\x1F] | [\\\\] ([\"\\\\bfnrt/] | \"u\" [0-9a-fA-F]{4})\n");
    if (n & EJ_P_STRING) ej_puts(j, &j->out, "string ::= \"\\\"\" char* \"\\\"\" space\n");
    if (n & EJ_P_INTEGRAL) ej_puts(j, &j->out, "integral-part ::= [0] | [1-9] [0-9]{0,15}\n");
    if (n & EJ_P_NUMBER) {
        ej_puts(j, &j->out, "decimal-part ::= [0-9]{1,16}\n");
        ej_puts(j, &j->out, "number ::= (\"-\"? integral-part) (\".\" decimal-part)? ([eE] [-+]? integral-part)? space\n");
    }
    if (n & EJ_P_INTEGER) ej_puts(j, &j->out, "integer ::= (\"-\"? integral-part) space\n");
    if (n & EJ_P_BOOLEAN) ej_puts(j, &j->out, "boolean ::= (\"true\" | \"false\") space\n");
    if (n & EJ_P_NULL) ej_puts(j, &j->out, "null ::= \"null\" space\n");
    if (n & EJ_P_VALUE) {
        ej_puts(j, &j->out, "value ::= object | array | string | number | boolean | null\n");
        ej_puts(j, &j->out, "object ::= \"{\" space ( string \":\" space value (\",\" space string \":\" space value)* )? \"}\" space\n");
        ej_puts(j, &j->out, "array ::= \"[\" space ( value (\",\" space value)* )? \"]\" space\n");
    }
}

/* The grammar text for a schema, allocated from a (free with ec_free). */
static int ej_convert(const char *schema, size_t len, const ember_allocator *a, char **out, size_t *out_len,
                      ember_error *err) {
    ej j;
    memset(&j, 0, sizeof j);
    j.a = a;
    j.s = schema ? schema : "";
    j.n = schema ? len : 0;
    size_t end = ej_ws(&j, ej_skip(&j, 0, 0));
    if (!j.rc && end != j.n) ej_fail(&j, EMBER_ERR_INVALID_ARG, end, "text after the schema");
    ej_str root = {NULL, 0, 0};
    if (!j.rc) ej_visit(&j, 0, "root", &root, 0);
    /* root is a rule of its own unless the schema made one named root */
    if (!j.rc && !(root.n == 4 && memcmp(root.v, "root", 4) == 0)) ej_rule(&j, "root", &root);
    if (!j.rc) ej_primitives(&j);
    ec_free(a, root.v);
    ec_free(a, j.names.v);
    if (j.rc) {
        ec_free(a, j.out.v);
        ec_fail(err, (ember_status)j.rc, "%s", j.msg);
        return j.rc;
    }
    *out = j.out.v;
    *out_len = j.out.n;
    return EMBER_OK;
}

ember_status ember_json_schema_to_gbnf(const char *schema, size_t len, char *buf, size_t size, size_t *out_len,
                                       ember_error *err) {
    if (out_len) *out_len = 0;
    if (!buf && size) return ec_fail(err, EMBER_ERR_INVALID_ARG, "buf is NULL but size is %zu", size);
    if (size) buf[0] = 0;
    if (!schema && len) return ec_fail(err, EMBER_ERR_INVALID_ARG, "schema is NULL but len is %zu", len);
    char *g;
    size_t n;
    int rc = ej_convert(schema, len, NULL, &g, &n, err);
    if (rc != EMBER_OK) return (ember_status)rc;
    ember_status st = ec_put_text(g, n, buf, size, out_len, "the grammar", err);
    ec_free(NULL, g);
    return st;
}

ember_status ember_grammar_from_json_schema(const char *schema, size_t len, const ember_allocator *allocator,
                                            ember_grammar **out, ember_error *err) {
    if (out) *out = NULL;
    if (!out) return ec_fail(err, EMBER_ERR_INVALID_ARG, "out is NULL");
    if (!schema && len) return ec_fail(err, EMBER_ERR_INVALID_ARG, "schema is NULL but len is %zu", len);
    char *g;
    size_t n;
    int rc = ej_convert(schema, len, allocator, &g, &n, err);
    if (rc != EMBER_OK) return (ember_status)rc;
    ember_status st = ember_grammar_parse(g, n, "root", allocator, out, err);
    ec_free(allocator, g);
    return st;
}
