/*
 * item.h — one changed part, as every layer names it (private to the library).
 *
 * The same triple is an outbox row's item (schema/), a bus message's item (invalidation/) and
 * what a core applies to its cache (coregroup/). It lives here, below all three, so that none
 * of them has to include another to name it.
 */
#ifndef CG_SYS_ITEM_H
#define CG_SYS_ITEM_H

#include <stdint.h>
#include <string.h>

/*
 * Names and service lookups (wire version 2, invalidation/PROTOCOL.md) are cached and
 * invalidated like parts, under two more kinds of key that share the (handle, kind, version)
 * triple, so the outbox, the bus, the apply path and the cache's floors, tickets, single
 * flight, TTL and reset treat them exactly as they treat parts:
 *
 *  - CG_ITEM_NAMES, "names": handle = a folder's handle; version = the folder's NAMES VERSION
 *    (resources.names_version, migration 0006): the event number (seq) of the last committed
 *    call that changed the listing: a bind or unbind in the folder, an unregister of the
 *    folder or of a resource bound in it. The outbox append sets it at commit, under the
 *    group's row lock, so it follows commit order. The cached value is the folder's whole
 *    listing at that version; `list` is served from it, and so is `lookup` (a name absent
 *    from a cached listing is a cached "not found": the listing is versioned as a whole).
 *  - CG_ITEM_FIND, "find": handle = cg_service_key(service_id), a 53-bit hash of the service
 *    id; version = the event number of the last register or unregister of a resource with a
 *    service id of that key (service_versions, migration 0006). The version belongs to the
 *    KEY, not to the service id, so two service ids that collide share one monotonic version
 *    and the floor rule stays sound; the cached value carries its service id and a hit on
 *    the other id of a colliding pair is a miss. The cached value is `find`'s handle list.
 *
 * A call stages these items with version 0; cg_call_commit gives them the event's number.
 *
 * A name's own row (name_bindings.version) is not a cache key: names are cached per folder
 * because an unbind deletes the row (and its version) while the folder's version survives,
 * and because `list` needs one version for the whole folder anyway.
 */
#define CG_ITEM_NAMES 3 /* after the three cg_part_kind values */
#define CG_ITEM_FIND  4
#define CG_ITEM_COUNT 5

/* One changed key: every cached copy of (handle, kind) with a version below `version` is
 * stale. */
typedef struct cg_bus_item {
    int64_t handle;  /* "h": >= 0 */
    int kind;        /* "p": a cg_part_kind, CG_ITEM_NAMES or CG_ITEM_FIND */
    int64_t version; /* "v": >= 1 */
} cg_bus_item;

/* The item kind's wire name ("specification", ..., "names", "find"), or "?". */
static inline const char *cg_item_kind_name(int kind)
{
    static const char *const names[CG_ITEM_COUNT] = {"specification", "description", "state",
                                                     "names", "find"};
    return kind >= 0 && kind < CG_ITEM_COUNT ? names[kind] : "?";
}

/* The item kind whose wire name is `name`, among the first `count` kinds (CG_PART_COUNT: the
 * parts of wire version 1; CG_ITEM_COUNT: every kind), or -1. */
static inline int cg_item_kind_parse(const char *name, int count)
{
    int k;
    for (k = 0; k < count && k < CG_ITEM_COUNT; k++)
        if (strcmp(name, cg_item_kind_name(k)) == 0)
            return k;
    return -1;
}

/* The cache and wire key of a service id: FNV-1a 64 of its bytes, cut to 53 bits (a bus
 * integer). Every core must compute the same function: it is part of wire version 2. */
static inline int64_t cg_service_key(const char *service_id)
{
    uint64_t h = 14695981039346656037ull;
    const unsigned char *p;
    for (p = (const unsigned char *)service_id; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (int64_t)(h & ((UINT64_C(1) << 53) - 1));
}

#endif
