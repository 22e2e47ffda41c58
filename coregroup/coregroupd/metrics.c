/*
 * metrics.c — coregroupd's Prometheus exposition (served by invalidation/metrics_http.c on
 * [daemon] metrics_listen): what `stats` says, under the names `cgctl stats --prometheus`
 * prints (coregroup/stats_metrics.c), plus distributions the stats reply cannot carry:
 *  - coregroupd_request_duration_seconds{op,outcome}: each request's execution (cgd_execute:
 *    the call and building the reply, not the decoding or the queueing), by wire op and by
 *    outcome ("ok" or the wire error code);
 *  - the core's own histograms (cg_core_histogram_get): commit-to-eviction lag, the age of
 *    the freshness proof when the next one renewed the lease, events per catch-up;
 *  - coregroup_build_info.
 * Every sample carries the labels core and group, as cgctl's do. All times are in seconds.
 *
 * The latency table is fixed: one cg_hist (coregroup/sys/hist.h) per op and outcome, so a
 * worker observes with three relaxed atomic adds and no lock or allocation. A series is
 * exported once it has an observation, so a scrape shows the ops and outcomes that happened.
 * A scrape runs on libmicrohttpd's thread and reads only atomics and the core's thread-safe
 * getters; it never touches the repository.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "coregroup/sys/clock.h"
#include "coregroup/sys/hist.h"
#include "metrics.h"
#include "metrics_http.h"
#include "stats_metrics.h"

enum { LOG_ERROR = 0, LOG_INFO = 2 }; /* coregroupd.c's levels */

#define OUTCOMES (1 + CGD_CODES) /* "ok", then the wire's error codes in cgd_code order */

struct cgd_metrics {
    cg_metrics_http *http;
    cgd_env *env;
    cgd_log_fn logfn;
};

/* From 50 µs (a cache hit) to 10 s (a call waiting out lock and retry timeouts). */
static const double latency_le[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                    0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                    0.5,     1,      2.5,     5,      10,    INFINITY};
static cg_hist latency[CG_OP_COUNT][OUTCOMES];

void cgd_metrics_observe(int op, int code, int64_t started_us)
{
    int outcome = code == 0 ? 0 : 1 + cgd_code_of(code);
    if (op <= CG_OP_NONE || op >= CG_OP_COUNT)
        return;
    cg_hist_observe(&latency[op][outcome], (double)(cg_clock_mono_us() - started_us) / 1e6);
}

static const char *outcome_name(int outcome)
{
    return outcome == 0 ? "ok" : cgd_code_name(outcome - 1);
}

/* ---- the exposition ------------------------------------------------------------------- */

static void daemon_counter(cg_metrics_text *t, const char *name, const char *type, const char *help,
                           const char *labels, long long v)
{
    cg_metrics__family(t, name, type, help);
    cg_metrics__printf(t, "%s{%s} %lld\n", name, labels, v);
}

