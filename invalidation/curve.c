/*
 * curve.c — key files, client allow-lists and the ZAP handler shared by cg-busd and
 * coregroupd. See curve.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "curve.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- key files -------------------------------------------------------------------------- */

/* A line holding a Z85 key: 1 and bin filled; 0 for a blank or '#' comment line; -1 when the
 * line is something else. Leading and trailing white space is ignored. */
static int parse_key_line(uint8_t bin[32], char *line)
{
    char *end;
    while (*line == ' ' || *line == '\t')
        line++;
    end = line + strlen(line);
    while (end > line && strchr(" \t\r\n", end[-1]))
        *--end = '\0';
    if (*line == '\0' || *line == '#')
        return 0;
    if (strlen(line) != CG_KEY_Z85_LEN || zmq_z85_decode(bin, line) == NULL)
        return -1;
    return 1;
}

int cg_key_read(uint8_t bin[32], const char *path, char *why, size_t whysz)
{
    char line[512];
    int lineno = 0, r = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(why, whysz, "cannot open \"%s\": %s", path, strerror(errno));
        return -1;
    }
    while (r == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        r = parse_key_line(bin, line);
    }
    fclose(f);
    if (r == 1)
        return 0;
    if (r < 0)
        snprintf(why, whysz, "\"%s\" line %d: not a Z85 CURVE key (40 characters)", path, lineno);
    else
        snprintf(why, whysz, "\"%s\" holds no key", path);
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
    char line[512];
    int lineno = 0, r;
    size_t cap = 0;
    cg_keylist kl = {NULL, 0};
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        snprintf(why, whysz, "cannot open \"%s\": %s", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        uint8_t bin[32];
        lineno++;
        if ((r = parse_key_line(bin, line)) == 0)
            continue;
        if (r < 0) {
            snprintf(why, whysz, "\"%s\" line %d: not a Z85 CURVE public key (40 characters)", path,
                     lineno);
            goto fail;
        }
        if (kl.n == cap) {
            void *grown = realloc(kl.keys, (cap = cap ? cap * 2 : 16) * sizeof(kl.keys[0]));
            if (grown == NULL) {
                snprintf(why, whysz, "out of memory reading \"%s\"", path);
                goto fail;
            }
            kl.keys = grown;
        }
        memcpy(kl.keys[kl.n++], bin, 32);
    }
    if (ferror(f)) {
        snprintf(why, whysz, "cannot read \"%s\": %s", path, strerror(errno));
        goto fail;
    }
    if (kl.n == 0) {
        snprintf(why, whysz, "\"%s\" lists no client key", path);
        goto fail;
    }
    fclose(f);
    *out = kl;
    return 0;
fail:
    fclose(f);
    free(kl.keys);
    return -1;
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

/* A copy of an untrusted frame as printable text, for the log. */
static const char *printable(char *dst, size_t dstsz, const char *src, size_t n)
{
    size_t i;
    if (n > dstsz - 1)
        n = dstsz - 1;
    for (i = 0; i < n; i++)
        dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
    dst[n] = '\0';
    return dst;
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
            int64_t now = mono_ms();
            atomic_fetch_add(&z->denied, 1);
            if (now - last_report >= 1000) {
                if (z->on_denied)
                    z->on_denied(z->arg, key,
                                 n >= 4 ? printable(addr, sizeof(addr), frame[3], (size_t)len[3])
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
