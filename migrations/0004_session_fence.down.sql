-- 0004_session_fence, the way back: the session table and the three functions go (a library
-- built for 0004 prepares them when it connects, so downgrade the cores first), and the
-- outbox index is the one of 0001 again.
CREATE INDEX invalidations_committed_idx ON invalidations (committed_at);
DROP INDEX invalidations_group_committed_idx;
DROP FUNCTION cg_outbox_prune(text, double precision, integer);
DROP FUNCTION cg_end_fenced_sessions(text, text, bigint);
DROP FUNCTION cg_session_advertise(text, text, bigint);
DROP TABLE core_sessions;
