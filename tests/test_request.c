/*
 * test_request.c — coregroupd's request codec (coregroup/coregroupd/daemon_request.c) on its
 * own, without a daemon: the decoder reads every op with its fields and defaults, refuses bad
 * input naming the field (and the operation's index inside a multi), and the encoder that cgctl
 * builds its requests with is its inverse: encoding a request and decoding that gives the same
 * request, for every op; and what the decoder would refuse, the encoder refuses with the same
 * message. Wire version 2 is version 1 plus "audit": audit needs it, every other op reads the
 * same at either version, and the encoder writes the lowest version that carries the op.
 * tests/test_daemon.c sends the same kinds of request to a live daemon.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon_request.h"
#include "testutil.h"

/* ---- helpers -------------------------------------------------------------------------- */

/* Decode `text`, which must be accepted; the caller disposes of *req. */
static void decode_ok(cg_request *req, const char *text)
{
    int err = cg_request_decode(req, text, strlen(text));
    ck_assert_msg(err == 0, "%s: %s", text, cg_error_last()->message);
    ck_assert_str_eq(req->field, "");
    ck_assert_int_eq(req->op_index, -1);
}

/* Decode `text`, which must be refused naming `field` ("" for the whole request) with a
 * message containing `want`, at operation `index` of a multi (-1 outside one). */
static void decode_refused(const char *text, size_t len, const char *field, const char *want,
                           int index)
{
    cg_request req;
    int err = cg_request_decode(&req, text, len);
    const char *msg = cg_error_last()->message;
    ck_assert_msg(err == CG_EINVALID, "%.200s: accepted (%d)", text, err);
    ck_assert_msg(strncmp(msg, "request: ", 9) == 0 && strchr(msg, '\n') == NULL,
                  "not a one-line request error: %s", msg);
    ck_assert_msg(strstr(msg, want) != NULL, "%.200s: \"%s\" lacks \"%s\"", text, msg, want);
    ck_assert_msg(strcmp(req.field, field) == 0, "%.200s: field \"%s\", want \"%s\"", text,
                  req.field, field);
    ck_assert_int_eq(req.op_index, index);
    if (field[0]) {
        char named[80];
        snprintf(named, sizeof(named), "field \"%s\"", field);
        ck_assert_msg(strstr(msg, named) != NULL, "%s does not name %s", msg, named);
    }
    cg_request_dispose(&req);
}

#define REFUSED(text, field, want) decode_refused(text, strlen(text), field, want, -1)

/* A request as a client builds one by hand (cgctl's request_init). */
static void req_init(cg_request *req, cg_req_op op)
{
    memset(req, 0, sizeof(*req));
    req->id_type = CG_REQ_ID_STRING;
    snprintf(req->id_str, sizeof(req->id_str), "test-%d", (int)op);
    req->item.op = op;
    req->item.part = -1;
    req->item.folder = CG_ROOT_FOLDER;
    req->op_index = -1;
}

static char *dup(const char *s)
{
    char *d = strdup(s);
    ck_assert_ptr_nonnull(d);
    return d;
}

/* Encode `req` and decode the result: it must give `req` back. Returns the encoded text (the
 * caller frees it). */
static char *round_trip(const cg_request *req)
{
    cg_request again;
    char *text = NULL;
    size_t len = 0;
    int err = cg_request_encode(&text, &len, req);
    ck_assert_msg(err == 0, "encode %s: %s", cg_req_op_name(req->item.op),
                  cg_error_last()->message);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(len, strlen(text));
    err = cg_request_decode(&again, text, len);
    ck_assert_msg(err == 0, "decode of the encoding %s: %s", text, cg_error_last()->message);
    ck_assert_msg(cg_request_equal(req, &again), "the round trip changed the request: %s", text);
    cg_request_dispose(&again);
    return text;
}

/* Decode `text`, encode that, decode again: the same request both times. */
static void text_round_trip(const char *text)
{
    cg_request req;
    decode_ok(&req, text);
    free(round_trip(&req));
    cg_request_dispose(&req);
}

/* The encoder must refuse `req` naming `field`, with a message containing `want`. */
static void encode_refused(const cg_request *req, const char *field, const char *want)
{
    char *text = (char *)"untouched", named[80];
    int err = cg_request_encode(&text, NULL, req);
    const char *msg = cg_error_last()->message;
    ck_assert_msg(err == CG_EINVALID, "encoded: %s", err == 0 ? text : "(error)");
    ck_assert_ptr_null(text);
    ck_assert_msg(strncmp(msg, "request: ", 9) == 0, "%s", msg);
    ck_assert_msg(strstr(msg, want) != NULL, "\"%s\" lacks \"%s\"", msg, want);
    snprintf(named, sizeof(named), "field \"%s\"", field);
    ck_assert_msg(strstr(msg, named) != NULL, "\"%s\" does not name %s", msg, named);
}

