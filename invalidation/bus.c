/*
 * bus.c — a core's publisher and subscriber: invalidations out after COMMIT, invalidations in,
 * never trusting the bus to be complete.
 *
 * This follows PostgreSQL's sinval design (inval.c, sinvaladt.c): changes are queued at write
 * time, sent after commit, dropped at abort (call.c does those three), and a reader that fell
 * too far behind resets its whole cache instead of guessing. ZeroMQ PUB/SUB drops messages
 * (slow joiner, high-water mark, reconnect, a forwarder restart), so:
 *
 *  - The subscriber subscribes FIRST and only then reads the group's event_seq as its applied
 *    point: anything published later is heard, anything earlier is already in the repository.
 *  - Every invalidation carries the group's gap-free event number. seq <= applied: a duplicate
 *    (two forwarders deliver everything twice) or old, ignored. seq == applied + 1: applied.
 *    seq > applied + 1: a gap; the missing events are read from the outbox (the
 *    `invalidations` table) in order; if the outbox no longer has applied + 1 (pruned), the
 *    whole cache is reset. A message whose seq the repository does not have is from the
 *    future: dropped and counted, never applied.
 *  - Applying an invalidation only evicts entries below a version and raises floors, which is
 *    safe in any order; `applied` only ever moves over a contiguous prefix.
 *  - The poll backstop compares applied with the repository's event_seq every
 *    poll_interval_ms and catches up, so a dead bus costs at most one interval of staleness
 *    (I5). It also records applied_seq and a heartbeat in the core's membership row.
 *  - Heartbeats (every heartbeat_interval_ms, carrying the last seq this core published) let
 *    a subscriber notice a silent bus and a missed tail. A core that has heard nothing for
 *    three heartbeat intervals AND cannot reach the repository cannot prove its cache fresh:
 *    it reports itself degraded, and reads go to the repository, not the cache.
 *
 * Threads: the publisher thread alone owns the PUB sockets; committing threads hand it their
 * change lists through a bounded queue and never block (a full queue drops the message: the
 * outbox and catch-up make that safe). The subscriber thread alone owns the SUB sockets and a
 * repository connection of its own.
 * Not here: membership events (join/leave/suspect/failed) are heard and counted only; acting
 * on them belongs to the membership layer.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "bus.h"
#include "core_internal.h"
#include "coregroup/sys/error.h"

#define QUEUE_MAX    4096 /* change lists waiting for the publisher thread */
#define CATCHUP_STEP 1000 /* events read from the outbox per round trip */
#define PRUNE_EVERY  60   /* polls between outbox prunings */

/* What the publisher thread is asked to send. */
typedef struct {
    int type;                  /* CG_MSG_INVALIDATION or CG_MSG_MEMBERSHIP */
    int64_t seq, committed_us; /* invalidation */
    cg_bus_item *items;        /* invalidation; the queue owns it */
    size_t n;
    char origin[CG_NAME_MAX + 1]; /* "": this core; else a failed member being recovered */
    int64_t origin_incarnation;
    int event; /* membership */
    char member[CG_NAME_MAX + 1];
    int64_t member_incarnation;
} queued;

struct cg_bus {
    cg_core *core;
    void *ctx;
    void *pub[CG_CONFIG_MAX_ENDPOINTS];
    size_t n_pub;
    void *sub[CG_CONFIG_MAX_ENDPOINTS];
    size_t n_sub;
    cg_conn *conn; /* the subscriber's own repository connection (may be NULL: reconnects) */
    char app_name[CG_NAME_MAX + 8]; /* "<core>/bus": what operators see in pg_stat_activity */

    pthread_t pub_thread, sub_thread;
    int pub_running, sub_running;
    atomic_int stop;

    /* the publisher's queue */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    queued queue[QUEUE_MAX];
    size_t q_head, q_len;
    int64_t last_published; /* publisher thread only */

    /* subscriber state */
    atomic_llong applied;
    atomic_llong applied_at_us; /* monotonic time `applied` last moved (latency figures) */
    int64_t last_heard_ms;      /* subscriber thread only */
    int repo_ok;

