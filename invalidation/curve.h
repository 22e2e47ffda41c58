/*
 * curve.h — CURVE for coregroup's programs: key files (read by cg-busd, coregroupd, cgctl and
 * cg-watch), the allow-list of client keys, and a ZAP handler (ZeroMQ RFC 27) that admits
 * exactly those clients on the sockets the servers bind (cg-busd's forwarder sockets,
 * coregroupd's request endpoint). Never part of the library, like program.h.
 *
 * Key files are read by the library's one reader (keyfile.h: one Z85 key of 40 characters on
 * a line; blank lines and '#' comments are skipped), the same that reads a core's [bus] keys.
 * A client list holds any number of public keys, one per line; an empty list is refused, since
 * it would lock every client out. Errors are returned as text in `why` for the program to print
 * with the option or INI key that named the file.
 *
 * The ZAP handler is a thread with a REP socket on inproc://zeromq.zap.01 of the program's
 * context, started before any CURVE server socket exists (so no handshake can miss it) and
 * ended by zmq_ctx_shutdown() on that context followed by cg_zap_join(). Denials are counted
 * and reported through the `denied` callback at most once a second, with how many more went
 * unreported since.
 */
#ifndef CG_CURVE_H
#define CG_CURVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "keyfile.h"

typedef struct {
    uint8_t (*keys)[32];
    size_t n;
} cg_keylist;

/* The key of a key file (its first key line): 0, or -1 with the reason in why. */
int cg_key_read(uint8_t bin[32], const char *path, char *why, size_t whysz);

/* 1 when `pub` is the public key of `secret`. */
int cg_key_pair_matches(const uint8_t secret[32], const uint8_t pub[32]);

/* Every key of a client list: 0 with *out filled (free with cg_keylist_dispose), or -1 with
 * why. */
int cg_keylist_load(cg_keylist *out, const char *path, char *why, size_t whysz);
void cg_keylist_dispose(cg_keylist *kl);

/* Reports a denied client: its key in Z85 ("" when it sent none), its printable address, and
 * how many denials went unreported since the last report. */
typedef void (*cg_zap_denied_fn)(void *arg, const char *key, const char *address,
                                 unsigned long long unreported);

typedef struct {
    void *sock; /* REP on the ZAP endpoint; owned by the thread once it runs */
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    cg_keylist clients; /* under lock; replaced by cg_zap_set_clients */
    atomic_ullong allowed, denied;
    cg_zap_denied_fn on_denied;
    void *arg;
} cg_zap;

/* Start the handler on `ctx` admitting `clients` (taken over: the handler frees it). 0, or -1
 * with why; on failure nothing is left running and `clients` is freed. */
int cg_zap_start(cg_zap *z, void *ctx, cg_keylist *clients, cg_zap_denied_fn on_denied, void *arg,
                 char *why, size_t whysz);

/* Replace the allow-list (taken over); the old one is freed. */
void cg_zap_set_clients(cg_zap *z, cg_keylist *clients);

/* After zmq_ctx_shutdown(ctx): wait for the thread and free what the handler holds. Harmless
 * on a handler that never started (z zeroed). */
void cg_zap_join(cg_zap *z);

#endif
