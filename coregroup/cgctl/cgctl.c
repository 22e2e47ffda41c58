/*
 * cgctl — the client of coregroupd: every request of the request protocol
 * (coregroup/REQUESTS.md) from the command line, a fault-monitor probe, metrics, and
 * idempotent start and stop of a daemon.
 *
 * Each request goes out on a fresh DEALER socket (ZMQ_LINGER 0) that waits at most --timeout
 * milliseconds for the reply, so no reply can ever be taken for another request's, and a dead
 * or hung daemon costs exactly the timeout. The endpoint is [daemon] listen of the
 * repository.ini given with -c (a wildcard address, tcp://0.0.0.0:7001 or the host "*", is
 * reached on 127.0.0.1), or --endpoint. When the daemon's endpoint is a CURVE server (the INI
 * has [daemon] curve_public_key, or --curve-server-key is given), the socket is a CURVE client
 * with the key pair of --curve-client-key; a key the daemon does not admit gets no answer.
 *
 * Output: human-readable by default; with --json the daemon's reply object, exactly as it came,
 * one line on stdout, for scripts (jq). Errors go to stderr as one line,
 * "cgctl: CODE: MESSAGE". `stats --prometheus` prints the Prometheus text exposition format
 * (HELP and TYPE lines, labels core and group).
 *
 * Exit status, which scripts rely on:
 *   0  success
 *   1  the request failed: the daemon answered with an error (code and message printed), or
 *      start/stop could not complete
 *   2  bad usage (arguments, unreadable or bad repository.ini, bad JSON argument)
 *   3  unreachable: no answer within --timeout
 * except `health`, a cluster fault-monitor probe (Sun Cluster API guide: probe with a
 * timeout): 0 healthy, 1 degraded (the daemon answered, but not healthy), 2 unreachable.
 *
 * start and stop are idempotent, as the Sun Cluster API guide asks of a data service's start
 * and stop methods: starting a running daemon prints "already running" and stopping a stopped
 * one prints "not running", both with status 0. `start` runs coregroupd (found next to cgctl,
 * i.e. in the directory of /proc/self/exe, else on PATH) in a new session with its output
 * appended to a log file, and returns once the daemon answers a health request.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zmq.h>

#include "coregroup.h"
#include "curve.h"

enum { EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

#define DEFAULT_TIMEOUT_MS 2000
#define DEFAULT_WAIT_MS    30000
#define MAX_FILE           (2 << 20) /* a multi file: the daemon takes 1 MiB */

static struct {
    const char *config_path, *endpoint_opt, *log_path, *curve_client, *curve_server;
    int timeout_ms, wait_ms, json, prometheus;
    const char *kind, *service_id, *bodies[3];
    int has_register_opts;
} opt = {.timeout_ms = DEFAULT_TIMEOUT_MS, .wait_ms = DEFAULT_WAIT_MS};

static cg_config *cfg;        /* from -c */
static char endpoint[1024];   /* where requests go */
static void *zctx;            /* one ZeroMQ context for the whole run */
static unsigned long next_id; /* request ids: "cgctl-<pid>-<n>" */

/* CURVE, when the daemon's request endpoint uses it: its public key and this client's pair */
static struct {
    int on;
    uint8_t server[32], public_key[32], secret[32];
} curve;

static void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errmsg(const char *fmt, ...)
{
    va_list ap;
    fputs("cgctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- usage ------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "Usage: cgctl [-c repository.ini | --endpoint EP] [--timeout MS] [--json] COMMAND ...\n"
        "Send requests to coregroupd, the coregroup core daemon (protocol: REQUESTS.md).\n"
        "\n"
        "Resources and names (each command is one call, i.e. one transaction):\n"
        "  register [--kind K] [--service-id S] [--specification JSON]\n"
        "           [--description JSON] [--state JSON]     create; prints the handle\n"
        "  get HANDLE [PART]                     a resource (kind, service id, every part\n"
        "                                        with its version), or one part\n"
        "  update HANDLE PART EXPECTED JSON      conditional update; prints the new version\n"
        "                                        (stale: exit 1, the reply's \"actual\" is the\n"
        "                                        current version)\n"
        "  unregister HANDLE                     delete a resource\n"
        "  bind FOLDER NAME TARGET               bind a name (folder 0 is the root)\n"
        "  unbind [FOLDER] NAME                  remove a binding\n"
        "  list [FOLDER]                         the bindings of a folder\n"
        "  lookup [FOLDER] NAME                  resolve a name; prints the target handle\n"
        "  find SERVICE_ID                       the handles registered with a service id\n"
        "  multi FILE|-                          a JSON array of operations, run as ONE call:\n"
        "                                        all or nothing (\"lock\" is only useful here)\n"
        "  send JSON|-                           send a raw request as given; print the reply\n"
        "PART is specification, description or state.\n"
        "\n"
        "Operations:\n"
        "  health                 probe with the timeout: exit 0 healthy, 1 degraded,\n"
        "                         2 unreachable (a cluster fault-monitor probe); prints\n"
        "                         repository_ok, bus_silent, degraded, fenced, applied_seq,\n"
        "                         event_seq, proof_age_ms (the last freshness proof's age;\n"
        "                         -1 none), max_staleness_ms (its bound) and, when not\n"
        "                         healthy, reason\n"
        "  members                the group's cores: state, incarnation, heartbeat age,\n"
        "                         applied seq and lag\n"
        "  stats [--prometheus]   every counter and gauge of the core (cg_core_stats) and\n"
        "                         the daemon's; --prometheus prints the Prometheus text\n"
        "                         exposition format\n"
        "  shutdown               ask the daemon to stop gracefully (its core leaves the group)\n"
        "  start [--log FILE] [--wait MS]\n"
        "                         run coregroupd -c repository.ini in the background (output\n"
        "                         to FILE; default next to the pid file, else\n"
        "                         /tmp/coregroupd-CORE.log) and wait until it answers;\n"
        "                         \"already running\" (exit 0) if it does already\n"
        "  stop [--wait MS]       shutdown, then wait until it is gone; \"not running\" (exit 0)\n"
        "                         if none is\n"
        "\n"
        "Options:\n"
        "  -c, --config FILE      repository.ini: the endpoint is its [daemon] listen\n"
        "  -e, --endpoint EP      the daemon's endpoint, e.g. tcp://127.0.0.1:7001\n"
        "  -t, --timeout MS       how long to wait for each reply (default %d)\n"
        "      --curve-client-key FILE\n"
        "                         this client's CURVE secret key (Z85), for a daemon whose\n"
        "                         request endpoint uses CURVE; its public key must be among\n"
        "                         the daemon's [daemon] curve_clients\n"
        "      --curve-server-key FILE\n"
        "                         the daemon's CURVE public key (default: -c's [daemon]\n"
        "                         curve_public_key)\n"
        "  -j, --json             print the daemon's reply object (one line of JSON)\n"
        "  -h, --help             show this help\n"
        "  -V, --version          show the version\n"
        "\n"
        "Exit status: 0 success, 1 the request failed (the daemon answered with an error),\n"
        "2 bad usage, 3 unreachable (no answer within the timeout); health: 0 healthy,\n"
        "1 degraded, 2 unreachable.\n",
        DEFAULT_TIMEOUT_MS);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("cgctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (try cgctl --help)\n", stderr);
    return EXIT_USAGE;
}

