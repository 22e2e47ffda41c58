/*
 * test_busd.c — the forwarder, cg-busd, as real processes between real PUB and SUB sockets:
 * forwarding with exact topic filtering (no "g2/" and no "g1x/" for a "g1/" subscriber),
 * statistics on SIGUSR1 and every --stats-interval with exact counts, a quick clean exit on
 * SIGTERM and SIGINT, one clear line and the documented exit status for every bad argument
 * or endpoint in use, two forwarders delivering every message twice, one killed and the
 * other still delivering, the killed one restarted on the same ports and delivering again,
 * and CURVE: key generation, only allowed client keys get through (an unknown key or no
 * CURVE at all injects nothing and hears nothing), SIGHUP reloads the client list.
 * No database. Every wait loops until the thing is seen, with a deadline.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bustest.h"

/* Probe numbers are unique in a test process, so a late copy of an earlier probe is never
 * taken for a fresh one. */
static int64_t next_probe = 1;

/*
 * Publish heartbeat probes of `group` until one of them has reached `sub` `copies` times (once
 * per forwarder in between): every subscription on the way has propagated, which is how the
 * tests get past ZeroMQ's slow joiner. Later copies of probes are heartbeats, which the
 * collecting helpers skip.
 */
static void sync_paths(void *pub, void *sub, const char *group, int copies)
{
    int64_t base = next_probe, until = bt_ms() + 10000;
    int counts[2048] = {0};

    for (;;) {
        int64_t step = bt_ms() + 20;
        ck_assert_msg(next_probe - base < 2048 && bt_ms() < until,
                      "no probe of %s reached the subscriber %d times within 10 s", group, copies);
        bt_send_heartbeat(pub, group, "probe", next_probe++);
        while (bt_ms() < step) {
            cg_bus_msg *m;
            char topic[80];
            int done = 0;
            if (!bt_recv(sub, topic, &m, 5))
                continue;
            if (m->type == CG_MSG_HEARTBEAT && strcmp(m->origin, "probe") == 0 && m->seq >= base &&
                m->seq < next_probe)
                done = ++counts[m->seq - base] >= copies;
            cg_bus_msg_free(m);
            if (done)
                return;
        }
    }
}

/*
 * Receive invalidations of `origin` with seq lo..hi, adding one to counts[seq - lo] per copy,
 * until every count is at least `want` or timeout_ms passed; other messages are skipped.
 * Returns 1 when every count reached `want`.
 */
static int collect(void *sub, const char *origin, int64_t lo, int64_t hi, int *counts, int want,
                   int timeout_ms)
{
    int64_t until = bt_ms() + timeout_ms, s;
    for (;;) {
        cg_bus_msg *m;
        char topic[80];
        int all = 1;
        for (s = lo; s <= hi && all; s++)
            all = counts[s - lo] >= want;
        if (all)
            return 1;
        if (bt_ms() > until)
            return 0;
        if (!bt_recv(sub, topic, &m, 10))
            continue;
        if (m->type == CG_MSG_INVALIDATION && strcmp(m->origin, origin) == 0 && m->seq >= lo &&
            m->seq <= hi)
            counts[m->seq - lo]++;
        cg_bus_msg_free(m);
    }
}

static void *connected(void *ctx, int type, const char *ep1, const char *ep2, const char *sub)
{
    void *s = bt_socket(ctx, type);
    ck_assert_int_eq(zmq_connect(s, ep1), 0);
    if (ep2)
        ck_assert_int_eq(zmq_connect(s, ep2), 0);
    if (sub)
        ck_assert_int_eq(zmq_setsockopt(s, ZMQ_SUBSCRIBE, sub, strlen(sub)), 0);
    return s;
}

