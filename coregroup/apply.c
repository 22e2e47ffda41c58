/*
 * apply.c — the apply thread: what a core does with what the bus tells it.
 *
 * The apply thread is the bus's subscriber thread (invalidation/bus.c owns the sockets,
 * de-duplication, ordering and gap detection); the handlers here are the core's side of it.
 * Its invariants:
 *
 *  - Every invalidation heard is applied to the cache AT ONCE, in whatever order it arrives:
 *    an invalidation only evicts entries below a version and raises floors, which commutes.
 *  - Its one repository connection ("<core>/apply") is used for two things only: reading the
 *    events of a real gap from the outbox (catchup.c) and proving the cache fresh (poll.c).
 *    Membership, pruning and the pool's reconnects run on other threads and connections, so
 *    nothing they wait for can delay applying an invalidation.
 *  - Starting follows the Clone pattern: the SUB sockets are subscribed before the group's
 *    event_seq is read as the applied point, so every later event is heard and every earlier
 *    one is already in the repository; that read is also the first freshness proof.
 *  - A broken connection is reconnected with one attempt and no retry loop: when the
 *    repository is away the thread goes back to its sockets, and the lease (lease.c) stops
 *    the cache from being trusted once max_staleness_ms has passed since the last proof.
 */
#include <stdio.h>
#include <string.h>

#include "core_internal.h"
#include "coregroup/sys/clock.h"
#include "coregroup/sys/error.h"

void cg_apply__note(cg_core *core, int err)
{
    atomic_store(&core->repo_ok, err == 0);
    if (err == 0)
        return;
    pthread_mutex_lock(&core->apply_error_mu);
    snprintf(core->apply_error, sizeof(core->apply_error), "%.250s", cg_error_last()->message);
    pthread_mutex_unlock(&core->apply_error_mu);
}

cg_conn *cg_apply__conn(cg_core *core)
{
    char app[CG_NAME_MAX + 8];
    cg_conn *c = core->apply.conn;
    int err = 0;
    if (c == NULL || !cg_repo_usable(c)) {
        snprintf(app, sizeof(app), "%s/apply", core->cfg->core_name);
        err = c == NULL ? cg_repo_connect(&core->apply.conn, core->cfg, app)
                        : cg_repo_reconnect(c, core->cfg, app);
        if (err < 0) {
            if (c == NULL)
                core->apply.conn = NULL;
            cg_apply__note(core, err);
            return NULL;
        }
    }
    /* a fenced incarnation cannot advertise; its cache is still kept fresh until it rejoins */
    if ((err = cg_core__advertise(core, core->apply.conn)) < 0 && err != CG_EFENCED) {
        cg_apply__note(core, err);
        return NULL;
    }
    return core->apply.conn;
}

/* ---- the bus's handlers ---------------------------------------------------------------- */

static void on_apply(void *ctx, int64_t seq, int64_t committed_us, const cg_bus_item *items,
                     size_t n)
{
    cg_core *core = ctx;
    (void)seq;
    cg_core__invalidate(core, items, n);
    cg_hist_observe(&core->hist[CG_HIST_EVICTION_LAG_MS],
                    (double)(cg_clock_wall_us() - committed_us) / 1000.0);
}

static int64_t on_gap(void *ctx, int64_t applied, int64_t upto)
{
    (void)upto; /* the outbox is read up to the repository's newest event, past upto */
    return cg_catchup_run(ctx, applied);
}

static void on_advanced(void *ctx, int64_t applied)
{
    cg_poll_advanced(ctx, applied);
}

static void on_tick(void *ctx)
{
    cg_poll_tick(ctx);
}

/* ---- start and stop -------------------------------------------------------------------- */

int cg_apply_start(cg_core *core)
{
    const cg_config *cfg = core->cfg;
    cg_bus_options opts = CG_BUS_OPTIONS_INIT;
    cg_bus_handlers h = {core, on_apply, on_gap, on_advanced, on_tick, NULL};
    int64_t seq = 0, t0;
    int err, every, all_v2 = 0;

    /* a proof at least four times per bound, and at least every poll interval */
    every = cfg->max_staleness_ms / 4 < cfg->poll_interval_ms ? cfg->max_staleness_ms / 4
                                                              : cfg->poll_interval_ms;
    core->apply.proof_every_ms = every > 1 ? every : 1;
    opts.group = cfg->group_id;
    opts.origin = cfg->core_name;
    opts.publish = (const char *const *)cfg->publish;
    opts.n_publish = cfg->n_publish;
    opts.subscribe = (const char *const *)cfg->subscribe;
    opts.n_subscribe = cfg->n_subscribe;
    opts.curve_server_key = cfg->curve_server_key;
    opts.curve_public_key = cfg->curve_public_key;
    opts.curve_secret_key = cfg->curve_secret_key;
    opts.heartbeat_interval_ms = cfg->heartbeat_interval_ms;
    opts.reorder_window_ms = cfg->reorder_window_ms;
    /* the tick drives proofs, and notices a proof the bus did not complete in the window */
    opts.tick_ms = cfg->reorder_window_ms > 0 && cfg->reorder_window_ms < core->apply.proof_every_ms
                       ? cfg->reorder_window_ms
                       : core->apply.proof_every_ms;
    if (opts.tick_ms < 5)
        opts.tick_ms = 5;

    /* subscribe first ... */
    if ((err = cg_bus_open(&core->bus, &opts, &h)) < 0)
        return err;
    cg_bus_set_incarnation(core->bus, atomic_load(&core->incarnation));
    core->publishing = cfg->n_publish > 0;
    /* ... then read where the group stands: everything before is in the repository */
    t0 = cg_clock_mono_us();
    if (cg_apply__conn(core) == NULL)
        return cg_error_last()->code ? cg_error_last()->code : CG_ERROR;
    if ((err = cg_repo_event_seq(&seq, &all_v2, core->apply.conn, cfg->group_id)) < 0)
        return err;
    cg_core__names_ok(core, all_v2);
    atomic_store(&core->repo_ok, 1);
    /* the cache is empty, so it reflects every event up to seq: fresh as of t0. Both before
     * cg_bus_start: from then on the apply thread owns core->apply and renews the lease. */
    cg_lease_renew(core, t0);
    core->apply.next_proof_us = cg_clock_mono_us() + (int64_t)core->apply.proof_every_ms * 1000;
    if ((err = cg_bus_start(core->bus, seq)) < 0)
        return err;
    if (core->publishing)
        cg_bus_publish_member(core->bus, CG_MEMBER_JOIN, cfg->core_name,
                              atomic_load(&core->incarnation));
    return 0;
}

void cg_apply_stop(cg_core *core)
{
    cg_bus_stop(core->bus); /* joins the apply thread: nothing uses its connection after */
    core->bus = NULL;
    core->publishing = 0;
    cg_repo_close(core->apply.conn);
    core->apply.conn = NULL;
}
