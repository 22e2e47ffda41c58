/*
 * poll.c — the backstop poll and the freshness proof, on the apply thread.
 *
 * Every proof_every_ms (at most a quarter of max_staleness_ms, at most [bus]
 * poll_interval_ms) the apply thread proves its cache fresh:
 *
 *  1. note T0 (CLOCK_MONOTONIC), THEN read the group's event_seq E. Every change committed
 *     before T0 has an event number <= E;
 *  2. when every event up to E is already applied, the cache reflects everything committed
 *     before T0: the lease is renewed to T0 + max_staleness_ms (lease.c);
 *  3. otherwise the events between are usually still on the bus: the proof WAITS for the bus
 *     to deliver up to E (cg_poll_advanced completes it, with the same T0). If they have not
 *     come within the reorder window, they are read from the outbox (catchup.c), which is a
 *     proof of its own.
 * So a healthy core proves freshness with one cheap SELECT per period and no catch-up, a core
 * whose bus lost messages catches up within one period plus the window (the backstop: a dead
 * bus costs at most that much staleness), and a core that cannot reach the repository stops
 * renewing: its lease runs out and reads leave the cache until a proof succeeds again.
 * T0 is taken BEFORE the query, so a pause anywhere after it only shortens the lease.
 *
 * Forged bus messages (wire version 1 has no authentication without CURVE) cannot make a
 * proof lie: the applied point a proof compares with (cg_bus_applied_seq) leaves out a seq
 * whose bus copies conflicted until the outbox was read for it, and each proof first tells
 * the transport the repository's counter, so a seq that was counted as applied before the
 * repository had it is forgotten instead of standing in for the real event (bus.c).
 */
#include "core_internal.h"
#include "coregroup/sys/clock.h"
#include "coregroup/sys/error.h"

void cg_poll_advanced(cg_core *core, int64_t applied)
{
    if (core->apply.proof_seq > 0 && applied >= core->apply.proof_seq) {
        cg_lease_renew(core, core->apply.proof_t0_us);
        core->apply.proof_seq = 0;
    }
}

/* A proof the bus did not complete within the reorder window: read the outbox instead. */
static void finish_by_catchup(cg_core *core)
{
    int64_t applied = cg_bus_applied_seq(core->bus), got;
    core->apply.proof_seq = 0;
    if ((got = cg_catchup_run(core, applied)) >= 0)
        cg_bus_caught_up(core->bus, got);
}

void cg_poll_tick(cg_core *core)
{
    int64_t now = cg_clock_mono_us(), e, t0;
    cg_conn *c;
    int err, all_v2 = 0;

#ifdef CG_TEST_HOOKS
    if (atomic_load(&core->hooks.no_proofs))
        return;
#endif
    if (core->apply.proof_seq > 0 && now >= core->apply.proof_t0_us +
                                                (int64_t)core->cfg->reorder_window_ms * 1000 +
                                                (int64_t)core->apply.proof_every_ms * 1000 / 4) {
        finish_by_catchup(core);
        return;
    }
    if (now < core->apply.next_proof_us)
        return;
    core->apply.next_proof_us = now + (int64_t)core->apply.proof_every_ms * 1000;
    atomic_fetch_add(&core->polls, 1);
    t0 = cg_clock_mono_us();
    if ((c = cg_apply__conn(core)) == NULL)
        return;
    if ((err = cg_repo_event_seq(&e, &all_v2, c, core->cfg->group_id)) < 0) {
        cg_apply__note(core, err);
        return;
    }
    cg_core__names_ok(core, all_v2); /* before the lease is renewed from t0 */
    cg_apply__note(core, 0);
    /* Anything the bus delivered so far was heard before this read, so a real event of it is
     * numbered <= e: a seq above e counted as applied was forged (the NEXT seq, published
     * before its real commit) and must not stand in for the real event (bus.c). */
    cg_bus_event_seq_read(core->bus, e);
    if (cg_bus_applied_seq(core->bus) >= e) {
        cg_lease_renew(core, t0);
        return;
    }
    core->apply.proof_t0_us = t0; /* wait for the bus to deliver up to e */
    core->apply.proof_seq = e;
}
