/*
 * migrate.c — the DBA's migration runner: load, state, verify, up, down.
 *
 * Invariants:
 *  - One migration, one transaction: its statements and its schema_migrations row commit
 *    together or not at all, so the database is always exactly at some version.
 *  - Runners never interleave: up and down hold a session-level advisory lock (MIGRATE_LOCK)
 *    from reading the state to the last commit; a second runner waits, then sees the new state.
 *  - History is immutable: a migration's checksum (sha256 of its up file, computed by the server
 *    so no hash is hand-written here) is recorded when applied; if the file changes later, up and
 *    down refuse to run and verify names the file.
 *  - Nothing is applied out of order: a pending migration below the newest applied one is an
 *    error, not a silent gap.
 * The migration files are split into statements at load time (sqlsplit.c), so a failure names
 * the file, the line and the statement, and a malformed file is found before anything runs.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "coregroup/sys/error.h"
#include "migrate.h"
#include "pg.h"

/* pg_advisory_lock key: "cgmigrat" read as a 64-bit integer. */
#define MIGRATE_LOCK "7162354939263640948"
#define MAX_FILE     (4 << 20)

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *buf = NULL;
    int err = 0;

    *out = NULL;
    if (f == NULL)
        return cg_error_set(errno == ENOENT ? CG_ENOTFOUND : CG_ERROR, CG_ERRCLASS_MIGRATION,
                            "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || st.st_size > MAX_FILE) {
        err = cg_error_set(CG_EINVALID, CG_ERRCLASS_MIGRATION,
                           "%s: unreadable or larger than 4 MiB", path);
        goto done;
    }
    if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    *len = fread(buf, 1, (size_t)st.st_size, f);
    if (ferror(f)) {
        err = cg_error_set(CG_ERROR, CG_ERRCLASS_MIGRATION, "%s: read error: %s", path,
                           strerror(errno));
        goto done;
    }
    buf[*len] = '\0';
    *out = buf;
    buf = NULL;
done:
    free(buf);
    fclose(f);
    return err;
}

/* Parse "0001_initial.up.sql": 1 with version, name and direction (1 up, 0 down); 0 if the
 * name does not start with a digit (not a migration); -1 if it starts with one but is malformed. */