/* Every op with every field it has, as a client would write it (white space included). */
static const char *const every_op[] = {
    "{\"v\":1,\"id\":\"r\",\"op\":\"register\",\"kind\":\"folder\",\"service_id\":\"svc\","
    "\"specification\":{\"a\": 1},\"description\":[1, 2],\"state\":\"x\"}",
    "{\"v\":1,\"id\":2,\"op\":\"register\",\"kind\":null,\"service_id\":null}",
    "{\"v\":1,\"id\":3,\"op\":\"unregister\",\"handle\":12}",
    "{\"v\":1,\"id\":4,\"op\":\"get\",\"handle\":12}",
    "{\"v\":1,\"id\":5,\"op\":\"get\",\"handle\":12,\"part\":\"description\"}",
    "{\"v\":1,\"id\":6,\"op\":\"update\",\"handle\":12,\"part\":\"state\",\"expected\":3,"
    "\"body\":{ \"n\" : 1, \"s\": \"caf\xc3\xa9\" }}",
    "{\"v\":1,\"id\":7,\"op\":\"lock\",\"handle\":9007199254740991,\"part\":\"specification\"}",
    "{\"v\":1,\"id\":8,\"op\":\"bind\",\"folder\":5,\"name\":\"printer\",\"target\":12}",
    "{\"v\":1,\"id\":9,\"op\":\"bind\",\"name\":\"at-root\",\"target\":12}",
    "{\"v\":1,\"id\":10,\"op\":\"unbind\",\"folder\":5,\"name\":\"printer\"}",
    "{\"v\":1,\"id\":11,\"op\":\"list\"}",
    "{\"v\":1,\"id\":12,\"op\":\"list\",\"folder\":5}",
    "{\"v\":1,\"id\":13,\"op\":\"lookup\",\"name\":\"printer\"}",
    "{\"v\":1,\"id\":14,\"op\":\"find\",\"service_id\":\"svc\"}",
    "{\"v\":1,\"id\":-15,\"op\":\"health\"}",
    "{\"v\":1,\"id\":\"s\",\"op\":\"stats\",\"unknown\":true}",
    "{\"v\":1,\"id\":\"m\",\"op\":\"members\"}",
    "{\"v\":1,\"id\":\"x\",\"op\":\"shutdown\"}",
    "{\"v\":1,\"id\":\"multi\",\"op\":\"multi\",\"ops\":["
    "{\"op\":\"register\",\"service_id\":\"m\",\"state\":{}},"
    "{\"op\":\"unregister\",\"handle\":1},{\"op\":\"get\",\"handle\":2},"
    "{\"op\":\"get\",\"handle\":2,\"part\":\"state\"},"
    "{\"op\":\"update\",\"handle\":2,\"part\":\"state\",\"expected\":1,\"body\":[true,null]},"
    "{\"op\":\"lock\",\"handle\":2,\"part\":\"state\"},"
    "{\"op\":\"bind\",\"name\":\"n\",\"target\":2},{\"op\":\"unbind\",\"name\":\"n\"},"
    "{\"op\":\"list\",\"folder\":3},{\"op\":\"lookup\",\"folder\":3,\"name\":\"n\"},"
    "{\"op\":\"find\",\"service_id\":\"m\"}]}",
    /* wire version 2: audit, and the version-1 ops as they were */
    "{\"v\":2,\"id\":\"au\",\"op\":\"audit\",\"max\":250}",
    "{\"v\":2,\"id\":\"au-default\",\"op\":\"audit\"}",
    "{\"v\":2,\"id\":\"h2\",\"op\":\"health\"}",
    "{\"v\":2,\"id\":\"g2\",\"op\":\"get\",\"handle\":12,\"part\":\"state\"}",
};
#define N_EVERY_OP (sizeof(every_op) / sizeof(every_op[0]))

/* ---- decoding ------------------------------------------------------------------------- */

START_TEST(register_reads_kind_service_id_and_bodies)
{
    cg_request r;
    decode_ok(&r, every_op[0]);
    ck_assert_int_eq(r.item.op, CG_OP_REGISTER);
    ck_assert_int_eq(r.id_type, CG_REQ_ID_STRING);
    ck_assert_str_eq(r.id_str, "r");
    ck_assert_str_eq(r.item.kind, "folder");
    ck_assert_str_eq(r.item.service_id, "svc");
    ck_assert_str_eq(r.item.bodies[CG_PART_SPECIFICATION], "{\"a\":1}"); /* compact */
    ck_assert_str_eq(r.item.bodies[CG_PART_DESCRIPTION], "[1,2]");
    ck_assert_str_eq(r.item.bodies[CG_PART_STATE], "\"x\"");
    cg_request_dispose(&r);

    /* null and absent both mean "the library's default" */
    decode_ok(&r, every_op[1]);
    ck_assert_int_eq(r.id_type, CG_REQ_ID_INT);
    ck_assert_int_eq(r.id_int, 2);
    ck_assert_ptr_null(r.item.kind);
    ck_assert_ptr_null(r.item.service_id);
    ck_assert_ptr_null(r.item.bodies[CG_PART_SPECIFICATION]);
    ck_assert_ptr_null(r.item.bodies[CG_PART_STATE]);
    cg_request_dispose(&r);
}
END_TEST

