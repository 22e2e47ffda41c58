/*
 * fuzz_message.c — libFuzzer target for cg_bus_msg_decode(), the decoder of every bus message.
 *
 * Built only with -DCG_FUZZ=ON (clang). The input is one payload frame, exactly as a
 * subscriber receives it: not NUL-terminated, possibly huge, possibly hostile. The decoder
 * must return 0 or CG_EINVALID (CG_ERROR only when memory runs out), never crash, never read
 * outside the buffer, and never leak. Whatever it accepts must encode again and decode to the
 * same message: a core must be able to forward what it understood.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coregroup/errors.h"
#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cg_bus_msg *m = NULL, *again = NULL;
    char *text = NULL;
    size_t len = 0;
    int err;

    /* once with the group check, once without, so foreign messages are judged in full too */
    err = cg_bus_msg_decode(&m, (const char *)data, size, "payments");
    if (err == 0) {
        if (cg_bus_msg_decode_reason() != CG_DROP_NONE)
            abort();
        cg_bus_msg_free(m);
        m = NULL;
    } else if (err != CG_EINVALID && err != CG_ERROR) {
        abort();
    }
    err = cg_bus_msg_decode(&m, (const char *)data, size, NULL);
    if (err != 0) {
        if (err == CG_EINVALID && cg_bus_msg_decode_reason() == CG_DROP_NONE)
            abort();
        return 0;
    }
    /* accepted: the encoder must agree, and the round trip must be exact */
    if (cg_bus_msg_encode(&text, &len, m) < 0 ||
        cg_bus_msg_decode(&again, text, len, m->group) < 0 || again->type != m->type ||
        again->seq != m->seq || again->incarnation != m->incarnation || again->at_us != m->at_us ||
        again->n_items != m->n_items || again->applied_seq != m->applied_seq ||
        again->event != m->event || again->member_incarnation != m->member_incarnation ||
        strcmp(again->origin, m->origin) != 0 || strcmp(again->member, m->member) != 0 ||
        (m->n_items && memcmp(again->items, m->items, m->n_items * sizeof(m->items[0])) != 0))
        abort();
    free(text);
    cg_bus_msg_free(again);
    cg_bus_msg_free(m);
    return 0;
}
