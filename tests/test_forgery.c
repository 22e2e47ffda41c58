/*
 * test_forgery.c — forged bus messages cost at most repository reads, never wrong data: real
 * cores, real cg-busd forwarders, the real PostgreSQL of the harness, and a forger that is a
 * plain ZeroMQ PUB socket (libzmq, no coregroup code) connected to a forwarder's frontend.
 * Without CURVE anyone who reaches a frontend can publish (PROTOCOL.md, "Forged messages"):
 *  - the NEXT seq, forged with other items before the real commit, does not hide the real
 *    invalidation: its real copies conflict with the forged one, the conflict is applied and
 *    counted, and the seq is read from the outbox (bus.c, on_conflict);
 *  - the same forgery with the real message lost on the bus: the next freshness proof finds
 *    the seq counted as applied above the repository's counter and forgets it, so the real
 *    event is caught up from the outbox instead of being proved applied (poll.c);
 *  - a huge version only raises a floor: the next read of the part costs two repository reads
 *    and returns the repository's version, and the part caches normally again (cache.c,
 *    "Disproved floors");
 *  - another group's message and malformed ones are dropped and counted before any effect;
 *  - copies of a real event (two forwarders, another origin, items in another order) are
 *    duplicates, not conflicts.
 * With CURVE, publishers without a key, with a key the forwarder does not list, or claiming a
 * listed public key without its secret key get nothing to a core: its counters do not move
 * and its cached entry stays; a listed key does get through (the control).
 * coregroupd logs conflicts at warn, once per 100 (the library never prints).
 * Each test checks what the forged-at core serves against the repository's own version.
 * Needs CG_TEST_HOOKS (a publisher that drops every invalidation) and the cg-busd program.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zmq.h>

#include "bustest.h"
#include "core_internal.h"
#include "testutil.h"

#define HUGE_VERSION ((int64_t)9007199254740991) /* 2^53 - 1, the largest the wire carries */

static char *dsn, *dir;
static PGconn *dba;

static void setup(void)
{
    dsn = cgt_createdb("forgery", 1);
}

static void teardown(void)
{
    free(dsn);
}

/* In each test's own process: a connection, and a directory removed when the test ends. */
static void test_setup(void)
{
    dba = cgt_connect(dsn);
    dir = cgt_tmpdir();
}

static void test_teardown(void)
{
    PQfinish(dba);
    free(dir);
}

/* The group's event counter and the state part's version, as the repository has them. */
static int64_t event_seq(const char *group)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT event_seq FROM core_groups WHERE group_id = '%s'", group);
    return cgt_query_i64(dba, sql);
}

static int64_t repo_version(const char *group, int64_t h)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT version FROM resource_parts WHERE group_id = '%s' AND handle = %" PRId64
             " AND part = 'state'",
             group, h);
    return cgt_query_i64(dba, sql);
}

/* A core of `group` publishing to and subscribing from the given forwarders. */
static cg_config *config(const char *name, const char *group, bt_busd *fs, int nf, int poll_ms)
{
    cg_config *cfg = cgt_core_config(dsn, name, group);
    int i;
    for (i = 0; i < nf; i++) {
        cg_config_set_string(&cfg->publish[cfg->n_publish++], fs[i].fe);
        cg_config_set_string(&cfg->subscribe[cfg->n_subscribe++], fs[i].be);
    }
    cfg->heartbeat_interval_ms = 50;
    cfg->poll_interval_ms = poll_ms;
    return cfg;
}

static cg_core_stats stats(cg_core *core)
{
    cg_core_stats st;
    cg_core_stats_get(core, &st);
    return st;
}

/* Wait (at most 10 s) until `cond` holds, reading `st` from `core` before each look. */
#define WAIT_STATS(core, st, cond, what)                                                           \
    do {                                                                                           \
        int64_t until_ = bt_ms() + 10000;                                                          \
        for (;;) {                                                                                 \
            (st) = stats(core);                                                                    \
            if (cond)                                                                              \
                break;                                                                             \
            ck_assert_msg(bt_ms() < until_, "%s: never %s", cg_core_name(core), what);             \
            usleep(5000);                                                                          \
        }                                                                                          \
    } while (0)

static void wait_hearing(cg_core *core)
{
    cg_core_stats st;
    WAIT_STATS(core, st, st.heartbeats_received >= 2, "heard the bus");
}

/* Wait until `core` has applied every event of its group so far. */
static void wait_applied(cg_core *core, const char *group)
{
    int64_t e = event_seq(group);
    cg_core_stats st;
    WAIT_STATS(core, st, st.applied_seq == e, "applied the group's events");
}

/* Read the state part of h on `core` and check it against the repository: nothing older than
 * what the repository held when the read began, nothing newer than it holds after. */
