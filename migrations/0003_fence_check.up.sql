-- 0003_fence_check: fence every writing call, not only those that change a metadata part.
--
-- cg_outbox_append (0002) refuses a fenced incarnation, but a call that only creates a
-- resource or binds a name writes no outbox row. Such calls end with cg_fence_check: the same
-- FOR SHARE check of the caller's membership row, raising SQLSTATE CGF01 so the transaction
-- aborts. A failed or departed member, or an older incarnation, can therefore commit nothing.
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
