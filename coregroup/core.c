/*
 * core.c — opening and closing a core, its connection pool, and the cache-side interface
 * the bus uses.
 *
 * Opening registers the core in its group: the group row (and with it the root folder) is
 * created on first use, and the membership row gets a new incarnation every time, so a
 * restarted core fences its former self (writes carry the incarnation; see
 * cg_outbox_append in migration 0002) — but a name a live process holds is refused
 * (cg_membership_join in membership.c). A core without a configured group uses
 * "private.<name>" (config.c), which keeps its data its own across restarts.
 *
 * The pool holds at most [repository] pool_size connections, opened on demand. Broken
 * connections are closed when returned and replaced on the next demand; connecting retries
 * [retry] attempts times, [retry] interval_ms apart, while the failure is retryable
 * (e-Speak design §1.2.4.2). Reconnecting happens on the thread of the call that needs the
 * connection, never on the apply thread. Before a call's first statement on a connection,
 * the connection advertises the core's current incarnation to the repository (one round
 * trip, only after a connect or a rejoin; cg_core__advertise), so that fencing this
 * incarnation can end exactly its sessions.
 *
 * Opening starts, in order: membership registration, the apply thread with the bus
 * (apply.c: subscribe, read the applied point, prove the cache fresh), and the housekeeping
 * thread. Closing stops them in reverse.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core_internal.h"
#include "coregroup/sys/error.h"
#include "pg.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (ms > 0 && nanosleep(&ts, &ts) != 0)
        ;
}

int cg_core__retryable(cg_core *core, int *err)
{
    const char *state = cg_error_last()->sqlstate;
    if (*err == CG_ERETRYABLE)
        return 1;
    if (*err < 0 && *err != CG_ESTALE && *err != CG_EFENCED && state[0] &&
        cg_pg_sqlstate_in(state, (const char(*)[6])core->cfg->sqlstates, core->cfg->n_sqlstates)) {
        cg_error__mut()->code = CG_ERETRYABLE;
        *err = CG_ERETRYABLE;
        return 1;
    }
    return 0;
}

/* Connect a new pool connection, retrying per [retry]. */
static int connect_retry(cg_core *core, cg_conn **out)
{
    int attempt, err = 0;
    for (attempt = 0;; attempt++) {
        CG_HANG(core, hang_reconnect_ms);
        if ((err = cg_repo_connect(out, core->cfg, core->cfg->core_name)) == 0)
            return 0;
        if (!cg_core__retryable(core, &err) || attempt >= core->cfg->retry_attempts)
            return err;
        sleep_ms(core->cfg->retry_interval_ms);
    }
}

int cg_core__advertise(cg_core *core, cg_conn *conn)
{
    int64_t incarnation = atomic_load(&core->incarnation);
    int err;
    if (conn->advertised == incarnation || conn->in_tx)
        return 0;
    err = cg_repo_session_advertise(conn, core->cfg->group_id, core->cfg->core_name, incarnation);
    if (err == CG_EFENCED) {
        /* Found fenced: rejoin now, not at the next tick. The session goes on unadvertised:
         * what it reads is still the repository's, and whatever it writes is refused at
         * commit by the same fence. */
        if (incarnation == atomic_load(&core->incarnation)) {
            atomic_store(&core->rejoin, 1);
            cg_housekeeping_wake(core);
        }
        return 0;
    }
    return err;
}

int cg_core__reconnect(cg_core *core, cg_conn *conn, int first_attempt)
{
    int attempt, err = 0;
    for (attempt = first_attempt;; attempt++) {
        CG_HANG(core, hang_reconnect_ms);
        if ((err = cg_repo_reconnect(conn, core->cfg, core->cfg->core_name)) == 0) {
            atomic_fetch_add(&core->repository_reconnects, 1);
            return 0;
        }
        if (!cg_core__retryable(core, &err) || attempt >= core->cfg->retry_attempts)
            return err;
        sleep_ms(core->cfg->retry_interval_ms);
    }
}

