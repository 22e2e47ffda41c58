/*
 * test_cache.c — the core's cache (coregroup/cache.c): hits and counters, floors and ghosts,
 * tickets against late stale fills, CLOCK eviction within max_entries, TTL, single-flight
 * loads, a multi-threaded stress run that checks the monotonic-cache invariant (I4), and
 * contention runs (four threads on one shard's spinlock) that also check every reference
 * count when the cache is gone; and sampling for the consistency audit (distinct keys at their
 * cached versions, spread over the shards, no hit or miss counted, expired entries left out).
 * No repository: parts are made in memory. Threads record what they saw and the main thread
 * asserts, so a failure is reported by Check rather than lost in a worker.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "coregroup.h"
#include "coregroup/sys/error.h"
#include "coregroup/sys/part.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static cg_cache *new_cache(long max_entries, long ttl_ms)
{
    cg_cache_options opts = {max_entries, ttl_ms};
    cg_cache *c = NULL;
    ck_assert_msg(cg_cache_new(&c, &opts) == 0, "%s", cg_error_last()->message);
    ck_assert_ptr_nonnull(c);
    return c;
}

static cg_part *mk(int64_t handle, int kind, int64_t version)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"h\":%lld,\"v\":%lld}", (long long)handle,
                     (long long)version);
    cg_part *p = cg_part__new(handle, kind, version, body, (size_t)n);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Fill (handle, kind, version) with the given ticket; the cache keeps its own reference. */
static int fill_t(cg_cache *c, int64_t handle, int kind, int64_t version, uint64_t ticket)
{
    cg_part *p = mk(handle, kind, version);
    int r = cg_cache_fill(c, p, ticket);
    cg_part_free(p);
    return r;
}

/* Fill with a ticket taken just now (a read that started now). */
static int fill(cg_cache *c, int64_t handle, int kind, int64_t version)
{
    return fill_t(c, handle, kind, version, cg_cache_ticket(c, handle, kind));
}

/* The cached version, or -1 on a miss. */
static int64_t cached(cg_cache *c, int64_t handle, int kind)
{
    cg_part *p = NULL;
    int64_t v;
    int err = cg_cache_get(c, handle, kind, &p);
    if (err == CG_ENOTFOUND) {
        ck_assert_ptr_null(p);
        return -1;
    }
    ck_assert_int_eq(err, 0);
    ck_assert_int_eq(cg_part_handle(p), handle);
    ck_assert_int_eq(cg_part_kind_of(p), kind);
    v = cg_part_version(p);
    cg_part_free(p);
    return v;
}

static cg_cache_stats stats(cg_cache *c)
{
    cg_cache_stats st;
    cg_cache_stats_get(c, &st);
    return st;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- basic -------------------------------------------------------------------------------- */

START_TEST(hit_miss_fill_counters)
{
    cg_cache *c = new_cache(100, 0);
    cg_part *p = (cg_part *)1;
    cg_cache_stats st;

    ck_assert_int_eq(cg_cache_get(c, 7, CG_PART_STATE, &p), CG_ENOTFOUND);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(fill(c, 7, CG_PART_STATE, 1), 1);
    ck_assert_int_eq(cg_cache_get(c, 7, CG_PART_STATE, &p), 0);
    ck_assert_int_eq(cg_part_version(p), 1);
    ck_assert_str_eq(cg_part_body(p), "{\"h\":7,\"v\":1}");
    cg_part_free(p);
    /* the other parts of the same resource are other keys */
    ck_assert_int_eq(cached(c, 7, CG_PART_SPECIFICATION), -1);

    ck_assert_int_eq(fill(c, 7, CG_PART_STATE, 1), 1); /* same version: cached */
    ck_assert_int_eq(fill(c, 7, CG_PART_STATE, 0), 0); /* older than the entry: kept */
    ck_assert_int_eq(cached(c, 7, CG_PART_STATE), 1);
    ck_assert_int_eq(fill(c, 7, CG_PART_STATE, 2), 1); /* newer replaces */
    ck_assert_int_eq(cached(c, 7, CG_PART_STATE), 2);
    p = mk(7, CG_PART_STATE, 1);
    ck_assert_int_eq(cg_cache_put(c, p), 0); /* put is refused below the floor too */
    cg_part_free(p);
    p = mk(7, CG_PART_STATE, 3);
    ck_assert_int_eq(cg_cache_put(c, p), 1);
    cg_part_free(p);
    ck_assert_int_eq(cached(c, 7, CG_PART_STATE), 3);

    st = stats(c);
    ck_assert_uint_eq(st.hits, 4);
    ck_assert_uint_eq(st.misses, 2);
    ck_assert_uint_eq(st.fills, 4);
    ck_assert_uint_eq(st.fills_refused, 2);
    ck_assert_uint_eq(st.entries, 1);
    ck_assert_uint_eq(st.evictions, 0);
    ck_assert_uint_eq(st.loads, 0);
    cg_cache_free(c);
}
END_TEST

START_TEST(bad_options)
{
    cg_cache_options zero = {0, 0}, neg_ttl = {10, -1};
    cg_cache *c = (cg_cache *)1;
    ck_assert_int_eq(cg_cache_new(&c, NULL), CG_EINVALID);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(cg_cache_new(&c, &zero), CG_EINVALID);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(cg_error_last()->message, "max_entries") != NULL, "%s",
                  cg_error_last()->message);
    ck_assert_int_eq(cg_cache_new(&c, &neg_ttl), CG_EINVALID);
    ck_assert_ptr_null(c);
    cg_cache_free(NULL);
}
END_TEST

/* ---- floors ------------------------------------------------------------------------------- */

START_TEST(floor_refuses_older_fill)
{
    cg_cache *c = new_cache(100, 0);
    ck_assert_int_eq(fill(c, 1, 0, 5), 1);
    cg_cache_evict(c, 1, 0); /* the entry goes, its floor stays */
    ck_assert_int_eq(cached(c, 1, 0), -1);
    ck_assert_int_eq(cg_cache_newer_known(c, 1, 0, 4), 1);
    ck_assert_int_eq(cg_cache_newer_known(c, 1, 0, 5), 0);
    ck_assert_int_eq(fill(c, 1, 0, 4), 0);
    ck_assert_int_eq(cached(c, 1, 0), -1);
    ck_assert_int_eq(fill(c, 1, 0, 5), 1);
    ck_assert_int_eq(cached(c, 1, 0), 5);
    /* a key never seen has no floor */
    ck_assert_int_eq(cg_cache_newer_known(c, 2, 0, 0), 0);
    /* an absent key's floor (a ghost) only goes up, whatever order invalidations come in */
    cg_cache_invalidate(c, 2, 0, 8);
    cg_cache_invalidate(c, 2, 0, 5);
    ck_assert_int_eq(cg_cache_newer_known(c, 2, 0, 7), 1);
    ck_assert_int_eq(fill(c, 2, 0, 7), 0);
    cg_cache_free(c);
}
END_TEST

START_TEST(invalidate_evicts_only_lower)
{
    cg_cache *c = new_cache(100, 0);
    ck_assert_int_eq(fill(c, 1, 0, 5), 1);
    cg_cache_invalidate(c, 1, 0, 5); /* equal: kept */
    ck_assert_int_eq(cached(c, 1, 0), 5);
    cg_cache_invalidate(c, 1, 0, 3); /* lower: kept */
    ck_assert_int_eq(cached(c, 1, 0), 5);
    cg_cache_invalidate(c, 1, 0, 6); /* higher: evicted, floor 6 */
    ck_assert_int_eq(cached(c, 1, 0), -1);
    ck_assert_int_eq(cg_cache_newer_known(c, 1, 0, 5), 1);
    ck_assert_int_eq(fill(c, 1, 0, 5), 0);
    ck_assert_int_eq(fill(c, 1, 0, 6), 1);
    ck_assert_int_eq(cached(c, 1, 0), 6);
    cg_cache_invalidate(c, 1, 0, 2); /* a late, old invalidation changes nothing */
    ck_assert_int_eq(cached(c, 1, 0), 6);
    ck_assert_uint_eq(stats(c).invalidations, 4);
    cg_cache_free(c);
}
END_TEST

