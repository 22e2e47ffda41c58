/*
 * daemon_request.h — coregroupd's client requests (wire version 1; see REQUESTS.md): the
 * decoded form, the pure decoder from bytes to it, and the encoder back to bytes.
 *
 * Private to the daemon (coregroupd.c, daemon_ops.c), its client (cgctl, which builds every
 * request it sends with the encoder), their tests and the fuzz target; not part of the
 * installed API.
 */
#ifndef CG_DAEMON_REQUEST_H
#define CG_DAEMON_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "coregroup.h"

#define CG_REQ_WIRE_VERSION 1
#define CG_REQ_MAX          (1 << 20)                 /* bytes of one request */
#define CG_REQ_MAX_OPS      1000                      /* operations of one "multi" */
#define CG_REQ_ID_MAX       128                       /* bytes of a string correlation id */
#define CG_REQ_INT_MAX      INT64_C(9007199254740991) /* 2^53 - 1: exact in a double */

/* The operations. The order is the wire's op-name table (cg_req_op_name). */
typedef enum {
    CG_OP_NONE = 0,
    CG_OP_REGISTER,
    CG_OP_UNREGISTER,
    CG_OP_GET,
    CG_OP_UPDATE,
    CG_OP_LOCK,
    CG_OP_BIND,
    CG_OP_UNBIND,
    CG_OP_LIST,
    CG_OP_LOOKUP,
    CG_OP_FIND,
    CG_OP_MULTI,
    CG_OP_HEALTH,
    CG_OP_STATS,
    CG_OP_MEMBERS,
    CG_OP_SHUTDOWN,
    CG_OP_COUNT
} cg_req_op;

/* One operation with its arguments. Strings are owned by the request (NUL-terminated; the
 * decoder refuses NUL bytes in the input, so none is cut short). */
typedef struct {
    cg_req_op op;
    int64_t handle;              /* unregister, get, update, lock */
    int part;                    /* a cg_part_kind; -1 for "every part" (get without "part") */
    int64_t expected;            /* update: the version the client read */
    char *body;                  /* update: the new body as compact JSON text */
    char *kind;                  /* register: NULL means the library's default ("service") */
    char *service_id;            /* register (NULL: none), find (required) */
    char *bodies[CG_PART_COUNT]; /* register: each part's JSON text, NULL means {} */
    int64_t folder;              /* bind, unbind, list, lookup: default CG_ROOT_FOLDER */
    int64_t target;              /* bind */
    char *name;                  /* bind, unbind, lookup */
} cg_req_item;

typedef enum { CG_REQ_ID_NONE = 0, CG_REQ_ID_STRING, CG_REQ_ID_INT } cg_req_id_type;

/* A decoded request. */
typedef struct {
    /* The client's correlation id, echoed in the reply. Filled as soon as it is readable,
     * also when decoding fails later, so that the error reply can carry it. */
    cg_req_id_type id_type;
    char id_str[CG_REQ_ID_MAX + 1];
    int64_t id_int;
    cg_req_item item; /* the operation; item.op == CG_OP_MULTI for a multi */
    cg_req_item *ops; /* multi: its operations */
    size_t n_ops;
    /* Decoding failed: the field that was wrong ("ops[3].handle"; "" for the whole request)
     * and, inside a multi, the operation's index (-1 otherwise). */
    char field[48];
    int op_index;
} cg_request;

/*
 * Decode one request: a pure function, bytes in, a request or a refusal out (no I/O, no
 * state but the calling thread's error detail). `data` need not be NUL-terminated.
 * Returns 0 with *out filled, CG_EINVALID with cg_error_last() naming the field and the
 * problem (message starts with "request: ") and out->id, out->field, out->op_index filled
 * as far as known, or CG_ERROR when memory ran out. Either way the caller releases *out with
 * cg_request_dispose().
 */
int cg_request_decode(cg_request *out, const char *data, size_t len);

/*
 * Encode a request: the inverse of cg_request_decode(), so that decoding what it writes gives
 * back the same request (cg_request_equal). `req` is built the way the decoder fills it (id,
 * item, and for a multi ops/n_ops; field and op_index are ignored); strings must be UTF-8 and
 * bodies JSON texts. Writes one compact JSON object, {"v":1,"id":...,"op":...,<the op's
 * fields>}, integers as exact decimal text and bodies compact (as the decoder leaves them:
 * cJSON_PrintUnformatted of the parsed text), into a new NUL-terminated string at *out that
 * the caller frees with free(); *len (when not NULL) gets its length.
 * Returns 0; CG_EINVALID when the decoder would refuse what `req` describes, with
 * cg_error_last() naming the field as the decoder would (request: field "ops[2].body": not a
 * JSON text), *out NULL; CG_ERROR when memory ran out.
 */
int cg_request_encode(char **out, size_t *len, const cg_request *req);

/* Free what a decoded request owns (not the struct itself). Accepts NULL. */
void cg_request_dispose(cg_request *req);

/* 1 when two requests say the same (id, operation and every field that operation has;
 * multi: the same operations in order), else 0. For tests and the fuzz target. */
int cg_request_equal(const cg_request *a, const cg_request *b);

/* The wire name of an op ("get"), or "?" for anything else. */
const char *cg_req_op_name(int op);

#endif