static int64_t read_checked(cg_core *core, const char *group, int64_t h)
{
    int64_t before = repo_version(group, h), v = cgt_read_version(core, h);
    ck_assert_msg(v >= before && v <= repo_version(group, h),
                  "%s served version %" PRId64 " of %" PRId64 ", the repository has %" PRId64,
                  cg_core_name(core), v, h, before);
    return v;
}

/* Milliseconds until `core` serves version >= v of h's state, or -1 after limit_ms. */
static int64_t wait_version(cg_core *core, int64_t h, int64_t v, int64_t limit_ms)
{
    int64_t t0 = bt_ms();
    while (bt_ms() - t0 <= limit_ms) {
        if (cgt_read_version(core, h) >= v)
            return bt_ms() - t0;
        usleep(2000);
    }
    return -1;
}

/* ---- the forger: a raw PUB socket ----------------------------------------------------- */

static void *forger_new(void *ctx, const char *frontend)
{
    void *pub = bt_socket(ctx, ZMQ_PUB);
    ck_assert_int_eq(zmq_connect(pub, frontend), 0);
    return pub;
}

/* Send junk until `victim` counts it as dropped: the forger's path through the forwarder is
 * live (ZeroMQ's slow joiner), and the counters taken after this see only what follows. */
static void forger_join(void *pub, cg_core *victim, const char *group)
{
    char topic[CG_BUS_TOPIC_MAX];
    cg_core_stats st = stats(victim);
    uint64_t dropped = st.messages_dropped;
    int64_t until = bt_ms() + 10000;
    ck_assert_int_eq(cg_bus_topic(topic, sizeof(topic), group), 0);
    for (;;) {
        bt_send_raw(pub, topic, "forger says hello", 17);
        usleep(20000);
        st = stats(victim);
        if (st.messages_dropped > dropped)
            break;
        ck_assert_msg(bt_ms() < until, "the forger never reached %s", cg_core_name(victim));
    }
    usleep(50000); /* the last hellos are counted before the test takes its counters */
}

/* A forged invalidation of `group`, seq `seq`, with n items of the state part. */
static void forge(void *pub, const char *group, int64_t seq, const int64_t *handles,
                  const int64_t *versions, size_t n)
{
    cg_bus_item items[8];
    cg_bus_msg m = bt_msg(CG_MSG_INVALIDATION, group, "forger", seq);
    size_t i;
    ck_assert(n <= 8);
    for (i = 0; i < n; i++)
        items[i] = (cg_bus_item){handles[i], CG_PART_STATE, versions[i]};
    m.items = items;
    m.n_items = n;
    bt_send(pub, &m);
}

/* ---- without CURVE ---------------------------------------------------------------------- */

/*
 * The forger publishes the group's NEXT seq, naming another part, before the real commit of
 * that seq; then the real commit comes, through two forwarders. The real eviction must still
 * happen (with de-duplication by seq alone the real copies were dropped as duplicates and the
 * seq counted as applied, so every proof renewed the lease over the stale entry). No proof
 * runs during the test (poll interval of an hour): the conflict alone must do it.
 */
START_TEST(next_seq_forged_first_does_not_hide_the_real_eviction)
{
    const char *g = "forge-next";
    bt_busd f[2];
    cg_core *a, *b;
    cg_core_stats st, before;
    void *ctx = zmq_ctx_new(), *pub;
    int64_t h, h2, e, v, two = 2;

    memset(f, 0, sizeof(f));
    bt_busd_start(&f[0], dir, "next0", NULL);
    bt_busd_start(&f[1], dir, "next1", NULL);
    a = cgt_core_open_cfg(config("fn-a", g, f, 2, 3600000));
    b = cgt_core_open_cfg(config("fn-b", g, f, 2, 3600000));
    wait_hearing(a);
    wait_hearing(b);
    h = cgt_create(a);
    h2 = cgt_create(a);
    wait_applied(b, g);
    ck_assert_int_eq(read_checked(b, g, h), 1); /* both cached on b */
    ck_assert_int_eq(read_checked(b, g, h2), 1);
    e = event_seq(g);

    pub = forger_new(ctx, f[0].fe); /* one forwarder: the real copies come through both */
    forger_join(pub, b, g);
    before = stats(b);
    forge(pub, g, e + 1, &h2, &two, 1); /* seq e + 1 "changed h2", which nobody touched */
    WAIT_STATS(b, st, st.invalidations_received > before.invalidations_received,
               "heard the forged next seq");
    ck_assert_int_eq(st.applied_seq, e + 1); /* taken as the next event: nothing says otherwise */
    ck_assert_int_eq(read_checked(b, g, h2), 1); /* h2 evicted: a read goes to the repository */

    v = cgt_bump(a, h); /* the real event e + 1 */
    ck_assert_int_eq(event_seq(g), e + 1);
    ck_assert_msg(wait_version(b, h, v, 3000) >= 0,
                  "b still serves version 1 of h after the real event %" PRId64
                  " (dropped as a duplicate of the forged one?)",
                  e + 1);
    ck_assert_int_eq(read_checked(b, g, h), v);
    /* counted, settled from the outbox, and proved applied again */
    WAIT_STATS(b, st,
               st.bus_conflicts >= 1 && st.catchups > before.catchups && st.applied_seq == e + 1,
               "settled the conflict from the outbox");
    usleep(200000); /* both forwarders' real copies are in: the second is a duplicate */
    st = stats(b);
    ck_assert_uint_eq(st.bus_conflicts, 1);
    ck_assert_int_eq(st.applied_seq, e + 1);
    ck_assert_int_eq(read_checked(b, g, h2), 1);
    ck_assert_int_eq(read_checked(b, g, h), v);

    /* b goes on as before: the next real event is applied from the bus, with no conflict */
    v = cgt_bump(a, h);
    ck_assert_int_ge(wait_version(b, h, v, 3000), 0);
    ck_assert_uint_eq(stats(b).bus_conflicts, 1);
    printf("next seq forged first: %" PRIu64 " conflict, %" PRIu64 " catch-ups, %" PRIu64
           " duplicates on b\n",
           st.bus_conflicts, st.catchups - before.catchups, st.duplicates - before.duplicates);

    zmq_close(pub);
    zmq_ctx_term(ctx);
    cg_core_close(a);
    cg_core_close(b);
    bt_busd_kill(&f[0]);
    bt_busd_kill(&f[1]);
}
END_TEST

