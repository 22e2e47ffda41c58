/*
 * bench_daemon — what coregroupd costs over calling the library in-process, on the same
 * database, the same operations and the same number of client threads:
 *
 *   1. get (cached): a "get" of one part whose copy is in the core's cache (no repository
 *      round trip): through coregroupd, each client thread with its own DEALER socket and one
 *      request outstanding, vs cg_part_read() called by as many threads in-process;
 *   2. update: a conditional update of one part (each thread its own resource, so nothing is
 *      stale): through coregroupd vs begin + cg_part_update + commit in-process.
 *
 * Prints requests (calls) per second for both, the overhead ratio, and the daemon's p50/p99
 * request latency. The floor of the transport is measured twice: the same get requests sent to
 * a bare ROUTER that echoes them (no decoding, no worker, no call), once as a thread of this
 * process (its clients and its server share one ZeroMQ context and I/O thread) and once as a
 * process of its own, as coregroupd is (a context and an I/O thread on each side, and the
 * wake-ups between them). The first is ZeroMQ's own floor on loopback; the second is the
 * floor for any server in another process, and the one the daemon is judged by: what is left
 * between it and the daemon is what the daemon adds. The daemon runs with
 * [daemon] workers = the thread count and pool_size the same, log_level warn, no bus (a single
 * core: no invalidation traffic to measure here).
 *
 * The get through coregroupd and the two echoes are measured in --rounds rounds (default 3),
 * one after the other, the order rotated every round, and each figure is the median of its
 * rounds: they are compared as ratios, and this machine's throughput drifts by more than the
 * margins those ratios are judged by.
 *
 * Usage: bench_daemon --dsn DSN --coregroupd PATH [--group G] [--seconds S] [--threads N]
 *        [--rounds R]
 * (DSN: a migrated database, logged in as the login role of group G, default "bench-daemon",
 * e.g. "$CG_TEST_DSN user=cg_bench_daemon" after `cg-migrate map-role cg_bench_daemon
 * bench-daemon`).
 * The machines are shared and small (2 cores, on which daemon and clients compete): read the
 * ratios, not the absolutes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zmq.h>

#include "benchstat.h"
#include "coregroup.h"

#define MAX_THREADS 16
#define MAX_ROUNDS  15
#define GET_KEYS    256
#define LAT_MAX     200000 /* latency samples kept per thread */

static double seconds = 2.0;
static int nthreads = 4;
static const char *dsn, *daemon_bin;
static char endpoint[64], group[64], echo_ep[64], echo_proc_ep[64];
static void *zctx;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_daemon: %s: %s\n", what, detail);
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

/* ---- talking to the daemon ------------------------------------------------------------- */

static void *dealer_to(const char *ep)
{
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    int zero = 0, timeout = 10000;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    if (zmq_connect(s, ep) < 0)
        die("connect", zmq_strerror(errno));
    return s;
}

static void *dealer(void)
{
    return dealer_to(endpoint);
}

/* The transport's floor: a ROUTER that sends every message straight back, until "stop". */
static void *echo_main(void *arg)
{
    void *s = arg;
    char id[256], body[4096];
    for (;;) {
        int n = zmq_recv(s, id, sizeof(id), 0), m;
        if (n < 0)
            break;
        m = zmq_recv(s, body, sizeof(body), 0);
        if (m < 0)
            break;
        if (m == 4 && memcmp(body, "stop", 4) == 0)
            break;
        zmq_send(s, id, (size_t)n, ZMQ_SNDMORE);
        zmq_send(s, body, (size_t)m, 0);
    }
    zmq_close(s);
    return NULL;
}

/* The echo as a process of its own (forked before this process has a ZeroMQ context, which a
 * fork must not inherit): a fresh context with one I/O thread, as coregroupd has. */
static pid_t start_echo_process(const char *ep)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork", strerror(errno));
    if (pid == 0) {
        void *c, *s;
        int zero = 0;
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with this process, even when it dies */
        c = zmq_ctx_new();
        s = zmq_socket(c, ZMQ_ROUTER);
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
        if (zmq_bind(s, ep) < 0)
            _exit(3);
        echo_main(s); /* closes s at "stop" */
        zmq_ctx_term(c);
        _exit(0);
    }
    return pid;
}