/* The value of `key=` in the last line of `log` containing `marker`, or -1. */
static long long stat_value(const char *log, const char *marker, const char *key)
{
    const char *line = NULL, *p;
    char want[64];
    long long v = -1;
    for (p = strstr(log, marker); p; p = strstr(p + 1, marker))
        line = p;
    if (line == NULL)
        return -1;
    snprintf(want, sizeof(want), " %s=", key);
    /* the stats line starts before the marker: search from the start of that line */
    while (line > log && line[-1] != '\n')
        line--;
    if ((p = strstr(line, want)) != NULL && (strchr(line, '\n') == NULL || p < strchr(line, '\n')))
        v = atoll(p + strlen(want));
    return v;
}

START_TEST(help_and_usage_errors)
{
    const char *bin = bt_busd_bin();
    int rc, port[2];
    char *out;

    bt_free_ports(port, 2);
    out = cgt_run(&rc, "'%s' --help", bin);
    ck_assert_int_eq(rc, 0);
    ck_assert(strstr(out, "Usage: cg-busd") && strstr(out, "--frontend") && strstr(out, "Exit"));
    free(out);
    out = cgt_run(&rc, "'%s' --version", bin);
    ck_assert_int_eq(rc, 0);
    ck_assert(strstr(out, "cg-busd " CG_VERSION));
    free(out);

    out = cgt_run(&rc, "'%s' --backend tcp://127.0.0.1:%d", bin, port[1]);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "cg-busd: error: --frontend is required"), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' --frontend nonsense --backend tcp://127.0.0.1:%d", bin, port[1]);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "--frontend \"nonsense\": cannot bind: Invalid argument"), "%s", out);
    ck_assert_int_eq(bt_count(out, "\n"), 1); /* one line */
    free(out);
    out = cgt_run(&rc, "'%s' --frontend tcp://127.0.0.1:%d --backend foo://x", bin, port[0]);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "--backend \"foo://x\": cannot bind: Protocol not supported"), "%s",
                  out);
    free(out);
    out = cgt_run(&rc, "'%s' -f tcp://127.0.0.1:%d -b tcp://127.0.0.1:%d", bin, port[0], port[0]);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "are the same endpoint"), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' -f tcp://127.0.0.1:%d -b tcp://127.0.0.1:%d --stats-interval x", bin,
                  port[0], port[1]);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "--stats-interval \"x\""), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' -f tcp://127.0.0.1:%d -b tcp://127.0.0.1:%d --name 'a b'", bin,
                  port[0], port[1]);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "--name \"a b\""), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' -f tcp://127.0.0.1:%d -b tcp://127.0.0.1:%d --curve-clients /x", bin,
                  port[0], port[1]);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "missing --curve-secret-key"), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' -f tcp://127.0.0.1:%d -b tcp://127.0.0.1:%d stray", bin, port[0],
                  port[1]);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "unexpected argument \"stray\""), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' --bogus", bin);
    ck_assert_int_eq(rc, 2);
    free(out);
}
END_TEST

START_TEST(endpoint_in_use)
{
    char *dir = cgt_tmpdir(), *out;
    bt_busd a = {0}, ipc = {0};
    int rc, port[1];

    bt_busd_start(&a, dir, "a", NULL);
    bt_free_ports(port, 1);
    out = cgt_run(&rc, "'%s' --frontend %s --backend tcp://127.0.0.1:%d", bt_busd_bin(), a.fe,
                  port[0]);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "--frontend \"") &&
                      strstr(out, "cannot bind: Address already in use"),
                  "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' --frontend tcp://127.0.0.1:%d --backend %s", bt_busd_bin(), port[0],
                  a.be);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "--backend \"") && strstr(out, "Address already in use"), "%s", out);
    free(out);

    /* ZeroMQ would unlink a live ipc socket file and take it over; cg-busd refuses. */
    snprintf(ipc.fe, sizeof(ipc.fe), "ipc://%s/fe.sock", dir);
    snprintf(ipc.be, sizeof(ipc.be), "ipc://%s/be.sock", dir);
    bt_busd_start(&ipc, dir, "ipc", NULL);
    out = cgt_run(&rc, "'%s' --frontend %s --backend ipc://%s/other.sock", bt_busd_bin(), ipc.fe,
                  dir);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "Address already in use (a live process listens"), "%s", out);
    free(out);

    bt_stop(a.pid, SIGTERM, 0);
    bt_stop(ipc.pid, SIGTERM, 0);
    free(dir);
}
END_TEST

