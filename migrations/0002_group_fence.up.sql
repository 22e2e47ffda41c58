-- 0002_group_fence: the second fence of group isolation, and the fenced outbox append.
--
-- Row-level security: every table's rows are visible to and writable by a session only when
-- their group_id equals the session's setting coregroup.group (cores set it once per
-- connection). current_setting() without missing_ok raises an error when the setting is
-- absent, so a session that forgot it sees nothing and writes nothing: it fails closed.
-- Superusers bypass row-level security by PostgreSQL's design, so cores should log in as a
-- role that is a member of coregroup_app, which this migration creates (NOLOGIN) and grants
-- the data privileges to. The role is cluster-wide and is therefore not dropped by the down
-- migration (other databases may use it); its privileges here are revoked.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'coregroup_app') THEN
        CREATE ROLE coregroup_app NOLOGIN;
    END IF;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE
    ON core_groups, cores, resources, resource_parts, name_bindings, invalidations
    TO coregroup_app;
GRANT USAGE ON SEQUENCE resource_handle_seq TO coregroup_app;
GRANT SELECT ON schema_migrations TO coregroup_app;

ALTER TABLE core_groups    ENABLE ROW LEVEL SECURITY;
ALTER TABLE cores          ENABLE ROW LEVEL SECURITY;
ALTER TABLE resources      ENABLE ROW LEVEL SECURITY;
ALTER TABLE resource_parts ENABLE ROW LEVEL SECURITY;
ALTER TABLE name_bindings  ENABLE ROW LEVEL SECURITY;
ALTER TABLE invalidations  ENABLE ROW LEVEL SECURITY;
ALTER TABLE core_groups    FORCE ROW LEVEL SECURITY;
ALTER TABLE cores          FORCE ROW LEVEL SECURITY;
ALTER TABLE resources      FORCE ROW LEVEL SECURITY;
ALTER TABLE resource_parts FORCE ROW LEVEL SECURITY;
ALTER TABLE name_bindings  FORCE ROW LEVEL SECURITY;
ALTER TABLE invalidations  FORCE ROW LEVEL SECURITY;

CREATE POLICY group_fence ON core_groups
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
CREATE POLICY group_fence ON cores
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
CREATE POLICY group_fence ON resources
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
CREATE POLICY group_fence ON resource_parts
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
CREATE POLICY group_fence ON name_bindings
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));
CREATE POLICY group_fence ON invalidations
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));

-- The last statement of every call that changed something: check that the calling core's
-- incarnation is still current (FOR SHARE, so a concurrent fencing update waits for this
-- transaction or this one sees its result), take the group's next event number (the row lock
-- on core_groups is held only from here to COMMIT, so numbers are gap-free and in commit
-- order), and write the outbox row. A fenced core gets SQLSTATE CGF01 and its transaction
-- is aborted: nothing it did is committed.
CREATE FUNCTION cg_outbox_append(p_group text, p_core text, p_incarnation bigint, p_items jsonb,
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
    INSERT INTO invalidations (group_id, seq, origin_core, origin_incarnation, items, committed_at)
    VALUES (p_group, seq, p_core, p_incarnation, p_items, to_timestamp(committed_us / 1000000.0));
END
$$;
