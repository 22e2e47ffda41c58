/*
 * repo.c — every SQL statement a core runs, in one place.
 *
 * Design:
 *  - One table of statements (`statements` below), prepared on every connection when it
 *    connects, so a call pays no parse or plan per statement. All are parameterised; the
 *    group is always $1 and every statement filters on it. Row-level security is the
 *    second fence: the database confines each session to the group its login role is
 *    mapped to (migration 0005), so the group is decided by who logs in, not by what a
 *    session says. Each connection still sets coregroup.group, the configured group, and
 *    refuses to go on when the login is mapped to another group or to none (check_login).
 *  - Round trips are the cost that matters (DESIGN.md). The first statement of a transaction
 *    goes out in one pipeline with BEGIN, and the end of a changing call sends the outbox
 *    append and COMMIT in one pipeline, so a one-part update call costs two round trips.
 *  - The conditional update is the optimistic-concurrency check of e-Speak §2.7.3: zero rows
 *    means the caller's version is stale; the actual version is then read (an extra round trip
 *    on the failure path only) so the error can name it.
 *  - No member can hold the others up for long (DESIGN.md, "Fencing reaches the database").
 *    Every session runs under lock_timeout and idle_in_transaction_session_timeout, set in the
 *    same connect-time round trip as the group. Each session advertises the core and
 *    incarnation it serves (cg_session_advertise, migration 0004, recording the backend
 *    itself, so it cannot speak for another), and the survivor that fences a member ends that
 *    incarnation's sessions through cg_end_fenced_sessions, a SECURITY DEFINER function that
 *    can end nothing else: the cores' role needs no privilege to signal backends.
 *  - Outbox pruning is one member's job at a time, a batch per call, in one autocommit
 *    statement (cg_outbox_prune, 0004) holding the group's advisory lock only for that batch.
 * This file does not know about the cache, calls or retries: it turns libpq results into
 * values and CG_* codes and tracks whether a transaction is open.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coregroup/sys/error.h"
#include "coregroup/sys/part.h"
#include "pg.h"
#include "repo.h"

enum {
    ST_PART_GET,
    ST_PART_LOCK,
    ST_PART_VERSION,
    ST_PART_UPDATE,
    ST_RES_CREATE,
    ST_RES_GET,
    ST_RES_DELETE,
    ST_RES_FIND,
    ST_NAME_BIND,
    ST_NAME_UNBIND,
    ST_NAME_LOOKUP,
    ST_NAME_LIST,
    ST_OUTBOX,
    ST_GROUP_ENSURE,
    ST_CORE_REGISTER,
    ST_CORE_LEAVE,
    ST_EVENT_SEQ,
    ST_BEGIN,
    ST_COMMIT,
    ST_OUTBOX_ITEMS,
    ST_CORE_BEAT,
    ST_OUTBOX_PRUNE,
    ST_MEMBERS,
    ST_SUSPECT,
    ST_FENCE,
    ST_OUTBOX_OF,
    ST_FENCE_CHECK,
    ST_SESSION_ADVERTISE,
    ST_FENCE_SESSIONS,
    ST_AUDIT,
    ST_RES_LOCK,
    ST_COUNT
};

static const struct {
    const char *name;
    const char *sql;
} statements[ST_COUNT] = {
    [ST_PART_GET] = {"cg_part_get", "SELECT version, body::text FROM resource_parts "
                                    "WHERE group_id = $1 AND handle = $2 AND part = $3"},
    [ST_PART_LOCK] = {"cg_part_lock", "SELECT version, body::text FROM resource_parts "
                                      "WHERE group_id = $1 AND handle = $2 AND part = $3 "
                                      "FOR UPDATE"},
    [ST_PART_VERSION] = {"cg_part_version", "SELECT version FROM resource_parts "
                                            "WHERE group_id = $1 AND handle = $2 AND part = $3"},
    [ST_PART_UPDATE] = {"cg_part_update",
                        "UPDATE resource_parts SET body = $5::jsonb, version = version + 1 "
                        "WHERE group_id = $1 AND handle = $2 AND part = $3 AND version = $4 "
                        "RETURNING version, body::text"},
    [ST_RES_CREATE] = {"cg_res_create",
                       "WITH r AS (INSERT INTO resources (group_id, kind, service_id) "
                       "           VALUES ($1, $2, $3) RETURNING handle), "
                       "     p AS (INSERT INTO resource_parts (group_id, handle, part, body) "
                       "           SELECT $1, r.handle, x.part, x.body FROM r, "
                       "           (VALUES ('specification', $4::jsonb), "
                       "                   ('description', $5::jsonb), "
                       "                   ('state', $6::jsonb)) AS x (part, body)) "
                       "SELECT handle FROM r"},
    [ST_RES_GET] = {"cg_res_get", "SELECT kind, coalesce(service_id, '') FROM resources "
                                  "WHERE group_id = $1 AND handle = $2"},
    /* The row is locked first (ST_RES_LOCK, its own statement), so no bind to it can commit
     * after this statement's snapshot: b sees every name the cascade will delete. One row
     * per invalidation item: each part at its last version + 1; with version 0, which the
     * outbox append replaces by the event's number, a folder's own listing, every folder
     * that held a name bound to it, and the service key ($3, NULL without a service id). */
    [ST_RES_DELETE] = {"cg_res_delete",
                       "WITH p AS (SELECT part, version FROM resource_parts "
                       "           WHERE group_id = $1 AND handle = $2 FOR UPDATE), "
                       "     b AS (SELECT DISTINCT folder_handle FROM name_bindings "
                       "           WHERE group_id = $1 AND target_handle = $2 "
                       "           AND folder_handle <> $2), "
                       "     d AS (DELETE FROM resources WHERE group_id = $1 AND handle = $2 "
                       "           RETURNING handle, kind) "
                       "SELECT p.part, d.handle, p.version + 1 FROM d JOIN p ON true "
                       "UNION ALL SELECT 'names', d.handle, 0 FROM d WHERE d.kind = 'folder' "
                       "UNION ALL SELECT 'names', b.folder_handle, 0 FROM d, b "
                       "UNION ALL SELECT 'find', $3::bigint, 0 FROM d WHERE $3::bigint IS NOT NULL "
                       "UNION ALL SELECT 'deleted', d.handle, 1 FROM d"},
    [ST_RES_LOCK] = {"cg_res_lock", "SELECT service_id FROM resources "
                                    "WHERE group_id = $1 AND handle = $2 FOR UPDATE"},
    /* the key's version (0 while it has no row) and the handles, from one snapshot */
    [ST_RES_FIND] = {"cg_res_find",
                     "SELECT coalesce((SELECT version FROM service_versions "
                     "                 WHERE group_id = $1 AND service_key = $3), 0), r.handle "
                     "FROM (SELECT 1) AS one LEFT JOIN resources r "
                     "     ON r.group_id = $1 AND r.service_id = $2 ORDER BY r.handle"},
    /* Inserting with ON CONFLICT DO NOTHING waits for a concurrent binder of the same name and
     * then reports "not inserted" instead of failing the transaction, so the call can go on. */
    [ST_NAME_BIND] = {"cg_name_bind",
                      "WITH f AS (SELECT kind FROM resources WHERE group_id = $1 AND handle = $2), "
                      "     t AS (SELECT 1 FROM resources WHERE group_id = $1 AND handle = $4), "
                      "     i AS (INSERT INTO name_bindings (group_id, folder_handle, name, "
                      "                                      target_handle) "
                      "           SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM t) "
                      "           AND EXISTS (SELECT 1 FROM f WHERE kind = 'folder') "
                      "           ON CONFLICT DO NOTHING RETURNING 1) "
                      "SELECT (SELECT kind FROM f), EXISTS (SELECT 1 FROM t), "
                      "       EXISTS (SELECT 1 FROM i)"},
    [ST_NAME_UNBIND] = {"cg_name_unbind",
                        "DELETE FROM name_bindings "
                        "WHERE group_id = $1 AND folder_handle = $2 AND name = $3 "
                        "RETURNING target_handle"},
    [ST_NAME_LOOKUP] = {"cg_name_lookup",
                        "SELECT target_handle FROM name_bindings "
                        "WHERE group_id = $1 AND folder_handle = $2 AND name = $3"},
    [ST_NAME_LIST] = {"cg_name_list",
                      "SELECT r.kind, b.name, b.target_handle, r.names_version FROM resources r "
                      "LEFT JOIN name_bindings b "
                      "       ON b.group_id = r.group_id AND b.folder_handle = r.handle "
                      "WHERE r.group_id = $1 AND r.handle = $2 ORDER BY b.name"},
    /* $4: the part items (or the no-op item), $5: every item when one is of wire version 2 */
    [ST_OUTBOX] = {"cg_outbox", "SELECT seq, committed_us FROM cg_outbox_append($1, $2, $3, "
                                "$4::jsonb, $5::jsonb)"},
    [ST_GROUP_ENSURE] = {"cg_group_ensure", "INSERT INTO core_groups (group_id) VALUES ($1) "
                                            "ON CONFLICT DO NOTHING"},
    [ST_CORE_REGISTER] = {"cg_core_register",
                          "INSERT INTO cores (group_id, core_name, host, pid, state, "
                          "                   wire2_incarnation) "
                          "VALUES ($1, $2, $3, $4, 'alive', 1) "
                          "ON CONFLICT (group_id, core_name) DO UPDATE "
                          "SET incarnation = cores.incarnation + 1, host = EXCLUDED.host, "
                          "    pid = EXCLUDED.pid, started_at = now(), heartbeat_at = now(), "
                          "    state = 'alive', wire2_incarnation = cores.incarnation + 1 "
                          "WHERE cores.incarnation = $5 " /* the row the caller judged */
                          "RETURNING incarnation"},
    [ST_CORE_LEAVE] = {"cg_core_leave", "UPDATE cores SET state = 'left', heartbeat_at = now() "
                                        "WHERE group_id = $1 AND core_name = $2 "
                                        "AND incarnation = $3"},
    /* and whether every live member reads wire version 2 (migration 0006) */
    [ST_EVENT_SEQ] = {"cg_event_seq",
                      "SELECT event_seq, NOT EXISTS (SELECT 1 FROM cores c "
                      "       WHERE c.group_id = $1 AND c.state IN ('joining', 'alive', 'suspect') "
                      "       AND c.wire2_incarnation IS DISTINCT FROM c.incarnation) "
                      "FROM core_groups WHERE group_id = $1"},
    /* prepared too: in a pipeline, parsing them per call costs as much as the SELECT */
    [ST_BEGIN] = {"cg_begin", "BEGIN"},
    [ST_COMMIT] = {"cg_commit", "COMMIT"},
    /* catch-up: the outbox's items, one row each, in event order */
    [ST_OUTBOX_ITEMS] = {"cg_outbox_items",
                         "SELECT i.seq, (x ->> 'h')::bigint, x ->> 'p', (x ->> 'v')::bigint "
                         "FROM invalidations i "
                         "CROSS JOIN LATERAL jsonb_array_elements(coalesce(i.items_v2, i.items)) x "
                         "WHERE i.group_id = $1 AND i.seq > $2 AND i.seq <= $3 ORDER BY i.seq"},
    /* the member's own heartbeat; no row: this incarnation was fenced */
    [ST_CORE_BEAT] = {"cg_core_beat",
                      "UPDATE cores SET applied_seq = $4, heartbeat_at = now(), "
                      "       state = CASE WHEN state = 'suspect' THEN 'alive' ELSE state END "
                      "WHERE group_id = $1 AND core_name = $2 AND incarnation = $3 "
                      "AND state NOT IN ('failed', 'left') RETURNING 1"},
    /* one batch under the group's pruning lock; 0 rows while another member holds it */
    [ST_OUTBOX_PRUNE] = {"cg_outbox_prune",
                         "SELECT cg_outbox_prune($1, $2::double precision, $3::integer)"},
    [ST_MEMBERS] = {"cg_members",
                    "SELECT c.core_name, c.incarnation, c.state, c.host, c.pid, "
                    "       (extract(epoch FROM now() - c.heartbeat_at) * 1000)::bigint, "
                    "       c.applied_seq, g.event_seq "
                    "FROM cores c JOIN core_groups g USING (group_id) "
                    "WHERE c.group_id = $1 ORDER BY c.core_name"},
    /* failure detection: conditional on the incarnation seen and the silence, so a member
     * that spoke up meanwhile, or one already handled, is left alone */
    [ST_SUSPECT] = {"cg_suspect",
                    "UPDATE cores SET state = 'suspect' "
                    "WHERE group_id = $1 AND core_name = $2 AND incarnation = $3 "
                    "AND state IN ('joining', 'alive') "
                    "AND heartbeat_at < now() - make_interval(secs => $4::double precision / 1000) "
                    "RETURNING 1"},
    [ST_FENCE] = {"cg_fence",
                  "UPDATE cores SET state = 'failed', incarnation = incarnation + 1 "
                  "WHERE group_id = $1 AND core_name = $2 AND incarnation = $3 "
                  "AND state IN ('joining', 'alive', 'suspect') "
                  "AND heartbeat_at < now() - make_interval(secs => $4::double precision / 1000) "
                  "RETURNING incarnation"},
    /* recovery: a failed member's outbox rows after a point, one row per item */
    [ST_OUTBOX_OF] = {"cg_outbox_of",
                      "SELECT i.seq, (x ->> 'h')::bigint, x ->> 'p', (x ->> 'v')::bigint, "
                      "       (extract(epoch FROM i.committed_at) * 1000000)::bigint "
                      "FROM invalidations i "
                      "CROSS JOIN LATERAL jsonb_array_elements(coalesce(i.items_v2, i.items)) x "
                      "WHERE i.group_id = $1 AND i.origin_core = $2 "
                      "AND i.origin_incarnation = $3 AND i.seq > $4 ORDER BY i.seq"},
    [ST_FENCE_CHECK] = {"cg_fence_check", "SELECT cg_fence_check($1, $2, $3)"},
    /* this backend serves core $2 at incarnation $3 (refused for another group, or when that
     * incarnation is not current) */
    [ST_SESSION_ADVERTISE] = {"cg_session_advertise", "SELECT cg_session_advertise($1, $2, $3)"},
    /* a survivor ends the sessions of a fenced incarnation $3 of member $2 */
    [ST_FENCE_SESSIONS] = {"cg_fence_sessions", "SELECT cg_end_fenced_sessions($1, $2, $3)"},
    /* the consistency audit: cached (handle, kind, version) triples as three arrays, compared
     * with resource_parts, a folder's names_version ("names") or a service key's version
     * ("find"); for each one the repository holds a newer version of (or none), when the first
     * newer version committed (the earliest outbox row naming the key above the cached
     * version). The outbox is searched only for those older entries. */
    [ST_AUDIT] =
        {"cg_audit",
         "WITH k AS (SELECT * FROM unnest($2::bigint[], $3::text[], $4::bigint[]) "
         "                WITH ORDINALITY AS k (handle, part, version, n)), "
         "     c AS (SELECT k.n, k.handle, k.part, k.version, CASE k.part "
         "             WHEN 'names' THEN (SELECT r.names_version FROM resources r "
         "                  WHERE r.group_id = $1 AND r.handle = k.handle) "
         "             WHEN 'find' THEN coalesce((SELECT s.version FROM service_versions s "
         "                  WHERE s.group_id = $1 AND s.service_key = k.handle), 0) "
         "             ELSE (SELECT p.version FROM resource_parts p WHERE p.group_id = $1 "
         "                  AND p.handle = k.handle AND p.part = k.part) END AS repo "
         "           FROM k), "
         "     a AS (SELECT c.n, min(i.committed_at) AS at "
         "           FROM c JOIN invalidations i ON i.group_id = $1 "
         "           CROSS JOIN LATERAL jsonb_to_recordset(coalesce(i.items_v2, i.items)) "
         "                AS x (h bigint, p text, v bigint) "
         "           WHERE (c.repo IS NULL OR c.repo > c.version) "
         "             AND x.h = c.handle AND x.p = c.part AND x.v > c.version "
         "           GROUP BY c.n) "
         "SELECT c.n, c.repo, (extract(epoch FROM now() - a.at) * 1000)::bigint "
         "FROM c LEFT JOIN a USING (n) ORDER BY c.n"},
};

