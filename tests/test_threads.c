/* test_threads.c - one model shared by 4 threads, each with its own context
 * (and its own worker pool of 1-3 threads), generating different prompts at
 * once: the outputs must equal those of running the jobs one after another.
 * Also built with -fsanitize=thread by tests/test_cli.sh.
 *   EMBER_THREADS_ROUNDS=N  parallel rounds (default 3) */
#define TM_NO_MAIN
#include "test_hostile_model.c"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include "threads.h"

#define N_JOBS 4
#define N_PREDICT 24

typedef struct job {
    ember_model *m;
    const char *prompt;
    int n_threads, n_batch;
    uint64_t seed;
    float temp;
    /* results */
    int rc;
    ember_token toks[N_PREDICT + 1];
    int n;
    char text[1024];
    size_t len;
    float logits_sum;
} job;

static int job_cb(void *ud, ember_token tok, const char *text, size_t len) {
    job *j = ud;
    if (tok >= 0 && j->n < N_PREDICT + 1) j->toks[j->n++] = tok;
    if (j->len + len < sizeof j->text) { memcpy(j->text + j->len, text, len); j->len += len; }
    return 0;
}

static void *run_job(void *arg) {
    job *j = arg;
    j->n = 0; j->len = 0; j->logits_sum = 0;
    ember_context_params cp = ember_context_default_params();
    cp.n_ctx = 128;
    cp.n_batch = j->n_batch;
    cp.n_threads = j->n_threads;
    ember_context *c = NULL;
    j->rc = ember_context_create(j->m, &cp, &c, NULL);
    if (j->rc) return NULL;
    ember_sampler_params sp = ember_sampler_default_params();
    sp.seed = j->seed;
    sp.temperature = j->temp;
    ember_sampler *s = NULL;
    j->rc = ember_sampler_create(j->m, &sp, &s, NULL);
    if (j->rc) { ember_context_free(c); return NULL; }
    ember_token toks[128];
    size_t count = 0;
    j->rc = ember_tokenize(j->m, j->prompt, strlen(j->prompt), EMBER_TOKENIZE_ADD_BOS, toks, 100, &count, NULL);
    const int n = (int)count;
    if (j->rc == EMBER_OK) {
        /* the prompt once with all logits (batched matmuls of every size) */
        j->rc = ember_eval(c, toks, n, NULL);
        if (j->rc == EMBER_OK) {
            const float *l = ember_get_logits(c);
            for (int i = 0; i < ember_n_vocab(j->m); i++) j->logits_sum += l[i];
            ember_context_set_pos(c, 0);
            ember_generate_result res;
            j->rc = ember_generate(c, s, toks, n, N_PREDICT, job_cb, j, &res);
        }
    }
    ember_sampler_free(s);
    ember_context_free(c);
    return NULL;
}

/* White-box: the pool's fork/join must run each part exactly once per
 * et_pool_run and return only when all parts are done, also when runs use
 * fewer threads than the pool has (a worker that sits a run out must not
 * pick up the next run's parameters late). */
