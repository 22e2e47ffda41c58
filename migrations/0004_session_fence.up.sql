-- 0004_session_fence: fencing reaches the database, and the outbox is pruned in batches.
--
-- Bumping a member's incarnation refuses its later commits, but a paused core's open
-- transaction keeps its row locks. So every core session advertises which core and
-- incarnation it serves (cg_session_advertise, in core_sessions), and the survivor that fenced
-- a member ends that incarnation's sessions (cg_end_fenced_sessions). Both functions are
-- SECURITY DEFINER: they run with the privileges of the role that ran this migration, and the
-- cores' role needs nothing more than EXECUTE on them. What they can do is narrow:
--  - cg_session_advertise records only the calling backend (pg_backend_pid()), only for the
--    session's own group, and only for a current incarnation of a member (else CGF01, the
--    fenced error of 0002), so a fenced incarnation cannot advertise a session that would then
--    escape being ended. coregroup_app may read core_sessions, never write it directly.
--  - cg_end_fenced_sessions ends only sessions advertised for that group's named core with an
--    incarnation at most the given one, only when the member's current incarnation is greater
--    (that incarnation was fenced), only backends that are still the advertised ones (pid AND
--    backend_start, so a reused pid is never hit), only sessions of this database whose role is
--    a non-superuser member of coregroup_app, and never the caller's own backend. Anything else
--    is refused with SQLSTATE 42501.
-- The group checks compare with the session's coregroup.group, as row-level security does: a
-- fence against mistakes, not against a core that sets another group on purpose; the
-- incarnation and advertisement checks hold regardless. (PostgreSQL lets a role end its own
-- backends: cores that must not be able to end each other's sessions need login roles of
-- their own.)
--
-- The runner must itself be able to see and end other roles' sessions: a superuser, or a
-- member of pg_signal_backend and pg_read_all_stats. Checked first, so a runner without them
-- gets one clear error instead of a function that silently ends nothing.
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
ALTER TABLE core_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY group_fence ON core_sessions
    USING (group_id = current_setting('coregroup.group'))
    WITH CHECK (group_id = current_setting('coregroup.group'));

-- A core's session says which core and incarnation it serves. FOR SHARE on the membership row
-- orders this with a concurrent fencing update: either the fence waits for this advertisement
-- (and the fencer's later cg_end_fenced_sessions sees it), or this call sees the new
-- incarnation and is refused.
CREATE FUNCTION cg_session_advertise(p_group text, p_core text, p_incarnation bigint)
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
REVOKE ALL ON FUNCTION cg_session_advertise(text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_session_advertise(text, text, bigint) TO coregroup_app;

-- The survivor that fenced a member ends the fenced incarnation's sessions, so their row
-- locks go now rather than at lock_timeout or idle_in_transaction_session_timeout. Waits up
-- to a second per session for it to be gone (its locks released) and counts those that went;
-- a session still there keeps its row, so a later call tries again. Returns how many ended.
CREATE FUNCTION cg_end_fenced_sessions(p_group text, p_core text, p_incarnation bigint)
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
REVOKE ALL ON FUNCTION cg_end_fenced_sessions(text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_end_fenced_sessions(text, text, bigint) TO coregroup_app;

-- Outbox pruning by one member at a time, in batches: a transaction-scoped advisory lock per
-- group (the two-key space, class 'cgpr' = 1667723378, so it never meets cg-migrate's
-- one-key lock; two groups whose names hash alike merely take turns), then at most p_batch
-- of the oldest rows. Run as one autocommit statement, the lock and the row locks last only
-- as long as that batch. Returns how many rows it deleted (0 when another member holds the
-- lock). SECURITY INVOKER: row-level security applies as to any statement of the core.
CREATE FUNCTION cg_outbox_prune(p_group text, p_retention_s double precision, p_batch integer)
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

-- Every outbox statement filters by group: the pruning subquery walks (group_id,
-- committed_at) in order and stops after a batch. The old index on committed_at alone served
-- only a prune across all groups, which no longer exists; dropping it saves its upkeep on every
-- outbox append, the hot path of every changing call.
CREATE INDEX invalidations_group_committed_idx ON invalidations (group_id, committed_at);
DROP INDEX invalidations_committed_idx;
