/*
 * message.c — encode and decode bus messages (wire versions 1 and 2; see PROTOCOL.md).
 *
 * Version 2 is version 1 plus the item kinds "names" and "find" (names and service lookups
 * cached, include/coregroup/sys/item.h). The decoder reads both; a v1 message naming one of the
 * new kinds is malformed. The encoder writes v1 unless an item needs v2, so a core of an older
 * release keeps hearing every part invalidation.
 *
 * Everything a core learns from the bus passes through cg_bus_msg_decode(), and the bus is
 * outside input: any process that can reach a forwarder can publish. So the decoder is a pure
 * function that trusts nothing and refuses rather than guesses:
 *
 *  - Size is checked before anything is parsed (CG_BUS_MSG_MAX), so a huge frame costs one
 *    comparison. cJSON limits nesting itself, so deep input cannot exhaust the stack.
 *  - A NUL byte, raw or as the escape \u0000, is refused: cJSON would hand back a C string
 *    cut at the NUL, and "g\u0000x" must not read as the valid group "g".
 *  - Bytes after the JSON value (other than white space) are refused: cJSON stops at the end
 *    of the first value and would otherwise ignore them.
 *  - Every number is a double in JSON. A field must hold an integer within
 *    [-(2^53-1), 2^53-1] and then within the field's own range; 1.5, 1e999 and 2^53 are refused.
 *  - A known field given twice is refused (which copy would a second parser pick?). Unknown
 *    fields are ignored: that is how version 1 grows (PROTOCOL.md, "Versioning").
 *  - Checks run in a fixed order — size, JSON, object, "v", "group" — so that the reason is
 *    the most useful one: a message of another version is counted as VERSION even if its
 *    other fields look nothing like ours, and a foreign group's message is counted as
 *    FOREIGN_GROUP without judging the rest.
 *
 * The encoder checks a message by the same rules before it builds the JSON, so a core never
 * publishes what its peers would drop. Integers go out as exact decimal text (cJSON's own
 * number printer rounds values near 2^53). Neither direction does I/O; the publisher and the
 * subscriber own the sockets.
 *
 * Error messages are one line, start with "bus message:", name the field (items as
 * "items[3].p") and quote at most a short, sanitised excerpt of a bad value, so a hostile
 * payload cannot write control characters or megabytes into a core's log.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "coregroup/sys/error.h"
#include "jsonin.h"
#include "message.h"

static _Thread_local int last_reason;

/* The items live in the same allocation as the message: one free() releases both. */
typedef struct {
    cg_bus_msg msg; /* first: &block->msg == block */
    cg_bus_item items[];
} msg_block;

static const char *const type_names[] = {NULL, "inval", "heartbeat", "member"};
static const char *const event_names[] = {NULL, "join", "leave", "suspect", "failed"};
static const char *const reason_names[CG_DROP_COUNT] = {"none",      "malformed",     "version",
                                                        "oversized", "foreign-group", "future-seq"};

const char *cg_bus_msg_type_name(int type)
{
    return type >= CG_MSG_INVALIDATION && type <= CG_MSG_MEMBERSHIP ? type_names[type] : "?";
}

const char *cg_member_event_name(int event)
{
    return event >= CG_MEMBER_JOIN && event <= CG_MEMBER_FAILED ? event_names[event] : "?";
}

const char *cg_bus_drop_reason_name(int reason)
{
    return reason >= 0 && reason < CG_DROP_COUNT ? reason_names[reason] : "?";
}

int cg_bus_msg_decode_reason(void)
{
    return last_reason;
}

/* ---- errors --------------------------------------------------------------------------- */

