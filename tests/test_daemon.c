/*
 * test_daemon.c — coregroupd and cgctl end to end, as real processes: daemons on a database of
 * the harness's PostgreSQL, a real cg-busd between them, cgctl run as a program, and raw
 * DEALER / REQ sockets for what cgctl would never send.
 *  - every request of the API round-trips through cgctl (JSON and text output);
 *  - a stale update's reply carries the version the repository holds, and a retry with it
 *    succeeds;
 *  - a multi whose last operation is stale commits nothing: a get afterwards, on the same
 *    daemon and on a second daemon of the group, sees the old versions and no new name; a
 *    good multi is seen by the second daemon within a bounded wait (bus invalidation);
 *  - malformed requests (bad JSON, not an object, missing fields, wrong types, unknown op,
 *    unknown version, too many ops, NUL, bad UTF-8, deep nesting, over 1 MiB, an absurd frame,
 *    a bad envelope) get "invalid" replies naming the field, and the daemon keeps serving;
 *  - cgctl health: 0 healthy, 2 unreachable, 1 degraded (bus forwarder killed AND the
 *    repository stopped; the cluster restarts after a pause);
 *  - cgctl stats --prometheus parses (HELP, TYPE and sample lines);
 *  - the stats reply has exactly the fields cg_core_stats declares in include/coregroup/core.h
 *    (read from the source tree, so a field added there and not plumbed fails by name), and
 *    cgctl shows each, as a typed metric too; the health reply carries proof_age_ms,
 *    max_staleness_ms and a reason, which is "" exactly when healthy and is on cgctl's line;
 *  - cgctl start twice: "already running"; stop twice: "not running"; both exit 0;
 *  - SIGTERM: exit 0, the core's row says 'left', the pid file is gone; the pid file, the
 *    endpoint and the repository (a live holder of the core name) guard against a second
 *    daemon; bad configuration exits 2, an unreachable repository 1;
 *  - with [daemon] CURVE keys, an admitted client key is served, while an unlisted key and a
 *    plain client get no answer and the refusal is logged; bad key settings exit 2;
 *  - two daemons of one group: an update through A is seen by a get through B within a
 *    bounded wait, carried by the bus.
 * Restarts the shared cluster (health), so ctest runs it alone. Every wait is a loop with a
 * deadline, none a bare sleep.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "bustest.h"

static char *dsn; /* the suite's database (superuser) */

static void setup(void)
{
    dsn = cgt_createdb("daemon", 1);
}

static void teardown(void)
{
    free(dsn);
}

/* ---- daemons ---------------------------------------------------------------------------- */

typedef struct {
    char name[64], group[64];
    char dir[256], ini[320], log[320], pidfile[320], endpoint[64];
    int port;
    pid_t pid; /* when started by the test itself */
} daemon_t;

/* Daemons started through `cgctl start` are not our children: killed at exit by pid file. */
static char started_pidfiles[16][320];
static int n_started;

static void kill_started(void)
{
    int i;
    for (i = 0; i < n_started; i++) {
        FILE *f = fopen(started_pidfiles[i], "r");
        long pid = 0;
        if (f) {
            if (fscanf(f, "%ld", &pid) != 1)
                pid = 0;
            fclose(f);
        }
        if (pid > 0)
            kill((pid_t)pid, SIGKILL);
    }
}

static void remember_pidfile(const char *path)
{
    if (n_started == 0)
        atexit(kill_started);
    if (n_started < 16)
        snprintf(started_pidfiles[n_started++], sizeof(started_pidfiles[0]), "%s", path);
}

/* Prepare daemon `name` of `group` in a new directory: repository.ini with a free port, the
 * bus of `bus` (NULL: none), `extra` appended (more INI text, may be NULL). */
static void daemon_init(daemon_t *d, const char *name, const char *group, const bt_busd *bus,
                        const char *extra)
{
    char *dir = cgt_tmpdir(), *core_dsn = cgt_core_dsn(dsn, group), text[4096];
    int port;

    memset(d, 0, sizeof(*d));
    bt_free_ports(&port, 1);
    d->port = port;
    snprintf(d->name, sizeof(d->name), "%s", name);
    snprintf(d->group, sizeof(d->group), "%s", group);
    snprintf(d->dir, sizeof(d->dir), "%s", dir);
    snprintf(d->ini, sizeof(d->ini), "%s/%s.ini", dir, name);
    snprintf(d->log, sizeof(d->log), "%s/%s.log", dir, name);
    snprintf(d->pidfile, sizeof(d->pidfile), "%s/%s.pid", dir, name);
    snprintf(d->endpoint, sizeof(d->endpoint), "tcp://127.0.0.1:%d", port);
    snprintf(text, sizeof(text),
             "[repository]\ndsn = %s\npool_size = 4\n"
             "[core]\nname = %s\ngroup = %s\nlog_level = debug\n"
             "[bus]\n%s%s%s%s%sheartbeat_interval_ms = 100\npoll_interval_ms = 60000\n"
             "[retry]\nattempts = 1\ninterval_ms = 100\n"
             "[daemon]\nlisten = %s\nworkers = 3\npidfile = %s\n%s",
             core_dsn, name, group, bus ? "publish = " : "", bus ? bus->fe : "",
             bus ? "\nsubscribe = " : "", bus ? bus->be : "", bus ? "\n" : "", d->endpoint,
             d->pidfile, extra ? extra : "");
    cgt_write_file(d->ini, text);
    free(core_dsn);
    free(dir);
}

/* Start the prepared daemon and wait for its "started" line. */
static void daemon_run(daemon_t *d)
{
    char *argv[] = {(char *)cgt_bin("coregroupd"), "-c", d->ini, NULL};
    int64_t until = bt_ms() + 20000;
    char *log = bt_slurp(d->log);
    int before = bt_count(log, "event=started"); /* a restart appends to the same log */
    free(log);
    d->pid = bt_spawn(argv, d->log, NULL);
    for (;;) {
        int up;
        log = bt_slurp(d->log);
        up = bt_count(log, "event=started") > before;
        if (!up && (bt_wait(d->pid, 0) >= 0 || bt_ms() > until))
            ck_abort_msg("coregroupd %s did not start:\n%s", d->name, log);
        free(log);
        if (up)
            return;
        usleep(10000);
    }
}

static void daemon_start(daemon_t *d, const char *name, const char *group, const bt_busd *bus)
{
    daemon_init(d, name, group, bus, NULL);
    daemon_run(d);
}

static void daemon_stop(daemon_t *d)
{
    if (d->pid > 0)
        bt_stop(d->pid, SIGTERM, 0);
    d->pid = 0;
}

/* ---- cgctl -------------------------------------------------------------------------------- */

