/*
 * testutil.c — helpers shared by the Check suites; see testutil.h.
 *
 * The harness (pgharness.sh, run as a ctest fixture) leaves a KEY=VALUE state file named by
 * $CG_TEST_STATE. Every database a test creates lives in that throwaway cluster, so tests need
 * no cleanup of their own and never touch a real repository.
 *
 * Cores log in as a role of their group, as in production: row-level security confines a
 * session to the group its login is mapped to (migration 0005). cgt_group_login() creates the
 * role in the cluster and maps it in the test's database on first use, through the same
 * statement as `cg-migrate map-role` (roles are cluster-wide, so suites running in parallel
 * share them; the map is per database).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "logins.h"
#include "testutil.h"

#define MAX_VARS 32

static char *names[MAX_VARS], *values[MAX_VARS];
static int nvars = -1;

static void load_state(void)
{
    const char *path = getenv("CG_TEST_STATE");
    char line[2048];
    FILE *f;

    nvars = 0;
    if (path == NULL || (f = fopen(path, "r")) == NULL)
        return;
    while (nvars < MAX_VARS && fgets(line, sizeof(line), f)) {
        char *eq = strchr(line, '='), *v;
        size_t n;
        if (eq == NULL)
            continue;
        *eq = '\0';
        v = eq + 1;
        n = strlen(v);
        while (n > 0 && (v[n - 1] == '\n' || v[n - 1] == '\r'))
            v[--n] = '\0';
        if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
            v[n - 1] = '\0';
            v++;
        }
        names[nvars] = strdup(line);
        values[nvars++] = strdup(v);
    }
    fclose(f);
}

const char *cgt_env(const char *key)
{
    int i;
    if (nvars < 0)
        load_state();
    for (i = 0; i < nvars; i++)
        if (strcmp(names[i], key) == 0)
            return values[i];
    ck_abort_msg("harness state has no %s (is CG_TEST_STATE set by ctest?)", key);
    return NULL;
}

/* Usable outside a running test too (suites read paths in main). */
static const char *required_env(const char *name)
{
    const char *s = getenv(name);
    if (s == NULL) {
        fprintf(stderr, "%s is not set: run the tests through ctest\n", name);
        exit(2);
    }
    return s;
}

const char *cgt_source_dir(void)
{
    return required_env("CG_TEST_SOURCE_DIR");
}

const char *cgt_binary_dir(void)
{
    return required_env("CG_TEST_BINARY_DIR");
}

PGconn *cgt_connect(const char *dsn)
{
    PGconn *c = PQconnectdb(dsn);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect %s: %s", dsn, PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

char *cgt_query1(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    char *v;
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK,
                  "%s: %s", sql, PQerrorMessage(conn));
    v = strdup(PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return v;
}

int64_t cgt_query_i64(PGconn *conn, const char *sql)
{
    char *v = cgt_query1(conn, sql);
    int64_t n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

void cgt_expect_query(PGconn *conn, const char *sql, const char *want)
{
    char *got = cgt_query1(conn, sql);
    ck_assert_msg(strcmp(got, want) == 0, "%s:\n got  %s\n want %s", sql, got, want);
    free(got);
}

char *cgt_createdb(const char *prefix, int migrated)
{
    static int counter;
    char sql[256], name[96], *dsn;
    PGconn *admin = cgt_connect(cgt_env("CG_TEST_ADMIN_DSN"));
    snprintf(name, sizeof(name), "%s_%d_%d", prefix, (int)getpid(), ++counter);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s%s", name,
             migrated ? " TEMPLATE cg_template" : "");
    free(cgt_query1(admin, sql));
    PQfinish(admin);
    dsn = malloc(1024);
    snprintf(dsn, 1024, "host=%s port=%s user=postgres dbname=%s", cgt_env("CG_TEST_PGHOST"),
             cgt_env("CG_TEST_PGPORT"), name);
    return dsn;
}

char *cgt_run(int *status, const char *fmt, ...)
{
    char cmd[8192], *out = NULL;
    size_t len = 0, cap = 0;
    va_list ap;
    FILE *p;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd) - 8, fmt, ap);
    va_end(ap);
    strcat(cmd, " 2>&1");
    p = popen(cmd, "r");
    ck_assert_msg(p != NULL, "popen %s", cmd);
    for (;;) {
        size_t n;
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            out = realloc(out, cap);
        }
        n = fread(out + len, 1, cap - len - 1, p);
        if (n == 0)
            break;
        len += n;
    }
    out[len] = '\0';
    st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return out;
}

void cgt_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static char *tmpdirs[64];
static int ntmpdirs;

