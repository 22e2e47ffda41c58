/*
 * test_fence.c — fencing reaches the database (DESIGN.md, "Freshness: ... who may touch the
 * repository when"): a member that stops, holding row locks, cannot hold the rest of its group
 * up. Every session runs under lock_timeout (a blocked statement fails retryable, 55P03) and
 * idle_in_transaction_session_timeout (a session idle inside a transaction is ended); sessions
 * advertise the core and incarnation they serve, and the survivor that fences a member ends
 * that incarnation's sessions through cg_end_fenced_sessions, which refuses every other
 * session: another group's, a live incarnation's, the caller's own. The cores' role can do none
 * of this by itself. Outbox pruning deletes a batch at a time, one member at a time.
 *
 * Real PostgreSQL, sessions of the repository layer (cg_conn) logged in as non-superuser login
 * roles of their group (members of coregroup_app mapped to the group, cgt_group_login): the
 * group's first login for the survivors, and its second login for the member that gets
 * fenced, so ending its sessions cannot rest on PostgreSQL's rule that a role may signal its
 * own backends. Every session also runs under a 20 s statement_timeout, so a test whose fix
 * is missing fails instead of hanging.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repo.h"
#include "testutil.h"

static char *dsn;   /* the suite's database, as the superuser (the DBA) */
static PGconn *dba; /* per test */

static void create_db(void)
{
    dsn = cgt_createdb("fence", 1);
}

static void drop_db(void)
{
    free(dsn);
}

static void open_dba(void)
{
    dba = cgt_connect(dsn);
}

static void close_dba(void)
{
    PQfinish(dba);
}