/* Run cgctl -c INI ARGS; *rc its exit status; stdout and stderr together, a new string. */
static char *ctl(int *rc, const daemon_t *d, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *ctl(int *rc, const daemon_t *d, const char *fmt, ...)
{
    char args[6000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return cgt_run(rc, "'%s' -c '%s' %s", cgt_bin("cgctl"), d->ini, args);
}

/* cgctl --json ARGS, expecting exit status `want`: the reply (the caller frees). */
static cJSON *ctl_json(int want, const daemon_t *d, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static cJSON *ctl_json(int want, const daemon_t *d, const char *fmt, ...)
{
    char args[6000], *out;
    va_list ap;
    cJSON *j;
    int rc;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    out = ctl(&rc, d, "--json %s", args);
    ck_assert_msg(rc == want, "cgctl %s: exit %d, expected %d:\n%s", args, rc, want, out);
    j = cgt_json_line(out);
    free(out);
    return j;
}

static int jok(const cJSON *o)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok"));
}

/* Register a resource through `d`; its handle. */
static long long reg(const daemon_t *d, const char *extra)
{
    cJSON *r = ctl_json(0, d, "register --state '{\"n\":0}' %s", extra ? extra : "");
    long long h = cgt_jint(r, "handle");
    cJSON_Delete(r);
    return h;
}

/* The version of part `part` of h through `d` (-1: not found). */
static long long version_via(const daemon_t *d, long long h, const char *part)
{
    int rc;
    char *out = ctl(&rc, d, "--json get %lld %s", h, part);
    cJSON *r = cgt_json_line(out);
    long long v = jok(r) ? cgt_jint(r, "version") : -1;
    ck_assert_msg(rc == 0 || (rc == 1 && strcmp(cgt_jstr(r, "error.code"), "not-found") == 0), "%s",
                  out);
    cJSON_Delete(r);
    free(out);
    return v;
}

/* ---- raw sockets ------------------------------------------------------------------------ */

/* Send frames on a fresh socket of `type` (DEALER or REQ) and wait up to timeout_ms for the
 * reply's last frame: a new string, or NULL when none came. */
static char *raw(const char *ep, int type, const char *const *frames, const size_t *lens, int n,
                 int timeout_ms)
{
    void *ctx = zmq_ctx_new(), *s = bt_socket(ctx, type);
    zmq_msg_t m;
    char *reply = NULL;
    int i, more = 0;
    size_t moresz = sizeof(more);

    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout_ms, sizeof(timeout_ms));
    ck_assert_int_eq(zmq_connect(s, ep), 0);
    for (i = 0; i < n; i++)
        ck_assert_int_ge(zmq_send(s, frames[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0), 0);
    zmq_msg_init(&m);
    for (;;) {
        if (zmq_msg_recv(&m, s, 0) < 0)
            break;
        zmq_getsockopt(s, ZMQ_RCVMORE, &more, &moresz);
        if (more)
            continue;
        reply = strndup(zmq_msg_data(&m), zmq_msg_size(&m));
        break;
    }
    zmq_msg_close(&m);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return reply;
}

static char *raw1(const char *ep, const char *data, size_t len, int timeout_ms)
{
    const char *f[1] = {data};
    size_t l[1] = {len};
    return raw(ep, ZMQ_DEALER, f, l, 1, timeout_ms);
}

/* Send `data` and expect an "invalid" reply whose message contains `want` (and whose error
 * names `field` when given). */
static void expect_invalid(const char *ep, const char *data, size_t len, const char *want,
                           const char *field)
{
    char *reply = raw1(ep, data, len, 5000);
    cJSON *r;
    ck_assert_msg(reply != NULL, "no reply to a bad request (%.60s)", data);
    r = cJSON_Parse(reply);
    ck_assert_msg(r && !jok(r), "not an error reply: %s", reply);
    ck_assert_msg(strcmp(cgt_jstr(r, "error.code"), "invalid") == 0, "%s", reply);
    ck_assert_msg(strstr(cgt_jstr(r, "error.message"), want), "expected \"%s\" in %s", want, reply);
    if (field)
        ck_assert_msg(strcmp(cgt_jstr(r, "error.field"), field) == 0, "expected field %s in %s",
                      field, reply);
    cJSON_Delete(r);
    free(reply);
}

static void expect_serving(const daemon_t *d)
{
    const char good[] = "{\"v\":1,\"id\":\"alive\",\"op\":\"health\"}";
    char *reply = raw1(d->endpoint, good, strlen(good), 5000);
    cJSON *r;
    ck_assert_msg(reply != NULL, "the daemon stopped answering");
    r = cJSON_Parse(reply);
    ck_assert_msg(r && jok(r) && strcmp(cgt_jstr(r, "id"), "alive") == 0, "%s", reply);
    ck_assert_int_eq(bt_wait(d->pid, 0), -1); /* still running */
    cJSON_Delete(r);
    free(reply);
}

/* ---- database --------------------------------------------------------------------------- */

static char *core_state(const char *group, const char *name)
{
    PGconn *c = cgt_connect(dsn);
    char sql[512], *v;
    snprintf(sql, sizeof(sql),
             "SELECT state FROM cores WHERE group_id = '%s' AND core_name = '%s' "
             "ORDER BY incarnation DESC LIMIT 1",
             group, name);
    v = cgt_query1(c, sql);
    PQfinish(c);
    return v;
}

/* ---- tests: the API --------------------------------------------------------------------- */

START_TEST(api_round_trips)
{
    daemon_t a;
    cJSON *r;
    char *out, file[400];
    long long h, f;
    int rc;

    daemon_start(&a, "api-a", "dt-api", NULL);

    /* register (text output: the handle) */
    out = ctl(&rc, &a,
              "register --kind service --service-id svc-api --state '{\"n\":0}' "
              "--description '{\"about\":\"printer\"}'");
    ck_assert_msg(rc == 0, "%s", out);
    h = atoll(out);
    ck_assert_int_gt(h, 0);
    free(out);
    r = ctl_json(0, &a, "register --kind folder");
    f = cgt_jint(r, "handle");
    cJSON_Delete(r);

    /* get: the whole resource, then one part */
    r = ctl_json(0, &a, "get %lld", h);
    ck_assert_int_eq(cgt_jint(r, "handle"), h);
    ck_assert_str_eq(cgt_jstr(r, "kind"), "service");
    ck_assert_str_eq(cgt_jstr(r, "service_id"), "svc-api");
    ck_assert_int_eq(cgt_jint(r, "parts.state.version"), 1);
    ck_assert_int_eq(cgt_jint(r, "parts.state.body.n"), 0);
    ck_assert_str_eq(cgt_jstr(r, "parts.description.body.about"), "printer");
    ck_assert_int_eq(cgt_jint(r, "parts.specification.version"), 1);
    cJSON_Delete(r);
    r = ctl_json(0, &a, "get %lld state", h);
    ck_assert_str_eq(cgt_jstr(r, "part"), "state");
    ck_assert_int_eq(cgt_jint(r, "version"), 1);
    cJSON_Delete(r);

    /* update (text output: the new version), then read it back */
    out = ctl(&rc, &a, "update %lld state 1 '{\"n\":1}'", h);
    ck_assert_msg(rc == 0 && atoll(out) == 2, "%s", out);
    free(out);
    r = ctl_json(0, &a, "get %lld state", h);
    ck_assert_int_eq(cgt_jint(r, "version"), 2);
    ck_assert_int_eq(cgt_jint(r, "body.n"), 1);
    cJSON_Delete(r);
    out = ctl(&rc, &a, "get %lld state", h); /* text: "PART version V BODY" */
    ck_assert_msg(rc == 0 && strncmp(out, "state version 2 {", 17) == 0, "%s", out);
    free(out);
    out = ctl(&rc, &a, "get %lld", h);
    ck_assert_msg(rc == 0 && strstr(out, "kind service service_id svc-api") &&
                      strstr(out, "\nstate version 2 {") &&
                      strstr(out, "\nspecification version 1"),
                  "%s", out);
    free(out);

    /* names: bind in the root and in a folder, list, lookup, a taken name */
    cJSON_Delete(ctl_json(0, &a, "bind 0 alpha %lld", h));
    cJSON_Delete(ctl_json(0, &a, "bind %lld beta %lld", f, h));
    r = ctl_json(1, &a, "bind 0 alpha %lld", f);
    ck_assert_str_eq(cgt_jstr(r, "error.code"), "exists");
    cJSON_Delete(r);
    r = ctl_json(0, &a, "list");
    {
        const cJSON *e;
        int found = 0;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "names"))
        {
            found += strcmp(cgt_jstr(e, "name"), "alpha") == 0 && cgt_jint(e, "target") == h;
        }
        ck_assert_int_eq(found, 1);
    }
    cJSON_Delete(r);
    out = ctl(&rc, &a, "list %lld", f);
    ck_assert_msg(rc == 0 && strstr(out, "beta\t"), "%s", out);
    free(out);
    out = ctl(&rc, &a, "lookup alpha");
    ck_assert_msg(rc == 0 && atoll(out) == h, "%s", out);
    free(out);
    r = ctl_json(0, &a, "lookup %lld beta", f);
    ck_assert_int_eq(cgt_jint(r, "target"), h);
    cJSON_Delete(r);

    /* find: the Locator */
    r = ctl_json(0, &a, "find svc-api");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "handles")), 1);
    ck_assert_int_eq(
        (long long)cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "handles"), 0)
            ->valuedouble,
        h);
    cJSON_Delete(r);

    /* multi with refresh-and-lock: the update based on the locked version cannot be stale */
    snprintf(file, sizeof(file), "%s/lock.json", a.dir);
    {
        char text[512];
        snprintf(text, sizeof(text),
                 "[{\"op\":\"lock\",\"handle\":%lld,\"part\":\"state\"},"
                 "{\"op\":\"update\",\"handle\":%lld,\"part\":\"state\",\"expected\":2,"
                 "\"body\":{\"n\":2}},{\"op\":\"get\",\"handle\":%lld,\"part\":\"state\"}]",
                 h, h, h);
        cgt_write_file(file, text);
    }
    r = ctl_json(0, &a, "multi '%s'", file);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "results")), 3);
    ck_assert_int_eq(
        cgt_jint(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "results"), 0), "version"),
        2);
    ck_assert_int_eq(
        cgt_jint(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "results"), 2), "body.n"),
        2); /* the call reads its own write */
    cJSON_Delete(r);
    out = cgt_run(&rc, "'%s' -c '%s' multi - < '%s'", cgt_bin("cgctl"), a.ini, file);
    ck_assert_msg(rc == 1 && strstr(out, "operation 1 (update) failed: stale"), "%s", out);
    free(out);

    /* unbind, unregister; then both are gone */
    cJSON_Delete(ctl_json(0, &a, "unbind alpha"));
    r = ctl_json(1, &a, "lookup alpha");
    ck_assert_str_eq(cgt_jstr(r, "error.code"), "not-found");
    cJSON_Delete(r);
    out = ctl(&rc, &a, "unregister %lld", h);
    ck_assert_msg(rc == 0 && strstr(out, "unregistered"), "%s", out);
    free(out);
    r = ctl_json(1, &a, "get %lld", h);
    ck_assert_str_eq(cgt_jstr(r, "error.code"), "not-found");
    cJSON_Delete(r);
    out = ctl(&rc, &a, "get %lld state", h);
    ck_assert_msg(rc == 1 && strstr(out, "cgctl: not-found: "), "%s", out);
    free(out);

    /* members, stats, health */
    r = ctl_json(0, &a, "members");
    {
        const cJSON *e;
        int found = 0;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "members"))
        {
            if (strcmp(cgt_jstr(e, "name"), "api-a") != 0)
                continue;
            found = 1;
            ck_assert_str_eq(cgt_jstr(e, "state"), "alive");
            ck_assert_int_gt(cgt_jint(e, "incarnation"), 0);
            ck_assert_int_ge(cgt_jint(e, "heartbeat_age_ms"), 0);
            ck_assert_int_ge(cgt_jint(e, "lag"), 0);
        }
        ck_assert(found);
    }
    cJSON_Delete(r);
    out = ctl(&rc, &a, "members");
    ck_assert_msg(rc == 0 && strstr(out, "CORE") && strstr(out, "api-a") && strstr(out, "alive"),
                  "%s", out);
    free(out);
    r = ctl_json(0, &a, "stats");
    ck_assert_str_eq(cgt_jstr(r, "core"), "api-a");
    ck_assert_str_eq(cgt_jstr(r, "group"), "dt-api");
    ck_assert_int_gt(cgt_jint(r, "stats.calls_committed"), 5);
    ck_assert_int_ge(cgt_jint(r, "stats.stale_errors"), 1);
    ck_assert_int_gt(cgt_jint(r, "daemon.requests"), 10);
    ck_assert_int_ge(cgt_jint(r, "daemon.errors_by_code.stale"), 1);
    cJSON_Delete(r);
    out = ctl(&rc, &a, "health");
    ck_assert_msg(rc == 0 && strncmp(out, "healthy", 7) == 0, "%s", out);
    free(out);
    daemon_stop(&a);
}
END_TEST

