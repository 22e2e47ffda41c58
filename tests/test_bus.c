/*
 * test_bus.c — the invalidation bus end to end: real cores, real cg-busd forwarder processes,
 * the real PostgreSQL of the harness.
 *  - three cores of one group and one of another: an update on A is out of B's and C's caches
 *    within a bounded wait, and the other group's core hears nothing (I5, I1);
 *  - lost messages (the publisher drops every other one): subscribers detect the gap and catch
 *    up from the outbox; with the outbox pruned, a subscriber resets its whole cache;
 *  - a core killed between commit and publish: the others converge by the poll backstop, at
 *    the first poll that begins after the commit;
 *  - a forwarder killed and restarted; one of two forwarders killed: no cache stays stale;
 *  - malformed and foreign messages are dropped and counted;
 *  - an aborted call puts nothing on the bus (I6), seen with cg-watch --json;
 *  - a core that hears no bus and cannot reach the repository says it is degraded and stops
 *    serving from its cache, and recovers when the repository is back;
 *  - with CURVE, cores talk through a secured forwarder and a publisher without an allowed key
 *    cannot inject an invalidation; the key files carry comment lines, which the cores' [bus]
 *    keys accept as cg-busd's do (one reader of key files).
 * Needs a build with CG_TEST_HOOKS (the fault-injection hooks). Restarts the shared cluster, so
 * ctest runs it alone.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "core_internal.h"
#include "testutil.h"

static char *dsn;
static PGconn *dba;

static void setup(void)
{
    dsn = cgt_createdb("bus", 1);
    dba = cgt_connect(dsn);
}

static void teardown(void)
{
    PQfinish(dba);
    free(dsn);
}

static int64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A TCP port nothing listens on right now. */
static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    ck_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

typedef struct {
    int front, back;
    pid_t pid;
} forwarder;

static void busd_start(forwarder *f)
{
    char bin[1024], front[64], back[64];
    snprintf(bin, sizeof(bin), "%s/cg-busd", cgt_binary_dir());
    snprintf(front, sizeof(front), "tcp://127.0.0.1:%d", f->front);
    snprintf(back, sizeof(back), "tcp://127.0.0.1:%d", f->back);
    if ((f->pid = fork()) == 0) {
        execl(bin, bin, "--frontend", front, "--backend", back, "--quiet", (char *)NULL);
        _exit(127);
    }
    ck_assert(f->pid > 0);
}

static forwarder busd_new(void)
{
    forwarder f = {free_port(), free_port(), 0};
    busd_start(&f);
    return f;
}

static void busd_kill(forwarder *f, int sig)
{
    int status;
    kill(f->pid, sig);
    waitpid(f->pid, &status, 0);
    f->pid = 0;
}

/* A core of `group` on the bus of the given forwarders. */
static cg_core *bus_core(const char *name, const char *group, forwarder *fs, int nf, int poll_ms)
{
    cg_config *cfg = cgt_core_config(dsn, name, group);
    char ep[64];
    int i;
    for (i = 0; i < nf; i++) {
        snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", fs[i].front);
        cg_config_set_string(&cfg->publish[cfg->n_publish++], ep);
        snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", fs[i].back);
        cg_config_set_string(&cfg->subscribe[cfg->n_subscribe++], ep);
    }
    cfg->heartbeat_interval_ms = 50;
    cfg->poll_interval_ms = poll_ms;
    return cgt_core_open_cfg(cfg);
}

/* A core on one forwarder with a freshness bound: proofs every min(poll, bound / 4). */
static cg_core *bus_core_bounded(const char *name, const char *group, forwarder *f, int poll_ms,
                                 int max_staleness_ms)
{
    cg_config *cfg = cgt_core_config(dsn, name, group);
    char ep[64];
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", f->front);
    cg_config_set_string(&cfg->publish[cfg->n_publish++], ep);
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", f->back);
    cg_config_set_string(&cfg->subscribe[cfg->n_subscribe++], ep);
    cfg->heartbeat_interval_ms = 50;
    cfg->poll_interval_ms = poll_ms;
    cfg->max_staleness_ms = max_staleness_ms;
    return cgt_core_open_cfg(cfg);
}