/*
 * The forged NEXT seq again, but the real message never arrives (a's publisher drops every
 * invalidation): no conflict can tell. The freshness proof that follows the forgery reads the
 * group's counter below the seq b counted as applied, so b forgets it; the real event is then
 * caught up from the outbox instead of being "proved" applied. Proofs every 100 ms.
 */
START_TEST(next_seq_forged_with_the_real_one_lost_is_caught_up)
{
    const char *g = "forge-lost";
    bt_busd f;
    cg_core *a, *b;
    cg_core_stats st, before;
    void *ctx = zmq_ctx_new(), *pub;
    int64_t h, h2, e, v, two = 2;

    memset(&f, 0, sizeof(f));
    bt_busd_start(&f, dir, "lost", NULL);
    a = cgt_core_open_cfg(config("fl-a", g, &f, 1, 3600000));
    b = cgt_core_open_cfg(config("fl-b", g, &f, 1, 100));
    wait_hearing(a);
    wait_hearing(b);
    h = cgt_create(a);
    h2 = cgt_create(a);
    wait_applied(b, g);
    ck_assert_int_eq(read_checked(b, g, h), 1);
    e = event_seq(g);

    pub = forger_new(ctx, f.fe);
    forger_join(pub, b, g);
    before = stats(b);
    forge(pub, g, e + 1, &h2, &two, 1);
    /* the next proof finds seq e + 1 counted as applied but not in the repository */
    WAIT_STATS(b, st,
               st.messages_dropped > before.messages_dropped &&
                   st.invalidations_received > before.invalidations_received,
               "forgot the forged seq at a proof");
    ck_assert_int_eq(st.applied_seq, e);
    ck_assert_int_eq(read_checked(b, g, h), 1); /* still cached, and still right */

    a->hooks.drop_every = 1; /* the real event e + 1 never leaves a */
    v = cgt_bump(a, h);
    ck_assert_int_eq(event_seq(g), e + 1);
    ck_assert_msg(wait_version(b, h, v, 5000) >= 0,
                  "b still serves version 1 of h: the forged seq stood in for the real one");
    ck_assert_int_eq(read_checked(b, g, h), v);
    ck_assert_int_eq(read_checked(b, g, h2), 1);
    WAIT_STATS(b, st, st.applied_seq == e + 1, "caught up the real event");
    ck_assert_uint_eq(st.bus_conflicts, 0); /* no second copy came: the proof did it */
    ck_assert_uint_gt(st.catchups, before.catchups);
    ck_assert_uint_ge(stats(a).invalidations_unsent, 1);

    zmq_close(pub);
    zmq_ctx_term(ctx);
    cg_core_close(a);
    cg_core_close(b);
    bt_busd_kill(&f);
}
END_TEST

/*
 * A forged invalidation of a cached part to 2^53 - 1, with a seq from the far future: the
 * entry is evicted and its floor raised at once (the order of arrival never delays an
 * eviction), the seq is forgotten at the catch-up. The floor must only cost reads: the next
 * read returns the repository's version after two repository reads, and the part is cached
 * again from the read after (before the fix, every read of it failed "changed during each of
 * 3 reads" until 256 other floors of its shard had come and gone).
 */
