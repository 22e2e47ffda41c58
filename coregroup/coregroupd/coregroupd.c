/*
 * coregroupd — the reference core daemon: one core of a core group, serving JSON requests
 * over ZeroMQ (the request protocol is coregroup/REQUESTS.md).
 *
 * It opens the core described by repository.ini (cg_core_open_config: connects the pool,
 * registers the core in its group with a new incarnation, starts the bus), binds a ROUTER on
 * [daemon] listen and answers requests with [daemon] workers worker threads. Every resource
 * or name request is exactly one call (one transaction); a "multi" is one call for all its
 * operations (daemon_ops.c). Decoding is a pure function in its own file
 * (daemon_request.c), fuzzed by fuzz_request.c.
 *
 * Threads and sockets. The main thread is a load-balancing broker: it owns the front ROUTER
 * (clients) and a back ROUTER on inproc:// (workers), and a zmq_poll() loop that also
 * watches a self-pipe for signals (as cg-busd does). Each worker owns one DEALER socket,
 * announces itself ready, and gets exactly one request at a time; the broker reads from the
 * front only while a worker is idle, so a slow call never queues requests behind it while
 * another worker sits idle (a plain DEALER would deal round-robin), and the broker always
 * knows how many requests are in flight. No ZeroMQ socket is ever used by two threads.
 * One exception to "workers execute": a one-part get that the core's cache can answer without
 * waiting (a lock-free hit within the freshness lease) is answered by the broker itself, since
 * the hops to a worker and back cost more than the hit (see "Cached gets" below).
 *
 * Envelopes. A DEALER client sends one frame (the request); a REQ client's socket adds an
 * empty delimiter frame. The reply mirrors the envelope exactly, so both kinds of client
 * work. Any other shape (more frames, a non-empty second frame) is answered by the broker
 * with an "invalid" error; frames beyond four are read and discarded, never buffered.
 *
 * Limits: a request is at most 1 MiB (larger: an "invalid" reply naming the size); frames
 * above 1 MiB + 64 KiB make ZeroMQ drop the connection (ZMQ_MAXMSGSIZE) before the daemon
 * buffers them. Bad input of any kind gets an error reply, is counted and logged at warn,
 * and the daemon keeps serving (invariant I7).
 *
 * Start and stop (Sun Cluster API guide: idempotent start and stop, probes with timeouts):
 *  - The pid file ([daemon] pidfile) is opened and flock()ed before anything else: a live
 *    coregroupd holding the lock, or any live process named by the file, means "already
 *    running" (exit 1); a file nobody holds that names a dead process is stale and is
 *    overwritten. The pid is written right after the endpoint is bound, before the core is
 *    opened, so `cgctl stop` can find a daemon that is still retrying its repository. The
 *    endpoint is bound BEFORE the core is opened: a second daemon configured like the first
 *    fails on the endpoint and never registers an incarnation that would fence the first.
 *    One with another endpoint and pid file but the same core name is refused by the
 *    repository while the first one heartbeats (cg_membership_join): event=already-running,
 *    exit 1.
 *  - SIGTERM, SIGINT or a "shutdown" request: stop reading requests, let every in-flight
 *    request finish and its reply go out, stop the workers, cg_core_close() (which marks
 *    the core 'left' in its group), remove the pid file, exit 0.
 *
 * Logs: one line per event on stderr, greppable key=value pairs:
 *     coregroupd[core-a]: level=info event=started group=payments listen=tcp://... workers=4
 * at [core] log_level (error, warn, info, debug). Each request is logged at debug, every
 * error reply at warn. Values from clients are quoted, clipped and made printable.
 *
 * Exit status: 0 clean stop (or --help, --version), 1 runtime failure (already running, the
 * endpoint in use, the repository unreachable after the configured retries, ZeroMQ errors),
 * 2 bad usage or a bad repository.ini (the message names file, line and key).
 *
 * Metrics: with [daemon] metrics_listen, Prometheus metrics over HTTP on GET /metrics
 * (metrics.c): everything `stats` says, call latency by op and outcome (measured around each
 * request's execution), and the core's histograms. Its socket is bound with the request
 * endpoint, it answers once the workers run, and it is stopped before anything it reads goes.
 *
 * It deliberately does not daemonize (fork, setsid, chdir): a supervisor (systemd, the
 * cluster framework, or `cgctl start`) does that.
 *
 * Under systemd (coregroupd@.service, Type=notify; invalidation/notify.c, a no-op without
 * libsystemd or NOTIFY_SOCKET): READY=1 once the core has joined its group, the endpoint is
 * bound and the workers wait; STOPPING=1 when it begins to stop. With WatchdogSec= a prober
 * thread calls cg_core_health_get() every half period, and the broker sends WATCHDOG=1 only
 * while the last probe, at most two half periods old, said healthy: a core stuck degraded,
 * or a hung broker or probe, is restarted. Health changes are logged and become STATUS=.
 *
 * Security: with [daemon] curve_secret_key, curve_public_key and curve_clients the request
 * ROUTER is a CURVE server and a ZAP handler (curve.c) admits only the listed client keys;
 * refusals are logged as event=client-denied. Without them the endpoint is not
 * authenticated: bind it to a loopback or otherwise private address.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "coregroup/sys/clock.h"
#include "curve.h"
#include "daemon.h"
#include "metrics.h"
#include "coregroup/sys/error.h"
#include "notify.h"
#include "pidfile.h"
#include "program.h"
#include "proglog.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

#define MAX_FRAMES      4 /* routing id, delimiter, body (+1 to see that there are too many) */
#define MAX_WORKERS     64
#define FRAME_SLACK     (64 * 1024) /* ZMQ_MAXMSGSIZE = CG_REQ_MAX + this */
#define BACKEND         "inproc://coregroupd-workers"
#define FRONT_LINGER_MS 1000 /* at exit, time for the last replies to go out */
#define WORKER_TICK_MS  100  /* a waiting worker checks workers_stop this often */
#define WATCH_MS        1000 /* the broker looks at the core's bus conflicts this often */
#define CONFLICT_LOG_N  100  /* a bus-conflict line at the first one, then once per this many */

