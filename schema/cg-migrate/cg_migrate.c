/*
 * cg-migrate — the DBA's tool: status, up, down and verify of the repository schema.
 *
 * The connection comes from --dsn, else from --config FILE ([repository] dsn), else from
 * libpq's PG* environment variables, as psql users expect. Migration files come from
 * --migrations DIR, else $CG_MIGRATIONS_DIR, else the installed directory.
 *
 * Exit status: 0 success; 1 the database or a migration failed; 2 bad usage, bad
 * configuration or bad migration files; 3 verify found an applied migration whose file
 * changed or is missing (up and down refuse to run in that case, with the same code).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coregroup.h"
#include "migrate.h"
#include "pg.h"

#ifndef CG_MIGRATIONS_DIR
#define CG_MIGRATIONS_DIR "migrations"
#endif
#ifndef CG_MIGRATIONS_RELDIR
#define CG_MIGRATIONS_RELDIR "share/coregroup/migrations"
#endif

enum { EXIT_DB = 1, EXIT_USAGE = 2, EXIT_VERIFY = 3 };

static int quiet;

/* The installed migrations: beside this program's prefix when it was moved, else the
 * prefix it was configured for. */
static const char *default_dir(void)
{
    static char dir[4096 + 64];
    char exe[4000], *slash;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    struct stat st;

    if (n > 0) {
        exe[n] = '\0';
        if ((slash = strrchr(exe, '/')) != NULL) {
            *slash = '\0';
            snprintf(dir, sizeof(dir), "%s/../%s", exe, CG_MIGRATIONS_RELDIR);
            if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
                return dir;
        }
    }
    return CG_MIGRATIONS_DIR;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: cg-migrate [OPTIONS] COMMAND [TARGET]\n"
            "Create, upgrade and check the coregroup repository schema.\n"
            "\n"
            "Commands:\n"
            "  status          list every migration: applied or pending, with checksums\n"
            "  up [TARGET]     apply pending migrations up to version TARGET (default: all)\n"
            "  down TARGET     revert applied migrations above TARGET (0 reverts everything)\n"
            "  verify          check that no applied migration's file changed or vanished\n"
            "\n"
            "Options:\n"
            "  -d, --dsn DSN           libpq connection string or URI\n"
            "  -c, --config FILE       take the connection from FILE's [repository] dsn\n"
            "  -m, --migrations DIR    migration files (default: $CG_MIGRATIONS_DIR, else\n"
            "                          %s)\n"
            "  -q, --quiet             print errors only\n"
            "  -h, --help              show this help\n"
            "  -V, --version           show the version\n"
            "\n"
            "Without --dsn or --config, libpq's PG* environment variables apply (PGHOST,\n"
            "PGPORT, PGDATABASE, PGUSER, ...), as for psql. Each migration runs in its own\n"
            "transaction; concurrent runs wait for each other on an advisory lock.\n"
            "\n"
            "Exit status: 0 success, 1 database or migration failure, 2 bad usage or files,\n"
            "3 an applied migration's file changed or is missing.\n",
            default_dir());
}

static int exit_code(int err)
{
    switch (err) {
    case 0:
        return 0;
    case CG_ECHECKSUM:
    case CG_ENOTFOUND:
        return EXIT_VERIFY;
    case CG_EINVALID:
        return cg_error_last()->klass == CG_ERRCLASS_REPOSITORY ? EXIT_DB : EXIT_USAGE;
    default:
        return EXIT_DB;
    }
}

static int fail(int err)
{
    fprintf(stderr, "cg-migrate: error: %s\n", cg_error_last()->message);
    return exit_code(err);
}

static void progress(const char *event, const cg_migration *m, long ms, void *user)
{
    (void)user;
    if (quiet)
        return;
    if (m == NULL)
        printf("cg-migrate: %s (another cg-migrate is running)\n", event);
    else if (ms == 0 && (strcmp(event, "applying") == 0 || strcmp(event, "reverting") == 0))
        printf("cg-migrate: %s %04d_%s ...\n", event, m->version, m->name);
    else
        printf("cg-migrate: %s %04d_%s in %ld ms\n", event, m->version, m->name, ms);
    fflush(stdout);
}

