/*
 * test_freshness.c — the freshness bound under faults (DESIGN.md I5, "Freshness: the bound, the
 * lease, and who may touch the repository when"), with real processes, a real bus and the
 * real repository:
 *  - pause: a core that cached a part is SIGSTOPped past max_staleness_ms and the failure
 *    timeout while the part changes and the bus is gone; reads queued to it during the pause
 *    are answered after SIGCONT, and none carries the old version (the lease ran out);
 *  - blocked housekeeping: the membership heartbeat, outbox pruning and a reconnect of the
 *    housekeeping connection each hang (test hooks) while invalidations keep being applied;
 *  - a paused lock holder: a core holding a row lock inside a call is SIGSTOPped; the other
 *    cores keep serving cached reads, their writes to that row fail retryable within the lock
 *    timeout until the fence ends the paused core's sessions, and then succeed;
 *  - reordering: two invalidations swapped on the wire cost no catch-up; a lost one still does;
 *  - bus down and repository restarting: no read older than the bound, health degraded (with
 *    its reason) while the core cannot prove freshness, healthy again afterwards.
 * No timing thresholds: every wait is a loop until the thing is seen, with a generous
 * deadline; the assertions are about versions, codes and counters. Needs CG_TEST_HOOKS; the
 * outage case restarts the shared cluster, so ctest runs the suite alone.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bustest.h"
#include "core_internal.h"
#include "testutil.h"

static char *dsn, *dir;
static PGconn *dba;
static bt_busd fwd;

static void setup(void)
{
    dsn = cgt_createdb("fresh", 1);
    dba = cgt_connect(dsn);
    dir = cgt_tmpdir();
    memset(&fwd, 0, sizeof(fwd));
    bt_busd_start(&fwd, dir, "fresh", NULL);
}

static void teardown(void)
{
    if (fwd.pid > 0)
        bt_busd_kill(&fwd);
    PQfinish(dba);
    free(dsn);
    free(dir);
}

/* A configuration on the suite's forwarder with a freshness bound and a failure timeout. */
static cg_config *config(const char *name, const char *group, int max_staleness_ms,
                         int failure_timeout_ms)
{
    cg_config *cfg = cgt_core_config(dsn, name, group);
    cg_config_set_string(&cfg->publish[cfg->n_publish++], fwd.fe);
    cg_config_set_string(&cfg->subscribe[cfg->n_subscribe++], fwd.be);
    cfg->heartbeat_interval_ms = 50;
    cfg->poll_interval_ms = 100;
    cfg->max_staleness_ms = max_staleness_ms;
    cfg->failure_timeout_ms = failure_timeout_ms;
    return cfg;
}

/* Wait until a core hears its group's heartbeats: its subscription is live. */
static void wait_hearing(cg_core *core)
{
    cg_core_stats st;
    int64_t until = bt_ms() + 10000;
    do {
        cg_core_stats_get(core, &st);
        if (st.heartbeats_received > 0)
            return;
        usleep(5000);
    } while (bt_ms() < until);
    ck_abort_msg("%s never heard the bus", cg_core_name(core));
}

/* Wait until reads on `core` return at least version v; fails after limit_ms. */
static void wait_version(cg_core *core, int64_t h, int64_t v, int limit_ms)
{
    int64_t until = bt_ms() + limit_ms, got;
    while ((got = cgt_read_version(core, h)) < v && bt_ms() < until)
        usleep(5000);
    ck_assert_msg(got >= v, "%s: version %" PRId64 ", wanted %" PRId64, cg_core_name(core), got, v);
}

static void wait_state(const char *name, const char *state, int ms)
{
    char sql[256], *got = NULL;
    int64_t until = bt_ms() + ms;
    snprintf(sql, sizeof(sql), "SELECT state FROM cores WHERE core_name = '%s'", name);
    for (;;) {
        free(got);
        got = cgt_query1(dba, sql);
        if (strcmp(got, state) == 0 || bt_ms() > until)
            break;
        usleep(10000);
    }
    ck_assert_msg(strcmp(got, state) == 0, "%s is %s, not %s", name, got, state);
    free(got);
}

static void write_all(int fd, const void *buf, size_t n)
{
    ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
}

