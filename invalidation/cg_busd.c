/*
 * cg-busd — the bus forwarder: an XSUB/XPUB proxy between the cores of every group.
 *
 * Cores CONNECT a PUB socket to the frontend (XSUB, bound here) and a SUB socket to the
 * backend (XPUB, bound here). Data flows frontend -> backend; subscriptions flow backend ->
 * frontend, so each publisher filters at the source and a core only receives its group's
 * "<group>/" topic. Two forwarders may run side by side; the cores publish to and subscribe
 * from both and drop the duplicates by seq, so the bus has no single point of failure. The
 * forwarder knows nothing about the payload: it never decodes, reorders or holds a message.
 *
 * The proxy is a zmq_poll() loop rather than zmq_proxy_steerable(), because the loop also
 * watches a self-pipe: the signal handlers only set a flag and write one byte to it, so
 * SIGTERM/SIGINT (stop), SIGUSR1 (print statistics) and SIGHUP (reload the CURVE client
 * list) are acted on at once, from ordinary code, and no stdio call ever runs in a handler.
 * Counting in the loop also lets the statistics tell data from subscription traffic.
 *
 * Invariants and choices:
 *  - Every ZeroMQ message is moved whole: all frames of a multipart message, in order, or
 *    none (a failed send discards the rest of that message and is counted as dropped).
 *  - A slow subscriber never stalls the others: the backend does not set ZMQ_XPUB_NODROP,
 *    so a subscriber whose queue (ZMQ_SNDHWM) is full loses messages, which it detects by
 *    seq and fills from the outbox. The high-water marks are large (100000) for bursts.
 *  - A frame larger than the wire format's limit (CG_BUS_MSG_MAX) disconnects its sender
 *    (ZMQ_MAXMSGSIZE): every subscriber would drop it anyway, and the forwarder must not be
 *    the one that buffers it. Dead peers are found by ZMTP heartbeats.
 *  - With CURVE, both sockets are CURVE servers and a ZAP handler thread (RFC 27) admits only
 *    the client keys of --curve-clients: a publisher without an allowed key cannot inject,
 *    a subscriber without one cannot listen. The keys are required together (encryption
 *    without client authentication would let anyone holding the public server key publish).
 *  - An ipc:// endpoint that a live process already listens on is refused as in use; ZeroMQ
 *    itself would silently unlink the other forwarder's socket file and take it over.
 *
 * Output: one greppable line per event on stdout ("cg-busd[NAME]: started ...", "... stats
 * msgs=... bytes=...", "... stopped"), errors on stderr. Exit status: 0 stopped by a signal
 * (or --help, --version, --keygen), 1 runtime failure (an endpoint in use, ZeroMQ errors),
 * 2 bad usage (arguments, malformed endpoints, unreadable or malformed key files).
 *
 * It deliberately does not persist anything, decode payloads or need the repository.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "coregroup.h"
#include "message.h"
#include "program.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

#define HWM              100000
#define BATCH            1024 /* messages moved per socket per wake-up, for fairness */
#define SUB_MSG_MAX      4096 /* a subscription message: 1 byte + topic */
#define HEARTBEAT_IVL_MS 5000 /* ZMTP heartbeats find dead peers */
#define HEARTBEAT_TTL_MS 15000
#define ZAP_ENDPOINT     "inproc://zeromq.zap.01"
#define KEY_Z85_LEN      40

/* ---- signals: a flag and a byte down the self-pipe ------------------------------------ */

/* (coregroup/program.c: the handlers set flags and wake the loop through a self-pipe) */
static int sig_fd = -1;

/* ---- output ---------------------------------------------------------------------------- */

static const char *name = NULL; /* --name, else the pid */
static char pid_name[24];

