/*
 * catchup.c — filling a real gap from the outbox, on the apply thread.
 *
 * The outbox (the `invalidations` table) holds one row per committed event, numbered by the
 * group's gap-free event_seq and written in the committing transaction, so it has every
 * event the bus may have lost. A catch-up:
 *
 *  1. notes the time T0, then reads the group's event_seq E (so E covers every commit before
 *     T0);
 *  2. reads the events (applied, E] in order, CATCHUP_STEP at a time, and applies their items;
 *  3. when the outbox no longer holds applied + 1 (pruned past this core), resets the whole
 *     cache instead (PostgreSQL's sinval "reset": when unsure, forget everything);
 *  4. having applied every event up to E, renews the lease from T0: a catch-up is a
 *     freshness proof.
 * It runs only when the bus's reorder window has passed with an event still missing, or when
 * a proof found the bus had not delivered up to E in that window (poll.c): reordering costs
 * no repository read. On any repository error nothing moves (the applied point and the lease
 * stay), and the caller tries again at a later tick.
 */
#include "core_internal.h"
#include "coregroup/sys/clock.h"
#include "coregroup/sys/error.h"

#define CATCHUP_STEP 1000 /* events read from the outbox per round trip */

int64_t cg_catchup_run(cg_core *core, int64_t applied)
{
    const char *group = core->cfg->group_id;
    int64_t target, t0 = cg_clock_mono_us(), from = applied;
    cg_conn *c = cg_apply__conn(core);
    int err, all_v2 = 0;

    if (c == NULL)
        return -1;
    if ((err = cg_repo_event_seq(&target, &all_v2, c, group)) < 0) {
        cg_apply__note(core, err);
        return -1;
    }
    cg_core__names_ok(core, all_v2);
    while (applied < target) {
        int64_t hi = target < applied + CATCHUP_STEP ? target : applied + CATCHUP_STEP;
        cg_outbox_rows rows;
        size_t i;
        if ((err = cg_repo_outbox_items(&rows, c, group, applied, hi)) < 0) {
            cg_apply__note(core, err);
            return -1;
        }
        if (rows.n == 0 || rows.seq[0] != applied + 1 || rows.seq[rows.n - 1] != hi) {
            /* what was missed is no longer in the outbox: forget everything */
            cg_outbox_rows_dispose(&rows);
            cg_core__reset(core);
            applied = target;
            break;
        }
        for (i = 0; i < rows.n; i++)
            cg_core__invalidate(core, &rows.items[i], 1);
        applied = hi;
        cg_outbox_rows_dispose(&rows);
    }
    cg_apply__note(core, 0);
    cg_lease_renew(core, t0);
    if (target > from)
        cg_hist_observe(&core->hist[CG_HIST_CATCHUP_EVENTS], (double)(target - from));
    return target;
}