/* The reply (a new string, NULL on timeout) to a one-part get with this id, sent by hand. */
static char *get_by_hand(const daemon_t *d, const char *id, long long h, const char *part)
{
    char req[192];
    snprintf(req, sizeof(req),
             "{\"v\":1,\"id\":\"%s\",\"op\":\"get\",\"handle\":%lld,\"part\":\"%s\"}", id, h, part);
    return raw1(d->endpoint, req, strlen(req), 5000);
}

/* A get the core can serve from its cache is answered by the broker thread (logged as
 * worker=broker cached=1), with the very reply a worker builds; a miss and every other
 * request still go to a worker. */
START_TEST(cached_gets_are_answered_by_the_broker)
{
    daemon_t a;
    char *reply, *log;
    cJSON *r;
    long long h;
    int rc;

    daemon_start(&a, "bk-a", "dt-bk", NULL);
    reply = ctl(&rc, &a, "register --kind service --state '{\"n\":7}'");
    ck_assert_msg(rc == 0, "%s", reply);
    h = atoll(reply);
    free(reply);

    /* the first get loads the part (a worker), the second finds it cached */
    reply = get_by_hand(&a, "bk-0", h, "state");
    ck_assert_msg(reply && strstr(reply, "\"ok\":true"), "%s", reply ? reply : "(none)");
    free(reply);
    reply = get_by_hand(&a, "bk-1", h, "state");
    ck_assert_ptr_nonnull(reply);
    r = cJSON_Parse(reply);
    ck_assert_msg(r && jok(r), "%s", reply);
    ck_assert_str_eq(cgt_jstr(r, "id"), "bk-1");
    ck_assert_int_eq(cgt_jint(r, "handle"), h);
    ck_assert_str_eq(cgt_jstr(r, "part"), "state");
    ck_assert_int_eq(cgt_jint(r, "version"), 1);
    ck_assert_int_eq(cgt_jint(r, "body.n"), 7);
    cJSON_Delete(r);
    free(reply);
    ck_assert(bt_wait_lines(a.log, "id=\"bk-1\"", "worker=broker", 1, 5000));
    log = bt_slurp(a.log);
    ck_assert_msg(strstr(log, "cached=1"), "%s", log);
    free(log);

    /* a part nobody has read is loaded by a worker; a missing one is not_found from a worker */
    reply = get_by_hand(&a, "bk-2", h, "description");
    ck_assert_msg(reply && strstr(reply, "\"ok\":true"), "%s", reply ? reply : "(none)");
    free(reply);
    reply = get_by_hand(&a, "bk-3", 987654, "state");
    ck_assert_msg(reply && strstr(reply, "\"not-found\""), "%s", reply ? reply : "(none)");
    free(reply);
    ck_assert(bt_wait_lines(a.log, "id=\"bk-3\"", "code=not-found", 1, 5000));
    ck_assert(bt_wait_lines(a.log, "id=\"bk-2\"", "code=ok", 1, 5000));
    log = bt_slurp(a.log);
    ck_assert_msg(bt_lines_with(log, "id=\"bk-2\"", "worker=broker") == 0 &&
                      bt_lines_with(log, "id=\"bk-3\"", "worker=broker") == 0,
                  "a miss was answered by the broker:\n%s", log);
    free(log);
    daemon_stop(&a);
}
END_TEST

START_TEST(stale_update_carries_current_version)
{
    daemon_t a;
    cJSON *r, *e;
    char *out;
    long long h;
    int rc;

    daemon_start(&a, "stale-a", "dt-stale", NULL);
    h = reg(&a, NULL);
    cJSON_Delete(ctl_json(0, &a, "update %lld state 1 '{\"n\":1}'", h));
    cJSON_Delete(ctl_json(0, &a, "update %lld state 2 '{\"n\":2}'", h));
    /* a client that read version 1 */
    r = ctl_json(1, &a, "update %lld state 1 '{\"n\":9}'", h);
    ck_assert(!jok(r));
    e = cJSON_GetObjectItemCaseSensitive(r, "error");
    ck_assert_str_eq(cgt_jstr(e, "code"), "stale");
    ck_assert_int_eq(cgt_jint(e, "handle"), h);
    ck_assert_str_eq(cgt_jstr(e, "part"), "state");
    ck_assert_int_eq(cgt_jint(e, "expected"), 1);
    ck_assert_int_eq(cgt_jint(e, "actual"), 3);
    cJSON_Delete(r);
    /* the text form names the current version too */
    out = ctl(&rc, &a, "update %lld state 1 '{\"n\":9}'", h);
    ck_assert_msg(rc == 1 && strstr(out, "cgctl: stale: ") && strstr(out, "current 3"), "%s", out);
    free(out);
    /* re-read and retry with the current version: it goes through */
    r = ctl_json(0, &a, "update %lld state 3 '{\"n\":9}'", h);
    ck_assert_int_eq(cgt_jint(r, "version"), 4);
    cJSON_Delete(r);
    ck_assert_int_eq(version_via(&a, h, "state"), 4);
    daemon_stop(&a);
}
END_TEST

/* Wait until daemon `d` serves version >= v of h's state; ms taken, or -1 after limit_ms. */
static long long wait_version(const daemon_t *d, long long h, long long v, int limit_ms)
{
    int64_t t0 = bt_ms();
    while (bt_ms() - t0 <= limit_ms) {
        if (version_via(d, h, "state") >= v)
            return bt_ms() - t0;
        usleep(5000);
    }
    return -1;
}

