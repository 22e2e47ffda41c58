/*
 * test_migrate.c — the DBA's side against a real PostgreSQL: cg-migrate status/up/down/verify,
 * migrations equal schema/schema.sql, down-then-up round trips, a failing migration leaves
 * the previous version, concurrent runners wait on the advisory lock, bad connections and
 * bad files get one clear line, and the schema's constraints refuse what must never be written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coregroup.h"
#include "testutil.h"

static char migrate_bin[1024], migrations[1024];

static void paths(void)
{
    snprintf(migrate_bin, sizeof(migrate_bin), "%s/cg-migrate", cgt_binary_dir());
    snprintf(migrations, sizeof(migrations), "%s/migrations", cgt_source_dir());
}

/* Run cg-migrate with `args` against `dsn` and `dir`; returns output, *rc the exit code. */
static char *migrate(int *rc, const char *dsn, const char *dir, const char *args)
{
    return cgt_run(rc, "'%s' -m '%s' -d '%s' %s", migrate_bin, dir, dsn, args);
}

/* The schema of a database as pg_dump prints it, without the random \restrict keys that
 * recent pg_dump releases put around the dump. */
static char *dump(const char *dsn)
{
    int rc;
    char *out = cgt_run(&rc,
                        "'%s/pg_dump' --schema-only --no-owner --no-privileges -d '%s' | "
                        "grep -v '^\\\\\\(un\\)\\{0,1\\}restrict '",
                        cgt_env("CG_TEST_PGBIN"), dsn);
    ck_assert_msg(rc == 0 && strstr(out, "PostgreSQL database dump complete"), "pg_dump: %s", out);
    return out;
}

static char *copy_migrations(void)
{
    int rc;
    char *dir = cgt_tmpdir();
    free(cgt_run(&rc, "cp '%s'/*.sql '%s'/", migrations, dir));
    ck_assert_int_eq(rc, 0);
    return dir;
}

/* The versions of the shipped migrations, ascending; returns how many. */
static int shipped_versions(int *out, int max)
{
    int rc, n = 0;
    char *list =
             cgt_run(&rc, "ls '%s' | sed -n 's/^\\([0-9]\\{4\\}\\)_.*\\.up\\.sql$/\\1/p' | sort",
                     migrations),
         *p = list;
    ck_assert_int_eq(rc, 0);
    while (n < max && *p) {
        out[n++] = atoi(p);
        p = strchr(p, '\n');
        if (p == NULL)
            break;
        p++;
    }
    free(list);
    return n;
}

/* "N:64", "N/N" and the newest version, for N shipped migrations */
static int shipped_count(void)
{
    int v[64];
    return shipped_versions(v, 64);
}

static int shipped_newest(void)
{
    int v[64], n = shipped_versions(v, 64);
    return n > 0 ? v[n - 1] : 0;
}

START_TEST(help_and_usage)
{
    int rc;
    char *out = cgt_run(&rc, "'%s' --help", migrate_bin);
    ck_assert_int_eq(rc, 0);
    ck_assert(strstr(out, "Usage: cg-migrate") && strstr(out, "verify") && strstr(out, "Exit"));
    free(out);
    out = cgt_run(&rc, "'%s' frobnicate", migrate_bin);
    ck_assert_int_eq(rc, 2);
    ck_assert(strstr(out, "unknown command \"frobnicate\""));
    free(out);
    out = cgt_run(&rc, "'%s' down", migrate_bin);
    ck_assert_int_eq(rc, 2);
    ck_assert(strstr(out, "down needs a TARGET"));
    free(out);
}
END_TEST

START_TEST(status_up_status)
{
    int rc;
    char *dsn = cgt_createdb("mig", 0), *out;
    PGconn *c;

    out = migrate(&rc, dsn, migrations, "status");
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(out, "0001     initial") && strstr(out, "pending"), "%s", out);
    ck_assert(strstr(out, "current version 0000"));
    free(out);

    out = migrate(&rc, dsn, migrations, "up");
    ck_assert_msg(rc == 0, "%s", out);
    ck_assert_msg(strstr(out, "applied 0001_initial in"), "%s", out);
    free(out);

    out = migrate(&rc, dsn, migrations, "status");
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(out, "applied") && strstr(out, "0 pending"), "%s", out);
    free(out);

    /* up again is a no-op */
    out = migrate(&rc, dsn, migrations, "up");
    ck_assert_int_eq(rc, 0);
    ck_assert(strstr(out, "applying") == NULL);
    free(out);

    c = cgt_connect(dsn);
    out = cgt_query1(c, "SELECT count(*) || ':' || min(length(checksum)) FROM schema_migrations");
    {
        char want[32];
        snprintf(want, sizeof(want), "%d:64", shipped_count());
        ck_assert_str_eq(out, want);
    }
    free(out);
    PQfinish(c);
    free(dsn);
}
END_TEST