/* Wait until a core hears its own group's heartbeats: its subscription is live. */
static void wait_hearing(cg_core *core)
{
    int64_t until = ms_now() + 10000;
    cg_core_stats st;
    do {
        cg_core_stats_get(core, &st);
        if (st.heartbeats_received >= 2)
            return;
        usleep(10000);
    } while (ms_now() < until);
    ck_abort_msg("core %s never heard the bus", cg_core_name(core));
}

static int64_t create(cg_core *core)
{
    cg_call *call;
    cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
    int64_t h;
    o.state = "{\"n\":0}";
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_resource_create(&h, call, &o));
    CGT_OK(cg_call_commit(call));
    return h;
}

static int64_t version_in_cache_or_repo(cg_core *core, int64_t h)
{
    cg_part *p;
    int64_t v;
    CGT_OK(cg_part_read(&p, core, h, CG_PART_STATE));
    v = cg_part_version(p);
    cg_part_free(p);
    return v;
}

/* Move the part one version on from `core` (reading it fresh and locked). */
static int64_t bump(cg_core *core, int64_t h)
{
    cg_call *call;
    const cg_part *p;
    int64_t v;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_part_lock(&p, call, h, CG_PART_STATE));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, cg_part_version(p), "{\"n\":1}"));
    CGT_OK(cg_call_commit(call));
    return v;
}

/* Milliseconds until `core` serves version >= v of the part, or -1 after `limit_ms`. */
static int64_t wait_version(cg_core *core, int64_t h, int64_t v, int64_t limit_ms)
{
    int64_t t0 = ms_now();
    while (ms_now() - t0 <= limit_ms) {
        if (version_in_cache_or_repo(core, h) >= v)
            return ms_now() - t0;
        usleep(2000);
    }
    return -1;
}

START_TEST(update_reaches_the_group_and_only_the_group)
{
    forwarder f = busd_new();
    cg_core *a = bus_core("b1-a", "bus-g1", &f, 1, 3600000);
    cg_core *b = bus_core("b1-b", "bus-g1", &f, 1, 3600000);
    cg_core *c = bus_core("b1-c", "bus-g1", &f, 1, 3600000);
    cg_core *d = bus_core("b1-d", "bus-g2", &f, 1, 3600000);
    cg_core_stats sb, sd;
    int64_t h, v, tb, tc;

    wait_hearing(a);
    wait_hearing(b);
    wait_hearing(c);
    wait_hearing(d);
    h = create(a);
    ck_assert_int_eq(version_in_cache_or_repo(b, h), 1); /* cached on b and c */
    ck_assert_int_eq(version_in_cache_or_repo(c, h), 1);
    v = bump(a, h);
    tb = wait_version(b, h, v, 2000);
    tc = wait_version(c, h, v, 2000);
    ck_assert_msg(tb >= 0 && tc >= 0, "b or c still serves the old version");
    cg_core_stats_get(b, &sb);
    ck_assert_uint_ge(sb.invalidations_received, 1);
    ck_assert_uint_eq(sb.polls, 0); /* the bus did it, not the backstop */
    ck_assert_int_eq(
        sb.applied_seq,
        cgt_query_i64(dba, "SELECT event_seq FROM core_groups WHERE group_id = 'bus-g1'"));
    cg_core_stats_get(d, &sd);
    ck_assert_uint_eq(sd.invalidations_received, 0); /* other groups' traffic never arrives */
    ck_assert_uint_eq(sd.messages_dropped, 0);
    printf("update seen by b after %" PRId64 " ms, by c after %" PRId64 " ms\n", tb, tc);
    cg_core_close(a);
    cg_core_close(b);
    cg_core_close(c);
    cg_core_close(d);
    busd_kill(&f, SIGTERM);
}
END_TEST

/* Whether `name` is bound in the root folder, as `core` answers (cache or repository). */
static int root_has(cg_core *core, const char *name)
{
    cg_call *call;
    int64_t t;
    int err;
    CGT_OK(cg_call_begin(&call, core));
    err = cg_name_lookup(&t, call, CG_ROOT_FOLDER, name);
    CGT_OK(cg_call_commit(call));
    ck_assert_msg(err == 0 || err == CG_ENOTFOUND, "lookup: %s", cg_error_last()->message);
    return err == 0;
}

/* Milliseconds until `core` finds `name` in the root folder, or -1 after `limit_ms`. */
static int64_t wait_name(cg_core *core, const char *name, int64_t limit_ms)
{
    int64_t t0 = ms_now();
    while (ms_now() - t0 <= limit_ms) {
        if (root_has(core, name))
            return ms_now() - t0;
        usleep(2000);
    }
    return -1;
}

