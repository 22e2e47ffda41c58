/*
 * logins.c — the DBA's map of login roles to groups (see logins.h and migration 0005).
 *
 * The map is the fence of group isolation: every row-level security policy compares a row's
 * group with the group of the session's login. So the writing lives in the schema itself, in
 * the owner-only functions cg_map_role() and cg_unmap_role(), and this file only calls them
 * with parameters: the role name is quoted by the server (format('%I')), never here, and a
 * DBA at psql gets exactly what cg-migrate does. The name rules are checked here as well, so
 * that a bad name is refused before any connection, with the same words as the server's.
 *
 * Not here: authentication. A role created here has no password; the DBA decides how it logs
 * in (pg_hba.conf, ALTER ROLE ... PASSWORD, certificates).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coregroup/sys/error.h"
#include "logins.h"
#include "pg.h"

int cg_logins_role_valid(const char *role)
{
    /* reserved by PostgreSQL (refused here in any letter case, as cg_map_role does) */
    static const char *const reserved[] = {"public", "none", "current_user", "current_role",
                                           "session_user"};
    char lower[64];
    size_t i, n;

    if (role == NULL || !(isalpha((unsigned char)role[0]) || role[0] == '_'))
        return 0;
    for (n = 0; role[n]; n++) {
        unsigned char c = (unsigned char)role[n];
        if (!(isalnum(c) || c == '_' || c == '.' || c == '-') || n >= sizeof(lower) - 1)
            return 0;
        lower[n] = (char)tolower(c);
    }
    lower[n] = '\0';
    if (strncmp(role, "pg_", 3) == 0 || strcmp(role, "coregroup_app") == 0)
        return 0;
    for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strcmp(lower, reserved[i]) == 0)
            return 0;
    return 1;
}

/* The error of a failed map statement: the map's own refusals are bad input, a schema
 * without the map is "not found" with the remedy, the rest as cg_pg_error() says. */
static int map_error(PGconn *conn, const PGresult *r, const char *what)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

    if (state && primary &&
        (strcmp(state, CG_LOGINS_BAD_NAME) == 0 || strcmp(state, CG_LOGINS_UNSUITABLE) == 0))
        return cg_error_set_sqlstate(CG_EINVALID, state, "%s: %s", what, primary);
    if (state && (strcmp(state, "42883") == 0 || strcmp(state, "42P01") == 0))
        return cg_error_set_sqlstate(CG_ENOTFOUND, state,
                                     "%s: the repository has no map of logins to groups (%s): "
                                     "migrate it to 0005 first (cg-migrate up)",
                                     what, primary ? primary : "missing");
    return cg_pg_error(conn, r, what);
}

int cg_logins_map(char **did, PGconn *conn, const char *role, const char *group)
{
    const char *vals[2] = {role, group};
    char what[192];
    PGresult *r;
    int err = 0;

    *did = NULL;
    snprintf(what, sizeof(what), "map role \"%s\" to group \"%s\"", role, group);
    r = PQexecParams(conn, "SELECT cg_map_role($1, $2)", 2, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        err = map_error(conn, r, what);
    else if ((*did = strdup(PQgetvalue(r, 0, 0))) == NULL)
        err = cg_error_nomem();
    PQclear(r);
    return err;
}

int cg_logins_unmap(char **old_group, PGconn *conn, const char *role)
{
    const char *vals[1] = {role};
    char what[128];
    PGresult *r;
    int err = 0;

    *old_group = NULL;
    snprintf(what, sizeof(what), "unmap role \"%s\"", role);
    r = PQexecParams(conn, "SELECT cg_unmap_role($1)", 1, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        err = map_error(conn, r, what);
    else if (!PQgetisnull(r, 0, 0) && (*old_group = strdup(PQgetvalue(r, 0, 0))) == NULL)
        err = cg_error_nomem();
    PQclear(r);
    return err;
}

int cg_logins_list(cg_login_list *out, PGconn *conn)
{
    PGresult *r;
    int i, n, err = 0;

    out->items = NULL;
    out->n = 0;
    r = PQexec(conn, "SELECT l.role_name, l.group_id, "
                     "       to_char(l.mapped_at, 'YYYY-MM-DD HH24:MI:SS TZ'), r.oid IS NOT NULL, "
                     "       coalesce(r.rolcanlogin, false), "
                     "       coalesce(pg_has_role(r.oid, 'coregroup_app', 'MEMBER'), false) "
                     "FROM group_logins l LEFT JOIN pg_roles r ON r.rolname = l.role_name "
                     "ORDER BY l.group_id, l.role_name");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        err = map_error(conn, r, "list the logins of groups");
        goto done;
    }
    n = PQntuples(r);
    if (n > 0 && (out->items = calloc((size_t)n, sizeof(*out->items))) == NULL) {
        err = cg_error_nomem();
        goto done;
    }
    for (i = 0; i < n; i++) {
        cg_login *l = &out->items[i];
        snprintf(l->role, sizeof(l->role), "%s", PQgetvalue(r, i, 0));
        snprintf(l->group, sizeof(l->group), "%s", PQgetvalue(r, i, 1));
        snprintf(l->mapped_at, sizeof(l->mapped_at), "%s", PQgetvalue(r, i, 2));
        l->exists = PQgetvalue(r, i, 3)[0] == 't';
        l->can_login = PQgetvalue(r, i, 4)[0] == 't';
        l->member = PQgetvalue(r, i, 5)[0] == 't';
    }
    out->n = (size_t)n;
done:
    PQclear(r);
    return err;
}

void cg_login_list_dispose(cg_login_list *list)
{
    if (list == NULL)
        return;
    free(list->items);
    list->items = NULL;
    list->n = 0;
}
