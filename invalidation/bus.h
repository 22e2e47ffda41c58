/*
 * bus.h — the invalidation bus transport: PUB and SUB sockets, the wire codec, de-duplication,
 * ordering and gap detection (private).
 *
 * The transport knows no core, no repository and no membership. Its owner (a core; see
 * coregroup/apply.c) gives it endpoints and settings, and handlers that the subscriber thread
 * calls; the transport tells the owner what arrived and when something is missing, and the
 * owner decides what that means for its cache and how to fill a gap.
 *
 * Starting is two steps, so the owner can follow the Clone pattern: cg_bus_open() connects and
 * subscribes the SUB sockets; then the owner reads where the group stands (its event_seq) and
 * passes it to cg_bus_start(), which starts the threads with that as the applied point.
 * Anything published after the subscription is heard; anything before is in the repository.
 *
 * Without CURVE anyone can publish (PROTOCOL.md, "Forged messages"): the transport therefore
 * tells copies of a seq apart by their items, reports a conflict as one more invalidation and
 * keeps the conflicted seq out of cg_bus_applied_seq() until its owner has read it from the
 * outbox, and forgets what the repository's counter says was never committed.
 */
#ifndef CG_BUS_H
#define CG_BUS_H

#include <stdint.h>

#include "message.h"

typedef struct cg_bus cg_bus;

#define CG_BUS_OPTIONS_VERSION 1

typedef struct cg_bus_options {
    unsigned int version; /* CG_BUS_OPTIONS_VERSION */
    const char *group;    /* the group: topic and expected group of every message */
    const char *origin;   /* this core's name, the origin of what it publishes */
    const char *const *publish;
    size_t n_publish;
    const char *const *subscribe;
    size_t n_subscribe;
    const char *curve_server_key, *curve_public_key, *curve_secret_key; /* files, or NULL */
    int heartbeat_interval_ms; /* publisher heartbeats; silence = 3 intervals without a message */
    int reorder_window_ms;     /* a missing seq is a gap only after this long */
    int tick_ms;               /* the owner's tick handler runs at least this often */
} cg_bus_options;

#define CG_BUS_OPTIONS_INIT                                                                        \
    {                                                                                              \
        CG_BUS_OPTIONS_VERSION                                                                     \
    }

/*
 * What the subscriber thread tells its owner. All are called on the subscriber thread, one at
 * a time; none may call back into the bus except cg_bus_caught_up(), cg_bus_event_seq_read() and
 * the publish functions.
 */
typedef struct cg_bus_handlers {
    void *ctx;
    /* A new invalidation (never one delivered before, never one at or below the applied
     * point), as soon as it arrives, whatever its order: applying an invalidation only evicts,
     * which is safe in any order. */
    void (*apply)(void *ctx, int64_t seq, int64_t committed_us, const cg_bus_item *items, size_t n);
    /* A gap: events after `applied` up to at least `upto` were not heard within the reorder
     * window, or events after `applied` rest on bus copies that contradicted each other (a
     * conflict, below). The owner reads every event after `applied` from elsewhere (the
     * outbox) and returns the point up to which everything is now applied (its source's
     * newest event), or -1 when it could not (the transport asks again at the next tick).
     * Events the transport received above the returned point that the source did not have
     * are from the future: forgotten and counted as dropped (future-seq). */
    int64_t (*catch_up)(void *ctx, int64_t applied, int64_t upto);
    /* The applied point (cg_bus_applied_seq) moved to `applied`: every event up to it is
     * applied. */
    void (*advanced)(void *ctx, int64_t applied);
    /* At least every tick_ms (the owner's backstop poll and freshness proof). */
    void (*tick)(void *ctx);
    /* A membership event heard on the bus (informational: the repository decides). */
    void (*member)(void *ctx, const cg_bus_msg *m);
} cg_bus_handlers;

