/*
 * bench_update — the write path's figures, each against a baseline measured in the same run:
 *
 *   1. The one-part update call (cg_call_begin, cg_part_update with the expected version,
 *      cg_call_commit; one thread, a core with the invalidation strategy and no bus) against
 *      pgbench running the SAME statements the library sends (schema/repo.c):
 *        BEGIN; UPDATE resource_parts ... AND version = $4 RETURNING version, body::text;
 *        SELECT seq, committed_us FROM cg_outbox_append($1, $2, $3, $4::jsonb, $5::jsonb);
 *        COMMIT;
 *      (a) pipelined as the library pipelines them: BEGIN + UPDATE in one round trip, outbox
 *          append + COMMIT in a second (pgbench's \startpipeline / \endpipeline), and
 *      (b) one round trip per statement (four).
 *      Both run `pgbench -n -c 1 -j 1 -T S -M prepared`, so pgbench, like the library, sends
 *      prepared statements with untyped parameters. The ONLY difference in what reaches the
 *      server: the library sends the outbox items as a JSON text parameter, pgbench builds
 *      them in SQL (jsonb_build_array(jsonb_build_object(...))), because pgbench variables
 *      are numbers or opaque strings and cannot be formatted into JSON (and the items_v2
 *      argument, a NULL parameter from the library, is the literal NULL::jsonb). Both sides
 *      go round their own P parts in the same order, one update of each per lap.
 *   2. N writers (default 8), each a thread with its own core (bench-w1, bench-w2, ...) in
 *      the group, on ONE part: begin, get the part ({"n":K}), update it with the version read
 *      to {"n":K+1}, commit; a stale update (CG_ESTALE: the cache had an older version; the
 *      library has evicted it) is counted and the loop goes on. The cores have no bus, so a
 *      writer's cache learns of the others' commits only from its backstop poll of the outbox:
 *      stale reads are the point, and the library must turn each into CG_ESTALE, never into a
 *      lost update. Baseline: the same N threads on raw libpq connections running the same
 *      optimistic protocol with the library's statements and round trips, minus the cache:
 *      BEGIN + SELECT in one round trip, the conditional UPDATE, then outbox append + COMMIT
 *      in one round trip; zero rows updated is its stale case (ROLLBACK, go on). Its outbox
 *      rows carry the writer cores' names and incarnations (live members), as pgbench's do.
 *
 * Correctness before speed, as every figure here could come from a run that did nothing:
 *  - pgbench's client variables persist from one transaction to the next, so its script
 *    counts transactions (n) and derives the part (h0 + n mod P) and the version it expects
 *    (1 + n div P) from the count, over its own P parts, created fresh at version 1. After
 *    each pgbench run the sum of those parts' versions must equal P plus every transaction
 *    pgbench reported; an UPDATE that matched no row leaves the sum short, and the run ends
 *    with exit status 1 instead of a figure.
 *  - The writers' part must end at version 1 + commits with n = commits; commits - n is the
 *    number of lost updates. Any lost update, and any error other than CG_ESTALE (or, for
 *    the baseline, anything but zero rows updated), ends the run with exit status 1.
 * Each pair is measured --rounds times (default 3), alternating, and medians are reported. Ratios
 * are time per operation, library over baseline ("1.20x" = the library takes 20% longer per
 * update); the update path's target is 1.25x of pgbench pipelined.
 *
 * Not measured here: the bus (bench_bus), reads (bench_core), the daemon (bench_daemon). The
 * machines are shared and small; PostgreSQL, pgbench and the writers compete for the same
 * CPUs: read the ratios, not the absolutes.
 *
 * Usage: bench_update --dsn DSN --group GROUP [--seconds S] [--writers N] [--pgbench PATH]
 *                     [--json]
 * DSN: a migrated coregroup database whose login is mapped to GROUP (`cg-migrate map-role
 * ROLE GROUP`). With --json, one JSON object with every figure goes to stdout and the
 * human-readable lines to stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <glob.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

#include "benchstat.h"
#include "coregroup.h"

#define ROUNDS_MAX  9
#define NPARTS      10000 /* parts on each side of the update-path figure */
#define MAX_WRITERS 64
#define BODY        "{\"n\":1}"

/* The library's statements, as schema/repo.c prepares them. */
static const char *const SQL_GET = "SELECT version, body::text FROM resource_parts "
                                   "WHERE group_id = $1 AND handle = $2 AND part = $3";
static const char *const SQL_UPDATE =
    "UPDATE resource_parts SET body = $5::jsonb, version = version + 1 "
    "WHERE group_id = $1 AND handle = $2 AND part = $3 AND version = $4 "
    "RETURNING version, body::text";
static const char *const SQL_OUTBOX = "SELECT seq, committed_us FROM cg_outbox_append($1, $2, $3, "
                                      "$4::jsonb, $5::jsonb)";

/* pgbench's script: the same statements, the items built in SQL. The \set lines run on the
 * client; n counts this run's transactions from the -D value on. */
