/*
 * call.c — calls: one transaction each, and the cache kept in step with it.
 *
 * The rules (DESIGN.md "One call, end to end"; invariants I3, I4, I6):
 *  - A call opens its transaction lazily, with its first repository statement; a call served
 *    entirely from the cache costs no round trip.
 *  - Writes are STAGED in the call: the cache does not change until COMMIT has succeeded. The
 *    call reads its own staged writes back.
 *  - A stale conditional update evicts the stale entry at once (and raises its floor to the
 *    version the repository holds), then ends the call: rollback, staged changes dropped.
 *  - Any error that fails the transaction (a lost connection, an SQL error, stale, fenced)
 *    ends the call the same way: the repository rolls back, staged changes are dropped and
 *    every entry the call wrote or locked is evicted ("when unsure, invalidate more").
 *    Errors that leave the transaction healthy (not found, exists, bad arguments checked
 *    before sending) leave the call usable.
 *  - COMMIT writes one outbox row listing every (handle, part, new version) the call changed,
 *    numbered by the group's event sequence, in the same round trip as COMMIT; only after it
 *    succeeded are the staged changes applied to the cache and the list handed to the
 *    publisher. An aborted call publishes nothing.
 *  - A call remembers the core's incarnation when it begins and commits under it: a core that
 *    was fenced and rejoined while the call ran cannot commit the old call's writes.
 *  - Retries: a retryable failure of the FIRST statement of a call (a connection that died
 *    while idle, the repository restarting) is retried per [retry] after reconnecting; once a
 *    statement of the call has succeeded, a retryable failure ends the call with
 *    CG_ERETRYABLE and nothing half-applied. cg_call_run() retries whole calls.
 *
 * Cached names. `lookup`, `list` and `find` are served from the cache like parts, under the
 * keys of include/coregroup/sys/item.h: (folder, CG_ITEM_NAMES) at the folder's names version
 * holds the folder's whole listing, which `list` returns and `lookup` searches;
 * (cg_service_key(service_id), CG_ITEM_FIND) at the key's counter holds `find`'s handles.
 *  - Writes stage an item with no body, like a deleted part: bind and unbind (folder,
 *    names), register with a service id (key, find), unregister (every item
 *    cg_repo_resource_delete returns). Their version is the call's event number, given at
 *    commit by the outbox append (which also stores it as the folder's names_version or the
 *    key's service_versions row) and by cg_call_commit to the staged items: it follows
 *    commit order and needs no row lock held for the rest of the call. So the outbox row,
 *    the bus message (wire version 2 when it has such an item and every member reads it),
 *    the abort's eviction and the after-commit invalidation are the parts' own code.
 *  - Reads use cg_cache_load (single flight, tickets and floors against a late stale fill,
 *    TTL, reset), behind the same lease check as a part's read. A call that changed a key
 *    itself reads that key from the repository through its own transaction, which sees the
 *    change; the cache does not know it before the commit.
 *  - Values are cg_parts whose body is packed, not JSON: a listing is, per binding in the
 *    repository's order, the target (8 bytes, host order) then the name and a NUL; a find
 *    result is the service id and a NUL, then the handles (8 bytes each). A find result of
 *    another service id under the same key (a hash collision) is not used: that read goes
 *    to the repository.
 *  - Only the invalidation strategy caches names. With "none" and "version-check" they go to
 *    the repository every time (a version check for names would cost the same round trip as
 *    the read; not worth it).
 *  - Rollout (invalidation/PROTOCOL.md, "Wire version 2"): names are cached only while every
 *    live member of the group reads wire version 2, as the apply thread last read it with
 *    event_seq. A core of an older release binds without raising any names version and
 *    without an item, so while one is a member, names are read from the repository; when
 *    one joins, the next proof (at most a quarter of the bound later) resets the cache, so
 *    the freshness bound holds for names too. Writers always stage their name items: the
 *    outbox keeps them in items_v2, where an older core never looks (migration 0006).
 */
#include <assert.h>
#include <signal.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core_internal.h"
#include "coregroup/sys/error.h"

typedef struct {
    int64_t handle;
    int kind;
    int64_t version;
    cg_part *part; /* the new body; NULL for a deleted resource's part */
} staged_write;

typedef struct {
    int64_t handle;
    int kind;
} touched_key;

struct cg_call {
    cg_core *core;
    cg_conn *conn;       /* NULL until the call needs the repository */
    int statements;      /* repository statements of this call that succeeded */
    int one_read;        /* cg_part_read(): the call is exactly one read */
    int no_retry;        /* one attempt only, no start-of-call retry (a degraded read) */
    int64_t incarnation; /* the core's incarnation when the call began: its writes are fenced
                            by it, even if the core rejoins as a new incarnation meanwhile */
    int failed;          /* the code that ended the call's transaction; 0 while usable */
    cg_error failure;
    staged_write *writes;
    size_t n_writes, cap_writes;
    staged_write *dropped; /* the writes a failure dropped: their parts stay lent out */
    size_t n_dropped;
    touched_key *touched;
    size_t n_touched, cap_touched;
    cg_part **kept; /* references to the parts read from the repository that the call lent */
    size_t n_kept, cap_kept;
    int in_section; /* a read-side section is open (cached parts lent) until the call ends */
};