START_TEST(resource_ops_read_handle_part_and_version)
{
    cg_request r;
    decode_ok(&r, every_op[2]);
    ck_assert_int_eq(r.item.op, CG_OP_UNREGISTER);
    ck_assert_int_eq(r.item.handle, 12);
    cg_request_dispose(&r);

    decode_ok(&r, every_op[3]);
    ck_assert_int_eq(r.item.op, CG_OP_GET);
    ck_assert_int_eq(r.item.part, -1); /* every part */
    cg_request_dispose(&r);
    decode_ok(&r, every_op[4]);
    ck_assert_int_eq(r.item.part, CG_PART_DESCRIPTION);
    cg_request_dispose(&r);

    decode_ok(&r, every_op[5]);
    ck_assert_int_eq(r.item.op, CG_OP_UPDATE);
    ck_assert_int_eq(r.item.handle, 12);
    ck_assert_int_eq(r.item.part, CG_PART_STATE);
    ck_assert_int_eq(r.item.expected, 3);
    ck_assert_str_eq(r.item.body, "{\"n\":1,\"s\":\"caf\xc3\xa9\"}");
    cg_request_dispose(&r);

    decode_ok(&r, every_op[6]);
    ck_assert_int_eq(r.item.op, CG_OP_LOCK);
    ck_assert(r.item.handle == CG_REQ_INT_MAX); /* 2^53 - 1, exactly */
    ck_assert_int_eq(r.item.part, CG_PART_SPECIFICATION);
    cg_request_dispose(&r);

    /* 7, 7.0 and 7e0 are all 7 */
    decode_ok(&r, "{\"v\":1.0,\"id\":1,\"op\":\"get\",\"handle\":7e0}");
    ck_assert_int_eq(r.item.handle, 7);
    cg_request_dispose(&r);
}
END_TEST

START_TEST(name_ops_default_to_the_root_folder)
{
    cg_request r;
    decode_ok(&r, every_op[7]);
    ck_assert_int_eq(r.item.op, CG_OP_BIND);
    ck_assert_int_eq(r.item.folder, 5);
    ck_assert_str_eq(r.item.name, "printer");
    ck_assert_int_eq(r.item.target, 12);
    cg_request_dispose(&r);
    decode_ok(&r, every_op[8]);
    ck_assert_int_eq(r.item.folder, CG_ROOT_FOLDER);
    cg_request_dispose(&r);

    decode_ok(&r, every_op[9]);
    ck_assert_int_eq(r.item.op, CG_OP_UNBIND);
    ck_assert_int_eq(r.item.folder, 5);
    ck_assert_str_eq(r.item.name, "printer");
    cg_request_dispose(&r);

    decode_ok(&r, every_op[10]);
    ck_assert_int_eq(r.item.op, CG_OP_LIST);
    ck_assert_int_eq(r.item.folder, CG_ROOT_FOLDER);
    cg_request_dispose(&r);
    decode_ok(&r, every_op[11]);
    ck_assert_int_eq(r.item.folder, 5);
    cg_request_dispose(&r);

    decode_ok(&r, every_op[12]);
    ck_assert_int_eq(r.item.op, CG_OP_LOOKUP);
    ck_assert_int_eq(r.item.folder, CG_ROOT_FOLDER);
    ck_assert_str_eq(r.item.name, "printer");
    cg_request_dispose(&r);

    decode_ok(&r, every_op[13]);
    ck_assert_int_eq(r.item.op, CG_OP_FIND);
    ck_assert_str_eq(r.item.service_id, "svc");
    cg_request_dispose(&r);
}
END_TEST

START_TEST(admin_ops_have_no_fields_and_unknown_fields_are_ignored)
{
    static const cg_req_op ops[] = {CG_OP_HEALTH, CG_OP_STATS, CG_OP_MEMBERS, CG_OP_SHUTDOWN};
    cg_request r;
    size_t i;
    for (i = 0; i < 4; i++) {
        decode_ok(&r, every_op[14 + i]);
        ck_assert_int_eq(r.item.op, ops[i]);
        ck_assert_str_eq(cg_req_op_name(r.item.op), cg_req_op_name(ops[i]));
        ck_assert_uint_eq(r.n_ops, 0);
        cg_request_dispose(&r);
    }
    decode_ok(&r, every_op[14]);
    ck_assert_int_eq(r.id_type, CG_REQ_ID_INT);
    ck_assert_int_eq(r.id_int, -15);
    cg_request_dispose(&r);
    ck_assert_str_eq(cg_req_op_name(CG_OP_NONE), "?");
    ck_assert_str_eq(cg_req_op_name(CG_OP_COUNT), "?");
}
END_TEST

