/*
 * mem_bandwidth.c - how fast can this machine stream memory that holds model
 * weights?  Measures read bandwidth (GB/s, median of passes) at 1..N threads for
 *
 *   anon-huge    anonymous memory with MADV_HUGEPAGE (what a read-in model gets)
 *   anon-4k      anonymous memory with MADV_NOHUGEPAGE
 *   file-mmap    a read-only MAP_SHARED mapping of FILE (page-cache pages)
 *   file-read    FILE read() into MADV_HUGEPAGE memory
 *
 * The reads use 64-byte vector loads (AVX-512 / AVX2 when compiled for them)
 * and four independent accumulators, so one core issues loads as fast as it can.
 * A tool for docs/benchmarks.md; not part of the library or of the tests.
 *
 *   cc -O2 -march=native -pthread -o build/bench/mem_bandwidth tools/mem_bandwidth.c
 *   build/bench/mem_bandwidth [-t MAX_THREADS] [-s MIB] [-r PASSES] [FILE]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

typedef struct job {
    const unsigned char *p;
    size_t n;          /* bytes, a multiple of 256 */
    uint64_t sum;
    pthread_barrier_t *start;
} job;

static uint64_t read_sum(const unsigned char *p, size_t n) {
#if defined(__AVX512F__)
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 256) {
        a = _mm512_xor_si512(a, _mm512_load_si512((const void *)(p + i)));
        b = _mm512_xor_si512(b, _mm512_load_si512((const void *)(p + i + 64)));
        c = _mm512_xor_si512(c, _mm512_load_si512((const void *)(p + i + 128)));
        d = _mm512_xor_si512(d, _mm512_load_si512((const void *)(p + i + 192)));
    }
    a = _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d));
    uint64_t out[8];
    _mm512_storeu_si512((void *)out, a);
    return out[0] ^ out[1] ^ out[2] ^ out[3] ^ out[4] ^ out[5] ^ out[6] ^ out[7];
#elif defined(__AVX2__)
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 128) {
        a = _mm256_xor_si256(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_xor_si256(b, _mm256_load_si256((const __m256i *)(p + i + 32)));
        c = _mm256_xor_si256(c, _mm256_load_si256((const __m256i *)(p + i + 64)));
        d = _mm256_xor_si256(d, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, a);
    return out[0] ^ out[1] ^ out[2] ^ out[3];
#else
    const uint64_t *q = (const uint64_t *)(const void *)p;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i < n / 8; i += 4) { s0 ^= q[i]; s1 ^= q[i + 1]; s2 ^= q[i + 2]; s3 ^= q[i + 3]; }
    return s0 ^ s1 ^ s2 ^ s3;
#endif
}

static void *worker(void *arg) {
    job *j = arg;
    pthread_barrier_wait(j->start);
    j->sum = read_sum(j->p, j->n);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median GB/s of `passes` reads of buf[0..bytes) split over nt threads. */
static double bandwidth(const unsigned char *buf, size_t bytes, int nt, int passes) {
    double t[64];
    if (passes > 64) passes = 64;
    size_t share = bytes / (size_t)nt / 256 * 256;
    uint64_t x = 0;
    for (int r = 0; r < passes; r++) {
        pthread_t th[256];
        job jobs[256];
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned)nt + 1);
        for (int k = 0; k < nt; k++) {
            jobs[k] = (job){buf + share * (size_t)k, share, 0, &start};
            pthread_create(&th[k], NULL, worker, &jobs[k]);
        }
        double t0 = now_s();
        pthread_barrier_wait(&start);
        for (int k = 0; k < nt; k++) { pthread_join(th[k], NULL); x ^= jobs[k].sum; }
        t[r] = now_s() - t0;
        pthread_barrier_destroy(&start);
    }
    if (x == 0x5eed) fputc(' ', stderr); /* keep the sums alive */
    qsort(t, (size_t)passes, sizeof *t, cmp_double);
    return share * (double)nt / t[passes / 2] / 1e9;
}

static unsigned char *anon(size_t bytes, int huge) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    return p;
}

static void report(const char *name, const unsigned char *buf, size_t bytes, int max_t, int passes) {
    printf("%-10s", name);
    for (int t = 1; t <= max_t; t++) printf("  %dt %6.1f GB/s", t, bandwidth(buf, bytes, t, passes));
    printf("\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    int max_t = (int)sysconf(_SC_NPROCESSORS_ONLN), passes = 7;
    size_t mib = 1024;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) max_t = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-s") && i + 1 < argc) mib = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) passes = atoi(argv[++i]);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [-t MAX_THREADS] [-s MIB] [-r PASSES] [FILE]\n", argv[0]);
            return 2;
        } else file = argv[i];
    }
    if (max_t < 1) max_t = 1;
    if (max_t > 256) max_t = 256;
    if (passes < 1) passes = 1;
    size_t bytes = mib << 20;
    printf("read bandwidth, %zu MiB buffers, median of %d passes, vector loads: %s\n", mib, passes,
#if defined(__AVX512F__)
           "avx512"
#elif defined(__AVX2__)
           "avx2"
#else
           "scalar"
#endif
    );

    for (int huge = 1; huge >= 0; huge--) {
        unsigned char *b = anon(bytes, huge);
        if (!b) { perror("mmap"); return 1; }
        for (size_t i = 0; i < bytes; i += 64) b[i] = (unsigned char)i; /* touch every line */
        report(huge ? "anon-huge" : "anon-4k", b, bytes, max_t, passes);
        munmap(b, bytes);
    }
    if (!file) return 0;

    int fd = open(file, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) { fprintf(stderr, "%s: %s\n", file, strerror(errno)); return 1; }
    size_t fbytes = (size_t)st.st_size / 256 * 256;
    if (fbytes < 256) { fprintf(stderr, "%s: too small\n", file); return 1; }
    unsigned char *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (m == MAP_FAILED) { perror("mmap file"); return 1; }
    read_sum(m, fbytes); /* fault everything in first */
    printf("file %s: %.1f MiB\n", file, fbytes / 1048576.0);
    report("file-mmap", m, fbytes, max_t, passes);
    munmap(m, (size_t)st.st_size);

    unsigned char *b = anon(fbytes, 1);
    if (!b) { perror("mmap"); return 1; }
    size_t got = 0;
    while (got < fbytes) {
        ssize_t r = pread(fd, b + got, fbytes - got, (off_t)got);
        if (r <= 0) { fprintf(stderr, "%s: read failed\n", file); return 1; }
        got += (size_t)r;
    }
    report("file-read", b, fbytes, max_t, passes);
    munmap(b, fbytes);
    close(fd);
    return 0;
}
