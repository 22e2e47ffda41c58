/*
 * daemon_request.c — the decoder of coregroupd's client requests (wire versions 1 and 2,
 * REQUESTS.md).
 *
 * Every byte a client sends reaches the daemon's cores through cg_request_decode(), and
 * clients are outside input: anything that can connect to the daemon's endpoint can send
 * anything. So, like the bus decoder (invalidation/message.c), this is a pure function that
 * trusts nothing and refuses rather than guesses, and it is fuzzed (fuzz_request.c):
 *
 *  - Size is checked before anything is parsed (CG_REQ_MAX, 1 MiB), so a huge request costs
 *    one comparison; cJSON limits nesting itself (1000 levels), so deep input cannot exhaust
 *    the stack. ZeroMQ drops frames far beyond the limit before they reach us (the daemon sets
 *    ZMQ_MAXMSGSIZE), so the daemon never buffers an absurd request.
 *  - The text must be UTF-8 (JSON is), and must not contain a NUL byte or the escape \u0000:
 *    cJSON would hand back a C string cut at the NUL, and a name "a\u0000b" must not become
 *    "a". Invalid UTF-8 would otherwise reach PostgreSQL's jsonb and fail there, later and
 *    less clearly.
 *  - Bytes after the JSON value (other than white space) are refused.
 *  - Integers (handles, versions) must be whole numbers within [0, 2^53 - 1]: 1.5, 1e999 and
 *    2^53 (which might have been 2^53 + 1) are refused, and "7" is not 7.
 *  - A known field given twice is refused; unknown fields are ignored, which is how version 1
 *    grows (REQUESTS.md, "Versioning").
 *  - Versions: 1 and 2 are read. Version 2 is version 1 plus the operation "audit", which needs
 *    it (a new operation name is a new version: a version-1 daemon calls it an unknown op,
 *    which a client cannot tell from its own mistake, while it refuses "v":2 by name). Every
 *    other op means the same at either version. The version is kept in the request, so the
 *    reply is written in it, and the encoder writes the lowest version that has the op.
 *  - Checks run in a fixed order — size, JSON, object, "v", "id", "op", the op's fields — so
 *    the reason given is the most useful one. The id is read leniently BEFORE the version
 *    check, so that even the reply to a request of an unknown version carries its id.
 *
 * Error messages are one line, start with "request:", name the field (inside a multi as
 * "ops[3].handle") and quote at most a short, sanitised excerpt of a bad value, so a hostile
 * request cannot write control characters or megabytes into the daemon's log or its reply.
 *
 * It deliberately does not check what the library checks anyway (name syntax, kind syntax,
 * whether a handle exists): those come back from the call as errors with the library's own
 * messages, and a decoder that duplicated them would drift from the library.
 *
 * Numbers inside bodies pass through cJSON, which holds them as doubles: an integer beyond
 * 2^53 in a body loses precision. REQUESTS.md says so; clients send such values as strings.
 *
 * The encoder (cg_request_encode), for clients — cgctl builds every request with it — writes
 * exactly the fields decode_item() reads for an op, and then hands its output to the decoder
 * above: whatever the decoder refuses (a handle out of range, a multi inside a multi, an id
 * too long, a request over the limit) the encoder refuses with the decoder's own message, so a
 * client using it cannot send what a daemon of the same version calls malformed, and the two
 * cannot drift apart unnoticed. tests/test_request.c checks the round trip for every op, and
 * fuzz_request.c for whatever the decoder accepts.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "daemon_request.h"
#include "coregroup/sys/error.h"
#include "jsonin.h"

static const char *const op_names[CG_OP_COUNT] = {
    NULL,     "register", "unregister", "get",    "update", "lock",    "bind",     "unbind", "list",
    "lookup", "find",     "multi",      "health", "stats",  "members", "shutdown", "audit"};

const char *cg_req_op_name(int op)
{
    return op > CG_OP_NONE && op < CG_OP_COUNT ? op_names[op] : "?";
}

int cg_req_op_version(int op)
{
    return op == CG_OP_AUDIT ? 2 : CG_REQ_WIRE_VERSION;
}

/* ---- errors --------------------------------------------------------------------------- */

