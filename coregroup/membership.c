/*
 * membership.c — who is in the group, who has failed, and fencing (Shoal GMS: join, planned
 * shutdown, failure suspicion, failure; "delegate recovery instance selection").
 *
 * The repository decides membership; the bus only tells the others sooner.
 *
 * Joining (on open, and on rejoining after being fenced) gives the core's row a new
 * incarnation, which fences any former self. A name held by a live process is refused
 * instead (CG_EEXISTS): a row neither failed nor left, heard from within failure_timeout_ms,
 * unless it names this very process or a process this host no longer has. So a second core
 * started by mistake under a running core's name fails to open rather than fencing the running
 * one, a core restarted after a crash takes its name back at once, and one restarted on another
 * host waits out the failure timeout. The registration is conditional on the incarnation the
 * decision was made on, so of two cores starting at once under one name, one gets it.
 *
 * Every tick (four times per [core] failure_timeout_ms, on the housekeeping thread and its
 * connection; housekeeping.c):
 *
 *  1. This core records its heartbeat in its `cores` row, conditional on its incarnation. No
 *     row means the group fenced this incarnation (it was paused or cut off for too long):
 *     the core drops its whole cache, registers again with a new incarnation and announces
 *     "join". A commit refused as fenced asks for this at once instead of at the next tick.
 *  2. It reads the members. A member silent for failure_timeout is marked "suspect" (by any
 *     core: the update is conditional, so it happens once), and "suspect" is announced.
 *  3. A member silent for twice failure_timeout is declared "failed" and FENCED: its
 *     incarnation is bumped, so every later write of the old incarnation is refused by the
 *     repository (cg_outbox_append and cg_fence_check compare incarnations FOR SHARE), and
 *     the fencer ENDS the fenced incarnation's repository sessions (cg_repo_fence_sessions: a
 *     SECURITY DEFINER function that can end only the sessions a fenced incarnation of this
 *     group advertised), so a paused core's open transaction rolls back and its row locks go
 *     at once instead of when it wakes or idle_in_transaction_timeout_ms runs out. Only one
 *     survivor acts — the live member with the smallest name, a choice every member makes
 *     alike from the same rows — and the conditional update makes it exactly one even if two
 *     disagreed for a moment. That survivor announces "failed" and does the recovery: it
 *     publishes again the failed incarnation's outbox events that some live member may not
 *     have applied yet (after the smallest applied seq of the live members), in case the
 *     failed core committed them and died before publishing.
 *
 * Silence is measured by the repository's clock (now() - heartbeat_at), so cores on hosts with
 * skewed clocks agree. A core whose heartbeat stops reaching the repository is the one that
 * gets fenced; a core that cannot reach the repository fences nobody.
 * Not here: a split brain between cores that each reach the repository cannot happen, because
 * the repository is the single arbiter; PostgreSQL's own HA is outside coregroup.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core_internal.h"
#include "coregroup/sys/error.h"

static int live(const cg_member *m, int timeout_ms)
{
    return (strcmp(m->state, "alive") == 0 || strcmp(m->state, "joining") == 0) &&
           m->heartbeat_age_ms < timeout_ms;
}

/* The process a member row names is certainly gone: it ran on this host and is this very
 * process (a former self: a restart in a container can get the same pid) or no process. */
static int gone(const cg_core *core, const cg_member *m)
{
    if (strcmp(m->host, core->host) != 0 || m->pid <= 0)
        return 0;
    return m->pid == (int)getpid() || (kill((pid_t)m->pid, 0) < 0 && errno == ESRCH);
}

int cg_membership_join(int64_t *incarnation, cg_core *core, cg_conn *conn)
{
    const char *group = core->cfg->group_id, *me = core->cfg->core_name;
    cg_member_list list;
    int64_t seen = 0;
    size_t i;
    int err;

    if ((err = cg_repo_members(&list, conn, group)) < 0)
        return err;
    for (i = 0; i < list.n; i++) {
        const cg_member *m = &list.members[i];
        if (strcmp(m->name, me) != 0)
            continue;
        seen = m->incarnation;
        if (strcmp(m->state, "failed") != 0 && strcmp(m->state, "left") != 0 &&
            m->heartbeat_age_ms < core->cfg->failure_timeout_ms && !gone(core, m))
            err = cg_error_set(CG_EEXISTS, CG_ERRCLASS_REPOSITORY,
                               "core \"%s\" of group \"%s\" is already running: incarnation "
                               "%" PRId64 " on host %s, pid %d, heard from %" PRId64
                               " ms ago; stop it first, or if it is gone wait failure_timeout_ms "
                               "(%d ms) from its last heartbeat",
                               me, group, m->incarnation, m->host, m->pid, m->heartbeat_age_ms,
                               core->cfg->failure_timeout_ms);
    }
    cg_member_list_dispose(&list);
    if (err == 0)
        err = cg_repo_core_register(incarnation, conn, group, me, core->host, (int)getpid(), seen);
    return err;
}

