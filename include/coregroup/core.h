/**
 * @file coregroup/core.h
 * @brief A core: its repository connection pool, its cache, and calls.
 *
 * A core belongs to exactly one core group (from repository.ini). Everything it reads or
 * writes is a row of that group. Work is done in calls:
 *
 *     cg_call *call;
 *     if ((err = cg_call_begin(&call, core)) < 0) ...
 *     err = cg_part_update(&v, call, handle, CG_PART_STATE, expected, "{\"n\":1}");
 *     ...
 *     err = cg_call_commit(call);        // ends the call whatever the outcome
 *
 * Each call is exactly one database transaction (e-Speak design §2.7.3). The transaction is
 * opened lazily: a call whose reads are all served by the cache never touches the repository.
 *
 * Errors inside a call. CG_ENOTFOUND, CG_EEXISTS and CG_EINVALID for bad arguments leave the
 * call usable. Every other error (CG_ESTALE, CG_ERETRYABLE, CG_EFENCED, ...) ends the call's
 * transaction at once: the repository rolls back, the call's staged cache changes are
 * dropped and every entry it wrote or locked is evicted. Later operations on such a call
 * return the same code, and the call must still be ended with cg_call_abort() or
 * cg_call_commit() (which then returns that code).
 *
 * Thread safety: a cg_core is shared by any number of threads; a cg_call belongs to one
 * thread at a time, and a call that has read a part (cg_part_get, cg_part_lock) ends on the
 * thread that read it (see cg_part_get: parts are lent under a read-side section of that
 * thread).
 */
#ifndef COREGROUP_CORE_H
#define COREGROUP_CORE_H

#include "common.h"
#include "config.h"

typedef struct cJSON cJSON;

/** A core: one process's view of its group. */
typedef struct cg_core cg_core;
/** One call: one transaction. */
typedef struct cg_call cg_call;
/** An immutable, reference-counted snapshot of one metadata part (body + version). */
typedef struct cg_part cg_part;

/** The three separately versioned metadata parts of a resource. */
typedef enum {
    CG_PART_SPECIFICATION = 0,
    CG_PART_DESCRIPTION = 1,
    CG_PART_STATE = 2,
} cg_part_kind;
#define CG_PART_COUNT 3

/** The handle of every group's root folder. */
#define CG_ROOT_FOLDER ((int64_t)0)

/** "specification", "description" or "state"; "?" for anything else. */
CG_EXTERN(const char *) cg_part_kind_name(int kind);
/** Parse a part name. 0, or CG_EINVALID for an unknown name. */
CG_EXTERN(int) cg_part_kind_parse(cg_part_kind *out, const char *name);

/* ---- opening a core ------------------------------------------------------------------- */

/**
 * Open a core from a repository.ini path: parse it, connect the pool, create the group row on
 * first use, and register the core in its group with a new incarnation.
 * On success *out is a core the caller closes with cg_core_close(). Returns CG_EINVALID (bad
 * file), CG_ERETRYABLE (repository unreachable after the configured attempts), or another code.
 */
CG_EXTERN(int) cg_core_open(cg_core **out, const char *ini_path);

/** As cg_core_open(), from a configuration struct (copied; the caller keeps ownership). */
CG_EXTERN(int) cg_core_open_config(cg_core **out, const cg_config *cfg);

/** Mark the core as having left its group, close every connection and free the core.
 *  Calls still open on other threads must have ended. Accepts NULL. */
CG_EXTERN(void) cg_core_close(cg_core *core);

CG_EXTERN(const char *) cg_core_name(const cg_core *core);
CG_EXTERN(const char *) cg_core_group(const cg_core *core);
/** The incarnation this core registered with (its fencing token). */
CG_EXTERN(int64_t) cg_core_incarnation(const cg_core *core);

