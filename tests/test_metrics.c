/*
 * test_metrics.c — the /metrics endpoints of coregroupd ([daemon] metrics_listen) and cg-busd
 * (--metrics), scraped over real HTTP and parsed by the real Prometheus parser (Debian's
 * python3-prometheus-client, through tests/scrape_metrics.py), after real traffic:
 *  - coregroupd: the scrape parses; every stats counter is there under cgctl's name, and one
 *    matches what the `stats` request says; call latency is a histogram (_bucket, _sum,
 *    _count, le="+Inf") per op and outcome for the ops used (ok, stale, not-found); the core's
 *    three histograms are there, in seconds; coregroup_build_info; anything but GET /metrics
 *    is 404; every metric `cgctl stats --prometheus` prints is served with the same type;
 *  - scrapes racing a SIGTERM get whole answers or a closed connection, never half of one,
 *    and the daemon still exits 0;
 *  - cg-busd: the forwarded messages and bytes grow with the traffic sent through it;
 *  - a taken port is a startup error naming the key or the flag (exit 1, and the core never
 *    joined its group); a malformed value is a configuration error naming the file, the line
 *    and the key (exit 2), and so is an address that is not this host's.
 * Every wait is a loop with a deadline.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bustest.h"

static char *dsn; /* the suite's database (superuser) */

static void setup(void)
{
    dsn = cgt_createdb("metrics", 1);
}

static void teardown(void)
{
    free(dsn);
}

/* ---- coregroupd ------------------------------------------------------------------------- */

typedef struct {
    char name[64], dir[256], ini[320], log[320], endpoint[64], metrics[64];
    pid_t pid;
} daemon_t;

/* Prepare daemon `name` of `group` (on `bus`, may be NULL) in a new directory; with metrics it
 * serves /metrics on a free port. */
static void daemon_init(daemon_t *d, const char *name, const char *group, const bt_busd *bus,
                        int metrics)
{
    char *dir = cgt_tmpdir(), *core_dsn = cgt_core_dsn(dsn, group), text[4096], mline[128] = "";
    int ports[2];

    memset(d, 0, sizeof(*d));
    bt_free_ports(ports, 2);
    snprintf(d->name, sizeof(d->name), "%s", name);
    snprintf(d->dir, sizeof(d->dir), "%s", dir);
    snprintf(d->ini, sizeof(d->ini), "%s/%s.ini", dir, name);
    snprintf(d->log, sizeof(d->log), "%s/%s.log", dir, name);
    snprintf(d->endpoint, sizeof(d->endpoint), "tcp://127.0.0.1:%d", ports[0]);
    if (metrics) {
        snprintf(d->metrics, sizeof(d->metrics), "127.0.0.1:%d", ports[1]);
        snprintf(mline, sizeof(mline), "metrics_listen = %s\n", d->metrics);
    }
    snprintf(text, sizeof(text),
             "[repository]\ndsn = %s\npool_size = 4\n"
             "[core]\nname = %s\ngroup = %s\nlog_level = debug\n"
             "[bus]\n%s%s%s%s%sheartbeat_interval_ms = 100\npoll_interval_ms = 60000\n"
             "[retry]\nattempts = 1\ninterval_ms = 100\n"
             "[daemon]\nlisten = %s\nworkers = 3\n%s",
             core_dsn, name, group, bus ? "publish = " : "", bus ? bus->fe : "",
             bus ? "\nsubscribe = " : "", bus ? bus->be : "", bus ? "\n" : "", d->endpoint, mline);
    cgt_write_file(d->ini, text);
    free(core_dsn);
    free(dir);
}

/* Start the prepared daemon and wait for its "started" line (by then /metrics answers). */
static void daemon_run(daemon_t *d)
{
    char *argv[] = {(char *)cgt_bin("coregroupd"), "-c", d->ini, NULL};
    int64_t until = bt_ms() + 20000;
    d->pid = bt_spawn(argv, d->log, NULL);
    for (;;) {
        char *log = bt_slurp(d->log);
        int up = strstr(log, "event=started") != NULL;
        if (!up && (bt_wait(d->pid, 0) >= 0 || bt_ms() > until))
            ck_abort_msg("coregroupd %s did not start:\n%s", d->name, log);
        free(log);
        if (up)
            return;
        usleep(10000);
    }
}