static const char *const SCRIPT_HEAD = "\\set k :n % :nparts\n"
                                       "\\set h :h0 + :k\n"
                                       "\\set e 1 + :n / :nparts\n"
                                       "\\set v :e + 1\n"
                                       "\\set n :n + 1\n";
static const char *const SCRIPT_UPDATE =
    "UPDATE resource_parts SET body = :body::jsonb, version = version + 1 "
    "WHERE group_id = :grp AND handle = :h AND part = :part AND version = :e "
    "RETURNING version, body::text;\n";
static const char *const SCRIPT_OUTBOX =
    "SELECT seq, committed_us FROM cg_outbox_append(:grp, :core, :inc, "
    "jsonb_build_array(jsonb_build_object('h', :h::bigint, 'p', :part::text, 'v', :v::bigint)), "
    "NULL::jsonb);\n";

static const char *dsn, *group;
static char script_pipe[4096], script_4rt[4096]; /* pgbench's scripts; "" until written */
static long seconds = 2;
static int rounds = 3; /* each pair measured this many times, alternating; medians */
static int nwriters = 8;
static FILE *human; /* stdout, or stderr under --json */

/* ---- small things ---------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The median of the `rounds` values of per_round (left in round order: the JSON lists them). */
static double median(const double *per_round)
{
    double v[ROUNDS_MAX];
    memcpy(v, per_round, (size_t)rounds * sizeof(*v));
    return cg_bench_median(v, rounds);
}