static void read_all(int fd, void *buf, size_t n)
{
    ck_assert_int_eq(read(fd, buf, n), (ssize_t)n);
}

/* ---- pause ------------------------------------------------------------------------------ */

START_TEST(a_resumed_core_never_serves_its_old_cache)
{
    int handle[2], cmd[2], reply[2], status, i;
    int64_t h, v2, got;
    cg_core *a;
    pid_t pid;

    ck_assert(pipe(handle) == 0 && pipe(cmd) == 0 && pipe(reply) == 0);
    if ((pid = fork()) == 0) { /* the core to be paused; forked while threadless */
        int64_t target = cgt_child_recv_i64(handle), v;
        cg_core *p = cgt_core_open_cfg(config("fp-p", "fr-pause", 500, 300));
        char c;
        wait_hearing(p);
        v = cgt_read_version(p, target); /* cached */
        if (write(reply[1], &v, sizeof(v)) < 0)
            _exit(3);
        while (read(cmd[0], &c, 1) == 1 && c == 'r') { /* one read per command, in order */
            v = cgt_read_version(p, target);
            if (write(reply[1], &v, sizeof(v)) < 0)
                _exit(3);
        }
        cg_core_close(p);
        _exit(0);
    }
    close(cmd[0]);
    close(reply[1]);
    a = cgt_core_open_cfg(config("fp-a", "fr-pause", 500, 300));
    h = cgt_create(a);
    cgt_send_i64(handle, h);
    read_all(reply[0], &got, sizeof(got));
    ck_assert_int_eq(got, 1);

    kill(pid, SIGSTOP);
    bt_busd_kill(&fwd); /* no invalidation can reach it: only its lease can save it */
    v2 = cgt_bump(a, h);
    for (i = 0; i < 5; i++) /* reads queued to it while it is stopped */
        write_all(cmd[1], "r", 1);
    wait_state("fp-p", "failed", 10000); /* paused past max_staleness_ms and the timeout */
    kill(pid, SIGCONT);
    for (i = 0; i < 5; i++) {
        read_all(reply[0], &got, sizeof(got));
        ck_assert_msg(got == v2 || got == CG_EDEGRADED || got == CG_ERETRYABLE,
                      "read %d after SIGCONT returned %" PRId64 " (the new version is %" PRId64 ")",
                      i, got, v2);
    }
    write_all(cmd[1], "q", 1);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cg_core_close(a);
}
END_TEST

/* ---- blocked housekeeping --------------------------------------------------------------- */

static void wait_hanging(cg_core *core, int want, int limit_ms)
{
    int64_t until = bt_ms() + limit_ms;
    while (atomic_load(&core->hooks.hanging) != want && bt_ms() < until)
        usleep(2000);
    ck_assert_int_eq(atomic_load(&core->hooks.hanging), want);
}

/* While x's housekeeping thread sleeps in a hook, an invalidation from y is applied on x, x's
 * lease stays valid, and x's next read returns the new version. */
static void applied_while_hanging(cg_core *x, cg_core *y, int64_t h)
{
    cg_core_stats st;
    cg_core_health hl;
    uint64_t applied;
    int64_t v, until;

    ck_assert_int_eq(cgt_read_version(x, h), cgt_read_version(y, h)); /* cached on x */
    cg_core_stats_get(x, &st);
    applied = st.invalidations_applied;
    v = cgt_bump(y, h);
    until = bt_ms() + 5000;
    do {
        usleep(1000);
        cg_core_stats_get(x, &st);
    } while (st.invalidations_applied == applied && bt_ms() < until);
    ck_assert_msg(st.invalidations_applied > applied, "x applied nothing while it hung");
    ck_assert_msg(atomic_load(&x->hooks.hanging) == 1, "the hook ended before the bus delivered");
    ck_assert_int_eq(cgt_read_version(x, h), v);
    CGT_OK(cg_core_health_get(&hl, x)); /* the apply thread keeps proving freshness */
    ck_assert_int_eq(hl.degraded, 0);
}

