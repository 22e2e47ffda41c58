/*
 * bench_bus — the invalidation bus's figures, each against a baseline measured in the same run:
 *
 *   1. invalidation latency, from COMMIT returning on core A to the invalidation being applied
 *      to core B's cache (the subscriber's own timestamp), p50 and p99: directly (A's PUB bound,
 *      B connected) and through one cg-busd forwarder — against a raw ZeroMQ PUB->SUB hop of a
 *      100-byte message over loopback TCP;
 *   2. bus throughput: encoded invalidation messages pushed through one cg-busd and decoded by
 *      a subscriber, messages/s;
 *   3. staleness with the bus down: commit on A, time until B (no bus, backstop poll interval
 *      P) has applied it — against P.
 *
 * Usage: bench_bus --dsn DSN --busd PATH [--samples N] [--poll-ms P]
 * DSN: a migrated coregroup database (cores log in as its user, a login mapped to the group
 * "bench-bus" by `cg-migrate map-role`). PATH: the cg-busd program.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "coregroup.h"
#include "core_internal.h"
#include "message.h"

static const char *dsn, *busd;
static int samples = 400, poll_ms = 200;

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_bus: %s: %s\n", what, cg_error_last()->message);
    exit(1);
}

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("bench_bus: free port");
        exit(1);
    }
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static pid_t start_busd(int front, int back)
{
    char f[64], b[64];
    pid_t pid;
    snprintf(f, sizeof(f), "tcp://127.0.0.1:%d", front);
    snprintf(b, sizeof(b), "tcp://127.0.0.1:%d", back);
    if ((pid = fork()) == 0) {
        execl(busd, busd, "--frontend", f, "--backend", b, "--quiet", (char *)NULL);
        _exit(127);
    }
    usleep(200000);
    return pid;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t pct(int64_t *v, int n, int p)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_i64);
    return v[(n - 1) * p / 100];
}

/* ---- 1. latency ----------------------------------------------------------------------- */

static cg_core *open_core(const char *name, const char *pub, const char *sub, int poll)
{
    cg_config *cfg;
    cg_core *core;
    cg_config_new(&cfg);
    cg_config_set_string(&cfg->dsn, dsn);
    cg_config_set_string(&cfg->core_name, name);
    cg_config_set_string(&cfg->group_id, "bench-bus");
    if (pub)
        cg_config_set_string(&cfg->publish[cfg->n_publish++], pub);
    if (sub)
        cg_config_set_string(&cfg->subscribe[cfg->n_subscribe++], sub);
    cfg->poll_interval_ms = poll;
    cfg->heartbeat_interval_ms = 100;
    if (cg_core_open_config(&core, cfg) < 0)
        die("open core");
    cg_config_free(cfg);
    return core;
}

static int64_t make(cg_core *core)
{
    cg_call *call;
    int64_t h;
    if (cg_call_begin(&call, core) < 0 || cg_resource_create(&h, call, NULL) < 0 ||
        cg_call_commit(call) < 0)
        die("create");
    return h;
}

/* Commit on a, wait until b has applied that event; returns the microseconds from COMMIT
 * returning on a to b's subscriber applying it (0 if b was even faster), or -1 on timeout.
 * Nothing else writes to the group, so the event is b's applied point + 1. */
static int64_t one_update(cg_core *a, cg_core *b, int64_t h, int64_t *version, int64_t limit_us)
{
    cg_call *call;
    cg_bus_stats bs;
    int64_t v, t0, target;

    cg_bus_stats_get(b->bus, &bs);
    target = bs.applied_seq + 1;
    if (cg_call_begin(&call, a) < 0 ||
        cg_part_update(&v, call, h, CG_PART_STATE, *version, "{\"n\":1}") < 0 ||
        cg_call_commit(call) < 0)
        die("update");
    t0 = mono_us();
    *version = v;
    for (;;) {
        cg_bus_stats_get(b->bus, &bs);
        if (bs.applied_seq >= target)
            return bs.applied_at_us > t0 ? bs.applied_at_us - t0 : 0;
        if (mono_us() - t0 > limit_us)
            return -1;
        usleep(500); /* the figure is the subscriber's own timestamp: polling need not spin */
    }
}

