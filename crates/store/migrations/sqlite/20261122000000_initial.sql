-- Shoal's initial schema. Info-hashes are 20 raw bytes; times are unix seconds.
CREATE TABLE torrents (
    info_hash BLOB PRIMARY KEY NOT NULL CHECK (length(info_hash) = 20),
    completed INTEGER NOT NULL DEFAULT 0 CHECK (completed >= 0)
) WITHOUT ROWID;

CREATE TABLE counters (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE whitelist (
    info_hash BLOB PRIMARY KEY NOT NULL CHECK (length(info_hash) = 20),
    added_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE keys (
    key TEXT PRIMARY KEY NOT NULL CHECK (length(key) = 32),
    valid_until INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