/* Reader: ticket, reads v3 | invalidation v4 arrives | reader fills v3: refused. */
static void late_stale_fill(cg_cache *c, int64_t h)
{
    uint64_t t = cg_cache_ticket(c, h, CG_PART_DESCRIPTION); /* 1. reader takes a ticket */
    cg_part *v3 = mk(h, CG_PART_DESCRIPTION, 3);             /* 2. reader reads version 3 */
    cg_cache_invalidate(c, h, CG_PART_DESCRIPTION, 4);       /* 3. v4 committed elsewhere */
    ck_assert_int_eq(cg_cache_newer_known(c, h, CG_PART_DESCRIPTION, 3), 1);
    ck_assert_int_eq(cg_cache_fill(c, v3, t), 0); /* 4. the late stale fill is refused */
    cg_part_free(v3);
    ck_assert_int_eq(cached(c, h, CG_PART_DESCRIPTION), -1); /* 5. still a miss */
    /* 6. a re-read with a new ticket fills v4 */
    ck_assert_int_eq(fill(c, h, CG_PART_DESCRIPTION, 4), 1);
    ck_assert_int_eq(cached(c, h, CG_PART_DESCRIPTION), 4);
}

START_TEST(late_stale_fill_cached_key)
{
    cg_cache *c = new_cache(100, 0);
    ck_assert_int_eq(fill(c, 9, CG_PART_DESCRIPTION, 2), 1);
    cg_cache_invalidate(c, 9, CG_PART_DESCRIPTION, 3); /* the reader's miss */
    ck_assert_int_eq(cached(c, 9, CG_PART_DESCRIPTION), -1);
    late_stale_fill(c, 9);
    ck_assert_uint_eq(stats(c).fills_refused, 1);
    cg_cache_free(c);
}
END_TEST

START_TEST(late_stale_fill_absent_key)
{
    cg_cache *c = new_cache(100, 0);
    late_stale_fill(c, 10); /* never cached: the floor is a ghost */
    ck_assert_uint_eq(stats(c).fills_refused, 1);
    cg_cache_free(c);
}
END_TEST

START_TEST(evicted_and_stale_leave_floors)
{
    cg_cache *c = new_cache(1, 0);
    ck_assert_int_eq(fill(c, 1, 0, 5), 1);
    ck_assert_int_eq(fill(c, 2, 0, 1), 1); /* key 1 evicted for room */
    ck_assert_uint_eq(stats(c).evictions, 1);
    ck_assert_int_eq(cached(c, 1, 0), -1);
    ck_assert_int_eq(fill(c, 1, 0, 4), 0);
    ck_assert_int_eq(cached(c, 2, 0), 1); /* the refused fill evicted nothing */
    ck_assert_int_eq(fill(c, 1, 0, 6), 1);
    ck_assert_int_eq(cached(c, 1, 0), 6);
    ck_assert_int_eq(fill(c, 2, 0, 0), 0); /* key 2's floor is 1 */
    cg_cache_free(c);
}
END_TEST

/* ---- tickets ------------------------------------------------------------------------------ */

START_TEST(ghost_overflow_refuses_old_tickets)
{
    cg_cache *c = new_cache(1, 0); /* one shard: every key shares its ghost list */
    uint64_t t;
    int64_t k;

    /* a few ghosts fit: nothing forgotten, old tickets still good */
    t = cg_cache_ticket(c, 1, 0);
    for (k = 1000; k < 1100; k++)
        cg_cache_invalidate(c, k, 0, 7);
    ck_assert_uint_eq(stats(c).floors_forgotten, 0);
    for (k = 1000; k < 1100; k++)
        ck_assert_int_eq(cg_cache_newer_known(c, k, 0, 6), 1);
    ck_assert_int_eq(fill_t(c, 1, 0, 1, t), 1);

    /* many more: floors are forgotten, and every ticket taken before is refused */
    t = cg_cache_ticket(c, 2, 0);
    for (k = 2000; k < 7000; k++)
        cg_cache_invalidate(c, k, 0, 7);
    ck_assert_uint_gt(stats(c).floors_forgotten, 0);
    ck_assert_int_eq(fill_t(c, 2, 0, 1, t), 0);
    ck_assert_int_eq(cached(c, 2, 0), -1);
    /* the newest ghosts are still known */
    ck_assert_int_eq(cg_cache_newer_known(c, 6999, 0, 6), 1);
    ck_assert_int_eq(fill(c, 6999, 0, 6), 0);
    /* a ticket taken now is good */
    ck_assert_int_eq(fill(c, 2, 0, 1), 1);
    ck_assert_int_eq(cached(c, 2, 0), 1);
    cg_cache_free(c);
}
END_TEST

START_TEST(reset_refuses_old_tickets)
{
    cg_cache *c = new_cache(1000, 0);
    uint64_t t;
    cg_cache_stats st;

    ck_assert_int_eq(fill(c, 1, 0, 3), 1);
    ck_assert_int_eq(fill(c, 2, 1, 3), 1);
    cg_cache_invalidate(c, 3, 0, 7);
    t = cg_cache_ticket(c, 4, 0);
    cg_cache_reset(c);
    st = stats(c);
    ck_assert_uint_eq(st.resets, 1);
    ck_assert_uint_eq(st.entries, 0);
    ck_assert_int_eq(cached(c, 1, 0), -1);
    ck_assert_int_eq(cached(c, 2, 1), -1);
    ck_assert_int_eq(fill_t(c, 4, 0, 1, t), 0); /* ticket from before the reset */
    ck_assert_int_eq(fill(c, 4, 0, 1), 1);      /* ticket from after */
    ck_assert_int_eq(fill_t(c, 4, 0, 2, t), 0); /* the old ticket stays refused */
    ck_assert_int_eq(cached(c, 4, 0), 1);
    /* the reset dropped the floors too; reads that start after it are trusted */
    ck_assert_int_eq(cg_cache_newer_known(c, 3, 0, 1), 0);
    ck_assert_int_eq(fill(c, 3, 0, 1), 1);
    cg_cache_free(c);
}
END_TEST

/* ---- eviction ----------------------------------------------------------------------------- */

START_TEST(max_entries_exact)
{
    static const long sizes[] = {1, 2, 3, 5, 10, 31, 33, 63, 64, 100, 1000, 5000};
    size_t i;
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        long max = sizes[i], k, hits = 0;
        cg_cache *c = new_cache(max, 0);
        cg_cache_stats st;
        for (k = 0; k < 3 * max; k++) {
            cg_part *p = mk(k + 1, 0, 1);
            ck_assert_int_eq(cg_cache_put(c, p), 1);
            cg_part_free(p);
            if (max <= 100)
                ck_assert_uint_le(stats(c).entries, (uint64_t)max);
        }
        st = stats(c);
        ck_assert_msg(st.entries == (uint64_t)max, "max_entries %ld: %llu entries", max,
                      (unsigned long long)st.entries);
        ck_assert_uint_eq(st.evictions, 2 * (uint64_t)max);
        for (k = 0; k < 3 * max; k++)
            hits += cached(c, k + 1, 0) == 1;
        ck_assert_int_eq(hits, max);
        cg_cache_free(c);
    }
}
END_TEST

START_TEST(clock_keeps_referenced_entry)
{
    cg_cache *c = new_cache(2, 0);
    ck_assert_int_eq(fill(c, 1, 0, 1), 1);
    ck_assert_int_eq(fill(c, 2, 0, 1), 1);
    ck_assert_int_eq(cached(c, 1, 0), 1); /* 1 is referenced, 2 is not */
    ck_assert_int_eq(fill(c, 3, 0, 1), 1);
    ck_assert_int_eq(cached(c, 2, 0), -1);
    ck_assert_int_eq(cached(c, 1, 0), 1);
    ck_assert_int_eq(cached(c, 3, 0), 1);
    cg_cache_free(c);

    c = new_cache(3, 0);
    ck_assert_int_eq(fill(c, 1, 0, 1), 1);
    ck_assert_int_eq(fill(c, 2, 0, 1), 1);
    ck_assert_int_eq(fill(c, 3, 0, 1), 1);
    ck_assert_int_eq(cached(c, 3, 0), 1);
    ck_assert_int_eq(cached(c, 1, 0), 1);
    ck_assert_int_eq(fill(c, 4, 0, 1), 1);
    ck_assert_int_eq(cached(c, 2, 0), -1);
    ck_assert_uint_eq(stats(c).entries, 3);
    ck_assert_int_eq(cached(c, 1, 0), 1);
    ck_assert_int_eq(cached(c, 3, 0), 1);
    ck_assert_int_eq(cached(c, 4, 0), 1);
    cg_cache_free(c);
}
END_TEST

