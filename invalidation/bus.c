/*
 * bus.c — the invalidation bus transport: invalidations out after COMMIT, invalidations in,
 * in any order, with every missing one noticed.
 *
 * This follows PostgreSQL's sinval design (inval.c, sinvaladt.c): changes are queued at write
 * time, sent after commit, dropped at abort (coregroup/call.c does those three), and a reader
 * that fell too far behind resets its whole cache instead of guessing (its owner does that).
 * ZeroMQ PUB/SUB drops messages (slow joiner, high-water mark, reconnect, a forwarder
 * restart) and reorders them (event numbers are taken at commit on many connections, and two
 * forwarders interleave), so this file never trusts arrival order or completeness:
 *
 *  - Every invalidation carries the group's gap-free event number. The APPLIED point is the
 *    highest seq such that every event up to it was delivered to the owner (or the owner said
 *    it applied them some other way: cg_bus_caught_up). A seq at or below it, or one already
 *    delivered, is a duplicate (two forwarders deliver everything twice) and is ignored
 *    unless its items differ (a conflict, below).
 *  - A new seq is delivered to the owner AT ONCE, whatever its order: applying an
 *    invalidation only evicts entries and raises floors, which is safe in any order, so
 *    waiting would only add staleness. Seqs above applied + 1 are remembered (PENDING, with
 *    their arrival time) until the ones below them arrive; then applied moves over the
 *    contiguous prefix.
 *  - Reordering is not loss. The first missing seq (applied + 1) is known to be missing from
 *    the arrival of the first pending seq above it, or of a heartbeat announcing a later one.
 *    Only when it is still missing reorder_window_ms after that is it a GAP: the owner's
 *    catch_up handler reads the missed events from the outbox. So a swapped pair costs no
 *    repository read, a lost message costs one, and the window adds at most itself to the
 *    time an event takes to be applied.
 *  - A pending seq the owner's source did not have when it caught up is from the future
 *    (forged or broken): forgotten and counted, never waited for again. So is a seq already
 *    counted as applied that is above the group's event_seq when the owner reads it (a
 *    forger who published the NEXT seq before its real commit): the applied point falls
 *    back to what the repository has, and the real event of that number is new when it
 *    comes (cg_bus_event_seq_read).
 *  - De-duplication is by seq AND payload. In wire version 1 anyone who reaches a forwarder
 *    can publish, so a copy of a seq already heard may be a forgery or the real event behind
 *    one. Each seq heard keeps a keyed digest of its set of items (SEEN ring); a copy with
 *    the same items (the second forwarder, a survivor republishing a failed member's events,
 *    in any item order) is a duplicate, but one with other items is a CONFLICT: one of the
 *    two is not what was committed. Both are applied (evicting is always safe), the conflict
 *    is counted, and the seq is SUSPECT: the applied point the owner sees (and proves
 *    freshness with) stays below it until the owner has read that seq from the outbox, which
 *    the transport asks for like a gap, after the reorder window (so a flood of conflicts
 *    costs one catch-up per window). A forged invalidation therefore costs evictions and
 *    repository reads, never an eviction that is lost.
 *  - Heartbeats (every heartbeat_interval_ms, carrying the last seq the publisher published)
 *    let a subscriber notice a lost tail, and a silent bus (nothing heard for three
 *    intervals).
 *
 * Threads: the publisher thread alone owns the PUB sockets; committing threads hand it their
 * change lists through a bounded queue and never block (a full queue drops the message: the
 * outbox and catch-up make that safe). The subscriber thread alone owns the SUB sockets and
 * the ordering state, and runs every handler; the owner's tick handler (its backstop poll and
 * freshness proof) runs on it too, at least every tick_ms.
 * Not here: what an invalidation does to a cache, where missed events come from, whether the
 * cache is fresh, and membership (heard and counted only). That is the owner's (coregroup/).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "bus.h"
#include "keyfile.h"
#include "coregroup/sys/clock.h"
#include "coregroup/sys/error.h"

#define QUEUE_MAX   4096  /* change lists waiting for the publisher thread */
#define PENDING_MAX 65536 /* out-of-order seqs remembered; more is treated as a gap at once */
/* Seqs whose items' digest is kept (a power of two): a copy of an older one is a duplicate. */
#define SEEN_MAX 4096

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

