/*
 * part.c — the API's value objects: cg_part, an immutable, reference-counted snapshot of one
 * metadata part, and the lists that calls return (members, handles, names).
 *
 * One allocation holds the header and the body, so reading a cached part touches one object.
 * The last cg_part_free() frees it; the cache holds one reference per cached entry, dropped a
 * grace period after the entry leaves (coregroup/reclaim.h), since hits borrow parts without
 * taking a reference of their own.
 *
 * Why this file is in include/coregroup/sys/: the repository layer (schema/) builds these
 * values from rows and the core (coregroup/) caches and hands them out. Living below both,
 * beside the public header that declares them, it lets schema/ depend on neither of the
 * other two folders. Not installed: sys/ is the library's own foundation, not API.
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "coregroup/sys/error.h"
#include "coregroup/sys/part.h"

static const char *const kind_names[CG_PART_COUNT] = {"specification", "description", "state"};

const char *cg_part_kind_name(int kind)
{
    return kind >= 0 && kind < CG_PART_COUNT ? kind_names[kind] : "?";
}

int cg_part_kind_parse(cg_part_kind *out, const char *name)
{
    int k;
    for (k = 0; name && k < CG_PART_COUNT; k++)
        if (strcmp(name, kind_names[k]) == 0) {
            *out = (cg_part_kind)k;
            return 0;
        }
    return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                        "unknown part \"%s\" (expected specification, description or state)",
                        name ? name : "(null)");
}

cg_part *cg_part__new(int64_t handle, int kind, int64_t version, const char *body, size_t len)
{
    cg_part *p = malloc(sizeof(*p) + len + 1);
    if (p == NULL) {
        cg_error_nomem();
        return NULL;
    }
    atomic_init(&p->refs, 1);
    p->kind = kind;
    p->handle = handle;
    p->version = version;
    p->len = len;
    memcpy(p->body, body, len);
    p->body[len] = '\0';
    return p;
}

cg_part *cg_part__ref(cg_part *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

cg_part *cg_part_ref(const cg_part *p)
{
    return cg_part__ref((cg_part *)p); /* only the count changes: the rest is immutable */
}

void cg_part_free(cg_part *p)
{
    if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        free(p);
}

int64_t cg_part_version(const cg_part *p)
{
    return p->version;
}

int64_t cg_part_handle(const cg_part *p)
{
    return p->handle;
}

cg_part_kind cg_part_kind_of(const cg_part *p)
{
    return (cg_part_kind)p->kind;
}

const char *cg_part_body(const cg_part *p)
{
    return p->body;
}

size_t cg_part_body_len(const cg_part *p)
{
    return p->len;
}

cJSON *cg_part_json(const cg_part *p)
{
    return cJSON_ParseWithLength(p->body, p->len);
}

/* ---- the lists calls return -------------------------------------------------------- */

void cg_member_list_dispose(cg_member_list *list)
{
    if (list == NULL)
        return;
    free(list->members);
    list->members = NULL;
    list->n = 0;
}

void cg_handle_list_dispose(cg_handle_list *list)
{
    if (list == NULL)
        return;
    free(list->handles);
    list->handles = NULL;
    list->n = 0;
}

void cg_name_list_dispose(cg_name_list *list)
{
    size_t i;
    if (list == NULL)
        return;
    for (i = 0; i < list->n; i++)
        free(list->entries[i].name);
    free(list->entries);
    list->entries = NULL;
    list->n = 0;
}