/* ---- requests ---------------------------------------------------------------------------- */

/* An integer argument in [min, max]: 0, or -1. */
static int parse_int(int64_t *out, const char *s, int64_t min, int64_t max)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return -1;
    *out = (int64_t)v;
    return 0;
}

static int add_int(cJSON *o, const char *k, int64_t v)
{
    char t[24];
    snprintf(t, sizeof(t), "%lld", (long long)v);
    return cJSON_AddRawToObject(o, k, t) != NULL;
}

/* A new request object {"v":1,"id":"cgctl-PID-N","op":op}. */
static cJSON *request_new(const char *op)
{
    cJSON *r = cJSON_CreateObject();
    char id[64];
    snprintf(id, sizeof(id), "cgctl-%ld-%lu", (long)getpid(), ++next_id);
    if (r == NULL || !add_int(r, "v", 1) || !cJSON_AddStringToObject(r, "id", id) ||
        !cJSON_AddStringToObject(r, "op", op)) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

/*
 * Send `len` bytes to `ep` and wait up to timeout_ms for the reply. 0 with *reply (a new
 * NUL-terminated string the caller frees) and *reply_len, or -1 when no reply came (the
 * reason in why).
 */
static int exchange(const char *ep, const char *data, size_t len, int timeout_ms, char **reply,
                    size_t *reply_len, char *why, size_t whysz)
{
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    int zero = 0, rc = -1;
    zmq_msg_t m;

    *reply = NULL;
    *reply_len = 0;
    if (s == NULL) {
        snprintf(why, whysz, "cannot create a socket: %s", zmq_strerror(errno));
        return -1;
    }
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout_ms, sizeof(timeout_ms));
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout_ms, sizeof(timeout_ms));
    if (curve.on && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, curve.server, 32) < 0 ||
                     zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, curve.public_key, 32) < 0 ||
                     zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, curve.secret, 32) < 0)) {
        snprintf(why, whysz, "cannot set the CURVE keys: %s", zmq_strerror(errno));
        zmq_close(s);
        return -2;
    }
    if (zmq_connect(s, ep) < 0) {
        snprintf(why, whysz, "cannot connect to %s: %s", ep, zmq_strerror(errno));
        zmq_close(s);
        return -2;
    }
    if (zmq_send(s, data, len, 0) < 0) {
        snprintf(why, whysz, "cannot send to %s: %s", ep, zmq_strerror(errno));
        zmq_close(s);
        return -1;
    }
    zmq_msg_init(&m);
    for (;;) {
        int more = 0;
        size_t moresz = sizeof(more);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            if (errno == EINTR)
                continue;
            snprintf(why, whysz, "no answer from %s within %d ms%s", ep, timeout_ms,
                     curve.on ? " (with CURVE, also: is this client's public key among the "
                                "daemon's curve_clients?)"
                              : "");
            break;
        }
        zmq_getsockopt(s, ZMQ_RCVMORE, &more, &moresz);
        if (more) /* an envelope frame: the body comes last */
            continue;
        if ((*reply = malloc(zmq_msg_size(&m) + 1)) == NULL) {
            snprintf(why, whysz, "out of memory");
            break;
        }
        memcpy(*reply, zmq_msg_data(&m), zmq_msg_size(&m));
        (*reply)[zmq_msg_size(&m)] = '\0';
        *reply_len = zmq_msg_size(&m);
        rc = 0;
        break;
    }
    zmq_msg_close(&m);
    zmq_close(s);
    return rc;
}

/* Send a request object; 0 with *reply (parsed; caller frees) and *text (raw; caller frees),
 * or an exit status after a message. */
static int call(cJSON *req, int timeout_ms, cJSON **reply, char **text, int quiet)
{
    char *body = cJSON_PrintUnformatted(req), why[1200];
    size_t len;
    int r;

    *reply = NULL;
    *text = NULL;
    if (body == NULL) {
        errmsg("out of memory");
        return EXIT_FAILED;
    }
    r = exchange(endpoint, body, strlen(body), timeout_ms, text, &len, why, sizeof(why));
    cJSON_free(body);
    if (r == -2) {
        errmsg("%s", why);
        return EXIT_USAGE;
    }
    if (r < 0) {
        if (!quiet)
            errmsg("%s", why);
        return EXIT_UNREACHABLE;
    }
    if ((*reply = cJSON_ParseWithLength(*text, len)) == NULL || !cJSON_IsObject(*reply)) {
        errmsg("the reply from %s is not a JSON object", endpoint);
        cJSON_Delete(*reply);
        *reply = NULL;
        free(*text);
        *text = NULL;
        return EXIT_FAILED;
    }
    return 0;
}

static int reply_ok(const cJSON *reply)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok"));
}

static const char *str_of(const cJSON *o, const char *k)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(j) && j->valuestring ? j->valuestring : NULL;
}

/* A number field as an integer (exact for anything the daemon sends), or `dflt`. */
static long long int_of(const cJSON *o, const char *k, long long dflt)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsNumber(j))
        return (long long)j->valuedouble;
    if (cJSON_IsBool(j))
        return cJSON_IsTrue(j) ? 1 : 0;
    return dflt;
}

/* Print an error reply on stderr: "cgctl: CODE: MESSAGE (detail)". */
static void print_error(const cJSON *reply)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
    const char *code = str_of(e, "code"), *msg = str_of(e, "message"), *op = str_of(e, "op");
    char where[128] = "", detail[256] = "";
    if (cJSON_GetObjectItemCaseSensitive(e, "index") && op)
        snprintf(where, sizeof(where), "operation %lld (%s) failed: ", int_of(e, "index", -1), op);
    else if (cJSON_GetObjectItemCaseSensitive(e, "index"))
        snprintf(where, sizeof(where), "operation %lld: ", int_of(e, "index", -1));
    if (code && strcmp(code, "stale") == 0) {
        const cJSON *actual = cJSON_GetObjectItemCaseSensitive(e, "actual");
        char act[32];
        if (cJSON_IsNumber(actual))
            snprintf(act, sizeof(act), "%lld", (long long)actual->valuedouble);
        else
            snprintf(act, sizeof(act), "none (deleted)");
        snprintf(detail, sizeof(detail), " (handle %lld, part %s, expected %lld, current %s)",
                 int_of(e, "handle", -1), str_of(e, "part") ? str_of(e, "part") : "?",
                 int_of(e, "expected", -1), act);
    }
    errmsg("%s%s: %s%s", where, code ? code : "error", msg ? msg : "(no message)", detail);
}

