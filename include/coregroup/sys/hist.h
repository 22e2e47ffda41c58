/*
 * hist.h — a fixed-bucket histogram that threads observe into without a lock (private to the
 * library and its programs; header-only).
 *
 * Bounds are chosen per use, ascending, the last one +Inf, at most CG_HISTOGRAM_MAX_BUCKETS.
 * Observing is one relaxed atomic add on the bucket and two on the totals, so a histogram may
 * sit on a thread's path (the apply thread, a daemon worker), never on a cache hit. A snapshot
 * is cumulative (Prometheus' "le" buckets) and read without stopping the writers: each count
 * is exact, the set of them is a moment's view give or take the observations in flight.
 */
#ifndef CG_SYS_HIST_H
#define CG_SYS_HIST_H

#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "coregroup/core.h"

typedef struct cg_hist {
    const double *le; /* upper bounds, ascending; le[n - 1] is INFINITY */
    size_t n;
    atomic_uint_fast64_t bucket[CG_HISTOGRAM_MAX_BUCKETS]; /* not cumulative */
    atomic_uint_fast64_t total;
    atomic_uint_fast64_t sum_micro; /* sum of observations, in millionths of the unit */
} cg_hist;

/* Set the bounds (a static array of n, n <= CG_HISTOGRAM_MAX_BUCKETS) of a zeroed histogram. */
static inline void cg_hist_init(cg_hist *h, const double *le, size_t n)
{
    h->le = le;
    h->n = n < CG_HISTOGRAM_MAX_BUCKETS ? n : CG_HISTOGRAM_MAX_BUCKETS;
}

static inline void cg_hist_observe(cg_hist *h, double v)
{
    size_t i = 0;
    if (h->n == 0)
        return;
    if (!(v >= 0))
        v = 0; /* negative (a clock stepped) or NaN: count it in the first bucket */
    while (i + 1 < h->n && v > h->le[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_micro, (uint_fast64_t)(v * 1e6), memory_order_relaxed);
}

/* A cumulative snapshot. */
static inline void cg_hist_snapshot(cg_histogram *out, const cg_hist *h)
{
    uint64_t run = 0;
    size_t i;
    out->n_buckets = h->n;
    for (i = 0; i < h->n; i++) {
        run += atomic_load_explicit(&((cg_hist *)h)->bucket[i], memory_order_relaxed);
        out->le[i] = h->le[i];
        out->count[i] = run;
    }
    out->total = run;
    out->sum = (double)atomic_load_explicit(&((cg_hist *)h)->sum_micro, memory_order_relaxed) / 1e6;
}

#endif