static void bind_root(cg_core *core, const char *name, int64_t target)
{
    cg_call *call;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, name, target));
    CGT_OK(cg_call_commit(call));
}

START_TEST(bind_reaches_lookup_on_another_core)
{
    forwarder f = busd_new();
    cg_core *a = bus_core("b10-a", "bus-names", &f, 1, 3600000);
    cg_core *b = bus_core("b10-b", "bus-names", &f, 1, 3600000);
    cg_core_stats s0, s1;
    int64_t h, t;

    wait_hearing(a);
    wait_hearing(b);
    h = create(a);
    ck_assert_int_eq(root_has(b, "printer"), 0); /* b caches the root's listing */
    cg_core_stats_get(b, &s0);
    ck_assert_int_eq(root_has(b, "printer"), 0);
    cg_core_stats_get(b, &s1);
    ck_assert_uint_eq(s1.repository_reads, s0.repository_reads); /* a hit */
    bind_root(a, "printer", h);
    t = wait_name(b, "printer", 2000);
    ck_assert_msg(t >= 0, "b still serves the listing from before the bind");
    cg_core_stats_get(b, &s1);
    ck_assert_uint_eq(s1.polls, 0); /* the bus did it (a wire version 2 message) */
    ck_assert_uint_eq(s1.messages_dropped, 0);
    printf("bind seen by b's lookup after %" PRId64 " ms\n", t);

    /* a names message lost on the bus: caught up from the outbox at the next gap */
    ck_assert_int_eq(root_has(b, "scanner"), 0);
    a->hooks.drop_every = 1;
    bind_root(a, "scanner", h);
    a->hooks.drop_every = 0;
    bump(a, h); /* sent: b sees the gap before it */
    ck_assert_msg(wait_name(b, "scanner", 2000) >= 0, "the lost bind was never caught up");
    cg_core_stats_get(b, &s1);
    ck_assert_uint_ge(s1.catchups, 1);

    /* lost and pruned from the outbox: b resets its whole cache, listings included */
    ck_assert_int_eq(root_has(b, "fax"), 0);
    a->hooks.drop_every = 1;
    bind_root(a, "fax", h);
    free(cgt_query1(dba, "DELETE FROM invalidations WHERE group_id = 'bus-names'"));
    a->hooks.drop_every = 0;
    bump(a, h);
    ck_assert_msg(wait_name(b, "fax", 2000) >= 0, "the pruned bind was never seen");
    /* a reset goes shard by shard and is counted when done: the lookup may have met the
     * root's shard already reset while others were still to go */
    for (t = 0; t < 2000; t += 10) {
        cg_core_stats_get(b, &s1);
        if (s1.cache_resets >= 1)
            break;
        usleep(10000);
    }
    ck_assert_uint_ge(s1.cache_resets, 1);
    cg_core_close(a);
    cg_core_close(b);
    busd_kill(&f, SIGTERM);
}
END_TEST

/* The next message of `type` heard on the forwarder's back end, as text. */
static void next_of_type(void *sub, const char *type, char *buf, size_t size)
{
    char want[64];
    snprintf(want, sizeof(want), "\"type\":\"%s\"", type);
    int64_t until = ms_now() + 5000;
    while (ms_now() < until) {
        zmq_msg_t m;
        int n;
        zmq_msg_init(&m);
        if ((n = zmq_msg_recv(&m, sub, 0)) >= 0 && (size_t)n < size && !zmq_msg_more(&m)) {
            memcpy(buf, zmq_msg_data(&m), (size_t)n);
            buf[n] = '\0';
            if (strstr(buf, want) != NULL) {
                zmq_msg_close(&m);
                return;
            }
        }
        zmq_msg_close(&m);
    }
    ck_abort_msg("no %s message heard within 5 s", type);
}

