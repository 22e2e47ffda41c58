/*
 * bench_swatch — one process of the Swatch benchmark (e-Speak design §2.7.2): a client load of
 * broker-core messages, read-mostly, against one core of a group. tests/bench/bench.py starts
 * the repository, the forwarders, the cores and several of these, and merges what they write.
 *
 *   bench_swatch setup --dsn DSN --group G [--resources N]
 *   bench_swatch run --dsn DSN --group G --core NAME --strategy S --out FILE [options]
 *   bench_swatch run --dsn DSN --group G --daemon ENDPOINT --out FILE [options]
 *
 * The data set (setup, through the library, once per group): N resources (default 10,000),
 * each a service with a specification, a description and a state part ({"n":0}), a service id
 * svc-NNNN shared by 10 replicas (the Locator's case), and a name rNNNNN in one of 100 leaf
 * folders, two levels below the root: /dA/sB/rNNNNN (A, B = 0..9). A run finds the handles
 * again with one SELECT on name_bindings.
 *
 * The mix: each client thread picks its next message at random, by these weights, and a
 * resource by Zipf's law (s = 0.99, a fixed random permutation of the ranks, so the popular
 * resources are spread over the folders):
 *   invoke 60    the resource's state and specification parts read, in one call
 *   discover 20  half a find by its service id, half a lookup of its name in its folder
 *   connect 10   its name path resolved from the root: three lookups, in one call
 *   list 7       the listing of its leaf folder
 *   write 3      two in three a read-modify-write of its state part (read the part, update it
 *                with the version read; on `stale`, read again and retry, up to 16 times);
 *                one in three a re-registration: unregister the thread's previous resource,
 *                register a new replica of the resource's service and bind it under a new
 *                name in the resource's folder, in one call
 * --write-pct P replaces the 3; the reads keep their proportions in what is left. Each message
 * is one call in-process. Through coregroupd (--daemon) each message is one request, except
 * where the protocol needs more: invoke is a `multi` of two gets, connect three `lookup`s (each
 * needs the previous answer), a read-modify-write a `get` then an `update`, a re-registration a
 * `register` then a `multi` of the bind and the previous unregister.
 *
 * Measured: the window [--start-at + --warmup, + --seconds] only (processes started together
 * line their windows up by the wall clock); messages by type, their latency (log buckets of
 * 1/8 octave, merged by the driver into percentiles), stale errors and other errors by code;
 * the core's counters (catch-ups, applied events) over the window; the core's commit-to-eviction
 * histogram. The stale-read sample (--sample-every K): one invoke in K is checked against the
 * repository at once on a connection of its own: when the repository holds a newer state
 * version, the outbox tells when the first newer version committed; if that was before the read
 * began, the read was older than the repository by that much. A write's body counts its own
 * updates ({"n":K} at version K + 1), so the driver can prove no update was lost.
 *
 * Exit status: 0, 1 when the run failed (a core did not open, a message failed with an error
 * the mix does not expect, the repository or the daemon went away), 2 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <zmq.h>

#include "coregroup.h"
#include "coregroup/sys/error.h"

#define N_TOP       10
#define N_LEAF      100
#define N_REPLICAS  10
#define ZIPF_S      0.99
#define LAT_BUCKETS 320 /* 1/8 octave from 1 ns: up to 2^40 ns, 18 minutes */
#define MAX_RETRIES 16
#define GAVE_UP     1 /* a read-modify-write still stale after MAX_RETRIES attempts */

enum { OP_INVOKE, OP_DISCOVER, OP_CONNECT, OP_LIST, OP_RMW, OP_REGISTER, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"invoke", "discover", "connect",
                                               "list",   "rmw",      "register"};

/* ---- options ------------------------------------------------------------------------- */

static struct {
    const char *dsn, *group, *core, *daemon, *out, *barrier;
    const char *publish[4], *subscribe[4];
    int n_publish, n_subscribe;
    cg_cache_strategy strategy;
    int strategy_set;
    int threads, resources, sample_every, poll_ms, max_staleness_ms, prefill;
    double write_pct, warmup, seconds;
    int64_t start_at_ms;
    unsigned seed;
} opt = {.threads = 4,
         .resources = 10000,
         .sample_every = 64,
         .write_pct = 3.0,
         .warmup = 2.0,
         .seconds = 10.0,
         .seed = 1};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bench_swatch: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bench_swatch: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see bench_swatch --help)\n");
    exit(2);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the data set ---------------------------------------------------------------------- */

static int64_t top[N_TOP], leaf[N_LEAF], *res;

static void res_name(char *buf, size_t size, int i)
{
    snprintf(buf, size, "r%05d", i);
}

static void service_id(char *buf, size_t size, int i)
{
    snprintf(buf, size, "svc-%04d", i % (opt.resources / N_REPLICAS));
}

static int leaf_of(int i)
{
    return (int)((int64_t)i * N_LEAF / opt.resources);
}

static void lib_die(const char *what)
{
    die("%s: %s", what, cg_error_last()->message);
}

static cg_core *open_core(const char *name, cg_cache_strategy strategy)
{
    cg_config *cfg;
    cg_core *core;
    int i;
    if (cg_config_new(&cfg) < 0)
        lib_die("config");
    cg_config_set_string(&cfg->dsn, opt.dsn);
    cg_config_set_string(&cfg->core_name, name);
    cg_config_set_string(&cfg->group_id, opt.group);
    for (i = 0; i < opt.n_publish; i++)
        cg_config_set_string(&cfg->publish[cfg->n_publish++], opt.publish[i]);
    for (i = 0; i < opt.n_subscribe; i++)
        cg_config_set_string(&cfg->subscribe[cfg->n_subscribe++], opt.subscribe[i]);
    cfg->strategy = strategy;
    cfg->pool_size = opt.threads + 1 > 64 ? 64 : opt.threads + 1;
    if (opt.poll_ms > 0)
        cfg->poll_interval_ms = opt.poll_ms;
    if (opt.max_staleness_ms > 0)
        cfg->max_staleness_ms = opt.max_staleness_ms;
    if (cg_core_open_config(&core, cfg) < 0)
        lib_die("open the core");
    cg_config_free(cfg);
    return core;
}

