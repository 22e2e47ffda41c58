/*
 * cache.c — a core's cache of metadata parts: sharded, bounded, monotonic (DESIGN.md I4).
 *
 * Layout. The cache is split into up to 64 shards (a power of two) by the high half of a
 * 64-bit mix (splitmix64's finalizer) of (handle, kind). Each shard has its own mutex, and
 * the mutex, the table pointer, its mask and the hit counter share the shard's first cache
 * line, so a hit touches one line of shard state and no line of another shard. A cache of
 * fewer than 64 entries has one shard (every shard gets at least MIN_PER_SHARD entries, and
 * max_entries is divided exactly: the shards' capacities add up to max_entries), so small
 * caches evict in exact CLOCK order over all their entries.
 *
 * A shard holds:
 *  - an open-addressing table with linear probing of SLOTS, each holding the key, the cache's
 *    reference to the part, the expiry time, the CLOCK reference bit and the entry's position
 *    in the clock ring. Load stays at or below 1/2. Deletion shifts later slots back (no
 *    tombstones). The table grows by doubling up to the size its capacity needs, so an
 *    empty 1,000,000-entry cache does not cost its full size up front.
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
 * Tickets. A ticket is the shard's generation counter at the time it was taken (tickets do not
 * bump it). Forgetting a floor — a live ghost overwritten when the ghost ring is full, or
 * cg_cache_reset — increments the generation and sets min_ticket to it, so every ticket taken
 * before is now below min_ticket and its fill is refused. A ticket taken after the floor was
 * forgotten belongs to a read that started after the invalidation that set the floor had been
 * applied, so that read sees at least the floor's version. Fills check the floor first and the
 * ticket second, so a refused stale version is always reported as "newer known".
 *
 * Single flight. cg_cache_load keeps a list of in-flight records per shard (key, condition
 * variable used with the shard mutex, result, waiter count). The leader takes a ticket, runs
 * the loader WITHOUT the shard lock, then fills under it; threads that miss the same key
 * meanwhile wait on the record. The leader publishes the result and unlinks the record; the
 * last thread out frees it (the leader when nobody waits, else the last waiter). Only a part
 * the cache accepted (or a newer one it already holds) and CG_ENOTFOUND are shared. Any other
 * error belongs to the leader, and so does a part refused only for its ticket (a reset or a
 * forgotten floor happened during the read: good for the leader, whose call began before,
 * but a waiter may have begun after it). Waiters then try again; one becomes the new leader.
 *
 * TTL. With ttl_ms > 0 an entry expires ttl_ms after it was filled (CLOCK_MONOTONIC_COARSE,
 * read before taking the lock and only when a TTL is set). An expired entry found by a lookup
 * is dropped, counted as an expiration, and leaves its floor as a ghost.
 *
 * Deliberately not here: no negative caching (CG_ENOTFOUND is never remembered), no
 * background expiry sweep (expired entries leave when found or when CLOCK evicts them), and
 * no lock-free reads — a hit costs one uncontended mutex round trip plus the part's atomic
 * reference count, which bench_cache measures against a raw hash table.
 */
#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "error.h"

#define MAX_SHARDS      64
#define MIN_PER_SHARD   32  /* fewer shards for small caches */
#define GHOSTS          256 /* per shard; a power of two */
#define GHOST_SLOTS     (2 * GHOSTS)
#define INITIAL_SLOTS   64u
#define MAX_LOAD_RUNS   3
#define CACHE_LINE      64
#define RING_FREE       0x80000000u /* ring[pos] is a free-list link, not a slot */
#define SLOT_REF        0x80000000u /* in slot.pos: referenced since the hand passed */
#define RING_NIL        0x7fffffffu /* end of the free list */
#define MAX_ENTRIES_CAP ((int64_t)1 << 36)
#define MAX_TTL_MS      ((int64_t)1 << 40)

