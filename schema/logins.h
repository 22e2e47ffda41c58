/*
 * logins.h — the DBA's map of login roles to core groups (group_logins, migration 0005), for
 * cg-migrate and the test harness (private to the library and its tools).
 *
 * Row-level security confines a session to the group its login (session_user) is mapped to;
 * these functions are the DBA's way to write that map. They run on a connection of the
 * schema's owner (a superuser, or the DBA's role with CREATEROLE); a core's login may call
 * none of them.
 */
#ifndef CG_LOGINS_H
#define CG_LOGINS_H

#include <stddef.h>

#include <libpq-fe.h>

/* SQLSTATEs of the schema's map functions: a bad role or group name, and a role that
 * row-level security does not confine (superuser, BYPASSRLS, the owner's role). */
#define CG_LOGINS_BAD_NAME   "CGR01"
#define CG_LOGINS_UNSUITABLE "CGR02"

/* One row of the map, with what the cluster says about the role. */
typedef struct {
    char role[64];
    char group[64];
    char mapped_at[40];
    int exists;    /* the role exists in the cluster (a dropped role's row stays until unmapped) */
    int can_login; /* it has LOGIN */
    int member;    /* it is a member of coregroup_app */
} cg_login;

typedef struct {
    cg_login *items; /* by group, then role */
    size_t n;
} cg_login_list;

/*
 * 1 when `role` is a name cg_map_role() accepts: a letter or "_", then up to 62 letters,
 * digits, "_", "." or "-"; not starting with "pg_"; not a name PostgreSQL reserves (public,
 * none, current_user, current_role, session_user), nor coregroup_app. Pure: no database.
 */
int cg_logins_role_valid(const char *role);

/*
 * Map `role` to `group`: create the role when missing (LOGIN, member of coregroup_app, no
 * password), make an existing role a member of coregroup_app, insert or move its mapping. One
 * statement (the schema's cg_map_role), idempotent. On success *did is what was done
 * ("created", "mapped", "moved from group X", "unchanged"), a new string the caller frees.
 * Errors: CG_EINVALID with SQLSTATE CG_LOGINS_BAD_NAME or CG_LOGINS_UNSUITABLE and the
 * server's message naming the role or group; CG_ENOTFOUND when the schema has no map (not
 * migrated to 0005); other repository errors as cg_pg_error() classifies them.
 */
int cg_logins_map(char **did, PGconn *conn, const char *role, const char *group);

/*
 * Remove `role`'s mapping (the role itself stays). *old_group is the group it was mapped to, a
 * new string the caller frees, or NULL when it was not mapped (not an error). Errors as
 * cg_logins_map().
 */
int cg_logins_unmap(char **old_group, PGconn *conn, const char *role);

/* Every mapping; *out is freed with cg_login_list_dispose(). Errors as cg_logins_map(). */
int cg_logins_list(cg_login_list *out, PGconn *conn);

/* Free the rows of a list (accepts an empty or disposed list). */
void cg_login_list_dispose(cg_login_list *list);

#endif