START_TEST(parts_outlive_their_entries)
{
    cg_cache *c = new_cache(2, 0);
    cg_part *a, *b, *d, *e;
    int64_t k;

    ck_assert_int_eq(fill(c, 1, 0, 1), 1);
    ck_assert_int_eq(cg_cache_get(c, 1, 0, &a), 0);
    cg_cache_invalidate(c, 1, 0, 2); /* invalidated */
    ck_assert_int_eq(fill(c, 2, 0, 1), 1);
    ck_assert_int_eq(cg_cache_get(c, 2, 0, &b), 0);
    cg_cache_reset(c); /* reset */
    ck_assert_int_eq(fill(c, 3, 0, 1), 1);
    ck_assert_int_eq(cg_cache_get(c, 3, 0, &d), 0);
    for (k = 10; k < 20; k++) /* evicted for room */
        ck_assert_int_eq(fill(c, k, 0, 1), 1);
    ck_assert_int_eq(cached(c, 3, 0), -1);
    ck_assert_int_eq(fill(c, 4, 0, 1), 1);
    ck_assert_int_eq(cg_cache_get(c, 4, 0, &e), 0);
    ck_assert_uint_eq(atomic_load(&e->refs), 2);
    cg_cache_free(c); /* the cache itself */
    ck_assert_uint_eq(atomic_load(&e->refs), 1);

    ck_assert_str_eq(cg_part_body(a), "{\"h\":1,\"v\":1}");
    ck_assert_str_eq(cg_part_body(b), "{\"h\":2,\"v\":1}");
    ck_assert_str_eq(cg_part_body(d), "{\"h\":3,\"v\":1}");
    ck_assert_str_eq(cg_part_body(e), "{\"h\":4,\"v\":1}");
    cg_part_free(a);
    cg_part_free(b);
    cg_part_free(d);
    cg_part_free(e);
}
END_TEST

START_TEST(max_entries_exact_after_reset)
{
    /* a reset starts every shard's table small again; it regrows to the same exact bound */
    static const long sizes[] = {1, 33, 1000, 5000};
    size_t i;
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        long max = sizes[i], k, hits = 0;
        cg_cache *c = new_cache(max, 0);
        cg_cache_stats st;
        for (k = 0; k < 3 * max; k++)
            ck_assert_int_eq(fill(c, k + 1, 0, 1), 1);
        ck_assert_uint_eq(stats(c).entries, (uint64_t)max);
        cg_cache_reset(c);
        ck_assert_uint_eq(stats(c).entries, 0);
        for (k = 0; k < 3 * max; k++)
            ck_assert_int_eq(cached(c, k + 1, 0), -1);
        for (k = 0; k < 3 * max; k++)
            ck_assert_int_eq(fill(c, k + 1, 0, 2), 1);
        st = stats(c);
        ck_assert_msg(st.entries == (uint64_t)max, "max_entries %ld: %llu entries after reset", max,
                      (unsigned long long)st.entries);
        ck_assert_uint_eq(st.evictions, 4 * (uint64_t)max);
        for (k = 0; k < 3 * max; k++)
            hits += cached(c, k + 1, 0) == 2;
        ck_assert_int_eq(hits, max);
        cg_cache_free(c);
    }
}
END_TEST

/* ---- ttl ---------------------------------------------------------------------------------- */

START_TEST(ttl_expiry)
{
    cg_cache *c = new_cache(100, 40);
    cg_cache_stats st;

    ck_assert_int_eq(fill(c, 1, 0, 2), 1);
    ck_assert_int_eq(cached(c, 1, 0), 2);
    sleep_ms(150);
    ck_assert_int_eq(cached(c, 1, 0), -1);
    st = stats(c);
    ck_assert_uint_eq(st.expirations, 1);
    ck_assert_uint_eq(st.hits, 1);
    ck_assert_uint_eq(st.misses, 1);
    ck_assert_uint_eq(st.entries, 0);
    /* the floor survives expiry */
    ck_assert_int_eq(cg_cache_newer_known(c, 1, 0, 1), 1);
    ck_assert_int_eq(fill(c, 1, 0, 1), 0);
    ck_assert_int_eq(fill(c, 1, 0, 2), 1);
    ck_assert_int_eq(cached(c, 1, 0), 2);
    cg_cache_free(c);

    /* without a TTL nothing expires */
    c = new_cache(100, 0);
    ck_assert_int_eq(fill(c, 1, 0, 2), 1);
    sleep_ms(60);
    ck_assert_int_eq(cached(c, 1, 0), 2);
    ck_assert_uint_eq(stats(c).expirations, 0);
    cg_cache_free(c);
}
END_TEST

/* ---- single flight ------------------------------------------------------------------------ */

#define NTHREADS 8

typedef struct {
    cg_cache *cache;
    int64_t handle;
    atomic_int calls;
    /* what each call does: return `results[n]` (0: the part at `versions[n]`) */
    int results[4];
    int64_t versions[4];
    uint64_t wait_for_waiters[4]; /* block until load_waits reaches this (0: do not) */
    long sleep_ms;
    int invalidate_to;   /* first call: invalidate to this version during the read */
    int raise_each;      /* every call: a commit lands during the read (floor = its version + 1) */
    int reset;           /* first call: then reset the cache */
    int64_t put_newer;   /* first call: put this version into the cache during the read */
    atomic_int mid_read; /* set when the first call has done the above */
} loader_ctx;

static int test_loader(cg_part **out, void *arg)
{
    loader_ctx *lc = arg;
    int n = atomic_fetch_add(&lc->calls, 1);
    double deadline = now_s() + 10;

    if (n > 3)
        n = 3;
    if (n == 0 && lc->invalidate_to)
        cg_cache_invalidate(lc->cache, lc->handle, 0, lc->invalidate_to);
    if (lc->raise_each)
        cg_cache_invalidate(lc->cache, lc->handle, 0, lc->versions[n] + 1);
    if (n == 0 && lc->reset)
        cg_cache_reset(lc->cache);
    if (n == 0 && lc->put_newer) {
        cg_part *p = mk(lc->handle, 0, lc->put_newer);
        cg_cache_put(lc->cache, p);
        cg_part_free(p);
    }
    if (n == 0)
        atomic_store(&lc->mid_read, 1);
    while (lc->wait_for_waiters[n] && stats(lc->cache).load_waits < lc->wait_for_waiters[n] &&
           now_s() < deadline)
        sleep_ms(1);
    if (lc->sleep_ms)
        sleep_ms(lc->sleep_ms);
    if (lc->results[n] == CG_ENOTFOUND)
        return cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY, "no resource %lld",
                            (long long)lc->handle);
    if (lc->results[n] < 0)
        return cg_error_set(lc->results[n], CG_ERRCLASS_REPOSITORY, "connection lost");
    *out = cg_part__new(lc->handle, 0, lc->versions[n], "{}", 2);
    return *out ? 0 : CG_ERROR;
}

typedef struct {
    loader_ctx *lc;
    pthread_barrier_t *barrier;
    int err;
    cg_part *part;
    char message[1024];
} loader_thread;

static void *load_thread(void *arg)
{
    loader_thread *t = arg;
    pthread_barrier_wait(t->barrier);
    t->err = cg_cache_load(t->lc->cache, t->lc->handle, 0, test_loader, t->lc, &t->part);
    snprintf(t->message, sizeof(t->message), "%s", t->err ? cg_error_last()->message : "");
    return NULL;
}

/* Run NTHREADS concurrent cg_cache_load calls of lc->handle. */
static void run_loads(loader_ctx *lc, loader_thread *t)
{
    pthread_t tid[NTHREADS];
    pthread_barrier_t barrier;
    int i;
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    for (i = 0; i < NTHREADS; i++) {
        t[i].lc = lc;
        t[i].barrier = &barrier;
        t[i].part = NULL;
        ck_assert_int_eq(pthread_create(&tid[i], NULL, load_thread, &t[i]), 0);
    }
    for (i = 0; i < NTHREADS; i++)
        pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&barrier);
}