/* One table slot, 32 bytes (two per cache line, none straddling); part == NULL: empty. */
typedef struct {
    int64_t handle;
    cg_part *part;   /* the cache's own reference */
    int64_t expires; /* ms on CLOCK_MONOTONIC_COARSE; 0 when the cache has no TTL */
    int32_t kind;
    uint32_t pos; /* position in the clock ring, | SLOT_REF: the CLOCK reference bit */
} slot;

/* The floor of a key that is not cached. */
typedef struct {
    int64_t handle;
    int64_t floor;
    int32_t kind;
    uint32_t hash;
    uint8_t live; /* 0: the record was dropped (its key got cached) or never used */
} ghost;

/* One in-flight load; protected by its shard's lock. */
typedef struct flight {
    struct flight *next;
    int64_t handle;
    int kind;
    int done;      /* the leader has published err / part */
    int waiters;   /* threads that joined and have not yet read the result */
    int err;       /* the leader's result */
    int shared;    /* waiters may take it (else they try again) */
    cg_part *part; /* shared, err == 0, waiters > 0: a reference the record holds for them */
    pthread_cond_t cv;
    cg_error detail; /* the leader's error detail when err == CG_ENOTFOUND */
} flight;

typedef struct {
    /* first cache line: everything a hit touches */
    _Alignas(CACHE_LINE) pthread_mutex_t lock;
    slot *table;
    uint32_t mask;  /* table size - 1 */
    uint32_t count; /* entries cached */
    uint64_t hits;

    uint64_t misses, fills, fills_refused, evictions, expirations, invalidations, resets;
    uint64_t loads, load_waits, floors_forgotten;

    uint32_t cap; /* at most this many entries */

    uint32_t *ring;     /* CLOCK ring: slot index, or RING_FREE | next free position */
    uint32_t ring_size; /* positions allocated: min(cap, table size / 2) */
    uint32_t ring_top;  /* positions [0, ring_top) have been handed out */
    uint32_t free_head; /* first free position below ring_top, or RING_NIL */
    uint32_t hand;

    uint64_t gen;        /* tickets hand out this value */
    uint64_t min_ticket; /* fills with an older ticket are refused */

    flight *flights;

    uint32_t ghost_head;               /* next record to (over)write */
    uint16_t ghost_index[GHOST_SLOTS]; /* 0 empty, else record index + 1 */
    ghost ghosts[GHOSTS];
} shard;

struct cg_cache {
    shard *shards;
    uint32_t nshards; /* a power of two */
    uint32_t ninit;   /* shards whose lock was initialised (for cleanup) */
    int64_t ttl_ms;
};

enum { FILL_REFUSED = 0, FILL_CACHED = 1, FILL_NEWER = 2 };

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

static inline void shard_lock(shard *s)
{
    pthread_mutex_lock(&s->lock);
}

static inline void shard_unlock(shard *s)
{
    pthread_mutex_unlock(&s->lock);
}