START_TEST(writers_keep_v1_until_every_member_reads_v2)
{
    /* PROTOCOL.md, "Versioning": writers switch to wire version 2 only once every core of the
     * group reads it. While a live member has not said so (its row stands in for an older
     * release), a bind goes out as v1 with the no-op item; once it has, as v2 with names. */
    forwarder f = busd_new();
    cg_core *a = bus_core("b11-a", "bus-v1", &f, 1, 20);
    void *ctx = zmq_ctx_new(), *sub = zmq_socket(ctx, ZMQ_SUB);
    char ep[64], msg[4096];
    int timeout = 200;
    int64_t h;
    uint64_t resets;
    cg_core_stats st;

    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", f.back);
    ck_assert_int_eq(zmq_setsockopt(sub, ZMQ_RCVTIMEO, &timeout, sizeof(timeout)), 0);
    ck_assert_int_eq(zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "bus-v1/", 7), 0);
    ck_assert_int_eq(zmq_connect(sub, ep), 0);
    wait_hearing(a);
    next_of_type(sub, "heartbeat", msg, sizeof(msg)); /* our subscription is live */
    h = create(a);                                    /* a new resource invalidates nothing */

    cg_core_stats_get(a, &st);
    resets = st.cache_resets;
    free(cgt_query1(dba, "UPDATE cores SET wire2_incarnation = NULL WHERE group_id = 'bus-v1' "
                         "RETURNING 1"));
    do { /* a's next proof reads the members and stops caching names */
        usleep(10000);
        cg_core_stats_get(a, &st);
    } while (st.cache_resets == resets);
    bind_root(a, "older", h);
    next_of_type(sub, "inval", msg, sizeof(msg));
    ck_assert_msg(strstr(msg, "\"v\":1,") == msg + 1, "not version 1: %s", msg);
    ck_assert_msg(strstr(msg, "\"items\":[{\"h\":0,\"p\":\"specification\",\"v\":1}]") != NULL,
                  "not the no-op item: %s", msg);
    ck_assert_ptr_null(strstr(msg, "names"));
    ck_assert_int_eq(root_has(a, "older"), 1); /* read from the repository */

    free(cgt_query1(dba, "UPDATE cores SET wire2_incarnation = incarnation "
                         "WHERE group_id = 'bus-v1' RETURNING 1"));
    usleep(200000); /* several proofs: every member reads version 2 again */
    bind_root(a, "newer", h);
    next_of_type(sub, "inval", msg, sizeof(msg));
    ck_assert_msg(strstr(msg, "\"v\":2,") == msg + 1, "not version 2: %s", msg);
    ck_assert_msg(strstr(msg, "\"p\":\"names\"") != NULL, "no names item: %s", msg);

    zmq_close(sub);
    zmq_ctx_term(ctx);
    cg_core_close(a);
    busd_kill(&f, SIGTERM);
}
END_TEST

START_TEST(lost_messages_are_caught_up_from_the_outbox)
{
    forwarder f = busd_new();
    cg_core *a = bus_core("b2-a", "bus-lost", &f, 1, 3600000);
    cg_core *b = bus_core("b2-b", "bus-lost", &f, 1, 3600000);
    cg_core_stats st;
    int64_t h, hs[4], v = 0;
    int i;

    wait_hearing(a);
    wait_hearing(b);
    h = create(a);
    for (i = 0; i < 4; i++)
        hs[i] = create(a);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(version_in_cache_or_repo(b, hs[i]), 1);
    a->hooks.drop_every = 2; /* every second invalidation never leaves a */
    for (i = 0; i < 4; i++)
        bump(a, hs[i]);
    v = bump(a, h); /* the fifth is sent: b sees a gap before it */
    ck_assert_int_ge(wait_version(b, h, v, 2000), 0);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(wait_version(b, hs[i], 2, 2000) >= 0, 1);
    cg_core_stats_get(b, &st);
    ck_assert_uint_ge(st.gaps, 1);
    ck_assert_uint_ge(st.catchups, 1);
    ck_assert_uint_eq(st.polls, 0);
    cg_core_stats_get(a, &st);
    ck_assert_uint_ge(st.invalidations_unsent, 2);

    /* Now nothing is sent and the outbox is pruned: b can only reset its whole cache. */
    a->hooks.drop_every = 1;
    bump(a, hs[0]);
    bump(a, hs[1]);
    free(cgt_query1(dba, "DELETE FROM invalidations WHERE group_id = 'bus-lost'"));
    a->hooks.drop_every = 0;
    v = bump(a, h);
    ck_assert_int_ge(wait_version(b, h, v, 2000), 0);
    {
        /* h's event is applied on arrival; the two missing before it are a gap only once the
         * reorder window has passed, and then the pruned outbox forces the reset */
        cg_core_stats sb;
        int64_t until = ms_now() + 2000;
        do {
            usleep(5000);
            cg_core_stats_get(b, &sb);
        } while (sb.cache_resets == 0 && ms_now() < until);
        ck_assert_uint_ge(sb.cache_resets, 1);
    }
    ck_assert_int_eq(version_in_cache_or_repo(b, hs[0]), 3); /* reset: re-read, fresh */
    ck_assert_int_eq(version_in_cache_or_repo(b, hs[1]), 3);
    cg_core_close(a);
    cg_core_close(b);
    busd_kill(&f, SIGTERM);
}
END_TEST

