-- 0001_initial: the repository model of DESIGN.md.
--
-- Every table carries group_id and every key starts with it: a core group sees only its own
-- rows, and the same handle may exist in two groups (the root folder is handle 0 everywhere).
-- Versions start at 1 and only grow; constraints refuse what the application must never write.

CREATE TABLE schema_migrations (
    version     integer     PRIMARY KEY CHECK (version > 0),
    name        text        NOT NULL,
    checksum    text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'Applied migrations, written by cg-migrate; checksum is the sha256 of the up file.';

CREATE TABLE core_groups (
    group_id    text        PRIMARY KEY
                CHECK (group_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    event_seq   bigint      NOT NULL DEFAULT 0 CHECK (event_seq >= 0)
);
COMMENT ON TABLE core_groups IS 'One row per core group; event_seq is the gap-free, commit-ordered number of the group''s last invalidation.';

CREATE TABLE cores (
    group_id     text        NOT NULL REFERENCES core_groups ON DELETE CASCADE,
    core_name    text        NOT NULL CHECK (core_name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    incarnation  bigint      NOT NULL DEFAULT 1 CHECK (incarnation >= 1),
    host         text        NOT NULL DEFAULT '',
    pid          integer     NOT NULL DEFAULT 0 CHECK (pid >= 0),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    applied_seq  bigint      NOT NULL DEFAULT 0 CHECK (applied_seq >= 0),
    state        text        NOT NULL DEFAULT 'joining'
                 CHECK (state IN ('joining', 'alive', 'suspect', 'failed', 'left')),
    PRIMARY KEY (group_id, core_name)
);
COMMENT ON TABLE cores IS 'Group membership; incarnation is the fencing token: writes from an older incarnation are refused.';

CREATE SEQUENCE resource_handle_seq AS bigint MINVALUE 1;

CREATE TABLE resources (
    group_id      text        NOT NULL REFERENCES core_groups ON DELETE CASCADE,
    handle        bigint      NOT NULL DEFAULT nextval('resource_handle_seq') CHECK (handle >= 0),
    kind          text        NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_-]{0,31}$'),
    service_id    text        CHECK (service_id <> '' AND length(service_id) <= 255),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, handle),
    UNIQUE (group_id, handle, kind),
    CHECK (handle <> 0 OR kind = 'folder')
);
ALTER SEQUENCE resource_handle_seq OWNED BY resources.handle;
CREATE INDEX resources_service_idx ON resources (group_id, service_id) WHERE service_id IS NOT NULL;
COMMENT ON TABLE resources IS 'Registered resources of a group; handle 0 is the group''s root folder.';

CREATE TABLE resource_parts (
    group_id   text   NOT NULL,
    handle     bigint NOT NULL,
    part       text   NOT NULL CHECK (part IN ('specification', 'description', 'state')),
    version    bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    body       jsonb  NOT NULL DEFAULT '{}',
    PRIMARY KEY (group_id, handle, part),
    FOREIGN KEY (group_id, handle) REFERENCES resources (group_id, handle) ON DELETE CASCADE
);
COMMENT ON TABLE resource_parts IS 'The three metadata parts of a resource, each with its own version (e-Speak design 2.7.3); updates are conditional on the version.';

CREATE TABLE name_bindings (
    group_id      text        NOT NULL,
    folder_handle bigint      NOT NULL,
    folder_kind   text        NOT NULL GENERATED ALWAYS AS ('folder') STORED,
    name          text        NOT NULL CHECK (name ~ '^[^/[:cntrl:]]{1,255}$'),
    target_handle bigint      NOT NULL,
    version       bigint      NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, folder_handle, name),
    -- the folder must be a folder of the same group; the target a resource of the same group
    FOREIGN KEY (group_id, folder_handle, folder_kind)
        REFERENCES resources (group_id, handle, kind) ON DELETE CASCADE,
    FOREIGN KEY (group_id, target_handle) REFERENCES resources (group_id, handle) ON DELETE CASCADE
);
CREATE INDEX name_bindings_target_idx ON name_bindings (group_id, target_handle);
COMMENT ON TABLE name_bindings IS 'Names in folders (name frames); a binding never crosses groups.';

CREATE TABLE invalidations (
    group_id           text        NOT NULL REFERENCES core_groups ON DELETE CASCADE,
    seq                bigint      NOT NULL CHECK (seq >= 1),
    origin_core        text        NOT NULL,
    origin_incarnation bigint      NOT NULL CHECK (origin_incarnation >= 1),
    items              jsonb       NOT NULL CHECK (jsonb_typeof(items) = 'array'),
    committed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, seq)
);
CREATE INDEX invalidations_committed_idx ON invalidations (committed_at);
COMMENT ON TABLE invalidations IS 'Transactional outbox: one row per committed call that changed something, numbered by core_groups.event_seq; pruned by retention.';

-- Every group has its root folder from the moment it exists.
CREATE FUNCTION core_groups_make_root() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO resources (group_id, handle, kind) VALUES (NEW.group_id, 0, 'folder');
    RETURN NEW;
END
$$;
CREATE TRIGGER core_groups_root AFTER INSERT ON core_groups
    FOR EACH ROW EXECUTE FUNCTION core_groups_make_root();
