/*
 * busd_metrics.c — see busd_metrics.h: the exposition of cg-busd's /metrics. The forwarder
 * never decodes a payload, so what it can say is traffic: messages and bytes moved per
 * direction (frontend -> backend: the publishers' events; backend -> frontend: subscriptions),
 * the messages a full queue refused (a slow subscriber: its core notices the gap by seq and
 * reads the outbox), subscriptions seen, CURVE clients refused, uptime, and the build.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "coregroup/sys/clock.h"
#include "busd_metrics.h"

/* The loop's last published counters (written by the loop, read by scrapes). */
static struct {
    atomic_ullong msgs, bytes, sub_msgs, sub_bytes, subs, unsubs, dropped, sub_dropped;
} pub;

static struct {
    char name[200]; /* the label value, escaped */
    const cg_zap *zap;
    int64_t started_ms;
} scrape;

#define PUT(f) atomic_store_explicit(&pub.f, c->f, memory_order_relaxed)
#define GET(f) ((unsigned long long)atomic_load_explicit(&pub.f, memory_order_relaxed))

void cgb_metrics_publish(const cgb_counters *c)
{
    PUT(msgs);
    PUT(bytes);
    PUT(sub_msgs);
    PUT(sub_bytes);
    PUT(subs);
    PUT(unsubs);
    PUT(dropped);
    PUT(sub_dropped);
}

/* One family with a sample per direction. */
static void per_direction(cg_metrics_text *t, const char *metric, const char *help,
                          unsigned long long to_back, unsigned long long to_front)
{
    cg_metrics__family(t, metric, "counter", help);
    cg_metrics__printf(t, "%s{forwarder=\"%s\",direction=\"frontend_to_backend\"} %llu\n", metric,
                       scrape.name, to_back);
    cg_metrics__printf(t, "%s{forwarder=\"%s\",direction=\"backend_to_frontend\"} %llu\n", metric,
                       scrape.name, to_front);
}

static int render(cg_metrics_text *t, void *arg)
{
    const char *n = scrape.name;
    unsigned long long subs = GET(subs), unsubs = GET(unsubs);
    (void)arg;

    per_direction(t, "coregroup_busd_forwarded_messages_total",
                  "Messages forwarded: publishers' events frontend to backend, subscriptions "
                  "backend to frontend.",
                  GET(msgs), GET(sub_msgs));
    per_direction(t, "coregroup_busd_forwarded_bytes_total",
                  "Bytes of the forwarded messages, over all their frames.", GET(bytes),
                  GET(sub_bytes));
    per_direction(t, "coregroup_busd_dropped_messages_total",
                  "Messages dropped because a send was refused (a full queue).", GET(dropped),
                  GET(sub_dropped));
    cg_metrics__family(t, "coregroup_busd_subscriptions_total", "counter",
                       "Subscription messages seen, by action.");
    cg_metrics__printf(t,
                       "coregroup_busd_subscriptions_total{forwarder=\"%s\",action=\"subscribe\"} "
                       "%llu\n"
                       "coregroup_busd_subscriptions_total{forwarder=\"%s\",action="
                       "\"unsubscribe\"} %llu\n",
                       n, subs, n, unsubs);
    cg_metrics__family(t, "coregroup_busd_topics", "gauge",
                       "Topics subscribed now (subscriptions minus unsubscriptions).");
    cg_metrics__printf(t, "coregroup_busd_topics{forwarder=\"%s\"} %lld\n", n,
                       (long long)subs - (long long)unsubs);
    cg_metrics__family(t, "coregroup_busd_curve_clients_denied_total", "counter",
                       "Clients the CURVE allow-list refused (0 without CURVE).");
    cg_metrics__printf(t, "coregroup_busd_curve_clients_denied_total{forwarder=\"%s\"} %llu\n", n,
                       scrape.zap ? (unsigned long long)atomic_load(&((cg_zap *)scrape.zap)->denied)
                                  : 0ULL);
    cg_metrics__family(t, "coregroup_busd_uptime_seconds", "gauge",
                       "Seconds since cg-busd started forwarding.");
    cg_metrics__printf(t, "coregroup_busd_uptime_seconds{forwarder=\"%s\"} %lld\n", n,
                       (long long)((cg_clock_mono_ms() - scrape.started_ms) / 1000));
    cg_metrics__build_info(t);
    return 0;
}

int cgb_metrics_start(cg_metrics_http *h, const char *name, const cg_zap *zap, int64_t started_ms,
                      char *why, size_t whysz)
{
    cg_metrics__label(scrape.name, sizeof(scrape.name), name);
    scrape.zap = zap;
    scrape.started_ms = started_ms;
    return cg_metrics__start(h, render, NULL, why, whysz);
}