START_TEST(forwards_with_exact_topic_filter)
{
    char *dir = cgt_tmpdir();
    void *ctx = zmq_ctx_new(), *pub, *sub1, *sub2;
    bt_busd b = {0};
    int seen_g1 = 0, seen_g2 = 0, seen_g1x = 0;

    bt_busd_start(&b, dir, "f", NULL);
    pub = connected(ctx, ZMQ_PUB, b.fe, NULL, NULL);
    sub1 = connected(ctx, ZMQ_SUB, b.be, NULL, "g1/");
    sub2 = connected(ctx, ZMQ_SUB, b.be, NULL, "g1x/");
    ck_assert_int_eq(zmq_setsockopt(sub2, ZMQ_SUBSCRIBE, "g2/", 3), 0); /* after g1x/ */
    sync_paths(pub, sub1, "g1", 1);
    sync_paths(pub, sub2, "g2", 1);

    /* The forwarder receives all three groups (sub2 wants two of them) and must sort. */
    bt_send_inval(pub, "g2", "t", 1);
    bt_send_inval(pub, "g1x", "t", 1);
    bt_send_inval(pub, "g1", "t", 1);
    bt_send_inval(pub, "g2", "t", 2);
    bt_send_inval(pub, "g1x", "t", 2);
    bt_send_inval(pub, "g1", "t", 2); /* the last: one path keeps the order */

    for (;;) { /* sub1: g1 only, up to g1's seq 2 */
        cg_bus_msg *m;
        char topic[80];
        int last;
        ck_assert_msg(bt_recv(sub1, topic, &m, 5000), "sub1 missed g1 seq 2");
        ck_assert_msg(strcmp(topic, "g1/") == 0 && strcmp(m->group, "g1") == 0,
                      "a \"g1/\" subscriber got topic \"%s\" group %s", topic, m->group);
        seen_g1 += m->type == CG_MSG_INVALIDATION;
        last = m->type == CG_MSG_INVALIDATION && m->seq == 2;
        cg_bus_msg_free(m);
        if (last)
            break;
    }
    ck_assert_int_eq(seen_g1, 2);
    for (;;) { /* sub2: g1x and g2, never g1, up to g1x's seq 2 */
        cg_bus_msg *m;
        char topic[80];
        int last;
        ck_assert_msg(bt_recv(sub2, topic, &m, 5000), "sub2 missed g1x seq 2");
        ck_assert_msg(strcmp(m->group, "g1") != 0, "a g1 message reached g1x/ + g2/");
        ck_assert_int_eq(strlen(topic), strlen(m->group) + 1);
        if (m->type == CG_MSG_INVALIDATION) {
            seen_g2 += strcmp(m->group, "g2") == 0;
            seen_g1x += strcmp(m->group, "g1x") == 0;
        }
        last = m->type == CG_MSG_INVALIDATION && strcmp(m->group, "g1x") == 0 && m->seq == 2;
        cg_bus_msg_free(m);
        if (last)
            break;
    }
    ck_assert_int_eq(seen_g2, 2);
    ck_assert_int_eq(seen_g1x, 2);

    zmq_close(pub);
    zmq_close(sub1);
    zmq_close(sub2);
    zmq_ctx_term(ctx);
    bt_stop(b.pid, SIGTERM, 0);
    free(dir);
}
END_TEST

