/*
 * audit.c — the consistency audit: how far a core's cache is from the repository, seen from
 * outside the read path (cg_core_audit; `cgctl audit` asks every core of a group for it).
 *
 * What it shows. The freshness promise (DESIGN.md I5) is a bound, not "always equal": a cached
 * entry may be older than the repository for as long as the bus takes to deliver, and reads
 * stay within the bound because the lease (lease.c) stops the cache from serving once no proof
 * of freshness is younger than max_staleness_ms. So the audit reports, per sampled entry, the
 * cached and the repository version and — for an older one — how long ago its first newer
 * version committed. Older but within the bound is normal. Older past the bound while the core
 * still trusts its cache (lease_fresh) is a real violation: a read would be served something
 * the repository replaced longer ago than promised.
 *
 * How. 1. cg_cache_sample copies up to N (handle, part, version) keys out of the cache, one
 * shard lock at a time, spread over the shards. 2. With no cache lock held, one statement on a
 * pool connection (cg_repo_audit: the keys as three array parameters, joined with
 * resource_parts, the outbox searched only for the older ones) compares them all: one round
 * trip, one snapshot. 3. The lease is read after the repository answered, so lease_fresh says
 * whether the core would still serve these entries at the moment they were found older.
 *
 * Invariants: the audit never changes the cache (an entry it finds older is reported, not
 * evicted: evicting would hide what the audit is for, and the bus, the proofs and the lease
 * already own that job) and never counts a cache hit or miss. It makes no call and takes no
 * row lock; a repository that cannot be reached makes it fail, never report "consistent".
 *
 * Names and finds (coregroup/sys/item.h) are audited like parts: a cached listing against its
 * folder's names_version, a cached find result against its service key's version, and the
 * age of an older one from the outbox's items_v2, where their items are.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core_internal.h"
#include "coregroup/sys/error.h"

void cg_audit_report_dispose(cg_audit_report *report)
{
    if (report == NULL)
        return;
    free(report->entries);
    memset(report, 0, sizeof(*report));
    report->oldest_age_ms = -1;
}

/* Compare on a pool connection; a connection found broken is reconnected (per [retry]) and the
 * statement sent once more, as a call's first statement is. */
static int compare(cg_core *core, cg_repo_audit_row *rows, size_t n)
{
    cg_conn *conn;
    int err;

    if ((err = cg_core__conn_acquire(core, &conn)) < 0)
        return err;
    err = cg_repo_audit(rows, n, conn, core->cfg->group_id);
    if (err == CG_ERETRYABLE && !cg_repo_usable(conn) &&
        (err = cg_core__reconnect(core, conn, 1)) == 0)
        err = cg_repo_audit(rows, n, conn, core->cfg->group_id);
    cg_core__conn_release(core, conn);
    return err;
}

int cg_core_audit(cg_audit_report *out, cg_core *core, size_t max_entries)
{
    cg_cache_stats cs;
    cg_cache_key *keys = NULL;
    cg_repo_audit_row *rows = NULL;
    size_t n, i;
    int err = 0;

    assert(out != NULL && core != NULL);
    memset(out, 0, sizeof(*out));
    out->oldest_age_ms = -1;
    if (max_entries < 1 || max_entries > CG_AUDIT_MAX_ENTRIES)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                            "audit: max_entries %zu is not within 1 to %d", max_entries,
                            CG_AUDIT_MAX_ENTRIES);
    if ((keys = calloc(max_entries, sizeof(*keys))) == NULL ||
        (rows = calloc(max_entries, sizeof(*rows))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    cg_cache_stats_get(core->cache, &cs);
    n = cg_cache_sample(core->cache, keys, max_entries);
    for (i = 0; i < n; i++) {
        rows[i].handle = keys[i].handle;
        rows[i].kind = keys[i].kind;
        rows[i].cached = keys[i].version;
    }
    if (n > 0 && (err = compare(core, rows, n)) < 0) /* an empty cache asks nothing */
        goto done;

    if (n > 0 && (out->entries = calloc(n, sizeof(*out->entries))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    out->checked = n;
    out->cache_entries = cs.entries;
    out->max_staleness_ms = core->cfg->max_staleness_ms;
    out->lease_fresh = core->cfg->strategy == CG_CACHE_INVALIDATE && cg_lease_valid(core);
    for (i = 0; i < n; i++) {
        cg_audit_entry *e = &out->entries[i];
        e->handle = rows[i].handle;
        e->part = rows[i].kind < CG_PART_COUNT ? (cg_part_kind)rows[i].kind : CG_PART_STATE;
        e->kind = cg_item_kind_name(rows[i].kind);
        e->cached_version = rows[i].cached;
        e->repository_version = rows[i].repository;
        e->age_ms = -1;
        if (rows[i].repository == rows[i].cached) {
            e->state = CG_AUDIT_CONSISTENT;
            out->consistent++;
        } else if (rows[i].repository < 0 || rows[i].repository > rows[i].cached) {
            e->state = CG_AUDIT_OLDER;
            e->age_ms = rows[i].age_ms;
            /* an unknown age is an outbox row pruned after retention: past any sane bound */
            e->past_bound = e->age_ms < 0 || e->age_ms > out->max_staleness_ms;
            out->older++;
            out->past_bound += (size_t)e->past_bound;
            if (e->age_ms > out->oldest_age_ms)
                out->oldest_age_ms = e->age_ms;
        } else {
            e->state = CG_AUDIT_NEWER;
            out->newer++;
        }
    }
done:
    free(keys);
    free(rows);
    if (err < 0)
        cg_audit_report_dispose(out);
    return err;
}