/* Set the detail of a refusal, "request: field "F": WHAT" ("request: WHAT" for the whole
 * request), and return CG_EINVALID. The encoder's refusals read alike. */
static int vrefusal(const char *field, const char *fmt, va_list ap)
{
    char what[900];
    vsnprintf(what, sizeof(what), fmt, ap);
    if (field && field[0])
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT, "request: field \"%s\": %s", field,
                            what);
    return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT, "request: %s", what);
}

/* Refuse the request: remember the field, set the detail, return CG_EINVALID. */
static int refuse(cg_request *req, const char *field, const char *fmt, ...) CG_PRINTF(3, 4);
static int refuse(cg_request *req, const char *field, const char *fmt, ...)
{
    va_list ap;
    int err;
    snprintf(req->field, sizeof(req->field), "%s", field ? field : "");
    va_start(ap, fmt);
    err = vrefusal(field, fmt, ap);
    va_end(ap);
    return err;
}

/* ---- input checks before parsing ------------------------------------------------------ */

/* The offset of the first byte that is not part of valid UTF-8 (overlong forms, surrogates
 * and code points above U+10FFFF are invalid), or len. */
static size_t find_bad_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n, k;
        unsigned int cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            n = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            n = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 3, cp = c & 0x07;
        else
            return i;
        if (len - i <= n)
            return i;
        for (k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return i;
        i += n + 1;
    }
    return len;
}

/* ---- fields --------------------------------------------------------------------------- */

/* Where a field is: "" at the top level, "ops[3]." inside a multi's operation. */
typedef struct {
    char prefix[16];
} place;

static const char *field_name(char buf[48], const place *at, const char *name)
{
    snprintf(buf, 48, "%s%s", at->prefix, name);
    return buf;
}

/* Find field `name`: 0 and *out when present, 1 when absent and optional, else a refusal
 * (missing and required, or given twice). */
static int field(const cJSON **out, cg_request *req, const cJSON *obj, const place *at,
                 const char *name, int required)
{
    const cJSON *c, *found = NULL;
    char f[48];
    *out = NULL;
    for (c = obj->child; c; c = c->next) {
        if (c->string == NULL || strcmp(c->string, name) != 0)
            continue;
        if (found)
            return refuse(req, field_name(f, at, name), "given twice");
        found = c;
    }
    if (found == NULL)
        return required ? refuse(req, field_name(f, at, name), "missing") : 1;
    *out = found;
    return 0;
}

/* An integer field within [min, max]; absent and optional leaves *out alone. */
static int int_field(int64_t *out, cg_request *req, const cJSON *obj, const place *at,
                     const char *name, int64_t min, int64_t max, int required)
{
    const cJSON *j;
    char num[40], f[48];
    double d;
    int r;

    if ((r = field(&j, req, obj, at, name, required)) != 0)
        return r < 0 ? r : 0;
    if (!cJSON_IsNumber(j))
        return refuse(req, field_name(f, at, name), "expected an integer, got %s",
                      cg_json__kind(j));
    d = j->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return refuse(req, field_name(f, at, name), "expected an integer, got %s",
                      isfinite(d) ? cg_json__number_text(num, d) : "a number out of range");
    if (d < (double)min || d > (double)max)
        return refuse(req, field_name(f, at, name), "expected an integer from %lld to %lld, got %s",
                      (long long)min, (long long)max, cg_json__number_text(num, d));
    *out = (int64_t)d;
    return 0;
}

/* A string field, copied into a new string at *out; absent and optional leaves *out NULL.
 * With null_ok, JSON null reads as absent. */
static int str_field(char **out, cg_request *req, const cJSON *obj, const place *at,
                     const char *name, int required, int null_ok)
{
    const cJSON *j;
    char f[48];
    int r;
    *out = NULL;
    if ((r = field(&j, req, obj, at, name, required)) != 0)
        return r < 0 ? r : 0;
    if (null_ok && cJSON_IsNull(j))
        return 0;
    if (!cJSON_IsString(j) || j->valuestring == NULL)
        return refuse(req, field_name(f, at, name), "expected a string%s, got %s",
                      null_ok ? " or null" : "", cg_json__kind(j));
    if ((*out = strdup(j->valuestring)) == NULL)
        return cg_error_nomem();
    return 0;
}