/* cgctl -c INI ARGS; *rc its exit status; stdout and stderr together, a new string. */
static char *ctl(int *rc, const daemon_t *d, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *ctl(int *rc, const daemon_t *d, const char *fmt, ...)
{
    char args[4000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return cgt_run(rc, "'%s' -c '%s' %s", cgt_bin("cgctl"), d->ini, args);
}

/* cgctl --json ARGS expecting exit status `want`: the reply (the caller frees). */
static cJSON *ctl_json(int want, const daemon_t *d, const char *args)
{
    int rc;
    char *out = ctl(&rc, d, "--json %s", args);
    cJSON *j;
    ck_assert_msg(rc == want, "cgctl %s: exit %d, expected %d:\n%s", args, rc, want, out);
    j = cgt_json_line(out);
    free(out);
    return j;
}

static long long jint(const cJSON *o, const char *a, const char *b)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b)
        j = cJSON_GetObjectItemCaseSensitive(j, b);
    ck_assert_msg(cJSON_IsNumber(j), "no number at %s%s%s", a, b ? "." : "", b ? b : "");
    return (long long)j->valuedouble;
}

/* ---- scraping ------------------------------------------------------------------------------ */

/* Scrape http://HOSTPORT/metrics with tests/scrape_metrics.py: it must answer 200 and parse.
 * The script's JSON (families, statuses); the caller frees. */
static cJSON *scrape(const char *hostport)
{
    int rc;
    /* Debian's interpreter: python3-prometheus-client is installed for it, not for whatever
     * python3 comes first on PATH */
    char *out = cgt_run(&rc, "/usr/bin/python3 '%s/tests/scrape_metrics.py' 'http://%s/metrics'",
                        cgt_source_dir(), hostport);
    cJSON *j;
    ck_assert_msg(rc == 0, "scrape of %s failed (exit %d):\n%s", hostport, rc, out);
    j = cgt_json_line(out);
    free(out);
    ck_assert_int_eq(jint(j, "status", NULL), 200);
    ck_assert_msg(
        strstr(cJSON_GetObjectItemCaseSensitive(j, "content_type")->valuestring, "version=0.0.4"),
        "content type");
    ck_assert_int_eq(jint(j, "other_status", NULL), 404);
    ck_assert_int_eq(jint(j, "post_status", NULL), 404);
    return j;
}

/* The family `name` of a scrape, of type `type`; fails when it is missing. */
static const cJSON *family(const cJSON *s, const char *name, const char *type)
{
    const cJSON *f =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(s, "families"), name);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(f, "type");
    ck_assert_msg(f != NULL, "no metric family %s", name);
    ck_assert_msg(cJSON_IsString(t) && strcmp(t->valuestring, type) == 0, "%s is a %s, not a %s",
                  name, cJSON_IsString(t) ? t->valuestring : "?", type);
    return f;
}

/* 1 when the sample's labels include every KEY, VALUE pair of kv (NULL-terminated). */
static int labels_match(const cJSON *sample, const char *const *kv)
{
    const cJSON *labels = cJSON_GetArrayItem(sample, 1);
    for (; kv && kv[0]; kv += 2) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(labels, kv[0]);
        if (!cJSON_IsString(v) || strcmp(v->valuestring, kv[1]) != 0)
            return 0;
    }
    return 1;
}

/* The value of the first sample named `sample` whose labels match kv; NAN when there is none. */
static double value_of(const cJSON *fam, const char *sample, const char *const *kv)
{
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(fam, "samples"))
    {
        if (strcmp(cJSON_GetArrayItem(s, 0)->valuestring, sample) == 0 && labels_match(s, kv))
            return cJSON_GetArrayItem(s, 2)->valuedouble;
    }
    return NAN;
}

/*
 * One series of histogram `name` (labels kv) is well formed: buckets ascending by le with
 * cumulative counts, the last le="+Inf" and equal to _count, and a _sum. Returns _count; the
 * largest finite bound goes to *max_le (may be NULL).
 */
