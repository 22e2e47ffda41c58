/*
 * config.c — repository.ini: parse, validate, free.
 *
 * The file is parsed with libinih (never by hand). libinih reports only the line of a syntax
 * error, so we feed it through our own reader: the reader counts lines, which lets the key
 * handler name the exact line of every bad value, and it sees the buffer size libinih was
 * built with, so an over-long line is reported instead of being silently cut (a truncated
 * DSN would connect somewhere else — "nothing lost" means refusing it).
 *
 * Every key lives in one table (`keys` below): section, name, type, range and where it goes in
 * cg_config. Unknown keys and keys given twice are errors. cg_config_parse() is a pure function
 * from bytes to a struct or an error, so it can be fuzzed without a file system.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "coregroup/config.h"
#include "coregroup/sys/error.h"
#include "coregroup/sys/hostport.h"

#define PRIVATE_PREFIX "private."

typedef enum {
    T_STRING,
    T_NAME,
    T_INT,
    T_LONG,
    T_ENDPOINTS,
    T_SQLSTATES,
    T_STRATEGY,
    T_LOGLEVEL,
    T_HOSTPORT /* HOST:PORT, read by coregroup/sys/hostport.h */
} key_type;

typedef struct {
    const char *section;
    const char *name;
    key_type type;
    size_t offset;
    long min, max;
    int required;
} key_def;

#define OFF(f) offsetof(cg_config, f)