static int parse_name(const char *file, int *version, char *name, size_t namesz, int *up)
{
    size_t i, len = strlen(file), nlen;
    const char *suffix;

    if (file[0] < '0' || file[0] > '9')
        return 0;
    for (i = 0; i < 4; i++)
        if (file[i] < '0' || file[i] > '9')
            return -1;
    if (file[4] != '_')
        return -1;
    if (len > 12 && strcmp(file + len - 7, ".up.sql") == 0)
        suffix = file + len - 7, *up = 1;
    else if (len > 14 && strcmp(file + len - 9, ".down.sql") == 0)
        suffix = file + len - 9, *up = 0;
    else
        return -1;
    nlen = (size_t)(suffix - (file + 5));
    if (nlen == 0 || nlen >= namesz)
        return -1;
    for (i = 5; file + i < suffix; i++) {
        char c = file[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return -1;
    }
    *version = atoi(file);
    if (*version <= 0)
        return -1;
    memcpy(name, file + 5, nlen);
    name[nlen] = '\0';
    return 1;
}

static cg_migration *find_or_add(cg_migration_set *set, int version, const char *name, int *err)
{
    size_t i;
    cg_migration *items;
    for (i = 0; i < set->n; i++)
        if (set->items[i].version == version)
            return &set->items[i];
    if ((items = realloc(set->items, (set->n + 1) * sizeof(*items))) == NULL) {
        *err = cg_error_nomem();
        return NULL;
    }
    set->items = items;
    memset(&items[set->n], 0, sizeof(items[0]));
    items[set->n].version = version;
    snprintf(items[set->n].name, sizeof(items[0].name), "%s", name);
    return &items[set->n++];
}

static int by_version(const void *a, const void *b)
{
    const cg_migration *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

static int load_one(cg_migration_set *set, const char *dir, const char *file)
{
    char name[64], *path = NULL, *text = NULL;
    int version, up, err = 0, r;
    size_t len = 0;
    cg_migration *m;

    r = parse_name(file, &version, name, sizeof(name), &up);
    if (r == 0)
        return 0;
    if (r < 0)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_MIGRATION,
                            "%s/%s: not a migration file name (expected NNNN_name.up.sql or "
                            "NNNN_name.down.sql, name of a-z 0-9 _)",
                            dir, file);
    if ((path = malloc(strlen(dir) + strlen(file) + 2)) == NULL)
        return cg_error_nomem();
    sprintf(path, "%s/%s", dir, file);
    if ((m = find_or_add(set, version, name, &err)) == NULL)
        goto done;
    if (strcmp(m->name, name) != 0) {
        err = cg_error_set(CG_EINVALID, CG_ERRCLASS_MIGRATION,
                           "%s: version %04d is already used by \"%s\"", path, version, m->name);
        goto done;
    }
    if ((err = read_file(path, &text, &len)) < 0)
        goto done;
    if ((err = cg_sql_split(up ? &m->up : &m->down, text, len, path)) < 0)
        goto done;
    if (up)
        m->up_path = path;
    else
        m->down_path = path;
    path = NULL;
done:
    free(path);
    free(text);
    return err;
}

void cg_migrations_dispose(cg_migration_set *set)
{
    size_t i;
    if (set == NULL)
        return;
    for (i = 0; i < set->n; i++) {
        free(set->items[i].up_path);
        free(set->items[i].down_path);
        cg_sql_script_dispose(&set->items[i].up);
        cg_sql_script_dispose(&set->items[i].down);
    }
    free(set->items);
    set->items = NULL;
    set->n = 0;
}

int cg_migrations_load(cg_migration_set *out, const char *dir)
{
    DIR *d;
    struct dirent *e;
    size_t i;
    int err = 0;

    out->items = NULL;
    out->n = 0;
    if ((d = opendir(dir)) == NULL)
        return cg_error_set(errno == ENOENT ? CG_ENOTFOUND : CG_ERROR, CG_ERRCLASS_MIGRATION,
                            "%s: cannot read the migration directory: %s", dir, strerror(errno));
    while ((e = readdir(d)) != NULL)
        if ((err = load_one(out, dir, e->d_name)) < 0)
            goto done;
    if (out->n > 1)
        qsort(out->items, out->n, sizeof(out->items[0]), by_version);
    for (i = 0; i < out->n; i++) {
        cg_migration *m = &out->items[i];
        if (m->up_path == NULL || m->down_path == NULL) {
            err = cg_error_set(CG_EINVALID, CG_ERRCLASS_MIGRATION,
                               "%s/%04d_%s.%s.sql is missing (every migration needs an up and a "
                               "down file)",
                               dir, m->version, m->name, m->up_path ? "down" : "up");
            goto done;
        }
    }
done:
    closedir(d);
    if (err < 0)
        cg_migrations_dispose(out);
    return err;
}

/* sha256 of the up file's statements as the server computes it. We hash the file's bytes,
 * not the split statements, so a changed comment also counts as a change. */
static int checksum(PGconn *conn, const char *path, char out[65])
{
    char *text = NULL;
    size_t len = 0;
    PGresult *res = NULL;
    int err;
    const char *vals[1];
    int lens[1], fmts[1] = {1};

    if ((err = read_file(path, &text, &len)) < 0)
        return err;
    vals[0] = text;
    lens[0] = (int)len;
    res =
        PQexecParams(conn, "SELECT encode(sha256($1::bytea), 'hex')", 1, NULL, vals, lens, fmts, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err = cg_pg_error(conn, res, "compute a checksum");
        goto done;
    }
    snprintf(out, 65, "%s", PQgetvalue(res, 0, 0));
done:
    PQclear(res);
    free(text);
    return err;
}

int cg_migrate_state(PGconn *conn, cg_migration_set *set)
{
    PGresult *res = NULL;
    size_t i;
    int row, err = 0;

    for (i = 0; i < set->n; i++) {
        set->items[i].applied = 0;
        if (set->items[i].up_path &&
            (err = checksum(conn, set->items[i].up_path, set->items[i].checksum)) < 0)
            return err;
    }
    res = PQexec(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err = cg_pg_error(conn, res, "read the migration state");
        goto done;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        goto done; /* nothing applied yet */
    PQclear(res);
    res = PQexec(conn, "SELECT version, name, checksum, "
                       "to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC' "
                       "FROM schema_migrations ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err = cg_pg_error(conn, res, "read schema_migrations");
        goto done;
    }
    for (row = 0; row < PQntuples(res); row++) {
        cg_migration *m =
            find_or_add(set, atoi(PQgetvalue(res, row, 0)), PQgetvalue(res, row, 1), &err);
        if (m == NULL)
            goto done;
        m->applied = 1;
        snprintf(m->applied_checksum, sizeof(m->applied_checksum), "%s", PQgetvalue(res, row, 2));
        snprintf(m->applied_at, sizeof(m->applied_at), "%s", PQgetvalue(res, row, 3));
    }
    if (set->n > 1)
        qsort(set->items, set->n, sizeof(set->items[0]), by_version);
done:
    PQclear(res);
    return err;
}

int cg_migrate_verify(const cg_migration_set *set)
{
    size_t i;
    for (i = 0; i < set->n; i++) {
        const cg_migration *m = &set->items[i];
        if (!m->applied)
            continue;
        if (m->up_path == NULL)
            return cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_MIGRATION,
                                "migration %04d_%s is applied but its files are missing",
                                m->version, m->name);
        if (strcmp(m->checksum, m->applied_checksum) != 0)
            return cg_error_set(CG_ECHECKSUM, CG_ERRCLASS_MIGRATION,
                                "%s: changed since it was applied at %s (checksum then %.12s, now "
                                "%.12s); restore the file and add a new migration instead",
                                m->up_path, m->applied_at, m->applied_checksum, m->checksum);
    }
    return 0;
}

/* Wait for the runners' lock, telling the caller when another runner holds it. */
static int take_lock(PGconn *conn, cg_migrate_progress_cb cb, void *user)
{
    PGresult *res = PQexec(conn, "SELECT pg_try_advisory_lock(" MIGRATE_LOCK ")");
    int err = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err = cg_pg_error(conn, res, "take the migration lock");
        goto done;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
        goto done;
    if (cb)
        cb("waiting-for-lock", NULL, 0, user);
    PQclear(res);
    res = PQexec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK ")");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        err = cg_pg_error(conn, res, "wait for the migration lock");
done:
    PQclear(res);
    return err;
}