static double histogram_series(const cJSON *fam, const char *name, const char *const *kv,
                               double *max_le)
{
    char bucket[160], sum[160], count[160];
    const cJSON *s;
    double last_le = -INFINITY, last_count = 0, inf = NAN, total, finite = -INFINITY;
    int n = 0;

    snprintf(bucket, sizeof(bucket), "%s_bucket", name);
    snprintf(sum, sizeof(sum), "%s_sum", name);
    snprintf(count, sizeof(count), "%s_count", name);
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(fam, "samples"))
    {
        const cJSON *le = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(s, 1), "le");
        double v = cJSON_GetArrayItem(s, 2)->valuedouble, bound;
        if (strcmp(cJSON_GetArrayItem(s, 0)->valuestring, bucket) != 0 || !labels_match(s, kv))
            continue;
        ck_assert_msg(cJSON_IsString(le), "%s without le", bucket);
        bound = strcmp(le->valuestring, "+Inf") == 0 ? INFINITY : strtod(le->valuestring, NULL);
        ck_assert_msg(bound > last_le, "%s: le=%s out of order", bucket, le->valuestring);
        ck_assert_msg(v >= last_count, "%s: le=%s is not cumulative", bucket, le->valuestring);
        if (isinf(bound))
            inf = v;
        else
            finite = bound;
        last_le = bound;
        last_count = v;
        n++;
    }
    ck_assert_msg(n >= 2, "%s: %d buckets", bucket, n);
    ck_assert_msg(!isnan(inf) && isinf(last_le), "%s: no le=\"+Inf\" bucket last", bucket);
    total = value_of(fam, count, kv);
    ck_assert_msg(!isnan(total) && total == inf, "%s: _count %g, le=+Inf %g", name, total, inf);
    ck_assert_msg(!isnan(value_of(fam, sum, kv)), "%s: no _sum", name);
    if (max_le)
        *max_le = finite;
    return total;
}

/* Every family of a scrape is named in REQUESTS.md's table ("Metrics over HTTP"). */
static void documented(const cJSON *s)
{
    char path[1024], *doc, *sect;
    const cJSON *f;
    snprintf(path, sizeof(path), "%s/coregroup/REQUESTS.md", cgt_source_dir());
    doc = bt_slurp(path);
    sect = strstr(doc, "## Metrics over HTTP");
    ck_assert_msg(sect != NULL, "REQUESTS.md has no \"Metrics over HTTP\" section");
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(s, "families"))
    {
        char quoted[200];
        snprintf(quoted, sizeof(quoted), "`%s`", f->string);
        ck_assert_msg(strstr(sect, quoted), "%s is served but not in REQUESTS.md's table",
                      f->string);
    }
    free(doc);
}

/* ---- tests: coregroupd -------------------------------------------------------------------- */