int cg_core__conn_acquire(cg_core *core, cg_conn **out)
{
    int err;
    *out = NULL;
    pthread_mutex_lock(&core->pool_mu);
    while (core->n_idle == 0 && core->n_open >= core->cfg->pool_size)
        pthread_cond_wait(&core->pool_cv, &core->pool_mu);
    if (core->n_idle > 0) {
        *out = core->idle[--core->n_idle];
        pthread_mutex_unlock(&core->pool_mu);
    } else {
        core->n_open++; /* reserve the slot, connect outside the lock */
        pthread_mutex_unlock(&core->pool_mu);
        if ((err = connect_retry(core, out)) < 0) {
            pthread_mutex_lock(&core->pool_mu);
            core->n_open--;
            pthread_cond_signal(&core->pool_cv);
            pthread_mutex_unlock(&core->pool_mu);
            return err;
        }
    }
    return 0;
}

void cg_core__conn_release(cg_core *core, cg_conn *conn)
{
    if (conn == NULL)
        return;
    pthread_mutex_lock(&core->pool_mu);
    if (cg_repo_reusable(conn)) {
        core->idle[core->n_idle++] = conn;
    } else {
        /* broken (or left mid-transaction): close it; the next demand opens a new one */
        core->n_open--;
        cg_repo_close(conn);
        atomic_fetch_add(&core->repository_reconnects, 1);
    }
    pthread_cond_signal(&core->pool_cv);
    pthread_mutex_unlock(&core->pool_mu);
}

#ifdef CG_TEST_HOOKS
/*
 * Test builds only: CG_TEST_HOOKS="drop_every=3,exit_after_commit=2,exit_at_commit=5" sets
 * fault-injection hooks of a core that runs in another process (coregroupd under
 * tests/fault/run-faults.py), where the tests cannot reach the struct. An unknown or
 * malformed entry is reported on stderr and ignored: a test build is never configured by it.
 */
static void hooks_from_environment(cg_core *core)
{
    const char *env = getenv("CG_TEST_HOOKS");
    char buf[256], *save = NULL, *tok;

    if (env == NULL || *env == '\0')
        return;
    snprintf(buf, sizeof(buf), "%s", env);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '='), *end;
        long v;
        if (eq == NULL || (v = strtol(eq + 1, &end, 10), *end != '\0') || v < 0 || v > 1000000) {
            fprintf(stderr, "coregroup: CG_TEST_HOOKS: ignoring \"%s\" (want name=integer)\n", tok);
            continue;
        }
        *eq = '\0';
        if (strcmp(tok, "drop_every") == 0)
            core->hooks.drop_every = (int)v;
        else if (strcmp(tok, "exit_after_commit") == 0)
            core->hooks.exit_after_commit = (int)v;
        else if (strcmp(tok, "exit_at_commit") == 0)
            core->hooks.exit_at_commit = (int)v;
        else
            fprintf(stderr, "coregroup: CG_TEST_HOOKS: ignoring unknown hook \"%s\"\n", tok);
    }
}
#endif

int cg_core_open_config(cg_core **out, const cg_config *given)
{
    cg_core *core = NULL;
    cg_conn *conn = NULL;
    cg_cache_options copts;
    size_t i;
    int err;

    *out = NULL;
    if (given == NULL)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT, "no configuration given");
    if ((core = calloc(1, sizeof(*core))) == NULL)
        return cg_error_nomem();
    pthread_mutex_init(&core->pool_mu, NULL);
    pthread_cond_init(&core->pool_cv, NULL);
    pthread_mutex_init(&core->apply_error_mu, NULL);
    pthread_mutex_init(&core->hk_mu, NULL);
    pthread_cond_init(&core->hk_cv, NULL);
#ifdef CG_TEST_HOOKS
    pthread_mutex_init(&core->hooks.held_mu, NULL);
    hooks_from_environment(core);