START_TEST(huge_version_costs_reads_not_the_part)
{
    const char *g = "forge-huge";
    bt_busd f;
    cg_core *a, *b;
    cg_core_stats st, before, r1;
    void *ctx = zmq_ctx_new(), *pub;
    int64_t h, e, v, huge = HUGE_VERSION;

    memset(&f, 0, sizeof(f));
    bt_busd_start(&f, dir, "huge", NULL);
    a = cgt_core_open_cfg(config("fh-a", g, &f, 1, 3600000));
    b = cgt_core_open_cfg(config("fh-b", g, &f, 1, 3600000));
    wait_hearing(a);
    wait_hearing(b);
    h = cgt_create(a);
    wait_applied(b, g);
    ck_assert_int_eq(read_checked(b, g, h), 1);
    e = event_seq(g);

    pub = forger_new(ctx, f.fe);
    forger_join(pub, b, g);
    before = stats(b);
    forge(pub, g, e + 1000000, &h, &huge, 1);
    WAIT_STATS(b, st,
               st.invalidations_received > before.invalidations_received &&
                   st.catchups > before.catchups && st.messages_dropped > before.messages_dropped,
               "applied the forgery and forgot its seq from the future");
    ck_assert_int_eq(st.applied_seq, e);
    ck_assert_uint_gt(st.invalidations_applied, before.invalidations_applied);

    before = stats(b);
    ck_assert_int_eq(read_checked(b, g, h), 1); /* the repository's version, not an error */
    r1 = stats(b);
    ck_assert_uint_eq(r1.repository_reads - before.repository_reads, 2);
    ck_assert_int_eq(read_checked(b, g, h), 1); /* cached again */
    ck_assert_int_eq(read_checked(b, g, h), 1);
    st = stats(b);
    ck_assert_uint_eq(st.repository_reads - r1.repository_reads, 1);
    ck_assert_uint_ge(st.cache_hits - r1.cache_hits, 1);

    /* and real invalidations of it work as before */
    v = cgt_bump(a, h);
    ck_assert_int_ge(wait_version(b, h, v, 3000), 0);
    ck_assert_int_eq(read_checked(b, g, h), v);

    zmq_close(pub);
    zmq_ctx_term(ctx);
    cg_core_close(a);
    cg_core_close(b);
    bt_busd_kill(&f);
}
END_TEST

/* Another group's message (on this group's topic) and malformed ones: dropped and counted by
 * the decoder, before they can evict, raise a floor or move the applied point. */