static void print_status(const cg_migration_set *set)
{
    size_t i;
    int current = 0, pending = 0;
    printf("%-8s %-28s %-9s %-14s %s\n", "version", "name", "state", "checksum", "applied at");
    for (i = 0; i < set->n; i++) {
        const cg_migration *m = &set->items[i];
        const char *state = !m->applied                                     ? "pending"
                            : m->up_path == NULL                            ? "MISSING"
                            : strcmp(m->checksum, m->applied_checksum) != 0 ? "CHANGED"
                                                                            : "applied";
        printf("%04d     %-28s %-9s %-14.12s %s\n", m->version, m->name, state,
               m->up_path ? m->checksum : m->applied_checksum, m->applied ? m->applied_at : "-");
        if (m->applied)
            current = m->version;
        else
            pending++;
    }
    printf("current version %04d, %d pending\n", current, pending);
}

static int parse_target(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 9999)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"dsn", required_argument, NULL, 'd'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"migrations", required_argument, NULL, 'm'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *dsn = NULL, *config = NULL, *dir = getenv("CG_MIGRATIONS_DIR");
    const char *cmd;
    cg_config *cfg = NULL;
    cg_migration_set set = {NULL, 0};
    PGconn *conn = NULL;
    int c, err = 0, target = -1, rc;

    while ((c = getopt_long(argc, argv, "d:c:m:qhV", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dsn = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'm':
            dir = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("cg-migrate %s\n", CG_VERSION);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "cg-migrate: error: no command given (status, up, down or verify)\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[optind++];
    if (strcmp(cmd, "status") && strcmp(cmd, "up") && strcmp(cmd, "down") &&
        strcmp(cmd, "verify")) {
        fprintf(stderr, "cg-migrate: error: unknown command \"%s\" (status, up, down or verify)\n",
                cmd);
        return EXIT_USAGE;
    }
    if (optind < argc) {
        if ((strcmp(cmd, "up") && strcmp(cmd, "down")) || optind + 1 < argc ||
            parse_target(argv[optind], &target) < 0) {
            fprintf(stderr, "cg-migrate: error: unexpected argument \"%s\"%s\n", argv[optind],
                    strcmp(cmd, "up") && strcmp(cmd, "down") ? ""
                                                             : " (TARGET is a version 0-9999)");
            return EXIT_USAGE;
        }
    } else if (strcmp(cmd, "down") == 0) {
        fprintf(stderr, "cg-migrate: error: down needs a TARGET version (0 reverts everything)\n");
        return EXIT_USAGE;
    }
    if (dir == NULL)
        dir = default_dir();

    if (dsn == NULL && config != NULL) {
        if ((err = cg_config_load(&cfg, config)) < 0) {
            fail(err);
            rc = EXIT_USAGE;
            goto done;
        }
        dsn = cfg->dsn;
    }
    if ((err = cg_migrations_load(&set, dir)) < 0) {
        fail(err);
        rc = EXIT_USAGE;
        goto done;
    }
    if ((err = cg_pg_connect(&conn, dsn, "cg-migrate", 10)) < 0) {
        fprintf(stderr, "cg-migrate: error: %s\n", cg_error_last()->message);
        rc = EXIT_DB;
        goto done;
    }
    /* Keep the server's NOTICEs (IF EXISTS and the like) out of the DBA's way. */
    PQclear(PQexec(conn, "SET client_min_messages = warning"));

    if (strcmp(cmd, "status") == 0) {
        if ((err = cg_migrate_state(conn, &set)) == 0)
            print_status(&set);
    } else if (strcmp(cmd, "verify") == 0) {
        if ((err = cg_migrate_state(conn, &set)) == 0 && (err = cg_migrate_verify(&set)) == 0 &&
            !quiet)
            printf("cg-migrate: verify: every applied migration matches its file\n");
    } else if (strcmp(cmd, "up") == 0) {
        if ((err = cg_migrate_up(conn, &set, target, progress, NULL)) == 0 && !quiet &&
            (err = cg_migrate_state(conn, &set)) == 0)
            print_status(&set);
    } else {
        if ((err = cg_migrate_down(conn, &set, target, progress, NULL)) == 0 && !quiet &&
            (err = cg_migrate_state(conn, &set)) == 0)
            print_status(&set);
    }
    rc = err < 0 ? fail(err) : 0;
done:
    PQfinish(conn);
    cg_migrations_dispose(&set);
    cg_config_free(cfg);
    return rc;
}