static int64_t make_folder(cg_call *call, int64_t parent, const char *name)
{
    cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
    int64_t h;
    o.kind = "folder";
    if (cg_resource_create(&h, call, &o) < 0 || cg_name_bind(call, parent, name, h) < 0)
        lib_die("setup: a folder");
    return h;
}

/* The data set through the library, 100 resources per call; nothing when it is there. */
static int setup(void)
{
    cg_core *core = open_core("swatch-setup", CG_CACHE_NONE);
    cg_call *call;
    int64_t h;
    int i, a, err;
    char name[32], sid[32], spec[160];

    if (cg_call_begin(&call, core) < 0)
        lib_die("setup: begin");
    err = cg_name_lookup(&h, call, CG_ROOT_FOLDER, "d0");
    cg_call_commit(call);
    if (err == 0) {
        printf("bench_swatch: the data set of group %s is there\n", opt.group);
        cg_core_close(core);
        return 0;
    }
    if (cg_call_begin(&call, core) < 0)
        lib_die("setup: begin");
    for (a = 0; a < N_TOP; a++) {
        snprintf(name, sizeof(name), "d%d", a);
        top[a] = make_folder(call, CG_ROOT_FOLDER, name);
    }
    for (a = 0; a < N_LEAF; a++) {
        snprintf(name, sizeof(name), "s%d", a % 10);
        leaf[a] = make_folder(call, top[a / 10], name);
    }
    if (cg_call_commit(call) < 0)
        lib_die("setup: commit the folders");
    for (i = 0; i < opt.resources; i++) {
        cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
        if (i % 100 == 0 && cg_call_begin(&call, core) < 0)
            lib_die("setup: begin");
        res_name(name, sizeof(name), i);
        service_id(sid, sizeof(sid), i);
        snprintf(spec, sizeof(spec),
                 "{\"name\":\"%s\",\"interface\":\"printer\",\"queue\":\"q%d\",\"pad\":"
                 "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
                 name, i);
        o.service_id = sid;
        o.specification = spec;
        o.description = "{\"vendor\":\"swatch\",\"location\":\"floor 3\"}";
        o.state = "{\"n\":0}";
        if (cg_resource_create(&h, call, &o) < 0 ||
            cg_name_bind(call, leaf[leaf_of(i)], name, h) < 0)
            lib_die("setup: a resource");
        if ((i % 100 == 99 || i == opt.resources - 1) && cg_call_commit(call) < 0)
            lib_die("setup: commit");
    }
    cg_core_close(core);
    printf("bench_swatch: group %s: %d resources in %d folders\n", opt.group, opt.resources,
           N_TOP + N_LEAF);
    return 0;
}

static PGconn *pg_connect(void)
{
    PGconn *c = PQconnectdb(opt.dsn);
    if (PQstatus(c) != CONNECTION_OK)
        die("repository: %s", PQerrorMessage(c));
    return c;
}

/* The handles of the data set, from the bindings (one statement). */
static void load_dataset(void)
{
    PGconn *c = pg_connect();
    const char *vals[1] = {opt.group};
    PGresult *r = PQexecParams(c,
                               "SELECT folder_handle, name, target_handle FROM name_bindings "
                               "WHERE group_id = $1 ORDER BY folder_handle",
                               1, NULL, vals, NULL, NULL, 0);
    int i, n, found = 0;

    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("reading the data set: %s", PQerrorMessage(c));
    res = calloc((size_t)opt.resources, sizeof(*res));
    n = PQntuples(r);
    memset(top, 0xff, sizeof(top));
    for (i = 0; i < n; i++) { /* the root's dA */
        const char *name = PQgetvalue(r, i, 1);
        if (strcmp(PQgetvalue(r, i, 0), "0") == 0 && name[0] == 'd' && name[1] >= '0' &&
            name[1] <= '9' && name[2] == '\0')
            top[name[1] - '0'] = strtoll(PQgetvalue(r, i, 2), NULL, 10);
    }
    memset(leaf, 0xff, sizeof(leaf));
    for (i = 0; i < n; i++) { /* dA's sB */
        int64_t folder = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        const char *name = PQgetvalue(r, i, 1);
        int a;
        for (a = 0; a < N_TOP; a++)
            if (folder == top[a] && name[0] == 's' && name[1] >= '0' && name[1] <= '9' &&
                name[2] == '\0')
                leaf[a * 10 + name[1] - '0'] = strtoll(PQgetvalue(r, i, 2), NULL, 10);
    }
    for (i = 0; i < n; i++) { /* the resources rNNNNN */
        const char *name = PQgetvalue(r, i, 1);
        char *end;
        long k;
        if (name[0] != 'r')
            continue;
        k = strtol(name + 1, &end, 10);
        if (*end == '\0' && k >= 0 && k < opt.resources && strlen(name) == 6) {
            res[k] = strtoll(PQgetvalue(r, i, 2), NULL, 10);
            found++;
        }
    }
    for (i = 0; i < N_LEAF; i++)
        if (leaf[i] < 0 || top[i / 10] < 0)
            die("group %s has no data set (run bench_swatch setup)", opt.group);
    if (found != opt.resources)
        die("group %s has %d of the %d resources of the data set", opt.group, found, opt.resources);
    PQclear(r);
    PQfinish(c);
}

/* ---- randomness and Zipf ---------------------------------------------------------------- */