#endif
    {
        static const double lag_ms[] = {0.1, 0.25, 0.5, 1,   2.5,  5,    10,   25,
                                        50,  100,  250, 500, 1000, 2500, 5000, INFINITY};
        static const double age_ms[] = {10,   25,   50,   100,   250,   500,
                                        1000, 2000, 5000, 10000, 30000, INFINITY};
        static const double events[] = {1, 2, 5, 10, 50, 100, 500, 1000, 10000, INFINITY};
        cg_hist_init(&core->hist[CG_HIST_EVICTION_LAG_MS], lag_ms,
                     sizeof(lag_ms) / sizeof(*lag_ms));
        cg_hist_init(&core->hist[CG_HIST_PROOF_AGE_MS], age_ms, sizeof(age_ms) / sizeof(*age_ms));
        cg_hist_init(&core->hist[CG_HIST_CATCHUP_EVENTS], events, sizeof(events) / sizeof(*events));
    }
    {
        struct timespec res;
        clock_getres(CLOCK_MONOTONIC_COARSE, &res);
        core->coarse_slack_ms = (int)(res.tv_sec * 1000 + (res.tv_nsec + 999999) / 1000000);
    }

    /* a deep copy: the caller keeps its configuration */
    if ((err = cg_config_new(&core->cfg)) < 0)
        goto fail;
    {
        cg_config *c = core->cfg;
        char *src = c->source;
        *c = *given;
        c->source = src;
        c->dsn = c->core_name = c->group_id = NULL;
        c->curve_server_key = c->curve_public_key = c->curve_secret_key = NULL;
        c->listen = c->pidfile = NULL;
        c->daemon_curve_secret_key = c->daemon_curve_public_key = c->daemon_curve_clients = NULL;
        c->metrics_listen = NULL;
        memset(c->publish, 0, sizeof(c->publish));
        memset(c->subscribe, 0, sizeof(c->subscribe));
        if ((err = cg_config_set_string(&c->source, given->source)) < 0 ||
            (err = cg_config_set_string(&c->dsn, given->dsn)) < 0 ||
            (err = cg_config_set_string(&c->core_name, given->core_name)) < 0 ||
            (err = cg_config_set_string(&c->group_id, given->group_id)) < 0 ||
            (err = cg_config_set_string(&c->curve_server_key, given->curve_server_key)) < 0 ||
            (err = cg_config_set_string(&c->curve_public_key, given->curve_public_key)) < 0 ||
            (err = cg_config_set_string(&c->curve_secret_key, given->curve_secret_key)) < 0 ||
            (err = cg_config_set_string(&c->listen, given->listen)) < 0 ||
            (err = cg_config_set_string(&c->pidfile, given->pidfile)) < 0 ||
            (err = cg_config_set_string(&c->daemon_curve_secret_key,
                                        given->daemon_curve_secret_key)) < 0 ||
            (err = cg_config_set_string(&c->daemon_curve_public_key,
                                        given->daemon_curve_public_key)) < 0 ||
            (err = cg_config_set_string(&c->daemon_curve_clients, given->daemon_curve_clients)) < 0)
            goto fail;
        if ((err = cg_config_set_string(&c->metrics_listen, given->metrics_listen)) < 0)
            goto fail;
        for (i = 0; i < given->n_publish; i++)
            if ((err = cg_config_set_string(&c->publish[i], given->publish[i])) < 0)
                goto fail;
        for (i = 0; i < given->n_subscribe; i++)
            if ((err = cg_config_set_string(&c->subscribe[i], given->subscribe[i])) < 0)
                goto fail;
        if ((err = cg_config_validate(c)) < 0)
            goto fail;
    }
    if ((core->idle = calloc((size_t)core->cfg->pool_size, sizeof(cg_conn *))) == NULL) {
        err = cg_error_nomem();
        goto fail;
    }
    copts.max_entries = core->cfg->max_entries;
    copts.ttl_ms = core->cfg->ttl_ms;
    if ((err = cg_cache_new(&core->cache, &copts)) < 0)
        goto fail;
    if (gethostname(core->host, sizeof(core->host) - 1) != 0)
        strcpy(core->host, "unknown");

    if ((err = cg_core__conn_acquire(core, &conn)) < 0)
        goto fail;
    {
        int64_t incarnation = 0;
        if ((err = cg_repo_group_ensure(conn, core->cfg->group_id)) < 0 ||
            (err = cg_membership_join(&incarnation, core, conn)) < 0)
            goto fail;
        atomic_store(&core->incarnation, incarnation);
    }
    cg_core__conn_release(core, conn);
    conn = NULL;
    if ((err = cg_apply_start(core)) < 0 || (err = cg_housekeeping_start(core)) < 0)
        goto fail;
    *out = core;
    return 0;