/* A field holding any JSON value, printed compactly into a new string at *out. */
/*
 * The first number in j that cJSON cannot carry, or NULL. cJSON reads a number beyond the
 * largest double (1e999) as infinity and prints infinity as null; and it prints a number within
 * 15 significant digits of the largest double (1.7976931348623157e308) as 1.79769313486232e+308,
 * which reads back as infinity. Either would store something else than the client sent, or
 * change on the next round trip (fuzz_request found the second one), so such a body is
 * refused. Nesting is at most cJSON's limit of 1000 levels.
 */
static const cJSON *number_out_of_range(const cJSON *j)
{
    const cJSON *c, *bad;
    if (cJSON_IsNumber(j)) {
        char buf[40];
        if (!isfinite(j->valuedouble))
            return j;
        snprintf(buf, sizeof(buf), "%1.15g", j->valuedouble); /* what cJSON prints first */
        return isfinite(strtod(buf, NULL)) ? NULL : j;
    }
    for (c = j->child; c; c = c->next)
        if ((bad = number_out_of_range(c)) != NULL)
            return bad;
    return NULL;
}

static int json_field(char **out, cg_request *req, const cJSON *obj, const place *at,
                      const char *name, int required)
{
    const cJSON *j;
    char *text, f[48];
    int r;
    *out = NULL;
    if ((r = field(&j, req, obj, at, name, required)) != 0)
        return r < 0 ? r : 0;
    if (number_out_of_range(j) != NULL)
        return refuse(req, field_name(f, at, name),
                      "a number beyond the range of a double (cJSON would not "
                      "keep it; magnitudes up to 1.79769313486231e308)");
    if ((text = cJSON_PrintUnformatted(j)) == NULL)
        return cg_error_nomem();
    /* one allocator per object: the request's strings are all free()d */
    *out = strdup(text);
    cJSON_free(text);
    return *out ? 0 : cg_error_nomem();
}

/* A part name field ("specification", "description", "state"). */
static int part_field(int *out, cg_request *req, const cJSON *obj, const place *at,
                      const char *name, int required)
{
    const cJSON *j;
    cg_part_kind kind;
    char f[48], ex[48];
    int r;
    if ((r = field(&j, req, obj, at, name, required)) != 0)
        return r < 0 ? r : 0;
    if (!cJSON_IsString(j) || j->valuestring == NULL)
        return refuse(req, field_name(f, at, name), "expected a part name, got %s",
                      cg_json__kind(j));
    if (cg_part_kind_parse(&kind, j->valuestring) < 0)
        return refuse(req, field_name(f, at, name),
                      "unknown part \"%s\" (expected specification, description or state)",
                      cg_json__excerpt(ex, j->valuestring));
    *out = (int)kind;
    return 0;
}

/* ---- operations ----------------------------------------------------------------------- */

