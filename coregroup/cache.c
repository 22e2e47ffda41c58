/*
 * cache.c — a core's cache of metadata parts: sharded, bounded, monotonic (DESIGN.md I4).
 *
 * Layout. The cache is split into up to 64 shards (a power of two) by the high half of a
 * 64-bit mix (splitmix64's finalizer) of (handle, kind). Each shard has its own lock for
 * writers (see Locking); hits take no lock (see Lock-free hits) and read only the shard's
 * first cache line, which holds the table pointer and is written only when a table is swapped
 * in. A cache of
 * fewer than 64 entries has one shard (every shard gets at least MIN_PER_SHARD entries, and
 * max_entries is divided exactly: the shards' capacities add up to max_entries), so small
 * caches evict in exact CLOCK order over all their entries.
 *
 * A shard holds:
 *  - an open-addressing table with linear probing of SLOTS, each holding the key, the cache's
 *    reference to the part, the expiry time, the CLOCK reference bit and the entry's position
 *    in the clock ring. The table and its mask are one allocation (tab), published to hits
 *    by one pointer. Load stays at or below 1/2. Deletion shifts later slots back (no
 *    tombstones). The table grows by doubling up to the size its capacity needs, so an
 *    empty 1,000,000-entry cache does not cost its full size up front; cg_cache_reset gives
 *    the memory back (the table starts small again).
 *  - the CLOCK RING: one position per entry (ring[pos] = its slot), a free list threaded
 *    through unused positions, and a hand. A hit only sets the entry's reference bit (no list
 *    moves on the hit path). To make room the hand sweeps the ring: a referenced entry loses
 *    its bit and is passed over, the first unreferenced one is evicted, and the newcomer takes
 *    its position just behind the hand, so it gets a full turn before it can be evicted.
 *  - the GHOSTS: the floors of keys that are not cached, in a FIFO ring of GHOSTS records
 *    with a small hash index. A key is in the table or among the ghosts, never both.
 *  - the generation counter and min_ticket (below), the in-flight loads, and counters.
 *
 * Floors. The floor of a cached key is the cached part's version: a fill raises the floor to
 * the version it installs, and an invalidation that raises the floor above the cached version
 * evicts the entry, so the two never differ while the key is cached. When an entry leaves the
 * table (invalidated, evicted by CLOCK or cg_cache_evict, expired) its floor becomes a ghost;
 * an invalidation of an absent key raises (or creates) its ghost. A fill is refused when its
 * version is below the floor (cached version or ghost); cg_cache_newer_known asks the same
 * question. A key with neither entry nor ghost has no floor: its protection is the ticket.
 *
 * Disproved floors. Every floor comes from a version that was committed before it was applied
 * here (a bus message or outbox row is published after its commit; a stale error names the
 * repository's version), and a loader reads the repository as of its own start (READ
 * COMMITTED). So a load that begins after a floor F refused the previous load, and still reads
 * a version below F, proves that F was never committed: a forged bus message, or a repository
 * that went back. cg_cache_load then forgets F as a full ghost ring would (refusing every
 * older ticket) and gives the caller what it read, uncached; the next load caches normally.
 * A forged floor, however high, therefore costs one load two repository reads instead of
 * keeping the key out of the cache (and its reads failing) until the ghost ring turns over.
 *
 * Tickets. A ticket is the shard's generation counter at the time it was taken (tickets do not
 * bump it). Forgetting a floor — a live ghost overwritten when the ghost ring is full, or
 * cg_cache_reset — increments the generation and sets min_ticket to it, so every ticket taken
 * before is now below min_ticket and its fill is refused. A ticket taken after the floor was
 * forgotten belongs to a read that started after the invalidation that set the floor had been
 * applied, so that read sees at least the floor's version. Fills check the floor first and the
 * ticket second, so a refused stale version is always reported as "newer known".
 *
 * Single flight. cg_cache_load keeps a list of in-flight records per shard (key, joined
 * count, condition variable, result, waiter count). The leader takes a ticket, runs the loader
 * WITHOUT the shard lock, then fills under it; a thread that misses the same key meanwhile
 * joins the record under the shard lock (so a miss and the decision to lead or wait are one
 * step) and then sleeps on the record's condition variable with the shard's flight_lock, a
 * pthread mutex used for nothing else. The leader unlinks the record under the shard lock
 * (no one can join after that, so the joined count is final), then sets the result and `done`
 * under flight_lock and broadcasts; a waiter re-checks `done` under flight_lock, so no wakeup
 * is lost. The last thread out frees the record (the leader when nobody joined, else the last
 * waiter). Only a part the cache accepted (or a newer one it already holds) and CG_ENOTFOUND
 * are shared. Any other error belongs to the leader, and so does a part refused only for its
 * ticket (a reset or a forgotten floor happened during the read: good for the leader, whose
 * call began before, but a waiter may have begun after it). Waiters then try again; one
 * becomes the new leader.
 *
 * TTL. With ttl_ms > 0 an entry expires ttl_ms after it was filled (CLOCK_MONOTONIC_COARSE,
 * read before taking the lock and only when a TTL is set). An expired entry found by a lookup
 * is dropped, counted as an expiration, and leaves its floor as a ghost.
 *
 * Lock-free hits. A hit (cg_cache_peek) runs inside a read-side section (reclaim.h: userspace
 * RCU) and writes nothing shared: it loads the shard's table pointer, probes the slots with
 * atomic loads, and returns the part it found without taking a reference. Three rules make
 * that safe while writers change the table under the shard lock:
 *  1. Nothing a hit can reach is freed before the hit's section ends. A writer that drops the
 *     cache's reference to a part (invalidated, evicted, expired, replaced by a newer
 *     version), or swaps in a table (growth, reset), unlinks it under the lock and RETIRES it
 *     after the unlock: the reference is dropped, the table freed, after a grace period. A
 *     part therefore outlives every section that could have found it, holding the cache's own
 *     reference; a caller that keeps a part past its section takes a reference of its own
 *     (cg_cache_get does exactly that).
 *  2. A hit never returns a part for another key. Writers store a slot's key and expiry before
 *     its part (release), and the hit checks the part's own key, which never changes, so a
 *     slot caught in the middle of a write (an entry moved back by a deletion, a new entry in
 *     a reused slot) yields a part that is either the key's or skipped. With a TTL, the hit
 *     reads the expiry and then the part again: a part that changed meanwhile sends it to the
 *     locked path.
 *  3. A hit never returns a version below a floor it could know of. A part leaves a slot, or
 *     is replaced in it, under the lock, by a store that happens before the invalidation,
 *     eviction or put returns; a hit that starts after that (that learnt of the new floor
 *     through any synchronising action) loads the slot after the store, so it finds the newer
 *     part or nothing. A hit racing with the change may return the entry as it was, which is
 *     what a locked lookup just before the change would have returned.
 * A probe that meets a slot in the middle of a deletion's backward shift may miss a key that
 * is cached; peek then returns NULL, which is never taken for a miss: cg_cache_get and
 * cg_cache_load ask again under the lock, which also drops an expired entry. The CLOCK bit is
 * a byte of its own that a hit sets only when it is clear (a hot entry's line stays shared);
 * the hand clears it under the lock, and a lost set only costs the entry one pass of the hand.
 * Hits are counted per thread (counter_block), summed by cg_cache_stats_get. Everything else
 * (floors, ghosts, tickets, single flight, CLOCK, TTL, reset, sampling) is decided under the
 * shard lock as before.
 *
 * Locking. The shard lock serialises writers (and the locked path of a hit). It is a
 * test-and-test-and-set spinlock (an atomic exchange with
 * acquire order to take it, a release store to drop it; while it is held, waiters read it and
 * pause, and after SPINS failed looks call sched_yield() in case the holder was preempted).
 * That is only sound because every critical section is short and bounded: no allocation, no
 * loader call and no free() under the lock. A part reference the cache drops, and a table it
 * replaces, is collected in a small per-call TRASH and retired after the unlock (rule 1
 * above); a locked hit takes its own reference under the lock. A shard that must grow returns
 * FILL_GROW: the caller drops the lock, allocates the bigger table and
 * ring, takes the lock again and decides the fill again from scratch (what was true before
 * the unlock may not be any more); the rehash itself is under the lock, O(entries of the
 * shard), at most log2(cap / 32) times per shard between resets, into a table hits cannot
 * see until it is published. cg_cache_reset swaps in a table allocated before taking the lock
 * (out of memory: a static empty one that is never written, so the next fill allocates or is
 * refused) and retires the old one with its parts. Flight records
 * are allocated outside the lock too (a leader-to-be drops the lock, allocates, and looks
 * again). Threads that wait for a load sleep (flight_lock above); they never spin.
 *
 * Sampling. cg_cache_sample (for the consistency audit) copies keys and versions out of one
 * shard at a time under its lock, walking that shard's table from a position that moves with
 * every call; it keeps no reference and calls nothing, so the audit talks to the repository
 * with no cache lock held and the writers never wait for more than one shard's copy.
 *
 * Deliberately not here: no negative caching (CG_ENOTFOUND is never remembered), no
 * background expiry sweep (expired entries leave when found or when CLOCK evicts them), and
 * no lock-free writers: writes are rare next to hits (an invalidation per commit of the group)
 * and need the floor, ghost and ticket decisions to be one step. What a hit costs against a
 * raw hash table, and why, is measured by tests/bench_cache.c and explained in
 * tests/bench/NOTES.md.
 */
