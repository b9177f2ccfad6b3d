-- The upgrade machine's own memory, so a run resumed after a crash decides as it would
-- have: the outcome a system ends in once its old services are back up (the restart
-- step), and the certificate the system had when the run picked it (a new enrollment
-- under its name is another agent).
ALTER TABLE upgrade_systems ADD COLUMN then_state TEXT NOT NULL DEFAULT '';
ALTER TABLE upgrade_systems ADD COLUMN cert_serial TEXT NOT NULL DEFAULT '';