START_TEST(statistics_on_request_and_interval)
{
    const char *extra[] = {"--stats-interval", "0.2", NULL};
    char *dir = cgt_tmpdir(), *log;
    void *ctx = zmq_ctx_new(), *pub, *sub;
    bt_busd b = {0};
    int counts[20] = {0};

    bt_busd_start(&b, dir, "s", extra);
    pub = connected(ctx, ZMQ_PUB, b.fe, NULL, NULL);
    sub = connected(ctx, ZMQ_SUB, b.be, NULL, "g1/");
    bt_recv_msgs = bt_recv_bytes = 0;
    sync_paths(pub, sub, "g1", 1);
    {
        int64_t s;
        for (s = 1; s <= 20; s++)
            bt_send_inval(pub, "g1", "t", s);
    }
    ck_assert(collect(sub, "t", 1, 20, counts, 1, 5000));
    /* One path keeps the order: everything the forwarder passed on has arrived. */
    ck_assert_int_eq(kill(b.pid, SIGUSR1), 0);
    ck_assert_msg(bt_wait_lines(b.log, "stats msgs=", "why=signal", 1, 5000), "no stats line");
    log = bt_slurp(b.log);
    ck_assert_msg(stat_value(log, "why=signal", "msgs") == (long long)bt_recv_msgs,
                  "msgs: received %llu\n%s", bt_recv_msgs, log);
    ck_assert_msg(stat_value(log, "why=signal", "bytes") == (long long)bt_recv_bytes,
                  "bytes: received %llu\n%s", bt_recv_bytes, log);
    ck_assert_int_eq(stat_value(log, "why=signal", "subs"), 1);
    ck_assert_int_eq(stat_value(log, "why=signal", "sub_msgs"), 1);
    ck_assert_int_eq(stat_value(log, "why=signal", "sub_bytes"), 4); /* \x01 g 1 / */
    ck_assert_int_eq(stat_value(log, "why=signal", "topics"), 1);
    ck_assert_int_ge(stat_value(log, "why=signal", "uptime_s"), 0);
    ck_assert(strstr(log, "cg-busd[s]: stats msgs="));
    free(log);

    ck_assert_msg(bt_wait_lines(b.log, "cg-busd[s]: stats", "why=interval", 2, 5000),
                  "no periodic stats lines");
    zmq_close(sub); /* the unsubscription passes through too */
    {
        int64_t until = bt_ms() + 5000;
        long long unsubs = 0;
        while (unsubs < 1 && bt_ms() < until) {
            kill(b.pid, SIGUSR1);
            usleep(20000);
            log = bt_slurp(b.log);
            unsubs = stat_value(log, "why=", "unsubs");
            free(log);
        }
        ck_assert_int_eq(unsubs, 1);
    }
    zmq_close(pub);
    zmq_ctx_term(ctx);
    bt_stop(b.pid, SIGINT, 0);
    log = bt_slurp(b.log);
    ck_assert_msg(strstr(log, "why=exit") && strstr(log, "cg-busd[s]: stopped signal=INT"), "%s",
                  log);
    ck_assert_int_eq(stat_value(log, "why=exit", "msgs"), (long long)bt_recv_msgs);
    free(log);
    free(dir);
}
END_TEST

START_TEST(sigterm_stops_quickly)
{
    char *dir = cgt_tmpdir(), *log;
    bt_busd b = {0};
    int64_t t0;

    bt_busd_start(&b, dir, "t", NULL);
    t0 = bt_ms();
    bt_stop(b.pid, SIGTERM, 0);
    ck_assert_msg(bt_ms() - t0 < 2000, "took %lld ms to stop", (long long)(bt_ms() - t0));
    log = bt_slurp(b.log);
    ck_assert_msg(bt_lines_with(log, "cg-busd[t]: stats msgs=0", "why=exit") == 1, "%s", log);
    ck_assert_msg(strstr(log, "cg-busd[t]: stopped signal=TERM"), "%s", log);
    free(log);
    free(dir);
}
END_TEST