START_TEST(multi_reads_each_operation_in_order)
{
    static const cg_req_op ops[] = {CG_OP_REGISTER, CG_OP_UNREGISTER, CG_OP_GET,  CG_OP_GET,
                                    CG_OP_UPDATE,   CG_OP_LOCK,       CG_OP_BIND, CG_OP_UNBIND,
                                    CG_OP_LIST,     CG_OP_LOOKUP,     CG_OP_FIND};
    cg_request r;
    size_t i;
    decode_ok(&r, every_op[18]);
    ck_assert_int_eq(r.item.op, CG_OP_MULTI);
    ck_assert_uint_eq(r.n_ops, sizeof(ops) / sizeof(ops[0]));
    for (i = 0; i < r.n_ops; i++)
        ck_assert_msg(r.ops[i].op == ops[i], "ops[%zu] is %s", i, cg_req_op_name(r.ops[i].op));
    ck_assert_str_eq(r.ops[0].bodies[CG_PART_STATE], "{}");
    ck_assert_int_eq(r.ops[3].part, CG_PART_STATE);
    ck_assert_str_eq(r.ops[4].body, "[true,null]");
    ck_assert_int_eq(r.ops[6].folder, CG_ROOT_FOLDER);
    ck_assert_int_eq(r.ops[9].folder, 3);
    ck_assert_str_eq(r.ops[10].service_id, "m");
    cg_request_dispose(&r);
}
END_TEST

/* ---- refusals ------------------------------------------------------------------------- */

START_TEST(bad_requests_are_refused_naming_the_field)
{
    REFUSED("nonsense", "", "not JSON (syntax error at offset 0)");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"health\"} x", "", "data after the JSON value");
    REFUSED("[1,2]", "", "expected a JSON object, got an array");
    REFUSED("{\"id\":1,\"op\":\"health\"}", "v", "missing");
    REFUSED("{\"v\":\"1\",\"id\":1,\"op\":\"health\"}", "v", "expected an integer wire version");
    REFUSED("{\"v\":3,\"id\":1,\"op\":\"health\"}", "v", "unknown wire version 3");
    REFUSED("{\"v\":0,\"id\":1,\"op\":\"health\"}", "v", "unknown wire version 0");
    REFUSED("{\"v\":1,\"op\":\"health\"}", "id", "missing");
    REFUSED("{\"v\":1,\"id\":\"\",\"op\":\"health\"}", "id", "expected a string of 1 to 128");
    REFUSED("{\"v\":1,\"id\":1}", "op", "missing");
    REFUSED("{\"v\":1,\"id\":1,\"op\":7}", "op", "expected an operation name");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"frob\"}", "op", "unknown operation \"frob\"");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"get\"}", "handle", "missing");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":\"12\"}", "handle",
            "expected an integer, got a string");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":1.5}", "handle",
            "expected an integer, got 1.5");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":-1}", "handle",
            "expected an integer from 0");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":9007199254740992}", "handle",
            "expected an integer from 0 to 9007199254740991");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":1,\"handle\":2}", "handle", "given twice");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":1,\"part\":\"State\"}", "part",
            "unknown part \"State\"");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"update\",\"handle\":1,\"part\":\"state\",\"expected\":0,"
            "\"body\":{}}",
            "expected", "expected an integer from 1");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"update\",\"handle\":1,\"part\":\"state\",\"expected\":1}",
            "body", "missing");
    /* numbers cJSON cannot keep: read as infinity (then written as null), or printed beyond
     * the largest double (fuzz_request: the body changed on its second round trip) */
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"update\",\"handle\":1,\"part\":\"state\",\"expected\":1,"
            "\"body\":{\"a\":[1,{\"b\":-1e999}]}}",
            "body", "a number beyond the range of a double");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"update\",\"handle\":1,\"part\":\"state\",\"expected\":1,"
            "\"body\":1.7976931348623157e308}",
            "body", "a number beyond the range of a double");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"register\",\"state\":{\"n\":1e309}}", "state",
            "a number beyond the range of a double");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"lock\",\"handle\":1}", "part", "missing");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"bind\",\"name\":5,\"target\":1}", "name",
            "expected a string");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"bind\",\"name\":\"n\"}", "target", "missing");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"unbind\",\"folder\":-3,\"name\":\"n\"}", "folder",
            "expected an integer from 0");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"register\",\"kind\":[]}", "kind",
            "expected a string or null");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"find\"}", "service_id", "missing");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"find\",\"service_id\":null}", "service_id",
            "expected a string");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"multi\"}", "ops", "missing");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":{}}", "ops", "expected an array");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[]}", "ops", "empty");
    /* raw bytes the decoder checks before parsing */
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":1,\"part\":\"sta\\u0000te\"}", "",
            "\\u0000 (a NUL character)");
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"get\",\"handle\":1,\"part\":\"\xc3\x28\"}", "",
            "not UTF-8");
    decode_refused("{\"v\":1,\0}", 9, "", "NUL byte at offset 7", -1);
    decode_refused("", 0, "", "empty", -1);
}
END_TEST