START_TEST(core_killed_between_commit_and_publish)
{
    forwarder f = busd_new();
    cg_core *b, *a;
    cg_core_stats st;
    int64_t h, waited;
    uint64_t polls;
    int handle[2], status;
    pid_t pid;

    ck_assert(pipe(handle) == 0);
    if ((pid = fork()) == 0) { /* forked while threadless; waits for the handle */
        int64_t target = cgt_child_recv_i64(handle);
        cg_core *k = bus_core("b3-k", "bus-kill", &f, 1, 3600000);
        k->hooks.exit_after_commit = 1;
        bump(k, target); /* commits, then the process dies before publishing */
        _exit(3);        /* not reached */
    }
    b = bus_core("b3-b", "bus-kill", &f, 1, 300);
    wait_hearing(b);
    a = bus_core("b3-a", "bus-kill", &f, 1, 3600000);
    h = create(a);
    cg_core_close(a);
    ck_assert_int_eq(version_in_cache_or_repo(b, h), 1);
    cgt_send_i64(handle, h);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the hook did not exit there");
    /* The bound is counted in polls, not in milliseconds: the first poll that begins after
     * the commit landed must bring b up to date (a poll begun before it may miss it, and one
     * more may begin while this test looks). */
    cg_core_stats_get(b, &st);
    polls = st.polls;
    waited = wait_version(b, h, 2, 3000);
    ck_assert_msg(waited >= 0, "b never converged");
    cg_core_stats_get(b, &st);
    ck_assert_msg(st.polls <= polls + 2, "b converged only %" PRIu64 " polls after the commit",
                  st.polls - polls);
    printf("after a core died between commit and publish, b converged in %" PRId64
           " ms (poll interval 300 ms)\n",
           waited);
    cg_core_close(b);
    busd_kill(&f, SIGTERM);
}
END_TEST

START_TEST(forwarder_killed_and_restarted)
{
    forwarder f = busd_new();
    cg_core *a = bus_core("b4-a", "bus-fwd", &f, 1, 400);
    cg_core *b = bus_core("b4-b", "bus-fwd", &f, 1, 400);
    cg_core_stats st1, st2;
    int64_t h, v;

    wait_hearing(a);
    wait_hearing(b);
    h = create(a);
    ck_assert_int_eq(version_in_cache_or_repo(b, h), 1);
    busd_kill(&f, SIGKILL);
    v = bump(a, h); /* the bus is down: the backstop carries it */
    ck_assert_int_ge(wait_version(b, h, v, 400 + 1000), 0);
    busd_start(&f); /* same ports: ZeroMQ reconnects */
    cg_core_stats_get(b, &st1);
    {
        int64_t until = ms_now() + 10000;
        do { /* heartbeats flow again */
            usleep(20000);
            cg_core_stats_get(b, &st2);
        } while (st2.heartbeats_received < st1.heartbeats_received + 2 && ms_now() < until);
        ck_assert_uint_ge(st2.heartbeats_received, st1.heartbeats_received + 2);
    }
    v = bump(a, h);
    ck_assert_int_ge(wait_version(b, h, v, 2000), 0);
    cg_core_close(a);
    cg_core_close(b);
    busd_kill(&f, SIGTERM);
}
END_TEST

