-- Named administrators (siteward admin add), each with its role: viewer, operator or
-- admin. A removed one keeps its row (removed_at), so its name is not given again, and
-- every certificate it was issued is in admin_certs, so a removal revokes them all.
CREATE TABLE admins (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    removed_at BIGINT
);

CREATE TABLE admin_certs (
    serial    TEXT PRIMARY KEY,
    admin     TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    not_after BIGINT NOT NULL
);

-- What administrators did through the API: every change, with its outcome, stored before
-- its answer went; and every request a route refused them.
CREATE TABLE audit (
    at      BIGINT NOT NULL,
    who     TEXT NOT NULL,
    serial  TEXT NOT NULL,
    address TEXT NOT NULL,
    method  TEXT NOT NULL,
    path    TEXT NOT NULL,
    status  INTEGER NOT NULL,
    outcome TEXT NOT NULL
);

CREATE INDEX audit_by_time ON audit (at);