fail:
    if (conn)
        cg_core__conn_release(core, conn);
    cg_core_close(core);
    return err;
}

int cg_core_open(cg_core **out, const char *ini_path)
{
    cg_config *cfg = NULL;
    int err;
    *out = NULL;
    if ((err = cg_config_load(&cfg, ini_path)) < 0)
        return err;
    err = cg_core_open_config(out, cfg);
    cg_config_free(cfg);
    return err;
}

void cg_core_close(cg_core *core)
{
    int i;
    if (core == NULL)
        return;
    atomic_store(&core->leaving, 1);
    cg_housekeeping_stop(core); /* and leave the group: its row and a bus message */
    cg_apply_stop(core);        /* its publisher sends what is queued, the leave event last */
    for (i = 0; i < core->n_idle; i++)
        cg_repo_close(core->idle[i]);
    free(core->idle);
    cg_cache_free(core->cache);
    cg_config_free(core->cfg);
    pthread_mutex_destroy(&core->pool_mu);
    pthread_cond_destroy(&core->pool_cv);
    pthread_mutex_destroy(&core->apply_error_mu);
    pthread_mutex_destroy(&core->hk_mu);
    pthread_cond_destroy(&core->hk_cv);
#ifdef CG_TEST_HOOKS
    pthread_mutex_destroy(&core->hooks.held_mu);
#endif
    free(core);
}

const char *cg_core_name(const cg_core *core)
{
    return core->cfg->core_name;
}

const char *cg_core_group(const cg_core *core)
{
    return core->cfg->group_id;
}

int64_t cg_core_incarnation(const cg_core *core)
{
    return atomic_load(&((cg_core *)core)->incarnation);
}

void cg_core_stats_get(const cg_core *core, cg_core_stats *out)
{
    cg_cache_stats cs;
    cg_bus_stats bs;
    cg_core *c = (cg_core *)core; /* the counters are atomics; reading them does not modify */
    int r;

    cg_cache_stats_get(c->cache, &cs);
    cg_bus_stats_get(c->bus, &bs);
    memset(out, 0, sizeof(*out));
    out->invalidations_sent = bs.published;
    out->invalidations_unsent = bs.publish_dropped;
#ifdef CG_TEST_HOOKS
    out->invalidations_unsent += atomic_load(&c->hooks.dropped);
#endif
    out->invalidations_received = bs.received;
    out->duplicates = bs.duplicates;
    out->gaps = bs.gaps;
    out->catchups = bs.catchups;
    for (r = 0; r < CG_DROP_COUNT; r++)
        out->messages_dropped += bs.dropped[r];
    out->heartbeats_received = bs.heartbeats_received;
    out->bus_conflicts = bs.conflicts;
    out->polls = atomic_load(&c->polls);
    out->applied_seq = bs.applied_seq;
    out->degraded = c->cfg->strategy == CG_CACHE_INVALIDATE && !cg_lease_valid(c);
    out->reordered = bs.reordered;
    out->freshness_proofs = atomic_load(&c->freshness_proofs);
    out->lease_misses = atomic_load(&c->lease_misses);
    out->proof_age_ms = cg_lease_age_ms(c);
    out->members_suspected = atomic_load(&c->suspected);
    out->members_failed = atomic_load(&c->failed);
    out->recoveries = atomic_load(&c->recoveries);
    out->recovered_events = atomic_load(&c->republished);
    out->rejoins = atomic_load(&c->rejoins);
    out->calls_committed = atomic_load(&c->calls_committed);
    out->calls_aborted = atomic_load(&c->calls_aborted);
    out->cache_hits = cs.hits;
    out->cache_misses = cs.misses;
    out->cache_fills = cs.fills;
    out->cache_fills_refused = cs.fills_refused;
    out->cache_evictions = cs.evictions;
    out->cache_expirations = cs.expirations;
    out->cache_entries = cs.entries;
    out->stale_errors = atomic_load(&c->stale_errors);
    out->invalidations_applied = atomic_load(&c->invalidations_applied);
    out->cache_resets = atomic_load(&c->cache_resets);
    out->repository_reads = atomic_load(&c->repository_reads);
    out->repository_reconnects = atomic_load(&c->repository_reconnects);
}