START_TEST(two_forwarders_one_killed)
{
    forwarder fs[2] = {busd_new(), busd_new()};
    cg_core *a = bus_core("b5-a", "bus-two", fs, 2, 3600000);
    cg_core *b = bus_core("b5-b", "bus-two", fs, 2, 3600000);
    cg_core_stats st;
    int64_t h, v;

    wait_hearing(a);
    wait_hearing(b);
    h = create(a);
    ck_assert_int_eq(version_in_cache_or_repo(b, h), 1);
    {
        /* Every update reaches b twice, one copy per forwarder, and the second is dropped by
         * seq. Until both of b's subscriptions are live (ZeroMQ's slow joiner), a copy may come
         * through one forwarder only: update again, a bounded number of times. */
        int round;
        for (round = 0; round < 20; round++) {
            int64_t until;
            v = bump(a, h);
            ck_assert_int_ge(wait_version(b, h, v, 2000), 0);
            until = ms_now() + 500;
            do {
                cg_core_stats_get(b, &st);
            } while (st.duplicates < 1 && ms_now() < until && usleep(5000) == 0);
            if (st.duplicates >= 1)
                break;
        }
    }
    ck_assert_uint_ge(st.duplicates, 1);
    busd_kill(&fs[0], SIGKILL);
    v = bump(a, h);
    ck_assert_int_ge(wait_version(b, h, v, 2000), 0);
    cg_core_stats_get(b, &st);
    ck_assert_uint_eq(st.polls, 0); /* the surviving forwarder carried it */
    cg_core_close(a);
    cg_core_close(b);
    busd_kill(&fs[1], SIGTERM);
}
END_TEST

START_TEST(bad_messages_are_dropped_and_counted)
{
    forwarder f = busd_new();
    cg_core *b = bus_core("b6-b", "bus-bad", &f, 1, 3600000);
    void *ctx = zmq_ctx_new(), *pub = zmq_socket(ctx, ZMQ_PUB);
    char ep[64];
    const char *junk[] = {"{not json", "{\"v\":3,\"type\":\"inval\"}",
                          "{\"v\":1,\"type\":\"inval\",\"group\":\"bus-other\",\"seq\":1,"
                          "\"origin\":\"x\",\"inc\":1,\"at\":1,\"items\":[{\"h\":1,\"p\":\"state\","
                          "\"v\":2}]}",
                          "{\"v\":1,\"type\":\"inval\",\"group\":\"bus-bad\",\"seq\":999999,"
                          "\"origin\":\"x\",\"inc\":1,\"at\":1,\"items\":[{\"h\":1,\"p\":\"state\","
                          "\"v\":2}]}"};
    cg_core_stats st;
    int64_t until;
    int i, round;

    wait_hearing(b);
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", f.front);
    ck_assert_int_eq(zmq_connect(pub, ep), 0);
    until = ms_now() + 5000;
    for (round = 0; ms_now() < until; round++) { /* until the slow joiner has joined */
        for (i = 0; i < 4; i++) {
            zmq_send(pub, "bus-bad/", 8, ZMQ_SNDMORE);
            zmq_send(pub, junk[i], strlen(junk[i]), 0);
        }
        usleep(50000);
        cg_core_stats_get(b, &st);
        if (st.messages_dropped >= 4)
            break;
    }
    ck_assert_uint_ge(st.messages_dropped, 4);
    ck_assert_int_lt(st.applied_seq, 999999); /* the seq from the future was not applied */
    ck_assert_uint_eq(st.cache_resets, 0);
    ck_assert_int_ge(round, 0);
    /* b still works */
    ck_assert_int_eq(version_in_cache_or_repo(b, create(b)), 1);
    zmq_close(pub);
    zmq_ctx_term(ctx);
    cg_core_close(b);
    busd_kill(&f, SIGTERM);
}
END_TEST

