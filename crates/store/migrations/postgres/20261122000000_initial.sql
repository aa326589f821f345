-- Shoal's initial schema. Info-hashes are 20 raw bytes; times are unix seconds.
CREATE TABLE torrents (
    info_hash BYTEA PRIMARY KEY CHECK (octet_length(info_hash) = 20),
    completed BIGINT NOT NULL DEFAULT 0 CHECK (completed >= 0)
);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE whitelist (
    info_hash BYTEA PRIMARY KEY CHECK (octet_length(info_hash) = 20),
    added_at BIGINT NOT NULL
);

CREATE TABLE keys (
    key TEXT PRIMARY KEY CHECK (char_length(key) = 32),
    valid_until BIGINT,
    created_at BIGINT NOT NULL
);