/* ---- logging ----------------------------------------------------------------------------- */

static int log_level = 2;
static char log_name[CG_NAME_MAX + 1]; /* the core's name once known */
enum { L_ERROR = CG_PROG_ERROR, L_WARN = CG_PROG_WARN, L_INFO = CG_PROG_INFO, L_DEBUG };

/* One event line on stderr: "coregroupd[NAME]: level=L event=E <rest>" (proglog.c), when
 * [core] log_level wants it. */
static void logev(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logev(int level, const char *event, const char *fmt, ...)
{
    va_list ap;
    if (level > log_level)
        return;
    va_start(ap, fmt);
    cg_prog__vevent(stderr, "coregroupd", log_name, level, event, fmt, ap);
    va_end(ap);
}

/* A value for a log line (proglog.c): in double quotes, '"' and '\' escaped, anything not
 * printable ASCII shown as '?', clipped to 200 characters with "...". */
static const char *quoted(char *buf, size_t bufsz, const char *s)
{
    return cg_prog__quoted(buf, bufsz, s, 200);
}

/* The request's id for a log line: id="x", id=12 or id=- */
static const char *id_text(char *buf, size_t bufsz, const cg_request *req)
{
    char q[300];
    if (req->id_type == CG_REQ_ID_STRING)
        snprintf(buf, bufsz, "%s", quoted(q, sizeof(q), req->id_str));
    else if (req->id_type == CG_REQ_ID_INT)
        snprintf(buf, bufsz, "%lld", (long long)req->id_int);
    else
        snprintf(buf, bufsz, "-");
    return buf;
}

/* ---- signals: a flag and a byte down the self-pipe --------------------------------------- */

static atomic_int stop_requested; /* by a "shutdown" request */
static atomic_int workers_stop;   /* set at exit: every worker returns within WORKER_TICK_MS */
static int sig_fd = -1;           /* the self-pipe of invalidation/program.c */

static void request_stop(void)
{
    atomic_store(&stop_requested, 1);
    cg_prog__wake();
}

/* ---- systemd: READY=1, STOPPING=1, and a watchdog only a healthy core feeds -------------- */

static int64_t wd_ms;              /* cg_notify__watchdog_ms(): 0 when there is no watchdog */
static atomic_llong healthy_until; /* the broker sends WATCHDOG=1 only before this (mono ms) */

/*
 * The health prober thread (started only with a watchdog): every wd_ms, cg_core_health_get(),
 * which may wait on the repository up to its lock timeout and so never runs in the broker. A
 * healthy answer lets the broker feed the watchdog for two more periods; anything else stops
 * it at once, so systemd restarts a core that stays degraded for WatchdogSec (and one whose
 * broker or prober hangs). Changes are logged and shown as the unit's STATUS=.
 */
static void *prober_main(void *arg)
{
    cg_core *core = arg;
    int last = 1; /* READY=1 said "serving" */

    while (!atomic_load(&workers_stop)) {
        cg_core_health h;
        int64_t next;
        int ok = cg_core_health_get(&h, core) == 0;
        char q[400];

        atomic_store(&healthy_until, ok ? cgd_mono_ms() + 2 * wd_ms : 0);
        if (ok != last) {
            if (ok)
                logev(L_INFO, "healthy", "message=\"feeding the systemd watchdog again\"");
            else
                logev(L_WARN, "unhealthy", "reason=%s message=\"not feeding the systemd watchdog\"",
                      quoted(q, sizeof(q), h.reason));
            cg_notify__send("STATUS=%s%s", ok ? "serving" : "degraded: ", ok ? "" : h.reason);
            last = ok;
        }
        for (next = cgd_mono_ms() + wd_ms; cgd_mono_ms() < next && !atomic_load(&workers_stop);)
            nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
    }
    return NULL;
}

/* ---- the pid file ------------------------------------------------------------------------ */

/* pidfile.c; fd is open and locked while we run, -1 without a pid file */
typedef cg_prog__pidfile pidfile;

/* Open and lock the pid file. 0, or the exit status after a log line. */
static int pidfile_lock(pidfile *pf)
{
    long other;
    char q[600];

    switch (cg_prog__pidfile_lock(pf, &other)) {
    case CG_PIDFILE_OURS:
        if (other > 0)
            logev(L_INFO, "stale-pidfile", "pid=%ld pidfile=%s", other,
                  quoted(q, sizeof(q), pf->path));
        return 0;
    case CG_PIDFILE_HELD:
        logev(L_ERROR, "already-running",
              "pid=%ld pidfile=%s message=\"already running (a live coregroupd holds the pid "
              "file)\"",
              other, quoted(q, sizeof(q), pf->path));
        return EXIT_RUNTIME;
    case CG_PIDFILE_NAMES_LIVE:
        logev(L_ERROR, "already-running",
              "pid=%ld pidfile=%s message=\"already running: the pid file names a live process "
              "(remove the file if that process is not a coregroupd)\"",
              other, quoted(q, sizeof(q), pf->path));
        return EXIT_RUNTIME;
    case CG_PIDFILE_EOPEN:
        logev(L_ERROR, "pidfile-failed", "pidfile=%s message=\"cannot open: %s\"",
              quoted(q, sizeof(q), pf->path), strerror(errno));
        return EXIT_RUNTIME;
    default:
        logev(L_ERROR, "pidfile-failed", "pidfile=%s message=\"cannot lock: %s\"",
              quoted(q, sizeof(q), pf->path), strerror(errno));
        return EXIT_RUNTIME;
    }
}

/* Write our pid into the locked file. 0, or the exit status after a log line. */
static int pidfile_write(pidfile *pf)
{
    char q[600];
    if (cg_prog__pidfile_write(pf) < 0) {
        logev(L_ERROR, "pidfile-failed", "pidfile=%s message=\"cannot write: %s\"",
              quoted(q, sizeof(q), pf->path), strerror(errno));
        return EXIT_RUNTIME;
    }
    return 0;
}

/* Remove the pid file we hold (at exit). */
static void pidfile_release(pidfile *pf)
{
    cg_prog__pidfile_release(pf);
}

/* ---- workers ----------------------------------------------------------------------------- */

typedef struct {
    int index;
    pthread_t thread;
    int started;
    void *ctx;
    cgd_env *env;
} worker;

/* Decode, execute, log; the reply text is a new string (free with cJSON_free unless static). */
static char *handle_request(cgd_env *env, int index, const char *data, size_t len)
{
    cg_request req;
    cJSON *reply;
    char *text, idb[320], q[600];
    int64_t t0 = cgd_mono_ms();
    int code = 0;

    if ((code = cg_request_decode(&req, data, len)) < 0) {
        reply = cgd_error_reply(&req, code);
        atomic_fetch_add(&env->malformed, 1);
        logev(L_WARN, "bad-request", "worker=%d id=%s bytes=%zu code=%s field=%s message=%s", index,
              id_text(idb, sizeof(idb), &req), len, cgd_code_name(cgd_code_of(code)),
              req.field[0] ? req.field : "-", quoted(q, sizeof(q), cg_error_last()->message));
    } else {
        int64_t t_exec = cg_clock_mono_us();
        reply = cgd_execute(env, &req, &code);
        cgd_metrics_observe(req.item.op, code, t_exec); /* call latency by op and outcome */
        if (code < 0) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
            const cJSON *ix = cJSON_GetObjectItemCaseSensitive(e, "index");
            char ixb[32] = "";
            if (cJSON_IsRaw(ix) && ix->valuestring)
                snprintf(ixb, sizeof(ixb), " index=%s", ix->valuestring);
            logev(L_WARN, "request-failed", "worker=%d id=%s op=%s code=%s%s message=%s ms=%lld",
                  index, id_text(idb, sizeof(idb), &req), cg_req_op_name(req.item.op),
                  cgd_code_name(cgd_code_of(code)), ixb,
                  quoted(q, sizeof(q),
                         cJSON_IsString(m) && m->valuestring ? m->valuestring : "(none)"),
                  (long long)(cgd_mono_ms() - t0));
        } else {
            logev(L_DEBUG, "request", "worker=%d id=%s op=%s%s%zu code=ok ms=%lld", index,
                  id_text(idb, sizeof(idb), &req), cg_req_op_name(req.item.op),
                  req.item.op == CG_OP_MULTI ? " ops=" : " bytes=",
                  req.item.op == CG_OP_MULTI ? req.n_ops : len, (long long)(cgd_mono_ms() - t0));
        }
    }
    atomic_fetch_add(&env->requests, 1);
    if (code < 0) {
        atomic_fetch_add(&env->errors, 1);
        atomic_fetch_add(&env->by_code[cgd_code_of(code)], 1);
    }
    text = cgd_reply_print(reply);
    cJSON_Delete(reply);
    cg_request_dispose(&req);
    return text;
}