START_TEST(two_forwarders_kill_and_restart)
{
    char *dir = cgt_tmpdir();
    void *ctx = zmq_ctx_new(), *pub, *sub;
    bt_busd a = {0}, b = {0};
    int counts[10], s, i;

    bt_busd_start(&a, dir, "a", NULL);
    bt_busd_start(&b, dir, "b", NULL);
    pub = connected(ctx, ZMQ_PUB, a.fe, b.fe, NULL);
    sub = connected(ctx, ZMQ_SUB, a.be, b.be, "g1/");

    /* Both up: every message arrives twice, once through each. */
    sync_paths(pub, sub, "g1", 2);
    for (s = 1; s <= 10; s++)
        bt_send_inval(pub, "g1", "t", s);
    memset(counts, 0, sizeof(counts));
    ck_assert_msg(collect(sub, "t", 1, 10, counts, 2, 5000), "not every message came twice");
    collect(sub, "t", 1, 10, counts, 3, 100); /* a third copy would be a bug */
    for (i = 0; i < 10; i++)
        ck_assert_msg(counts[i] == 2, "seq %d arrived %d times", i + 1, counts[i]);

    /* a dies: b still delivers everything. */
    bt_busd_kill(&a);
    for (s = 11; s <= 20; s++)
        bt_send_inval(pub, "g1", "t", s);
    memset(counts, 0, sizeof(counts));
    ck_assert_msg(collect(sub, "t", 11, 20, counts, 1, 5000),
                  "the surviving forwarder did not deliver");

    /* a comes back on the same ports: both sides reconnect, everything comes twice again. */
    bt_busd_start(&a, dir, "a", NULL);
    sync_paths(pub, sub, "g1", 2);
    for (s = 21; s <= 30; s++)
        bt_send_inval(pub, "g1", "t", s);
    memset(counts, 0, sizeof(counts));
    ck_assert_msg(collect(sub, "t", 21, 30, counts, 2, 5000),
                  "the restarted forwarder did not deliver");
    collect(sub, "t", 21, 30, counts, 3, 100);
    for (i = 0; i < 10; i++)
        ck_assert_msg(counts[i] == 2, "seq %d arrived %d times", i + 21, counts[i]);

    zmq_close(pub);
    zmq_close(sub);
    zmq_ctx_term(ctx);
    bt_stop(a.pid, SIGTERM, 0);
    bt_stop(b.pid, SIGTERM, 0);
    free(dir);
}
END_TEST

/* ---- CURVE ------------------------------------------------------------------------------ */

typedef struct {
    char pub[41], sec[41];
    char pub_path[1100], sec_path[1100];
} keypair;

static void read_z85(char out[41], const char *path)
{
    char *s = bt_slurp(path);
    ck_assert_msg(strlen(s) == 41 && s[40] == '\n', "%s: \"%s\"", path, s);
    memcpy(out, s, 40);
    out[40] = '\0';
    free(s);
}

static void keygen(keypair *k, const char *dir, const char *name)
{
    int rc;
    char *out = cgt_run(&rc, "'%s' --keygen '%s/%s'", bt_busd_bin(), dir, name);
    ck_assert_msg(rc == 0, "keygen: %s", out);
    free(out);
    snprintf(k->pub_path, sizeof(k->pub_path), "%s/%s.pub", dir, name);
    snprintf(k->sec_path, sizeof(k->sec_path), "%s/%s.key", dir, name);
    read_z85(k->pub, k->pub_path);
    read_z85(k->sec, k->sec_path);
}