static const key_def keys[] = {
    {"repository", "dsn", T_STRING, OFF(dsn), 0, 0, 1},
    {"repository", "pool_size", T_INT, OFF(pool_size), 1, 64, 0},
    {"repository", "keepalive_idle_s", T_INT, OFF(keepalive_idle_s), 1, 3600, 0},
    {"repository", "lock_timeout_ms", T_INT, OFF(lock_timeout_ms), 1, 3600000, 0},
    {"repository", "idle_in_transaction_timeout_ms", T_INT, OFF(idle_in_transaction_timeout_ms),
     100, 86400000, 0},
    {"core", "name", T_NAME, OFF(core_name), 0, 0, 1},
    {"core", "group", T_NAME, OFF(group_id), 0, 0, 0},
    {"core", "failure_timeout_ms", T_INT, OFF(failure_timeout_ms), 100, 3600000, 0},
    {"core", "log_level", T_LOGLEVEL, OFF(log_level), 0, 0, 0},
    {"bus", "publish", T_ENDPOINTS, OFF(publish), 0, 0, 0},
    {"bus", "subscribe", T_ENDPOINTS, OFF(subscribe), 0, 0, 0},
    {"bus", "poll_interval_ms", T_INT, OFF(poll_interval_ms), 10, 3600000, 0},
    {"bus", "heartbeat_interval_ms", T_INT, OFF(heartbeat_interval_ms), 10, 600000, 0},
    {"bus", "reorder_window_ms", T_INT, OFF(reorder_window_ms), 0, 60000, 0},
    {"bus", "outbox_retention_s", T_LONG, OFF(outbox_retention_s), 0, 86400L * 365, 0},
    {"bus", "curve_server_key", T_STRING, OFF(curve_server_key), 0, 0, 0},
    {"bus", "curve_public_key", T_STRING, OFF(curve_public_key), 0, 0, 0},
    {"bus", "curve_secret_key", T_STRING, OFF(curve_secret_key), 0, 0, 0},
    {"retry", "attempts", T_INT, OFF(retry_attempts), 0, 1000, 0},
    {"retry", "interval_ms", T_INT, OFF(retry_interval_ms), 0, 600000, 0},
    {"retry", "sqlstates", T_SQLSTATES, OFF(sqlstates), 0, 0, 0},
    {"cache", "strategy", T_STRATEGY, OFF(strategy), 0, 0, 0},
    {"cache", "max_entries", T_LONG, OFF(max_entries), 1, 100000000, 0},
    {"cache", "ttl_ms", T_LONG, OFF(ttl_ms), 0, 86400000L * 30, 0},
    {"cache", "max_staleness_ms", T_INT, OFF(max_staleness_ms), 20, 86400000, 0},
    {"daemon", "listen", T_STRING, OFF(listen), 0, 0, 0},
    {"daemon", "workers", T_INT, OFF(workers), 1, 64, 0},
    {"daemon", "pidfile", T_STRING, OFF(pidfile), 0, 0, 0},
    {"daemon", "curve_secret_key", T_STRING, OFF(daemon_curve_secret_key), 0, 0, 0},
    {"daemon", "curve_public_key", T_STRING, OFF(daemon_curve_public_key), 0, 0, 0},
    {"daemon", "curve_clients", T_STRING, OFF(daemon_curve_clients), 0, 0, 0},
    {"daemon", "metrics_listen", T_HOSTPORT, OFF(metrics_listen), 0, 0, 0},
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

typedef struct {
    cg_config *cfg;
    const char *source;
    const char *text;
    size_t len, pos;
    int line;          /* line most recently handed to libinih */
    int too_long_line; /* first line longer than libinih's buffer, or 0 */
    int failed;        /* the handler raised an error (detail is set) */
    int seen[NKEYS];   /* line where each key was set, 0 if not yet */
} parse_state;

const char *cg_cache_strategy_name(cg_cache_strategy s)
{
    switch (s) {
    case CG_CACHE_INVALIDATE:
        return "invalidate";
    case CG_CACHE_VERSION_CHECK:
        return "version-check";
    case CG_CACHE_NONE:
        return "none";
    }
    return "?";
}

int cg_name_valid(const char *name)
{
    size_t n;
    if (name == NULL || !isalnum((unsigned char)name[0]))
        return 0;
    for (n = 0; name[n]; n++) {
        unsigned char c = (unsigned char)name[n];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-')
            return 0;
    }
    return n <= CG_NAME_MAX;
}

int cg_config_set_string(char **slot, const char *value)
{
    char *copy = NULL;
    if (value && (copy = strdup(value)) == NULL)
        return cg_error_nomem();
    free(*slot);
    *slot = copy;
    return 0;
}

int cg_config_new(cg_config **out)
{
    static const char *default_states[] = {"08", "40001", "40P01", "57P01", "57P02", "57P03"};
    cg_config *cfg = calloc(1, sizeof(*cfg));
    size_t i;

    *out = NULL;
    if (cfg == NULL)
        return cg_error_nomem();
    cfg->version = CG_CONFIG_VERSION;
    cfg->pool_size = 4;
    cfg->keepalive_idle_s = 10;
    cfg->lock_timeout_ms = 2000;
    cfg->idle_in_transaction_timeout_ms = 30000;
    cfg->reorder_window_ms = 20;
    cfg->max_staleness_ms = 2000;
    cfg->poll_interval_ms = 1000;
    cfg->heartbeat_interval_ms = 1000;
    cfg->failure_timeout_ms = 5000;
    cfg->workers = 4;
    cfg->log_level = 2;
    cfg->outbox_retention_s = 3600;
    cfg->retry_attempts = 5;
    cfg->retry_interval_ms = 500;
    for (i = 0; i < sizeof(default_states) / sizeof(default_states[0]); i++)
        snprintf(cfg->sqlstates[i], sizeof(cfg->sqlstates[i]), "%s", default_states[i]);
    cfg->n_sqlstates = i;
    cfg->strategy = CG_CACHE_INVALIDATE;
    cfg->max_entries = 100000;
    cfg->ttl_ms = 0;
    *out = cfg;
    return 0;
}

void cg_config_free(cg_config *cfg)
{
    size_t i;
    if (cfg == NULL)
        return;
    free(cfg->source);
    free(cfg->dsn);
    free(cfg->core_name);
    free(cfg->group_id);
    free(cfg->curve_server_key);
    free(cfg->curve_public_key);
    free(cfg->curve_secret_key);
    free(cfg->listen);
    free(cfg->pidfile);
    free(cfg->daemon_curve_secret_key);
    free(cfg->daemon_curve_public_key);
    free(cfg->daemon_curve_clients);
    free(cfg->metrics_listen);
    for (i = 0; i < CG_CONFIG_MAX_ENDPOINTS; i++) {
        free(cfg->publish[i]);
        free(cfg->subscribe[i]);
    }
    free(cfg);
}

/* Copy the next item of a list split on commas and white space into buf and advance *p.
 * Returns 1 for an item, 0 at the end, -1 when an item does not fit in buf. */
static int next_item(const char **p, char *buf, size_t bufsz)
{
    const char *s = *p;
    size_t n = 0;
    while (*s && (*s == ',' || isspace((unsigned char)*s)))
        s++;
    if (!*s)
        return 0;
    while (*s && *s != ',' && !isspace((unsigned char)*s)) {
        if (n + 1 >= bufsz)
            return -1;
        buf[n++] = *s++;
    }
    buf[n] = '\0';
    *p = s;
    return 1;
}

static int bad(parse_state *ps, const key_def *k, const char *fmt, const char *value)
{
    char what[700];
    snprintf(what, sizeof(what), fmt, value);
    ps->failed = 1;
    return cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG, "%s:%d: [%s] %s: %s", ps->source, ps->line,
                        k->section, k->name, what);
}