/* ---- bookkeeping ---------------------------------------------------------------------- */

static int touch(cg_call *call, int64_t handle, int kind)
{
    size_t i;
    for (i = 0; i < call->n_touched; i++)
        if (call->touched[i].handle == handle && call->touched[i].kind == kind)
            return 0;
    if (call->n_touched == call->cap_touched) {
        size_t cap = call->cap_touched ? call->cap_touched * 2 : 8;
        touched_key *t = realloc(call->touched, cap * sizeof(*t));
        if (t == NULL)
            return cg_error_nomem();
        call->touched = t;
        call->cap_touched = cap;
    }
    call->touched[call->n_touched].handle = handle;
    call->touched[call->n_touched].kind = kind;
    call->n_touched++;
    return 0;
}

/* Stage a write; takes ownership of part (may be NULL for a deletion). */
static int stage(cg_call *call, int64_t handle, int kind, int64_t version, cg_part *part)
{
    int err;
    if ((err = touch(call, handle, kind)) < 0)
        goto fail;
    if (call->n_writes == call->cap_writes) {
        size_t cap = call->cap_writes ? call->cap_writes * 2 : 8;
        staged_write *w = realloc(call->writes, cap * sizeof(*w));
        if (w == NULL) {
            err = cg_error_nomem();
            goto fail;
        }
        call->writes = w;
        call->cap_writes = cap;
    }
    call->writes[call->n_writes++] = (staged_write){handle, kind, version, part};
    return 0;
fail:
    cg_part_free(part);
    return err;
}

/* The call's own newest staged write of a key, or NULL. */
static const staged_write *staged(const cg_call *call, int64_t handle, int kind)
{
    size_t i = call->n_writes;
    while (i-- > 0)
        if (call->writes[i].handle == handle && call->writes[i].kind == kind)
            return &call->writes[i];
    return NULL;
}

static void free_writes(staged_write *w, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        cg_part_free(w[i].part);
    free(w);
}

/* A failed call forgets its writes, but a part cg_part_get lent from them stays valid until
 * the call ends: the writes are set aside, freed by call_free (a call fails at most once). */
static void drop_staged(cg_call *call)
{
    assert(call->dropped == NULL);
    call->dropped = call->writes;
    call->n_dropped = call->n_writes;
    call->writes = NULL;
    call->n_writes = call->cap_writes = 0;
}

/* Lend p (a reference read from the repository) until the call ends. Takes ownership of p;
 * out of memory, p is released and CG_ERROR returned. */
static int lend(cg_call *call, cg_part *p, const cg_part **out)
{
    if (call->n_kept == call->cap_kept) {
        size_t cap = call->cap_kept ? call->cap_kept * 2 : 4;
        cg_part **k = realloc(call->kept, cap * sizeof(*k));
        if (k == NULL) {
            cg_part_free(p);
            return cg_error_nomem();
        }
        call->kept = k;
        call->cap_kept = cap;
    }
    call->kept[call->n_kept++] = p;
    *out = p;
    return 0;
}

/* Open the call's read-side section, if it has none: cached parts are lent under it. */
static inline void enter_section(cg_call *call)
{
    if (!call->in_section) {
        cg_read_lock();
        call->in_section = 1;
    }
}

/* End the transaction of a call that failed: roll back, drop staged writes, evict every key
 * the call wrote or locked. Keeps `err` and its detail for later operations on the call. */
static int end_failed(cg_call *call, int err)
{
    size_t i;
    call->failure = *cg_error_last();
    call->failed = err;
    if (call->conn)
        cg_repo_rollback(call->conn);
    drop_staged(call);
    for (i = 0; i < call->n_touched; i++)
        cg_cache_evict(call->core->cache, call->touched[i].handle, call->touched[i].kind);
    call->n_touched = 0;
    if (err == CG_ESTALE)
        atomic_fetch_add(&call->core->stale_errors, 1);
    *cg_error__mut() = call->failure;
    return err;
}

/* An operation on a call that already failed returns that failure again. */
static int check_usable(cg_call *call)
{
    assert(call != NULL);
    if (call->failed) {
        *cg_error__mut() = call->failure;
        return call->failed;
    }
    return 0;
}

/* After a repository operation: an error that left the transaction failed ends the call. */
static int after_repo(cg_call *call, int err)
{
    if (err == 0)
        return 0;
    cg_core__retryable(call->core, &err);
    if (err == CG_ESTALE || err == CG_EFENCED || !cg_repo_usable(call->conn) ||
        PQtransactionStatus(call->conn->pg) == PQTRANS_INERROR)
        return end_failed(call, err);
    return err;
}

static int ensure_conn(cg_call *call)
{
    if (call->conn)
        return 0;
    return cg_core__conn_acquire(call->core, &call->conn);
}

/*
 * Whether to retry the statement that just failed with `err`: only a retryable failure of the
 * call's first statement, at most [retry] attempts times; reconnects before saying yes.
 */
