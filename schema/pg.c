/*
 * pg.c — connecting to the repository and classifying its errors.
 *
 * One place decides what a PostgreSQL failure means to a caller, so the call layer, the
 * migration runner and the programs agree: "retryable" is exactly the set a reconnect or a
 * re-run can cure (connection exceptions, operator intervention such as a restart or a
 * terminated session, serialization failures and deadlocks — e-Speak design §1.2.4.2 — and
 * the two fences against a member holding locks: lock_timeout's lock_not_available and the
 * end of a session idle in a transaction), "exists" is a unique violation, "invalid" is data
 * the server refused. The configured [retry] sqlstates extend
 * the retryable set at the call layer, not here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coregroup/sys/error.h"
#include "pg.h"

int cg_pg_sqlstate_in(const char *sqlstate, const char (*list)[6], size_t n)
{
    size_t i;
    if (sqlstate == NULL || strlen(sqlstate) != 5)
        return 0;
    for (i = 0; i < n; i++) {
        size_t len = strlen(list[i]);
        if (len > 0 && strncmp(sqlstate, list[i], len) == 0)
            return 1;
    }
    return 0;
}

int cg_pg_error(PGconn *conn, const PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    int code = CG_ERROR;

    if (primary == NULL) /* no server error: the connection itself failed */
        primary = conn ? PQerrorMessage(conn) : "no connection";
    if (conn && PQstatus(conn) == CONNECTION_BAD)
        code = CG_ERETRYABLE;
    else if (state == NULL)
        code = CG_ERETRYABLE; /* libpq lost the server mid-command */
    else if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0 ||
             strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
             strcmp(state, "55P03") == 0 || strcmp(state, "25P03") == 0)
        code = CG_ERETRYABLE;
    else if (strcmp(state, "23505") == 0)
        code = CG_EEXISTS;
    else if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)
        code = CG_EINVALID;

    return cg_error_set_sqlstate(code, state, "%s: %s%s%s%s [SQLSTATE %s]", what, primary,
                                 detail ? " (" : "", detail ? detail : "", detail ? ")" : "",
                                 state ? state : "none");
}

int cg_pg_exec(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    int err = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        err = cg_pg_error(conn, res, sql);
    PQclear(res);
    return err;
}

/* Library code never prints: the server's notices and warnings are not for our stderr. */
static void quiet_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

int cg_pg_connect(PGconn **out, const char *dsn, const char *application_name, int keepalive_idle_s)
{
    /* Settings we add unless the DSN says otherwise: keepalives, so a dead peer is noticed
     * within about idle + 3 * 5 seconds instead of the kernel's two hours; tcp_user_timeout
     * (idle seconds), so a statement sent into a partition fails then instead of waiting for
     * TCP's doubling retransmissions (after a 15 s cut the next one came 11 s after the heal);
     * connect_timeout, so a connection attempt into a partition gives up and is retried. */
    const char *keys[12], *vals[12];
    char idle[16], user_timeout[24];
    PQconninfoOption *given = NULL;
    char *parse_err = NULL;
    int n = 0, has_app = 0, has_ka = 0, has_uto = 0, has_cto = 0, err = 0;
    PGconn *conn;

    *out = NULL;
    if (dsn && *dsn) {
        PQconninfoOption *o;
        if ((given = PQconninfoParse(dsn, &parse_err)) == NULL) {
            err = cg_error_set(CG_EINVALID, CG_ERRCLASS_REPOSITORY, "invalid dsn: %s",
                               parse_err ? parse_err : "out of memory");
            PQfreemem(parse_err);
            return err;
        }
        for (o = given; o->keyword; o++) {
            if (o->val && strcmp(o->keyword, "application_name") == 0)
                has_app = 1;
            if (o->val && strncmp(o->keyword, "keepalives", 10) == 0)
                has_ka = 1;
            if (o->val && strcmp(o->keyword, "tcp_user_timeout") == 0)
                has_uto = 1;
            if (o->val && strcmp(o->keyword, "connect_timeout") == 0)
                has_cto = 1;
        }
        PQconninfoFree(given);
    }
    keys[n] = "dbname", vals[n++] = dsn && *dsn ? dsn : NULL;
    if (!has_app && application_name)
        keys[n] = "application_name", vals[n++] = application_name;
    if (!has_ka) {
        snprintf(idle, sizeof(idle), "%d", keepalive_idle_s > 0 ? keepalive_idle_s : 10);
        keys[n] = "keepalives", vals[n++] = "1";
        keys[n] = "keepalives_idle", vals[n++] = idle;
        keys[n] = "keepalives_interval", vals[n++] = "5";
        keys[n] = "keepalives_count", vals[n++] = "3";
    }
    if (!has_uto) {
        snprintf(user_timeout, sizeof(user_timeout), "%d",
                 (keepalive_idle_s > 0 ? keepalive_idle_s : 10) * 1000);
        keys[n] = "tcp_user_timeout", vals[n++] = user_timeout;
    }
    if (!has_cto)
        keys[n] = "connect_timeout", vals[n++] = "10";
    keys[n] = NULL, vals[n] = NULL;

    /* expand_dbname=1: the first "dbname" value may be a whole conninfo string or URI. */
    conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL)
        return cg_error_nomem();
    PQsetNoticeProcessor(conn, quiet_notices, NULL);
    if (PQstatus(conn) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(conn);
        /* Authentication and bad options will not cure themselves; everything else might. */
        int code = (strstr(msg, "authentication failed") || strstr(msg, "does not exist") ||
                    strstr(msg, "invalid") || strstr(msg, "password"))
                       ? CG_EINVALID
                       : CG_ERETRYABLE;
        err =
            cg_error_set(code, CG_ERRCLASS_REPOSITORY, "cannot connect to the repository: %s", msg);
        PQfinish(conn);
        return err;
    }
    *out = conn;
    return 0;
}