/* Decode one operation object (the request itself, or an element of "ops"). */
static int decode_item(cg_req_item *it, cg_request *req, const cJSON *obj, const place *at,
                       int in_multi)
{
    static const char *const part_keys[CG_PART_COUNT] = {"specification", "description", "state"};
    const cJSON *j;
    char f[48], ex[48];
    int err, op, k;

    it->part = -1;
    it->folder = CG_ROOT_FOLDER;
    it->max = CG_REQ_AUDIT_DEFAULT;
    if ((err = field(&j, req, obj, at, "op", 1)) < 0)
        return err;
    if (!cJSON_IsString(j) || j->valuestring == NULL)
        return refuse(req, field_name(f, at, "op"), "expected an operation name, got %s",
                      cg_json__kind(j));
    for (op = CG_OP_NONE + 1; op < CG_OP_COUNT; op++)
        if (strcmp(j->valuestring, op_names[op]) == 0)
            break;
    if (op == CG_OP_COUNT)
        return refuse(req, field_name(f, at, "op"),
                      "unknown operation \"%s\" (expected register, unregister, get, update, "
                      "lock, bind, unbind, list, lookup, find, multi, health, stats, members, "
                      "shutdown or audit)",
                      cg_json__excerpt(ex, j->valuestring));
    if (in_multi && op >= CG_OP_MULTI)
        return refuse(req, field_name(f, at, "op"),
                      "\"%s\" is not allowed inside a multi (only register, unregister, get, "
                      "update, lock, bind, unbind, list, lookup and find are)",
                      op_names[op]);
    if (cg_req_op_version(op) > req->version)
        return refuse(req, "v", "operation \"%s\" needs wire version %d (the request says %d)",
                      op_names[op], cg_req_op_version(op), req->version);
    it->op = (cg_req_op)op;

    switch (it->op) {
    case CG_OP_REGISTER:
        if ((err = str_field(&it->kind, req, obj, at, "kind", 0, 1)) < 0 ||
            (err = str_field(&it->service_id, req, obj, at, "service_id", 0, 1)) < 0)
            return err;
        for (k = 0; k < CG_PART_COUNT; k++)
            if ((err = json_field(&it->bodies[k], req, obj, at, part_keys[k], 0)) < 0)
                return err;
        return 0;
    case CG_OP_UNREGISTER:
        return int_field(&it->handle, req, obj, at, "handle", 0, CG_REQ_INT_MAX, 1);
    case CG_OP_GET:
        if ((err = int_field(&it->handle, req, obj, at, "handle", 0, CG_REQ_INT_MAX, 1)) < 0)
            return err;
        return part_field(&it->part, req, obj, at, "part", 0);
    case CG_OP_UPDATE:
        if ((err = int_field(&it->handle, req, obj, at, "handle", 0, CG_REQ_INT_MAX, 1)) < 0 ||
            (err = part_field(&it->part, req, obj, at, "part", 1)) < 0 ||
            (err = int_field(&it->expected, req, obj, at, "expected", 1, CG_REQ_INT_MAX, 1)) < 0)
            return err;
        return json_field(&it->body, req, obj, at, "body", 1);
    case CG_OP_LOCK:
        if ((err = int_field(&it->handle, req, obj, at, "handle", 0, CG_REQ_INT_MAX, 1)) < 0)
            return err;
        return part_field(&it->part, req, obj, at, "part", 1);
    case CG_OP_BIND:
        if ((err = int_field(&it->folder, req, obj, at, "folder", 0, CG_REQ_INT_MAX, 0)) < 0 ||
            (err = str_field(&it->name, req, obj, at, "name", 1, 0)) < 0)
            return err;
        return int_field(&it->target, req, obj, at, "target", 0, CG_REQ_INT_MAX, 1);
    case CG_OP_UNBIND:
    case CG_OP_LOOKUP:
        if ((err = int_field(&it->folder, req, obj, at, "folder", 0, CG_REQ_INT_MAX, 0)) < 0)
            return err;
        return str_field(&it->name, req, obj, at, "name", 1, 0);
    case CG_OP_LIST:
        return int_field(&it->folder, req, obj, at, "folder", 0, CG_REQ_INT_MAX, 0);
    case CG_OP_FIND:
        return str_field(&it->service_id, req, obj, at, "service_id", 1, 0);
    case CG_OP_AUDIT:
        return int_field(&it->max, req, obj, at, "max", 1, CG_AUDIT_MAX_ENTRIES, 0);
    default: /* multi (decoded by the caller), health, stats, members, shutdown: no fields */
        return 0;
    }
}

static void item_dispose(cg_req_item *it)
{
    int k;
    free(it->body);
    free(it->kind);
    free(it->service_id);
    free(it->name);
    for (k = 0; k < CG_PART_COUNT; k++)
        free(it->bodies[k]);
    memset(it, 0, sizeof(*it));
}