static int retry_at_start(cg_call *call, int err, int *attempt)
{
    cg_conn *c = call->conn;
    if (err == 0 || c == NULL || !cg_core__retryable(call->core, &err) || call->statements > 0 ||
        *attempt >= call->core->cfg->retry_attempts || call->no_retry)
        return 0;
    /* A lock wait that ran out (lock_timeout_ms) is retryable for the caller, but trying it
     * again here would multiply the bound that keeps a paused lock holder from stalling us. */
    if (strcmp(cg_error_last()->sqlstate, "55P03") == 0)
        return 0;
    if (cg_repo_usable(c)) {
        cg_repo_rollback(c); /* e.g. a serialization failure: the connection is fine */
    } else {
        if (cg_core__reconnect(call->core, c, *attempt) < 0)
            return 0;
    }
    (*attempt)++;
    return 1;
}

/* Run a repository operation (an expression using call->conn) with the start-of-call retry. */
#define REPO(call, err, expr)                                                                      \
    do {                                                                                           \
        int attempt_ = 0;                                                                          \
        if (((err) = ensure_conn(call)) < 0)                                                       \
            break;                                                                                 \
        do {                                                                                       \
            if (((err) = cg_core__advertise((call)->core, (call)->conn)) == 0)                     \
                (err) = (expr);                                                                    \
        } while (retry_at_start(call, err, &attempt_));                                            \
        if ((err) == 0)                                                                            \
            (call)->statements++;                                                                  \
        (err) = after_repo(call, err);                                                             \
    } while (0)

/* ---- input checks --------------------------------------------------------------------- */

static int bad_input(const char *what, const char *detail)
{
    return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT, "%s: %s", what, detail);
}

static int check_kind(int kind)
{
    if (kind < 0 || kind >= CG_PART_COUNT)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                            "part %d is not specification (0), description (1) or state (2)", kind);
    return 0;
}

static int check_handle(int64_t handle)
{
    if (handle < 0)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                            "handle %" PRId64 " is negative; handles are 0 or more", handle);
    return 0;
}

/* What every part operation checks first: a usable call, a part kind, a handle. */
static int check_part_args(cg_call *call, int64_t handle, int kind)
{
    int err;
    if ((err = check_usable(call)) < 0 || (err = check_kind(kind)) < 0 ||
        (err = check_handle(handle)) < 0)
        return err;
    return 0;
}

static int check_json(const char *what, const char *json)
{
    cJSON *j;
    if (json == NULL)
        return bad_input(what, "NULL body (pass \"{}\" for an empty one)");
    if (strlen(json) > 16u << 20)
        return bad_input(what, "body larger than 16 MiB");
    if ((j = cJSON_Parse(json)) == NULL) {
        const char *at = cJSON_GetErrorPtr();
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                            "%s: body is not valid JSON (at byte %td)", what,
                            at && at >= json ? at - json : (ptrdiff_t)0);
    }
    cJSON_Delete(j);
    return 0;
}

/* A name in a folder: 1 to 255 bytes, no '/' and no control characters. */
static int check_name(const char *name)
{
    size_t i, n;
    if (name == NULL || (n = strlen(name)) == 0)
        return bad_input("name", "empty or NULL");
    if (n > 255)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                            "name: %zu bytes long; at most 255 are allowed", n);
    for (i = 0; i < n; i++)
        if (name[i] == '/' || (unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                                "name: byte %zu is '/' or a control character", i);
    return 0;
}

static int check_resource_kind(const char *kind)
{
    size_t i, n = strlen(kind);
    if (n == 0 || n > 32 || kind[0] < 'a' || kind[0] > 'z')
        return bad_input("kind", "must be 1 to 32 of a-z 0-9 _ -, starting with a letter");
    for (i = 0; i < n; i++)
        if (!((kind[i] >= 'a' && kind[i] <= 'z') || (kind[i] >= '0' && kind[i] <= '9') ||
              kind[i] == '_' || kind[i] == '-'))
            return bad_input("kind", "must be 1 to 32 of a-z 0-9 _ -, starting with a letter");
    return 0;
}

static int check_service_id(const char *sid)
{
    if (sid && (sid[0] == '\0' || strlen(sid) > 255))
        return bad_input("service_id", "must be 1 to 255 bytes (or NULL for none)");
    return 0;
}

/* ---- begin, commit, abort ------------------------------------------------------------- */

int cg_call_begin(cg_call **out, cg_core *core)
{
    cg_call *call;
    assert(out != NULL && core != NULL);
    *out = NULL;
    if ((call = calloc(1, sizeof(*call))) == NULL)
        return cg_error_nomem();
    call->core = core;
    call->incarnation = atomic_load(&core->incarnation);
    *out = call;
    return 0;
}

static void call_free(cg_call *call)
{
    size_t i;
    cg_core__conn_release(call->core, call->conn);
    free_writes(call->writes, call->n_writes);
    free_writes(call->dropped, call->n_dropped);
    free(call->touched);
    for (i = 0; i < call->n_kept; i++)
        cg_part_free(call->kept[i]);
    free(call->kept);
    if (call->in_section)
        cg_read_unlock(); /* on the thread that read (core.h): the lent parts may now go */
    free(call);
}

void cg_call_abort(cg_call *call)
{
    if (call == NULL)
        return;
    if (!call->failed) {
        cg_error saved = *cg_error_last();
        end_failed(call, CG_ERROR);
        *cg_error__mut() = saved;
    }
    atomic_fetch_add(&call->core->calls_aborted, 1);
    call_free(call);
}

