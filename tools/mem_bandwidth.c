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
 *
 * Each thread reads its share as 1, 4 or 8 interleaved sequential streams: the
 * share is split into S equal sub-ranges and the loop loads 64 bytes from each
 * sub-range in turn, at the same offset.  On some machines one core only
 * reaches its full bandwidth with several sequential streams in flight (a 2-vCPU
 * Sapphire/Emerald Rapids KVM guest: ~14 GB/s with one stream, ~18 GB/s with 8
 * per core), so a single-stream loop understates what a reader can get.
 *
 * Each stream count is measured twice: plain, and with software prefetch (per
 * 64-byte step of each stream, a prefetch 4096/S bytes ahead in that stream,
 * while that is still inside the stream).  ember's generation kernels prefetch
 * in software, so the bandwidth they are compared against must include the
 * best prefetching reader; on the guest above, 4 prefetched streams often beat
 * every plain reader.  All six readers are printed (Ns = N streams, +pf = with
 * prefetch), and the best; they take turns within each pass, so a drifting
 * machine (shared hosts) affects them alike.  `ember bench` measures the same
 * six readers once per instruction set the CPU has (this program: the one it
 * is compiled for) and reports the best; likwid-bench's load kernel is the
 * independent check (docs/benchmarks.md).
 *
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

/* The readers measured per thread: a stream count (1, or a multiple of 4 -
 * four accumulators - that divides SHARE_ALIGN / 256, so every sub-range is a
 * multiple of 256 bytes), plain or with software prefetch. */
static const struct reader { int streams, prefetch; } readers[] = {
    {1, 0}, {4, 0}, {8, 0}, {1, 1}, {4, 1}, {8, 1},
};
#define N_READERS (int)(sizeof readers / sizeof readers[0])
#define SHARE_ALIGN 4096 /* a thread's share, in bytes, is a multiple of this */
#define PF_BYTES 4096    /* prefetch distance: PF_BYTES / streams ahead in each stream */

#if defined(__AVX512F__) || defined(__AVX2__)
#define PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#elif defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

/* One 64-byte line xor-ed into an accumulator. */
#if defined(__AVX512F__)
typedef __m512i line;
static inline line line_zero(void) { return _mm512_setzero_si512(); }
static inline line line_xor(line acc, const unsigned char *p) {
    return _mm512_xor_si512(acc, _mm512_load_si512((const void *)p));
}
static inline line line_xor4(line a, line b, line c, line d) {
    return _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d));
}
static inline uint64_t line_fold(line a) {
    uint64_t w[8];
    _mm512_storeu_si512((void *)w, a);
    return w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ w[5] ^ w[6] ^ w[7];
}
#elif defined(__AVX2__)
typedef struct { __m256i lo, hi; } line;
static inline line line_zero(void) { return (line){_mm256_setzero_si256(), _mm256_setzero_si256()}; }
static inline line line_xor(line acc, const unsigned char *p) {
    return (line){_mm256_xor_si256(acc.lo, _mm256_load_si256((const __m256i *)(const void *)p)),
                  _mm256_xor_si256(acc.hi, _mm256_load_si256((const __m256i *)(const void *)(p + 32)))};
}
static inline line line_xor4(line a, line b, line c, line d) {
    return (line){_mm256_xor_si256(_mm256_xor_si256(a.lo, b.lo), _mm256_xor_si256(c.lo, d.lo)),
                  _mm256_xor_si256(_mm256_xor_si256(a.hi, b.hi), _mm256_xor_si256(c.hi, d.hi))};
}
static inline uint64_t line_fold(line a) {
    uint64_t w[4];
    _mm256_storeu_si256((__m256i *)(void *)w, _mm256_xor_si256(a.lo, a.hi));
    return w[0] ^ w[1] ^ w[2] ^ w[3];
}
#else
typedef uint64_t line;
static inline line line_zero(void) { return 0; }
static inline line line_xor(line acc, const unsigned char *p) {
    const uint64_t *q = (const uint64_t *)(const void *)p;
    return acc ^ ((q[0] ^ q[1]) ^ (q[2] ^ q[3])) ^ ((q[4] ^ q[5]) ^ (q[6] ^ q[7]));
}
static inline line line_xor4(line a, line b, line c, line d) { return (a ^ b) ^ (c ^ d); }
static inline uint64_t line_fold(line a) { return a; }
#endif

typedef struct { line a, b, c, d; } acc4;

/* Offsets [from, to) of every stream (sub-ranges of len bytes from p) into x;
 * with pf (a constant at each call), each 64-byte step of each stream also
 * prefetches `ahead` bytes further in that stream. */
static inline __attribute__((always_inline)) void
read_steps(acc4 *x, const unsigned char *p, size_t len, int streams, size_t from, size_t to, int pf,
           size_t ahead) {
    line a = x->a, b = x->b, c = x->c, d = x->d;
    if (streams == 1) {
        for (size_t i = from; i < to; i += 256) {
            const unsigned char *q = p + i;
            if (pf) {
                PREFETCH(q + ahead);
                PREFETCH(q + ahead + 64);
                PREFETCH(q + ahead + 128);
                PREFETCH(q + ahead + 192);
            }
            a = line_xor(a, q);
            b = line_xor(b, q + 64);
            c = line_xor(c, q + 128);
            d = line_xor(d, q + 192);
        }
    } else { /* a multiple of 4 */
        for (size_t i = from; i < to; i += 64)
            for (int s = 0; s < streams; s += 4) {
                const unsigned char *q = p + (size_t)s * len + i;
                if (pf) {
                    PREFETCH(q + ahead);
                    PREFETCH(q + len + ahead);
                    PREFETCH(q + 2 * len + ahead);
                    PREFETCH(q + 3 * len + ahead);
                }
                a = line_xor(a, q);
                b = line_xor(b, q + len);
                c = line_xor(c, q + 2 * len);
                d = line_xor(d, q + 3 * len);
            }
    }
    *x = (acc4){a, b, c, d};
}