/** Counters of a core. */
typedef struct cg_core_stats {
    uint64_t calls_committed, calls_aborted;
    uint64_t cache_hits, cache_misses;
    uint64_t cache_fills, cache_fills_refused;
    uint64_t cache_evictions, cache_expirations, cache_entries;
    uint64_t stale_errors;
    uint64_t invalidations_applied, cache_resets;
    uint64_t repository_reads;      /**< parts read from the repository */
    uint64_t repository_reconnects; /**< connections found broken and replaced */
    /* the bus */
    uint64_t invalidations_sent;     /**< published after COMMIT */
    uint64_t invalidations_unsent;   /**< not published (queue or high-water mark full); the
                                          outbox has them and subscribers catch up */
    uint64_t invalidations_received; /**< heard from the bus (own ones included) */
    uint64_t duplicates;             /**< heard again (two forwarders) or old: ignored */
    uint64_t gaps;                   /**< missed events noticed */
    uint64_t catchups;               /**< gaps filled from the outbox */
    uint64_t messages_dropped;       /**< malformed, foreign, unknown version, from the future */
    uint64_t heartbeats_received;
    uint64_t polls;      /**< backstop comparisons with the repository */
    int64_t applied_seq; /**< every group event up to this one is in the cache */
    int degraded;        /**< 1: the core cannot prove its cache fresh within max_staleness_ms */
    /* ordering and freshness */
    uint64_t reordered;        /**< events that arrived ahead of a missing one which then came
                                    within [bus] reorder_window_ms: no catch-up needed */
    uint64_t freshness_proofs; /**< proofs that every event up to the group's counter is applied
                                    (each renews the lease to its start + max_staleness_ms) */
    uint64_t lease_misses;     /**< reads that found the lease expired and went to the repository
                                    (or failed degraded) instead of the cache */
    int64_t proof_age_ms;      /**< age of the last freshness proof, from its start; -1: none */
    /* membership */
    uint64_t members_suspected; /**< members this core marked suspect */
    uint64_t members_failed;    /**< members this core declared failed and fenced */
    uint64_t recoveries;        /**< failed members whose publishing this core redid */
    uint64_t recovered_events;  /**< their outbox events it published again */
    uint64_t rejoins;           /**< times this core found itself fenced and rejoined */
    /* forged or broken bus messages */
    uint64_t bus_conflicts; /**< invalidations whose seq was heard before with other items (a
                                 forger or a broken publisher): applied too, and that seq read
                                 from the outbox before a freshness proof relies on it */
} cg_core_stats;

/** Read the core's counters (a consistent-enough snapshot; counters only grow). */
CG_EXTERN(void) cg_core_stats_get(const cg_core *core, cg_core_stats *out);

/** The distributions a core keeps (for a metrics endpoint). */
typedef enum {
    CG_HIST_EVICTION_LAG_MS = 0, /**< commit (the time a bus message carries) to the moment this
                                      core applied its invalidation, in ms; bus messages only */
    CG_HIST_PROOF_AGE_MS = 1,    /**< how old the last freshness proof was when the next one
                                      renewed the lease, in ms */
    CG_HIST_CATCHUP_EVENTS = 2,  /**< events read from the outbox per catch-up */
    CG_HIST_COUNT = 3
} cg_core_hist;

#define CG_HISTOGRAM_MAX_BUCKETS 24

/** A histogram snapshot, Prometheus style: count[i] observations were at most le[i]
 *  (cumulative); le[n_buckets - 1] is +Inf, so count[n_buckets - 1] == total. */
typedef struct cg_histogram {
    size_t n_buckets;
    double le[CG_HISTOGRAM_MAX_BUCKETS];
    uint64_t count[CG_HISTOGRAM_MAX_BUCKETS];
    uint64_t total;
    double sum;
} cg_histogram;

/** Read one of the core's histograms. Returns 0, or CG_EINVALID for an unknown `which`. */
CG_EXTERN(int) cg_core_histogram_get(cg_histogram *out, const cg_core *core, cg_core_hist which);

/** One member of the core's group, as the repository's membership table says. */
typedef struct cg_member {
    char name[CG_NAME_MAX + 1];
    int64_t incarnation;
    char state[12]; /**< joining, alive, suspect, failed or left */
    char host[256];
    int pid;
    int64_t heartbeat_age_ms; /**< how long ago its last heartbeat was recorded */
    int64_t applied_seq;      /**< every group event up to this one is out of its cache */
    int64_t lag;              /**< the group's event_seq minus applied_seq */
} cg_member;