START_TEST(single_flight_one_loader)
{
    loader_ctx lc = {.cache = new_cache(100, 0), .handle = 42, .versions = {7}};
    loader_thread t[NTHREADS];
    cg_cache_stats st;
    int i;

    lc.wait_for_waiters[0] = NTHREADS - 1; /* make sure everyone missed meanwhile */
    lc.sleep_ms = 50;
    run_loads(&lc, t);
    ck_assert_int_eq(atomic_load(&lc.calls), 1);
    for (i = 0; i < NTHREADS; i++) {
        ck_assert_msg(t[i].err == 0, "thread %d: %d %s", i, t[i].err, t[i].message);
        ck_assert_ptr_eq(t[i].part, t[0].part); /* one part, shared */
        ck_assert_int_eq(cg_part_version(t[i].part), 7);
    }
    /* each thread has its own reference, and the cache one */
    ck_assert_uint_eq(atomic_load(&t[0].part->refs), NTHREADS + 1);
    st = stats(lc.cache);
    ck_assert_uint_eq(st.loads, 1);
    ck_assert_uint_eq(st.load_waits, NTHREADS - 1);
    ck_assert_uint_eq(st.misses, NTHREADS);
    ck_assert_uint_eq(st.fills, 1);
    for (i = 0; i < NTHREADS; i++)
        cg_part_free(t[i].part);
    ck_assert_int_eq(cached(lc.cache, 42, 0), 7);
    cg_cache_free(lc.cache);
}
END_TEST

START_TEST(load_hit_runs_no_loader)
{
    loader_ctx lc = {.cache = new_cache(100, 0), .handle = 5, .versions = {1}};
    cg_part *p = NULL;
    ck_assert_int_eq(fill(lc.cache, 5, 0, 3), 1);
    ck_assert_int_eq(cg_cache_load(lc.cache, 5, 0, test_loader, &lc, &p), 0);
    ck_assert_int_eq(cg_part_version(p), 3);
    ck_assert_int_eq(atomic_load(&lc.calls), 0);
    ck_assert_uint_eq(stats(lc.cache).hits, 1);
    cg_part_free(p);
    cg_cache_free(lc.cache);
}
END_TEST

START_TEST(load_retried_when_newer_known)
{
    /* v4 is committed while the first read (of v3) is in flight */
    loader_ctx lc = {.cache = new_cache(100, 0), .handle = 3, .versions = {3, 4}};
    cg_part *p = NULL;
    lc.invalidate_to = 4;
    ck_assert_int_eq(cg_cache_load(lc.cache, 3, 0, test_loader, &lc, &p), 0);
    ck_assert_int_eq(atomic_load(&lc.calls), 2);
    ck_assert_int_eq(cg_part_version(p), 4);
    cg_part_free(p);
    ck_assert_int_eq(cached(lc.cache, 3, 0), 4);
    ck_assert_uint_eq(stats(lc.cache).loads, 2);
    ck_assert_uint_eq(stats(lc.cache).fills_refused, 1);
    cg_cache_free(lc.cache);
}
END_TEST

START_TEST(load_gives_up_after_three_runs)
{
    /* a commit lands during every read: each run is refused by a floor its read could not see */
    loader_ctx lc = {.cache = new_cache(100, 0), .handle = 3, .versions = {3, 4, 5, 6}};
    cg_part *p = (cg_part *)1;
    lc.raise_each = 1;
    ck_assert_int_eq(cg_cache_load(lc.cache, 3, 0, test_loader, &lc, &p), CG_ERETRYABLE);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(atomic_load(&lc.calls), 3);
    ck_assert_int_eq(cached(lc.cache, 3, 0), -1);
    ck_assert_uint_eq(stats(lc.cache).floors_disproved, 0);
    cg_cache_free(lc.cache);
}
END_TEST

START_TEST(load_disproves_a_floor_no_read_reaches)
{
    /* A forged invalidation raised the floor to 2^53 - 1, which the repository never had: the
     * second read began after the floor refused the first and still reads v3, so the floor was
     * never committed. It is forgotten, that read is served (uncached), the next one caches. */
    loader_ctx lc = {.cache = new_cache(100, 0), .handle = 3, .versions = {3, 3, 3, 3}};
    cg_part *p = NULL;
    cg_cache_invalidate(lc.cache, 3, 0, (int64_t)9007199254740991);
    ck_assert_int_eq(cg_cache_load(lc.cache, 3, 0, test_loader, &lc, &p), 0);
    ck_assert_int_eq(cg_part_version(p), 3);
    cg_part_free(p);
    ck_assert_int_eq(atomic_load(&lc.calls), 2);
    ck_assert_uint_eq(stats(lc.cache).floors_disproved, 1);
    ck_assert_int_eq(cached(lc.cache, 3, 0), -1); /* its ticket predates the forgetting */
    ck_assert_int_eq(cg_cache_load(lc.cache, 3, 0, test_loader, &lc, &p), 0);
    ck_assert_int_eq(cg_part_version(p), 3);
    cg_part_free(p);
    ck_assert_int_eq(atomic_load(&lc.calls), 3);
    ck_assert_int_eq(cached(lc.cache, 3, 0), 3); /* cached again: not wedged */
    ck_assert_int_eq(cg_cache_load(lc.cache, 3, 0, test_loader, &lc, &p), 0);
    cg_part_free(p);
    ck_assert_int_eq(atomic_load(&lc.calls), 3); /* a hit */
    /* a real floor after that is kept: v3 is refused again until a read sees v4 */
    cg_cache_invalidate(lc.cache, 3, 0, 4);
    ck_assert_int_eq(cached(lc.cache, 3, 0), -1);
    cg_cache_free(lc.cache);
}
END_TEST

START_TEST(load_serves_newer_cached_entry)
{
    /* while v3 is read, this core commits and puts v5: the fill is refused, v5 is served */
    loader_ctx lc = {.cache = new_cache(100, 0), .handle = 8, .versions = {3, 3}};
    cg_part *p = NULL;
    lc.put_newer = 5;
    ck_assert_int_eq(cg_cache_load(lc.cache, 8, 0, test_loader, &lc, &p), 0);
    ck_assert_int_eq(cg_part_version(p), 5);
    ck_assert_int_eq(atomic_load(&lc.calls), 1);
    cg_part_free(p);
    cg_cache_free(lc.cache);
}
END_TEST

static void *load_one(void *arg)
{
    loader_thread *t = arg;
    t->err = cg_cache_load(t->lc->cache, t->lc->handle, 0, test_loader, t->lc, &t->part);
    return NULL;
}

START_TEST(load_waiter_after_reset_reads_again)
{
    /* Leader A reads v3; meanwhile v4 is committed (invalidation) and the cache is reset,
     * which forgets the floor 4. Then B misses and waits for A. A's fill of v3 is refused for
     * its ticket only: A may serve its own read, but B began after v4 was known and must not
     * get v3; it reads again. */
    loader_ctx lc = {.cache = new_cache(100, 0), .handle = 6, .versions = {3, 4}};
    loader_thread a = {.lc = &lc}, b = {.lc = &lc};
    pthread_t tid;
    double deadline = now_s() + 10;

    lc.invalidate_to = 4;
    lc.reset = 1;
    lc.wait_for_waiters[0] = 1;
    ck_assert_int_eq(pthread_create(&tid, NULL, load_one, &a), 0);
    while (!atomic_load(&lc.mid_read) && now_s() < deadline)
        sleep_ms(1);
    load_one(&b); /* B, on this thread */
    pthread_join(tid, NULL);
    ck_assert_int_eq(a.err, 0);
    ck_assert_int_eq(cg_part_version(a.part), 3);
    ck_assert_int_eq(b.err, 0);
    ck_assert_int_eq(cg_part_version(b.part), 4);
    ck_assert_int_eq(atomic_load(&lc.calls), 2);
    ck_assert_int_eq(cached(lc.cache, 6, 0), 4);
    cg_part_free(a.part);
    cg_part_free(b.part);
    cg_cache_free(lc.cache);
}
END_TEST