    /* counters, read by cg_bus_stats_get from any thread */
    atomic_uint_fast64_t published, publish_dropped, heartbeats_sent, received, duplicates, gaps,
        catchups, resets, heartbeats_received, members_received, polls;
    atomic_uint_fast64_t dropped[CG_DROP_COUNT];
    atomic_int degraded, bus_silent, repository_ok;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Move the applied point (subscriber thread only). */
static void set_applied(cg_bus *bus, int64_t seq)
{
    atomic_store(&bus->applied_at_us, mono_us());
    atomic_store(&bus->applied, seq);
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- sockets -------------------------------------------------------------------------- */

/* Read a Z85 key (40 characters) from a file. */
static int read_key(char key[41], const char *path, const char *what)
{
    FILE *f = fopen(path, "r");
    size_t n;
    if (f == NULL)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_BUS, "[bus] %s: cannot open %s: %s", what,
                            path, strerror(errno));
    n = fread(key, 1, 40, f);
    fclose(f);
    key[n] = '\0';
    if (n != 40 || zmq_z85_decode((uint8_t[32]){0}, key) == NULL)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_BUS,
                            "[bus] %s: %s does not hold a 40-character Z85 CURVE key", what, path);
    return 0;
}

static int curve_client(void *sock, const cg_config *cfg)
{
    char server[41], pub[41], sec[41];
    int err;
    if (cfg->curve_server_key == NULL)
        return 0;
    if ((err = read_key(server, cfg->curve_server_key, "curve_server_key")) < 0 ||
        (err = read_key(pub, cfg->curve_public_key, "curve_public_key")) < 0 ||
        (err = read_key(sec, cfg->curve_secret_key, "curve_secret_key")) < 0)
        return err;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40) != 0)
        return cg_error_set(CG_ERROR, CG_ERRCLASS_BUS, "CURVE setup: %s", zmq_strerror(errno));
    return 0;
}

