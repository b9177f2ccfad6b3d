-- Portable between SQLite and PostgreSQL. Times are milliseconds since the epoch.

-- Site systems: one row per enrolled agent.
CREATE TABLE systems (
    name        TEXT PRIMARY KEY,
    address     TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL DEFAULT 0,
    version     TEXT NOT NULL DEFAULT '',
    facts       TEXT NOT NULL DEFAULT '{}'
);

-- Enrollment tokens, stored as SHA-256 of the secret; a used token keeps its row so a
-- second use is told apart from an unknown one.
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    used_by    TEXT
);

-- Certificates revoked when their system was removed.
CREATE TABLE revoked (
    serial     TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    revoked_at BIGINT NOT NULL
);