/* Send `req` (consumed), print the outcome with `printer` on success. Returns the exit status. */
static int run(cJSON *req, void (*printer)(const cJSON *reply))
{
    cJSON *reply = NULL;
    char *text = NULL;
    int rc;

    if (req == NULL) {
        errmsg("out of memory");
        return EXIT_FAILED;
    }
    rc = call(req, opt.timeout_ms, &reply, &text, 0);
    cJSON_Delete(req);
    if (rc != 0)
        return rc;
    if (opt.json)
        printf("%s\n", text);
    if (reply_ok(reply)) {
        if (!opt.json && printer)
            printer(reply);
    } else {
        print_error(reply);
        rc = EXIT_FAILED;
    }
    cJSON_Delete(reply);
    free(text);
    return rc;
}

/* ---- printers ---------------------------------------------------------------------------- */

static void print_compact(const cJSON *j)
{
    char *t = cJSON_PrintUnformatted(j);
    fputs(t ? t : "?", stdout);
    cJSON_free(t);
}

static void print_handle(const cJSON *r)
{
    printf("%lld\n", int_of(r, "handle", -1));
}

static void print_version(const cJSON *r)
{
    printf("%lld\n", int_of(r, "version", -1));
}

static void print_target(const cJSON *r)
{
    printf("%lld\n", int_of(r, "target", -1));
}

static void print_unregistered(const cJSON *r)
{
    printf("unregistered %lld\n", int_of(r, "handle", -1));
}

static void print_bound(const cJSON *r)
{
    printf("bound %s -> %lld in folder %lld\n", str_of(r, "name"), int_of(r, "target", -1),
           int_of(r, "folder", -1));
}

static void print_unbound(const cJSON *r)
{
    printf("unbound %s in folder %lld\n", str_of(r, "name"), int_of(r, "folder", -1));
}

static void print_part_line(const char *name, const cJSON *p)
{
    printf("%s version %lld ", name, int_of(p, "version", -1));
    print_compact(cJSON_GetObjectItemCaseSensitive(p, "body"));
    putchar('\n');
}

static void print_get(const cJSON *r)
{
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(r, "parts"), *p;
    if (parts == NULL) { /* one part */
        print_part_line(str_of(r, "part") ? str_of(r, "part") : "?", r);
        return;
    }
    printf("handle %lld kind %s service_id %s\n", int_of(r, "handle", -1),
           str_of(r, "kind") ? str_of(r, "kind") : "?",
           str_of(r, "service_id") ? str_of(r, "service_id") : "-");
    cJSON_ArrayForEach(p, parts)
    {
        print_part_line(p->string, p);
    }
}

static void print_list(const cJSON *r)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "names"))
        printf("%s\t%lld\n", str_of(e, "name"), int_of(e, "target", -1));
}

static void print_find(const cJSON *r)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "handles"))
        printf("%lld\n", (long long)e->valuedouble);
}

static void print_multi(const cJSON *r)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "results"))
    {
        print_compact(e);
        putchar('\n');
    }
}

static void print_stopping(const cJSON *r)
{
    (void)r;
    printf("stopping\n");
}

static void print_members(const cJSON *r)
{
    const cJSON *e;
    printf("group %s, event seq %lld\n", str_of(r, "group") ? str_of(r, "group") : "?",
           int_of(r, "event_seq", -1));
    printf("%-24s %-8s %11s %10s %10s %8s  %s\n", "CORE", "STATE", "INCARNATION", "HEARTBEAT",
           "APPLIED", "LAG", "HOST:PID");
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "members"))
    {
        char age[32];
        long long ms = int_of(e, "heartbeat_age_ms", -1);
        if (ms < 0)
            snprintf(age, sizeof(age), "-");
        else if (ms < 100000)
            snprintf(age, sizeof(age), "%.1fs", (double)ms / 1000.0);
        else
            snprintf(age, sizeof(age), "%llds", ms / 1000);
        printf("%-24s %-8s %11lld %10s %10lld %8lld  %s:%lld\n", str_of(e, "name"),
               str_of(e, "state"), int_of(e, "incarnation", -1), age, int_of(e, "applied_seq", -1),
               int_of(e, "lag", -1), str_of(e, "host") ? str_of(e, "host") : "?",
               int_of(e, "pid", 0));
    }
}

static void print_stats(const cJSON *r)
{
    const cJSON *e, *d = cJSON_GetObjectItemCaseSensitive(r, "daemon");
    printf("core %s group %s incarnation %lld\n", str_of(r, "core"), str_of(r, "group"),
           int_of(r, "incarnation", -1));
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "stats"))
        printf("%-24s %lld\n", e->string, (long long)e->valuedouble);
    cJSON_ArrayForEach(e, d)
    {
        if (cJSON_IsObject(e)) {
            const cJSON *c;
            cJSON_ArrayForEach(c, e)
                printf("daemon.%s.%-8s %lld\n", e->string, c->string, (long long)c->valuedouble);
        } else {
            printf("daemon.%-17s %lld\n", e->string, (long long)e->valuedouble);
        }
    }
}

/* ---- stats --prometheus ------------------------------------------------------------------ */

/* One line per field of the stats object: counters end in _total, gauges are the values that
 * go down as well as up. A field in milliseconds is exported in seconds (ms_to_s), the
 * exposition format's base unit; its -1 ("none") stays -1. */
typedef struct {
    const char *field, *metric, *type, *help;
    int ms_to_s;
} metric_def;