START_TEST(aborted_call_publishes_nothing)
{
    forwarder f = busd_new();
    cg_core *a = bus_core("b7-a", "bus-abort", &f, 1, 3600000);
    char *dir = cgt_tmpdir(), out[1100], cmd[2048], *lines, *p;
    int64_t h, v, seq;
    cg_call *call;
    pid_t watch;
    int rc, n = 0;

    wait_hearing(a);
    h = create(a);
    snprintf(out, sizeof(out), "%s/watch.jsonl", dir);
    snprintf(cmd, sizeof(cmd),
             "exec '%s/cg-watch' --json --group bus-abort --connect "
             "tcp://127.0.0.1:%d > '%s'",
             cgt_binary_dir(), f.back, out);
    if ((watch = fork()) == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    { /* wait for the watcher to see a's heartbeats */
        int64_t until = ms_now() + 10000;
        for (;;) {
            lines = cgt_run(&rc, "grep -c heartbeat '%s' || true", out);
            n = atoi(lines);
            free(lines);
            if (n >= 2 || ms_now() > until)
                break;
            usleep(20000);
        }
        ck_assert_int_ge(n, 2);
    }
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"aborted\":true}"));
    cg_call_abort(call);
    v = bump(a, h);
    seq = cgt_query_i64(dba, "SELECT event_seq FROM core_groups WHERE group_id = 'bus-abort'");
    usleep(300000);
    kill(watch, SIGINT);
    waitpid(watch, &rc, 0);
    ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "cg-watch did not exit 0 on SIGINT");
    lines = cgt_run(&rc, "grep '\"inval\"' '%s'", out);
    n = 0;
    for (p = lines; (p = strstr(p, "\"inval\"")) != NULL; p++)
        n++;
    ck_assert_msg(n == 1, "expected exactly the committed call's invalidation, got %d:\n%s", n,
                  lines);
    {
        char want[64];
        snprintf(want, sizeof(want), "\"seq\":%" PRId64, seq);
        ck_assert_msg(strstr(lines, want) != NULL, "%s not in %s", want, lines);
    }
    ck_assert_int_eq(v, 2);
    free(lines);
    free(dir);
    cg_core_close(a);
    busd_kill(&f, SIGTERM);
}
END_TEST

START_TEST(degraded_when_neither_bus_nor_repository)
{
    forwarder f = busd_new();
    cg_core *b = bus_core_bounded("b8-b", "bus-deg", &f, 200, 1000);
    cg_core_stats st;
    cg_part *p;
    int64_t h, until;

    wait_hearing(b);
    h = create(b);
    ck_assert_int_eq(version_in_cache_or_repo(b, h), 1); /* cached */
    busd_kill(&f, SIGKILL);                              /* the bus goes silent ... */
    cgt_restart_async("fast", 3); /* ... and the repository is down for 3 s */
    until = ms_now() + 2500;
    do {
        usleep(20000);
        cg_core_stats_get(b, &st);
    } while (!st.degraded && ms_now() < until);
    ck_assert_msg(st.degraded, "b never said it was degraded");
    /* degraded: the cached copy is not served, and with the repository unreachable the read
     * fails degraded at once instead of waiting out the pool's reconnect attempts */
    CGT_EXPECT(CG_EDEGRADED, cg_part_read(&p, b, h, CG_PART_STATE));
    until = ms_now() + 15000; /* the repository comes back: b proves itself fresh again */
    do {
        usleep(50000);
        cg_core_stats_get(b, &st);
    } while (st.degraded && ms_now() < until);
    ck_assert_msg(!st.degraded, "b stayed degraded after the repository came back");
    ck_assert_int_eq(version_in_cache_or_repo(b, h), 1);
    /* the poll recorded b's applied point in its membership row (the suite's own connection
     * did not survive the restart) */
    cgt_restart_wait();
    PQreset(dba);
    ck_assert_int_eq(
        cgt_query_i64(dba, "SELECT applied_seq FROM cores WHERE core_name = 'b8-b'"),
        cgt_query_i64(dba, "SELECT event_seq FROM core_groups WHERE group_id = 'bus-deg'"));
    cg_core_close(b);
}
END_TEST

