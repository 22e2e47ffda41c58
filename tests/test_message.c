/*
 * test_message.c — the bus wire format (invalidation/message.c): every message type survives
 * a round trip, every kind of bad input is refused with its drop reason and a message naming
 * the field, boundary values on both sides of each limit, and no truncation or byte mutation
 * of a valid message makes the decoder do anything but accept or refuse it. No database.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "coregroup.h"
#include "message.h"
#include "testutil.h"

#define INVAL                                                                                      \
    "{\"v\":1,\"type\":\"inval\",\"group\":\"payments\",\"seq\":42,\"origin\":\"core-a\","         \
    "\"inc\":3,\"at\":1763780000123456,\"items\":[{\"h\":12,\"p\":\"state\",\"v\":7},"             \
    "{\"h\":0,\"p\":\"specification\",\"v\":2}]}"
#define HEARTBEAT                                                                                  \
    "{\"v\":1,\"type\":\"heartbeat\",\"group\":\"payments\",\"seq\":42,\"origin\":\"core-b\","     \
    "\"inc\":1,\"at\":1763780001000000,\"applied\":41}"
#define MEMBER                                                                                     \
    "{\"v\":1,\"type\":\"member\",\"group\":\"payments\",\"origin\":\"core-a\",\"inc\":3,"         \
    "\"at\":1763780002000000,\"event\":\"suspect\",\"member\":\"core-c\",\"minc\":5}"

#define MAXINT "9007199254740991"

/* Decode len bytes from an exactly sized heap copy, so the sanitizer sees any read past the
 * end (the decoder must not need a NUL terminator). */
static int decode_n(cg_bus_msg **out, const char *data, size_t len, const char *group)
{
    char *copy = malloc(len ? len : 1);
    int err;
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, data, len);
    err = cg_bus_msg_decode(out, copy, len, group);
    free(copy);
    return err;
}

static cg_bus_msg *decode_ok(const char *json, const char *group)
{
    cg_bus_msg *m = NULL;
    int err = decode_n(&m, json, strlen(json), group);
    ck_assert_msg(err == 0, "decode failed: %s\n  input: %s", cg_error_last()->message, json);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(cg_bus_msg_decode_reason(), CG_DROP_NONE);
    return m;
}

/* Decode len bytes that must be refused with `reason` and a message containing want1/want2. */
static void refused_n(const char *data, size_t len, const char *group, int reason,
                      const char *want1, const char *want2)
{
    cg_bus_msg *m = (cg_bus_msg *)1;
    int err = decode_n(&m, data, len, group);
    const char *msg = cg_error_last()->message;
    ck_assert_msg(err == CG_EINVALID, "expected CG_EINVALID, got %d for %.200s", err, data);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(cg_error_last()->klass, CG_ERRCLASS_BUS);
    ck_assert_msg(cg_bus_msg_decode_reason() == reason, "reason %s, expected %s (%s)",
                  cg_bus_drop_reason_name(cg_bus_msg_decode_reason()),
                  cg_bus_drop_reason_name(reason), msg);
    ck_assert_msg(strncmp(msg, "bus message: ", 13) == 0, "%s", msg);
    ck_assert_msg(strchr(msg, '\n') == NULL, "not one line: %s", msg);
    ck_assert_msg(strstr(msg, want1) != NULL, "\"%s\" not in \"%s\"", want1, msg);
    if (want2)
        ck_assert_msg(strstr(msg, want2) != NULL, "\"%s\" not in \"%s\"", want2, msg);
}

static void refused(const char *json, int reason, const char *want1, const char *want2)
{
    refused_n(json, strlen(json), "payments", reason, want1, want2);
}

/* `json` with field `name` (a top-level field, or one of the first item when item is set)
 * replaced by `value` (JSON text), or removed when value is NULL. The caller frees. */
static char *with_field(const char *json, int item, const char *name, const char *value)
{
    cJSON *root = cJSON_Parse(json), *obj = root;
    char *text;
    ck_assert_ptr_nonnull(root);
    if (item)
        obj = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "items"), 0);
    cJSON_DeleteItemFromObjectCaseSensitive(obj, name);
    /* raw: the value goes on the wire exactly as written (cJSON would round numbers) */
    if (value)
        ck_assert_ptr_nonnull(cJSON_AddRawToObject(obj, name, value));
    text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

/* Refuse `json` with field `name` set to `value` (NULL: removed), naming the field. */
static void refused_with(const char *json, int item, const char *name, const char *value,
                         const char *want)
{
    char *text = with_field(json, item, name, value);
    char field[64];
    snprintf(field, sizeof(field), "\"%s%s\"", item ? "items[0]." : "", name);
    refused(text, CG_DROP_MALFORMED, field, want);
    cJSON_free(text);
}

/* As refused_with, for a value holding the escape \u0000. */
static void refused_nul(const char *json, int item, const char *name, const char *value,
                        const char *want)
{
    char *text = with_field(json, item, name, value);
    refused(text, CG_DROP_MALFORMED, "\\u0000 (a NUL character)", want);
    cJSON_free(text);
}

static void accepted_with(const char *json, int item, const char *name, const char *value)
{
    char *text = with_field(json, item, name, value);
    cg_bus_msg_free(decode_ok(text, "payments"));
    cJSON_free(text);
}

static char *encode_ok(const cg_bus_msg *m, size_t *len)
{
    char *out = NULL;
    size_t n = 0;
    int err = cg_bus_msg_encode(&out, &n, m);
    ck_assert_msg(err == 0, "encode failed: %s", cg_error_last()->message);
    ck_assert_ptr_nonnull(out);
    ck_assert_uint_eq(strlen(out), n);
    if (len)
        *len = n;
    return out;
}

static void encode_refused(const cg_bus_msg *m, const char *want)
{
    char *out = (char *)1;
    size_t n = 7;
    int err = cg_bus_msg_encode(&out, &n, m);
    ck_assert_int_eq(err, CG_EINVALID);
    ck_assert_ptr_null(out);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(cg_error_last()->klass, CG_ERRCLASS_BUS);
    ck_assert_msg(strstr(cg_error_last()->message, want) != NULL, "\"%s\" not in \"%s\"", want,
                  cg_error_last()->message);
}

