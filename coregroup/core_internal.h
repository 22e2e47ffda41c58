/*
 * core_internal.h — the body of cg_core and the interfaces between its parts (private).
 *
 * A core runs three threads besides its callers', one job each (DESIGN.md "Threads"):
 *  - the bus's publisher thread (invalidation/bus.c) owns the PUB sockets;
 *  - the APPLY thread is the bus's subscriber thread: it owns the SUB sockets and one
 *    repository connection used only to catch up a real gap (catchup.c) and to prove the
 *    cache fresh (poll.c, lease.c). Its handlers are in apply.c;
 *  - the HOUSEKEEPING thread (housekeeping.c) owns another connection for membership
 *    (heartbeats, failure detection, fencing, recovery; membership.c) and outbox pruning.
 * A statement that hangs on the housekeeping connection, or a pool connection's reconnect,
 * cannot delay applying an invalidation; one that hangs on the apply connection stops the
 * lease from being renewed, so reads stop trusting the cache within max_staleness_ms.
 */
#ifndef CG_CORE_INTERNAL_H
#define CG_CORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "bus.h"
#include "cache.h"
#include "coregroup/sys/hist.h"
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

    cg_bus *bus;    /* publisher and subscriber (apply) threads, invalidation/bus.c */
    int publishing; /* [bus] publish is set: committed changes go to the bus */
    /* replaces the bus as the receiver of committed change lists (tests observe them) */
    void (*publish_fn)(void *ctx, const cg_inval_batch *batch);
    void *publish_ctx;

    /* The lease (lease.c): the cache may serve a hit while the coarse monotonic clock reads
     * below fresh_until_ms. Written by the apply thread only, read by every hit. */
    _Atomic int64_t fresh_until_ms;
    _Atomic int64_t proof_at_us; /* CLOCK_MONOTONIC start of the last proof; 0: none */
    int coarse_slack_ms;         /* resolution of CLOCK_MONOTONIC_COARSE, taken off the lease */

    /* Apply thread only (apply.c, catchup.c, poll.c). */
    struct {
        cg_conn *conn;       /* "<core>/apply": catch-up reads and freshness proofs only */
        int64_t proof_t0_us; /* a proof waiting for the bus to deliver up to proof_seq */
        int64_t proof_seq;   /* 0: no proof waiting */
        int64_t next_proof_us;
        int proof_every_ms;
    } apply;
    atomic_int repo_ok;    /* the apply thread's last repository contact worked */
    atomic_int names_ok;   /* every live member read bus wire version 2 at the last reading of
                              event_seq (a proof, a catch-up, the start): names, lists and
                              finds may be cached (call.c, "Cached names") */
    char apply_error[256]; /* why it did not (guarded by apply_error_mu) */
    pthread_mutex_t apply_error_mu;

    /* Housekeeping thread (housekeeping.c). */
    pthread_t hk_thread;
    int hk_running;
    pthread_mutex_t hk_mu;
    pthread_cond_t hk_cv;
    atomic_int hk_stop;
    cg_conn *hk_conn; /* "<core>/members": membership and pruning */

#ifdef CG_TEST_HOOKS
    /* Fault injection, compiled into test builds only (CMake option CG_TEST_HOOKS). */
    struct {
        int exit_after_commit; /* after COMMIT, before publishing: 1 _exit(0), 2 SIGKILL */
        int exit_at_commit;    /* ... at this commit of the process (0 or 1: the first) */
        atomic_uint commits;   /* commits so far, for exit_at_commit */
        int drop_every;        /* the publisher drops every Nth invalidation */
        atomic_uint published; /* the publisher's count, for drop_every */
        atomic_uint dropped;   /* dropped by drop_every (counted as unsent) */
        atomic_int swap_next;  /* hold the next invalidation back and send it after the one
                                  that follows it (a reordering on the wire) */
        /* the invalidation held back (under held_mu; held_n is also read without it, by
         * committing threads deciding whether to take held_mu at all) */
        cg_bus_item held_items[8];
        atomic_size_t held_n;
        int64_t held_seq, held_us;
        pthread_mutex_t held_mu;
        /* hang this long (ms) before the statement: pruning, the membership heartbeat, a
         * reconnect of the housekeeping connection or of a pool connection */
        atomic_int hang_prune_ms, hang_beat_ms, hang_reconnect_ms;
        atomic_int hanging;   /* a hook is sleeping right now */
        atomic_int no_proofs; /* the apply thread neither polls nor proves freshness (poll.c):
                                 the cache stays as the bus left it and the lease runs out */
    } hooks;
#endif

    atomic_int fenced;  /* 1: the group fenced this incarnation; rejoining */
    atomic_int rejoin;  /* a commit was refused as fenced: rejoin at once */
    atomic_int leaving; /* cg_core_close has begun: membership must not rejoin */
    atomic_uint_fast64_t suspected, failed, recoveries, republished, rejoins, sessions_ended;
    atomic_uint_fast64_t calls_committed, calls_aborted, stale_errors;
    atomic_uint_fast64_t invalidations_applied, cache_resets;
    atomic_uint_fast64_t repository_reads, repository_reconnects;
    atomic_uint_fast64_t polls, freshness_proofs, lease_misses, prunes, pruned_rows;
    cg_hist hist[CG_HIST_COUNT]; /* cg_core_hist */
};

