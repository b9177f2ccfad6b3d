-- What becomes of a program whose license is taken back (siteward license reclaim, or
-- its program idle for idle_s seconds): on_reclaim 'stop' (told with reclaim_signal, TERM when empty,
-- then killed) or 'run' (told with reclaim_signal, none when empty, and left running
-- unlicensed, its use recorded).
ALTER TABLE products ADD COLUMN on_reclaim TEXT NOT NULL DEFAULT 'stop';
ALTER TABLE products ADD COLUMN reclaim_signal TEXT NOT NULL DEFAULT '';
ALTER TABLE products ADD COLUMN idle_s BIGINT NOT NULL DEFAULT 0;