static cg_bus_item example_items[2] = {{12, CG_PART_STATE, 7}, {0, CG_PART_SPECIFICATION, 2}};

static cg_bus_msg example_inval(void)
{
    cg_bus_msg m;
    memset(&m, 0, sizeof(m));
    m.type = CG_MSG_INVALIDATION;
    strcpy(m.group, "payments");
    m.seq = 42;
    strcpy(m.origin, "core-a");
    m.incarnation = 3;
    m.at_us = 1763780000123456;
    m.items = example_items;
    m.n_items = 2;
    return m;
}

static cg_bus_msg example_heartbeat(void)
{
    cg_bus_msg m;
    memset(&m, 0, sizeof(m));
    m.type = CG_MSG_HEARTBEAT;
    strcpy(m.group, "payments");
    m.seq = 42;
    strcpy(m.origin, "core-b");
    m.incarnation = 1;
    m.at_us = 1763780001000000;
    m.applied_seq = 41;
    return m;
}

static cg_bus_msg example_member(void)
{
    cg_bus_msg m;
    memset(&m, 0, sizeof(m));
    m.type = CG_MSG_MEMBERSHIP;
    strcpy(m.group, "payments");
    strcpy(m.origin, "core-a");
    m.incarnation = 3;
    m.at_us = 1763780002000000;
    m.event = CG_MEMBER_SUSPECT;
    strcpy(m.member, "core-c");
    m.member_incarnation = 5;
    return m;
}

/* ---- round trips ---------------------------------------------------------------------- */

START_TEST(invalidation_round_trip)
{
    cg_bus_msg in = example_inval(), *m;
    char *text = encode_ok(&in, NULL);
    /* the exact bytes documented in PROTOCOL.md */
    ck_assert_str_eq(text, INVAL);
    m = decode_ok(text, "payments");
    ck_assert_int_eq(m->type, CG_MSG_INVALIDATION);
    ck_assert_int_eq(m->version, CG_BUS_WIRE_VERSION);
    ck_assert_str_eq(m->group, "payments");
    ck_assert_int_eq(m->seq, 42);
    ck_assert_str_eq(m->origin, "core-a");
    ck_assert_int_eq(m->incarnation, 3);
    ck_assert_int_eq(m->at_us, 1763780000123456);
    ck_assert_uint_eq(m->n_items, 2);
    ck_assert_int_eq(m->items[0].handle, 12);
    ck_assert_int_eq(m->items[0].kind, CG_PART_STATE);
    ck_assert_int_eq(m->items[0].version, 7);
    ck_assert_int_eq(m->items[1].handle, 0);
    ck_assert_int_eq(m->items[1].kind, CG_PART_SPECIFICATION);
    ck_assert_int_eq(m->items[1].version, 2);
    ck_assert_int_eq(m->applied_seq, 0);
    ck_assert_str_eq(m->member, "");
    cg_bus_msg_free(m);
    free(text);
}
END_TEST

/* Wire version 2 (PROTOCOL.md): the item kinds "names" and "find"; a message is written as
 * v1 unless an item needs v2; v1 may not name them. */
#define INVAL_V2                                                                                   \
    "{\"v\":2,\"type\":\"inval\",\"group\":\"payments\",\"seq\":43,\"origin\":\"core-a\","         \
    "\"inc\":3,\"at\":1763780000223456,\"items\":[{\"h\":0,\"p\":\"names\",\"v\":43},"             \
    "{\"h\":12,\"p\":\"specification\",\"v\":2}]}"

START_TEST(wire_version_2)
{
    cg_bus_item items[2] = {{0, CG_ITEM_NAMES, 43}, {12, CG_PART_SPECIFICATION, 2}};
    cg_bus_msg in = example_inval(), *m;
    char *text;

    in.seq = 43;
    in.at_us = 1763780000223456;
    in.items = items;
    in.n_items = 2;
    /* the exact bytes documented in PROTOCOL.md, "Wire version 2" */
    text = encode_ok(&in, NULL);
    ck_assert_str_eq(text, INVAL_V2);
    m = decode_ok(text, "payments");
    ck_assert_int_eq(m->version, CG_BUS_WIRE_V2);
    ck_assert_uint_eq(m->n_items, 2);
    ck_assert_int_eq(m->items[0].kind, CG_ITEM_NAMES);
    ck_assert_int_eq(m->items[0].handle, 0);
    ck_assert_int_eq(m->items[0].version, 43);
    ck_assert_int_eq(m->items[1].kind, CG_PART_SPECIFICATION);
    cg_bus_msg_free(m);
    free(text);

    /* "find": the service key */
    items[0] = (cg_bus_item){cg_service_key("printer-7"), CG_ITEM_FIND, 43};
    text = encode_ok(&in, NULL);
    ck_assert_ptr_nonnull(strstr(text, "\"p\":\"find\""));
    ck_assert_ptr_nonnull(strstr(text, "{\"v\":2,"));
    m = decode_ok(text, "payments");
    ck_assert_int_eq(m->items[0].kind, CG_ITEM_FIND);
    ck_assert_int_eq(m->items[0].handle, cg_service_key("printer-7"));
    cg_bus_msg_free(m);
    free(text);
    ck_assert_int_ge(cg_service_key("printer-7"), 0);
    ck_assert_int_le(cg_service_key("printer-7"), CG_BUS_INT_MAX);
    ck_assert_int_ne(cg_service_key("printer-7"), cg_service_key("printer-8"));

    /* parts only: still v1, byte for byte (an older core hears it) */
    in = example_inval();
    text = encode_ok(&in, NULL);
    ck_assert_str_eq(text, INVAL);
    free(text);
    /* a v2 message of parts only is read, and written back as v2 */
    in.version = 2;
    text = encode_ok(&in, NULL);
    ck_assert_ptr_nonnull(strstr(text, "{\"v\":2,"));
    m = decode_ok(text, "payments");
    ck_assert_int_eq(m->version, 2);
    cg_bus_msg_free(m);
    free(text);
    /* v1 may not carry the new kinds, neither read nor written */
    in = example_inval();
    in.version = 1;
    items[0] = (cg_bus_item){0, CG_ITEM_NAMES, 5};
    in.items = items;
    in.n_items = 2;
    encode_refused(&in, "items[0].p");
    refused("{\"v\":1,\"type\":\"inval\",\"group\":\"payments\",\"seq\":43,\"origin\":\"core-a\","
            "\"inc\":3,\"at\":1,\"items\":[{\"h\":0,\"p\":\"names\",\"v\":5}]}",
            CG_DROP_MALFORMED, "unknown part \"names\"", "description or state)");
    refused("{\"v\":2,\"type\":\"inval\",\"group\":\"payments\",\"seq\":43,\"origin\":\"core-a\","
            "\"inc\":3,\"at\":1,\"items\":[{\"h\":0,\"p\":\"Names\",\"v\":5}]}",
            CG_DROP_MALFORMED, "unknown part \"Names\"", "names or find");
    /* heartbeats and membership events read the same in v2 */
    m = decode_ok("{\"v\":2,\"type\":\"heartbeat\",\"group\":\"payments\",\"seq\":42,"
                  "\"origin\":\"core-b\",\"inc\":1,\"at\":1,\"applied\":41}",
                  "payments");
    ck_assert_int_eq(m->version, 2);
    cg_bus_msg_free(m);
}
END_TEST