typedef struct pool_job { atomic_int count[8]; atomic_int active; } pool_job;
static void pool_task(void *arg, int ith, int nth) {
    pool_job *j = arg;
    (void)nth;
    atomic_fetch_add(&j->active, 1);
    atomic_fetch_add(&j->count[ith], 1);
    for (volatile int i = 0; i < (ith * 37) % 200; i++) {}
    atomic_fetch_sub(&j->active, 1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_pool(double seconds) {
    et_pool *p = NULL;
    CHECK(et_pool_create(NULL, 3, &p) == EMBER_OK, "pool");
    if (!p) return;
    static pool_job jobs[4];
    long bad = 0, runs = 0;
    double t0 = now_s();
    for (int r = 0; now_s() - t0 < seconds; r++, runs++) {
        pool_job *j = &jobs[r % 4];
        int nth = 2 + (r % 2);
        for (int i = 0; i < 8; i++) atomic_store(&j->count[i], 0);
        atomic_store(&j->active, 0);
        et_pool_run(p, pool_task, j, nth);
        int ok = atomic_load(&j->active) == 0;
        for (int i = 0; i < 4; i++) ok &= atomic_load(&j->count[i]) == (i < nth);
        if (!ok && bad++ < 3)
            fprintf(stderr, "pool run %d (nth %d): returned with parts run %d %d %d times, %d still active\n", r, nth,
                    atomic_load(&j->count[0]), atomic_load(&j->count[1]), atomic_load(&j->count[2]),
                    atomic_load(&j->active));
    }
    et_pool_free(p);
    CHECK(bad == 0, "thread pool: %ld of %ld runs returned early or ran a part twice (threads.c: a worker that sits "
          "a run out reads the next run's nth/fn/arg)", bad, runs);
    printf("pool: %ld runs\n", runs);
}

int main(void) {
    const char *ps = getenv("EMBER_POOL_SECONDS");
    test_pool(ps ? atof(ps) : 3.0);
    tm_spec spec = tm_default();
    spec.n_embd = 128; spec.n_ff = 256; spec.n_head = 8; spec.n_head_kv = 2; spec.n_layer = 2;
    gb_buf img = {0};
    ember_model *m = NULL;
    ember_error err;
    int rc = tm_open(&spec, &img, NULL, &m, &err);
    CHECK(rc == EMBER_OK, "open: %s", err.message);
    if (rc) return test_summary("test_threads");

    static const char *const prompts[N_JOBS] = {
        "hello world",
        "the state of the art, de st\xc3\xa9 and the world. hello hello world, the end of the world is near, st de",
        "\xe2\x82\xac\xe6\x97\xa5\xe6\x9c\xac!",
        "a b c d e f g h i j k l m n o p q r s t u v w x y z the world hello again and again, de",
    };
    job seq[N_JOBS], par[N_JOBS];
    for (int i = 0; i < N_JOBS; i++) {
        memset(&seq[i], 0, sizeof seq[i]);
        seq[i].m = m;
        seq[i].prompt = prompts[i];
        seq[i].n_threads = 1 + i % 3;
        seq[i].n_batch = (int[]){64, 7, 16, 1}[i];
        seq[i].seed = 1000 + (uint64_t)i;
        seq[i].temp = i == 2 ? 0.0f : 0.9f;
        run_job(&seq[i]);
        CHECK(seq[i].rc == EMBER_OK && seq[i].n > 0, "sequential job %d: %d, %d tokens", i, seq[i].rc, seq[i].n);
    }
    const char *env = getenv("EMBER_THREADS_ROUNDS");
    int rounds = env ? atoi(env) : 3;
    for (int round = 0; round < rounds; round++) {
        pthread_t th[N_JOBS];
        for (int i = 0; i < N_JOBS; i++) {
            par[i] = seq[i];
            par[i].n = 0;
            CHECK(pthread_create(&th[i], NULL, run_job, &par[i]) == 0, "pthread_create");
        }
        for (int i = 0; i < N_JOBS; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < N_JOBS; i++) {
            CHECK(par[i].rc == EMBER_OK, "round %d job %d: %d", round, i, par[i].rc);
            CHECK(par[i].n == seq[i].n && !memcmp(par[i].toks, seq[i].toks, (size_t)seq[i].n * sizeof(ember_token)),
                  "round %d job %d: tokens differ from the sequential run", round, i);
            CHECK(par[i].len == seq[i].len && !memcmp(par[i].text, seq[i].text, seq[i].len),
                  "round %d job %d: text differs", round, i);
            CHECK(par[i].logits_sum == seq[i].logits_sum, "round %d job %d: prompt logits differ (%.9g vs %.9g)", round,
                  i, (double)par[i].logits_sum, (double)seq[i].logits_sum);
        }
    }
    ember_model_free(m);
    gb_free(&img);
    return test_summary("test_threads");
}