static double *zipf_cdf;
static int *zipf_perm;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t x = (*s += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static double uniform(uint64_t *s)
{
    return (double)(splitmix(s) >> 11) / 9007199254740992.0;
}

static void zipf_init(void)
{
    uint64_t s = 12345; /* the same permutation in every process of a run */
    double sum = 0;
    int i;
    zipf_cdf = malloc((size_t)opt.resources * sizeof(double));
    zipf_perm = malloc((size_t)opt.resources * sizeof(int));
    for (i = 0; i < opt.resources; i++) {
        sum += 1.0 / pow(i + 1, ZIPF_S);
        zipf_cdf[i] = sum;
        zipf_perm[i] = i;
    }
    for (i = 0; i < opt.resources; i++)
        zipf_cdf[i] /= sum;
    for (i = opt.resources - 1; i > 0; i--) {
        int j = (int)(splitmix(&s) % (uint64_t)(i + 1)), t = zipf_perm[i];
        zipf_perm[i] = zipf_perm[j];
        zipf_perm[j] = t;
    }
}

static int zipf(uint64_t *s)
{
    double u = uniform(s);
    int lo = 0, hi = opt.resources - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (zipf_cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return zipf_perm[lo];
}

/* ---- per-thread figures ----------------------------------------------------------------- */

typedef struct {
    uint64_t ops[OP_COUNT];
    uint64_t lat[OP_COUNT][LAT_BUCKETS];
    uint64_t stale, gave_up, errors;
    char first_error[256];
    uint64_t sampled, older;
    int64_t oldest_us;
} figures;

static int lat_bucket(int64_t ns)
{
    int b;
    if (ns < 1)
        return 0;
    b = (int)(log2((double)ns) * 8.0);
    return b < LAT_BUCKETS ? b : LAT_BUCKETS - 1;
}

typedef struct worker worker;
struct worker {
    int id;
    pthread_t tid;
    cg_core *core;
    void *sock; /* DEALER to the daemon */
    PGconn *sample_conn;
    uint64_t rng;
    int64_t own;      /* the resource this thread registered last, -1: none */
    int64_t own_leaf; /* its folder */
    char own_name[64];
    uint64_t seq;
    int64_t window_start_ns, window_end_ns;
    int measuring;
    figures f;
    int failed;
};

static atomic_int stop_all;
static char run_tag[32];

static void note_error(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_error(worker *w, const char *fmt, ...)
{
    va_list ap;
    if (w->measuring)
        w->f.errors++;
    if (w->f.first_error[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(w->f.first_error, sizeof(w->f.first_error), fmt, ap);
        va_end(ap);
    }
}

/*
 * The stale-read sample: the state version v was read by a read that began at began_us (wall
 * clock). Older than the repository when a version above v had committed before began_us; its
 * age is how long before. First the part's version by its key (cheap); only when it is above v
 * the outbox says when the first newer version committed (committed_at is the append's
 * clock_timestamp(), just before COMMIT, so an age is if anything over-stated).
 */
static void sample_read(worker *w, int64_t handle, int64_t v, int64_t began_us)
{
    char hb[24], vb[24], tb[24];
    const char *vals[4] = {opt.group, hb, vb, tb};
    PGresult *r;
    snprintf(hb, sizeof(hb), "%" PRId64, handle);
    snprintf(vb, sizeof(vb), "%" PRId64, v);
    snprintf(tb, sizeof(tb), "%" PRId64, began_us);
    r = PQexecPrepared(w->sample_conn, "sample_version", 2, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        note_error(w, "stale-read sample: %s", PQerrorMessage(w->sample_conn));
        PQclear(r);
        return;
    }
    w->f.sampled++;
    if (strtoll(PQgetvalue(r, 0, 0), NULL, 10) <= v) {
        PQclear(r);
        return;
    }
    PQclear(r);
    r = PQexecPrepared(w->sample_conn, "sample_age", 4, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        note_error(w, "stale-read sample: %s", PQerrorMessage(w->sample_conn));
        PQclear(r);
        return;
    }
    if (!PQgetisnull(r, 0, 0)) {
        int64_t age = began_us - strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        if (age > 0) {
            w->f.older++;
            if (age > w->f.oldest_us)
                w->f.oldest_us = age;
        }
    }
    PQclear(r);
}

static PGconn *sample_connect(void)
{
    PGconn *c = pg_connect();
    PGresult *r1 = PQprepare(c, "sample_version",
                             "SELECT version FROM resource_parts WHERE group_id = $1 "
                             "AND handle = $2 AND part = 'state'",
                             2, NULL);
    PGresult *r2 =
        PQprepare(c, "sample_age",
                  "SELECT (extract(epoch FROM min(i.committed_at)) * 1000000)::bigint "
                  "FROM invalidations i, jsonb_to_recordset(coalesce(i.items_v2, i.items)) "
                  "     AS x (h bigint, p text, v bigint) "
                  "WHERE i.group_id = $1 AND x.h = $2 AND x.p = 'state' AND x.v > $3 "
                  "  AND i.committed_at <= to_timestamp($4::bigint / 1000000.0) "
                  "  AND i.committed_at > to_timestamp($4::bigint / 1000000.0) - interval '60 s'",
                  4, NULL);
    if (PQresultStatus(r1) != PGRES_COMMAND_OK || PQresultStatus(r2) != PGRES_COMMAND_OK)
        die("preparing the stale-read sample: %s", PQerrorMessage(c));
    PQclear(r1);
    PQclear(r2);
    return c;
}

/* ---- the messages, in-process ----------------------------------------------------------- */

static int lib_invoke(worker *w, int i, int64_t began_us)
{
    cg_call *call;
    const cg_part *a, *b; /* lent by the call */
    int64_t version;
    int err;
    if ((err = cg_call_begin(&call, w->core)) < 0)
        return err;
    if ((err = cg_part_get(&a, call, res[i], CG_PART_STATE)) < 0 ||
        (err = cg_part_get(&b, call, res[i], CG_PART_SPECIFICATION)) < 0) {
        cg_call_abort(call);
        return err;
    }
    version = cg_part_version(a);
    err = cg_call_commit(call);
    if (err == 0 && w->sample_conn && w->measuring && ++w->seq % (uint64_t)opt.sample_every == 0)
        sample_read(w, res[i], version, began_us);
    return err;
}

static int lib_discover(worker *w, int i)
{
    cg_call *call;
    int err;
    char buf[32];
    if ((err = cg_call_begin(&call, w->core)) < 0)
        return err;
    if (splitmix(&w->rng) & 1) {
        cg_handle_list l;
        service_id(buf, sizeof(buf), i);
        if ((err = cg_resource_find(&l, call, buf)) == 0)
            cg_handle_list_dispose(&l);
    } else {
        int64_t t;
        res_name(buf, sizeof(buf), i);
        err = cg_name_lookup(&t, call, leaf[leaf_of(i)], buf);
    }
    if (err < 0) {
        cg_call_abort(call);
        return err;
    }
    return cg_call_commit(call);
}

static int lib_connect(worker *w, int i)
{
    cg_call *call;
    int64_t d, s, r;
    int err, l = leaf_of(i);
    char a[16], b[16], name[32];
    snprintf(a, sizeof(a), "d%d", l / 10);
    snprintf(b, sizeof(b), "s%d", l % 10);
    res_name(name, sizeof(name), i);
    if ((err = cg_call_begin(&call, w->core)) < 0)
        return err;
    if ((err = cg_name_lookup(&d, call, CG_ROOT_FOLDER, a)) < 0 ||
        (err = cg_name_lookup(&s, call, d, b)) < 0 ||
        (err = cg_name_lookup(&r, call, s, name)) < 0) {
        cg_call_abort(call);
        return err;
    }
    return cg_call_commit(call);
}

static int lib_list(worker *w, int i)
{
    cg_call *call;
    cg_name_list l;
    int err;
    if ((err = cg_call_begin(&call, w->core)) < 0)
        return err;
    if ((err = cg_name_list_get(&l, call, leaf[leaf_of(i)])) < 0) {
        cg_call_abort(call);
        return err;
    }
    cg_name_list_dispose(&l);
    return cg_call_commit(call);
}

/* The state body's counter: {"n":K}. */
static long body_n(const char *body)
{
    const char *p = strstr(body, "\"n\"");
    if (p == NULL || (p = strchr(p, ':')) == NULL)
        return -1;
    return strtol(p + 1, NULL, 10);
}

static int lib_rmw(worker *w, int i)
{
    int attempt, err = 0;
    for (attempt = 0; attempt < MAX_RETRIES; attempt++) {
        cg_call *call;
        const cg_part *p; /* lent by the call */
        char body[48];
        long n;
        if ((err = cg_call_begin(&call, w->core)) < 0)
            return err;
        if ((err = cg_part_get(&p, call, res[i], CG_PART_STATE)) < 0) {
            cg_call_abort(call);
            return err;
        }
        if ((n = body_n(cg_part_body(p))) < 0) {
            cg_call_abort(call);
            return cg_error_set(CG_ERROR, CG_ERRCLASS_INPUT, "state of %" PRId64 " has no n",
                                res[i]);
        }
        snprintf(body, sizeof(body), "{\"n\":%ld}", n + 1);
        err = cg_part_update(NULL, call, res[i], CG_PART_STATE, cg_part_version(p), body);
        if (err == 0)
            err = cg_call_commit(call);
        else
            cg_call_abort(call);
        if (err != CG_ESTALE)
            return err;
        if (w->measuring)
            w->f.stale++;
    }
    if (w->measuring)
        w->f.gave_up++;
    return GAVE_UP;
}

static int lib_register(worker *w, int i)
{
    cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
    cg_call *call;
    int64_t h;
    int err, l = leaf_of(i);
    char sid[32], name[64];
    service_id(sid, sizeof(sid), i);
    snprintf(name, sizeof(name), "w-%s-%d-%" PRIu64, run_tag, w->id, w->seq++);
    o.service_id = sid;
    o.specification = "{\"interface\":\"printer\",\"replica\":true}";
    o.state = "{\"n\":0}";
    if ((err = cg_call_begin(&call, w->core)) < 0)
        return err;
    if ((w->own >= 0 && (err = cg_resource_delete(call, w->own)) < 0) ||
        (err = cg_resource_create(&h, call, &o)) < 0 ||
        (err = cg_name_bind(call, leaf[l], name, h)) < 0) {
        cg_call_abort(call);
        return err;
    }
    if ((err = cg_call_commit(call)) == 0)
        w->own = h;
    return err;
}

/* ---- the messages, through coregroupd ----------------------------------------------------- */

/* One request, its reply parsed; NULL with an error noted when the daemon did not answer. */
static cJSON *request(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static cJSON *request(worker *w, const char *fmt, ...)
{
    char buf[16384];
    va_list ap;
    zmq_msg_t m;
    cJSON *reply;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (zmq_send(w->sock, buf, (size_t)n, 0) < 0) {
        note_error(w, "send: %s", zmq_strerror(errno));
        return NULL;
    }
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, w->sock, 0) < 0) {
        zmq_msg_close(&m);
        note_error(w, "no reply from the daemon within 10 s: %s", zmq_strerror(errno));
        w->failed = 1;
        return NULL;
    }
    reply = cJSON_ParseWithLength(zmq_msg_data(&m), zmq_msg_size(&m));
    zmq_msg_close(&m);
    return reply;
}

/* 0, CG_ESTALE, or -1 (noted) for a reply. */
static int reply_status(worker *w, cJSON *reply, const char *what)
{
    cJSON *ok = cJSON_GetObjectItemCaseSensitive(reply, "ok"), *e, *code;
    if (reply == NULL)
        return -1;
    if (cJSON_IsTrue(ok))
        return 0;
    e = cJSON_GetObjectItemCaseSensitive(reply, "error");
    code = cJSON_GetObjectItemCaseSensitive(e, "code");
    if (cJSON_IsString(code) && strcmp(code->valuestring, "stale") == 0)
        return CG_ESTALE;
    {
        char *text = cJSON_PrintUnformatted(e);
        note_error(w, "%s: %s", what, text ? text : "?");
        free(text);
    }
    return -1;
}

static int64_t int_field(cJSON *o, const char *name)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

static int d_invoke(worker *w, int i, int64_t began_us)
{
    cJSON *r = request(
        w,
        "{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[{\"op\":\"get\",\"handle\":%" PRId64
        ",\"part\":\"state\"},{\"op\":\"get\",\"handle\":%" PRId64 ",\"part\":\"specification\"}]}",
        res[i], res[i]);
    int err = reply_status(w, r, "invoke");
    if (err == 0 && w->sample_conn && w->measuring && ++w->seq % (uint64_t)opt.sample_every == 0) {
        cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "results"), 0);
        sample_read(w, res[i], int_field(first, "version"), began_us);
    }
    cJSON_Delete(r);
    return err;
}

static int d_discover(worker *w, int i)
{
    char buf[32];
    cJSON *r;
    int err;
    if (splitmix(&w->rng) & 1) {
        service_id(buf, sizeof(buf), i);
        r = request(w, "{\"v\":1,\"id\":1,\"op\":\"find\",\"service_id\":\"%s\"}", buf);
    } else {
        res_name(buf, sizeof(buf), i);
        r = request(w,
                    "{\"v\":1,\"id\":1,\"op\":\"lookup\",\"folder\":%" PRId64 ",\"name\":\"%s\"}",
                    leaf[leaf_of(i)], buf);
    }
    err = reply_status(w, r, "discover");
    cJSON_Delete(r);
    return err;
}

static int d_connect(worker *w, int i)
{
    char names[3][32];
    int64_t folder = CG_ROOT_FOLDER;
    int k, l = leaf_of(i);
    snprintf(names[0], sizeof(names[0]), "d%d", l / 10);
    snprintf(names[1], sizeof(names[1]), "s%d", l % 10);
    res_name(names[2], sizeof(names[2]), i);
    for (k = 0; k < 3; k++) {
        cJSON *r = request(
            w, "{\"v\":1,\"id\":1,\"op\":\"lookup\",\"folder\":%" PRId64 ",\"name\":\"%s\"}",
            folder, names[k]);
        int err = reply_status(w, r, "connect");
        folder = int_field(r, "target");
        cJSON_Delete(r);
        if (err < 0)
            return err;
    }
    return 0;
}

static int d_list(worker *w, int i)
{
    cJSON *r =
        request(w, "{\"v\":1,\"id\":1,\"op\":\"list\",\"folder\":%" PRId64 "}", leaf[leaf_of(i)]);
    int err = reply_status(w, r, "list");
    cJSON_Delete(r);
    return err;
}

static int d_rmw(worker *w, int i)
{
    int attempt;
    for (attempt = 0; attempt < MAX_RETRIES; attempt++) {
        cJSON *r = request(
            w, "{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":%" PRId64 ",\"part\":\"state\"}",
            res[i]);
        cJSON *n;
        int64_t v;
        long count;
        int err = reply_status(w, r, "rmw get");
        if (err < 0) {
            cJSON_Delete(r);
            return err;
        }
        v = int_field(r, "version");
        n = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "body"), "n");
        if (!cJSON_IsNumber(n)) {
            note_error(w, "state of %" PRId64 " has no n", res[i]);
            cJSON_Delete(r);
            return -1;
        }
        count = (long)n->valuedouble;
        cJSON_Delete(r);
        r = request(w,
                    "{\"v\":1,\"id\":1,\"op\":\"update\",\"handle\":%" PRId64
                    ",\"part\":\"state\",\"expected\":%" PRId64 ",\"body\":{\"n\":%ld}}",
                    res[i], v, count + 1);
        err = reply_status(w, r, "rmw update");
        cJSON_Delete(r);
        if (err != CG_ESTALE)
            return err;
        if (w->measuring)
            w->f.stale++;
    }
    if (w->measuring)
        w->f.gave_up++;
    return GAVE_UP;
}