START_TEST(refusals_inside_a_multi_carry_the_index)
{
    const char *not_object = "{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[1]}";
    const char *admin = "{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[{\"op\":\"shutdown\"}]}";
    const char *t = "{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[{\"op\":\"list\"},"
                    "{\"op\":\"get\",\"handle\":-1}]}";
    const char *nested = "{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[{\"op\":\"list\"},"
                         "{\"op\":\"health\"},{\"op\":\"list\"}]}";
    decode_refused(not_object, strlen(not_object), "ops[0]", "expected an operation object", 0);
    decode_refused(admin, strlen(admin), "ops[0].op", "not allowed inside a multi", 0);
    decode_refused(t, strlen(t), "ops[1].handle", "expected an integer from 0", 1);
    decode_refused(nested, strlen(nested), "ops[1].op", "not allowed inside a multi", 1);
}
END_TEST

START_TEST(limits_are_refused_before_parsing_and_the_id_is_kept)
{
    char *big = malloc((2 << 20) + 64);
    cg_request r;
    size_t n, i;

    ck_assert_ptr_nonnull(big);
    /* over 1 MiB: refused by its size */
    n = (size_t)snprintf(big, 64, "{\"v\":1,\"id\":1,\"op\":\"health\",\"pad\":\"");
    memset(big + n, 'x', 1 << 20);
    n += 1 << 20;
    n += (size_t)snprintf(big + n, 8, "\"}");
    decode_refused(big, n, "", "more than the limit of 1048576", -1);
    /* 1001 operations: refused before any is read */
    n = (size_t)snprintf(big, 64, "{\"v\":1,\"id\":1,\"op\":\"multi\",\"ops\":[");
    for (i = 0; i < 1001; i++)
        n += (size_t)snprintf(big + n, 32, "%s{\"op\":\"list\"}", i ? "," : "");
    n += (size_t)snprintf(big + n, 8, "]}");
    decode_refused(big, n, "ops", "more than the limit of 1000 operations", -1);
    /* an id of 129 bytes */
    n = (size_t)snprintf(big, 64, "{\"v\":1,\"op\":\"health\",\"id\":\"");
    memset(big + n, 'i', 129);
    n += 129;
    n += (size_t)snprintf(big + n, 8, "\"}");
    decode_refused(big, n, "id", "expected a string of 1 to 128 bytes", -1);
    free(big);

    /* a request of an unknown version is refused, but its id is read for the reply */
    {
        const char *v3 = "{\"v\":3,\"id\":\"keep-me\",\"op\":\"health\"}";
        ck_assert_int_eq(cg_request_decode(&r, v3, strlen(v3)), CG_EINVALID);
    }
    ck_assert_int_eq(r.id_type, CG_REQ_ID_STRING);
    ck_assert_str_eq(r.id_str, "keep-me");
    cg_request_dispose(&r);
    cg_request_dispose(NULL); /* accepted */
}
END_TEST

/* ---- the encoder and the round trip ----------------------------------------------------- */

START_TEST(every_op_survives_decode_encode_decode)
{
    size_t i;
    for (i = 0; i < N_EVERY_OP; i++)
        text_round_trip(every_op[i]);
}
END_TEST

START_TEST(every_op_built_by_hand_survives_encode_decode)
{
    cg_request r;
    char *text;
    int op, k;

    for (op = CG_OP_NONE + 1; op < CG_OP_COUNT; op++) {
        req_init(&r, (cg_req_op)op);
        switch (op) {
        case CG_OP_REGISTER:
            r.item.kind = dup("service");
            r.item.service_id = dup("svc-\xe2\x82\xac"); /* UTF-8 passes as it is */
            for (k = 0; k < CG_PART_COUNT; k++)
                r.item.bodies[k] = dup(k == 1 ? "[1,\"two\",{\"3\":null}]" : "{\"k\":1}");
            break;
        case CG_OP_UPDATE:
            r.item.body = dup("{\"n\":1}");
            r.item.expected = CG_REQ_INT_MAX;
            /* fall through */
        case CG_OP_LOCK:
        case CG_OP_GET:
            r.item.part = CG_PART_DESCRIPTION;
            /* fall through */
        case CG_OP_UNREGISTER:
            r.item.handle = CG_REQ_INT_MAX;
            break;
        case CG_OP_BIND:
            r.item.target = 42;
            /* fall through */
        case CG_OP_UNBIND:
        case CG_OP_LOOKUP:
            r.item.name = dup("a name \"quoted\" \\ and\ttabbed");
            /* fall through */
        case CG_OP_LIST:
            r.item.folder = 7;
            break;
        case CG_OP_FIND:
            r.item.service_id = dup("svc");
            break;
        case CG_OP_AUDIT:
            r.item.max = CG_AUDIT_MAX_ENTRIES;
            break;
        case CG_OP_MULTI:
            r.n_ops = 2;
            r.ops = calloc(2, sizeof(*r.ops));
            ck_assert_ptr_nonnull(r.ops);
            r.ops[0].op = CG_OP_GET;
            r.ops[0].handle = 3;
            r.ops[0].part = -1;
            r.ops[1].op = CG_OP_UPDATE;
            r.ops[1].handle = 3;
            r.ops[1].part = CG_PART_STATE;
            r.ops[1].expected = 1;
            r.ops[1].body = dup("\"s\"");
            break;
        default: /* health, stats, members, shutdown */
            break;
        }
        text = round_trip(&r);
        /* the fields come after v, id and op; integers are exact decimal text; the version
         * is the lowest that has the op (2 for audit, else 1) */
        {
            char head[32];
            snprintf(head, sizeof(head), "{\"v\":%d,\"id\":\"test-", cg_req_op_version(op));
            ck_assert_msg(strncmp(text, head, strlen(head)) == 0, "%s", text);
        }
        if (op == CG_OP_GET || op == CG_OP_UNREGISTER)
            ck_assert_msg(strstr(text, "\"handle\":9007199254740991") != NULL, "%s", text);
        free(text);
        cg_request_dispose(&r);
    }
}
END_TEST

