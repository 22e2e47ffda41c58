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
 * timeout): 0 healthy, 1 degraded (the daemon answered, but not healthy), 2 unreachable;
 * and `audit`, which asks every core named by a -c (one per core of the group): 0 every
 * older entry within its core's bound, 1 some past it, 2 incomplete (a core unreachable, an
 * older coregroupd, a live member not named) or bad usage.
 *
 * start and stop are idempotent, as the Sun Cluster API guide asks of a data service's start
 * and stop methods: starting a running daemon prints "already running" and stopping a stopped
 * one prints "not running", both with status 0. `start` runs coregroupd (found next to cgctl,
 * i.e. in the directory of /proc/self/exe, else on PATH) in a new session with its output
 * appended to a log file, and returns once the daemon answers a health request.
 *
 * The commands are one table (`commands`, near the end): each row holds a command's name, its
 * arguments, its help text, the options it takes, and either a request builder (which fills
 * the daemon's own request struct, cg_request from daemon_request.h, from the arguments) with
 * the printer of its reply, or a function for the commands that are more than one request
 * (health's exit codes, send, start, stop). `--help` lists the commands from the table, and
 * usage errors quote its synopses. Every request goes out through cg_request_encode(), the
 * encoder that sits beside the daemon's decoder and is checked by it, so cgctl cannot send what
 * a daemon of its version would refuse as malformed; only `send` (raw text, by design) and a
 * `multi` file the decoder refuses (sent as given, so that the daemon's own refusal, with its
 * field and index, is what the user sees) bypass it.
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
#include "coregroup/sys/clock.h"
#include "curve.h"
#include "daemon_request.h"
#include "metrics_http.h"
#include "pidfile.h"
#include "proglog.h"
#include "stats_metrics.h"

enum { EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

#define DEFAULT_TIMEOUT_MS 2000
#define DEFAULT_WAIT_MS    30000
#define MAX_FILE           (2 << 20) /* a multi file: the daemon takes 1 MiB */

static struct {
    const char *config_path, *endpoint_opt, *log_path, *curve_client, *curve_server;
    int timeout_ms, wait_ms, json, prometheus;
    const char *kind, *service_id, *bodies[3];
    int has_register_opts;
    int64_t audit_max; /* audit --max */
    int has_max;
} opt = {.timeout_ms = DEFAULT_TIMEOUT_MS,
         .wait_ms = DEFAULT_WAIT_MS,
         .audit_max = CG_REQ_AUDIT_DEFAULT};

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
    va_start(ap, fmt);
    cg_prog__vline(stderr, "cgctl", NULL, NULL, fmt, ap);
    va_end(ap);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- usage errors ------------------------------------------------------------------------ */

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    errmsg("%s (try cgctl --help)", text);
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

/* A new request of `op` with this run's next id, "cgctl-PID-N", and the decoder's defaults
 * (every part, the root folder); the builder fills in the op's fields. Whatever strings it
 * gets are the request's: release it with cg_request_dispose(). */
static void request_init(cg_request *req, cg_req_op op)
{
    memset(req, 0, sizeof(*req));
    req->id_type = CG_REQ_ID_STRING;
    snprintf(req->id_str, sizeof(req->id_str), "cgctl-%ld-%lu", (long)getpid(), ++next_id);
    req->item.op = op;
    req->item.part = -1;
    req->item.folder = CG_ROOT_FOLDER;
    req->op_index = -1;
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

/* Send request text; 0 with *reply (parsed; caller frees) and *text (raw; caller frees), or
 * an exit status after a message. */
static int call_text(const char *body, size_t body_len, int timeout_ms, cJSON **reply, char **text,
                     int quiet)
{
    char why[1200];
    size_t len;
    int r;

    *reply = NULL;
    *text = NULL;
    r = exchange(endpoint, body, body_len, timeout_ms, text, &len, why, sizeof(why));
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

/* Encode `req` (cg_request_encode) and send it, as call_text(). The encoder refuses only what
 * the daemon's decoder would refuse (an argument that is not UTF-8, say): that is a failed
 * request, exit 1, after the decoder's message as the daemon would have sent it back. */
static int call(const cg_request *req, int timeout_ms, cJSON **reply, char **text, int quiet)
{
    char *body;
    size_t len;
    int err, rc;

    *reply = NULL;
    *text = NULL;
    if ((err = cg_request_encode(&body, &len, req)) < 0) {
        errmsg("%s: %s", err == CG_EINVALID ? "invalid" : "error", cg_error_last()->message);
        return EXIT_FAILED;
    }
    rc = call_text(body, len, timeout_ms, reply, text, quiet);
    free(body);
    return rc;
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

/* The outcome of an exchange (rc from call or call_text): the raw reply with --json, else
 * `printer` on success; the error on failure. Frees reply and text. Returns the exit status. */
static int report(int rc, cJSON *reply, char *text, void (*printer)(const cJSON *reply))
{
    if (rc == 0) {
        if (opt.json)
            printf("%s\n", text);
        if (reply_ok(reply)) {
            if (!opt.json && printer)
                printer(reply);
        } else {
            print_error(reply);
            rc = EXIT_FAILED;
        }
    }
    cJSON_Delete(reply);
    free(text);
    return rc;
}

/* Send `req`, print the outcome with `printer` on success. Returns the exit status. */
static int run(const cg_request *req, void (*printer)(const cJSON *reply))
{
    cJSON *reply;
    char *text;
    int rc = call(req, opt.timeout_ms, &reply, &text, 0);
    return report(rc, reply, text, printer);
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

/* One line per field of the stats object, named as coregroupd's /metrics names it: the table is
 * coregroup/stats_metrics.c (counters end in _total; milliseconds are exported in seconds). */
static void print_prometheus(const cJSON *r)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "stats"), *e;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(r, "daemon");
    char core[200], group[200], labels[512];

    snprintf(labels, sizeof(labels), "core=\"%s\",group=\"%s\"",
             cg_metrics__label(core, sizeof(core), str_of(r, "core")),
             cg_metrics__label(group, sizeof(group), str_of(r, "group")));
    cJSON_ArrayForEach(e, st)
    {
        const cg_stat_metric *m = cg_stat_metric_find(e->string);
        char name[160];
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
               cg_metrics__label(core, sizeof(core), e->string), (long long)e->valuedouble);
}

/* ---- health ------------------------------------------------------------------------------ */

/* Print prefix and `s` quoted as every program quotes a value (proglog.c: backslash and quote
 * escaped, anything else not printable ASCII as ?), so that the health line stays one line of
 * key=value pairs. Nothing is clipped. */
static void print_quoted(const char *prefix, const char *s)
{
    size_t size = 2 * strlen(s) + 8;
    char *q = malloc(size);
    if (q == NULL)
        return;
    printf("%s%s", prefix, cg_prog__quoted(q, size, s, SIZE_MAX));
    free(q);
}

/* health: exit 0 healthy, 1 degraded, 2 unreachable. The line names the freshness proof's age
 * and its bound, and when the core is not healthy why: the reply's reason, and the error's
 * message unless that already contains the reason. */
static int cmd_health(int argc, char **argv)
{
    cg_request req;
    cJSON *reply = NULL;
    char *text = NULL;
    int rc;

    (void)argc, (void)argv;
    request_init(&req, CG_OP_HEALTH);
    rc = call(&req, opt.timeout_ms, &reply, &text, 0);
    cg_request_dispose(&req);
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
    cg_request req;
    cJSON *reply = NULL;
    char *text = NULL;
    int rc;

    request_init(&req, CG_OP_HEALTH);
    rc = call(&req, timeout_ms, &reply, &text, 1);
    cg_request_dispose(&req);
    if (rc == 0 && core_name)
        snprintf(core_name, n, "%s", str_of(reply, "core") ? str_of(reply, "core") : "");
    cJSON_Delete(reply);
    free(text);
    return rc == 0;
}

/* ---- start and stop ---------------------------------------------------------------------- */

/* Is process `pid` gone (or no longer the one the pid file names)? */
static int gone(long pid, const char *pidfile)
{
    return cg_prog__pidfile_live(pidfile) != pid;
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

static int cmd_start(int argc, char **argv)
{
    char path[PATH_MAX], logp[PATH_MAX], ini[PATH_MAX], core[CG_NAME_MAX + 1] = "";
    char failed[PATH_MAX + 64];
    int64_t deadline = cg_clock_mono_ms() + opt.wait_ms;
    long running, maxfd;
    pid_t pid;

    (void)argc, (void)argv;
    if (opt.config_path == NULL)
        return usage_error("start needs -c repository.ini (the daemon's configuration)");
    if ((running = cg_prog__pidfile_live(cfg->pidfile)) == 0 &&
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
        while (cg_clock_mono_ms() < deadline && !gone(running, cfg->pidfile))
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
    while (cg_clock_mono_ms() < deadline) {
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

static int cmd_stop(int argc, char **argv)
{
    const char *pidfile = cfg ? cfg->pidfile : NULL;
    long pid = cg_prog__pidfile_live(pidfile);
    int64_t deadline = cg_clock_mono_ms() + opt.wait_ms;
    cg_request req;
    cJSON *reply = NULL;
    char *text = NULL;
    int rc, answered;

    (void)argc, (void)argv;
    request_init(&req, CG_OP_SHUTDOWN);
    rc = call(&req, opt.timeout_ms, &reply, &text, 1);
    cg_request_dispose(&req);
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
        if (cg_clock_mono_ms() >= deadline)
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

/* A JSON argument (a body) as the compact text a request holds, in *out (a new string the
 * request owns). cJSON_Parse takes the first JSON value of the text, as cgctl always has. 0,
 * or an exit status after a message. */
static int json_arg(char **out, const char *what, const char *text)
{
    cJSON *j = cJSON_Parse(text);
    char *compact;
    if (j == NULL)
        return usage_error("%s: not valid JSON: %s", what, text);
    compact = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    *out = compact ? strdup(compact) : NULL; /* the request's strings are free()d */
    cJSON_free(compact);
    if (*out == NULL) {
        errmsg("out of memory");
        return EXIT_FAILED;
    }
    return 0;
}

/* A string argument copied into the request (which owns *out). 0, or an exit status. */
static int str_arg(char **out, const char *s)
{
    if ((*out = strdup(s)) == NULL) {
        errmsg("out of memory");
        return EXIT_FAILED;
    }
    return 0;
}

static int arg_handle(int64_t *out, const char *s, const char *what)
{
    if (parse_int(out, s, 0, CG_REQ_INT_MAX) < 0)
        return usage_error("%s \"%s\": expected a handle (an integer, 0 or more)", what, s);
    return 0;
}

static int arg_part(int *out, const char *s)
{
    cg_part_kind k;
    if (cg_part_kind_parse(&k, s) < 0)
        return usage_error("part \"%s\": expected specification, description or state", s);
    *out = (int)k;
    return 0;
}

/* ---- request builders: fill the op's fields of req (request_init) from the arguments, whose
 * number the table has checked. 0, or an exit status after a message. ---------------------- */

static int build_register(cg_request *req, int argc, char **argv)
{
    static const char *const keys[CG_PART_COUNT] = {"specification", "description", "state"};
    cg_req_item *it = &req->item;
    int rc = 0, k;
    (void)argc, (void)argv;
    if (opt.kind)
        rc = str_arg(&it->kind, opt.kind);
    if (rc == 0 && opt.service_id)
        rc = str_arg(&it->service_id, opt.service_id);
    for (k = 0; rc == 0 && k < CG_PART_COUNT; k++)
        if (opt.bodies[k])
            rc = json_arg(&it->bodies[k], keys[k], opt.bodies[k]);
    return rc;
}

static int build_get(cg_request *req, int argc, char **argv)
{
    int rc;
    if ((rc = arg_handle(&req->item.handle, argv[0], "HANDLE")) != 0)
        return rc;
    return argc == 2 ? arg_part(&req->item.part, argv[1]) : 0;
}

static int build_update(cg_request *req, int argc, char **argv)
{
    cg_req_item *it = &req->item;
    int rc;
    (void)argc;
    if ((rc = arg_handle(&it->handle, argv[0], "HANDLE")) != 0 ||
        (rc = arg_part(&it->part, argv[1])) != 0)
        return rc;
    if (parse_int(&it->expected, argv[2], 1, CG_REQ_INT_MAX) < 0)
        return usage_error("EXPECTED \"%s\": expected a version (an integer, 1 or more)", argv[2]);
    return json_arg(&it->body, "JSON", argv[3]);
}

static int build_unregister(cg_request *req, int argc, char **argv)
{
    (void)argc;
    return arg_handle(&req->item.handle, argv[0], "HANDLE");
}

static int build_bind(cg_request *req, int argc, char **argv)
{
    cg_req_item *it = &req->item;
    int rc;
    (void)argc;
    if ((rc = arg_handle(&it->folder, argv[0], "FOLDER")) != 0 ||
        (rc = arg_handle(&it->target, argv[2], "TARGET")) != 0)
        return rc;
    return str_arg(&it->name, argv[1]);
}

/* unbind and lookup: [FOLDER] NAME */
static int build_name_in_folder(cg_request *req, int argc, char **argv)
{
    int rc;
    if (argc == 2 && (rc = arg_handle(&req->item.folder, argv[0], "FOLDER")) != 0)
        return rc;
    return str_arg(&req->item.name, argv[argc - 1]);
}

static int build_list(cg_request *req, int argc, char **argv)
{
    return argc == 1 ? arg_handle(&req->item.folder, argv[0], "FOLDER") : 0;
}

static int build_find(cg_request *req, int argc, char **argv)
{
    (void)argc;
    return str_arg(&req->item.service_id, argv[0]);
}

static int build_stats(cg_request *req, int argc, char **argv)
{
    (void)req, (void)argc, (void)argv;
    if (opt.prometheus && opt.json)
        return usage_error("--prometheus and --json exclude each other");
    return 0;
}

static void print_stats_reply(const cJSON *r)
{
    if (opt.prometheus)
        print_prometheus(r);
    else
        print_stats(r);
}

/* ---- commands that are more than one request ---------------------------------------------- */

/* multi FILE|-: the file's array of operations, run as one call. The request is decoded here by
 * the daemon's own decoder and goes out through the encoder; a file the decoder refuses goes as
 * given, so that the daemon's refusal (code invalid, naming the field and the operation's
 * index) is what the user sees, as it always was. */
static int cmd_multi(int argc, char **argv)
{
    cg_request req, decoded;
    cJSON *ops, *wrapper, *reply;
    char *text, *body = NULL, *reply_text;
    size_t len;
    int rc;

    (void)argc;
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
    request_init(&req, CG_OP_MULTI);
    if ((wrapper = cJSON_CreateObject()) != NULL && cJSON_AddRawToObject(wrapper, "v", "1") &&
        cJSON_AddStringToObject(wrapper, "id", req.id_str) &&
        cJSON_AddStringToObject(wrapper, "op", "multi") &&
        cJSON_AddItemToObject(wrapper, "ops", ops)) {
        ops = NULL; /* the wrapper's now */
        body = cJSON_PrintUnformatted(wrapper);
    }
    cJSON_Delete(ops);
    cJSON_Delete(wrapper);
    if (body == NULL) {
        errmsg("out of memory");
        return EXIT_FAILED;
    }
    if (cg_request_decode(&decoded, body, strlen(body)) == 0) {
        rc = run(&decoded, print_multi);
    } else {
        rc = call_text(body, strlen(body), opt.timeout_ms, &reply, &reply_text, 0);
        rc = report(rc, reply, reply_text, print_multi);
    }
    cg_request_dispose(&decoded);
    cJSON_free(body);
    return rc;
}

/* send JSON|-: a raw request as given (no encoder: sending what a daemon refuses is the point);
 * the reply on stdout; exit 1 unless it says "ok": true. */
static int cmd_send(int argc, char **argv)
{
    char *text, *reply = NULL, why[1200];
    size_t len, rlen;
    cJSON *parsed;
    int rc;

    (void)argc;
    if (strcmp(argv[0], "-") == 0) {
        if ((text = read_all("-", &len)) == NULL)
            return EXIT_USAGE;
    } else {
        text = strdup(argv[0]);
        len = text ? strlen(text) : 0;
    }
    rc = text ? exchange(endpoint, text, len, opt.timeout_ms, &reply, &rlen, why, sizeof(why)) : -1;
    free(text);
    if (rc < 0) {
        errmsg("%s", text ? why : "out of memory");
        return rc == -2 ? EXIT_USAGE : EXIT_UNREACHABLE;
    }
    printf("%s\n", reply);
    parsed = cJSON_Parse(reply);
    rc = reply_ok(parsed) ? 0 : EXIT_FAILED;
    cJSON_Delete(parsed);
    free(reply);
    return rc;
}

/* ---- audit: every core of the group --------------------------------------------------------- */

/*
 * cgctl -c a.ini -c b.ini ... audit [--max N]: each -c names one core (cgctl reaches a core
 * only through its repository.ini: [daemon] listen, and its CURVE key). Each core gets one
 * audit request (wire version 2; a daemon that answers "invalid" for field "v" predates it);
 * the first core that answers is asked for the group's members, so a live member no -c named
 * is reported as not audited. Exit: 1 when an older entry is past its core's bound, else 2
 * when any core could not be audited (no answer, an older coregroupd, an error reply, a live
 * member without -c), else 0. A finding beats an incomplete audit: 1 wins over 2.
 */

#define MAX_AUDIT_CORES 16

static const char *audit_inis[MAX_AUDIT_CORES]; /* every -c, in order */
static int n_audit_inis;

typedef struct {
    const char *ini;
    cg_config *cfg; /* the first is main's cfg */
    char endpoint[1024];
    int curve;          /* reach it with CURVE */
    uint8_t server[32]; /* its public key */
    const char *status; /* "ok", "unreachable", "unsupported", "error" */
    char message[1400]; /* why, when not ok */
    cJSON *reply;       /* its audit reply when ok */
} audit_core;

static void client_endpoint(char *out, size_t n, const char *listen);

/* Send req to core c (its endpoint and key), as call() with quiet set. */
static int call_core(const audit_core *c, const cg_request *req, cJSON **reply, char **text)
{
    char saved_ep[sizeof(endpoint)];
    uint8_t saved_server[32];
    int saved_on = curve.on, rc;

    memcpy(saved_ep, endpoint, sizeof(endpoint));
    memcpy(saved_server, curve.server, 32);
    snprintf(endpoint, sizeof(endpoint), "%s", c->endpoint);
    curve.on = c->curve;
    if (c->curve)
        memcpy(curve.server, c->server, 32);
    rc = call(req, opt.timeout_ms, reply, text, 1);
    memcpy(endpoint, saved_ep, sizeof(endpoint));
    memcpy(curve.server, saved_server, 32);
    curve.on = saved_on;
    return rc;
}

/* Load the cores' INIs: one group, distinct names, each with an endpoint (and a key when its
 * endpoint uses CURVE). 0, or an exit status after a message. */
static int audit_load(audit_core *cores, int n)
{
    char why[600];
    int i, j;

    for (i = 0; i < n; i++) {
        audit_core *c = &cores[i];
        c->ini = audit_inis[i];
        if (i == 0) {
            c->cfg = cfg;
        } else if (cg_config_load(&c->cfg, c->ini) < 0) {
            errmsg("%s", cg_error_last()->message);
            return EXIT_USAGE;
        }
        if (c->cfg->listen == NULL || c->cfg->listen[0] == '\0') {
            errmsg("%s: [daemon] listen is not set", c->ini);
            return EXIT_USAGE;
        }
        if (strcmp(c->cfg->group_id, cfg->group_id) != 0)
            return usage_error("%s: core %s is of group %s, %s's of %s: audit one group at a time",
                               c->ini, c->cfg->core_name, c->cfg->group_id, cores[0].ini,
                               cfg->group_id);
        for (j = 0; j < i; j++)
            if (strcmp(cores[j].cfg->core_name, c->cfg->core_name) == 0)
                return usage_error("%s and %s both name core %s", cores[j].ini, c->ini,
                                   c->cfg->core_name);
        client_endpoint(c->endpoint, sizeof(c->endpoint), c->cfg->listen);
        /* CURVE: --curve-server-key for all, else each INI's own key (load_curve did the
         * first and this client's key pair) */
        c->curve = curve.on;
        if (i == 0 || opt.curve_server)
            memcpy(c->server, curve.server, 32);
        else if (c->cfg->daemon_curve_public_key == NULL)
            c->curve = 0;
        else if (!curve.on)
            return usage_error("%s: core %s's endpoint uses CURVE: give --curve-client-key (and "
                               "the first -c must be a CURVE core too, or --curve-server-key)",
                               c->ini, c->cfg->core_name);
        else if (cg_key_read(c->server, c->cfg->daemon_curve_public_key, why, sizeof(why)) < 0) {
            errmsg("%s: [daemon] curve_public_key: %s", c->ini, why);
            return EXIT_USAGE;
        }
    }
    return 0;
}

/* Ask core c for its audit and classify the outcome. */
static void audit_one(audit_core *c, int64_t max)
{
    const cJSON *e;
    cg_request req;
    cJSON *reply = NULL;
    char *text = NULL;
    const char *code, *field, *served;
    int rc;

    request_init(&req, CG_OP_AUDIT);
    req.item.max = max;
    rc = call_core(c, &req, &reply, &text);
    cg_request_dispose(&req);
    free(text);
    c->status = "error";
    if (rc == EXIT_UNREACHABLE) {
        c->status = "unreachable";
        snprintf(c->message, sizeof(c->message), "no answer from %s within %d ms", c->endpoint,
                 opt.timeout_ms);
    } else if (rc != 0) {
        snprintf(c->message, sizeof(c->message), "no usable reply from %s", c->endpoint);
    } else if (!reply_ok(reply)) {
        e = cJSON_GetObjectItemCaseSensitive(reply, "error");
        code = str_of(e, "code");
        field = str_of(e, "field");
        if (code && strcmp(code, "invalid") == 0 && field && strcmp(field, "v") == 0) {
            c->status = "unsupported";
            snprintf(c->message, sizeof(c->message),
                     "core %s does not support audit (an older coregroupd)", c->cfg->core_name);
        } else {
            snprintf(c->message, sizeof(c->message), "%s: %s", code ? code : "error",
                     str_of(e, "message") ? str_of(e, "message") : "(no message)");
        }
    } else if ((served = str_of(reply, "core")) == NULL || strcmp(served, c->cfg->core_name) != 0) {
        snprintf(c->message, sizeof(c->message), "%s is served by core %s, not %s", c->endpoint,
                 served ? served : "?", c->cfg->core_name);
    } else {
        c->status = "ok";
        c->reply = reply;
        reply = NULL;
    }
    cJSON_Delete(reply);
}

/* The live members (joining, alive, suspect) of the group that no -c named: a new array of
 * names, or NULL when no core answered `members`. */
static cJSON *audit_unaudited(const audit_core *cores, int n)
{
    cJSON *out = NULL, *reply = NULL;
    const cJSON *m;
    int i, j;

    for (i = 0; i < n && out == NULL; i++) {
        cg_request req;
        char *text = NULL;
        int rc;
        if (strcmp(cores[i].status, "unreachable") == 0)
            continue;
        request_init(&req, CG_OP_MEMBERS);
        rc = call_core(&cores[i], &req, &reply, &text);
        cg_request_dispose(&req);
        free(text);
        if (rc == 0 && reply_ok(reply) && (out = cJSON_CreateArray()) != NULL) {
            cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(reply, "members"))
            {
                const char *name = str_of(m, "name"), *state = str_of(m, "state");
                int given = 0;
                if (name == NULL || state == NULL ||
                    (strcmp(state, "alive") != 0 && strcmp(state, "joining") != 0 &&
                     strcmp(state, "suspect") != 0))
                    continue;
                for (j = 0; j < n; j++)
                    given |= strcmp(cores[j].cfg->core_name, name) == 0;
                if (!given)
                    cJSON_AddItemToArray(out, cJSON_CreateString(name));
            }
        }
        cJSON_Delete(reply);
        reply = NULL;
    }
    return out;
}

/* "12 checked, 11 consistent (91.7%)" */
static void print_fraction(long long checked, long long consistent)
{
    if (checked == 0)
        printf("0 checked (nothing cached)");
    else
        printf("%lld checked, %lld consistent (%.1f%%)", checked, consistent,
               100.0 * (double)consistent / (double)checked);
}

static void print_audit_core(const audit_core *c)
{
    const cJSON *r = c->reply, *e;
    long long past = int_of(r, "past_bound", 0);

    printf("core %s: ", c->cfg->core_name);
    if (r == NULL) {
        printf("%s: %s\n", c->status, c->message);
        return;
    }
    print_fraction(int_of(r, "checked", 0), int_of(r, "consistent", 0));
    printf(", %lld older, %lld past the bound of %lld ms; lease %s", int_of(r, "older", 0), past,
           int_of(r, "max_staleness_ms", -1),
           int_of(r, "lease_fresh", 0) ? "fresh" : "expired (the cache is not served)");
    if (int_of(r, "newer", 0) > 0)
        printf("; %lld NEWER than the repository", int_of(r, "newer", 0));
    putchar('\n');
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "entries"))
    {
        const char *state = str_of(e, "state") ? str_of(e, "state") : "?";
        long long repo = int_of(e, "repository_version", -1), age = int_of(e, "age_ms", -1);
        printf("  %s: handle %lld part %s, cached version %lld, repository ", state,
               int_of(e, "handle", -1), str_of(e, "part") ? str_of(e, "part") : "?",
               int_of(e, "cached_version", -1));
        if (repo < 0)
            printf("gone (deleted)");
        else
            printf("version %lld", repo);
        if (strcmp(state, "older") == 0) {
            if (age < 0)
                printf(", newer version committed at an unknown time (outbox pruned)");
            else
                printf(", newer version committed %lld ms ago", age);
            if (int_of(e, "past_bound", 0))
                printf(" - PAST THE BOUND");
        }
        putchar('\n');
    }
    if (past > 0 && int_of(r, "lease_fresh", 0))
        printf("  VIOLATION: %lld %s past the bound while the lease says fresh\n", past,
               past == 1 ? "entry" : "entries");
}

static int cmd_audit(int argc, char **argv)
{
    audit_core cores[MAX_AUDIT_CORES];
    cJSON *unaudited, *out = NULL, *arr, *tot, *o;
    long long checked = 0, consistent = 0, older = 0, newer = 0, past = 0, violations = 0,
              oldest = -1;
    int n = n_audit_inis, i, audited = 0, incomplete = 0, rc;
    const cJSON *m;

    (void)argc, (void)argv;
    memset(cores, 0, sizeof(cores));
    if (opt.endpoint_opt || n == 0)
        return usage_error("audit reaches the cores through their repository.ini: give -c FILE "
                           "once per core of the group (not --endpoint)");
    if ((rc = audit_load(cores, n)) != 0)
        goto done;
    for (i = 0; i < n; i++) {
        audit_one(&cores[i], opt.audit_max);
        if (cores[i].reply) {
            const cJSON *r = cores[i].reply;
            audited++;
            checked += int_of(r, "checked", 0);
            consistent += int_of(r, "consistent", 0);
            older += int_of(r, "older", 0);
            newer += int_of(r, "newer", 0);
            past += int_of(r, "past_bound", 0);
            violations += int_of(r, "violations", 0);
            if (int_of(r, "oldest_age_ms", -1) > oldest)
                oldest = int_of(r, "oldest_age_ms", -1);
        } else {
            incomplete = 1;
            if (strcmp(cores[i].status, "unsupported") == 0)
                errmsg("%s", cores[i].message); /* it names the core */
            else
                errmsg("core %s: %s", cores[i].cfg->core_name, cores[i].message);
        }
    }
    unaudited = audit_unaudited(cores, n);
    if (unaudited == NULL)
        incomplete = 1;
    cJSON_ArrayForEach(m, unaudited)
    {
        incomplete = 1;
        errmsg("core %s is a live member of group %s but was not audited (give -c with its "
               "repository.ini)",
               m->valuestring, cfg->group_id);
    }
    rc = past > 0 ? EXIT_FAILED : incomplete ? EXIT_USAGE : 0;

    if (opt.json) {
        out = cJSON_CreateObject();
        cJSON_AddStringToObject(out, "group", cfg->group_id);
        cJSON_AddNumberToObject(out, "max", (double)opt.audit_max);
        arr = cJSON_AddArrayToObject(out, "cores");
        for (i = 0; i < n; i++) {
            cJSON_AddItemToArray(arr, o = cJSON_CreateObject());
            cJSON_AddStringToObject(o, "core", cores[i].cfg->core_name);
            cJSON_AddStringToObject(o, "ini", cores[i].ini);
            cJSON_AddStringToObject(o, "endpoint", cores[i].endpoint);
            cJSON_AddStringToObject(o, "status", cores[i].status);
            if (cores[i].reply) {
                cJSON_AddItemToObject(o, "audit", cores[i].reply);
                cores[i].reply = NULL;
            } else {
                cJSON_AddStringToObject(o, "message", cores[i].message);
            }
        }
        if (unaudited)
            cJSON_AddItemToObject(out, "not_audited", unaudited);
        else
            cJSON_AddNullToObject(out, "not_audited");
        unaudited = NULL;
        tot = cJSON_AddObjectToObject(out, "total");
        cJSON_AddNumberToObject(tot, "cores", n);
        cJSON_AddNumberToObject(tot, "audited", audited);
        cJSON_AddNumberToObject(tot, "checked", (double)checked);
        cJSON_AddNumberToObject(tot, "consistent", (double)consistent);
        if (checked > 0)
            cJSON_AddNumberToObject(tot, "consistent_fraction",
                                    (double)consistent / (double)checked);
        else
            cJSON_AddNullToObject(tot, "consistent_fraction");
        cJSON_AddNumberToObject(tot, "older", (double)older);
        cJSON_AddNumberToObject(tot, "newer", (double)newer);
        cJSON_AddNumberToObject(tot, "past_bound", (double)past);
        cJSON_AddNumberToObject(tot, "violations", (double)violations);
        if (oldest >= 0)
            cJSON_AddNumberToObject(tot, "oldest_age_ms", (double)oldest);
        else
            cJSON_AddNullToObject(tot, "oldest_age_ms");
        cJSON_AddNumberToObject(out, "exit", rc);
        print_compact(out);
        putchar('\n');
    } else {
        for (i = 0; i < n; i++)
            print_audit_core(&cores[i]);
        cJSON_ArrayForEach(m, unaudited)
            printf("core %s: not audited (a live member; no -c named it)\n", m->valuestring);
        printf("total: %d of %d cores audited, ", audited, n + cJSON_GetArraySize(unaudited));
        print_fraction(checked, consistent);
        printf(", %lld older, %lld past the bound%s\n", older, past,
               violations > 0 ? ", VIOLATIONS" : "");
        printf("%s\n", rc == 0             ? "within the bound"
                       : rc == EXIT_FAILED ? "PAST THE BOUND"
                                           : "incomplete: not every core could be audited");
    }
    cJSON_Delete(unaudited);
done:
    cJSON_Delete(out);
    for (i = 0; i < n; i++) {
        cJSON_Delete(cores[i].reply);
        if (i > 0)
            cg_config_free(cores[i].cfg);
    }
    return rc;
}

/* ---- the command table ---------------------------------------------------------------------- */

/* Options that belong to one command: a command's row says which of them it takes. */
enum { TAKES_REGISTER_OPTS = 1, TAKES_PROMETHEUS = 2, TAKES_LOG = 4, TAKES_MAX = 8 };

/* Where --help lists a command. */
enum { SECTION_RESOURCES, SECTION_OPERATIONS, SECTIONS };

typedef struct {
    const char *name;
    const char *args; /* its synopsis after the name, for --help and usage errors */
    int min_args, max_args;
    unsigned takes; /* TAKES_*: the command's own options */
    int section;
    const char *help; /* for --help; lines separated by '\n' */
    /* A request command: the request's op, a builder of its fields (NULL: it has none) and the
     * printer of its reply ... */
    cg_req_op op;
    int (*build)(cg_request *req, int argc, char **argv);
    void (*print)(const cJSON *reply);
    /* ... or else the whole command, returning the exit status. */
    int (*run)(int argc, char **argv);
} command;

static const command commands[] = {
    {"register",
     "[--kind K] [--service-id S] [--specification JSON] [--description JSON] [--state JSON]", 0, 0,
     TAKES_REGISTER_OPTS, SECTION_RESOURCES, "create; prints the handle", CG_OP_REGISTER,
     build_register, print_handle, NULL},
    {"get", "HANDLE [PART]", 1, 2, 0, SECTION_RESOURCES,
     "a resource (kind, service id, every part\nwith its version), or one part", CG_OP_GET,
     build_get, print_get, NULL},
    {"update", "HANDLE PART EXPECTED JSON", 4, 4, 0, SECTION_RESOURCES,
     "conditional update; prints the new version\n(stale: exit 1, the reply's \"actual\" is "
     "the\ncurrent version)",
     CG_OP_UPDATE, build_update, print_version, NULL},
    {"unregister", "HANDLE", 1, 1, 0, SECTION_RESOURCES, "delete a resource", CG_OP_UNREGISTER,
     build_unregister, print_unregistered, NULL},
    {"bind", "FOLDER NAME TARGET", 3, 3, 0, SECTION_RESOURCES, "bind a name (folder 0 is the root)",
     CG_OP_BIND, build_bind, print_bound, NULL},
    {"unbind", "[FOLDER] NAME", 1, 2, 0, SECTION_RESOURCES, "remove a binding", CG_OP_UNBIND,
     build_name_in_folder, print_unbound, NULL},
    {"list", "[FOLDER]", 0, 1, 0, SECTION_RESOURCES, "the bindings of a folder", CG_OP_LIST,
     build_list, print_list, NULL},
    {"lookup", "[FOLDER] NAME", 1, 2, 0, SECTION_RESOURCES,
     "resolve a name; prints the target handle", CG_OP_LOOKUP, build_name_in_folder, print_target,
     NULL},
    {"find", "SERVICE_ID", 1, 1, 0, SECTION_RESOURCES, "the handles registered with a service id",
     CG_OP_FIND, build_find, print_find, NULL},
    {"multi", "FILE|-", 1, 1, 0, SECTION_RESOURCES,
     "a JSON array of operations, run as ONE call:\nall or nothing (\"lock\" is only useful "
     "here)",
     CG_OP_MULTI, NULL, NULL, cmd_multi},
    {"send", "JSON|-", 1, 1, 0, SECTION_RESOURCES, "send a raw request as given; print the reply",
     CG_OP_NONE, NULL, NULL, cmd_send},
    {"health", "", 0, 0, 0, SECTION_OPERATIONS,
     "probe with the timeout: exit 0 healthy, 1 degraded,\n2 unreachable (a cluster "
     "fault-monitor probe); prints\nrepository_ok, bus_silent, degraded, fenced, "
     "applied_seq,\nevent_seq, proof_age_ms (the last freshness proof's age;\n-1 none), "
     "max_staleness_ms (its bound) and, when not\nhealthy, reason",
     CG_OP_HEALTH, NULL, NULL, cmd_health},
    {"members", "", 0, 0, 0, SECTION_OPERATIONS,
     "the group's cores: state, incarnation, heartbeat age,\napplied seq and lag", CG_OP_MEMBERS,
     NULL, print_members, NULL},
    {"stats", "[--prometheus]", 0, 0, TAKES_PROMETHEUS, SECTION_OPERATIONS,
     "every counter and gauge of the core (cg_core_stats) and\nthe daemon's; --prometheus "
     "prints the Prometheus text\nexposition format",
     CG_OP_STATS, build_stats, print_stats_reply, NULL},
    {"shutdown", "", 0, 0, 0, SECTION_OPERATIONS,
     "ask the daemon to stop gracefully (its core leaves the group)", CG_OP_SHUTDOWN, NULL,
     print_stopping, NULL},
    {"start", "[--log FILE] [--wait MS]", 0, 0, TAKES_LOG, SECTION_OPERATIONS,
     "run coregroupd -c repository.ini in the background (output\nto FILE; default next to "
     "the pid file, else\n/tmp/coregroupd-CORE.log) and wait until it answers;\n\"already "
     "running\" (exit 0) if it does already",
     CG_OP_NONE, NULL, NULL, cmd_start},
    {"stop", "[--wait MS]", 0, 0, 0, SECTION_OPERATIONS,
     "shutdown, then wait until it is gone; \"not running\" (exit 0)\nif none is", CG_OP_NONE, NULL,
     NULL, cmd_stop},
    {"audit", "[--max N]", 0, 0, TAKES_MAX, SECTION_OPERATIONS,
     "compare a sample of N (default 100, at most 10000)\ncached entries of each core with the "
     "repository; give\n-c repository.ini once per core of the group (a live\nmember without "
     "one is not audited). Per core and in\ntotal: checked, consistent, the older entries with "
     "the\nage of their newer version, and which are past\nmax_staleness_ms. Exit 0 all within "
     "the bound, 1 some\npast it, 2 a core unreachable, not audited or older\nthan audit (or "
     "bad usage); 1 wins over 2",
     CG_OP_AUDIT, NULL, NULL, cmd_audit},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const command *find_command(const char *name)
{
    size_t i;
    for (i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* A usage error for a command option given to a command that does not take it; 0 if none. */
static int check_options(const command *c)
{
    static const struct {
        unsigned bit;
        const char *message;
    } owned[] = {
        {TAKES_REGISTER_OPTS, "--kind, --service-id and the part options belong to register"},
        {TAKES_PROMETHEUS, "--prometheus belongs to stats"},
        {TAKES_LOG, "--log belongs to start"},
        {TAKES_MAX, "--max belongs to audit"},
    };
    unsigned given = (opt.has_register_opts ? TAKES_REGISTER_OPTS : 0u) |
                     (opt.prometheus ? TAKES_PROMETHEUS : 0u) | (opt.log_path ? TAKES_LOG : 0u) |
                     (opt.has_max ? TAKES_MAX : 0u);
    size_t i;
    for (i = 0; i < sizeof(owned) / sizeof(owned[0]); i++)
        if ((given & owned[i].bit) && !(c->takes & owned[i].bit))
            return usage_error("%s", owned[i].message);
    return 0;
}

/* Run command `c` (NULL: `name` is no command) with its arguments. Returns the exit status. */
static int dispatch(const command *c, const char *name, int argc, char **argv)
{
    cg_request req;
    int rc;

    if (c == NULL)
        return usage_error("unknown command \"%s\"", name);
    if (argc < c->min_args || argc > c->max_args)
        return usage_error("usage: cgctl %s%s%s", c->name, c->args[0] ? " " : "", c->args);
    if (c->run)
        return c->run(argc, argv);
    request_init(&req, c->op);
    if ((rc = c->build ? c->build(&req, argc, argv) : 0) == 0)
        rc = run(&req, c->print);
    cg_request_dispose(&req);
    return rc;
}

/* ---- --help --------------------------------------------------------------------------------- */

#define HELP_WIDTH 78

/* One command in --help: "  name args" (wrapped between bracketed arguments when longer than a
 * line, the rest under the arguments), its help from column `col`, beside the synopsis when it
 * fits there, else below it. */
static void help_row(FILE *f, const command *c, int col)
{
    char syn[256];
    const char *piece = syn, *h = c->help, *nl;
    int indent = 2, used;

    snprintf(syn, sizeof(syn), "%s%s%s", c->name, c->args[0] ? " " : "", c->args);
    while (indent + (int)strlen(piece) > HELP_WIDTH) {
        const char *p, *cut = NULL;
        int depth = 0;
        for (p = piece; *p && indent + (p - piece) <= HELP_WIDTH; p++) {
            depth += *p == '[' ? 1 : *p == ']' ? -1 : 0;
            if (*p == ' ' && depth == 0 && p > piece)
                cut = p;
        }
        if (cut == NULL)
            break;
        fprintf(f, "%*s%.*s\n", indent, "", (int)(cut - piece), piece);
        piece = cut + 1;
        indent = 2 + (int)strlen(c->name) + 1;
    }
    used = indent + (int)strlen(piece);
    if (used < col)
        fprintf(f, "%*s%-*s", indent, "", col - indent, piece);
    else
        fprintf(f, "%*s%s\n%*s", indent, "", piece, col, "");
    for (;;) {
        nl = strchr(h, '\n');
        fprintf(f, "%.*s\n", nl ? (int)(nl - h) : (int)strlen(h), h);
        if (nl == NULL)
            break;
        h = nl + 1;
        fprintf(f, "%*s", col, "");
    }
}

static void usage(FILE *f)
{
    static const struct {
        const char *title, *footer;
        int col;
    } sections[SECTIONS] = {
        {"Resources and names (each command is one call, i.e. one transaction):",
         "PART is specification, description or state.\n", 40},
        {"Operations:", "", 25},
    };
    size_t i;
    int s;

    fprintf(f,
            "Usage: cgctl [-c repository.ini | --endpoint EP] [--timeout MS] [--json] COMMAND ...\n"
            "Send requests to coregroupd, the coregroup core daemon (protocol: REQUESTS.md).\n");
    for (s = 0; s < SECTIONS; s++) {
        fprintf(f, "\n%s\n", sections[s].title);
        for (i = 0; i < N_COMMANDS; i++)
            if (commands[i].section == s)
                help_row(f, &commands[i], sections[s].col);
        fputs(sections[s].footer, f);
    }
    fprintf(f,
            "\n"
            "Options:\n"
            "  -c, --config FILE      repository.ini: the endpoint is its [daemon] listen\n"
            "                         (audit: once per core of the group)\n"
            "  -e, --endpoint EP      the daemon's endpoint, e.g. tcp://127.0.0.1:7001\n"
            "  -t, --timeout MS       how long to wait for each reply (default %d)\n"
            "      --curve-client-key FILE\n"
            "                         this client's CURVE secret key (Z85), for a daemon whose\n"
            "                         request endpoint uses CURVE; its public key must be among\n"
            "                         the daemon's [daemon] curve_clients\n"
            "      --curve-server-key FILE\n"
            "                         the daemon's CURVE public key (default: -c's [daemon]\n"
            "                         curve_public_key)\n"
            "  -j, --json             print the daemon's reply object (one line of JSON;\n"
            "                         audit: one object with every core's reply and the totals)\n"
            "  -h, --help             show this help\n"
            "  -V, --version          show the version\n"
            "\n"
            "Exit status: 0 success, 1 the request failed (the daemon answered with an error),\n"
            "2 bad usage, 3 unreachable (no answer within the timeout); health: 0 healthy,\n"
            "1 degraded, 2 unreachable; audit: 0 within the bound, 1 past it, 2 incomplete.\n",
            DEFAULT_TIMEOUT_MS);
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
    OPT_CURVE_SERVER,
    OPT_MAX
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
        {"max", required_argument, NULL, OPT_MAX},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    const command *known;
    const char *cmd;
    int c, rc;

    while ((c = getopt_long(argc, argv, "c:e:t:jhV", opts, NULL)) != -1) {
        switch (c) {
        case 'c': /* several only for audit (checked below); the first is the one loaded */
            if (n_audit_inis < MAX_AUDIT_CORES)
                audit_inis[n_audit_inis] = optarg;
            n_audit_inis++;
            if (opt.config_path == NULL)
                opt.config_path = optarg;
            break;
        case OPT_MAX:
            if (parse_int(&opt.audit_max, optarg, 1, CG_AUDIT_MAX_ENTRIES) < 0)
                return usage_error("--max \"%s\": expected 1 to %d entries", optarg,
                                   CG_AUDIT_MAX_ENTRIES);
            opt.has_max = 1;
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
    if ((known = find_command(cmd)) != NULL && (rc = check_options(known)) != 0)
        return rc;
    if (n_audit_inis > MAX_AUDIT_CORES)
        return usage_error("more than %d -c options", MAX_AUDIT_CORES);
    if (n_audit_inis > 1 && (known == NULL || known->run != cmd_audit))
        return usage_error("-c is given %d times: only audit takes several", n_audit_inis);
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
    rc = dispatch(known, cmd, argc - optind - 1, argv + optind + 1);
    fflush(stdout);
    zmq_ctx_term(zctx);
    cg_config_free(cfg);
    return rc;
}