static int d_register(worker *w, int i)
{
    char sid[32], name[64];
    int64_t h;
    int err, l = leaf_of(i);
    cJSON *r;
    service_id(sid, sizeof(sid), i);
    snprintf(name, sizeof(name), "w-%s-%d-%" PRIu64, run_tag, w->id, w->seq++);
    r = request(
        w,
        "{\"v\":1,\"id\":1,\"op\":\"register\",\"service_id\":\"%s\","
        "\"specification\":{\"interface\":\"printer\",\"replica\":true},\"state\":{\"n\":0}}",
        sid);
    if ((err = reply_status(w, r, "register")) < 0) {
        cJSON_Delete(r);
        return err;
    }
    h = int_field(r, "handle");
    cJSON_Delete(r);
    if (w->own >= 0)
        r = request(
            w,
            "{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[{\"op\":\"bind\",\"folder\":%" PRId64
            ",\"name\":\"%s\",\"target\":%" PRId64 "},{\"op\":\"unregister\",\"handle\":%" PRId64
            "}]}",
            leaf[l], name, h, w->own);
    else
        r = request(w,
                    "{\"v\":1,\"id\":1,\"op\":\"bind\",\"folder\":%" PRId64
                    ",\"name\":\"%s\",\"target\":%" PRId64 "}",
                    leaf[l], name, h);
    err = reply_status(w, r, "register: bind");
    cJSON_Delete(r);
    if (err == 0)
        w->own = h;
    return err;
}

