-- Collections: the groups of systems deployments and commands aim at. One by a condition
-- on facts and inventory (expr, the collection language of lib/collection.h), or one by
-- name (systems, a JSON list); the other is NULL. Members are worked out when asked.
CREATE TABLE collections (
    name       TEXT PRIMARY KEY,
    expr       TEXT,
    systems    TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