/* Receive one whole message (blocking unless flags has ZMQ_DONTWAIT): up to MAX_FRAMES kept
 * in frames[] (initialised here; the caller closes *n of them), the rest read and discarded;
 * *total gets the number of frames. 1, 0 when none was waiting, -1 on error (errno). */
static int recv_message(void *sock, zmq_msg_t *frames, int *n, int *total, int flags)
{
    int more = 0;
    size_t moresz = sizeof(more);
    *n = *total = 0;
    do {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, *total == 0 ? flags : 0) < 0) {
            int e = errno;
            zmq_msg_close(&m);
            if (*total == 0 && e == EAGAIN)
                return 0;
            while (*n > 0)
                zmq_msg_close(&frames[--*n]);
            errno = e;
            return -1;
        }
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &moresz);
        if (*n < MAX_FRAMES) {
            zmq_msg_init(&frames[*n]);
            zmq_msg_move(&frames[(*n)++], &m);
        }
        zmq_msg_close(&m);
        (*total)++;
    } while (more);
    return 1;
}

static void close_frames(zmq_msg_t *frames, int n)
{
    int i;
    for (i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    void *s = zmq_socket(w->ctx, ZMQ_DEALER);
    char rid[16];
    int zero = 0, tick = WORKER_TICK_MS;

    snprintf(rid, sizeof(rid), "w%d", w->index);
    if (s == NULL || zmq_setsockopt(s, ZMQ_ROUTING_ID, rid, strlen(rid)) < 0 ||
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero)) < 0 ||
        zmq_setsockopt(s, ZMQ_RCVTIMEO, &tick, sizeof(tick)) < 0 || zmq_connect(s, BACKEND) < 0 ||
        zmq_send(s, "", 0, 0) < 0) {
        logev(L_ERROR, "worker-failed", "worker=%d message=\"cannot connect: %s\"", w->index,
              zmq_strerror(errno));
        if (s)
            zmq_close(s);
        return NULL;
    }
    for (;;) {
        zmq_msg_t frames[MAX_FRAMES];
        int n, total, i, r;
        char *reply;

        r = recv_message(s, frames, &n, &total, 0);
        if (r <= 0) {
            if (atomic_load(&workers_stop))
                break;
            if (r == 0 || errno == EINTR)
                continue; /* nothing within a tick */
            break;        /* ETERM */
        }
        if (total < 2) { /* the broker's stop message */
            close_frames(frames, n);
            break;
        }
        reply = handle_request(w->env, w->index, zmq_msg_data(&frames[n - 1]),
                               zmq_msg_size(&frames[n - 1]));
        for (i = 0; i < n - 1; i++) /* the envelope, as it came */
            zmq_msg_send(&frames[i], s, ZMQ_SNDMORE);
        zmq_send(s, reply, strlen(reply), 0);
        if (!cgd_reply_is_static(reply))
            cJSON_free(reply);
        close_frames(frames, n);
    }
    zmq_close(s);
    return NULL;
}

