-- Each system's clock minus the server's, as of its last heartbeat: deadlines sent to
-- it are on its clock, and a restarted server (an upgrade's re-exec among them) must
-- not send them before its first heartbeat as if the clocks agreed.
ALTER TABLE systems ADD COLUMN clock_skew_ms BIGINT NOT NULL DEFAULT 0;
