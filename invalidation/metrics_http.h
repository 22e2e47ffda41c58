/*
 * metrics_http.h — a Prometheus endpoint for coregroup's long-running programs (coregroupd and
 * cg-busd): GET /metrics over HTTP, served by libmicrohttpd, answered with the text exposition
 * format 0.0.4 that the program renders on each scrape. Program plumbing like program.h, never
 * part of the library.
 *
 * Two steps, so that a bad or taken address is a startup error before the program commits to
 * anything (coregroupd binds it before it joins its group), while scrapes are answered only
 * once there is something to read:
 *     cg_metrics__bind()   resolve HOST:PORT, bind and listen (the kernel queues scrapes);
 *     cg_metrics__start()  hand the socket to libmicrohttpd's thread, which calls `render`.
 * cg_metrics__free() stops accepting, lets libmicrohttpd end its connections and join its
 * thread, and only then returns: after it, nothing reads what `render` reads, so the program
 * may free that. A scrape caught by the stop sees its connection closed, never a half-written
 * answer from freed memory.
 *
 * Anything but GET /metrics is answered 404. The endpoint has no authentication: bind it to a
 * loopback or otherwise private address.
 */
#ifndef CG_METRICS_HTTP_H
#define CG_METRICS_HTTP_H

#include <stddef.h>

#include "coregroup/core.h"

/* ---- the exposition text ------------------------------------------------------------- */

/* The text of one scrape. Appends never fail: on out of memory the text is marked `oom` and
 * the scrape is answered 500. The server frees it. */
typedef struct cg_metrics_text {
    char *data;
    size_t len, cap;
    int oom;
} cg_metrics_text;

void cg_metrics__printf(cg_metrics_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "# HELP name help" and "# TYPE name type": once per family, before its samples. */
void cg_metrics__family(cg_metrics_text *t, const char *name, const char *type, const char *help);

/*
 * The samples of one histogram series: name_bucket{labels,le="..."} per bucket (le="+Inf"
 * last), name_sum{labels} and name_count{labels}. The bounds and the sum are multiplied by
 * `scale` (0.001 turns a library histogram's milliseconds into seconds; 1 leaves them).
 * `labels` is the series' labels without braces ("" for none).
 */
void cg_metrics__histogram(cg_metrics_text *t, const char *name, const char *labels,
                           const cg_histogram *h, double scale);

/* `s` as a label value (backslash, double quote and newline escaped) in buf. Returns buf. */
const char *cg_metrics__label(char *buf, size_t bufsz, const char *s);

/* coregroup_build_info{version="<CG_VERSION>"} 1, with its HELP and TYPE. */
void cg_metrics__build_info(cg_metrics_text *t);

/* ---- the endpoint -------------------------------------------------------------------- */

typedef struct cg_metrics_http cg_metrics_http;

/* Render one scrape into `out` (called on libmicrohttpd's thread, one scrape at a time).
 * Return 0, or -1 to answer 500. */
typedef int (*cg_metrics_render)(cg_metrics_text *out, void *arg);

enum { CG_METRICS_ERUNTIME = -1, CG_METRICS_EUSAGE = -2 };

/*
 * Resolve `hostport` (coregroup/sys/hostport.h's syntax; a name binds its first address), bind a
 * TCP socket to it and listen. On success *out is an endpoint that is not answering yet (free
 * with cg_metrics__free()). Fails with CG_METRICS_EUSAGE for a malformed value, a name that
 * does not resolve, or an address that is not this host's; CG_METRICS_ERUNTIME when the port
 * is taken or anything else fails. Either way `why` gets one line saying so.
 */
int cg_metrics__bind(cg_metrics_http **out, const char *hostport, char *why, size_t whysz);

/* The address bound, "HOST:PORT" as given (for a log line). */
const char *cg_metrics__address(const cg_metrics_http *h);

/*
 * Start answering: libmicrohttpd's thread (signals blocked, so the program's handlers keep
 * running on its own threads) accepts on the bound socket and calls render(out, arg) for each
 * GET /metrics. 0, or CG_METRICS_ERUNTIME with `why`.
 */
int cg_metrics__start(cg_metrics_http *h, cg_metrics_render render, void *arg, char *why,
                      size_t whysz);

/* Stop answering (see the file comment), close the socket and free. Accepts NULL. */
void cg_metrics__free(cg_metrics_http *h);

#endif