static inline slot *find(const shard *s, uint32_t h, int64_t handle, int kind)
{
    uint32_t i = h & s->mask;
    for (;; i = (i + 1) & s->mask) {
        slot *e = &s->table[i];
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

/* A zeroed table of n slots (n a power of two >= 2), aligned to a cache line; NULL when out of
 * memory. */
static slot *table_alloc(uint32_t n)
{
    slot *t = aligned_alloc(CACHE_LINE, (size_t)n * sizeof(slot));
    if (t != NULL)
        memset(t, 0, (size_t)n * sizeof(slot));
    return t;
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

/* Take slot i out of the table and its position out of the ring (onto the free list). The
 * caller has saved what it needs of the slot; its part reference is not touched. */
static void unlink_slot(shard *s, uint32_t i)
{
    uint32_t j = i;
    uint32_t pos = s->table[i].pos & ~SLOT_REF;

    s->ring[pos] = RING_FREE | s->free_head;
    s->free_head = pos;
    s->count--;
    for (;;) {
        uint32_t home;
        j = (j + 1) & s->mask;
        if (s->table[j].part == NULL)
            break;
        home = slot_hash(&s->table[j]) & s->mask;
        /* the entry at j may fill the hole at i unless its home lies cyclically in (i, j] */
        if (((j - home) & s->mask) >= ((j - i) & s->mask)) {
            s->table[i] = s->table[j];
            s->ring[s->table[i].pos & ~SLOT_REF] = i;
            i = j;
        }
    }
    s->table[i].part = NULL;
}

/* Drop the entry in slot e, leaving max(floor, its version) as the key's ghost floor. */
static void drop_entry(shard *s, slot *e, int64_t floor)
{
    cg_part *part = e->part;
    int64_t handle = e->handle;
    int kind = e->kind;
    uint32_t h = slot_hash(e);

    unlink_slot(s, (uint32_t)(e - s->table));
    ghost_put(s, h, handle, kind, part->version > floor ? part->version : floor);
    cg_part_free(part);
}

/* The key's live entry, dropping it (an expiration) when its TTL ran out. */
static inline slot *lookup(const cg_cache *c, shard *s, uint32_t h, int64_t handle, int kind,
                           int64_t now)
{
    slot *e = find(s, h, handle, kind);
    if (e != NULL && c->ttl_ms > 0 && now >= e->expires) {
        drop_entry(s, e, INT64_MIN);
        s->expirations++;
        return NULL;
    }
    return e;
}

/* Double the table and the ring with it. Called only while ring_size < cap, so the table never
 * grows beyond the power of two >= 2 * cap. 0, or -1 when out of memory (then nothing
 * changed and the caller evicts instead). */
static int grow(shard *s)
{
    uint32_t nslots = (s->mask + 1) * 2;
    uint32_t nmask = nslots - 1;
    uint32_t nring = nslots / 2 < s->cap ? nslots / 2 : s->cap;
    slot *nt = table_alloc(nslots);
    uint32_t *nr;
    uint32_t i;

    if (nt == NULL)
        return -1;
    nr = realloc(s->ring, (size_t)nring * sizeof(*nr));
    if (nr == NULL) {
        free(nt);
        return -1;
    }
    s->ring = nr;
    for (i = 0; i <= s->mask; i++) {
        uint32_t k;
        if (s->table[i].part == NULL)
            continue;
        for (k = slot_hash(&s->table[i]) & nmask; nt[k].part != NULL; k = (k + 1) & nmask)
            ;
        nt[k] = s->table[i];
        nr[nt[k].pos & ~SLOT_REF] = k;
    }
    free(s->table);
    s->table = nt;
    s->mask = nmask;
    s->ring_size = nring;
    return 0;
}

/* Evict one entry by CLOCK. The shard holds at least one entry. */
static void clock_evict(shard *s)
{
    assert(s->count > 0);
    for (;;) {
        uint32_t p = s->hand;
        slot *e;
        s->hand = p + 1 >= s->ring_top ? 0 : p + 1;
        if (s->ring[p] & RING_FREE)
            continue;
        e = &s->table[s->ring[p]];
        if (e->pos & SLOT_REF) {
            e->pos &= ~SLOT_REF;
            continue;
        }
        drop_entry(s, e, INT64_MIN);
        s->evictions++;
        return;
    }
}

/* Make sure a ring position is free for one more entry: a free-listed one, a fresh one, a
 * bigger table, or else (full, or out of memory for growing) an eviction. */
static void make_room(shard *s)
{
    if (s->free_head != RING_NIL || s->ring_top < s->ring_size)
        return;
    if (s->ring_size < s->cap && grow(s) == 0)
        return;
    clock_evict(s);
}

/* Insert a key that is not in the table; make_room() was called. */
static void insert_new(shard *s, uint32_t h, cg_part *part, int64_t expires)
{
    uint32_t i = h & s->mask;
    uint32_t pos;
    slot *e;

    if (s->free_head != RING_NIL) {
        pos = s->free_head;
        s->free_head = s->ring[pos] & ~RING_FREE;
    } else {
        pos = s->ring_top++;
    }
    while (s->table[i].part != NULL)
        i = (i + 1) & s->mask;
    e = &s->table[i];
    e->handle = part->handle;
    e->kind = part->kind;
    e->part = part_ref(part);
    e->expires = expires;
    e->pos = pos; /* not referenced yet */
    s->ring[pos] = i;
    s->count++;
}

/* Fill or put under the shard lock: FILL_CACHED, FILL_NEWER (refused: the floor is above the
 * part's version) or FILL_REFUSED (the ticket predates a forgotten floor or a reset). The
 * floor is checked before the ticket. */
static int install(const cg_cache *c, shard *s, uint32_t h, cg_part *part, int check_ticket,
                   uint64_t ticket, int64_t now)
{
    int64_t expires = c->ttl_ms > 0 ? now + c->ttl_ms : 0;
    slot *e = lookup(c, s, h, part->handle, part->kind, now);
    int gi;

    if (e != NULL) {
        if (part->version < e->part->version)
            goto newer;
        if (check_ticket && ticket < s->min_ticket)
            goto refused;
        if (part->version > e->part->version) {
            cg_part *old = e->part;
            e->part = part_ref(part);
            cg_part_free(old);
        }
        e->expires = expires;
        s->fills++;
        return FILL_CACHED;
    }
    gi = ghost_find(s, h, part->handle, part->kind);
    if (gi >= 0 && part->version < s->ghosts[s->ghost_index[gi] - 1].floor)
        goto newer;
    if (check_ticket && ticket < s->min_ticket)
        goto refused;
    /* The entry takes over the floor from the ghost (make_room cannot fail). */
    if (gi >= 0)
        ghost_remove(s, (uint32_t)gi);
    make_room(s);
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

/* ---- creating and freeing ----------------------------------------------------------------- */

static int shard_init(shard *s, uint32_t cap)
{
    uint32_t nslots = 2;

    /* the table starts small and grows to the power of two >= 2 * cap (load <= 1/2) */
    while (nslots < INITIAL_SLOTS && nslots < 2 * (uint64_t)cap)
        nslots *= 2;
    s->cap = cap;
    s->mask = nslots - 1;
    s->ring_size = nslots / 2 < cap ? nslots / 2 : cap;
    s->free_head = RING_NIL;
    s->gen = 1;
    s->min_ticket = 1;
    s->table = table_alloc(nslots);
    s->ring = malloc((size_t)s->ring_size * sizeof(*s->ring));
    if (s->table == NULL || s->ring == NULL)
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
    if ((c->shards = aligned_alloc(CACHE_LINE, n * sizeof(shard))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    memset(c->shards, 0, n * sizeof(shard));
    for (i = 0; i < n; i++) {
        shard *s = &c->shards[i];
        uint32_t cap = (uint32_t)(opts->max_entries / n + (i < (uint32_t)(opts->max_entries % n)));
        if (pthread_mutex_init(&s->lock, NULL) != 0) {
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

static void flight_free(flight *f)
{
    cg_part_free(f->part);
    pthread_cond_destroy(&f->cv);
    free(f);
}

/* Drop every entry and ghost of a shard (lock held or no other user). */
static void shard_clear(shard *s)
{
    uint32_t i;
    if (s->table != NULL)
        for (i = 0; i <= s->mask; i++)
            if (s->table[i].part != NULL) {
                cg_part_free(s->table[i].part);
                s->table[i].part = NULL;
            }
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
        shard_clear(s);
        free(s->table);
        free(s->ring);
        if (i < c->ninit)
            pthread_mutex_destroy(&s->lock);
    }
    free(c->shards);
    free(c);
}

/* ---- the operations ----------------------------------------------------------------------- */

int cg_cache_get(cg_cache *c, int64_t handle, int kind, cg_part **out)
{
    uint64_t h = key_hash(handle, kind);
    shard *s = shard_of(c, h);
    int64_t now = c->ttl_ms > 0 ? now_ms() : 0;
    slot *e;
    int err = CG_ENOTFOUND;

    *out = NULL;
    shard_lock(s);
    e = lookup(c, s, (uint32_t)h, handle, kind, now);
    if (e != NULL) {
        if (!(e->pos & SLOT_REF))
            e->pos |= SLOT_REF; /* only write the line when the bit changes */
        *out = part_ref(e->part);
        s->hits++;
        err = 0;
    } else {
        s->misses++;
    }
    shard_unlock(s);
    return err;
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

int cg_cache_fill(cg_cache *c, cg_part *part, uint64_t ticket)
{
    uint64_t h = key_hash(part->handle, part->kind);
    shard *s = shard_of(c, h);
    int64_t now = c->ttl_ms > 0 ? now_ms() : 0;
    int r;
    shard_lock(s);
    r = install(c, s, (uint32_t)h, part, 1, ticket, now);
    shard_unlock(s);
    return r == FILL_CACHED;
}

int cg_cache_put(cg_cache *c, cg_part *part)
{
    uint64_t h = key_hash(part->handle, part->kind);
    shard *s = shard_of(c, h);
    int64_t now = c->ttl_ms > 0 ? now_ms() : 0;
    int r;
    shard_lock(s);
    r = install(c, s, (uint32_t)h, part, 0, 0, now);
    shard_unlock(s);
    return r == FILL_CACHED;
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
    slot *e;

    shard_lock(s);
    s->invalidations++;
    if ((e = find(s, (uint32_t)h, handle, kind)) != NULL) {
        /* a cached version >= `version` already is the floor and stays */
        if (e->part->version < version)
            drop_entry(s, e, version);
    } else {
        ghost_put(s, (uint32_t)h, handle, kind, version);
    }
    shard_unlock(s);
}

void cg_cache_evict(cg_cache *c, int64_t handle, int kind)
{
    uint64_t h = key_hash(handle, kind);
    shard *s = shard_of(c, h);
    slot *e;

    shard_lock(s);
    if ((e = find(s, (uint32_t)h, handle, kind)) != NULL)
        drop_entry(s, e, INT64_MIN);
    shard_unlock(s);
}

void cg_cache_reset(cg_cache *c)
{
    uint32_t i;
    for (i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        shard_lock(s);
        shard_clear(s);
        refuse_old_tickets(s);
        if (i == 0)
            s->resets++;
        shard_unlock(s);
    }
}

/* The leader's part of cg_cache_load: run the loader (without the lock; the lock is held on
 * entry and on return), fill, and run it again while the fill is refused because a newer
 * version is known. 0 with *out a new reference, or an error. *shared is set when waiters may
 * take the result too: a part the cache accepted (or a newer one it holds), or CG_ENOTFOUND.
 * A part refused only for its ticket is good for the leader, whose call began before the
 * reset or forgotten floor, but not for a waiter that may have begun after it. */
static int lead(cg_cache *c, shard *s, uint32_t h, int64_t handle, int kind, cg_cache_loader load,
                void *ctx, cg_part **out, int *shared)
{
    int runs;
    for (runs = 1;; runs++) {
        uint64_t ticket = s->gen;
        cg_part *p = NULL;
        int64_t now;
        slot *e;
        int err;

        s->loads++;
        shard_unlock(s);
        err = load(&p, ctx);
        now = c->ttl_ms > 0 ? now_ms() : 0;
        shard_lock(s);
        if (err < 0) {
            cg_part_free(p);
            *shared = err == CG_ENOTFOUND;
            return err;
        }
        if (p == NULL || p->handle != handle || p->kind != kind) {
            cg_part_free(p);
            return cg_error_set(CG_ERROR, CG_ERRCLASS_CACHE,
                                "cache loader for (%lld, %d) returned no part or another key",
                                (long long)handle, kind);
        }
        switch (install(c, s, h, p, 1, ticket, now)) {
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
        cg_part_free(p);
        /* A newer version is known. If another thread cached it meanwhile, serve that. */
        if ((e = lookup(c, s, h, handle, kind, now)) != NULL) {
            e->pos |= SLOT_REF;
            *shared = 1;
            *out = part_ref(e->part);
            return 0;
        }
        if (runs == MAX_LOAD_RUNS)
            return cg_error_set(CG_ERETRYABLE, CG_ERRCLASS_CACHE,
                                "part (%lld, %d) changed during each of %d reads",
                                (long long)handle, kind, MAX_LOAD_RUNS);
    }
}

int cg_cache_load(cg_cache *c, int64_t handle, int kind, cg_cache_loader load, void *ctx,
                  cg_part **out)
{
    uint64_t h = key_hash(handle, kind);
    shard *s = shard_of(c, h);
    int64_t now = c->ttl_ms > 0 ? now_ms() : 0;
    cg_part *part = NULL;
    flight *f;
    int err = 0, missed = 0, shared = 0;

    assert(load != NULL && out != NULL);
    *out = NULL;
    shard_lock(s);
    for (;;) {
        slot *e = lookup(c, s, (uint32_t)h, handle, kind, now);
        if (e != NULL) {
            if (!missed)
                s->hits++;
            e->pos |= SLOT_REF;
            *out = part_ref(e->part);
            goto unlock;
        }
        if (!missed) {
            s->misses++;
            missed = 1;
        }
        for (f = s->flights; f != NULL; f = f->next)
            if (f->handle == handle && f->kind == kind)
                break;
        if (f == NULL)
            break; /* lead */

        f->waiters++;
        s->load_waits++;
        while (!f->done)
            pthread_cond_wait(&f->cv, &s->lock);
        err = f->shared ? f->err : CG_ERETRYABLE;
        if (err == 0)
            *out = part_ref(f->part);
        else if (err == CG_ENOTFOUND)
            *cg_error__mut() = f->detail;
        if (--f->waiters == 0)
            flight_free(f); /* the leader is gone: the last one out frees */
        if (err == 0 || err == CG_ENOTFOUND)
            goto unlock;
        /* The leader's own result (a failure such as a lost connection, or a read that is good
         * only for the leader): not ours. Try again, perhaps as the leader. */
        err = 0;
        if (c->ttl_ms > 0)
            now = now_ms(); /* time passed while waiting */
    }

    if ((f = calloc(1, sizeof(*f))) == NULL) {
        err = cg_error_nomem();
        goto unlock;
    }
    if (pthread_cond_init(&f->cv, NULL) != 0) {
        free(f);
        err = cg_error_set(CG_ERROR, CG_ERRCLASS_OS, "cannot initialise a condition variable");
        goto unlock;
    }
    f->handle = handle;
    f->kind = kind;
    f->next = s->flights;
    s->flights = f;

    err = lead(c, s, (uint32_t)h, handle, kind, load, ctx, &part, &shared);

    {
        flight **pp = &s->flights;
        while (*pp != f)
            pp = &(*pp)->next;
        *pp = f->next;
    }
    f->done = 1;
    f->err = err;
    f->shared = shared;
    if (err == CG_ENOTFOUND)
        f->detail = *cg_error_last();
    if (f->waiters > 0) {
        if (err == 0 && shared)
            f->part = part_ref(part);
        pthread_cond_broadcast(&f->cv);
    } else {
        flight_free(f);
    }
    *out = part;

unlock:
    shard_unlock(s);
    return err;
}

void cg_cache_stats_get(cg_cache *c, cg_cache_stats *out)
{
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
        shard_unlock(s);
    }
}
