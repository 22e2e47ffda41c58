/*
 * stats_metrics.h — the Prometheus name, type and help of every cg_core_stats field: the one
 * table that `cgctl stats --prometheus` (which finds a field by its name in the stats reply) and
 * coregroupd's /metrics endpoint (which reads the struct by offset) both print from, so the two
 * expositions cannot drift apart. Program code (linked into cgprogram), not library API.
 *
 * Counters end in _total; gauges are the values that go down as well as up. A field in
 * milliseconds is exported in seconds, the exposition format's base unit (ms_to_s), and its -1
 * ("none") stays -1. The table follows the struct's order; tests/test_daemon.c fails by name
 * when a field of include/coregroup/core.h has no entry here.
 */
#ifndef CG_STATS_METRICS_H
#define CG_STATS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "coregroup/core.h"

typedef struct cg_stat_metric {
    const char *field;  /* the cg_core_stats field, and its key in the stats reply */
    const char *metric; /* the Prometheus name */
    const char *type;   /* "counter" or "gauge" */
    const char *help;
    int ms_to_s;   /* milliseconds in the struct, seconds in the exposition */
    size_t offset; /* offsetof(cg_core_stats, field) */
    int kind;      /* CG_STAT_U64, CG_STAT_I64 or CG_STAT_INT: the field's C type */
} cg_stat_metric;

enum { CG_STAT_U64, CG_STAT_I64, CG_STAT_INT };

extern const cg_stat_metric cg_stat_metrics[];
extern const size_t cg_stat_metrics_n;

/* The entry of a stats field by its name, or NULL for a field this build does not know. */
const cg_stat_metric *cg_stat_metric_find(const char *field);

/* The field's value in `s` as exposition text, exact (an integer; seconds with three decimals
 * for ms_to_s, whose -1 stays -1), in buf (32 bytes are plenty). Returns buf. */
const char *cg_stat_metric_format(char *buf, size_t bufsz, const cg_stat_metric *m,
                                  const cg_core_stats *s);

#endif