/* A multi's "ops": an array of 1 to CG_REQ_MAX_OPS operation objects. */
static int decode_ops(cg_request *req, const cJSON *root)
{
    static const place top = {""};
    const cJSON *arr, *el;
    size_t n = 0, i;
    int err;

    if ((err = field(&arr, req, root, &top, "ops", 1)) < 0)
        return err;
    if (!cJSON_IsArray(arr))
        return refuse(req, "ops", "expected an array of operations, got %s", cg_json__kind(arr));
    for (el = arr->child; el; el = el->next)
        if (++n > CG_REQ_MAX_OPS)
            return refuse(req, "ops", "more than the limit of %d operations", CG_REQ_MAX_OPS);
    if (n == 0)
        return refuse(req, "ops", "empty (a multi runs at least one operation)");
    if ((req->ops = calloc(n, sizeof(*req->ops))) == NULL)
        return cg_error_nomem();
    req->n_ops = n;
    for (i = 0, el = arr->child; el; el = el->next, i++) {
        place at;
        char f[48];
        snprintf(at.prefix, sizeof(at.prefix), "ops[%zu].", i);
        req->op_index = (int)i;
        if (!cJSON_IsObject(el)) {
            snprintf(f, sizeof(f), "ops[%zu]", i);
            return refuse(req, f, "expected an operation object, got %s", cg_json__kind(el));
        }
        if ((err = decode_item(&req->ops[i], req, el, &at, 1)) < 0)
            return err;
    }
    req->op_index = -1;
    return 0;
}

/* The correlation id, if `j` is a valid one: 1 (and req->id set), else 0. */
static int take_id(cg_request *req, const cJSON *j)
{
    if (cJSON_IsString(j) && j->valuestring) {
        size_t n = strlen(j->valuestring);
        if (n == 0 || n > CG_REQ_ID_MAX)
            return 0;
        memcpy(req->id_str, j->valuestring, n + 1);
        req->id_type = CG_REQ_ID_STRING;
        return 1;
    }
    if (cJSON_IsNumber(j) && isfinite(j->valuedouble) && j->valuedouble == floor(j->valuedouble) &&
        fabs(j->valuedouble) <= (double)CG_REQ_INT_MAX) {
        req->id_int = (int64_t)j->valuedouble;
        req->id_type = CG_REQ_ID_INT;
        return 1;
    }
    return 0;
}

int cg_request_decode(cg_request *req, const char *data, size_t len)
{
    static const place top = {""};
    cJSON *root = NULL;
    const char *end = data;
    const cJSON *j, *c;
    char num[40];
    size_t at;
    int err, seen = 0;

    memset(req, 0, sizeof(*req));
    req->op_index = -1;
    if (len > CG_REQ_MAX)
        return refuse(req, "", "%zu bytes, more than the limit of %d", len, CG_REQ_MAX);
    if (data == NULL || len == 0)
        return refuse(req, "", "empty");
    if (memchr(data, '\0', len) != NULL)
        return refuse(req, "", "NUL byte at offset %zu",
                      (size_t)((const char *)memchr(data, '\0', len) - data));
    if ((at = find_bad_utf8((const unsigned char *)data, len)) < len)
        return refuse(req, "", "not UTF-8 (invalid byte at offset %zu)", at);
    if ((at = cg_json__nul_escape(data, len)) < len)
        return refuse(req, "", "\\u0000 (a NUL character) at offset %zu", at);
    if ((root = cJSON_ParseWithLengthOpts(data, len, &end, 0)) == NULL) {
        if (end < data || end > data + len)
            end = data;
        err = refuse(req, "", "not JSON (syntax error at offset %zu)", (size_t)(end - data));
        goto done;
    }
    for (at = (size_t)(end - data); at < len; at++)
        if (!strchr(" \t\r\n", data[at])) {
            err = refuse(req, "", "data after the JSON value at offset %zu", at);
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        err = refuse(req, "", "expected a JSON object, got %s", cg_json__kind(root));
        goto done;
    }

    /* The id first, leniently (exactly one valid "id"), so every later refusal can echo it. */
    for (c = root->child; c; c = c->next)
        if (c->string && strcmp(c->string, "id") == 0)
            seen++;
    if (seen == 1 && (err = field(&j, req, root, &top, "id", 1)) == 0)
        take_id(req, j);

    /* The version: a request of another version may have any other shape. */
    if ((err = field(&j, req, root, &top, "v", 1)) < 0)
        goto done;
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble) ||
        j->valuedouble != floor(j->valuedouble) || fabs(j->valuedouble) > (double)CG_REQ_INT_MAX) {
        err = refuse(req, "v", "expected an integer wire version, got %s",
                     cJSON_IsNumber(j) && isfinite(j->valuedouble)
                         ? cg_json__number_text(num, j->valuedouble)
                         : cg_json__kind(j));
        goto done;
    }
    if (j->valuedouble < CG_REQ_WIRE_VERSION || j->valuedouble > CG_REQ_WIRE_VERSION_MAX) {
        err = refuse(req, "v", "unknown wire version %s (this daemon speaks %d to %d)",
                     cg_json__number_text(num, j->valuedouble), CG_REQ_WIRE_VERSION,
                     CG_REQ_WIRE_VERSION_MAX);
        goto done;
    }
    req->version = (int)j->valuedouble;

    /* The id, strictly this time. */
    if ((err = field(&j, req, root, &top, "id", 1)) < 0)
        goto done;
    if (!take_id(req, j)) {
        err = refuse(req, "id",
                     "expected a string of 1 to %d bytes or an integer within +-(2^53 - 1), "
                     "got %s",
                     CG_REQ_ID_MAX, cg_json__kind(j));
        goto done;
    }

    if ((err = decode_item(&req->item, req, root, &top, 0)) < 0)
        goto done;
    if (req->item.op == CG_OP_MULTI)
        err = decode_ops(req, root);
