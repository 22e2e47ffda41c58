/*
 * cg-migrate — the DBA's tool: status, up, down and verify of the repository schema, and the
 * map of login roles to core groups (map-role, unmap-role, roles) that row-level security
 * keys on (migration 0005).
 *
 * The connection comes from --dsn, else from --config FILE ([repository] dsn), else from
 * libpq's PG* environment variables, as psql users expect. Migration files come from
 * --migrations DIR, else $CG_MIGRATIONS_DIR, else the installed directory; the role commands
 * read none. Role and group names are checked before connecting, with the rules the schema's
 * cg_map_role() applies again (schema/logins.c).
 *
 * Exit status: 0 success; 1 the database or a migration failed; 2 bad usage, bad
 * configuration or bad migration files; 3 verify found an applied migration whose file
 * changed or is missing (up and down refuse to run in that case, with the same code); 4 a bad
 * role or group name; 5 a role that cannot be a group's login (row-level security does not
 * confine it).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coregroup.h"
#include "logins.h"
#include "migrate.h"
#include "pg.h"

#ifndef CG_MIGRATIONS_DIR
#define CG_MIGRATIONS_DIR "migrations"
#endif
#ifndef CG_MIGRATIONS_RELDIR
#define CG_MIGRATIONS_RELDIR "share/coregroup/migrations"
#endif

enum { EXIT_DB = 1, EXIT_USAGE = 2, EXIT_VERIFY = 3, EXIT_NAME = 4, EXIT_UNSUITABLE = 5 };

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
            "Usage: cg-migrate [OPTIONS] COMMAND [ARGUMENTS]\n"
            "Create, upgrade and check the coregroup repository schema, and map the cores'\n"
            "login roles to their groups.\n"
            "\n"
            "Commands:\n"
            "  status          list every migration: applied or pending, with checksums\n"
            "  up [TARGET]     apply pending migrations up to version TARGET (default: all)\n"
            "  down TARGET     revert applied migrations above TARGET (0 reverts everything)\n"
            "  verify          check that no applied migration's file changed or vanished\n"
            "  map-role ROLE GROUP\n"
            "                  let the login ROLE be a core of GROUP, and of no other group:\n"
            "                  create ROLE if missing (LOGIN, member of coregroup_app, no\n"
            "                  password), map it to GROUP (moving it from another group)\n"
            "  unmap-role ROLE remove ROLE's mapping (the role stays); it then sees nothing\n"
            "  roles           list every mapped role: group, login, member of coregroup_app\n"
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
            "Groups and roles: from migration 0005 on, a core sees and writes only the rows of\n"
            "the group its login role is mapped to, whatever it asks for; an unmapped login\n"
            "sees nothing. Run the commands above as the schema's owner (the role that ran\n"
            "the migrations; creating a role needs CREATEROLE). Map one login per group and\n"
            "give it a password or another authentication yourself: for example, run\n"
            "\"cg-migrate map-role cg_payments payments\", then \"ALTER ROLE cg_payments\n"
            "PASSWORD '...'\" in psql, and set user=cg_payments in the dsn of every core of\n"
            "group payments. ROLE is a letter or _, then up to 62 letters, digits, _, . or\n"
            "-, not starting with pg_; GROUP is a group id as in repository.ini. A superuser,\n"
            "a BYPASSRLS role or the schema's owner cannot be a group's login: row-level\n"
            "security does not apply to them. Every command is idempotent.\n"
            "\n"
            "Exit status: 0 success, 1 database or migration failure, 2 bad usage or files,\n"
            "3 an applied migration's file changed or is missing, 4 a bad role or group name,\n"
            "5 a role that cannot be a group's login.\n",
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

#define COMMANDS "status, up, down, verify, map-role, unmap-role or roles"

static int is_role_command(const char *cmd)
{
    return strcmp(cmd, "map-role") == 0 || strcmp(cmd, "unmap-role") == 0 ||
           strcmp(cmd, "roles") == 0;
}

/* The exit status of a failed role command: the schema's refusals by their SQLSTATE; a schema
 * without the map (CG_ENOTFOUND) is a database problem here, not a changed migration. */
static int role_fail(int err)
{
    const char *state = cg_error_last()->sqlstate;
    fprintf(stderr, "cg-migrate: error: %s\n", cg_error_last()->message);
    if (strcmp(state, CG_LOGINS_BAD_NAME) == 0)
        return EXIT_NAME;
    if (strcmp(state, CG_LOGINS_UNSUITABLE) == 0)
        return EXIT_UNSUITABLE;
    return err == CG_ENOTFOUND ? EXIT_DB : exit_code(err);
}

static void print_roles(const cg_login_list *list)
{
    size_t i;
    printf("%-24s %-24s %-6s %-14s %s\n", "role", "group", "login", "coregroup_app", "mapped at");
    for (i = 0; i < list->n; i++) {
        const cg_login *l = &list->items[i];
        printf("%-24s %-24s %-6s %-14s %s\n", l->role, l->group,
               !l->exists     ? "MISSING"
               : l->can_login ? "yes"
                              : "NO",
               !l->exists  ? "-"
               : l->member ? "yes"
                           : "NO",
               l->mapped_at);
    }
    printf("%zu mapped role%s\n", list->n, list->n == 1 ? "" : "s");
}

