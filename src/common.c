/* common.c - allocator hook, error formatting, UTF-8 helpers. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *ec_malloc(const ember_allocator *a, size_t n) {
    if (n == 0) n = 1;
    return a ? a->malloc_fn(a->user_data, n) : malloc(n);
}

void *ec_calloc(const ember_allocator *a, size_t count, size_t size) {
    uint64_t n;
    if (ec_mul_u64(count, size, &n) != 0 || n > SIZE_MAX) return NULL;
    void *p = ec_malloc(a, (size_t)n);
    if (p) memset(p, 0, (size_t)n);
    return p;
}

void *ec_realloc(const ember_allocator *a, void *p, size_t n) {
    if (n == 0) n = 1;
    return a ? a->realloc_fn(a->user_data, p, n) : realloc(p, n);
}

void ec_free(const ember_allocator *a, void *p) {
    if (!p) return;
    if (a) a->free_fn(a->user_data, p);
    else free(p);
}

/* The byte before an aligned block holds nothing useful; the offset to the
 * raw block is stored in the 8 bytes before it. */
void *ec_malloc_aligned(const ember_allocator *a, size_t n) {
    const size_t align = 64;
    if (n > SIZE_MAX - align - sizeof(size_t)) return NULL;
    unsigned char *raw = (unsigned char *)ec_malloc(a, n + align + sizeof(size_t));
    if (!raw) return NULL;
    uintptr_t start = (uintptr_t)(raw + sizeof(size_t));
    uintptr_t aligned = (start + align - 1) & ~(uintptr_t)(align - 1);
    size_t off = (size_t)(aligned - (uintptr_t)raw);
    memcpy((unsigned char *)aligned - sizeof(size_t), &off, sizeof off);
    return (void *)aligned;
}

void ec_free_aligned(const ember_allocator *a, void *p) {
    if (!p) return;
    size_t off;
    memcpy(&off, (unsigned char *)p - sizeof(size_t), sizeof off);
    ec_free(a, (unsigned char *)p - off);
}

int ec_errorf(char *buf, size_t size, int code, const char *fmt, ...) {
    if (buf && size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, size, fmt, ap);
        va_end(ap);
    }
    return code;
}

ember_status ec_fail(ember_error *err, ember_status code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        err->message[0] = 0;
        if (fmt) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err->message, sizeof err->message, fmt, ap);
            va_end(ap);
        }
        if (!err->message[0]) snprintf(err->message, sizeof err->message, "%s", ember_status_string(code));
    }
    return code;
}

ember_status ec_ok(ember_error *err) {
    if (err) {
        err->code = EMBER_OK;
        err->message[0] = 0;
    }
    return EMBER_OK;
}

ember_status ec_put_text(const char *src, size_t n, char *buf, size_t size, size_t *out_len, const char *what,
                         ember_error *err) {
    if (out_len) *out_len = n;
    if (size) {
        size_t k = n < size ? n : size - 1;
        if (k) memcpy(buf, src, k);
        buf[k] = 0;
    }
    if (n < size) return ec_ok(err);
    return ec_fail(err, EMBER_ERR_BUFFER_TOO_SMALL, "%s needs %zu bytes (%zu and the NUL), the buffer holds %zu", what,
                   n + 1, n, size);
}

int ec_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    int len;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

size_t ec_utf8_incomplete_tail(const unsigned char *s, size_t n) {
    /* Look back at most 3 bytes for a lead byte whose sequence is cut off. */
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned c = s[n - k];
        if ((c & 0xC0) == 0x80) continue;          /* continuation: keep looking */
        size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return need > k ? k : 0;
    }
    return 0;
}
