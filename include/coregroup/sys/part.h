/*
 * part.h — the body of cg_part (private).
 *
 * A cg_part is immutable after creation and shared by reference count between the cache and
 * every caller that holds it, so a cache hit hands out a pointer without copying the body.
 * The count is atomic; everything else is read-only, so no lock is needed to read a part.
 */
#ifndef CG_PART_H
#define CG_PART_H

#include <stdatomic.h>

#include "coregroup/core.h"

struct cg_part {
    atomic_uint refs;
    int kind; /* cg_part_kind */
    int64_t handle;
    int64_t version;
    size_t len;
    char body[]; /* len bytes of JSON text and a NUL */
};

/* A new part holding a copy of body[0..len) with one reference; NULL when out of memory
 * (cg_error_last() is set). */
cg_part *cg_part__new(int64_t handle, int kind, int64_t version, const char *body, size_t len);

/* Take another reference; returns p. */
cg_part *cg_part__ref(cg_part *p);

#endif
