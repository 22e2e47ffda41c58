/*
 * check_config — load each repository.ini given on the command line with the library's own
 * parser (cg_config_load) and print what it resolved to, so that a script can check deployment
 * files (the .ini files in docker/config/) against what the library really reads, not a grep.
 *
 *     check_config FILE...
 *
 * For every file that loads, one line per setting on stdout, tab-separated:
 *     FILE <TAB> KEY <TAB> VALUE
 * with KEY one of core.name, core.group, core.group_is_private, core.log_level,
 * repository.dsn.<keyword> (each keyword libpq's PQconninfoParse finds set in the dsn; a
 * password is printed as "(set)", never its value), repository.pool_size, bus.publish and
 * bus.subscribe (one line per endpoint), bus.curve (on/off), cache.strategy, daemon.listen,
 * daemon.metrics_listen, daemon.workers, daemon.pidfile. A dsn that libpq cannot parse is an error
 * too.
 *
 * Errors (the library's message: file, line and key) go to stderr. Exit status: 0 every file
 * loaded, 1 at least one did not, 2 no file given.
 */
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "coregroup.h"

static void put(const char *file, const char *key, const char *value)
{
    printf("%s\t%s\t%s\n", file, key, value ? value : "");
}

static void put_int(const char *file, const char *key, long value)
{
    printf("%s\t%s\t%ld\n", file, key, value);
}

/* The dsn's keywords as libpq reads them; 0, or -1 when libpq refuses the string. */
static int put_dsn(const char *file, const char *dsn)
{
    char *err = NULL, key[64];
    PQconninfoOption *opts = PQconninfoParse(dsn, &err), *o;

    if (opts == NULL) {
        fprintf(stderr, "check_config: %s: [repository] dsn: libpq cannot parse it: %s", file,
                err ? err : "out of memory\n");
        PQfreemem(err);
        return -1;
    }
    for (o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        snprintf(key, sizeof(key), "repository.dsn.%s", o->keyword);
        put(file, key, strcmp(o->keyword, "password") == 0 ? "(set)" : o->val);
    }
    PQconninfoFree(opts);
    return 0;
}

static int check(const char *file)
{
    static const char *levels[] = {"error", "warn", "info", "debug"};
    cg_config *cfg = NULL;
    size_t i;
    int bad = 0;

    if (cg_config_load(&cfg, file) != 0) {
        fprintf(stderr, "check_config: %s\n", cg_error_last()->message);
        return -1;
    }
    put(file, "core.name", cfg->core_name);
    put(file, "core.group", cfg->group_id);
    put_int(file, "core.group_is_private", cfg->group_is_private);
    put(file, "core.log_level",
        cfg->log_level >= 0 && cfg->log_level <= 3 ? levels[cfg->log_level] : "?");
    if (put_dsn(file, cfg->dsn) < 0)
        bad = 1;
    put_int(file, "repository.pool_size", cfg->pool_size);
    for (i = 0; i < cfg->n_publish; i++)
        put(file, "bus.publish", cfg->publish[i]);
    for (i = 0; i < cfg->n_subscribe; i++)
        put(file, "bus.subscribe", cfg->subscribe[i]);
    put(file, "bus.curve", cfg->curve_server_key ? "on" : "off");
    put(file, "cache.strategy", cg_cache_strategy_name(cfg->strategy));
    if (cfg->listen)
        put(file, "daemon.listen", cfg->listen);
    if (cfg->metrics_listen)
        put(file, "daemon.metrics_listen", cfg->metrics_listen);
    put_int(file, "daemon.workers", cfg->workers);
    if (cfg->pidfile)
        put(file, "daemon.pidfile", cfg->pidfile);
    cg_config_free(cfg);
    return bad ? -1 : 0;
}

int main(int argc, char **argv)
{
    int i, failed = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: check_config FILE...\n");
        return 2;
    }
    for (i = 1; i < argc; i++)
        if (check(argv[i]) < 0)
            failed++;
    fflush(stdout);
    if (failed)
        fprintf(stderr, "check_config: %d of %d file(s) failed\n", failed, argc - 1);
    return failed ? 1 : 0;
}