/* The changes to publish: the newest staged version of every key the call wrote. */
static int collect_items(cg_call *call, cg_bus_item **out, size_t *n)
{
    size_t i, j, k = 0;
    *out = NULL;
    *n = 0;
    if (call->n_writes == 0)
        return 0;
    if ((*out = malloc(call->n_writes * sizeof(**out))) == NULL)
        return cg_error_nomem();
    for (i = 0; i < call->n_writes; i++) {
        const staged_write *w = &call->writes[i];
        for (j = 0; j < k; j++)
            if ((*out)[j].handle == w->handle && (*out)[j].kind == w->kind)
                break;
        if (j == k)
            k++;
        (*out)[j] = (cg_bus_item){w->handle, w->kind, w->version};
    }
    *n = k;
    return 0;
}

int cg_call_commit(cg_call *call)
{
    cg_core *core;
    cg_bus_item *items = NULL;
    size_t n = 0, i;
    int64_t seq = 0, committed_us = 0;
    int err;

    assert(call != NULL);
    core = call->core;
    if ((err = check_usable(call)) < 0)
        goto done;
    if ((err = collect_items(call, &items, &n)) < 0) {
        end_failed(call, err);
        goto done;
    }
    if (call->conn && call->conn->in_tx) {
        err = cg_repo_commit(&seq, &committed_us, call->conn, core->cfg->group_id,
                             core->cfg->core_name, call->incarnation, items, n);
        if (err < 0) {
            cg_core__retryable(core, &err);
            /* the subscriber thread rejoins at once, unless the core already did since this
             * call began (then the call was simply from the old incarnation) */
            if (err == CG_EFENCED && call->incarnation == atomic_load(&core->incarnation)) {
                atomic_store(&core->rejoin, 1);
                cg_housekeeping_wake(core);
            }
            end_failed(call, err);
            goto done;
        }
    }
    /* Committed. Names and find items take the event's number as their version (the outbox
     * append gave it to them in the repository too). */
    for (i = 0; i < n; i++)
        if (items[i].kind >= CG_PART_COUNT)
            items[i].version = seq;
    /* Only now does the cache learn about the call's writes. */
    for (i = 0; i < call->n_writes; i++) {
        staged_write *w = &call->writes[i];
        if (w->part && core->cfg->strategy != CG_CACHE_NONE)
            cg_cache_put(core->cache, w->part);
        else
            cg_cache_invalidate(core->cache, w->handle, w->kind,
                                w->kind >= CG_PART_COUNT ? seq : w->version);
    }
#ifdef CG_TEST_HOOKS
    if (core->hooks.exit_after_commit &&
        (int)atomic_fetch_add(&core->hooks.commits, 1) + 1 >= core->hooks.exit_at_commit) {
        if (core->hooks.exit_after_commit == 2)
            kill(getpid(), SIGKILL); /* kill -9 between commit and publish */
        _exit(0);                    /* a core dying between commit and publish */
    }
#endif
    if (n > 0) {
        cg_inval_batch batch = {core->cfg->group_id,
                                seq,
                                core->cfg->core_name,
                                call->incarnation,
                                committed_us,
                                items,
                                n};
        cg_core__publish(core, &batch);
    }
done:
    if (err == 0)
        atomic_fetch_add(&core->calls_committed, 1);
    else
        atomic_fetch_add(&core->calls_aborted, 1);
    free(items);
    call_free(call);
    return err;
}

/* Full-jitter backoff: a random time up to min(max, base * 2^attempt). */
static void backoff(const cg_retry_options *o, int attempt, unsigned int *seed)
{
    long cap = o->base_delay_ms > 0 ? (long)o->base_delay_ms << (attempt < 20 ? attempt : 20) : 0;
    struct timespec ts;
    long us;
    if (cap > o->max_delay_ms)
        cap = o->max_delay_ms;
    if (cap <= 0)
        return;
    us = (long)(rand_r(seed) % (unsigned)(cap * 1000 + 1));
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (us % 1000000) * 1000;
    nanosleep(&ts, NULL);
}

int cg_call_run(cg_core *core, cg_call_fn fn, void *arg, const cg_retry_options *opts,
                int *attempts)
{
    cg_retry_options defaults = CG_RETRY_OPTIONS_INIT;
    const cg_retry_options *o = opts ? opts : &defaults;
    unsigned int seed = (unsigned int)time(NULL) ^ (unsigned int)(uintptr_t)&seed;
    int attempt, err = 0;

    assert(core != NULL && fn != NULL);
    for (attempt = 0; attempt < (o->max_attempts > 0 ? o->max_attempts : 1); attempt++) {
        cg_call *call;
        if (attempt > 0)
            backoff(o, attempt - 1, &seed);
        if ((err = cg_call_begin(&call, core)) < 0)
            break;
        if ((err = fn(call, arg)) == 0) {
            err = cg_call_commit(call);
        } else {
            int keep = err;
            cg_error saved = *cg_error_last();
            cg_call_abort(call);
            *cg_error__mut() = saved;
            err = keep;
        }
        if (err != CG_ESTALE && err != CG_ERETRYABLE)
            break;
    }
    if (attempts)
        *attempts = attempt < (o->max_attempts > 0 ? o->max_attempts : 1) ? attempt + 1 : attempt;
    return err;
}