static const metric_def metrics[] = {
    {"calls_committed", "coregroup_calls_committed_total", "counter", "Calls committed."},
    {"calls_aborted", "coregroup_calls_aborted_total", "counter", "Calls aborted or failed."},
    {"cache_hits", "coregroup_cache_hits_total", "counter", "Part reads served from the cache."},
    {"cache_misses", "coregroup_cache_misses_total", "counter",
     "Part reads the cache could not serve."},
    {"cache_fills", "coregroup_cache_fills_total", "counter", "Parts put into the cache."},
    {"cache_fills_refused", "coregroup_cache_fills_refused_total", "counter",
     "Cache fills refused because a newer version was announced meanwhile."},
    {"cache_evictions", "coregroup_cache_evictions_total", "counter", "Cache entries evicted."},
    {"cache_expirations", "coregroup_cache_expirations_total", "counter",
     "Cache entries expired by ttl_ms."},
    {"cache_entries", "coregroup_cache_entries", "gauge", "Parts in the cache now."},
    {"stale_errors", "coregroup_stale_errors_total", "counter",
     "Conditional updates refused as stale (version conflicts)."},
    {"invalidations_applied", "coregroup_invalidations_applied_total", "counter",
     "Invalidation items applied to the cache."},
    {"cache_resets", "coregroup_cache_resets_total", "counter",
     "Whole-cache resets (the outbox was pruned past this core)."},
    {"repository_reads", "coregroup_repository_reads_total", "counter",
     "Parts read from the repository."},
    {"repository_reconnects", "coregroup_repository_reconnects_total", "counter",
     "Repository connections found broken and replaced."},
    {"invalidations_sent", "coregroup_invalidations_sent_total", "counter",
     "Invalidations published after COMMIT."},
    {"invalidations_unsent", "coregroup_invalidations_unsent_total", "counter",
     "Invalidations not published (the outbox carries them)."},
    {"invalidations_received", "coregroup_invalidations_received_total", "counter",
     "Invalidations heard from the bus."},
    {"duplicates", "coregroup_bus_duplicates_total", "counter",
     "Bus messages heard again or old, ignored."},
    {"gaps", "coregroup_bus_gaps_total", "counter", "Missed bus events noticed."},
    {"catchups", "coregroup_bus_catchups_total", "counter", "Gaps filled from the outbox."},
    {"messages_dropped", "coregroup_bus_messages_dropped_total", "counter",
     "Bus messages dropped: malformed, foreign, unknown version or from the future."},
    {"heartbeats_received", "coregroup_bus_heartbeats_received_total", "counter",
     "Heartbeats heard on the bus."},
    {"polls", "coregroup_polls_total", "counter",
     "Backstop comparisons of the applied seq with the repository."},
    {"applied_seq", "coregroup_applied_seq", "gauge",
     "Every group event up to this one is applied to the cache."},
    {"degraded", "coregroup_degraded", "gauge",
     "1 when the core cannot prove its cache fresh within [cache] max_staleness_ms."},
    {"reordered", "coregroup_bus_reordered_total", "counter",
     "Bus events that came ahead of a missing one which then arrived within the reorder "
     "window."},
    {"freshness_proofs", "coregroup_freshness_proofs_total", "counter",
     "Proofs that every group event up to the group's counter is applied."},
    {"lease_misses", "coregroup_lease_misses_total", "counter",
     "Reads that found the freshness lease expired and skipped the cache."},
    {"proof_age_ms", "coregroup_freshness_proof_age_seconds", "gauge",
     "Age of the last freshness proof, from its start; -1 when there was none.", 1},
    {"members_suspected", "coregroup_members_suspected_total", "counter",
     "Members this core marked suspect."},
    {"members_failed", "coregroup_members_failed_total", "counter",
     "Members this core declared failed and fenced."},
    {"recoveries", "coregroup_recoveries_total", "counter",
     "Failed members whose publishing this core redid."},
    {"recovered_events", "coregroup_recovered_events_total", "counter",
     "Outbox events of failed members this core published again."},
    {"rejoins", "coregroup_rejoins_total", "counter",
     "Times this core found itself fenced and rejoined."},
};

/* A label value with \, " and newline escaped, as the exposition format wants. */
static const char *label_value(char *buf, size_t bufsz, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 3 < bufsz; s++) {
        if (*s == '\\' || *s == '"')
            buf[o++] = '\\', buf[o++] = *s;
        else if (*s == '\n')
            buf[o++] = '\\', buf[o++] = 'n';
        else
            buf[o++] = *s;
    }
    buf[o] = '\0';
    return buf;
}

static void print_prometheus(const cJSON *r)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "stats"), *e;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(r, "daemon");
    char core[200], group[200], labels[512];
    size_t i;

    snprintf(labels, sizeof(labels), "core=\"%s\",group=\"%s\"",
             label_value(core, sizeof(core), str_of(r, "core")),
             label_value(group, sizeof(group), str_of(r, "group")));
    cJSON_ArrayForEach(e, st)
    {
        const metric_def *m = NULL;
        char name[160];
        for (i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++)
            if (strcmp(metrics[i].field, e->string) == 0)
                m = &metrics[i];
        if (m) {
            long long v = (long long)e->valuedouble;
            printf("# HELP %s %s\n# TYPE %s %s\n", m->metric, m->help, m->metric, m->type);
            if (m->ms_to_s && v >= 0)
                printf("%s{%s} %lld.%03lld\n", m->metric, labels, v / 1000, v % 1000);
            else
                printf("%s{%s} %lld\n", m->metric, labels, v);
        } else { /* a counter this cgctl does not know yet */
            snprintf(name, sizeof(name), "coregroup_%s", e->string);
            printf("# HELP %s The core's %s counter.\n# TYPE %s untyped\n", name, e->string, name);
            printf("%s{%s} %lld\n", name, labels, (long long)e->valuedouble);
        }
    }
    printf("# HELP coregroup_incarnation The core's incarnation (its fencing token).\n"
           "# TYPE coregroup_incarnation gauge\n"
           "coregroup_incarnation{%s} %lld\n",
           labels, int_of(r, "incarnation", 0));
    printf("# HELP coregroupd_uptime_seconds Seconds since coregroupd started serving.\n"
           "# TYPE coregroupd_uptime_seconds gauge\n"
           "coregroupd_uptime_seconds{%s} %lld\n",
           labels, int_of(d, "uptime_s", 0));
    printf("# HELP coregroupd_workers Worker threads serving requests.\n"
           "# TYPE coregroupd_workers gauge\n"
           "coregroupd_workers{%s} %lld\n",
           labels, int_of(d, "workers", 0));
    printf("# HELP coregroupd_requests_total Requests answered, malformed ones included.\n"
           "# TYPE coregroupd_requests_total counter\n"
           "coregroupd_requests_total{%s} %lld\n",
           labels, int_of(d, "requests", 0));
    printf("# HELP coregroupd_requests_malformed_total Requests the decoder refused.\n"
           "# TYPE coregroupd_requests_malformed_total counter\n"
           "coregroupd_requests_malformed_total{%s} %lld\n",
           labels, int_of(d, "malformed", 0));
    printf("# HELP coregroupd_request_errors_total Requests answered with an error, by code.\n"
           "# TYPE coregroupd_request_errors_total counter\n");
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(d, "errors_by_code"))
        printf("coregroupd_request_errors_total{%s,code=\"%s\"} %lld\n", labels,
               label_value(core, sizeof(core), e->string), (long long)e->valuedouble);
}

/* ---- health ------------------------------------------------------------------------------ */

/* Print prefix and `s` in double quotes, backslash and quote escaped, control characters as
 * ?, so that the health line stays one line of key=value pairs. */
