/*
 * test_systemd.c — coregroupd and cg-busd speak systemd's notify protocol as a service manager
 * sees it: the test owns a Unix datagram socket, starts the real programs with NOTIFY_SOCKET
 * (and WATCHDOG_USEC) pointing at it, and reads what arrives, with the sender's credentials.
 *  - coregroupd: READY=1 comes from the daemon's own pid once the core serves (a cgctl health
 *    request sent the moment it arrives is answered "healthy"); WATCHDOG=1 comes every half
 *    WATCHDOG_USEC while the core is healthy, stops while it is degraded (its group's row
 *    locked in the repository, so the core can prove nothing and the probe fails; STATUS=
 *    says why) and comes back when the lock goes; STOPPING=1 on SIGTERM, then exit 0.
 *  - cg-busd: READY=1 once both endpoints accept connections, WATCHDOG=1 from its loop,
 *    STOPPING=1 on SIGTERM; without WATCHDOG_USEC, READY=1 and no WATCHDOG=1.
 * A build without libsystemd sends nothing: the suite then exits 77 (skipped). Every wait is
 * a loop with a deadline.
 */
#define _GNU_SOURCE /* struct ucred */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "bustest.h"

/* ---- the manager's end: a datagram socket that learns who sent each message -------------- */

typedef struct {
    int fd;
    char path[108];
} notify_sock;