/* The DBA's answer to `fmt` (first value of the first row); the caller frees it. */
static char *dba_query(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dba_query(const char *fmt, ...)
{
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return cgt_query1(dba, sql);
}

static void expect_dba(const char *want, const char *sql)
{
    char *got = cgt_query1(dba, sql);
    ck_assert_msg(strcmp(got, want) == 0, "%s: got %s, want %s", sql, got, want);
    free(got);
}

/* A configuration for a session of `group` logged in as the group's login role `login` (1 or
 * 2, cgt_group_login); the caller frees it. */
static cg_config *config_for(const char *group, int login)
{
    cg_config *cfg = cgt_core_config(dsn, "fence-test", group);
    char buf[1200];
    snprintf(buf, sizeof(buf), "%s user=%s options='-c statement_timeout=20000'", dsn,
             cgt_group_login(dsn, group, login));
    ck_assert_int_eq(cg_config_set_string(&cfg->dsn, buf), 0);
    return cfg;
}

static cg_conn *connect_cfg(const cg_config *cfg)
{
    cg_conn *c = NULL;
    CGT_OK(cg_repo_connect(&c, cfg, "test_fence"));
    return c;
}

/* A session of `group` as its login role `login` with the default timeouts. */
static cg_conn *session(const char *group, int login)
{
    cg_config *cfg = config_for(group, login);
    cg_conn *c = connect_cfg(cfg);
    cg_config_free(cfg);
    return c;
}

/* A resource of `group`, planted by the DBA; returns its handle. */
static int64_t make_resource(const char *group)
{
    char *v = dba_query("WITH r AS (INSERT INTO resources (group_id, kind) VALUES ('%s', "
                        "'service') RETURNING handle), p AS (INSERT INTO resource_parts "
                        "(group_id, handle, part) SELECT '%s', r.handle, x FROM r, "
                        "unnest(ARRAY['specification', 'description', 'state']) x) "
                        "SELECT handle FROM r",
                        group, group);
    int64_t h = strtoll(v, NULL, 10);
    free(v);
    return h;
}

/* Register `core` in the group of session c (creating the group); returns its incarnation. */
static int64_t join(cg_conn *c, const char *group, const char *core)
{
    int64_t inc = 0;
    CGT_OK(cg_repo_group_ensure(c, group));
    CGT_OK(cg_repo_core_register(&inc, c, group, core, "test-host", 1, 0));
    return inc;
}

/* 1 while the backend with this pid is still in pg_stat_activity. */
static int backend_alive(int pid)
{
    char *v = dba_query("SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    int alive = strcmp(v, "0") != 0;
    free(v);
    return alive;
}

/* 1 once the backend with this pid has left pg_stat_activity, within ms (ending a session only
 * signals its backend: it rolls back and exits a moment later). */
static int backend_gone_within(int pid, int ms)
{
    for (; ms > 0 && backend_alive(pid); ms -= 10)
        usleep(10000);
    return !backend_alive(pid);
}

/* ---- timeouts ------------------------------------------------------------------------- */

START_TEST(lock_timeout_makes_a_blocked_update_retryable)
{
    cg_config *cfg = config_for("lt", 1);
    cg_conn *s1, *s2;
    cg_part *p = NULL;
    int64_t h;

    cfg->lock_timeout_ms = 300;
    s1 = connect_cfg(cfg);
    s2 = connect_cfg(cfg);
    CGT_OK(cg_repo_group_ensure(s1, "lt"));
    h = make_resource("lt");

    /* s1 holds the row lock in an open transaction; s2's update gives up on it */
    CGT_OK(cg_repo_part_get(&p, s1, "lt", h, CG_PART_STATE, 1));
    cg_part_free(p);
    CGT_EXPECT(CG_ERETRYABLE, cg_repo_part_update(&p, s2, "lt", h, CG_PART_STATE, 1, "{}"));
    ck_assert_str_eq(cg_error_last()->sqlstate, "55P03");
    ck_assert_ptr_null(p);
    cg_repo_rollback(s2);
    ck_assert(cg_repo_usable(s2)); /* the session survives; only the call failed */

    /* once s1 lets go, the same update goes through */
    cg_repo_rollback(s1);
    CGT_OK(cg_repo_part_update(&p, s2, "lt", h, CG_PART_STATE, 1, "{\"n\":1}"));
    ck_assert_int_eq(cg_part_version(p), 2);
    cg_part_free(p);
    cg_repo_rollback(s2);
    cg_repo_close(s1);
    cg_repo_close(s2);
    cg_config_free(cfg);
}
END_TEST

START_TEST(a_session_idle_in_a_transaction_is_ended)
{
    cg_config *cfg = config_for("idle", 1);
    cg_conn *s;
    cg_part *p = NULL;
    int64_t h;
    int pid, i;

    cfg->idle_in_transaction_timeout_ms = 300;
    s = connect_cfg(cfg);
    CGT_OK(cg_repo_group_ensure(s, "idle"));
    h = make_resource("idle");
    pid = PQbackendPID(s->pg);

    CGT_OK(cg_repo_part_get(&p, s, "idle", h, CG_PART_STATE, 1)); /* BEGIN; lock; then idle */
    cg_part_free(p);
    p = NULL;
    for (i = 0; i < 300 && backend_alive(pid); i++) /* the server ends it: wait (up to 15 s) */
        usleep(50000);
    ck_assert_msg(!backend_alive(pid), "the session idle in its transaction is still there");
    CGT_EXPECT(CG_ERETRYABLE, cg_repo_part_get(&p, s, "idle", h, CG_PART_STATE, 0));
    ck_assert(!cg_repo_usable(s));

    /* a session that is merely idle outside a transaction stays */
    CGT_OK(cg_repo_reconnect(s, cfg, "test_fence"));
    pid = PQbackendPID(s->pg);
    usleep(600000);
    ck_assert(backend_alive(pid));
    CGT_OK(cg_repo_part_get(&p, s, "idle", h, CG_PART_STATE, 0));
    cg_part_free(p);
    cg_repo_rollback(s);
    cg_repo_close(s);
    cg_config_free(cfg);
}
END_TEST

/* ---- fencing ends the fenced incarnation's sessions ------------------------------------ */

START_TEST(fencing_ends_the_fenced_incarnations_sessions)
{
    cg_conn *survivor = session("fa", 1), *third = session("fa", 1);
    cg_conn *x1 = session("fa", 2), *x2 = session("fa", 2);
    cg_part *p = NULL;
    int64_t h, inc_x, inc_new = 0, ended = -1, seq;
    int pid1 = PQbackendPID(x1->pg), pid2 = PQbackendPID(x2->pg);

    join(survivor, "fa", "survivor");
    inc_x = join(x1, "fa", "x");
    ck_assert_int_eq(inc_x, 1);
    h = make_resource("fa");

    /* x advertises both its sessions; one holds a row lock in an open transaction */
    ck_assert_int_eq(x1->advertised, 0);
    CGT_OK(cg_repo_session_advertise(x1, "fa", "x", inc_x));
    CGT_OK(cg_repo_session_advertise(x2, "fa", "x", inc_x));
    ck_assert_int_eq(x1->advertised, inc_x);
    ck_assert_int_eq(x2->advertised, inc_x);
    expect_dba("2", "SELECT count(*) FROM core_sessions WHERE group_id = 'fa' AND core_name = 'x' "
                    "AND incarnation = 1");
    CGT_OK(cg_repo_part_get(&p, x1, "fa", h, CG_PART_STATE, 1));
    cg_part_free(p);
    p = NULL;

    /* x falls silent; the survivor fences it, then ends the fenced incarnation's sessions */
    ck_assert_int_eq(cg_repo_fence(&inc_new, survivor, "fa", "x", inc_x, 0), 1);
    ck_assert_int_eq(inc_new, inc_x + 1);
    CGT_OK(cg_repo_fence_sessions(&ended, survivor, "fa", "x", inc_x));
    ck_assert_int_eq(ended, 2);

    /* the lock is gone: a third session updates the row (else 55P03 after 2 s) */
    CGT_OK(cg_repo_part_update(&p, third, "fa", h, CG_PART_STATE, 1, "{\"after\":\"fence\"}"));
    cg_part_free(p);
    p = NULL;
    cg_repo_rollback(third);

    /* x's sessions are dead, and so are their advertisements */
    ck_assert(backend_gone_within(pid1, 5000));
    ck_assert(backend_gone_within(pid2, 5000));
    CGT_EXPECT(CG_ERETRYABLE, cg_repo_part_get(&p, x1, "fa", h, CG_PART_STATE, 0));
    CGT_EXPECT(CG_ERETRYABLE, cg_repo_event_seq(&seq, NULL, x2, "fa"));
    expect_dba("0", "SELECT count(*) FROM core_sessions WHERE core_name = 'x'");
    /* the survivors are untouched, and a second call finds nothing left to end */
    CGT_OK(cg_repo_fence_sessions(&ended, survivor, "fa", "x", inc_x));
    ck_assert_int_eq(ended, 0);
    CGT_OK(cg_repo_event_seq(&seq, NULL, third, "fa"));

    cg_repo_close(survivor);
    cg_repo_close(third);
    cg_repo_close(x1);
    cg_repo_close(x2);
}
END_TEST

START_TEST(a_rejoined_session_is_spared)
{
    /* a session that advertised its core's new incarnation is not one of the fenced ones */
    cg_conn *survivor = session("rj", 1), *y = session("rj", 2);
    int64_t inc, inc2 = 0, ended = -1, seq;

    join(survivor, "rj", "survivor");
    inc = join(y, "rj", "y");
    CGT_OK(cg_repo_session_advertise(y, "rj", "y", inc));
    ck_assert_int_eq(cg_repo_fence(&inc2, survivor, "rj", "y", inc, 0), 1);
    /* y comes back: registers again (a new incarnation) and advertises it on the session */
    CGT_EXPECT(CG_EFENCED, cg_repo_session_advertise(y, "rj", "y", inc));
    CGT_OK(cg_repo_core_register(&inc2, y, "rj", "y", "test-host", 1, inc2));
    CGT_OK(cg_repo_session_advertise(y, "rj", "y", inc2));
    ck_assert_int_eq(y->advertised, inc2);
    expect_dba("1", "SELECT count(*) FROM core_sessions WHERE core_name = 'y'");
    CGT_OK(cg_repo_fence_sessions(&ended, survivor, "rj", "y", inc));
    ck_assert_int_eq(ended, 0);
    CGT_OK(cg_repo_event_seq(&seq, NULL, y, "rj"));

    /* a reconnected session has advertised nothing */
    ck_assert_int_ne(y->advertised, 0);
    {
        cg_config *cfg = config_for("rj", 2);
        CGT_OK(cg_repo_reconnect(y, cfg, "test_fence"));
        cg_config_free(cfg);
    }
    ck_assert_int_eq(y->advertised, 0);
    cg_repo_close(survivor);
    cg_repo_close(y);
}
END_TEST

/* ---- least privilege ------------------------------------------------------------------ */

START_TEST(another_groups_fenced_core_is_refused)
{
    cg_conn *a = session("pa", 1), *y = session("pb", 2);
    int64_t inc, ended = -1, seq;
    int pid = PQbackendPID(y->pg);

    join(a, "pa", "a");
    inc = join(y, "pb", "y");
    CGT_OK(cg_repo_session_advertise(y, "pb", "y", inc));
    free(dba_query("UPDATE cores SET incarnation = incarnation + 1, state = 'failed' "
                   "WHERE group_id = 'pb' AND core_name = 'y'"));

    CGT_EXPECT(CG_EINVALID, cg_repo_fence_sessions(&ended, a, "pb", "y", inc));
    ck_assert_str_eq(cg_error_last()->sqlstate, "42501");
    ck_assert_msg(strstr(cg_error_last()->message, "\"y\" incarnation 1 of group \"pb\""), "%s",
                  cg_error_last()->message);
    ck_assert_int_eq(ended, 0);
    /* naming the core under the caller's own group finds no such member */
    CGT_EXPECT(CG_EINVALID, cg_repo_fence_sessions(&ended, a, "pa", "y", inc));
    ck_assert_str_eq(cg_error_last()->sqlstate, "42501");
    ck_assert_msg(strstr(cg_error_last()->message, "no such member"), "%s",
                  cg_error_last()->message);

    ck_assert(backend_alive(pid));
    CGT_OK(cg_repo_event_seq(&seq, NULL, y, "pb"));
    expect_dba("1", "SELECT count(*) FROM core_sessions WHERE group_id = 'pb'");
    cg_repo_close(a);
    cg_repo_close(y);
}
END_TEST

START_TEST(a_live_incarnations_sessions_are_refused)
{
    cg_conn *s = session("pl", 1), *z = session("pl", 2);
    int64_t inc, ended = -1, seq;
    int pid = PQbackendPID(z->pg);

    join(s, "pl", "s");
    inc = join(z, "pl", "z");
    CGT_OK(cg_repo_session_advertise(z, "pl", "z", inc));

    CGT_EXPECT(CG_EINVALID, cg_repo_fence_sessions(&ended, s, "pl", "z", inc));
    ck_assert_str_eq(cg_error_last()->sqlstate, "42501");
    ck_assert_msg(strstr(cg_error_last()->message, "not fenced"), "%s", cg_error_last()->message);
    /* nor a future incarnation, which would cover the current one */
    CGT_EXPECT(CG_EINVALID, cg_repo_fence_sessions(&ended, s, "pl", "z", inc + 5));
    ck_assert_str_eq(cg_error_last()->sqlstate, "42501");

    ck_assert(backend_alive(pid));
    CGT_OK(cg_repo_event_seq(&seq, NULL, z, "pl"));
    expect_dba("1", "SELECT count(*) FROM core_sessions WHERE core_name = 'z'");
    cg_repo_close(s);
    cg_repo_close(z);
}
END_TEST

START_TEST(the_core_role_cannot_end_sessions_by_itself)
{
    cg_conn *z = session("pr", 2);
    char *cdsn = cgt_core_dsn(dsn, "pr"), sql[512], *v;
    char login1[64], login2[64];
    PGconn *raw = cgt_connect(cdsn);
    PGresult *r;
    int pid = PQbackendPID(z->pg);

    snprintf(login1, sizeof(login1), "%s", cgt_group_login(dsn, "pr", 1));
    snprintf(login2, sizeof(login2), "%s", cgt_group_login(dsn, "pr", 2));
    /* PostgreSQL itself refuses one login signalling another login's backend (even of its
     * own group), or the DBA's */
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", pid);
    r = PQexec(raw, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    ck_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
    PQclear(r);
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", PQbackendPID(dba));
    r = PQexec(raw, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    ck_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
    PQclear(r);
    ck_assert(backend_alive(pid));

    /* it cannot forge an advertisement either: the table is read-only to it */
    snprintf(sql, sizeof(sql),
             "INSERT INTO core_sessions (group_id, core_name, incarnation, backend_pid, "
             "backend_start) VALUES ('pr', 'z', 1, %d, now())",
             PQbackendPID(dba));
    r = PQexec(raw, sql);
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    ck_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
    PQclear(r);
    /* and the cores' role holds no signalling privilege; only coregroup_app may call the
     * session functions */
    v = dba_query("SELECT pg_has_role('%s', 'pg_signal_backend', 'MEMBER') || '|' || "
                  "pg_has_role('%s', 'pg_signal_backend', 'MEMBER')",
                  login1, login2);
    ck_assert_str_eq(v, "false|false");
    free(v);
    v = dba_query("SELECT has_function_privilege('cg_password', "
                  "'cg_end_fenced_sessions(text, text, bigint)', 'EXECUTE') || '|' || "
                  "has_function_privilege('cg_password', 'cg_session_advertise(text, text, "
                  "bigint)', 'EXECUTE') || '|' || has_function_privilege('%s', "
                  "'cg_end_fenced_sessions(text, text, bigint)', 'EXECUTE')",
                  login1);
    ck_assert_str_eq(v, "false|false|true");
    free(v);
    PQfinish(raw);
    free(cdsn);
    cg_repo_close(z);
}
END_TEST

START_TEST(a_session_advertises_only_itself_in_its_own_group)
{
    cg_conn *a = session("aa", 1), *b = session("ab", 1);
    int64_t inc_a, inc_b;
    char want[64];

    inc_a = join(a, "aa", "a");
    inc_b = join(b, "ab", "b");
    /* another group's core: refused */
    CGT_EXPECT(CG_EINVALID, cg_repo_session_advertise(a, "ab", "b", inc_b));
    ck_assert_str_eq(cg_error_last()->sqlstate, "42501");
    ck_assert_int_eq(a->advertised, 0);
    /* no such member, or an incarnation that is not current: refused as fenced */
    CGT_EXPECT(CG_EFENCED, cg_repo_session_advertise(a, "aa", "nobody", 1));
    ck_assert_str_eq(cg_error_last()->sqlstate, "CGF01");
    CGT_EXPECT(CG_EFENCED, cg_repo_session_advertise(a, "aa", "a", inc_a + 1));
    ck_assert_int_eq(a->advertised, 0);
    expect_dba("0", "SELECT count(*) FROM core_sessions WHERE group_id IN ('aa', 'ab')");

    /* its own: exactly its own backend, with its start time */
    CGT_OK(cg_repo_session_advertise(a, "aa", "a", inc_a));
    snprintf(want, sizeof(want), "%d|true", PQbackendPID(a->pg));
    {
        char *v = dba_query("SELECT cs.backend_pid || '|' || (cs.backend_start = s.backend_start) "
                            "FROM core_sessions cs JOIN pg_stat_activity s ON s.pid = "
                            "cs.backend_pid WHERE cs.group_id = 'aa'");
        ck_assert_str_eq(v, want);
        free(v);
    }
    /* advertising again keeps one row */
    CGT_OK(cg_repo_session_advertise(a, "aa", "a", inc_a));
    expect_dba("1", "SELECT count(*) FROM core_sessions WHERE group_id = 'aa'");
    cg_repo_close(a);
    cg_repo_close(b);
}
END_TEST

/* ---- pruning -------------------------------------------------------------------------- */

/* The DBA writes outbox rows first..last of `group`, committed `age` ago (a millisecond
 * apart, in seq order). */
static void outbox_rows(const char *group, int first, int last, const char *age)
{
    free(dba_query("INSERT INTO core_groups (group_id) VALUES ('%s') ON CONFLICT DO NOTHING",
                   group));
    free(dba_query("INSERT INTO invalidations (group_id, seq, origin_core, origin_incarnation, "
                   "items, committed_at) SELECT '%s', s, 'c', 1, '[]', now() - interval '%s' + "
                   "s * interval '1 millisecond' FROM generate_series(%d, %d) s",
                   group, age, first, last));
}

START_TEST(prune_deletes_at_most_a_batch_of_the_oldest_rows)
{
    cg_conn *c = session("pn", 1);
    int64_t deleted = -1;

    outbox_rows("pn", 1, 5, "1 hour");
    outbox_rows("pn", 6, 7, "0 seconds");
    outbox_rows("pn-other", 1, 3, "1 hour");

    CGT_OK(cg_repo_outbox_prune(&deleted, c, "pn", 60, 2));
    ck_assert_int_eq(deleted, 2);
    expect_dba("3", "SELECT min(seq) FROM invalidations WHERE group_id = 'pn'"); /* oldest first */
    CGT_OK(cg_repo_outbox_prune(&deleted, c, "pn", 60, 2));
    ck_assert_int_eq(deleted, 2);
    CGT_OK(cg_repo_outbox_prune(&deleted, c, "pn", 60, 2));
    ck_assert_int_eq(deleted, 1);
    CGT_OK(cg_repo_outbox_prune(&deleted, c, "pn", 60, 2));
    ck_assert_int_eq(deleted, 0);
    expect_dba("6,7", "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM invalidations "
                      "WHERE group_id = 'pn'");
    expect_dba("3", "SELECT count(*) FROM invalidations WHERE group_id = 'pn-other'");

    CGT_EXPECT(CG_EINVALID, cg_repo_outbox_prune(&deleted, c, "pn", 60, 0));
    /* the outbox's index fits the group's prune; the one on committed_at alone is gone */
    expect_dba("invalidations_group_committed_idx,invalidations_pkey",
               "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes "
               "WHERE tablename = 'invalidations'");
    cg_repo_close(c);
}
END_TEST

START_TEST(prune_yields_to_a_member_already_pruning)
{
    cg_conn *c = session("py", 1);
    char *cdsn = cgt_core_dsn(dsn, "py"), *v;
    PGconn *other = cgt_connect(cdsn);
    int64_t deleted = -1;

    outbox_rows("py", 1, 4, "1 hour");
    /* another member is in the middle of a prune: it holds the group's lock until it commits */
    free(cgt_query1(other, "BEGIN"));
    v = cgt_query1(other, "SELECT cg_outbox_prune('py', 60, 1)");
    ck_assert_str_eq(v, "1");
    free(v);

    CGT_OK(cg_repo_outbox_prune(&deleted, c, "py", 60, 10));
    ck_assert_int_eq(deleted, 0);
    expect_dba("4", "SELECT count(*) FROM invalidations WHERE group_id = 'py'");

    free(cgt_query1(other, "COMMIT"));
    CGT_OK(cg_repo_outbox_prune(&deleted, c, "py", 60, 10));
    ck_assert_int_eq(deleted, 3);
    expect_dba("0", "SELECT count(*) FROM invalidations WHERE group_id = 'py'");
    PQfinish(other);
    free(cdsn);
    cg_repo_close(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fence");
    TCase *tc;

    tc = tcase_create("timeouts");
    tcase_add_unchecked_fixture(tc, create_db, drop_db);
    tcase_add_checked_fixture(tc, open_dba, close_dba);
    tcase_add_test(tc, lock_timeout_makes_a_blocked_update_retryable);
    tcase_add_test(tc, a_session_idle_in_a_transaction_is_ended);
    suite_add_tcase(s, tc);

    tc = tcase_create("fencing");
    tcase_add_unchecked_fixture(tc, create_db, drop_db);
    tcase_add_checked_fixture(tc, open_dba, close_dba);
    tcase_add_test(tc, fencing_ends_the_fenced_incarnations_sessions);
    tcase_add_test(tc, a_rejoined_session_is_spared);
    suite_add_tcase(s, tc);

    tc = tcase_create("least_privilege");
    tcase_add_unchecked_fixture(tc, create_db, drop_db);
    tcase_add_checked_fixture(tc, open_dba, close_dba);
    tcase_add_test(tc, another_groups_fenced_core_is_refused);
    tcase_add_test(tc, a_live_incarnations_sessions_are_refused);
    tcase_add_test(tc, the_core_role_cannot_end_sessions_by_itself);
    tcase_add_test(tc, a_session_advertises_only_itself_in_its_own_group);
    suite_add_tcase(s, tc);

    tc = tcase_create("pruning");
    tcase_add_unchecked_fixture(tc, create_db, drop_db);
    tcase_add_checked_fixture(tc, open_dba, close_dba);
    tcase_add_test(tc, prune_deletes_at_most_a_batch_of_the_oldest_rows);
    tcase_add_test(tc, prune_yields_to_a_member_already_pruning);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
