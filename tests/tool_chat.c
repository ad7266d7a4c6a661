/* tool_chat - render many conversations with one chat template (for
 * tests/test_chat.py, which compares them with Jinja).  Public API only.
 *   tool_chat TEMPLATE_FILE BOS EOS DATE IN OUT
 *   tool_chat --detect TEMPLATE_FILE    prints the format it is recognised as
 * TEMPLATE_FILE holds a Jinja template (or a format name).  IN holds
 * records: uint32 flags (1 = add_generation_prompt, 2 = enable_thinking),
 * uint32 message count, then per message two strings (role, content), each
 * a uint32 length and bytes.  OUT gets per record an int32 status, a uint32
 * length and that many bytes: the rendering, or the error message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ember.h"

static int read_u32(FILE *f, uint32_t *v) {
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4) return -1;
    *v = b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}

static void write_u32(FILE *f, uint32_t v) {
    unsigned char b[4] = {v & 255, v >> 8 & 255, v >> 16 & 255, v >> 24};
    fwrite(b, 1, 4, f);
}

static char *read_str(FILE *f) {
    uint32_t n;
    if (read_u32(f, &n) || n > (1u << 28)) return NULL;
    char *s = malloc(n + 1);
    if (!s || fread(s, 1, n, f) != n) { free(s); return NULL; }
    s[n] = 0;
    return s;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) { free(s); s = NULL; }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--detect")) {
        char *t = slurp(argv[2]);
        const char *name = t ? ember_chat_template_detect(t) : NULL;
        printf("%s\n", name ? name : "(none)");
        free(t);
        return t ? 0 : 1;
    }
    if (argc != 7) { fprintf(stderr, "usage: tool_chat TEMPLATE_FILE BOS EOS DATE IN OUT\n"); return 2; }
    char *tmpl = slurp(argv[1]);
    FILE *in = fopen(argv[5], "rb"), *out = fopen(argv[6], "wb");
    if (!tmpl || !in || !out) { fprintf(stderr, "cannot open files\n"); return 1; }
    uint32_t flags, n;
    while (read_u32(in, &flags) == 0) {
        if (read_u32(in, &n) || n > 10000) { fprintf(stderr, "bad input\n"); return 1; }
        ember_chat_message *m = calloc(n + 1, sizeof *m);
        for (uint32_t i = 0; i < n; i++) {
            m[i].role = read_str(in);
            m[i].content = read_str(in);
            if (!m[i].role || !m[i].content) { fprintf(stderr, "bad input\n"); return 1; }
        }
        ember_chat_params p = ember_chat_default_params();
        p.template_name = tmpl;
        p.bos_token = argv[2];
        p.eos_token = argv[3];
        p.date = argv[4];
        p.add_generation_prompt = flags & 1;
        p.enable_thinking = (flags & 2) != 0;
        ember_error err;
        size_t len = 0, len2 = 0;
        ember_status rc = ember_chat_apply(NULL, &p, m, (int)n, NULL, 0, &len, &err);
        if (rc != EMBER_OK && rc != EMBER_ERR_BUFFER_TOO_SMALL) {
            write_u32(out, (uint32_t)rc);
            write_u32(out, (uint32_t)strlen(err.message));
            fwrite(err.message, 1, strlen(err.message), out);
        } else {
            char *buf = malloc(len + 1);
            rc = ember_chat_apply(NULL, &p, m, (int)n, buf, len + 1, &len2, &err);
            if (rc != EMBER_OK || len2 != len) { fprintf(stderr, "length changed between calls\n"); return 1; }
            write_u32(out, 0);
            write_u32(out, (uint32_t)len);
            fwrite(buf, 1, len, out);
            free(buf);
        }
        for (uint32_t i = 0; i < n; i++) { free((void *)m[i].role); free((void *)m[i].content); }
        free(m);
    }
    fclose(in);
    fclose(out);
    free(tmpl);
    return 0;
}
