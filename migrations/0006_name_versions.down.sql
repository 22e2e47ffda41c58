-- 0006_name_versions, the way back: the counters go (a core of an older release caches no
-- names and never reads them).
REVOKE UPDATE (names_version) ON resources FROM coregroup_app;
DROP TABLE service_versions;
ALTER TABLE resources DROP COLUMN names_version;
