-- schema.sql — the coregroup repository schema as it stands after every migration.
--
-- This file is for reading: the DBA's one-page view of the model. It is not applied by
-- anything in production; cg-migrate applies migrations/ in order. The test suite proves
-- that applying all migrations yields exactly this schema (pg_dump of both compared).
-- When you add a migration, fold its effect in here.
--
-- The model (DESIGN.md): every table carries group_id and every key starts with it.
--   core_groups     one row per group; event_seq numbers the group's invalidations
--   cores           membership; incarnation is the fencing token
--   resources       registered resources; handle 0 is each group's root folder
--   resource_parts  specification, description, state: each its own body and version
--   name_bindings   names in folders; never across groups
--   invalidations   the transactional outbox, numbered by core_groups.event_seq
--   core_sessions   which core and incarnation each core's repository session serves (0004)
--   group_logins    the one group of each login role, written by the DBA (0005)
--   schema_migrations  what cg-migrate applied, with checksums
-- Row-level security on every table keeps a session to the group its login (session_user) is
-- mapped to in group_logins (0002, keyed on the login by 0005); superusers, BYPASSRLS roles
-- and the tables' owner (the DBA) are not confined. The cores' role coregroup_app holds only
-- what the library does. A fenced incarnation's sessions are ended by the survivor through
-- cg_end_fenced_sessions (0004).

