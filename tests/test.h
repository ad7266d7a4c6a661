/* test.h - a minimal test harness: CHECK(cond, fmt, ...) records a failure
 * with its location and goes on; test_summary() prints "N passed, M failed"
 * and returns the exit status. */
#ifndef EMBER_TEST_H
#define EMBER_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed, test_failed, test_skipped;

#define CHECK(cond, ...) do {                                             \
        if (cond) { test_passed++; }                                      \
        else {                                                            \
            test_failed++;                                                \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
        }                                                                 \
    } while (0)

/* Length of an incomplete (valid so far) UTF-8 sequence at the end of s:
 * the bytes a streaming callback must hold back. */
static inline size_t test_utf8_incomplete(const unsigned char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned c = s[n - k];
        if ((c & 0xC0) == 0x80) continue;
        size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

/* Directory of the shared test data, or NULL (loudly) if it is missing. */
static inline const char *test_shared_dir(void) {
    const char *d = getenv("EMBER_SHARED");
    if (!d) d = "../shared";
    FILE *f;
    char probe[1024];
    snprintf(probe, sizeof probe, "%s/README.md", d);
    f = fopen(probe, "rb");
    if (!f) {
        printf("SKIP: %s not found (../shared test data); the checks that need it did not run\n", d);
        test_skipped++;
        return NULL;
    }
    fclose(f);
    return d;
}

/* A fresh, empty file for a test to write, its name in path[size]: under
 * /tmp (mkstemp) on POSIX, under %TEMP% on Windows.  0 on success.  Remove
 * it with remove(). */
#ifdef _WIN32
#include <process.h>
static inline const char *test_temp_dir(void) {
    const char *d = getenv("TEMP");
    if (!d || !*d) d = getenv("TMP");
    return d && *d ? d : ".";
}
static inline int test_temp_file(char *path, size_t size, const char *tag) {
    static unsigned counter;
    for (int tries = 0; tries < 100; tries++) {
        snprintf(path, size, "%s\\%s_%d_%u", test_temp_dir(), tag, _getpid(), counter++);
        FILE *f = fopen(path, "rb");
        if (f) { fclose(f); continue; }   /* taken */
        f = fopen(path, "wb");
        if (f) { fclose(f); return 0; }
    }
    return -1;
}
#else
#include <unistd.h>
static inline const char *test_temp_dir(void) { return "/tmp"; }
static inline int test_temp_file(char *path, size_t size, const char *tag) {
    snprintf(path, size, "/tmp/%s_XXXXXX", tag);
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}
#endif

static inline int test_summary(const char *name) {
    printf("%s: %d passed, %d failed, %d skipped\n", name, test_passed, test_failed, test_skipped);
    return test_failed ? 1 : 0;
}

#endif