typedef struct {
    uint64_t published;       /* invalidations handed to the PUB sockets */
    uint64_t publish_dropped; /* not sent: queue full or high-water mark (the outbox has them) */
    uint64_t heartbeats_sent;
    uint64_t received;   /* invalidations heard */
    uint64_t duplicates; /* seq already delivered or at/below the applied point: ignored */
    uint64_t reordered;  /* arrived ahead of a missing seq that then came within the window */
    uint64_t gaps;       /* missing seqs still missing after the reorder window */
    uint64_t catchups;   /* gaps the owner filled (catch_up handler returned) */
    uint64_t heartbeats_received;
    uint64_t members_received;
    uint64_t conflicts;              /* an invalidation whose seq was heard before with other
                                        items: applied too, and the seq read from the outbox */
    uint64_t dropped[CG_DROP_COUNT]; /* bad messages, by reason */
    int64_t applied_seq;             /* cg_bus_applied_seq(): every event up to it is applied */
    int64_t applied_at_us;           /* CLOCK_MONOTONIC time applied_seq last moved */
    int64_t last_heard_us;           /* CLOCK_MONOTONIC time of the last message heard */
    int bus_silent;                  /* nothing heard for three heartbeat intervals */
} cg_bus_stats;

/*
 * Create the bus: the ZeroMQ context and sockets; SUB sockets connected and subscribed to the
 * group's topic. No thread runs yet. Returns 0 or CG_EINVALID (a bad endpoint or key file,
 * named) / CG_ERROR; *out is freed with cg_bus_stop(). opts' strings are copied.
 */
int cg_bus_open(cg_bus **out, const cg_bus_options *opts, const cg_bus_handlers *handlers);

/* Start the subscriber thread (and the publisher thread when there are PUB endpoints) with
 * `applied_seq` as the applied point. Returns 0 or CG_ERROR. */
int cg_bus_start(cg_bus *bus, int64_t applied_seq);

/* Stop both threads (the publisher first sends what is queued), close the sockets, free the
 * bus. Accepts NULL. */
void cg_bus_stop(cg_bus *bus);

/* The incarnation this core's messages carry from now on. Any thread. */
void cg_bus_set_incarnation(cg_bus *bus, int64_t incarnation);

/* Queue an invalidation this core committed; copies items, never blocks (a full queue drops
 * it, counted: the outbox and the subscribers' catch-up make that safe). Any thread. */
void cg_bus_publish(cg_bus *bus, int64_t seq, int64_t committed_us, const cg_bus_item *items,
                    size_t n);

/* Queue an invalidation committed by another core (a failed member being recovered), sent with
 * that core's name and incarnation as origin. Copies items; never blocks. Accepts NULL. */
void cg_bus_republish(cg_bus *bus, const char *origin, int64_t incarnation, int64_t seq,
                      int64_t committed_us, const cg_bus_item *items, size_t n);

/* Queue a membership event about `member`; never blocks. Accepts NULL (nothing is sent). */
void cg_bus_publish_member(cg_bus *bus, int event, const char *member, int64_t incarnation);

/* From a handler only (the subscriber thread): the owner read every event after
 * cg_bus_applied_seq() up to `seq`, the repository's event_seq, from the outbox (a catch-up
 * of its own) and applied them. Settles every conflict at or below `seq`, forgets what was
 * received above it (cg_bus_event_seq_read), moves the applied point to `seq` and calls
 * `advanced`. */
void cg_bus_caught_up(cg_bus *bus, int64_t seq);

/* From a handler only (the subscriber thread): the owner just read the group's event_seq `e`
 * from the repository. A real event is published only after its commit, so everything
 * received before that read is numbered <= e; a seq above e that the transport counted as
 * received (applied or pending) is from the future: forged, or sent before a repository went
 * back. It is forgotten and counted (future-seq), and the applied point falls back to e if it
 * was above, so that the real event of that number is taken as new when it comes. */
void cg_bus_event_seq_read(cg_bus *bus, int64_t e);

/* The applied point, from any thread: every event up to it was delivered to the owner (or the
 * owner caught it up), and none of them rests only on a bus copy that another copy of the
 * same seq contradicted. This is what a freshness proof may rely on. */
int64_t cg_bus_applied_seq(const cg_bus *bus);

/* Counters and state, from any thread; a NULL bus gives zeros. */
void cg_bus_stats_get(const cg_bus *bus, cg_bus_stats *out);

#endif
