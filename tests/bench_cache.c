/*
 * bench_cache.c — what a cache hit costs, measured against a raw hash table in the same run.
 *
 * The baseline is the least a lookup can cost: an open-addressing (linear probing) table of
 * int64 keys to pointers to value structs, one thread, no lock, no reference count; a lookup
 * reads the value's version. The cache is measured on the same key sequence with every key
 * cached (max_entries above the key count), as the library's own hits are taken: a read-side
 * section around cg_cache_peek (cg_read_lock, peek, read the version, cg_read_unlock: no
 * lock, no reference count, no shared write), one section per lookup. The older way, with a
 * reference (cg_cache_get + cg_part_free: two atomic operations on the part), is measured too,
 * for comparison. A lookup reads the part's version. Both over all keys (mostly memory-bound) and
 * over a hot set of 1,000 keys (in the CPU caches). The random key sequences are generated before
 * timing; the sums of the versions read go to an atomic sink so no lookup can be optimised away
 * (atomic: the threads of the multi-threaded runs add to it together). The freshness lease's check
 * (cg_lease_valid: a coarse clock read and one atomic load, done by cg_part_get before every hit)
 * is measured on top of the bare hit, on the same keys, the two interleaved (bare, checked,
 * checked, bare) so that neither gains from running second. Figures only: there are no thresholds
 * here.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "core_internal.h"
#include "coregroup.h"
#include "coregroup/sys/part.h"

#define SEQ_LEN  ((size_t)1 << 22) /* keys in a pre-generated sequence (a power of two) */
#define CHUNK    65536             /* lookups between clock reads */
#define HOT_KEYS 1000
#define KIND     CG_PART_STATE

static _Atomic uint64_t sink;

/* ---- the raw baseline --------------------------------------------------------------------- */

typedef struct {
    int64_t handle;
    int64_t version;
    char body[32];
} value;

typedef struct {
    int64_t key; /* 0: empty (handles start at 1) */
    value *v;
} raw_slot;

typedef struct {
    raw_slot *slots;
    uint64_t mask;
} raw_table;

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline value *raw_get(const raw_table *t, int64_t key)
{
    uint64_t i = mix((uint64_t)key) & t->mask;
    for (;; i = (i + 1) & t->mask) {
        if (t->slots[i].key == key)
            return t->slots[i].v;
        if (t->slots[i].key == 0)
            return NULL;
    }
}

static void raw_put(raw_table *t, int64_t key, value *v)
{
    uint64_t i = mix((uint64_t)key) & t->mask;
    while (t->slots[i].key != 0)
        i = (i + 1) & t->mask;
    t->slots[i].key = key;
    t->slots[i].v = v;
}

/* ---- measuring ---------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "bench_cache: out of memory\n");
        exit(1);
    }
    return p;
}

/* SEQ_LEN uniformly random handles from [1, n]. */
static int64_t *make_sequence(long n, uint64_t seed)
{
    int64_t *seq = xmalloc(SEQ_LEN * sizeof(*seq));
    size_t i;
    for (i = 0; i < SEQ_LEN; i++) {
        seed += 0x9e3779b97f4a7c15ULL; /* splitmix64 */
        seq[i] = 1 + (int64_t)(mix(seed) % (uint64_t)n);
    }
    return seq;
}

static double bench_raw(const raw_table *t, const int64_t *seq, double seconds)
{
    uint64_t ops = 0, sum = 0;
    size_t i = 0;
    double t0 = now_s(), elapsed;
    for (;;) {
        int j;
        for (j = 0; j < CHUNK; j++) {
            sum += (uint64_t)raw_get(t, seq[i])->version;
            i = (i + 1) & (SEQ_LEN - 1);
        }
        ops += CHUNK;
        if ((elapsed = now_s() - t0) >= seconds)
            break;
    }
    atomic_fetch_add_explicit(&sink, sum, memory_order_relaxed);
    return (double)ops / elapsed;
}

typedef struct {
    cg_cache *cache;
    const int64_t *seq;
    size_t start;
    double seconds;
    double rate;
    uint64_t misses;
    const cg_core *lease; /* non-NULL: check its lease before every hit, as cg_part_get does */
    int with_ref;         /* cg_cache_get + cg_part_free instead of a section and a peek */
} cache_run;

