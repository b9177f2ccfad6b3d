-- Borrowed licenses an administrator wrote off (siteward license reclaim), kept until
-- each loan would have ended: every heartbeat answer to the machine that holds one says
-- so, and its agent tells siteward-run, which then refuses the loan offline too.
CREATE TABLE written_off (
    lease    TEXT PRIMARY KEY,
    system   TEXT NOT NULL,
    product  TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