START_TEST(load_notfound_shared)
{
    loader_ctx lc = {.cache = new_cache(100, 0), .handle = 77, .results = {CG_ENOTFOUND, 0}};
    loader_thread t[NTHREADS];
    cg_part *p = NULL;
    int i;

    lc.wait_for_waiters[0] = NTHREADS - 1;
    lc.versions[1] = 1;
    run_loads(&lc, t);
    ck_assert_int_eq(atomic_load(&lc.calls), 1);
    for (i = 0; i < NTHREADS; i++) {
        ck_assert_int_eq(t[i].err, CG_ENOTFOUND);
        ck_assert_ptr_null(t[i].part);
        /* the waiters got the leader's detail */
        ck_assert_msg(strstr(t[i].message, "no resource 77") != NULL, "%s", t[i].message);
    }
    ck_assert_uint_eq(stats(lc.cache).load_waits, NTHREADS - 1);
    /* not remembered: the next load reads again */
    ck_assert_int_eq(cg_cache_load(lc.cache, 77, 0, test_loader, &lc, &p), 0);
    ck_assert_int_eq(atomic_load(&lc.calls), 2);
    cg_part_free(p);
    cg_cache_free(lc.cache);
}
END_TEST

START_TEST(load_other_error_not_inherited)
{
    loader_ctx lc = {.cache = new_cache(100, 0), .handle = 78, .results = {CG_ERETRYABLE, 0}};
    loader_thread t[NTHREADS];
    int i, failed = 0;

    lc.versions[1] = 3;
    lc.wait_for_waiters[0] = NTHREADS - 1;
    /* the second leader waits until the other six wait on it again */
    lc.wait_for_waiters[1] = 2 * (NTHREADS - 1) - 1;
    run_loads(&lc, t);
    ck_assert_int_eq(atomic_load(&lc.calls), 2);
    for (i = 0; i < NTHREADS; i++) {
        if (t[i].err == CG_ERETRYABLE) {
            failed++;
            ck_assert_ptr_null(t[i].part);
            continue;
        }
        ck_assert_msg(t[i].err == 0, "thread %d: %d %s", i, t[i].err, t[i].message);
        ck_assert_int_eq(cg_part_version(t[i].part), 3);
        cg_part_free(t[i].part);
    }
    ck_assert_int_eq(failed, 1); /* only the first leader */
    ck_assert_uint_eq(stats(lc.cache).load_waits, 2 * (NTHREADS - 1) - 1);
    ck_assert_int_eq(cached(lc.cache, 78, 0), 3);
    cg_cache_free(lc.cache);
}
END_TEST

/* ---- stress ------------------------------------------------------------------------------- */

/* A model repository: repo[k] is key k's committed version. Committers bump it and then
 * invalidate; readers take a ticket, read it, and fill. seen[k] is the highest version any
 * thread has observed or had applied (an accepted fill, an applied invalidation, a get): a
 * get or load that STARTS after seen[k] = v must return at least v (I4). */
typedef struct {
    cg_cache *cache;
    int nkeys;
    atomic_llong *repo;
    atomic_llong *seen;
    atomic_int stop;
    atomic_long violations;
    atomic_long ops;
    char first[256];
    pthread_mutex_t first_lock;
} stress;

typedef struct {
    stress *st;
    int key;
} stress_load_ctx;

/* One step of xorshift64: the stress threads' own cheap random numbers. */
static void xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
}

static void raise_to(atomic_llong *a, long long v)
{
    long long cur = atomic_load(a);
    while (cur < v && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

static int stress_loader(cg_part **out, void *arg)
{
    stress_load_ctx *lc = arg;
    long long v = atomic_load(&lc->st->repo[lc->key]);
    *out = cg_part__new(lc->key, 0, v, "{}", 2);
    return *out ? 0 : CG_ERROR;
}

static void violation(stress *st, const char *what, int k, long long got, long long floor)
{
    atomic_fetch_add(&st->violations, 1);
    pthread_mutex_lock(&st->first_lock);
    if (st->first[0] == '\0')
        snprintf(st->first, sizeof(st->first), "%s: key %d returned v%lld after v%lld was seen",
                 what, k, got, floor);
    pthread_mutex_unlock(&st->first_lock);
}

static void *stress_thread(void *arg)
{
    stress *st = arg;
    uint64_t x = (uint64_t)(uintptr_t)&arg ^ 0x9e3779b97f4a7c15ULL;
    long n = 0;

    while (!atomic_load(&st->stop)) {
        unsigned r;
        int k;
        long long lo;
        cg_part *p = NULL;

        xorshift(&x);
        r = (unsigned)(x >> 32) % 1000;
        k = (int)((x >> 8) % (uint64_t)st->nkeys);
        lo = atomic_load(&st->seen[k]);
        n++;
        if (r < 450) { /* get */
            if (cg_cache_get(st->cache, k, 0, &p) == 0) {
                if (cg_part_version(p) < lo)
                    violation(st, "get", k, cg_part_version(p), lo);
                raise_to(&st->seen[k], cg_part_version(p));
                cg_part_free(p);
            }
        } else if (r < 650) { /* read the repository and fill */
            uint64_t t = cg_cache_ticket(st->cache, k, 0);
            long long v = atomic_load(&st->repo[k]);
            if ((x & 7) == 0)
                sched_yield(); /* widen the window for an invalidation */
            p = cg_part__new(k, 0, v, "{}", 2);
            if (p && cg_cache_fill(st->cache, p, t) == 1)
                raise_to(&st->seen[k], v);
            cg_part_free(p);
        } else if (r < 800) { /* single-flight load */
            stress_load_ctx lc = {st, k};
            if (cg_cache_load(st->cache, k, 0, stress_loader, &lc, &p) == 0) {
                if (cg_part_version(p) < lo)
                    violation(st, "load", k, cg_part_version(p), lo);
                raise_to(&st->seen[k], cg_part_version(p));
                cg_part_free(p);
            }
        } else if (r < 980) { /* commit elsewhere: bump, then invalidate */
            long long v = atomic_fetch_add(&st->repo[k], 1) + 1;
            cg_cache_invalidate(st->cache, k, 0, v);
            raise_to(&st->seen[k], v);
        } else if (r < 999) {
            cg_cache_evict(st->cache, k, 0);
        } else {
            cg_cache_reset(st->cache);
        }
    }
    atomic_fetch_add(&st->ops, n);
    return NULL;
}

static void run_stress(int nkeys, long max_entries, double seconds)
{
    stress st;
    pthread_t tid[4];
    cg_cache_stats cs;
    int i;

    memset(&st, 0, sizeof(st));
    st.cache = new_cache(max_entries, 0);
    st.nkeys = nkeys;
    st.repo = calloc((size_t)nkeys, sizeof(*st.repo));
    st.seen = calloc((size_t)nkeys, sizeof(*st.seen));
    ck_assert_ptr_nonnull(st.repo);
    ck_assert_ptr_nonnull(st.seen);
    for (i = 0; i < nkeys; i++) {
        atomic_init(&st.repo[i], 1);
        atomic_init(&st.seen[i], 0);
    }
    pthread_mutex_init(&st.first_lock, NULL);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&tid[i], NULL, stress_thread, &st), 0);
    sleep_ms((long)(seconds * 1000));
    atomic_store(&st.stop, 1);
    for (i = 0; i < 4; i++)
        pthread_join(tid[i], NULL);

    ck_assert_msg(atomic_load(&st.violations) == 0, "%ld violations of I4; first: %s",
                  atomic_load(&st.violations), st.first);
    cs = stats(st.cache);
    ck_assert_uint_le(cs.entries, (uint64_t)max_entries);
    ck_assert_uint_gt(cs.hits, 0);
    ck_assert_uint_gt(cs.fills_refused, 0);
    /* after the run every cached entry is still at or above what was seen */
    for (i = 0; i < nkeys; i++) {
        int64_t v = cached(st.cache, i, 0);
        ck_assert(v == -1 || (v >= atomic_load(&st.seen[i]) && v <= atomic_load(&st.repo[i])));
    }
    cg_cache_free(st.cache);
    pthread_mutex_destroy(&st.first_lock);
    free(st.repo);
    free(st.seen);
}

START_TEST(stress_monotonic_small)
{
    run_stress(16, 8, 0.5); /* small key space: constant contention, CLOCK eviction */
}
END_TEST

START_TEST(stress_monotonic_ghost_overflow)
{
    run_stress(1000, 16, 0.3); /* more keys than the ghost list holds: floors forgotten */
}
END_TEST