/* ---- connections ---------------------------------------------------------------------- */

/*
 * The group of this session is the one its login is mapped to (migration 0005): row-level
 * security confines the session to it whatever coregroup.group says. A core configured for
 * another group would therefore see nothing of its own and fail obscurely; refuse it here,
 * naming the login, both groups and the DBA's remedy (in under 200 characters for common
 * names: a daemon's log line quotes that much). Superusers, BYPASSRLS roles and the
 * schema's owner are not confined (the DBA's and the tests' own connections), so they pass.
 */
static int check_login(const cg_config *cfg, const char *login, const char *mapped, int privileged)
{
    if (privileged || (mapped != NULL && strcmp(mapped, cfg->group_id) == 0))
        return 0;
    if (mapped == NULL)
        return cg_error_set_sqlstate(CG_EINVALID, "42501",
                                     "login \"%s\" is not mapped to a group (this core's is "
                                     "\"%s\", [core] group); the DBA maps it with: "
                                     "cg-migrate map-role %s %s",
                                     login, cfg->group_id, login, cfg->group_id);
    return cg_error_set_sqlstate(CG_EINVALID, "42501",
                                 "login \"%s\" is mapped to group \"%s\", not \"%s\" ([core] "
                                 "group): log in as a role of \"%s\", which the DBA maps with: "
                                 "cg-migrate map-role ROLE %s",
                                 login, mapped, cfg->group_id, cfg->group_id, cfg->group_id);
}