/* ---- the broker -------------------------------------------------------------------------- */

typedef struct {
    void *front, *back;
    int idle[MAX_WORKERS], n_idle; /* worker indexes ready for a request */
    int in_flight;
    int n_started; /* workers whose thread runs: each sends "ready" once, then only replies */
    cgd_env *env;
} broker;

/* Answer a request whose envelope is malformed, from the broker itself. */
static void reply_bad_envelope(broker *b, zmq_msg_t *frames, int n, int total)
{
    cJSON *r;
    char *text;
    int delim = n >= 2 && zmq_msg_size(&frames[1]) == 0;

    cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                 "request: expected one frame (from a DEALER) or an empty delimiter and one frame "
                 "(from a REQ socket), got %d frames",
                 total - 1);
    r = cgd_error_reply(NULL, CG_EINVALID);
    text = cgd_reply_print(r);
    zmq_msg_send(&frames[0], b->front, ZMQ_SNDMORE | ZMQ_DONTWAIT); /* the routing id */
    if (delim)
        zmq_send(b->front, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(b->front, text, strlen(text), ZMQ_DONTWAIT);
    if (!cgd_reply_is_static(text))
        cJSON_free(text);
    cJSON_Delete(r);
    atomic_fetch_add(&b->env->requests, 1);
    atomic_fetch_add(&b->env->errors, 1);
    atomic_fetch_add(&b->env->malformed, 1);
    atomic_fetch_add(&b->env->by_code[cgd_code_of(CG_EINVALID)], 1);
    logev(L_WARN, "bad-request", "frames=%d code=invalid message=\"malformed envelope\"",
          total - 1);
}

/*
 * Cached gets. A one-part "get" whose part the core can serve from its cache without waiting
 * (cgd_execute_cached: invalidation strategy, within the lease, a lock-free hit) is decoded,
 * answered and logged by the broker itself: the four inproc hops to a worker and back, two
 * thread wake-ups and a worker's turn cost more than the hit. Anything else (not a get, not
 * cached, undecodable) goes to a worker untouched, which decodes it again and answers as
 * before. The broker never waits here: a miss is not loaded, it is handed on. 1 when
 * answered, 0 when a worker must take it.
 */
/* 1 when the text holds `quoted` (a string with its quotes) anywhere. */
static int mentions(const char *data, size_t len, const char *quoted)
{
    size_t i, n = strlen(quoted);
    for (i = 0; i + n <= len; i++)
        if (data[i] == '"' && memcmp(data + i, quoted, n) == 0)
            return 1;
    return 0;
}

