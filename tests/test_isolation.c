/*
 * test_isolation.c — group isolation (I1): two groups on one repository, with colliding
 * handles (every root folder is handle 0, and the DBA plants the same handle in both), never
 * read or change each other's rows; and row-level security, the second fence, confines a
 * session to the group its login role is mapped to (migration 0005), not to the group it
 * says it serves.
 *
 * The hostile login: raw SQL as the login role of group A (a member of coregroup_app mapped to
 * A), which says it is group B (set_config of coregroup.group) and SETs ROLE to whatever it
 * may (coregroup_app), then tries everything against B: read, update, delete and insert B's
 * rows, move its own rows into B, append to B's outbox, fence B's core (directly and through
 * cg_end_fenced_sessions, cg_session_advertise, cg_outbox_prune, cg_outbox_append,
 * cg_fence_check), write the map of logins, schema_migrations, create and alter tables, and
 * become B's login. Each attempt sees or changes no row of B, or is refused (42501; the
 * invoker functions refuse as fenced, CGF01). The DBA then finds every row of B as it was,
 * by a digest of every table. A member of coregroup_app that the DBA has not mapped sees
 * nothing at all.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static char *dsn;
static PGconn *dba;

static void setup(void)
{
    dsn = cgt_createdb("iso", 1);
    dba = cgt_connect(dsn);
}

static void teardown(void)
{
    PQfinish(dba);
    free(dsn);
}

static char *body_of(cg_core *core, int64_t h, int64_t *version)
{
    cg_call *call;
    const cg_part *p; /* lent by the call: read before it ends */
    char *s;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_part_get(&p, call, h, CG_PART_STATE));
    s = strdup(cg_part_body(p));
    *version = cg_part_version(p);
    CGT_OK(cg_call_commit(call));
    return s;
}

START_TEST(groups_do_not_see_each_other)
{
    cg_core *a = cgt_core_open(dsn, "iso-a", "grp-a"), *b = cgt_core_open(dsn, "iso-b", "grp-b");
    cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
    cg_name_list list;
    cg_call *call;
    char sql[512], *body;
    int64_t h, v, target;

    o.state = "{\"owner\":\"a\"}";
    o.service_id = "shared-service";
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_resource_create(&h, call, &o));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "svc", h));
    CGT_OK(cg_call_commit(call));
    /* the DBA plants the same handle in group b */
    snprintf(sql, sizeof(sql),
             "INSERT INTO resources (group_id, handle, kind, service_id) VALUES ('grp-b', %" PRId64
             ", 'service', 'shared-service'); INSERT INTO resource_parts (group_id, handle, part, "
             "body) SELECT 'grp-b', %" PRId64 ", p, '{\"owner\":\"b\"}' FROM unnest(ARRAY["
             "'specification', 'description', 'state']) p",
             h, h);
    free(cgt_query1(dba, sql));

    body = body_of(a, h, &v);
    ck_assert_str_eq(body, "{\"owner\": \"a\"}");
    free(body);
    body = body_of(b, h, &v);
    ck_assert_str_eq(body, "{\"owner\": \"b\"}");
    free(body);

    /* names: each group has its own root folder 0 */
    CGT_OK(cg_call_begin(&call, b));
    CGT_OK(cg_name_list_get(&list, call, CG_ROOT_FOLDER));
    ck_assert_uint_eq(list.n, 0);
    CGT_EXPECT(CG_ENOTFOUND, cg_name_lookup(&target, call, CG_ROOT_FOLDER, "svc"));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "svc", h)); /* b's own handle h, its own name */
    /* writes: b updates its h; a's h is untouched */
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"owner\":\"b2\"}"));
    CGT_OK(cg_call_commit(call));
    body = body_of(a, h, &v);
    ck_assert_str_eq(body, "{\"owner\": \"a\"}");
    ck_assert_int_eq(v, 1);
    free(body);

    /* locator: each group finds only its own replica */
    {
        cg_handle_list found;
        CGT_OK(cg_call_begin(&call, a));
        CGT_OK(cg_resource_find(&found, call, "shared-service"));
        ck_assert_uint_eq(found.n, 1);
        cg_handle_list_dispose(&found);
        /* deleting in a leaves b's resource and b's binding */
        CGT_OK(cg_resource_delete(call, h));
        CGT_OK(cg_call_commit(call));
    }
    cgt_expect_query(dba,
                     "SELECT string_agg(group_id, ',' ORDER BY group_id) FROM resources WHERE "
                     "handle <> 0",
                     "grp-b");
    cgt_expect_query(dba, "SELECT string_agg(group_id || ':' || name, ',') FROM name_bindings",
                     "grp-b:svc");
    /* the outbox rows are the writer's group's only */
    cgt_expect_query(dba,
                     "SELECT string_agg(DISTINCT group_id || '/' || origin_core, ',') FROM "
                     "invalidations",
                     "grp-a/iso-a,grp-b/iso-b");
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