static int open_socket(void **out, cg_bus *bus, int type, const char *endpoint)
{
    void *s = zmq_socket(bus->ctx, type);
    int hwm = 100000, linger = 200, err;
    *out = NULL;
    if (s == NULL)
        return cg_error_set(CG_ERROR, CG_ERRCLASS_BUS, "zmq_socket: %s", zmq_strerror(errno));
    zmq_setsockopt(s, type == ZMQ_PUB ? ZMQ_SNDHWM : ZMQ_RCVHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    if ((err = curve_client(s, bus->core->cfg)) < 0)
        goto fail;
    /* czmq's convention: "@endpoint" binds, ">endpoint" or a bare endpoint connects */
    if (endpoint[0] == '@' ? zmq_bind(s, endpoint + 1) != 0
                           : zmq_connect(s, endpoint + (endpoint[0] == '>')) != 0) {
        err =
            cg_error_set(CG_EINVALID, CG_ERRCLASS_BUS, "[bus] %s: cannot %s %s: %s",
                         type == ZMQ_PUB ? "publish" : "subscribe",
                         endpoint[0] == '@' ? "bind" : "connect to", endpoint, zmq_strerror(errno));
        goto fail;
    }
    *out = s;
    return 0;
fail:
    zmq_close(s);
    return err;
}

/* ---- publisher ------------------------------------------------------------------------ */

/* Put a request on the publisher's queue; never blocks: a full queue drops it (counted). The
 * queue takes ownership of q->items. */
static void push(cg_bus *bus, const queued *q)
{
    pthread_mutex_lock(&bus->mu);
    if (bus->q_len == QUEUE_MAX || bus->n_pub == 0) {
        pthread_mutex_unlock(&bus->mu);
        free(q->items);
        atomic_fetch_add(&bus->publish_dropped, 1);
        return;
    }
    bus->queue[(bus->q_head + bus->q_len++) % QUEUE_MAX] = *q;
    pthread_cond_signal(&bus->cv);
    pthread_mutex_unlock(&bus->mu);
}

static int copy_items(queued *q, const cg_bus_item *items, size_t n)
{
    if (n == 0 || n > CG_BUS_MSG_MAX_ITEMS || (q->items = malloc(n * sizeof(*items))) == NULL)
        return -1;
    memcpy(q->items, items, n * sizeof(*items));
    q->n = n;
    return 0;
}

/* The core's publish hook: runs on the committing thread; copies and queues, never blocks. */
static void enqueue(void *arg, const cg_inval_batch *b)
{
    cg_bus *bus = arg;
    queued q;
    memset(&q, 0, sizeof(q));
    q.type = CG_MSG_INVALIDATION;
    q.seq = b->seq;
    q.committed_us = b->committed_us;
    if (copy_items(&q, b->items, b->n) < 0) {
        atomic_fetch_add(&bus->publish_dropped, 1);
        return;
    }
    push(bus, &q);
}

void cg_bus_publish_member(cg_bus *bus, int event, const char *member, int64_t incarnation)
{
    queued q;
    if (bus == NULL)
        return;
    memset(&q, 0, sizeof(q));
    q.type = CG_MSG_MEMBERSHIP;
    q.event = event;
    snprintf(q.member, sizeof(q.member), "%s", member);
    q.member_incarnation = incarnation;
    push(bus, &q);
}

void cg_bus_republish(cg_bus *bus, const char *origin, int64_t incarnation, int64_t seq,
                      int64_t committed_us, const cg_bus_item *items, size_t n)
{
    queued q;
    if (bus == NULL)
        return;
    memset(&q, 0, sizeof(q));
    q.type = CG_MSG_INVALIDATION;
    q.seq = seq;
    q.committed_us = committed_us;
    snprintf(q.origin, sizeof(q.origin), "%s", origin);
    q.origin_incarnation = incarnation;
    if (copy_items(&q, items, n) < 0) {
        atomic_fetch_add(&bus->publish_dropped, 1);
        return;
    }
    push(bus, &q);
}

/* Send one encoded message on every PUB socket; a full high-water mark drops it there. */
static int send_all(cg_bus *bus, const char *payload, size_t len)
{
    char topic[CG_BUS_TOPIC_MAX];
    size_t i;
    int sent = 0;
    cg_bus_topic(topic, sizeof(topic), bus->core->cfg->group_id);
    for (i = 0; i < bus->n_pub; i++) {
        if (zmq_send(bus->pub[i], topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
            continue;
        if (zmq_send(bus->pub[i], payload, len, ZMQ_DONTWAIT) >= 0)
            sent++;
    }
    return sent;
}

static void publish_one(cg_bus *bus, const queued *q)
{
    cg_core *core = bus->core;
    cg_bus_msg m;
    char *payload = NULL;
    size_t len;

    memset(&m, 0, sizeof(m));
    m.type = q->type;
    snprintf(m.group, sizeof(m.group), "%s", core->cfg->group_id);
    snprintf(m.origin, sizeof(m.origin), "%s", q->origin[0] ? q->origin : core->cfg->core_name);
    m.incarnation = q->origin[0] ? q->origin_incarnation : atomic_load(&core->incarnation);
    if (q->type == CG_MSG_MEMBERSHIP) {
        m.at_us = wall_us();
        m.event = q->event;
        snprintf(m.member, sizeof(m.member), "%s", q->member);
        m.member_incarnation = q->member_incarnation;
        if (cg_bus_msg_encode(&payload, &len, &m) == 0)
            send_all(bus, payload, len);
        free(payload);
        return;
    }
    m.seq = q->seq;
    m.at_us = q->committed_us;
    m.items = q->items;
    m.n_items = q->n;
    if (!q->origin[0] && q->seq > bus->last_published)
        bus->last_published = q->seq;
#ifdef CG_TEST_HOOKS
    if (!q->origin[0] && core->hooks.drop_every > 0 &&
        atomic_fetch_add(&core->hooks.published, 1) % (unsigned)core->hooks.drop_every ==
            (unsigned)core->hooks.drop_every - 1) {
        atomic_fetch_add(&bus->publish_dropped, 1);
        return;
    }
#endif
    if (cg_bus_msg_encode(&payload, &len, &m) < 0 || send_all(bus, payload, len) == 0)
        atomic_fetch_add(&bus->publish_dropped, 1);
    else
        atomic_fetch_add(&bus->published, 1);
    free(payload);
}

static void publish_heartbeat(cg_bus *bus)
{
    cg_core *core = bus->core;
    cg_bus_msg m;
    char *payload = NULL;
    size_t len;

    memset(&m, 0, sizeof(m));
    m.type = CG_MSG_HEARTBEAT;
    snprintf(m.group, sizeof(m.group), "%s", core->cfg->group_id);
    snprintf(m.origin, sizeof(m.origin), "%s", core->cfg->core_name);
    m.seq = bus->last_published;
    m.incarnation = atomic_load(&core->incarnation);
    m.at_us = wall_us();
    m.applied_seq = atomic_load(&bus->applied);
    if (cg_bus_msg_encode(&payload, &len, &m) == 0 && send_all(bus, payload, len) > 0)
        atomic_fetch_add(&bus->heartbeats_sent, 1);
    free(payload);
}

static void *publisher(void *arg)
{
    cg_bus *bus = arg;
    int64_t interval = bus->core->cfg->heartbeat_interval_ms, next_beat = now_ms();

    for (;;) {
        queued batch[64];
        size_t n = 0, i;
        int64_t now = now_ms();

        if (now >= next_beat) {
            publish_heartbeat(bus);
            next_beat = now + interval;
        }
        pthread_mutex_lock(&bus->mu);
        if (bus->q_len == 0 && !atomic_load(&bus->stop)) {
            struct timespec until;
            int64_t wait_ms = next_beat - now_ms();
            clock_gettime(CLOCK_REALTIME, &until);
            if (wait_ms < 1)
                wait_ms = 1;
            until.tv_sec += wait_ms / 1000;
            until.tv_nsec += (wait_ms % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&bus->cv, &bus->mu, &until);
        }
        while (bus->q_len > 0 && n < 64) {
            batch[n++] = bus->queue[bus->q_head];
            bus->q_head = (bus->q_head + 1) % QUEUE_MAX;
            bus->q_len--;
        }
        pthread_mutex_unlock(&bus->mu);
        for (i = 0; i < n; i++) {
            publish_one(bus, &batch[i]);
            free(batch[i].items);
        }
        if (n == 0 && atomic_load(&bus->stop))
            break;
    }
    return NULL;
}

/* ---- subscriber ----------------------------------------------------------------------- */

/* The subscriber's repository connection, reconnected (once) when broken. */
static cg_conn *repo(cg_bus *bus)
{
    if (bus->conn && cg_repo_usable(bus->conn))
        return bus->conn;
    if (bus->conn == NULL) {
        if (cg_repo_connect(&bus->conn, bus->core->cfg, bus->app_name) < 0)
            bus->conn = NULL;
    } else if (cg_repo_reconnect(bus->conn, bus->core->cfg, bus->app_name) < 0) {
        return NULL;
    }
    return bus->conn;
}

/*
 * Bring applied up to the repository's event_seq, reading the missed events from the outbox
 * in order; reset the whole cache when the outbox no longer holds applied + 1. Returns the
 * repository's event_seq, or -1 when the repository could not be reached (applied unchanged).
 */
static int64_t catch_up(cg_bus *bus)
{
    cg_core *core = bus->core;
    const char *group = core->cfg->group_id;
    cg_conn *c = repo(bus);
    int64_t target, applied = atomic_load(&bus->applied);
    int caught = 0;

    if (c == NULL || cg_repo_event_seq(&target, c, group) < 0) {
        bus->repo_ok = 0;
        return -1;
    }
    bus->repo_ok = 1;
    while (applied < target) {
        int64_t hi = target < applied + CATCHUP_STEP ? target : applied + CATCHUP_STEP;
        cg_outbox_rows rows;
        size_t i;
        if (cg_repo_outbox_items(&rows, c, group, applied, hi) < 0) {
            bus->repo_ok = 0;
            return -1;
        }
        if (rows.n == 0 || rows.seq[0] != applied + 1 || rows.seq[rows.n - 1] != hi) {
            /* what we missed is no longer in the outbox: forget everything (sinval's reset) */
            cg_outbox_rows_dispose(&rows);
            cg_core__reset(core);
            atomic_fetch_add(&bus->resets, 1);
            applied = target;
            break;
        }
        for (i = 0; i < rows.n; i++)
            cg_core__invalidate(core, &rows.items[i], 1);
        applied = hi;
        caught = 1;
        cg_outbox_rows_dispose(&rows);
    }
    if (caught)
        atomic_fetch_add(&bus->catchups, 1);
    if (applied != atomic_load(&bus->applied))
        set_applied(bus, applied);
    return target;
}

static void on_invalidation(cg_bus *bus, const cg_bus_msg *m)
{
    int64_t applied = atomic_load(&bus->applied);
    atomic_fetch_add(&bus->received, 1);
    if (m->seq <= applied) {
        atomic_fetch_add(&bus->duplicates, 1);
        return;
    }
    if (m->seq > applied + 1) {
        int64_t known;
        atomic_fetch_add(&bus->gaps, 1);
        known = catch_up(bus);
        if (known >= 0 && m->seq > known) {
            atomic_fetch_add(&bus->dropped[CG_DROP_FUTURE_SEQ], 1);
            return; /* the repository never committed it: not applied */
        }
        if (known >= 0)
            return; /* the outbox had it too: applied in order by the catch-up */
        /* repository unreachable: apply now (safe in any order); the backstop fills the gap */
        cg_core__invalidate(bus->core, m->items, m->n_items);
        return;
    }
    cg_core__invalidate(bus->core, m->items, m->n_items);
    set_applied(bus, m->seq);
}

static void on_message(cg_bus *bus, const char *data, size_t len)
{
    cg_bus_msg *m = NULL;
    if (cg_bus_msg_decode(&m, data, len, bus->core->cfg->group_id) < 0) {
        int reason = cg_bus_msg_decode_reason();
        atomic_fetch_add(&bus->dropped[reason], 1);
        return;
    }
    bus->last_heard_ms = now_ms();
    switch (m->type) {
    case CG_MSG_INVALIDATION:
        on_invalidation(bus, m);
        break;
    case CG_MSG_HEARTBEAT:
        atomic_fetch_add(&bus->heartbeats_received, 1);
        if (m->seq > atomic_load(&bus->applied)) { /* its publisher is ahead of us */
            atomic_fetch_add(&bus->gaps, 1);
            catch_up(bus);
        }
        break;
    case CG_MSG_MEMBERSHIP:
        atomic_fetch_add(&bus->members_received, 1);
        break;
    }
    cg_bus_msg_free(m);
}

/* Receive the rest of a message's frames; returns how many there were. */
static int skip_frames(void *sock)
{
    int more = 1, n = 0;
    size_t len = sizeof(more);
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        n++;
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len);
        zmq_msg_close(&m);
    }
    return n;
}

/* Read every message waiting on one SUB socket. A message is exactly two frames (topic and
 * payload, PROTOCOL.md); any other shape is dropped as malformed. */
static void drain_socket(cg_bus *bus, void *sock)
{
    for (;;) {
        zmq_msg_t topic, payload;
        int more;
        size_t more_len = sizeof(more);
        zmq_msg_init(&topic);
        if (zmq_msg_recv(&topic, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&topic);
            return;
        }
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &more_len);
        zmq_msg_close(&topic);
        if (!more) {
            atomic_fetch_add(&bus->dropped[CG_DROP_MALFORMED], 1);
            continue;
        }
        zmq_msg_init(&payload);
        if (zmq_msg_recv(&payload, sock, 0) < 0) {
            zmq_msg_close(&payload);
            continue;
        }
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &more_len);
        if (more) {
            skip_frames(sock);
            atomic_fetch_add(&bus->dropped[CG_DROP_MALFORMED], 1);
        } else {
            on_message(bus, zmq_msg_data(&payload), zmq_msg_size(&payload));
        }
        zmq_msg_close(&payload);
    }
}

