/*
 * bench_core — the core library's figures, each against a baseline measured in the same run:
 *
 *   1. cached get: cg_part_get (the part lent by the call) inside one call, hits only, uniformly
 * random keys vs a raw open-addressing hash lookup of the same keys (reading the value's version);
 *   2. uncached get with the "none" cache strategy, one call per get, vs a raw libpq prepared
 *      SELECT by primary key: as cg_part_read() (BEGIN, SELECT, COMMIT in one round trip)
 *      and as begin + cg_part_get + commit (BEGIN + SELECT in one round trip, then a deferred
 *      read-only COMMIT);
 *   3. one-part update call: begin, conditional update, commit (outbox row + COMMIT) vs the
 *      same statements sent with raw libpq, both pipelined the same way (2 round trips), and
 *      vs the naive raw sequence of 4 round trips.
 *
 * Usage: bench_core --dsn DSN [--seconds S] [--keys N] [--rounds R]  (a migrated database;
 * the core logs in as that DSN's user, a login mapped to the group "bench" by `cg-migrate
 * map-role`). Prints one line per figure with ops/s and the ratio.
 * Single thread, loopback; machines are shared and noisy, so read ratios, not absolutes.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "coregroup.h"
#include "core_internal.h"
#include "benchstat.h"
#include "coregroup/sys/part.h"

static double seconds = 1.0;
static long nkeys = 1000000;
static int rounds = 3; /* each pair measured this many times, alternating; medians reported */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_core: %s: %s\n", what, cg_error_last()->message);
    exit(1);
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* ---- 1. cached get vs raw hash -------------------------------------------------------- */

typedef struct {
    int64_t version;
    char body[16];
} raw_value;

typedef struct {
    int64_t key;
    raw_value *value;
} raw_slot;

static double raw_hash(const int64_t *seq, size_t nseq, volatile int64_t *sink)
{
    size_t cap = 1, i, ops = 0;
    raw_slot *t;
    raw_value *vals = malloc((size_t)nkeys * sizeof(*vals));
    double t0, el;
    int64_t sum = 0;

    while (cap < (size_t)nkeys * 2)
        cap <<= 1;
    t = calloc(cap, sizeof(*t));
    for (i = 0; i < (size_t)nkeys; i++) {
        size_t h = mix((uint64_t)i + 1) & (cap - 1);
        while (t[h].value)
            h = (h + 1) & (cap - 1);
        vals[i].version = (int64_t)i;
        t[h].key = (int64_t)i + 1;
        t[h].value = &vals[i];
    }
    t0 = now();
    do {
        for (i = 0; i < 4096; i++, ops++) {
            int64_t k = seq[ops % nseq];
            size_t h = mix((uint64_t)k) & (cap - 1);
            while (t[h].key != k)
                h = (h + 1) & (cap - 1);
            sum += t[h].value->version;
        }
    } while ((el = now() - t0) < seconds);
    *sink = sum;
    free(t);
    free(vals);
    return (double)ops / el;
}

/* Cache parts for handles 1..nkeys directly (the benchmark measures hits, not fills). */
static void fill_cache(cg_core *core)
{
    long i;
    for (i = 0; i < nkeys; i++) {
        cg_part *p = cg_part__new((int64_t)i + 1, CG_PART_STATE, 1, "{\"n\":1}", 7);
        cg_cache_put(core->cache, p);
        cg_part_free(p);
    }
}

static double cached_get(cg_core *core, const int64_t *seq, size_t nseq, volatile int64_t *sink)
{
    cg_call *call;
    size_t i, ops = 0;
    double t0, el;
    int64_t sum = 0;

    if (cg_call_begin(&call, core) < 0)
        die("begin");
    t0 = now();
    do {
        for (i = 0; i < 4096; i++, ops++) {
            const cg_part *p; /* lent by the call */
            if (cg_part_get(&p, call, seq[ops % nseq], CG_PART_STATE) < 0)
                die("cached get");
            sum += cg_part_version(p);
        }
    } while ((el = now() - t0) < seconds);
    cg_call_commit(call);
    *sink = sum;
    return (double)ops / el;
}

/* ---- repository setup ------------------------------------------------------------------ */

#define DB_KEYS 10000

static PGconn *raw_connect(const char *dsn, const char *group)
{
    PGconn *c = PQconnectdb(dsn);
    const char *vals[1] = {group};
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_core: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(PQexecParams(c, "SELECT set_config('coregroup.group', $1, false)", 1, NULL, vals, NULL,
                         NULL, 0));
    return c;
}