/* ---- parts ---------------------------------------------------------------------------- */

typedef struct {
    cg_call *call;
    int64_t handle;
    int kind;
} load_ctx;

/* The cache's loader: read one part through the call's own transaction. */
static int load_part(cg_part **out, void *arg)
{
    load_ctx *lc = arg;
    cg_call *call = lc->call;
    int err;
    atomic_fetch_add(&call->core->repository_reads, 1);
    if (call->one_read && !(call->conn && call->conn->in_tx)) /* all in one round trip */
        REPO(call, err,
             cg_repo_part_read_once(out, call->conn, call->core->cfg->group_id, lc->handle,
                                    lc->kind));
    else
        REPO(call, err,
             cg_repo_part_get(out, call->conn, call->core->cfg->group_id, lc->handle, lc->kind, 0));
    return err;
}

/*
 * The lease has run out (lease.c): the cache cannot be proved fresh, so it is not used, not
 * even filled. The read goes to the repository, and the version it returns becomes the key's
 * floor (older cached copies are evicted), so no later read on this core goes backwards.
 * When the apply thread last found the repository unreachable, the read makes one attempt
 * instead of waiting out the pool's reconnect attempts, and a failure is CG_EDEGRADED, naming
 * why: the repository may well be back before the apply thread has noticed, and then the read
 * succeeds.
 */
static int read_past_lease_with(cg_part **out, cg_call *call, int64_t key, int kind,
                                cg_cache_loader load, void *ctx)
{
    cg_core *core = call->core;
    char why[160];
    int err;
    atomic_fetch_add(&core->lease_misses, 1);
    if (atomic_load(&core->repo_ok) || call->conn != NULL) {
        err = load(out, ctx);
    } else {
        call->no_retry = 1;
        err = load(out, ctx);
        call->no_retry = 0;
    }
    if (err == 0) {
        /* Nothing is filled past the lease, but what the repository just said is a floor: a
         * cached copy older than it must not be served once a proof renews the lease (I4, no
         * read goes backwards on one core; the fault harness saw it after a partition). */
        cg_cache_invalidate(core->cache, key, kind, cg_part_version(*out));
        return 0;
    }
    if (err == CG_ERETRYABLE) {
        cg_error cause = *cg_error_last();
        cg_lease_reason(core, why, sizeof(why));
        err = cg_error_set(CG_EDEGRADED, CG_ERRCLASS_REPOSITORY,
                           "core %s is degraded: %s; reading the repository: %.200s",
                           core->cfg->core_name, why, cause.message);
        if (call->failed == CG_ERETRYABLE) {
            call->failed = CG_EDEGRADED; /* what the call reports from now on */
            call->failure = *cg_error_last();
        }
    }
    return err;
}

static int read_past_lease(cg_part **out, load_ctx *lc)
{
    return read_past_lease_with(out, lc->call, lc->handle, lc->kind, load_part, lc);
}

int cg_part_get(const cg_part **out, cg_call *call, int64_t handle, cg_part_kind kind)
{
    cg_core *core;
    const staged_write *w;
    load_ctx lc = {call, handle, kind};
    cg_part *p = NULL;
    int err;

    assert(out != NULL);
    *out = NULL;
    if ((err = check_part_args(call, handle, kind)) < 0)
        return err;
    core = call->core;
    if ((w = staged(call, handle, kind)) != NULL) {
        if (w->part == NULL)
            return cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_INPUT,
                                "resource %" PRId64 " was deleted by this call", handle);
        *out = w->part; /* the call's own: lent until it ends */
        return 0;
    }
    if (core->cfg->strategy == CG_CACHE_NONE)
        err = load_part(&p, &lc);
    else if (core->cfg->strategy == CG_CACHE_INVALIDATE && !cg_lease_valid(core))
        err = read_past_lease(&p, &lc);
    else {
        const cg_part *hit;
        enter_section(call);
        if ((hit = cg_cache_peek(core->cache, handle, kind)) != NULL) {
            /* the hit path: no lock, no reference, nothing shared written */
            int64_t current = 0;
            if (core->cfg->strategy != CG_CACHE_VERSION_CHECK) {
                *out = hit;
                return 0;
            }
            REPO(call, err,
                 cg_repo_part_version(&current, call->conn, core->cfg->group_id, handle, kind));
            if (err < 0)
                return err;
            if (current == hit->version) {
                *out = hit;
                return 0;
            }
            cg_cache_invalidate(core->cache, handle, kind, current);
        }
        err = cg_cache_load(core->cache, handle, kind, load_part, &lc, &p);
    }
    return err < 0 ? err : lend(call, p, out);
}

int cg_part_read(cg_part **out, cg_core *core, int64_t handle, cg_part_kind kind)
{
    const cg_part *p;
    cg_call *call;
    int err;
    assert(out != NULL);
    *out = NULL;
    if ((err = cg_call_begin(&call, core)) < 0)
        return err;
    call->one_read = 1;
    if ((err = cg_part_get(&p, call, handle, kind)) < 0) {
        cg_error saved = *cg_error_last();
        cg_call_abort(call);
        *cg_error__mut() = saved;
        return err;
    }
    *out = cg_part_ref(p); /* the caller's own, past the call */
    if ((err = cg_call_commit(call)) < 0) {
        cg_part_free(*out);
        *out = NULL;
    }
    return err;
}

