-- What a rotation of the site's CA waits for, as each system's heartbeats last showed:
-- `cert_ca`, the key identifier of the CA that issued the agent certificate it uses;
-- `trust`, the id of the bundle of CAs its agent trusts (its ca.crt).
ALTER TABLE systems ADD COLUMN cert_ca TEXT;

ALTER TABLE systems ADD COLUMN trust TEXT;