typedef struct cg_member_list {
    cg_member *members;
    size_t n;
    int64_t event_seq; /**< the group's event counter when the list was read */
} cg_member_list;

/** Read the group's members, by name. Free with cg_member_list_dispose(). */
CG_EXTERN(int) cg_core_members(cg_member_list *out, cg_core *core);
CG_EXTERN(void) cg_member_list_dispose(cg_member_list *list);

/** What a fault monitor needs to know (Sun Cluster API guide: probe with a timeout). */
typedef struct cg_core_health {
    int repository_ok;   /**< a statement just went through */
    int bus_silent;      /**< nothing heard on the bus for three heartbeat intervals */
    int degraded;        /**< no proof of freshness within max_staleness_ms: reads skip the cache */
    int fenced;          /**< the group fenced this incarnation; the core is rejoining */
    int64_t applied_seq; /**< every group event up to this one is in the cache */
    int64_t event_seq;   /**< the group's counter (-1 when the repository did not answer) */
    int64_t proof_age_ms;     /**< age of the last freshness proof, from its start; -1: none */
    int64_t max_staleness_ms; /**< the bound ([cache] max_staleness_ms) */
    char reason[160];         /**< why degraded or unhealthy, one line; "" when healthy */
} cg_core_health;

/**
 * Probe the core: one cheap statement on an idle repository connection (never waiting for a
 * busy pool, never retrying a connect; without an idle connection, the bus thread's last
 * contact with the repository counts) plus the bus's state. Returns 0 when healthy, CG_EDEGRADED
 * when the core serves but cannot prove its cache fresh or cannot reach the repository, with *out
 * filled either way.
 */
CG_EXTERN(int) cg_core_health_get(cg_core_health *out, cg_core *core);

/* ---- the consistency audit ------------------------------------------------------------ */

/** The most entries one cg_core_audit() compares. */
#define CG_AUDIT_MAX_ENTRIES 10000

/** How a cached entry compares with the repository. */
typedef enum {
    CG_AUDIT_CONSISTENT = 0, /**< the repository holds the cached version */
    CG_AUDIT_OLDER = 1,      /**< the repository holds a newer version, or none (deleted) */
    CG_AUDIT_NEWER = 2,      /**< the cache holds a version the repository does not have yet
                                  (never by design: a repository restored from an older
                                  backup, say) */
} cg_audit_state;

/** One sampled cache entry, compared with the repository. */
typedef struct cg_audit_entry {
    int64_t handle;    /**< a resource's handle; a folder's for "names"; a service key for "find" */
    cg_part_kind part; /**< the part, when `kind` names one */
    const char *kind;  /**< what is cached: "specification", "description", "state", "names"
                            (the folder's listing) or "find" (a service id's handles); static */
    int64_t cached_version;
    int64_t repository_version; /**< -1: gone (the resource was deleted) */
    cg_audit_state state;
    int64_t age_ms; /**< CG_AUDIT_OLDER: how long before the comparison the first version
                         newer than the cached one committed (the outbox's committed_at);
                         -1 when unknown (that outbox row was pruned) or not older */
    int past_bound; /**< CG_AUDIT_OLDER and age_ms > max_staleness_ms, or its age is unknown
                         (an outbox row is pruned only [bus] outbox_retention_s after its
                         commit, an hour by default) */
} cg_audit_entry;

/** What cg_core_audit() found. Release with cg_audit_report_dispose(). */
typedef struct cg_audit_report {
    cg_audit_entry *entries; /**< every entry checked, in no particular order */
    size_t checked;          /**< the number of entries (at most the max asked for) */
    size_t consistent, older, newer;
    size_t past_bound;        /**< older entries past the bound (see cg_audit_entry) */
    int64_t oldest_age_ms;    /**< the largest known age_ms of an older entry; -1: none */
    int64_t max_staleness_ms; /**< the bound, [cache] max_staleness_ms */
    int lease_fresh;          /**< 1: when the repository had answered, the core would still
                                   serve its cache without asking (the invalidate strategy and
                                   a valid lease). An entry past the bound while this is 1
                                   breaks the freshness promise (DESIGN.md I5) */
    uint64_t cache_entries;   /**< entries the cache held when it was sampled */
} cg_audit_report;

