/* chat.c - chat templates and conversations.
 *
 * A model is trained on conversations laid out in one format, published as a
 * Jinja template (tokenizer.chat_template).  ember runs no Jinja: it knows
 * the formats of the families it supports, recognises which one a template
 * is by marker strings (as llama.cpp does), and renders that format in C,
 * byte for byte as the published template renders a plain {role, content}
 * conversation (tests/test_chat.py checks this against Jinja itself).  A
 * template it does not recognise is an error, never a guess.
 *
 * Above the API layer: uses only ember.h (and the allocator helpers). */
#include "common.h"
#include "platform.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- a growing byte buffer ------------------------------------------------- */

typedef struct ech_buf {
    const ember_allocator *a;
    char *p;
    size_t n, cap;
    int oom;
} ech_buf;

static void ech_put(ech_buf *b, const char *s, size_t n) {
    if (b->oom || !n) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = (char *)ec_realloc(b->a, b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void ech_puts(ech_buf *b, const char *s) { ech_put(b, s, strlen(s)); }

/* ---- text helpers with Python's semantics (templates run on Python str) ---- */

typedef struct ech_str { const char *p; size_t n; } ech_str;

static ech_str ech_s(const char *s) { ech_str r = {s, strlen(s)}; return r; }

/* Python's str.isspace(), which the `trim` filter and str.strip() use. */
static int ech_is_py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* Length of the code point that ends at s[n) if it is a whitespace one, else 0. */
static size_t ech_space_before(const char *s, size_t n) {
    for (size_t k = 1; k <= 4 && k <= n; k++) {
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xC0) == 0x80) continue;
        uint32_t cp;
        size_t len = (size_t)ec_utf8_decode((const unsigned char *)s + n - k, k, &cp);
        return len == k && ech_is_py_space(cp) ? k : 0;
    }
    return 0;
}

static ech_str ech_strip(ech_str s) {   /* str.strip() */
    uint32_t cp;
    size_t len;
    while (s.n && (len = (size_t)ec_utf8_decode((const unsigned char *)s.p, s.n, &cp)) && ech_is_py_space(cp)) {
        s.p += len;
        s.n -= len;
    }
    while (s.n && (len = ech_space_before(s.p, s.n))) s.n -= len;
    return s;
}

static ech_str ech_lstrip_nl(ech_str s) { while (s.n && s.p[0] == '\n') { s.p++; s.n--; } return s; }
static ech_str ech_rstrip_nl(ech_str s) { while (s.n && s.p[s.n - 1] == '\n') s.n--; return s; }

static const char *ech_find(ech_str s, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= s.n; i++)
        if (!memcmp(s.p + i, needle, k)) return s.p + i;
    return NULL;
}

static const char *ech_rfind(ech_str s, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = s.n >= k ? s.n - k + 1 : 0; i-- > 0;)
        if (!memcmp(s.p + i, needle, k)) return s.p + i;
    return NULL;
}

static int ech_starts(ech_str s, const char *p) { size_t k = strlen(p); return s.n >= k && !memcmp(s.p, p, k); }
static int ech_ends(ech_str s, const char *p) { size_t k = strlen(p); return s.n >= k && !memcmp(s.p + s.n - k, p, k); }
static void ech_putstr(ech_buf *b, ech_str s) { ech_put(b, s.p, s.n); }

/* A string as Hugging Face's tojson filter writes it: json.dumps with
 * ensure_ascii=False (quotes, backslashes and control characters escaped). */
static void ech_put_json(ech_buf *b, ech_str s) {
    ech_puts(b, "\"");
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        char esc[8];
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r" :
                        c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (!e && c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); e = esc; }
        if (e) ech_puts(b, e);
        else ech_put(b, s.p + i, 1);
    }
    ech_puts(b, "\"");
}

/* ---- formats ---------------------------------------------------------------- */

typedef enum ech_format {
    ECH_LLAMA3, ECH_LLAMA31, ECH_LLAMA32, ECH_CHATML, ECH_QWEN25, ECH_QWEN3, ECH_GEMMA2, ECH_GEMMA3,
    ECH_PHI3, ECH_PHI3_MINI, ECH_PHI4, ECH_PHI4_MINI, ECH_MISTRAL_V0, ECH_MISTRAL_V1, ECH_MISTRAL_V3, ECH_MISTRAL_V3_TEKKEN, ECH_MISTRAL_V7,
    ECH_MISTRAL_V7_TEKKEN, ECH_GRANITE, ECH_GRANITE33, ECH_LLAMA2, ECH_ZEPHYR, ECH_N_FORMATS
} ech_format;

static const char *const ech_names[ECH_N_FORMATS] = {
    "llama3", "llama3.1", "llama3.2", "chatml", "qwen2.5", "qwen3", "gemma2", "gemma3",
    "phi3", "phi3-mini", "phi4", "phi4-mini", "mistral-v0", "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7",
    "mistral-v7-tekken", "granite", "granite3.3", "llama2", "zephyr"};

const char *ember_chat_template_name(int i) { return i >= 0 && i < ECH_N_FORMATS ? ech_names[i] : NULL; }

static int ech_has(const char *t, const char *s) { return strstr(t, s) != NULL; }

/* Like ech_has, where a newline in s matches a newline or the escape \n
 * in t: template files carry either inside their string literals. */
static int ech_has_nl(const char *t, const char *s) {
    for (; *t; t++) {
        const char *a = t, *b = s;
        while (*b) {
            if (*b == '\n' && a[0] == '\\' && a[1] == 'n') a += 2;
            else if (*a == *b) a++;
            else break;
            b++;
        }
        if (!*b) return 1;
    }
    return 0;
}

/* Which format a Jinja template renders, from marker strings, or -1.  *why
 * explains a refusal (a known family in a variant ember cannot render). */