#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "coregroup/sys/error.h"
#include "coregroup/sys/item.h"

#define MAX_SHARDS      64
#define MIN_PER_SHARD   32  /* fewer shards for small caches */
#define GHOSTS          256 /* per shard; a power of two */
#define GHOST_SLOTS     (2 * GHOSTS)
#define INITIAL_SLOTS   64u
#define MAX_LOAD_RUNS   3
#define CACHE_LINE      64
#define RING_FREE       0x80000000u /* ring[pos] is a free-list link, not a slot */
#define RING_NIL        0x7fffffffu /* end of the free list */
#define MAX_ENTRIES_CAP ((int64_t)1 << 36)
#define MAX_TTL_MS      ((int64_t)1 << 40)
#define SPINS           64 /* failed looks at a held shard lock before sched_yield() */
#define TRASH_PARTS     4  /* part references one critical section may drop */
#define TRASH_MEM       4  /* blocks one critical section may give up (a table, a ring, ...) */

#define NOINLINE __attribute__((noinline)) /* keeps a slow path out of the hit path */

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

/* One table slot, 32 bytes (two per cache line, none straddling); part == NULL: empty. Hits
 * read handle, part, expires and ref without the lock, so writers store those with atomic
 * stores (part last, with release order; see Lock-free hits); pos is the writers' alone. */
typedef struct {
    int64_t handle;
    cg_part *part;   /* the cache's own reference */
    int64_t expires; /* ms on CLOCK_MONOTONIC_COARSE; 0 when the cache has no TTL */
    uint32_t pos;    /* position in the clock ring */
    int16_t kind;
    uint8_t ref; /* the CLOCK reference bit: set by hits, cleared by the hand */
    uint8_t unused;
} slot;

/* A table as hits see it: published by a release store of shard.tab, retired (freed after a
 * grace period) when a bigger one or a reset replaces it. */
typedef struct tab {
    uint32_t mask;
    int release_parts; /* when retired: drop the cache's references to the parts it holds */
    _Alignas(CACHE_LINE) slot slots[];
} tab;

/* One thread's hit counter for one cache: written by that thread only, summed on read. */
typedef struct counter_block {
    _Alignas(CACHE_LINE) uint64_t hits;
    struct counter_block *next;
    uint64_t thread; /* the owner's serial (thread_serial) */
} counter_block;

/* The floor of a key that is not cached. */
typedef struct {
    int64_t handle;
    int64_t floor;
    int32_t kind;
    uint32_t hash;
    uint8_t live; /* 0: the record was dropped (its key got cached) or never used */
} ghost;

/* One in-flight load. next, handle, kind and joined belong to the shard lock (the record is
 * on the shard's list from the leader's miss until it unlinks the record); the rest belongs to
 * the shard's flight_lock. */
typedef struct flight {
    struct flight *next;
    int64_t handle;
    int kind;
    int joined;        /* threads that joined while the record was listed (shard lock) */
    int done;          /* the leader has published err / part */
    int waiters;       /* joined threads that have not yet read the result */
    int err;           /* the leader's result */
    int shared;        /* waiters may take it (else they try again) */
    cg_part *part;     /* shared, err == 0, waiters > 0: a reference the record holds for them */
    pthread_cond_t cv; /* used with the shard's flight_lock */
    cg_error detail;   /* the leader's error detail when err == CG_ENOTFOUND */
} flight;

typedef struct {
    /* first cache line, read-mostly: all a hit reads of the shard (written when a table is
     * swapped in) */
    _Alignas(CACHE_LINE) tab *tab;

    /* the writers' state, under the shard lock */
    _Alignas(CACHE_LINE) atomic_int lock; /* the shard lock: 0 free, 1 held (see shard_lock) */
    uint32_t count;                       /* entries cached */
    uint64_t hits; /* hits found under the lock (lock-free ones: counter_block) */

    uint64_t misses, fills, fills_refused, evictions, expirations, invalidations, resets;
    uint64_t loads, load_waits, floors_forgotten, floors_disproved;

    uint32_t cap; /* at most this many entries */

    uint32_t *ring;     /* CLOCK ring: slot index, or RING_FREE | next free position */
    uint32_t ring_size; /* positions allocated: min(cap, table size / 2) */
    uint32_t ring_top;  /* positions [0, ring_top) have been handed out */
    uint32_t free_head; /* first free position below ring_top, or RING_NIL */
    uint32_t hand;

    uint64_t gen;        /* tickets hand out this value */
    uint64_t min_ticket; /* fills with an older ticket are refused */

    flight *flights;
    pthread_mutex_t flight_lock; /* only for waiting on a load: see flight */

    uint32_t ghost_head;               /* next record to (over)write */
    uint16_t ghost_index[GHOST_SLOTS]; /* 0 empty, else record index + 1 */
    ghost ghosts[GHOSTS];
} shard;

struct cg_cache {
    shard *shards;
    uint32_t nshards; /* a power of two */
    uint32_t ninit;   /* shards whose flight_lock was initialised (for cleanup) */
    int64_t ttl_ms;
    uint64_t id; /* never reused: names the cache in the threads' counter caches */

    _Alignas(CACHE_LINE) pthread_mutex_t blocks_lock; /* the list, not the counts */
    counter_block *blocks;                            /* one per thread that hit without the lock */
    counter_block spill; /* for a thread whose block could not be allocated */
    int blocks_lock_ok;
};

static atomic_ullong next_cache_id = 1; /* cg_cache.id */

