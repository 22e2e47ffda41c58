/*
 * fuzz_request.c — libFuzzer target for cg_request_decode(), the decoder of coregroupd's
 * client requests (REQUESTS.md).
 *
 * Built only with -DCG_FUZZ=ON (clang). The input is one request frame's bytes, not
 * NUL-terminated. The decoder must return 0 or CG_EINVALID (CG_ERROR only when memory runs
 * out), never crash, never read outside the buffer and never leak. What it accepts must be
 * whole: an op in range, the strings each op needs present, a multi with 1 to
 * CG_REQ_MAX_OPS operations none of which is a multi or an administrative op; what it refuses
 * must carry a one-line message starting with "request:". And what it accepts must survive the
 * round trip through the encoder (cgctl's): encoding it and decoding that gives the same
 * request.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_item(const cg_req_item *it, int in_multi)
{
    if (it->op <= CG_OP_NONE || it->op >= CG_OP_COUNT || (in_multi && it->op >= CG_OP_MULTI))
        abort();
    switch (it->op) {
    case CG_OP_UPDATE:
        if (it->body == NULL || it->expected < 1 || it->part < 0 || it->part >= CG_PART_COUNT)
            abort();
        break;
    case CG_OP_LOCK:
        if (it->part < 0 || it->part >= CG_PART_COUNT)
            abort();
        break;
    case CG_OP_BIND:
    case CG_OP_UNBIND:
    case CG_OP_LOOKUP:
        if (it->name == NULL)
            abort();
        break;
    case CG_OP_FIND:
        if (it->service_id == NULL)
            abort();
        break;
    case CG_OP_AUDIT:
        if (it->max < 1 || it->max > CG_AUDIT_MAX_ENTRIES)
            abort();
        break;
    default:
        break;
    }
    if (it->handle < 0 || it->folder < 0 || it->target < 0)
        abort();
}

/* Encode an accepted request and decode it again: the same request, or abort. Only the size
 * limit may stop it (a body's number can print longer than it was written: 1e300 as 1e+300). */
static void check_round_trip(const cg_request *req)
{
    cg_request again;
    char *text;
    size_t len;
    int err = cg_request_encode(&text, &len, req);
    if (err == CG_EINVALID && strstr(cg_error_last()->message, "more than the limit") == NULL)
        abort();
    if (err < 0)
        return;
    if (cg_request_decode(&again, text, len) != 0 || !cg_request_equal(req, &again))
        abort();
    cg_request_dispose(&again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cg_request req;
    size_t i;
    int err = cg_request_decode(&req, (const char *)data, size);

    if (err == 0) {
        check_item(&req.item, 0);
        if (req.item.op == CG_OP_MULTI) {
            if (req.n_ops < 1 || req.n_ops > CG_REQ_MAX_OPS || req.ops == NULL)
                abort();
            for (i = 0; i < req.n_ops; i++)
                check_item(&req.ops[i], 1);
        } else if (req.n_ops != 0) {
            abort();
        }
        if (req.id_type == CG_REQ_ID_NONE || req.version < CG_REQ_WIRE_VERSION ||
            req.version > CG_REQ_WIRE_VERSION_MAX || req.version < cg_req_op_version(req.item.op))
            abort();
        check_round_trip(&req);
    } else if (err == CG_EINVALID) {
        if (strncmp(cg_error_last()->message, "request:", 8) != 0 ||
            strchr(cg_error_last()->message, '\n') != NULL)
            abort();
    } else if (err != CG_ERROR) {
        abort();
    }
    cg_request_dispose(&req);
    return 0;
}
