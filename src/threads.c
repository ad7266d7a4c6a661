/* threads.c - fork/join pool.  Workers spin briefly on a generation counter
 * (a token's forward pass issues a few hundred short parallel regions, and
 * waking a sleeping thread costs more than most of them take), then sleep on
 * a condition variable.  With -DEMBER_OPENMP the pool is a thin wrapper over
 * an OpenMP parallel region instead. */
#include "threads.h"

#ifdef EMBER_OPENMP
#include <omp.h>

struct et_pool { const ember_allocator *a; int n; };

int et_pool_create(const ember_allocator *a, int n_threads, et_pool **out) {
    *out = NULL;
    et_pool *p = (et_pool *)ec_malloc(a, sizeof *p);
    if (!p) return EMBER_ERR_NOMEM;
    p->a = a;
    p->n = n_threads < 1 ? 1 : n_threads;
    *out = p;
    return EMBER_OK;
}

void et_pool_free(et_pool *p) { if (p) ec_free(p->a, p); }
int et_pool_size(const et_pool *p) { return p->n; }

void et_pool_run(et_pool *p, et_task_fn fn, void *arg, int nth) {
    if (nth <= 1) { fn(arg, 0, 1); return; }
    if (nth > p->n) nth = p->n;
#pragma omp parallel num_threads(nth)
    fn(arg, omp_get_thread_num(), omp_get_num_threads());
}

#else /* POSIX threads */
#include <pthread.h>
#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ET_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define ET_PAUSE() __asm__ __volatile__("yield")
#else
#define ET_PAUSE() ((void)0)
#endif

/* Spin briefly (the gaps between a forward pass's parallel regions are a
 * few microseconds), then yield (so that on a busy machine a descheduled
 * partner thread gets the core instead of being starved by our spinning),
 * then sleep. */
enum { ET_SPIN_ITERS = 1 << 11, ET_YIELD_ITERS = 1 << 8 };

typedef struct et_worker { struct et_pool *pool; int index; pthread_t thread; } et_worker;

struct et_pool {
    const ember_allocator *a;
    int n;                      /* threads including the caller */
    et_worker *workers;         /* n - 1 of them */
    int n_started;
    atomic_uint generation;     /* bumped once per et_pool_run */
    atomic_int pending;         /* workers still running the current task */
    atomic_int stop;
    et_task_fn fn;
    void *arg;
    int nth;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    pthread_mutex_t run_lock;   /* one et_pool_run at a time (contexts share pools) */
};

static unsigned et_wait_generation(struct et_pool *p, unsigned seen) {
    for (int i = 0; i < ET_SPIN_ITERS + ET_YIELD_ITERS; i++) {
        unsigned g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen) return g;
        if (i < ET_SPIN_ITERS) ET_PAUSE();
        else sched_yield();
    }
    pthread_mutex_lock(&p->mutex);
    unsigned g;
    while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen)
        pthread_cond_wait(&p->wake, &p->mutex);
    pthread_mutex_unlock(&p->mutex);
    return g;
}

static void *et_worker_main(void *arg) {
    et_worker *w = (et_worker *)arg;
    struct et_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        seen = et_wait_generation(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        /* Every worker acknowledges every run, even one it sits out: the
         * caller may not publish the next run's fn/arg/nth before all have
         * read this one's. */
        if (w->index < p->nth) p->fn(p->arg, w->index, p->nth);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
    }
    return NULL;
}

static void et_broadcast(struct et_pool *p) {
    pthread_mutex_lock(&p->mutex);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
}

int et_pool_create(const ember_allocator *a, int n_threads, et_pool **out) {
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    struct et_pool *p = (et_pool *)ec_calloc(a, 1, sizeof *p);
    if (!p) return EMBER_ERR_NOMEM;
    p->a = a;
    p->n = n_threads;
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    if (pthread_mutex_init(&p->mutex, NULL) != 0) { ec_free(a, p); return EMBER_ERR_NOMEM; }
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        pthread_mutex_destroy(&p->mutex);
        ec_free(a, p);
        return EMBER_ERR_NOMEM;
    }
    if (pthread_mutex_init(&p->run_lock, NULL) != 0) {
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->mutex);
        ec_free(a, p);
        return EMBER_ERR_NOMEM;
    }
    if (n_threads > 1) {
        p->workers = (et_worker *)ec_calloc(a, (size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) { et_pool_free(p); return EMBER_ERR_NOMEM; }
        for (int i = 1; i < n_threads; i++) {
            et_worker *w = &p->workers[i - 1];
            w->pool = p;
            w->index = i;
            if (pthread_create(&w->thread, NULL, et_worker_main, w) != 0) {
                et_pool_free(p);
                return EMBER_ERR_NOMEM;
            }
            p->n_started++;
        }
    }
    *out = p;
    return EMBER_OK;
}

void et_pool_free(et_pool *p) {
    if (!p) return;
    if (p->n_started > 0) {
        atomic_store_explicit(&p->stop, 1, memory_order_release);
        et_broadcast(p);
        for (int i = 0; i < p->n_started; i++) pthread_join(p->workers[i].thread, NULL);
    }
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mutex);
    pthread_mutex_destroy(&p->run_lock);
    ec_free(p->a, p->workers);
    ec_free(p->a, p);
}

int et_pool_size(const et_pool *p) { return p->n; }

void et_pool_run(et_pool *p, et_task_fn fn, void *arg, int nth) {
    if (nth > p->n) nth = p->n;
    if (nth <= 1) { fn(arg, 0, 1); return; }
    pthread_mutex_lock(&p->run_lock);
    p->fn = fn;
    p->arg = arg;
    p->nth = nth;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_release);
    et_broadcast(p);
    fn(arg, 0, nth);
    for (int i = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; i++) {
        if (i < ET_SPIN_ITERS) ET_PAUSE();
        else sched_yield();
    }
    pthread_mutex_unlock(&p->run_lock);
}
#endif