START_TEST(heartbeat_round_trip)
{
    cg_bus_msg in = example_heartbeat(), *m;
    char *text = encode_ok(&in, NULL);
    ck_assert_str_eq(text, HEARTBEAT);
    m = decode_ok(text, "payments");
    ck_assert_int_eq(m->type, CG_MSG_HEARTBEAT);
    ck_assert_str_eq(m->origin, "core-b");
    ck_assert_int_eq(m->incarnation, 1);
    ck_assert_int_eq(m->seq, 42);
    ck_assert_int_eq(m->applied_seq, 41);
    ck_assert_int_eq(m->at_us, 1763780001000000);
    ck_assert_ptr_null(m->items);
    ck_assert_uint_eq(m->n_items, 0);
    cg_bus_msg_free(m);
    free(text);
}
END_TEST

START_TEST(membership_round_trip)
{
    static const char *names[] = {NULL, "join", "leave", "suspect", "failed"};
    cg_bus_msg in = example_member(), *m;
    char *text = encode_ok(&in, NULL);
    int e;
    ck_assert_str_eq(text, MEMBER);
    free(text);
    for (e = CG_MEMBER_JOIN; e <= CG_MEMBER_FAILED; e++) {
        in.event = (cg_member_event)e;
        text = encode_ok(&in, NULL);
        ck_assert_msg(strstr(text, names[e]) != NULL, "%s", text);
        ck_assert_str_eq(cg_member_event_name(e), names[e]);
        m = decode_ok(text, NULL);
        ck_assert_int_eq(m->type, CG_MSG_MEMBERSHIP);
        ck_assert_int_eq(m->event, e);
        ck_assert_str_eq(m->origin, "core-a");
        ck_assert_str_eq(m->member, "core-c");
        ck_assert_int_eq(m->member_incarnation, 5);
        ck_assert_int_eq(m->seq, 0);
        cg_bus_msg_free(m);
        free(text);
    }
}
END_TEST

START_TEST(every_part_kind)
{
    cg_bus_item items[CG_PART_COUNT];
    cg_bus_msg in = example_inval(), *m;
    char *text;
    int k;
    for (k = 0; k < CG_PART_COUNT; k++) {
        items[k].handle = 100 + k;
        items[k].kind = k;
        items[k].version = 1;
    }
    in.items = items;
    in.n_items = CG_PART_COUNT;
    text = encode_ok(&in, NULL);
    m = decode_ok(text, "payments");
    for (k = 0; k < CG_PART_COUNT; k++) {
        ck_assert_int_eq(m->items[k].kind, k);
        ck_assert_msg(strstr(text, cg_part_kind_name(k)) != NULL, "%s", text);
    }
    cg_bus_msg_free(m);
    free(text);
}
END_TEST

START_TEST(largest_values)
{
    /* every number at 2^53 - 1, names of 63 characters: exact on the wire and back */
    cg_bus_item item = {CG_BUS_INT_MAX, CG_PART_DESCRIPTION, CG_BUS_INT_MAX};
    cg_bus_msg in = example_inval(), *m;
    char *text;
    char name63[64];
    memset(name63, 'n', 63);
    name63[63] = '\0';
    strcpy(in.group, name63);
    strcpy(in.origin, name63);
    in.seq = in.incarnation = in.at_us = CG_BUS_INT_MAX;
    in.items = &item;
    in.n_items = 1;
    text = encode_ok(&in, NULL);
    ck_assert_msg(strstr(text, "\"seq\":" MAXINT) != NULL, "%s", text);
    ck_assert_msg(strstr(text, "\"h\":" MAXINT) != NULL, "%s", text);
    m = decode_ok(text, name63);
    ck_assert_int_eq(m->seq, CG_BUS_INT_MAX);
    ck_assert_int_eq(m->incarnation, CG_BUS_INT_MAX);
    ck_assert_int_eq(m->at_us, CG_BUS_INT_MAX);
    ck_assert_int_eq(m->items[0].handle, CG_BUS_INT_MAX);
    ck_assert_int_eq(m->items[0].version, CG_BUS_INT_MAX);
    ck_assert_str_eq(m->group, name63);
    ck_assert_str_eq(m->origin, name63);
    cg_bus_msg_free(m);
    free(text);

    /* and each value just below: 2^53 - 2 must not read back as 2^53 - 1 or 2^53 - 3 */
    item.handle = CG_BUS_INT_MAX - 1;
    in.seq = CG_BUS_INT_MAX - 2;
    text = encode_ok(&in, NULL);
    m = decode_ok(text, NULL);
    ck_assert_int_eq(m->items[0].handle, CG_BUS_INT_MAX - 1);
    ck_assert_int_eq(m->seq, CG_BUS_INT_MAX - 2);
    cg_bus_msg_free(m);
    free(text);
}
END_TEST

