/*
 * migrate.h — the migration runner behind cg-migrate (private to the library and its tools).
 */
#ifndef CG_MIGRATE_H
#define CG_MIGRATE_H

#include <libpq-fe.h>

#include "sqlsplit.h"

typedef struct {
    int version;   /* from the file name: 0001_name.up.sql is 1 */
    char name[64]; /* "initial" */
    char *up_path; /* as found under the migration directory; NULL if the file is gone */
    char *down_path;
    cg_sql_script up, down;
    char checksum[65]; /* sha256 (hex) of the up file, filled by cg_migrate_state() */
    int applied;       /* filled by cg_migrate_state() */
    char applied_checksum[65];
    char applied_at[40];
} cg_migration;

typedef struct {
    cg_migration *items; /* ascending by version */
    size_t n;
} cg_migration_set;

/* What the runner is doing, for progress output; `m` is NULL for lock events. */
typedef void (*cg_migrate_progress_cb)(const char *event, const cg_migration *m, long elapsed_ms,
                                       void *user);

/*
 * Read every migration file of `dir`. Files are NNNN_name.up.sql and NNNN_name.down.sql; each
 * up needs its down. Files are split into statements now, so a broken file is reported before
 * anything is applied. Other files whose name starts with a digit are errors (a typo must not
 * hide a migration); names starting otherwise (README.md) are ignored.
 * Returns 0 and fills *out (free with cg_migrations_dispose()), or CG_EINVALID / CG_ENOTFOUND /
 * CG_ERROR naming the file.
 */
int cg_migrations_load(cg_migration_set *out, const char *dir);

void cg_migrations_dispose(cg_migration_set *set);

/*
 * Read which migrations are applied and compute every file's checksum. An applied version with
 * no file is added to the set with up_path NULL. 0 or a repository error.
 */
int cg_migrate_state(PGconn *conn, cg_migration_set *set);

/*
 * After cg_migrate_state(): 0 when every applied migration's file exists and is unchanged;
 * else CG_ECHECKSUM (a changed file) or CG_ENOTFOUND (a missing file) naming the first.
 */
int cg_migrate_verify(const cg_migration_set *set);

/*
 * Apply pending migrations up to `target` (-1: all), each in its own transaction, under an
 * advisory lock so two runners never interleave. Verifies first and refuses to run when an
 * applied file changed. On a failing statement the migration's transaction is rolled back, the
 * database stays at the previous version, and the error names the file, line and statement.
 */
int cg_migrate_up(PGconn *conn, cg_migration_set *set, int target, cg_migrate_progress_cb cb,
                  void *user);

/* Revert applied migrations above `target` (0: all), newest first, each in its own transaction,
 * under the same lock, with the same guarantees as cg_migrate_up(). */
int cg_migrate_down(PGconn *conn, cg_migration_set *set, int target, cg_migrate_progress_cb cb,
                    void *user);

#endif
