-- 0002_group_fence, the way back. The cluster-wide role coregroup_app is kept (other
-- databases may use it); only its privileges in this database are revoked.
DROP FUNCTION cg_outbox_append(text, text, bigint, jsonb);
DROP POLICY group_fence ON core_groups;
DROP POLICY group_fence ON cores;
DROP POLICY group_fence ON resources;
DROP POLICY group_fence ON resource_parts;
DROP POLICY group_fence ON name_bindings;
DROP POLICY group_fence ON invalidations;
ALTER TABLE core_groups    NO FORCE ROW LEVEL SECURITY;
ALTER TABLE cores          NO FORCE ROW LEVEL SECURITY;
ALTER TABLE resources      NO FORCE ROW LEVEL SECURITY;
ALTER TABLE resource_parts NO FORCE ROW LEVEL SECURITY;
ALTER TABLE name_bindings  NO FORCE ROW LEVEL SECURITY;
ALTER TABLE invalidations  NO FORCE ROW LEVEL SECURITY;
ALTER TABLE core_groups    DISABLE ROW LEVEL SECURITY;
ALTER TABLE cores          DISABLE ROW LEVEL SECURITY;
ALTER TABLE resources      DISABLE ROW LEVEL SECURITY;
ALTER TABLE resource_parts DISABLE ROW LEVEL SECURITY;
ALTER TABLE name_bindings  DISABLE ROW LEVEL SECURITY;
ALTER TABLE invalidations  DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON core_groups, cores, resources, resource_parts, name_bindings, invalidations
    FROM coregroup_app;
REVOKE ALL ON SEQUENCE resource_handle_seq FROM coregroup_app;
REVOKE ALL ON schema_migrations FROM coregroup_app;