START_TEST(curve_keygen)
{
    char *dir = cgt_tmpdir(), *out, derived[41], path[1100];
    keypair k, other;
    struct stat st;
    int rc;

    keygen(&k, dir, "srv");
    ck_assert_int_eq(stat(k.sec_path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    ck_assert_int_eq(stat(k.pub_path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0644);
    ck_assert_int_eq(zmq_curve_public(derived, k.sec), 0);
    ck_assert_str_eq(derived, k.pub);

    out = cgt_run(&rc, "'%s' --keygen '%s/srv'", bt_busd_bin(), dir);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "not overwriting"), "%s", out);
    free(out);
    read_z85(derived, k.sec_path);
    ck_assert_str_eq(derived, k.sec); /* untouched */

    /* A public key that does not belong to the secret key, and a bad client list. */
    keygen(&other, dir, "other");
    snprintf(path, sizeof(path), "%s/clients", dir);
    cgt_write_file(path, "# cores\n\nnot-a-key\n");
    out = cgt_run(&rc,
                  "'%s' -f tcp://127.0.0.1:1 -b tcp://127.0.0.1:2 --curve-secret-key '%s' "
                  "--curve-public-key '%s' --curve-clients '%s'",
                  bt_busd_bin(), k.sec_path, other.pub_path, path);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "is not the public key of --curve-secret-key"), "%s", out);
    free(out);
    out = cgt_run(&rc,
                  "'%s' -f tcp://127.0.0.1:1 -b tcp://127.0.0.1:2 --curve-secret-key '%s' "
                  "--curve-public-key '%s' --curve-clients '%s'",
                  bt_busd_bin(), k.sec_path, k.pub_path, path);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "--curve-clients: ") && strstr(out, "line 3: not a Z85"), "%s", out);
    free(out);
    free(dir);
}
END_TEST