/* A digest of everything of `group` in every table, and of the map and schema_migrations,
 * read by the DBA (not confined by row-level security). */
static char *digest_of(const char *group)
{
    char sql[2048];
    snprintf(sql, sizeof(sql),
             "SELECT md5(concat_ws('|', "
             "(SELECT string_agg(g::text, ',' ORDER BY group_id) FROM core_groups g "
             "  WHERE group_id = '%1$s'), "
             "(SELECT string_agg(c::text, ',' ORDER BY core_name) FROM cores c "
             "  WHERE group_id = '%1$s'), "
             "(SELECT string_agg(r::text, ',' ORDER BY handle) FROM resources r "
             "  WHERE group_id = '%1$s'), "
             "(SELECT string_agg(p::text, ',' ORDER BY handle, part) FROM resource_parts p "
             "  WHERE group_id = '%1$s'), "
             "(SELECT string_agg(b::text, ',' ORDER BY folder_handle, name) FROM name_bindings b "
             "  WHERE group_id = '%1$s'), "
             "(SELECT string_agg(i::text, ',' ORDER BY seq) FROM invalidations i "
             "  WHERE group_id = '%1$s'), "
             "(SELECT string_agg(s::text, ',' ORDER BY backend_pid) FROM core_sessions s "
             "  WHERE group_id = '%1$s'), "
             "(SELECT string_agg(role_name || '=' || group_id, ',' ORDER BY role_name) "
             "   FROM group_logins), "
             "(SELECT string_agg(version || checksum, ',' ORDER BY version) "
             "   FROM schema_migrations)))",
             group);
    return cgt_query1(dba, sql);
}

/* `sql` must fail with SQLSTATE `state`. */
static void refused(PGconn *c, const char *sql, const char *state)
{
    PGresult *r = PQexec(c, sql);
    const char *got = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    ck_assert_msg(PQresultStatus(r) == PGRES_FATAL_ERROR && got && strcmp(got, state) == 0,
                  "%s: expected SQLSTATE %s, got %s (%s)", sql, state, got ? got : "success",
                  PQresultErrorMessage(r));
    PQclear(r);
}

/* `sql` must succeed touching `rows` rows (a SELECT: returning one value equal to `rows`). */
static void affects(PGconn *c, const char *sql, const char *rows)
{
    PGresult *r = PQexec(c, sql);
    const char *got;
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK,
                  "%s: %s", sql, PQresultErrorMessage(r));
    got = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 1
              ? PQgetvalue(r, 0, 0)
              : PQcmdTuples(r);
    ck_assert_msg(strcmp(got, rows) == 0, "%s: got %s, want %s", sql, got, rows);
    PQclear(r);
}

/* Everything the hostile login `c` of group "hx-a" tries against group "hx-b" (its core
 * "hx-core-b" at incarnation 1, its resource `hb`, its login `login_b`, one of its backends
 * `pid_b`). */
