/*
 * repo.h — the repository access layer: every SQL statement a core runs (private).
 *
 * A cg_conn is one libpq connection bound to one core group: it checks that its login role is
 * mapped to that group (row-level security confines the session to the login's group), sets
 * coregroup.group, lock_timeout and idle_in_transaction_session_timeout, and
 * prepares every statement once when it connects. Each function here is one round trip; the
 * first statement of a transaction carries BEGIN in the same round trip (libpq pipeline mode),
 * and commit sends the outbox append and COMMIT together. Every statement filters on the
 * group, passed as $1.
 *
 * Errors come back as CG_* codes with cg_error_last() set (see pg.h for the mapping). After
 * an error inside a transaction, the transaction is failed: call cg_repo_rollback().
 */
#ifndef CG_REPO_H
#define CG_REPO_H

#include <libpq-fe.h>

#include "coregroup/config.h"
#include "coregroup/core.h"
#include "coregroup/sys/item.h"

typedef struct cg_conn {
    PGconn *pg;
    int in_tx;          /* a transaction is open (BEGIN was sent and succeeded) */
    int wrote;          /* the current transaction changed or locked something */
    int pending;        /* a read-only COMMIT was sent and its result not yet read */
    int64_t advertised; /* the incarnation this session last advertised (0: none) */
} cg_conn;

/* Connect, check the login's group, set the group, lock_timeout (cfg->lock_timeout_ms) and
 * idle_in_transaction_session_timeout (cfg->idle_in_transaction_timeout_ms) in one round trip,
 * and prepare the statements. *out is freed with cg_repo_close(). CG_ERETRYABLE when the
 * repository cannot be reached; CG_EINVALID for a bad DSN or login, and (SQLSTATE 42501)
 * when the login is mapped to another group than cfg->group_id or to none, naming the login,
 * both groups and the cg-migrate map-role command (superusers, BYPASSRLS roles and the
 * schema's owner are not checked: row-level security does not confine them); CG_ERROR when
 * the schema is not migrated to 0005 or a statement does not prepare. */
int cg_repo_connect(cg_conn **out, const cg_config *cfg, const char *application_name);
/* Reconnect a broken connection in place (same settings); the new session has advertised
 * nothing (advertised = 0). */
int cg_repo_reconnect(cg_conn *conn, const cg_config *cfg, const char *application_name);
void cg_repo_close(cg_conn *conn);
/* 1 when libpq still considers the connection usable. */
int cg_repo_usable(const cg_conn *conn);
/* 1 when the connection can go back to the pool: usable and outside any transaction (a
 * deferred read-only COMMIT counts as outside). */
int cg_repo_reusable(const cg_conn *conn);

/* ---- outside calls (autocommit) ---- */
int cg_repo_group_ensure(cg_conn *c, const char *group);
/* Register the core with a new incarnation (a new row, or the old row taken over), provided
 * its row's incarnation is still `seen` (0: there was no row); else CG_EEXISTS. */
int cg_repo_core_register(int64_t *incarnation, cg_conn *c, const char *group, const char *core,
                          const char *host, int pid, int64_t seen);
int cg_repo_core_leave(cg_conn *c, const char *group, const char *core, int64_t incarnation);
/* The group's event_seq; *all_v2 (may be NULL): 1 when every live member (joining, alive,
 * suspect) said at its current incarnation that it reads bus wire version 2. */
int cg_repo_event_seq(int64_t *seq, int *all_v2, cg_conn *c, const char *group);
/* Record this core's applied event seq and a heartbeat in its membership row (a suspect
 * member becomes alive again). 1 when recorded; 0 when this incarnation is no longer a member
 * (fenced, failed or left); or an error. */
int cg_repo_core_beat(cg_conn *c, const char *group, const char *core, int64_t incarnation,
                      int64_t applied_seq);
/* Mark a member silent for silence_ms as suspect: 1 done, 0 not (it spoke up, or was
 * handled already), or an error. Conditional on the incarnation seen. */