START_TEST(integer_ids_and_defaults_round_trip)
{
    cg_request r;
    char *text;
    req_init(&r, CG_OP_GET);
    r.id_type = CG_REQ_ID_INT;
    r.id_int = -CG_REQ_INT_MAX;
    r.item.handle = 0;
    text = round_trip(&r);
    /* "every part" and the root folder are the decoder's defaults: left out */
    ck_assert_str_eq(text, "{\"v\":1,\"id\":-9007199254740991,\"op\":\"get\",\"handle\":0}");
    free(text);
    cg_request_dispose(&r);

    req_init(&r, CG_OP_LIST);
    text = round_trip(&r);
    ck_assert_str_eq(text, "{\"v\":1,\"id\":\"test-8\",\"op\":\"list\",\"folder\":0}");
    free(text);
    cg_request_dispose(&r);
}
END_TEST

START_TEST(bodies_are_written_compactly)
{
    cg_request r, again;
    char *text;
    req_init(&r, CG_OP_UPDATE);
    r.item.handle = 1;
    r.item.part = CG_PART_STATE;
    r.item.expected = 1;
    r.item.body = dup(" { \"a\" : [ 1 , 2 ] } \n");
    ck_assert_int_eq(cg_request_encode(&text, NULL, &r), 0);
    ck_assert_msg(strstr(text, "\"body\":{\"a\":[1,2]}") != NULL, "%s", text);
    ck_assert_int_eq(cg_request_decode(&again, text, strlen(text)), 0);
    ck_assert_str_eq(again.item.body, "{\"a\":[1,2]}");
    cg_request_dispose(&again);
    free(text);
    cg_request_dispose(&r);
}
END_TEST