done:
    cJSON_Delete(root);
    return err;
}

void cg_request_dispose(cg_request *req)
{
    size_t i;
    if (req == NULL)
        return;
    item_dispose(&req->item);
    for (i = 0; i < req->n_ops; i++)
        item_dispose(&req->ops[i]);
    free(req->ops);
    req->ops = NULL;
    req->n_ops = 0;
}

/* ---- the encoder ---------------------------------------------------------------------- */

/* The version the encoder writes: the request's own, or the lowest that has its op when that
 * is higher (a version the codec does not speak is left for the decoder to refuse). */
static int encoded_version(const cg_request *req)
{
    int op = cg_req_op_version(req->item.op);
    return req->version > op ? req->version : op;
}

/* Refuse to encode: the request cannot be written so that the decoder would take it. */
static int unencodable(const char *field, const char *fmt, ...) CG_PRINTF(2, 3);
static int unencodable(const char *field, const char *fmt, ...)
{
    va_list ap;
    int err;
    va_start(ap, fmt);
    err = vrefusal(field, fmt, ap);
    va_end(ap);
    return err;
}

static int put_int(cJSON *o, const char *name, int64_t v)
{
    char t[24];
    snprintf(t, sizeof(t), "%lld", (long long)v);
    return cJSON_AddRawToObject(o, name, t) ? 0 : cg_error_nomem();
}

/* A string field; NULL is left out, or refused as missing when required. */
static int put_str(cJSON *o, const place *at, const char *name, const char *s, int required)
{
    char f[48];
    size_t n, bad;
    if (s == NULL)
        return required ? unencodable(field_name(f, at, name), "missing") : 0;
    n = strlen(s);
    if ((bad = find_bad_utf8((const unsigned char *)s, n)) < n)
        return unencodable(field_name(f, at, name), "not UTF-8 (invalid byte at offset %zu)", bad);
    return cJSON_AddStringToObject(o, name, s) ? 0 : cg_error_nomem();
}

/* A field holding a JSON text (a body), written compactly; NULL as for put_str. */
static int put_json(cJSON *o, const place *at, const char *name, const char *text, int required)
{
    const char *end = NULL;
    char f[48];
    size_t n, bad;
    cJSON *j;
    if (text == NULL)
        return required ? unencodable(field_name(f, at, name), "missing") : 0;
    n = strlen(text);
    if ((bad = find_bad_utf8((const unsigned char *)text, n)) < n)
        return unencodable(field_name(f, at, name), "not UTF-8 (invalid byte at offset %zu)", bad);
    if ((bad = cg_json__nul_escape(text, n)) < n)
        return unencodable(field_name(f, at, name), "\\u0000 (a NUL character) at offset %zu", bad);
    if ((j = cJSON_ParseWithLengthOpts(text, n, &end, 0)) == NULL) {
        bad = end >= text && end <= text + n ? (size_t)(end - text) : 0;
        return unencodable(field_name(f, at, name), "not a JSON text (syntax error at offset %zu)",
                           bad);
    }
    for (bad = (size_t)(end - text); bad < n; bad++)
        if (!strchr(" \t\r\n", text[bad])) {
            cJSON_Delete(j);
            return unencodable(field_name(f, at, name), "data after the JSON value at offset %zu",
                               bad);
        }
    if (number_out_of_range(j) != NULL) {
        cJSON_Delete(j);
        return unencodable(field_name(f, at, name),
                           "a number beyond the range of a double (cJSON would "
                           "not keep it; magnitudes up to 1.79769313486231e308)");
    }
    if (!cJSON_AddItemToObject(o, name, j)) {
        cJSON_Delete(j);
        return cg_error_nomem();
    }
    return 0;
}

