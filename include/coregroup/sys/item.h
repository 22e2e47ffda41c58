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

/* One changed part: every cached copy of (handle, part) with a version below `version` is
 * stale. */
typedef struct cg_bus_item {
    int64_t handle;  /* "h": >= 0 */
    int kind;        /* "p": a cg_part_kind */
    int64_t version; /* "v": >= 1 */
} cg_bus_item;

#endif