static int prepare_all(cg_conn *c, const cg_config *cfg)
{
    char b_lock[24], b_idle[24];
    const char *vals[3] = {cfg->group_id, b_lock, b_idle};
    PGresult *r;
    int i, err = 0;

    /* One round trip: the group this session means to serve (coregroup.group, the library's
     * statement of intent) and who its login is (cg_session_login, 0005), checked against
     * each other; and the two fences against a member holding locks: a statement waiting
     * for a lock longer than lock_timeout fails (55P03), and a session idle inside a
     * transaction longer than idle_in_transaction_session_timeout is ended by the server
     * (25P03). */
    snprintf(b_lock, sizeof(b_lock), "%dms", cfg->lock_timeout_ms);
    snprintf(b_idle, sizeof(b_idle), "%dms", cfg->idle_in_transaction_timeout_ms);
    r = PQexecParams(c->pg,
                     "SELECT set_config('coregroup.group', $1, false), "
                     "set_config('lock_timeout', $2, false), "
                     "set_config('idle_in_transaction_session_timeout', $3, false), "
                     "l.login, l.group_id, l.privileged FROM cg_session_login() l",
                     3, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        err = cg_pg_error(c->pg, r,
                          state && strcmp(state, "42883") == 0
                              ? "set the session's group and timeouts (is the schema migrated "
                                "to 0005?)"
                              : "set the session's group and timeouts");
    } else {
        err =
            check_login(cfg, PQgetvalue(r, 0, 3), PQgetisnull(r, 0, 4) ? NULL : PQgetvalue(r, 0, 4),
                        PQgetvalue(r, 0, 5)[0] == 't');
    }
    PQclear(r);
    for (i = 0; err == 0 && i < ST_COUNT; i++) {
        r = PQprepare(c->pg, statements[i].name, statements[i].sql, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char what[128];
            snprintf(what, sizeof(what), "prepare %s (is the schema migrated?)",
                     statements[i].name);
            err = cg_pg_error(c->pg, r, what);
        }
        PQclear(r);
    }
    return err;
}

int cg_repo_reconnect(cg_conn *c, const cg_config *cfg, const char *application_name)
{
    int err;
    PQfinish(c->pg);
    c->pg = NULL;
    c->in_tx = c->wrote = c->pending = 0;
    c->advertised = 0; /* a new session has advertised nothing */
    if ((err = cg_pg_connect(&c->pg, cfg->dsn, application_name, cfg->keepalive_idle_s)) < 0)
        return err;
    return prepare_all(c, cfg);
}

int cg_repo_connect(cg_conn **out, const cg_config *cfg, const char *application_name)
{
    cg_conn *c = calloc(1, sizeof(*c));
    int err;

    *out = NULL;
    if (c == NULL)
        return cg_error_nomem();
    if ((err = cg_repo_reconnect(c, cfg, application_name)) < 0) {
        cg_repo_close(c);
        return err;
    }
    *out = c;
    return 0;
}

void cg_repo_close(cg_conn *c)
{
    if (c == NULL)
        return;
    PQfinish(c->pg);
    free(c);
}

int cg_repo_usable(const cg_conn *c)
{
    return c && c->pg && PQstatus(c->pg) == CONNECTION_OK;
}

int cg_repo_reusable(const cg_conn *c)
{
    return cg_repo_usable(c) && (c->pending || PQtransactionStatus(c->pg) == PQTRANS_IDLE);
}

static void lost(cg_conn *c)
{
    PQfinish(c->pg);
    c->pg = NULL;
    c->in_tx = c->wrote = c->pending = 0;
    c->advertised = 0;
}

/* Read the result of a deferred read-only COMMIT, if one is outstanding. Its outcome does not
 * matter (a read-only transaction has nothing to lose); a broken connection does. */
static int drain(cg_conn *c)
{
    PGresult *r;
    int err;
    if (!c->pending)
        return 0;
    c->pending = 0;
    if ((r = PQgetResult(c->pg)) == NULL) /* the COMMIT's result */
        goto broken;
    PQclear(r);
    while ((r = PQgetResult(c->pg)) != NULL) /* up to the command's end marker */
        PQclear(r);
    r = PQgetResult(c->pg); /* the sync point */
    if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(r);
        goto broken;
    }
    PQclear(r);
    if (PQexitPipelineMode(c->pg) == 1)
        return 0;
broken:
    err = cg_pg_error(c->pg, NULL, "repository connection lost");
    if (err != CG_ERETRYABLE)
        err = cg_error_set(CG_ERETRYABLE, CG_ERRCLASS_REPOSITORY, "%s", cg_error_last()->message);
    lost(c);
    return err;
}

