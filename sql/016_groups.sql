-- Named groups of users and of hosts (siteward group add), which product rules name and
-- the license servers receive with their configuration. A member's kind is 'user' or
-- 'host'; a group's members go with it.
CREATE TABLE groups (
    name       TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE group_members (
    grp      TEXT NOT NULL,
    kind     TEXT NOT NULL,
    name     TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (grp, kind, name)
);