CREATE TABLE schema_migrations (
    version     integer     PRIMARY KEY CHECK (version > 0),
    name        text        NOT NULL,
    checksum    text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'Applied migrations, written by cg-migrate; checksum is the sha256 of the up file.';

CREATE TABLE core_groups (
    group_id    text        PRIMARY KEY
                CHECK (group_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    event_seq   bigint      NOT NULL DEFAULT 0 CHECK (event_seq >= 0)
) WITH (fillfactor = 10);  -- 0007: the counter row's page is pruned after a few updates
COMMENT ON TABLE core_groups IS 'One row per core group; event_seq is the gap-free, commit-ordered number of the group''s last invalidation.';

CREATE TABLE cores (
    group_id     text        NOT NULL REFERENCES core_groups ON DELETE CASCADE,
    core_name    text        NOT NULL CHECK (core_name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    incarnation  bigint      NOT NULL DEFAULT 1 CHECK (incarnation >= 1),
    host         text        NOT NULL DEFAULT '',
    pid          integer     NOT NULL DEFAULT 0 CHECK (pid >= 0),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    applied_seq  bigint      NOT NULL DEFAULT 0 CHECK (applied_seq >= 0),
    state        text        NOT NULL DEFAULT 'joining'
                 CHECK (state IN ('joining', 'alive', 'suspect', 'failed', 'left')),
    -- 0006: the incarnation at which the member said it reads bus wire version 2
    wire2_incarnation bigint,
    PRIMARY KEY (group_id, core_name)
);
COMMENT ON TABLE cores IS 'Group membership; incarnation is the fencing token: writes from an older incarnation are refused.';
COMMENT ON COLUMN cores.wire2_incarnation IS 'The incarnation at which the member said it reads bus wire version 2; another value: it reads version 1 only.';

CREATE SEQUENCE resource_handle_seq AS bigint MINVALUE 1;

CREATE TABLE resources (
    group_id      text        NOT NULL REFERENCES core_groups ON DELETE CASCADE,
    handle        bigint      NOT NULL DEFAULT nextval('resource_handle_seq') CHECK (handle >= 0),
    kind          text        NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_-]{0,31}$'),
    service_id    text        CHECK (service_id <> '' AND length(service_id) <= 255),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- a folder's names version (0006): the event number of the last call that changed its
    -- listing (set by cg_outbox_append); the version of a core's cached listing
    names_version bigint      NOT NULL DEFAULT 0 CHECK (names_version >= 0),
    PRIMARY KEY (group_id, handle),
    UNIQUE (group_id, handle, kind),
    CHECK (handle <> 0 OR kind = 'folder')
);
ALTER SEQUENCE resource_handle_seq OWNED BY resources.handle;
CREATE INDEX resources_service_idx ON resources (group_id, service_id) WHERE service_id IS NOT NULL;
COMMENT ON TABLE resources IS 'Registered resources of a group; handle 0 is the group''s root folder.';
COMMENT ON COLUMN resources.names_version IS 'A folder''s names version: the event number of the last bind, unbind or unregister that changed its listing (0: none); the version of the cached listing.';

CREATE TABLE resource_parts (
    group_id   text   NOT NULL,
    handle     bigint NOT NULL,
    part       text   NOT NULL CHECK (part IN ('specification', 'description', 'state')),
    version    bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    body       jsonb  NOT NULL DEFAULT '{}',
    PRIMARY KEY (group_id, handle, part),
    FOREIGN KEY (group_id, handle) REFERENCES resources (group_id, handle) ON DELETE CASCADE
);
COMMENT ON TABLE resource_parts IS 'The three metadata parts of a resource, each with its own version (e-Speak design 2.7.3); updates are conditional on the version.';

CREATE TABLE name_bindings (
    group_id      text        NOT NULL,
    folder_handle bigint      NOT NULL,
    folder_kind   text        NOT NULL GENERATED ALWAYS AS ('folder') STORED,
    name          text        NOT NULL CHECK (name ~ '^[^/[:cntrl:]]{1,255}$'),
    target_handle bigint      NOT NULL,
    version       bigint      NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, folder_handle, name),
    -- the folder must be a folder of the same group; the target a resource of the same group
    FOREIGN KEY (group_id, folder_handle, folder_kind)
        REFERENCES resources (group_id, handle, kind) ON DELETE CASCADE,
    FOREIGN KEY (group_id, target_handle) REFERENCES resources (group_id, handle) ON DELETE CASCADE
);
CREATE INDEX name_bindings_target_idx ON name_bindings (group_id, target_handle);
COMMENT ON TABLE name_bindings IS 'Names in folders (name frames); a binding never crosses groups.';

CREATE TABLE invalidations (
    group_id           text        NOT NULL REFERENCES core_groups ON DELETE CASCADE,
    seq                bigint      NOT NULL CHECK (seq >= 1),
    origin_core        text        NOT NULL,
    origin_incarnation bigint      NOT NULL CHECK (origin_incarnation >= 1),
    items              jsonb       NOT NULL CHECK (jsonb_typeof(items) = 'array'),
    committed_at       timestamptz NOT NULL DEFAULT now(),
    -- 0006: the whole item list when it has a names or find item (wire version 2)
    items_v2           jsonb       CHECK (items_v2 IS NULL OR jsonb_typeof(items_v2) = 'array'),
    PRIMARY KEY (group_id, seq)
);
CREATE INDEX invalidations_group_committed_idx ON invalidations (group_id, committed_at);
COMMENT ON COLUMN invalidations.items_v2 IS 'The whole item list when it has a names or find item (wire version 2); items then holds the part items only (or a no-op item).';
COMMENT ON TABLE invalidations IS 'Transactional outbox: one row per committed call that changed something, numbered by core_groups.event_seq; pruned by retention.';

-- Per service key (0006): cg_service_key() is a 53-bit hash of a service id, computed by the
-- library; the event number of the last register or unregister of a resource with a service
-- id of that key (set by cg_outbox_append). The version of a core's cached find result.
-- Never deleted.
CREATE TABLE service_versions (
    group_id    text   NOT NULL REFERENCES core_groups ON DELETE CASCADE,
    service_key bigint NOT NULL CHECK (service_key >= 0 AND service_key <= 9007199254740991),
    version     bigint NOT NULL CHECK (version >= 1),
    PRIMARY KEY (group_id, service_key)
);
COMMENT ON TABLE service_versions IS 'Per service key (53-bit hash of a service id): the event number of the last register or unregister with such a service id; the version of the cached find result; never deleted.';

-- Every group has its root folder from the moment it exists.
CREATE FUNCTION core_groups_make_root() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO resources (group_id, handle, kind) VALUES (NEW.group_id, 0, 'folder');
    RETURN NEW;
END
$$;
CREATE TRIGGER core_groups_root AFTER INSERT ON core_groups
    FOR EACH ROW EXECUTE FUNCTION core_groups_make_root();

-- ---- 0005_group_logins: the map of login roles to groups (first: every policy reads it) ----
-- Written only by the schema's owner (cg-migrate map-role, cg_map_role()); a login sees its
-- own row. No foreign key to core_groups: a login is mapped before its group's first core
-- creates the group. By role name: unmap a role when you drop it.
CREATE TABLE group_logins (
    role_name  name        PRIMARY KEY,
    group_id   text        NOT NULL CHECK (group_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    mapped_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX group_logins_group_idx ON group_logins (group_id);
COMMENT ON TABLE group_logins IS 'The one group of each login role, written by the DBA (cg-migrate map-role); row-level security of every table keys on the group of session_user here.';

-- ---- 0002_group_fence: row-level security and the fenced outbox append ----
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'coregroup_app') THEN
        CREATE ROLE coregroup_app NOLOGIN;
    END IF;
END
$$;

ALTER TABLE group_logins ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_login ON group_logins FOR SELECT USING (role_name = session_user);
GRANT SELECT ON group_logins TO coregroup_app;

-- The cores' privileges (0005): what the library does (schema/repo.c), nothing more. No
-- UPDATE of a group_id or key; deletes of parts and bindings happen by cascade, as the owner.
GRANT SELECT, INSERT ON core_groups TO coregroup_app;
GRANT UPDATE (event_seq) ON core_groups TO coregroup_app;
GRANT SELECT, INSERT ON cores TO coregroup_app;
GRANT UPDATE (incarnation, host, pid, started_at, heartbeat_at, applied_seq, state)
    ON cores TO coregroup_app;
GRANT SELECT, INSERT, DELETE ON resources TO coregroup_app;
GRANT SELECT, INSERT ON resource_parts TO coregroup_app;
GRANT UPDATE (version, body) ON resource_parts TO coregroup_app;
GRANT SELECT, INSERT, DELETE ON name_bindings TO coregroup_app;
GRANT SELECT, INSERT, DELETE ON invalidations TO coregroup_app;
GRANT USAGE ON SEQUENCE resource_handle_seq TO coregroup_app;
GRANT UPDATE (names_version) ON resources TO coregroup_app;      -- 0006
GRANT UPDATE (wire2_incarnation) ON cores TO coregroup_app;      -- 0006
GRANT SELECT, INSERT ON service_versions TO coregroup_app;      -- 0006
GRANT UPDATE (version) ON service_versions TO coregroup_app;    -- 0006
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Not FORCE ROW LEVEL SECURITY (0005): the owner is not confined, as superusers are not.
ALTER TABLE core_groups    ENABLE ROW LEVEL SECURITY;
ALTER TABLE cores          ENABLE ROW LEVEL SECURITY;
ALTER TABLE resources      ENABLE ROW LEVEL SECURITY;
ALTER TABLE resource_parts ENABLE ROW LEVEL SECURITY;
ALTER TABLE name_bindings  ENABLE ROW LEVEL SECURITY;
ALTER TABLE invalidations  ENABLE ROW LEVEL SECURITY;
ALTER TABLE service_versions ENABLE ROW LEVEL SECURITY;

-- A row is visible and writable when its group is the login's (an InitPlan: once per
-- statement). An unmapped login gets NULL and sees and writes nothing.
CREATE POLICY group_fence ON core_groups
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
CREATE POLICY group_fence ON cores
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
CREATE POLICY group_fence ON resources
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
CREATE POLICY group_fence ON resource_parts
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
CREATE POLICY group_fence ON name_bindings
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
CREATE POLICY group_fence ON invalidations
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));
CREATE POLICY group_fence ON service_versions
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));