/* A seq heard ahead of a missing one, and when. */
typedef struct {
    int64_t seq;
    int64_t at_us;
} pending_seq;

/* The digests of the items of a seq heard on the bus: the first copy's, and the last
 * conflicting copy's (equal when there was none). The slot of seq is seq % SEEN_MAX. */
typedef struct {
    int64_t seq;
    uint64_t digest[2];
} seen_seq;

struct cg_bus {
    /* settings (copied) */
    char group[CG_NAME_MAX + 1], origin[CG_NAME_MAX + 1];
    char *curve_server_key, *curve_public_key, *curve_secret_key;
    int heartbeat_interval_ms, reorder_window_ms, tick_ms;
    cg_bus_handlers h;

    void *ctx;
    void *pub[CG_CONFIG_MAX_ENDPOINTS];
    size_t n_pub;
    void *sub[CG_CONFIG_MAX_ENDPOINTS];
    size_t n_sub;

    pthread_t pub_thread, sub_thread;
    int pub_running, sub_running;
    atomic_int stop;
    atomic_llong incarnation;

    /* the publisher's queue */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    queued queue[QUEUE_MAX];
    size_t q_head, q_len;
    atomic_llong last_published;

    /* ordering state: subscriber thread only, except the atomics */
    atomic_llong applied;
    atomic_llong applied_at_us;
    atomic_llong last_heard_us;
    pending_seq *pending; /* sorted by seq, all > applied + 1 */
    size_t n_pending;
    int64_t hb_upto, hb_since_us; /* a heartbeat announced events up to hb_upto, heard then */
    int64_t retry_gap_at_us;      /* a catch-up failed: not again before this */
    seen_seq *seen;               /* SEEN_MAX digests, by seq % SEEN_MAX */
    uint64_t digest_key;          /* random per bus: a forger cannot aim at a digest */
    int64_t suspect;              /* lowest seq whose copies conflicted, not yet read from the
                                     outbox; 0: none */
    int64_t suspect_since_us;     /* when that became so (a catch-up is due a window later) */
    atomic_llong proven;          /* min(applied, suspect - 1): cg_bus_applied_seq */

    /* counters, read by cg_bus_stats_get from any thread */
    atomic_uint_fast64_t published, publish_dropped, heartbeats_sent, received, duplicates,
        reordered, gaps, catchups, heartbeats_received, members_received, conflicts;
    atomic_uint_fast64_t dropped[CG_DROP_COUNT];
};

/* ---- sockets -------------------------------------------------------------------------- */

/* Read the key file that [bus] `what` names (keyfile.c: the one reader of key files, which
 * skips '#' comment lines); its errors are raised again naming the setting. */
static int read_key(uint8_t key[32], const char *path, const char *what)
{
    int err = cg_keyfile_read(key, path);
    if (err < 0)
        return cg_error_set(err, CG_ERRCLASS_BUS, "[bus] %s: %s", what, cg_error_last()->message);
    return 0;
}

