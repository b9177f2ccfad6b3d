-- A usage record's id is unique only on the machine that recorded it: one host must not
-- be able to take another's ids (its runs would be dropped as duplicates), so the key
-- becomes (host, id). SQLite cannot change a primary key in place: the table is copied.
CREATE TABLE usage_new (
    id          TEXT NOT NULL,
    product     TEXT,
    exe         TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    host        TEXT NOT NULL,
    start_ms    BIGINT NOT NULL,
    end_ms      BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    wait_ms     BIGINT NOT NULL DEFAULT 0,
    source      TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (host, id)
);

INSERT INTO usage_new (id, product, exe, user_name, host, start_ms, end_ms, kind, wait_ms,
                       source, received_at)
    SELECT id, product, exe, user_name, host, start_ms, end_ms, kind, wait_ms, source,
           received_at FROM usage;

DROP TABLE usage;

ALTER TABLE usage_new RENAME TO usage;

CREATE INDEX usage_by_start ON usage (start_ms);