START_TEST(the_encoder_refuses_what_the_decoder_would)
{
    cg_request r;
    size_t i;

    req_init(&r, CG_OP_GET);
    r.item.handle = -1;
    encode_refused(&r, "handle", "expected an integer from 0");
    r.item.handle = 1;
    r.item.part = 7;
    encode_refused(&r, "part", "unknown part 7");
    cg_request_dispose(&r);

    req_init(&r, CG_OP_UPDATE);
    r.item.handle = 1;
    r.item.part = CG_PART_STATE;
    r.item.expected = 0;
    r.item.body = dup("{}");
    encode_refused(&r, "expected", "expected an integer from 1");
    r.item.expected = 1;
    free(r.item.body);
    r.item.body = dup("{nope");
    encode_refused(&r, "body", "not a JSON text");
    free(r.item.body);
    r.item.body = dup("{} x");
    encode_refused(&r, "body", "data after the JSON value");
    free(r.item.body);
    r.item.body = dup("\"a\\u0000b\"");
    encode_refused(&r, "body", "\\u0000");
    free(r.item.body);
    r.item.body = dup("[1e999]");
    encode_refused(&r, "body", "a number beyond the range of a double");
    free(r.item.body);
    r.item.body = dup("{\"x\":-1.7976931348623157e308}");
    encode_refused(&r, "body", "a number beyond the range of a double");
    /* just within the range: kept, and the same after every round trip */
    text_round_trip("{\"v\":1,\"id\":1,\"op\":\"update\",\"handle\":1,\"part\":\"state\","
                    "\"expected\":1,\"body\":{\"x\":1.79769313486231e308,\"y\":-5e-324}}");
    free(r.item.body);
    r.item.body = NULL;
    encode_refused(&r, "body", "missing");
    cg_request_dispose(&r);

    req_init(&r, CG_OP_BIND);
    r.item.target = 1;
    encode_refused(&r, "name", "missing");
    r.item.name = dup("\xff\xfe");
    encode_refused(&r, "name", "not UTF-8");
    cg_request_dispose(&r);

    req_init(&r, CG_OP_HEALTH);
    r.id_type = CG_REQ_ID_NONE;
    encode_refused(&r, "id", "missing");
    r.id_type = CG_REQ_ID_STRING;
    r.id_str[0] = '\0';
    encode_refused(&r, "id", "expected a string of 1 to 128");
    r.item.op = CG_OP_COUNT;
    encode_refused(&r, "op", "no operation");
    cg_request_dispose(&r);

    /* multis: empty, too long, nested, an administrative op inside, a bad operation */
    req_init(&r, CG_OP_MULTI);
    encode_refused(&r, "ops", "empty");
    r.n_ops = CG_REQ_MAX_OPS + 1;
    r.ops = calloc(r.n_ops, sizeof(*r.ops));
    ck_assert_ptr_nonnull(r.ops);
    for (i = 0; i < r.n_ops; i++)
        r.ops[i].op = CG_OP_LIST;
    encode_refused(&r, "ops", "more than the limit of 1000 operations");
    r.n_ops = 3;
    r.ops[1].op = CG_OP_MULTI;
    encode_refused(&r, "ops[1].op", "not allowed inside a multi");
    r.ops[1].op = CG_OP_SHUTDOWN;
    encode_refused(&r, "ops[1].op", "not allowed inside a multi");
    r.ops[1].op = CG_OP_FIND;
    encode_refused(&r, "ops[1].service_id", "missing");
    r.ops[1].service_id = dup("ok");
    r.ops[2].folder = -5;
    encode_refused(&r, "ops[2].folder", "expected an integer from 0");
    r.ops[2].folder = 0;
    free(round_trip(&r));
    cg_request_dispose(&r);
}
END_TEST

START_TEST(an_encoding_over_the_size_limit_is_refused)
{
    cg_request r;
    char *body = malloc((1 << 20) + 16);
    ck_assert_ptr_nonnull(body);
    body[0] = '"';
    memset(body + 1, 'x', 1 << 20);
    memcpy(body + 1 + (1 << 20), "\"", 2);
    req_init(&r, CG_OP_UPDATE);
    r.item.handle = 1;
    r.item.part = CG_PART_STATE;
    r.item.expected = 1;
    r.item.body = body;
    {
        char *text = NULL;
        ck_assert_int_eq(cg_request_encode(&text, NULL, &r), CG_EINVALID);
        ck_assert_ptr_null(text);
        ck_assert_msg(strstr(cg_error_last()->message, "more than the limit of 1048576"), "%s",
                      cg_error_last()->message);
    }
    cg_request_dispose(&r);
}
END_TEST

/* ---- wire version 2: audit -------------------------------------------------------------- */

START_TEST(audit_needs_wire_version_2_and_reads_max)
{
    const char *in_multi = "{\"v\":2,\"id\":1,\"op\":\"multi\",\"ops\":[{\"op\":\"audit\"}]}";
    cg_request r;

    decode_ok(&r, every_op[N_EVERY_OP - 4]);
    ck_assert_int_eq(r.item.op, CG_OP_AUDIT);
    ck_assert_int_eq(r.version, 2);
    ck_assert_int_eq(r.item.max, 250);
    ck_assert_str_eq(cg_req_op_name(r.item.op), "audit");
    cg_request_dispose(&r);
    decode_ok(&r, every_op[N_EVERY_OP - 3]);
    ck_assert_int_eq(r.item.max, CG_REQ_AUDIT_DEFAULT); /* 100 */
    cg_request_dispose(&r);
    decode_ok(&r, "{\"v\":2,\"id\":1,\"op\":\"audit\",\"max\":10000}");
    ck_assert_int_eq(r.item.max, CG_AUDIT_MAX_ENTRIES);
    cg_request_dispose(&r);

    /* a version-1 request cannot name it: the field to fix is "v" */
    REFUSED("{\"v\":1,\"id\":1,\"op\":\"audit\"}", "v",
            "operation \"audit\" needs wire version 2 (the request says 1)");
    REFUSED("{\"v\":2,\"id\":1,\"op\":\"audit\",\"max\":0}", "max",
            "expected an integer from 1 to 10000, got 0");
    REFUSED("{\"v\":2,\"id\":1,\"op\":\"audit\",\"max\":10001}", "max",
            "expected an integer from 1 to 10000, got 10001");
    REFUSED("{\"v\":2,\"id\":1,\"op\":\"audit\",\"max\":\"5\"}", "max",
            "expected an integer, got a string");
    REFUSED("{\"v\":2,\"id\":1,\"op\":\"audit\",\"max\":2.5}", "max",
            "expected an integer, got 2.5");
    decode_refused(in_multi, strlen(in_multi), "ops[0].op", "not allowed inside a multi", 0);
    /* the id of a refused request is still read: the error reply carries it */
    {
        const char *v1 = "{\"v\":1,\"id\":\"keep\",\"op\":\"audit\"}";
        ck_assert_int_eq(cg_request_decode(&r, v1, strlen(v1)), CG_EINVALID);
        ck_assert_str_eq(r.id_str, "keep");
        ck_assert_int_eq(r.version, 1); /* the reply is written in it */
        cg_request_dispose(&r);
    }
}
END_TEST