START_TEST(migrations_equal_schema_file)
{
    int rc;
    char *a = cgt_createdb("viamig", 0), *b = cgt_createdb("viafile", 0), *out, *da, *db;

    free(migrate(&rc, a, migrations, "-q up"));
    ck_assert_int_eq(rc, 0);
    out = cgt_run(&rc, "'%s/psql' -X -q -v ON_ERROR_STOP=1 -d '%s' -f '%s/schema/schema.sql'",
                  cgt_env("CG_TEST_PGBIN"), b, cgt_source_dir());
    ck_assert_msg(rc == 0, "schema.sql does not apply: %s", out);
    free(out);
    da = dump(a);
    db = dump(b);
    ck_assert_msg(strstr(da, "CREATE TABLE public.resource_parts") != NULL, "%s", da);
    ck_assert_msg(strcmp(da, db) == 0,
                  "schema/schema.sql differs from the migrations; diff the pg_dump of both");
    free(da);
    free(db);
    free(a);
    free(b);
}
END_TEST

START_TEST(down_then_up_round_trips)
{
    /* Up one migration at a time, remembering each schema; then down one at a time, checking
     * that each step back gives exactly the schema of the step before; then up again. */
    int rc, versions[64], n = shipped_versions(versions, 64), i;
    char *dsn = cgt_createdb("round", 0), *out, *schemas[65], *again, args[32];

    ck_assert_int_ge(n, 2);
    schemas[0] = dump(dsn);
    for (i = 0; i < n; i++) {
        snprintf(args, sizeof(args), "-q up %d", versions[i]);
        free(migrate(&rc, dsn, migrations, args));
        ck_assert_int_eq(rc, 0);
        schemas[i + 1] = dump(dsn);
        ck_assert_msg(strcmp(schemas[i + 1], schemas[i]) != 0, "migration %d changed nothing",
                      versions[i]);
    }
    for (i = n - 1; i >= 0; i--) {
        snprintf(args, sizeof(args), "down %d", i > 0 ? versions[i - 1] : 0);
        out = migrate(&rc, dsn, migrations, args);
        ck_assert_msg(rc == 0 && strstr(out, "reverted"), "%s", out);
        free(out);
        again = dump(dsn);
        ck_assert_msg(strcmp(again, schemas[i]) == 0,
                      "down from %d does not give back the schema before it:\n%s", versions[i],
                      again);
        free(again);
    }
    free(migrate(&rc, dsn, migrations, "-q up"));
    ck_assert_int_eq(rc, 0);
    again = dump(dsn);
    ck_assert_msg(strcmp(again, schemas[n]) == 0, "up after down differs from the first up");
    free(again);
    for (i = 0; i <= n; i++)
        free(schemas[i]);
    free(dsn);
}
END_TEST

START_TEST(verify_refuses_changed_file)
{
    int rc;
    char *dsn = cgt_createdb("verify", 0), *dir = copy_migrations(), *out, path[1100];
    FILE *f;

    free(migrate(&rc, dsn, dir, "-q up"));
    ck_assert_int_eq(rc, 0);
    out = migrate(&rc, dsn, dir, "verify");
    ck_assert_int_eq(rc, 0);
    free(out);

    snprintf(path, sizeof(path), "%s/0001_initial.up.sql", dir);
    f = fopen(path, "a");
    fputs("\n-- an innocent-looking edit\n", f);
    fclose(f);

    out = migrate(&rc, dsn, dir, "verify");
    ck_assert_int_eq(rc, 3);
    ck_assert_msg(strstr(out, path) && strstr(out, "changed since it was applied"), "%s", out);
    free(out);
    out = migrate(&rc, dsn, dir, "up");
    ck_assert_int_eq(rc, 3);
    free(out);
    out = migrate(&rc, dsn, dir, "down 0");
    ck_assert_int_eq(rc, 3);
    free(out);
    out = migrate(&rc, dsn, dir, "status");
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(out, "CHANGED"), "%s", out);
    free(out);

    /* an applied migration whose files vanished */
    free(cgt_run(&rc, "rm '%s'/0001_initial.*.sql", dir));
    out = migrate(&rc, dsn, dir, "verify");
    ck_assert_int_eq(rc, 3);
    ck_assert_msg(strstr(out, "0001_initial is applied but its files are missing"), "%s", out);
    free(out);
    free(dir);
    free(dsn);
}
END_TEST