static void must(PGconn *c, PGresult *r, ExecStatusType want, const char *what)
{
    if (PQresultStatus(r) != want) {
        fprintf(stderr, "bench_core: %s: %s", what, PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
}

/* DB_KEYS resources in the group, created in one statement, their handles into out[]. */
static void populate(PGconn *c, const char *group, int64_t *out)
{
    const char *vals[1] = {group};
    PGresult *r;
    int i;
    must(c,
         PQexecParams(c,
                      "WITH r AS (INSERT INTO resources (group_id, kind) SELECT $1, 'service' "
                      "FROM generate_series(1, 10000) RETURNING handle) "
                      "INSERT INTO resource_parts (group_id, handle, part, body) "
                      "SELECT $1, handle, p, '{\"n\":0,\"pad\":\"xxxxxxxxxxxxxxxx\"}' FROM r, "
                      "unnest(ARRAY['specification','description','state']) p",
                      1, NULL, vals, NULL, NULL, 0),
         PGRES_COMMAND_OK, "populate");
    r = PQexecParams(
        c, "SELECT handle FROM resources WHERE group_id = $1 AND handle <> 0 ORDER BY handle", 1,
        NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != DB_KEYS) {
        fprintf(stderr, "bench_core: populate: %s", PQerrorMessage(c));
        exit(1);
    }
    for (i = 0; i < DB_KEYS; i++)
        out[i] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    PQclear(r);
}

/* ---- 2. uncached get vs raw SELECT ----------------------------------------------------- */

static double raw_select(PGconn *c, const char *group, const int64_t *handles)
{
    char hb[24];
    const char *vals[3] = {group, hb, "state"};
    size_t ops = 0;
    double t0, el;
    static int prepared;
    if (!prepared) { /* once: the rounds call this again */
        must(c,
             PQprepare(c, "raw_get",
                       "SELECT version, body::text FROM resource_parts WHERE group_id = $1 AND "
                       "handle = $2 AND part = $3",
                       3, NULL),
             PGRES_COMMAND_OK, "prepare");
        prepared = 1;
    }
    t0 = now();
    do {
        PGresult *r;
        snprintf(hb, sizeof(hb), "%" PRId64, handles[mix(ops) % DB_KEYS]);
        r = PQexecPrepared(c, "raw_get", 3, vals, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            fprintf(stderr, "bench_core: raw select: %s", PQerrorMessage(c));
            exit(1);
        }
        PQclear(r);
        ops++;
    } while ((el = now() - t0) < seconds);
    return (double)ops / el;
}

/* one_read: cg_part_read (the whole call in one round trip); else begin, get, commit. */
static double uncached_get(cg_core *core, const int64_t *handles, int one_read)
{
    size_t ops = 0;
    double t0 = now(), el;
    do {
        cg_call *call;
        int64_t h = handles[mix(ops) % DB_KEYS];
        if (one_read) {
            cg_part *p;
            if (cg_part_read(&p, core, h, CG_PART_STATE) < 0)
                die("uncached read");
            cg_part_free(p);
        } else {
            const cg_part *p;
            if (cg_call_begin(&call, core) < 0 || cg_part_get(&p, call, h, CG_PART_STATE) < 0)
                die("uncached get");
            if (cg_call_commit(call) < 0)
                die("commit");
        }
        ops++;
    } while ((el = now() - t0) < seconds);
    return (double)ops / el;
}

/* ---- 3. one-part update call vs raw statements ------------------------------------------ */

static const char *UPD = "UPDATE resource_parts SET body = $5::jsonb, version = version + 1 "
                         "WHERE group_id = $1 AND handle = $2 AND part = $3 AND version = $4 "
                         "RETURNING version";
static const char *OUTBOX = "SELECT seq, committed_us FROM cg_outbox_append($1, $2, $3, $4::jsonb)";

/* Raw libpq: the same statements, pipelined as the library does (BEGIN + UPDATE, then
 * outbox + COMMIT), or one round trip each when `naive`. */
static double raw_update(PGconn *c, const char *group, const char *core, int64_t inc,
                         const int64_t *handles, int64_t *versions, int naive)
{
    char hb[24], vb[24], ib[24], items[96];
    const char *uv[5] = {group, hb, "state", vb, "{\"n\":1}"};
    const char *ov[4] = {group, core, ib, items};
    size_t ops = 0;
    double t0, el;
    static int prepared;
    if (!prepared) { /* the library prepares its statements: so does the baseline */
        must(c, PQprepare(c, "raw_upd", UPD, 5, NULL), PGRES_COMMAND_OK, "prepare");
        must(c, PQprepare(c, "raw_outbox", OUTBOX, 4, NULL), PGRES_COMMAND_OK, "prepare");
        must(c, PQprepare(c, "raw_begin", "BEGIN", 0, NULL), PGRES_COMMAND_OK, "prepare");
        must(c, PQprepare(c, "raw_commit", "COMMIT", 0, NULL), PGRES_COMMAND_OK, "prepare");
        prepared = 1;
    }
    snprintf(ib, sizeof(ib), "%" PRId64, inc);
    t0 = now();
    do {
        size_t k = mix(ops + 7) % DB_KEYS;
        PGresult *r;
        snprintf(hb, sizeof(hb), "%" PRId64, handles[k]);
        snprintf(vb, sizeof(vb), "%" PRId64, versions[k]);
        snprintf(items, sizeof(items), "[{\"h\":%" PRId64 ",\"p\":\"state\",\"v\":%" PRId64 "}]",
                 handles[k], versions[k] + 1);
        if (naive) {
            must(c, PQexecPrepared(c, "raw_begin", 0, NULL, NULL, NULL, 0), PGRES_COMMAND_OK,
                 "BEGIN");
            r = PQexecPrepared(c, "raw_upd", 5, uv, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
                fprintf(stderr, "bench_core: raw update: %s", PQerrorMessage(c));
                exit(1);
            }
            PQclear(r);
            must(c, PQexecPrepared(c, "raw_outbox", 4, ov, NULL, NULL, 0), PGRES_TUPLES_OK,
                 "outbox");
            must(c, PQexecPrepared(c, "raw_commit", 0, NULL, NULL, NULL, 0), PGRES_COMMAND_OK,
                 "COMMIT");
        } else {
            int i;
            PQenterPipelineMode(c);
            PQsendQueryPrepared(c, "raw_begin", 0, NULL, NULL, NULL, 0);
            PQsendQueryPrepared(c, "raw_upd", 5, uv, NULL, NULL, 0);
            PQpipelineSync(c);
            for (i = 0; i < 2; i++) {
                r = PQgetResult(c);
                if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
                    fprintf(stderr, "bench_core: raw pipelined update: %s", PQerrorMessage(c));
                    exit(1);
                }
                PQclear(r);
                PQclear(PQgetResult(c)); /* end of command */
            }
            PQclear(PQgetResult(c)); /* sync */
            PQsendQueryPrepared(c, "raw_outbox", 4, ov, NULL, NULL, 0);
            PQsendQueryPrepared(c, "raw_commit", 0, NULL, NULL, NULL, 0);
            PQpipelineSync(c);
            for (i = 0; i < 2; i++) {
                r = PQgetResult(c);
                if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
                    fprintf(stderr, "bench_core: raw pipelined commit: %s", PQerrorMessage(c));
                    exit(1);
                }
                PQclear(r);
                PQclear(PQgetResult(c));
            }
            PQclear(PQgetResult(c));
            PQexitPipelineMode(c);
        }
        versions[k]++;
        ops++;
    } while ((el = now() - t0) < seconds);
    return (double)ops / el;
}