/* After map-role: a word on what the role still needs, read back from the map. */
static void map_advice(PGconn *conn, const char *role, const char *group, const char *did)
{
    cg_login_list list = {NULL, 0};
    size_t i;

    if (strcmp(did, "created") == 0)
        printf("cg-migrate: map-role: created the login role \"%s\" (no password yet: set its "
               "authentication, e.g. ALTER ROLE \"%s\" PASSWORD '...')\n",
               role, role);
    if (strcmp(did, "unchanged") == 0)
        printf("cg-migrate: map-role: role \"%s\" is already mapped to group \"%s\"\n", role,
               group);
    else
        printf("cg-migrate: map-role: role \"%s\" %s to group \"%s\"\n", role,
               strncmp(did, "moved", 5) == 0 ? did : "mapped", group);
    if (strncmp(did, "moved", 5) == 0)
        printf("cg-migrate: map-role: cores logged in as \"%s\" now see group \"%s\" only: "
               "restart them with [core] group = %s\n",
               role, group, group);
    if (cg_logins_list(&list, conn) == 0)
        for (i = 0; i < list.n; i++)
            if (strcmp(list.items[i].role, role) == 0 && !list.items[i].can_login)
                printf("cg-migrate: map-role: warning: role \"%s\" cannot log in (NOLOGIN): "
                       "ALTER ROLE \"%s\" LOGIN\n",
                       role, role);
    cg_login_list_dispose(&list);
}

/* map-role ROLE GROUP, unmap-role ROLE, roles: check the arguments, connect, run. */
static int role_command(const char *cmd, int argc, char **argv, const char *dsn, const char *config)
{
    int want = strcmp(cmd, "map-role") == 0 ? 2 : strcmp(cmd, "unmap-role") == 0 ? 1 : 0;
    cg_config *cfg = NULL;
    cg_login_list list = {NULL, 0};
    PGconn *conn = NULL;
    char *out = NULL;
    int err, rc = 0;

    if (argc != want) {
        fprintf(stderr, "cg-migrate: error: %s takes %s (got %d argument%s)\n", cmd,
                want == 2   ? "ROLE GROUP"
                : want == 1 ? "ROLE"
                            : "no arguments",
                argc, argc == 1 ? "" : "s");
        return EXIT_USAGE;
    }
    if (want >= 1 && !cg_logins_role_valid(argv[0])) {
        fprintf(stderr,
                "cg-migrate: error: %s: role \"%s\" cannot be a group's login: a role name is "
                "a letter or \"_\", then up to 62 letters, digits, \"_\", \".\" or \"-\", not "
                "starting with \"pg_\" and not reserved\n",
                cmd, argv[0]);
        return EXIT_NAME;
    }
    if (want == 2 && argv[1][0] == '\0') {
        fprintf(stderr,
                "cg-migrate: error: map-role: the group is empty (give the group id of "
                "the cores that log in as \"%s\")\n",
                argv[0]);
        return EXIT_NAME;
    }
    if (want == 2 && !cg_name_valid(argv[1])) {
        fprintf(stderr,
                "cg-migrate: error: map-role: group \"%s\" is not a valid group id (a letter or "
                "digit, then up to 62 letters, digits, \".\", \"_\" or \"-\")\n",
                argv[1]);
        return EXIT_NAME;
    }

    if (dsn == NULL && config != NULL) {
        if ((err = cg_config_load(&cfg, config)) < 0) {
            fail(err);
            return EXIT_USAGE;
        }
        dsn = cfg->dsn;
    }
    if ((err = cg_pg_connect(&conn, dsn, "cg-migrate", 10)) < 0) {
        fprintf(stderr, "cg-migrate: error: %s\n", cg_error_last()->message);
        rc = EXIT_DB;
        goto done;
    }
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    if (want == 2) {
        if ((err = cg_logins_map(&out, conn, argv[0], argv[1])) == 0 && !quiet)
            map_advice(conn, argv[0], argv[1], out);
    } else if (want == 1) {
        if ((err = cg_logins_unmap(&out, conn, argv[0])) == 0 && !quiet) {
            if (out)
                printf("cg-migrate: unmap-role: role \"%s\" is no longer mapped (it was of "
                       "group \"%s\"); it sees nothing now, and the role itself stays\n",
                       argv[0], out);
            else
                printf("cg-migrate: unmap-role: role \"%s\" was not mapped (nothing to do)\n",
                       argv[0]);
        }
    } else if ((err = cg_logins_list(&list, conn)) == 0) {
        print_roles(&list);
    }
    if (err < 0)
        rc = role_fail(err);
done:
    free(out);
    cg_login_list_dispose(&list);
    PQfinish(conn);
    cg_config_free(cfg);
    return rc;
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
        fprintf(stderr, "cg-migrate: error: no command given (%s)\n", COMMANDS);
        usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[optind++];
    if (is_role_command(cmd))
        return role_command(cmd, argc - optind, argv + optind, dsn, config);
    if (strcmp(cmd, "status") && strcmp(cmd, "up") && strcmp(cmd, "down") &&
        strcmp(cmd, "verify")) {
        fprintf(stderr, "cg-migrate: error: unknown command \"%s\" (%s)\n", cmd, COMMANDS);
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
