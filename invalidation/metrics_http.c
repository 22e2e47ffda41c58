/*
 * metrics_http.c — see metrics_http.h: the /metrics endpoint of coregroupd and cg-busd.
 *
 * HTTP is libmicrohttpd's (Debian's libmicrohttpd, pkg-config libmicrohttpd): this file parses
 * no request itself. It binds the listening socket on its own, with the program's own error
 * messages and exit codes, and hands it to libmicrohttpd with MHD_OPTION_LISTEN_SOCKET once the
 * program has something to report. One internal polling thread serves every connection (a
 * scrape is rendered from counters in memory and never waits), at most CONN_LIMIT at a time,
 * each dropped after CONN_TIMEOUT_S idle seconds, so a slow or stuck client holds nothing.
 *
 * Stopping. MHD_quiesce_daemon() first takes the socket back, so no new connection is
 * accepted; MHD_stop_daemon() then closes the open connections and joins the thread (a render
 * in progress finishes first, since it runs on that thread); then the socket is closed here.
 * That order is what lets the program free what `render` reads right after cg_metrics__free().
 *
 * What it deliberately does not do: TLS, authentication, compression, or any path but
 * /metrics. A reverse proxy can add the first two.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <microhttpd.h>

#include "coregroup/common.h"
#include "coregroup/sys/hostport.h"
#include "metrics_http.h"

#if MHD_VERSION >= 0x00097002
typedef enum MHD_Result mhd_result;
#else
typedef int mhd_result;
#endif

#define CONN_LIMIT     32
#define CONN_TIMEOUT_S 10
#define BACKLOG        16
#define CONTENT_TYPE   "text/plain; version=0.0.4; charset=utf-8"

struct cg_metrics_http {
    int fd; /* the listening socket; -1 once closed */
    struct MHD_Daemon *mhd;
    cg_metrics_render render;
    void *arg;
    char address[CG_HOSTPORT_HOST_MAX + 16];
};

/* ---- the exposition text ------------------------------------------------------------- */

void cg_metrics__printf(cg_metrics_text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->oom)
        return;
    for (;;) {
        size_t room = t->cap - t->len;
        va_start(ap, fmt);
        n = vsnprintf(t->data ? t->data + t->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = 1;
            return;
        }
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        {
            size_t cap = t->cap ? t->cap : 16384;
            char *p;
            while (cap - t->len <= (size_t)n)
                cap *= 2;
            if ((p = realloc(t->data, cap)) == NULL) {
                t->oom = 1;
                return;
            }
            t->data = p;
            t->cap = cap;
        }
    }
}

void cg_metrics__family(cg_metrics_text *t, const char *name, const char *type, const char *help)
{
    cg_metrics__printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

const char *cg_metrics__label(char *buf, size_t bufsz, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 3 < bufsz; s++) {
        if (*s == '\\' || *s == '"')
            buf[o++] = '\\', buf[o++] = *s;
        else if (*s == '\n')
            buf[o++] = '\\', buf[o++] = 'n';
        else
            buf[o++] = *s;
    }
    buf[o] = '\0';
    return buf;
}

void cg_metrics__histogram(cg_metrics_text *t, const char *name, const char *labels,
                           const cg_histogram *h, double scale)
{
    const char *sep = labels[0] ? "," : "";
    size_t i;

    for (i = 0; i < h->n_buckets; i++) {
        if (i + 1 == h->n_buckets) /* the last bound is +Inf (hist.h) */
            cg_metrics__printf(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                               (unsigned long long)h->count[i]);
        else
            cg_metrics__printf(t, "%s_bucket{%s%sle=\"%.6g\"} %llu\n", name, labels, sep,
                               h->le[i] * scale, (unsigned long long)h->count[i]);
    }
    if (h->n_buckets == 0) /* cannot happen for the histograms we keep; stay well-formed */
        cg_metrics__printf(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                           (unsigned long long)h->total);
    cg_metrics__printf(t, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, labels, h->sum * scale,
                       name, labels, (unsigned long long)h->total);
}

void cg_metrics__build_info(cg_metrics_text *t)
{
    cg_metrics__family(t, "coregroup_build_info", "gauge",
                       "Always 1; the version label says which coregroup this program is.");
    cg_metrics__printf(t, "coregroup_build_info{version=\"%s\"} 1\n", CG_VERSION);
}

/* ---- the endpoint -------------------------------------------------------------------- */

