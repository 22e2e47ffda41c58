-- 0001_initial, the way back: removes the whole model (and every row in it).
DROP TRIGGER core_groups_root ON core_groups;
DROP FUNCTION core_groups_make_root();
DROP TABLE invalidations;
DROP TABLE name_bindings;
DROP TABLE resource_parts;
DROP TABLE resources;
DROP TABLE cores;
DROP TABLE core_groups;
DROP TABLE schema_migrations;
