-- 0005_group_logins, the way back: row-level security keys on coregroup.group again (so any
-- session can name any group: downgrade only to run an older library), the tables are forced
-- under it for their owner again, the cores' privileges are those of 0002 and 0004, and the
-- functions are 0004's. The mapping goes with its table; the login roles stay (they are
-- cluster-wide: drop them by hand). CREATE on the schema public stays revoked from PUBLIC.
DROP FUNCTION cg_unmap_role(name);
DROP FUNCTION cg_map_role(name, text);

CREATE OR REPLACE FUNCTION cg_session_advertise(p_group text, p_core text, p_incarnation bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_group IS DISTINCT FROM current_setting('coregroup.group', true) THEN
        RAISE EXCEPTION 'a session of group "%" may not advertise for core "%" of group "%"',
            coalesce(current_setting('coregroup.group', true), '(none)'), p_core, p_group
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
    v_current bigint;
    v_ended   integer := 0;
    s         record;
BEGIN
    IF p_group IS DISTINCT FROM current_setting('coregroup.group', true) THEN
        RAISE EXCEPTION 'a session of group "%" may not end sessions of core "%" incarnation % of group "%"',
            coalesce(current_setting('coregroup.group', true), '(none)'), p_core, p_incarnation, p_group
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
    v_deleted bigint;
BEGIN
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

GRANT EXECUTE ON FUNCTION cg_outbox_append(text, text, bigint, jsonb) TO PUBLIC;
REVOKE ALL ON FUNCTION cg_outbox_append(text, text, bigint, jsonb) FROM coregroup_app;
GRANT EXECUTE ON FUNCTION cg_fence_check(text, text, bigint) TO PUBLIC;
REVOKE ALL ON FUNCTION cg_fence_check(text, text, bigint) FROM coregroup_app;
GRANT EXECUTE ON FUNCTION cg_outbox_prune(text, double precision, integer) TO PUBLIC;
REVOKE ALL ON FUNCTION cg_outbox_prune(text, double precision, integer) FROM coregroup_app;

REVOKE ALL ON core_groups, cores, resources, resource_parts, name_bindings, invalidations
    FROM coregroup_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON core_groups, cores, resources, resource_parts, name_bindings, invalidations
    TO coregroup_app;
GRANT SELECT ON schema_migrations TO coregroup_app;

ALTER POLICY group_fence ON core_groups
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
ALTER POLICY group_fence ON cores
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
ALTER POLICY group_fence ON resources
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
ALTER POLICY group_fence ON resource_parts
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
ALTER POLICY group_fence ON name_bindings
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
ALTER POLICY group_fence ON invalidations
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
ALTER POLICY group_fence ON core_sessions
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
ALTER TABLE core_groups    FORCE ROW LEVEL SECURITY;
ALTER TABLE cores          FORCE ROW LEVEL SECURITY;
ALTER TABLE resources      FORCE ROW LEVEL SECURITY;
ALTER TABLE resource_parts FORCE ROW LEVEL SECURITY;
ALTER TABLE name_bindings  FORCE ROW LEVEL SECURITY;
ALTER TABLE invalidations  FORCE ROW LEVEL SECURITY;
ALTER TABLE core_sessions  FORCE ROW LEVEL SECURITY;

DROP FUNCTION cg_session_login();
DROP TABLE group_logins;