START_TEST(failing_migration_keeps_previous_version)
{
    int rc;
    char *dsn = cgt_createdb("failing", 0), *dir = copy_migrations(), *out, *v, path[1100];
    PGconn *c;

    snprintf(path, sizeof(path), "%s/0099_broken.up.sql", dir);
    cgt_write_file(path, "-- creates a table, then fails\n"
                         "CREATE TABLE half_done (x int);\n"
                         "\n"
                         "INSERT INTO half_done\n"
                         "  SELECT no_such_column FROM core_groups;\n");
    snprintf(path, sizeof(path), "%s/0099_broken.down.sql", dir);
    cgt_write_file(path, "DROP TABLE half_done;\n");

    out = migrate(&rc, dsn, dir, "up");
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "0099_broken.up.sql:5: statement 2 of 2") &&
                      strstr(out, "no_such_column") && strstr(out, "SQLSTATE 42703"),
                  "%s", out);
    ck_assert_msg(strstr(out, "applied 0001_initial"), "0001 should have applied: %s", out);
    free(out);

    c = cgt_connect(dsn);
    v = cgt_query1(c, "SELECT max(version) FROM schema_migrations");
    ck_assert_int_eq(atoi(v), shipped_newest()); /* every migration before the broken one */
    free(v);
    v = cgt_query1(c, "SELECT to_regclass('half_done') IS NULL");
    ck_assert_str_eq(v, "t");
    free(v);
    PQfinish(c);
    free(dir);
    free(dsn);
}
END_TEST

START_TEST(bad_files)
{
    int rc;
    char *dsn = cgt_createdb("badfiles", 0), *dir = copy_migrations(), *out, path[1100];

    snprintf(path, sizeof(path), "%s/0099_lonely.up.sql", dir);
    cgt_write_file(path, "SELECT 1;\n");
    out = migrate(&rc, dsn, dir, "up");
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "0099_lonely.down.sql is missing"), "%s", out);
    free(out);

    snprintf(path, sizeof(path), "%s/0099_lonely.down.sql", dir);
    cgt_write_file(path, "SELECT 'unterminated;\n");
    out = migrate(&rc, dsn, dir, "up");
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "0099_lonely.down.sql:1: unterminated string"), "%s", out);
    free(out);

    free(cgt_run(&rc, "rm '%s'/0099_lonely.*", dir));
    snprintf(path, sizeof(path), "%s/3_badname.sql", dir);
    cgt_write_file(path, "SELECT 1;\n");
    out = migrate(&rc, dsn, dir, "status");
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "3_badname.sql: not a migration file name"), "%s", out);
    free(out);

    out = migrate(&rc, dsn, "/nonexistent/migrations", "status");
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "/nonexistent/migrations: cannot read"), "%s", out);
    free(out);

    /* nothing was applied by any of these */
    {
        PGconn *c = cgt_connect(dsn);
        char *v = cgt_query1(c, "SELECT to_regclass('schema_migrations') IS NULL");
        ck_assert_str_eq(v, "t");
        free(v);
        PQfinish(c);
    }
    free(dir);
    free(dsn);
}
END_TEST

START_TEST(bad_connections)
{
    int rc;
    char dsn[512], *out;

    snprintf(dsn, sizeof(dsn),
             "host=127.0.0.1 port=%s user=cg_password password=wrong dbname=postgres",
             cgt_env("CG_TEST_PGPORT"));
    out = migrate(&rc, dsn, migrations, "status");
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "cannot connect to the repository") &&
                      strstr(out, "password authentication failed"),
                  "%s", out);
    ck_assert_msg(strchr(out, '\n') == out + strlen(out) - 1, "not one line: %s", out);
    free(out);

    out = migrate(&rc, "host=127.0.0.1 port=1 dbname=x connect_timeout=2", migrations, "status");
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "cannot connect to the repository") && strstr(out, "refused"), "%s",
                  out);
    free(out);

    out = migrate(&rc, "host=127.0.0.1 port=notaport", migrations, "status");
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "cg-migrate: error:"), "%s", out);
    free(out);
}
END_TEST

