-- The roles each site system should have; the component manager makes it so.
CREATE TABLE system_roles (
    system   TEXT NOT NULL,
    role     TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (system, role)
);