START_TEST(version_2_carries_every_version_1_op_unchanged)
{
    cg_request r1, r2;
    char *text;

    decode_ok(&r2, every_op[N_EVERY_OP - 2]);
    ck_assert_int_eq(r2.item.op, CG_OP_HEALTH);
    ck_assert_int_eq(r2.version, 2);
    text = round_trip(&r2); /* a decoded version is kept by the encoder */
    ck_assert_str_eq(text, "{\"v\":2,\"id\":\"h2\",\"op\":\"health\"}");
    free(text);
    cg_request_dispose(&r2);

    decode_ok(&r2, every_op[N_EVERY_OP - 1]);
    decode_ok(&r1, "{\"v\":1,\"id\":\"g2\",\"op\":\"get\",\"handle\":12,\"part\":\"state\"}");
    ck_assert_int_eq(r1.version, 1);
    ck_assert_int_eq(r2.item.op, r1.item.op);
    ck_assert_int_eq(r2.item.handle, r1.item.handle);
    ck_assert_int_eq(r2.item.part, r1.item.part);
    ck_assert(!cg_request_equal(&r1, &r2)); /* the same op, but not the same version */
    cg_request_dispose(&r1);
    cg_request_dispose(&r2);
}
END_TEST

START_TEST(the_encoder_writes_the_lowest_version_that_has_the_op)
{
    cg_request r;
    char *text;

    req_init(&r, CG_OP_AUDIT); /* version 0: the lowest that carries it */
    r.item.max = 7;
    text = round_trip(&r);
    ck_assert_str_eq(text, "{\"v\":2,\"id\":\"test-16\",\"op\":\"audit\",\"max\":7}");
    free(text);
    r.version = 1; /* too low for audit: raised */
    text = round_trip(&r);
    ck_assert_msg(strncmp(text, "{\"v\":2,", 7) == 0, "%s", text);
    free(text);
    r.item.max = 0;
    encode_refused(&r, "max", "expected an integer from 1 to 10000");
    r.item.max = CG_AUDIT_MAX_ENTRIES + 1;
    encode_refused(&r, "max", "expected an integer from 1 to 10000");
    r.item.max = 1;
    r.version = 3;
    encode_refused(&r, "v", "unknown wire version 3");
    cg_request_dispose(&r);

    req_init(&r, CG_OP_MEMBERS); /* a version-1 op: version 1, which every daemon reads */
    text = round_trip(&r);
    ck_assert_msg(strncmp(text, "{\"v\":1,", 7) == 0, "%s", text);
    free(text);
    r.version = 2; /* unless asked for more */
    text = round_trip(&r);
    ck_assert_msg(strncmp(text, "{\"v\":2,", 7) == 0, "%s", text);
    free(text);
    cg_request_dispose(&r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("request");
    TCase *tc = tcase_create("decode");
    tcase_add_test(tc, register_reads_kind_service_id_and_bodies);
    tcase_add_test(tc, resource_ops_read_handle_part_and_version);
    tcase_add_test(tc, name_ops_default_to_the_root_folder);
    tcase_add_test(tc, admin_ops_have_no_fields_and_unknown_fields_are_ignored);
    tcase_add_test(tc, multi_reads_each_operation_in_order);
    suite_add_tcase(s, tc);
    tc = tcase_create("refusals");
    tcase_add_test(tc, bad_requests_are_refused_naming_the_field);
    tcase_add_test(tc, refusals_inside_a_multi_carry_the_index);
    tcase_add_test(tc, limits_are_refused_before_parsing_and_the_id_is_kept);
    suite_add_tcase(s, tc);
    tc = tcase_create("round_trip");
    tcase_add_test(tc, every_op_survives_decode_encode_decode);
    tcase_add_test(tc, every_op_built_by_hand_survives_encode_decode);
    tcase_add_test(tc, integer_ids_and_defaults_round_trip);
    tcase_add_test(tc, bodies_are_written_compactly);
    tcase_add_test(tc, the_encoder_refuses_what_the_decoder_would);
    tcase_add_test(tc, an_encoding_over_the_size_limit_is_refused);
    suite_add_tcase(s, tc);
    tc = tcase_create("version_2");
    tcase_add_test(tc, audit_needs_wire_version_2_and_reads_max);
    tcase_add_test(tc, version_2_carries_every_version_1_op_unchanged);
    tcase_add_test(tc, the_encoder_writes_the_lowest_version_that_has_the_op);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