/* ---- sending statements --------------------------------------------------------------- */

typedef struct {
    const char *name; /* a prepared statement, or NULL for `sql` */
    const char *sql;
    int nparams;
    const char *const *vals;
} command;

static int send_command(PGconn *pg, const command *cmd)
{
    if (cmd->name)
        return PQsendQueryPrepared(pg, cmd->name, cmd->nparams, cmd->vals, NULL, NULL, 0);
    return PQsendQueryParams(pg, cmd->sql, cmd->nparams, NULL, cmd->vals, NULL, NULL, 0);
}

/*
 * Send `n` commands in one round trip (libpq pipeline mode) and collect one result per
 * command into res[] (the caller clears them). A command after a failed one comes back as
 * PGRES_PIPELINE_ABORTED. Returns 0, or CG_ERETRYABLE when the connection broke (res[] then
 * holds what arrived, NULLs for the rest).
 */
static int pipeline(cg_conn *c, const command *cmds, int n, PGresult **res)
{
    PGresult *r;
    int i, err = 0;

    for (i = 0; i < n; i++)
        res[i] = NULL;
    if ((err = drain(c)) < 0)
        return err;
    if (PQenterPipelineMode(c->pg) != 1)
        return cg_pg_error(c->pg, NULL, "enter pipeline mode");
    for (i = 0; i < n; i++)
        if (send_command(c->pg, &cmds[i]) != 1)
            goto broken;
    if (PQpipelineSync(c->pg) != 1)
        goto broken;
    for (i = 0; i < n; i++) {
        if ((res[i] = PQgetResult(c->pg)) == NULL)
            goto broken;
        while ((r = PQgetResult(c->pg)) != NULL) /* up to the command's end marker */
            PQclear(r);
    }
    r = PQgetResult(c->pg); /* the sync point */
    if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PQclear(r);
        goto broken;
    }
    PQclear(r);
    if (PQexitPipelineMode(c->pg) != 1)
        goto broken;
    return 0;
broken:
    err = cg_pg_error(c->pg, NULL, "repository connection lost");
    if (err != CG_ERETRYABLE) /* the connection may look fine, but the protocol state is not */
        err = cg_error_set(CG_ERETRYABLE, CG_ERRCLASS_REPOSITORY, "%s", cg_error_last()->message);
    lost(c);
    return err;
}

/*
 * Run prepared statement `st` inside the current call's transaction, opening it (BEGIN in
 * the same round trip) when none is open. Returns the result when its status is `want`;
 * else NULL with the error raised, and the transaction (if any) is failed.
 */
static PGresult *run(cg_conn *c, int st, int nparams, const char *const *vals, ExecStatusType want,
                     const char *what)
{
    PGresult *r;

    if (!cg_repo_usable(c)) {
        cg_error_set(CG_ERETRYABLE, CG_ERRCLASS_REPOSITORY, "%s: no repository connection", what);
        return NULL;
    }
    if (!c->in_tx) {
        command cmds[2] = {{statements[ST_BEGIN].name, NULL, 0, NULL},
                           {statements[st].name, NULL, nparams, vals}};
        PGresult *res[2];
        if (pipeline(c, cmds, 2, res) < 0) {
            PQclear(res[0]);
            PQclear(res[1]);
            return NULL;
        }
        if (PQresultStatus(res[0]) != PGRES_COMMAND_OK) {
            cg_pg_error(c->pg, res[0], "BEGIN");
            PQclear(res[0]);
            PQclear(res[1]);
            return NULL;
        }
        PQclear(res[0]);
        c->in_tx = 1;
        r = res[1];
    } else {
        r = PQexecPrepared(c->pg, statements[st].name, nparams, vals, NULL, NULL, 0);
    }
    if (PQresultStatus(r) != want) {
        cg_pg_error(c->pg, r, what);
        PQclear(r);
        if (!cg_repo_usable(c))
            c->in_tx = c->wrote = 0;
        return NULL;
    }
    if (st != ST_PART_GET && st != ST_PART_VERSION && st != ST_RES_GET && st != ST_RES_FIND &&
        st != ST_NAME_LOOKUP && st != ST_NAME_LIST)
        c->wrote = 1; /* changes or locks: its COMMIT must be confirmed */
    return r;
}

/* Run a statement outside any call (autocommit). */
static PGresult *run_auto(cg_conn *c, int st, int nparams, const char *const *vals,
                          ExecStatusType want, const char *what)
{
    PGresult *r;
    if (drain(c) < 0)
        return NULL;
    r = PQexecPrepared(c->pg, statements[st].name, nparams, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != want) {
        cg_pg_error(c->pg, r, what);
        PQclear(r);
        return NULL;
    }
    return r;
}

#define I64(buf, v) (snprintf(buf, sizeof(buf), "%" PRId64, (int64_t)(v)), (const char *)buf)

static int64_t get_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* ---- outside calls -------------------------------------------------------------------- */

int cg_repo_group_ensure(cg_conn *c, const char *group)
{
    const char *vals[1] = {group};
    PGresult *r = run_auto(c, ST_GROUP_ENSURE, 1, vals, PGRES_COMMAND_OK, "create the group");
    if (r == NULL)
        return cg_error_last()->code;
    PQclear(r);
    return 0;
}

int cg_repo_core_register(int64_t *incarnation, cg_conn *c, const char *group, const char *core,
                          const char *host, int pid, int64_t seen)
{
    char b_pid[24], b_seen[24];
    const char *vals[5] = {group, core, host, I64(b_pid, pid), I64(b_seen, seen)};
    PGresult *r = run_auto(c, ST_CORE_REGISTER, 5, vals, PGRES_TUPLES_OK, "register the core");
    int err = 0;
    if (r == NULL)
        return cg_error_last()->code;
    if (PQntuples(r) == 0)
        err = cg_error_set(CG_EEXISTS, CG_ERRCLASS_REPOSITORY,
                           "core \"%s\" of group \"%s\" was registered by another process "
                           "meanwhile (its incarnation is no longer %" PRId64 ")",
                           core, group, seen);
    else
        *incarnation = get_i64(r, 0, 0);
    PQclear(r);
    return err;
}

int cg_repo_core_leave(cg_conn *c, const char *group, const char *core, int64_t incarnation)
{
    char b_inc[24];
    const char *vals[3] = {group, core, I64(b_inc, incarnation)};
    PGresult *r = run_auto(c, ST_CORE_LEAVE, 3, vals, PGRES_COMMAND_OK, "leave the group");
    if (r == NULL)
        return cg_error_last()->code;
    PQclear(r);
    return 0;
}

int cg_repo_event_seq(int64_t *seq, int *all_v2, cg_conn *c, const char *group)
{
    const char *vals[1] = {group};
    PGresult *r = run_auto(c, ST_EVENT_SEQ, 1, vals, PGRES_TUPLES_OK, "read the event sequence");
    int err = 0;
    if (r == NULL)
        return cg_error_last()->code;
    if (PQntuples(r) == 0)
        err = cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY, "group \"%s\" does not exist",
                           group);
    else {
        *seq = get_i64(r, 0, 0);
        if (all_v2)
            *all_v2 = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    }
    PQclear(r);
    return err;
}

int cg_repo_core_beat(cg_conn *c, const char *group, const char *core, int64_t incarnation,
                      int64_t applied_seq)
{
    char b_inc[24], b_seq[24];
    const char *vals[4] = {group, core, I64(b_inc, incarnation), I64(b_seq, applied_seq)};
    PGresult *r = run_auto(c, ST_CORE_BEAT, 4, vals, PGRES_TUPLES_OK, "record a heartbeat");
    int alive;
    if (r == NULL)
        return cg_error_last()->code;
    alive = PQntuples(r) == 1;
    PQclear(r);
    return alive;
}

