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
 * Under systemd (cg-busd@.service, Type=notify; invalidation/notify.c, a no-op without
 * libsystemd or NOTIFY_SOCKET): READY=1 once both sockets are bound, WATCHDOG=1 from the
 * loop when WatchdogSec= asks for it, STOPPING=1 on SIGTERM or SIGINT.
 *
 * With --metrics HOST:PORT it serves Prometheus metrics over HTTP (GET /metrics; busd_metrics.c):
 * messages and bytes forwarded and dropped per direction, counted in the loop where messages
 * pass and published once per batch, never with an atomic operation per message.
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
#include "busd_metrics.h"
#include "coregroup/sys/hostport.h"
#include "curve.h"
#include "message.h"
#include "metrics_http.h"
#include "notify.h"
#include "program.h"
#include "proglog.h"
#include "coregroup/sys/clock.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

#define HWM              100000
#define BATCH            1024 /* messages moved per socket per wake-up, for fairness */
#define SUB_MSG_MAX      4096 /* a subscription message: 1 byte + topic */
#define HEARTBEAT_IVL_MS 5000 /* ZMTP heartbeats find dead peers */
#define HEARTBEAT_TTL_MS 15000

/* ---- signals: a flag and a byte down the self-pipe ------------------------------------ */

/* (invalidation/program.c: the handlers set flags and wake the loop through a self-pipe) */
static int sig_fd = -1;

/* ---- output ---------------------------------------------------------------------------- */

static const char *name = NULL; /* --name, else the pid */
static char pid_name[24];

/* One line on stdout: "cg-busd[NAME]: <text>" (proglog.c: whole lines, so the ZAP thread's
 * never mix with the loop's). */
static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logline(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cg_prog__vline(stdout, "cg-busd", name, NULL, fmt, ap);
    va_end(ap);
}

/* One error line on stderr, "cg-busd: error: <text>", or with the name once it is known. */
static void errline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errline(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cg_prog__vline(stderr, "cg-busd", name, "error: ", fmt, ap);
    va_end(ap);
}

/* ---- CURVE keys (invalidation/curve.c: key files, client lists, the ZAP handler) -------- */

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

/* The ZAP handler's report of a denied client (at most one line a second). */
static void log_denied(void *arg, const char *key, const char *address,
                       unsigned long long unreported)
{
    char more[64] = "";
    (void)arg;
    if (unreported)
        snprintf(more, sizeof(more), " (and %llu more since the last line)", unreported);
    logline("denied client key=%s address=%s%s", key[0] ? key : "(none)", address, more);
}

/* ---- the proxy ------------------------------------------------------------------------- */

typedef cgb_counters counters; /* busd_metrics.h: what the loop counts, and /metrics serves */

/*
 * Move one whole message from `from` to `to`. Returns 1 when a message was moved (or dropped
 * and counted), 0 when none was waiting, -1 on a receive error (errno set). *bytes gets its
 * size over all frames, *first the first byte of its first frame (-1 when empty); a message
 * a send refused counts in *dropped.
 */
static int move_one(void *from, void *to, size_t *bytes, int *first, unsigned long long *dropped)
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
        (*dropped)++;
    return 1;
}