static int curve_client(void *sock, const cg_bus *bus)
{
    uint8_t server[32], pub[32], sec[32];
    int err;
    if (bus->curve_server_key == NULL)
        return 0;
    if ((err = read_key(server, bus->curve_server_key, "curve_server_key")) < 0 ||
        (err = read_key(pub, bus->curve_public_key, "curve_public_key")) < 0 ||
        (err = read_key(sec, bus->curve_secret_key, "curve_secret_key")) < 0)
        return err;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server, 32) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 32) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 32) != 0)
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
    if ((err = curve_client(s, bus)) < 0)
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
    if (bus->n_pub == 0) { /* nowhere to publish: not a loss */
        free(q->items);
        return;
    }
    pthread_mutex_lock(&bus->mu);
    if (bus->q_len == QUEUE_MAX) {
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

void cg_bus_publish(cg_bus *bus, int64_t seq, int64_t committed_us, const cg_bus_item *items,
                    size_t n)
{
    queued q;
    memset(&q, 0, sizeof(q));
    q.type = CG_MSG_INVALIDATION;
    q.seq = seq;
    q.committed_us = committed_us;
    if (copy_items(&q, items, n) < 0) {
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
    cg_bus_topic(topic, sizeof(topic), bus->group);
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
    cg_bus_msg m;
    char *payload = NULL;
    size_t len;

    memset(&m, 0, sizeof(m));
    m.type = q->type;
    snprintf(m.group, sizeof(m.group), "%s", bus->group);
    snprintf(m.origin, sizeof(m.origin), "%s", q->origin[0] ? q->origin : bus->origin);
    m.incarnation = q->origin[0] ? q->origin_incarnation : atomic_load(&bus->incarnation);
    if (q->type == CG_MSG_MEMBERSHIP) {
        m.at_us = cg_clock_wall_us();
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
    if (!q->origin[0] && q->seq > atomic_load(&bus->last_published))
        atomic_store(&bus->last_published, q->seq);
    if (cg_bus_msg_encode(&payload, &len, &m) < 0 || send_all(bus, payload, len) == 0)
        atomic_fetch_add(&bus->publish_dropped, 1);
    else
        atomic_fetch_add(&bus->published, 1);
    free(payload);
}

static void publish_heartbeat(cg_bus *bus)
{
    cg_bus_msg m;
    char *payload = NULL;
    size_t len;

    memset(&m, 0, sizeof(m));
    m.type = CG_MSG_HEARTBEAT;
    snprintf(m.group, sizeof(m.group), "%s", bus->group);
    snprintf(m.origin, sizeof(m.origin), "%s", bus->origin);
    m.seq = atomic_load(&bus->last_published);
    m.incarnation = atomic_load(&bus->incarnation);
    m.at_us = cg_clock_wall_us();
    m.applied_seq = atomic_load(&bus->proven);
    if (cg_bus_msg_encode(&payload, &len, &m) == 0 && send_all(bus, payload, len) > 0)
        atomic_fetch_add(&bus->heartbeats_sent, 1);
    free(payload);
}

static void *publisher(void *arg)
{
    cg_bus *bus = arg;
    int64_t interval = bus->heartbeat_interval_ms, next_beat = cg_clock_mono_ms();

    for (;;) {
        queued batch[64];
        size_t n = 0, i;
        int64_t now = cg_clock_mono_ms();

        if (now >= next_beat) {
            publish_heartbeat(bus);
            next_beat = now + interval;
        }
        pthread_mutex_lock(&bus->mu);
        if (bus->q_len == 0 && !atomic_load(&bus->stop)) {
            int64_t wait_ms = next_beat - cg_clock_mono_ms();
            struct timespec until = cg_clock_deadline(wait_ms < 1 ? 1 : wait_ms);
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

/* ---- subscriber: ordering ------------------------------------------------------------- */

/* Publish the applied point the owner may rely on, min(applied, suspect - 1), and tell the
 * owner when it moved forward. */
static void publish_proven(cg_bus *bus)
{
    int64_t p = atomic_load(&bus->applied), old = atomic_load(&bus->proven);
    if (bus->suspect > 0 && bus->suspect - 1 < p)
        p = bus->suspect - 1;
    if (p == old)
        return;
    atomic_store(&bus->applied_at_us, cg_clock_mono_us());
    atomic_store(&bus->proven, p);
    if (p > old && bus->h.advanced)
        bus->h.advanced(bus->h.ctx, p);
}

/* Move the applied point to seq (forward only) and forget the pending seqs it covers. */
static void advance_to(cg_bus *bus, int64_t seq)
{
    size_t drop = 0;
    if (seq <= atomic_load(&bus->applied))
        return;
    /* the pending seqs that now form a contiguous run above seq move it further */
    while (drop < bus->n_pending && bus->pending[drop].seq <= seq + 1) {
        if (bus->pending[drop].seq == seq + 1)
            seq++;
        drop++;
    }
    memmove(bus->pending, bus->pending + drop, (bus->n_pending - drop) * sizeof(pending_seq));
    bus->n_pending -= drop;
    if (bus->hb_upto <= seq)
        bus->hb_upto = bus->hb_since_us = 0;
    atomic_store(&bus->applied, seq);
    publish_proven(bus);
}

/* Index of seq in pending, or of where it would go. */
static size_t pending_find(const cg_bus *bus, int64_t seq)
{
    size_t lo = 0, hi = bus->n_pending;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bus->pending[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Remember a seq heard ahead of a missing one. 0, or -1 when there is no room (the caller
 * treats that as a gap now). */
static int pending_add(cg_bus *bus, int64_t seq, size_t at)
{
    if (bus->n_pending == PENDING_MAX)
        return -1;
    memmove(bus->pending + at + 1, bus->pending + at, (bus->n_pending - at) * sizeof(pending_seq));
    bus->pending[at] = (pending_seq){seq, cg_clock_mono_us()};
    bus->n_pending++;
    return 0;
}

/* When the first missing seq (applied + 1) became known to be missing, or a seq suspect;
 * 0 if neither. */
static int64_t missing_since(const cg_bus *bus)
{
    int64_t since = bus->n_pending > 0 ? bus->pending[0].at_us : 0;
    if (bus->hb_since_us && (since == 0 || bus->hb_since_us < since))
        since = bus->hb_since_us;
    if (bus->suspect_since_us && (since == 0 || bus->suspect_since_us < since))
        since = bus->suspect_since_us;
    return since;
}

/* The newest seq known to exist. */
static int64_t known_upto(const cg_bus *bus)
{
    int64_t upto = bus->n_pending > 0 ? bus->pending[bus->n_pending - 1].seq : 0;
    return bus->hb_upto > upto ? bus->hb_upto : upto;
}

/* The repository's event_seq was e when nothing received so far can have been committed
 * later: forget every seq received above e (see cg_bus_event_seq_read). */
static void forget_above(cg_bus *bus, int64_t e)
{
    int64_t applied = atomic_load(&bus->applied);
    size_t at = pending_find(bus, e + 1);
    uint64_t n = bus->n_pending - at;

    bus->n_pending = at;
    if (applied > e) { /* each seq in (e, applied] was heard on the bus: a catch-up stops at E */
        n += (uint64_t)(applied - e);
        atomic_store(&bus->applied, e);
    }
    if (n > 0)
        atomic_fetch_add(&bus->dropped[CG_DROP_FUTURE_SEQ], n);
    if (bus->hb_upto > e)
        bus->hb_upto = bus->hb_since_us = 0;
    if (bus->suspect > e) /* the conflict was about a seq that never was */
        bus->suspect = bus->suspect_since_us = 0;
    publish_proven(bus);
}

void cg_bus_event_seq_read(cg_bus *bus, int64_t e)
{
    forget_above(bus, e);
}

void cg_bus_caught_up(cg_bus *bus, int64_t seq)
{
    atomic_fetch_add(&bus->catchups, 1);
    /* Every pending seq arrived before the owner asked its source, and a real event is
     * published only after its commit, so the source had it: one above `seq` never was. */
    forget_above(bus, seq);
    /* the owner read every event after the proven point, so every conflict up to seq is
     * settled by the outbox */
    if (bus->suspect > 0 && bus->suspect <= seq)
        bus->suspect = bus->suspect_since_us = 0;
    bus->retry_gap_at_us = 0;
    advance_to(bus, seq);
    publish_proven(bus);
}

/* A gap, or a conflict to settle: ask the owner to read everything after the proven point. */
static void fill_gap(cg_bus *bus)
{
    int64_t from = atomic_load(&bus->proven), upto = known_upto(bus), got;
    if (bus->n_pending > 0 || bus->hb_since_us)
        atomic_fetch_add(&bus->gaps, 1);
    got = bus->h.catch_up ? bus->h.catch_up(bus->h.ctx, from, upto) : -1;
    if (got < 0) {
        bus->retry_gap_at_us = cg_clock_mono_us() + (int64_t)bus->tick_ms * 1000;
        return;
    }
    cg_bus_caught_up(bus, got);
}

/* A gap is due when the first missing seq has been missing for the reorder window. */
static void check_gap(cg_bus *bus, int64_t now_us)
{
    int64_t since = missing_since(bus);
    if (since == 0 || now_us < since + (int64_t)bus->reorder_window_ms * 1000 ||
        now_us < bus->retry_gap_at_us)
        return;
    fill_gap(bus);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* What an invalidation says, whoever sent it and in whatever item order: a digest of its
 * items keyed by this bus's random key (a sum of one mixed hash per item, so the order does
 * not matter). The envelope (origin, incarnation, time) is left out, so a survivor's
 * republication of a failed member's event is a duplicate, not a conflict. */
static uint64_t items_digest(const cg_bus *bus, const cg_bus_item *items, size_t n)
{
    uint64_t d = mix64(bus->digest_key ^ (uint64_t)n);
    size_t i;
    for (i = 0; i < n; i++) {
        uint64_t x = mix64(bus->digest_key + (uint64_t)items[i].handle);
        x = mix64(x ^ (uint64_t)items[i].kind);
        d += mix64(x ^ (uint64_t)items[i].version);
    }
    return d;
}

/* A copy of an already heard seq with other items: one of them is not what was committed.
 * Apply this one too (evicting is always safe) and distrust the seq until the outbox has
 * been read for it (after the reorder window, like a gap). */
static void on_conflict(cg_bus *bus, const cg_bus_msg *m, seen_seq *s, uint64_t d)
{
    atomic_fetch_add(&bus->conflicts, 1);
    s->digest[1] = d;
    bus->h.apply(bus->h.ctx, m->seq, m->at_us, m->items, m->n_items);
    if (bus->suspect == 0 || m->seq < bus->suspect)
        bus->suspect = m->seq;
    if (bus->suspect_since_us == 0)
        bus->suspect_since_us = cg_clock_mono_us();
    publish_proven(bus);
}

static void on_invalidation(cg_bus *bus, const cg_bus_msg *m)
{
    int64_t applied = atomic_load(&bus->applied);
    uint64_t d = items_digest(bus, m->items, m->n_items);
    seen_seq *s = &bus->seen[(uint64_t)m->seq & (SEEN_MAX - 1)];
    size_t at = 0;
    atomic_fetch_add(&bus->received, 1);
    if (m->seq <= applied ||
        ((at = pending_find(bus, m->seq)) < bus->n_pending && bus->pending[at].seq == m->seq)) {
        if (s->seq == m->seq && s->digest[0] != d && s->digest[1] != d)
            on_conflict(bus, m, s, d);
        else /* the same items, or a seq too old to judge: the outbox had it anyway */
            atomic_fetch_add(&bus->duplicates, 1);
        return;
    }
    *s = (seen_seq){m->seq, {d, d}};
    bus->h.apply(bus->h.ctx, m->seq, m->at_us, m->items, m->n_items);
    if (m->seq == applied + 1) {
        if (missing_since(bus) != 0)
            atomic_fetch_add(&bus->reordered, 1); /* a missing one came in time */
        advance_to(bus, m->seq);
    } else if (pending_add(bus, m->seq, at) < 0) {
        fill_gap(bus);
    }
}

static void on_heartbeat(cg_bus *bus, const cg_bus_msg *m)
{
    atomic_fetch_add(&bus->heartbeats_received, 1);
    if (m->seq <= atomic_load(&bus->applied) || m->seq <= bus->hb_upto)
        return;
    /* Its publisher published up to m->seq, so applied + 1 (never pending) is missing. */
    bus->hb_upto = m->seq;
    if (bus->hb_since_us == 0)
        bus->hb_since_us = cg_clock_mono_us();
}

static void on_message(cg_bus *bus, const char *data, size_t len)
{
    cg_bus_msg *m = NULL;
    if (cg_bus_msg_decode(&m, data, len, bus->group) < 0) {
        int reason = cg_bus_msg_decode_reason();
        atomic_fetch_add(&bus->dropped[reason], 1);
        return;
    }
    atomic_store(&bus->last_heard_us, cg_clock_mono_us());
    switch (m->type) {
    case CG_MSG_INVALIDATION:
        on_invalidation(bus, m);
        break;
    case CG_MSG_HEARTBEAT:
        on_heartbeat(bus, m);
        break;
    case CG_MSG_MEMBERSHIP:
        atomic_fetch_add(&bus->members_received, 1);
        if (bus->h.member)
            bus->h.member(bus->h.ctx, m);
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

static void *subscriber(void *arg)
{
    cg_bus *bus = arg;
    zmq_pollitem_t items[CG_CONFIG_MAX_ENDPOINTS];
    int64_t next_tick = cg_clock_mono_us() + (int64_t)bus->tick_ms * 1000;
    size_t i;

    for (i = 0; i < bus->n_sub; i++)
        items[i] = (zmq_pollitem_t){bus->sub[i], 0, ZMQ_POLLIN, 0};
    while (!atomic_load(&bus->stop)) {
        int64_t now = cg_clock_mono_us(), wake = next_tick, since = missing_since(bus), wait_ms;
        if (since) { /* wake for the end of the reorder window */
            int64_t due = since + (int64_t)bus->reorder_window_ms * 1000;
            if (due < bus->retry_gap_at_us)
                due = bus->retry_gap_at_us;
            if (due < wake)
                wake = due;
        }
        wait_ms = (wake - now + 999) / 1000;
        if (wait_ms > 100)
            wait_ms = 100; /* notice stop() soon */
        if (wait_ms < 0)
            wait_ms = 0;
        if (zmq_poll(items, (int)bus->n_sub, (long)wait_ms) > 0)
            for (i = 0; i < bus->n_sub; i++)
                if (items[i].revents & ZMQ_POLLIN)
                    drain_socket(bus, bus->sub[i]);
        now = cg_clock_mono_us();
        check_gap(bus, now);
        if (now >= next_tick) {
            if (bus->h.tick)
                bus->h.tick(bus->h.ctx);
            next_tick = cg_clock_mono_us() + (int64_t)bus->tick_ms * 1000;
        }
    }
    return NULL;
}

/* ---- open, start, stop, stats --------------------------------------------------------- */

static int copy_string(char **slot, const char *s)
{
    if (s == NULL)
        return 0;
    if ((*slot = strdup(s)) == NULL)
        return cg_error_nomem();
    return 0;
}

int cg_bus_open(cg_bus **out, const cg_bus_options *opts, const cg_bus_handlers *handlers)
{
    char topic[CG_BUS_TOPIC_MAX];
    cg_bus *bus;
    size_t i;
    int err = 0;

    *out = NULL;
    if (opts == NULL || opts->version != CG_BUS_OPTIONS_VERSION || handlers == NULL ||
        handlers->apply == NULL || opts->n_publish > CG_CONFIG_MAX_ENDPOINTS ||
        opts->n_subscribe > CG_CONFIG_MAX_ENDPOINTS || opts->tick_ms < 1 ||
        opts->reorder_window_ms < 0 || opts->heartbeat_interval_ms < 1)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_BUS, "bus options: bad version or value");
    if ((bus = calloc(1, sizeof(*bus))) == NULL)
        return cg_error_nomem();
    pthread_mutex_init(&bus->mu, NULL);
    pthread_cond_init(&bus->cv, NULL);
    snprintf(bus->group, sizeof(bus->group), "%s", opts->group);
    snprintf(bus->origin, sizeof(bus->origin), "%s", opts->origin);
    bus->heartbeat_interval_ms = opts->heartbeat_interval_ms;
    bus->reorder_window_ms = opts->reorder_window_ms;
    bus->tick_ms = opts->tick_ms;
    bus->h = *handlers;
    atomic_store(&bus->last_heard_us, cg_clock_mono_us());
    if ((err = copy_string(&bus->curve_server_key, opts->curve_server_key)) < 0 ||
        (err = copy_string(&bus->curve_public_key, opts->curve_public_key)) < 0 ||
        (err = copy_string(&bus->curve_secret_key, opts->curve_secret_key)) < 0)
        goto fail;
    if ((bus->pending = malloc(PENDING_MAX * sizeof(pending_seq))) == NULL ||
        (bus->seen = calloc(SEEN_MAX, sizeof(seen_seq))) == NULL) {
        err = cg_error_nomem();
        goto fail;
    }
    if (getrandom(&bus->digest_key, sizeof(bus->digest_key), GRND_NONBLOCK) !=
        (ssize_t)sizeof(bus->digest_key)) /* no entropy yet: still unknown to a remote forger */
        bus->digest_key = mix64((uint64_t)cg_clock_mono_us() ^ ((uint64_t)getpid() << 32) ^
                                (uint64_t)(uintptr_t)bus);
    if ((bus->ctx = zmq_ctx_new()) == NULL) {
        err = cg_error_set(CG_ERROR, CG_ERRCLASS_BUS, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    if ((err = cg_bus_topic(topic, sizeof(topic), bus->group)) < 0)
        goto fail;
    for (i = 0; i < opts->n_subscribe; i++) {
        if ((err = open_socket(&bus->sub[i], bus, ZMQ_SUB, opts->subscribe[i])) < 0)
            goto fail;
        bus->n_sub++;
        zmq_setsockopt(bus->sub[i], ZMQ_SUBSCRIBE, topic, strlen(topic));
    }
    for (i = 0; i < opts->n_publish; i++) {
        if ((err = open_socket(&bus->pub[i], bus, ZMQ_PUB, opts->publish[i])) < 0)
            goto fail;
        bus->n_pub++;
    }
    *out = bus;
    return 0;
fail:
    cg_bus_stop(bus);
    return err;
}

int cg_bus_start(cg_bus *bus, int64_t applied_seq)
{
    atomic_store(&bus->applied, applied_seq);
    atomic_store(&bus->proven, applied_seq);
    atomic_store(&bus->applied_at_us, cg_clock_mono_us());
    atomic_store(&bus->last_published, applied_seq);
    atomic_store(&bus->last_heard_us, cg_clock_mono_us());
    if (pthread_create(&bus->sub_thread, NULL, subscriber, bus) != 0)
        return cg_error_set(CG_ERROR, CG_ERRCLASS_OS, "cannot start the subscriber thread");
    bus->sub_running = 1;
    if (bus->n_pub > 0) {
        if (pthread_create(&bus->pub_thread, NULL, publisher, bus) != 0)
            return cg_error_set(CG_ERROR, CG_ERRCLASS_OS, "cannot start the publisher thread");
        bus->pub_running = 1;
    }
    return 0;
}

void cg_bus_stop(cg_bus *bus)
{
    size_t i;
    if (bus == NULL)
        return;
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
    pthread_mutex_destroy(&bus->mu);
    pthread_cond_destroy(&bus->cv);
    free(bus->pending);
    free(bus->seen);
    free(bus->curve_server_key);
    free(bus->curve_public_key);
    free(bus->curve_secret_key);
    free(bus);
}

void cg_bus_set_incarnation(cg_bus *bus, int64_t incarnation)
{
    atomic_store(&bus->incarnation, incarnation);
}

int64_t cg_bus_applied_seq(const cg_bus *bus)
{
    return atomic_load(&((cg_bus *)bus)->proven);
}

void cg_bus_stats_get(const cg_bus *cbus, cg_bus_stats *out)
{
    cg_bus *bus = (cg_bus *)cbus; /* the counters are atomics; reading them does not modify */
    int r;
    memset(out, 0, sizeof(*out));
    if (bus == NULL)
        return;
    out->published = atomic_load(&bus->published);
    out->publish_dropped = atomic_load(&bus->publish_dropped);
    out->heartbeats_sent = atomic_load(&bus->heartbeats_sent);
    out->received = atomic_load(&bus->received);
    out->duplicates = atomic_load(&bus->duplicates);
    out->reordered = atomic_load(&bus->reordered);
    out->gaps = atomic_load(&bus->gaps);
    out->catchups = atomic_load(&bus->catchups);
    out->heartbeats_received = atomic_load(&bus->heartbeats_received);
    out->members_received = atomic_load(&bus->members_received);
    out->conflicts = atomic_load(&bus->conflicts);
    for (r = 0; r < CG_DROP_COUNT; r++)
        out->dropped[r] = atomic_load(&bus->dropped[r]);
    out->applied_seq = atomic_load(&bus->proven);
    out->applied_at_us = atomic_load(&bus->applied_at_us);
    out->last_heard_us = atomic_load(&bus->last_heard_us);
    out->bus_silent = bus->n_sub == 0 || cg_clock_mono_us() - out->last_heard_us >
                                             3 * (int64_t)bus->heartbeat_interval_ms * 1000;
}
