-- 0006_name_versions, the way back: the counters and the version-2 outbox column go, and
-- the outbox append is 0002's again (a core of an older release caches no names and never
-- reads them).
DROP FUNCTION cg_outbox_append(text, text, bigint, jsonb, jsonb);
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
REVOKE ALL ON FUNCTION cg_outbox_append(text, text, bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_outbox_append(text, text, bigint, jsonb) TO coregroup_app;
ALTER TABLE invalidations DROP COLUMN items_v2;
ALTER TABLE cores DROP COLUMN wire2_incarnation;
REVOKE UPDATE (names_version) ON resources FROM coregroup_app;
DROP TABLE service_versions;
ALTER TABLE resources DROP COLUMN names_version;