START_TEST(hanging_housekeeping_does_not_delay_invalidations)
{
    /* Both beat every 500 ms and call a member failed after 4 s of silence; each hook hangs
     * 2 s, so nobody is fenced here: the housekeeping thread is only late. */
    cg_config *cfg = config("fh-x", "fr-hk", 1000, 2000);
    cg_core *x, *y;
    int64_t h;
    char sql[256];

    cfg->outbox_retention_s = 1;
    cfg->poll_interval_ms = 20; /* a pruning turn every 60 polls: 1.2 s */
    x = cgt_core_open_cfg(cfg);
    y = cgt_core_open_cfg(config("fh-y", "fr-hk", 1000, 2000));
    wait_hearing(x);
    wait_hearing(y);
    h = cgt_create(y);

    /* the membership heartbeat hangs */
    atomic_store(&x->hooks.hang_beat_ms, 2000);
    wait_hanging(x, 1, 5000);
    atomic_store(&x->hooks.hang_beat_ms, 0);
    applied_while_hanging(x, y, h);
    wait_hanging(x, 0, 10000);

    /* pruning hangs */
    atomic_store(&x->hooks.hang_prune_ms, 2000);
    wait_hanging(x, 1, 10000);
    atomic_store(&x->hooks.hang_prune_ms, 0);
    applied_while_hanging(x, y, h);
    wait_hanging(x, 0, 10000);

    /* the housekeeping connection is lost, and reconnecting it hangs */
    atomic_store(&x->hooks.hang_reconnect_ms, 2000);
    snprintf(sql, sizeof(sql),
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
             "application_name = 'fh-x/members'");
    ck_assert_int_eq(cgt_query_i64(dba, sql), 1);
    wait_hanging(x, 1, 10000);
    atomic_store(&x->hooks.hang_reconnect_ms, 0);
    applied_while_hanging(x, y, h);
    wait_hanging(x, 0, 10000);
    cg_core_close(x);
    cg_core_close(y);
}
END_TEST

/* ---- a paused lock holder --------------------------------------------------------------- */