START_TEST(curve_secured_bus)
{
    char *dir = cgt_tmpdir(), path[3][1000], key[1100], cmd[4096], ep[64], *out;
    forwarder f = {free_port(), free_port(), 0};
    cg_core *a, *b;
    cg_config *cfg;
    int64_t h, v, until;
    cg_core_stats before, after;
    void *ctx, *pub;
    int i, rc;
    const char *names[2] = {"b9-a", "b9-b"};
    cg_core **cores[2] = {&a, &b};

    snprintf(path[0], sizeof(path[0]), "%s/server", dir);
    snprintf(path[1], sizeof(path[1]), "%s/a", dir);
    snprintf(path[2], sizeof(path[2]), "%s/b", dir);
    for (i = 0; i < 3; i++)
        cgt_keygen(path[i]);
    /* every key file with a comment line above its key, as an operator keeps them: the cores'
     * [bus] keys are read by the same reader as cg-busd's (invalidation/keyfile.c) */
    out = cgt_run(&rc,
                  "cd '%s' && for f in server.key server.pub a.key a.pub b.key b.pub; do "
                  "sed -i \"1i # $f, as an operator keeps it\" \"$f\" || exit 1; done",
                  dir);
    ck_assert_msg(rc == 0, "%s", out);
    free(out);
    out = cgt_run(&rc, "cat '%s.pub' '%s.pub' > '%s/clients'", path[1], path[2], dir);
    free(out);
    snprintf(cmd, sizeof(cmd),
             "exec '%s/cg-busd' --frontend tcp://127.0.0.1:%d --backend tcp://127.0.0.1:%d "
             "--curve-secret-key '%s.key' --curve-public-key '%s.pub' --curve-clients '%s/clients' "
             "--quiet",
             cgt_binary_dir(), f.front, f.back, path[0], path[0], dir);
    if ((f.pid = fork()) == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 2; i++) {
        cfg = cgt_core_config(dsn, names[i], "bus-curve");
        snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", f.front);
        cg_config_set_string(&cfg->publish[cfg->n_publish++], ep);
        snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", f.back);
        cg_config_set_string(&cfg->subscribe[cfg->n_subscribe++], ep);
        cfg->heartbeat_interval_ms = 50;
        snprintf(key, sizeof(key), "%s.pub", path[0]);
        cg_config_set_string(&cfg->curve_server_key, key);
        snprintf(key, sizeof(key), "%s.pub", path[i + 1]);
        cg_config_set_string(&cfg->curve_public_key, key);
        snprintf(key, sizeof(key), "%s.key", path[i + 1]);
        cg_config_set_string(&cfg->curve_secret_key, key);
        *cores[i] = cgt_core_open_cfg(cfg);
    }
    wait_hearing(a);
    wait_hearing(b);
    h = create(a);
    ck_assert_int_eq(version_in_cache_or_repo(b, h), 1);

    /* a forger without CURVE sends a well-formed invalidation of b's cached part */
    cg_core_stats_get(b, &before);
    ctx = zmq_ctx_new();
    pub = zmq_socket(ctx, ZMQ_PUB);
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", f.front);
    zmq_connect(pub, ep);
    until = ms_now() + 1000;
    while (ms_now() < until) {
        char forged[512];
        snprintf(forged, sizeof(forged),
                 "{\"v\":1,\"type\":\"inval\",\"group\":\"bus-curve\",\"seq\":%" PRId64
                 ",\"origin\":\"evil\",\"inc\":1,\"at\":1,\"items\":[{\"h\":%" PRId64
                 ",\"p\":\"state\",\"v\":99}]}",
                 before.applied_seq + 1, h);
        zmq_send(pub, "bus-curve/", 10, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(pub, forged, strlen(forged), ZMQ_DONTWAIT);
        usleep(20000);
    }
    zmq_close(pub);
    zmq_ctx_term(ctx);
    cg_core_stats_get(b, &after);
    ck_assert_uint_eq(after.invalidations_received, before.invalidations_received);
    ck_assert_uint_eq(after.messages_dropped, before.messages_dropped);
    ck_assert_int_eq(version_in_cache_or_repo(b, h), 1); /* still cached, nothing forged got in */

    /* the legitimate path works through the secured forwarder */
    v = bump(a, h);
    ck_assert_int_ge(wait_version(b, h, v, 2000), 0);
    cg_core_stats_get(b, &after);
    ck_assert_uint_gt(after.invalidations_received, before.invalidations_received);
    cg_core_close(a);
    cg_core_close(b);
    busd_kill(&f, SIGTERM);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("bus");
    TCase *tc = tcase_create("forwarded");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, update_reaches_the_group_and_only_the_group);
    tcase_add_test(tc, lost_messages_are_caught_up_from_the_outbox);
    tcase_add_test(tc, bind_reaches_lookup_on_another_core);
    tcase_add_test(tc, writers_keep_v1_until_every_member_reads_v2);
    tcase_add_test(tc, core_killed_between_commit_and_publish);
    tcase_add_test(tc, forwarder_killed_and_restarted);
    tcase_add_test(tc, two_forwarders_one_killed);
    tcase_add_test(tc, bad_messages_are_dropped_and_counted);
    tcase_add_test(tc, aborted_call_publishes_nothing);
    tcase_add_test(tc, curve_secured_bus);
    tcase_add_test(tc, degraded_when_neither_bus_nor_repository);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
