-- Product policies, programs left out of passive metering, and daily summaries.

-- The ELF build ID recognises a renamed copy; hours when use is allowed ("08:00-18:00",
-- empty for always); users and hosts denied (comma-separated).
ALTER TABLE products ADD COLUMN build_id TEXT NOT NULL DEFAULT '';
ALTER TABLE products ADD COLUMN hours TEXT NOT NULL DEFAULT '';
ALTER TABLE products ADD COLUMN deny_users TEXT NOT NULL DEFAULT '';
ALTER TABLE products ADD COLUMN deny_hosts TEXT NOT NULL DEFAULT '';

CREATE TABLE excluded_programs (
    exe      TEXT PRIMARY KEY,
    added_at BIGINT NOT NULL
);

-- Usage older than the detail period, condensed per product and day.
CREATE TABLE usage_daily (
    product         TEXT NOT NULL,
    day             BIGINT NOT NULL,
    launches        BIGINT NOT NULL,
    users           BIGINT NOT NULL,
    hosts           BIGINT NOT NULL,
    run_time_ms     BIGINT NOT NULL,
    peak_concurrent BIGINT NOT NULL,
    denials         BIGINT NOT NULL,
    queue_waits     BIGINT NOT NULL,
    queue_wait_ms   BIGINT NOT NULL,
    PRIMARY KEY (product, day)
);