/* A part field (-1 is left out, or refused as missing when required). */
static int put_part(cJSON *o, const place *at, const char *name, int part, int required)
{
    char f[48];
    if (part < 0)
        return required ? unencodable(field_name(f, at, name), "missing") : 0;
    if (part >= CG_PART_COUNT)
        return unencodable(field_name(f, at, name), "unknown part %d (expected 0 to %d)", part,
                           CG_PART_COUNT - 1);
    return cJSON_AddStringToObject(o, name, cg_part_kind_name((cg_part_kind)part))
               ? 0
               : cg_error_nomem();
}

/* One operation's "op" and fields, exactly those decode_item() reads for it. Ranges are left
 * to the decoder, which judges the whole encoding (cg_request_encode). */
static int encode_item(cJSON *o, const cg_req_item *it, const place *at)
{
    static const char *const part_keys[CG_PART_COUNT] = {"specification", "description", "state"};
    char f[48];
    int err = 0, k;

    if (it->op <= CG_OP_NONE || it->op >= CG_OP_COUNT)
        return unencodable(field_name(f, at, "op"), "no operation %d", (int)it->op);
    if (!cJSON_AddStringToObject(o, "op", op_names[it->op]))
        return cg_error_nomem();
    switch (it->op) {
    case CG_OP_REGISTER:
        if ((err = put_str(o, at, "kind", it->kind, 0)) < 0 ||
            (err = put_str(o, at, "service_id", it->service_id, 0)) < 0)
            return err;
        for (k = 0; k < CG_PART_COUNT && err == 0; k++)
            err = put_json(o, at, part_keys[k], it->bodies[k], 0);
        return err;
    case CG_OP_UNREGISTER:
        return put_int(o, "handle", it->handle);
    case CG_OP_GET:
        if ((err = put_int(o, "handle", it->handle)) < 0)
            return err;
        return put_part(o, at, "part", it->part, 0);
    case CG_OP_UPDATE:
        if ((err = put_int(o, "handle", it->handle)) < 0 ||
            (err = put_part(o, at, "part", it->part, 1)) < 0 ||
            (err = put_int(o, "expected", it->expected)) < 0)
            return err;
        return put_json(o, at, "body", it->body, 1);
    case CG_OP_LOCK:
        if ((err = put_int(o, "handle", it->handle)) < 0)
            return err;
        return put_part(o, at, "part", it->part, 1);
    case CG_OP_BIND:
        if ((err = put_int(o, "folder", it->folder)) < 0 ||
            (err = put_str(o, at, "name", it->name, 1)) < 0)
            return err;
        return put_int(o, "target", it->target);
    case CG_OP_UNBIND:
    case CG_OP_LOOKUP:
        if ((err = put_int(o, "folder", it->folder)) < 0)
            return err;
        return put_str(o, at, "name", it->name, 1);
    case CG_OP_LIST:
        return put_int(o, "folder", it->folder);
    case CG_OP_FIND:
        return put_str(o, at, "service_id", it->service_id, 1);
    case CG_OP_AUDIT:
        return put_int(o, "max", it->max);
    default: /* multi (its ops are the caller's), health, stats, members, shutdown */
        return 0;
    }
}