/* The backstop: catch up with the repository, prune the outbox now and then. */
static void poll_repository(cg_bus *bus, int64_t n_poll)
{
    cg_core *core = bus->core;
    atomic_fetch_add(&bus->polls, 1);
    if (catch_up(bus) < 0)
        return;
    if (core->cfg->outbox_retention_s > 0 && n_poll % PRUNE_EVERY == 0) {
        int64_t deleted;
        cg_repo_outbox_prune(&deleted, bus->conn, core->cfg->group_id,
                             core->cfg->outbox_retention_s);
    }
}

static void *subscriber(void *arg)
{
    cg_bus *bus = arg;
    const cg_config *cfg = bus->core->cfg;
    zmq_pollitem_t items[CG_CONFIG_MAX_ENDPOINTS];
    int64_t next_poll = now_ms() + cfg->poll_interval_ms, n_poll = 0;
    /* membership: heartbeats into the repository and failure detection, four times per
     * failure timeout, whatever the poll interval */
    int64_t member_every = cfg->failure_timeout_ms / 4 > 25 ? cfg->failure_timeout_ms / 4 : 25;
    int64_t next_member = now_ms() + member_every; /* registering was its first heartbeat */
    size_t i;

    for (i = 0; i < bus->n_sub; i++)
        items[i] = (zmq_pollitem_t){bus->sub[i], 0, ZMQ_POLLIN, 0};
    while (!atomic_load(&bus->stop)) {
        int64_t now = now_ms(), wait = next_poll - now;
        int silent, degraded;
        if (wait > 100)
            wait = 100; /* notice stop() soon */
        if (wait < 0)
            wait = 0;
        if (zmq_poll(items, (int)bus->n_sub, (long)wait) > 0)
            for (i = 0; i < bus->n_sub; i++)
                if (items[i].revents & ZMQ_POLLIN)
                    drain_socket(bus, bus->sub[i]);
        now = now_ms();
        if (now >= next_poll) {
            poll_repository(bus, ++n_poll);
            next_poll = now + cfg->poll_interval_ms;
        }
        if (now >= next_member || atomic_load(&bus->core->rejoin)) {
            cg_conn *c = repo(bus);
            if (c != NULL)
                cg_membership_tick(bus->core, c, atomic_load(&bus->applied));
            bus->repo_ok = cg_repo_usable(bus->conn);
            next_member = now + member_every;
        }
        silent =
            bus->n_sub == 0 || now - bus->last_heard_ms > 3 * (int64_t)cfg->heartbeat_interval_ms;
        degraded = silent && !bus->repo_ok;
        atomic_store(&bus->bus_silent, silent);
        atomic_store(&bus->repository_ok, bus->repo_ok);
        if (degraded != atomic_load(&bus->degraded)) {
            atomic_store(&bus->degraded, degraded);
            cg_core__set_degraded(bus->core, degraded);
        }
    }
    return NULL;
}