START_TEST(multi_rolls_back_entirely_when_its_last_op_is_stale)
{
    bt_busd busd;
    daemon_t a, b;
    char *dir = cgt_tmpdir(), file[400], text[2048], *out;
    long long h1, h2, ms;
    cJSON *r;
    int rc;

    memset(&busd, 0, sizeof(busd));
    bt_busd_start(&busd, dir, "multi", NULL);
    daemon_start(&a, "multi-a", "dt-multi", &busd);
    daemon_start(&b, "multi-b", "dt-multi", &busd);
    h1 = reg(&a, NULL);
    h2 = reg(&a, NULL);
    ck_assert_int_eq(version_via(&b, h1, "state"), 1); /* cached in B */
    ck_assert_int_eq(version_via(&b, h2, "state"), 1);

    /* four operations, the last one stale: nothing of it may stay */
    snprintf(file, sizeof(file), "%s/multi.json", dir);
    snprintf(text, sizeof(text),
             "[{\"op\":\"update\",\"handle\":%lld,\"part\":\"state\",\"expected\":1,"
             "\"body\":{\"n\":1}},"
             "{\"op\":\"bind\",\"name\":\"m-name\",\"target\":%lld},"
             "{\"op\":\"register\",\"service_id\":\"multi-new\"},"
             "{\"op\":\"update\",\"handle\":%lld,\"part\":\"state\",\"expected\":5,"
             "\"body\":{\"n\":5}}]",
             h1, h1, h2);
    cgt_write_file(file, text);
    r = ctl_json(1, &a, "multi '%s'", file);
    ck_assert_str_eq(cgt_jstr(r, "error.code"), "stale");
    ck_assert_int_eq(cgt_jint(r, "error.index"), 3);
    ck_assert_str_eq(cgt_jstr(r, "error.op"), "update");
    ck_assert_int_eq(cgt_jint(r, "error.actual"), 1);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(r, "results"));
    cJSON_Delete(r);

    /* on A, and on B of the same group: the old versions, no name, no new resource */
    ck_assert_int_eq(version_via(&a, h1, "state"), 1);
    ck_assert_int_eq(version_via(&b, h1, "state"), 1);
    ck_assert_int_eq(version_via(&a, h2, "state"), 1);
    r = ctl_json(1, &a, "lookup m-name");
    ck_assert_str_eq(cgt_jstr(r, "error.code"), "not-found");
    cJSON_Delete(r);
    r = ctl_json(1, &b, "lookup m-name");
    ck_assert_str_eq(cgt_jstr(r, "error.code"), "not-found");
    cJSON_Delete(r);
    r = ctl_json(0, &b, "find multi-new");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "handles")), 0);
    cJSON_Delete(r);
    {
        PGconn *c = cgt_connect(dsn);
        char *n = cgt_query1(c, "SELECT count(*) FROM resources WHERE service_id = 'multi-new'");
        ck_assert_str_eq(n, "0");
        free(n);
        PQfinish(c);
    }

    /* a failure that leaves a library call usable (not found) aborts a multi all the same */
    snprintf(text, sizeof(text),
             "[{\"op\":\"update\",\"handle\":%lld,\"part\":\"state\",\"expected\":1,"
             "\"body\":{\"n\":1}},{\"op\":\"lookup\",\"name\":\"no-such-name\"}]",
             h1);
    cgt_write_file(file, text);
    r = ctl_json(1, &a, "multi '%s'", file);
    ck_assert_str_eq(cgt_jstr(r, "error.code"), "not-found");
    ck_assert_int_eq(cgt_jint(r, "error.index"), 1);
    cJSON_Delete(r);
    ck_assert_int_eq(version_via(&a, h1, "state"), 1);

    /* the same multi without the stale op commits all of it, and B sees it over the bus */
    snprintf(text, sizeof(text),
             "[{\"op\":\"update\",\"handle\":%lld,\"part\":\"state\",\"expected\":1,"
             "\"body\":{\"n\":1}},"
             "{\"op\":\"bind\",\"name\":\"m-name\",\"target\":%lld},"
             "{\"op\":\"update\",\"handle\":%lld,\"part\":\"state\",\"expected\":1,"
             "\"body\":{\"n\":5}}]",
             h1, h1, h2);
    cgt_write_file(file, text);
    out = ctl(&rc, &a, "multi '%s'", file);
    ck_assert_msg(rc == 0 && bt_count(out, "\n") == 3, "%s", out);
    free(out);
    ms = wait_version(&b, h1, 2, 3000);
    ck_assert_msg(ms >= 0, "B still serves the old version of %lld after 3 s", h1);
    ck_assert_int_eq(version_via(&b, h2, "state"), 2);
    r = ctl_json(0, &b, "lookup m-name");
    ck_assert_int_eq(cgt_jint(r, "target"), h1);
    cJSON_Delete(r);
    daemon_stop(&a);
    daemon_stop(&b);
    free(dir);
}
END_TEST

START_TEST(two_daemons_see_each_others_updates)
{
    bt_busd busd;
    daemon_t a, b;
    char *dir = cgt_tmpdir();
    long long h, ms, worst = 0;
    cJSON *r;
    int i;

    memset(&busd, 0, sizeof(busd));
    bt_busd_start(&busd, dir, "two", NULL);
    daemon_start(&a, "two-a", "dt-two", &busd);
    daemon_start(&b, "two-b", "dt-two", &busd);
    h = reg(&a, NULL);
    for (i = 1; i <= 5; i++) {
        ck_assert_int_eq(version_via(&b, h, "state"), i); /* B caches version i */
        cJSON_Delete(ctl_json(0, &a, "update %lld state %d '{\"n\":%d}'", h, i, i));
        /* the poll backstop is 60 s: only the bus can make this quick */
        ms = wait_version(&b, h, i + 1, 3000);
        ck_assert_msg(ms >= 0, "B still serves version %d of %lld after 3 s", i, h);
        if (ms > worst)
            worst = ms;
    }
    r = ctl_json(0, &b, "stats");
    ck_assert_int_ge(cgt_jint(r, "stats.invalidations_received"), 5);
    ck_assert_int_ge(cgt_jint(r, "stats.cache_hits"), 1);
    cJSON_Delete(r);
    /* and the other way round */
    cJSON_Delete(ctl_json(0, &b, "update %lld state 6 '{\"n\":6}'", h));
    ck_assert_msg(wait_version(&a, h, 7, 3000) >= 0, "A never saw B's update");
    fprintf(stderr, "two daemons: an update through A reached B's cache within %lld ms\n", worst);
    daemon_stop(&a);
    daemon_stop(&b);
    free(dir);
}
END_TEST

/* ---- tests: bad input --------------------------------------------------------------------- */

START_TEST(malformed_requests_get_error_replies)
{
    daemon_t a;
    const char *ep;
    char *big, *reply, text[512];
    size_t n, i;
    cJSON *r;
    int bad = 0;

    daemon_start(&a, "bad-a", "dt-bad", NULL);
    ep = a.endpoint;

#define BAD(data, want, field)                                                                     \
    do {                                                                                           \
        expect_invalid(ep, data, strlen(data), want, field);                                       \
        bad++;                                                                                     \
    } while (0)
    BAD("nonsense", "not JSON (syntax error at offset 0)", NULL);
    BAD("{\"v\":1,\"id\":1,\"op\":\"health\"", "not JSON", NULL);
    BAD("{\"v\":1,\"id\":1,\"op\":\"health\"} x", "data after the JSON value", NULL);
    BAD("[1,2]", "expected a JSON object, got an array", NULL);
    BAD("\"get\"", "expected a JSON object, got a string", NULL);
    BAD("{\"v\":1,\"op\":\"get\",\"handle\":1}", "missing", "id");
    BAD("{\"id\":1,\"op\":\"health\"}", "missing", "v");
    BAD("{\"v\":\"1\",\"id\":1,\"op\":\"health\"}", "expected an integer wire version", "v");
    BAD("{\"v\":3,\"id\":\"x\",\"op\":\"health\"}", "unknown wire version 3", "v");
    BAD("{\"v\":1,\"id\":\"x\",\"op\":\"audit\"}", "needs wire version 2", "v");
    BAD("{\"v\":1,\"id\":{},\"op\":\"health\"}", "expected a string", "id");
    BAD("{\"v\":1,\"id\":1}", "missing", "op");
    BAD("{\"v\":1,\"id\":1,\"op\":7}", "expected an operation name", "op");
    BAD("{\"v\":1,\"id\":1,\"op\":\"frob\"}", "unknown operation \"frob\"", "op");
    BAD("{\"v\":1,\"id\":1,\"op\":\"get\"}", "missing", "handle");
    BAD("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":\"12\"}", "expected an integer, got a string",
        "handle");
    BAD("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":1.5}", "expected an integer, got 1.5",
        "handle");
    BAD("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":-1}", "expected an integer from 0", "handle");
    BAD("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":9007199254740992}",
        "expected an integer from 0", "handle");
    BAD("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":1,\"handle\":2}", "given twice", "handle");
    BAD("{\"v\":1,\"id\":1,\"op\":\"update\",\"handle\":1,\"part\":\"bogus\",\"expected\":1,"
        "\"body\":{}}",
        "unknown part \"bogus\"", "part");
    BAD("{\"v\":1,\"id\":1,\"op\":\"update\",\"handle\":1,\"part\":\"state\",\"expected\":0,"
        "\"body\":{}}",
        "expected an integer from 1", "expected");
    BAD("{\"v\":1,\"id\":1,\"op\":\"update\",\"handle\":1,\"part\":\"state\",\"expected\":1}",
        "missing", "body");
    BAD("{\"v\":1,\"id\":1,\"op\":\"bind\",\"name\":5,\"target\":1}", "expected a string", "name");
    BAD("{\"v\":1,\"id\":1,\"op\":\"register\",\"kind\":[]}", "expected a string or null", "kind");
    BAD("{\"v\":1,\"id\":1,\"op\":\"find\"}", "missing", "service_id");
    BAD("{\"v\":1,\"id\":1,\"op\":\"multi\"}", "missing", "ops");
    BAD("{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":{}}", "expected an array", "ops");
    BAD("{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[]}", "empty", "ops");
    BAD("{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[1]}", "expected an operation object",
        "ops[0]");
    BAD("{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[{\"op\":\"shutdown\"}]}",
        "not allowed inside a multi", "ops[0].op");
    BAD("{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[{\"op\":\"list\"},{\"op\":\"get\","
        "\"handle\":-1}]}",
        "expected an integer from 0", "ops[1].handle");
    BAD("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":1,\"part\":\"sta\\u0000te\"}",
        "\\u0000 (a NUL character)", NULL);
    BAD("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":1,\"part\":\"\xc3\x28\"}", "not UTF-8", NULL);
    expect_invalid(ep, "{\"v\":1,\0}", 9, "NUL byte at offset 7", NULL);
    bad++;
    expect_invalid(ep, "", 0, "empty", NULL);
    bad++;

    /* the id of a refused request is echoed when it could be read */
    {
        const char *v3 = "{\"v\":3,\"id\":\"keep-me\",\"op\":\"health\"}";
        reply = raw1(ep, v3, strlen(v3), 5000);
    }
    ck_assert_msg(reply && strstr(reply, "\"id\":\"keep-me\""), "%s", reply ? reply : "(none)");
    free(reply);
    bad++;

    /* deep nesting, too many ops, over 1 MiB */
    big = malloc(8 << 20);
    n = (size_t)snprintf(big, 64, "{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":1,\"x\":");
    for (i = 0; i < 5000; i++)
        big[n++] = '[';
    for (i = 0; i < 5000; i++)
        big[n++] = ']';
    big[n++] = '}';
    big[n] = '\0';
    expect_invalid(ep, big, n, "not JSON", NULL); /* balanced, but nested beyond 1000 */
    bad++;
    n = (size_t)snprintf(big, 64, "{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[");
    for (i = 0; i < 1001; i++)
        n += (size_t)snprintf(big + n, 32, "%s{\"op\":\"list\"}", i ? "," : "");
    n += (size_t)snprintf(big + n, 8, "]}");
    expect_invalid(ep, big, n, "more than the limit of 1000 operations", "ops");
    bad++;
    n = (size_t)snprintf(big, 64, "{\"v\":1,\"id\":1,\"op\":\"health\",\"pad\":\"");
    memset(big + n, 'x', (1 << 20));
    n += 1 << 20;
    n += (size_t)snprintf(big + n, 8, "\"}");
    expect_invalid(ep, big, n, "more than the limit of 1048576", NULL);
    bad++;

    /* an absurd frame: ZeroMQ drops that connection, there is no reply; the daemon serves on */
    memset(big, 'x', 8 << 20);
    reply = raw1(ep, big, 8 << 20, 1000);
    ck_assert_msg(reply == NULL, "a reply to an 8 MiB frame: %.200s", reply);
    free(big);
    expect_serving(&a);

    /* a bad envelope from a DEALER (two frames), and a well-formed one from a REQ socket */
    {
        const char *f[2] = {"a", "{\"v\":1,\"id\":1,\"op\":\"health\"}"};
        size_t l[2] = {1, strlen(f[1])};
        reply = raw(ep, ZMQ_DEALER, f, l, 2, 5000);
        ck_assert_msg(reply && strstr(reply, "\"code\":\"invalid\"") && strstr(reply, "frames"),
                      "%s", reply ? reply : "(none)");
        free(reply);
        bad++;
        reply = raw(ep, ZMQ_REQ, f + 1, l + 1, 1, 5000);
        ck_assert_msg(reply && strstr(reply, "\"ok\":true"), "%s", reply ? reply : "(none)");
        free(reply);
    }

    /* cgctl send: a bad request is exit 1, the reply on stdout */
    {
        int rc;
        char *out = ctl(&rc, &a, "send '{\"v\":1,\"id\":1,\"op\":\"nope\"}'");
        ck_assert_msg(rc == 1 && strstr(out, "unknown operation"), "%s", out);
        free(out);
        bad++;
    }

    /* still serving, and every bad request was counted */
    expect_serving(&a);
    snprintf(text, sizeof(text), "{\"v\":1,\"id\":\"s\",\"op\":\"stats\"}");
    reply = raw1(ep, text, strlen(text), 5000);
    ck_assert_ptr_nonnull(reply);
    r = cJSON_Parse(reply);
    ck_assert_int_ge(cgt_jint(r, "daemon.malformed"), bad);
    ck_assert_int_ge(cgt_jint(r, "daemon.errors_by_code.invalid"), bad);
    cJSON_Delete(r);
    free(reply);
    {
        char *log = bt_slurp(a.log);
        ck_assert_int_ge(bt_lines_with(log, "level=warn event=bad-request", NULL), bad);
        free(log);
    }
    daemon_stop(&a);