static _Noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void fail(const char *fmt, ...)
{
    va_list ap;
    fputs("bench_update: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* A library call failed: name it with the library's detail and stop. */
static _Noreturn void die(const char *what)
{
    fail("%s: %s", what, cg_error_last()->message);
}

/* {"n": K} -> K; -1 when the body has no number n. */
static int64_t body_n(const char *text)
{
    cJSON *j = cJSON_Parse(text), *n;
    int64_t k = -1;
    if (j && cJSON_IsNumber(n = cJSON_GetObjectItemCaseSensitive(j, "n")))
        k = (int64_t)n->valuedouble;
    cJSON_Delete(j);
    return k;
}

/* ---- raw libpq -------------------------------------------------------------------------- */

/* A connection as the library's are: the same login, coregroup.group set. Exits on failure. */
static PGconn *raw_connect(void)
{
    PGconn *c = PQconnectdb(dsn);
    const char *vals[1] = {group};
    PGresult *r;
    if (PQstatus(c) != CONNECTION_OK)
        fail("connect: %s", PQerrorMessage(c));
    r = PQexecParams(c, "SELECT set_config('coregroup.group', $1, false)", 1, NULL, vals, NULL,
                     NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail("set coregroup.group: %s", PQerrorMessage(c));
    PQclear(r);
    return c;
}

/* Expect `want` of r; exits on anything else. Clears r. */
static void must(PGconn *c, PGresult *r, ExecStatusType want, const char *what)
{
    if (PQresultStatus(r) != want)
        fail("%s: %s", what, PQerrorMessage(c));
    PQclear(r);
}

/*
 * Create `count` resources in the group, each with its three parts at version 1 (the state
 * part's body `body`), in one statement, and return the first handle. Their handles must be
 * consecutive (one statement draws them from the sequence in a row unless something else
 * creates resources meanwhile), since pgbench can only compute a handle: exits otherwise.
 */
static int64_t populate(PGconn *c, int count, const char *body)
{
    char nb[16];
    const char *vals[3] = {group, nb, body};
    PGresult *r;
    int64_t lo, hi;

    snprintf(nb, sizeof(nb), "%d", count);
    r = PQexecParams(c,
                     "WITH r AS (INSERT INTO resources (group_id, kind) SELECT $1, 'service' "
                     "FROM generate_series(1, $2::int) RETURNING handle), "
                     "p AS (INSERT INTO resource_parts (group_id, handle, part, body) "
                     "SELECT $1, handle, x.p, CASE WHEN x.p = 'state' THEN $3::jsonb "
                     "ELSE '{}'::jsonb END FROM r, "
                     "unnest(ARRAY['specification','description','state']) AS x (p)) "
                     "SELECT min(handle), max(handle), count(*) FROM r",
                     3, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail("create %d resources in group %s: %s", count, group, PQerrorMessage(c));
    lo = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    hi = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    if (hi - lo + 1 != count || strtol(PQgetvalue(r, 0, 2), NULL, 10) != count)
        fail("the %d new resources got handles %" PRId64 "..%" PRId64
             ", not consecutive (something else created resources meanwhile); run again",
             count, lo, hi);
    PQclear(r);
    return lo;
}

typedef struct {
    const char *name; /* a prepared statement */
    int nparams;
    const char *const *vals;
} command;

/*
 * Send `n` prepared statements in one round trip (pipeline mode) and put one result per
 * statement into res[] (the caller clears them). Returns 0, or -1 with res[] cleared when the
 * connection or the protocol broke.
 */
static int pipelined(PGconn *c, const command *cmds, int n, PGresult **res)
{
    PGresult *r;
    int i;
    for (i = 0; i < n; i++)
        res[i] = NULL;
    if (PQenterPipelineMode(c) != 1)
        return -1;
    for (i = 0; i < n; i++)
        if (PQsendQueryPrepared(c, cmds[i].name, cmds[i].nparams, cmds[i].vals, NULL, NULL, 0) != 1)
            goto broken;
    if (PQpipelineSync(c) != 1)
        goto broken;
    for (i = 0; i < n; i++) {
        if ((res[i] = PQgetResult(c)) == NULL)
            goto broken;
        while ((r = PQgetResult(c)) != NULL) /* up to the statement's end marker */
            PQclear(r);
    }
    r = PQgetResult(c); /* the sync point */
    if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(r);
        goto broken;
    }
    PQclear(r);
    if (PQexitPipelineMode(c) == 1)
        return 0;
broken:
    for (i = 0; i < n; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }
    return -1;
}

/* The sum of the state versions of parts h0 .. h0+count-1, and how many there are. */
static int64_t version_sum(PGconn *c, int64_t h0, int count)
{
    char lo[24], hi[24];
    const char *vals[3] = {group, lo, hi};
    PGresult *r;
    int64_t sum;
    snprintf(lo, sizeof(lo), "%" PRId64, h0);
    snprintf(hi, sizeof(hi), "%" PRId64, h0 + count - 1);
    r = PQexecParams(c,
                     "SELECT coalesce(sum(version), 0), count(*) FROM resource_parts "
                     "WHERE group_id = $1 AND part = 'state' AND handle BETWEEN $2 AND $3",
                     3, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail("sum the versions: %s", PQerrorMessage(c));
    if (strtol(PQgetvalue(r, 0, 1), NULL, 10) != count)
        fail("parts %s..%s: %s of %d found", lo, hi, PQgetvalue(r, 0, 1), count);
    sum = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return sum;
}

/* ---- 1. the update path vs pgbench ------------------------------------------------------ */

/* One-part update calls round the library's parts, as pgbench goes round its own. */
static double call_update(cg_core *core, int64_t h0, int64_t *count)
{
    size_t ops = 0;
    double t0 = now(), el;
    do {
        int64_t k = *count % NPARTS, expected = 1 + *count / NPARTS, v;
        cg_call *call;
        if (cg_call_begin(&call, core) < 0)
            die("begin");
        if (cg_part_update(&v, call, h0 + k, CG_PART_STATE, expected, BODY) < 0) {
            cg_error saved = *cg_error_last();
            cg_call_abort(call);
            fail("update call: %s", saved.message);
        }
        if (cg_call_commit(call) < 0)
            die("commit");
        if (v != expected + 1)
            fail("update call: new version %" PRId64 ", expected %" PRId64, v, expected + 1);
        (*count)++;
        ops++;
    } while ((el = now() - t0) < (double)seconds);
    return (double)ops / el;
}

/* --pgbench, else pgbench on PATH, else PostgreSQL's own directories. NULL: none found. */
static char *find_pgbench(const char *given)
{
    const char *path = getenv("PATH");
    char buf[4096];
    glob_t g;
    size_t i;

    if (given)
        return access(given, X_OK) == 0 ? strdup(given) : NULL;
    while (path && *path) {
        size_t len = strcspn(path, ":");
        if (len > 0 && len + sizeof("/pgbench") < sizeof(buf)) {
            snprintf(buf, sizeof(buf), "%.*s/pgbench", (int)len, path);
            if (access(buf, X_OK) == 0)
                return strdup(buf);
        }
        path += len + (path[len] == ':');
    }
    if (glob("/usr/lib/postgresql/*/bin/pgbench", 0, NULL, &g) == 0) {
        for (i = g.gl_pathc; i-- > 0;) /* the newest release sorts last */
            if (access(g.gl_pathv[i], X_OK) == 0) {
                char *p = strdup(g.gl_pathv[i]);
                globfree(&g);
                return p;
            }
        globfree(&g);
    }
    return NULL;
}

/* Remove pgbench's scripts, at every exit (atexit). */
static void remove_scripts(void)
{
    if (script_pipe[0])
        unlink(script_pipe);
    if (script_4rt[0])
        unlink(script_4rt);
    script_pipe[0] = script_4rt[0] = '\0';
}

/* Write pgbench's script to a new temporary file; its name into path (removed at exit).
 * Exits on failure. */
static void write_script(char *path, size_t size, int pipeline)
{
    const char *dir = getenv("TMPDIR");
    FILE *f;
    int fd;
    snprintf(path, size, "%s/bench_update.XXXXXX", dir && *dir ? dir : P_tmpdir);
    if ((fd = mkstemp(path)) < 0) {
        int e = errno;
        path[0] = '\0';
        fail("create pgbench's script in %s: %s", dir && *dir ? dir : P_tmpdir, strerror(e));
    }
    if ((f = fdopen(fd, "w")) == NULL)
        fail("create pgbench's script %s: %s", path, strerror(errno));
    fputs(SCRIPT_HEAD, f);
    fputs(pipeline ? "\\startpipeline\nBEGIN;\n" : "BEGIN;\n", f);
    fputs(SCRIPT_UPDATE, f);
    fputs(pipeline ? "\\endpipeline\n\\startpipeline\n" : "", f);
    fputs(SCRIPT_OUTBOX, f);
    fputs(pipeline ? "COMMIT;\n\\endpipeline\n" : "COMMIT;\n", f);
    if (fclose(f) != 0)
        fail("write pgbench's script %s: %s", path, strerror(errno));
}

typedef struct {
    double tps;
    int64_t processed;
} pgbench_result;

/*
 * Run pgbench once, S seconds, one client, the script at `script`, counting transactions from
 * `n`; its output (stdout and stderr) is read back and parsed. Exits when pgbench fails or
 * says nothing parsable, showing what it said.
 */
static pgbench_result run_pgbench(const char *pgbench, const char *script, int64_t n, int64_t h0,
                                  const char *core, int64_t incarnation)
{
    char d_grp[128], d_core[128], d_inc[48], d_h0[48], d_n[48], d_np[32], t[24];
    const char *opts[] = {"-n", "-c", "1", "-j", "1", "-T", t, "-M", "prepared", "-f", script};
    const char *vars[] = {d_grp, d_core, d_inc, d_h0, d_n, d_np, "part=state", "body=" BODY};
    char *argv[32], *out = NULL, *line;
    size_t len = 0, cap = 0, i;
    pgbench_result res = {0, -1};
    int fds[2], st, argc = 0;
    pid_t pid;

    snprintf(d_grp, sizeof(d_grp), "grp=%s", group);
    snprintf(d_core, sizeof(d_core), "core=%s", core);
    snprintf(d_inc, sizeof(d_inc), "inc=%" PRId64, incarnation);
    snprintf(d_h0, sizeof(d_h0), "h0=%" PRId64, h0);
    snprintf(d_n, sizeof(d_n), "n=%" PRId64, n);
    snprintf(d_np, sizeof(d_np), "nparts=%d", NPARTS);
    snprintf(t, sizeof(t), "%ld", seconds);
    argv[argc++] = (char *)pgbench;
    for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
        argv[argc++] = (char *)opts[i];
    for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        argv[argc++] = "-D";
        argv[argc++] = (char *)vars[i];
    }
    argv[argc++] = (char *)dsn; /* a connection string as the database name: pgbench expands it */
    argv[argc] = NULL;
    if (pipe(fds) < 0)
        fail("pipe: %s", strerror(errno));
    fflush(NULL);
    if ((pid = fork()) < 0)
        fail("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execv(pgbench, argv);
        _exit(127);
    }
    close(fds[1]);
    for (;;) {
        ssize_t got;
        if (len + 4096 + 1 > cap) {
            char *grown = realloc(out, cap = cap ? cap * 2 : 16384);
            if (grown == NULL)
                fail("out of memory");
            out = grown;
        }
        if ((got = read(fds[0], out + len, cap - len - 1)) < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    out[len] = '\0';
    close(fds[0]);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail("%s (status %d) said:\n%s", pgbench, WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
    for (line = out; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        long long p;
        double v;
        if (sscanf(line, "number of transactions actually processed: %lld", &p) == 1)
            res.processed = p;
        else if (sscanf(line, "tps = %lf (without initial connection time)", &v) == 1)
            res.tps = v;
    }
    if (res.processed < 0 || res.tps <= 0)
        fail("no transaction count or tps in pgbench's output:\n%s", out);
    free(out);
    return res;
}

/* ---- 2. N writers on one part ----------------------------------------------------------- */

typedef struct {
    int id;
    cg_core *core;         /* library writers */
    PGconn *pg;            /* raw writers */
    const char *core_name; /* the member whose name the raw writer's outbox rows carry */
    int64_t incarnation;   /* ... and its incarnation */
    int64_t handle;        /* the one part */
    long commits, stale;   /* this round's */
    char error[1100];      /* an unexpected error; "" when none */
} writer;

static pthread_barrier_t start_line;
static double t_start, t_end; /* set before the barrier: every thread sees them after it */

static void *lib_writer(void *arg)
{
    writer *w = arg;
    char body[48];
    pthread_barrier_wait(&start_line);
    while (now() < t_end) {
        cg_call *call;
        const cg_part *p; /* lent by the call */
        int64_t k, v;
        int err;
        if (cg_call_begin(&call, w->core) < 0) {
            snprintf(w->error, sizeof(w->error), "begin: %s", cg_error_last()->message);
            break;
        }
        if ((err = cg_part_get(&p, call, w->handle, CG_PART_STATE)) < 0) {
            snprintf(w->error, sizeof(w->error), "get: %s", cg_error_last()->message);
            cg_call_abort(call);
            break;
        }
        k = body_n(cg_part_body(p));
        v = cg_part_version(p);
        if (k < 0) {
            snprintf(w->error, sizeof(w->error), "the part's body has no number n");
            cg_call_abort(call);
            break;
        }
        snprintf(body, sizeof(body), "{\"n\":%" PRId64 "}", k + 1);
        if ((err = cg_part_update(NULL, call, w->handle, CG_PART_STATE, v, body)) < 0) {
            cg_error saved = *cg_error_last();
            cg_call_abort(call); /* the library ended the transaction already; this frees it */
            if (err == CG_ESTALE) {
                w->stale++;
                continue;
            }
            snprintf(w->error, sizeof(w->error), "update (%s): %s", cg_error_name(err),
                     saved.message);
            break;
        }
        if ((err = cg_call_commit(call)) < 0) {
            snprintf(w->error, sizeof(w->error), "commit (%s): %s", cg_error_name(err),
                     cg_error_last()->message);
            break;
        }
        w->commits++;
    }
    return NULL;
}

static void *raw_writer(void *arg)
{
    writer *w = arg;
    char hb[24], vb[24], ib[24], body[48], items[96];
    const char *gv[3] = {group, hb, "state"};
    const char *uv[5] = {group, hb, "state", vb, body};
    const char *ov[5] = {group, w->core_name, ib, items, NULL};
    const command read_cmds[2] = {{"begin", 0, NULL}, {"get", 3, gv}};
    const command commit_cmds[2] = {{"outbox", 5, ov}, {"commit", 0, NULL}};
    PGconn *c = w->pg;
    PGresult *res[2], *r;

    snprintf(hb, sizeof(hb), "%" PRId64, w->handle);
    snprintf(ib, sizeof(ib), "%" PRId64, w->incarnation);
    pthread_barrier_wait(&start_line);
    while (now() < t_end) {
        int64_t k, v;
        if (pipelined(c, read_cmds, 2, res) < 0) {
            snprintf(w->error, sizeof(w->error), "BEGIN + SELECT: %s", PQerrorMessage(c));
            break;
        }
        if (PQresultStatus(res[0]) != PGRES_COMMAND_OK ||
            PQresultStatus(res[1]) != PGRES_TUPLES_OK || PQntuples(res[1]) != 1) {
            snprintf(
                w->error, sizeof(w->error), "BEGIN + SELECT: %s",
                PQresultErrorMessage(PQresultStatus(res[0]) != PGRES_COMMAND_OK ? res[0] : res[1]));
            PQclear(res[0]);
            PQclear(res[1]);
            break;
        }
        v = strtoll(PQgetvalue(res[1], 0, 0), NULL, 10);
        k = body_n(PQgetvalue(res[1], 0, 1));
        PQclear(res[0]);
        PQclear(res[1]);
        if (k < 0) {
            snprintf(w->error, sizeof(w->error), "the part's body has no number n");
            break;
        }
        snprintf(vb, sizeof(vb), "%" PRId64, v);
        snprintf(body, sizeof(body), "{\"n\":%" PRId64 "}", k + 1);
        r = PQexecPrepared(c, "update", 5, uv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(w->error, sizeof(w->error), "UPDATE: %s", PQresultErrorMessage(r));
            PQclear(r);
            break;
        }
        if (PQntuples(r) == 0) { /* another writer was first: stale */
            PQclear(r);
            r = PQexec(c, "ROLLBACK");
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                snprintf(w->error, sizeof(w->error), "ROLLBACK: %s", PQresultErrorMessage(r));
                PQclear(r);
                break;
            }
            PQclear(r);
            w->stale++;
            continue;
        }
        snprintf(items, sizeof(items), "[{\"h\":%" PRId64 ",\"p\":\"state\",\"v\":%s}]", w->handle,
                 PQgetvalue(r, 0, 0));
        PQclear(r);
        if (pipelined(c, commit_cmds, 2, res) < 0) {
            snprintf(w->error, sizeof(w->error), "outbox + COMMIT: %s", PQerrorMessage(c));
            break;
        }
        if (PQresultStatus(res[0]) != PGRES_TUPLES_OK ||
            PQresultStatus(res[1]) != PGRES_COMMAND_OK ||
            strcmp(PQcmdStatus(res[1]), "COMMIT") != 0) {
            snprintf(w->error, sizeof(w->error), "outbox + COMMIT: %s",
                     PQresultStatus(res[0]) != PGRES_TUPLES_OK ? PQresultErrorMessage(res[0])
                                                               : "COMMIT rolled back");
            PQclear(res[0]);
            PQclear(res[1]);
            break;
        }
        PQclear(res[0]);
        PQclear(res[1]);
        w->commits++;
    }
    return NULL;
}

/* Run every writer for S seconds from one start line; their rates into *commits_s, *stale_s.
 * Adds the round's commits to *total. Exits when a writer met an unexpected error. */
static void run_writers(writer *ws, void *(*fn)(void *), int64_t *total, double *commits_s,
                        double *stale_s, const char *who)
{
    pthread_t th[MAX_WRITERS];
    long commits = 0, stale = 0;
    double el;
    int i;

    pthread_barrier_init(&start_line, NULL, (unsigned)nwriters + 1);
    for (i = 0; i < nwriters; i++) {
        ws[i].commits = ws[i].stale = 0;
        ws[i].error[0] = '\0';
        if (pthread_create(&th[i], NULL, fn, &ws[i]) != 0)
            fail("start writer thread %d", i + 1);
    }
    t_start = now();
    t_end = t_start + (double)seconds;
    pthread_barrier_wait(&start_line);
    for (i = 0; i < nwriters; i++)
        pthread_join(th[i], NULL);
    el = now() - t_start;
    pthread_barrier_destroy(&start_line);
    for (i = 0; i < nwriters; i++) {
        if (ws[i].error[0])
            fail("%s writer %d: %s", who, ws[i].id, ws[i].error);
        commits += ws[i].commits;
        stale += ws[i].stale;
    }
    *total += commits;
    *commits_s = (double)commits / el;
    *stale_s = (double)stale / el;
}

/* The part as the repository holds it: its version and its body's n. */
static void read_part(PGconn *c, int64_t handle, int64_t *version, int64_t *n)
{
    char hb[24];
    const char *vals[3] = {group, hb, "state"};
    PGresult *r;
    snprintf(hb, sizeof(hb), "%" PRId64, handle);
    r = PQexecParams(c, SQL_GET, 3, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail("read part %s: %s", hb, PQerrorMessage(c));
    *version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    *n = body_n(PQgetvalue(r, 0, 1));
    PQclear(r);
}

/* Lost updates of a part that started at version 1, n 0 and took `commits` commits; exits
 * when its version says the count itself is wrong. */
static int64_t lost_updates(PGconn *c, int64_t handle, int64_t commits, const char *who)
{
    int64_t version, n;
    read_part(c, handle, &version, &n);
    if (version != 1 + commits)
        fail("%s: the part is at version %" PRId64 " after %" PRId64 " commits; expected %" PRId64,
             who, version, commits, 1 + commits);
    return commits - n;
}

/* ---- main -------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: bench_update --dsn DSN --group GROUP [--seconds S] [--writers N]\n"
            "                    [--rounds R] [--pgbench PATH] [--json] [--help]\n"
            "Measures the one-part update call against pgbench sending the same statements\n"
            "(pipelined the same way, and one round trip each), and N writers (default 8, at\n"
            "most %d) on one part against raw libpq writers running the same optimistic\n"
            "protocol; checks that no update was lost. DSN: a migrated coregroup database whose\n"
            "login is mapped to GROUP. S: whole seconds per measurement (default 2); each is\n"
            "taken R times (1 to %d, default 3), alternating, and medians are printed. PATH:\n"
            "pgbench (default: on PATH, else PostgreSQL's bin directories). --json: one JSON\n"
            "object on stdout, the readable lines on stderr. Exit status 1 when an update was\n"
            "lost or a baseline did not do its work, 2 on bad usage or no pgbench.\n",
            MAX_WRITERS, ROUNDS_MAX);
}

/* Bad usage: one line naming the option, exit status 2. */
static _Noreturn void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("bench_update: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see --help)\n", stderr);
    exit(2);
}

/* The value of a numeric option, lo..hi; bad usage otherwise. */
static long whole_number(const char *opt, const char *arg, long lo, long hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi)
        usage_error("%s %s: must be a whole number from %ld to %ld", opt, arg, lo, hi);
    return v;
}

/* One figure against its baseline; the ratio is time per operation, ours over the baseline's.
 * `note` ("" for none) follows the ratio. */
static void ratio_line(const char *what, double ours, const char *base_name, double base,
                       const char *note)
{
    fprintf(human, "%-34s %10.0f ops/s   %-30s %10.0f ops/s   ratio %.2fx%s\n", what, ours,
            base_name, base, base / ours, note);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"dsn", required_argument, NULL, 'd'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"writers", required_argument, NULL, 'w'},
                                         {"pgbench", required_argument, NULL, 'p'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"rounds", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *pgbench_opt = NULL;
    char *pgbench;
    int json = 0, c, r, i;
    cg_config *cfg;
    cg_core *core;
    PGconn *raw;
    int64_t lib_h0, pgb_h0, lib_count = 0, pgb_count = 0, lib_part, raw_part;
    int64_t lib_commits = 0, raw_commits = 0, lost, raw_lost;
    double lib[ROUNDS_MAX], pipe_tps[ROUNDS_MAX], rt4_tps[ROUNDS_MAX];
    double w_lib[ROUNDS_MAX], w_stale[ROUNDS_MAX], w_raw[ROUNDS_MAX], w_raw_stale[ROUNDS_MAX];
    double m_lib, m_pipe, m_rt4, m_w, m_ws, m_raw, m_raw_stale;
    writer *ws;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":d:g:s:w:p:r:jh", opts, NULL)) != -1) {
        if (c == 'd')
            dsn = optarg;
        else if (c == 'g')
            group = optarg;
        else if (c == 's')
            seconds = whole_number("--seconds", optarg, 1, 3600);
        else if (c == 'w')
            nwriters = (int)whole_number("--writers", optarg, 1, MAX_WRITERS);
        else if (c == 'p')
            pgbench_opt = optarg;
        else if (c == 'r')
            rounds = (int)whole_number("--rounds", optarg, 1, ROUNDS_MAX);
        else if (c == 'j')
            json = 1;
        else if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c == ':')
            usage_error("option %s needs a value", argv[optind - 1]);
        else if (optopt)
            usage_error("unknown option -%c", optopt);
        else
            usage_error("unknown option %s", argv[optind - 1]);
    }
    if (optind < argc)
        usage_error("unexpected argument %s", argv[optind]);
    if (dsn == NULL)
        usage_error("%s is required", "--dsn");
    if (group == NULL)
        usage_error("%s is required", "--group");
    if ((pgbench = find_pgbench(pgbench_opt)) == NULL) {
        if (pgbench_opt)
            usage_error("--pgbench %s: not an executable file", pgbench_opt);
        fprintf(stderr, "bench_update: no pgbench found on PATH or in PostgreSQL's bin "
                        "directories: install it (postgresql-client) or name it with --pgbench\n");
        return 2;
    }
    human = json ? stderr : stdout;
    setvbuf(human, NULL, _IOLBF, 0); /* each line as it is measured, even into a file */

    /* the update path: the library's core first, since pgbench's outbox rows need a member */
    cg_config_new(&cfg);
    cg_config_set_string(&cfg->dsn, dsn);
    cg_config_set_string(&cfg->core_name, "bench-update");
    cg_config_set_string(&cfg->group_id, group);
    cfg->strategy = CG_CACHE_INVALIDATE;
    if (cg_core_open_config(&core, cfg) < 0)
        die("open core bench-update");
    raw = raw_connect();
    atexit(remove_scripts);
    lib_h0 = populate(raw, NPARTS, BODY);
    pgb_h0 = populate(raw, NPARTS, BODY);
    write_script(script_pipe, sizeof(script_pipe), 1);
    write_script(script_4rt, sizeof(script_4rt), 0);
    fprintf(human,
            "bench_update: group %s, %ld s per measurement, %d alternating rounds (medians), "
            "pgbench %s\n",
            group, seconds, rounds, pgbench);
    for (r = 0; r < rounds; r++) {
        pgbench_result p;
        int v;
        lib[r] = call_update(core, lib_h0, &lib_count);
        for (v = 0; v < 2; v++) {
            p = run_pgbench(pgbench, v == 0 ? script_pipe : script_4rt, pgb_count, pgb_h0,
                            cg_core_name(core), cg_core_incarnation(core));
            pgb_count += p.processed;
            if (version_sum(raw, pgb_h0, NPARTS) != NPARTS + pgb_count)
                fail("pgbench (%s) reported %" PRId64 " transactions, but its parts' versions "
                     "sum to %" PRId64 ", not %" PRId64 ": some UPDATE matched no row (or a "
                     "transaction was not counted); its tps would measure nothing",
                     v == 0 ? "pipelined" : "4 round trips", p.processed,
                     version_sum(raw, pgb_h0, NPARTS), (int64_t)NPARTS + pgb_count);
            (v == 0 ? pipe_tps : rt4_tps)[r] = p.tps;
        }
    }
    remove_scripts();
    if (version_sum(raw, lib_h0, NPARTS) != NPARTS + lib_count)
        fail("the library's parts' versions do not sum to %" PRId64 " after %" PRId64 " updates",
             (int64_t)NPARTS + lib_count, lib_count);
    m_lib = median(lib);
    m_pipe = median(pipe_tps);
    m_rt4 = median(rt4_tps);
    ratio_line("one-part update call", m_lib, "pgbench, same pipelining", m_pipe,
               " (target <= 1.25x)");
    ratio_line("one-part update call", m_lib, "pgbench, 4 round trips", m_rt4, "");
    cg_core_close(core);

    /* N writers on one part: theirs, and the raw baseline's */
    lib_part = populate(raw, 1, "{\"n\":0}");
    raw_part = populate(raw, 1, "{\"n\":0}");
    if ((ws = calloc((size_t)nwriters, sizeof(*ws))) == NULL)
        fail("out of memory");
    for (i = 0; i < nwriters; i++) {
        char name[32];
        writer *w = &ws[i];
        snprintf(name, sizeof(name), "bench-w%d", i + 1);
        cg_config_set_string(&cfg->core_name, name);
        if (cg_core_open_config(&w->core, cfg) < 0)
            die(name);
        w->id = i + 1;
        w->core_name = cg_core_name(w->core);
        w->incarnation = cg_core_incarnation(w->core);
        w->pg = raw_connect();
        must(w->pg, PQprepare(w->pg, "begin", "BEGIN", 0, NULL), PGRES_COMMAND_OK, "prepare");
        must(w->pg, PQprepare(w->pg, "commit", "COMMIT", 0, NULL), PGRES_COMMAND_OK, "prepare");
        must(w->pg, PQprepare(w->pg, "get", SQL_GET, 3, NULL), PGRES_COMMAND_OK, "prepare");
        must(w->pg, PQprepare(w->pg, "update", SQL_UPDATE, 5, NULL), PGRES_COMMAND_OK, "prepare");
        must(w->pg, PQprepare(w->pg, "outbox", SQL_OUTBOX, 5, NULL), PGRES_COMMAND_OK, "prepare");
    }
    for (r = 0; r < rounds; r++) {
        for (i = 0; i < nwriters; i++)
            ws[i].handle = lib_part;
        run_writers(ws, lib_writer, &lib_commits, &w_lib[r], &w_stale[r], "library");
        for (i = 0; i < nwriters; i++)
            ws[i].handle = raw_part;
        run_writers(ws, raw_writer, &raw_commits, &w_raw[r], &w_raw_stale[r], "raw libpq");
    }
    lost = lost_updates(raw, lib_part, lib_commits, "library writers");
    raw_lost = lost_updates(raw, raw_part, raw_commits, "raw libpq writers");
    m_w = median(w_lib);
    m_ws = median(w_stale);
    m_raw = median(w_raw);
    m_raw_stale = median(w_raw_stale);
    {
        char what[64];
        snprintf(what, sizeof(what), "%d writers, one part, commits", nwriters);
        ratio_line(what, m_w, "raw libpq optimistic, commits", m_raw, "");
    }
    fprintf(human,
            "%d writers, one part: library %.0f stale/s, %" PRId64 " lost of %" PRId64
            " commits; raw libpq %.0f stale/s, %" PRId64 " lost of %" PRId64 "\n",
            nwriters, m_ws, lost, lib_commits, m_raw_stale, raw_lost, raw_commits);

    if (json) {
        cJSON *o = cJSON_CreateObject(), *u = cJSON_AddObjectToObject(o, "update_path"),
              *w = cJSON_AddObjectToObject(o, "one_part_writers");
        char *text;
        cJSON_AddNumberToObject(o, "seconds", (double)seconds);
        cJSON_AddNumberToObject(o, "rounds", rounds);
        cJSON_AddNumberToObject(u, "library_ops_s", m_lib);
        cJSON_AddNumberToObject(u, "pgbench_pipelined_tps", m_pipe);
        cJSON_AddNumberToObject(u, "pgbench_4rt_tps", m_rt4);
        cJSON_AddNumberToObject(u, "ratio_pipelined", m_pipe / m_lib);
        cJSON_AddNumberToObject(u, "ratio_4rt", m_rt4 / m_lib);
        cJSON_AddNumberToObject(u, "parts", NPARTS);
        cJSON_AddItemToObject(u, "library_ops_s_rounds", cJSON_CreateDoubleArray(lib, rounds));
        cJSON_AddItemToObject(u, "pgbench_pipelined_tps_rounds",
                              cJSON_CreateDoubleArray(pipe_tps, rounds));
        cJSON_AddItemToObject(u, "pgbench_4rt_tps_rounds",
                              cJSON_CreateDoubleArray(rt4_tps, rounds));
        cJSON_AddStringToObject(u, "pgbench", pgbench);
        cJSON_AddNumberToObject(w, "writers", nwriters);
        cJSON_AddNumberToObject(w, "seconds", (double)seconds);
        cJSON_AddNumberToObject(w, "commits_s", m_w);
        cJSON_AddNumberToObject(w, "stale_s", m_ws);
        cJSON_AddNumberToObject(w, "commits", (double)lib_commits);
        cJSON_AddNumberToObject(w, "lost_updates", (double)lost);
        cJSON_AddStringToObject(w, "baseline",
                                "raw libpq optimistic protocol, the library's statements: "
                                "BEGIN+SELECT, conditional UPDATE, outbox append+COMMIT");
        cJSON_AddNumberToObject(w, "baseline_commits_s", m_raw);
        cJSON_AddNumberToObject(w, "baseline_stale_s", m_raw_stale);
        cJSON_AddNumberToObject(w, "baseline_lost_updates", (double)raw_lost);
        cJSON_AddNumberToObject(w, "ratio", m_raw / m_w);
        cJSON_AddItemToObject(w, "commits_s_rounds", cJSON_CreateDoubleArray(w_lib, rounds));
        cJSON_AddItemToObject(w, "baseline_commits_s_rounds",
                              cJSON_CreateDoubleArray(w_raw, rounds));
        if ((text = cJSON_PrintUnformatted(o)) == NULL)
            fail("out of memory");
        puts(text);
        cJSON_free(text);
        cJSON_Delete(o);
    }

    for (i = 0; i < nwriters; i++) {
        cg_core_close(ws[i].core);
        PQfinish(ws[i].pg);
    }
    free(ws);
    PQfinish(raw);
    cg_config_free(cfg);
    free(pgbench);
    if (lost != 0 || raw_lost != 0) {
        fprintf(stderr, "bench_update: lost updates: library %" PRId64 ", raw libpq %" PRId64 "\n",
                lost, raw_lost);
        return 1;
    }
    return 0;
}