static int answer_cached(broker *b, zmq_msg_t *frames, int n)
{
    const char *data = zmq_msg_data(&frames[n - 1]);
    size_t len = zmq_msg_size(&frames[n - 1]);
    int64_t t_exec = cg_clock_mono_us();
    cg_request req;
    cJSON *reply = NULL;
    char *text, idb[320];
    int code = 0, i;

    /* cheap, and never wrong the other way: a one-part get says "get" and not "multi" (a
     * multi of gets is one call, run by a worker) */
    if (!mentions(data, len, "\"get\"") || mentions(data, len, "\"multi\""))
        return 0;
    if (cg_request_decode(&req, data, len) == 0)
        reply = cgd_execute_cached(b->env, &req, &code);
    if (reply == NULL) {
        cg_request_dispose(&req);
        return 0;
    }
    cgd_metrics_observe(req.item.op, code, t_exec);
    if (log_level >= L_DEBUG) /* not even the id's text otherwise */
        logev(L_DEBUG, "request", "worker=broker id=%s op=%s bytes=%zu code=ok cached=1 ms=0",
              id_text(idb, sizeof(idb), &req), cg_req_op_name(req.item.op), len);
    text = cgd_reply_print(reply);
    for (i = 0; i < n - 1; i++) /* the envelope, as it came */
        zmq_msg_send(&frames[i], b->front, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(b->front, text, strlen(text), ZMQ_DONTWAIT);
    atomic_fetch_add(&b->env->requests, 1);
    if (!cgd_reply_is_static(text))
        cJSON_free(text);
    cJSON_Delete(reply);
    cg_request_dispose(&req);
    return 1;
}

/* One request from the front: answered here when it is a cached get, else moved to an idle
 * worker. 1 moved (or answered), 0 none waiting, -1 error. */
static int from_front(broker *b)
{
    zmq_msg_t frames[MAX_FRAMES];
    char rid[16];
    int n, total, r, i, w;

    if ((r = recv_message(b->front, frames, &n, &total, ZMQ_DONTWAIT)) <= 0)
        return r;
    if (!(total == 2 || (total == 3 && zmq_msg_size(&frames[1]) == 0))) {
        if (n >= 1)
            reply_bad_envelope(b, frames, n, total);
        close_frames(frames, n);
        return 1;
    }
    if (answer_cached(b, frames, n)) {
        close_frames(frames, n);
        return 1;
    }
    w = b->idle[--b->n_idle];
    snprintf(rid, sizeof(rid), "w%d", w);
    zmq_send(b->back, rid, strlen(rid), ZMQ_SNDMORE);
    for (i = 0; i < n; i++)
        zmq_msg_send(&frames[i], b->back, i + 1 < n ? ZMQ_SNDMORE : 0);
    close_frames(frames, n);
    b->in_flight++;
    return 1;
}

/* One message from a worker: "ready", or a reply for the front. 1, 0 none waiting, -1 error. */
static int from_back(broker *b)
{
    zmq_msg_t frames[MAX_FRAMES];
    int n, total, r, i, w = -1;

    if ((r = recv_message(b->back, frames, &n, &total, ZMQ_DONTWAIT)) <= 0)
        return r;
    if (n >= 1 && zmq_msg_size(&frames[0]) >= 2 && zmq_msg_size(&frames[0]) < 8) {
        char rid[8];
        memcpy(rid, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]));
        rid[zmq_msg_size(&frames[0])] = '\0';
        w = atoi(rid + 1);
    }
    if (w < 0 || w >= MAX_WORKERS) { /* cannot happen: only our workers connect */
        close_frames(frames, n);
        return 1;
    }
    if (total >= 3) { /* a reply: [worker, envelope..., body] */
        for (i = 1; i < n; i++)
            zmq_msg_send(&frames[i], b->front, (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
        b->in_flight--;
    }
    b->idle[b->n_idle++] = w;
    close_frames(frames, n);
    return 1;
}

/*
 * Bus conflicts (invalidation/bus.c): an invalidation whose seq was heard before with other
 * items, a forged or broken publisher on the bus. The library never prints, so the broker
 * looks at the counter every WATCH_MS and writes a warn line at the first conflict and then
 * once per CONFLICT_LOG_N more, so a forger flooding the bus cannot flood the log.
 */
static void watch_conflicts(const broker *b, uint64_t *next_log)
{
    cg_core_stats st;
    cg_core_stats_get(b->env->core, &st);
    if (st.bus_conflicts < *next_log)
        return;
    logev(L_WARN, "bus-conflict",
          "conflicts=%llu message=\"bus invalidations whose seq was heard before with other "
          "items (a forged or broken publisher; consider CURVE on the bus): applied, and each "
          "seq read again from the outbox\"",
          (unsigned long long)st.bus_conflicts);
    *next_log = st.bus_conflicts + CONFLICT_LOG_N;
}

/*
 * Serve until a stop, then drain in-flight requests. 0, or EXIT_RUNTIME on a ZeroMQ error.
 *
 * What each pass polls. Every ZeroMQ socket in a zmq_poll() costs system calls of its own on
 * each pass (its state is asked before and after the wait), and on a small machine a cached
 * get through the broker is mostly system calls. So a socket is polled only while something
 * can arrive on it: the workers' socket while a request is in flight or a started worker has
 * not yet said "ready" (nothing else ever comes from it), the front while a worker is idle.
 * The self-pipe is always polled.
 */
static int serve(broker *b, const char **why)
{
    int stopping = 0, logged_wait = 0;
    int64_t next_wd = 0, next_watch = 0;
    uint64_t next_conflict_log = 1;

    for (;;) {
        zmq_pollitem_t items[3] = {{NULL, sig_fd, ZMQ_POLLIN, 0}};
        int nitems = 1, at_back = -1, at_front = -1, i, r;
        long timeout = stopping ? 1000 : -1;

        if (!stopping && (cg_prog__stop_signal || atomic_load(&stop_requested))) {
            stopping = 1;
            *why = cg_prog__stop_signal == SIGINT    ? "signal=INT"
                   : cg_prog__stop_signal == SIGTERM ? "signal=TERM"
                                                     : "request=shutdown";
            logev(L_INFO, "stopping", "%s in_flight=%d", *why, b->in_flight);
            cg_notify__send("STOPPING=1\nSTATUS=stopping (%s)", *why);
        }
        if (stopping && b->in_flight == 0)
            return 0;
        if (!stopping) {
            int64_t now = cgd_mono_ms();
            if (now >= next_watch) {
                watch_conflicts(b, &next_conflict_log);
                next_watch = now + WATCH_MS;
            }
            timeout = (long)(next_watch - now);
        }
        if (wd_ms > 0) { /* the broker is alive; is the core healthy? (prober_main) */
            int64_t now = cgd_mono_ms();
            if (now >= next_wd) {
                if (now < atomic_load(&healthy_until))
                    cg_notify__watchdog();
                next_wd = now + wd_ms;
            }
            if (timeout < 0 || next_wd - now < timeout)
                timeout = (long)(next_wd - now);
        }
        if (b->in_flight > 0 || b->n_idle < b->n_started) {
            at_back = nitems++;
            items[at_back] = (zmq_pollitem_t){b->back, 0, ZMQ_POLLIN, 0};
        }
        if (!stopping && b->n_idle > 0) {
            at_front = nitems++;
            items[at_front] = (zmq_pollitem_t){b->front, 0, ZMQ_POLLIN, 0};
        }
        if (zmq_poll(items, nitems, timeout) < 0) {
            if (errno == EINTR)
                continue;
            logev(L_ERROR, "poll-failed", "message=\"%s\"", zmq_strerror(errno));
            return EXIT_RUNTIME;
        }
        if (items[0].revents & ZMQ_POLLIN)
            cg_prog__drain();
        /* zmq_poll reports a socket readable while it holds a message: a socket it did not
         * report is not asked (each ask costs the socket a command check) */
        for (i = 0; i < 1024 && at_back >= 0 && (items[at_back].revents & ZMQ_POLLIN); i++)
            if ((r = from_back(b)) <= 0) {
                if (r < 0 && errno != EINTR) {
                    logev(L_ERROR, "receive-failed", "socket=workers message=\"%s\"",
                          zmq_strerror(errno));
                    return EXIT_RUNTIME;
                }
                break;
            }
        if (stopping && b->in_flight > 0 && !logged_wait) {
            logev(L_INFO, "draining", "in_flight=%d", b->in_flight);
            logged_wait = 1;
        }
        if (at_front >= 0 && (items[at_front].revents & ZMQ_POLLIN) && !cg_prog__stop_signal &&
            !atomic_load(&stop_requested))
            while (b->n_idle > 0)
                if ((r = from_front(b)) <= 0) {
                    if (r < 0 && errno != EINTR) {
                        logev(L_ERROR, "receive-failed", "socket=front message=\"%s\"",
                              zmq_strerror(errno));
                        return EXIT_RUNTIME;
                    }
                    break;
                }
    }
}

/* ---- startup ----------------------------------------------------------------------------- */

static int setopt_int(void *sock, int opt, int value)
{
    return zmq_setsockopt(sock, opt, &value, sizeof(value));
}

/* Create and bind the front ROUTER, a CURVE server when `secret` is given. 0, or the exit
 * status after a log line. */
static int bind_front(void **out, void *ctx, const char *endpoint, const uint8_t *secret)
{
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    int64_t maxsize = (int64_t)CG_REQ_MAX + FRAME_SLACK;
    char q[600];
    int e;

    *out = s;
    if (s == NULL || setopt_int(s, ZMQ_LINGER, 0) < 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxsize, sizeof(maxsize)) < 0 ||
        setopt_int(s, ZMQ_HEARTBEAT_IVL, 5000) < 0 ||
        setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, 15000) < 0 ||
        (secret && (setopt_int(s, ZMQ_CURVE_SERVER, 1) < 0 ||
                    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, secret, 32) < 0))) {
        logev(L_ERROR, "socket-failed", "message=\"%s\"", zmq_strerror(errno));
        return EXIT_RUNTIME;
    }
    if (cg_prog__ipc_in_use(endpoint)) {
        logev(L_ERROR, "bind-failed",
              "listen=%s message=\"endpoint in use: a live process listens on that socket "
              "file\"",
              quoted(q, sizeof(q), endpoint));
        return EXIT_RUNTIME;
    }
    if (zmq_bind(s, endpoint) < 0) {
        e = errno;
        logev(L_ERROR, "bind-failed", "listen=%s message=\"%s%s\"", quoted(q, sizeof(q), endpoint),
              e == EADDRINUSE ? "endpoint in use: " : "cannot bind: ", zmq_strerror(e));
        return e == EINVAL || e == EPROTONOSUPPORT || e == ENOCOMPATPROTO || e == ENODEV
                   ? EXIT_USAGE
                   : EXIT_RUNTIME;
    }
    return 0;
}