static void print_quoted(const char *prefix, const char *s)
{
    fputs(prefix, stdout);
    putchar('"');
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            putchar('\\');
        putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
    }
    putchar('"');
}

/* health: exit 0 healthy, 1 degraded, 2 unreachable. The line names the freshness proof's age
 * and its bound, and when the core is not healthy why: the reply's reason, and the error's
 * message unless that already contains the reason. */
static int cmd_health(void)
{
    cJSON *req = request_new("health"), *reply = NULL;
    char *text = NULL;
    int rc;

    if (req == NULL)
        return 1;
    rc = call(req, opt.timeout_ms, &reply, &text, 0);
    cJSON_Delete(req);
    if (rc == EXIT_UNREACHABLE)
        return 2;
    if (rc != 0)
        return rc == EXIT_USAGE ? EXIT_USAGE : 2;
    if (opt.json)
        printf("%s\n", text);
    rc = reply_ok(reply) ? 0 : 1;
    if (!opt.json) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
        const char *reason = str_of(reply, "reason"), *msg = str_of(e, "message");
        static const char *const bounds[] = {"proof_age_ms", "max_staleness_ms"};
        size_t i;
        printf("%s core=%s group=%s incarnation=%lld repository_ok=%lld bus_silent=%lld "
               "degraded=%lld fenced=%lld applied_seq=%lld event_seq=%lld",
               rc == 0 ? "healthy" : "degraded", str_of(reply, "core"), str_of(reply, "group"),
               int_of(reply, "incarnation", -1), int_of(reply, "repository_ok", -1),
               int_of(reply, "bus_silent", -1), int_of(reply, "degraded", -1),
               int_of(reply, "fenced", -1), int_of(reply, "applied_seq", -1),
               int_of(reply, "event_seq", -1));
        for (i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) /* absent from older daemons */
            if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(reply, bounds[i])))
                printf(" %s=%lld", bounds[i], int_of(reply, bounds[i], -1));
        if (reason && reason[0])
            print_quoted(" reason=", reason);
        if (msg && (reason == NULL || reason[0] == '\0' || strstr(msg, reason) == NULL))
            print_quoted(" message=", msg);
        putchar('\n');
    }
    cJSON_Delete(reply);
    free(text);
    return rc;
}

/* A quiet health probe: 1 answered (*core_name filled when given), 0 no answer. */
static int probe(int timeout_ms, char *core_name, size_t n)
{
    cJSON *req = request_new("health"), *reply = NULL;
    char *text = NULL;
    int rc = req ? call(req, timeout_ms, &reply, &text, 1) : EXIT_FAILED;
    cJSON_Delete(req);
    if (rc == 0 && core_name)
        snprintf(core_name, n, "%s", str_of(reply, "core") ? str_of(reply, "core") : "");
    cJSON_Delete(reply);
    free(text);
    return rc == 0;
}

/* ---- start and stop ---------------------------------------------------------------------- */

/* The pid in the pid file if that process is alive (not a zombie), else 0. */
static long live_pid(const char *pidfile)
{
    char buf[64], path[64];
    long pid;
    FILE *f;
    if (pidfile == NULL || (f = fopen(pidfile, "r")) == NULL)
        return 0;
    pid = fgets(buf, sizeof(buf), f) ? strtol(buf, NULL, 10) : 0;
    fclose(f);
    if (pid <= 0 || (kill((pid_t)pid, 0) < 0 && errno != EPERM))
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    if ((f = fopen(path, "r")) != NULL) { /* a zombie has exited: it is gone */
        char st[512];
        char *p = fgets(st, sizeof(st), f) ? strrchr(st, ')') : NULL;
        fclose(f);
        if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
            return 0;
    }
    return pid;
}

/* Is process `pid` gone (or no longer the one the pid file names)? */
static int gone(long pid, const char *pidfile)
{
    return live_pid(pidfile) != pid;
}

/* The coregroupd to run: next to this cgctl, else "coregroupd" for a PATH search. */
static void daemon_path(char *out, size_t n)
{
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len > 0) {
        char *slash;
        self[len] = '\0';
        if ((slash = strrchr(self, '/')) != NULL && (size_t)(slash - self) + 12 < n) {
            memcpy(out, self, (size_t)(slash - self));
            memcpy(out + (slash - self), "/coregroupd", 12);
            if (access(out, X_OK) == 0)
                return;
        }
    }
    snprintf(out, n, "coregroupd");
}

/* The default log: next to the pid file, else /tmp/coregroupd-CORE.log. */
static void default_log(char *out, size_t n)
{
    if (cfg->pidfile && strrchr(cfg->pidfile, '/'))
        snprintf(out, n, "%.*s/coregroupd-%s.log", (int)(strrchr(cfg->pidfile, '/') - cfg->pidfile),
                 cfg->pidfile, cfg->core_name);
    else
        snprintf(out, n, "/tmp/coregroupd-%s.log", cfg->core_name);
}

/* Print the last few lines of the log on stderr. */
static void tail_log(const char *path)
{
    char buf[4096];
    FILE *f = fopen(path, "r");
    long size;
    size_t n;
    char *p;
    int lines = 0;
    if (f == NULL)
        return;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (p = buf + n; p > buf; p--)
        if (p[-1] == '\n' && p != buf + n && ++lines == 6)
            break;
    fprintf(stderr, "%s", p);
}

