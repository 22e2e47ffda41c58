/*
 * busd_metrics.h — cg-busd's counters and what its /metrics endpoint (--metrics HOST:PORT)
 * serves from them. Private to cg-busd.
 *
 * The proxy loop is the only writer of its counters and keeps them in a plain struct (no atomic
 * operation per message); after each wake-up it publishes a copy with cgb_metrics_publish(),
 * a handful of relaxed atomic stores, which a scrape on libmicrohttpd's thread reads. A scrape
 * is therefore exact as of the loop's last batch.
 */
#ifndef CG_BUSD_METRICS_H
#define CG_BUSD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "curve.h"
#include "metrics_http.h"

typedef struct cgb_counters {
    unsigned long long msgs, bytes;         /* frontend -> backend: data messages */
    unsigned long long sub_msgs, sub_bytes; /* backend -> frontend: subscription messages */
    unsigned long long subs, unsubs;        /* of those: subscribe / unsubscribe */
    unsigned long long dropped;             /* frontend -> backend messages a send refused */
    unsigned long long sub_dropped;         /* backend -> frontend messages a send refused */
} cgb_counters;

/* Publish the loop's counters for the next scrape (cheap; call after each batch). */
void cgb_metrics_publish(const cgb_counters *c);

/*
 * Start answering scrapes on the bound endpoint h: the published counters, the ZAP handler's
 * denials (zap may be NULL without CURVE; it must outlive the endpoint), uptime since
 * started_ms (CLOCK_MONOTONIC milliseconds), each sample labelled forwarder="<name>".
 * 0, or CG_METRICS_ERUNTIME with why.
 */
int cgb_metrics_start(cg_metrics_http *h, const char *name, const cg_zap *zap, int64_t started_ms,
                      char *why, size_t whysz);

#endif
