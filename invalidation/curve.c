/*
 * curve.c — see curve.h: key files (read by the library's keyfile.c, errors turned into text
 * for the programs' messages), client allow-lists and the ZAP handler, shared by cg-busd,
 * coregroupd, cgctl and cg-watch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "curve.h"
#include "proglog.h"
#include "coregroup/errors.h"
#include "coregroup/sys/clock.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

/* ---- key files (read by keyfile.c, the library's one reader) ---------------------------- */

int cg_key_read(uint8_t bin[32], const char *path, char *why, size_t whysz)
{
    if (cg_keyfile_read(bin, path) == 0)
        return 0;
    snprintf(why, whysz, "%s", cg_error_last()->message);
    return -1;
}

int cg_key_pair_matches(const uint8_t secret[32], const uint8_t pub[32])
{
    char secret85[41], pub85[41];
    uint8_t derived[32];
    zmq_z85_encode(secret85, secret, 32);
    return zmq_curve_public(pub85, secret85) == 0 && zmq_z85_decode(derived, pub85) != NULL &&
           memcmp(derived, pub, 32) == 0;
}

int cg_keylist_load(cg_keylist *out, const char *path, char *why, size_t whysz)
{
    cg_keylist kl = {NULL, 0};
    if (cg_keyfile_read_all(&kl.keys, &kl.n, path) < 0) {
        snprintf(why, whysz, "%s", cg_error_last()->message);
        return -1;
    }
    if (kl.n == 0) {
        snprintf(why, whysz, "\"%s\" lists no client key", path);
        return -1;
    }
    *out = kl;
    return 0;
}

void cg_keylist_dispose(cg_keylist *kl)
{
    free(kl->keys);
    kl->keys = NULL;
    kl->n = 0;
}

/* ---- the ZAP handler (RFC 27) ---------------------------------------------------------- */

static int key_allowed(cg_zap *z, const uint8_t *key)
{
    size_t i;
    int ok = 0;
    pthread_mutex_lock(&z->lock);
    for (i = 0; i < z->clients.n && !ok; i++)
        ok = memcmp(z->clients.keys[i], key, 32) == 0;
    pthread_mutex_unlock(&z->lock);
    return ok;
}

/* Answer ZAP requests until the context is shut down. A request is 7 frames for CURVE
 * (version, request id, domain, address, routing id, mechanism, client key); anything else is
 * answered 400 when it can be answered at all. */
static void *zap_main(void *arg)
{
    cg_zap *z = arg;
    int64_t last_report = -1000000;
    unsigned long long unreported = 0;

    for (;;) {
        char frame[8][256];
        int len[8], n = 0, more = 0, ok;
        size_t moresz = sizeof(more);
        char addr[64], key[41] = "";

        do {
            int r = zmq_recv(z->sock, frame[n < 8 ? n : 7], sizeof(frame[0]), 0);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                goto done; /* ETERM: the program is stopping */
            }
            if (n < 8)
                len[n] = r;
            n++;
            zmq_getsockopt(z->sock, ZMQ_RCVMORE, &more, &moresz);
        } while (more);

        ok = n == 7 && len[0] == 3 && memcmp(frame[0], "1.0", 3) == 0 && len[5] == 5 &&
             memcmp(frame[5], "CURVE", 5) == 0 && len[6] == 32 &&
             key_allowed(z, (const uint8_t *)frame[6]);
        if (n >= 7 && len[6] == 32)
            zmq_z85_encode(key, (const uint8_t *)frame[6], 32);
        if (n < 2) /* no request id: the REP socket still needs a reply */
            len[1] = 0;
        zmq_send(z->sock, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(z->sock, frame[1], (size_t)(len[1] < 256 ? len[1] : 255), ZMQ_SNDMORE);
        zmq_send(z->sock, ok ? "200" : "400", 3, ZMQ_SNDMORE);
        zmq_send(z->sock, ok ? "OK" : "client key not allowed", ok ? 2 : 22, ZMQ_SNDMORE);
        zmq_send(z->sock, ok ? key : "", ok ? strlen(key) : 0, ZMQ_SNDMORE);
        zmq_send(z->sock, "", 0, 0);

        if (ok) {
            atomic_fetch_add(&z->allowed, 1);
        } else {
            int64_t now = cg_clock_mono_ms();
            atomic_fetch_add(&z->denied, 1);
            if (now - last_report >= 1000) {
                if (z->on_denied)
                    z->on_denied(
                        z->arg, key,
                        n >= 4 ? cg_prog__printable(addr, sizeof(addr), frame[3], (size_t)len[3])
                               : "?",
                        unreported);
                last_report = now;
                unreported = 0;
            } else {
                unreported++;
            }
        }
    }
done : {
    int zero = 0;
    zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_close(z->sock);
}
    return NULL;
}

int cg_zap_start(cg_zap *z, void *ctx, cg_keylist *clients, cg_zap_denied_fn on_denied, void *arg,
                 char *why, size_t whysz)
{
    memset(z, 0, sizeof(*z));
    pthread_mutex_init(&z->lock, NULL);
    z->clients = *clients;
    clients->keys = NULL;
    clients->n = 0;
    z->on_denied = on_denied;
    z->arg = arg;
    if ((z->sock = zmq_socket(ctx, ZMQ_REP)) == NULL || zmq_bind(z->sock, ZAP_ENDPOINT) < 0) {
        snprintf(why, whysz, "cannot start the ZAP handler: %s", zmq_strerror(errno));
        goto fail;
    }
    if (pthread_create(&z->thread, NULL, zap_main, z) != 0) {
        snprintf(why, whysz, "cannot start the ZAP handler thread");
        goto fail;
    }
    z->running = 1;
    return 0;
fail:
    if (z->sock)
        zmq_close(z->sock);
    z->sock = NULL;
    cg_keylist_dispose(&z->clients);
    pthread_mutex_destroy(&z->lock);
    return -1;
}

void cg_zap_set_clients(cg_zap *z, cg_keylist *clients)
{
    cg_keylist old;
    pthread_mutex_lock(&z->lock);
    old = z->clients;
    z->clients = *clients;
    pthread_mutex_unlock(&z->lock);
    clients->keys = NULL;
    clients->n = 0;
    cg_keylist_dispose(&old);
}

void cg_zap_join(cg_zap *z)
{
    if (!z->running)
        return;
    pthread_join(z->thread, NULL);
    z->running = 0;
    cg_keylist_dispose(&z->clients);
    pthread_mutex_destroy(&z->lock);
}