START_TEST(smallest_values)
{
    cg_bus_item item = {0, CG_PART_STATE, 1};
    cg_bus_msg in = example_inval(), *m;
    char *text;
    strcpy(in.group, "g");
    strcpy(in.origin, "0");
    in.seq = in.incarnation = 1;
    in.at_us = 0;
    in.items = &item;
    in.n_items = 1;
    text = encode_ok(&in, NULL);
    m = decode_ok(text, "g");
    ck_assert_int_eq(m->seq, 1);
    ck_assert_int_eq(m->at_us, 0);
    ck_assert_int_eq(m->items[0].handle, 0);
    ck_assert_int_eq(m->items[0].version, 1);
    cg_bus_msg_free(m);
    free(text);

    /* a heartbeat of a core that has published and applied nothing yet */
    in = example_heartbeat();
    in.seq = in.applied_seq = 0;
    text = encode_ok(&in, NULL);
    m = decode_ok(text, "payments");
    ck_assert_int_eq(m->seq, 0);
    ck_assert_int_eq(m->applied_seq, 0);
    cg_bus_msg_free(m);
    free(text);
}
END_TEST

START_TEST(most_items_fit)
{
    /* The item limit at the widest values still encodes below the byte limit, so nothing the
     * encoder accepts is dropped as oversized. */
    cg_bus_item *items = malloc(CG_BUS_MSG_MAX_ITEMS * sizeof(*items));
    cg_bus_msg in = example_inval(), *m;
    char *text;
    size_t i, len;
    char name63[64];

    memset(name63, 'n', 63);
    name63[63] = '\0';
    strcpy(in.group, name63);
    strcpy(in.origin, name63);
    in.seq = in.incarnation = in.at_us = CG_BUS_INT_MAX;
    for (i = 0; i < CG_BUS_MSG_MAX_ITEMS; i++) {
        items[i].handle = CG_BUS_INT_MAX - (int64_t)i;
        items[i].kind = CG_PART_SPECIFICATION;
        items[i].version = CG_BUS_INT_MAX;
    }
    in.items = items;
    in.n_items = CG_BUS_MSG_MAX_ITEMS;
    text = encode_ok(&in, &len);
    ck_assert_uint_lt(len, CG_BUS_MSG_MAX);
    m = decode_ok(text, NULL);
    ck_assert_uint_eq(m->n_items, CG_BUS_MSG_MAX_ITEMS);
    ck_assert_int_eq(m->items[CG_BUS_MSG_MAX_ITEMS - 1].handle,
                     CG_BUS_INT_MAX - (CG_BUS_MSG_MAX_ITEMS - 1));
    cg_bus_msg_free(m);
    free(text);

    /* one more is refused by the encoder */
    free(items);
    items = calloc(CG_BUS_MSG_MAX_ITEMS + 1, sizeof(*items));
    for (i = 0; i <= CG_BUS_MSG_MAX_ITEMS; i++)
        items[i].version = 1;
    in.items = items;
    in.n_items = CG_BUS_MSG_MAX_ITEMS + 1;
    encode_refused(&in, "more than the limit of 10000");
    free(items);
}
END_TEST

START_TEST(lenient_where_harmless)
{
    cg_bus_msg *m;
    /* any field order, white space around tokens and after the value, unknown fields (how
     * version 1 grows), fields of other types (ignored), integers written as 7.0 or 7e0 */
    m = decode_ok(" \n{ \"items\" : [ {\"v\":7e0,\"p\":\"state\",\"h\":12,\"why\":\"x\"} ], "
                  "\"at\":1, \"inc\":3.0, \"origin\":\"core-a\", \"seq\":42, "
                  "\"group\":\"payments\", \"type\":\"inval\", \"v\":1, \"applied\":\"what\", "
                  "\"future\":{\"a\":[1,2,{\"b\":null}]}, \"note\":\"a\\\\u0000b\" }\r\n\t ",
                  "payments");
    ck_assert_int_eq(m->type, CG_MSG_INVALIDATION);
    ck_assert_int_eq(m->incarnation, 3);
    ck_assert_int_eq(m->items[0].version, 7);
    ck_assert_int_eq(m->applied_seq, 0);
    cg_bus_msg_free(m);
    /* NULL expected group: any group */
    m = decode_ok(HEARTBEAT, NULL);
    ck_assert_str_eq(m->group, "payments");
    cg_bus_msg_free(m);
    /* -0 is zero */
    accepted_with(INVAL, 1, "h", "-0");
    cg_bus_msg_free(NULL);
}
END_TEST

START_TEST(topic)
{
    char buf[CG_BUS_TOPIC_MAX], other[CG_BUS_TOPIC_MAX], small[10];
    char name63[64];
    ck_assert_int_eq(cg_bus_topic(buf, sizeof(buf), "payments"), 0);
    ck_assert_str_eq(buf, "payments/");
    /* prefix subscription to "payments/" cannot match another group */
    ck_assert_int_eq(cg_bus_topic(other, sizeof(other), "payments2"), 0);
    ck_assert_str_eq(other, "payments2/");
    ck_assert_int_ne(strncmp(other, buf, strlen(buf)), 0);
    /* the buffer must hold the slash and the NUL */
    ck_assert_int_eq(cg_bus_topic(small, sizeof(small) - 1, "payments"), CG_EINVALID);
    ck_assert_int_eq(cg_bus_topic(small, sizeof(small), "payments"), 0);
    ck_assert_str_eq(small, "payments/");
    memset(name63, 'x', 63);
    name63[63] = '\0';
    ck_assert_int_eq(cg_bus_topic(buf, sizeof(buf), name63), 0);
    ck_assert_uint_eq(strlen(buf), 64);
    ck_assert_int_eq(cg_bus_topic(buf, sizeof(buf), "a/b"), CG_EINVALID);
    ck_assert_msg(strstr(cg_error_last()->message, "not a valid group id") != NULL, "%s",
                  cg_error_last()->message);
    ck_assert_int_eq(cg_bus_topic(buf, sizeof(buf), ""), CG_EINVALID);
    ck_assert_int_eq(cg_bus_topic(buf, sizeof(buf), NULL), CG_EINVALID);
}
END_TEST