START_TEST(foreign_and_malformed_are_dropped_before_any_effect)
{
    const char *g = "forge-bad";
    char topic[CG_BUS_TOPIC_MAX], text[512];
    bt_busd f;
    cg_core *a, *b;
    cg_core_stats st, before;
    void *ctx = zmq_ctx_new(), *pub;
    int64_t h, e, v;
    int sent = 0, i;

    memset(&f, 0, sizeof(f));
    bt_busd_start(&f, dir, "bad", NULL);
    a = cgt_core_open_cfg(config("fb-a", g, &f, 1, 3600000));
    b = cgt_core_open_cfg(config("fb-b", g, &f, 1, 3600000));
    wait_hearing(a);
    wait_hearing(b);
    h = cgt_create(a);
    wait_applied(b, g);
    ck_assert_int_eq(read_checked(b, g, h), 1);
    e = event_seq(g);
    ck_assert_int_eq(cg_bus_topic(topic, sizeof(topic), g), 0);

    pub = forger_new(ctx, f.fe);
    forger_join(pub, b, g);
    before = stats(b);
    {
        /* each names h at a huge version with the next seq: any effect would show */
        const char *fmt[] = {
            /* another group, on our topic */
            "{\"v\":1,\"type\":\"inval\",\"group\":\"forge-other\",\"seq\":%" PRId64
            ",\"origin\":\"x\",\"inc\":1,\"at\":1,\"items\":[{\"h\":%" PRId64
            ",\"p\":\"state\",\"v\":9007199254740991}]}",
            /* our group, but not byte-exact */
            "{\"v\":1,\"type\":\"inval\",\"group\":\"Forge-bad\",\"seq\":%" PRId64
            ",\"origin\":\"x\",\"inc\":1,\"at\":1,\"items\":[{\"h\":%" PRId64
            ",\"p\":\"state\",\"v\":9007199254740991}]}",
            /* our group followed by an escaped NUL */
            "{\"v\":1,\"type\":\"inval\",\"group\":\"forge-bad\\u0000x\",\"seq\":%" PRId64
            ",\"origin\":\"x\",\"inc\":1,\"at\":1,\"items\":[{\"h\":%" PRId64
            ",\"p\":\"state\",\"v\":9007199254740991}]}",
            /* a version from the future */
            "{\"v\":3,\"type\":\"inval\",\"group\":\"forge-bad\",\"seq\":%" PRId64
            ",\"origin\":\"x\",\"inc\":1,\"at\":1,\"items\":[{\"h\":%" PRId64
            ",\"p\":\"state\",\"v\":9007199254740991}]}",
            /* 2^53: might have been 2^53 + 1 */
            "{\"v\":1,\"type\":\"inval\",\"group\":\"forge-bad\",\"seq\":%" PRId64
            ",\"origin\":\"x\",\"inc\":1,\"at\":1,\"items\":[{\"h\":%" PRId64
            ",\"p\":\"state\",\"v\":9007199254740992}]}",
            /* the seq given twice */
            "{\"v\":1,\"type\":\"inval\",\"group\":\"forge-bad\",\"seq\":%" PRId64
            ",\"seq\":1,\"origin\":\"x\",\"inc\":1,\"at\":1,\"items\":[{\"h\":%" PRId64
            ",\"p\":\"state\",\"v\":2}]}",
            /* truncated */
            "{\"v\":1,\"type\":\"inval\",\"group\":\"forge-bad\",\"seq\":%" PRId64
            ",\"origin\":\"x\",\"inc\":1,\"at\":1,\"items\":[{\"h\":%" PRId64 ",\"p\":\"sta",
        };
        for (i = 0; i < (int)(sizeof(fmt) / sizeof(fmt[0])); i++) {
            snprintf(text, sizeof(text), fmt[i], e + 1, h);
            bt_send_raw(pub, topic, text, strlen(text));
            sent++;
        }
    }
    /* three frames, and one */
    ck_assert_int_ge(zmq_send(pub, topic, strlen(topic), ZMQ_SNDMORE), 0);
    ck_assert_int_ge(zmq_send(pub, "{}", 2, ZMQ_SNDMORE), 0);
    ck_assert_int_ge(zmq_send(pub, "{}", 2, 0), 0);
    ck_assert_int_ge(zmq_send(pub, topic, strlen(topic), 0), 0);
    sent += 2;
    /* (An oversized frame never gets this far: cg-busd disconnects its sender, test_busd.) */

    WAIT_STATS(b, st, st.messages_dropped >= before.messages_dropped + (uint64_t)sent,
               "dropped every bad message");
    usleep(100000);
    st = stats(b);
    ck_assert_uint_eq(st.messages_dropped, before.messages_dropped + (uint64_t)sent);
    ck_assert_uint_eq(st.invalidations_received, before.invalidations_received);
    ck_assert_uint_eq(st.invalidations_applied, before.invalidations_applied);
    ck_assert_uint_eq(st.cache_evictions, before.cache_evictions);
    ck_assert_uint_eq(st.bus_conflicts, 0);
    ck_assert_int_eq(st.applied_seq, e);
    ck_assert_int_eq(read_checked(b, g, h), 1); /* still a hit: nothing was evicted */
    ck_assert_uint_eq(stats(b).repository_reads, st.repository_reads);

    v = cgt_bump(a, h); /* the real next event is not mistaken for anything */
    ck_assert_int_ge(wait_version(b, h, v, 3000), 0);
    ck_assert_int_eq(read_checked(b, g, h), v);

    zmq_close(pub);
    zmq_ctx_term(ctx);
    cg_core_close(a);
    cg_core_close(b);
    bt_busd_kill(&f);
}
END_TEST

/*
 * Copies of one real event are not conflicts: through two forwarders, and sent again by
 * someone else (a survivor republishing a failed member's events does this) with another
 * origin, incarnation and time and its items in the other order.
 */