static int cmd_start(void)
{
    char path[PATH_MAX], logp[PATH_MAX], ini[PATH_MAX], core[CG_NAME_MAX + 1] = "";
    char failed[PATH_MAX + 64];
    int64_t deadline = mono_ms() + opt.wait_ms;
    long running, maxfd;
    pid_t pid;

    if (opt.config_path == NULL)
        return usage_error("start needs -c repository.ini (the daemon's configuration)");
    if ((running = live_pid(cfg->pidfile)) == 0 &&
        probe(opt.timeout_ms < 500 ? opt.timeout_ms : 500, core, sizeof(core))) {
        /* answering without a pid file of ours: ours only if it is this core */
        if (strcmp(core, cfg->core_name) != 0) {
            errmsg("%s is served by core \"%s\", not \"%s\"", endpoint, core, cfg->core_name);
            return EXIT_FAILED;
        }
        printf("already running\n");
        return 0;
    }
    if (running > 0) {
        /* starting up (or hung): give it the wait to answer */
        while (mono_ms() < deadline && !gone(running, cfg->pidfile))
            if (probe(250, NULL, 0)) {
                printf("already running\n");
                return 0;
            }
        if (!gone(running, cfg->pidfile)) {
            errmsg("coregroupd (pid %ld, pid file %s) is running but does not answer on %s",
                   running, cfg->pidfile, endpoint);
            return EXIT_FAILED;
        }
    }
    if (realpath(opt.config_path, ini) == NULL) {
        errmsg("%s: %s", opt.config_path, strerror(errno));
        return EXIT_USAGE;
    }
    daemon_path(path, sizeof(path));
    if (opt.log_path)
        snprintf(logp, sizeof(logp), "%s", opt.log_path);
    else
        default_log(logp, sizeof(logp));

    snprintf(failed, sizeof(failed), "cgctl: cannot run %s (or open the log)\n", path);
    maxfd = sysconf(_SC_OPEN_MAX);
    if (maxfd <= 0 || maxfd > 65536)
        maxfd = 1024;
    fflush(NULL);
    if ((pid = fork()) < 0) {
        errmsg("fork: %s", strerror(errno));
        return EXIT_FAILED;
    }
    if (pid == 0) {
        /* only async-signal-safe calls between fork and exec */
        int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644), nul = open("/dev/null", O_RDONLY);
        long i;
        if (fd < 0) {
            if (write(2, failed, strlen(failed)) < 0) {
                /* nothing more to do */
            }
            _exit(126);
        }
        setsid(); /* not in cgctl's session: a terminal's ^C or hangup does not reach it */
        if (nul >= 0)
            dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        for (i = 3; i < maxfd; i++)
            close((int)i);
        if (strchr(path, '/'))
            execl(path, path, "-c", ini, (char *)NULL);
        else
            execlp(path, path, "-c", ini, (char *)NULL);
        if (write(2, failed, strlen(failed)) < 0) {
            /* nothing more to do */
        }
        _exit(127);
    }
    while (mono_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            errmsg("coregroupd exited with status %d before answering; the end of %s:",
                   WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), logp);
            tail_log(logp);
            return EXIT_FAILED;
        }
        if (probe(250, NULL, 0)) {
            printf("started %s pid %ld log %s\n", cfg->core_name, (long)pid, logp);
            return 0;
        }
        sleep_ms(20);
    }
    errmsg("coregroupd (pid %ld) did not answer on %s within %d ms; see %s", (long)pid, endpoint,
           opt.wait_ms, logp);
    return EXIT_FAILED;
}

static int cmd_stop(void)
{
    const char *pidfile = cfg ? cfg->pidfile : NULL;
    long pid = live_pid(pidfile);
    int64_t deadline = mono_ms() + opt.wait_ms;
    cJSON *req = request_new("shutdown"), *reply = NULL;
    char *text = NULL;
    int rc, answered;

    if (req == NULL)
        return EXIT_FAILED;
    rc = call(req, opt.timeout_ms, &reply, &text, 1);
    cJSON_Delete(req);
    if (rc == EXIT_USAGE)
        return rc;
    answered = rc == 0;
    cJSON_Delete(reply);
    free(text);
    if (!answered) {
        if (pid == 0) {
            printf("not running\n");
            return 0;
        }
        /* alive but not answering (starting, or hung): a graceful stop by signal */
        if (kill((pid_t)pid, SIGTERM) < 0 && errno != ESRCH) {
            errmsg("cannot signal coregroupd (pid %ld): %s", pid, strerror(errno));
            return EXIT_FAILED;
        }
    }
    for (;;) {
        if (pid > 0 ? gone(pid, pidfile) : !probe(200, NULL, 0)) {
            printf("stopped\n");
            return 0;
        }
        if (mono_ms() >= deadline)
            break;
        sleep_ms(20);
    }
    errmsg("coregroupd%s did not stop within %d ms", pid > 0 ? " (still running)" : "",
           opt.wait_ms);
    return EXIT_FAILED;
}

/* ---- the commands ------------------------------------------------------------------------ */

/* Read a whole file ("-": stdin) into a new string; NULL after a message. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char *buf;
    size_t n = 0;
    if (f == NULL) {
        errmsg("%s: %s", path, strerror(errno));
        return NULL;
    }
    if ((buf = malloc(MAX_FILE + 1)) == NULL) {
        errmsg("out of memory");
        if (f != stdin)
            fclose(f);
        return NULL;
    }
    n = fread(buf, 1, MAX_FILE + 1, f);
    if (f != stdin)
        fclose(f);
    if (n > MAX_FILE) {
        errmsg("%s: larger than %d bytes", path, MAX_FILE);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Add a JSON command-line argument to o under key; 0 or an exit status. */
static int add_json_arg(cJSON *o, const char *key, const char *what, const char *text)
{
    cJSON *j = cJSON_Parse(text);
    if (j == NULL)
        return usage_error("%s: not valid JSON: %s", what, text);
    cJSON_AddItemToObject(o, key, j);
    return 0;
}

static int need_args(int argc, int min, int max, const char *synopsis)
{
    if (argc < min || argc > max)
        return usage_error("usage: cgctl %s", synopsis);
    return 0;
}

static int arg_handle(int64_t *out, const char *s, const char *what)
{
    if (parse_int(out, s, 0, INT64_C(9007199254740991)) < 0)
        return usage_error("%s \"%s\": expected a handle (an integer, 0 or more)", what, s);
    return 0;
}

static int arg_part(const char *s)
{
    cg_part_kind k;
    if (cg_part_kind_parse(&k, s) < 0)
        return usage_error("part \"%s\": expected specification, description or state", s);
    return 0;
}