/* One line on stdout: "cg-busd[NAME]: <text>". Locked, so the ZAP thread's lines never mix. */
static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logline(const char *fmt, ...)
{
    va_list ap;
    flockfile(stdout);
    printf("cg-busd[%s]: ", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    funlockfile(stdout);
}

/* One error line on stderr, "cg-busd: error: <text>", or with the name once it is known. */
static void errline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errline(const char *fmt, ...)
{
    va_list ap;
    flockfile(stderr);
    if (name)
        fprintf(stderr, "cg-busd[%s]: error: ", name);
    else
        fputs("cg-busd: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    funlockfile(stderr);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- CURVE keys ------------------------------------------------------------------------ */

typedef struct {
    uint8_t (*keys)[32];
    size_t n;
} keylist;

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
    if (strlen(line) != KEY_Z85_LEN || zmq_z85_decode(bin, line) == NULL)
        return -1;
    return 1;
}

/* The one key of a key file (its first key line). 0, or -1 with the reason in why. */
static int read_key_file(uint8_t bin[32], const char *path, char *why, size_t whysz)
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

/* Every key of a client list, one per line. 0 with *out filled (free out->keys), or -1 with
 * why; an empty list is refused (it would lock every core out). */
static int load_clients(keylist *out, const char *path, char *why, size_t whysz)
{
    char line[512];
    int lineno = 0, r;
    size_t cap = 0;
    keylist kl = {NULL, 0};
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

/* --keygen PREFIX: a new key pair in PREFIX.key (secret, 0600) and PREFIX.pub (0644). Never
 * overwrites an existing file. Returns the exit status. */
static int keygen(const char *prefix)
{
    char pub[41], sec[41], path[2][4096];
    const char *text[2] = {sec, pub};
    const mode_t mode[2] = {0600, 0644};
    int i, fd;

    if (zmq_curve_keypair(pub, sec) != 0) {
        errline("--keygen: cannot make a CURVE key pair: %s", zmq_strerror(errno));
        return EXIT_RUNTIME;
    }
    snprintf(path[0], sizeof(path[0]), "%s.key", prefix);
    snprintf(path[1], sizeof(path[1]), "%s.pub", prefix);
    for (i = 0; i < 2; i++) {
        size_t n = strlen(text[i]);
        if ((fd = open(path[i], O_WRONLY | O_CREAT | O_EXCL, mode[i])) < 0) {
            errline("--keygen: cannot create \"%s\": %s%s", path[i], strerror(errno),
                    errno == EEXIST ? " (not overwriting a key)" : "");
            if (i == 1)
                unlink(path[0]);
            return EXIT_RUNTIME;
        }
        if (fchmod(fd, mode[i]) < 0 || write(fd, text[i], n) != (ssize_t)n ||
            write(fd, "\n", 1) != 1 || close(fd) < 0) {
            errline("--keygen: cannot write \"%s\": %s", path[i], strerror(errno));
            close(fd);
            unlink(path[i]);
            if (i == 1)
                unlink(path[0]);
            return EXIT_RUNTIME;
        }
    }
    printf("cg-busd: wrote %s (secret key, mode 0600) and %s (public key)\n", path[0], path[1]);
    return 0;
}

/* ---- the ZAP handler (RFC 27) ---------------------------------------------------------- */

typedef struct {
    void *sock; /* REP on ZAP_ENDPOINT; owned by the thread once it runs */
    pthread_mutex_t lock;
    keylist clients; /* under lock; replaced by a reload */
    atomic_ullong allowed, denied;
} zap_state;

static int key_allowed(zap_state *z, const uint8_t *key)
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
 * answered 400 when it can be answered at all. Denials are logged at most once a second. */
static void *zap_main(void *arg)
{
    zap_state *z = arg;
    int64_t last_log = -1000000;
    unsigned long long unlogged = 0;

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
                goto done; /* ETERM: the forwarder is stopping */
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
            if (now - last_log >= 1000) {
                char more_text[64] = "";
                if (unlogged)
                    snprintf(more_text, sizeof(more_text), " (and %llu more since the last line)",
                             unlogged);
                logline("denied client key=%s address=%s%s", key[0] ? key : "(none)",
                        n >= 4 ? printable(addr, sizeof(addr), frame[3], (size_t)len[3]) : "?",
                        more_text);
                last_log = now;
                unlogged = 0;
            } else {
                unlogged++;
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

/* ---- the proxy ------------------------------------------------------------------------- */

typedef struct {
    unsigned long long msgs, bytes;         /* frontend -> backend: data messages */
    unsigned long long sub_msgs, sub_bytes; /* backend -> frontend: subscription messages */
    unsigned long long subs, unsubs;        /* of those: subscribe / unsubscribe */
    unsigned long long dropped;             /* messages a send refused */
} counters;

/*
 * Move one whole message from `from` to `to`. Returns 1 when a message was moved (or dropped
 * and counted), 0 when none was waiting, -1 on a receive error (errno set). *bytes gets its
 * size over all frames, *first the first byte of its first frame (-1 when empty).
 */
static int move_one(void *from, void *to, size_t *bytes, int *first, counters *c)
{
    zmq_msg_t part;
    int more = 0, nframes = 0, failed = 0;
    size_t moresz = sizeof(more);

    *bytes = 0;
    *first = -1;
    do {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, from, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(&part);
            if (nframes == 0 && (e == EAGAIN || e == EINTR))
                return 0;
            errno = e;
            return -1; /* frames of one message arrive together: this is not EAGAIN */
        }
        if (nframes == 0 && zmq_msg_size(&part) > 0)
            *first = *(const unsigned char *)zmq_msg_data(&part);
        *bytes += zmq_msg_size(&part);
        nframes++;
        zmq_getsockopt(from, ZMQ_RCVMORE, &more, &moresz);
        if (!failed && zmq_msg_send(&part, to, (more ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0)
            failed = 1;
        zmq_msg_close(&part);
    } while (more);
    if (failed)
        c->dropped++;
    return 1;
}

static void print_stats(const counters *c, zap_state *z, int64_t started_ms, const char *why)
{
    logline("stats msgs=%llu bytes=%llu sub_msgs=%llu sub_bytes=%llu subs=%llu unsubs=%llu "
            "topics=%lld dropped=%llu denied=%llu uptime_s=%lld why=%s",
            c->msgs, c->bytes, c->sub_msgs, c->sub_bytes, c->subs, c->unsubs,
            (long long)c->subs - (long long)c->unsubs, c->dropped,
            z ? (unsigned long long)atomic_load(&z->denied) : 0ULL,
            (long long)((mono_ms() - started_ms) / 1000), why);
}

static int setopt_int(void *sock, int opt, int value)
{
    return zmq_setsockopt(sock, opt, &value, sizeof(value));
}

/* Create, configure and bind one of the two sockets. 0, or the exit status after one line
 * naming the flag and the reason. */
static int open_socket(void **out, void *ctx, int type, const char *flag, const char *endpoint,
                       const uint8_t *secret)
{
    void *s = zmq_socket(ctx, type);
    int e;
    *out = s;
    if (s == NULL) {
        errline("%s: cannot create a socket: %s", flag, zmq_strerror(errno));
        return EXIT_RUNTIME;
    }
    if (setopt_int(s, ZMQ_SNDHWM, HWM) < 0 || setopt_int(s, ZMQ_RCVHWM, HWM) < 0 ||
        setopt_int(s, ZMQ_LINGER, 0) < 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE,
                       &(int64_t){type == ZMQ_XSUB ? CG_BUS_MSG_MAX : SUB_MSG_MAX},
                       sizeof(int64_t)) < 0 ||
        setopt_int(s, ZMQ_HEARTBEAT_IVL, HEARTBEAT_IVL_MS) < 0 ||
        setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, HEARTBEAT_TTL_MS) < 0 ||
        (secret && (setopt_int(s, ZMQ_CURVE_SERVER, 1) < 0 ||
                    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, secret, 32) < 0))) {
        errline("%s: cannot set socket options: %s", flag, zmq_strerror(errno));
        return EXIT_RUNTIME;
    }
    if (cg_prog__ipc_in_use(endpoint)) {
        errline("%s \"%s\": cannot bind: %s (a live process listens on that socket file)", flag,
                endpoint, zmq_strerror(EADDRINUSE));
        return EXIT_RUNTIME;
    }
    if (zmq_bind(s, endpoint) < 0) {
        e = errno;
        errline("%s \"%s\": cannot bind: %s%s", flag, endpoint, zmq_strerror(e),
                e == ENODEV ? " (no such interface or local address)" : "");
        return e == EINVAL || e == EPROTONOSUPPORT || e == ENOCOMPATPROTO || e == ENODEV
                   ? EXIT_USAGE
                   : EXIT_RUNTIME;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: cg-busd --frontend ENDPOINT --backend ENDPOINT [OPTIONS]\n"
            "       cg-busd --keygen PREFIX\n"
            "Forward the coregroup invalidation bus: cores connect their PUB sockets to the\n"
            "frontend and their SUB sockets to the backend.\n"
            "\n"
            "Options:\n"
            "  -f, --frontend ENDPOINT      bind the publishers' side (XSUB), e.g.\n"
            "                               tcp://0.0.0.0:5551 or ipc:///run/cg/pub\n"
            "  -b, --backend ENDPOINT       bind the subscribers' side (XPUB)\n"
            "  -s, --stats-interval SECONDS print a statistics line every SECONDS\n"
            "  -n, --name NAME              name in every log line (default: the pid)\n"
            "      --curve-secret-key FILE  this forwarder's CURVE secret key (Z85); makes both\n"
            "                               sockets CURVE servers\n"
            "      --curve-public-key FILE  its public key (checked against the secret key)\n"
            "      --curve-clients FILE     the client public keys allowed to connect, one\n"
            "                               per line ('#' comments); reloaded on SIGHUP\n"
            "      --keygen PREFIX          write a new key pair to PREFIX.key (secret, mode\n"
            "                               0600) and PREFIX.pub, then exit\n"
            "  -q, --quiet                  print only errors and requested statistics\n"
            "  -h, --help                   show this help\n"
            "  -V, --version                show the version\n"
            "\n"
            "Signals: SIGTERM or SIGINT stop it (after a final statistics line), SIGUSR1\n"
            "prints a statistics line, SIGHUP reloads --curve-clients.\n"
            "Statistics: msgs/bytes forwarded frontend->backend, sub_msgs/sub_bytes\n"
            "(subscriptions) backend->frontend, subs/unsubs seen, topics subscribed now,\n"
            "dropped (sends refused), denied (CURVE clients refused), uptime_s.\n"
            "\n"
            "Exit status: 0 stopped by a signal, 1 runtime failure (e.g. an endpoint in use),\n"
            "2 bad usage (arguments, malformed endpoint, bad key file).\n");
}

/* Seconds as a positive decimal number. */
static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !isfinite(v) || v < 0.001 || v > 31536000.0)
        return -1;
    *out = v;
    return 0;
}

/* A secret key file that others can read deserves a warning (ssh refuses; we only warn). */
static void check_secret_mode(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr,
                "cg-busd: warning: --curve-secret-key \"%s\" is readable by others "
                "(mode %04o); chmod 600 it\n",
                path, (unsigned)(st.st_mode & 07777));
}

