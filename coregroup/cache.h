/*
 * cache.h — a core's cache of metadata parts (private).
 *
 * Keyed by (handle, part) inside one core group: a cache belongs to one core and a core to one
 * group, so the group is fixed per cache (cg_cache_new takes it) and two groups never share a
 * cache. Values are cg_part references (body + version).
 *
 * The rules (DESIGN.md I4, "monotonic cache"):
 *  - Every key has a FLOOR: the lowest version the cache may still hold or accept. Invalidating
 *    (h, p, v) raises the floor to v and evicts a cached version below v. Filling version w is
 *    refused when w < floor. A fill also raises the floor to w, so once version w was served an
 *    older one is never accepted again.
 *  - Floors outlive entries: an evicted or expired entry, or an invalidation for a key that is
 *    not cached, leaves its floor in a bounded per-shard "ghost" list. When a ghost must be
 *    dropped to make room, the shard remembers that it forgot something: every fill whose
 *    ticket was taken before that moment is refused (when unsure, refuse the fill — the read
 *    itself still succeeds, it is just not cached).
 *  - Late stale fills: a reader takes a TICKET before it reads the repository and presents it
 *    with the fill. cg_cache_reset() and forgotten ghosts refuse every older ticket.
 *  - Single flight: concurrent misses on one key run the loader once; the others wait for
 *    its result.
 * Bounded by max_entries with CLOCK eviction, optional TTL, sharded locks so that hits on
 * different keys rarely contend.
 *
 * Names and service lookups use the same cache and every rule above, under two more kinds
 * (include/coregroup/sys/item.h):
 *  - (folder, CG_ITEM_NAMES) at the folder's names version: the folder's listing, served to
 *    `list` and searched by `lookup`;
 *  - (cg_service_key(service_id), CG_ITEM_FIND) at the key's counter: `find`'s handles.
 * Their values are cg_parts whose body is not JSON but the packed form of call.c
 * ("Cached names"), built and read only there. The cache itself never looks into a body, so
 * it needs nothing new: an invalidation item ("names"/"find", v) raises the key's floor like
 * a part's, a late fill of an older listing is refused by the floor or the ticket, a reset
 * drops them with everything else, and the lease is checked by the caller (call.c) before any
 * hit, whatever the kind.
 */
#ifndef CG_CACHE_H
#define CG_CACHE_H

#include <stdint.h>

#include "coregroup/sys/part.h"
#include "reclaim.h"

typedef struct cg_cache cg_cache;

typedef struct {
    long max_entries; /* >= 1 */
    long ttl_ms;      /* 0: entries do not expire */
} cg_cache_options;

typedef struct {
    uint64_t hits, misses;
    uint64_t fills, fills_refused;
    uint64_t evictions;     /* dropped to respect max_entries */
    uint64_t expirations;   /* dropped because their TTL ran out */
    uint64_t invalidations; /* cg_cache_invalidate calls applied */
    uint64_t resets;
    uint64_t entries;          /* currently cached */
    uint64_t loads;            /* loader runs (repository reads) */
    uint64_t load_waits;       /* misses that waited for another thread's load */
    uint64_t floors_forgotten; /* ghosts dropped because a shard's ghost list was full; each
                                  refused every ticket of its shard taken before it */
    uint64_t floors_disproved; /* floors a load that began after them still read below (never
                                  committed: forged, or a repository that went back) */
} cg_cache_stats;

/* Create a cache. 0, or CG_ERROR (out of memory) / CG_EINVALID (bad options). Free with
 * cg_cache_free(). max_entries is never exceeded; a cache of fewer than 64 entries has a
 * single shard, so its eviction order is CLOCK over all of its entries. */
int cg_cache_new(cg_cache **out, const cg_cache_options *opts);

/* Free the cache and drop its references. Accepts NULL. No other thread may use it. */
void cg_cache_free(cg_cache *cache);

/* A hit without a lock, a reference or a shared write, for a caller inside a read-side section
 * (cg_read_lock(), reclaim.h): the cached part, which stays valid until that section ends (the
 * caller owns nothing and frees nothing), or NULL. Counts a hit on this thread's own counter.
 * NULL is not a definite miss and counts nothing: the key may be absent, its entry expired (left
 * for the locked path to drop), or moved by a writer while the probe passed; cg_cache_get or
 * cg_cache_load decide under the lock. */
const cg_part *cg_cache_peek(cg_cache *cache, int64_t handle, int kind);