/* ---- contention --------------------------------------------------------------------------- */

/* Four threads hammer few shards (one, for a cache under 64 entries) with hits, fills, puts,
 * loads, invalidations, evictions and the odd reset, so the shard lock is always contended
 * and tables grow while others wait. Every part is made up front and the test keeps one
 * reference to each: parts handed out must be intact (a freed one would fail its body check,
 * or ASan), no get or load may return a version below one already seen (I4), and once the
 * cache is freed every part must be back to exactly the test's reference. A commit (bump the
 * version, then put or invalidate) holds the key's row lock, as a real one holds the row. */
typedef struct {
    cg_cache *cache;
    int nkeys;
    int nversions;
    cg_part **made;       /* made[k * nversions + v - 1]: version v of key k */
    pthread_mutex_t *row; /* per key: held across a commit */
    atomic_llong *repo;   /* the committed version of each key, 1..nversions */
    atomic_llong *seen;   /* as in the stress run */
    atomic_int stop;
    atomic_long violations;
    atomic_long broken; /* parts that did not read back as made */
    char first[256];
    pthread_mutex_t first_lock;
} hammer;

typedef struct {
    hammer *hm;
    int key;
} hammer_load_ctx;

static cg_part *made(hammer *hm, int k, long long v)
{
    return hm->made[(size_t)k * (size_t)hm->nversions + (size_t)(v - 1)];
}

static void hammer_fail(hammer *hm, atomic_long *counter, const char *fmt, int k, long long a,
                        long long b)
{
    atomic_fetch_add(counter, 1);
    pthread_mutex_lock(&hm->first_lock);
    if (hm->first[0] == '\0')
        snprintf(hm->first, sizeof(hm->first), fmt, k, a, b);
    pthread_mutex_unlock(&hm->first_lock);
}

/* A part handed out for key k: intact, and not older than `lo`, which was seen before. */
static void hammer_check(hammer *hm, const char *what, int k, cg_part *p, long long lo)
{
    long long v = cg_part_version(p);
    char body[64];
    if (cg_part_handle(p) != k || cg_part_kind_of(p) != 0 || v < 1 || v > hm->nversions ||
        p != made(hm, k, v)) {
        hammer_fail(hm, &hm->broken, "key %d: got a part of key %lld, version %lld", k,
                    (long long)cg_part_handle(p), v);
        return;
    }
    snprintf(body, sizeof(body), "{\"h\":%d,\"v\":%lld}", k, v);
    if (strcmp(cg_part_body(p), body) != 0)
        hammer_fail(hm, &hm->broken, "key %d: version %lld has a broken body (refs %lld)", k, v,
                    (long long)atomic_load(&p->refs));
    if (v < lo) {
        char fmt[128];
        snprintf(fmt, sizeof(fmt), "%s: key %%d returned v%%lld after v%%lld was seen", what);
        hammer_fail(hm, &hm->violations, fmt, k, v, lo);
    }
    raise_to(&hm->seen[k], v);
}

static int hammer_loader(cg_part **out, void *arg)
{
    hammer_load_ctx *lc = arg;
    *out = cg_part__ref(made(lc->hm, lc->key, atomic_load(&lc->hm->repo[lc->key])));
    return 0;
}

static void *hammer_thread(void *arg)
{
    hammer *hm = arg;
    uint64_t x = (uint64_t)(uintptr_t)&arg ^ 0x2545f4914f6cdd1dULL;

    while (!atomic_load(&hm->stop)) {
        unsigned r;
        int k;
        long long lo;
        cg_part *p = NULL;

        xorshift(&x);
        r = (unsigned)(x >> 32) % 1000;
        k = (int)((x >> 8) % (uint64_t)hm->nkeys);
        lo = atomic_load(&hm->seen[k]);
        if (r < 500) { /* a hit, mostly */
            if (cg_cache_get(hm->cache, k, 0, &p) == 0) {
                hammer_check(hm, "get", k, p, lo);
                cg_part_free(p);
            }
        } else if (r < 650) { /* read the repository and fill */
            uint64_t t = cg_cache_ticket(hm->cache, k, 0);
            long long v = atomic_load(&hm->repo[k]);
            if (cg_cache_fill(hm->cache, made(hm, k, v), t) == 1)
                raise_to(&hm->seen[k], v);
        } else if (r < 750) { /* single-flight load */
            hammer_load_ctx lc = {hm, k};
            if (cg_cache_load(hm->cache, k, 0, hammer_loader, &lc, &p) == 0) {
                hammer_check(hm, "load", k, p, lo);
                cg_part_free(p);
            }
        } else if (r < 970) { /* commit: bump, then put (this core) or invalidate (another) */
            pthread_mutex_lock(&hm->row[k]);
            if (atomic_load(&hm->repo[k]) < hm->nversions) {
                long long v = atomic_fetch_add(&hm->repo[k], 1) + 1;
                if (r & 1)
                    cg_cache_put(hm->cache, made(hm, k, v));
                else
                    cg_cache_invalidate(hm->cache, k, 0, v);
                raise_to(&hm->seen[k], v);
            }
            pthread_mutex_unlock(&hm->row[k]);
        } else if (r < 999) {
            cg_cache_evict(hm->cache, k, 0);
        } else {
            cg_cache_reset(hm->cache);
        }
    }
    return NULL;
}

static void run_hammer(int nkeys, int nversions, long max_entries, long ttl_ms, double seconds)
{
    hammer hm;
    pthread_t tid[4];
    cg_cache_stats cs;
    int i, k;
    long long v;

    memset(&hm, 0, sizeof(hm));
    hm.cache = new_cache(max_entries, ttl_ms);
    hm.nkeys = nkeys;
    hm.nversions = nversions;
    hm.made = calloc((size_t)nkeys * (size_t)nversions, sizeof(*hm.made));
    hm.row = calloc((size_t)nkeys, sizeof(*hm.row));
    hm.repo = calloc((size_t)nkeys, sizeof(*hm.repo));
    hm.seen = calloc((size_t)nkeys, sizeof(*hm.seen));
    ck_assert_ptr_nonnull(hm.made);
    ck_assert_ptr_nonnull(hm.row);
    ck_assert_ptr_nonnull(hm.repo);
    ck_assert_ptr_nonnull(hm.seen);
    for (k = 0; k < nkeys; k++) {
        for (v = 1; v <= nversions; v++)
            hm.made[(size_t)k * (size_t)nversions + (size_t)(v - 1)] = mk(k, 0, v);
        pthread_mutex_init(&hm.row[k], NULL);
        atomic_init(&hm.repo[k], 1);
        atomic_init(&hm.seen[k], 0);
    }
    pthread_mutex_init(&hm.first_lock, NULL);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&tid[i], NULL, hammer_thread, &hm), 0);
    sleep_ms((long)(seconds * 1000));
    atomic_store(&hm.stop, 1);
    for (i = 0; i < 4; i++)
        pthread_join(tid[i], NULL);

    ck_assert_msg(atomic_load(&hm.broken) == 0, "%ld broken parts; first: %s",
                  atomic_load(&hm.broken), hm.first);
    ck_assert_msg(atomic_load(&hm.violations) == 0, "%ld violations of I4; first: %s",
                  atomic_load(&hm.violations), hm.first);
    cs = stats(hm.cache);
    ck_assert_uint_le(cs.entries, (uint64_t)max_entries);
    ck_assert_uint_gt(cs.hits, 0);
    for (k = 0; k < nkeys; k++) {
        int64_t got = cached(hm.cache, k, 0);
        ck_assert(got == -1 ||
                  (got >= atomic_load(&hm.seen[k]) && got <= atomic_load(&hm.repo[k])));
    }
    /* with the cache gone and its retired references released, every part is back to the
     * test's own reference */
    cg_cache_free(hm.cache);
    cg_reclaim_drain();
    for (k = 0; k < nkeys; k++)
        for (v = 1; v <= nversions; v++) {
            cg_part *p = made(&hm, k, v);
            ck_assert_msg(atomic_load(&p->refs) == 1, "key %d v%lld: %u references", k, v,
                          atomic_load(&p->refs));
            cg_part_free(p);
        }
    for (k = 0; k < nkeys; k++)
        pthread_mutex_destroy(&hm.row[k]);
    pthread_mutex_destroy(&hm.first_lock);
    free(hm.made);
    free(hm.row);
    free(hm.repo);
    free(hm.seen);
}

