-- Every certificate issued to a system while it is enrolled, so a removal revokes them
-- all: a renewal leaves the older ones valid until they expire (a running siteward-run
-- holds the machine's older client certificate), and they must not outlive the system.
-- `prev_serial` is the agent certificate a renewal was asked with, still taken from
-- that agent until it renews again (its answer may have been lost on the way).
-- `cert_not_after` is when the current agent certificate expires (ms), for days left.
CREATE TABLE system_certs (
    serial    TEXT PRIMARY KEY,
    system    TEXT NOT NULL,
    role      TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL
);

CREATE INDEX system_certs_by_system ON system_certs (system);

ALTER TABLE systems ADD COLUMN prev_serial TEXT;

ALTER TABLE systems ADD COLUMN cert_not_after BIGINT;

-- Systems enrolled before this: their certificates were issued at enrollment for 825
-- days (71280000000 ms).
UPDATE systems SET cert_not_after = enrolled_at + 71280000000;

INSERT INTO system_certs (serial, system, role, issued_at, not_after)
    SELECT cert_serial, name, 'agent', enrolled_at, enrolled_at + 71280000000 FROM systems;

INSERT INTO system_certs (serial, system, role, issued_at, not_after)
    SELECT client_serial, name, 'client', enrolled_at, enrolled_at + 71280000000
    FROM systems WHERE client_serial IS NOT NULL AND client_serial <> '';
