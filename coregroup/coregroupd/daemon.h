/*
 * daemon.h — what coregroupd's files share: the server's environment and counters, and the
 * executor that turns a decoded request into a reply (daemon_ops.c).
 *
 * Private to coregroupd; not part of the installed API.
 */
#ifndef CG_DAEMON_H
#define CG_DAEMON_H

#include <stdatomic.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "coregroup.h"
#include "daemon_request.h"

/* The server as the executor sees it. The core is shared by every worker (the library's
 * cores are thread-safe); the counters are atomics. */
typedef struct cgd_env {
    cg_core *core;
    const char *listen; /* the endpoint as configured */
    int workers;
    int64_t started_ms;         /* CLOCK_MONOTONIC at start, for uptime */
    atomic_ullong requests;     /* requests answered, malformed ones included */
    atomic_ullong errors;       /* of those, answered with "ok": false */
    atomic_ullong malformed;    /* of those, refused by the decoder (code "invalid") */
    atomic_ullong by_code[8];   /* error replies by cgd_code index */
    void (*request_stop)(void); /* called by the "shutdown" op */
} cgd_env;

/* The wire's error codes, in REQUESTS.md's order. */
#define CGD_CODES 8
const char *cgd_code_name(int idx);
/* The wire code index of a library error code (anything unknown is "error"). */
int cgd_code_of(int err);

/* CLOCK_MONOTONIC in milliseconds: the library's cg_clock_mono_ms() (coregroup/sys/clock.h). */
int64_t cgd_mono_ms(void);

/*
 * Run a decoded request against env->core: one call for the resource and name operations
 * (all of a "multi" in one call), none for health, stats, members, audit and shutdown. Returns the
 * reply as a new cJSON object the caller frees with cJSON_Delete() (NULL only when memory ran
 * out); *code gets 0 for an "ok": true reply, else the library's error code.
 */
cJSON *cgd_execute(cgd_env *env, const cg_request *req, int *code);

/*
 * A one-part "get" that the core can answer from its cache without waiting for anything
 * (cg_part_read_cached): the reply, exactly as cgd_execute() would build it, with *code 0. NULL
 * for any other request, or when the part is not cached, the lease has run out, the strategy
 * is not invalidation, or memory ran out: then cgd_execute() must run it. Never blocks, so the
 * broker thread calls it (coregroupd.c, "Cached gets").
 */
cJSON *cgd_execute_cached(cgd_env *env, const cg_request *req, int *code);

/*
 * An error reply: {"v":V,"id":<req's id or null>,"ok":false,"error":{"code":...,"message":...}}
 * (V the request's wire version, 1 when it could not be read)
 * with `err` a library code and the message taken from cg_error_last() (req may be NULL).
 * For a decoder refusal it adds "field" (and "index" inside a multi). New object, caller
 * frees; NULL when memory ran out.
 */
cJSON *cgd_error_reply(const cg_request *req, int err);

/* Print a reply compactly into a new string the caller frees with cJSON_free(); when even that
 * fails, a fixed error reply (static; never freed — check with cgd_reply_is_static()). */
char *cgd_reply_print(const cJSON *reply);
int cgd_reply_is_static(const char *text);

#endif
