/*
 * core_internal.h — the body of cg_core and the interfaces between the core, its calls and
 * the bus (private).
 *
 * The bus side talks to a core through three functions only: the publisher hook receives
 * every committed change list (after COMMIT, never before, never for an aborted call), and
 * cg_core__invalidate() / cg_core__reset() apply what a subscriber heard.
 */
#ifndef CG_CORE_INTERNAL_H
#define CG_CORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "bus.h"
#include "cache.h"
#include "coregroup/core.h"
#include "repo.h"

/* One committed call's changes, as handed to the publisher. */
typedef struct cg_inval_batch {
    const char *group;
    int64_t seq; /* the group's event number of this change (the outbox row) */
    const char *origin;
    int64_t incarnation;
    int64_t committed_us; /* commit time, microseconds since the epoch */
    const cg_bus_item *items;
    size_t n;
} cg_inval_batch;

/* Called after a call's COMMIT succeeded and its cache changes were applied, on the thread
 * that committed. Must not block for long and must not call back into the core's calls. */
typedef void (*cg_publish_fn)(void *ctx, const cg_inval_batch *batch);

struct cg_core {
    cg_config *cfg;
    char host[256];
    _Atomic int64_t incarnation; /* changes when the core rejoins after being fenced */
    cg_cache *cache;

    /* the connection pool: idle connections, and how many are open in all */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
    cg_conn **idle;
    int n_idle, n_open;

    cg_publish_fn publish;
    void *publish_ctx;
    cg_bus *bus; /* publisher and subscriber threads (invalidation/bus.c) */

#ifdef CG_TEST_HOOKS
    /* Fault injection, compiled into test builds only (CMake option CG_TEST_HOOKS). */
    struct {
        int exit_after_commit; /* after COMMIT, before publishing: 1 _exit(0), 2 SIGKILL */
        int drop_every;        /* the publisher drops every Nth invalidation */
        atomic_uint published; /* the publisher's count, for drop_every */
    } hooks;
#endif

    atomic_int degraded; /* 1: serve reads from the repository, not the cache */
    atomic_int fenced;   /* 1: the group fenced this incarnation; rejoining */
    atomic_int rejoin;   /* a commit was refused as fenced: rejoin at once */
    atomic_int leaving;  /* cg_core_close has begun: membership must not rejoin */
    atomic_uint_fast64_t suspected, failed, recoveries, republished, rejoins;
    atomic_uint_fast64_t calls_committed, calls_aborted, stale_errors;
    atomic_uint_fast64_t invalidations_applied, cache_resets;
    atomic_uint_fast64_t repository_reads, repository_reconnects;
};

/* Take a connection from the pool (connecting a new one while fewer than pool_size are open,
 * else waiting for one). Connecting retries per [retry]. */
int cg_core__conn_acquire(cg_core *core, cg_conn **out);
/* Return a connection; a broken one is closed. Any open transaction must have ended. */
void cg_core__conn_release(cg_core *core, cg_conn *conn);
/* Reconnect a broken connection in place, retrying per [retry]. */
int cg_core__reconnect(cg_core *core, cg_conn *conn, int first_attempt);
/* 1 when err should be retried: CG_ERETRYABLE, or a SQLSTATE listed in [retry] sqlstates
 * (then the error code is rewritten to CG_ERETRYABLE). */
int cg_core__retryable(cg_core *core, int *err);

/* Membership (membership.c), run by the bus's subscriber thread on its own connection:
 * record this core's heartbeat (rejoining when it finds itself fenced), suspect silent
 * members, and — when this core is the deterministically chosen one — fence a member silent
 * for twice the failure timeout and redo its publishing. */
void cg_membership_tick(cg_core *core, cg_conn *conn, int64_t applied_seq);
/* Register this core in its group with a new incarnation, on open and on rejoining. Refused
 * (CG_EEXISTS, naming host, pid and heartbeat age) while another live process holds the name:
 * a row neither failed nor left, heard from within failure_timeout_ms, that is not a former
 * self of this process and not a dead process on this host. */
int cg_membership_join(int64_t *incarnation, cg_core *core, cg_conn *conn);
/* Leave the group (state 'left'); on close. */
void cg_membership_leave(cg_core *core, cg_conn *conn);

/* Install the publisher hook (NULL: none). Not thread-safe against running calls: set it
 * before calls start. */
void cg_core__set_publisher(cg_core *core, cg_publish_fn fn, void *ctx);
/* Apply invalidations heard from the bus: versions below each item's are stale. */
void cg_core__invalidate(cg_core *core, const cg_bus_item *items, size_t n);
/* Forget the whole group cache (a gap that cannot be caught up). */
void cg_core__reset(cg_core *core);
/* Degraded: the core cannot prove its cache fresh; reads go to the repository. */
void cg_core__set_degraded(cg_core *core, int on);

#endif