START_TEST(a_paused_lock_holder_stops_nobody)
{
    int handle[2], ready[2], go[2], status, code, refused = 0;
    int64_t h, until, sessions;
    cg_core *a, *b;
    cg_core_stats st0, st;
    pid_t pid;

    ck_assert(pipe(handle) == 0 && pipe(ready) == 0 && pipe(go) == 0);
    if ((pid = fork()) == 0) { /* the lock holder; forked while threadless */
        int64_t target = cgt_child_recv_i64(handle);
        cg_config *cfg = config("fl-v", "fr-lock", 1000, 300);
        cg_core *v;
        cg_call *call;
        const cg_part *p;
        char c;
        cfg->lock_timeout_ms = 300;
        v = cgt_core_open_cfg(cfg);
        cg_call_begin(&call, v);
        code = cg_part_lock(&p, call, target, CG_PART_STATE); /* SELECT ... FOR UPDATE */
        if (write(ready[1], &code, sizeof(code)) < 0 || read(go[0], &c, 1) != 1)
            _exit(3);
        code = cg_call_commit(call); /* after SIGCONT: its session is gone */
        cg_core_close(v);
        _exit(code == 0 ? 4 : 0);
    }
    {
        cg_config *ca = config("fl-a", "fr-lock", 1000, 300),
                  *cb = config("fl-b", "fr-lock", 1000, 300);
        ca->lock_timeout_ms = cb->lock_timeout_ms = 300;
        /* [retry] attempts stays at its default (5): a lock wait that ran out is not tried
         * again inside the call, so each try ends after one lock_timeout_ms, not six */
        a = cgt_core_open_cfg(ca);
        b = cgt_core_open_cfg(cb);
    }
    h = cgt_create(a);
    ck_assert_int_eq(cgt_read_version(a, h), 1); /* cached on a */
    cgt_send_i64(handle, h);
    read_all(ready[0], &code, sizeof(code));
    ck_assert_int_eq(code, 0);
    kill(pid, SIGSTOP);

    cg_core_stats_get(a, &st0);
    until = bt_ms() + 15000;
    for (;;) { /* until b's write goes through: the fence ended the holder's session */
        cg_call *call;
        int64_t v;
        ck_assert_int_eq(cgt_read_version(a, h), 1); /* a keeps answering from its cache */
        CGT_OK(cg_call_begin(&call, b));
        code = cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"by\":\"b\"}");
        if (code == 0)
            code = cg_call_commit(call);
        else
            cg_call_abort(call);
        if (code == 0)
            break;
        ck_assert_msg(code == CG_ERETRYABLE && strcmp(cg_error_last()->sqlstate, "55P03") == 0,
                      "b's blocked write: %s (%s)", cg_error_name(code), cg_error_last()->message);
        refused++;
        ck_assert_msg(bt_ms() < until, "the paused holder's lock was never released");
    }
    ck_assert_int_ge(refused, 1); /* it was blocked, and each try ended by lock_timeout */
    cg_core_stats_get(a, &st);
    ck_assert_uint_gt(st.cache_hits, st0.cache_hits);
    /* the holder, still stopped, has no session left: the fencer ended them all */
    {
        char *state = cgt_query1(dba, "SELECT state FROM cores WHERE core_name = 'fl-v'");
        ck_assert_str_eq(state, "failed");
        free(state);
    }
    until = bt_ms() + 10000; /* the fencer ends them one after another */
    while ((sessions =
                cgt_query_i64(dba, "SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                   "LIKE 'fl-v%'")) > 0 &&
           bt_ms() < until)
        usleep(10000);
    ck_assert_msg(sessions == 0, "sessions left: %s",
                  cgt_query1(dba, "SELECT string_agg(application_name || ' ' || state || ' ' || "
                                  "coalesce((SELECT incarnation::text FROM core_sessions s WHERE "
                                  "s.backend_pid = a.pid), 'unadvertised'), ', ') FROM "
                                  "pg_stat_activity a WHERE application_name LIKE 'fl-v%'"));
    cg_core_stats_get(a, &st);
    {
        cg_core_stats sb;
        cg_core_stats_get(b, &sb);
        ck_assert_uint_eq(st.members_failed + sb.members_failed, 1);
    }

    kill(pid, SIGCONT);
    write_all(go[1], "x", 1);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the paused holder's commit went through (status %d)", status);
    wait_version(a, h, 2, 5000);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

/* ---- reordering ------------------------------------------------------------------------- */

START_TEST(reordering_is_not_a_gap_but_a_loss_is)
{
    cg_config *cb = config("fr-b", "fr-reo", 86400000, 3600000);
    cg_core *a = cgt_core_open_cfg(config("fr-a", "fr-reo", 86400000, 3600000)), *b;
    cg_core_stats s0, s;
    int64_t h1, h2, v1, v2;

    cb->poll_interval_ms = 3600000; /* only the bus and its gap detection */
    cb->reorder_window_ms = 500;    /* wide, so the test does not depend on scheduling */
    b = cgt_core_open_cfg(cb);
    wait_hearing(a);
    wait_hearing(b);
    h1 = cgt_create(a);
    h2 = cgt_create(a);
    ck_assert_int_eq(cgt_read_version(b, h1), 1);
    ck_assert_int_eq(cgt_read_version(b, h2), 1);
    cg_core_stats_get(b, &s0);

    atomic_store(&a->hooks.swap_next, 1); /* h1's invalidation goes out after h2's */
    v1 = cgt_bump(a, h1);
    v2 = cgt_bump(a, h2);
    wait_version(b, h1, v1, 5000);
    wait_version(b, h2, v2, 5000);
    cg_core_stats_get(b, &s);
    ck_assert_uint_eq(s.catchups, s0.catchups); /* no outbox read for an inversion */
    ck_assert_uint_eq(s.gaps, s0.gaps);
    ck_assert_uint_ge(s.reordered, s0.reordered + 1);
    ck_assert_int_eq(s.applied_seq,
                     cgt_query_i64(dba, "SELECT event_seq FROM core_groups WHERE group_id = "
                                        "'fr-reo'"));

    a->hooks.drop_every = 1; /* lost on the way */
    v1 = cgt_bump(a, h1);
    a->hooks.drop_every = 0;
    v2 = cgt_bump(a, h2);
    wait_version(b, h2, v2, 5000);
    wait_version(b, h1, v1, 5000); /* caught up from the outbox after the window */
    cg_core_stats_get(b, &s);
    ck_assert_uint_eq(s.catchups, s0.catchups + 1);
    ck_assert_uint_eq(s.gaps, s0.gaps + 1);
    { /* what the metrics endpoint shows: the bus's lag per message, one catch-up of one event */
        cg_histogram lag, sizes;
        CGT_OK(cg_core_histogram_get(&lag, b, CG_HIST_EVICTION_LAG_MS));
        CGT_OK(cg_core_histogram_get(&sizes, b, CG_HIST_CATCHUP_EVENTS));
        ck_assert_uint_ge(lag.total, 3);
        ck_assert_uint_eq(lag.count[lag.n_buckets - 1], lag.total);
        ck_assert(isinf(lag.le[lag.n_buckets - 1]));
        ck_assert_uint_eq(sizes.total, 1);
        ck_assert(sizes.sum >= 1.0);
        CGT_EXPECT(CG_EINVALID, cg_core_histogram_get(&sizes, b, CG_HIST_COUNT));
    }
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

/* ---- a read past the lease is a floor ------------------------------------------------------ */

/* Wait until the core's lease is `valid` (1) or has run out (0). */
static void wait_lease(cg_core *core, int valid, int ms)
{
    int64_t until = bt_ms() + ms;
    while (cg_lease_valid(core) != valid && bt_ms() < until)
        usleep(5000);
    ck_assert_int_eq(cg_lease_valid(core), valid);
}

/*
 * I4 on one core: once a core has served version 2 from the repository while its lease was out,
 * a renewed lease must not bring back the version 1 still in its cache. The fault harness saw
 * exactly that after a partition (a proof that began before the commit of 2 renewed the lease
 * over 1). Here version 2 is written by the DBA without an event, so that no invalidation and
 * no catch-up can evict 1 and only the read past the lease can.
 */
START_TEST(a_read_past_the_lease_is_a_floor)
{
    cg_core *b = cgt_core_open_cfg(config("fr-floor", "fr-floor", 200, 3600000));
    int64_t h = cgt_create(b);
    char sql[256];

    wait_lease(b, 1, 5000);
    ck_assert_int_eq(cgt_read_version(b, h), 1); /* cached, under a valid lease */
    atomic_store(&b->hooks.no_proofs, 1);
    wait_lease(b, 0, 5000);
    snprintf(
        sql, sizeof(sql),
        "UPDATE resource_parts SET version = 2 WHERE group_id = 'fr-floor' AND handle = %" PRId64
        " AND part = 'state'",
        h);
    free(cgt_query1(dba, sql));
    ck_assert_int_eq(cgt_read_version(b, h), 2); /* past the lease: the repository */
    atomic_store(&b->hooks.no_proofs, 0);
    wait_lease(b, 1, 5000);
    ck_assert_int_eq(cgt_read_version(b, h), 2); /* not the cached 1 */
    cg_core_close(b);
}
END_TEST

/* ---- bus down, repository restarting ------------------------------------------------------ */

#define MAX_READS 20000
#define MAX_ACKS  1000

typedef struct {
    cg_core *core;
    int64_t h;
    atomic_int stop;
    size_t n;
    int64_t at[MAX_READS]; /* start of each read, monotonic ms */
    int64_t got[MAX_READS];
} reader;

static void *read_loop(void *arg)
{
    reader *r = arg;
    while (!atomic_load(&r->stop) && r->n < MAX_READS) {
        r->at[r->n] = bt_ms();
        r->got[r->n] = cgt_read_version(r->core, r->h);
        r->n++;
        usleep(2000);
    }
    return NULL;
}

START_TEST(bus_down_and_repository_restarting_keep_the_bound)
{
    const int bound = 600;
    cg_config *cb = config("fo-b", "fr-out", bound, 3600000);
    cg_core *a = cgt_core_open_cfg(config("fo-a", "fr-out", 86400000, 3600000)), *b;
    static reader r;
    static int64_t ack_at[MAX_ACKS], ack_v[MAX_ACKS];
    size_t n_ack = 0, i, j, n_ok = 0, n_failed = 0;
    int64_t end, oldest = 0, until;
    cg_core_health hl;
    pthread_t t;
    int saw_degraded = 0;

    b = cgt_core_open_cfg(cb);
    memset(&r, 0, sizeof(r));
    r.core = b;
    r.h = cgt_create(a);
    ck_assert_int_eq(cgt_read_version(b, r.h), 1);
    bt_busd_kill(&fwd); /* the bus is down for the rest of the test */
    ck_assert(pthread_create(&t, NULL, read_loop, &r) == 0);

    /* writes before, during (refused) and after a 2-second outage of the repository */
    cgt_restart_async("fast", 2);
    end = bt_ms() + 6000;
    while (bt_ms() < end && n_ack < MAX_ACKS) {
        cg_call *call;
        const cg_part *p;
        int64_t v;
        if (cg_call_begin(&call, a) == 0 && cg_part_lock(&p, call, r.h, CG_PART_STATE) == 0) {
            int err = cg_part_update(&v, call, r.h, CG_PART_STATE, cg_part_version(p), "{}");
            if (err < 0)
                cg_call_abort(call);
            else if (cg_call_commit(call) == 0) {
                ack_at[n_ack] = bt_ms();
                ack_v[n_ack++] = v;
            }
        } else {
            cg_call_abort(call);
        }
        if (!saw_degraded && cg_core_health_get(&hl, b) == CG_EDEGRADED && hl.degraded) {
            ck_assert_msg(hl.reason[0] != '\0', "degraded without a reason");
            saw_degraded = 1;
        }
        usleep(20000);
    }
    /* the repository is back: b proves itself fresh again */
    until = bt_ms() + 15000;
    while (cg_core_health_get(&hl, b) != 0 && bt_ms() < until)
        usleep(20000);
    CGT_OK(cg_core_health_get(&hl, b));
    ck_assert_int_eq(hl.degraded, 0);
    ck_assert_int_ge(hl.proof_age_ms, 0);
    atomic_store(&r.stop, 1);
    pthread_join(t, NULL);
    cgt_restart_wait();

    ck_assert_msg(saw_degraded, "b never said degraded while the repository was down");
    ck_assert_int_ge(n_ack, 2);
    /* every read that started more than the bound after a version was acknowledged returned
     * that version or a newer one, or failed */
    for (i = 0; i < r.n; i++) {
        if (r.got[i] < 0) {
            ck_assert_msg(r.got[i] == CG_EDEGRADED || r.got[i] == CG_ERETRYABLE,
                          "read %zu failed with %" PRId64, i, r.got[i]);
            n_failed++;
            continue;
        }
        n_ok++;
        for (j = 0; j < n_ack; j++)
            if (ack_v[j] > r.got[i] && ack_at[j] < r.at[i]) {
                int64_t stale = r.at[i] - ack_at[j];
                if (stale > oldest)
                    oldest = stale;
                ck_assert_msg(stale <= bound,
                              "read at %" PRId64 " returned version %" PRId64 ", but %" PRId64
                              " was acknowledged %" PRId64 " ms before it (bound %d ms)",
                              r.at[i], r.got[i], ack_v[j], stale, bound);
                break;
            }
    }
    ck_assert_int_gt(n_ok, 0);
    printf("bus down, repository restarting: %zu reads served, %zu failed, %zu writes; oldest "
           "read %" PRId64 " ms behind an acknowledged write (bound %d ms)\n",
           n_ok, n_failed, n_ack, oldest, bound);
    PQreset(dba);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("freshness");
    TCase *tc;

    tc = tcase_create("pause");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_resumed_core_never_serves_its_old_cache);
    suite_add_tcase(s, tc);

    tc = tcase_create("housekeeping");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, hanging_housekeeping_does_not_delay_invalidations);
    suite_add_tcase(s, tc);

    tc = tcase_create("lock_holder");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_paused_lock_holder_stops_nobody);
    suite_add_tcase(s, tc);

    tc = tcase_create("reorder");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, reordering_is_not_a_gap_but_a_loss_is);
    suite_add_tcase(s, tc);

    tc = tcase_create("floor");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, a_read_past_the_lease_is_a_floor);
    suite_add_tcase(s, tc);

    tc = tcase_create("outage");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, bus_down_and_repository_restarting_keep_the_bound);
    suite_add_tcase(s, tc);

    return cgt_run_suite(s);
}