/**
 * Audit the core's cache: sample up to max_entries cached entries, spread over the cache's
 * shards (each shard locked only while its keys are copied), then compare them with the
 * repository in ONE round trip on a pool connection, with no cache lock held. Every kind of
 * entry is checked: a part against its version, a cached folder listing against the folder's
 * names version, a cached find result against its service key's version (coregroup/call.c,
 * "Cached names"); cg_audit_entry.kind says which.
 *
 * An entry older than the repository is allowed by design while its newer version is younger
 * than the bound (the bus may not have delivered yet, or did so between the sample and the
 * comparison); one past the bound while lease_fresh is 1 is a real violation.
 *
 * On success *out holds the report: the caller releases it with cg_audit_report_dispose()
 * (which frees `entries`). On failure *out is empty (nothing to release, though disposing of
 * it is harmless). Returns 0; CG_EINVALID when max_entries is 0 or above CG_AUDIT_MAX_ENTRIES;
 * CG_ERETRYABLE when the repository could not be reached; CG_ERROR when memory ran out.
 */
CG_EXTERN(int) cg_core_audit(cg_audit_report *out, cg_core *core, size_t max_entries);

/** Free what a report holds (not the struct itself) and empty it. Accepts NULL. */
CG_EXTERN(void) cg_audit_report_dispose(cg_audit_report *report);

/* ---- calls ---------------------------------------------------------------------------- */

/**
 * Begin a call. Cheap: no repository round trip happens until the call needs one.
 * *out is the call; end it with cg_call_commit() or cg_call_abort(). Returns 0 or
 * CG_EDEGRADED (the core cannot currently trust its cache and cannot reach the repository).
 */
CG_EXTERN(int) cg_call_begin(cg_call **out, cg_core *core);

/**
 * Commit: write the outbox row for everything the call changed (numbered by the group's event
 * sequence), COMMIT, then apply the call's staged cache changes and hand the change list to
 * the publisher. Always ends and frees the call. Returns 0, or the error that ended the call
 * (then nothing was committed, nothing published, and the touched cache entries are gone).
 */
CG_EXTERN(int) cg_call_commit(cg_call *call);

/** Roll back and free the call: nothing it did is kept, touched cache entries are evicted,
 *  nothing is published. Accepts NULL. */
CG_EXTERN(void) cg_call_abort(cg_call *call);

/** A function run as one call by cg_call_run(). Return 0 to commit, < 0 to abort. */
typedef int (*cg_call_fn)(cg_call *call, void *arg);

typedef struct cg_retry_options {
    unsigned int version;
    int max_attempts;  /**< including the first; default 8 */
    int base_delay_ms; /**< first backoff; doubles per attempt; default 2 */
    int max_delay_ms;  /**< cap of one backoff; default 200 */
} cg_retry_options;
#define CG_RETRY_OPTIONS_VERSION 1
#define CG_RETRY_OPTIONS_INIT                                                                      \
    {                                                                                              \
        CG_RETRY_OPTIONS_VERSION, 8, 2, 200                                                        \
    }

/**
 * Run fn as a call, committing when it returns 0, and run it again as a new call when the
 * call fails with CG_ESTALE or CG_ERETRYABLE — up to max_attempts in all, sleeping a random
 * ("full jitter") time up to min(max_delay, base_delay * 2^attempt) between attempts.
 * Returns 0 or the last error; *attempts (may be NULL) gets the number of calls made.
 */
CG_EXTERN(int)
cg_call_run(cg_core *core, cg_call_fn fn, void *arg, const cg_retry_options *opts, int *attempts);

/* ---- resources ------------------------------------------------------------------------ */

typedef struct cg_resource_options {
    unsigned int version;
    const char *kind;          /**< [a-z][a-z0-9_-]{0,31}; default "service"; "folder" makes
                                    a folder names can be bound in */
    const char *service_id;    /**< optional; replicas share it (Locator, e-Speak §2.8) */
    const char *specification; /**< JSON text of each part; NULL means {} */
    const char *description;
    const char *state;
} cg_resource_options;
#define CG_RESOURCE_OPTIONS_VERSION 1
#define CG_RESOURCE_OPTIONS_INIT                                                                   \
    {                                                                                              \
        CG_RESOURCE_OPTIONS_VERSION, NULL, NULL, NULL, NULL, NULL                                  \
    }