static void release_lock(PGconn *conn)
{
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK ")"));
}

/* Run one direction of one migration in its own transaction. */
static int run_one(PGconn *conn, cg_migration *m, int up)
{
    const cg_sql_script *script = up ? &m->up : &m->down;
    const char *path = up ? m->up_path : m->down_path;
    char ver[16];
    const char *params[3];
    PGresult *res = NULL;
    size_t i;
    int err;

    if ((err = cg_pg_exec(conn, "BEGIN")) < 0)
        return err;
    for (i = 0; i < script->n; i++) {
        const cg_sql_stmt *st = &script->stmts[i];
        res = PQexec(conn, st->sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
            const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
            char what[512], first[80];
            int line = st->line;
            size_t k;
            if (pos) { /* a 1-based character position inside the statement */
                long p = atol(pos);
                for (k = 0; (long)k < p - 1 && st->sql[k]; k++)
                    if (st->sql[k] == '\n')
                        line++;
            }
            for (k = 0; k < sizeof(first) - 4 && st->sql[k] && st->sql[k] != '\n'; k++)
                first[k] = st->sql[k];
            snprintf(first + k, sizeof(first) - k, "%s", st->sql[k] ? "..." : "");
            snprintf(what, sizeof(what), "%s:%d: statement %zu of %zu (\"%s\") failed", path, line,
                     i + 1, script->n, first);
            err = cg_pg_error(conn, res, what);
            goto fail;
        }
        PQclear(res);
        res = NULL;
    }
    snprintf(ver, sizeof(ver), "%d", m->version);
    if (!up) {
        const char *p1[1] = {ver};
        PQclear(res);
        res = PQexecParams(conn, "SELECT set_config('coregroup.migration', $1, true)", 1, NULL, p1,
                           NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            err = cg_pg_error(conn, res, "record the migration in schema_migrations");
            goto fail;
        }
        PQclear(res);
    }
    params[0] = ver;
    params[1] = m->name;
    params[2] = m->checksum;
    if (up)
        res = PQexecParams(conn,
                           "INSERT INTO schema_migrations (version, name, checksum) "
                           "VALUES ($1, $2, $3)",
                           3, NULL, params, NULL, NULL, 0);
    else /* the first migration's down drops the bookkeeping table itself */
        res = PQexecParams(conn,
                           "DO $$ BEGIN IF to_regclass('schema_migrations') IS NOT NULL THEN "
                           "DELETE FROM schema_migrations WHERE version = "
                           "current_setting('coregroup.migration')::int; END IF; END $$",
                           0, NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        err = cg_pg_error(conn, res, "record the migration in schema_migrations");
        goto fail;
    }
    PQclear(res);
    res = NULL;
    if ((err = cg_pg_exec(conn, "COMMIT")) < 0)
        return err;
    m->applied = up;
    if (up)
        memcpy(m->applied_checksum, m->checksum, sizeof(m->checksum));
    return 0;
fail:
    PQclear(res);
    PQclear(PQexec(conn, "ROLLBACK"));
    return err;
}