static int ech_detect(const char *t, const char **why) {
    *why = NULL;
    for (int i = 0; i < ECH_N_FORMATS; i++)
        if (!strcmp(t, ech_names[i])) return i;
    if (ech_has(t, "<|im_start|>")) {
        if (ech_has(t, "<|im_sep|>")) return ECH_PHI4;
        if (ech_has(t, "/no_think") || ech_has(t, "<end_of_utterance>")) {
            *why = "a ChatML variant with its own system block (SmolLM3/SmolVLM style)";
            return -1;
        }
        if (ech_has(t, "enable_thinking is defined and enable_thinking is false") && ech_has(t, "last_query_index")) {
            /* Qwen3's generation prompt, not a later one that opens <think> itself */
            if (ech_has_nl(t, "{{- '<think>\n\n</think>\n\n' }}\n    {%- endif %}\n{%- endif %}")) return ECH_QWEN3;
            *why = "a Qwen3 variant whose generation prompt differs from Qwen3's";
            return -1;
        }
        if (ech_has(t, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")) return ECH_QWEN25;
        /* plain ChatML treats every message alike; a template that looks at
         * the first one has a default system message ember does not know */
        if (ech_has(t, "<think>") || ech_has(t, "You are ") || ech_has(t, "messages[0]")) {
            *why = "a ChatML variant with a default system message or reasoning block ember does not know";
            return -1;
        }
        return ECH_CHATML;
    }
    if (ech_has(t, "[INST]")) {
        if (ech_has(t, "[SYSTEM_PROMPT]")) {
            if (ech_has(t, "default_system_message")) {
                *why = "a Mistral v7 variant with a default system prompt";
                return -1;
            }
            return ech_has(t, "'[INST] '") || ech_has(t, "\"[INST] \"") ? ECH_MISTRAL_V7 : ECH_MISTRAL_V7_TEKKEN;
        }
        if (ech_has(t, "' [INST] ' + system_message")) return ECH_MISTRAL_V1;
        if (ech_has(t, "[AVAILABLE_TOOLS]")) {
            /* v3 and v3-tekken as Mistral publishes them: the system message
             * goes into the last user turn, replies are written after it */
            if (ech_has(t, "\"[INST]\" + message[\"content\"] + \"[/INST]\"") &&
                ech_has(t, "{{- message[\"content\"] + eos_token}}"))
                return ECH_MISTRAL_V3_TEKKEN;
            if (ech_has(t, "\"[INST] \" + message[\"content\"] + \"[/INST]\"") &&
                ech_has(t, "{{- \" \" + message[\"content\"]|trim + eos_token}}"))
                return ECH_MISTRAL_V3;
            *why = "a Mistral v3 variant ember does not know";
            return -1;
        }
        if (ech_has(t, "<<SYS>>") && ech_has(t, "bos_token + '[INST] ' + content.strip()") &&
            !ech_has(t, "elif message['role'] == 'system'"))   /* the legacy default renders later system turns */
            return ECH_LLAMA2;
        if (ech_has(t, "Only user and assistant roles are supported!") && !ech_has(t, "eos_token + ' '") &&
            ech_has(t, "'[INST] ' + message['content'] + ' [/INST]'"))
            return ECH_MISTRAL_V0;
        *why = "an [INST] variant (Llama 2 / Mistral) ember does not know";
        return -1;
    }
    if (ech_has(t, "<|assistant|>") && ech_has(t, "<|end|>")) {
        if (ech_has(t, "'<|' + message['role'] + '|>' + message['content'] + '<|end|>'")) return ECH_PHI4_MINI;
        if (ech_has(t, "<|system|>") && ech_has(t, "<|user|>") && ech_has(t, "{% else %}{{ eos_token }}")) {
            /* Phi-3.5 leaves out an empty system message, Phi-3-mini does not */
            return ech_has(t, "'system' and message['content']") ? ECH_PHI3 : ECH_PHI3_MINI;
        }
        *why = "a Phi-3 variant (small, medium or vision) ember does not know";
        return -1;
    }
    if (ech_has_nl(t, "'<|user|>\n' + message['content'] + eos_token") &&
        ech_has(t, "<|system|>") && ech_has(t, "<|assistant|>"))
        return ECH_ZEPHYR;
    if (ech_has(t, "<|user|>") && ech_has(t, "<|assistant|>")) {
        *why = "a <|user|>/<|assistant|> variant (Falcon 3, GLM...) ember does not know";
        return -1;
    }
    if (ech_has(t, "<start_of_turn>")) {
        if (ech_has(t, "System role not supported") && ech_has(t, "{{ bos_token }}")) return ECH_GEMMA2;
        if (ech_has(t, "first_user_prefix")) return ECH_GEMMA3;
        *why = "a Gemma variant ember does not know";
        return -1;
    }
    if (ech_has(t, "<|start_header_id|>") && ech_has(t, "<|end_header_id|>")) {
        if (ech_has_nl(t, "\"Cutting Knowledge Date: December 2023\n\" }}") &&
            ech_has_nl(t, "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>'"))
            return ech_has(t, "strftime_now") ? ECH_LLAMA32 : ECH_LLAMA31;
        if (ech_has_nl(t, "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
                          "message['content'] | trim + '<|eot_id|>' %}") &&
            ech_has(t, "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>"))
            return ECH_LLAMA3;
        *why = "a Llama 3 variant ember does not know (the first Llama 3 template, which always ends with the "
               "assistant header, is rendered by naming llama3)";
        return -1;
    }
    if (ech_has(t, "<|start_of_role|>")) {
        if (ech_has(t, "Knowledge Cutoff Date: April 2024. Today's Date: ") &&
            ech_has(t, "You are Granite, developed by IBM.") && !ech_has(t, "<tool_call>"))
            return ECH_GRANITE33;
        if (ech_has(t, "'<|start_of_role|>user<|end_of_role|>' + message['content']") && !ech_has(t, "You are Granite") &&
            !ech_has(t, "<tool_call>") && !ech_has(t, "<tools>"))
            return ECH_GRANITE;
        *why = "a Granite variant ember does not know";
        return -1;
    }
    return -1;
}

const char *ember_chat_template_detect(const char *template_text) {
    const char *why;
    int f = template_text ? ech_detect(template_text, &why) : -1;
    return f >= 0 ? ech_names[f] : NULL;
}

/* ---- rendering ---------------------------------------------------------------- */

typedef struct ech_job {
    const ember_chat_message *m;
    int n;
    int agp, think;
    ech_str bos, eos;
    const char *date;        /* "YYYY-MM-DD", or NULL for today */
    ech_buf out;
    char *err;               /* message buffer (256) */
} ech_job;

static int ech_is(const ember_chat_message *m, const char *role) { return !strcmp(m->role, role); }
static ech_str ech_c(const ember_chat_message *m) { return ech_s(m->content); }

static int ech_fail(ech_job *j, const char *fmt, const char *arg) {
    snprintf(j->err, 256, fmt, arg);
    return EMBER_ERR_INVALID_ARG;
}

/* Today's date (or params.date) as strftime would print it in the C locale
 * for the formats templates use: %d %b %Y, %B %d, %Y. */
static int ech_date(ech_job *j, int style, char *buf, size_t size) {
    static const char *const months[12] = {"January", "February", "March", "April", "May", "June", "July",
                                           "August", "September", "October", "November", "December"};
    int y, mo, d;
    if (j->date) {
        if (sscanf(j->date, "%4d-%2d-%2d", &y, &mo, &d) != 3 || mo < 1 || mo > 12 || d < 1 || d > 31)
            return ech_fail(j, "date '%s' is not YYYY-MM-DD", j->date);
    } else {
        time_t now = time(NULL);
        struct tm tmv;
        if (ep_localtime(now, &tmv) != 0) return ech_fail(j, "%s", "cannot read the local date");
        y = tmv.tm_year + 1900, mo = tmv.tm_mon + 1, d = tmv.tm_mday;
    }
    if (style == 0) snprintf(buf, size, "%02d %.3s %04d", d, months[mo - 1], y);
    else snprintf(buf, size, "%s %02d, %04d", months[mo - 1], d, y);
    return EMBER_OK;
}

/* Templates that insist on user/assistant alternation after an optional
 * system message (they raise_exception otherwise). */
static int ech_check_alternation(ech_job *j, int from, const char *what) {
    for (int i = from; i < j->n; i++)
        if (ech_is(&j->m[i], "user") != ((i - from) % 2 == 0))
            return ech_fail(j, "%s: after the optional system message, roles must alternate user/assistant/user/...", what);
    return EMBER_OK;
}

static int ech_llama3(ech_job *j) {
    ech_buf *b = &j->out;
    for (int i = 0; i < j->n; i++) {
        if (i == 0) ech_putstr(b, j->bos);
        ech_puts(b, "<|start_header_id|>");
        ech_puts(b, j->m[i].role);
        ech_puts(b, "<|end_header_id|>\n\n");
        ech_putstr(b, ech_strip(ech_c(&j->m[i])));
        ech_puts(b, "<|eot_id|>");
    }
    if (j->agp) ech_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return EMBER_OK;
}

/* Llama 3.1 / 3.3 / 3.2: a system block with the knowledge cutoff and a date
 * always comes first; the user's system message (trimmed) goes inside it. */
static int ech_llama31(ech_job *j, int today) {
    ech_buf *b = &j->out;
    char date[32] = "26 Jul 2024";   /* the 3.1 template's fixed date_string */
    if (today && ech_date(j, 0, date, sizeof date)) return EMBER_ERR_INVALID_ARG;
    int first = j->n > 0 && ech_is(&j->m[0], "system");
    ech_putstr(b, j->bos);
    ech_puts(b, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ");
    ech_puts(b, date);
    ech_puts(b, "\n\n");
    if (first) ech_putstr(b, ech_strip(ech_c(&j->m[0])));
    ech_puts(b, "<|eot_id|>");
    for (int i = first; i < j->n; i++) {
        int tool = ech_is(&j->m[i], "ipython") || ech_is(&j->m[i], "tool");
        ech_puts(b, "<|start_header_id|>");
        ech_puts(b, tool ? "ipython" : j->m[i].role);
        ech_puts(b, "<|end_header_id|>\n\n");
        if (tool) ech_put_json(b, ech_c(&j->m[i]));   /* a string is "iterable": the template writes it as JSON */
        else ech_putstr(b, ech_strip(ech_c(&j->m[i])));
        ech_puts(b, "<|eot_id|>");
    }
    if (j->agp) ech_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return EMBER_OK;
}

static void ech_im(ech_buf *b, const char *role, ech_str content) {
    ech_puts(b, "<|im_start|>");
    ech_puts(b, role);
    ech_puts(b, "\n");
    ech_putstr(b, content);
    ech_puts(b, "<|im_end|>\n");
}

/* Qwen's tool results: consecutive "tool" messages share one user turn. */
static void ech_qwen_tool(ech_job *j, int i) {
    ech_buf *b = &j->out;
    if (i == 0 || !ech_is(&j->m[i - 1], "tool")) ech_puts(b, "<|im_start|>user");
    ech_puts(b, "\n<tool_response>\n");
    ech_putstr(b, ech_c(&j->m[i]));
    ech_puts(b, "\n</tool_response>");
    if (i == j->n - 1 || !ech_is(&j->m[i + 1], "tool")) ech_puts(b, "<|im_end|>\n");
}

static int ech_chatml(ech_job *j, const char *default_system) {
    ech_buf *b = &j->out;
    if (default_system) {   /* Qwen 2.5: a system turn always comes first */
        if (j->n == 0) return ech_fail(j, "%s", "qwen2.5: no messages");
        ech_im(b, "system", ech_is(&j->m[0], "system") ? ech_c(&j->m[0]) : ech_s(default_system));
    }
    for (int i = 0; i < j->n; i++) {
        const ember_chat_message *m = &j->m[i];
        if (!default_system) ech_im(b, m->role, ech_c(m));
        else if (ech_is(m, "user") || (ech_is(m, "system") && i > 0) || ech_is(m, "assistant")) ech_im(b, m->role, ech_c(m));
        else if (ech_is(m, "tool")) ech_qwen_tool(j, i);
    }
    if (j->agp) ech_puts(b, "<|im_start|>assistant\n");
    return EMBER_OK;
}

/* Qwen3: an assistant turn after the last user query keeps its reasoning in
 * a <think> block; earlier ones lose it.  enable_thinking=false pre-fills an
 * empty think block after the generation prompt. */
static int ech_qwen3(ech_job *j) {
    ech_buf *b = &j->out;
    if (j->n == 0) return ech_fail(j, "%s", "qwen3: no messages");
    if (ech_is(&j->m[0], "system")) ech_im(b, "system", ech_c(&j->m[0]));
    int last_query = j->n - 1;
    for (int i = j->n - 1; i >= 0; i--) {
        ech_str c = ech_c(&j->m[i]);
        if (ech_is(&j->m[i], "user") && !(ech_starts(c, "<tool_response>") && ech_ends(c, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    for (int i = 0; i < j->n; i++) {
        const ember_chat_message *m = &j->m[i];
        if (ech_is(m, "user") || (ech_is(m, "system") && i > 0)) {
            ech_im(b, m->role, ech_c(m));
        } else if (ech_is(m, "assistant")) {
            ech_str content = ech_c(m), reasoning = {"", 0};
            const char *end = ech_find(content, "</think>");
            if (end) {
                const char *last_end = ech_rfind(content, "</think>");
                ech_str after = {last_end + 8, (size_t)(content.p + content.n - (last_end + 8))};
                ech_str before = {content.p, (size_t)(end - content.p)};
                before = ech_rstrip_nl(before);
                const char *open = ech_rfind(before, "<think>");
                if (open) before = (ech_str){open + 7, (size_t)(before.p + before.n - (open + 7))};
                reasoning = ech_lstrip_nl(before);
                content = ech_lstrip_nl(after);
            }
            ech_puts(b, "<|im_start|>assistant\n");
            if (i > last_query && (i == j->n - 1 || reasoning.n)) {
                ech_puts(b, "<think>\n");
                ech_putstr(b, ech_rstrip_nl(ech_lstrip_nl(reasoning)));
                ech_puts(b, "\n</think>\n\n");
                ech_putstr(b, ech_lstrip_nl(content));
            } else {
                ech_putstr(b, content);
            }
            ech_puts(b, "<|im_end|>\n");
        } else if (ech_is(m, "tool")) {
            ech_qwen_tool(j, i);
        }
    }
    if (j->agp) {
        ech_puts(b, "<|im_start|>assistant\n");
        if (!j->think) ech_puts(b, "<think>\n\n</think>\n\n");
    }
    return EMBER_OK;
}

/* Gemma: "assistant" is "model"; Gemma 2 refuses a system message, Gemma 3
 * puts it (untrimmed, then a blank line) at the start of the first turn. */
static int ech_gemma(ech_job *j, int v3) {
    ech_buf *b = &j->out;
    int from = 0;
    ech_str prefix = {"", 0};
    if (j->n && ech_is(&j->m[0], "system")) {
        if (!v3) return ech_fail(j, "%s", "gemma2: the template does not support a system message");
        prefix = ech_c(&j->m[0]);
        from = 1;
    }
    if (ech_check_alternation(j, from, v3 ? "gemma3" : "gemma2")) return EMBER_ERR_INVALID_ARG;
    ech_putstr(b, j->bos);
    for (int i = from; i < j->n; i++) {
        ech_puts(b, "<start_of_turn>");
        ech_puts(b, ech_is(&j->m[i], "assistant") ? "model" : j->m[i].role);
        ech_puts(b, "\n");
        if (i == from && v3 && from) { ech_putstr(b, prefix); ech_puts(b, "\n\n"); }
        ech_putstr(b, ech_strip(ech_c(&j->m[i])));
        ech_puts(b, "<end_of_turn>\n");
    }
    if (j->agp) ech_puts(b, "<start_of_turn>model\n");
    return EMBER_OK;
}

/* Phi-3 / 3.5: without the generation prompt the text ends with EOS; 3.5
 * leaves out an empty system message. */
static int ech_phi3(ech_job *j, int keep_empty_system) {
    ech_buf *b = &j->out;
    for (int i = 0; i < j->n; i++) {
        const ember_chat_message *m = &j->m[i];
        if ((ech_is(m, "system") && (m->content[0] || keep_empty_system)) || ech_is(m, "user") || ech_is(m, "assistant")) {
            ech_puts(b, "<|");
            ech_puts(b, m->role);
            ech_puts(b, "|>\n");
            ech_putstr(b, ech_c(m));
            ech_puts(b, "<|end|>\n");
        }
    }
    if (j->agp) ech_puts(b, "<|assistant|>\n");
    else ech_putstr(b, j->eos);
    return EMBER_OK;
}

/* Phi-4-mini: <|role|>content<|end|>, no newlines. */
static int ech_phi4_mini(ech_job *j) {
    ech_buf *b = &j->out;
    for (int i = 0; i < j->n; i++) {
        ech_puts(b, "<|");
        ech_puts(b, j->m[i].role);
        ech_puts(b, "|>");
        ech_putstr(b, ech_c(&j->m[i]));
        ech_puts(b, "<|end|>");
    }
    if (j->agp) ech_puts(b, "<|assistant|>");
    else ech_putstr(b, j->eos);
    return EMBER_OK;
}

/* Mistral v0.x / Mixtral: no system message, no spaces around replies. */
static int ech_mistral_v0(ech_job *j) {
    ech_buf *b = &j->out;
    if (ech_check_alternation(j, 0, "mistral-v0")) return EMBER_ERR_INVALID_ARG;
    ech_putstr(b, j->bos);
    for (int i = 0; i < j->n; i++) {
        const ember_chat_message *m = &j->m[i];
        if (ech_is(m, "user")) { ech_puts(b, "[INST] "); ech_putstr(b, ech_c(m)); ech_puts(b, " [/INST]"); }
        else if (ech_is(m, "assistant")) { ech_putstr(b, ech_c(m)); ech_putstr(b, j->eos); }
        else return ech_fail(j, "%s", "mistral-v0: only user and assistant roles are supported");
    }
    return EMBER_OK;
}

/* Phi-4 (as first published): every user turn is followed by the assistant
 * header, with or without the generation prompt. */
static int ech_phi4(ech_job *j) {
    ech_buf *b = &j->out;
    for (int i = 0; i < j->n; i++) {
        const ember_chat_message *m = &j->m[i];
        if (ech_is(m, "system")) { ech_puts(b, "<|im_start|>system<|im_sep|>"); ech_putstr(b, ech_c(m)); ech_puts(b, "<|im_end|>"); }
        else if (ech_is(m, "user")) { ech_puts(b, "<|im_start|>user<|im_sep|>"); ech_putstr(b, ech_c(m)); ech_puts(b, "<|im_end|><|im_start|>assistant<|im_sep|>"); }
        else if (ech_is(m, "assistant")) { ech_putstr(b, ech_c(m)); ech_puts(b, "<|im_end|>"); }
    }
    return EMBER_OK;
}

/* Mistral [INST] formats.  v1 puts the system message in the first user
 * turn and spaces around the tags; v3 puts it in the last user turn, trims
 * replies and has no space before [/INST]; v3-tekken has no spaces at all. */
static int ech_mistral_inst(ech_job *j, ech_format f) {
    ech_buf *b = &j->out;
    const char *name = ech_names[f];
    int from = j->n && ech_is(&j->m[0], "system");
    for (int i = from; i < j->n; i++)
        if (!ech_is(&j->m[i], "user") && !ech_is(&j->m[i], "assistant"))
            return ech_fail(j, "%s: only user and assistant roles are supported after an optional first system message", name);
    if (ech_check_alternation(j, from, name)) return EMBER_ERR_INVALID_ARG;
    ech_putstr(b, j->bos);
    for (int i = from; i < j->n; i++) {
        const ember_chat_message *m = &j->m[i];
        if (ech_is(m, "user")) {
            int with_system = from && (f == ECH_MISTRAL_V1 ? i == from : i == j->n - 1);
            ech_puts(b, f == ECH_MISTRAL_V1 ? " [INST] " : f == ECH_MISTRAL_V3 ? "[INST] " : "[INST]");
            if (with_system) { ech_putstr(b, ech_c(&j->m[0])); ech_puts(b, "\n\n"); }
            ech_putstr(b, ech_c(m));
            ech_puts(b, f == ECH_MISTRAL_V1 ? " [/INST]" : "[/INST]");
        } else {
            if (f != ECH_MISTRAL_V3_TEKKEN) ech_puts(b, " ");
            ech_putstr(b, f == ECH_MISTRAL_V3 ? ech_strip(ech_c(m)) : ech_c(m));
            ech_putstr(b, j->eos);
        }
    }
    return EMBER_OK;
}

/* Mistral v7: system prompts have their own tags, wherever they are. */
static int ech_mistral_v7(ech_job *j, int tekken) {
    ech_buf *b = &j->out;
    const char *sp = tekken ? "" : " ";
    ech_putstr(b, j->bos);
    for (int i = 0; i < j->n; i++) {
        const ember_chat_message *m = &j->m[i];
        if (ech_is(m, "user")) { ech_puts(b, "[INST]"); ech_puts(b, sp); ech_putstr(b, ech_c(m)); ech_puts(b, "[/INST]"); }
        else if (ech_is(m, "system")) { ech_puts(b, "[SYSTEM_PROMPT]"); ech_puts(b, sp); ech_putstr(b, ech_c(m)); ech_puts(b, "[/SYSTEM_PROMPT]"); }
        else if (ech_is(m, "assistant")) { ech_puts(b, sp); ech_putstr(b, ech_c(m)); ech_putstr(b, j->eos); }
        else return ech_fail(j, "%s: only user, system and assistant roles are supported", ech_names[tekken ? ECH_MISTRAL_V7_TEKKEN : ECH_MISTRAL_V7]);
    }
    return EMBER_OK;
}

static void ech_role_turn(ech_buf *b, const char *role, ech_str content) {
    ech_puts(b, "<|start_of_role|>");
    ech_puts(b, role);
    ech_puts(b, "<|end_of_role|>");
    ech_putstr(b, content);
    ech_puts(b, "<|end_of_text|>\n");
}

/* Granite 3.0 renders the messages as given; Granite 3.3 always starts with
 * a system turn (a dated default one if none is given).  The generation
 * prompt follows the last message only (none for an empty conversation). */
static int ech_granite(ech_job *j, int v33) {
    ech_buf *b = &j->out;
    int from = 0;
    if (v33) {
        if (j->n == 0) return ech_fail(j, "%s", "granite3.3: no messages");
        if (ech_is(&j->m[0], "system")) {
            ech_role_turn(b, "system", ech_c(&j->m[0]));
            from = 1;
        } else {
            char date[48], sys[256];
            if (ech_date(j, 1, date, sizeof date)) return EMBER_ERR_INVALID_ARG;
            snprintf(sys, sizeof sys, "Knowledge Cutoff Date: April 2024. Today's Date: %s. You are Granite, developed "
                     "by IBM. You are a helpful AI assistant.", date);
            ech_role_turn(b, "system", ech_s(sys));
        }
    }
    for (int i = from; i < j->n; i++) {
        const ember_chat_message *m = &j->m[i];
        if (v33) ech_role_turn(b, m->role, ech_c(m));
        else if (ech_is(m, "assistant_tool_call")) {
            ech_puts(b, "<|start_of_role|>assistant<|end_of_role|><|tool_call|>");
            ech_putstr(b, ech_c(m));
            ech_puts(b, "<|end_of_text|>\n");
        } else if (ech_is(m, "system") || ech_is(m, "user") || ech_is(m, "assistant") || ech_is(m, "tool_response")) {
            ech_role_turn(b, m->role, ech_c(m));
        }
        if (i == j->n - 1 && j->agp) ech_puts(b, "<|start_of_role|>assistant<|end_of_role|>");
    }
    return EMBER_OK;
}

/* Llama 2 chat: the system message is wrapped in <<SYS>> inside the first
 * user turn; every user turn starts with BOS; contents are stripped. */
static int ech_llama2(ech_job *j) {
    ech_buf *b = &j->out;
    int from = j->n && ech_is(&j->m[0], "system");
    if (ech_check_alternation(j, from, "llama2")) return EMBER_ERR_INVALID_ARG;
    for (int i = from; i < j->n; i++) {
        const ember_chat_message *m = &j->m[i];
        ech_buf c = {j->out.a, NULL, 0, 0, 0};
        if (i == from && from) {
            ech_puts(&c, "<<SYS>>\n");
            ech_puts(&c, j->m[0].content);
            ech_puts(&c, "\n<</SYS>>\n\n");
        }
        ech_puts(&c, m->content);
        if (c.oom) { ec_free(c.a, c.p); b->oom = 1; return EMBER_ERR_NOMEM; }
        ech_str content = ech_strip((ech_str){c.p ? c.p : "", c.n});
        if (ech_is(m, "user")) {
            ech_putstr(b, j->bos);
            ech_puts(b, "[INST] ");
            ech_putstr(b, content);
            ech_puts(b, " [/INST]");
        } else if (ech_is(m, "assistant")) {
            ech_puts(b, " ");
            ech_putstr(b, content);
            ech_puts(b, " ");
            ech_putstr(b, j->eos);
        }
        ec_free(c.a, c.p);
    }
    return EMBER_OK;
}

/* Zephyr / TinyLlama: <|role|>, newline, content, EOS, newline. */
static int ech_zephyr(ech_job *j) {
    ech_buf *b = &j->out;
    for (int i = 0; i < j->n; i++) {
        const ember_chat_message *m = &j->m[i];
        if (ech_is(m, "user") || ech_is(m, "system") || ech_is(m, "assistant")) {
            ech_puts(b, "<|");
            ech_puts(b, m->role);
            ech_puts(b, "|>\n");
            ech_putstr(b, ech_c(m));
            ech_putstr(b, j->eos);
            ech_puts(b, "\n");
        }
        if (i == j->n - 1 && j->agp) ech_puts(b, "<|assistant|>\n");
    }
    return EMBER_OK;
}

static int ech_render(ech_job *j, ech_format f) {
    switch (f) {
    case ECH_LLAMA3: return ech_llama3(j);
    case ECH_LLAMA31: return ech_llama31(j, 0);
    case ECH_LLAMA32: return ech_llama31(j, 1);
    case ECH_CHATML: return ech_chatml(j, NULL);
    case ECH_QWEN25: return ech_chatml(j, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    case ECH_QWEN3: return ech_qwen3(j);
    case ECH_GEMMA2: return ech_gemma(j, 0);
    case ECH_GEMMA3: return ech_gemma(j, 1);
    case ECH_PHI3: return ech_phi3(j, 0);
    case ECH_PHI3_MINI: return ech_phi3(j, 1);
    case ECH_PHI4: return ech_phi4(j);
    case ECH_PHI4_MINI: return ech_phi4_mini(j);
    case ECH_MISTRAL_V0: return ech_mistral_v0(j);
    case ECH_MISTRAL_V1: case ECH_MISTRAL_V3: case ECH_MISTRAL_V3_TEKKEN: return ech_mistral_inst(j, f);
    case ECH_MISTRAL_V7: return ech_mistral_v7(j, 0);
    case ECH_MISTRAL_V7_TEKKEN: return ech_mistral_v7(j, 1);
    case ECH_GRANITE: return ech_granite(j, 0);
    case ECH_GRANITE33: return ech_granite(j, 1);
    case ECH_LLAMA2: return ech_llama2(j);
    case ECH_ZEPHYR: return ech_zephyr(j);
    default: return ech_fail(j, "%s", "unknown format");
    }
}

/* ---- the public renderer -------------------------------------------------------- */

ember_chat_params ember_chat_default_params(void) {
    ember_chat_params p;
    memset(&p, 0, sizeof p);
    p.add_generation_prompt = 1;
    p.enable_thinking = 1;
    return p;
}

static ember_status ech_error(ember_error *err, int code, const char *msg) {
    return ec_fail(err, (ember_status)code, "%s", msg ? msg : "");
}

/* The text of a special token (BOS/EOS) as templates print it ("" for
 * none). */
static char *ech_token_text(const ember_model *model, ember_token t, const ember_allocator *a) {
    size_t n = 0;
    if (t >= 0 && ember_token_to_piece(model, t, -1, EMBER_TOKENIZE_SPECIAL, NULL, 0, &n, NULL) != EMBER_ERR_BUFFER_TOO_SMALL)
        n = 0;
    char *s = (char *)ec_malloc(a, n + 1);
    if (!s) return NULL;
    s[0] = 0;
    if (n) ember_token_to_piece(model, t, -1, EMBER_TOKENIZE_SPECIAL, s, n + 1, NULL, NULL);
    return s;
}

/* The model's tokenizer.chat_template, or NULL (with *missing set) if none. */
static char *ech_model_template(const ember_model *model, const ember_allocator *a, int *missing) {
    *missing = 0;
    size_t n = 0;
    ember_model_meta(model, "tokenizer.chat_template", NULL, 0, &n, NULL);
    if (n == 0) { *missing = 1; return NULL; }
    char *s = (char *)ec_malloc(a, n + 1);
    if (s) ember_model_meta(model, "tokenizer.chat_template", s, n + 1, NULL, NULL);
    return s;
}

/* Render into a new buffer (from a): *out and *len on success. */
static ember_status ech_apply(const ember_model *model, const ember_chat_params *params, const ember_chat_message *msgs,
                     int n_msgs, char **out, size_t *len, ember_error *err) {
    ember_chat_params p = params ? *params : ember_chat_default_params();
    const ember_allocator *a = p.allocator;
    char msg[256];
    *out = NULL;
    *len = 0;
    if (n_msgs < 0 || (!msgs && n_msgs)) return ech_error(err, EMBER_ERR_INVALID_ARG, "invalid messages");
    for (int i = 0; i < n_msgs; i++)
        if (!msgs[i].role || !msgs[i].content)
            return ech_error(err, EMBER_ERR_INVALID_ARG, "a message has a NULL role or content");
    if (!model && !p.template_name)
        return ech_error(err, EMBER_ERR_INVALID_ARG, "no model and no template: name a template");
    char *owned = NULL;
    const char *tmpl = p.template_name;
    if (!tmpl) {
        int missing;
        owned = ech_model_template(model, a, &missing);
        if (missing) {
            snprintf(msg, sizeof msg, "the model has no chat template (tokenizer.chat_template): name a built-in format");
            return ech_error(err, EMBER_ERR_MISSING, msg);
        }
        if (!owned) return ech_error(err, EMBER_ERR_NOMEM, "out of memory");
        tmpl = owned;
    }
    const char *why;
    int f = ech_detect(tmpl, &why);
    int named = !owned && !strchr(tmpl, '{');
    ec_free(a, owned);
    if (f < 0) {
        if (named) snprintf(msg, sizeof msg, "unknown chat template name '%.40s'", tmpl);
        else snprintf(msg, sizeof msg, "the chat template is not one ember can render (%s): name a built-in format",
                      why ? why : "no known format's markers");
        return ech_error(err, EMBER_ERR_UNSUPPORTED, msg);
    }
    char *bos = NULL, *eos = NULL;
    if (!p.bos_token && model) bos = ech_token_text(model, ember_token_bos(model), a);
    if (!p.eos_token && model) eos = ech_token_text(model, ember_token_eos(model), a);
    if (model && ((!p.bos_token && !bos) || (!p.eos_token && !eos))) {
        ec_free(a, bos);
        ec_free(a, eos);
        return ech_error(err, EMBER_ERR_NOMEM, "out of memory");
    }
    ech_job j;
    memset(&j, 0, sizeof j);
    j.m = msgs;
    j.n = n_msgs;
    j.agp = p.add_generation_prompt != 0;
    j.think = p.enable_thinking != 0;
    j.bos = ech_s(p.bos_token ? p.bos_token : bos ? bos : "");
    j.eos = ech_s(p.eos_token ? p.eos_token : eos ? eos : "");
    j.date = p.date;
    j.out.a = a;
    j.err = msg;
    int rc = ech_render(&j, (ech_format)f);
    ec_free(a, bos);
    ec_free(a, eos);
    if (rc == EMBER_OK && j.out.oom) rc = EMBER_ERR_NOMEM, snprintf(msg, sizeof msg, "out of memory");
    if (rc != EMBER_OK) {
        ec_free(a, j.out.p);
        return ech_error(err, rc, msg);
    }
    if (!j.out.p) {   /* an empty rendering */
        j.out.p = (char *)ec_malloc(a, 1);
        if (!j.out.p) return ech_error(err, EMBER_ERR_NOMEM, "out of memory");
        j.out.p[0] = 0;
    }
    *out = j.out.p;
    *len = j.out.n;
    return ec_ok(err);
}

ember_status ember_chat_apply(const ember_model *model, const ember_chat_params *params,
                              const ember_chat_message *messages, int n_messages, char *buf, size_t size,
                              size_t *out_len, ember_error *err) {
    if (out_len) *out_len = 0;
    if (!buf && size) return ech_error(err, EMBER_ERR_INVALID_ARG, "buf is NULL");
    if (size) buf[0] = 0;
    char *text;
    size_t len;
    ember_status rc = ech_apply(model, params, messages, n_messages, &text, &len, err);
    if (rc != EMBER_OK) return rc;
    rc = ec_put_text(text, len, buf, size, out_len, "the rendered prompt", err);
    ec_free(params ? params->allocator : NULL, text);
    return rc;
}

/* ---- conversations ------------------------------------------------------------ */

struct ember_chat {
    const ember_model *model;
    ember_context *ctx;
    ember_chat_params p;
    char *tmpl, *date, *bos, *eos;     /* owned copies of the params' strings */
    ember_chat_message *msgs;          /* owned copies */
    int n_msgs, cap_msgs;
    ember_token *held;                 /* the tokens the context holds, in order */
    int n_held, cap_held;
    ech_buf reply;                     /* the reply being generated */
    ember_token_callback cb;
    void *ud;
    int oom;
    char errmsg[256];
};

static char *ech_dup(const ember_allocator *a, const char *s, int *oom) {
    if (!s) return NULL;
    size_t n = strlen(s);
    char *d = (char *)ec_malloc(a, n + 1);
    if (!d) { *oom = 1; return NULL; }
    memcpy(d, s, n + 1);
    return d;
}

void ember_chat_free(ember_chat *chat) {
    if (!chat) return;
    const ember_allocator *a = chat->p.allocator;
    for (int i = 0; i < chat->n_msgs; i++) {
        ec_free(a, (void *)chat->msgs[i].role);
        ec_free(a, (void *)chat->msgs[i].content);
    }
    ec_free(a, chat->msgs);
    ec_free(a, chat->held);
    ec_free(a, chat->reply.p);
    ec_free(a, chat->tmpl);
    ec_free(a, chat->date);
    ec_free(a, chat->bos);
    ec_free(a, chat->eos);
    ember_allocator copy;
    if (a) { copy = *a; a = &copy; }
    ec_free(a, chat);
}

ember_status ember_chat_create(const ember_model *model, ember_context *ctx, const ember_chat_params *params,
                               ember_chat **out, ember_error *err) {
    if (!out) return ech_error(err, EMBER_ERR_INVALID_ARG, "out_chat is NULL");
    *out = NULL;
    if (!model || !ctx) return ech_error(err, EMBER_ERR_INVALID_ARG, "model or context is NULL");
    ember_chat_params p = params ? *params : ember_chat_default_params();
    /* Refuse a template ember cannot render now, not at the first reply. */
    ember_chat_message probe = {"user", "hi"};
    char *text;
    size_t len;
    ember_status rc = ech_apply(model, &p, &probe, 1, &text, &len, err);
    if (rc != EMBER_OK) return rc;
    ec_free(p.allocator, text);
    ember_chat *c = (ember_chat *)ec_calloc(p.allocator, 1, sizeof *c);
    if (!c) return ech_error(err, EMBER_ERR_NOMEM, "out of memory");
    int oom = 0;
    c->model = model;
    c->ctx = ctx;
    c->tmpl = ech_dup(p.allocator, p.template_name, &oom);
    c->date = ech_dup(p.allocator, p.date, &oom);
    c->bos = ech_dup(p.allocator, p.bos_token, &oom);
    c->eos = ech_dup(p.allocator, p.eos_token, &oom);
    p.template_name = c->tmpl;
    p.date = c->date;
    p.bos_token = c->bos;
    p.eos_token = c->eos;
    c->p = p;
    c->reply.a = p.allocator;
    if (oom) { ember_chat_free(c); return ech_error(err, EMBER_ERR_NOMEM, "out of memory"); }
    *out = c;
    return ec_ok(err);
}

static ember_status ech_chat_fail(ember_chat *c, ember_status code, const char *fmt, ...)
    EC_PRINTF(3, 4)
    ;
static ember_status ech_chat_fail(ember_chat *c, ember_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

const char *ember_chat_errmsg(const ember_chat *chat) { return chat ? chat->errmsg : "chat is NULL"; }
int ember_chat_n_messages(const ember_chat *chat) { return chat ? chat->n_msgs : 0; }

const ember_chat_message *ember_chat_message_at(const ember_chat *chat, int i) {
    return chat && i >= 0 && i < chat->n_msgs ? &chat->msgs[i] : NULL;
}

ember_status ember_chat_add(ember_chat *chat, const char *role, const char *content) {
    if (!chat) return EMBER_ERR_INVALID_ARG;
    chat->errmsg[0] = 0;
    if (!role || !content) return ech_chat_fail(chat, EMBER_ERR_INVALID_ARG, "%s is NULL", role ? "content" : "role");
    const ember_allocator *a = chat->p.allocator;
    if (chat->n_msgs == chat->cap_msgs) {
        int cap = chat->cap_msgs ? chat->cap_msgs * 2 : 8;
        ember_chat_message *m = (ember_chat_message *)ec_realloc(a, chat->msgs, (size_t)cap * sizeof *m);
        if (!m) return ech_chat_fail(chat, EMBER_ERR_NOMEM, "out of memory");
        chat->msgs = m;
        chat->cap_msgs = cap;
    }
    int oom = 0;
    char *r = ech_dup(a, role, &oom), *t = ech_dup(a, content, &oom);
    if (oom) { ec_free(a, r); ec_free(a, t); return ech_chat_fail(chat, EMBER_ERR_NOMEM, "out of memory"); }
    chat->msgs[chat->n_msgs].role = r;
    chat->msgs[chat->n_msgs].content = t;
    chat->n_msgs++;
    return EMBER_OK;
}

ember_status ember_chat_erase(ember_chat *chat, int first, int count) {
    if (!chat) return EMBER_ERR_INVALID_ARG;
    chat->errmsg[0] = 0;
    if (first < 0 || count < 0 || first > chat->n_msgs || count > chat->n_msgs - first)
        return ech_chat_fail(chat, EMBER_ERR_INVALID_ARG, "messages %d..%d are not in the chat's %d", first,
                             first + count - 1, chat->n_msgs);
    for (int i = first; i < first + count; i++) {
        ec_free(chat->p.allocator, (void *)chat->msgs[i].role);
        ec_free(chat->p.allocator, (void *)chat->msgs[i].content);
    }
    memmove(chat->msgs + first, chat->msgs + first + count, (size_t)(chat->n_msgs - first - count) * sizeof *chat->msgs);
    chat->n_msgs -= count;
    return EMBER_OK;
}

static int ech_hold(ember_chat *c, ember_token t) {
    if (c->n_held == c->cap_held) {
        int cap = c->cap_held ? c->cap_held * 2 : 256;
        ember_token *h = (ember_token *)ec_realloc(c->p.allocator, c->held, (size_t)cap * sizeof *h);
        if (!h) { c->oom = 1; return -1; }
        c->held = h;
        c->cap_held = cap;
    }
    c->held[c->n_held++] = t;
    return 0;
}

/* Between ember_generate and the caller: remember each token and the reply's
 * text, then pass them on. */
static int ech_on_token(void *ud, ember_token tok, const char *text, size_t len) {
    ember_chat *c = (ember_chat *)ud;
    if (tok >= 0 && ech_hold(c, tok)) return 1;
    ech_put(&c->reply, text, len);
    if (c->reply.oom) { c->oom = 1; return 1; }
    return c->cb ? c->cb(c->ud, tok, text, len) : 0;
}

/* Tokenize the rendered conversation: special-token text becomes its id;
 * BOS goes first if the model wants one and the template did not write it.
 * Never EOS: the prompt ends where the assistant is to begin. */
static ember_status ech_tokenize(ember_chat *c, const char *text, size_t len, ember_token **out, int *n) {
    const ember_allocator *a = c->p.allocator;
    ember_token bos = ember_token_bos(c->model), first[2];
    size_t n_special = 0, count = 0;
    int add_bos = 0;
    ember_error err;
    *out = NULL;
    *n = 0;
    if (bos >= 0 && ember_tokenize(c->model, "", 0, EMBER_TOKENIZE_ADD_BOS, first, 2, &n_special, NULL) == EMBER_OK &&
        n_special > 0 && first[0] == bos) {   /* the model asks for BOS (add_bos_token) */
        char *bos_text = ech_token_text(c->model, bos, a);
        if (!bos_text) return ech_chat_fail(c, EMBER_ERR_NOMEM, "out of memory");
        add_bos = !(bos_text[0] && !strncmp(text, bos_text, strlen(bos_text)));
        ec_free(a, bos_text);
    }
    ember_status rc = ember_tokenize(c->model, text, len, EMBER_TOKENIZE_SPECIAL, NULL, 0, &count, &err);
    if (rc != EMBER_OK && rc != EMBER_ERR_BUFFER_TOO_SMALL) return ech_chat_fail(c, rc, "%s", err.message);
    if (count >= (size_t)INT32_MAX) return ech_chat_fail(c, EMBER_ERR_INVALID_ARG, "the conversation is %zu tokens", count);
    *out = (ember_token *)ec_malloc(a, (count + 2) * sizeof **out);
    if (!*out) return ech_chat_fail(c, EMBER_ERR_NOMEM, "out of memory");
    rc = ember_tokenize(c->model, text, len, EMBER_TOKENIZE_SPECIAL, *out + add_bos, count, &count, &err);
    if (rc != EMBER_OK) { ec_free(a, *out); *out = NULL; return ech_chat_fail(c, rc, "%s", err.message); }
    *n = (int)count;
    if (add_bos) { (*out)[0] = bos; (*n)++; }
    return EMBER_OK;
}

ember_status ember_chat_respond(ember_chat *c, ember_sampler *sampler, int n_predict, ember_token_callback cb,
                                void *ud, ember_generate_result *result) {
    if (result) memset(result, 0, sizeof *result);
    if (!c) return EMBER_ERR_INVALID_ARG;
    c->errmsg[0] = 0;
    if (!sampler) return ech_chat_fail(c, EMBER_ERR_INVALID_ARG, "sampler is NULL");
    if (n_predict < 0) return ech_chat_fail(c, EMBER_ERR_INVALID_ARG, "n_predict %d is negative", n_predict);
    const ember_allocator *a = c->p.allocator;
    ember_error err;
    char *text;
    size_t len;
    ember_chat_params p = c->p;
    p.add_generation_prompt = 1;
    ember_status rc = ech_apply(c->model, &p, c->msgs, c->n_msgs, &text, &len, &err);
    if (rc != EMBER_OK) return ech_chat_fail(c, rc, "%s", err.message);
    ember_token *toks;
    int n;
    rc = ech_tokenize(c, text, len, &toks, &n);
    ec_free(a, text);
    if (rc != EMBER_OK) return rc;
    const int n_ctx = ember_context_n_ctx(c->ctx);
    if (n == 0 || n >= n_ctx) {
        ec_free(a, toks);
        return n ? ech_chat_fail(c, EMBER_ERR_CONTEXT_FULL,
                                 "the conversation is %d tokens and the context holds %d: drop earlier turns", n, n_ctx)
                 : ech_chat_fail(c, EMBER_ERR_INVALID_ARG, "the conversation renders to no tokens");
    }
    /* Keep what the context already holds of this text; evaluate the rest.
     * A template may render earlier turns differently once a new one
     * follows (Qwen3 drops their reasoning): then roll back to where the
     * texts part.  At least one token is evaluated, for fresh logits. */
    int pos = ember_context_pos(c->ctx);
    if (c->n_held > pos) c->n_held = pos;
    int keep = 0;
    while (keep < c->n_held && keep < n - 1 && c->held[keep] == toks[keep]) keep++;
    if (keep != pos && ember_context_set_pos(c->ctx, keep) != EMBER_OK) {
        keep = 0;   /* a sliding window cannot go back that far: start over */
        ember_context_set_pos(c->ctx, 0);
    }
    c->n_held = keep;
    for (int i = keep; i < n && !c->oom; i++) ech_hold(c, toks[i]);
    if (c->oom) { ec_free(a, toks); c->oom = 0; c->n_held = keep; return ech_chat_fail(c, EMBER_ERR_NOMEM, "out of memory"); }
    c->reply.n = 0;
    c->cb = cb;
    c->ud = ud;
    rc = ember_generate(c->ctx, sampler, toks + keep, n - keep, n_predict, ech_on_token, c, result);
    ec_free(a, toks);
    pos = ember_context_pos(c->ctx);
    if (c->n_held > pos) c->n_held = pos;   /* a failed batch, or the last token when the context filled */
    if (rc != EMBER_OK) return ech_chat_fail(c, rc, "%s", ember_context_errmsg(c->ctx));
    if (c->oom) { c->oom = 0; return ech_chat_fail(c, EMBER_ERR_NOMEM, "out of memory"); }
    return ember_chat_add(c, "assistant", c->reply.p ? c->reply.p : "");
}