/* Found fenced: forget everything, come back as a new incarnation. */
static void rejoin(cg_core *core, cg_conn *conn)
{
    int64_t incarnation;
    atomic_store(&core->fenced, 1);
    cg_core__reset(core);
    if (cg_membership_join(&incarnation, core, conn) < 0)
        return; /* still fenced (or replaced by a live process); the next tick tries again */
    atomic_store(&core->incarnation, incarnation);
    cg_bus_set_incarnation(core->bus, incarnation);
    atomic_store(&core->rejoin, 0);
    atomic_store(&core->fenced, 0);
    atomic_fetch_add(&core->rejoins, 1);
    cg_bus_publish_member(core->bus, CG_MEMBER_JOIN, core->cfg->core_name, incarnation);
}

/* Publish again what a failed incarnation committed after the live members' common point. */
static void recover(cg_core *core, cg_conn *conn, const cg_member *failed, int64_t after)
{
    cg_outbox_rows rows;
    int64_t *at = NULL;
    size_t i, start;

    if (cg_repo_outbox_of(&rows, &at, conn, core->cfg->group_id, failed->name, failed->incarnation,
                          after) < 0)
        return;
    for (start = 0, i = 1; i <= rows.n; i++) /* one message per event (its run of rows) */
        if (i == rows.n || rows.seq[i] != rows.seq[start]) {
            size_t n = i - start;
            cg_bus_item *tmp;
            const cg_bus_item *wire = cg_core__wire_items(core, &rows.items[start], &n, &tmp);
            cg_bus_republish(core->bus, failed->name, failed->incarnation, rows.seq[start],
                             at[start], wire, n);
            free(tmp);
            atomic_fetch_add(&core->republished, 1);
            start = i;
        }
    free(at);
    cg_outbox_rows_dispose(&rows);
    atomic_fetch_add(&core->recoveries, 1);
}

void cg_membership_tick(cg_core *core, cg_conn *conn, int64_t applied_seq)
{
    const char *group = core->cfg->group_id, *me = core->cfg->core_name;
    int timeout = core->cfg->failure_timeout_ms;
    cg_member_list list;
    const cg_member *chooser = NULL;
    int64_t common = -1;
    size_t i;
    int beat;

    if (atomic_load(&core->leaving))
        return; /* closing: its row says "left" now, which is not a reason to rejoin */
    beat = cg_repo_core_beat(conn, group, me, atomic_load(&core->incarnation), applied_seq);
    if (beat == 0 || (beat == 1 && atomic_load(&core->rejoin)))
        rejoin(core, conn);
    if (beat < 0 || cg_repo_members(&list, conn, group) < 0)
        return;
    for (i = 0; i < list.n; i++) {
        const cg_member *m = &list.members[i];
        if (!live(m, timeout) && strcmp(m->name, me) != 0)
            continue;
        if (chooser == NULL || strcmp(m->name, chooser->name) < 0)
            chooser = m;
        if (common < 0 || m->applied_seq < common)
            common = m->applied_seq;
    }
    for (i = 0; i < list.n; i++) {
        cg_member *m = &list.members[i];
        int64_t fenced_as;
        if (strcmp(m->name, me) == 0 || strcmp(m->state, "failed") == 0 ||
            strcmp(m->state, "left") == 0)
            continue;
        if (m->heartbeat_age_ms >= timeout && strcmp(m->state, "suspect") != 0 &&
            cg_repo_suspect(conn, group, m->name, m->incarnation, timeout) == 1) {
            atomic_fetch_add(&core->suspected, 1);
            cg_bus_publish_member(core->bus, CG_MEMBER_SUSPECT, m->name, m->incarnation);
        }
        if (m->heartbeat_age_ms >= 2 * timeout && chooser && strcmp(chooser->name, me) == 0 &&
            cg_repo_fence(&fenced_as, conn, group, m->name, m->incarnation, 2 * timeout) == 1) {
            int64_t ended = 0;
            atomic_fetch_add(&core->failed, 1);
            if (cg_repo_fence_sessions(&ended, conn, group, m->name, m->incarnation) == 0)
                atomic_fetch_add(&core->sessions_ended, (uint64_t)ended);
            cg_bus_publish_member(core->bus, CG_MEMBER_FAILED, m->name, m->incarnation);
            recover(core, conn, m, common < 0 ? 0 : common);
        }
    }
    cg_member_list_dispose(&list);
}

void cg_membership_leave(cg_core *core, cg_conn *conn)
{
    int64_t incarnation = atomic_load(&core->incarnation);
    if (cg_repo_core_leave(conn, core->cfg->group_id, core->cfg->core_name, incarnation) == 0)
        cg_bus_publish_member(core->bus, CG_MEMBER_LEAVE, core->cfg->core_name, incarnation);
}
