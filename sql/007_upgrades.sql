-- The upgrade journal. One row per run of `siteward upgrade run`, one per site system
-- in it. Every step a system goes through is written before the next one starts, so a
-- run can be resumed after a crash of the CLI, the server or an agent, and its report
-- survives them.
CREATE TABLE upgrades (
    id              BIGINT PRIMARY KEY,
    version         TEXT NOT NULL,
    from_version    TEXT NOT NULL,
    package_sha256  TEXT NOT NULL,
    package_size    BIGINT NOT NULL,
    state           TEXT NOT NULL,
    reason          TEXT NOT NULL DEFAULT '',
    options         TEXT NOT NULL,
    server_step     TEXT NOT NULL,
    backup          TEXT NOT NULL DEFAULT '',
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE upgrade_systems (
    upgrade_id      BIGINT NOT NULL,
    name            TEXT NOT NULL,
    position        BIGINT NOT NULL,
    from_version    TEXT NOT NULL,
    state           TEXT NOT NULL,
    step            TEXT NOT NULL DEFAULT '',
    reason          TEXT NOT NULL DEFAULT '',
    attempts        BIGINT NOT NULL DEFAULT 0,
    times           TEXT NOT NULL DEFAULT '{}',
    removed_roles   TEXT NOT NULL DEFAULT '[]',
    started_at      BIGINT NOT NULL DEFAULT 0,
    finished_at     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (upgrade_id, name)
);
