/*
 * message.h — the bus's wire format: invalidations, heartbeats, membership events (private).
 *
 * Every bus message is a ZeroMQ multipart message of two frames:
 *
 *     [topic: "<group>/"] [payload: one compact JSON object, wire version 1]
 *
 * The topic is the group id followed by a slash. A slash cannot occur in a group id, so a
 * subscriber prefix-subscribed to "payments/" never receives "payments2/" traffic.
 * invalidation/PROTOCOL.md documents every field, the versioning rules and what a subscriber
 * does with each message; this header is the C side of that document.
 *
 * The payload is built and parsed with cJSON only. cg_bus_msg_decode() is a pure function
 * (bytes in, struct or error out; no I/O, no global state except the thread's error detail
 * and drop reason), so it can be fuzzed (invalidation/fuzz_message.c) and so a hostile or
 * broken peer can never do more than get its message dropped and counted.
 */
#ifndef CG_MESSAGE_H
#define CG_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "coregroup/config.h"
#include "coregroup/core.h"
#include "coregroup/sys/item.h"

/* The wire versions this code reads ("v" in the payload): 1, and 2, which adds the item kinds
 * "names" and "find" (PROTOCOL.md, "Wire version 2"). A message is written as
 * CG_BUS_WIRE_VERSION (1) unless one of its items needs version 2. */
#define CG_BUS_WIRE_VERSION 1
#define CG_BUS_WIRE_V2      2

/* Largest payload accepted, in bytes; larger input is refused before it is parsed. */
#define CG_BUS_MSG_MAX (1024 * 1024)

/* Most items one invalidation may carry. Chosen so that any message within the limits
 * (names of 63 characters, every number at CG_BUS_INT_MAX) encodes to well under
 * CG_BUS_MSG_MAX: a message the encoder accepts is never dropped as oversized. A call that
 * changes more parts than this is not published; subscribers catch up from the outbox. */
#define CG_BUS_MSG_MAX_ITEMS 10000

/* Largest integer a field may hold: 2^53 - 1. JSON numbers are doubles; above this, two
 * different integers can read as the same double, so the format refuses them. */
#define CG_BUS_INT_MAX ((int64_t)9007199254740991)

/* Size of a buffer that holds any topic: a 63-character group id, "/" and a NUL. */
#define CG_BUS_TOPIC_MAX (CG_NAME_MAX + 2)

typedef enum {
    CG_MSG_INVALIDATION = 1, /* "inval": a committed call changed these parts */
    CG_MSG_HEARTBEAT = 2,    /* "heartbeat": the origin is alive; its published and applied seq */
    CG_MSG_MEMBERSHIP = 3,   /* "member": a member joined, left, is suspected or has failed */
} cg_bus_msg_type;

typedef enum {
    CG_MEMBER_JOIN = 1,    /* "join" */
    CG_MEMBER_LEAVE = 2,   /* "leave" */
    CG_MEMBER_SUSPECT = 3, /* "suspect" */
    CG_MEMBER_FAILED = 4,  /* "failed" */
} cg_member_event;

/* Why a message was dropped; a subscriber keeps one counter per reason. */
typedef enum {
    CG_DROP_NONE = 0,          /* not dropped: the last decode succeeded */
    CG_DROP_MALFORMED = 1,     /* not JSON, wrong shape, missing/wrong-typed/out-of-range field */
    CG_DROP_VERSION = 2,       /* an integer "v" other than 1 and 2 */
    CG_DROP_OVERSIZED = 3,     /* more than CG_BUS_MSG_MAX bytes */
    CG_DROP_FOREIGN_GROUP = 4, /* a well-formed message of another group */
    CG_DROP_FUTURE_SEQ = 5,    /* set by the subscriber, never by the decoder: a seq beyond the
                                  group's event_seq in the repository (a message the repository
                                  does not know was committed) */
} cg_bus_drop_reason;
#define CG_DROP_COUNT 6

/*
 * A decoded message, or one a publisher fills in to encode. Fields not used by a type are
 * zero after decoding and ignored by the encoder.
 */
typedef struct cg_bus_msg {
    cg_bus_msg_type type;
    int version;                  /* "v": wire version; 0 when encoding means "the lowest
                                     that can carry the items" (2 when an item is "names" or
                                     "find", else 1) */
    char group[CG_NAME_MAX + 1];  /* "group" */
    int64_t seq;                  /* "seq": invalidation: the group event seq, >= 1;
                                     heartbeat: the origin's last published seq, >= 0 */
    char origin[CG_NAME_MAX + 1]; /* "origin": name of the sending core */
    int64_t incarnation;          /* "inc": the sending core's incarnation, >= 1 */
    int64_t at_us;                /* "at": commit (inval) or send time, µs since 1970 */
    /* CG_MSG_INVALIDATION */
    cg_bus_item *items; /* "items": 1 .. CG_BUS_MSG_MAX_ITEMS */
    size_t n_items;
    /* CG_MSG_HEARTBEAT */
    int64_t applied_seq; /* "applied": the origin's applied seq, >= 0 */
    /* CG_MSG_MEMBERSHIP */
    cg_member_event event;        /* "event" */
    char member[CG_NAME_MAX + 1]; /* "member": the core the event is about */
    int64_t member_incarnation;   /* "minc": its incarnation, >= 1 */
} cg_bus_msg;

/*
 * Encode a message as compact JSON. Checks the message by the same rules as the decoder, so
 * nothing is sent that a peer would drop. On success *out is a new NUL-terminated string of
 * *len bytes (without the NUL) that the caller frees with free(). On failure *out is NULL and
 * the return is CG_EINVALID (cg_error_last() names the field) or CG_ERROR (out of memory).
 * The message is only read; msg->items stays the caller's.
 */
int cg_bus_msg_encode(char **out, size_t *len, const cg_bus_msg *msg);

/*
 * Decode a payload of `len` bytes (need not be NUL-terminated). A pure function.
 * expected_group, when not NULL, is the subscriber's group: a well-formed message of another
 * group is refused as foreign.
 * On success *out is a new message (its items in the same allocation) that the caller frees
 * with cg_bus_msg_free(), and cg_bus_msg_decode_reason() is CG_DROP_NONE. On failure *out is
 * NULL, the return is CG_EINVALID with a one-line message naming the field in
 * cg_error_last() and the reason in cg_bus_msg_decode_reason() — or CG_ERROR when memory ran
 * out (reason CG_DROP_NONE: the message was not judged).
 */
int cg_bus_msg_decode(cg_bus_msg **out, const char *data, size_t len, const char *expected_group);

/* The drop reason (a cg_bus_drop_reason) of the calling thread's last cg_bus_msg_decode(). */
int cg_bus_msg_decode_reason(void);

/* Free a message returned by cg_bus_msg_decode(). Accepts NULL. Not for messages the caller
 * built itself. */
void cg_bus_msg_free(cg_bus_msg *msg);

/*
 * Write the topic frame of `group` ("<group>/", NUL-terminated) into buf. Returns 0, or
 * CG_EINVALID when group is not a valid group id or bufsz is below strlen(group) + 2
 * (CG_BUS_TOPIC_MAX always suffices).
 */
int cg_bus_topic(char *buf, size_t bufsz, const char *group);

/* Wire names: "inval", "heartbeat", "member"; "join", "leave", "suspect", "failed";
 * "malformed", "version", "oversized", "foreign-group", "future-seq". "?" when unknown. */
const char *cg_bus_msg_type_name(int type);
const char *cg_member_event_name(int event);
const char *cg_bus_drop_reason_name(int reason);

#endif
