/*
 * reclaim.c — the process's reclaimer: objects retired by lock-free writers are run after a
 * grace period (reclaim.h has the rules).
 *
 * The queue is a growable array of (fn, arg) under one mutex. A writer appends and wakes the
 * reclaimer when it sleeps or a batch is full; the reclaimer lets a batch gather (BATCH,
 * BATCH_WAIT_MS), swaps the whole array for an empty one, waits for one grace period with no
 * lock held, runs every entry, and counts a generation, which cg_reclaim_drain() waits for. The
 * reclaimer blocks every signal (the programs' signals are for their own threads) and is detached:
 * at exit, pending objects are still reachable from the queue, and the process's memory goes with
 * it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "coregroup/sys/clock.h"
#include "reclaim.h"

/* A grace period costs an expedited membarrier: an interrupt on every CPU that runs a thread
 * of the process. The reclaimer lets up to BATCH objects gather for at most BATCH_WAIT_MS, so
 * there are at most 1000 / BATCH_WAIT_MS of them per second whatever the rate of writes. */
#define BATCH         256
#define BATCH_WAIT_MS 10

typedef struct {
    void (*fn)(void *);
    void *arg;
} retired;

static pthread_mutex_t rq_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rq_wake = PTHREAD_COND_INITIALIZER; /* the reclaimer waits for work */
static pthread_cond_t rq_done = PTHREAD_COND_INITIALIZER; /* drainers wait for a generation */
static retired *rq;
static size_t rq_n, rq_cap;
static int rq_started;    /* the reclaimer thread runs (in this process) */
static int rq_urgent;     /* cg_reclaim_drain() waits: no batching delay */
static int rq_idle;       /* it waits on rq_wake */
static uint64_t rq_taken; /* batches taken by the reclaimer */
static uint64_t rq_freed; /* batches it has run */
static atomic_ullong leaked;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

#ifdef CG_TSAN
char cg_reclaim__tsan_sync;
#endif

static void grace_period(void)
{
    urcu_bp_synchronize_rcu();
#ifdef CG_TSAN
    __tsan_acquire(&cg_reclaim__tsan_sync);
#endif
}

static void *reclaimer(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&rq_lock);
    for (;;) {
        retired *batch;
        size_t n, i;

        while (rq_n == 0) {
            rq_idle = 1;
            pthread_cond_wait(&rq_wake, &rq_lock);
            rq_idle = 0;
        }
        if (rq_n < BATCH && !rq_urgent) { /* let a batch gather: one grace period for all */
            struct timespec until = cg_clock_deadline(BATCH_WAIT_MS);
            pthread_cond_timedwait(&rq_wake, &rq_lock, &until);
        }
        rq_urgent = 0;
        batch = rq;
        n = rq_n;
        rq = NULL;
        rq_n = rq_cap = 0;
        rq_taken++;
        pthread_mutex_unlock(&rq_lock);

        grace_period();
        for (i = 0; i < n; i++)
            batch[i].fn(batch[i].arg);
        free(batch);

        pthread_mutex_lock(&rq_lock);
        rq_freed = rq_taken;
        pthread_cond_broadcast(&rq_done);
    }
    return NULL;
}

/* With rq_lock held: start the reclaimer if this process has none. 0, or -1. */
static int start_reclaimer(void)
{
    pthread_attr_t attr;
    pthread_t tid;
    sigset_t all, old;
    int err;

    if (rq_started)
        return 0;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    err = pthread_create(&tid, &attr, reclaimer, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0)
        return -1;
    rq_started = 1;
    return 0;
}

/* fork: hold our lock and liburcu-bp's across it; the child has no reclaimer thread. */
static void before_fork(void)
{
    pthread_mutex_lock(&rq_lock);
    urcu_bp_before_fork();
}

static void after_fork_parent(void)
{
    urcu_bp_after_fork_parent();
    pthread_mutex_unlock(&rq_lock);
}

static void after_fork_child(void)
{
    urcu_bp_after_fork_child();
    rq_started = 0;
    rq_idle = 0;
    rq_freed = rq_taken; /* a batch the parent's reclaimer held is the parent's */
    pthread_mutex_unlock(&rq_lock);
}

static void install_fork_handlers(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void cg_reclaim_init(void)
{
    pthread_once(&init_once, install_fork_handlers);
}

void cg_retire(void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&rq_lock);
    if (rq_n == rq_cap) {
        size_t cap = rq_cap ? rq_cap * 2 : 64;
        retired *bigger = realloc(rq, cap * sizeof(*rq));
        if (bigger == NULL)
            goto inline_reclaim;
        rq = bigger;
        rq_cap = cap;
    }
    if (start_reclaimer() < 0)
        goto inline_reclaim;
    rq[rq_n].fn = fn;
    rq[rq_n].arg = arg;
    rq_n++;
    if (rq_idle || rq_n == BATCH)
        pthread_cond_signal(&rq_wake);
    pthread_mutex_unlock(&rq_lock);
    return;

inline_reclaim:
    pthread_mutex_unlock(&rq_lock);
    if (cg_read_ongoing()) {
        atomic_fetch_add(&leaked, 1); /* waiting here would wait for ourselves */
        return;
    }
    grace_period();
    fn(arg);
}

void cg_reclaim_drain(void)
{
    uint64_t want;
    pthread_mutex_lock(&rq_lock);
    want = rq_taken + (rq_n > 0);
    rq_urgent = 1;
    pthread_cond_signal(&rq_wake);
    while (rq_started && rq_freed < want)
        pthread_cond_wait(&rq_done, &rq_lock);
    pthread_mutex_unlock(&rq_lock);
}

uint64_t cg_reclaim_leaked(void)
{
    return atomic_load(&leaked);
}
