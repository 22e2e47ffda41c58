/*
 * metrics.h — coregroupd's /metrics endpoint ([daemon] metrics_listen): what it serves and the
 * call-latency histograms the workers feed. Private to coregroupd.
 *
 * Lifecycle, from main(): cgd_metrics_bind() right after the request endpoint is bound (a
 * bad or taken address is a startup error before the core joins its group);
 * cgd_metrics_start() once the core is open and the workers run; cgd_metrics_free() first
 * thing on the way out, before the workers stop and the core closes, since a scrape reads both.
 */
#ifndef CG_DAEMON_METRICS_H
#define CG_DAEMON_METRICS_H

#include <stdint.h>

#include "daemon.h"

typedef struct cgd_metrics cgd_metrics;

/* The daemon's log function (coregroupd.c's logev), for the endpoint's own lines. */
typedef void (*cgd_log_fn)(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Set up the latency histograms, and bind [daemon] metrics_listen when the configuration has
 * one (else *out is NULL and nothing listens). Returns 0, or the exit status after one
 * "bad-config" or "bind-failed" line naming the file and the key: 2 for a value that does not
 * name an address of this host, 1 when the port is taken or the socket fails.
 */
int cgd_metrics_bind(cgd_metrics **out, const cg_config *cfg, cgd_log_fn logfn);

/* Start answering scrapes of env's core and counters (m may be NULL: nothing to do). 0, or
 * the exit status (1) after a log line. */
int cgd_metrics_start(cgd_metrics *m, cgd_env *env);

/* Stop answering (a scrape in flight is closed cleanly) and free. Accepts NULL. */
void cgd_metrics_free(cgd_metrics *m);

/* Record one executed request: its op (cg_req_op), the library code it ended with (0: ok) and
 * the cg_clock_mono_us() (coregroup/sys/clock.h) taken before it ran. Lock-free; cheap enough
 * for every request. */
void cgd_metrics_observe(int op, int code, int64_t started_us);

#endif
