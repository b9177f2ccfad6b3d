-- Inventory: what each system is (its hardware, as its agent last sent it) and has (its
-- installed Debian packages), and when each package appeared, changed version or left.
-- seq is the version of a system's inventory the site has: an agent's delta names the
-- version it is from, and one from another version is refused so that it sends all.
CREATE TABLE inventory (
    system     TEXT PRIMARY KEY,
    seq        BIGINT NOT NULL,
    hardware   TEXT NOT NULL,
    packages   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE packages (
    system  TEXT NOT NULL,
    name    TEXT NOT NULL,
    arch    TEXT NOT NULL,
    version TEXT NOT NULL,
    since   BIGINT NOT NULL,
    PRIMARY KEY (system, name, arch)
);
CREATE INDEX packages_by_name ON packages (name, version);

CREATE TABLE package_history (
    system      TEXT NOT NULL,
    name        TEXT NOT NULL,
    arch        TEXT NOT NULL,
    event       TEXT NOT NULL,
    version     TEXT,
    old_version TEXT,
    at          BIGINT NOT NULL
);
CREATE INDEX package_history_by_system ON package_history (system, at);