/* ---- the load ------------------------------------------------------------------------------ */

static double weights[OP_COUNT];

static int pick(worker *w)
{
    double u = uniform(&w->rng);
    int k;
    for (k = 0; k < OP_COUNT - 1; k++) {
        if (u < weights[k])
            return k;
        u -= weights[k];
    }
    return OP_COUNT - 1;
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    while (!atomic_load(&stop_all) && !w->failed) {
        int op = pick(w), i = zipf(&w->rng), err = 0;
        int64_t t0 = mono_ns(), began_us = wall_us(), t1;
        w->measuring = t0 >= w->window_start_ns && t0 < w->window_end_ns;
        if (t0 >= w->window_end_ns)
            break;
        switch (op) {
        case OP_INVOKE:
            err = w->core ? lib_invoke(w, i, began_us) : d_invoke(w, i, began_us);
            break;
        case OP_DISCOVER:
            err = w->core ? lib_discover(w, i) : d_discover(w, i);
            break;
        case OP_CONNECT:
            err = w->core ? lib_connect(w, i) : d_connect(w, i);
            break;
        case OP_LIST:
            err = w->core ? lib_list(w, i) : d_list(w, i);
            break;
        case OP_RMW:
            err = w->core ? lib_rmw(w, i) : d_rmw(w, i);
            break;
        default:
            err = w->core ? lib_register(w, i) : d_register(w, i);
            break;
        }
        t1 = mono_ns();
        if (err < 0) {
            if (w->core) /* through the daemon, reply_status noted it */
                note_error(w, "%s: %s", op_names[op], cg_error_last()->message);
            continue;
        }
        if (err == GAVE_UP) /* counted apart: a write that did not happen is no message served */
            continue;
        if (w->measuring) {
            w->f.ops[op]++;
            w->f.lat[op][lat_bucket(t1 - t0)]++;
        }
    }
    return NULL;
}