/* A hit: *out gets a new reference (release with cg_part_free) and 0 is returned.
 * A miss (absent or expired): CG_ENOTFOUND, *out NULL. Counts a hit or a miss. A hit is
 * cg_cache_peek() plus one atomic increment of the part's reference count. */
int cg_cache_get(cg_cache *cache, int64_t handle, int kind, cg_part **out);

/* A ticket to present with a later fill of the same key; take it BEFORE reading the
 * repository. */
uint64_t cg_cache_ticket(cg_cache *cache, int64_t handle, int kind);

/* Offer a part read from the repository with a ticket taken before the read. Returns 1 when
 * cached (the cache takes its own reference; the caller keeps its own), 0 when refused:
 *   - part->version is below the key's floor (a newer version is known), or
 *   - the ticket predates a reset or a forgotten floor in this key's shard.
 * An existing entry with a higher version is kept (returns 0); with the same version, 1. */
int cg_cache_fill(cg_cache *cache, cg_part *part, uint64_t ticket);

/* 1 when a fill of `version` with this ticket would be refused because a NEWER version of the
 * key is known (floor > version); a caller that sees this re-reads instead of serving. */
int cg_cache_newer_known(cg_cache *cache, int64_t handle, int kind, int64_t version);

/* Install a part this core itself just committed (no ticket: it is the newest by
 * construction, but it is still refused if the floor is already above it). 1 or 0 as fill. */
int cg_cache_put(cg_cache *cache, cg_part *part);

/* An invalidation: versions below `version` are stale. Evicts a cached entry whose version is
 * below it and raises the key's floor to it. */
void cg_cache_invalidate(cg_cache *cache, int64_t handle, int kind, int64_t version);

/* Drop the entry for a key whatever its version (a call that wrote or locked it aborted);
 * its floor is kept. */
void cg_cache_evict(cg_cache *cache, int64_t handle, int kind);

/* Drop every entry and every floor (ghost), and refuse every fill whose ticket was taken
 * before now. */
void cg_cache_reset(cg_cache *cache);

/* Loader for cg_cache_load: read the key from the repository into *out (a new reference) or
 * return an error code (CG_ENOTFOUND when the resource does not exist). */
typedef int (*cg_cache_loader)(cg_part **out, void *ctx);

/* A hit, or a single-flight load: the first thread to miss (the leader) takes a ticket, runs
 * `load` without holding any cache lock and fills the cache; threads missing the same key
 * meanwhile wait and share its result (each gets its own reference). When the fill is refused
 * because a newer version is known, a newer cached entry is served if there is one, else the
 * loader runs again (at most 3 times in all; after the third refusal the leader returns
 * CG_ERETRYABLE). The loader must read the repository as of its own start (a statement of its
 * own under READ COMMITTED): a run that still reads below the floor that refused the run
 * before it disproves that floor, which is then forgotten (cache.c, "Disproved floors"), and
 * the leader gets what it read, uncached. Returns 0 with *out a new reference, or an error
 * with *out NULL:
 *  - CG_ENOTFOUND from the loader is shared: the waiters get it too (with its detail);
 *  - any other loader error is returned to the leader only; waiters do not inherit it, they
 *    retry (one of them becomes the new leader and runs the loader);
 *  - likewise a part whose fill is refused only for its ticket (a reset or a forgotten floor
 *    since the leader took it) is returned to the leader, uncached, and the waiters retry.
 * The loader must not load the same key (it would wait for itself). Counts one hit or one
 * miss per call; a waiter also counts a load_wait. */
int cg_cache_load(cg_cache *cache, int64_t handle, int kind, cg_cache_loader load, void *ctx,
                  cg_part **out);

/* Counters summed over the shards. */
void cg_cache_stats_get(cg_cache *cache, cg_cache_stats *out);

/* ---- sampling (the consistency audit, coregroup/audit.c) ---- */

/* The key and version of one cached entry. */
typedef struct {
    int64_t handle;
    int kind;
    int64_t version;
} cg_cache_key;

/* Copy out the keys and versions of up to `max` cached entries (expired ones are skipped) into
 * out[] (room for `max`), spread over the shards: each shard is asked for its fair share of
 * what is still missing, so a short shard leaves more for the others, and whatever is still
 * missing after one round is topped up from shards that had more. Every shard lock is taken
 * only to copy the keys (nothing is allocated, freed or called under it), and each call starts
 * at another position in each shard, so repeated samples of a large cache see different
 * entries. A sample, not a snapshot: shards are visited one after another while the cache keeps
 * changing. No key appears twice. Returns the number of keys written; counts no hit or miss. */
size_t cg_cache_sample(cg_cache *cache, cg_cache_key *out, size_t max);

#endif