int cg_metrics__bind(cg_metrics_http **out, const char *hostport, char *why, size_t whysz)
{
    char host[CG_HOSTPORT_HOST_MAX + 1], port_text[8];
    struct addrinfo hints, *res = NULL;
    cg_metrics_http *h = NULL;
    const char *bad;
    int port, r, e, one = 1, err = CG_METRICS_ERUNTIME;

    *out = NULL;
    if (cg_hostport_split(host, &port, hostport, &bad) < 0) {
        snprintf(why, whysz, "\"%s\": %s", hostport ? hostport : "", bad);
        return CG_METRICS_EUSAGE;
    }
    snprintf(port_text, sizeof(port_text), "%d", port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((r = getaddrinfo(host, port_text, &hints, &res)) != 0) {
        snprintf(why, whysz, "\"%s\": cannot resolve \"%s\": %s", hostport, host,
                 r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
        return r == EAI_SYSTEM || r == EAI_MEMORY || r == EAI_AGAIN ? CG_METRICS_ERUNTIME
                                                                    : CG_METRICS_EUSAGE;
    }
    if ((h = calloc(1, sizeof(*h))) == NULL) {
        snprintf(why, whysz, "out of memory");
        goto done;
    }
    snprintf(h->address, sizeof(h->address), "%s", hostport);
    h->fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    if (h->fd < 0) {
        snprintf(why, whysz, "\"%s\": cannot create a socket: %s", hostport, strerror(errno));
        goto done;
    }
    /* SO_REUSEADDR only lets a restart bind past connections in TIME_WAIT; on Linux a second
     * listener on the same port is still refused (EADDRINUSE). */
    setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(h->fd, res->ai_addr, res->ai_addrlen) < 0 || listen(h->fd, BACKLOG) < 0) {
        e = errno;
        snprintf(why, whysz, "\"%s\": cannot listen: %s%s", hostport, strerror(e),
                 e == EADDRINUSE      ? " (the port is taken)"
                 : e == EADDRNOTAVAIL ? " (not an address of this host)"
                                      : "");
        if (e == EADDRNOTAVAIL || e == EAFNOSUPPORT)
            err = CG_METRICS_EUSAGE;
        goto done;
    }
    *out = h;
    h = NULL;
    err = 0;
done:
    if (res)
        freeaddrinfo(res);
    cg_metrics__free(h);
    return err;
}

const char *cg_metrics__address(const cg_metrics_http *h)
{
    return h->address;
}

static mhd_result answer(struct MHD_Connection *c, unsigned int status, char *body, size_t len,
                         enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    mhd_result ok;

    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO; /* libmicrohttpd closes the connection */
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            status == MHD_HTTP_OK ? CONTENT_TYPE : "text/plain; charset=utf-8");
    ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* libmicrohttpd's access handler: first called once the headers are in (answer later, so a
 * body sent with the request is read and dropped first), then with each piece of a body, then
 * with none left. */
static mhd_result on_request(void *cls, struct MHD_Connection *c, const char *url,
                             const char *method, const char *version, const char *upload_data,
                             size_t *upload_data_size, void **req_cls)
{
    static int seen;
    static char not_found[] = "not found: this endpoint serves GET /metrics only\n";
    static char failed[] = "the metrics could not be rendered\n";
    cg_metrics_http *h = cls;
    cg_metrics_text t = {NULL, 0, 0, 0};

    (void)version;
    (void)upload_data;
    if (*req_cls == NULL) {
        *req_cls = &seen;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 || strcmp(url, "/metrics") != 0)
        return answer(c, MHD_HTTP_NOT_FOUND, not_found, sizeof(not_found) - 1,
                      MHD_RESPMEM_PERSISTENT);
    if (h->render(&t, h->arg) < 0 || t.oom || t.data == NULL) {
        free(t.data);
        return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, failed, sizeof(failed) - 1,
                      MHD_RESPMEM_PERSISTENT);
    }
    return answer(c, MHD_HTTP_OK, t.data, t.len, MHD_RESPMEM_MUST_FREE);
}

int cg_metrics__start(cg_metrics_http *h, cg_metrics_render render, void *arg, char *why,
                      size_t whysz)
{
    sigset_t all, old;

    h->render = render;
    h->arg = arg;
    /* Its thread inherits this mask: process signals stay with the program's own threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    h->mhd =
        MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC, 0, NULL, NULL, on_request, h,
                         MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->fd, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned int)CONN_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned int)CONN_TIMEOUT_S, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (h->mhd == NULL) {
        snprintf(why, whysz, "\"%s\": libmicrohttpd could not start its thread", h->address);
        return CG_METRICS_ERUNTIME;
    }
    return 0;
}

void cg_metrics__free(cg_metrics_http *h)
{
    if (h == NULL)
        return;
    if (h->mhd) {
        /* Take the socket back first (no new connections), then end the open ones and join
         * the thread; the socket is ours to close once the daemon has stopped. */
        MHD_socket fd = MHD_quiesce_daemon(h->mhd);
        MHD_stop_daemon(h->mhd);
        h->mhd = NULL;
        if (fd == MHD_INVALID_SOCKET) /* not handed back: libmicrohttpd closed it */
            h->fd = -1;
    }
    if (h->fd >= 0)
        close(h->fd);
    free(h);
}