int cg_part_read_cached(cg_core *core, int64_t handle, cg_part_kind kind, cg_part_visit fn,
                        void *arg)
{
    const cg_part *hit;
    int err;

    assert(core != NULL && fn != NULL);
    if ((err = check_kind(kind)) < 0 || (err = check_handle(handle)) < 0)
        return err;
    if (core->cfg->strategy != CG_CACHE_INVALIDATE || !cg_lease_valid(core))
        return 1;
    cg_read_lock();
    if ((hit = cg_cache_peek(core->cache, handle, kind)) == NULL) {
        cg_read_unlock();
        return 1;
    }
    fn(hit, arg);
    cg_read_unlock();
    atomic_fetch_add(&core->calls_committed, 1); /* the call cg_part_read() would have made */
    return 0;
}

int cg_part_lock(const cg_part **out, cg_call *call, int64_t handle, cg_part_kind kind)
{
    cg_core *core;
    cg_part *p = NULL;
    int err;

    assert(out != NULL);
    *out = NULL;
    if ((err = check_part_args(call, handle, kind)) < 0)
        return err;
    core = call->core;
    if ((err = touch(call, handle, kind)) < 0)
        return err;
    atomic_fetch_add(&core->repository_reads, 1);
    REPO(call, err, cg_repo_part_get(&p, call->conn, core->cfg->group_id, handle, kind, 1));
    if (err < 0)
        return err;
    if (core->cfg->strategy != CG_CACHE_NONE && !staged(call, handle, kind))
        cg_cache_put(core->cache, p); /* the row is locked: this is the newest version */
    return lend(call, p, out);
}

int cg_part_update(int64_t *new_version, cg_call *call, int64_t handle, cg_part_kind kind,
                   int64_t expected_version, const char *json)
{
    cg_core *core;
    cg_part *fresh = NULL;
    int64_t v = 0;
    int err;

    if ((err = check_part_args(call, handle, kind)) < 0 || (err = check_json("update", json)) < 0)
        return err;
    if (expected_version < 1)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                            "expected version %" PRId64 " is not a version (versions start at 1)",
                            expected_version);
    core = call->core;
    REPO(call, err,
         cg_repo_part_update(&fresh, call->conn, core->cfg->group_id, handle, kind,
                             expected_version, json));
    if (err == CG_ESTALE) {
        /* evict the stale copy now and never accept anything older than the repository's */
        cg_cache_invalidate(core->cache, handle, kind, cg_error_last()->actual_version);
        return err;
    }
    if (err < 0)
        return err;
    v = cg_part_version(fresh);
    if ((err = stage(call, handle, kind, v, fresh)) < 0) /* stage takes fresh */
        return end_failed(call, err);
    if (new_version)
        *new_version = v;
    return 0;
}

int cg_part_update_json(int64_t *new_version, cg_call *call, int64_t handle, cg_part_kind kind,
                        int64_t expected_version, const cJSON *body)
{
    char *text;
    int err;
    if (body == NULL)
        return bad_input("update", "NULL body");
    if ((text = cJSON_PrintUnformatted(body)) == NULL)
        return cg_error_nomem();
    err = cg_part_update(new_version, call, handle, kind, expected_version, text);
    cJSON_free(text);
    return err;
}

/* ---- cached names (see the file header) ------------------------------------------------ */

static cg_part *pack_names(int64_t folder, int64_t version, const cg_name_list *l)
{
    size_t i, len = 0, at = 0;
    char *buf;
    cg_part *p;
    for (i = 0; i < l->n; i++)
        len += 8 + strlen(l->entries[i].name) + 1;
    if ((buf = malloc(len ? len : 1)) == NULL)
        return NULL;
    for (i = 0; i < l->n; i++) {
        size_t nl = strlen(l->entries[i].name) + 1;
        memcpy(buf + at, &l->entries[i].target, 8);
        memcpy(buf + at + 8, l->entries[i].name, nl);
        at += 8 + nl;
    }
    p = cg_part__new(folder, CG_ITEM_NAMES, version, buf, len);
    free(buf);
    return p;
}

/* The target of `name` in a packed listing; CG_ENOTFOUND as the repository would say it. */
static int names_find(int64_t *target, const cg_part *p, int64_t folder, const char *name)
{
    size_t at = 0;
    while (at + 8 < p->len) {
        const char *n = p->body + at + 8;
        size_t nl = strlen(n) + 1;
        if (strcmp(n, name) == 0) {
            memcpy(target, p->body + at, 8);
            return 0;
        }
        at += 8 + nl;
    }
    return cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY,
                        "name \"%s\" is not bound in folder %" PRId64, name, folder);
}