/* Run a conditional membership update; 1 when it changed the row, 0 when not. */
static int member_update(int64_t *incarnation, cg_conn *c, int st, const char *group,
                         const char *core, int64_t seen, int silence_ms)
{
    char b_inc[24], b_ms[24];
    const char *vals[4] = {group, core, I64(b_inc, seen), I64(b_ms, silence_ms)};
    PGresult *r = run_auto(c, st, 4, vals, PGRES_TUPLES_OK, "update a member");
    int changed;
    if (r == NULL)
        return cg_error_last()->code;
    changed = PQntuples(r) == 1;
    if (changed && incarnation)
        *incarnation = get_i64(r, 0, 0);
    PQclear(r);
    return changed;
}

int cg_repo_suspect(cg_conn *c, const char *group, const char *core, int64_t seen, int silence_ms)
{
    return member_update(NULL, c, ST_SUSPECT, group, core, seen, silence_ms);
}

int cg_repo_fence(int64_t *new_incarnation, cg_conn *c, const char *group, const char *core,
                  int64_t seen, int silence_ms)
{
    return member_update(new_incarnation, c, ST_FENCE, group, core, seen, silence_ms);
}

int cg_repo_outbox_prune(int64_t *deleted, cg_conn *c, const char *group, long retention_s,
                         int batch)
{
    char b_s[24], b_n[24];
    const char *vals[3] = {group, I64(b_s, retention_s), I64(b_n, batch)};
    PGresult *r;

    *deleted = 0;
    if (batch < 1 || retention_s < 0)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                            "prune the outbox: batch %d and retention %lds must be >= 1 and >= 0",
                            batch, retention_s);
    if ((r = run_auto(c, ST_OUTBOX_PRUNE, 3, vals, PGRES_TUPLES_OK, "prune the outbox")) == NULL)
        return cg_error_last()->code;
    *deleted = get_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

/* Re-raise the error of a refused session function: SQLSTATE 42501 (not allowed) as
 * CG_EINVALID, CGF01 (fenced) as CG_EFENCED; any other code unchanged. */
static int refused(int err)
{
    char state[6];

    snprintf(state, sizeof(state), "%s", cg_error_last()->sqlstate);
    if (strcmp(state, "42501") == 0)
        err = cg_error_set_sqlstate(CG_EINVALID, state, "%s", cg_error_last()->message);
    else if (strcmp(state, "CGF01") == 0)
        err = cg_error_set_sqlstate(CG_EFENCED, state, "%s", cg_error_last()->message);
    return err;
}

int cg_repo_session_advertise(cg_conn *c, const char *group, const char *core, int64_t incarnation)
{
    char b_inc[24];
    const char *vals[3] = {group, core, I64(b_inc, incarnation)};
    PGresult *r;

    assert(!c->in_tx); /* a rolled-back advertisement would leave `advertised` lying */
    if ((r = run_auto(c, ST_SESSION_ADVERTISE, 3, vals, PGRES_TUPLES_OK,
                      "advertise the session")) == NULL)
        return refused(cg_error_last()->code);
    PQclear(r);
    c->advertised = incarnation;
    return 0;
}