static void attack(PGconn *c, int64_t hb, const char *login_b, int pid_b)
{
    static const char *const tables[] = {"core_groups",    "cores",         "resources",
                                         "resource_parts", "name_bindings", "invalidations",
                                         "core_sessions"};
    char sql[512];
    size_t i;

    /* read */
    for (i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE group_id = 'hx-b'", tables[i]);
        affects(c, sql, "0");
        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(string_agg(DISTINCT group_id, ','), 'hx-a') "
                 "FROM %s",
                 tables[i]);
        affects(c, sql, "hx-a"); /* no filter at all: its own group only */
    }
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM resource_parts WHERE handle = %" PRId64, hb);
    affects(c, sql, "0");
    affects(c, "SELECT count(*) FROM group_logins WHERE role_name <> session_user", "0");
    affects(c, "SELECT group_id FROM cg_session_login()", "hx-a");

    /* change B's rows: none is visible, so none changes */
    affects(c, "UPDATE resource_parts SET body = '{\"hacked\":1}' WHERE group_id = 'hx-b'", "0");
    free(cgt_query1(c, "UPDATE resource_parts SET body = '{\"hacked\":1}'")); /* its own */
    affects(c, "UPDATE core_groups SET event_seq = event_seq + 1000 WHERE group_id = 'hx-b'", "0");
    affects(c, "DELETE FROM resources WHERE group_id = 'hx-b'", "0");
    affects(c, "DELETE FROM name_bindings WHERE group_id = 'hx-b'", "0");
    affects(c, "DELETE FROM invalidations WHERE group_id = 'hx-b'", "0");
    /* fence B's core by hand */
    affects(c,
            "UPDATE cores SET incarnation = incarnation + 1, state = 'failed' "
            "WHERE group_id = 'hx-b'",
            "0");

    /* insert into B; move its own rows into B */
    refused(c, "INSERT INTO core_groups (group_id) VALUES ('hx-b2')", "42501");
    refused(c, "INSERT INTO resources (group_id, kind) VALUES ('hx-b', 'service')", "42501");
    refused(c, "INSERT INTO cores (group_id, core_name) VALUES ('hx-b', 'intruder')", "42501");
    refused(c,
            "INSERT INTO invalidations (group_id, seq, origin_core, origin_incarnation, items) "
            "VALUES ('hx-b', 1000, 'hx-core-b', 1, '[]')",
            "42501");
    refused(c, "UPDATE resources SET group_id = 'hx-b'", "42501");
    refused(c, "UPDATE resource_parts SET group_id = 'hx-b'", "42501");
    refused(c, "UPDATE cores SET group_id = 'hx-b'", "42501");
    refused(c, "UPDATE core_groups SET group_id = 'hx-b'", "42501");
    refused(c, "UPDATE name_bindings SET group_id = 'hx-b'", "42501");
    refused(c, "UPDATE invalidations SET group_id = 'hx-b'", "42501");
    refused(c,
            "INSERT INTO core_sessions (group_id, core_name, incarnation, backend_pid, "
            "backend_start) VALUES ('hx-b', 'hx-core-b', 1, 1, now())",
            "42501");

    /* the functions, naming B */
    refused(c, "SELECT cg_end_fenced_sessions('hx-b', 'hx-core-b', 1)", "42501");
    refused(c, "SELECT cg_session_advertise('hx-b', 'hx-core-b', 1)", "42501");
    refused(c, "SELECT cg_outbox_prune('hx-b', 0, 1000)", "42501");
    refused(c, "SELECT * FROM cg_outbox_append('hx-b', 'hx-core-b', 1, '[]')", "CGF01");
    refused(c, "SELECT cg_fence_check('hx-b', 'hx-core-b', 1)", "CGF01");
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", pid_b);
    refused(c, sql, "42501");

    /* the map, the migrations, the schema */
    refused(c, "INSERT INTO group_logins (role_name, group_id) VALUES (session_user, 'hx-b')",
            "42501");
    refused(c, "UPDATE group_logins SET group_id = 'hx-b'", "42501");
    refused(c, "DELETE FROM group_logins", "42501");
    refused(c, "SELECT cg_map_role(session_user, 'hx-b')", "42501");
    refused(c, "SELECT cg_unmap_role(session_user)", "42501");
    refused(c, "SELECT count(*) FROM schema_migrations", "42501");
    refused(c,
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'x', "
            "repeat('0', 64))",
            "42501");
    refused(c, "DELETE FROM schema_migrations", "42501");
    refused(c, "CREATE TABLE evil (x int)", "42501");
    refused(c, "CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS 'SELECT 1'", "42501");
    refused(c, "ALTER TABLE resources DISABLE ROW LEVEL SECURITY", "42501");
    refused(c, "DROP POLICY group_fence ON resources", "42501");
    refused(c, "TRUNCATE invalidations", "42501");
    refused(c, "CREATE ROLE evil LOGIN", "42501");

    /* become B */
    snprintf(sql, sizeof(sql), "SET ROLE \"%s\"", login_b);
    refused(c, sql, "42501");
    snprintf(sql, sizeof(sql), "SET SESSION AUTHORIZATION \"%s\"", login_b);
    refused(c, sql, "42501");
}

