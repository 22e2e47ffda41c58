/*
 * test_membership.c — membership and fencing with real processes (Shoal GMS; DESIGN.md "a core
 * paused past its heartbeat timeout: declared failed, fenced by incarnation"):
 *  - SIGSTOP a core in the middle of a call past the failure timeout: the others declare it
 *    failed and fence it (its incarnation is bumped), exactly one of them (the one chosen by
 *    name) does it, the stopped core's write after SIGCONT is refused, and it then notices,
 *    drops its cache and rejoins as a new incarnation;
 *  - kill -9 a core between COMMIT and publishing: it is declared failed, and exactly one
 *    survivor does the recovery, publishing its committed-but-unpublished change, which
 *    reaches the other survivor over the bus (that survivor never polls);
 *  - a name a live process holds is refused to a second core, which would otherwise fence it;
 *    taken back at once when the holder died on this host; from another host only after the
 *    holder's failure timeout; and registering is conditional on the row that was judged.
 * Needs CG_TEST_HOOKS.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bustest.h"
#include "core_internal.h"
#include "testutil.h"

#define TIMEOUT_MS 400 /* failure timeout of every core here: suspect at 0.4 s, failed at 0.8 s */

static char *dsn, *dir;
static PGconn *dba;
static bt_busd fwd;

static void setup(void)
{
    dsn = cgt_createdb("members", 1);
    dba = cgt_connect(dsn);
    dir = cgt_tmpdir();
    memset(&fwd, 0, sizeof(fwd));
    bt_busd_start(&fwd, dir, "members", NULL);
}

static void teardown(void)
{
    bt_busd_kill(&fwd);
    PQfinish(dba);
    free(dsn);
    free(dir);
}

static char *db_str(const char *sql)
{
    return cgt_query1(dba, sql);
}

static cg_core *member(const char *name, const char *group)
{
    cg_config *cfg = cgt_core_config(dsn, name, group);
    cg_config_set_string(&cfg->publish[cfg->n_publish++], fwd.fe);
    cg_config_set_string(&cfg->subscribe[cfg->n_subscribe++], fwd.be);
    cfg->heartbeat_interval_ms = 50;
    cfg->failure_timeout_ms = TIMEOUT_MS;
    return cgt_core_open_cfg(cfg);
}

/* Wait until the member's row is in `state`; fails the test after `ms`. */
static void wait_state(const char *name, const char *state, int ms)
{
    char sql[256], *got = NULL;
    int64_t until = bt_ms() + ms;
    snprintf(sql, sizeof(sql), "SELECT state FROM cores WHERE core_name = '%s'", name);
    for (;;) {
        free(got);
        got = db_str(sql);
        if (strcmp(got, state) == 0 || bt_ms() > until)
            break;
        usleep(20000);
    }
    ck_assert_msg(strcmp(got, state) == 0, "%s is %s, not %s", name, got, state);
    free(got);
}