/* ---- start, stop, stats --------------------------------------------------------------- */

int cg_bus_start(cg_bus **out, cg_core *core)
{
    const cg_config *cfg = core->cfg;
    char topic[CG_BUS_TOPIC_MAX];
    cg_bus *bus;
    int64_t seq = 0;
    size_t i;
    int err = 0;

    *out = NULL;
    if ((bus = calloc(1, sizeof(*bus))) == NULL)
        return cg_error_nomem();
    bus->core = core;
    pthread_mutex_init(&bus->mu, NULL);
    pthread_cond_init(&bus->cv, NULL);
    if ((bus->ctx = zmq_ctx_new()) == NULL) {
        err = cg_error_set(CG_ERROR, CG_ERRCLASS_BUS, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    if ((err = cg_bus_topic(topic, sizeof(topic), cfg->group_id)) < 0)
        goto fail;
    /* subscribe first ... */
    for (i = 0; i < cfg->n_subscribe; i++) {
        if ((err = open_socket(&bus->sub[i], bus, ZMQ_SUB, cfg->subscribe[i])) < 0)
            goto fail;
        bus->n_sub++;
        zmq_setsockopt(bus->sub[i], ZMQ_SUBSCRIBE, topic, strlen(topic));
    }
    for (i = 0; i < cfg->n_publish; i++) {
        if ((err = open_socket(&bus->pub[i], bus, ZMQ_PUB, cfg->publish[i])) < 0)
            goto fail;
        bus->n_pub++;
    }
    /* ... then read where the group stands: everything before is in the repository */
    snprintf(bus->app_name, sizeof(bus->app_name), "%s/bus", cfg->core_name);
    if ((err = cg_repo_connect(&bus->conn, cfg, bus->app_name)) < 0 ||
        (err = cg_repo_event_seq(&seq, bus->conn, cfg->group_id)) < 0)
        goto fail;
    atomic_store(&bus->applied, seq);
    bus->last_published = seq;
    bus->last_heard_ms = now_ms();
    bus->repo_ok = 1;

    if (pthread_create(&bus->sub_thread, NULL, subscriber, bus) != 0) {
        err = cg_error_set(CG_ERROR, CG_ERRCLASS_OS, "cannot start the subscriber thread");
        goto fail;
    }
    bus->sub_running = 1;
    if (bus->n_pub > 0) {
        if (pthread_create(&bus->pub_thread, NULL, publisher, bus) != 0) {
            err = cg_error_set(CG_ERROR, CG_ERRCLASS_OS, "cannot start the publisher thread");
            goto fail;
        }
        bus->pub_running = 1;
        cg_core__set_publisher(core, enqueue, bus);
        cg_bus_publish_member(bus, CG_MEMBER_JOIN, cfg->core_name, atomic_load(&core->incarnation));
    }
    *out = bus;
    return 0;
fail:
    cg_bus_stop(bus);
    return err;
}

void cg_bus_stop(cg_bus *bus)
{
    size_t i;
    if (bus == NULL)
        return;
    cg_core__set_publisher(bus->core, NULL, NULL);
    atomic_store(&bus->stop, 1);
    pthread_mutex_lock(&bus->mu);
    pthread_cond_signal(&bus->cv);
    pthread_mutex_unlock(&bus->mu);
    if (bus->pub_running)
        pthread_join(bus->pub_thread, NULL);
    if (bus->sub_running)
        pthread_join(bus->sub_thread, NULL);
    for (i = 0; i < bus->q_len; i++)
        free(bus->queue[(bus->q_head + i) % QUEUE_MAX].items);
    for (i = 0; i < bus->n_pub; i++)
        zmq_close(bus->pub[i]);
    for (i = 0; i < bus->n_sub; i++)
        zmq_close(bus->sub[i]);
    if (bus->ctx)
        zmq_ctx_term(bus->ctx);
    cg_repo_close(bus->conn);
    pthread_mutex_destroy(&bus->mu);
    pthread_cond_destroy(&bus->cv);
    free(bus);
}

void cg_bus_stats_get(cg_bus *bus, cg_bus_stats *out)
{
    int r;
    memset(out, 0, sizeof(*out));
    if (bus == NULL)
        return;
    out->published = atomic_load(&bus->published);
    out->publish_dropped = atomic_load(&bus->publish_dropped);
    out->heartbeats_sent = atomic_load(&bus->heartbeats_sent);
    out->received = atomic_load(&bus->received);
    out->duplicates = atomic_load(&bus->duplicates);
    out->gaps = atomic_load(&bus->gaps);
    out->catchups = atomic_load(&bus->catchups);
    out->resets = atomic_load(&bus->resets);
    out->heartbeats_received = atomic_load(&bus->heartbeats_received);
    out->members_received = atomic_load(&bus->members_received);
    for (r = 0; r < CG_DROP_COUNT; r++)
        out->dropped[r] = atomic_load(&bus->dropped[r]);
    out->polls = atomic_load(&bus->polls);
    out->applied_seq = atomic_load(&bus->applied);
    out->applied_at_us = atomic_load(&bus->applied_at_us);
    out->degraded = atomic_load(&bus->degraded);
    out->bus_silent = atomic_load(&bus->bus_silent);
    out->repository_ok = atomic_load(&bus->repository_ok);
}
