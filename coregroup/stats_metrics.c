/*
 * stats_metrics.c — see stats_metrics.h: one entry per cg_core_stats field, in the struct's
 * order. Adding a field to the struct means adding its line here; cgctl and coregroupd's
 * /metrics then both export it under the same name.
 */
#include <stdio.h>
#include <string.h>

#include "stats_metrics.h"

#define COUNTER "counter"
#define GAUGE   "gauge"
/* clang-format off */
#define ENTRY(f, n, t, h, ms, k) {#f, n, t, h, ms, offsetof(cg_core_stats, f), k}
/* clang-format on */
#define U(f, name, type, help, ms) ENTRY(f, name, type, help, ms, CG_STAT_U64)
#define I(f, name, type, help, ms) ENTRY(f, name, type, help, ms, CG_STAT_I64)
#define N(f, name, type, help, ms) ENTRY(f, name, type, help, ms, CG_STAT_INT)

const cg_stat_metric cg_stat_metrics[] = {
    U(calls_committed, "coregroup_calls_committed_total", COUNTER, "Calls committed.", 0),
    U(calls_aborted, "coregroup_calls_aborted_total", COUNTER, "Calls aborted or failed.", 0),
    U(cache_hits, "coregroup_cache_hits_total", COUNTER, "Part reads served from the cache.", 0),
    U(cache_misses, "coregroup_cache_misses_total", COUNTER,
      "Part reads the cache could not serve.", 0),
    U(cache_fills, "coregroup_cache_fills_total", COUNTER, "Parts put into the cache.", 0),
    U(cache_fills_refused, "coregroup_cache_fills_refused_total", COUNTER,
      "Cache fills refused because a newer version was announced meanwhile.", 0),
    U(cache_evictions, "coregroup_cache_evictions_total", COUNTER, "Cache entries evicted.", 0),
    U(cache_expirations, "coregroup_cache_expirations_total", COUNTER,
      "Cache entries expired by ttl_ms.", 0),
    U(cache_entries, "coregroup_cache_entries", GAUGE, "Parts in the cache now.", 0),
    U(stale_errors, "coregroup_stale_errors_total", COUNTER,
      "Conditional updates refused as stale (version conflicts).", 0),
    U(invalidations_applied, "coregroup_invalidations_applied_total", COUNTER,
      "Invalidation items applied to the cache.", 0),
    U(cache_resets, "coregroup_cache_resets_total", COUNTER,
      "Whole-cache resets (the outbox was pruned past this core).", 0),
    U(repository_reads, "coregroup_repository_reads_total", COUNTER,
      "Parts read from the repository.", 0),
    U(repository_reconnects, "coregroup_repository_reconnects_total", COUNTER,
      "Repository connections found broken and replaced.", 0),
    U(invalidations_sent, "coregroup_invalidations_sent_total", COUNTER,
      "Invalidations published after COMMIT.", 0),
    U(invalidations_unsent, "coregroup_invalidations_unsent_total", COUNTER,
      "Invalidations not published (the outbox carries them).", 0),
    U(invalidations_received, "coregroup_invalidations_received_total", COUNTER,
      "Invalidations heard from the bus.", 0),
    U(duplicates, "coregroup_bus_duplicates_total", COUNTER,
      "Bus messages heard again or old, ignored.", 0),
    U(gaps, "coregroup_bus_gaps_total", COUNTER, "Missed bus events noticed.", 0),
    U(catchups, "coregroup_bus_catchups_total", COUNTER, "Gaps filled from the outbox.", 0),
    U(messages_dropped, "coregroup_bus_messages_dropped_total", COUNTER,
      "Bus messages dropped: malformed, foreign, unknown version or from the future.", 0),
    U(heartbeats_received, "coregroup_bus_heartbeats_received_total", COUNTER,
      "Heartbeats heard on the bus.", 0),
    U(polls, "coregroup_polls_total", COUNTER,
      "Backstop comparisons of the applied seq with the repository.", 0),
    I(applied_seq, "coregroup_applied_seq", GAUGE,
      "Every group event up to this one is applied to the cache.", 0),
    N(degraded, "coregroup_degraded", GAUGE,
      "1 when the core cannot prove its cache fresh within [cache] max_staleness_ms.", 0),
    U(reordered, "coregroup_bus_reordered_total", COUNTER,
      "Bus events that came ahead of a missing one which then arrived within the reorder window.",
      0),
    U(freshness_proofs, "coregroup_freshness_proofs_total", COUNTER,
      "Proofs that every group event up to the group's counter is applied.", 0),
    U(lease_misses, "coregroup_lease_misses_total", COUNTER,
      "Reads that found the freshness lease expired and skipped the cache.", 0),
    I(proof_age_ms, "coregroup_freshness_proof_age_seconds", GAUGE,
      "Age of the last freshness proof, from its start; -1 when there was none.", 1),
    U(members_suspected, "coregroup_members_suspected_total", COUNTER,
      "Members this core marked suspect.", 0),
    U(members_failed, "coregroup_members_failed_total", COUNTER,
      "Members this core declared failed and fenced.", 0),
    U(recoveries, "coregroup_recoveries_total", COUNTER,
      "Failed members whose publishing this core redid.", 0),
    U(recovered_events, "coregroup_recovered_events_total", COUNTER,
      "Outbox events of failed members this core published again.", 0),
    U(rejoins, "coregroup_rejoins_total", COUNTER,
      "Times this core found itself fenced and rejoined.", 0),
    U(bus_conflicts, "coregroup_bus_conflicts_total", COUNTER,
      "Bus invalidations whose seq was heard before with other items (forged or broken): "
      "applied too, and the seq read again from the outbox.",
      0),
};
const size_t cg_stat_metrics_n = sizeof(cg_stat_metrics) / sizeof(cg_stat_metrics[0]);

const cg_stat_metric *cg_stat_metric_find(const char *field)
{
    size_t i;
    for (i = 0; i < cg_stat_metrics_n; i++)
        if (strcmp(cg_stat_metrics[i].field, field) == 0)
            return &cg_stat_metrics[i];
    return NULL;
}

const char *cg_stat_metric_format(char *buf, size_t bufsz, const cg_stat_metric *m,
                                  const cg_core_stats *s)
{
    const char *p = (const char *)s + m->offset;
    long long v;

    if (m->kind == CG_STAT_U64) {
        snprintf(buf, bufsz, "%llu", (unsigned long long)*(const uint64_t *)(const void *)p);
        return buf;
    }
    v = m->kind == CG_STAT_I64 ? (long long)*(const int64_t *)(const void *)p
                               : (long long)*(const int *)(const void *)p;
    if (m->ms_to_s && v >= 0)
        snprintf(buf, bufsz, "%lld.%03lld", v / 1000, v % 1000);
    else
        snprintf(buf, bufsz, "%lld", v);
    return buf;
}
