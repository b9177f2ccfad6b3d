-- Each machine's metering-client certificate, revoked with the system.
ALTER TABLE systems ADD COLUMN client_serial TEXT NOT NULL DEFAULT '';