START_TEST(connection_from_config_and_environment)
{
    int rc;
    char *dsn = cgt_createdb("cfgenv", 1), *dir = cgt_tmpdir(), path[1100], text[2048], *out;

    snprintf(path, sizeof(path), "%s/repository.ini", dir);
    snprintf(text, sizeof(text), "[repository]\ndsn = %s\n[core]\nname = dba\n", dsn);
    cgt_write_file(path, text);
    out = cgt_run(&rc, "'%s' -m '%s' -c '%s' status", migrate_bin, migrations, path);
    ck_assert_msg(rc == 0 && strstr(out, "0 pending"), "%s", out);
    free(out);

    cgt_write_file(path, "[repository]\ndsn = x\n[core]\nname = dba\nbogus = 1\n");
    out = cgt_run(&rc, "'%s' -m '%s' -c '%s' status", migrate_bin, migrations, path);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "repository.ini:5: [core] bogus: unknown key"), "%s", out);
    free(out);

    out = cgt_run(&rc, "PGHOST='%s' PGPORT=%s PGUSER=postgres PGDATABASE=%s '%s' -m '%s' status",
                  cgt_env("CG_TEST_PGHOST"), cgt_env("CG_TEST_PGPORT"), strrchr(dsn, '=') + 1,
                  migrate_bin, migrations);
    ck_assert_msg(rc == 0 && strstr(out, "0 pending"), "%s", out);
    free(out);
    free(dir);
    free(dsn);
}
END_TEST

START_TEST(concurrent_runs_wait_on_the_lock)
{
    int rc, i;
    char *dsn = cgt_createdb("locked", 0), *dir = cgt_tmpdir(), *v, *out;
    PGconn *holder = cgt_connect(dsn), *c;
    char rcfile[1100], logfile[1100];

    /* Hold the runners' lock ourselves: cg-migrate must wait and apply nothing meanwhile. */
    free(cgt_query1(holder, "SELECT pg_advisory_lock(7162354939263640948)"));
    snprintf(rcfile, sizeof(rcfile), "%s/rc", dir);
    snprintf(logfile, sizeof(logfile), "%s/log", dir);
    free(cgt_run(&rc, "( '%s' -m '%s' -d '%s' up > '%s' 2>&1; echo $? > '%s' ) >/dev/null 2>&1 &",
                 migrate_bin, migrations, dsn, logfile, rcfile));
    c = cgt_connect(dsn);
    for (i = 0; i < 100; i++) { /* until it reports that it waits */
        out = cgt_run(&rc, "cat '%s'", logfile);
        if (strstr(out, "waiting-for-lock")) {
            free(out);
            break;
        }
        free(out);
        usleep(50000);
    }
    ck_assert_msg(i < 100, "cg-migrate never said it was waiting");
    usleep(300000);
    v = cgt_query1(c, "SELECT to_regclass('schema_migrations') IS NULL");
    ck_assert_str_eq(v, "t"); /* nothing applied while we hold the lock */
    free(v);
    ck_assert_int_ne(access(rcfile, F_OK), 0);

    free(cgt_query1(holder, "SELECT pg_advisory_unlock(7162354939263640948)"));
    for (i = 0; i < 600 && access(rcfile, F_OK) != 0; i++)
        usleep(50000);
    usleep(50000);
    out = cgt_run(&rc, "cat '%s'", rcfile);
    ck_assert_str_eq(out, "0\n");
    free(out);

    /* and two runners at once on a fresh database: both succeed, each migration once */
    free(dsn);
    dsn = cgt_createdb("racing", 0);
    out = cgt_run(&rc,
                  "'%s' -q -m '%s' -d '%s' up & '%s' -q -m '%s' -d '%s' up; r=$?; wait $!; "
                  "echo \"rc=$r,$?\"",
                  migrate_bin, migrations, dsn, migrate_bin, migrations, dsn);
    ck_assert_msg(strstr(out, "rc=0,0"), "%s", out);
    free(out);
    PQfinish(c);
    c = cgt_connect(dsn);
    v = cgt_query1(c, "SELECT count(*) || '/' || count(DISTINCT version) FROM schema_migrations");
    {
        char want[32];
        snprintf(want, sizeof(want), "%d/%d", shipped_count(), shipped_count());
        ck_assert_str_eq(v, want);
    }
    free(v);
    PQfinish(c);
    PQfinish(holder);
    free(dir);
    free(dsn);
}
END_TEST