START_TEST(copies_of_a_real_event_are_duplicates_not_conflicts)
{
    const char *g = "forge-copy";
    bt_busd f[2];
    cg_core *a, *b;
    cg_core_stats st, before;
    void *ctx = zmq_ctx_new(), *pub;
    int64_t h, h2, e, v, v2, hs[2], vs[2];
    cg_call *call;
    const cg_part *p;

    memset(f, 0, sizeof(f));
    bt_busd_start(&f[0], dir, "copy0", NULL);
    bt_busd_start(&f[1], dir, "copy1", NULL);
    a = cgt_core_open_cfg(config("fc-a", g, f, 2, 3600000));
    b = cgt_core_open_cfg(config("fc-b", g, f, 2, 3600000));
    wait_hearing(a);
    wait_hearing(b);
    h = cgt_create(a);
    h2 = cgt_create(a);
    wait_applied(b, g);
    pub = forger_new(ctx, f[1].fe);
    forger_join(pub, b, g);

    /* one call changing two parts: one event with two items */
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_part_lock(&p, call, h, CG_PART_STATE));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, cg_part_version(p), "{\"n\":1}"));
    CGT_OK(cg_part_lock(&p, call, h2, CG_PART_STATE));
    CGT_OK(cg_part_update(&v2, call, h2, CG_PART_STATE, cg_part_version(p), "{\"n\":1}"));
    CGT_OK(cg_call_commit(call));
    e = event_seq(g);
    ck_assert_int_ge(wait_version(b, h, v, 3000), 0);
    usleep(200000); /* both forwarders' copies are in (the second a duplicate) */
    before = stats(b);
    ck_assert_uint_eq(before.bus_conflicts, 0);
    hs[0] = h2; /* the same items, the other way round */
    vs[0] = v2;
    hs[1] = h;
    vs[1] = v;
    forge(pub, g, e, hs, vs, 2);
    WAIT_STATS(b, st, st.duplicates >= before.duplicates + 1, "counted the copy as a duplicate");
    usleep(200000);
    st = stats(b);
    ck_assert_uint_eq(st.bus_conflicts, 0);
    ck_assert_uint_eq(st.catchups, before.catchups);
    ck_assert_int_eq(st.applied_seq, e);
    ck_assert_int_eq(read_checked(b, g, h), v);
    ck_assert_int_eq(read_checked(b, g, h2), v2);

    zmq_close(pub);
    zmq_ctx_term(ctx);
    cg_core_close(a);
    cg_core_close(b);
    bt_busd_kill(&f[0]);
    bt_busd_kill(&f[1]);
}
END_TEST

/* The `stats` of the coregroupd configured by `ini`, through cgctl (the caller frees). */
static cJSON *daemon_stats(const char *ini)
{
    int rc;
    char *out = cgt_run(&rc, "'%s' -c '%s' --json stats", cgt_bin("cgctl"), ini);
    cJSON *j;
    ck_assert_msg(rc == 0, "cgctl stats: exit %d:\n%s", rc, out);
    j = cgt_json_line(out);
    free(out);
    return j;
}

/*
 * coregroupd logs bus conflicts at warn: at the first one, then once per 100 more, so a forger
 * flooding the bus with conflicts cannot flood the log. The conflicts here are two different
 * payloads of one far-future seq, a pair per seq (the second copy of a pending seq).
 */
START_TEST(coregroupd_logs_conflicts_once_per_hundred)
{
    const char *g = "forge-log";
    char ini[1100], log[1100], text[4096], topic[CG_BUS_TOPIC_MAX], *logtext;
    char *argv[] = {(char *)cgt_bin("coregroupd"), "-c", ini, NULL};
    bt_busd f;
    cg_config *cfg;
    cJSON *j;
    void *ctx = zmq_ctx_new(), *pub;
    long long conflicts = 0;
    int64_t until, i, v[2] = {2, 3};
    int port, lines;
    pid_t pid;

    memset(&f, 0, sizeof(f));
    bt_busd_start(&f, dir, "log", NULL);
    bt_free_ports(&port, 1);
    cfg = cgt_core_config(dsn, "fg-d", g); /* for its DSN: the core's own login */
    snprintf(text, sizeof(text),
             "[repository]\ndsn = %s\npool_size = 2\n[core]\nname = fg-d\ngroup = %s\n"
             "log_level = info\n[bus]\npublish = %s\nsubscribe = %s\nheartbeat_interval_ms = 50\n"
             "[retry]\nattempts = 1\ninterval_ms = 100\n"
             "[daemon]\nlisten = tcp://127.0.0.1:%d\nworkers = 1\n",
             cfg->dsn, g, f.fe, f.be, port);
    cg_config_free(cfg);
    snprintf(ini, sizeof(ini), "%s/fg-d.ini", dir);
    snprintf(log, sizeof(log), "%s/fg-d.log", dir);
    cgt_write_file(ini, text);
    pid = bt_spawn(argv, log, NULL);
    ck_assert_msg(bt_wait_lines(log, "event=started", NULL, 1, 20000), "coregroupd did not start");

    pub = forger_new(ctx, f.fe);
    ck_assert_int_eq(cg_bus_topic(topic, sizeof(topic), g), 0);
    until = bt_ms() + 10000;
    for (;;) { /* the forger's path is live once the daemon's core drops its junk */
        bt_send_raw(pub, topic, "forger says hello", 17);
        usleep(100000);
        j = daemon_stats(ini);
        i = cgt_jint(j, "stats.messages_dropped");
        cJSON_Delete(j);
        if (i > 0)
            break;
        ck_assert_msg(bt_ms() < until, "the forger never reached coregroupd");
    }
    for (i = 0; i < 200; i++) {
        int64_t h = i + 1;
        forge(pub, g, 1000000 + i, &h, &v[0], 1);
        forge(pub, g, 1000000 + i, &h, &v[1], 1);
    }
    until = bt_ms() + 10000;
    do {
        usleep(100000);
        j = daemon_stats(ini);
        conflicts = cgt_jint(j, "stats.bus_conflicts");
        cJSON_Delete(j);
    } while (conflicts < 150 && bt_ms() < until);
    ck_assert_msg(conflicts >= 150, "only %lld conflicts counted of 200", conflicts);
    usleep(1500000); /* the broker looks once a second */
    logtext = bt_slurp(log);
    lines = bt_lines_with(logtext, "event=bus-conflict", "level=warn");
    ck_assert_msg(lines >= 1 && lines <= 1 + conflicts / 100,
                  "%d bus-conflict lines for %lld conflicts:\n%s", lines, conflicts, logtext);
    free(logtext);
    printf("coregroupd: %lld bus conflicts, %d log lines\n", conflicts, lines);

    bt_stop(pid, SIGTERM, 0);
    zmq_close(pub);
    zmq_ctx_term(ctx);
    bt_busd_kill(&f);
}
END_TEST

