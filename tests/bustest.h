/*
 * bustest.h — what the bus program suites (test_busd.c, test_watch.c) share: free TCP ports,
 * programs started in the background with their output in files, waiting until a line shows
 * up, and real PUB / SUB sockets that send and receive encoded bus messages.
 *
 * Header-only (static inline functions), because each suite is one source file (cg_test). Every
 * wait is a loop until the thing is seen, with a deadline; none is a bare sleep. Programs
 * started here die with the test process (PR_SET_PDEATHSIG), so a failing test never leaves
 * a forwarder holding a port.
 */
#ifndef CG_BUSTEST_H
#define CG_BUSTEST_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "coregroup.h"
#include "message.h"
#include "testutil.h"

static inline int64_t bt_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t bt_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* n distinct TCP ports on 127.0.0.1 that nothing listened on a moment ago (all held open
 * together, so the kernel hands out different ones). */
static inline void bt_free_ports(int *ports, int n)
{
    int fds[16], i;
    ck_assert(n <= 16);
    for (i = 0; i < n; i++) {
        struct sockaddr_in a;
        socklen_t len = sizeof(a);
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert(fds[i] >= 0);
        ck_assert(bind(fds[i], (struct sockaddr *)&a, sizeof(a)) == 0);
        ck_assert(getsockname(fds[i], (struct sockaddr *)&a, &len) == 0);
        ports[i] = ntohs(a.sin_port);
    }
    for (i = 0; i < n; i++)
        close(fds[i]);
}

/* Start argv (argv[0] a path) with stdout appended to `out` and stderr to `err` (NULL: to
 * `out` too). The child is killed when the test process dies. */
static inline pid_t bt_spawn(char *const argv[], const char *out, const char *err)
{
    pid_t parent = getpid(), pid;
    fflush(NULL);
    if ((pid = fork()) == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int fe = err ? open(err, O_WRONLY | O_CREAT | O_APPEND, 0644) : fo;
        if (fo < 0 || fe < 0)
            _exit(126);
        dup2(fo, 1);
        dup2(fe, 2);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    ck_assert_msg(pid > 0, "fork: %s", strerror(errno));
    return pid;
}

/* Wait up to timeout_ms for `pid` to exit: its exit status (128 + signal when killed), or
 * -1 when it is still running. */
static inline int bt_wait(pid_t pid, int timeout_ms)
{
    int64_t until = bt_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        ck_assert_msg(r == 0, "waitpid: %s", strerror(errno));
        if (bt_ms() > until)
            return -1;
        usleep(5000);
    }
}

/* Send `sig` and expect an exit with status `want` within 5 seconds. */
static inline void bt_stop(pid_t pid, int sig, int want)
{
    int rc;
    ck_assert_int_eq(kill(pid, sig), 0);
    rc = bt_wait(pid, 5000);
    if (rc < 0) {
        kill(pid, SIGKILL);
        bt_wait(pid, 5000);
    }
    ck_assert_msg(rc == want, "pid %d after signal %d: exit status %d, expected %d", (int)pid, sig,
                  rc, want);
}

/* The content of a file as a new string ("" when it does not exist); the caller frees. */
static inline char *bt_slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *s;
    long n;
    if (f == NULL)
        return strdup("");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(s);
    n = (long)fread(s, 1, (size_t)n, f);
    s[n] = '\0';
    fclose(f);
    return s;
}

static inline int bt_count(const char *hay, const char *needle)
{
    int n = 0;
    size_t len = strlen(needle);
    for (hay = strstr(hay, needle); hay; hay = strstr(hay + len, needle))
        n++;
    return n;
}

/* The number of lines of `text` containing both a and b (b may be NULL). */
static inline int bt_lines_with(const char *text, const char *a, const char *b)
{
    int n = 0;
    while (*text) {
        const char *eol = strchr(text, '\n');
        size_t len = eol ? (size_t)(eol - text) : strlen(text);
        char *line = strndup(text, len);
        if (strstr(line, a) && (b == NULL || strstr(line, b)))
            n++;
        free(line);
        text += len + (eol ? 1 : 0);
    }
    return n;
}

/* Wait up to timeout_ms until the file holds at least `count` lines containing a and b. */
static inline int bt_wait_lines(const char *path, const char *a, const char *b, int count,
                                int timeout_ms)
{
    int64_t until = bt_ms() + timeout_ms;
    for (;;) {
        char *s = bt_slurp(path);
        int n = bt_lines_with(s, a, b);
        free(s);
        if (n >= count)
            return 1;
        if (bt_ms() > until)
            return 0;
        usleep(5000);
    }
}

/* ---- sockets and messages ------------------------------------------------------------ */

static inline void *bt_socket(void *ctx, int type)
{
    void *s = zmq_socket(ctx, type);
    int zero = 0;
    ck_assert_ptr_nonnull(s);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
    return s;
}

/* Make `s` a CURVE client of the server with public key server_pub (all keys Z85). */
static inline void bt_curve_client(void *s, const char *server_pub, const char *pub,
                                   const char *sec)
{
    ck_assert_int_eq(zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_pub, 41), 0);
    ck_assert_int_eq(zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 41), 0);
    ck_assert_int_eq(zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 41), 0);
}

static inline void bt_send_raw(void *pub, const char *topic, const char *payload, size_t len)
{
    ck_assert_int_ge(zmq_send(pub, topic, strlen(topic), ZMQ_SNDMORE), 0);
    ck_assert_int_ge(zmq_send(pub, payload, len, 0), 0);
}