/* The ZAP handler's report of a refused client (at most one line a second). */
static void log_denied(void *arg, const char *key, const char *address,
                       unsigned long long unreported)
{
    char q[600];
    (void)arg;
    logev(L_WARN, "client-denied", "key=%s address=%s unreported=%llu", key[0] ? key : "-",
          quoted(q, sizeof(q), address), unreported);
}

/* One bad-config line naming the file and the [daemon] key; returns EXIT_USAGE. */
static int curve_config_error(const cg_config *cfg, const char *key, const char *why)
{
    char text[1200], q[1300];
    snprintf(text, sizeof(text), "%s: [daemon] %s: %s", cfg->source ? cfg->source : "-", key, why);
    logev(L_ERROR, "bad-config", "message=%s", quoted(q, sizeof(q), text));
    return EXIT_USAGE;
}

/* Read [daemon]'s CURVE key pair and client list. 0, or the exit status after a log line. */
static int load_curve(const cg_config *cfg, uint8_t secret[32], cg_keylist *clients)
{
    uint8_t pub[32];
    char why[600];

    if (!zmq_has("curve")) {
        logev(L_ERROR, "curve-unavailable", "message=\"this libzmq was built without CURVE\"");
        return EXIT_RUNTIME;
    }
    if (cg_key_read(secret, cfg->daemon_curve_secret_key, why, sizeof(why)) < 0)
        return curve_config_error(cfg, "curve_secret_key", why);
    if (cg_key_read(pub, cfg->daemon_curve_public_key, why, sizeof(why)) < 0)
        return curve_config_error(cfg, "curve_public_key", why);
    if (!cg_key_pair_matches(secret, pub))
        return curve_config_error(cfg, "curve_public_key",
                                  "not the public key of [daemon] curve_secret_key");
    if (cg_keylist_load(clients, cfg->daemon_curve_clients, why, sizeof(why)) < 0)
        return curve_config_error(cfg, "curve_clients", why);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: coregroupd -c repository.ini [--foreground]\n"
               "Run one core of a coregroup core group and serve JSON requests on the ZeroMQ\n"
               "endpoint of [daemon] listen (the protocol: coregroup/REQUESTS.md; the client:\n"
               "cgctl).\n"
               "\n"
               "Options:\n"
               "  -c, --config FILE   the core's repository.ini (required): [repository],\n"
               "                      [core] (name, group, log_level), [bus], [retry], [cache],\n"
               "                      [daemon] listen, workers, pidfile, and curve_secret_key,\n"
               "                      curve_public_key, curve_clients to make the endpoint a\n"
               "                      CURVE server admitting only the listed client keys;\n"
               "                      metrics_listen HOST:PORT serves Prometheus metrics\n"
               "                      over HTTP (GET /metrics)\n"
               "  -f, --foreground    run in the foreground (the default and only mode; a\n"
               "                      supervisor or `cgctl start` puts it in the background)\n"
               "  -h, --help          show this help\n"
               "  -V, --version       show the version\n"
               "\n"
               "Signals: SIGTERM or SIGINT stop it gracefully: no new requests, in-flight ones\n"
               "finish, the core leaves its group, the pid file is removed.\n"
               "Logs: one line per event on stderr, \"coregroupd[CORE]: level=... event=...\".\n"
               "\n"
               "Exit status: 0 stopped cleanly, 1 runtime failure (already running, endpoint in\n"
               "use, repository unreachable after the configured retries), 2 bad usage or bad\n"
               "repository.ini.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"foreground", no_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *config_path = NULL, *why = "signal";
    cg_config *cfg = NULL;
    cg_core *core = NULL;
    cgd_env env;
    broker b;
    pidfile pf = {NULL, -1};
    worker workers[MAX_WORKERS];
    cg_keylist clients = {NULL, 0};
    cg_zap zap;
    cgd_metrics *metrics = NULL; /* [daemon] metrics_listen */
    uint8_t secret[32];
    int curve;
    void *ctx = NULL;
    char ep[512], q[600];
    size_t epsz;
    int c, i, rc = 0, err;
    pthread_t prober;
    int prober_started = 0;

    memset(&env, 0, sizeof(env));
    memset(&zap, 0, sizeof(zap));
    memset(&b, 0, sizeof(b));
    memset(workers, 0, sizeof(workers));
    while ((c = getopt_long(argc, argv, "c:fhV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'f':
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("coregroupd %s\n", CG_VERSION);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        logev(L_ERROR, "usage", "message=\"unexpected argument %s\"",
              quoted(q, sizeof(q), argv[optind]));
        return EXIT_USAGE;
    }
    if (config_path == NULL) {
        logev(L_ERROR, "usage", "message=\"-c repository.ini is required\"");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (cg_config_load(&cfg, config_path) < 0) {
        logev(L_ERROR, "bad-config", "message=%s", quoted(q, sizeof(q), cg_error_last()->message));
        return EXIT_USAGE;
    }
    log_level = cfg->log_level;
    snprintf(log_name, sizeof(log_name), "%s", cfg->core_name);
    if (cfg->listen == NULL || cfg->listen[0] == '\0') {
        logev(L_ERROR, "bad-config",
              "message=\"%s: [daemon] listen: missing (the endpoint coregroupd binds, e.g. "
              "tcp://127.0.0.1:7001)\"",
              cfg->source ? cfg->source : config_path);
        cg_config_free(cfg);
        return EXIT_USAGE;
    }
    curve = cfg->daemon_curve_secret_key != NULL;
    if (curve && (rc = load_curve(cfg, secret, &clients)) != 0) {
        cg_config_free(cfg);
        return rc;
    }
    if ((sig_fd = cg_prog__signals(0, 0)) < 0) {
        logev(L_ERROR, "signals-failed", "message=\"%s\"", strerror(errno));
        cg_keylist_dispose(&clients);
        cg_config_free(cfg);
        return EXIT_RUNTIME;
    }
    if (cfg->pidfile && cfg->pidfile[0]) {
        pf.path = cfg->pidfile;
        if ((rc = pidfile_lock(&pf)) != 0)
            goto done;
    }
    if ((ctx = zmq_ctx_new()) == NULL) {
        logev(L_ERROR, "zmq-failed", "message=\"%s\"", zmq_strerror(errno));
        rc = EXIT_RUNTIME;
        goto done;
    }
    if (curve) { /* started before the server socket exists: no handshake can miss it */
        char reason[600];
        if (cg_zap_start(&zap, ctx, &clients, log_denied, NULL, reason, sizeof(reason)) < 0) {
            logev(L_ERROR, "zmq-failed", "message=%s", quoted(q, sizeof(q), reason));
            rc = EXIT_RUNTIME;
            goto done;
        }
    }
    if ((rc = bind_front(&b.front, ctx, cfg->listen, curve ? secret : NULL)) != 0)
        goto done;
    if ((rc = cgd_metrics_bind(&metrics, cfg, logev)) != 0) /* bound now, answering later */
        goto done;
    if (pf.fd >= 0 && (rc = pidfile_write(&pf)) != 0)
        goto done;

    /* The core: joins the group and starts the bus (may retry per [retry]). */
    if ((err = cg_core_open_config(&core, cfg)) < 0) {
        logev(L_ERROR,
              err == CG_EINVALID  ? "bad-config"
              : err == CG_EEXISTS ? "already-running"
                                  : "open-failed",
              "code=%s message=%s", cg_error_name(err),
              quoted(q, sizeof(q), cg_error_last()->message));
        rc = err == CG_EINVALID ? EXIT_USAGE : EXIT_RUNTIME;
        goto done;
    }
    env.core = core;
    env.listen = cfg->listen;
    env.workers = cfg->workers;
    env.started_ms = cgd_mono_ms();
    env.request_stop = request_stop;
    b.env = &env;

    if ((b.back = zmq_socket(ctx, ZMQ_ROUTER)) == NULL || setopt_int(b.back, ZMQ_LINGER, 0) < 0 ||
        zmq_bind(b.back, BACKEND) < 0) {
        logev(L_ERROR, "zmq-failed", "message=\"workers' socket: %s\"", zmq_strerror(errno));
        rc = EXIT_RUNTIME;
        goto done;
    }
    {
        /* Workers never take signals: the main thread's self-pipe does. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        for (i = 0; i < cfg->workers && i < MAX_WORKERS; i++) {
            workers[i].index = i;
            workers[i].ctx = ctx;
            workers[i].env = &env;
            if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
                logev(L_ERROR, "worker-failed", "worker=%d message=\"cannot start a thread\"", i);
                rc = EXIT_RUNTIME;
                break;
            }
            workers[i].started = 1;
            b.n_started++;
        }
        if (rc == 0 && (wd_ms = cg_notify__watchdog_ms()) > 0) {
            if (pthread_create(&prober, NULL, prober_main, core) != 0) {
                logev(L_ERROR, "watchdog-failed", "message=\"cannot start a thread\"");
                rc = EXIT_RUNTIME;
            } else {
                prober_started = 1;
            }
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0)
            goto done;
    }

    if ((rc = cgd_metrics_start(metrics, &env)) != 0)
        goto done;

    epsz = sizeof(ep);
    if (zmq_getsockopt(b.front, ZMQ_LAST_ENDPOINT, ep, &epsz) < 0)
        snprintf(ep, sizeof(ep), "%s", cfg->listen);
    logev(L_INFO, "started",
          "group=%s listen=%s workers=%d incarnation=%lld pid=%ld strategy=%s pidfile=%s "
          "curve=%s clients=%zu version=%s",
          cg_core_group(core), ep, cfg->workers, (long long)cg_core_incarnation(core),
          (long)getpid(), cg_cache_strategy_name(cfg->strategy),
          pf.fd >= 0 ? quoted(q, sizeof(q), pf.path) : "-", curve ? "on" : "off", zap.clients.n,
          CG_VERSION);
    /* Joined, bound, workers waiting: systemd may now start what depends on this core. */
    cg_notify__send("READY=1\nSTATUS=serving group=%s listen=%s", cg_core_group(core), ep);

    rc = serve(&b, &why);

done:
    cgd_metrics_free(metrics); /* first: a scrape reads the core and env */
    /* Stop the workers (each is idle: the broker drained every request; a worker that never
     * connected sees the flag within a tick), then the sockets. */
    atomic_store(&workers_stop, 1);
    for (i = 0; i < MAX_WORKERS; i++)
        if (workers[i].started && b.back) {
            char rid[16];
            snprintf(rid, sizeof(rid), "w%d", i);
            zmq_send(b.back, rid, strlen(rid), ZMQ_SNDMORE);
            zmq_send(b.back, "", 0, 0);
        }
    for (i = 0; i < MAX_WORKERS; i++)
        if (workers[i].started)
            pthread_join(workers[i].thread, NULL);
    if (prober_started)
        pthread_join(prober, NULL); /* within 10 ms, or when its probe returns */
    if (b.front) {
        setopt_int(b.front, ZMQ_LINGER, FRONT_LINGER_MS); /* the last replies go out */
        zmq_close(b.front);
    }
    if (b.back)
        zmq_close(b.back);
    if (ctx) {
        if (zap.running) {
            zmq_ctx_shutdown(ctx); /* wakes the ZAP thread with ETERM */
            cg_zap_join(&zap);
        }
        zmq_ctx_term(ctx);
    }
    cg_keylist_dispose(&clients); /* when the handler never took it over */
    if (core) {
        cg_core_stats st;
        cg_core_stats_get(core, &st);
        cg_core_close(core); /* marks the core 'left' in its group */
        if (rc == 0)
            logev(L_INFO, "stopped", "%s requests=%llu errors=%llu calls_committed=%llu", why,
                  (unsigned long long)atomic_load(&env.requests),
                  (unsigned long long)atomic_load(&env.errors),
                  (unsigned long long)st.calls_committed);
    }
    pidfile_release(&pf);
    cg_config_free(cfg);
    return rc;
}