/* ---- with CURVE ------------------------------------------------------------------------- */

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

static void keygen(keypair *k, const char *name)
{
    char prefix[1000];
    snprintf(prefix, sizeof(prefix), "%s/%s", dir, name);
    cgt_keygen(prefix);
    snprintf(k->pub_path, sizeof(k->pub_path), "%s.pub", prefix);
    snprintf(k->sec_path, sizeof(k->sec_path), "%s.key", prefix);
    read_z85(k->pub, k->pub_path);
    read_z85(k->sec, k->sec_path);
}

static cg_core *curve_core(const char *name, const char *group, bt_busd *f, const keypair *srv,
                           const keypair *me)
{
    cg_config *cfg = config(name, group, f, 1, 3600000);
    cg_config_set_string(&cfg->curve_server_key, srv->pub_path);
    cg_config_set_string(&cfg->curve_public_key, me->pub_path);
    cg_config_set_string(&cfg->curve_secret_key, me->sec_path);
    return cgt_core_open_cfg(cfg);
}

/* Every forgery of this suite, once, from `pub`. */
static void forge_all(void *pub, const char *group, int64_t e, int64_t h)
{
    char topic[CG_BUS_TOPIC_MAX], text[512];
    int64_t two = 2, huge = HUGE_VERSION;
    forge(pub, group, e + 1, &h, &two, 1);          /* the next seq */
    forge(pub, group, e + 1000, &h, &two, 1);       /* a seq from the future */
    forge(pub, group, e, &h, &huge, 1);             /* a seen seq, other items, huge version */
    bt_send_heartbeat(pub, group, "forger", e + 5); /* "events up to e + 5 exist" */
    ck_assert_int_eq(cg_bus_topic(topic, sizeof(topic), group), 0);
    snprintf(text, sizeof(text),
             "{\"v\":1,\"type\":\"inval\",\"group\":\"elsewhere\",\"seq\":1,\"origin\":\"x\","
             "\"inc\":1,\"at\":1,\"items\":[{\"h\":%" PRId64 ",\"p\":\"state\",\"v\":2}]}",
             h);
    bt_send_raw(pub, topic, text, strlen(text)); /* foreign */
    bt_send_raw(pub, topic, "{not json", 9);     /* malformed */
}