enum { OPT_SECRET = 1000, OPT_PUBLIC, OPT_CLIENTS, OPT_KEYGEN };

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"frontend", required_argument, NULL, 'f'},
                                         {"backend", required_argument, NULL, 'b'},
                                         {"stats-interval", required_argument, NULL, 's'},
                                         {"name", required_argument, NULL, 'n'},
                                         {"curve-secret-key", required_argument, NULL, OPT_SECRET},
                                         {"curve-public-key", required_argument, NULL, OPT_PUBLIC},
                                         {"curve-clients", required_argument, NULL, OPT_CLIENTS},
                                         {"keygen", required_argument, NULL, OPT_KEYGEN},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *frontend_ep = NULL, *backend_ep = NULL, *secret_path = NULL, *public_path = NULL;
    const char *clients_path = NULL, *keygen_prefix = NULL, *opt_name = NULL;
    double interval = 0;
    int quiet = 0, c, rc = 0, curve, zap_running = 0;
    uint8_t secret[32], public_key[32];
    char why[512], ep_front[256], ep_back[256];
    size_t epsz;
    void *ctx = NULL, *frontend = NULL, *backend = NULL;
    zap_state zap;
    pthread_t zap_thread;
    counters cnt;
    int64_t started_ms, next_stats = 0;

    memset(&zap, 0, sizeof(zap));
    memset(&cnt, 0, sizeof(cnt));
    while ((c = getopt_long(argc, argv, "f:b:s:n:qhV", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            frontend_ep = optarg;
            break;
        case 'b':
            backend_ep = optarg;
            break;
        case 's':
            if (parse_seconds(optarg, &interval) < 0) {
                errline("--stats-interval \"%s\": expected a positive number of seconds", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'n':
            opt_name = optarg;
            break;
        case OPT_SECRET:
            secret_path = optarg;
            break;
        case OPT_PUBLIC:
            public_path = optarg;
            break;
        case OPT_CLIENTS:
            clients_path = optarg;
            break;
        case OPT_KEYGEN:
            keygen_prefix = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("cg-busd %s\n", CG_VERSION);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        errline("unexpected argument \"%s\"", argv[optind]);
        return EXIT_USAGE;
    }
    if (keygen_prefix) {
        if (frontend_ep || backend_ep) {
            errline("--keygen writes keys and exits; it takes no --frontend or --backend");
            return EXIT_USAGE;
        }
        return keygen(keygen_prefix);
    }
    if (frontend_ep == NULL || backend_ep == NULL) {
        errline("%s is required", frontend_ep == NULL ? "--frontend" : "--backend");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(frontend_ep, backend_ep) == 0) {
        errline("--frontend and --backend are the same endpoint \"%s\"", frontend_ep);
        return EXIT_USAGE;
    }
    if (opt_name && !cg_name_valid(opt_name)) {
        errline("--name \"%s\": 1 to 63 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
                opt_name);
        return EXIT_USAGE;
    }
    curve = secret_path || public_path || clients_path;
    if (curve && !(secret_path && public_path && clients_path)) {
        errline("CURVE needs all of --curve-secret-key, --curve-public-key and --curve-clients "
                "(missing %s)",
                !secret_path   ? "--curve-secret-key"
                : !public_path ? "--curve-public-key"
                               : "--curve-clients");
        return EXIT_USAGE;
    }
    if (curve) {
        uint8_t derived[32];
        char z85[41];
        if (!zmq_has("curve")) {
            errline("this libzmq was built without CURVE support");
            return EXIT_RUNTIME;
        }
        if (read_key_file(secret, secret_path, why, sizeof(why)) < 0) {
            errline("--curve-secret-key: %s", why);
            return EXIT_USAGE;
        }
        if (read_key_file(public_key, public_path, why, sizeof(why)) < 0) {
            errline("--curve-public-key: %s", why);
            return EXIT_USAGE;
        }
        zmq_z85_encode(z85, secret, 32);
        {
            char pub85[41];
            if (zmq_curve_public(pub85, z85) != 0 || zmq_z85_decode(derived, pub85) == NULL ||
                memcmp(derived, public_key, 32) != 0) {
                errline("--curve-public-key \"%s\" is not the public key of "
                        "--curve-secret-key \"%s\"",
                        public_path, secret_path);
                return EXIT_USAGE;
            }
        }
        if (load_clients(&zap.clients, clients_path, why, sizeof(why)) < 0) {
            errline("--curve-clients: %s", why);
            return EXIT_USAGE;
        }
        check_secret_mode(secret_path);
    }
    snprintf(pid_name, sizeof(pid_name), "%ld", (long)getpid());
    name = opt_name ? opt_name : pid_name;
    pthread_mutex_init(&zap.lock, NULL); /* from here on, every exit passes through done: */

    setvbuf(stdout, NULL, _IOLBF, 0);
    if ((sig_fd = cg_prog__signals(1, 1)) < 0) {
        errline("cannot install signal handlers: %s", strerror(errno));
        rc = EXIT_RUNTIME;
        goto done;
    }
    if ((ctx = zmq_ctx_new()) == NULL) {
        errline("cannot create a ZeroMQ context: %s", zmq_strerror(errno));
        rc = EXIT_RUNTIME;
        goto done;
    }
    if (curve) {
        /* Bound before either server socket exists, so no handshake can miss the handler. */
        if ((zap.sock = zmq_socket(ctx, ZMQ_REP)) == NULL || zmq_bind(zap.sock, ZAP_ENDPOINT) < 0) {
            errline("cannot start the ZAP handler: %s", zmq_strerror(errno));
            if (zap.sock)
                zmq_close(zap.sock);
            rc = EXIT_RUNTIME;
            goto done;
        }
        if (pthread_create(&zap_thread, NULL, zap_main, &zap) != 0) {
            errline("cannot start the ZAP handler thread");
            zmq_close(zap.sock);
            rc = EXIT_RUNTIME;
            goto done;
        }
        zap_running = 1;
    }
    if ((rc = open_socket(&frontend, ctx, ZMQ_XSUB, "--frontend", frontend_ep,
                          curve ? secret : NULL)) != 0 ||
        (rc = open_socket(&backend, ctx, ZMQ_XPUB, "--backend", backend_ep,
                          curve ? secret : NULL)) != 0)
        goto done;

    epsz = sizeof(ep_front);
    if (zmq_getsockopt(frontend, ZMQ_LAST_ENDPOINT, ep_front, &epsz) < 0)
        snprintf(ep_front, sizeof(ep_front), "%s", frontend_ep);
    epsz = sizeof(ep_back);
    if (zmq_getsockopt(backend, ZMQ_LAST_ENDPOINT, ep_back, &epsz) < 0)
        snprintf(ep_back, sizeof(ep_back), "%s", backend_ep);
    started_ms = mono_ms();
    if (interval > 0)
        next_stats = started_ms + (int64_t)(interval * 1000);
    if (!quiet) {
        if (curve)
            logline("started frontend=%s backend=%s curve=on clients=%zu version=%s", ep_front,
                    ep_back, zap.clients.n, CG_VERSION);
        else
            logline("started frontend=%s backend=%s curve=off version=%s", ep_front, ep_back,
                    CG_VERSION);
    }

    while (!cg_prog__stop_signal) {
        zmq_pollitem_t items[3] = {{frontend, 0, ZMQ_POLLIN, 0},
                                   {backend, 0, ZMQ_POLLIN, 0},
                                   {NULL, sig_fd, ZMQ_POLLIN, 0}};
        long timeout = -1;
        int i, r = 0;

        if (interval > 0) {
            int64_t left = next_stats - mono_ms();
            timeout = left > 0 ? (long)left : 0;
        }
        if (zmq_poll(items, 3, timeout) < 0) {
            if (errno == EINTR)
                continue;
            errline("poll failed: %s", zmq_strerror(errno));
            rc = EXIT_RUNTIME;
            break;
        }
        if (items[2].revents & ZMQ_POLLIN)
            cg_prog__drain();
        for (i = 0; i < BATCH && (items[0].revents & ZMQ_POLLIN); i++) {
            size_t bytes;
            int first;
            if ((r = move_one(frontend, backend, &bytes, &first, &cnt)) <= 0)
                break;
            cnt.msgs++;
            cnt.bytes += bytes;
        }
        if (r < 0 && (items[0].revents & ZMQ_POLLIN)) {
            errline("receive on --frontend failed: %s", zmq_strerror(errno));
            rc = EXIT_RUNTIME;
            break;
        }
        r = 0;
        for (i = 0; i < BATCH && (items[1].revents & ZMQ_POLLIN); i++) {
            size_t bytes;
            int first;
            if ((r = move_one(backend, frontend, &bytes, &first, &cnt)) <= 0)
                break;
            cnt.sub_msgs++;
            cnt.sub_bytes += bytes;
            if (first == 1)
                cnt.subs++;
            else if (first == 0)
                cnt.unsubs++;
        }
        if (r < 0) {
            errline("receive on --backend failed: %s", zmq_strerror(errno));
            rc = EXIT_RUNTIME;
            break;
        }
        if (cg_prog__usr1) {
            cg_prog__usr1 = 0;
            print_stats(&cnt, curve ? &zap : NULL, started_ms, "signal");
        }
        if (cg_prog__hup) {
            keylist fresh;
            cg_prog__hup = 0;
            if (!curve) {
                logline("SIGHUP: nothing to reload (no --curve-clients)");
            } else if (load_clients(&fresh, clients_path, why, sizeof(why)) < 0) {
                errline("reload of --curve-clients failed: %s; keeping the %zu keys loaded", why,
                        zap.clients.n);
            } else {
                keylist old;
                pthread_mutex_lock(&zap.lock);
                old = zap.clients;
                zap.clients = fresh;
                pthread_mutex_unlock(&zap.lock);
                free(old.keys);
                logline("reloaded --curve-clients %s clients=%zu", clients_path, fresh.n);
            }
        }
        if (interval > 0 && mono_ms() >= next_stats) {
            if (!quiet)
                print_stats(&cnt, curve ? &zap : NULL, started_ms, "interval");
            while (next_stats <= mono_ms())
                next_stats += (int64_t)(interval * 1000);
        }
    }
    if (cg_prog__stop_signal && rc == 0 && !quiet) {
        print_stats(&cnt, curve ? &zap : NULL, started_ms, "exit");
        logline("stopped signal=%s", cg_prog__stop_signal == SIGINT ? "INT" : "TERM");
    }

done:
    if (frontend)
        zmq_close(frontend); /* ZMQ_LINGER 0: nothing is held back on exit */
    if (backend)
        zmq_close(backend);
    if (ctx) {
        zmq_ctx_shutdown(ctx); /* wakes the ZAP thread with ETERM */
        if (zap_running)
            pthread_join(zap_thread, NULL);
        zmq_ctx_term(ctx);
    }
    free(zap.clients.keys);
    pthread_mutex_destroy(&zap.lock);
    return rc;
}
