-- Shoal's initial schema. Info-hashes are 20 raw bytes; times are unix seconds.
-- Keys and counter names are ASCII with a binary collation: keys are case-sensitive.
CREATE TABLE torrents (
    info_hash BINARY(20) NOT NULL PRIMARY KEY,
    completed BIGINT NOT NULL DEFAULT 0 CHECK (completed >= 0)
) ENGINE = InnoDB;

CREATE TABLE counters (
    `name` VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    `value` BIGINT NOT NULL DEFAULT 0
) ENGINE = InnoDB;

CREATE TABLE whitelist (
    info_hash BINARY(20) NOT NULL PRIMARY KEY,
    added_at BIGINT NOT NULL
) ENGINE = InnoDB;

CREATE TABLE `keys` (
    `key` VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY CHECK (CHAR_LENGTH(`key`) = 32),
    valid_until BIGINT NULL,
    created_at BIGINT NOT NULL
) ENGINE = InnoDB;