START_TEST(names)
{
    ck_assert_str_eq(cg_bus_msg_type_name(CG_MSG_INVALIDATION), "inval");
    ck_assert_str_eq(cg_bus_msg_type_name(CG_MSG_HEARTBEAT), "heartbeat");
    ck_assert_str_eq(cg_bus_msg_type_name(CG_MSG_MEMBERSHIP), "member");
    ck_assert_str_eq(cg_bus_msg_type_name(0), "?");
    ck_assert_str_eq(cg_member_event_name(99), "?");
    ck_assert_str_eq(cg_bus_drop_reason_name(CG_DROP_MALFORMED), "malformed");
    ck_assert_str_eq(cg_bus_drop_reason_name(CG_DROP_VERSION), "version");
    ck_assert_str_eq(cg_bus_drop_reason_name(CG_DROP_OVERSIZED), "oversized");
    ck_assert_str_eq(cg_bus_drop_reason_name(CG_DROP_FOREIGN_GROUP), "foreign-group");
    ck_assert_str_eq(cg_bus_drop_reason_name(CG_DROP_FUTURE_SEQ), "future-seq");
    ck_assert_str_eq(cg_bus_drop_reason_name(CG_DROP_COUNT), "?");
}
END_TEST

/* ---- refusals ------------------------------------------------------------------------- */

START_TEST(oversized)
{
    size_t n = CG_BUS_MSG_MAX + 1, len = strlen(HEARTBEAT);
    char *big = malloc(n);
    cg_bus_msg *m = NULL;
    /* exactly the limit: a valid message padded with white space is accepted */
    memset(big, ' ', n);
    memcpy(big, HEARTBEAT, len);
    ck_assert_int_eq(decode_n(&m, big, CG_BUS_MSG_MAX, "payments"), 0);
    cg_bus_msg_free(m);
    /* one byte more is refused before parsing, whatever the bytes are */
    refused_n(big, n, "payments", CG_DROP_OVERSIZED, "1048577 bytes", "limit of 1048576");
    memset(big, 0, n);
    refused_n(big, n, "payments", CG_DROP_OVERSIZED, "more than the limit", NULL);
    free(big);
}
END_TEST

START_TEST(not_json)
{
    cg_bus_msg *m = (cg_bus_msg *)1;
    refused_n("", 0, NULL, CG_DROP_MALFORMED, "empty", NULL);
    ck_assert_int_eq(cg_bus_msg_decode(&m, NULL, 0, NULL), CG_EINVALID);
    ck_assert_ptr_null(m);
    refused("hello", CG_DROP_MALFORMED, "not JSON", "offset 0");
    refused("{\"v\":1,", CG_DROP_MALFORMED, "not JSON", NULL);
    refused("{\"v\":1 \"type\":\"x\"}", CG_DROP_MALFORMED, "not JSON", "offset 7");
    refused("   ", CG_DROP_MALFORMED, "not JSON", NULL);
    refused(HEARTBEAT "x", CG_DROP_MALFORMED, "data after the JSON value", "offset 115");
    refused(HEARTBEAT HEARTBEAT, CG_DROP_MALFORMED, "data after the JSON value", NULL);
}
END_TEST

START_TEST(not_an_object)
{
    refused("[" HEARTBEAT "]", CG_DROP_MALFORMED, "expected a JSON object", "an array");
    refused("42", CG_DROP_MALFORMED, "expected a JSON object", "a number");
    refused("\"v\"", CG_DROP_MALFORMED, "expected a JSON object", "a string");
    refused("null", CG_DROP_MALFORMED, "expected a JSON object", "null");
    refused("true", CG_DROP_MALFORMED, "expected a JSON object", "a boolean");
    refused("{}", CG_DROP_MALFORMED, "field \"v\" is missing", NULL);
}
END_TEST

START_TEST(missing_fields)
{
    static const char *inval[] = {"v", "type", "group", "seq", "origin", "inc", "at", "items"};
    static const char *hb[] = {"seq", "origin", "inc", "at", "applied"};
    static const char *member[] = {"origin", "inc", "at", "event", "member", "minc"};
    static const char *item[] = {"h", "p", "v"};
    size_t i;
    for (i = 0; i < sizeof(inval) / sizeof(inval[0]); i++)
        refused_with(INVAL, 0, inval[i], NULL, "is missing");
    for (i = 0; i < sizeof(hb) / sizeof(hb[0]); i++)
        refused_with(HEARTBEAT, 0, hb[i], NULL, "is missing");
    for (i = 0; i < sizeof(member) / sizeof(member[0]); i++)
        refused_with(MEMBER, 0, member[i], NULL, "is missing");
    for (i = 0; i < sizeof(item) / sizeof(item[0]); i++)
        refused_with(INVAL, 1, item[i], NULL, "is missing");
}
END_TEST

START_TEST(wrong_types)
{
    refused_with(INVAL, 0, "seq", "\"42\"", "expected an integer, got a string");
    refused_with(INVAL, 0, "inc", "null", "expected an integer, got null");
    refused_with(INVAL, 0, "at", "[1]", "expected an integer, got an array");
    refused_with(INVAL, 0, "group", "7", "expected a string, got a number");
    refused_with(INVAL, 0, "origin", "{}", "expected a string, got an object");
    refused_with(INVAL, 0, "type", "true", "expected a string, got a boolean");
    refused_with(INVAL, 0, "items", "{\"h\":1}", "expected an array, got an object");
    refused_with(INVAL, 1, "p", "2", "expected a string, got a number");
    refused_with(INVAL, 1, "h", "\"12\"", "expected an integer, got a string");
    refused_with(HEARTBEAT, 0, "applied", "false", "expected an integer, got a boolean");
    refused_with(MEMBER, 0, "event", "1", "expected a string");
    refused_with(MEMBER, 0, "member", "null", "expected a string, got null");
    refused_with(MEMBER, 0, "minc", "\"5\"", "expected an integer, got a string");
    refused("{\"v\":1,\"type\":\"inval\",\"group\":\"payments\",\"seq\":1,\"origin\":\"a\","
            "\"inc\":1,\"at\":1,\"items\":[3]}",
            CG_DROP_MALFORMED, "field \"items[0]\": expected an object, got a number", NULL);
}
END_TEST

START_TEST(duplicate_fields)
{
    refused("{\"v\":1,\"v\":1,\"type\":\"heartbeat\"}", CG_DROP_MALFORMED,
            "field \"v\" is given twice", NULL);
    refused("{\"v\":1,\"type\":\"heartbeat\",\"group\":\"payments\",\"seq\":42,\"origin\":"
            "\"core-b\",\"inc\":1,\"at\":1,\"applied\":41,\"seq\":43}",
            CG_DROP_MALFORMED, "field \"seq\" is given twice", NULL);
    refused(
        "{\"v\":1,\"type\":\"inval\",\"group\":\"payments\",\"seq\":1,\"origin\":\"a\","
        "\"inc\":1,\"at\":1,\"items\":[{\"h\":1,\"p\":\"state\",\"v\":1,\"p\":\"description\"}]}",
        CG_DROP_MALFORMED, "field \"items[0].p\" is given twice", NULL);
}
END_TEST