/** What cg_resource_get() returns. */
typedef struct cg_resource {
    int64_t handle;
    char kind[33];
    char service_id[256]; /**< "" when none */
} cg_resource;

/** Create a resource with its three parts at version 1; *handle gets its new handle. */
CG_EXTERN(int) cg_resource_create(int64_t *handle, cg_call *call, const cg_resource_options *opts);

/** Read a resource's kind and service id. CG_ENOTFOUND if it does not exist in this group. */
CG_EXTERN(int) cg_resource_get(cg_resource *out, cg_call *call, int64_t handle);

/** Delete a resource, its parts and every name bound to it or in it (a folder).
 *  CG_ENOTFOUND if absent; the root folder cannot be deleted (CG_EINVALID). */
CG_EXTERN(int) cg_resource_delete(cg_call *call, int64_t handle);

/** A list of handles; free the array with cg_handle_list_dispose(). */
typedef struct cg_handle_list {
    int64_t *handles;
    size_t n;
} cg_handle_list;
CG_EXTERN(void) cg_handle_list_dispose(cg_handle_list *list);

/** Find every resource of this group registered with `service_id` (replicas), by handle.
 *  Cached like a folder's listing, per service id, invalidated by every register and
 *  unregister of a resource with that service id. */
CG_EXTERN(int) cg_resource_find(cg_handle_list *out, cg_call *call, const char *service_id);

/* ---- parts ---------------------------------------------------------------------------- */

/**
 * Read a part: from the call's own uncommitted writes, else the cache, else the repository
 * (filling the cache). CG_ENOTFOUND when the resource does not exist.
 *
 * *out is LENT by the call: read it until the call ends (cg_call_commit() or
 * cg_call_abort(), whatever their outcome, and also after an error in the call); do not free
 * it. To keep a part past the call, take a reference with cg_part_ref() and release that
 * with cg_part_free().
 *
 * A cached part is lent without a lock, a reference count or any write to memory that other
 * threads share (so hits on the same hot parts scale with threads): from its first cached
 * read until it ends, the call holds a read-side section (userspace RCU) of the thread that
 * read, and no part the cache drops meanwhile is freed before that section ends. Hence:
 *  - end the call on the thread that read (a section belongs to its thread);
 *  - a call left open holds back the release of every part the core's cache dropped since it
 *    began (memory, never correctness): end calls promptly, as their transactions require
 *    anyway.
 */
CG_EXTERN(int)
cg_part_get(const cg_part **out, cg_call *call, int64_t handle, cg_part_kind kind);

/**
 * Update a part conditionally: it succeeds only if the repository still holds
 * `expected_version`; then the part's version becomes expected_version + 1, written to
 * *new_version (may be NULL). `json` is the new body (must parse as JSON).
 * CG_ESTALE when the version moved on: the cached copy is evicted, the call is rolled back,
 * and cg_error_last() names the handle, part, expected and current version.
 */
CG_EXTERN(int)
cg_part_update(int64_t *new_version, cg_call *call, int64_t handle, cg_part_kind kind,
               int64_t expected_version, const char *json);

/** As cg_part_update() with a cJSON body (printed; the caller keeps ownership of body). */
CG_EXTERN(int)
cg_part_update_json(int64_t *new_version, cg_call *call, int64_t handle, cg_part_kind kind,
                    int64_t expected_version, const cJSON *body);

/**
 * A whole call that reads one part: the common request of a broker core, made cheap. Served
 * from the cache when it can; else one round trip to the repository (BEGIN, SELECT and COMMIT
 * pipelined together — still one transaction), filling the cache. Since the call is over when
 * this returns, *out is the caller's own reference, released with cg_part_free(): one atomic
 * increment of the part's count, which a part lent by cg_part_get() inside a call avoids.
 */
CG_EXTERN(int) cg_part_read(cg_part **out, cg_core *core, int64_t handle, cg_part_kind kind);

