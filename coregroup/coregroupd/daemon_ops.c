/*
 * daemon_ops.c — coregroupd's executor: a decoded request in, one call against the core, a
 * reply out (the reply format is REQUESTS.md's).
 *
 * Rules:
 *  - Every resource or name request is exactly ONE call, i.e. one transaction: begin, the
 *    operation, commit; any failure aborts it, so nothing of a failed request is kept
 *    (invariant I3). A "get" of one part is cg_part_read(), which is also exactly one call,
 *    and costs no round trip when the part is cached.
 *  - A "multi" runs all its operations in ONE call. The first operation that fails aborts
 *    the call — also for errors that would leave a library call usable (not found, exists,
 *    invalid): all or nothing is the promise, so nothing is committed and the reply names the
 *    index of the operation that failed and why. Later operations are not run.
 *  - Nothing is retried here. A stale update is the client's to resolve (re-read, merge,
 *    retry), so the reply carries the version the repository holds ("actual"); a retryable
 *    failure is reported as "retryable" and the client decides. The library already retries
 *    a call's first statement across a reconnect ([retry] in repository.ini).
 *  - health, stats, members and shutdown are no calls: they read the core's state (health
 *    and members with one statement each). Neither is audit (wire version 2): one statement
 *    comparing a sample of the cache with the repository (cg_core_audit).
 *  - The error detail is copied from cg_error_last() right after the failing operation,
 *    before the call is aborted, so the reply names the real cause.
 *
 * Integers go into replies as exact decimal text (cJSON's number printer rounds near 2^53),
 * and part bodies as the raw JSON text the repository or the call holds (valid JSON: the
 * library checks every body it writes).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "coregroup/sys/clock.h"
#include "coregroup/sys/error.h"

static const char *const code_names[CGD_CODES] = {"stale",     "not-found", "exists", "invalid",
                                                  "retryable", "degraded",  "fenced", "error"};

const char *cgd_code_name(int idx)
{
    return idx >= 0 && idx < CGD_CODES ? code_names[idx] : "error";
}

int cgd_code_of(int err)
{
    switch (err) {
    case CG_ESTALE:
        return 0;
    case CG_ENOTFOUND:
        return 1;
    case CG_EEXISTS:
        return 2;
    case CG_EINVALID:
        return 3;
    case CG_ERETRYABLE:
        return 4;
    case CG_EDEGRADED:
        return 5;
    case CG_EFENCED:
        return 6;
    default:
        return 7;
    }
}

int64_t cgd_mono_ms(void)
{
    return cg_clock_mono_ms();
}

/* ---- building replies ----------------------------------------------------------------- */

/* The cJSON helpers return NULL on OOM; `ok` is threaded through so one check at the end
 * catches any failure. */
static int add_int(cJSON *o, const char *k, int64_t v)
{
    char t[24];
    snprintf(t, sizeof(t), "%" PRId64, v);
    return cJSON_AddRawToObject(o, k, t) != NULL;
}

static int add_str(cJSON *o, const char *k, const char *s)
{
    return (s ? cJSON_AddStringToObject(o, k, s) : cJSON_AddNullToObject(o, k)) != NULL;
}

static int add_bool(cJSON *o, const char *k, int b)
{
    return cJSON_AddBoolToObject(o, k, b != 0) != NULL;
}

static int add_raw(cJSON *o, const char *k, const char *json)
{
    return cJSON_AddRawToObject(o, k, json) != NULL;
}

static int add_int_to_array(cJSON *a, int64_t v)
{
    char t[24];
    cJSON *n;
    snprintf(t, sizeof(t), "%" PRId64, v);
    if ((n = cJSON_CreateRaw(t)) == NULL)
        return 0;
    cJSON_AddItemToArray(a, n);
    return 1;
}