START_TEST(a_hostile_login_of_one_group_touches_nothing_of_another)
{
    cg_core *a = cgt_core_open(dsn, "hx-core-a", "hx-a"),
            *b = cgt_core_open(dsn, "hx-core-b", "hx-b");
    char *adsn = cgt_core_dsn(dsn, "hx-a"), *before, *after, *v, login_b[64];
    cg_call *call;
    const cg_part *p;
    int64_t ha, hb, ver;
    PGconn *c;
    int pid_b;

    /* B has a bit of everything: a resource with a name, a changed part (an outbox row), its
     * membership row and an advertised session */
    ha = cgt_create(a);
    (void)ha;
    hb = cgt_create(b);
    CGT_OK(cg_call_begin(&call, b));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "b-only", hb));
    CGT_OK(cg_part_lock(&p, call, hb, CG_PART_STATE));
    CGT_OK(cg_part_update(&ver, call, hb, CG_PART_STATE, cg_part_version(p), "{\"b\":1}"));
    CGT_OK(cg_call_commit(call));
    snprintf(login_b, sizeof(login_b), "%s", cgt_group_login(dsn, "hx-b", 1));
    v = cgt_query1(dba, "SELECT count(*) FROM invalidations WHERE group_id = 'hx-b'");
    ck_assert_str_ne(v, "0");
    free(v);
    v = cgt_query1(dba, "SELECT count(*) FROM core_sessions WHERE group_id = 'hx-b'");
    ck_assert_str_ne(v, "0");
    free(v);
    v = cgt_query1(dba, "SELECT min(backend_pid) FROM core_sessions WHERE group_id = 'hx-b'");
    pid_b = atoi(v);
    free(v);
    before = digest_of("hx-b");

    c = cgt_connect(adsn);
    /* as it logged in */
    attack(c, hb, login_b, pid_b);
    /* saying it is group B */
    affects(c, "SELECT set_config('coregroup.group', 'hx-b', false)", "hx-b");
    attack(c, hb, login_b, pid_b);
    /* as coregroup_app, the one role it may SET, still saying B */
    free(cgt_query1(c, "SET ROLE coregroup_app"));
    affects(c, "SELECT current_user", "coregroup_app");
    attack(c, hb, login_b, pid_b);
    PQfinish(c);

    after = digest_of("hx-b");
    ck_assert_msg(strcmp(before, after) == 0, "group hx-b changed under the hostile login");
    /* its own rows it could change (the unfiltered update above) */
    cgt_expect_query(
        dba, "SELECT count(*) FROM resource_parts WHERE group_id = 'hx-a' AND body ? 'hacked'",
        "3");
    /* and B's core still works */
    ck_assert_int_eq(cgt_bump(b, hb), ver + 1);
    free(before);
    free(after);
    free(adsn);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

START_TEST(an_unmapped_member_of_coregroup_app_sees_nothing)
{
    static const char *const tables[] = {"core_groups",    "cores",         "resources",
                                         "resource_parts", "name_bindings", "invalidations",
                                         "core_sessions",  "group_logins"};
    cg_core *a = cgt_core_open(dsn, "um-core", "um-a");
    char udsn[1200], sql[256];
    size_t i;
    PGconn *c;

    cgt_create(a);
    /* a login the DBA made a member of coregroup_app but mapped to no group */
    free(cgt_query1(dba, "DO $$ BEGIN CREATE ROLE cgt_unmapped LOGIN IN ROLE coregroup_app; "
                         "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"));
    snprintf(udsn, sizeof(udsn), "%s user=cgt_unmapped", dsn);
    c = cgt_connect(udsn);
    affects(c, "SELECT coalesce(group_id, 'not mapped') FROM cg_session_login()", "not mapped");
    for (i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", tables[i]);
        affects(c, sql, "0");
    }
    /* whatever group it names */
    affects(c, "SELECT set_config('coregroup.group', 'um-a', false)", "um-a");
    affects(c, "SELECT count(*) FROM resources", "0");
    affects(c, "UPDATE resource_parts SET body = '{}'", "0");
    refused(c, "INSERT INTO core_groups (group_id) VALUES ('um-a')", "42501");
    refused(c, "INSERT INTO core_groups (group_id) VALUES ('um-new')", "42501");
    refused(c, "SELECT cg_session_advertise('um-a', 'um-core', 1)", "42501");
    refused(c, "SELECT cg_outbox_prune('um-a', 0, 10)", "42501");
    PQfinish(c);
    cgt_expect_query(dba, "SELECT count(*) FROM core_groups WHERE group_id = 'um-new'", "0");
    cg_core_close(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("isolation");
    TCase *tc = tcase_create("groups");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, groups_do_not_see_each_other);
    tcase_add_test(tc, a_hostile_login_of_one_group_touches_nothing_of_another);
    tcase_add_test(tc, an_unmapped_member_of_coregroup_app_sees_nothing);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
