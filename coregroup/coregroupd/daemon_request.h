/*
 * daemon_request.h — coregroupd's client requests (wire versions 1 and 2; see REQUESTS.md):
 * the decoded form, the pure decoder from bytes to it, and the encoder back to bytes.
 * Version 2 is version 1 plus the operation "audit": every version-1 request means the same
 * at version 2, and "audit" exists only at version 2.
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

#define CG_REQ_WIRE_VERSION     1         /* the first wire version: every op but audit */
#define CG_REQ_WIRE_VERSION_MAX 2         /* the highest this codec reads and writes: 1 + audit */
#define CG_REQ_AUDIT_DEFAULT    100       /* audit's "max" when the request has none */
#define CG_REQ_MAX              (1 << 20) /* bytes of one request */
#define CG_REQ_MAX_OPS          1000      /* operations of one "multi" */
#define CG_REQ_ID_MAX           128       /* bytes of a string correlation id */
#define CG_REQ_INT_MAX          INT64_C(9007199254740991) /* 2^53 - 1: exact in a double */

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
    CG_OP_AUDIT, /* wire version 2 */
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
    int64_t max;                 /* audit: entries to compare, 1..CG_AUDIT_MAX_ENTRIES */
} cg_req_item;

typedef enum { CG_REQ_ID_NONE = 0, CG_REQ_ID_STRING, CG_REQ_ID_INT } cg_req_id_type;

/* A decoded request. */
typedef struct {
    /* The client's correlation id, echoed in the reply. Filled as soon as it is readable,
     * also when decoding fails later, so that the error reply can carry it. */
    cg_req_id_type id_type;
    char id_str[CG_REQ_ID_MAX + 1];
    int64_t id_int;
    /* The wire version: what the decoder read (1 or 2, as soon as it is known; the reply
     * carries it), and what the encoder writes when it is above the op's own
     * (cg_req_op_version); 0 when building a request: the lowest version that carries it. */
    int version;
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
 * bodies JSON texts. Writes one compact JSON object, {"v":V,"id":...,"op":...,<the op's
 * fields>}, where V is the lowest wire version that has the op (1, or 2 for audit: a client
 * keeps speaking version 1 to daemons that know only that) unless req->version asks for a
 * higher one, integers as exact decimal text and bodies compact (as the decoder leaves them:
 * cJSON_PrintUnformatted of the parsed text), into a new NUL-terminated string at *out that
 * the caller frees with free(); *len (when not NULL) gets its length.
 * Returns 0; CG_EINVALID when the decoder would refuse what `req` describes, with
 * cg_error_last() naming the field as the decoder would (request: field "ops[2].body": not a
 * JSON text), *out NULL; CG_ERROR when memory ran out.
 */
int cg_request_encode(char **out, size_t *len, const cg_request *req);

/* Free what a decoded request owns (not the struct itself). Accepts NULL. */
void cg_request_dispose(cg_request *req);

/* 1 when two requests say the same (id, wire version as the encoder would write it,
 * operation and every field that operation has; multi: the same operations in order), else 0. For
 * tests and the fuzz target. */
int cg_request_equal(const cg_request *a, const cg_request *b);

/* The wire name of an op ("get"), or "?" for anything else. */
const char *cg_req_op_name(int op);

/* The lowest wire version that has the op: 2 for audit, 1 for every other op (and anything
 * that is no op). */
int cg_req_op_version(int op);

#endif
