/* threads.h - a tiny fork/join thread pool (POSIX threads, or OpenMP when
 * built with -fopenmp).  Knows nothing of models. */
#ifndef EMBER_THREADS_H
#define EMBER_THREADS_H

#include "common.h"

typedef struct et_pool et_pool;

/* ith in [0, nth): each call gets a distinct ith. */
typedef void (*et_task_fn)(void *arg, int ith, int nth);

/* n_threads including the caller; 1 = no worker threads. */
EMBER_INTERNAL int et_pool_create(const ember_allocator *a, int n_threads, et_pool **out);
EMBER_INTERNAL void et_pool_free(et_pool *pool);
EMBER_INTERNAL int et_pool_size(const et_pool *pool);
/* Run fn(arg, i, nth) for i = 0..nth-1 (nth <= pool size; the caller runs
 * i = 0) and wait for all.  Allocates nothing.  Safe to call from several
 * threads at once (contexts sharing a model's pool): runs take turns. */
EMBER_INTERNAL void et_pool_run(et_pool *pool, et_task_fn fn, void *arg, int nth);

#endif