static void latency(const char *label, cg_core *a, cg_core *b, int n, int64_t *p50, int64_t *p99)
{
    int64_t *lat = malloc((size_t)n * sizeof(*lat)), h = make(a), version = 1;
    int i, got = 0;
    usleep(300000); /* subscriptions settle */
    for (i = 0; i < n; i++) {
        int64_t us = one_update(a, b, h, &version, 2000000);
        if (us >= 0)
            lat[got++] = us;
        usleep(2000);
    }
    if (got == 0) {
        fprintf(stderr, "bench_bus: %s: nothing arrived\n", label);
        exit(1);
    }
    *p50 = pct(lat, got, 50);
    *p99 = pct(lat, got, 99);
    free(lat);
}

/* The baseline: a raw PUB->SUB hop of 100 bytes on loopback TCP. */
typedef struct {
    void *sub;
    int n;
    int64_t *recv_us;
    atomic_int got;
} raw_rx;

static void *raw_receiver(void *arg)
{
    raw_rx *r = arg;
    char buf[256];
    while (atomic_load(&r->got) < r->n) {
        int len = zmq_recv(r->sub, buf, sizeof(buf), 0);
        if (len >= (int)sizeof(int)) {
            int idx;
            memcpy(&idx, buf, sizeof(idx));
            if (idx >= 0 && idx < r->n)
                r->recv_us[idx] = mono_us();
            atomic_fetch_add(&r->got, 1);
        }
    }
    return NULL;
}

static void raw_hop(int n, int64_t *p50, int64_t *p99)
{
    void *ctx = zmq_ctx_new(), *pub = zmq_socket(ctx, ZMQ_PUB), *sub = zmq_socket(ctx, ZMQ_SUB);
    char ep[64], msg[100];
    int64_t *sent = calloc((size_t)n, sizeof(int64_t)), *lat = calloc((size_t)n, sizeof(int64_t));
    raw_rx r = {sub, n, calloc((size_t)n, sizeof(int64_t)), 0};
    pthread_t t;
    int i, got = 0, to = 2000;

    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", free_port());
    zmq_bind(pub, ep);
    zmq_connect(sub, ep);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &to, sizeof(to));
    usleep(300000);
    memset(msg, 'x', sizeof(msg));
    pthread_create(&t, NULL, raw_receiver, &r);
    for (i = 0; i < n; i++) {
        memcpy(msg, &i, sizeof(i));
        sent[i] = mono_us();
        zmq_send(pub, msg, sizeof(msg), 0);
        usleep(2000);
    }
    usleep(100000);
    atomic_store(&r.got, n); /* stop the receiver once its timeout passes */
    pthread_join(t, NULL);
    for (i = 0; i < n; i++)
        if (r.recv_us[i] > 0)
            lat[got++] = r.recv_us[i] - sent[i];
    *p50 = pct(lat, got, 50);
    *p99 = pct(lat, got, 99);
    zmq_close(pub);
    zmq_close(sub);
    zmq_ctx_term(ctx);
    free(sent);
    free(lat);
    free(r.recv_us);
}

/* ---- 2. throughput through a forwarder ------------------------------------------------ */