#undef BAD
}
END_TEST

START_TEST(cgctl_usage_errors)
{
    daemon_t a;
    char *out;
    int rc;

    daemon_init(&a, "usage-a", "dt-usage", NULL, NULL); /* not started: usage is checked first */
    out = cgt_run(&rc, "'%s' --help", cgt_bin("cgctl"));
    ck_assert_msg(rc == 0 && strstr(out, "Usage: cgctl") && strstr(out, "Exit status"), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' --version", cgt_bin("cgctl"));
    ck_assert_msg(rc == 0 && strstr(out, "cgctl " CG_VERSION), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' health", cgt_bin("cgctl"));
    ck_assert_msg(rc == 2 && strstr(out, "no endpoint"), "%s", out);
    free(out);
    out = ctl(&rc, &a, "frob");
    ck_assert_msg(rc == 2 && strstr(out, "unknown command \"frob\""), "%s", out);
    free(out);
    out = ctl(&rc, &a, "get x");
    ck_assert_msg(rc == 2 && strstr(out, "HANDLE \"x\""), "%s", out);
    free(out);
    out = ctl(&rc, &a, "get 1 body");
    ck_assert_msg(rc == 2 && strstr(out, "part \"body\""), "%s", out);
    free(out);
    out = ctl(&rc, &a, "update 1 state 1 '{nope'");
    ck_assert_msg(rc == 2 && strstr(out, "not valid JSON"), "%s", out);
    free(out);
    out = ctl(&rc, &a, "update 1 state");
    ck_assert_msg(rc == 2 && strstr(out, "usage: cgctl update"), "%s", out);
    free(out);
    out = ctl(&rc, &a, "--timeout 0 health");
    ck_assert_msg(rc == 2 && strstr(out, "--timeout"), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' -c /nonexistent/repository.ini health", cgt_bin("cgctl"));
    ck_assert_msg(rc == 2 && strstr(out, "/nonexistent/repository.ini"), "%s", out);
    free(out);
    /* unreachable: nothing listens on the daemon's port */
    out = ctl(&rc, &a, "--timeout 300 get 1");
    ck_assert_msg(rc == 3 && strstr(out, "no answer from"), "%s", out);
    free(out);
}
END_TEST

/* ---- tests: operations -------------------------------------------------------------------- */

static int metric_name_ok(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return 0;
    for (i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return 0;
    return 1;
}

START_TEST(stats_prometheus_output_parses)
{
    daemon_t a;
    char *out, *line, *save = NULL, typed[128][96];
    int rc, ntyped = 0, samples = 0, saw_hits = 0, i;

    daemon_start(&a, "prom-a", "dt-prom", NULL);
    {
        long long h = reg(&a, NULL);
        free(ctl(&rc, &a, "get %lld state", h)); /* a miss that fills the cache */
        free(ctl(&rc, &a, "get %lld state", h)); /* a hit */
    }
    out = ctl(&rc, &a, "stats --prometheus");
    ck_assert_msg(rc == 0, "%s", out);
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[96];
        if (strncmp(line, "# HELP ", 7) == 0) {
            const char *sp = strchr(line + 7, ' ');
            ck_assert_msg(sp && metric_name_ok(line + 7, (size_t)(sp - line - 7)) && sp[1],
                          "bad HELP line: %s", line);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            const char *sp = strchr(line + 7, ' ');
            ck_assert_msg(sp && metric_name_ok(line + 7, (size_t)(sp - line - 7)),
                          "bad TYPE line: %s", line);
            ck_assert_msg(strcmp(sp + 1, "counter") == 0 || strcmp(sp + 1, "gauge") == 0 ||
                              strcmp(sp + 1, "untyped") == 0,
                          "bad type: %s", line);
            ck_assert_int_lt(ntyped, 128);
            snprintf(typed[ntyped++], sizeof(typed[0]), "%.*s", (int)(sp - line - 7), line + 7);
            if (strcmp(sp + 1, "counter") == 0)
                ck_assert_msg(sp - line > 13 && strncmp(sp - 6, "_total", 6) == 0,
                              "a counter not named *_total: %s", line);
        } else {
            /* name{core="..",group="..",...} value */
            const char *brace = strchr(line, '{'), *close = strrchr(line, '}');
            char *end;
            int known = 0;
            ck_assert_msg(line[0] != '#', "unknown comment line: %s", line);
            ck_assert_msg(brace && close && close > brace, "no labels: %s", line);
            ck_assert_msg(metric_name_ok(line, (size_t)(brace - line)), "bad name: %s", line);
            snprintf(name, sizeof(name), "%.*s", (int)(brace - line), line);
            ck_assert_msg(strstr(brace, "core=\"prom-a\"") && strstr(brace, "group=\"dt-prom\""),
                          "labels: %s", line);
            ck_assert_msg(close[1] == ' ', "no value: %s", line);
            strtod(close + 2, &end);
            ck_assert_msg(end != close + 2 && *end == '\0', "bad value: %s", line);
            for (i = 0; i < ntyped; i++)
                known |= strcmp(typed[i], name) == 0;
            ck_assert_msg(known, "a sample before its TYPE: %s", line);
            samples++;
            if (strcmp(name, "coregroup_cache_hits_total") == 0)
                saw_hits = atoi(close + 2) >= 1;
        }
    }
    ck_assert_int_ge(samples, 25);
    ck_assert_msg(saw_hits, "no coregroup_cache_hits_total >= 1");
    free(out);
    out = ctl(&rc, &a, "stats --prometheus --json");
    ck_assert_int_eq(rc, 2);
    free(out);
    daemon_stop(&a);
}
END_TEST

/* ---- tests: every field of the library's structs ----------------------------------------- */

#define MAX_FIELDS 256

/*
 * The field names of cg_core_stats, in order, as include/coregroup/core.h of the source tree
 * declares them: the text between "typedef struct cg_core_stats {" and "} cg_core_stats;" with
 * its comments removed (they may span lines), split into declarations at ';' and those into
 * declarators at ',' ("uint64_t a, b;"). A declarator's name is its last identifier once an
 * array size, bit width or initializer is cut off. Returns the number of names; fails the
 * test on what this reading cannot handle (a nested struct or union, a preprocessor line).
 */
static int stats_fields(char names[][64], int max)
{
    static const char open_[] = "typedef struct cg_core_stats {", close_[] = "} cg_core_stats;";
    char path[1024], *text, *body, *p, *decl, *save = NULL;
    const char *start, *end;
    size_t o = 0;
    int n = 0;

    snprintf(path, sizeof(path), "%s/include/coregroup/core.h", cgt_source_dir());
    text = bt_slurp(path);
    start = strstr(text, open_);
    ck_assert_msg(start != NULL, "%s: no \"%s\"", path, open_);
    start += strlen(open_);
    end = strstr(start, close_);
    ck_assert_msg(end != NULL, "%s: no \"%s\"", path, close_);
    body = malloc((size_t)(end - start) + 1);
    ck_assert_ptr_nonnull(body);
    for (p = (char *)start; p < end;) {
        if (p[0] == '/' && p[1] == '*') {
            const char *stop = strstr(p + 2, "*/");
            ck_assert_msg(stop != NULL && stop < end, "%s: an unterminated comment", path);
            p = (char *)stop + 2;
            body[o++] = ' ';
        } else if (p[0] == '/' && p[1] == '/') {
            while (p < end && *p != '\n')
                p++;
        } else {
            body[o++] = *p++;
        }
    }
    body[o] = '\0';
    ck_assert_msg(strpbrk(body, "{}#") == NULL,
                  "cg_core_stats has a nested struct or a preprocessor line: teach this reader");
    p = strrchr(body, ';');
    ck_assert_msg(p != NULL, "cg_core_stats declares no field");
    for (p++; *p; p++)
        ck_assert_msg(isspace((unsigned char)*p), "cg_core_stats ends in \"%s\"", p);
    for (decl = strtok_r(body, ";", &save); decl; decl = strtok_r(NULL, ";", &save)) {
        char *d, *save2 = NULL;
        if (strspn(decl, " \t\r\n") == strlen(decl))
            continue;
        for (d = strtok_r(decl, ",", &save2); d; d = strtok_r(NULL, ",", &save2)) {
            char *q = d + strcspn(d, "[:="), *id;
            while (q > d && isspace((unsigned char)q[-1]))
                q--;
            *q = '\0';
            for (id = q; id > d && (isalnum((unsigned char)id[-1]) || id[-1] == '_');)
                id--;
            ck_assert_msg(*id && !isdigit((unsigned char)*id), "no field name in \"%s\"", d);
            ck_assert_msg(strlen(id) < 64, "field name too long: %s", id);
            ck_assert_int_lt(n, max);
            snprintf(names[n++], 64, "%s", id);
        }
    }
    free(body);
    free(text);
    return n;
}

/* A reply to a request sent by hand (no cgctl in between): parsed, "ok" or not; the caller
 * frees. */
static cJSON *request(const daemon_t *d, const char *op)
{
    char req[128], *reply;
    cJSON *r;
    snprintf(req, sizeof(req), "{\"v\":1,\"id\":\"by-hand\",\"op\":\"%s\"}", op);
    reply = raw1(d->endpoint, req, strlen(req), 5000);
    ck_assert_msg(reply != NULL, "no reply to %s", req);
    r = cJSON_Parse(reply);
    ck_assert_msg(cJSON_IsObject(r), "not a JSON object: %s", reply);
    free(reply);
    return r;
}

/* Append " name" to the list in buf (size bytes); a name that does not fit is left off. */
static void list_add(char *buf, size_t size, const char *name)
{
    size_t o = strlen(buf), n = strlen(name);
    if (o + n + 2 > size)
        return;
    buf[o] = ' ';
    memcpy(buf + o + 1, name, n + 1);
}

START_TEST(stats_reply_has_exactly_the_fields_of_cg_core_stats)
{
    static const char *const gauges[] = {"coregroup_cache_entries", "coregroup_applied_seq",
                                         "coregroup_degraded",
                                         "coregroup_freshness_proof_age_seconds"};
    char names[MAX_FIELDS][64], missing[4096] = "", twice[4096] = "", extra[4096] = "", *out;
    daemon_t a;
    const cJSON *st, *e;
    cJSON *r;
    int n = stats_fields(names, MAX_FIELDS), i, rc;
    size_t k;

    ck_assert_int_gt(n, 0);
    daemon_start(&a, "fields-a", "dt-fields", NULL);
    r = request(&a, "stats");
    ck_assert_msg(jok(r), "stats failed");
    st = cJSON_GetObjectItemCaseSensitive(r, "stats");
    ck_assert_msg(cJSON_IsObject(st), "the reply has no stats object");
    for (i = 0; i < n; i++) {
        int seen = 0;
        cJSON_ArrayForEach(e, st)
        {
            seen += strcmp(e->string, names[i]) == 0;
        }
        if (seen == 0)
            list_add(missing, sizeof(missing), names[i]);
        else if (seen > 1)
            list_add(twice, sizeof(twice), names[i]);
    }
    cJSON_ArrayForEach(e, st)
    {
        int known = 0;
        for (i = 0; i < n; i++)
            known |= strcmp(e->string, names[i]) == 0;
        if (!known)
            list_add(extra, sizeof(extra), e->string);
        ck_assert_msg(cJSON_IsNumber(e) && e->valuedouble == (double)(long long)e->valuedouble,
                      "stats.%s is not an integer", e->string);
    }
    ck_assert_msg(missing[0] == '\0',
                  "the stats reply lacks these fields of cg_core_stats (plumb them in "
                  "coregroup/daemon_ops.c, coregroup/stats_metrics.c and REQUESTS.md):%s",
                  missing);
    ck_assert_msg(twice[0] == '\0', "the stats reply has these fields twice:%s", twice);
    ck_assert_msg(extra[0] == '\0', "the stats reply has fields cg_core_stats does not:%s", extra);
    cJSON_Delete(r);

    /* cgctl shows them all: one line each, and each a typed metric it knows */
    out = ctl(&rc, &a, "stats");
    ck_assert_msg(rc == 0, "%s", out);
    for (i = 0; i < n; i++) {
        char line[80];
        snprintf(line, sizeof(line), "\n%.63s ", names[i]);
        ck_assert_msg(strstr(out, line), "cgctl stats does not show %s:\n%s", names[i], out);
    }
    free(out);
    out = ctl(&rc, &a, "stats --prometheus");
    ck_assert_msg(rc == 0, "%s", out);
    ck_assert_msg(strstr(out, " untyped\n") == NULL,
                  "cgctl stats --prometheus does not know every field (add it to "
                  "coregroup/stats_metrics.c):\n%s",
                  out);
    for (k = 0; k < sizeof(gauges) / sizeof(gauges[0]); k++) {
        char type[160];
        snprintf(type, sizeof(type), "# TYPE %s gauge\n", gauges[k]);
        ck_assert_msg(strstr(out, type), "no \"%s\" in:\n%s", type, out);
    }
    free(out);
    daemon_stop(&a);
}
END_TEST

START_TEST(health_reply_carries_the_freshness_proof_and_a_reason)
{
    const cJSON *reason;
    daemon_t a;
    cJSON *r;
    char *out;
    int rc;

    daemon_start(&a, "health-fields-a", "dt-health-fields", NULL);
    r = request(&a, "health");
    ck_assert_msg(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(r, "proof_age_ms")),
                  "health has no proof_age_ms");
    ck_assert_msg(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(r, "max_staleness_ms")),
                  "health has no max_staleness_ms");
    ck_assert_int_ge(cgt_jint(r, "proof_age_ms"), -1);
    ck_assert_int_ge(cgt_jint(r, "max_staleness_ms"), 0);
    reason = cJSON_GetObjectItemCaseSensitive(r, "reason");
    ck_assert_msg(cJSON_IsString(reason), "health has no reason");
    ck_assert_msg(strchr(reason->valuestring, '\n') == NULL, "a reason of two lines");
    if (jok(r))
        ck_assert_msg(reason->valuestring[0] == '\0', "healthy, yet a reason: %s",
                      reason->valuestring);
    else
        ck_assert_msg(reason->valuestring[0] != '\0', "not healthy, and no reason");
    cJSON_Delete(r);

    /* the human-readable line names them */
    out = ctl(&rc, &a, "health");
    ck_assert_msg((rc == 0 || rc == 1) && strstr(out, " proof_age_ms=") &&
                      strstr(out, " max_staleness_ms="),
                  "exit %d: %s", rc, out);
    if (rc == 1)
        ck_assert_msg(strncmp(out, "degraded ", 9) == 0 && strstr(out, " reason=\""), "%s", out);
    else
        ck_assert_msg(strncmp(out, "healthy ", 8) == 0 && !strstr(out, "reason="), "%s", out);
    free(out);
    daemon_stop(&a);
}
END_TEST

START_TEST(health_exit_codes)
{
    bt_busd busd;
    daemon_t a;
    char *dir = cgt_tmpdir(), *out;
    int rc, ports[1], seen_degraded = 0;
    int64_t until;
    cJSON *r;

    /* unreachable: no daemon */
    bt_free_ports(ports, 1);
    out = cgt_run(&rc, "'%s' --endpoint tcp://127.0.0.1:%d --timeout 300 health", cgt_bin("cgctl"),
                  ports[0]);
    ck_assert_msg(rc == 2 && strstr(out, "no answer"), "%s", out);
    free(out);

    /* healthy */
    memset(&busd, 0, sizeof(busd));
    bt_busd_start(&busd, dir, "health", NULL);
    daemon_start(&a, "health-a", "dt-health", &busd);
    until = bt_ms() + 10000;
    for (;;) { /* it hears its own heartbeats through the forwarder */
        long long beats;
        r = ctl_json(0, &a, "stats");
        beats = cgt_jint(r, "stats.heartbeats_received");
        cJSON_Delete(r);
        if (beats >= 2)
            break;
        ck_assert_msg(bt_ms() < until, "the daemon never heard the bus");
        usleep(20000);
    }
    out = ctl(&rc, &a, "health");
    ck_assert_msg(rc == 0 && strstr(out, "healthy"), "%s", out);
    free(out);

    /* degraded: the bus goes silent AND the repository goes away (back after 4 s) */
    bt_busd_kill(&busd);
    until = bt_ms() + 10000;
    for (;;) { /* the bus counts as silent after three heartbeat intervals */
        long long silent;
        r = ctl_json(0, &a, "health"); /* healthy still: the repository answers */
        silent = cgt_jint(r, "bus_silent");
        cJSON_Delete(r);
        if (silent)
            break;
        ck_assert_msg(bt_ms() < until, "the bus never went silent");
        usleep(20000);
    }
    cgt_restart_async("fast", 4);
    until = bt_ms() + 10000; /* the repository is down for 4 s once its stop is done */
    while (!seen_degraded && bt_ms() < until) {
        out = ctl(&rc, &a, "--json --timeout 1500 health");
        ck_assert_msg(rc == 0 || rc == 1, "health while degrading: exit %d: %s", rc, out);
        if (rc == 1) {
            r = cgt_json_line(out);
            ck_assert_str_eq(cgt_jstr(r, "error.code"), "degraded");
            ck_assert_int_eq(cgt_jint(r, "repository_ok"), 0);
            ck_assert_int_eq(cgt_jint(r, "bus_silent"), 1);
            ck_assert_msg(cgt_jstr(r, "reason")[0] != '\0', "degraded without a reason: %s", out);
            cJSON_Delete(r);
            seen_degraded = 1;
            free(out);
            /* the human-readable line says why (if it is still degraded a moment later) */
            out = ctl(&rc, &a, "--timeout 1500 health");
            ck_assert_msg(rc != 1 ||
                              (strncmp(out, "degraded ", 9) == 0 && strstr(out, " reason=\"")),
                          "%s", out);
        }
        free(out);
        usleep(50000);
    }
    ck_assert_msg(seen_degraded, "cgctl health never exited 1 while bus and repository were down");
    ck_assert_int_eq(bt_wait(a.pid, 0), -1); /* still running */

    /* the repository is back: healthy again (the bus is still down; the poll covers it) */
    until = bt_ms() + 30000;
    for (;;) {
        out = ctl(&rc, &a, "--timeout 1500 health");
        free(out);
        if (rc == 0 || bt_ms() > until)
            break;
        usleep(100000);
    }
    ck_assert_msg(rc == 0, "health did not recover after the repository came back");
    cgt_restart_wait();
    daemon_stop(&a);
    free(dir);
}
END_TEST

START_TEST(start_and_stop_are_idempotent)
{
    daemon_t a;
    char *out, logp[400];
    int rc;
    struct stat st;

    daemon_init(&a, "ctl-a", "dt-ctl", NULL, NULL);
    remember_pidfile(a.pidfile);
    snprintf(logp, sizeof(logp), "%s/daemon.log", a.dir);

    out = ctl(&rc, &a, "start --log '%s'", logp);
    ck_assert_msg(rc == 0 && strstr(out, "started"), "first start: exit %d: %s", rc, out);
    free(out);
    ck_assert_int_eq(stat(a.pidfile, &st), 0);
    out = ctl(&rc, &a, "start --log '%s'", logp);
    ck_assert_msg(rc == 0 && strstr(out, "already running") && !strstr(out, "started"),
                  "second start: exit %d: %s", rc, out);
    free(out);
    out = ctl(&rc, &a, "health");
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    out = bt_slurp(logp);
    ck_assert_int_eq(bt_count(out, "event=started"), 1); /* one daemon only */
    free(out);

    out = ctl(&rc, &a, "stop");
    ck_assert_msg(rc == 0 && strstr(out, "stopped"), "first stop: exit %d: %s", rc, out);
    free(out);
    ck_assert_msg(stat(a.pidfile, &st) < 0, "the pid file is still there after stop");
    out = core_state("dt-ctl", "ctl-a");
    ck_assert_str_eq(out, "left");
    free(out);
    out = ctl(&rc, &a, "stop");
    ck_assert_msg(rc == 0 && strstr(out, "not running"), "second stop: exit %d: %s", rc, out);
    free(out);
    out = ctl(&rc, &a, "--timeout 300 health");
    ck_assert_int_eq(rc, 2);
    free(out);

    /* start again after a stop; stop with the default log next to the pid file */
    out = ctl(&rc, &a, "start");
    ck_assert_msg(rc == 0 && strstr(out, "started"), "restart: exit %d: %s", rc, out);
    free(out);
    out = ctl(&rc, &a, "stop");
    ck_assert_msg(rc == 0 && strstr(out, "stopped"), "%s", out);
    free(out);
    snprintf(logp, sizeof(logp), "%s/coregroupd-ctl-a.log", a.dir);
    ck_assert_int_eq(stat(logp, &st), 0);

    /* start with a configuration the daemon refuses: exit 1 and the log's last lines */
    cgt_write_file(a.ini, "[repository]\ndsn = host=/nonexistent port=1\n[core]\nname = ctl-a\n"
                          "[retry]\nattempts = 0\n[daemon]\nlisten = tcp://127.0.0.1:1\n");
    out = ctl(&rc, &a, "start --wait 10000");
    ck_assert_msg(rc == 1 && strstr(out, "exited with status"), "%s", out);
    free(out);
}
END_TEST

START_TEST(curve_admits_only_listed_clients)
{
    daemon_t d;
    char keys[400], extra[1600], text[2400], *out, *log;
    int rc;

    {
        char *dir = cgt_tmpdir();
        snprintf(keys, sizeof(keys), "%s", dir);
        free(dir);
    }
    snprintf(text, sizeof(text), "%s/srv", keys);
    cgt_keygen(text);
    snprintf(text, sizeof(text), "%s/ok", keys);
    cgt_keygen(text);
    snprintf(text, sizeof(text), "%s/bad", keys);
    cgt_keygen(text);
    out = cgt_run(&rc, "cp '%s/ok.pub' '%s/clients'", keys, keys);
    free(out);
    snprintf(extra, sizeof(extra),
             "curve_secret_key = %s/srv.key\ncurve_public_key = %s/srv.pub\n"
             "curve_clients = %s/clients\n",
             keys, keys, keys);
    daemon_init(&d, "curve-a", "dt-curve", NULL, extra);
    daemon_run(&d);
    log = bt_slurp(d.log);
    ck_assert_msg(strstr(log, "curve=on clients=1"), "%s", log);
    free(log);

    /* an admitted client key: requests work as ever */
    out = ctl(&rc, &d, "--curve-client-key '%s/ok.key' health", keys);
    ck_assert_msg(rc == 0, "health with an admitted key: exit %d: %s", rc, out);
    free(out);
    out = ctl(&rc, &d, "--curve-client-key '%s/ok.key' register --state '{\"n\":1}'", keys);
    ck_assert_msg(rc == 0 && atoll(out) > 0, "register with an admitted key: exit %d: %s", rc, out);
    free(out);

    /* no client key: cgctl says what it needs */
    out = ctl(&rc, &d, "health");
    ck_assert_msg(rc == 2 && strstr(out, "--curve-client-key"), "exit %d: %s", rc, out);
    free(out);
    /* a key the daemon does not list: no answer, and the daemon logs the refusal */
    out = ctl(&rc, &d, "--timeout 1500 --curve-client-key '%s/bad.key' health", keys);
    ck_assert_msg(rc == 2 && strstr(out, "curve_clients"), "exit %d: %s", rc, out);
    free(out);
    ck_assert_msg(bt_wait_lines(d.log, "event=client-denied", NULL, 1, 5000), "no denial logged");
    /* a client without CURVE at all: no answer either */
    out = cgt_run(&rc, "'%s' --endpoint '%s' --timeout 1500 health", cgt_bin("cgctl"), d.endpoint);
    ck_assert_msg(rc == 2, "a plain client got through: exit %d: %s", rc, out);
    free(out);
    out = ctl(&rc, &d, "--curve-client-key '%s/ok.key' --json stats", keys);
    ck_assert_msg(rc == 0, "stats with an admitted key after the refusals: exit %d: %s", rc, out);
    free(out);
    daemon_stop(&d);

    /* bad key settings: exit 2, naming the file and the [daemon] key */
    snprintf(text, sizeof(text),
             "sed -i 's|^curve_public_key = .*|curve_public_key = %s/ok.pub|' '%s'", keys, d.ini);
    free(cgt_run(&rc, "%s", text));
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), d.ini);
    ck_assert_msg(rc == 2 && strstr(out, "[daemon] curve_public_key: not the public key"),
                  "exit %d: %s", rc, out);
    free(out);
    free(cgt_run(&rc, "sed -i '/^curve_clients/d' '%s'", d.ini));
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), d.ini);
    ck_assert_msg(rc == 2 && strstr(out, "go together"), "exit %d: %s", rc, out);
    free(out);
}
END_TEST