enum { FILL_REFUSED = 0, FILL_CACHED = 1, FILL_NEWER = 2, FILL_GROW = 3 };

/* What a critical section dropped, let go after the shard lock: the cache's references to
 * parts that left the table and tables a hit may still be reading (both retired: released
 * after a grace period, reclaim.h), and memory no hit can reach, such as a ring (freed at
 * once). No free() runs under the shard lock. */
typedef struct {
    cg_part *parts[TRASH_PARTS];
    void *mem[TRASH_MEM];
    tab *tabs[TRASH_MEM];
    int nparts, nmem, ntabs;
} trash;

/* A bigger table and ring, allocated outside the shard lock for grow_into(). */
typedef struct {
    tab *table;     /* zeroed, `slots` slots; NULL: none */
    uint32_t *ring; /* min(slots / 2, cap) positions */
    uint32_t slots;
    int failed; /* out of memory: make room by eviction instead */
} spare_table;

/* ---- helpers ------------------------------------------------------------------------------ */

static inline uint64_t key_hash(int64_t handle, int kind)
{
    uint64_t x = (uint64_t)handle + (uint64_t)(uint32_t)kind * 0x9e3779b97f4a7c15ULL;
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline shard *shard_of(const cg_cache *c, uint64_t h)
{
    return &c->shards[(uint32_t)(h >> 32) & (c->nshards - 1)];
}

static inline int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The same as cg_part__ref, inlined for the hit path. */
static inline cg_part *part_ref(cg_part *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

/* The shard lock is contended only by other operations on the same shard. */
static NOINLINE void shard_lock_slow(shard *s)
{
    unsigned spins = 0;
    do {
        while (atomic_load_explicit(&s->lock, memory_order_relaxed) != 0) {
            if (++spins < SPINS) {
                cpu_relax();
            } else {
                sched_yield(); /* the holder may have been preempted: let it run */
                spins = 0;
            }
        }
    } while (atomic_exchange_explicit(&s->lock, 1, memory_order_acquire) != 0);
}

/* Test-and-test-and-set: one atomic exchange when the lock is free. */
static inline void shard_lock(shard *s)
{
    if (atomic_exchange_explicit(&s->lock, 1, memory_order_acquire) != 0)
        shard_lock_slow(s);
}

static inline void shard_unlock(shard *s)
{
    atomic_store_explicit(&s->lock, 0, memory_order_release);
}

/* ---- tables ------------------------------------------------------------------------------- */

/* Slot fields that hits read without the lock are written with these (and part with release
 * order): plain moves on x86-64 and arm64, and no data race in the C sense. */
#define LOAD(x)     __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* What a shard holds after a reset for which no new table could be allocated: two empty
 * slots, shared by every such shard, never written (ring_size 0: the next fill allocates). */
static union {
    tab t;
    unsigned char bytes[sizeof(tab) + 2 * sizeof(slot)];
} empty_tab = {.t = {.mask = 1}};

static void part_unref(void *p)
{
    cg_part_free(p);
}

/* A zeroed table of n slots (n a power of two >= 2), aligned to a cache line; NULL when out of
 * memory. */
static tab *tab_alloc(uint32_t n)
{
    size_t size = sizeof(tab) + (size_t)n * sizeof(slot);
    tab *t = aligned_alloc(CACHE_LINE, size);
    if (t != NULL) {
        memset(t, 0, size);
        t->mask = n - 1;
    }
    return t;
}

/* Drop the cache's reference to every part of a table nobody can reach any more. */
static void tab_release_parts(tab *t)
{
    uint32_t i;
    for (i = 0; i <= t->mask; i++)
        cg_part_free(t->slots[i].part);
}

/* A retired table, after its grace period. */
static void tab_retired(void *arg)
{
    tab *t = arg;
    if (t->release_parts)
        tab_release_parts(t);
    free(t);
}

/* Make t the shard's table, for writers and (by the release store) for hits. Shard lock held,
 * or no other user. */
static void tab_publish(shard *s, tab *t)
{
    __atomic_store_n(&s->tab, t, __ATOMIC_RELEASE);
}

/* Only the counts: the hit path should not clear the arrays. */
static inline void trash_init(trash *t)
{
    t->nparts = 0;
    t->nmem = 0;
    t->ntabs = 0;
}

static inline void trash_part(trash *t, cg_part *p)
{
    assert(t->nparts < TRASH_PARTS);
    t->parts[t->nparts++] = p;
}

static inline void trash_mem(trash *t, void *m)
{
    assert(t->nmem < TRASH_MEM);
    t->mem[t->nmem++] = m;
}

static inline void trash_tab(trash *t, tab *old)
{
    assert(t->ntabs < TRASH_MEM);
    t->tabs[t->ntabs++] = old;
}

/* Release what was dropped; call after shard_unlock(). */
static inline void trash_empty(trash *t)
{
    while (t->nparts > 0)
        cg_retire(part_unref, t->parts[--t->nparts]);
    while (t->ntabs > 0)
        cg_retire(tab_retired, t->tabs[--t->ntabs]);
    while (t->nmem > 0)
        free(t->mem[--t->nmem]);
}

static inline slot *find(const shard *s, uint32_t h, int64_t handle, int kind)
{
    uint32_t i = h & s->tab->mask;
    for (;; i = (i + 1) & s->tab->mask) {
        slot *e = &s->tab->slots[i];
        if (e->part == NULL)
            return NULL;
        if (e->handle == handle && e->kind == kind)
            return e;
    }
}

static inline uint32_t slot_hash(const slot *e)
{
    return (uint32_t)key_hash(e->handle, e->kind);
}

/* ---- ghosts ------------------------------------------------------------------------------- */

/* The ghost_index position holding the key's ghost, or -1. */
static int ghost_find(const shard *s, uint32_t h, int64_t handle, int kind)
{
    uint32_t i = h & (GHOST_SLOTS - 1);
    for (;; i = (i + 1) & (GHOST_SLOTS - 1)) {
        uint16_t g = s->ghost_index[i];
        if (g == 0)
            return -1;
        if (s->ghosts[g - 1].handle == handle && s->ghosts[g - 1].kind == kind)
            return (int)i;
    }
}

/* Remove the ghost at index position i (backward-shift deletion). */
static void ghost_remove(shard *s, uint32_t i)
{
    uint32_t j = i;
    s->ghosts[s->ghost_index[i] - 1].live = 0;
    for (;;) {
        uint32_t home;
        j = (j + 1) & (GHOST_SLOTS - 1);
        if (s->ghost_index[j] == 0)
            break;
        home = s->ghosts[s->ghost_index[j] - 1].hash & (GHOST_SLOTS - 1);
        if (((j - home) & (GHOST_SLOTS - 1)) >= ((j - i) & (GHOST_SLOTS - 1))) {
            s->ghost_index[i] = s->ghost_index[j];
            i = j;
        }
    }
    s->ghost_index[i] = 0;
}

/* Forget something: refuse every ticket handed out so far. */
static void refuse_old_tickets(shard *s)
{
    s->gen++;
    s->min_ticket = s->gen;
}

/* Raise the key's ghost floor to `floor`, creating the ghost if needed. When the ring is full
 * the oldest ghost is overwritten and the shard refuses every older ticket. */
static void ghost_put(shard *s, uint32_t h, int64_t handle, int kind, int64_t floor)
{
    int i = ghost_find(s, h, handle, kind);
    uint32_t p, k;
    ghost *g;

    if (i >= 0) {
        g = &s->ghosts[s->ghost_index[i] - 1];
        if (floor > g->floor)
            g->floor = floor;
        return;
    }
    p = s->ghost_head;
    s->ghost_head = (p + 1) & (GHOSTS - 1);
    g = &s->ghosts[p];
    if (g->live) {
        ghost_remove(s, (uint32_t)ghost_find(s, g->hash, g->handle, g->kind));
        refuse_old_tickets(s);
        s->floors_forgotten++;
    }
    g->handle = handle;
    g->kind = kind;
    g->floor = floor;
    g->hash = h;
    g->live = 1;
    for (k = h & (GHOST_SLOTS - 1); s->ghost_index[k] != 0; k = (k + 1) & (GHOST_SLOTS - 1))
        ;
    s->ghost_index[k] = (uint16_t)(p + 1);
}

/* ---- entries ------------------------------------------------------------------------------ */

/* Copy the entry of slot src into slot dst, which a hit may be reading: the key and the rest
 * first, the part last with release order, so a hit that finds the new part also finds its
 * expiry; a hit that reads dst's old part meanwhile finds that part's key disagree with the
 * key it looks for, or sees the part change under it (see Lock-free hits). */
static void slot_move(slot *dst, const slot *src)
{
    STORE(dst->handle, src->handle);
    STORE(dst->kind, src->kind);
    STORE(dst->expires, src->expires);
    STORE(dst->ref, LOAD(src->ref));
    dst->pos = src->pos;
    __atomic_store_n(&dst->part, src->part, __ATOMIC_RELEASE);
}

/* Take slot i out of the table and its position out of the ring (onto the free list). The
 * caller has saved what it needs of the slot; its part reference is not touched. */
static void unlink_slot(shard *s, uint32_t i)
{
    slot *table = s->tab->slots;
    uint32_t mask = s->tab->mask, j = i;
    uint32_t pos = table[i].pos;

    s->ring[pos] = RING_FREE | s->free_head;
    s->free_head = pos;
    s->count--;
    for (;;) {
        uint32_t home;
        j = (j + 1) & mask;
        if (table[j].part == NULL)
            break;
        home = slot_hash(&table[j]) & mask;
        /* the entry at j may fill the hole at i unless its home lies cyclically in (i, j] */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            slot_move(&table[i], &table[j]);
            s->ring[table[i].pos] = i;
            i = j;
        }
    }
    __atomic_store_n(&table[i].part, NULL, __ATOMIC_RELEASE);
}

/* Drop the entry in slot e, leaving max(floor, its version) as the key's ghost floor. The
 * cache's reference goes to the trash. */
static void drop_entry(shard *s, slot *e, int64_t floor, trash *t)
{
    cg_part *part = e->part;
    int64_t handle = e->handle;
    int kind = e->kind;
    uint32_t h = slot_hash(e);

    unlink_slot(s, (uint32_t)(e - s->tab->slots));
    ghost_put(s, h, handle, kind, part->version > floor ? part->version : floor);
    trash_part(t, part);
}

/* The key's live entry, dropping it (an expiration) when its TTL ran out. */
static inline slot *lookup(const cg_cache *c, shard *s, uint32_t h, int64_t handle, int kind,
                           int64_t now, trash *t)
{
    slot *e = find(s, h, handle, kind);
    if (e != NULL && c->ttl_ms > 0 && now >= e->expires) {
        drop_entry(s, e, INT64_MIN, t);
        s->expirations++;
        return NULL;
    }
    return e;
}

/* Mark a hit entry referenced for CLOCK, writing its line only when the bit changes. */
static inline void touch(slot *e)
{
    if (!LOAD(e->ref))
        STORE(e->ref, 1);
}

/* 1 when the shard is full up to its table and may still grow: inserting a key needs a table
 * twice the size (a spare), unless it is out of memory and evicts instead. */
static inline int wants_growth(const shard *s, const spare_table *sp)
{
    return s->free_head == RING_NIL && s->ring_top >= s->ring_size && s->ring_size < s->cap &&
           !sp->failed && !(sp->table != NULL && sp->slots == (s->tab->mask + 1) * 2);
}

/* Allocate (outside the shard lock) a spare of `slots` slots for a shard of capacity `cap`,
 * replacing one of another size. On failure sp->failed is set. */
static void spare_prepare(spare_table *sp, uint32_t slots, uint32_t cap)
{
    uint32_t nring = slots / 2 < cap ? slots / 2 : cap;
    if (sp->table != NULL && sp->slots == slots)
        return;
    free(sp->table);
    free(sp->ring);
    sp->table = tab_alloc(slots);
    sp->ring = malloc((size_t)nring * sizeof(*sp->ring));
    sp->slots = slots;
    if (sp->table == NULL || sp->ring == NULL) {
        free(sp->table);
        free(sp->ring);
        sp->table = NULL;
        sp->ring = NULL;
        sp->failed = 1;
    }
}

/* Double the table and the ring with it, into the spare (which is used up); the old table and
 * ring go to the trash. Called only while ring_size < cap, so the table never grows beyond the
 * power of two >= 2 * cap. */
static void grow_into(shard *s, spare_table *sp, trash *t)
{
    uint32_t nslots = sp->slots;
    uint32_t nmask = nslots - 1;
    uint32_t nring = nslots / 2 < s->cap ? nslots / 2 : s->cap;
    tab *old = s->tab;
    slot *nt = sp->table->slots;
    uint32_t *nr = sp->ring;
    uint32_t i;

    assert(nslots == (old->mask + 1) * 2 && s->ring_top <= nring);
    /* positions on the free list keep their links; the others are rewritten below */
    memcpy(nr, s->ring, (size_t)s->ring_top * sizeof(*nr));
    for (i = 0; i <= old->mask; i++) {
        uint32_t k;
        if (old->slots[i].part == NULL)
            continue;
        for (k = slot_hash(&old->slots[i]) & nmask; nt[k].part != NULL; k = (k + 1) & nmask)
            ;
        /* nt is not published yet: plain stores; the ref byte, which hits set, is read
         * atomically (hence no struct copy) */
        nt[k].handle = old->slots[i].handle;
        nt[k].part = old->slots[i].part;
        nt[k].expires = old->slots[i].expires;
        nt[k].pos = old->slots[i].pos;
        nt[k].kind = old->slots[i].kind;
        nt[k].ref = LOAD(old->slots[i].ref);
        nr[nt[k].pos] = k;
    }
    if (old != &empty_tab.t)
        trash_tab(t, old); /* the parts moved over with the cache's references */
    trash_mem(t, s->ring);
    tab_publish(s, sp->table);
    s->ring = nr;
    s->ring_size = nring;
    sp->table = NULL;
    sp->ring = NULL;
}

/* Evict one entry by CLOCK. The shard holds at least one entry. */
static void clock_evict(shard *s, trash *t)
{
    assert(s->count > 0);
    for (;;) {
        uint32_t p = s->hand;
        slot *e;
        s->hand = p + 1 >= s->ring_top ? 0 : p + 1;
        if (s->ring[p] & RING_FREE)
            continue;
        e = &s->tab->slots[s->ring[p]];
        if (LOAD(e->ref)) {
            STORE(e->ref, 0);
            continue;
        }
        drop_entry(s, e, INT64_MIN, t);
        s->evictions++;
        return;
    }
}

/* Make sure a ring position is free for one more entry: a free-listed one, a fresh one, a
 * bigger table (the spare; wants_growth() was checked), or else (full, or out of memory for
 * growing) an eviction. */
static void make_room(shard *s, spare_table *sp, trash *t)
{
    if (s->free_head != RING_NIL || s->ring_top < s->ring_size)
        return;
    if (s->ring_size < s->cap && sp->table != NULL) {
        grow_into(s, sp, t);
        return;
    }
    clock_evict(s, t);
}

/* Insert a key that is not in the table; make_room() was called. */
static void insert_new(shard *s, uint32_t h, cg_part *part, int64_t expires)
{
    uint32_t i = h & s->tab->mask;
    uint32_t pos;
    slot *e;

    if (s->free_head != RING_NIL) {
        pos = s->free_head;
        s->free_head = s->ring[pos] & ~RING_FREE;
    } else {
        pos = s->ring_top++;
    }
    while (s->tab->slots[i].part != NULL)
        i = (i + 1) & s->tab->mask;
    e = &s->tab->slots[i];
    STORE(e->handle, part->handle);
    STORE(e->kind, (int16_t)part->kind);
    STORE(e->expires, expires);
    STORE(e->ref, 0); /* not referenced yet */
    e->pos = pos;
    __atomic_store_n(&e->part, part_ref(part), __ATOMIC_RELEASE);
    s->ring[pos] = i;
    s->count++;
}

/* Fill or put under the shard lock: FILL_CACHED, FILL_NEWER (refused: the floor is above the
 * part's version) or FILL_REFUSED (the ticket predates a forgotten floor or a reset). The
 * floor is checked before the ticket. FILL_GROW: the part would be cached, but only in a
 * bigger table, which the caller allocates outside the lock (into sp) before calling again;
 * nothing but an expiration was done. */
static int install(const cg_cache *c, shard *s, uint32_t h, cg_part *part, int check_ticket,
                   uint64_t ticket, int64_t now, spare_table *sp, trash *t)
{
    int64_t expires = c->ttl_ms > 0 ? now + c->ttl_ms : 0;
    slot *e = lookup(c, s, h, part->handle, part->kind, now, t);
    int gi;

    if (e != NULL) {
        if (part->version < e->part->version)
            goto newer;
        if (check_ticket && ticket < s->min_ticket)
            goto refused;
        STORE(e->expires, expires);
        if (part->version > e->part->version) {
            trash_part(t, e->part);
            __atomic_store_n(&e->part, part_ref(part), __ATOMIC_RELEASE);
        }
        s->fills++;
        return FILL_CACHED;
    }
    gi = ghost_find(s, h, part->handle, part->kind);
    if (gi >= 0 && part->version < s->ghosts[s->ghost_index[gi] - 1].floor)
        goto newer;
    if (check_ticket && ticket < s->min_ticket)
        goto refused;
    if (wants_growth(s, sp))
        return FILL_GROW;
    if (s->ring_size == 0)
        goto refused; /* the empty table after a reset out of memory, and still no memory */
    /* The entry takes over the floor from the ghost (make_room cannot fail). */
    if (gi >= 0)
        ghost_remove(s, (uint32_t)gi);
    make_room(s, sp, t);
    insert_new(s, h, part, expires);
    s->fills++;
    return FILL_CACHED;

newer:
    s->fills_refused++;
    return FILL_NEWER;
refused:
    s->fills_refused++;
    return FILL_REFUSED;
}

/* install(), growing the table when it must: the shard lock is held on entry and on return
 * but released meanwhile to allocate, and install() then decides again from scratch. */
static int install_grow(const cg_cache *c, shard *s, uint32_t h, cg_part *part, int check_ticket,
                        uint64_t ticket, int64_t now, trash *t)
{
    spare_table sp = {NULL, NULL, 0, 0};
    int r;

    while ((r = install(c, s, h, part, check_ticket, ticket, now, &sp, t)) == FILL_GROW) {
        uint32_t slots = (s->tab->mask + 1) * 2;
        shard_unlock(s);
        trash_empty(t);
        spare_prepare(&sp, slots, s->cap); /* cap does not change after cg_cache_new */
        shard_lock(s);
    }
    /* another thread grew the table meanwhile, or the fill was refused after all */
    if (sp.table != NULL) {
        trash_mem(t, sp.table);
        trash_mem(t, sp.ring);
    }
    return r;
}

/* ---- creating and freeing ----------------------------------------------------------------- */

/* The size a shard's table starts at: the power of two >= 2 * cap, at most INITIAL_SLOTS. */
static uint32_t initial_slots(uint32_t cap)
{
    uint32_t nslots = 2;
    while (nslots < INITIAL_SLOTS && nslots < 2 * (uint64_t)cap)
        nslots *= 2;
    return nslots;
}

static int shard_init(shard *s, uint32_t cap)
{
    /* the table starts small and grows to the power of two >= 2 * cap (load <= 1/2) */
    uint32_t nslots = initial_slots(cap);
    tab *t = tab_alloc(nslots);

    atomic_init(&s->lock, 0);
    s->cap = cap;
    s->ring_size = nslots / 2 < cap ? nslots / 2 : cap;
    s->free_head = RING_NIL;
    s->gen = 1;
    s->min_ticket = 1;
    tab_publish(s, t != NULL ? t : &empty_tab.t);
    s->ring = malloc((size_t)s->ring_size * sizeof(*s->ring));
    if (t == NULL || s->ring == NULL)
        return cg_error_nomem();
    return 0;
}

int cg_cache_new(cg_cache **out, const cg_cache_options *opts)
{
    cg_cache *c = NULL;
    uint32_t n = 1, i;
    int err = 0;

    assert(out != NULL);
    *out = NULL;
    if (opts == NULL || opts->max_entries < 1 || (int64_t)opts->max_entries > MAX_ENTRIES_CAP)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                            "cache max_entries must be from 1 to %lld", (long long)MAX_ENTRIES_CAP);
    if (opts->ttl_ms < 0 || (int64_t)opts->ttl_ms > MAX_TTL_MS)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT, "cache ttl_ms must be from 0 to %lld",
                            (long long)MAX_TTL_MS);
    while (n < MAX_SHARDS && (int64_t)n * 2 * MIN_PER_SHARD <= (int64_t)opts->max_entries)
        n *= 2;

    if ((c = calloc(1, sizeof(*c))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    c->nshards = n;
    c->ttl_ms = opts->ttl_ms;
    c->id = atomic_fetch_add(&next_cache_id, 1);
    if (pthread_mutex_init(&c->blocks_lock, NULL) != 0) {
        err = cg_error_set(CG_ERROR, CG_ERRCLASS_OS, "cannot initialise a cache lock");
        goto done;
    }
    c->blocks_lock_ok = 1;
    cg_reclaim_init();
    if ((c->shards = aligned_alloc(CACHE_LINE, n * sizeof(shard))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    memset(c->shards, 0, n * sizeof(shard));
    for (i = 0; i < n; i++) {
        shard *s = &c->shards[i];
        uint32_t cap = (uint32_t)(opts->max_entries / n + (i < (uint32_t)(opts->max_entries % n)));
        if (pthread_mutex_init(&s->flight_lock, NULL) != 0) {
            err = cg_error_set(CG_ERROR, CG_ERRCLASS_OS, "cannot initialise a cache lock");
            goto done;
        }
        c->ninit = i + 1;
        if ((err = shard_init(s, cap)) < 0)
            goto done;
    }

done:
    if (err < 0)
        cg_cache_free(c);
    else
        *out = c;
    return err;
}

/* A new, unlisted flight record (allocated outside the shard lock). 0, or CG_ERROR. */
static int flight_new(flight **out)
{
    flight *f = calloc(1, sizeof(*f));
    *out = NULL;
    if (f == NULL)
        return cg_error_nomem();
    if (pthread_cond_init(&f->cv, NULL) != 0) {
        free(f);
        return cg_error_set(CG_ERROR, CG_ERRCLASS_OS, "cannot initialise a condition variable");
    }
    *out = f;
    return 0;
}

/* Free a flight record nobody else can reach. Accepts NULL. */
static void flight_free(flight *f)
{
    if (f == NULL)
        return;
    cg_part_free(f->part);
    pthread_cond_destroy(&f->cv);
    free(f);
}

/* Forget every entry and ghost of a shard, whose table is empty (lock held or no other
 * user). */
static void shard_forget(shard *s)
{
    uint32_t i;
    s->count = 0;
    s->ring_top = 0;
    s->free_head = RING_NIL;
    s->hand = 0;
    memset(s->ghost_index, 0, sizeof(s->ghost_index));
    for (i = 0; i < GHOSTS; i++)
        s->ghosts[i].live = 0;
    s->ghost_head = 0;
}

void cg_cache_free(cg_cache *c)
{
    uint32_t i;
    if (c == NULL)
        return;
    for (i = 0; c->shards != NULL && i < c->nshards; i++) {
        shard *s = &c->shards[i];
        assert(s->flights == NULL); /* no other thread may be using the cache */
        if (s->tab != NULL && s->tab != &empty_tab.t) {
            tab_release_parts(s->tab);
            free(s->tab);
        }
        free(s->ring);
        if (i < c->ninit)
            pthread_mutex_destroy(&s->flight_lock);
    }
    free(c->shards);
    while (c->blocks != NULL) {
        counter_block *b = c->blocks;
        c->blocks = b->next;
        free(b);
    }
    if (c->blocks_lock_ok)
        pthread_mutex_destroy(&c->blocks_lock);
    free(c);
}

/* ---- the operations ----------------------------------------------------------------------- */

/* ---- hits ---------------------------------------------------------------------------------- */

/* Per-thread hit counters. A thread keeps, in TLS, the counter blocks of the last caches it
 * hit (TLS_WAYS of them, by cache id): a hit adds one to its own block with a plain load and
 * store (relaxed atomics, so the summing reader is no data race), never an atomic RMW. A
 * thread's first hit in a cache, or one whose TLS way another cache took, finds or allocates
 * its block under the cache's blocks_lock. Blocks live as long as the cache; ids are never
 * reused, so a way that names a freed cache is never matched again. */
#define TLS_WAYS 4
#define CG_TLS   __thread __attribute__((tls_model("initial-exec")))

static CG_TLS struct {
    uint64_t id;
    counter_block *block;
} tls_blocks[TLS_WAYS];
static CG_TLS uint64_t thread_serial;
static atomic_ullong next_thread_serial = 1;

static NOINLINE counter_block *thread_block(cg_cache *c)
{
    counter_block *b;
    if (thread_serial == 0)
        thread_serial = atomic_fetch_add(&next_thread_serial, 1);
    pthread_mutex_lock(&c->blocks_lock);
    for (b = c->blocks; b != NULL && b->thread != thread_serial; b = b->next)
        ;
    if (b == NULL && (b = aligned_alloc(CACHE_LINE, sizeof(*b))) != NULL) {
        memset(b, 0, sizeof(*b));
        b->thread = thread_serial;
        b->next = c->blocks;
        c->blocks = b;
    }
    pthread_mutex_unlock(&c->blocks_lock);
    if (b == NULL)
        return &c->spill; /* out of memory: shared, and a count may be lost (never a crash) */
    tls_blocks[c->id & (TLS_WAYS - 1)].id = c->id;
    tls_blocks[c->id & (TLS_WAYS - 1)].block = b;
    return b;
}

static inline void count_hit(cg_cache *c)
{
    uint32_t w = (uint32_t)c->id & (TLS_WAYS - 1);
    counter_block *b = tls_blocks[w].id == c->id ? tls_blocks[w].block : thread_block(c);
    STORE(b->hits, LOAD(b->hits) + 1);
}

/* The lock-free hit (see Lock-free hits), inside a read-side section. */
static inline cg_part *peek(cg_cache *c, uint64_t h, int64_t handle, int kind)
{
    tab *t = __atomic_load_n(&shard_of(c, h)->tab, __ATOMIC_ACQUIRE);
    uint32_t i = (uint32_t)h & t->mask, n;

    for (n = 0; n <= t->mask; n++, i = (i + 1) & t->mask) {
        slot *e = &t->slots[i];
        cg_part *p = __atomic_load_n(&e->part, __ATOMIC_ACQUIRE);
        if (p == NULL)
            return NULL;
        if (LOAD(e->handle) != handle || p->handle != handle || p->kind != kind)
            continue;
        if (c->ttl_ms > 0) {
            int64_t expires = LOAD(e->expires);
            if (__atomic_load_n(&e->part, __ATOMIC_ACQUIRE) != p || now_ms() >= expires)
                return NULL; /* moved meanwhile, or expired: the locked path decides */
        }
        touch(e);
        count_hit(c);
        return p;
    }
    return NULL;
}

const cg_part *cg_cache_peek(cg_cache *c, int64_t handle, int kind)
{
    return peek(c, key_hash(handle, kind), handle, kind);
}

/* cg_cache_get under the shard lock, after peek() found nothing: a hit on a key a writer was
 * moving, a miss, or an expired entry, which is dropped. */
static NOINLINE int get_locked(cg_cache *c, uint64_t h, int64_t handle, int kind, cg_part **out)
{
    shard *s = shard_of(c, h);
    int64_t now = c->ttl_ms > 0 ? now_ms() : 0;
    trash t;
    slot *e;
    int err = CG_ENOTFOUND;

    trash_init(&t);
    shard_lock(s);
    e = lookup(c, s, (uint32_t)h, handle, kind, now, &t);
    if (e != NULL) {
        touch(e);
        *out = part_ref(e->part);
        s->hits++;
        err = 0;
    } else {
        s->misses++;
    }
    shard_unlock(s);
    trash_empty(&t); /* an expired entry's part */
    return err;
}

int cg_cache_get(cg_cache *c, int64_t handle, int kind, cg_part **out)
{
    uint64_t h = key_hash(handle, kind);
    cg_part *p;

    *out = NULL;
    cg_read_lock();
    if ((p = peek(c, h, handle, kind)) != NULL)
        *out = part_ref(p);
    cg_read_unlock();
    return p != NULL ? 0 : get_locked(c, h, handle, kind, out);
}

uint64_t cg_cache_ticket(cg_cache *c, int64_t handle, int kind)
{
    shard *s = shard_of(c, key_hash(handle, kind));
    uint64_t t;
    shard_lock(s);
    t = s->gen;
    shard_unlock(s);
    return t;
}

/* Fill or put: install `part` under its shard lock, with the ticket rule when use_ticket. */
static int install_one(cg_cache *c, cg_part *part, int use_ticket, uint64_t ticket)
{
    uint64_t h = key_hash(part->handle, part->kind);
    shard *s = shard_of(c, h);
    int64_t now = c->ttl_ms > 0 ? now_ms() : 0;
    trash t;
    int r;
    trash_init(&t);
    shard_lock(s);
    r = install_grow(c, s, (uint32_t)h, part, use_ticket, ticket, now, &t);
    shard_unlock(s);
    trash_empty(&t);
    return r == FILL_CACHED;
}

int cg_cache_fill(cg_cache *c, cg_part *part, uint64_t ticket)
{
    return install_one(c, part, 1, ticket);
}

int cg_cache_put(cg_cache *c, cg_part *part)
{
    return install_one(c, part, 0, 0);
}

int cg_cache_newer_known(cg_cache *c, int64_t handle, int kind, int64_t version)
{
    uint64_t h = key_hash(handle, kind);
    shard *s = shard_of(c, h);
    slot *e;
    int gi, newer = 0;

    shard_lock(s);
    if ((e = find(s, (uint32_t)h, handle, kind)) != NULL)
        newer = e->part->version > version;
    else if ((gi = ghost_find(s, (uint32_t)h, handle, kind)) >= 0)
        newer = s->ghosts[s->ghost_index[gi] - 1].floor > version;
    shard_unlock(s);
    return newer;
}

void cg_cache_invalidate(cg_cache *c, int64_t handle, int kind, int64_t version)
{
    uint64_t h = key_hash(handle, kind);
    shard *s = shard_of(c, h);
    trash t;
    slot *e;

    trash_init(&t);
    shard_lock(s);
    s->invalidations++;
    if ((e = find(s, (uint32_t)h, handle, kind)) != NULL) {
        /* a cached version >= `version` already is the floor and stays */
        if (e->part->version < version)
            drop_entry(s, e, version, &t);
    } else {
        ghost_put(s, (uint32_t)h, handle, kind, version);
    }
    shard_unlock(s);
    trash_empty(&t);
}

void cg_cache_evict(cg_cache *c, int64_t handle, int kind)
{
    uint64_t h = key_hash(handle, kind);
    shard *s = shard_of(c, h);
    trash t;
    slot *e;

    trash_init(&t);
    shard_lock(s);
    if ((e = find(s, (uint32_t)h, handle, kind)) != NULL)
        drop_entry(s, e, INT64_MIN, &t);
    shard_unlock(s);
    trash_empty(&t);
}

/* Each shard in turn: swap in an empty table of the starting size (allocated before taking the
 * lock), forget the ghosts, refuse older tickets; the old table's parts are released after the
 * lock. Out of memory for the new table, the old one is emptied in place under the lock. */
void cg_cache_reset(cg_cache *c)
{
    uint32_t i;
    for (i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        uint32_t nslots = initial_slots(s->cap);
        tab *fresh = tab_alloc(nslots), *old;

        shard_lock(s);
        old = s->tab;
        /* the ring array keeps its size, which is >= the new ring_size */
        if (fresh != NULL) {
            tab_publish(s, fresh);
            s->ring_size = nslots / 2 < s->cap ? nslots / 2 : s->cap;
        } else {
            tab_publish(s, &empty_tab.t);
            s->ring_size = 0; /* the next fill allocates, or is refused */
        }
        shard_forget(s);
        refuse_old_tickets(s);
        if (i == 0)
            s->resets++;
        shard_unlock(s);
        if (old != &empty_tab.t) {
            old->release_parts = 1; /* hits may still read them: after a grace period */
            cg_retire(tab_retired, old);
        }
    }
}

/* The leader's part of cg_cache_load: run the loader (without the lock; the lock is held on
 * entry and on return), fill, and run it again while the fill is refused because a newer
 * version is known. 0 with *out a new reference, or an error. *shared is set when waiters may
 * take the result too: a part the cache accepted (or a newer one it holds), or CG_ENOTFOUND.
 * A part refused only for its ticket is good for the leader, whose call began before the
 * reset or forgotten floor, but not for a waiter that may have begun after it. What the
 * critical sections drop goes to t, which is emptied whenever the lock is released. */
static int lead(cg_cache *c, shard *s, uint32_t h, int64_t handle, int kind, cg_cache_loader load,
                void *ctx, cg_part **out, int *shared, trash *t)
{
    int64_t refused_by = 0; /* the floor that refused the previous run's fill; 0: none */
    int runs;
    for (runs = 1;; runs++) {
        uint64_t ticket = s->gen;
        cg_part *p = NULL;
        int64_t now;
        slot *e;
        int err, gi;

        s->loads++;
        shard_unlock(s);
        trash_empty(t);
        err = load(&p, ctx);
        if (err >= 0 && (p == NULL || p->handle != handle || p->kind != kind))
            err = cg_error_set(CG_ERROR, CG_ERRCLASS_CACHE,
                               "cache loader for (%lld, %d) returned no part or another key",
                               (long long)handle, kind);
        else if (err < 0)
            *shared = err == CG_ENOTFOUND;
        if (err < 0) {
            cg_part_free(p);
            shard_lock(s);
            return err;
        }
        now = c->ttl_ms > 0 ? now_ms() : 0;
        shard_lock(s);
        switch (install_grow(c, s, h, p, 1, ticket, now, t)) {
        case FILL_CACHED:
            *shared = 1;
            *out = p;
            return 0;
        case FILL_REFUSED:
            *out = p; /* not cached, but the read itself is good for this caller */
            return 0;
        default:
            break;
        }
        /* A newer version is known. If another thread cached it meanwhile, serve that. */
        if ((e = lookup(c, s, h, handle, kind, now, t)) != NULL) {
            trash_part(t, p);
            touch(e);
            *shared = 1;
            *out = part_ref(e->part);
            return 0;
        }
        if ((gi = ghost_find(s, h, handle, kind)) >= 0 && refused_by > 0 &&
            p->version < refused_by) {
            /* Disproved (see Floors): this read began after the floor refused the last one,
             * yet the repository is still below it. Forget the floor, refuse older tickets,
             * and give this caller what it read, uncached. */
            ghost_remove(s, (uint32_t)gi);
            refuse_old_tickets(s);
            s->floors_disproved++;
            *out = p;
            return 0;
        }
        refused_by = gi >= 0 ? s->ghosts[s->ghost_index[gi] - 1].floor : 0;
        trash_part(t, p);
        if (runs == MAX_LOAD_RUNS)
            return cg_error_set(CG_ERETRYABLE, CG_ERRCLASS_CACHE,
                                "resource %lld %s changed during each of %d reads",
                                (long long)handle, cg_item_kind_name(kind), MAX_LOAD_RUNS);
    }
}

/* Wait for the leader of f, which this thread joined, to publish; take its result (0 with *out
 * a new reference, CG_ENOTFOUND with the leader's detail, or CG_ERETRYABLE: not for us, try
 * again). The shard lock is not held: waiters sleep on the record's condition variable with
 * the shard's flight_lock, under which the leader sets `done`. The last one out frees f. */
static int flight_wait(shard *s, flight *f, cg_part **out)
{
    int err, last;

    pthread_mutex_lock(&s->flight_lock);
    while (!f->done)
        pthread_cond_wait(&f->cv, &s->flight_lock);
    err = f->shared ? f->err : CG_ERETRYABLE;
    if (err == 0)
        *out = part_ref(f->part);
    else if (err == CG_ENOTFOUND)
        *cg_error__mut() = f->detail;
    last = --f->waiters == 0;
    pthread_mutex_unlock(&s->flight_lock);
    if (last)
        flight_free(f); /* the leader is gone: the last one out frees */
    return err;
}

/* The leader's end: publish the result to the `joined` threads waiting on f (already unlisted,
 * so no more can join), or free f when there are none. */
static void flight_publish(shard *s, flight *f, int joined, int err, int shared, cg_part *part)
{
    if (joined == 0) {
        flight_free(f);
        return;
    }
    pthread_mutex_lock(&s->flight_lock);
    f->err = err;
    f->shared = shared;
    if (err == 0 && shared)
        f->part = part_ref(part);
    if (err == CG_ENOTFOUND)
        f->detail = *cg_error_last();
    f->waiters = joined;
    f->done = 1;
    /* under flight_lock: the last waiter out cannot free f before this returns */
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&s->flight_lock);
}

int cg_cache_load(cg_cache *c, int64_t handle, int kind, cg_cache_loader load, void *ctx,
                  cg_part **out)
{
    uint64_t h = key_hash(handle, kind);
    shard *s = shard_of(c, h);
    int64_t now = c->ttl_ms > 0 ? now_ms() : 0;
    cg_part *part = NULL;
    flight *f, *spare = NULL;
    trash t;
    int err = 0, missed = 0, shared = 0, joined;

    assert(load != NULL && out != NULL);
    *out = NULL;
    cg_read_lock(); /* a hit is the common case: as cg_cache_get, nothing more */
    if ((part = peek(c, h, handle, kind)) != NULL)
        *out = part_ref(part);
    cg_read_unlock();
    if (part != NULL)
        return 0;
    trash_init(&t);
    for (;;) {
        slot *e;

        shard_lock(s);
        e = lookup(c, s, (uint32_t)h, handle, kind, now, &t);
        if (e != NULL) {
            if (!missed)
                s->hits++;
            touch(e);
            *out = part_ref(e->part);
            shard_unlock(s);
            goto done;
        }
        if (!missed) {
            s->misses++;
            missed = 1;
        }
        for (f = s->flights; f != NULL; f = f->next)
            if (f->handle == handle && f->kind == kind)
                break;
        if (f == NULL && spare != NULL)
            break; /* lead, with the lock held */
        if (f != NULL) {
            f->joined++;
            s->load_waits++;
        }
        shard_unlock(s);
        trash_empty(&t);

        if (f == NULL) {
            /* a record for leading, allocated outside the lock; then look again */
            if ((err = flight_new(&spare)) < 0)
                goto done;
        } else {
            err = flight_wait(s, f, out);
            if (err == 0 || err == CG_ENOTFOUND)
                goto done;
            /* The leader's own result (a failure such as a lost connection, or a read that is
             * good only for the leader): not ours. Try again, perhaps as the leader. */
            err = 0;
        }
        if (c->ttl_ms > 0)
            now = now_ms(); /* time passed while allocating or waiting */
    }

    f = spare;
    spare = NULL;
    f->handle = handle;
    f->kind = kind;
    f->next = s->flights;
    s->flights = f;

    err = lead(c, s, (uint32_t)h, handle, kind, load, ctx, &part, &shared, &t);

    {
        flight **pp = &s->flights;
        while (*pp != f)
            pp = &(*pp)->next;
        *pp = f->next;
    }
    joined = f->joined; /* final: f is no longer listed */
    shard_unlock(s);
    flight_publish(s, f, joined, err, shared, part);
    *out = part;

done:
    trash_empty(&t);
    flight_free(spare);
    return err;
}

void cg_cache_stats_get(cg_cache *c, cg_cache_stats *out)
{
    const counter_block *b;
    uint32_t i;
    memset(out, 0, sizeof(*out));
    for (i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        shard_lock(s);
        out->hits += s->hits;
        out->misses += s->misses;
        out->fills += s->fills;
        out->fills_refused += s->fills_refused;
        out->evictions += s->evictions;
        out->expirations += s->expirations;
        out->invalidations += s->invalidations;
        out->resets += s->resets;
        out->entries += s->count;
        out->loads += s->loads;
        out->load_waits += s->load_waits;
        out->floors_forgotten += s->floors_forgotten;
        out->floors_disproved += s->floors_disproved;
        shard_unlock(s);
    }
    pthread_mutex_lock(&c->blocks_lock);
    for (b = c->blocks; b != NULL; b = b->next)
        out->hits += LOAD(b->hits);
    out->hits += LOAD(c->spill.hits);
    pthread_mutex_unlock(&c->blocks_lock);
}

/* ---- sampling ----------------------------------------------------------------------------- */

/* Moves every sample's starting position in each shard (one counter for every cache: it only
 * spreads the samples). */
static atomic_uint sample_round;

/* Copy the keys of up to `want` live entries of shard s into out, walking its table from slot
 * `start` and passing over the first `skip` live entries found. *left is set when the shard
 * holds more entries than the walk passed over and took. Returns how many were copied. */
static size_t shard_sample(const cg_cache *c, shard *s, uint32_t start, size_t skip, size_t want,
                           int64_t now, cg_cache_key *out, int *left)
{
    size_t got = 0, seen = 0;
    uint32_t i, n;

    shard_lock(s);
    n = s->tab->mask + 1;
    for (i = 0; i < n && got < want; i++) {
        const slot *e = &s->tab->slots[(start + i) & s->tab->mask];
        if (e->part == NULL || (c->ttl_ms > 0 && now >= e->expires))
            continue;
        if (seen++ < skip)
            continue;
        out[got].handle = e->handle;
        out[got].kind = e->kind;
        out[got].version = e->part->version;
        got++;
    }
    *left = s->count > skip + got;
    shard_unlock(s);
    return got;
}

static int key_cmp(const void *a, const void *b)
{
    const cg_cache_key *x = a, *y = b;
    if (x->handle != y->handle)
        return x->handle < y->handle ? -1 : 1;
    return x->kind < y->kind ? -1 : x->kind > y->kind;
}

size_t cg_cache_sample(cg_cache *c, cg_cache_key *out, size_t max)
{
    uint32_t round = atomic_fetch_add(&sample_round, 1) * 0x9e3779b9u, i;
    int64_t now = c->ttl_ms > 0 ? now_ms() : 0;
    size_t taken[MAX_SHARDS], got = 0, k, w;
    int left[MAX_SHARDS], topped = 0;

    /* Round one: each shard its fair share of what is still missing. */
    for (i = 0; i < c->nshards && got < max; i++) {
        size_t share = (max - got + (c->nshards - i) - 1) / (c->nshards - i);
        taken[i] = shard_sample(c, &c->shards[i], round + i * 0x61c88647u, 0, share, now, out + got,
                                &left[i]);
        got += taken[i];
    }
    for (; i < c->nshards; i++)
        taken[i] = 0, left[i] = 0;
    /* Round two: top up from the shards that had more, past what round one took there. The
     * shard may have changed in between, so a key can come twice: duplicates are removed. */
    for (i = 0; i < c->nshards && got < max; i++)
        if (left[i]) {
            got += shard_sample(c, &c->shards[i], round + i * 0x61c88647u, taken[i], max - got, now,
                                out + got, &left[i]);
            topped = 1;
        }
    if (topped && got > 1) {
        qsort(out, got, sizeof(*out), key_cmp);
        for (k = 1, w = 1; k < got; k++) {
            if (key_cmp(&out[k], &out[w - 1]) == 0) {
                if (out[k].version > out[w - 1].version)
                    out[w - 1].version = out[k].version;
                continue;
            }
            out[w++] = out[k];
        }
        got = w;
    }
    return got;
}
