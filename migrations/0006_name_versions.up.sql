-- 0006_name_versions: the versions that let cores cache names and service lookups (wire
-- version 2, invalidation/PROTOCOL.md; include/coregroup/sys/item.h).
--
--  - resources.names_version: a folder's NAMES VERSION, the version of its whole listing:
--    the event number (core_groups.event_seq) of the last committed call that changed the
--    listing, 0 for none. cg_outbox_append sets it, at commit, for every "names" item of
--    the call: a bind or unbind in the folder, an unregister of the folder or of a resource
--    bound in it. Event numbers are taken under the group's row lock, so they follow commit
--    order, and no binder holds a folder's row for the rest of its call (two binders of the
--    root folder do not wait for each other). A core caches a folder's listing at this
--    version and announces a change as the item ("names", folder, event number).
--  - service_versions: per SERVICE KEY (cg_service_key(): a 53-bit hash of the service id,
--    computed by the library), the event number of the last register or unregister of a
--    resource with a service id of that key (no row: 0), set the same way from "find" items.
--    A core caches a find result at this version. The version belongs to the key, not to the
--    service id, so two ids that collide share one monotonic version. A row is never deleted.
--    Both are kept on every resource / key; only the library's items change them.
--  - cores.wire2_incarnation: the incarnation at which the member said it reads bus wire
--    version 2 (it caches names, and so requires every writer to invalidate them). A core
--    of an older release re-registers without setting it, so the column no longer equals its
--    incarnation: it counts as a version-1 member. A core caches names only while every
--    live member of its group reads version 2, as of its last freshness proof: a core of an
--    older release binds without raising any names version.
--  - invalidations.items_v2: the call's whole item list when it has a "names" or "find" item
--    (wire version 2; NULL otherwise). `items` then keeps only the part items, or the no-op
--    item {"h":0,"p":"specification","v":1} when there are none, so that a core of an
--    older release, which reads `items` only, finds every event with an item it knows (its
--    catch-up takes an event without one for a pruned outbox). Cores of this release read
--    coalesce(items_v2, items).
--
-- The cores' role may UPDATE resources.names_version and cores.wire2_incarnation only, and
-- insert and update service_versions' counter; row-level security confines all to the
-- login's group.
ALTER TABLE resources ADD COLUMN names_version bigint NOT NULL DEFAULT 0
    CHECK (names_version >= 0);
COMMENT ON COLUMN resources.names_version IS 'A folder''s names version: the event number of the last bind, unbind or unregister that changed its listing (0: none); the version of the cached listing.';

CREATE TABLE service_versions (
    group_id    text   NOT NULL REFERENCES core_groups ON DELETE CASCADE,
    service_key bigint NOT NULL CHECK (service_key >= 0 AND service_key <= 9007199254740991),
    version     bigint NOT NULL CHECK (version >= 1),
    PRIMARY KEY (group_id, service_key)
);
COMMENT ON TABLE service_versions IS 'Per service key (53-bit hash of a service id): the event number of the last register or unregister with such a service id; the version of the cached find result; never deleted.';

ALTER TABLE service_versions ENABLE ROW LEVEL SECURITY;
CREATE POLICY group_fence ON service_versions
    USING (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user))
    WITH CHECK (group_id = (SELECT l.group_id FROM group_logins l WHERE l.role_name = session_user));

GRANT UPDATE (names_version) ON resources TO coregroup_app;
GRANT SELECT, INSERT ON service_versions TO coregroup_app;
GRANT UPDATE (version) ON service_versions TO coregroup_app;

ALTER TABLE cores ADD COLUMN wire2_incarnation bigint;
COMMENT ON COLUMN cores.wire2_incarnation IS 'The incarnation at which the member said it reads bus wire version 2; another value: it reads version 1 only.';
GRANT UPDATE (wire2_incarnation) ON cores TO coregroup_app;

ALTER TABLE invalidations ADD COLUMN items_v2 jsonb
    CHECK (items_v2 IS NULL OR jsonb_typeof(items_v2) = 'array');
COMMENT ON COLUMN invalidations.items_v2 IS 'The whole item list when it has a names or find item (wire version 2); items then holds the part items only (or a no-op item).';

-- The outbox append takes the version-2 list too; a core of an older release calls it with
-- four arguments and gets NULL.
DROP FUNCTION cg_outbox_append(text, text, bigint, jsonb);
CREATE FUNCTION cg_outbox_append(p_group text, p_core text, p_incarnation bigint, p_items jsonb,
                                 p_items_v2 jsonb DEFAULT NULL,
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
    IF p_items_v2 IS NOT NULL THEN
        -- names and find items take the event's number as their version: it is taken under
        -- the group's row lock, so it follows commit order without holding a folder's row
        -- for the rest of the call
        p_items_v2 := (SELECT jsonb_agg(CASE WHEN e.x ->> 'p' IN ('names', 'find')
                                             THEN jsonb_set(e.x, '{v}', to_jsonb(seq))
                                             ELSE e.x END ORDER BY e.n)
                         FROM jsonb_array_elements(p_items_v2) WITH ORDINALITY AS e (x, n));
        -- = ANY (ARRAY(...)): each folder by its key; IN (SELECT ...) had the planner scan
        -- every resource of the group while the group's counter row was held
        UPDATE resources SET names_version = seq
         WHERE group_id = p_group
           AND handle = ANY (ARRAY(SELECT (e.x ->> 'h')::bigint
                                     FROM jsonb_array_elements(p_items_v2) AS e (x)
                                    WHERE e.x ->> 'p' = 'names'));
        INSERT INTO service_versions (group_id, service_key, version)
        SELECT p_group, (e.x ->> 'h')::bigint, seq FROM jsonb_array_elements(p_items_v2) AS e (x)
         WHERE e.x ->> 'p' = 'find'
        ON CONFLICT (group_id, service_key) DO UPDATE SET version = EXCLUDED.version;
    END IF;
    INSERT INTO invalidations (group_id, seq, origin_core, origin_incarnation, items, items_v2,
                               committed_at)
    VALUES (p_group, seq, p_core, p_incarnation, p_items, p_items_v2,
            to_timestamp(committed_us / 1000000.0));
END
$$;
REVOKE ALL ON FUNCTION cg_outbox_append(text, text, bigint, jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cg_outbox_append(text, text, bigint, jsonb, jsonb) TO coregroup_app;