START_TEST(paused_core_is_fenced_and_rejoins)
{
    cg_core *a, *b;
    int handle[2], ready[2], go[2], result[2], status, code;
    int64_t h, inc, new_inc;
    cg_core_stats sa, sb;
    pid_t pid;

    ck_assert(pipe(handle) == 0 && pipe(ready) == 0 && pipe(go) == 0 && pipe(result) == 0);
    if ((pid = fork()) == 0) { /* the core that will be paused mid-call (forked while threadless) */
        int64_t target = cgt_child_recv_i64(handle), nv, until;
        cg_core *v = member("m-v", "grp-stop");
        cg_call *call;
        cg_core_stats st;
        char c;
        cg_call_begin(&call, v);
        code = cg_part_update(&nv, call, target, CG_PART_STATE, 1, "{\"from\":\"paused\"}");
        if (write(ready[1], &code, sizeof(code)) < 0 || read(go[0], &c, 1) != 1)
            _exit(3);
        code = cg_call_commit(call); /* after SIGCONT: must be refused */
        until = bt_ms() + 5000;
        do { /* it notices and rejoins */
            usleep(20000);
            cg_core_stats_get(v, &st);
        } while (st.rejoins == 0 && bt_ms() < until);
        nv = cg_core_incarnation(v);
        if (write(result[1], &code, sizeof(code)) < 0 || write(result[1], &nv, sizeof(nv)) < 0)
            _exit(3);
        cg_core_close(v);
        _exit(0);
    }
    a = member("m-a", "grp-stop");
    b = member("m-b", "grp-stop");
    h = cgt_create(a);
    cgt_send_i64(handle, h);
    ck_assert_int_eq(read(ready[0], &code, sizeof(code)), sizeof(code));
    ck_assert_int_eq(code, 0); /* its update went through; the call is open */
    inc = cgt_query_i64(dba, "SELECT incarnation FROM cores WHERE core_name = 'm-v'");
    kill(pid, SIGSTOP);
    wait_state("m-v", "failed", 10 * TIMEOUT_MS);
    ck_assert_int_eq(cgt_query_i64(dba, "SELECT incarnation FROM cores WHERE core_name = 'm-v'"),
                     inc + 1);
    cg_core_stats_get(a, &sa);
    cg_core_stats_get(b, &sb);
    ck_assert_uint_eq(sa.members_failed + sb.members_failed, 1);
    ck_assert_uint_eq(sa.members_failed, 1); /* "m-a" sorts first: it is the chosen one */
    ck_assert_uint_ge(sa.members_suspected + sb.members_suspected, 1);

    kill(pid, SIGCONT);
    ck_assert_int_eq(write(go[1], "x", 1), 1);
    ck_assert_int_eq(read(result[0], &code, sizeof(code)), sizeof(code));
    ck_assert_int_eq(read(result[0], &new_inc, sizeof(new_inc)), sizeof(new_inc));
    /* refused: as fenced, or as retryable because the fencer ended its session (which rolled
     * its transaction back and let its row lock go) */
    ck_assert_msg(code == CG_EFENCED || code == CG_ERETRYABLE,
                  "the paused core's write was not refused: %s", cg_error_name(code));
    ck_assert_int_eq(cgt_read_version(a, h), 1); /* nothing of it landed */
    ck_assert_int_gt(new_inc, inc + 1);          /* it rejoined as a newer incarnation */
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    wait_state("m-v", "left", 2000);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

START_TEST(killed_core_is_recovered_by_exactly_one)
{
    cg_core *a, *b;
    int64_t h, until;
    cg_core_stats sa, sb;
    int handle[2], status;
    pid_t pid;

    ck_assert(pipe(handle) == 0);
    if ((pid = fork()) == 0) { /* forked while threadless; waits for the handle */
        int64_t target = cgt_child_recv_i64(handle), nv;
        cg_core *v = member("k-v", "grp-kill");
        cg_call *call;
        const cg_part *p;
        v->hooks.exit_after_commit = 2; /* kill -9 between COMMIT and publishing */
        cg_call_begin(&call, v);
        cg_part_lock(&p, call, target, CG_PART_STATE);
        cg_part_update(&nv, call, target, CG_PART_STATE, cg_part_version(p),
                       "{\"last\":\"words\"}");
        cg_call_commit(call);
        _exit(3); /* not reached */
    }
    a = member("k-a", "grp-kill");
    b = member("k-b", "grp-kill");
    h = cgt_create(a);
    ck_assert_int_eq(cgt_read_version(b, h), 1); /* cached on b, which never polls */
    cgt_send_i64(handle, h);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the hook did not kill");
    {
        char sql[256]; /* its commit landed before it died */
        snprintf(sql, sizeof(sql),
                 "SELECT version FROM resource_parts WHERE group_id = 'grp-kill' AND handle = "
                 "%" PRId64 " AND part = 'state'",
                 h);
        ck_assert_int_eq(cgt_query_i64(dba, sql), 2);
    }
    wait_state("k-v", "failed", 10 * TIMEOUT_MS);

    /* b hears the change only through the recovery's republishing */
    until = bt_ms() + 3000;
    while (cgt_read_version(b, h) < 2 && bt_ms() < until)
        usleep(10000);
    ck_assert_int_eq(cgt_read_version(b, h), 2);
    cg_core_stats_get(a, &sa);
    cg_core_stats_get(b, &sb);
    ck_assert_uint_eq(sa.recoveries + sb.recoveries, 1);
    ck_assert_uint_eq(sa.recoveries, 1);
    ck_assert_uint_ge(sa.recovered_events, 1);
    ck_assert_uint_eq(sb.polls, 0);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

/* ---- a name a live process holds ------------------------------------------------------- */

#define LONG_TIMEOUT_MS 60000 /* no heartbeat goes stale during the test: only the rule decides */

static int open_named(cg_core **out, const char *name)
{
    cg_config *cfg = cgt_core_config(dsn, name, "grp-name");
    int err;
    cfg->failure_timeout_ms = LONG_TIMEOUT_MS;
    *out = NULL;
    err = cg_core_open_config(out, cfg);
    cg_config_free(cfg);
    return err;
}

static void db_exec(const char *sql)
{
    free(db_str(sql));
}

START_TEST(a_live_name_is_not_taken)
{
    int ready[2], hold[2], err;
    char needle[64];
    int64_t inc, got;
    cg_core *c;
    cg_conn *conn;
    pid_t pid;

    ck_assert(pipe(ready) == 0 && pipe(hold) == 0);
    if ((pid = fork()) == 0) { /* holds the name until killed (forked while threadless) */
        cg_core *x;
        char ch;
        close(hold[1]);
        err = open_named(&x, "n-x");
        if (write(ready[1], &err, sizeof(err)) < 0 || read(hold[0], &ch, 1) < 0)
            _exit(3);
        _exit(0);
    }
    ck_assert_int_eq(read(ready[0], &err, sizeof(err)), sizeof(err));
    ck_assert_int_eq(err, 0);
    inc = cgt_query_i64(dba, "SELECT incarnation FROM cores WHERE core_name = 'n-x'");

    /* a live process on this host holds it: refused, naming it, and the holder is untouched */
    CGT_EXPECT(CG_EEXISTS, open_named(&c, "n-x"));
    ck_assert_ptr_null(c);
    snprintf(needle, sizeof(needle), "pid %d,", (int)pid);
    ck_assert_msg(strstr(cg_error_last()->message, "is already running") &&
                      strstr(cg_error_last()->message, needle),
                  "%s", cg_error_last()->message);
    ck_assert_int_eq(cgt_query_i64(dba, "SELECT incarnation FROM cores WHERE core_name = 'n-x'"),
                     inc);
    wait_state("n-x", "alive", 0);

    /* the holder dies: its name is taken back at once (this host has no such process now),
     * though its heartbeat is still fresh */
    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
    CGT_OK(open_named(&c, "n-x"));
    ck_assert_int_eq(cg_core_incarnation(c), inc + 1);
    cg_core_close(c);

    /* a holder on another host: refused until its heartbeat is failure_timeout_ms old */
    db_exec("UPDATE cores SET state = 'alive', host = 'elsewhere.example', pid = 4242, "
            "heartbeat_at = now() WHERE core_name = 'n-x'");
    CGT_EXPECT(CG_EEXISTS, open_named(&c, "n-x"));
    ck_assert_msg(strstr(cg_error_last()->message, "on host elsewhere.example, pid 4242"), "%s",
                  cg_error_last()->message);
    db_exec("UPDATE cores SET heartbeat_at = now() - interval '61 seconds' "
            "WHERE core_name = 'n-x'");
    CGT_OK(open_named(&c, "n-x"));
    ck_assert_int_eq(cg_core_incarnation(c), inc + 2);

    /* registering is conditional on the row judged: a row that moved on is not taken */
    CGT_OK(cg_core__conn_acquire(c, &conn));
    CGT_EXPECT(CG_EEXISTS, cg_repo_core_register(&got, conn, "grp-name", "n-x", "h", 1, inc + 1));
    cg_core__conn_release(c, conn);
    ck_assert_int_eq(cgt_query_i64(dba, "SELECT incarnation FROM cores WHERE core_name = 'n-x'"),
                     inc + 2);
    cg_core_close(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("membership");
    TCase *tc = tcase_create("failure");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, paused_core_is_fenced_and_rejoins);
    tcase_add_test(tc, killed_core_is_recovered_by_exactly_one);
    tcase_add_test(tc, a_live_name_is_not_taken);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