/* Refuse a message: remember the reason, set the detail, return CG_EINVALID. */
static int drop(int reason, const char *fmt, ...) CG_PRINTF(2, 3);
static int drop(int reason, const char *fmt, ...)
{
    char what[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    last_reason = reason;
    return cg_error_set(CG_EINVALID, CG_ERRCLASS_BUS, "bus message: %s", what);
}

/* As drop(), for the encoder. */
static int refuse(const char *fmt, ...) CG_PRINTF(1, 2);
static int refuse(const char *fmt, ...)
{
    char what[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return cg_error_set(CG_EINVALID, CG_ERRCLASS_BUS, "cannot encode bus message: %s", what);
}

/* ---- decoding ------------------------------------------------------------------------- */

/* Where a field is, for messages: "" at the top level, "items[3]." inside an item. */
typedef struct {
    char prefix[32];
} place;

/* Find field `name` of object `obj`: 0 and *out, or a MALFORMED drop when it is missing or
 * given twice. */
static int field(const cJSON **out, const cJSON *obj, const place *at, const char *name)
{
    const cJSON *c, *found = NULL;
    for (c = obj->child; c; c = c->next) {
        if (c->string == NULL || strcmp(c->string, name) != 0)
            continue;
        if (found)
            return drop(CG_DROP_MALFORMED, "field \"%s%s\" is given twice", at->prefix, name);
        found = c;
    }
    if (found == NULL)
        return drop(CG_DROP_MALFORMED, "field \"%s%s\" is missing", at->prefix, name);
    *out = found;
    return 0;
}

/* An integer field within [min, max] (both within +-CG_BUS_INT_MAX). */
static int int_field(int64_t *out, const cJSON *obj, const place *at, const char *name, int64_t min,
                     int64_t max)
{
    const cJSON *j = NULL;
    char num[40];
    double d;
    int err;

    if ((err = field(&j, obj, at, name)) < 0)
        return err;
    if (!cJSON_IsNumber(j))
        return drop(CG_DROP_MALFORMED, "field \"%s%s\": expected an integer, got %s", at->prefix,
                    name, cg_json__kind(j));
    d = j->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return drop(CG_DROP_MALFORMED, "field \"%s%s\": expected an integer, got %s", at->prefix,
                    name, isfinite(d) ? cg_json__number_text(num, d) : "a number out of range");
    if (d < (double)min || d > (double)max)
        return drop(CG_DROP_MALFORMED,
                    "field \"%s%s\": expected an integer from %lld to %lld, got %s", at->prefix,
                    name, (long long)min, (long long)max, cg_json__number_text(num, d));
    *out = (int64_t)d;
    return 0;
}

static int string_field(const char **out, const cJSON *obj, const place *at, const char *name)
{
    const cJSON *j = NULL;
    int err;
    if ((err = field(&j, obj, at, name)) < 0)
        return err;
    if (!cJSON_IsString(j) || j->valuestring == NULL)
        return drop(CG_DROP_MALFORMED, "field \"%s%s\": expected a string, got %s", at->prefix,
                    name, cg_json__kind(j));
    *out = j->valuestring;
    return 0;
}

/* A core name or group id field, copied into dst (CG_NAME_MAX + 1 bytes). */
static int name_field(char *dst, const cJSON *obj, const place *at, const char *name,
                      const char *what)
{
    const char *s = NULL;
    char ex[48];
    int err;
    if ((err = string_field(&s, obj, at, name)) < 0)
        return err;
    if (!cg_name_valid(s))
        return drop(CG_DROP_MALFORMED,
                    "field \"%s%s\": \"%s\" is not a valid %s (1 to 63 of A-Z a-z 0-9 . _ -, "
                    "starting with a letter or digit)",
                    at->prefix, name, cg_json__excerpt(ex, s), what);
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

/* A string field that must be one of names[1..n-1]; *out gets its index. */
static int enum_field(int *out, const cJSON *obj, const place *at, const char *name,
                      const char *const *names, int n, const char *expected)
{
    const char *s = NULL;
    char ex[48];
    int i, err;
    if ((err = string_field(&s, obj, at, name)) < 0)
        return err;
    for (i = 1; i < n; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return drop(CG_DROP_MALFORMED, "field \"%s%s\": unknown %s \"%s\" (expected %s)", at->prefix,
                name, name, cg_json__excerpt(ex, s), expected);
}

/* The invalidation's "items" array, into the block allocated here (*out). */
static int decode_items(msg_block **out, const cJSON *root, int version)
{
    static const place top = {""};
    const cJSON *arr = NULL, *it;
    msg_block *blk = NULL;
    size_t n = 0, i;
    int err;

    if ((err = field(&arr, root, &top, "items")) < 0)
        return err;
    if (!cJSON_IsArray(arr))
        return drop(CG_DROP_MALFORMED, "field \"items\": expected an array, got %s",
                    cg_json__kind(arr));
    for (it = arr->child; it; it = it->next)
        if (++n > CG_BUS_MSG_MAX_ITEMS)
            return drop(CG_DROP_MALFORMED, "field \"items\": more than the limit of %d items",
                        CG_BUS_MSG_MAX_ITEMS);
    if (n == 0)
        return drop(CG_DROP_MALFORMED,
                    "field \"items\" is empty (an invalidation lists at least one item)");
    if ((blk = calloc(1, sizeof(*blk) + n * sizeof(blk->items[0]))) == NULL)
        return cg_error_nomem();

    for (i = 0, it = arr->child; it; it = it->next, i++) {
        cg_bus_item *item = &blk->items[i];
        place at;
        const char *part = NULL;
        int kind;
        char ex[48];

        snprintf(at.prefix, sizeof(at.prefix), "items[%zu].", i);
        if (!cJSON_IsObject(it)) {
            err = drop(CG_DROP_MALFORMED, "field \"items[%zu]\": expected an object, got %s", i,
                       cg_json__kind(it));
            goto done;
        }
        if ((err = int_field(&item->handle, it, &at, "h", 0, CG_BUS_INT_MAX)) < 0 ||
            (err = string_field(&part, it, &at, "p")) < 0 ||
            (err = int_field(&item->version, it, &at, "v", 1, CG_BUS_INT_MAX)) < 0)
            goto done;
        if ((kind = cg_item_kind_parse(part, version >= CG_BUS_WIRE_V2 ? CG_ITEM_COUNT
                                                                       : CG_PART_COUNT)) < 0) {
            err = drop(CG_DROP_MALFORMED,
                       "field \"items[%zu].p\": unknown part \"%s\" (expected specification, "
                       "description or state%s)",
                       i, cg_json__excerpt(ex, part),
                       version >= CG_BUS_WIRE_V2 ? ", names or find" : "");
            goto done;
        }
        item->kind = kind;
    }
    blk->msg.items = blk->items;
    blk->msg.n_items = n;
    *out = blk;
    blk = NULL;
    err = 0;
done:
    free(blk);
    return err;
}

int cg_bus_msg_decode(cg_bus_msg **out, const char *data, size_t len, const char *expected_group)
{
    static const place top = {""};
    cJSON *root = NULL;
    const char *end = data;
    msg_block *blk = NULL;
    cg_bus_msg h; /* the message being read; copied into its block at the end */
    const cJSON *j = NULL;
    char num[40];
    int type = 0, event = 0, err;
    size_t at;

    *out = NULL;
    last_reason = CG_DROP_NONE;
    memset(&h, 0, sizeof(h));
    if (len > CG_BUS_MSG_MAX)
        return drop(CG_DROP_OVERSIZED, "%zu bytes, more than the limit of %d", len, CG_BUS_MSG_MAX);
    if (data == NULL || len == 0)
        return drop(CG_DROP_MALFORMED, "empty");
    if (memchr(data, '\0', len) != NULL)
        return drop(CG_DROP_MALFORMED, "NUL byte at offset %zu",
                    (size_t)((const char *)memchr(data, '\0', len) - data));
    if ((at = cg_json__nul_escape(data, len)) < len)
        return drop(CG_DROP_MALFORMED, "\\u0000 (a NUL character) at offset %zu", at);

    if ((root = cJSON_ParseWithLengthOpts(data, len, &end, 0)) == NULL) {
        if (end < data || end > data + len)
            end = data;
        err =
            drop(CG_DROP_MALFORMED, "not JSON (syntax error at offset %zu)", (size_t)(end - data));
        goto done;
    }
    for (at = (size_t)(end - data); at < len; at++)
        if (!strchr(" \t\r\n", data[at])) {
            err = drop(CG_DROP_MALFORMED, "data after the JSON value at offset %zu", at);
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        err = drop(CG_DROP_MALFORMED, "expected a JSON object, got %s", cg_json__kind(root));
        goto done;
    }

    /* The version first: a message of another version may have any other shape. */
    if ((err = field(&j, root, &top, "v")) < 0)
        goto done;
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble) ||
        j->valuedouble != floor(j->valuedouble) || fabs(j->valuedouble) > (double)CG_BUS_INT_MAX) {
        err = drop(CG_DROP_MALFORMED, "field \"v\": expected an integer wire version, got %s",
                   cJSON_IsNumber(j) && isfinite(j->valuedouble)
                       ? cg_json__number_text(num, j->valuedouble)
                       : cg_json__kind(j));
        goto done;
    }
    if (j->valuedouble != CG_BUS_WIRE_VERSION && j->valuedouble != CG_BUS_WIRE_V2) {
        err = drop(CG_DROP_VERSION,
                   "field \"v\": unknown wire version %s (this core reads %d and %d)",
                   cg_json__number_text(num, j->valuedouble), CG_BUS_WIRE_VERSION, CG_BUS_WIRE_V2);
        goto done;
    }
    h.version = (int)j->valuedouble;

    /* Then the group, so that another group's traffic is counted as foreign. */
    if ((err = name_field(h.group, root, &top, "group", "group id")) < 0)
        goto done;
    if (expected_group && strcmp(h.group, expected_group) != 0) {
        char ex[48];
        err = drop(CG_DROP_FOREIGN_GROUP,
                   "field \"group\": foreign group \"%s\" (this core is in \"%s\")", h.group,
                   cg_json__excerpt(ex, expected_group));
        goto done;
    }

    /* The fields every type has, then the type's own. */
    if ((err = enum_field(&type, root, &top, "type", type_names, 4, "inval, heartbeat or member")) <
            0 ||
        (err = name_field(h.origin, root, &top, "origin", "core name")) < 0 ||
        (err = int_field(&h.incarnation, root, &top, "inc", 1, CG_BUS_INT_MAX)) < 0 ||
        (err = int_field(&h.at_us, root, &top, "at", 0, CG_BUS_INT_MAX)) < 0)
        goto done;
    h.type = (cg_bus_msg_type)type;
    switch (h.type) {
    case CG_MSG_INVALIDATION:
        if ((err = int_field(&h.seq, root, &top, "seq", 1, CG_BUS_INT_MAX)) == 0)
            err = decode_items(&blk, root, h.version);
        break;
    case CG_MSG_HEARTBEAT:
        if ((err = int_field(&h.seq, root, &top, "seq", 0, CG_BUS_INT_MAX)) == 0)
            err = int_field(&h.applied_seq, root, &top, "applied", 0, CG_BUS_INT_MAX);
        break;
    case CG_MSG_MEMBERSHIP:
        if ((err = enum_field(&event, root, &top, "event", event_names, 5,
                              "join, leave, suspect or failed")) < 0 ||
            (err = name_field(h.member, root, &top, "member", "core name")) < 0)
            break;
        h.event = (cg_member_event)event;
        err = int_field(&h.member_incarnation, root, &top, "minc", 1, CG_BUS_INT_MAX);
        break;
    }
    if (err < 0)
        goto done;
    if (blk == NULL && (blk = calloc(1, sizeof(*blk))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    h.items = blk->msg.items; /* set by decode_items(), else NULL */
    h.n_items = blk->msg.n_items;
    blk->msg = h;
    *out = &blk->msg;
    blk = NULL;
done:
    free(blk);
    cJSON_Delete(root);
    return err;
}

void cg_bus_msg_free(cg_bus_msg *msg)
{
    free(msg); /* the msg_block: items live in the same allocation */
}

/* ---- encoding ------------------------------------------------------------------------- */

static int check_int(const char *name, int64_t v, int64_t min, int64_t max)
{
    if (v < min || v > max)
        return refuse("field \"%s\": %lld is outside %lld to %lld", name, (long long)v,
                      (long long)min, (long long)max);
    return 0;
}

static int check_name(const char *name, const char *value)
{
    char ex[48];
    if (!cg_name_valid(value))
        return refuse("field \"%s\": \"%s\" is not a valid name", name,
                      cg_json__excerpt(ex, value));
    return 0;
}

/* The version a message is written as: its own, or when 0 the lowest that carries its items. */
static int wire_version(const cg_bus_msg *m)
{
    size_t i;
    if (m->version != 0)
        return m->version;
    if (m->type == CG_MSG_INVALIDATION && m->items != NULL)
        for (i = 0; i < m->n_items; i++)
            if (m->items[i].kind >= CG_PART_COUNT)
                return CG_BUS_WIRE_V2;
    return CG_BUS_WIRE_VERSION;
}

/* The message by the decoder's rules (see PROTOCOL.md). */
static int check_msg(const cg_bus_msg *m)
{
    size_t i;
    int err, version = wire_version(m);
    char name[32];

    if (version != CG_BUS_WIRE_VERSION && version != CG_BUS_WIRE_V2)
        return refuse("field \"v\": this core writes wire versions %d and %d, not %d",
                      CG_BUS_WIRE_VERSION, CG_BUS_WIRE_V2, m->version);
    if (m->type < CG_MSG_INVALIDATION || m->type > CG_MSG_MEMBERSHIP)
        return refuse("field \"type\": unknown type %d", (int)m->type);
    if ((err = check_name("group", m->group)) < 0 || (err = check_name("origin", m->origin)) < 0 ||
        (err = check_int("inc", m->incarnation, 1, CG_BUS_INT_MAX)) < 0 ||
        (err = check_int("at", m->at_us, 0, CG_BUS_INT_MAX)) < 0)
        return err;
    switch (m->type) {
    case CG_MSG_INVALIDATION:
        if ((err = check_int("seq", m->seq, 1, CG_BUS_INT_MAX)) < 0)
            return err;
        if (m->n_items == 0 || m->items == NULL)
            return refuse("field \"items\": an invalidation lists at least one item");
        if (m->n_items > CG_BUS_MSG_MAX_ITEMS)
            return refuse("field \"items\": %zu items, more than the limit of %d", m->n_items,
                          CG_BUS_MSG_MAX_ITEMS);
        for (i = 0; i < m->n_items; i++) {
            const cg_bus_item *it = &m->items[i];
            snprintf(name, sizeof(name), "items[%zu].h", i);
            if ((err = check_int(name, it->handle, 0, CG_BUS_INT_MAX)) < 0)
                return err;
            snprintf(name, sizeof(name), "items[%zu].v", i);
            if ((err = check_int(name, it->version, 1, CG_BUS_INT_MAX)) < 0)
                return err;
            if (it->kind < 0 ||
                it->kind >= (version >= CG_BUS_WIRE_V2 ? CG_ITEM_COUNT : CG_PART_COUNT))
                return refuse("field \"items[%zu].p\": unknown part %d in wire version %d", i,
                              it->kind, version);
        }
        return 0;
    case CG_MSG_HEARTBEAT:
        if ((err = check_int("seq", m->seq, 0, CG_BUS_INT_MAX)) < 0)
            return err;
        return check_int("applied", m->applied_seq, 0, CG_BUS_INT_MAX);
    case CG_MSG_MEMBERSHIP:
        if (m->event < CG_MEMBER_JOIN || m->event > CG_MEMBER_FAILED)
            return refuse("field \"event\": unknown event %d", (int)m->event);
        if ((err = check_name("member", m->member)) < 0)
            return err;
        return check_int("minc", m->member_incarnation, 1, CG_BUS_INT_MAX);
    }
    return 0;
}

/* Add an integer or a string; NULL from cJSON means out of memory. Integers go in as raw
 * number text printed here: cJSON prints a double with 15 significant digits whenever that
 * reads back "close enough" (relative to DBL_EPSILON), which near 2^53 is off by one or two,
 * so 9007199254740991 would be sent as 9.00719925474099e+15. */
static int add_num(cJSON *obj, const char *name, int64_t v)
{
    char text[24];
    snprintf(text, sizeof(text), "%lld", (long long)v);
    return cJSON_AddRawToObject(obj, name, text) ? 0 : cg_error_nomem();
}

static int add_str(cJSON *obj, const char *name, const char *s)
{
    return cJSON_AddStringToObject(obj, name, s) ? 0 : cg_error_nomem();
}

int cg_bus_msg_encode(char **out, size_t *len, const cg_bus_msg *msg)
{
    cJSON *root = NULL, *arr, *obj;
    char *text = NULL;
    size_t i, n;
    int err;

    *out = NULL;
    *len = 0;
    if ((err = check_msg(msg)) < 0)
        return err;
    if ((root = cJSON_CreateObject()) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    /* Field order is fixed (readers do not depend on it; people reading a capture do). */
    if ((err = add_num(root, "v", wire_version(msg))) < 0 ||
        (err = add_str(root, "type", cg_bus_msg_type_name(msg->type))) < 0 ||
        (err = add_str(root, "group", msg->group)) < 0)
        goto done;
    if (msg->type != CG_MSG_MEMBERSHIP && (err = add_num(root, "seq", msg->seq)) < 0)
        goto done;
    if ((err = add_str(root, "origin", msg->origin)) < 0 ||
        (err = add_num(root, "inc", msg->incarnation)) < 0 ||
        (err = add_num(root, "at", msg->at_us)) < 0)
        goto done;

    switch (msg->type) {
    case CG_MSG_INVALIDATION:
        if ((arr = cJSON_AddArrayToObject(root, "items")) == NULL) {
            err = cg_error_nomem();
            goto done;
        }
        for (i = 0; i < msg->n_items; i++) {
            if ((obj = cJSON_CreateObject()) == NULL) {
                err = cg_error_nomem();
                goto done;
            }
            cJSON_AddItemToArray(arr, obj); /* arr owns obj from here */
            if ((err = add_num(obj, "h", msg->items[i].handle)) < 0 ||
                (err = add_str(obj, "p", cg_item_kind_name(msg->items[i].kind))) < 0 ||
                (err = add_num(obj, "v", msg->items[i].version)) < 0)
                goto done;
        }
        break;
    case CG_MSG_HEARTBEAT:
        err = add_num(root, "applied", msg->applied_seq);
        break;
    case CG_MSG_MEMBERSHIP:
        if ((err = add_str(root, "event", cg_member_event_name(msg->event))) < 0 ||
            (err = add_str(root, "member", msg->member)) < 0)
            break;
        err = add_num(root, "minc", msg->member_incarnation);
        break;
    }
    if (err < 0)
        goto done;

    /* cJSON allocates with its own hooks; hand the caller a malloc() copy it frees with free(). */
    if ((text = cJSON_PrintUnformatted(root)) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    n = strlen(text);
    if (n > CG_BUS_MSG_MAX) {
        err = refuse("%zu bytes, more than the limit of %d", n, CG_BUS_MSG_MAX);
        goto done;
    }
    if ((*out = malloc(n + 1)) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    memcpy(*out, text, n + 1);
    *len = n;
done:
    cJSON_free(text);
    cJSON_Delete(root);
    return err;
}

/* ---- topics --------------------------------------------------------------------------- */

int cg_bus_topic(char *buf, size_t bufsz, const char *group)
{
    size_t n;
    char ex[48];
    if (!cg_name_valid(group))
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_BUS, "topic: \"%s\" is not a valid group id",
                            group ? cg_json__excerpt(ex, group) : "(null)");
    n = strlen(group);
    if (bufsz < n + 2)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_BUS,
                            "topic: a buffer of %zu bytes cannot hold \"%s/\"", bufsz, group);
    memcpy(buf, group, n);
    buf[n] = '/';
    buf[n + 1] = '\0';
    return 0;
}