static void *bench_cache_run(void *arg)
{
    cache_run *r = arg;
    uint64_t ops = 0, sum = 0, misses = 0;
    size_t i = r->start;
    double t0 = now_s(), elapsed;
    for (;;) {
        int j;
        for (j = 0; j < CHUNK; j++) {
            cg_part *p;
            if (r->lease && !cg_lease_valid(r->lease)) {
                misses++;
            } else if (!r->with_ref) {
                const cg_part *q;
                cg_read_lock();
                if ((q = cg_cache_peek(r->cache, r->seq[i], KIND)) != NULL)
                    sum += (uint64_t)q->version;
                else
                    misses++;
                cg_read_unlock();
            } else if (cg_cache_get(r->cache, r->seq[i], KIND, &p) == 0) {
                sum += (uint64_t)cg_part_version(p);
                cg_part_free(p);
            } else {
                misses++;
            }
            i = (i + 1) & (SEQ_LEN - 1);
        }
        ops += CHUNK;
        if ((elapsed = now_s() - t0) >= r->seconds)
            break;
    }
    atomic_fetch_add_explicit(&sink, sum, memory_order_relaxed);
    r->misses = misses;
    r->rate = (double)ops / elapsed;
    return NULL;
}

static void report(const char *what, double cache_rate, double raw_rate, uint64_t misses)
{
    printf("%s: %.1f M/s; raw hash %.1f M/s; ratio %.2fx slower", what, cache_rate / 1e6,
           raw_rate / 1e6, raw_rate / cache_rate);
    if (misses)
        printf(" (%llu cache misses!)", (unsigned long long)misses);
    printf("\n");
    fflush(stdout);
}

/* The bare hit and the hit behind the lease check, on the same keys, measured in the order
 * bare, checked, checked, bare so that neither gains from going second; each rate is the mean
 * of its two runs. */
static void hit_and_lease(cg_cache *cache, const int64_t *seq, double seconds, const cg_core *lease,
                          double raw_rate, const char *keys)
{
    const cg_core *order[4] = {NULL, lease, lease, NULL};
    double bare = 0, checked = 0;
    uint64_t misses = 0;
    char what[128];
    int k;
    for (k = 0; k < 4; k++) {
        cache_run run = {cache, seq, 0, seconds / 2, 0, 0, order[k], 0};
        bench_cache_run(&run);
        if (order[k])
            checked += run.rate / 2;
        else
            bare += run.rate / 2;
        misses += run.misses;
    }
    snprintf(what, sizeof(what), "cache hit, %s", keys);
    report(what, bare, raw_rate, misses);
    snprintf(what, sizeof(what), "cache hit + lease check, %s", keys);
    report(what, checked, raw_rate, 0);
    printf("  the lease check costs %.1f%% of the bare hit rate (%.1f vs %.1f M/s)\n",
           100.0 * (bare - checked) / bare, checked / 1e6, bare / 1e6);
}

/* The same keys from `nthreads` threads at once (each from its own place in the sequence);
 * the summed rate. */