static int render(cg_metrics_text *t, void *arg)
{
    static const struct {
        cg_core_hist which;
        const char *name, *help;
        double scale;
    } core_hists[] = {
        {CG_HIST_EVICTION_LAG_MS, "coregroup_eviction_lag_seconds",
         "From a commit (the time its bus message carries) to this core applying its "
         "invalidation; bus messages only.",
         0.001},
        {CG_HIST_PROOF_AGE_MS, "coregroup_freshness_proof_age_at_renewal_seconds",
         "How old the last freshness proof was when the next one renewed the lease.", 0.001},
        {CG_HIST_CATCHUP_EVENTS, "coregroup_bus_catchup_events",
         "Events read from the outbox per catch-up.", 1},
    };
    cgd_metrics *m = arg;
    cgd_env *env = m->env;
    cg_core_stats st;
    char core[200], group[200], labels[512], more[700], v[40];
    size_t i;
    int op, o;

    cg_core_stats_get(env->core, &st);
    snprintf(labels, sizeof(labels), "core=\"%s\",group=\"%s\"",
             cg_metrics__label(core, sizeof(core), cg_core_name(env->core)),
             cg_metrics__label(group, sizeof(group), cg_core_group(env->core)));

    /* what `stats` says, named as cgctl names it */
    for (i = 0; i < cg_stat_metrics_n; i++) {
        const cg_stat_metric *sm = &cg_stat_metrics[i];
        cg_metrics__family(t, sm->metric, sm->type, sm->help);
        cg_metrics__printf(t, "%s{%s} %s\n", sm->metric, labels,
                           cg_stat_metric_format(v, sizeof(v), sm, &st));
    }
    daemon_counter(t, "coregroup_incarnation", "gauge",
                   "The core's incarnation (its fencing token).", labels,
                   (long long)cg_core_incarnation(env->core));
    daemon_counter(t, "coregroupd_uptime_seconds", "gauge",
                   "Seconds since coregroupd started serving.", labels,
                   (long long)((cgd_mono_ms() - env->started_ms) / 1000));
    daemon_counter(t, "coregroupd_workers", "gauge", "Worker threads serving requests.", labels,
                   env->workers);
    daemon_counter(t, "coregroupd_requests_total", "counter",
                   "Requests answered, malformed ones included.", labels,
                   (long long)atomic_load(&env->requests));
    daemon_counter(t, "coregroupd_requests_malformed_total", "counter",
                   "Requests the decoder refused.", labels,
                   (long long)atomic_load(&env->malformed));
    cg_metrics__family(t, "coregroupd_request_errors_total", "counter",
                       "Requests answered with an error, by code.");
    for (i = 0; i < CGD_CODES; i++)
        cg_metrics__printf(t, "coregroupd_request_errors_total{%s,code=\"%s\"} %llu\n", labels,
                           cgd_code_name((int)i),
                           (unsigned long long)atomic_load(&env->by_code[i]));

    /* call latency, by op and outcome: the series that have observations */
    cg_metrics__family(t, "coregroupd_request_duration_seconds", "histogram",
                       "Time to execute a request (its call and reply), by op and outcome.");
    for (op = CG_OP_NONE + 1; op < CG_OP_COUNT; op++)
        for (o = 0; o < OUTCOMES; o++) {
            cg_histogram h;
            cg_hist_snapshot(&h, &latency[op][o]);
            if (h.total == 0)
                continue;
            snprintf(more, sizeof(more), "%s,op=\"%s\",outcome=\"%s\"", labels, cg_req_op_name(op),
                     outcome_name(o));
            cg_metrics__histogram(t, "coregroupd_request_duration_seconds", more, &h, 1);
        }

    /* the core's distributions, milliseconds turned into seconds */
    for (i = 0; i < sizeof(core_hists) / sizeof(core_hists[0]); i++) {
        cg_histogram h;
        if (cg_core_histogram_get(&h, env->core, core_hists[i].which) < 0)
            continue;
        cg_metrics__family(t, core_hists[i].name, "histogram", core_hists[i].help);
        cg_metrics__histogram(t, core_hists[i].name, labels, &h, core_hists[i].scale);
    }
    cg_metrics__build_info(t);
    return 0;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* `s` in double quotes for a log line, '"' and '\\' escaped, control characters as '?'. */
static const char *quoted(char *buf, size_t bufsz, const char *s)
{
    size_t o = 0;
    buf[o++] = '"';
    for (; *s && o + 4 < bufsz; s++) {
        if (*s == '"' || *s == '\\')
            buf[o++] = '\\';
        buf[o++] = (unsigned char)*s < 0x20 ? '?' : *s;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

int cgd_metrics_bind(cgd_metrics **out, const cg_config *cfg, cgd_log_fn logfn)
{
    static cgd_metrics the; /* one endpoint per process */
    char why[600], text[1000], q[1100];
    int op, o, err;

    *out = NULL;
    for (op = 0; op < CG_OP_COUNT; op++)
        for (o = 0; o < OUTCOMES; o++)
            cg_hist_init(&latency[op][o], latency_le, sizeof(latency_le) / sizeof(*latency_le));
    if (cfg->metrics_listen == NULL)
        return 0;
    memset(&the, 0, sizeof(the));
    the.logfn = logfn;
    if ((err = cg_metrics__bind(&the.http, cfg->metrics_listen, why, sizeof(why))) < 0) {
        snprintf(text, sizeof(text), "%s: [daemon] metrics_listen: %s",
                 cfg->source ? cfg->source : "-", why);
        logfn(LOG_ERROR, err == CG_METRICS_EUSAGE ? "bad-config" : "bind-failed", "message=%s",
              quoted(q, sizeof(q), text));
        return err == CG_METRICS_EUSAGE ? 2 : 1;
    }
    *out = &the;
    return 0;
}

int cgd_metrics_start(cgd_metrics *m, cgd_env *env)
{
    char why[600], text[700], q[800];
    if (m == NULL)
        return 0;
    m->env = env;
    if (cg_metrics__start(m->http, render, m, why, sizeof(why)) < 0) {
        snprintf(text, sizeof(text), "[daemon] metrics_listen: %s", why);
        m->logfn(LOG_ERROR, "metrics-failed", "message=%s", quoted(q, sizeof(q), text));
        return 1;
    }
    m->logfn(LOG_INFO, "metrics", "metrics_listen=%s path=/metrics", cg_metrics__address(m->http));
    return 0;
}

void cgd_metrics_free(cgd_metrics *m)
{
    if (m == NULL)
        return;
    cg_metrics__free(m->http);
    m->http = NULL;
}