/* The daemon's counters (the "stats" request), or the core's. */
static void counters(cg_core *core, void *sock, uint64_t *catchups, int64_t *applied,
                     uint64_t *gaps, uint64_t *resets)
{
    *catchups = *gaps = *resets = 0;
    *applied = -1;
    if (core) {
        cg_core_stats st;
        cg_core_stats_get(core, &st);
        *catchups = st.catchups;
        *applied = st.applied_seq;
        *gaps = st.gaps;
        *resets = st.cache_resets;
    } else if (sock) {
        worker tmp;
        cJSON *r, *s;
        memset(&tmp, 0, sizeof(tmp));
        tmp.sock = sock;
        r = request(&tmp, "{\"v\":1,\"id\":1,\"op\":\"stats\"}");
        s = cJSON_GetObjectItemCaseSensitive(r, "stats");
        if (s) {
            *catchups = (uint64_t)int_field(s, "catchups");
            *applied = int_field(s, "applied_seq");
            *gaps = (uint64_t)int_field(s, "gaps");
            *resets = (uint64_t)int_field(s, "cache_resets");
        }
        cJSON_Delete(r);
    }
}

static void *dealer(void *ctx)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int timeout = 10000, linger = 0;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_connect(s, opt.daemon) < 0)
        die("connect to %s: %s", opt.daemon, zmq_strerror(errno));
    return s;
}

/*
 * --prefill: what a core that has served for a while holds, loaded before the warm-up: every
 * resource's state and specification, every folder's listing and every service id's find. In
 * process one call per 100 resources; through the daemon `multi` requests of 200 operations.
 */
static void prefill(cg_core *core, void *sock)
{
    char buf[32];
    int i, k;
    if (core) {
        cg_call *call = NULL;
        for (i = 0; i < opt.resources; i++) {
            const cg_part *p;
            if (i % 100 == 0 && cg_call_begin(&call, core) < 0)
                lib_die("prefill: begin");
            if (cg_part_get(&p, call, res[i], CG_PART_STATE) < 0)
                lib_die("prefill: get");
            if (cg_part_get(&p, call, res[i], CG_PART_SPECIFICATION) < 0)
                lib_die("prefill: get");
            if (i < opt.resources / N_REPLICAS) {
                cg_handle_list l;
                service_id(buf, sizeof(buf), i);
                if (cg_resource_find(&l, call, buf) < 0)
                    lib_die("prefill: find");
                cg_handle_list_dispose(&l);
            }
            if (i < N_LEAF + N_TOP + 1) {
                cg_name_list l;
                int64_t f = i < N_LEAF ? leaf[i] : i < N_LEAF + N_TOP ? top[i - N_LEAF] : 0;
                if (cg_name_list_get(&l, call, f) < 0)
                    lib_die("prefill: list");
                cg_name_list_dispose(&l);
            }
            if ((i % 100 == 99 || i == opt.resources - 1) && cg_call_commit(call) < 0)
                lib_die("prefill: commit");
        }
        return;
    }
    for (i = 0; i < opt.resources; i += 50) {
        char req[16384];
        size_t n =
            (size_t)snprintf(req, sizeof(req), "{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[");
        worker tmp;
        cJSON *r;
        for (k = i; k < i + 50 && k < opt.resources; k++) {
            n += (size_t)snprintf(req + n, sizeof(req) - n,
                                  "%s{\"op\":\"get\",\"handle\":%" PRId64
                                  ",\"part\":\"state\"},{\"op\":\"get\",\"handle\":%" PRId64
                                  ",\"part\":\"specification\"}",
                                  k > i ? "," : "", res[k], res[k]);
            if (k < opt.resources / N_REPLICAS) {
                service_id(buf, sizeof(buf), k);
                n += (size_t)snprintf(req + n, sizeof(req) - n,
                                      ",{\"op\":\"find\",\"service_id\":\"%s\"}", buf);
            }
            if (k < N_LEAF + N_TOP + 1)
                n += (size_t)snprintf(req + n, sizeof(req) - n,
                                      ",{\"op\":\"list\",\"folder\":%" PRId64 "}",
                                      k < N_LEAF           ? leaf[k]
                                      : k < N_LEAF + N_TOP ? top[k - N_LEAF]
                                                           : 0);
        }
        snprintf(req + n, sizeof(req) - n, "]}");
        memset(&tmp, 0, sizeof(tmp));
        tmp.sock = sock;
        r = request(&tmp, "%s", req);
        if (reply_status(&tmp, r, "prefill") < 0)
            die("prefill through the daemon: %s", tmp.f.first_error);
        cJSON_Delete(r);
    }
}