/* One request on `s`; the reply in buf (NUL-terminated), its length; dies on no answer. */
static int ask(void *s, const char *req, char *buf, size_t bufsz)
{
    int n;
    if (zmq_send(s, req, strlen(req), 0) < 0)
        die("send", zmq_strerror(errno));
    if ((n = zmq_recv(s, buf, bufsz - 1, 0)) < 0)
        die("no reply from coregroupd", zmq_strerror(errno));
    if (n > (int)bufsz - 1)
        n = (int)bufsz - 1;
    buf[n] = '\0';
    return n;
}

/* ---- the measured loops ------------------------------------------------------------------ */

typedef struct {
    int index;
    int daemon; /* 1: through coregroupd (or the echo thread), 0: the library in-process */
    int echo;   /* 1: to the echo thread, 2: to the echo process */
    int update; /* 1: update, 0: cached get */
    cg_core *core;
    const int64_t *keys; /* get: GET_KEYS handles */
    int64_t own;         /* update: this thread's resource */
    int64_t version;     /* update: its current state version */
    pthread_barrier_t *start;
    double t_end;
    uint64_t ops;
    float *lat_us; /* daemon: per-request latencies (the first LAT_MAX) */
    size_t n_lat;
} worker;

static void *run(void *arg)
{
    worker *w = arg;
    void *s = w->echo == 2 ? dealer_to(echo_proc_ep)
              : w->echo    ? dealer_to(echo_ep)
              : w->daemon  ? dealer()
                           : NULL;
    char req[256], buf[4096];
    uint64_t i = 0;

    pthread_barrier_wait(w->start);
    do {
        double t0 = w->daemon ? now() : 0;
        int b;
        for (b = 0; b < 16; b++, i++) {
            if (!w->update) {
                int64_t h = w->keys[mix(i * MAX_THREADS + (uint64_t)w->index) % GET_KEYS];
                if (w->daemon) {
                    snprintf(req, sizeof(req),
                             "{\"v\":1,\"id\":%" PRIu64 ",\"op\":\"get\",\"handle\":%" PRId64
                             ",\"part\":\"state\"}",
                             i, h);
                    ask(s, req, buf, sizeof(buf));
                    if (!w->echo && strstr(buf, "\"ok\":true") == NULL)
                        die("get", buf);
                } else {
                    cg_part *p;
                    if (cg_part_read(&p, w->core, h, CG_PART_STATE) < 0)
                        die("cg_part_read", cg_error_last()->message);
                    cg_part_free(p);
                }
            } else {
                if (w->daemon) {
                    const char *v;
                    snprintf(req, sizeof(req),
                             "{\"v\":1,\"id\":%" PRIu64 ",\"op\":\"update\",\"handle\":%" PRId64
                             ",\"part\":\"state\",\"expected\":%" PRId64 ",\"body\":{\"n\":%" PRIu64
                             "}}",
                             i, w->own, w->version, i);
                    ask(s, req, buf, sizeof(buf));
                    if ((v = strstr(buf, "\"version\":")) == NULL || !strstr(buf, "\"ok\":true"))
                        die("update", buf);
                    w->version = strtoll(v + 10, NULL, 10);
                } else {
                    cg_call *call;
                    char body[64];
                    int64_t nv;
                    snprintf(body, sizeof(body), "{\"n\":%" PRIu64 "}", i);
                    if (cg_call_begin(&call, w->core) < 0 ||
                        cg_part_update(&nv, call, w->own, CG_PART_STATE, w->version, body) < 0 ||
                        cg_call_commit(call) < 0)
                        die("update call", cg_error_last()->message);
                    w->version = nv;
                }
            }
            if (w->daemon && w->n_lat < LAT_MAX) {
                double t1 = now();
                w->lat_us[w->n_lat++] = (float)((t1 - t0) * 1e6);
                t0 = t1;
            }
        }
    } while (now() < w->t_end);
    w->ops = i;
    if (s)
        zmq_close(s);
    return NULL;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Run nthreads workers for `seconds`: ops/s; p50/p99 latencies (µs) for the daemon. */
static double measure(worker *proto, int64_t *own, int64_t *versions, double *p50, double *p99)
{
    pthread_t th[MAX_THREADS];
    worker w[MAX_THREADS];
    pthread_barrier_t start;
    double t0, el;
    uint64_t total = 0;
    size_t n = 0, k;
    float *all = NULL;
    int i;

    pthread_barrier_init(&start, NULL, (unsigned)nthreads + 1);
    for (i = 0; i < nthreads; i++) {
        w[i] = *proto;
        w[i].index = i;
        w[i].start = &start;
        w[i].own = own ? own[i] : 0;
        w[i].version = versions ? versions[i] : 0;
        w[i].lat_us = proto->daemon ? malloc(LAT_MAX * sizeof(float)) : NULL;
        w[i].n_lat = 0;
        pthread_create(&th[i], NULL, run, &w[i]);
    }
    t0 = now();
    for (i = 0; i < nthreads; i++)
        w[i].t_end = t0 + seconds; /* before the barrier releases them */
    pthread_barrier_wait(&start);
    t0 = now();
    for (i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        total += w[i].ops;
        n += w[i].n_lat;
        if (versions)
            versions[i] = w[i].version;
    }
    el = now() - t0;
    *p50 = *p99 = 0;
    if (proto->daemon && n > 0 && (all = malloc(n * sizeof(float))) != NULL) {
        for (i = 0, k = 0; i < nthreads; i++) {
            memcpy(all + k, w[i].lat_us, w[i].n_lat * sizeof(float));
            k += w[i].n_lat;
        }
        qsort(all, n, sizeof(float), cmp_float);
        *p50 = all[n / 2];
        *p99 = all[n * 99 / 100];
    }
    free(all);
    for (i = 0; i < nthreads; i++)
        free(w[i].lat_us);
    pthread_barrier_destroy(&start);
    return (double)total / el;
}

/* ---- setup ------------------------------------------------------------------------------- */

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        die("free port", strerror(errno));
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Start coregroupd on a fresh repository.ini; returns its pid once it answers. */
static pid_t start_daemon(const char *dir)
{
    char ini[512], log[512], text[2048], buf[4096];
    int64_t deadline;
    pid_t pid;
    FILE *f;
    void *s;

    snprintf(ini, sizeof(ini), "%s/bench.ini", dir);
    snprintf(log, sizeof(log), "%s/coregroupd.log", dir);
    snprintf(text, sizeof(text),
             "[repository]\ndsn = %s\npool_size = %d\n[core]\nname = bench-daemon\ngroup = %s\n"
             "log_level = warn\n[daemon]\nlisten = %s\nworkers = %d\n",
             dsn, nthreads, group, endpoint, nthreads);
    if ((f = fopen(ini, "w")) == NULL || fputs(text, f) < 0 || fclose(f) != 0)
        die(ini, strerror(errno));
    if ((pid = fork()) == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(daemon_bin, daemon_bin, "-c", ini, (char *)NULL);
        _exit(127);
    }
    s = dealer();
    {
        int t = 200;
        zmq_setsockopt(s, ZMQ_RCVTIMEO, &t, sizeof(t));
    }
    deadline = (int64_t)(now() * 1000) + 20000;
    for (;;) {
        int st;
        zmq_send(s, "{\"v\":1,\"id\":0,\"op\":\"health\"}", 29, 0);
        if (zmq_recv(s, buf, sizeof(buf) - 1, 0) >= 0)
            break;
        if (waitpid(pid, &st, WNOHANG) == pid || (int64_t)(now() * 1000) > deadline) {
            snprintf(text, sizeof(text), "tail -n 5 '%s' >&2", log);
            if (system(text) != 0)
                fprintf(stderr, "(no log)\n");
            die("coregroupd", "did not start");
        }
    }
    zmq_close(s);
    return pid;
}

/* Register GET_KEYS + nthreads resources in one multi; keys[] and own[] get the handles. */
static void populate(int64_t *keys, int64_t *own)
{
    size_t cap = (GET_KEYS + MAX_THREADS) * 64 + 128, n, i;
    char *req = malloc(cap), *reply = malloc(1 << 20);
    void *s = dealer();
    cJSON *r, *e;
    int total = GET_KEYS + nthreads;

    n = (size_t)snprintf(req, cap, "{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[");
    for (i = 0; i < (size_t)total; i++)
        n += (size_t)snprintf(req + n, cap - n, "%s{\"op\":\"register\",\"state\":{\"n\":0}}",
                              i ? "," : "");
    snprintf(req + n, cap - n, "]}");
    ask(s, req, reply, 1 << 20);
    if ((r = cJSON_Parse(reply)) == NULL ||
        !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")))
        die("populate", reply);
    i = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "results"))
    {
        int64_t h = (int64_t)cJSON_GetObjectItemCaseSensitive(e, "handle")->valuedouble;
        if (i < GET_KEYS)
            keys[i] = h;
        else
            own[i - GET_KEYS] = h;
        i++;
    }
    cJSON_Delete(r);
    free(req);
    free(reply);
    zmq_close(s);
}

