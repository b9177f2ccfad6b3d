-- A token may enroll several machines (a rollout by Ansible or cloud-init): `uses` is
-- how many it may, `used` how many it has, and enrollment takes one in the transaction
-- that records the system, only while `used < uses`, so two machines racing for the
-- last use cannot both have it. A revoked token keeps its row, so an enrollment with it
-- is told why it is refused. Who used a token is kept in token_uses: `used_by` names
-- only the last.
ALTER TABLE tokens ADD COLUMN uses BIGINT NOT NULL DEFAULT 1;

ALTER TABLE tokens ADD COLUMN used BIGINT NOT NULL DEFAULT 0;

ALTER TABLE tokens ADD COLUMN revoked_at BIGINT;

UPDATE tokens SET used = 1 WHERE used_at IS NOT NULL;

CREATE TABLE token_uses (
    token   TEXT NOT NULL,
    system  TEXT NOT NULL,
    used_at BIGINT NOT NULL
);

INSERT INTO token_uses (token, system, used_at)
    SELECT hash, used_by, used_at FROM tokens WHERE used_at IS NOT NULL AND used_by IS NOT NULL;

CREATE INDEX token_uses_by_token ON token_uses (token);