START_TEST(coregroupd_serves_stats_latency_and_the_cores_histograms)
{
    bt_busd bus;
    daemon_t a, b;
    cJSON *r, *s;
    const cJSON *f, *fam;
    char args[256], *out, *line, *save = NULL, *dir;
    long long h, missing;
    double max_le, v;
    int rc, i, typed = 0;

    memset(&bus, 0, sizeof(bus));
    dir = cgt_tmpdir();
    bt_busd_start(&bus, dir, "m1", NULL);
    free(dir);
    daemon_init(&a, "met-a", "mt-1", &bus, 1);
    daemon_run(&a);
    daemon_init(&b, "met-b", "mt-1", &bus, 0);
    daemon_run(&b);

    /* ok, stale and not-found outcomes through A */
    r = ctl_json(0, &a, "register --state '{\"n\":0}'");
    h = jint(r, "handle", NULL);
    cJSON_Delete(r);
    snprintf(args, sizeof(args), "get %lld state", h);
    cJSON_Delete(ctl_json(0, &a, args)); /* a miss */
    cJSON_Delete(ctl_json(0, &a, args)); /* a hit */
    snprintf(args, sizeof(args), "update %lld state 7 '{\"n\":1}'", h);
    cJSON_Delete(ctl_json(1, &a, args)); /* stale: the version is 1 */
    r = ctl_json(0, &a, "register");
    missing = jint(r, "handle", NULL);
    cJSON_Delete(r);
    snprintf(args, sizeof(args), "unregister %lld", missing);
    cJSON_Delete(ctl_json(0, &a, args));
    snprintf(args, sizeof(args), "get %lld state", missing);
    cJSON_Delete(ctl_json(1, &a, args)); /* not-found */

    /* an update through B reaches A by the bus: an eviction A times */
    snprintf(args, sizeof(args), "update %lld state 1 '{\"n\":2}'", h);
    cJSON_Delete(ctl_json(0, &b, args));
    {
        int64_t until = bt_ms() + 10000;
        for (;;) {
            snprintf(args, sizeof(args), "get %lld state", h);
            r = ctl_json(0, &a, args);
            v = (double)jint(r, "version", NULL);
            cJSON_Delete(r);
            if (v == 2)
                break;
            ck_assert_msg(bt_ms() < until, "A never saw B's update");
            usleep(20000);
        }
    }
    {
        /* the eviction is observed when A applies the message; a scrape shows it then */
        int64_t until = bt_ms() + 10000;
        for (;;) {
            const char *kv[] = {"core", "met-a", NULL};
            s = scrape(a.metrics);
            fam = family(s, "coregroup_eviction_lag_seconds", "histogram");
            if (histogram_series(fam, "coregroup_eviction_lag_seconds", kv, &max_le) >= 1)
                break;
            ck_assert_msg(bt_ms() < until, "no eviction lag observed");
            cJSON_Delete(s);
            usleep(50000);
        }
    }

    /* the core's histograms, in seconds: 5000 ms is the lag's largest bound, 30000 ms the
     * proof age's */
    ck_assert_msg(fabs(max_le - 5.0) < 1e-9, "eviction lag's largest bound %g, not 5 (s)", max_le);
    fam = family(s, "coregroup_freshness_proof_age_at_renewal_seconds", "histogram");
    histogram_series(fam, "coregroup_freshness_proof_age_at_renewal_seconds", NULL, &max_le);
    ck_assert_msg(fabs(max_le - 30.0) < 1e-9, "proof age's largest bound %g, not 30 (s)", max_le);
    fam = family(s, "coregroup_bus_catchup_events", "histogram");
    histogram_series(fam, "coregroup_bus_catchup_events", NULL, NULL);

    /* call latency by op and outcome, for what was done */
    fam = family(s, "coregroupd_request_duration_seconds", "histogram");
    {
        static const char *const seen[][2] = {{"register", "ok"},
                                              {"get", "ok"},
                                              {"update", "stale"},
                                              {"unregister", "ok"},
                                              {"get", "not-found"}};
        for (i = 0; i < (int)(sizeof(seen) / sizeof(seen[0])); i++) {
            const char *kv[] = {"core",     "met-a",   "group",    "mt-1", "op",
                                seen[i][0], "outcome", seen[i][1], NULL};
            double n = histogram_series(fam, "coregroupd_request_duration_seconds", kv, NULL);
            ck_assert_msg(n >= 1, "no %s/%s observation", seen[i][0], seen[i][1]);
        }
        {
            const char *kv[] = {"op", "get", "outcome", "ok", NULL};
            ck_assert_msg(histogram_series(fam, "coregroupd_request_duration_seconds", kv, NULL) >=
                              3,
                          "fewer than 3 good gets timed");
        }
    }

    /* the build */
    {
        const char *kv[] = {"version", CG_VERSION, NULL};
        fam = family(s, "coregroup_build_info", "gauge");
        ck_assert_msg(value_of(fam, "coregroup_build_info", kv) == 1.0, "build_info");
    }

    /* a stats counter matches the stats request (nothing calls in between) */
    r = ctl_json(0, &a, "stats");
    {
        const char *kv[] = {"core", "met-a", "group", "mt-1", NULL};
        fam = family(s, "coregroup_calls_committed_total", "counter");
        ck_assert_int_eq((long long)value_of(fam, "coregroup_calls_committed_total", kv),
                         jint(r, "stats", "calls_committed"));
        fam = family(s, "coregroup_cache_hits_total", "counter");
        ck_assert_int_eq((long long)value_of(fam, "coregroup_cache_hits_total", kv),
                         jint(r, "stats", "cache_hits"));
        fam = family(s, "coregroup_cache_entries", "gauge");
        ck_assert_int_eq((long long)value_of(fam, "coregroup_cache_entries", kv),
                         jint(r, "stats", "cache_entries"));
        fam = family(s, "coregroupd_requests_total", "counter");
        ck_assert_int_ge((long long)value_of(fam, "coregroupd_requests_total", kv), 8);
    }
    cJSON_Delete(r);

    /* every metric cgctl's stats --prometheus prints is served, with the same type */
    out = ctl(&rc, &a, "stats --prometheus");
    ck_assert_msg(rc == 0, "%s", out);
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[128], type[32];
        if (sscanf(line, "# TYPE %127s %31s", name, type) != 2)
            continue;
        f = family(s, name, type);
        (void)f;
        typed++;
    }
    ck_assert_int_ge(typed, 30);
    free(out);
    documented(s);
    cJSON_Delete(s);

    /* and now the stats request shows up too */
    s = scrape(a.metrics);
    {
        const char *kv[] = {"op", "stats", "outcome", "ok", NULL};
        fam = family(s, "coregroupd_request_duration_seconds", "histogram");
        ck_assert_int_ge(histogram_series(fam, "coregroupd_request_duration_seconds", kv, NULL), 1);
    }
    cJSON_Delete(s);

    bt_stop(b.pid, SIGTERM, 0);
    bt_stop(a.pid, SIGTERM, 0);
    bt_stop(bus.pid, SIGTERM, 0);
}
END_TEST