static void remove_tmpdirs(void)
{
    char cmd[512];
    int i;
    for (i = 0; i < ntmpdirs; i++) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdirs[i]);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdirs[i]);
    }
}

char *cgt_tmpdir(void)
{
    char tmpl[] = "/tmp/cgtest.XXXXXX";
    char *d = mkdtemp(tmpl);
    ck_assert_msg(d != NULL, "mkdtemp");
    if (ntmpdirs == 0)
        atexit(remove_tmpdirs);
    if (ntmpdirs < 64)
        tmpdirs[ntmpdirs++] = strdup(d);
    return strdup(d);
}

void cgt_keygen(const char *prefix)
{
    int rc;
    char *out = cgt_run(&rc, "'%s/cg-busd' --keygen '%s'", cgt_binary_dir(), prefix);
    ck_assert_msg(rc == 0, "keygen: %s", out);
    free(out);
}

void cgt_send_i64(int chan[2], int64_t v)
{
    ck_assert_int_eq(write(chan[1], &v, sizeof(v)), sizeof(v));
}

int64_t cgt_child_recv_i64(int chan[2])
{
    int64_t v;
    close(chan[1]);
    if (read(chan[0], &v, sizeof(v)) != sizeof(v))
        _exit(3);
    return v;
}

int cgt_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* FNV-1a: a short, stable stand-in for a group id too long to be part of a role name. */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* The (database, group, n) triples already mapped by this process: one DBA round trip each. */
static pthread_mutex_t mapped_mu = PTHREAD_MUTEX_INITIALIZER;
static char mapped[256][200];
static int n_mapped;

const char *cgt_group_login(const char *dsn, const char *group, int n)
{
    static _Thread_local char b[4][64];
    static _Thread_local int bi;
    const char *db = strstr(dsn, "dbname=");
    char *role = b[bi = (bi + 1) % 4], prefix[16], key[200], *did = NULL;
    PGconn *c;
    int i, err;

    ck_assert_msg(n >= 1 && n <= 9, "cgt_group_login: n is 1..9, not %d", n);
    snprintf(prefix, sizeof(prefix), n == 1 ? "cgt_" : "cgt%d_", n);
    if (strlen(prefix) + strlen(group) > 63 || snprintf(role, 64, "%s%s", prefix, group) >= 64)
        snprintf(role, 64, "%s%016llx", prefix, (unsigned long long)fnv1a(group));
    snprintf(key, sizeof(key), "%s|%s|%d", db ? db : dsn, group, n);
    pthread_mutex_lock(&mapped_mu);
    for (i = 0; i < n_mapped; i++)
        if (strcmp(mapped[i], key) == 0)
            break;
    pthread_mutex_unlock(&mapped_mu);
    if (i < n_mapped)
        return role;
    /* as the DBA would: cg-migrate map-role ROLE GROUP (the same statement, schema/logins.c) */
    c = cgt_connect(dsn);
    err = cg_logins_map(&did, c, role, group);
    ck_assert_msg(err == 0, "map role %s to group %s: %s", role, group, cg_error_last()->message);
    free(did);
    PQfinish(c);
    pthread_mutex_lock(&mapped_mu);
    if (n_mapped < (int)(sizeof(mapped) / sizeof(mapped[0])))
        snprintf(mapped[n_mapped++], sizeof(mapped[0]), "%s", key);
    pthread_mutex_unlock(&mapped_mu);
    return role;
}

char *cgt_core_dsn(const char *dsn, const char *group)
{
    const char *role = cgt_group_login(dsn, group, 1);
    size_t n = strlen(dsn) + strlen(role) + 16;
    char *s = malloc(n);
    snprintf(s, n, "%s user=%s", dsn, role); /* libpq: a repeated keyword's last value wins */
    return s;
}

cg_config *cgt_core_config(const char *dsn, const char *name, const char *group)
{
    cg_config *cfg = NULL;
    char private_group[96], *core_dsn;

    snprintf(private_group, sizeof(private_group), "private.%s", name); /* the library's rule */
    core_dsn = cgt_core_dsn(dsn, group ? group : private_group);
    ck_assert_int_eq(cg_config_new(&cfg), 0);
    ck_assert_int_eq(cg_config_set_string(&cfg->dsn, core_dsn), 0);
    ck_assert_int_eq(cg_config_set_string(&cfg->core_name, name), 0);
    if (group)
        ck_assert_int_eq(cg_config_set_string(&cfg->group_id, group), 0);
    cfg->retry_interval_ms = 100;
    /* Tests decide when a core learns of others' changes: no bus unless a test configures
     * one, and a backstop poll that never fires unless a test shortens it. */
    cfg->poll_interval_ms = 3600000;
    cfg->failure_timeout_ms = 3600000; /* and membership ticks rarely: nobody gets fenced */
    cfg->max_staleness_ms = 86400000;  /* a lease that outlasts the test: proofs follow the poll */
    free(core_dsn);
    return cfg;
}