START_TEST(curve_admits_only_allowed_keys)
{
    char *dir = cgt_tmpdir(), clients[1100], text[200], want[120], *log;
    keypair srv, pubok, subok, bad, subbad;
    const char *extra[8];
    void *ctx = zmq_ctx_new(), *pub, *sub, *pub_bad, *pub_plain, *sub_bad;
    bt_busd b = {0};
    int64_t until, seq = 0;
    int good = 0, intruders = 0, sub_bad_got = 0, n_denied;

    keygen(&srv, dir, "srv");
    keygen(&pubok, dir, "pubok");
    keygen(&subok, dir, "subok");
    keygen(&bad, dir, "bad");
    keygen(&subbad, dir, "subbad");
    snprintf(clients, sizeof(clients), "%s/clients", dir);
    snprintf(text, sizeof(text), "# allowed cores\n%s\n  %s  \n", pubok.pub, subok.pub);
    cgt_write_file(clients, text);
    extra[0] = "--curve-secret-key";
    extra[1] = srv.sec_path;
    extra[2] = "--curve-public-key";
    extra[3] = srv.pub_path;
    extra[4] = "--curve-clients";
    extra[5] = clients;
    extra[6] = NULL;
    bt_busd_start(&b, dir, "c", extra);
    log = bt_slurp(b.log);
    ck_assert_msg(strstr(log, "curve=on clients=2"), "%s", log);
    free(log);

    sub = bt_socket(ctx, ZMQ_SUB);
    bt_curve_client(sub, srv.pub, subok.pub, subok.sec);
    ck_assert_int_eq(zmq_connect(sub, b.be), 0);
    ck_assert_int_eq(zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "g1/", 3), 0);
    pub = bt_socket(ctx, ZMQ_PUB);
    bt_curve_client(pub, srv.pub, pubok.pub, pubok.sec);
    ck_assert_int_eq(zmq_connect(pub, b.fe), 0);
    sync_paths(pub, sub, "g1", 1); /* allowed keys get through */

    pub_bad = bt_socket(ctx, ZMQ_PUB); /* a key the forwarder does not know */
    bt_curve_client(pub_bad, srv.pub, bad.pub, bad.sec);
    ck_assert_int_eq(zmq_connect(pub_bad, b.fe), 0);
    pub_plain = bt_socket(ctx, ZMQ_PUB); /* no CURVE at all */
    ck_assert_int_eq(zmq_connect(pub_plain, b.fe), 0);
    sub_bad = bt_socket(ctx, ZMQ_SUB); /* a listener with an unknown key */
    bt_curve_client(sub_bad, srv.pub, subbad.pub, subbad.sec);
    ck_assert_int_eq(zmq_connect(sub_bad, b.be), 0);
    ck_assert_int_eq(zmq_setsockopt(sub_bad, ZMQ_SUBSCRIBE, "", 0), 0);

    /* For one second the intruders publish; the allowed publisher does too. */
    until = bt_ms() + 1000;
    while (bt_ms() < until) {
        cg_bus_msg *m;
        char topic[80];
        seq++;
        bt_send_inval(pub_bad, "g1", "bad", seq);
        bt_send_inval(pub_plain, "g1", "plain", seq);
        bt_send_inval(pub, "g1", "good", seq);
        while (bt_recv(sub, topic, &m, 10)) {
            good += strcmp(m->origin, "good") == 0;
            intruders += strcmp(m->origin, "bad") == 0 || strcmp(m->origin, "plain") == 0;
            cg_bus_msg_free(m);
        }
        while (bt_recv(sub_bad, topic, &m, 0)) {
            sub_bad_got++;
            cg_bus_msg_free(m);
        }
    }
    ck_assert_msg(good > 0, "the allowed publisher stopped getting through");
    ck_assert_msg(intruders == 0, "%d messages of publishers without an allowed key got through",
                  intruders);
    ck_assert_msg(sub_bad_got == 0, "a subscriber without an allowed key heard %d messages",
                  sub_bad_got);
    /* Denials are logged at most once a second, and both unknown keys keep reconnecting, so
     * the line may name either of them (but never an allowed key). */
    ck_assert_msg(bt_wait_lines(b.log, "cg-busd[c]: ", "denied client key=", 1, 5000),
                  "no denial logged");
    log = bt_slurp(b.log);
    snprintf(want, sizeof(want), "denied client key=%s", bad.pub);
    n_denied = bt_lines_with(log, want, NULL);
    snprintf(want, sizeof(want), "denied client key=%s", subbad.pub);
    n_denied += bt_lines_with(log, want, NULL);
    ck_assert_msg(n_denied >= 1 && n_denied == bt_lines_with(log, "denied client key=", NULL),
                  "a denial line names no unknown key:\n%s", log);
    free(log);
    kill(b.pid, SIGUSR1);
    ck_assert(bt_wait_lines(b.log, "stats msgs=", "why=signal", 1, 5000));
    log = bt_slurp(b.log);
    ck_assert_msg(stat_value(log, "why=signal", "denied") >= 2, "%s", log);
    free(log);

    /* SIGHUP reloads the list: the formerly unknown key is now admitted. */
    snprintf(text, sizeof(text), "%s\n%s\n%s\n", pubok.pub, subok.pub, bad.pub);
    cgt_write_file(clients, text);
    kill(b.pid, SIGHUP);
    ck_assert_msg(
        bt_wait_lines(b.log, "cg-busd[c]: reloaded --curve-clients", "clients=3", 1, 5000),
        "no reload");
    zmq_close(pub_bad);
    pub_bad = bt_socket(ctx, ZMQ_PUB);
    bt_curve_client(pub_bad, srv.pub, bad.pub, bad.sec);
    ck_assert_int_eq(zmq_connect(pub_bad, b.fe), 0);
    sync_paths(pub_bad, sub, "g1", 1);

    zmq_close(pub);
    zmq_close(sub);
    zmq_close(pub_bad);
    zmq_close(pub_plain);
    zmq_close(sub_bad);
    zmq_ctx_term(ctx);
    bt_stop(b.pid, SIGTERM, 0);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("busd");
    TCase *tc;

    tc = tcase_create("usage");
    tcase_add_test(tc, help_and_usage_errors);
    tcase_add_test(tc, endpoint_in_use);
    suite_add_tcase(s, tc);

    tc = tcase_create("forwarding");
    tcase_add_test(tc, forwards_with_exact_topic_filter);
    tcase_add_test(tc, two_forwarders_kill_and_restart);
    suite_add_tcase(s, tc);

    tc = tcase_create("signals");
    tcase_add_test(tc, statistics_on_request_and_interval);
    tcase_add_test(tc, sigterm_stops_quickly);
    suite_add_tcase(s, tc);

    tc = tcase_create("curve");
    tcase_add_test(tc, curve_keygen);
    tcase_add_test(tc, curve_admits_only_allowed_keys);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