static double together(cg_cache *cache, const int64_t *seq, double seconds, int nthreads,
                       int with_ref, uint64_t *misses)
{
    cache_run runs[2];
    pthread_t tid[2];
    double rate = 0;
    int k;
    for (k = 0; k < nthreads; k++) {
        runs[k] = (cache_run){cache, seq, (size_t)k * (SEQ_LEN / 2), seconds, 0, 0, NULL, with_ref};
        pthread_create(&tid[k], NULL, bench_cache_run, &runs[k]);
    }
    for (k = 0; k < nthreads; k++) {
        pthread_join(tid[k], NULL);
        rate += runs[k].rate;
        *misses += runs[k].misses;
    }
    return rate;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_cache [--keys N] [--seconds S]\n"
            "Measure a cache hit (cg_cache_get + cg_part_free) against a raw open-addressing\n"
            "hash lookup on the same random keys, over all keys and over a hot set of %d.\n"
            "  --keys N     keys in both tables (default 1000000)\n"
            "  --seconds S  time per measurement (default 2)\n",
            HOT_KEYS);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"keys", required_argument, NULL, 'k'},
                                             {"seconds", required_argument, NULL, 's'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    long n = 1000000, hot, k;
    double seconds = 2;
    char *end;
    int opt;
    raw_table raw;
    value **values;
    cg_cache *cache;
    cg_cache_options opts;
    cg_cache_stats st;
    int64_t *seq_all, *seq_hot;
    double raw_rate, raw_hot;
    /* a core whose lease never runs out: only fresh_until_ms is read by the check */
    static cg_core lease_core;
    const cg_core *lease = &lease_core;
    char what[128];

    while ((opt = getopt_long(argc, argv, "k:s:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'k':
            n = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || n < 1 || n > 100000000) {
                fprintf(stderr, "bench_cache: --keys wants a number from 1 to 100000000\n");
                return 2;
            }
            break;
        case 's':
            seconds = strtod(optarg, &end);
            if (*optarg == '\0' || *end != '\0' || !(seconds > 0 && seconds <= 3600)) {
                fprintf(stderr, "bench_cache: --seconds wants a number of seconds above 0\n");
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    hot = n < HOT_KEYS ? n : HOT_KEYS;

    /* the raw table: load <= 1/2, like the cache's shards */
    raw.mask = 1;
    while (raw.mask + 1 < 2 * (uint64_t)n)
        raw.mask = raw.mask * 2 + 1;
    raw.slots = calloc(raw.mask + 1, sizeof(*raw.slots));
    values = xmalloc((size_t)n * sizeof(*values));
    if (raw.slots == NULL) {
        fprintf(stderr, "bench_cache: out of memory\n");
        return 1;
    }

    /* the cache: room for every key whatever the shard imbalance */
    opts.max_entries = n + n / 4 + 64 * 64;
    opts.ttl_ms = 0;
    if (cg_cache_new(&cache, &opts) < 0) {
        fprintf(stderr, "bench_cache: %s\n", cg_error_last()->message);
        return 1;
    }
    for (k = 1; k <= n; k++) {
        cg_part *p = cg_part__new(k, KIND, k % 97 + 1, "{\"state\":\"ready\"}", 17);
        value *v = xmalloc(sizeof(*v));
        if (p == NULL) {
            fprintf(stderr, "bench_cache: out of memory\n");
            return 1;
        }
        v->handle = k;
        v->version = k % 97 + 1;
        memcpy(v->body, "{\"state\":\"ready\"}", 18);
        values[k - 1] = v;
        raw_put(&raw, k, v);
        cg_cache_put(cache, p);
        cg_part_free(p);
    }
    cg_cache_stats_get(cache, &st);
    if (st.entries != (uint64_t)n) {
        fprintf(stderr, "bench_cache: only %llu of %ld keys cached\n",
                (unsigned long long)st.entries, n);
        return 1;
    }
    atomic_store(&lease_core.fresh_until_ms, INT64_MAX);
    seq_all = make_sequence(n, 1);
    seq_hot = make_sequence(hot, 2);

    printf("bench_cache: %ld keys, %.1f s per measurement, one thread unless noted\n", n, seconds);
    fflush(stdout);

    /* (a) + (b): all keys */
    raw_rate = bench_raw(&raw, seq_all, seconds);
    snprintf(what, sizeof(what), "%ld keys", n);
    hit_and_lease(cache, seq_all, seconds, lease, raw_rate, what);

    /* (c): a hot set */
    raw_hot = bench_raw(&raw, seq_hot, seconds);
    snprintf(what, sizeof(what), "hot %ld of %ld keys", hot, n);
    hit_and_lease(cache, seq_hot, seconds, lease, raw_hot, what);

    /* (d): the hot set from one thread, then two at once, measured back to back */
    for (k = 0; k < 2; k++) {
        uint64_t misses = 0;
        double one = together(cache, seq_hot, seconds, 1, k, &misses);
        double two = together(cache, seq_hot, seconds, 2, k, &misses);
        snprintf(what, sizeof(what), "cache hit%s, hot %ld of %ld keys, 2 threads together",
                 k ? " with a reference (get + free)" : "", hot, n);
        report(what, two, raw_hot, misses);
        printf("  2 threads: %.2fx one thread's %.1f M/s\n", two / one, one / 1e6);
    }

    /* extra: the hit with a reference, one thread, all keys and hot */
    {
        cache_run run = {cache, seq_all, 0, seconds, 0, 0, NULL, 1};
        bench_cache_run(&run);
        snprintf(what, sizeof(what), "cache hit with a reference (get + free), %ld keys", n);
        report(what, run.rate, raw_rate, run.misses);
        run = (cache_run){cache, seq_hot, 0, seconds, 0, 0, NULL, 1};
        bench_cache_run(&run);
        snprintf(what, sizeof(what), "cache hit with a reference (get + free), hot %ld of %ld keys",
                 hot, n);
        report(what, run.rate, raw_hot, run.misses);
    }

    cg_cache_free(cache);
    for (k = 0; k < n; k++)
        free(values[k]);
    free(values);
    free(raw.slots);
    free(seq_all);
    free(seq_hot);
    return 0;
}