static int unpack_names(cg_name_list *out, const cg_part *p)
{
    size_t at, n = 0, i = 0;
    out->entries = NULL;
    out->n = 0;
    for (at = 0; at + 8 < p->len; at += 8 + strlen(p->body + at + 8) + 1)
        n++;
    if (n == 0)
        return 0;
    if ((out->entries = calloc(n, sizeof(*out->entries))) == NULL)
        return cg_error_nomem();
    for (at = 0; at + 8 < p->len; at += 8 + strlen(p->body + at + 8) + 1, i++) {
        memcpy(&out->entries[i].target, p->body + at, 8);
        if ((out->entries[i].name = strdup(p->body + at + 8)) == NULL) {
            out->n = i;
            cg_name_list_dispose(out);
            return cg_error_nomem();
        }
    }
    out->n = n;
    return 0;
}

static cg_part *pack_find(int64_t key, int64_t version, const char *sid, const cg_handle_list *l)
{
    size_t sl = strlen(sid) + 1, len = sl + 8 * l->n;
    char *buf;
    cg_part *p;
    if ((buf = malloc(len)) == NULL)
        return NULL;
    memcpy(buf, sid, sl);
    if (l->n > 0)
        memcpy(buf + sl, l->handles, 8 * l->n);
    p = cg_part__new(key, CG_ITEM_FIND, version, buf, len);
    free(buf);
    return p;
}

/* 1 when a packed find result is the one of `sid` (not of another id with the same key). */
static int find_matches(const cg_part *p, const char *sid)
{
    return strcmp(p->body, sid) == 0;
}

static int unpack_find(cg_handle_list *out, const cg_part *p)
{
    size_t sl = strlen(p->body) + 1, n = (p->len - sl) / 8;
    out->handles = NULL;
    out->n = 0;
    if (n == 0)
        return 0;
    if ((out->handles = malloc(n * sizeof(int64_t))) == NULL)
        return cg_error_nomem();
    memcpy(out->handles, p->body + sl, n * 8);
    out->n = n;
    return 0;
}

typedef struct {
    cg_call *call;
    int64_t key; /* the folder, or the service key */
    const char *service_id;
} names_ctx;

/* The cache's loader of a folder's listing: one statement, the listing and its version. */
static int load_names(cg_part **out, void *arg)
{
    names_ctx *nc = arg;
    cg_call *call = nc->call;
    cg_name_list l = {NULL, 0};
    int64_t v = 1;
    int err;
    atomic_fetch_add(&call->core->repository_reads, 1);
    REPO(call, err, cg_repo_name_list(&l, &v, call->conn, call->core->cfg->group_id, nc->key));
    if (err < 0)
        return err;
    *out = pack_names(nc->key, v, &l);
    cg_name_list_dispose(&l);
    return *out ? 0 : cg_error_nomem();
}

/* The cache's loader of a find result: one statement, the handles and the key's counter. */
static int load_find(cg_part **out, void *arg)
{
    names_ctx *nc = arg;
    cg_call *call = nc->call;
    cg_handle_list l = {NULL, 0};
    int64_t v = 1;
    int err;
    atomic_fetch_add(&call->core->repository_reads, 1);
    REPO(call, err,
         cg_repo_resource_find(&l, &v, call->conn, call->core->cfg->group_id, nc->service_id));
    if (err < 0)
        return err;
    *out = pack_find(nc->key, v, nc->service_id, &l);
    cg_handle_list_dispose(&l);
    return *out ? 0 : cg_error_nomem();
}

/* 1 when a read of (key, kind) may use the cache: the invalidation strategy, every live member
 * of the group reads wire version 2 (a core of an older release binds without raising any
 * names version: core.c, cg_core__names_ok), and the call has not changed the key itself
 * (its transaction sees its change; the cache does not yet). */
static int names_cacheable(cg_call *call, int64_t key, int kind)
{
    return call->core->cfg->strategy == CG_CACHE_INVALIDATE && atomic_load(&call->core->names_ok) &&
           staged(call, key, kind) == NULL;
}

/* A names or find read through the cache: behind the lease like a part's read. */
static int names_load(cg_part **out, cg_call *call, int64_t key, int kind, names_ctx *nc)
{
    cg_cache_loader load = kind == CG_ITEM_NAMES ? load_names : load_find;
    if (!cg_lease_valid(call->core))
        return read_past_lease_with(out, call, key, kind, load, nc);
    return cg_cache_load(call->core->cache, key, kind, load, nc, out);
}

/* Stage an item with no body: invalidated after the commit, evicted on abort. A names or find
 * item is staged with version 0: it takes the event's number at commit (cg_call_commit). */
static int stage_item(cg_call *call, int64_t key, int kind, int64_t version)
{
    int err;
    if ((err = stage(call, key, kind, version, NULL)) < 0)
        return end_failed(call, err);
    return 0;
}

/* ---- resources ------------------------------------------------------------------------ */

int cg_resource_create(int64_t *handle, cg_call *call, const cg_resource_options *opts)
{
    cg_resource_options defaults = CG_RESOURCE_OPTIONS_INIT;
    const char *bodies[CG_PART_COUNT];
    const char *kind;
    int err, k;

    assert(handle != NULL);
    if (opts == NULL)
        opts = &defaults;
    kind = opts->kind ? opts->kind : "service";
    bodies[0] = opts->specification ? opts->specification : "{}";
    bodies[1] = opts->description ? opts->description : "{}";
    bodies[2] = opts->state ? opts->state : "{}";
    if ((err = check_usable(call)) < 0 || (err = check_resource_kind(kind)) < 0 ||
        (err = check_service_id(opts->service_id)) < 0)
        return err;
    for (k = 0; k < CG_PART_COUNT; k++)
        if ((err = check_json(cg_part_kind_name(k), bodies[k])) < 0)
            return err;
    REPO(call, err,
         cg_repo_resource_create(handle, call->conn, call->core->cfg->group_id, kind,
                                 opts->service_id, bodies));
    if (err < 0)
        return err;
    /* a new handle is in nobody's cache; the service id's find results are stale */
    return opts->service_id ? stage_item(call, cg_service_key(opts->service_id), CG_ITEM_FIND, 0)
                            : 0;
}

