-- 0006_name_versions: the versions that let cores cache names and service lookups (wire
-- version 2, invalidation/PROTOCOL.md; include/coregroup/sys/item.h).
--
--  - resources.names_version: a folder's NAMES VERSION, the version of its whole listing.
--    Every bind or unbind in the folder raises it by one in the same statement (so binders
--    of one folder queue on the folder's row for the rest of their call: a listing's version
--    must be taken in commit order, as a part's is), and an unregister raises it for every
--    folder that held a name bound to the unregistered resource. A core caches a folder's
--    listing at this version and announces a change as the item ("names", folder, version).
--    It is kept on every resource (not only folders) to keep the row shape one; only a
--    folder's ever changes.
--  - service_versions: one counter per SERVICE KEY (cg_service_key(): a 53-bit hash of the
--    service id, computed by the library), raised by every register or unregister of a
--    resource with a service id of that key. A core caches a find result at this version and
--    announces a change as ("find", key, version). The counter belongs to the key, not to the
--    service id, so two ids that collide share one monotonic counter. A row is never deleted:
--    a service id that is registered again must get a higher version than any cached before.
--
-- The cores' role may UPDATE resources.names_version only, and insert and update
-- service_versions' counter; row-level security confines both to the login's group.
ALTER TABLE resources ADD COLUMN names_version bigint NOT NULL DEFAULT 1
    CHECK (names_version >= 1);
COMMENT ON COLUMN resources.names_version IS 'A folder''s names version: raised by every bind, unbind, or unregister of a bound target; the version of the cached listing.';

CREATE TABLE service_versions (
    group_id    text   NOT NULL REFERENCES core_groups ON DELETE CASCADE,
    service_key bigint NOT NULL CHECK (service_key >= 0 AND service_key <= 9007199254740991),
    version     bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    PRIMARY KEY (group_id, service_key)
);
COMMENT ON TABLE service_versions IS 'One counter per service key (53-bit hash of a service id): the version of the cached find result; never deleted.';

ALTER TABLE service_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY group_fence ON service_versions
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));

GRANT UPDATE (names_version) ON resources TO coregroup_app;
GRANT SELECT, INSERT ON service_versions TO coregroup_app;
GRANT UPDATE (version) ON service_versions TO coregroup_app;