START_TEST(curve_keeps_unauthenticated_publishers_out)
{
    const char *g = "forge-curve";
    char clients[1100], text[200];
    keypair srv, ka, kb, kc, kx;
    const char *extra[8];
    char x_pub[41], x_sec[41];
    bt_busd f;
    cg_core *a, *b;
    cg_core_stats st, before;
    void *ctx = zmq_ctx_new(), *plain, *unlisted, *impostor, *listed;
    int64_t h, e, v, v0, until, rounds = 0;

    keygen(&srv, "srv");
    keygen(&ka, "a");
    keygen(&kb, "b");
    keygen(&kc, "c"); /* listed, used by nobody but the control */
    keygen(&kx, "x"); /* not listed */
    snprintf(clients, sizeof(clients), "%s/clients", dir);
    snprintf(text, sizeof(text), "%s\n%s\n%s\n", ka.pub, kb.pub, kc.pub);
    cgt_write_file(clients, text);
    extra[0] = "--curve-secret-key";
    extra[1] = srv.sec_path;
    extra[2] = "--curve-public-key";
    extra[3] = srv.pub_path;
    extra[4] = "--curve-clients";
    extra[5] = clients;
    extra[6] = NULL;
    memset(&f, 0, sizeof(f));
    bt_busd_start(&f, dir, "curve", extra);

    a = curve_core("fk-a", g, &f, &srv, &ka);
    b = curve_core("fk-b", g, &f, &srv, &kb);
    wait_hearing(a);
    wait_hearing(b);
    h = cgt_create(a);
    v0 = cgt_bump(a, h); /* an event b has heard: seq e is "a seen seq" below */
    wait_applied(b, g);
    ck_assert_int_eq(read_checked(b, g, h), v0);
    e = event_seq(g);
    ck_assert_int_ge(e, 1);

    plain = forger_new(ctx, f.fe);      /* no CURVE at all */
    unlisted = bt_socket(ctx, ZMQ_PUB); /* a good key the forwarder does not list */
    bt_curve_client(unlisted, srv.pub, kx.pub, kx.sec);
    ck_assert_int_eq(zmq_connect(unlisted, f.fe), 0);
    impostor = bt_socket(ctx, ZMQ_PUB); /* a's public key, without a's secret key */
    ck_assert_int_eq(zmq_curve_keypair(x_pub, x_sec), 0);
    bt_curve_client(impostor, srv.pub, ka.pub, x_sec);
    ck_assert_int_eq(zmq_connect(impostor, f.fe), 0);

    before = stats(b);
    until = bt_ms() + 1500;
    while (bt_ms() < until) { /* long past any slow joiner */
        forge_all(plain, g, e, h);
        forge_all(unlisted, g, e, h);
        forge_all(impostor, g, e, h);
        rounds++;
        usleep(20000);
    }
    usleep(200000);
    st = stats(b);
    ck_assert_uint_eq(st.invalidations_received, before.invalidations_received);
    ck_assert_uint_eq(st.invalidations_applied, before.invalidations_applied);
    ck_assert_uint_eq(st.messages_dropped, before.messages_dropped);
    ck_assert_uint_eq(st.duplicates, before.duplicates);
    ck_assert_uint_eq(st.bus_conflicts, before.bus_conflicts);
    ck_assert_uint_eq(st.gaps, before.gaps);
    ck_assert_uint_eq(st.cache_evictions, before.cache_evictions);
    ck_assert_int_eq(st.applied_seq, e);
    ck_assert_int_eq(read_checked(b, g, h), v0); /* still cached: a hit */
    ck_assert_uint_eq(stats(b).repository_reads, st.repository_reads);

    /* The control: the same sender with a listed key does reach b (a foreign message, which
     * b drops and counts), so the silence above was CURVE's doing. */
    listed = bt_socket(ctx, ZMQ_PUB);
    bt_curve_client(listed, srv.pub, kc.pub, kc.sec);
    ck_assert_int_eq(zmq_connect(listed, f.fe), 0);
    until = bt_ms() + 10000;
    do {
        char topic[CG_BUS_TOPIC_MAX], text2[256];
        ck_assert_int_eq(cg_bus_topic(topic, sizeof(topic), g), 0);
        snprintf(text2, sizeof(text2),
                 "{\"v\":1,\"type\":\"heartbeat\",\"group\":\"elsewhere\",\"seq\":0,\"origin\":"
                 "\"c\",\"inc\":1,\"at\":1,\"applied\":0}");
        bt_send_raw(listed, topic, text2, strlen(text2));
        usleep(20000);
        st = stats(b);
    } while (st.messages_dropped == before.messages_dropped && bt_ms() < until);
    ck_assert_msg(st.messages_dropped > before.messages_dropped,
                  "not even a listed key reached b: the test proves nothing");
    printf("CURVE: %" PRId64 " rounds of forgeries from 3 unauthenticated publishers, none "
           "reached b; a listed key did\n",
           rounds);

    v = cgt_bump(a, h); /* the real path works */
    ck_assert_int_ge(wait_version(b, h, v, 3000), 0);
    ck_assert_int_eq(read_checked(b, g, h), v);

    zmq_close(plain);
    zmq_close(unlisted);
    zmq_close(impostor);
    zmq_close(listed);
    zmq_ctx_term(ctx);
    cg_core_close(a);
    cg_core_close(b);
    bt_busd_kill(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("forgery");
    TCase *tc = tcase_create("plain");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_checked_fixture(tc, test_setup, test_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, next_seq_forged_first_does_not_hide_the_real_eviction);
    tcase_add_test(tc, next_seq_forged_with_the_real_one_lost_is_caught_up);
    tcase_add_test(tc, huge_version_costs_reads_not_the_part);
    tcase_add_test(tc, foreign_and_malformed_are_dropped_before_any_effect);
    tcase_add_test(tc, copies_of_a_real_event_are_duplicates_not_conflicts);
    tcase_add_test(tc, coregroupd_logs_conflicts_once_per_hundred);
    suite_add_tcase(s, tc);
    tc = tcase_create("curve");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_checked_fixture(tc, test_setup, test_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, curve_keeps_unauthenticated_publishers_out);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