START_TEST(unknown_version)
{
    char *text;
    text = with_field(INVAL, 0, "v", "3");
    refused(text, CG_DROP_VERSION, "field \"v\": unknown wire version 3", "reads 1 and 2");
    cJSON_free(text);
    text = with_field(INVAL, 0, "v", "0");
    refused(text, CG_DROP_VERSION, "unknown wire version 0", NULL);
    cJSON_free(text);
    text = with_field(INVAL, 0, "v", "-1");
    refused(text, CG_DROP_VERSION, "unknown wire version -1", NULL);
    cJSON_free(text);
    /* a v3 message may look like anything else: still counted as VERSION, not MALFORMED */
    refused("{\"v\":3,\"kind\":\"invalidate-all\"}", CG_DROP_VERSION, "unknown wire version 3",
            NULL);
    refused("{\"v\":3,\"group\":\"elsewhere\"}", CG_DROP_VERSION, "version", NULL);
    /* a "v" that is no integer at all is malformed */
    refused_with(INVAL, 0, "v", "\"1\"", "expected an integer wire version, got a string");
    refused_with(INVAL, 0, "v", "1.5", "got 1.5");
    refused_with(INVAL, 0, "v", "1e300", "expected an integer wire version");
}
END_TEST

START_TEST(unknown_type_event_part)
{
    refused_with(INVAL, 0, "type", "\"invalidation\"", "unknown type \"invalidation\"");
    refused_with(INVAL, 0, "type", "\"\"", "expected inval, heartbeat or member");
    refused_with(MEMBER, 0, "event", "\"joined\"", "unknown event \"joined\"");
    refused_with(INVAL, 1, "p", "\"status\"", "unknown part \"status\"");
    refused_with(INVAL, 1, "p", "\"State\"", "expected specification, description or state");
    /* the second item is named by its index */
    refused("{\"v\":1,\"type\":\"inval\",\"group\":\"payments\",\"seq\":1,\"origin\":\"a\","
            "\"inc\":1,\"at\":1,\"items\":[{\"h\":1,\"p\":\"state\",\"v\":1},"
            "{\"h\":1,\"p\":\"names\",\"v\":1}]}",
            CG_DROP_MALFORMED, "field \"items[1].p\": unknown part \"names\"", NULL);
}
END_TEST

START_TEST(invalid_names)
{
    char long_name[80];
    memset(long_name, 0, sizeof(long_name));
    long_name[0] = '"';
    memset(long_name + 1, 'a', 64);
    long_name[65] = '"';
    refused_with(INVAL, 0, "group", "\"-payments\"", "is not a valid group id");
    refused_with(INVAL, 0, "group", "\"pay/ments\"", "\"pay/ments\" is not a valid group id");
    refused_with(INVAL, 0, "group", "\"\"", "is not a valid group id");
    refused_with(INVAL, 0, "group", long_name, "is not a valid group id");
    refused_with(INVAL, 0, "origin", "\"core a\"", "is not a valid core name");
    refused_with(INVAL, 0, "origin", long_name, "is not a valid core name");
    refused_with(MEMBER, 0, "member", "\".core\"", "is not a valid core name");
    /* a hostile value is quoted short and without control characters */
    refused_with(INVAL, 0, "origin", "\"\\u001b[31mred\\n\"", "\"?[31mred?\" is not a valid");
    long_name[0] = 'x';
    long_name[65] = '\0';
    {
        char value[sizeof(long_name) + 3]; /* room for any long_name gcc -O1 can imagine */
        snprintf(value, sizeof(value), "\"%s!\"", long_name + 1);
        refused_with(INVAL, 0, "origin", value, "aaaaaaaaaa...\" is not a valid core name");
    }
}
END_TEST

START_TEST(numbers_out_of_range)
{
    /* invalidation seq starts at 1, heartbeat seq and applied at 0 */
    refused_with(INVAL, 0, "seq", "0", "expected an integer from 1 to " MAXINT ", got 0");
    refused_with(HEARTBEAT, 0, "seq", "-1", "expected an integer from 0 to " MAXINT ", got -1");
    refused_with(HEARTBEAT, 0, "applied", "-1", "from 0 to");
    refused_with(INVAL, 0, "inc", "0", "from 1 to");
    refused_with(MEMBER, 0, "minc", "0", "from 1 to");
    refused_with(INVAL, 0, "at", "-1", "from 0 to");
    refused_with(INVAL, 1, "h", "-1", "from 0 to");
    refused_with(INVAL, 1, "v", "0", "from 1 to");
    /* 2^53 is refused (it may have been 2^53 + 1), 2^53 - 1 accepted */
    refused_with(INVAL, 0, "seq", "9007199254740992", "got 9007199254740992");
    refused_with(INVAL, 0, "seq", "9007199254740993", "expected an integer from 1 to");
    accepted_with(INVAL, 0, "seq", MAXINT);
    refused_with(INVAL, 1, "h", "-9007199254740992", "from 0 to");
    refused_with(INVAL, 1, "v", "1e300", "expected an integer from 1 to");
    /* not integers */
    refused_with(INVAL, 0, "seq", "42.5", "expected an integer, got 42.5");
    refused_with(INVAL, 1, "v", "0.1", "expected an integer, got 0.1");
    refused_with(INVAL, 0, "at", "1e999", "expected an integer, got a number out of range");
    refused_with(INVAL, 0, "at", "-1e999", "expected an integer");
}
END_TEST