START_TEST(contention_one_shard)
{
    run_hammer(64, 400, 48, 0, 0.5); /* one shard, CLOCK eviction, the table grows once */
}
END_TEST

START_TEST(contention_growing_tables)
{
    /* 64 shards of 78-79 entries: each table grows from 64 to 256 slots while contended */
    run_hammer(6000, 6, 5000, 0, 0.5);
}
END_TEST

START_TEST(contention_ttl)
{
    run_hammer(64, 400, 48, 2, 0.5); /* entries keep expiring under the hits */
}
END_TEST

/* ---- lock-free readers against every writer ------------------------------------------------ */

/* Readers take hits the way the library does (a read-side section, cg_cache_peek, no
 * reference) on six threads, while two writers commit new versions (a put of a part made for
 * the occasion, or an invalidation), fill from a model repository with tickets, evict, and
 * reset; with a TTL, entries also expire under the readers. The cache's reference is the only
 * one a put part has, so every part a writer drops is really freed once its grace period has
 * passed. A reader checks each part it finds: its key, and a body that names the key and the
 * version (a freed and reused part fails this; under AddressSanitizer, reading a freed one at
 * all fails the run), and a version not below the floor seen before the hit began (I4). Now
 * and then it yields inside the section, peeks again at other keys, and checks the first part
 * once more: a part stays whole until the section ends, however long. */
typedef struct {
    cg_cache *cache;
    int nkeys;
    pthread_mutex_t *row; /* per key: held across a commit, as the repository holds the row */
    atomic_llong *repo;   /* the committed version of each key */
    atomic_llong *seen;   /* as in the stress run */
    atomic_int stop;
    atomic_long violations, broken, hits, resets;
    char first[256];
    pthread_mutex_t first_lock;
} race;

static void race_fail(race *rc, atomic_long *counter, const char *what, int k, long long a,
                      long long b)
{
    atomic_fetch_add(counter, 1);
    pthread_mutex_lock(&rc->first_lock);
    if (rc->first[0] == '\0')
        snprintf(rc->first, sizeof(rc->first), "%s: key %d, %lld vs %lld", what, k, a, b);
    pthread_mutex_unlock(&rc->first_lock);
}

static cg_part *race_part(int k, long long v)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"h\":%d,\"v\":%lld}", k, v);
    cg_part *p = cg_part__new(k, 0, v, body, (size_t)n);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* A part a hit on key k handed out: whole, and not below `lo`. */
static void race_check(race *rc, int k, const cg_part *p, long long lo)
{
    char body[64];
    int n;
    if (p->handle != k || p->kind != 0) {
        race_fail(rc, &rc->broken, "a part of another key", k, (long long)p->handle, p->kind);
        return;
    }
    n = snprintf(body, sizeof(body), "{\"h\":%d,\"v\":%lld}", k, (long long)p->version);
    if (p->len != (size_t)n || memcmp(p->body, body, (size_t)n + 1) != 0)
        race_fail(rc, &rc->broken, "a broken body (freed?)", k, (long long)p->version, 0);
    if (p->version < lo)
        race_fail(rc, &rc->violations, "a version below the floor", k, (long long)p->version, lo);
}

static void *race_reader(void *arg)
{
    race *rc = arg;
    uint64_t x = (uint64_t)(uintptr_t)&arg ^ 0x9e3779b97f4a7c15ULL;
    long hits = 0;

    while (!atomic_load(&rc->stop)) {
        const cg_part *p;
        int k, j;
        long long lo;

        xorshift(&x);
        k = (int)((x >> 8) % (uint64_t)rc->nkeys);
        lo = atomic_load(&rc->seen[k]);
        cg_read_lock();
        if ((p = cg_cache_peek(rc->cache, k, 0)) != NULL) {
            race_check(rc, k, p, lo);
            raise_to(&rc->seen[k], p->version);
            hits++;
            if ((x & 63) == 0) { /* hold the section a while, across other hits */
                sched_yield();
                for (j = 1; j <= 8; j++) {
                    int k2 = (k + j * 7) % rc->nkeys;
                    long long lo2 = atomic_load(&rc->seen[k2]);
                    const cg_part *q;
                    cg_read_lock(); /* sections nest */
                    if ((q = cg_cache_peek(rc->cache, k2, 0)) != NULL)
                        race_check(rc, k2, q, lo2);
                    cg_read_unlock();
                }
                race_check(rc, k, p, 0);
            }
        }
        cg_read_unlock();
    }
    atomic_fetch_add(&rc->hits, hits);
    return NULL;
}

static void *race_writer(void *arg)
{
    race *rc = arg;
    uint64_t x = (uint64_t)(uintptr_t)&arg ^ 0x2545f4914f6cdd1dULL;

    while (!atomic_load(&rc->stop)) {
        unsigned r;
        int k;

        xorshift(&x);
        r = (unsigned)(x >> 32) % 1000;
        k = (int)((x >> 8) % (uint64_t)rc->nkeys);
        if (r < 700) { /* commit: bump, then put (this core) or invalidate (another core) */
            long long v;
            pthread_mutex_lock(&rc->row[k]);
            v = atomic_fetch_add(&rc->repo[k], 1) + 1;
            if (r < 400) {
                cg_part *p = race_part(k, v);
                cg_cache_put(rc->cache, p);
                cg_part_free(p); /* the cache's reference is the only one left */
            } else {
                cg_cache_invalidate(rc->cache, k, 0, v);
            }
            raise_to(&rc->seen[k], v);
            pthread_mutex_unlock(&rc->row[k]);
        } else if (r < 950) { /* read the repository and fill */
            uint64_t t = cg_cache_ticket(rc->cache, k, 0);
            long long v = atomic_load(&rc->repo[k]);
            cg_part *p = race_part(k, v);
            if (cg_cache_fill(rc->cache, p, t) == 1)
                raise_to(&rc->seen[k], v);
            cg_part_free(p);
        } else if (r < 998) {
            cg_cache_evict(rc->cache, k, 0);
        } else {
            cg_cache_reset(rc->cache);
            atomic_fetch_add(&rc->resets, 1);
        }
    }
    return NULL;
}

static void run_race(int nkeys, long max_entries, long ttl_ms, double seconds)
{
    enum { READERS = 6, WRITERS = 2 };
    pthread_t tid[READERS + WRITERS];
    race rc;
    cg_cache_stats cs;
    int i;

    memset(&rc, 0, sizeof(rc));
    rc.cache = new_cache(max_entries, ttl_ms);
    rc.nkeys = nkeys;
    rc.row = calloc((size_t)nkeys, sizeof(*rc.row));
    rc.repo = calloc((size_t)nkeys, sizeof(*rc.repo));
    rc.seen = calloc((size_t)nkeys, sizeof(*rc.seen));
    ck_assert_ptr_nonnull(rc.row);
    ck_assert_ptr_nonnull(rc.repo);
    ck_assert_ptr_nonnull(rc.seen);
    for (i = 0; i < nkeys; i++) {
        pthread_mutex_init(&rc.row[i], NULL);
        atomic_init(&rc.repo[i], 1);
        atomic_init(&rc.seen[i], 0);
    }
    pthread_mutex_init(&rc.first_lock, NULL);
    for (i = 0; i < READERS + WRITERS; i++)
        ck_assert_int_eq(
            pthread_create(&tid[i], NULL, i < READERS ? race_reader : race_writer, &rc), 0);
    sleep_ms((long)(seconds * 1000));
    atomic_store(&rc.stop, 1);
    for (i = 0; i < READERS + WRITERS; i++)
        pthread_join(tid[i], NULL);

    ck_assert_msg(atomic_load(&rc.broken) == 0, "%ld broken parts; first: %s",
                  atomic_load(&rc.broken), rc.first);
    ck_assert_msg(atomic_load(&rc.violations) == 0, "%ld versions below the floor; first: %s",
                  atomic_load(&rc.violations), rc.first);
    cs = stats(rc.cache);
    ck_assert_uint_gt(atomic_load(&rc.hits), 0);
    ck_assert_uint_ge(cs.hits, (uint64_t)atomic_load(&rc.hits)); /* per-thread counts summed */
    ck_assert_uint_gt(cs.invalidations, 0);
    ck_assert_uint_gt(atomic_load(&rc.resets), 0);
    ck_assert_uint_le(cs.entries, (uint64_t)max_entries);
    if (ttl_ms > 0)
        ck_assert_uint_gt(cs.expirations + cs.fills_refused, 0);
    for (i = 0; i < nkeys; i++) {
        int64_t got = cached(rc.cache, i, 0);
        ck_assert(got == -1 ||
                  (got >= atomic_load(&rc.seen[i]) && got <= atomic_load(&rc.repo[i])));
    }
    cg_reclaim_drain();
    cg_cache_free(rc.cache);
    for (i = 0; i < nkeys; i++)
        pthread_mutex_destroy(&rc.row[i]);
    pthread_mutex_destroy(&rc.first_lock);
    free(rc.row);
    free(rc.repo);
    free(rc.seen);
}