int cg_repo_suspect(cg_conn *c, const char *group, const char *core, int64_t seen, int silence_ms);
/* Declare a member silent for silence_ms failed and fence it (incarnation + 1): 1 when this
 * call did it (*new_incarnation set) — exactly one caller can — 0 when not, or an error. */
int cg_repo_fence(int64_t *new_incarnation, cg_conn *c, const char *group, const char *core,
                  int64_t seen, int silence_ms);
/* Delete at most `batch` (>= 1) of the group's oldest outbox rows older than retention_s
 * seconds, in one short autocommit transaction that first takes the group's pruning lock (a
 * transaction-scoped advisory lock): while another member holds it, nothing is deleted. One
 * round trip; *deleted gets how many rows went (0 when another member is pruning). Call it
 * again while it returns a full batch. CG_EINVALID for batch < 1 or retention_s < 0. */
int cg_repo_outbox_prune(int64_t *deleted, cg_conn *c, const char *group, long retention_s,
                         int batch);

/*
 * Advertise this session as serving `core` at `incarnation` in `group` (the session's own
 * group), so that once that incarnation is fenced, a survivor can end the session
 * (cg_repo_fence_sessions). Records the session's own backend only; advertising again with a
 * new incarnation replaces the old one. One round trip, outside a transaction. On success
 * c->advertised = incarnation. CG_EFENCED (SQLSTATE CGF01) when `incarnation` is not the
 * member's current one or the member failed or left; CG_EINVALID (SQLSTATE 42501) when `group`
 * is not the session's group; CG_ERETRYABLE when the connection failed.
 */
int cg_repo_session_advertise(cg_conn *c, const char *group, const char *core, int64_t incarnation);
/*
 * End the repository sessions advertised by `core` of `group` with an incarnation up to
 * `incarnation`, which must have been fenced (the member's current incarnation is greater),
 * so that their open transactions release their row locks. Never ends the caller's own
 * session. *ended gets how many sessions were ended. One round trip, outside a transaction.
 * CG_EINVALID with SQLSTATE 42501 and a message naming group, core and incarnation when
 * refused: `group` is not the session's group, there is no such member, or that incarnation
 * is still current; CG_ERETRYABLE when the connection failed (or a concurrent caller held the
 * advertisements past lock_timeout).
 */
int cg_repo_fence_sessions(int64_t *ended, cg_conn *c, const char *group, const char *core,
                           int64_t incarnation);

/* The group's membership rows, by name. */
int cg_repo_members(cg_member_list *out, cg_conn *c, const char *group);

/* One cached entry for cg_repo_audit: the caller fills handle, kind and cached; the call fills
 * repository and age_ms. */
typedef struct {
    int64_t handle;
    int kind;           /* a cg_part_kind */
    int64_t cached;     /* the version the cache holds */
    int64_t repository; /* the version the repository holds; -1: the part is gone */
    int64_t age_ms;     /* when the repository holds a newer version (or none): how long before
                           this statement the first version above `cached` committed, from the
                           outbox's committed_at (the earliest row whose items name the part with
                           a higher version); -1 when not older, or when that row was pruned */
} cg_repo_audit_row;

/* Compare n cached entries with the repository in ONE autocommit statement (one snapshot, one
 * round trip): the arrays of handles, parts and versions are parameters, unnested and joined
 * with resource_parts; only for the entries found older is the group's outbox searched. Costs
 * one pass over the group's outbox items when any entry is older (the outbox is bounded by
 * [bus] outbox_retention_s), none otherwise. n == 0 costs nothing. Outside a transaction. */
int cg_repo_audit(cg_repo_audit_row *rows, size_t n, cg_conn *c, const char *group);

/* The outbox's items of events (after, upto], in event order: items[i] belongs to seq[i]. */
typedef struct {
    int64_t *seq;
    cg_bus_item *items;
    size_t n;
} cg_outbox_rows;
int cg_repo_outbox_items(cg_outbox_rows *out, cg_conn *c, const char *group, int64_t after,
                         int64_t upto);