static inline void bt_send(void *pub, const cg_bus_msg *m)
{
    char topic[CG_BUS_TOPIC_MAX], *text = NULL;
    size_t len = 0;
    ck_assert_msg(cg_bus_msg_encode(&text, &len, m) == 0, "encode: %s", cg_error_last()->message);
    ck_assert_int_eq(cg_bus_topic(topic, sizeof(topic), m->group), 0);
    bt_send_raw(pub, topic, text, len);
    free(text);
}

static inline cg_bus_msg bt_msg(cg_bus_msg_type type, const char *group, const char *origin,
                                int64_t seq)
{
    cg_bus_msg m;
    memset(&m, 0, sizeof(m));
    m.type = type;
    snprintf(m.group, sizeof(m.group), "%s", group);
    snprintf(m.origin, sizeof(m.origin), "%s", origin);
    m.seq = seq;
    m.incarnation = 1;
    m.at_us = bt_now_us();
    return m;
}

/* An invalidation of `group` with one item (handle seq, part state, version 1). */
static inline void bt_send_inval(void *pub, const char *group, const char *origin, int64_t seq)
{
    cg_bus_item item = {seq, CG_PART_STATE, 1};
    cg_bus_msg m = bt_msg(CG_MSG_INVALIDATION, group, origin, seq);
    m.items = &item;
    m.n_items = 1;
    bt_send(pub, &m);
}

static inline void bt_send_heartbeat(void *pub, const char *group, const char *origin, int64_t seq)
{
    cg_bus_msg m = bt_msg(CG_MSG_HEARTBEAT, group, origin, seq);
    bt_send(pub, &m);
}

/* Every message bt_recv() returned, and their bytes over both frames. */
static unsigned long long bt_recv_msgs, bt_recv_bytes;

/* Receive one message within timeout_ms: 1 with the topic copied and *out decoded (the
 * caller frees it with cg_bus_msg_free), 0 on timeout. A message that does not decode
 * fails the test. */
static inline int bt_recv(void *sub, char topic[80], cg_bus_msg **out, int timeout_ms)
{
    zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
    char payload[65536];
    int n, more = 0;
    size_t moresz = sizeof(more);

    *out = NULL;
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return 0;
    n = zmq_recv(sub, topic, 79, 0);
    ck_assert_int_ge(n, 0);
    topic[n < 79 ? n : 79] = '\0';
    zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &moresz);
    ck_assert_msg(more, "a one-frame message");
    n = zmq_recv(sub, payload, sizeof(payload), 0);
    ck_assert_int_ge(n, 0);
    ck_assert_int_lt(n, (int)sizeof(payload));
    zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &moresz);
    ck_assert_msg(!more, "more than two frames");
    ck_assert_msg(cg_bus_msg_decode(out, payload, (size_t)n, NULL) == 0, "decode: %s",
                  cg_error_last()->message);
    bt_recv_msgs++;
    bt_recv_bytes += strlen(topic) + (size_t)n;
    return 1;
}

/* ---- cg-busd -------------------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    int front, back;       /* TCP ports (0 for ipc) */
    char fe[128], be[128]; /* their endpoints */
    char log[1024];        /* stdout and stderr */
    char name[32];
} bt_busd;

static inline const char *bt_busd_bin(void)
{
    static char bin[1024];
    snprintf(bin, sizeof(bin), "%s/cg-busd", cgt_binary_dir());
    return bin;
}

/*
 * Start cg-busd named `name` with its log in dir, on b->front / b->back (free ports are
 * picked when they are 0), with `extra` arguments (NULL-terminated, may be NULL). Returns
 * when its "started" line is out, so both sockets are bound.
 */
static inline void bt_busd_start(bt_busd *b, const char *dir, const char *name,
                                 const char *const *extra)
{
    char *argv[32];
    int n = 0, i;
    int64_t until = bt_ms() + 10000;

    char want[64], *log;
    int before;

    if (b->fe[0] == '\0') { /* else: given, or a restart on the same endpoints */
        int ports[2];
        bt_free_ports(ports, 2);
        b->front = ports[0];
        b->back = ports[1];
        snprintf(b->fe, sizeof(b->fe), "tcp://127.0.0.1:%d", b->front);
        snprintf(b->be, sizeof(b->be), "tcp://127.0.0.1:%d", b->back);
    }
    snprintf(b->log, sizeof(b->log), "%s/busd-%s.log", dir, name);
    snprintf(b->name, sizeof(b->name), "%s", name);
    snprintf(want, sizeof(want), "cg-busd[%s]: started", name);
    log = bt_slurp(b->log);
    before = bt_count(log, want); /* a restart appends to the same log */
    free(log);
    argv[n++] = (char *)bt_busd_bin();
    argv[n++] = "--frontend";
    argv[n++] = b->fe;
    argv[n++] = "--backend";
    argv[n++] = b->be;
    argv[n++] = "--name";
    argv[n++] = b->name;
    for (i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    b->pid = bt_spawn(argv, b->log, NULL);
    for (;;) {
        int found;
        log = bt_slurp(b->log);
        found = bt_count(log, want) > before;
        if (!found && (bt_wait(b->pid, 0) >= 0 || bt_ms() > until))
            ck_abort_msg("cg-busd %s did not start:\n%s", name, log);
        free(log);
        if (found)
            return;
        usleep(5000);
    }
}

/* SIGKILL a forwarder (no goodbye: a crash). */
static inline void bt_busd_kill(bt_busd *b)
{
    kill(b->pid, SIGKILL);
    bt_wait(b->pid, 5000);
    b->pid = 0;
}

#endif