int cg_request_encode(char **out, size_t *len, const cg_request *req)
{
    static const place top = {""};
    cJSON *root = cJSON_CreateObject(), *ops, *el;
    char *text = NULL;
    cg_request check;
    size_t i, n = 0;
    int err = 0;

    *out = NULL;
    if (len)
        *len = 0;
    if (root == NULL)
        return cg_error_nomem();
    if ((err = put_int(root, "v", encoded_version(req))) < 0)
        goto done;
    if (req->id_type == CG_REQ_ID_STRING)
        err = put_str(root, &top, "id", req->id_str, 1);
    else if (req->id_type == CG_REQ_ID_INT)
        err = put_int(root, "id", req->id_int);
    else
        err = unencodable("id", "missing");
    if (err < 0 || (err = encode_item(root, &req->item, &top)) < 0)
        goto done;
    if (req->item.op == CG_OP_MULTI) {
        if ((ops = cJSON_AddArrayToObject(root, "ops")) == NULL) {
            err = cg_error_nomem();
            goto done;
        }
        if (req->n_ops > CG_REQ_MAX_OPS) {
            err = unencodable("ops", "more than the limit of %d operations", CG_REQ_MAX_OPS);
            goto done;
        }
        for (i = 0; i < req->n_ops; i++) {
            place at;
            snprintf(at.prefix, sizeof(at.prefix), "ops[%d].", (int)i);
            if ((el = cJSON_CreateObject()) == NULL || !cJSON_AddItemToArray(ops, el)) {
                cJSON_Delete(el);
                err = cg_error_nomem();
                goto done;
            }
            if ((err = encode_item(el, &req->ops[i], &at)) < 0)
                goto done;
        }
    }
    if ((text = cJSON_PrintUnformatted(root)) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    n = strlen(text);
    /* The decoder is the judge: what it refuses (a handle out of range, a multi inside a
     * multi, an id too long, a request over the size limit) is refused here, with its
     * message, so nothing this returns can be refused by a daemon of the same version. */
    err = cg_request_decode(&check, text, n);
    cg_request_dispose(&check);
    if (err < 0)
        goto done;
    if ((*out = malloc(n + 1)) == NULL) { /* one allocator: the caller free()s */
        err = cg_error_nomem();
        goto done;
    }
    memcpy(*out, text, n + 1);
    if (len)
        *len = n;
done:
    cJSON_free(text);
    cJSON_Delete(root);
    return err;
}

/* ---- equality ------------------------------------------------------------------------- */

static int str_same(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The same operation with the same values in the fields that operation has (the ones
 * decode_item() reads for it); the others are not compared. */
static int item_same(const cg_req_item *a, const cg_req_item *b)
{
    int k;
    if (a->op != b->op)
        return 0;
    switch (a->op) {
    case CG_OP_REGISTER:
        for (k = 0; k < CG_PART_COUNT; k++)
            if (!str_same(a->bodies[k], b->bodies[k]))
                return 0;
        return str_same(a->kind, b->kind) && str_same(a->service_id, b->service_id);
    case CG_OP_UNREGISTER:
        return a->handle == b->handle;
    case CG_OP_GET:
    case CG_OP_LOCK:
        return a->handle == b->handle && a->part == b->part;
    case CG_OP_UPDATE:
        return a->handle == b->handle && a->part == b->part && a->expected == b->expected &&
               str_same(a->body, b->body);
    case CG_OP_BIND:
        return a->folder == b->folder && str_same(a->name, b->name) && a->target == b->target;
    case CG_OP_UNBIND:
    case CG_OP_LOOKUP:
        return a->folder == b->folder && str_same(a->name, b->name);
    case CG_OP_LIST:
        return a->folder == b->folder;
    case CG_OP_FIND:
        return str_same(a->service_id, b->service_id);
    case CG_OP_AUDIT:
        return a->max == b->max;
    default: /* multi (its ops are compared by the caller), health, stats, members, shutdown */
        return 1;
    }
}

int cg_request_equal(const cg_request *a, const cg_request *b)
{
    size_t i;
    if (a->id_type != b->id_type || encoded_version(a) != encoded_version(b) ||
        (a->id_type == CG_REQ_ID_STRING && strcmp(a->id_str, b->id_str) != 0) ||
        (a->id_type == CG_REQ_ID_INT && a->id_int != b->id_int) || !item_same(&a->item, &b->item) ||
        a->n_ops != b->n_ops)
        return 0;
    for (i = 0; i < a->n_ops; i++)
        if (!item_same(&a->ops[i], &b->ops[i]))
            return 0;
    return 1;
}