-- Who the session's login is: its name, its mapped group (NULL: not mapped), and whether
-- row-level security confines it at all (0005).
CREATE FUNCTION cg_session_login(OUT login name, OUT group_id text, OUT privileged boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT r.rolname,
           (SELECT l.group_id FROM group_logins l WHERE l.role_name = r.rolname),
           r.rolsuper OR r.rolbypassrls OR pg_has_role(r.oid, c.relowner, 'MEMBER')
      FROM pg_roles r, pg_class c
     WHERE r.rolname = session_user AND c.oid = 'group_logins'::regclass
$$;

-- The last statement of every call that changed something: check that the calling core's
-- incarnation is still current (FOR SHARE, so a concurrent fencing update waits for this
-- transaction or this one sees its result), take the group's next event number (the row lock
-- on core_groups is held only from here to COMMIT, so numbers are gap-free and in commit
-- order), and write the outbox row. A fenced core gets SQLSTATE CGF01 and its transaction
-- is aborted: nothing it did is committed.
CREATE FUNCTION cg_outbox_append(p_group text, p_core text, p_incarnation bigint, p_items jsonb,
                                 p_items_v2 jsonb DEFAULT NULL,
                                 OUT seq bigint, OUT committed_us bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM cores
     WHERE group_id = p_group AND core_name = p_core AND incarnation = p_incarnation
       AND state NOT IN ('failed', 'left')
       FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'core "%" incarnation % of group "%" is fenced', p_core, p_incarnation, p_group
            USING ERRCODE = 'CGF01';
    END IF;
    UPDATE core_groups SET event_seq = event_seq + 1 WHERE group_id = p_group
        RETURNING event_seq INTO seq;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'group "%" does not exist', p_group USING ERRCODE = 'CGF02';
    END IF;
    committed_us := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    IF p_items_v2 IS NOT NULL THEN
        -- names and find items take the event's number as their version: it is taken under
        -- the group's row lock, so it follows commit order without holding a folder's row
        -- for the rest of the call
        p_items_v2 := (SELECT jsonb_agg(CASE WHEN e.x ->> 'p' IN ('names', 'find')
                                             THEN jsonb_set(e.x, '{v}', to_jsonb(seq))
                                             ELSE e.x END ORDER BY e.n)
                         FROM jsonb_array_elements(p_items_v2) WITH ORDINALITY AS e (x, n));
        -- = ANY (ARRAY(...)): each folder by its key; IN (SELECT ...) had the planner scan
        -- every resource of the group while the group's counter row was held
        UPDATE resources SET names_version = seq
         WHERE group_id = p_group
           AND handle = ANY (ARRAY(SELECT (e.x ->> 'h')::bigint
                                     FROM jsonb_array_elements(p_items_v2) AS e (x)
                                    WHERE e.x ->> 'p' = 'names'));
        INSERT INTO service_versions (group_id, service_key, version)
        SELECT p_group, (e.x ->> 'h')::bigint, seq FROM jsonb_array_elements(p_items_v2) AS e (x)
         WHERE e.x ->> 'p' = 'find'
        ON CONFLICT (group_id, service_key) DO UPDATE SET version = EXCLUDED.version;
    END IF;
    INSERT INTO invalidations (group_id, seq, origin_core, origin_incarnation, items, items_v2,
                               committed_at)
    VALUES (p_group, seq, p_core, p_incarnation, p_items, p_items_v2,
            to_timestamp(committed_us / 1000000.0));
END
$$;
REVOKE ALL ON FUNCTION cg_outbox_append(text, text, bigint, jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_outbox_append(text, text, bigint, jsonb, jsonb) TO coregroup_app;

-- ---- 0003_fence_check: writing calls that change no part are fenced too ----
CREATE FUNCTION cg_fence_check(p_group text, p_core text, p_incarnation bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM cores
     WHERE group_id = p_group AND core_name = p_core AND incarnation = p_incarnation
       AND state NOT IN ('failed', 'left')
       FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'core "%" incarnation % of group "%" is fenced', p_core, p_incarnation, p_group
            USING ERRCODE = 'CGF01';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION cg_fence_check(text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_fence_check(text, text, bigint) TO coregroup_app;

-- ---- 0004_session_fence: fencing ends the fenced incarnation's sessions; batched pruning ----
-- (the outbox's index on (group_id, committed_at) is with its table above)
-- The runner must be able to see and end other roles' sessions.
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT (pg_has_role(current_user, 'pg_signal_backend', 'USAGE')
                AND pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')) THEN
        RAISE EXCEPTION 'migration 0004 must be run by a superuser or a member of pg_signal_backend and pg_read_all_stats (role "%" is neither)', current_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- One row per backend (pid and start time identify a backend for its whole life; a pid alone
-- is reused), so the key is not led by group_id: a backend serves one core of one group.
CREATE TABLE core_sessions (
    group_id      text        NOT NULL,
    core_name     text        NOT NULL,
    incarnation   bigint      NOT NULL CHECK (incarnation >= 1),
    backend_pid   integer     NOT NULL CHECK (backend_pid > 0),
    backend_start timestamptz NOT NULL,
    advertised_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (backend_pid, backend_start),
    FOREIGN KEY (group_id, core_name) REFERENCES cores ON DELETE CASCADE
);
CREATE INDEX core_sessions_core_idx ON core_sessions (group_id, core_name, incarnation);
COMMENT ON TABLE core_sessions IS 'Repository sessions of cores, each advertised by the session itself (cg_session_advertise); cg_end_fenced_sessions ends those of a fenced incarnation.';

GRANT SELECT ON core_sessions TO coregroup_app;
ALTER TABLE core_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY group_fence ON core_sessions
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));

-- A core's session says which core and incarnation it serves. FOR SHARE on the membership row
-- orders this with a concurrent fencing update: either the fence waits for this advertisement
-- (and the fencer's later cg_end_fenced_sessions sees it), or this call sees the new
-- incarnation and is refused. A login names only its own mapped group (0005; a privileged
-- login, superuser or owner, any group); cg_end_fenced_sessions likewise, and it ends only
-- backends whose login is mapped to that group.
CREATE FUNCTION cg_session_advertise(p_group text, p_core text, p_incarnation bigint)
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
REVOKE ALL ON FUNCTION cg_session_advertise(text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_session_advertise(text, text, bigint) TO coregroup_app;

-- The survivor that fenced a member ends the fenced incarnation's sessions, so their row
-- locks go now rather than at lock_timeout or idle_in_transaction_session_timeout. Waits up
-- to a second per session for it to be gone (its locks released) and counts those that went;
-- a session still there keeps its row, so a later call tries again. Returns how many ended.
CREATE FUNCTION cg_end_fenced_sessions(p_group text, p_core text, p_incarnation bigint)
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
REVOKE ALL ON FUNCTION cg_end_fenced_sessions(text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_end_fenced_sessions(text, text, bigint) TO coregroup_app;

-- Outbox pruning by one member at a time, in batches: a transaction-scoped advisory lock per
-- group (the two-key space, class 'cgpr' = 1667723378, so it never meets cg-migrate's
-- one-key lock; two groups whose names hash alike merely take turns), then at most p_batch
-- of the oldest rows. Run as one autocommit statement, the lock and the row locks last only
-- as long as that batch. Returns how many rows it deleted (0 when another member holds the
-- lock). SECURITY INVOKER: row-level security applies as to any statement of the core; and a
-- login may name only its own group (0005), so it cannot hold another group's lock.
CREATE FUNCTION cg_outbox_prune(p_group text, p_retention_s double precision, p_batch integer)
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
REVOKE ALL ON FUNCTION cg_outbox_prune(text, double precision, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_outbox_prune(text, double precision, integer) TO coregroup_app;

-- ---- 0005_group_logins: the DBA maps a login role to its group ----
-- cg_map_role creates the role when missing (LOGIN, member of coregroup_app, no password) and
-- maps it; it refuses bad names (CGR01) and roles that row-level security does not confine
-- (CGR02). cg_unmap_role takes a mapping away. Owner only; cg-migrate map-role, unmap-role.
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

CREATE FUNCTION cg_unmap_role(p_role name) RETURNS text
LANGUAGE sql SET search_path = pg_catalog, public, pg_temp AS $$
    DELETE FROM group_logins WHERE role_name = p_role RETURNING group_id
$$;
REVOKE ALL ON FUNCTION cg_unmap_role(name) FROM PUBLIC;