START_TEST(lockfree_readers_race_one_shard)
{
    run_race(64, 48, 0, 0.6); /* one shard: CLOCK evictions and a growth after every reset */
}
END_TEST

START_TEST(lockfree_readers_race_growing_tables)
{
    run_race(6000, 5000, 0, 0.8); /* 64 shards, each table regrowing after every reset */
}
END_TEST

START_TEST(lockfree_readers_race_ttl)
{
    run_race(64, 48, 1, 0.6); /* entries expiring under the readers */
}
END_TEST

/* ---- sampling (the consistency audit) ----------------------------------------------------- */

/* Every key of the sample is distinct, cached, and at the version the cache holds. */
static void check_sample(cg_cache *c, const cg_cache_key *k, size_t n)
{
    size_t i, j;
    for (i = 0; i < n; i++) {
        ck_assert_int_eq(cached(c, k[i].handle, k[i].kind), k[i].version);
        for (j = 0; j < i; j++)
            ck_assert_msg(k[i].handle != k[j].handle || k[i].kind != k[j].kind,
                          "(%lld, %d) sampled twice", (long long)k[i].handle, k[i].kind);
    }
}

START_TEST(sample_copies_keys_and_versions_without_counting)
{
    cg_cache *c = new_cache(100000, 0); /* 64 shards */
    cg_cache_key *k = calloc(5000, sizeof(*k)), *k2 = calloc(100, sizeof(*k2));
    cg_cache_stats before, after;
    size_t n, i, same = 0;

    ck_assert_ptr_nonnull(k);
    ck_assert_ptr_nonnull(k2);
    ck_assert_uint_eq(cg_cache_sample(c, k, 10), 0); /* empty */
    for (i = 0; i < 1000; i++)
        ck_assert_int_eq(fill(c, (int64_t)i + 1, (int)(i % 3), (int64_t)(i % 7) + 1), 1);
    before = stats(c);
    n = cg_cache_sample(c, k, 5000); /* more than there is: everything */
    after = stats(c);
    ck_assert_uint_eq(n, 1000);
    ck_assert_uint_eq(after.hits, before.hits); /* a sample is no lookup */
    ck_assert_uint_eq(after.misses, before.misses);
    check_sample(c, k, n);

    /* a part of it, spread: two samples of 100 start at other places */
    ck_assert_uint_eq(cg_cache_sample(c, k, 100), 100);
    check_sample(c, k, 100);
    ck_assert_uint_eq(cg_cache_sample(c, k2, 100), 100);
    for (i = 0; i < 100; i++)
        same += k[i].handle == k2[i].handle && k[i].kind == k2[i].kind;
    ck_assert_msg(same < 100, "two samples of 100 out of 1000 were the same");

    /* invalidated entries are gone from the next sample; versions follow the cache */
    cg_cache_invalidate(c, 1, 0, 99);
    ck_assert_int_eq(fill(c, 2, 1, 50), 1);
    n = cg_cache_sample(c, k, 5000);
    ck_assert_uint_eq(n, 999);
    check_sample(c, k, n);
    cg_cache_free(c);
    free(k2);

    /* a cache with few entries over many shards: a sample as large as the cache is topped up
     * from the shards that had more than their share, so it still gets every entry */
    c = new_cache(100000, 0);
    for (i = 0; i < 70; i++)
        ck_assert_int_eq(fill(c, (int64_t)i * 7919 + 3, 2, 1), 1);
    ck_assert_uint_eq(cg_cache_sample(c, k, 70), 70);
    check_sample(c, k, 70);
    cg_cache_free(c);

    /* one shard */
    c = new_cache(10, 0);
    for (i = 0; i < 10; i++)
        ck_assert_int_eq(fill(c, (int64_t)i, 0, 3), 1);
    ck_assert_uint_eq(cg_cache_sample(c, k, 3), 3);
    check_sample(c, k, 3);
    cg_cache_free(c);
    free(k);
}
END_TEST

START_TEST(sample_skips_expired_entries)
{
    cg_cache *c = new_cache(100, 40);
    cg_cache_key k[8];
    ck_assert_int_eq(fill(c, 1, 0, 2), 1);
    ck_assert_int_eq(fill(c, 2, 0, 2), 1);
    ck_assert_uint_eq(cg_cache_sample(c, k, 8), 2);
    sleep_ms(150);
    ck_assert_uint_eq(cg_cache_sample(c, k, 8), 0); /* not served any more: not sampled */
    cg_cache_free(c);
}
END_TEST

static Suite *cache_suite(void)
{
    Suite *s = suite_create("cache");
    TCase *tc = tcase_create("basic");
    tcase_add_test(tc, hit_miss_fill_counters);
    tcase_add_test(tc, bad_options);
    suite_add_tcase(s, tc);
    tc = tcase_create("floors");
    tcase_add_test(tc, floor_refuses_older_fill);
    tcase_add_test(tc, invalidate_evicts_only_lower);
    tcase_add_test(tc, late_stale_fill_cached_key);
    tcase_add_test(tc, late_stale_fill_absent_key);
    tcase_add_test(tc, evicted_and_stale_leave_floors);
    suite_add_tcase(s, tc);
    tc = tcase_create("sample");
    tcase_add_test(tc, sample_copies_keys_and_versions_without_counting);
    suite_add_tcase(s, tc);
    tc = tcase_create("tickets");
    tcase_add_test(tc, ghost_overflow_refuses_old_tickets);
    tcase_add_test(tc, reset_refuses_old_tickets);
    suite_add_tcase(s, tc);
    tc = tcase_create("eviction");
    tcase_add_test(tc, max_entries_exact);
    tcase_add_test(tc, clock_keeps_referenced_entry);
    tcase_add_test(tc, parts_outlive_their_entries);
    tcase_add_test(tc, max_entries_exact_after_reset);
    suite_add_tcase(s, tc);
    tc = tcase_create("ttl");
    tcase_add_test(tc, ttl_expiry);
    tcase_add_test(tc, sample_skips_expired_entries);
    suite_add_tcase(s, tc);
    tc = tcase_create("single-flight");
    tcase_add_test(tc, single_flight_one_loader);
    tcase_add_test(tc, load_hit_runs_no_loader);
    tcase_add_test(tc, load_retried_when_newer_known);
    tcase_add_test(tc, load_gives_up_after_three_runs);
    tcase_add_test(tc, load_disproves_a_floor_no_read_reaches);
    tcase_add_test(tc, load_serves_newer_cached_entry);
    tcase_add_test(tc, load_notfound_shared);
    tcase_add_test(tc, load_other_error_not_inherited);
    tcase_add_test(tc, load_waiter_after_reset_reads_again);
    suite_add_tcase(s, tc);
    tc = tcase_create("stress");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, stress_monotonic_small);
    tcase_add_test(tc, stress_monotonic_ghost_overflow);
    suite_add_tcase(s, tc);
    tc = tcase_create("contention");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, contention_one_shard);
    tcase_add_test(tc, contention_growing_tables);
    tcase_add_test(tc, contention_ttl);
    suite_add_tcase(s, tc);
    tc = tcase_create("lock-free");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, lockfree_readers_race_one_shard);
    tcase_add_test(tc, lockfree_readers_race_growing_tables);
    tcase_add_test(tc, lockfree_readers_race_ttl);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cgt_run_suite(cache_suite());
}