static void print_stats(const counters *c, cg_zap *z, int64_t started_ms, const char *why)
{
    logline("stats msgs=%llu bytes=%llu sub_msgs=%llu sub_bytes=%llu subs=%llu unsubs=%llu "
            "topics=%lld dropped=%llu denied=%llu uptime_s=%lld why=%s",
            c->msgs, c->bytes, c->sub_msgs, c->sub_bytes, c->subs, c->unsubs,
            (long long)c->subs - (long long)c->unsubs, c->dropped + c->sub_dropped,
            z ? (unsigned long long)atomic_load(&z->denied) : 0ULL,
            (long long)((cg_clock_mono_ms() - started_ms) / 1000), why);
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
            "      --metrics HOST:PORT      serve Prometheus metrics over HTTP on GET /metrics\n"
            "                               (e.g. 127.0.0.1:9102; [::1]:9102 for IPv6):\n"
            "                               messages and bytes forwarded and dropped per\n"
            "                               direction; no authentication, so keep it private\n"
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

/* Seconds as a positive decimal number (program.c, as cg-watch reads them). */
static int parse_seconds(const char *s, double *out)
{
    return cg_prog__parse_seconds(s, out);
}

/* A secret key file that others can read deserves a warning (ssh refuses; we only warn). */
static void check_secret_mode(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        cg_prog__line(stderr, "cg-busd", NULL, "warning: ",
                      "--curve-secret-key \"%s\" is readable by others (mode %04o); chmod 600 it",
                      path, (unsigned)(st.st_mode & 07777));
}

enum { OPT_SECRET = 1000, OPT_PUBLIC, OPT_CLIENTS, OPT_KEYGEN, OPT_METRICS };

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
                                         {"metrics", required_argument, NULL, OPT_METRICS},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *frontend_ep = NULL, *backend_ep = NULL, *secret_path = NULL, *public_path = NULL;
    const char *clients_path = NULL, *keygen_prefix = NULL, *opt_name = NULL;
    double interval = 0;
    int quiet = 0, c, rc = 0, curve;
    uint8_t secret[32], public_key[32];
    char why[512], ep_front[256], ep_back[256];
    size_t epsz;
    void *ctx = NULL, *frontend = NULL, *backend = NULL;
    cg_keylist clients = {NULL, 0};
    cg_zap zap;
    counters cnt;
    const char *metrics_ep = NULL; /* --metrics */
    cg_metrics_http *metrics = NULL;
    int64_t started_ms, next_stats = 0, wd_ms, next_wd = 0;

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
        case OPT_METRICS: {
            char host[CG_HOSTPORT_HOST_MAX + 1];
            const char *bad;
            int port;
            if (cg_hostport_split(host, &port, optarg, &bad) < 0) {
                errline("--metrics \"%s\": %s", optarg, bad);
                return EXIT_USAGE;
            }
            metrics_ep = optarg;
            break;
        }
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
        if (!zmq_has("curve")) {
            errline("this libzmq was built without CURVE support");
            return EXIT_RUNTIME;
        }
        if (cg_key_read(secret, secret_path, why, sizeof(why)) < 0) {
            errline("--curve-secret-key: %s", why);
            return EXIT_USAGE;
        }
        if (cg_key_read(public_key, public_path, why, sizeof(why)) < 0) {
            errline("--curve-public-key: %s", why);
            return EXIT_USAGE;
        }
        if (!cg_key_pair_matches(secret, public_key)) {
            errline("--curve-public-key \"%s\" is not the public key of "
                    "--curve-secret-key \"%s\"",
                    public_path, secret_path);
            return EXIT_USAGE;
        }
        if (cg_keylist_load(&clients, clients_path, why, sizeof(why)) < 0) {
            errline("--curve-clients: %s", why);
            return EXIT_USAGE;
        }
        check_secret_mode(secret_path);
    }
    snprintf(pid_name, sizeof(pid_name), "%ld", (long)getpid());
    name = opt_name ? opt_name : pid_name;
    /* from here on, every exit passes through done: */

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
        /* Started before either server socket exists, so no handshake can miss it. */
        if (cg_zap_start(&zap, ctx, &clients, log_denied, NULL, why, sizeof(why)) < 0) {
            errline("%s", why);
            rc = EXIT_RUNTIME;
            goto done;
        }
    }
    if ((rc = open_socket(&frontend, ctx, ZMQ_XSUB, "--frontend", frontend_ep,
                          curve ? secret : NULL)) != 0 ||
        (rc = open_socket(&backend, ctx, ZMQ_XPUB, "--backend", backend_ep,
                          curve ? secret : NULL)) != 0)
        goto done;
    if (metrics_ep) { /* bound with the other two: a taken port is a startup error */
        int r = cg_metrics__bind(&metrics, metrics_ep, why, sizeof(why));
        if (r < 0) {
            errline("--metrics %s", why);
            rc = r == CG_METRICS_EUSAGE ? EXIT_USAGE : EXIT_RUNTIME;
            goto done;
        }
    }

    epsz = sizeof(ep_front);
    if (zmq_getsockopt(frontend, ZMQ_LAST_ENDPOINT, ep_front, &epsz) < 0)
        snprintf(ep_front, sizeof(ep_front), "%s", frontend_ep);
    epsz = sizeof(ep_back);
    if (zmq_getsockopt(backend, ZMQ_LAST_ENDPOINT, ep_back, &epsz) < 0)
        snprintf(ep_back, sizeof(ep_back), "%s", backend_ep);
    started_ms = cg_clock_mono_ms();
    if (interval > 0)
        next_stats = started_ms + (int64_t)(interval * 1000);
    if (metrics) {
        const cg_zap *z = curve ? &zap : NULL;
        if (cgb_metrics_start(metrics, name, z, started_ms, why, sizeof(why)) < 0) {
            errline("--metrics %s", why);
            rc = EXIT_RUNTIME;
            goto done;
        }
        if (!quiet)
            logline("metrics listen=%s path=/metrics", cg_metrics__address(metrics));
    }
    if (!quiet) {
        if (curve)
            logline("started frontend=%s backend=%s curve=on clients=%zu version=%s", ep_front,
                    ep_back, zap.clients.n, CG_VERSION);
        else
            logline("started frontend=%s backend=%s curve=off version=%s", ep_front, ep_back,
                    CG_VERSION);
    }
    /* Both sockets bound: systemd may start the cores. WATCHDOG=1 from every turn of the loop
     * (at most every wd_ms), so a hung loop gets the forwarder restarted. */
    cg_notify__send("READY=1\nSTATUS=forwarding frontend=%s backend=%s", ep_front, ep_back);
    wd_ms = cg_notify__watchdog_ms();

    while (!cg_prog__stop_signal) {
        zmq_pollitem_t items[3] = {{frontend, 0, ZMQ_POLLIN, 0},
                                   {backend, 0, ZMQ_POLLIN, 0},
                                   {NULL, sig_fd, ZMQ_POLLIN, 0}};
        long timeout = -1;
        int i, r = 0;

        if (interval > 0) {
            int64_t left = next_stats - cg_clock_mono_ms();
            timeout = left > 0 ? (long)left : 0;
        }
        if (wd_ms > 0) {
            int64_t now = cg_clock_mono_ms();
            if (now >= next_wd) {
                cg_notify__watchdog();
                next_wd = now + wd_ms;
            }
            if (timeout < 0 || next_wd - now < timeout)
                timeout = (long)(next_wd - now);
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
            if ((r = move_one(frontend, backend, &bytes, &first, &cnt.dropped)) <= 0)
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
            if ((r = move_one(backend, frontend, &bytes, &first, &cnt.sub_dropped)) <= 0)
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
        cgb_metrics_publish(&cnt); /* for the next scrape: a few relaxed stores per batch */
        if (cg_prog__usr1) {
            cg_prog__usr1 = 0;
            print_stats(&cnt, curve ? &zap : NULL, started_ms, "signal");
        }
        if (cg_prog__hup) {
            cg_keylist fresh;
            size_t n;
            cg_prog__hup = 0;
            if (!curve) {
                logline("SIGHUP: nothing to reload (no --curve-clients)");
            } else if (cg_keylist_load(&fresh, clients_path, why, sizeof(why)) < 0) {
                errline("reload of --curve-clients failed: %s; keeping the %zu keys loaded", why,
                        zap.clients.n);
            } else {
                n = fresh.n;
                cg_zap_set_clients(&zap, &fresh);
                logline("reloaded --curve-clients %s clients=%zu", clients_path, n);
            }
        }
        if (interval > 0 && cg_clock_mono_ms() >= next_stats) {
            if (!quiet)
                print_stats(&cnt, curve ? &zap : NULL, started_ms, "interval");
            while (next_stats <= cg_clock_mono_ms())
                next_stats += (int64_t)(interval * 1000);
        }
    }
    if (cg_prog__stop_signal)
        cg_notify__send("STOPPING=1\nSTATUS=stopping (signal %s)",
                        cg_prog__stop_signal == SIGINT ? "INT" : "TERM");
    if (cg_prog__stop_signal && rc == 0 && !quiet) {
        print_stats(&cnt, curve ? &zap : NULL, started_ms, "exit");
        logline("stopped signal=%s", cg_prog__stop_signal == SIGINT ? "INT" : "TERM");
    }

done:
    cg_metrics__free(metrics); /* first: a scrape reads zap, which goes below */
    if (frontend)
        zmq_close(frontend); /* ZMQ_LINGER 0: nothing is held back on exit */
    if (backend)
        zmq_close(backend);
    if (ctx) {
        zmq_ctx_shutdown(ctx); /* wakes the ZAP thread with ETERM */
        cg_zap_join(&zap);
        zmq_ctx_term(ctx);
    }
    cg_keylist_dispose(&clients); /* when the handler never took it over */
    return rc;
}
