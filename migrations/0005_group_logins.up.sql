-- 0005_group_logins: the database, not the session, decides a core's group: by who logs in.
--
-- Until now row-level security compared group_id with the setting coregroup.group, which any
-- session may set_config: a fence against a statement that forgot its group filter, not
-- against a core that names another group on purpose. Now the DBA maps each login role to
-- one group (group_logins, written by the schema's owner only, through cg-migrate map-role
-- or cg_map_role()), and every policy compares group_id with the group of the login.
--
-- Which login: session_user, not current_user.
--  - session_user is the role that authenticated. Only a superuser session can change it
--    (SET SESSION AUTHORIZATION), so for a core it is fixed for the life of the connection.
--  - current_user changes with SET ROLE (to any role the login is a member of: at least
--    coregroup_app) and, inside a SECURITY DEFINER function, becomes the function's owner.
--    Keyed on current_user, a login that the DBA made a member of a second mapped role could
--    SET ROLE into that role's group, so a membership grant would silently become a group
--    grant; and inside the SECURITY DEFINER functions below the group would be the owner's
--    (none). Keyed on session_user, one login is one group whatever it SETs, and the
--    functions see their caller's group.
--  - The price: a superuser session that SETs ROLE to a core's login to look through its eyes
--    sees nothing (its session_user is mapped to no group). The DBA inspects as the owner.
-- A login mapped to no group (a member of coregroup_app the DBA has not mapped) sees no row
-- and may write none: the lookup yields NULL, and group_id = NULL is never true. Fail closed.
--
-- The lookup is an uncorrelated scalar subquery, (SELECT ...): the planner makes it an
-- InitPlan, evaluated once per statement (one primary-key probe of group_logins), and the
-- comparison stays an index condition on every table's (group_id, ...) key. The subquery runs
-- with the querying role's privileges and row-level security: coregroup_app may SELECT
-- group_logins, and its policy shows a login its own row only.
--
-- Who bypasses. Superusers and roles with BYPASSRLS always did. This migration also lets the
-- tables' owner (the DBA's role, which ran the migrations) bypass: FORCE ROW LEVEL SECURITY
-- (0002) is dropped. FORCE fenced only the owner, who can ALTER TABLE it away at will, so it
-- protected nothing; without it the DBA inspects every group with plain psql, and the
-- SECURITY DEFINER functions (which run as the owner) behave the same whether the owner is a
-- superuser or not: their explicit checks are the fence, and that is what the tests exercise.
-- Cores must therefore never log in as the owner, a superuser or a BYPASSRLS role; the
-- library refuses to start a core whose login is mapped to another group or to none, unless
-- the login is one of those privileged roles (which row-level security does not confine).
--
-- The functions. cg_session_login() says who the session's login is, its mapped group and
-- whether it is privileged (superuser, BYPASSRLS, or a member of the owner's role). The
-- SECURITY DEFINER functions of 0004 (cg_session_advertise, cg_end_fenced_sessions) and
-- cg_outbox_prune (SECURITY INVOKER, but it takes the group's pruning lock before any row
-- is touched) now compare their group argument with the caller's mapped group instead of
-- coregroup.group; a privileged caller may name any group (the DBA by hand, the tests).
-- cg_end_fenced_sessions also ends only backends whose own login is mapped to that group.
-- cg_outbox_append and cg_fence_check (SECURITY INVOKER) trust their arguments no further
-- than row-level security lets them: another group's membership row is invisible, so they
-- refuse as fenced (CGF01). coregroup.group stays the library's statement of intent: the
-- library checks at connect that it equals the login's mapped group.
--
-- group_logins has no foreign key to core_groups: a group's row is created by its first core,
-- after the DBA mapped its login; and a group's data may be deleted while its logins stay.
-- The mapping is by role name: a role dropped and created again under the same name gets the
-- old mapping back, so unmap a role (cg-migrate unmap-role) when you drop it.
--
-- Least privilege. The cores' role gets what the library does and nothing more: no UPDATE of
-- a row's group_id or key anywhere (column privileges), no DELETE where the library deletes
-- nothing (cascades from resources run as the tables' owner), no UPDATE of resources,
-- name_bindings or invalidations, no access to schema_migrations, EXECUTE on the functions it
-- calls only (not PUBLIC's), and nothing of the mapping but its own row. CREATE on the schema
-- public is revoked from PUBLIC (PostgreSQL 15 no longer grants it; clusters upgraded from
-- older releases still do). Cluster-wide roles are never dropped by a down migration.
--
-- Run by the DBA who owns the schema (the runner of 0001-0004): ALTER POLICY, ALTER TABLE and
-- CREATE OR REPLACE FUNCTION need the owner.

CREATE TABLE group_logins (
    role_name  name        PRIMARY KEY,
    group_id   text        NOT NULL CHECK (group_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    mapped_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX group_logins_group_idx ON group_logins (group_id);
COMMENT ON TABLE group_logins IS 'The one group of each login role, written by the DBA (cg-migrate map-role); row-level security of every table keys on the group of session_user here.';

ALTER TABLE group_logins ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_login ON group_logins FOR SELECT USING (role_name = session_user);
GRANT SELECT ON group_logins TO coregroup_app;

-- Who the session's login is: its name, its mapped group (NULL: not mapped), and whether
-- row-level security confines it at all (not for superusers, BYPASSRLS roles, or members of
-- the role that owns the tables). SECURITY DEFINER, so a login outside coregroup_app gets an
-- answer ("not mapped") rather than a permission error; it tells a caller only about itself.
CREATE FUNCTION cg_session_login(OUT login name, OUT group_id text, OUT privileged boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT r.rolname,
           (SELECT l.group_id FROM group_logins l WHERE l.role_name = r.rolname),
           r.rolsuper OR r.rolbypassrls OR pg_has_role(r.oid, c.relowner, 'MEMBER')
      FROM pg_roles r, pg_class c
     WHERE r.rolname = session_user AND c.oid = 'group_logins'::regclass
$$;

-- ---- every table's policy: the login's group -------------------------------------------
ALTER TABLE core_groups    NO FORCE ROW LEVEL SECURITY;
ALTER TABLE cores          NO FORCE ROW LEVEL SECURITY;
ALTER TABLE resources      NO FORCE ROW LEVEL SECURITY;
ALTER TABLE resource_parts NO FORCE ROW LEVEL SECURITY;
ALTER TABLE name_bindings  NO FORCE ROW LEVEL SECURITY;
ALTER TABLE invalidations  NO FORCE ROW LEVEL SECURITY;
ALTER TABLE core_sessions  NO FORCE ROW LEVEL SECURITY;

ALTER POLICY group_fence ON core_groups
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
ALTER POLICY group_fence ON cores
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
ALTER POLICY group_fence ON resources
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
ALTER POLICY group_fence ON resource_parts
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
ALTER POLICY group_fence ON name_bindings
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
ALTER POLICY group_fence ON invalidations
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
ALTER POLICY group_fence ON core_sessions
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));

-- ---- the cores' privileges: what the library does (schema/repo.c), nothing more ---------
REVOKE ALL ON core_groups, cores, resources, resource_parts, name_bindings, invalidations
    FROM coregroup_app;
GRANT SELECT, INSERT ON core_groups TO coregroup_app;          -- a group's first core creates it
GRANT UPDATE (event_seq) ON core_groups TO coregroup_app;      -- cg_outbox_append numbers events
GRANT SELECT, INSERT ON cores TO coregroup_app;                -- join; the rest is UPDATE:
GRANT UPDATE (incarnation, host, pid, started_at, heartbeat_at, applied_seq, state)
    ON cores TO coregroup_app;                                 -- rejoin, beat, suspect, fence, leave
GRANT SELECT, INSERT, DELETE ON resources TO coregroup_app;    -- never updated
GRANT SELECT, INSERT ON resource_parts TO coregroup_app;       -- deleted by cascade only
GRANT UPDATE (version, body) ON resource_parts TO coregroup_app;
GRANT SELECT, INSERT, DELETE ON name_bindings TO coregroup_app;
GRANT SELECT, INSERT, DELETE ON invalidations TO coregroup_app; -- append, catch up, prune
REVOKE ALL ON schema_migrations FROM coregroup_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

REVOKE ALL ON FUNCTION cg_outbox_append(text, text, bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_outbox_append(text, text, bigint, jsonb) TO coregroup_app;
REVOKE ALL ON FUNCTION cg_fence_check(text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_fence_check(text, text, bigint) TO coregroup_app;
REVOKE ALL ON FUNCTION cg_outbox_prune(text, double precision, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_outbox_prune(text, double precision, integer) TO coregroup_app;

-- ---- the functions check the caller's login, not coregroup.group ------------------------
CREATE OR REPLACE FUNCTION cg_session_advertise(p_group text, p_core text, p_incarnation bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    me record;
BEGIN
    SELECT * INTO me FROM cg_session_login();
    IF NOT me.privileged AND p_group IS DISTINCT FROM me.group_id THEN
        RAISE EXCEPTION 'login "%" (%) may not advertise for core "%" of group "%"', me.login,
            coalesce(format('group "%s"', me.group_id), 'not mapped to a group'), p_core, p_group
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM 1 FROM cores
     WHERE group_id = p_group AND core_name = p_core AND incarnation = p_incarnation
       AND state NOT IN ('failed', 'left')
       FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'core "%" incarnation % of group "%" is fenced', p_core, p_incarnation, p_group
            USING ERRCODE = 'CGF01';
    END IF;
    INSERT INTO core_sessions (group_id, core_name, incarnation, backend_pid, backend_start)
    SELECT p_group, p_core, p_incarnation, a.pid, a.backend_start
      FROM pg_stat_get_activity(pg_backend_pid()) a
    ON CONFLICT (backend_pid, backend_start) DO UPDATE
       SET group_id = EXCLUDED.group_id, core_name = EXCLUDED.core_name,
           incarnation = EXCLUDED.incarnation, advertised_at = now();
END
$$;

CREATE OR REPLACE FUNCTION cg_end_fenced_sessions(p_group text, p_core text, p_incarnation bigint)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    me        record;
    v_current bigint;
    v_ended   integer := 0;
    s         record;
BEGIN
    SELECT * INTO me FROM cg_session_login();
    IF NOT me.privileged AND p_group IS DISTINCT FROM me.group_id THEN
        RAISE EXCEPTION 'login "%" (%) may not end sessions of core "%" incarnation % of group "%"',
            me.login, coalesce(format('group "%s"', me.group_id), 'not mapped to a group'),
            p_core, p_incarnation, p_group
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT incarnation INTO v_current FROM cores WHERE group_id = p_group AND core_name = p_core;
    IF v_current IS NULL OR v_current <= p_incarnation THEN
        RAISE EXCEPTION 'may not end sessions of core "%" incarnation % of group "%": %', p_core,
            p_incarnation, p_group,
            CASE WHEN v_current IS NULL THEN 'no such member'
                 ELSE format('that incarnation is not fenced (the current one is %s)', v_current) END
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    FOR s IN
        SELECT cs.backend_pid, cs.backend_start
          FROM core_sessions cs
          JOIN pg_stat_activity a ON a.pid = cs.backend_pid AND a.backend_start = cs.backend_start
          JOIN pg_roles r ON r.oid = a.usesysid
          JOIN group_logins l ON l.role_name = r.rolname AND l.group_id = p_group
         WHERE cs.group_id = p_group AND cs.core_name = p_core AND cs.incarnation <= p_incarnation
           AND cs.backend_pid <> pg_backend_pid()
           AND a.datname = current_database()
           AND NOT r.rolsuper AND pg_has_role(r.oid, 'coregroup_app', 'MEMBER')
           FOR UPDATE OF cs
    LOOP
        -- signal, do not wait: the fencer's membership thread also beats its own heartbeat,
        -- and a backend that was signalled rolls back and lets its locks go as it exits
        IF pg_terminate_backend(s.backend_pid) THEN
            v_ended := v_ended + 1;
            DELETE FROM core_sessions
             WHERE backend_pid = s.backend_pid AND backend_start = s.backend_start;
        END IF;
    END LOOP;
    -- advertisements of the group whose backend is gone
    DELETE FROM core_sessions cs
     WHERE cs.group_id = p_group
       AND NOT EXISTS (SELECT FROM pg_stat_activity a
                        WHERE a.pid = cs.backend_pid AND a.backend_start = cs.backend_start);
    RETURN v_ended;
END
$$;

CREATE OR REPLACE FUNCTION cg_outbox_prune(p_group text, p_retention_s double precision, p_batch integer)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    me        record;
    v_deleted bigint;
BEGIN
    -- before the lock: another group's login must not hold up that group's pruning
    SELECT * INTO me FROM cg_session_login();
    IF NOT me.privileged AND p_group IS DISTINCT FROM me.group_id THEN
        RAISE EXCEPTION 'login "%" (%) may not prune the outbox of group "%"', me.login,
            coalesce(format('group "%s"', me.group_id), 'not mapped to a group'), p_group
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT pg_try_advisory_xact_lock(1667723378, hashtext(p_group)) THEN
        RETURN 0;
    END IF;
    DELETE FROM invalidations
     WHERE group_id = p_group
       AND seq IN (SELECT seq FROM invalidations
                    WHERE group_id = p_group
                      AND committed_at < now() - make_interval(secs => p_retention_s)
                    ORDER BY committed_at LIMIT p_batch);
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$$;

-- ---- the DBA's side: map a login to its group, and take the mapping away ---------------
-- cg_map_role(role, group) creates the role when it is missing (LOGIN, a member of
-- coregroup_app, no password: the DBA sets authentication, by pg_hba.conf or ALTER ROLE ...
-- PASSWORD), makes an existing one a member of coregroup_app, and maps it to the group
-- (moving it from another group). It refuses (SQLSTATE CGR01) a role name outside
-- [A-Za-z_][A-Za-z0-9_.-]{0,62} or reserved by PostgreSQL, or a group that is no valid group
-- id; and (CGR02) a role that row-level security does not confine (a superuser, BYPASSRLS,
-- the owner's role or a member of it, coregroup_app itself), since mapping it would fence
-- nothing. Idempotent, and safe to run twice at once. Returns what it did: "created",
-- "mapped", "moved from group X" or "unchanged". SECURITY INVOKER: the caller needs
-- CREATEROLE (or to be a superuser) and to own group_logins; nobody else may execute it.
CREATE FUNCTION cg_map_role(p_role name, p_group text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_role    record;
    v_old     text;
    v_created boolean := false;
BEGIN
    IF p_role IS NULL OR p_role !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,62}$' OR p_role ~ '^pg_'
       OR lower(p_role) IN ('public', 'none', 'current_user', 'current_role', 'session_user')
       OR p_role = 'coregroup_app' THEN
        RAISE EXCEPTION 'role "%" cannot be a group''s login: a role name is a letter or "_", then up to 62 letters, digits, "_", "." or "-", not starting with "pg_" and not reserved', p_role
            USING ERRCODE = 'CGR01';
    END IF;
    IF p_group IS NULL OR p_group !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' THEN
        RAISE EXCEPTION 'group "%" is not a valid group id (a letter or digit, then up to 62 letters, digits, ".", "_" or "-")', coalesce(p_group, '')
            USING ERRCODE = 'CGR01';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = p_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN IN ROLE coregroup_app', p_role);
            v_created := true;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created meanwhile by a concurrent run
        END;
    END IF;
    SELECT r.oid, r.rolsuper, r.rolbypassrls,
           pg_has_role(r.oid, c.relowner, 'MEMBER') AS owner_member
      INTO v_role
      FROM pg_roles r, pg_class c
     WHERE r.rolname = p_role AND c.oid = 'group_logins'::regclass;
    IF v_role.rolsuper OR v_role.rolbypassrls OR v_role.owner_member THEN
        RAISE EXCEPTION 'role "%" cannot be a group''s login: row-level security does not apply to it (%)', p_role,
            CASE WHEN v_role.rolsuper THEN 'a superuser'
                 WHEN v_role.rolbypassrls THEN 'it has BYPASSRLS'
                 ELSE 'it is, or is a member of, the role that owns the schema' END
            USING ERRCODE = 'CGR02';
    END IF;
    IF NOT pg_has_role(v_role.oid, 'coregroup_app', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT coregroup_app TO %I', p_role);
        EXCEPTION WHEN unique_violation THEN
            NULL; -- granted meanwhile by a concurrent run
        END;
    END IF;
    SELECT l.group_id INTO v_old FROM group_logins l WHERE l.role_name = p_role FOR UPDATE;
    INSERT INTO group_logins (role_name, group_id) VALUES (p_role, p_group)
    ON CONFLICT (role_name) DO UPDATE SET group_id = EXCLUDED.group_id, mapped_at = now()
     WHERE group_logins.group_id IS DISTINCT FROM EXCLUDED.group_id;
    RETURN CASE WHEN v_created THEN 'created'
                WHEN v_old IS NULL THEN 'mapped'
                WHEN v_old = p_group THEN 'unchanged'
                ELSE format('moved from group %s', v_old) END;
END
$$;
REVOKE ALL ON FUNCTION cg_map_role(name, text) FROM PUBLIC;

-- cg_unmap_role(role): the role's mapping goes (the role itself stays: it is cluster-wide and
-- the DBA's to drop); its sessions see nothing from their next statement on. Returns the group
-- it was mapped to, or NULL when it was not mapped. Owner only, like cg_map_role.
CREATE FUNCTION cg_unmap_role(p_role name) RETURNS text
LANGUAGE sql SET search_path = pg_catalog, public, pg_temp AS $$
    DELETE FROM group_logins WHERE role_name = p_role RETURNING group_id
$$;
REVOKE ALL ON FUNCTION cg_unmap_role(name) FROM PUBLIC;