/* Take a connection from the pool (connecting a new one while fewer than pool_size are open,
 * else waiting for one). Connecting retries per [retry]. */
int cg_core__conn_acquire(cg_core *core, cg_conn **out);
/* Return a connection; a broken one is closed. Any open transaction must have ended. */
void cg_core__conn_release(cg_core *core, cg_conn *conn);
/* Tell the repository that this session belongs to the core's current incarnation, unless it
 * knows already (a round trip only after a connect or a rejoin). When that incarnation is
 * fenced, a rejoin is asked for and 0 returned: the session is used unadvertised (its commits
 * are refused by the fence anyway). Not inside a transaction. */
int cg_core__advertise(cg_core *core, cg_conn *conn);
/* Reconnect a broken connection in place, retrying per [retry]. */
int cg_core__reconnect(cg_core *core, cg_conn *conn, int first_attempt);
/* 1 when err should be retried: CG_ERETRYABLE, or a SQLSTATE listed in [retry] sqlstates
 * (then the error code is rewritten to CG_ERETRYABLE). */
int cg_core__retryable(cg_core *core, int *err);

/* Membership (membership.c), run by the housekeeping thread on its own connection:
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

/* Hand a committed change list to the bus (after COMMIT, never before, never for an aborted
 * call); on the committing thread, never blocks. */
void cg_core__publish(cg_core *core, const cg_inval_batch *batch);
/* Send committed change lists to fn instead of the bus (NULL: the bus again). Set it before
 * calls start; for tests that observe what a core publishes. */
void cg_core__set_publisher(cg_core *core, void (*fn)(void *, const cg_inval_batch *), void *ctx);
/* Apply invalidations: versions below each item's are stale. */
void cg_core__invalidate(cg_core *core, const cg_bus_item *items, size_t n);
/* Forget the whole group cache (a gap that cannot be caught up, or a rejoin). */
void cg_core__reset(cg_core *core);
/* What the apply thread learnt with event_seq: whether every live member reads wire version
 * 2. When that stops being true the whole cache is reset (cached listings may miss a
 * version-1 member's binds, which raise no names version), and names are read from the
 * repository until it is true again. */
void cg_core__names_ok(cg_core *core, int all_v2);
/* The items of an event the bus may carry now (wire version 2 only once every member reads it);
 * sets *n, and *tmp to what the caller frees. */
const cg_bus_item *cg_core__wire_items(cg_core *core, const cg_bus_item *items, size_t *n,
                                       cg_bus_item **tmp);

/* ---- the apply thread (apply.c, catchup.c, poll.c) ---- */

/* Open the bus (sockets subscribed), read where the group stands, start the bus threads with
 * that as the applied point and the lease proved from it. Returns 0 or an error. */
int cg_apply_start(cg_core *core);
/* Stop the bus threads and close the apply connection. Accepts a core whose start failed. */
void cg_apply_stop(cg_core *core);
/* The apply connection, reconnected (one attempt, no waiting) when broken; NULL when the
 * repository cannot be reached now (the reason is recorded for health). */
cg_conn *cg_apply__conn(cg_core *core);
/* Record the apply thread's last repository contact (err 0: it worked). */
void cg_apply__note(cg_core *core, int err);
/* Read the events after `applied` from the outbox and apply them, or reset the cache when the
 * outbox no longer has them. Proves the cache fresh as of its start (it reads the group's
 * event_seq). Returns the repository's event_seq (the new applied point) or -1. */
int64_t cg_catchup_run(cg_core *core, int64_t applied);
/* The backstop poll and freshness proof, on every tick of the apply thread. */
void cg_poll_tick(cg_core *core);
/* The applied point moved: complete a proof that waited for the bus. */
void cg_poll_advanced(cg_core *core, int64_t applied);

/* ---- the lease (lease.c) ---- */

/* Every event the repository had at t0_us (CLOCK_MONOTONIC, taken before the query that read
 * its event_seq) is applied: the cache may serve until t0 + max_staleness_ms. Forward only. */
void cg_lease_renew(cg_core *core, int64_t t0_us);
/* Age of the last proof in ms (-1: none), and why the lease is not valid ("" when it is). */
int64_t cg_lease_age_ms(const cg_core *core);
void cg_lease_reason(const cg_core *core, char *buf, size_t size);

/* 1 when the cache may serve a hit: a coarse clock read and one atomic load, no lock. */
static inline int cg_lease_valid(const cg_core *core)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 <
           atomic_load_explicit(&((cg_core *)core)->fresh_until_ms, memory_order_acquire);
}

/* ---- the housekeeping thread (housekeeping.c) ---- */

int cg_housekeeping_start(cg_core *core);
/* Stop the thread, then leave the group (state 'left', announced on the bus) on its
 * connection, reconnected once if needed; closes the connection. */
void cg_housekeeping_stop(cg_core *core);
/* Run a membership tick now (a commit was refused as fenced). Any thread. */
void cg_housekeeping_wake(cg_core *core);

#ifdef CG_TEST_HOOKS
/* Sleep `ms` as a hook (counted in hooks.hanging); nothing when ms <= 0. */
void cg_core__hang(cg_core *core, int ms);
/* CG_HANG(core, hang_prune_ms): sleep for that hook's setting (test builds only). */
#define CG_HANG(core, field) cg_core__hang((core), atomic_load(&(core)->hooks.field))
#else
#define CG_HANG(core, field) ((void)0)
#endif

#endif