static int set_number(parse_state *ps, const key_def *k, const char *value)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(value, &end, 10);
    if (errno || end == value || *end != '\0' || v < k->min || v > k->max) {
        char fmt[160];
        snprintf(fmt, sizeof(fmt), "expected an integer from %ld to %ld, got \"%%s\"", k->min,
                 k->max);
        return bad(ps, k, fmt, value);
    }
    if (k->type == T_INT)
        *(int *)((char *)ps->cfg + k->offset) = (int)v;
    else
        *(long *)((char *)ps->cfg + k->offset) = v;
    return 0;
}

static int set_endpoints(parse_state *ps, const key_def *k, const char *value)
{
    char **slots = (char **)((char *)ps->cfg + k->offset);
    size_t *count = k->offset == OFF(publish) ? &ps->cfg->n_publish : &ps->cfg->n_subscribe;
    char item[512];
    const char *p = value;
    int r;

    while ((r = next_item(&p, item, sizeof(item))) > 0) {
        if (*count >= CG_CONFIG_MAX_ENDPOINTS)
            return bad(ps, k, "more than 4 endpoints in \"%s\"", value);
        if (strstr(item, "://") == NULL)
            return bad(ps, k,
                       "\"%s\" is not a ZeroMQ endpoint (expected tcp://host:port, ipc://path "
                       "or inproc://name; a leading @ binds instead of connecting)",
                       item);
        if (cg_config_set_string(&slots[*count], item) < 0)
            return CG_ERROR;
        (*count)++;
    }
    if (r < 0)
        return bad(ps, k, "an endpoint in \"%s\" is longer than 511 characters", value);
    if (*count == 0)
        return bad(ps, k, "expected one or more endpoints, got \"%s\"", value);
    return 0;
}

static int set_sqlstates(parse_state *ps, const key_def *k, const char *value)
{
    char item[16];
    const char *p = value;
    size_t i, n = 0;
    int r;

    while ((r = next_item(&p, item, sizeof(item))) > 0) {
        size_t len = strlen(item);
        if (len != 2 && len != 5)
            return bad(ps, k, "\"%s\" is neither a SQLSTATE class (2 characters) nor a code (5)",
                       item);
        for (i = 0; i < len; i++)
            if (!isdigit((unsigned char)item[i]) && !isupper((unsigned char)item[i]))
                return bad(ps, k, "\"%s\" has a character outside 0-9 and A-Z", item);
        if (n >= CG_CONFIG_MAX_SQLSTATES)
            return bad(ps, k, "more than 16 SQLSTATEs in \"%s\"", value);
        memcpy(ps->cfg->sqlstates[n++], item, len + 1);
    }
    if (r < 0)
        return bad(ps, k, "\"%s\" is not a SQLSTATE list", value);
    ps->cfg->n_sqlstates = n;
    return 0;
}

static int set_value(parse_state *ps, const key_def *k, const char *value)
{
    switch (k->type) {
    case T_STRING:
        if (*value == '\0')
            return bad(ps, k, "%sexpected a value", "");
        return cg_config_set_string((char **)((char *)ps->cfg + k->offset), value);
    case T_NAME:
        if (!cg_name_valid(value))
            return bad(ps, k,
                       "\"%s\" is not a valid name (1 to 63 of A-Z a-z 0-9 . _ -, starting "
                       "with a letter or digit)",
                       value);
        if (k->offset == OFF(group_id) && strncmp(value, PRIVATE_PREFIX, 8) == 0)
            return bad(ps, k,
                       "\"%s\": group ids starting with \"private.\" are reserved for "
                       "cores without a group",
                       value);
        return cg_config_set_string((char **)((char *)ps->cfg + k->offset), value);
    case T_INT:
    case T_LONG:
        return set_number(ps, k, value);
    case T_ENDPOINTS:
        return set_endpoints(ps, k, value);
    case T_SQLSTATES:
        return set_sqlstates(ps, k, value);
    case T_LOGLEVEL: {
        static const char *levels[] = {"error", "warn", "info", "debug"};
        int i;
        for (i = 0; i < 4; i++)
            if (strcmp(value, levels[i]) == 0) {
                ps->cfg->log_level = i;
                return 0;
            }
        return bad(ps, k, "expected error, warn, info or debug, got \"%s\"", value);
    }
    case T_HOSTPORT: {
        char host[CG_HOSTPORT_HOST_MAX + 1], fmt[200];
        const char *why;
        int port;
        if (cg_hostport_split(host, &port, value, &why) < 0) {
            snprintf(fmt, sizeof(fmt), "%s, got \"%%s\"", why);
            return bad(ps, k, fmt, value);
        }
        return cg_config_set_string((char **)((char *)ps->cfg + k->offset), value);
    }
    case T_STRATEGY:
        if (strcmp(value, "invalidate") == 0)
            ps->cfg->strategy = CG_CACHE_INVALIDATE;
        else if (strcmp(value, "version-check") == 0)
            ps->cfg->strategy = CG_CACHE_VERSION_CHECK;
        else if (strcmp(value, "none") == 0)
            ps->cfg->strategy = CG_CACHE_NONE;
        else
            return bad(ps, k, "expected invalidate, version-check or none, got \"%s\"", value);
        return 0;
    }
    return 0;
}