static void ns_open(notify_sock *n, const char *dir)
{
    struct sockaddr_un a;
    int one = 1;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    snprintf(n->path, sizeof(n->path), "%s/notify", dir);
    ck_assert_msg(strlen(n->path) < sizeof(a.sun_path), "socket path too long: %s", n->path);
    memcpy(a.sun_path, n->path, strlen(n->path) + 1);
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(n->fd, 0);
    ck_assert_int_eq(bind(n->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(setsockopt(n->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
}

static void ns_close(notify_sock *n)
{
    close(n->fd);
    unlink(n->path);
}

/* One message within timeout_ms: its text in buf and its sender's pid in *pid; 0 on timeout. */
static int ns_recv(notify_sock *n, char *buf, size_t bufsz, pid_t *pid, int timeout_ms)
{
    struct pollfd p = {n->fd, POLLIN, 0};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = {buf, bufsz - 1};
    struct msghdr m;
    struct cmsghdr *c;
    ssize_t len;

    if (poll(&p, 1, timeout_ms) <= 0)
        return 0;
    memset(&m, 0, sizeof(m));
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.b;
    m.msg_controllen = sizeof(ctl.b);
    len = recvmsg(n->fd, &m, 0);
    ck_assert_int_ge(len, 0);
    buf[len] = '\0';
    *pid = -1;
    for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred u;
            memcpy(&u, CMSG_DATA(c), sizeof(u));
            *pid = u.pid;
        }
    return 1;
}

/* 1 when one line of the message `msg` is exactly `line` (or starts with it when prefix). */
static int has_line(const char *msg, const char *line, int prefix)
{
    size_t n = strlen(line);
    const char *p = msg;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (prefix ? len >= n && strncmp(p, line, n) == 0 : len == n && strncmp(p, line, n) == 0)
            return 1;
        p += len + (eol ? 1 : 0);
    }
    return 0;
}

/*
 * Read messages until one has the line `line` (a prefix when `prefix`) or timeout_ms passed.
 * Every message must come from `pid` (NotifyAccess=main). Counts the WATCHDOG=1 messages on
 * the way into *watchdogs (may be NULL). Returns the message's arrival time (bt_ms), or -1.
 */
static int64_t ns_wait(notify_sock *n, pid_t pid, const char *line, int prefix, int timeout_ms,
                       int *watchdogs)
{
    int64_t until = bt_ms() + timeout_ms;
    char buf[2048];
    for (;;) {
        int64_t left = until - bt_ms();
        pid_t from;
        if (left <= 0 || !ns_recv(n, buf, sizeof(buf), &from, (int)left))
            return -1;
        ck_assert_msg(from == pid, "\"%s\" came from pid %d, not the daemon's %d", buf, (int)from,
                      (int)pid);
        if (watchdogs && has_line(buf, "WATCHDOG=1", 0))
            (*watchdogs)++;
        if (has_line(buf, line, prefix))
            return bt_ms();
    }
}

/* Start argv with NOTIFY_SOCKET (and WATCHDOG_USEC when watchdog_usec is not NULL). */
static pid_t spawn_notified(char *const argv[], const char *log, const notify_sock *n,
                            const char *watchdog_usec)
{
    pid_t pid;
    setenv("NOTIFY_SOCKET", n->path, 1);
    if (watchdog_usec)
        setenv("WATCHDOG_USEC", watchdog_usec, 1);
    pid = bt_spawn(argv, log, NULL);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    return pid;
}

/* ---- coregroupd ---------------------------------------------------------------------------- */

START_TEST(coregroupd_notifies_ready_watchdog_only_while_healthy_and_stopping)
{
    char *dsn = cgt_createdb("systemd", 1), *core_dsn = cgt_core_dsn(dsn, "sd-group"),
         *dir = cgt_tmpdir();
    char ini[512], log[512], text[2048], *out, *l;
    char *argv[] = {(char *)cgt_bin("coregroupd"), "-c", ini, NULL};
    notify_sock ns;
    PGconn *locker;
    pid_t pid;
    int port, rc, dogs = 0;
    int64_t t_ready, t_degraded, t;

    bt_free_ports(&port, 1);
    snprintf(ini, sizeof(ini), "%s/sd-core.ini", dir);
    snprintf(log, sizeof(log), "%s/sd-core.log", dir);
    /* a short lock timeout: a probe of the locked repository fails fast */
    snprintf(text, sizeof(text),
             "[repository]\ndsn = %s\npool_size = 4\nlock_timeout_ms = 300\n"
             "[core]\nname = sd-core\ngroup = sd-group\nlog_level = debug\n"
             "[retry]\nattempts = 1\ninterval_ms = 100\n"
             "[daemon]\nlisten = tcp://127.0.0.1:%d\nworkers = 2\n",
             core_dsn, port);
    cgt_write_file(ini, text);
    ns_open(&ns, dir);

    /* WATCHDOG_USEC 0.4 s: WATCHDOG=1 every 0.2 s */
    pid = spawn_notified(argv, log, &ns, "400000");
    t_ready = ns_wait(&ns, pid, "READY=1", 0, 20000, &dogs);
    l = bt_slurp(log);
    ck_assert_msg(t_ready >= 0, "no READY=1 within 20 s:\n%s", l);
    free(l);
    /* the core serves the moment READY=1 is out */
    out = cgt_run(&rc, "'%s' -c '%s' health", cgt_bin("cgctl"), ini);
    ck_assert_msg(rc == 0 && strncmp(out, "healthy", 7) == 0, "health right after READY=1: %d %s",
                  rc, out);
    free(out);
    ck_assert_int_eq(bt_wait_lines(log, "event=started", NULL, 1, 1000), 1);

    /* healthy: a WATCHDOG=1 every 0.2 s */
    dogs = 0;
    ns_wait(&ns, pid, "no such line", 0, 1500, &dogs);
    ck_assert_msg(dogs >= 4, "%d WATCHDOG=1 in 1.5 s (every 0.2 s expected)", dogs);

    /* degraded: the group's row locked, so neither the freshness proof nor the probe gets
     * through; the watchdog starves */
    locker = cgt_connect(dsn);
    PQclear(PQexec(locker, "BEGIN"));
    l = cgt_query1(locker, "LOCK TABLE core_groups IN ACCESS EXCLUSIVE MODE");
    free(l);
    t_degraded = ns_wait(&ns, pid, "STATUS=degraded: ", 1, 10000, NULL);
    ck_assert_msg(t_degraded >= 0, "no STATUS=degraded within 10 s of locking the repository");
    dogs = 0;
    ns_wait(&ns, pid, "no such line", 0, 250, NULL); /* one that crossed the status update */
    ns_wait(&ns, pid, "no such line", 0, 1500, &dogs);
    ck_assert_msg(dogs == 0, "%d WATCHDOG=1 in 1.5 s while degraded", dogs);
    out = cgt_run(&rc, "'%s' -c '%s' health", cgt_bin("cgctl"), ini);
    ck_assert_msg(rc == 1, "cgctl health while the repository is locked: %d %s", rc, out);
    free(out);
    l = bt_slurp(log);
    ck_assert_msg(strstr(l, "event=unhealthy"), "no event=unhealthy logged:\n%s", l);
    free(l);

    /* healthy again: fed again */
    PQclear(PQexec(locker, "ROLLBACK"));
    PQfinish(locker);
    ck_assert_msg(ns_wait(&ns, pid, "STATUS=serving", 0, 10000, NULL) >= 0,
                  "no STATUS=serving within 10 s of the lock going");
    dogs = 0;
    t = ns_wait(&ns, pid, "WATCHDOG=1", 0, 2000, &dogs);
    ck_assert_msg(t >= 0, "no WATCHDOG=1 within 2 s of being healthy again");

    /* SIGTERM: STOPPING=1, then a clean exit */
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    ck_assert_msg(ns_wait(&ns, pid, "STOPPING=1", 0, 5000, NULL) >= 0, "no STOPPING=1");
    rc = bt_wait(pid, 10000);
    ck_assert_msg(rc == 0, "exit status %d after SIGTERM", rc);
    ns_close(&ns);
    free(core_dsn);
    free(dsn);
    free(dir);
}
END_TEST

/* ---- cg-busd ------------------------------------------------------------------------------- */

/* 1 when a TCP connection to 127.0.0.1:port is accepted. */
static int tcp_open(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Start cg-busd on fresh ports with NOTIFY_SOCKET (and WATCHDOG_USEC when not NULL). */
static pid_t busd_start(int ports[2], const char *dir, const notify_sock *ns, const char *usec)
{
    char fe[64], be[64], log[512];
    char *argv[] = {(char *)bt_busd_bin(), "--frontend", fe, "--backend", be, "--name", "sd", NULL};
    bt_free_ports(ports, 2);
    snprintf(fe, sizeof(fe), "tcp://127.0.0.1:%d", ports[0]);
    snprintf(be, sizeof(be), "tcp://127.0.0.1:%d", ports[1]);
    snprintf(log, sizeof(log), "%s/busd.log", dir);
    return spawn_notified(argv, log, ns, usec);
}

START_TEST(busd_notifies_ready_watchdog_and_stopping)
{
    char *dir = cgt_tmpdir();
    notify_sock ns;
    int ports[2], dogs = 0, rc;
    pid_t pid;

    ns_open(&ns, dir);
    pid = busd_start(ports, dir, &ns, "200000"); /* WATCHDOG=1 every 0.1 s */
    ck_assert_msg(ns_wait(&ns, pid, "READY=1", 0, 10000, &dogs) >= 0, "no READY=1 within 10 s");
    ck_assert_msg(tcp_open(ports[0]) && tcp_open(ports[1]),
                  "READY=1 before both endpoints accept connections");
    dogs = 0;
    ns_wait(&ns, pid, "no such line", 0, 1000, &dogs);
    ck_assert_msg(dogs >= 5, "%d WATCHDOG=1 in 1 s (every 0.1 s expected)", dogs);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    ck_assert_msg(ns_wait(&ns, pid, "STOPPING=1", 0, 5000, NULL) >= 0, "no STOPPING=1");
    rc = bt_wait(pid, 5000);
    ck_assert_msg(rc == 0, "exit status %d after SIGTERM", rc);
    ns_close(&ns);
    free(dir);
}
END_TEST

START_TEST(busd_without_watchdog_usec_sends_no_watchdog)
{
    char *dir = cgt_tmpdir();
    notify_sock ns;
    int ports[2], dogs = 0;
    pid_t pid;

    ns_open(&ns, dir);
    pid = busd_start(ports, dir, &ns, NULL);
    ck_assert_msg(ns_wait(&ns, pid, "READY=1", 0, 10000, &dogs) >= 0, "no READY=1 within 10 s");
    ns_wait(&ns, pid, "no such line", 0, 1000, &dogs);
    ck_assert_msg(dogs == 0, "%d WATCHDOG=1 without WATCHDOG_USEC", dogs);
    bt_stop(pid, SIGTERM, 0);
    ns_close(&ns);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s;
    TCase *core, *busd;

#ifndef CG_HAVE_SYSTEMD
    printf("systemd: SKIPPED: built without libsystemd (Debian: libsystemd-dev), so the daemons "
           "send no notifications\n");
    return 77;
#endif
    s = suite_create("systemd");
    core = tcase_create("coregroupd");
    busd = tcase_create("cg_busd");
    tcase_set_timeout(core, 120);
    tcase_add_test(core, coregroupd_notifies_ready_watchdog_only_while_healthy_and_stopping);
    suite_add_tcase(s, core);
    tcase_add_test(busd, busd_notifies_ready_watchdog_and_stopping);
    tcase_add_test(busd, busd_without_watchdog_usec_sends_no_watchdog);
    suite_add_tcase(s, busd);
    return cgt_run_suite(s);
}