void cg_outbox_rows_dispose(cg_outbox_rows *rows);
/* The outbox rows an incarnation of a member wrote after event `after` (for recovery); the
 * caller frees *committed_us (one per item) and disposes of the rows. */
int cg_repo_outbox_of(cg_outbox_rows *out, int64_t **committed_us, cg_conn *c, const char *group,
                      const char *origin, int64_t incarnation, int64_t after);

/* ---- inside a call (BEGIN is sent with the first statement) ---- */
int cg_repo_resource_create(int64_t *handle, cg_conn *c, const char *group, const char *kind,
                            const char *service_id, const char *const bodies[CG_PART_COUNT]);
int cg_repo_resource_get(cg_resource *out, cg_conn *c, const char *group, int64_t handle);
/* Delete (two statements: lock the row, then delete). *items (free()) gets what the delete
 * invalidates: each part at its last version + 1; with version 0 (the outbox append of
 * cg_repo_commit gives them the event's number), a folder's own listing, every folder that
 * held a name bound to it, and its service key. */
int cg_repo_resource_delete(cg_bus_item **items, size_t *n_items, cg_conn *c, const char *group,
                            int64_t handle);
/* *version (may be NULL): the service key's counter, read in the same snapshot. */
int cg_repo_resource_find(cg_handle_list *out, int64_t *version, cg_conn *c, const char *group,
                          const char *service_id);

/* Read a part (lock: SELECT ... FOR UPDATE). *out is a new part. CG_ENOTFOUND if absent. */
int cg_repo_part_get(cg_part **out, cg_conn *c, const char *group, int64_t handle, int kind,
                     int lock);
/* A whole read-only transaction reading one part: BEGIN, SELECT and COMMIT in one round
 * trip. Only outside a transaction. */
int cg_repo_part_read_once(cg_part **out, cg_conn *c, const char *group, int64_t handle, int kind);
/* The part's current version only (the version-check cache strategy). */
int cg_repo_part_version(int64_t *version, cg_conn *c, const char *group, int64_t handle, int kind);
/* Conditional update. On success *out is the part as now stored (new version, the body as
 * the repository normalised it); CG_ESTALE (cg_error_last() carries expected and actual
 * versions) when the version moved on, CG_ENOTFOUND when the resource does not exist. */
int cg_repo_part_update(cg_part **out, cg_conn *c, const char *group, int64_t handle, int kind,
                        int64_t expected, const char *body);

int cg_repo_name_bind(cg_conn *c, const char *group, int64_t folder, const char *name,
                      int64_t target);
int cg_repo_name_unbind(cg_conn *c, const char *group, int64_t folder, const char *name);
int cg_repo_name_lookup(int64_t *target, cg_conn *c, const char *group, int64_t folder,
                        const char *name);
/* The listing and (names_version may be NULL) its names version, from one snapshot. */
int cg_repo_name_list(cg_name_list *out, int64_t *names_version, cg_conn *c, const char *group,
                      int64_t folder);

/*
 * End the transaction. With items (n > 0): append the outbox row through cg_outbox_append()
 * (fenced: CG_EFENCED when this core's incarnation is no longer current) and COMMIT in one
 * round trip; *seq and *committed_us get the event number and commit time. A "names" or
 * "find" item (wire version 2) takes the event number as its version, in the outbox and in
 * the repository's names_version / service_versions (migration 0006); the caller gives them
 * that version after the commit. Without items,
 * a transaction that wrote or locked something gets a plain COMMIT; a read-only one gets a
 * DEFERRED COMMIT: sent now, its result read on the connection's next use, so a read-only
 * call costs no round trip for ending it (nothing it did can be lost if that COMMIT fails).
 * On any failure the transaction is rolled back.
 */
int cg_repo_commit(int64_t *seq, int64_t *committed_us, cg_conn *c, const char *group,
                   const char *core, int64_t incarnation, const cg_bus_item *items, size_t n);
/* Roll back whatever is open; harmless when nothing is. */
void cg_repo_rollback(cg_conn *c);

#endif