int cg_resource_get(cg_resource *out, cg_call *call, int64_t handle)
{
    int err;
    if ((err = check_usable(call)) < 0 || (err = check_handle(handle)) < 0)
        return err;
    REPO(call, err, cg_repo_resource_get(out, call->conn, call->core->cfg->group_id, handle));
    return err;
}

int cg_resource_delete(cg_call *call, int64_t handle)
{
    cg_bus_item *items = NULL;
    size_t n = 0, i;
    int err;

    if ((err = check_usable(call)) < 0 || (err = check_handle(handle)) < 0)
        return err;
    if (handle == CG_ROOT_FOLDER)
        return bad_input("delete", "the root folder cannot be deleted");
    REPO(call, err,
         cg_repo_resource_delete(&items, &n, call->conn, call->core->cfg->group_id, handle));
    /* each part and a folder's own listing at one past the version it had (no copy may
     * survive), the folders that named it and its service id's find results as raised */
    for (i = 0; err == 0 && i < n; i++)
        err = stage_item(call, items[i].handle, items[i].kind, items[i].version);
    free(items);
    return err;
}

int cg_resource_find(cg_handle_list *out, cg_call *call, const char *service_id)
{
    int err;
    out->handles = NULL;
    out->n = 0;
    if ((err = check_usable(call)) < 0)
        return err;
    if (service_id == NULL)
        return bad_input("find", "NULL service_id");
    if ((err = check_service_id(service_id)) < 0)
        return err;
    if (names_cacheable(call, cg_service_key(service_id), CG_ITEM_FIND)) {
        names_ctx nc = {call, cg_service_key(service_id), service_id};
        cg_part *p = NULL;
        if ((err = names_load(&p, call, nc.key, CG_ITEM_FIND, &nc)) < 0)
            return err;
        if (find_matches(p, service_id)) {
            err = unpack_find(out, p);
            cg_part_free(p);
            return err;
        }
        cg_part_free(p); /* another service id with the same key: read it uncached */
    }
    REPO(call, err,
         cg_repo_resource_find(out, NULL, call->conn, call->core->cfg->group_id, service_id));
    return err;
}

/* ---- names ---------------------------------------------------------------------------- */

int cg_name_bind(cg_call *call, int64_t folder, const char *name, int64_t target)
{
    int err;
    if ((err = check_usable(call)) < 0 || (err = check_handle(folder)) < 0 ||
        (err = check_handle(target)) < 0 || (err = check_name(name)) < 0)
        return err;
    REPO(call, err, cg_repo_name_bind(call->conn, call->core->cfg->group_id, folder, name, target));
    return err < 0 ? err : stage_item(call, folder, CG_ITEM_NAMES, 0);
}

int cg_name_unbind(cg_call *call, int64_t folder, const char *name)
{
    int err;
    if ((err = check_usable(call)) < 0 || (err = check_handle(folder)) < 0 ||
        (err = check_name(name)) < 0)
        return err;
    REPO(call, err, cg_repo_name_unbind(call->conn, call->core->cfg->group_id, folder, name));
    return err < 0 ? err : stage_item(call, folder, CG_ITEM_NAMES, 0);
}

int cg_name_lookup(int64_t *target, cg_call *call, int64_t folder, const char *name)
{
    int err;
    if ((err = check_usable(call)) < 0 || (err = check_handle(folder)) < 0 ||
        (err = check_name(name)) < 0)
        return err;
    if (names_cacheable(call, folder, CG_ITEM_NAMES)) {
        names_ctx nc = {call, folder, NULL};
        cg_part *p = NULL;
        if ((err = names_load(&p, call, folder, CG_ITEM_NAMES, &nc)) < 0)
            return err;
        err = names_find(target, p, folder, name);
        cg_part_free(p);
        return err;
    }
    REPO(call, err,
         cg_repo_name_lookup(target, call->conn, call->core->cfg->group_id, folder, name));
    return err;
}

int cg_name_list_get(cg_name_list *out, cg_call *call, int64_t folder)
{
    int err;
    out->entries = NULL;
    out->n = 0;
    if ((err = check_usable(call)) < 0 || (err = check_handle(folder)) < 0)
        return err;
    if (names_cacheable(call, folder, CG_ITEM_NAMES)) {
        names_ctx nc = {call, folder, NULL};
        cg_part *p = NULL;
        if ((err = names_load(&p, call, folder, CG_ITEM_NAMES, &nc)) < 0)
            return err;
        err = unpack_names(out, p);
        cg_part_free(p);
        return err;
    }
    REPO(call, err, cg_repo_name_list(out, NULL, call->conn, call->core->cfg->group_id, folder));
    return err;
}