static void print_pair(const char *what, double d, double lib, double p50, double p99)
{
    printf("%-16s %d threads: coregroupd %10.0f req/s (p50 %6.0f us, p99 %6.0f us)   "
           "in-process %10.0f calls/s   overhead x%.2f\n",
           what, nthreads, d, p50, p99, lib, d > 0 ? lib / d : 0.0);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"dsn", required_argument, NULL, 'd'},
                                         {"coregroupd", required_argument, NULL, 'b'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"rounds", required_argument, NULL, 'r'},
                                         {NULL, 0, NULL, 0}};
    int64_t keys[GET_KEYS], own[MAX_THREADS], versions[MAX_THREADS];
    double d_get, d_upd, l_get, l_upd, e_get, p_get, g50, g99, u50, u99, x50, x99, e50, e99, p50,
        p99;
    double d_r[MAX_ROUNDS], e_r[MAX_ROUNDS], p_r[MAX_ROUNDS], pct_r[MAX_ROUNDS], pctp_r[MAX_ROUNDS];
    void *echo_srv;
    pthread_t echo_th;
    int rounds = 3, r;
    char tmpl[] = "/tmp/bench_daemon.XXXXXX", *dir;
    worker proto;
    cg_config *cfg = NULL;
    cg_core *core = NULL;
    pid_t pid, echo_pid;
    int c, i, st;

    snprintf(group, sizeof(group), "bench-daemon");
    while ((c = getopt_long(argc, argv, "d:b:s:t:g:r:", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dsn = optarg;
            break;
        case 'b':
            daemon_bin = optarg;
            break;
        case 's':
            seconds = atof(optarg);
            break;
        case 't':
            nthreads = atoi(optarg);
            break;
        case 'g':
            snprintf(group, sizeof(group), "%s", optarg);
            break;
        case 'r':
            rounds = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: bench_daemon --dsn DSN --coregroupd PATH [--group G] "
                            "[--seconds S] [--threads N] [--rounds R]\n");
            return 2;
        }
    }
    if (!dsn || !daemon_bin || seconds <= 0 || nthreads < 1 || nthreads > MAX_THREADS ||
        rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr,
                "usage: bench_daemon --dsn DSN --coregroupd PATH [--group G] [--seconds S] "
                "[--threads 1..%d] [--rounds 1..%d]\n",
                MAX_THREADS, MAX_ROUNDS);
        return 2;
    }
    if ((dir = mkdtemp(tmpl)) == NULL)
        die("mkdtemp", strerror(errno));
    snprintf(endpoint, sizeof(endpoint), "tcp://127.0.0.1:%d", free_port());
    snprintf(echo_proc_ep, sizeof(echo_proc_ep), "tcp://127.0.0.1:%d", free_port());
    echo_pid = start_echo_process(echo_proc_ep);
    zctx = zmq_ctx_new();

    /* the transport's floors: the same get requests, echoed by a bare ROUTER thread here and by
     * the echo process, measured in rounds with the daemon's gets (below) */
    {
        int zero = 0;
        echo_srv = zmq_socket(zctx, ZMQ_ROUTER);
        snprintf(echo_ep, sizeof(echo_ep), "tcp://127.0.0.1:%d", free_port());
        zmq_setsockopt(echo_srv, ZMQ_LINGER, &zero, sizeof(zero));
        if (zmq_bind(echo_srv, echo_ep) < 0)
            die("echo bind", zmq_strerror(errno));
        pthread_create(&echo_th, NULL, echo_main, echo_srv);
    }

    /* through coregroupd */
    pid = start_daemon(dir);
    populate(keys, own);
    for (i = 0; i < nthreads; i++)
        versions[i] = 1;
    memset(&proto, 0, sizeof(proto));
    proto.daemon = 1;
    proto.keys = keys;
    {
        double save = seconds; /* warm the cache: every key read once or more */
        seconds = 0.2;
        measure(&proto, NULL, NULL, &x50, &x99);
        seconds = save;
    }
    /* the daemon and the two echoes take turns, the order rotated each round, so none gains
     * from the machine's moods; each figure is the median of its rounds */
    for (r = 0; r < rounds; r++) {
        worker echo;
        int k;
        memset(&echo, 0, sizeof(echo));
        echo.daemon = 1;
        echo.keys = keys;
        for (k = 0; k < 3; k++) {
            switch ((r + k) % 3) {
            case 0:
                d_r[r] = measure(&proto, NULL, NULL, &g50, &g99);
                break;
            case 1:
                echo.echo = 1;
                e_r[r] = measure(&echo, NULL, NULL, &e50, &e99);
                break;
            default:
                echo.echo = 2;
                p_r[r] = measure(&echo, NULL, NULL, &p50, &p99);
                break;
            }
        }
        pct_r[r] = e_r[r] > 0 ? 100.0 * d_r[r] / e_r[r] : 0.0;
        pctp_r[r] = p_r[r] > 0 ? 100.0 * d_r[r] / p_r[r] : 0.0;
    }
    d_get = cg_bench_median(d_r, rounds);
    e_get = cg_bench_median(e_r, rounds);
    p_get = cg_bench_median(p_r, rounds);
    proto.update = 1;
    d_upd = measure(&proto, own, versions, &u50, &u99);
    {
        void *s = dealer();
        char buf[512];
        ask(s, "{\"v\":1,\"id\":2,\"op\":\"shutdown\"}", buf, sizeof(buf));
        zmq_close(s);
    }
    waitpid(pid, &st, 0);

    {
        void *s = dealer_to(echo_ep), *t = dealer_to(echo_proc_ep);
        zmq_send(s, "stop", 4, 0);
        zmq_send(t, "stop", 4, 0);
        pthread_join(echo_th, NULL);
        waitpid(echo_pid, &st, 0);
        zmq_close(s);
        zmq_close(t);
    }

    /* the same operations in-process (the same group, database and resources) */
    if (cg_config_new(&cfg) < 0 || cg_config_set_string(&cfg->dsn, dsn) < 0 ||
        cg_config_set_string(&cfg->core_name, "bench-lib") < 0 ||
        cg_config_set_string(&cfg->group_id, group) < 0)
        die("config", cg_error_last()->message);
    cfg->pool_size = nthreads;
    if (cg_core_open_config(&core, cfg) < 0)
        die("open core", cg_error_last()->message);
    cg_config_free(cfg);
    memset(&proto, 0, sizeof(proto));
    proto.core = core;
    proto.keys = keys;
    for (i = 0; i < GET_KEYS; i++) { /* warm the cache */
        cg_part *p;
        if (cg_part_read(&p, core, keys[i], CG_PART_STATE) < 0)
            die("warm", cg_error_last()->message);
        cg_part_free(p);
    }
    l_get = measure(&proto, NULL, NULL, &x50, &x99);
    proto.update = 1;
    l_upd = measure(&proto, own, versions, &x50, &x99);
    cg_core_close(core);

    printf("== coregroupd vs the library in-process (%.1f s each, loopback, one core, no bus)\n",
           seconds);
    print_pair("get (cached)", d_get, l_get, g50, g99);
    print_pair("update", d_upd, l_upd, u50, u99);
    printf("%-16s %d threads: zmq echo   %10.0f req/s (p50 %6.0f us, p99 %6.0f us)   "
           "the transport's floor for a server in another process: coregroupd's get reaches "
           "%.0f%% of it (median of %d rounds; by round:",
           "echo (process)", nthreads, p_get, p50, p99, cg_bench_median(pctp_r, rounds), rounds);
    for (r = 0; r < rounds; r++)
        printf(" %.0f%%", pctp_r[r]);
    printf(")\n");
    printf("%-16s %d threads: zmq echo   %10.0f req/s (p50 %6.0f us, p99 %6.0f us)   "
           "ZeroMQ's own floor, clients and server on one I/O thread: coregroupd's get reaches "
           "%.0f%% of it (by round:",
           "echo (thread)", nthreads, e_get, e50, e99, cg_bench_median(pct_r, rounds));
    for (r = 0; r < rounds; r++)
        printf(" %.0f%%", pct_r[r]);
    printf("), the echo process %.0f%%\n", e_get > 0 ? 100.0 * p_get / e_get : 0.0);
    zmq_ctx_term(zctx);
    {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_daemon: could not remove %s\n", dir);
    }
    return 0;
}