static int run(void)
{
    worker *ws = calloc((size_t)opt.threads, sizeof(*ws));
    cg_core *core = NULL;
    void *zctx = NULL, *ctl = NULL;
    double write = opt.write_pct / 100.0, reads = 1.0 - write;
    int64_t now_ms = wall_ms(), start_ms = opt.start_at_ms > 0 ? opt.start_at_ms : now_ms;
    int64_t mono0 = mono_ns() + (start_ms - now_ms) * 1000000;
    int64_t wstart = mono0 + (int64_t)(opt.warmup * 1e9),
            wend = wstart + (int64_t)(opt.seconds * 1e9);
    uint64_t c0, c1, g0, g1, r0, r1;
    int64_t a0, a1;
    int i, k, failed = 0;
    figures total;
    cJSON *out, *lat, *errs;
    FILE *f;

    weights[OP_INVOKE] = reads * 60 / 97;
    weights[OP_DISCOVER] = reads * 20 / 97;
    weights[OP_CONNECT] = reads * 10 / 97;
    weights[OP_LIST] = reads * 7 / 97;
    weights[OP_RMW] = write * 2 / 3;
    weights[OP_REGISTER] = write / 3;
    snprintf(run_tag, sizeof(run_tag), "%" PRId64 "-%d", start_ms % 100000000, (int)getpid());
    zipf_init();
    load_dataset();
    if (opt.daemon) {
        zctx = zmq_ctx_new();
        ctl = dealer(zctx);
    } else {
        core = open_core(opt.core, opt.strategy);
    }
    for (i = 0; i < opt.threads; i++) {
        worker *w = &ws[i];
        w->id = i;
        w->core = core;
        w->own = -1;
        w->rng = opt.seed * 1000003ULL + (uint64_t)getpid() * 7919ULL + (uint64_t)i;
        w->window_start_ns = wstart;
        w->window_end_ns = wend;
        if (opt.daemon)
            w->sock = dealer(zctx);
        if (opt.sample_every > 0)
            w->sample_conn = sample_connect();
    }
    if (opt.prefill)
        prefill(core, ctl);
    if (opt.barrier) { /* ready; the driver says when the warm-up of every process begins */
        char path[4096];
        FILE *rf;
        int64_t until = wall_ms() + 300000;
        snprintf(path, sizeof(path), "%s/ready.%d", opt.barrier, (int)getpid());
        if ((rf = fopen(path, "w")) == NULL || fclose(rf) != 0)
            die("%s: %s", path, strerror(errno));
        snprintf(path, sizeof(path), "%s/go", opt.barrier);
        for (;;) {
            long long at = 0;
            if ((rf = fopen(path, "r")) != NULL) {
                int got = fscanf(rf, "%lld", &at);
                fclose(rf);
                if (got == 1 && at > 0) {
                    now_ms = wall_ms();
                    mono0 = mono_ns() + ((int64_t)at - now_ms) * 1000000;
                    wstart = mono0 + (int64_t)(opt.warmup * 1e9);
                    wend = wstart + (int64_t)(opt.seconds * 1e9);
                    for (i = 0; i < opt.threads; i++) {
                        ws[i].window_start_ns = wstart;
                        ws[i].window_end_ns = wend;
                    }
                    break;
                }
            }
            if (wall_ms() > until)
                die("no start from the driver within 300 s (%s)", path);
            usleep(2000);
        }
    }
    while (mono_ns() < mono0) /* the common start */
        usleep(1000);
    for (i = 0; i < opt.threads; i++)
        pthread_create(&ws[i].tid, NULL, run_worker, &ws[i]);
    while (mono_ns() < wstart)
        usleep(1000);
    counters(core, ctl, &c0, &a0, &g0, &r0);
    while (mono_ns() < wend)
        usleep(1000);
    counters(core, ctl, &c1, &a1, &g1, &r1);
    for (i = 0; i < opt.threads; i++)
        pthread_join(ws[i].tid, NULL);

    memset(&total, 0, sizeof(total));
    for (i = 0; i < opt.threads; i++) {
        figures *g = &ws[i].f;
        for (k = 0; k < OP_COUNT; k++) {
            int b;
            total.ops[k] += g->ops[k];
            for (b = 0; b < LAT_BUCKETS; b++)
                total.lat[k][b] += g->lat[k][b];
        }
        total.stale += g->stale;
        total.gave_up += g->gave_up;
        total.errors += g->errors;
        total.sampled += g->sampled;
        total.older += g->older;
        if (g->oldest_us > total.oldest_us)
            total.oldest_us = g->oldest_us;
        if (g->first_error[0] && total.first_error[0] == '\0')
            memcpy(total.first_error, g->first_error, sizeof(total.first_error));
        if (ws[i].failed)
            failed = 1;
    }

    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "mode", opt.daemon ? "daemon" : "library");
    cJSON_AddStringToObject(out, "core", opt.daemon ? opt.daemon : opt.core);
    cJSON_AddNumberToObject(out, "threads", opt.threads);
    cJSON_AddNumberToObject(out, "seconds", opt.seconds);
    cJSON_AddNumberToObject(out, "write_pct", opt.write_pct);
    {
        cJSON *ops = cJSON_AddObjectToObject(out, "ops");
        for (k = 0; k < OP_COUNT; k++)
            cJSON_AddNumberToObject(ops, op_names[k], (double)total.ops[k]);
    }
    lat = cJSON_AddObjectToObject(out, "latency_buckets");
    for (k = 0; k < OP_COUNT; k++) {
        cJSON *arr = cJSON_AddArrayToObject(lat, op_names[k]);
        int b;
        for (b = 0; b < LAT_BUCKETS; b++)
            if (total.lat[k][b]) {
                cJSON *pair = cJSON_CreateArray();
                cJSON_AddItemToArray(pair, cJSON_CreateNumber(b));
                cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)total.lat[k][b]));
                cJSON_AddItemToArray(arr, pair);
            }
    }
    cJSON_AddNumberToObject(out, "stale_errors", (double)total.stale);
    cJSON_AddNumberToObject(out, "gave_up", (double)total.gave_up);
    cJSON_AddNumberToObject(out, "errors", (double)total.errors);
    cJSON_AddStringToObject(out, "first_error", total.first_error);
    cJSON_AddNumberToObject(out, "reads_sampled", (double)total.sampled);
    cJSON_AddNumberToObject(out, "reads_older", (double)total.older);
    cJSON_AddNumberToObject(out, "oldest_read_ms", (double)total.oldest_us / 1000.0);
    cJSON_AddNumberToObject(out, "catchups", (double)(c1 - c0));
    cJSON_AddNumberToObject(out, "gaps", (double)(g1 - g0));
    cJSON_AddNumberToObject(out, "cache_resets", (double)(r1 - r0));
    cJSON_AddNumberToObject(out, "events", a0 >= 0 && a1 >= a0 ? (double)(a1 - a0) : -1);
    if (core) {
        cg_histogram h;
        errs = cJSON_AddObjectToObject(out, "eviction_lag_ms");
        if (cg_core_histogram_get(&h, core, CG_HIST_EVICTION_LAG_MS) == 0) {
            cJSON *le = cJSON_AddArrayToObject(errs, "le"),
                  *cnt = cJSON_AddArrayToObject(errs, "count");
            size_t b;
            for (b = 0; b < h.n_buckets; b++) {
                cJSON_AddItemToArray(le, cJSON_CreateNumber(isinf(h.le[b]) ? -1 : h.le[b]));
                cJSON_AddItemToArray(cnt, cJSON_CreateNumber((double)h.count[b]));
            }
        }
    }
    cJSON_AddBoolToObject(out, "failed", failed);
    {
        char *text = cJSON_Print(out);
        if ((f = fopen(opt.out, "w")) == NULL || fputs(text, f) < 0 || fclose(f) != 0)
            die("writing %s: %s", opt.out, strerror(errno));
        free(text);
    }
    cJSON_Delete(out);
    for (i = 0; i < opt.threads; i++) {
        if (ws[i].sock)
            zmq_close(ws[i].sock);
        if (ws[i].sample_conn)
            PQfinish(ws[i].sample_conn);
    }
    if (ctl)
        zmq_close(ctl);
    if (zctx)
        zmq_ctx_term(zctx);
    if (core)
        cg_core_close(core);
    free(ws);
    if (failed)
        fprintf(stderr, "bench_swatch: %s failed: %s\n", opt.daemon ? opt.daemon : opt.core,
                total.first_error);
    return failed ? 1 : 0;
}