int cg_repo_fence_sessions(int64_t *ended, cg_conn *c, const char *group, const char *core,
                           int64_t incarnation)
{
    char b_inc[24];
    const char *vals[3] = {group, core, I64(b_inc, incarnation)};
    PGresult *r;

    assert(!c->in_tx);
    *ended = 0;
    if ((r = run_auto(c, ST_FENCE_SESSIONS, 3, vals, PGRES_TUPLES_OK,
                      "end a fenced member's sessions")) == NULL)
        return refused(cg_error_last()->code);
    *ended = get_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

int cg_repo_members(cg_member_list *out, cg_conn *c, const char *group)
{
    const char *vals[1] = {group};
    PGresult *r = run_auto(c, ST_MEMBERS, 1, vals, PGRES_TUPLES_OK, "read the members");
    int i, n, err = 0;

    out->members = NULL;
    out->n = 0;
    out->event_seq = 0;
    if (r == NULL)
        return cg_error_last()->code;
    n = PQntuples(r);
    if (n > 0 && (out->members = calloc((size_t)n, sizeof(*out->members))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    for (i = 0; i < n; i++) {
        cg_member *m = &out->members[i];
        snprintf(m->name, sizeof(m->name), "%s", PQgetvalue(r, i, 0));
        m->incarnation = get_i64(r, i, 1);
        snprintf(m->state, sizeof(m->state), "%s", PQgetvalue(r, i, 2));
        snprintf(m->host, sizeof(m->host), "%s", PQgetvalue(r, i, 3));
        m->pid = (int)get_i64(r, i, 4);
        m->heartbeat_age_ms = get_i64(r, i, 5);
        m->applied_seq = get_i64(r, i, 6);
        out->event_seq = get_i64(r, i, 7);
        m->lag = out->event_seq - m->applied_seq;
    }
    out->n = (size_t)n;
done:
    PQclear(r);
    return err;
}

/* ---- the consistency audit ------------------------------------------------------------- */

/* The text of a PostgreSQL array literal of n integers (handles or versions: `field` 0) or part
 * names (1) into buf of `size` bytes. Plain digits and the fixed part names need no quoting. */
static void array_text(char *buf, size_t size, const cg_repo_audit_row *rows, size_t n, int field)
{
    size_t i, len = 0;
    buf[len++] = '{';
    for (i = 0; i < n && len < size; i++) {
        const char *sep = i ? "," : "";
        if (field == 1)
            len += (size_t)snprintf(buf + len, size - len, "%s%s", sep,
                                    cg_item_kind_name(rows[i].kind));
        else
            len += (size_t)snprintf(buf + len, size - len, "%s%" PRId64, sep,
                                    field == 0 ? rows[i].handle : rows[i].cached);
    }
    snprintf(buf + (len < size ? len : size - 1), size - (len < size ? len : size - 1), "}");
}

int cg_repo_audit(cg_repo_audit_row *rows, size_t n, cg_conn *c, const char *group)
{
    size_t size = n * 24 + 3, i;
    char *arrays[3] = {NULL, NULL, NULL};
    const char *vals[4];
    PGresult *r = NULL;
    int err = 0, k;

    if (n == 0)
        return 0;
    for (k = 0; k < 3; k++) {
        if ((arrays[k] = malloc(size)) == NULL) {
            err = cg_error_nomem();
            goto done;
        }
        array_text(arrays[k], size, rows, n, k);
    }
    vals[0] = group;
    vals[1] = arrays[0];
    vals[2] = arrays[1];
    vals[3] = arrays[2];
    if ((r = run_auto(c, ST_AUDIT, 4, vals, PGRES_TUPLES_OK, "audit the cache")) == NULL) {
        err = cg_error_last()->code;
        goto done;
    }
    if ((size_t)PQntuples(r) != n) {
        err = cg_error_set(CG_ERROR, CG_ERRCLASS_REPOSITORY,
                           "audit the cache: %d rows for %zu entries", PQntuples(r), n);
        goto done;
    }
    for (i = 0; i < n; i++) {
        int64_t at = get_i64(r, (int)i, 0) - 1; /* WITH ORDINALITY counts from 1 */
        if (at < 0 || (size_t)at >= n) {
            err = cg_error_set(CG_ERROR, CG_ERRCLASS_REPOSITORY,
                               "audit the cache: row %zu names entry %" PRId64, i, at + 1);
            goto done;
        }
        rows[at].repository = PQgetisnull(r, (int)i, 1) ? -1 : get_i64(r, (int)i, 1);
        if (PQgetisnull(r, (int)i, 2)) {
            rows[at].age_ms = -1;
        } else { /* a commit racing the statement's now() may come out a little negative */
            rows[at].age_ms = get_i64(r, (int)i, 2);
            if (rows[at].age_ms < 0)
                rows[at].age_ms = 0;
        }
    }
done:
    PQclear(r);
    for (k = 0; k < 3; k++)
        free(arrays[k]);
    return err;
}

void cg_outbox_rows_dispose(cg_outbox_rows *rows)
{
    free(rows->seq);
    free(rows->items);
    rows->seq = NULL;
    rows->items = NULL;
    rows->n = 0;
}

/* The rows of an outbox query (seq, h, p, v[, committed µs]) into *out; when committed_us is
 * not NULL the fifth column goes there (one per item). Clears r. */
static int outbox_rows(cg_outbox_rows *out, int64_t **committed_us, PGresult *r, const char *group)
{
    int i, n = PQntuples(r), err = 0;

    if (n > 0 &&
        ((out->seq = malloc((size_t)n * sizeof(*out->seq))) == NULL ||
         (out->items = malloc((size_t)n * sizeof(*out->items))) == NULL ||
         (committed_us && (*committed_us = malloc((size_t)n * sizeof(int64_t))) == NULL))) {
        err = cg_error_nomem();
        goto done;
    }
    for (i = 0; i < n; i++) {
        int k = cg_item_kind_parse(PQgetvalue(r, i, 2), CG_ITEM_COUNT);
        if (k < 0) {
            err = cg_error_set(CG_ERROR, CG_ERRCLASS_REPOSITORY,
                               "outbox row %s of group \"%s\" has an unknown part \"%s\"",
                               PQgetvalue(r, i, 0), group, PQgetvalue(r, i, 2));
            goto done;
        }
        out->seq[i] = get_i64(r, i, 0);
        out->items[i] = (cg_bus_item){get_i64(r, i, 1), (int)k, get_i64(r, i, 3)};
        if (committed_us)
            (*committed_us)[i] = get_i64(r, i, 4);
    }
    out->n = (size_t)n;
done:
    if (err < 0) {
        cg_outbox_rows_dispose(out);
        if (committed_us) {
            free(*committed_us);
            *committed_us = NULL;
        }
    }
    PQclear(r);
    return err;
}

int cg_repo_outbox_items(cg_outbox_rows *out, cg_conn *c, const char *group, int64_t after,
                         int64_t upto)
{
    char b_a[24], b_u[24];
    const char *vals[3] = {group, I64(b_a, after), I64(b_u, upto)};
    PGresult *r;

    out->seq = NULL;
    out->items = NULL;
    out->n = 0;
    if ((r = run_auto(c, ST_OUTBOX_ITEMS, 3, vals, PGRES_TUPLES_OK, "read the outbox")) == NULL)
        return cg_error_last()->code;
    return outbox_rows(out, NULL, r, group);
}

int cg_repo_outbox_of(cg_outbox_rows *out, int64_t **committed_us, cg_conn *c, const char *group,
                      const char *origin, int64_t incarnation, int64_t after)
{
    char b_inc[24], b_after[24];
    const char *vals[4] = {group, origin, I64(b_inc, incarnation), I64(b_after, after)};
    PGresult *r;

    out->seq = NULL;
    out->items = NULL;
    out->n = 0;
    *committed_us = NULL;
    if ((r = run_auto(c, ST_OUTBOX_OF, 4, vals, PGRES_TUPLES_OK, "read a member's outbox")) == NULL)
        return cg_error_last()->code;
    return outbox_rows(out, committed_us, r, group);
}

/* ---- resources ------------------------------------------------------------------------ */

int cg_repo_resource_create(int64_t *handle, cg_conn *c, const char *group, const char *kind,
                            const char *service_id, const char *const bodies[CG_PART_COUNT])
{
    const char *vals[6] = {group, kind, service_id, bodies[0], bodies[1], bodies[2]};
    PGresult *r = run(c, ST_RES_CREATE, 6, vals, PGRES_TUPLES_OK, "create a resource");
    if (r == NULL)
        return cg_error_last()->code;
    *handle = get_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

int cg_repo_resource_get(cg_resource *out, cg_conn *c, const char *group, int64_t handle)
{
    char b_h[24];
    const char *vals[2] = {group, I64(b_h, handle)};
    PGresult *r = run(c, ST_RES_GET, 2, vals, PGRES_TUPLES_OK, "read a resource");
    int err = 0;
    if (r == NULL)
        return cg_error_last()->code;
    if (PQntuples(r) == 0) {
        err = cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY,
                           "resource %" PRId64 " does not exist in group \"%s\"", handle, group);
    } else {
        out->handle = handle;
        snprintf(out->kind, sizeof(out->kind), "%s", PQgetvalue(r, 0, 0));
        snprintf(out->service_id, sizeof(out->service_id), "%s", PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return err;
}

int cg_repo_resource_delete(cg_bus_item **items, size_t *n_items, cg_conn *c, const char *group,
                            int64_t handle)
{
    char b_h[24], b_k[24];
    const char *vals[3] = {group, I64(b_h, handle), NULL};
    PGresult *r;
    int i, n, err = 0;

    *items = NULL;
    *n_items = 0;
    /* first lock the row, so that no bind to it commits after the delete's snapshot */
    if ((r = run(c, ST_RES_LOCK, 2, vals, PGRES_TUPLES_OK, "lock a resource")) == NULL)
        return cg_error_last()->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY,
                            "resource %" PRId64 " does not exist in group \"%s\"", handle, group);
    }
    if (!PQgetisnull(r, 0, 0))
        vals[2] = I64(b_k, cg_service_key(PQgetvalue(r, 0, 0)));
    PQclear(r);
    if ((r = run(c, ST_RES_DELETE, 3, vals, PGRES_TUPLES_OK, "delete a resource")) == NULL)
        return cg_error_last()->code;
    n = PQntuples(r);
    if (n == 0) {
        err = cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY,
                           "resource %" PRId64 " does not exist in group \"%s\"", handle, group);
        goto done;
    }
    if ((*items = malloc((size_t)n * sizeof(**items))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    for (i = 0; i < n; i++) {
        int k = cg_item_kind_parse(PQgetvalue(r, i, 0), CG_ITEM_COUNT);
        if (k < 0)
            continue; /* the "deleted" row: the resource existed */
        (*items)[(*n_items)++] = (cg_bus_item){get_i64(r, i, 1), k, get_i64(r, i, 2)};
    }
done:
    PQclear(r);
    return err;
}

int cg_repo_resource_find(cg_handle_list *out, int64_t *version, cg_conn *c, const char *group,
                          const char *service_id)
{
    char b_k[24];
    const char *vals[3] = {group, service_id, I64(b_k, cg_service_key(service_id))};
    PGresult *r = run(c, ST_RES_FIND, 3, vals, PGRES_TUPLES_OK, "find resources");
    int i, n, err = 0;

    out->handles = NULL;
    out->n = 0;
    if (r == NULL)
        return cg_error_last()->code;
    n = PQntuples(r); /* at least one row: the counter, with a NULL handle when none */
    if (version)
        *version = n > 0 ? get_i64(r, 0, 0) : 0;
    if (n == 1 && PQgetisnull(r, 0, 1))
        n = 0;
    if (n > 0 && (out->handles = malloc((size_t)n * sizeof(int64_t))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    for (i = 0; i < n; i++)
        out->handles[i] = get_i64(r, i, 1);
    out->n = (size_t)n;
done:
    PQclear(r);
    return err;
}

/* ---- parts ---------------------------------------------------------------------------- */

static int part_not_found(const char *group, int64_t handle)
{
    return cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY,
                        "resource %" PRId64 " does not exist in group \"%s\"", handle, group);
}

int cg_repo_part_get(cg_part **out, cg_conn *c, const char *group, int64_t handle, int kind,
                     int lock)
{
    char b_h[24];
    const char *vals[3] = {group, I64(b_h, handle), cg_part_kind_name(kind)};
    PGresult *r = run(c, lock ? ST_PART_LOCK : ST_PART_GET, 3, vals, PGRES_TUPLES_OK,
                      lock ? "lock a part" : "read a part");
    int err = 0;

    *out = NULL;
    if (r == NULL)
        return cg_error_last()->code;
    if (PQntuples(r) == 0)
        err = part_not_found(group, handle);
    else if ((*out = cg_part__new(handle, kind, get_i64(r, 0, 0), PQgetvalue(r, 0, 1),
                                  (size_t)PQgetlength(r, 0, 1))) == NULL)
        err = CG_ERROR;
    PQclear(r);
    return err;
}

int cg_repo_part_read_once(cg_part **out, cg_conn *c, const char *group, int64_t handle, int kind)
{
    char b_h[24];
    const char *vals[3] = {group, I64(b_h, handle), cg_part_kind_name(kind)};
    command cmds[3] = {{statements[ST_BEGIN].name, NULL, 0, NULL},
                       {statements[ST_PART_GET].name, NULL, 3, vals},
                       {statements[ST_COMMIT].name, NULL, 0, NULL}};
    PGresult *res[3];
    int i, err;

    *out = NULL;
    if (!cg_repo_usable(c))
        return cg_error_set(CG_ERETRYABLE, CG_ERRCLASS_REPOSITORY, "read a part: no connection");
    if ((err = pipeline(c, cmds, 3, res)) < 0)
        goto done;
    for (i = 0; i < 3; i++)
        if (PQresultStatus(res[i]) != (i == 1 ? PGRES_TUPLES_OK : PGRES_COMMAND_OK)) {
            err = cg_pg_error(c->pg, res[i], "read a part");
            cg_repo_rollback(c);
            goto done;
        }
    if (PQntuples(res[1]) == 0)
        err = part_not_found(group, handle);
    else if ((*out = cg_part__new(handle, kind, get_i64(res[1], 0, 0), PQgetvalue(res[1], 0, 1),
                                  (size_t)PQgetlength(res[1], 0, 1))) == NULL)
        err = CG_ERROR;
done:
    for (i = 0; i < 3; i++)
        PQclear(res[i]);
    return err;
}

int cg_repo_part_version(int64_t *version, cg_conn *c, const char *group, int64_t handle, int kind)
{
    char b_h[24];
    const char *vals[3] = {group, I64(b_h, handle), cg_part_kind_name(kind)};
    PGresult *r = run(c, ST_PART_VERSION, 3, vals, PGRES_TUPLES_OK, "check a part's version");
    int err = 0;
    if (r == NULL)
        return cg_error_last()->code;
    if (PQntuples(r) == 0)
        err = part_not_found(group, handle);
    else
        *version = get_i64(r, 0, 0);
    PQclear(r);
    return err;
}

int cg_repo_part_update(cg_part **out, cg_conn *c, const char *group, int64_t handle, int kind,
                        int64_t expected, const char *body)
{
    char b_h[24], b_v[24];
    const char *vals[5] = {group, I64(b_h, handle), cg_part_kind_name(kind), I64(b_v, expected),
                           body};
    PGresult *r = run(c, ST_PART_UPDATE, 5, vals, PGRES_TUPLES_OK, "update a part");
    int64_t actual = -1;
    int err;
    cg_error *e;

    *out = NULL;
    if (r == NULL)
        return cg_error_last()->code;
    if (PQntuples(r) == 1) {
        /* the body as the repository stores it, so every cache holds the same text */
        *out = cg_part__new(handle, kind, get_i64(r, 0, 0), PQgetvalue(r, 0, 1),
                            (size_t)PQgetlength(r, 0, 1));
        PQclear(r);
        return *out ? 0 : CG_ERROR;
    }
    PQclear(r);
    /* Zero rows: stale, or gone. Read what is there now, to name it. */
    if ((err = cg_repo_part_version(&actual, c, group, handle, kind)) < 0)
        return err;
    cg_error_set(CG_ESTALE, CG_ERRCLASS_REPOSITORY,
                 "stale update of resource %" PRId64 " part %s: expected version %" PRId64
                 ", the repository has %" PRId64,
                 handle, cg_part_kind_name(kind), expected, actual);
    e = cg_error__mut();
    e->handle = handle;
    e->part = kind;
    e->expected_version = expected;
    e->actual_version = actual;
    return CG_ESTALE;
}

/* ---- names ---------------------------------------------------------------------------- */

int cg_repo_name_bind(cg_conn *c, const char *group, int64_t folder, const char *name,
                      int64_t target)
{
    char b_f[24], b_t[24];
    const char *vals[4] = {group, I64(b_f, folder), name, I64(b_t, target)};
    PGresult *r = run(c, ST_NAME_BIND, 4, vals, PGRES_TUPLES_OK, "bind a name");
    int err = 0;
    if (r == NULL)
        return cg_error_last()->code;
    if (PQgetisnull(r, 0, 0))
        err = cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY,
                           "folder %" PRId64 " does not exist in group \"%s\"", folder, group);
    else if (strcmp(PQgetvalue(r, 0, 0), "folder") != 0)
        err =
            cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                         "resource %" PRId64 " is a %s, not a folder", folder, PQgetvalue(r, 0, 0));
    else if (strcmp(PQgetvalue(r, 0, 1), "t") != 0)
        err = cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY,
                           "target resource %" PRId64 " does not exist in group \"%s\"", target,
                           group);
    else if (strcmp(PQgetvalue(r, 0, 2), "t") != 0)
        err = cg_error_set(CG_EEXISTS, CG_ERRCLASS_REPOSITORY,
                           "name \"%s\" is already bound in folder %" PRId64, name, folder);
    PQclear(r);
    return err;
}

int cg_repo_name_unbind(cg_conn *c, const char *group, int64_t folder, const char *name)
{
    char b_f[24];
    const char *vals[3] = {group, I64(b_f, folder), name};
    PGresult *r = run(c, ST_NAME_UNBIND, 3, vals, PGRES_TUPLES_OK, "unbind a name");
    int err = 0;
    if (r == NULL)
        return cg_error_last()->code;
    if (PQntuples(r) == 0)
        err = cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY,
                           "name \"%s\" is not bound in folder %" PRId64, name, folder);
    PQclear(r);
    return err;
}

int cg_repo_name_lookup(int64_t *target, cg_conn *c, const char *group, int64_t folder,
                        const char *name)
{
    char b_f[24];
    const char *vals[3] = {group, I64(b_f, folder), name};
    PGresult *r = run(c, ST_NAME_LOOKUP, 3, vals, PGRES_TUPLES_OK, "look up a name");
    int err = 0;
    if (r == NULL)
        return cg_error_last()->code;
    if (PQntuples(r) == 0)
        err = cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY,
                           "name \"%s\" is not bound in folder %" PRId64, name, folder);
    else
        *target = get_i64(r, 0, 0);
    PQclear(r);
    return err;
}