int cg_core_histogram_get(cg_histogram *out, const cg_core *core, cg_core_hist which)
{
    memset(out, 0, sizeof(*out));
    if ((int)which < 0 || which >= CG_HIST_COUNT)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT, "histogram %d: no such histogram",
                            (int)which);
    cg_hist_snapshot(out, &core->hist[which]);
    return 0;
}

int cg_core_members(cg_member_list *out, cg_core *core)
{
    cg_conn *conn;
    int err;
    out->members = NULL;
    out->n = 0;
    if ((err = cg_core__conn_acquire(core, &conn)) < 0)
        return err;
    err = cg_repo_members(out, conn, core->cfg->group_id);
    cg_core__conn_release(core, conn);
    return err;
}

int cg_core_health_get(cg_core_health *out, cg_core *core)
{
    cg_bus_stats bs;
    cg_conn *conn = NULL;
    int64_t seq = -1;

    memset(out, 0, sizeof(*out));
    cg_bus_stats_get(core->bus, &bs);
    /* A probe must answer within its caller's timeout: it never waits for a busy pool and
     * never retries connecting. With an idle connection it asks the repository once; without
     * one it reports what the apply thread saw at its last contact (at most one proof period
     * ago). */
    pthread_mutex_lock(&core->pool_mu);
    if (core->n_idle > 0)
        conn = core->idle[--core->n_idle];
    pthread_mutex_unlock(&core->pool_mu);
    if (conn) {
        out->repository_ok = cg_repo_event_seq(&seq, NULL, conn, core->cfg->group_id) == 0;
        cg_core__conn_release(core, conn);
    } else {
        out->repository_ok = atomic_load(&core->repo_ok);
        seq = out->repository_ok ? bs.applied_seq : -1;
    }
    out->bus_silent = bs.bus_silent;
    /* only the invalidate strategy trusts its cache without asking: only it has a lease */
    out->degraded = core->cfg->strategy == CG_CACHE_INVALIDATE && !cg_lease_valid(core);
    out->fenced = atomic_load(&core->fenced);
    out->applied_seq = bs.applied_seq;
    out->event_seq = out->repository_ok ? seq : -1;
    out->proof_age_ms = cg_lease_age_ms(core);
    out->max_staleness_ms = core->cfg->max_staleness_ms;
    if (out->degraded)
        cg_lease_reason(core, out->reason, sizeof(out->reason));
    else if (out->fenced)
        snprintf(out->reason, sizeof(out->reason), "fenced by the group; rejoining");
    else if (!out->repository_ok)
        snprintf(out->reason, sizeof(out->reason), "unable to reach the repository");
    if (out->reason[0])
        return cg_error_set(CG_EDEGRADED, CG_ERRCLASS_REPOSITORY, "core %s is %s: %s",
                            core->cfg->core_name, out->degraded ? "degraded" : "unhealthy",
                            out->reason);
    return 0;
}

void cg_core__set_publisher(cg_core *core, void (*fn)(void *, const cg_inval_batch *), void *ctx)
{
    core->publish_fn = fn;
    core->publish_ctx = ctx;
}

/*
 * What the bus may carry of an event's items (invalidation/PROTOCOL.md, "Versioning": writers
 * switch to wire version 2 only once every core of the group reads it). While every live member
 * said it reads v2 (names_ok), all of them, written as v2 when one is a names or find item.
 * While one may not, only what v1 can say: the part items, or when there are none the no-op
 * item, which is exactly the outbox row's `items` column. The names items are then only in the
 * outbox (`items_v2`), and no core of this release caches names meanwhile: each one's next
 * reading of the members, a proof at the latest, turns names_ok off and resets its cache.
 * Returns the items to send and sets *n; *tmp is what the caller frees.
 */