static int dispatch(const char *cmd, int argc, char **argv)
{
    cJSON *req = NULL;
    int64_t h = 0, v = 0, t = 0;
    int rc, k;

    if (opt.has_register_opts && strcmp(cmd, "register") != 0)
        return usage_error("--kind, --service-id and the part options belong to register");
    if (opt.prometheus && strcmp(cmd, "stats") != 0)
        return usage_error("--prometheus belongs to stats");
    if (strcmp(cmd, "register") == 0) {
        static const char *const keys[3] = {"specification", "description", "state"};
        if ((rc = need_args(argc, 0, 0,
                            "register [--kind K] [--service-id S] [--specification JSON] "
                            "[--description JSON] [--state JSON]")) != 0)
            return rc;
        req = request_new("register");
        if (req && opt.kind)
            cJSON_AddStringToObject(req, "kind", opt.kind);
        if (req && opt.service_id)
            cJSON_AddStringToObject(req, "service_id", opt.service_id);
        for (k = 0; req && k < 3; k++)
            if (opt.bodies[k] && (rc = add_json_arg(req, keys[k], keys[k], opt.bodies[k])) != 0) {
                cJSON_Delete(req);
                return rc;
            }
        return run(req, print_handle);
    }
    if (strcmp(cmd, "get") == 0) {
        if ((rc = need_args(argc, 1, 2, "get HANDLE [PART]")) != 0 ||
            (rc = arg_handle(&h, argv[0], "HANDLE")) != 0 ||
            (argc == 2 && (rc = arg_part(argv[1])) != 0))
            return rc;
        if ((req = request_new("get")) != NULL) {
            add_int(req, "handle", h);
            if (argc == 2)
                cJSON_AddStringToObject(req, "part", argv[1]);
        }
        return run(req, print_get);
    }
    if (strcmp(cmd, "update") == 0) {
        if ((rc = need_args(argc, 4, 4, "update HANDLE PART EXPECTED JSON")) != 0 ||
            (rc = arg_handle(&h, argv[0], "HANDLE")) != 0 || (rc = arg_part(argv[1])) != 0)
            return rc;
        if (parse_int(&v, argv[2], 1, INT64_C(9007199254740991)) < 0)
            return usage_error("EXPECTED \"%s\": expected a version (an integer, 1 or more)",
                               argv[2]);
        if ((req = request_new("update")) != NULL) {
            add_int(req, "handle", h);
            cJSON_AddStringToObject(req, "part", argv[1]);
            add_int(req, "expected", v);
            if ((rc = add_json_arg(req, "body", "JSON", argv[3])) != 0) {
                cJSON_Delete(req);
                return rc;
            }
        }
        return run(req, print_version);
    }
    if (strcmp(cmd, "unregister") == 0) {
        if ((rc = need_args(argc, 1, 1, "unregister HANDLE")) != 0 ||
            (rc = arg_handle(&h, argv[0], "HANDLE")) != 0)
            return rc;
        if ((req = request_new("unregister")) != NULL)
            add_int(req, "handle", h);
        return run(req, print_unregistered);
    }
    if (strcmp(cmd, "bind") == 0) {
        if ((rc = need_args(argc, 3, 3, "bind FOLDER NAME TARGET")) != 0 ||
            (rc = arg_handle(&h, argv[0], "FOLDER")) != 0 ||
            (rc = arg_handle(&t, argv[2], "TARGET")) != 0)
            return rc;
        if ((req = request_new("bind")) != NULL) {
            add_int(req, "folder", h);
            cJSON_AddStringToObject(req, "name", argv[1]);
            add_int(req, "target", t);
        }
        return run(req, print_bound);
    }
    if (strcmp(cmd, "unbind") == 0 || strcmp(cmd, "lookup") == 0) {
        int lookup = cmd[0] == 'l';
        if ((rc = need_args(argc, 1, 2,
                            lookup ? "lookup [FOLDER] NAME" : "unbind [FOLDER] NAME")) != 0 ||
            (argc == 2 && (rc = arg_handle(&h, argv[0], "FOLDER")) != 0))
            return rc;
        if ((req = request_new(cmd)) != NULL) {
            add_int(req, "folder", h);
            cJSON_AddStringToObject(req, "name", argv[argc - 1]);
        }
        return run(req, lookup ? print_target : print_unbound);
    }
    if (strcmp(cmd, "list") == 0) {
        if ((rc = need_args(argc, 0, 1, "list [FOLDER]")) != 0 ||
            (argc == 1 && (rc = arg_handle(&h, argv[0], "FOLDER")) != 0))
            return rc;
        if ((req = request_new("list")) != NULL)
            add_int(req, "folder", h);
        return run(req, print_list);
    }
    if (strcmp(cmd, "find") == 0) {
        if ((rc = need_args(argc, 1, 1, "find SERVICE_ID")) != 0)
            return rc;
        if ((req = request_new("find")) != NULL)
            cJSON_AddStringToObject(req, "service_id", argv[0]);
        return run(req, print_find);
    }
    if (strcmp(cmd, "multi") == 0) {
        char *text;
        size_t len;
        cJSON *ops;
        if ((rc = need_args(argc, 1, 1, "multi FILE|-")) != 0)
            return rc;
        if ((text = read_all(argv[0], &len)) == NULL)
            return EXIT_USAGE;
        ops = cJSON_ParseWithLength(text, len);
        free(text);
        if (!cJSON_IsArray(ops)) {
            cJSON_Delete(ops);
            return usage_error("%s: expected a JSON array of operations, e.g. "
                               "[{\"op\":\"update\",\"handle\":5,\"part\":\"state\","
                               "\"expected\":1,\"body\":{}}]",
                               argv[0]);
        }
        if ((req = request_new("multi")) != NULL)
            cJSON_AddItemToObject(req, "ops", ops);
        else
            cJSON_Delete(ops);
        return run(req, print_multi);
    }
    if (strcmp(cmd, "send") == 0) {
        char *text, *reply = NULL, why[1200];
        size_t len, rlen;
        cJSON *parsed;
        if ((rc = need_args(argc, 1, 1, "send JSON|-")) != 0)
            return rc;
        if (strcmp(argv[0], "-") == 0) {
            if ((text = read_all("-", &len)) == NULL)
                return EXIT_USAGE;
        } else {
            text = strdup(argv[0]);
            len = text ? strlen(text) : 0;
        }
        rc = text ? exchange(endpoint, text, len, opt.timeout_ms, &reply, &rlen, why, sizeof(why))
                  : -1;
        free(text);
        if (rc < 0) {
            errmsg("%s", why);
            return rc == -2 ? EXIT_USAGE : EXIT_UNREACHABLE;
        }
        printf("%s\n", reply);
        parsed = cJSON_Parse(reply);
        rc = reply_ok(parsed) ? 0 : EXIT_FAILED;
        cJSON_Delete(parsed);
        free(reply);
        return rc;
    }
    if (strcmp(cmd, "members") == 0) {
        if ((rc = need_args(argc, 0, 0, "members")) != 0)
            return rc;
        return run(request_new("members"), print_members);
    }
    if (strcmp(cmd, "stats") == 0) {
        if ((rc = need_args(argc, 0, 0, "stats [--prometheus]")) != 0)
            return rc;
        if (opt.prometheus && opt.json)
            return usage_error("--prometheus and --json exclude each other");
        return run(request_new("stats"), opt.prometheus ? print_prometheus : print_stats);
    }
    if (strcmp(cmd, "health") == 0) {
        if ((rc = need_args(argc, 0, 0, "health")) != 0)
            return rc;
        return cmd_health();
    }
    if (strcmp(cmd, "shutdown") == 0) {
        if ((rc = need_args(argc, 0, 0, "shutdown")) != 0)
            return rc;
        return run(request_new("shutdown"), print_stopping);
    }
    if (strcmp(cmd, "start") == 0) {
        if ((rc = need_args(argc, 0, 0, "-c repository.ini start [--log FILE] [--wait MS]")) != 0)
            return rc;
        return cmd_start();
    }
    if (strcmp(cmd, "stop") == 0) {
        if ((rc = need_args(argc, 0, 0, "stop [--wait MS]")) != 0)
            return rc;
        return cmd_stop();
    }
    return usage_error("unknown command \"%s\"", cmd);
}

