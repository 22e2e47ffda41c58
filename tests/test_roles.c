/*
 * test_roles.c — the two roles of a repository (migration 0005, README "Security: groups and
 * roles"): the DBA's role owns the schema and writes the map of logins to groups; a core's
 * login (a member of coregroup_app mapped to one group) holds only what the library does.
 *  - ownership: every table, sequence, view and function of the schema belongs to the role
 *    that ran the migrations, and no owner is a member of coregroup_app;
 *  - least privilege: coregroup_app's privileges, table by table and column by column, are
 *    exactly the library's statements' (schema/repo.c), EXECUTE only on what it calls, and a
 *    login created by map-role has no attribute beyond LOGIN;
 *  - the core role cannot DDL, cannot write the map, cannot reach the DBA's functions;
 *  - cg-migrate map-role / unmap-role / roles end to end: create, idempotent, move, list,
 *    unmap; bad names (exit 4), unsuitable roles (exit 5), bad usage (exit 2); two runs at once;
 *  - the library refuses to start a core whose login is mapped to another group or to none,
 *    naming the login, both groups and the DBA's command; coregroupd exits with that error;
 *  - through the request API, a core of group A asked for a handle of group B: not-found.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bustest.h"

static char *dsn; /* the suite's database, as the superuser that ran the migrations (the DBA) */
static PGconn *dba;

static void setup(void)
{
    dsn = cgt_createdb("roles", 1);
    dba = cgt_connect(dsn);
}