START_TEST(item_count)
{
    /* an invalidation must list something */
    refused_with(INVAL, 0, "items", "[]", "at least one item");
    /* one item more than the limit, each as short as an item can be */
    {
        const char *head = "{\"v\":1,\"type\":\"inval\",\"group\":\"payments\",\"seq\":1,"
                           "\"origin\":\"a\",\"inc\":1,\"at\":1,\"items\":[";
        const char *item = "{\"h\":0,\"p\":\"state\",\"v\":1}";
        size_t n = CG_BUS_MSG_MAX_ITEMS + 1, i, cap = strlen(head) + n * (strlen(item) + 1) + 8;
        char *text = malloc(cap), *p = text;
        cg_bus_msg *m;
        p += sprintf(p, "%s", head);
        for (i = 0; i < n; i++)
            p += sprintf(p, "%s%s", i ? "," : "", item);
        strcpy(p, "]}");
        ck_assert_uint_lt(strlen(text), CG_BUS_MSG_MAX); /* refused for its count, not size */
        refused(text, CG_DROP_MALFORMED, "field \"items\": more than the limit of 10000 items",
                NULL);
        /* exactly the limit is accepted */
        p = strrchr(text, '{');
        strcpy(p - 1, "]}");
        m = decode_ok(text, "payments");
        ck_assert_uint_eq(m->n_items, CG_BUS_MSG_MAX_ITEMS);
        cg_bus_msg_free(m);
        free(text);
    }
}
END_TEST

START_TEST(foreign_group)
{
    cg_bus_msg *m = (cg_bus_msg *)1;
    char *text = with_field(HEARTBEAT, 0, "group", "\"payments2\"");
    refused_n(text, strlen(text), "payments", CG_DROP_FOREIGN_GROUP, "foreign group \"payments2\"",
              "this core is in \"payments\"");
    cJSON_free(text);
    /* a foreign message is counted as foreign, whatever the rest of it holds */
    refused_n("{\"v\":1,\"group\":\"other\"}", 23, "payments", CG_DROP_FOREIGN_GROUP,
              "foreign group", NULL);
    /* but only when it is our wire version and the group is a valid id */
    refused_n("{\"v\":3,\"group\":\"other\"}", 23, "payments", CG_DROP_VERSION, "version", NULL);
    refused_n("{\"v\":1,\"group\":\"a/b\"}", 21, "payments", CG_DROP_MALFORMED, "group", NULL);
    /* the same message is fine for its own group or without a group check */
    ck_assert_int_eq(decode_n(&m, INVAL, strlen(INVAL), "payments"), 0);
    cg_bus_msg_free(m);
    refused_n(INVAL, strlen(INVAL), "Payments", CG_DROP_FOREIGN_GROUP, "foreign group", NULL);
}
END_TEST

START_TEST(nul_bytes)
{
    /* a raw NUL anywhere: refused, not read as the end of the text */
    const char raw[] = "{\"v\":1,\"type\":\"heartbeat\",\"group\":\"payments\"}\0garbage";
    refused_n(raw, sizeof(raw) - 1, "payments", CG_DROP_MALFORMED, "NUL byte at offset 45", NULL);
    refused_n("{\"v\":1,\"group\":\"pay\0ments\"}", 27, NULL, CG_DROP_MALFORMED,
              "NUL byte at offset 19", NULL);
    /* the escape \u0000 would cut "payments\u0000x" to the valid group "payments"; it has
     * no field yet (it is found before parsing), so the message names its offset */
    refused_nul(HEARTBEAT, 0, "group", "\"payments\\u0000x\"", "at offset 112");
    refused_nul(INVAL, 1, "p", "\"state\\u0000\"", "at offset");
    refused_nul(MEMBER, 0, "member", "\"\\\\\\u0000\"", "at offset");
    refused_nul(MEMBER, 0, "member", "\"core-c\\u0000\"", "at offset");
    /* an escaped backslash followed by "u0000" is just text (in a field nobody reads) */
    accepted_with(INVAL, 0, "note", "\"\\\\u0000\"");
}
END_TEST

START_TEST(reason_resets)
{
    cg_bus_msg *m = NULL;
    refused("{\"v\":9}", CG_DROP_VERSION, "version", NULL);
    ck_assert_int_eq(decode_n(&m, MEMBER, strlen(MEMBER), NULL), 0);
    ck_assert_int_eq(cg_bus_msg_decode_reason(), CG_DROP_NONE);
    cg_bus_msg_free(m);
}
END_TEST

START_TEST(encode_refusals)
{
    cg_bus_item bad_item = {1, CG_PART_STATE, 1};
    cg_bus_msg m;

    m = example_inval();
    m.version = 3;
    encode_refused(&m, "field \"v\"");
    m = example_inval();
    m.type = (cg_bus_msg_type)0;
    encode_refused(&m, "field \"type\"");
    m = example_inval();
    strcpy(m.group, "a/b");
    encode_refused(&m, "field \"group\"");
    m = example_inval();
    strcpy(m.origin, "");
    encode_refused(&m, "field \"origin\"");
    m = example_inval();
    m.seq = 0;
    encode_refused(&m, "field \"seq\"");
    m = example_inval();
    m.incarnation = 0;
    encode_refused(&m, "field \"inc\"");
    m = example_inval();
    m.at_us = CG_BUS_INT_MAX + 1;
    encode_refused(&m, "field \"at\"");
    m = example_inval();
    m.n_items = 0;
    encode_refused(&m, "at least one item");
    m.items = NULL;
    m.n_items = 1;
    encode_refused(&m, "at least one item");
    m = example_inval();
    m.items = &bad_item;
    m.n_items = 1;
    bad_item.kind = CG_ITEM_COUNT; /* beyond every kind of wire version 2 */
    encode_refused(&m, "field \"items[0].p\"");
    bad_item.kind = -1;
    encode_refused(&m, "field \"items[0].p\"");
    bad_item.kind = CG_ITEM_NAMES; /* a v2 kind in a message the caller wants as v1 */
    m.version = 1;
    encode_refused(&m, "field \"items[0].p\"");
    m.version = 0;
    bad_item.kind = CG_PART_STATE;
    bad_item.version = 0;
    encode_refused(&m, "field \"items[0].v\"");
    bad_item.version = 1;
    bad_item.handle = -1;
    encode_refused(&m, "field \"items[0].h\"");

    m = example_heartbeat();
    m.seq = -1;
    encode_refused(&m, "field \"seq\"");
    m = example_heartbeat();
    m.applied_seq = -1;
    encode_refused(&m, "field \"applied\"");

    m = example_member();
    m.event = (cg_member_event)5;
    encode_refused(&m, "field \"event\"");
    m = example_member();
    strcpy(m.member, "-x");
    encode_refused(&m, "field \"member\"");
    m = example_member();
    m.member_incarnation = 0;
    encode_refused(&m, "field \"minc\"");
}
END_TEST