/* {"v":1,"id":...,"ok":b} */
static cJSON *reply_new(const cg_request *req, int ok)
{
    cJSON *r = cJSON_CreateObject();
    /* in the request's own wire version (1 when it could not be read) */
    int good =
        r != NULL && add_int(r, "v", req && req->version > 0 ? req->version : CG_REQ_WIRE_VERSION);
    if (good) {
        if (req && req->id_type == CG_REQ_ID_STRING)
            good = add_str(r, "id", req->id_str);
        else if (req && req->id_type == CG_REQ_ID_INT)
            good = add_int(r, "id", req->id_int);
        else
            good = cJSON_AddNullToObject(r, "id") != NULL;
    }
    good = good && add_bool(r, "ok", ok);
    if (!good) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

/* The "error" object from an error detail (a copy of cg_error_last()). */
static cJSON *error_object(int err, const cg_error *e)
{
    cJSON *o = cJSON_CreateObject();
    int ok = o != NULL && add_str(o, "code", cgd_code_name(cgd_code_of(err))) &&
             add_str(o, "message", e->message[0] ? e->message : cg_error_name(err));
    if (ok && err == CG_ESTALE) {
        ok = add_int(o, "handle", e->handle) && add_str(o, "part", cg_part_kind_name(e->part)) &&
             add_int(o, "expected", e->expected_version) &&
             (e->actual_version >= 0 ? add_int(o, "actual", e->actual_version)
                                     : cJSON_AddNullToObject(o, "actual") != NULL);
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *cgd_error_reply(const cg_request *req, int err)
{
    cg_error e = *cg_error_last();
    cJSON *r = reply_new(req, 0), *eo = error_object(err, &e);
    int ok = r != NULL && eo != NULL;
    if (ok) {
        cJSON_AddItemToObject(r, "error", eo);
        eo = NULL;
        if (req && req->field[0]) {
            cJSON *o = cJSON_GetObjectItemCaseSensitive(r, "error");
            ok = add_str(o, "field", req->field) &&
                 (req->op_index < 0 || add_int(o, "index", req->op_index));
        }
    }
    cJSON_Delete(eo);
    if (!ok) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

static const char static_reply[] =
    "{\"v\":1,\"id\":null,\"ok\":false,\"error\":{\"code\":\"error\",\"message\":\"out of "
    "memory\"}}";

char *cgd_reply_print(const cJSON *reply)
{
    char *text = reply ? cJSON_PrintUnformatted(reply) : NULL;
    return text ? text : (char *)static_reply;
}

int cgd_reply_is_static(const char *text)
{
    return text == static_reply;
}

/* ---- operations ----------------------------------------------------------------------- */

/* The fields of one part: handle, part, version, body. */
static int add_part(cJSON *o, const cg_part *p)
{
    return add_int(o, "handle", cg_part_handle(p)) &&
           add_str(o, "part", cg_part_kind_name(cg_part_kind_of(p))) &&
           add_int(o, "version", cg_part_version(p)) && add_raw(o, "body", cg_part_body(p));
}

/* ---- a cached get, answered by the broker ---------------------------------------------- */

typedef struct {
    cJSON *reply;
    int ok;
} cached_reply;

static void reply_part(const cg_part *p, void *arg)
{
    cached_reply *c = arg;
    c->ok = add_part(c->reply, p); /* copies what it needs: p is lent only until we return */
}

cJSON *cgd_execute_cached(cgd_env *env, const cg_request *req, int *code)
{
    const cg_req_item *it = &req->item;
    cached_reply c;

    if (it->op != CG_OP_GET || it->part < 0 || (c.reply = reply_new(req, 1)) == NULL)
        return NULL;
    c.ok = 0;
    if (cg_part_read_cached(env->core, it->handle, (cg_part_kind)it->part, reply_part, &c) != 0 ||
        !c.ok) {
        cJSON_Delete(c.reply); /* a worker runs it, and reports whatever goes wrong */
        return NULL;
    }
    *code = 0;
    return c.reply;
}

/* The whole resource: kind, service id, and every part with its version. */
static int get_resource(cJSON *res, cg_call *call, int64_t handle)
{
    cg_resource r;
    cJSON *parts;
    int err, k;

    if ((err = cg_resource_get(&r, call, handle)) < 0)
        return err;
    if (!add_int(res, "handle", handle) || !add_str(res, "kind", r.kind) ||
        !add_str(res, "service_id", r.service_id[0] ? r.service_id : NULL) ||
        (parts = cJSON_AddObjectToObject(res, "parts")) == NULL)
        return cg_error_nomem();
    for (k = 0; k < CG_PART_COUNT; k++) {
        const cg_part *p; /* lent by the call */
        cJSON *po;
        int ok;
        if ((err = cg_part_get(&p, call, handle, (cg_part_kind)k)) < 0)
            return err;
        ok = (po = cJSON_AddObjectToObject(parts, cg_part_kind_name(k))) != NULL &&
             add_int(po, "version", cg_part_version(p)) && add_raw(po, "body", cg_part_body(p));
        if (!ok)
            return cg_error_nomem();
    }
    return 0;
}

/* Run one resource or name operation inside `call`, adding its result fields to `res`.
 * Returns 0 or the library's error (its detail in cg_error_last()). */
static int run_item(cJSON *res, cg_call *call, const cg_req_item *it)
{
    const cg_part *p = NULL; /* lent by the call */
    int64_t v = 0;
    int err = 0, ok = 1;
    size_t i;

    switch (it->op) {
    case CG_OP_REGISTER: {
        cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
        o.kind = it->kind;
        o.service_id = it->service_id;
        o.specification = it->bodies[CG_PART_SPECIFICATION];
        o.description = it->bodies[CG_PART_DESCRIPTION];
        o.state = it->bodies[CG_PART_STATE];
        if ((err = cg_resource_create(&v, call, &o)) == 0)
            ok = add_int(res, "handle", v);
        break;
    }
    case CG_OP_UNREGISTER:
        if ((err = cg_resource_delete(call, it->handle)) == 0)
            ok = add_int(res, "handle", it->handle);
        break;
    case CG_OP_GET:
        if (it->part < 0)
            return get_resource(res, call, it->handle);
        if ((err = cg_part_get(&p, call, it->handle, (cg_part_kind)it->part)) == 0)
            ok = add_part(res, p);
        break;
    case CG_OP_LOCK:
        if ((err = cg_part_lock(&p, call, it->handle, (cg_part_kind)it->part)) == 0)
            ok = add_part(res, p);
        break;
    case CG_OP_UPDATE:
        if ((err = cg_part_update(&v, call, it->handle, (cg_part_kind)it->part, it->expected,
                                  it->body)) == 0)
            ok = add_int(res, "handle", it->handle) &&
                 add_str(res, "part", cg_part_kind_name(it->part)) && add_int(res, "version", v);
        break;
    case CG_OP_BIND:
        if ((err = cg_name_bind(call, it->folder, it->name, it->target)) == 0)
            ok = add_int(res, "folder", it->folder) && add_str(res, "name", it->name) &&
                 add_int(res, "target", it->target);
        break;
    case CG_OP_UNBIND:
        if ((err = cg_name_unbind(call, it->folder, it->name)) == 0)
            ok = add_int(res, "folder", it->folder) && add_str(res, "name", it->name);
        break;
    case CG_OP_LOOKUP:
        if ((err = cg_name_lookup(&v, call, it->folder, it->name)) == 0)
            ok = add_int(res, "folder", it->folder) && add_str(res, "name", it->name) &&
                 add_int(res, "target", v);
        break;
    case CG_OP_LIST: {
        cg_name_list nl = {NULL, 0};
        cJSON *arr;
        if ((err = cg_name_list_get(&nl, call, it->folder)) == 0) {
            ok = add_int(res, "folder", it->folder) &&
                 (arr = cJSON_AddArrayToObject(res, "names")) != NULL;
            for (i = 0; ok && i < nl.n; i++) {
                cJSON *e = cJSON_CreateObject();
                ok = e != NULL;
                if (ok) {
                    cJSON_AddItemToArray(arr, e);
                    ok = add_str(e, "name", nl.entries[i].name) &&
                         add_int(e, "target", nl.entries[i].target);
                }
            }
        }
        cg_name_list_dispose(&nl);
        break;
    }
    case CG_OP_FIND: {
        cg_handle_list hl = {NULL, 0};
        cJSON *arr;
        if ((err = cg_resource_find(&hl, call, it->service_id)) == 0) {
            ok = add_str(res, "service_id", it->service_id) &&
                 (arr = cJSON_AddArrayToObject(res, "handles")) != NULL;
            for (i = 0; ok && i < hl.n; i++)
                ok = add_int_to_array(arr, hl.handles[i]);
        }
        cg_handle_list_dispose(&hl);
        break;
    }
    default:
        err = cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT, "operation %s is not a call",
                           cg_req_op_name(it->op));
        break;
    }
    if (err == 0 && !ok)
        err = cg_error_set(CG_ERROR, CG_ERRCLASS_NOMEMORY, "out of memory");
    return err;
}

/* Abort `call` after `err`, keeping err's detail (the abort must not replace it). */
static void abort_keeping(cg_call *call, cg_error *saved)
{
    *saved = *cg_error_last();
    cg_call_abort(call);
}

/* An error reply from a saved detail (and for a multi, the failing op's index and name). */
static cJSON *error_reply_from(const cg_request *req, int err, const cg_error *e, int index)
{
    cJSON *r = reply_new(req, 0), *eo = error_object(err, e);
    int ok = r != NULL && eo != NULL;
    if (ok) {
        cJSON_AddItemToObject(r, "error", eo);
        if (index >= 0)
            ok = add_int(eo, "index", index) &&
                 add_str(eo, "op", cg_req_op_name(req->ops[index].op));
        eo = NULL;
    }
    cJSON_Delete(eo);
    if (!ok) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

/* One resource or name request: one call. */
static cJSON *exec_single(cgd_env *env, const cg_request *req, int *code)
{
    const cg_req_item *it = &req->item;
    cJSON *reply = reply_new(req, 1);
    cg_call *call = NULL;
    cg_error saved;
    int err;

    if (reply == NULL)
        return NULL;
    if (it->op == CG_OP_GET && it->part >= 0) {
        cg_part *p = NULL;
        if ((err = cg_part_read(&p, env->core, it->handle, (cg_part_kind)it->part)) == 0 &&
            !add_part(reply, p))
            err = cg_error_set(CG_ERROR, CG_ERRCLASS_NOMEMORY, "out of memory");
        cg_part_free(p);
        saved = *cg_error_last();
    } else if ((err = cg_call_begin(&call, env->core)) < 0) {
        saved = *cg_error_last();
    } else if ((err = run_item(reply, call, it)) < 0) {
        abort_keeping(call, &saved);
    } else {
        err = cg_call_commit(call);
        saved = *cg_error_last();
    }
    *code = err;
    if (err == 0)
        return reply;
    cJSON_Delete(reply);
    return error_reply_from(req, err, &saved, -1);
}

/* A multi: every operation in one call, all or nothing. */
static cJSON *exec_multi(cgd_env *env, const cg_request *req, int *code)
{
    cJSON *reply = reply_new(req, 1), *results;
    cg_call *call = NULL;
    cg_error saved;
    size_t i;
    int err = 0, failed_at = -1;

    if (reply == NULL || (results = cJSON_AddArrayToObject(reply, "results")) == NULL) {
        cJSON_Delete(reply);
        return NULL;
    }
    if ((err = cg_call_begin(&call, env->core)) < 0) {
        saved = *cg_error_last();
        goto done;
    }
    for (i = 0; i < req->n_ops; i++) {
        cJSON *res = cJSON_CreateObject();
        if (res == NULL) {
            err = cg_error_set(CG_ERROR, CG_ERRCLASS_NOMEMORY, "out of memory");
        } else {
            cJSON_AddItemToArray(results, res);
            if (!add_str(res, "op", cg_req_op_name(req->ops[i].op)))
                err = cg_error_set(CG_ERROR, CG_ERRCLASS_NOMEMORY, "out of memory");
            else
                err = run_item(res, call, &req->ops[i]);
        }
        if (err < 0) {
            failed_at = (int)i;
            abort_keeping(call, &saved);
            goto done;
        }
    }
    err = cg_call_commit(call);
    saved = *cg_error_last();
done:
    *code = err;
    if (err == 0)
        return reply;
    cJSON_Delete(reply);
    return error_reply_from(req, err, &saved, failed_at);
}

/* Cut off a UTF-8 sequence that truncation left incomplete at the end of s, so that a
 * shortened text is still valid UTF-8 in the reply. */
static void trim_partial_utf8(char *s)
{
    size_t n = strlen(s), i = n, need;
    unsigned char lead;

    while (i > 0 && n - i < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0 || (lead = (unsigned char)s[i - 1]) < 0xC0)
        return;
    need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
    if (n - (i - 1) < need)
        s[i - 1] = '\0';
}

static cJSON *exec_health(cgd_env *env, const cg_request *req, int *code)
{
    cg_core_health h;
    cg_error saved;
    cJSON *reply;
    char reason[sizeof(h.reason) + 1];
    int err = cg_core_health_get(&h, env->core), ok;

    saved = *cg_error_last();
    /* The library NUL-terminates it; the wire does not depend on that. A core that is not
     * healthy always says why: without a reason of its own, the error's message is one. */
    memcpy(reason, h.reason, sizeof(h.reason));
    reason[sizeof(h.reason)] = '\0';
    if (err < 0 && reason[0] == '\0')
        snprintf(reason, sizeof(reason), "%.*s", (int)sizeof(reason) - 1,
                 saved.message[0] ? saved.message : cg_error_name(err));
    trim_partial_utf8(reason);
    *code = err;
    reply = err == 0 ? reply_new(req, 1) : error_reply_from(req, err, &saved, -1);
    ok = reply != NULL && add_str(reply, "core", cg_core_name(env->core)) &&
         add_str(reply, "group", cg_core_group(env->core)) &&
         add_int(reply, "incarnation", cg_core_incarnation(env->core)) &&
         add_bool(reply, "repository_ok", h.repository_ok) &&
         add_bool(reply, "bus_silent", h.bus_silent) && add_bool(reply, "degraded", h.degraded) &&
         add_bool(reply, "fenced", h.fenced) && add_int(reply, "applied_seq", h.applied_seq) &&
         add_int(reply, "event_seq", h.event_seq) &&
         add_int(reply, "proof_age_ms", h.proof_age_ms) &&
         add_int(reply, "max_staleness_ms", h.max_staleness_ms) && add_str(reply, "reason", reason);
    if (!ok) {
        cJSON_Delete(reply);
        return NULL;
    }
    return reply;
}

static cJSON *exec_stats(cgd_env *env, const cg_request *req, int *code)
{
    cg_core_stats s;
    cJSON *reply = reply_new(req, 1), *o, *d, *bc;
    int ok, i;

    *code = 0;
    cg_core_stats_get(env->core, &s);
    ok = reply != NULL && add_str(reply, "core", cg_core_name(env->core)) &&
         add_str(reply, "group", cg_core_group(env->core)) &&
         add_int(reply, "incarnation", cg_core_incarnation(env->core)) &&
         (o = cJSON_AddObjectToObject(reply, "stats")) != NULL;
    /* Every field of cg_core_stats under its C name, in the struct's order (REQUESTS.md
     * promises all of them; test_daemon.c compares this reply with core.h). */
#define U(f) (ok = ok && add_int(o, #f, (int64_t)s.f))
    U(calls_committed);
    U(calls_aborted);
    U(cache_hits);
    U(cache_misses);
    U(cache_fills);
    U(cache_fills_refused);
    U(cache_evictions);
    U(cache_expirations);
    U(cache_entries);
    U(stale_errors);
    U(invalidations_applied);
    U(cache_resets);
    U(repository_reads);
    U(repository_reconnects);
    U(invalidations_sent);
    U(invalidations_unsent);
    U(invalidations_received);
    U(duplicates);
    U(gaps);
    U(catchups);
    U(messages_dropped);
    U(heartbeats_received);
    U(polls);
    U(applied_seq);
    U(degraded);
    U(reordered);
    U(freshness_proofs);
    U(lease_misses);
    U(proof_age_ms);
    U(members_suspected);
    U(members_failed);
    U(recoveries);
    U(recovered_events);
    U(rejoins);
    U(bus_conflicts);
#undef U
    ok = ok && (d = cJSON_AddObjectToObject(reply, "daemon")) != NULL &&
         add_int(d, "uptime_s", (cgd_mono_ms() - env->started_ms) / 1000) &&
         add_int(d, "workers", env->workers) &&
         add_int(d, "requests", (int64_t)atomic_load(&env->requests)) &&
         add_int(d, "errors", (int64_t)atomic_load(&env->errors)) &&
         add_int(d, "malformed", (int64_t)atomic_load(&env->malformed)) &&
         (bc = cJSON_AddObjectToObject(d, "errors_by_code")) != NULL;
    for (i = 0; ok && i < CGD_CODES; i++)
        ok = add_int(bc, cgd_code_name(i), (int64_t)atomic_load(&env->by_code[i]));
    if (!ok) {
        cJSON_Delete(reply);
        return NULL;
    }
    return reply;
}

static cJSON *exec_members(cgd_env *env, const cg_request *req, int *code)
{
    cg_member_list ml = {NULL, 0, 0};
    cg_error saved;
    cJSON *reply = NULL, *arr;
    size_t i;
    int err = cg_core_members(&ml, env->core), ok;

    saved = *cg_error_last();
    *code = err;
    if (err < 0) {
        cg_member_list_dispose(&ml);
        return error_reply_from(req, err, &saved, -1);
    }
    reply = reply_new(req, 1);
    ok = reply != NULL && add_str(reply, "core", cg_core_name(env->core)) &&
         add_str(reply, "group", cg_core_group(env->core)) &&
         add_int(reply, "event_seq", ml.event_seq) &&
         (arr = cJSON_AddArrayToObject(reply, "members")) != NULL;
    for (i = 0; ok && i < ml.n; i++) {
        const cg_member *m = &ml.members[i];
        cJSON *e = cJSON_CreateObject();
        if ((ok = e != NULL) != 0) {
            cJSON_AddItemToArray(arr, e);
            ok = add_str(e, "name", m->name) && add_int(e, "incarnation", m->incarnation) &&
                 add_str(e, "state", m->state) && add_str(e, "host", m->host) &&
                 add_int(e, "pid", m->pid) && add_int(e, "heartbeat_age_ms", m->heartbeat_age_ms) &&
                 add_int(e, "applied_seq", m->applied_seq) && add_int(e, "lag", m->lag);
        }
    }
    cg_member_list_dispose(&ml);
    if (!ok) {
        cJSON_Delete(reply);
        return NULL;
    }
    return reply;
}

/* ---- audit (wire version 2) ----------------------------------------------------------- */

/* An integer, or null for -1 (gone, unknown, none). */
static int add_int_or_null(cJSON *o, const char *k, int64_t v)
{
    return v < 0 ? cJSON_AddNullToObject(o, k) != NULL : add_int(o, k, v);
}

/* audit: compare up to `max` sampled cache entries with the repository (cg_core_audit, one
 * round trip); the totals, and in "entries" only the entries that are not consistent. */
static cJSON *exec_audit(cgd_env *env, const cg_request *req, int *code)
{
    cg_audit_report rep;
    cg_error saved;
    cJSON *reply, *arr = NULL;
    size_t i;
    int err = cg_core_audit(&rep, env->core, (size_t)req->item.max), ok;

    saved = *cg_error_last();
    *code = err;
    if (err < 0)
        return error_reply_from(req, err, &saved, -1);
    reply = reply_new(req, 1);
    ok = reply != NULL && add_str(reply, "core", cg_core_name(env->core)) &&
         add_str(reply, "group", cg_core_group(env->core)) &&
         add_int(reply, "incarnation", cg_core_incarnation(env->core)) &&
         add_int(reply, "cache_entries", (int64_t)rep.cache_entries) &&
         add_int(reply, "checked", (int64_t)rep.checked) &&
         add_int(reply, "consistent", (int64_t)rep.consistent) &&
         add_int(reply, "older", (int64_t)rep.older) &&
         add_int(reply, "newer", (int64_t)rep.newer) &&
         add_int(reply, "past_bound", (int64_t)rep.past_bound) &&
         add_int_or_null(reply, "oldest_age_ms", rep.oldest_age_ms) &&
         add_int(reply, "max_staleness_ms", rep.max_staleness_ms) &&
         add_bool(reply, "lease_fresh", rep.lease_fresh) &&
         add_int(reply, "violations", rep.lease_fresh ? (int64_t)rep.past_bound : 0) &&
         (arr = cJSON_AddArrayToObject(reply, "entries")) != NULL;
    for (i = 0; ok && i < rep.checked; i++) {
        const cg_audit_entry *e = &rep.entries[i];
        cJSON *o;
        if (e->state == CG_AUDIT_CONSISTENT)
            continue;
        if ((ok = (o = cJSON_CreateObject()) != NULL) != 0) {
            cJSON_AddItemToArray(arr, o);
            ok = add_int(o, "handle", e->handle) && add_str(o, "part", e->kind) &&
                 add_str(o, "state", e->state == CG_AUDIT_OLDER ? "older" : "newer") &&
                 add_int(o, "cached_version", e->cached_version) &&
                 add_int_or_null(o, "repository_version", e->repository_version) &&
                 add_int_or_null(o, "age_ms", e->age_ms) &&
                 add_bool(o, "past_bound", e->past_bound);
        }
    }
    cg_audit_report_dispose(&rep);
    if (!ok) {
        cJSON_Delete(reply);
        return NULL;
    }
    return reply;
}

cJSON *cgd_execute(cgd_env *env, const cg_request *req, int *code)
{
    cJSON *reply;
    *code = 0;
    switch (req->item.op) {
    case CG_OP_MULTI:
        return exec_multi(env, req, code);
    case CG_OP_HEALTH:
        return exec_health(env, req, code);
    case CG_OP_STATS:
        return exec_stats(env, req, code);
    case CG_OP_MEMBERS:
        return exec_members(env, req, code);
    case CG_OP_AUDIT:
        return exec_audit(env, req, code);
    case CG_OP_SHUTDOWN:
        if ((reply = reply_new(req, 1)) != NULL && !add_bool(reply, "stopping", 1)) {
            cJSON_Delete(reply);
            reply = NULL;
        }
        if (env->request_stop)
            env->request_stop();
        return reply;
    default:
        return exec_single(env, req, code);
    }
}