/*
 * One raw HTTP/1.0 GET /metrics on a fresh connection (no assertions: scraper threads call it).
 * Returns -1 when the connection was refused (the endpoint is gone), 0 when it was closed or
 * reset before any byte of an answer (a clean close), 1 for a whole 200 answer (its body as
 * long as its Content-Length says, ending with build_info), and -2 for anything else, with
 * why.
 */
static int raw_scrape(int port, char *why, size_t whysz)
{
    static const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
    struct sockaddr_in sa;
    struct timeval tv = {10, 0};
    size_t len = 0, cap = 1 << 20;
    char *buf = malloc(cap), *body, *cl;
    int fd = socket(AF_INET, SOCK_STREAM, 0), result = -2;

    if (fd < 0 || buf == NULL) {
        snprintf(why, whysz, "socket: %s", strerror(errno));
        goto done;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        /* reset during the handshake: the listener closed with it queued, no answer began */
        result = errno == ECONNREFUSED ? -1 : errno == ECONNRESET ? 0 : -2;
        snprintf(why, whysz, "connect: %s", strerror(errno));
        goto done;
    }
    if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) < 0) {
        result = errno == EPIPE || errno == ECONNRESET ? 0 : -2;
        snprintf(why, whysz, "send: %s", strerror(errno));
        goto done;
    }
    for (;;) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == ECONNRESET)
                break;
            snprintf(why, whysz, "recv after %zu bytes: %s", len, strerror(errno));
            goto done;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    if (len == 0) {
        result = 0;
        goto done;
    }
    body = strstr(buf, "\r\n\r\n");
    cl = strstr(buf, "Content-Length:"); /* libmicrohttpd's spelling */
    if (strncmp(buf, "HTTP/1.", 7) != 0 || !strstr(buf, " 200 ") || !body || !cl || cl > body) {
        snprintf(why, whysz, "not a 200 answer with a length: %.200s", buf);
        goto done;
    }
    body += 4;
    if (strtoul(cl + 15, NULL, 10) != len - (size_t)(body - buf) ||
        !strstr(body, "coregroup_build_info{")) {
        snprintf(why, whysz, "a cut answer: Content-Length %lu, body %zu bytes",
                 strtoul(cl + 15, NULL, 10), len - (size_t)(body - buf));
        goto done;
    }
    result = 1;
done:
    if (fd >= 0)
        close(fd);
    free(buf);
    return result;
}

typedef struct {
    int port;
    atomic_int *go;
    int whole, closed, bad;
    char why[400];
} scraper;

/* Scrape in a loop from before the stop until the endpoint is gone (or 20 s). */
static void *scraper_main(void *arg)
{
    scraper *sc = arg;
    int64_t until = bt_ms() + 20000;
    while (!atomic_load(sc->go))
        usleep(100);
    while (bt_ms() < until) {
        char why[400];
        int r = raw_scrape(sc->port, why, sizeof(why));
        if (r == -1)
            break;
        if (r == 1)
            sc->whole++;
        else if (r == 0)
            sc->closed++;
        else if (sc->bad++ == 0)
            snprintf(sc->why, sizeof(sc->why), "%s", why);
    }
    return NULL;
}