/* ---- robustness ----------------------------------------------------------------------- */

/* Decode arbitrary bytes: only 0 or CG_EINVALID, a reason exactly when refused, and anything
 * accepted encodes and decodes to the same message again. */
static void decode_any(const char *data, size_t len)
{
    cg_bus_msg *m = NULL, *again = NULL;
    int err = decode_n(&m, data, len, "payments");
    ck_assert_msg(err == 0 || err == CG_EINVALID, "decode returned %d", err);
    if (err < 0) {
        ck_assert_ptr_null(m);
        ck_assert_int_ne(cg_bus_msg_decode_reason(), CG_DROP_NONE);
        ck_assert_msg(cg_error_last()->message[0] != '\0', "no message");
        return;
    }
    ck_assert_int_eq(cg_bus_msg_decode_reason(), CG_DROP_NONE);
    {
        size_t n;
        char *text = encode_ok(m, &n);
        ck_assert_int_eq(decode_n(&again, text, n, "payments"), 0);
        ck_assert_int_eq(again->type, m->type);
        ck_assert_int_eq(again->seq, m->seq);
        ck_assert_uint_eq(again->n_items, m->n_items);
        ck_assert_str_eq(again->origin, m->origin);
        free(text);
    }
    cg_bus_msg_free(again);
    cg_bus_msg_free(m);
}

START_TEST(every_truncation_is_refused)
{
    static const char *const msgs[] = {INVAL, HEARTBEAT, MEMBER};
    size_t k, i;
    for (k = 0; k < 3; k++) {
        size_t len = strlen(msgs[k]);
        for (i = 0; i < len; i++) {
            cg_bus_msg *m = (cg_bus_msg *)1;
            ck_assert_int_eq(decode_n(&m, msgs[k], i, "payments"), CG_EINVALID);
            ck_assert_ptr_null(m);
            ck_assert_int_eq(cg_bus_msg_decode_reason(), CG_DROP_MALFORMED);
        }
    }
}
END_TEST

START_TEST(byte_mutations_never_crash)
{
    static const char *const msgs[] = {INVAL, HEARTBEAT, MEMBER};
    static const unsigned char subst[] = {0x00, 0x01, '"', '\\', '{',  '}',  '[',
                                          ']',  ',',  ':', '0',  '9',  '-',  '.',
                                          'e',  'u',  ' ', 'x',  0x7f, 0xc3, 0xff};
    char buf[512];
    size_t k, i, s, accepted = 0, tried = 0;
    for (k = 0; k < 3; k++) {
        size_t len = strlen(msgs[k]);
        ck_assert_uint_lt(len + 1, sizeof(buf));
        for (i = 0; i < len; i++) {
            /* substitute */
            for (s = 0; s < sizeof(subst); s++) {
                memcpy(buf, msgs[k], len);
                buf[i] = (char)subst[s];
                decode_any(buf, len);
                accepted += cg_bus_msg_decode_reason() == CG_DROP_NONE;
                tried++;
            }
            /* flip each bit */
            for (s = 0; s < 8; s++) {
                memcpy(buf, msgs[k], len);
                buf[i] = (char)(buf[i] ^ (1 << s));
                decode_any(buf, len);
                tried++;
            }
            /* delete and duplicate the byte */
            memcpy(buf, msgs[k], i);
            memcpy(buf + i, msgs[k] + i + 1, len - i - 1);
            decode_any(buf, len - 1);
            memcpy(buf, msgs[k], i + 1);
            memcpy(buf + i + 1, msgs[k] + i, len - i);
            decode_any(buf, len + 1);
            tried += 2;
        }
    }
    /* some mutations are harmless (a digit for a digit), most are refused */
    ck_assert_uint_gt(accepted, 0);
    ck_assert_uint_lt(accepted, tried);
}
END_TEST

START_TEST(deep_nesting)
{
    size_t depth = 100000, i;
    char *text = malloc(2 * depth + 64), *p = text;
    p += sprintf(p, "{\"v\":1,\"x\":");
    for (i = 0; i < depth; i++)
        *p++ = '[';
    for (i = 0; i < depth; i++)
        *p++ = ']';
    strcpy(p, "}");
    refused(text, CG_DROP_MALFORMED, "not JSON", NULL);
    free(text);
}
END_TEST

static Suite *message_suite(void)
{
    Suite *s = suite_create("message");
    TCase *tc = tcase_create("round-trip");
    tcase_add_test(tc, invalidation_round_trip);
    tcase_add_test(tc, heartbeat_round_trip);
    tcase_add_test(tc, wire_version_2);
    tcase_add_test(tc, membership_round_trip);
    tcase_add_test(tc, every_part_kind);
    tcase_add_test(tc, largest_values);
    tcase_add_test(tc, smallest_values);
    tcase_add_test(tc, most_items_fit);
    tcase_add_test(tc, lenient_where_harmless);
    tcase_add_test(tc, topic);
    tcase_add_test(tc, names);
    suite_add_tcase(s, tc);
    tc = tcase_create("refusals");
    tcase_add_test(tc, oversized);
    tcase_add_test(tc, not_json);
    tcase_add_test(tc, not_an_object);
    tcase_add_test(tc, missing_fields);
    tcase_add_test(tc, wrong_types);
    tcase_add_test(tc, duplicate_fields);
    tcase_add_test(tc, unknown_version);
    tcase_add_test(tc, unknown_type_event_part);
    tcase_add_test(tc, invalid_names);
    tcase_add_test(tc, numbers_out_of_range);
    tcase_add_test(tc, item_count);
    tcase_add_test(tc, foreign_group);
    tcase_add_test(tc, nul_bytes);
    tcase_add_test(tc, reason_resets);
    tcase_add_test(tc, encode_refusals);
    suite_add_tcase(s, tc);
    tc = tcase_create("robustness");
    tcase_add_test(tc, every_truncation_is_refused);
    tcase_add_test(tc, byte_mutations_never_crash);
    tcase_add_test(tc, deep_nesting);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cgt_run_suite(message_suite());
}