/* libinih's handler: returns nonzero to go on, 0 on error (the detail is already set). */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    size_t i;
    int known_section = 0;

    if (ps->failed)
        return 0; /* report the first error only */
    for (i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) != 0)
            continue;
        known_section = 1;
        if (strcmp(keys[i].name, name) != 0)
            continue;
        if (ps->seen[i]) {
            ps->failed = 1;
            cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                         "%s:%d: [%s] %s: set twice (first at line %d)", ps->source, ps->line,
                         section, name, ps->seen[i]);
            return 0;
        }
        ps->seen[i] = ps->line;
        return set_value(ps, &keys[i], value) == 0;
    }
    ps->failed = 1;
    if (*section == '\0')
        cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                     "%s:%d: %s: key outside any section (expected [repository], [core], [bus], "
                     "[retry], [cache] or [daemon] first)",
                     ps->source, ps->line, name);
    else if (!known_section)
        cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                     "%s:%d: [%s] %s: unknown section \"%s\" (expected repository, core, bus, "
                     "retry, cache or daemon)",
                     ps->source, ps->line, section, name, section);
    else
        cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG, "%s:%d: [%s] %s: unknown key", ps->source,
                     ps->line, section, name);
    return 0;
}

/* libinih's reader over a memory buffer: one line per call, counting lines. */
static char *read_line(char *str, int num, void *stream)
{
    parse_state *ps = stream;
    size_t n = 0;

    if (ps->pos >= ps->len || ps->too_long_line)
        return NULL;
    ps->line++;
    while (ps->pos < ps->len) {
        char c = ps->text[ps->pos];
        if (c == '\0') {
            /* An embedded NUL would silently end the line for libinih. */
            ps->too_long_line = -ps->line;
            return NULL;
        }
        if ((int)n + 1 >= num) {
            ps->too_long_line = ps->line;
            return NULL;
        }
        str[n++] = c;
        ps->pos++;
        if (c == '\n')
            break;
    }
    str[n] = '\0';
    return str;
}

/* CURVE settings come as a whole: all three files named, or none. */
static int three_or_none(const char *a, const char *b, const char *c)
{
    return !a == !b && !a == !c;
}

