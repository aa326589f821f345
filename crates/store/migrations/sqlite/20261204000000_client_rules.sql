-- Client rules by peer-id prefix, changed through the admin API and shared by every node.
CREATE TABLE client_rules (
    prefix TEXT PRIMARY KEY NOT NULL CHECK (length(prefix) BETWEEN 1 AND 20),
    kind TEXT NOT NULL CHECK (kind IN ('allow', 'deny')),
    added_at INTEGER NOT NULL
) WITHOUT ROWID;