static double throughput(int front, int back, int n, int *lost)
{
    void *ctx, *pub, *sub;
    char ep[64], *payload;
    size_t len;
    cg_bus_item item = {42, CG_PART_STATE, 7};
    cg_bus_msg m;
    int i, got = 0, hwm = 1000000, to = 1000, go[2];
    int64_t t0 = 0, t1 = 0;

    memset(&m, 0, sizeof(m));
    m.type = CG_MSG_INVALIDATION;
    strcpy(m.group, "bench-bus");
    strcpy(m.origin, "bench");
    m.incarnation = 1;
    m.at_us = 1;
    m.items = &item;
    m.n_items = 1;
    /* The publisher: another process, as a core would be. It is forked before this process
     * has a ZeroMQ context (fork() copies only the calling thread, and a context's threads
     * may hold locks), and waits for "go" until the subscriber below is connected. */
    if (pipe(go) < 0) {
        perror("bench_bus: pipe");
        exit(1);
    }
    if (fork() == 0) {
        void *cctx, *cpub;
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        cctx = zmq_ctx_new();
        cpub = zmq_socket(cctx, ZMQ_PUB);
        snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", front);
        zmq_setsockopt(cpub, ZMQ_SNDHWM, &hwm, sizeof(hwm));
        zmq_connect(cpub, ep);
        usleep(300000); /* the forwarder passes the subscription on to a new publisher */
        for (i = 0; i < n; i++) {
            m.seq = i + 1;
            cg_bus_msg_encode(&payload, &len, &m);
            zmq_send(cpub, "bench-bus/", 10, ZMQ_SNDMORE);
            zmq_send(cpub, payload, len, 0);
            free(payload);
        }
        zmq_close(cpub); /* linger: everything queued is delivered first */
        zmq_ctx_term(cctx);
        _exit(0);
    }
    close(go[0]);

    ctx = zmq_ctx_new();
    pub = zmq_socket(ctx, ZMQ_PUB);
    sub = zmq_socket(ctx, ZMQ_SUB);
    zmq_setsockopt(pub, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(sub, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(sub, ZMQ_RCVTIMEO, &to, sizeof(to));
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", front);
    zmq_connect(pub, ep);
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", back);
    zmq_connect(sub, ep);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "bench-bus/", 10);
    /* slow joiner: send probes until one arrives */
    for (i = 0; i < 200; i++) {
        char buf[4096];
        m.seq = 1;
        cg_bus_msg_encode(&payload, &len, &m);
        zmq_send(pub, "bench-bus/", 10, ZMQ_SNDMORE);
        zmq_send(pub, payload, len, 0);
        free(payload);
        if (zmq_recv(sub, buf, sizeof(buf), ZMQ_DONTWAIT) >= 0)
            break;
        usleep(20000);
    }
    while (zmq_recv(sub, ep, sizeof(ep), ZMQ_DONTWAIT) >= 0) /* drain the probes */
        ;
    if (write(go[1], "g", 1) != 1) {
        perror("bench_bus: start the publisher");
        exit(1);
    }
    close(go[1]);
    for (;;) {
        zmq_msg_t t, p;
        cg_bus_msg *d;
        zmq_msg_init(&t);
        zmq_msg_init(&p);
        if (zmq_msg_recv(&t, sub, 0) < 0 || zmq_msg_recv(&p, sub, 0) < 0) {
            zmq_msg_close(&t);
            zmq_msg_close(&p);
            break;
        }
        if (got == 0)
            t0 = mono_us();
        if (cg_bus_msg_decode(&d, zmq_msg_data(&p), zmq_msg_size(&p), "bench-bus") == 0) {
            got++;
            cg_bus_msg_free(d);
        }
        t1 = mono_us();
        zmq_msg_close(&t);
        zmq_msg_close(&p);
        if (got == n)
            break;
    }
    wait(NULL);
    *lost = n - got;
    zmq_close(pub);
    zmq_close(sub);
    zmq_ctx_term(ctx);
    return got > 1 ? (double)(got - 1) / ((double)(t1 - t0) / 1e6) : 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dsn", required_argument, NULL, 'd'},     {"busd", required_argument, NULL, 'b'},
        {"samples", required_argument, NULL, 'n'}, {"poll-ms", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    int c, front, back, direct, lost, i;
    char fe[64], be[64], de[64];
    int64_t r50, r99, d50, d99, f50, f99;
    cg_core *a, *b;
    pid_t pid;

    while ((c = getopt_long(argc, argv, "d:b:n:p:h", opts, NULL)) != -1) {
        if (c == 'd')
            dsn = optarg;
        else if (c == 'b')
            busd = optarg;
        else if (c == 'n')
            samples = atoi(optarg);
        else if (c == 'p')
            poll_ms = atoi(optarg);
        else {
            fprintf(c == 'h' ? stdout : stderr,
                    "Usage: bench_bus --dsn DSN --busd PATH [--samples N] [--poll-ms P]\n"
                    "Invalidation latency (direct, via cg-busd) against a raw ZeroMQ hop,\n"
                    "throughput through cg-busd, and staleness with the bus down.\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (dsn == NULL || busd == NULL || samples < 10 || poll_ms < 10) {
        fprintf(stderr, "bench_bus: --dsn and --busd are required (try --help)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    raw_hop(samples, &r50, &r99);
    printf("raw ZeroMQ PUB->SUB hop (100 B, loopback): p50 %" PRId64 " us, p99 %" PRId64 " us\n",
           r50, r99);

    direct = free_port();
    snprintf(de, sizeof(de), "@tcp://127.0.0.1:%d", direct);
    a = open_core("bench-a", de, NULL, 3600000);
    snprintf(de, sizeof(de), "tcp://127.0.0.1:%d", direct);
    b = open_core("bench-b", NULL, de, 3600000);
    latency("direct", a, b, samples, &d50, &d99);
    printf("commit -> eviction, direct:          p50 %" PRId64 " us, p99 %" PRId64
           " us   (p99 target: 2 x raw + 500 = %" PRId64 " us)\n",
           d50, d99, 2 * r99 + 500);
    cg_core_close(a);
    cg_core_close(b);

    front = free_port();
    back = free_port();
    pid = start_busd(front, back);
    snprintf(fe, sizeof(fe), "tcp://127.0.0.1:%d", front);
    snprintf(be, sizeof(be), "tcp://127.0.0.1:%d", back);
    a = open_core("bench-a", fe, be, 3600000);
    b = open_core("bench-b", fe, be, 3600000);
    latency("forwarder", a, b, samples, &f50, &f99);
    printf("commit -> eviction, via cg-busd:     p50 %" PRId64 " us, p99 %" PRId64
           " us   (p99 target: 2 x raw + 500 = %" PRId64 " us)\n",
           f50, f99, 2 * r99 + 500);
    cg_core_close(a);
    cg_core_close(b);

    for (i = 0; i < 3; i++) {
        double rate = throughput(front, back, 200000, &lost);
        printf("throughput via cg-busd: %.0f invalidation messages/s (encode + forward + decode), "
               "%d of 200000 lost   (target >= 100000/s)\n",
               rate, lost);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);

    /* 3. staleness with no bus at all: only the backstop poll */
    a = open_core("bench-a", NULL, NULL, 3600000);
    b = open_core("bench-b", NULL, NULL, poll_ms);
    {
        int n = samples / 20 > 10 ? samples / 20 : 10;
        int64_t *st = malloc((size_t)n * sizeof(int64_t)), h = make(a), v = 1, sum = 0;
        for (i = 0; i < n; i++) {
            int64_t us = one_update(a, b, h, &v, (int64_t)poll_ms * 4000);
            st[i] = us;
            sum += us;
            usleep((useconds_t)(rand() % (poll_ms * 1000)));
        }
        printf("staleness with the bus down (poll interval %d ms): mean %.0f ms, max %.0f ms over "
               "%d updates\n",
               poll_ms, (double)sum / n / 1000, (double)pct(st, n, 100) / 1000, n);
        free(st);
    }
    cg_core_close(a);
    cg_core_close(b);
    return 0;
}