static int find_target(const cg_migration_set *set, int target)
{
    size_t i;
    for (i = 0; i < set->n; i++)
        if (set->items[i].version == target)
            return 0;
    return cg_error_set(CG_EINVALID, CG_ERRCLASS_MIGRATION, "no migration has version %d", target);
}

int cg_migrate_up(PGconn *conn, cg_migration_set *set, int target, cg_migrate_progress_cb cb,
                  void *user)
{
    size_t i;
    int err, newest = 0;

    if (target >= 0 && (err = find_target(set, target)) < 0)
        return err;
    if ((err = take_lock(conn, cb, user)) < 0)
        return err;
    if ((err = cg_migrate_state(conn, set)) < 0 || (err = cg_migrate_verify(set)) < 0)
        goto done;
    for (i = 0; i < set->n; i++)
        if (set->items[i].applied)
            newest = set->items[i].version;
    for (i = 0; i < set->n; i++) {
        cg_migration *m = &set->items[i];
        long t0;
        if (m->applied || (target >= 0 && m->version > target))
            continue;
        if (m->version < newest) {
            err = cg_error_set(CG_EINVALID, CG_ERRCLASS_MIGRATION,
                               "%s is pending but newer migration %04d is already applied; "
                               "refusing to apply out of order (renumber it)",
                               m->up_path, newest);
            goto done;
        }
        t0 = now_ms();
        if (cb)
            cb("applying", m, 0, user);
        if ((err = run_one(conn, m, 1)) < 0)
            goto done;
        if (cb)
            cb("applied", m, now_ms() - t0, user);
    }
done:
    release_lock(conn);
    return err;
}

int cg_migrate_down(PGconn *conn, cg_migration_set *set, int target, cg_migrate_progress_cb cb,
                    void *user)
{
    size_t i;
    int err;

    if (target < 0 || (target > 0 && (err = find_target(set, target)) < 0))
        return target < 0 ? cg_error_set(CG_EINVALID, CG_ERRCLASS_MIGRATION,
                                         "down needs a target version (0 reverts everything)")
                          : err;
    if ((err = take_lock(conn, cb, user)) < 0)
        return err;
    if ((err = cg_migrate_state(conn, set)) < 0 || (err = cg_migrate_verify(set)) < 0)
        goto done;
    for (i = set->n; i-- > 0;) {
        cg_migration *m = &set->items[i];
        long t0;
        if (!m->applied || m->version <= target)
            continue;
        t0 = now_ms();
        if (cb)
            cb("reverting", m, 0, user);
        if ((err = run_one(conn, m, 0)) < 0)
            goto done;
        if (cb)
            cb("reverted", m, now_ms() - t0, user);
    }
done:
    release_lock(conn);
    return err;
}