START_TEST(sigterm_and_guards)
{
    daemon_t a, b;
    char *out, text[2048], *log;
    int rc;
    struct stat st;
    pid_t dead;

    /* SIGTERM: exit 0, the core left its group, the pid file is gone */
    daemon_start(&a, "term-a", "dt-term", NULL);
    out = core_state("dt-term", "term-a");
    ck_assert_str_eq(out, "alive");
    free(out);
    ck_assert_int_eq(stat(a.pidfile, &st), 0);
    reg(&a, NULL);

    /* a second daemon on the same pid file: already running, exit 1 */
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), a.ini);
    ck_assert_msg(rc == 1 && strstr(out, "already running"), "exit %d: %s", rc, out);
    free(out);
    /* another pid file, the same endpoint: endpoint in use, exit 1, no new incarnation */
    daemon_init(&b, "term-a", "dt-term", NULL, NULL);
    snprintf(text, sizeof(text), "sed -i 's|^listen = .*|listen = %s|' '%s'", a.endpoint, b.ini);
    free(cgt_run(&rc, "%s", text));
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), b.ini);
    ck_assert_msg(rc == 1 && strstr(out, "endpoint in use"), "exit %d: %s", rc, out);
    free(out);
    out = core_state("dt-term", "term-a");
    ck_assert_str_eq(out, "alive"); /* a was not fenced by the failed start */
    free(out);
    expect_serving(&a);
    /* another pid file and another endpoint, the same core name: the repository refuses it
     * while a heartbeats, instead of letting its new incarnation fence a */
    daemon_init(&b, "term-a", "dt-term", NULL, NULL);
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), b.ini);
    ck_assert_msg(rc == 1 && strstr(out, "event=already-running") && strstr(out, "code=exists") &&
                      strstr(out, "is already running"),
                  "exit %d: %s", rc, out);
    free(out);
    out = core_state("dt-term", "term-a");
    ck_assert_str_eq(out, "alive");
    free(out);
    reg(&a, NULL); /* a still writes: its incarnation is current */

    bt_stop(a.pid, SIGTERM, 0);
    a.pid = 0;
    out = core_state("dt-term", "term-a");
    ck_assert_str_eq(out, "left");
    free(out);
    ck_assert_msg(stat(a.pidfile, &st) < 0, "the pid file outlived the daemon");
    log = bt_slurp(a.log);
    ck_assert_msg(strstr(log, "event=stopping signal=TERM") && strstr(log, "event=stopped"), "%s",
                  log);
    free(log);

    /* a stale pid file (its process is gone) is overwritten; SIGINT stops it the same way */
    if ((dead = fork()) == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    snprintf(text, sizeof(text), "%ld\n", (long)dead);
    cgt_write_file(a.pidfile, text);
    daemon_run(&a);
    out = bt_slurp(a.pidfile);
    ck_assert_int_eq(atol(out), (long)a.pid);
    free(out);
    bt_stop(a.pid, SIGINT, 0);
    a.pid = 0;
    /* a pid file naming a live process: already running */
    snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    cgt_write_file(a.pidfile, text);
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), a.ini);
    ck_assert_msg(rc == 1 && strstr(out, "already running"), "exit %d: %s", rc, out);
    free(out);
    unlink(a.pidfile);

    /* bad usage and a bad repository.ini: exit 2, naming file, line and key */
    out = cgt_run(&rc, "'%s' --help", cgt_bin("coregroupd"));
    ck_assert_msg(rc == 0 && strstr(out, "Usage: coregroupd") && strstr(out, "Exit status"), "%s",
                  out);
    free(out);
    out = cgt_run(&rc, "'%s' --version", cgt_bin("coregroupd"));
    ck_assert_msg(rc == 0 && strstr(out, "coregroupd " CG_VERSION), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s'", cgt_bin("coregroupd"));
    ck_assert_msg(rc == 2 && strstr(out, "-c repository.ini is required"), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' --bogus", cgt_bin("coregroupd"));
    ck_assert_int_eq(rc, 2);
    free(out);
    snprintf(text, sizeof(text), "%s/bad.ini", a.dir);
    cgt_write_file(text, "[core]\nname = x\n\n[cache]\nmax_entries = lots\n");
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), text);
    ck_assert_msg(rc == 2 && strstr(out, "bad.ini:5: [cache] max_entries") &&
                      strstr(out, "event=bad-config"),
                  "exit %d: %s", rc, out);
    free(out);
    cgt_write_file(text, "[repository]\ndsn = x\n[core]\nname = x\n");
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), text);
    ck_assert_msg(rc == 2 && strstr(out, "[daemon] listen: missing"), "exit %d: %s", rc, out);
    free(out);
    cgt_write_file(text, "[repository]\ndsn = x\n[core]\nname = x\n[daemon]\nlisten = foo://x\n");
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), text);
    ck_assert_msg(rc == 2 && strstr(out, "cannot bind"), "exit %d: %s", rc, out);
    free(out);
    /* the repository unreachable after the configured retries: exit 1 */
    snprintf(text, sizeof(text),
             "[repository]\ndsn = host=127.0.0.1 port=1 dbname=x connect_timeout=2\n"
             "[core]\nname = x\n[retry]\nattempts = 1\ninterval_ms = 50\n"
             "[daemon]\nlisten = %s\n",
             a.endpoint);
    cgt_write_file(a.ini, text);
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), a.ini);
    ck_assert_msg(rc == 1 && strstr(out, "event=open-failed"), "exit %d: %s", rc, out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("daemon");
    TCase *api = tcase_create("api"), *bad = tcase_create("bad_input");
    TCase *ops = tcase_create("operations"), *outage = tcase_create("outage");

    tcase_add_unchecked_fixture(api, setup, teardown);
    tcase_set_timeout(api, 120);
    tcase_add_test(api, api_round_trips);
    tcase_add_test(api, cached_gets_are_answered_by_the_broker);
    tcase_add_test(api, stale_update_carries_current_version);
    tcase_add_test(api, multi_rolls_back_entirely_when_its_last_op_is_stale);
    tcase_add_test(api, two_daemons_see_each_others_updates);
    suite_add_tcase(s, api);

    tcase_add_unchecked_fixture(bad, setup, teardown);
    tcase_set_timeout(bad, 120);
    tcase_add_test(bad, malformed_requests_get_error_replies);
    tcase_add_test(bad, cgctl_usage_errors);
    suite_add_tcase(s, bad);

    tcase_add_unchecked_fixture(ops, setup, teardown);
    tcase_set_timeout(ops, 120);
    tcase_add_test(ops, stats_prometheus_output_parses);
    tcase_add_test(ops, start_and_stop_are_idempotent);
    tcase_add_test(ops, sigterm_and_guards);
    tcase_add_test(ops, curve_admits_only_listed_clients);
    tcase_add_test(ops, stats_reply_has_exactly_the_fields_of_cg_core_stats);
    tcase_add_test(ops, health_reply_carries_the_freshness_proof_and_a_reason);
    suite_add_tcase(s, ops);

    /* last: it restarts the cluster */
    tcase_add_unchecked_fixture(outage, setup, teardown);
    tcase_set_timeout(outage, 120);
    tcase_add_test(outage, health_exit_codes);
    suite_add_tcase(s, outage);
    return cgt_run_suite(s);
}
