/*
 * bus.h — a core's side of the invalidation bus: its publisher and its subscriber (private).
 */
#ifndef CG_BUS_H
#define CG_BUS_H

#include <stdint.h>

#include "message.h"

typedef struct cg_core cg_core;
typedef struct cg_bus cg_bus;

typedef struct {
    uint64_t published;       /* invalidations handed to the PUB sockets */
    uint64_t publish_dropped; /* not sent: queue full or high-water mark (the outbox has them) */
    uint64_t heartbeats_sent;
    uint64_t received;   /* invalidations heard */
    uint64_t duplicates; /* seq already applied: ignored */
    uint64_t gaps;       /* seq beyond applied + 1, or a heartbeat showing a missed tail */
    uint64_t catchups;   /* outbox reads that filled a gap */
    uint64_t resets;     /* the outbox no longer held what was missed: whole cache reset */
    uint64_t heartbeats_received;
    uint64_t members_received;
    uint64_t dropped[CG_DROP_COUNT]; /* bad messages, by reason */
    uint64_t polls;                  /* backstop comparisons with the repository */
    int64_t applied_seq;             /* every event up to this one is reflected in the cache */
    int64_t applied_at_us;           /* CLOCK_MONOTONIC time applied_seq last moved */
    int degraded;
    int bus_silent;
    int repository_ok;
} cg_bus_stats;

/*
 * Start the bus for a core: connect and subscribe the SUB sockets to [bus] subscribe FIRST,
 * then read the group's event_seq as the applied point (the Clone pattern: whatever is
 * published after the subscription is heard, whatever before is in the repository), then
 * start the subscriber thread (which also runs the poll backstop) and, when [bus] publish is
 * set, the publisher thread, and install the core's publish hook. Returns 0 or an error;
 * *out is stopped with cg_bus_stop().
 */
int cg_bus_start(cg_bus **out, cg_core *core);

/* Stop both threads, close the sockets, free the bus. Accepts NULL. */
void cg_bus_stop(cg_bus *bus);

void cg_bus_stats_get(cg_bus *bus, cg_bus_stats *out);

/* Queue a membership event about `member` (incarnation `incarnation`) for the publisher; never
 * blocks. Accepts a NULL bus (no publish endpoints): nothing is sent. */
void cg_bus_publish_member(cg_bus *bus, int event, const char *member, int64_t incarnation);

/* Queue an invalidation committed by another core (a failed member being recovered), sent with
 * that core's name and incarnation as origin. Copies items; never blocks. */
void cg_bus_republish(cg_bus *bus, const char *origin, int64_t incarnation, int64_t seq,
                      int64_t committed_us, const cg_bus_item *items, size_t n);

#endif
