-- Software metering: registered products and the usage metering servers report.

CREATE TABLE products (
    name       TEXT PRIMARY KEY,
    exe        TEXT NOT NULL,
    version    TEXT NOT NULL DEFAULT '',
    licenses   BIGINT NOT NULL,
    enforce    BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- One row per run or denial; the id comes from whoever recorded it, so an upload
-- that is retried never counts twice.
CREATE TABLE usage (
    id          TEXT PRIMARY KEY,
    product     TEXT,
    exe         TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    host        TEXT NOT NULL,
    start_ms    BIGINT NOT NULL,
    end_ms      BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    wait_ms     BIGINT NOT NULL DEFAULT 0,
    source      TEXT NOT NULL,
    received_at BIGINT NOT NULL
);

CREATE INDEX usage_by_start ON usage (start_ms);

-- Where each metering server listens, so clients can be told after a restart.
ALTER TABLE systems ADD COLUMN meter_address TEXT NOT NULL DEFAULT '';