int cg_repo_name_list(cg_name_list *out, int64_t *names_version, cg_conn *c, const char *group,
                      int64_t folder)
{
    char b_f[24];
    const char *vals[2] = {group, I64(b_f, folder)};
    PGresult *r = run(c, ST_NAME_LIST, 2, vals, PGRES_TUPLES_OK, "list a folder");
    int i, n, err = 0;

    out->entries = NULL;
    out->n = 0;
    if (r == NULL)
        return cg_error_last()->code;
    n = PQntuples(r);
    if (n == 0) {
        err = cg_error_set(CG_ENOTFOUND, CG_ERRCLASS_REPOSITORY,
                           "folder %" PRId64 " does not exist in group \"%s\"", folder, group);
        goto done;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "folder") != 0) {
        err =
            cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                         "resource %" PRId64 " is a %s, not a folder", folder, PQgetvalue(r, 0, 0));
        goto done;
    }
    if (names_version)
        *names_version = get_i64(r, 0, 3);
    if (PQgetisnull(r, 0, 1))
        goto done; /* an empty folder: one row with no binding */
    if ((out->entries = calloc((size_t)n, sizeof(*out->entries))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    for (i = 0; i < n; i++) {
        if ((out->entries[i].name = strdup(PQgetvalue(r, i, 1))) == NULL) {
            err = cg_error_nomem();
            cg_name_list_dispose(out);
            goto done;
        }
        out->entries[i].target = get_i64(r, i, 2);
        out->n = (size_t)i + 1;
    }
done:
    PQclear(r);
    return err;
}

/* ---- the end of a call ---------------------------------------------------------------- */

/* The outbox's item list as JSON: [{"h":12,"p":"state","v":7}, ...] (the bus's item shape).
 * An item is at most 76 bytes: two 20-digit numbers and the longest part name. */
#define ITEM_JSON_MAX 96
/* Invalidates nothing (every version is >= 1) but names an event to a reader of `items` only:
 * the `items` of a call that changed names and no part (migration 0006). */
#define OUTBOX_NOOP_ITEM "{\"h\":0,\"p\":\"specification\",\"v\":1}"
static char *items_json(const cg_bus_item *items, size_t n, int parts_only)
{
    size_t cap = 3 + n * ITEM_JSON_MAX, len = 0, i, k = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        return NULL;
    buf[len++] = '[';
    for (i = 0; i < n; i++) {
        int w;
        if (parts_only && items[i].kind >= CG_PART_COUNT)
            continue;
        w = snprintf(buf + len, cap - len, "%s{\"h\":%" PRId64 ",\"p\":\"%s\",\"v\":%" PRId64 "}",
                     k++ ? "," : "", items[i].handle, cg_item_kind_name(items[i].kind),
                     items[i].version);
        if (w < 0 || (size_t)w >= cap - len) { /* cannot happen within ITEM_JSON_MAX */
            free(buf);
            return NULL;
        }
        len += (size_t)w;
    }
    if (parts_only && k == 0) /* the no-op item: a reader of `items` finds this event */
        len += (size_t)snprintf(buf + len, cap - len, "%s", OUTBOX_NOOP_ITEM);
    buf[len++] = ']';
    buf[len] = '\0';
    return buf;
}

/* 1 when an item needs wire version 2 (a "names" or "find" item). */
static int needs_v2(const cg_bus_item *items, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (items[i].kind >= CG_PART_COUNT)
            return 1;
    return 0;
}

void cg_repo_rollback(cg_conn *c)
{
    if (c == NULL)
        return;
    if (cg_repo_usable(c) && drain(c) == 0 && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        PQclear(PQexec(c->pg, "ROLLBACK"));
    c->in_tx = c->wrote = 0;
}

/* Send COMMIT of a read-only transaction without waiting for its result (see repo.h). */
static int commit_deferred(cg_conn *c)
{
    if (PQenterPipelineMode(c->pg) != 1 ||
        PQsendQueryPrepared(c->pg, statements[ST_COMMIT].name, 0, NULL, NULL, NULL, 0) != 1 ||
        PQpipelineSync(c->pg) != 1) {
        int err = cg_pg_error(c->pg, NULL, "COMMIT");
        lost(c);
        return err == CG_ERETRYABLE ? err : CG_ERETRYABLE;
    }
    c->pending = 1;
    c->in_tx = c->wrote = 0;
    return 0;
}

int cg_repo_commit(int64_t *seq, int64_t *committed_us, cg_conn *c, const char *group,
                   const char *core, int64_t incarnation, const cg_bus_item *items, size_t n)
{
    char b_inc[24], *json = NULL, *json_v2 = NULL;
    const char *vals[5];
    command cmds[2];
    PGresult *res[2] = {NULL, NULL};
    int err = 0, ncmds = 0;

    *seq = 0;
    *committed_us = 0;
    if (!c->in_tx)
        return 0; /* nothing was sent: nothing to commit */
    if (n == 0 && !c->wrote)
        return commit_deferred(c);
    vals[0] = group;
    vals[1] = core;
    vals[2] = I64(b_inc, incarnation);
    if (n == 0) /* it wrote, but no part: still only a current incarnation may commit */
        cmds[ncmds++] = (command){statements[ST_FENCE_CHECK].name, NULL, 3, vals};
    if (n > 0) {
        if ((json = items_json(items, n, 1)) == NULL ||
            (needs_v2(items, n) && (json_v2 = items_json(items, n, 0)) == NULL)) {
            err = cg_error_nomem();
            goto fail;
        }
        vals[3] = json;
        vals[4] = json_v2; /* NULL: no item of wire version 2 */
        cmds[ncmds++] = (command){statements[ST_OUTBOX].name, NULL, 5, vals};
    }
    cmds[ncmds++] = (command){statements[ST_COMMIT].name, NULL, 0, NULL};
    if ((err = pipeline(c, cmds, ncmds, res)) < 0)
        goto fail;
    if (ncmds == 2 && PQresultStatus(res[0]) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res[0], PG_DIAG_SQLSTATE);
        err = cg_pg_error(c->pg, res[0], n > 0 ? "append to the outbox" : "check the fence");
        if (state && strcmp(state, "CGF01") == 0)
            err = cg_error_set_sqlstate(CG_EFENCED, state, "%s", cg_error_last()->message);
        goto fail;
    }
    if (PQresultStatus(res[ncmds - 1]) != PGRES_COMMAND_OK) {
        err = cg_pg_error(c->pg, res[ncmds - 1], "COMMIT");
        goto fail;
    }
    if (strcmp(PQcmdStatus(res[ncmds - 1]), "COMMIT") != 0) {
        /* the server answers COMMIT of a failed transaction with ROLLBACK */
        err = cg_error_set(CG_ERETRYABLE, CG_ERRCLASS_REPOSITORY,
                           "COMMIT: the transaction had failed and was rolled back");
        goto fail;
    }
    if (n > 0) {
        *seq = get_i64(res[0], 0, 0);
        *committed_us = get_i64(res[0], 0, 1);
    }
    c->in_tx = c->wrote = 0;
    goto done;
fail:
    cg_repo_rollback(c);
done:
    PQclear(res[0]);
    PQclear(res[1]);
    free(json);
    free(json_v2);
    return err;
}