/* Run `sql` and expect it to fail with SQLSTATE `state`. */
static void refused(PGconn *c, const char *sql, const char *state)
{
    PGresult *r = PQexec(c, sql);
    const char *got = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    ck_assert_msg(PQresultStatus(r) == PGRES_FATAL_ERROR && got && strcmp(got, state) == 0,
                  "%s: expected SQLSTATE %s, got %s (%s)", sql, state, got ? got : "success",
                  PQerrorMessage(c));
    PQclear(r);
}

START_TEST(constraints_refuse_bad_rows)
{
    char *dsn = cgt_createdb("constraints", 1), *v;
    PGconn *c = cgt_connect(dsn);

    free(cgt_query1(c, "INSERT INTO core_groups (group_id) VALUES ('g1'), ('g2')"));
    v = cgt_query1(c, "SELECT string_agg(group_id || ':' || handle || ':' || kind, ',' ORDER BY "
                      "group_id) FROM resources");
    ck_assert_str_eq(v, "g1:0:folder,g2:0:folder"); /* a root folder per group */
    free(v);
    free(cgt_query1(c, "INSERT INTO resources (group_id, handle, kind) VALUES ('g1', 10, "
                       "'service'), ('g2', 20, 'service')"));
    free(cgt_query1(c, "INSERT INTO resource_parts (group_id, handle, part) VALUES ('g1', 10, "
                       "'state')"));

    refused(c, "UPDATE resource_parts SET version = -1", "23514");
    refused(c, "UPDATE resource_parts SET version = 0", "23514");
    refused(c, "INSERT INTO resource_parts (group_id, handle, part) VALUES ('g1', 10, 'colour')",
            "23514");
    refused(c, "UPDATE core_groups SET event_seq = -5", "23514");
    /* a binding in g1 to a handle of g2 */
    refused(c,
            "INSERT INTO name_bindings (group_id, folder_handle, name, target_handle) "
            "VALUES ('g1', 0, 'x', 20)",
            "23503");
    /* a binding whose folder is not a folder */
    refused(c,
            "INSERT INTO name_bindings (group_id, folder_handle, name, target_handle) "
            "VALUES ('g1', 10, 'x', 10)",
            "23503");
    refused(c,
            "INSERT INTO name_bindings (group_id, folder_handle, name, target_handle) "
            "VALUES ('g1', 0, 'a/b', 10)",
            "23514");
    refused(c, "INSERT INTO resources (group_id, handle, kind) VALUES ('g1', 0, 'folder')",
            "23505");
    refused(c, "INSERT INTO resources (group_id, handle, kind) VALUES ('g1', 0, 'service')",
            "23514");
    refused(c, "INSERT INTO resources (group_id, handle, kind) VALUES ('nosuch', 5, 'service')",
            "23503");
    refused(c, "INSERT INTO core_groups (group_id) VALUES ('bad group')", "23514");
    refused(c,
            "INSERT INTO invalidations (group_id, seq, origin_core, origin_incarnation, items) "
            "VALUES ('g1', 0, 'a', 1, '[]')",
            "23514");
    refused(c,
            "INSERT INTO invalidations (group_id, seq, origin_core, origin_incarnation, items) "
            "VALUES ('g1', 1, 'a', 1, '{}')",
            "23514");
    /* the same handle may exist in two groups */
    free(cgt_query1(c, "INSERT INTO resources (group_id, handle, kind) VALUES ('g2', 10, "
                       "'service')"));
    free(cgt_query1(c, "INSERT INTO name_bindings (group_id, folder_handle, name, target_handle) "
                       "VALUES ('g1', 0, 'svc', 10)"));
    PQfinish(c);
    free(dsn);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("migrate");
    TCase *tc;
    paths();
    tc = tcase_create("cli");
    tcase_add_test(tc, help_and_usage);
    tcase_add_test(tc, status_up_status);
    tcase_add_test(tc, connection_from_config_and_environment);
    suite_add_tcase(s, tc);
    tc = tcase_create("schema");
    tcase_add_test(tc, migrations_equal_schema_file);
    tcase_add_test(tc, down_then_up_round_trips);
    tcase_add_test(tc, constraints_refuse_bad_rows);
    suite_add_tcase(s, tc);
    tc = tcase_create("safety");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, verify_refuses_changed_file);
    tcase_add_test(tc, failing_migration_keeps_previous_version);
    tcase_add_test(tc, bad_files);
    tcase_add_test(tc, bad_connections);
    tcase_add_test(tc, concurrent_runs_wait_on_the_lock);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
