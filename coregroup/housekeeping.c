/*
 * housekeeping.c — the housekeeping thread: membership and outbox pruning, away from the
 * apply thread.
 *
 * One thread, one repository connection ("<core>/members"), two jobs:
 *
 *  - Membership (membership.c), four times per failure_timeout_ms, and at once when a commit
 *    was refused as fenced: this core's heartbeat, suspicion and failure of silent members,
 *    fencing (which also ends the fenced incarnation's repository sessions) and recovery.
 *  - Outbox pruning, every PRUNE_EVERY poll intervals when [bus] outbox_retention_s is set: at most
 *    PRUNE_BATCH rows per statement, one short transaction each, and only by the member that
 *    holds the group's advisory lock at that moment (schema/repo.c), so members do not
 *    prune the same rows at once and no statement holds locks for long. It stops after
 *    PRUNE_ROUNDS batches and goes on at the next turn.
 *
 * Nothing here is on the path of an invalidation: the apply thread has its own connection and
 * never waits for this one. A statement that hangs here delays only heartbeats (so a core
 * whose housekeeping hangs long enough is declared failed and fenced, which is the truth) and
 * pruning. Its connection is reconnected here, one attempt per turn.
 */
#include <stdio.h>
#include <string.h>

#include "core_internal.h"
#include "coregroup/sys/clock.h"
#include "coregroup/sys/error.h"

#define PRUNE_EVERY  60   /* poll intervals between pruning turns */
#define PRUNE_BATCH  1000 /* outbox rows per DELETE */
#define PRUNE_ROUNDS 20   /* batches per turn at most */
#define REJOIN_MS    50   /* between attempts while a rejoin is asked for */

#ifdef CG_TEST_HOOKS
void cg_core__hang(cg_core *core, int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    if (ms <= 0)
        return;
    atomic_fetch_add(&core->hooks.hanging, 1);
    while (nanosleep(&ts, &ts) != 0)
        ;
    atomic_fetch_sub(&core->hooks.hanging, 1);
}
#endif

/* The housekeeping connection, reconnected (one attempt) when broken; NULL when not now.
 * A fenced incarnation cannot advertise its session; the connection is used all the same,
 * since the membership tick is what rejoins. */
static cg_conn *conn(cg_core *core)
{
    char app[CG_NAME_MAX + 10];
    cg_conn *c = core->hk_conn;
    int err = 0;
    if (c == NULL || !cg_repo_usable(c)) {
        snprintf(app, sizeof(app), "%s/members", core->cfg->core_name);
        CG_HANG(core, hang_reconnect_ms);
        err = c == NULL ? cg_repo_connect(&core->hk_conn, core->cfg, app)
                        : cg_repo_reconnect(c, core->cfg, app);
        if (err < 0) {
            if (c == NULL)
                core->hk_conn = NULL;
            return NULL;
        }
    }
    if ((err = cg_core__advertise(core, core->hk_conn)) < 0 && err != CG_EFENCED)
        return NULL;
    return core->hk_conn;
}

static void prune(cg_core *core, cg_conn *c)
{
    int round;
    CG_HANG(core, hang_prune_ms);
    for (round = 0; round < PRUNE_ROUNDS && !atomic_load(&core->hk_stop); round++) {
        int64_t deleted = 0;
        if (cg_repo_outbox_prune(&deleted, c, core->cfg->group_id, core->cfg->outbox_retention_s,
                                 PRUNE_BATCH) < 0)
            break;
        atomic_fetch_add(&core->prunes, 1);
        atomic_fetch_add(&core->pruned_rows, (uint64_t)deleted);
        if (deleted < PRUNE_BATCH)
            break;
    }
}

static void *housekeeping(void *arg)
{
    cg_core *core = arg;
    const cg_config *cfg = core->cfg;
    int64_t member_every = cfg->failure_timeout_ms / 4 > 25 ? cfg->failure_timeout_ms / 4 : 25;
    int64_t next_member =
        cg_clock_mono_ms() + member_every; /* registering was its first heartbeat */
    int64_t prune_every = (int64_t)PRUNE_EVERY * cfg->poll_interval_ms;
    int64_t next_prune = cg_clock_mono_ms() + prune_every, last_tick = 0;

    while (!atomic_load(&core->hk_stop)) {
        int64_t now = cg_clock_mono_ms(), wait = next_member - now;
        cg_conn *c;
        if (atomic_load(&core->rejoin) && last_tick + REJOIN_MS - now < wait)
            wait = last_tick + REJOIN_MS - now;
        pthread_mutex_lock(&core->hk_mu);
        if (wait > 0 && !atomic_load(&core->hk_stop)) {
            struct timespec until = cg_clock_deadline(wait);
            pthread_cond_timedwait(&core->hk_cv, &core->hk_mu, &until);
        }
        pthread_mutex_unlock(&core->hk_mu);
        if (atomic_load(&core->hk_stop))
            break;
        now = cg_clock_mono_ms();
        if (now < next_member && !(atomic_load(&core->rejoin) && now >= last_tick + REJOIN_MS))
            continue;
        next_member = now + member_every;
        last_tick = now;
        if ((c = conn(core)) == NULL)
            continue;
        CG_HANG(core, hang_beat_ms);
        cg_membership_tick(core, c, cg_bus_applied_seq(core->bus));
        if (cfg->outbox_retention_s > 0 && cg_clock_mono_ms() >= next_prune) {
            prune(core, c);
            next_prune = cg_clock_mono_ms() + prune_every;
        }
    }
    return NULL;
}

int cg_housekeeping_start(cg_core *core)
{
    if (pthread_create(&core->hk_thread, NULL, housekeeping, core) != 0)
        return cg_error_set(CG_ERROR, CG_ERRCLASS_OS, "cannot start the housekeeping thread");
    core->hk_running = 1;
    return 0;
}

void cg_housekeeping_stop(cg_core *core)
{
    cg_conn *c;
    if (core->hk_running) {
        pthread_mutex_lock(&core->hk_mu);
        atomic_store(&core->hk_stop, 1);
        pthread_cond_signal(&core->hk_cv);
        pthread_mutex_unlock(&core->hk_mu);
        pthread_join(core->hk_thread, NULL);
        core->hk_running = 0;
    }
    /* say goodbye on this thread's connection (reconnected if the group's fencing or a
     * restart ended it): the row says "left", and the bus hears it */
    if (atomic_load(&core->incarnation) > 0 && (c = conn(core)) != NULL) {
        cg_error saved = *cg_error_last();
        cg_membership_leave(core, c);
        *cg_error__mut() = saved; /* closing must not clobber the caller's last error */
    }
    cg_repo_close(core->hk_conn);
    core->hk_conn = NULL;
}

void cg_housekeeping_wake(cg_core *core)
{
    pthread_mutex_lock(&core->hk_mu);
    pthread_cond_signal(&core->hk_cv);
    pthread_mutex_unlock(&core->hk_mu);
}