static void teardown(void)
{
    PQfinish(dba);
    free(dsn);
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

/* Run cg-migrate with `args` against the suite's database; *rc its exit status. */
static char *migrate(int *rc, const char *args)
{
    return cgt_run(rc, "'%s' -d '%s' %s", cgt_bin("cg-migrate"), dsn, args);
}

/* ---- ownership and privileges ---------------------------------------------------------- */

START_TEST(the_dba_owns_every_table_and_function)
{
    /* the owner of everything in the schema is the role that ran cg-migrate (current_user) */
    cgt_expect_query(
        dba,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relowner <> (SELECT oid FROM pg_roles WHERE "
        "rolname = current_user)",
        "0");
    cgt_expect_query(dba,
                     "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                     "WHERE n.nspname = 'public' AND p.proowner <> (SELECT oid FROM pg_roles WHERE "
                     "rolname = current_user)",
                     "0");
    /* ... and it is everything: the tables and functions the migrations make */
    cgt_expect_query(dba,
                     "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class c "
                     "JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = 'public' AND c.relkind = 'r'",
                     "core_groups,core_sessions,cores,group_logins,invalidations,name_bindings,"
                     "resource_parts,resources,schema_migrations,service_versions");
    cgt_expect_query(dba,
                     "SELECT string_agg(proname, ',' ORDER BY proname) FROM pg_proc p "
                     "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
                     "cg_end_fenced_sessions,cg_fence_check,cg_map_role,cg_outbox_append,"
                     "cg_outbox_prune,cg_session_advertise,cg_session_login,cg_unmap_role,"
                     "core_groups_make_root");
    /* the SECURITY DEFINER functions run as that owner, and it is no core */
    cgt_expect_query(dba,
                     "SELECT string_agg(proname, ',' ORDER BY proname) FROM pg_proc p "
                     "JOIN pg_namespace n ON n.oid = p.pronamespace "
                     "WHERE n.nspname = 'public' AND p.prosecdef",
                     "cg_end_fenced_sessions,cg_session_advertise,cg_session_login");
    cgt_expect_query(
        dba,
        "SELECT count(*) || '|' || pg_has_role('coregroup_app', current_user, "
        "'MEMBER')::text FROM pg_auth_members m WHERE m.roleid = 'coregroup_app'::regrole "
        "AND m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
        "0|false");
    /* every table of the model is under row-level security, not forced on the owner */
    cgt_expect_query(dba,
                     "SELECT string_agg(relname || ':' || relrowsecurity::text || "
                     "relforcerowsecurity::text, ',' "
                     "ORDER BY relname) FROM pg_class c JOIN pg_namespace n "
                     "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
                     "AND relname <> 'schema_migrations'",
                     "core_groups:truefalse,core_sessions:truefalse,cores:truefalse,"
                     "group_logins:truefalse,invalidations:truefalse,name_bindings:truefalse,"
                     "resource_parts:truefalse,resources:truefalse,service_versions:truefalse");
}
END_TEST

START_TEST(the_core_role_holds_only_what_the_library_does)
{
    /* per table: the table-level privileges of coregroup_app, then the columns it may update */
    cgt_expect_query(
        dba,
        "SELECT string_agg(t || ':' || concat_ws('',"
        "  CASE WHEN has_table_privilege('coregroup_app', t, 'SELECT') THEN 'S' END,"
        "  CASE WHEN has_table_privilege('coregroup_app', t, 'INSERT') THEN 'I' END,"
        "  CASE WHEN has_table_privilege('coregroup_app', t, 'UPDATE') THEN 'U' END,"
        "  CASE WHEN has_table_privilege('coregroup_app', t, 'DELETE') THEN 'D' END,"
        "  CASE WHEN has_table_privilege('coregroup_app', t, 'TRUNCATE') THEN 'T' END,"
        "  CASE WHEN has_table_privilege('coregroup_app', t, 'REFERENCES') THEN 'R' END,"
        "  CASE WHEN has_table_privilege('coregroup_app', t, 'TRIGGER') THEN 'G' END) || '(' ||"
        "  coalesce((SELECT string_agg(attname, ' ' ORDER BY attnum) FROM pg_attribute "
        "   WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped "
        "   AND has_column_privilege('coregroup_app', t::regclass, attnum, 'UPDATE')), '') "
        "  || ')', ' ' ORDER BY t) "
        "FROM unnest(ARRAY['core_groups', 'cores', 'resources', 'resource_parts', "
        "'name_bindings', 'invalidations', 'core_sessions', 'group_logins', "
        "'schema_migrations', 'service_versions']) t",
        "core_groups:SI(event_seq) "
        "core_sessions:S() "
        "cores:SI(incarnation host pid started_at heartbeat_at applied_seq state "
        "wire2_incarnation) "
        "group_logins:S() "
        "invalidations:SID() "
        "name_bindings:SID() "
        "resource_parts:SI(version body) "
        "resources:SID(names_version) "
        "schema_migrations:() "
        "service_versions:SI(version)");
    cgt_expect_query(
        dba,
        "SELECT has_sequence_privilege('coregroup_app', 'resource_handle_seq', 'USAGE')"
        "::text || '|' || has_sequence_privilege('coregroup_app', "
        "'resource_handle_seq', 'UPDATE')::text || '|' || has_schema_privilege("
        "'coregroup_app', 'public', 'CREATE')::text || '|' || has_schema_privilege("
        "'public', 'public', 'CREATE')::text",
        "true|false|false|false");
    /* EXECUTE: the functions the library calls, for coregroup_app and not for everyone; the
     * DBA's two for nobody but the owner */
    cgt_expect_query(dba,
                     "SELECT string_agg(proname || ':' || has_function_privilege('coregroup_app', "
                     "p.oid, 'EXECUTE')::text || '/' || has_function_privilege('cg_password', "
                     "p.oid, 'EXECUTE')::text, ' ' ORDER BY proname) FROM pg_proc p "
                     "JOIN pg_namespace n ON n.oid = p.pronamespace "
                     "WHERE n.nspname = 'public' AND proname LIKE 'cg\\_%'",
                     "cg_end_fenced_sessions:true/false cg_fence_check:true/false "
                     "cg_map_role:false/false cg_outbox_append:true/false "
                     "cg_outbox_prune:true/false cg_session_advertise:true/false "
                     "cg_session_login:true/true cg_unmap_role:false/false");
    /* a login made by map-role: LOGIN and membership of coregroup_app, nothing else, and no
     * password until the DBA sets one */
    cgt_group_login(dsn, "rl-attr", 1);
    cgt_expect_query(dba,
                     "SELECT rolcanlogin::text || rolsuper::text || rolbypassrls::text || "
                     "rolcreaterole::text || rolcreatedb::text || rolreplication::text || '|' || "
                     "(rolpassword IS NULL)::text || '|' || "
                     "pg_has_role(rolname, 'coregroup_app', 'MEMBER')::text || '|' || "
                     "pg_has_role(rolname, 'pg_signal_backend', 'MEMBER')::text "
                     "FROM pg_authid WHERE rolname = 'cgt_rl-attr'",
                     "truefalsefalsefalsefalsefalse|true|true|false");
}
END_TEST

START_TEST(the_core_role_cannot_ddl_or_write_the_map)
{
    char *cdsn = cgt_core_dsn(dsn, "rl-ddl");
    PGconn *c = cgt_connect(cdsn);

    refused(c, "CREATE TABLE mine (x int)", "42501");
    refused(c, "CREATE VIEW mine AS SELECT 1", "42501");
    refused(c, "CREATE FUNCTION mine() RETURNS int LANGUAGE sql AS 'SELECT 1'", "42501");
    refused(c, "CREATE INDEX ON resources (created_at)", "42501");
    refused(c, "ALTER TABLE resources ADD COLUMN x int", "42501");
    refused(c, "ALTER TABLE cores NO FORCE ROW LEVEL SECURITY", "42501");
    refused(c, "ALTER POLICY group_fence ON resources USING (true)", "42501");
    refused(c, "CREATE POLICY mine ON resources USING (true)", "42501");
    refused(c, "DROP TABLE invalidations", "42501");
    refused(c, "DROP FUNCTION cg_session_login()", "42501");
    refused(c,
            "CREATE OR REPLACE FUNCTION cg_session_login(OUT login name, OUT group_id text, "
            "OUT privileged boolean) LANGUAGE sql AS $$SELECT session_user, 'x'::text, true$$",
            "42501");
    refused(c, "GRANT SELECT ON schema_migrations TO coregroup_app", "42501");
    refused(c, "CREATE ROLE mine LOGIN", "42501");
    refused(c, "ALTER ROLE coregroup_app BYPASSRLS", "42501");
    /* the map: read its own row, write nothing */
    free(cgt_query1(c, "SELECT count(*) FROM group_logins"));
    refused(c, "INSERT INTO group_logins (role_name, group_id) VALUES ('x', 'rl-ddl')", "42501");
    refused(c, "UPDATE group_logins SET group_id = 'other'", "42501");
    refused(c, "DELETE FROM group_logins", "42501");
    refused(c, "SELECT cg_map_role('cgt_rl-ddl', 'other')", "42501");
    refused(c, "SELECT cg_unmap_role('cgt_rl-ddl')", "42501");
    PQfinish(c);
    cgt_expect_query(dba, "SELECT group_id FROM group_logins WHERE role_name = 'cgt_rl-ddl'",
                     "rl-ddl");
    free(cdsn);
}
END_TEST

/* ---- cg-migrate map-role, unmap-role, roles -------------------------------------------- */

START_TEST(map_role_creates_maps_moves_and_unmaps)
{
    int rc;
    char *out;

    out = migrate(&rc, "map-role cgt_rl_cli rl-cli");
    ck_assert_msg(rc == 0 && strstr(out, "created the login role \"cgt_rl_cli\"") &&
                      strstr(out, "no password yet") &&
                      strstr(out, "role \"cgt_rl_cli\" mapped to group \"rl-cli\""),
                  "%s", out);
    free(out);
    cgt_expect_query(dba,
                     "SELECT r.rolcanlogin::text || '|' || pg_has_role(r.oid, 'coregroup_app', "
                     "'MEMBER')::text || '|' || l.group_id FROM pg_roles r JOIN group_logins l "
                     "ON l.role_name = r.rolname WHERE r.rolname = 'cgt_rl_cli'",
                     "true|true|rl-cli");
    /* again: nothing changes */
    out = migrate(&rc, "map-role cgt_rl_cli rl-cli");
    ck_assert_msg(rc == 0 && strstr(out, "already mapped to group \"rl-cli\"") &&
                      !strstr(out, "created"),
                  "%s", out);
    free(out);
    /* an existing role, not yet a member: it becomes one */
    free(cgt_query1(dba, "DO $$ BEGIN CREATE ROLE cgt_rl_existing LOGIN; EXCEPTION WHEN "
                         "duplicate_object OR unique_violation THEN NULL; END $$"));
    out = migrate(&rc, "-q map-role cgt_rl_existing rl-cli");
    ck_assert_msg(rc == 0 && out[0] == '\0', "%s", out); /* -q: silent */
    free(out);
    cgt_expect_query(dba, "SELECT pg_has_role('cgt_rl_existing', 'coregroup_app', 'MEMBER')", "t");
    /* moved to another group */
    out = migrate(&rc, "map-role cgt_rl_cli rl-cli2");
    ck_assert_msg(rc == 0 && strstr(out, "moved from group rl-cli to group \"rl-cli2\"") &&
                      strstr(out, "restart them"),
                  "%s", out);
    free(out);
    out = migrate(&rc, "roles");
    ck_assert_msg(rc == 0 && strstr(out, "cgt_rl_cli ") && strstr(out, "rl-cli2 ") &&
                      strstr(out, "cgt_rl_existing ") && strstr(out, "mapped role"),
                  "%s", out);
    free(out);
    /* a NOLOGIN role can be mapped, with a warning: its sessions could never exist */
    free(cgt_query1(dba, "DO $$ BEGIN CREATE ROLE cgt_rl_nologin NOLOGIN; EXCEPTION WHEN "
                         "duplicate_object OR unique_violation THEN NULL; END $$"));
    out = migrate(&rc, "map-role cgt_rl_nologin rl-cli");
    ck_assert_msg(rc == 0 && strstr(out, "warning: role \"cgt_rl_nologin\" cannot log in"), "%s",
                  out);
    free(out);
    /* unmap: the mapping goes, the role stays; twice is fine */
    out = migrate(&rc, "unmap-role cgt_rl_cli");
    ck_assert_msg(rc == 0 && strstr(out, "no longer mapped (it was of group \"rl-cli2\")"), "%s",
                  out);
    free(out);
    out = migrate(&rc, "unmap-role cgt_rl_cli");
    ck_assert_msg(rc == 0 && strstr(out, "was not mapped"), "%s", out);
    free(out);
    cgt_expect_query(dba,
                     "SELECT count(*) || '|' || (SELECT count(*) FROM pg_roles WHERE rolname = "
                     "'cgt_rl_cli') FROM group_logins WHERE role_name = 'cgt_rl_cli'",
                     "0|1");
}
END_TEST

START_TEST(map_role_refuses_bad_input_with_distinct_codes)
{
    static const struct {
        const char *args, *says;
        int rc;
    } cases[] = {
        {"map-role pg_mine rl-bad", "role \"pg_mine\" cannot be a group's login", 4},
        {"map-role 1role rl-bad", "role \"1role\" cannot be a group's login", 4},
        {"map-role 'a role' rl-bad", "role \"a role\" cannot be a group's login", 4},
        {"map-role public rl-bad", "role \"public\" cannot be a group's login", 4},
        {"map-role coregroup_app rl-bad", "role \"coregroup_app\"", 4},
        {"map-role "
         "r123456789012345678901234567890123456789012345678901234567890123 rl-bad",
         "cannot be a group's login", 4},
        {"map-role cgt_rl_bad ''", "the group is empty", 4},
        {"map-role cgt_rl_bad 'a group'", "group \"a group\" is not a valid group id", 4},
        {"map-role cgt_rl_bad .hidden", "group \".hidden\" is not a valid group id", 4},
        {"unmap-role 'x;drop'", "role \"x;drop\" cannot be a group's login", 4},
        {"map-role postgres rl-bad", "row-level security does not apply to it (a superuser)", 5},
        {"map-role cgt_rl_bypass rl-bad", "(it has BYPASSRLS)", 5},
        {"map-role cgt_rl_bad", "map-role takes ROLE GROUP (got 1 argument)", 2},
        {"map-role a b c", "map-role takes ROLE GROUP (got 3 arguments)", 2},
        {"unmap-role", "unmap-role takes ROLE (got 0 arguments)", 2},
        {"roles extra", "roles takes no arguments", 2},
        {"map-rol cgt_rl_bad rl-bad", "unknown command \"map-rol\"", 2},
    };
    size_t i;
    int rc;
    char *out;

    free(cgt_query1(dba, "DO $$ BEGIN CREATE ROLE cgt_rl_bypass LOGIN BYPASSRLS; EXCEPTION WHEN "
                         "duplicate_object OR unique_violation THEN NULL; END $$"));
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        out = migrate(&rc, cases[i].args);
        ck_assert_msg(rc == cases[i].rc && strstr(out, cases[i].says) &&
                          strstr(out, "cg-migrate: error:"),
                      "cg-migrate %s: exit %d (want %d): %s", cases[i].args, rc, cases[i].rc, out);
        free(out);
    }
    /* nothing was mapped or created by any of them */
    cgt_expect_query(dba, "SELECT count(*) FROM group_logins WHERE group_id LIKE 'rl-bad%'", "0");
    cgt_expect_query(
        dba, "SELECT count(*) FROM pg_roles WHERE rolname IN ('cgt_rl_bad', 'pg_mine')", "0");
    /* the schema's function says the same to a DBA at psql */
    refused(dba, "SELECT cg_map_role('pg_mine', 'rl-bad')", "CGR01");
    refused(dba, "SELECT cg_map_role('cgt_rl_bad', '')", "CGR01");
    refused(dba, "SELECT cg_map_role('postgres', 'rl-bad')", "CGR02");
    /* the help names the commands and every exit status */
    out = cgt_run(&rc, "'%s' --help", cgt_bin("cg-migrate"));
    ck_assert_msg(rc == 0 && strstr(out, "map-role ROLE GROUP") && strstr(out, "unmap-role ROLE") &&
                      strstr(out, "4 a bad role or group name") &&
                      strstr(out, "5 a role that cannot be a group's login"),
                  "%s", out);
    free(out);
}
END_TEST

START_TEST(two_map_role_runs_at_once_both_succeed)
{
    int rc;
    char *out = cgt_run(&rc,
                        "'%1$s' -q -d '%2$s' map-role cgt_rl_race rl-race & "
                        "'%1$s' -q -d '%2$s' map-role cgt_rl_race rl-race; r=$?; wait $!; "
                        "echo \"rc=$r,$?\"",
                        cgt_bin("cg-migrate"), dsn);
    ck_assert_msg(strstr(out, "rc=0,0"), "%s", out);
    free(out);
    cgt_expect_query(dba, "SELECT group_id FROM group_logins WHERE role_name = 'cgt_rl_race'",
                     "rl-race");
}
END_TEST

/* ---- a core's start ------------------------------------------------------------------- */

START_TEST(a_core_of_another_groups_login_refuses_to_start)
{
    cg_config *cfg = cgt_core_config(dsn, "rl-core", "rl-b");
    const char *login_a = cgt_group_login(dsn, "rl-a", 1);
    char buf[1200], *dir = cgt_tmpdir(), ini[600], text[2048], *out;
    cg_core *core = NULL;
    int rc, port;

    /* the library: mapped to another group */
    snprintf(buf, sizeof(buf), "%s user=%s", dsn, login_a);
    ck_assert_int_eq(cg_config_set_string(&cfg->dsn, buf), 0);
    cfg->retry_attempts = 0;
    CGT_EXPECT(CG_EINVALID, cg_core_open_config(&core, cfg));
    ck_assert_ptr_null(core);
    ck_assert_str_eq(cg_error_last()->sqlstate, "42501");
    ck_assert_msg(strstr(cg_error_last()->message,
                         "login \"cgt_rl-a\" is mapped to group \"rl-a\", not \"rl-b\"") &&
                      strstr(cg_error_last()->message, "cg-migrate map-role ROLE rl-b"),
                  "%s", cg_error_last()->message);
    /* not mapped at all */
    free(cgt_query1(dba, "DO $$ BEGIN CREATE ROLE cgt_rl_unmapped LOGIN IN ROLE coregroup_app; "
                         "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"));
    snprintf(buf, sizeof(buf), "%s user=cgt_rl_unmapped", dsn);
    ck_assert_int_eq(cg_config_set_string(&cfg->dsn, buf), 0);
    CGT_EXPECT(CG_EINVALID, cg_core_open_config(&core, cfg));
    ck_assert_msg(
        strstr(cg_error_last()->message, "login \"cgt_rl_unmapped\" is not mapped to a group") &&
            strstr(cg_error_last()->message, "this core's is \"rl-b\"") &&
            strstr(cg_error_last()->message, "cg-migrate map-role cgt_rl_unmapped rl-b"),
        "%s", cg_error_last()->message);
    cg_config_free(cfg);
    /* nothing of the refused core reached the repository */
    cgt_expect_query(dba, "SELECT count(*) FROM cores WHERE core_name = 'rl-core'", "0");

    /* coregroupd, configured for rl-b and logged in as rl-a's role, exits with the error */
    bt_free_ports(&port, 1);
    snprintf(ini, sizeof(ini), "%s/rl-core.ini", dir);
    snprintf(text, sizeof(text),
             "[repository]\ndsn = %s user=%s\n[core]\nname = rl-core\ngroup = rl-b\n"
             "[retry]\nattempts = 1\ninterval_ms = 100\n"
             "[daemon]\nlisten = tcp://127.0.0.1:%d\n",
             dsn, login_a, port);
    cgt_write_file(ini, text);
    out = cgt_run(&rc, "timeout 60 '%s' -c '%s'", cgt_bin("coregroupd"), ini);
    /* exit 2, bad configuration; the log line quotes the message (\" for ") */
    ck_assert_msg(rc == 2 && strstr(out, "event=bad-config") && strstr(out, "cgt_rl-a") &&
                      strstr(out, "is mapped to group") &&
                      strstr(out, "cg-migrate map-role ROLE rl-b"),
                  "coregroupd exit %d: %s", rc, out);
    free(out);
    cgt_expect_query(dba, "SELECT count(*) FROM cores WHERE core_name = 'rl-core'", "0");
    free(dir);
}
END_TEST

START_TEST(a_core_asked_for_another_groups_handle_answers_not_found)
{
    cg_core *b = cgt_core_open(dsn, "rl-api-b", "rl-api-b");
    char *dir = cgt_tmpdir(), ini[600], log[600], text[2048], *out, *cdsn;
    char *argv[] = {(char *)cgt_bin("coregroupd"), "-c", ini, NULL};
    int64_t hb = cgt_create(b), until;
    pid_t pid;
    int rc, port;

    /* coregroupd of group rl-api-a, as its own login */
    cdsn = cgt_core_dsn(dsn, "rl-api-a");
    bt_free_ports(&port, 1);
    snprintf(ini, sizeof(ini), "%s/rl-api-a.ini", dir);
    snprintf(log, sizeof(log), "%s/rl-api-a.log", dir);
    snprintf(text, sizeof(text),
             "[repository]\ndsn = %s\n[core]\nname = rl-api-a\ngroup = rl-api-a\n"
             "[daemon]\nlisten = tcp://127.0.0.1:%d\n",
             cdsn, port);
    cgt_write_file(ini, text);
    pid = bt_spawn(argv, log, NULL);
    for (until = bt_ms() + 20000;;) {
        char *l = bt_slurp(log);
        int up = bt_count(l, "event=started") > 0;
        if (!up && (bt_wait(pid, 0) >= 0 || bt_ms() > until))
            ck_abort_msg("coregroupd rl-api-a did not start:\n%s", l);
        free(l);
        if (up)
            break;
        usleep(10000);
    }
    /* B's handle, asked of A: not found (cgctl: exit 1, the daemon's error) */
    out = cgt_run(&rc, "'%s' -c '%s' get %" PRId64 " state", cgt_bin("cgctl"), ini, hb);
    ck_assert_msg(rc == 1 && strstr(out, "not-found"), "cgctl get: exit %d: %s", rc, out);
    free(out);
    /* and B's own core serves it */
    ck_assert_int_eq(cgt_read_version(b, hb), 1);
    bt_stop(pid, SIGTERM, 0);
    cg_core_close(b);
    free(cdsn);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("roles");
    TCase *tc;

    tc = tcase_create("privileges");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, the_dba_owns_every_table_and_function);
    tcase_add_test(tc, the_core_role_holds_only_what_the_library_does);
    tcase_add_test(tc, the_core_role_cannot_ddl_or_write_the_map);
    suite_add_tcase(s, tc);

    tc = tcase_create("map_role");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, map_role_creates_maps_moves_and_unmaps);
    tcase_add_test(tc, map_role_refuses_bad_input_with_distinct_codes);
    tcase_add_test(tc, two_map_role_runs_at_once_both_succeed);
    suite_add_tcase(s, tc);

    tc = tcase_create("core_start");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_core_of_another_groups_login_refuses_to_start);
    tcase_add_test(tc, a_core_asked_for_another_groups_handle_answers_not_found);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
