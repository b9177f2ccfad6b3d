-- Software distribution: a Debian package installed on, or removed from, the members of
-- a collection (siteward deploy), and where each member stands. A deployment stays
-- active until cancelled: a member that was away, or joins the collection later, gets it
-- when it is next seen.
CREATE TABLE deployments (
    id           BIGINT PRIMARY KEY,
    action       TEXT NOT NULL,   -- install | remove
    package      TEXT NOT NULL,
    version      TEXT NOT NULL,   -- '' for a removal
    arch         TEXT NOT NULL,
    sha256       TEXT NOT NULL,   -- '' for a removal
    size         BIGINT NOT NULL,
    manifest     TEXT NOT NULL,   -- what the agents act on, signed with the site's key
    signature    TEXT NOT NULL,
    collection   TEXT NOT NULL,
    parallel     BIGINT NOT NULL,
    max_failures BIGINT NOT NULL,
    time_window  TEXT NOT NULL,   -- '' or HH:MM-HH:MM, the server's local time
    state        TEXT NOT NULL,   -- active | halted | cancelled
    reason       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL
);

CREATE TABLE deployment_systems (
    deployment BIGINT NOT NULL,
    system     TEXT NOT NULL,
    state      TEXT NOT NULL,     -- pending | running | done | deferred | failed | skipped
    reason     TEXT NOT NULL,
    attempts   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (deployment, system)
);