/** What cg_part_read_cached() calls with the part it found (lent until fn returns). */
typedef void (*cg_part_visit)(const cg_part *part, void *arg);

/**
 * cg_part_read() when, and only when, it can answer without waiting for anything: with the
 * invalidation strategy, within the freshness lease, and the part in the cache. Then fn(part,
 * arg) runs with the part lent until fn returns (a read-side section: no lock, no reference),
 * the read counts as a committed call and a cache hit as cg_part_read()'s would, and 0 is
 * returned. 1 when it cannot (fn is not called, nothing is read: use cg_part_read(), which may
 * wait for the repository); CG_EINVALID for a bad handle or kind. fn must not block (it holds
 * back the release of parts the cache drops) and must not keep the part past its return
 * without cg_part_ref(). For a server's I/O thread: coregroupd answers cached gets with it
 * without handing them to a worker.
 */
CG_EXTERN(int)
cg_part_read_cached(cg_core *core, int64_t handle, cg_part_kind kind, cg_part_visit fn, void *arg);

/**
 * Refresh-and-lock (e-Speak design §2.7.3): read the part from the repository with
 * SELECT ... FOR UPDATE, refresh the cache with it, and keep the row locked until the call
 * ends, so an update based on *out cannot be stale. *out is lent as by cg_part_get().
 */
CG_EXTERN(int)
cg_part_lock(const cg_part **out, cg_call *call, int64_t handle, cg_part_kind kind);

CG_EXTERN(int64_t) cg_part_version(const cg_part *part);
CG_EXTERN(int64_t) cg_part_handle(const cg_part *part);
CG_EXTERN(cg_part_kind) cg_part_kind_of(const cg_part *part);
/** The body as JSON text, NUL-terminated; valid as long as the part (lent or referenced). */
CG_EXTERN(const char *) cg_part_body(const cg_part *part);
CG_EXTERN(size_t) cg_part_body_len(const cg_part *part);
/** The body parsed into a new cJSON tree the caller frees with cJSON_Delete(); NULL on OOM. */
CG_EXTERN(cJSON *) cg_part_json(const cg_part *part);
/** Take a reference to a part (lent or referenced): the caller's own, valid until released
 *  with cg_part_free(), past the end of the call that lent the part. Returns part. */
CG_EXTERN(cg_part *) cg_part_ref(const cg_part *part);
/** Release a reference (from cg_part_read() or cg_part_ref()); never a part a call lent.
 *  Accepts NULL. */
CG_EXTERN(void) cg_part_free(cg_part *part);

/* ---- names ---------------------------------------------------------------------------- */

/** Bind `name` in `folder` to `target`. CG_EEXISTS if the name is taken (the call stays
 *  usable), CG_ENOTFOUND if folder or target is missing, CG_EINVALID for a bad name (empty,
 *  over 255 bytes, '/' or control characters) or a folder that is not a folder. */
CG_EXTERN(int) cg_name_bind(cg_call *call, int64_t folder, const char *name, int64_t target);

/** Remove a binding. CG_ENOTFOUND if it is not there. */
CG_EXTERN(int) cg_name_unbind(cg_call *call, int64_t folder, const char *name);

/** Resolve one name in a folder to its target handle. Served from the core's cached listing
 *  of the folder when it can be (the same freshness bound as a part; see cg_name_list_get). */
CG_EXTERN(int) cg_name_lookup(int64_t *target, cg_call *call, int64_t folder, const char *name);

typedef struct cg_name_entry {
    char *name;
    int64_t target;
} cg_name_entry;
typedef struct cg_name_list {
    cg_name_entry *entries;
    size_t n;
} cg_name_list;

/** List the bindings of a folder, by name. Free with cg_name_list_dispose(). With the
 *  invalidation strategy the listing is cached per folder (its version is the folder's names
 *  version, which every bind and unbind in it raises), under the guarantees of a part: no
 *  late stale fill, single flight, TTL, reset, and the freshness bound. A call that changed
 *  the folder itself reads it from the repository (it sees its own change). */
CG_EXTERN(int) cg_name_list_get(cg_name_list *out, cg_call *call, int64_t folder);
CG_EXTERN(void) cg_name_list_dispose(cg_name_list *list);

#endif