START_TEST(scrapes_during_shutdown_get_whole_answers_or_a_clean_close)
{
    daemon_t a;
    scraper sc[3];
    pthread_t th[3];
    atomic_int go = 0;
    int port, idle[4], i, r, whole = 0, closed = 0;
    struct sockaddr_in sa;
    char why[400];

    daemon_init(&a, "met-stop", "mt-2", NULL, 1);
    daemon_run(&a);
    port = atoi(strchr(a.metrics, ':') + 1);
    /* connections that never finish their request: the stop must not wait for them */
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (i = 0; i < 4; i++) {
        idle[i] = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_eq(connect(idle[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_gt(send(idle[i], "GET /metr", 9, MSG_NOSIGNAL), 0);
    }
    r = raw_scrape(port, why, sizeof(why));
    ck_assert_msg(r == 1, "a scrape before the stop: %d %s", r, why);

    /* scrapers running flat out while the daemon stops */
    for (i = 0; i < 3; i++) {
        memset(&sc[i], 0, sizeof(sc[i]));
        sc[i].port = port;
        sc[i].go = &go;
        ck_assert_int_eq(pthread_create(&th[i], NULL, scraper_main, &sc[i]), 0);
    }
    atomic_store(&go, 1);
    usleep(50000); /* some scrapes before the signal, the rest racing it */
    ck_assert_int_eq(kill(a.pid, SIGTERM), 0);
    r = bt_wait(a.pid, 10000);
    for (i = 0; i < 3; i++) /* all of them before any assertion can end the test */
        pthread_join(th[i], NULL);
    for (i = 0; i < 3; i++) {
        ck_assert_msg(sc[i].bad == 0, "%d bad answers during the stop, the first: %s", sc[i].bad,
                      sc[i].why);
        whole += sc[i].whole;
        closed += sc[i].closed;
    }
    {
        char *log = bt_slurp(a.log);
        ck_assert_msg(r == 0, "exit status %d after SIGTERM:\n%s", r, log);
        free(log);
    }
    ck_assert_int_ge(whole, 1);
    for (i = 0; i < 4; i++) {
        char c;
        struct timeval tv = {5, 0};
        setsockopt(idle[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        ck_assert_msg(recv(idle[i], &c, 1, 0) <= 0, "a half-sent request got an answer");
        close(idle[i]);
    }
    r = raw_scrape(port, why, sizeof(why));
    ck_assert_msg(r == -1, "the endpoint outlived the daemon: %d %s", r, why);
    fprintf(stderr, "scrapes during shutdown: %d whole answers, %d clean closes\n", whole, closed);
}
END_TEST

/* ---- tests: startup errors ---------------------------------------------------------------- */

/* A listening TCP socket on a free port of 127.0.0.1 (the test holds it: the port is taken). */
static int take_port(int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(fd >= 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

START_TEST(a_taken_port_is_a_startup_error_naming_the_key_or_flag)
{
    daemon_t a;
    int port, fd = take_port(&port), rc, ports[2];
    char text[6000], *out, flag[64], *body;
    PGconn *db;
    char *n;

    /* coregroupd: [daemon] metrics_listen taken, exit 1, and it never joined its group */
    daemon_init(&a, "met-taken", "mt-3", NULL, 0);
    body = bt_slurp(a.ini);
    snprintf(text, sizeof(text), "%smetrics_listen = 127.0.0.1:%d\n", body, port);
    free(body);
    cgt_write_file(a.ini, text);
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), a.ini);
    ck_assert_msg(rc == 1 && strstr(out, "event=bind-failed") &&
                      strstr(out, "[daemon] metrics_listen") && strstr(out, "taken"),
                  "exit %d: %s", rc, out);
    free(out);
    db = cgt_connect(dsn);
    n = cgt_query1(db, "SELECT count(*) FROM cores WHERE core_name = 'met-taken'");
    ck_assert_msg(strcmp(n, "0") == 0, "a core whose metrics port was taken joined its group");
    free(n);
    PQfinish(db);

    /* cg-busd: --metrics taken, exit 1 */
    bt_free_ports(ports, 2);
    snprintf(flag, sizeof(flag), "127.0.0.1:%d", port);
    out = cgt_run(&rc,
                  "'%s' --frontend tcp://127.0.0.1:%d --backend tcp://127.0.0.1:%d "
                  "--metrics %s",
                  bt_busd_bin(), ports[0], ports[1], flag);
    ck_assert_msg(rc == 1 && strstr(out, "--metrics") && strstr(out, flag) && strstr(out, "taken"),
                  "exit %d: %s", rc, out);
    free(out);
    close(fd);
}
END_TEST

START_TEST(a_malformed_value_is_a_config_error_naming_file_line_and_key)
{
    static const char *const bad[] = {"localhost", "127.0.0.1:",      "127.0.0.1:0",
                                      ":9101",     "127.0.0.1:65536", "::1:9101",
                                      "[::1]9101", "host name:1"};
    daemon_t a;
    char text[6000], want[400], *out, *body;
    int rc, ports[2];
    size_t i;

    daemon_init(&a, "met-bad", "mt-4", NULL, 0);
    body = bt_slurp(a.ini);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int line = 1;
        const char *p;
        for (p = body; *p; p++)
            line += *p == '\n';
        snprintf(text, sizeof(text), "%smetrics_listen = %s\n", body, bad[i]);
        cgt_write_file(a.ini, text);
        out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), a.ini);
        snprintf(want, sizeof(want), "%s:%d: [daemon] metrics_listen", a.ini, line);
        ck_assert_msg(rc == 2 && strstr(out, want) && strstr(out, "event=bad-config"),
                      "\"%s\": exit %d, expected 2 and \"%s\": %s", bad[i], rc, want, out);
        free(out);
    }
    /* well formed, but not an address of this host (TEST-NET-1): found at bind, still exit 2 */
    snprintf(text, sizeof(text), "%smetrics_listen = 192.0.2.1:9101\n", body);
    cgt_write_file(a.ini, text);
    out = cgt_run(&rc, "'%s' -c '%s'", cgt_bin("coregroupd"), a.ini);
    ck_assert_msg(rc == 2 && strstr(out, "[daemon] metrics_listen") &&
                      strstr(out, "not an address of this host"),
                  "exit %d: %s", rc, out);
    free(out);
    free(body);

    /* cg-busd: --metrics malformed, exit 2 naming the flag; and the flag is in --help */
    bt_free_ports(ports, 2);
    out = cgt_run(&rc,
                  "'%s' --frontend tcp://127.0.0.1:%d --backend tcp://127.0.0.1:%d "
                  "--metrics localhost",
                  bt_busd_bin(), ports[0], ports[1]);
    ck_assert_msg(rc == 2 && strstr(out, "--metrics \"localhost\"") && strstr(out, "HOST:PORT"),
                  "exit %d: %s", rc, out);
    free(out);
    out = cgt_run(&rc, "'%s' --help", bt_busd_bin());
    ck_assert_msg(rc == 0 && strstr(out, "--metrics HOST:PORT"), "%s", out);
    free(out);
}
END_TEST

/* ---- tests: cg-busd ------------------------------------------------------------------------ */

START_TEST(busd_forwarded_counters_grow_with_traffic)
{
    static const char *const to_back[] = {"direction", "frontend_to_backend", NULL};
    static const char *const to_front[] = {"direction", "backend_to_frontend", NULL};
    static const char *const subscribe[] = {"action", "subscribe", NULL};
    bt_busd bus;
    int port;
    char mflag[64], topic[80], *dir;
    const char *extra[] = {"--metrics", mflag, NULL};
    void *ctx = zmq_ctx_new(), *pub = bt_socket(ctx, ZMQ_PUB), *sub = bt_socket(ctx, ZMQ_SUB);
    cJSON *s0, *s1;
    const cJSON *f0, *f1, *b0, *b1;
    double m0, m1, bytes0, bytes1;
    cg_bus_msg *m;
    unsigned long long base_bytes;
    int64_t seq = 1, until;
    int i, got = 0;

    memset(&bus, 0, sizeof(bus));
    bt_free_ports(&port, 1);
    snprintf(mflag, sizeof(mflag), "127.0.0.1:%d", port);
    dir = cgt_tmpdir();
    bt_busd_start(&bus, dir, "m2", extra);
    free(dir);

    s0 = scrape(mflag);
    f0 = family(s0, "coregroup_busd_forwarded_messages_total", "counter");
    b0 = family(s0, "coregroup_busd_forwarded_bytes_total", "counter");
    m0 = value_of(f0, "coregroup_busd_forwarded_messages_total", to_back);
    bytes0 = value_of(b0, "coregroup_busd_forwarded_bytes_total", to_back);
    ck_assert_msg(!isnan(m0) && !isnan(bytes0), "no frontend_to_backend samples");

    ck_assert_int_eq(zmq_connect(pub, bus.fe), 0);
    ck_assert_int_eq(zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "mt-5/", 5), 0);
    ck_assert_int_eq(zmq_connect(sub, bus.be), 0);
    /* heartbeats until the subscription has reached the publisher (ZeroMQ's slow joiner) */
    until = bt_ms() + 10000;
    for (;;) {
        bt_send_heartbeat(pub, "mt-5", "origin", seq++);
        if (bt_recv(sub, topic, &m, 100)) {
            cg_bus_msg_free(m);
            break;
        }
        ck_assert_msg(bt_ms() < until, "no message through the forwarder");
    }
    while (bt_recv(sub, topic, &m, 100)) /* the heartbeats still under way */
        cg_bus_msg_free(m);
    base_bytes = bt_recv_bytes;
    s1 = scrape(mflag);
    f1 = family(s1, "coregroup_busd_forwarded_messages_total", "counter");
    m0 = value_of(f1, "coregroup_busd_forwarded_messages_total", to_back);
    bytes0 = value_of(family(s1, "coregroup_busd_forwarded_bytes_total", "counter"),
                      "coregroup_busd_forwarded_bytes_total", to_back);
    cJSON_Delete(s1);

    for (i = 0; i < 50; i++)
        bt_send_inval(pub, "mt-5", "origin", seq++);
    for (until = bt_ms() + 10000; got < 50 && bt_ms() < until;)
        if (bt_recv(sub, topic, &m, 200)) {
            cg_bus_msg_free(m);
            got++;
        }
    ck_assert_int_eq(got, 50);

    /* the loop publishes its counters after each batch: they show at the next scrape */
    s1 = scrape(mflag);
    f1 = family(s1, "coregroup_busd_forwarded_messages_total", "counter");
    b1 = family(s1, "coregroup_busd_forwarded_bytes_total", "counter");
    m1 = value_of(f1, "coregroup_busd_forwarded_messages_total", to_back);
    bytes1 = value_of(b1, "coregroup_busd_forwarded_bytes_total", to_back);
    ck_assert_msg(m1 - m0 == 50, "forwarded %g -> %g for 50 messages", m0, m1);
    ck_assert_msg(bytes1 - bytes0 == (double)(bt_recv_bytes - base_bytes),
                  "forwarded bytes %g -> %g, received %llu", bytes0, bytes1,
                  bt_recv_bytes - base_bytes);
    ck_assert_msg(value_of(f1, "coregroup_busd_forwarded_messages_total", to_front) >= 1,
                  "the subscription was not counted backend_to_frontend");
    ck_assert_msg(value_of(family(s1, "coregroup_busd_subscriptions_total", "counter"),
                           "coregroup_busd_subscriptions_total", subscribe) >= 1,
                  "no subscription counted");
    ck_assert_msg(value_of(family(s1, "coregroup_busd_dropped_messages_total", "counter"),
                           "coregroup_busd_dropped_messages_total", to_back) == 0,
                  "drops without a slow subscriber");
    {
        const char *kv[] = {"version", CG_VERSION, NULL};
        ck_assert_msg(value_of(family(s1, "coregroup_build_info", "gauge"), "coregroup_build_info",
                               kv) == 1.0,
                      "build_info");
    }
    documented(s1);
    cJSON_Delete(s0);
    cJSON_Delete(s1);
    zmq_close(pub);
    zmq_close(sub);
    zmq_ctx_term(ctx);
    bt_stop(bus.pid, SIGTERM, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *daemon = tcase_create("coregroupd"), *startup = tcase_create("startup_errors");
    TCase *busd = tcase_create("busd");

    tcase_add_unchecked_fixture(daemon, setup, teardown);
    tcase_set_timeout(daemon, 120);
    tcase_add_test(daemon, coregroupd_serves_stats_latency_and_the_cores_histograms);
    tcase_add_test(daemon, scrapes_during_shutdown_get_whole_answers_or_a_clean_close);
    suite_add_tcase(s, daemon);

    tcase_add_unchecked_fixture(startup, setup, teardown);
    tcase_set_timeout(startup, 120);
    tcase_add_test(startup, a_taken_port_is_a_startup_error_naming_the_key_or_flag);
    tcase_add_test(startup, a_malformed_value_is_a_config_error_naming_file_line_and_key);
    suite_add_tcase(s, startup);

    tcase_set_timeout(busd, 120);
    tcase_add_test(busd, busd_forwarded_counters_grow_with_traffic);
    suite_add_tcase(s, busd);
    return cgt_run_suite(s);
}