const cg_bus_item *cg_core__wire_items(cg_core *core, const cg_bus_item *items, size_t *n,
                                       cg_bus_item **tmp)
{
    static const cg_bus_item noop = {0, CG_PART_SPECIFICATION, 1};
    size_t i, parts = 0;

    *tmp = NULL;
    if (atomic_load(&core->names_ok))
        return items;
    for (i = 0; i < *n; i++)
        parts += items[i].kind < CG_PART_COUNT;
    if (parts == *n)
        return items;
    if (parts == 0) {
        *n = 1;
        return &noop;
    }
    if ((*tmp = malloc(parts * sizeof(**tmp))) == NULL)
        return items; /* v2 as a whole: an older core drops it and catches up from the outbox */
    for (i = 0, parts = 0; i < *n; i++)
        if (items[i].kind < CG_PART_COUNT)
            (*tmp)[parts++] = items[i];
    *n = parts;
    return *tmp;
}

/* Put a batch, already as the bus may carry it, on the bus (test builds: dropped or held back
 * by the hooks, as a lossy or reordering wire would). */
static void publish_batch(cg_core *core, const cg_inval_batch *b)
{
#ifdef CG_TEST_HOOKS
    if (core->hooks.drop_every > 0 &&
        atomic_fetch_add(&core->hooks.published, 1) % (unsigned)core->hooks.drop_every ==
            (unsigned)core->hooks.drop_every - 1) {
        atomic_fetch_add(&core->hooks.dropped, 1);
        return; /* lost on the way: the outbox has it */
    }
    if (atomic_load(&core->hooks.swap_next) || atomic_load(&core->hooks.held_n) > 0) {
        /* a reordering on the wire: hold this one back, send it after the next */
        pthread_mutex_lock(&core->hooks.held_mu);
        if (core->hooks.held_n == 0 && b->n <= 8) {
            memcpy(core->hooks.held_items, b->items, b->n * sizeof(*b->items));
            core->hooks.held_n = b->n;
            core->hooks.held_seq = b->seq;
            core->hooks.held_us = b->committed_us;
            atomic_store(&core->hooks.swap_next, 0);
            pthread_mutex_unlock(&core->hooks.held_mu);
            return;
        }
        cg_bus_publish(core->bus, b->seq, b->committed_us, b->items, b->n);
        if (core->hooks.held_n > 0)
            cg_bus_publish(core->bus, core->hooks.held_seq, core->hooks.held_us,
                           core->hooks.held_items, core->hooks.held_n);
        core->hooks.held_n = 0;
        pthread_mutex_unlock(&core->hooks.held_mu);
        return;
    }
#endif
    cg_bus_publish(core->bus, b->seq, b->committed_us, b->items, b->n);
}

void cg_core__publish(cg_core *core, const cg_inval_batch *b)
{
    cg_inval_batch wire = *b;
    cg_bus_item *tmp;

    if (core->publish_fn) {
        core->publish_fn(core->publish_ctx, b);
        return;
    }
    if (!core->publishing)
        return;
    wire.items = cg_core__wire_items(core, b->items, &wire.n, &tmp);
    publish_batch(core, &wire);
    free(tmp);
}

void cg_core__invalidate(cg_core *core, const cg_bus_item *items, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        cg_cache_invalidate(core->cache, items[i].handle, items[i].kind, items[i].version);
    atomic_fetch_add(&core->invalidations_applied, n);
}

void cg_core__reset(cg_core *core)
{
    cg_cache_reset(core->cache);
    atomic_fetch_add(&core->cache_resets, 1);
}

void cg_core__names_ok(cg_core *core, int all_v2)
{
    if (atomic_exchange(&core->names_ok, all_v2 ? 1 : 0) && !all_v2)
        cg_core__reset(core);
}