static double call_update(cg_core *core, const int64_t *handles, int64_t *versions)
{
    size_t ops = 0;
    double t0 = now(), el;
    do {
        size_t k = mix(ops + 7) % DB_KEYS;
        cg_call *call;
        int64_t v;
        if (cg_call_begin(&call, core) < 0 ||
            cg_part_update(&v, call, handles[k], CG_PART_STATE, versions[k], "{\"n\":1}") < 0 ||
            cg_call_commit(call) < 0)
            die("update call");
        versions[k] = v;
        ops++;
    } while ((el = now() - t0) < seconds);
    return (double)ops / el;
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: bench_core --dsn DSN [--seconds S] [--keys N] [--rounds R]\n"
               "Measures cached get, uncached get and a one-part update call against raw\n"
               "baselines in the same run, and prints ops/s and ratios. DSN: a migrated\n"
               "coregroup database. N: keys for the cached-get test (default 1000000).\n");
}

static void ratio_line(const char *what, double ours, const char *base_name, double base)
{
    printf("%-34s %12.0f ops/s   %-26s %12.0f ops/s   ratio %.2fx slower\n", what, ours, base_name,
           base, base / ours);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dsn", required_argument, NULL, 'd'},  {"seconds", required_argument, NULL, 's'},
        {"keys", required_argument, NULL, 'k'}, {"rounds", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0}};
    const char *dsn = NULL;
    cg_config *cfg;
    cg_core *cached, *uncached, *writer;
    int64_t *seq, handles[DB_KEYS], versions[DB_KEYS];
    volatile int64_t sink;
    size_t nseq = 1 << 22, i;
    PGconn *raw;
    double ours[16], ours2[16], base[16], base2[16];
    int c, r;

    while ((c = getopt_long(argc, argv, "d:s:k:r:h", opts, NULL)) != -1) {
        if (c == 'd')
            dsn = optarg;
        else if (c == 's')
            seconds = atof(optarg);
        else if (c == 'k')
            nkeys = atol(optarg);
        else if (c == 'r')
            rounds = atoi(optarg);
        else {
            usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (dsn == NULL || seconds <= 0 || nkeys < 1 || rounds < 1 || rounds > 16) {
        usage(stderr);
        return 2;
    }

    /* 1. cached get */
    seq = malloc(nseq * sizeof(*seq));
    for (i = 0; i < nseq; i++)
        seq[i] = (int64_t)(mix(i * 2654435761u + 1) % (uint64_t)nkeys) + 1;
    cg_config_new(&cfg);
    cg_config_set_string(&cfg->dsn, dsn);
    cg_config_set_string(&cfg->core_name, "bench-cached");
    cg_config_set_string(&cfg->group_id, "bench");
    cfg->max_entries = nkeys + nkeys / 4; /* shards fill unevenly: leave room so every key stays */
    if (cg_core_open_config(&cached, cfg) < 0)
        die("open core");
    printf("bench_core: %.1f s per measurement, %d alternating rounds (medians), one thread\n",
           seconds, rounds);
    fill_cache(cached);
    for (r = 0; r < rounds; r++) {
        ours[r] = cached_get(cached, seq, nseq, &sink);
        base[r] = raw_hash(seq, nseq, &sink);
    }
    {
        char what[64];
        snprintf(what, sizeof(what), "cached get, %ld keys", nkeys);
        ratio_line(what, cg_bench_median(ours, rounds), "raw hash lookup",
                   cg_bench_median(base, rounds));
    }
    cg_core_close(cached);

    /* 2. uncached get */
    raw = raw_connect(dsn, "bench");
    populate(raw, "bench", handles);
    cfg->strategy = CG_CACHE_NONE;
    cg_config_set_string(&cfg->core_name, "bench-uncached");
    if (cg_core_open_config(&uncached, cfg) < 0)
        die("open core");
    for (r = 0; r < rounds; r++) {
        base[r] = raw_select(raw, "bench", handles);
        ours[r] = uncached_get(uncached, handles, 1);
        ours2[r] = uncached_get(uncached, handles, 0);
    }
    ratio_line("uncached cg_part_read", cg_bench_median(ours, rounds), "raw libpq SELECT by key",
               cg_bench_median(base, rounds));
    ratio_line("uncached begin+get+commit", cg_bench_median(ours2, rounds),
               "raw libpq SELECT by key", cg_bench_median(base, rounds));
    cg_core_close(uncached);

    /* 3. update call */
    for (i = 0; i < DB_KEYS; i++)
        versions[i] = 1;
    cfg->strategy = CG_CACHE_INVALIDATE;
    cg_config_set_string(&cfg->core_name, "bench-writer");
    if (cg_core_open_config(&writer, cfg) < 0)
        die("open core");
    for (r = 0; r < rounds; r++) {
        ours[r] = call_update(writer, handles, versions);
        base[r] = raw_update(raw, "bench", "bench-writer", cg_core_incarnation(writer), handles,
                             versions, 0);
        base2[r] = raw_update(raw, "bench", "bench-writer", cg_core_incarnation(writer), handles,
                              versions, 1);
    }
    ratio_line("one-part update call", cg_bench_median(ours, rounds), "raw libpq, same pipelining",
               cg_bench_median(base, rounds));
    ratio_line("one-part update call", cg_bench_median(ours, rounds), "raw libpq, 4 round trips",
               cg_bench_median(base2, rounds));
    cg_core_close(writer);
    cg_config_free(cfg);
    PQfinish(raw);
    free(seq);
    return 0;
}