cg_core *cgt_core_open_cfg(cg_config *cfg)
{
    cg_core *core = NULL;
    int err = cg_core_open_config(&core, cfg);
    ck_assert_msg(err == 0, "open core %s: %s", cfg->core_name, cg_error_last()->message);
    cg_config_free(cfg);
    return core;
}

cg_core *cgt_core_open(const char *dsn, const char *name, const char *group)
{
    return cgt_core_open_cfg(cgt_core_config(dsn, name, group));
}

int64_t cgt_create(cg_core *core)
{
    cg_call *call;
    int64_t h;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_resource_create(&h, call, NULL));
    CGT_OK(cg_call_commit(call));
    return h;
}

int64_t cgt_bump(cg_core *core, int64_t h)
{
    cg_call *call;
    const cg_part *p; /* lent by the call */
    int64_t v;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_part_lock(&p, call, h, CG_PART_STATE));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, cg_part_version(p), "{\"n\":1}"));
    CGT_OK(cg_call_commit(call));
    return v;
}

int64_t cgt_read_version(cg_core *core, int64_t h)
{
    cg_part *p;
    int64_t v;
    int err = cg_part_read(&p, core, h, CG_PART_STATE);
    if (err < 0)
        return err;
    v = cg_part_version(p);
    cg_part_free(p);
    return v;
}

static pid_t restart_pid;

void cgt_restart_async(const char *mode, double pause_s)
{
    char pause[32];
    const char *harness = cgt_env("CG_TEST_HARNESS"), *state = getenv("CG_TEST_STATE");
    ck_assert_msg(state != NULL, "CG_TEST_STATE is not set");
    ck_assert_msg(restart_pid == 0, "a restart is already running");
    snprintf(pause, sizeof(pause), "%.1f", pause_s);
    fflush(NULL);
    if ((restart_pid = fork()) == 0) { /* exec at once: the test may have threads */
        int null = open("/dev/null", O_WRONLY);
        setsid();
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execl(harness, harness, "restart", state, mode, pause, (char *)NULL);
        _exit(127);
    }
    ck_assert_msg(restart_pid > 0, "fork: %s", strerror(errno));
}

void cgt_restart_wait(void)
{
    int status = 0, i;
    if (restart_pid == 0)
        return;
    for (i = 0; i < 6000; i++) {
        pid_t r = waitpid(restart_pid, &status, WNOHANG);
        if (r == restart_pid)
            break;
        usleep(10000);
    }
    ck_assert_msg(i < 6000, "the cluster restart did not finish within 60 s");
    restart_pid = 0;
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the cluster restart failed (%d)",
                  status);
}

const char *cgt_bin(const char *prog)
{
    static char b[4][1024];
    static int i;
    i = (i + 1) % 4;
    snprintf(b[i], sizeof(b[i]), "%s/%s", cgt_binary_dir(), prog);
    return b[i];
}

cJSON *cgt_json_line(const char *out)
{
    const char *p = out;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        if (n > 0 && *p == '{') {
            cJSON *j = cJSON_ParseWithLength(p, n);
            ck_assert_msg(j != NULL, "not JSON: %.*s", (int)n, p);
            return j;
        }
        p += n + (eol ? 1 : 0);
    }
    ck_abort_msg("no JSON line in: %s", out);
    return NULL;
}

const cJSON *cgt_jget(const cJSON *o, const char *path)
{
    char buf[256], *tok, *save = NULL;
    snprintf(buf, sizeof(buf), "%s", path);
    for (tok = strtok_r(buf, ".", &save); tok && o; tok = strtok_r(NULL, ".", &save))
        o = cJSON_IsArray(o) ? cJSON_GetArrayItem(o, atoi(tok))
                             : cJSON_GetObjectItemCaseSensitive(o, tok);
    ck_assert_msg(o != NULL, "nothing at %s", path);
    return o;
}

long long cgt_jint(const cJSON *o, const char *path)
{
    const cJSON *j = cgt_jget(o, path);
    ck_assert_msg(cJSON_IsNumber(j) || cJSON_IsBool(j), "no number at %s", path);
    return cJSON_IsBool(j) ? cJSON_IsTrue(j) : (long long)j->valuedouble;
}

const char *cgt_jstr(const cJSON *o, const char *path)
{
    const cJSON *j = cgt_jget(o, path);
    ck_assert_msg(cJSON_IsString(j), "no string at %s", path);
    return j->valuestring;
}