/* Xor-sum of p[0..n) (64-byte aligned) read as `streams` interleaved sequential
 * streams: n is split into `streams` sub-ranges of len bytes, and each step
 * loads the line at offset i of every sub-range in turn.  Bytes past
 * streams * len (len rounded down to 256) are not read.  With prefetch, each
 * step prefetches PF_BYTES / streams ahead in each stream while that is still
 * inside the stream (ahead is a multiple of 256 for 1 stream, of 64 otherwise,
 * so the cut-off falls on a step boundary). */
static uint64_t read_sum(const unsigned char *p, size_t n, int streams, int prefetch) {
    const size_t len = n / (size_t)streams / 256 * 256;
    acc4 x = {line_zero(), line_zero(), line_zero(), line_zero()};
    if (prefetch) {
        const size_t ahead = (size_t)PF_BYTES / (size_t)streams;
        const size_t stop = len > ahead ? len - ahead : 0;
        read_steps(&x, p, len, streams, 0, stop, 1, ahead);
        read_steps(&x, p, len, streams, stop, len, 0, 0);
    } else {
        read_steps(&x, p, len, streams, 0, len, 0, 0);
    }
    return line_fold(line_xor4(x.a, x.b, x.c, x.d));
}

typedef struct job {
    const unsigned char *p;
    size_t n;          /* bytes, a multiple of SHARE_ALIGN */
    int streams, prefetch;
    uint64_t sum;
    pthread_barrier_t *start;
} job;

static void *worker(void *arg) {
    job *j = arg;
    pthread_barrier_wait(j->start);
    j->sum = read_sum(j->p, j->n, j->streams, j->prefetch);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One timed read of buf split over nt threads, each reading its share with
 * reader rd; seconds. */
static double timed_pass(const unsigned char *buf, size_t share, int nt, struct reader rd, uint64_t *x) {
    pthread_t th[256];
    job jobs[256];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)nt + 1);
    for (int k = 0; k < nt; k++) {
        jobs[k] = (job){buf + share * (size_t)k, share, rd.streams, rd.prefetch, 0, &start};
        pthread_create(&th[k], NULL, worker, &jobs[k]);
    }
    double t0 = now_s();
    pthread_barrier_wait(&start);
    for (int k = 0; k < nt; k++) { pthread_join(th[k], NULL); *x ^= jobs[k].sum; }
    double t = now_s() - t0;
    pthread_barrier_destroy(&start);
    return t;
}

/* Median GB/s of `passes` reads of buf[0..bytes) split over nt threads, for
 * each reader (gbs[v] for readers[v]); the readers take turns within each
 * pass. */
static void bandwidth(const unsigned char *buf, size_t bytes, int nt, int passes, double gbs[N_READERS]) {
    double t[N_READERS][64];
    if (passes > 64) passes = 64;
    size_t share = bytes / (size_t)nt / SHARE_ALIGN * SHARE_ALIGN;
    uint64_t x = 0;
    for (int r = 0; r < passes; r++)
        for (int v = 0; v < N_READERS; v++) t[v][r] = timed_pass(buf, share, nt, readers[v], &x);
    if (x == 0x5eed) fputc(' ', stderr); /* keep the sums alive */
    for (int v = 0; v < N_READERS; v++) {
        qsort(t[v], (size_t)passes, sizeof t[v][0], cmp_double);
        gbs[v] = share * (double)nt / t[v][passes / 2] / 1e9;
    }
}

static unsigned char *anon(size_t bytes, int huge) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    madvise(p, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    return p;
}

/* One row per thread count: GB/s for each reader, then the best. */
static void report(const char *name, const unsigned char *buf, size_t bytes, int max_t, int passes) {
    for (int t = 1; t <= max_t; t++) {
        double gbs[N_READERS], best = 0;
        bandwidth(buf, bytes, t, passes, gbs);
        printf("%-10s %7d", name, t);
        for (int v = 0; v < N_READERS; v++) {
            printf(" %6.1f", gbs[v]);
            if (gbs[v] > best) best = gbs[v];
        }
        printf(" %6.1f\n", best);
        fflush(stdout);
    }
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
    printf("read bandwidth in GB/s, %zu MiB buffers, median of %d passes, vector loads: %s\n", mib, passes,
#if defined(__AVX512F__)
           "avx512"
#elif defined(__AVX2__)
           "avx2"
#else
           "scalar"
#endif
    );
    printf("each thread reads its share as N interleaved sequential streams (Ns), plain or with\n"
           "software prefetch %d/N bytes ahead in each stream (Ns+pf)\n", PF_BYTES);
    printf("%-10s %7s", "memory", "threads");
    for (int v = 0; v < N_READERS; v++) {
        char name[16];
        snprintf(name, sizeof name, "%ds%s", readers[v].streams, readers[v].prefetch ? "+pf" : "");
        printf(" %6s", name);
    }
    printf(" %6s\n", "best");

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
    size_t fbytes = (size_t)st.st_size / SHARE_ALIGN * SHARE_ALIGN;
    if (fbytes < SHARE_ALIGN) { fprintf(stderr, "%s: too small\n", file); return 1; }
    unsigned char *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (m == MAP_FAILED) { perror("mmap file"); return 1; }
    read_sum(m, fbytes, 1, 0); /* fault everything in first */
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
