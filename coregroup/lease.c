/*
 * lease.c — the freshness lease: how long a core may trust its cache without asking.
 *
 * The promise (DESIGN.md, invariant I5): a read never returns a version older than what the
 * repository held max_staleness_ms before the read started, or it fails degraded. The
 * mechanism:
 *
 *  - A PROOF (poll.c, catchup.c) shows that every event the repository had at a time T0 is
 *    applied to the cache; T0 is taken before the query that reads the group's event_seq.
 *    Each proof moves fresh_until to T0 + max_staleness_ms, never back.
 *  - A cache hit first checks that the coarse monotonic clock reads below fresh_until: one
 *    vDSO clock read and one atomic load, no lock, no shared write. The coarse clock may lag
 *    the precise one by its resolution, so that much is taken off every lease.
 *  - Why that is enough: a hit that passes the check at time t < T0 + max_staleness_ms serves
 *    a cache that reflects every change committed before T0 (later invalidations only evict,
 *    and the floor/ticket rules refuse late stale fills), and T0 > t - max_staleness_ms.
 *  - A paused process, a starved apply thread, a dead bus or an unreachable repository all
 *    stop the proofs, never the clock: the lease runs out and reads go to the repository (or
 *    fail degraded) until a proof succeeds. A core resumed after any pause finds its lease
 *    expired before its first read, whatever order its threads wake in.
 * Not here: when proofs are taken (poll.c) and what serves a read once the lease has run out
 * (call.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core_internal.h"
#include "coregroup/sys/clock.h"

void cg_lease_renew(cg_core *core, int64_t t0_us)
{
    int64_t until = t0_us / 1000 + core->cfg->max_staleness_ms - core->coarse_slack_ms;
    int64_t cur = atomic_load(&core->fresh_until_ms), at = atomic_load(&core->proof_at_us);
    while (until > cur &&
           !atomic_compare_exchange_weak_explicit(&core->fresh_until_ms, &cur, until,
                                                  memory_order_release, memory_order_relaxed))
        ;
    while (t0_us > at && !atomic_compare_exchange_weak(&core->proof_at_us, &at, t0_us))
        ;
    if (at > 0 && t0_us > at) /* only the apply thread renews: `at` was the previous proof */
        cg_hist_observe(&core->hist[CG_HIST_PROOF_AGE_MS], (double)(t0_us - at) / 1000.0);
    atomic_fetch_add(&core->freshness_proofs, 1);
}

int64_t cg_lease_age_ms(const cg_core *core)
{
    int64_t at = atomic_load(&((cg_core *)core)->proof_at_us);
    return at == 0 ? -1 : (cg_clock_mono_us() - at) / 1000;
}

void cg_lease_reason(const cg_core *core, char *buf, size_t size)
{
    cg_core *c = (cg_core *)core;
    int64_t age = cg_lease_age_ms(core);
    char err[sizeof(c->apply_error)];

    buf[0] = '\0';
    if (cg_lease_valid(core))
        return;
    if (!atomic_load(&c->repo_ok)) {
        pthread_mutex_lock(&c->apply_error_mu);
        memcpy(err, c->apply_error, sizeof(err));
        pthread_mutex_unlock(&c->apply_error_mu);
        snprintf(buf, size, "no freshness proof for %" PRId64 " ms (bound %d ms): repository: %s",
                 age, core->cfg->max_staleness_ms, err);
    } else {
        snprintf(buf, size,
                 "no freshness proof for %" PRId64 " ms (bound %d ms): the apply thread has not "
                 "completed one",
                 age, core->cfg->max_staleness_ms);
    }
}