int cg_config_validate(cg_config *cfg)
{
    const char *src = cfg->source ? cfg->source : "configuration";
    if (cfg->dsn == NULL || cfg->dsn[0] == '\0')
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                            "%s: [repository] dsn: required key is missing", src);
    if (cfg->core_name == NULL)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                            "%s: [core] name: required key is missing", src);
    if (!cg_name_valid(cfg->core_name))
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                            "%s: [core] name: \"%s\" is not a valid name", src, cfg->core_name);
    if (cfg->group_id == NULL || cfg->group_is_private) {
        char group[sizeof(PRIVATE_PREFIX) + CG_NAME_MAX + 1];
        /* A private group must itself be a valid id: the name is at most 63 characters and
         * the prefix 8, so clip to the id limit; two names equal in their first 55 characters
         * would share a group, so refuse those instead of clipping. */
        if (strlen(cfg->core_name) > CG_NAME_MAX - 8)
            return cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                                "%s: [core] name: a core without a group needs a name of at "
                                "most %d characters (its private group is \"private.<name>\")",
                                src, CG_NAME_MAX - 8);
        snprintf(group, sizeof(group), PRIVATE_PREFIX "%s", cfg->core_name);
        if (cg_config_set_string(&cfg->group_id, group) < 0)
            return CG_ERROR;
        cfg->group_is_private = 1;
    } else if (!cg_name_valid(cfg->group_id)) {
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                            "%s: [core] group: \"%s\" is not a valid group id", src, cfg->group_id);
    }
    if (!three_or_none(cfg->curve_server_key, cfg->curve_public_key, cfg->curve_secret_key))
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                            "%s: [bus] curve_server_key, curve_public_key and curve_secret_key go "
                            "together: give all three or none",
                            src);
    if (!three_or_none(cfg->daemon_curve_secret_key, cfg->daemon_curve_public_key,
                       cfg->daemon_curve_clients))
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                            "%s: [daemon] curve_secret_key, curve_public_key and curve_clients go "
                            "together: give all three or none",
                            src);
    if (cfg->pool_size < 1 || cfg->pool_size > 64 || cfg->max_entries < 1 || cfg->ttl_ms < 0 ||
        cfg->retry_attempts < 0 || cfg->retry_interval_ms < 0 || cfg->poll_interval_ms < 10 ||
        cfg->heartbeat_interval_ms < 10 || cfg->outbox_retention_s < 0 ||
        cfg->lock_timeout_ms < 1 || cfg->idle_in_transaction_timeout_ms < 100 ||
        cfg->reorder_window_ms < 0 || cfg->max_staleness_ms < 20)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                            "%s: a numeric setting is out of range", src);
    /* The lease is renewed at least four times per bound, and a proof must be able to wait
     * out the reorder window and still land inside the bound. */
    if (cfg->reorder_window_ms * 4 > cfg->max_staleness_ms)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                            "%s: [bus] reorder_window_ms (%d) must be at most a quarter of [cache] "
                            "max_staleness_ms (%d): the window adds itself to staleness",
                            src, cfg->reorder_window_ms, cfg->max_staleness_ms);
    return 0;
}

int cg_config_parse(cg_config **out, const char *text, size_t len, const char *source)
{
    parse_state ps;
    cg_config *cfg = NULL;
    int err, line;

    *out = NULL;
    if (source == NULL)
        source = "repository.ini";
    if ((err = cg_config_new(&cfg)) < 0)
        return err;
    if ((err = cg_config_set_string(&cfg->source, source)) < 0)
        goto done;

    memset(&ps, 0, sizeof(ps));
    ps.cfg = cfg;
    ps.source = source;
    ps.text = text ? text : "";
    ps.len = text ? len : 0;

    line = ini_parse_stream(read_line, &ps, on_key, &ps);
    if (ps.failed) {
        err = cg_error_last()->code ? cg_error_last()->code : CG_EINVALID;
        goto done;
    }
    if (ps.too_long_line > 0) {
        err = cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                           "%s:%d: line is too long (longer than this build's limit of the INI "
                           "reader); shorten the value",
                           source, ps.too_long_line);
        goto done;
    }
    if (ps.too_long_line < 0) {
        err = cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG, "%s:%d: NUL byte in the file", source,
                           -ps.too_long_line);
        goto done;
    }
    if (line != 0) {
        err = cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                           "%s:%d: syntax error: expected \"[section]\", \"key = value\" or a "
                           "comment",
                           source, line);
        goto done;
    }
    if ((err = cg_config_validate(cfg)) < 0)
        goto done;
    *out = cfg;
    cfg = NULL;
done:
    cg_config_free(cfg);
    return err;
}

int cg_config_load(cg_config **out, const char *path)
{
    FILE *f;
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    int err;

    *out = NULL;
    if ((f = fopen(path, "rb")) == NULL)
        return cg_error_set(errno == ENOENT ? CG_ENOTFOUND : CG_ERROR, CG_ERRCLASS_OS,
                            "%s: cannot open: %s", path, strerror(errno));
    for (;;) {
        if (len + 4096 > cap) {
            char *nb;
            if (cap > (1u << 20)) {
                err = cg_error_set(CG_EINVALID, CG_ERRCLASS_CONFIG,
                                   "%s: larger than 1 MiB; not a repository.ini", path);
                goto done;
            }
            cap = cap ? cap * 2 : 8192;
            if ((nb = realloc(buf, cap)) == NULL) {
                err = cg_error_nomem();
                goto done;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        err = cg_error_set(CG_ERROR, CG_ERRCLASS_OS, "%s: read error: %s", path, strerror(errno));
        goto done;
    }
    err = cg_config_parse(out, buf, len, path);
done:
    free(buf);
    fclose(f);
    return err;
}