/* ---- main ----------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "Usage: bench_swatch setup --dsn DSN --group GROUP [--resources N]\n"
        "       bench_swatch run --dsn DSN --group GROUP (--core NAME --strategy S | --daemon EP)\n"
        "                        --out FILE [options]\n"
        "One process of the Swatch benchmark (tests/bench/bench.py runs the whole suite).\n"
        "Options of run:\n"
        "  --threads N          client threads (default 4)\n"
        "  --write-pct P        writes, percent of messages, 0..100 (default 3)\n"
        "  --warmup S           seconds before the window (default 2)\n"
        "  --seconds S          the measured window (default 10)\n"
        "  --start-at MS        wall-clock ms since the epoch at which the warm-up begins\n"
        "  --strategy S         none, version-check or invalidate (in-process core)\n"
        "  --publish EP         the core's bus publish endpoint (repeatable)\n"
        "  --subscribe EP       the core's bus subscribe endpoint (repeatable)\n"
        "  --poll-ms MS         the core's [bus] poll_interval_ms\n"
        "  --max-staleness-ms MS  the core's [cache] max_staleness_ms\n"
        "  --sample-every K     check one invoke in K against the repository (0: none;\n"
        "                       default 64)\n"
        "  --seed N             the random seed (default 1)\n"
        "Exit status: 0 done, 1 the run failed, 2 bad usage.\n");
}

static double num(const char *name, const char *v, double lo, double hi)
{
    char *end;
    double x;
    errno = 0;
    x = strtod(v, &end);
    if (errno || end == v || *end != '\0' || !(x >= lo && x <= hi))
        usage_error("--%s \"%s\": expected a number from %g to %g", name, v, lo, hi);
    return x;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"dsn", required_argument, NULL, 'd'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"core", required_argument, NULL, 'c'},
                                         {"daemon", required_argument, NULL, 'D'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"strategy", required_argument, NULL, 'S'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"resources", required_argument, NULL, 'n'},
                                         {"write-pct", required_argument, NULL, 'w'},
                                         {"warmup", required_argument, NULL, 'W'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"start-at", required_argument, NULL, 'A'},
                                         {"publish", required_argument, NULL, 'P'},
                                         {"subscribe", required_argument, NULL, 'B'},
                                         {"poll-ms", required_argument, NULL, 'p'},
                                         {"max-staleness-ms", required_argument, NULL, 'm'},
                                         {"sample-every", required_argument, NULL, 'k'},
                                         {"seed", required_argument, NULL, 'r'},
                                         {"prefill", no_argument, NULL, 'F'},
                                         {"barrier", required_argument, NULL, 'R'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *cmd;
    int c;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc < 2 || (strcmp(argv[1], "setup") != 0 && strcmp(argv[1], "run") != 0))
        usage_error("expected the command setup or run");
    cmd = argv[1];
    optind = 2;
    opterr = 0; /* our own message names the option */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            opt.dsn = optarg;
            break;
        case 'g':
            opt.group = optarg;
            break;
        case 'c':
            opt.core = optarg;
            break;
        case 'D':
            opt.daemon = optarg;
            break;
        case 'o':
            opt.out = optarg;
            break;
        case 'S':
            opt.strategy_set = 1;
            if (strcmp(optarg, "none") == 0)
                opt.strategy = CG_CACHE_NONE;
            else if (strcmp(optarg, "version-check") == 0)
                opt.strategy = CG_CACHE_VERSION_CHECK;
            else if (strcmp(optarg, "invalidate") == 0)
                opt.strategy = CG_CACHE_INVALIDATE;
            else
                usage_error("--strategy \"%s\": expected none, version-check or invalidate",
                            optarg);
            break;
        case 't':
            opt.threads = (int)num("threads", optarg, 1, 256);
            break;
        case 'n':
            opt.resources = (int)num("resources", optarg, 1000, 1000000);
            break;
        case 'w':
            opt.write_pct = num("write-pct", optarg, 0, 100);
            break;
        case 'W':
            opt.warmup = num("warmup", optarg, 0, 3600);
            break;
        case 's':
            opt.seconds = num("seconds", optarg, 0.1, 86400);
            break;
        case 'A':
            opt.start_at_ms = (int64_t)num("start-at", optarg, 0, 1e15);
            break;
        case 'P':
            if (opt.n_publish == 4)
                usage_error("--publish: at most 4");
            opt.publish[opt.n_publish++] = optarg;
            break;
        case 'B':
            if (opt.n_subscribe == 4)
                usage_error("--subscribe: at most 4");
            opt.subscribe[opt.n_subscribe++] = optarg;
            break;
        case 'p':
            opt.poll_ms = (int)num("poll-ms", optarg, 10, 3600000);
            break;
        case 'm':
            opt.max_staleness_ms = (int)num("max-staleness-ms", optarg, 20, 86400000);
            break;
        case 'k':
            opt.sample_every = (int)num("sample-every", optarg, 0, 1e9);
            break;
        case 'r':
            opt.seed = (unsigned)num("seed", optarg, 0, 4e9);
            break;
        case 'F':
            opt.prefill = 1;
            break;
        case 'R':
            opt.barrier = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage_error("unknown option \"%s\"", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument \"%s\"", argv[optind]);
    if (opt.dsn == NULL || opt.group == NULL)
        usage_error("--dsn and --group are required");
    if (opt.resources % N_LEAF != 0 || opt.resources % N_REPLICAS != 0)
        usage_error("--resources %d: expected a multiple of 100", opt.resources);
    if (strcmp(cmd, "setup") == 0)
        return setup();
    if (opt.out == NULL)
        usage_error("run: --out is required");
    if ((opt.core == NULL) == (opt.daemon == NULL))
        usage_error("run: give either --core (in-process) or --daemon (through coregroupd)");
    if (opt.core && !opt.strategy_set)
        usage_error("run --core: --strategy is required");
    if (opt.daemon && (opt.strategy_set || opt.n_publish || opt.n_subscribe))
        usage_error("run --daemon: the daemon's repository.ini sets the strategy and the bus");
    return run();
}