/* The endpoint a client connects to for a bound endpoint: wildcards become 127.0.0.1. */
static void client_endpoint(char *out, size_t n, const char *listen)
{
    const char *hosts[] = {"tcp://*:", "tcp://0.0.0.0:"};
    size_t i;
    for (i = 0; i < 2; i++)
        if (strncmp(listen, hosts[i], strlen(hosts[i])) == 0) {
            snprintf(out, n, "tcp://127.0.0.1:%s", listen + strlen(hosts[i]));
            return;
        }
    if (strncmp(listen, "tcp://[::]:", 11) == 0) {
        snprintf(out, n, "tcp://[::1]:%s", listen + 11);
        return;
    }
    snprintf(out, n, "%s", listen);
}

enum {
    OPT_KIND = 1000,
    OPT_SERVICE,
    OPT_SPEC,
    OPT_DESC,
    OPT_STATE,
    OPT_PROM,
    OPT_LOG,
    OPT_WAIT,
    OPT_CURVE_CLIENT,
    OPT_CURVE_SERVER
};

/* Load the CURVE keys: the server's from --curve-server-key or the INI's [daemon]
 * curve_public_key, this client's secret key from --curve-client-key (its public key is
 * derived). 0, or an exit status after a message. */
static int load_curve(void)
{
    const char *server = opt.curve_server ? opt.curve_server
                         : cfg            ? cfg->daemon_curve_public_key
                                          : NULL;
    char why[600], secret85[41], public85[41];

    if (server == NULL && opt.curve_client == NULL)
        return 0;
    if (server == NULL)
        return usage_error("--curve-client-key needs the daemon's public key: give "
                           "--curve-server-key FILE, or -c with [daemon] curve_public_key");
    if (opt.curve_client == NULL)
        return usage_error("the daemon's request endpoint uses CURVE (key %s): give "
                           "--curve-client-key FILE, a secret key whose public key is among its "
                           "curve_clients",
                           server);
    if (cg_key_read(curve.server, server, why, sizeof(why)) < 0) {
        errmsg("%s: %s", opt.curve_server ? "--curve-server-key" : "[daemon] curve_public_key",
               why);
        return EXIT_USAGE;
    }
    if (cg_key_read(curve.secret, opt.curve_client, why, sizeof(why)) < 0) {
        errmsg("--curve-client-key: %s", why);
        return EXIT_USAGE;
    }
    zmq_z85_encode(secret85, curve.secret, 32);
    if (zmq_curve_public(public85, secret85) != 0 ||
        zmq_z85_decode(curve.public_key, public85) == NULL) {
        errmsg("--curve-client-key: cannot derive the public key: %s", zmq_strerror(errno));
        return EXIT_USAGE;
    }
    curve.on = 1;
    return 0;
}

static int parse_ms(int *out, const char *s, const char *what)
{
    int64_t v;
    if (parse_int(&v, s, 1, 86400000) < 0)
        return usage_error("%s \"%s\": expected milliseconds (1 to 86400000)", what, s);
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"endpoint", required_argument, NULL, 'e'},
        {"timeout", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"kind", required_argument, NULL, OPT_KIND},
        {"service-id", required_argument, NULL, OPT_SERVICE},
        {"specification", required_argument, NULL, OPT_SPEC},
        {"description", required_argument, NULL, OPT_DESC},
        {"state", required_argument, NULL, OPT_STATE},
        {"prometheus", no_argument, NULL, OPT_PROM},
        {"log", required_argument, NULL, OPT_LOG},
        {"wait", required_argument, NULL, OPT_WAIT},
        {"curve-client-key", required_argument, NULL, OPT_CURVE_CLIENT},
        {"curve-server-key", required_argument, NULL, OPT_CURVE_SERVER},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    const char *cmd;
    int c, rc;

    while ((c = getopt_long(argc, argv, "c:e:t:jhV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            opt.config_path = optarg;
            break;
        case 'e':
            opt.endpoint_opt = optarg;
            break;
        case 't':
            if ((rc = parse_ms(&opt.timeout_ms, optarg, "--timeout")) != 0)
                return rc;
            break;
        case 'j':
            opt.json = 1;
            break;
        case OPT_KIND:
            opt.kind = optarg;
            opt.has_register_opts = 1;
            break;
        case OPT_SERVICE:
            opt.service_id = optarg;
            opt.has_register_opts = 1;
            break;
        case OPT_SPEC:
        case OPT_DESC:
        case OPT_STATE:
            opt.bodies[c - OPT_SPEC] = optarg;
            opt.has_register_opts = 1;
            break;
        case OPT_PROM:
            opt.prometheus = 1;
            break;
        case OPT_LOG:
            opt.log_path = optarg;
            break;
        case OPT_WAIT:
            if ((rc = parse_ms(&opt.wait_ms, optarg, "--wait")) != 0)
                return rc;
            break;
        case OPT_CURVE_CLIENT:
            opt.curve_client = optarg;
            break;
        case OPT_CURVE_SERVER:
            opt.curve_server = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("cgctl %s\n", CG_VERSION);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc)
        return usage_error("no command given");
    cmd = argv[optind];
    if ((opt.log_path) && strcmp(cmd, "start") != 0)
        return usage_error("--log belongs to start");
    if (opt.config_path && opt.endpoint_opt && strcmp(cmd, "start") == 0)
        return usage_error("start takes -c repository.ini, not --endpoint");
    if (opt.config_path) {
        if (cg_config_load(&cfg, opt.config_path) < 0) {
            errmsg("%s", cg_error_last()->message);
            return EXIT_USAGE;
        }
        if (opt.endpoint_opt == NULL && (cfg->listen == NULL || cfg->listen[0] == '\0')) {
            errmsg("%s: [daemon] listen is not set (or give --endpoint)", opt.config_path);
            cg_config_free(cfg);
            return EXIT_USAGE;
        }
    }
    if (opt.endpoint_opt)
        snprintf(endpoint, sizeof(endpoint), "%s", opt.endpoint_opt);
    else if (cfg)
        client_endpoint(endpoint, sizeof(endpoint), cfg->listen);
    else
        return usage_error("no endpoint: give -c repository.ini or --endpoint EP");
    if ((rc = load_curve()) != 0) {
        cg_config_free(cfg);
        return rc;
    }

    signal(SIGPIPE, SIG_IGN);
    if ((zctx = zmq_ctx_new()) == NULL) {
        errmsg("cannot create a ZeroMQ context: %s", zmq_strerror(errno));
        cg_config_free(cfg);
        return EXIT_FAILED;
    }
    rc = dispatch(cmd, argc - optind - 1, argv + optind + 1);
    fflush(stdout);
    zmq_ctx_term(zctx);
    cg_config_free(cfg);
    return rc;
}
